/* CREATE, RUNNING, DRAINING and CANCELLING: the sandbox itself. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "create_gate.h"
#include "job_internal.h"
#include "log.h"
#include "util.h"

/* SandboxWait long-polls for 10 s as Modal's clients do; the call's deadline
 * adds a margin.  SandboxGetLogs polls for job_env.log_poll seconds (55 by
 * default, as Modal's clients do), with a deadline a fifth longer plus 2 s,
 * so a stream that stalls beyond its own timeout is reopened. */
#define WAIT_POLL 10.0
#define WAIT_TIMEOUT 20.0
#define CREATE_TIMEOUT 60.0
/* How long RESOURCE_EXHAUSTED may hold back one create before the job
 * fails: the server's rate limit, not a quota, is what this waits out. */
#define CREATE_THROTTLE_MAX 1800.0
/* After the sandbox's own timeout, how long the engine keeps waiting for
 * the server to report it before giving up. */
#define RUNNING_MARGIN 300.0
/* Consecutive failed log calls before a stream is given up; any batch
 * resets the count, so a long job survives scattered errors. */
#define LOGS_MAX_ERRORS 10

static void logs_open(struct job_logstream *ls);
static void wait_once(struct job *job);

/* CREATE */

static void
on_terminate(struct job_rpc *rpc, const struct grpc_status *st,
	     ProtobufCMessage *m);

static void
attach_by_name_done(struct job_rpc *rpc, const struct grpc_status *st,
		    ProtobufCMessage *m)
{
	struct job *job = rpc->job;
	Modal__Client__SandboxListResponse *resp =
		(Modal__Client__SandboxListResponse *)m;

	if (st->code != GRPC_OK) {
		job_fail(job, JOB_EXIT_FAILURE,
			 "sandbox %s already exists and listing it failed: %s: %s",
			 job->sandbox_name, grpc_code_name(st->code), st->message);
		return;
	}
	for (size_t i = 0; i < resp->n_sandboxes; i++) {
		if (resp->sandboxes[i]->name != NULL &&
		    strcmp(resp->sandboxes[i]->name, job->sandbox_name) == 0) {
			job->sandbox_id = strdup(resp->sandboxes[i]->id);
			log_info(job->prefix,
				 "attached to sandbox %s, which an earlier "
				 "create of this attempt started",
				 job->sandbox_id);
			if (job->cancelled)
				job_terminate_start(job);
			else
				job_set_state(job, JOB_RUNNING);
			return;
		}
	}
	job_fail(job, JOB_EXIT_FAILURE,
		 "sandbox name %s is taken in app %s, but no running sandbox "
		 "has it",
		 job->sandbox_name, job->spec.app);
}

/* ALREADY_EXISTS: a sandbox with this attempt's name runs, most likely from
 * a create whose reply was lost.  Find it and follow it instead of starting
 * a second one. */
static void
attach_by_name(struct job *job)
{
	Modal__Client__SandboxListRequest req =
		MODAL__CLIENT__SANDBOX_LIST_REQUEST__INIT;
	struct job_rpc *rpc;

	req.app_id = job->app_id;
	req.environment_name = job->spec.environment != NULL
				       ? job->spec.environment
				       : (char *)(job->env.environment ? job->env.environment : "");
	rpc = job_rpc_unary(job, "SandboxList", &req.base,
			    &modal__client__sandbox_list_response__descriptor,
			    CREATE_TIMEOUT, attach_by_name_done, 0);
	if (rpc == NULL)
		job_fail(job, JOB_EXIT_FAILURE, "out of memory");
	else
		rpc->keep_on_cancel = 1;
}

static void create_enter_gate(struct job *job);

