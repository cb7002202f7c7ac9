/* One S3 request from start to outcome: checksums of the body, SigV4
 * signing with a fresh date on every attempt, the HTTP exchange, error
 * classification, retries with backoff and clock-skew correction. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zlib.h>

#include "log.h"
#include "s3_internal.h"
#include "s3_xml.h"

/* A file body is hashed in reads of S3_HASH_BUFFER bytes, at most
 * HASH_BUDGET per event loop turn, so one part cannot hold up other
 * connections. */
#define HASH_BUDGET (4 * 1024 * 1024)
/* The largest XML body kept from a successful response (a listing page of
 * 1,000 keys is well under 1 MiB), and from an error response. */
#define MAX_XML_BODY (32 * 1024 * 1024)
#define MAX_ERROR_BODY (64 * 1024)
/* Retries of a request that failed at once on a reused keep-alive
 * connection.  They do not count as attempts, because the server never saw
 * the request. */
#define MAX_STALE_RETRIES 3

enum req_state {
	REQ_HASHING,  /* reading the file body to compute its checksums */
	REQ_SENDING,  /* the HTTP request is out */
	REQ_BACKOFF,  /* waiting before the next attempt */
	REQ_FINISHED, /* the callback runs on the next loop turn */
};

struct s3_req {
	struct s3_client *client;
	unsigned id;
	char prefix[32];
	enum req_state state;
	struct s3_req_spec spec; /* every string in it is owned */
	struct http1_pool *pool;
	char *path;
	char *query; /* canonical, also sent as is */
	int tls;

	unsigned attempts;
	unsigned stale_retries;
	int skew_corrected;
	struct http1_request *http;
	struct event *timer; /* hashing steps, backoff, and the callback */

	/* Checksums of the body, recomputed on each attempt. */
	EVP_MD_CTX *sha256;
	EVP_MD_CTX *md5;
	uLong crc;
	uint64_t hashed;
	unsigned char *hash_buf;
	char payload_hash[65];
	char checksum_value[48];
	char first_payload_hash[65];
	char first_checksum_value[48];
	int hashed_once;

	/* The response of the current attempt. */
	int status;
	uint64_t content_length;
	int sink_mode;
	int sink_errno;
	uint64_t sink_bytes;
	int body_too_large;
	struct evbuffer *body;
	struct http1_header *headers;
	size_t nheaders;

	struct s3_error err;
	s3_req_cb cb;
	void *arg;
	TAILQ_ENTRY(s3_req) link;
};

static void req_send(struct s3_req *req);
static void req_finish(struct s3_req *req);

const char *
s3_resp_header(const struct s3_resp *resp, const char *name)
{
	for (size_t i = 0; i < resp->nheaders; i++)
		if (strcasecmp(resp->headers[i].name, name) == 0)
			return resp->headers[i].value;
	return NULL;
}

void
s3_req_spec_init(struct s3_req_spec *spec, const char *op, const char *method,
		 const char *bucket, const char *key)
{
	memset(spec, 0, sizeof(*spec));
	spec->op = op;
	spec->method = method;
	spec->bucket = bucket;
	spec->key = key;
	spec->body_fd = -1;
	spec->sink_fd = -1;
	spec->checksum = S3_CHECKSUM_NONE;
}

static void
free_headers(struct s3_req *req)
{
	for (size_t i = 0; i < req->nheaders; i++) {
		free(req->headers[i].name);
		free(req->headers[i].value);
	}
	free(req->headers);
	req->headers = NULL;
	req->nheaders = 0;
}

static void
spec_free(struct s3_req_spec *spec)
{
	free((char *)spec->op);
	free((char *)spec->method);
	free((char *)spec->bucket);
	free((char *)spec->key);
	free((char *)spec->detail);
	free((char *)spec->expect_root);
	free((void *)spec->body);
	for (size_t i = 0; i < spec->nquery; i++) {
		free((char *)spec->query[i].name);
		free((char *)spec->query[i].value);
	}
	for (size_t i = 0; i < spec->nheaders; i++) {
		free((char *)spec->headers[i].name);
		free((char *)spec->headers[i].value);
	}
}

static char *
dup_or_null(const char *s, int *failed)
{
	char *copy;

	if (s == NULL)
		return NULL;
	copy = strdup(s);
	if (copy == NULL)
		*failed = 1;
	return copy;
}

