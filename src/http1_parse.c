/* The HTTP/1.x response parser (see http1.h): status line, header fields,
 * and bodies delimited as RFC 9112 section 6.3 describes. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http1.h"

/* Limits on what a server may send before the body. */
#define HTTP1_MAX_LINE (16 * 1024)
#define HTTP1_MAX_HEAD (64 * 1024)
#define HTTP1_MAX_HEADERS 128
/* Larger chunk sizes are treated as malformed rather than risk overflow. */
#define HTTP1_MAX_CHUNK ((uint64_t)1 << 60)

const char *
http1_response_header(const struct http1_response *resp, const char *name)
{
	for (size_t i = 0; i < resp->nheaders; i++)
		if (strcasecmp(resp->headers[i].name, name) == 0)
			return resp->headers[i].value;
	return NULL;
}

static void
response_clear(struct http1_response *resp)
{
	for (size_t i = 0; i < resp->nheaders; i++) {
		free(resp->headers[i].name);
		free(resp->headers[i].value);
	}
	free(resp->headers);
	memset(resp, 0, sizeof(*resp));
}

void
http1_parser_init(struct http1_parser *p, int no_body,
		  int (*on_headers)(void *, const struct http1_response *),
		  int (*on_body)(void *, const void *, size_t), void *arg)
{
	memset(p, 0, sizeof(*p));
	p->state = HTTP1_PARSE_STATUS;
	p->no_body = no_body;
	p->on_headers = on_headers;
	p->on_body = on_body;
	p->arg = arg;
}

void
http1_parser_free(struct http1_parser *p)
{
	response_clear(&p->resp);
}

static int
fail(struct http1_parser *p, const char *fmt, const char *detail)
{
	snprintf(p->error, sizeof(p->error), fmt, detail);
	return HTTP1_PARSE_ERROR;
}

/* Take one line (without its CRLF or LF) from in.  Returns 1 with a
 * malloc'ed *line, 0 when no complete line is there yet, or -1 when the line
 * is too long. */
static int
take_line(struct http1_parser *p, struct evbuffer *in, char **line)
{
	struct evbuffer_ptr eol;
	size_t eol_len = 0, n;

	eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
	if (eol.pos < 0) {
		if (evbuffer_get_length(in) > HTTP1_MAX_LINE)
			return -1;
		return 0;
	}
	if ((size_t)eol.pos > HTTP1_MAX_LINE)
		return -1;
	*line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
	if (*line == NULL)
		return -1;
	p->head_bytes += n + eol_len;
	return 1;
}

static int
parse_status_line(struct http1_parser *p, const char *line)
{
	const char *rest;
	char *end;
	long status;

	if (strncmp(line, "HTTP/1.", 7) != 0 ||
	    !(line[7] == '0' || line[7] == '1') || line[8] != ' ')
		return fail(p, "invalid status line '%.120s'", line);
	p->resp.minor_version = line[7] - '0';
	status = strtol(line + 9, &end, 10);
	if (end != line + 12 || status < 100 || status > 999 ||
	    (*end != ' ' && *end != '\0'))
		return fail(p, "invalid status line '%.120s'", line);
	p->resp.status = (int)status;
	rest = *end == ' ' ? end + 1 : end;
	snprintf(p->resp.reason, sizeof(p->resp.reason), "%s", rest);
	return 0;
}

static char *
trimmed_copy(const char *start, const char *end)
{
	while (start < end && (*start == ' ' || *start == '\t'))
		start++;
	while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	return strndup(start, (size_t)(end - start));
}

static int
add_header_line(struct http1_parser *p, const char *line)
{
	struct http1_response *resp = &p->resp;
	const char *colon;
	struct http1_header *h;

	if (line[0] == ' ' || line[0] == '\t') {
		/* Obsolete line folding (RFC 9112 section 5.2): the line
		 * continues the previous field's value. */
		char *joined, *more;

		if (resp->nheaders == 0)
			return fail(p, "invalid header line '%.120s'", line);
		h = &resp->headers[resp->nheaders - 1];
		more = trimmed_copy(line, line + strlen(line));
		if (more == NULL || asprintf(&joined, "%s %s", h->value, more) < 0) {
			free(more);
			return fail(p, "%s", "out of memory");
		}
		free(more);
		free(h->value);
		h->value = joined;
		return 0;
	}
	colon = strchr(line, ':');
	if (colon == NULL || colon == line)
		return fail(p, "invalid header line '%.120s'", line);
	for (const char *c = line; c < colon; c++)
		if (*c == ' ' || *c == '\t')
			return fail(p, "invalid header name in '%.120s'", line);
	if (resp->nheaders == HTTP1_MAX_HEADERS)
		return fail(p, "%s", "too many header fields");
	if (resp->nheaders == resp->capacity) {
		size_t cap = resp->capacity ? resp->capacity * 2 : 16;
		struct http1_header *grown =
			realloc(resp->headers, cap * sizeof(*grown));

		if (grown == NULL)
			return fail(p, "%s", "out of memory");
		resp->headers = grown;
		resp->capacity = cap;
	}
	h = &resp->headers[resp->nheaders];
	h->name = strndup(line, (size_t)(colon - line));
	h->value = trimmed_copy(colon + 1, line + strlen(line));
	if (h->name == NULL || h->value == NULL) {
		free(h->name);
		free(h->value);
		return fail(p, "%s", "out of memory");
	}
	resp->nheaders++;
	return 0;
}

