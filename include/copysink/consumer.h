/*
 * consumer.h - the Kafka consumer: group membership, assignment and the position of every
 * partition
 *
 * The one module that moves a partition's consuming position (subscribe, rebalance, seek,
 * pause/resume, the fetch waker). For every assigned partition it knows two offsets:
 *   stored  the next offset stored in PostgreSQL as this worker last read or committed it;
 *           a batch's offsets update is fenced by it (writer.h)
 *   next    the next offset the worker may take into a batch
 * cs_consumer_check() holds every message against `next`: a message below it was delivered
 * again (librdkafka re-fetching from an old position) and is dropped; a message above it means
 * the position jumped, and the partition is sought back to `next` (a gap that is still there
 * after that seek is in the log itself: compaction, transaction markers, and is taken). So
 * the batches of a partition cover its offsets without overlap and without holes.
 *
 * librdkafka's rebalance callback only records the change (nothing waits inside it). The loop
 * takes each change with cs_consumer_event() and acts on it: for an assignment it reads the
 * stored offsets and calls cs_consumer_assign(), partitions whose stored offset could not be
 * read (PostgreSQL down) stay paused until cs_consumer_start(); for a revocation it writes or
 * drops what it holds of them and calls cs_consumer_revoke().
 *
 * Only partitions this module paused are resumed (librdkafka before 2.4 re-fetches from an old
 * position when a partition that was not paused is resumed).
 *
 * @locality the loop's thread, except where noted.
 */
#ifndef COPYSINK_CONSUMER_H
#define COPYSINK_CONSUMER_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "copysink/config.h"
#include "copysink/err.h"
#include "copysink/replay.h"
#include "copysink/stats.h"

typedef struct cs_consumer cs_consumer_t;

/* What the consumer knows of one assigned partition. */
typedef struct cs_consumer_part {
	char topic[CS_MAX_TOPIC];
	int32_t partition;
	int64_t stored;  /* stored next offset as last read or committed; -1 = none stored */
	int64_t next;    /* next offset to take; -1 = the first message sets it */
	bool ready;      /* stored offset read and position set: messages are taken */
	bool sought;     /* sought and nothing taken since: a gap after it is in the log */
	unsigned paused; /* why this worker paused it (PAUSE_* bits in consumer.c); 0 = not */
	int lane;        /* the writer lane that writes its entries */
} cs_consumer_part_t;

/* A rebalance recorded by the callback, waiting for the loop. */
typedef struct cs_rebalance {
	bool assign; /* partitions assigned (else revoked) */
	bool lost;   /* revoked because the group lost them: another worker may own them already */
	rd_kafka_topic_partition_list_t *parts;
	struct cs_rebalance *next;
} cs_rebalance_t;

/* The verdict on a consumed message. */
typedef enum cs_position {
	CS_POS_TAKE,    /* the next message of its partition: take it */
	CS_POS_STALE,   /* below the partition's next offset (delivered again): dropped */
	CS_POS_GAP,     /* above it: the partition was sought back; the message is dropped */
	CS_POS_UNKNOWN, /* not assigned, or its stored offset not read yet: dropped */
} cs_position_t;

/*
 * Create the consumer with the worker's defaults and subscribe to the tables' topics, or for a
 * replay (`replay` not NULL) join no group: the replay assigns its own positions. `nlanes`
 * writer lanes share the partitions. `stats` (borrowed, the loop's) receives the partitions'
 * stored offsets and the position counters.
 * @returns the consumer, or NULL with errstr (a configuration error: retrying cannot help).
 */
cs_consumer_t *cs_consumer_new(const cs_config_t *cfg, const cs_replay_opts_t *replay,
			       int nlanes, cs_stats_t *stats, char *errstr, size_t errstr_size);

/* Leave the group (librdkafka's close: a final revocation is let go at once); waits for the
 * Kafka-side offset commits in flight. The loop must have written or dropped what it holds.
 * Once only; cs_consumer_destroy does it when it was not done. NULL is a no-op. */
void cs_consumer_close(cs_consumer_t *c);

/* Close (when not done) and free. NULL is a no-op. */
void cs_consumer_destroy(cs_consumer_t *c);

/* The librdkafka handle, for the replay and the watermarks (borrowed). */
rd_kafka_t *cs_consumer_rk(cs_consumer_t *c);

/* How many wake-ups the fetch waker has sent (0 with [worker] fetch_wake = off). Every resume
 * of a partition asks for one: librdkafka's broker thread does not notice a resume and would
 * fetch the partition only when it next wakes, up to a second later. */
uint64_t cs_consumer_wakeups(cs_consumer_t *c);

/* The partition assignment strategy the consumer uses when [kafka] does not set one:
 * cooperative-sticky from librdkafka 2.4.0 on, roundrobin (eager) before, where closing
 * during a rebalance can abort the process (librdkafka issue 4312, fixed in 2.3.0) and a
 * cooperative consumer can resume from an old position (4686, fixed in 2.4.0). */
const char *cs_consumer_default_strategy(int rdkafka_version);

/* rd_kafka_consumer_poll(). Rebalances met inside are recorded for cs_consumer_event().
 * @returns a message or error event the caller destroys, or NULL. */
rd_kafka_message_t *cs_consumer_poll(cs_consumer_t *c, int timeout_ms);

/*
 * Hold message `rkm` against its partition's position (see above). On CS_POS_TAKE, *from is
 * the offset the partition's batch covers from if this is its first message there (the
 * partition's `next` before it, lower than rkm->offset across a gap in the log), *lane its
 * lane. CS_POS_GAP seeks the partition; when that seek fails the position is unknown and
 * *err is CS_ERR_FATAL with errstr.
 */