/* Copy spec with every string and the memory body owned by the copy. */
static int
spec_copy(struct s3_req_spec *dst, const struct s3_req_spec *src)
{
	int failed = 0;

	*dst = *src;
	dst->op = dup_or_null(src->op, &failed);
	dst->method = dup_or_null(src->method, &failed);
	dst->bucket = dup_or_null(src->bucket, &failed);
	dst->key = dup_or_null(src->key, &failed);
	dst->detail = dup_or_null(src->detail, &failed);
	dst->expect_root = dup_or_null(src->expect_root, &failed);
	dst->body = NULL;
	if (src->body != NULL) {
		void *body = malloc(src->body_len ? src->body_len : 1);

		if (body == NULL)
			failed = 1;
		else
			memcpy(body, src->body, src->body_len);
		dst->body = body;
	}
	for (size_t i = 0; i < src->nquery; i++) {
		dst->query[i].name = dup_or_null(src->query[i].name, &failed);
		dst->query[i].value = dup_or_null(
			src->query[i].value != NULL ? src->query[i].value : "", &failed);
	}
	for (size_t i = 0; i < src->nheaders; i++) {
		dst->headers[i].name = dup_or_null(src->headers[i].name, &failed);
		dst->headers[i].value = dup_or_null(src->headers[i].value, &failed);
	}
	return failed ? ENGINE_ERR_NOMEM : ENGINE_OK;
}

static unsigned char *
hash_buffer_get(struct s3_client *client)
{
	if (client->nspare_hash_buffers > 0)
		return client->spare_hash_buffers[--client->nspare_hash_buffers];
	return malloc(S3_HASH_BUFFER);
}

static void
hash_buffer_put(struct s3_client *client, unsigned char *buf)
{
	size_t max = sizeof(client->spare_hash_buffers) /
		     sizeof(client->spare_hash_buffers[0]);

	if (buf == NULL)
		return;
	if (client->nspare_hash_buffers < max)
		client->spare_hash_buffers[client->nspare_hash_buffers++] = buf;
	else
		free(buf);
}

static void
req_free(struct s3_req *req)
{
	if (req->timer != NULL)
		event_free(req->timer);
	if (req->sha256 != NULL)
		EVP_MD_CTX_free(req->sha256);
	if (req->md5 != NULL)
		EVP_MD_CTX_free(req->md5);
	hash_buffer_put(req->client, req->hash_buf);
	if (req->body != NULL)
		evbuffer_free(req->body);
	free_headers(req);
	spec_free(&req->spec);
	free(req->path);
	free(req->query);
	free(req);
}

static void
req_schedule(struct s3_req *req, double seconds)
{
	struct timeval tv;

	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	evtimer_add(req->timer, &tv);
}

/* Fail without a response: a local error such as an unreadable file. */
static void
req_fail_local(struct s3_req *req, int code, const char *cause)
{
	req->err.code = code;
	req->err.attempts = req->attempts;
	s3_error_format(req->client, &req->err, &req->spec, cause);
	req_finish(req);
}

static void
req_finish(struct s3_req *req)
{
	req->state = REQ_FINISHED;
	req_schedule(req, 0);
}

