/* The engine's one logger: a fixed line format on standard error, id prefixes,
 * control bytes escaped and registered secrets redacted. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define LOG_LINE_MAX 8192
#define LOG_SECRETS_MAX 16

static enum log_level current_level = LOG_LEVEL_INFO;
static char *secrets[LOG_SECRETS_MAX];
static size_t nsecrets;

static const char *const level_names[] = {
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
};
_Static_assert(sizeof(level_names) / sizeof(level_names[0]) ==
		       LOG_LEVEL_DEBUG + 1,
	       "level_names covers every log level");

void
log_set_level(enum log_level level)
{
	current_level = level;
}

enum log_level
log_get_level(void)
{
	return current_level;
}

int
log_parse_level(const char *name, enum log_level *level)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			*level = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

void
log_add_secret(const char *secret)
{
	if (secret == NULL || *secret == '\0' || nsecrets == LOG_SECRETS_MAX)
		return;
	for (size_t i = 0; i < nsecrets; i++)
		if (strcmp(secrets[i], secret) == 0)
			return;
	char *copy = strdup(secret);
	if (copy != NULL)
		secrets[nsecrets++] = copy;
}

void
log_free_secrets(void)
{
	for (size_t i = 0; i < nsecrets; i++)
		free(secrets[i]);
	nsecrets = 0;
}

void
log_redact(char *buf)
{
	for (size_t i = 0; i < nsecrets; i++) {
		size_t len = strlen(secrets[i]);
		char *hit;

		while ((hit = strstr(buf, secrets[i])) != NULL) {
			memcpy(hit, "***", 3);
			memmove(hit + 3, hit + len, strlen(hit + len) + 1);
		}
	}
}

/* Copy src into dst, escaping bytes below 0x20 and DEL as \xNN so a hostile
 * server message cannot forge log lines or terminal escapes. */
static void
escape_controls(char *dst, size_t dstlen, const char *src)
{
	size_t o = 0;

	for (const unsigned char *p = (const unsigned char *)src;
	     *p != '\0' && o + 5 < dstlen; p++) {
		if (*p < 0x20 || *p == 0x7f) {
			o += (size_t)snprintf(dst + o, dstlen - o, "\\x%02x", *p);
		} else {
			dst[o++] = (char)*p;
		}
	}
	dst[o] = '\0';
}

void
log_vwrite(enum log_level level, const char *prefix, const char *fmt,
	   va_list ap)
{
	char raw[LOG_LINE_MAX], line[LOG_LINE_MAX], stamp[32];
	struct timespec ts;
	struct tm tm;

	if (level > current_level)
		return;
	vsnprintf(raw, sizeof(raw), fmt, ap);
	log_redact(raw);
	escape_controls(line, sizeof(line), raw);

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ mfmodal-engine %s%s%s %s\n", stamp,
		ts.tv_nsec / 1000000L, level_names[level],
		prefix != NULL ? " " : "", prefix != NULL ? prefix : "", line);
}

void
log_write(enum log_level level, const char *prefix, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(level, prefix, fmt, ap);
	va_end(ap);
}
