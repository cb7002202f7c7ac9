#ifndef MFMODAL_JOBSPEC_H
#define MFMODAL_JOBSPEC_H

/* The job description: one task attempt to run in a sandbox, as JSON.  The
 * schema is documented in doc/job.md and mfmodal-engine(1). */

#include <stddef.h>

#include <jansson.h>

#include "gpu.h"

enum job_image_kind {
	JOB_IMAGE_DEBIAN_SLIM, /* Modal's debian_slim with a Python version */
	JOB_IMAGE_REGISTRY,    /* a public registry tag */
	JOB_IMAGE_DOCKERFILE,  /* Dockerfile commands, FROM first */
};

struct job_image {
	enum job_image_kind kind;
	char *value;     /* the tag, or the Python version (e.g. "3.11") */
	char **commands; /* JOB_IMAGE_DOCKERFILE */
	size_t ncommands;
};

/* The Metaflow task attempt a job runs; all strings NULL when absent. */
struct job_task {
	char *flow;
	char *run;
	char *step;
	char *task;
	unsigned attempt;
};

struct jobspec {
	char *id;
	char *command;
	struct job_image image;
	double cpu;          /* cores */
	unsigned memory_mb;  /* MiB */
	int has_gpu;
	struct gpu_request gpu;
	char *gpu_text;      /* as given, for messages */
	unsigned timeout;    /* seconds of sandbox lifetime */
	double deadline;     /* seconds from the start; 0 for none */
	char **env_keys;
	char **env_values;
	size_t nenv;
	char **secrets;      /* Modal secret names, in order */
	size_t nsecrets;
	char *app;
	char *environment;   /* NULL: MODAL_ENVIRONMENT or the default */
	char *name;          /* sandbox name */
	char *workdir;
	struct job_task task;
	char *package_path;  /* local code package to upload when missing */
	char *package_url;   /* s3:// location of the code package */
	char *logs_url;      /* s3:// task datastore directory for the logs */
	char *metadata_dir;  /* local .metaflow directory to sync into */
	char *metadata_url;  /* s3:// datastore root holding <attempt>.local_metadata */
};

/* Problems found in a job description, each "JSON-PATH: message". */
struct jobspec_errors {
	char **items;
	size_t n;
};
void jobspec_errors_add(struct jobspec_errors *errs, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void jobspec_errors_free(struct jobspec_errors *errs);

#define JOBSPEC_DEFAULT_APP "mfmodal"
#define JOBSPEC_DEFAULT_CPU 1.0
#define JOBSPEC_DEFAULT_MEMORY_MB 1024
#define JOBSPEC_DEFAULT_TIMEOUT 600
#define JOBSPEC_DEFAULT_PYTHON "3.11"

/* Fill spec from the JSON object obj, whose path in the document is path
 * (e.g. "$" or "$.jobs[3]").  Every problem is added to errs; returns the
 * number added.  spec is freed with jobspec_free() in every case. */
size_t jobspec_parse(json_t *obj, const char *path, struct jobspec *spec,
		     struct jobspec_errors *errs);
void jobspec_free(struct jobspec *spec);

/* Load a JSON document from path ("-" for standard input).  Returns NULL with
 * the problem (file, line, column) added to errs. */
json_t *jobspec_load_json(const char *path, struct jobspec_errors *errs);

/* The sandbox name for spec: its "name", else one derived from the task
 * pathspec and attempt, so a second create for the same attempt is refused
 * by the server instead of starting another sandbox.  out needs 65 bytes. */
void jobspec_sandbox_name(const struct jobspec *spec, char out[65]);

#endif