static void
base64_encode(const unsigned char *in, size_t len, char *out, size_t outlen)
{
	if (outlen < 4 * ((len + 2) / 3) + 1) {
		out[0] = '\0';
		return;
	}
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

/* Hashing of file bodies. */

static int
req_needs_hashing(const struct s3_req *req)
{
	return req->spec.body_fd >= 0 &&
	       (!req->tls || req->spec.checksum != S3_CHECKSUM_NONE);
}

/* One SHA-256 pass serves both the SigV4 payload hash, which is signed
 * over plain HTTP only, and the sha256 checksum. */
static int
req_needs_sha256(const struct s3_req *req)
{
	return !req->tls || req->spec.checksum == S3_CHECKSUM_SHA256;
}

static void
hash_finish(struct s3_req *req)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char sha256[EVP_MAX_MD_SIZE], md5[EVP_MAX_MD_SIZE];
	unsigned int sha256_len = 0, md5_len = 0;

	if (req->sha256 != NULL)
		EVP_DigestFinal_ex(req->sha256, sha256, &sha256_len);
	if (!req->tls) {
		for (unsigned int i = 0; i < 32 && i < sha256_len; i++) {
			req->payload_hash[2 * i] = hex[sha256[i] >> 4];
			req->payload_hash[2 * i + 1] = hex[sha256[i] & 0x0f];
		}
		req->payload_hash[64] = '\0';
	} else {
		snprintf(req->payload_hash, sizeof(req->payload_hash), "%s",
			 SIGV4_UNSIGNED_PAYLOAD);
	}
	req->checksum_value[0] = '\0';
	if (req->spec.checksum == S3_CHECKSUM_CRC32) {
		unsigned char be[4] = {
			(unsigned char)(req->crc >> 24), (unsigned char)(req->crc >> 16),
			(unsigned char)(req->crc >> 8), (unsigned char)req->crc,
		};

		base64_encode(be, 4, req->checksum_value, sizeof(req->checksum_value));
	} else if (req->spec.checksum == S3_CHECKSUM_SHA256) {
		base64_encode(sha256, sha256_len, req->checksum_value,
			      sizeof(req->checksum_value));
	} else if (req->spec.checksum == S3_CHECKSUM_MD5) {
		EVP_DigestFinal_ex(req->md5, md5, &md5_len);
		base64_encode(md5, md5_len, req->checksum_value,
			      sizeof(req->checksum_value));
	}
	hash_buffer_put(req->client, req->hash_buf);
	req->hash_buf = NULL;
}

/* Hash up to HASH_BUDGET bytes; returns 1 when the body is done, 0 when
 * more remains, -1 on a read error (the request has failed). */
static int
hash_step(struct s3_req *req)
{
	uint64_t budget = HASH_BUDGET;
	char cause[512];

	while (req->hashed < req->spec.body_length && budget > 0) {
		uint64_t left = req->spec.body_length - req->hashed;
		size_t n = left < S3_HASH_BUFFER ? (size_t)left : S3_HASH_BUFFER;
		ssize_t got = pread(req->spec.body_fd, req->hash_buf, n,
				    (off_t)(req->spec.body_offset + req->hashed));

		if (got == 0) {
			req_fail_local(req, ENGINE_ERR_IO,
				       "the file is shorter than when the upload "
				       "started (it changed during the upload)");
			return -1;
		}
		if (got < 0) {
			snprintf(cause, sizeof(cause), "cannot read the file: %s",
				 strerror(errno));
			req_fail_local(req, ENGINE_ERR_IO, cause);
			return -1;
		}
		if (req->sha256 != NULL)
			EVP_DigestUpdate(req->sha256, req->hash_buf, (size_t)got);
		if (req->md5 != NULL)
			EVP_DigestUpdate(req->md5, req->hash_buf, (size_t)got);
		if (req->spec.checksum == S3_CHECKSUM_CRC32)
			req->crc = crc32_z(req->crc, req->hash_buf, (size_t)got);
		req->hashed += (uint64_t)got;
		budget -= (uint64_t)got < budget ? (uint64_t)got : budget;
	}
	if (req->hashed < req->spec.body_length)
		return 0;
	hash_finish(req);
	return 1;
}

static int
hash_begin(struct s3_req *req)
{
	req->hashed = 0;
	req->crc = crc32_z(0L, Z_NULL, 0);
	if (req->hash_buf == NULL)
		req->hash_buf = hash_buffer_get(req->client);
	if (req->hash_buf == NULL)
		return ENGINE_ERR_NOMEM;
	if (req_needs_sha256(req)) {
		if (req->sha256 == NULL)
			req->sha256 = EVP_MD_CTX_new();
		if (req->sha256 == NULL ||
		    EVP_DigestInit_ex(req->sha256, EVP_sha256(), NULL) != 1)
			return ENGINE_ERR_NOMEM;
	}
	if (req->spec.checksum == S3_CHECKSUM_MD5) {
		if (req->md5 == NULL)
			req->md5 = EVP_MD_CTX_new();
		if (req->md5 == NULL ||
		    EVP_DigestInit_ex(req->md5, EVP_md5(), NULL) != 1)
			return ENGINE_ERR_NOMEM;
	}
	return ENGINE_OK;
}

/* After hashing: a retry must send what the first attempt sent, or the
 * object would mix old and new file contents. */
