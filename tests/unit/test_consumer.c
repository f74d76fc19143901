/*
 * test_consumer.c - the consumer's contract (consumer.h) with a real rd_kafka consumer against
 * librdkafka's mock cluster
 *
 * The mock cluster delays the first join of a group by 3 s (group.initial.rebalance.delay.ms,
 * not settable in librdkafka 2.0), so the group setup creates every test's consumer, each in a
 * group of its own, and waits for all of their assignments at once; each test then takes its
 * consumer with the assignment event pending, as the loop would find it.
 *
 * Waits are deadline loops; no assertion depends on how fast the mock cluster is. Where a test
 * asserts that nothing arrives (a paused partition), a window of polls can only miss a message,
 * never invent one.
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
#include <unistd.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "copysink/config.h"
#include "copysink/consumer.h"
#include "copysink/fetchwake.h"
#include "copysink/log.h"
#include "copysink/stats.h"

#define NMSG 20             /* messages in every partition */
#define DEADLINE_MS 10000   /* for anything that must happen */
#define QUIET_MS 500        /* polled while nothing may arrive */
#define DESTROY_ALARM_S 30  /* a destroy that takes longer hangs: SIGALRM ends the test */
#define ONE "cs.one"        /* one partition */
#define TWO "cs.two"        /* two partitions */

/* The consumers, one per test that needs one, each in its own group. */
enum {
	C_FAKE,
	C_REAL,
	C_UNREADY,
	C_START_EARLY,
	C_FROM_KAFKA,
	C_EARLIEST,
	C_LATEST,
	C_UNCOMMITTED,
	C_STARTING,
	C_COMMITTED,
	C_HOLD,
	C_HOLD_ASSIGN,
	C_REVOKE,
	C_DESTROY_ASSIGN,
	C_DESTROY_REVOKE,
	NCONS
};

static const struct {
	const char *group;
	const char *topic;
	int nlanes;
	const char *extra; /* one more setting (kafka.KEY=VALUE), or NULL */
} cons_spec[NCONS] = {
	[C_FAKE] = {"g-fake", ONE, 1, NULL},
	[C_REAL] = {"g-real", ONE, 1, NULL},
	[C_UNREADY] = {"g-unready", TWO, 2, NULL},
	[C_START_EARLY] = {"g-start-early", ONE, 1, NULL},
	[C_FROM_KAFKA] = {"g-from-kafka", ONE, 1, NULL},
	[C_EARLIEST] = {"g-earliest", ONE, 1, "kafka.auto.offset.reset=earliest"},
	[C_LATEST] = {"g-latest", ONE, 1, "kafka.auto.offset.reset=latest"},
	[C_UNCOMMITTED] = {"g-uncommitted", ONE, 1, "kafka.isolation.level=read_uncommitted"},
	[C_STARTING] = {"g-starting", TWO, 1, NULL},
	[C_COMMITTED] = {"g-committed", ONE, 1, NULL},
	[C_HOLD] = {"g-hold", ONE, 1, NULL},
	[C_HOLD_ASSIGN] = {"g-hold-assign", ONE, 1, NULL},
	[C_REVOKE] = {"g-revoke", ONE, 1, NULL},
	[C_DESTROY_ASSIGN] = {"g-destroy-assign", ONE, 1, NULL},
	[C_DESTROY_REVOKE] = {"g-destroy-revoke", ONE, 1, NULL},
};

typedef struct fixture {
	rd_kafka_t *mock_owner; /* a client that owns the mock cluster */
	rd_kafka_mock_cluster_t *mcluster;
	char bootstrap[256];
	cs_config_t cfg[NCONS];
	cs_stats_t stats[NCONS];
	cs_consumer_t *c[NCONS]; /* NULL once a test destroyed it */
	rd_kafka_topic_t *rkt[NCONS]; /* for made-up messages: see topic_of() */
} fixture_t;

/* Monotonic milliseconds. */
static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Produce NMSG messages to each of the topic's `nparts` partitions. */
static void produce(const char *bootstrap, const char *topic_name, int nparts)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char errstr[256], payload[32];
	rd_kafka_t *producer;
	rd_kafka_topic_t *topic;

	assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
					   sizeof(errstr)),
			 RD_KAFKA_CONF_OK);
	producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	assert_non_null(producer);
	topic = rd_kafka_topic_new(producer, topic_name, NULL);
	assert_non_null(topic);
	for (int p = 0; p < nparts; p++)
		for (int i = 0; i < NMSG; i++) {
			int len = snprintf(payload, sizeof(payload), "%s/%d/%d", topic_name, p, i);
			assert_int_equal(rd_kafka_produce(topic, p, RD_KAFKA_MSG_F_COPY, payload,
							  (size_t)len, NULL, 0, NULL),
					 0);
		}
	assert_int_equal(rd_kafka_flush(producer, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
	rd_kafka_topic_destroy(topic);
	rd_kafka_destroy(producer);
}

/* Commit topic [partition] at offset for `group` outside any membership, as an earlier worker
 * would have. */
static void commit_offset(const char *bootstrap, const char *group, const char *topic,
			  int32_t partition, int64_t offset)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
	char errstr[256];
	rd_kafka_t *rk;

	assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
					   sizeof(errstr)),
			 RD_KAFKA_CONF_OK);
	assert_int_equal(rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)),
			 RD_KAFKA_CONF_OK);
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	assert_non_null(rk);
	rd_kafka_topic_partition_list_add(list, topic, partition)->offset = offset;
	assert_int_equal(rd_kafka_commit(rk, list, 0), RD_KAFKA_RESP_ERR_NO_ERROR);
	rd_kafka_topic_partition_list_destroy(list);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
}

