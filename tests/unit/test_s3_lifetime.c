/* Lifetimes in the S3 client's API: cancelled operations, detached uploads
 * and a client freed with work in flight call no callback and leave nothing
 * behind (run under the sanitizer build to check for leaks).  The endpoint
 * is a loopback listener that accepts connections and never responds. */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "aws_config.h"
#include "s3.h"

struct fixture {
	int listener;
	char endpoint[64];
	char dir[64];
	struct event_base *base;
	struct evdns_base *dns;
	struct s3_client *client;
	int callbacks;
};

static void
count_object_cb(void *arg, const struct s3_error *err,
		const struct s3_object_info *info)
{
	struct fixture *f = arg;

	f->callbacks++;
}

static void
fixture_start(struct fixture *f)
{
	struct sockaddr_in addr = {.sin_family = AF_INET};
	socklen_t len = sizeof(addr);
	struct aws_config cfg = {0};
	struct s3_client_options opts;
	char err[512];

	memset(f, 0, sizeof(*f));
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	f->listener = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(f->listener, 0);
	ck_assert_int_eq(bind(f->listener, (struct sockaddr *)&addr, sizeof(addr)), 0);
	ck_assert_int_eq(listen(f->listener, 64), 0);
	ck_assert_int_eq(getsockname(f->listener, (struct sockaddr *)&addr, &len), 0);
	snprintf(f->endpoint, sizeof(f->endpoint), "http://127.0.0.1:%u",
		 ntohs(addr.sin_port));
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_s3_lifetime.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(f->dir));

	cfg.access_key_id = "AKIDLIFETIME";
	cfg.secret_access_key = "lifetime-secret";
	cfg.endpoint_url = f->endpoint;
	snprintf(cfg.endpoint_source, sizeof(cfg.endpoint_source), "the test");
	snprintf(cfg.region, sizeof(cfg.region), "us-east-1");
	s3_client_options_default(&opts);
	f->base = event_base_new();
	f->dns = evdns_base_new(f->base, 0);
	f->client = s3_client_new(f->base, f->dns, &cfg, &opts, err, sizeof(err));
	ck_assert_msg(f->client != NULL, "%s", err);
}

/* Run the loop for about seconds, so requests reach the listener. */
static void
run_loop(struct fixture *f, double seconds)
{
	struct timeval tv = {(time_t)seconds,
			     (suseconds_t)((seconds - (int)seconds) * 1e6)};

	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
}

