#ifndef MFMODAL_GRPC_WIRE_H
#define MFMODAL_GRPC_WIRE_H

/* The parts of gRPC over HTTP/2 that need no connection: message framing,
 * status codes, header values.  Rules from the gRPC "PROTOCOL-HTTP2" spec. */

#include <stddef.h>
#include <stdint.h>

enum grpc_code {
	GRPC_OK = 0,
	GRPC_CANCELLED = 1,
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_NOT_FOUND = 5,
	GRPC_ALREADY_EXISTS = 6,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_ABORTED = 10,
	GRPC_OUT_OF_RANGE = 11,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
	GRPC_DATA_LOSS = 15,
	GRPC_UNAUTHENTICATED = 16,
};
#define GRPC_CODE_MAX GRPC_UNAUTHENTICATED

/* The status's name, e.g. "NOT_FOUND"; "UNKNOWN" for values out of range. */
const char *grpc_code_name(int code);
/* Whether a unary call failing with code is retried: CANCELLED, UNKNOWN,
 * DEADLINE_EXCEEDED, INTERNAL and UNAVAILABLE, as Modal's clients do. */
int grpc_code_is_retryable(int code);
/* The status a non-gRPC HTTP response maps to, per the gRPC spec's table. */
int grpc_code_from_http_status(int http_status);

/* Length-Prefixed-Message header: 1 flag byte, then a 4-byte big-endian length. */
#define GRPC_FRAME_HEADER_LEN 5
void grpc_frame_header(uint8_t out[GRPC_FRAME_HEADER_LEN], uint32_t len);

/* Incremental decoder of length-prefixed messages from a byte stream. */
struct grpc_frame_reader {
	uint8_t header[GRPC_FRAME_HEADER_LEN];
	size_t header_got;
	uint8_t *message; /* owned; NULL between messages */
	size_t message_len;
	size_t message_got;
	size_t max_message_len;
};
enum grpc_frame_result {
	GRPC_FRAME_NEED_MORE = 0,
	GRPC_FRAME_MESSAGE = 1,     /* a whole message is ready */
	GRPC_FRAME_COMPRESSED = -1, /* flag 1 without a negotiated encoding */
	GRPC_FRAME_TOO_LARGE = -2,
	GRPC_FRAME_NOMEM = -3,
};
void grpc_frame_reader_init(struct grpc_frame_reader *r, size_t max_message_len);
/* Consume bytes from *data.  On GRPC_FRAME_MESSAGE the message is in
 * (*msg, *msg_len), owned by the caller (free()), and *data and *len
 * are advanced past it.
 * Call again with the remaining bytes until it returns NEED_MORE. */
enum grpc_frame_result grpc_frame_reader_feed(struct grpc_frame_reader *r,
					      const uint8_t **data, size_t *len,
					      uint8_t **msg, size_t *msg_len);
/* Whether a partial message is buffered (a stream that ends here is truncated). */
int grpc_frame_reader_partial(const struct grpc_frame_reader *r);
void grpc_frame_reader_free(struct grpc_frame_reader *r);

/* Encode a timeout for the grpc-timeout header in the finest unit whose value
 * fits the spec's 8 digits, rounded up, capped at 99999999S.  out needs 10
 * bytes.  Returns -1 when seconds is not positive (already expired). */
int grpc_timeout_encode(double seconds, char out[10]);

/* Decode the grpc-message percent-encoding into out (outlen >= len + 1).
 * Invalid escapes are copied as they are.  Returns the decoded length. */
size_t grpc_percent_decode(const char *in, size_t len, char *out, size_t outlen);

/* Parse a grpc-status value: ASCII digits only.  Returns 0 or -1. */
int grpc_parse_status(const char *value, size_t len, int *code);

#endif