/* Consumer i of the fixture, subscribed to its topic. */
static cs_consumer_t *consumer_new(fixture_t *f, int i)
{
	char bootstrap[300], group[64], topic[64], extra[128], err[512];
	char *ov[] = {bootstrap, group, topic, extra};
	cs_consumer_t *c;

	snprintf(bootstrap, sizeof(bootstrap), "kafka.bootstrap.servers=%s", f->bootstrap);
	snprintf(group, sizeof(group), "kafka.group.id=%s", cons_spec[i].group);
	snprintf(topic, sizeof(topic), "table.patterns.topic=%s", cons_spec[i].topic);
	snprintf(extra, sizeof(extra), "%s", cons_spec[i].extra != NULL ? cons_spec[i].extra : "");
	cs_config_init(&f->cfg[i]);
	if (cs_config_load(&f->cfg[i], NULL, NULL, ov, cons_spec[i].extra != NULL ? 4 : 3, err,
			   sizeof(err)) != 0)
		fail_msg("%s", err);
	c = cs_consumer_new(&f->cfg[i], NULL, cons_spec[i].nlanes, &f->stats[i], err, sizeof(err));
	if (c == NULL)
		fail_msg("%s", err);
	return c;
}

/* Poll every consumer until each has a rebalance event waiting. */
static void wait_for_assignments(fixture_t *f)
{
	int64_t deadline = now_ms() + DEADLINE_MS;
	int waiting = NCONS;

	while (waiting > 0 && now_ms() < deadline) {
		waiting = 0;
		for (int i = 0; i < NCONS; i++) {
			rd_kafka_message_t *rkm;
			if (cs_consumer_event(f->c[i]) != NULL)
				continue;
			waiting++;
			rkm = cs_consumer_poll(f->c[i], 10);
			if (rkm != NULL) /* not assigned yet: an error event at most */
				rd_kafka_message_destroy(rkm);
		}
	}
	for (int i = 0; i < NCONS; i++) {
		cs_rebalance_t *ev = cs_consumer_event(f->c[i]);
		if (ev == NULL)
			fail_msg("group \"%s\" assigned nothing within %d ms", cons_spec[i].group,
				 DEADLINE_MS);
		assert_true(ev->assign);
		assert_false(ev->lost);
		assert_int_equal(ev->parts->cnt, strcmp(cons_spec[i].topic, TWO) == 0 ? 2 : 1);
	}
}

static int setup(void **state)
{
	static fixture_t f;
	char errstr[256];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();

	cs_log_setup(NULL, "error");
	rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
	f.mock_owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	assert_non_null(f.mock_owner);
	f.mcluster = rd_kafka_mock_cluster_new(f.mock_owner, 1);
	assert_non_null(f.mcluster);
	assert_int_equal(rd_kafka_mock_topic_create(f.mcluster, ONE, 1, 1), 0);
	assert_int_equal(rd_kafka_mock_topic_create(f.mcluster, TWO, 2, 1), 0);
	snprintf(f.bootstrap, sizeof(f.bootstrap), "%s",
		 rd_kafka_mock_cluster_bootstraps(f.mcluster));
	produce(f.bootstrap, ONE, 1);
	produce(f.bootstrap, TWO, 2);
	/* librdkafka starts an assigned partition from its committed offset: an absolute one
	 * means no auto.offset.reset lookup that a later seek could race (see test_start_early) */
	commit_offset(f.bootstrap, cons_spec[C_UNREADY].group, TWO, 1, 3);
	commit_offset(f.bootstrap, cons_spec[C_FROM_KAFKA].group, ONE, 0, 7);
	for (int i = 0; i < NCONS; i++)
		f.c[i] = consumer_new(&f, i);
	wait_for_assignments(&f);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	fixture_t *f = *state;

	/* after a failed test a message it held keeps librdkafka from terminating */
	alarm(DESTROY_ALARM_S);
	for (int i = 0; i < NCONS; i++) {
		if (f->rkt[i] != NULL)
			rd_kafka_topic_destroy(f->rkt[i]);
		f->rkt[i] = NULL;
		cs_consumer_destroy(f->c[i]);
		f->c[i] = NULL;
		cs_config_cleanup(&f->cfg[i]);
	}
	rd_kafka_mock_cluster_destroy(f->mcluster);
	rd_kafka_destroy(f->mock_owner);
	alarm(0);
	return 0;
}

