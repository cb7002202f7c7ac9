/* mfmodal-engine s3: put, get, head, ls, rm and uploads on the engine's S3
 * client, with progress on a terminal. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "aws_config.h"
#include "cli.h"
#include "log.h"
#include "s3.h"
#include "util.h"

/* Progress is redrawn at most this often, in seconds. */
#define PROGRESS_INTERVAL 0.25

struct s3_cli {
	const char *command;
	struct event_base *base;
	struct evdns_base *dns;
	struct s3_client *client;
	struct s3_upload *upload;
	struct s3_op *op;
	int exit_status;
	int interrupted;
	/* Progress, shown only when standard error is a terminal. */
	int show_progress;
	int progress_drawn;
	uint64_t done;
	uint64_t total;
	double started;
	struct event *progress_ev;
	struct event *sigint_ev;
	struct event *sigterm_ev;
};

static void
s3_usage(FILE *out)
{
	fprintf(out,
		"Usage: mfmodal-engine [OPTION]... s3 COMMAND [ARG]...\n"
		"Move files between this host and S3 with the engine's S3 client.\n"
		"\n"
		"Commands:\n"
		"  put [--part-size MIB] [--parallel N] [--checksum NAME]\n"
		"      FILE s3://BUCKET/KEY    upload FILE (multipart from the part\n"
		"                              size on), then check the stored size\n"
		"  get [--range bytes=A-B] s3://BUCKET/KEY FILE\n"
		"                              download an object (or a byte range)\n"
		"  head s3://BUCKET/KEY        print an object's size, ETag, date and type\n"
		"  ls s3://BUCKET[/PREFIX]     list objects: size, date, key\n"
		"  rm s3://BUCKET/KEY          delete an object\n"
		"  uploads s3://BUCKET[/PREFIX]\n"
		"                              list incomplete multipart uploads\n"
		"\n"
		"put options (environment variables in brackets):\n"
		"  --part-size MIB   part size in MiB, 5 to 5120 (default %llu);\n"
		"                    grown for files over 10,000 parts\n"
		"                    [MFMODAL_S3_PART_SIZE]\n"
		"  --parallel N      parts in flight, 1 to 256 (default %u)\n"
		"                    [MFMODAL_S3_PARALLEL]\n"
		"  --checksum NAME   checksum the server verifies per part: auto\n"
		"                    (default: sha256 over http, crc32 over https),\n"
		"                    crc32, sha256, md5 or none [MFMODAL_S3_CHECKSUM]\n"
		"\n"
		"Credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and\n"
		"AWS_SESSION_TOKEN, or AWS_PROFILE in ~/.aws/credentials and\n"
		"~/.aws/config (AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE).  Region:\n"
		"AWS_REGION, AWS_DEFAULT_REGION or the profile.  Endpoint:\n"
		"METAFLOW_S3_ENDPOINT_URL, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL.\n"
		"Retries: MFMODAL_S3_MAX_ATTEMPTS (default 10) and\n"
		"MFMODAL_S3_RETRY_BASE_DELAY (seconds, default 0.1).\n",
		(unsigned long long)(S3_DEFAULT_PART_SIZE / (1024 * 1024)),
		S3_DEFAULT_PARALLELISM);
}

static void
format_bytes(double bytes, char *out, size_t outlen)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	size_t u = 0;

	while (bytes >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		bytes /= 1024;
		u++;
	}
	snprintf(out, outlen, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
}

static void
draw_progress(struct s3_cli *cli)
{
	double elapsed = util_now() - cli->started;
	double rate = elapsed > 0 ? (double)cli->done / elapsed : 0;
	char done[32], total[32], speed[32], left[32] = "--:--";

	format_bytes((double)cli->done, done, sizeof(done));
	format_bytes((double)cli->total, total, sizeof(total));
	format_bytes(rate, speed, sizeof(speed));
	if (rate > 0 && cli->total >= cli->done) {
		long seconds = (long)((double)(cli->total - cli->done) / rate);

		snprintf(left, sizeof(left), "%ld:%02ld", seconds / 60, seconds % 60);
	}
	fprintf(stderr, "\r\033[K%s / %s  %s/s  %s left", done, total, speed, left);
	fflush(stderr);
	cli->progress_drawn = 1;
}

