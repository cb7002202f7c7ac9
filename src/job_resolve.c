/* RESOLVE: the app, environment, secret and image ids a sandbox needs. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job_internal.h"
#include "log.h"

/* Seconds each resolve call may take per attempt, and the long-poll of
 * ImageJoinStreaming that Modal's clients use (55 s) plus a margin. */
#define RESOLVE_CALL_TIMEOUT 30.0
#define IMAGE_JOIN_POLL 55.0
#define IMAGE_JOIN_TIMEOUT 65.0
/* Reconnects of ImageJoinStreaming without a result before giving up: about
 * 2 hours of building at 55 s a call. */
#define IMAGE_JOIN_MAX_ATTEMPTS 130

static void resolve_dependents(struct job *job);
static void image_join(struct job *job);

static const char *
environment_name(const struct job *job)
{
	if (job->spec.environment != NULL)
		return job->spec.environment;
	return job->env.environment != NULL ? job->env.environment : "";
}

/* One resolve call finished; the next step starts when none is pending. */
static void
resolve_step_done(struct job *job)
{
	if (job->pending > 0)
		job->pending--;
	if (job->pending > 0 || job->failed || job->state != JOB_RESOLVE)
		return;
	if (job->image_id == NULL || job->builder_version == NULL) {
		resolve_dependents(job);
		return;
	}
	job_set_state(job, JOB_CREATE);
}

static int
resolve_failed(struct job *job, const char *what,
	       const struct grpc_status *st, const char *hint)
{
	if (st->code == GRPC_OK)
		return 0;
	job_fail(job, job_exit_for_status(st->code), "%s failed: %s: %s%s%s", what,
		 grpc_code_name(st->code), st->message, hint != NULL ? "; " : "",
		 hint != NULL ? hint : "");
	return 1;
}

static const char *
status_hint(const struct grpc_status *st)
{
	if (st->code == GRPC_UNAUTHENTICATED)
		return "check MODAL_TOKEN_ID and MODAL_TOKEN_SECRET, or run "
		       "'modal token new'";
	if (st->code == GRPC_FAILED_PRECONDITION)
		return "the server may reject this client version; update "
		       "mfmodal";
	return NULL;
}

static void
on_app(struct job_rpc *rpc, const struct grpc_status *st, ProtobufCMessage *m)
{
	struct job *job = rpc->job;
	char what[160];

	snprintf(what, sizeof(what), "AppGetOrCreate for app '%s'", job->spec.app);
	if (resolve_failed(job, what, st, status_hint(st)))
		return;
	job->app_id = strdup(((Modal__Client__AppGetOrCreateResponse *)m)->app_id);
	log_debug(job->prefix, "app %s is %s", job->spec.app, job->app_id);
	resolve_step_done(job);
}

static void
on_environment(struct job_rpc *rpc, const struct grpc_status *st,
	       ProtobufCMessage *m)
{
	struct job *job = rpc->job;
	Modal__Client__EnvironmentGetOrCreateResponse *resp =
		(Modal__Client__EnvironmentGetOrCreateResponse *)m;
	const char *version = NULL;

	if (resolve_failed(job, "EnvironmentGetOrCreate", st, status_hint(st)))
		return;
	if (resp->metadata != NULL && resp->metadata->settings != NULL)
		version = resp->metadata->settings->image_builder_version;
	if (getenv("MODAL_IMAGE_BUILDER_VERSION") != NULL)
		version = getenv("MODAL_IMAGE_BUILDER_VERSION");
	job->builder_version = strdup(version != NULL && *version ? version : "2025.06");
	resolve_step_done(job);
}

static void
on_secret(struct job_rpc *rpc, const struct grpc_status *st,
	  ProtobufCMessage *m)
{
	struct job *job = rpc->job;
	int named = rpc->index < job->spec.nsecrets;
	char what[300], hint[300];

	if (named) {
		const char *name = job->spec.secrets[rpc->index];

		snprintf(what, sizeof(what), "loading Modal secret '%s'", name);
		snprintf(hint, sizeof(hint),
			 "create it with 'modal secret create %s KEY=VALUE' or "
			 "remove it from the step's secrets",
			 name);
	} else {
		snprintf(what, sizeof(what), "creating the secret for the job's env");
		hint[0] = '\0';
	}
	if (resolve_failed(job, what, st,
			   st->code == GRPC_NOT_FOUND && named ? hint
							      : status_hint(st)))
		return;
	job->secret_ids[rpc->index] =
		strdup(((Modal__Client__SecretGetOrCreateResponse *)m)->secret_id);
	resolve_step_done(job);
}

