/* Single-request S3 operations: HeadObject, GetObject into a file,
 * DeleteObject, and the paged listings ListObjectsV2 and
 * ListMultipartUploads. */
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

enum op_kind {
	OP_HEAD,
	OP_GET,
	OP_DELETE,
	OP_LIST_OBJECTS,
	OP_LIST_UPLOADS,
};

struct s3_op {
	struct s3_client *client;
	enum op_kind kind;
	struct s3_req *req;
	char *bucket;
	char *key;
	char *prefix;
	char *range;
	char *path;     /* GET: the destination */
	char *tmp_path; /* GET: where the body goes until it is complete */
	int fd;
	/* Listing pages: the markers of the next page. */
	char *token;
	char *key_marker;
	char *upload_id_marker;
	struct s3_list list;
	size_t list_capacity;
	/* A failure found before any request, reported from the event loop
	 * like every other outcome. */
	struct s3_error failure;
	struct event *fail_ev;
	s3_object_cb object_cb;
	s3_list_cb list_cb;
	s3_progress_cb progress;
	void *arg;
	TAILQ_ENTRY(s3_op) link; /* in the client's list */
};

static void op_start_request(struct s3_op *op);

static void
op_free(struct s3_op *op)
{
	TAILQ_REMOVE(&op->client->ops, op, link);
	if (op->req != NULL)
		s3_req_cancel(op->req);
	if (op->fail_ev != NULL)
		event_free(op->fail_ev);
	if (op->fd >= 0)
		close(op->fd);
	if (op->tmp_path != NULL)
		unlink(op->tmp_path);
	free(op->bucket);
	free(op->key);
	free(op->prefix);
	free(op->range);
	free(op->path);
	free(op->tmp_path);
	free(op->token);
	free(op->key_marker);
	free(op->upload_id_marker);
	s3_list_clear(&op->list);
	free(op);
}

void
s3_op_cancel(struct s3_op *op)
{
	if (op != NULL)
		op_free(op);
}

void
s3_op_free_all(struct s3_client *client)
{
	struct s3_op *op;

	while ((op = TAILQ_FIRST(&client->ops)) != NULL)
		op_free(op);
}

static void
copy_header(const struct s3_resp *resp, const char *name, char *out,
	    size_t outlen)
{
	const char *value = s3_resp_header(resp, name);

	snprintf(out, outlen, "%s", value != NULL ? value : "");
}

static void
fill_info(const struct s3_resp *resp, struct s3_object_info *info)
{
	const char *length = s3_resp_header(resp, "Content-Length");
	const char *range = s3_resp_header(resp, "Content-Range");
	const char *slash;

	memset(info, 0, sizeof(*info));
	if (length != NULL)
		info->size = strtoull(length, NULL, 10);
	info->object_size = info->size;
	copy_header(resp, "ETag", info->etag, sizeof(info->etag));
	copy_header(resp, "Last-Modified", info->last_modified,
		    sizeof(info->last_modified));
	copy_header(resp, "Content-Type", info->content_type,
		    sizeof(info->content_type));
	if (range != NULL) {
		snprintf(info->content_range, sizeof(info->content_range), "%s", range);
		/* "bytes 0-99/1234": the total follows the slash. */
		slash = strrchr(range, '/');
		if (slash != NULL && slash[1] != '*')
			info->object_size = strtoull(slash + 1, NULL, 10);
	}
}

/* Finish a GET: the whole body is in the temporary file, which becomes
 * the destination. */
static int
finish_get(struct s3_op *op, const struct s3_resp *resp,
	   struct s3_object_info *info, struct s3_error *err)
{
	mode_t mask = umask(0);

