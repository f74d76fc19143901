/*
 * test_dlq.c - the dead-letter producer against librdkafka's mock cluster
 *
 * The mock cluster injects what a real broker rarely does on demand: produce requests that
 * fail. A failed dead letter must make cs_dlq_flush() report a retriable error, so the
 * batch is not committed and the entry is consumed and dead-lettered again; a letter refused
 * as too large (by the broker, or by librdkafka above message.max.bytes) must instead arrive
 * without its value and not fail its batch.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* Kafka's ApiKey of Produce requests (librdkafka keeps RD_KAFKAP_Produce private). */
#define API_PRODUCE 0

/* A mock cluster of `nbrokers` with topics in.dlq (led by broker 1) and broken.dlq (by the
 * last broker), and a configuration pointing at it with `extra` more overrides (NULL: none). */
static int setup_with(void **state, int nbrokers, char *extra)
{
	static fixture_t f;
	char errstr[256], bootstrap[256];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char *overrides[3];
	int noverrides = 2;

	rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
	f.mock_owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	assert_non_null(f.mock_owner);
	f.mcluster = rd_kafka_mock_cluster_new(f.mock_owner, nbrokers);
	assert_non_null(f.mcluster);
	assert_int_equal(rd_kafka_mock_topic_create(f.mcluster, "in.dlq", 1, 1), 0);
	assert_int_equal(rd_kafka_mock_topic_create(f.mcluster, "broken.dlq", 1, 1), 0);
	assert_int_equal(rd_kafka_mock_partition_set_leader(f.mcluster, "in.dlq", 0, 1), 0);
	assert_int_equal(rd_kafka_mock_partition_set_leader(f.mcluster, "broken.dlq", 0, nbrokers),
			 0);
	snprintf(bootstrap, sizeof(bootstrap), "kafka.bootstrap.servers=%s",
		 rd_kafka_mock_cluster_bootstraps(f.mcluster));
	overrides[0] = bootstrap;
	overrides[1] = "kafka.message.timeout.ms=3000";
	if (extra != NULL)
		overrides[noverrides++] = extra;
	cs_config_init(&f.cfg);
	assert_int_equal(cs_config_load(&f.cfg, NULL, NULL, overrides, noverrides, errstr,
					sizeof(errstr)), 0);
	*state = &f;
	return 0;
}

static int setup(void **state)
{
	return setup_with(state, 1, NULL);
}

/* broken.dlq on a broker of its own, so that its letters go in requests of their own. */
static int setup_two_brokers(void **state)
{
	return setup_with(state, 2, NULL);
}

/* The producer's own message.max.bytes is librdkafka's minimum. */
static int setup_small_max(void **state)
{
	return setup_with(state, 1, "kafka.message.max.bytes=1000");
}

