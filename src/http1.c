/* HTTP/1.1 client connections and the pool that shares them (see http1.h). */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "http1.h"
#include "log.h"
#include "tls.h"

/* TLS bodies are read from the file into HTTP1_TLS_SLABS reusable buffers
 * of HTTP1_TLS_STEP bytes each, so at most HTTP1_TLS_BUFFERED bytes wait for
 * the TLS layer.  Reusing the buffers matters: fresh 256 KiB allocations
 * come from mmap() and cost a page fault and a zeroed page per 4 KiB. */
#define HTTP1_TLS_STEP (256 * 1024)
#define HTTP1_TLS_SLABS 4
#define HTTP1_TLS_BUFFERED (HTTP1_TLS_SLABS * HTTP1_TLS_STEP)
/* The maximum bytes of one socket read or write.  libevent's default of
 * 16 KiB costs a system call per 16 KiB on fast local links. */
#define HTTP1_MAX_SINGLE_IO (1024 * 1024)

enum body_kind {
	BODY_NONE,
	BODY_MEMORY,
	BODY_FILE,
};

struct http1_request {
	char *method;
	char *target;
	struct evbuffer *fields; /* "Name: value\r\n" lines */
	enum body_kind body_kind;
	char *body_data;
	size_t body_len;
	int body_fd;
	uint64_t body_offset;
	uint64_t body_length;
	const struct http1_request_ops *ops;
	void *arg;

	struct http1_pool *pool;
	struct http1_conn *conn; /* while it runs (or waits for its connection) */
	int queued;
	int reused;
	int response_started;
	uint64_t request_bytes;  /* head plus body */
	uint64_t head_bytes;
	uint64_t drained;        /* bytes of this request written so far */
	uint64_t file_next;      /* TLS only: next body byte to read */
	int all_written;
	double started;
	TAILQ_ENTRY(http1_request) link;
};

enum conn_state {
	CONN_CONNECTING, /* DNS, TCP and TLS set-up, for the request it was opened for */
	CONN_IDLE,       /* open, waiting for a request */
	CONN_BUSY,       /* sending a request or reading its response */
	CONN_CLOSED,     /* failed or finished; freed on the next loop turn */
};

/* One TLS body buffer.  The connection holds a reference, and so does the
 * output evbuffer while the data is queued there.  The evbuffer can outlive
 * the connection, because libevent may defer freeing the bufferevent. */
struct body_slab {
	int refs;
	int queued;
	unsigned char data[HTTP1_TLS_STEP];
};

struct http1_conn {
	struct http1_pool *pool;
	unsigned id;
	char prefix[32];
	enum conn_state state;
	struct bufferevent *bev;
	struct http1_request *req;
	struct http1_parser parser;
	int parser_ready;
	unsigned served;
	struct event *timer; /* the connect timeout, then the idle timeout */
	struct body_slab *slabs[HTTP1_TLS_SLABS];
	struct evbuffer_cb_entry *drain_cb; /* on the output buffer */
	TAILQ_ENTRY(http1_conn) link;
};

struct http1_pool {
	struct event_base *base;
	struct evdns_base *dns;
	struct url url;
	char host_header[272];
	struct http1_pool_options opts;
	TAILQ_HEAD(, http1_conn) conns;
	TAILQ_HEAD(, http1_conn) dead;
	TAILQ_HEAD(, http1_request) queue;
	unsigned nconns;
	struct event *dispatch_ev;
	struct event *reap_ev;
	unsigned next_conn_id;
	struct http1_pool_stats stats;
};

static void conn_close(struct http1_conn *c);
static void conn_finish_request(struct http1_conn *c, enum http1_result result,
				const char *message);
static void pool_schedule_dispatch(struct http1_pool *pool);

const char *
http1_result_name(enum http1_result result)
{
	switch (result) {
	case HTTP1_OK: return "ok";
	case HTTP1_ERR_CONNECT: return "connect failed";
	case HTTP1_ERR_TLS_VERIFY: return "certificate rejected";
	case HTTP1_ERR_CLOSED: return "connection closed";
	case HTTP1_ERR_TIMEOUT: return "timed out";
	case HTTP1_ERR_PROTOCOL: return "invalid response";
	case HTTP1_ERR_ABORTED: return "aborted";
	case HTTP1_ERR_BODY: return "request body unreadable";
	case HTTP1_ERR_NOMEM: return "out of memory";
	}
	return "unknown";
}

