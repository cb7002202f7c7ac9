/* HTTP/2 client connections and the channel that shares them (see h2conn.h). */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "h2conn.h"
#include "log.h"
#include "tls.h"

/* Windows big enough that a 100 MiB message is never held up by flow control
 * at the speed of a long-distance link. */
#define H2_STREAM_WINDOW (16 * 1024 * 1024)
#define H2_CONNECTION_WINDOW (64 * 1024 * 1024)
/* Stop handing frames to the socket beyond this much unsent output. */
#define H2_OUTPUT_HIGH_WATER (1024 * 1024)

enum conn_state {
	CONN_CONNECTING, /* DNS, TCP, TLS and the server's first SETTINGS */
	CONN_READY,      /* HTTP/2 session open and taking new streams */
	CONN_DRAINING,   /* GOAWAY received: finishing the streams it has */
	CONN_CLOSED,     /* failed or finished; freed on the next loop turn */
};

/* The link between an nghttp2 stream and the caller's h2stream.  The
 * connection owns slots, so a caller may free its h2stream as soon as it is
 * cancelled or closed, while nghttp2 still tracks the stream. */
struct h2slot {
	struct h2stream *stream; /* NULL once cancelled */
	int32_t stream_id;
	enum h2_block block;
	TAILQ_ENTRY(h2slot) link;
};

struct h2conn {
	struct h2channel *ch;
	unsigned id;
	char prefix[24];
	enum conn_state state;
	struct bufferevent *bev;
	nghttp2_session *session;
	TAILQ_HEAD(, h2slot) slots;
	unsigned nslots;
	int ping_outstanding;
	struct event *ping_timer;
	struct event *ping_ack_timer;
	struct event *connect_timer;
	TAILQ_ENTRY(h2conn) link;
};

struct h2channel {
	struct event_base *base;
	struct evdns_base *dns;
	struct url url;
	struct h2channel_options opts;
	double ping_interval;
	TAILQ_HEAD(, h2conn) conns;
	TAILQ_HEAD(, h2conn) dead;
	TAILQ_HEAD(, h2stream) queue;
	unsigned nqueued;
	struct event *dispatch_ev;
	struct event *reap_ev;
	unsigned next_conn_id;
	struct h2channel_stats stats;
};

