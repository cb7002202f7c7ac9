/* SigV4 against the worked examples of the S3 API reference ("Signature
 * Calculations for the Authorization Header: Transferring Payload in a Single
 * Chunk" and "Authenticating Requests: Using Query Parameters"): the example
 * credentials, bucket examplebucket, region us-east-1, 2013-05-24 00:00:00
 * UTC.  The expected canonical requests, strings to sign and signatures were
 * checked against botocore 1.44.8's S3SigV4Auth and S3SigV4QueryAuth with
 * the same inputs. */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "sigv4.h"
#include "util.h"

#define EXAMPLE_DATE ((time_t)1369353600) /* 2013-05-24T00:00:00Z */
#define EXAMPLE_HOST "examplebucket.s3.amazonaws.com"

static const struct sigv4_credentials example_creds = {
	.access_key_id = "AKIAIOSFODNN7EXAMPLE",
	.secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
};

static struct sigv4_request
example_request(const char *method, const char *uri,
		const struct sigv4_param *query, size_t nquery,
		const struct sigv4_param *headers, size_t nheaders,
		const char *payload_hash)
{
	struct sigv4_request req = {
		.method = method,
		.canonical_uri = uri,
		.query = query,
		.nquery = nquery,
		.headers = headers,
		.nheaders = nheaders,
		.payload_hash = payload_hash,
		.region = "us-east-1",
		.service = "s3",
		.date = EXAMPLE_DATE,
	};
	return req;
}

START_TEST(test_date_format)
{
	char amz_date[17], day[9];

	sigv4_format_date(EXAMPLE_DATE, amz_date, day);
	ck_assert_str_eq(amz_date, "20130524T000000Z");
	ck_assert_str_eq(day, "20130524");
}
END_TEST

