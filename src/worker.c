/*
 * worker.c - the main loop: consume -> decode -> batch -> copy/merge -> commit
 *
 * The consumer side (group, assignment, positions) is consumer.c; the PostgreSQL side is
 * writer.c on the lanes' threads (wthread.c) and, for stored-offset reads and health checks,
 * the loop's own connection.
 */
#include "copysink/worker.h"

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "copysink/batch.h"
#include "copysink/consumer.h"
#include "copysink/decode.h"
#include "copysink/dlq.h"
#include "copysink/log.h"
#include "copysink/replay.h"
#include "copysink/stats.h"
#include "copysink/writer.h"
#include "copysink/wthread.h"

#define ERRSTR 1024
#define DLQ_FLUSH_MS 30000
#define HEALTH_EVERY_MS 2000 /* /readyz learns of a PostgreSQL outage within this, idle or not */
#define SLOW_WRITE_MS 10000  /* a write taking longer has the loop poll while it waits */

/*
 * A lane: one writer connection with its thread, and the two batches of the partitions it
 * owns ([postgres] writers lanes; a partition belongs to one lane while it is assigned, so
 * each partition's batches commit in order and each transaction stores only its own lane's
 * offsets). The loop fills every lane's batch; each lane has at most one batch in flight.
 */
typedef struct lane {
	cs_worker_t *w;
	int index;
	cs_writer_t *writer;
	cs_wthread_t *wt;
	cs_decoder_t *dec2;   /* re-opens a message to dead-letter one of its entries (writer thread) */
	cs_batch_t *batch;    /* being filled by the loop */
	cs_batch_t *inflight; /* being written by the writer thread (or waiting for a retry) */
	cs_dlq_tally_t tallies[2];
	cs_dlq_tally_t *fill_tally;   /* dead letters of `batch` that failed */
	cs_dlq_tally_t *flight_tally; /* those of `inflight` (rows PostgreSQL rejected) */
	bool inflight_failed; /* the in-flight batch failed (retriable) and must be written again
			       * before any later batch: batches commit in the order they filled */
	size_t inflight_bytes;
	int64_t *expected; /* scratch: expected offsets of the batch's partitions */
	int expected_cap;
	int64_t batch_start_ms; /* when the batch got its first message */
	/* counted on the writer thread (rejected rows), merged into stats after each write */
	uint64_t w_dead_db;
	char w_sqlstate[6];
	uint64_t w_sqlstate_count;
} lane_t;

struct cs_worker {
	cs_config_t *cfg;
	cs_consumer_t *cons;
	rd_kafka_t *rk;       /* cs_consumer_rk(cons): watermarks and the replay */
	cs_writer_t *ctl;     /* the loop's connection: stored offsets, health checks */
	int64_t health_at_ms; /* when PostgreSQL was last known to answer */
	int64_t lookup_at_ms; /* next read of the stored offsets of partitions still waiting */
	int64_t lookup_backoff_ms;
	cs_dlq_t *dlq;
	cs_decoder_t *dec;
	lane_t *lanes;
	int nlanes;
	bool auto_lanes;
	bool key_order;         /* more than one lane owns partitions: see share_bytes() */        /* writers = auto: lanes past the first connect when first used */
	int64_t lane_max_bytes; /* [batch] max_bytes shared among the lanes owning partitions */
	bool fatal;           /* the loop must stop with w->errstr */
	bool rebalancing;     /* inside act_on_rebalances() */
	bool slow_hold;       /* partitions held while a slow write is waited for */
	bool write_when_idle; /* [batch] write_when_idle = on */
	volatile sig_atomic_t *stop;
	cs_stats_shared_t *shared;
	cs_stats_t stats, prev_stats;
	int64_t stats_at_ms;
#ifdef COPYSINK_TEST_HOOKS
	long kill_after_commits;    /* the process kills itself after this many commits; 0 = off */
	long stall_before_write_ms; /* the loop stalls once holding a batch; 0 = off */
#endif
	cs_replay_t *replay;     /* replay mode: own assignment, no group, no offsets */
	const cs_replay_opts_t *ropts;
	char errstr[ERRSTR];
};

static cs_err_t settle(lane_t *l, int64_t deadline);
static cs_err_t settle_all(cs_worker_t *w, int64_t deadline);
static cs_err_t drain(cs_worker_t *w, int64_t deadline);
static cs_err_t act_on_rebalances(cs_worker_t *w, bool settling);
static void share_bytes(cs_worker_t *w);
static cs_err_t wait_polling(cs_worker_t *w, int64_t ms);

