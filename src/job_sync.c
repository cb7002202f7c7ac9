/* PACKAGE and SYNC: the job's traffic with the datastore, and the exit
 * status once the sandbox is over. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "job_internal.h"
#include "log.h"

int
job_needs_storage(const struct job *job)
{
	return job->spec.package_url != NULL || job->spec.logs_url != NULL ||
	       job->spec.metadata_url != NULL;
}

void
job_package_start(struct job *job)
{
	if (job->env.s3 == NULL) {
		job_fail(job, JOB_EXIT_FAILURE,
			 "the job names a code package at %s, but no S3 "
			 "datastore is configured",
			 job->spec.package_url);
		return;
	}
	job_set_state(job, JOB_RESOLVE);
}

void
job_logs_upload(struct job *job, int final)
{
	(void)job;
	(void)final;
}

/* Decide the exit status from the sandbox's result, and say why when the
 * end was abnormal. */
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
			snprintf(job->reason, sizeof(job->reason),
				 "the task in sandbox %s exited with status %d",
				 sb, job->exit_status);
		break;
	case MODAL__CLIENT__GENERIC_RESULT__GENERIC_STATUS__GENERIC_STATUS_TIMEOUT:
		job->exit_status = JOB_EXIT_TIMEOUT;
		snprintf(job->reason, sizeof(job->reason),
			 "sandbox %s timed out after %u s (Modal TIMEOUT); exit "
			 "status 124",
			 sb, job->spec.timeout);
		break;
	case MODAL__CLIENT__GENERIC_RESULT__GENERIC_STATUS__GENERIC_STATUS_TERMINATED:
		job->exit_status = JOB_EXIT_TERMINATED;
		snprintf(job->reason, sizeof(job->reason),
			 "sandbox %s was terminated by the platform (Modal "
			 "TERMINATED), possibly for running out of memory; "
			 "exit status 137%s%s",
			 sb, *exc ? ": " : "", exc);
		break;
	default:
		job->failed = 1;
		job->exit_status = JOB_EXIT_FAILURE;
		snprintf(job->reason, sizeof(job->reason),
			 "sandbox %s ended with Modal status %d%s%s", sb,
			 job->result_status, *exc ? ": " : "", exc);
		break;
	}
	if (job->exit_status != 0)
		log_error(job->prefix, "%s", job->reason);
}

void
job_sync_start(struct job *job)
{
	if (job->have_result && !job->failed)
		exit_from_result(job);
	job_logs_upload(job, 1);
	job_set_state(job, job->failed ? JOB_FAILED : JOB_DONE);
}