/* The topic handle of consumer i for made-up messages, owned by the fixture: a handle left
 * undestroyed by a failed test would keep rd_kafka_destroy() waiting. */
static rd_kafka_topic_t *topic_of(fixture_t *f, int i)
{
	if (f->rkt[i] == NULL)
		f->rkt[i] = rd_kafka_topic_new(cs_consumer_rk(f->c[i]), cons_spec[i].topic, NULL);
	assert_non_null(f->rkt[i]);
	return f->rkt[i];
}

/* Destroy the fixture's consumer i; SIGALRM (default action) ends the test if it hangs. */
static void destroy_consumer(fixture_t *f, int i)
{
	if (f->rkt[i] != NULL)
		rd_kafka_topic_destroy(f->rkt[i]);
	f->rkt[i] = NULL;
	alarm(DESTROY_ALARM_S);
	cs_consumer_destroy(f->c[i]);
	alarm(0);
	f->c[i] = NULL;
}

/* Assign the pending assignment: partition p at offsets[p] (known) or unknown (known[p]
 * false). Partitions are indexed by number, whatever their order in the event. */
static void assign(cs_consumer_t *c, const int64_t *offsets, const bool *known)
{
	cs_rebalance_t *ev = cs_consumer_event(c);
	bool k[4];
	char errstr[512];

	assert_non_null(ev);
	assert_true(ev->assign);
	assert_true(ev->parts->cnt <= 4);
	for (int i = 0; i < ev->parts->cnt; i++) {
		int32_t p = ev->parts->elems[i].partition;
		k[i] = known[p];
		ev->parts->elems[i].offset = known[p] ? offsets[p] : RD_KAFKA_OFFSET_INVALID;
	}
	if (cs_consumer_assign(c, ev, k, errstr, sizeof(errstr)) != CS_OK)
		fail_msg("%s", errstr);
	assert_null(cs_consumer_event(c));
}

/* The next message (not an error event) of any partition, or NULL at the deadline. */
static rd_kafka_message_t *next_message(cs_consumer_t *c, int64_t deadline)
{
	while (now_ms() < deadline) {
		rd_kafka_message_t *rkm = cs_consumer_poll(c, 50);
		if (rkm == NULL)
			continue;
		if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR)
			return rkm;
		rd_kafka_message_destroy(rkm);
	}
	return NULL;
}

/* The next message of `partition`, failing at the deadline; messages of other partitions
 * are dropped. */
static rd_kafka_message_t *wait_message(cs_consumer_t *c, int32_t partition)
{
	int64_t deadline = now_ms() + DEADLINE_MS;
	rd_kafka_message_t *rkm;

	while ((rkm = next_message(c, deadline)) != NULL && rkm->partition != partition)
		rd_kafka_message_destroy(rkm);
	if (rkm == NULL)
		fail_msg("no message of partition %d within %d ms", (int)partition, DEADLINE_MS);
	return rkm;
}

/* Poll for QUIET_MS: no message may arrive. */
static void assert_quiet(cs_consumer_t *c)
{
	rd_kafka_message_t *rkm = next_message(c, now_ms() + QUIET_MS);

	if (rkm != NULL)
		fail_msg("message of partition %d at offset %lld arrived while paused",
			 (int)rkm->partition, (long long)rkm->offset);
}

/* A consumed message as librdkafka would hand it over, for cs_consumer_check. */
static rd_kafka_message_t fake(rd_kafka_topic_t *rkt, int32_t partition, int64_t offset)
{
	rd_kafka_message_t rkm;

	memset(&rkm, 0, sizeof(rkm));
	rkm.rkt = rkt;
	rkm.partition = partition;
	rkm.offset = offset;
	return rkm;
}

/* Check rkm: the verdict must be `want`, and for CS_POS_TAKE *from must be `want_from`. */
static void assert_verdict(cs_consumer_t *c, const rd_kafka_message_t *rkm, cs_position_t want,
			 int64_t want_from)
{
	int64_t from = -2;
	int lane = -1;
	cs_err_t err = CS_ERR_RETRIABLE;
	char errstr[512] = "";
	cs_position_t got = cs_consumer_check(c, rkm, &from, &lane, &err, errstr, sizeof(errstr));

	if (got != want)
		fail_msg("message of \"%s\" [%d] at offset %lld: verdict %d, expected %d",
			 rd_kafka_topic_name(rkm->rkt), (int)rkm->partition,
			 (long long)rkm->offset, (int)got, (int)want);
	assert_int_equal(err, CS_OK);
	if (want == CS_POS_TAKE) {
		assert_int_equal(from, want_from);
		assert_int_equal(lane, cs_consumer_lane(c, rd_kafka_topic_name(rkm->rkt),
							rkm->partition));
	}
}