/* Monotonic milliseconds. */
static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wall-clock milliseconds since the epoch. */
static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Sleep for ms milliseconds. */
static void sleep_ms(int64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* The next exponential backoff after `ms`, at most [worker] retry_backoff_max_ms. */
static int64_t next_backoff(const cs_worker_t *w, int64_t ms)
{
	return ms * 2 > w->cfg->retry_backoff_max_ms ? w->cfg->retry_backoff_max_ms : ms * 2;
}

/* Refresh the health fields and high watermarks and publish the counters for the HTTP thread. */
static void publish(cs_worker_t *w)
{
	w->stats.heartbeat_ms = now_ms();
	w->stats.bytes_held = 0;
	for (int i = 0; i < w->nlanes; i++)
		w->stats.bytes_held += cs_batch_bytes(w->lanes[i].batch) + w->lanes[i].inflight_bytes;
	w->stats.unknown_fields = cs_decoder_unknown_fields(w->dec);
	w->stats.dead_letter_values_dropped = cs_dlq_values_dropped(w->dlq);
	for (int i = 0; i < w->stats.nparts; i++) {
		int64_t low, high;
		cs_stats_partition_t *p = &w->stats.parts[i];
		if (rd_kafka_get_watermark_offsets(w->rk, p->topic, p->partition, &low, &high) ==
		    RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
			p->high = high;
	}
	if (w->shared != NULL)
		cs_stats_publish(w->shared, &w->stats);
}

/* Index of the table reading `topic`, or -1. */
static int table_for_topic(const cs_worker_t *w, const char *topic)
{
	for (int t = 0; t < w->cfg->ntables; t++)
		if (strcmp(w->cfg->tables[t].topic, topic) == 0)
			return t;
	return -1;
}

/* True when the batch still holds a partition (not all dropped on revoke). */
static bool holds_partitions(const cs_batch_t *b)
{
	int nparts;
	const cs_batch_part_t *parts = cs_batch_parts(b, &nparts);

	for (int i = 0; i < nparts; i++)
		if (parts[i].partition >= 0)
			return true;
	return false;
}

/* The offset batch b covers topic/partition from, or -1 when it holds none of it. */
static int64_t batch_start(const cs_batch_t *b, const char *topic, int32_t partition)
{
	int nparts;
	const cs_batch_part_t *parts = cs_batch_parts(b, &nparts);

	for (int i = 0; i < nparts; i++)
		if (parts[i].partition == partition && strcmp(parts[i].topic, topic) == 0)
			return parts[i].start_offset;
	return -1;
}

/* The dead-letter topic for entries of table t (or of an unknown topic when t < 0). */
static const char *dlq_topic(const cs_worker_t *w, int t, const char *topic, char *buf,
			     size_t size)
{
	if (t >= 0)
		return cs_config_dlq_topic(w->cfg, &w->cfg->tables[t], buf, size);
	if (w->cfg->dlq_topic != NULL && w->cfg->dlq_topic[0] != '\0')
		snprintf(buf, size, "%s", w->cfg->dlq_topic);
	else
		snprintf(buf, size, "%s.dlq", topic);
	return buf;
}

/* Queue one dead letter of the batch whose tally is `tally` (any thread).
 * @returns 0, or -1 with errbuf (retriable: the batch must not commit). */
static int dead_letter(const cs_worker_t *w, cs_dead_letter_t *dl, int t, cs_reason_t reason,
		       cs_dlq_tally_t *tally, char *errbuf, size_t errbuf_size)
{
	char topic[CS_MAX_TOPIC + 8];

	dl->dlq_topic = dlq_topic(w, t, dl->topic, topic, sizeof(topic));
	dl->table = t >= 0 ? w->cfg->tables[t].name : NULL;
	dl->reason = cs_reason_name(reason);
	cs_log_fields(CS_LOG_WARNING, "entry dead-lettered", "reason", dl->reason, "error",
		      dl->error, "topic", dl->topic, "dlq_topic", dl->dlq_topic, NULL);
	return cs_dlq_send(w->dlq, dl, tally, errbuf, errbuf_size);
}

/* Queue a dead letter from the loop thread and count it. */
static cs_err_t dead_letter_counted(lane_t *l, cs_dead_letter_t *dl, int t, cs_reason_t reason)
{
	cs_worker_t *w = l->w;

	if (dead_letter(w, dl, t, reason, l->fill_tally, w->errstr, sizeof(w->errstr)) != 0)
		return CS_ERR_RETRIABLE;
	w->stats.dead_letters[reason]++;
	return CS_OK;
}

/* Decode every entry of the message into the batch; invalid ones become dead letters. */
static cs_err_t decode_message(lane_t *l, const rd_kafka_message_t *rkm, int t, int part)
{
	cs_worker_t *w = l->w;
	const cs_tablespec_t *spec = &w->cfg->tables[t];
	cs_buf_t *tuples = cs_batch_tuples(l->batch, t), *keys = cs_batch_keys(l->batch);
	cs_dead_letter_t dl = {.topic = rd_kafka_topic_name(rkm->rkt), .partition = rkm->partition,
			       .offset = rkm->offset, .entry = -1, .key = rkm->key,
			       .key_len = rkm->key_len, .value = rkm->payload, .value_len = rkm->len};
	char why[512];
	cs_reason_t reason;
	cs_buf_t one;
	int n;

	if (rkm->payload == NULL) {
		/* a tombstone: delete the row of the key */
		size_t tuple_start = tuples->len, key_start = keys->len;
		reason = cs_decode_key(w->dec, spec, rkm->key, rkm->key_len, tuples, keys, why,
				       sizeof(why));
		if (reason == CS_REASON__COUNT)
			return CS_ERR_FATAL;
		if (reason != CS_REASON_OK) {
			dl.error = why;
			return dead_letter_counted(l, &dl, t, reason);
		}
		if (cs_batch_push_row(l->batch, t, part, rkm->offset, -1, tuple_start, key_start,
				      true) != 0)
			return CS_ERR_FATAL;
		w->stats.entries++;
		return CS_OK;
	}
	n = cs_decode_open(w->dec, rkm->payload, rkm->len, &reason, why, sizeof(why));
	if (n < 0) {
		dl.error = why;
		return dead_letter_counted(l, &dl, t, reason);
	}
	for (int i = 0; i < n; i++) {
		size_t tuple_start = tuples->len, key_start = keys->len;

		reason = cs_decode_entry(w->dec, i, spec, tuples, keys, why, sizeof(why));
		if (reason == CS_REASON_OK) {
			if (cs_batch_push_row(l->batch, t, part, rkm->offset, i, tuple_start,
					      key_start, false) != 0)
				return CS_ERR_FATAL;
			w->stats.entries++;
			continue;
		}
		if (reason == CS_REASON__COUNT)
			return CS_ERR_FATAL;
		dl.error = why;
		if (n == 1)
			cs_buf_init(&one), dl.entry = -1;
		else {
			cs_buf_init(&one);
			if (cs_decode_entry_bytes(w->dec, i, &one) != 0)
				return CS_ERR_FATAL;
			dl.entry = i;
			dl.value = one.data;
			dl.value_len = one.len;
		}
		if (dead_letter_counted(l, &dl, t, reason) != CS_OK) {
			cs_buf_cleanup(&one);
			return CS_ERR_RETRIABLE;
		}
		cs_buf_cleanup(&one);
		dl.value = rkm->payload;
		dl.value_len = rkm->len;
	}
	return CS_OK;
}

/* Take one consumed message into its lane's batch, if it is the next of its partition. */
static cs_err_t take_message(cs_worker_t *w, const rd_kafka_message_t *rkm)
{
	const char *topic = rd_kafka_topic_name(rkm->rkt);
	int t = table_for_topic(w, topic);
	int64_t from = rkm->offset;
	int lane = 0, part;
	cs_err_t err;
	lane_t *l;

	if (w->replay != NULL && !cs_replay_take(w->replay, w->rk, topic, rkm->partition,
						 rkm->offset))
		return CS_OK; /* past the end of the replay */
	if (cs_consumer_check(w->cons, rkm, &from, &lane, &err, w->errstr, sizeof(w->errstr)) !=
	    CS_POS_TAKE)
		return err;
	l = &w->lanes[lane];
	w->stats.messages++;
	cs_consumer_taken(w->cons, rkm->len + rkm->key_len);
	if (cs_batch_empty(l->batch))
		l->batch_start_ms = now_ms();
	part = cs_batch_add_message(l->batch, topic, rkm->partition, rkm->offset, rkm->key,
				    rkm->key_len, rkm->payload, rkm->len, true);
	if (part < 0)
		return CS_ERR_FATAL;
	cs_batch_cover_from(l->batch, part, from);
	if (t < 0) {
		cs_dead_letter_t dl = {.topic = topic, .partition = rkm->partition,
				       .offset = rkm->offset, .entry = -1, .key = rkm->key,
				       .key_len = rkm->key_len, .value = rkm->payload,
				       .value_len = rkm->len};
		dl.error = "no table reads this topic";
		return dead_letter_counted(l, &dl, t, CS_REASON_NO_TABLE);
	}
	return decode_message(l, rkm, t, part);
}

/* Writer callback, on the writer thread: dead-letter a row PostgreSQL rejected and wait for
 * the broker's ack, so the row is safe before the transaction commits without it. Touches only
 * the in-flight batch, dec2 and the w_* counters, which the loop reads after the write. */
static int reject_row(void *opaque, int t, const cs_batch_row_t *row, const char *sqlstate,
		      const char *message)
{
	lane_t *l = opaque;
	cs_worker_t *w = l->w;
	const cs_batch_part_t *parts;
	cs_dead_letter_t dl = {.offset = row->offset, .entry = -1, .sqlstate = sqlstate,
			       .error = message};
	cs_buf_t one;
	cs_reason_t reason;
	char why[256], errbuf[512];
	int nparts, rc = -1;

	parts = cs_batch_parts(l->inflight, &nparts);
	dl.topic = parts[row->part].topic;
	dl.partition = parts[row->part].partition;
	cs_batch_row_message(l->inflight, row, &dl.key, &dl.key_len, &dl.value, &dl.value_len);
	cs_buf_init(&one);
	/* one entry of several: dead-letter that entry's bytes, not the whole message */
	if (cs_decode_open(l->dec2, dl.value, dl.value_len, &reason, why, sizeof(why)) > 1) {
		if (cs_decode_entry_bytes(l->dec2, row->entry, &one) != 0)
			goto fail;
		dl.entry = row->entry;
		dl.value = one.data;
		dl.value_len = one.len;
	}
	if (dead_letter(w, &dl, t, CS_REASON_DB_REJECTED, l->flight_tally, errbuf,
			sizeof(errbuf)) != 0 ||
	    cs_dlq_flush(w->dlq, l->flight_tally, DLQ_FLUSH_MS, errbuf, sizeof(errbuf)) != CS_OK) {
		cs_log_fields(CS_LOG_WARNING, "dead letter not delivered", "error", errbuf, NULL);
		goto fail;
	}
	l->w_dead_db++;
	snprintf(l->w_sqlstate, sizeof(l->w_sqlstate), "%s", sqlstate ? sqlstate : "");
	l->w_sqlstate_count++;
	rc = 0;
fail:
	cs_buf_cleanup(&one);
	return rc;
}

/* Read the stored offset of topic/partition on the loop's connection (-1 when none). The
 * ping first connects or checks the connection within 2 s, so that a server gone silent
 * cannot hold the loop (and its polls) for the length of a TCP timeout.
 * @returns CS_OK, or the error with w->errstr (the connection is dropped when broken). */
static cs_err_t read_stored(cs_worker_t *w, const char *topic, int32_t partition,
			    int64_t *stored)
{
	cs_err_t err = cs_writer_ping(w->ctl, w->errstr, sizeof(w->errstr));

	if (err == CS_OK)
		err = cs_writer_stored_offset(w->ctl, topic, partition, stored, w->errstr,
					      sizeof(w->errstr));
	w->stats.pg_ok = err == CS_OK;
	if (err == CS_OK)
		w->health_at_ms = now_ms();
	else
		cs_writer_disconnect(w->ctl);
	return err;
}

/* Log where an assigned partition starts. */
/* at, committed: where a partition with nothing stored starts (cs_consumer_start) */
static void log_start(const char *topic, int32_t partition, int64_t stored, int64_t at,
		      bool committed)
{
	if (stored >= 0)
		cs_info("partition \"%s\" [%d] assigned, starting at stored offset %lld", topic,
			(int)partition, (long long)stored);
	else
		cs_info("partition \"%s\" [%d] assigned, no stored offset: starting at offset %lld "
			"(%s)", topic, (int)partition, (long long)at,
			committed ? "committed to Kafka" : "auto.offset.reset");
}

/* The in-flight batch was fenced: re-read the stored offsets of its partitions still assigned
 * and start them there again (what the loop read of them since is dropped). */
static cs_err_t resync_partitions(lane_t *l)
{
	cs_worker_t *w = l->w;
	const cs_batch_part_t *parts;
	int nparts;

	parts = cs_batch_parts(l->inflight, &nparts);
	for (int i = 0; i < nparts; i++) {
		int64_t stored;
		lane_t *owner;

		if (parts[i].partition < 0 ||
		    cs_consumer_find(w->cons, parts[i].topic, parts[i].partition) == NULL)
			continue;
		owner = &w->lanes[cs_consumer_lane(w->cons, parts[i].topic, parts[i].partition)];
		cs_batch_drop_partition(owner->batch, parts[i].topic, parts[i].partition);
		if (read_stored(w, parts[i].topic, parts[i].partition, &stored) != CS_OK) {
			/* PostgreSQL went away: the partition waits, paused, for its stored offset */
			cs_warn("%s", w->errstr);
			cs_consumer_wait(w->cons, parts[i].topic, parts[i].partition);
			continue;
		}
		if (cs_consumer_start(w->cons, parts[i].topic, parts[i].partition, stored, NULL,
				      NULL, w->errstr, sizeof(w->errstr)) != CS_OK) {
			cs_warn("%s", w->errstr); /* tried again with the partitions still waiting */
			cs_consumer_wait(w->cons, parts[i].topic, parts[i].partition);
		}
	}
	return CS_OK;
}

/* Commit the batch's next offsets to Kafka too (for lag tools; PostgreSQL holds the truth). */
static void commit_to_kafka(lane_t *l)
{
	const cs_batch_part_t *parts;
	rd_kafka_topic_partition_list_t *list;
	int nparts;

	parts = cs_batch_parts(l->inflight, &nparts);
	list = rd_kafka_topic_partition_list_new(nparts > 0 ? nparts : 1);
	for (int i = 0; i < nparts; i++)
		if (parts[i].partition >= 0)
			rd_kafka_topic_partition_list_add(list, parts[i].topic, parts[i].partition)
				->offset = parts[i].next_offset;
	cs_consumer_commit(l->w->cons, list);
	rd_kafka_topic_partition_list_destroy(list);
}

/* Log the committed batch: rows, bytes, duration and rows/s, per table. */
static void log_batch(lane_t *l, int64_t ms)
{
	cs_worker_t *w = l->w;
	char rows[32], bytes[32], dur[32], rate[32], tables[512], lane[16];
	uint64_t r = 0, by = 0;
	size_t off = 0;

	tables[0] = '\0';
	for (int t = 0; t < w->cfg->ntables; t++) {
		const cs_writer_table_stats_t *ts = cs_writer_table_stats(l->writer, t);
		if (ts->rows == 0 && ts->rejected == 0)
			continue;
		r += ts->rows;
		by += ts->bytes;
		if (t < CS_STATS_MAX_TABLES) {
			w->stats.rows_written[t] += ts->rows;
			w->stats.rows_merged[t] += ts->merged;
			w->stats.rows_deleted[t] += ts->deleted;
		}
		if (off < sizeof(tables))
			off += (size_t)snprintf(tables + off, sizeof(tables) - off,
						"%s%s:%llu/%lluB/%.0f/s/%s", off ? "," : "",
						w->cfg->tables[t].name, (unsigned long long)ts->rows,
						(unsigned long long)ts->bytes,
						ms > 0 ? (double)ts->rows * 1000.0 / (double)ms : 0.0,
						ts->direct ? "direct" : "merge");
	}
	snprintf(rows, sizeof(rows), "%llu", (unsigned long long)r);
	snprintf(bytes, sizeof(bytes), "%llu", (unsigned long long)by);
	snprintf(dur, sizeof(dur), "%lld", (long long)ms);
	snprintf(rate, sizeof(rate), "%.0f", ms > 0 ? (double)r * 1000.0 / (double)ms : 0.0);
	snprintf(lane, sizeof(lane), "%d", l->index);
	/* a replay on a terminal shows a progress bar instead; with several writers, the last
	 * field says which one wrote the batch */
	cs_log_fields(w->ropts != NULL && w->ropts->tty ? CS_LOG_DEBUG : CS_LOG_INFO,
		      "batch committed", "rows", rows, "bytes", bytes, "ms", dur,
		      "rows_per_s", rate, "tables", tables, w->nlanes > 1 ? "writer" : NULL, lane,
		      NULL);
}

/* The stored offsets this worker expects for the filled batch's partitions. */
static int fill_expected(lane_t *l)
{
	const cs_batch_part_t *parts;
	int nparts;

	parts = cs_batch_parts(l->batch, &nparts);
	if (nparts > l->expected_cap) {
		int64_t *e = realloc(l->expected, (size_t)nparts * sizeof(*e));
		if (e == NULL)
			return -1;
		l->expected = e;
		l->expected_cap = nparts;
	}
	for (int i = 0; i < nparts; i++) {
		const cs_consumer_part_t *p = parts[i].partition < 0 ? NULL
					      : cs_consumer_find(l->w->cons, parts[i].topic,
								 parts[i].partition);
		l->expected[i] = p ? p->stored : -1;
	}
	return 0;
}

/* Some dead letters of the filling batch were not delivered: drop the batch and seek its
 * partitions back to where it started, so that its entries are read, decoded and dead-lettered
 * again. Letters that did arrive arrive twice (the dead-letter topic is at least once).
 * @returns CS_ERR_RETRIABLE (wait, then go on), or CS_ERR_FATAL when a seek failed: the
 *          consumer's position is then unknown and only a restart from the stored offsets is safe. */
static cs_err_t rewind_batch(lane_t *l)
{
	cs_worker_t *w = l->w;
	const cs_batch_part_t *parts;
	char why[ERRSTR];
	int nparts;
	cs_err_t err = CS_ERR_RETRIABLE;

	snprintf(why, sizeof(why), "%s", w->errstr);
	cs_log_fields(CS_LOG_WARNING, "dead letters not delivered: the batch is read again",
		      "error", why, NULL);
	parts = cs_batch_parts(l->batch, &nparts);
	for (int i = 0; i < nparts && err != CS_ERR_FATAL; i++)
		if (parts[i].partition >= 0 &&
		    cs_consumer_seek(w->cons, parts[i].topic, parts[i].partition,
				     parts[i].start_offset, w->errstr, sizeof(w->errstr)) != CS_OK)
			err = CS_ERR_FATAL;
	w->fatal = w->fatal || err == CS_ERR_FATAL;
	cs_batch_reset(l->batch);
	cs_dlq_tally_reset(l->fill_tally);
	return err;
}

/* Hand the filled batch to the writer thread (its dead letters acknowledged first) and start
 * filling the other one. Precondition: nothing in flight (settle() returned CS_OK). */
static cs_err_t submit(lane_t *l)
{
	cs_worker_t *w = l->w;
	cs_batch_t *tmp;
	cs_dlq_tally_t *tally;

	if (cs_batch_empty(l->batch))
		return CS_OK;
	if (l->inflight_failed || cs_wthread_busy(l->wt))
		return CS_ERR_RETRIABLE; /* the older batch first */
	if (!holds_partitions(l->batch)) {
		cs_batch_reset(l->batch); /* everything in it was revoked */
		return CS_OK;
	}
	if (cs_dlq_flush(w->dlq, l->fill_tally, DLQ_FLUSH_MS, w->errstr, sizeof(w->errstr)) != CS_OK)
		return rewind_batch(l);
	if (fill_expected(l) != 0)
		return CS_ERR_FATAL;
	tmp = l->inflight;
	l->inflight = l->batch;
	l->batch = tmp;
	tally = l->flight_tally;
	l->flight_tally = l->fill_tally;
	l->fill_tally = tally;
	cs_dlq_tally_reset(l->fill_tally);
	l->inflight_bytes = cs_batch_bytes(l->inflight);
	cs_writer_set_key_order(l->writer, w->key_order); /* its thread is idle: no batch */
#ifdef COPYSINK_TEST_HOOKS
	if (w->stall_before_write_ms > 0) {
		/* tests: the loop stalls (no poll) holding a batch, long enough to be thrown out of
		 * the group; its write must then be fenced */
		sleep_ms(w->stall_before_write_ms);
		w->stall_before_write_ms = 0;
	}
#endif
	cs_wthread_submit(l->wt, l->inflight, l->expected);
	return CS_OK;
}

/* The in-flight batch committed: move the partitions on, commit to Kafka, count, log. A
 * partition assigned again while the batch was in flight was started at the old stored
 * offset: what its lane has taken of it since is below the new one and is dropped. */
static void committed(lane_t *l, int64_t ms)
{
	cs_worker_t *w = l->w;
	const cs_batch_part_t *parts;
	int nparts;

	parts = cs_batch_parts(l->inflight, &nparts);
	for (int i = 0; i < nparts; i++) {
		const char *topic = parts[i].topic;
		int32_t partition = parts[i].partition;
		lane_t *owner;
		int64_t start;
		bool moved;

		if (partition < 0 || cs_consumer_find(w->cons, topic, partition) == NULL)
			continue;
		owner = &w->lanes[cs_consumer_lane(w->cons, topic, partition)];
		start = batch_start(owner->batch, topic, partition);
		moved = cs_consumer_committed(w->cons, topic, partition, parts[i].next_offset);
		if (moved || (start >= 0 && start < parts[i].next_offset)) {
			cs_batch_drop_partition(owner->batch, topic, partition);
			if (!moved && cs_consumer_seek(w->cons, topic, partition, parts[i].next_offset,
						       w->errstr, sizeof(w->errstr)) != CS_OK)
				w->fatal = true;
		}
	}
#ifdef COPYSINK_TEST_HOOKS
	/* tests kill the worker here: committed in PostgreSQL, not yet in Kafka */
	if (w->kill_after_commits > 0 && --w->kill_after_commits == 0)
		raise(SIGKILL);
#endif
	if (w->replay == NULL)
		commit_to_kafka(l);
	w->stats.batches++;
	w->stats.last_commit_ms = wall_ms();
	w->health_at_ms = now_ms();
	cs_stats_batch_duration(&w->stats, (double)ms / 1000.0);
	log_batch(l, ms);
}

/* Forget the partitions of the in-flight batch that are no longer assigned (revoked while it
 * waited for a retry). @returns true when nothing is left to write. */
static bool prune_inflight(lane_t *l)
{
	const cs_batch_part_t *parts;
	int nparts;

	parts = cs_batch_parts(l->inflight, &nparts);
	for (int i = 0; i < nparts; i++)
		if (parts[i].partition >= 0 &&
		    cs_consumer_find(l->w->cons, parts[i].topic, parts[i].partition) == NULL)
			cs_batch_drop_partition(l->inflight, parts[i].topic, parts[i].partition);
	if (holds_partitions(l->inflight))
		return false;
	cs_batch_reset(l->inflight);
	l->inflight_bytes = 0;
	l->inflight_failed = false;
	return true;
}

/* True while a lane's batch waits to be written again. */
static bool any_retrying(const cs_worker_t *w)
{
	for (int i = 0; i < w->nlanes; i++)
		if (w->lanes[i].inflight_failed)
			return true;
	return false;
}

/* Wait for the lane's write to finish. A write slower than SLOW_WRITE_MS (a lock wait, a
 * long bisection, a server gone silent) must not keep the loop from polling for
 * max.poll.interval.ms: the partitions are held (memory stays bounded) and the loop polls,
 * acting on rebalances, until it ends. */
static cs_err_t wait_for_write(lane_t *l)
{
	cs_worker_t *w = l->w;
	int64_t start = now_ms();

	while (!cs_wthread_wait_done(l->wt, 100)) {
		if (now_ms() - start < SLOW_WRITE_MS)
			continue;
		if (!w->slow_hold && !w->stats.retrying) {
			cs_warn("a write has taken over %d s: partitions paused while the loop waits",
				SLOW_WRITE_MS / 1000);
			w->slow_hold = true;
			cs_consumer_hold(w->cons, true);
		}
		if (wait_polling(w, 100) != CS_OK)
			return CS_ERR_FATAL;
	}
	return CS_OK;
}

/* Wait for the batch in flight and act on the outcome. A retriable failure leaves the batch in
 * flight position for a retry; anything else releases it. */
static cs_err_t collect(lane_t *l)
{
	cs_worker_t *w = l->w;
	int64_t ms = 0;
	cs_err_t err;

	if (!cs_wthread_busy(l->wt)) {
		if (!l->inflight_failed || prune_inflight(l))
			return CS_OK;
		/* the failed batch goes again, with the same expected offsets (and its rejected
		 * rows are dead-lettered again) */
		cs_dlq_tally_reset(l->flight_tally);
		cs_wthread_submit(l->wt, l->inflight, l->expected);
	}
	if (wait_for_write(l) != CS_OK)
		return CS_ERR_FATAL;
	err = cs_wthread_wait(l->wt, &ms, w->errstr, sizeof(w->errstr));
	l->inflight_failed = err == CS_ERR_RETRIABLE || err == CS_ERR_FATAL;
	if (w->slow_hold && !any_retrying(w)) {
		w->slow_hold = false;
		cs_consumer_hold(w->cons, false);
	}
	w->stats.dead_letters[CS_REASON_DB_REJECTED] += l->w_dead_db;
	for (uint64_t i = 0; i < l->w_sqlstate_count; i++)
		cs_stats_db_error(&w->stats, l->w_sqlstate);
	l->w_dead_db = l->w_sqlstate_count = 0;
	w->stats.pg_ok = err == CS_OK || err == CS_ERR_FENCED;
	if (err == CS_ERR_RETRIABLE || err == CS_ERR_FATAL) {
		cs_stats_db_error(&w->stats, cs_writer_last_sqlstate(l->writer));
		return err;
	}
	if (err == CS_OK) {
		committed(l, ms);
	} else {
		cs_log_fields(CS_LOG_WARNING, "batch dropped: partitions fenced", "error", w->errstr,
			      NULL);
		w->stats.fenced++;
		err = resync_partitions(l);
	}
	cs_batch_reset(l->inflight);
	l->inflight_bytes = 0;
	return err;
}

/* Partitions revoked (or lost): unless lost, or the loop is already retrying a write, write
 * what is held first, within the grace period; then drop whatever is left of them and let
 * them go. */
static void act_on_revoke(cs_worker_t *w, cs_rebalance_t *ev, bool settling)
{
	if (!ev->lost && !settling) {
		if (drain(w, now_ms() + w->cfg->shutdown_grace_ms) != CS_OK)
			cs_log_fields(CS_LOG_WARNING, "could not write the batch before a rebalance",
				      "error", w->errstr, NULL);
	} else if (!settling) {
		/* lost: let the writes finish; fencing decides their fate */
		for (int l = 0; l < w->nlanes; l++)
			if (cs_wthread_busy(w->lanes[l].wt))
				(void)collect(&w->lanes[l]);
	}
	for (int i = 0; i < ev->parts->cnt; i++) {
		const char *topic = ev->parts->elems[i].topic;
		int32_t partition = ev->parts->elems[i].partition;
		lane_t *l = &w->lanes[cs_consumer_lane(w->cons, topic, partition)];

		cs_batch_drop_partition(l->batch, topic, partition);
		/* a batch being written keeps them: the fence decides; one waiting for a retry
		 * forgets them (prune_inflight) */
	}
	cs_consumer_revoke(w->cons, ev);
}

/* Partitions assigned: read their stored offsets and assign them from there; those whose
 * offset cannot be read now (PostgreSQL down) wait, paused, for resolve_waiting(). */
static cs_err_t act_on_assign(cs_worker_t *w, cs_rebalance_t *ev)
{
	bool *known = calloc((size_t)ev->parts->cnt + 1, sizeof(*known));
	bool reachable = true;
	cs_err_t err;

	if (known == NULL) {
		snprintf(w->errstr, sizeof(w->errstr), "out of memory");
		return CS_ERR_FATAL;
	}
	for (int i = 0; i < ev->parts->cnt && reachable; i++) {
		rd_kafka_topic_partition_t *p = &ev->parts->elems[i];
		int64_t stored = -1;

		cs_err_t rerr = w->replay != NULL ? CS_OK
						  : read_stored(w, p->topic, p->partition, &stored);

		if (rerr == CS_ERR_FATAL) { /* a table no longer matches its spec */
			free(known);
			return CS_ERR_FATAL;
		}
		if (rerr == CS_OK && stored < 0 && w->replay == NULL) {
			/* nothing stored: resolve_waiting() starts it at the Kafka-committed offset or
			 * auto.offset.reset, read by the loop and retried there; librdkafka's own
			 * committed-offset fetch on assignment can fail for good while the group
			 * coordinator moves or loads (a broker restart) and the partition then never
			 * fetches */
			known[i] = false;
		} else if (rerr == CS_OK) {
			known[i] = true;
			p->offset = stored >= 0 ? stored : RD_KAFKA_OFFSET_INVALID;
			log_start(p->topic, p->partition, stored, -1, false);
		} else {
			reachable = false; /* the rest wait too: one timeout, not one per partition */
			cs_log_fields(CS_LOG_WARNING, "stored offsets not read: the assigned partitions "
				      "wait, paused", "error", w->errstr, NULL);
			w->lookup_at_ms = now_ms() + w->lookup_backoff_ms;
		}
	}
	err = cs_consumer_assign(w->cons, ev, known, w->errstr, sizeof(w->errstr));
	free(known);
	w->stats.kafka_ok = true;
	return err;
}

/* max_bytes shared among the lanes that own partitions now, at least 1 MiB each: one
 * partition alone gets whole batches however many lanes there are, and the memory bound
 * (3 x max_bytes + 32 MB) holds with any number (a lane that lost its partitions writes
 * what it holds, within its older share). With several lanes in use, rows are merged in key
 * order: two transactions that meet the same keys then wait for each other instead of
 * deadlocking (a lane's writer takes the setting with its next batch). */
static void share_bytes(cs_worker_t *w)
{
	int used = cs_consumer_lanes_in_use(w->cons);

	w->lane_max_bytes = w->cfg->batch_max_bytes / (used > 1 ? used : 1);
	if (w->lane_max_bytes < 1048576)
		w->lane_max_bytes = 1048576;
	w->key_order = used > 1;
}

/* Act on the rebalances recorded since the last turn, in order. While `settling` (a write
 * waits for its retry), revoked partitions are let go without writing first. */
static cs_err_t act_on_rebalances(cs_worker_t *w, bool settling)
{
	cs_rebalance_t *ev;
	cs_err_t err = CS_OK;

	if (cs_consumer_fatal(w->cons) != NULL) {
		snprintf(w->errstr, sizeof(w->errstr), "%s", cs_consumer_fatal(w->cons));
		return CS_ERR_FATAL;
	}
	/* a revocation's drain may wait for a retry, which polls and comes here again: the
	 * events after it wait for it (the one being acted on is still the first) */
	if (w->rebalancing)
		return CS_OK;
	w->rebalancing = true;
	while (err == CS_OK && (ev = cs_consumer_event(w->cons)) != NULL) {
		if (ev->assign)
			err = act_on_assign(w, ev);
		else
			act_on_revoke(w, ev, settling);
		share_bytes(w);
	}
	w->rebalancing = false;
	return err;
}

/* Read the stored offsets of the partitions still waiting for them, at most once per backoff
 * while PostgreSQL does not answer. */
static cs_err_t resolve_waiting(cs_worker_t *w)
{
	int nparts;
	cs_consumer_part_t *parts = cs_consumer_parts(w->cons, &nparts);
	cs_err_t err = CS_OK;
	bool waiting = false;

	if (now_ms() < w->lookup_at_ms)
		return CS_OK;
	cs_consumer_starting(w->cons, true); /* resumed together below */
	for (int i = 0; i < nparts; i++) {
		char topic[CS_MAX_TOPIC];
		int32_t partition = parts[i].partition;
		int64_t stored;

		if (parts[i].ready)
			continue;
		snprintf(topic, sizeof(topic), "%s", parts[i].topic);
		err = read_stored(w, topic, partition, &stored);
		if (err == CS_ERR_FATAL) {
			cs_consumer_starting(w->cons, false);
			return err;
		}
		if (err != CS_OK) { /* PostgreSQL: the others would fail the same way */
			cs_log_fields(CS_LOG_WARNING, "stored offsets not read: the assigned "
				      "partitions wait, paused", "error", w->errstr, NULL);
			break;
		}
		int64_t at = -1;
		bool committed = false;

		if (cs_consumer_start(w->cons, topic, partition, stored, &at, &committed, w->errstr,
				      sizeof(w->errstr)) != CS_OK) {
			cs_log_fields(CS_LOG_WARNING, "partition not started: it waits, paused",
				      "error", w->errstr, NULL);
			waiting = true; /* Kafka: the other partitions may still start */
			continue;
		}
		log_start(topic, partition, stored, at, committed);
	}
	if (err != CS_OK || waiting) {
		w->lookup_at_ms = now_ms() + w->lookup_backoff_ms;
		w->lookup_backoff_ms = next_backoff(w, w->lookup_backoff_ms);
	} else
		w->lookup_backoff_ms = w->cfg->retry_backoff_ms;
	cs_consumer_starting(w->cons, false);
	return CS_OK;
}

/* /readyz: while no batch commits, ask PostgreSQL for a round trip every HEALTH_EVERY_MS on
 * the loop's connection (cs_writer_ping: bounded, it cannot stall the loop), so an outage
 * shows within that even when idle. A ping that finds a table changed against its spec is
 * reported by the next write, which stops the worker. */
static void check_health(cs_worker_t *w)
{
	char why[ERRSTR];
	bool was_ok = w->stats.pg_ok;

	if (now_ms() - w->health_at_ms < HEALTH_EVERY_MS)
		return;
	w->stats.pg_ok = cs_writer_ping(w->ctl, why, sizeof(why)) == CS_OK;
	w->health_at_ms = now_ms(); /* also after a failure: at most one try per period */
	if (!w->stats.pg_ok && was_ok)
		cs_log_fields(CS_LOG_WARNING, "PostgreSQL does not answer", "error", why, NULL);
	else if (w->stats.pg_ok && !was_ok)
		cs_info("PostgreSQL answers again");
}

/* True when the lane's batch must be written now. */
static bool batch_due(const lane_t *l, int64_t now)
{
	const cs_worker_t *w = l->w;
	const cs_batch_bounds_t bounds = {w->cfg->batch_max_rows, w->lane_max_bytes,
					  w->cfg->batch_linger_ms};

	return cs_batch_due(l->batch, &bounds, now - l->batch_start_ms);
}

/* Wait up to `ms` while a write waits for its retry: messages that arrive join the filling
 * batches, rebalances are acted on (without writing first). */
static cs_err_t wait_polling(cs_worker_t *w, int64_t ms)
{
	for (int64_t until = now_ms() + ms; now_ms() < until;) {
		rd_kafka_message_t *rkm = cs_consumer_poll(w->cons, 100);
		cs_err_t err = CS_OK;

		if (rkm != NULL) {
			if (!rkm->err)
				err = take_message(w, rkm);
			rd_kafka_message_destroy(rkm);
		}
		if (err == CS_OK)
			err = act_on_rebalances(w, true);
		if (err == CS_OK)
			err = resolve_waiting(w);
		publish(w);
		if (err == CS_ERR_FATAL || w->fatal)
			return CS_ERR_FATAL;
	}
	return CS_OK;
}

/* Collect the lane's batch in flight, retrying infrastructure errors with exponential backoff
 * and jitter while the partitions are paused, until it commits, `deadline` passes (-1: none)
 * or a stop. */
static cs_err_t settle(lane_t *l, int64_t deadline)
{
	cs_worker_t *w = l->w;
	int64_t backoff = w->cfg->retry_backoff_ms;
	cs_err_t err;

	while ((err = collect(l)) == CS_ERR_RETRIABLE) {
		int64_t wait = backoff / 2 + (int64_t)(rand() % (int)(backoff / 2 + 1));
		w->stats.retries++;
		cs_log_fields(CS_LOG_WARNING, "batch not written, will retry", "error", w->errstr,
			      NULL);
		cs_consumer_hold(w->cons, true);
		w->stats.retrying = true;
		publish(w);
		if ((deadline >= 0 && now_ms() + wait > deadline) || (*w->stop && deadline < 0))
			break;
		if (wait_polling(w, wait) != CS_OK)
			return CS_ERR_FATAL;
		backoff = next_backoff(w, backoff);
	}
	if (err == CS_OK) {
		bool retrying = false;

		for (int i = 0; i < w->nlanes; i++)
			retrying = retrying || w->lanes[i].inflight_failed;
		if (!retrying) {
			cs_consumer_hold(w->cons, false);
			w->stats.retrying = false;
		}
	}
	return err;
}

/* settle() every lane; the first error stops. */
static cs_err_t settle_all(cs_worker_t *w, int64_t deadline)
{
	cs_err_t err = CS_OK;

	for (int i = 0; i < w->nlanes && err == CS_OK; i++)
		err = settle(&w->lanes[i], deadline);
	return err;
}

/* Write everything held (in flight, then the filling batches) before `deadline`. */
static cs_err_t drain(cs_worker_t *w, int64_t deadline)
{
	cs_err_t err = settle_all(w, deadline);

	for (int i = 0; i < w->nlanes && err == CS_OK; i++)
		err = submit(&w->lanes[i]);
	if (err == CS_OK)
		err = settle_all(w, deadline);
	return err;
}

/* Handle one result of cs_consumer_poll(). */
static cs_err_t handle(cs_worker_t *w, rd_kafka_message_t *rkm)
{
	cs_err_t err = CS_OK;

	if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
		w->stats.kafka_ok = true;
		err = take_message(w, rkm);
	} else if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
		if (w->replay != NULL && rkm->rkt != NULL)
			cs_replay_eof(w->replay, w->rk, rd_kafka_topic_name(rkm->rkt), rkm->partition,
				      rkm->offset);
	} else
		cs_log_fields(CS_LOG_WARNING, "consumer error", "error", rd_kafka_message_errstr(rkm),
			      "topic", rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "", NULL);
	rd_kafka_message_destroy(rkm);
	if (err == CS_ERR_RETRIABLE) {
		cs_log_fields(CS_LOG_WARNING, "dead letter not queued", "error", w->errstr, NULL);
		err = CS_OK; /* counted in the batch's tally: the batch is read again, not committed */
	}
	return err;
}

