/*
 * tablespec.h - a target table described as data
 *
 * A table spec names the columns of one target table, their logical types, the msgpack field
 * each comes from (always the column's own name), whether it is required, the conflict key and
 * which columns an update changes. The three built-in specs (memory_entries, patterns,
 * trajectories) and any spec an operator declares in the config file go through the same
 * decoder, encoder and merge code: a new table is a new spec, not new code.
 */
#ifndef COPYSINK_TABLESPEC_H
#define COPYSINK_TABLESPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CS_MAX_COLUMNS 32
#define CS_MAX_NAME 64    /* PostgreSQL identifiers are at most 63 bytes */
#define CS_MAX_TOPIC 250  /* Kafka topic names are at most 249 bytes */
#define CS_DEFAULT_DIM 384

/* Logical column type: what the decoder accepts for a field. */
typedef enum cs_coltype {
	CS_COL_TEXT,       /* msgpack str                                   -> text */
	CS_COL_INT2,       /* msgpack int in int16 range                   -> smallint */
	CS_COL_INT4,       /* msgpack int in int32 range                   -> integer */
	CS_COL_INT8,       /* msgpack int in int64 range                   -> bigint */
	CS_COL_FLOAT4,     /* msgpack float or int, finite                 -> real */
	CS_COL_FLOAT8,     /* msgpack float or int, finite                 -> double precision */
	CS_COL_BOOL,       /* msgpack bool                                  -> boolean */
	CS_COL_JSONB,      /* msgpack map (or any value)                    -> jsonb */
	CS_COL_TEXT_ARRAY, /* msgpack array of str                          -> text[] */
	CS_COL_EMBEDDING,  /* array of N numbers or bin of 4*N bytes (LE f32) -> vector(N) or real[] */
	/* the types of src/pgbinary.c (accepted forms in include/copysink/pgbinary.h) */
	CS_COL_UUID,         /* str 8-4-4-4-12 hex, or bin of 16 bytes        -> uuid */
	CS_COL_TIMESTAMPTZ,  /* RFC 3339 str, epoch ms int, or timestamp ext  -> timestamptz */
	CS_COL_DATE,         /* str YYYY-MM-DD, or a midnight UTC instant     -> date */
	CS_COL_NUMERIC,      /* decimal str, int, or finite float             -> numeric */
	CS_COL_BYTEA,        /* msgpack bin                                   -> bytea */
	CS_COL_FLOAT8_ARRAY, /* array of finite numbers or nil                -> double precision[] */
	CS_COL_INT4_ARRAY,   /* array of int32 or nil                         -> integer[] */
	CS_COL_INT8_ARRAY,   /* array of int64 or nil                         -> bigint[] */
	CS_COL_JSON,         /* as jsonb, stored as JSON text                 -> json */
} cs_coltype_t;

/* The SQL type of an embedding column, as configured (embedding.h spells and encodes them). */
typedef enum cs_embtype {
	CS_EMB_AUTO = 0,  /* the column's type when the table exists; else vector(dim) when the
			   * database has pgvector, else real[] */
	CS_EMB_VECTOR,    /* pgvector's vector(dim): float32 */
	CS_EMB_HALFVEC,   /* pgvector's halfvec(dim): IEEE 754 half precision (pgvector 0.7.0) */
	CS_EMB_SPARSEVEC, /* pgvector's sparsevec(dim): the non-zero values (pgvector 0.7.0) */
	CS_EMB_REAL_ARRAY /* real[] */
} cs_embtype_t;

/* Wire encoding chosen from the catalog at start-up (binary COPY format of the real column). */
typedef enum cs_colenc {
	CS_ENC_DEFAULT = 0, /* the natural encoding of the logical type */
	CS_ENC_JSON,        /* jsonb (or json) spec column stored in a json column */
	CS_ENC_VECTOR,      /* embedding in a pgvector vector column */
	CS_ENC_FLOAT4_ARRAY, /* embedding in a real[] column */
	CS_ENC_HALFVEC,     /* embedding in a pgvector halfvec column */
	CS_ENC_SPARSEVEC    /* embedding in a pgvector sparsevec column */
} cs_colenc_t;

