#ifndef MFMODAL_JOB_INTERNAL_H
#define MFMODAL_JOB_INTERNAL_H

/* The job's private state, shared by job.c (lifecycle), job_resolve.c
 * (RESOLVE), job_sandbox.c (CREATE to DRAINING, CANCELLING) and job_sync.c
 * (PACKAGE, SYNC). */

#include <stdarg.h>
#include <sys/queue.h>

#include "job.h"
#include "modal_api.pb-c.h"

/* One RPC in flight for a job; freed after its handler returns. */
struct job_rpc;
typedef void (*job_rpc_handler)(struct job_rpc *rpc,
				const struct grpc_status *st,
				ProtobufCMessage *response);
typedef void (*job_rpc_message_handler)(struct job_rpc *rpc,
					ProtobufCMessage *message);
struct job_rpc {
	struct job *job;
	struct grpc_call *call;
	job_rpc_handler handler;
	job_rpc_message_handler message_handler; /* server streams */
	size_t index; /* which secret, for example */
	int keep_on_cancel; /* SandboxCreate: its reply is needed to terminate */
	TAILQ_ENTRY(job_rpc) link;
};

/* One of the two log streams (SandboxGetLogs for fd 1 or 2). */
struct job_logstream {
	struct job *job;
	int fd;
	char cursor[128];         /* last entry id seen; "" before the first */
	int eof;
	unsigned errors;          /* consecutive failed calls */
	unsigned reconnects;
	struct grpc_call *call;
	struct event *reconnect_timer;
};

struct job {
	struct job_env env;
	struct jobspec spec;
	char prefix[96];
	enum job_state state;
	double state_since;
	double time_in[JOB_STATE_COUNT];
	job_done_cb done;
	void *done_arg;
	struct event *finish_ev;  /* runs done() from a clean stack */
	struct event *deadline_timer;
	struct event *state_timer; /* the bound of the current wait */
	TAILQ_HEAD(, job_rpc) rpcs;

	/* RESOLVE */
	char *app_id;
	char *builder_version;
	char **secret_ids;        /* named secrets in order, then the env dict */
	size_t nsecret_ids;
	char *image_id;
	char image_cursor[128];
	unsigned image_join_attempts;
	unsigned pending;         /* resolve calls without a reply yet */

	/* CREATE to DRAINING */
	struct create_ticket *create_ticket; /* waiting for the create gate */
	int create_in_flight;
	double create_first_try;
	char sandbox_name[65];
	char *sandbox_id;
	struct job_logstream logs[3]; /* indexed by fd */
	struct logsink *sink;
	int have_result;
	int result_status;        /* GenericResult.GenericStatus */
	int result_exitcode;
	char *result_exception;
	unsigned waits;
	double running_since;

	/* CANCELLING */
	int cancelled;
	int skip_flush;
	int terminate_sent;
	int terminated;           /* terminate acknowledged */
	double terminate_started;
	unsigned terminate_attempts;
	struct event *terminate_timer;

	/* the outcome */
	int failed;
	int exit_status;
	char *reason;         /* why it failed; NULL until there is a reason */

	/* PACKAGE and SYNC: transfers with the datastore */
	struct s3_op *package_op;
	struct s3_upload *package_upload;
	unsigned long uploaded_lines[3]; /* lines stored in the last upload */
	struct s3_upload *log_upload[3];  /* one upload per stream at a time */
	unsigned long log_upload_lines[3];
	char *log_tmp[3];     /* snapshot being uploaded; NULL when none */
	struct event *upload_timer;
	double upload_interval;
	int final_uploads;    /* SYNC waits for the last uploads */
	struct s3_op *metadata_op;
	char *metadata_tmp;
	char *metadata_key;
	int metadata_step;    /* 0 pointer file, 1 content-addressed blob */
};

void job_set_state(struct job *job, enum job_state state);
/* Replace the job's failure reason. */
void job_set_reason(struct job *job, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void job_set_reason_v(struct job *job, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/* End the job without a task result: log reason, terminate a live sandbox,
 * store the logs, then FAILED with exit_status. */
void job_fail(struct job *job, int exit_status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Start a unary call tracked by the job (cancelled with it). */
struct job_rpc *job_rpc_unary(struct job *job, const char *method,
			      const ProtobufCMessage *request,
			      const ProtobufCMessageDescriptor *response_type,
			      double timeout, job_rpc_handler handler,
			      size_t index);
/* Start a server-streaming call tracked by the job; handler gets the final
 * status with a NULL response. */
struct job_rpc *job_rpc_stream(struct job *job, const char *method,
			       const ProtobufCMessage *request,
			       const ProtobufCMessageDescriptor *message_type,
			       double timeout,
			       job_rpc_message_handler message_handler,
			       job_rpc_handler handler, size_t index);
void job_cancel_rpcs(struct job *job, int keep_create);
void job_arm_state_timer(struct job *job, double seconds);

/* States' entry points. */
void job_resolve_start(struct job *job);
void job_create_start(struct job *job);
void job_running_start(struct job *job);
void job_draining_start(struct job *job);
void job_logs_stop(struct job *job);
void job_terminate_start(struct job *job);
void job_package_start(struct job *job);
void job_sync_start(struct job *job);
/* Start the periodic log uploads (RUNNING). */
void job_logs_upload_start(struct job *job);
/* Stop uploads and remove temporary files (job_free). */
void job_storage_release(struct job *job);
int job_needs_storage(const struct job *job);

#endif