/* The replay's progress from the worker's counters. */
static void replay_progress(cs_worker_t *w, bool final)
{
	uint64_t rows = 0, dead = 0;

	for (int t = 0; t < w->cfg->ntables && t < CS_STATS_MAX_TABLES; t++)
		rows += w->stats.rows_written[t];
	for (int r = 0; r < CS_REASON__COUNT; r++)
		dead += w->stats.dead_letters[r];
	cs_replay_progress(w->replay, rows, dead, final);
}

/* One turn's writes: collect finished writes, hand over due batches.
 * @returns CS_OK with *acted when it did something, or an error. */
static cs_err_t write_turn(cs_worker_t *w, bool queue_empty, int *timeout, bool *acted)
{
	int64_t now = now_ms();
	bool eager = false, busy = false;
	cs_err_t err = CS_OK;

	*acted = false;
	/* a finished write is collected; a failed one is written again even if no message
	 * arrives (its partitions are held meanwhile, e.g. after a revocation's drain gave up) */
	for (int i = 0; i < w->nlanes && err == CS_OK; i++)
		if (cs_wthread_busy(w->lanes[i].wt) ? cs_wthread_done(w->lanes[i].wt)
						    : w->lanes[i].inflight_failed) {
			err = settle(&w->lanes[i], -1);
			*acted = true;
		}
	if (*acted || err != CS_OK)
		return err;
	for (int i = 0; i < w->nlanes && err == CS_OK; i++) {
		lane_t *l = &w->lanes[i];
		/* write_when_idle: an idle writer takes its batch as soon as the consumer's queue is
		 * empty; under load batches still fill up while the previous one is written */
		bool lane_eager = w->write_when_idle && !cs_batch_empty(l->batch) &&
				  !cs_wthread_busy(l->wt);

		if (batch_due(l, now) || (lane_eager && queue_empty)) {
			/* one batch in flight per lane: wait for it, then hand this one over */
			err = settle(l, -1);
			if (err == CS_OK)
				err = submit(l);
			if (err == CS_ERR_RETRIABLE) /* dead letters not delivered: read again later */
				err = CS_OK, sleep_ms(w->cfg->retry_backoff_ms);
			*acted = true;
			continue;
		}
		eager = eager || lane_eager;
		busy = busy || cs_wthread_busy(l->wt);
		if (!cs_batch_empty(l->batch) &&
		    l->batch_start_ms + w->cfg->batch_linger_ms - now < *timeout)
			*timeout = (int)(l->batch_start_ms + w->cfg->batch_linger_ms - now);
	}
	if (busy && *timeout > 10)
		*timeout = 10; /* collect a write promptly when it finishes */
	if (*timeout > 100 || *timeout < 0)
		*timeout = *timeout < 0 ? 0 : 100;
	if (eager)
		*timeout = 0;
	return err;
}