static void
on_create(struct job_rpc *rpc, const struct grpc_status *st,
	  ProtobufCMessage *m)
{
	struct job *job = rpc->job;

	job->create_in_flight = 0;
	if (st->code == GRPC_RESOURCE_EXHAUSTED && job->env.gate != NULL &&
	    !job->cancelled &&
	    util_now() - job->create_first_try < CREATE_THROTTLE_MAX) {
		/* Refused, so nothing was created: try again, slower. */
		create_gate_throttled(job->env.gate);
		create_enter_gate(job);
		return;
	}
	if (st->code == GRPC_OK && job->env.gate != NULL)
		create_gate_success(job->env.gate);
	if (st->code == GRPC_ALREADY_EXISTS) {
		attach_by_name(job);
		return;
	}
	if (st->code != GRPC_OK) {
		if (job->cancelled) { /* nothing was started: done */
			job_set_state(job, JOB_FAILED);
			return;
		}
		job_fail(job, job_exit_for_status(st->code),
			 "SandboxCreate failed: %s: %s%s",
			 grpc_code_name(st->code), st->message,
			 st->code == GRPC_INVALID_ARGUMENT && job->spec.has_gpu
				 ? " (check the GPU type and count)"
				 : "");
		return;
	}
	job->sandbox_id =
		strdup(((Modal__Client__SandboxCreateResponse *)m)->sandbox_id);
	log_info(job->prefix, "sandbox %s created (name %s)", job->sandbox_id,
		 job->sandbox_name);
	if (job->cancelled) {
		/* The signal came first: this sandbox must not keep running. */
		job_terminate_start(job);
		return;
	}
	job_set_state(job, JOB_RUNNING);
}

static void
add_tag(Modal__Client__SandboxTag *tags, Modal__Client__SandboxTag **ptrs,
	size_t *n, const char *name, char *value)
{
	if (value == NULL)
		return;
	modal__client__sandbox_tag__init(&tags[*n]);
	tags[*n].tag_name = (char *)name;
	tags[*n].tag_value = value;
	ptrs[*n] = &tags[*n];
	(*n)++;
}

static void
create_send(void *arg)
{
	struct job *job = arg;
	Modal__Client__SandboxCreateRequest req =
		MODAL__CLIENT__SANDBOX_CREATE_REQUEST__INIT;
	Modal__Client__Sandbox def = MODAL__CLIENT__SANDBOX__INIT;
	Modal__Client__Resources res = MODAL__CLIENT__RESOURCES__INIT;
	Modal__Client__GPUConfig gpu = MODAL__CLIENT__GPUCONFIG__INIT;
	Modal__Client__NetworkAccess net = MODAL__CLIENT__NETWORK_ACCESS__INIT;
	Modal__Client__PortSpecs ports = MODAL__CLIENT__PORT_SPECS__INIT;
	Modal__Client__SandboxTag tags[6], *tag_ptrs[6];
	char *argv[3] = {"bash", "-c", job->spec.command};
	char attempt[16];
	size_t ntags = 0;
	struct job_rpc *rpc;

	def.entrypoint_args = argv;
	def.n_entrypoint_args = 3;
	def.image_id = job->image_id;
	def.secret_ids = job->secret_ids;
	def.n_secret_ids = job->nsecret_ids;
	res.memory_mb = job->spec.memory_mb;
	res.milli_cpu = (uint32_t)(job->spec.cpu * 1000.0 + 0.5);
	/* No GPU is sent as an empty but present GPUConfig, as Modal's
	 * clients do. */
	if (job->spec.has_gpu) {
		gpu.gpu_type = job->spec.gpu.type;
		gpu.count = job->spec.gpu.count;
	}
	res.gpu_config = &gpu;
	def.resources = &res;
	def.timeout_secs = job->spec.timeout;
	if (job->spec.workdir != NULL)
		def.workdir = job->spec.workdir;
	def.name = job->sandbox_name;
	net.network_access_type =
		MODAL__CLIENT__NETWORK_ACCESS__NETWORK_ACCESS_TYPE__OPEN;
	def.network_access = &net;
	def.open_ports_oneof_case = MODAL__CLIENT__SANDBOX__OPEN_PORTS_ONEOF_OPEN_PORTS;
	def.open_ports = &ports;

	req.app_id = job->app_id;
	req.definition = &def;
	snprintf(attempt, sizeof(attempt), "%u", job->spec.task.attempt);
	add_tag(tags, tag_ptrs, &ntags, "metaflow.flow", job->spec.task.flow);
	add_tag(tags, tag_ptrs, &ntags, "metaflow.run", job->spec.task.run);
	add_tag(tags, tag_ptrs, &ntags, "metaflow.step", job->spec.task.step);
	add_tag(tags, tag_ptrs, &ntags, "metaflow.task", job->spec.task.task);
	if (job->spec.task.flow != NULL)
		add_tag(tags, tag_ptrs, &ntags, "metaflow.attempt", attempt);
	add_tag(tags, tag_ptrs, &ntags, "mfmodal.job", job->spec.id);
	req.tags = tag_ptrs;
	req.n_tags = ntags;

	job->create_ticket = NULL;
	rpc = job_rpc_unary(job, "SandboxCreate", &req.base,
			    &modal__client__sandbox_create_response__descriptor,
			    CREATE_TIMEOUT, on_create, 0);
	if (rpc == NULL) {
		job_fail(job, JOB_EXIT_FAILURE, "out of memory");
		return;
	}
	rpc->keep_on_cancel = 1;
	job->create_in_flight = 1;
}

