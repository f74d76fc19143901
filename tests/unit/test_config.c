/*
 * test_config.c - file, environment and override layers, errors, masking, help
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

/* The example of the README and of conf/copysink.ini; it must parse as written. */
static const char example_ini[] =
	"[kafka]                 ; every key in this section goes to librdkafka as is\n"
	"bootstrap.servers = 127.0.0.1:9092\n"
	"group.id = copysink\n"
	"\n"
	"[postgres]\n"
	"conninfo = host=127.0.0.1 port=5432 dbname=copysink\n"
	"\n"
	"[batch]\n"
	"max_rows = 10000\n"
	"max_bytes = 33554432\n"
	"linger_ms = 200\n"
	"\n"
	"[dlq]\n"
	"topic = copysink.dlq    ; optional; without it, <source topic>.dlq\n"
	"\n"
	"[table memory_entries]\n"
	"topic = memory.entries\n"
	"on_conflict = update    ; update | skip\n"
	"\n"
	"[table patterns]\n"
	"topic = memory.patterns\n"
	"on_conflict = update\n"
	"\n"
	"[table trajectories]\n"
	"topic = memory.trajectories\n"
	"on_conflict = skip\n";

/* An operator's own table, from the README. */
static const char events_ini[] =
	"[table events]\n"
	"topic = app.events\n"
	"on_conflict = skip\n"
	"columns = id bigint not null, body text not null, payload jsonb, labels text[], "
	"embedding embedding\n"
	"key = id\n"
	"dim = 8\n";

/* Write text to a new temporary file. @returns its path (static buffer). */
static const char *write_temp(const char *text)
{
	static char path[64];
	FILE *f;
	int fd;

	snprintf(path, sizeof(path), "/tmp/copysink-test-config-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	return path;
}

/* Load text as a file with envp and overrides. @returns cs_config_load's result. */
static int load_text(cs_config_t *cfg, const char *text, char *const *envp,
		     char *const *overrides, int noverrides, char *err, size_t errsize,
		     char *path_out, size_t path_size)
{
	const char *path = text ? write_temp(text) : NULL;
	int rc;

	if (path_out != NULL)
		snprintf(path_out, path_size, "%s", path ? path : "");
	cs_config_init(cfg);
	err[0] = '\0';
	rc = cs_config_load(cfg, path, envp, overrides, noverrides, err, errsize);
	if (path != NULL)
		unlink(path);
	return rc;
}

/* The value of [kafka] key, or NULL. */
static const char *kafka_get(const cs_config_t *cfg, const char *key)
{
	for (int i = 0; i < cfg->nkafka; i++)
		if (strcmp(cfg->kafka[i].key, key) == 0)
			return cfg->kafka[i].value;
	return NULL;
}

/* The table called name, or NULL. */
static const cs_tablespec_t *table_get(const cs_config_t *cfg, const char *name)
{
	for (int t = 0; t < cfg->ntables; t++)
		if (strcmp(cfg->tables[t].name, name) == 0)
			return &cfg->tables[t];
	return NULL;
}

/* cs_config_print into a string (caller frees). */
static char *print_to_string(const cs_config_t *cfg)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	cs_config_print(cfg, f);
	assert_int_equal(fclose(f), 0);
	return buf;
}

/* The worker keys that the example leaves at their defaults. */
static void assert_worker_defaults(const cs_config_t *cfg)
{
	assert_int_equal(cfg->stats_interval_s, 10);
	assert_int_equal(cfg->shutdown_grace_ms, 20000);
	assert_int_equal(cfg->retry_backoff_ms, 200);
	assert_int_equal(cfg->retry_backoff_max_ms, 10000);
	assert_int_equal(cfg->max_message_bytes, 16777216);
	assert_string_equal(cfg->log_format, "logfmt");
	assert_string_equal(cfg->log_level, "info");
	assert_string_equal(cfg->http_listen, "127.0.0.1:9187");
	assert_string_equal(cfg->pg_staging, "session");
}

/* Every value of the example, exactly. */
static void assert_example(const cs_config_t *cfg)
{
	static const struct {
		const char *name, *topic;
		cs_conflict_t mode;
	} tables[] = {
		{"memory_entries", "memory.entries", CS_CONFLICT_UPDATE},
		{"patterns", "memory.patterns", CS_CONFLICT_UPDATE},
		{"trajectories", "memory.trajectories", CS_CONFLICT_SKIP},
	};

	assert_int_equal(cfg->nkafka, 2);
	assert_string_equal(cfg->kafka[0].key, "bootstrap.servers");
	assert_string_equal(cfg->kafka[0].value, "127.0.0.1:9092");
	assert_string_equal(cfg->kafka[1].key, "group.id");
	assert_string_equal(cfg->kafka[1].value, "copysink");
	assert_string_equal(cfg->pg_conninfo, "host=127.0.0.1 port=5432 dbname=copysink");
	assert_int_equal(cfg->batch_max_rows, 10000);
	assert_int_equal(cfg->batch_max_bytes, 33554432);
	assert_int_equal(cfg->batch_linger_ms, 200);
	assert_string_equal(cfg->dlq_topic, "copysink.dlq");
	assert_int_equal(cfg->ntables, 3);
	for (int t = 0; t < 3; t++) {
		const cs_tablespec_t *spec = &cfg->tables[t];
		cs_tablespec_t builtin;

		assert_string_equal(spec->name, tables[t].name);
		assert_string_equal(spec->topic, tables[t].topic);
		assert_int_equal(spec->on_conflict, tables[t].mode);
		assert_string_equal(spec->schema, "public");
		assert_int_equal(spec->dim, 384);
		assert_string_equal(spec->dlq_topic, "");
		assert_int_equal(cs_tablespec_builtin(tables[t].name, &builtin), 0);
		assert_int_equal(spec->ncols, builtin.ncols);
		assert_memory_equal(spec->cols, builtin.cols, sizeof(builtin.cols));
	}
}

