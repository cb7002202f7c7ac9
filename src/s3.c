/* The S3 client: options, endpoints and addressing, part sizing and error
 * messages (see s3.h).  Requests are in s3_request.c, single-object
 * operations in s3_object.c, uploads in s3_multipart.c. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "s3_internal.h"
#include "tls.h"

/* One connection pool per host: a custom endpoint has one, AWS one per
 * virtual-hosted bucket name. */
struct s3_pool_entry {
	char authority[300];
	int tls;
	struct http1_pool *pool;
};

const char *
s3_checksum_name(enum s3_checksum checksum)
{
	switch (checksum) {
	case S3_CHECKSUM_AUTO: return "auto";
	case S3_CHECKSUM_CRC32: return "crc32";
	case S3_CHECKSUM_SHA256: return "sha256";
	case S3_CHECKSUM_MD5: return "md5";
	case S3_CHECKSUM_NONE: return "none";
	}
	return "unknown";
}

int
s3_checksum_parse(const char *name, enum s3_checksum *checksum)
{
	static const enum s3_checksum all[] = {
		S3_CHECKSUM_AUTO, S3_CHECKSUM_CRC32, S3_CHECKSUM_SHA256,
		S3_CHECKSUM_MD5, S3_CHECKSUM_NONE,
	};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (strcasecmp(name, s3_checksum_name(all[i])) == 0) {
			*checksum = all[i];
			return 0;
		}
	}
	return -1;
}

const char *
s3_checksum_algorithm(enum s3_checksum checksum)
{
	switch (checksum) {
	case S3_CHECKSUM_CRC32: return "CRC32";
	case S3_CHECKSUM_SHA256: return "SHA256";
	default: return NULL;
	}
}

const char *
s3_checksum_header(enum s3_checksum checksum)
{
	switch (checksum) {
	case S3_CHECKSUM_CRC32: return "x-amz-checksum-crc32";
	case S3_CHECKSUM_SHA256: return "x-amz-checksum-sha256";
	case S3_CHECKSUM_MD5: return "Content-MD5";
	default: return NULL;
	}
}

void
s3_client_options_default(struct s3_client_options *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->max_connections = 32;
	opts->connect_timeout = 30.0;
	opts->io_timeout = 120.0;
	/* Ten tries with the delay doubling from 0.1 s up to 20 s wait about
	 * 45 s in all before giving up, enough to ride out S3's SlowDown
	 * periods and a restarting server. */
	opts->max_attempts = 10;
	opts->retry_base_delay = 0.1;
	opts->retry_max_delay = 20.0;
}

/* Parse the variable env_name as a number in [min, max].  Returns 1 when
 * it is set, 0 when unset, or -1 when invalid (with err filled). */
static int
env_number(const char *env_name, double min, double max, double *value,
	   char *err, size_t errlen)
{
	const char *text = getenv(env_name);
	char *end;
	double v;

	if (text == NULL || *text == '\0')
		return 0;
	errno = 0;
	v = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !(v >= min && v <= max)) {
		snprintf(err, errlen,
			 "invalid %s '%s': expected a number from %g to %g",
			 env_name, text, min, max);
		return -1;
	}
	*value = v;
	return 1;
}

int
s3_client_options_from_env(struct s3_client_options *opts, char *err,
			   size_t errlen)
{
	double v;
	int rc;

	rc = env_number("MFMODAL_S3_MAX_ATTEMPTS", 1, 100, &v, err, errlen);
	if (rc < 0)
		return ENGINE_ERR_CONFIG;
	if (rc > 0)
		opts->max_attempts = (unsigned)v;
	rc = env_number("MFMODAL_S3_RETRY_BASE_DELAY", 0, 60, &v, err, errlen);
	if (rc < 0)
		return ENGINE_ERR_CONFIG;
	if (rc > 0)
		opts->retry_base_delay = v;
	rc = env_number("MFMODAL_S3_IO_TIMEOUT", 0.1, 86400, &v, err, errlen);
	if (rc < 0)
		return ENGINE_ERR_CONFIG;
	if (rc > 0)
		opts->io_timeout = v;
	return ENGINE_OK;
}

void
s3_upload_options_default(struct s3_upload_options *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->part_size = S3_DEFAULT_PART_SIZE;
	opts->parallelism = S3_DEFAULT_PARALLELISM;
	opts->checksum = S3_CHECKSUM_AUTO;
	opts->max_parts = S3_MAX_PARTS;
}

