#ifndef MFMODAL_LOG_H
#define MFMODAL_LOG_H

#include <stdarg.h>

/* Levels in decreasing severity; a message is written when its level is at or
 * above the configured one (LOG_LEVEL_INFO by default). */
enum log_level {
	LOG_LEVEL_ERROR,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parse "error", "warn", "info" or "debug"; returns 0 or -1 on an unknown name. */
int log_parse_level(const char *name, enum log_level *level);

/* Register a string that must never reach the log, such as a token secret.
 * Every later line has each occurrence replaced by "***".  The logger keeps its
 * own copy. */
void log_add_secret(const char *secret);
/* Replace every registered secret in buf (NUL-terminated, edited in place). */
void log_redact(char *buf);
void log_free_secrets(void);

/* Write one line: "<time> <LEVEL> <prefix> <message>".  prefix is an id such
 * as "[conn 1]" or NULL.  Control bytes in the message are escaped. */
void log_write(enum log_level level, const char *prefix, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void log_vwrite(enum log_level level, const char *prefix, const char *fmt,
		va_list ap);

#define log_error(prefix, ...) log_write(LOG_LEVEL_ERROR, prefix, __VA_ARGS__)
#define log_warn(prefix, ...) log_write(LOG_LEVEL_WARN, prefix, __VA_ARGS__)
#define log_info(prefix, ...) log_write(LOG_LEVEL_INFO, prefix, __VA_ARGS__)
#define log_debug(prefix, ...)                                          \
	do {                                                            \
		if (log_get_level() >= LOG_LEVEL_DEBUG)                 \
			log_write(LOG_LEVEL_DEBUG, prefix, __VA_ARGS__); \
	} while (0)

#endif