static void
fixture_stop(struct fixture *f)
{
	char path[512];
	DIR *dir;
	struct dirent *entry;

	s3_client_free(f->client);
	run_loop(f, 0.05);
	evdns_base_free(f->dns, 0);
	event_base_free(f->base);
	close(f->listener);
	dir = opendir(f->dir);
	while (dir != NULL && (entry = readdir(dir)) != NULL) {
		if (entry->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", f->dir, entry->d_name);
		unlink(path);
	}
	if (dir != NULL)
		closedir(dir);
	rmdir(f->dir);
}

static int
count_files(const char *path)
{
	DIR *dir = opendir(path);
	struct dirent *entry;
	int n = 0;

	while (dir != NULL && (entry = readdir(dir)) != NULL)
		if (entry->d_name[0] != '.')
			n++;
	if (dir != NULL)
		closedir(dir);
	return n;
}

static void
write_file(const char *path, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
	close(fd);
}

START_TEST(test_client_free_with_requests_in_flight)
{
	struct fixture f;
	struct s3_op *op;

	fixture_start(&f);
	op = s3_head_object(f.client, "bucket", "key", count_object_cb, &f);
	ck_assert_ptr_nonnull(op);
	run_loop(&f, 0.2);
	ck_assert_int_eq(f.callbacks, 0);
	fixture_stop(&f);
	ck_assert_int_eq(f.callbacks, 0);
}
END_TEST

START_TEST(test_cancelled_get_removes_temporary_file)
{
	struct fixture f;
	struct s3_op *op;
	char path[128];

	fixture_start(&f);
	snprintf(path, sizeof(path), "%s/out.bin", f.dir);
	op = s3_get_object(f.client, "bucket", "key", path, NULL, NULL,
			   count_object_cb, &f);
	ck_assert_ptr_nonnull(op);
	run_loop(&f, 0.2);
	ck_assert_int_eq(count_files(f.dir), 1); /* the temporary file */
	s3_op_cancel(op);
	ck_assert_int_eq(count_files(f.dir), 0);
	run_loop(&f, 0.1);
	ck_assert_int_eq(f.callbacks, 0);
	fixture_stop(&f);
}
END_TEST

START_TEST(test_detached_upload_calls_nothing)
{
	struct fixture f;
	struct s3_upload_options opts;
	struct s3_upload *up;
	char path[128];

	fixture_start(&f);
	snprintf(path, sizeof(path), "%s/src.bin", f.dir);
	write_file(path, 12 * 1024 * 1024);
	s3_upload_options_default(&opts);
	opts.part_size = 5 * 1024 * 1024;
	up = s3_upload_file(f.client, path, "bucket", "key", &opts, count_object_cb, &f);
	ck_assert_ptr_nonnull(up);
	run_loop(&f, 0.2); /* CreateMultipartUpload waits for a response */
	s3_upload_detach(up);
	run_loop(&f, 0.2);
	ck_assert_int_eq(f.callbacks, 0);
	fixture_stop(&f);
	ck_assert_int_eq(f.callbacks, 0);
}
END_TEST

START_TEST(test_detached_failed_upload_frees_itself)
{
	struct fixture f;
	struct s3_upload_options opts;
	struct s3_upload *up;
	char path[128];

	fixture_start(&f);
	snprintf(path, sizeof(path), "%s/missing.bin", f.dir);
	s3_upload_options_default(&opts);
	/* The open fails at once; the callback would come on the next turn. */
	up = s3_upload_file(f.client, path, "bucket", "key", &opts, count_object_cb, &f);
	ck_assert_ptr_nonnull(up);
	s3_upload_detach(up);
	run_loop(&f, 0.1);
	ck_assert_int_eq(f.callbacks, 0);
	fixture_stop(&f);
}
END_TEST

START_TEST(test_cancelled_upload_reports_once)
{
	struct fixture f;
	struct s3_upload_options opts;
	struct s3_upload *up;
	char path[128];

	fixture_start(&f);
	snprintf(path, sizeof(path), "%s/small.bin", f.dir);
	write_file(path, 1000);
	s3_upload_options_default(&opts);
	up = s3_upload_file(f.client, path, "bucket", "key", &opts, count_object_cb, &f);
	ck_assert_ptr_nonnull(up);
	run_loop(&f, 0.2); /* the PutObject waits for a response */
	ck_assert_int_eq(s3_upload_cancel(up), 1);
	run_loop(&f, 0.1);
	ck_assert_int_eq(f.callbacks, 1);
	fixture_stop(&f);
	ck_assert_int_eq(f.callbacks, 1);
}
END_TEST

static Suite *
lifetime_suite(void)
{
	Suite *s = suite_create("s3_lifetime");
	TCase *tc = tcase_create("lifetime");

	tcase_add_test(tc, test_client_free_with_requests_in_flight);
	tcase_add_test(tc, test_cancelled_get_removes_temporary_file);
	tcase_add_test(tc, test_detached_upload_calls_nothing);
	tcase_add_test(tc, test_detached_failed_upload_frees_itself);
	tcase_add_test(tc, test_cancelled_upload_reports_once);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *runner = srunner_create(lifetime_suite());
	int failed;

	srunner_run_all(runner, CK_NORMAL);
	failed = srunner_ntests_failed(runner);
	srunner_free(runner);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