/* What the loop does besides messages, every turn: rebalances, waiting partitions, health,
 * the stats line. */
static cs_err_t housekeeping(cs_worker_t *w)
{
	cs_err_t err = act_on_rebalances(w, false);

	if (err == CS_OK)
		err = resolve_waiting(w);
	if (err != CS_OK)
		return err;
	if (w->replay == NULL)
		check_health(w);
	cs_consumer_probe(w->cons, now_ms());
	if (now_ms() - w->stats.heartbeat_ms >= 100)
		publish(w);
	if (w->cfg->stats_interval_s > 0 &&
	    now_ms() - w->stats_at_ms >= w->cfg->stats_interval_s * 1000) {
		cs_stats_log(&w->stats, &w->prev_stats, (double)(now_ms() - w->stats_at_ms) / 1000.0,
			     w->cfg->tables, w->cfg->ntables);
		w->stats_at_ms = now_ms();
	}
	return CS_OK;
}

/* After the loop: write what is pending within the grace period. */
static cs_err_t finish(cs_worker_t *w, char *errstr, size_t errstr_size)
{
	cs_info("stopping: writing what is pending (grace %lld ms)",
		(long long)w->cfg->shutdown_grace_ms);
	if (drain(w, now_ms() + w->cfg->shutdown_grace_ms) != CS_OK) {
		cs_warn("pending entries not written before the grace period ended: they will be "
			"consumed again: %s", w->errstr);
		for (int i = 0; i < w->nlanes; i++) {
			lane_t *l = &w->lanes[i];

			(void)cs_wthread_wait(l->wt, NULL, w->errstr, sizeof(w->errstr));
			cs_batch_reset(l->batch);
			cs_batch_reset(l->inflight);
			l->inflight_failed = false;
		}
		if (w->replay != NULL) {
			replay_progress(w, true);
			snprintf(errstr, errstr_size, "replay stopped before its last batch was "
				 "written: %s", w->errstr);
			return CS_ERR_RETRIABLE;
		}
	}
	if (w->replay != NULL)
		replay_progress(w, true);
	return CS_OK;
}