static struct timeval
to_timeval(double seconds)
{
	struct timeval tv;

	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	return tv;
}

/* Requests. */

struct http1_request *
http1_request_new(const char *method, const char *target,
		  const struct http1_request_ops *ops, void *arg)
{
	struct http1_request *req = calloc(1, sizeof(*req));

	if (req == NULL)
		return NULL;
	req->method = strdup(method);
	req->target = strdup(target);
	req->fields = evbuffer_new();
	req->body_fd = -1;
	req->ops = ops;
	req->arg = arg;
	if (req->method == NULL || req->target == NULL || req->fields == NULL) {
		http1_request_free(req);
		return NULL;
	}
	return req;
}

void
http1_request_free(struct http1_request *req)
{
	if (req == NULL)
		return;
	free(req->method);
	free(req->target);
	if (req->fields != NULL)
		evbuffer_free(req->fields);
	free(req->body_data);
	free(req);
}

int
http1_request_add_header(struct http1_request *req, const char *name,
			 const char *value)
{
	/* A CR or LF would let a value start a header of its own. */
	if (strpbrk(name, "\r\n:") != NULL || strpbrk(value, "\r\n") != NULL)
		return ENGINE_ERR_INVALID;
	return evbuffer_add_printf(req->fields, "%s: %s\r\n", name, value) < 0
		       ? ENGINE_ERR_NOMEM
		       : ENGINE_OK;
}

int
http1_request_set_body(struct http1_request *req, const void *data, size_t len)
{
	free(req->body_data);
	req->body_data = malloc(len ? len : 1);
	if (req->body_data == NULL)
		return ENGINE_ERR_NOMEM;
	memcpy(req->body_data, data, len);
	req->body_len = len;
	req->body_kind = BODY_MEMORY;
	return ENGINE_OK;
}

int
http1_request_set_body_file(struct http1_request *req, int fd, uint64_t offset,
			    uint64_t length)
{
	req->body_kind = BODY_FILE;
	req->body_fd = fd;
	req->body_offset = offset;
	req->body_length = length;
	return ENGINE_OK;
}

int
http1_request_reused_connection(const struct http1_request *req)
{
	return req->reused;
}

int
http1_request_response_started(const struct http1_request *req)
{
	return req->response_started;
}

static uint64_t
request_body_length(const struct http1_request *req)
{
	switch (req->body_kind) {
	case BODY_MEMORY: return req->body_len;
	case BODY_FILE: return req->body_length;
	case BODY_NONE: break;
	}
	return 0;
}

/* Connections. */

static void
conn_set_io_timeouts(struct http1_conn *c, int reading)
{
	struct timeval tv = to_timeval(c->pool->opts.io_timeout);

	/* While the body goes out, the server may rightly send nothing, so
	 * the read timeout starts only once the request is written. */
	bufferevent_set_timeouts(c->bev, reading ? &tv : NULL, &tv);
}

/* Move the connection to the dead list; it is freed on the next loop turn,
 * so callers up the stack may still look at it. */
static void
conn_close(struct http1_conn *c)
{
	struct http1_pool *pool = c->pool;

	if (c->state == CONN_CLOSED)
		return;
	c->state = CONN_CLOSED;
	if (c->bev != NULL) {
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
		bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
		/* libevent may free the bufferevent after c is gone. */
		if (c->drain_cb != NULL)
			evbuffer_remove_cb_entry(bufferevent_get_output(c->bev),
						 c->drain_cb);
		c->drain_cb = NULL;
	}
	if (c->timer != NULL)
		event_del(c->timer);
	TAILQ_REMOVE(&pool->conns, c, link);
	TAILQ_INSERT_TAIL(&pool->dead, c, link);
	pool->nconns--;
	pool->stats.connections_open--;
	event_active(pool->reap_ev, EV_TIMEOUT, 0);
	pool_schedule_dispatch(pool);
}

static void
slab_release(struct body_slab *slab)
{
	if (--slab->refs == 0)
		free(slab);
}

/* evbuffer_add_reference() cleanup: the slab's data left the buffer. */
static void
slab_drained(const void *data, size_t len, void *arg)
{
	struct body_slab *slab = arg;

	slab->queued = 0;
	slab_release(slab);
}