/* Whether the comma-separated list value contains token. */
static int
list_has_token(const char *value, const char *token)
{
	size_t n = strlen(token);

	for (const char *p = value; p != NULL && *p != '\0';) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (strncasecmp(p, token, n) == 0 &&
		    (p[n] == '\0' || p[n] == ',' || p[n] == ' ' || p[n] == '\t' ||
		     p[n] == ';'))
			return 1;
		p = strchr(p, ',');
	}
	return 0;
}

/* Decide how the body is delimited once the head is complete. */
static int
start_body(struct http1_parser *p)
{
	const struct http1_response *resp = &p->resp;
	const char *te = http1_response_header(resp, "Transfer-Encoding");
	const char *connection = http1_response_header(resp, "Connection");
	int status = resp->status;

	if (resp->minor_version >= 1)
		p->keep_alive = connection == NULL || !list_has_token(connection, "close");
	else
		p->keep_alive = connection != NULL &&
				list_has_token(connection, "keep-alive");

	if (p->no_body || status == 204 || status == 304) {
		p->state = HTTP1_PARSE_DONE;
		return 0;
	}
	if (te != NULL) {
		if (!list_has_token(te, "chunked"))
			return fail(p, "unsupported Transfer-Encoding '%.80s'", te);
		p->state = HTTP1_PARSE_CHUNK_SIZE;
		return 0;
	}
	for (size_t i = 0; i < resp->nheaders; i++) {
		const char *value = resp->headers[i].value;
		unsigned long long length;
		char *end;

		if (strcasecmp(resp->headers[i].name, "Content-Length") != 0)
			continue;
		errno = 0;
		length = strtoull(value, &end, 10);
		if (errno != 0 || end == value || *end != '\0' || value[0] == '-')
			return fail(p, "invalid Content-Length '%.40s'", value);
		if (p->state == HTTP1_PARSE_BODY && p->remaining != length)
			return fail(p, "%s", "conflicting Content-Length fields");
		p->remaining = length;
		p->state = HTTP1_PARSE_BODY;
	}
	if (p->state == HTTP1_PARSE_BODY) {
		if (p->remaining == 0)
			p->state = HTTP1_PARSE_DONE;
		return 0;
	}
	p->state = HTTP1_PARSE_UNTIL_CLOSE;
	p->keep_alive = 0;
	return 0;
}

/* Hand up to p->remaining bytes of in to on_body, or all of in when
 * unlimited is set.  Returns 0, HTTP1_PARSE_ERROR or HTTP1_PARSE_ABORTED. */
static int
deliver_body(struct http1_parser *p, struct evbuffer *in, int unlimited)
{
	size_t len;

	while ((len = evbuffer_get_contiguous_space(in)) > 0) {
		unsigned char *data;

		if (!unlimited && len > p->remaining)
			len = (size_t)p->remaining;
		if (len == 0)
			break;
		data = evbuffer_pullup(in, (ssize_t)len);
		if (data == NULL)
			return fail(p, "%s", "out of memory");
		if (p->on_body != NULL && p->on_body(p->arg, data, len) != 0)
			return HTTP1_PARSE_ABORTED;
		evbuffer_drain(in, len);
		p->body_received += len;
		if (!unlimited)
			p->remaining -= len;
	}
	return 0;
}

static int
parse_chunk_size(struct http1_parser *p, const char *line)
{
	uint64_t size = 0;
	const char *c = line;

	if (!isxdigit((unsigned char)*c))
		return fail(p, "invalid chunk size line '%.40s'", line);
	for (; isxdigit((unsigned char)*c); c++) {
		int digit = isdigit((unsigned char)*c) ? *c - '0'
						       : (tolower((unsigned char)*c) - 'a' + 10);

		size = size * 16 + (uint64_t)digit;
		if (size > HTTP1_MAX_CHUNK)
			return fail(p, "chunk size too large in '%.40s'", line);
	}
	while (*c == ' ' || *c == '\t')
		c++;
	if (*c != '\0' && *c != ';')
		return fail(p, "invalid chunk size line '%.40s'", line);
	p->remaining = size;
	p->state = size == 0 ? HTTP1_PARSE_TRAILERS : HTTP1_PARSE_CHUNK_DATA;
	return 0;
}

