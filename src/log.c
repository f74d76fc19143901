/*
 * log.c - one line per event, logfmt or JSON, on stderr
 */
#include "copysink/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const level_names[] = {"debug", "info", "warning", "error"};

static cs_log_level_t min_level = CS_LOG_INFO;
static bool json_format = false;
static volatile bool clear_line = false; /* a progress bar may be on the terminal's line */

int cs_log_setup(const char *format, const char *level)
{
	int found = -1;

	for (int i = 0; i < 4; i++)
		if (level != NULL && strcmp(level, level_names[i]) == 0)
			found = i;
	if (level != NULL && found < 0)
		return -1;
	if (format != NULL && strcmp(format, "json") != 0 && strcmp(format, "logfmt") != 0)
		return -1;
	if (found >= 0)
		min_level = (cs_log_level_t)found;
	if (format != NULL)
		json_format = strcmp(format, "json") == 0;
	return 0;
}

bool cs_log_enabled(cs_log_level_t level)
{
	return level >= min_level;
}

/* Append s to the line, quoted and escaped for the current format. */
static size_t put_quoted(char *line, size_t off, size_t size, const char *s)
{
	if (off + 1 >= size)
		return off;
	line[off++] = '"';
	for (; *s != '\0' && off + 8 < size; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			line[off++] = '\\';
			line[off++] = (char)c;
		} else if (c == '\n') {
			line[off++] = '\\';
			line[off++] = 'n';
		} else if (c < 0x20) {
			off += (size_t)snprintf(line + off, size - off, "\\u%04x", c);
		} else {
			line[off++] = (char)c;
		}
	}
	line[off++] = '"';
	line[off] = '\0';
	return off;
}

/* Append one key/value pair in the current format. */
static size_t put_field(char *line, size_t off, size_t size, const char *key, const char *value)
{
	int n;

	if (off + 4 >= size)
		return off;
	n = snprintf(line + off, size - off, json_format ? ",\"%s\":" : " %s=", key);
	if (n < 0 || (size_t)n >= size - off)
		return off;
	off += (size_t)n;
	if (!json_format && value[0] != '\0' && strpbrk(value, " \"=\\\n\t") == NULL) {
		n = snprintf(line + off, size - off, "%s", value);
		return n < 0 ? off : off + (size_t)n < size ? off + (size_t)n : size - 1;
	}
	return put_quoted(line, off, size, value);
}

/* Write one complete line with time, level, message and the fields of `ap`. */
static void emit(cs_log_level_t level, const char *msg, va_list ap)
{
	char line[8192], ts[40];
	struct timespec now;
	struct tm tm;
	size_t off = 0;
	const char *k, *v;

	if (clear_line && write(STDERR_FILENO, "\r\033[K", 4) < 0)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + strlen(ts), sizeof(ts) - strlen(ts), ".%03ldZ", now.tv_nsec / 1000000);
	if (json_format) {
		off = (size_t)snprintf(line, sizeof(line), "{\"time\":\"%s\",\"level\":\"%s\"", ts,
				       level_names[level]);
		off = put_field(line, off, sizeof(line), "msg", msg);
	} else {
		off = (size_t)snprintf(line, sizeof(line), "time=%s level=%s", ts,
				       level_names[level]);
		off = put_field(line, off, sizeof(line), "msg", msg);
	}
	while ((k = va_arg(ap, const char *)) != NULL) {
		v = va_arg(ap, const char *);
		off = put_field(line, off, sizeof(line), k, v ? v : "");
	}
	if (off + 3 > sizeof(line))
		off = sizeof(line) - 3;
	if (json_format)
		line[off++] = '}';
	line[off++] = '\n';
	/* one write() per line keeps lines whole when threads log at once */
	if (write(STDERR_FILENO, line, off) < 0)
		return;
}

void cs_log_clear_line(bool on)
{
	clear_line = on;
}

/* Helper so emit() can take the empty field list of cs_log(). */
static void emit_plain(cs_log_level_t level, const char *msg, ...)
{
	va_list ap;

	va_start(ap, msg);
	emit(level, msg, ap);
	va_end(ap);
}

void cs_log(cs_log_level_t level, const char *fmt, ...)
{
	char msg[4096];
	va_list ap;

	if (!cs_log_enabled(level))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	emit_plain(level, msg, NULL);
}

void cs_log_fields(cs_log_level_t level, const char *msg, ...)
{
	va_list ap;

	if (!cs_log_enabled(level))
		return;
	va_start(ap, msg);
	emit(level, msg, ap);
	va_end(ap);
}