static void
end_progress(struct s3_cli *cli)
{
	if (cli->progress_drawn) {
		fprintf(stderr, "\r\033[K");
		fflush(stderr);
		cli->progress_drawn = 0;
	}
}

static void
progress_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	draw_progress(arg);
}

static void
record_progress(void *arg, uint64_t done, uint64_t total)
{
	struct s3_cli *cli = arg;

	cli->done = done;
	cli->total = total;
}

static void
report_failure(struct s3_cli *cli, const struct s3_error *err)
{
	end_progress(cli);
	fprintf(stderr, "mfmodal-engine: s3 %s: %s\n", cli->command, err->message);
	cli->exit_status = CLI_EXIT_FAILURE;
}

static void
report_transfer(struct s3_cli *cli, const char *verb, const char *from,
		const char *to, const struct s3_object_info *info)
{
	double elapsed = util_now() - cli->started;
	char size[32], speed[32];

	end_progress(cli);
	if (!cli->show_progress)
		return;
	format_bytes((double)info->size, size, sizeof(size));
	format_bytes(elapsed > 0 ? (double)info->size / elapsed : 0, speed,
		     sizeof(speed));
	fprintf(stderr, "%s %s to %s: %s in %.1f s (%s/s)%s\n", verb, from, to,
		size, elapsed, speed,
		info->parts > 0 ? ", multipart" : "");
}

struct transfer_ctx {
	struct s3_cli *cli;
	const char *from;
	const char *to;
};

static void
upload_done(void *arg, const struct s3_error *err,
	    const struct s3_object_info *info)
{
	struct transfer_ctx *ctx = arg;
	struct s3_cli *cli = ctx->cli;

	cli->upload = NULL;
	if (err->code != ENGINE_OK) {
		report_failure(cli, err);
	} else {
		report_transfer(cli, "uploaded", ctx->from, ctx->to, info);
		cli->exit_status = CLI_EXIT_OK;
	}
	event_base_loopbreak(cli->base);
}

static void
download_done(void *arg, const struct s3_error *err,
	      const struct s3_object_info *info)
{
	struct transfer_ctx *ctx = arg;
	struct s3_cli *cli = ctx->cli;

	cli->op = NULL;
	if (err->code != ENGINE_OK) {
		report_failure(cli, err);
	} else {
		report_transfer(cli, "downloaded", ctx->from, ctx->to, info);
		cli->exit_status = CLI_EXIT_OK;
	}
	event_base_loopbreak(cli->base);
}

static void
head_done(void *arg, const struct s3_error *err, const struct s3_object_info *info)
{
	struct s3_cli *cli = arg;

	cli->op = NULL;
	if (err->code != ENGINE_OK) {
		report_failure(cli, err);
	} else {
		printf("size: %llu\netag: %s\nlast-modified: %s\ncontent-type: %s\n",
		       (unsigned long long)info->size, info->etag,
		       info->last_modified, info->content_type);
		cli->exit_status = CLI_EXIT_OK;
	}
	event_base_loopbreak(cli->base);
}

static void
rm_done(void *arg, const struct s3_error *err, const struct s3_object_info *info)
{
	struct s3_cli *cli = arg;

	cli->op = NULL;
	if (err->code != ENGINE_OK)
		report_failure(cli, err);
	else
		cli->exit_status = CLI_EXIT_OK;
	event_base_loopbreak(cli->base);
}

static void
list_done(void *arg, const struct s3_error *err, const struct s3_list *list)
{
	struct s3_cli *cli = arg;
	int uploads = strcmp(cli->command, "uploads") == 0;

	cli->op = NULL;
	if (err->code != ENGINE_OK) {
		report_failure(cli, err);
	} else {
		for (size_t i = 0; i < list->count; i++) {
			const struct s3_list_entry *e = &list->entries[i];

			if (uploads)
				printf("%s  %s  %s\n", e->upload_id, e->date, e->key);
			else
				printf("%12llu  %s  %s\n", (unsigned long long)e->size,
				       e->date, e->key);
		}
		cli->exit_status = CLI_EXIT_OK;
	}
	event_base_loopbreak(cli->base);
}

