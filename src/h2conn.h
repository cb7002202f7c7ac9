#ifndef MFMODAL_H2CONN_H
#define MFMODAL_H2CONN_H

/* HTTP/2 client connections (nghttp2 on a libevent bufferevent) and the
 * channel that spreads requests over them.
 *
 * A channel serves one endpoint.  It keeps one connection and opens another
 * only when every open one is at the server's SETTINGS_MAX_CONCURRENT_STREAMS;
 * requests beyond that wait in a FIFO.  A connection that received GOAWAY
 * takes no new streams, and streams the server did not process are closed
 * with H2_CLOSE_REFUSED so the caller can send them again. */

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include "util.h"

struct h2conn;
struct h2channel;

enum h2_close_reason {
	H2_CLOSE_DONE,      /* the stream ended normally */
	H2_CLOSE_RESET,     /* the server reset the stream (error_code) */
	H2_CLOSE_REFUSED,   /* the server did not process it: safe to resend */
	H2_CLOSE_CONN_LOST, /* the connection broke; the server may have seen it */
	H2_CLOSE_CONNECT_FAILED, /* no connection could be made (message) */
};

/* The header block a header belongs to. */
enum h2_block {
	H2_BLOCK_RESPONSE, /* the response's first HEADERS */
	H2_BLOCK_TRAILERS,
};

/* The request headers of a stream, built on the stack just before it is
 * submitted.  nghttp2 copies every value then, so a request waiting for a
 * stream keeps no header memory.  Names are not copied: use literals. */
#define H2_HEADERS_MAX 24
struct h2_headers {
	nghttp2_nv nv[H2_HEADERS_MAX];
	size_t n;
	char scratch[256]; /* values formatted by h2_headers_addf() */
	size_t used;
};

void h2_headers_add(struct h2_headers *h, const char *name, const char *value,
		    uint8_t flags);
/* Add a header whose value is formatted into h->scratch.  A value that
 * does not fit leaves the header out. */
void h2_headers_addf(struct h2_headers *h, const char *name, const char *fmt,
		     ...) __attribute__((format(printf, 3, 4)));

/* Callbacks of one request.  None is called after h2stream_cancel(). */
struct h2stream_ops {
	/* Fill in the request headers.  Called when the stream is submitted to
	 * a connection, which may be some time after h2channel_submit(). */
	void (*headers)(void *arg, struct h2_headers *h);
	void (*on_header)(void *arg, enum h2_block block, const uint8_t *name,
			  size_t namelen, const uint8_t *value, size_t valuelen);
	/* A header block is complete; end_stream tells whether it also ended
	 * the stream (a "trailers-only" response when block is RESPONSE). */
	void (*on_headers_done)(void *arg, enum h2_block block, int end_stream);
	void (*on_data)(void *arg, const uint8_t *data, size_t len);
	/* The stream is over.  message describes a failure (may be NULL).  The
	 * h2stream may be freed or submitted again from inside this call. */
	void (*on_close)(void *arg, enum h2_close_reason reason,
			 uint32_t error_code, int permanent, const char *message);
};

enum h2stream_state {
	H2STREAM_IDLE,
	H2STREAM_QUEUED,
	H2STREAM_ACTIVE,
};

/* One request.  The caller allocates it (h2stream_init), fills in the
 * body, submits it to a channel and owns it throughout. */
struct h2stream {
	const struct h2stream_ops *ops;
	void *arg;
	struct evbuffer *body; /* request body; drained as it is sent */
	enum h2stream_state state;
	struct h2channel *channel; /* set by h2channel_submit */
	struct h2conn *conn;
	int32_t stream_id;
	TAILQ_ENTRY(h2stream) link;
};

void h2stream_init(struct h2stream *s, const struct h2stream_ops *ops,
		   void *arg);
/* Stop the request: drop it from the queue, or send RST_STREAM(CANCEL).
 * No callback follows. */
void h2stream_cancel(struct h2stream *s);

struct h2channel_options {
	SSL_CTX *ssl_ctx;        /* required for https endpoints; borrowed */
	double ping_interval;    /* seconds between PINGs while streams are active */
	double ping_timeout;     /* seconds to wait for a PING ACK */
	double connect_timeout;  /* seconds for TCP and TLS set-up */
	unsigned max_connections;
};
void h2channel_options_default(struct h2channel_options *opts);

/* Create a channel to url.  Nothing connects until the first submit. */
struct h2channel *h2channel_new(struct event_base *base, struct evdns_base *dns,
				const struct url *url,
				const struct h2channel_options *opts);
/* Close every connection; streams still open get H2_CLOSE_CONN_LOST. */
void h2channel_free(struct h2channel *ch);
/* Start s on a connection with room, or queue it.  Returns 0 or
 * ENGINE_ERR_CLOSED after h2channel_shutdown(). */
int h2channel_submit(struct h2channel *ch, struct h2stream *s);
const struct url *h2channel_url(const struct h2channel *ch);

/* Counters for tests and logs. */
struct h2channel_stats {
	unsigned connections_opened;
	unsigned connections_open;
	unsigned goaways_received;
	unsigned streams_refused;
	unsigned max_active_streams; /* maximum streams open at once on one connection */
	unsigned pings_sent;
	unsigned pings_acked;
	unsigned queued;
};
void h2channel_get_stats(const struct h2channel *ch, struct h2channel_stats *st);

#endif