int
s3_upload_options_from_env(struct s3_upload_options *opts, char *err,
			   size_t errlen)
{
	const char *checksum = getenv("MFMODAL_S3_CHECKSUM");
	double v;
	int rc;

	rc = env_number("MFMODAL_S3_PART_SIZE", 5, 5 * 1024, &v, err, errlen);
	if (rc < 0)
		return ENGINE_ERR_CONFIG;
	if (rc > 0)
		opts->part_size = (uint64_t)(v * 1024 * 1024);
	rc = env_number("MFMODAL_S3_PARALLEL", 1, 256, &v, err, errlen);
	if (rc < 0)
		return ENGINE_ERR_CONFIG;
	if (rc > 0)
		opts->parallelism = (unsigned)v;
	rc = env_number("MFMODAL_S3_MAX_PARTS", 1, S3_MAX_PARTS, &v, err, errlen);
	if (rc < 0)
		return ENGINE_ERR_CONFIG;
	if (rc > 0)
		opts->max_parts = (unsigned)v;
	if (checksum != NULL && *checksum != '\0' &&
	    s3_checksum_parse(checksum, &opts->checksum) != 0) {
		snprintf(err, errlen,
			 "invalid MFMODAL_S3_CHECKSUM '%s': expected auto, crc32, "
			 "sha256, md5 or none",
			 checksum);
		return ENGINE_ERR_CONFIG;
	}
	return ENGINE_OK;
}

int
s3_part_plan(uint64_t size, uint64_t requested, unsigned max_parts,
	     uint64_t *part_size, unsigned *nparts)
{
	const uint64_t mib = 1024 * 1024;
	uint64_t ps = requested < S3_MIN_PART_SIZE ? S3_MIN_PART_SIZE : requested;
	uint64_t n;

	if (max_parts == 0 || max_parts > S3_MAX_PARTS)
		max_parts = S3_MAX_PARTS;
	if (ps > S3_MAX_PART_SIZE)
		ps = S3_MAX_PART_SIZE;
	if (size > S3_MAX_OBJECT_SIZE)
		return ENGINE_ERR_INVALID;
	if (size > ps * (uint64_t)max_parts) {
		/* The smallest whole number of MiB that fits. */
		uint64_t need = (size + max_parts - 1) / max_parts;

		ps = (need + mib - 1) / mib * mib;
		if (ps > S3_MAX_PART_SIZE)
			return ENGINE_ERR_INVALID;
	}
	*part_size = ps;
	if (size < ps) {
		*nparts = 0;
		return ENGINE_OK;
	}
	n = (size + ps - 1) / ps;
	*nparts = (unsigned)n;
	return ENGINE_OK;
}

int
s3_parse_uri(const char *uri, char **bucket, char **key)
{
	const char *start, *slash;

	*bucket = NULL;
	if (key != NULL)
		*key = NULL;
	if (strncmp(uri, "s3://", 5) != 0)
		return -1;
	start = uri + 5;
	slash = strchr(start, '/');
	if (slash == start || *start == '\0')
		return -1;
	*bucket = slash != NULL ? strndup(start, (size_t)(slash - start))
				: strdup(start);
	if (*bucket == NULL)
		return -1;
	if (key != NULL) {
		*key = strdup(slash != NULL ? slash + 1 : "");
		if (*key == NULL) {
			free(*bucket);
			*bucket = NULL;
			return -1;
		}
	}
	return 0;
}

/* Whether bucket can be a DNS label under a TLS wildcard certificate:
 * 3-63 lowercase letters, digits and hyphens, starting and ending with a
 * letter or digit.  Names with dots or capitals go path-style. */
static int
bucket_is_virtual_hostable(const char *bucket)
{
	size_t n = strlen(bucket);

	if (n < 3 || n > 63)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = bucket[i];

		if (!(islower((unsigned char)c) || isdigit((unsigned char)c) || c == '-'))
			return 0;
	}
	return bucket[0] != '-' && bucket[n - 1] != '-';
}