/* message.max.bytes left to follow a small [worker] max_message_bytes. */
static int setup_small_worker_max(void **state)
{
	return setup_with(state, 1, "worker.max_message_bytes=1024");
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

/* Queue and flush a letter of a batch read again, with a fresh tally, until it goes through:
 * librdkafka refuses to queue letters for a topic a broker said the producer may not write to
 * until its next look at the topic's metadata (about a second later). The worker does the
 * same: such a batch fails and is read again. @returns the tries it took. */
static int send_until_delivered(cs_dlq_t *dlq, const cs_dead_letter_t *dl, cs_dlq_tally_t *tally)
{
	char errstr[512];

	for (int tries = 1; tries <= 100; tries++) {
		cs_dlq_tally_reset(tally);
		if (cs_dlq_send(dlq, dl, tally, errstr, sizeof(errstr)) == 0 &&
		    cs_dlq_flush(dlq, tally, 10000, errstr, sizeof(errstr)) == CS_OK)
			return tries;
		assert_non_null(strstr(errstr, "Topic authorization failed"));
		nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
	}
	fail_msg("dead letter for \"%s\" not delivered in 100 tries", dl->dlq_topic);
	return 0;
}

/*
 * A dead letter the broker refuses: the flush says so, as a retriable error, and the failure
 * stays with its batch's tally: neither a second flush nor another batch's tally forgets or
 * takes it.
 *
 * The refusal is a produce request failing with TOPIC_AUTHORIZATION_FAILED, as a broker
 * answers a producer without Write on the topic. It used to be rd_kafka_mock_topic_set_error(),
 * whose Metadata answers carry the topic's partitions beside the topic's error: librdkafka 2.6
 * to 2.8 then dereference a partition they never created and crash (issue 4907, fixed in
 * 2.10.0). A real broker's answer for a topic missing or not authorized has no partitions
 * (Apache Kafka's KafkaApis; checked with 3.9.1 and librdkafka 2.8.0), so only the mock
 * cluster gets there: docs/RELIABILITY.md.
 */
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
	/* broken.dlq's leader (broker 2, which leads nothing else) refuses the next letter */
	assert_int_equal(rd_kafka_mock_broker_push_request_error_rtts(
				 f->mcluster, 2, API_PRODUCE, 1,
				 RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, 0),
			 RD_KAFKA_RESP_ERR_NO_ERROR);
	assert_int_equal(cs_dlq_send(dlq, &bad, &first, errstr, sizeof(errstr)), 0);
	assert_int_equal(cs_dlq_send(dlq, &good, &second, errstr, sizeof(errstr)), 0);
	/* the other batch's flush waits for both letters but is charged only with its own */
	assert_int_equal(cs_dlq_flush(dlq, &second, 10000, errstr, sizeof(errstr)), CS_OK);
	assert_int_equal(cs_dlq_flush(dlq, &first, 10000, errstr, sizeof(errstr)), CS_ERR_RETRIABLE);
	assert_non_null(strstr(errstr, "could not be delivered"));
	/* flushing again does not make the failed letter go away */
	assert_int_equal(cs_dlq_flush(dlq, &first, 10000, errstr, sizeof(errstr)), CS_ERR_RETRIABLE);
	assert_int_equal(cs_dlq_delivered(dlq), 1);
	/* the broker takes letters again (the one error is spent): the batch read again goes
	 * through */
	send_until_delivered(dlq, &bad, &first);
	assert_int_equal(cs_dlq_delivered(dlq), 2);
	cs_dlq_destroy(dlq);
}

/* Read the first message of `topic` on the mock cluster and hand it to check(). */
static void read_first(fixture_t *f, const char *topic,
		       void (*check)(const rd_kafka_message_t *rkm, const void *arg),
		       const void *arg)
{
	char errstr[512], bootstrap[256];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *consumer;
	rd_kafka_topic_partition_list_t *tp;
	rd_kafka_message_t *rkm = NULL;

	snprintf(bootstrap, sizeof(bootstrap), "%s", rd_kafka_mock_cluster_bootstraps(f->mcluster));
	rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr));
	rd_kafka_conf_set(conf, "group.id", "reader", errstr, sizeof(errstr));
	consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	assert_non_null(consumer);
	tp = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(tp, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
	rd_kafka_assign(consumer, tp);
	for (int i = 0; i < 100 && (rkm == NULL || rkm->err); i++) {
		if (rkm != NULL)
			rd_kafka_message_destroy(rkm);
		rkm = rd_kafka_consumer_poll(consumer, 100);
	}
	assert_non_null(rkm);
	assert_int_equal(rkm->err, 0);
	check(rkm, arg);
	rd_kafka_message_destroy(rkm);
	rd_kafka_topic_partition_list_destroy(tp);
	rd_kafka_consumer_close(consumer);
	rd_kafka_destroy(consumer);
}

/* Assert that header `name` of rkm is `want` (NULL: absent). */
static void assert_header(const rd_kafka_message_t *rkm, const char *name, const char *want)
{
	rd_kafka_headers_t *hdrs;
	const void *v;
	size_t n;

	assert_int_equal(rd_kafka_message_headers(rkm, &hdrs), 0);
	if (want == NULL) {
		assert_int_not_equal(rd_kafka_header_get_last(hdrs, name, &v, &n), 0);
		return;
	}
	assert_int_equal(rd_kafka_header_get_last(hdrs, name, &v, &n), 0);
	assert_int_equal(n, strlen(want));
	assert_memory_equal(v, want, n);
}

