#ifndef MFMODAL_MODAL_CONFIG_H
#define MFMODAL_MODAL_CONFIG_H

#include <stddef.h>

#define MODAL_DEFAULT_SERVER_URL "https://api.modal.com"

/* What the engine announces in x-modal-client-type and x-modal-client-version.
 * The engine implements the V1 sandbox flow of Modal's Python SDK and is
 * checked against that SDK's descriptors, so it presents itself as that
 * client (ClientType CLIENT = 1) at the SDK version it was tested with.  The
 * libmodal types (7 to 9) would oblige it to fetch and send the JWT from
 * AuthTokenGet, which this flow does not use. */
#define MODAL_CLIENT_TYPE_DEFAULT "1"
#define MODAL_CLIENT_VERSION_DEFAULT "1.6.4"

/* Modal settings as Modal's clients resolve them: an environment variable
 * first, then the active profile of the TOML file, then the default. */
struct modal_config {
	char *token_id;
	char *token_secret;
	char *server_url;
	char *environment; /* "" selects the server's default environment */
	char *client_type;
	char *client_version;
	/* Where the token came from, for messages: "MODAL_TOKEN_ID and
	 * MODAL_TOKEN_SECRET" or "profile 'x' in /path". */
	char *token_source;
	char *profile; /* the profile name used, or NULL without a file */
};

/* Fill cfg from the environment and the config file.  Returns 0 or
 * ENGINE_ERR_CONFIG with a message in err that names the setting and how to
 * fix it.  The caller frees cfg with modal_config_free() in both cases. */
int modal_config_load(struct modal_config *cfg, char *err, size_t errlen);
void modal_config_free(struct modal_config *cfg);

/* The path of the TOML file: MODAL_CONFIG_PATH, else ~/.modal.toml.  Returns a
 * malloc'd string or NULL when HOME is unset. */
char *modal_config_path(void);

/* One profile read from the TOML file. */
struct toml_profile {
	char *name;
	int active;
	char *token_id;
	char *token_secret;
	char *server_url;
	char *environment;
};

/* Parse the subset of TOML that Modal's config file uses: [tables] with
 * key = "string" and key = true|false, and comments.  Returns the number of
 * profiles stored in *profiles (freed with toml_profiles_free), 0 for a
 * missing file, or -1 with a message in err naming the file and line. */
int toml_profiles_read(const char *path, struct toml_profile **profiles,
		       char *err, size_t errlen);
void toml_profiles_free(struct toml_profile *profiles, int n);

/* Choose the profile as Modal's Python client does: MODAL_PROFILE (given as
 * requested, or NULL), else the one marked active, else "default".  Returns
 * the index, -1 when the chosen name has no table, or -2 with a message in err
 * for more than one active profile or several profiles and none active. */
int toml_profile_select(const struct toml_profile *profiles, int n,
			const char *requested, const char *path, char *err,
			size_t errlen);

#endif
