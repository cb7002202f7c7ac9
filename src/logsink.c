/* Task output: line assembly, mflog decoration, relay and storage. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "log.h"
#include "logsink.h"
#include "util.h"

/* Metaflow's mflog source name for output of the task itself. */
#define MFLOG_TASK_SOURCE "task"

struct logstream {
	struct evbuffer *partial; /* the line being assembled */
	double partial_ts;        /* timestamp of its first chunk */
	int spool;                /* mflog lines, each ending in '\n'; -1 if none */
	size_t spooled;           /* bytes in spool */
	unsigned long lines;
	unsigned char utf8_pending[4]; /* a character split across chunks */
	size_t utf8_npending;
};

struct logsink {
	char *prefix;
	FILE *relay[3];
	struct logstream streams[3]; /* indexed by fd: 1 and 2 */
	size_t bytes;
};

struct logsink *
logsink_new(const char *prefix, FILE *relay_out, FILE *relay_err)
{
	struct logsink *sink = calloc(1, sizeof(*sink));

	if (sink == NULL)
		return NULL;
	sink->prefix = prefix != NULL ? strdup(prefix) : NULL;
	sink->relay[1] = relay_out;
	sink->relay[2] = relay_err;
	for (int fd = 1; fd <= 2; fd++) {
		sink->streams[fd].spool = -1;
		sink->streams[fd].partial = evbuffer_new();
		if (sink->streams[fd].partial == NULL) {
			logsink_free(sink);
			return NULL;
		}
	}
	return sink;
}

void
logsink_free(struct logsink *sink)
{
	if (sink == NULL)
		return;
	for (int fd = 1; fd <= 2; fd++) {
		if (sink->streams[fd].partial != NULL)
			evbuffer_free(sink->streams[fd].partial);
		if (sink->streams[fd].spool >= 0)
			close(sink->streams[fd].spool);
	}
	free(sink->prefix);
	free(sink);
}

size_t
logsink_format_mflog(char *out, size_t outlen, double timestamp,
		     const char *source, const char *id, const char *text,
		     size_t textlen)
{
	struct timespec ts;
	struct tm tm;
	char stamp[40];
	int n;

	if (timestamp <= 0) {
		clock_gettime(CLOCK_REALTIME, &ts);
	} else {
		ts.tv_sec = (time_t)timestamp;
		ts.tv_nsec = (long)((timestamp - (double)ts.tv_sec) * 1e9);
	}
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	/* [MFLOG|0|<UTC time with microseconds>Z|<source>|<id>]<text>, the
	 * format of metaflow.mflog.decorate() (version 0). */
	n = snprintf(out, outlen, "[MFLOG|0|%s.%06ldZ|%s|%s]%.*s", stamp,
		     ts.tv_nsec / 1000, source, id, (int)textlen, text);
	return n < 0 ? 0 : (size_t)n < outlen ? (size_t)n : outlen - 1;
}

/* Length of the valid UTF-8 sequence at p (1 to 4), or 0 when invalid, or
 * -1 when it may be valid but is cut off at the end of the buffer. */
static int
utf8_sequence(const unsigned char *p, size_t left)
{
	int n;
	unsigned char c = p[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	for (int i = 1; i < n; i++) {
		if ((size_t)i >= left)
			return -1;
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	}
	/* overlong forms, surrogates and code points past U+10FFFF */
	if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f) ||
	    (c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] > 0x8f))
		return 0;
	return n;
}

static int
write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Open the spool of st on first use: a temporary file, unlinked at once. */
static int
spool_open(struct logstream *st)
{
	const char *dir = getenv("TMPDIR");
	char path[512];

	if (st->spool >= 0)
		return 0;
	snprintf(path, sizeof(path), "%s/mfmodal-spool-XXXXXX",
		 dir != NULL && *dir ? dir : "/tmp");
	st->spool = mkstemp(path);
	if (st->spool < 0) {
		log_error(NULL, "cannot create a log spool in %s: %s; the task's "
				"output is relayed but not stored",
			  path, strerror(errno));
		return -1;
	}
	unlink(path);
	return 0;
}

static void
emit_line(struct logsink *sink, int fd, const char *text, size_t len,
	  double timestamp)
{
	struct logstream *st = &sink->streams[fd];
	char id[37];
	char head[128];
	size_t headlen;

	if (util_uuid4(id) != 0)
		util_strlcpy(id, "0", sizeof(id));
	headlen = logsink_format_mflog(head, sizeof(head), timestamp,
				       MFLOG_TASK_SOURCE, id, "", 0);
	if (spool_open(st) == 0) {
		/* One write per line keeps the spool whole at line ends. */
		if (write_all(st->spool, head, headlen) != 0 ||
		    write_all(st->spool, text, len) != 0 ||
		    write_all(st->spool, "\n", 1) != 0) {
			log_error(NULL, "writing the log spool failed: %s",
				  strerror(errno));
		} else {
			st->spooled += headlen + len + 1;
			st->lines++;
		}
	}
	sink->bytes += headlen + len + 1;

	FILE *out = sink->relay[fd];
	if (out != NULL) {
		/* The prefix goes after the mflog header, where Metaflow's
		 * runtime keeps it when it prints the line. */
		fwrite(head, 1, headlen, out);
		if (sink->prefix != NULL)
			fprintf(out, "%s ", sink->prefix);
		fwrite(text, 1, len, out);
		fputc('\n', out);
		fflush(out);
	}
}

