#ifndef MFMODAL_AWS_CONFIG_H
#define MFMODAL_AWS_CONFIG_H

/* AWS credentials, region and S3 endpoint, found the way the AWS CLI and
 * boto3 find them:
 *
 * credentials  AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN),
 *              else the profile AWS_PROFILE ("default") in the shared
 *              credentials file (AWS_SHARED_CREDENTIALS_FILE, default
 *              ~/.aws/credentials), else the same profile in the config file
 *              (AWS_CONFIG_FILE, default ~/.aws/config, sections
 *              "[profile NAME]" and "[default]");
 * region       AWS_REGION, AWS_DEFAULT_REGION, the profile's "region" in the
 *              config file, else us-east-1;
 * endpoint     METAFLOW_S3_ENDPOINT_URL, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL
 *              (first one set wins), else AWS itself.
 *
 * Credential processes, SSO and instance metadata are not supported. */

#include <stddef.h>

struct aws_config {
	char *access_key_id;
	char *secret_access_key;
	char *session_token; /* NULL when there is none */
	/* Where the credentials came from, for error messages: "environment
	 * variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" or "profile
	 * 'dev' in /home/me/.aws/credentials". */
	char credential_source[512];
	char region[64];
	char region_source[300];
	char *endpoint_url;       /* NULL for AWS */
	char endpoint_source[32]; /* the variable that set endpoint_url */
};

/* Fill cfg from the environment and the AWS files.  Returns 0, or
 * ENGINE_ERR_CONFIG with a message in err that names what to set; cfg must be
 * released with aws_config_free() either way. */
int aws_config_load(struct aws_config *cfg, char *err, size_t errlen);
void aws_config_free(struct aws_config *cfg);

/* Read key from [section] of the INI file path.  Returns 1 and a malloc'ed
 * *value when found, 0 when the file, section or key is missing, or a
 * negative engine error.  *section_found is set to whether the section
 * exists (section_found may be NULL).  Key names compare without regard to case. */
int aws_config_ini_get(const char *path, const char *section, const char *key,
		       char **value, int *section_found);

#endif
