/*
 * test_batch.c - deduplication by conflict key, offsets per partition, byte accounting, bounds
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "copysink/batch.h"
#include "copysink/writer.h"

/* Two tables: 0 = update, 1 = skip, 2 = insert-only. */
static cs_tablespec_t specs[3];

/* Push one row whose tuple is `value` and whose key is `key`. */
static void push(cs_batch_t *b, int t, const char *topic, int32_t partition, int64_t offset,
		 const char *key, const char *value)
{
	cs_buf_t *tuples = cs_batch_tuples(b, t), *keys = cs_batch_keys(b);
	size_t ts = tuples->len, ks = keys->len;
	int part = cs_batch_add_message(b, topic, partition, offset, key, strlen(key), value,
					strlen(value), true);

	assert_true(part >= 0);
	assert_int_equal(cs_buf_append(tuples, value, strlen(value)), 0);
	assert_int_equal(cs_buf_append(keys, key, strlen(key)), 0);
	assert_int_equal(cs_batch_push_row(b, t, part, offset, 0, ts, ks, false), 0);
}

/* The live tuples of table t, concatenated with '|' between them. */
static void live_values(cs_batch_t *b, int t, char *out, size_t size)
{
	const cs_batch_table_t *tab = cs_batch_table(b, t);
	size_t o = 0;

	out[0] = '\0';
	for (size_t r = 0; r < tab->nrows; r++) {
		if (!tab->rows[r].live)
			continue;
		o += (size_t)snprintf(out + o, size - o, "%s%.*s", o ? "|" : "",
				      (int)tab->rows[r].tuple_len, tab->tuples.data + tab->rows[r].tuple_off);
	}
}

static int setup(void **state)
{
	memset(specs, 0, sizeof(specs));
	specs[0].on_conflict = CS_CONFLICT_UPDATE;
	specs[1].on_conflict = CS_CONFLICT_SKIP;
	specs[2].on_conflict = CS_CONFLICT_NONE;
	*state = cs_batch_new(specs, 3);
	return *state == NULL;
}

static int teardown(void **state)
{
	cs_batch_destroy(*state);
	return 0;
}

/* A table of pushes and the expected live contents per mode. */
typedef struct dedup_case {
	const char *name;
	int table;
	const char *keys[6];
	const char *values[6];
	const char *expected;
	size_t live;
	size_t entries;
} dedup_case_t;

static const dedup_case_t dedup_cases[] = {
	{"update keeps the latest", 0, {"a", "b", "a", "a", "c", NULL},
	 {"a1", "b1", "a2", "a3", "c1", NULL}, "b1|a3|c1", 3, 5},
	{"skip keeps the first", 1, {"a", "b", "a", "a", "c", NULL},
	 {"a1", "b1", "a2", "a3", "c1", NULL}, "a1|b1|c1", 3, 5},
	{"insert-only keeps all", 2, {"", "", "", NULL}, {"x1", "x2", "x3", NULL}, "x1|x2|x3", 3, 3},
	{"distinct keys all live", 0, {"k1", "k2", "k3", "k4", NULL},
	 {"v1", "v2", "v3", "v4", NULL}, "v1|v2|v3|v4", 4, 4},
};

static void test_dedup_table(void **state)
{
	cs_batch_t *b = *state;
	char got[256];

	for (size_t i = 0; i < sizeof(dedup_cases) / sizeof(dedup_cases[0]); i++) {
		const dedup_case_t *c = &dedup_cases[i];
		cs_batch_reset(b);
		for (int k = 0; c->keys[k] != NULL; k++)
			push(b, c->table, "topic", 0, k, c->keys[k], c->values[k]);
		live_values(b, c->table, got, sizeof(got));
		print_message("case: %s\n", c->name);
		assert_string_equal(got, c->expected);
		assert_int_equal(cs_batch_live_rows(b), c->live);
		assert_int_equal(cs_batch_entries(b), c->entries);
	}
}

/* The same key in two tables is two rows. */
static void test_same_key_other_table(void **state)
{
	cs_batch_t *b = *state;
	char got[64];

	push(b, 0, "t0", 0, 0, "k", "u1");
	push(b, 1, "t1", 0, 0, "k", "s1");
	push(b, 0, "t0", 0, 1, "k", "u2");
	push(b, 1, "t1", 0, 1, "k", "s2");
	live_values(b, 0, got, sizeof(got));
	assert_string_equal(got, "u2");
	live_values(b, 1, got, sizeof(got));
	assert_string_equal(got, "s1");
}

/* Offsets: next offset = highest + 1, per topic and partition. */
static void test_partitions(void **state)
{
	cs_batch_t *b = *state;
	const cs_batch_part_t *parts;
	int n;

	assert_true(cs_batch_empty(b));
	push(b, 0, "a", 0, 10, "k1", "v");
	push(b, 0, "a", 1, 5, "k2", "v");
	push(b, 0, "a", 0, 11, "k3", "v");
	assert_true(cs_batch_add_message(b, "b", 0, 99, NULL, 0, NULL, 0, false) >= 0);
	parts = cs_batch_parts(b, &n);
	assert_int_equal(n, 3);
	assert_string_equal(parts[0].topic, "a");
	assert_int_equal(parts[0].partition, 0);
	assert_int_equal(parts[0].first_offset, 10);
	assert_int_equal(parts[0].next_offset, 12);
	assert_int_equal(parts[1].partition, 1);
	assert_int_equal(parts[1].next_offset, 6);
	assert_string_equal(parts[2].topic, "b");
	assert_int_equal(parts[2].next_offset, 100);
	assert_false(cs_batch_empty(b));
}

