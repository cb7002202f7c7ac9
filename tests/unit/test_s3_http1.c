/* The HTTP/1.x response parser, fed from memory in whole and in pieces. */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

struct capture {
	int headers_seen;
	int status;
	char body[4096];
	size_t body_len;
	int abort_on_body;
};

static int
on_headers(void *arg, const struct http1_response *resp)
{
	struct capture *cap = arg;

	cap->headers_seen++;
	cap->status = resp->status;
	return 0;
}

static int
on_body(void *arg, const void *data, size_t len)
{
	struct capture *cap = arg;

	if (cap->abort_on_body)
		return -1;
	ck_assert_uint_le(cap->body_len + len, sizeof(cap->body));
	memcpy(cap->body + cap->body_len, data, len);
	cap->body_len += len;
	return 0;
}

/* Feed text in pieces of step bytes; returns the last parser result. */
static int
feed(struct http1_parser *p, struct evbuffer *in, const char *text, size_t step)
{
	size_t len = strlen(text);
	int rc = HTTP1_PARSE_MORE;

	for (size_t off = 0; off < len && rc == HTTP1_PARSE_MORE; off += step) {
		size_t n = len - off < step ? len - off : step;

		evbuffer_add(in, text + off, n);
		rc = http1_parser_feed(p, in);
	}
	return rc;
}

START_TEST(test_content_length_body)
{
	static const char response[] =
		"HTTP/1.1 200 OK\r\n"
		"ETag: \"abc\"\r\n"
		"Content-Length: 11\r\n"
		"x-amz-request-id: 1\r\n"
		"\r\n"
		"hello world"
		"HTTP/1.1 204 No Content\r\n\r\n";
	static const size_t steps[] = {1, 3, 7, 1000};

	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		struct capture cap = {0};
		struct http1_parser p;
		struct evbuffer *in = evbuffer_new();

		http1_parser_init(&p, 0, on_headers, on_body, &cap);
		ck_assert_int_eq(feed(&p, in, response, steps[i]), HTTP1_PARSE_COMPLETE);
		ck_assert_int_eq(cap.status, 200);
		ck_assert_int_eq(cap.headers_seen, 1);
		ck_assert_uint_eq(cap.body_len, 11);
		ck_assert_int_eq(memcmp(cap.body, "hello world", 11), 0);
		ck_assert_str_eq(http1_response_header(&p.resp, "etag"), "\"abc\"");
		ck_assert_int_eq(p.keep_alive, 1);
		http1_parser_free(&p);
		evbuffer_free(in);
	}
}
END_TEST

START_TEST(test_chunked_body)
{
	static const char response[] =
		"HTTP/1.1 200 OK\r\n"
		"Transfer-Encoding: chunked\r\n"
		"\r\n"
		"5\r\nhello\r\n"
		"1;ext=1\r\n \r\n"
		"A\r\n0123456789\r\n"
		"0\r\n"
		"Trailer-Field: x\r\n"
		"\r\n";
	static const size_t steps[] = {1, 2, 5, 1000};

	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		struct capture cap = {0};
		struct http1_parser p;
		struct evbuffer *in = evbuffer_new();

		http1_parser_init(&p, 0, on_headers, on_body, &cap);
		ck_assert_int_eq(feed(&p, in, response, steps[i]), HTTP1_PARSE_COMPLETE);
		ck_assert_uint_eq(cap.body_len, 16);
		ck_assert_int_eq(memcmp(cap.body, "hello 0123456789", 16), 0);
		ck_assert_uint_eq(evbuffer_get_length(in), 0);
		http1_parser_free(&p);
		evbuffer_free(in);
	}
}
END_TEST

