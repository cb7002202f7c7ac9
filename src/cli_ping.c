/* mfmodal-engine ping: one ClientHello to check the server and credentials. */
#include "config.h"

#include <stdio.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "cli.h"
#include "log.h"
#include "modal.h"

struct ping_state {
	struct event_base *base;
	const struct modal_config *cfg;
	int exit_status;
};

static void
ping_done(void *arg, const struct grpc_status *st, ProtobufCMessage *response)
{
	struct ping_state *ps = arg;
	Modal__Client__ClientHelloResponse *hello =
		(Modal__Client__ClientHelloResponse *)response;

	if (st->code == GRPC_OK) {
		printf("ok: %s accepted the credentials from %s\n",
		       ps->cfg->server_url, ps->cfg->token_source);
		if (hello != NULL && hello->warning != NULL && *hello->warning)
			printf("server warning: %s\n", hello->warning);
		ps->exit_status = CLI_EXIT_OK;
	} else {
		fprintf(stderr,
			"mfmodal-engine: ping to %s failed: %s: %s (credentials "
			"from %s)\n",
			ps->cfg->server_url, grpc_code_name(st->code),
			st->message, ps->cfg->token_source);
		ps->exit_status = CLI_EXIT_FAILURE;
	}
	event_base_loopbreak(ps->base);
}

int
cli_ping(const struct cli_globals *globals, int argc, char **argv)
{
	struct modal_config cfg;
	struct ping_state ps = {.exit_status = CLI_EXIT_FAILURE};
	struct grpc_call_options opts = {.timeout = 10.0};
	struct event_base *base = NULL;
	struct evdns_base *dns = NULL;
	struct grpc_client *client = NULL;
	char err[1024];

	if (argc > 1) {
		fprintf(stderr, "mfmodal-engine: ping takes no arguments\n");
		return CLI_EXIT_USAGE;
	}
	if (modal_config_load(&cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "mfmodal-engine: %s\n", err);
		modal_config_free(&cfg);
		return CLI_EXIT_USAGE;
	}
	log_add_secret(cfg.token_secret);
	if (globals->timeout > 0)
		opts.timeout = globals->timeout;

	base = event_base_new();
	dns = base != NULL ? evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
						      EVDNS_BASE_DISABLE_WHEN_INACTIVE)
			   : NULL;
	if (base == NULL || dns == NULL) {
		fprintf(stderr, "mfmodal-engine: cannot set up the event loop\n");
		goto out;
	}
	struct modal_client_options copts = {
		.ca_file = globals->ca_file,
		.keepalive = globals->keepalive,
	};

	client = modal_client_new(base, dns, &cfg, &copts, err, sizeof(err));
	if (client == NULL) {
		fprintf(stderr, "mfmodal-engine: %s\n", err);
		ps.exit_status = CLI_EXIT_USAGE;
		goto out;
	}
	ps.base = base;
	ps.cfg = &cfg;
	if (modal_client_hello(client, &opts, ping_done, &ps) == NULL) {
		fprintf(stderr, "mfmodal-engine: out of memory\n");
		goto out;
	}
	event_base_dispatch(base);
out:
	grpc_client_free(client);
	if (dns != NULL)
		evdns_base_free(dns, 0);
	if (base != NULL)
		event_base_free(base);
	modal_config_free(&cfg);
	return ps.exit_status;
}