	umask(mask);
	if (s3_resp_header(resp, "Content-Length") != NULL &&
	    resp->sink_bytes != info->size) {
		snprintf(err->message, sizeof(err->message),
			 "GetObject s3://%s/%s failed: received %llu bytes but the "
			 "response announced %llu",
			 op->bucket, op->key, (unsigned long long)resp->sink_bytes,
			 (unsigned long long)info->size);
		err->code = ENGINE_ERR_PROTOCOL;
		return -1;
	}
	info->size = resp->sink_bytes;
	/* mkstemp() creates the file 0600; a download gets the usual mode. */
	if (fchmod(op->fd, 0666 & ~mask) != 0 || close(op->fd) != 0 ||
	    rename(op->tmp_path, op->path) != 0) {
		snprintf(err->message, sizeof(err->message),
			 "GetObject s3://%s/%s: cannot write %s: %s", op->bucket,
			 op->key, op->path, strerror(errno));
		err->code = ENGINE_ERR_IO;
		op->fd = -1;
		return -1;
	}
	op->fd = -1;
	free(op->tmp_path);
	op->tmp_path = NULL;
	return 0;
}

static int
list_add(struct s3_op *op, struct s3_list_entry *entry)
{
	if (op->list.count == op->list_capacity) {
		size_t cap = op->list_capacity ? op->list_capacity * 2 : 64;
		struct s3_list_entry *grown =
			realloc(op->list.entries, cap * sizeof(*grown));

		if (grown == NULL)
			return ENGINE_ERR_NOMEM;
		op->list.entries = grown;
		op->list_capacity = cap;
	}
	op->list.entries[op->list.count++] = *entry;
	return ENGINE_OK;
}

static void
copy_text(const char *xml, size_t len, const char *name, char *out,
	  size_t outlen)
{
	char *text = s3_xml_text(xml, len, name);

	snprintf(out, outlen, "%s", text != NULL ? text : "");
	free(text);
}

/* Collect one listing page; returns 1 when another page follows, 0 at the
 * end, or a negative error. */
static int
parse_list_page(struct s3_op *op, const char *body, size_t len)
{
	const char *element = op->kind == OP_LIST_OBJECTS ? "Contents" : "Upload";
	const char *inner;
	size_t inner_len, offset = 0;
	char truncated[16];

	while (s3_xml_next(body, len, &offset, element, &inner, &inner_len)) {
		struct s3_list_entry entry;
		char size[32];

		memset(&entry, 0, sizeof(entry));
		entry.key = s3_xml_text(inner, inner_len, "Key");
		if (entry.key == NULL)
			return ENGINE_ERR_PROTOCOL;
		if (op->kind == OP_LIST_UPLOADS) {
			entry.upload_id = s3_xml_text(inner, inner_len, "UploadId");
			copy_text(inner, inner_len, "Initiated", entry.date,
				  sizeof(entry.date));
		} else {
			copy_text(inner, inner_len, "Size", size, sizeof(size));
			entry.size = strtoull(size, NULL, 10);
			copy_text(inner, inner_len, "ETag", entry.etag,
				  sizeof(entry.etag));
			copy_text(inner, inner_len, "LastModified", entry.date,
				  sizeof(entry.date));
		}
		if (list_add(op, &entry) != ENGINE_OK) {
			free(entry.key);
			free(entry.upload_id);
			return ENGINE_ERR_NOMEM;
		}
	}
	copy_text(body, len, "IsTruncated", truncated, sizeof(truncated));
	if (strcmp(truncated, "true") != 0)
		return 0;
	if (op->kind == OP_LIST_OBJECTS) {
		free(op->token);
		op->token = s3_xml_text(body, len, "NextContinuationToken");
		return op->token != NULL && *op->token != '\0' ? 1
							      : ENGINE_ERR_PROTOCOL;
	}
	free(op->key_marker);
	free(op->upload_id_marker);
	op->key_marker = s3_xml_text(body, len, "NextKeyMarker");
	op->upload_id_marker = s3_xml_text(body, len, "NextUploadIdMarker");
	return op->key_marker != NULL ? 1 : ENGINE_ERR_PROTOCOL;
}

