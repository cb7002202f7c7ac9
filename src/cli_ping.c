/* mfmodal-engine ping: one ClientHello to check the server and credentials. */
#include "config.h"

#include <stdio.h>

#include "cli.h"
#include "log.h"

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
	struct cli_engine eng;
	struct ping_state ps = {.exit_status = CLI_EXIT_FAILURE};
	struct grpc_call_options opts = {.timeout = 10.0};
	int status;

	if (argc > 1) {
		fprintf(stderr, "mfmodal-engine: ping takes no arguments\n");
		return CLI_EXIT_USAGE;
	}
	status = cli_engine_open(&eng, globals);
	if (status != CLI_EXIT_OK) {
		cli_engine_close(&eng);
		return status;
	}
	if (globals->timeout > 0)
		opts.timeout = globals->timeout;
	ps.base = eng.base;
	ps.cfg = &eng.cfg;
	if (modal_client_hello(eng.client, &opts, ping_done, &ps) == NULL)
		fprintf(stderr, "mfmodal-engine: out of memory\n");
	else
		event_base_dispatch(eng.base);
	cli_engine_close(&eng);
	return ps.exit_status;
}