static void
conn_free(struct http1_conn *c)
{
	if (c->parser_ready)
		http1_parser_free(&c->parser);
	if (c->bev != NULL)
		bufferevent_free(c->bev);
	if (c->timer != NULL)
		event_free(c->timer);
	for (int i = 0; i < HTTP1_TLS_SLABS; i++)
		if (c->slabs[i] != NULL)
			slab_release(c->slabs[i]);
	free(c);
}

static void
conn_go_idle(struct http1_conn *c)
{
	struct timeval tv = to_timeval(c->pool->opts.idle_timeout);

	c->state = CONN_IDLE;
	bufferevent_set_timeouts(c->bev, NULL, NULL);
	event_add(c->timer, &tv);
	if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
		log_debug(c->prefix, "unexpected bytes after a response; closing");
		conn_close(c);
		return;
	}
	pool_schedule_dispatch(c->pool);
}

/* End the connection's request: call on_done, free the request, then keep
 * the connection for the next request or close it. */
static void
conn_finish_request(struct http1_conn *c, enum http1_result result,
		    const char *message)
{
	struct http1_request *req = c->req;
	int keep = result == HTTP1_OK && c->parser_ready && c->parser.keep_alive &&
		   req != NULL && req->all_written && c->state == CONN_BUSY;

	if (req == NULL) {
		conn_close(c);
		return;
	}
	c->req = NULL;
	req->conn = NULL;
	if (!keep)
		conn_close(c);
	if (result == HTTP1_OK) {
		c->pool->stats.requests_completed++;
		log_debug(c->prefix, "%s %s -> %d (%.3f s)", req->method, req->target,
			  c->parser.resp.status, util_now() - req->started);
	} else {
		log_debug(c->prefix, "%s %s failed: %s", req->method, req->target,
			  message != NULL ? message : http1_result_name(result));
	}
	req->ops->on_done(req->arg, result,
			  result == HTTP1_OK ? &c->parser.resp : NULL, message);
	http1_request_free(req);
	if (c->parser_ready) {
		http1_parser_free(&c->parser);
		c->parser_ready = 0;
	}
	c->served++;
	if (keep && c->state == CONN_BUSY)
		conn_go_idle(c);
}