/* 1. The default strategy follows the librdkafka version; this build's consumer uses it. */
static void test_default_strategy(void **state)
{
	static const struct {
		int version;
		const char *want;
	} cases[] = {
		{0x010900ff, "roundrobin"},         {0x020002ff, "roundrobin"},
		{0x020300ff, "roundrobin"},         {0x0203ffff, "roundrobin"},
		{0x020400ff, "cooperative-sticky"}, {0x020401ff, "cooperative-sticky"},
		{0x020600ff, "cooperative-sticky"}, {0x030000ff, "cooperative-sticky"},
	};
	fixture_t *f = *state;
	const char *strategy = cs_consumer_default_strategy(rd_kafka_version());

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_string_equal(cs_consumer_default_strategy(cases[i].version), cases[i].want);
	/* the consumers here set no strategy: they run the default's protocol */
	assert_string_equal(rd_kafka_rebalance_protocol(cs_consumer_rk(f->c[C_FAKE])),
			    strcmp(strategy, "cooperative-sticky") == 0 ? "COOPERATIVE" : "EAGER");
}

/* fetch.queue.backoff.ms of consumer c as a number: -1 when this librdkafka has no such key. */
static long fetch_backoff_of(cs_consumer_t *c)
{
	char value[32];
	size_t size = sizeof(value);

	if (rd_kafka_conf_get(rd_kafka_conf(cs_consumer_rk(c)), "fetch.queue.backoff.ms", value,
			      &size) != RD_KAFKA_CONF_OK)
		return -1;
	return strtol(value, NULL, 10);
}

/* 1b. With fetch_wake on the consumer keeps the fetcher fed by the means this librdkafka needs
 * (fetchwake.h): before 2.2.0 a waker, which has no setting to check; from 2.2.0 on
 * fetch.queue.backoff.ms = CS_FETCHWAKE_BACKOFF_MS unless [kafka] sets it. fetch_wake = off
 * leaves librdkafka's default. */
static void test_fetch_backoff(void **state)
{
	static const struct {
		char *override; /* NULL: the defaults */
		long want;            /* from librdkafka 2.2.0 on */
	} cases[] = {
		{NULL, CS_FETCHWAKE_BACKOFF_MS},
		{"worker.fetch_wake=off", 1000},
		{"kafka.fetch.queue.backoff.ms=50", 50},
	};
	fixture_t *f = *state;
	bool waker = cs_fetchwake_needed(rd_kafka_version());

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char bootstrap[300], err[512];
		char *ov[] = {bootstrap, "kafka.group.id=g-backoff", "table.patterns.topic=" ONE,
			      cases[i].override};
		cs_config_t cfg;
		cs_stats_t stats = {0};
		cs_consumer_t *c;

		if (waker && cases[i].override != NULL &&
		    strncmp(cases[i].override, "kafka.", 6) == 0)
			continue; /* a key this librdkafka does not know */
		snprintf(bootstrap, sizeof(bootstrap), "kafka.bootstrap.servers=%s", f->bootstrap);
		cs_config_init(&cfg);
		if (cs_config_load(&cfg, NULL, NULL, ov, cases[i].override ? 4 : 3, err,
				   sizeof(err)) != 0)
			fail_msg("%s", err);
		c = cs_consumer_new(&cfg, NULL, 1, &stats, err, sizeof(err));
		if (c == NULL)
			fail_msg("%s", err);
		assert_int_equal(fetch_backoff_of(c), waker ? -1 : cases[i].want);
		alarm(DESTROY_ALARM_S);
		cs_consumer_destroy(c);
		alarm(0);
		cs_config_cleanup(&cfg);
	}
}

