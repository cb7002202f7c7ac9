/* Modal credentials and settings: environment variables and ~/.modal.toml. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modal_config.h"
#include "util.h"

static char *
trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

/* Parse a TOML basic ("...") or literal ('...') string at s.  Returns a
 * malloc'd copy or NULL; *end points after the closing quote. */
static char *
parse_string(const char *s, const char **end)
{
	char quote = *s++;
	char *out = malloc(strlen(s) + 1);
	size_t o = 0;

	if (out == NULL)
		return NULL;
	for (; *s != '\0' && *s != quote; s++) {
		if (quote == '"' && *s == '\\' && s[1] != '\0') {
			s++;
			switch (*s) {
			case 'n': out[o++] = '\n'; break;
			case 't': out[o++] = '\t'; break;
			default: out[o++] = *s; break;
			}
		} else {
			out[o++] = *s;
		}
	}
	if (*s != quote) {
		free(out);
		return NULL;
	}
	out[o] = '\0';
	*end = s + 1;
	return out;
}

static int
set_profile_key(struct toml_profile *p, const char *key, char *value,
		int boolean)
{
	char **slot = NULL;

	if (strcmp(key, "active") == 0) {
		p->active = boolean == 1;
		free(value);
		return 0;
	}
	if (strcmp(key, "token_id") == 0)
		slot = &p->token_id;
	else if (strcmp(key, "token_secret") == 0)
		slot = &p->token_secret;
	else if (strcmp(key, "server_url") == 0)
		slot = &p->server_url;
	else if (strcmp(key, "environment") == 0)
		slot = &p->environment;
	if (slot == NULL) {
		free(value); /* keys the engine does not use */
		return 0;
	}
	free(*slot);
	*slot = value;
	return 0;
}

int
toml_profiles_read(const char *path, struct toml_profile **profiles, char *err,
		   size_t errlen)
{
	FILE *f = fopen(path, "r");
	struct toml_profile *list = NULL, *cur = NULL;
	char line[4096];
	int n = 0, lineno = 0;

	*profiles = NULL;
	if (f == NULL) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "cannot read Modal config file %s: %s",
			 path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char *s = trim(line);

		lineno++;
		if (*s == '\0' || *s == '#')
			continue;
		if (*s == '[') {
			char *close = strchr(s, ']');
			struct toml_profile *grown;

			if (close == NULL)
				goto syntax;
			*close = '\0';
			s = trim(s + 1);
			if (*s == '"' || *s == '\'') {
				const char *end;
				char *name = parse_string(s, &end);
				if (name == NULL)
					goto syntax;
				s = name;
			} else {
				s = strdup(s);
			}
			grown = realloc(list, sizeof(*list) * (size_t)(n + 1));
			if (s == NULL || grown == NULL) {
				free(s);
				if (grown != NULL)
					list = grown;
				goto nomem;
			}
			list = grown;
			cur = &list[n++];
			memset(cur, 0, sizeof(*cur));
			cur->name = s;
			continue;
		}

		char *eq = strchr(s, '=');
		if (eq == NULL || cur == NULL)
			goto syntax;
		*eq = '\0';
		char *key = trim(s);
		char *val = trim(eq + 1);
		char *value = NULL;
		int boolean = -1;

		if (*key == '"' || *key == '\'') {
			size_t kl = strlen(key);
			if (kl < 2 || key[kl - 1] != key[0])
				goto syntax;
			key[kl - 1] = '\0';
			key++;
		}
		if (*val == '"' || *val == '\'') {
			const char *end;
			value = parse_string(val, &end);
			if (value == NULL)
				goto syntax;
			end += strspn(end, " \t");
			if (*end != '\0' && *end != '#') {
				free(value);
				goto syntax;
			}
		} else if (strncmp(val, "true", 4) == 0) {
			boolean = 1;
		} else if (strncmp(val, "false", 5) == 0) {
			boolean = 0;
		} else {
			continue; /* numbers and other values: not used here */
		}
		set_profile_key(cur, key, value, boolean);
	}
	fclose(f);
	*profiles = list;
	return n;

syntax:
	snprintf(err, errlen,
		 "invalid Modal config file %s at line %d: expected "
		 "[profile] or key = \"value\"",
		 path, lineno);
	goto fail;
nomem:
	snprintf(err, errlen, "out of memory reading %s", path);
fail:
	fclose(f);
	toml_profiles_free(list, n);
	return -1;
}

void
toml_profiles_free(struct toml_profile *profiles, int n)
{
	for (int i = 0; i < n; i++) {
		free(profiles[i].name);
		free(profiles[i].token_id);
		free(profiles[i].token_secret);
		free(profiles[i].server_url);
		free(profiles[i].environment);
	}
	free(profiles);
}

int
toml_profile_select(const struct toml_profile *profiles, int n,
		    const char *requested, const char *path, char *err,
		    size_t errlen)
{
	const char *name = requested;
	int nactive = 0, first_active = -1;

	for (int i = 0; i < n; i++) {
		if (profiles[i].active) {
			nactive++;
			if (first_active < 0)
				first_active = i;
		}
	}
	if (nactive > 1) {
		snprintf(err, errlen,
			 "more than one Modal profile is active in %s: keep "
			 "'active = true' in one table only, or run "
			 "'modal profile activate NAME'",
			 path);
		return -2;
	}
	if (name == NULL || *name == '\0') {
		if (first_active >= 0)
			return first_active;
		if (n > 1) {
			snprintf(err, errlen,
				 "no Modal profile is active in %s: set "
				 "MODAL_PROFILE, or run 'modal profile activate "
				 "NAME'",
				 path);
			return -2;
		}
		name = "default";
	}
	for (int i = 0; i < n; i++)
		if (strcmp(profiles[i].name, name) == 0)
			return i;
	return -1;
}

