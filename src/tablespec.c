/*
 * tablespec.c - built-in table specs and the parser for operators' own specs
 */
#include "copysink/tablespec.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "copysink/embedding.h"

/* One column of a built-in spec, written compactly. */
typedef struct colinit {
	const char *name;
	cs_coltype_t type;
	bool required;
	bool in_key;
} colinit_t;

typedef struct builtin {
	const char *name;
	const colinit_t *cols;
	int ncols;
} builtin_t;

/* The seed's three tables (see docs/FORMAT.md); created_at/updated_at belong to the merge. */
static const colinit_t memory_entries_cols[] = {
	{"namespace", CS_COL_TEXT, true, true},
	{"key", CS_COL_TEXT, true, true},
	{"value", CS_COL_TEXT, true, false},
	{"embedding", CS_COL_EMBEDDING, false, false},
	{"metadata", CS_COL_JSONB, false, false},
	{"tags", CS_COL_TEXT_ARRAY, false, false},
};

static const colinit_t patterns_cols[] = {
	{"name", CS_COL_TEXT, true, true},
	{"pattern_type", CS_COL_TEXT, true, false},
	{"description", CS_COL_TEXT, false, false},
	{"embedding", CS_COL_EMBEDDING, false, false},
	{"confidence", CS_COL_FLOAT8, false, false},
	{"usage_count", CS_COL_INT4, false, false},
	{"success_count", CS_COL_INT4, false, false},
	{"metadata", CS_COL_JSONB, false, false},
};

static const colinit_t trajectories_cols[] = {
	{"trajectory_id", CS_COL_TEXT, true, true},
	{"step_number", CS_COL_INT4, true, true},
	{"action", CS_COL_TEXT, true, false},
	{"state", CS_COL_JSONB, false, false},
	{"reward", CS_COL_FLOAT8, false, false},
	{"embedding", CS_COL_EMBEDDING, false, false},
	{"metadata", CS_COL_JSONB, false, false},
};

#define BUILTIN(n) {#n, n##_cols, (int)(sizeof(n##_cols) / sizeof(n##_cols[0]))}
static const builtin_t builtins[] = {
	BUILTIN(memory_entries),
	BUILTIN(patterns),
	BUILTIN(trajectories),
};

/* SQL spellings accepted in a column list: the first of each type is the one used for DDL (and
 * listed in messages), aliases follow. */
static const struct {
	const char *sql;
	cs_coltype_t type;
} type_names[] = {
	{"text", CS_COL_TEXT},
	{"smallint", CS_COL_INT2},
	{"integer", CS_COL_INT4},
	{"bigint", CS_COL_INT8},
	{"real", CS_COL_FLOAT4},
	{"double precision", CS_COL_FLOAT8},
	{"boolean", CS_COL_BOOL},
	{"jsonb", CS_COL_JSONB},
	{"text[]", CS_COL_TEXT_ARRAY},
	{"embedding", CS_COL_EMBEDDING},
	{"uuid", CS_COL_UUID},
	{"timestamptz", CS_COL_TIMESTAMPTZ},
	{"date", CS_COL_DATE},
	{"numeric", CS_COL_NUMERIC},
	{"bytea", CS_COL_BYTEA},
	{"double precision[]", CS_COL_FLOAT8_ARRAY},
	{"integer[]", CS_COL_INT4_ARRAY},
	{"bigint[]", CS_COL_INT8_ARRAY},
	{"json", CS_COL_JSON},
	{"int2", CS_COL_INT2},
	{"int", CS_COL_INT4},
	{"int4", CS_COL_INT4},
	{"int8", CS_COL_INT8},
	{"float4", CS_COL_FLOAT4},
	{"float8", CS_COL_FLOAT8},
	{"bool", CS_COL_BOOL},
	{"vector", CS_COL_EMBEDDING},
	{"timestamp with time zone", CS_COL_TIMESTAMPTZ},
	{"decimal", CS_COL_NUMERIC},
	{"float8[]", CS_COL_FLOAT8_ARRAY},
	{"int[]", CS_COL_INT4_ARRAY},
	{"int4[]", CS_COL_INT4_ARRAY},
	{"int8[]", CS_COL_INT8_ARRAY},
};

#define NTYPE_NAMES (sizeof(type_names) / sizeof(type_names[0]))

