/* Uploading a file: one PutObject, or a multipart upload with several parts
 * in flight, then a HeadObject to check the stored size.  Every failure
 * after CreateMultipartUpload ends in AbortMultipartUpload, confirmed with
 * ListParts, so no incomplete upload is left to be billed. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "s3_internal.h"
#include "s3_xml.h"

/* AbortMultipartUpload rounds: a part still being stored when the abort
 * arrives can survive it, so S3 recommends aborting again until ListParts
 * reports NoSuchUpload. */
#define MAX_ABORT_ROUNDS 3

enum upload_state {
	UPLOAD_PUTTING,        /* one PutObject, for a file below the part size */
	UPLOAD_CREATING,       /* CreateMultipartUpload sent; waits for the upload ID */
	UPLOAD_SENDING_PARTS,  /* UploadPart requests, up to the parallelism in flight */
	UPLOAD_COMPLETING,     /* CompleteMultipartUpload with every part's ETag */
	UPLOAD_VERIFYING,      /* HeadObject: the stored size must be the file's */
	UPLOAD_ABORTING,       /* AbortMultipartUpload after a failure, retried */
	UPLOAD_CHECKING_ABORT, /* ListParts: waits for NoSuchUpload */
	UPLOAD_FINISHED,       /* the callback runs on the next loop turn */
};

static const char *const upload_state_names[] = {
	[UPLOAD_PUTTING] = "PUTTING",
	[UPLOAD_CREATING] = "CREATING",
	[UPLOAD_SENDING_PARTS] = "SENDING_PARTS",
	[UPLOAD_COMPLETING] = "COMPLETING",
	[UPLOAD_VERIFYING] = "VERIFYING",
	[UPLOAD_ABORTING] = "ABORTING",
	[UPLOAD_CHECKING_ABORT] = "CHECKING_ABORT",
	[UPLOAD_FINISHED] = "FINISHED",
};
_Static_assert(sizeof(upload_state_names) / sizeof(upload_state_names[0]) ==
		       UPLOAD_FINISHED + 1,
	       "upload_state_names covers every upload state");

struct upload_part {
	struct s3_upload *up;
	unsigned number;
	uint64_t offset;
	uint64_t length;
	uint64_t sent;       /* body bytes of the attempt in flight */
	struct s3_req *req;  /* while in flight */
	char *etag;          /* exactly as the last successful attempt returned it */
	char checksum[48];   /* the checksum header value sent */
	char detail[48];     /* "part 3 of 12" */
	int done;
};

struct s3_upload {
	struct s3_client *client;
	unsigned id;
	char prefix[40];
	enum upload_state state;
	double started;
	double state_since;
	char *path;
	char *bucket;
	char *key;
	int fd;
	struct stat st;
	uint64_t size;
	uint64_t part_size;
	unsigned nparts;
	unsigned next_part;  /* index of the next part to start */
	unsigned inflight;
	unsigned parts_done;
	uint64_t bytes_done; /* bytes of finished parts */
	struct upload_part *parts;
	struct s3_upload_options opts;
	char *upload_id;
	struct s3_req *req;  /* the request of the current non-part step */
	struct s3_error failure; /* the first failure; code 0 while none */
	int cancel_requested;
	int detached; /* no callback: the caller gave the upload up */
	unsigned abort_rounds;
	struct s3_object_info result;
	struct event *finish_ev;
	s3_object_cb cb;
	void *arg;
	TAILQ_ENTRY(s3_upload) link; /* in the client's list */
};

static void upload_start_abort(struct s3_upload *up);
static void upload_pump(struct s3_upload *up);

static void
upload_set_state(struct s3_upload *up, enum upload_state state)
{
	double now = util_now();

	if (up->state == state)
		return;
	log_debug(up->prefix, "%s -> %s (%.2f s)", upload_state_names[up->state],
		  upload_state_names[state], now - up->state_since);
	up->state = state;
	up->state_since = now;
}

