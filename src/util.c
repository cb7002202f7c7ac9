#include "config.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <errno.h>
#include <sys/random.h>

#include "util.h"

const char *
engine_strerror(int code)
{
	switch (code) {
	case ENGINE_OK: return "success";
	case ENGINE_ERR_NOMEM: return "out of memory";
	case ENGINE_ERR_INVALID: return "invalid argument";
	case ENGINE_ERR_IO: return "input/output error";
	case ENGINE_ERR_TLS: return "TLS error";
	case ENGINE_ERR_PROTOCOL: return "protocol error";
	case ENGINE_ERR_CONFIG: return "configuration error";
	case ENGINE_ERR_CLOSED: return "connection closed";
	}
	return "unknown error";
}

/* Random bytes from the kernel, fetched in blocks so a UUID per log line
 * costs no system call.  getrandom() rather than OpenSSL's generator: that
 * one loads its provider tables on first use, a few MiB of resident memory
 * that a task on plain HTTP never needs otherwise. */
static int
random_bytes(unsigned char *out, size_t n)
{
	static unsigned char pool[4096];
	static size_t left;

	while (n > 0) {
		for (size_t filled = 0; left == 0;) {
			ssize_t got = getrandom(pool + filled, sizeof(pool) - filled, 0);

			if (got < 0 && errno != EINTR)
				return -1;
			filled += got > 0 ? (size_t)got : 0;
			if (filled == sizeof(pool))
				left = sizeof(pool);
		}
		size_t take = n < left ? n : left;

		memcpy(out, pool + sizeof(pool) - left, take);
		/* never hand out the same bytes twice */
		memset(pool + sizeof(pool) - left, 0, take);
		left -= take;
		out += take;
		n -= take;
	}
	return 0;
}

int
util_uuid4(char out[37])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char b[16];
	size_t o = 0;

	if (random_bytes(b, sizeof(b)) != 0)
		return ENGINE_ERR_IO;
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	for (size_t i = 0; i < sizeof(b); i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[b[i] >> 4];
		out[o++] = hex[b[i] & 0x0f];
	}
	out[o] = '\0';
	return ENGINE_OK;
}

double
util_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
base64_value(int c)
{
	if (c >= 'A' && c <= 'Z') return c - 'A';
	if (c >= 'a' && c <= 'z') return c - 'a' + 26;
	if (c >= '0' && c <= '9') return c - '0' + 52;
	if (c == '+' || c == '-') return 62;
	if (c == '/' || c == '_') return 63;
	return -1;
}

long
util_base64_decode(const char *in, size_t len, uint8_t *out)
{
	uint32_t acc = 0;
	int bits = 0;
	long o = 0;

	while (len > 0 && in[len - 1] == '=')
		len--;
	for (size_t i = 0; i < len; i++) {
		int v = base64_value((unsigned char)in[i]);

		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	if (bits >= 6)
		return -1; /* a lone trailing character cannot encode a byte */
	return o;
}

void
util_strlcpy(char *dst, const char *src, size_t dstlen)
{
	size_t n = strlen(src);

	if (dstlen == 0)
		return;
	if (n >= dstlen)
		n = dstlen - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

int
util_parse_url(const char *text, struct url *url, char *err, size_t errlen)
{
	const char *p, *host_end, *port_start = NULL;
	size_t host_len;

	memset(url, 0, sizeof(*url));
	if (strncmp(text, "https://", 8) == 0) {
		url->tls = 1;
		p = text + 8;
	} else if (strncmp(text, "http://", 7) == 0) {
		p = text + 7;
	} else {
		snprintf(err, errlen,
			 "invalid server URL '%s': expected https://HOST[:PORT] "
			 "or http://HOST[:PORT]",
			 text);
		return -1;
	}
	if (*p == '[') {
		host_end = strchr(p, ']');
		if (host_end == NULL)
			goto invalid;
		p++;
		host_len = (size_t)(host_end - p);
		host_end++;
	} else {
		host_end = p + strcspn(p, ":/");
		host_len = (size_t)(host_end - p);
	}
	if (host_len == 0 || host_len >= sizeof(url->host))
		goto invalid;
	memcpy(url->host, p, host_len);
	if (*host_end == ':') {
		port_start = host_end + 1;
		size_t port_len = strspn(port_start, "0123456789");
		if (port_len == 0 || port_len >= sizeof(url->port))
			goto invalid;
		memcpy(url->port, port_start, port_len);
		host_end = port_start + port_len;
	} else {
		strcpy(url->port, url->tls ? "443" : "80");
	}
	if (*host_end != '\0' && strcmp(host_end, "/") != 0)
		goto invalid;
	snprintf(url->authority, sizeof(url->authority),
		 strchr(url->host, ':') != NULL ? "[%s]:%s" : "%s:%s", url->host,
		 url->port);
	return 0;
invalid:
	snprintf(err, errlen,
		 "invalid server URL '%s': expected https://HOST[:PORT] or "
		 "http://HOST[:PORT] with no path",
		 text);
	return -1;
}