/* 2a. Verdicts on made-up messages after an assignment at offset 5, and the seek of a gap. */
static void test_positions(void **state)
{
	static const struct {
		int64_t offset;
		cs_position_t want;
		int64_t from;            /* for CS_POS_TAKE */
		int64_t next;            /* the partition's next offset after it */
		uint64_t stale, rewinds; /* the counters after it */
	} steps[] = {
		{5, CS_POS_TAKE, 5, 6, 0, 0},
		{5, CS_POS_STALE, 0, 6, 1, 0},
		{6, CS_POS_TAKE, 6, 7, 1, 0},
		{9, CS_POS_GAP, 0, 7, 1, 1},  /* sought back to 7 */
		{9, CS_POS_TAKE, 7, 10, 1, 1}, /* still there after the seek: a gap in the log */
		{10, CS_POS_TAKE, 10, 11, 1, 1},
		/* read_committed (the default): one offset missing is a transaction's marker, taken
		 * with the batch covering it, no seek */
		{12, CS_POS_TAKE, 11, 13, 1, 1},
		{13, CS_POS_TAKE, 13, 14, 1, 1},
	};
	fixture_t *f = *state;
	cs_consumer_t *c = f->c[C_FAKE];
	cs_stats_t *stats = &f->stats[C_FAKE];
	rd_kafka_topic_t *rkt = topic_of(f, C_FAKE);
	rd_kafka_message_t *rkm;
	cs_consumer_part_t *p;

	assign(c, (int64_t[]){5}, (bool[]){true});
	p = cs_consumer_find(c, ONE, 0);
	assert_non_null(p);
	assert_true(p->ready);
	assert_int_equal(p->next, 5);
	assert_int_equal(p->stored, 5);
	assert_int_equal(p->paused, 0);
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		rd_kafka_message_t m = fake(rkt, 0, steps[i].offset);
		assert_verdict(c, &m, steps[i].want, steps[i].from);
		assert_int_equal(p->next, steps[i].next);
		assert_int_equal(stats->stale_skipped, steps[i].stale);
		assert_int_equal(stats->position_rewinds, steps[i].rewinds);
	}
	/* the gap's seek moved librdkafka's position: the first real message is 7 (taken above) */
	rkm = wait_message(c, 0);
	assert_int_equal(rkm->offset, 7);
	assert_verdict(c, rkm, CS_POS_STALE, 0);
	rd_kafka_message_destroy(rkm);
	/* not assigned: partition 3 of the same topic */
	{
		rd_kafka_message_t m = fake(rkt, 3, 0);
		assert_verdict(c, &m, CS_POS_UNKNOWN, 0);
	}
}

/* 2c. read_uncommitted: no transaction markers are skipped, so one offset missing is a jump
 * like any other, sought back. */
static void test_gap_uncommitted(void **state)
{
	fixture_t *f = *state;
	cs_consumer_t *c = f->c[C_UNCOMMITTED];
	cs_stats_t *stats = &f->stats[C_UNCOMMITTED];
	rd_kafka_topic_t *rkt = topic_of(f, C_UNCOMMITTED);
	rd_kafka_message_t m5, m7;

	assign(c, (int64_t[]){5}, (bool[]){true});
	m5 = fake(rkt, 0, 5);
	assert_verdict(c, &m5, CS_POS_TAKE, 5);
	m7 = fake(rkt, 0, 7);
	assert_verdict(c, &m7, CS_POS_GAP, 0);
	assert_int_equal(stats->position_rewinds, 1);
	assert_int_equal(cs_consumer_find(c, ONE, 0)->next, 6);
}

/* 2b. Real messages after an assignment at offset 5: 5 first, then each in order. */
static void test_real_messages(void **state)
{
	fixture_t *f = *state;
	cs_consumer_t *c = f->c[C_REAL];

	assign(c, (int64_t[]){5}, (bool[]){true});
	for (int64_t want = 5; want < NMSG; want++) {
		rd_kafka_message_t *rkm = wait_message(c, 0);
		assert_int_equal(rkm->offset, want);
		assert_verdict(c, rkm, CS_POS_TAKE, want);
		rd_kafka_message_destroy(rkm);
	}
	assert_int_equal(f->stats[C_REAL].stale_skipped, 0);
	assert_int_equal(f->stats[C_REAL].position_rewinds, 0);
}

/* 3. A partition whose stored offset is unknown stays paused and takes nothing (its sibling
 * goes on, holding on and off leaves it paused); cs_consumer_start() seeks and resumes it. */
static void test_unready(void **state)
{
	fixture_t *f = *state;
	cs_consumer_t *c = f->c[C_UNREADY];
	rd_kafka_topic_t *rkt = topic_of(f, C_UNREADY);
	rd_kafka_message_t m, *rkm;
	cs_consumer_part_t *p0, *p1;
	int nparts;
	char errstr[512];
	int got0 = 0;

	assign(c, (int64_t[]){0, 0}, (bool[]){true, false});
	cs_consumer_parts(c, &nparts);
	assert_int_equal(nparts, 2);
	p0 = cs_consumer_find(c, TWO, 0);
	p1 = cs_consumer_find(c, TWO, 1);
	assert_non_null(p0);
	assert_non_null(p1);
	assert_true(p0->ready);
	assert_false(p1->ready);
	assert_int_equal(p1->stored, -1);
	assert_int_not_equal(p1->paused, 0);
	/* two lanes share the two partitions */
	assert_int_not_equal(cs_consumer_lane(c, TWO, 0), cs_consumer_lane(c, TWO, 1));
	for (int64_t off = 0; off < NMSG; off += 6) {
		m = fake(rkt, 1, off);
		assert_verdict(c, &m, CS_POS_UNKNOWN, 0);
	}
	/* partition 0 delivers all of its messages; partition 1 none */
	while (got0 < NMSG) {
		rkm = next_message(c, now_ms() + DEADLINE_MS);
		assert_non_null(rkm);
		if (rkm->partition == 1)
			fail_msg("partition 1 delivered offset %lld while waiting for its stored "
				 "offset",
				 (long long)rkm->offset);
		assert_int_equal(rkm->offset, got0);
		assert_verdict(c, rkm, CS_POS_TAKE, got0);
		rd_kafka_message_destroy(rkm);
		got0++;
	}
	/* a hold and its end leave the lookup's pause in place */
	cs_consumer_hold(c, true);
	cs_consumer_hold(c, false);
	p1 = cs_consumer_find(c, TWO, 1);
	assert_false(p1->ready);
	assert_int_not_equal(p1->paused, 0);
	assert_quiet(c);

	assert_int_equal(cs_consumer_start(c, TWO, 1, 12, NULL, NULL, errstr, sizeof(errstr)), CS_OK);
	p1 = cs_consumer_find(c, TWO, 1);
	assert_true(p1->ready);
	assert_int_equal(p1->paused, 0);
	assert_int_equal(p1->stored, 12);
	assert_int_equal(p1->next, 12);
	for (int64_t want = 12; want < NMSG; want++) {
		rkm = wait_message(c, 1);
		assert_int_equal(rkm->offset, want);
		assert_verdict(c, rkm, CS_POS_TAKE, want);
		rd_kafka_message_destroy(rkm);
	}
	/* start of a partition not assigned: nothing to do */
	assert_int_equal(cs_consumer_start(c, TWO, 7, 3, NULL, NULL, errstr, sizeof(errstr)), CS_OK);
}

