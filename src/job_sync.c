/* PACKAGE and SYNC: the job's traffic with the datastore (the code
 * package, the task's logs, the remote task's local metadata) and the exit
 * status once the sandbox is over. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "job_internal.h"
#include "log.h"
#include "s3.h"
#include "tarx.h"

/* The first log upload follows 1 s after the start.  The interval then
 * grows by half each time up to 30 s, so short tasks are stored almost live
 * and long ones cost few requests. */
#define UPLOAD_FIRST_INTERVAL 1.0
#define UPLOAD_MAX_INTERVAL 30.0
/* Local metadata is small; anything past this is not what Metaflow wrote. */
#define METADATA_MAX_BYTES (256u * 1024 * 1024)

static void sync_step(struct job *job);
static void metadata_fetch(struct job *job);

int
job_needs_storage(const struct job *job)
{
	return job->spec.package_url != NULL || job->spec.logs_url != NULL ||
	       job->spec.metadata_url != NULL;
}

/* Create a temporary file; *path gets its allocated name. */
static int
temp_file(char **path, const char *what)
{
	const char *dir = getenv("TMPDIR");
	int fd;

	*path = NULL;
	if (asprintf(path, "%s/mfmodal-%s-XXXXXX",
		     dir != NULL && *dir ? dir : "/tmp", what) < 0) {
		*path = NULL;
		errno = ENOMEM;
		return -1;
	}
	fd = mkstemp(*path);
	if (fd < 0) {
		int saved = errno;

		free(*path);
		*path = NULL;
		errno = saved;
	}
	return fd;
}

static void
remove_temp(char **path)
{
	if (*path != NULL)
		unlink(*path);
	free(*path);
	*path = NULL;
}

/* PACKAGE */

static void
on_package_upload(void *arg, const struct s3_error *err,
		  const struct s3_object_info *info)
{
	struct job *job = arg;

	job->package_upload = NULL;
	if (err->code != 0) {
		job_fail(job, JOB_EXIT_FAILURE, "uploading the code package: %s",
			 err->message);
		return;
	}
	log_info(job->prefix, "code package uploaded to %s (%llu bytes)",
		 job->spec.package_url, (unsigned long long)info->size);
	job_set_state(job, JOB_RESOLVE);
}

static void
on_package_head(void *arg, const struct s3_error *err,
		const struct s3_object_info *info)
{
	struct job *job = arg;
	struct s3_upload_options opts;
	char *bucket = NULL, *key = NULL, msg[256];

	job->package_op = NULL;
	if (err->code == 0) {
		log_debug(job->prefix, "code package already at %s",
			  job->spec.package_url);
		job_set_state(job, JOB_RESOLVE);
		return;
	}
	if (err->http_status != 404) {
		job_fail(job, JOB_EXIT_FAILURE, "checking the code package: %s",
			 err->message);
		return;
	}
	if (job->spec.package_path == NULL) {
		job_fail(job, JOB_EXIT_FAILURE,
			 "the code package %s does not exist and the job names no "
			 "local file to upload (package.path)",
			 job->spec.package_url);
		return;
	}
	s3_upload_options_default(&opts);
	if (s3_upload_options_from_env(&opts, msg, sizeof(msg)) != 0) {
		job_fail(job, JOB_EXIT_INVALID, "%s", msg);
		return;
	}
	s3_parse_uri(job->spec.package_url, &bucket, &key);
	job->package_upload = s3_upload_file(job->env.s3, job->spec.package_path,
					     bucket, key, &opts,
					     on_package_upload, job);
	free(bucket);
	free(key);
	if (job->package_upload == NULL)
		job_fail(job, JOB_EXIT_FAILURE, "out of memory");
}

void
job_package_start(struct job *job)
{
	char *bucket = NULL, *key = NULL;

	if (job->env.s3 == NULL) {
		job_fail(job, JOB_EXIT_FAILURE,
			 "the job names a code package at %s, but no S3 "
			 "datastore is configured",
			 job->spec.package_url);
		return;
	}
	if (s3_parse_uri(job->spec.package_url, &bucket, &key) != 0 ||
	    key == NULL || *key == '\0') {
		job_fail(job, JOB_EXIT_INVALID, "invalid package URL %s",
			 job->spec.package_url);
	} else {
		job->package_op = s3_head_object(job->env.s3, bucket, key,
						 on_package_head, job);
		if (job->package_op == NULL)
			job_fail(job, JOB_EXIT_FAILURE, "out of memory");
	}
	free(bucket);
	free(key);
}

/* Logs */

static void log_upload_next(struct job *job, int fd);

