/*
 * schema.c - creating the target tables and checking them against the specs
 *
 * Identifiers come only from the configuration and are always quoted; no SQL is built from
 * message data.
 */
#include "copysink/schema.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "copysink/embedding.h"
#include "copysink/log.h"

#define SQL_MAX 16384
#define FLOAT4OID 700
#define TEXTOID 25

void cs_schema_quote(char *out, size_t size, const char *name)
{
	size_t o = 0;

	if (size < 3) {
		if (size > 0)
			out[0] = '\0';
		return;
	}
	out[o++] = '"';
	for (; *name != '\0' && o + 3 < size; name++) {
		if (*name == '"')
			out[o++] = '"';
		out[o++] = *name;
	}
	out[o++] = '"';
	out[o] = '\0';
}

/* Append printf output to sql (size SQL_MAX); @returns -1 when it does not fit. */
static int sql_add(char *sql, size_t *len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int sql_add(char *sql, size_t *len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(sql + *len, SQL_MAX - *len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= SQL_MAX - *len)
		return -1;
	*len += (size_t)n;
	return 0;
}

void cs_schema_error_text(const PGconn *conn, const PGresult *res, char *out, size_t size)
{
	const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

	if (msg == NULL || msg[0] == '\0') {
		const char *colon;

		msg = res ? PQresultErrorMessage(res) : "";
		if (msg[0] == '\0')
			msg = conn ? PQerrorMessage(conn) : "";
		/* libpq's formatted text: "FATAL:  why\n..." or "why\n\tThis probably means ..." */
		colon = strstr(msg, ":  ");
		if (colon != NULL && colon < msg + strcspn(msg, "\n"))
			msg = colon + 3;
	}
	snprintf(out, size, "%.*s", (int)strcspn(msg, "\n"), msg);
	if (out[0] == '\0')
		snprintf(out, size, "%s",
			 PQstatus(conn) != CONNECTION_OK ? "connection to PostgreSQL lost"
							 : "no error message");
}

/* Run a command; @returns 0, or -1 with the server's message in errstr. */
static int exec_ok(PGconn *conn, const char *sql, char *errstr, size_t errstr_size)
{
	PGresult *res = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(res);
	int rc = 0;

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		cs_schema_error_text(conn, res, errstr, errstr_size);
		rc = -1;
	}
	PQclear(res);
	return rc;
}

/* Write `"schema"."name"` into out. */
static void qualified(char *out, size_t size, const cs_tablespec_t *spec)
{
	char s[2 * CS_MAX_NAME + 3], n[2 * CS_MAX_NAME + 3];

	cs_schema_quote(s, sizeof(s), spec->schema);
	cs_schema_quote(n, sizeof(n), spec->name);
	snprintf(out, size, "%s.%s", s, n);
}

/* What the database and the server have of pgvector. */
typedef struct pgvector {
	char installed[32]; /* its version in this database, "" when not created here */
	char available[32]; /* the version CREATE EXTENSION would install, "" when the server has
			     * none */
	char dbname[2 * CS_MAX_NAME + 3]; /* the current database, quoted */
	bool created;       /* created by this migration (rolled back if it fails) */
} pgvector_t;

/* Read pgvector's state. @returns 0, or -1 with errstr. */
static int pgvector_read(PGconn *conn, pgvector_t *pv, char *errstr, size_t errstr_size)
{
	PGresult *res = PQexec(conn, "SELECT (SELECT extversion FROM pg_extension WHERE extname = "
				     "'vector'), (SELECT default_version FROM "
				     "pg_available_extensions WHERE name = 'vector'), "
				     "current_database()");
	int rc = 0;

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		char why[512];
		cs_schema_error_text(conn, res, why, sizeof(why));
		snprintf(errstr, errstr_size, "could not read the extensions of the database: %s",
			 why);
		rc = -1;
	} else {
		pv->created = false;
		snprintf(pv->installed, sizeof(pv->installed), "%s", PQgetvalue(res, 0, 0));
		snprintf(pv->available, sizeof(pv->available), "%s", PQgetvalue(res, 0, 1));
		cs_schema_quote(pv->dbname, sizeof(pv->dbname), PQgetvalue(res, 0, 2));
	}
	PQclear(res);
	return rc;
}

