/* A job's lifecycle: the one state setter, the dispatcher, failure, cancel
 * and the RPCs it tracks. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "create_gate.h"
#include "job_internal.h"
#include "log.h"
#include "util.h"

static const char *const state_names[] = {
	[JOB_QUEUED] = "QUEUED",       [JOB_PACKAGE] = "PACKAGE",
	[JOB_RESOLVE] = "RESOLVE",     [JOB_CREATE] = "CREATE",
	[JOB_RUNNING] = "RUNNING",     [JOB_DRAINING] = "DRAINING",
	[JOB_SYNC] = "SYNC",           [JOB_DONE] = "DONE",
	[JOB_FAILED] = "FAILED",       [JOB_CANCELLING] = "CANCELLING",
};
_Static_assert(sizeof(state_names) / sizeof(state_names[0]) == JOB_STATE_COUNT,
	       "state_names covers every job state");

const char *
job_state_name(enum job_state state)
{
	if ((unsigned)state >= JOB_STATE_COUNT)
		return "INVALID";
	return state_names[state];
}

static void
finish_cb(evutil_socket_t fd, short what, void *arg)
{
	struct job *job = arg;

	job->done(job, job->done_arg);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct job *job = arg;

	log_error(job->prefix, "the job's deadline of %.0f s passed; cancelling",
		  job->spec.deadline);
	job_set_reason(job, "the job's deadline of %.0f s passed",
		       job->spec.deadline);
	job_cancel(job, JOB_EXIT_TIMEOUT, 0);
}

static void
state_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct job *job = arg;

	switch (job->state) {
	case JOB_DRAINING:
		log_warn(job->prefix,
			 "log streams did not end within %.0f s of the exit; "
			 "the last lines may be missing",
			 job->env.drain_grace);
		job_logs_stop(job);
		job_set_state(job, JOB_SYNC);
		break;
	default:
		job_fail(job, JOB_EXIT_FAILURE, "%s timed out",
			 job_state_name(job->state));
		break;
	}
}

struct job *
job_new(const struct job_env *env, struct jobspec *spec, job_done_cb done,
	void *arg)
{
	struct job *job = calloc(1, sizeof(*job));

	if (job == NULL)
		return NULL;
	job->env = *env;
	job->spec = *spec;
	memset(spec, 0, sizeof(*spec));
	job->done = done;
	job->done_arg = arg;
	job->state = JOB_QUEUED;
	job->state_since = util_now();
	job->exit_status = JOB_EXIT_FAILURE;
	TAILQ_INIT(&job->rpcs);
	snprintf(job->prefix, sizeof(job->prefix), "[job %s]", job->spec.id);
	jobspec_sandbox_name(&job->spec, job->sandbox_name);
	job->finish_ev = event_new(env->base, -1, 0, finish_cb, job);
	job->deadline_timer = evtimer_new(env->base, deadline_cb, job);
	job->state_timer = evtimer_new(env->base, state_timer_cb, job);
	job->sink = logsink_new(env->batch ? job->prefix : NULL, env->relay_out,
				env->relay_err);
	for (int fd = 1; fd <= 2; fd++) {
		job->logs[fd].job = job;
		job->logs[fd].fd = fd;
	}
	if (job->finish_ev == NULL || job->deadline_timer == NULL ||
	    job->state_timer == NULL || job->sink == NULL) {
		job_free(job);
		return NULL;
	}
	return job;
}

void
job_free(struct job *job)
{
	if (job == NULL)
		return;
	job_cancel_rpcs(job, 0);
	job_logs_stop(job);
	if (job->create_ticket != NULL)
		create_gate_leave(job->create_ticket);
	for (int fd = 1; fd <= 2; fd++)
		if (job->logs[fd].reconnect_timer != NULL)
			event_free(job->logs[fd].reconnect_timer);
	if (job->finish_ev != NULL)
		event_free(job->finish_ev);
	if (job->deadline_timer != NULL)
		event_free(job->deadline_timer);
	if (job->state_timer != NULL)
		event_free(job->state_timer);
	if (job->terminate_timer != NULL)
		event_free(job->terminate_timer);
	job_storage_release(job);
	logsink_free(job->sink);
	free(job->app_id);
	free(job->builder_version);
	for (size_t i = 0; i < job->nsecret_ids; i++)
		free(job->secret_ids[i]);
	free(job->secret_ids);
	free(job->image_id);
	free(job->sandbox_id);
	free(job->result_exception);
	free(job->reason);
	jobspec_free(&job->spec);
	free(job);
}

void
job_arm_state_timer(struct job *job, double seconds)
{
	struct timeval tv;

	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	event_add(job->state_timer, &tv);
}

void
job_set_state(struct job *job, enum job_state state)
{
	double now = util_now();
	enum job_state old = job->state;

	if (state == old)
		return;
	job->time_in[old] += now - job->state_since;
	log_info(job->prefix, "%s -> %s (%.2f s)", job_state_name(old),
		 job_state_name(state), now - job->state_since);
	job->state = state;
	job->state_since = now;
	event_del(job->state_timer);

	switch (state) {
	case JOB_PACKAGE:
		job_package_start(job);
		break;
	case JOB_RESOLVE:
		job_resolve_start(job);
		break;
	case JOB_CREATE:
		job_create_start(job);
		break;
	case JOB_RUNNING:
		job_running_start(job);
		break;
	case JOB_DRAINING:
		job_draining_start(job);
		break;
	case JOB_SYNC:
		job_sync_start(job);
		break;
	case JOB_CANCELLING:
		job_terminate_start(job);
		break;
	case JOB_DONE:
	case JOB_FAILED:
		event_del(job->deadline_timer);
		job_cancel_rpcs(job, 0);
		job_logs_stop(job);
		event_active(job->finish_ev, EV_TIMEOUT, 0);
		break;
	case JOB_QUEUED:
	case JOB_STATE_COUNT:
		break;
	}
}

void
job_start(struct job *job)
{
	if (job->spec.deadline > 0) {
		struct timeval tv;

		tv.tv_sec = (time_t)job->spec.deadline;
		tv.tv_usec = (suseconds_t)((job->spec.deadline - (double)tv.tv_sec) * 1e6);
		event_add(job->deadline_timer, &tv);
	}
	job_set_state(job, job->spec.package_url != NULL ? JOB_PACKAGE
							   : JOB_RESOLVE);
}

/* Where a job goes when it must end early: terminate a sandbox that may be
 * alive, else store what logs there are, else finish. */
