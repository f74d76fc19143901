/*
 * consumer.c - the Kafka consumer: group membership, assignment, positions
 */
#include "copysink/consumer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "copysink/fetchwake.h"
#include "copysink/kafkaconf.h"
#include "copysink/log.h"

#define SEEK_TIMEOUT_MS 10000
#define COMMITTED_TIMEOUT_MS 5000 /* the loop waits this long at most; retried after a backoff */

/* Why a partition is paused; it is resumed when no reason is left. */
#define PAUSE_LOOKUP 1u /* its stored offset is not read yet */
#define PAUSE_HOLD 2u   /* a write is being retried (cs_consumer_hold) */

struct cs_consumer {
	rd_kafka_t *rk;
	cs_stats_t *stats;
	int nlanes;
	cs_consumer_part_t *parts;
	int nparts, parts_cap;
	int last; /* index of the last message's partition in parts (a guess) */
	cs_rebalance_t *events, **events_tail;
	bool closing;  /* cs_consumer_close has begun: revocations are let go at once */
	bool held;     /* cs_consumer_hold(true) in force */
	bool brokers_down;    /* librdkafka reported all brokers down; cleared by a sign of life */
	int64_t probe_at;     /* when to ask the brokers again (cs_consumer_probe), ms */
	int64_t reset;        /* auto.offset.reset as a logical offset (BEGINNING or END) */
	bool read_committed;  /* isolation.level: a transaction's marker leaves a one-offset gap */
	bool starting;        /* cs_consumer_starting(): started partitions stay paused until off */
	cs_fetchwake_t *fw;   /* NULL when [worker] fetch_wake = off (fetchwake.h) */
	bool wake_on_take;    /* librdkafka < 2.2.0: kick the waker as the queue drains too */
	int64_t wake_every;   /* kick the waker after taking this many bytes (a quarter of the queue) */
	int64_t wake_bytes;   /* bytes taken since the last kick */
	char fatal[256];      /* set inside a callback: the loop stops */
};

const char *cs_consumer_default_strategy(int rdkafka_version)
{
	return rdkafka_version >= 0x020400ff ? "cooperative-sticky" : "roundrobin";
}

/* True when the group uses the cooperative protocol (NULL: no group yet, or unknown). */
static bool protocol_cooperative(rd_kafka_t *rk)
{
	const char *protocol = rd_kafka_rebalance_protocol(rk);

	return protocol != NULL && strcmp(protocol, "COOPERATIVE") == 0;
}

/* True when the group uses the cooperative protocol. */
static bool cooperative(cs_consumer_t *c)
{
	return protocol_cooperative(c->rk);
}

/* Answer a rebalance without taking part in it: librdkafka waits for an assign call after
 * every rebalance event (close included), and gets one here when the worker cannot track the
 * partitions (out of memory, closing, a failed assignment). */
static void let_go(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts, bool assign)
{
	rd_kafka_error_t *error = NULL;

	/* a closing consumer's assignment is taken as an unassignment by librdkafka */
	if (protocol_cooperative(rk))
		error = assign ? rd_kafka_incremental_assign(rk, parts)
			       : rd_kafka_incremental_unassign(rk, parts);
	else
		rd_kafka_assign(rk, NULL);
	if (error != NULL)
		rd_kafka_error_destroy(error);
}

/* One-partition list at `offset`. */
static rd_kafka_topic_partition_list_t *one(const char *topic, int32_t partition, int64_t offset)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);

	rd_kafka_topic_partition_list_add(list, topic, partition)->offset = offset;
	return list;
}

/* Add `why` to the partition's pause reasons, pausing it when it had none. */
static void pause_part(cs_consumer_t *c, cs_consumer_part_t *p, unsigned why)
{
	if (p->paused == 0) {
		rd_kafka_topic_partition_list_t *list = one(p->topic, p->partition, 0);
		rd_kafka_pause_partitions(c->rk, list);
		rd_kafka_topic_partition_list_destroy(list);
	}
	p->paused |= why;
}

/* Take `why` from the partition's pause reasons, resuming it when none is left. Never resumes
 * a partition this module did not pause. */
static void resume_part(cs_consumer_t *c, cs_consumer_part_t *p, unsigned why)
{
	if ((p->paused & why) == 0)
		return;
	p->paused &= ~why;
	if (p->paused == 0) {
		rd_kafka_topic_partition_list_t *list = one(p->topic, p->partition, 0);
		rd_kafka_resume_partitions(c->rk, list);
		rd_kafka_topic_partition_list_destroy(list);
		/* a resume does not wake the broker thread (librdkafka 2.0.2 to 2.8.0): it would
		 * fetch the partition only when it next wakes, up to a second later (measured at
		 * start-up: the first batch 1.0 s after the assignment, behind a second's
		 * backlog; with the kick 18 ms after the first entry was produced) */
		if (c->fw != NULL)
			cs_fetchwake_kick(c->fw);
	}
}