/* Compare versions "0.6.2" and "0.7.0" numerically, part by part: <0, 0 or >0. */
static int version_cmp(const char *a, const char *b)
{
	while (*a != '\0' || *b != '\0') {
		char *ea, *eb;
		long x = strtol(a, &ea, 10), y = strtol(b, &eb, 10);

		if (x != y)
			return x < y ? -1 : 1;
		if (ea == a && eb == b) /* no number at either: equal so far */
			break;
		a = *ea == '.' ? ea + 1 : ea;
		b = *eb == '.' ? eb + 1 : eb;
	}
	return 0;
}

/* The type of an `auto` column of a table about to be created: vector when the database has
 * pgvector, else real[], said in a notice (the operator may have wanted vector). */
static cs_embtype_t auto_type(const char *table, const cs_column_t *col, const pgvector_t *pv)
{
	bool server = pv->available[0] != '\0';

	if (pv->installed[0] != '\0')
		return CS_EMB_VECTOR;
	cs_info("table \"%s\" column \"%s\" is created as real[]: database %s has no pgvector "
		"extension%s%s%s",
		table, col->name, pv->dbname,
		server ? " (for vector, a superuser runs \"CREATE EXTENSION vector;\" in database "
		       : " (and the server has no pgvector)",
		server ? pv->dbname : "", server ? " before migrate)" : "");
	return CS_EMB_REAL_ARRAY;
}

/* Check that pgvector can give column `col` (of pgvector's type `sql`) its type: the extension
 * in the database, in version `min` or later (NULL: any). @returns 0, or -1 with errstr
 * saying what a superuser must do. */
static int pgvector_check(const char *table, const cs_column_t *col, const char *sql,
			  const char *min, const pgvector_t *pv, char *errstr, size_t errstr_size)
{
	bool in_db = pv->installed[0] != '\0' && !pv->created; /* there before this migration */
	const char *have = pv->installed[0] ? pv->installed : pv->available;
	bool server_old = min != NULL && version_cmp(pv->available, min) < 0;

	if (have[0] == '\0') {
		snprintf(errstr, errstr_size,
			 "table \"%s\" column \"%s\" is %s, which needs the pgvector extension, but "
			 "the server has no pgvector: install pgvector%s%s%s on the server, then a "
			 "superuser must run \"CREATE EXTENSION vector;\" in database %s",
			 table, col->name, sql, min ? " " : "", min ? min : "",
			 min ? " or later" : "", pv->dbname);
		return -1;
	}
	if (min != NULL && version_cmp(have, min) < 0 && !in_db) {
		snprintf(errstr, errstr_size,
			 "table \"%s\" column \"%s\" is %s, which needs pgvector %s or later, but the "
			 "server has pgvector %s: install pgvector %s or later on the server, then a "
			 "superuser must run \"CREATE EXTENSION vector;\" in database %s",
			 table, col->name, sql, min, pv->available, min, pv->dbname);
		return -1;
	}
	if (min != NULL && version_cmp(have, min) < 0) {
		snprintf(errstr, errstr_size,
			 "table \"%s\" column \"%s\" is %s, which needs pgvector %s or later, but "
			 "database %s has pgvector %s: a superuser must run \"ALTER EXTENSION vector "
			 "UPDATE;\" in database %s%s%s%s",
			 table, col->name, sql, min, pv->dbname, have, pv->dbname,
			 server_old ? " once pgvector " : "", server_old ? min : "",
			 server_old ? " or later is installed on the server" : "");
		return -1;
	}
	if (pv->installed[0] == '\0') {
		snprintf(errstr, errstr_size,
			 "table \"%s\" column \"%s\" is %s, which needs the pgvector extension in "
			 "database %s: a superuser must run \"CREATE EXTENSION vector;\" in database "
			 "%s (or migrate as a superuser with [postgres] create_extension = on)",
			 table, col->name, sql, pv->dbname, pv->dbname);
		return -1;
	}
	return 0;
}

/* The embedding type that `copysink migrate` gives column `col` of `table` (about to be
 * created): auto_type() for auto, else its own, checked by pgvector_check() for pgvector's.
 * @returns 0, or -1 with errstr. */