static void
upload_free(struct s3_upload *up)
{
	TAILQ_REMOVE(&up->client->uploads, up, link);
	if (up->req != NULL)
		s3_req_cancel(up->req);
	for (unsigned i = 0; i < up->nparts; i++) {
		if (up->parts[i].req != NULL)
			s3_req_cancel(up->parts[i].req);
		free(up->parts[i].etag);
	}
	free(up->parts);
	if (up->finish_ev != NULL)
		event_free(up->finish_ev);
	if (up->fd >= 0)
		close(up->fd);
	free(up->path);
	free(up->bucket);
	free(up->key);
	free(up->upload_id);
	free(up);
}

static void
finish_cb(evutil_socket_t fd, short what, void *arg)
{
	struct s3_upload *up = arg;
	struct s3_error ok = {.code = ENGINE_OK};

	if (up->detached) {
		/* No caller waits for the outcome, but an upload ID left
		 * behind must still reach the log. */
		if (up->failure.code != ENGINE_OK &&
		    strstr(up->failure.message, "could not be aborted") != NULL)
			log_error(up->prefix, "%s", up->failure.message);
		else
			log_debug(up->prefix, "detached upload ended: %s",
				  up->failure.code != ENGINE_OK ? up->failure.message
								: "uploaded");
		upload_free(up);
		return;
	}
	if (up->failure.code != ENGINE_OK) {
		log_debug(up->prefix, "failed after %.2f s: %s",
			  util_now() - up->started, up->failure.message);
		up->cb(up->arg, &up->failure, NULL);
	} else {
		log_debug(up->prefix, "uploaded %llu bytes in %u parts in %.2f s",
			  (unsigned long long)up->size, up->nparts,
			  util_now() - up->started);
		up->cb(up->arg, &ok, &up->result);
	}
	upload_free(up);
}

static void
upload_finish(struct s3_upload *up)
{
	upload_set_state(up, UPLOAD_FINISHED);
	event_active(up->finish_ev, EV_TIMEOUT, 0);
}

/* Record the first failure. */
static void
upload_record_failure(struct s3_upload *up, int code, const char *message)
{
	if (up->failure.code != ENGINE_OK)
		return;
	up->failure.code = code;
	snprintf(up->failure.message, sizeof(up->failure.message), "%s", message);
}

static void
upload_record_error(struct s3_upload *up, const struct s3_error *err)
{
	if (up->failure.code != ENGINE_OK)
		return;
	up->failure = *err;
}

/* Stop every part in flight and abort the multipart upload. */
static void
upload_fail(struct s3_upload *up)
{
	for (unsigned i = 0; i < up->nparts; i++) {
		if (up->parts[i].req != NULL) {
			s3_req_cancel(up->parts[i].req);
			up->parts[i].req = NULL;
		}
	}
	up->inflight = 0;
	if (up->upload_id != NULL)
		upload_start_abort(up);
	else
		upload_finish(up);
}

static void
report_progress(struct s3_upload *up)
{
	uint64_t done = up->bytes_done;

	if (up->opts.progress == NULL)
		return;
	for (unsigned i = 0; i < up->nparts; i++)
		if (up->parts[i].req != NULL)
			done += up->parts[i].sent;
	up->opts.progress(up->opts.progress_arg, done, up->size);
}

/* Whether the file still has the size and modification time it had when
 * the upload started. */
static int
file_unchanged(struct s3_upload *up)
{
	struct stat now;

	if (fstat(up->fd, &now) != 0)
		return 0;
	return now.st_size == up->st.st_size &&
	       now.st_mtim.tv_sec == up->st.st_mtim.tv_sec &&
	       now.st_mtim.tv_nsec == up->st.st_mtim.tv_nsec;
}

/* Verification: HeadObject after the object is stored. */

