/* grpc-driver: makes chosen Modal API calls through the engine's gRPC client
 * and prints one result line per call, for the interop tests.
 *
 *   grpc-driver [--ca-file F] [--timeout S] [--repeat N] [--parallel P]
 *               [--no-retry] [--keepalive S] [--max-connections N] CMD
 *     hello                        ClientHello
 *     app NAME [create]            AppGetOrCreate
 *     secret KEY SIZE              SecretGetOrCreate with one SIZE-byte value
 *     logs SANDBOX_ID FD [LAST_ID] SandboxGetLogs, summarized
 *
 * Settings come from the environment as for mfmodal-engine.  Output lines:
 *   OK <method> <field>=<value>...
 *   ERROR <method> <STATUS_NAME> <message>
 *   stats calls=N attempts=N retries=N throttled=N resubmitted=N
 *         connections=N goaways=N max_streams=N pings_sent=N pings_acked=N
 * Exit status 0 when every call succeeded, 1 otherwise, 2 for bad usage. */
#include "config.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/evp.h>

#include "log.h"
#include "modal.h"

struct driver {
	struct event_base *base;
	struct grpc_client *client;
	struct grpc_call_options opts;
	int argc;
	char **argv;
	unsigned remaining; /* calls not yet started */
	unsigned running;
	unsigned failed;
	char *secret_value;
};

struct logs_summary {
	struct driver *d;
	unsigned batches, items;
	size_t bytes;
	char last_entry_id[128];
	int eof;
	EVP_MD_CTX *sha;
};

static void fill(struct driver *d, unsigned parallel);
static unsigned parallel_limit;

static void
call_ended(struct driver *d)
{
	d->running--;
	fill(d, parallel_limit);
	if (d->running == 0 && d->remaining == 0)
		event_base_loopbreak(d->base);
}

static void
print_error(struct driver *d, const char *method, const struct grpc_status *st)
{
	printf("ERROR %s %s %s\n", method, grpc_code_name(st->code), st->message);
	d->failed++;
}

static void
unary_done(void *arg, const struct grpc_status *st, ProtobufCMessage *resp)
{
	struct driver *d = arg;
	const char *method = d->argv[0];

	if (st->code != GRPC_OK) {
		print_error(d, method, st);
	} else if (strcmp(method, "app") == 0) {
		printf("OK AppGetOrCreate app_id=%s\n",
		       ((Modal__Client__AppGetOrCreateResponse *)resp)->app_id);
	} else if (strcmp(method, "secret") == 0) {
		printf("OK SecretGetOrCreate secret_id=%s\n",
		       ((Modal__Client__SecretGetOrCreateResponse *)resp)->secret_id);
	} else {
		printf("OK ClientHello\n");
	}
	fflush(stdout);
	call_ended(d);
}

static void
logs_message(void *arg, ProtobufCMessage *message)
{
	struct logs_summary *s = arg;
	Modal__Client__TaskLogsBatch *batch = (Modal__Client__TaskLogsBatch *)message;

	s->batches++;
	if (batch->entry_id != NULL && *batch->entry_id != '\0')
		snprintf(s->last_entry_id, sizeof(s->last_entry_id), "%s",
			 batch->entry_id);
	if (batch->eof)
		s->eof = 1;
	for (size_t i = 0; i < batch->n_items; i++) {
		const char *data = batch->items[i]->data;
		size_t len = data != NULL ? strlen(data) : 0;

		if (len == 0)
			continue; /* empty items are sent while a process boots */
		s->items++;
		s->bytes += len;
		EVP_DigestUpdate(s->sha, data, len);
	}
}

static void
logs_done(void *arg, const struct grpc_status *st)
{
	struct logs_summary *s = arg;
	struct driver *d = s->d;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	EVP_DigestFinal_ex(s->sha, md, &mdlen);
	if (st->code != GRPC_OK) {
		print_error(d, "SandboxGetLogs", st);
		printf("PARTIAL SandboxGetLogs batches=%u items=%u bytes=%zu "
		       "last_entry_id=%s\n",
		       s->batches, s->items, s->bytes, s->last_entry_id);
	} else {
		printf("OK SandboxGetLogs batches=%u items=%u bytes=%zu "
		       "last_entry_id=%s eof=%d sha256=",
		       s->batches, s->items, s->bytes, s->last_entry_id, s->eof);
		for (unsigned i = 0; i < mdlen; i++)
			printf("%02x", md[i]);
		printf("\n");
	}
	fflush(stdout);
	EVP_MD_CTX_free(s->sha);
	free(s);
	call_ended(d);
}

static int
start_logs(struct driver *d)
{
	Modal__Client__SandboxGetLogsRequest req =
		MODAL__CLIENT__SANDBOX_GET_LOGS_REQUEST__INIT;
	struct logs_summary *s = calloc(1, sizeof(*s));

	if (s == NULL || d->argc < 3)
		return -1;
	s->d = d;
	s->sha = EVP_MD_CTX_new();
	EVP_DigestInit_ex(s->sha, EVP_sha256(), NULL);
	req.sandbox_id = d->argv[1];
	req.file_descriptor = atoi(d->argv[2]);
	req.timeout = 55;
	req.last_entry_id = d->argc > 3 ? d->argv[3] : "";
	return grpc_call_server_stream(d->client, "SandboxGetLogs", &req.base,
				       &modal__client__task_logs_batch__descriptor,
				       &d->opts, logs_message, logs_done, s) != NULL
		       ? 0
		       : -1;
}