static void conn_fail(struct h2conn *c, int permanent, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void conn_flush(struct h2conn *c);
static void channel_schedule_dispatch(struct h2channel *ch);

void
h2channel_options_default(struct h2channel_options *opts)
{
	memset(opts, 0, sizeof(*opts));
	/* Pings only while streams are open and no more than once a minute,
	 * because servers reply to faster pings with GOAWAY "too_many_pings". */
	opts->ping_interval = 60.0;
	opts->ping_timeout = 20.0;
	opts->connect_timeout = 30.0;
	opts->max_connections = 16;
}

void
h2_headers_add(struct h2_headers *h, const char *name, const char *value,
	       uint8_t flags)
{
	nghttp2_nv *nv;

	if (h->n >= H2_HEADERS_MAX)
		return;
	nv = &h->nv[h->n++];
	nv->name = (uint8_t *)name;
	nv->namelen = strlen(name);
	nv->value = (uint8_t *)value;
	nv->valuelen = strlen(value);
	nv->flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | flags;
}

void
h2_headers_addf(struct h2_headers *h, const char *name, const char *fmt, ...)
{
	size_t room = sizeof(h->scratch) - h->used;
	char *value = h->scratch + h->used;
	va_list ap;
	int len;

	va_start(ap, fmt);
	len = vsnprintf(value, room, fmt, ap);
	va_end(ap);
	if (len < 0 || (size_t)len >= room)
		return;
	h->used += (size_t)len + 1;
	h2_headers_add(h, name, value, 0);
}

void
h2stream_init(struct h2stream *s, const struct h2stream_ops *ops, void *arg)
{
	memset(s, 0, sizeof(*s));
	s->ops = ops;
	s->arg = arg;
	s->state = H2STREAM_IDLE;
	s->stream_id = -1;
}

static struct timeval
to_timeval(double seconds)
{
	struct timeval tv;

	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	return tv;
}

/* A connection takes streams only after the server's first SETTINGS frame,
 * which RFC 9113 section 3.4 makes the first frame it sends, has set the
 * limit.  So a burst on a new connection never goes over it. */
static unsigned
conn_stream_limit(const struct h2conn *c)
{
	return nghttp2_session_get_remote_settings(
		c->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

/* Detach slot from its stream and tell the stream it is over. */
static void
slot_close(struct h2conn *c, struct h2slot *slot, enum h2_close_reason reason,
	   uint32_t error_code, int permanent, const char *message)
{
	struct h2stream *s = slot->stream;

	if (s == NULL)
		return;
	slot->stream = NULL;
	s->state = H2STREAM_IDLE;
	s->conn = NULL;
	if (reason == H2_CLOSE_REFUSED)
		c->ch->stats.streams_refused++;
	s->ops->on_close(s->arg, reason, error_code, permanent, message);
}

static void
slot_free(struct h2conn *c, struct h2slot *slot)
{
	TAILQ_REMOVE(&c->slots, slot, link);
	c->nslots--;
	free(slot);
}

static struct h2slot *
conn_slot_for(struct h2conn *c, int32_t stream_id)
{
	return nghttp2_session_get_stream_user_data(c->session, stream_id);
}

/* Mark c closed and fail its streams; it is freed on the next loop turn. */
static void
conn_close(struct h2conn *c, enum h2_close_reason reason, int permanent,
	   const char *message)
{
	struct h2channel *ch = c->ch;
	struct h2slot *slot;

	if (c->state == CONN_CLOSED)
		return;
	c->state = CONN_CLOSED;
	TAILQ_REMOVE(&ch->conns, c, link);
	TAILQ_INSERT_TAIL(&ch->dead, c, link);
	ch->stats.connections_open--;
	event_active(ch->reap_ev, EV_TIMEOUT, 0);

	/* The callbacks may cancel or submit other streams; take one slot at a
	 * time so nothing is visited after it was freed. */
	while ((slot = TAILQ_FIRST(&c->slots)) != NULL) {
		TAILQ_REMOVE(&c->slots, slot, link);
		c->nslots--;
		slot_close(c, slot, reason, 0, permanent, message);
		free(slot);
	}

	/* Queued requests wait for a connection.  When this one failed before
	 * it ever worked and no other connection is open, they fail too, so a
	 * wrong URL or certificate does not leave callers waiting forever. */
	if (reason == H2_CLOSE_CONNECT_FAILED && TAILQ_EMPTY(&ch->conns)) {
		struct h2stream *s;

		while ((s = TAILQ_FIRST(&ch->queue)) != NULL) {
			TAILQ_REMOVE(&ch->queue, s, link);
			ch->nqueued--;
			s->state = H2STREAM_IDLE;
			s->ops->on_close(s->arg, reason, 0, permanent, message);
		}
	}
	channel_schedule_dispatch(ch);
}

static void
conn_fail(struct h2conn *c, int permanent, const char *fmt, ...)
{
	char message[1024];
	va_list ap;
	enum h2_close_reason reason = c->state == CONN_CONNECTING
					      ? H2_CLOSE_CONNECT_FAILED
					      : H2_CLOSE_CONN_LOST;

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	if (c->state == CONN_CLOSED)
		return;
	log_write(c->nslots > 0 || reason == H2_CLOSE_CONNECT_FAILED
			  ? LOG_LEVEL_WARN
			  : LOG_LEVEL_DEBUG,
		  c->prefix, "%s", message);
	conn_close(c, reason, permanent, message);
}

static void
conn_free(struct h2conn *c)
{
	struct h2slot *slot;

	while ((slot = TAILQ_FIRST(&c->slots)) != NULL)
		slot_free(c, slot);
	if (c->session != NULL)
		nghttp2_session_del(c->session);
	if (c->bev != NULL)
		bufferevent_free(c->bev);
	if (c->ping_timer != NULL)
		event_free(c->ping_timer);
	if (c->ping_ack_timer != NULL)
		event_free(c->ping_ack_timer);
	if (c->connect_timer != NULL)
		event_free(c->connect_timer);
	free(c);
}

/* A connection that has nothing more to do (GOAWAY received and its last
 * stream closed, or the session finished) is closed quietly. */
static void
conn_check_idle(struct h2conn *c)
{
	if (c->state == CONN_CLOSED || c->state == CONN_CONNECTING ||
	    c->session == NULL)
		return;
	if ((c->state == CONN_DRAINING && c->nslots == 0) ||
	    (!nghttp2_session_want_read(c->session) &&
	     !nghttp2_session_want_write(c->session))) {
		log_debug(c->prefix, "closing: no more streams after GOAWAY");
		conn_close(c, H2_CLOSE_CONN_LOST, 0, "connection closed");
	}
}

static void
conn_flush(struct h2conn *c)
{
	int rv;

	if (c->state == CONN_CLOSED || c->session == NULL)
		return;
	rv = nghttp2_session_send(c->session);
	if (rv != 0) {
		conn_fail(c, 0, "HTTP/2 send failed: %s", nghttp2_strerror(rv));
		return;
	}
	conn_check_idle(c);
}

/* nghttp2 callbacks. */

static ssize_t
send_cb(nghttp2_session *session, const uint8_t *data, size_t length,
	int flags, void *user_data)
{
	struct h2conn *c = user_data;
	struct evbuffer *out = bufferevent_get_output(c->bev);

	if (evbuffer_get_length(out) >= H2_OUTPUT_HIGH_WATER)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (evbuffer_add(out, data, length) != 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return (ssize_t)length;
}

static int
begin_headers_cb(nghttp2_session *session, const nghttp2_frame *frame,
		 void *user_data)
{
	struct h2conn *c = user_data;
	struct h2slot *slot;

	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	slot = conn_slot_for(c, frame->hd.stream_id);
	if (slot != NULL)
		slot->block = frame->headers.cat == NGHTTP2_HCAT_HEADERS
				      ? H2_BLOCK_TRAILERS
				      : H2_BLOCK_RESPONSE;
	return 0;
}

static int
header_cb(nghttp2_session *session, const nghttp2_frame *frame,
	  const uint8_t *name, size_t namelen, const uint8_t *value,
	  size_t valuelen, uint8_t flags, void *user_data)
{
	struct h2conn *c = user_data;
	struct h2slot *slot;

	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	slot = conn_slot_for(c, frame->hd.stream_id);
	if (slot != NULL && slot->stream != NULL)
		slot->stream->ops->on_header(slot->stream->arg, slot->block, name,
					     namelen, value, valuelen);
	return 0;
}

static int
data_chunk_cb(nghttp2_session *session, uint8_t flags, int32_t stream_id,
	      const uint8_t *data, size_t len, void *user_data)
{
	struct h2conn *c = user_data;
	struct h2slot *slot = conn_slot_for(c, stream_id);

	if (slot != NULL && slot->stream != NULL)
		slot->stream->ops->on_data(slot->stream->arg, data, len);
	return 0;
}

static void
conn_on_goaway(struct h2conn *c, const nghttp2_goaway *goaway)
{
	struct h2channel *ch = c->ch;
	int too_many_pings =
		goaway->error_code == NGHTTP2_ENHANCE_YOUR_CALM &&
		goaway->opaque_data_len >= 14 &&
		memmem(goaway->opaque_data, goaway->opaque_data_len,
		       "too_many_pings", 14) != NULL;

	ch->stats.goaways_received++;
	log_info(c->prefix,
		 "GOAWAY received (error %s, last stream %d, %u streams open): "
		 "no new streams on this connection",
		 nghttp2_http2_strerror(goaway->error_code),
		 goaway->last_stream_id, c->nslots);
	if (too_many_pings) {
		ch->ping_interval *= 2;
		log_warn(c->prefix,
			 "the server found pings too frequent; ping interval is "
			 "now %.0f s",
			 ch->ping_interval);
	}
	if (c->state == CONN_READY)
		c->state = CONN_DRAINING;
	channel_schedule_dispatch(ch);
}

static int
frame_recv_cb(nghttp2_session *session, const nghttp2_frame *frame,
	      void *user_data)
{
	struct h2conn *c = user_data;
	struct h2slot *slot;

	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		slot = conn_slot_for(c, frame->hd.stream_id);
		if (slot != NULL && slot->stream != NULL)
			slot->stream->ops->on_headers_done(
				slot->stream->arg, slot->block,
				(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
		break;
	case NGHTTP2_SETTINGS:
		if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
			if (c->state == CONN_CONNECTING) {
				c->state = CONN_READY;
				event_del(c->connect_timer);
			}
			log_debug(c->prefix, "server allows %u concurrent streams",
				  conn_stream_limit(c));
			channel_schedule_dispatch(c->ch);
		}
		break;
	case NGHTTP2_PING:
		if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
			c->ch->stats.pings_acked++;
			c->ping_outstanding = 0;
			event_del(c->ping_ack_timer);
		}
		break;
	case NGHTTP2_GOAWAY:
		conn_on_goaway(c, &frame->goaway);
		break;
	default:
		break;
	}
	return 0;
}

static int
stream_close_cb(nghttp2_session *session, int32_t stream_id,
		uint32_t error_code, void *user_data)
{
	struct h2conn *c = user_data;
	struct h2slot *slot = conn_slot_for(c, stream_id);
	enum h2_close_reason reason = H2_CLOSE_DONE;
	char message[128] = "";

	if (slot == NULL)
		return 0;
	nghttp2_session_set_stream_user_data(session, stream_id, NULL);
	if (error_code == NGHTTP2_REFUSED_STREAM) {
		reason = H2_CLOSE_REFUSED;
		snprintf(message, sizeof(message),
			 "stream %d not processed by the server", stream_id);
	} else if (error_code != NGHTTP2_NO_ERROR) {
		reason = H2_CLOSE_RESET;
		snprintf(message, sizeof(message), "stream %d reset: %s",
			 stream_id, nghttp2_http2_strerror(error_code));
	}
	TAILQ_REMOVE(&c->slots, slot, link);
	c->nslots--;
	slot_close(c, slot, reason, error_code, 0, message[0] ? message : NULL);
	free(slot);
	channel_schedule_dispatch(c->ch);
	return 0;
}

static int
frame_not_send_cb(nghttp2_session *session, const nghttp2_frame *frame,
		  int lib_error_code, void *user_data)
{
	struct h2conn *c = user_data;
	struct h2slot *slot;

	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	/* A request that never left: after GOAWAY, or over the stream limit. */
	slot = conn_slot_for(c, frame->hd.stream_id);
	if (slot == NULL)
		return 0;
	nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, NULL);
	TAILQ_REMOVE(&c->slots, slot, link);
	c->nslots--;
	slot_close(c, slot, H2_CLOSE_REFUSED, 0, 0, nghttp2_strerror(lib_error_code));
	free(slot);
	channel_schedule_dispatch(c->ch);
	return 0;
}

static ssize_t
body_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
	     size_t length, uint32_t *data_flags, nghttp2_data_source *source,
	     void *user_data)
{
	struct h2slot *slot = source->ptr;
	int n;

	if (slot->stream == NULL)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	n = evbuffer_remove(slot->stream->body, buf, length);
	if (n < 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (evbuffer_get_length(slot->stream->body) == 0)
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
	return n;
}

/* Keepalive. */

static void
ping_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2conn *c = arg;
	struct timeval tv = to_timeval(c->ch->ping_interval);
	struct timeval ack = to_timeval(c->ch->opts.ping_timeout);

	event_add(c->ping_timer, &tv);
	if (c->state == CONN_CLOSED || c->nslots == 0 || c->ping_outstanding)
		return;
	if (nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, NULL) != 0)
		return;
	c->ping_outstanding = 1;
	c->ch->stats.pings_sent++;
	event_add(c->ping_ack_timer, &ack);
	conn_flush(c);
}