static void
verify_done(void *arg, const struct s3_error *err, const struct s3_resp *resp)
{
	struct s3_upload *up = arg;
	const char *length;
	char message[1024];
	uint64_t stored;

	up->req = NULL;
	if (err->code != ENGINE_OK) {
		upload_record_error(up, err);
		upload_finish(up);
		return;
	}
	length = s3_resp_header(resp, "Content-Length");
	stored = length != NULL ? strtoull(length, NULL, 10) : 0;
	if (length == NULL || stored != up->size) {
		snprintf(message, sizeof(message),
			 "upload of %s to s3://%s/%s: the stored object has %s%llu "
			 "bytes but the file has %llu; check that nothing else "
			 "writes this key, then upload again",
			 up->path, up->bucket, up->key,
			 length == NULL ? "no Content-Length, not " : "",
			 (unsigned long long)stored, (unsigned long long)up->size);
		upload_record_failure(up, ENGINE_ERR_PROTOCOL, message);
		upload_finish(up);
		return;
	}
	up->result.size = up->size;
	up->result.object_size = up->size;
	up->result.parts = up->nparts;
	if (up->result.etag[0] == '\0') {
		const char *etag = s3_resp_header(resp, "ETag");

		snprintf(up->result.etag, sizeof(up->result.etag), "%s",
			 etag != NULL ? etag : "");
	}
	upload_finish(up);
}

static void
upload_start_verify(struct s3_upload *up)
{
	struct s3_req_spec spec;

	upload_set_state(up, UPLOAD_VERIFYING);
	s3_req_spec_init(&spec, "HeadObject", "HEAD", up->bucket, up->key);
	spec.detail = "checking the uploaded size";
	up->req = s3_req_start(up->client, &spec, verify_done, up);
	if (up->req == NULL) {
		upload_record_failure(up, ENGINE_ERR_NOMEM, "out of memory");
		upload_finish(up);
	}
}

/* Single PutObject. */

/* S3 returns the CRC32 or SHA-256 it computed.  A different value means the
 * body was damaged on the way even though the server accepted it.  Returns 1
 * with the error in message when they differ; detail may be NULL. */
static int
checksum_echo_differs(const struct s3_upload *up, const struct s3_resp *resp,
		      const char *operation, const char *detail, char *message,
		      size_t len)
{
	const char *algorithm = s3_checksum_algorithm(up->opts.checksum);
	const char *sent = resp->checksum_value;
	const char *echo;

	if (algorithm == NULL || sent[0] == '\0')
		return 0;
	echo = s3_resp_header(resp, s3_checksum_header(up->opts.checksum));
	if (echo == NULL || strcmp(echo, sent) == 0)
		return 0;
	snprintf(message, len,
		 "%s s3://%s/%s%s%s%s: the server's %s %s differs from the file's %s",
		 operation, up->bucket, up->key, detail != NULL ? " (" : "",
		 detail != NULL ? detail : "", detail != NULL ? ")" : "",
		 algorithm, echo, sent);
	return 1;
}

static void
put_done(void *arg, const struct s3_error *err, const struct s3_resp *resp)
{
	struct s3_upload *up = arg;
	const char *etag;
	char message[1024];

	up->req = NULL;
	if (err->code != ENGINE_OK) {
		upload_record_error(up, err);
		upload_finish(up);
		return;
	}
	if (checksum_echo_differs(up, resp, "PutObject", NULL, message,
				  sizeof(message))) {
		upload_record_failure(up, ENGINE_ERR_PROTOCOL, message);
		upload_finish(up);
		return;
	}
	etag = s3_resp_header(resp, "ETag");
	snprintf(up->result.etag, sizeof(up->result.etag), "%s",
		 etag != NULL ? etag : "");
	upload_start_verify(up);
}

static void
put_progress(void *arg, uint64_t bytes, uint64_t total)
{
	struct s3_upload *up = arg;

	if (up->opts.progress != NULL)
		up->opts.progress(up->opts.progress_arg, bytes, up->size);
}

