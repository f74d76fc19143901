/*
 * stats.h - the worker's counters, in one struct
 *
 * The main loop owns a cs_stats_t and updates it without locking. Once per loop turn it
 * publishes a copy (cs_stats_publish) that the HTTP thread reads under a mutex, so the hot path
 * never waits for a scrape. The periodic stats line reads the loop's own copy.
 */
#ifndef COPYSINK_STATS_H
#define COPYSINK_STATS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "copysink/decode.h"
#include "copysink/tablespec.h"

#define CS_STATS_MAX_TABLES 16
#define CS_STATS_MAX_SQLSTATES 32
#define CS_STATS_MAX_PARTITIONS 256
#define CS_STATS_BUCKETS 12

/* Upper bounds (seconds) of the batch-duration histogram buckets; the last is +Inf. */
extern const double cs_stats_bucket_le[CS_STATS_BUCKETS];

typedef struct cs_stats_partition {
	char topic[CS_MAX_TOPIC];
	int32_t partition;
	int64_t stored;     /* stored next offset, -1 = none yet */
	int64_t high;       /* high watermark last seen, -1 = unknown */
} cs_stats_partition_t;

typedef struct cs_stats {
	uint64_t messages;        /* Kafka messages consumed */
	uint64_t entries;         /* entries decoded successfully */
	uint64_t batches;         /* batches committed */
	uint64_t rows_written[CS_STATS_MAX_TABLES]; /* rows sent per table */
	uint64_t rows_merged[CS_STATS_MAX_TABLES];  /* rows inserted or updated per table */
	uint64_t rows_deleted[CS_STATS_MAX_TABLES]; /* rows deleted by tombstones per table */
	uint64_t dead_letters[CS_REASON__COUNT];    /* per reason */
	uint64_t unknown_fields;
	uint64_t retries;         /* batch writes retried after an infrastructure error */
	uint64_t fenced;          /* batches dropped because another worker owned a partition */
	uint64_t stale_skipped;   /* messages delivered again below their partition's position */
	uint64_t position_rewinds; /* partitions sought back after their position jumped ahead */
	uint64_t dead_letter_values_dropped; /* dead letters sent without their value */
	struct {
		char sqlstate[6];
		uint64_t count;
	} db_errors[CS_STATS_MAX_SQLSTATES]; /* failed statements by SQLSTATE ("" = no SQLSTATE) */
	int ndb_errors;
	uint64_t bytes_held;      /* bytes in the current batch */
	uint64_t last_commit_ms;  /* wall clock of the last commit, ms since the epoch; 0 = never */
	uint64_t batch_buckets[CS_STATS_BUCKETS]; /* batch write durations (cumulative at render) */
	double batch_seconds_sum;
	cs_stats_partition_t parts[CS_STATS_MAX_PARTITIONS];
	int nparts;
	/* health */
	int64_t heartbeat_ms;     /* monotonic ms of the loop's last turn */
	bool pg_ok;               /* the last PostgreSQL operation succeeded */
	bool kafka_ok;            /* the consumer has an assignment or is waiting for one */
	bool retrying;            /* a batch is being retried */
} cs_stats_t;

/* A published copy of the stats, for readers on other threads. */
typedef struct cs_stats_shared {
	pthread_mutex_t lock;
	cs_stats_t stats;
} cs_stats_shared_t;

/* Initialise / destroy the shared copy. */
void cs_stats_shared_init(cs_stats_shared_t *shared);
void cs_stats_shared_cleanup(cs_stats_shared_t *shared);

/* Publish `cur` (loop thread) / take a consistent copy (any thread). */
void cs_stats_publish(cs_stats_shared_t *shared, const cs_stats_t *cur);
void cs_stats_snapshot(cs_stats_shared_t *shared, cs_stats_t *out);

/* Count a failed statement under its SQLSTATE (NULL or "" for none). */
void cs_stats_db_error(cs_stats_t *st, const char *sqlstate);

/* Record one batch write of `seconds` in the histogram. */
void cs_stats_batch_duration(cs_stats_t *st, double seconds);

/* Set the stored offset / high watermark of a partition (added if new, when room). */
void cs_stats_partition(cs_stats_t *st, const char *topic, int32_t partition, int64_t stored,
			int64_t high);

/* Forget a partition (revoked). */
void cs_stats_partition_remove(cs_stats_t *st, const char *topic, int32_t partition);

/* Log one summary line with the changes since `prev` over `secs` seconds; copies cur to prev. */
void cs_stats_log(const cs_stats_t *cur, cs_stats_t *prev, double secs,
		  const cs_tablespec_t *specs, int nspecs);

#endif /* COPYSINK_STATS_H */