static int column_type(const char *table, const cs_column_t *col, int dim,
		       const pgvector_t *pv, cs_embtype_t *type, char *errstr, size_t errstr_size)
{
	char sql[32];

	*type = col->emb_type;
	if (col->emb_type == CS_EMB_AUTO) {
		*type = auto_type(table, col, pv);
		return 0;
	}
	if (!cs_embedding_needs_pgvector(col->emb_type))
		return 0;
	cs_embedding_sql(col->emb_type, dim, sql, sizeof(sql));
	return pgvector_check(table, col, sql, cs_embedding_min_pgvector(col->emb_type), pv,
			      errstr, errstr_size);
}

/* Build the CREATE TABLE IF NOT EXISTS statement of a spec. */
static int create_sql(const cs_tablespec_t *spec, const cs_embtype_t *types, char *sql)
{
	char q[2 * CS_MAX_NAME + 3], table[4 * CS_MAX_NAME + 8];
	size_t len = 0;
	bool first = true;

	qualified(table, sizeof(table), spec);
	if (sql_add(sql, &len, "CREATE TABLE IF NOT EXISTS %s (", table) != 0)
		return -1;
	for (int i = 0; i < spec->ncols; i++) {
		const cs_column_t *col = &spec->cols[i];
		char type[32];

		if (col->type == CS_COL_EMBEDDING)
			cs_embedding_sql(types[i], spec->dim, type, sizeof(type));
		else
			snprintf(type, sizeof(type), "%s", cs_coltype_sql(col->type));
		cs_schema_quote(q, sizeof(q), col->name);
		if (sql_add(sql, &len, "%s %s%s, ", q, type, col->required ? " NOT NULL" : "") != 0)
			return -1;
	}
	if (sql_add(sql, &len, "created_at timestamptz NOT NULL DEFAULT now(), "
			       "updated_at timestamptz NOT NULL DEFAULT now()") != 0)
		return -1;
	if (cs_tablespec_nkeys(spec) > 0 &&
	    sql_add(sql, &len, ", copysink_partition integer, copysink_offset bigint") != 0)
		return -1;
	if (cs_tablespec_nkeys(spec) > 0) {
		if (sql_add(sql, &len, ", PRIMARY KEY (") != 0)
			return -1;
		for (int i = 0; i < spec->ncols; i++) {
			if (!spec->cols[i].in_key)
				continue;
			cs_schema_quote(q, sizeof(q), spec->cols[i].name);
			if (sql_add(sql, &len, "%s%s", first ? "" : ", ", q) != 0)
				return -1;
			first = false;
		}
		if (sql_add(sql, &len, ")") != 0)
			return -1;
	}
	return sql_add(sql, &len, ") " CS_TOAST_WITH);
}

/* Add the source columns to a keyed table made before they existed (a catalog-only change:
 * nullable, no default). Empty for a table without a key. */
static int source_sql(const cs_tablespec_t *spec, char *sql)
{
	char table[4 * CS_MAX_NAME + 8];
	size_t len = 0;

	sql[0] = '\0';
	if (cs_tablespec_nkeys(spec) == 0)
		return 0;
	qualified(table, sizeof(table), spec);
	return sql_add(sql, &len,
		       "ALTER TABLE %s ADD COLUMN IF NOT EXISTS copysink_partition integer, "
		       "ADD COLUMN IF NOT EXISTS copysink_offset bigint",
		       table);
}

static const char offsets_ddl[] =
	"CREATE TABLE IF NOT EXISTS " CS_OFFSETS_TABLE " ("
	"group_id text NOT NULL, topic text NOT NULL, partition integer NOT NULL, "
	"next_offset bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), "
	"PRIMARY KEY (group_id, topic, partition))";

/* Server notices ("relation already exists, skipping") go to the debug log. */
static void notice_processor(void *arg, const char *message)
{
	size_t n = strlen(message);

	cs_log(CS_LOG_DEBUG, "postgres: %.*s", (int)(n > 0 && message[n - 1] == '\n' ? n - 1 : n),
	       message);
}

void cs_schema_quiet_notices(PGconn *conn)
{
	PQsetNoticeProcessor(conn, notice_processor, NULL);
}

/* A yes-or-no question `sql` about the table of `spec` ($1: its qualified name).
 * @returns 1, 0, or -1 with errstr. */