static void
ping_ack_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2conn *c = arg;

	conn_fail(c, 0, "keepalive PING not answered within %.0f s",
		  c->ch->opts.ping_timeout);
}

static void
connect_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2conn *c = arg;

	if (c->state == CONN_CONNECTING)
		conn_fail(c, 0,
			  "connecting to %s timed out after %.0f s (no TCP "
			  "connection, TLS handshake or HTTP/2 SETTINGS)",
			  c->ch->url.authority, c->ch->opts.connect_timeout);
}

/* bufferevent callbacks. */

static void
read_cb(struct bufferevent *bev, void *arg)
{
	struct h2conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (c->state != CONN_CLOSED && evbuffer_get_length(in) > 0) {
		size_t len = evbuffer_get_contiguous_space(in);
		unsigned char *data = evbuffer_pullup(in, (ssize_t)len);
		ssize_t rv = nghttp2_session_mem_recv(c->session, data, len);

		if (rv < 0) {
			conn_fail(c, 0, "HTTP/2 protocol error from the server: %s",
				  nghttp2_strerror((int)rv));
			return;
		}
		evbuffer_drain(in, (size_t)rv);
	}
	conn_flush(c);
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
	conn_flush(arg);
}

static int
conn_start_session(struct h2conn *c)
{
	nghttp2_session_callbacks *cbs;
	nghttp2_settings_entry settings[] = {
		{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
		{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
	};
	int rv;

	if (nghttp2_session_callbacks_new(&cbs) != 0)
		return -1;
	nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, begin_headers_cb);
	nghttp2_session_callbacks_set_on_header_callback(cbs, header_cb);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, data_chunk_cb);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, frame_recv_cb);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, stream_close_cb);
	nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, frame_not_send_cb);
	rv = nghttp2_session_client_new(&c->session, cbs, c);
	nghttp2_session_callbacks_del(cbs);
	if (rv != 0)
		return -1;
	if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings,
				    sizeof(settings) / sizeof(settings[0])) != 0 ||
	    nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
						  H2_CONNECTION_WINDOW) != 0)
		return -1;
	return 0;
}

