/*
 * writer.c - one batch, one PostgreSQL transaction: COPY into staging, merge, offsets, commit
 */
#include "copysink/writer.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "copysink/log.h"
#include "copysink/schema.h"

#define SQL_MAX 16384
#define COPY_CHUNK (256 * 1024) /* bytes per PQputCopyData call */
#define PING_TIMEOUT_MS 2000    /* cs_writer_ping: the longest wait for an answer */
#define PING_CONNECT_TIMEOUT "2" /* its connect_timeout (s) unless the conninfo sets one */

/*
 * The statements of one table, built once per connection from its spec and the catalog.
 *
 * The staging table has the spec's columns and four of its own, sent with every row:
 * copysink_partition and copysink_offset (where the row's entry came from), copysink_op
 * (cs_row_op_t: upsert, delete then insert, delete) and copysink_collapsed (the row replaced
 * an earlier version of its key inside the batch). Where the target has the columns
 * copysink_partition and copysink_offset (`copysink migrate` adds them to keyed tables), they
 * record the entry each row holds, and no statement lets an entry overwrite or delete a row
 * that holds a later entry of the same partition: a replay never moves a row backwards.
 */
typedef struct table_sql {
	char copy[SQL_MAX];        /* COPY staging (cols, source) FROM STDIN (FORMAT binary) */
	char direct[SQL_MAX];      /* COPY target (cols[, source]) FROM STDIN (FORMAT binary) */
	char del[SQL_MAX];         /* DELETE the keys of delete and replace rows */
	char merge[SQL_MAX];       /* INSERT ... ON CONFLICT for rows not collapsed */
	char merge_force[SQL_MAX]; /* the same for collapsed rows (empty: merge covers them) */
	char create[SQL_MAX];      /* CREATE TEMP TABLE staging (build_create) */
	char probe[SQL_MAX];       /* does one of PROBE_KEYS keys exist (empty: not probed) */
	int nkeys;                 /* key columns, parameters of each probed key */
	char truncate[128];        /* TRUNCATE staging, between bisection steps */
	bool has_source;           /* the target has copysink_partition and copysink_offset */
	bool staged;               /* the staging table exists (session: since connect; transaction:
				    * in the current transaction, at its top level) */
	/* The direct path: a batch of upserts whose keys are all new is COPYed straight into the
	 * target, which costs about half of COPY into staging plus merge. A batch that meets an
	 * existing key fails early with a unique violation, is rolled back to the savepoint and
	 * takes the staging path; after such a failure the next direct_skip batches go straight to
	 * staging, direct_skip doubling with every failure (up to DIRECT_SKIP_MAX) and falling back
	 * to 0 after a success. */
	int direct_skip;
	int direct_backoff;
} table_sql_t;

#define DIRECT_SKIP_MAX 64
/* Keys of a batch (its first, middle and last row) looked up before the direct COPY: a batch
 * of updates then merges at once instead of sending its whole COPY for a unique violation
 * at the first row (measured: every update run began with failed direct COPYs, about a
 * batch's write time each, at batches 1, 3, 6, 11, 20 of each writer as the backoff grew).
 * One round trip and three index lookups per batch of new keys. */
#define PROBE_KEYS 3

/* The staging tables' names: copysink_stage_N for the session's tables, copysink_xstage_N for
 * those of one transaction. Apart, so that a session's tables left on a pooled server
 * connection (by a worker with staging = session behind the pooler) never meet a transaction's
 * CREATE. */
#define STAGE_SESSION "copysink_stage_"
#define STAGE_XACT "copysink_xstage_"

#define SOURCE_COLS "copysink_partition, copysink_offset"
#define STAGE_EXTRA_COLS SOURCE_COLS ", copysink_op, copysink_collapsed"
#define STAGE_EXTRA_FIELDS 4

struct cs_writer {
	char *conninfo;
	char *group_id;
	cs_tablespec_t *specs;
	int nspecs;
	PGconn *conn;
	table_sql_t *sql;
	cs_writer_table_stats_t *stats;
	cs_buf_t copybuf; /* COPY data on its way, up to about COPY_CHUNK bytes */
	bool direct;      /* try the direct path (try_direct) */
	bool key_order;   /* merge rows in key order (cs_writer_set_key_order) */
	bool xact_staging; /* staging tables per transaction (cs_writer_set_staging) */
	int64_t temp_buffers_kb; /* SET temp_buffers at connect; 0 = the server's */
	char offsets_arrays[5][SQL_MAX]; /* store_offsets(): its array parameters */
	/* the SQLSTATE and message of the last failed statement */
	char sqlstate[6];
	char message[1024];
};