static void
hash_done(struct s3_req *req)
{
	if (!req->hashed_once) {
		memcpy(req->first_payload_hash, req->payload_hash,
		       sizeof(req->payload_hash));
		memcpy(req->first_checksum_value, req->checksum_value,
		       sizeof(req->checksum_value));
		req->hashed_once = 1;
	} else if (strcmp(req->first_payload_hash, req->payload_hash) != 0 ||
		   strcmp(req->first_checksum_value, req->checksum_value) != 0) {
		req_fail_local(req, ENGINE_ERR_IO,
			       "the file changed while it was being uploaded "
			       "(its checksum differs between attempts)");
		return;
	}
	req_send(req);
}

/* Attempts. */

static void
req_attempt(struct s3_req *req)
{
	int rc;

	req->status = 0;
	req->sink_mode = 0;
	req->sink_errno = 0;
	req->sink_bytes = 0;
	req->body_too_large = 0;
	evbuffer_drain(req->body, evbuffer_get_length(req->body));
	free_headers(req);

	if (req->spec.sink_fd >= 0 && ftruncate(req->spec.sink_fd, 0) != 0) {
		char cause[256];

		snprintf(cause, sizeof(cause), "cannot truncate the output file: %s",
			 strerror(errno));
		req_fail_local(req, ENGINE_ERR_IO, cause);
		return;
	}
	if (!req_needs_hashing(req)) {
		if (req->spec.body != NULL && !req->tls)
			sigv4_sha256_hex(req->spec.body, req->spec.body_len,
					 req->payload_hash);
		else if (req->spec.body_fd < 0 && req->spec.body == NULL && !req->tls)
			snprintf(req->payload_hash, sizeof(req->payload_hash), "%s",
				 SIGV4_EMPTY_SHA256);
		else
			snprintf(req->payload_hash, sizeof(req->payload_hash), "%s",
				 SIGV4_UNSIGNED_PAYLOAD);
		req_send(req);
		return;
	}
	rc = hash_begin(req);
	if (rc != ENGINE_OK) {
		req_fail_local(req, rc, "out of memory");
		return;
	}
	req->state = REQ_HASHING;
	req_schedule(req, 0);
}

static int
http_on_response(void *arg, const struct http1_response *resp)
{
	struct s3_req *req = arg;

	const char *length = http1_response_header(resp, "Content-Length");

	req->status = resp->status;
	req->content_length = length != NULL ? strtoull(length, NULL, 10) : 0;
	req->sink_mode = req->spec.sink_fd >= 0 && resp->status >= 200 &&
			 resp->status < 300;
	return 0;
}

static int
http_on_body(void *arg, const void *data, size_t len)
{
	struct s3_req *req = arg;

	if (req->sink_mode) {
		const char *p = data;
		size_t left = len;

		while (left > 0) {
			ssize_t n = pwrite(req->spec.sink_fd, p, left,
					   (off_t)req->sink_bytes);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				req->sink_errno = n < 0 ? errno : EIO;
				return -1;
			}
			p += n;
			left -= (size_t)n;
			req->sink_bytes += (uint64_t)n;
		}
		if (req->spec.progress != NULL)
			req->spec.progress(req->arg, req->sink_bytes,
					   req->content_length);
		return 0;
	}
	if (req->status >= 200 && req->status < 300) {
		if (evbuffer_get_length(req->body) + len > MAX_XML_BODY) {
			req->body_too_large = 1;
			return -1;
		}
	} else if (evbuffer_get_length(req->body) + len > MAX_ERROR_BODY) {
		return 0; /* the start of an error body is enough */
	}
	return evbuffer_add(req->body, data, len) == 0 ? 0 : -1;
}

static void
http_on_progress(void *arg, uint64_t bytes)
{
	struct s3_req *req = arg;

	if (req->spec.progress != NULL)
		req->spec.progress(req->arg, bytes, req->spec.body_length);
}

static double
backoff_delay(const struct s3_req *req)
{
	double delay = req->client->opts.retry_base_delay;

	for (unsigned i = 1; i < req->attempts && delay < req->client->opts.retry_max_delay; i++)
		delay *= 2;
	if (delay > req->client->opts.retry_max_delay)
		delay = req->client->opts.retry_max_delay;
	/* Equal jitter: between half and all of the delay, so parts that
	 * failed together do not retry together. */
	return delay / 2 + delay / 2 * ((double)random() / (double)RAND_MAX);
}

