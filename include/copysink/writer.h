/*
 * writer.h - one batch, one PostgreSQL transaction: COPY into staging, merge, offsets, commit
 *
 * For each table with rows: binary COPY of the batch's live tuples into a temporary staging
 * table (created once per connection, ON COMMIT DELETE ROWS; or, with staging = transaction,
 * in each transaction that needs one, ON COMMIT DROP), then one
 * INSERT ... SELECT ... ON CONFLICT (DO UPDATE for `update` tables, leaving rows whose values did
 * not change untouched; DO NOTHING for `skip`). Then the next offset of every partition in the
 * batch goes into copysink_offsets, fenced: the update only applies where the stored offset is
 * still the one this worker last saw, otherwise the transaction rolls back (CS_ERR_FENCED).
 *
 * When COPY or the merge fails because of the data (SQLSTATE classes 22 and 23, and 54000), the
 * writer bisects the table's rows inside the transaction with savepoints until the bad rows are
 * isolated; those are reported through the reject callback and left out, and the rest commit.
 *
 * The writer keeps no state in the server's session that a later transaction relies on, other
 * than the staging tables of staging = session: no prepared statement (PQexec and unnamed
 * statements only), no SET but temp_buffers (session staging only), no advisory lock, no
 * LISTEN. So with staging = transaction it works through a pooler that runs each transaction
 * on any server connection (PgBouncer pool_mode = transaction).
 *
 * Every call that fails fills its errstr with a message naming the cause, never an empty one
 * (`connection to PostgreSQL lost` when the connection broke without a word).
 *
 * Not thread-safe: one thread owns a writer.
 */
#ifndef COPYSINK_WRITER_H
#define COPYSINK_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "copysink/batch.h"
#include "copysink/err.h"
#include "copysink/tablespec.h"

typedef struct cs_writer cs_writer_t;

/* A row PostgreSQL rejected: table index, the row (its message is in the batch), the SQLSTATE
 * and the server's message. Called before the transaction commits; the callback must queue
 * the dead letter and return 0, or return -1 to make the write fail (retriable). */
typedef int (*cs_writer_reject_fn)(void *opaque, int table, const cs_batch_row_t *row,
				   const char *sqlstate, const char *message);

/* Per-table figures of the last committed batch. A key deleted and written again inside one
 * batch (a tombstone, then an entry) counts in both `deleted` (when its row existed) and
 * `merged`, as PostgreSQL deletes the row and inserts a new one. */
typedef struct cs_writer_table_stats {
	uint64_t rows;     /* rows sent with COPY (tombstones included) */
	uint64_t merged;   /* rows inserted or updated, by the merge or the direct COPY */
	uint64_t deleted;  /* rows deleted by tombstones (a tombstone of a missing key: none) */
	uint64_t rejected; /* rows PostgreSQL rejected */
	uint64_t bisect_writes; /* COPY-and-merge attempts of the bisection that isolated them */
	uint64_t bytes;    /* COPY bytes sent */
	bool direct;       /* written by COPY straight into the table, without merge */
} cs_writer_table_stats_t;

/*
 * Create a writer for `specs` (the writer sets each column's encoding when it connects, so the
 * specs must be writable and outlive it). `group_id` scopes the stored offsets; an empty
 * one (a replay) stores none and fences nothing.
 * @returns the writer (not yet connected), or NULL when out of memory.
 */
cs_writer_t *cs_writer_new(const char *conninfo, cs_tablespec_t *specs, int nspecs,
			   const char *group_id);

/*
 * Whether to try the direct path (on by default): a table's rows in a batch that holds no
 * delete are COPYed straight into the table under a savepoint; when a key exists already the
 * COPY fails early, is rolled back and the rows take the staging merge, and the next batches
 * of that table merge straight away (a number doubling with each such failure, up to 64).
 * The outcome is the same either way; only the cost differs.
 */
void cs_writer_set_direct(cs_writer_t *w, bool on);

/*
 * Merge the rows of a batch in key order (sorted by their key bytes before the COPY into the
 * staging table, which the merge reads in that order), for several writers on one table: two
 * transactions meeting the same keys then lock them in the same order and one waits for the
 * other instead of deadlocking. Takes effect with the next cs_writer_write().
 */
void cs_writer_set_key_order(cs_writer_t *w, bool on);

/* Where the staging tables live. */
typedef enum cs_writer_staging {
	/* created when connecting (CREATE TEMP TABLE IF NOT EXISTS ... ON COMMIT DELETE ROWS) and
	 * used by every transaction of the connection: needs one server session per connection */
	CS_WRITER_STAGING_SESSION,
	/* created inside each transaction whose batch takes the merge (ON COMMIT DROP), by a
	 * name of their own; nothing outlives the transaction, for poolers in transaction mode */
	CS_WRITER_STAGING_TRANSACTION,
} cs_writer_staging_t;