/*
 * 3b. cs_consumer_start() right after an assignment whose stored offset was unknown: the
 * position is the stored offset all the same.
 *
 * A partition assigned with known[i] = false is assigned at a placeholder absolute offset and
 * paused, so librdkafka runs no committed-offset or auto.offset.reset lookup of its own: such a
 * lookup failed a seek made before it ended ("Local: Erroneous state") and moved the position
 * after it (500 ms later, over the seek).
 */
static void test_start_early(void **state)
{
	fixture_t *f = *state;
	cs_consumer_t *c = f->c[C_START_EARLY];
	rd_kafka_message_t *rkm;
	char errstr[512] = "";

	assign(c, (int64_t[]){0}, (bool[]){false});
	if (cs_consumer_start(c, ONE, 0, 12, NULL, NULL, errstr, sizeof(errstr)) != CS_OK)
		fail_msg("%s", errstr);
	rkm = wait_message(c, 0);
	assert_int_equal(rkm->offset, 12);
	assert_verdict(c, rkm, CS_POS_TAKE, 12);
	rd_kafka_message_destroy(rkm);
}

/*
 * 3c. Nothing stored: a partition starts at the offset committed to Kafka, else at
 * auto.offset.reset's end of the partition, and says which, as an absolute offset (a seek to a
 * logical one had librdkafka 2.0.2 look it up twice, 500 ms apart).
 */
static void assert_starts(fixture_t *f, int i, int64_t want, bool want_committed)
{
	cs_consumer_t *c = f->c[i];
	int64_t at = -42;
	bool committed = !want_committed;
	char errstr[512] = "";

	assign(c, (int64_t[]){0}, (bool[]){false});
	if (cs_consumer_start(c, ONE, 0, -1, &at, &committed, errstr, sizeof(errstr)) != CS_OK)
		fail_msg("%s", errstr);
	assert_int_equal(at, want);
	assert_int_equal(committed, want_committed);
	assert_int_equal(cs_consumer_find(c, ONE, 0)->next, want);
	assert_int_equal(cs_consumer_find(c, ONE, 0)->stored, -1);
}

static void test_start_nothing_stored(void **state)
{
	fixture_t *f = *state;
	rd_kafka_message_t *rkm;

	assert_starts(f, C_FROM_KAFKA, 7, true);
	rkm = wait_message(f->c[C_FROM_KAFKA], 0);
	assert_int_equal(rkm->offset, 7);
	assert_verdict(f->c[C_FROM_KAFKA], rkm, CS_POS_TAKE, 7);
	rd_kafka_message_destroy(rkm);

	assert_starts(f, C_EARLIEST, 0, false);
	rkm = wait_message(f->c[C_EARLIEST], 0);
	assert_int_equal(rkm->offset, 0);
	assert_verdict(f->c[C_EARLIEST], rkm, CS_POS_TAKE, 0);
	rd_kafka_message_destroy(rkm);

	assert_starts(f, C_LATEST, NMSG, false); /* the end: nothing to take */
}

/* 3d. Partitions started between cs_consumer_starting(true) and (false) stay paused until the
 * second call, then both deliver from where they were started. */
