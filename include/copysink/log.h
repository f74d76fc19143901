/*
 * log.h - one line per event, logfmt or JSON, on stderr
 *
 * Messages follow PostgreSQL's style: lower case, no trailing period, identifiers in double
 * quotes. Fields are extra key=value pairs given as a printf-style suffix by the caller.
 */
#ifndef COPYSINK_LOG_H
#define COPYSINK_LOG_H

#include <stdbool.h>

typedef enum cs_log_level {
	CS_LOG_DEBUG,
	CS_LOG_INFO,
	CS_LOG_WARNING,
	CS_LOG_ERROR,
} cs_log_level_t;

/* Configure the logger: format "logfmt" or "json", level "debug".."error".
 * @returns 0, or -1 when a name is unknown (the previous setting stays). Main thread only,
 * before other threads log. */
int cs_log_setup(const char *format, const char *level);

/* With `on`, every line starts by clearing the terminal's current line, where a progress bar
 * (copysink replay on a terminal) may stand. */
void cs_log_clear_line(bool on);

/* True when messages of `level` are written. */
bool cs_log_enabled(cs_log_level_t level);

/* Log a message at `level`. Thread-safe: each call writes one whole line. */
void cs_log(cs_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Log a message with structured fields: `fields` is a NULL-terminated list of key, value
 * string pairs, e.g. cs_log_fields(CS_LOG_INFO, "batch committed", "rows", "10000", NULL).
 */
void cs_log_fields(cs_log_level_t level, const char *msg, ...);

#define cs_debug(...) cs_log(CS_LOG_DEBUG, __VA_ARGS__)
#define cs_info(...) cs_log(CS_LOG_INFO, __VA_ARGS__)
#define cs_warn(...) cs_log(CS_LOG_WARNING, __VA_ARGS__)
#define cs_error(...) cs_log(CS_LOG_ERROR, __VA_ARGS__)

#endif /* COPYSINK_LOG_H */
