/* Parsing and validation of job descriptions (see jobspec.h). */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "jobspec.h"

/* Modal's limit on the argument list of a sandbox, checked by its clients. */
#define ENTRYPOINT_MAX_BYTES 65536

void
jobspec_errors_add(struct jobspec_errors *errs, const char *fmt, ...)
{
	char buf[1024];
	char **grown;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	grown = realloc(errs->items, sizeof(char *) * (errs->n + 1));
	if (grown == NULL)
		return;
	errs->items = grown;
	errs->items[errs->n] = strdup(buf);
	if (errs->items[errs->n] != NULL)
		errs->n++;
}

void
jobspec_errors_free(struct jobspec_errors *errs)
{
	for (size_t i = 0; i < errs->n; i++)
		free(errs->items[i]);
	free(errs->items);
	errs->items = NULL;
	errs->n = 0;
}

static void
free_list(char **items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(items[i]);
	free(items);
}

void
jobspec_free(struct jobspec *spec)
{
	free(spec->id);
	free(spec->command);
	free(spec->image.value);
	free_list(spec->image.commands, spec->image.ncommands);
	free(spec->gpu_text);
	free_list(spec->env_keys, spec->nenv);
	free_list(spec->env_values, spec->nenv);
	free_list(spec->secrets, spec->nsecrets);
	free(spec->app);
	free(spec->environment);
	free(spec->name);
	free(spec->workdir);
	free(spec->task.flow);
	free(spec->task.run);
	free(spec->task.step);
	free(spec->task.task);
	free(spec->package_path);
	free(spec->package_url);
	free(spec->logs_url);
	free(spec->metadata_dir);
	free(spec->metadata_url);
	memset(spec, 0, sizeof(*spec));
}

/* Field readers: each returns 1 when the field was present and valid. */

static int
get_string(json_t *obj, const char *path, const char *key, int required,
	   char **out, struct jobspec_errors *errs)
{
	json_t *v = json_object_get(obj, key);

	if (v == NULL || json_is_null(v)) {
		if (required)
			jobspec_errors_add(errs, "%s.%s: missing; it is required",
					   path, key);
		return 0;
	}
	if (!json_is_string(v)) {
		jobspec_errors_add(errs, "%s.%s: expected a string", path, key);
		return 0;
	}
	if (required && json_string_length(v) == 0) {
		jobspec_errors_add(errs, "%s.%s: must not be empty", path, key);
		return 0;
	}
	*out = strdup(json_string_value(v));
	return *out != NULL;
}

static int
get_number(json_t *obj, const char *path, const char *key, double *out,
	   struct jobspec_errors *errs)
{
	json_t *v = json_object_get(obj, key);

	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_number(v)) {
		jobspec_errors_add(errs, "%s.%s: expected a number", path, key);
		return 0;
	}
	*out = json_number_value(v);
	return 1;
}

static int
get_string_list(json_t *obj, const char *path, const char *key, char ***out,
		size_t *n, struct jobspec_errors *errs)
{
	json_t *v = json_object_get(obj, key), *item;
	size_t i;

	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_array(v)) {
		jobspec_errors_add(errs, "%s.%s: expected a list of strings", path,
				   key);
		return 0;
	}
	*out = calloc(json_array_size(v) + 1, sizeof(char *));
	if (*out == NULL)
		return 0;
	json_array_foreach(v, i, item) {
		if (!json_is_string(item)) {
			jobspec_errors_add(errs, "%s.%s[%zu]: expected a string",
					   path, key, i);
			continue;
		}
		(*out)[(*n)++] = strdup(json_string_value(item));
	}
	return 1;
}

static void
check_unknown_keys(json_t *obj, const char *path, const char *const *known,
		   struct jobspec_errors *errs)
{
	const char *key;
	json_t *v;

	json_object_foreach(obj, key, v) {
		int found = 0;

		for (size_t i = 0; known[i] != NULL; i++)
			if (strcmp(key, known[i]) == 0)
				found = 1;
		if (!found)
			jobspec_errors_add(errs, "%s.%s: unknown field", path, key);
	}
}

