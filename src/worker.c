/*
 * worker.c - the main loop: consume -> decode -> batch -> copy/merge -> commit
 */
#include "copysink/worker.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "copysink/batch.h"
#include "copysink/decode.h"
#include "copysink/dlq.h"
#include "copysink/fetchwake.h"
#include "copysink/kafkaconf.h"
#include "copysink/log.h"
#include "copysink/replay.h"
#include "copysink/stats.h"
#include "copysink/writer.h"
#include "copysink/wthread.h"

#define ERRSTR 1024
#define DLQ_FLUSH_MS 30000

/* What this worker knows of an assigned partition. */
typedef struct pstate {
	char topic[CS_MAX_TOPIC];
	int32_t partition;
	int64_t stored; /* the stored next offset as of our last read or commit; -1 = none */
	int lane;       /* the lane that writes its entries */
} pstate_t;

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
	rd_kafka_t *rk;
	cs_dlq_t *dlq;
	cs_decoder_t *dec;
	lane_t *lanes;
	int nlanes;
	int64_t lane_max_bytes; /* [batch] max_bytes shared among the lanes */
	lane_t *settling;     /* the lane inside settle(): rebalance callbacks must not flush */
	bool fatal;           /* a fatal error inside a callback: the loop stops with w->errstr */
	bool write_when_idle; /* [batch] write_when_idle = on */
	pstate_t *parts;
	int nparts, parts_cap;
	int last_part;        /* index in parts of the last message's partition (a guess) */
	bool paused;
	cs_fetchwake_t *fw;  /* NULL when [worker] fetch_wake = off */
	int64_t wake_every;  /* kick the waker after taking this many bytes (a quarter of the queue) */
	int64_t wake_bytes;  /* bytes taken since the last kick */
	volatile sig_atomic_t *stop;
	cs_stats_shared_t *shared;
	cs_stats_t stats, prev_stats;
	int64_t stats_at_ms;
	long kill_after_commits; /* fault injection for tests; 0 = off */
	long stall_before_write_ms; /* fault injection for tests: the loop stalls once; 0 = off */
	cs_replay_t *replay;     /* replay mode: own assignment, no group, no offsets */
	const cs_replay_opts_t *ropts;
	char errstr[ERRSTR];
};

static cs_err_t settle(lane_t *l, int64_t deadline);
static cs_err_t settle_all(cs_worker_t *w, int64_t deadline);
static cs_err_t drain(cs_worker_t *w, int64_t deadline);

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

