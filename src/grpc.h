#ifndef MFMODAL_GRPC_H
#define MFMODAL_GRPC_H

/* gRPC calls over the HTTP/2 channel: unary calls with Modal's retry rules
 * and server-streaming calls.  Messages are protobuf-c messages. */

#include <stddef.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <protobuf-c/protobuf-c.h>

#include "grpc_wire.h"
#include "h2conn.h"

#define GRPC_MESSAGE_MAX 1024

struct grpc_status {
	int code;                      /* enum grpc_code */
	char message[GRPC_MESSAGE_MAX]; /* decoded grpc-message or our own */
};

/* Retry rules for unary calls, defaults as in Modal's clients: retryable
 * statuses are retried max_retries times after base_delay, growing by factor
 * up to max_delay seconds, within max_total seconds from the first attempt.
 * A server-sent RPCRetryPolicy detail waits retry_after_secs (at least
 * base_delay) and does not count as a retry, within max_throttle_wait. */
struct grpc_retry_policy {
	unsigned max_retries;
	double base_delay;
	double factor;
	double max_delay;
	double max_total;
	double max_throttle_wait;
};
void grpc_retry_policy_default(struct grpc_retry_policy *p);
/* The delay before retry number retry (1 for the first retry), in seconds. */
double grpc_retry_delay(const struct grpc_retry_policy *p, unsigned retry);

struct grpc_client_config {
	const char *server_url;
	const char *token_id;
	const char *token_secret;
	const char *client_type;
	const char *client_version;
	const char *ca_file; /* NULL: the system store */
	struct h2channel_options h2;
	struct grpc_retry_policy retry;
	size_t max_message_len;
};
/* Fill in defaults; the caller then sets the server URL and credentials. */
void grpc_client_config_default(struct grpc_client_config *cfg);

struct grpc_client;
struct grpc_call;

/* Create a client.  Strings in cfg are copied.  Returns NULL with a message in
 * err for an invalid URL or TLS set-up failure. */
struct grpc_client *grpc_client_new(struct event_base *base,
				    struct evdns_base *dns,
				    const struct grpc_client_config *cfg,
				    char *err, size_t errlen);
/* Free the client.  Calls still running are cancelled without callbacks. */
void grpc_client_free(struct grpc_client *client);
struct h2channel *grpc_client_channel(struct grpc_client *client);

struct grpc_call_options {
	double timeout;  /* seconds for each attempt, sent as grpc-timeout; 0: none */
	double deadline; /* util_now() time after which no attempt starts; 0: none */
	int no_retry;    /* unary only: fail on the first error */
	const char *log_prefix; /* e.g. "[job 3]"; may be NULL */
};

/* The response (NULL unless st->code is OK) is freed after the callback
 * returns; the call object is gone after it too. */
typedef void (*grpc_unary_cb)(void *arg, const struct grpc_status *st,
			      ProtobufCMessage *response);
/* One message of a server stream, freed after the callback returns. */
typedef void (*grpc_message_cb)(void *arg, ProtobufCMessage *message);
typedef void (*grpc_done_cb)(void *arg, const struct grpc_status *st);

/* Start a unary call of /modal.client.ModalClient/<method>.  request is
 * serialized at once and may be freed on return.  Returns NULL when out of
 * memory. */
struct grpc_call *grpc_call_unary(struct grpc_client *client,
				  const char *method,
				  const ProtobufCMessage *request,
				  const ProtobufCMessageDescriptor *response_type,
				  const struct grpc_call_options *opts,
				  grpc_unary_cb cb, void *arg);

/* Start a server-streaming call.  on_message runs for each message, then
 * on_done once.  Only requests the server did not process are sent again. */
struct grpc_call *grpc_call_server_stream(
	struct grpc_client *client, const char *method,
	const ProtobufCMessage *request,
	const ProtobufCMessageDescriptor *message_type,
	const struct grpc_call_options *opts, grpc_message_cb on_message,
	grpc_done_cb on_done, void *arg);

/* Stop a call: no callback follows.  Safe to call from any callback, also for
 * the call's own on_message. */
void grpc_call_cancel(struct grpc_call *call);

/* Statistics for tests: attempts made by unary calls, and throttled waits. */
struct grpc_client_stats {
	unsigned calls;
	unsigned attempts;
	unsigned retries;
	unsigned throttled;
	unsigned resubmitted; /* requests moved after REFUSED_STREAM or GOAWAY */
};
void grpc_client_get_stats(const struct grpc_client *client,
			   struct grpc_client_stats *st);

#endif
