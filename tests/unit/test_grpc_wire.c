/* Unit tests of gRPC framing, status names, grpc-timeout and grpc-message. */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "grpc.h"
#include "grpc_wire.h"

START_TEST(frame_header_big_endian)
{
	uint8_t h[GRPC_FRAME_HEADER_LEN];

	grpc_frame_header(h, 0x01020304);
	ck_assert_int_eq(h[0], 0);
	ck_assert_int_eq(h[1], 1);
	ck_assert_int_eq(h[2], 2);
	ck_assert_int_eq(h[3], 3);
	ck_assert_int_eq(h[4], 4);
}
END_TEST

/* Feed stream one byte at a time and collect the messages. */
static int
feed_bytewise(struct grpc_frame_reader *r, const uint8_t *stream, size_t len,
	      uint8_t **msgs, size_t *lens, int max)
{
	int n = 0;

	for (size_t i = 0; i < len; i++) {
		const uint8_t *p = stream + i;
		size_t left = 1;

		for (;;) {
			uint8_t *msg;
			size_t msg_len;
			enum grpc_frame_result rv =
				grpc_frame_reader_feed(r, &p, &left, &msg, &msg_len);

			if (rv == GRPC_FRAME_NEED_MORE)
				break;
			ck_assert_int_eq(rv, GRPC_FRAME_MESSAGE);
			ck_assert_int_lt(n, max);
			msgs[n] = msg;
			lens[n++] = msg_len;
		}
	}
	return n;
}

START_TEST(frame_reader_split_and_empty_messages)
{
	/* "abc", an empty message, then "de". */
	const uint8_t stream[] = {0, 0, 0, 0, 3, 'a', 'b', 'c', 0, 0, 0, 0, 0,
				  0, 0, 0, 0, 2, 'd', 'e'};
	struct grpc_frame_reader r;
	uint8_t *msgs[4];
	size_t lens[4];
	int n;

	grpc_frame_reader_init(&r, 1024);
	n = feed_bytewise(&r, stream, sizeof(stream), msgs, lens, 4);
	ck_assert_int_eq(n, 3);
	ck_assert_uint_eq(lens[0], 3);
	ck_assert_mem_eq(msgs[0], "abc", 3);
	ck_assert_uint_eq(lens[1], 0);
	ck_assert_uint_eq(lens[2], 2);
	ck_assert_mem_eq(msgs[2], "de", 2);
	ck_assert_int_eq(grpc_frame_reader_partial(&r), 0);
	for (int i = 0; i < n; i++)
		free(msgs[i]);
	grpc_frame_reader_free(&r);
}
END_TEST

START_TEST(frame_reader_partial_message)
{
	const uint8_t stream[] = {0, 0, 0, 0, 5, 'a', 'b'};
	const uint8_t *p = stream;
	size_t len = sizeof(stream);
	struct grpc_frame_reader r;
	uint8_t *msg;
	size_t msg_len;

	grpc_frame_reader_init(&r, 1024);
	ck_assert_int_eq(grpc_frame_reader_feed(&r, &p, &len, &msg, &msg_len),
			 GRPC_FRAME_NEED_MORE);
	ck_assert_int_eq(grpc_frame_reader_partial(&r), 1);
	grpc_frame_reader_free(&r);
}
END_TEST

START_TEST(frame_reader_rejects_compressed_and_oversized)
{
	const uint8_t compressed[] = {1, 0, 0, 0, 1, 'x'};
	const uint8_t big[] = {0, 0, 0, 4, 1};
	const uint8_t *p = compressed;
	size_t len = sizeof(compressed);
	struct grpc_frame_reader r;
	uint8_t *msg;
	size_t msg_len;

	grpc_frame_reader_init(&r, 1024);
	ck_assert_int_eq(grpc_frame_reader_feed(&r, &p, &len, &msg, &msg_len),
			 GRPC_FRAME_COMPRESSED);
	grpc_frame_reader_free(&r);

	grpc_frame_reader_init(&r, 1024);
	p = big;
	len = sizeof(big);
	ck_assert_int_eq(grpc_frame_reader_feed(&r, &p, &len, &msg, &msg_len),
			 GRPC_FRAME_TOO_LARGE);
	grpc_frame_reader_free(&r);
}
END_TEST

START_TEST(timeout_encoding_finest_fitting_unit)
{
	static const struct {
		double seconds;
		const char *expected;
	} cases[] = {
		{0.0004, "400000n"},  {0.1, "100000u"},     {0.5, "500000u"},
		{55.0, "55000000u"},  {3600.0, "3600000m"}, {45 * 86400.0, "3888000S"},
		{10 * 365 * 86400.0, "5256000M"}, {1e12, "99999999S"},
		{1e-10, "1n"}, /* rounded up, never 0 */
	};
	char out[10];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_int_eq(grpc_timeout_encode(cases[i].seconds, out), 0);
		ck_assert_str_eq(out, cases[i].expected);
		ck_assert_uint_le(strlen(out), 9);
	}
	ck_assert_int_eq(grpc_timeout_encode(0.0, out), -1);
	ck_assert_int_eq(grpc_timeout_encode(-1.0, out), -1);
}
END_TEST

