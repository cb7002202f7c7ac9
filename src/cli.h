#ifndef MFMODAL_CLI_H
#define MFMODAL_CLI_H

#include <event2/dns.h>
#include <event2/event.h>

#include "grpc.h"
#include "job.h"
#include "jobspec.h"
#include "modal.h"
#include "modal_config.h"
#include "aws_config.h"
#include "s3.h"

/* Exit statuses shared by the commands. */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAILURE 1
#define CLI_EXIT_USAGE 2
#define CLI_EXIT_SIGINT 130
#define CLI_EXIT_SIGTERM 143

/* Options that every command takes, set before the command name. */
struct cli_globals {
	const char *ca_file;
	double timeout;   /* seconds; 0 for the command's default */
	double keepalive; /* seconds between PINGs; 0 for the default */
	const char *jobs_file;   /* --jobs: batch mode */
	const char *results_file; /* --results; NULL for standard output */
	unsigned max_parallel;   /* --max-parallel */
	int fail_fast;           /* --fail-fast */
};

/* What a command that talks to Modal holds; cli_engine_open() prints its
 * own errors and returns an exit status (CLI_EXIT_OK on success). */
struct cli_engine {
	struct modal_config cfg;
	struct event_base *base;
	struct evdns_base *dns;
	struct grpc_client *client;
	struct aws_config aws;
	struct s3_client *s3; /* NULL unless a job needs the datastore */
};
int cli_engine_open(struct cli_engine *eng, const struct cli_globals *globals);
void cli_engine_close(struct cli_engine *eng);
/* Set up the S3 client for jobs that use the datastore.  Prints its errors
 * and returns an exit status like cli_engine_open(). */
int cli_engine_open_s3(struct cli_engine *eng, const struct cli_globals *globals);
/* Whether spec moves anything through the datastore. */
int cli_spec_needs_s3(const struct jobspec *spec);
/* Fill env with the defaults of the run and batch commands. */
void cli_job_env(struct job_env *env, const struct cli_engine *eng);
void cli_print_job_errors(const char *file, const struct jobspec_errors *errs);

int cli_ping(const struct cli_globals *globals, int argc, char **argv);
int cli_s3(const struct cli_globals *globals, int argc, char **argv);
int cli_run(const struct cli_globals *globals, int argc, char **argv);
int cli_batch(const struct cli_globals *globals);

#endif
