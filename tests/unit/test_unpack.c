/*
 * test_unpack.c - cs_unpack() against msgpack-c's msgpack_unpack(): the same objects (types,
 * values, sizes, pointers into the bytes but those of empty strings) for random values of every msgpack type and each
 * encoding width, nested up to the limit; the same refusals of truncated, trailing and
 * reserved bytes, and of nesting beyond the limit
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "copysink/unpack.h"

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return rng;
}

static const char blob[70000] = {1, 2, 3};

/* A random integer of a random width (both signs, each boundary of the encodings). */
static void pack_int(msgpack_packer *pk)
{
	static const int64_t edges[] = {0, 1, 127, 128, 255, 256, 65535, 65536, -1, -32, -33,
					-128, -129, -32768, -32769, INT32_MIN, INT64_MIN, INT64_MAX};
	uint64_t r = next();

	switch (r % 8) {
	case 0: msgpack_pack_int64(pk, edges[(r >> 8) % (sizeof(edges) / sizeof(edges[0]))]); break;
	case 1: msgpack_pack_uint64(pk, next()); break;
	case 2: msgpack_pack_int8(pk, (int8_t)next()); break;
	case 3: msgpack_pack_int16(pk, (int16_t)next()); break;
	case 4: msgpack_pack_int32(pk, (int32_t)next()); break;
	case 5: msgpack_pack_int64(pk, (int64_t)next()); break;
	/* the fixed-width forms msgpack-c's packer never picks for small values */
	case 6: msgpack_pack_fix_int16(pk, (int16_t)(next() % 200)); break;
	default: msgpack_pack_fix_uint32(pk, (uint32_t)next()); break;
	}
}

/* A random value; containers while depth allows (past level 4 of one element at most, so that
 * a deep value stays small). */
static void pack_value(msgpack_packer *pk, int depth, int max_depth)
{
	uint64_t r = next() % (depth < max_depth ? 12 : 8);
	size_t n, most = depth < 4 ? 6 : 2;

	switch (r) {
	case 0: msgpack_pack_nil(pk); break;
	case 1: next() & 1 ? msgpack_pack_true(pk) : msgpack_pack_false(pk); break;
	case 2: pack_int(pk); break;
	case 3: {
		uint64_t u = next();
		double d;
		memcpy(&d, &u, sizeof(d));
		next() & 1 ? msgpack_pack_double(pk, d) : msgpack_pack_float(pk, (float)d);
		break;
	}
	case 4: /* str: fixstr, str8, str16, str32 */
		n = (size_t[]){0, 5, 31, 32, 255, 256, 65535, 65536}[next() % 8];
		msgpack_pack_str_with_body(pk, blob, n);
		break;
	case 5:
		n = (size_t[]){0, 1, 255, 256, 65536}[next() % 5];
		msgpack_pack_bin_with_body(pk, blob, n);
		break;
	case 6: /* ext: fixext 1..16, ext8/16/32 */
		n = (size_t[]){1, 2, 4, 8, 16, 0, 3, 17, 300, 65536}[next() % 10];
		msgpack_pack_ext_with_body(pk, blob, n, (int8_t)next());
		break;
	case 7: msgpack_pack_int(pk, -(int)(next() % 32)); break;
	case 8:
	case 9:
		n = (size_t[]){0, 1, 3, 15, 16, 20}[next() % most];
		msgpack_pack_array(pk, n);
		for (size_t i = 0; i < n; i++)
			pack_value(pk, depth + 1, max_depth);
		break;
	default:
		n = (size_t[]){0, 1, 2, 15, 16}[next() % (most - 1)];
		msgpack_pack_map(pk, n);
		for (size_t i = 0; i < 2 * n; i++)
			pack_value(pk, depth + 1, max_depth);
		break;
	}
}