/* Refresh the health fields and high watermarks and publish the counters for the HTTP thread. */
static void publish(cs_worker_t *w)
{
	w->stats.heartbeat_ms = now_ms();
	w->stats.bytes_held = 0;
	for (int i = 0; i < w->nlanes; i++)
		w->stats.bytes_held += cs_batch_bytes(w->lanes[i].batch) + w->lanes[i].inflight_bytes;
	w->stats.unknown_fields = cs_decoder_unknown_fields(w->dec);
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

/* The state of topic/partition, or NULL. */
static pstate_t *pstate_find(cs_worker_t *w, const char *topic, int32_t partition)
{
	for (int i = 0; i < w->nparts; i++)
		if (w->parts[i].partition == partition && strcmp(w->parts[i].topic, topic) == 0)
			return &w->parts[i];
	return NULL;
}

/* The lane owning the fewest assigned partitions (the first of them). */
static int least_loaded_lane(const cs_worker_t *w)
{
	int best = 0, best_n = -1;

	for (int l = 0; l < w->nlanes; l++) {
		int n = 0;
		for (int i = 0; i < w->nparts; i++)
			n += w->parts[i].lane == l;
		if (best_n < 0 || n < best_n)
			best = l, best_n = n;
	}
	return best;
}

/* The lane that writes the entries of topic/partition (lane 0 for a partition not assigned). */
static lane_t *lane_of(cs_worker_t *w, const char *topic, int32_t partition)
{
	const pstate_t *p;

	if (w->last_part < w->nparts && w->parts[w->last_part].partition == partition &&
	    strcmp(w->parts[w->last_part].topic, topic) == 0)
		return &w->lanes[w->parts[w->last_part].lane];
	p = pstate_find(w, topic, partition);
	if (p == NULL)
		return &w->lanes[0];
	w->last_part = (int)(p - w->parts);
	return &w->lanes[p->lane];
}

/* Record the stored offset of topic/partition. @returns 0, or -1 when out of memory. */
static int pstate_set(cs_worker_t *w, const char *topic, int32_t partition, int64_t stored)
{
	pstate_t *p = pstate_find(w, topic, partition);
	int lane;

	if (p == NULL) {
		if (w->nparts == w->parts_cap) {
			int cap = w->parts_cap ? w->parts_cap * 2 : 16;
			pstate_t *np = realloc(w->parts, (size_t)cap * sizeof(*np));
			if (np == NULL)
				return -1;
			w->parts = np;
			w->parts_cap = cap;
		}
		lane = least_loaded_lane(w); /* before the new one counts */
		p = &w->parts[w->nparts++];
		memset(p, 0, sizeof(*p));
		snprintf(p->topic, sizeof(p->topic), "%s", topic);
		p->partition = partition;
		p->lane = lane;
	}
	p->stored = stored;
	cs_stats_partition(&w->stats, topic, partition, stored, -1);
	return 0;
}

/* Forget topic/partition. */
static void pstate_remove(cs_worker_t *w, const char *topic, int32_t partition)
{
	pstate_t *p = pstate_find(w, topic, partition);

	if (p != NULL)
		*p = w->parts[--w->nparts];
	cs_stats_partition_remove(&w->stats, topic, partition);
}

/* Index of the table reading `topic`, or -1. */
static int table_for_topic(const cs_worker_t *w, const char *topic)
{
	for (int t = 0; t < w->cfg->ntables; t++)
		if (strcmp(w->cfg->tables[t].topic, topic) == 0)
			return t;
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

/* Take one consumed message into the batch. */
static cs_err_t take_message(cs_worker_t *w, const rd_kafka_message_t *rkm)
{
	const char *topic = rd_kafka_topic_name(rkm->rkt);
	int t = table_for_topic(w, topic);
	lane_t *l = lane_of(w, topic, rkm->partition);
	int part;

	if (w->replay != NULL && !cs_replay_take(w->replay, w->rk, topic, rkm->partition,
						 rkm->offset))
		return CS_OK; /* past the end of the replay */
	w->stats.messages++;
	w->wake_bytes += (int64_t)(rkm->len + rkm->key_len);
	if (w->fw != NULL && w->wake_bytes >= w->wake_every) {
		cs_fetchwake_kick(w->fw);
		w->wake_bytes = 0;
	}
	if (cs_batch_empty(l->batch))
		l->batch_start_ms = now_ms();
	part = cs_batch_add_message(l->batch, topic, rkm->partition, rkm->offset, rkm->key,
				    rkm->key_len, rkm->payload, rkm->len, true);
	if (part < 0)
		return CS_ERR_FATAL;
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

/* Re-read the stored offsets of the batch's partitions and seek there (after fencing). */
static cs_err_t resync_partitions(lane_t *l)
{
	cs_worker_t *w = l->w;
	const cs_batch_part_t *parts;
	rd_kafka_topic_partition_list_t *list;
	int nparts;
	cs_err_t err = CS_OK;

	parts = cs_batch_parts(l->inflight, &nparts);
	list = rd_kafka_topic_partition_list_new(nparts);
	for (int i = 0; i < nparts && err == CS_OK; i++) {
		int64_t stored;
		if (parts[i].partition < 0 || pstate_find(w, parts[i].topic, parts[i].partition) == NULL)
			continue;
		err = cs_writer_stored_offset(l->writer, parts[i].topic, parts[i].partition, &stored,
					      w->errstr, sizeof(w->errstr));
		if (err != CS_OK || stored < 0)
			continue;
		if (pstate_set(w, parts[i].topic, parts[i].partition, stored) != 0)
			err = CS_ERR_FATAL;
		/* what the loop has read past the fenced batch is read again after the seek */
		cs_batch_drop_partition(l->batch, parts[i].topic, parts[i].partition);
		rd_kafka_topic_partition_list_add(list, parts[i].topic, parts[i].partition)->offset =
			stored;
	}
	if (err == CS_OK && list->cnt > 0) {
		rd_kafka_error_t *error = rd_kafka_seek_partitions(w->rk, list, 10000);
		if (error != NULL) {
			cs_warn("could not seek after fencing: %s", rd_kafka_error_string(error));
			rd_kafka_error_destroy(error);
		}
	}
	rd_kafka_topic_partition_list_destroy(list);
	return err;
}

/* Commit the batch's next offsets to Kafka too (for lag tools; PostgreSQL holds the truth). */
static void commit_to_kafka(lane_t *l)
{
	cs_worker_t *w = l->w;
	const cs_batch_part_t *parts;
	rd_kafka_topic_partition_list_t *list;
	int nparts;

	parts = cs_batch_parts(l->inflight, &nparts);
	list = rd_kafka_topic_partition_list_new(nparts);
	for (int i = 0; i < nparts; i++) {
		if (parts[i].partition < 0 || pstate_find(w, parts[i].topic, parts[i].partition) == NULL)
			continue;
		rd_kafka_topic_partition_list_add(list, parts[i].topic, parts[i].partition)->offset =
			parts[i].next_offset;
	}
	if (list->cnt > 0)
		rd_kafka_commit(w->rk, list, 1);
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
	cs_worker_t *w = l->w;
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
		const pstate_t *p = pstate_find(w, parts[i].topic, parts[i].partition);
		l->expected[i] = p ? p->stored : -1;
	}
	return 0;
}

/* Some dead letters of the filling batch were not delivered: drop the batch and seek its
 * partitions back to where it started, so that its entries are read, decoded and dead-lettered
 * again. Letters that did arrive arrive twice (the dead-letter topic is at least once).
 * @returns CS_ERR_RETRIABLE (wait, then go on), or CS_ERR_FATAL when the seek failed: the
 *          consumer's position is then unknown and only a restart from the stored offsets is safe. */
static cs_err_t rewind_batch(lane_t *l)
{
	cs_worker_t *w = l->w;
	const cs_batch_part_t *parts;
	rd_kafka_topic_partition_list_t *list;
	rd_kafka_error_t *error = NULL;
	char why[ERRSTR];
	int nparts;
	cs_err_t err = CS_ERR_RETRIABLE;

	snprintf(why, sizeof(why), "%s", w->errstr);
	cs_log_fields(CS_LOG_WARNING, "dead letters not delivered: the batch is read again",
		      "error", why, NULL);
	parts = cs_batch_parts(l->batch, &nparts);
	list = rd_kafka_topic_partition_list_new(nparts > 0 ? nparts : 1);
	for (int i = 0; i < nparts; i++)
		if (parts[i].partition >= 0)
			rd_kafka_topic_partition_list_add(list, parts[i].topic, parts[i].partition)
				->offset = parts[i].first_offset;
	if (list->cnt > 0)
		error = rd_kafka_seek_partitions(w->rk, list, 10000);
	for (int i = 0; error == NULL && i < list->cnt; i++)
		if (list->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			snprintf(w->errstr, sizeof(w->errstr), "could not seek \"%s\" [%d] back to %lld "
				 "after undelivered dead letters: %s", list->elems[i].topic,
				 (int)list->elems[i].partition, (long long)list->elems[i].offset,
				 rd_kafka_err2str(list->elems[i].err));
			err = CS_ERR_FATAL;
		}
	if (error != NULL) {
		snprintf(w->errstr, sizeof(w->errstr), "could not seek back after undelivered dead "
			 "letters: %s", rd_kafka_error_string(error));
		rd_kafka_error_destroy(error);
		err = CS_ERR_FATAL;
	}
	w->fatal = w->fatal || err == CS_ERR_FATAL; /* also when called from a rebalance */
	rd_kafka_topic_partition_list_destroy(list);
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
	if (w->stall_before_write_ms > 0) {
		/* tests: the loop stalls (no poll) holding a batch, long enough to be thrown out of
		 * the group; its write must then be fenced */
		sleep_ms(w->stall_before_write_ms);
		w->stall_before_write_ms = 0;
	}
	cs_wthread_submit(l->wt, l->inflight, l->expected);
	return CS_OK;
}

/* The in-flight batch committed: move the partitions on, commit to Kafka, count, log. */
static void committed(lane_t *l, int64_t ms)
{
	cs_worker_t *w = l->w;
	const cs_batch_part_t *parts;
	int nparts;

	parts = cs_batch_parts(l->inflight, &nparts);
	for (int i = 0; i < nparts; i++)
		if (parts[i].partition >= 0 && pstate_find(w, parts[i].topic, parts[i].partition))
			(void)pstate_set(w, parts[i].topic, parts[i].partition, parts[i].next_offset);
	/* tests kill the worker here: committed in PostgreSQL, not yet in Kafka */
	if (w->kill_after_commits > 0 && --w->kill_after_commits == 0)
		raise(SIGKILL);
	if (w->replay == NULL)
		commit_to_kafka(l);
	w->stats.batches++;
	w->stats.last_commit_ms = wall_ms();
	cs_stats_batch_duration(&w->stats, (double)ms / 1000.0);
	log_batch(l, ms);
}

/* Wait for the batch in flight and act on the outcome. A retriable failure leaves the batch in
 * flight position for a retry; anything else releases it. */
static cs_err_t collect(lane_t *l)
{
	cs_worker_t *w = l->w;
	int64_t ms = 0;
	cs_err_t err;

	if (!cs_wthread_busy(l->wt)) {
		if (!l->inflight_failed)
			return CS_OK;
		/* the failed batch goes again, with the same expected offsets (and its rejected
		 * rows are dead-lettered again) */
		cs_dlq_tally_reset(l->flight_tally);
		cs_wthread_submit(l->wt, l->inflight, l->expected);
	}
	err = cs_wthread_wait(l->wt, &ms, w->errstr, sizeof(w->errstr));
	l->inflight_failed = err == CS_ERR_RETRIABLE || err == CS_ERR_FATAL;
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

/* Pause or resume every assigned partition (while a write is being retried). */
static void set_paused(cs_worker_t *w, bool pause)
{
	rd_kafka_topic_partition_list_t *list = NULL;

	if (w->paused == pause || rd_kafka_assignment(w->rk, &list) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return;
	if (pause)
		rd_kafka_pause_partitions(w->rk, list);
	else
		rd_kafka_resume_partitions(w->rk, list);
	rd_kafka_topic_partition_list_destroy(list);
	w->paused = pause;
}

/* Read the stored offsets of newly assigned partitions (retrying while PostgreSQL is down)
 * and set them as the start positions. */
static void on_assign(cs_worker_t *w, rd_kafka_topic_partition_list_t *parts)
{
	int64_t backoff = w->cfg->retry_backoff_ms;

	/* a writer's connection is its thread's while a batch is in flight: the stored offsets
	 * are read on lane 0's once every lane has settled, or on the connection of the lane
	 * whose settle() polled (its batch waits for a retry, other lanes may be writing) */
	cs_writer_t *writer = w->settling != NULL ? w->settling->writer : w->lanes[0].writer;

	if (w->settling == NULL && settle_all(w, -1) != CS_OK)
		cs_warn("batch in flight not written before the assignment: %s", w->errstr);

	for (int i = 0; i < parts->cnt; i++) {
		rd_kafka_topic_partition_t *p = &parts->elems[i];
		int64_t stored = -1;
		cs_err_t err;

		while ((err = cs_writer_stored_offset(writer, p->topic, p->partition, &stored,
						      w->errstr, sizeof(w->errstr))) != CS_OK &&
		       !*w->stop) {
			cs_warn("%s", w->errstr);
			sleep_ms(backoff);
			backoff = backoff * 2 > w->cfg->retry_backoff_max_ms ? w->cfg->retry_backoff_max_ms
									 : backoff * 2;
			if (cs_writer_connect(writer, w->errstr, sizeof(w->errstr)) != CS_OK)
				cs_warn("%s", w->errstr);
		}
		p->offset = stored >= 0 ? stored : RD_KAFKA_OFFSET_INVALID;
		if (pstate_set(w, p->topic, p->partition, stored) != 0)
			cs_error("out of memory tracking partition \"%s\" [%d]", p->topic, p->partition);
		if (stored >= 0)
			cs_info("partition \"%s\" [%d] assigned, starting at stored offset %lld",
				p->topic, (int)p->partition, (long long)stored);
		else
			cs_info("partition \"%s\" [%d] assigned, no stored offset: starting at the "
				"committed offset or auto.offset.reset", p->topic, (int)p->partition);
	}
}

/* Revoked or lost partitions: write what is held first (unless lost, or already retrying),
 * then drop whatever is left for them. */
static void on_revoke(cs_worker_t *w, rd_kafka_topic_partition_list_t *parts, bool lost)
{
	if (!lost && w->settling == NULL) {
		cs_err_t err = drain(w, now_ms() + w->cfg->shutdown_grace_ms);
		if (err != CS_OK)
			cs_log_fields(CS_LOG_WARNING, "could not write the batch before a rebalance",
				      "error", w->errstr, NULL);
	} else if (w->settling == NULL) {
		/* lost: let the writes finish; fencing decides their fate */
		for (int l = 0; l < w->nlanes; l++)
			(void)collect(&w->lanes[l]);
	}
	for (int i = 0; i < parts->cnt; i++) {
		lane_t *l = lane_of(w, parts->elems[i].topic, parts->elems[i].partition);

		cs_batch_drop_partition(l->batch, parts->elems[i].topic, parts->elems[i].partition);
		if (!cs_wthread_busy(l->wt))
			cs_batch_drop_partition(l->inflight, parts->elems[i].topic,
						parts->elems[i].partition);
		pstate_remove(w, parts->elems[i].topic, parts->elems[i].partition);
		cs_info("partition \"%s\" [%d] %s", parts->elems[i].topic,
			(int)parts->elems[i].partition, lost ? "lost" : "revoked");
	}
}

/* librdkafka's rebalance callback (runs inside rd_kafka_consumer_poll on the loop's thread). */
static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			 rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	cs_worker_t *w = opaque;
	bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
	rd_kafka_error_t *error = NULL;

	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		on_assign(w, parts);
		if (coop)
			error = rd_kafka_incremental_assign(rk, parts);
		else
			rd_kafka_assign(rk, parts);
	} else {
		on_revoke(w, parts, rd_kafka_assignment_lost(rk));
		if (coop)
			error = rd_kafka_incremental_unassign(rk, parts);
		else
			rd_kafka_assign(rk, NULL);
	}
	if (error != NULL) {
		cs_error("rebalance failed: %s", rd_kafka_error_string(error));
		rd_kafka_error_destroy(error);
	}
}

/* Replay mode: resolve the positions, assign them, track the partitions (nothing stored). */
static int start_replay(cs_worker_t *w, char *errstr, size_t errstr_size)
{
	rd_kafka_topic_partition_list_t *list = NULL;

	w->replay = cs_replay_start(w->rk, w->cfg, w->ropts, errstr, errstr_size);
	if (w->replay == NULL)
		return -1;
	if (rd_kafka_assignment(w->rk, &list) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return 0;
	for (int i = 0; i < list->cnt; i++)
		if (pstate_set(w, list->elems[i].topic, list->elems[i].partition, -1) != 0) {
			rd_kafka_topic_partition_list_destroy(list);
			snprintf(errstr, errstr_size, "out of memory");
			return -1;
		}
	rd_kafka_topic_partition_list_destroy(list);
	return 0;
}

/* True unless [worker] fetch_wake = off. */
static bool fetch_wake_on(const cs_config_t *cfg)
{
	return cfg->worker_fetch_wake == NULL || strcmp(cfg->worker_fetch_wake, "off") != 0;
}

/* Create the consumer with the worker's safe defaults and subscribe to the tables' topics
 * (or, for a replay, assign the partitions from the replay's positions). */
static int make_consumer(cs_worker_t *w, char *errstr, size_t errstr_size)
{
	rd_kafka_conf_t *conf = cs_kafkaconf_new(w->cfg, false, errstr, errstr_size);
	rd_kafka_topic_partition_list_t *topics;
	char why[512], kbytes[32], fetch[32];
	int64_t fetch_bytes, queue_kbytes;
	rd_kafka_resp_err_t err;

	if (conf == NULL)
		return -1;
	/* The consumer's memory counts against the cap of 3 x max_bytes: librdkafka's prefetch
	 * queue, which one fetch response may overshoot, gets one batch's worth between them
	 * (fetch.max.bytes max_bytes / 8 within [max(1 MiB, message.max.bytes), 50 MiB], the
	 * queue the rest, or half of the rest with the fetch waker). librdkafka 2.0 stops
	 * fetching for up to a second whenever that queue is full, unless the waker wakes it
	 * (fetchwake.h); a larger queued.max.messages.kbytes buys throughput with memory
	 * (docs/BENCHMARKS.md). */
	fetch_bytes = w->cfg->batch_max_bytes / 8;
	if (fetch_bytes > 52428800) /* librdkafka's own default, the most it needs */
		fetch_bytes = 52428800;
	/* librdkafka refuses a fetch.max.bytes below message.max.bytes (at least 1 MiB here) */
	if (rd_kafka_conf_get(conf, "message.max.bytes", why, &(size_t){sizeof(why)}) ==
		    RD_KAFKA_CONF_OK &&
	    strtoll(why, NULL, 10) > fetch_bytes)
		fetch_bytes = strtoll(why, NULL, 10);
	if (fetch_bytes < 1048576)
		fetch_bytes = 1048576;
	queue_kbytes = (w->cfg->batch_max_bytes - fetch_bytes) / 1024;
	/* with the fetch waker the queue refills within a round trip, not a second: half of it
	 * keeps the writer as busy (measured: docs/BENCHMARKS.md) and holds 14 MB less */
	if (fetch_wake_on(w->cfg))
		queue_kbytes /= 2;
	snprintf(fetch, sizeof(fetch), "%lld", (long long)fetch_bytes);
	snprintf(kbytes, sizeof(kbytes), "%lld", (long long)(queue_kbytes > 1024 ? queue_kbytes : 1024));
	if (w->ropts == NULL &&
	    (rd_kafka_conf_get(conf, "group.id", why, &(size_t){sizeof(why)}) != RD_KAFKA_CONF_OK ||
	     why[0] == '\0')) {
		snprintf(errstr, errstr_size, "[kafka] group.id is not set");
		goto fail;
	}
	if (cs_kafkaconf_default(conf, w->cfg, "enable.auto.commit", "false", errstr, errstr_size) ||
	    cs_kafkaconf_default(conf, w->cfg, "enable.auto.offset.store", "false", errstr,
				 errstr_size) ||
	    cs_kafkaconf_default(conf, w->cfg, "auto.offset.reset", "earliest", errstr,
				 errstr_size) ||
	    cs_kafkaconf_default(conf, w->cfg, "partition.assignment.strategy",
				 "cooperative-sticky", errstr, errstr_size) ||
	    cs_kafkaconf_default(conf, w->cfg, "queued.max.messages.kbytes", kbytes, errstr,
				 errstr_size) ||
	    cs_kafkaconf_default(conf, w->cfg, "fetch.max.bytes", fetch, errstr, errstr_size) ||
	    cs_kafkaconf_default(conf, w->cfg, "client.id", "copysink", errstr, errstr_size) ||
	    (w->ropts != NULL && cs_kafkaconf_default(conf, w->cfg, "enable.partition.eof", "true",
						      errstr, errstr_size)))
		goto fail;
	/* a replay must never commit into the group of the live worker, whatever [kafka] says */
	if (w->ropts != NULL &&
	    (rd_kafka_conf_set(conf, "enable.auto.commit", "false", why, sizeof(why)) !=
		     RD_KAFKA_CONF_OK ||
	     rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", why, sizeof(why)) !=
		     RD_KAFKA_CONF_OK)) {
		snprintf(errstr, errstr_size, "could not configure the replay's consumer: %s", why);
		goto fail;
	}
	if (rd_kafka_conf_get(conf, "queued.max.messages.kbytes", why, &(size_t){sizeof(why)}) ==
	    RD_KAFKA_CONF_OK)
		queue_kbytes = strtoll(why, NULL, 10);
	w->wake_every = queue_kbytes * 1024 / 4;
	if (w->ropts == NULL)
		rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
	rd_kafka_conf_set_opaque(conf, w);
	w->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
	if (w->rk == NULL) {
		snprintf(errstr, errstr_size, "could not create the Kafka consumer: %s", why);
		goto fail;
	}
	conf = NULL; /* owned by rk now */
	rd_kafka_poll_set_consumer(w->rk);
	if (fetch_wake_on(w->cfg)) {
		w->fw = cs_fetchwake_new(w->rk);
		if (w->fw == NULL) {
			snprintf(errstr, errstr_size, "could not start the fetch waker thread");
			return -1;
		}
	}
	if (w->ropts != NULL)
		return start_replay(w, errstr, errstr_size);
	topics = rd_kafka_topic_partition_list_new(w->cfg->ntables);
	for (int t = 0; t < w->cfg->ntables; t++)
		rd_kafka_topic_partition_list_add(topics, w->cfg->tables[t].topic,
						  RD_KAFKA_PARTITION_UA);
	err = rd_kafka_subscribe(w->rk, topics);
	rd_kafka_topic_partition_list_destroy(topics);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(errstr, errstr_size, "could not subscribe: %s", rd_kafka_err2str(err));
		return -1;
	}
	return 0;
fail:
	if (conf != NULL)
		rd_kafka_conf_destroy(conf);
	return -1;
}

cs_worker_t *cs_worker_new(cs_config_t *cfg, cs_stats_shared_t *shared,
			   const cs_replay_opts_t *replay, cs_err_t *err, char *errstr,
			   size_t errstr_size)
{
	cs_worker_t *w = calloc(1, sizeof(*w));
	cs_decode_limits_t limits;
	char group[256];
	size_t glen = sizeof(group);

	*err = CS_ERR_FATAL;
	if (w == NULL) {
		snprintf(errstr, errstr_size, "out of memory");
		return NULL;
	}
	w->cfg = cfg;
	w->shared = shared;
	/* the retry backoff's jitter: workers restarted together must not retry in step */
	srand((unsigned)time(NULL) ^ ((unsigned)getpid() << 16));
	w->ropts = replay;
	if (getenv("COPYSINK_TEST_KILL_AFTER_COMMITS") != NULL)
		w->kill_after_commits = strtol(getenv("COPYSINK_TEST_KILL_AFTER_COMMITS"), NULL, 10);
	if (getenv("COPYSINK_TEST_STALL_BEFORE_WRITE_MS") != NULL)
		w->stall_before_write_ms =
			strtol(getenv("COPYSINK_TEST_STALL_BEFORE_WRITE_MS"), NULL, 10);
	group[0] = '\0';
	for (int i = 0; i < cfg->nkafka; i++)
		if (strcmp(cfg->kafka[i].key, "group.id") == 0)
			snprintf(group, glen, "%s", cfg->kafka[i].value);
	cs_decode_limits_default(&limits);
	limits.max_message_bytes = (size_t)cfg->max_message_bytes;
	w->dec = cs_decoder_new(&limits);
	w->nlanes = cfg->pg_writers > 1 ? (int)cfg->pg_writers : 1;
	w->lanes = calloc((size_t)w->nlanes, sizeof(*w->lanes));
	if (w->dec == NULL || w->lanes == NULL) {
		snprintf(errstr, errstr_size, "out of memory");
		goto fail;
	}
	/* the memory cap (3 x max_bytes + 32 MB) holds whatever the number of lanes: they share
	 * max_bytes (at least 1 MiB each) */
	w->lane_max_bytes = cfg->batch_max_bytes / w->nlanes;
	if (w->lane_max_bytes < 1048576)
		w->lane_max_bytes = 1048576;
	w->write_when_idle = cfg->batch_write_when_idle == NULL ||
			     strcmp(cfg->batch_write_when_idle, "off") != 0;
	for (int i = 0; i < w->nlanes; i++) {
		lane_t *l = &w->lanes[i];

		l->w = w;
		l->index = i;
		l->fill_tally = &l->tallies[0];
		l->flight_tally = &l->tallies[1];
		l->dec2 = cs_decoder_new(&limits);
		l->batch = cs_batch_new(cfg->tables, cfg->ntables);
		l->inflight = cs_batch_new(cfg->tables, cfg->ntables);
		/* a replay stores no offsets: the live group's stay as they are */
		l->writer = cs_writer_new(cfg->pg_conninfo ? cfg->pg_conninfo : "", cfg->tables,
					  cfg->ntables, replay != NULL ? "" : group);
		if (l->dec2 == NULL || l->batch == NULL || l->inflight == NULL || l->writer == NULL) {
			snprintf(errstr, errstr_size, "out of memory");
			goto fail;
		}
		/* auto: twice a batch's COPY bytes (staging rows are a little larger), at most 1 GB */
		cs_writer_set_temp_buffers(l->writer, cfg->pg_temp_buffers_mb >= 0
							      ? cfg->pg_temp_buffers_mb * 1024
							  : 2 * w->lane_max_bytes > 1073741824
							      ? 1048576
							      : 2 * w->lane_max_bytes / 1024);
		cs_writer_set_direct(l->writer, cfg->pg_direct_copy == NULL ||
							strcmp(cfg->pg_direct_copy, "off") != 0);
		/* with several lanes, rows are merged in key order: two transactions that meet
		 * the same keys then wait for each other instead of deadlocking */
		cs_writer_set_key_order(l->writer, w->nlanes > 1);
		*err = cs_writer_connect(l->writer, errstr, errstr_size);
		if (*err != CS_OK)
			goto fail;
		*err = CS_ERR_FATAL;
		l->wt = cs_wthread_new(l->writer, reject_row, l);
		if (l->wt == NULL) {
			snprintf(errstr, errstr_size, "could not start the writer thread");
			goto fail;
		}
	}
	w->stats.pg_ok = true;
	w->stats.kafka_ok = true;
	w->dlq = cs_dlq_new(cfg, errstr, errstr_size);
	if (w->dlq == NULL || make_consumer(w, errstr, errstr_size) != 0)
		goto fail;
	*err = CS_OK;
	return w;
fail:
	cs_worker_destroy(w);
	return NULL;
}

/* True when the lane's batch must be written now. */
static bool batch_due(const lane_t *l, int64_t now)
{
	const cs_worker_t *w = l->w;
	const cs_batch_bounds_t bounds = {w->cfg->batch_max_rows, w->lane_max_bytes,
					  w->cfg->batch_linger_ms};

	return cs_batch_due(l->batch, &bounds, now - l->batch_start_ms);
}

/* Collect the lane's batch in flight, retrying infrastructure errors with exponential backoff
 * and jitter while the partitions are paused, until it commits, `deadline` passes (-1: none)
 * or a stop. Messages that arrive meanwhile join the filling batches. */
static cs_err_t settle(lane_t *l, int64_t deadline)
{
	cs_worker_t *w = l->w;
	int64_t backoff = w->cfg->retry_backoff_ms;
	cs_err_t err;

	w->settling = l;
	while ((err = collect(l)) == CS_ERR_RETRIABLE) {
		int64_t wait = backoff / 2 + (int64_t)(rand() % (int)(backoff / 2 + 1));
		w->stats.retries++;
		cs_log_fields(CS_LOG_WARNING, "batch not written, will retry", "error", w->errstr,
			      NULL);
		set_paused(w, true);
		w->stats.retrying = true;
		publish(w);
		if ((deadline >= 0 && now_ms() + wait > deadline) || (*w->stop && deadline < 0))
			break;
		for (int64_t until = now_ms() + wait; now_ms() < until;) {
			rd_kafka_message_t *rkm = rd_kafka_consumer_poll(w->rk, 100);
			publish(w);
			if (rkm == NULL)
				continue;
			if (!rkm->err && take_message(w, rkm) == CS_ERR_FATAL) {
				rd_kafka_message_destroy(rkm);
				err = CS_ERR_FATAL;
				goto out;
			}
			rd_kafka_message_destroy(rkm);
		}
		backoff = backoff * 2 > w->cfg->retry_backoff_max_ms ? w->cfg->retry_backoff_max_ms
								 : backoff * 2;
	}
	if (err == CS_OK) {
		bool retrying = false;

		for (int i = 0; i < w->nlanes; i++)
			retrying = retrying || w->lanes[i].inflight_failed;
		if (!retrying) {
			set_paused(w, false);
			w->stats.retrying = false;
		}
	}
out:
	w->settling = NULL;
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

/* Handle one result of rd_kafka_consumer_poll(). */
static cs_err_t handle(cs_worker_t *w, rd_kafka_message_t *rkm)
{
	cs_err_t err = CS_OK;

	if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
		w->stats.kafka_ok = true;
		err = take_message(w, rkm);
	} else if (rkm->err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
		w->stats.kafka_ok = false;
		cs_warn("all Kafka brokers are down");
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

cs_err_t cs_worker_run(cs_worker_t *w, volatile sig_atomic_t *stop, char *errstr,
		       size_t errstr_size)
{
	cs_err_t err = CS_OK;
	bool queue_empty = false; /* the last poll found no message waiting */

	w->stop = stop;
	w->stats_at_ms = now_ms();
	while (!*stop && err != CS_ERR_FATAL && !w->fatal) {
		int64_t now = now_ms(), timeout = 100;
		rd_kafka_message_t *rkm;
		bool eager = false, acted = false, busy = false;

		for (int i = 0; i < w->nlanes && err == CS_OK; i++) {
			lane_t *l = &w->lanes[i];

			if (cs_wthread_busy(l->wt) && cs_wthread_done(l->wt)) {
				err = settle(l, -1);
				acted = true;
			}
		}
		if (acted)
			continue;
		for (int i = 0; i < w->nlanes && err == CS_OK; i++) {
			lane_t *l = &w->lanes[i];
			/* write_when_idle: an idle writer takes its batch as soon as the consumer's
			 * queue is empty; under load batches still fill up while the previous one
			 * is written */
			bool lane_eager = w->write_when_idle && !cs_batch_empty(l->batch) &&
					  !cs_wthread_busy(l->wt);

			if (batch_due(l, now) || (lane_eager && queue_empty)) {
				/* one batch in flight per lane: wait for it, then hand this one over */
				err = settle(l, -1);
				if (err == CS_OK)
					err = submit(l);
				if (err == CS_ERR_RETRIABLE) /* dead letters not delivered: read again later */
					err = CS_OK, sleep_ms(w->cfg->retry_backoff_ms);
				acted = true;
				continue;
			}
			eager = eager || lane_eager;
			busy = busy || cs_wthread_busy(l->wt);
			if (!cs_batch_empty(l->batch) &&
			    l->batch_start_ms + w->cfg->batch_linger_ms - now < timeout)
				timeout = l->batch_start_ms + w->cfg->batch_linger_ms - now;
		}
		if (acted) {
			queue_empty = false;
			continue;
		}
		if (busy && timeout > 10)
			timeout = 10; /* collect a write promptly when it finishes */
		if (timeout > 100 || timeout < 0)
			timeout = timeout < 0 ? 0 : 100;
		if (eager)
			timeout = 0;
		rkm = rd_kafka_consumer_poll(w->rk, (int)timeout);
		queue_empty = rkm == NULL;
		if (rkm != NULL)
			err = handle(w, rkm);
		if (now_ms() - w->stats.heartbeat_ms >= 100)
			publish(w);
		if (w->replay != NULL) {
			replay_progress(w, false);
			if (cs_replay_done(w->replay))
				break; /* the drain below writes the rest */
		}
		if (w->cfg->stats_interval_s > 0 &&
		    now_ms() - w->stats_at_ms >= w->cfg->stats_interval_s * 1000) {
			cs_stats_log(&w->stats, &w->prev_stats,
				     (double)(now_ms() - w->stats_at_ms) / 1000.0, w->cfg->tables,
				     w->cfg->ntables);
			w->stats_at_ms = now_ms();
		}
	}
	if (err == CS_ERR_FATAL || w->fatal) {
		err = CS_ERR_FATAL;
		snprintf(errstr, errstr_size, "%s", w->errstr);
		return err;
	}
	/* drain: write what is pending within the grace period */
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

void cs_worker_destroy(cs_worker_t *w)
{
	if (w == NULL)
		return;
	cs_fetchwake_destroy(w->fw); /* before the consumer it queries */
	if (w->rk != NULL) {
		/* leaving the group revokes the partitions; the batch is empty or dropped by now */
		rd_kafka_consumer_close(w->rk);
		rd_kafka_destroy(w->rk);
	}
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
	cs_replay_destroy(w->replay);
	cs_dlq_destroy(w->dlq);
	cs_decoder_destroy(w->dec);
	free(w->parts);
	free(w);
}