static void
req_retry_or_fail(struct s3_req *req, int code, int retryable, const char *cause)
{
	unsigned max = req->spec.max_attempts ? req->spec.max_attempts
					      : req->client->opts.max_attempts;

	req->err.code = code;
	if (retryable && req->attempts < max) {
		double delay = backoff_delay(req);

		log_warn(req->prefix, "%s s3://%s/%s%s%s%s: %s; retrying in %.2f s "
			 "(attempt %u of %u)",
			 req->spec.op, req->spec.bucket ? req->spec.bucket : "",
			 req->spec.key ? req->spec.key : "",
			 req->spec.detail ? " (" : "",
			 req->spec.detail ? req->spec.detail : "",
			 req->spec.detail ? ")" : "", cause, delay,
			 req->attempts + 1, max);
		req->state = REQ_BACKOFF;
		req_schedule(req, delay);
		return;
	}
	req->err.attempts = req->attempts;
	s3_error_format(req->client, &req->err, &req->spec, cause);
	req_finish(req);
}

/* Parse S3's time formats: ISO 8601 ("2013-05-24T00:20:00Z", maybe with
 * fractions) from <ServerTime>, or an HTTP date from the Date header. */
static int
parse_server_time(const char *iso, const char *http_date, time_t *out)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (iso != NULL &&
	    sscanf(iso, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
		   &tm.tm_hour, &tm.tm_min, &tm.tm_sec) == 6) {
		tm.tm_year -= 1900;
		tm.tm_mon -= 1;
		*out = timegm(&tm);
		return 0;
	}
	memset(&tm, 0, sizeof(tm));
	if (http_date != NULL) {
		const char *end = strptime(http_date, "%a, %d %b %Y %H:%M:%S", &tm);

		if (end != NULL) {
			*out = timegm(&tm);
			return 0;
		}
	}
	return -1;
}

/* RequestTimeTooSkewed: take the server's time as the client's clock from
 * now on.  Returns 1 when the offset changed. */
static int
correct_clock(struct s3_req *req, const char *body, size_t len)
{
	struct s3_client *client = req->client;
	char *server_time = s3_xml_text(body, len, "ServerTime");
	const char *date = NULL;
	time_t server;
	long offset;
	int changed = 0;

	for (size_t i = 0; i < req->nheaders; i++)
		if (strcasecmp(req->headers[i].name, "Date") == 0)
			date = req->headers[i].value;
	if (parse_server_time(server_time, date, &server) == 0) {
		offset = (long)(server - time(NULL));
		changed = offset != client->clock_offset;
		if (changed)
			log_warn(req->prefix,
				 "RequestTimeTooSkewed: the server's clock is %+ld s "
				 "from this host's; signing with the server's time "
				 "from now on (offset was %+ld s)",
				 offset, client->clock_offset);
		client->clock_offset = offset;
	}
	free(server_time);
	return changed;
}

static int
s3_code_is_retryable(const char *code)
{
	static const char *const codes[] = {
		"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout",
		/* The body arrived damaged; sending it again fixes that. */
		"BadDigest", "XAmzContentSHA256Mismatch", "IncompleteBody",
		"OperationAborted",
	};

	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		if (strcmp(code, codes[i]) == 0)
			return 1;
	return 0;
}

static int
status_is_retryable(int status)
{
	return status == 429 || status == 500 || status == 502 || status == 503 ||
	       status == 504;
}

/* Copy the message of an XML error body, or a printable start of any other
 * body, for the cause. */
static void
describe_error_body(const char *body, size_t len, char *code, size_t codelen,
		    char *message, size_t msglen)
{
	char root[64];
	char *text;

	code[0] = '\0';
	message[0] = '\0';
	if (s3_xml_root_name(body, len, root, sizeof(root)) &&
	    strcmp(root, "Error") == 0) {
		text = s3_xml_text(body, len, "Code");
		if (text != NULL)
			snprintf(code, codelen, "%s", text);
		free(text);
		text = s3_xml_text(body, len, "Message");
		if (text != NULL)
			snprintf(message, msglen, "%s", text);
		free(text);
		return;
	}
	size_t o = 0;
	for (size_t i = 0; i < len && o + 1 < msglen && o < 120; i++) {
		unsigned char c = (unsigned char)body[i];

		message[o++] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
	}
	message[o] = '\0';
}