/* SIGINT or SIGTERM: an upload is cancelled (its multipart upload aborted)
 * and reports through its callback; a download is dropped at once. */
static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct s3_cli *cli = arg;

	if (cli->interrupted++ > 0)
		return;
	end_progress(cli);
	if (cli->upload != NULL) {
		if (s3_upload_cancel(cli->upload))
			log_warn(NULL, "interrupted by signal %d: cancelling the upload",
				 (int)sig);
		else
			log_warn(NULL, "interrupted by signal %d, but the upload is "
				 "already completing or aborting; letting it finish",
				 (int)sig);
		return;
	}
	log_warn(NULL, "interrupted by signal %d; stopping", (int)sig);
	if (cli->op != NULL) {
		s3_op_cancel(cli->op);
		cli->op = NULL;
	}
	fprintf(stderr, "mfmodal-engine: s3 %s: interrupted\n", cli->command);
	cli->exit_status = CLI_EXIT_FAILURE;
	event_base_loopbreak(cli->base);
}

static int
cli_setup(struct s3_cli *cli, const struct cli_globals *globals)
{
	struct s3_client_options opts;
	struct aws_config cfg;
	char err[1024];
	int rc = CLI_EXIT_USAGE;

	s3_client_options_default(&opts);
	opts.ca_file = globals->ca_file;
	if (globals->timeout > 0)
		opts.io_timeout = globals->timeout;
	if (s3_client_options_from_env(&opts, err, sizeof(err)) != ENGINE_OK) {
		fprintf(stderr, "mfmodal-engine: %s\n", err);
		return CLI_EXIT_USAGE;
	}
	if (aws_config_load(&cfg, err, sizeof(err)) != ENGINE_OK) {
		fprintf(stderr, "mfmodal-engine: %s\n", err);
		aws_config_free(&cfg);
		return CLI_EXIT_USAGE;
	}
	log_add_secret(cfg.secret_access_key);
	log_add_secret(cfg.session_token);
	log_debug(NULL, "S3 credentials from %s; region %s (from %s)",
		  cfg.credential_source, cfg.region, cfg.region_source);

	cli->base = event_base_new();
	cli->dns = cli->base != NULL
			   ? evdns_base_new(cli->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
							       EVDNS_BASE_DISABLE_WHEN_INACTIVE)
			   : NULL;
	if (cli->base == NULL || cli->dns == NULL) {
		fprintf(stderr, "mfmodal-engine: cannot set up the event loop\n");
		rc = CLI_EXIT_FAILURE;
		goto out;
	}
	cli->client = s3_client_new(cli->base, cli->dns, &cfg, &opts, err,
				    sizeof(err));
	if (cli->client == NULL) {
		fprintf(stderr, "mfmodal-engine: %s\n", err);
		goto out;
	}
	cli->sigint_ev = evsignal_new(cli->base, SIGINT, signal_cb, cli);
	cli->sigterm_ev = evsignal_new(cli->base, SIGTERM, signal_cb, cli);
	if (cli->sigint_ev == NULL || cli->sigterm_ev == NULL ||
	    evsignal_add(cli->sigint_ev, NULL) != 0 ||
	    evsignal_add(cli->sigterm_ev, NULL) != 0) {
		fprintf(stderr, "mfmodal-engine: cannot set up signal handling\n");
		rc = CLI_EXIT_FAILURE;
		goto out;
	}
	rc = CLI_EXIT_OK;
out:
	aws_config_free(&cfg);
	return rc;
}