static const char copy_header[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
static const char copy_trailer[2] = {'\377', '\377'};

cs_writer_t *cs_writer_new(const char *conninfo, cs_tablespec_t *specs, int nspecs,
			   const char *group_id)
{
	cs_writer_t *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return NULL;
	w->conninfo = strdup(conninfo);
	w->group_id = strdup(group_id);
	w->sql = calloc((size_t)nspecs + 1, sizeof(*w->sql));
	w->stats = calloc((size_t)nspecs + 1, sizeof(*w->stats));
	if (w->conninfo == NULL || w->group_id == NULL || w->sql == NULL || w->stats == NULL) {
		cs_writer_destroy(w);
		return NULL;
	}
	cs_buf_init(&w->copybuf);
	w->specs = specs;
	w->nspecs = nspecs;
	w->direct = true;
	return w;
}

void cs_writer_set_direct(cs_writer_t *w, bool on)
{
	w->direct = on;
}

void cs_writer_set_key_order(cs_writer_t *w, bool on)
{
	w->key_order = on;
}

void cs_writer_set_staging(cs_writer_t *w, cs_writer_staging_t staging)
{
	w->xact_staging = staging == CS_WRITER_STAGING_TRANSACTION;
}

void cs_writer_set_temp_buffers(cs_writer_t *w, int64_t kb)
{
	w->temp_buffers_kb = kb;
}

void cs_writer_destroy(cs_writer_t *w)
{
	if (w == NULL)
		return;
	cs_writer_disconnect(w);
	free(w->conninfo);
	free(w->group_id);
	free(w->sql);
	free(w->stats);
	cs_buf_cleanup(&w->copybuf);
	free(w);
}

void cs_writer_disconnect(cs_writer_t *w)
{
	if (w->conn != NULL)
		PQfinish(w->conn);
	w->conn = NULL;
}

cs_err_t cs_writer_classify(const char *sqlstate)
{
	if (sqlstate == NULL || sqlstate[0] == '\0')
		return CS_ERR_RETRIABLE;
	if (strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0 ||
	    strcmp(sqlstate, "54000") == 0)
		return CS_ERR_DATA;
	if (strncmp(sqlstate, "08", 2) == 0 || strcmp(sqlstate, "40001") == 0 ||
	    strcmp(sqlstate, "40P01") == 0 || strncmp(sqlstate, "53", 2) == 0 ||
	    strncmp(sqlstate, "57P", 3) == 0 || strncmp(sqlstate, "58", 2) == 0 ||
	    strcmp(sqlstate, "55P03") == 0 ||
	    strcmp(sqlstate, "57014") == 0 || /* statement timeout or cancelled by an operator */
	    strcmp(sqlstate, "25006") == 0)   /* a read-only server: a standby after a failover */
		return CS_ERR_RETRIABLE;
	return CS_ERR_FATAL;
}

/* Remember the error of `res` (or of the connection) and return its class. A broken
 * connection is always retriable, whatever the result says. The message is never empty. */
static cs_err_t note_error(cs_writer_t *w, PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	snprintf(w->sqlstate, sizeof(w->sqlstate), "%s", state ? state : "");
	cs_schema_error_text(w->conn, res, w->message, sizeof(w->message));
	if (PQstatus(w->conn) != CONNECTION_OK)
		return CS_ERR_RETRIABLE;
	return cs_writer_classify(state);
}

/* Remember an error of the writer's own (no statement failed) and return `err`. */
static cs_err_t own_error(cs_writer_t *w, cs_err_t err, const char *message)
{
	w->sqlstate[0] = '\0';
	snprintf(w->message, sizeof(w->message), "%s", message);
	return err;
}

/* Run a command expecting COMMAND_OK or TUPLES_OK; on success *out gets the result when
 * wanted (the caller clears it). */
static cs_err_t run(cs_writer_t *w, const char *sql, PGresult **out)
{
	PGresult *res = PQexec(w->conn, sql);
	ExecStatusType st = PQresultStatus(res);
	cs_err_t err = CS_OK;

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		err = note_error(w, res);
	if (err == CS_OK && out != NULL) {
		*out = res;
		return CS_OK;
	}
	PQclear(res);
	return err;
}

/* Append printf output to buf of size SQL_MAX; @returns -1 when it does not fit. */
static int add(char *buf, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int add(char *buf, size_t *len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf + *len, SQL_MAX - *len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= SQL_MAX - *len)
		return -1;
	*len += (size_t)n;
	return 0;
}

/* Append the spec's quoted column list, each prefixed by `prefix`, separated by commas. */
static int add_columns(char *buf, size_t *len, const cs_tablespec_t *spec, const char *prefix,
		       bool keys_only)
{
	char q[2 * CS_MAX_NAME + 3];
	bool first = true;

	for (int i = 0; i < spec->ncols; i++) {
		if (keys_only && !spec->cols[i].in_key)
			continue;
		cs_schema_quote(q, sizeof(q), spec->cols[i].name);
		if (add(buf, len, "%s%s%s", first ? "" : ", ", prefix, q) != 0)
			return -1;
		first = false;
	}
	return 0;
}

/* "No later entry of the same partition in the row": the guard of every write when the
 * target records its rows' source. `newer` compares with > (may write) or >= (collapsed rows,
 * which write unless the row already holds this very entry). */
static int add_guard(char *buf, size_t *len, const char *row, const char *entry, const char *cmp)
{
	return add(buf, len,
		   "NOT COALESCE(%s.copysink_partition = %s.copysink_partition AND "
		   "%s.copysink_offset %s %s.copysink_offset, false)",
		   row, entry, row, cmp, entry);
}

/* The ON CONFLICT clause: DO NOTHING, or DO UPDATE of the update columns where one of them
 * changed (json columns compared as text, json having no equality operator) and, with source
 * columns, the row holds no later entry. A collapsed row (`force`) is written whenever the
 * guard allows, so that its source moves on even when its final values equal the row's: an
 * older version of the key, replayed later, must find the newer offset. */
static int add_conflict(char *buf, size_t *len, const cs_tablespec_t *spec,
			const cs_table_shape_t *shape, bool force)
{
	char q[2 * CS_MAX_NAME + 3];
	bool first = true;

	if (spec->on_conflict == CS_CONFLICT_NONE)
		return 0;
	if (add(buf, len, " ON CONFLICT (") != 0 || add_columns(buf, len, spec, "", true) != 0)
		return -1;
	if (spec->on_conflict == CS_CONFLICT_SKIP)
		return add(buf, len, ") DO NOTHING");
	if (add(buf, len, ") DO UPDATE SET ") != 0)
		return -1;
	for (int i = 0; i < spec->ncols; i++) {
		if (!spec->cols[i].update)
			continue;
		cs_schema_quote(q, sizeof(q), spec->cols[i].name);
		if (add(buf, len, "%s%s = EXCLUDED.%s", first ? "" : ", ", q, q) != 0)
			return -1;
		first = false;
	}
	if (first) /* no update columns: nothing can change */
		return add(buf, len, "%s = EXCLUDED.%s WHERE false", q, q);
	if (shape->has_source &&
	    add(buf, len, ", copysink_partition = EXCLUDED.copysink_partition, "
			  "copysink_offset = EXCLUDED.copysink_offset") != 0)
		return -1;
	if (shape->has_updated_at && add(buf, len, ", updated_at = now()") != 0)
		return -1;
	if (add(buf, len, " WHERE ") != 0)
		return -1;
	if (force)
		return add_guard(buf, len, "t", "EXCLUDED", ">=");
	if (add(buf, len, "(") != 0)
		return -1;
	first = true;
	for (int i = 0; i < spec->ncols; i++) {
		const char *cast;
		if (!spec->cols[i].update)
			continue;
		/* numeric as text too: 1.5 = 1.50, yet the later entry's scale must win */
		cast = spec->cols[i].enc == CS_ENC_JSON || spec->cols[i].type == CS_COL_NUMERIC
			       ? "::text"
			       : "";
		cs_schema_quote(q, sizeof(q), spec->cols[i].name);
		if (add(buf, len, "%st.%s%s IS DISTINCT FROM EXCLUDED.%s%s", first ? "" : " OR ", q,
			cast, q, cast) != 0)
			return -1;
		first = false;
	}
	if (add(buf, len, ")") != 0)
		return -1;
	return shape->has_source ? (add(buf, len, " AND ") != 0 ? -1
				    : add_guard(buf, len, "t", "EXCLUDED", ">"))
				 : 0;
}

/* INSERT INTO target SELECT ... FROM stage WHERE `filter` ON CONFLICT ... (with key order
 * on, the rows were COPYed into the staging table sorted by key: sort_by_key()) */
static int build_merge(char *buf, const cs_tablespec_t *spec, const cs_table_shape_t *shape,
		       const char *stage, const char *target, const char *filter, bool force)
{
	size_t len = 0;
	const char *source = shape->has_source ? ", " SOURCE_COLS : "";

	return add(buf, &len, "INSERT INTO %s AS t (", target) != 0 ||
			       add_columns(buf, &len, spec, "", false) != 0 ||
			       add(buf, &len, "%s) SELECT ", source) != 0 ||
			       add_columns(buf, &len, spec, "", false) != 0 ||
			       add(buf, &len, "%s FROM %s WHERE %s", source, stage, filter) != 0 ||
			       add_conflict(buf, &len, spec, shape, force) != 0
		       ? -1
		       : 0;
}

/* DELETE the rows whose keys the batch deletes (tombstones, and replace rows before their
 * insert). */
static int build_delete(char *buf, const cs_tablespec_t *spec, const cs_table_shape_t *shape,
			const char *stage, const char *target)
{
	char q[2 * CS_MAX_NAME + 3];
	size_t len = 0;

	if (add(buf, &len, "DELETE FROM %s AS t USING %s AS s WHERE s.copysink_op > 0", target,
		stage) != 0)
		return -1;
	for (int i = 0; i < spec->ncols; i++) {
		if (!spec->cols[i].in_key)
			continue;
		cs_schema_quote(q, sizeof(q), spec->cols[i].name);
		if (add(buf, &len, " AND t.%s = s.%s", q, q) != 0)
			return -1;
	}
	if (!shape->has_source)
		return 0;
	/* >=: a replace row carries its insert's offset, later than its delete's; a row already
	 * holding that very entry must not be deleted and inserted again */
	return add(buf, &len, " AND ") != 0 ? -1 : add_guard(buf, &len, "t", "s", ">=");
}

/* The CREATE of table t's staging table `stage` (unqualified): the spec's columns with their
 * types, taken from the target, and the four of its own. A session's table is created once
 * and emptied at every commit. A transaction's is dropped at its end (commit or rollback) and
 * created at the transaction's top level, never inside a savepoint that a data error rolls
 * back (the bisection would find it gone): write_table runs this where it holds the savepoint
 * copysink_table with nothing done in it yet, so the statement leaves it, creates the table
 * and takes the savepoint again, in one round trip. */
static int build_create(cs_writer_t *w, int t, const char *stage, const char *target)
{
	char *buf = w->sql[t].create;
	bool xact = w->xact_staging;
	size_t len = 0;

	if (add(buf, &len, "%sCREATE TEMP TABLE %s%s " CS_TOAST_WITH " ON COMMIT %s AS SELECT ",
		xact ? "RELEASE SAVEPOINT copysink_table; " : "", xact ? "" : "IF NOT EXISTS ",
		stage, xact ? "DROP" : "DELETE ROWS") != 0 ||
	    add_columns(buf, &len, &w->specs[t], "", false) != 0)
		return -1;
	return add(buf, &len,
		   ", 0::integer AS copysink_partition, 0::bigint AS copysink_offset, "
		   "0::smallint AS copysink_op, false AS copysink_collapsed FROM %s WITH NO DATA%s",
		   target, xact ? "; SAVEPOINT copysink_table" : "");
}

/* SELECT 1 FROM target WHERE (k1, k2) IN (($1, $2), ($3, $4), ...) LIMIT 1, the keys as binary
 * parameters whose types the server takes from the key columns; @returns the number of key
 * columns (buf empty when there are none), or -1 when it does not fit. */
static int build_probe(char *buf, const cs_tablespec_t *spec, const char *target)
{
	size_t len = 0;
	int nkeys = 0, param = 1;

	buf[0] = '\0';
	for (int i = 0; i < spec->ncols; i++)
		nkeys += spec->cols[i].in_key;
	if (nkeys == 0)
		return 0;
	if (add(buf, &len, "SELECT 1 FROM %s WHERE (", target) != 0 ||
	    add_columns(buf, &len, spec, "", true) != 0 || add(buf, &len, ") IN (") != 0)
		return -1;
	for (int k = 0; k < PROBE_KEYS; k++) {
		if (add(buf, &len, "%s(", k ? ", " : "") != 0)
			return -1;
		for (int c = 0; c < nkeys; c++)
			if (add(buf, &len, "%s$%d", c ? ", " : "", param++) != 0)
				return -1;
		if (add(buf, &len, ")") != 0)
			return -1;
	}
	return add(buf, &len, ") LIMIT 1") != 0 ? -1 : nkeys;
}

/* Build the CREATE, COPY, delete and merge statements of table t. */
static int build_sql(cs_writer_t *w, int t, const cs_table_shape_t *shape)
{
	const cs_tablespec_t *spec = &w->specs[t];
	table_sql_t *s = &w->sql[t];
	char schema[2 * CS_MAX_NAME + 3], name[2 * CS_MAX_NAME + 3], target[4 * CS_MAX_NAME + 8];
	char stage[64];
	bool split = shape->has_source && spec->on_conflict == CS_CONFLICT_UPDATE;
	size_t len = 0;

	cs_schema_quote(schema, sizeof(schema), spec->schema);
	cs_schema_quote(name, sizeof(name), spec->name);
	snprintf(target, sizeof(target), "%s.%s", schema, name);
	snprintf(stage, sizeof(stage), "%s%d", w->xact_staging ? STAGE_XACT : STAGE_SESSION, t);
	if (build_create(w, t, stage, target) != 0)
		return -1;
	snprintf(stage, sizeof(stage), "pg_temp.%s%d", w->xact_staging ? STAGE_XACT : STAGE_SESSION,
		 t);
	snprintf(s->truncate, sizeof(s->truncate), "TRUNCATE %s", stage);
	if (add(s->copy, &len, "COPY %s (", stage) != 0 ||
	    add_columns(s->copy, &len, spec, "", false) != 0 ||
	    add(s->copy, &len, ", " STAGE_EXTRA_COLS ") FROM STDIN (FORMAT binary)") != 0)
		return -1;
	len = 0;
	s->has_source = shape->has_source;
	if (add(s->direct, &len, "COPY %s (", target) != 0 ||
	    add_columns(s->direct, &len, spec, "", false) != 0 ||
	    add(s->direct, &len, "%s) FROM STDIN (FORMAT binary)",
		shape->has_source ? ", " SOURCE_COLS : "") != 0)
		return -1;
	if (spec->on_conflict != CS_CONFLICT_NONE &&
	    (s->nkeys = build_probe(s->probe, spec, target)) < 0)
		return -1;
	s->del[0] = s->merge_force[0] = '\0';
	if (spec->on_conflict != CS_CONFLICT_NONE &&
	    build_delete(s->del, spec, shape, stage, target) != 0)
		return -1;
	if (build_merge(s->merge, spec, shape, stage, target,
			split ? "copysink_op < 2 AND NOT copysink_collapsed" : "copysink_op < 2",
			false) != 0)
		return -1;
	if (split && build_merge(s->merge_force, spec, shape, stage, target,
				 "copysink_op < 2 AND copysink_collapsed", true) != 0)
		return -1;
	return 0;
}

/* Check every table, build its statements and, with staging = session, create its staging
 * table (with staging = transaction, each transaction that needs one creates it). */
static cs_err_t prepare_tables(cs_writer_t *w, char *errstr, size_t errstr_size)
{
	for (int t = 0; t < w->nspecs; t++) {
		cs_table_shape_t shape;
		cs_err_t err;

		if (cs_schema_resolve(w->conn, &w->specs[t], &shape, errstr, errstr_size) != 0)
			return PQstatus(w->conn) == CONNECTION_OK ? CS_ERR_FATAL : CS_ERR_RETRIABLE;
		if (build_sql(w, t, &shape) != 0) {
			snprintf(errstr, errstr_size, "table \"%s\": statement too long",
				 w->specs[t].name);
			return CS_ERR_FATAL;
		}
		w->sql[t].staged = false;
		if (w->xact_staging)
			continue;
		err = run(w, w->sql[t].create, NULL);
		if (err != CS_OK) {
			snprintf(errstr, errstr_size,
				 "could not create the staging table of \"%s\": %s", w->specs[t].name,
				 w->message);
			return err;
		}
		w->sql[t].staged = true;
	}
	/* the table missing is fatal; the connection lost while asking (a server restarting) is
	 * not */
	if (cs_schema_check_offsets(w->conn, errstr, errstr_size) != 0)
		return PQstatus(w->conn) == CONNECTION_OK ? CS_ERR_FATAL : CS_ERR_RETRIABLE;
	return CS_OK;
}

/* Open the connection: with the conninfo as it is, or with `connect_timeout` (seconds) as a
 * default that the conninfo overrides (libpq applies the keywords in order, and the conninfo
 * expands in the place of dbname). */
static PGconn *open_conn(const cs_writer_t *w, const char *connect_timeout)
{
	const char *const keys[] = {"connect_timeout", "dbname", NULL};
	const char *const values[] = {connect_timeout, w->conninfo, NULL};

	if (connect_timeout == NULL)
		return PQconnectdb(w->conninfo);
	return PQconnectdbParams(keys, values, 1);
}

/* cs_writer_connect, with a default connect_timeout (NULL: libpq's). */
static cs_err_t connect_with(cs_writer_t *w, const char *connect_timeout, char *errstr,
			     size_t errstr_size)
{
	cs_err_t err;

	if (w->conn != NULL && PQstatus(w->conn) == CONNECTION_OK)
		return CS_OK;
	cs_writer_disconnect(w);
	w->conn = open_conn(w, connect_timeout);
	if (w->conn == NULL) {
		snprintf(errstr, errstr_size, "could not connect to PostgreSQL: out of memory");
		return CS_ERR_RETRIABLE;
	}
	if (PQstatus(w->conn) != CONNECTION_OK) {
		char why[512];

		cs_schema_error_text(w->conn, NULL, why, sizeof(why));
		snprintf(errstr, errstr_size, "could not connect to PostgreSQL at \"%s:%s\": %s",
			 PQhost(w->conn) ? PQhost(w->conn) : "", PQport(w->conn) ? PQport(w->conn) : "",
			 why);
		cs_writer_disconnect(w);
		return CS_ERR_RETRIABLE;
	}
	cs_schema_quiet_notices(w->conn);
	if (w->temp_buffers_kb > 0 && !w->xact_staging) {
		char sql[64];

		/* before any temporary table of the session is touched, or PostgreSQL refuses it */
		snprintf(sql, sizeof(sql), "SET temp_buffers = '%lldkB'",
			 (long long)w->temp_buffers_kb);
		err = run(w, sql, NULL);
		if (err != CS_OK) {
			snprintf(errstr, errstr_size, "could not set temp_buffers: %s", w->message);
			cs_writer_disconnect(w);
			return err == CS_ERR_RETRIABLE ? CS_ERR_RETRIABLE : CS_ERR_FATAL;
		}
	}
	err = prepare_tables(w, errstr, errstr_size);
	if (err != CS_OK)
		cs_writer_disconnect(w);
	return err;
}

cs_err_t cs_writer_connect(cs_writer_t *w, char *errstr, size_t errstr_size)
{
	return connect_with(w, NULL, errstr, errstr_size);
}

/* Monotonic milliseconds. */
static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until the next result of the query sent can be read without blocking.
 * @returns 1 when it can, 0 when `deadline` passed first, -1 when the connection failed (the
 * cause noted). */
static int wait_result(cs_writer_t *w, int64_t deadline)
{
	for (;;) {
		int flush = PQflush(w->conn), n;
		struct pollfd pfd = {PQsocket(w->conn), POLLIN, 0};
		int64_t left;

		if (flush < 0)
			return (void)note_error(w, NULL), -1;
		if (flush == 0 && !PQisBusy(w->conn))
			return 1;
		left = deadline - mono_ms();
		if (left <= 0)
			return 0;
		if (flush > 0)
			pfd.events |= POLLOUT;
		n = poll(&pfd, 1, (int)left);
		if (n < 0 && errno != EINTR)
			return (void)own_error(w, CS_ERR_RETRIABLE, strerror(errno)), -1;
		if (n > 0 && (pfd.revents & (POLLIN | POLLERR | POLLHUP)) != 0 &&
		    PQconsumeInput(w->conn) != 1)
			return (void)note_error(w, NULL), -1;
	}
}

/*
 * "SELECT 1" on the open connection, answered within PING_TIMEOUT_MS or given up.
 *
 * Only a deadline on the client side bounds the wait when the server is gone or hung: a
 * statement_timeout runs on the server, TCP keepalives notice a dead peer only after
 * keepalives_idle + keepalives_count * keepalives_interval (the kernel's 2 h by default),
 * and tcp_user_timeout only once data is unacknowledged, both as the conninfo sets them. So
 * the query is sent in non-blocking mode (the send cannot block either) and poll() waits on
 * the socket. After a timeout the connection is left in non-blocking mode, so that PQfinish's
 * goodbye cannot block either.
 * @returns CS_OK, or CS_ERR_RETRIABLE with the cause in w->message; *timed_out tells a server
 * that did not answer from one that failed or closed the connection.
 */
static cs_err_t round_trip(cs_writer_t *w, bool *timed_out)
{
	int64_t deadline = mono_ms() + PING_TIMEOUT_MS;
	cs_err_t err = CS_OK;
	PGresult *res;
	int ready = -1;

	*timed_out = false;
	if (PQsetnonblocking(w->conn, 1) != 0 || PQsendQuery(w->conn, "SELECT 1") != 1) {
		(void)note_error(w, NULL);
		err = CS_ERR_RETRIABLE;
	} else {
		while ((ready = wait_result(w, deadline)) == 1 &&
		       (res = PQgetResult(w->conn)) != NULL) {
			if (PQresultStatus(res) != PGRES_TUPLES_OK && err == CS_OK) {
				(void)note_error(w, res);
				err = CS_ERR_RETRIABLE;
			}
			PQclear(res);
		}
		if (ready == 0) {
			*timed_out = true;
			return own_error(w, CS_ERR_RETRIABLE, "timeout");
		}
		if (ready < 0)
			err = CS_ERR_RETRIABLE;
	}
	if (PQsetnonblocking(w->conn, 0) != 0 && err == CS_OK) {
		(void)note_error(w, NULL);
		err = CS_ERR_RETRIABLE;
	}
	return err;
}

cs_err_t cs_writer_ping(cs_writer_t *w, char *errstr, size_t errstr_size)
{
	bool timed_out;

	if (w->conn == NULL || PQstatus(w->conn) != CONNECTION_OK)
		return connect_with(w, PING_CONNECT_TIMEOUT, errstr, errstr_size);
	if (round_trip(w, &timed_out) == CS_OK)
		return CS_OK;
	if (timed_out) {
		snprintf(errstr, errstr_size, "PostgreSQL at \"%s:%s\" did not answer within %d ms",
			 PQhost(w->conn) ? PQhost(w->conn) : "", PQport(w->conn) ? PQport(w->conn) : "",
			 PING_TIMEOUT_MS);
		cs_writer_disconnect(w);
		return CS_ERR_RETRIABLE;
	}
	/* the server closed the connection (a restart, pg_terminate_backend, an idle timeout): a
	 * new one tells whether PostgreSQL is there */
	cs_log_fields(CS_LOG_INFO, "PostgreSQL connection lost while idle, reconnecting", "error",
		      w->message, NULL);
	cs_writer_disconnect(w);
	return connect_with(w, PING_CONNECT_TIMEOUT, errstr, errstr_size);
}

cs_err_t cs_writer_stored_offset(cs_writer_t *w, const char *topic, int32_t partition,
				 int64_t *next, char *errstr, size_t errstr_size)
{
	char part[16];
	const char *params[3] = {w->group_id, topic, part};
	PGresult *res;
	cs_err_t err = CS_OK;

	*next = -1;
	err = cs_writer_connect(w, errstr, errstr_size);
	if (err != CS_OK)
		return err;
	snprintf(part, sizeof(part), "%d", (int)partition);
	res = PQexecParams(w->conn,
			   "SELECT next_offset FROM " CS_OFFSETS_TABLE
			   " WHERE group_id = $1 AND topic = $2 AND partition = $3",
			   3, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		err = note_error(w, res);
		snprintf(errstr, errstr_size, "could not read the stored offset of \"%s\" [%d]: %s",
			 topic, (int)partition, w->message);
	} else if (PQntuples(res) == 1) {
		*next = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	}
	PQclear(res);
	return err;
}

/* Run `sql` (a savepoint command) and report failure as the error's class. */
static cs_err_t savepoint(cs_writer_t *w, const char *sql)
{
	return run(w, sql, NULL);
}

/* How a row travels: to the staging table with its four fields, or straight to the target
 * with its source fields (when the target has them) or none. */
typedef enum { ROW_STAGE, ROW_DIRECT_SOURCE, ROW_DIRECT } row_form_t;

/* Append row r of the batch to the COPY buffer: the decoder's tuple with the fields of `form`
 * after it. */
static int put_row(cs_buf_t *out, const cs_batch_t *b, const cs_batch_table_t *tab,
		   const cs_batch_row_t *r, int ncols, row_form_t form)
{
	static const int extra[] = {[ROW_STAGE] = STAGE_EXTRA_FIELDS, [ROW_DIRECT_SOURCE] = 2,
				    [ROW_DIRECT] = 0};
	int nparts;
	const cs_batch_part_t *parts = cs_batch_parts(b, &nparts);

	if (cs_buf_put_u16(out, (uint16_t)(ncols + extra[form])) != 0 ||
	    cs_buf_append(out, tab->tuples.data + r->tuple_off + 2, r->tuple_len - 2) != 0)
		return -1;
	if (form == ROW_DIRECT)
		return 0;
	if (cs_buf_put_u32(out, 4) != 0 ||
	    cs_buf_put_u32(out, (uint32_t)parts[r->part].partition) != 0 ||
	    cs_buf_put_u32(out, 8) != 0 || cs_buf_put_u64(out, (uint64_t)r->offset) != 0)
		return -1;
	if (form == ROW_DIRECT_SOURCE)
		return 0;
	return cs_buf_put_u32(out, 2) != 0 || cs_buf_put_u16(out, r->op) != 0 ||
		       cs_buf_put_u32(out, 1) != 0 || cs_buf_append(out, r->collapsed ? "\1" : "\0", 1) != 0
		       ? -1
		       : 0;
}

/* Run one statement of the merge (skipped when empty), adding the rows it touched to *rows. */
static cs_err_t merge_step(cs_writer_t *w, const char *sql, uint64_t *rows)
{
	PGresult *res;
	cs_err_t err;

	if (sql[0] == '\0')
		return CS_OK;
	res = PQexec(w->conn, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		return (err = note_error(w, res)), PQclear(res), err;
	*rows += strtoull(PQcmdTuples(res), NULL, 10);
	PQclear(res);
	return CS_OK;
}

/* COPY the rows idx[0..n) of table t (`sql`: into staging or the target, rows of `form`), in
 * chunks of about COPY_CHUNK bytes. */
static cs_err_t copy_rows(cs_writer_t *w, cs_batch_t *b, int t, const size_t *idx, size_t n,
			  const char *sql, row_form_t form)
{
	const cs_batch_table_t *tab = cs_batch_table(b, t);
	PGresult *res = PQexec(w->conn, sql);
	cs_err_t err;

	if (PQresultStatus(res) != PGRES_COPY_IN)
		return (err = note_error(w, res)), PQclear(res), err;
	PQclear(res);
	cs_buf_reset(&w->copybuf);
	if (cs_buf_append(&w->copybuf, copy_header, sizeof(copy_header)) != 0)
		goto oom;
	for (size_t i = 0; i < n; i++) {
		if (put_row(&w->copybuf, b, tab, &tab->rows[idx[i]], w->specs[t].ncols, form) != 0)
			goto oom;
		if (w->copybuf.len >= COPY_CHUNK) {
			if (PQputCopyData(w->conn, w->copybuf.data, (int)w->copybuf.len) != 1)
				goto broken;
			cs_buf_reset(&w->copybuf);
		}
	}
	if (cs_buf_append(&w->copybuf, copy_trailer, sizeof(copy_trailer)) != 0)
		goto oom;
	if (PQputCopyData(w->conn, w->copybuf.data, (int)w->copybuf.len) != 1 ||
	    PQputCopyEnd(w->conn, NULL) != 1)
		goto broken;
	res = PQgetResult(w->conn);
	err = PQresultStatus(res) == PGRES_COMMAND_OK ? CS_OK : note_error(w, res);
	PQclear(res);
	while ((res = PQgetResult(w->conn)) != NULL)
		PQclear(res);
	return err;
oom:
	PQputCopyEnd(w->conn, "out of memory");
	while ((res = PQgetResult(w->conn)) != NULL)
		PQclear(res);
	return own_error(w, CS_ERR_FATAL, "out of memory");
broken:
	return note_error(w, NULL);
}

/* Session staging: the staging table that connecting created is not there (SQLSTATE 42P01 or
 * 3F000 from the COPY into it, whose only relation it is). This transaction runs on another
 * server connection than the one that created it: a pooler in transaction mode between the
 * worker and PostgreSQL (or one that resets sessions, DISCARD ALL), which every retry would
 * meet again. Names the cause and the cure, and stops the worker. */
static cs_err_t staging_lost(cs_writer_t *w, int t)
{
	char why[sizeof(w->message)];

	memcpy(why, w->message, sizeof(why));
	snprintf(w->message, sizeof(w->message),
		 "the staging table \"%s%d\" this connection created is gone: its transactions run "
		 "on other server connections, as behind a connection pooler in transaction mode "
		 "(PgBouncer pool_mode = transaction); set [postgres] staging = transaction "
		 "(%.300s)",
		 STAGE_SESSION, t, why);
	return CS_ERR_FATAL;
}

/* With staging = transaction, create table t's staging table in this transaction unless it
 * exists already. Called in write_table's savepoint copysink_table before anything ran in it
 * (build_create says why). A failure is never the rows' fault: a data class is made fatal. */
static cs_err_t ensure_staging(cs_writer_t *w, int t)
{
	cs_err_t err;

	if (w->sql[t].staged)
		return CS_OK;
	err = run(w, w->sql[t].create, NULL);
	w->sql[t].staged = err == CS_OK;
	return err == CS_ERR_DATA ? CS_ERR_FATAL : err;
}

/* COPY the rows idx[0..n) of table t into its staging table and run the merge: the deletes
 * first (only when the rows hold any), then the inserts. The rows deleted and merged count
 * only when every step succeeded: a failed attempt is rolled back by the caller. */
static cs_err_t copy_merge(cs_writer_t *w, cs_batch_t *b, int t, const size_t *idx, size_t n)
{
	const cs_batch_table_t *tab = cs_batch_table(b, t);
	size_t deletes = 0, collapsed = 0;
	uint64_t deleted = 0, merged = 0;
	cs_err_t err;

	for (size_t i = 0; i < n; i++) {
		deletes += tab->rows[idx[i]].op != CS_ROW_UPSERT;
		collapsed += tab->rows[idx[i]].collapsed;
	}
	err = copy_rows(w, b, t, idx, n, w->sql[t].copy, ROW_STAGE);
	/* 3F000: the session has no temporary schema at all (a server connection of a pool that
	 * never held a temporary table); 42P01: it has one, without this table */
	if (err == CS_ERR_FATAL && !w->xact_staging &&
	    (strcmp(w->sqlstate, "42P01") == 0 || strcmp(w->sqlstate, "3F000") == 0))
		return staging_lost(w, t);
	if (err == CS_OK && deletes > 0)
		err = merge_step(w, w->sql[t].del, &deleted);
	if (err == CS_OK)
		err = merge_step(w, w->sql[t].merge, &merged);
	if (err == CS_OK && collapsed > 0)
		err = merge_step(w, w->sql[t].merge_force, &merged);
	if (err == CS_OK) {
		w->stats[t].deleted += deleted;
		w->stats[t].merged += merged;
	}
	return err;
}

/* A row's key bytes, for sort_by_key(). */
typedef struct keyed {
	const unsigned char *key;
	size_t len, row;
} keyed_t;

static int keyed_cmp(const void *a, const void *b)
{
	const keyed_t *x = a, *y = b;
	int c = memcmp(x->key, y->key, x->len < y->len ? x->len : y->len);

	return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* Sort idx[0..n) by the rows' canonical key bytes. Writers that merge the same keys at once
 * (entries of one key in partitions of two writers) then lock them in one order and wait for
 * each other instead of deadlocking: the merge reads the staging table in the order the rows
 * were COPYed. Sorting here replaced an ORDER BY in the merge, which cost 16-20 % of the
 * update path (its sort of ~12 MB spilled out of work_mem; bench/results/sql_variants*.md:
 * rows COPYed in key order without ORDER BY, 0.97-0.99 of no order at all).
 * @returns 0, or -1 when out of memory. */
static int sort_by_key(cs_batch_t *b, int t, size_t *idx, size_t n)
{
	const cs_batch_table_t *tab = cs_batch_table(b, t);
	const unsigned char *keys = (const unsigned char *)cs_batch_keys(b)->data;
	keyed_t *k = malloc(n * sizeof(*k));

	if (k == NULL)
		return -1;
	for (size_t i = 0; i < n; i++)
		k[i] = (keyed_t){keys + tab->rows[idx[i]].key_off, tab->rows[idx[i]].key_len, idx[i]};
	qsort(k, n, sizeof(*k), keyed_cmp);
	for (size_t i = 0; i < n; i++)
		idx[i] = k[i].row;
	free(k);
	return 0;
}

/* Whether one of the batch's first, middle and last keys is in the target already.
 * @returns 1 when one is (or a key cannot be read: the batch merges), 0 when none is or the
 * lookup failed for a reason a retry would not change (then the savepoint is restored, the
 * direct COPY tried as without the lookup, and the table not probed again), -1 on an
 * infrastructure error (the batch is retried). */
static int probe_keys(cs_writer_t *w, cs_batch_t *b, int t, const size_t *idx, size_t n)
{
	const cs_batch_table_t *tab = cs_batch_table(b, t);
	const table_sql_t *s = &w->sql[t];
	const char *values[PROBE_KEYS * CS_MAX_COLUMNS];
	int lengths[PROBE_KEYS * CS_MAX_COLUMNS], formats[PROBE_KEYS * CS_MAX_COLUMNS];
	int np = 0, found;
	PGresult *res;

	for (int k = 0; k < PROBE_KEYS; k++) {
		const cs_batch_row_t *r = &tab->rows[idx[k == 0 ? 0 : k == 1 ? n / 2 : n - 1]];
		const unsigned char *p = (const unsigned char *)cs_batch_keys(b)->data + r->key_off;
		const unsigned char *end = p + r->key_len;

		/* the key bytes: each key column's binary COPY field, length first */
		for (int c = 0; c < s->nkeys; c++) {
			uint32_t flen;

			if (end - p < 4)
				return 1;
			flen = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
			if (flen == UINT32_MAX || flen > (size_t)(end - p - 4))
				return 1; /* a NULL key (never decoded) or a short one: no probe */
			values[np] = (const char *)p + 4;
			lengths[np] = (int)flen;
			formats[np++] = 1;
			p += 4 + flen;
		}
	}
	res = PQexecParams(w->conn, s->probe, np, NULL, values, lengths, formats, 0);
	if (PQresultStatus(res) == PGRES_TUPLES_OK) {
		found = PQntuples(res) > 0;
		PQclear(res);
		return found;
	}
	/* a lost connection, a shutdown, a lock or statement timeout: the batch is retried */
	if (note_error(w, res) == CS_ERR_RETRIABLE) {
		PQclear(res);
		return -1;
	}
	PQclear(res);
	cs_log_fields(CS_LOG_WARNING, "key lookup before the direct COPY failed: not used again",
		      "table", w->specs[t].name, "error", w->message, NULL);
	w->sql[t].probe[0] = '\0';
	return savepoint(w, "ROLLBACK TO SAVEPOINT copysink_table") == CS_OK ? 0 : -1;
}

/* Try the direct path for the rows idx[0..n) of table t, inside the table's savepoint:
 * @returns CS_OK when they were written (*done set), CS_OK with *done false when the staging
 * path must write them (not tried, or rolled back after a data error), or an infrastructure
 * error. */
static cs_err_t try_direct(cs_writer_t *w, cs_batch_t *b, int t, const size_t *idx, size_t n,
			   bool *done)
{
	const cs_batch_table_t *tab = cs_batch_table(b, t);
	table_sql_t *s = &w->sql[t];
	cs_err_t err;

	*done = false;
	if (s->direct_skip > 0) {
		s->direct_skip--;
		return CS_OK;
	}
	for (size_t i = 0; i < n; i++)
		if (tab->rows[idx[i]].op != CS_ROW_UPSERT)
			return CS_OK;
	if (s->probe[0] != '\0' && n > 0) {
		int found = probe_keys(w, b, t, idx, n);

		if (found < 0)
			return CS_ERR_RETRIABLE;
		if (found > 0)
			return CS_OK;
	}
	err = copy_rows(w, b, t, idx, n, s->direct, s->has_source ? ROW_DIRECT_SOURCE : ROW_DIRECT);
	if (err == CS_OK) {
		w->stats[t].merged += n;
		w->stats[t].direct = true;
		s->direct_backoff = 0;
		*done = true;
		return CS_OK;
	}
	if (err != CS_ERR_DATA)
		return err;
	s->direct_backoff = s->direct_backoff == 0 ? 1
			    : s->direct_backoff >= DIRECT_SKIP_MAX ? DIRECT_SKIP_MAX
								   : 2 * s->direct_backoff;
	s->direct_skip = s->direct_backoff;
	cs_log_fields(CS_LOG_DEBUG, "direct COPY declined, merging through staging", "table",
		      w->specs[t].name, "sqlstate", w->sqlstate, "error", w->message, NULL);
	return savepoint(w, "ROLLBACK TO SAVEPOINT copysink_table");
}

/* Isolate the bad rows among idx[0..n) (which together failed with a data error): try each
 * half under a savepoint; a half that fails alone is split again, down to single rows. */
static cs_err_t bisect(cs_writer_t *w, cs_batch_t *b, int t, size_t *idx, size_t n,
		       cs_writer_reject_fn reject, void *opaque)
{
	size_t half[2] = {n / 2, n - n / 2};
	size_t *part[2] = {idx, idx + n / 2};
	cs_err_t err;

	if (n == 1) {
		const cs_batch_row_t *r = &cs_batch_table(b, t)->rows[idx[0]];
		if (reject(opaque, t, r, w->sqlstate, w->message) != 0)
			return own_error(w, CS_ERR_RETRIABLE,
					 "the dead letter of a rejected row could not be queued");
		w->stats[t].rejected++;
		cs_batch_kill_row(b, t, idx[0]);
		return CS_OK;
	}
	for (int h = 0; h < 2; h++) {
		if (half[h] == 0)
			continue;
		err = savepoint(w, "SAVEPOINT copysink_bisect");
		if (err != CS_OK)
			return err;
		w->stats[t].bisect_writes++;
		err = copy_merge(w, b, t, part[h], half[h]);
		if (err == CS_OK)
			err = run(w, w->sql[t].truncate, NULL);
		if (err == CS_OK) {
			err = savepoint(w, "RELEASE SAVEPOINT copysink_bisect");
			if (err != CS_OK)
				return err;
			continue;
		}
		if (err != CS_ERR_DATA)
			return err;
		err = savepoint(w, "ROLLBACK TO SAVEPOINT copysink_bisect");
		if (err == CS_OK)
			err = savepoint(w, "RELEASE SAVEPOINT copysink_bisect");
		if (err == CS_OK)
			err = bisect(w, b, t, part[h], half[h], reject, opaque);
		if (err != CS_OK)
			return err;
	}
	return CS_OK;
}

/* Write the live rows of table t: all at once, or by bisection after a data error. */
static cs_err_t write_table(cs_writer_t *w, cs_batch_t *b, int t, cs_writer_reject_fn reject,
			    void *opaque)
{
	const cs_batch_table_t *tab = cs_batch_table(b, t);
	size_t *idx, n = 0;
	bool done = false;
	cs_err_t err;

	if (tab->live == 0)
		return CS_OK;
	idx = malloc(tab->live * sizeof(*idx));
	if (idx == NULL)
		return own_error(w, CS_ERR_FATAL, "out of memory");
	for (size_t r = 0; r < tab->nrows; r++) {
		if (tab->rows[r].live) {
			idx[n++] = r;
			w->stats[t].bytes += tab->rows[r].tuple_len;
		}
	}
	w->stats[t].rows = n;
	err = savepoint(w, "SAVEPOINT copysink_table");
	if (err == CS_OK && w->direct)
		err = try_direct(w, b, t, idx, n, &done);
	if (err == CS_OK && !done)
		err = ensure_staging(w, t);
	if (err == CS_OK && !done && w->key_order && w->specs[t].on_conflict != CS_CONFLICT_NONE &&
	    sort_by_key(b, t, idx, n) != 0)
		err = own_error(w, CS_ERR_FATAL, "out of memory");
	if (err == CS_OK && !done)
		err = copy_merge(w, b, t, idx, n);
	if (err == CS_ERR_DATA) {
		cs_log_fields(CS_LOG_WARNING, "rows rejected by PostgreSQL, isolating them",
			      "table", w->specs[t].name, "sqlstate", w->sqlstate, "error",
			      w->message, NULL);
		w->stats[t].merged = w->stats[t].deleted = 0;
		err = savepoint(w, "ROLLBACK TO SAVEPOINT copysink_table");
		if (err == CS_OK)
			err = bisect(w, b, t, idx, n, reject, opaque);
		if (err == CS_OK) {
			char rows[32], bad[32], writes[32];

			snprintf(rows, sizeof(rows), "%zu", n);
			snprintf(bad, sizeof(bad), "%llu", (unsigned long long)w->stats[t].rejected);
			snprintf(writes, sizeof(writes), "%llu",
				 (unsigned long long)w->stats[t].bisect_writes);
			cs_log_fields(CS_LOG_INFO, "rejected rows isolated", "table", w->specs[t].name,
				      "rows", rows, "rejected", bad, "bisect_writes", writes, NULL);
		}
	}
	if (err == CS_OK)
		err = savepoint(w, "RELEASE SAVEPOINT copysink_table");
	free(idx);
	return err;
}

/* Append a text[] / bigint[] literal element. */
static int add_elem(char *buf, size_t *len, bool first, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int add_elem(char *buf, size_t *len, bool first, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!first && add(buf, len, ",") != 0)
		return -1;
	va_start(ap, fmt);
	n = vsnprintf(buf + *len, SQL_MAX - *len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= SQL_MAX - *len)
		return -1;
	*len += (size_t)n;
	return 0;
}

/* The fence: a partition's offset moves only from the offset this worker expects to find
 * stored, and only when the batch starts at that offset (no entry written twice or skipped). */
static const char offsets_sql[] =
	"WITH v AS (SELECT * FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[], "
	"$6::bigint[]) AS v(topic, partition, next_offset, expected, start_offset)) "
	"INSERT INTO " CS_OFFSETS_TABLE " AS o (group_id, topic, partition, next_offset) "
	"SELECT $1, topic, partition, next_offset FROM v "
	"ON CONFLICT (group_id, topic, partition) DO UPDATE SET "
	"next_offset = EXCLUDED.next_offset, updated_at = now() "
	"WHERE o.next_offset = (SELECT v.expected FROM v WHERE v.topic = EXCLUDED.topic "
	"AND v.partition = EXCLUDED.partition AND v.start_offset = v.expected) RETURNING 1";

/* Store the next offset of every partition of the batch, fenced by the expected offsets. */
static cs_err_t store_offsets(cs_writer_t *w, cs_batch_t *b, const int64_t *expected,
			      char *errstr, size_t errstr_size)
{
	char (*arr)[SQL_MAX] = w->offsets_arrays; /* the writer's own: writers run side by side */
	size_t len[5] = {0, 0, 0, 0, 0};
	const char *params[6] = {w->group_id, arr[0], arr[1], arr[2], arr[3], arr[4]};
	const cs_batch_part_t *parts;
	int nparts, n = 0;
	PGresult *res;
	cs_err_t err = CS_OK;

	parts = cs_batch_parts(b, &nparts);
	for (int i = 0; i < 5; i++)
		arr[i][len[i]++] = '{';
	for (int i = 0; i < nparts; i++) {
		if (parts[i].partition < 0)
			continue; /* dropped on revoke */
		if (add_elem(arr[0], &len[0], n == 0, "\"%s\"", parts[i].topic) != 0 ||
		    add_elem(arr[1], &len[1], n == 0, "%d", (int)parts[i].partition) != 0 ||
		    add_elem(arr[2], &len[2], n == 0, "%lld", (long long)parts[i].next_offset) != 0 ||
		    (expected[i] < 0 ? add_elem(arr[3], &len[3], n == 0, "NULL")
				     : add_elem(arr[3], &len[3], n == 0, "%lld",
						(long long)expected[i])) != 0 ||
		    add_elem(arr[4], &len[4], n == 0, "%lld", (long long)parts[i].start_offset) != 0) {
			snprintf(errstr, errstr_size, "too many partitions in one batch");
			return CS_ERR_FATAL;
		}
		n++;
	}
	if (n == 0)
		return CS_OK;
	for (int i = 0; i < 5; i++)
		if (add(arr[i], &len[i], "}") != 0) {
			snprintf(errstr, errstr_size, "too many partitions in one batch");
			return CS_ERR_FATAL;
		}
	res = PQexecParams(w->conn, offsets_sql, 6, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		err = note_error(w, res);
		snprintf(errstr, errstr_size, "could not store offsets: %s", w->message);
	} else if (PQntuples(res) != n) {
		err = CS_ERR_FENCED;
		snprintf(errstr, errstr_size,
			 "stored offsets of %d partition(s) moved since this worker read them: "
			 "another worker owns them now, or the batch does not start at them",
			 n - PQntuples(res));
	}
	PQclear(res);
	return err;
}

/* CS_ERR_FENCED with errstr when a partition of the batch does not start at the offset
 * expected to be stored (the fence in offsets_sql would refuse it after the whole write). */
static cs_err_t check_starts(const cs_writer_t *w, const cs_batch_t *b, const int64_t *expected,
			     char *errstr, size_t errstr_size)
{
	const cs_batch_part_t *parts;
	int nparts;

	if (w->group_id[0] == '\0')
		return CS_OK; /* a replay stores no offsets */
	parts = cs_batch_parts(b, &nparts);
	for (int i = 0; i < nparts; i++)
		if (parts[i].partition >= 0 && expected[i] >= 0 &&
		    parts[i].start_offset != expected[i]) {
			snprintf(errstr, errstr_size, "batch of \"%s\" [%d] starts at offset %lld, "
				 "not at the stored offset %lld", parts[i].topic,
				 (int)parts[i].partition, (long long)parts[i].start_offset,
				 (long long)expected[i]);
			return CS_ERR_FENCED;
		}
	return CS_OK;
}

cs_err_t cs_writer_write(cs_writer_t *w, cs_batch_t *b, const int64_t *expected,
			 cs_writer_reject_fn reject, void *opaque, char *errstr,
			 size_t errstr_size)
{
	cs_err_t err;

	memset(w->stats, 0, (size_t)w->nspecs * sizeof(*w->stats));
	w->sqlstate[0] = w->message[0] = errstr[0] = '\0';
	err = check_starts(w, b, expected, errstr, errstr_size);
	if (err != CS_OK)
		return err;
	err = cs_writer_connect(w, errstr, errstr_size);
	if (err != CS_OK)
		return err;
	for (int t = 0; t < w->nspecs && w->xact_staging; t++)
		w->sql[t].staged = false; /* each transaction creates its own when it needs one */
	/* the first statement on a connection the server closed meanwhile (restart,
	 * pg_terminate_backend) is where libpq learns it */
	err = run(w, "BEGIN", NULL);
	if (err != CS_OK)
		snprintf(errstr, errstr_size, "could not begin a transaction: %s%s%s", w->message,
			 w->sqlstate[0] ? " SQLSTATE " : "", w->sqlstate);
	for (int t = 0; t < w->nspecs && err == CS_OK; t++) {
		err = write_table(w, b, t, reject, opaque);
		if (err != CS_OK)
			snprintf(errstr, errstr_size, "could not write to table \"%s\": %s%s%s",
				 w->specs[t].name, w->message, w->sqlstate[0] ? " SQLSTATE " : "",
				 w->sqlstate);
	}
	if (err == CS_OK && w->group_id[0] != '\0') /* a replay stores no offsets */
		err = store_offsets(w, b, expected, errstr, errstr_size);
	if (err == CS_OK) {
		err = run(w, "COMMIT", NULL);
		if (err != CS_OK)
			snprintf(errstr, errstr_size, "could not commit: %s", w->message);
		if (err == CS_ERR_DATA) /* a deferred constraint: retrying cannot help */
			err = CS_ERR_FATAL;
	}
	if (err != CS_OK && w->conn != NULL) {
		if (PQstatus(w->conn) == CONNECTION_OK &&
		    PQtransactionStatus(w->conn) != PQTRANS_IDLE)
			PQclear(PQexec(w->conn, "ROLLBACK"));
		/* a read-only server (a standby after a failover): connect again, which with
		 * target_session_attrs=read-write in the conninfo finds the new primary */
		if (PQstatus(w->conn) != CONNECTION_OK || strcmp(w->sqlstate, "25006") == 0)
			cs_writer_disconnect(w);
	}
	if (err != CS_OK && errstr[0] == '\0') /* a path that named no cause */
		snprintf(errstr, errstr_size, "could not write the batch: %s",
			 w->message[0] ? w->message : w->conn == NULL ? "connection to PostgreSQL lost"
								      : "unknown error");
	return err;
}

const char *cs_writer_last_sqlstate(const cs_writer_t *w)
{
	return w->sqlstate;
}

const cs_writer_table_stats_t *cs_writer_table_stats(const cs_writer_t *w, int t)
{
	return &w->stats[t];
}
