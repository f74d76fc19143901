/*
 * config.h - the worker's configuration: INI file, environment, command line
 *
 * Precedence: built-in defaults < file < environment (COPYSINK_*) < command line (-o k=v).
 * One declarative table of the worker's own keys (name, type, default, min, max, doc) drives
 * parsing, environment overrides, the --help text and the printed effective configuration.
 * [kafka] keys are passed to librdkafka as they are; [postgres] conninfo is a libpq conninfo.
 *
 * Environment mapping: COPYSINK_<SECTION>_<KEY>, upper case, with '.' written as '_':
 *   COPYSINK_BATCH_MAX_ROWS=5000              -> [batch] max_rows
 *   COPYSINK_KAFKA_BOOTSTRAP_SERVERS=k:9092   -> [kafka] bootstrap.servers ('_' becomes '.')
 *   COPYSINK_POSTGRES_CONNINFO=...            -> [postgres] conninfo
 *   COPYSINK_TABLE_MEMORY_ENTRIES_ON_CONFLICT=skip -> [table memory_entries] on_conflict
 */
#ifndef COPYSINK_CONFIG_H
#define COPYSINK_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "copysink/tablespec.h"

#define CS_MAX_TABLES 16

typedef struct cs_kv {
	char *key;   /* owned */
	char *value; /* owned */
} cs_kv_t;

typedef struct cs_config {
	char *path; /* file the config was read from (owned), NULL when none */

	/* [kafka]: passed through to librdkafka in file order (owned) */
	cs_kv_t *kafka;
	int nkafka;

	/* [postgres] */
	char *pg_conninfo; /* owned; may contain a password: never print it unmasked */
	char *pg_create_extension; /* owned; "off" (default) or "on": migrate may create pgvector */
	char *pg_direct_copy; /* owned; "on" (default) or "off": see cs_writer_set_direct() */
	int64_t pg_temp_buffers_mb; /* 0 (default) = the server's; -1 = 2 x batch_max_bytes */
	char *pg_writers; /* "auto" (default) or 1..CS_WRITERS_MAX: see cs_config_writers() */
	char *pg_staging; /* owned; "session" (default) or "transaction": cs_writer_set_staging() */

	/* [batch] */
	int64_t batch_max_rows;  /* default 10000 */
	int64_t batch_max_bytes; /* default 33554432: encoded COPY bytes held in one batch */
	int64_t batch_linger_ms; /* default 200 */
	char *batch_write_when_idle; /* owned; "on" (default) or "off": see the worker's loop */

	/* [dlq] */
	char *dlq_topic; /* owned; NULL or "" = "<source topic>.dlq" */

	/* [worker] */
	int64_t stats_interval_s;   /* default 10: period of the stats log line, 0 = off */
	int64_t shutdown_grace_ms;  /* default 20000: time to drain on SIGTERM */
	int64_t retry_backoff_ms;   /* default 200: first retry delay after an infrastructure error */
	int64_t retry_backoff_max_ms; /* default 10000 */
	int64_t max_message_bytes;  /* default 16777216: larger message values are dead-lettered */
	char *worker_fetch_wake;    /* owned; "on" (default) or "off": see fetchwake.h */
	char *log_format;           /* owned; "logfmt" (default) or "json" */
	char *log_level;            /* owned; "debug", "info" (default), "warning", "error" */

	/* [http] */
	char *http_listen; /* owned; "127.0.0.1:9187" by default, "" = off */

	/* [table NAME] sections, in file order */
	cs_tablespec_t tables[CS_MAX_TABLES];
	int ntables;
} cs_config_t;

/* Fill `cfg` with the defaults and no tables. */
void cs_config_init(cs_config_t *cfg);

#define CS_WRITERS_MAX 16     /* [postgres] writers */
#define CS_WRITERS_AUTO_MAX 4 /* writers = auto: one per assigned partition, up to this */

/* [postgres] writers as a number: N, or 0 for auto. */
int cs_config_writers(const cs_config_t *cfg);

/* Release everything `cfg` owns; it is back to the state after cs_config_init(). */
void cs_config_cleanup(cs_config_t *cfg);

/*
 * Load the configuration: defaults, then `path` (may be NULL: no file), then the COPYSINK_*
 * variables of `envp` (may be NULL), then `overrides` ("section.key=value", e.g.
 * "batch.max_rows=100" or "table.memory_entries.on_conflict=skip" or
 * "kafka.bootstrap.servers=h:9092"). `cfg` must have been initialised.
 * A [table NAME] section for a built-in name takes the built-in spec; other names must give
 * `columns` and may give `key` (see cs_tablespec_parse_columns). Keys of a table section:
 * topic (default NAME), on_conflict (update|skip; "none" only for tables without a key),
 * schema (default public), dim (default 384), dlq_topic, columns, key, embedding_type (default
 * auto; sets the emb_type of the columns that do not spell theirs).
 * @returns 0, or -1 with a message in errstr that names the file and line or the variable,
 *          e.g. "conf/x.ini:12: unknown key \"max_row\" in section [batch]".
 */
__attribute__((warn_unused_result)) int cs_config_load(cs_config_t *cfg, const char *path,
						       char *const *envp,
						       char *const *overrides, int noverrides,
						       char *errstr, size_t errstr_size);

/* Write the effective configuration as INI to `out`, secrets masked (password= in the
 * conninfo, and [kafka] keys containing "password" or "secret"). */
void cs_config_print(const cs_config_t *cfg, FILE *out);

/* Write the documentation of every key (section, name, default, range, one-line doc). */
void cs_config_help(FILE *out);

/* The table reading `topic`, or NULL. */
const cs_tablespec_t *cs_config_table_for_topic(const cs_config_t *cfg, const char *topic);

/* The dead-letter topic for entries from `spec`: its own, the [dlq] topic, or topic + ".dlq".
 * Writes into buf and returns it. */
const char *cs_config_dlq_topic(const cs_config_t *cfg, const cs_tablespec_t *spec, char *buf,
				size_t size);

#endif /* COPYSINK_CONFIG_H */
