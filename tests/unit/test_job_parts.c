/* Unit tests of the GPU grammar, job descriptions and the log sink. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu.h"
#include "jobspec.h"
#include "logsink.h"

START_TEST(gpu_strings_accepted)
{
	static const struct {
		const char *text, *type;
		unsigned count;
	} cases[] = {
		{"A100", "A100", 1},       {"a100:4", "A100", 4},
		{"a100-80gb:8", "A100-80GB", 8}, {"h100!", "H100!", 1},
		{"B200+", "B200+", 1},     {"T4:1", "T4", 1},
		{"rtx-pro-6000:2", "RTX-PRO-6000", 2},
	};
	struct gpu_request gpu;
	char err[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_int_eq(gpu_parse(cases[i].text, &gpu, err, sizeof(err)), 0);
		ck_assert_str_eq(gpu.type, cases[i].type);
		ck_assert_uint_eq(gpu.count, cases[i].count);
	}
}
END_TEST

START_TEST(gpu_strings_rejected_with_value)
{
	const char *bad[] = {"", ":2", "A100:0", "A100:9", "H100:abc", "A100:",
			     "A100:-1", "A 100", "A100:4:2"};
	struct gpu_request gpu;
	char err[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(gpu_parse(bad[i], &gpu, err, sizeof(err)), -1);
		ck_assert_ptr_nonnull(strstr(err, "invalid GPU"));
		char quoted[64];
		snprintf(quoted, sizeof(quoted), "\"%s\"", bad[i]);
		ck_assert_ptr_nonnull(strstr(err, quoted));
	}
}
END_TEST

static size_t
parse_text(const char *text, struct jobspec *spec, struct jobspec_errors *errs)
{
	json_error_t jerr;
	json_t *doc = json_loads(text, 0, &jerr);
	size_t n;

	ck_assert_ptr_nonnull(doc);
	n = jobspec_parse(doc, "$", spec, errs);
	json_decref(doc);
	return n;
}

START_TEST(jobspec_defaults)
{
	struct jobspec spec;
	struct jobspec_errors errs = {0};

	ck_assert_uint_eq(parse_text("{\"id\":\"a\",\"command\":\"true\"}", &spec, &errs), 0);
	ck_assert_str_eq(spec.app, "mfmodal");
	ck_assert_int_eq(spec.image.kind, JOB_IMAGE_DEBIAN_SLIM);
	ck_assert_str_eq(spec.image.value, "3.11");
	ck_assert_uint_eq(spec.memory_mb, 1024);
	ck_assert_uint_eq(spec.timeout, 600);
	ck_assert_int_eq(spec.has_gpu, 0);
	jobspec_free(&spec);
}
END_TEST

START_TEST(jobspec_task_and_name)
{
	struct jobspec spec;
	struct jobspec_errors errs = {0};
	char name[65];

	ck_assert_uint_eq(parse_text("{\"id\":\"a\",\"command\":\"true\",\"task\":"
				     "{\"flow\":\"F\",\"run\":\"12\",\"step\":\"s t\","
				     "\"task\":\"5\",\"attempt\":2}}",
				     &spec, &errs), 0);
	jobspec_sandbox_name(&spec, name);
	ck_assert_str_eq(name, "mf-F-12-s-t-5-2");
	jobspec_free(&spec);
}
END_TEST

START_TEST(jobspec_long_name_hashed)
{
	struct jobspec spec;
	struct jobspec_errors errs = {0};
	char name[65], other[65];
	char text[512];

	snprintf(text, sizeof(text),
		 "{\"id\":\"a\",\"command\":\"true\",\"task\":{\"flow\":\"%s\","
		 "\"run\":\"1\",\"step\":\"s\",\"task\":\"1\",\"attempt\":0}}",
		 "AVeryLongFlowNameThatGoesOnAndOnForSeveralWordsIndeed");
	ck_assert_uint_eq(parse_text(text, &spec, &errs), 0);
	jobspec_sandbox_name(&spec, name);
	ck_assert_uint_eq(strlen(name), 64);
	spec.task.attempt = 1;
	jobspec_sandbox_name(&spec, other);
	ck_assert_str_ne(name, other); /* attempts never share a name */
	jobspec_free(&spec);
}
END_TEST

START_TEST(jobspec_errors_have_paths)
{
	struct jobspec spec;
	struct jobspec_errors errs = {0};

	ck_assert_uint_eq(parse_text("{\"id\":\"a\",\"command\":\"x\",\"env\":{\"A\":1},"
				     "\"logs\":{\"url\":\"file:///x\"},\"workdir\":\"rel\"}",
				     &spec, &errs), 4);
	ck_assert_str_eq(errs.items[0], "$.env.A: expected a string");
	ck_assert_str_eq(errs.items[1], "$.workdir: expected an absolute path, got \"rel\"");
	ck_assert_str_eq(errs.items[2], "$.logs.url: expected an s3:// URL, got \"file:///x\"");
	ck_assert_ptr_nonnull(strstr(errs.items[3], "$.logs: needs $.task"));
	jobspec_errors_free(&errs);
	jobspec_free(&spec);
}
END_TEST