static void
on_log_upload(void *arg, const struct s3_error *err,
	      const struct s3_object_info *info)
{
	struct job_logstream *ls = arg;
	struct job *job = ls->job;
	int fd = ls->fd;

	job->log_upload[fd] = NULL;
	remove_temp(&job->log_tmp[fd]);
	if (err->code != 0) {
		/* The next upload writes the whole file again. */
		log_warn(job->prefix, "storing the task's %s failed: %s",
			 fd == 1 ? "stdout" : "stderr", err->message);
	} else {
		job->uploaded_lines[fd] = job->log_upload_lines[fd];
	}
	if (job->state == JOB_SYNC)
		sync_step(job);
}

static void
log_upload_next(struct job *job, int fd)
{
	char *bucket = NULL, *prefix = NULL, key[2048];
	struct s3_upload_options opts;
	int tmp;

	if (job->log_upload[fd] != NULL ||
	    logsink_lines(job->sink, fd) == job->uploaded_lines[fd])
		return;
	if (s3_parse_uri(job->spec.logs_url, &bucket, &prefix) != 0)
		return;
	/* <attempt>.task_stdout.log, Metaflow's name for this attempt's log */
	snprintf(key, sizeof(key), "%s%s%u.task_%s.log", prefix,
		 *prefix && prefix[strlen(prefix) - 1] != '/' ? "/" : "",
		 job->spec.task.attempt, fd == 1 ? "stdout" : "stderr");
	/* A copy, because the spool keeps growing while the upload reads. */
	tmp = temp_file(&job->log_tmp[fd], "log");
	if (tmp >= 0)
		close(tmp);
	if (tmp < 0 || logsink_snapshot(job->sink, fd, job->log_tmp[fd]) != 0) {
		log_warn(job->prefix, "cannot write a temporary log file: %s",
			 strerror(errno));
		remove_temp(&job->log_tmp[fd]);
		goto out;
	}
	job->log_upload_lines[fd] = logsink_lines(job->sink, fd);
	s3_upload_options_default(&opts);
	job->log_upload[fd] = s3_upload_file(job->env.s3, job->log_tmp[fd],
					     bucket, key, &opts, on_log_upload,
					     &job->logs[fd]);
	if (job->log_upload[fd] == NULL)
		remove_temp(&job->log_tmp[fd]);
out:
	free(bucket);
	free(prefix);
}

static void
upload_timer_cb(evutil_socket_t sock, short what, void *arg)
{
	struct job *job = arg;
	struct timeval tv;

	for (int fd = 1; fd <= 2; fd++)
		log_upload_next(job, fd);
	job->upload_interval *= 1.5;
	if (job->upload_interval > UPLOAD_MAX_INTERVAL)
		job->upload_interval = UPLOAD_MAX_INTERVAL;
	tv.tv_sec = (time_t)job->upload_interval;
	tv.tv_usec = (suseconds_t)((job->upload_interval - (double)tv.tv_sec) * 1e6);
	event_add(job->upload_timer, &tv);
}

void
job_logs_upload_start(struct job *job)
{
	struct timeval tv = {(time_t)UPLOAD_FIRST_INTERVAL, 0};

	if (job->spec.logs_url == NULL || job->env.s3 == NULL)
		return;
	if (job->upload_timer == NULL)
		job->upload_timer = evtimer_new(job->env.base, upload_timer_cb, job);
	job->upload_interval = UPLOAD_FIRST_INTERVAL;
	if (job->upload_timer != NULL)
		event_add(job->upload_timer, &tv);
}

void
job_storage_release(struct job *job)
{
	if (job->upload_timer != NULL) {
		event_free(job->upload_timer);
		job->upload_timer = NULL;
	}
	/* Detached uploads call nothing back, and a multipart upload among
	 * them is still aborted, so none is left behind. */
	for (int fd = 1; fd <= 2; fd++) {
		if (job->log_upload[fd] != NULL)
			s3_upload_detach(job->log_upload[fd]);
		job->log_upload[fd] = NULL;
		remove_temp(&job->log_tmp[fd]);
	}
	if (job->package_upload != NULL)
		s3_upload_detach(job->package_upload);
	job->package_upload = NULL;
	if (job->package_op != NULL)
		s3_op_cancel(job->package_op);
	if (job->metadata_op != NULL)
		s3_op_cancel(job->metadata_op);
	job->package_op = job->metadata_op = NULL;
	remove_temp(&job->metadata_tmp);
	free(job->metadata_key);
	job->metadata_key = NULL;
}

/* Local metadata */

static void metadata_done(struct job *job);

