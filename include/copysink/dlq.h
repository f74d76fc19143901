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
 *
 * A dead letter never blocks its partition for its size. One refused as too large — by
 * librdkafka when queued (above the producer's message.max.bytes) or by the broker
 * (MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE: above the topic's max.message.bytes) — is sent
 * again with the same key and headers but no value (null), and two more headers:
 *   copysink.value_size     the size of the value left out, in bytes (decimal)
 *   copysink.value_dropped  "true"
 * The original stays in the source topic, where the headers point. Such a letter is not a
 * failure of its batch once its value-less form is acknowledged; cs_dlq_values_dropped counts
 * them. Refused for any other reason (or its value-less form refused), a letter is a failure.
 * The producer's defaults, unless [kafka] sets them: message.max.bytes follows [worker]
 * max_message_bytes (plus room for key and headers), compression.type = lz4, acks=all
 * (idempotent), linger.ms = 5.
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

/* Create the dead-letter producer from the [kafka] settings and the defaults above.
 * @returns the producer (free with cs_dlq_destroy), or NULL with errstr.
 * @locality main thread */
cs_dlq_t *cs_dlq_new(const cs_config_t *cfg, char *errstr, size_t errstr_size);

/* Flush what is pending, letters to send again without value included (up to 10 s), and
 * free. NULL is a no-op. @locality the thread that owns dlq, once no other thread uses it */
void cs_dlq_destroy(cs_dlq_t *dlq);

/* Queue a dead letter (copied) counted against `tally`, which must outlive its delivery report
 * and the flush that sends it again without value. Above message.max.bytes, it is queued at
 * once without its value (see above). dl->table, sqlstate, key and value may be NULL.
 * @returns 0, or -1 with errstr when it could not be queued (counted as failed in `tally`).
 * @locality any thread (not inside a librdkafka callback: it may wait up to 1 s for room) */
__attribute__((warn_unused_result)) int cs_dlq_send(cs_dlq_t *dlq, const cs_dead_letter_t *dl,
						    cs_dlq_tally_t *tally, char *errstr,
						    size_t errstr_size);

/*
 * Wait until every queued dead letter is acknowledged, then look at `tally`. Letters that
 * delivery reports found too large are sent again without their value here, and waited for,
 * all within timeout_ms (whichever thread's flush comes first sends them, for any tally).
 * @returns CS_OK; CS_ERR_RETRIABLE when the wait timed out or a dead letter of `tally` failed
 *          (the tally keeps the failure: the batch must not be committed, and its entries must be
 *          consumed and dead-lettered again).
 * @locality any thread, several at once (not inside a librdkafka callback)
 */
__attribute__((warn_unused_result)) cs_err_t cs_dlq_flush(cs_dlq_t *dlq, cs_dlq_tally_t *tally,
							  int timeout_ms, char *errstr,
							  size_t errstr_size);

/* Dead letters acknowledged since the producer was created (value-less ones included).
 * @locality any thread */
uint64_t cs_dlq_delivered(cs_dlq_t *dlq);

/* Of those, the letters acknowledged without their value (copysink.value_dropped), for a
 * metric. @locality any thread */
uint64_t cs_dlq_values_dropped(cs_dlq_t *dlq);

#endif /* COPYSINK_DLQ_H */