/*
 * Where the staging tables live (CS_WRITER_STAGING_SESSION by default). Set before
 * cs_writer_connect(). With session staging, a staging table found missing in a write (a
 * pooler in transaction mode moved the transaction to another server connection) fails the
 * write with CS_ERR_FATAL and a message that names the cause and `staging = transaction`.
 */
void cs_writer_set_staging(cs_writer_t *w, cs_writer_staging_t staging);

/*
 * The session's temp_buffers in kB, set on every connection before the staging tables are
 * first used (0: leave the server's setting). Measured side by side in four paired rounds,
 * 64 MB (twice a default batch's COPY bytes) against the server's 8 MB: the new-keys staging
 * merge the same within noise (+3 %), the update merge about 10 % slower; so the default
 * leaves the server's setting. Not set with staging = transaction (a server connection shared
 * through a pooler cannot take another temp_buffers once it used temporary tables; the
 * configuration refuses the combination).
 */
void cs_writer_set_temp_buffers(cs_writer_t *w, int64_t kb);

/* Close the connection and free the writer. NULL is a no-op. */
void cs_writer_destroy(cs_writer_t *w);

/*
 * Connect if not connected: open the connection, check every table against its spec, build
 * the statements and, with session staging, create the staging tables.
 * @returns CS_OK; CS_ERR_RETRIABLE when PostgreSQL cannot be reached; CS_ERR_FATAL when a table
 *          does not match its spec or the bookkeeping table is missing. errstr says why.
 */
__attribute__((warn_unused_result)) cs_err_t cs_writer_connect(cs_writer_t *w, char *errstr,
							       size_t errstr_size);

/* Drop the connection (the next call reconnects). */
void cs_writer_disconnect(cs_writer_t *w);

/*
 * Check that PostgreSQL answers, for readiness while no batch is written: connect when not
 * connected (a connect_timeout of 2 s unless the conninfo sets one), otherwise one round trip
 * ("SELECT 1") that gives up after 2 s, dropping the connection. A connection the server
 * closed (restart, pg_terminate_backend, an idle timeout) is replaced at once: the ping
 * then reports whether the new one works.
 * @returns CS_OK; CS_ERR_RETRIABLE when PostgreSQL is unreachable or did not answer in time;
 *          CS_ERR_FATAL when reconnecting found a table that no longer matches its spec (as
 *          cs_writer_connect). errstr says why.
 * @remark  The caller blocks for at most about 2 s, plus name resolution and, after a dropped
 *          connection, the reconnect's catalog checks.
 * @locality the thread that owns the writer, never while a write is in flight.
 */
__attribute__((warn_unused_result)) cs_err_t cs_writer_ping(cs_writer_t *w, char *errstr,
							    size_t errstr_size);

/*
 * Read the stored next offset of topic/partition for this group into *next (-1 when none),
 * connecting first when not connected.
 * @returns CS_OK, or CS_ERR_RETRIABLE / CS_ERR_FATAL with errstr.
 */
__attribute__((warn_unused_result)) cs_err_t cs_writer_stored_offset(cs_writer_t *w,
								     const char *topic,
								     int32_t partition,
								     int64_t *next, char *errstr,
								     size_t errstr_size);

/*
 * Write batch `b` in one transaction. `expected[i]` is the stored offset this worker expects for
 * the batch's partition i (cs_batch_parts order), -1 when none was stored. Rows PostgreSQL
 * rejects are killed in the batch and reported through `reject`.
 * @returns CS_OK once committed; CS_ERR_FENCED when a partition's stored offset moved (rolled
 *          back); CS_ERR_RETRIABLE for infrastructure errors (rolled back, connection dropped
 *          when broken); CS_ERR_FATAL for anything else. errstr says why.
 */
__attribute__((warn_unused_result)) cs_err_t cs_writer_write(cs_writer_t *w, cs_batch_t *b,
							     const int64_t *expected,
							     cs_writer_reject_fn reject,
							     void *opaque, char *errstr,
							     size_t errstr_size);

/* SQLSTATE of the last failed statement ("" when none or the connection broke). */
const char *cs_writer_last_sqlstate(const cs_writer_t *w);

/* Figures of table t in the last committed batch. */
const cs_writer_table_stats_t *cs_writer_table_stats(const cs_writer_t *w, int t);

/* Class of a SQLSTATE: CS_ERR_DATA (22xxx, 23xxx, 54000), CS_ERR_RETRIABLE (08xxx, 40001,
 * 40P01, 53xxx, 57Pxx, 58xxx), CS_ERR_FATAL otherwise. NULL (no SQLSTATE) is retriable. */
cs_err_t cs_writer_classify(const char *sqlstate);

#endif /* COPYSINK_WRITER_H */