/* Dropping a revoked partition kills its rows and hides it from the offsets. */
static void test_drop_partition(void **state)
{
	cs_batch_t *b = *state;
	const cs_batch_part_t *parts;
	char got[64];
	int n;

	push(b, 0, "a", 0, 1, "k1", "p0");
	push(b, 0, "a", 1, 1, "k2", "p1");
	cs_batch_drop_partition(b, "a", 0);
	live_values(b, 0, got, sizeof(got));
	assert_string_equal(got, "p1");
	parts = cs_batch_parts(b, &n);
	assert_int_equal(parts[0].partition, -1);
	assert_int_equal(parts[1].partition, 1);
	assert_int_equal(cs_batch_live_rows(b), 1);
}

/* The original message stays available for a row (for the dead-letter topic). */
static void test_row_message(void **state)
{
	cs_batch_t *b = *state;
	const cs_batch_table_t *tab;
	const void *key, *value;
	size_t klen, vlen;

	push(b, 0, "a", 0, 1, "key-1", "value-1");
	push(b, 0, "a", 0, 2, "key-2", "value-2");
	tab = cs_batch_table(b, 0);
	cs_batch_row_message(b, &tab->rows[1], &key, &klen, &value, &vlen);
	assert_int_equal(klen, 5);
	assert_memory_equal(key, "key-2", 5);
	assert_int_equal(vlen, 7);
	assert_memory_equal(value, "value-2", 7);
}

/* A skipped duplicate's bytes are released at once; bytes count tuples, keys and messages. */
static void test_bytes(void **state)
{
	cs_batch_t *b = *state;
	size_t before;

	push(b, 1, "a", 0, 1, "k", "0123456789");
	before = cs_batch_bytes(b);
	assert_int_equal(before, 10 + 1 + (8 + 1 + 10));
	push(b, 1, "a", 0, 2, "k", "abcdefghij");
	/* only the kept message bytes grew */
	assert_int_equal(cs_batch_bytes(b), before + 8 + 1 + 10);
	cs_batch_reset(b);
	assert_int_equal(cs_batch_bytes(b), 0);
	assert_true(cs_batch_empty(b));
}

/* Many keys: the hash table grows and still finds every duplicate. */
static void test_many_keys(void **state)
{
	cs_batch_t *b = *state;
	char key[32], value[32];

	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 5000; i++) {
			snprintf(key, sizeof(key), "key-%d", i);
			snprintf(value, sizeof(value), "r%d-%d", round, i);
			push(b, 0, "a", 0, round * 5000 + i, key, value);
		}
	assert_int_equal(cs_batch_live_rows(b), 5000);
	assert_int_equal(cs_batch_entries(b), 10000);
	for (size_t r = 0; r < 5000; r++)
		assert_false(cs_batch_table(b, 0)->rows[r].live);
	for (size_t r = 5000; r < 10000; r++)
		assert_true(cs_batch_table(b, 0)->rows[r].live);
}

/* The bounds: each one alone makes the batch due, exactly at the bound and not before; an empty
 * batch never is, whatever its age. */
static void test_due(void **state)
{
	cs_batch_t *b = *state;
	const cs_batch_bounds_t bounds = {.max_rows = 3, .max_bytes = 1000, .linger_ms = 200};
	cs_batch_bounds_t bytes_only = {.max_rows = 1000, .max_bytes = 0, .linger_ms = 1000000};
	char big[400];

	assert_false(cs_batch_due(b, &bounds, 1000000));
	push(b, 0, "t", 0, 1, "a", "1");
	assert_false(cs_batch_due(b, &bounds, 0));
	assert_false(cs_batch_due(b, &bounds, 199));
	assert_true(cs_batch_due(b, &bounds, 200)); /* linger_ms */
	push(b, 0, "t", 0, 2, "b", "2");
	assert_false(cs_batch_due(b, &bounds, 0));
	push(b, 0, "t", 0, 3, "a", "3"); /* a duplicate still counts as an entry offered */
	assert_true(cs_batch_due(b, &bounds, 0)); /* max_rows */
	cs_batch_reset(b);
	assert_false(cs_batch_due(b, &bounds, 1000000));

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	push(b, 0, "t", 0, 4, "c", big);
	bytes_only.max_bytes = (int64_t)cs_batch_bytes(b) + 1;
	assert_false(cs_batch_due(b, &bytes_only, 0));
	push(b, 0, "t", 0, 5, "d", "5");
	assert_true(cs_batch_due(b, &bytes_only, 0)); /* max_bytes */
	assert_true((int64_t)cs_batch_bytes(b) >= bytes_only.max_bytes);
}

/* SQLSTATE classes decide what the worker does. */
static void test_classify(void **state)
{
	static const struct {
		const char *state;
		cs_err_t err;
	} cases[] = {
		{"22003", CS_ERR_DATA},      {"23502", CS_ERR_DATA},      {"23514", CS_ERR_DATA},
		{"54000", CS_ERR_DATA},      {"08006", CS_ERR_RETRIABLE}, {"57P01", CS_ERR_RETRIABLE},
		{"40001", CS_ERR_RETRIABLE}, {"40P01", CS_ERR_RETRIABLE}, {"53100", CS_ERR_RETRIABLE},
		{"57014", CS_ERR_RETRIABLE}, {"25006", CS_ERR_RETRIABLE}, {"55P03", CS_ERR_RETRIABLE},
		{"42P01", CS_ERR_FATAL},     {"42501", CS_ERR_FATAL},     {NULL, CS_ERR_RETRIABLE},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(cs_writer_classify(cases[i].state), cases[i].err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_dedup_table, setup, teardown),
		cmocka_unit_test_setup_teardown(test_same_key_other_table, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partitions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drop_partition, setup, teardown),
		cmocka_unit_test_setup_teardown(test_row_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_due, setup, teardown),
		cmocka_unit_test(test_classify),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