static void
check_decode(const char *in, const char *expected)
{
	char out[64];
	size_t n = grpc_percent_decode(in, strlen(in), out, sizeof(out));

	ck_assert_str_eq(out, expected);
	ck_assert_uint_eq(n, strlen(expected));
}

START_TEST(percent_decoding)
{
	check_decode("App%20not%20found", "App not found");
	check_decode("caf%C3%A9", "caf\xc3\xa9");
	check_decode("100%", "100%");     /* no escape: kept as it is */
	check_decode("%E2%82", "\xe2\x82"); /* truncated UTF-8 stays as sent */
	check_decode("%zz%4", "%zz%4");
	check_decode("caf\xc3\xa9", "caf\xc3\xa9"); /* raw UTF-8 passes through */
}
END_TEST

START_TEST(percent_decoding_caps_length)
{
	char in[8192], out[32];

	memset(in, 'x', sizeof(in));
	ck_assert_uint_eq(grpc_percent_decode(in, sizeof(in), out, sizeof(out)), 31);
	ck_assert_uint_eq(strlen(out), 31);
}
END_TEST

START_TEST(status_parsing_and_names)
{
	int code = -1;

	ck_assert_int_eq(grpc_parse_status("5", 1, &code), 0);
	ck_assert_int_eq(code, GRPC_NOT_FOUND);
	ck_assert_int_eq(grpc_parse_status("16", 2, &code), 0);
	ck_assert_str_eq(grpc_code_name(code), "UNAUTHENTICATED");
	ck_assert_int_eq(grpc_parse_status("", 0, &code), -1);
	ck_assert_int_eq(grpc_parse_status("1x", 2, &code), -1);
	ck_assert_str_eq(grpc_code_name(99), "UNKNOWN");
	ck_assert_str_eq(grpc_code_name(GRPC_RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
}
END_TEST

START_TEST(retryable_codes_match_modal_clients)
{
	for (int code = 0; code <= GRPC_CODE_MAX; code++) {
		int expected = code == GRPC_CANCELLED || code == GRPC_UNKNOWN ||
			       code == GRPC_DEADLINE_EXCEEDED ||
			       code == GRPC_INTERNAL || code == GRPC_UNAVAILABLE;
		ck_assert_int_eq(grpc_code_is_retryable(code), expected);
	}
}
END_TEST

START_TEST(http_status_mapping)
{
	ck_assert_int_eq(grpc_code_from_http_status(400), GRPC_INTERNAL);
	ck_assert_int_eq(grpc_code_from_http_status(401), GRPC_UNAUTHENTICATED);
	ck_assert_int_eq(grpc_code_from_http_status(403), GRPC_PERMISSION_DENIED);
	ck_assert_int_eq(grpc_code_from_http_status(404), GRPC_UNIMPLEMENTED);
	ck_assert_int_eq(grpc_code_from_http_status(502), GRPC_UNAVAILABLE);
	ck_assert_int_eq(grpc_code_from_http_status(503), GRPC_UNAVAILABLE);
	ck_assert_int_eq(grpc_code_from_http_status(500), GRPC_UNKNOWN);
}
END_TEST

START_TEST(backoff_schedule)
{
	struct grpc_retry_policy p;

	grpc_retry_policy_default(&p);
	ck_assert_uint_eq(p.max_retries, 3);
	ck_assert_double_eq_tol(grpc_retry_delay(&p, 1), 0.1, 1e-9);
	ck_assert_double_eq_tol(grpc_retry_delay(&p, 2), 0.2, 1e-9);
	ck_assert_double_eq_tol(grpc_retry_delay(&p, 3), 0.4, 1e-9);
	ck_assert_double_eq_tol(grpc_retry_delay(&p, 4), 0.8, 1e-9);
	ck_assert_double_eq_tol(grpc_retry_delay(&p, 5), 1.0, 1e-9); /* capped */
	ck_assert_double_eq_tol(grpc_retry_delay(&p, 30), 1.0, 1e-9);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("grpc_wire");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, frame_header_big_endian);
	tcase_add_test(tc, frame_reader_split_and_empty_messages);
	tcase_add_test(tc, frame_reader_partial_message);
	tcase_add_test(tc, frame_reader_rejects_compressed_and_oversized);
	tcase_add_test(tc, timeout_encoding_finest_fitting_unit);
	tcase_add_test(tc, percent_decoding);
	tcase_add_test(tc, percent_decoding_caps_length);
	tcase_add_test(tc, status_parsing_and_names);
	tcase_add_test(tc, retryable_codes_match_modal_clients);
	tcase_add_test(tc, http_status_mapping);
	tcase_add_test(tc, backoff_schedule);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