char *
modal_config_path(void)
{
	const char *env = getenv("MODAL_CONFIG_PATH");
	const char *home = getenv("HOME");
	char *path;

	if (env != NULL && *env != '\0')
		return strdup(env);
	if (home == NULL)
		return NULL;
	path = malloc(strlen(home) + sizeof("/.modal.toml"));
	if (path != NULL)
		sprintf(path, "%s/.modal.toml", home);
	return path;
}

/* Take the environment variable when set, else the profile value, else def. */
static char *
pick(const char *env_name, const char *profile_value, const char *def)
{
	const char *v = getenv(env_name);

	if (v == NULL)
		v = profile_value;
	if (v == NULL)
		v = def;
	return v != NULL ? strdup(v) : NULL;
}

/* A token must be non-empty and free of whitespace: a stray newline from a
 * .env file is a common cause of "Token ID is malformed". */
static const char *
token_problem(const char *value)
{
	if (value == NULL || *value == '\0')
		return "is empty";
	for (const char *p = value; *p != '\0'; p++)
		if (isspace((unsigned char)*p))
			return "contains whitespace";
	return NULL;
}

int
modal_config_load(struct modal_config *cfg, char *err, size_t errlen)
{
	struct toml_profile *profiles = NULL, *prof = NULL;
	char *path = modal_config_path();
	int n = 0, idx, rc = ENGINE_ERR_CONFIG;
	const char *problem;

	memset(cfg, 0, sizeof(*cfg));
	if (path != NULL) {
		n = toml_profiles_read(path, &profiles, err, errlen);
		if (n < 0)
			goto out;
		idx = toml_profile_select(profiles, n, getenv("MODAL_PROFILE"),
					  path, err, errlen);
		if (idx == -2)
			goto out;
		if (idx >= 0) {
			prof = &profiles[idx];
			cfg->profile = strdup(prof->name);
		}
	}

	int from_env = getenv("MODAL_TOKEN_ID") != NULL ||
		       getenv("MODAL_TOKEN_SECRET") != NULL;
	cfg->token_id = pick("MODAL_TOKEN_ID", prof ? prof->token_id : NULL, NULL);
	cfg->token_secret = pick("MODAL_TOKEN_SECRET",
				 prof ? prof->token_secret : NULL, NULL);
	cfg->server_url = pick("MODAL_SERVER_URL", prof ? prof->server_url : NULL,
			       MODAL_DEFAULT_SERVER_URL);
	cfg->environment = pick("MODAL_ENVIRONMENT",
				prof ? prof->environment : NULL, "");
	cfg->client_type = pick("MFMODAL_CLIENT_TYPE", NULL,
				MODAL_CLIENT_TYPE_DEFAULT);
	cfg->client_version = pick("MFMODAL_CLIENT_VERSION", NULL,
				   MODAL_CLIENT_VERSION_DEFAULT);
	if (from_env) {
		cfg->token_source = strdup("MODAL_TOKEN_ID and MODAL_TOKEN_SECRET");
	} else if (prof != NULL) {
		size_t len = strlen(prof->name) + strlen(path) + 32;
		cfg->token_source = malloc(len);
		if (cfg->token_source != NULL)
			snprintf(cfg->token_source, len, "profile '%s' in %s",
				 prof->name, path);
	} else {
		cfg->token_source = strdup("no source");
	}

	if (cfg->token_id == NULL && cfg->token_secret == NULL) {
		snprintf(err, errlen,
			 "Modal credentials are missing: set MODAL_TOKEN_ID and "
			 "MODAL_TOKEN_SECRET, or run 'modal token new' to write "
			 "them to %s",
			 path != NULL ? path : "~/.modal.toml");
		goto out;
	}
	if ((problem = token_problem(cfg->token_id)) != NULL) {
		snprintf(err, errlen,
			 "the Modal token id from %s %s: set MODAL_TOKEN_ID to "
			 "the ak-... id from 'modal token new'",
			 cfg->token_source, problem);
		goto out;
	}
	if ((problem = token_problem(cfg->token_secret)) != NULL) {
		snprintf(err, errlen,
			 "the Modal token secret from %s %s: set "
			 "MODAL_TOKEN_SECRET to the as-... secret from 'modal "
			 "token new'",
			 cfg->token_source, problem);
		goto out;
	}
	rc = ENGINE_OK;
out:
	if (cfg->token_id == NULL || cfg->server_url == NULL ||
	    cfg->environment == NULL)
		if (rc == ENGINE_OK) {
			snprintf(err, errlen, "out of memory");
			rc = ENGINE_ERR_NOMEM;
		}
	toml_profiles_free(profiles, n > 0 ? n : 0);
	free(path);
	return rc;
}

void
modal_config_free(struct modal_config *cfg)
{
	free(cfg->token_id);
	free(cfg->token_secret);
	free(cfg->server_url);
	free(cfg->environment);
	free(cfg->client_type);
	free(cfg->client_version);
	free(cfg->token_source);
	free(cfg->profile);
	memset(cfg, 0, sizeof(*cfg));
}