/* The key inside <attempt>.local_metadata: a JSON string. */
static char *
read_metadata_pointer(const char *path)
{
	json_error_t jerr;
	json_t *v = json_load_file(path, JSON_DECODE_ANY, &jerr);
	char *key = NULL;

	if (v != NULL && json_is_string(v))
		key = strdup(json_string_value(v));
	json_decref(v);
	return key;
}

static int
read_file(const char *path, uint8_t **data, size_t *len, size_t max)
{
	struct stat st;
	FILE *f = fopen(path, "rb");

	*data = NULL;
	if (f == NULL || fstat(fileno(f), &st) != 0 || (size_t)st.st_size > max) {
		if (f != NULL)
			fclose(f);
		return -1;
	}
	*len = (size_t)st.st_size;
	*data = malloc(*len + 1);
	if (*data == NULL || fread(*data, 1, *len, f) != *len) {
		free(*data);
		*data = NULL;
		fclose(f);
		return -1;
	}
	fclose(f);
	return 0;
}

/* Unpack the content-addressed blob (gzip, as Metaflow's store packs it)
 * holding a tar.gz of the remote .metaflow directory, into metadata_dir. */
static void
metadata_extract(struct job *job)
{
	uint8_t *blob = NULL, *packed = NULL, *tar = NULL;
	size_t blob_len, packed_len, tar_len;
	char err[512];
	long files;

	if (read_file(job->metadata_tmp, &blob, &blob_len, METADATA_MAX_BYTES) != 0) {
		log_error(job->prefix, "cannot read the downloaded metadata");
		goto out;
	}
	if (tarx_gunzip(blob, blob_len, METADATA_MAX_BYTES, &packed, &packed_len,
			err, sizeof(err)) != 0) {
		log_error(job->prefix, "local metadata %s: %s", job->metadata_key, err);
		goto out;
	}
	/* A blob stored raw is the tar.gz itself, so this layer is then tar. */
	if (packed_len >= 2 && packed[0] == 0x1f && packed[1] == 0x8b) {
		if (tarx_gunzip(packed, packed_len, METADATA_MAX_BYTES, &tar,
				&tar_len, err, sizeof(err)) != 0) {
			log_error(job->prefix, "local metadata %s: %s",
				  job->metadata_key, err);
			goto out;
		}
	} else {
		tar = packed;
		tar_len = packed_len;
		packed = NULL;
	}
	files = tarx_extract(tar, tar_len, job->spec.metadata_dir, ".metaflow/",
			     err, sizeof(err));
	if (files < 0)
		log_error(job->prefix, "local metadata not synced: %s", err);
	else
		log_info(job->prefix, "local metadata synced into %s (%ld files)",
			 job->spec.metadata_dir, files);
out:
	free(blob);
	free(packed);
	free(tar);
}

static void
on_metadata_get(void *arg, const struct s3_error *err,
		const struct s3_object_info *info)
{
	struct job *job = arg;

	job->metadata_op = NULL;
	if (err->code != 0) {
		if (err->http_status == 404 && job->metadata_step == 0)
			log_write(job->exit_status == 0 ? LOG_LEVEL_WARN
							: LOG_LEVEL_INFO,
				  job->prefix,
				  "the task stored no local metadata for attempt "
				  "%u",
				  job->spec.task.attempt);
		else
			log_error(job->prefix, "fetching local metadata: %s",
				  err->message);
		metadata_done(job);
		return;
	}
	if (job->metadata_step == 0) {
		job->metadata_key = read_metadata_pointer(job->metadata_tmp);
		remove_temp(&job->metadata_tmp);
		if (job->metadata_key == NULL ||
		    strspn(job->metadata_key, "0123456789abcdef") !=
			    strlen(job->metadata_key) ||
		    strlen(job->metadata_key) < 8) {
			log_error(job->prefix,
				  "%u.local_metadata does not hold a datastore key",
				  job->spec.task.attempt);
			metadata_done(job);
			return;
		}
		job->metadata_step = 1;
		metadata_fetch(job);
		return;
	}
	metadata_extract(job);
	metadata_done(job);
}

/* Fetch step 0, the pointer <task>/<attempt>.local_metadata, or step 1, the
 * blob <root>/<Flow>/data/<key[:2]>/<key> it names. */