typedef enum cs_conflict {
	CS_CONFLICT_UPDATE, /* ON CONFLICT DO UPDATE: last write wins */
	CS_CONFLICT_SKIP,   /* ON CONFLICT DO NOTHING: first write wins */
	CS_CONFLICT_NONE    /* insert-only table without a conflict key */
} cs_conflict_t;

typedef struct cs_column {
	char name[CS_MAX_NAME]; /* column name = msgpack field name */
	cs_coltype_t type;
	bool required;   /* a missing or nil field is a data error */
	bool in_key;     /* part of the conflict key (implies required) */
	bool update;     /* changed by ON CONFLICT DO UPDATE */
	cs_colenc_t enc; /* set by the writer from the catalog; CS_ENC_DEFAULT until then */
	uint32_t elem_oid; /* element type OID for array encodings, from the catalog */
	cs_embtype_t emb_type; /* embedding columns: the type spelled in the column list, else
				* (once configured) the table's embedding_type */
	int emb_dim;       /* embedding columns: the dim spelled in the column list, 0 = none */
} cs_column_t;

typedef struct cs_tablespec {
	char name[CS_MAX_NAME];    /* table name (unqualified) */
	char schema[CS_MAX_NAME];  /* schema, "public" by default */
	char topic[CS_MAX_TOPIC];  /* source topic */
	char dlq_topic[CS_MAX_TOPIC]; /* dead-letter topic; empty = the worker-wide setting */
	cs_conflict_t on_conflict;
	int dim;                   /* embedding dimension (CS_DEFAULT_DIM by default) */
	cs_embtype_t embedding_type; /* the type of columns spelled `embedding` (AUTO by default) */
	int ncols;
	cs_column_t cols[CS_MAX_COLUMNS];
} cs_tablespec_t;

/*
 * Fill `spec` with the built-in spec called `name` (memory_entries, patterns, trajectories).
 * topic and on_conflict are left for the caller (the config) to set.
 * @returns 0, or -1 when there is no built-in spec of that name.
 */
int cs_tablespec_builtin(const char *name, cs_tablespec_t *spec);

/*
 * Parse an operator's column list, e.g.
 *   "id bigint not null, body text not null, payload jsonb, tags text[], embedding embedding"
 * and a key list "id" (empty for an insert-only table), into `spec` (name, topic etc. untouched).
 * Columns not in the key are update columns. An embedding may be spelled with its type
 * (vector(384), halfvec(768), sparsevec(30522), real[]: see embedding.h), which sets the
 * column's emb_type and emb_dim; `embedding` (or `vector`) leaves them CS_EMB_AUTO and 0.
 * @returns 0, or -1 with the reason in errstr.
 */
int cs_tablespec_parse_columns(cs_tablespec_t *spec, const char *columns, const char *key,
			       char *errstr, size_t errstr_size);

/* Logical type from its SQL spelling ("text", "integer", "double precision", "text[]", ...);
 * @returns 0 and sets *type, or -1 when unknown. */
int cs_coltype_parse(const char *sql, cs_coltype_t *type);

/* The spellings a column list accepts, one per type ("text, smallint, ..., json"), for
 * messages; NUL-terminated, the names that fit in `size` bytes. */
void cs_coltype_list(char *out, size_t size);

/* The SQL spelling of a logical type for DDL; embeddings give "real[]". */
const char *cs_coltype_sql(cs_coltype_t type);

/* Index of the column called `name`, or -1. */
int cs_tablespec_column(const cs_tablespec_t *spec, const char *name);

/* Number of key columns (0 for an insert-only table). */
int cs_tablespec_nkeys(const cs_tablespec_t *spec);

#endif /* COPYSINK_TABLESPEC_H */