/* Reset a spec to an empty one called `name` with the defaults. */
static void spec_reset(cs_tablespec_t *spec, const char *name)
{
	memset(spec, 0, sizeof(*spec));
	snprintf(spec->name, sizeof(spec->name), "%s", name);
	snprintf(spec->schema, sizeof(spec->schema), "public");
	snprintf(spec->topic, sizeof(spec->topic), "%s", name);
	spec->on_conflict = CS_CONFLICT_UPDATE;
	spec->dim = CS_DEFAULT_DIM;
}

int cs_tablespec_builtin(const char *name, cs_tablespec_t *spec)
{
	for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
		const builtin_t *b = &builtins[i];
		if (strcmp(b->name, name) != 0)
			continue;
		spec_reset(spec, name);
		for (int c = 0; c < b->ncols; c++) {
			cs_column_t *col = &spec->cols[c];
			snprintf(col->name, sizeof(col->name), "%s", b->cols[c].name);
			col->type = b->cols[c].type;
			col->in_key = b->cols[c].in_key;
			col->required = b->cols[c].required || col->in_key;
			col->update = !col->in_key;
		}
		spec->ncols = b->ncols;
		return 0;
	}
	return -1;
}

int cs_coltype_parse(const char *sql, cs_coltype_t *type)
{
	for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++) {
		if (strcasecmp(type_names[i].sql, sql) == 0) {
			*type = type_names[i].type;
			return 0;
		}
	}
	return -1;
}

void cs_coltype_list(char *out, size_t size)
{
	size_t len = 0;

	if (size == 0)
		return;
	out[0] = '\0';
	for (size_t i = 0; i < NTYPE_NAMES; i++) {
		size_t j = 0;
		int n;
		while (type_names[j].type != type_names[i].type)
			j++;
		if (j != i) /* an alias */
			continue;
		n = snprintf(out + len, size - len, "%s%s", len ? ", " : "", type_names[i].sql);
		if (n < 0 || (size_t)n >= size - len) {
			out[len] = '\0'; /* whole names only */
			return;
		}
		len += (size_t)n;
	}
}

const char *cs_coltype_sql(cs_coltype_t type)
{
	if (type == CS_COL_EMBEDDING)
		return "real[]";
	for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
		if (type_names[i].type == type)
			return type_names[i].sql;
	return "text";
}

int cs_tablespec_column(const cs_tablespec_t *spec, const char *name)
{
	for (int i = 0; i < spec->ncols; i++)
		if (strcmp(spec->cols[i].name, name) == 0)
			return i;
	return -1;
}

int cs_tablespec_nkeys(const cs_tablespec_t *spec)
{
	int n = 0;
	for (int i = 0; i < spec->ncols; i++)
		n += spec->cols[i].in_key;
	return n;
}

