/*
 * schema.h - the target tables in PostgreSQL: creating them and checking them against the specs
 *
 * `copysink migrate` creates the tables of the specs and the worker's bookkeeping table
 * (copysink_offsets) idempotently. At start-up the worker reads each table's real column types
 * from the catalog and picks each column's binary COPY encoding from them; a table that does not
 * match its spec is a start-up error naming the table and the column.
 */
#ifndef COPYSINK_SCHEMA_H
#define COPYSINK_SCHEMA_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "copysink/tablespec.h"

/* The bookkeeping table: the next offset of every partition, per consumer group. */
#define CS_OFFSETS_TABLE "copysink_offsets"

/* The storage parameter of the tables copysink creates (targets and staging tables): a row
 * is compressed or moved out of line (TOAST) only beyond 8,160 bytes instead of PostgreSQL's
 * 2,032, so that rows with a 384-dimensional embedding (1,560 bytes as real[], 1,544 as
 * vector) and a little text stay inline and uncompressed: no failed pglz attempt on the
 * floats and no second heap and index insert per row on the COPY, no detoasting on reads. */
#define CS_TOAST_WITH "WITH (toast_tuple_target = 8160)"

/* Facts about a resolved table that the merge needs. */
typedef struct cs_table_shape {
	bool has_created_at; /* a created_at column exists (left to its default on insert) */
	bool has_updated_at; /* an updated_at column exists (set to now() by DO UPDATE) */
	bool has_source;     /* copysink_partition integer and copysink_offset bigint exist: the
			      * entry each row holds, which a replay must not move backwards */
} cs_table_shape_t;

/*
 * Create the spec's tables and the bookkeeping table, in one transaction under an advisory
 * lock so that workers migrating at once do not collide. Existing tables are left as they are.
 * An embedding column of a table to be created gets its configured type (emb_type); one of
 * pgvector's types needs the extension in the database (halfvec and sparsevec in 0.7.0 or
 * later), else this fails saying what a superuser must run. For CS_EMB_AUTO it is vector(dim)
 * when the database has pgvector, else real[] (logged at info). With `create_extension`, a
 * database without pgvector gets it first (CREATE EXTENSION vector: a superuser's privilege)
 * when the server has it and a table to be created wants it.
 * @returns 0, or -1 with the reason in errstr; main thread, `conn` idle.
 */
__attribute__((warn_unused_result)) int cs_schema_migrate(PGconn *conn, const cs_tablespec_t *specs,
							  int nspecs, bool create_extension,
							  char *errstr, size_t errstr_size);

/*
 * Read `spec`'s table from the catalog, check it against the spec (every column present with a
 * compatible type, NOT NULL columns required by the spec, a unique index on exactly the conflict
 * key, no other NOT NULL column without a default) and set each column's enc and elem_oid. An
 * embedding column may be vector, halfvec or sparsevec of the spec's dim or real[] when its
 * emb_type is CS_EMB_AUTO, else it must be of that type.
 * @returns 0, or -1 with errstr such as
 *   table "public.patterns" column "confidence" has type text, expected double precision
 */
__attribute__((warn_unused_result)) int cs_schema_resolve(PGconn *conn, cs_tablespec_t *spec,
							  cs_table_shape_t *shape, char *errstr,
							  size_t errstr_size);

/* Check that the bookkeeping table exists. @returns 0, or -1 with errstr. */
__attribute__((warn_unused_result)) int cs_schema_check_offsets(PGconn *conn, char *errstr,
								size_t errstr_size);

/*
 * The cause of a failed statement on `conn` as one line into out: the server's primary message
 * of `res`, else libpq's message without its severity prefix, else `connection to PostgreSQL
 * lost` (the connection broke without a word) or `no error message` (it did not). `res` and
 * `conn` may be NULL.
 */
void cs_schema_error_text(const PGconn *conn, const PGresult *res, char *out, size_t size);

/* Send the server's notices on `conn` to the debug log instead of stderr. */
void cs_schema_quiet_notices(PGconn *conn);

/* Write the quoted identifier "a""b" of `name` into out (size >= 2*strlen+3). */
void cs_schema_quote(char *out, size_t size, const char *name);

#endif /* COPYSINK_SCHEMA_H */