/* The two trees are the same: types, values (bit for bit), sizes, the same pointers. */
static void assert_same(const msgpack_object *a, const msgpack_object *b)
{
	assert_int_equal(a->type, b->type);
	switch (a->type) {
	case MSGPACK_OBJECT_NIL: break;
	case MSGPACK_OBJECT_BOOLEAN: assert_int_equal(a->via.boolean, b->via.boolean); break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER: assert_true(a->via.u64 == b->via.u64); break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: assert_true(a->via.i64 == b->via.i64); break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		assert_memory_equal(&a->via.f64, &b->via.f64, sizeof(double));
		break;
	/* the pointer of an empty str, bin or ext is msgpack-c's whim (NULL after a fixstr, the
	 * length byte after a str8): nothing reads it */
	case MSGPACK_OBJECT_STR:
	case MSGPACK_OBJECT_BIN:
		assert_int_equal(a->via.str.size, b->via.str.size);
		if (a->via.str.size > 0)
			assert_ptr_equal(a->via.str.ptr, b->via.str.ptr);
		break;
	case MSGPACK_OBJECT_EXT:
		assert_int_equal(a->via.ext.type, b->via.ext.type);
		assert_int_equal(a->via.ext.size, b->via.ext.size);
		if (a->via.ext.size > 0)
			assert_ptr_equal(a->via.ext.ptr, b->via.ext.ptr);
		break;
	case MSGPACK_OBJECT_ARRAY:
		assert_int_equal(a->via.array.size, b->via.array.size);
		for (uint32_t i = 0; i < a->via.array.size; i++)
			assert_same(&a->via.array.ptr[i], &b->via.array.ptr[i]);
		break;
	case MSGPACK_OBJECT_MAP:
		assert_int_equal(a->via.map.size, b->via.map.size);
		for (uint32_t i = 0; i < a->via.map.size; i++) {
			assert_same(&a->via.map.ptr[i].key, &b->via.map.ptr[i].key);
			assert_same(&a->via.map.ptr[i].val, &b->via.map.ptr[i].val);
		}
		break;
	default: fail_msg("type %d", a->type);
	}
}

/* What msgpack_unpack() makes of data[0..len): 0 with the object when it is one whole value. */
static int reference(const char *data, size_t len, msgpack_zone *zone, msgpack_object *o)
{
	size_t off = 0;

	return msgpack_unpack(data, len, &off, zone, o) == MSGPACK_UNPACK_SUCCESS && off == len
		       ? 0
		       : -1;
}

static void same_objects(void **state)
{
	msgpack_sbuffer sbuf;
	msgpack_packer pk;
	msgpack_zone za, zb;

	msgpack_sbuffer_init(&sbuf);
	msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
	assert_true(msgpack_zone_init(&za, 4096));
	assert_true(msgpack_zone_init(&zb, 4096));
	for (int i = 0; i < 20000; i++) {
		msgpack_object a, b;

		msgpack_sbuffer_clear(&sbuf);
		pack_value(&pk, 0, i % 5 == 0 ? CS_UNPACK_MAX_DEPTH : 4);
		msgpack_zone_clear(&za), msgpack_zone_clear(&zb);
		assert_int_equal(reference(sbuf.data, sbuf.size, &za, &a), 0);
		assert_int_equal(cs_unpack(sbuf.data, sbuf.size, CS_UNPACK_MAX_DEPTH, &zb, &b), 0);
		assert_same(&a, &b);
		/* every cut is refused by both, and so is a byte after the value */
		for (size_t cut = 0; cut < sbuf.size; cut += 1 + sbuf.size / 50) {
			msgpack_zone_clear(&za), msgpack_zone_clear(&zb);
			assert_int_equal(cs_unpack(sbuf.data, cut, CS_UNPACK_MAX_DEPTH, &zb, &b), -1);
			assert_int_equal(reference(sbuf.data, cut, &za, &a), -1);
		}
		msgpack_sbuffer_write(&sbuf, "\xc0", 1);
		assert_int_equal(cs_unpack(sbuf.data, sbuf.size, CS_UNPACK_MAX_DEPTH, &zb, &b), -1);
	}
	msgpack_zone_destroy(&za), msgpack_zone_destroy(&zb);
	msgpack_sbuffer_destroy(&sbuf);
	(void)state;
}