cs_consumer_part_t *cs_consumer_find(cs_consumer_t *c, const char *topic, int32_t partition)
{
	if (c->last < c->nparts && c->parts[c->last].partition == partition &&
	    strcmp(c->parts[c->last].topic, topic) == 0)
		return &c->parts[c->last];
	for (int i = 0; i < c->nparts; i++)
		if (c->parts[i].partition == partition && strcmp(c->parts[i].topic, topic) == 0) {
			c->last = i;
			return &c->parts[i];
		}
	return NULL;
}

cs_consumer_part_t *cs_consumer_parts(cs_consumer_t *c, int *nparts)
{
	*nparts = c->nparts;
	return c->parts;
}

int cs_consumer_lane(cs_consumer_t *c, const char *topic, int32_t partition)
{
	const cs_consumer_part_t *p = cs_consumer_find(c, topic, partition);

	return p != NULL ? p->lane : 0;
}

int cs_consumer_lanes_in_use(const cs_consumer_t *c)
{
	int used = 0;

	for (int l = 0; l < c->nlanes; l++)
		for (int i = 0; i < c->nparts; i++)
			if (c->parts[i].lane == l) {
				used++;
				break;
			}
	return used;
}

/* The lane owning the fewest assigned partitions (the first of them). */
static int least_loaded_lane(const cs_consumer_t *c)
{
	int best = 0, best_n = -1;

	for (int l = 0; l < c->nlanes; l++) {
		int n = 0;
		for (int i = 0; i < c->nparts; i++)
			n += c->parts[i].lane == l;
		if (best_n < 0 || n < best_n)
			best = l, best_n = n;
	}
	return best;
}

/* Track a newly assigned partition. @returns it, or NULL when out of memory. */
static cs_consumer_part_t *part_add(cs_consumer_t *c, const char *topic, int32_t partition)
{
	cs_consumer_part_t *p = cs_consumer_find(c, topic, partition);

	if (p != NULL)
		return p;
	if (c->nparts == c->parts_cap) {
		int cap = c->parts_cap ? c->parts_cap * 2 : 16;
		cs_consumer_part_t *np = realloc(c->parts, (size_t)cap * sizeof(*np));
		if (np == NULL)
			return NULL;
		c->parts = np;
		c->parts_cap = cap;
	}
	p = &c->parts[c->nparts];
	memset(p, 0, sizeof(*p));
	snprintf(p->topic, sizeof(p->topic), "%s", topic);
	p->partition = partition;
	p->stored = p->next = -1;
	p->lane = least_loaded_lane(c); /* before the new one counts */
	c->nparts++;
	return p;
}

/* Forget topic/partition. */
static void part_remove(cs_consumer_t *c, const char *topic, int32_t partition)
{
	cs_consumer_part_t *p = cs_consumer_find(c, topic, partition);

	if (p != NULL)
		*p = c->parts[--c->nparts];
	cs_stats_partition_remove(c->stats, topic, partition);
}

/* Record the stored offset of p (also for the metrics). */
static void set_stored(cs_consumer_t *c, cs_consumer_part_t *p, int64_t stored)
{
	p->stored = stored;
	cs_stats_partition(c->stats, p->topic, p->partition, stored, -1);
}

