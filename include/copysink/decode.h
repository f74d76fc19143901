/*
 * decode.h - msgpack entries to binary COPY tuples
 *
 * A Kafka message value is one msgpack map (one entry) or an array of maps (entries that travel
 * together). The decoder validates each entry against a table spec and appends it to the batch
 * as one tuple of PostgreSQL's binary COPY format, plus the bytes of its conflict key (used by
 * the batch to deduplicate). An entry that fails validation is not appended; the caller gets a
 * reason code and a message and sends the entry to the dead-letter topic.
 *
 * Limits on an entry's content (nesting depth, field size, types) apply to each entry of an
 * array on its own, in cs_decode_entry(): one bad element never rejects its siblings. Only what
 * makes the whole message unreadable is rejected by cs_decode_open().
 *
 * A decoder is used by one thread at a time.
 *
 * Nothing here talks to PostgreSQL or Kafka, and no SQL is ever built from message data.
 */
#ifndef COPYSINK_DECODE_H
#define COPYSINK_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "copysink/buf.h"
#include "copysink/tablespec.h"

/* Why an entry or a message was rejected; cs_reason_name() gives the dead-letter header value. */
typedef enum cs_reason {
	CS_REASON_OK = 0,
	CS_REASON_MALFORMED,      /* not valid msgpack, truncated, or trailing bytes */
	CS_REASON_NOT_A_MAP,      /* the entry (or the message) is not a map */
	CS_REASON_MISSING_FIELD,  /* a required field is absent or nil */
	CS_REASON_WRONG_TYPE,     /* a field has a msgpack type the column cannot take */
	CS_REASON_EMBEDDING_DIM,  /* embedding of the wrong dimension */
	CS_REASON_NOT_FINITE,     /* NaN or an infinity where a number must be finite */
	CS_REASON_INVALID_UTF8,   /* text that is not valid UTF-8 */
	CS_REASON_NUL_BYTE,       /* text containing a NUL byte */
	CS_REASON_OUT_OF_RANGE,   /* integer outside the column's range */
	CS_REASON_TOO_DEEP,       /* nesting deeper than the limit */
	CS_REASON_TOO_LARGE,      /* message, field or entry count above the limit */
	CS_REASON_DB_REJECTED,    /* PostgreSQL refused the row (set by the writer, not the decoder) */
	CS_REASON_NO_TABLE,       /* message from a topic no table reads (set by the consumer) */
	CS_REASON_INVALID_FORMAT, /* a value not in its type's format (uuid, timestamp, number) */
	CS_REASON__COUNT
} cs_reason_t;

/* Stable lower-case name of a reason, e.g. "missing_field". Never NULL. */
const char *cs_reason_name(cs_reason_t reason);

struct msgpack_object;

/* Name of a msgpack value's type for messages: "int", "str", "bin", ... Never NULL. */
const char *cs_decode_type_name(const struct msgpack_object *o);

/*
 * A data error: formats the message into errstr (errstr_size bytes, truncated if need be) and
 * returns `reason`, for `return cs_decode_reject(...)` in the decoder and the column encoders.
 * Any thread.
 */
