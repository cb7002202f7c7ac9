#ifndef MFMODAL_HTTP1_H
#define MFMODAL_HTTP1_H

/* An HTTP/1.1 client on a libevent reactor, for S3.
 *
 * A pool serves one origin (scheme, host, port).  It keeps keep-alive
 * connections and runs one request at a time on each (no pipelining).  It
 * opens up to max_connections, and requests beyond that wait in a FIFO.  Request bodies
 * come from memory or from a file range, which is sent with sendfile() on
 * plain connections and read with pread() in 256 KiB steps on TLS ones, so a
 * body is never held in memory as a whole.  Responses may be delimited by
 * Content-Length, chunked transfer coding, or the end of the connection. */

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "util.h"

/* Outcomes of a request, passed to on_done. */
enum http1_result {
	HTTP1_OK = 0,         /* a complete response arrived (any status) */
	HTTP1_ERR_CONNECT,    /* DNS, TCP or TLS set-up failed */
	HTTP1_ERR_TLS_VERIFY, /* the server's certificate was rejected */
	HTTP1_ERR_CLOSED,     /* the connection closed or reset before the
			       * response was complete */
	HTTP1_ERR_TIMEOUT,    /* no progress within io_timeout */
	HTTP1_ERR_PROTOCOL,   /* the response was not valid HTTP/1.x */
	HTTP1_ERR_ABORTED,    /* on_response or on_body returned nonzero */
	HTTP1_ERR_BODY,       /* the request body could not be read */
	HTTP1_ERR_NOMEM,
};
const char *http1_result_name(enum http1_result result);

struct http1_header {
	char *name;
	char *value;
};

struct http1_response {
	int status;
	int minor_version; /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
	char reason[128];
	struct http1_header *headers;
	size_t nheaders;
	size_t capacity;
};

/* The value of the first header called name (case-insensitive), or NULL. */
const char *http1_response_header(const struct http1_response *resp,
				  const char *name);

/* The response parser, usable on its own (the unit tests feed it). */
enum http1_parse_state {
	HTTP1_PARSE_STATUS,      /* waiting for the status line */
	HTTP1_PARSE_HEADERS,     /* reading header lines */
	HTTP1_PARSE_BODY,        /* Content-Length body */
	HTTP1_PARSE_CHUNK_SIZE,  /* a chunk-size line */
	HTTP1_PARSE_CHUNK_DATA,  /* chunk data */
	HTTP1_PARSE_CHUNK_END,   /* the CRLF after chunk data */
	HTTP1_PARSE_TRAILERS,    /* trailer lines after the last chunk */
	HTTP1_PARSE_UNTIL_CLOSE, /* a body that ends with the connection */
	HTTP1_PARSE_DONE,
};

/* Returned by http1_parser_feed() and http1_parser_eof(). */
#define HTTP1_PARSE_MORE 0
#define HTTP1_PARSE_COMPLETE 1
#define HTTP1_PARSE_ERROR (-1)
#define HTTP1_PARSE_ABORTED (-2)

struct http1_parser {
	enum http1_parse_state state;
	int no_body;        /* the response to HEAD carries no body */
	int keep_alive;     /* known once the headers are in */
	uint64_t remaining; /* bytes left in the body or current chunk */
	uint64_t body_received;
	size_t head_bytes;
	struct http1_response resp;
	/* Called once with the final (non-1xx) status and headers, then with
	 * each piece of the decoded body; nonzero stops parsing with
	 * HTTP1_PARSE_ABORTED. */
	int (*on_headers)(void *arg, const struct http1_response *resp);
	int (*on_body)(void *arg, const void *data, size_t len);
	void *arg;
	char error[256];
};

void http1_parser_init(struct http1_parser *p, int no_body,
		       int (*on_headers)(void *, const struct http1_response *),
		       int (*on_body)(void *, const void *, size_t), void *arg);