/* Seek p to `offset` and take it as its next offset. @returns 0, or -1 with errstr. */
static int seek_part(cs_consumer_t *c, cs_consumer_part_t *p, int64_t offset, char *errstr,
		     size_t errstr_size)
{
	rd_kafka_topic_partition_list_t *list = one(p->topic, p->partition, offset);
	rd_kafka_error_t *error = rd_kafka_seek_partitions(c->rk, list, SEEK_TIMEOUT_MS);
	int rc = 0;

	if (error != NULL || list->elems[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(errstr, errstr_size, "could not seek \"%s\" [%d] to offset %lld: %s",
			 p->topic, (int)p->partition, (long long)offset,
			 error != NULL ? rd_kafka_error_string(error)
				       : rd_kafka_err2str(list->elems[0].err));
		rc = -1;
	} else {
		p->next = offset >= 0 ? offset : -1; /* a logical one: the first message says */
		p->sought = true;
	}
	if (error != NULL)
		rd_kafka_error_destroy(error);
	rd_kafka_topic_partition_list_destroy(list);
	return rc;
}

/* librdkafka's rebalance callback (inside rd_kafka_consumer_poll or _close, on the loop's
 * thread): records the change for the loop, waits for nothing, and ends the poll so that
 * the loop acts at once. While closing, a revocation
 * is let go at once: the loop has drained and will not poll again. */
static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			 rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	cs_consumer_t *c = opaque;
	cs_rebalance_t *ev;

	if (c->closing) {
		let_go(rk, parts, err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS);
		for (int i = 0; err != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS && i < parts->cnt; i++) {
			part_remove(c, parts->elems[i].topic, parts->elems[i].partition);
			cs_info("partition \"%s\" [%d] revoked", parts->elems[i].topic,
				(int)parts->elems[i].partition);
		}
		return;
	}
	ev = calloc(1, sizeof(*ev));
	if (ev == NULL || (ev->parts = rd_kafka_topic_partition_list_copy(parts)) == NULL) {
		free(ev);
		snprintf(c->fatal, sizeof(c->fatal), "out of memory recording a rebalance");
		let_go(rk, parts, false); /* the loop stops; the group must not wait for it */
		return;
	}
	ev->assign = err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
	ev->lost = !ev->assign && rd_kafka_assignment_lost(rk);
	*c->events_tail = ev;
	c->events_tail = &ev->next;
	/* the loop acts on it now, not when the poll's timeout ends (up to 100 ms at start-up) */
	rd_kafka_yield(rk);
}

/* librdkafka's error callback (inside poll, on the loop's thread): records, logs, waits for
 * nothing. */
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	cs_consumer_t *c = opaque;

	if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
		if (!c->brokers_down)
			cs_log_fields(CS_LOG_WARNING, "all Kafka brokers are down", "error", reason,
				      NULL);
		c->brokers_down = true;
		c->stats->kafka_ok = false;
		return;
	}
	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		char why[200];
		rd_kafka_fatal_error(rk, why, sizeof(why));
		snprintf(c->fatal, sizeof(c->fatal), "Kafka consumer failed: %s", why);
		return;
	}
	cs_log_fields(CS_LOG_WARNING, "Kafka error", "error", reason, NULL);
}

