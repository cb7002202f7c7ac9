/* AWS Signature Version 4 as S3 applies it (see sigv4.h).  The algorithm is
 * the one in the S3 API reference, "Authenticating Requests (AWS Signature
 * Version 4)": S3 paths are encoded once and never normalized, unlike other
 * AWS services. */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "sigv4.h"
#include "util.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
/* The maximum validity of a presigned URL: seven days, in seconds. */
#define SIGV4_MAX_EXPIRES 604800

/* A growable NUL-terminated string.  A failed append sets failed and leaves
 * the text as it was. */
struct strbuf {
	char *data;
	size_t len;
	size_t cap;
	int failed;
};

static void
sb_append(struct strbuf *sb, const char *text, size_t n)
{
	if (sb->failed)
		return;
	if (sb->len + n + 1 > sb->cap) {
		size_t cap = sb->cap ? sb->cap : 256;
		char *grown;

		while (cap < sb->len + n + 1)
			cap *= 2;
		grown = realloc(sb->data, cap);
		if (grown == NULL) {
			sb->failed = 1;
			return;
		}
		sb->data = grown;
		sb->cap = cap;
	}
	memcpy(sb->data + sb->len, text, n);
	sb->len += n;
	sb->data[sb->len] = '\0';
}

static void
sb_puts(struct strbuf *sb, const char *text)
{
	sb_append(sb, text, strlen(text));
}

/* Return the finished string, or NULL (and free it) after a failure. */
static char *
sb_finish(struct strbuf *sb)
{
	if (sb->failed) {
		free(sb->data);
		return NULL;
	}
	if (sb->data == NULL)
		return strdup("");
	return sb->data;
}

void
sigv4_format_date(time_t date, char amz_date[17], char day[9])
{
	struct tm tm;

	gmtime_r(&date, &tm);
	strftime(amz_date, 17, "%Y%m%dT%H%M%SZ", &tm);
	strftime(day, 9, "%Y%m%d", &tm);
}

static int
is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
	       c == '~';
}

char *
sigv4_uri_encode(const char *in, int keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(in);
	char *out = malloc(3 * n + 1);
	size_t o = 0;

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];

		if (is_unreserved(c) || (keep_slash && c == '/')) {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 0x0f];
		}
	}
	out[o] = '\0';
	return out;
}

void
sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
	for (unsigned int i = 0; i < mdlen && i < 32; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 0x0f];
	}
	out[64] = '\0';
}

static void
hmac_sha256(const void *key, size_t keylen, const char *msg,
	    unsigned char out[32])
{
	unsigned int outlen = 32;

	HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg,
	     strlen(msg), out, &outlen);
}

struct encoded_pair {
	char *name;
	char *value;
};

static int
compare_pairs(const void *a, const void *b)
{
	const struct encoded_pair *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c != 0 ? c : strcmp(x->value, y->value);
}

char *
sigv4_canonical_query(const struct sigv4_param *params, size_t n)
{
	struct encoded_pair *pairs = calloc(n ? n : 1, sizeof(*pairs));
	struct strbuf sb = {0};
	char *result = NULL;
	size_t i;

	if (pairs == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		pairs[i].name = sigv4_uri_encode(params[i].name, 0);
		pairs[i].value = sigv4_uri_encode(
			params[i].value != NULL ? params[i].value : "", 0);
		if (pairs[i].name == NULL || pairs[i].value == NULL)
			goto out;
	}
	qsort(pairs, n, sizeof(*pairs), compare_pairs);
	for (i = 0; i < n; i++) {
		if (i > 0)
			sb_puts(&sb, "&");
		sb_puts(&sb, pairs[i].name);
		sb_puts(&sb, "=");
		sb_puts(&sb, pairs[i].value);
	}
	result = sb_finish(&sb);
	sb.data = NULL;
out:
	free(sb.data);
	for (i = 0; i < n; i++) {
		free(pairs[i].name);
		free(pairs[i].value);
	}
	free(pairs);
	return result;
}

