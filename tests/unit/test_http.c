/*
 * test_http.c - Prometheus rendering of the stats, health and readiness verdicts
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "copysink/http.h"

/* True when `text` contains `line` as a whole line. */
static int has_line(const char *text, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return 1;
	return 0;
}

static void test_render(void **state)
{
	static cs_stats_t st;
	cs_tablespec_t specs[2];
	cs_buf_t out;
	static const char *const lines[] = {
		"copysink_rows_written_total{table=\"memory_entries\"} 1200",
		"copysink_rows_written_total{table=\"patterns\"} 7",
		"copysink_rows_merged_total{table=\"memory_entries\"} 1100",
		"copysink_rows_deleted_total{table=\"memory_entries\"} 40",
		"copysink_rows_deleted_total{table=\"patterns\"} 0",
		"copysink_messages_skipped_total 12",
		"copysink_position_rewinds_total 2",
		"copysink_dead_letter_values_dropped_total 1",
		"# HELP copysink_rows_deleted_total Rows deleted by tombstones per table",
		"# TYPE copysink_rows_deleted_total counter",
		"copysink_dead_letters_total{reason=\"missing_field\"} 3",
		"copysink_dead_letters_total{reason=\"db_rejected\"} 1",
		"copysink_db_errors_total{sqlstate=\"23514\"} 2",
		"copysink_db_errors_total{sqlstate=\"08006\"} 1",
		"copysink_batches_total 4",
		"copysink_retries_total 1",
		"copysink_bytes_held 4096",
		"copysink_last_commit_timestamp_seconds 1700000000.500",
		"copysink_batch_duration_seconds_bucket{le=\"0.005\"} 0",
		"copysink_batch_duration_seconds_bucket{le=\"0.05\"} 1",
		"copysink_batch_duration_seconds_bucket{le=\"0.5\"} 3",
		"copysink_batch_duration_seconds_bucket{le=\"+Inf\"} 4",
		"copysink_batch_duration_seconds_count 4",
		"copysink_partition_stored_offset{topic=\"memory.entries\",partition=\"2\"} 150",
		"copysink_partition_high_watermark{topic=\"memory.entries\",partition=\"2\"} 200",
		"copysink_partition_lag{topic=\"memory.entries\",partition=\"2\"} 50",
		"copysink_up 1",
		"# TYPE copysink_batch_duration_seconds histogram",
	};

	memset(&st, 0, sizeof(st));
	assert_int_equal(cs_tablespec_builtin("memory_entries", &specs[0]), 0);
	assert_int_equal(cs_tablespec_builtin("patterns", &specs[1]), 0);
	st.rows_written[0] = 1200;
	st.rows_written[1] = 7;
	st.rows_merged[0] = 1100;
	st.rows_deleted[0] = 40;
	st.stale_skipped = 12;
	st.position_rewinds = 2;
	st.dead_letter_values_dropped = 1;
	st.dead_letters[CS_REASON_MISSING_FIELD] = 3;
	st.dead_letters[CS_REASON_DB_REJECTED] = 1;
	cs_stats_db_error(&st, "23514");
	cs_stats_db_error(&st, "08006");
	cs_stats_db_error(&st, "23514");
	st.batches = 4;
	st.retries = 1;
	st.bytes_held = 4096;
	st.last_commit_ms = 1700000000500ULL;
	cs_stats_batch_duration(&st, 0.02);
	cs_stats_batch_duration(&st, 0.3);
	cs_stats_batch_duration(&st, 0.4);
	cs_stats_batch_duration(&st, 12.0);
	cs_stats_partition(&st, "memory.entries", 2, 150, 200);
	/* nothing stored yet for partition 0: its high watermark shows, its lag does not */
	cs_stats_partition(&st, "memory.entries", 0, -1, 80);
	st.pg_ok = st.kafka_ok = true;
	cs_buf_init(&out);
	assert_int_equal(cs_http_render_metrics(&st, specs, 2, &out), 0);
	assert_int_equal(cs_buf_append(&out, "", 1), 0);
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		if (!has_line(out.data, lines[i]))
			fail_msg("missing line: %s\n%s", lines[i], out.data);
	}
	assert_true(has_line(out.data,
			     "copysink_partition_high_watermark{topic=\"memory.entries\",partition=\"0\"} 80"));
	assert_null(strstr(out.data, "partition_lag{topic=\"memory.entries\",partition=\"0\"}"));
	assert_null(strstr(out.data, "stored_offset{topic=\"memory.entries\",partition=\"0\"}"));
	cs_buf_cleanup(&out);
}

static void test_health(void **state)
{
	cs_stats_t st;
	const char *why = NULL;

	memset(&st, 0, sizeof(st));
	assert_int_equal(cs_http_healthy(&st, 1000, 60000, &why), 0);
	assert_string_equal(why, "main loop not started");
	st.heartbeat_ms = 1000;
	assert_int_equal(cs_http_healthy(&st, 50000, 60000, &why), 1);
	assert_int_equal(cs_http_healthy(&st, 70000, 60000, &why), 0);
	assert_string_equal(why, "main loop stuck");

	assert_int_equal(cs_http_ready(&st, &why), 0);
	assert_string_equal(why, "PostgreSQL not connected");
	st.pg_ok = true;
	assert_int_equal(cs_http_ready(&st, &why), 0);
	assert_string_equal(why, "Kafka not connected");
	st.kafka_ok = true;
	assert_int_equal(cs_http_ready(&st, &why), 1);
	st.retrying = true;
	assert_int_equal(cs_http_ready(&st, &why), 0);
	assert_string_equal(why, "retrying a batch");
}

/* Partitions come and go with rebalances. */
static void test_partitions(void **state)
{
	cs_stats_t st;

	memset(&st, 0, sizeof(st));
	cs_stats_partition(&st, "a", 0, 5, -1);
	cs_stats_partition(&st, "a", 1, -1, 9);
	cs_stats_partition(&st, "a", 0, 7, 10);
	assert_int_equal(st.nparts, 2);
	assert_int_equal(st.parts[0].stored, 7);
	assert_int_equal(st.parts[0].high, 10);
	assert_int_equal(st.parts[1].stored, -1);
	cs_stats_partition_remove(&st, "a", 0);
	assert_int_equal(st.nparts, 1);
	assert_int_equal(st.parts[0].partition, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_render),
		cmocka_unit_test(test_health),
		cmocka_unit_test(test_partitions),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