void cs_consumer_probe(cs_consumer_t *c, int64_t now_ms)
{
	const struct rd_kafka_metadata *md = NULL;

	if (!c->brokers_down || now_ms < c->probe_at)
		return;
	c->probe_at = now_ms + 2000;
	/* a metadata request goes to a broker, never to the cache */
	if (rd_kafka_metadata(c->rk, 0, NULL, &md, 1000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
		c->brokers_down = false;
		c->stats->kafka_ok = true;
		cs_info("Kafka brokers answer again");
	}
	if (md != NULL)
		rd_kafka_metadata_destroy(md);
}

cs_rebalance_t *cs_consumer_event(cs_consumer_t *c)
{
	return c->events;
}

/* Unlink and free the first event. */
static void pop_event(cs_consumer_t *c)
{
	cs_rebalance_t *ev = c->events;

	c->events = ev->next;
	if (c->events == NULL)
		c->events_tail = &c->events;
	rd_kafka_topic_partition_list_destroy(ev->parts);
	free(ev);
}

cs_err_t cs_consumer_assign(cs_consumer_t *c, cs_rebalance_t *ev, const bool *known,
			    char *errstr, size_t errstr_size)
{
	rd_kafka_topic_partition_list_t *parts = ev->parts;
	rd_kafka_error_t *error = NULL;
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

	for (int i = 0; i < parts->cnt; i++) {
		rd_kafka_topic_partition_t *e = &parts->elems[i];
		cs_consumer_part_t *p = part_add(c, e->topic, e->partition);

		if (p == NULL) {
			snprintf(errstr, errstr_size, "out of memory tracking partition \"%s\" [%d]",
				 e->topic, (int)e->partition);
			return CS_ERR_FATAL;
		}
		p->ready = known[i];
		p->sought = true;
		p->next = known[i] && e->offset >= 0 ? e->offset : -1;
		set_stored(c, p, known[i] && e->offset >= 0 ? e->offset : -1);
		/* not known: an absolute placeholder, paused below before anything is fetched, and
		 * sought once the stored offset is read. A logical offset here would start
		 * librdkafka's own committed-offset and auto.offset.reset lookups, which fail a seek
		 * made before they end ("Erroneous state") and move the position after it. */
		if (!known[i])
			e->offset = 0;
	}
	if (cooperative(c))
		error = rd_kafka_incremental_assign(c->rk, parts);
	else
		err = rd_kafka_assign(c->rk, parts);
	if (error != NULL || err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(errstr, errstr_size, "could not assign %d partition(s): %s", parts->cnt,
			 error != NULL ? rd_kafka_error_string(error) : rd_kafka_err2str(err));
		if (error != NULL)
			rd_kafka_error_destroy(error);
		return CS_ERR_FATAL;
	}
	for (int i = 0; i < parts->cnt; i++) {
		cs_consumer_part_t *p = cs_consumer_find(c, parts->elems[i].topic,
							 parts->elems[i].partition);
		if (!known[i])
			pause_part(c, p, PAUSE_LOOKUP);
		if (c->held)
			pause_part(c, p, PAUSE_HOLD);
	}
	pop_event(c);
	return CS_OK;
}

void cs_consumer_revoke(cs_consumer_t *c, cs_rebalance_t *ev)
{
	rd_kafka_error_t *error = NULL;

	/* librdkafka keeps a partition's application pause across an unassignment (2.0.2 resets
	 * only its own on assignment): one revoked while paused would come back paused, with
	 * nothing here to resume it */
	for (int i = 0; i < ev->parts->cnt; i++) {
		cs_consumer_part_t *p = cs_consumer_find(c, ev->parts->elems[i].topic,
							 ev->parts->elems[i].partition);
		if (p != NULL && p->paused != 0)
			resume_part(c, p, p->paused);
	}
	if (cooperative(c))
		error = rd_kafka_incremental_unassign(c->rk, ev->parts);
	else
		rd_kafka_assign(c->rk, NULL);
	if (error != NULL) {
		/* librdkafka still waits for the unassignment: the loop stops, the close answers it */
		snprintf(c->fatal, sizeof(c->fatal), "could not let go of %d revoked partition(s): %s",
			 ev->parts->cnt, rd_kafka_error_string(error));
		rd_kafka_error_destroy(error);
	}
	for (int i = 0; i < ev->parts->cnt; i++) {
		part_remove(c, ev->parts->elems[i].topic, ev->parts->elems[i].partition);
		cs_info("partition \"%s\" [%d] %s", ev->parts->elems[i].topic,
			(int)ev->parts->elems[i].partition, ev->lost ? "lost" : "revoked");
	}
	pop_event(c);
}

/* Where a partition with no stored offset starts: its offset committed to Kafka, else
 * auto.offset.reset's end of the partition (its low or high watermark now).
 * @returns the offset, or RD_KAFKA_OFFSET_INVALID with errstr when the broker did not answer. */
static int64_t committed_or_reset(cs_consumer_t *c, const cs_consumer_part_t *p,
				  bool *committed, char *errstr, size_t errstr_size)
{
	rd_kafka_topic_partition_list_t *list = one(p->topic, p->partition, RD_KAFKA_OFFSET_INVALID);
	rd_kafka_resp_err_t err = rd_kafka_committed(c->rk, list, COMMITTED_TIMEOUT_MS);
	int64_t offset = list->elems[0].offset;

	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		err = list->elems[0].err;
	rd_kafka_topic_partition_list_destroy(list);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(errstr, errstr_size, "could not read the committed offset of \"%s\" [%d]: %s",
			 p->topic, (int)p->partition, rd_kafka_err2str(err));
		return RD_KAFKA_OFFSET_INVALID;
	}
	*committed = offset >= 0;
	if (offset >= 0)
		return offset;
	/* auto.offset.reset resolved here to an absolute offset: a seek to a logical one starts
	 * librdkafka's ListOffsets lookup, and the resume that follows outdates its answer, so
	 * 2.0.2 asks again only after its 500 ms offset-query backoff (measured at start-up:
	 * the first batch 0.5 s late, each partition's start staggered behind the others'
	 * 500 ms fetch wait) */
	int64_t low, high;

	err = rd_kafka_query_watermark_offsets(c->rk, p->topic, p->partition, &low, &high,
					       COMMITTED_TIMEOUT_MS);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(errstr, errstr_size, "could not read the offsets of \"%s\" [%d]: %s",
			 p->topic, (int)p->partition, rd_kafka_err2str(err));
		return RD_KAFKA_OFFSET_INVALID;
	}
	return c->reset == RD_KAFKA_OFFSET_END ? high : low;
}