static void
upload_start_put(struct s3_upload *up)
{
	struct s3_req_spec spec;

	upload_set_state(up, UPLOAD_PUTTING);
	s3_req_spec_init(&spec, "PutObject", "PUT", up->bucket, up->key);
	spec.body_fd = up->fd;
	spec.body_offset = 0;
	spec.body_length = up->size;
	spec.checksum = up->opts.checksum;
	spec.progress = put_progress;
	up->req = s3_req_start(up->client, &spec, put_done, up);
	if (up->req == NULL) {
		upload_record_failure(up, ENGINE_ERR_NOMEM, "out of memory");
		upload_finish(up);
	}
}

/* Abort, and the ListParts check after it. */

static void
append_abort_failure(struct s3_upload *up, const char *why)
{
	size_t used = strlen(up->failure.message);

	snprintf(up->failure.message + used, sizeof(up->failure.message) - used,
		 "; the multipart upload could not be aborted (%s): remove it with "
		 "'aws s3api abort-multipart-upload --bucket %s --key %s "
		 "--upload-id %s', and consider an AbortIncompleteMultipartUpload "
		 "lifecycle rule on the bucket",
		 why, up->bucket, up->key, up->upload_id);
}

static void
append_aborted(struct s3_upload *up)
{
	size_t used = strlen(up->failure.message);

	snprintf(up->failure.message + used, sizeof(up->failure.message) - used,
		 " (multipart upload %s aborted)", up->upload_id);
}

static void
check_abort_done(void *arg, const struct s3_error *err, const struct s3_resp *resp)
{
	struct s3_upload *up = arg;

	up->req = NULL;
	if (err->code != ENGINE_OK && strcmp(err->s3_code, "NoSuchUpload") == 0) {
		append_aborted(up);
		upload_finish(up);
		return;
	}
	if (err->code != ENGINE_OK) {
		/* The abort itself succeeded; only the confirmation is
		 * missing. */
		log_warn(up->prefix, "cannot confirm the abort of multipart upload "
			 "%s: %s", up->upload_id, err->message);
		append_aborted(up);
		upload_finish(up);
		return;
	}
	if (++up->abort_rounds < MAX_ABORT_ROUNDS) {
		log_warn(up->prefix, "multipart upload %s still exists after "
			 "AbortMultipartUpload; aborting again", up->upload_id);
		upload_start_abort(up);
		return;
	}
	append_abort_failure(up, "it is still listed after repeated aborts");
	upload_finish(up);
}

static void
upload_start_check_abort(struct s3_upload *up)
{
	struct s3_req_spec spec;

	upload_set_state(up, UPLOAD_CHECKING_ABORT);
	s3_req_spec_init(&spec, "ListParts", "GET", up->bucket, up->key);
	spec.query[spec.nquery++] = (struct sigv4_param){"uploadId", up->upload_id};
	spec.detail = "checking the abort";
	up->req = s3_req_start(up->client, &spec, check_abort_done, up);
	if (up->req == NULL) {
		append_aborted(up);
		upload_finish(up);
	}
}

static void
abort_done(void *arg, const struct s3_error *err, const struct s3_resp *resp)
{
	struct s3_upload *up = arg;

	up->req = NULL;
	if (err->code != ENGINE_OK && strcmp(err->s3_code, "NoSuchUpload") != 0) {
		log_error(up->prefix, "%s", err->message);
		append_abort_failure(up, err->message);
		upload_finish(up);
		return;
	}
	upload_start_check_abort(up);
}

static void
upload_start_abort(struct s3_upload *up)
{
	struct s3_req_spec spec;

	upload_set_state(up, UPLOAD_ABORTING);
	log_debug(up->prefix, "aborting multipart upload %s", up->upload_id);
	s3_req_spec_init(&spec, "AbortMultipartUpload", "DELETE", up->bucket, up->key);
	spec.query[spec.nquery++] = (struct sigv4_param){"uploadId", up->upload_id};
	up->req = s3_req_start(up->client, &spec, abort_done, up);
	if (up->req == NULL) {
		append_abort_failure(up, "out of memory");
		upload_finish(up);
	}
}

