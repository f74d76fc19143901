/*
 * unpack.c - one msgpack value into msgpack-c's objects, in one pass over its bytes
 *
 * A recursive descent over the msgpack format, every length checked against the bytes that
 * remain before it is used, the nesting limited. For the benchmark's entry (30 values) under
 * callgrind, msgpack_unpack() took 2,200 instructions after the decoder's own pre-scan had
 * taken 2,100 to check it; this one pass does both in 1,540 (bench/results/cpu_profile.md). The
 * objects are msgpack-c's own, built as its unpack template builds them: non-negative signed
 * integers are POSITIVE_INTEGER, a float32 is FLOAT32 with its value widened to double, an
 * ext's first byte is its type.
 */
#include "copysink/unpack.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef struct reader {
	const unsigned char *p, *end;
	msgpack_zone *zone;
	int max_depth;
} reader_t;

/* A big-endian unsigned integer of n bytes (1, 2, 4, 8); false if truncated. */
static bool be_uint(reader_t *r, int n, uint64_t *v)
{
	if (r->end - r->p < n)
		return false;
	*v = 0;
	for (int i = 0; i < n; i++)
		*v = *v << 8 | *r->p++;
	return true;
}

/* n payload bytes at the reader, taken; false if fewer remain. */
static bool payload(reader_t *r, uint64_t n, const char **ptr)
{
	if ((uint64_t)(r->end - r->p) < n)
		return false;
	*ptr = (const char *)r->p;
	r->p += n;
	return true;
}

static bool value(reader_t *r, msgpack_object *o, int depth);

/* A str, bin or ext of n bytes (an ext: its type byte, then n data bytes). */
static bool raw(reader_t *r, msgpack_object_type type, uint64_t n, msgpack_object *o)
{
	const char *ptr;

	o->type = type;
	if (type == MSGPACK_OBJECT_EXT) {
		if (!payload(r, n + 1, &ptr))
			return false;
		o->via.ext.type = (int8_t)ptr[0];
		o->via.ext.ptr = ptr + 1;
		o->via.ext.size = (uint32_t)n;
		return true;
	}
	if (!payload(r, n, &ptr))
		return false;
	o->via.str.ptr = ptr; /* str and bin share their layout */
	o->via.str.size = (uint32_t)n;
	return true;
}

/* An array or a map of n elements (pairs for a map), opening level depth + 1. Each element
 * takes a byte at least, so a count above the bytes left is refused before any allocation. */
static bool container(reader_t *r, bool map, uint64_t n, msgpack_object *o, int depth)
{
	size_t each = map ? sizeof(msgpack_object_kv) : sizeof(msgpack_object);

	if (depth + 1 > r->max_depth || n > (uint64_t)(r->end - r->p))
		return false;
	if (map) {
		msgpack_object_kv *kv = msgpack_zone_malloc(r->zone, (size_t)n * each);
		o->type = MSGPACK_OBJECT_MAP;
		o->via.map.size = (uint32_t)n;
		o->via.map.ptr = kv;
		if (kv == NULL)
			return false;
		for (uint64_t i = 0; i < n; i++)
			if (!value(r, &kv[i].key, depth + 1) || !value(r, &kv[i].val, depth + 1))
				return false;
		return true;
	}
	o->type = MSGPACK_OBJECT_ARRAY;
	o->via.array.size = (uint32_t)n;
	o->via.array.ptr = msgpack_zone_malloc(r->zone, (size_t)n * each);
	if (o->via.array.ptr == NULL)
		return false;
	for (uint64_t i = 0; i < n; i++)
		if (!value(r, &o->via.array.ptr[i], depth + 1))
			return false;
	return true;
}

/* An integer read as n bytes: unsigned, or signed (two's complement) when `is_signed`. */
static bool integer(reader_t *r, int n, bool is_signed, msgpack_object *o)
{
	uint64_t u;
	int64_t v;

	if (!be_uint(r, n, &u))
		return false;
	if (is_signed && n < 8 && (u >> (8 * n - 1)) != 0)
		u |= ~(uint64_t)0 << (8 * n); /* sign-extend */
	v = (int64_t)u;
	if (is_signed && v < 0) {
		o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
		o->via.i64 = v;
	} else {
		o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
		o->via.u64 = u;
	}
	return true;
}