cs_err_t cs_consumer_start(cs_consumer_t *c, const char *topic, int32_t partition,
			   int64_t stored, int64_t *at, bool *committed, char *errstr,
			   size_t errstr_size)
{
	cs_consumer_part_t *p = cs_consumer_find(c, topic, partition);
	bool from_kafka = false;
	int64_t start = stored;

	if (p == NULL)
		return CS_OK; /* revoked meanwhile */
	if (start < 0 && (start = committed_or_reset(c, p, &from_kafka, errstr, errstr_size)) ==
			     RD_KAFKA_OFFSET_INVALID)
		return CS_ERR_RETRIABLE;
	if (seek_part(c, p, start, errstr, errstr_size) != 0)
		return CS_ERR_RETRIABLE;
	if (at != NULL)
		*at = start;
	if (committed != NULL)
		*committed = from_kafka;
	set_stored(c, p, stored);
	p->ready = true;
	if (!c->starting)
		resume_part(c, p, PAUSE_LOOKUP);
	return CS_OK;
}

void cs_consumer_starting(cs_consumer_t *c, bool on)
{
	c->starting = on;
	for (int i = 0; !on && i < c->nparts; i++)
		if (c->parts[i].ready)
			resume_part(c, &c->parts[i], PAUSE_LOOKUP);
}

void cs_consumer_wait(cs_consumer_t *c, const char *topic, int32_t partition)
{
	cs_consumer_part_t *p = cs_consumer_find(c, topic, partition);

	if (p == NULL)
		return;
	p->ready = false;
	pause_part(c, p, PAUSE_LOOKUP);
}

cs_err_t cs_consumer_seek(cs_consumer_t *c, const char *topic, int32_t partition,
			  int64_t offset, char *errstr, size_t errstr_size)
{
	cs_consumer_part_t *p = cs_consumer_find(c, topic, partition);

	if (p == NULL || !p->ready)
		return CS_OK;
	return seek_part(c, p, offset, errstr, errstr_size) == 0 ? CS_OK : CS_ERR_FATAL;
}

bool cs_consumer_committed(cs_consumer_t *c, const char *topic, int32_t partition,
			   int64_t next_offset)
{
	cs_consumer_part_t *p = cs_consumer_find(c, topic, partition);
	char why[256];

	if (p == NULL)
		return false;
	if (next_offset > p->stored) /* a late commit of an older batch moves nothing back */
		set_stored(c, p, next_offset);
	if (!p->ready || (p->next >= 0 && p->next >= next_offset))
		return false;
	/* assigned again while the batch was in flight: what was taken since lies below the
	 * stored offset now; go on after it */
	if (seek_part(c, p, next_offset, why, sizeof(why)) != 0) {
		cs_warn("%s", why);
		p->next = next_offset; /* stale messages are dropped by the check, and a jump */
		p->sought = false;     /* past it is sought back */
	}
	return true;
}

cs_position_t cs_consumer_check(cs_consumer_t *c, const rd_kafka_message_t *rkm, int64_t *from,
				int *lane, cs_err_t *err, char *errstr, size_t errstr_size)
{
	cs_consumer_part_t *p = cs_consumer_find(c, rd_kafka_topic_name(rkm->rkt), rkm->partition);

	*err = CS_OK;
	if (p == NULL || !p->ready)
		return CS_POS_UNKNOWN;
	if (p->next >= 0 && rkm->offset < p->next) {
		c->stats->stale_skipped++;
		cs_debug("message \"%s\" [%d] at offset %lld delivered again: below %lld, dropped",
			 p->topic, (int)p->partition, (long long)rkm->offset, (long long)p->next);
		return CS_POS_STALE;
	}
	/* one offset missing under read_committed is the commit (or abort) marker of a
	 * transaction, which librdkafka never delivers: taken, the batch covering the marker,
	 * without the seek that checks a jump, or every transaction of a transactional producer
	 * would cost one (measured: 897 seeks and warnings for 30,000 entries in transactions of
	 * 100, 5,663 rows/s against 62,507 without) */
	bool marker = rkm->offset == p->next + 1 && c->read_committed;

	if (p->next >= 0 && rkm->offset > p->next && !p->sought && !marker) {
		int64_t next = p->next;

		c->stats->position_rewinds++;
		cs_warn("partition \"%s\" [%d] jumped from offset %lld to %lld: seeking back",
			p->topic, (int)p->partition, (long long)next, (long long)rkm->offset);
		if (seek_part(c, p, next, errstr, errstr_size) != 0)
			*err = CS_ERR_FATAL;
		return CS_POS_GAP;
	}
	*from = p->next >= 0 ? p->next : rkm->offset;
	*lane = p->lane;
	p->next = rkm->offset + 1;
	p->sought = false;
	return CS_POS_TAKE;
}

