#ifndef MFMODAL_TLS_H
#define MFMODAL_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

/* The CA bundle to trust: the explicit option when given, else MFMODAL_CA_FILE,
 * else NULL for OpenSSL's default store (which honours SSL_CERT_FILE and
 * SSL_CERT_DIR). */
const char *tls_ca_file(const char *option);

/* Create a client context: TLS 1.2 or later, peer verification on, trusting
 * ca_file or the system store, offering the ALPN protocol alpn ("h2" or
 * "http/1.1").  Returns NULL with a message in err.  Free with SSL_CTX_free. */
SSL_CTX *tls_ctx_new(const char *ca_file, const char *alpn, char *err,
		     size_t errlen);

/* Create a connection object for host: SNI for names (not for IP literals)
 * and verification of the certificate's name or IP against host. */
SSL *tls_ssl_new(SSL_CTX *ctx, const char *host, char *err, size_t errlen);

/* Describe why a handshake with host failed: the certificate verification
 * result when that was the cause, else OpenSSL's error queue (which is
 * emptied). */
void tls_describe_failure(SSL *ssl, const char *host, char *err, size_t errlen);

/* Append OpenSSL's queued errors to buf; returns whether there were any. */
int tls_append_errors(char *buf, size_t buflen);

/* Whether the handshake selected ALPN protocol want. */
int tls_alpn_is(SSL *ssl, const char *want);

#endif