/* Release the headers; the parser may be initialized again afterwards. */
void http1_parser_free(struct http1_parser *p);
/* Consume as much of in as belongs to this response.  Returns
 * HTTP1_PARSE_MORE, HTTP1_PARSE_COMPLETE (bytes after the response stay in
 * in), HTTP1_PARSE_ERROR with p->error set, or HTTP1_PARSE_ABORTED. */
int http1_parser_feed(struct http1_parser *p, struct evbuffer *in);
/* The connection ended: completes a body delimited by the close, else
 * HTTP1_PARSE_ERROR. */
int http1_parser_eof(struct http1_parser *p);

/* Requests. */

struct http1_request;
struct http1_pool;

struct http1_request_ops {
	/* Final status and headers; nonzero aborts the request. */
	int (*on_response)(void *arg, const struct http1_response *resp);
	/* A piece of the response body; nonzero aborts the request. */
	int (*on_body)(void *arg, const void *data, size_t len);
	/* The request is over: resp is the complete response for HTTP1_OK and
	 * NULL otherwise, message describes a failure.  The pool frees the
	 * request right after this returns; the callback may submit new
	 * requests and cancel other ones. */
	void (*on_done)(void *arg, enum http1_result result,
			const struct http1_response *resp, const char *message);
	/* Optional: total request body bytes handed to the kernel so far. */
	void (*on_progress)(void *arg, uint64_t body_bytes_sent);
};

/* Create a request for target (the path and query as sent).  The Host and
 * Content-Length headers are added by the pool. */
struct http1_request *http1_request_new(const char *method, const char *target,
					const struct http1_request_ops *ops,
					void *arg);
/* Free a request that was never submitted. */
void http1_request_free(struct http1_request *req);
int http1_request_add_header(struct http1_request *req, const char *name,
			     const char *value);
/* The body is a copy of data. */
int http1_request_set_body(struct http1_request *req, const void *data,
			   size_t len);
/* The body is length bytes of fd from offset.  fd is borrowed and must stay
 * open until on_done. */
int http1_request_set_body_file(struct http1_request *req, int fd,
				uint64_t offset, uint64_t length);
/* Whether the request ran on a connection that had served an earlier one;
 * valid inside on_done.  A keep-alive connection the server closed while
 * it was idle fails such a request at once. */
int http1_request_reused_connection(const struct http1_request *req);
/* Whether any byte of the response arrived; valid inside on_done. */
int http1_request_response_started(const struct http1_request *req);

/* Stop a submitted request: no callback follows and the pool frees it.  A
 * request in progress closes its connection.  Not for use from inside the
 * request's own callbacks (return nonzero from on_response or on_body
 * instead). */
void http1_request_cancel(struct http1_request *req);

struct http1_pool_options {
	SSL_CTX *ssl_ctx;        /* required for https; borrowed */
	double connect_timeout;  /* seconds for DNS, TCP and TLS set-up */
	double io_timeout;       /* seconds without progress on a request */
	double idle_timeout;     /* seconds an unused connection stays open */
	unsigned max_connections;
};
void http1_pool_options_default(struct http1_pool_options *opts);

struct http1_pool *http1_pool_new(struct event_base *base,
				  struct evdns_base *dns, const struct url *url,
				  const struct http1_pool_options *opts);
/* Close every connection; requests still queued or running are freed
 * without callbacks.  Not for use from inside a request callback. */
void http1_pool_free(struct http1_pool *pool);
/* Queue req; the pool owns it from now on. */
void http1_pool_submit(struct http1_pool *pool, struct http1_request *req);
const struct url *http1_pool_url(const struct http1_pool *pool);
/* The Host header the pool sends: host[:port], without the port when it is
 * the scheme's default.  Requests are signed over this value. */
const char *http1_pool_host_header(const struct http1_pool *pool);

struct http1_pool_stats {
	unsigned connections_opened;
	unsigned connections_open;
	unsigned requests_completed;
	unsigned requests_on_reused_connections;
};
void http1_pool_get_stats(const struct http1_pool *pool,
			  struct http1_pool_stats *stats);

#endif
