/*
 * test_produce.c - JSON to msgpack, Kafka keys, input errors of the produce command
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "copysink/config.h"
#include "copysink/produce.h"

/* Parse JSON text; fails the test when it does not parse. */
static json_t *parse(const char *text)
{
	json_error_t jerr;
	json_t *v = json_loads(text, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);

	if (v == NULL)
		fail_msg("bad test JSON %s: %s", text, jerr.text);
	return v;
}

/* The bytes of sbuf as lower-case hex, in out (size >= 2 * size + 1). */
static void to_hex(const msgpack_sbuffer *sbuf, char *out, size_t size)
{
	out[0] = '\0';
	for (size_t i = 0; i < sbuf->size && 2 * i + 2 < size; i++)
		snprintf(out + 2 * i, 3, "%02x", (unsigned char)sbuf->data[i]);
}

/* Every JSON type to its msgpack encoding, byte for byte. */
static void test_json_to_msgpack(void **state)
{
	static const struct {
		const char *json;
		const char *hex;
	} cases[] = {
		{"{}", "80"},
		{"{\"a\":1}", "81a16101"},
		{"{\"b\":1,\"a\":2}", "82a16201a16102"}, /* document order */
		{"{\"n\":-1,\"m\":-32,\"o\":-33}", "83a16effa16de0a16fd0df"},
		{"{\"p\":127,\"q\":128,\"r\":255,\"s\":256,\"t\":65536}",
		 "85a1707fa171cc80a172ccffa173cd0100a174ce00010000"},
		{"{\"x\":-200}", "81a178d1ff38"},
		{"{\"big\":1099511627776}", "81a3626967cf0000010000000000"},
		{"{\"neg\":-1099511627776}", "81a36e6567d3ffffff0000000000"},
		{"{\"max\":9223372036854775807}", "81a36d6178cf7fffffffffffffff"},
		{"{\"min\":-9223372036854775808}", "81a36d696ed38000000000000000"},
		{"{\"x\":1.5}", "81a178cb3ff8000000000000"},
		{"{\"x\":1.0}", "81a178cb3ff0000000000000"}, /* a JSON real stays a float */
		{"{\"x\":-0.25}", "81a178cbbfd0000000000000"},
		{"{\"s\":\"h\\u00e9llo\"}", "81a173a668c3a96c6c6f"},
		{"{\"s\":\"a\\u0000b\"}", "81a173a3610062"},
		{"{\"s\":\"\"}", "81a173a0"},
		{"{\"s\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
		 "81a173d9206161616161616161616161616161616161616161616161616161616161616161"},
		{"{\"t\":true,\"f\":false,\"z\":null}", "83a174c3a166c2a17ac0"},
		{"{\"e\":[],\"o\":{}}", "82a16590a16f80"},
		{"{\"v\":[1,[2,\"3\"],{\"k\":null}]}", "81a17693019202a13381a16bc0"},
		{"[1,2]", "920102"},
		{"\"x\"", "a178"},
		{"null", "c0"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *v = json_loads(cases[i].json, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
		msgpack_sbuffer sbuf;
		msgpack_packer pk;
		char hex[256];

		assert_non_null(v);
		msgpack_sbuffer_init(&sbuf);
		msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
		assert_int_equal(cs_produce_json_to_msgpack(v, &pk), 0);
		to_hex(&sbuf, hex, sizeof(hex));
		if (strcmp(hex, cases[i].hex) != 0)
			fail_msg("case %zu %s:\n got  %s\n want %s", i, cases[i].json, hex,
				 cases[i].hex);
		msgpack_sbuffer_destroy(&sbuf);
		json_decref(v);
	}
}

/* Build a spec: a built-in name, or "columns|key" for an operator's table. */
static void make_spec(const char *what, cs_tablespec_t *spec)
{
	char columns[256], why[256], *bar;

	if (cs_tablespec_builtin(what, spec) == 0)
		return;
	memset(spec, 0, sizeof(*spec));
	snprintf(columns, sizeof(columns), "%s", what);
	bar = strchr(columns, '|');
	assert_non_null(bar);
	*bar = '\0';
	if (cs_tablespec_parse_columns(spec, columns, bar + 1, why, sizeof(why)) != 0)
		fail_msg("%s: %s", what, why);
}

/* The key is the array of the key columns' values in spec order; none without key columns. */
static void test_key(void **state)
{
	static const struct {
		const char *spec;
		const char *json;
		int nkeys;
		const char *hex;
	} cases[] = {
		{"memory_entries", "{\"namespace\":\"n\",\"key\":\"k\",\"value\":\"v\"}", 2,
		 "92a16ea16b"},
		{"memory_entries", "{\"value\":\"v\",\"key\":\"k\",\"namespace\":\"n\"}", 2,
		 "92a16ea16b"},
		{"memory_entries", "{\"namespace\":\"n\"}", 2, "92a16ec0"}, /* missing: nil */
		{"patterns", "{\"name\":\"p\",\"confidence\":0.5}", 1, "91a170"},
		{"patterns", "{\"name\":{\"x\":1}}", 1, "9181a17801"},
		{"trajectories", "{\"step_number\":3,\"trajectory_id\":\"t\",\"action\":\"a\"}", 2,
		 "92a17403"},
		{"a integer, b text|b, a", "{\"b\":\"x\",\"a\":1}", 2, "9201a178"},
		{"at bigint, what text|", "{\"at\":1,\"what\":\"w\"}", 0, ""},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *obj = parse(cases[i].json);
		cs_tablespec_t spec;
		msgpack_sbuffer sbuf;
		msgpack_packer pk;
		char hex[256];

		make_spec(cases[i].spec, &spec);
		msgpack_sbuffer_init(&sbuf);
		msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
		assert_int_equal(cs_produce_pack_key(&spec, obj, &pk), cases[i].nkeys);
		to_hex(&sbuf, hex, sizeof(hex));
		if (strcmp(hex, cases[i].hex) != 0)
			fail_msg("case %zu %s:\n got  %s\n want %s", i, cases[i].json, hex,
				 cases[i].hex);
		msgpack_sbuffer_destroy(&sbuf);
		json_decref(obj);
	}
}

/* A writer that fails after `*budget` calls. */
static int failing_write(void *data, const char *buf, size_t len)
{
	int *budget = data;

	(void)buf;
	(void)len;
	return (*budget)-- > 0 ? 0 : -1;
}

/* A writer failure anywhere in a nested value is reported, never ignored. */
static void test_writer_failure(void **state)
{
	json_t *obj = parse("{\"namespace\":\"n\",\"key\":[1,{\"a\":[true,null,2.5,\"s\"]}]}");
	cs_tablespec_t spec;
	int calls = 0;
	msgpack_packer pk;

	make_spec("memory_entries", &spec);
	/* count the writes of a full run, then fail at each of them */
	calls = 1 << 20;
	msgpack_packer_init(&pk, &calls, failing_write);
	assert_int_equal(cs_produce_json_to_msgpack(obj, &pk), 0);
	calls = (1 << 20) - calls;
	assert_true(calls > 10);
	for (int k = 0; k < calls; k++) {
		int budget = k;
		msgpack_packer_init(&pk, &budget, failing_write);
		assert_int_equal(cs_produce_json_to_msgpack(obj, &pk), -1);
	}
	for (int k = 0; k < 6; k++) {
		int budget = k;
		msgpack_packer_init(&pk, &budget, failing_write);
		assert_int_equal(cs_produce_pack_key(&spec, obj, &pk), -1);
	}
	json_decref(obj);
}

/* A configuration with one table and a broker nobody listens on (messages time out in 1 s). */
static void load_cfg(cs_config_t *cfg)
{
	char *ov[] = {"kafka.bootstrap.servers=127.0.0.1:1", "kafka.message.timeout.ms=1000",
		      "kafka.group.id=ignored-by-producers", "table.patterns.topic=pt",
		      "worker.log_level=error"};
	char err[512];

	cs_config_init(cfg);
	if (cs_config_load(cfg, NULL, NULL, ov, 5, err, sizeof(err)) != 0)
		fail_msg("%s", err);
}

/* Write text to a temporary file; path receives its name. */
static void write_input(const char *text, char *path, size_t size)
{
	FILE *f;
	int fd;

	snprintf(path, size, "/tmp/copysink-test-produce-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

/* Input errors name the line; blank lines count but are skipped. No broker needed: the bad
 * line comes before anything is queued, or the queued message times out in 1 s. */
static void test_input_errors(void **state)
{
	static const struct {
		const char *input;
		const char *err; /* after "<path>" */
	} cases[] = {
		{"\n  \n[1,2]\n", ":3: expected a JSON object, got an array"},
		{"\"entry\"\n", ":1: expected a JSON object, got a string"},
		{"\n\n\nnull\n", ":4: expected a JSON object, got null"},
		{"{\"name\":\"a\",}\n",
		 ":1: invalid JSON at column 13: string or '}' expected near '}'"},
		{"{\"name\":\"a\",\"name\":\"b\"}\n",
		 ":1: invalid JSON at column 18: duplicate object key near '\"name\"'"},
		{"{\"name\":\"a\"}\n\n{\"name\":\"b\"} x\n",
		 ":3: invalid JSON at column 14: end of file expected near 'x'"},
	};
	cs_config_t cfg;
	char path[64], err[512], want[600];

	load_cfg(&cfg);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		write_input(cases[i].input, path, sizeof(path));
		assert_int_equal(cs_produce_run(&cfg, "patterns", NULL, path, err, sizeof(err)),
				 -1);
		snprintf(want, sizeof(want), "%s%s", path, cases[i].err);
		if (strcmp(err, want) != 0)
			fail_msg("case %zu:\n got  %s\n want %s", i, err, want);
		unlink(path);
	}
	assert_int_equal(cs_produce_run(&cfg, "nope", NULL, path, err, sizeof(err)), -1);
	assert_string_equal(err, "table \"nope\" is not in the configuration");
	assert_int_equal(cs_produce_run(&cfg, "patterns", NULL, "/nonexistent/x.jsonl", err,
					sizeof(err)),
			 -1);
	assert_string_equal(err, "could not open \"/nonexistent/x.jsonl\": No such file or "
				 "directory");
	cs_config_cleanup(&cfg);
}

/* Undelivered messages are an error naming the topic. */
static void test_delivery_failure(void **state)
{
	cs_config_t cfg;
	char path[64], err[512];

	load_cfg(&cfg);
	write_input("{\"name\":\"a\"}\n{\"name\":\"b\"}\n", path, sizeof(path));
	assert_int_equal(cs_produce_run(&cfg, "patterns", "other", path, err, sizeof(err)), -1);
	assert_string_equal(err, "2 of 2 entries were not delivered to \"other\": Local: Message "
				 "timed out");
	unlink(path);
	cs_config_cleanup(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_to_msgpack),
		cmocka_unit_test(test_key),
		cmocka_unit_test(test_writer_failure),
		cmocka_unit_test(test_input_errors),
		cmocka_unit_test(test_delivery_failure),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
