#ifndef MFMODAL_LOGSINK_H
#define MFMODAL_LOGSINK_H

/* A task's output: lines assembled from the chunks SandboxGetLogs delivers,
 * decorated in Metaflow's mflog format, relayed to the engine's stdout and
 * stderr, and kept for upload as <attempt>.task_stdout.log and
 * <attempt>.task_stderr.log.  The kept lines go to an unlinked temporary
 * file (in TMPDIR, else /tmp), so a task's output costs disk, not memory. */

#include <stddef.h>
#include <stdio.h>

struct logsink;

/* prefix: "[job ID]" for lines relayed in batch mode, or NULL.  relay_out and
 * relay_err receive the relayed lines (NULL: not relayed).  Borrowed. */
struct logsink *logsink_new(const char *prefix, FILE *relay_out,
			    FILE *relay_err);
void logsink_free(struct logsink *sink);

/* Take output of fd (1 stdout, 2 stderr) produced at timestamp (Unix seconds;
 * 0 when unknown).  Invalid UTF-8 is replaced by U+FFFD. */
void logsink_write(struct logsink *sink, int fd, const char *data, size_t len,
		   double timestamp);
/* End a stream: a last line without a newline is completed. */
void logsink_finish(struct logsink *sink, int fd);

/* A malloc'd copy of the stored mflog text of fd (the caller frees it), or
 * NULL when out of memory.  For tests and small logs. */
char *logsink_content(struct logsink *sink, int fd, size_t *len);
/* Copy the stored mflog text of fd into the file path (created or
 * truncated).  Returns 0 or -1 with errno set. */
int logsink_snapshot(struct logsink *sink, int fd, const char *path);
/* Counts every stored line, so a caller can tell whether anything changed. */
unsigned long logsink_lines(const struct logsink *sink, int fd);
size_t logsink_bytes(const struct logsink *sink);

/* Format one mflog line (without newline) into out; returns its length.
 * Exposed for tests. */
size_t logsink_format_mflog(char *out, size_t outlen, double timestamp,
			    const char *source, const char *id,
			    const char *text, size_t textlen);

#endif