static struct http1_pool *
client_pool_for(struct s3_client *client, const struct url *url)
{
	struct s3_pool_entry *grown;
	struct http1_pool_options opts;
	struct http1_pool *pool;

	for (size_t i = 0; i < client->npools; i++)
		if (client->pools[i].tls == url->tls &&
		    strcmp(client->pools[i].authority, url->authority) == 0)
			return client->pools[i].pool;

	http1_pool_options_default(&opts);
	opts.ssl_ctx = client->ssl_ctx;
	opts.connect_timeout = client->opts.connect_timeout;
	opts.io_timeout = client->opts.io_timeout;
	opts.max_connections = client->opts.max_connections;
	pool = http1_pool_new(client->base, client->dns, url, &opts);
	if (pool == NULL)
		return NULL;
	grown = realloc(client->pools, (client->npools + 1) * sizeof(*grown));
	if (grown == NULL) {
		http1_pool_free(pool);
		return NULL;
	}
	client->pools = grown;
	util_strlcpy(grown[client->npools].authority, url->authority,
		     sizeof(grown[client->npools].authority));
	grown[client->npools].tls = url->tls;
	grown[client->npools].pool = pool;
	client->npools++;
	return pool;
}

static char *
join_path(const char *a, const char *b)
{
	char *out;

	if (asprintf(&out, "%s%s", a, b) < 0)
		return NULL;
	return out;
}

int
s3_client_route(struct s3_client *client, const char *bucket, const char *key,
		struct http1_pool **pool, char **path, char *err, size_t errlen)
{
	char *enc_bucket = NULL, *enc_key = NULL, *prefix = NULL;
	struct url url;
	int rc = ENGINE_ERR_NOMEM;

	*pool = NULL;
	*path = NULL;
	enc_key = sigv4_uri_encode(key != NULL ? key : "", 1);
	enc_bucket = sigv4_uri_encode(bucket, 0);
	if (enc_key == NULL || enc_bucket == NULL)
		goto out;

	if (client->custom_endpoint) {
		url = client->endpoint;
	} else {
		const char *suffix = strncmp(client->cfg.region, "cn-", 3) == 0
					     ? "amazonaws.com.cn"
					     : "amazonaws.com";
		char text[512];

		if (bucket_is_virtual_hostable(bucket))
			snprintf(text, sizeof(text), "https://%s.s3.%s.%s", bucket,
				 client->cfg.region, suffix);
		else
			snprintf(text, sizeof(text), "https://s3.%s.%s",
				 client->cfg.region, suffix);
		if (util_parse_url(text, &url, err, errlen) != 0) {
			rc = ENGINE_ERR_CONFIG;
			goto out;
		}
		if (bucket_is_virtual_hostable(bucket)) {
			*path = join_path("/", enc_key);
			goto pool;
		}
	}
	/* Path-style: "/bucket" for bucket operations, "/bucket/key" else. */
	if (asprintf(&prefix, "/%s", enc_bucket) < 0) {
		prefix = NULL;
		goto out;
	}
	*path = key != NULL ? join_path(prefix, "/") : strdup(prefix);
	if (*path != NULL && key != NULL) {
		char *full = join_path(*path, enc_key);

		free(*path);
		*path = full;
	}
pool:
	if (*path == NULL)
		goto out;
	*pool = client_pool_for(client, &url);
	if (*pool == NULL) {
		free(*path);
		*path = NULL;
		goto out;
	}
	rc = ENGINE_OK;
out:
	if (rc == ENGINE_ERR_NOMEM)
		snprintf(err, errlen, "out of memory");
	free(enc_bucket);
	free(enc_key);
	free(prefix);
	return rc;
}

void
s3_client_describe_endpoint(const struct s3_client *client, char *out,
			    size_t outlen)
{
	if (client->custom_endpoint)
		snprintf(out, outlen, "endpoint %s (from %s), region %s",
			 client->cfg.endpoint_url, client->cfg.endpoint_source,
			 client->cfg.region);
	else
		snprintf(out, outlen, "AWS region %s (from %s)", client->cfg.region,
			 client->cfg.region_source);
}

