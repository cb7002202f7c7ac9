#ifndef MFMODAL_S3_INTERNAL_H
#define MFMODAL_S3_INTERNAL_H

/* Declarations shared by the S3 client's files (s3.c, s3_request.c,
 * s3_object.c, s3_multipart.c); not for the rest of the engine. */

#include <stdint.h>
#include <sys/queue.h>

#include "http1.h"
#include "s3.h"
#include "sigv4.h"

struct s3_req;

/* The size of the buffer a file body is read into to compute its checksums. */
#define S3_HASH_BUFFER (1024 * 1024)

/* One S3 request, retried as a unit. */
struct s3_req_spec {
	const char *op;     /* the API name, "UploadPart", for messages */
	const char *method;
	const char *bucket;
	const char *key;    /* NULL for bucket operations */
	const char *detail; /* NULL or context for messages: "part 3 of 12" */
	struct sigv4_param query[6];
	size_t nquery;
	struct sigv4_param headers[6]; /* extra request headers */
	size_t nheaders;
	/* A body from memory (copied) ... */
	const void *body;
	size_t body_len;
	/* ... or a file range; body_fd is -1 when there is none. */
	int body_fd;
	uint64_t body_offset;
	uint64_t body_length;
	/* The checksum header to add to a file body, never S3_CHECKSUM_AUTO. */
	enum s3_checksum checksum;
	/* >= 0: a 2xx response body goes to this file from offset 0,
	 * truncated again before each attempt. */
	int sink_fd;
	/* The root element a 2xx body must have ("CompleteMultipartUploadResult");
	 * a 2xx whose body is <Error> is then treated as that error. */
	const char *expect_root;
	unsigned max_attempts; /* 0 for the client's */
	/* Body bytes sent (uploads) or received (downloads) by the current
	 * attempt, and the body's total (0 when a download's is unknown).
	 * Called from inside I/O callbacks: it may only record. */
	void (*progress)(void *arg, uint64_t bytes, uint64_t total);
};

/* The outcome of a finished request, valid only during the callback. */
struct s3_resp {
	int status;
	const struct http1_header *headers;
	size_t nheaders;
	const char *body; /* NUL-terminated; "" for sink and empty bodies */
	size_t body_len;
	uint64_t sink_bytes;
	char checksum_value[48]; /* the checksum header value sent, if any */
};
const char *s3_resp_header(const struct s3_resp *resp, const char *name);

typedef void (*s3_req_cb)(void *arg, const struct s3_error *err,
			  const struct s3_resp *resp);

void s3_req_spec_init(struct s3_req_spec *spec, const char *op,
		      const char *method, const char *bucket, const char *key);
/* Start a request; the callback runs from the event loop, once.  Returns
 * NULL when out of memory. */
struct s3_req *s3_req_start(struct s3_client *client,
			    const struct s3_req_spec *spec, s3_req_cb cb,
			    void *arg);
/* Stop a request without its callback.  Not for use inside it. */
void s3_req_cancel(struct s3_req *req);

/* Client internals used by s3_request.c. */

struct s3_client {
	struct event_base *base;
	struct evdns_base *dns;
	struct aws_config cfg;
	struct s3_client_options opts;
	struct sigv4_credentials creds;
	SSL_CTX *ssl_ctx;
	struct url endpoint; /* custom endpoint (path-style), when cfg.endpoint_url */
	int custom_endpoint;
	struct s3_pool_entry *pools;
	size_t npools;
	long clock_offset;
	/* Hash buffers (S3_HASH_BUFFER bytes) kept for the next part, because
	 * a fresh 1 MiB allocation is an mmap() whose pages fault one by one. */
	unsigned char *spare_hash_buffers[16];
	unsigned nspare_hash_buffers;
	unsigned next_req_id;
	unsigned next_upload_id;
	TAILQ_HEAD(, s3_req) reqs;
	TAILQ_HEAD(, s3_op) ops;
	TAILQ_HEAD(, s3_upload) uploads;
};

/* Free every operation and upload still running, without callbacks; for
 * s3_client_free(). */
void s3_op_free_all(struct s3_client *client);
void s3_upload_free_all(struct s3_client *client);

/* The connection pool and request path for bucket/key: "/bucket/key" on a
 * custom endpoint, virtual-hosted "/key" on AWS.  *path is malloc'ed and
 * already URI-encoded.  Returns 0, or a negative error with err filled. */
int s3_client_route(struct s3_client *client, const char *bucket,
		    const char *key, struct http1_pool **pool, char **path,
		    char *err, size_t errlen);
/* Where requests go, for messages: "http://127.0.0.1:9000 (from
 * AWS_ENDPOINT_URL)" or "AWS region eu-west-1 (from AWS_REGION)". */
void s3_client_describe_endpoint(const struct s3_client *client, char *out,
				 size_t outlen);

/* S3's name of a checksum algorithm, "CRC32" or "SHA256", as in the
 * x-amz-checksum-algorithm header and the <ChecksumCRC32> element.  Returns
 * NULL for md5, none and auto. */
const char *s3_checksum_algorithm(enum s3_checksum checksum);
/* The request header that carries the checksum.  S3 also echoes it in the
 * response for CRC32 and SHA256.  Returns NULL for none and auto. */
const char *s3_checksum_header(enum s3_checksum checksum);
/* The checksum that S3_CHECKSUM_AUTO resolves to on this client's endpoint. */
enum s3_checksum s3_client_default_checksum(const struct s3_client *client);

/* Fill err with a message for a failed request: the operation, s3://bucket/key
 * and detail, the cause, the attempts, and a hint for the S3 error code. */
void s3_error_format(const struct s3_client *client, struct s3_error *err,
		     const struct s3_req_spec *spec, const char *cause);
/* The hint for an S3 error code or HTTP status: what to check. */
const char *s3_error_hint(const struct s3_client *client, const char *s3_code,
			  int status, char *buf, size_t buflen);

/* Cancel and release a list's entries. */
void s3_list_clear(struct s3_list *list);

#endif
