/* mfmodal-engine --jobs FILE: many job descriptions in one reactor. */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "create_gate.h"
#include "log.h"
#include "util.h"

/* Jobs in flight at once when --max-parallel is not given; doc/benchmarks.md
 * has the measurement behind it. */
#define BATCH_DEFAULT_PARALLEL 64
#define PROGRESS_INTERVAL 0.5

/* Jobs are created when they start and freed when they finish, so memory
 * follows --max-parallel, not the size of the jobs file. */

/* A job not started yet, kept as compact JSON and parsed again when it
 * starts.  A parsed description takes several times the memory, and a
 * batch may hold thousands of waiting jobs. */
struct waiting_job {
	char *id;
	char *json;
};
struct batch {
	struct event_base *base;
	struct job_env env;
	struct waiting_job *waiting; /* freed as each job starts */
	struct job **jobs;      /* NULL before the start and after the end */
	size_t njobs;
	size_t next;      /* the first job not yet started */
	size_t running;
	size_t finished;
	size_t failed;
	unsigned max_parallel;
	int fail_fast;
	int stopping;     /* after a signal or the first failure with fail-fast */
	int stop_status;  /* 130 or 143 after a signal, else 0 */
	unsigned sigints;
	FILE *results;
	int progress;     /* a live progress line on the terminal */
	struct event *progress_timer;
	double started;
};

static void batch_fill(struct batch *b);

static void
print_line(struct batch *b, json_t *line)
{
	char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER |
					      JSON_REAL_PRECISION(6));

	if (text != NULL) {
		fprintf(b->results, "%s\n", text);
		fflush(b->results);
		free(text);
	}
	json_decref(line);
}

/* The result of a job the batch stopped before it started. */
static void
write_unstarted_result(struct batch *b, const char *id, int status)
{
	json_t *line = json_object();

	json_object_set_new(line, "id", json_string(id));
	json_object_set_new(line, "sandbox_id", json_null());
	json_object_set_new(line, "state", json_string(job_state_name(JOB_FAILED)));
	json_object_set_new(line, "exit_code", json_integer(status));
	json_object_set_new(line, "seconds", json_object());
	json_object_set_new(line, "log_bytes", json_integer(0));
	json_object_set_new(line, "reason",
			    json_string("not started: the batch was stopped"));
	print_line(b, line);
}

static void
write_result(struct batch *b, struct job *job)
{
	json_t *line = json_object(), *seconds = json_object();

	json_object_set_new(line, "id", json_string(job_id(job)));
	json_object_set_new(line, "sandbox_id", job_sandbox_id(job) != NULL
						  ? json_string(job_sandbox_id(job))
						  : json_null());
	json_object_set_new(line, "state", json_string(job_state_name(job_state(job))));
	json_object_set_new(line, "exit_code", json_integer(job_exit_status(job)));
	for (int s = JOB_QUEUED; s < JOB_STATE_COUNT; s++) {
		double t = job_time_in(job, (enum job_state)s);

		if (t > 0)
			json_object_set_new(seconds, job_state_name((enum job_state)s),
					    json_real(t));
	}
	json_object_set_new(line, "seconds", seconds);
	json_object_set_new(line, "log_bytes", json_integer((json_int_t)job_log_bytes(job)));
	if (*job_reason(job) != '\0')
		json_object_set_new(line, "reason", json_string(job_reason(job)));
	print_line(b, line);
}

static void
progress_draw(struct batch *b, int final)
{
	size_t creating = 0, running = 0, queued = b->njobs - b->next;

	for (size_t i = 0; i < b->next; i++) {
		if (b->jobs[i] == NULL)
			continue;
		enum job_state s = job_state(b->jobs[i]);

		if (s == JOB_PACKAGE || s == JOB_RESOLVE || s == JOB_CREATE)
			creating++;
		else if (s == JOB_RUNNING || s == JOB_DRAINING || s == JOB_SYNC ||
			 s == JOB_CANCELLING)
			running++;
	}
	fprintf(stderr,
		"\r\033[Kqueued %zu  creating %zu  running %zu  done %zu  failed "
		"%zu  elapsed %.0f s%s",
		queued, creating, running, b->finished - b->failed, b->failed,
		util_now() - b->started, final ? "\n" : "");
	fflush(stderr);
}

static void
progress_cb(evutil_socket_t fd, short what, void *arg)
{
	progress_draw(arg, 0);
}

static int
job_succeeded(struct job *job)
{
	return job_state(job) == JOB_DONE && job_exit_status(job) == 0;
}

static void
batch_stop(struct batch *b, int status, int skip_flush)
{
	b->stopping = 1;
	if (status != 0)
		b->stop_status = status;
	for (size_t i = 0; i < b->next; i++)
		if (b->jobs[i] != NULL)
			job_cancel(b->jobs[i],
				   status != 0 ? status : JOB_EXIT_FAILURE,
				   skip_flush);
	/* Jobs never started are reported as FAILED without a sandbox. */
	for (; b->next < b->njobs; b->next++) {
		write_unstarted_result(b, b->waiting[b->next].id,
				       status != 0 ? status : JOB_EXIT_FAILURE);
		b->finished++;
		b->failed++;
	}
	if (b->finished == b->njobs)
		event_base_loopbreak(b->base);
}