/* Random bytes (at most 32, so no nesting reaches beyond the limit): both accept the same
 * ones and build the same objects from them; the reserved byte is refused. */
static void random_bytes(void **state)
{
	unsigned char data[CS_UNPACK_MAX_DEPTH];
	msgpack_zone za, zb;
	int accepted = 0;

	assert_true(msgpack_zone_init(&za, 4096));
	assert_true(msgpack_zone_init(&zb, 4096));
	for (int i = 0; i < 50000; i++) {
		for (size_t k = 0; k < sizeof(data); k++) { /* small heads (containers, ints) often */
			data[k] = (unsigned char)(next() % 4 ? next() & 0x9f : next());
			/* no 32-bit counts: msgpack_unpack() would ask for up to 100 GB first (under
			 * ASan an abort); nesting_limit checks that cs_unpack() refuses them unasked */
			if (data[k] == 0xdd || data[k] == 0xdf)
				data[k] = 0xc0;
		}
		for (size_t len = 1; len <= sizeof(data); len++) { /* every prefix */
			msgpack_object a, b;
			int ra, rb;

			msgpack_zone_clear(&za), msgpack_zone_clear(&zb);
			ra = reference((const char *)data, len, &za, &a);
			rb = cs_unpack(data, len, CS_UNPACK_MAX_DEPTH, &zb, &b);
			if (ra != rb)
				fail_msg("case %d/%zu: msgpack_unpack %d, cs_unpack %d", i, len, ra, rb);
			if (ra == 0)
				assert_same(&a, &b), accepted++;
		}
	}
	assert_true(accepted > 10000);
	assert_int_equal(cs_unpack("\xc1", 1, CS_UNPACK_MAX_DEPTH, &zb, &(msgpack_object){0}), -1);
	msgpack_zone_destroy(&za), msgpack_zone_destroy(&zb);
	(void)state;
}

static void nesting_limit(void **state)
{
	unsigned char deep[CS_UNPACK_MAX_DEPTH + 2];
	msgpack_zone z;
	msgpack_object o;

	assert_true(msgpack_zone_init(&z, 4096));
	memset(deep, 0x91, sizeof(deep)); /* arrays of one element */
	deep[CS_UNPACK_MAX_DEPTH] = 0x01;
	assert_int_equal(cs_unpack(deep, CS_UNPACK_MAX_DEPTH + 1, CS_UNPACK_MAX_DEPTH, &z, &o), 0);
	deep[CS_UNPACK_MAX_DEPTH] = 0x91;
	deep[CS_UNPACK_MAX_DEPTH + 1] = 0x01;
	assert_int_equal(cs_unpack(deep, CS_UNPACK_MAX_DEPTH + 2, CS_UNPACK_MAX_DEPTH, &z, &o), -1);
	/* a lower limit; an empty container counts as a level */
	assert_int_equal(cs_unpack("\x91\x91\x01", 3, 2, &z, &o), 0);
	assert_int_equal(cs_unpack("\x91\x91\x91\x01", 4, 2, &z, &o), -1);
	assert_int_equal(cs_unpack("\x91\x90", 2, 2, &z, &o), 0);
	assert_int_equal(cs_unpack("\x91\x91\x90", 3, 2, &z, &o), -1);
	/* a count no bytes could honour is refused before any allocation */
	assert_int_equal(cs_unpack("\xdd\xff\xff\xff\xff\x01", 6, CS_UNPACK_MAX_DEPTH, &z, &o), -1);
	msgpack_zone_destroy(&z);
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(same_objects),
		cmocka_unit_test(random_bytes),
		cmocka_unit_test(nesting_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