/* A float32 (n 4) or a float64 (n 8). */
static bool floating(reader_t *r, int n, msgpack_object *o)
{
	uint64_t u;

	if (!be_uint(r, n, &u))
		return false;
	if (n == 4) {
		uint32_t u32 = (uint32_t)u;
		float f;
		memcpy(&f, &u32, sizeof(f));
		o->type = MSGPACK_OBJECT_FLOAT32;
		o->via.f64 = f;
	} else {
		o->type = MSGPACK_OBJECT_FLOAT64;
		memcpy(&o->via.f64, &u, sizeof(o->via.f64));
	}
	return true;
}

/* One value of any type at level `depth` (that of the container holding it). */
static bool value(reader_t *r, msgpack_object *o, int depth)
{
	unsigned char b;
	uint64_t n;

	if (r->p >= r->end)
		return false;
	b = *r->p++;
	if (b <= 0x7f) {
		o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
		o->via.u64 = b;
		return true;
	}
	if (b >= 0xe0) {
		o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
		o->via.i64 = (int8_t)b;
		return true;
	}
	if (b <= 0x8f)
		return container(r, true, b & 0x0f, o, depth);
	if (b <= 0x9f)
		return container(r, false, b & 0x0f, o, depth);
	if (b <= 0xbf)
		return raw(r, MSGPACK_OBJECT_STR, b & 0x1f, o);
	switch (b) {
	case 0xc0: o->type = MSGPACK_OBJECT_NIL; return true;
	case 0xc2:
	case 0xc3:
		o->type = MSGPACK_OBJECT_BOOLEAN;
		o->via.boolean = b == 0xc3;
		return true;
	case 0xc4: return be_uint(r, 1, &n) && raw(r, MSGPACK_OBJECT_BIN, n, o);
	case 0xc5: return be_uint(r, 2, &n) && raw(r, MSGPACK_OBJECT_BIN, n, o);
	case 0xc6: return be_uint(r, 4, &n) && raw(r, MSGPACK_OBJECT_BIN, n, o);
	case 0xc7: return be_uint(r, 1, &n) && raw(r, MSGPACK_OBJECT_EXT, n, o);
	case 0xc8: return be_uint(r, 2, &n) && raw(r, MSGPACK_OBJECT_EXT, n, o);
	case 0xc9: return be_uint(r, 4, &n) && raw(r, MSGPACK_OBJECT_EXT, n, o);
	case 0xca: return floating(r, 4, o);
	case 0xcb: return floating(r, 8, o);
	case 0xcc: return integer(r, 1, false, o);
	case 0xcd: return integer(r, 2, false, o);
	case 0xce: return integer(r, 4, false, o);
	case 0xcf: return integer(r, 8, false, o);
	case 0xd0: return integer(r, 1, true, o);
	case 0xd1: return integer(r, 2, true, o);
	case 0xd2: return integer(r, 4, true, o);
	case 0xd3: return integer(r, 8, true, o);
	case 0xd4: return raw(r, MSGPACK_OBJECT_EXT, 1, o);
	case 0xd5: return raw(r, MSGPACK_OBJECT_EXT, 2, o);
	case 0xd6: return raw(r, MSGPACK_OBJECT_EXT, 4, o);
	case 0xd7: return raw(r, MSGPACK_OBJECT_EXT, 8, o);
	case 0xd8: return raw(r, MSGPACK_OBJECT_EXT, 16, o);
	case 0xd9: return be_uint(r, 1, &n) && raw(r, MSGPACK_OBJECT_STR, n, o);
	case 0xda: return be_uint(r, 2, &n) && raw(r, MSGPACK_OBJECT_STR, n, o);
	case 0xdb: return be_uint(r, 4, &n) && raw(r, MSGPACK_OBJECT_STR, n, o);
	case 0xdc: return be_uint(r, 2, &n) && container(r, false, n, o, depth);
	case 0xdd: return be_uint(r, 4, &n) && container(r, false, n, o, depth);
	case 0xde: return be_uint(r, 2, &n) && container(r, true, n, o, depth);
	case 0xdf: return be_uint(r, 4, &n) && container(r, true, n, o, depth);
	default: return false; /* 0xc1 is never used */
	}
}

int cs_unpack(const void *data, size_t len, int max_depth, msgpack_zone *zone,
	      msgpack_object *out)
{
	reader_t r = {.p = data, .end = (const unsigned char *)data + len, .zone = zone,
		      .max_depth = max_depth < CS_UNPACK_MAX_DEPTH ? max_depth : CS_UNPACK_MAX_DEPTH};

	if (data == NULL || !value(&r, out, 0) || r.p != r.end)
		return -1;
	return 0;
}
