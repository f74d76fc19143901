/*
 * dlq.h - the dead-letter topic: entries that cannot be written, with the reason
 *
 * Every dead letter keeps the original message key and value bytes (or, for one entry of a
 * message that held several, that entry's msgpack bytes) and carries headers:
 *   copysink.reason     reason name, e.g. "missing_field", "db_rejected"
 *   copysink.error      the message, e.g. missing required field "namespace"
 *   copysink.topic / copysink.partition / copysink.offset   where it came from
 *   copysink.entry      index of the entry inside its message (when the message was an array)
 *   copysink.table      the target table (when known)
 *   copysink.sqlstate   PostgreSQL's SQLSTATE (db_rejected only)
 * A batch is committed only after all of its dead letters are acknowledged by the broker
 * (cs_dlq_flush), so no entry is lost between the two. Each dead letter is counted against the
 * tally of the batch it belongs to, so that a failure is charged to that batch and no other, and
 * a batch whose tally shows a failure is read again from Kafka (its dead letters sent again)
 * instead of being committed.
 */
#ifndef COPYSINK_DLQ_H
#define COPYSINK_DLQ_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "copysink/config.h"
#include "copysink/err.h"

typedef struct cs_dlq cs_dlq_t;

/* The dead letters of one batch that failed: refused by the broker, timed out, or never
 * queued. Delivery reports run on whichever thread serves the producer, hence the atomic.
 * The owner embeds it and resets it (cs_dlq_tally_reset) whenever its batch starts afresh. */
typedef struct cs_dlq_tally {
	atomic_uint_fast64_t failed;
} cs_dlq_tally_t;

/* Zero the tally (no dead letter of it may still be waiting for its delivery report). */
void cs_dlq_tally_reset(cs_dlq_tally_t *tally);

/* Where a dead letter came from and why it is one. */
typedef struct cs_dead_letter {
	const char *dlq_topic;  /* destination */
	const char *topic;      /* source topic */
	int32_t partition;
	int64_t offset;
	int entry;              /* entry index, -1 for the whole message */
	const char *table;      /* may be NULL */
	const char *reason;     /* reason name */
	const char *error;      /* message */
	const char *sqlstate;   /* may be NULL */
	const void *key;        /* may be NULL */
	size_t key_len;
	const void *value;      /* may be NULL */
	size_t value_len;
} cs_dead_letter_t;

/* Create the dead-letter producer from the [kafka] settings (idempotent, acks=all).
 * @returns the producer, or NULL with errstr. */
cs_dlq_t *cs_dlq_new(const cs_config_t *cfg, char *errstr, size_t errstr_size);

/* Flush what is pending (up to 10 s) and free. NULL is a no-op. */
void cs_dlq_destroy(cs_dlq_t *dlq);

/* Queue a dead letter (copied) counted against `tally` (which must outlive its delivery report).
 * @returns 0, or -1 with errstr when it could not be queued (counted as failed in `tally`). */
__attribute__((warn_unused_result)) int cs_dlq_send(cs_dlq_t *dlq, const cs_dead_letter_t *dl,
						    cs_dlq_tally_t *tally, char *errstr,
						    size_t errstr_size);

/*
 * Wait until every queued dead letter is acknowledged, then look at `tally`.
 * @returns CS_OK; CS_ERR_RETRIABLE when the wait timed out or a dead letter of `tally` failed
 *          (the tally keeps the failure: the batch must not be committed, and its entries must be
 *          consumed and dead-lettered again).
 */
__attribute__((warn_unused_result)) cs_err_t cs_dlq_flush(cs_dlq_t *dlq, cs_dlq_tally_t *tally,
							  int timeout_ms, char *errstr,
							  size_t errstr_size);

/* Dead letters acknowledged since the producer was created. */
uint64_t cs_dlq_delivered(cs_dlq_t *dlq);

#endif /* COPYSINK_DLQ_H */