static void
cli_teardown(struct s3_cli *cli)
{
	if (cli->op != NULL)
		s3_op_cancel(cli->op);
	if (cli->progress_ev != NULL)
		event_free(cli->progress_ev);
	if (cli->sigint_ev != NULL)
		event_free(cli->sigint_ev);
	if (cli->sigterm_ev != NULL)
		event_free(cli->sigterm_ev);
	s3_client_free(cli->client);
	if (cli->dns != NULL)
		evdns_base_free(cli->dns, 0);
	if (cli->base != NULL)
		event_base_free(cli->base);
}

static int
start_progress(struct s3_cli *cli)
{
	struct timeval tv = {0, (suseconds_t)(PROGRESS_INTERVAL * 1e6)};

	cli->started = util_now();
	cli->show_progress = isatty(STDERR_FILENO);
	if (!cli->show_progress)
		return 0;
	cli->progress_ev = event_new(cli->base, -1, EV_PERSIST, progress_timer_cb, cli);
	if (cli->progress_ev == NULL || event_add(cli->progress_ev, &tv) != 0)
		return -1;
	return 0;
}

/* Parse a positive integer option value in [min, max]. */
static int
parse_count(const char *option, const char *text, unsigned long min,
	    unsigned long max, unsigned long *value)
{
	char *end;

	errno = 0;
	*value = strtoul(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || text[0] == '-' ||
	    *value < min || *value > max) {
		fprintf(stderr,
			"mfmodal-engine: invalid %s '%s': expected a whole number "
			"from %lu to %lu\n",
			option, text, min, max);
		return -1;
	}
	return 0;
}

static int
parse_object_uri(const char *uri, int key_required, char **bucket, char **key)
{
	if (s3_parse_uri(uri, bucket, key) != 0 ||
	    (key_required && (*key)[0] == '\0')) {
		fprintf(stderr,
			"mfmodal-engine: invalid S3 URI '%s': expected "
			"s3://BUCKET/%s\n",
			uri, key_required ? "KEY" : "[PREFIX]");
		free(*bucket);
		free(*key);
		*bucket = *key = NULL;
		return -1;
	}
	return 0;
}