static void test_starting_together(void **state)
{
	fixture_t *f = *state;
	cs_consumer_t *c = f->c[C_STARTING];
	char errstr[512] = "";
	bool seen[2] = {false, false};
	rd_kafka_message_t *rkm;
	uint64_t woken;

	assign(c, (int64_t[]){0, 0}, (bool[]){false, false});
	cs_consumer_starting(c, true);
	if (cs_consumer_start(c, TWO, 0, 3, NULL, NULL, errstr, sizeof(errstr)) != CS_OK ||
	    cs_consumer_start(c, TWO, 1, 5, NULL, NULL, errstr, sizeof(errstr)) != CS_OK)
		fail_msg("%s", errstr);
	assert_true(cs_consumer_find(c, TWO, 0)->ready);
	assert_int_not_equal(cs_consumer_find(c, TWO, 0)->paused, 0);
	assert_int_not_equal(cs_consumer_find(c, TWO, 1)->paused, 0);
	rkm = next_message(c, now_ms() + QUIET_MS);
	if (rkm != NULL)
		fail_msg("partition %d delivered offset %lld while its start was held",
			 (int)rkm->partition, (long long)rkm->offset);
	woken = cs_consumer_wakeups(c);
	cs_consumer_starting(c, false);
	assert_int_equal(cs_consumer_find(c, TWO, 0)->paused, 0);
	assert_int_equal(cs_consumer_find(c, TWO, 1)->paused, 0);
	/* the resume woke the fetcher (it would otherwise wait for its broker thread's next
	 * wake-up, up to a second) */
	for (int64_t until = now_ms() + DEADLINE_MS; cs_consumer_wakeups(c) == woken;) {
		if (now_ms() > until)
			fail_msg("no fetch wake-up after the partitions were resumed");
		nanosleep(&(struct timespec){0, 10000000}, NULL);
	}
	while (!seen[0] || !seen[1]) {
		rkm = next_message(c, now_ms() + DEADLINE_MS);
		assert_non_null(rkm);
		if (!seen[rkm->partition]) {
			assert_int_equal(rkm->offset, rkm->partition == 0 ? 3 : 5);
			assert_verdict(c, rkm, CS_POS_TAKE, rkm->offset);
			seen[rkm->partition] = true;
		}
		rd_kafka_message_destroy(rkm);
	}
}

/* 4. A commit at or below the position leaves it; one above moves it there, and what lies
 * below is stale. */
static void test_committed(void **state)
{
	fixture_t *f = *state;
	cs_consumer_t *c = f->c[C_COMMITTED];
	rd_kafka_topic_t *rkt = topic_of(f, C_COMMITTED);
	rd_kafka_message_t *rkm;
	cs_consumer_part_t *p;
	char errstr[512];

	assign(c, (int64_t[]){8}, (bool[]){true});
	p = cs_consumer_find(c, ONE, 0);
	assert_int_equal(p->next, 8);
	assert_false(cs_consumer_committed(c, ONE, 0, 8));
	assert_int_equal(p->next, 8);
	assert_int_equal(p->stored, 8);
	assert_false(cs_consumer_committed(c, ONE, 5, 100)); /* not assigned */

	assert_int_equal(cs_consumer_start(c, ONE, 0, 3, NULL, NULL, errstr, sizeof(errstr)), CS_OK);
	p = cs_consumer_find(c, ONE, 0);
	assert_int_equal(p->next, 3);
	assert_true(cs_consumer_committed(c, ONE, 0, 10));
	assert_int_equal(p->next, 10);
	assert_int_equal(p->stored, 10);
	for (int64_t off = 3; off < 10; off++) {
		rd_kafka_message_t m = fake(rkt, 0, off);
		assert_verdict(c, &m, CS_POS_STALE, 0);
	}
	assert_int_equal(f->stats[C_COMMITTED].stale_skipped, 7);
	/* the partition was sought to 10: the first real message */
	rkm = wait_message(c, 0);
	assert_int_equal(rkm->offset, 10);
	assert_verdict(c, rkm, CS_POS_TAKE, 10);
	rd_kafka_message_destroy(rkm);
	rkm = wait_message(c, 0);
	assert_int_equal(rkm->offset, 11);
	assert_verdict(c, rkm, CS_POS_TAKE, 11);
	rd_kafka_message_destroy(rkm);
}

/* Take messages from..NMSG-1 of partition 0 in order. */
static void assert_take_through(cs_consumer_t *c, int64_t from)
{
	for (int64_t want = from; want < NMSG; want++) {
		rd_kafka_message_t *rkm = wait_message(c, 0);
		assert_int_equal(rkm->offset, want);
		assert_verdict(c, rkm, CS_POS_TAKE, want);
		rd_kafka_message_destroy(rkm);
	}
}

/* 5a. A hold pauses a partition that has been read from; its end resumes it where it was. */
static void test_hold(void **state)
{
	fixture_t *f = *state;
	cs_consumer_t *c = f->c[C_HOLD];
	cs_consumer_part_t *p;

	assign(c, (int64_t[]){0}, (bool[]){true});
	for (int64_t want = 0; want < 5; want++) {
		rd_kafka_message_t *rkm = wait_message(c, 0);
		assert_int_equal(rkm->offset, want);
		assert_verdict(c, rkm, CS_POS_TAKE, want);
		rd_kafka_message_destroy(rkm);
	}
	cs_consumer_hold(c, true);
	cs_consumer_hold(c, true); /* again: no change */
	p = cs_consumer_find(c, ONE, 0);
	assert_int_not_equal(p->paused, 0);
	assert_quiet(c);
	cs_consumer_hold(c, false);
	assert_int_equal(p->paused, 0);
	assert_take_through(c, 5);
}