/* Complete. */

static void
complete_done(void *arg, const struct s3_error *err, const struct s3_resp *resp)
{
	struct s3_upload *up = arg;
	char *etag;
	char message[1024];

	up->req = NULL;
	if (err->code != ENGINE_OK) {
		upload_record_error(up, err);
		upload_start_abort(up);
		return;
	}
	etag = s3_xml_text(resp->body, resp->body_len, "ETag");
	if (etag == NULL || *etag == '\0') {
		snprintf(message, sizeof(message),
			 "CompleteMultipartUpload s3://%s/%s failed: the response "
			 "has no ETag",
			 up->bucket, up->key);
		free(etag);
		upload_record_failure(up, ENGINE_ERR_PROTOCOL, message);
		upload_start_abort(up);
		return;
	}
	snprintf(up->result.etag, sizeof(up->result.etag), "%s", etag);
	free(etag);
	upload_start_verify(up);
}

/* The CompleteMultipartUpload body: every part once, in ascending order,
 * with its ETag exactly as UploadPart returned it. */
static struct evbuffer *
complete_body(struct s3_upload *up)
{
	const char *algorithm = s3_checksum_algorithm(up->opts.checksum);
	struct evbuffer *body = evbuffer_new();
	int rc = 0;

	if (body == NULL)
		return NULL;
	rc |= evbuffer_add_printf(body, "<CompleteMultipartUpload xmlns=\"http://"
					"s3.amazonaws.com/doc/2006-03-01/\">") < 0;
	for (unsigned i = 0; i < up->nparts && rc == 0; i++) {
		const struct upload_part *part = &up->parts[i];

		rc |= evbuffer_add_printf(body, "<Part><PartNumber>%u</PartNumber><ETag>",
					  part->number) < 0;
		rc |= s3_xml_append_escaped(body, part->etag);
		rc |= evbuffer_add_printf(body, "</ETag>") < 0;
		if (algorithm != NULL)
			rc |= evbuffer_add_printf(body, "<Checksum%s>%s</Checksum%s>",
						  algorithm, part->checksum,
						  algorithm) < 0;
		rc |= evbuffer_add_printf(body, "</Part>") < 0;
	}
	rc |= evbuffer_add_printf(body, "</CompleteMultipartUpload>") < 0;
	if (rc != 0) {
		evbuffer_free(body);
		return NULL;
	}
	return body;
}

static void
upload_start_complete(struct s3_upload *up)
{
	struct s3_req_spec spec;
	struct evbuffer *body;
	char message[1024];

	upload_set_state(up, UPLOAD_COMPLETING);
	for (unsigned i = 0; i < up->nparts; i++) {
		if (up->parts[i].etag == NULL) {
			snprintf(message, sizeof(message),
				 "upload of %s to s3://%s/%s: part %u has no ETag "
				 "recorded; not completing an upload with a gap",
				 up->path, up->bucket, up->key, up->parts[i].number);
			upload_record_failure(up, ENGINE_ERR_PROTOCOL, message);
			upload_start_abort(up);
			return;
		}
	}
	if (!file_unchanged(up)) {
		snprintf(message, sizeof(message),
			 "upload of %s to s3://%s/%s: the file changed while it was "
			 "being uploaded; upload it again once it is complete",
			 up->path, up->bucket, up->key);
		upload_record_failure(up, ENGINE_ERR_IO, message);
		upload_start_abort(up);
		return;
	}
	body = complete_body(up);
	if (body == NULL) {
		upload_record_failure(up, ENGINE_ERR_NOMEM, "out of memory");
		upload_start_abort(up);
		return;
	}
	s3_req_spec_init(&spec, "CompleteMultipartUpload", "POST", up->bucket, up->key);
	spec.query[spec.nquery++] = (struct sigv4_param){"uploadId", up->upload_id};
	spec.headers[spec.nheaders++] =
		(struct sigv4_param){"Content-Type", "application/xml"};
	spec.body_len = evbuffer_get_length(body);
	spec.body = evbuffer_pullup(body, -1);
	spec.expect_root = "CompleteMultipartUploadResult";
	up->req = s3_req_start(up->client, &spec, complete_done, up);
	evbuffer_free(body);
	if (up->req == NULL) {
		upload_record_failure(up, ENGINE_ERR_NOMEM, "out of memory");
		upload_start_abort(up);
	}
}

