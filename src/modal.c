#include "config.h"

#include <stdlib.h>

#include "google/protobuf/empty.pb-c.h"
#include "modal.h"
#include "tls.h"

struct grpc_client *
modal_client_new(struct event_base *base, struct evdns_base *dns,
		 const struct modal_config *cfg,
		 const struct modal_client_options *opts, char *err,
		 size_t errlen)
{
	struct grpc_client_config gc;
	const char *throttle = getenv("MODAL_MAX_THROTTLE_WAIT");

	grpc_client_config_default(&gc);
	gc.server_url = cfg->server_url;
	gc.token_id = cfg->token_id;
	gc.token_secret = cfg->token_secret;
	gc.client_type = cfg->client_type;
	gc.client_version = cfg->client_version;
	gc.ca_file = tls_ca_file(opts->ca_file);
	if (opts->keepalive > 0)
		gc.h2.ping_interval = opts->keepalive;
	if (opts->max_connections > 0)
		gc.h2.max_connections = opts->max_connections;
	if (throttle != NULL && *throttle != '\0')
		gc.retry.max_throttle_wait = atof(throttle);
	return grpc_client_new(base, dns, &gc, err, errlen);
}

struct grpc_call *
modal_client_hello(struct grpc_client *client,
		   const struct grpc_call_options *opts, grpc_unary_cb cb,
		   void *arg)
{
	Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;

	return grpc_call_unary(client, "ClientHello", &req.base,
			       &modal__client__client_hello_response__descriptor,
			       opts, cb, arg);
}
