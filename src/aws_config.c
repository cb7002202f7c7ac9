/* AWS credentials, region and endpoint from the environment and the shared
 * AWS files (see aws_config.h). */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "aws_config.h"
#include "util.h"

static const char *
env_nonempty(const char *name)
{
	const char *value = getenv(name);

	return value != NULL && *value != '\0' ? value : NULL;
}

static char *
trim(char *s)
{
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		end--;
	*end = '\0';
	return s;
}

/* Compare a section header's text with the wanted name, allowing any run of
 * blanks where the wanted name has one space ("profile  dev"). */
static int
section_matches(const char *header, const char *wanted)
{
	while (*header != '\0' && *wanted != '\0') {
		if (*wanted == ' ') {
			if (!isspace((unsigned char)*header))
				return 0;
			while (isspace((unsigned char)*header))
				header++;
			wanted++;
			continue;
		}
		if (*header != *wanted)
			return 0;
		header++;
		wanted++;
	}
	return *header == '\0' && *wanted == '\0';
}

int
aws_config_ini_get(const char *path, const char *section, const char *key,
		   char **value, int *section_found)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	int in_section = 0, rc = 0;

	*value = NULL;
	if (section_found != NULL)
		*section_found = 0;
	if (f == NULL)
		return errno == ENOENT || errno == ENOTDIR ? 0 : ENGINE_ERR_IO;
	while (fgets(line, sizeof(line), f) != NULL) {
		char *text, *eq;

		/* Indented lines continue a nested value ("s3 =" followed by
		 * "  max_concurrent_requests = 20"); they are never top-level
		 * keys. */
		if (line[0] == ' ' || line[0] == '\t')
			continue;
		text = trim(line);
		if (*text == '\0' || *text == '#' || *text == ';')
			continue;
		if (*text == '[') {
			char *close = strrchr(text, ']');

			if (close == NULL) {
				in_section = 0;
				continue;
			}
			*close = '\0';
			in_section = section_matches(trim(text + 1), section);
			if (in_section && section_found != NULL)
				*section_found = 1;
			continue;
		}
		if (!in_section)
			continue;
		eq = strchr(text, '=');
		if (eq == NULL)
			continue;
		*eq = '\0';
		if (strcasecmp(trim(text), key) != 0)
			continue;
		*value = strdup(trim(eq + 1));
		rc = *value != NULL ? 1 : ENGINE_ERR_NOMEM;
		break;
	}
	fclose(f);
	return rc;
}

/* Expand a leading "~/" with HOME, as the AWS CLI does for its file paths. */
static void
expand_home(const char *path, char *out, size_t outlen)
{
	const char *home = getenv("HOME");

	if (path[0] == '~' && (path[1] == '/' || path[1] == '\0') && home != NULL)
		snprintf(out, outlen, "%s%s", home, path + 1);
	else
		util_strlcpy(out, path, outlen);
}

static void
aws_file_path(const char *env_name, const char *default_path, char *out,
	      size_t outlen)
{
	const char *path = env_nonempty(env_name);

	expand_home(path != NULL ? path : default_path, out, outlen);
}

/* Load the credentials of profile from one file; section is the section name
 * to look for.  Returns 1 when both keys were found, 0 when the file has no
 * (complete) credentials for it, or a negative error with err filled. */
