/* AWS configuration lookup, S3 URIs, part sizing and S3 option parsing.
 * Check runs each test in its own process, so environment changes stay
 * inside the test. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aws_config.h"
#include "s3.h"
#include "util.h"

#define MIB ((uint64_t)1024 * 1024)

static char tmpdir[] = "/tmp/test_s3_config.XXXXXX";

static void
clear_aws_env(void)
{
	static const char *const names[] = {
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
		"AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
		"AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
		"METAFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL",
		"MFMODAL_S3_PART_SIZE", "MFMODAL_S3_PARALLEL", "MFMODAL_S3_CHECKSUM",
		"MFMODAL_S3_MAX_PARTS", "MFMODAL_S3_MAX_ATTEMPTS",
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		unsetenv(names[i]);
}

static void
setup(void)
{
	char path[256];

	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	clear_aws_env();
	/* HOME without .aws, so the user's own files never leak in. */
	setenv("HOME", tmpdir, 1);
	snprintf(path, sizeof(path), "%s/credentials", tmpdir);
	setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
	snprintf(path, sizeof(path), "%s/config", tmpdir);
	setenv("AWS_CONFIG_FILE", path, 1);
}

static void
teardown(void)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/credentials", tmpdir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/config", tmpdir);
	unlink(path);
	rmdir(tmpdir);
}

static void
write_file(const char *name, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

START_TEST(test_env_credentials)
{
	struct aws_config cfg;
	char err[1024];

	setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "secret-env", 1);
	setenv("AWS_SESSION_TOKEN", "token-env", 1);
	setenv("AWS_DEFAULT_REGION", "eu-west-1", 1);
	write_file("credentials", "[default]\naws_access_key_id = AKIDFILE\n"
				  "aws_secret_access_key = secret-file\n");
	ck_assert_int_eq(aws_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_str_eq(cfg.access_key_id, "AKIDENV");
	ck_assert_str_eq(cfg.secret_access_key, "secret-env");
	ck_assert_str_eq(cfg.session_token, "token-env");
	ck_assert_str_eq(cfg.region, "eu-west-1");
	ck_assert_str_eq(cfg.region_source, "AWS_DEFAULT_REGION");
	ck_assert_ptr_nonnull(strstr(cfg.credential_source, "AWS_SESSION_TOKEN"));
	ck_assert_ptr_null(cfg.endpoint_url);
	aws_config_free(&cfg);
}
END_TEST

START_TEST(test_env_half_set)
{
	struct aws_config cfg;
	char err[1024];

	setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
	ck_assert_int_eq(aws_config_load(&cfg, err, sizeof(err)), ENGINE_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err, "AWS_SECRET_ACCESS_KEY is not"));
	aws_config_free(&cfg);
}
END_TEST

START_TEST(test_missing_credentials)
{
	struct aws_config cfg;
	char err[1024];

	ck_assert_int_eq(aws_config_load(&cfg, err, sizeof(err)), ENGINE_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err, "no AWS credentials found"));
	ck_assert_ptr_nonnull(strstr(err, "AWS_ACCESS_KEY_ID"));
	ck_assert_ptr_nonnull(strstr(err, "AWS_PROFILE"));
	aws_config_free(&cfg);
}
END_TEST

