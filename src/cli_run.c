/* mfmodal-engine run --job FILE: one task attempt from start to finish. */
#include "config.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "cli.h"
#include "job.h"
#include "log.h"
#include "modal.h"

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

/* Print every problem of an unusable job description, one per line. */
static void
print_errors(const char *file, const struct jobspec_errors *errs)
{
	fprintf(stderr, "mfmodal-engine: invalid job description %s:\n",
		strcmp(file, "-") == 0 ? "on standard input" : file);
	for (size_t i = 0; i < errs->n; i++)
		fprintf(stderr, "  %s\n", errs->items[i]);
}

int
cli_run(const struct cli_globals *globals, int argc, char **argv)
{
	static const struct option options[] = {
		{"job", required_argument, NULL, 'j'},
		{NULL, 0, NULL, 0},
	};
	const char *file = NULL;
	struct jobspec_errors errs = {0};
	struct jobspec spec;
	struct modal_config cfg;
	struct run_state rs = {0};
	struct evdns_base *dns = NULL;
	struct grpc_client *client = NULL;
	struct event *sigint_ev = NULL, *sigterm_ev = NULL;
	json_t *doc;
	char err[1024];
	int opt, status = CLI_EXIT_USAGE;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "j:", options, NULL)) != -1) {
		if (opt != 'j') {
			fprintf(stderr, "usage: mfmodal-engine run --job FILE|-\n");
			return CLI_EXIT_USAGE;
		}
		file = optarg;
	}
	if (file == NULL || optind != argc) {
		fprintf(stderr, "usage: mfmodal-engine run --job FILE|-\n");
		return CLI_EXIT_USAGE;
	}

	doc = jobspec_load_json(file, &errs);
	if (doc != NULL)
		jobspec_parse(doc, "$", &spec, &errs);
	else
		memset(&spec, 0, sizeof(spec));
	json_decref(doc);
	if (errs.n > 0) {
		print_errors(file, &errs);
		jobspec_errors_free(&errs);
		jobspec_free(&spec);
		return CLI_EXIT_USAGE;
	}
	if (modal_config_load(&cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "mfmodal-engine: %s\n", err);
		modal_config_free(&cfg);
		jobspec_free(&spec);
		return CLI_EXIT_USAGE;
	}
	log_add_secret(cfg.token_secret);

	rs.base = event_base_new();
	if (rs.base != NULL)
		dns = evdns_base_new(rs.base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
						      EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	struct modal_client_options copts = {
		.ca_file = globals->ca_file,
		.keepalive = globals->keepalive,
	};
	if (dns != NULL)
		client = modal_client_new(rs.base, dns, &cfg, &copts, err, sizeof(err));
	if (client == NULL) {
		fprintf(stderr, "mfmodal-engine: %s\n",
			dns == NULL ? "cannot set up the event loop" : err);
		jobspec_free(&spec);
		goto out;
	}

	const char *poll = getenv("MFMODAL_LOG_POLL");
	struct job_env env = {
		.base = rs.base,
		.client = client,
		.environment = cfg.environment,
		.relay_out = stdout,
		.relay_err = stderr,
		.drain_grace = 10.0,
		/* Metaflow's runtime sends SIGKILL 5 s after SIGINT. */
		.terminate_bound = 4.0,
		.log_poll = poll != NULL && atof(poll) > 0 ? atof(poll) : 55.0,
	};
	rs.job = job_new(&env, &spec, run_done, &rs);
	if (rs.job == NULL) {
		fprintf(stderr, "mfmodal-engine: out of memory\n");
		jobspec_free(&spec);
		status = CLI_EXIT_FAILURE;
		goto out;
	}
	sigint_ev = evsignal_new(rs.base, SIGINT, on_signal, &rs);
	sigterm_ev = evsignal_new(rs.base, SIGTERM, on_signal, &rs);
	event_add(sigint_ev, NULL);
	event_add(sigterm_ev, NULL);

	job_start(rs.job);
	event_base_dispatch(rs.base);
	status = job_exit_status(rs.job);
	log_info(job_sandbox_id(rs.job) != NULL ? NULL : NULL,
		 "job %s: %s with exit status %d%s%s", job_id(rs.job),
		 job_state_name(job_state(rs.job)), status,
		 *job_reason(rs.job) ? ": " : "", job_reason(rs.job));
out:
	if (sigint_ev != NULL)
		event_free(sigint_ev);
	if (sigterm_ev != NULL)
		event_free(sigterm_ev);
	job_free(rs.job);
	grpc_client_free(client);
	if (dns != NULL)
		evdns_base_free(dns, 0);
	if (rs.base != NULL)
		event_base_free(rs.base);
	modal_config_free(&cfg);
	return status;
}
