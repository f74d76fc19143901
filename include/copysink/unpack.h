/*
 * unpack.h - one msgpack value into msgpack-c's objects, in one pass over its bytes
 *
 * The same objects as msgpack-c's msgpack_unpack() builds (types, values, str/bin/ext pointing
 * into the bytes, arrays and maps allocated from the zone), for the decoder's hot path: the
 * usual message is checked and built in this one pass (bench/results/cpu_profile.md). Tombstone
 * keys keep using msgpack-c.
 *
 * Any thread; the zone is the caller's and is used by one thread at a time.
 */
#ifndef COPYSINK_UNPACK_H
#define COPYSINK_UNPACK_H

#include <stddef.h>

#include <msgpack.h>

#include "copysink/buf.h"

/* Containers nested deeper than this are refused, as msgpack-c refuses them (its stack). */
#define CS_UNPACK_MAX_DEPTH 32

/*
 * Build `out` from data[0..len), which must be exactly one msgpack value: complete, nothing
 * after it, no byte 0xc1, at most max_depth containers deep (an empty one counts; at most
 * CS_UNPACK_MAX_DEPTH whatever max_depth says). Its str, bin and ext
 * objects point into `data`, which must outlive them; arrays and maps are allocated from
 * `zone` (the caller clears it).
 * @returns 0, or -1 when data is not such a value or the zone could not grow (out is then
 *          partly built: do not use it).
 */
CS_MUSTCHECK int cs_unpack(const void *data, size_t len, int max_depth, msgpack_zone *zone,
			   msgpack_object *out);

#endif /* COPYSINK_UNPACK_H */
