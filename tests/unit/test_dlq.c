/*
 * test_dlq.c - the dead-letter producer against librdkafka's mock cluster
 *
 * The mock cluster injects what a real broker rarely does on demand: a topic whose produce
 * requests fail. A failed dead letter must make cs_dlq_flush() report a retriable error, so the
 * batch is not committed and the entry is consumed and dead-lettered again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "copysink/config.h"
#include "copysink/dlq.h"

typedef struct fixture {
	rd_kafka_t *mock_owner; /* a client that owns the mock cluster */
	rd_kafka_mock_cluster_t *mcluster;
	cs_config_t cfg;
} fixture_t;

static int setup(void **state)
{
	static fixture_t f;
	char errstr[256], bootstrap[256];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char *overrides[2];

	rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
	f.mock_owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	assert_non_null(f.mock_owner);
	f.mcluster = rd_kafka_mock_cluster_new(f.mock_owner, 1);
	assert_non_null(f.mcluster);
	assert_int_equal(rd_kafka_mock_topic_create(f.mcluster, "in.dlq", 1, 1), 0);
	assert_int_equal(rd_kafka_mock_topic_create(f.mcluster, "broken.dlq", 1, 1), 0);
	snprintf(bootstrap, sizeof(bootstrap), "kafka.bootstrap.servers=%s",
		 rd_kafka_mock_cluster_bootstraps(f.mcluster));
	overrides[0] = bootstrap;
	overrides[1] = "kafka.message.timeout.ms=3000";
	cs_config_init(&f.cfg);
	assert_int_equal(cs_config_load(&f.cfg, NULL, NULL, overrides, 2, errstr, sizeof(errstr)), 0);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	fixture_t *f = *state;

	cs_config_cleanup(&f->cfg);
	rd_kafka_mock_cluster_destroy(f->mcluster);
	rd_kafka_destroy(f->mock_owner);
	return 0;
}

/* A dead letter with every header, as the worker builds it. */
static cs_dead_letter_t letter(const char *dlq_topic)
{
	cs_dead_letter_t dl = {.dlq_topic = dlq_topic, .topic = "in", .partition = 2, .offset = 41,
			       .entry = 1, .table = "patterns", .reason = "missing_field",
			       .error = "missing required field \"name\"", .sqlstate = NULL,
			       .key = "k", .key_len = 1, .value = "\x81\xa1x\x01", .value_len = 4};
	return dl;
}

/* Delivered dead letters are acknowledged, and carry the original bytes and the headers. */
static void test_delivered(void **state)
{
	fixture_t *f = *state;
	char errstr[512], bootstrap[256];
	cs_dlq_t *dlq = cs_dlq_new(&f->cfg, errstr, sizeof(errstr));
	cs_dead_letter_t dl = letter("in.dlq");
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *consumer;
	rd_kafka_topic_partition_list_t *tp;
	rd_kafka_message_t *rkm = NULL;
	cs_dlq_tally_t tally;
	static const char *const want[][2] = {
		{"copysink.reason", "missing_field"}, {"copysink.error", "missing required field \"name\""},
		{"copysink.topic", "in"}, {"copysink.partition", "2"}, {"copysink.offset", "41"},
		{"copysink.entry", "1"}, {"copysink.table", "patterns"},
	};

	assert_non_null(dlq);
	cs_dlq_tally_reset(&tally);
	assert_int_equal(cs_dlq_send(dlq, &dl, &tally, errstr, sizeof(errstr)), 0);
	assert_int_equal(cs_dlq_flush(dlq, &tally, 10000, errstr, sizeof(errstr)), CS_OK);
	assert_int_equal(cs_dlq_delivered(dlq), 1);
	cs_dlq_destroy(dlq);

	snprintf(bootstrap, sizeof(bootstrap), "%s", rd_kafka_mock_cluster_bootstraps(f->mcluster));
	rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
	rd_kafka_conf_set(conf, "group.id", "reader", errstr, sizeof(errstr));
	consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	tp = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(tp, "in.dlq", 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
	rd_kafka_assign(consumer, tp);
	for (int i = 0; i < 100 && (rkm == NULL || rkm->err); i++) {
		if (rkm != NULL)
			rd_kafka_message_destroy(rkm);
		rkm = rd_kafka_consumer_poll(consumer, 100);
	}
	assert_non_null(rkm);
	assert_int_equal(rkm->err, 0);
	assert_int_equal(rkm->len, 4);
	assert_memory_equal(rkm->payload, "\x81\xa1x\x01", 4);
	assert_memory_equal(rkm->key, "k", 1);
	{
		rd_kafka_headers_t *hdrs;
		assert_int_equal(rd_kafka_message_headers(rkm, &hdrs), 0);
		for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
			const void *v;
			size_t n;
			assert_int_equal(rd_kafka_header_get_last(hdrs, want[i][0], &v, &n), 0);
			assert_int_equal(n, strlen(want[i][1]));
			assert_memory_equal(v, want[i][1], n);
		}
		assert_int_not_equal(rd_kafka_header_get_last(hdrs, "copysink.sqlstate", NULL, NULL), 0);
	}
	rd_kafka_message_destroy(rkm);
	rd_kafka_topic_partition_list_destroy(tp);
	rd_kafka_consumer_close(consumer);
	rd_kafka_destroy(consumer);
}

/* A dead letter the broker refuses: the flush says so, as a retriable error, and the failure
 * stays with its batch's tally: neither a second flush nor another batch's tally forgets or
 * takes it. */
static void test_delivery_failure(void **state)
{
	fixture_t *f = *state;
	char errstr[512];
	cs_dlq_t *dlq = cs_dlq_new(&f->cfg, errstr, sizeof(errstr));
	cs_dead_letter_t bad = letter("broken.dlq"), good = letter("in.dlq");
	cs_dlq_tally_t first, second;

	assert_non_null(dlq);
	cs_dlq_tally_reset(&first);
	cs_dlq_tally_reset(&second);
	rd_kafka_mock_topic_set_error(f->mcluster, "broken.dlq",
				      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
	assert_int_equal(cs_dlq_send(dlq, &bad, &first, errstr, sizeof(errstr)), 0);
	assert_int_equal(cs_dlq_send(dlq, &good, &second, errstr, sizeof(errstr)), 0);
	/* the other batch's flush waits for both letters but is charged only with its own */
	assert_int_equal(cs_dlq_flush(dlq, &second, 10000, errstr, sizeof(errstr)), CS_OK);
	assert_int_equal(cs_dlq_flush(dlq, &first, 10000, errstr, sizeof(errstr)), CS_ERR_RETRIABLE);
	assert_non_null(strstr(errstr, "could not be delivered"));
	/* flushing again does not make the failed letter go away */
	assert_int_equal(cs_dlq_flush(dlq, &first, 10000, errstr, sizeof(errstr)), CS_ERR_RETRIABLE);
	assert_int_equal(cs_dlq_delivered(dlq), 1);
	/* once the topic works again, the batch read again (a fresh tally) goes through */
	rd_kafka_mock_topic_set_error(f->mcluster, "broken.dlq", RD_KAFKA_RESP_ERR_NO_ERROR);
	cs_dlq_tally_reset(&first);
	assert_int_equal(cs_dlq_send(dlq, &bad, &first, errstr, sizeof(errstr)), 0);
	assert_int_equal(cs_dlq_flush(dlq, &first, 10000, errstr, sizeof(errstr)), CS_OK);
	assert_int_equal(cs_dlq_delivered(dlq), 2);
	cs_dlq_destroy(dlq);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_delivered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delivery_failure, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