static int table_fact(PGconn *conn, const cs_tablespec_t *spec, const char *sql, char *errstr,
		      size_t errstr_size)
{
	char table[4 * CS_MAX_NAME + 8];
	const char *params[1] = {table};
	PGresult *res;
	int rc;

	qualified(table, sizeof(table), spec);
	res = PQexecParams(conn, sql, 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		char why[512];
		cs_schema_error_text(conn, res, why, sizeof(why));
		snprintf(errstr, errstr_size, "could not read table \"%s.%s\" from the catalog: %s",
			 spec->schema, spec->name, why);
		rc = -1;
	} else {
		rc = PQgetvalue(res, 0, 0)[0] == 't';
	}
	PQclear(res);
	return rc;
}

static const char exists_sql[] = "SELECT to_regclass($1) IS NOT NULL";
static const char has_source_sql[] =
	"SELECT count(*) = 2 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname IN "
	"('copysink_partition', 'copysink_offset') AND NOT attisdropped";

/* True when a table about to be created has an embedding column that pgvector would type
 * (auto, vector, halfvec, sparsevec). */
static bool wants_pgvector(const cs_tablespec_t *spec)
{
	for (int i = 0; i < spec->ncols; i++)
		if (spec->cols[i].type == CS_COL_EMBEDDING &&
		    (spec->cols[i].emb_type == CS_EMB_AUTO ||
		     cs_embedding_needs_pgvector(spec->cols[i].emb_type)))
			return true;
	return false;
}

/* With create_extension on, create pgvector when a table to be created wants it, the
 * database lacks it and the server has it; then read the state again. pgvector is not a
 * trusted extension: this takes a superuser. @returns 0, or -1 with errstr. */
static int create_pgvector(PGconn *conn, pgvector_t *pv, char *errstr, size_t errstr_size)
{
	PGresult *res;
	char why[512];

	if (pv->installed[0] != '\0' || pv->available[0] == '\0')
		return 0;
	res = PQexec(conn, "CREATE EXTENSION IF NOT EXISTS vector");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		cs_schema_error_text(conn, res, why, sizeof(why));
		snprintf(errstr, errstr_size,
			 "could not create extension \"vector\" in database %s: %s (pgvector is not "
			 "a trusted extension: migrate as a superuser, or have one run \"CREATE "
			 "EXTENSION vector;\" in database %s)",
			 pv->dbname, why, pv->dbname);
		PQclear(res);
		return -1;
	}
	PQclear(res);
	if (pgvector_read(conn, pv, errstr, errstr_size) != 0)
		return -1;
	pv->created = true;
	return 0;
}

/* Create one table unless it exists, its embedding columns typed by column_type(), and give
 * it the source columns. @returns 0, or -1 with errstr. */
static int migrate_table(PGconn *conn, const cs_tablespec_t *spec, bool exists,
			 const pgvector_t *pv, char *sql, char *errstr, size_t errstr_size)
{
	cs_embtype_t types[CS_MAX_COLUMNS] = {CS_EMB_AUTO}; /* unused for a table that exists */
	char plain[2 * CS_MAX_NAME + 2];

	snprintf(plain, sizeof(plain), "%s.%s", spec->schema, spec->name);
	for (int i = 0; i < spec->ncols && !exists; i++)
		if (spec->cols[i].type == CS_COL_EMBEDDING &&
		    column_type(plain, &spec->cols[i], spec->dim, pv, &types[i], errstr,
				errstr_size) != 0)
			return -1;
	if (create_sql(spec, types, sql) != 0) {
		snprintf(errstr, errstr_size, "table \"%s\": definition too long", spec->name);
		return -1;
	}
	if (exec_ok(conn, sql, errstr, errstr_size) != 0)
		return -1;
	if (!exists || cs_tablespec_nkeys(spec) == 0)
		return 0; /* created with the source columns, or needs none */
	/* ALTER TABLE takes the table's owner even when it changes nothing: only when needed */
	switch (table_fact(conn, spec, has_source_sql, errstr, errstr_size)) {
	case 1: return 0;
	case 0: break;
	default: return -1;
	}
	if (source_sql(spec, sql) != 0) {
		snprintf(errstr, errstr_size, "table \"%s\": definition too long", spec->name);
		return -1;
	}
	return exec_ok(conn, sql, errstr, errstr_size);
}