static void
conn_on_connected(struct h2conn *c)
{
	struct timeval tv = to_timeval(c->ch->ping_interval);
	evutil_socket_t fd = bufferevent_getfd(c->bev);
	int one = 1;

	if (fd >= 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c->ch->url.tls) {
		SSL *ssl = bufferevent_openssl_get_ssl(c->bev);

		if (!tls_alpn_is(ssl, "h2")) {
			conn_fail(c, 1,
				  "server %s did not negotiate h2 (ALPN); it "
				  "does not speak gRPC over HTTP/2",
				  c->ch->url.authority);
			return;
		}
	}
	if (conn_start_session(c) != 0) {
		conn_fail(c, 0, "cannot start an HTTP/2 session");
		return;
	}
	log_debug(c->prefix, "connected to %s (%s)", c->ch->url.authority,
		  c->ch->url.tls ? "TLS, h2" : "h2c");
	event_add(c->ping_timer, &tv);
	conn_flush(c);
}

static void
event_cb(struct bufferevent *bev, short events, void *arg)
{
	struct h2conn *c = arg;
	char message[768] = "";

	if (events & BEV_EVENT_CONNECTED) {
		conn_on_connected(c);
		return;
	}
	if (!(events & (BEV_EVENT_ERROR | BEV_EVENT_EOF | BEV_EVENT_TIMEOUT)))
		return;

	int dns_error = bufferevent_socket_get_dns_error(bev);
	int sock_error = EVUTIL_SOCKET_ERROR();
	unsigned long ssl_error = c->ch->url.tls ? bufferevent_get_openssl_error(bev) : 0;

	if (dns_error != 0) {
		conn_fail(c, 0, "cannot resolve %s: %s", c->ch->url.host,
			  evutil_gai_strerror(dns_error));
		return;
	}
	if (c->state == CONN_CONNECTING && c->ch->url.tls && ssl_error != 0) {
		SSL *ssl = bufferevent_openssl_get_ssl(bev);
		long verify = SSL_get_verify_result(ssl);

		if (verify != X509_V_OK) {
			tls_describe_failure(ssl, c->ch->url.host, message,
					     sizeof(message));
		} else {
			char one[256];

			ERR_error_string_n(ssl_error, one, sizeof(one));
			snprintf(message, sizeof(message),
				 "TLS handshake with %s failed: %s",
				 c->ch->url.authority, one);
		}
		while (bufferevent_get_openssl_error(bev) != 0)
			;
		conn_fail(c, 1, "%s", message);
		return;
	}
	if (events & BEV_EVENT_EOF) {
		conn_fail(c, 0, "connection to %s closed by the server",
			  c->ch->url.authority);
		return;
	}
	conn_fail(c, 0, "connection to %s failed: %s", c->ch->url.authority,
		  sock_error != 0 ? evutil_socket_error_to_string(sock_error)
				  : "unknown error");
}