START_TEST(test_chunk_size_invalid)
{
	struct capture cap = {0};
	struct http1_parser p;
	struct evbuffer *in = evbuffer_new();

	http1_parser_init(&p, 0, on_headers, on_body, &cap);
	ck_assert_int_eq(feed(&p, in,
			      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			      "zz\r\n", 100),
			 HTTP1_PARSE_ERROR);
	ck_assert_ptr_nonnull(strstr(p.error, "chunk size"));
	http1_parser_free(&p);
	evbuffer_free(in);
}
END_TEST

START_TEST(test_chunk_missing_crlf)
{
	struct capture cap = {0};
	struct http1_parser p;
	struct evbuffer *in = evbuffer_new();

	http1_parser_init(&p, 0, on_headers, on_body, &cap);
	ck_assert_int_eq(feed(&p, in,
			      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			      "3\r\nabcX\r\n", 100),
			 HTTP1_PARSE_ERROR);
	ck_assert_ptr_nonnull(strstr(p.error, "CRLF"));
	http1_parser_free(&p);
	evbuffer_free(in);
}
END_TEST

START_TEST(test_head_has_no_body)
{
	struct capture cap = {0};
	struct http1_parser p;
	struct evbuffer *in = evbuffer_new();

	http1_parser_init(&p, 1, on_headers, on_body, &cap);
	ck_assert_int_eq(feed(&p, in,
			      "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n",
			      1000),
			 HTTP1_PARSE_COMPLETE);
	ck_assert_str_eq(http1_response_header(&p.resp, "Content-Length"),
			 "1073741824");
	ck_assert_uint_eq(cap.body_len, 0);
	http1_parser_free(&p);
	evbuffer_free(in);
}
END_TEST

START_TEST(test_interim_response_skipped)
{
	struct capture cap = {0};
	struct http1_parser p;
	struct evbuffer *in = evbuffer_new();

	http1_parser_init(&p, 0, on_headers, on_body, &cap);
	ck_assert_int_eq(feed(&p, in,
			      "HTTP/1.1 100 Continue\r\n\r\n"
			      "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
			      4),
			 HTTP1_PARSE_COMPLETE);
	ck_assert_int_eq(cap.status, 201);
	ck_assert_int_eq(cap.headers_seen, 1);
	http1_parser_free(&p);
	evbuffer_free(in);
}
END_TEST

START_TEST(test_body_until_close)
{
	struct capture cap = {0};
	struct http1_parser p;
	struct evbuffer *in = evbuffer_new();

	http1_parser_init(&p, 0, on_headers, on_body, &cap);
	ck_assert_int_eq(feed(&p, in, "HTTP/1.0 200 OK\r\n\r\npartial", 5),
			 HTTP1_PARSE_MORE);
	ck_assert_int_eq(p.keep_alive, 0);
	ck_assert_int_eq(http1_parser_eof(&p), HTTP1_PARSE_COMPLETE);
	ck_assert_uint_eq(cap.body_len, 7);
	http1_parser_free(&p);
	evbuffer_free(in);
}
END_TEST

START_TEST(test_eof_mid_body)
{
	struct capture cap = {0};
	struct http1_parser p;
	struct evbuffer *in = evbuffer_new();

	http1_parser_init(&p, 0, on_headers, on_body, &cap);
	ck_assert_int_eq(feed(&p, in,
			      "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n1234", 100),
			 HTTP1_PARSE_MORE);
	ck_assert_int_eq(http1_parser_eof(&p), HTTP1_PARSE_ERROR);
	ck_assert_ptr_nonnull(strstr(p.error, "6 body bytes missing"));
	http1_parser_free(&p);
	evbuffer_free(in);
}
END_TEST