static void
parse_image(json_t *obj, const char *path, struct jobspec *spec,
	    struct jobspec_errors *errs)
{
	static const char *const known[] = {"registry", "debian_slim",
					    "dockerfile_commands", NULL};
	json_t *v = json_object_get(obj, "image");
	char sub[256];
	int kinds = 0;

	spec->image.kind = JOB_IMAGE_DEBIAN_SLIM;
	if (v == NULL || json_is_null(v)) {
		spec->image.value = strdup(JOBSPEC_DEFAULT_PYTHON);
		return;
	}
	snprintf(sub, sizeof(sub), "%s.image", path);
	if (!json_is_object(v)) {
		jobspec_errors_add(errs,
				   "%s: expected an object with one of registry, "
				   "debian_slim or dockerfile_commands",
				   sub);
		return;
	}
	check_unknown_keys(v, sub, known, errs);
	if (get_string(v, sub, "registry", 0, &spec->image.value, errs)) {
		spec->image.kind = JOB_IMAGE_REGISTRY;
		kinds++;
	}
	if (json_object_get(v, "debian_slim") != NULL) {
		char *py = NULL;

		if (get_string(v, sub, "debian_slim", 0, &py, errs)) {
			free(spec->image.value);
			spec->image.value = py;
			spec->image.kind = JOB_IMAGE_DEBIAN_SLIM;
		}
		kinds++;
	}
	if (get_string_list(v, sub, "dockerfile_commands", &spec->image.commands,
			    &spec->image.ncommands, errs)) {
		spec->image.kind = JOB_IMAGE_DOCKERFILE;
		kinds++;
		if (spec->image.ncommands == 0 ||
		    strncmp(spec->image.commands[0], "FROM ", 5) != 0)
			jobspec_errors_add(errs,
					   "%s.dockerfile_commands: the first "
					   "command must be FROM IMAGE",
					   sub);
	}
	if (kinds != 1)
		jobspec_errors_add(errs,
				   "%s: give exactly one of registry, debian_slim "
				   "or dockerfile_commands",
				   sub);
	if (spec->image.kind == JOB_IMAGE_REGISTRY && spec->image.value != NULL &&
	    spec->image.value[0] == '\0')
		jobspec_errors_add(errs, "%s.registry: must not be empty", sub);
}

static void
parse_env(json_t *obj, const char *path, struct jobspec *spec,
	  struct jobspec_errors *errs)
{
	json_t *v = json_object_get(obj, "env"), *value;
	const char *key;
	size_t n;

	if (v == NULL || json_is_null(v))
		return;
	if (!json_is_object(v)) {
		jobspec_errors_add(errs, "%s.env: expected an object of strings",
				   path);
		return;
	}
	n = json_object_size(v);
	spec->env_keys = calloc(n + 1, sizeof(char *));
	spec->env_values = calloc(n + 1, sizeof(char *));
	if (spec->env_keys == NULL || spec->env_values == NULL)
		return;
	json_object_foreach(v, key, value) {
		if (!json_is_string(value)) {
			jobspec_errors_add(errs, "%s.env.%s: expected a string",
					   path, key);
			continue;
		}
		if (*key == '\0' || strchr(key, '=') != NULL) {
			jobspec_errors_add(errs,
					   "%s.env: invalid variable name \"%s\"",
					   path, key);
			continue;
		}
		spec->env_keys[spec->nenv] = strdup(key);
		spec->env_values[spec->nenv++] = strdup(json_string_value(value));
	}
}

static void
parse_task(json_t *obj, const char *path, struct jobspec *spec,
	   struct jobspec_errors *errs)
{
	static const char *const known[] = {"flow", "run", "step", "task",
					    "attempt", NULL};
	json_t *v = json_object_get(obj, "task");
	char sub[256];
	double attempt = 0;

	if (v == NULL || json_is_null(v))
		return;
	snprintf(sub, sizeof(sub), "%s.task", path);
	if (!json_is_object(v)) {
		jobspec_errors_add(errs, "%s: expected an object", sub);
		return;
	}
	check_unknown_keys(v, sub, known, errs);
	get_string(v, sub, "flow", 1, &spec->task.flow, errs);
	get_string(v, sub, "run", 1, &spec->task.run, errs);
	get_string(v, sub, "step", 1, &spec->task.step, errs);
	get_string(v, sub, "task", 1, &spec->task.task, errs);
	if (get_number(v, sub, "attempt", &attempt, errs) &&
	    (attempt < 0 || attempt > 99 || attempt != (double)(unsigned)attempt))
		jobspec_errors_add(errs,
				   "%s.attempt: expected a whole number from 0 to "
				   "99, got %g",
				   sub, attempt);
	spec->task.attempt = (unsigned)attempt;
}