int
cli_s3(const struct cli_globals *globals, int argc, char **argv)
{
	static const struct option options[] = {
		{"part-size", required_argument, NULL, 'p'},
		{"parallel", required_argument, NULL, 'n'},
		{"checksum", required_argument, NULL, 'c'},
		{"range", required_argument, NULL, 'r'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct s3_cli cli = {.exit_status = CLI_EXIT_FAILURE};
	struct s3_upload_options upload_opts;
	struct transfer_ctx transfer;
	const char *range = NULL;
	char *bucket = NULL, *key = NULL;
	char err[512];
	int opt, rc;
	unsigned long value;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		s3_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
	}
	cli.command = argv[1];
	s3_upload_options_default(&upload_opts);
	if (s3_upload_options_from_env(&upload_opts, err, sizeof(err)) != ENGINE_OK) {
		fprintf(stderr, "mfmodal-engine: %s\n", err);
		return CLI_EXIT_USAGE;
	}

	/* Options of the s3 command come after its name; argv[1] is that
	 * name, so getopt starts from argv + 1. */
	argc -= 1;
	argv += 1;
	optind = 0;
	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		switch (opt) {
		case 'p':
			if (parse_count("--part-size", optarg, 5, 5 * 1024, &value) != 0)
				return CLI_EXIT_USAGE;
			upload_opts.part_size = (uint64_t)value * 1024 * 1024;
			break;
		case 'n':
			if (parse_count("--parallel", optarg, 1, 256, &value) != 0)
				return CLI_EXIT_USAGE;
			upload_opts.parallelism = (unsigned)value;
			break;
		case 'c':
			if (s3_checksum_parse(optarg, &upload_opts.checksum) != 0) {
				fprintf(stderr,
					"mfmodal-engine: invalid --checksum '%s': "
					"expected auto, crc32, sha256, md5 or none\n",
					optarg);
				return CLI_EXIT_USAGE;
			}
			break;
		case 'r':
			range = optarg;
			break;
		case 'h':
			s3_usage(stdout);
			return CLI_EXIT_OK;
		default:
			s3_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	argc -= optind;
	argv += optind;

	if (strcmp(cli.command, "put") == 0) {
		if (argc != 2 || parse_object_uri(argv[1], 1, &bucket, &key) != 0) {
			if (argc != 2)
				fprintf(stderr, "mfmodal-engine: usage: s3 put [OPTION]... "
						"FILE s3://BUCKET/KEY\n");
			return CLI_EXIT_USAGE;
		}
	} else if (strcmp(cli.command, "get") == 0) {
		if (argc != 2 || parse_object_uri(argv[0], 1, &bucket, &key) != 0) {
			if (argc != 2)
				fprintf(stderr, "mfmodal-engine: usage: s3 get "
						"[--range bytes=A-B] s3://BUCKET/KEY FILE\n");
			return CLI_EXIT_USAGE;
		}
	} else if (strcmp(cli.command, "head") == 0 || strcmp(cli.command, "rm") == 0) {
		if (argc != 1 || parse_object_uri(argv[0], 1, &bucket, &key) != 0) {
			if (argc != 1)
				fprintf(stderr, "mfmodal-engine: usage: s3 %s "
						"s3://BUCKET/KEY\n", cli.command);
			return CLI_EXIT_USAGE;
		}
	} else if (strcmp(cli.command, "ls") == 0 || strcmp(cli.command, "uploads") == 0) {
		if (argc != 1 || parse_object_uri(argv[0], 0, &bucket, &key) != 0) {
			if (argc != 1)
				fprintf(stderr, "mfmodal-engine: usage: s3 %s "
						"s3://BUCKET[/PREFIX]\n", cli.command);
			return CLI_EXIT_USAGE;
		}
	} else {
		fprintf(stderr,
			"mfmodal-engine: unknown s3 command '%s'; see "
			"'mfmodal-engine s3 --help'\n",
			cli.command);
		return CLI_EXIT_USAGE;
	}
	if (range != NULL && strcmp(cli.command, "get") != 0) {
		fprintf(stderr, "mfmodal-engine: --range applies to s3 get only\n");
		rc = CLI_EXIT_USAGE;
		goto out;
	}

	rc = cli_setup(&cli, globals);
	if (rc != CLI_EXIT_OK)
		goto out;
	if (start_progress(&cli) != 0) {
		fprintf(stderr, "mfmodal-engine: cannot set up progress output\n");
		rc = CLI_EXIT_FAILURE;
		goto out;
	}
	transfer.cli = &cli;
	if (strcmp(cli.command, "put") == 0) {
		transfer.from = argv[0];
		transfer.to = argv[1];
		upload_opts.progress = record_progress;
		upload_opts.progress_arg = &cli;
		cli.upload = s3_upload_file(cli.client, argv[0], bucket, key,
					    &upload_opts, upload_done, &transfer);
	} else if (strcmp(cli.command, "get") == 0) {
		transfer.from = argv[0];
		transfer.to = argv[1];
		cli.op = s3_get_object(cli.client, bucket, key, argv[1], range,
				       record_progress, download_done, &transfer);
	} else if (strcmp(cli.command, "head") == 0) {
		cli.op = s3_head_object(cli.client, bucket, key, head_done, &cli);
	} else if (strcmp(cli.command, "rm") == 0) {
		cli.op = s3_delete_object(cli.client, bucket, key, rm_done, &cli);
	} else if (strcmp(cli.command, "ls") == 0) {
		cli.op = s3_list_objects(cli.client, bucket, key, list_done, &cli);
	} else {
		cli.op = s3_list_multipart_uploads(cli.client, bucket, key, list_done,
						   &cli);
	}
	if (cli.upload == NULL && cli.op == NULL) {
		fprintf(stderr, "mfmodal-engine: out of memory\n");
		rc = CLI_EXIT_FAILURE;
		goto out;
	}
	event_base_dispatch(cli.base);
	rc = cli.exit_status;
out:
	cli_teardown(&cli);
	free(bucket);
	free(key);
	return rc;
}