cs_err_t cs_worker_run(cs_worker_t *w, volatile sig_atomic_t *stop, char *errstr,
		       size_t errstr_size)
{
	cs_err_t err = CS_OK;
	bool queue_empty = false; /* the last poll found no message waiting */

	w->stop = stop;
	w->stats_at_ms = now_ms();
	while (!*stop && err != CS_ERR_FATAL && !w->fatal) {
		int timeout = 100;
		rd_kafka_message_t *rkm;
		bool acted = false;

		err = housekeeping(w);
		if (err == CS_OK)
			err = write_turn(w, queue_empty, &timeout, &acted);
		if (err == CS_ERR_FATAL || acted) {
			queue_empty = false;
			continue;
		}
		rkm = cs_consumer_poll(w->cons, timeout);
		queue_empty = rkm == NULL;
		if (rkm != NULL)
			err = handle(w, rkm);
		if (w->replay != NULL) {
			replay_progress(w, false);
			if (cs_replay_done(w->replay))
				break; /* finish() writes the rest */
		}
	}
	if (err == CS_ERR_FATAL || w->fatal) {
		snprintf(errstr, errstr_size, "%s", w->errstr);
		return CS_ERR_FATAL;
	}
	return finish(w, errstr, errstr_size);
}

/* [postgres] staging as the writer takes it. */
static cs_writer_staging_t staging_of(const cs_config_t *cfg)
{
	return cfg->pg_staging != NULL && strcmp(cfg->pg_staging, "transaction") == 0
		       ? CS_WRITER_STAGING_TRANSACTION
		       : CS_WRITER_STAGING_SESSION;
}