int cs_schema_migrate(PGconn *conn, const cs_tablespec_t *specs, int nspecs,
		      bool create_extension, char *errstr, size_t errstr_size)
{
	char *sql = malloc(SQL_MAX);
	bool *exists = calloc(nspecs > 0 ? (size_t)nspecs : 1, sizeof(bool));
	bool wanted = false;
	pgvector_t pv;
	int rc = -1;

	if (sql == NULL || exists == NULL) {
		snprintf(errstr, errstr_size, "out of memory");
		goto fail;
	}
	if (exec_ok(conn, "BEGIN", errstr, errstr_size) != 0)
		goto fail;
	/* one migration at a time, whichever worker runs it */
	if (exec_ok(conn, "SELECT pg_advisory_xact_lock(hashtext('copysink migrate'))", errstr,
		    errstr_size) != 0)
		goto rollback;
	if (pgvector_read(conn, &pv, errstr, errstr_size) != 0)
		goto rollback;
	for (int t = 0; t < nspecs; t++) {
		int e = table_fact(conn, &specs[t], exists_sql, errstr, errstr_size);
		if (e < 0)
			goto rollback;
		exists[t] = e == 1;
		wanted = wanted || (!exists[t] && wants_pgvector(&specs[t]));
	}
	if (create_extension && wanted &&
	    create_pgvector(conn, &pv, errstr, errstr_size) != 0)
		goto rollback;
	if (exec_ok(conn, offsets_ddl, errstr, errstr_size) != 0)
		goto rollback;
	for (int t = 0; t < nspecs; t++)
		if (migrate_table(conn, &specs[t], exists[t], &pv, sql, errstr, errstr_size) != 0)
			goto rollback;
	rc = exec_ok(conn, "COMMIT", errstr, errstr_size);
	if (rc == 0 && pv.created)
		cs_info("created extension \"vector\" %s in database %s", pv.installed, pv.dbname);
	goto fail;
rollback:
	PQclear(PQexec(conn, "ROLLBACK"));
fail:
	free(exists);
	free(sql);
	return rc;
}

/* Whether a catalog type can hold an embedding column: any of vector, halfvec, sparsevec
 * and real[] for auto, else the configured one; sets the encoding. */
static bool embedding_fits(cs_column_t *col, const char *typname)
{
	cs_embtype_t type;

	if (cs_embedding_type_of(typname, &type, &col->enc) != 0) {
		col->enc = CS_ENC_DEFAULT;
		return false;
	}
	if (col->enc == CS_ENC_FLOAT4_ARRAY)
		col->elem_oid = FLOAT4OID;
	return col->emb_type == CS_EMB_AUTO || col->emb_type == type;
}

/* Whether a catalog type name can hold a logical type; sets the encoding. */
static bool type_fits(cs_column_t *col, const char *typname, unsigned elem_oid)
{
	col->enc = CS_ENC_DEFAULT;
	col->elem_oid = elem_oid;
	switch (col->type) {
	case CS_COL_TEXT:
		return strcmp(typname, "text") == 0 || strcmp(typname, "varchar") == 0;
	case CS_COL_INT2:
		return strcmp(typname, "int2") == 0;
	case CS_COL_INT4:
		return strcmp(typname, "int4") == 0;
	case CS_COL_INT8:
		return strcmp(typname, "int8") == 0;
	case CS_COL_FLOAT4:
		return strcmp(typname, "float4") == 0;
	case CS_COL_FLOAT8:
		return strcmp(typname, "float8") == 0;
	case CS_COL_BOOL:
		return strcmp(typname, "bool") == 0;
	case CS_COL_JSONB:
		if (strcmp(typname, "json") == 0)
			col->enc = CS_ENC_JSON;
		return strcmp(typname, "jsonb") == 0 || strcmp(typname, "json") == 0;
	case CS_COL_TEXT_ARRAY:
		return strcmp(typname, "_text") == 0 || strcmp(typname, "_varchar") == 0;
	case CS_COL_UUID:
		return strcmp(typname, "uuid") == 0;
	case CS_COL_TIMESTAMPTZ:
		return strcmp(typname, "timestamptz") == 0;
	case CS_COL_DATE:
		return strcmp(typname, "date") == 0;
	case CS_COL_NUMERIC: /* any precision and scale: the server applies the typmod */
		return strcmp(typname, "numeric") == 0;
	case CS_COL_BYTEA:
		return strcmp(typname, "bytea") == 0;
	case CS_COL_FLOAT8_ARRAY:
		return strcmp(typname, "_float8") == 0;
	case CS_COL_INT4_ARRAY:
		return strcmp(typname, "_int4") == 0;
	case CS_COL_INT8_ARRAY:
		return strcmp(typname, "_int8") == 0;
	case CS_COL_JSON: /* encoded as text, compared as text by the merge (json has no "=") */
		col->enc = CS_ENC_JSON;
		return strcmp(typname, "json") == 0;
	case CS_COL_EMBEDDING:
		return embedding_fits(col, typname);
	}
	return false;
}

