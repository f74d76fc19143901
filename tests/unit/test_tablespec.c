/*
 * test_tablespec.c - built-in specs and operators' column lists
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "copysink/tablespec.h"

/* The built-in specs, column by column. */
static void test_builtins(void **state)
{
	static const struct {
		const char *table;
		const char *cols;  /* name:type:required:key, space separated */
	} cases[] = {
		{"memory_entries", "namespace:0:1:1 key:0:1:1 value:0:1:0 embedding:9:0:0 metadata:7:0:0 tags:8:0:0"},
		{"patterns", "name:0:1:1 pattern_type:0:1:0 description:0:0:0 embedding:9:0:0 confidence:5:0:0 usage_count:2:0:0 success_count:2:0:0 metadata:7:0:0"},
		{"trajectories", "trajectory_id:0:1:1 step_number:2:1:1 action:0:1:0 state:7:0:0 reward:5:0:0 embedding:9:0:0 metadata:7:0:0"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cs_tablespec_t spec;
		char got[512] = "";
		size_t off = 0;

		assert_int_equal(cs_tablespec_builtin(cases[i].table, &spec), 0);
		assert_string_equal(spec.name, cases[i].table);
		assert_string_equal(spec.schema, "public");
		assert_int_equal(spec.dim, 384);
		for (int c = 0; c < spec.ncols; c++) {
			const cs_column_t *col = &spec.cols[c];
			off += (size_t)snprintf(got + off, sizeof(got) - off, "%s%s:%d:%d:%d",
						c ? " " : "", col->name, (int)col->type, col->required,
						col->in_key);
			assert_int_equal(col->update, !col->in_key);
		}
		assert_string_equal(got, cases[i].cols);
	}
	assert_int_equal(cs_tablespec_builtin("nope", &(cs_tablespec_t){0}), -1);
}

/* An operator's column list with a key, types in several spellings. */
static void test_parse_columns(void **state)
{
	cs_tablespec_t spec;
	char err[256];

	memset(&spec, 0, sizeof(spec));
	assert_int_equal(cs_tablespec_parse_columns(&spec,
		"id bigint not null,  body  text NOT NULL, payload jsonb, labels text[], "
		"score double precision, e embedding, n int4, ok boolean",
		"id", err, sizeof(err)), 0);
	assert_int_equal(spec.ncols, 8);
	assert_string_equal(spec.cols[0].name, "id");
	assert_int_equal(spec.cols[0].type, CS_COL_INT8);
	assert_true(spec.cols[0].in_key && spec.cols[0].required && !spec.cols[0].update);
	assert_string_equal(spec.cols[1].name, "body");
	assert_true(spec.cols[1].required && !spec.cols[1].in_key && spec.cols[1].update);
	assert_int_equal(spec.cols[2].type, CS_COL_JSONB);
	assert_int_equal(spec.cols[3].type, CS_COL_TEXT_ARRAY);
	assert_int_equal(spec.cols[4].type, CS_COL_FLOAT8);
	assert_int_equal(spec.cols[5].type, CS_COL_EMBEDDING);
	assert_int_equal(spec.cols[6].type, CS_COL_INT4);
	assert_int_equal(spec.cols[7].type, CS_COL_BOOL);
	assert_int_equal(cs_tablespec_nkeys(&spec), 1);
	assert_int_equal(cs_tablespec_column(&spec, "score"), 4);
	assert_int_equal(cs_tablespec_column(&spec, "nope"), -1);

	/* insert-only: no key */
	assert_int_equal(cs_tablespec_parse_columns(&spec, "a text, b integer", "", err,
						    sizeof(err)), 0);
	assert_int_equal(cs_tablespec_nkeys(&spec), 0);
}

/* The types a column list takes, as the unknown-type error lists them. */
#define SUPPORTED                                                                              \
	"text, smallint, integer, bigint, real, double precision, boolean, jsonb, text[], "    \
	"embedding, uuid, timestamptz, date, numeric, bytea, double precision[], integer[], "  \
	"bigint[], json"

/* Every rejection names what is wrong. */
static void test_parse_errors(void **state)
{
	static const struct {
		const char *columns, *key, *error;
	} cases[] = {
		{"id", "", "column \"id\" has no type"},
		{"id money", "", "column \"id\" has unsupported type \"money\" (supported: "
				 SUPPORTED ")"},
		{"id timestamp", "", "column \"id\" has unsupported type \"timestamp\" (supported: "
				     SUPPORTED ")"},
		{"id bigint, j json", "id, j", "key column \"j\" is json, which has no equality"},
		{"id bigint, j jsonb", "id, j",
		 "key column \"j\" is jsonb, which cannot be a conflict key (use text or a scalar "
		 "type)"},
		{"id bigint, e vector(3)", "id, e",
		 "key column \"e\" is an embedding, which cannot be a conflict key (use text or a "
		 "scalar type)"},
		{"1id text", "", "invalid column name \"1id\""},
		{"a text, a text", "", "column \"a\" is listed twice"},
		{"a text", "b", "key column \"b\" is not in the column list"},
		{"", "", "column list is empty"},
		{"x\"y text", "", "invalid column name \"x\"y\""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cs_tablespec_t spec;
		char err[512] = "";
		memset(&spec, 0, sizeof(spec));
		assert_int_equal(cs_tablespec_parse_columns(&spec, cases[i].columns, cases[i].key,
							    err, sizeof(err)), -1);
		assert_string_equal(err, cases[i].error);
	}
}

/* SQL spellings of the types used in DDL. */
static void test_type_sql(void **state)
{
	cs_coltype_t t;

	assert_string_equal(cs_coltype_sql(CS_COL_EMBEDDING), "real[]");
	assert_string_equal(cs_coltype_sql(CS_COL_FLOAT8), "double precision");
	assert_string_equal(cs_coltype_sql(CS_COL_TEXT_ARRAY), "text[]");
	assert_string_equal(cs_coltype_sql(CS_COL_INT4), "integer");
	assert_int_equal(cs_coltype_parse("DOUBLE PRECISION", &t), 0);
	assert_int_equal(t, CS_COL_FLOAT8);
	assert_int_equal(cs_coltype_parse("vector", &t), 0);
	assert_int_equal(t, CS_COL_EMBEDDING);
	assert_int_equal(cs_coltype_parse("timestamp", &t), -1);
	assert_int_equal(cs_coltype_parse("money", &t), -1);
}

/* The types of src/pgbinary.c and json: every spelling, and the one DDL uses. */
static void test_new_types(void **state)
{
	static const struct {
		const char *sql;
		cs_coltype_t type;
		const char *ddl;
	} cases[] = {
		{"uuid", CS_COL_UUID, "uuid"},
		{"UUID", CS_COL_UUID, "uuid"},
		{"timestamptz", CS_COL_TIMESTAMPTZ, "timestamptz"},
		{"timestamp with time zone", CS_COL_TIMESTAMPTZ, "timestamptz"},
		{"date", CS_COL_DATE, "date"},
		{"numeric", CS_COL_NUMERIC, "numeric"},
		{"decimal", CS_COL_NUMERIC, "numeric"},
		{"bytea", CS_COL_BYTEA, "bytea"},
		{"double precision[]", CS_COL_FLOAT8_ARRAY, "double precision[]"},
		{"float8[]", CS_COL_FLOAT8_ARRAY, "double precision[]"},
		{"integer[]", CS_COL_INT4_ARRAY, "integer[]"},
		{"int[]", CS_COL_INT4_ARRAY, "integer[]"},
		{"int4[]", CS_COL_INT4_ARRAY, "integer[]"},
		{"bigint[]", CS_COL_INT8_ARRAY, "bigint[]"},
		{"int8[]", CS_COL_INT8_ARRAY, "bigint[]"},
		{"json", CS_COL_JSON, "json"},
	};
	cs_tablespec_t spec;
	char list[512], err[512];
	cs_coltype_t t;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(cs_coltype_parse(cases[i].sql, &t), 0);
		assert_int_equal(t, cases[i].type);
		assert_string_equal(cs_coltype_sql(t), cases[i].ddl);
	}
	cs_coltype_list(list, sizeof(list));
	assert_string_equal(list, SUPPORTED);
	cs_coltype_list(list, 12); /* truncated at a whole name */
	assert_string_equal(list, "text");
	memset(&spec, 0, sizeof(spec));
	assert_int_equal(cs_tablespec_parse_columns(&spec,
		"id uuid not null, at timestamp  with time zone not null, d date, n numeric, "
		"b bytea, f double precision[], i integer[], l bigint[], j json",
		"id, at", err, sizeof(err)), 0);
	assert_int_equal(spec.ncols, 9);
	assert_int_equal(spec.cols[1].type, CS_COL_TIMESTAMPTZ);
	assert_true(spec.cols[1].in_key && spec.cols[1].required);
	assert_int_equal(spec.cols[8].type, CS_COL_JSON);
	assert_int_equal(cs_tablespec_nkeys(&spec), 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_builtins),
		cmocka_unit_test(test_parse_columns),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_type_sql),
		cmocka_unit_test(test_new_types),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