static void
take_bytes(struct logsink *sink, int fd, const unsigned char *p, size_t len,
	   double timestamp)
{
	struct logstream *st = &sink->streams[fd];

	if (evbuffer_get_length(st->partial) == 0)
		st->partial_ts = timestamp;
	for (size_t i = 0; i < len;) {
		if (p[i] == '\n') {
			size_t n = evbuffer_get_length(st->partial);
			char *line = (char *)evbuffer_pullup(st->partial, -1);

			emit_line(sink, fd, n > 0 ? line : "", n, st->partial_ts);
			evbuffer_drain(st->partial, n);
			st->partial_ts = timestamp;
			i++;
			continue;
		}
		int n = utf8_sequence(p + i, len - i);

		if (n > 0) {
			evbuffer_add(st->partial, p + i, (size_t)n);
			i += (size_t)n;
		} else {
			/* U+FFFD for a byte that starts no valid character */
			evbuffer_add(st->partial, "\xef\xbf\xbd", 3);
			i++;
		}
	}
}

void
logsink_write(struct logsink *sink, int fd, const char *data, size_t len,
	      double timestamp)
{
	struct logstream *st;
	const unsigned char *p = (const unsigned char *)data;

	if (fd != 1 && fd != 2)
		return;
	st = &sink->streams[fd];
	/* Complete a character left over from the previous chunk first. */
	while (st->utf8_npending > 0 && len > 0) {
		unsigned char buf[4];
		size_t have = st->utf8_npending;

		memcpy(buf, st->utf8_pending, have);
		buf[have] = *p;
		int n = utf8_sequence(buf, have + 1);

		if (n == -1 && have + 1 < 4) {
			st->utf8_pending[st->utf8_npending++] = *p++;
			len--;
			continue;
		}
		st->utf8_npending = 0;
		take_bytes(sink, fd, buf, n > 0 ? have + 1 : have, timestamp);
		if (n > 0) {
			p++;
			len--;
		}
	}
	/* Keep a character cut off at the end for the next chunk. */
	size_t keep = 0;
	for (size_t back = 1; back <= 3 && back <= len; back++) {
		if (utf8_sequence(p + len - back, back) == -1) {
			keep = back;
			break;
		}
	}
	take_bytes(sink, fd, p, len - keep, timestamp);
	memcpy(st->utf8_pending, p + len - keep, keep);
	st->utf8_npending = keep;
}

void
logsink_finish(struct logsink *sink, int fd)
{
	struct logstream *st;

	if (fd != 1 && fd != 2)
		return;
	st = &sink->streams[fd];
	if (st->utf8_npending > 0) {
		take_bytes(sink, fd, st->utf8_pending, st->utf8_npending, 0);
		st->utf8_npending = 0;
	}
	if (evbuffer_get_length(st->partial) > 0)
		take_bytes(sink, fd, (const unsigned char *)"\n", 1, 0);
}

char *
logsink_content(struct logsink *sink, int fd, size_t *len)
{
	struct logstream *st = &sink->streams[fd];
	char *buf = malloc(st->spooled + 1);

	*len = 0;
	if (buf == NULL)
		return NULL;
	if (st->spool >= 0 &&
	    pread(st->spool, buf, st->spooled, 0) != (ssize_t)st->spooled) {
		free(buf);
		return NULL;
	}
	*len = st->spool >= 0 ? st->spooled : 0;
	buf[*len] = '\0';
	return buf;
}

int
logsink_snapshot(struct logsink *sink, int fd, const char *path)
{
	struct logstream *st = &sink->streams[fd];
	char buf[65536];
	int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	int rc = -1;

	if (out < 0)
		return -1;
	for (size_t off = 0; st->spool >= 0 && off < st->spooled;) {
		size_t want = st->spooled - off < sizeof(buf) ? st->spooled - off
							       : sizeof(buf);
		ssize_t n = pread(st->spool, buf, want, (off_t)off);

		if (n <= 0 || write_all(out, buf, (size_t)n) != 0)
			goto out;
		off += (size_t)n;
	}
	rc = 0;
out:
	if (close(out) != 0)
		rc = -1;
	return rc;
}

unsigned long
logsink_lines(const struct logsink *sink, int fd)
{
	return sink->streams[fd].lines;
}

size_t
logsink_bytes(const struct logsink *sink)
{
	return sink->bytes;
}