static void
create_enter_gate(struct job *job)
{
	if (job->env.gate == NULL) {
		create_send(job);
		return;
	}
	job->create_ticket = create_gate_enter(job->env.gate, create_send, job);
	if (job->create_ticket == NULL)
		job_fail(job, JOB_EXIT_FAILURE, "out of memory");
}

void
job_create_start(struct job *job)
{
	job->create_first_try = util_now();
	create_enter_gate(job);
}

/* RUNNING: the wait loop. */

static void
take_result(struct job *job, const Modal__Client__GenericResult *r)
{
	job->have_result = 1;
	job->result_status = r->status;
	job->result_exitcode = r->exitcode;
	free(job->result_exception);
	job->result_exception =
		r->exception != NULL && *r->exception ? strdup(r->exception) : NULL;
}

static void
on_wait(struct job_rpc *rpc, const struct grpc_status *st,
	ProtobufCMessage *m)
{
	struct job *job = rpc->job;
	Modal__Client__SandboxWaitResponse *resp =
		(Modal__Client__SandboxWaitResponse *)m;
	double limit = job->spec.timeout + RUNNING_MARGIN;

	if (st->code != GRPC_OK) {
		if (grpc_code_is_retryable(st->code) &&
		    util_now() - job->running_since < limit) {
			log_warn(job->prefix, "SandboxWait failed (%s: %s); waiting again",
				 grpc_code_name(st->code), st->message);
			wait_once(job);
			return;
		}
		job_fail(job, JOB_EXIT_FAILURE,
			 "waiting for sandbox %s failed: %s: %s",
			 job->sandbox_id, grpc_code_name(st->code), st->message);
		return;
	}
	job->waits++;
	if (resp->result != NULL && resp->result->status != 0) {
		take_result(job, resp->result);
		if (job->state == JOB_RUNNING)
			job_set_state(job, JOB_DRAINING);
		return;
	}
	if (util_now() - job->running_since >= limit) {
		job_fail(job, JOB_EXIT_FAILURE,
			 "sandbox %s gave no result %.0f s after its %u s timeout",
			 job->sandbox_id, RUNNING_MARGIN, job->spec.timeout);
		return;
	}
	wait_once(job);
}

static void
wait_once(struct job *job)
{
	Modal__Client__SandboxWaitRequest req =
		MODAL__CLIENT__SANDBOX_WAIT_REQUEST__INIT;

	req.sandbox_id = job->sandbox_id;
	req.timeout = WAIT_POLL;
	if (job_rpc_unary(job, "SandboxWait", &req.base,
			  &modal__client__sandbox_wait_response__descriptor,
			  WAIT_TIMEOUT, on_wait, 0) == NULL)
		job_fail(job, JOB_EXIT_FAILURE, "out of memory");
}

/* Log streams. */

/* Compare Redis-style entry ids "MS-SEQ"; other forms compare as equal only
 * when identical.  Returns <0, 0 or >0. */
static int
entry_id_cmp(const char *a, const char *b)
{
	unsigned long long ams, aseq, bms, bseq;
	char tail;

	if (sscanf(a, "%llu-%llu%c", &ams, &aseq, &tail) == 2 &&
	    sscanf(b, "%llu-%llu%c", &bms, &bseq, &tail) == 2) {
		if (ams != bms)
			return ams < bms ? -1 : 1;
		if (aseq != bseq)
			return aseq < bseq ? -1 : 1;
		return 0;
	}
	return strcmp(a, b) == 0 ? 0 : 1;
}