/* Parts. */

static void
part_done(void *arg, const struct s3_error *err, const struct s3_resp *resp)
{
	struct upload_part *part = arg;
	struct s3_upload *up = part->up;
	const char *etag;
	char message[1024];

	part->req = NULL;
	up->inflight--;
	if (err->code != ENGINE_OK) {
		upload_record_error(up, err);
		upload_fail(up);
		return;
	}
	etag = s3_resp_header(resp, "ETag");
	if (etag == NULL || *etag == '\0') {
		snprintf(message, sizeof(message),
			 "UploadPart s3://%s/%s (%s) failed: the response has no ETag",
			 up->bucket, up->key, part->detail);
		upload_record_failure(up, ENGINE_ERR_PROTOCOL, message);
		upload_fail(up);
		return;
	}
	if (checksum_echo_differs(up, resp, "UploadPart", part->detail, message,
				  sizeof(message))) {
		upload_record_failure(up, ENGINE_ERR_PROTOCOL, message);
		upload_fail(up);
		return;
	}
	free(part->etag);
	part->etag = strdup(etag);
	if (part->etag == NULL) {
		upload_record_failure(up, ENGINE_ERR_NOMEM, "out of memory");
		upload_fail(up);
		return;
	}
	snprintf(part->checksum, sizeof(part->checksum), "%s", resp->checksum_value);
	part->done = 1;
	up->parts_done++;
	up->bytes_done += part->length;
	report_progress(up);
	upload_pump(up);
}

static void
part_progress(void *arg, uint64_t bytes, uint64_t total)
{
	struct upload_part *part = arg;

	part->sent = bytes;
	report_progress(part->up);
}

static int
upload_start_part(struct s3_upload *up, struct upload_part *part)
{
	struct s3_req_spec spec;
	char number[16];

	snprintf(number, sizeof(number), "%u", part->number);
	s3_req_spec_init(&spec, "UploadPart", "PUT", up->bucket, up->key);
	spec.query[spec.nquery++] = (struct sigv4_param){"partNumber", number};
	spec.query[spec.nquery++] = (struct sigv4_param){"uploadId", up->upload_id};
	spec.detail = part->detail;
	spec.body_fd = up->fd;
	spec.body_offset = part->offset;
	spec.body_length = part->length;
	spec.checksum = up->opts.checksum;
	spec.progress = part_progress;
	part->sent = 0;
	part->req = s3_req_start(up->client, &spec, part_done, part);
	if (part->req == NULL)
		return ENGINE_ERR_NOMEM;
	up->inflight++;
	return ENGINE_OK;
}

static void
upload_pump(struct s3_upload *up)
{
	if (up->state != UPLOAD_SENDING_PARTS)
		return;
	if (up->cancel_requested) {
		upload_fail(up);
		return;
	}
	while (up->inflight < up->opts.parallelism && up->next_part < up->nparts) {
		struct upload_part *part = &up->parts[up->next_part++];

		if (upload_start_part(up, part) != ENGINE_OK) {
			upload_record_failure(up, ENGINE_ERR_NOMEM, "out of memory");
			upload_fail(up);
			return;
		}
	}
	if (up->parts_done == up->nparts)
		upload_start_complete(up);
}

/* Create. */

