/* The XML field extractor on S3 response bodies. */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "s3_xml.h"

#define LEN(s) (sizeof(s) - 1)

static const char error_body[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<Error><Code>NoSuchBucket</Code>"
	"<Message>The specified bucket does not exist</Message>"
	"<BucketName>missing</BucketName><RequestId>4442587FB7D0A2F9</RequestId>"
	"</Error>";

START_TEST(test_error_fields)
{
	char root[32];
	char *code = s3_xml_text(error_body, LEN(error_body), "Code");
	char *message = s3_xml_text(error_body, LEN(error_body), "Message");

	ck_assert_int_eq(s3_xml_root_name(error_body, LEN(error_body), root,
					  sizeof(root)), 1);
	ck_assert_str_eq(root, "Error");
	ck_assert_str_eq(code, "NoSuchBucket");
	ck_assert_str_eq(message, "The specified bucket does not exist");
	ck_assert_ptr_null(s3_xml_text(error_body, LEN(error_body), "Resource"));
	free(code);
	free(message);
}
END_TEST

START_TEST(test_complete_result_with_padding)
{
	/* S3 may send whitespace while it assembles the object, then the
	 * result or an error. */
	static const char ok[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n          \n"
		"<CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
		"<Location>http://b.s3.amazonaws.com/k</Location><Bucket>b</Bucket>"
		"<Key>k</Key><ETag>&quot;3858f62230ac3c915f300c664312c11f-9&quot;</ETag>"
		"</CompleteMultipartUploadResult>";
	static const char failed[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\n          \n"
		"<Error><Code>InternalError</Code><Message>We encountered an internal "
		"error. Please try again.</Message></Error>";
	char root[64];
	char *etag = s3_xml_text(ok, LEN(ok), "ETag");

	ck_assert_int_eq(s3_xml_root_name(ok, LEN(ok), root, sizeof(root)), 1);
	ck_assert_str_eq(root, "CompleteMultipartUploadResult");
	ck_assert_str_eq(etag, "\"3858f62230ac3c915f300c664312c11f-9\"");
	ck_assert_int_eq(s3_xml_root_name(failed, LEN(failed), root, sizeof(root)), 1);
	ck_assert_str_eq(root, "Error");
	free(etag);
}
END_TEST

START_TEST(test_root_of_non_xml)
{
	static const char html[] =
		"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>";
	static const char truncated[] = "<?xml version=\"1.0\"?><Complete";
	char root[64];

	ck_assert_int_eq(s3_xml_root_name("", 0, root, sizeof(root)), 0);
	ck_assert_int_eq(s3_xml_root_name("   \n", 4, root, sizeof(root)), 0);
	ck_assert_int_eq(s3_xml_root_name("Bad Gateway", 11, root, sizeof(root)), 0);
	ck_assert_int_eq(s3_xml_root_name(truncated, LEN(truncated), root,
					  sizeof(root)), 0);
	ck_assert_int_eq(s3_xml_root_name(html, LEN(html), root, sizeof(root)), 1);
	ck_assert_str_eq(root, "html");
}
END_TEST

START_TEST(test_repeated_elements)
{
	static const char listing[] =
		"<ListBucketResult><Name>b</Name><KeyCount>2</KeyCount>"
		"<Contents><Key>a b</Key><Size>5</Size></Contents>"
		"<Contents><Key>caf&#233;/&#x20AC;&amp;</Key><Size>0</Size></Contents>"
		"<Contents/>"
		"<IsTruncated>false</IsTruncated></ListBucketResult>";
	const char *inner;
	size_t inner_len, offset = 0;
	char *key;

	ck_assert_int_eq(s3_xml_next(listing, LEN(listing), &offset, "Contents",
				     &inner, &inner_len), 1);
	key = s3_xml_text(inner, inner_len, "Key");
	ck_assert_str_eq(key, "a b");
	free(key);
	ck_assert_int_eq(s3_xml_next(listing, LEN(listing), &offset, "Contents",
				     &inner, &inner_len), 1);
	key = s3_xml_text(inner, inner_len, "Key");
	ck_assert_str_eq(key, "caf\xc3\xa9/\xe2\x82\xac&");
	free(key);
	ck_assert_int_eq(s3_xml_next(listing, LEN(listing), &offset, "Contents",
				     &inner, &inner_len), 1);
	ck_assert_uint_eq(inner_len, 0);
	ck_assert_int_eq(s3_xml_next(listing, LEN(listing), &offset, "Contents",
				     &inner, &inner_len), 0);
}
END_TEST

START_TEST(test_name_prefix_not_matched)
{
	static const char body[] =
		"<ListMultipartUploadsResult><UploadIdMarker>m</UploadIdMarker>"
		"<Upload><Key>k</Key><UploadId>id-1</UploadId></Upload>"
		"</ListMultipartUploadsResult>";
	char *id = s3_xml_text(body, LEN(body), "UploadId");
	const char *inner;
	size_t inner_len, offset = 0;

	ck_assert_str_eq(id, "id-1");
	ck_assert_int_eq(s3_xml_next(body, LEN(body), &offset, "Upload", &inner,
				     &inner_len), 1);
	ck_assert_int_eq(strncmp(inner, "<Key>k</Key>", 12), 0);
	free(id);
}
END_TEST

START_TEST(test_missing_end_tag)
{
	static const char body[] = "<Error><Code>SlowDown</Code><Message>cut";
	char *code = s3_xml_text(body, LEN(body), "Code");

	ck_assert_str_eq(code, "SlowDown");
	ck_assert_ptr_null(s3_xml_text(body, LEN(body), "Message"));
	free(code);
}
END_TEST

START_TEST(test_decode_entities)
{
	static const struct {
		const char *in;
		const char *out;
	} cases[] = {
		{"&lt;a&gt; &amp; &quot;q&quot; &apos;", "<a> & \"q\" '"},
		{"&#65;&#x42;&#x1F600;", "AB\xf0\x9f\x98\x80"},
		{"&unknown; & &#;", "&unknown; & &#;"},
		{"&#0;", "&#0;"},
		{"plain", "plain"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = s3_xml_decode(cases[i].in, strlen(cases[i].in));

		ck_assert_str_eq(out, cases[i].out);
		free(out);
	}
}
END_TEST

START_TEST(test_escape_keeps_quotes)
{
	struct evbuffer *out = evbuffer_new();
	char text[128];
	size_t n;

	ck_assert_int_eq(s3_xml_append_escaped(out, "\"a&b<c>d\""), 0);
	n = evbuffer_remove(out, text, sizeof(text) - 1);
	text[n] = '\0';
	ck_assert_str_eq(text, "\"a&amp;b&lt;c&gt;d\"");
	evbuffer_free(out);
}
END_TEST

static Suite *
xml_suite(void)
{
	Suite *s = suite_create("s3_xml");
	TCase *tc = tcase_create("extract");

	tcase_add_test(tc, test_error_fields);
	tcase_add_test(tc, test_complete_result_with_padding);
	tcase_add_test(tc, test_root_of_non_xml);
	tcase_add_test(tc, test_repeated_elements);
	tcase_add_test(tc, test_name_prefix_not_matched);
	tcase_add_test(tc, test_missing_end_tag);
	tcase_add_test(tc, test_decode_entities);
	tcase_add_test(tc, test_escape_keeps_quotes);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *runner = srunner_create(xml_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