START_TEST(test_profile_in_credentials_file)
{
	struct aws_config cfg;
	char err[1024];

	setenv("AWS_PROFILE", "dev", 1);
	write_file("credentials",
		   "# comment\n[default]\naws_access_key_id=AKIDDEFAULT\n"
		   "aws_secret_access_key=secret-default\n\n"
		   "[dev]\n  ; indented comment\nAWS_ACCESS_KEY_ID = AKIDDEV\n"
		   "aws_secret_access_key = secret=with=equals \n"
		   "aws_session_token = tok\n");
	write_file("config", "[profile dev]\nregion = ap-south-1\ns3 =\n"
			     "  max_concurrent_requests = 20\n");
	ck_assert_int_eq(aws_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_str_eq(cfg.access_key_id, "AKIDDEV");
	ck_assert_str_eq(cfg.secret_access_key, "secret=with=equals");
	ck_assert_str_eq(cfg.session_token, "tok");
	ck_assert_str_eq(cfg.region, "ap-south-1");
	ck_assert_ptr_nonnull(strstr(cfg.credential_source, "profile 'dev'"));
	aws_config_free(&cfg);
}
END_TEST

START_TEST(test_profile_in_config_file)
{
	struct aws_config cfg;
	char err[1024];

	setenv("AWS_PROFILE", "ci", 1);
	write_file("config", "[default]\nregion = us-west-2\n"
			     "[profile   ci]\naws_access_key_id = AKIDCI\n"
			     "aws_secret_access_key = secret-ci\nregion = ca-central-1\n");
	ck_assert_int_eq(aws_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_str_eq(cfg.access_key_id, "AKIDCI");
	ck_assert_ptr_null(cfg.session_token);
	ck_assert_str_eq(cfg.region, "ca-central-1");
	aws_config_free(&cfg);
}
END_TEST

START_TEST(test_default_profile_region)
{
	struct aws_config cfg;
	char err[1024];

	write_file("credentials", "[default]\naws_access_key_id = A\n"
				  "aws_secret_access_key = S\n");
	write_file("config", "[default]\nregion = us-west-2\n");
	ck_assert_int_eq(aws_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_str_eq(cfg.region, "us-west-2");
	aws_config_free(&cfg);

	unlink(getenv("AWS_CONFIG_FILE"));
	ck_assert_int_eq(aws_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_str_eq(cfg.region, "us-east-1");
	ck_assert_ptr_nonnull(strstr(cfg.region_source, "default"));
	aws_config_free(&cfg);
}
END_TEST

START_TEST(test_unknown_profile)
{
	struct aws_config cfg;
	char err[1024];

	setenv("AWS_PROFILE", "nosuch", 1);
	write_file("credentials", "[default]\naws_access_key_id = A\n"
				  "aws_secret_access_key = S\n");
	ck_assert_int_eq(aws_config_load(&cfg, err, sizeof(err)), ENGINE_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err, "'nosuch'"));
	ck_assert_ptr_nonnull(strstr(err, "not found"));
	aws_config_free(&cfg);
}
END_TEST

START_TEST(test_profile_without_secret)
{
	struct aws_config cfg;
	char err[1024];

	write_file("credentials", "[default]\naws_access_key_id = A\n");
	ck_assert_int_eq(aws_config_load(&cfg, err, sizeof(err)), ENGINE_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err, "no aws_secret_access_key"));
	aws_config_free(&cfg);
}
END_TEST

START_TEST(test_endpoint_precedence)
{
	struct aws_config cfg;
	char err[1024];

	setenv("AWS_ACCESS_KEY_ID", "A", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "S", 1);
	setenv("AWS_ENDPOINT_URL", "http://generic:1", 1);
	setenv("AWS_ENDPOINT_URL_S3", "http://s3specific:2", 1);
	ck_assert_int_eq(aws_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_str_eq(cfg.endpoint_url, "http://s3specific:2");
	ck_assert_str_eq(cfg.endpoint_source, "AWS_ENDPOINT_URL_S3");
	aws_config_free(&cfg);

	setenv("METAFLOW_S3_ENDPOINT_URL", "https://metaflow:3", 1);
	ck_assert_int_eq(aws_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_str_eq(cfg.endpoint_url, "https://metaflow:3");
	ck_assert_str_eq(cfg.endpoint_source, "METAFLOW_S3_ENDPOINT_URL");
	aws_config_free(&cfg);
}
END_TEST

START_TEST(test_part_plan)
{
	static const struct {
		uint64_t size;
		uint64_t requested;
		unsigned max_parts;
		uint64_t part_size;
		unsigned nparts;
	} cases[] = {
		{0, 16 * MIB, 10000, 16 * MIB, 0},
		{1, 16 * MIB, 10000, 16 * MIB, 0},
		{5 * MIB - 1, 5 * MIB, 10000, 5 * MIB, 0},
		{5 * MIB, 5 * MIB, 10000, 5 * MIB, 1},
		{5 * MIB + 1, 5 * MIB, 10000, 5 * MIB, 2},
		{64 * MIB + 7, 16 * MIB, 10000, 16 * MIB, 5},
		/* Below S3's minimum, the requested size is raised to 5 MiB. */
		{12 * MIB, 1 * MIB, 10000, 5 * MIB, 3},
		/* 10,000 parts of 5 MiB exactly fit... */
		{10000 * 5 * MIB, 5 * MIB, 10000, 5 * MIB, 10000},
		/* ...one more byte needs 6 MiB parts. */
		{10000 * 5 * MIB + 1, 5 * MIB, 10000, 6 * MIB, 8334},
		/* 1 TiB with 8 MiB parts: 131,072 parts, so 105 MiB parts. */
		{1024 * 1024 * MIB, 8 * MIB, 10000, 105 * MIB, 9987},
		/* A lowered part limit grows small files' parts too. */
		{64 * MIB, 5 * MIB, 4, 16 * MIB, 4},
		{64 * MIB + 1, 5 * MIB, 4, 17 * MIB, 4},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t part_size = 0;
		unsigned nparts = 99;

		ck_assert_int_eq(s3_part_plan(cases[i].size, cases[i].requested,
					      cases[i].max_parts, &part_size, &nparts), 0);
		ck_assert_msg(part_size == cases[i].part_size,
			      "case %zu: part size %llu, expected %llu", i,
			      (unsigned long long)part_size,
			      (unsigned long long)cases[i].part_size);
		ck_assert_msg(nparts == cases[i].nparts,
			      "case %zu: %u parts, expected %u", i, nparts,
			      cases[i].nparts);
		ck_assert_uint_ge(part_size, S3_MIN_PART_SIZE);
		ck_assert_uint_le(nparts, cases[i].max_parts);
	}
}
END_TEST

START_TEST(test_part_plan_too_large)
{
	uint64_t part_size;
	unsigned nparts;

	ck_assert_int_eq(s3_part_plan(S3_MAX_OBJECT_SIZE, 8 * MIB, 10000,
				      &part_size, &nparts), 0);
	ck_assert_uint_eq(part_size, 525 * MIB);
	ck_assert_uint_eq(nparts, 9987);
	ck_assert_int_eq(s3_part_plan(S3_MAX_OBJECT_SIZE + 1, 8 * MIB, 10000,
				      &part_size, &nparts), ENGINE_ERR_INVALID);
}
END_TEST

START_TEST(test_parse_uri)
{
	char *bucket, *key;

	ck_assert_int_eq(s3_parse_uri("s3://b/dir/a b+c.txt", &bucket, &key), 0);
	ck_assert_str_eq(bucket, "b");
	ck_assert_str_eq(key, "dir/a b+c.txt");
	free(bucket);
	free(key);
	ck_assert_int_eq(s3_parse_uri("s3://b", &bucket, &key), 0);
	ck_assert_str_eq(key, "");
	free(bucket);
	free(key);
	ck_assert_int_eq(s3_parse_uri("s3:///k", &bucket, &key), -1);
	ck_assert_int_eq(s3_parse_uri("http://b/k", &bucket, &key), -1);
	ck_assert_int_eq(s3_parse_uri("s3://", &bucket, &key), -1);
}
END_TEST

START_TEST(test_upload_options_env)
{
	struct s3_upload_options opts;
	char err[256];

	s3_upload_options_default(&opts);
	ck_assert_uint_eq(opts.part_size, S3_DEFAULT_PART_SIZE);
	ck_assert_uint_eq(opts.parallelism, S3_DEFAULT_PARALLELISM);
	ck_assert_int_eq(opts.checksum, S3_CHECKSUM_AUTO);
	setenv("MFMODAL_S3_PART_SIZE", "32", 1);
	setenv("MFMODAL_S3_PARALLEL", "3", 1);
	setenv("MFMODAL_S3_CHECKSUM", "MD5", 1);
	ck_assert_int_eq(s3_upload_options_from_env(&opts, err, sizeof(err)), 0);
	ck_assert_uint_eq(opts.part_size, 32 * MIB);
	ck_assert_uint_eq(opts.parallelism, 3);
	ck_assert_int_eq(opts.checksum, S3_CHECKSUM_MD5);
	setenv("MFMODAL_S3_CHECKSUM", "sha256", 1);
	ck_assert_int_eq(s3_upload_options_from_env(&opts, err, sizeof(err)), 0);
	ck_assert_int_eq(opts.checksum, S3_CHECKSUM_SHA256);
	setenv("MFMODAL_S3_CHECKSUM", "auto", 1);
	ck_assert_int_eq(s3_upload_options_from_env(&opts, err, sizeof(err)), 0);
	ck_assert_int_eq(opts.checksum, S3_CHECKSUM_AUTO);

	setenv("MFMODAL_S3_PART_SIZE", "4", 1);
	ck_assert_int_eq(s3_upload_options_from_env(&opts, err, sizeof(err)),
			 ENGINE_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err, "MFMODAL_S3_PART_SIZE"));
	setenv("MFMODAL_S3_PART_SIZE", "8", 1);
	setenv("MFMODAL_S3_CHECKSUM", "sha1", 1);
	ck_assert_int_eq(s3_upload_options_from_env(&opts, err, sizeof(err)),
			 ENGINE_ERR_CONFIG);
	ck_assert_ptr_nonnull(strstr(err, "MFMODAL_S3_CHECKSUM"));
}
END_TEST

static Suite *
config_suite(void)
{
	Suite *s = suite_create("s3_config");
	TCase *aws = tcase_create("aws config");
	TCase *plan = tcase_create("parts and options");

	tcase_add_checked_fixture(aws, setup, teardown);
	tcase_add_test(aws, test_env_credentials);
	tcase_add_test(aws, test_env_half_set);
	tcase_add_test(aws, test_missing_credentials);
	tcase_add_test(aws, test_profile_in_credentials_file);
	tcase_add_test(aws, test_profile_in_config_file);
	tcase_add_test(aws, test_default_profile_region);
	tcase_add_test(aws, test_unknown_profile);
	tcase_add_test(aws, test_profile_without_secret);
	tcase_add_test(aws, test_endpoint_precedence);
	tcase_add_checked_fixture(plan, setup, teardown);
	tcase_add_test(plan, test_part_plan);
	tcase_add_test(plan, test_part_plan_too_large);
	tcase_add_test(plan, test_parse_uri);
	tcase_add_test(plan, test_upload_options_env);
	suite_add_tcase(s, aws);
	suite_add_tcase(s, plan);
	return s;
}

int
main(void)
{
	SRunner *runner = srunner_create(config_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
