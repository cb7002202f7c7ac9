/* mfmodal-engine run --job FILE: one task attempt from start to finish. */
#include "config.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "create_gate.h"
#include "log.h"

struct run_state {
	struct event_base *base;
	struct job *job;
	unsigned sigints;
};

static void
run_done(struct job *job, void *arg)
{
	struct run_state *rs = arg;

	event_base_loopbreak(rs->base);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct run_state *rs = arg;

	if (sig == SIGINT) {
		rs->sigints++;
		if (rs->sigints == 1)
			log_warn(NULL, "SIGINT: terminating the sandbox, then "
				       "storing the logs (a second SIGINT skips "
				       "the logs)");
		else
			log_warn(NULL, "second SIGINT: the logs are not stored");
		job_cancel(rs->job, CLI_EXIT_SIGINT, rs->sigints > 1);
	} else {
		log_warn(NULL, "SIGTERM: terminating the sandbox");
		job_cancel(rs->job, CLI_EXIT_SIGTERM, 0);
	}
}

/* Read and check the job description; returns 0 or prints the problems. */
static int
load_job(const char *file, struct jobspec *spec)
{
	struct jobspec_errors errs = {0};
	json_t *doc = jobspec_load_json(file, &errs);

	memset(spec, 0, sizeof(*spec));
	if (doc != NULL)
		jobspec_parse(doc, "$", spec, &errs);
	json_decref(doc);
	if (errs.n == 0)
		return 0;
	cli_print_job_errors(file, &errs);
	jobspec_errors_free(&errs);
	jobspec_free(spec);
	return -1;
}

int
cli_run(const struct cli_globals *globals, int argc, char **argv)
{
	static const struct option options[] = {
		{"job", required_argument, NULL, 'j'},
		{NULL, 0, NULL, 0},
	};
	const char *file = NULL;
	struct jobspec spec;
	struct cli_engine eng;
	struct run_state rs = {0};
	struct job_env env;
	struct event *sigint_ev = NULL, *sigterm_ev = NULL;
	int opt, status;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "j:", options, NULL)) != -1) {
		if (opt != 'j')
			goto usage;
		file = optarg;
	}
	if (file == NULL || optind != argc)
		goto usage;
	if (load_job(file, &spec) != 0)
		return CLI_EXIT_USAGE;
	status = cli_engine_open(&eng, globals);
	if (status == CLI_EXIT_OK && cli_spec_needs_s3(&spec))
		status = cli_engine_open_s3(&eng, globals);
	if (status != CLI_EXIT_OK) {
		jobspec_free(&spec);
		cli_engine_close(&eng);
		return status;
	}

	cli_job_env(&env, &eng);
	env.gate = create_gate_new(eng.base);
	rs.base = eng.base;
	rs.job = job_new(&env, &spec, run_done, &rs);
	if (rs.job == NULL || env.gate == NULL) {
		fprintf(stderr, "mfmodal-engine: out of memory\n");
		job_free(rs.job);
		create_gate_free(env.gate);
		cli_engine_close(&eng);
		return CLI_EXIT_FAILURE;
	}
	sigint_ev = evsignal_new(rs.base, SIGINT, on_signal, &rs);
	sigterm_ev = evsignal_new(rs.base, SIGTERM, on_signal, &rs);
	event_add(sigint_ev, NULL);
	event_add(sigterm_ev, NULL);

	job_start(rs.job);
	event_base_dispatch(rs.base);
	status = job_exit_status(rs.job);
	log_info(NULL, "job %s: %s with exit status %d%s%s", job_id(rs.job),
		 job_state_name(job_state(rs.job)), status,
		 *job_reason(rs.job) ? ": " : "", job_reason(rs.job));

	event_free(sigint_ev);
	event_free(sigterm_ev);
	job_free(rs.job);
	create_gate_free(env.gate);
	cli_engine_close(&eng);
	return status;
usage:
	fprintf(stderr, "usage: mfmodal-engine run --job FILE|-\n");
	return CLI_EXIT_USAGE;
}
