/* Unit tests of gzip and tar extraction, including hostile archives. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "tarx.h"

static uint8_t archive[64 * 1024];
static size_t archive_len;
static char root[] = "/tmp/mfmodal-tarx-XXXXXX";

/* Append one ustar entry. */
static void
add_entry(const char *name, char type, const char *linkname, const char *data)
{
	uint8_t *h = archive + archive_len;
	size_t size = data != NULL ? strlen(data) : 0;
	unsigned long sum = 0;

	memset(h, 0, 512);
	snprintf((char *)h, 100, "%s", name);
	snprintf((char *)h + 100, 8, "%07o", 0644);
	snprintf((char *)h + 124, 12, "%011o", (unsigned)size);
	h[156] = (uint8_t)type;
	if (linkname != NULL)
		snprintf((char *)h + 157, 100, "%s", linkname);
	memcpy(h + 257, "ustar\0" "00", 8);
	memset(h + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06lo", sum);
	archive_len += 512;
	if (size > 0) {
		memcpy(archive + archive_len, data, size);
		archive_len += (size + 511) / 512 * 512;
	}
}

static void
setup(void)
{
	archive_len = 0;
	memset(archive, 0, sizeof(archive));
	strcpy(root, "/tmp/mfmodal-tarx-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(root));
}

static void
teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	ck_assert_int_eq(system(cmd), 0);
}

static long
extract(char *err, size_t errlen)
{
	archive_len += 1024; /* end-of-archive blocks */
	return tarx_extract(archive, archive_len, root, ".metaflow/", err, errlen);
}

static char *
read_back(const char *rel)
{
	static char buf[256];
	char path[512];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	f = fopen(path, "r");
	if (f == NULL)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

START_TEST(extracts_under_prefix)
{
	char err[512];

	add_entry(".metaflow/", '5', NULL, NULL);
	add_entry(".metaflow/Flow/1/start/1/_meta/0_attempt_done.json", '0', NULL, "{\"a\": 1}");
	add_entry("./.metaflow/Flow/1/_meta/run.json", '0', NULL, "run");
	add_entry("elsewhere.txt", '0', NULL, "skipped");
	ck_assert_int_eq(extract(err, sizeof(err)), 2);
	ck_assert_str_eq(read_back("Flow/1/start/1/_meta/0_attempt_done.json"), "{\"a\": 1}");
	ck_assert_str_eq(read_back("Flow/1/_meta/run.json"), "run");
	ck_assert_ptr_null(read_back("elsewhere.txt"));
}
END_TEST

START_TEST(rejects_parent_components)
{
	char err[512];

	add_entry(".metaflow/../../evil", '0', NULL, "x");
	ck_assert_int_eq(extract(err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "unsafe tar entry \".metaflow/../../evil\""));
}
END_TEST

START_TEST(rejects_absolute_names)
{
	char err[512];

	add_entry("/etc/evil", '0', NULL, "x");
	ck_assert_int_eq(extract(err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "absolute or with '..'"));
}
END_TEST

START_TEST(rejects_links_leaving_target)
{
	char err[512];

	add_entry(".metaflow/link", '2', "../../../etc", NULL);
	ck_assert_int_eq(extract(err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "leaves the target directory"));

	archive_len = 0;
	memset(archive, 0, sizeof(archive));
	add_entry(".metaflow/abs", '2', "/etc/passwd", NULL);
	ck_assert_int_eq(extract(err, sizeof(err)), -1);
}
END_TEST

START_TEST(refuses_writing_through_symlink)
{
	char err[512];

	/* a link inside the target, then a file "through" it */
	add_entry(".metaflow/dir", '2', ".", NULL);
	add_entry(".metaflow/dir/file", '0', NULL, "x");
	ck_assert_int_eq(extract(err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "symbolic link"));
}
END_TEST

START_TEST(rejects_bad_checksum)
{
	char err[512];

	add_entry(".metaflow/x", '0', NULL, "x");
	archive[148] = '9';
	ck_assert_int_eq(extract(err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "invalid tar header"));
}
END_TEST

START_TEST(gunzip_two_layers_and_limit)
{
	const char *text = "hello hello hello hello";
	uint8_t gz[256], gz2[512], *out, *out2;
	size_t outlen, outlen2;
	z_stream zs;
	char err[256];

	/* gzip(text), then gzip again, as Metaflow's content-addressed store
	 * packs an already compressed tarball */
	for (int layer = 0; layer < 2; layer++) {
		memset(&zs, 0, sizeof(zs));
		ck_assert_int_eq(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8,
					      Z_DEFAULT_STRATEGY), Z_OK);
		zs.next_in = layer == 0 ? (Bytef *)text : gz;
		zs.avail_in = layer == 0 ? (uInt)strlen(text) : (uInt)(sizeof(gz) - zs.avail_out);
		if (layer == 1)
			zs.avail_in = (uInt)outlen;
		zs.next_out = layer == 0 ? gz : gz2;
		zs.avail_out = layer == 0 ? sizeof(gz) : sizeof(gz2);
		ck_assert_int_eq(deflate(&zs, Z_FINISH), Z_STREAM_END);
		outlen = (layer == 0 ? sizeof(gz) : sizeof(gz2)) - zs.avail_out;
		deflateEnd(&zs);
	}
	ck_assert_int_eq(tarx_gunzip(gz2, outlen, 1 << 20, &out, &outlen2, err, sizeof(err)), 0);
	ck_assert_int_eq(tarx_gunzip(out, outlen2, 1 << 20, &out2, &outlen, err, sizeof(err)), 0);
	ck_assert_uint_eq(outlen, strlen(text));
	ck_assert_mem_eq(out2, text, outlen);
	free(out2);

	ck_assert_int_eq(tarx_gunzip(out, outlen2, 4, &out2, &outlen, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "expands past 4 bytes"));
	ck_assert_int_eq(tarx_gunzip(out, outlen2 / 2, 1 << 20, &out2, &outlen, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "invalid gzip data"));
	free(out);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("tarx");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, extracts_under_prefix);
	tcase_add_test(tc, rejects_parent_components);
	tcase_add_test(tc, rejects_absolute_names);
	tcase_add_test(tc, rejects_links_leaving_target);
	tcase_add_test(tc, refuses_writing_through_symlink);
	tcase_add_test(tc, rejects_bad_checksum);
	tcase_add_test(tc, gunzip_two_layers_and_limit);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