/* 5b. A partition assigned during a hold is paused until the hold ends, then read from its
 * assigned offset. */
static void test_hold_then_assign(void **state)
{
	fixture_t *f = *state;
	cs_consumer_t *c = f->c[C_HOLD_ASSIGN];
	cs_consumer_part_t *p;

	cs_consumer_hold(c, true);
	assign(c, (int64_t[]){0}, (bool[]){true});
	p = cs_consumer_find(c, ONE, 0);
	assert_true(p->ready);
	assert_int_not_equal(p->paused, 0);
	assert_quiet(c);
	cs_consumer_hold(c, false);
	assert_int_equal(p->paused, 0);
	assert_take_through(c, 0);
}

/* Unsubscribe c and poll until its revocation is recorded. @returns the event. */
static cs_rebalance_t *unsubscribe(cs_consumer_t *c)
{
	int64_t deadline = now_ms() + DEADLINE_MS;

	assert_int_equal(rd_kafka_unsubscribe(cs_consumer_rk(c)), RD_KAFKA_RESP_ERR_NO_ERROR);
	while (cs_consumer_event(c) == NULL && now_ms() < deadline) {
		rd_kafka_message_t *rkm = cs_consumer_poll(c, 50);
		if (rkm != NULL)
			rd_kafka_message_destroy(rkm);
	}
	if (cs_consumer_event(c) == NULL)
		fail_msg("no revocation within %d ms of unsubscribing", DEADLINE_MS);
	return cs_consumer_event(c);
}

/* 6a. A revocation is recorded, not acted on, until cs_consumer_revoke() lets go of it. */
static void test_revoke(void **state)
{
	fixture_t *f = *state;
	cs_consumer_t *c = f->c[C_REVOKE];
	rd_kafka_topic_t *rkt;
	rd_kafka_message_t m;
	cs_rebalance_t *ev;
	int nparts;

	assign(c, (int64_t[]){0}, (bool[]){true});
	assert_int_equal(f->stats[C_REVOKE].nparts, 1);
	ev = unsubscribe(c);
	assert_false(ev->assign);
	assert_false(ev->lost);
	assert_int_equal(ev->parts->cnt, 1);
	assert_string_equal(ev->parts->elems[0].topic, ONE);
	assert_int_equal(ev->parts->elems[0].partition, 0);
	/* recorded only: still tracked until the loop acts */
	assert_non_null(cs_consumer_find(c, ONE, 0));
	cs_consumer_revoke(c, ev);
	assert_null(cs_consumer_event(c));
	assert_null(cs_consumer_find(c, ONE, 0));
	cs_consumer_parts(c, &nparts);
	assert_int_equal(nparts, 0);
	assert_int_equal(f->stats[C_REVOKE].nparts, 0);
	assert_int_equal(cs_consumer_lane(c, ONE, 0), 0);
	rkt = topic_of(f, C_REVOKE);
	m = fake(rkt, 0, 3);
	assert_verdict(c, &m, CS_POS_UNKNOWN, 0);
	assert_null(cs_consumer_fatal(c));
	destroy_consumer(f, C_REVOKE);
}

/* 6b. Destroy with the assignment never acted on. */
static void test_destroy_pending_assign(void **state)
{
	fixture_t *f = *state;

	assert_non_null(cs_consumer_event(f->c[C_DESTROY_ASSIGN]));
	destroy_consumer(f, C_DESTROY_ASSIGN);
}

/* 6c. Destroy with a revocation never acted on. */
static void test_destroy_pending_revoke(void **state)
{
	fixture_t *f = *state;
	cs_consumer_t *c = f->c[C_DESTROY_REVOKE];

	assign(c, (int64_t[]){0}, (bool[]){true});
	assert_false(unsubscribe(c)->assign);
	destroy_consumer(f, C_DESTROY_REVOKE);
}

/* 7. */
static void test_destroy_null(void **state)
{
	(void)state;
	cs_consumer_destroy(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default_strategy),
		cmocka_unit_test(test_fetch_backoff),
		cmocka_unit_test(test_positions),
		cmocka_unit_test(test_gap_uncommitted),
		cmocka_unit_test(test_real_messages),
		cmocka_unit_test(test_unready),
		cmocka_unit_test(test_start_early),
		cmocka_unit_test(test_start_nothing_stored),
		cmocka_unit_test(test_starting_together),
		cmocka_unit_test(test_committed),
		cmocka_unit_test(test_hold),
		cmocka_unit_test(test_hold_then_assign),
		cmocka_unit_test(test_revoke),
		cmocka_unit_test(test_destroy_pending_assign),
		cmocka_unit_test(test_destroy_pending_revoke),
		cmocka_unit_test(test_destroy_null),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