/* The letter arrived without its value (arg: the value's size as a string), with the key and
 * every header of the original. */
static void check_value_dropped(const rd_kafka_message_t *rkm, const void *arg)
{
	static const char *const want[][2] = {
		{"copysink.reason", "missing_field"}, {"copysink.error", "missing required field \"name\""},
		{"copysink.topic", "in"}, {"copysink.partition", "2"}, {"copysink.offset", "41"},
		{"copysink.entry", "1"}, {"copysink.table", "patterns"},
		{"copysink.value_dropped", "true"},
	};

	assert_null(rkm->payload);
	assert_int_equal(rkm->len, 0);
	assert_int_equal(rkm->key_len, 1);
	assert_memory_equal(rkm->key, "k", 1);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		assert_header(rkm, want[i][0], want[i][1]);
	assert_header(rkm, "copysink.value_size", arg);
	assert_header(rkm, "copysink.sqlstate", NULL);
}

/* The letter arrived with its value whole (arg: its size_t length) and no drop headers. */
static void check_value_kept(const rd_kafka_message_t *rkm, const void *arg)
{
	assert_int_equal(rkm->len, *(const size_t *)arg);
	assert_header(rkm, "copysink.value_dropped", NULL);
	assert_header(rkm, "copysink.value_size", NULL);
}

/* The broker refuses a letter as too large (either size error): it goes again without its
 * value, the flush waits for that one, and the batch's tally shows no failure. */
static void test_broker_too_large(void **state)
{
	static const rd_kafka_resp_err_t errs[] = {RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
						   RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE};
	fixture_t *f = *state;

	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		char errstr[512], topic[32];
		cs_dlq_t *dlq = cs_dlq_new(&f->cfg, errstr, sizeof(errstr));
		cs_dead_letter_t dl;
		cs_dlq_tally_t tally;

		snprintf(topic, sizeof(topic), "big%zu.dlq", i);
		assert_int_equal(rd_kafka_mock_topic_create(f->mcluster, topic, 1, 1), 0);
		dl = letter(topic);
		assert_non_null(dlq);
		cs_dlq_tally_reset(&tally);
		rd_kafka_mock_push_request_errors(f->mcluster, API_PRODUCE, 1, errs[i]);
		assert_int_equal(cs_dlq_send(dlq, &dl, &tally, errstr, sizeof(errstr)), 0);
		assert_int_equal(cs_dlq_flush(dlq, &tally, 10000, errstr, sizeof(errstr)), CS_OK);
		assert_int_equal(atomic_load(&tally.failed), 0);
		assert_int_equal(cs_dlq_delivered(dlq), 1);
		assert_int_equal(cs_dlq_values_dropped(dlq), 1);
		cs_dlq_destroy(dlq);
		read_first(f, topic, check_value_dropped, "4");
	}
}

/* A letter whose value-less form is refused too, or that is refused for a reason other than
 * its size, is a failure of its batch. */