static void
logs_message(void *arg, ProtobufCMessage *m)
{
	struct job_logstream *ls = arg;
	struct job *job = ls->job;
	Modal__Client__TaskLogsBatch *batch = (Modal__Client__TaskLogsBatch *)m;
	const char *id = batch->entry_id != NULL ? batch->entry_id : "";

	ls->errors = 0;
	/* A batch at or before the cursor was delivered already (a server may
	 * replay after a reconnect); skip it so no line is stored twice. */
	if (*id != '\0' && ls->cursor[0] != '\0' &&
	    entry_id_cmp(id, ls->cursor) <= 0 && batch->n_items > 0) {
		log_debug(job->prefix, "fd %d: skipping replayed batch %s", ls->fd, id);
	} else {
		for (size_t i = 0; i < batch->n_items; i++) {
			const char *data = batch->items[i]->data;
			size_t len = data != NULL ? strlen(data) : 0;

			/* empty items are sent while a sandbox boots */
			if (len > 0)
				logsink_write(job->sink, ls->fd, data, len,
					      batch->items[i]->timestamp);
		}
	}
	if (*id != '\0')
		snprintf(ls->cursor, sizeof(ls->cursor), "%s", id);
	if (batch->eof) {
		ls->eof = 1;
		logsink_finish(job->sink, ls->fd);
	}
}

static void
logs_reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
	logs_open(arg);
}

static void
logs_done(void *arg, const struct grpc_status *st)
{
	struct job_logstream *ls = arg;
	struct job *job = ls->job;
	double delay = 0.0;

	ls->call = NULL;
	if (ls->eof) {
		log_debug(job->prefix, "fd %d: end of log stream", ls->fd);
		if (job->state == JOB_DRAINING && job->logs[1].eof &&
		    job->logs[2].eof)
			job_set_state(job, JOB_SYNC);
		return;
	}
	if (st->code != GRPC_OK) {
		ls->errors++;
		if (!grpc_code_is_retryable(st->code) ||
		    ls->errors > LOGS_MAX_ERRORS) {
			/* The result still comes from SandboxWait. */
			log_error(job->prefix,
				  "%s of sandbox %s stopped: %s: %s",
				  ls->fd == 1 ? "stdout" : "stderr",
				  job->sandbox_id, grpc_code_name(st->code),
				  st->message);
			ls->eof = 1;
			logsink_finish(job->sink, ls->fd);
			if (job->state == JOB_DRAINING && job->logs[1].eof &&
			    job->logs[2].eof)
				job_set_state(job, JOB_SYNC);
			return;
		}
		delay = ls->errors < 4 ? 0.1 * (1 << ls->errors) : 1.0;
		log_info(job->prefix, "%s stream failed (%s: %s); resuming after "
			 "%s in %.1f s",
			 ls->fd == 1 ? "stdout" : "stderr",
			 grpc_code_name(st->code), st->message,
			 ls->cursor[0] ? ls->cursor : "the start", delay);
	}
	/* An OK end without eof is the server's poll timeout: go on from the
	 * cursor. */
	ls->reconnects++;
	if (ls->reconnect_timer == NULL)
		ls->reconnect_timer = evtimer_new(job->env.base, logs_reconnect_cb, ls);
	struct timeval tv = {(time_t)delay, (suseconds_t)((delay - (double)(time_t)delay) * 1e6)};
	event_add(ls->reconnect_timer, &tv);
}

static void
logs_open(struct job_logstream *ls)
{
	struct job *job = ls->job;
	Modal__Client__SandboxGetLogsRequest req =
		MODAL__CLIENT__SANDBOX_GET_LOGS_REQUEST__INIT;
	struct grpc_call_options opts = {
		.timeout = job->env.log_poll * 1.2 + 2.0,
		.log_prefix = job->prefix,
	};

	if (ls->eof || ls->call != NULL)
		return;
	req.sandbox_id = job->sandbox_id;
	req.file_descriptor = ls->fd;
	req.timeout = (float)job->env.log_poll;
	req.last_entry_id = ls->cursor;
	ls->call = grpc_call_server_stream(job->env.client, "SandboxGetLogs",
					   &req.base,
					   &modal__client__task_logs_batch__descriptor,
					   &opts, logs_message, logs_done, ls);
	if (ls->call == NULL)
		log_error(job->prefix, "out of memory opening a log stream");
}

