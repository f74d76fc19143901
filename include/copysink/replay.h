/*
 * replay.h - reading topics again from a chosen position, for backfills and rebuilds
 *
 * `copysink replay` consumes the tables' topics with its own assignment instead of joining the
 * consumer group: the live worker's group, its Kafka offsets and its offsets stored in
 * PostgreSQL are untouched, and nothing is committed anywhere but the rows. It writes through
 * the same pipeline as `copysink run`, so that entries, tombstones and dead letters are treated
 * the same; the rows' source columns keep a replay from moving a row backwards.
 *
 * This module resolves where each partition starts and ends, follows the progress of the
 * consumption and prints it. All functions run on the worker's loop thread.
 */
#ifndef COPYSINK_REPLAY_H
#define COPYSINK_REPLAY_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "copysink/config.h"

typedef struct cs_replay_opts {
	const char *from; /* "earliest", an RFC 3339 time, or "topic:partition:offset,..." */
	bool until_end;   /* stop once the end offsets seen at the start are reached */
	bool tty;         /* progress as a bar on a terminal, else a periodic line */
} cs_replay_opts_t;

typedef struct cs_replay cs_replay_t;

/*
 * Parse an RFC 3339 time ("2026-11-24T08:00:00Z", "2026-11-24T09:00:00.250+01:00") into
 * milliseconds since the epoch.
 * @returns 0, or -1 when `s` is not such a time.
 */
int cs_replay_parse_time(const char *s, int64_t *ms);

/*
 * Resolve the start of every partition of the tables' topics from opts->from (all partitions
 * for "earliest" and a time; only the listed ones for a position list) and, with
 * opts->until_end, its end (the high watermark now), then assign those not already at their
 * end to `rk`, a consumer that has not subscribed.
 * @returns the replay state (free with cs_replay_destroy), or NULL with errstr: a topic or
 *          partition that does not exist, an unparsable --from, the broker unreachable.
 */
cs_replay_t *cs_replay_start(rd_kafka_t *rk, const cs_config_t *cfg, const cs_replay_opts_t *opts,
			     char *errstr, size_t errstr_size);

/* Free the state. NULL is a no-op. */
void cs_replay_destroy(cs_replay_t *r);

/*
 * A message at `offset` of topic/partition has been consumed.
 * @returns true when it is inside the range and must be loaded; false when it lies past the
 *          partition's end (with until_end), in which case the partition is paused and done.
 */
bool cs_replay_take(cs_replay_t *r, rd_kafka_t *rk, const char *topic, int32_t partition,
		    int64_t offset);

/* The consumer reached the end of topic/partition at `offset` (the next offset to read). */
void cs_replay_eof(cs_replay_t *r, rd_kafka_t *rk, const char *topic, int32_t partition,
		   int64_t offset);

/* True when every partition has reached its end (never without until_end). */
bool cs_replay_done(const cs_replay_t *r);

/*
 * Show the progress: on a terminal a bar redrawn at most 5 times a second (rows, rows/s,
 * percent of the range, ETA), otherwise a log line every 10 s; with `final`, the summary.
 * `rows` are the rows written so far, `dead` the entries dead-lettered.
 */
void cs_replay_progress(cs_replay_t *r, uint64_t rows, uint64_t dead, bool final);

#endif /* COPYSINK_REPLAY_H */
