/*
 * pgbinary.h - PostgreSQL binary COPY encodings of uuid, timestamptz, date, numeric, bytea and
 * the numeric arrays
 *
 * The decoder hands each present, non-nil field of one of these column types to
 * cs_pgbinary_put(), which checks the msgpack value's form and range and appends the field (its
 * 4-byte length, then the bytes of the type's binary send format) to the batch's tuple buffer.
 * Nothing is allocated besides the buffer's own growth. The accepted forms, ranges and reasons
 * are those of docs/FORMAT.md ("Field types"):
 *
 *   uuid                 str "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (hex, any case), bin of 16
 *   timestamptz          RFC 3339 str with Z or a ±HH:MM offset, int of epoch milliseconds,
 *                        or the msgpack timestamp ext (type -1, 4, 8 or 12 bytes)
 *   date                 str "YYYY-MM-DD", or an int / timestamp ext at midnight UTC
 *   numeric              decimal str ("-123.4500", "1.5e-3"), int, or finite float
 *   bytea                bin
 *   double precision[]   array of finite numbers or nil (a NULL element)
 *   integer[], bigint[]  array of ints in the element's range or nil
 *
 * Stateless and thread-safe.
 */
#ifndef COPYSINK_PGBINARY_H
#define COPYSINK_PGBINARY_H

#include <stddef.h>

#include "copysink/buf.h"
#include "copysink/decode.h"
#include "copysink/tablespec.h"

struct msgpack_object;

/*
 * Append the binary COPY field of `o` (present, not nil) for column `col`, whose type is
 * one of the above. `limit` bounds the encoded field (bytea, the arrays, a numeric's text).
 * Array element OIDs come from col->elem_oid (the catalog's), else the built-in ones.
 * @returns CS_REASON_OK, or the reason (WRONG_TYPE, INVALID_FORMAT, OUT_OF_RANGE, NOT_FINITE,
 *          TOO_LARGE) with errstr naming the field, e.g.
 *          "field \"at\" has no UTC offset (end it with Z or +HH:MM)"; `out` may then hold a
 *          partial field, which the caller truncates. Out of memory returns CS_REASON__COUNT.
 */
CS_MUSTCHECK cs_reason_t cs_pgbinary_put(const cs_column_t *col, const struct msgpack_object *o,
					 size_t limit, cs_buf_t *out, char *errstr,
					 size_t errstr_size);

/*
 * Make the conflict-key bytes of one encoded field (`field`, `len` bytes, its 4-byte length
 * included) equal for equal values: a numeric's display scale is cleared, so that 1.5 and
 * 1.50, which PostgreSQL's unique index holds equal, are one key in the batch too, and a float's
 * (or a double precision[] element's) -0 becomes +0. Other key types are already canonical and
 * left as they are (jsonb, whose spellings of one document differ, is refused as a key).
 */
void cs_pgbinary_canonical_key(const cs_column_t *col, char *field, size_t len);

#endif /* COPYSINK_PGBINARY_H */