static int
load_profile_credentials(struct aws_config *cfg, const char *path,
			 const char *section, const char *profile,
			 int *section_found, char *err, size_t errlen)
{
	char *id = NULL, *secret = NULL, *token = NULL;
	int found_id, found_secret, rc;

	found_id = aws_config_ini_get(path, section, "aws_access_key_id", &id,
				      section_found);
	if (found_id < 0) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return ENGINE_ERR_CONFIG;
	}
	found_secret = aws_config_ini_get(path, section, "aws_secret_access_key",
					  &secret, NULL);
	if (found_secret < 0) {
		rc = found_secret;
		goto out;
	}
	if (found_id == 1 && found_secret == 0) {
		snprintf(err, errlen,
			 "profile '%s' in %s has aws_access_key_id but no "
			 "aws_secret_access_key: add it, or set "
			 "AWS_SECRET_ACCESS_KEY",
			 profile, path);
		rc = ENGINE_ERR_CONFIG;
		goto out;
	}
	if (found_id == 0 && found_secret == 1) {
		snprintf(err, errlen,
			 "profile '%s' in %s has aws_secret_access_key but no "
			 "aws_access_key_id: add it, or set AWS_ACCESS_KEY_ID",
			 profile, path);
		rc = ENGINE_ERR_CONFIG;
		goto out;
	}
	if (found_id == 0) {
		rc = 0;
		goto out;
	}
	rc = aws_config_ini_get(path, section, "aws_session_token", &token, NULL);
	if (rc < 0)
		goto out;
	cfg->access_key_id = id;
	cfg->secret_access_key = secret;
	cfg->session_token = token != NULL && *token != '\0' ? token : NULL;
	if (cfg->session_token == NULL)
		free(token);
	id = secret = token = NULL;
	snprintf(cfg->credential_source, sizeof(cfg->credential_source),
		 "profile '%s' in %s", profile, path);
	rc = 1;
out:
	free(id);
	free(secret);
	if (token != NULL && token != cfg->session_token)
		free(token);
	return rc;
}

static int
load_credentials(struct aws_config *cfg, const char *profile,
		 int profile_explicit, const char *credentials_path,
		 const char *config_path, char *err, size_t errlen)
{
	const char *id = env_nonempty("AWS_ACCESS_KEY_ID");
	const char *secret = env_nonempty("AWS_SECRET_ACCESS_KEY");
	const char *token = env_nonempty("AWS_SESSION_TOKEN");
	char config_section[300];
	int in_credentials = 0, in_config = 0, rc;

	if (id != NULL && secret != NULL) {
		cfg->access_key_id = strdup(id);
		cfg->secret_access_key = strdup(secret);
		cfg->session_token = token != NULL ? strdup(token) : NULL;
		if (cfg->access_key_id == NULL || cfg->secret_access_key == NULL ||
		    (token != NULL && cfg->session_token == NULL))
			return ENGINE_ERR_NOMEM;
		snprintf(cfg->credential_source, sizeof(cfg->credential_source),
			 "environment variables AWS_ACCESS_KEY_ID and "
			 "AWS_SECRET_ACCESS_KEY%s",
			 token != NULL ? " (with AWS_SESSION_TOKEN)" : "");
		return ENGINE_OK;
	}
	if (id != NULL || secret != NULL) {
		snprintf(err, errlen,
			 "%s is set but %s is not: set both, or unset both to "
			 "use a profile from %s",
			 id != NULL ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
			 id != NULL ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID",
			 credentials_path);
		return ENGINE_ERR_CONFIG;
	}

	rc = load_profile_credentials(cfg, credentials_path, profile, profile,
				      &in_credentials, err, errlen);
	if (rc != 0)
		return rc < 0 ? ENGINE_ERR_CONFIG : ENGINE_OK;
	/* The config file names profiles "[profile NAME]", except the
	 * default one, which may also be "[default]". */
	snprintf(config_section, sizeof(config_section), "profile %s", profile);
	rc = load_profile_credentials(cfg, config_path, config_section, profile,
				      &in_config, err, errlen);
	if (rc == 0 && strcmp(profile, "default") == 0)
		rc = load_profile_credentials(cfg, config_path, "default",
					      profile, &in_config, err, errlen);
	if (rc != 0)
		return rc < 0 ? ENGINE_ERR_CONFIG : ENGINE_OK;

	if (profile_explicit && !in_credentials && !in_config)
		snprintf(err, errlen,
			 "AWS profile '%s' (from AWS_PROFILE) not found in %s or "
			 "%s: check the name, or set AWS_SHARED_CREDENTIALS_FILE "
			 "or AWS_CONFIG_FILE",
			 profile, credentials_path, config_path);
	else if (profile_explicit)
		snprintf(err, errlen,
			 "AWS profile '%s' (from AWS_PROFILE) has no "
			 "aws_access_key_id and aws_secret_access_key in %s or "
			 "%s: add them there, or set AWS_ACCESS_KEY_ID and "
			 "AWS_SECRET_ACCESS_KEY",
			 profile, credentials_path, config_path);
	else
		snprintf(err, errlen,
			 "no AWS credentials found: set AWS_ACCESS_KEY_ID and "
			 "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for "
			 "temporary credentials), or AWS_PROFILE naming a profile "
			 "in %s (AWS_SHARED_CREDENTIALS_FILE) or %s "
			 "(AWS_CONFIG_FILE)",
			 credentials_path, config_path);
	return ENGINE_ERR_CONFIG;
}