/* The example parses to exactly its values, the rest are defaults. */
static void test_example(void **state)
{
	cs_config_t cfg;
	char err[512];

	assert_int_equal(load_text(&cfg, example_ini, NULL, NULL, 0, err, sizeof(err), NULL, 0),
			 0);
	assert_example(&cfg);
	assert_worker_defaults(&cfg);
	cs_config_cleanup(&cfg);
}

/* conf/copysink.ini holds the example's values; conf/minimal.ini is enough for one table. */
static void test_shipped_files(void **state)
{
	const char *dir = COPYSINK_SOURCE_DIR; /* set by CMake */
	char path[1024], err[512];
	cs_config_t cfg;

	snprintf(path, sizeof(path), "%s/conf/copysink.ini", dir);
	cs_config_init(&cfg);
	if (cs_config_load(&cfg, path, NULL, NULL, 0, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_example(&cfg);
	assert_worker_defaults(&cfg);
	assert_string_equal(cfg.path, path);
	cs_config_cleanup(&cfg);

	snprintf(path, sizeof(path), "%s/conf/minimal.ini", dir);
	if (cs_config_load(&cfg, path, NULL, NULL, 0, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_int_equal(cfg.ntables, 1);
	assert_string_equal(cfg.tables[0].name, "memory_entries");
	assert_string_equal(cfg.tables[0].topic, "memory_entries");
	assert_int_equal(cfg.tables[0].on_conflict, CS_CONFLICT_UPDATE);
	assert_string_equal(kafka_get(&cfg, "group.id"), "copysink");
	cs_config_cleanup(&cfg);
}

/* Defaults after init, after a load of nothing, and after cleanup. */
static void test_defaults(void **state)
{
	cs_config_t cfg;
	char err[512];

	cs_config_init(&cfg);
	assert_int_equal(cfg.batch_max_rows, 10000);
	assert_int_equal(cfg.batch_max_bytes, 33554432);
	assert_int_equal(cfg.batch_linger_ms, 200);
	assert_worker_defaults(&cfg);
	assert_string_equal(cfg.pg_conninfo, "");
	assert_string_equal(cfg.dlq_topic, "");
	assert_null(cfg.path);
	assert_int_equal(cfg.nkafka, 0);
	assert_int_equal(cfg.ntables, 0);
	assert_int_equal(cs_config_load(&cfg, NULL, NULL, NULL, 0, err, sizeof(err)), 0);
	assert_int_equal(cfg.ntables, 0); /* allowed here; `run` refuses it */
	assert_worker_defaults(&cfg);
	cs_config_cleanup(&cfg);
	assert_worker_defaults(&cfg);
	cs_config_cleanup(&cfg);
	cs_config_cleanup(NULL);
}

/* Inline comments, indentation, CRLF, a BOM, '#' comments, ':' separators, repeated keys. */
static void test_syntax(void **state)
{
	static const char ini[] = "\xEF\xBB\xBF# leading comment\r\n"
				  "  [kafka]\r\n"
				  "\tclient.id = a;b   ; ';' without a blank before it is data\r\n"
				  "  client.id = second ; a repeated key replaces the first\n"
				  "sasl.username: user\n"
				  "[postgres] ; comment after a header\n"
				  "conninfo = host=h options='-c x=1'\n"
				  "[worker]\n"
				  "    log_level = debug\n"
				  "log_format=json\n"
				  "[http]\n"
				  "listen =\n"
				  "[table   trajectories   ]\n";
	cs_config_t cfg;
	char err[512];

	if (load_text(&cfg, ini, NULL, NULL, 0, err, sizeof(err), NULL, 0) != 0)
		fail_msg("%s", err);
	assert_int_equal(cfg.nkafka, 2);
	assert_string_equal(kafka_get(&cfg, "client.id"), "second");
	assert_string_equal(cfg.kafka[0].key, "client.id");
	assert_string_equal(kafka_get(&cfg, "sasl.username"), "user");
	assert_string_equal(cfg.pg_conninfo, "host=h options='-c x=1'");
	assert_string_equal(cfg.log_level, "debug");
	assert_string_equal(cfg.log_format, "json");
	assert_string_equal(cfg.http_listen, "");
	assert_int_equal(cfg.ntables, 1);
	assert_string_equal(cfg.tables[0].topic, "trajectories");
	cs_config_cleanup(&cfg);
}

/* Each error names the file and line (or the variable, or the override). */
static void test_file_errors(void **state)
{
	static const struct {
		const char *ini;
		const char *err; /* after "<path>" */
	} cases[] = {
		{"[batch]\nmax_row = 1\n", ":2: unknown key \"max_row\" in section [batch]"},
		{"[batch]\n\n[foo]\n", ":3: unknown section [foo]"},
		{"[table]\n", ":1: section [table] needs a table name: [table NAME]"},
		{"x = 1\n", ":1: key \"x\" is outside of any section"},
		{"[kafka]\n= x\n", ":2: syntax error: missing key name before \"=\""},
		{"[batch]\nmax_rows\n",
		 ":2: syntax error: expected \"key = value\" or \"[section]\""},
		{"[batch]\nmax_rows ; = 5\n",
		 ":2: syntax error: expected \"key = value\" or \"[section]\""},
		{"[batch\n", ":1: syntax error: missing \"]\" in section header"},
		{"[batch] x\n", ":1: syntax error: unexpected text after section header"},
		{"[batch]\nmax_rows = 10k\n",
		 ":2: invalid value \"10k\" for key \"max_rows\" in section [batch]: "
		 "not an integer"},
		{"[batch]\nmax_rows = \n",
		 ":2: invalid value \"\" for key \"max_rows\" in section [batch]: not an integer"},
		{"[batch]\nmax_rows = +5\n",
		 ":2: invalid value \"+5\" for key \"max_rows\" in section [batch]: "
		 "not an integer"},
		{"[batch]\nmax_rows = 0\n",
		 ":2: invalid value \"0\" for key \"max_rows\" in section [batch]: "
		 "out of range (1 .. 10000000)"},
		{"[batch]\nmax_rows = 99999999999999999999\n",
		 ":2: invalid value \"99999999999999999999\" for key \"max_rows\" in section "
		 "[batch]: out of range (1 .. 10000000)"},
		{"[batch]\nmax_bytes = 1000\n",
		 ":2: invalid value \"1000\" for key \"max_bytes\" in section [batch]: "
		 "out of range (1048576 .. 2147483648)"},
		{"[batch]\nlinger_ms = -1\n",
		 ":2: invalid value \"-1\" for key \"linger_ms\" in section [batch]: "
		 "out of range (0 .. 600000)"},
		{"[worker]\nlog_format = xml\n",
		 ":2: invalid value \"xml\" for key \"log_format\" in section [worker]: "
		 "expected one of logfmt|json"},
		{"[worker]\nlog_level = INFO\n",
		 ":2: invalid value \"INFO\" for key \"log_level\" in section [worker]: "
		 "expected one of debug|info|warning|error"},
		{"[http]\nlisten = localhost\n",
		 ":2: invalid value \"localhost\" for key \"listen\" in section [http]: "
		 "expected host:port"},
		{"[dlq]\ntopic = a b\n",
		 ":2: invalid value \"a b\" for key \"topic\" in section [dlq]: "
		 "a topic name takes only letters, digits, '.', '_' and '-'"},
		{"[batch]\n[worker]\n[batch]\n", ":3: duplicate section [batch] (first at line 1)"},
		{"[table patterns]\n\n[table patterns]\n",
		 ":3: duplicate section [table patterns] (first at line 1)"},
		{"[table 1abc]\n",
		 ":1: invalid table name \"1abc\": "
		 "expected an identifier ([A-Za-z_][A-Za-z0-9_]*, at most 63 bytes)"},
		{"[table a-b]\n",
		 ":1: invalid table name \"a-b\": "
		 "expected an identifier ([A-Za-z_][A-Za-z0-9_]*, at most 63 bytes)"},
		{"[table patterns]\nfoo = 1\n",
		 ":2: unknown key \"foo\" in section [table patterns]"},
		{"[table patterns]\ndim = 0\n",
		 ":2: invalid value \"0\" for key \"dim\" in section [table patterns]: "
		 "out of range (1 .. 1000000000)"},
		{"[table patterns]\ndim = 16001\n",
		 ":2: table \"patterns\" column \"embedding\" cannot have 16001 dimensions: "
		 "vector, halfvec and real[] take at most 16000 (sparsevec takes more)"},
		{"[table patterns]\nschema = my-schema\n",
		 ":2: invalid value \"my-schema\" for key \"schema\" in section [table patterns]: "
		 "expected an identifier ([A-Za-z_][A-Za-z0-9_]*, at most 63 bytes)"},
		{"[table patterns]\ntopic =\n",
		 ":2: invalid value \"\" for key \"topic\" in section [table patterns]: "
		 "a topic name cannot be empty"},
		{"[table patterns]\non_conflict = replace\n",
		 ":2: invalid value \"replace\" for key \"on_conflict\" in section "
		 "[table patterns]: expected one of update|skip|none"},
		{"[table patterns]\ntopic = p\non_conflict = none\n",
		 ":3: table \"patterns\" has a key: on_conflict must be \"update\" or \"skip\""},
		{"[table patterns]\nkey = name\n",
		 ":2: key \"key\" of table \"patterns\" needs \"columns\" too"},
		{"[kafka]\n\n[table events]\ntopic = e\n",
		 ":3: table \"events\" is not built in: "
		 "it needs \"columns\" (and \"key\" unless it is insert-only)"},
		{"[table events]\ncolumns = id bigserial\n",
		 ":2: invalid \"columns\" of table \"events\": "
		 "column \"id\" has unsupported type \"bigserial\" (supported: text, smallint, "
		 "integer, bigint, real, double precision, boolean, jsonb, text[], embedding, uuid, "
		 "timestamptz, date, numeric, bytea, double precision[], integer[], bigint[], "
		 "json)"},
		{"[table events]\nkey = nope\ncolumns = id bigint\n",
		 ":2: invalid \"key\" of table \"events\": "
		 "key column \"nope\" is not in the column list"},
		{"[table events]\ncolumns = id bigint\non_conflict = update\n",
		 ":3: table \"events\" has no key: on_conflict must be \"none\""},
		{"[table events]\ncolumns =\n",
		 ":2: invalid value \"\" for key \"columns\" in section [table events]: "
		 "cannot be empty"},
		{"[table patterns]\ntopic = t\n[table trajectories]\ntopic = t\n",
		 ":4: tables \"patterns\" and \"trajectories\" both read topic \"t\""},
		{"[table patterns]\ntopic = trajectories\n\n[table trajectories]\n",
		 ":4: tables \"patterns\" and \"trajectories\" both read topic \"trajectories\""},
		{"[worker]\nretry_backoff_ms = 5000\nretry_backoff_max_ms = 1000\n",
		 "!" "[worker] retry_backoff_max_ms (1000) is less than retry_backoff_ms (5000)"},
		{"[postgres]\nstaging = pooled\n",
		 ":2: invalid value \"pooled\" for key \"staging\" in section [postgres]: "
		 "expected one of session|transaction"},
		{"[postgres]\nstaging = transaction\ntemp_buffers_mb = -1\n",
		 "!" "[postgres] temp_buffers_mb (-1) needs staging = session: with staging = "
		 "transaction it cannot be set"},
	};
	char err[512], path[64], want[600];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cs_config_t cfg;

		assert_int_equal(load_text(&cfg, cases[i].ini, NULL, NULL, 0, err, sizeof(err),
					   path, sizeof(path)),
				 -1);
		if (cases[i].err[0] == '!') /* an error of no one line */
			snprintf(want, sizeof(want), "%s", cases[i].err + 1);
		else
			snprintf(want, sizeof(want), "%s%s", path, cases[i].err);
		if (strcmp(err, want) != 0)
			fail_msg("case %zu:\n got  %s\n want %s", i, err, want);
		cs_config_cleanup(&cfg);
	}
}

/* A line too long, too many tables, a missing file. */
static void test_limits(void **state)
{
	size_t n = 5000;
	char *ini = malloc(n + 64), err[512], path[64], want[600];
	cs_config_t cfg;

	assert_non_null(ini);
	strcpy(ini, "[postgres]\nconninfo = ");
	memset(ini + strlen(ini), 'x', n);
	strcpy(ini + strlen("[postgres]\nconninfo = ") + n, "\n");
	assert_int_equal(load_text(&cfg, ini, NULL, NULL, 0, err, sizeof(err), path, sizeof(path)),
			 -1);
	snprintf(want, sizeof(want), "%s:2: line is too long (at most 4096 bytes)", path);
	assert_string_equal(err, want);
	cs_config_cleanup(&cfg);

	/* 4000 bytes still fit */
	ini[strlen("[postgres]\nconninfo = ") + 4000] = '\0';
	assert_int_equal(load_text(&cfg, ini, NULL, NULL, 0, err, sizeof(err), NULL, 0), 0);
	assert_int_equal(strlen(cfg.pg_conninfo), 4000);
	cs_config_cleanup(&cfg);

	ini[0] = '\0';
	for (int t = 0; t <= CS_MAX_TABLES; t++)
		sprintf(ini + strlen(ini), "[table t%d]\ncolumns = id int\n", t);
	assert_int_equal(load_text(&cfg, ini, NULL, NULL, 0, err, sizeof(err), path, sizeof(path)),
			 -1);
	snprintf(want, sizeof(want), "%s:33: too many tables (at most 16)", path);
	assert_string_equal(err, want);
	cs_config_cleanup(&cfg);
	free(ini);

	cs_config_init(&cfg);
	assert_int_equal(cs_config_load(&cfg, "/nonexistent/x.ini", NULL, NULL, 0, err,
					sizeof(err)),
			 -1);
	assert_string_equal(err, "could not open configuration file \"/nonexistent/x.ini\": No "
				 "such file or directory");
	cs_config_cleanup(&cfg);
}

/* An operator's table: columns, key, dim; a keyless table is insert-only by default. */
static void test_custom_table(void **state)
{
	static const char keyless[] = "[table audit_log]\ncolumns = at bigint, what text\n";
	const cs_tablespec_t *spec;
	cs_config_t cfg;
	char err[512];

	if (load_text(&cfg, events_ini, NULL, NULL, 0, err, sizeof(err), NULL, 0) != 0)
		fail_msg("%s", err);
	assert_int_equal(cfg.ntables, 1);
	spec = &cfg.tables[0];
	assert_string_equal(spec->name, "events");
	assert_string_equal(spec->topic, "app.events");
	assert_string_equal(spec->schema, "public");
	assert_int_equal(spec->on_conflict, CS_CONFLICT_SKIP);
	assert_int_equal(spec->dim, 8);
	assert_int_equal(spec->ncols, 5);
	assert_int_equal(cs_tablespec_nkeys(spec), 1);
	assert_true(spec->cols[0].in_key);
	assert_int_equal(spec->cols[4].type, CS_COL_EMBEDDING);
	cs_config_cleanup(&cfg);

	if (load_text(&cfg, keyless, NULL, NULL, 0, err, sizeof(err), NULL, 0) != 0)
		fail_msg("%s", err);
	assert_int_equal(cfg.tables[0].on_conflict, CS_CONFLICT_NONE);
	assert_int_equal(cs_tablespec_nkeys(&cfg.tables[0]), 0);
	cs_config_cleanup(&cfg);
}

/* Embedding columns: spelled types and dims, embedding_type, create_extension, the dim limit
 * that only sparsevec passes, and the errors of keys that contradict a spelling. */
static void test_embedding_types(void **state)
{
	static const char ini[] =
		"[postgres]\ncreate_extension = on\n"
		"[table memory_entries]\nembedding_type = halfvec\n"
		"[table docs]\ncolumns = id bigint not null, e halfvec(768), f real[], "
		"g embedding\nkey = id\nembedding_type = vector\n"
		"[table words]\ncolumns = id int not null, s SPARSEVEC (30522)\nkey = id\n"
		"[table plain]\ncolumns = id int not null, e vector\nkey = id\n";
	static const struct {
		const char *ini, *err;
	} bad[] = {
		{"[table t]\ncolumns = id int, e halfvec(8)\ndim = 9\n",
		 ":3: table \"t\" column \"e\" has dimension 8, but the table's dim is 9 (a table "
		 "has one)"},
		{"[table t]\ncolumns = id int, e vector(8), f halfvec(9)\n",
		 ":2: table \"t\" column \"f\" has dimension 9, but the table's dim is 8 (a table "
		 "has one)"},
		{"[table t]\ncolumns = id int, e vector(0)\n",
		 ":2: invalid \"columns\" of table \"t\": column \"e\": type \"vector(0)\" needs a "
		 "dimension from 1 to 16000, as in vector(384)"},
		{"[table t]\ncolumns = id int, e halfvec(16001)\n",
		 ":2: invalid \"columns\" of table \"t\": column \"e\": type \"halfvec(16001)\" "
		 "needs a dimension from 1 to 16000, as in halfvec(384)"},
		{"[table t]\ncolumns = id int, e vector(8x)\n",
		 ":2: invalid \"columns\" of table \"t\": column \"e\": type \"vector(8x)\" needs "
		 "a dimension from 1 to 16000, as in vector(384)"},
		{"[table t]\ncolumns = id int, e embedding\ndim = 20000\n",
		 ":3: table \"t\" column \"e\" cannot have 20000 dimensions: vector, halfvec and "
		 "real[] take at most 16000 (sparsevec takes more)"},
		{"[table patterns]\nembedding_type = float16\n",
		 ":2: invalid value \"float16\" for key \"embedding_type\" in section "
		 "[table patterns]: expected one of auto|vector|halfvec|sparsevec|real[]"},
		{"[postgres]\ncreate_extension = yes\n",
		 ":2: invalid value \"yes\" for key \"create_extension\" in section [postgres]: "
		 "expected one of off|on"},
	};
	char *envp[] = {"COPYSINK_TABLE_PATTERNS_EMBEDDING_TYPE=sparsevec",
			"COPYSINK_TABLE_PATTERNS_DIM=100000", NULL};
	const cs_tablespec_t *spec;
	cs_config_t cfg;
	char err[512], path[64], want[640];
	char *first, *second;

	if (load_text(&cfg, ini, NULL, NULL, 0, err, sizeof(err), NULL, 0) != 0)
		fail_msg("%s", err);
	assert_string_equal(cfg.pg_create_extension, "on");
	spec = table_get(&cfg, "memory_entries");
	assert_int_equal(spec->embedding_type, CS_EMB_HALFVEC);
	assert_int_equal(spec->cols[3].emb_type, CS_EMB_HALFVEC);
	assert_int_equal(spec->dim, 384);
	spec = table_get(&cfg, "docs");
	assert_int_equal(spec->dim, 768); /* from the spelling */
	assert_int_equal(spec->embedding_type, CS_EMB_VECTOR);
	assert_int_equal(spec->cols[1].type, CS_COL_EMBEDDING);
	assert_int_equal(spec->cols[1].emb_type, CS_EMB_HALFVEC);
	assert_int_equal(spec->cols[2].type, CS_COL_EMBEDDING);
	assert_int_equal(spec->cols[2].emb_type, CS_EMB_REAL_ARRAY);
	assert_int_equal(spec->cols[3].emb_type, CS_EMB_VECTOR); /* the table's */
	spec = table_get(&cfg, "words");
	assert_int_equal(spec->dim, 30522);
	assert_int_equal(spec->cols[1].emb_type, CS_EMB_SPARSEVEC);
	spec = table_get(&cfg, "plain"); /* "vector" alone is the old spelling of embedding */
	assert_int_equal(spec->cols[1].type, CS_COL_EMBEDDING);
	assert_int_equal(spec->cols[1].emb_type, CS_EMB_AUTO);
	/* printed as spelled, and read back the same */
	first = print_to_string(&cfg);
	assert_non_null(strstr(first, "[postgres]\nconninfo = \n"));
	assert_non_null(strstr(first, "create_extension = on\n"));
	assert_non_null(strstr(first, "dim = 768\ndlq_topic = \nembedding_type = vector\ncolumns "
				      "= id bigint not null, e halfvec(768), f real[], g embedding\n"));
	assert_non_null(strstr(first, "columns = id integer not null, s sparsevec(30522)\n"));
	cs_config_cleanup(&cfg);
	if (load_text(&cfg, first, NULL, NULL, 0, err, sizeof(err), NULL, 0) != 0)
		fail_msg("%s in\n%s", err, first);
	second = print_to_string(&cfg);
	assert_string_equal(first, second);
	cs_config_cleanup(&cfg);
	free(first);
	free(second);

	/* from the environment: a built-in table as sparsevec, beyond the dense limit */
	if (load_text(&cfg, "[table patterns]\n", envp, NULL, 0, err, sizeof(err), NULL, 0) != 0)
		fail_msg("%s", err);
	assert_int_equal(cfg.tables[0].embedding_type, CS_EMB_SPARSEVEC);
	assert_int_equal(cfg.tables[0].dim, 100000);
	assert_string_equal(cfg.pg_create_extension, "off");
	cs_config_cleanup(&cfg);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(load_text(&cfg, bad[i].ini, NULL, NULL, 0, err, sizeof(err), path,
					   sizeof(path)),
				 -1);
		snprintf(want, sizeof(want), "%s%s", path, bad[i].err);
		if (strcmp(err, want) != 0)
			fail_msg("case %zu:\n got  %s\n want %s", i, err, want);
		cs_config_cleanup(&cfg);
	}
	(void)state;
}

/* COPYSINK_* variables: worker keys, [kafka] mapping, table keys, table creation. */
static void test_env(void **state)
{
	static const char ini[] = "[kafka]\nbootstrap.servers = file:9092\n"
				  "[table memory_entries]\n"
				  "[table foo_dlq]\ncolumns = id int\nkey = id\n";
	char *envp[] = {
		"PATH=/usr/bin",
		"COPYSINK_BIN=/x/copysink",
		"COPYSINK_SOURCE_DIR=/src",
		"COPYSINK_TEST_KAFKA=k:1",
		"COPYSINK_SERVICE_HOST=10.0.0.7",
		"COPYSINK_PORT=tcp://10.0.0.7:9187",
		"COPYSINK_FUZZ_SECONDS=60",
		"COPYSINK_BATCH_MAX_ROWS=5000",
		"COPYSINK_POSTGRES_CONNINFO=host=envhost",
		"COPYSINK_DLQ_TOPIC=env.dlq",
		"COPYSINK_WORKER_LOG_FORMAT=json",
		"COPYSINK_WORKER_RETRY_BACKOFF_MAX_MS=30000",
		"COPYSINK_POSTGRES_STAGING=transaction",
		"COPYSINK_HTTP_LISTEN=",
		"COPYSINK_KAFKA_BOOTSTRAP_SERVERS=env:9092",
		"COPYSINK_KAFKA_SASL_PASSWORD=pw",
		"COPYSINK_TABLE_MEMORY_ENTRIES_ON_CONFLICT=skip",
		"COPYSINK_TABLE_MEMORY_ENTRIES_DLQ_TOPIC=me.dlq",
		"COPYSINK_TABLE_TRAJECTORIES_TOPIC=traj",
		"COPYSINK_TABLE_FOO_DLQ_TOPIC=foo.topic",
		NULL,
	};
	const cs_tablespec_t *spec;
	cs_config_t cfg;
	char err[512];

	if (load_text(&cfg, ini, envp, NULL, 0, err, sizeof(err), NULL, 0) != 0)
		fail_msg("%s", err);
	assert_int_equal(cfg.batch_max_rows, 5000);
	assert_string_equal(cfg.pg_conninfo, "host=envhost");
	assert_string_equal(cfg.dlq_topic, "env.dlq");
	assert_string_equal(cfg.log_format, "json");
	assert_int_equal(cfg.retry_backoff_max_ms, 30000);
	assert_string_equal(cfg.pg_staging, "transaction");
	assert_string_equal(cfg.http_listen, "");
	assert_int_equal(cfg.nkafka, 2);
	assert_string_equal(cfg.kafka[0].key, "bootstrap.servers");
	assert_string_equal(cfg.kafka[0].value, "env:9092");
	assert_string_equal(cfg.kafka[1].key, "sasl.password");
	assert_string_equal(cfg.kafka[1].value, "pw");
	assert_int_equal(cfg.ntables, 3);
	spec = table_get(&cfg, "memory_entries");
	assert_non_null(spec);
	assert_int_equal(spec->on_conflict, CS_CONFLICT_SKIP);
	assert_string_equal(spec->dlq_topic, "me.dlq");
	spec = table_get(&cfg, "foo_dlq"); /* a known table beats the longer key dlq_topic */
	assert_non_null(spec);
	assert_string_equal(spec->topic, "foo.topic");
	assert_string_equal(spec->dlq_topic, "");
	spec = table_get(&cfg, "trajectories"); /* created by the variable */
	assert_non_null(spec);
	assert_string_equal(spec->topic, "traj");
	assert_int_equal(spec->on_conflict, CS_CONFLICT_UPDATE);
	assert_int_equal(spec->ncols, 7);
	cs_config_cleanup(&cfg);
}

/* Variables that are errors name the variable. */
static void test_env_errors(void **state)
{
	static const struct {
		const char *var;
		const char *err;
	} cases[] = {
		{"COPYSINK_WORKER_NOPE=1",
		 "environment variable \"COPYSINK_WORKER_NOPE\": unknown variable: "
		 "expected COPYSINK_<SECTION>_<KEY>, see \"copysink help config\""},
		{"COPYSINK_BATCH_MAX_ROW=1",
		 "environment variable \"COPYSINK_BATCH_MAX_ROW\": unknown variable: "
		 "expected COPYSINK_<SECTION>_<KEY>, see \"copysink help config\""},
		{"COPYSINK_BATCH_MAX_ROWS=abc",
		 "environment variable \"COPYSINK_BATCH_MAX_ROWS\": "
		 "invalid value \"abc\" for key \"max_rows\" in section [batch]: not an integer"},
		{"COPYSINK_TABLE_EVENTS_TOPIC=x",
		 "environment variable \"COPYSINK_TABLE_EVENTS_TOPIC\": unknown variable: "
		 "expected COPYSINK_TABLE_<NAME>_<KEY> with a table of the file or a built-in "
		 "table as NAME"},
		{"COPYSINK_TABLE_PATTERNS_BOGUS=x",
		 "environment variable \"COPYSINK_TABLE_PATTERNS_BOGUS\": unknown variable: "
		 "expected COPYSINK_TABLE_<NAME>_<KEY> with a table of the file or a built-in "
		 "table as NAME"},
		{"COPYSINK_TABLE_PATTERNS_DIM=0",
		 "environment variable \"COPYSINK_TABLE_PATTERNS_DIM\": "
		 "invalid value \"0\" for key \"dim\" in section [table patterns]: "
		 "out of range (1 .. 1000000000)"},
		{"COPYSINK_TABLE_PATTERNS_ON_CONFLICT=none",
		 "environment variable \"COPYSINK_TABLE_PATTERNS_ON_CONFLICT\": "
		 "table \"patterns\" has a key: on_conflict must be \"update\" or \"skip\""},
		{"COPYSINK_KAFKA_=x",
		 "environment variable \"COPYSINK_KAFKA_\": empty key in section [kafka]"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *envp[] = {(char *)(uintptr_t)cases[i].var, NULL};
		cs_config_t cfg;
		char err[512];

		assert_int_equal(load_text(&cfg, NULL, envp, NULL, 0, err, sizeof(err), NULL, 0),
				 -1);
		if (strcmp(err, cases[i].err) != 0)
			fail_msg("case %zu:\n got  %s\n want %s", i, err, cases[i].err);
		cs_config_cleanup(&cfg);
	}
}

/* defaults < file < environment < overrides, key by key. */
static void test_precedence(void **state)
{
	static const char ini[] = "[batch]\nmax_rows = 1\nlinger_ms = 7\nmax_bytes = 2097152\n"
				  "[kafka]\nbootstrap.servers = f\n"
				  "[table patterns]\non_conflict = update\ntopic = file.topic\n";
	char *envp[] = {"COPYSINK_BATCH_MAX_ROWS=2", "COPYSINK_BATCH_LINGER_MS=8",
			"COPYSINK_KAFKA_BOOTSTRAP_SERVERS=e",
			"COPYSINK_TABLE_PATTERNS_ON_CONFLICT=skip", NULL};
	char *overrides[] = {"batch.max_rows=3", "kafka.bootstrap.servers=o:9092",
			     "kafka.client.id=cli", "table.patterns.on_conflict=update",
			     "table.memory_entries.on_conflict=skip", "worker.log_level=error"};
	cs_config_t cfg;
	char err[512];

	if (load_text(&cfg, ini, envp, overrides, 6, err, sizeof(err), NULL, 0) != 0)
		fail_msg("%s", err);
	assert_int_equal(cfg.batch_max_rows, 3);     /* override */
	assert_int_equal(cfg.batch_linger_ms, 8);    /* environment */
	assert_int_equal(cfg.batch_max_bytes, 2097152); /* file */
	assert_int_equal(cfg.stats_interval_s, 10);  /* default */
	assert_string_equal(cfg.log_level, "error");
	assert_string_equal(kafka_get(&cfg, "bootstrap.servers"), "o:9092");
	assert_string_equal(kafka_get(&cfg, "client.id"), "cli");
	assert_int_equal(cfg.ntables, 2);
	assert_int_equal(table_get(&cfg, "patterns")->on_conflict, CS_CONFLICT_UPDATE);
	assert_string_equal(table_get(&cfg, "patterns")->topic, "file.topic");
	assert_int_equal(table_get(&cfg, "memory_entries")->on_conflict, CS_CONFLICT_SKIP);
	cs_config_cleanup(&cfg);

	/* without overrides the environment wins over the file */
	if (load_text(&cfg, ini, envp, NULL, 0, err, sizeof(err), NULL, 0) != 0)
		fail_msg("%s", err);
	assert_int_equal(cfg.batch_max_rows, 2);
	assert_string_equal(kafka_get(&cfg, "bootstrap.servers"), "e");
	assert_int_equal(table_get(&cfg, "patterns")->on_conflict, CS_CONFLICT_SKIP);
	cs_config_cleanup(&cfg);
}

/* Overrides that are errors name the override (not its value). */
static void test_override_errors(void **state)
{
	static const struct {
		const char *ov;
		const char *err;
	} cases[] = {
		{"batch.max_rows", "override \"batch.max_rows\": expected SECTION.KEY=VALUE"},
		{"max_rows=1", "override \"max_rows\": expected SECTION.KEY=VALUE"},
		{"nope.x=1", "override \"nope.x\": unknown section [nope]"},
		{"batch.max_row=1",
		 "override \"batch.max_row\": unknown key \"max_row\" in section [batch]"},
		{"batch.max_rows=0",
		 "override \"batch.max_rows\": invalid value \"0\" for key \"max_rows\" in section "
		 "[batch]: out of range (1 .. 10000000)"},
		{"table.patterns=1", "override \"table.patterns\": expected table.NAME.KEY=VALUE"},
		{"table.patterns.bogus=1",
		 "override \"table.patterns.bogus\": unknown key \"bogus\" in section "
		 "[table patterns]"},
		{"table.events.topic=x",
		 "override \"table.events.topic\": no section [table events] and \"events\" is not "
		 "a built-in table"},
		{"postgres.conninfo", "override \"postgres.conninfo\": expected SECTION.KEY=VALUE"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *ov[] = {(char *)(uintptr_t)cases[i].ov};
		cs_config_t cfg;
		char err[512];

		assert_int_equal(load_text(&cfg, NULL, NULL, ov, 1, err, sizeof(err), NULL, 0), -1);
		if (strcmp(err, cases[i].err) != 0)
			fail_msg("case %zu:\n got  %s\n want %s", i, err, cases[i].err);
		cs_config_cleanup(&cfg);
	}
}

/* Passwords never appear in the printed configuration. */
static void test_print_masks_secrets(void **state)
{
	static const struct {
		const char *conninfo, *printed;
	} cases[] = {
		{"host=h password=s3cret dbname=d", "conninfo = host=h password=****** dbname=d\n"},
		{"password = 'a b\\' c' host=h", "conninfo = password = ****** host=h\n"},
		{"host=h password='' user=u", "conninfo = host=h password=****** user=u\n"},
		{"host='x y' passwordfile=/p", "conninfo = host='x y' passwordfile=/p\n"},
		{"host=h oops s3cret", "conninfo = host=h ******\n"},
		{"postgresql://u:s3cret@h:5432/db?sslmode=require&password=s3cret",
		 "conninfo = postgresql://u:******@h:5432/db?sslmode=require&password=******\n"},
		{"postgres://u@h/db?password=s3cret",
		 "conninfo = postgres://u@h/db?password=******\n"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char ov[256];
		char *ovs[] = {ov, "kafka.sasl.password=s3cret", "kafka.ssl.key.password=s3cret",
			       "kafka.sasl.oauthbearer.client.secret=s3cret",
			       "kafka.bootstrap.servers=b:9092"};
		cs_config_t cfg;
		char err[512], *out;

		snprintf(ov, sizeof(ov), "postgres.conninfo=%s", cases[i].conninfo);
		if (load_text(&cfg, NULL, NULL, ovs, 5, err, sizeof(err), NULL, 0) != 0)
			fail_msg("%s", err);
		out = print_to_string(&cfg);
		if (strstr(out, cases[i].printed) == NULL)
			fail_msg("case %zu: no \"%s\" in\n%s", i, cases[i].printed, out);
		assert_null(strstr(out, "s3cret"));
		assert_non_null(strstr(out, "sasl.password = ******\n"));
		assert_non_null(strstr(out, "ssl.key.password = ******\n"));
		assert_non_null(strstr(out, "sasl.oauthbearer.client.secret = ******\n"));
		assert_non_null(strstr(out, "bootstrap.servers = b:9092\n"));
		free(out);
		cs_config_cleanup(&cfg);
	}
}

/* The printed configuration loads back to the same configuration. */
static void test_print_round_trip(void **state)
{
	char ini[4096], err[512], *first, *second;
	cs_config_t cfg;

	snprintf(ini, sizeof(ini), "%s[worker]\nlog_level = warning\n%s"
				   "[table audit]\ncolumns = at timestamp with time zone, what text "
				   "not null, id uuid, n decimal, d date, b bytea, f float8[], "
				   "i int[], l int8[], j json\n",
		 example_ini, events_ini);
	if (load_text(&cfg, ini, NULL, NULL, 0, err, sizeof(err), NULL, 0) != 0)
		fail_msg("%s", err);
	first = print_to_string(&cfg);
	cs_config_cleanup(&cfg);
	if (load_text(&cfg, first, NULL, NULL, 0, err, sizeof(err), NULL, 0) != 0)
		fail_msg("%s in\n%s", err, first);
	second = print_to_string(&cfg);
	assert_string_equal(first, second);
	assert_non_null(strstr(first, "[table events]\ntopic = app.events\non_conflict = skip\n"
				      "schema = public\ndim = 8\ndlq_topic = \nembedding_type = auto\n"
				      "columns = id bigint "
				      "not null, body text not null, payload jsonb, labels text[], "
				      "embedding embedding\nkey = id\n"));
	assert_non_null(strstr(first, "[table audit]\ntopic = audit\non_conflict = none\n"));
	assert_non_null(strstr(first, "columns = at timestamptz, what text not null, id uuid, "
				      "n numeric, d date, b bytea, f double precision[], "
				      "i integer[], l bigint[], j json\n"));
	assert_non_null(strstr(first, "[batch]\nmax_rows = 10000\nmax_bytes = 33554432\n"
				      "linger_ms = 200\n"));
	assert_null(strstr(first, "[table patterns]\ntopic = memory.patterns\non_conflict = "
				  "update\nschema = public\ndim = 384\ndlq_topic = \ncolumns"));
	assert_int_equal(cfg.ntables, 5);
	cs_config_cleanup(&cfg);
	free(first);
	free(second);
}

/* The help lists every key with its default, range and variable. */
static void test_help(void **state)
{
	static const char *const wanted[] = {
		"[postgres]\n  conninfo = (empty)\n",
		"  max_rows = 10000   (integer, 1 .. 10000000)\n      write the batch ",
		"env COPYSINK_BATCH_MAX_ROWS, -o batch.max_rows=...",
		"  max_bytes = 33554432   (integer, 1048576 .. 2147483648)\n",
		"  linger_ms = 200   (integer, 0 .. 600000)\n",
		"[dlq]\n  topic = (empty)\n",
		"  stats_interval_s = 10   (integer, 0 .. 86400)\n",
		"  shutdown_grace_ms = 20000   (integer, 0 .. 3600000)\n",
		"  retry_backoff_ms = 200   (integer, 1 .. 600000)\n",
		"  retry_backoff_max_ms = 10000   (integer, 1 .. 3600000)\n",
		"  max_message_bytes = 16777216   (integer, 1024 .. 1073741824)\n",
		"  log_format = logfmt   (logfmt|json)\n",
		"  log_level = info   (debug|info|warning|error)\n",
		"[http]\n  listen = 127.0.0.1:9187\n",
		"  staging = session   (session|transaction)\n",
		"COPYSINK_KAFKA_<KEY>",
		"[table NAME]",
		"  on_conflict = (see below)   (update|skip|none)\n",
		"  dim = 384   (integer, 1 .. 1000000000)\n",
		"  create_extension = off   (off|on)\n",
		"env COPYSINK_POSTGRES_CREATE_EXTENSION, -o postgres.create_extension=...",
		"  embedding_type = auto   (auto|vector|halfvec|sparsevec|real[])\n",
		"env COPYSINK_TABLE_<NAME>_EMBEDDING_TYPE, -o table.<name>.embedding_type=...",
		"env COPYSINK_TABLE_<NAME>_DLQ_TOPIC, -o table.<name>.dlq_topic=...",
		"  columns = ",
		"  key = ",
		"  schema = public\n",
	};
	char *buf = NULL, *types, *save = NULL, list[512];
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	cs_config_help(f);
	assert_int_equal(fclose(f), 0);
	for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++)
		if (strstr(buf, wanted[i]) == NULL)
			fail_msg("no \"%s\" in the help:\n%s", wanted[i], buf);
	/* every column type a spec takes is in the help's list */
	types = strstr(buf, "\nColumn types: ");
	assert_non_null(types);
	for (char *p = types; *p != '\0'; p++)
		if (*p == '\n')
			*p = ' ';
	cs_coltype_list(list, sizeof(list));
	for (char *name = strtok_r(list, ", ", &save); name != NULL;
	     name = strtok_r(NULL, ", ", &save)) {
		bool found = false;
		if (strcmp(name, "double") == 0 || strcmp(name, "precision") == 0)
			continue; /* "double precision" is split; "precision[]" stays */
		for (const char *at = strstr(types, name); at != NULL && !found;
		     at = strstr(at + 1, name))
			found = at[-1] == ' ' && strchr(",. ", at[strlen(name)]) != NULL;
		if (!found)
			fail_msg("column type \"%s\" is not in the help:%s", name, types);
	}
	free(buf);
}

/* Topic lookup and the dead-letter topic: the table's, the [dlq] one, or topic.dlq. */
static void test_topics(void **state)
{
	static const char ini[] = "[table memory_entries]\ntopic = me\ndlq_topic = me.bad\n"
				  "[table patterns]\ntopic = pa\n";
	char *without_dlq[] = {"dlq.topic="};
	char *with_dlq[] = {"dlq.topic=all.bad"};
	char err[512], buf[CS_MAX_TOPIC + 8];
	cs_config_t cfg;

	if (load_text(&cfg, ini, NULL, with_dlq, 1, err, sizeof(err), NULL, 0) != 0)
		fail_msg("%s", err);
	assert_ptr_equal(cs_config_table_for_topic(&cfg, "me"), &cfg.tables[0]);
	assert_ptr_equal(cs_config_table_for_topic(&cfg, "pa"), &cfg.tables[1]);
	assert_null(cs_config_table_for_topic(&cfg, "memory_entries"));
	assert_string_equal(cs_config_dlq_topic(&cfg, &cfg.tables[0], buf, sizeof(buf)), "me.bad");
	assert_string_equal(cs_config_dlq_topic(&cfg, &cfg.tables[1], buf, sizeof(buf)), "all.bad");
	cs_config_cleanup(&cfg);

	if (load_text(&cfg, ini, NULL, without_dlq, 1, err, sizeof(err), NULL, 0) != 0)
		fail_msg("%s", err);
	assert_string_equal(cs_config_dlq_topic(&cfg, &cfg.tables[0], buf, sizeof(buf)), "me.bad");
	assert_string_equal(cs_config_dlq_topic(&cfg, &cfg.tables[1], buf, sizeof(buf)), "pa.dlq");
	cs_config_cleanup(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_example),
		cmocka_unit_test(test_shipped_files),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_syntax),
		cmocka_unit_test(test_file_errors),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_custom_table),
		cmocka_unit_test(test_embedding_types),
		cmocka_unit_test(test_env),
		cmocka_unit_test(test_env_errors),
		cmocka_unit_test(test_precedence),
		cmocka_unit_test(test_override_errors),
		cmocka_unit_test(test_print_masks_secrets),
		cmocka_unit_test(test_print_round_trip),
		cmocka_unit_test(test_help),
		cmocka_unit_test(test_topics),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
