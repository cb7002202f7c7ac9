/* gRPC calls on the HTTP/2 channel (see grpc.h). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "google/protobuf/any.pb-c.h"
#include "grpc.h"
#include "log.h"
#include "modal_api.pb-c.h"
#include "tls.h"
#include "util.h"

#define GRPC_PATH_PREFIX "/modal.client.ModalClient/"
/* How often one call may be moved to another connection because the server
 * did not process it, before it fails as UNAVAILABLE. */
#define GRPC_MAX_RESUBMITS 10
/* grpc-status-details-bin is base64 of an RPCStatus; larger is not kept. */
#define GRPC_DETAILS_MAX (64 * 1024)

struct grpc_client {
	struct event_base *base;
	struct h2channel *channel;
	SSL_CTX *ssl_ctx;
	struct url url;
	char *token_id;
	char *token_secret;
	char *client_type;
	char *client_version;
	struct grpc_retry_policy retry;
	size_t max_message_len;
	struct event *reap_ev;
	TAILQ_HEAD(, grpc_call) dead;
	TAILQ_HEAD(, grpc_call) live;
	unsigned next_call_id;
	struct grpc_client_stats stats;
};

struct grpc_call {
	struct grpc_client *client;
	unsigned id;
	char prefix[64];
	char path[96];     /* GRPC_PATH_PREFIX and the method name */
	const char *method; /* points into path */
	int streaming;
	int cancelled; /* no callback may run; freed on the next loop turn */
	int finished;
	struct grpc_call_options opts;
	const ProtobufCMessageDescriptor *response_type;
	grpc_unary_cb unary_cb;
	grpc_message_cb message_cb;
	grpc_done_cb done_cb;
	void *arg;

	uint8_t *request; /* serialized request, kept for retries */
	size_t request_len;
	char idempotency_key[37];
	unsigned attempt;    /* 0 for the first attempt */
	unsigned retries;    /* retries after retryable statuses */
	unsigned throttles;  /* waits asked for by RPCRetryPolicy */
	unsigned resubmits;  /* sends after the server did not process it */
	double first_attempt_at;

	/* Per attempt. */
	struct h2stream stream;
	double attempt_deadline; /* 0 when the attempt has no time limit */
	int http_status;
	int content_type_ok;
	char content_type[64];
	int have_status;
	int status_code;
	char *status_message; /* decoded grpc-message; NULL when none came */
	uint8_t *details; /* decoded grpc-status-details-bin */
	size_t details_len;
	struct grpc_frame_reader reader;
	ProtobufCMessage *response; /* unary: the one response message */
	unsigned messages;
	/* Set when we end the attempt ourselves.  Allocated only then, because
	 * a batch keeps three calls per job and most never fail. */
	struct grpc_status *local_error;
	int have_local_error;

	/* The attempt's deadline while one runs, else the wait before the
	 * next attempt (retry_pending).  One event serves both. */
	struct event *timer;
	int retry_pending;
	TAILQ_ENTRY(grpc_call) link;
};

static void call_finish(struct grpc_call *call, const struct grpc_status *st);
static void call_start_attempt(struct grpc_call *call);

void
grpc_retry_policy_default(struct grpc_retry_policy *p)
{
	/* Modal's Python, Go and JS clients: 3 retries, 0.1 s doubling to 1 s. */
	p->max_retries = 3;
	p->base_delay = 0.1;
	p->factor = 2.0;
	p->max_delay = 1.0;
	p->max_total = 60.0;
	p->max_throttle_wait = 300.0;
}

double
grpc_retry_delay(const struct grpc_retry_policy *p, unsigned retry)
{
	double d = p->base_delay;

	for (unsigned i = 1; i < retry && d < p->max_delay; i++)
		d *= p->factor;
	return d < p->max_delay ? d : p->max_delay;
}

void
grpc_client_config_default(struct grpc_client_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	h2channel_options_default(&cfg->h2);
	grpc_retry_policy_default(&cfg->retry);
	/* Modal's Go and JS clients cap messages at 100 MiB. */
	cfg->max_message_len = 100 * 1024 * 1024;
}

