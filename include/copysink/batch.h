/*
 * batch.h - rows gathered for one transaction, deduplicated by conflict key
 *
 * The batch owns one buffer of binary COPY tuples per table and one buffer of conflict keys.
 * The decoder appends a row's bytes to them; cs_batch_push_row() then records the row and
 * deduplicates it against the rows already held, so that the batch has the outcome of applying
 * its entries one by one in offset order: for an `update` table the later entry replaces the
 * earlier one (highest offset wins), for a `skip` table the earlier one stays (lowest offset
 * wins). A single INSERT ... ON CONFLICT can then merge the batch, which PostgreSQL would refuse
 * if one key appeared twice ("ON CONFLICT DO UPDATE command cannot affect row a second time").
 *
 * The batch also tracks, per Kafka partition, the next offset to consume once it is committed
 * (including offsets of entries that went to the dead-letter topic).
 *
 * Not thread-safe: one thread fills a batch; another may write it once it is handed over.
 */
#ifndef COPYSINK_BATCH_H
#define COPYSINK_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "copysink/buf.h"
#include "copysink/tablespec.h"

/* What the merge does with a row's key. */
typedef enum cs_row_op {
	CS_ROW_UPSERT = 0,  /* insert, or on conflict update (update) / keep the row (skip) */
	CS_ROW_REPLACE = 1, /* delete the key's row first, then insert (a delete came earlier) */
	CS_ROW_DELETE = 2   /* delete the key's row (a tombstone) */
} cs_row_op_t;

typedef struct cs_batch_row {
	size_t tuple_off; /* in the table's tuple buffer */
	size_t tuple_len;
	size_t key_off;   /* in the key buffer */
	size_t key_len;
	int64_t offset;   /* Kafka offset of the message */
	int32_t part;     /* index into the batch's partitions */
	int32_t entry;    /* index of the entry inside its message */
	size_t msg_off;   /* the message's key and value in the batch's message buffer */
	bool live;        /* false once replaced by a later entry with the same key */
	uint8_t op;       /* cs_row_op_t */
	bool collapsed;   /* replaced an earlier version of its key in this batch */
} cs_batch_row_t;

typedef struct cs_batch_table {
	cs_buf_t tuples;       /* binary COPY tuples, live and dead */
	cs_batch_row_t *rows;  /* in arrival order */
	size_t nrows, rows_cap;
	size_t live;           /* rows still live */
} cs_batch_table_t;

typedef struct cs_batch_part {
	char topic[CS_MAX_TOPIC];
	int32_t partition;
	int64_t first_offset; /* lowest offset the batch holds for this partition */
	int64_t start_offset; /* the offset the batch covers the partition from: first_offset,
			       * or lower when the log has a gap before it (cs_batch_cover_from) */
	int64_t next_offset;  /* highest offset seen + 1 */
} cs_batch_part_t;

typedef struct cs_batch cs_batch_t;

/* Create an empty batch for `nspecs` tables. `specs` must outlive the batch.
 * @returns the batch, or NULL when out of memory. */
cs_batch_t *cs_batch_new(const cs_tablespec_t *specs, int nspecs);

/* Free the batch. NULL is a no-op. */
void cs_batch_destroy(cs_batch_t *b);

/* Empty the batch, keeping its memory for the next one. */
void cs_batch_reset(cs_batch_t *b);

/* The tuple buffer of table t, for the decoder to append to. */
cs_buf_t *cs_batch_tuples(cs_batch_t *b, int t);

/* The key buffer, for the decoder to append to. */
cs_buf_t *cs_batch_keys(cs_batch_t *b);

/*
 * Record that the message at topic/partition/offset has been consumed (whether its entries
 * become rows or dead letters), so the batch's commit moves the partition past it. When
 * `keep` is true the message's key and value (either may be NULL) are copied into the batch,
 * so that a row PostgreSQL rejects can be dead-lettered with its original bytes; the rows
 * pushed next refer to this message.
 * @returns the partition's index in the batch, or -1 when out of memory.
 */
CS_MUSTCHECK int cs_batch_add_message(cs_batch_t *b, const char *topic, int32_t partition,
				      int64_t offset, const void *key, size_t key_len,
				      const void *value, size_t value_len, bool keep);

/* The batch covers partition `part` (an index from cs_batch_add_message) from offset `from`
 * (not above its first message): the consumer's position before a gap in the log, such as
 * compacted records or transaction markers. The writer's offsets fence requires the batch to
 * start at the stored offset. */
void cs_batch_cover_from(cs_batch_t *b, int part, int64_t from);

/* The key and value kept for a row's message (see cs_batch_add_message). */
void cs_batch_row_message(const cs_batch_t *b, const cs_batch_row_t *row, const void **key,
			  size_t *key_len, const void **value, size_t *value_len);

/*
 * Record the row the decoder has just appended to table t: its tuple starts at tuple_start in
 * cs_batch_tuples(b, t) and its key at key_start in cs_batch_keys(b), both running to the end.
 * `part` is the index from cs_batch_add_message(). A `tombstone` row deletes its key (its tuple
 * holds the key columns only, the others NULL). Deduplicates as described above, deletes
 * included: a delete replaces whatever the batch held for its key; an entry after a delete
 * becomes a REPLACE (delete, then insert); a `skip` duplicate of a live entry is dropped and
 * its bytes released at once.
 * @returns 0, or -1 when out of memory (the row is not recorded; the caller treats it as fatal).
 */
CS_MUSTCHECK int cs_batch_push_row(cs_batch_t *b, int t, int part, int64_t offset, int entry,
				   size_t tuple_start, size_t key_start, bool tombstone);

/* Rows offered to the batch (including replaced duplicates), rows still live, bytes held. */
size_t cs_batch_entries(const cs_batch_t *b);
size_t cs_batch_live_rows(const cs_batch_t *b);
size_t cs_batch_bytes(const cs_batch_t *b);

/* True when the batch holds no partition at all (nothing consumed). */
bool cs_batch_empty(const cs_batch_t *b);

/* The [batch] bounds: a batch is written as soon as one is reached. */
typedef struct cs_batch_bounds {
	int64_t max_rows;  /* entries offered (cs_batch_entries) */
	int64_t max_bytes; /* bytes held (cs_batch_bytes) */
	int64_t linger_ms; /* age of the batch's first message */
} cs_batch_bounds_t;

/* True when the batch must be written now: it is not empty and has reached a bound, its first
 * message having arrived `age_ms` ago. An empty batch is never due. */
bool cs_batch_due(const cs_batch_t *b, const cs_batch_bounds_t *bounds, int64_t age_ms);

/* The table t (rows and tuples) and the partitions, for the writer. */
const cs_batch_table_t *cs_batch_table(const cs_batch_t *b, int t);
int cs_batch_ntables(const cs_batch_t *b);
const cs_batch_part_t *cs_batch_parts(const cs_batch_t *b, int *nparts);

/* Mark row r of table t dead (the writer does this to rows PostgreSQL rejected). */
void cs_batch_kill_row(cs_batch_t *b, int t, size_t r);

/* Forget partition `partition` of `topic`: its rows are killed and it no longer counts.
 * Used when a rebalance takes the partition away before the batch was written. */
void cs_batch_drop_partition(cs_batch_t *b, const char *topic, int32_t partition);

#endif /* COPYSINK_BATCH_H */