static void test_other_refusals_fail(void **state)
{
	fixture_t *f = *state;
	char errstr[512];
	cs_dlq_t *dlq = cs_dlq_new(&f->cfg, errstr, sizeof(errstr));
	cs_dead_letter_t dl = letter("in.dlq");
	cs_dlq_tally_t tally;

	assert_non_null(dlq);
	/* too large, and the value-less letter too large again */
	cs_dlq_tally_reset(&tally);
	rd_kafka_mock_push_request_errors(f->mcluster, API_PRODUCE, 2,
					  RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
					  RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
	assert_int_equal(cs_dlq_send(dlq, &dl, &tally, errstr, sizeof(errstr)), 0);
	assert_int_equal(cs_dlq_flush(dlq, &tally, 10000, errstr, sizeof(errstr)), CS_ERR_RETRIABLE);
	assert_int_equal(atomic_load(&tally.failed), 1);
	assert_non_null(strstr(errstr, "could not be delivered"));
	/* a refusal that is not about size: no value-less letter, a failure */
	cs_dlq_tally_reset(&tally);
	rd_kafka_mock_push_request_errors(f->mcluster, API_PRODUCE, 1,
					  RD_KAFKA_RESP_ERR_INVALID_RECORD);
	assert_int_equal(cs_dlq_send(dlq, &dl, &tally, errstr, sizeof(errstr)), 0);
	assert_int_equal(cs_dlq_flush(dlq, &tally, 10000, errstr, sizeof(errstr)), CS_ERR_RETRIABLE);
	assert_int_equal(atomic_load(&tally.failed), 1);
	assert_int_equal(cs_dlq_delivered(dlq), 0);
	assert_int_equal(cs_dlq_values_dropped(dlq), 0);
	/* the batch read again goes through, value and all */
	cs_dlq_tally_reset(&tally);
	assert_int_equal(cs_dlq_send(dlq, &dl, &tally, errstr, sizeof(errstr)), 0);
	assert_int_equal(cs_dlq_flush(dlq, &tally, 10000, errstr, sizeof(errstr)), CS_OK);
	assert_int_equal(cs_dlq_delivered(dlq), 1);
	assert_int_equal(cs_dlq_values_dropped(dlq), 0);
	cs_dlq_destroy(dlq);
}

/* A value above the producer's message.max.bytes: librdkafka refuses it when queued, and it is
 * queued at once without its value. `value_len` bytes; `kept` when it must fit. */
static void send_sized(fixture_t *f, size_t value_len, bool kept)
{
	char errstr[512], size[32];
	cs_dlq_t *dlq = cs_dlq_new(&f->cfg, errstr, sizeof(errstr));
	cs_dead_letter_t dl = letter("in.dlq");
	cs_dlq_tally_t tally;
	char *value = calloc(1, value_len);

	assert_non_null(dlq);
	assert_non_null(value);
	dl.value = value;
	dl.value_len = value_len;
	cs_dlq_tally_reset(&tally);
	assert_int_equal(cs_dlq_send(dlq, &dl, &tally, errstr, sizeof(errstr)), 0);
	free(value);
	assert_int_equal(cs_dlq_flush(dlq, &tally, 10000, errstr, sizeof(errstr)), CS_OK);
	assert_int_equal(atomic_load(&tally.failed), 0);
	assert_int_equal(cs_dlq_delivered(dlq), 1);
	assert_int_equal(cs_dlq_values_dropped(dlq), kept ? 0 : 1);
	cs_dlq_destroy(dlq);
	snprintf(size, sizeof(size), "%zu", value_len);
	if (kept)
		read_first(f, "in.dlq", check_value_kept, &value_len);
	else
		read_first(f, "in.dlq", check_value_dropped, size);
}

/* [kafka] message.max.bytes = 1000, as the operator set it: a 2000-byte value goes without. */
static void test_local_too_large(void **state)
{
	send_sized(*state, 2000, false);
}

/* By default message.max.bytes follows [worker] max_message_bytes: a value librdkafka's own
 * 1 MB default would refuse is sent whole. */
static void test_max_follows_worker_default(void **state)
{
	send_sized(*state, 2 * 1024 * 1024, true);
}

/* ... and a small max_message_bytes (1024 + headroom) refuses a 200 kB value locally. */
static void test_max_follows_worker_small(void **state)
{
	send_sized(*state, 200 * 1024, false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_delivered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delivery_failure, setup_two_brokers, teardown),
		cmocka_unit_test_setup_teardown(test_broker_too_large, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_refusals_fail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_local_too_large, setup_small_max, teardown),
		cmocka_unit_test_setup_teardown(test_max_follows_worker_default, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_follows_worker_small, setup_small_worker_max,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
