/* Set-up shared by the commands that talk to Modal: configuration, the event
 * loop, DNS and the gRPC client. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "log.h"

int
cli_engine_open(struct cli_engine *eng, const struct cli_globals *globals)
{
	char err[1024];
	struct modal_client_options copts = {
		.ca_file = globals->ca_file,
		.keepalive = globals->keepalive,
	};

	memset(eng, 0, sizeof(*eng));
	if (modal_config_load(&eng->cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "mfmodal-engine: %s\n", err);
		return CLI_EXIT_USAGE;
	}
	log_add_secret(eng->cfg.token_secret);
	eng->base = event_base_new();
	if (eng->base != NULL)
		eng->dns = evdns_base_new(eng->base,
					  EVDNS_BASE_INITIALIZE_NAMESERVERS |
						  EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (eng->dns == NULL) {
		fprintf(stderr, "mfmodal-engine: cannot set up the event loop\n");
		return CLI_EXIT_FAILURE;
	}
	eng->client = modal_client_new(eng->base, eng->dns, &eng->cfg, &copts,
				       err, sizeof(err));
	if (eng->client == NULL) {
		fprintf(stderr, "mfmodal-engine: %s\n", err);
		return CLI_EXIT_USAGE;
	}
	return CLI_EXIT_OK;
}

int
cli_spec_needs_s3(const struct jobspec *spec)
{
	return spec->package_url != NULL || spec->logs_url != NULL ||
	       spec->metadata_url != NULL;
}

int
cli_engine_open_s3(struct cli_engine *eng, const struct cli_globals *globals)
{
	struct s3_client_options opts;
	char err[1024];

	if (aws_config_load(&eng->aws, err, sizeof(err)) != 0) {
		fprintf(stderr, "mfmodal-engine: the job uses an S3 datastore: %s\n",
			err);
		return CLI_EXIT_USAGE;
	}
	s3_client_options_default(&opts);
	opts.ca_file = globals->ca_file;
	if (s3_client_options_from_env(&opts, err, sizeof(err)) != 0) {
		fprintf(stderr, "mfmodal-engine: %s\n", err);
		return CLI_EXIT_USAGE;
	}
	eng->s3 = s3_client_new(eng->base, eng->dns, &eng->aws, &opts, err,
				sizeof(err));
	if (eng->s3 == NULL) {
		fprintf(stderr, "mfmodal-engine: %s\n", err);
		return CLI_EXIT_USAGE;
	}
	return CLI_EXIT_OK;
}

void
cli_engine_close(struct cli_engine *eng)
{
	s3_client_free(eng->s3);
	aws_config_free(&eng->aws);
	grpc_client_free(eng->client);
	if (eng->dns != NULL)
		evdns_base_free(eng->dns, 0);
	if (eng->base != NULL)
		event_base_free(eng->base);
	modal_config_free(&eng->cfg);
	memset(eng, 0, sizeof(*eng));
}

void
cli_job_env(struct job_env *env, const struct cli_engine *eng)
{
	const char *poll = getenv("MFMODAL_LOG_POLL");

	memset(env, 0, sizeof(*env));
	env->base = eng->base;
	env->client = eng->client;
	env->s3 = eng->s3;
	env->environment = eng->cfg.environment;
	env->relay_out = stdout;
	env->relay_err = stderr;
	env->drain_grace = 10.0;
	/* Metaflow's runtime sends SIGKILL 5 s after SIGINT. */
	env->terminate_bound = 4.0;
	env->log_poll = poll != NULL && atof(poll) > 0 ? atof(poll) : 55.0;
}

void
cli_print_job_errors(const char *file, const struct jobspec_errors *errs)
{
	fprintf(stderr, "mfmodal-engine: invalid job description%s %s:\n",
		errs->n > 1 ? "s in" : " in",
		strcmp(file, "-") == 0 ? "standard input" : file);
	for (size_t i = 0; i < errs->n; i++)
		fprintf(stderr, "  %s\n", errs->items[i]);
}