static char *
relayed(FILE *f)
{
	static char buf[4096];
	size_t n;

	rewind(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	return buf;
}

START_TEST(logsink_assembles_lines_across_chunks)
{
	FILE *out = tmpfile();
	struct logsink *sink = logsink_new(NULL, out, NULL);
	size_t len;

	logsink_write(sink, 1, "hel", 3, 1700000000.25);
	logsink_write(sink, 1, "lo\nwor", 6, 1700000001.0);
	logsink_write(sink, 1, "ld", 2, 1700000002.0);
	logsink_finish(sink, 1);
	ck_assert_uint_eq(logsink_lines(sink, 1), 2);
	char *text = logsink_content(sink, 1, &len);
	/* the first line carries the time of its first chunk */
	ck_assert_ptr_nonnull(strstr(text, "[MFLOG|0|2023-11-14T22:13:20.250000Z|task|"));
	ck_assert_ptr_nonnull(strstr(text, "]hello\n"));
	ck_assert_ptr_nonnull(strstr(text, "]world\n"));
	ck_assert_ptr_nonnull(strstr(relayed(out), "]hello\n"));
	free(text);
	logsink_free(sink);
	fclose(out);
}
END_TEST

START_TEST(logsink_utf8_split_and_invalid)
{
	struct logsink *sink = logsink_new("[job 7]", NULL, NULL);
	size_t len;

	/* "é" split over two chunks, then an invalid byte */
	logsink_write(sink, 2, "caf\xc3", 4, 0);
	logsink_write(sink, 2, "\xa9 \xff!\n", 5, 0);
	char *text = logsink_content(sink, 2, &len);
	ck_assert_ptr_nonnull(strstr(text, "]caf\xc3\xa9 \xef\xbf\xbd!\n"));
	free(text);
	logsink_free(sink);
}
END_TEST

START_TEST(logsink_snapshot_copies_spool)
{
	struct logsink *sink = logsink_new(NULL, NULL, NULL);
	char path[] = "/tmp/mfmodal-snapshot-XXXXXX";
	char buf[256];
	int fd = mkstemp(path);
	FILE *f;
	size_t n;

	ck_assert_int_ge(fd, 0);
	close(fd);
	logsink_write(sink, 2, "one\ntwo\n", 8, 0);
	ck_assert_int_eq(logsink_snapshot(sink, 2, path), 0);
	f = fopen(path, "r");
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	unlink(path);
	ck_assert_ptr_nonnull(strstr(buf, "]one\n[MFLOG|0|"));
	ck_assert_ptr_nonnull(strstr(buf, "]two\n"));
	logsink_free(sink);
}
END_TEST

START_TEST(logsink_long_line_kept_whole)
{
	struct logsink *sink = logsink_new(NULL, NULL, NULL);
	size_t big = 3 * 1024 * 1024, len;
	char *line = malloc(big + 1);

	memset(line, 'x', big);
	line[big] = '\n';
	for (size_t off = 0; off <= big; off += 65536)
		logsink_write(sink, 1, line + off, off + 65536 <= big + 1 ? 65536 : big + 1 - off, 0);
	ck_assert_uint_eq(logsink_lines(sink, 1), 1);
	free(logsink_content(sink, 1, &len));
	ck_assert_uint_gt(len, big);
	free(line);
	logsink_free(sink);
}
END_TEST

START_TEST(logsink_batch_prefix_after_header)
{
	FILE *out = tmpfile();
	struct logsink *sink = logsink_new("[job 7]", out, NULL);
	size_t len;

	logsink_write(sink, 1, "hi\n", 3, 0);
	ck_assert_ptr_nonnull(strstr(relayed(out), "][job 7] hi\n"));
	/* the stored copy has no prefix */
	char *text = logsink_content(sink, 1, &len);
	ck_assert_ptr_nonnull(strstr(text, "]hi\n"));
	ck_assert_ptr_null(strstr(text, "[job 7]"));
	free(text);
	logsink_free(sink);
	fclose(out);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("job_parts");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, gpu_strings_accepted);
	tcase_add_test(tc, gpu_strings_rejected_with_value);
	tcase_add_test(tc, jobspec_defaults);
	tcase_add_test(tc, jobspec_task_and_name);
	tcase_add_test(tc, jobspec_long_name_hashed);
	tcase_add_test(tc, jobspec_errors_have_paths);
	tcase_add_test(tc, logsink_assembles_lines_across_chunks);
	tcase_add_test(tc, logsink_utf8_split_and_invalid);
	tcase_add_test(tc, logsink_long_line_kept_whole);
	tcase_add_test(tc, logsink_snapshot_copies_spool);
	tcase_add_test(tc, logsink_batch_prefix_after_header);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
