/*
 * worker.h - the main loop: consume -> decode -> batch -> copy/merge -> commit
 *
 * One thread runs the loop: it polls the consumer (consumer.h, which checks every message
 * against its partition's position), decodes each message into the batch of the partition's
 * lane (invalid entries go to the dead-letter topic), and hands a lane's batch to its writer
 * thread when max_rows, max_bytes or linger_ms is reached: dead letters flushed, then one
 * PostgreSQL transaction that also stores the partitions' next offsets (fenced), then the same
 * offsets committed to Kafka. Between messages it acts on the rebalances the consumer recorded
 * (stored offsets read on the loop's own connection; revoked partitions written or dropped
 * first), reads the stored offsets of partitions still waiting for PostgreSQL, and checks that
 * PostgreSQL answers while idle (/readyz).
 */
#ifndef COPYSINK_WORKER_H
#define COPYSINK_WORKER_H

#include <signal.h>
#include <stddef.h>

#include "copysink/config.h"
#include "copysink/err.h"
#include "copysink/replay.h"
#include "copysink/stats.h"

typedef struct cs_worker cs_worker_t;

/*
 * Create the worker: PostgreSQL connections (tables checked; a server that cannot be reached
 * yet is waited for by the loop), dead-letter producer, consumer subscribed to the tables'
 * topics. `cfg` must outlive the worker; its specs get their column
 * encodings from the catalog. The loop publishes its counters to `shared` (may be NULL), which
 * must outlive the worker. With `replay` (NULL for `copysink run`; must outlive the worker)
 * the consumer joins no group: it is assigned the replay's positions, stores no offsets, and
 * with replay->until_end the loop ends once every partition has reached its end.
 * @returns the worker, or NULL with errstr (a configuration error, a table that does not
 *          match its spec, out of memory: *err is CS_ERR_FATAL).
 */
cs_worker_t *cs_worker_new(cs_config_t *cfg, cs_stats_shared_t *shared,
			   const cs_replay_opts_t *replay, cs_err_t *err, char *errstr,
			   size_t errstr_size);

/*
 * Run until *stop becomes non-zero, then write what is pending within the shutdown grace
 * period, leave the group and return.
 * @returns CS_OK after a clean stop (a replay: also after reaching its end), CS_ERR_FATAL with
 *          errstr otherwise; a replay that could not write its last batch returns
 *          CS_ERR_RETRIABLE.
 */
cs_err_t cs_worker_run(cs_worker_t *w, volatile sig_atomic_t *stop, char *errstr,
		       size_t errstr_size);

/* Close the consumer (leaving the group), the producer and the connections. NULL is a no-op. */
void cs_worker_destroy(cs_worker_t *w);

/* What cs_worker_destroy is doing now, e.g. "closing the Kafka consumer (...)", or NULL when
 * it is not running. For a watchdog thread (main.c's close guard): thread-safe. */
const char *cs_worker_close_step(void);

#endif /* COPYSINK_WORKER_H */