/* One header in canonical form: lowercase name, value trimmed with inner
 * runs of spaces collapsed to one (the "Trimall" rule). */
struct canonical_header {
	char *name;
	char *value;
};

static int
compare_headers(const void *a, const void *b)
{
	const struct canonical_header *x = a, *y = b;

	return strcmp(x->name, y->name);
}

static char *
lowercase_copy(const char *s)
{
	char *copy = strdup(s);

	if (copy != NULL)
		for (char *p = copy; *p != '\0'; p++)
			*p = (char)tolower((unsigned char)*p);
	return copy;
}

static char *
trimall_copy(const char *s)
{
	char *copy = malloc(strlen(s) + 1);
	size_t o = 0;
	int pending_space = 0;

	if (copy == NULL)
		return NULL;
	while (*s == ' ' || *s == '\t')
		s++;
	for (; *s != '\0'; s++) {
		if (*s == ' ' || *s == '\t') {
			pending_space = 1;
			continue;
		}
		if (pending_space && o > 0)
			copy[o++] = ' ';
		pending_space = 0;
		copy[o++] = *s;
	}
	copy[o] = '\0';
	return copy;
}

/* Append the canonical headers block ("name:value\n" per name, repeated
 * names joined with ',') to canon and the signed header list to names. */
static int
canonical_headers(const struct sigv4_param *headers, size_t n,
		  struct strbuf *canon, struct strbuf *names)
{
	struct canonical_header *sorted = calloc(n ? n : 1, sizeof(*sorted));
	int rc = ENGINE_ERR_NOMEM;
	size_t i;

	if (sorted == NULL)
		return ENGINE_ERR_NOMEM;
	for (i = 0; i < n; i++) {
		sorted[i].name = lowercase_copy(headers[i].name);
		sorted[i].value = trimall_copy(headers[i].value);
		if (sorted[i].name == NULL || sorted[i].value == NULL)
			goto out;
	}
	/* A stable sort (insertion sort) keeps repeated names in the order
	 * given, which decides how their values are joined. */
	for (i = 1; i < n; i++) {
		struct canonical_header h = sorted[i];
		size_t j = i;

		while (j > 0 && compare_headers(&sorted[j - 1], &h) > 0) {
			sorted[j] = sorted[j - 1];
			j--;
		}
		sorted[j] = h;
	}
	for (i = 0; i < n; i++) {
		int repeat = i > 0 && strcmp(sorted[i - 1].name, sorted[i].name) == 0;

		if (repeat) {
			sb_puts(canon, ",");
		} else {
			if (i > 0) {
				sb_puts(canon, "\n");
				sb_puts(names, ";");
			}
			sb_puts(canon, sorted[i].name);
			sb_puts(canon, ":");
			sb_puts(names, sorted[i].name);
		}
		sb_puts(canon, sorted[i].value);
	}
	if (n > 0)
		sb_puts(canon, "\n");
	rc = canon->failed || names->failed ? ENGINE_ERR_NOMEM : ENGINE_OK;
out:
	for (i = 0; i < n; i++) {
		free(sorted[i].name);
		free(sorted[i].value);
	}
	free(sorted);
	return rc;
}

void
sigv4_signature_free(struct sigv4_signature *sig)
{
	free(sig->canonical_request);
	free(sig->string_to_sign);
	free(sig->signed_headers);
	free(sig->credential);
	free(sig->authorization);
	memset(sig, 0, sizeof(*sig));
}

/* Compute everything from the canonical request on.  canonical_query is the
 * query string to sign, already in canonical form. */
static int
sign_with_query(const struct sigv4_credentials *creds,
		const struct sigv4_request *req, const char *canonical_query,
		struct sigv4_signature *sig)
{
	static const char hex[] = "0123456789abcdef";
	struct strbuf canon = {0}, names = {0}, sts = {0}, cred = {0}, auth = {0};
	char amz_date[17], day[9], canon_hash[65];
	unsigned char k_date[32], k_region[32], k_service[32], k_signing[32],
		mac[32];
	char *secret_key = NULL;
	size_t secret_len;
	int rc;