static void
http_on_done(void *arg, enum http1_result result,
	     const struct http1_response *resp, const char *message)
{
	struct s3_req *req = arg;
	char cause[1536], code[64], text[1024];
	const char *body;
	size_t len;

	int reused = req->http != NULL && http1_request_reused_connection(req->http);
	int response_started =
		req->http != NULL && http1_request_response_started(req->http);

	/* The pool frees the HTTP request when this returns. */
	req->http = NULL;
	if (result == HTTP1_ERR_ABORTED && req->sink_errno != 0) {
		snprintf(cause, sizeof(cause), "cannot write the downloaded data: %s",
			 strerror(req->sink_errno));
		req_fail_local(req, ENGINE_ERR_IO, cause);
		return;
	}
	if (result == HTTP1_ERR_ABORTED && req->body_too_large) {
		snprintf(cause, sizeof(cause),
			 "the response body is larger than %d MiB",
			 MAX_XML_BODY / (1024 * 1024));
		req_fail_local(req, ENGINE_ERR_PROTOCOL, cause);
		return;
	}
	if (result != HTTP1_OK) {
		int stale = result == HTTP1_ERR_CLOSED && reused && !response_started;

		snprintf(cause, sizeof(cause), "%s",
			 message != NULL ? message : http1_result_name(result));
		if (stale && req->stale_retries < MAX_STALE_RETRIES) {
			/* The server closed a keep-alive connection just as
			 * the request went out: it never saw it. */
			log_debug(req->prefix, "%s; sending again on a new connection",
				  cause);
			req->stale_retries++;
			req->attempts--;
			req_attempt(req);
			return;
		}
		switch (result) {
		case HTTP1_ERR_TLS_VERIFY:
			req_retry_or_fail(req, ENGINE_ERR_TLS, 0, cause);
			return;
		case HTTP1_ERR_BODY:
		case HTTP1_ERR_NOMEM:
			req_fail_local(req, ENGINE_ERR_IO, cause);
			return;
		case HTTP1_ERR_PROTOCOL:
			req_retry_or_fail(req, ENGINE_ERR_PROTOCOL, 1, cause);
			return;
		default:
			req_retry_or_fail(req, ENGINE_ERR_IO, 1, cause);
			return;
		}
	}

	/* Keep the headers for the callback. */
	req->headers = calloc(resp->nheaders ? resp->nheaders : 1,
			      sizeof(*req->headers));
	if (req->headers == NULL) {
		req_fail_local(req, ENGINE_ERR_NOMEM, "out of memory");
		return;
	}
	for (size_t i = 0; i < resp->nheaders; i++) {
		req->headers[i].name = strdup(resp->headers[i].name);
		req->headers[i].value = strdup(resp->headers[i].value);
		req->nheaders++;
		if (req->headers[i].name == NULL || req->headers[i].value == NULL) {
			req_fail_local(req, ENGINE_ERR_NOMEM, "out of memory");
			return;
		}
	}
	if (evbuffer_add(req->body, "", 1) != 0) {
		req_fail_local(req, ENGINE_ERR_NOMEM, "out of memory");
		return;
	}
	len = evbuffer_get_length(req->body) - 1;
	body = (const char *)evbuffer_pullup(req->body, -1);
	req->err.http_status = resp->status;

	if (resp->status >= 200 && resp->status < 300) {
		char root[64] = "";

		if (req->spec.expect_root == NULL) {
			req->err.code = ENGINE_OK;
			req_finish(req);
			return;
		}
		s3_xml_root_name(body, len, root, sizeof(root));
		if (strcmp(root, req->spec.expect_root) == 0 &&
		    s3_xml_has_end_tag(body, len, root)) {
			req->err.code = ENGINE_OK;
			req_finish(req);
			return;
		}
		if (strcmp(root, req->spec.expect_root) == 0) {
			snprintf(cause, sizeof(cause),
				 "HTTP %d with an incomplete <%s> body (no end tag)",
				 resp->status, root);
			req->err.code = ENGINE_ERR_PROTOCOL;
			req->err.attempts = req->attempts;
			s3_error_format(req->client, &req->err, &req->spec, cause);
			req_finish(req);
			return;
		}
		if (strcmp(root, "Error") == 0) {
			/* S3 documents that CompleteMultipartUpload can
			 * return 200 and report a failure in the body. */
			describe_error_body(body, len, code, sizeof(code), text,
					    sizeof(text));
			snprintf(req->err.s3_code, sizeof(req->err.s3_code), "%s", code);
			snprintf(cause, sizeof(cause),
				 "HTTP %d with an error in the body: %s: %s",
				 resp->status, code, text);
			req_retry_or_fail(req, S3_ERR_SERVER,
					  s3_code_is_retryable(code), cause);
			return;
		}
		describe_error_body(body, len, code, sizeof(code), text, sizeof(text));
		snprintf(cause, sizeof(cause),
			 "HTTP %d without the expected <%s> in the body (%s)",
			 resp->status, req->spec.expect_root,
			 len == 0 ? "empty body" : text);
		req->err.code = ENGINE_ERR_PROTOCOL;
		req->err.attempts = req->attempts;
		s3_error_format(req->client, &req->err, &req->spec, cause);
		req_finish(req);
		return;
	}

	describe_error_body(body, len, code, sizeof(code), text, sizeof(text));
	snprintf(req->err.s3_code, sizeof(req->err.s3_code), "%s", code);
	if (code[0] != '\0')
		snprintf(cause, sizeof(cause), "HTTP %d %s: %s", resp->status, code,
			 text);
	else
		snprintf(cause, sizeof(cause), "HTTP %d %s%s%s", resp->status,
			 resp->reason, len > 0 ? ": " : "", text);
	if (strcmp(code, "RequestTimeTooSkewed") == 0 && !req->skew_corrected) {
		req->skew_corrected = 1;
		correct_clock(req, body, len);
		req->attempts--;
		req_attempt(req);
		return;
	}
	req_retry_or_fail(req, S3_ERR_SERVER,
			  status_is_retryable(resp->status) ||
				  s3_code_is_retryable(code),
			  cause);
}