static void
metadata_fetch(struct job *job)
{
	char *bucket = NULL, *prefix = NULL, key[2048];
	int fd;

	if (s3_parse_uri(job->spec.metadata_url, &bucket, &prefix) != 0) {
		metadata_done(job);
		return;
	}
	size_t plen = strlen(prefix);
	while (plen > 0 && prefix[plen - 1] == '/')
		prefix[--plen] = '\0';
	if (job->metadata_step == 0) {
		snprintf(key, sizeof(key), "%s/%u.local_metadata", prefix,
			 job->spec.task.attempt);
	} else {
		/* The task directory is <root>/<Flow>/<run>/<step>/<task>. */
		for (int up = 0; up < 3; up++) {
			char *slash = strrchr(prefix, '/');

			if (slash == NULL) {
				log_error(job->prefix,
					  "metadata.url %s is not a task directory",
					  job->spec.metadata_url);
				free(bucket);
				free(prefix);
				metadata_done(job);
				return;
			}
			*slash = '\0';
		}
		snprintf(key, sizeof(key), "%s/data/%.2s/%s", prefix,
			 job->metadata_key, job->metadata_key);
	}
	fd = temp_file(&job->metadata_tmp, "metadata");
	if (fd >= 0)
		close(fd);
	job->metadata_op = s3_get_object(job->env.s3, bucket, key,
					 job->metadata_tmp, NULL, NULL,
					 on_metadata_get, job);
	free(bucket);
	free(prefix);
	if (job->metadata_op == NULL)
		metadata_done(job);
}

static void
metadata_done(struct job *job)
{
	remove_temp(&job->metadata_tmp);
	job->metadata_step = 2;
	sync_step(job);
}

/* The exit status */

static void
exit_from_result(struct job *job)
{
	const char *sb = job->sandbox_id != NULL ? job->sandbox_id : "?";
	const char *exc = job->result_exception != NULL ? job->result_exception : "";

	switch (job->result_status) {
	case MODAL__CLIENT__GENERIC_RESULT__GENERIC_STATUS__GENERIC_STATUS_SUCCESS:
	case MODAL__CLIENT__GENERIC_RESULT__GENERIC_STATUS__GENERIC_STATUS_FAILURE:
		job->exit_status = job->result_exitcode & 0xff;
		if (job->exit_status != 0)
			job_set_reason(job,
				       "the task in sandbox %s exited with status %d",
				       sb, job->exit_status);
		break;
	case MODAL__CLIENT__GENERIC_RESULT__GENERIC_STATUS__GENERIC_STATUS_TIMEOUT:
		job->exit_status = JOB_EXIT_TIMEOUT;
		job_set_reason(job,
			       "sandbox %s timed out after %u s (Modal TIMEOUT); "
			       "exit status 124",
			       sb, job->spec.timeout);
		break;
	case MODAL__CLIENT__GENERIC_RESULT__GENERIC_STATUS__GENERIC_STATUS_TERMINATED:
		job->exit_status = JOB_EXIT_TERMINATED;
		job_set_reason(job,
			       "sandbox %s was terminated by the platform (Modal "
			       "TERMINATED), possibly for running out of memory; "
			       "exit status 137%s%s",
			       sb, *exc ? ": " : "", exc);
		break;
	default:
		job->failed = 1;
		job->exit_status = JOB_EXIT_FAILURE;
		job_set_reason(job, "sandbox %s ended with Modal status %d%s%s",
			       sb, job->result_status, *exc ? ": " : "", exc);
		break;
	}
	if (job->exit_status != 0)
		log_error(job->prefix, "%s", job_reason(job));
}

/* SYNC: the last log uploads, then the metadata, then the end.  Each
 * finished transfer calls this again. */
static void
sync_step(struct job *job)
{
	if (job->state != JOB_SYNC)
		return;
	if (job->env.s3 != NULL && job->spec.logs_url != NULL) {
		int busy = 0;

		for (int fd = 1; fd <= 2; fd++) {
			log_upload_next(job, fd);
			busy |= job->log_upload[fd] != NULL;
		}
		if (busy)
			return;
	}
	if (job->env.s3 != NULL && job->spec.metadata_url != NULL &&
	    job->metadata_step < 2 && !job->cancelled) {
		if (job->metadata_op == NULL && job->metadata_step == 0)
			metadata_fetch(job);
		return;
	}
	job_set_state(job, job->failed ? JOB_FAILED : JOB_DONE);
}

void
job_sync_start(struct job *job)
{
	if (job->upload_timer != NULL)
		event_del(job->upload_timer);
	if (job->have_result && !job->failed)
		exit_from_result(job);
	if (job_needs_storage(job) && job->env.s3 == NULL &&
	    (job->spec.logs_url != NULL || job->spec.metadata_url != NULL))
		log_warn(job->prefix, "no S3 datastore configured: the logs and "
				      "metadata are not stored");
	sync_step(job);
}