void cs_consumer_hold(cs_consumer_t *c, bool hold)
{
	if (c->held == hold)
		return;
	c->held = hold;
	for (int i = 0; i < c->nparts; i++)
		if (hold)
			pause_part(c, &c->parts[i], PAUSE_HOLD);
		else
			resume_part(c, &c->parts[i], PAUSE_HOLD);
}

void cs_consumer_commit(cs_consumer_t *c, const rd_kafka_topic_partition_list_t *offsets)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(offsets->cnt);

	for (int i = 0; i < offsets->cnt; i++)
		if (cs_consumer_find(c, offsets->elems[i].topic, offsets->elems[i].partition) != NULL)
			rd_kafka_topic_partition_list_add(list, offsets->elems[i].topic,
							  offsets->elems[i].partition)
				->offset = offsets->elems[i].offset;
	if (list->cnt > 0)
		rd_kafka_commit(c->rk, list, 1);
	rd_kafka_topic_partition_list_destroy(list);
}

void cs_consumer_taken(cs_consumer_t *c, size_t bytes)
{
	c->wake_bytes += (int64_t)bytes;
	if (c->fw != NULL && c->wake_on_take && c->wake_bytes >= c->wake_every) {
		cs_fetchwake_kick(c->fw);
		c->wake_bytes = 0;
	}
}

const char *cs_consumer_fatal(const cs_consumer_t *c)
{
	return c->fatal[0] != '\0' ? c->fatal : NULL;
}

uint64_t cs_consumer_wakeups(cs_consumer_t *c)
{
	return c->fw != NULL ? cs_fetchwake_count(c->fw) : 0;
}

rd_kafka_t *cs_consumer_rk(cs_consumer_t *c)
{
	return c->rk;
}

rd_kafka_message_t *cs_consumer_poll(cs_consumer_t *c, int timeout_ms)
{
	rd_kafka_message_t *rkm = rd_kafka_consumer_poll(c->rk, timeout_ms);

	if (rkm != NULL && rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR && c->brokers_down) {
		c->brokers_down = false; /* a message came: a broker answers */
		c->stats->kafka_ok = true;
		cs_info("Kafka brokers answer again");
	}
	return rkm;
}

/* True unless [worker] fetch_wake = off. */
static bool fetch_wake_on(const cs_config_t *cfg)
{
	return cfg->worker_fetch_wake == NULL || strcmp(cfg->worker_fetch_wake, "off") != 0;
}

/* The consumer's memory counts against the cap of 3 x max_bytes: librdkafka's prefetch queue
 * and one fetch response get one batch's worth between them (fetch.max.bytes max_bytes / 8
 * within [max(1 MiB, message.max.bytes), 50 MiB], the queue a quarter of the rest with
 * fetch_wake on, the whole rest with it off). The
 * queue's limit counts the messages' bytes, but a compressed message set is decompressed
 * into a buffer librdkafka sizes before it knows the result: 4 x the compressed bytes for
 * lz4 from producers that leave the frame's content size out (librdkafka's and Java's), kept
 * until the last message of the set is destroyed. Entries whose embeddings barely compress,
 * in small sets, then held 4 x the queue's bytes: 55-63 MB for a 14 MB queue, peak RSS 146
 * MB against the cap's 128 (docs/BENCHMARKS.md). librdkafka stops fetching for up to a
 * second whenever the queue is full, unless the waker wakes it or, from 2.2.0 on,
 * fetch.queue.backoff.ms is short (fetchwake.h). @returns 0, or -1 with errstr. */
static int set_sizes(rd_kafka_conf_t *conf, const cs_config_t *cfg, char *errstr,
		     size_t errstr_size)
{
	char why[512], kbytes[32], fetch[32];
	int64_t fetch_bytes = cfg->batch_max_bytes / 8, queue_kbytes;

	if (fetch_bytes > 52428800) /* librdkafka's own default, the most it needs */
		fetch_bytes = 52428800;
	/* librdkafka refuses a fetch.max.bytes below message.max.bytes (at least 1 MiB here) */
	if (rd_kafka_conf_get(conf, "message.max.bytes", why, &(size_t){sizeof(why)}) ==
		    RD_KAFKA_CONF_OK &&
	    strtoll(why, NULL, 10) > fetch_bytes)
		fetch_bytes = strtoll(why, NULL, 10);
	if (fetch_bytes < 1048576)
		fetch_bytes = 1048576;
	queue_kbytes = (cfg->batch_max_bytes - fetch_bytes) / 1024;
	/* with fetch_wake on the queue refills within a round trip (plus CS_FETCHWAKE_BACKOFF_MS
	 * from librdkafka 2.2.0 on), not a second: a quarter (at 4 x for decompression) keeps
	 * the writers as busy (measured with the waker: docs/BENCHMARKS.md); without the waker
	 * the writers idle unless the queue holds the whole of it, which buys throughput with
	 * memory over the cap */
	if (fetch_wake_on(cfg))
		queue_kbytes /= 4;
	snprintf(fetch, sizeof(fetch), "%lld", (long long)fetch_bytes);
	snprintf(kbytes, sizeof(kbytes), "%lld",
		 (long long)(queue_kbytes > 1024 ? queue_kbytes : 1024));
	return cs_kafkaconf_default(conf, cfg, "queued.max.messages.kbytes", kbytes, errstr,
				    errstr_size) ||
			       cs_kafkaconf_default(conf, cfg, "fetch.max.bytes", fetch, errstr,
						    errstr_size)
		       ? -1
		       : 0;
}

