#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc_wire.h"

static const char *const code_names[] = {
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
	"RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED",
};
_Static_assert(sizeof(code_names) / sizeof(code_names[0]) == GRPC_CODE_MAX + 1,
	       "code_names covers every status code");

const char *
grpc_code_name(int code)
{
	if (code < 0 || code > GRPC_CODE_MAX)
		return "UNKNOWN";
	return code_names[code];
}

int
grpc_code_is_retryable(int code)
{
	switch (code) {
	case GRPC_CANCELLED:
	case GRPC_UNKNOWN:
	case GRPC_DEADLINE_EXCEEDED:
	case GRPC_INTERNAL:
	case GRPC_UNAVAILABLE:
		return 1;
	default:
		return 0;
	}
}

int
grpc_code_from_http_status(int http_status)
{
	switch (http_status) {
	case 400: return GRPC_INTERNAL;
	case 401: return GRPC_UNAUTHENTICATED;
	case 403: return GRPC_PERMISSION_DENIED;
	case 404: return GRPC_UNIMPLEMENTED;
	case 429:
	case 502:
	case 503:
	case 504: return GRPC_UNAVAILABLE;
	default: return GRPC_UNKNOWN;
	}
}

void
grpc_frame_header(uint8_t out[GRPC_FRAME_HEADER_LEN], uint32_t len)
{
	out[0] = 0; /* not compressed: this client negotiates no grpc-encoding */
	out[1] = (uint8_t)(len >> 24);
	out[2] = (uint8_t)(len >> 16);
	out[3] = (uint8_t)(len >> 8);
	out[4] = (uint8_t)len;
}

void
grpc_frame_reader_init(struct grpc_frame_reader *r, size_t max_message_len)
{
	memset(r, 0, sizeof(*r));
	r->max_message_len = max_message_len;
}

enum grpc_frame_result
grpc_frame_reader_feed(struct grpc_frame_reader *r, const uint8_t **data,
		       size_t *len, uint8_t **msg, size_t *msg_len)
{
	while (r->header_got < GRPC_FRAME_HEADER_LEN) {
		if (*len == 0)
			return GRPC_FRAME_NEED_MORE;
		r->header[r->header_got++] = **data;
		(*data)++;
		(*len)--;
		if (r->header_got < GRPC_FRAME_HEADER_LEN)
			continue;
		if (r->header[0] != 0)
			return GRPC_FRAME_COMPRESSED;
		r->message_len = ((size_t)r->header[1] << 24) |
				 ((size_t)r->header[2] << 16) |
				 ((size_t)r->header[3] << 8) | r->header[4];
		if (r->message_len > r->max_message_len)
			return GRPC_FRAME_TOO_LARGE;
		/* one spare byte so an empty message still gets a non-NULL buffer */
		r->message = malloc(r->message_len + 1);
		if (r->message == NULL)
			return GRPC_FRAME_NOMEM;
		r->message_got = 0;
	}

	size_t want = r->message_len - r->message_got;
	size_t take = *len < want ? *len : want;

	memcpy(r->message + r->message_got, *data, take);
	r->message_got += take;
	*data += take;
	*len -= take;
	if (r->message_got < r->message_len)
		return GRPC_FRAME_NEED_MORE;

	*msg = r->message;
	*msg_len = r->message_len;
	r->message = NULL;
	r->header_got = 0;
	return GRPC_FRAME_MESSAGE;
}

int
grpc_frame_reader_partial(const struct grpc_frame_reader *r)
{
	return r->header_got > 0;
}

void
grpc_frame_reader_free(struct grpc_frame_reader *r)
{
	free(r->message);
	r->message = NULL;
	r->header_got = 0;
}

int
grpc_timeout_encode(double seconds, char out[10])
{
	/* Units from finest to coarsest with their size in nanoseconds. */
	static const struct {
		char unit;
		double ns;
	} units[] = {
		{'n', 1.0},    {'u', 1e3},    {'m', 1e6},
		{'S', 1e9},    {'M', 60e9},   {'H', 3600e9},
	};
	const double max_value = 99999999.0;

	if (!(seconds > 0.0))
		return -1;
	double ns = seconds * 1e9;

	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		double exact = ns / units[i].ns;

		if (exact > max_value)
			continue;
		/* rounded up, without libm: the truncation plus one if short */
		double value = (double)(unsigned long long)exact;

		if (value < exact)
			value += 1.0;

		if (value <= max_value) {
			snprintf(out, 10, "%.0f%c", value, units[i].unit);
			return 0;
		}
	}
	snprintf(out, 10, "99999999S");
	return 0;
}

static int
hex_value(int c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

size_t
grpc_percent_decode(const char *in, size_t len, char *out, size_t outlen)
{
	size_t o = 0;

	if (outlen == 0)
		return 0;
	for (size_t i = 0; i < len && o + 1 < outlen; i++) {
		int hi, lo;

		if (in[i] == '%' && i + 2 < len &&
		    (hi = hex_value((unsigned char)in[i + 1])) >= 0 &&
		    (lo = hex_value((unsigned char)in[i + 2])) >= 0) {
			out[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			out[o++] = in[i];
		}
	}
	out[o] = '\0';
	return o;
}

int
grpc_parse_status(const char *value, size_t len, int *code)
{
	long v = 0;

	if (len == 0 || len > 4)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (value[i] < '0' || value[i] > '9')
			return -1;
		v = v * 10 + (value[i] - '0');
	}
	*code = (int)v;
	return 0;
}