/* Read an object field holding one s3:// URL and, optionally, a local path. */
static void
parse_location(json_t *obj, const char *path, const char *key,
	       const char *local_key, char **url, char **local,
	       struct jobspec_errors *errs)
{
	const char *const known[] = {"url", local_key, NULL};
	json_t *v = json_object_get(obj, key);
	char sub[256];

	if (v == NULL || json_is_null(v))
		return;
	snprintf(sub, sizeof(sub), "%s.%s", path, key);
	if (!json_is_object(v)) {
		jobspec_errors_add(errs, "%s: expected an object", sub);
		return;
	}
	check_unknown_keys(v, sub, known, errs);
	if (get_string(v, sub, "url", 1, url, errs) &&
	    strncmp(*url, "s3://", 5) != 0)
		jobspec_errors_add(errs, "%s.url: expected an s3:// URL, got \"%s\"",
				   sub, *url);
	if (local_key != NULL)
		get_string(v, sub, local_key, 0, local, errs);
}

size_t
jobspec_parse(json_t *obj, const char *path, struct jobspec *spec,
	      struct jobspec_errors *errs)
{
	static const char *const known[] = {
		"id", "command", "image", "cpu", "memory", "gpu", "timeout",
		"deadline", "env", "secrets", "app", "environment", "name",
		"workdir", "task", "package", "logs", "metadata", NULL};
	size_t before = errs->n;
	double number;
	char err[256];

	memset(spec, 0, sizeof(*spec));
	spec->cpu = JOBSPEC_DEFAULT_CPU;
	spec->memory_mb = JOBSPEC_DEFAULT_MEMORY_MB;
	spec->timeout = JOBSPEC_DEFAULT_TIMEOUT;
	if (!json_is_object(obj)) {
		jobspec_errors_add(errs, "%s: expected a job object", path);
		return errs->n - before;
	}
	check_unknown_keys(obj, path, known, errs);
	get_string(obj, path, "id", 1, &spec->id, errs);
	if (get_string(obj, path, "command", 1, &spec->command, errs) &&
	    strlen(spec->command) > ENTRYPOINT_MAX_BYTES - 16)
		jobspec_errors_add(errs,
				   "%s.command: %zu bytes is over Modal's limit of "
				   "%d bytes for a sandbox command",
				   path, strlen(spec->command), ENTRYPOINT_MAX_BYTES);
	parse_image(obj, path, spec, errs);