static void
create_done(void *arg, const struct s3_error *err, const struct s3_resp *resp)
{
	struct s3_upload *up = arg;
	char message[1024];

	up->req = NULL;
	if (err->code != ENGINE_OK) {
		upload_record_error(up, err);
		upload_finish(up);
		return;
	}
	up->upload_id = s3_xml_text(resp->body, resp->body_len, "UploadId");
	if (up->upload_id == NULL || *up->upload_id == '\0') {
		free(up->upload_id);
		up->upload_id = NULL;
		snprintf(message, sizeof(message),
			 "CreateMultipartUpload s3://%s/%s failed: the response "
			 "has no UploadId",
			 up->bucket, up->key);
		upload_record_failure(up, ENGINE_ERR_PROTOCOL, message);
		upload_finish(up);
		return;
	}
	log_debug(up->prefix, "multipart upload %s: %u parts of %llu bytes",
		  up->upload_id, up->nparts, (unsigned long long)up->part_size);
	if (up->cancel_requested) {
		upload_start_abort(up);
		return;
	}
	upload_set_state(up, UPLOAD_SENDING_PARTS);
	upload_pump(up);
}

static void
upload_start_create(struct s3_upload *up)
{
	const char *algorithm = s3_checksum_algorithm(up->opts.checksum);
	struct s3_req_spec spec;

	upload_set_state(up, UPLOAD_CREATING);
	s3_req_spec_init(&spec, "CreateMultipartUpload", "POST", up->bucket, up->key);
	spec.query[spec.nquery++] = (struct sigv4_param){"uploads", ""};
	/* With CRC32 or SHA256, S3 requires the algorithm at creation and each
	 * part's checksum in the Complete request. */
	if (algorithm != NULL)
		spec.headers[spec.nheaders++] =
			(struct sigv4_param){"x-amz-checksum-algorithm", algorithm};
	spec.expect_root = "InitiateMultipartUploadResult";
	/* NOTE: when a response is lost and the request is retried, the
	 * server may hold a first upload that nothing aborts.  Nothing
	 * distinguishes it from another writer's upload to the same key, so
	 * only a lifecycle rule removes it. */
	up->req = s3_req_start(up->client, &spec, create_done, up);
	if (up->req == NULL) {
		upload_record_failure(up, ENGINE_ERR_NOMEM, "out of memory");
		upload_finish(up);
	}
}

/* Set up the parts of a multipart upload. */
static int
upload_plan_parts(struct s3_upload *up)
{
	up->parts = calloc(up->nparts, sizeof(*up->parts));
	if (up->parts == NULL)
		return ENGINE_ERR_NOMEM;
	for (unsigned i = 0; i < up->nparts; i++) {
		struct upload_part *part = &up->parts[i];

		part->up = up;
		part->number = i + 1;
		part->offset = (uint64_t)i * up->part_size;
		part->length = i + 1 < up->nparts ? up->part_size
						  : up->size - part->offset;
		snprintf(part->detail, sizeof(part->detail), "part %u of %u",
			 part->number, up->nparts);
	}
	return ENGINE_OK;
}

static int
upload_open(struct s3_upload *up)
{
	char message[1024];
	int rc;

	up->fd = open(up->path, O_RDONLY | O_CLOEXEC);
	if (up->fd < 0 || fstat(up->fd, &up->st) != 0) {
		snprintf(message, sizeof(message),
			 "cannot upload %s to s3://%s/%s: cannot open the file: %s",
			 up->path, up->bucket, up->key, strerror(errno));
		upload_record_failure(up, ENGINE_ERR_IO, message);
		return ENGINE_ERR_IO;
	}
	if (!S_ISREG(up->st.st_mode)) {
		snprintf(message, sizeof(message),
			 "cannot upload %s to s3://%s/%s: not a regular file",
			 up->path, up->bucket, up->key);
		upload_record_failure(up, ENGINE_ERR_INVALID, message);
		return ENGINE_ERR_INVALID;
	}
	up->size = (uint64_t)up->st.st_size;
	rc = s3_part_plan(up->size, up->opts.part_size, up->opts.max_parts,
			  &up->part_size, &up->nparts);
	if (rc != ENGINE_OK) {
		snprintf(message, sizeof(message),
			 "cannot upload %s to s3://%s/%s: %llu bytes is more than "
			 "S3's largest object (5 TiB)",
			 up->path, up->bucket, up->key, (unsigned long long)up->size);
		upload_record_failure(up, ENGINE_ERR_INVALID, message);
		return rc;
	}
	if (up->nparts > 0 && upload_plan_parts(up) != ENGINE_OK) {
		upload_record_failure(up, ENGINE_ERR_NOMEM, "out of memory");
		return ENGINE_ERR_NOMEM;
	}
	return ENGINE_OK;
}