static const struct http1_request_ops http_ops = {
	.on_response = http_on_response,
	.on_body = http_on_body,
	.on_done = http_on_done,
	.on_progress = http_on_progress,
};

static void
req_send(struct s3_req *req)
{
	struct s3_client *client = req->client;
	struct sigv4_param headers[16];
	struct sigv4_request sreq;
	struct sigv4_signature sig;
	char amz_date[17], day[9];
	char *target = NULL;
	const char *checksum_header;
	time_t now = time(NULL) + client->clock_offset;
	size_t n = 0;
	int rc;

	sigv4_format_date(now, amz_date, day);
	headers[n++] = (struct sigv4_param){"host", http1_pool_host_header(req->pool)};
	headers[n++] = (struct sigv4_param){"x-amz-content-sha256", req->payload_hash};
	headers[n++] = (struct sigv4_param){"x-amz-date", amz_date};
	if (client->creds.session_token != NULL)
		headers[n++] = (struct sigv4_param){"x-amz-security-token",
						    client->creds.session_token};
	checksum_header = s3_checksum_header(req->spec.checksum);
	if (req->spec.body_fd >= 0 && req->checksum_value[0] != '\0' &&
	    checksum_header != NULL)
		headers[n++] = (struct sigv4_param){checksum_header, req->checksum_value};
	for (size_t i = 0; i < req->spec.nheaders; i++)
		headers[n++] = req->spec.headers[i];

	sreq = (struct sigv4_request){
		.method = req->spec.method,
		.canonical_uri = req->path,
		.query = req->spec.query,
		.nquery = req->spec.nquery,
		.headers = headers,
		.nheaders = n,
		.payload_hash = req->payload_hash,
		.region = client->cfg.region,
		.service = "s3",
		.date = now,
	};
	rc = sigv4_sign(&client->creds, &sreq, &sig);
	if (rc != ENGINE_OK) {
		req_fail_local(req, rc, "cannot sign the request");
		return;
	}
	if (req->query[0] != '\0') {
		if (asprintf(&target, "%s?%s", req->path, req->query) < 0)
			target = NULL;
	} else {
		target = strdup(req->path);
	}
	req->http = target != NULL ? http1_request_new(req->spec.method, target,
						       &http_ops, req)
				   : NULL;
	free(target);
	if (req->http == NULL) {
		sigv4_signature_free(&sig);
		req_fail_local(req, ENGINE_ERR_NOMEM, "out of memory");
		return;
	}
	rc = ENGINE_OK;
	/* host is added by the pool. */
	for (size_t i = 1; i < n && rc == ENGINE_OK; i++)
		rc = http1_request_add_header(req->http, headers[i].name,
					      headers[i].value);
	if (rc == ENGINE_OK)
		rc = http1_request_add_header(req->http, "Authorization",
					      sig.authorization);
	sigv4_signature_free(&sig);
	if (rc == ENGINE_OK && req->spec.body != NULL)
		rc = http1_request_set_body(req->http, req->spec.body,
					    req->spec.body_len);
	else if (rc == ENGINE_OK && req->spec.body_fd >= 0)
		rc = http1_request_set_body_file(req->http, req->spec.body_fd,
						 req->spec.body_offset,
						 req->spec.body_length);
	if (rc != ENGINE_OK) {
		http1_request_free(req->http);
		req->http = NULL;
		req_fail_local(req, rc, rc == ENGINE_ERR_INVALID
						? "invalid header value"
						: "out of memory");
		return;
	}
	req->attempts++;
	req->state = REQ_SENDING;
	log_debug(req->prefix, "%s %s (attempt %u)", req->spec.op, req->path,
		  req->attempts);
	http1_pool_submit(req->pool, req->http);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct s3_req *req = arg;
	struct s3_client *client = req->client;
	struct s3_resp resp;

	switch (req->state) {
	case REQ_HASHING:
		switch (hash_step(req)) {
		case 0:
			req_schedule(req, 0);
			break;
		case 1:
			hash_done(req);
			break;
		default:
			break;
		}
		return;
	case REQ_BACKOFF:
		req_attempt(req);
		return;
	case REQ_SENDING:
		return;
	case REQ_FINISHED:
		break;
	}

	memset(&resp, 0, sizeof(resp));
	resp.status = req->status;
	resp.headers = req->headers;
	resp.nheaders = req->nheaders;
	if (evbuffer_get_length(req->body) == 0)
		evbuffer_add(req->body, "", 1);
	resp.body = (const char *)evbuffer_pullup(req->body, -1);
	resp.body_len = strlen(resp.body);
	resp.sink_bytes = req->sink_bytes;
	snprintf(resp.checksum_value, sizeof(resp.checksum_value), "%s",
		 req->checksum_value);
	TAILQ_REMOVE(&client->reqs, req, link);
	req->cb(req->arg, &req->err, &resp);
	req_free(req);
}