cs_position_t cs_consumer_check(cs_consumer_t *c, const rd_kafka_message_t *rkm, int64_t *from,
				int *lane, cs_err_t *err, char *errstr, size_t errstr_size);

/* The state of topic/partition, or NULL when not assigned. */
cs_consumer_part_t *cs_consumer_find(cs_consumer_t *c, const char *topic, int32_t partition);

/* The assigned partitions (valid until the next call that changes the assignment). */
cs_consumer_part_t *cs_consumer_parts(cs_consumer_t *c, int *nparts);

/* The lane of topic/partition (0 when not assigned). */
int cs_consumer_lane(cs_consumer_t *c, const char *topic, int32_t partition);

/* How many lanes own at least one assigned partition. */
int cs_consumer_lanes_in_use(const cs_consumer_t *c);

/* The oldest rebalance not yet acted on, or NULL. It stays first until cs_consumer_assign() or
 * cs_consumer_revoke() takes it. */
cs_rebalance_t *cs_consumer_event(cs_consumer_t *c);

/*
 * Act on the assignment `ev` (the first event): assign its partitions with elems[i].offset as
 * their start (a stored offset; for a replay's consumer RD_KAFKA_OFFSET_INVALID is allowed).
 * Where known[i] is false the start is not known yet (the stored offset could not be read, or
 * none is stored and the Kafka-committed offset is still to be read):
 * the partition is assigned at a placeholder offset, paused before anything is fetched, and
 * takes nothing until cs_consumer_start().
 * @returns CS_OK, or CS_ERR_FATAL with errstr (out of memory, librdkafka refused).
 */
cs_err_t cs_consumer_assign(cs_consumer_t *c, cs_rebalance_t *ev, const bool *known,
			    char *errstr, size_t errstr_size);

/* Let go of the partitions of the revocation `ev` (the first event) and free it. */
void cs_consumer_revoke(cs_consumer_t *c, cs_rebalance_t *ev);

/*
 * Position topic/partition at its stored offset `stored` after a read of copysink_offsets: an
 * assignment whose lookup failed, or a batch that was fenced. With none stored (-1) it starts
 * at its offset committed to Kafka, else at auto.offset.reset. Seeks, marks it ready, resumes
 * it if this module paused it for the lookup. *at (when not NULL) is set to the offset it
 * starts at, and *committed to whether that offset was the one committed to Kafka.
 * @returns CS_OK; CS_ERR_RETRIABLE with errstr when the seek or the committed offset failed:
 *          the partition keeps waiting, paused (call again later).
 */
cs_err_t cs_consumer_start(cs_consumer_t *c, const char *topic, int32_t partition,
			   int64_t stored, int64_t *at, bool *committed, char *errstr,
			   size_t errstr_size);

/*
 * Between cs_consumer_starting(c, true) and (c, false), partitions cs_consumer_start() starts
 * stay paused, and are resumed together by the second call. Starting several partitions with
 * nothing stored looks up each one's offsets on its leader's connection; a broker answers a
 * connection's requests in order, so behind a resumed partition's Fetch (held up to
 * fetch.wait.max.ms, 500 ms, on a quiet topic) every further lookup waited that long: a worker
 * on a quiet topic started its partitions 500 ms apart.
 */
void cs_consumer_starting(cs_consumer_t *c, bool on);

/* Make topic/partition wait, paused, for cs_consumer_start() (its stored offset must be read
 * again and PostgreSQL does not answer). */
void cs_consumer_wait(cs_consumer_t *c, const char *topic, int32_t partition);

/*
 * Seek topic/partition back to `offset` (a batch read again: its dead letters did not arrive).
 * @returns CS_OK; CS_ERR_FATAL with errstr when the seek failed.
 */
cs_err_t cs_consumer_seek(cs_consumer_t *c, const char *topic, int32_t partition,
			  int64_t offset, char *errstr, size_t errstr_size);

/*
 * A batch committed topic/partition's offsets up to `next_offset` (stored now). When the
 * partition's position was behind it (it was assigned again while that batch was in flight),
 * its position moves to next_offset.
 * @returns true when the position moved: what the loop took of that partition since is
 *          below the stored offset and must be dropped from its batch.
 */
bool cs_consumer_committed(cs_consumer_t *c, const char *topic, int32_t partition,
			   int64_t next_offset);

/* Track the partitions a replay assigned itself (cs_replay_start): ready, each one's first
 * message sets its position. @returns 0, or -1 when out of memory. */
int cs_consumer_track_assignment(cs_consumer_t *c);

/* Pause (true) or resume (false) every assigned partition while a write is retried. */
void cs_consumer_hold(cs_consumer_t *c, bool hold);

/* Commit topic/partition's next offsets to Kafka too, asynchronously (lag tools; PostgreSQL
 * holds the truth). Partitions no longer assigned are left out. */
void cs_consumer_commit(cs_consumer_t *c, const rd_kafka_topic_partition_list_t *offsets);

/* Messages the loop has taken `bytes` of: wakes the fetcher when a part of the prefetch queue
 * has been taken, where the consumer runs a waker (fetchwake.h; a no-op otherwise). */
void cs_consumer_taken(cs_consumer_t *c, size_t bytes);

/* While librdkafka reports all brokers down (stats->kafka_ok false, /readyz 503), ask a broker
 * for metadata at most every 2 s, waiting up to 1 s: the first answer (or message) sets
 * kafka_ok again. A no-op otherwise. `now_ms` is the monotonic clock. */
void cs_consumer_probe(cs_consumer_t *c, int64_t now_ms);

/* A fatal error met inside a callback (out of memory recording a rebalance), or NULL. */
const char *cs_consumer_fatal(const cs_consumer_t *c);

#endif /* COPYSINK_CONSUMER_H */