static void
conn_fail(struct http1_conn *c, enum http1_result result, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
conn_fail(struct http1_conn *c, enum http1_result result, const char *fmt, ...)
{
	char message[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	if (c->state == CONN_CLOSED)
		return;
	if (c->req == NULL) {
		log_debug(c->prefix, "%s", message);
		conn_close(c);
		return;
	}
	conn_finish_request(c, result, message);
}

static int
parser_on_headers(void *arg, const struct http1_response *resp)
{
	struct http1_conn *c = arg;

	return c->req->ops->on_response(c->req->arg, resp);
}

static int
parser_on_body(void *arg, const void *data, size_t len)
{
	struct http1_conn *c = arg;

	return c->req->ops->on_body(c->req->arg, data, len);
}

/* Queue more of a file body for TLS, into whichever slabs are free. */
static int
conn_refill_tls_body(struct http1_conn *c)
{
	struct http1_request *req = c->req;
	struct evbuffer *out = bufferevent_get_output(c->bev);

	for (int i = 0; i < HTTP1_TLS_SLABS && req->file_next < req->body_length; i++) {
		uint64_t left = req->body_length - req->file_next;
		size_t step = left < HTTP1_TLS_STEP ? (size_t)left : HTTP1_TLS_STEP;
		struct body_slab *slab = c->slabs[i];
		ssize_t n;

		if (slab == NULL) {
			slab = c->slabs[i] = malloc(sizeof(*slab));
			if (slab == NULL)
				return ENGINE_ERR_NOMEM;
			slab->refs = 1;
			slab->queued = 0;
		}
		if (slab->queued)
			continue;
		n = pread(req->body_fd, slab->data, step,
			  (off_t)(req->body_offset + req->file_next));
		if (n == 0) {
			conn_fail(c, HTTP1_ERR_BODY,
				  "the file ended %llu bytes before the request "
				  "body did (was it truncated?)",
				  (unsigned long long)left);
			return ENGINE_ERR_IO;
		}
		if (n < 0) {
			conn_fail(c, HTTP1_ERR_BODY,
				  "cannot read the request body at offset %llu: %s",
				  (unsigned long long)(req->body_offset + req->file_next),
				  strerror(errno));
			return ENGINE_ERR_IO;
		}
		slab->queued = 1;
		slab->refs++;
		if (evbuffer_add_reference(out, slab->data, (size_t)n, slab_drained,
					   slab) != 0) {
			slab->queued = 0;
			slab->refs--;
			return ENGINE_ERR_NOMEM;
		}
		req->file_next += (uint64_t)n;
	}
	return ENGINE_OK;
}

/* Counts what leaves the output buffer: progress for the caller, and the
 * moment the whole request is written, when the read timeout starts. */
static void
output_drained_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
		  void *arg)
{
	struct http1_conn *c = arg;
	struct http1_request *req = c->req;
	uint64_t body_sent;

	if (info->n_deleted == 0 || req == NULL || c->state != CONN_BUSY)
		return;
	req->drained += info->n_deleted;
	if (req->ops->on_progress != NULL && req->drained > req->head_bytes) {
		body_sent = req->drained - req->head_bytes;
		req->ops->on_progress(req->arg, body_sent);
	}
	if (!req->all_written && req->drained >= req->request_bytes) {
		req->all_written = 1;
		conn_set_io_timeouts(c, 1);
	}
}

static void
conn_start_request(struct http1_conn *c, struct http1_request *req)
{
	struct http1_pool *pool = c->pool;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	uint64_t body_length = request_body_length(req);
	size_t before = evbuffer_get_length(out);
	int rc = 0;

	event_del(c->timer);
	c->state = CONN_BUSY;
	c->req = req;
	req->conn = c;
	req->reused = c->served > 0;
	req->started = util_now();
	if (req->reused)
		pool->stats.requests_on_reused_connections++;
	http1_parser_init(&c->parser, strcmp(req->method, "HEAD") == 0,
			  parser_on_headers, parser_on_body, c);
	c->parser_ready = 1;

	rc |= evbuffer_add_printf(out, "%s %s HTTP/1.1\r\nHost: %s\r\n",
				  req->method, req->target, pool->host_header) < 0;
	rc |= evbuffer_add_buffer(out, req->fields);
	if (req->body_kind != BODY_NONE || strcmp(req->method, "PUT") == 0 ||
	    strcmp(req->method, "POST") == 0)
		rc |= evbuffer_add_printf(out, "Content-Length: %llu\r\n",
					  (unsigned long long)body_length) < 0;
	rc |= evbuffer_add(out, "\r\n", 2);
	req->head_bytes = evbuffer_get_length(out) - before;
	req->request_bytes = req->head_bytes + body_length;
	if (rc != 0) {
		conn_fail(c, HTTP1_ERR_NOMEM, "out of memory building the request");
		return;
	}
	log_debug(c->prefix, "%s %s (%llu body bytes%s)", req->method, req->target,
		  (unsigned long long)body_length,
		  req->reused ? ", reused connection" : "");

	if (req->body_kind == BODY_MEMORY && req->body_len > 0) {
		if (evbuffer_add(out, req->body_data, req->body_len) != 0) {
			conn_fail(c, HTTP1_ERR_NOMEM, "out of memory queueing the body");
			return;
		}
	} else if (req->body_kind == BODY_FILE && req->body_length > 0) {
		if (pool->url.tls) {
			if (conn_refill_tls_body(c) != ENGINE_OK)
				return;
		} else {
			/* A file segment goes out with sendfile(), without
			 * passing through user memory. */
			struct evbuffer_file_segment *seg = evbuffer_file_segment_new(
				req->body_fd, (ev_off_t)req->body_offset,
				(ev_off_t)req->body_length, 0);

			if (seg == NULL ||
			    evbuffer_add_file_segment(out, seg, 0,
						      (ev_off_t)req->body_length) != 0) {
				if (seg != NULL)
					evbuffer_file_segment_free(seg);
				conn_fail(c, HTTP1_ERR_BODY,
					  "cannot queue %llu bytes of the request body "
					  "from offset %llu",
					  (unsigned long long)req->body_length,
					  (unsigned long long)req->body_offset);
				return;
			}
			evbuffer_file_segment_free(seg);
		}
	}
	conn_set_io_timeouts(c, 0);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
	struct http1_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	int rc;

	if (c->state != CONN_BUSY || c->req == NULL) {
		log_debug(c->prefix, "unexpected bytes on an idle connection; closing");
		conn_close(c);
		return;
	}
	if (evbuffer_get_length(in) > 0)
		c->req->response_started = 1;
	rc = http1_parser_feed(&c->parser, in);
	switch (rc) {
	case HTTP1_PARSE_MORE:
		break;
	case HTTP1_PARSE_COMPLETE:
		conn_finish_request(c, HTTP1_OK, NULL);
		break;
	case HTTP1_PARSE_ABORTED:
		conn_fail(c, HTTP1_ERR_ABORTED, "the response was rejected while reading it");
		break;
	default:
		conn_fail(c, HTTP1_ERR_PROTOCOL, "invalid HTTP response from %s: %s",
			  c->pool->url.authority, c->parser.error);
		break;
	}
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
	struct http1_conn *c = arg;

	if (c->state == CONN_BUSY && c->req != NULL && c->pool->url.tls &&
	    c->req->body_kind == BODY_FILE)
		conn_refill_tls_body(c);
}

static void
conn_on_connected(struct http1_conn *c)
{
	evutil_socket_t fd = bufferevent_getfd(c->bev);
	int one = 1;

	event_del(c->timer);
	if (fd >= 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c->pool->url.tls) {
		SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
		const unsigned char *proto = NULL;
		unsigned int len = 0;

		/* A server without ALPN selects nothing, which means
		 * HTTP/1.1; any other protocol cannot be spoken here. */
		SSL_get0_alpn_selected(ssl, &proto, &len);
		if (proto != NULL && !tls_alpn_is(ssl, "http/1.1")) {
			conn_fail(c, HTTP1_ERR_CONNECT,
				  "server %s negotiated ALPN protocol '%.*s' instead "
				  "of http/1.1",
				  c->pool->url.authority, (int)len, proto);
			return;
		}
	}
	log_debug(c->prefix, "connected to %s%s", c->pool->url.authority,
		  c->pool->url.tls ? " (TLS)" : "");
	c->state = CONN_IDLE;
	if (c->req != NULL)
		conn_start_request(c, c->req);
	else
		conn_go_idle(c);
}

static void
event_cb(struct bufferevent *bev, short events, void *arg)
{
	struct http1_conn *c = arg;
	const char *authority = c->pool->url.authority;
	int sock_error = EVUTIL_SOCKET_ERROR();

	if (events & BEV_EVENT_CONNECTED) {
		conn_on_connected(c);
		return;
	}
	if (c->state == CONN_CONNECTING) {
		int dns_error = bufferevent_socket_get_dns_error(bev);
		unsigned long ssl_error =
			c->pool->url.tls ? bufferevent_get_openssl_error(bev) : 0;
		char message[768];

		if (dns_error != 0) {
			conn_fail(c, HTTP1_ERR_CONNECT, "cannot resolve %s: %s",
				  c->pool->url.host, evutil_gai_strerror(dns_error));
			return;
		}
		if (ssl_error != 0) {
			SSL *ssl = bufferevent_openssl_get_ssl(bev);

			if (SSL_get_verify_result(ssl) != X509_V_OK) {
				tls_describe_failure(ssl, c->pool->url.host, message,
						     sizeof(message));
				conn_fail(c, HTTP1_ERR_TLS_VERIFY, "%s", message);
			} else {
				char one[256];

				ERR_error_string_n(ssl_error, one, sizeof(one));
				conn_fail(c, HTTP1_ERR_CONNECT,
					  "TLS handshake with %s failed: %s",
					  authority, one);
			}
			while (bufferevent_get_openssl_error(bev) != 0)
				;
			return;
		}
		conn_fail(c, HTTP1_ERR_CONNECT, "cannot connect to %s: %s", authority,
			  sock_error != 0 ? evutil_socket_error_to_string(sock_error)
					  : "connection closed");
		return;
	}
	if (c->state != CONN_BUSY) {
		log_debug(c->prefix, "idle connection closed by %s", authority);
		conn_close(c);
		return;
	}
	if (events & BEV_EVENT_TIMEOUT) {
		conn_fail(c, HTTP1_ERR_TIMEOUT,
			  "no progress %s %s for %.0f s",
			  (events & BEV_EVENT_READING) ? "reading the response from"
						       : "sending the request to",
			  authority, c->pool->opts.io_timeout);
		return;
	}
	if (events & BEV_EVENT_EOF) {
		if (http1_parser_eof(&c->parser) == HTTP1_PARSE_COMPLETE) {
			conn_finish_request(c, HTTP1_OK, NULL);
			return;
		}
		conn_fail(c, HTTP1_ERR_CLOSED, "%s closed the connection: %s",
			  authority, c->parser.error);
		return;
	}

	/* A reset or TLS failure mid-request: report how far the response got. */
	char cause[300];
	unsigned long ssl_error =
		c->pool->url.tls ? bufferevent_get_openssl_error(bev) : 0;

	if (sock_error != 0)
		snprintf(cause, sizeof(cause), "%s",
			 evutil_socket_error_to_string(sock_error));
	else if (ssl_error != 0)
		ERR_error_string_n(ssl_error, cause, sizeof(cause));
	else
		snprintf(cause, sizeof(cause), "connection reset");
	while (c->pool->url.tls && bufferevent_get_openssl_error(bev) != 0)
		;
	http1_parser_eof(&c->parser);
	conn_fail(c, HTTP1_ERR_CLOSED, "connection to %s failed: %s (%s)", authority,
		  cause, c->parser.error);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http1_conn *c = arg;

	if (c->state == CONN_CONNECTING)
		conn_fail(c, HTTP1_ERR_CONNECT, "connecting to %s timed out after %.0f s",
			  c->pool->url.authority, c->pool->opts.connect_timeout);
	else if (c->state == CONN_IDLE)
		conn_close(c);
}

/* Open a connection for req (which is no longer in the queue). */
static void
conn_open(struct http1_pool *pool, struct http1_request *req)
{
	struct http1_conn *c = calloc(1, sizeof(*c));
	struct timeval tv = to_timeval(pool->opts.connect_timeout);
	char err[512];

	if (c == NULL) {
		req->ops->on_done(req->arg, HTTP1_ERR_NOMEM, NULL, "out of memory");
		http1_request_free(req);
		return;
	}
	c->pool = pool;
	c->id = ++pool->next_conn_id;
	snprintf(c->prefix, sizeof(c->prefix), "[http %u]", c->id);
	c->state = CONN_CONNECTING;
	c->req = req;
	req->conn = c;
	TAILQ_INSERT_TAIL(&pool->conns, c, link);
	pool->nconns++;
	pool->stats.connections_opened++;
	pool->stats.connections_open++;

	c->timer = evtimer_new(pool->base, timer_cb, c);
	if (c->timer == NULL) {
		conn_fail(c, HTTP1_ERR_NOMEM, "out of memory");
		return;
	}
	if (pool->url.tls) {
		SSL *ssl = tls_ssl_new(pool->opts.ssl_ctx, pool->url.host, err,
				       sizeof(err));

		if (ssl == NULL) {
			conn_fail(c, HTTP1_ERR_CONNECT, "%s", err);
			return;
		}
		c->bev = bufferevent_openssl_socket_new(
			pool->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
			BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
		if (c->bev == NULL)
			SSL_free(ssl);
		else
			/* S3 frames every response with Content-Length or
			 * chunked coding, so a close without close_notify
			 * cannot cut one short unnoticed. */
			bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	} else {
		c->bev = bufferevent_socket_new(
			pool->base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	}
	if (c->bev == NULL) {
		conn_fail(c, HTTP1_ERR_CONNECT, "cannot create a socket for %s",
			  pool->url.authority);
		return;
	}
	bufferevent_set_max_single_read(c->bev, HTTP1_MAX_SINGLE_IO);
	bufferevent_set_max_single_write(c->bev, HTTP1_MAX_SINGLE_IO);
	bufferevent_setwatermark(c->bev, EV_WRITE, HTTP1_TLS_BUFFERED / 2, 0);
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	c->drain_cb = evbuffer_add_cb(bufferevent_get_output(c->bev),
				      output_drained_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	event_add(c->timer, &tv);
	log_debug(c->prefix, "connecting to %s", pool->url.authority);
	if (bufferevent_socket_connect_hostname(c->bev, pool->dns, AF_UNSPEC,
						pool->url.host,
						atoi(pool->url.port)) != 0)
		conn_fail(c, HTTP1_ERR_CONNECT, "cannot connect to %s",
			  pool->url.authority);
}

/* The pool. */

void
http1_pool_options_default(struct http1_pool_options *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->connect_timeout = 30.0;
	opts->io_timeout = 120.0;
	/* Shorter than the idle timeouts of common servers and proxies
	 * (Amazon S3 closes idle connections after about 20 s), so the pool
	 * rarely picks a connection the server is about to close. */
	opts->idle_timeout = 15.0;
	opts->max_connections = 16;
}

static void
dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http1_pool *pool = arg;
	struct http1_request *req;

	while ((req = TAILQ_FIRST(&pool->queue)) != NULL) {
		struct http1_conn *c, *idle = NULL;

		/* The most recently used idle connection is the least likely
		 * to have been closed by the server. */
		TAILQ_FOREACH(c, &pool->conns, link)
			if (c->state == CONN_IDLE)
				idle = c;
		if (idle == NULL && pool->nconns >= pool->opts.max_connections)
			break;
		TAILQ_REMOVE(&pool->queue, req, link);
		req->queued = 0;
		if (idle != NULL)
			conn_start_request(idle, req);
		else
			conn_open(pool, req);
	}
}

static void
pool_schedule_dispatch(struct http1_pool *pool)
{
	if (!TAILQ_EMPTY(&pool->queue))
		event_active(pool->dispatch_ev, EV_TIMEOUT, 0);
}

static void
reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http1_pool *pool = arg;
	struct http1_conn *c;

	while ((c = TAILQ_FIRST(&pool->dead)) != NULL) {
		TAILQ_REMOVE(&pool->dead, c, link);
		conn_free(c);
	}
}

struct http1_pool *
http1_pool_new(struct event_base *base, struct evdns_base *dns,
	       const struct url *url, const struct http1_pool_options *opts)
{
	struct http1_pool *pool = calloc(1, sizeof(*pool));
	int default_port;

	if (pool == NULL)
		return NULL;
	pool->base = base;
	pool->dns = dns;
	pool->url = *url;
	pool->opts = *opts;
	if (pool->opts.max_connections == 0)
		pool->opts.max_connections = 1;
	/* The port is left out of Host when it is the scheme's default, as
	 * browsers and the AWS SDKs send it.  The signature covers Host as
	 * sent either way. */
	default_port = strcmp(url->port, url->tls ? "443" : "80") == 0;
	if (default_port)
		snprintf(pool->host_header, sizeof(pool->host_header),
			 strchr(url->host, ':') != NULL ? "[%s]" : "%s", url->host);
	else
		util_strlcpy(pool->host_header, url->authority,
			     sizeof(pool->host_header));
	TAILQ_INIT(&pool->conns);
	TAILQ_INIT(&pool->dead);
	TAILQ_INIT(&pool->queue);
	pool->dispatch_ev = event_new(base, -1, 0, dispatch_cb, pool);
	pool->reap_ev = event_new(base, -1, 0, reap_cb, pool);
	if (pool->dispatch_ev == NULL || pool->reap_ev == NULL) {
		http1_pool_free(pool);
		return NULL;
	}
	return pool;
}

void
http1_pool_free(struct http1_pool *pool)
{
	struct http1_request *req;
	struct http1_conn *c;

	if (pool == NULL)
		return;
	while ((req = TAILQ_FIRST(&pool->queue)) != NULL) {
		TAILQ_REMOVE(&pool->queue, req, link);
		http1_request_free(req);
	}
	while ((c = TAILQ_FIRST(&pool->conns)) != NULL) {
		if (c->req != NULL) {
			c->req->conn = NULL;
			http1_request_free(c->req);
			c->req = NULL;
		}
		conn_close(c);
	}
	if (pool->reap_ev != NULL)
		reap_cb(-1, 0, pool);
	if (pool->dispatch_ev != NULL)
		event_free(pool->dispatch_ev);
	if (pool->reap_ev != NULL)
		event_free(pool->reap_ev);
	free(pool);
}

void
http1_pool_submit(struct http1_pool *pool, struct http1_request *req)
{
	req->pool = pool;
	req->queued = 1;
	TAILQ_INSERT_TAIL(&pool->queue, req, link);
	pool_schedule_dispatch(pool);
}

void
http1_request_cancel(struct http1_request *req)
{
	struct http1_conn *c = req->conn;

	if (req->queued) {
		TAILQ_REMOVE(&req->pool->queue, req, link);
		req->queued = 0;
	} else if (c != NULL) {
		c->req = NULL;
		req->conn = NULL;
		conn_close(c);
	}
	http1_request_free(req);
}

const struct url *
http1_pool_url(const struct http1_pool *pool)
{
	return &pool->url;
}

const char *
http1_pool_host_header(const struct http1_pool *pool)
{
	return pool->host_header;
}

void
http1_pool_get_stats(const struct http1_pool *pool,
		     struct http1_pool_stats *stats)
{
	*stats = pool->stats;
}