static int
load_region(struct aws_config *cfg, const char *profile,
	    const char *config_path)
{
	static const char *const env_names[] = {"AWS_REGION", "AWS_DEFAULT_REGION"};
	char section[300];
	char *value = NULL;
	int rc;

	for (size_t i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++) {
		const char *region = env_nonempty(env_names[i]);

		if (region != NULL) {
			util_strlcpy(cfg->region, region, sizeof(cfg->region));
			snprintf(cfg->region_source, sizeof(cfg->region_source),
				 "%s", env_names[i]);
			return ENGINE_OK;
		}
	}
	snprintf(section, sizeof(section), "profile %s", profile);
	rc = aws_config_ini_get(config_path, section, "region", &value, NULL);
	if (rc == 0 && strcmp(profile, "default") == 0)
		rc = aws_config_ini_get(config_path, "default", "region", &value,
					NULL);
	if (rc < 0)
		return rc;
	if (rc == 1 && *value != '\0') {
		util_strlcpy(cfg->region, value, sizeof(cfg->region));
		snprintf(cfg->region_source, sizeof(cfg->region_source),
			 "profile '%.64s' in %.200s", profile, config_path);
	} else {
		/* The region boto3 and the AWS CLI use for S3 when none is
		 * configured. */
		util_strlcpy(cfg->region, "us-east-1", sizeof(cfg->region));
		snprintf(cfg->region_source, sizeof(cfg->region_source),
			 "the default, as no AWS_REGION, AWS_DEFAULT_REGION or "
			 "profile region is set");
	}
	free(value);
	return ENGINE_OK;
}

static int
load_endpoint(struct aws_config *cfg)
{
	static const char *const env_names[] = {
		"METAFLOW_S3_ENDPOINT_URL",
		"AWS_ENDPOINT_URL_S3",
		"AWS_ENDPOINT_URL",
	};

	for (size_t i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++) {
		const char *url = env_nonempty(env_names[i]);

		if (url != NULL) {
			cfg->endpoint_url = strdup(url);
			if (cfg->endpoint_url == NULL)
				return ENGINE_ERR_NOMEM;
			util_strlcpy(cfg->endpoint_source, env_names[i],
				     sizeof(cfg->endpoint_source));
			return ENGINE_OK;
		}
	}
	return ENGINE_OK;
}

int
aws_config_load(struct aws_config *cfg, char *err, size_t errlen)
{
	const char *profile = env_nonempty("AWS_PROFILE");
	int profile_explicit = profile != NULL;
	char credentials_path[1024], config_path[1024];
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	err[0] = '\0';
	if (profile == NULL)
		profile = "default";
	aws_file_path("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials",
		      credentials_path, sizeof(credentials_path));
	aws_file_path("AWS_CONFIG_FILE", "~/.aws/config", config_path,
		      sizeof(config_path));

	rc = load_credentials(cfg, profile, profile_explicit, credentials_path,
			      config_path, err, errlen);
	if (rc == ENGINE_OK)
		rc = load_region(cfg, profile, config_path);
	if (rc == ENGINE_OK)
		rc = load_endpoint(cfg);
	if (rc == ENGINE_ERR_NOMEM)
		snprintf(err, errlen, "out of memory reading the AWS configuration");
	else if (rc != ENGINE_OK && err[0] == '\0')
		snprintf(err, errlen, "cannot read the AWS configuration in %s: %s",
			 config_path, engine_strerror(rc));
	return rc == ENGINE_OK ? ENGINE_OK : ENGINE_ERR_CONFIG;
}

static void
free_secret(char *s)
{
	if (s == NULL)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

void
aws_config_free(struct aws_config *cfg)
{
	free(cfg->access_key_id);
	free_secret(cfg->secret_access_key);
	free_secret(cfg->session_token);
	free(cfg->endpoint_url);
	memset(cfg, 0, sizeof(*cfg));
}