/* With fetch_wake on and a librdkafka that has fetch.queue.backoff.ms: set that backoff short,
 * where older versions get a waker thread (fetchwake.h). @returns 0, or -1 with errstr. */
static int set_fetch_backoff(rd_kafka_conf_t *conf, const cs_config_t *cfg, char *errstr,
			     size_t errstr_size)
{
	char backoff[16];

	if (!fetch_wake_on(cfg) || cs_fetchwake_needed(rd_kafka_version()))
		return 0;
	snprintf(backoff, sizeof(backoff), "%d", CS_FETCHWAKE_BACKOFF_MS);
	return cs_kafkaconf_default(conf, cfg, "fetch.queue.backoff.ms", backoff, errstr,
				    errstr_size);
}

/* The worker's defaults (where [kafka] does not say otherwise) and what a replay must never
 * do whatever [kafka] says: commit into the live worker's group. @returns 0, or -1 with errstr. */
static int set_defaults(rd_kafka_conf_t *conf, const cs_config_t *cfg, bool replay,
			char *errstr, size_t errstr_size)
{
	char why[512];
	const char *strategy = cs_consumer_default_strategy(rd_kafka_version());

	if (!replay &&
	    (rd_kafka_conf_get(conf, "group.id", why, &(size_t){sizeof(why)}) != RD_KAFKA_CONF_OK ||
	     why[0] == '\0')) {
		snprintf(errstr, errstr_size, "[kafka] group.id is not set");
		return -1;
	}
	if (cs_kafkaconf_default(conf, cfg, "enable.auto.commit", "false", errstr, errstr_size) ||
	    cs_kafkaconf_default(conf, cfg, "enable.auto.offset.store", "false", errstr,
				 errstr_size) ||
	    cs_kafkaconf_default(conf, cfg, "auto.offset.reset", "earliest", errstr,
				 errstr_size) ||
	    cs_kafkaconf_default(conf, cfg, "partition.assignment.strategy", strategy, errstr,
				 errstr_size) ||
	    cs_kafkaconf_default(conf, cfg, "client.id", "copysink", errstr, errstr_size) ||
	    (replay && cs_kafkaconf_default(conf, cfg, "enable.partition.eof", "true", errstr,
					    errstr_size)) ||
	    set_sizes(conf, cfg, errstr, errstr_size) != 0 ||
	    set_fetch_backoff(conf, cfg, errstr, errstr_size) != 0)
		return -1;
	if (replay &&
	    (rd_kafka_conf_set(conf, "enable.auto.commit", "false", why, sizeof(why)) !=
		     RD_KAFKA_CONF_OK ||
	     rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", why, sizeof(why)) !=
		     RD_KAFKA_CONF_OK)) {
		snprintf(errstr, errstr_size, "could not configure the replay's consumer: %s", why);
		return -1;
	}
	if (!replay && rd_kafka_version() < 0x020400ff &&
	    rd_kafka_conf_get(conf, "partition.assignment.strategy", why,
			      &(size_t){sizeof(why)}) == RD_KAFKA_CONF_OK &&
	    strstr(why, "cooperative-sticky") != NULL)
		cs_warn("partition.assignment.strategy \"%s\" with librdkafka %s: stopping during a "
			"rebalance can abort the process (librdkafka issue 4312, fixed in 2.3.0); "
			"the default on this version is \"%s\"",
			why, rd_kafka_version_str(), strategy);
	return 0;
}

/* Subscribe to the tables' topics. @returns 0, or -1 with errstr. */
static int subscribe(cs_consumer_t *c, const cs_config_t *cfg, char *errstr, size_t errstr_size)
{
	rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(cfg->ntables);
	rd_kafka_resp_err_t err;

	for (int t = 0; t < cfg->ntables; t++)
		rd_kafka_topic_partition_list_add(topics, cfg->tables[t].topic, RD_KAFKA_PARTITION_UA);
	err = rd_kafka_subscribe(c->rk, topics);
	rd_kafka_topic_partition_list_destroy(topics);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(errstr, errstr_size, "could not subscribe: %s", rd_kafka_err2str(err));
		return -1;
	}
	return 0;
}