static void
op_req_done(void *arg, const struct s3_error *req_err, const struct s3_resp *resp)
{
	struct s3_op *op = arg;
	struct s3_error err = *req_err;
	struct s3_object_info info;
	int more;

	op->req = NULL; /* freed by the request code after this returns */
	if (err.code == ENGINE_OK && (op->kind == OP_LIST_OBJECTS ||
				      op->kind == OP_LIST_UPLOADS)) {
		more = parse_list_page(op, resp->body, resp->body_len);
		if (more == 1) {
			op_start_request(op);
			if (op->req != NULL)
				return;
			err.code = ENGINE_ERR_NOMEM;
			snprintf(err.message, sizeof(err.message), "out of memory");
		} else if (more < 0) {
			err.code = more;
			snprintf(err.message, sizeof(err.message),
				 "%s s3://%s/%s failed: invalid listing response",
				 op->kind == OP_LIST_OBJECTS ? "ListObjectsV2"
							     : "ListMultipartUploads",
				 op->bucket, op->prefix != NULL ? op->prefix : "");
		}
		op->list_cb(op->arg, &err, &op->list);
		op_free(op);
		return;
	}
	if (err.code != ENGINE_OK) {
		if (op->list_cb != NULL)
			op->list_cb(op->arg, &err, NULL);
		else
			op->object_cb(op->arg, &err, NULL);
		op_free(op);
		return;
	}
	fill_info(resp, &info);
	if (op->kind == OP_GET && finish_get(op, resp, &info, &err) != 0) {
		op->object_cb(op->arg, &err, NULL);
		op_free(op);
		return;
	}
	op->object_cb(op->arg, &err, op->kind == OP_DELETE ? NULL : &info);
	op_free(op);
}

static void
op_progress(void *arg, uint64_t bytes, uint64_t total)
{
	struct s3_op *op = arg;

	if (op->progress != NULL)
		op->progress(op->arg, bytes, total);
}

static void
op_start_request(struct s3_op *op)
{
	struct s3_req_spec spec;

	switch (op->kind) {
	case OP_HEAD:
		s3_req_spec_init(&spec, "HeadObject", "HEAD", op->bucket, op->key);
		break;
	case OP_GET:
		s3_req_spec_init(&spec, "GetObject", "GET", op->bucket, op->key);
		spec.sink_fd = op->fd;
		spec.progress = op_progress;
		if (op->range != NULL)
			spec.headers[spec.nheaders++] =
				(struct sigv4_param){"Range", op->range};
		break;
	case OP_DELETE:
		s3_req_spec_init(&spec, "DeleteObject", "DELETE", op->bucket, op->key);
		break;
	case OP_LIST_OBJECTS:
		s3_req_spec_init(&spec, "ListObjectsV2", "GET", op->bucket, NULL);
		spec.query[spec.nquery++] = (struct sigv4_param){"list-type", "2"};
		if (op->prefix != NULL)
			spec.query[spec.nquery++] =
				(struct sigv4_param){"prefix", op->prefix};
		if (op->token != NULL)
			spec.query[spec.nquery++] =
				(struct sigv4_param){"continuation-token", op->token};
		spec.expect_root = "ListBucketResult";
		break;
	case OP_LIST_UPLOADS:
		s3_req_spec_init(&spec, "ListMultipartUploads", "GET", op->bucket, NULL);
		spec.query[spec.nquery++] = (struct sigv4_param){"uploads", ""};
		if (op->prefix != NULL)
			spec.query[spec.nquery++] =
				(struct sigv4_param){"prefix", op->prefix};
		if (op->key_marker != NULL)
			spec.query[spec.nquery++] =
				(struct sigv4_param){"key-marker", op->key_marker};
		if (op->upload_id_marker != NULL)
			spec.query[spec.nquery++] = (struct sigv4_param){
				"upload-id-marker", op->upload_id_marker};
		spec.expect_root = "ListMultipartUploadsResult";
		break;
	}
	op->req = s3_req_start(op->client, &spec, op_req_done, op);
}

