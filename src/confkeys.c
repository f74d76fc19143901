/*
 * confkeys.c - the worker's configuration keys: sections, names, types, defaults, ranges and
 * their checks; this table drives parsing, the environment, --help and printing
 */
#include "copysink/confkeys.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const char *check_topic(const char *value);
static const char *check_topic_or_empty(const char *value);
static const char *check_listen(const char *value);
static const char *check_not_empty(const char *value);
static const char *check_writers(const char *value);


/* The worker's own keys. This table drives parsing, the environment, --help and printing. */
const keydef_t cs_conf_keys[] = {
	{"postgres", "conninfo", KT_STRING, "", 0, 0, NULL, NULL, FIELD(pg_conninfo),
	 "libpq connection string or URI; empty = libpq's PG* environment variables"},
	{"postgres", "direct_copy", KT_ENUM, "on", 0, 0, "on|off", NULL, FIELD(pg_direct_copy),
	 "COPY a batch whose keys are all new straight into the table; off = always merge"},
	{"postgres", "temp_buffers_mb", KT_INT, "0", -1, 16384, NULL, NULL,
	 FIELD(pg_temp_buffers_mb),
	 "the session's temp_buffers (MB) for the staging tables; 0 = the server's setting, "
	 "-1 = twice max_bytes"},
	{"postgres", "staging", KT_ENUM, "session", 0, 0, "session|transaction", NULL,
	 FIELD(pg_staging),
	 "staging tables per connection, or per transaction (ON COMMIT DROP) for poolers in "
	 "transaction mode"},
	{"postgres", "writers", KT_STRING, "auto", 0, 0, NULL, check_writers, FIELD(pg_writers),
	 "connections writing at once (1 .. 16), each owning a share of the partitions and its "
	 "own batches (max_bytes is shared among them); auto = one per assigned partition, "
	 "up to 4"},
	{"batch", "max_rows", KT_INT, "10000", 1, 10000000, NULL, NULL, FIELD(batch_max_rows),
	 "write the batch once it holds this many entries"},
	{"batch", "max_bytes", KT_INT, "33554432", 1048576, 2147483648, NULL, NULL,
	 FIELD(batch_max_bytes), "write the batch once it holds this many bytes of COPY"},
	{"batch", "linger_ms", KT_INT, "200", 0, 600000, NULL, NULL, FIELD(batch_linger_ms),
	 "write the batch once its first entry has waited this long"},
	{"batch", "write_when_idle", KT_ENUM, "on", 0, 0, "off|on", NULL,
	 FIELD(batch_write_when_idle),
	 "on: write the batch at once when the writer is idle and no entry is waiting; "
	 "off: every batch waits for one of its bounds"},
	{"dlq", "topic", KT_STRING, "", 0, 0, NULL, check_topic_or_empty, FIELD(dlq_topic),
	 "dead-letter topic of every table; empty = <source topic>.dlq"},
	{"worker", "stats_interval_s", KT_INT, "10", 0, 86400, NULL, NULL, FIELD(stats_interval_s),
	 "period of the stats log line in seconds; 0 = off"},
	{"worker", "shutdown_grace_ms", KT_INT, "20000", 0, 3600000, NULL, NULL,
	 FIELD(shutdown_grace_ms), "time to write the pending batch after SIGTERM"},
	{"worker", "retry_backoff_ms", KT_INT, "200", 1, 600000, NULL, NULL,
	 FIELD(retry_backoff_ms),
	 "first delay before a retry after PostgreSQL or Kafka failed, doubled each time"},
	{"worker", "retry_backoff_max_ms", KT_INT, "10000", 1, 3600000, NULL, NULL,
	 FIELD(retry_backoff_max_ms), "longest delay before a retry"},
	{"worker", "fetch_wake", KT_ENUM, "on", 0, 0, "on|off", NULL, FIELD(worker_fetch_wake),
	 "fetch again as soon as the prefetch queue has room or a partition is resumed, not up "
	 "to 1 s later"},
	{"worker", "max_message_bytes", KT_INT, "16777216", 1024, 1073741824, NULL, NULL,
	 FIELD(max_message_bytes), "larger message values are dead-lettered unread"},
	{"worker", "log_format", KT_ENUM, "logfmt", 0, 0, "logfmt|json", NULL, FIELD(log_format),
	 "format of the log lines on stderr"},
	{"worker", "log_level", KT_ENUM, "info", 0, 0, "debug|info|warning|error", NULL,
	 FIELD(log_level), "least severe level logged"},
	{"http", "listen", KT_STRING, "127.0.0.1:9187", 0, 0, NULL, check_listen,
	 FIELD(http_listen), "host:port of /metrics, /healthz and /readyz; empty = off"},
	{"table", "topic", KT_STRING, NULL, 0, 0, NULL, check_topic, NO_FIELD,
	 "source topic (default: the table name); one table per topic"},
	{"table", "on_conflict", KT_ENUM, NULL, 0, 0, "update|skip|none", NULL, NO_FIELD,
	 "update: last write wins, skip: first write wins, none: insert-only (tables without key)"},
	{"table", "schema", KT_STRING, "public", 0, 0, NULL, cs_conf_check_identifier, NO_FIELD,
	 "schema of the table"},
	{"table", "dim", KT_INT, "384", 1, 1000000000, NULL, NULL, NO_FIELD,
	 "dimension of the embedding columns; above 16000 only for sparsevec"},
	{"table", "dlq_topic", KT_STRING, "", 0, 0, NULL, check_topic_or_empty, NO_FIELD,
	 "dead-letter topic of this table; empty = the [dlq] setting"},
	{"table", "columns", KT_STRING, NULL, 0, 0, NULL, check_not_empty, NO_FIELD,
	 "\"name type [not null], ...\"; required unless NAME is built in"},
	{"table", "key", KT_STRING, "", 0, 0, NULL, NULL, NO_FIELD,
	 "conflict key columns, \"a, b\", with `columns`; empty = insert-only"},
	/* embeddings and the pgvector extension (docs/FORMAT.md, docs/OPERATIONS.md) */
	{"postgres", "create_extension", KT_ENUM, "off", 0, 0, "off|on", NULL,
	 FIELD(pg_create_extension),
	 "on: migrate runs CREATE EXTENSION vector (superuser only) when a table needs pgvector "
	 "and the database lacks it; off: migrate says what a superuser must run"},
	{"table", "embedding_type", KT_ENUM, "auto", 0, 0, "auto|vector|halfvec|sparsevec|real[]",
	 NULL, NO_FIELD,
	 "type of the columns of type `embedding`; auto: the column's when the table exists, "
	 "else vector with pgvector in the database, else real[]"},
};

