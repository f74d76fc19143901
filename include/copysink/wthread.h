/*
 * wthread.h - the writer thread: writes one batch while the loop decodes the next
 *
 * The loop hands a filled batch over with cs_wthread_submit() and goes on filling another;
 * cs_wthread_wait() collects the outcome. Only one batch is in flight at a time, so batches are
 * committed in the order they were filled, and the memory held is at most two batches.
 *
 * While a batch is in flight the writer (and its PostgreSQL connection) belongs to the thread:
 * the loop must wait before using the writer itself.
 */
#ifndef COPYSINK_WTHREAD_H
#define COPYSINK_WTHREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "copysink/batch.h"
#include "copysink/err.h"
#include "copysink/writer.h"

typedef struct cs_wthread cs_wthread_t;

/* Start the thread. `reject` is called on the thread for rows PostgreSQL rejects.
 * @returns the thread, or NULL when it could not be started. */
cs_wthread_t *cs_wthread_new(cs_writer_t *writer, cs_writer_reject_fn reject, void *opaque);

/* Stop and join the thread (waiting for a batch in flight). NULL is a no-op. */
void cs_wthread_destroy(cs_wthread_t *t);

/* Start writing `b` with `expected` offsets (both must stay untouched until the wait).
 * Precondition: nothing in flight. */
void cs_wthread_submit(cs_wthread_t *t, cs_batch_t *b, const int64_t *expected);

/* True while a batch is in flight and its outcome not yet collected. */
bool cs_wthread_busy(cs_wthread_t *t);

/* True when the batch in flight has finished (cs_wthread_wait will not block). */
bool cs_wthread_done(cs_wthread_t *t);

/* Wait for the batch in flight and return cs_writer_write()'s result, its message in errstr,
 * and how long the write took. After this nothing is in flight. */
cs_err_t cs_wthread_wait(cs_wthread_t *t, int64_t *ms, char *errstr, size_t errstr_size);

/* Wait up to timeout_ms for the batch in flight to finish (without collecting it).
 * @returns true when nothing is in flight any more or the write has finished. */
bool cs_wthread_wait_done(cs_wthread_t *t, int timeout_ms);

#endif /* COPYSINK_WTHREAD_H */
