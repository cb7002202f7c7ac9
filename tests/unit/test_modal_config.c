/* Unit tests of Modal settings: ~/.modal.toml profiles and the environment. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "modal_config.h"

static char path[] = "/tmp/mfmodal-test-XXXXXX";

static void
write_config(const char *text)
{
	int fd = mkstemp(path);
	FILE *f;

	ck_assert_int_ge(fd, 0);
	f = fdopen(fd, "w");
	fputs(text, f);
	fclose(f);
	setenv("MODAL_CONFIG_PATH", path, 1);
}

static void
clean_env(void)
{
	unsetenv("MODAL_TOKEN_ID");
	unsetenv("MODAL_TOKEN_SECRET");
	unsetenv("MODAL_PROFILE");
	unsetenv("MODAL_SERVER_URL");
	unsetenv("MODAL_ENVIRONMENT");
	unsetenv("MFMODAL_CLIENT_TYPE");
	unsetenv("MFMODAL_CLIENT_VERSION");
	setenv("MODAL_CONFIG_PATH", "/nonexistent/modal.toml", 1);
	strcpy(path, "/tmp/mfmodal-test-XXXXXX");
}

static void
teardown(void)
{
	if (strstr(path, "XXXXXX") == NULL)
		unlink(path);
}

START_TEST(active_profile_is_used)
{
	struct modal_config cfg;
	char err[512] = "";

	write_config("# comment\n"
		     "[default]\n"
		     "token_id = \"ak-default\"\n"
		     "token_secret = \"as-default\"\n"
		     "\n"
		     "[work]\n"
		     "token_id = 'ak-work'\n"
		     "token_secret = \"as-work\"  # trailing comment\n"
		     "server_url = \"http://127.0.0.1:9\"\n"
		     "environment = \"dev\"\n"
		     "active = true\n");
	ck_assert_int_eq(modal_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_str_eq(cfg.token_id, "ak-work");
	ck_assert_str_eq(cfg.token_secret, "as-work");
	ck_assert_str_eq(cfg.server_url, "http://127.0.0.1:9");
	ck_assert_str_eq(cfg.environment, "dev");
	ck_assert_str_eq(cfg.profile, "work");
	ck_assert_ptr_nonnull(strstr(cfg.token_source, "profile 'work' in "));
	modal_config_free(&cfg);
}
END_TEST

START_TEST(modal_profile_overrides_active)
{
	struct modal_config cfg;
	char err[512] = "";

	write_config("[a]\ntoken_id = \"ak-a\"\ntoken_secret = \"as-a\"\nactive = true\n"
		     "[b]\ntoken_id = \"ak-b\"\ntoken_secret = \"as-b\"\n");
	setenv("MODAL_PROFILE", "b", 1);
	ck_assert_int_eq(modal_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_str_eq(cfg.token_id, "ak-b");
	modal_config_free(&cfg);
}
END_TEST

START_TEST(environment_overrides_profile)
{
	struct modal_config cfg;
	char err[512] = "";

	write_config("[default]\ntoken_id = \"ak-file\"\ntoken_secret = \"as-file\"\n");
	setenv("MODAL_TOKEN_ID", "ak-env", 1);
	setenv("MODAL_TOKEN_SECRET", "as-env", 1);
	setenv("MODAL_SERVER_URL", "http://127.0.0.1:1", 1);
	ck_assert_int_eq(modal_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_str_eq(cfg.token_id, "ak-env");
	ck_assert_str_eq(cfg.token_secret, "as-env");
	ck_assert_str_eq(cfg.server_url, "http://127.0.0.1:1");
	ck_assert_str_eq(cfg.token_source, "MODAL_TOKEN_ID and MODAL_TOKEN_SECRET");
	ck_assert_str_eq(cfg.client_type, "1");
	ck_assert_str_eq(cfg.client_version, "1.6.4");
	modal_config_free(&cfg);
}
END_TEST

START_TEST(defaults_without_file)
{
	struct modal_config cfg;
	char err[512] = "";

	setenv("MODAL_TOKEN_ID", "ak-env", 1);
	setenv("MODAL_TOKEN_SECRET", "as-env", 1);
	ck_assert_int_eq(modal_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_str_eq(cfg.server_url, "https://api.modal.com");
	ck_assert_str_eq(cfg.environment, "");
	modal_config_free(&cfg);
}
END_TEST

START_TEST(missing_credentials_message)
{
	struct modal_config cfg;
	char err[512] = "";

	ck_assert_int_ne(modal_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "Modal credentials are missing"));
	ck_assert_ptr_nonnull(strstr(err, "MODAL_TOKEN_ID"));
	ck_assert_ptr_nonnull(strstr(err, "modal token new"));
	modal_config_free(&cfg);
}
END_TEST

START_TEST(empty_or_whitespace_token_rejected)
{
	struct modal_config cfg;
	char err[512] = "";

	setenv("MODAL_TOKEN_ID", "", 1);
	setenv("MODAL_TOKEN_SECRET", "as-env", 1);
	ck_assert_int_ne(modal_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "token id from MODAL_TOKEN_ID and MODAL_TOKEN_SECRET is empty"));
	modal_config_free(&cfg);

	setenv("MODAL_TOKEN_ID", "ak-abc\n", 1);
	ck_assert_int_ne(modal_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "contains whitespace"));
	modal_config_free(&cfg);

	setenv("MODAL_TOKEN_ID", "ak-abc", 1);
	setenv("MODAL_TOKEN_SECRET", "as-abc ", 1);
	ck_assert_int_ne(modal_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "token secret"));
	/* the message names the problem, never the value */
	ck_assert_ptr_null(strstr(err, "as-abc"));
	modal_config_free(&cfg);
}
END_TEST