static void
job_wind_down(struct job *job)
{
	if (job->sandbox_id != NULL && !job->terminated) {
		job_set_state(job, JOB_CANCELLING);
		return;
	}
	if (job->state == JOB_CREATE && job->create_in_flight) {
		/* The create reply decides: a sandbox is terminated, else done. */
		job_set_state(job, JOB_CANCELLING);
		return;
	}
	if (job->create_ticket != NULL) {
		create_gate_leave(job->create_ticket);
		job->create_ticket = NULL;
	}
	if (job->sandbox_id != NULL && !job->skip_flush)
		job_set_state(job, JOB_SYNC);
	else
		job_set_state(job, job->failed ? JOB_FAILED : JOB_DONE);
}

void
job_set_reason_v(struct job *job, const char *fmt, va_list ap)
{
	char *text = NULL;

	/* Out of memory keeps the earlier reason, if any. */
	if (vasprintf(&text, fmt, ap) < 0)
		return;
	free(job->reason);
	job->reason = text;
}

void
job_set_reason(struct job *job, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	job_set_reason_v(job, fmt, ap);
	va_end(ap);
}

void
job_fail(struct job *job, int exit_status, const char *fmt, ...)
{
	va_list ap;

	if (job->state == JOB_DONE || job->state == JOB_FAILED)
		return;
	va_start(ap, fmt);
	job_set_reason_v(job, fmt, ap);
	va_end(ap);
	job->failed = 1;
	job->exit_status = exit_status;
	log_error(job->prefix, "%s", job_reason(job));
	if (job->state == JOB_CANCELLING || job->state == JOB_SYNC) {
		/* already on the way out: a failure here only adds the reason */
		if (job->state == JOB_SYNC)
			job_set_state(job, JOB_FAILED);
		return;
	}
	job_cancel_rpcs(job, 0);
	job_wind_down(job);
}

void
job_cancel(struct job *job, int exit_status, int skip_flush)
{
	if (job->state == JOB_DONE || job->state == JOB_FAILED)
		return;
	if (skip_flush) {
		job->skip_flush = 1;
		if (job->state == JOB_SYNC) {
			/* stop storing the logs; the sandbox is over already */
			job->failed = 1;
			job->exit_status = exit_status;
			job_storage_release(job);
			job_set_state(job, JOB_FAILED);
			return;
		}
	}
	if (job->cancelled)
		return; /* a second signal only skips the flush */
	job->cancelled = 1;
	job->failed = 1;
	job->exit_status = exit_status;
	if (job->reason == NULL)
		job_set_reason(job, "cancelled by %s",
			 exit_status == JOB_EXIT_SIGINT    ? "SIGINT"
			 : exit_status == JOB_EXIT_SIGTERM ? "SIGTERM"
							   : "the engine");
	if (job->state == JOB_QUEUED) {
		job_set_state(job, JOB_FAILED);
		return;
	}
	/* A SandboxCreate in flight stays: its reply names the sandbox. */
	job_cancel_rpcs(job, 1);
	if (job->state == JOB_CANCELLING || job->state == JOB_SYNC)
		return;
	job_wind_down(job);
}

