#ifndef MFMODAL_MODAL_H
#define MFMODAL_MODAL_H

/* Modal's API on top of the gRPC client: method names, response types and
 * the settings each call needs. */

#include <event2/dns.h>
#include <event2/event.h>

#include "grpc.h"
#include "modal_api.pb-c.h"
#include "modal_config.h"

/* Transport settings from the command line; zero values take the defaults. */
struct modal_client_options {
	const char *ca_file;   /* --ca-file, or NULL */
	double keepalive;      /* seconds between PINGs while calls are open */
	unsigned max_connections; /* connections to the server at most */
};

/* Create a gRPC client for the server and credentials in cfg.  Returns NULL
 * with a message in err. */
struct grpc_client *modal_client_new(struct event_base *base,
				     struct evdns_base *dns,
				     const struct modal_config *cfg,
				     const struct modal_client_options *opts,
				     char *err, size_t errlen);

/* ClientHello: the call Modal's "modal token set" makes to check credentials. */
struct grpc_call *modal_client_hello(struct grpc_client *client,
				     const struct grpc_call_options *opts,
				     grpc_unary_cb cb, void *arg);

#endif