	memset(sig, 0, sizeof(*sig));
	sigv4_format_date(req->date, amz_date, day);

	sb_puts(&canon, req->method);
	sb_puts(&canon, "\n");
	sb_puts(&canon, req->canonical_uri);
	sb_puts(&canon, "\n");
	sb_puts(&canon, canonical_query);
	sb_puts(&canon, "\n");
	rc = canonical_headers(req->headers, req->nheaders, &canon, &names);
	if (rc != ENGINE_OK)
		goto out;
	sb_puts(&canon, "\n");
	sb_append(&canon, names.data ? names.data : "", names.len);
	sb_puts(&canon, "\n");
	sb_puts(&canon, req->payload_hash);
	rc = ENGINE_ERR_NOMEM;
	if (canon.failed)
		goto out;
	sigv4_sha256_hex(canon.data, canon.len, canon_hash);

	sb_puts(&cred, creds->access_key_id);
	sb_puts(&cred, "/");
	sb_puts(&cred, day);
	sb_puts(&cred, "/");
	sb_puts(&cred, req->region);
	sb_puts(&cred, "/");
	sb_puts(&cred, req->service);
	sb_puts(&cred, "/aws4_request");

	sb_puts(&sts, SIGV4_ALGORITHM "\n");
	sb_puts(&sts, amz_date);
	sb_puts(&sts, "\n");
	sb_puts(&sts, day);
	sb_puts(&sts, "/");
	sb_puts(&sts, req->region);
	sb_puts(&sts, "/");
	sb_puts(&sts, req->service);
	sb_puts(&sts, "/aws4_request\n");
	sb_puts(&sts, canon_hash);
	if (sts.failed || cred.failed)
		goto out;

	/* The signing key: HMAC chain over date, region, service and
	 * "aws4_request", keyed first by "AWS4" + secret. */
	secret_len = strlen(creds->secret_access_key) + 4;
	secret_key = malloc(secret_len + 1);
	if (secret_key == NULL)
		goto out;
	snprintf(secret_key, secret_len + 1, "AWS4%s", creds->secret_access_key);
	hmac_sha256(secret_key, secret_len, day, k_date);
	hmac_sha256(k_date, 32, req->region, k_region);
	hmac_sha256(k_region, 32, req->service, k_service);
	hmac_sha256(k_service, 32, "aws4_request", k_signing);
	hmac_sha256(k_signing, 32, sts.data, mac);
	for (int i = 0; i < 32; i++) {
		sig->signature[2 * i] = hex[mac[i] >> 4];
		sig->signature[2 * i + 1] = hex[mac[i] & 0x0f];
	}
	sig->signature[64] = '\0';

	sb_puts(&auth, SIGV4_ALGORITHM " Credential=");
	sb_append(&auth, cred.data, cred.len);
	sb_puts(&auth, ",SignedHeaders=");
	sb_append(&auth, names.data ? names.data : "", names.len);
	sb_puts(&auth, ",Signature=");
	sb_puts(&auth, sig->signature);
	if (auth.failed)
		goto out;

	sig->canonical_request = sb_finish(&canon);
	sig->string_to_sign = sb_finish(&sts);
	sig->signed_headers = sb_finish(&names);
	sig->credential = sb_finish(&cred);
	sig->authorization = sb_finish(&auth);
	canon.data = sts.data = names.data = cred.data = auth.data = NULL;
	if (sig->canonical_request == NULL || sig->string_to_sign == NULL ||
	    sig->signed_headers == NULL || sig->credential == NULL ||
	    sig->authorization == NULL) {
		sigv4_signature_free(sig);
		goto out;
	}
	rc = ENGINE_OK;
out:
	if (secret_key != NULL) {
		OPENSSL_cleanse(secret_key, secret_len);
		free(secret_key);
	}
	OPENSSL_cleanse(k_date, sizeof(k_date));
	OPENSSL_cleanse(k_signing, sizeof(k_signing));
	free(canon.data);
	free(names.data);
	free(sts.data);
	free(cred.data);
	free(auth.data);
	return rc;
}