static const char columns_sql[] =
	"SELECT a.attname, t.typname, COALESCE(et.oid, 0), a.attnotnull, a.atthasdef, "
	"format_type(a.atttypid, a.atttypmod), a.atttypmod "
	"FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
	"LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A' "
	"WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped";

/* The type a column of `spec` must have, for messages. */
static void expected_type(const cs_tablespec_t *spec, const cs_column_t *col, char *out,
			  size_t size)
{
	int d = spec->dim;

	if (col->type != CS_COL_EMBEDDING)
		snprintf(out, size, "%s", cs_coltype_sql(col->type));
	else if (col->emb_type == CS_EMB_AUTO)
		snprintf(out, size, "vector(%d), halfvec(%d), sparsevec(%d) or real[]", d, d, d);
	else
		cs_embedding_sql(col->emb_type, d, out, size);
}

/* Check one catalog column against the spec. @returns 0, or -1 with errstr. */
static int check_column(cs_tablespec_t *spec, cs_table_shape_t *shape, PGresult *res, int r,
			const char *table, char *errstr, size_t errstr_size)
{
	const char *name = PQgetvalue(res, r, 0), *typname = PQgetvalue(res, r, 1);
	bool notnull = PQgetvalue(res, r, 3)[0] == 't', hasdef = PQgetvalue(res, r, 4)[0] == 't';
	int c = cs_tablespec_column(spec, name);
	cs_column_t *col;

	if (c < 0) {
		if (strcmp(name, "created_at") == 0)
			shape->has_created_at = true;
		else if (strcmp(name, "updated_at") == 0)
			shape->has_updated_at = true;
		else if (notnull && !hasdef) {
			snprintf(errstr, errstr_size,
				 "table \"%s\" column \"%s\" is NOT NULL without a default but is "
				 "not in the table spec",
				 table, name);
			return -1;
		}
		return 0;
	}
	col = &spec->cols[c];
	/* resolved on a copy: the spec is shared by every writer and by the loop, which encodes
	 * rows with col->enc while a writer connecting on its own thread checks the catalog
	 * again (type_fits() starts from the default encoding: an embedding seen in that
	 * instant was encoded as real[] into a vector column, "vector must have at least 1
	 * dimension"); the spec is written only when the result differs, i.e. on the first
	 * check, before anything is encoded */
	cs_column_t resolved = *col;

	if (!type_fits(&resolved, typname, (unsigned)strtoul(PQgetvalue(res, r, 2), NULL, 10)) ||
	    (resolved.type == CS_COL_EMBEDDING && resolved.enc != CS_ENC_FLOAT4_ARRAY &&
	     atoi(PQgetvalue(res, r, 6)) != spec->dim)) {
		char want[128];
		expected_type(spec, col, want, sizeof(want));
		snprintf(errstr, errstr_size, "table \"%s\" column \"%s\" has type %s, expected %s",
			 table, name, PQgetvalue(res, r, 5), want);
		return -1;
	}
	if (notnull && !col->required) {
		snprintf(errstr, errstr_size,
			 "table \"%s\" column \"%s\" is NOT NULL but the table spec lets it be "
			 "missing",
			 table, name);
		return -1;
	}
	if (col->enc != resolved.enc)
		col->enc = resolved.enc;
	if (col->elem_oid != resolved.elem_oid)
		col->elem_oid = resolved.elem_oid;
	return 0;
}