void
job_logs_stop(struct job *job)
{
	for (int fd = 1; fd <= 2; fd++) {
		struct job_logstream *ls = &job->logs[fd];

		if (ls->call != NULL) {
			grpc_call_cancel(ls->call);
			ls->call = NULL;
		}
		if (ls->reconnect_timer != NULL)
			event_del(ls->reconnect_timer);
	}
}

void
job_running_start(struct job *job)
{
	job->running_since = util_now();
	job_logs_upload_start(job);
	logs_open(&job->logs[1]);
	logs_open(&job->logs[2]);
	wait_once(job);
}

/* DRAINING */

void
job_draining_start(struct job *job)
{
	if (job->logs[1].eof && job->logs[2].eof) {
		job_set_state(job, JOB_SYNC);
		return;
	}
	/* Logs may lag behind the result; reopen a stream that gave up. */
	logs_open(&job->logs[1]);
	logs_open(&job->logs[2]);
	job_arm_state_timer(job, job->env.drain_grace);
}

/* CANCELLING */

static void
terminate_send(struct job *job);

static void
terminate_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	terminate_send(arg);
}

static void
terminate_finished(struct job *job)
{
	job->terminated = 1;
	if (job->state != JOB_CANCELLING)
		return;
	if (job->skip_flush) {
		job_set_state(job, JOB_FAILED);
		return;
	}
	/* Terminate closes both log streams; collect what they still hold. */
	job_set_state(job, JOB_DRAINING);
}

static void
on_terminate(struct job_rpc *rpc, const struct grpc_status *st,
	     ProtobufCMessage *m)
{
	struct job *job = rpc->job;
	Modal__Client__SandboxTerminateResponse *resp =
		(Modal__Client__SandboxTerminateResponse *)m;

	if (st->code == GRPC_OK || st->code == GRPC_NOT_FOUND) {
		log_info(job->prefix, "sandbox %s terminated", job->sandbox_id);
		if (resp != NULL && resp->existing_result != NULL &&
		    resp->existing_result->status != 0 && !job->have_result)
			take_result(job, resp->existing_result);
		terminate_finished(job);
		return;
	}
	if (util_now() - job->terminate_started < job->env.terminate_bound) {
		struct timeval tv = {0, 200000};

		if (job->terminate_timer == NULL)
			job->terminate_timer =
				evtimer_new(job->env.base, terminate_retry_cb, job);
		event_add(job->terminate_timer, &tv);
		return;
	}
	log_error(job->prefix,
		  "could not terminate sandbox %s within %.0f s (%s: %s); stop "
		  "it with 'modal sandbox terminate %s' or in Modal's dashboard",
		  job->sandbox_id, job->env.terminate_bound,
		  grpc_code_name(st->code), st->message, job->sandbox_id);
	terminate_finished(job);
}

static void
terminate_send(struct job *job)
{
	Modal__Client__SandboxTerminateRequest req =
		MODAL__CLIENT__SANDBOX_TERMINATE_REQUEST__INIT;

	req.sandbox_id = job->sandbox_id;
	job->terminate_attempts++;
	if (job_rpc_unary(job, "SandboxTerminate", &req.base,
			  &modal__client__sandbox_terminate_response__descriptor,
			  job->env.terminate_bound, on_terminate, 0) == NULL)
		log_error(job->prefix, "out of memory terminating %s",
			  job->sandbox_id);
}

void
job_terminate_start(struct job *job)
{
	if (job->state != JOB_CANCELLING) {
		job_set_state(job, JOB_CANCELLING);
		return;
	}
	if (job->sandbox_id == NULL)
		return; /* the create reply decides (on_create) */
	if (job->terminate_sent)
		return;
	job->terminate_sent = 1;
	job->terminate_started = util_now();
	log_info(job->prefix, "terminating sandbox %s", job->sandbox_id);
	terminate_send(job);
}