cs_reason_t cs_decode_reject(cs_reason_t reason, char *errstr, size_t errstr_size,
			     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

typedef struct cs_decode_limits {
	size_t max_message_bytes; /* larger message values are rejected whole (TOO_LARGE) */
	int max_entries;          /* entries per message */
	int max_depth;            /* nesting of one entry, its map being level 1 (2..32) */
	size_t max_field_bytes;   /* one text/jsonb field after encoding */
} cs_decode_limits_t;

/* Sensible defaults: 16 MiB message, 100000 entries, depth 32, 1 MiB field. */
void cs_decode_limits_default(cs_decode_limits_t *limits);

typedef struct cs_decoder cs_decoder_t;

/* Create a decoder (it keeps its parse memory between messages).
 * @returns the decoder, or NULL when out of memory. Free with cs_decoder_destroy(). */
cs_decoder_t *cs_decoder_new(const cs_decode_limits_t *limits);

/* Free the decoder. NULL is a no-op. */
void cs_decoder_destroy(cs_decoder_t *dec);

/*
 * Open one message value: check that it is one complete msgpack value (nothing truncated,
 * nothing after it), at most max_message_bytes, and a map (one entry) or a non-empty array of
 * at most max_entries elements. Elements are not looked into beyond their extent: their depth,
 * type and fields are checked by cs_decode_entry(). The previous message is forgotten.
 * `value` is not copied: it must stay valid and unchanged until the next cs_decode_open() or
 * cs_decode_key() on this decoder.
 * @returns the number of entries (>= 1) on success, or -1 when the whole message is rejected
 *          (MALFORMED, NOT_A_MAP for a top level that is neither map nor array, TOO_LARGE);
 *          then *reason is set and errstr holds a message such as
 *          "message is not valid msgpack: truncated or invalid at byte 17".
 */
CS_MUSTCHECK int cs_decode_open(cs_decoder_t *dec, const void *value, size_t len,
				cs_reason_t *reason, char *errstr, size_t errstr_size);

/*
 * Validate entry `i` (0 <= i < the count cs_decode_open() returned) of the message last opened
 * and append it to `tuples` as one binary COPY tuple (field count, then each field's length and
 * bytes, in spec column order; a missing optional field is NULL) and its conflict key to `keys`
 * (the key columns' encoded values, each preceded by its 4-byte length). On rejection neither
 * buffer changes. Every per-entry limit is checked here, for this entry alone: NOT_A_MAP for an
 * element that is not a map, TOO_DEEP for nesting beyond max_depth (checked before msgpack-c
 * parses the entry), TOO_LARGE for a field above max_field_bytes, and the type and value
 * reasons. Entries may be decoded in any order; in order each costs O(its size).
 * @returns CS_REASON_OK, or the reason with a message in errstr naming the field, e.g.
 *          "field \"embedding\" has 383 values, expected 384".
 *          Out of memory returns CS_REASON__COUNT (the caller treats it as fatal).
 */
CS_MUSTCHECK cs_reason_t cs_decode_entry(cs_decoder_t *dec, int i, const cs_tablespec_t *spec,
					 cs_buf_t *tuples, cs_buf_t *keys, char *errstr,
					 size_t errstr_size);

/*
 * A tombstone (a message with a null value) for table `spec`: its Kafka key must be the msgpack
 * array of the conflict-key fields in key order, as `copysink produce` and the producer guide
 * key every entry. Appends a tuple holding the key columns (every other column NULL) and its
 * conflict key, exactly as cs_decode_entry() would encode them, so that the batch matches it
 * with entries of the same key. Replaces the message last opened.
 * @returns CS_REASON_OK, or the reason with errstr (a table without a conflict key, no key, a
 *          key that is not such an array, a key value of the wrong type); buffers unchanged.
 *          Out of memory returns CS_REASON__COUNT.
 */
CS_MUSTCHECK cs_reason_t cs_decode_key(cs_decoder_t *dec, const cs_tablespec_t *spec,
				       const void *key, size_t key_len, cs_buf_t *tuples,
				       cs_buf_t *keys, char *errstr, size_t errstr_size);

/*
 * The msgpack bytes of entry `i` of the message last opened (for the dead-letter topic when the
 * message held several entries), appended to `out`: exactly the element's bytes as they are in
 * the message, whatever cs_decode_entry() said of it. Right after cs_decode_entry(i) it costs no
 * scan.
 * @returns 0, or -1 when out of memory or when there is no entry `i`.
 */
CS_MUSTCHECK int cs_decode_entry_bytes(cs_decoder_t *dec, int i, cs_buf_t *out);

/* Number of map keys that matched no column, summed since the decoder was created. */
uint64_t cs_decoder_unknown_fields(const cs_decoder_t *dec);

#endif /* COPYSINK_DECODE_H */
