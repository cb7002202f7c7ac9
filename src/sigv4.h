#ifndef MFMODAL_SIGV4_H
#define MFMODAL_SIGV4_H

/* AWS Signature Version 4 for S3: canonical requests, strings to sign,
 * signatures and presigned URLs.  Pure functions with no I/O, so the unit
 * tests can replay the worked examples of the S3 API reference. */

#include <stddef.h>
#include <time.h>

/* x-amz-content-sha256 values with a meaning of their own. */
#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
#define SIGV4_EMPTY_SHA256 \
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* A query parameter or a header: name and value as they are, unencoded. */
struct sigv4_param {
	const char *name;
	const char *value;
};

struct sigv4_credentials {
	const char *access_key_id;
	const char *secret_access_key;
	const char *session_token; /* NULL or "" when there is none */
};

/* The parts of a request that one signature covers. */
struct sigv4_request {
	const char *method;
	/* The path exactly as sent, already encoded with sigv4_uri_encode(). */
	const char *canonical_uri;
	const struct sigv4_param *query;
	size_t nquery;
	/* Every header to sign, including host, x-amz-date and (for S3)
	 * x-amz-content-sha256.  Names may be in any case. */
	const struct sigv4_param *headers;
	size_t nheaders;
	/* Hex SHA-256 of the body, or SIGV4_UNSIGNED_PAYLOAD. */
	const char *payload_hash;
	const char *region;
	const char *service;
	time_t date; /* UTC seconds; must match the x-amz-date header */
};

/* The intermediate and final strings of one signature.  Each string is
 * allocated here and released by sigv4_signature_free(). */
struct sigv4_signature {
	char *canonical_request;
	char *string_to_sign;
	char *signed_headers;  /* "host;range;x-amz-date" */
	char *credential;      /* "AKID/20130524/us-east-1/s3/aws4_request" */
	char *authorization;   /* the Authorization header value */
	char signature[65];    /* lowercase hex */
};

/* Write the request's date as "20130524T000000Z" (16 characters) and its day
 * as "20130524" (8 characters). */
void sigv4_format_date(time_t date, char amz_date[17], char day[9]);

/* Percent-encode bytes as S3 expects: everything except A-Z a-z 0-9 - . _ ~
 * becomes %XX with uppercase hex, and '/' stays as it is when keep_slash is
 * set (object key paths) or becomes %2F otherwise (query names and values).
 * Returns a malloc'ed string or NULL when out of memory. */
char *sigv4_uri_encode(const char *in, int keep_slash);

/* The canonical query string: each name and value encoded, pairs sorted by
 * encoded name then encoded value, a parameter without a value written as
 * "name=".  This is also the query string the client sends, so that servers
 * which re-read the raw query reach the same signature.  Returns a malloc'ed
 * string ("" when n is 0) or NULL when out of memory. */
char *sigv4_canonical_query(const struct sigv4_param *params, size_t n);

/* Lowercase hex SHA-256 of data. */
void sigv4_sha256_hex(const void *data, size_t len, char out[65]);

/* Sign req.  Returns 0, ENGINE_ERR_NOMEM or ENGINE_ERR_INVALID (a missing
 * field); on failure *sig holds nothing to free. */
int sigv4_sign(const struct sigv4_credentials *creds,
	       const struct sigv4_request *req, struct sigv4_signature *sig);

/* Presign req for expires seconds (1 to 604800): the signature goes in the
 * query string instead of an Authorization header.  req->headers must
 * contain the host header (and may contain others the user agent will send);
 * req->payload_hash is normally SIGV4_UNSIGNED_PAYLOAD.  On success *query is
 * a malloc'ed query string, without the leading '?', that ends with
 * X-Amz-Signature, and sig holds the intermediate strings. */
int sigv4_presign(const struct sigv4_credentials *creds,
		  const struct sigv4_request *req, unsigned expires,
		  char **query, struct sigv4_signature *sig);

void sigv4_signature_free(struct sigv4_signature *sig);

#endif