_Static_assert(sizeof(cs_conf_keys) / sizeof(cs_conf_keys[0]) == CS_CONF_NKEYS,
	       "CS_CONF_NKEYS in confkeys.h must count the keys");
const int cs_conf_nkeys = CS_CONF_NKEYS;


/* Sections other than [table NAME], in the order they are printed. */
const char *const cs_conf_sections[] = {"kafka", "postgres", "batch", "dlq",
						     "worker", "http"};

_Static_assert(sizeof(cs_conf_sections) / sizeof(cs_conf_sections[0]) == CS_CONF_NSECTIONS,
	       "CS_CONF_NSECTIONS in confkeys.h must count the sections");
const int cs_conf_nsections = CS_CONF_NSECTIONS;

/* True when s is a plain SQL identifier: [A-Za-z_][A-Za-z0-9_]*, at most 63 bytes. */
bool cs_conf_is_identifier(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= CS_MAX_NAME || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
			return false;
	return true;
}

/* A Kafka topic name: 1 to 249 of [A-Za-z0-9._-], not "." or "..". */
static const char *check_topic(const char *value)
{
	size_t n = strlen(value);

	if (n == 0)
		return "a topic name cannot be empty";
	if (n >= CS_MAX_TOPIC)
		return "a topic name is at most 249 bytes";
	if (strcmp(value, ".") == 0 || strcmp(value, "..") == 0)
		return "\".\" and \"..\" are not topic names";
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)value[i]) || strchr("._-", value[i]) != NULL))
			return "a topic name takes only letters, digits, '.', '_' and '-'";
	return NULL;
}

/* A topic name or "" (use the default). */
static const char *check_topic_or_empty(const char *value)
{
	return value[0] == '\0' ? NULL : check_topic(value);
}

/* An SQL identifier. */
const char *cs_conf_check_identifier(const char *value)
{
	return cs_conf_is_identifier(value) ? NULL : "expected an identifier ([A-Za-z_][A-Za-z0-9_]*, "
					     "at most 63 bytes)";
}

/* "auto" or a whole number of writers from 1 to 16 */
static const char *check_writers(const char *value)
{
	char *end;
	long n;

	if (strcmp(value, "auto") == 0)
		return NULL;
	errno = 0;
	n = strtol(value, &end, 10);
	if (end == value || *end != '\0' || errno != 0 || !isdigit((unsigned char)value[0]) ||
	    n < 1 || n > CS_WRITERS_MAX)
		return "expected auto or a number of writers from 1 to 16";
	return NULL;
}

/* "" (off) or host:port with a port from 1 to 65535. */
static const char *check_listen(const char *value)
{
	const char *colon = strrchr(value, ':');
	char *end;
	long port;

	if (value[0] == '\0')
		return NULL;
	if (colon == NULL || colon[1] == '\0')
		return "expected host:port";
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || !isdigit((unsigned char)colon[1]) || port < 1 ||
	    port > 65535)
		return "expected host:port with a port from 1 to 65535";
	return NULL;
}

/* Anything but "". */
static const char *check_not_empty(const char *value)
{
	return value[0] == '\0' ? "cannot be empty" : NULL;
}
