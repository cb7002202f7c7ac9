#ifndef MFMODAL_S3_H
#define MFMODAL_S3_H

/* The engine's S3 client: asynchronous operations on a caller's event_base,
 * signed with SigV4 and sent over HTTP/1.1 keep-alive connections.
 *
 * Every operation reports through one callback, which runs from the event
 * loop itself (never from inside another call into this module), so the
 * callback may start, cancel or free anything, the client included.  After
 * the callback returns the operation's handle is gone.
 *
 * Requests that fail with 429, 500, 502, 503, 504, RequestTimeout,
 * BadDigest, a reset or a timeout are sent again after an exponential
 * backoff with jitter, re-signed with a fresh date.  RequestTimeTooSkewed
 * sets a clock offset for the whole client from the server's time, and the
 * request is retried at once.  doc/s3.md lists every rule. */

#include <stddef.h>
#include <stdint.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "aws_config.h"

/* S3's limits on multipart uploads. */
#define S3_MIN_PART_SIZE ((uint64_t)5 * 1024 * 1024)
#define S3_MAX_PART_SIZE ((uint64_t)5 * 1024 * 1024 * 1024)
#define S3_MAX_PARTS 10000u
#define S3_MAX_OBJECT_SIZE ((uint64_t)5 * 1024 * 1024 * 1024 * 1024)

/* Upload defaults; doc/benchmarks.md records the measurement behind them. */
#define S3_DEFAULT_PART_SIZE ((uint64_t)8 * 1024 * 1024)
#define S3_DEFAULT_PARALLELISM 8u

/* Error codes of this module, beyond the engine's (util.h). */
#define S3_ERR_SERVER (-64)    /* the server returned an error response */
#define S3_ERR_CANCELLED (-65) /* s3_upload_cancel() stopped the upload */

struct s3_client;
struct s3_op;
struct s3_upload;

/* The checksum sent with each uploaded part (and single PUT) for the server
 * to verify.  Over plain HTTP the SigV4 payload hash (SHA-256) is sent and
 * checked by S3 as well. */
enum s3_checksum {
	/* sha256 over a plain HTTP endpoint, where SigV4 computes the digest
	 * anyway, else crc32.  s3_upload_file() resolves it. */
	S3_CHECKSUM_AUTO,
	S3_CHECKSUM_CRC32,  /* x-amz-checksum-crc32 (zlib's crc32) */
	S3_CHECKSUM_SHA256, /* x-amz-checksum-sha256 */
	S3_CHECKSUM_MD5,    /* Content-MD5 */
	S3_CHECKSUM_NONE,
};
const char *s3_checksum_name(enum s3_checksum checksum);
/* Parse "auto", "crc32", "sha256", "md5" or "none", in any case.  Returns 0,
 * or -1 for any other name. */
int s3_checksum_parse(const char *name, enum s3_checksum *checksum);

struct s3_client_options {
	const char *ca_file;        /* NULL: MFMODAL_CA_FILE, else the system store */
	unsigned max_connections;   /* per endpoint host */
	double connect_timeout;     /* seconds */
	double io_timeout;          /* seconds without progress on a request */
	unsigned max_attempts;      /* tries per request, the first included */
	double retry_base_delay;    /* seconds before the first retry */
	double retry_max_delay;     /* seconds; the cap of the doubling */
};
void s3_client_options_default(struct s3_client_options *opts);
/* Override opts from MFMODAL_S3_MAX_ATTEMPTS, MFMODAL_S3_RETRY_BASE_DELAY and
 * MFMODAL_S3_IO_TIMEOUT.  Returns 0 or ENGINE_ERR_CONFIG with err naming
 * the invalid variable. */
int s3_client_options_from_env(struct s3_client_options *opts, char *err,
			       size_t errlen);

/* Create a client for cfg (copied; the secret and session token are
 * registered with log_add_secret()).  Returns NULL with a message in err
 * (an invalid endpoint URL or CA file). */
struct s3_client *s3_client_new(struct event_base *base, struct evdns_base *dns,
				const struct aws_config *cfg,
				const struct s3_client_options *opts, char *err,
				size_t errlen);
/* Stop what is still running (without callbacks) and free the client.
 * Multipart uploads still running are not aborted: cancel them first and
 * wait for their callbacks, or detach them and keep the event loop running
 * until they end. */
void s3_client_free(struct s3_client *client);
/* Seconds added to the local clock when signing, learnt from a
 * RequestTimeTooSkewed response (0 until then). */
long s3_client_clock_offset(const struct s3_client *client);

/* The outcome of an operation. */
struct s3_error {
	int code;           /* ENGINE_OK or a negative engine error code */
	int http_status;    /* the last response's status, 0 when none came */
	char s3_code[64];   /* S3's error code, such as "NoSuchBucket", or "" */
	unsigned attempts;  /* requests sent for the failing step */
	char message[2048]; /* operation, bucket, key, cause and what to check */
};

struct s3_object_info {
	uint64_t size;            /* bytes (of the range, for a ranged GET) */
	uint64_t object_size;     /* the whole object's size */
	char etag[132];           /* as the server sent it, quotes included */
	char last_modified[64];
	char content_type[128];
	char content_range[96];   /* ranged GET only */
	unsigned parts;           /* uploads: 0 for a single PUT */
};