struct s3_upload *
s3_upload_file(struct s3_client *client, const char *path, const char *bucket,
	       const char *key, const struct s3_upload_options *opts,
	       s3_object_cb cb, void *arg)
{
	struct s3_upload *up = calloc(1, sizeof(*up));

	if (up == NULL)
		return NULL;
	up->client = client;
	TAILQ_INSERT_TAIL(&client->uploads, up, link);
	up->id = ++client->next_upload_id;
	snprintf(up->prefix, sizeof(up->prefix), "[s3 upload %u]", up->id);
	up->fd = -1;
	up->cb = cb;
	up->arg = arg;
	up->opts = *opts;
	if (up->opts.checksum == S3_CHECKSUM_AUTO)
		up->opts.checksum = s3_client_default_checksum(client);
	if (up->opts.part_size == 0)
		up->opts.part_size = S3_DEFAULT_PART_SIZE;
	if (up->opts.parallelism == 0)
		up->opts.parallelism = S3_DEFAULT_PARALLELISM;
	up->started = up->state_since = util_now();
	up->path = strdup(path);
	up->bucket = strdup(bucket);
	up->key = strdup(key);
	up->finish_ev = event_new(client->base, -1, 0, finish_cb, up);
	if (up->path == NULL || up->bucket == NULL || up->key == NULL ||
	    up->finish_ev == NULL) {
		upload_free(up);
		return NULL;
	}
	if (upload_open(up) != ENGINE_OK) {
		upload_finish(up);
		return up;
	}
	log_debug(up->prefix, "uploading %s (%llu bytes) to s3://%s/%s: %s, "
		  "checksum %s",
		  path, (unsigned long long)up->size, bucket, key,
		  up->nparts == 0 ? "one PutObject" : "multipart",
		  s3_checksum_name(up->opts.checksum));
	if (up->nparts == 0)
		upload_start_put(up);
	else
		upload_start_create(up);
	return up;
}

int
s3_upload_cancel(struct s3_upload *up)
{
	char message[1024];

	if (up->cancel_requested)
		return 1;
	up->cancel_requested = 1;
	snprintf(message, sizeof(message), "upload of %s to s3://%s/%s cancelled",
		 up->path, up->bucket, up->key);
	switch (up->state) {
	case UPLOAD_PUTTING:
		upload_record_failure(up, S3_ERR_CANCELLED, message);
		s3_req_cancel(up->req);
		up->req = NULL;
		upload_finish(up);
		return 1;
	case UPLOAD_CREATING:
		/* The upload ID is needed to abort; create_done aborts. */
		upload_record_failure(up, S3_ERR_CANCELLED, message);
		return 1;
	case UPLOAD_SENDING_PARTS:
		upload_record_failure(up, S3_ERR_CANCELLED, message);
		upload_fail(up);
		return 1;
	case UPLOAD_COMPLETING:
	case UPLOAD_VERIFYING:
	case UPLOAD_ABORTING:
	case UPLOAD_CHECKING_ABORT:
	case UPLOAD_FINISHED:
		break;
	}
	return 0;
}

void
s3_upload_detach(struct s3_upload *up)
{
	up->detached = 1;
	if (up->state != UPLOAD_FINISHED)
		s3_upload_cancel(up);
}

void
s3_upload_free_all(struct s3_client *client)
{
	struct s3_upload *up;

	while ((up = TAILQ_FIRST(&client->uploads)) != NULL)
		upload_free(up);
}
