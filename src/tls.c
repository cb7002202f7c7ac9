/* TLS client set-up shared by the gRPC and S3 transports. */
#include "config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "tls.h"

const char *
tls_ca_file(const char *option)
{
	const char *env = getenv("MFMODAL_CA_FILE");

	if (option != NULL && *option != '\0')
		return option;
	if (env != NULL && *env != '\0')
		return env;
	return NULL;
}

int
tls_append_errors(char *buf, size_t buflen)
{
	unsigned long e;
	int any = 0;

	while ((e = ERR_get_error()) != 0) {
		size_t used = strlen(buf);
		char one[256];

		ERR_error_string_n(e, one, sizeof(one));
		if (used + 3 < buflen)
			snprintf(buf + used, buflen - used, "%s%s",
				 any ? "; " : ": ", one);
		any = 1;
	}
	return any;
}

SSL_CTX *
tls_ctx_new(const char *ca_file, const char *alpn, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	unsigned char wire[32];
	size_t alpn_len = strlen(alpn);

	err[0] = '\0';
	if (ctx == NULL) {
		snprintf(err, errlen, "cannot create a TLS context");
		tls_append_errors(err, errlen);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (ca_file != NULL) {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			snprintf(err, errlen,
				 "cannot load CA certificates from %s (check "
				 "--ca-file or MFMODAL_CA_FILE)",
				 ca_file);
			tls_append_errors(err, errlen);
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		snprintf(err, errlen, "cannot load the system CA store");
		tls_append_errors(err, errlen);
		SSL_CTX_free(ctx);
		return NULL;
	}

	/* ALPN protocol list: one length byte, then the name (RFC 7301). */
	if (alpn_len == 0 || alpn_len >= sizeof(wire)) {
		snprintf(err, errlen, "invalid ALPN protocol '%s'", alpn);
		SSL_CTX_free(ctx);
		return NULL;
	}
	wire[0] = (unsigned char)alpn_len;
	memcpy(wire + 1, alpn, alpn_len);
	if (SSL_CTX_set_alpn_protos(ctx, wire, (unsigned)alpn_len + 1) != 0) {
		snprintf(err, errlen, "cannot set ALPN");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static int
is_ip_literal(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, buf) == 1 ||
	       inet_pton(AF_INET6, host, buf) == 1;
}

SSL *
tls_ssl_new(SSL_CTX *ctx, const char *host, char *err, size_t errlen)
{
	SSL *ssl = SSL_new(ctx);
	X509_VERIFY_PARAM *param;
	int ok;

	err[0] = '\0';
	if (ssl == NULL) {
		snprintf(err, errlen, "cannot create a TLS connection");
		tls_append_errors(err, errlen);
		return NULL;
	}
	param = SSL_get0_param(ssl);
	if (is_ip_literal(host)) {
		/* RFC 6066 section 3: SNI carries host names only. */
		ok = X509_VERIFY_PARAM_set1_ip_asc(param, host) == 1;
	} else {
		X509_VERIFY_PARAM_set_hostflags(
			param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		ok = X509_VERIFY_PARAM_set1_host(param, host, strlen(host)) == 1 &&
		     SSL_set_tlsext_host_name(ssl, host) == 1;
	}
	if (!ok) {
		snprintf(err, errlen, "cannot set up verification for host %s",
			 host);
		tls_append_errors(err, errlen);
		SSL_free(ssl);
		return NULL;
	}
	return ssl;
}

void
tls_describe_failure(SSL *ssl, const char *host, char *err, size_t errlen)
{
	long verify = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;

	if (verify != X509_V_OK) {
		snprintf(err, errlen,
			 "TLS certificate verification failed for %s: %s "
			 "(check the server name, or the CA bundle given by "
			 "--ca-file or MFMODAL_CA_FILE)",
			 host, X509_verify_cert_error_string(verify));
		ERR_clear_error();
		return;
	}
	snprintf(err, errlen, "TLS handshake with %s failed", host);
	tls_append_errors(err, errlen);
}

int
tls_alpn_is(SSL *ssl, const char *want)
{
	const unsigned char *proto = NULL;
	unsigned int len = 0;

	SSL_get0_alpn_selected(ssl, &proto, &len);
	return proto != NULL && len == strlen(want) &&
	       memcmp(proto, want, len) == 0;
}
