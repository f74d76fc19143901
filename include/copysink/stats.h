/*
 * stats.h - the worker's counters, in one struct
 *
 * The main loop updates them; the periodic stats line and the metrics endpoint read them.
 * Counters are updated by one thread and read with relaxed atomics by others.
 */
#ifndef COPYSINK_STATS_H
#define COPYSINK_STATS_H

#include <stdint.h>

#include "copysink/decode.h"
#include "copysink/tablespec.h"

#define CS_STATS_MAX_TABLES 16

typedef struct cs_stats {
	uint64_t messages;        /* Kafka messages consumed */
	uint64_t entries;         /* entries decoded successfully */
	uint64_t batches;         /* batches committed */
	uint64_t rows_written[CS_STATS_MAX_TABLES]; /* rows sent per table */
	uint64_t rows_merged[CS_STATS_MAX_TABLES];  /* rows inserted or updated per table */
	uint64_t dead_letters[CS_REASON__COUNT];    /* per reason */
	uint64_t unknown_fields;
	uint64_t retries;         /* batch writes retried after an infrastructure error */
	uint64_t fenced;          /* batches dropped because another worker owned a partition */
	uint64_t db_errors;       /* failed statements */
	uint64_t bytes_held;      /* bytes in the current batch */
	uint64_t last_commit_ms;  /* wall clock of the last commit, ms since the epoch */
	uint64_t batch_ms_total;  /* sum of batch write durations */
} cs_stats_t;

/* Log one summary line with the changes since `prev` over `secs` seconds; copies cur to prev. */
void cs_stats_log(const cs_stats_t *cur, cs_stats_t *prev, double secs,
		  const cs_tablespec_t *specs, int nspecs);

#endif /* COPYSINK_STATS_H */