	if (get_number(obj, path, "cpu", &number, errs)) {
		if (!(number > 0) || number > 1024)
			jobspec_errors_add(errs,
					   "%s.cpu: expected a positive number of "
					   "cores, got %g",
					   path, number);
		else
			spec->cpu = number;
	}
	if (get_number(obj, path, "memory", &number, errs)) {
		if (!(number >= 1) || number != (double)(unsigned)number)
			jobspec_errors_add(errs,
					   "%s.memory: expected a positive whole "
					   "number of MiB, got %g",
					   path, number);
		else
			spec->memory_mb = (unsigned)number;
	}
	if (get_string(obj, path, "gpu", 0, &spec->gpu_text, errs)) {
		if (gpu_parse(spec->gpu_text, &spec->gpu, err, sizeof(err)) != 0)
			jobspec_errors_add(errs, "%s.gpu: %s", path, err);
		else
			spec->has_gpu = 1;
	}
	if (get_number(obj, path, "timeout", &number, errs)) {
		if (!(number >= 1) || number > 86400 ||
		    number != (double)(unsigned)number)
			jobspec_errors_add(errs,
					   "%s.timeout: expected a whole number of "
					   "seconds from 1 to 86400 (Modal's "
					   "maximum, 24 hours), got %g",
					   path, number);
		else
			spec->timeout = (unsigned)number;
	}
	if (get_number(obj, path, "deadline", &number, errs)) {
		if (!(number > 0))
			jobspec_errors_add(errs,
					   "%s.deadline: expected a positive number "
					   "of seconds, got %g",
					   path, number);
		else
			spec->deadline = number;
	}
	parse_env(obj, path, spec, errs);
	get_string_list(obj, path, "secrets", &spec->secrets, &spec->nsecrets,
			errs);
	for (size_t i = 0; i < spec->nsecrets; i++)
		if (spec->secrets[i] == NULL || spec->secrets[i][0] == '\0')
			jobspec_errors_add(errs, "%s.secrets[%zu]: must not be empty",
					   path, i);
	if (!get_string(obj, path, "app", 0, &spec->app, errs))
		spec->app = strdup(JOBSPEC_DEFAULT_APP);
	get_string(obj, path, "environment", 0, &spec->environment, errs);
	if (get_string(obj, path, "name", 0, &spec->name, errs) &&
	    (strlen(spec->name) == 0 || strlen(spec->name) > 64))
		jobspec_errors_add(errs,
				   "%s.name: expected 1 to 64 characters", path);
	if (get_string(obj, path, "workdir", 0, &spec->workdir, errs) &&
	    spec->workdir[0] != '/')
		jobspec_errors_add(errs,
				   "%s.workdir: expected an absolute path, got "
				   "\"%s\"",
				   path, spec->workdir);
	parse_task(obj, path, spec, errs);
	parse_location(obj, path, "package", "path", &spec->package_url,
		       &spec->package_path, errs);
	parse_location(obj, path, "logs", NULL, &spec->logs_url, NULL, errs);
	parse_location(obj, path, "metadata", "dir", &spec->metadata_url,
		       &spec->metadata_dir, errs);
	if (spec->logs_url != NULL && spec->task.flow == NULL)
		jobspec_errors_add(errs,
				   "%s.logs: needs %s.task for the attempt number "
				   "in the log file names",
				   path, path);
	if (spec->metadata_url != NULL &&
	    (spec->metadata_dir == NULL || spec->task.flow == NULL))
		jobspec_errors_add(errs,
				   "%s.metadata: needs metadata.dir and %s.task",
				   path, path);
	return errs->n - before;
}

json_t *
jobspec_load_json(const char *path, struct jobspec_errors *errs)
{
	json_error_t jerr;
	json_t *doc;

	if (strcmp(path, "-") == 0)
		doc = json_loadf(stdin, JSON_REJECT_DUPLICATES, &jerr);
	else
		doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (doc == NULL) {
		if (jerr.line <= 0)
			jobspec_errors_add(errs, "%s: %s",
					   strcmp(path, "-") == 0 ? "standard input" : path,
					   jerr.text);
		else
			jobspec_errors_add(errs, "%s:%d:%d: invalid JSON: %s",
					   strcmp(path, "-") == 0 ? "standard input" : path,
					   jerr.line, jerr.column, jerr.text);
	}
	return doc;
}

void
jobspec_sandbox_name(const struct jobspec *spec, char out[65])
{
	char full[1024];
	size_t n, o = 0;

	if (spec->name != NULL) {
		snprintf(out, 65, "%s", spec->name);
		return;
	}
	if (spec->task.flow != NULL)
		snprintf(full, sizeof(full), "mf-%s-%s-%s-%s-%u", spec->task.flow,
			 spec->task.run, spec->task.step, spec->task.task,
			 spec->task.attempt);
	else
		snprintf(full, sizeof(full), "mf-%s", spec->id);
	n = strlen(full);
	/* Modal names take letters, digits, '-', '_' and '.', up to 64. */
	for (size_t i = 0; i < n; i++) {
		char c = full[i];
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			 (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';

		full[i] = ok ? c : '-';
	}
	if (n <= 64) {
		memcpy(out, full, n + 1);
		return;
	}
	/* Too long: keep a readable prefix and make it unique with a hash. */
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	EVP_Digest(full, n, md, &mdlen, EVP_sha256(), NULL);
	memcpy(out, full, 47);
	o = 47;
	out[o++] = '-';
	for (unsigned i = 0; i < 8; i++)
		o += (size_t)snprintf(out + o, 65 - o, "%02x", md[i]);
	out[o] = '\0';
}