struct s3_req *
s3_req_start(struct s3_client *client, const struct s3_req_spec *spec,
	     s3_req_cb cb, void *arg)
{
	struct s3_req *req = calloc(1, sizeof(*req));
	char err[512];

	if (req == NULL)
		return NULL;
	req->client = client;
	req->id = ++client->next_req_id;
	snprintf(req->prefix, sizeof(req->prefix), "[s3 %u]", req->id);
	req->cb = cb;
	req->arg = arg;
	if (spec_copy(&req->spec, spec) != ENGINE_OK) {
		req_free(req);
		return NULL;
	}
	req->timer = evtimer_new(client->base, timer_cb, req);
	req->body = evbuffer_new();
	req->query = sigv4_canonical_query(spec->query, spec->nquery);
	if (req->timer == NULL || req->body == NULL || req->query == NULL) {
		req_free(req);
		return NULL;
	}
	TAILQ_INSERT_TAIL(&client->reqs, req, link);
	if (s3_client_route(client, spec->bucket, spec->key, &req->pool, &req->path,
			    err, sizeof(err)) != ENGINE_OK) {
		req_fail_local(req, ENGINE_ERR_CONFIG, err);
		return req;
	}
	req->tls = http1_pool_url(req->pool)->tls;
	req_attempt(req);
	return req;
}

void
s3_req_cancel(struct s3_req *req)
{
	if (req == NULL)
		return;
	if (req->http != NULL)
		http1_request_cancel(req->http);
	TAILQ_REMOVE(&req->client->reqs, req, link);
	req_free(req);
}