/* True when s is a plain SQL identifier of at most 63 bytes. */
static bool is_identifier(const char *s, size_t len)
{
	if (len == 0 || len >= CS_MAX_NAME || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
			return false;
	return true;
}

/* Copy [s, s+len) into dst (size dsize) with surrounding blanks trimmed and inner runs of
 * blanks collapsed to one space. */
static void copy_squeezed(char *dst, size_t dsize, const char *s, size_t len)
{
	size_t o = 0;
	bool blank = false;

	while (len > 0 && isspace((unsigned char)*s))
		s++, len--;
	while (len > 0 && isspace((unsigned char)s[len - 1]))
		len--;
	for (size_t i = 0; i < len && o + 1 < dsize; i++) {
		if (isspace((unsigned char)s[i])) {
			blank = true;
			continue;
		}
		if (blank && o + 1 < dsize)
			dst[o++] = ' ';
		blank = false;
		if (o + 1 < dsize)
			dst[o++] = s[i];
	}
	dst[o] = '\0';
}

/* Parse one "name type [not null]" item into col. */
static int parse_column(cs_column_t *col, const char *item, char *errstr, size_t errstr_size)
{
	char text[128], why[128], *type;
	size_t tlen, nlen;
	int rc;

	copy_squeezed(text, sizeof(text), item, strlen(item));
	type = strchr(text, ' ');
	if (type == NULL) {
		snprintf(errstr, errstr_size, "column \"%s\" has no type", text);
		return -1;
	}
	nlen = (size_t)(type - text);
	*type++ = '\0';
	if (!is_identifier(text, nlen)) {
		snprintf(errstr, errstr_size, "invalid column name \"%s\"", text);
		return -1;
	}
	memset(col, 0, sizeof(*col));
	memcpy(col->name, text, nlen + 1);
	tlen = strlen(type);
	if (tlen > 9 && strcasecmp(type + tlen - 9, " not null") == 0) {
		col->required = true;
		type[tlen - 9] = '\0';
	}
	rc = cs_embedding_parse_sql(type, &col->emb_type, &col->emb_dim, why, sizeof(why));
	if (rc <= 0) { /* vector(384), halfvec(768), real[]: an embedding column of that type */
		col->type = CS_COL_EMBEDDING;
		if (rc == 0)
			return 0;
		snprintf(errstr, errstr_size, "column \"%s\": %s", col->name, why);
		return -1;
	}
	if (cs_coltype_parse(type, &col->type) != 0) {
		char list[512];
		cs_coltype_list(list, sizeof(list));
		snprintf(errstr, errstr_size,
			 "column \"%s\" has unsupported type \"%s\" (supported: %s)", col->name,
			 type, list);
		return -1;
	}
	return 0;
}

/* Mark the columns named in the comma-separated `key` as key columns. */
static int parse_key(cs_tablespec_t *spec, const char *key, char *errstr, size_t errstr_size)
{
	const char *p = key;

	while (p != NULL && *p != '\0') {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		char name[CS_MAX_NAME + 1];
		int c;

		copy_squeezed(name, sizeof(name), p, len);
		if (name[0] != '\0') {
			c = cs_tablespec_column(spec, name);
			if (c < 0) {
				snprintf(errstr, errstr_size, "key column \"%s\" is not in the column list",
					 name);
				return -1;
			}
			if (spec->cols[c].type == CS_COL_JSON) {
				snprintf(errstr, errstr_size,
					 "key column \"%s\" is json, which has no equality", name);
				return -1;
			}
			/* one jsonb document has many encodings (key order, 1 and 1.0): two in one
			 * batch would be one key to PostgreSQL and two to the batch, and the merge
			 * would refuse to touch the row twice */
			if (spec->cols[c].type == CS_COL_JSONB ||
			    spec->cols[c].type == CS_COL_EMBEDDING) {
				snprintf(errstr, errstr_size,
					 "key column \"%s\" is %s, which cannot be a conflict key (use "
					 "text or a scalar type)", name,
					 spec->cols[c].type == CS_COL_JSONB ? "jsonb" : "an embedding");
				return -1;
			}
			spec->cols[c].in_key = true;
			spec->cols[c].required = true;
		}
		p = comma ? comma + 1 : NULL;
	}
	return 0;
}

int cs_tablespec_parse_columns(cs_tablespec_t *spec, const char *columns, const char *key,
			       char *errstr, size_t errstr_size)
{
	const char *p = columns;

	spec->ncols = 0;
	while (p != NULL && *p != '\0') {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		char item[128];

		if (len >= sizeof(item)) {
			snprintf(errstr, errstr_size, "column definition too long: \"%.40s...\"", p);
			return -1;
		}
		memcpy(item, p, len);
		item[len] = '\0';
		if (spec->ncols == CS_MAX_COLUMNS) {
			snprintf(errstr, errstr_size, "too many columns (at most %d)", CS_MAX_COLUMNS);
			return -1;
		}
		if (parse_column(&spec->cols[spec->ncols], item, errstr, errstr_size) != 0)
			return -1;
		if (cs_tablespec_column(spec, spec->cols[spec->ncols].name) >= 0) {
			snprintf(errstr, errstr_size, "column \"%s\" is listed twice",
				 spec->cols[spec->ncols].name);
			return -1;
		}
		spec->ncols++;
		p = comma ? comma + 1 : NULL;
	}
	if (spec->ncols == 0) {
		snprintf(errstr, errstr_size, "column list is empty");
		return -1;
	}
	if (parse_key(spec, key, errstr, errstr_size) != 0)
		return -1;
	for (int i = 0; i < spec->ncols; i++)
		spec->cols[i].update = !spec->cols[i].in_key;
	return 0;
}