static const char *
image_description(const struct job *job, char *buf, size_t len)
{
	switch (job->spec.image.kind) {
	case JOB_IMAGE_REGISTRY:
		snprintf(buf, len, "registry image %s", job->spec.image.value);
		break;
	case JOB_IMAGE_DEBIAN_SLIM:
		snprintf(buf, len, "debian_slim image with Python %s",
			 job->spec.image.value);
		break;
	case JOB_IMAGE_DOCKERFILE:
		snprintf(buf, len, "image from %s", job->spec.image.commands[0]);
		break;
	}
	return buf;
}

/* Handle a finished build result; returns 1 when the job may go on. */
static int
image_result(struct job *job, const Modal__Client__GenericResult *result)
{
	char desc[300];

	if (result->status == MODAL__CLIENT__GENERIC_RESULT__GENERIC_STATUS__GENERIC_STATUS_SUCCESS)
		return 1;
	job_fail(job, JOB_EXIT_NO_RETRY, "image build for %s (%s) failed: %s",
		 image_description(job, desc, sizeof(desc)),
		 job->image_id != NULL ? job->image_id : "no id",
		 result->exception != NULL && *result->exception
			 ? result->exception
			 : "the server gave no reason");
	return 0;
}

static void
relay_build_logs(struct job *job, Modal__Client__TaskLogs **items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const char *data = items[i]->data;
		size_t len = data != NULL ? strlen(data) : 0;

		while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
			len--;
		if (len > 0)
			log_info(job->prefix, "image build: %.*s", (int)len, data);
	}
}

static void
on_image_join_message(struct job_rpc *rpc, ProtobufCMessage *m)
{
	struct job *job = rpc->job;
	Modal__Client__ImageJoinStreamingResponse *resp =
		(Modal__Client__ImageJoinStreamingResponse *)m;

	if (resp->entry_id != NULL && *resp->entry_id != '\0')
		snprintf(job->image_cursor, sizeof(job->image_cursor), "%s",
			 resp->entry_id);
	relay_build_logs(job, resp->task_logs, resp->n_task_logs);
	/* Remember the first final result; logs may still follow it. */
	if (resp->result != NULL && resp->result->status != 0 &&
	    rpc->index == 0) {
		rpc->index = 1;
		if (!image_result(job, resp->result))
			return;
	}
}

static void
on_image_join_done(struct job_rpc *rpc, const struct grpc_status *st,
		   ProtobufCMessage *m)
{
	struct job *job = rpc->job;

	if (job->failed)
		return;
	if (rpc->index == 1) { /* a successful result arrived */
		resolve_step_done(job);
		return;
	}
	if (st->code != GRPC_OK && !grpc_code_is_retryable(st->code)) {
		resolve_failed(job, "ImageJoinStreaming", st, status_hint(st));
		return;
	}
	if (++job->image_join_attempts >= IMAGE_JOIN_MAX_ATTEMPTS) {
		job_fail(job, JOB_EXIT_FAILURE,
			 "image %s was still building after %u waits; giving up",
			 job->image_id, job->image_join_attempts);
		return;
	}
	image_join(job); /* the stream ended without a result: wait again */
}

static void
image_join(struct job *job)
{
	Modal__Client__ImageJoinStreamingRequest req =
		MODAL__CLIENT__IMAGE_JOIN_STREAMING_REQUEST__INIT;

	req.image_id = job->image_id;
	req.timeout = IMAGE_JOIN_POLL;
	req.last_entry_id = job->image_cursor;
	if (job_rpc_stream(job, "ImageJoinStreaming", &req.base,
			   &modal__client__image_join_streaming_response__descriptor,
			   IMAGE_JOIN_TIMEOUT, on_image_join_message,
			   on_image_join_done, 0) == NULL)
		job_fail(job, JOB_EXIT_FAILURE, "out of memory");
}

static void
on_image(struct job_rpc *rpc, const struct grpc_status *st, ProtobufCMessage *m)
{
	struct job *job = rpc->job;
	Modal__Client__ImageGetOrCreateResponse *resp =
		(Modal__Client__ImageGetOrCreateResponse *)m;
	char what[360], desc[300];

	snprintf(what, sizeof(what), "ImageGetOrCreate for %s",
		 image_description(job, desc, sizeof(desc)));
	if (resolve_failed(job, what, st, status_hint(st)))
		return;
	job->image_id = strdup(resp->image_id);
	if (resp->result != NULL && resp->result->status != 0) {
		if (image_result(job, resp->result))
			resolve_step_done(job);
		return;
	}
	log_info(job->prefix, "image %s is building; waiting for it",
		 job->image_id);
	image_join(job);
}