static struct h2conn *
conn_open(struct h2channel *ch)
{
	struct h2conn *c = calloc(1, sizeof(*c));
	struct timeval tv = to_timeval(ch->opts.connect_timeout);
	char err[512];

	if (c == NULL)
		return NULL;
	c->ch = ch;
	c->id = ++ch->next_conn_id;
	snprintf(c->prefix, sizeof(c->prefix), "[conn %u]", c->id);
	c->state = CONN_CONNECTING;
	TAILQ_INIT(&c->slots);
	TAILQ_INSERT_TAIL(&ch->conns, c, link);
	ch->stats.connections_opened++;
	ch->stats.connections_open++;

	c->ping_timer = evtimer_new(ch->base, ping_timer_cb, c);
	c->ping_ack_timer = evtimer_new(ch->base, ping_ack_timer_cb, c);
	c->connect_timer = evtimer_new(ch->base, connect_timer_cb, c);
	if (c->ping_timer == NULL || c->ping_ack_timer == NULL ||
	    c->connect_timer == NULL) {
		conn_fail(c, 0, "out of memory");
		return c;
	}

	if (ch->url.tls) {
		SSL *ssl = tls_ssl_new(ch->opts.ssl_ctx, ch->url.host, err, sizeof(err));

		if (ssl == NULL) {
			conn_fail(c, 1, "%s", err);
			return c;
		}
		c->bev = bufferevent_openssl_socket_new(
			ch->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
			BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
		if (c->bev == NULL)
			SSL_free(ssl);
		else
			bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	} else {
		c->bev = bufferevent_socket_new(
			ch->base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	}
	if (c->bev == NULL) {
		conn_fail(c, 0, "cannot create a socket for %s", ch->url.authority);
		return c;
	}
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	event_add(c->connect_timer, &tv);
	log_debug(c->prefix, "connecting to %s", ch->url.authority);
	if (bufferevent_socket_connect_hostname(c->bev, ch->dns, AF_UNSPEC,
						ch->url.host,
						atoi(ch->url.port)) != 0)
		conn_fail(c, 0, "cannot connect to %s", ch->url.authority);
	return c;
}

/* Start s on c.  Returns 0, or -1 when c cannot take new streams. */
static int
conn_start_stream(struct h2conn *c, struct h2stream *s)
{
	struct h2slot *slot = calloc(1, sizeof(*slot));
	nghttp2_data_provider provider;
	struct h2_headers h;
	int32_t id;

	if (slot == NULL)
		return -1;
	slot->stream = s;
	provider.source.ptr = slot;
	provider.read_callback = body_read_cb;
	h.n = 0;
	h.used = 0;
	s->ops->headers(s->arg, &h);
	id = nghttp2_submit_request(c->session, NULL, h.nv, h.n,
				    s->body != NULL ? &provider : NULL, slot);
	if (id < 0) {
		free(slot);
		if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE)
			c->state = CONN_DRAINING; /* stream ids used up */
		return -1;
	}
	slot->stream_id = id;
	TAILQ_INSERT_TAIL(&c->slots, slot, link);
	c->nslots++;
	if (c->nslots > c->ch->stats.max_active_streams)
		c->ch->stats.max_active_streams = c->nslots;
	s->state = H2STREAM_ACTIVE;
	s->conn = c;
	s->stream_id = id;
	return 0;
}

static struct h2conn *
channel_pick(struct h2channel *ch, int *connecting, unsigned *usable)
{
	struct h2conn *c;

	*connecting = 0;
	*usable = 0;
	TAILQ_FOREACH(c, &ch->conns, link) {
		if (c->state == CONN_CONNECTING)
			*connecting = 1;
		if (c->state == CONN_CONNECTING || c->state == CONN_READY)
			(*usable)++;
		if (c->state == CONN_READY && c->nslots < conn_stream_limit(c))
			return c;
	}
	return NULL;
}

static void
dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2channel *ch = arg;
	struct h2stream *s;

	while ((s = TAILQ_FIRST(&ch->queue)) != NULL) {
		int connecting;
		unsigned usable;
		struct h2conn *c = channel_pick(ch, &connecting, &usable);

		if (c == NULL) {
			if (!connecting && usable < ch->opts.max_connections)
				conn_open(ch);
			break;
		}
		TAILQ_REMOVE(&ch->queue, s, link);
		ch->nqueued--;
		if (conn_start_stream(c, s) != 0) {
			TAILQ_INSERT_HEAD(&ch->queue, s, link);
			ch->nqueued++;
			if (c->state == CONN_READY)
				break; /* out of memory: try on the next turn */
			continue;
		}
		conn_flush(c);
	}
	ch->stats.queued = ch->nqueued;
}

