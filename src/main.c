/* mfmodal-engine: runs Metaflow tasks in Modal sandboxes. */
#include "config.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "log.h"

static void
usage(FILE *out)
{
	fprintf(out,
		"Usage: mfmodal-engine [OPTION]... COMMAND [ARG]...\n"
		"   or: mfmodal-engine --jobs FILE [--max-parallel N] [--results FILE]\n"
		"                      [--fail-fast] [OPTION]...\n"
		"Run Metaflow tasks in Modal sandboxes over Modal's gRPC API.\n"
		"\n"
		"Commands:\n"
		"  run --job FILE       run one task attempt in a sandbox; FILE is a\n"
		"                       job description (JSON), '-' for standard input\n"
		"  ping                 make one ClientHello call and report whether\n"
		"                       the server accepts the credentials\n"
		"  s3 put|get|head|ls|rm|uploads ...\n"
		"                       move files to and from S3 with the engine's\n"
		"                       S3 client; see 'mfmodal-engine s3 --help'\n"
		"\n"
		"Batch mode (--jobs): run every job of FILE, a JSON list of job\n"
		"descriptions (or {\"jobs\": [...]}), in one process:\n"
		"  --jobs FILE          the jobs to run; '-' for standard input\n"
		"  --max-parallel N     jobs in flight at once (default: 64)\n"
		"  --results FILE       one JSON line per finished job (default:\n"
		"                       standard output)\n"
		"  --fail-fast          cancel every other job after the first failure\n"
		"\n"
		"Options:\n"
		"  --ca-file FILE       trust the CA certificates in FILE (PEM) instead of\n"
		"                       the system store; also MFMODAL_CA_FILE\n"
		"  --keepalive SECONDS  interval of HTTP/2 PINGs while calls are open,\n"
		"                       in seconds (default: 60)\n"
		"  --log-level LEVEL    error, warn, info or debug (default: info);\n"
		"                       also MFMODAL_LOG_LEVEL\n"
		"  --timeout SECONDS    deadline of each call attempt, in seconds\n"
		"                       (ping: 10)\n"
		"  -h, --help           show this help and exit\n"
		"  -V, --version        show the version and exit\n"
		"\n"
		"Environment: MODAL_TOKEN_ID, MODAL_TOKEN_SECRET, MODAL_PROFILE,\n"
		"MODAL_CONFIG_PATH (default ~/.modal.toml), MODAL_SERVER_URL (default\n"
		"https://api.modal.com), MODAL_ENVIRONMENT, MODAL_MAX_THROTTLE_WAIT\n"
		"(seconds), MFMODAL_CLIENT_TYPE and MFMODAL_CLIENT_VERSION.\n"
		"\n"
		"Exit status: run exits with the task's own status, or 1 without a\n"
		"task result, 2 for an invalid job or usage, 124 for a timeout, 137\n"
		"when the platform terminated the sandbox, 202 when the server\n"
		"rejected the request and no retry can help, 130 or 143 after SIGINT\n"
		"or SIGTERM.  Batch mode exits 0 when every job exited 0, else 1.\n");
}

static int
parse_seconds(const char *option, const char *text, double *seconds)
{
	char *end;

	*seconds = strtod(text, &end);
	if (end == text || *end != '\0' || !(*seconds > 0)) {
		fprintf(stderr,
			"mfmodal-engine: invalid %s '%s': expected a positive "
			"number of seconds\n",
			option, text);
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option options[] = {
		{"ca-file", required_argument, NULL, 'c'},
		{"keepalive", required_argument, NULL, 'k'},
		{"jobs", required_argument, NULL, 'J'},
		{"results", required_argument, NULL, 'R'},
		{"max-parallel", required_argument, NULL, 'P'},
		{"fail-fast", no_argument, NULL, 'F'},
		{"log-level", required_argument, NULL, 'l'},
		{"timeout", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	struct cli_globals globals = {0};
	const char *level_name = getenv("MFMODAL_LOG_LEVEL");
	enum log_level level;
	int opt, rc;

	signal(SIGPIPE, SIG_IGN);
	while ((opt = getopt_long(argc, argv, "+hV", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			globals.ca_file = optarg;
			break;
		case 'l':
			level_name = optarg;
			break;
		case 't':
			if (parse_seconds("--timeout", optarg, &globals.timeout) != 0)
				return CLI_EXIT_USAGE;
			break;
		case 'k':
			if (parse_seconds("--keepalive", optarg, &globals.keepalive) != 0)
				return CLI_EXIT_USAGE;
			break;
		case 'J':
			globals.jobs_file = optarg;
			break;
		case 'R':
			globals.results_file = optarg;
			break;
		case 'P': {
			char *end;
			long n = strtol(optarg, &end, 10);

			if (*end != '\0' || n < 1 || n > 100000) {
				fprintf(stderr,
					"mfmodal-engine: invalid --max-parallel "
					"'%s': expected a whole number from 1 to "
					"100000\n",
					optarg);
				return CLI_EXIT_USAGE;
			}
			globals.max_parallel = (unsigned)n;
			break;
		}
		case 'F':
			globals.fail_fast = 1;
			break;
		case 'h':
			usage(stdout);
			return CLI_EXIT_OK;
		case 'V':
			printf("mfmodal-engine %s\n", PACKAGE_VERSION);
			return CLI_EXIT_OK;
		default:
			usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (level_name != NULL && *level_name != '\0') {
		if (log_parse_level(level_name, &level) != 0) {
			fprintf(stderr,
				"mfmodal-engine: invalid log level '%s': expected "
				"error, warn, info or debug\n",
				level_name);
			return CLI_EXIT_USAGE;
		}
		log_set_level(level);
	}
	if (globals.jobs_file != NULL) {
		if (optind < argc) {
			fprintf(stderr, "mfmodal-engine: --jobs takes no command; "
					"remove '%s'\n",
				argv[optind]);
			return CLI_EXIT_USAGE;
		}
		rc = cli_batch(&globals);
		log_free_secrets();
		return rc;
	}
	if (globals.results_file != NULL || globals.max_parallel > 0 ||
	    globals.fail_fast) {
		fprintf(stderr, "mfmodal-engine: --results, --max-parallel and "
				"--fail-fast need --jobs FILE\n");
		return CLI_EXIT_USAGE;
	}
	if (optind >= argc) {
		usage(stderr);
		return CLI_EXIT_USAGE;
	}

	const char *command = argv[optind];
	if (strcmp(command, "ping") == 0) {
		rc = cli_ping(&globals, argc - optind, argv + optind);
	} else if (strcmp(command, "s3") == 0) {
		rc = cli_s3(&globals, argc - optind, argv + optind);
	} else if (strcmp(command, "run") == 0) {
		rc = cli_run(&globals, argc - optind, argv + optind);
	} else {
		fprintf(stderr,
			"mfmodal-engine: unknown command '%s'; see "
			"'mfmodal-engine --help'\n",
			command);
		rc = CLI_EXIT_USAGE;
	}
	log_free_secrets();
	return rc;
}