int
http1_parser_feed(struct http1_parser *p, struct evbuffer *in)
{
	char *line = NULL;
	int rc = HTTP1_PARSE_MORE, got;

	while (p->state != HTTP1_PARSE_DONE) {
		switch (p->state) {
		case HTTP1_PARSE_STATUS:
		case HTTP1_PARSE_HEADERS:
		case HTTP1_PARSE_CHUNK_SIZE:
		case HTTP1_PARSE_CHUNK_END:
		case HTTP1_PARSE_TRAILERS:
			got = take_line(p, in, &line);
			if (got < 0)
				return fail(p, "%s", "line too long in the response");
			if (got == 0)
				return HTTP1_PARSE_MORE;
			if (p->state <= HTTP1_PARSE_HEADERS &&
			    p->head_bytes > HTTP1_MAX_HEAD) {
				free(line);
				return fail(p, "%s", "response head too large");
			}
			break;
		default:
			break;
		}

		switch (p->state) {
		case HTTP1_PARSE_STATUS:
			/* Blank lines before a status line are tolerated
			 * (RFC 9112 section 2.2). */
			if (line[0] != '\0') {
				rc = parse_status_line(p, line);
				if (rc == 0)
					p->state = HTTP1_PARSE_HEADERS;
			}
			break;
		case HTTP1_PARSE_HEADERS:
			if (line[0] != '\0') {
				rc = add_header_line(p, line);
				break;
			}
			if (p->resp.status >= 100 && p->resp.status < 200) {
				/* An interim response: the real one follows. */
				response_clear(&p->resp);
				p->head_bytes = 0;
				p->state = HTTP1_PARSE_STATUS;
				break;
			}
			rc = start_body(p);
			if (rc == 0 && p->on_headers != NULL &&
			    p->on_headers(p->arg, &p->resp) != 0)
				rc = HTTP1_PARSE_ABORTED;
			break;
		case HTTP1_PARSE_BODY:
		case HTTP1_PARSE_CHUNK_DATA:
			rc = deliver_body(p, in, 0);
			if (rc == 0 && p->remaining == 0)
				p->state = p->state == HTTP1_PARSE_BODY
						   ? HTTP1_PARSE_DONE
						   : HTTP1_PARSE_CHUNK_END;
			else if (rc == 0)
				return HTTP1_PARSE_MORE;
			break;
		case HTTP1_PARSE_CHUNK_SIZE:
			rc = parse_chunk_size(p, line);
			break;
		case HTTP1_PARSE_CHUNK_END:
			if (line[0] != '\0')
				rc = fail(p, "%s", "missing CRLF after chunk data");
			else
				p->state = HTTP1_PARSE_CHUNK_SIZE;
			break;
		case HTTP1_PARSE_TRAILERS:
			if (line[0] == '\0')
				p->state = HTTP1_PARSE_DONE;
			break;
		case HTTP1_PARSE_UNTIL_CLOSE:
			rc = deliver_body(p, in, 1);
			if (rc == 0)
				return HTTP1_PARSE_MORE;
			break;
		case HTTP1_PARSE_DONE:
			break;
		}
		free(line);
		line = NULL;
		if (rc != 0)
			return rc;
	}
	return HTTP1_PARSE_COMPLETE;
}

int
http1_parser_eof(struct http1_parser *p)
{
	if (p->state == HTTP1_PARSE_UNTIL_CLOSE) {
		p->state = HTTP1_PARSE_DONE;
		return HTTP1_PARSE_COMPLETE;
	}
	if (p->state == HTTP1_PARSE_DONE)
		return HTTP1_PARSE_COMPLETE;
	if (p->state == HTTP1_PARSE_STATUS && p->head_bytes == 0)
		snprintf(p->error, sizeof(p->error),
			 "connection closed before any response");
	else if (p->state == HTTP1_PARSE_BODY)
		snprintf(p->error, sizeof(p->error),
			 "connection closed with %llu body bytes missing",
			 (unsigned long long)p->remaining);
	else
		snprintf(p->error, sizeof(p->error),
			 "connection closed in the middle of the response");
	return HTTP1_PARSE_ERROR;
}