static void
job_finished(struct job *job, void *arg)
{
	struct batch *b = arg;

	b->finished++;
	b->running--;
	if (!job_succeeded(job)) {
		b->failed++;
		if (b->fail_fast && !b->stopping) {
			log_warn(NULL, "job %s failed; --fail-fast stops the others",
				 job_id(job));
			batch_stop(b, 0, 0);
		}
	}
	write_result(b, job);
	for (size_t i = 0; i < b->next; i++) {
		if (b->jobs[i] == job) {
			/* From the job's own finish event, which touches
			 * nothing after this callback returns. */
			job_free(job);
			b->jobs[i] = NULL;
			break;
		}
	}
	if (b->finished == b->njobs) {
		event_base_loopbreak(b->base);
		return;
	}
	batch_fill(b);
}

/* Create the job from its waiting description.  Returns NULL only when
 * out of memory, because the description was checked when it was read. */
static struct job *
waiting_job_start(struct batch *b, struct waiting_job *w)
{
	struct jobspec_errors errs = {0};
	struct jobspec spec = {0};
	json_t *item = json_loads(w->json, 0, NULL);
	struct job *job = NULL;

	if (item != NULL && jobspec_parse(item, "$", &spec, &errs) == 0)
		job = job_new(&b->env, &spec, job_finished, b);
	if (job == NULL)
		jobspec_free(&spec);
	jobspec_errors_free(&errs);
	json_decref(item);
	return job;
}

static void
batch_fill(struct batch *b)
{
	while (!b->stopping && b->running < b->max_parallel && b->next < b->njobs) {
		size_t i = b->next++;
		struct job *job = waiting_job_start(b, &b->waiting[i]);

		if (job == NULL) {
			log_error(NULL, "out of memory starting job %s",
				  b->waiting[i].id);
			write_unstarted_result(b, b->waiting[i].id, JOB_EXIT_FAILURE);
			b->finished++;
			b->failed++;
		} else {
			b->jobs[i] = job;
			b->running++;
		}
		free(b->waiting[i].json);
		free(b->waiting[i].id);
		b->waiting[i].json = b->waiting[i].id = NULL;
		if (job != NULL)
			job_start(job);
	}
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct batch *b = arg;

	if (sig == SIGINT && ++b->sigints > 1) {
		log_warn(NULL, "second SIGINT: the logs are not stored");
		batch_stop(b, CLI_EXIT_SIGINT, 1);
		return;
	}
	log_warn(NULL, "%s: terminating every sandbox, then storing the logs",
		 sig == SIGINT ? "SIGINT" : "SIGTERM");
	batch_stop(b, sig == SIGINT ? CLI_EXIT_SIGINT : CLI_EXIT_SIGTERM, 0);
}

static void
waiting_jobs_free(struct waiting_job *waiting, size_t n)
{
	for (size_t i = 0; waiting != NULL && i < n; i++) {
		free(waiting[i].id);
		free(waiting[i].json);
	}
	free(waiting);
}

/* Check one job description and keep it for later.  Problems go to errs.
 * Returns 0, or -1 when out of memory. */
static int
waiting_job_add(json_t *item, const char *base, size_t i,
		struct waiting_job *waiting, int *needs_s3,
		struct jobspec_errors *errs)
{
	struct jobspec spec = {0};
	size_t before = errs->n;
	char path[64];

	snprintf(path, sizeof(path), "%s[%zu]", base, i);
	jobspec_parse(item, path, &spec, errs);
	for (size_t j = 0; j < i && spec.id != NULL; j++)
		if (waiting[j].id != NULL && strcmp(waiting[j].id, spec.id) == 0)
			jobspec_errors_add(errs, "%s.id: \"%s\" is already the id "
					   "of %s[%zu]", path, spec.id, base, j);
	if (cli_spec_needs_s3(&spec))
		*needs_s3 = 1;
	waiting[i].id = spec.id;
	spec.id = NULL;
	jobspec_free(&spec);
	if (errs->n > before)
		return 0; /* nothing runs, so the text is not needed */
	waiting[i].json = json_dumps(item, JSON_COMPACT);
	return waiting[i].json != NULL ? 0 : -1;
}