/* Write the Dockerfile commands of Modal's debian_slim image for builder
 * versions after 2024.10, as Modal's Python SDK (1.6.4) writes them, because
 * the server reuses a built image only for the same text.  Returns the
 * count. */
static size_t
debian_slim_commands(const struct job *job, char cmds[][96], char *err,
		     size_t errlen)
{
	/* 2025.06 pins one micro version per series (the SDK's
	 * builder/base-images.json); later builders take the version as is. */
	static const char *const pinned_2025_06[] = {
		"3.9.22", "3.10.17", "3.11.12", "3.12.10",
		"3.13.3", "3.14.2",  "3.15.0",
	};
	const char *builder = job->builder_version;
	const char *py = job->spec.image.value;
	const char *full = py;
	const char *codename = "trixie";

	if (strcmp(builder, "PREVIEW") != 0 && strcmp(builder, "2025.06") < 0) {
		snprintf(err, errlen,
			 "the Modal environment uses image builder %s; debian_slim "
			 "images need 2025.06 or later (set "
			 "MODAL_IMAGE_BUILDER_VERSION, or use a registry image)",
			 builder);
		return 0;
	}
	if (strcmp(builder, "2025.06") == 0) {
		size_t n = strlen(py);

		codename = "bookworm";
		full = NULL;
		for (size_t i = 0; i < sizeof(pinned_2025_06) / sizeof(pinned_2025_06[0]); i++) {
			const char *v = pinned_2025_06[i];

			if (strcmp(v, py) == 0 ||
			    (strncmp(v, py, n) == 0 && v[n] == '.' &&
			     strchr(v + n + 1, '.') == NULL))
				full = v;
		}
		if (full == NULL) {
			snprintf(err, errlen,
				 "Python %s is not available for debian_slim on "
				 "image builder 2025.06: use 3.9 to 3.15",
				 py);
			return 0;
		}
	}
	snprintf(cmds[0], 96, "FROM python:%s-slim-%s", full, codename);
	snprintf(cmds[1], 96, "RUN apt-get update");
	snprintf(cmds[2], 96, "RUN apt-get install -y gcc gfortran build-essential");
	snprintf(cmds[3], 96, "RUN pip install --upgrade pip wheel uv");
	snprintf(cmds[4], 96, "RUN echo 'debconf debconf/frontend select "
			      "Noninteractive' | debconf-set-selections");
	snprintf(cmds[5], 96, "CMD [\"sleep\", \"172800\"]");
	return 6;
}

static void
resolve_image(struct job *job)
{
	Modal__Client__ImageGetOrCreateRequest req =
		MODAL__CLIENT__IMAGE_GET_OR_CREATE_REQUEST__INIT;
	Modal__Client__Image image = MODAL__CLIENT__IMAGE__INIT;
	Modal__Client__ImageRegistryConfig registry =
		MODAL__CLIENT__IMAGE_REGISTRY_CONFIG__INIT;
	char slim[6][96], from[600], err[300];
	char *cmds[6];
	size_t n = 0;

	req.app_id = job->app_id;
	req.builder_version = job->builder_version;
	req.image = &image;
	switch (job->spec.image.kind) {
	case JOB_IMAGE_DEBIAN_SLIM:
		n = debian_slim_commands(job, slim, err, sizeof(err));
		if (n == 0) {
			job_fail(job, JOB_EXIT_FAILURE, "%s", err);
			return;
		}
		for (size_t i = 0; i < n; i++)
			cmds[i] = slim[i];
		image.dockerfile_commands = cmds;
		image.n_dockerfile_commands = n;
		req.namespace_ =
			MODAL__CLIENT__DEPLOYMENT_NAMESPACE__DEPLOYMENT_NAMESPACE_GLOBAL;
		break;
	case JOB_IMAGE_REGISTRY:
		snprintf(from, sizeof(from), "FROM %s", job->spec.image.value);
		cmds[0] = from;
		image.dockerfile_commands = cmds;
		image.n_dockerfile_commands = 1;
		image.image_registry_config = &registry;
		req.namespace_ =
			MODAL__CLIENT__DEPLOYMENT_NAMESPACE__DEPLOYMENT_NAMESPACE_WORKSPACE;
		break;
	case JOB_IMAGE_DOCKERFILE:
		image.dockerfile_commands = job->spec.image.commands;
		image.n_dockerfile_commands = job->spec.image.ncommands;
		req.namespace_ =
			MODAL__CLIENT__DEPLOYMENT_NAMESPACE__DEPLOYMENT_NAMESPACE_WORKSPACE;
		break;
	}
	job->pending++;
	if (job_rpc_unary(job, "ImageGetOrCreate", &req.base,
			  &modal__client__image_get_or_create_response__descriptor,
			  RESOLVE_CALL_TIMEOUT, on_image, 0) == NULL)
		job_fail(job, JOB_EXIT_FAILURE, "out of memory");
}

