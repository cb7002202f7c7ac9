#ifndef MFMODAL_JOB_H
#define MFMODAL_JOB_H

/* One task attempt driven through a sandbox's lifecycle.  Every job is in
 * exactly one state; only job_set_state() changes it. */

#include <event2/event.h>

#include "grpc.h"
#include "jobspec.h"
#include "logsink.h"

/* States in lifecycle order, each named for what the job waits for. */
enum job_state {
	JOB_QUEUED,     /* a free slot (batch mode) */
	JOB_PACKAGE,    /* the code package in the datastore: HEAD, upload */
	JOB_RESOLVE,    /* app, environment, secret and image ids */
	JOB_CREATE,     /* the sandbox id from SandboxCreate */
	JOB_RUNNING,    /* the exit result from SandboxWait; logs stream meanwhile */
	JOB_DRAINING,   /* log EOF on both streams, or the grace period */
	JOB_SYNC,       /* logs and metadata stored */
	JOB_DONE,       /* finished: the task's exit status is known */
	JOB_FAILED,     /* finished without a task result */
	JOB_CANCELLING, /* SandboxTerminate acknowledged */
	JOB_STATE_COUNT
};
const char *job_state_name(enum job_state state);

/* Exit statuses besides the task's own (see mfmodal-engine(1)). */
#define JOB_EXIT_FAILURE 1     /* no task result: resolve, create or RPC error */
#define JOB_EXIT_INVALID 2     /* unusable job description */
#define JOB_EXIT_TIMEOUT 124   /* Modal TIMEOUT, or the job's deadline */
/* A rejection that cannot succeed on a retry (an invalid GPU type, a missing
 * secret, rejected credentials, a failed image build): Metaflow's runtime
 * does not retry an attempt that exits with 202. */
#define JOB_EXIT_NO_RETRY 202
#define JOB_EXIT_SIGINT 130
#define JOB_EXIT_TERMINATED 137 /* terminated by the platform */
#define JOB_EXIT_SIGTERM 143

struct job;
struct s3_client;
struct create_gate;

/* JOB_EXIT_NO_RETRY for a status that no retry can change, else
 * JOB_EXIT_FAILURE. */
int job_exit_for_status(int grpc_code);

/* Called once when the job reaches DONE or FAILED. */
typedef void (*job_done_cb)(struct job *job, void *arg);

struct job_env {
	struct event_base *base;
	struct grpc_client *client;
	struct s3_client *s3;       /* NULL when no job needs the datastore */
	struct create_gate *gate;   /* paces SandboxCreate; may be NULL */
	const char *environment;    /* Modal environment name, "" for default */
	FILE *relay_out;            /* where task stdout lines go */
	FILE *relay_err;
	int batch;                  /* prefix relayed lines with the job id */
	double drain_grace;         /* seconds to wait for log EOF after exit */
	double terminate_bound;     /* seconds to keep retrying SandboxTerminate */
	double log_poll;            /* seconds one SandboxGetLogs call long-polls */
};

/* Create a job for spec, which it takes over (the caller must not free it). */
struct job *job_new(const struct job_env *env, struct jobspec *spec,
		    job_done_cb done, void *arg);
void job_free(struct job *job);
void job_start(struct job *job);

/* Cancel: terminate the sandbox (also one whose create reply is still on its
 * way), then store the logs unless skip_flush.  exit_status is what the job
 * reports (130 for SIGINT, 143 for SIGTERM, 124 for a deadline). */
void job_cancel(struct job *job, int exit_status, int skip_flush);

enum job_state job_state(const struct job *job);
const char *job_id(const struct job *job);
const char *job_sandbox_id(const struct job *job);
int job_exit_status(const struct job *job);
/* Seconds spent in state, counting the current one up to now. */
double job_time_in(const struct job *job, enum job_state state);
size_t job_log_bytes(const struct job *job);
/* Why the job failed or ended abnormally; "" otherwise. */
const char *job_reason(const struct job *job);

#endif