static void
channel_schedule_dispatch(struct h2channel *ch)
{
	event_active(ch->dispatch_ev, EV_TIMEOUT, 0);
}

static void
reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2channel *ch = arg;
	struct h2conn *c;

	while ((c = TAILQ_FIRST(&ch->dead)) != NULL) {
		TAILQ_REMOVE(&ch->dead, c, link);
		conn_free(c);
	}
}

struct h2channel *
h2channel_new(struct event_base *base, struct evdns_base *dns,
	      const struct url *url, const struct h2channel_options *opts)
{
	struct h2channel *ch = calloc(1, sizeof(*ch));

	if (ch == NULL)
		return NULL;
	ch->base = base;
	ch->dns = dns;
	ch->url = *url;
	ch->opts = *opts;
	ch->ping_interval = opts->ping_interval;
	TAILQ_INIT(&ch->conns);
	TAILQ_INIT(&ch->dead);
	TAILQ_INIT(&ch->queue);
	ch->dispatch_ev = event_new(base, -1, 0, dispatch_cb, ch);
	ch->reap_ev = event_new(base, -1, 0, reap_cb, ch);
	if (ch->dispatch_ev == NULL || ch->reap_ev == NULL) {
		h2channel_free(ch);
		return NULL;
	}
	return ch;
}