cs_consumer_t *cs_consumer_new(const cs_config_t *cfg, const cs_replay_opts_t *replay,
			       int nlanes, cs_stats_t *stats, char *errstr, size_t errstr_size)
{
	cs_consumer_t *c = calloc(1, sizeof(*c));
	rd_kafka_conf_t *conf = NULL;
	char why[512];

	if (c == NULL) {
		snprintf(errstr, errstr_size, "out of memory");
		return NULL;
	}
	c->stats = stats;
	c->nlanes = nlanes > 0 ? nlanes : 1;
	c->events_tail = &c->events;
	conf = cs_kafkaconf_new(cfg, false, errstr, errstr_size);
	if (conf == NULL || set_defaults(conf, cfg, replay != NULL, errstr, errstr_size) != 0)
		goto fail;
	if (rd_kafka_conf_get(conf, "queued.max.messages.kbytes", why, &(size_t){sizeof(why)}) ==
	    RD_KAFKA_CONF_OK)
		c->wake_every = strtoll(why, NULL, 10) * 1024 / 4;
	c->reset = RD_KAFKA_OFFSET_BEGINNING;
	if (rd_kafka_conf_get(conf, "auto.offset.reset", why, &(size_t){sizeof(why)}) ==
		    RD_KAFKA_CONF_OK &&
	    (strcmp(why, "latest") == 0 || strcmp(why, "largest") == 0 || strcmp(why, "end") == 0))
		c->reset = RD_KAFKA_OFFSET_END;
	c->read_committed = rd_kafka_conf_get(conf, "isolation.level", why,
					      &(size_t){sizeof(why)}) != RD_KAFKA_CONF_OK ||
			    strcmp(why, "read_committed") == 0;
	if (replay == NULL)
		rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
	rd_kafka_conf_set_error_cb(conf, error_cb);
	rd_kafka_conf_set_opaque(conf, c);
	c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
	if (c->rk == NULL) {
		snprintf(errstr, errstr_size, "could not create the Kafka consumer: %s", why);
		goto fail;
	}
	conf = NULL; /* owned by rk now */
	rd_kafka_poll_set_consumer(c->rk);
	/* the waker wakes the fetcher after a resume on every version, and after the queue
	 * drained where librdkafka lacks fetch.queue.backoff.ms (fetchwake.h) */
	c->wake_on_take = cs_fetchwake_needed(rd_kafka_version());
	if (fetch_wake_on(cfg) && (c->fw = cs_fetchwake_new(c->rk)) == NULL) {
		snprintf(errstr, errstr_size, "could not start the fetch waker thread");
		goto fail;
	}
	if (replay == NULL && subscribe(c, cfg, errstr, errstr_size) != 0)
		goto fail;
	return c;
fail:
	if (conf != NULL)
		rd_kafka_conf_destroy(conf);
	cs_consumer_destroy(c);
	return NULL;
}

int cs_consumer_track_assignment(cs_consumer_t *c)
{
	rd_kafka_topic_partition_list_t *list = NULL;
	int rc = 0;

	if (rd_kafka_assignment(c->rk, &list) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return 0;
	for (int i = 0; i < list->cnt && rc == 0; i++) {
		cs_consumer_part_t *p = part_add(c, list->elems[i].topic, list->elems[i].partition);
		if (p == NULL)
			rc = -1;
		else
			p->ready = p->sought = true;
	}
	rd_kafka_topic_partition_list_destroy(list);
	return rc;
}

void cs_consumer_close(cs_consumer_t *c)
{
	if (c == NULL || c->closing)
		return;
	cs_fetchwake_destroy(c->fw); /* before the consumer it queries */
	c->fw = NULL;
	c->closing = true;
	if (c->rk != NULL) {
		/* changes the loop did not act on: librdkafka waits for their assign calls */
		while (c->events != NULL) {
			let_go(c->rk, c->events->parts, c->events->assign);
			pop_event(c);
		}
		rd_kafka_consumer_close(c->rk);
	}
}

void cs_consumer_destroy(cs_consumer_t *c)
{
	if (c == NULL)
		return;
	cs_consumer_close(c);
	if (c->rk != NULL)
		rd_kafka_destroy(c->rk);
	while (c->events != NULL)
		pop_event(c);
	free(c->parts);
	free(c);
}
