/*
 * test_fetchwake.c - the fetch waker against librdkafka's mock cluster
 *
 * The consumer is set up so that every fetch fills its prefetch queue (queued.min.messages = 1,
 * a fetch of one record batch of one message): librdkafka then fetches again only after a
 * second, which would make reading 60 messages take a minute. Before 2.2.0 its broker thread
 * looks at the queue again as soon as it wakes, and the waker wakes it (the loop below without
 * its kicks read 12 messages in the 12 s allowed; with a kick after each message it takes
 * about a second). From 2.2.0 on the partition is backed off for fetch.queue.backoff.ms
 * whatever wakes the thread (with the waker and librdkafka's default of 1000 ms, 2.8.0 read 14
 * or 15 of the 60), so there the consumer module sets CS_FETCHWAKE_BACKOFF_MS instead and
 * starts no waker. The test does what the consumer does on the librdkafka it runs with.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "copysink/fetchwake.h"

#define NMSG 60
#define DEADLINE_S 12

typedef struct fixture {
	rd_kafka_t *mock_owner; /* a client that owns the mock cluster */
	rd_kafka_mock_cluster_t *mcluster;
	char bootstrap[256];
} fixture_t;

static void conf_set(rd_kafka_conf_t *conf, const char *key, const char *value)
{
	char errstr[256];

	assert_int_equal(rd_kafka_conf_set(conf, key, value, errstr, sizeof(errstr)),
			 RD_KAFKA_CONF_OK);
}

static int setup(void **state)
{
	static fixture_t f;
	char errstr[256], payload[400];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *producer;
	rd_kafka_topic_t *topic;

	conf_set(conf, "log_level", "0");
	f.mock_owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	assert_non_null(f.mock_owner);
	f.mcluster = rd_kafka_mock_cluster_new(f.mock_owner, 1);
	assert_non_null(f.mcluster);
	assert_int_equal(rd_kafka_mock_topic_create(f.mcluster, "wake.in", 1, 1), 0);
	snprintf(f.bootstrap, sizeof(f.bootstrap), "%s",
		 rd_kafka_mock_cluster_bootstraps(f.mcluster));

	conf = rd_kafka_conf_new();
	conf_set(conf, "bootstrap.servers", f.bootstrap);
	conf_set(conf, "linger.ms", "0");
	producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	assert_non_null(producer);
	memset(payload, 'x', sizeof(payload));
	topic = rd_kafka_topic_new(producer, "wake.in", NULL);
	assert_non_null(topic);
	/* one record batch per message, so that a small fetch takes one or two; rd_kafka_produce
	 * rather than the producev macros, which a pedantic build refuses (GNU statement
	 * expressions) */
	for (int i = 0; i < NMSG; i++) {
		assert_int_equal(rd_kafka_produce(topic, 0, RD_KAFKA_MSG_F_COPY, payload,
						  sizeof(payload), NULL, 0, NULL),
				 0);
		assert_int_equal(rd_kafka_flush(producer, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
	}
	rd_kafka_topic_destroy(topic);
	rd_kafka_destroy(producer);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	fixture_t *f = *state;

	rd_kafka_mock_cluster_destroy(f->mcluster);
	rd_kafka_destroy(f->mock_owner);
	return 0;
}

/* A consumer whose every fetch fills its prefetch queue, assigned wake.in [0] from the start;
 * with `backoff`, fetch.queue.backoff.ms = CS_FETCHWAKE_BACKOFF_MS. */
static rd_kafka_t *starved_consumer(const fixture_t *f, bool backoff)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
	char errstr[256];
	rd_kafka_t *rk;

	conf_set(conf, "bootstrap.servers", f->bootstrap);
	conf_set(conf, "group.id", "wake");
	conf_set(conf, "enable.auto.commit", "false");
	conf_set(conf, "queued.min.messages", "1");
	conf_set(conf, "message.max.bytes", "1000");
	conf_set(conf, "fetch.max.bytes", "1000");
	conf_set(conf, "max.partition.fetch.bytes", "1000");
	if (backoff) {
		char ms[16];

		snprintf(ms, sizeof(ms), "%d", CS_FETCHWAKE_BACKOFF_MS);
		conf_set(conf, "fetch.queue.backoff.ms", ms);
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	assert_non_null(rk);
	rd_kafka_poll_set_consumer(rk);
	rd_kafka_topic_partition_list_add(list, "wake.in", 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
	assert_int_equal(rd_kafka_assign(rk, list), RD_KAFKA_RESP_ERR_NO_ERROR);
	rd_kafka_topic_partition_list_destroy(list);
	return rk;
}

/* The waker is needed exactly before librdkafka 2.2.0. */
static void test_needed_by_version(void **state)
{
	static const struct {
		int version;
		bool want;
	} cases[] = {
		{0x010900ff, true},  {0x020002ff, true},  {0x020101ff, true}, {0x0201ffff, true},
		{0x020200ff, false}, {0x020800ff, false}, {0x020a00ff, false}, {0x030000ff, false},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(cs_fetchwake_needed(cases[i].version), cases[i].want);
}

/* A starved consumer reads all NMSG messages in time the way the worker keeps it fed on this
 * librdkafka: kicks of the waker after each message, or the short fetch.queue.backoff.ms. */
static void test_refill_the_queue(void **state)
{
	bool waker = cs_fetchwake_needed(rd_kafka_version());
	rd_kafka_t *rk = starved_consumer(*state, !waker);
	cs_fetchwake_t *fw = waker ? cs_fetchwake_new(rk) : NULL;
	time_t deadline = time(NULL) + DEADLINE_S;
	int got = 0;

	if (waker)
		assert_non_null(fw);
	while (got < NMSG && time(NULL) < deadline) {
		rd_kafka_message_t *rkm = rd_kafka_consumer_poll(rk, 100);
		if (rkm == NULL)
			continue;
		if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
			assert_int_equal(rkm->offset, got);
			got++;
			if (waker)
				cs_fetchwake_kick(fw);
		}
		rd_kafka_message_destroy(rkm);
	}
	assert_int_equal(got, NMSG);
	if (waker)
		assert_true(cs_fetchwake_count(fw) > 0);
	cs_fetchwake_destroy(fw);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
}

static void test_kicks_merge_and_destroy_joins(void **state)
{
	const fixture_t *f = *state;
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char errstr[256];
	rd_kafka_t *rk;
	cs_fetchwake_t *fw;

	/* no assignment: a kick sends nothing and must not fail */
	conf_set(conf, "bootstrap.servers", f->bootstrap);
	conf_set(conf, "group.id", "wake-idle");
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	assert_non_null(rk);
	fw = cs_fetchwake_new(rk);
	assert_non_null(fw);
	for (int i = 0; i < 1000; i++)
		cs_fetchwake_kick(fw);
	for (int i = 0; i < 100 && cs_fetchwake_count(fw) == 0; i++)
		rd_kafka_poll(rk, 10);
	/* a thousand kicks in a row merge into a few wake-ups, not a thousand requests */
	assert_true(cs_fetchwake_count(fw) >= 1);
	assert_true(cs_fetchwake_count(fw) < 1000);
	cs_fetchwake_destroy(fw);
	cs_fetchwake_destroy(NULL);
	rd_kafka_destroy(rk);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_needed_by_version),
		cmocka_unit_test(test_refill_the_queue),
		cmocka_unit_test(test_kicks_merge_and_destroy_joins),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