static int
request_is_complete(const struct sigv4_credentials *creds,
		    const struct sigv4_request *req)
{
	return creds->access_key_id != NULL && *creds->access_key_id != '\0' &&
	       creds->secret_access_key != NULL && req->method != NULL &&
	       req->canonical_uri != NULL && req->payload_hash != NULL &&
	       req->region != NULL && req->service != NULL;
}

int
sigv4_sign(const struct sigv4_credentials *creds,
	   const struct sigv4_request *req, struct sigv4_signature *sig)
{
	char *query;
	int rc;

	memset(sig, 0, sizeof(*sig));
	if (!request_is_complete(creds, req))
		return ENGINE_ERR_INVALID;
	query = sigv4_canonical_query(req->query, req->nquery);
	if (query == NULL)
		return ENGINE_ERR_NOMEM;
	rc = sign_with_query(creds, req, query, sig);
	free(query);
	return rc;
}

int
sigv4_presign(const struct sigv4_credentials *creds,
	      const struct sigv4_request *req, unsigned expires, char **query,
	      struct sigv4_signature *sig)
{
	struct sigv4_param *params = NULL;
	struct strbuf credential = {0}, signed_names = {0}, header_block = {0};
	char amz_date[17], day[9], expires_text[16];
	char *canonical = NULL;
	size_t n = 0;
	int has_token = creds->session_token != NULL && *creds->session_token;
	int rc = ENGINE_ERR_NOMEM;

	*query = NULL;
	memset(sig, 0, sizeof(*sig));
	if (!request_is_complete(creds, req) || expires == 0 ||
	    expires > SIGV4_MAX_EXPIRES)
		return ENGINE_ERR_INVALID;
	sigv4_format_date(req->date, amz_date, day);
	snprintf(expires_text, sizeof(expires_text), "%u", expires);

	sb_puts(&credential, creds->access_key_id);
	sb_puts(&credential, "/");
	sb_puts(&credential, day);
	sb_puts(&credential, "/");
	sb_puts(&credential, req->region);
	sb_puts(&credential, "/");
	sb_puts(&credential, req->service);
	sb_puts(&credential, "/aws4_request");
	/* The signed header list goes into the query, so it is computed
	 * before the signature itself. */
	if (canonical_headers(req->headers, req->nheaders, &header_block,
			      &signed_names) != ENGINE_OK ||
	    credential.failed)
		goto out;

	params = calloc(req->nquery + 6, sizeof(*params));
	if (params == NULL)
		goto out;
	for (size_t i = 0; i < req->nquery; i++)
		params[n++] = req->query[i];
	params[n++] = (struct sigv4_param){"X-Amz-Algorithm", SIGV4_ALGORITHM};
	params[n++] = (struct sigv4_param){"X-Amz-Credential", credential.data};
	params[n++] = (struct sigv4_param){"X-Amz-Date", amz_date};
	params[n++] = (struct sigv4_param){"X-Amz-Expires", expires_text};
	params[n++] = (struct sigv4_param){"X-Amz-SignedHeaders",
					   signed_names.data ? signed_names.data : ""};
	if (has_token)
		params[n++] = (struct sigv4_param){"X-Amz-Security-Token",
						   creds->session_token};
	canonical = sigv4_canonical_query(params, n);
	if (canonical == NULL)
		goto out;
	rc = sign_with_query(creds, req, canonical, sig);
	if (rc != ENGINE_OK)
		goto out;

	size_t qlen = strlen(canonical) + sizeof("&X-Amz-Signature=") + 64;
	*query = malloc(qlen);
	if (*query == NULL) {
		sigv4_signature_free(sig);
		rc = ENGINE_ERR_NOMEM;
		goto out;
	}
	snprintf(*query, qlen, "%s&X-Amz-Signature=%s", canonical, sig->signature);
out:
	free(canonical);
	free(params);
	free(credential.data);
	free(signed_names.data);
	free(header_block.data);
	return rc;
}