void
h2channel_free(struct h2channel *ch)
{
	struct h2conn *c;
	struct h2stream *s;

	if (ch == NULL)
		return;
	while ((s = TAILQ_FIRST(&ch->queue)) != NULL) {
		TAILQ_REMOVE(&ch->queue, s, link);
		s->state = H2STREAM_IDLE;
	}
	while ((c = TAILQ_FIRST(&ch->conns)) != NULL)
		conn_close(c, H2_CLOSE_CONN_LOST, 0, "channel closed");
	if (ch->reap_ev != NULL)
		reap_cb(-1, 0, ch);
	if (ch->dispatch_ev != NULL)
		event_free(ch->dispatch_ev);
	if (ch->reap_ev != NULL)
		event_free(ch->reap_ev);
	free(ch);
}

int
h2channel_submit(struct h2channel *ch, struct h2stream *s)
{
	s->state = H2STREAM_QUEUED;
	s->channel = ch;
	s->conn = NULL;
	s->stream_id = -1;
	TAILQ_INSERT_TAIL(&ch->queue, s, link);
	ch->nqueued++;
	channel_schedule_dispatch(ch);
	return 0;
}

void
h2stream_cancel(struct h2stream *s)
{
	struct h2conn *c = s->conn;
	struct h2slot *slot;

	if (s->state == H2STREAM_IDLE)
		return;
	if (s->state == H2STREAM_QUEUED) {
		TAILQ_REMOVE(&s->channel->queue, s, link);
		s->channel->nqueued--;
		s->state = H2STREAM_IDLE;
		return;
	}
	TAILQ_FOREACH(slot, &c->slots, link) {
		if (slot->stream == s) {
			slot->stream = NULL;
			break;
		}
	}
	s->state = H2STREAM_IDLE;
	s->conn = NULL;
	if (c->state != CONN_CLOSED && s->stream_id > 0) {
		nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE,
					  s->stream_id, NGHTTP2_CANCEL);
		conn_flush(c);
	}
}

const struct url *
h2channel_url(const struct h2channel *ch)
{
	return &ch->url;
}

void
h2channel_get_stats(const struct h2channel *ch, struct h2channel_stats *st)
{
	*st = ch->stats;
	st->queued = ch->nqueued;
}
