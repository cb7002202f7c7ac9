/* Unit tests of URL parsing, base64, UUIDs and log redaction. */
#include "config.h"

#include <check.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

START_TEST(url_forms)
{
	struct url u;
	char err[256];

	ck_assert_int_eq(util_parse_url("https://api.modal.com", &u, err, sizeof(err)), 0);
	ck_assert_int_eq(u.tls, 1);
	ck_assert_str_eq(u.host, "api.modal.com");
	ck_assert_str_eq(u.port, "443");
	ck_assert_str_eq(u.authority, "api.modal.com:443");

	ck_assert_int_eq(util_parse_url("http://127.0.0.1:8080/", &u, err, sizeof(err)), 0);
	ck_assert_int_eq(u.tls, 0);
	ck_assert_str_eq(u.host, "127.0.0.1");
	ck_assert_str_eq(u.port, "8080");

	ck_assert_int_eq(util_parse_url("http://[::1]:50051", &u, err, sizeof(err)), 0);
	ck_assert_str_eq(u.host, "::1");
	ck_assert_str_eq(u.authority, "[::1]:50051");
}
END_TEST

START_TEST(url_rejections_name_the_value)
{
	struct url u;
	char err[256];
	const char *bad[] = {"api.modal.com", "ftp://x", "http://", "http://h:",
			     "http://h:12x", "http://h/path", "http://[::1"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(util_parse_url(bad[i], &u, err, sizeof(err)), -1);
		ck_assert_ptr_nonnull(strstr(err, bad[i]));
	}
}
END_TEST

START_TEST(base64_with_and_without_padding)
{
	uint8_t out[16];

	ck_assert_int_eq(util_base64_decode("aGk=", 4, out), 2);
	ck_assert_mem_eq(out, "hi", 2);
	ck_assert_int_eq(util_base64_decode("aGk", 3, out), 2);
	ck_assert_mem_eq(out, "hi", 2);
	ck_assert_int_eq(util_base64_decode("AAEC", 4, out), 3);
	ck_assert_int_eq(out[2], 2);
	ck_assert_int_eq(util_base64_decode("a", 1, out), -1);
	ck_assert_int_eq(util_base64_decode("a*b=", 4, out), -1);
}
END_TEST

START_TEST(uuid4_shape)
{
	char a[37], b[37];

	ck_assert_int_eq(util_uuid4(a), 0);
	ck_assert_int_eq(util_uuid4(b), 0);
	ck_assert_uint_eq(strlen(a), 36);
	ck_assert_str_ne(a, b);
	ck_assert_int_eq(a[14], '4');
	ck_assert_ptr_nonnull(strchr("89ab", a[19]));
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23)
			ck_assert_int_eq(a[i], '-');
		else
			ck_assert(isxdigit((unsigned char)a[i]));
	}
}
END_TEST

START_TEST(log_redacts_registered_secrets)
{
	char line[128] = "token as-secret-1 and as-secret-1 again, as-other";

	log_add_secret("as-secret-1");
	log_add_secret("as-other");
	log_redact(line);
	ck_assert_str_eq(line, "token *** and *** again, ***");
	log_free_secrets();
}
END_TEST

START_TEST(log_level_names)
{
	enum log_level level;

	ck_assert_int_eq(log_parse_level("DEBUG", &level), 0);
	ck_assert_int_eq(level, LOG_LEVEL_DEBUG);
	ck_assert_int_eq(log_parse_level("warn", &level), 0);
	ck_assert_int_eq(level, LOG_LEVEL_WARN);
	ck_assert_int_eq(log_parse_level("verbose", &level), -1);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("util");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, url_forms);
	tcase_add_test(tc, url_rejections_name_the_value);
	tcase_add_test(tc, base64_with_and_without_padding);
	tcase_add_test(tc, uuid4_shape);
	tcase_add_test(tc, log_redacts_registered_secrets);
	tcase_add_test(tc, log_level_names);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