/* Connect a writer at start-up: a PostgreSQL that cannot be reached yet is waited for (the
 * loop connects again; once one connection failed, the others wait for their first use), a
 * table that does not match its spec stops the worker.
 * @returns CS_OK, or the error with errstr. */
static cs_err_t connect_at_start(cs_worker_t *w, cs_writer_t *writer, char *errstr,
				 size_t errstr_size)
{
	cs_err_t err;

	if (!w->stats.pg_ok)
		return CS_OK;
	err = cs_writer_connect(writer, errstr, errstr_size);
	/* a replay is a command, not a service: it needs the column encodings that connecting
	 * reads from the catalog before its first message, and says at once when it cannot */
	if (err == CS_ERR_RETRIABLE && w->ropts == NULL) {
		cs_log_fields(CS_LOG_WARNING, "PostgreSQL not reachable yet: waiting for it",
			      "error", errstr, NULL);
		w->stats.pg_ok = false;
		return CS_OK;
	}
	return err;
}

/* Create lane i: batches, decoder, writer (connected if PostgreSQL answers), thread.
 * @returns CS_OK, or CS_ERR_FATAL with errstr. */
static cs_err_t lane_init(cs_worker_t *w, int i, const cs_decode_limits_t *limits,
			  const char *group, char *errstr, size_t errstr_size)
{
	cs_config_t *cfg = w->cfg;
	lane_t *l = &w->lanes[i];

	l->w = w;
	l->index = i;
	l->fill_tally = &l->tallies[0];
	l->flight_tally = &l->tallies[1];
	l->dec2 = cs_decoder_new(limits);
	l->batch = cs_batch_new(cfg->tables, cfg->ntables);
	l->inflight = cs_batch_new(cfg->tables, cfg->ntables);
	/* a replay stores no offsets: the live group's stay as they are */
	l->writer = cs_writer_new(cfg->pg_conninfo ? cfg->pg_conninfo : "", cfg->tables,
				  cfg->ntables, w->ropts != NULL ? "" : group);
	if (l->dec2 == NULL || l->batch == NULL || l->inflight == NULL || l->writer == NULL) {
		snprintf(errstr, errstr_size, "out of memory");
		return CS_ERR_FATAL;
	}
	/* -1: twice a batch's COPY bytes at most (staging rows are a little larger), at most
	 * 1 GB; a lane alone in use takes the whole of max_bytes */
	cs_writer_set_temp_buffers(l->writer, cfg->pg_temp_buffers_mb >= 0
						      ? cfg->pg_temp_buffers_mb * 1024
					      : 2 * cfg->batch_max_bytes > 1073741824
						      ? 1048576
						      : 2 * cfg->batch_max_bytes / 1024);
	cs_writer_set_staging(l->writer, staging_of(cfg));
	cs_writer_set_direct(l->writer, cfg->pg_direct_copy == NULL ||
						strcmp(cfg->pg_direct_copy, "off") != 0);
	/* writers = auto: only the first lane connects now, the others with their first batch
	 * (one connection per partition in use, not per possible lane) */
	if ((i == 0 || !w->auto_lanes) && connect_at_start(w, l->writer, errstr, errstr_size) != CS_OK)
		return CS_ERR_FATAL;
	l->wt = cs_wthread_new(l->writer, reject_row, l);
	if (l->wt == NULL) {
		snprintf(errstr, errstr_size, "could not start the writer thread");
		return CS_ERR_FATAL;
	}
	return CS_OK;
}