/* Check that a unique index covers exactly the key columns. */
static int check_key(PGconn *conn, const cs_tablespec_t *spec, const char *table,
		     const char *plain, char *errstr, size_t errstr_size)
{
	static const char sql[] =
		"SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass($1) AND i.indisunique "
		"AND i.indpred IS NULL AND i.indexprs IS NULL AND ("
		"SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a "
		"WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) = "
		"(SELECT array_agg(x ORDER BY x) FROM unnest($2::text[]) x)";
	char keys[CS_MAX_COLUMNS * (CS_MAX_NAME * 2 + 3) + 3];
	const char *params[2] = {table, keys};
	size_t len = 0;
	PGresult *res;
	int rc = 0;

	keys[len++] = '{';
	for (int i = 0; i < spec->ncols; i++) {
		if (!spec->cols[i].in_key)
			continue;
		if (len > 1)
			keys[len++] = ',';
		cs_schema_quote(keys + len, sizeof(keys) - len, spec->cols[i].name);
		len += strlen(keys + len);
	}
	keys[len++] = '}';
	keys[len] = '\0';
	res = PQexecParams(conn, sql, 2, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		char why[512];
		cs_schema_error_text(conn, res, why, sizeof(why));
		snprintf(errstr, errstr_size, "could not read the indexes of table \"%s\": %s", table,
			 why);
		rc = -1;
	} else if (PQntuples(res) == 0) {
		char shown[sizeof(keys)];
		size_t o = 0;
		for (int i = 0; i < spec->ncols && o < sizeof(shown); i++)
			if (spec->cols[i].in_key)
				o += (size_t)snprintf(shown + o, sizeof(shown) - o, "%s%s",
						      o ? ", " : "", spec->cols[i].name);
		snprintf(errstr, errstr_size,
			 "table \"%s\" has no unique index on its conflict key (%s)", plain, shown);
		rc = -1;
	}
	PQclear(res);
	return rc;
}

int cs_schema_resolve(PGconn *conn, cs_tablespec_t *spec, cs_table_shape_t *shape,
		      char *errstr, size_t errstr_size)
{
	char table[4 * CS_MAX_NAME + 8], plain[2 * CS_MAX_NAME + 2];
	const char *params[1] = {table};
	bool seen[CS_MAX_COLUMNS] = {false};
	PGresult *res;
	int rc = -1, source = 0;

	memset(shape, 0, sizeof(*shape));
	qualified(table, sizeof(table), spec);
	snprintf(plain, sizeof(plain), "%s.%s", spec->schema, spec->name);
	res = PQexecParams(conn, columns_sql, 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		char why[512];
		cs_schema_error_text(conn, res, why, sizeof(why));
		snprintf(errstr, errstr_size, "could not read table \"%s\" from the catalog: %s",
			 plain, why);
		goto fail;
	}
	if (PQntuples(res) == 0) {
		snprintf(errstr, errstr_size,
			 "table \"%s\" does not exist (run \"copysink migrate\")", plain);
		goto fail;
	}
	for (int r = 0; r < PQntuples(res); r++) {
		const char *name = PQgetvalue(res, r, 0), *typname = PQgetvalue(res, r, 1);
		int c = cs_tablespec_column(spec, name);
		if (check_column(spec, shape, res, r, plain, errstr, errstr_size) != 0)
			goto fail;
		if (c >= 0)
			seen[c] = true;
		source += (strcmp(name, "copysink_partition") == 0 && strcmp(typname, "int4") == 0) ||
			  (strcmp(name, "copysink_offset") == 0 && strcmp(typname, "int8") == 0);
	}
	shape->has_source = source == 2 && cs_tablespec_nkeys(spec) > 0;
	for (int c = 0; c < spec->ncols; c++) {
		if (!seen[c]) {
			snprintf(errstr, errstr_size, "table \"%s\" has no column \"%s\"", plain,
				 spec->cols[c].name);
			goto fail;
		}
	}
	if (cs_tablespec_nkeys(spec) > 0 &&
	    check_key(conn, spec, table, plain, errstr, errstr_size) != 0)
		goto fail;
	rc = 0;
fail:
	PQclear(res);
	return rc;
}

int cs_schema_check_offsets(PGconn *conn, char *errstr, size_t errstr_size)
{
	PGresult *res = PQexec(conn, "SELECT to_regclass('" CS_OFFSETS_TABLE "') IS NOT NULL");
	int rc = 0;

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		char why[512];
		cs_schema_error_text(conn, res, why, sizeof(why));
		snprintf(errstr, errstr_size, "could not check table \"%s\": %s", CS_OFFSETS_TABLE,
			 why);
		rc = -1;
	} else if (PQgetvalue(res, 0, 0)[0] != 't') {
		snprintf(errstr, errstr_size,
			 "table \"%s\" does not exist (run \"copysink migrate\")", CS_OFFSETS_TABLE);
		rc = -1;
	}
	PQclear(res);
	return rc;
}