static void
reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct grpc_client *client = arg;
	struct grpc_call *call;

	while ((call = TAILQ_FIRST(&client->dead)) != NULL) {
		TAILQ_REMOVE(&client->dead, call, link);
		grpc_frame_reader_free(&call->reader);
		if (call->response != NULL)
			protobuf_c_message_free_unpacked(call->response, NULL);
		free(call->details);
		free(call->status_message);
		free(call->local_error);
		free(call->request);
		if (call->stream.body != NULL)
			evbuffer_free(call->stream.body);
		event_free(call->timer);
		free(call);
	}
}

struct grpc_client *
grpc_client_new(struct event_base *base, struct evdns_base *dns,
		const struct grpc_client_config *cfg, char *err, size_t errlen)
{
	struct grpc_client *client = calloc(1, sizeof(*client));
	struct h2channel_options h2 = cfg->h2;

	if (client == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	client->base = base;
	TAILQ_INIT(&client->dead);
	TAILQ_INIT(&client->live);
	client->retry = cfg->retry;
	client->max_message_len = cfg->max_message_len;
	if (util_parse_url(cfg->server_url, &client->url, err, errlen) != 0)
		goto fail;
	if (client->url.tls) {
		client->ssl_ctx = tls_ctx_new(cfg->ca_file, "h2", err, errlen);
		if (client->ssl_ctx == NULL)
			goto fail;
	}
	h2.ssl_ctx = client->ssl_ctx;
	client->token_id = strdup(cfg->token_id != NULL ? cfg->token_id : "");
	client->token_secret =
		strdup(cfg->token_secret != NULL ? cfg->token_secret : "");
	client->client_type = strdup(cfg->client_type);
	client->client_version = strdup(cfg->client_version);
	client->reap_ev = event_new(base, -1, 0, reap_cb, client);
	client->channel = h2channel_new(base, dns, &client->url, &h2);
	if (client->token_id == NULL || client->token_secret == NULL ||
	    client->client_type == NULL || client->client_version == NULL ||
	    client->reap_ev == NULL || client->channel == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	log_add_secret(client->token_secret);
	return client;
fail:
	grpc_client_free(client);
	return NULL;
}

void
grpc_client_free(struct grpc_client *client)
{
	struct grpc_call *call;

	if (client == NULL)
		return;
	while ((call = TAILQ_FIRST(&client->live)) != NULL)
		grpc_call_cancel(call);
	h2channel_free(client->channel);
	if (client->reap_ev != NULL) {
		reap_cb(-1, 0, client);
		event_free(client->reap_ev);
	}
	if (client->ssl_ctx != NULL)
		SSL_CTX_free(client->ssl_ctx);
	free(client->token_id);
	free(client->token_secret);
	free(client->client_type);
	free(client->client_version);
	free(client);
}

struct h2channel *
grpc_client_channel(struct grpc_client *client)
{
	return client->channel;
}

void
grpc_client_get_stats(const struct grpc_client *client,
		      struct grpc_client_stats *st)
{
	*st = client->stats;
}

/* Status handling. */

static void
set_status(struct grpc_status *st, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
set_status(struct grpc_status *st, int code, const char *fmt, ...)
{
	va_list ap;

	st->code = code;
	va_start(ap, fmt);
	vsnprintf(st->message, sizeof(st->message), fmt, ap);
	va_end(ap);
}

/* End the current attempt from our side with st (decode errors, deadlines). */
static void
call_abort_attempt(struct grpc_call *call, int code, const char *message)
{
	if (call->have_local_error)
		return;
	call->have_local_error = 1;
	if (call->local_error == NULL)
		call->local_error = malloc(sizeof(*call->local_error));
	if (call->local_error != NULL)
		set_status(call->local_error, code, "%s", message);
}

/* RPCRetryPolicy.retry_after_secs from the status details, or -1. */
static double
details_retry_after(const struct grpc_call *call)
{
	Modal__Client__RPCStatus *status;
	double after = -1.0;

	if (call->details == NULL)
		return -1.0;
	status = modal__client__rpcstatus__unpack(NULL, call->details_len,
						  call->details);
	if (status == NULL)
		return -1.0;
	for (size_t i = 0; i < status->n_details; i++) {
		Google__Protobuf__Any *any = status->details[i];
		const char *name;
		Modal__Client__RPCRetryPolicy *policy;

		if (any == NULL || any->type_url == NULL)
			continue;
		/* Only the part after the last '/' names the type. */
		name = strrchr(any->type_url, '/');
		name = name != NULL ? name + 1 : any->type_url;
		if (strcmp(name, "modal.client.RPCRetryPolicy") != 0)
			continue;
		policy = modal__client__rpcretry_policy__unpack(
			NULL, any->value.len, any->value.data);
		if (policy != NULL) {
			after = policy->retry_after_secs;
			protobuf_c_message_free_unpacked(&policy->base, NULL);
		}
	}
	protobuf_c_message_free_unpacked(&status->base, NULL);
	return after;
}

/* The attempt's outcome from what the stream delivered. */
static void
attempt_status(struct grpc_call *call, enum h2_close_reason reason,
	       uint32_t error_code, const char *message, struct grpc_status *st)
{
	if (call->have_local_error) {
		if (call->local_error != NULL)
			*st = *call->local_error;
		else
			set_status(st, GRPC_INTERNAL, "out of memory");
		return;
	}
	switch (reason) {
	case H2_CLOSE_CONNECT_FAILED:
	case H2_CLOSE_CONN_LOST:
	case H2_CLOSE_REFUSED:
		set_status(st, GRPC_UNAVAILABLE, "%s",
			   message != NULL ? message : "connection lost");
		return;
	case H2_CLOSE_RESET:
		if (call->have_status)
			break; /* a reset after the trailers changes nothing */
		/* The gRPC spec's mapping of RST_STREAM error codes. */
		switch (error_code) {
		case NGHTTP2_CANCEL:
			set_status(st, GRPC_CANCELLED, "%s", message);
			return;
		case NGHTTP2_ENHANCE_YOUR_CALM:
			set_status(st, GRPC_RESOURCE_EXHAUSTED, "%s", message);
			return;
		case NGHTTP2_INADEQUATE_SECURITY:
			set_status(st, GRPC_PERMISSION_DENIED, "%s", message);
			return;
		default:
			set_status(st, GRPC_INTERNAL, "%s", message);
			return;
		}
	case H2_CLOSE_DONE:
		break;
	}

	if (call->have_status) {
		st->code = call->status_code;
		util_strlcpy(st->message,
			     call->status_message != NULL ? call->status_message : "",
			     sizeof(st->message));
		if (st->code == GRPC_OK && grpc_frame_reader_partial(&call->reader))
			set_status(st, GRPC_INTERNAL,
				   "the response ended inside a message");
		else if (st->code == GRPC_OK && !call->streaming &&
			 call->messages != 1)
			set_status(st, GRPC_INTERNAL,
				   "a unary response carried %u messages, not 1",
				   call->messages);
		return;
	}
	if (call->http_status != 200 && call->http_status != 0) {
		set_status(st, grpc_code_from_http_status(call->http_status),
			   "HTTP status %d from %s without grpc-status: the "
			   "response is not gRPC, perhaps from a proxy or load "
			   "balancer",
			   call->http_status, call->client->url.authority);
		return;
	}
	if (call->http_status == 200 && !call->content_type_ok) {
		set_status(st, GRPC_UNKNOWN,
			   "response content-type '%s' from %s is not gRPC",
			   call->content_type, call->client->url.authority);
		return;
	}
	set_status(st, GRPC_INTERNAL, "the response had no grpc-status");
}

/* h2stream callbacks. */

static int
header_is(const uint8_t *name, size_t namelen, const char *want)
{
	return namelen == strlen(want) && memcmp(name, want, namelen) == 0;
}

static void
on_header(void *arg, enum h2_block block, const uint8_t *name, size_t namelen,
	  const uint8_t *value, size_t valuelen)
{
	struct grpc_call *call = arg;

	if (block == H2_BLOCK_RESPONSE && header_is(name, namelen, ":status")) {
		call->http_status = 0;
		for (size_t i = 0; i < valuelen && i < 3; i++)
			call->http_status = call->http_status * 10 + (value[i] - '0');
	} else if (block == H2_BLOCK_RESPONSE &&
		   header_is(name, namelen, "content-type")) {
		size_t n = valuelen < sizeof(call->content_type) - 1
				   ? valuelen
				   : sizeof(call->content_type) - 1;
		memcpy(call->content_type, value, n);
		call->content_type[n] = '\0';
		/* application/grpc, optionally followed by +proto or ;params */
		call->content_type_ok =
			valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
			(valuelen == 16 || value[16] == '+' || value[16] == ';');
	} else if (header_is(name, namelen, "grpc-status")) {
		int code;

		if (grpc_parse_status((const char *)value, valuelen, &code) == 0)
			call->status_code = code;
		else
			call->status_code = GRPC_UNKNOWN;
		call->have_status = 2 + (int)block; /* seen; settled when the block ends */
	} else if (header_is(name, namelen, "grpc-message")) {
		free(call->status_message);
		call->status_message = malloc(valuelen + 1 < GRPC_MESSAGE_MAX
						      ? valuelen + 1
						      : GRPC_MESSAGE_MAX);
		if (call->status_message != NULL)
			grpc_percent_decode((const char *)value, valuelen,
					    call->status_message,
					    valuelen + 1 < GRPC_MESSAGE_MAX
						    ? valuelen + 1
						    : GRPC_MESSAGE_MAX);
	} else if (header_is(name, namelen, "grpc-status-details-bin") &&
		   valuelen <= GRPC_DETAILS_MAX) {
		free(call->details);
		call->details = malloc(valuelen + 3);
		if (call->details != NULL) {
			long n = util_base64_decode((const char *)value, valuelen,
						    call->details);
			call->details_len = n > 0 ? (size_t)n : 0;
		}
	}
}

static void
on_headers_done(void *arg, enum h2_block block, int end_stream)
{
	struct grpc_call *call = arg;

	/* grpc-status counts in trailers, or in a response header block that
	 * ends the stream (trailers-only); elsewhere it is ignored. */
	if (call->have_status >= 2) {
		if (block == H2_BLOCK_TRAILERS || end_stream) {
			call->have_status = 1;
		} else {
			call->have_status = 0;
			free(call->status_message);
			call->status_message = NULL;
		}
	}
}

static void
deliver_message(struct grpc_call *call, uint8_t *msg, size_t len)
{
	ProtobufCMessage *m = protobuf_c_message_unpack(call->response_type,
							NULL, len, msg);

	free(msg);
	if (m == NULL) {
		char text[160];

		snprintf(text, sizeof(text), "cannot decode a %s message of %zu bytes",
			 call->response_type->name, len);
		call_abort_attempt(call, GRPC_INTERNAL, text);
		h2stream_cancel(&call->stream);
		return;
	}
	call->messages++;
	if (!call->streaming) {
		if (call->response != NULL)
			protobuf_c_message_free_unpacked(call->response, NULL);
		call->response = m;
		return;
	}
	call->message_cb(call->arg, m);
	protobuf_c_message_free_unpacked(m, NULL);
}

static void
on_data(void *arg, const uint8_t *data, size_t len)
{
	struct grpc_call *call = arg;

	/* The body of a response that is not gRPC (an HTML error page from a
	 * proxy) is not parsed; the HTTP status decides the outcome. */
	if (call->http_status != 200 || !call->content_type_ok)
		return;
	while (!call->cancelled && !call->have_local_error) {
		uint8_t *msg;
		size_t msg_len;
		enum grpc_frame_result r = grpc_frame_reader_feed(
			&call->reader, &data, &len, &msg, &msg_len);

		if (r == GRPC_FRAME_NEED_MORE)
			return;
		if (r == GRPC_FRAME_MESSAGE) {
			deliver_message(call, msg, msg_len);
			continue;
		}
		call_abort_attempt(
			call, GRPC_INTERNAL,
			r == GRPC_FRAME_COMPRESSED
				? "the server sent a compressed message, but no "
				  "grpc-encoding was negotiated"
			: r == GRPC_FRAME_TOO_LARGE
				? "the server sent a message over the size limit"
				: "out of memory reading a message");
		h2stream_cancel(&call->stream);
		/* h2stream_cancel runs no callback: finish here, on the next
		 * loop turn through the deadline timer. */
		event_active(call->timer, EV_TIMEOUT, 0);
		return;
	}
}

static void
schedule_retry(struct grpc_call *call, double delay)
{
	struct timeval tv;

	tv.tv_sec = (time_t)delay;
	tv.tv_usec = (suseconds_t)((delay - (double)tv.tv_sec) * 1e6);
	call->retry_pending = 1;
	event_add(call->timer, &tv);
}

/* Decide whether a failed unary attempt is retried; returns 1 if it is. */
static int
maybe_retry(struct grpc_call *call, const struct grpc_status *st)
{
	const struct grpc_retry_policy *p = &call->client->retry;
	double elapsed = util_now() - call->first_attempt_at;
	double after = details_retry_after(call);
	double delay;

	if (call->opts.no_retry)
		return 0;
	if (after >= 0.0) {
		delay = after > p->base_delay ? after : p->base_delay;
		if (elapsed + delay > p->max_throttle_wait) {
			log_warn(call->prefix,
				 "%s throttled by the server for %.1f s, over the "
				 "%.0f s limit (MODAL_MAX_THROTTLE_WAIT)",
				 call->method, elapsed + delay,
				 p->max_throttle_wait);
			return 0;
		}
		call->throttles++;
		call->client->stats.throttled++;
		log_info(call->prefix,
			 "%s throttled by the server (%s: %s); retrying in %.2f s",
			 call->method, grpc_code_name(st->code), st->message, delay);
	} else {
		if (!grpc_code_is_retryable(st->code) ||
		    call->retries >= p->max_retries)
			return 0;
		delay = grpc_retry_delay(p, call->retries + 1);
		if (elapsed + delay > p->max_total)
			return 0;
		call->retries++;
		call->client->stats.retries++;
		log_info(call->prefix, "%s failed with %s (%s); retry %u of %u in %.2f s",
			 call->method, grpc_code_name(st->code), st->message,
			 call->retries, p->max_retries, delay);
	}
	if (call->opts.deadline > 0 && util_now() + delay >= call->opts.deadline)
		return 0;
	schedule_retry(call, delay);
	return 1;
}

static void
on_close(void *arg, enum h2_close_reason reason, uint32_t error_code,
	 int permanent, const char *message)
{
	struct grpc_call *call = arg;
	struct grpc_status st;

	if (call->cancelled)
		return;
	event_del(call->timer);
	if (reason == H2_CLOSE_REFUSED && !call->have_local_error &&
	    call->resubmits < GRPC_MAX_RESUBMITS) {
		/* Not processed by the server, so sending it again cannot run
		 * it twice; this does not count as a retry. */
		call->resubmits++;
		call->client->stats.resubmitted++;
		log_debug(call->prefix, "%s not processed (%s); sending it again",
			  call->method, message != NULL ? message : "refused");
		schedule_retry(call, 0.0);
		return;
	}
	attempt_status(call, reason, error_code, message, &st);
	log_debug(call->prefix, "%s attempt %u: %s %s", call->method,
		  call->attempt + 1, grpc_code_name(st.code), st.message);
	if (st.code != GRPC_OK && !call->streaming && !permanent &&
	    maybe_retry(call, &st))
		return;
	if (st.code != GRPC_OK && call->streaming && !permanent &&
	    details_retry_after(call) >= 0.0 && maybe_retry(call, &st))
		return;
	call_finish(call, &st);
}

static void build_headers(void *arg, struct h2_headers *h);

static const struct h2stream_ops call_stream_ops = {
	.headers = build_headers,
	.on_header = on_header,
	.on_headers_done = on_headers_done,
	.on_data = on_data,
	.on_close = on_close,
};

/* Timers. */

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct grpc_call *call = arg;
	char text[96];

	if (call->cancelled || call->finished)
		return;
	if (call->retry_pending) {
		call_start_attempt(call);
		return;
	}
	if (!call->have_local_error) {
		snprintf(text, sizeof(text), "%s deadline of %.1f s exceeded",
			 call->method, call->opts.timeout);
		call_abort_attempt(call, GRPC_DEADLINE_EXCEEDED, text);
	}
	h2stream_cancel(&call->stream);
	on_close(call, H2_CLOSE_RESET, NGHTTP2_CANCEL, 0, NULL);
}

/* Attempts. */

/* Fill in the request headers.  The channel calls this when the attempt
 * gets a stream, perhaps after a wait, so grpc-timeout is the time left. */
static void
build_headers(void *arg, struct h2_headers *h)
{
	struct grpc_call *call = arg;
	struct grpc_client *client = call->client;
	char timeout[12];

	h2_headers_add(h, ":method", "POST", 0);
	h2_headers_add(h, ":scheme", client->url.tls ? "https" : "http", 0);
	h2_headers_add(h, ":path", call->path, 0);
	h2_headers_add(h, ":authority", client->url.authority, 0);
	h2_headers_add(h, "content-type", "application/grpc", 0);
	h2_headers_add(h, "te", "trailers", 0);
	h2_headers_add(h, "user-agent", "mfmodal-engine/" PACKAGE_VERSION, 0);
	h2_headers_add(h, "x-modal-client-type", client->client_type, 0);
	h2_headers_add(h, "x-modal-client-version", client->client_version, 0);
	h2_headers_add(h, "x-modal-token-id", client->token_id, 0);
	/* never entered into the HPACK tables (RFC 7541 section 7.1.3) */
	h2_headers_add(h, "x-modal-token-secret", client->token_secret,
		       NGHTTP2_NV_FLAG_NO_INDEX);
	h2_headers_add(h, "x-idempotency-key", call->idempotency_key, 0);
	h2_headers_addf(h, "x-retry-attempt", "%u", call->retries);
	if (call->retries + call->throttles > 0)
		h2_headers_addf(h, "x-retry-delay", "%.3f",
				util_now() - call->first_attempt_at);
	if (call->throttles > 0)
		h2_headers_addf(h, "x-throttle-retry-attempt", "%u",
				call->throttles);
	if (call->attempt_deadline > 0) {
		double left = call->attempt_deadline - util_now();

		/* The deadline timer ends the attempt; a server needs a
		 * positive timeout meanwhile. */
		if (grpc_timeout_encode(left > 0.001 ? left : 0.001, timeout) == 0)
			h2_headers_addf(h, "grpc-timeout", "%s", timeout);
	}
}

static void
reset_attempt(struct grpc_call *call)
{
	grpc_frame_reader_free(&call->reader);
	grpc_frame_reader_init(&call->reader, call->client->max_message_len);
	if (call->response != NULL)
		protobuf_c_message_free_unpacked(call->response, NULL);
	call->response = NULL;
	free(call->details);
	call->details = NULL;
	call->details_len = 0;
	call->http_status = 0;
	call->content_type_ok = 0;
	call->content_type[0] = '\0';
	call->have_status = 0;
	call->status_code = GRPC_UNKNOWN;
	free(call->status_message);
	call->status_message = NULL;
	call->messages = 0;
	call->have_local_error = 0;
}

static void
call_start_attempt(struct grpc_call *call)
{
	double timeout = call->opts.timeout;
	uint8_t frame[GRPC_FRAME_HEADER_LEN];
	struct grpc_status st;

	call->retry_pending = 0;
	if (call->opts.deadline > 0) {
		double left = call->opts.deadline - util_now();

		if (left <= 0) {
			set_status(&st, GRPC_DEADLINE_EXCEEDED,
				   "%s deadline passed before the call was sent",
				   call->method);
			call_finish(call, &st);
			return;
		}
		if (timeout <= 0 || left < timeout)
			timeout = left;
	}
	reset_attempt(call);
	call->attempt = call->retries + call->throttles + call->resubmits;
	call->client->stats.attempts++;

	if (call->stream.body != NULL)
		evbuffer_free(call->stream.body); /* the previous attempt's */
	h2stream_init(&call->stream, &call_stream_ops, call);
	call->stream.body = evbuffer_new();
	if (call->stream.body == NULL) {
		set_status(&st, GRPC_INTERNAL, "out of memory");
		call_finish(call, &st);
		return;
	}
	grpc_frame_header(frame, (uint32_t)call->request_len);
	evbuffer_add(call->stream.body, frame, sizeof(frame));
	evbuffer_add(call->stream.body, call->request, call->request_len);
	call->attempt_deadline = timeout > 0 ? util_now() + timeout : 0;
	if (timeout > 0) {
		struct timeval tv;

		tv.tv_sec = (time_t)timeout;
		tv.tv_usec = (suseconds_t)((timeout - (double)tv.tv_sec) * 1e6);
		event_add(call->timer, &tv);
	}
	h2channel_submit(call->client->channel, &call->stream);
}

static void
call_release(struct grpc_call *call)
{
	struct grpc_client *client = call->client;

	event_del(call->timer);
	TAILQ_REMOVE(&client->live, call, link);
	TAILQ_INSERT_TAIL(&client->dead, call, link);
	event_active(client->reap_ev, EV_TIMEOUT, 0);
}

static void
call_finish(struct grpc_call *call, const struct grpc_status *st)
{
	if (call->finished || call->cancelled)
		return;
	call->finished = 1;
	if (call->stream.body != NULL) {
		evbuffer_free(call->stream.body);
		call->stream.body = NULL;
	}
	if (st->code != GRPC_OK)
		log_debug(call->prefix, "%s failed: %s: %s", call->method,
			  grpc_code_name(st->code), st->message);
	if (call->streaming) {
		call->done_cb(call->arg, st);
	} else {
		call->unary_cb(call->arg, st,
			       st->code == GRPC_OK ? call->response : NULL);
	}
	/* The callback may have cancelled this call already. */
	if (!call->cancelled) {
		call->cancelled = 1;
		call_release(call);
	}
}

void
grpc_call_cancel(struct grpc_call *call)
{
	if (call == NULL || call->cancelled)
		return;
	call->cancelled = 1;
	h2stream_cancel(&call->stream);
	call_release(call);
}

static struct grpc_call *
call_new(struct grpc_client *client, const char *method,
	 const ProtobufCMessage *request,
	 const ProtobufCMessageDescriptor *response_type,
	 const struct grpc_call_options *opts)
{
	struct grpc_call *call = calloc(1, sizeof(*call));

	if (call == NULL)
		return NULL;
	call->client = client;
	call->id = ++client->next_call_id;
	call->response_type = response_type;
	if (opts != NULL)
		call->opts = *opts;
	snprintf(call->path, sizeof(call->path), GRPC_PATH_PREFIX "%s", method);
	call->method = call->path + strlen(GRPC_PATH_PREFIX);
	snprintf(call->prefix, sizeof(call->prefix), "%s%s[call %u]",
		 call->opts.log_prefix != NULL ? call->opts.log_prefix : "",
		 call->opts.log_prefix != NULL ? " " : "", call->id);
	call->opts.log_prefix = NULL; /* borrowed: not kept past this call */
	call->request_len = protobuf_c_message_get_packed_size(request);
	call->request = malloc(call->request_len + 1);
	call->timer = evtimer_new(client->base, timer_cb, call);
	if (call->request == NULL || call->timer == NULL ||
	    util_uuid4(call->idempotency_key) != 0) {
		if (call->timer != NULL)
			event_free(call->timer);
		free(call->request);
		free(call);
		return NULL;
	}
	protobuf_c_message_pack(request, call->request);
	grpc_frame_reader_init(&call->reader, client->max_message_len);
	call->first_attempt_at = util_now();
	TAILQ_INSERT_TAIL(&client->live, call, link);
	client->stats.calls++;
	return call;
}

struct grpc_call *
grpc_call_unary(struct grpc_client *client, const char *method,
		const ProtobufCMessage *request,
		const ProtobufCMessageDescriptor *response_type,
		const struct grpc_call_options *opts, grpc_unary_cb cb, void *arg)
{
	struct grpc_call *call = call_new(client, method, request,
					  response_type, opts);

	if (call == NULL)
		return NULL;
	call->unary_cb = cb;
	call->arg = arg;
	call_start_attempt(call);
	return call;
}

struct grpc_call *
grpc_call_server_stream(struct grpc_client *client, const char *method,
			const ProtobufCMessage *request,
			const ProtobufCMessageDescriptor *message_type,
			const struct grpc_call_options *opts,
			grpc_message_cb on_message, grpc_done_cb on_done,
			void *arg)
{
	struct grpc_call *call = call_new(client, method, request,
					  message_type, opts);

	if (call == NULL)
		return NULL;
	call->streaming = 1;
	call->message_cb = on_message;
	call->done_cb = on_done;
	call->arg = arg;
	call_start_attempt(call);
	return call;
}