static int
start_one(struct driver *d)
{
	const char *cmd = d->argv[0];

	if (strcmp(cmd, "hello") == 0)
		return modal_client_hello(d->client, &d->opts, unary_done, d) ? 0 : -1;
	if (strcmp(cmd, "app") == 0 && d->argc >= 2) {
		Modal__Client__AppGetOrCreateRequest req =
			MODAL__CLIENT__APP_GET_OR_CREATE_REQUEST__INIT;

		req.app_name = d->argv[1];
		if (d->argc > 2 && strcmp(d->argv[2], "create") == 0)
			req.object_creation_type =
				MODAL__CLIENT__OBJECT_CREATION_TYPE__OBJECT_CREATION_TYPE_CREATE_IF_MISSING;
		return grpc_call_unary(d->client, "AppGetOrCreate", &req.base,
				       &modal__client__app_get_or_create_response__descriptor,
				       &d->opts, unary_done, d) ? 0 : -1;
	}
	if (strcmp(cmd, "secret") == 0 && d->argc >= 3) {
		Modal__Client__SecretGetOrCreateRequest req =
			MODAL__CLIENT__SECRET_GET_OR_CREATE_REQUEST__INIT;
		Modal__Client__SecretGetOrCreateRequest__EnvDictEntry entry =
			MODAL__CLIENT__SECRET_GET_OR_CREATE_REQUEST__ENV_DICT_ENTRY__INIT;
		Modal__Client__SecretGetOrCreateRequest__EnvDictEntry *entries[1] = {&entry};
		size_t size = strtoul(d->argv[2], NULL, 10);

		if (d->secret_value == NULL) {
			d->secret_value = malloc(size + 1);
			if (d->secret_value == NULL)
				return -1;
			memset(d->secret_value, 'v', size);
			d->secret_value[size] = '\0';
		}
		entry.key = d->argv[1];
		entry.value = d->secret_value;
		req.n_env_dict = 1;
		req.env_dict = entries;
		req.object_creation_type =
			MODAL__CLIENT__OBJECT_CREATION_TYPE__OBJECT_CREATION_TYPE_EPHEMERAL;
		return grpc_call_unary(d->client, "SecretGetOrCreate", &req.base,
				       &modal__client__secret_get_or_create_response__descriptor,
				       &d->opts, unary_done, d) ? 0 : -1;
	}
	if (strcmp(cmd, "logs") == 0)
		return start_logs(d);
	return -2;
}

static unsigned parallel_limit = 1;

static void
fill(struct driver *d, unsigned parallel)
{
	while (d->remaining > 0 && d->running < parallel) {
		d->remaining--;
		d->running++;
		if (start_one(d) != 0) {
			printf("ERROR %s INTERNAL cannot start the call\n", d->argv[0]);
			d->failed++;
			d->running--;
		}
	}
}

int
main(int argc, char **argv)
{
	static const struct option options[] = {
		{"ca-file", required_argument, NULL, 'c'},
		{"timeout", required_argument, NULL, 't'},
		{"repeat", required_argument, NULL, 'r'},
		{"parallel", required_argument, NULL, 'p'},
		{"no-retry", no_argument, NULL, 'n'},
		{"keepalive", required_argument, NULL, 'k'},
		{"max-connections", required_argument, NULL, 'm'},
		{NULL, 0, NULL, 0},
	};
	struct driver d = {0};
	struct modal_config cfg;
	struct evdns_base *dns;
	struct modal_client_options copts = {0};
	unsigned repeat = 1;
	char err[1024];
	int opt;

	signal(SIGPIPE, SIG_IGN);
	if (getenv("MFMODAL_LOG_LEVEL") != NULL) {
		enum log_level level;

		if (log_parse_level(getenv("MFMODAL_LOG_LEVEL"), &level) == 0)
			log_set_level(level);
	}
	while ((opt = getopt_long(argc, argv, "+", options, NULL)) != -1) {
		switch (opt) {
		case 'c': copts.ca_file = optarg; break;
		case 't': d.opts.timeout = atof(optarg); break;
		case 'r': repeat = (unsigned)atoi(optarg); break;
		case 'p': parallel_limit = (unsigned)atoi(optarg); break;
		case 'n': d.opts.no_retry = 1; break;
		case 'k': copts.keepalive = atof(optarg); break;
		case 'm': copts.max_connections = (unsigned)atoi(optarg); break;
		default: return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "usage: grpc-driver [options] hello|app|secret|logs ...\n");
		return 2;
	}
	d.argc = argc - optind;
	d.argv = argv + optind;
	d.remaining = repeat;
	if (modal_config_load(&cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "grpc-driver: %s\n", err);
		modal_config_free(&cfg);
		return 2;
	}
	d.base = event_base_new();
	dns = evdns_base_new(d.base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
					     EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	d.client = modal_client_new(d.base, dns, &cfg, &copts, err, sizeof(err));
	if (d.client == NULL) {
		fprintf(stderr, "grpc-driver: %s\n", err);
		return 2;
	}
	fill(&d, parallel_limit);
	if (d.running > 0)
		event_base_dispatch(d.base);

	struct grpc_client_stats gs;
	struct h2channel_stats hs;

	grpc_client_get_stats(d.client, &gs);
	h2channel_get_stats(grpc_client_channel(d.client), &hs);
	printf("stats calls=%u attempts=%u retries=%u throttled=%u "
	       "resubmitted=%u connections=%u goaways=%u max_streams=%u "
	       "pings_sent=%u pings_acked=%u\n",
	       gs.calls, gs.attempts, gs.retries, gs.throttled, gs.resubmitted,
	       hs.connections_opened, hs.goaways_received, hs.max_active_streams,
	       hs.pings_sent, hs.pings_acked);
	grpc_client_free(d.client);
	evdns_base_free(dns, 0);
	event_base_free(d.base);
	modal_config_free(&cfg);
	free(d.secret_value);
	log_free_secrets();
	return d.failed > 0 ? 1 : 0;
}