static struct s3_op *
op_new(struct s3_client *client, enum op_kind kind, const char *bucket,
       const char *key, const char *prefix)
{
	struct s3_op *op = calloc(1, sizeof(*op));

	if (op == NULL)
		return NULL;
	op->client = client;
	op->kind = kind;
	op->fd = -1;
	TAILQ_INSERT_TAIL(&client->ops, op, link);
	op->bucket = strdup(bucket);
	op->key = key != NULL ? strdup(key) : NULL;
	op->prefix = prefix != NULL && *prefix != '\0' ? strdup(prefix) : NULL;
	if (op->bucket == NULL || (key != NULL && op->key == NULL) ||
	    (prefix != NULL && *prefix != '\0' && op->prefix == NULL)) {
		op_free(op);
		return NULL;
	}
	return op;
}

static void
op_fail_cb(evutil_socket_t fd, short what, void *arg)
{
	struct s3_op *op = arg;

	if (op->list_cb != NULL)
		op->list_cb(op->arg, &op->failure, NULL);
	else
		op->object_cb(op->arg, &op->failure, NULL);
	op_free(op);
}

static struct s3_op *
op_fail_later(struct s3_op *op)
{
	op->fail_ev = event_new(op->client->base, -1, 0, op_fail_cb, op);
	if (op->fail_ev == NULL) {
		op_free(op);
		return NULL;
	}
	event_active(op->fail_ev, EV_TIMEOUT, 0);
	return op;
}

static struct s3_op *
op_launch(struct s3_op *op)
{
	op_start_request(op);
	if (op->req == NULL) {
		op_free(op);
		return NULL;
	}
	return op;
}

struct s3_op *
s3_head_object(struct s3_client *client, const char *bucket, const char *key,
	       s3_object_cb cb, void *arg)
{
	struct s3_op *op = op_new(client, OP_HEAD, bucket, key, NULL);

	if (op == NULL)
		return NULL;
	op->object_cb = cb;
	op->arg = arg;
	return op_launch(op);
}

struct s3_op *
s3_delete_object(struct s3_client *client, const char *bucket, const char *key,
		 s3_object_cb cb, void *arg)
{
	struct s3_op *op = op_new(client, OP_DELETE, bucket, key, NULL);

	if (op == NULL)
		return NULL;
	op->object_cb = cb;
	op->arg = arg;
	return op_launch(op);
}

struct s3_op *
s3_get_object(struct s3_client *client, const char *bucket, const char *key,
	      const char *path, const char *range, s3_progress_cb progress,
	      s3_object_cb cb, void *arg)
{
	struct s3_op *op = op_new(client, OP_GET, bucket, key, NULL);

	if (op == NULL)
		return NULL;
	op->object_cb = cb;
	op->progress = progress;
	op->arg = arg;
	op->path = strdup(path);
	op->range = range != NULL ? strdup(range) : NULL;
	if (op->path == NULL || (range != NULL && op->range == NULL) ||
	    asprintf(&op->tmp_path, "%s.mfmodal-XXXXXX", path) < 0) {
		op->tmp_path = NULL;
		op_free(op);
		return NULL;
	}
	op->fd = mkstemp(op->tmp_path);
	if (op->fd < 0) {
		op->failure.code = ENGINE_ERR_IO;
		snprintf(op->failure.message, sizeof(op->failure.message),
			 "GetObject s3://%s/%s: cannot create a file beside %s: %s "
			 "(check that the directory exists and is writable)",
			 bucket, key, path, strerror(errno));
		free(op->tmp_path);
		op->tmp_path = NULL;
		return op_fail_later(op);
	}
	return op_launch(op);
}

struct s3_op *
s3_list_objects(struct s3_client *client, const char *bucket,
		const char *prefix, s3_list_cb cb, void *arg)
{
	struct s3_op *op = op_new(client, OP_LIST_OBJECTS, bucket, NULL, prefix);

	if (op == NULL)
		return NULL;
	op->list_cb = cb;
	op->arg = arg;
	return op_launch(op);
}

struct s3_op *
s3_list_multipart_uploads(struct s3_client *client, const char *bucket,
			  const char *prefix, s3_list_cb cb, void *arg)
{
	struct s3_op *op = op_new(client, OP_LIST_UPLOADS, bucket, NULL, prefix);

	if (op == NULL)
		return NULL;
	op->list_cb = cb;
	op->arg = arg;
	return op_launch(op);
}