struct s3_client *
s3_client_new(struct event_base *base, struct evdns_base *dns,
	      const struct aws_config *cfg, const struct s3_client_options *opts,
	      char *err, size_t errlen)
{
	struct s3_client *client = calloc(1, sizeof(*client));

	if (client == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	client->base = base;
	client->dns = dns;
	client->opts = *opts;
	TAILQ_INIT(&client->reqs);
	TAILQ_INIT(&client->ops);
	TAILQ_INIT(&client->uploads);
	client->cfg = *cfg;
	client->cfg.access_key_id = strdup(cfg->access_key_id);
	client->cfg.secret_access_key = strdup(cfg->secret_access_key);
	client->cfg.session_token =
		cfg->session_token != NULL ? strdup(cfg->session_token) : NULL;
	client->cfg.endpoint_url =
		cfg->endpoint_url != NULL ? strdup(cfg->endpoint_url) : NULL;
	if (client->cfg.access_key_id == NULL ||
	    client->cfg.secret_access_key == NULL ||
	    (cfg->session_token != NULL && client->cfg.session_token == NULL) ||
	    (cfg->endpoint_url != NULL && client->cfg.endpoint_url == NULL)) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	log_add_secret(client->cfg.secret_access_key);
	log_add_secret(client->cfg.session_token);
	client->creds.access_key_id = client->cfg.access_key_id;
	client->creds.secret_access_key = client->cfg.secret_access_key;
	client->creds.session_token = client->cfg.session_token;

	if (cfg->endpoint_url != NULL) {
		char why[512];

		if (util_parse_url(cfg->endpoint_url, &client->endpoint, why,
				   sizeof(why)) != 0) {
			snprintf(err, errlen, "%s (from %s)", why, cfg->endpoint_source);
			goto fail;
		}
		client->custom_endpoint = 1;
	}
	if (!client->custom_endpoint || client->endpoint.tls) {
		client->ssl_ctx = tls_ctx_new(tls_ca_file(opts->ca_file), "http/1.1",
					      err, errlen);
		if (client->ssl_ctx == NULL)
			goto fail;
	}
	return client;
fail:
	s3_client_free(client);
	return NULL;
}

void
s3_client_free(struct s3_client *client)
{
	struct s3_req *req;

	if (client == NULL)
		return;
	s3_op_free_all(client);
	s3_upload_free_all(client);
	while ((req = TAILQ_FIRST(&client->reqs)) != NULL)
		s3_req_cancel(req);
	for (size_t i = 0; i < client->npools; i++)
		http1_pool_free(client->pools[i].pool);
	for (unsigned i = 0; i < client->nspare_hash_buffers; i++)
		free(client->spare_hash_buffers[i]);
	free(client->pools);
	if (client->ssl_ctx != NULL)
		SSL_CTX_free(client->ssl_ctx);
	aws_config_free(&client->cfg);
	free(client);
}

/* SHA-256 over plain HTTP, because SigV4 already hashes every body there
 * and the checksum reuses that digest.  Over https the payload is unsigned,
 * so CRC32, the cheaper pass, is the checksum.  Requests without a custom
 * endpoint go to AWS over https (s3_client_route()). */
enum s3_checksum
s3_client_default_checksum(const struct s3_client *client)
{
	if (client->custom_endpoint && !client->endpoint.tls)
		return S3_CHECKSUM_SHA256;
	return S3_CHECKSUM_CRC32;
}

long
s3_client_clock_offset(const struct s3_client *client)
{
	return client->clock_offset;
}

void
s3_list_clear(struct s3_list *list)
{
	for (size_t i = 0; i < list->count; i++) {
		free(list->entries[i].key);
		free(list->entries[i].upload_id);
	}
	free(list->entries);
	list->entries = NULL;
	list->count = 0;
}

/* Error messages. */

const char *
s3_error_hint(const struct s3_client *client, const char *code, int status,
	      char *buf, size_t buflen)
{
	char where[600];

	s3_client_describe_endpoint(client, where, sizeof(where));
	if (strcmp(code, "AccessDenied") == 0 || strcmp(code, "AllAccessDisabled") == 0 ||
	    (code[0] == '\0' && status == 403))
		snprintf(buf, buflen,
			 "Check that the credentials from %s allow this operation "
			 "on the bucket and key (IAM policy and bucket policy).",
			 client->cfg.credential_source);
	else if (strcmp(code, "NoSuchBucket") == 0)
		snprintf(buf, buflen,
			 "Check the bucket name, and that the bucket exists at %s.",
			 where);
	else if (strcmp(code, "NoSuchKey") == 0)
		snprintf(buf, buflen,
			 "Check the key: keys are case-sensitive, and a listing of "
			 "the prefix shows what exists.");
	else if (code[0] == '\0' && status == 404)
		snprintf(buf, buflen,
			 "No such key, or no such bucket at %s (a HEAD response "
			 "carries no error code to tell them apart).",
			 where);
	else if (strcmp(code, "NoSuchUpload") == 0)
		snprintf(buf, buflen,
			 "The multipart upload no longer exists: it was completed "
			 "or aborted elsewhere, or a lifecycle rule removed it.");
	else if (strcmp(code, "SignatureDoesNotMatch") == 0)
		snprintf(buf, buflen,
			 "Check the secret access key from %s, and that nothing "
			 "between here and %s rewrites the request (a proxy that "
			 "changes Host or the path breaks the signature).",
			 client->cfg.credential_source, where);
	else if (strcmp(code, "InvalidAccessKeyId") == 0)
		snprintf(buf, buflen,
			 "Check the access key ID from %s: the server at %s does "
			 "not know it.",
			 client->cfg.credential_source, where);
	else if (strcmp(code, "InvalidToken") == 0 ||
		 strcmp(code, "ExpiredToken") == 0 ||
		 strcmp(code, "TokenRefreshRequired") == 0)
		snprintf(buf, buflen,
			 "The session token from %s is invalid or expired: get "
			 "fresh temporary credentials.",
			 client->cfg.credential_source);
	else if (strcmp(code, "RequestTimeTooSkewed") == 0)
		snprintf(buf, buflen,
			 "Check this host's clock: it differs from the server's "
			 "by more than S3 allows (15 minutes), even after the "
			 "correction from the server's time.");
	else if (strcmp(code, "PermanentRedirect") == 0 ||
		 strcmp(code, "AuthorizationHeaderMalformed") == 0 ||
		 strcmp(code, "IllegalLocationConstraintException") == 0 ||
		 status == 301)
		snprintf(buf, buflen,
			 "The bucket is in another region than %s: set AWS_REGION "
			 "to the bucket's region.",
			 client->cfg.region);
	else if (strcmp(code, "EntityTooSmall") == 0 ||
		 strcmp(code, "InvalidPart") == 0 ||
		 strcmp(code, "InvalidPartOrder") == 0)
		snprintf(buf, buflen,
			 "The server rejected the part list; check that it "
			 "supports multipart uploads with these part sizes.");
	else if (strcmp(code, "SlowDown") == 0 || status == 503 || status == 429)
		snprintf(buf, buflen,
			 "The server kept asking for a lower request rate: try "
			 "again later, or with fewer parts in flight (--parallel).");
	else if (status >= 500)
		snprintf(buf, buflen,
			 "The server kept failing; check the status of %s and try "
			 "again later.",
			 where);
	else if (code[0] != '\0')
		snprintf(buf, buflen,
			 "See the S3 error code list in the Amazon S3 API "
			 "reference for %s.",
			 code);
	else
		snprintf(buf, buflen, "Check that %s is reachable and is an S3 API.",
			 where);
	return buf;
}

void
s3_error_format(const struct s3_client *client, struct s3_error *err,
		const struct s3_req_spec *spec, const char *cause)
{
	char hint[1024], attempts[64] = "";

	if (err->attempts > 1)
		snprintf(attempts, sizeof(attempts), " after %u attempts",
			 err->attempts);
	if (err->code == S3_ERR_SERVER)
		s3_error_hint(client, err->s3_code, err->http_status, hint,
			      sizeof(hint));
	else if (err->code == ENGINE_ERR_TLS)
		snprintf(hint, sizeof(hint),
			 "Check the endpoint's certificate, or the CA bundle given "
			 "by --ca-file or MFMODAL_CA_FILE.");
	else if (err->code == ENGINE_ERR_IO || err->code == ENGINE_ERR_PROTOCOL) {
		char where[600];

		s3_client_describe_endpoint(client, where, sizeof(where));
		snprintf(hint, sizeof(hint),
			 "Check that %s is reachable and is an S3 API.", where);
	} else
		hint[0] = '\0';
	/* S3 messages usually end with a full stop already. */
	size_t cause_len = strlen(cause);
	int stop = cause_len > 0 && cause[cause_len - 1] == '.';
	const char *separator = ". ";

	if (hint[0] == '\0')
		separator = "";
	else if (stop)
		separator = " ";

	snprintf(err->message, sizeof(err->message),
		 "%s s3://%s/%s%s%s%s failed%s: %s%s%s", spec->op,
		 spec->bucket != NULL ? spec->bucket : "",
		 spec->key != NULL ? spec->key : "",
		 spec->detail != NULL ? " (" : "",
		 spec->detail != NULL ? spec->detail : "",
		 spec->detail != NULL ? ")" : "", attempts, cause, separator, hint);
}