/* The test build's fault injection, from the environment (the shipped binary has none). */
static void test_hooks(cs_worker_t *w)
{
#ifdef COPYSINK_TEST_HOOKS
	if (getenv("COPYSINK_TEST_KILL_AFTER_COMMITS") != NULL)
		w->kill_after_commits = strtol(getenv("COPYSINK_TEST_KILL_AFTER_COMMITS"), NULL, 10);
	if (getenv("COPYSINK_TEST_STALL_BEFORE_WRITE_MS") != NULL)
		w->stall_before_write_ms =
			strtol(getenv("COPYSINK_TEST_STALL_BEFORE_WRITE_MS"), NULL, 10);
#else
	(void)w;
#endif
}

cs_worker_t *cs_worker_new(cs_config_t *cfg, cs_stats_shared_t *shared,
			   const cs_replay_opts_t *replay, cs_err_t *err, char *errstr,
			   size_t errstr_size)
{
	cs_worker_t *w = calloc(1, sizeof(*w));
	cs_decode_limits_t limits;
	char group[256];

	*err = CS_ERR_FATAL;
	if (w == NULL) {
		snprintf(errstr, errstr_size, "out of memory");
		return NULL;
	}
	w->cfg = cfg;
	w->shared = shared;
	w->ropts = replay;
	w->lookup_backoff_ms = cfg->retry_backoff_ms;
	w->stats.pg_ok = true;
	w->stats.kafka_ok = true;
	/* the retry backoff's jitter: workers restarted together must not retry in step */
	srand((unsigned)time(NULL) ^ ((unsigned)getpid() << 16));
	test_hooks(w);
	group[0] = '\0';
	for (int i = 0; i < cfg->nkafka; i++)
		if (strcmp(cfg->kafka[i].key, "group.id") == 0)
			snprintf(group, sizeof(group), "%s", cfg->kafka[i].value);
	cs_decode_limits_default(&limits);
	limits.max_message_bytes = (size_t)cfg->max_message_bytes;
	w->dec = cs_decoder_new(&limits);
	w->nlanes = cs_config_writers(cfg);
	w->auto_lanes = w->nlanes == 0;
	if (w->auto_lanes) /* lanes for up to CS_WRITERS_AUTO_MAX partitions, connected in use */
		w->nlanes = CS_WRITERS_AUTO_MAX;
	w->lanes = calloc((size_t)w->nlanes, sizeof(*w->lanes));
	w->ctl = cs_writer_new(cfg->pg_conninfo ? cfg->pg_conninfo : "", cfg->tables, cfg->ntables,
			       replay != NULL ? "" : group);
	if (w->dec == NULL || w->lanes == NULL || w->ctl == NULL) {
		snprintf(errstr, errstr_size, "out of memory");
		goto fail;
	}
	cs_writer_set_staging(w->ctl, staging_of(cfg));
	w->lane_max_bytes = cfg->batch_max_bytes; /* share_bytes() once partitions are assigned */
	w->write_when_idle = cfg->batch_write_when_idle == NULL ||
			     strcmp(cfg->batch_write_when_idle, "off") != 0;
	*err = connect_at_start(w, w->ctl, errstr, errstr_size);
	if (*err != CS_OK)
		goto fail; /* a replay with PostgreSQL down: retriable */
	*err = CS_ERR_FATAL;
	for (int i = 0; i < w->nlanes; i++)
		if (lane_init(w, i, &limits, group, errstr, errstr_size) != CS_OK)
			goto fail;
	w->dlq = cs_dlq_new(cfg, errstr, errstr_size);
	if (w->dlq == NULL)
		goto fail;
	w->cons = cs_consumer_new(cfg, replay, w->nlanes, &w->stats, errstr, errstr_size);
	if (w->cons == NULL)
		goto fail;
	w->rk = cs_consumer_rk(w->cons);
	if (replay != NULL) {
		w->replay = cs_replay_start(w->rk, cfg, replay, errstr, errstr_size);
		if (w->replay == NULL)
			goto fail;
		if (cs_consumer_track_assignment(w->cons) != 0) {
			snprintf(errstr, errstr_size, "out of memory");
			goto fail;
		}
		share_bytes(w);
	}
	w->health_at_ms = now_ms();
	*err = CS_OK;
	return w;
fail:
	cs_worker_destroy(w);
	return NULL;
}