START_TEST(test_connection_close_header)
{
	struct capture cap = {0};
	struct http1_parser p;
	struct evbuffer *in = evbuffer_new();

	http1_parser_init(&p, 0, on_headers, on_body, &cap);
	ck_assert_int_eq(feed(&p, in,
			      "HTTP/1.1 200 OK\r\nConnection: Close\r\n"
			      "Content-Length: 0\r\n\r\n", 100),
			 HTTP1_PARSE_COMPLETE);
	ck_assert_int_eq(p.keep_alive, 0);
	http1_parser_free(&p);

	http1_parser_init(&p, 0, on_headers, on_body, &cap);
	ck_assert_int_eq(feed(&p, in,
			      "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
			      "Content-Length: 0\r\n\r\n", 100),
			 HTTP1_PARSE_COMPLETE);
	ck_assert_int_eq(p.keep_alive, 1);
	http1_parser_free(&p);
	evbuffer_free(in);
}
END_TEST

START_TEST(test_invalid_heads)
{
	static const char *const bad[] = {
		"HTTP/2 200 OK\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct capture cap = {0};
		struct http1_parser p;
		struct evbuffer *in = evbuffer_new();

		http1_parser_init(&p, 0, on_headers, on_body, &cap);
		ck_assert_msg(feed(&p, in, bad[i], 1000) == HTTP1_PARSE_ERROR,
			      "accepted: %s", bad[i]);
		ck_assert_str_ne(p.error, "");
		http1_parser_free(&p);
		evbuffer_free(in);
	}
}
END_TEST

START_TEST(test_line_too_long)
{
	struct capture cap = {0};
	struct http1_parser p;
	struct evbuffer *in = evbuffer_new();
	char *junk = malloc(20000);

	memset(junk, 'a', 19999);
	junk[19999] = '\0';
	http1_parser_init(&p, 0, on_headers, on_body, &cap);
	evbuffer_add_printf(in, "HTTP/1.1 200 OK\r\nX: %s", junk);
	ck_assert_int_eq(http1_parser_feed(&p, in), HTTP1_PARSE_ERROR);
	ck_assert_ptr_nonnull(strstr(p.error, "too long"));
	http1_parser_free(&p);
	evbuffer_free(in);
	free(junk);
}
END_TEST

START_TEST(test_callback_abort)
{
	struct capture cap = {.abort_on_body = 1};
	struct http1_parser p;
	struct evbuffer *in = evbuffer_new();

	http1_parser_init(&p, 0, on_headers, on_body, &cap);
	ck_assert_int_eq(feed(&p, in,
			      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", 1000),
			 HTTP1_PARSE_ABORTED);
	http1_parser_free(&p);
	evbuffer_free(in);
}
END_TEST

START_TEST(test_folded_header)
{
	struct capture cap = {0};
	struct http1_parser p;
	struct evbuffer *in = evbuffer_new();

	http1_parser_init(&p, 0, on_headers, on_body, &cap);
	ck_assert_int_eq(feed(&p, in,
			      "HTTP/1.1 200 OK\r\nX-Long: one\r\n  two\r\n"
			      "Content-Length: 0\r\n\r\n", 1000),
			 HTTP1_PARSE_COMPLETE);
	ck_assert_str_eq(http1_response_header(&p.resp, "x-long"), "one two");
	http1_parser_free(&p);
	evbuffer_free(in);
}
END_TEST

static Suite *
http1_suite(void)
{
	Suite *s = suite_create("http1");
	TCase *tc = tcase_create("parser");

	tcase_add_test(tc, test_content_length_body);
	tcase_add_test(tc, test_chunked_body);
	tcase_add_test(tc, test_chunk_size_invalid);
	tcase_add_test(tc, test_chunk_missing_crlf);
	tcase_add_test(tc, test_head_has_no_body);
	tcase_add_test(tc, test_interim_response_skipped);
	tcase_add_test(tc, test_body_until_close);
	tcase_add_test(tc, test_eof_mid_body);
	tcase_add_test(tc, test_connection_close_header);
	tcase_add_test(tc, test_invalid_heads);
	tcase_add_test(tc, test_line_too_long);
	tcase_add_test(tc, test_callback_abort);
	tcase_add_test(tc, test_folded_header);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *runner = srunner_create(http1_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
