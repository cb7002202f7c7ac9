#ifndef MFMODAL_UTIL_H
#define MFMODAL_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Engine error codes: functions that can fail return 0 or one of these. */
enum engine_error {
	ENGINE_OK = 0,
	ENGINE_ERR_NOMEM = -1,
	ENGINE_ERR_INVALID = -2,
	ENGINE_ERR_IO = -3,
	ENGINE_ERR_TLS = -4,
	ENGINE_ERR_PROTOCOL = -5,
	ENGINE_ERR_CONFIG = -6,
	ENGINE_ERR_CLOSED = -7,
};
const char *engine_strerror(int code);

/* Write a random (version 4) UUID as 36 characters plus NUL into out. */
int util_uuid4(char out[37]);

/* Seconds on the monotonic clock. */
double util_now(void);

/* Standard base64 decoding that accepts missing padding, as gRPC "-bin"
 * headers are sent without it.  Returns the decoded length or -1; out must
 * hold at least 3 * (len + 3) / 4 bytes. */
long util_base64_decode(const char *in, size_t len, uint8_t *out);

/* Copy src into dst of dstlen bytes, truncating and always NUL-terminating. */
void util_strlcpy(char *dst, const char *src, size_t dstlen);



/* A parsed server URL: http://host[:port] or https://host[:port], with IPv6
 * literals in brackets.  A path other than "/" is rejected. */
struct url {
	int tls;
	char host[256]; /* without brackets */
	char port[8];
	char authority[272]; /* host:port as sent in :authority and Host */
};
/* Returns 0, or -1 with a message in err naming the URL. */
int util_parse_url(const char *text, struct url *url, char *err, size_t errlen);

#endif