START_TEST(test_get_object_with_range)
{
	const struct sigv4_param headers[] = {
		{"Host", EXAMPLE_HOST},
		{"Range", "bytes=0-9"},
		{"x-amz-content-sha256", SIGV4_EMPTY_SHA256},
		{"x-amz-date", "20130524T000000Z"},
	};
	struct sigv4_request req = example_request(
		"GET", "/test.txt", NULL, 0, headers, 4, SIGV4_EMPTY_SHA256);
	struct sigv4_signature sig;

	ck_assert_int_eq(sigv4_sign(&example_creds, &req, &sig), 0);
	ck_assert_str_eq(sig.canonical_request,
			 "GET\n"
			 "/test.txt\n"
			 "\n"
			 "host:examplebucket.s3.amazonaws.com\n"
			 "range:bytes=0-9\n"
			 "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
			 "x-amz-date:20130524T000000Z\n"
			 "\n"
			 "host;range;x-amz-content-sha256;x-amz-date\n"
			 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	ck_assert_str_eq(sig.string_to_sign,
			 "AWS4-HMAC-SHA256\n"
			 "20130524T000000Z\n"
			 "20130524/us-east-1/s3/aws4_request\n"
			 "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
	ck_assert_str_eq(sig.signature,
			 "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
	ck_assert_str_eq(sig.authorization,
			 "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/"
			 "us-east-1/s3/aws4_request,SignedHeaders=host;range;"
			 "x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420"
			 "e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
	sigv4_signature_free(&sig);
}
END_TEST

START_TEST(test_put_object)
{
	const char *body = "Welcome to Amazon S3.";
	char payload[65];
	char *uri = sigv4_uri_encode("/test$file.text", 1);
	struct sigv4_signature sig;

	sigv4_sha256_hex(body, strlen(body), payload);
	ck_assert_str_eq(payload,
			 "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
	ck_assert_str_eq(uri, "/test%24file.text");

	const struct sigv4_param headers[] = {
		{"Host", EXAMPLE_HOST},
		{"Date", "Fri, 24 May 2013 00:00:00 GMT"},
		{"x-amz-date", "20130524T000000Z"},
		{"x-amz-storage-class", "REDUCED_REDUNDANCY"},
		{"x-amz-content-sha256", payload},
	};
	struct sigv4_request req =
		example_request("PUT", uri, NULL, 0, headers, 5, payload);

	ck_assert_int_eq(sigv4_sign(&example_creds, &req, &sig), 0);
	ck_assert_str_eq(sig.canonical_request,
			 "PUT\n"
			 "/test%24file.text\n"
			 "\n"
			 "date:Fri, 24 May 2013 00:00:00 GMT\n"
			 "host:examplebucket.s3.amazonaws.com\n"
			 "x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n"
			 "x-amz-date:20130524T000000Z\n"
			 "x-amz-storage-class:REDUCED_REDUNDANCY\n"
			 "\n"
			 "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n"
			 "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
	ck_assert_str_eq(sig.string_to_sign,
			 "AWS4-HMAC-SHA256\n"
			 "20130524T000000Z\n"
			 "20130524/us-east-1/s3/aws4_request\n"
			 "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d");
	ck_assert_str_eq(sig.signature,
			 "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
	ck_assert_str_eq(sig.signed_headers,
			 "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class");
	sigv4_signature_free(&sig);
	free(uri);
}
END_TEST

START_TEST(test_get_bucket_lifecycle)
{
	const struct sigv4_param query[] = {{"lifecycle", ""}};
	const struct sigv4_param headers[] = {
		{"Host", EXAMPLE_HOST},
		{"x-amz-date", "20130524T000000Z"},
		{"x-amz-content-sha256", SIGV4_EMPTY_SHA256},
	};
	struct sigv4_request req = example_request(
		"GET", "/", query, 1, headers, 3, SIGV4_EMPTY_SHA256);
	struct sigv4_signature sig;

	ck_assert_int_eq(sigv4_sign(&example_creds, &req, &sig), 0);
	ck_assert_str_eq(sig.canonical_request,
			 "GET\n"
			 "/\n"
			 "lifecycle=\n"
			 "host:examplebucket.s3.amazonaws.com\n"
			 "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
			 "x-amz-date:20130524T000000Z\n"
			 "\n"
			 "host;x-amz-content-sha256;x-amz-date\n"
			 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	ck_assert_str_eq(sig.string_to_sign,
			 "AWS4-HMAC-SHA256\n"
			 "20130524T000000Z\n"
			 "20130524/us-east-1/s3/aws4_request\n"
			 "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca");
	ck_assert_str_eq(sig.signature,
			 "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
	sigv4_signature_free(&sig);
}
END_TEST

START_TEST(test_list_objects)
{
	/* Given out of order: the canonical query sorts them. */
	const struct sigv4_param query[] = {{"prefix", "J"}, {"max-keys", "2"}};
	const struct sigv4_param headers[] = {
		{"Host", EXAMPLE_HOST},
		{"x-amz-date", "20130524T000000Z"},
		{"x-amz-content-sha256", SIGV4_EMPTY_SHA256},
	};
	struct sigv4_request req = example_request(
		"GET", "/", query, 2, headers, 3, SIGV4_EMPTY_SHA256);
	struct sigv4_signature sig;

	ck_assert_int_eq(sigv4_sign(&example_creds, &req, &sig), 0);
	ck_assert_str_eq(sig.canonical_request,
			 "GET\n"
			 "/\n"
			 "max-keys=2&prefix=J\n"
			 "host:examplebucket.s3.amazonaws.com\n"
			 "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
			 "x-amz-date:20130524T000000Z\n"
			 "\n"
			 "host;x-amz-content-sha256;x-amz-date\n"
			 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	ck_assert_str_eq(sig.string_to_sign,
			 "AWS4-HMAC-SHA256\n"
			 "20130524T000000Z\n"
			 "20130524/us-east-1/s3/aws4_request\n"
			 "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7");
	ck_assert_str_eq(sig.signature,
			 "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
	sigv4_signature_free(&sig);
}
END_TEST

START_TEST(test_presigned_url)
{
	const struct sigv4_param headers[] = {{"host", EXAMPLE_HOST}};
	struct sigv4_request req = example_request(
		"GET", "/test.txt", NULL, 0, headers, 1, SIGV4_UNSIGNED_PAYLOAD);
	struct sigv4_signature sig;
	char *query = NULL;

	ck_assert_int_eq(sigv4_presign(&example_creds, &req, 86400, &query, &sig), 0);
	ck_assert_str_eq(sig.canonical_request,
			 "GET\n"
			 "/test.txt\n"
			 "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
			 "AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2F"
			 "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires="
			 "86400&X-Amz-SignedHeaders=host\n"
			 "host:examplebucket.s3.amazonaws.com\n"
			 "\n"
			 "host\n"
			 "UNSIGNED-PAYLOAD");
	ck_assert_str_eq(sig.string_to_sign,
			 "AWS4-HMAC-SHA256\n"
			 "20130524T000000Z\n"
			 "20130524/us-east-1/s3/aws4_request\n"
			 "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04");
	ck_assert_str_eq(sig.signature,
			 "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
	ck_assert_str_eq(query,
			 "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
			 "AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2F"
			 "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires="
			 "86400&X-Amz-SignedHeaders=host&X-Amz-Signature="
			 "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
	sigv4_signature_free(&sig);
	free(query);
}
END_TEST

START_TEST(test_presign_session_token)
{
	const struct sigv4_credentials creds = {
		.access_key_id = "AKIAIOSFODNN7EXAMPLE",
		.secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
		.session_token = "token/with+chars=",
	};
	const struct sigv4_param headers[] = {{"host", EXAMPLE_HOST}};
	struct sigv4_request req = example_request(
		"GET", "/test.txt", NULL, 0, headers, 1, SIGV4_UNSIGNED_PAYLOAD);
	struct sigv4_signature sig;
	char *query = NULL;

	ck_assert_int_eq(sigv4_presign(&creds, &req, 3600, &query, &sig), 0);
	ck_assert_ptr_nonnull(strstr(query,
				     "&X-Amz-Security-Token=token%2Fwith%2Bchars%3D&"));
	ck_assert_ptr_nonnull(strstr(sig.canonical_request,
				     "X-Amz-Security-Token=token%2Fwith%2Bchars%3D"));
	sigv4_signature_free(&sig);
	free(query);
}
END_TEST

START_TEST(test_presign_rejects_long_expiry)
{
	const struct sigv4_param headers[] = {{"host", EXAMPLE_HOST}};
	struct sigv4_request req = example_request(
		"GET", "/test.txt", NULL, 0, headers, 1, SIGV4_UNSIGNED_PAYLOAD);
	struct sigv4_signature sig;
	char *query = NULL;

	ck_assert_int_eq(sigv4_presign(&example_creds, &req, 604801, &query, &sig),
			 ENGINE_ERR_INVALID);
	ck_assert_ptr_null(query);
}
END_TEST

START_TEST(test_uri_encode_keys)
{
	static const struct {
		const char *in;
		int keep_slash;
		const char *out;
	} cases[] = {
		{"/dir/a b.txt", 1, "/dir/a%20b.txt"},
		{"/a+b=c~d", 1, "/a%2Bb%3Dc~d"},
		{"/caf\xc3\xa9/\xe2\x82\xac.bin", 1, "/caf%C3%A9/%E2%82%AC.bin"},
		{"/a//b/", 1, "/a//b/"},
		{"a/b", 0, "a%2Fb"},
		{"-._~AZaz09", 0, "-._~AZaz09"},
		{"%", 1, "%25"},
		{"", 1, ""},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = sigv4_uri_encode(cases[i].in, cases[i].keep_slash);

		ck_assert_str_eq(out, cases[i].out);
		free(out);
	}
}
END_TEST

START_TEST(test_canonical_query_sorts_encoded)
{
	const struct sigv4_param params[] = {
		{"uploadId", "a/b+c"},
		{"partNumber", "12"},
		{"uploads", NULL},
		{"prefix", "dir one/"},
	};
	char *query = sigv4_canonical_query(params, 4);

	ck_assert_str_eq(query, "partNumber=12&prefix=dir%20one%2F&uploadId=a%2Fb%2Bc&uploads=");
	free(query);
	query = sigv4_canonical_query(NULL, 0);
	ck_assert_str_eq(query, "");
	free(query);
}
END_TEST

START_TEST(test_headers_trimmed_and_joined)
{
	const struct sigv4_param headers[] = {
		{"Host", "h"},
		{"X-Amz-Meta-A", "  one   two  "},
		{"x-amz-meta-a", "three"},
		{"x-amz-date", "20130524T000000Z"},
	};
	struct sigv4_request req = example_request(
		"GET", "/", NULL, 0, headers, 4, SIGV4_UNSIGNED_PAYLOAD);
	struct sigv4_signature sig;

	ck_assert_int_eq(sigv4_sign(&example_creds, &req, &sig), 0);
	ck_assert_str_eq(sig.canonical_request,
			 "GET\n/\n\nhost:h\nx-amz-date:20130524T000000Z\n"
			 "x-amz-meta-a:one two,three\n\n"
			 "host;x-amz-date;x-amz-meta-a\nUNSIGNED-PAYLOAD");
	sigv4_signature_free(&sig);
}
END_TEST

START_TEST(test_sign_requires_fields)
{
	const struct sigv4_credentials no_key = {.access_key_id = "",
						 .secret_access_key = "s"};
	struct sigv4_request req = example_request(
		"GET", "/", NULL, 0, NULL, 0, SIGV4_UNSIGNED_PAYLOAD);
	struct sigv4_signature sig;

	ck_assert_int_eq(sigv4_sign(&no_key, &req, &sig), ENGINE_ERR_INVALID);
	ck_assert_ptr_null(sig.authorization);
}
END_TEST

static Suite *
sigv4_suite(void)
{
	Suite *s = suite_create("sigv4");
	TCase *examples = tcase_create("aws examples");
	TCase *encoding = tcase_create("encoding");

	tcase_add_test(examples, test_date_format);
	tcase_add_test(examples, test_get_object_with_range);
	tcase_add_test(examples, test_put_object);
	tcase_add_test(examples, test_get_bucket_lifecycle);
	tcase_add_test(examples, test_list_objects);
	tcase_add_test(examples, test_presigned_url);
	tcase_add_test(examples, test_presign_session_token);
	tcase_add_test(examples, test_presign_rejects_long_expiry);
	tcase_add_test(encoding, test_uri_encode_keys);
	tcase_add_test(encoding, test_canonical_query_sorts_encoded);
	tcase_add_test(encoding, test_headers_trimmed_and_joined);
	tcase_add_test(encoding, test_sign_requires_fields);
	suite_add_tcase(s, examples);
	suite_add_tcase(s, encoding);
	return s;
}

int
main(void)
{
	SRunner *runner = srunner_create(sigv4_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