int
job_exit_for_status(int code)
{
	switch (code) {
	case GRPC_INVALID_ARGUMENT:
	case GRPC_NOT_FOUND:
	case GRPC_PERMISSION_DENIED:
	case GRPC_FAILED_PRECONDITION:
	case GRPC_OUT_OF_RANGE:
	case GRPC_UNIMPLEMENTED:
	case GRPC_UNAUTHENTICATED:
		return JOB_EXIT_NO_RETRY;
	default:
		return JOB_EXIT_FAILURE;
	}
}

/* RPC tracking. */

static void
rpc_done(void *arg, const struct grpc_status *st, ProtobufCMessage *response)
{
	struct job_rpc *rpc = arg;
	struct job *job = rpc->job;

	TAILQ_REMOVE(&job->rpcs, rpc, link);
	rpc->handler(rpc, st, response);
	free(rpc);
}

/* A tracked RPC record; the caller starts the call and sets rpc->call. */
static struct job_rpc *
rpc_new(struct job *job, job_rpc_handler handler, size_t index)
{
	struct job_rpc *rpc = calloc(1, sizeof(*rpc));

	if (rpc == NULL)
		return NULL;
	rpc->job = job;
	rpc->handler = handler;
	rpc->index = index;
	TAILQ_INSERT_TAIL(&job->rpcs, rpc, link);
	return rpc;
}

/* Finish rpc_new(): forget the record when the call could not start. */
static struct job_rpc *
rpc_started(struct job *job, struct job_rpc *rpc)
{
	if (rpc->call != NULL)
		return rpc;
	TAILQ_REMOVE(&job->rpcs, rpc, link);
	free(rpc);
	return NULL;
}

struct job_rpc *
job_rpc_unary(struct job *job, const char *method,
	      const ProtobufCMessage *request,
	      const ProtobufCMessageDescriptor *response_type, double timeout,
	      job_rpc_handler handler, size_t index)
{
	struct job_rpc *rpc = rpc_new(job, handler, index);
	struct grpc_call_options opts = {
		.timeout = timeout,
		.log_prefix = job->prefix,
	};

	if (rpc == NULL)
		return NULL;
	rpc->call = grpc_call_unary(job->env.client, method, request,
				    response_type, &opts, rpc_done, rpc);
	return rpc_started(job, rpc);
}

static void
rpc_message(void *arg, ProtobufCMessage *message)
{
	struct job_rpc *rpc = arg;

	rpc->message_handler(rpc, message);
}

static void
rpc_stream_done(void *arg, const struct grpc_status *st)
{
	rpc_done(arg, st, NULL);
}

struct job_rpc *
job_rpc_stream(struct job *job, const char *method,
	       const ProtobufCMessage *request,
	       const ProtobufCMessageDescriptor *message_type, double timeout,
	       job_rpc_message_handler message_handler, job_rpc_handler handler,
	       size_t index)
{
	struct job_rpc *rpc = rpc_new(job, handler, index);
	struct grpc_call_options opts = {
		.timeout = timeout,
		.log_prefix = job->prefix,
	};

	if (rpc == NULL)
		return NULL;
	rpc->message_handler = message_handler;
	rpc->call = grpc_call_server_stream(job->env.client, method, request,
					    message_type, &opts, rpc_message,
					    rpc_stream_done, rpc);
	return rpc_started(job, rpc);
}

void
job_cancel_rpcs(struct job *job, int keep_create)
{
	struct job_rpc *rpc, *next;

	for (rpc = TAILQ_FIRST(&job->rpcs); rpc != NULL; rpc = next) {
		next = TAILQ_NEXT(rpc, link);
		if (keep_create && rpc->keep_on_cancel)
			continue;
		TAILQ_REMOVE(&job->rpcs, rpc, link);
		grpc_call_cancel(rpc->call);
		free(rpc);
	}
}

/* Accessors. */

enum job_state
job_state(const struct job *job)
{
	return job->state;
}

const char *
job_id(const struct job *job)
{
	return job->spec.id;
}

const char *
job_sandbox_id(const struct job *job)
{
	return job->sandbox_id;
}

int
job_exit_status(const struct job *job)
{
	return job->exit_status;
}

double
job_time_in(const struct job *job, enum job_state state)
{
	double t = job->time_in[state];

	if (job->state == state)
		t += util_now() - job->state_since;
	return t;
}

size_t
job_log_bytes(const struct job *job)
{
	return logsink_bytes(job->sink);
}

const char *
job_reason(const struct job *job)
{
	return job->reason != NULL ? job->reason : "";
}