START_TEST(two_active_profiles_rejected)
{
	struct modal_config cfg;
	char err[512] = "";

	write_config("[a]\nactive = true\n[b]\nactive = true\n");
	ck_assert_int_ne(modal_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "more than one Modal profile is active"));
	modal_config_free(&cfg);
}
END_TEST

START_TEST(several_profiles_none_active_rejected)
{
	struct modal_config cfg;
	char err[512] = "";

	write_config("[a]\ntoken_id = \"ak-a\"\n[b]\ntoken_id = \"ak-b\"\n");
	ck_assert_int_ne(modal_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "no Modal profile is active"));
	modal_config_free(&cfg);
}
END_TEST

START_TEST(syntax_error_names_line)
{
	struct modal_config cfg;
	char err[512] = "";

	write_config("[default]\ntoken_id \"ak\"\n");
	ck_assert_int_ne(modal_config_load(&cfg, err, sizeof(err)), 0);
	ck_assert_ptr_nonnull(strstr(err, "line 2"));
	modal_config_free(&cfg);
}
END_TEST

START_TEST(single_profile_selected_by_name_default)
{
	struct toml_profile profiles[1] = {{.name = "default"}};
	char err[128];

	ck_assert_int_eq(toml_profile_select(profiles, 1, NULL, "f", err, sizeof(err)), 0);
	profiles[0].name = "other";
	/* Modal's client reads the profile called "default" unless one is active. */
	ck_assert_int_eq(toml_profile_select(profiles, 1, NULL, "f", err, sizeof(err)), -1);
	ck_assert_int_eq(toml_profile_select(profiles, 1, "other", "f", err, sizeof(err)), 0);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("modal_config");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, clean_env, teardown);
	tcase_add_test(tc, active_profile_is_used);
	tcase_add_test(tc, modal_profile_overrides_active);
	tcase_add_test(tc, environment_overrides_profile);
	tcase_add_test(tc, defaults_without_file);
	tcase_add_test(tc, missing_credentials_message);
	tcase_add_test(tc, empty_or_whitespace_token_rejected);
	tcase_add_test(tc, two_active_profiles_rejected);
	tcase_add_test(tc, several_profiles_none_active_rejected);
	tcase_add_test(tc, syntax_error_names_line);
	tcase_add_test(tc, single_profile_selected_by_name_default);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