static void
resolve_secret(struct job *job, size_t index)
{
	Modal__Client__SecretGetOrCreateRequest req =
		MODAL__CLIENT__SECRET_GET_OR_CREATE_REQUEST__INIT;
	Modal__Client__SecretGetOrCreateRequest__EnvDictEntry *entries = NULL;
	Modal__Client__SecretGetOrCreateRequest__EnvDictEntry **ptrs = NULL;

	req.environment_name = (char *)environment_name(job);
	if (index < job->spec.nsecrets) {
		req.deployment_name = job->spec.secrets[index];
	} else {
		/* The job's env goes into an ephemeral secret, as Modal's Go
		 * client does for Sandbox env, so no value is ever put on a
		 * command line. */
		entries = calloc(job->spec.nenv, sizeof(*entries));
		ptrs = calloc(job->spec.nenv, sizeof(*ptrs));
		if (entries == NULL || ptrs == NULL) {
			free(entries);
			free(ptrs);
			job_fail(job, JOB_EXIT_FAILURE, "out of memory");
			return;
		}
		for (size_t i = 0; i < job->spec.nenv; i++) {
			modal__client__secret_get_or_create_request__env_dict_entry__init(&entries[i]);
			entries[i].key = job->spec.env_keys[i];
			entries[i].value = job->spec.env_values[i];
			ptrs[i] = &entries[i];
		}
		req.env_dict = ptrs;
		req.n_env_dict = job->spec.nenv;
		req.object_creation_type =
			MODAL__CLIENT__OBJECT_CREATION_TYPE__OBJECT_CREATION_TYPE_EPHEMERAL;
	}
	job->pending++;
	if (job_rpc_unary(job, "SecretGetOrCreate", &req.base,
			  &modal__client__secret_get_or_create_response__descriptor,
			  RESOLVE_CALL_TIMEOUT, on_secret, index) == NULL)
		job_fail(job, JOB_EXIT_FAILURE, "out of memory");
	free(entries);
	free(ptrs);
}

/* Secrets and the image need the app id and builder version. */
static void
resolve_dependents(struct job *job)
{
	size_t nsecrets = job->spec.nsecrets + (job->spec.nenv > 0 ? 1 : 0);

	job->secret_ids = calloc(nsecrets + 1, sizeof(char *));
	if (job->secret_ids == NULL) {
		job_fail(job, JOB_EXIT_FAILURE, "out of memory");
		return;
	}
	job->nsecret_ids = nsecrets;
	/* Counted up front so an early reply cannot end the step. */
	job->pending++;
	for (size_t i = 0; i < nsecrets && !job->failed; i++)
		resolve_secret(job, i);
	if (!job->failed)
		resolve_image(job);
	if (!job->failed)
		resolve_step_done(job);
}

void
job_resolve_start(struct job *job)
{
	Modal__Client__AppGetOrCreateRequest app =
		MODAL__CLIENT__APP_GET_OR_CREATE_REQUEST__INIT;
	Modal__Client__EnvironmentGetOrCreateRequest env =
		MODAL__CLIENT__ENVIRONMENT_GET_OR_CREATE_REQUEST__INIT;

	app.app_name = job->spec.app;
	app.environment_name = (char *)environment_name(job);
	app.object_creation_type =
		MODAL__CLIENT__OBJECT_CREATION_TYPE__OBJECT_CREATION_TYPE_CREATE_IF_MISSING;
	env.deployment_name = (char *)environment_name(job);
	job->pending = 2;
	if (job_rpc_unary(job, "AppGetOrCreate", &app.base,
			  &modal__client__app_get_or_create_response__descriptor,
			  RESOLVE_CALL_TIMEOUT, on_app, 0) == NULL ||
	    job_rpc_unary(job, "EnvironmentGetOrCreate", &env.base,
			  &modal__client__environment_get_or_create_response__descriptor,
			  RESOLVE_CALL_TIMEOUT, on_environment, 0) == NULL)
		job_fail(job, JOB_EXIT_FAILURE, "out of memory");
}