/* Read every job of the file; every problem is listed before anything runs. */
static int
load_jobs(const char *file, struct waiting_job **waiting, size_t *n,
	  int *needs_s3)
{
	struct jobspec_errors errs = {0};
	json_t *doc = jobspec_load_json(file, &errs), *list = NULL, *item;
	size_t i;

	*waiting = NULL;
	*n = 0;
	*needs_s3 = 0;
	if (doc != NULL) {
		list = json_is_object(doc) ? json_object_get(doc, "jobs") : doc;
		if (json_is_object(doc) && json_object_size(doc) != 1)
			jobspec_errors_add(&errs, "$: expected only the field \"jobs\"");
		if (!json_is_array(list))
			jobspec_errors_add(&errs,
					   "$: expected a list of job descriptions, "
					   "or {\"jobs\": [...]}");
		else if (json_array_size(list) == 0)
			jobspec_errors_add(&errs, "$: the list of jobs is empty");
	}
	if (errs.n == 0) {
		const char *base = json_is_object(doc) ? "$.jobs" : "$";

		*n = json_array_size(list);
		*waiting = calloc(*n, sizeof(**waiting));
		if (*waiting == NULL)
			jobspec_errors_add(&errs, "$: out of memory");
		json_array_foreach(list, i, item) {
			if (*waiting == NULL)
				break;
			if (waiting_job_add(item, base, i, *waiting, needs_s3,
					    &errs) != 0)
				jobspec_errors_add(&errs, "%s[%zu]: out of memory",
						   base, i);
		}
	}
	json_decref(doc);
	if (errs.n == 0)
		return 0;
	cli_print_job_errors(file, &errs);
	jobspec_errors_free(&errs);
	waiting_jobs_free(*waiting, *n);
	*waiting = NULL;
	return -1;
}

int
cli_batch(const struct cli_globals *globals)
{
	struct batch b = {0};
	struct cli_engine eng;
	struct waiting_job *waiting;
	struct event *sigint_ev = NULL, *sigterm_ev = NULL;
	size_t n;
	int needs_s3, status;

	if (load_jobs(globals->jobs_file, &waiting, &n, &needs_s3) != 0)
		return CLI_EXIT_USAGE;
	b.results = stdout;
	if (globals->results_file != NULL) {
		b.results = fopen(globals->results_file, "w");
		if (b.results == NULL) {
			fprintf(stderr, "mfmodal-engine: cannot write results to %s: %m\n",
				globals->results_file);
			waiting_jobs_free(waiting, n);
			return CLI_EXIT_USAGE;
		}
	}
	status = cli_engine_open(&eng, globals);
	if (status == CLI_EXIT_OK && needs_s3)
		status = cli_engine_open_s3(&eng, globals);
	if (status != CLI_EXIT_OK) {
		cli_engine_close(&eng);
		goto out_waiting;
	}

	cli_job_env(&b.env, &eng);
	b.env.batch = 1;
	b.env.gate = create_gate_new(eng.base);
	b.base = eng.base;
	b.max_parallel = globals->max_parallel > 0 ? globals->max_parallel
						   : BATCH_DEFAULT_PARALLEL;
	b.fail_fast = globals->fail_fast;
	b.waiting = waiting;
	b.njobs = n;
	b.jobs = calloc(n, sizeof(*b.jobs));
	if (b.env.gate == NULL || b.jobs == NULL) {
		fprintf(stderr, "mfmodal-engine: out of memory\n");
		status = CLI_EXIT_FAILURE;
		goto out;
	}
	log_info(NULL, "running %zu jobs, at most %u at once", n, b.max_parallel);
	sigint_ev = evsignal_new(b.base, SIGINT, on_signal, &b);
	sigterm_ev = evsignal_new(b.base, SIGTERM, on_signal, &b);
	event_add(sigint_ev, NULL);
	event_add(sigterm_ev, NULL);
	b.started = util_now();
	b.progress = isatty(STDERR_FILENO);
	if (b.progress) {
		struct timeval tv = {0, (suseconds_t)(PROGRESS_INTERVAL * 1e6)};

		b.progress_timer = event_new(b.base, -1, EV_PERSIST, progress_cb, &b);
		event_add(b.progress_timer, &tv);
	}

	batch_fill(&b);
	if (b.finished < b.njobs)
		event_base_dispatch(b.base);
	if (b.progress)
		progress_draw(&b, 1);
	if (create_gate_throttle_events(b.env.gate) > 0)
		log_info(NULL, "SandboxCreate was throttled %u times, %.1f s in all",
			 create_gate_throttle_events(b.env.gate),
			 create_gate_throttled_seconds(b.env.gate));
	log_info(NULL, "%zu jobs: %zu succeeded, %zu failed, in %.1f s", b.njobs,
		 b.njobs - b.failed, b.failed, util_now() - b.started);
	if (b.stop_status != 0)
		status = b.stop_status;
	else
		status = b.failed > 0 ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
out:
	if (b.progress_timer != NULL)
		event_free(b.progress_timer);
	if (sigint_ev != NULL)
		event_free(sigint_ev);
	if (sigterm_ev != NULL)
		event_free(sigterm_ev);
	for (size_t i = 0; b.jobs != NULL && i < n; i++)
		job_free(b.jobs[i]);
	free(b.jobs);
	create_gate_free(b.env.gate);
	cli_engine_close(&eng);
out_waiting:
	waiting_jobs_free(waiting, n);
	if (b.results != stdout && b.results != NULL)
		fclose(b.results);
	return status;
}