typedef void (*s3_object_cb)(void *arg, const struct s3_error *err,
			     const struct s3_object_info *info);
/* Bytes moved so far by a transfer, and its total. */
typedef void (*s3_progress_cb)(void *arg, uint64_t done, uint64_t total);

struct s3_list_entry {
	char *key;
	char *upload_id;       /* ListMultipartUploads only */
	uint64_t size;         /* ListObjectsV2 only */
	char etag[132];
	char date[40];         /* LastModified, or Initiated for uploads */
};

struct s3_list {
	struct s3_list_entry *entries;
	size_t count;
};

typedef void (*s3_list_cb)(void *arg, const struct s3_error *err,
			   const struct s3_list *list);

/* The operations below return a handle for s3_op_cancel(), or NULL when
 * out of memory (then no callback follows). */

/* HeadObject. */
struct s3_op *s3_head_object(struct s3_client *client, const char *bucket,
			     const char *key, s3_object_cb cb, void *arg);
/* GetObject into the file path: the body goes to a temporary file beside
 * it, renamed when complete, so path never contains a partial object.  range is
 * NULL or an HTTP Range value such as "bytes=0-99". */
struct s3_op *s3_get_object(struct s3_client *client, const char *bucket,
			    const char *key, const char *path, const char *range,
			    s3_progress_cb progress, s3_object_cb cb, void *arg);
/* DeleteObject; info is NULL. */
struct s3_op *s3_delete_object(struct s3_client *client, const char *bucket,
			       const char *key, s3_object_cb cb, void *arg);
/* ListObjectsV2 over every page for prefix (may be NULL or ""). */
struct s3_op *s3_list_objects(struct s3_client *client, const char *bucket,
			      const char *prefix, s3_list_cb cb, void *arg);
/* ListMultipartUploads over every page for prefix. */
struct s3_op *s3_list_multipart_uploads(struct s3_client *client,
					const char *bucket, const char *prefix,
					s3_list_cb cb, void *arg);
/* Stop an operation; its callback is not called.  Not for use inside that
 * callback. */
void s3_op_cancel(struct s3_op *op);

struct s3_upload_options {
	uint64_t part_size;     /* bytes; 0 for S3_DEFAULT_PART_SIZE */
	unsigned parallelism;   /* parts in flight; 0 for S3_DEFAULT_PARALLELISM */
	enum s3_checksum checksum;
	/* The most parts to use before growing the part size; 0 for S3's
	 * 10,000.  Lower values let tests reach the growth with small files. */
	unsigned max_parts;
	s3_progress_cb progress; /* may be NULL */
	void *progress_arg;
};
void s3_upload_options_default(struct s3_upload_options *opts);
/* Override opts from MFMODAL_S3_PART_SIZE (MiB), MFMODAL_S3_PARALLEL,
 * MFMODAL_S3_CHECKSUM and MFMODAL_S3_MAX_PARTS.  Returns 0 or
 * ENGINE_ERR_CONFIG with err naming the invalid variable. */
int s3_upload_options_from_env(struct s3_upload_options *opts, char *err,
			       size_t errlen);

/* Choose the part size for a file of size bytes: requested (at least 5 MiB),
 * grown in whole MiB until the file fits in max_parts parts.  Sets *nparts
 * to 0 when size is below the part size (one PutObject).  Returns 0, or
 * ENGINE_ERR_INVALID when the file is larger than S3's 5 TiB object limit. */
int s3_part_plan(uint64_t size, uint64_t requested, unsigned max_parts,
		 uint64_t *part_size, unsigned *nparts);

/* Upload the file path to bucket/key: one PutObject below the part size,
 * else a multipart upload with opts->parallelism parts in flight, then a
 * HeadObject to check the stored size.  Any failure after
 * CreateMultipartUpload ends with AbortMultipartUpload.  The callback gets
 * the object's size, ETag and part count. */
struct s3_upload *s3_upload_file(struct s3_client *client, const char *path,
				 const char *bucket, const char *key,
				 const struct s3_upload_options *opts,
				 s3_object_cb cb, void *arg);
/* Stop the upload: parts in flight are cancelled and the multipart upload
 * is aborted; the callback follows with S3_ERR_CANCELLED once that is
 * done.  Returns 1, or 0 when the upload is already completing (or
 * aborting after a failure) and goes on to its normal end. */
int s3_upload_cancel(struct s3_upload *upload);
/* Give the upload up: its callback is never called, so the caller may free
 * what the callback's argument points to.  A single PutObject stops at once;
 * a multipart upload is cancelled and aborted in the background and logs an
 * error if the abort fails.  s3_client_free() ends whatever is left. */
void s3_upload_detach(struct s3_upload *upload);

/* Parse "s3://bucket/key" into malloc'ed parts (the key may be empty, and
 * key may be NULL when the caller needs only the bucket).  Returns 0 or -1. */
int s3_parse_uri(const char *uri, char **bucket, char **key);

#endif