/* The step cs_worker_destroy is in (one worker per process), read by cs_worker_close_step. */
static _Atomic(const char *) close_step = NULL;

const char *cs_worker_close_step(void)
{
	return atomic_load(&close_step);
}

void cs_worker_destroy(cs_worker_t *w)
{
	if (w == NULL)
		return;
	/* leaving the group revokes the partitions; the batches are empty or dropped by now */
	atomic_store(&close_step, "closing the Kafka consumer (leaving the group, waiting for the "
				  "Kafka copies of the offset commits)");
	cs_consumer_close(w->cons);
	atomic_store(&close_step, "destroying the Kafka consumer (rd_kafka_destroy)");
	cs_consumer_destroy(w->cons);
	atomic_store(&close_step, "closing the PostgreSQL connections");
	for (int i = 0; w->lanes != NULL && i < w->nlanes; i++) {
		lane_t *l = &w->lanes[i];

		cs_wthread_destroy(l->wt); /* joins the thread before its writer goes */
		cs_writer_destroy(l->writer);
		cs_batch_destroy(l->batch);
		cs_batch_destroy(l->inflight);
		cs_decoder_destroy(l->dec2);
		free(l->expected);
	}
	free(w->lanes);
	cs_writer_destroy(w->ctl);
	cs_replay_destroy(w->replay);
	atomic_store(&close_step, "flushing and destroying the dead-letter producer");
	cs_dlq_destroy(w->dlq);
	cs_decoder_destroy(w->dec);
	free(w);
	atomic_store(&close_step, NULL);
}
