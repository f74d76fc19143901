/*
 * test_decode.c - the decoder: every rejection reason, the binary COPY encoders byte for byte,
 * JSON escaping, the compact embedding, buffers untouched on rejection, hostile lengths
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

#include "copysink/decode.h"

/* ---------------------------------------------------------------- fixtures */

/* One spec with a column of every logical type; dim 3. Key: id. */
static cs_tablespec_t spec;
static cs_decoder_t *dec;
static cs_buf_t tuples, keys;
static char err[256];

/* A message under construction (msgpack-c's own packer, so inputs are independent of the
 * decoder under test). */
static msgpack_sbuffer sbuf;
static msgpack_packer pk;

static int setup(void **state)
{
	cs_decode_limits_t limits;
	char e[128];

	memset(&spec, 0, sizeof(spec));
	snprintf(spec.name, sizeof(spec.name), "t");
	spec.dim = 3;
	assert_int_equal(cs_tablespec_parse_columns(&spec,
						    "id bigint not null, name text not null, "
						    "small smallint, n integer, f real, "
						    "d double precision, ok boolean, meta jsonb, "
						    "tags text[], embedding embedding",
						    "id", e, sizeof(e)),
			 0);
	spec.dim = 3;
	cs_decode_limits_default(&limits);
	limits.max_field_bytes = 256;
	limits.max_entries = 4;
	limits.max_message_bytes = 4096;
	limits.max_depth = 8;
	dec = cs_decoder_new(&limits);
	assert_non_null(dec);
	cs_buf_init(&tuples);
	cs_buf_init(&keys);
	msgpack_sbuffer_init(&sbuf);
	msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
	err[0] = '\0';
	(void)state;
	return 0;
}

static int teardown(void **state)
{
	cs_decoder_destroy(dec);
	cs_buf_cleanup(&tuples);
	cs_buf_cleanup(&keys);
	msgpack_sbuffer_destroy(&sbuf);
	(void)state;
	return 0;
}

static void pack_str(const char *s) { msgpack_pack_str_with_body(&pk, s, strlen(s)); }

static void pack_str_n(const char *s, size_t n) { msgpack_pack_str_with_body(&pk, s, n); }

/* Pack the minimal valid entry's required pairs (id, name); the caller declared the map with
 * 2 + extra pairs and packs the extra ones after. */
static void pack_required(int64_t id, const char *name)
{
	pack_str("id");
	msgpack_pack_int64(&pk, id);
	pack_str("name");
	pack_str(name);
}

/* Open the packed message; returns the entry count or -1 (reason in *r). */
static int open_msg(cs_reason_t *r)
{
	*r = CS_REASON_OK;
	return cs_decode_open(dec, sbuf.data, sbuf.size, r, err, sizeof(err));
}

/* Open the packed message (which must open) and decode entry 0. */
static cs_reason_t decode_one(void)
{
	cs_reason_t r;

	assert_int_equal(open_msg(&r), 1);
	return cs_decode_entry(dec, 0, &spec, &tuples, &keys, err, sizeof(err));
}

/* Entry {id: 1, name: "n", <field>: <value packed by fn>} decoded; returns the reason. */
static cs_reason_t decode_field(const char *field, void (*fn)(void))
{
	msgpack_pack_map(&pk, 3);
	pack_required(1, "n");
	pack_str(field);
	fn();
	return decode_one();
}

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The bytes of column `col` (0-based) of the single tuple in `tuples`; *len = -1 for NULL. */
static const unsigned char *field_of(int col, int32_t *len)
{
	const unsigned char *p = (const unsigned char *)tuples.data;

	assert_true(tuples.len >= 2);
	assert_int_equal(p[0] << 8 | p[1], spec.ncols);
	p += 2;
	for (int c = 0;; c++) {
		int32_t n = (int32_t)be32(p);
		p += 4;
		if (c == col) {
			*len = n;
			return p;
		}
		if (n > 0)
			p += n;
		assert_true(p <= (const unsigned char *)tuples.data + tuples.len);
	}
}

/* Column `col` must hold exactly `want` (n bytes). */
static void assert_field(int col, const void *want, size_t n)
{
	int32_t len;
	const unsigned char *p = field_of(col, &len);

	assert_int_equal(len, (int32_t)n);
	assert_memory_equal(p, want, n);
}

/* ---------------------------------------------------------------- valid entries */

static void full_entry_exact_bytes(void **state)
{
	static const unsigned char small[] = {0xff, 0xfe};             /* -2 */
	static const unsigned char n[] = {0x00, 0x01, 0x00, 0x00};      /* 65536 */
	static const unsigned char f[] = {0x3f, 0xc0, 0x00, 0x00};      /* 1.5f */
	static const unsigned char d[] = {0xc0, 0x04, 0, 0, 0, 0, 0, 0}; /* -2.5 */
	static const unsigned char id[] = {0, 0, 0, 0x01, 0, 0, 0, 0x02}; /* 2^32 + 2 */
	static const unsigned char meta[] = "\1{\"a\":[1,-2,null,true],\"b\":{\"c\":\"x\"}}";
	static const unsigned char tags[] = {
		0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 25, /* ndim 1, no nulls, text */
		0, 0, 0, 2, 0, 0, 0, 1,              /* 2 elements, lower bound 1 */
		0, 0, 0, 1, 'a', 0, 0, 0, 2, 'b', 'c'};
	static const unsigned char emb[] = {
		0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x02, 0xbc, /* ndim 1, no nulls, float4 (700) */
		0, 0, 0, 3, 0, 0, 0, 1,                   /* 3 elements, lower bound 1 */
		0, 0, 0, 4, 0x3f, 0x80, 0, 0,             /* 1.0 */
		0, 0, 0, 4, 0xc0, 0x00, 0, 0,             /* -2.0 */
		0, 0, 0, 4, 0x3e, 0x80, 0, 0};            /* 0.25 */
	int32_t len;

	msgpack_pack_map(&pk, 11);
	pack_required(((int64_t)1 << 32) + 2, "héllo");
	pack_str("small"), msgpack_pack_int(&pk, -2);
	pack_str("n"), msgpack_pack_uint32(&pk, 65536);
	pack_str("f"), msgpack_pack_float(&pk, 1.5f);
	pack_str("d"), msgpack_pack_double(&pk, -2.5);
	pack_str("ok"), msgpack_pack_true(&pk);
	pack_str("meta");
	msgpack_pack_map(&pk, 2);
	pack_str("a");
	msgpack_pack_array(&pk, 4);
	msgpack_pack_int(&pk, 1), msgpack_pack_int(&pk, -2), msgpack_pack_nil(&pk);
	msgpack_pack_true(&pk);
	pack_str("b");
	msgpack_pack_map(&pk, 1);
	pack_str("c"), pack_str("x");
	pack_str("tags");
	msgpack_pack_array(&pk, 2);
	pack_str("a"), pack_str("bc");
	pack_str("embedding");
	msgpack_pack_array(&pk, 3);
	msgpack_pack_float(&pk, 1.0f), msgpack_pack_int(&pk, -2), msgpack_pack_double(&pk, 0.25);
	pack_str("unknown"), pack_str("ignored");

	assert_int_equal(decode_one(), CS_REASON_OK);
	assert_field(0, id, 8);
	assert_field(1, "h\xc3\xa9llo", 6);
	assert_field(2, small, 2);
	assert_field(3, n, 4);
	assert_field(4, f, 4);
	assert_field(5, d, 8);
	assert_field(6, "\1", 1);
	assert_field(7, meta, sizeof(meta) - 1);
	assert_field(8, tags, sizeof(tags));
	assert_field(9, emb, sizeof(emb));
	/* the tuple ends right after the last field */
	field_of(9, &len);
	assert_int_equal((const char *)field_of(9, &len) + len, tuples.data + tuples.len);
	/* the key is the id column with its length */
	assert_int_equal(keys.len, 12);
	assert_memory_equal(keys.data, "\0\0\0\x08", 4);
	assert_memory_equal(keys.data + 4, id, 8);
	assert_int_equal(cs_decoder_unknown_fields(dec), 1);
}

static void optional_fields_missing_or_nil_are_null(void **state)
{
	int32_t len;

	msgpack_pack_map(&pk, 3);
	pack_required(7, "x");
	pack_str("meta"), msgpack_pack_nil(&pk);
	assert_int_equal(decode_one(), CS_REASON_OK);
	for (int c = 2; c < spec.ncols; c++) {
		field_of(c, &len);
		assert_int_equal(len, -1);
	}
}

static void compact_embedding_is_little_endian_float32(void **state)
{
	/* 1.0, -2.0, 0.25 as little-endian float32 */
	static const unsigned char bin[] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 0, 0, 0x80, 0x3e};
	static const unsigned char vec[] = {0, 3, 0, 0, /* dim 3, unused 0 */
					    0x3f, 0x80, 0, 0, 0xc0, 0, 0, 0, 0x3e, 0x80, 0, 0};

	spec.cols[9].enc = CS_ENC_VECTOR; /* pgvector's binary format this time */
	msgpack_pack_map(&pk, 3);
	pack_required(1, "n");
	pack_str("embedding");
	msgpack_pack_bin_with_body(&pk, bin, sizeof(bin));
	assert_int_equal(decode_one(), CS_REASON_OK);
	assert_field(9, vec, sizeof(vec));
}

static void json_escaping_and_numbers(void **state)
{
	static const char want[] = "\1{\"q\\\"b\\\\\":\"l1\\nl2\\t\\r\\b\\f\\u0001\\u001f\xe6\x9d\xb1\","
				   "\"n\":[0.1,1e+300,-9223372036854775808,18446744073709551615,"
				   "3,-0.5,0,-1,10,-10],\"o\":{},\"e\":[]}";
	static const char s[] = "l1\nl2\t\r\b\f\x01\x1f\xe6\x9d\xb1";

	msgpack_pack_map(&pk, 3);
	pack_required(1, "n");
	pack_str("meta");
	msgpack_pack_map(&pk, 4);
	pack_str("q\"b\\");
	pack_str_n(s, sizeof(s) - 1);
	pack_str("n");
	msgpack_pack_array(&pk, 10);
	msgpack_pack_double(&pk, 0.1);
	msgpack_pack_double(&pk, 1e300);
	msgpack_pack_int64(&pk, INT64_MIN);
	msgpack_pack_uint64(&pk, UINT64_MAX);
	msgpack_pack_float(&pk, 3.0f);
	msgpack_pack_float(&pk, -0.5f);
	msgpack_pack_int(&pk, 0);
	msgpack_pack_int(&pk, -1);
	msgpack_pack_int(&pk, 10);
	msgpack_pack_int(&pk, -10);
	pack_str("o"), msgpack_pack_map(&pk, 0);
	pack_str("e"), msgpack_pack_array(&pk, 0);
	assert_int_equal(decode_one(), CS_REASON_OK);
	assert_field(7, want, sizeof(want) - 1);
}

static void json_column_has_no_version_byte(void **state)
{
	spec.cols[7].enc = CS_ENC_JSON;
	msgpack_pack_map(&pk, 3);
	pack_required(1, "n");
	pack_str("meta"), msgpack_pack_int(&pk, 5);
	assert_int_equal(decode_one(), CS_REASON_OK);
	assert_field(7, "5", 1);
}

static void empty_text_array(void **state)
{
	static const unsigned char want[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25};

	msgpack_pack_map(&pk, 3);
	pack_required(1, "n");
	pack_str("tags"), msgpack_pack_array(&pk, 0);
	assert_int_equal(decode_one(), CS_REASON_OK);
	assert_field(8, want, sizeof(want));
}

/* Text longer than eight bytes, ASCII runs around two- and four-byte characters, kept byte for
 * byte (the UTF-8 check takes ASCII eight bytes at a time). */
static void long_text_accepted(void **state)
{
	static const char text[] = "abcdefgh\xc3\xa9ijklmnop\xf0\x9f\x98\x80qrstuvwxyz0123456789";

	msgpack_pack_map(&pk, 2);
	pack_required(1, text);
	assert_int_equal(decode_one(), CS_REASON_OK);
	assert_field(1, text, sizeof(text) - 1);
	(void)state;
}

static void integer_bounds_accepted(void **state)
{
	static const unsigned char min16[] = {0x80, 0x00}, max32[] = {0x7f, 0xff, 0xff, 0xff};

	msgpack_pack_map(&pk, 4);
	pack_required(INT64_MIN, "n");
	pack_str("small"), msgpack_pack_int(&pk, INT16_MIN);
	pack_str("n"), msgpack_pack_int64(&pk, INT32_MAX);
	assert_int_equal(decode_one(), CS_REASON_OK);
	assert_field(0, "\x80\0\0\0\0\0\0\0", 8);
	assert_field(2, min16, 2);
	assert_field(3, max32, 4);
}

static void array_of_entries_one_bad(void **state)
{
	cs_reason_t r;
	cs_buf_t raw;
	msgpack_sbuffer one;
	msgpack_packer p1;

	msgpack_pack_array(&pk, 3);
	for (int i = 0; i < 3; i++) {
		msgpack_pack_map(&pk, 2);
		pack_str("id");
		if (i == 1)
			pack_str("not a number");
		else
			msgpack_pack_int(&pk, i);
		pack_str("name"), pack_str("x");
	}
	assert_int_equal(open_msg(&r), 3);
	assert_int_equal(cs_decode_entry(dec, 0, &spec, &tuples, &keys, err, sizeof(err)),
			 CS_REASON_OK);
	size_t t1 = tuples.len, k1 = keys.len;
	assert_int_equal(cs_decode_entry(dec, 1, &spec, &tuples, &keys, err, sizeof(err)),
			 CS_REASON_WRONG_TYPE);
	assert_string_equal(err, "field \"id\" must be an integer, got str");
	assert_int_equal(tuples.len, t1);
	assert_int_equal(keys.len, k1);
	assert_int_equal(cs_decode_entry(dec, 2, &spec, &tuples, &keys, err, sizeof(err)),
			 CS_REASON_OK);
	assert_int_equal(tuples.len, 2 * t1);
	assert_int_equal(cs_decode_entry(dec, 3, &spec, &tuples, &keys, err, sizeof(err)),
			 CS_REASON_MALFORMED);

	/* the bad entry's own bytes, for the dead-letter topic */
	msgpack_sbuffer_init(&one);
	msgpack_packer_init(&p1, &one, msgpack_sbuffer_write);
	msgpack_pack_map(&p1, 2);
	msgpack_pack_str_with_body(&p1, "id", 2);
	msgpack_pack_str_with_body(&p1, "not a number", 12);
	msgpack_pack_str_with_body(&p1, "name", 4);
	msgpack_pack_str_with_body(&p1, "x", 1);
	cs_buf_init(&raw);
	assert_int_equal(cs_decode_entry_bytes(dec, 1, &raw), 0);
	assert_int_equal(raw.len, one.size);
	assert_memory_equal(raw.data, one.data, one.size);
	cs_buf_cleanup(&raw);
	msgpack_sbuffer_destroy(&one);
}

/* ---------------------------------------------------------------- whole-message rejections */

static void open_rejects(const void *msg, size_t len, cs_reason_t want, const char *errpart)
{
	cs_reason_t r;

	assert_int_equal(cs_decode_open(dec, msg, len, &r, err, sizeof(err)), -1);
	assert_int_equal(r, want);
	if (errpart != NULL && strstr(err, errpart) == NULL)
		fail_msg("error \"%s\" does not mention \"%s\"", err, errpart);
}

static void malformed_messages(void **state)
{
	/* map of 1 pair whose value is missing */
	open_rejects("\x81\xa2id", 4, CS_REASON_MALFORMED, "truncated or invalid at byte 4");
	/* str32 declaring 4 GiB with 2 bytes present: no allocation, no read past the end */
	open_rejects("\xdb\xff\xff\xff\xff" "ab", 7, CS_REASON_MALFORMED, "truncated");
	/* array32 declaring 2^32-1 elements */
	open_rejects("\xdd\xff\xff\xff\xff\x80", 6, CS_REASON_MALFORMED, "truncated");
	/* map32 declaring 2^32-1 pairs */
	open_rejects("\xdf\xff\xff\xff\xff", 5, CS_REASON_MALFORMED, "truncated");
	/* bin32 and ext32 declaring huge bodies */
	open_rejects("\xc6\x7f\xff\xff\xff", 5, CS_REASON_MALFORMED, "truncated");
	open_rejects("\xc9\xff\xff\xff\xff\x01", 6, CS_REASON_MALFORMED, "truncated");
	/* the never-used byte 0xc1 */
	open_rejects("\xc1", 1, CS_REASON_MALFORMED, "invalid at byte 1");
	/* a valid map followed by more bytes */
	open_rejects("\x80\x80", 2, CS_REASON_MALFORMED, "1 trailing bytes");
	open_rejects("", 0, CS_REASON_MALFORMED, "empty");
	/* an empty array holds no entry */
	open_rejects("\x90", 1, CS_REASON_MALFORMED, "empty array");
}

static void message_not_a_map(void **state)
{
	open_rejects("\x05", 1, CS_REASON_NOT_A_MAP, "neither a map nor an array");
	open_rejects("\xa1x", 2, CS_REASON_NOT_A_MAP, NULL);
	open_rejects("\xc0", 1, CS_REASON_NOT_A_MAP, NULL);
}

static void entry_not_a_map(void **state)
{
	cs_reason_t r;

	msgpack_pack_array(&pk, 2);
	msgpack_pack_map(&pk, 0);
	msgpack_pack_int(&pk, 3);
	assert_int_equal(open_msg(&r), 2);
	assert_int_equal(cs_decode_entry(dec, 1, &spec, &tuples, &keys, err, sizeof(err)),
			 CS_REASON_NOT_A_MAP);
	assert_int_equal(tuples.len, 0);
}

static void too_deep(void **state)
{
	cs_reason_t r;

	/* a message that is one map: the depth limit (8) is its entry's, checked per entry */
	msgpack_pack_map(&pk, 3);
	pack_required(1, "n");
	pack_str("meta");
	for (int i = 0; i < 12; i++)
		msgpack_pack_array(&pk, 1);
	msgpack_pack_nil(&pk);
	assert_int_equal(decode_one(), CS_REASON_TOO_DEEP);
	assert_string_equal(err, "field \"meta\" nests deeper than 8 levels");
	assert_int_equal(tuples.len, 0);

	/* a field no column reads is not named (map keys are message data) */
	msgpack_sbuffer_clear(&sbuf);
	msgpack_pack_map(&pk, 3);
	pack_required(1, "n");
	pack_str("unknown \"x\"");
	for (int i = 0; i < 12; i++)
		msgpack_pack_map(&pk, 1), pack_str("k");
	msgpack_pack_nil(&pk);
	assert_int_equal(decode_one(), CS_REASON_TOO_DEEP);
	assert_string_equal(err, "entry nests deeper than 8 levels");

	/* nesting alone never rejects a whole message: an array of deep arrays opens */
	msgpack_sbuffer_clear(&sbuf);
	for (int i = 0; i < 12; i++)
		msgpack_pack_array(&pk, 1);
	msgpack_pack_nil(&pk);
	assert_int_equal(open_msg(&r), 1);
	assert_int_equal(cs_decode_entry(dec, 0, &spec, &tuples, &keys, err, sizeof(err)),
			 CS_REASON_NOT_A_MAP);
	assert_string_equal(err, "entry 0 is array, not a map");
}

static void depth_limit_boundary(void **state)
{
	/* the entry map is level 1, meta's outer array level 2: 7 arrays reach level 8 (the
	 * limit), 8 arrays level 9 */
	static const char want[] = "\1[[[[[[[null]]]]]]]";

	msgpack_pack_map(&pk, 3);
	pack_required(1, "n");
	pack_str("meta");
	for (int i = 0; i < 7; i++)
		msgpack_pack_array(&pk, 1);
	msgpack_pack_nil(&pk);
	assert_int_equal(decode_one(), CS_REASON_OK);
	assert_field(7, want, sizeof(want) - 1);

	cs_buf_reset(&tuples), cs_buf_reset(&keys);
	msgpack_sbuffer_clear(&sbuf);
	msgpack_pack_map(&pk, 3);
	pack_required(1, "n");
	pack_str("meta");
	for (int i = 0; i < 8; i++)
		msgpack_pack_array(&pk, 1);
	msgpack_pack_nil(&pk);
	assert_int_equal(decode_one(), CS_REASON_TOO_DEEP);
	assert_string_equal(err, "field \"meta\" nests deeper than 8 levels");
}

static void too_large(void **state)
{
	char *big = calloc(1, 5000);
	cs_reason_t r;

	assert_non_null(big);
	big[0] = (char)0x80;
	open_rejects(big, 5000, CS_REASON_TOO_LARGE, "larger than the limit of 4096 bytes");
	free(big);

	/* more entries than max_entries (4) */
	msgpack_pack_array(&pk, 5);
	for (int i = 0; i < 5; i++)
		msgpack_pack_map(&pk, 0);
	assert_int_equal(open_msg(&r), -1);
	assert_int_equal(r, CS_REASON_TOO_LARGE);
	assert_non_null(strstr(err, "5 entries"));
}

/* ---------------------------------------------------------------- per-field rejections */

/* Each case: field, packer of the bad value, expected reason, expected error text. */
static void p_str_abc(void) { pack_str("abc"); }
static void p_float(void) { msgpack_pack_double(&pk, 1.0); }
static void p_int(void) { msgpack_pack_int(&pk, 1); }
static void p_true(void) { msgpack_pack_true(&pk); }
static void p_map(void) { msgpack_pack_map(&pk, 0); }
static void p_bin(void) { msgpack_pack_bin_with_body(&pk, "abcd", 4); }
static void p_ext(void) { msgpack_pack_ext_with_body(&pk, "ab", 2, 5); }
static void p_nan(void) { msgpack_pack_double(&pk, NAN); }
static void p_inf(void) { msgpack_pack_float(&pk, -INFINITY); }
static void p_huge_double(void) { msgpack_pack_double(&pk, 1e300); }
static void p_int32_over(void) { msgpack_pack_int64(&pk, (int64_t)INT32_MAX + 1); }
static void p_int16_under(void) { msgpack_pack_int(&pk, INT16_MIN - 1); }
static void p_uint64_max(void) { msgpack_pack_uint64(&pk, UINT64_MAX); }
static void p_bad_utf8(void) { pack_str_n("a\xff", 2); }
static void p_overlong(void) { pack_str_n("\xc0\x80", 2); }
static void p_surrogate(void) { pack_str_n("\xed\xa0\x80", 3); }
static void p_cut_utf8(void) { pack_str_n("\xe6\x9d", 2); }
static void p_above_max_cp(void) { pack_str_n("\xf4\x90\x80\x80", 4); }
static void p_nul(void) { pack_str_n("a\0b", 3); }
/* past the first eight bytes, which the check takes eight at a time when they are ASCII */
static void p_nul_at_13(void) { pack_str_n("abcdefghijklm\0opq", 17); }
static void p_bad_utf8_at_9(void) { pack_str_n("abcdefghi\xffjklmnopq", 18); }
static void p_bad_utf8_before_nul(void) { pack_str_n("abcdefgh\xe6\x9dxyz\0abcdefgh", 21); }
static void p_nul_before_bad_utf8(void) { pack_str_n("abcdefghijk\0\x80" "abcdefgh", 21); }
static void p_long_text(void)
{
	char s[257];
	memset(s, 'x', sizeof(s));
	pack_str_n(s, sizeof(s));
}
static void p_arr_with_int(void)
{
	msgpack_pack_array(&pk, 2);
	pack_str("a"), msgpack_pack_int(&pk, 1);
}
static void p_arr_with_nul(void)
{
	msgpack_pack_array(&pk, 1);
	pack_str_n("\0", 1);
}
static void p_arr_with_bad_utf8(void)
{
	msgpack_pack_array(&pk, 1);
	pack_str_n("\x80", 1);
}
static void p_arr_too_large(void)
{
	msgpack_pack_array(&pk, 40);
	for (int i = 0; i < 40; i++)
		pack_str("abcd");
}
static void p_emb_2(void)
{
	msgpack_pack_array(&pk, 2);
	msgpack_pack_float(&pk, 1), msgpack_pack_float(&pk, 2);
}
static void p_emb_4(void)
{
	msgpack_pack_array(&pk, 4);
	for (int i = 0; i < 4; i++)
		msgpack_pack_float(&pk, 1);
}
static void p_emb_bin_8(void) { msgpack_pack_bin_with_body(&pk, "12345678", 8); }
static void p_emb_bin_odd(void) { msgpack_pack_bin_with_body(&pk, "1234567890a", 11); }
static void p_emb_nan(void)
{
	msgpack_pack_array(&pk, 3);
	msgpack_pack_float(&pk, 1), msgpack_pack_double(&pk, NAN), msgpack_pack_float(&pk, 2);
}
static void p_emb_overflow(void)
{
	msgpack_pack_array(&pk, 3);
	msgpack_pack_float(&pk, 1), msgpack_pack_double(&pk, 1e39), msgpack_pack_float(&pk, 2);
}
static void p_emb_bin_inf(void) /* 1.0, +inf, 0 little-endian */
{
	msgpack_pack_bin_with_body(&pk, "\0\0\x80\x3f\0\0\x80\x7f\0\0\0\0", 12);
}
static void p_emb_str(void)
{
	msgpack_pack_array(&pk, 3);
	msgpack_pack_float(&pk, 1), pack_str("x"), msgpack_pack_float(&pk, 2);
}
static void p_json_inf(void)
{
	msgpack_pack_map(&pk, 1);
	pack_str("x"), msgpack_pack_double(&pk, INFINITY);
}
static void p_json_bin(void)
{
	msgpack_pack_map(&pk, 1);
	pack_str("x"), msgpack_pack_bin_with_body(&pk, "ab", 2);
}
static void p_json_int_key(void)
{
	msgpack_pack_map(&pk, 1);
	msgpack_pack_int(&pk, 1), pack_str("x");
}
static void p_json_nul(void)
{
	msgpack_pack_map(&pk, 1);
	pack_str("x"), pack_str_n("a\0", 2);
}
static void p_json_nul_key(void)
{
	msgpack_pack_map(&pk, 1);
	pack_str_n("\0", 1), pack_str("x");
}
static void p_json_bad_utf8(void)
{
	msgpack_pack_array(&pk, 1);
	pack_str_n("\xfe", 1);
}
static void p_json_too_large(void)
{
	msgpack_pack_array(&pk, 100);
	for (int i = 0; i < 100; i++)
		msgpack_pack_int(&pk, 100);
}

static const struct field_case {
	const char *field;
	void (*pack)(void);
	cs_reason_t reason;
	const char *error;
} field_cases[] = {
	{"small", p_str_abc, CS_REASON_WRONG_TYPE, "field \"small\" must be an integer, got str"},
	{"n", p_float, CS_REASON_WRONG_TYPE, "field \"n\" must be an integer, got float"},
	{"n", p_true, CS_REASON_WRONG_TYPE, "field \"n\" must be an integer, got bool"},
	{"d", p_str_abc, CS_REASON_WRONG_TYPE, "field \"d\" must be a number, got str"},
	{"ok", p_int, CS_REASON_WRONG_TYPE, "field \"ok\" must be a bool, got int"},
	{"name", p_int, CS_REASON_WRONG_TYPE, "field \"name\" must be a string, got int"},
	{"name", p_bin, CS_REASON_WRONG_TYPE, "field \"name\" must be a string, got bin"},
	{"name", p_ext, CS_REASON_WRONG_TYPE, "field \"name\" must be a string, got ext"},
	{"tags", p_map, CS_REASON_WRONG_TYPE, "field \"tags\" must be an array of strings, got map"},
	{"tags", p_arr_with_int, CS_REASON_WRONG_TYPE,
	 "field \"tags\" must be an array of strings, element 1 is int"},
	{"meta", p_bin, CS_REASON_WRONG_TYPE,
	 "field \"meta\" holds a bin, an ext or a non-string map key"},
	{"meta", p_json_bin, CS_REASON_WRONG_TYPE,
	 "field \"meta\" holds a bin, an ext or a non-string map key"},
	{"meta", p_json_int_key, CS_REASON_WRONG_TYPE,
	 "field \"meta\" holds a bin, an ext or a non-string map key"},
	{"embedding", p_str_abc, CS_REASON_WRONG_TYPE,
	 "field \"embedding\" must be an array of numbers or a bin, got str"},
	{"embedding", p_emb_str, CS_REASON_WRONG_TYPE,
	 "field \"embedding\" value 1 is a str, not a number"},
	{"embedding", p_emb_2, CS_REASON_EMBEDDING_DIM,
	 "field \"embedding\" has 2 values, expected 3"},
	{"embedding", p_emb_4, CS_REASON_EMBEDDING_DIM,
	 "field \"embedding\" has 4 values, expected 3"},
	{"embedding", p_emb_bin_8, CS_REASON_EMBEDDING_DIM,
	 "field \"embedding\" has 2 values, expected 3"},
	{"embedding", p_emb_bin_odd, CS_REASON_EMBEDDING_DIM,
	 "field \"embedding\" is a bin of 11 bytes, expected 12 (little-endian float32)"},
	{"embedding", p_emb_nan, CS_REASON_NOT_FINITE,
	 "field \"embedding\" value 1 is not a finite float32"},
	{"embedding", p_emb_overflow, CS_REASON_NOT_FINITE,
	 "field \"embedding\" value 1 is not a finite float32"},
	{"embedding", p_emb_bin_inf, CS_REASON_NOT_FINITE,
	 "field \"embedding\" value 1 is not a finite float32"},
	{"d", p_nan, CS_REASON_NOT_FINITE, "field \"d\" is not finite"},
	{"d", p_inf, CS_REASON_NOT_FINITE, "field \"d\" is not finite"},
	{"f", p_huge_double, CS_REASON_NOT_FINITE, "field \"f\" is not finite as a float32"},
	{"meta", p_json_inf, CS_REASON_NOT_FINITE, "field \"meta\" holds NaN or an infinity"},
	{"name", p_bad_utf8, CS_REASON_INVALID_UTF8, "field \"name\" is not valid UTF-8"},
	{"name", p_overlong, CS_REASON_INVALID_UTF8, "field \"name\" is not valid UTF-8"},
	{"name", p_surrogate, CS_REASON_INVALID_UTF8, "field \"name\" is not valid UTF-8"},
	{"name", p_cut_utf8, CS_REASON_INVALID_UTF8, "field \"name\" is not valid UTF-8"},
	{"name", p_above_max_cp, CS_REASON_INVALID_UTF8, "field \"name\" is not valid UTF-8"},
	{"tags", p_arr_with_bad_utf8, CS_REASON_INVALID_UTF8,
	 "field \"tags\" element 0 is not valid UTF-8"},
	{"meta", p_json_bad_utf8, CS_REASON_INVALID_UTF8,
	 "field \"meta\" holds a string that is not valid UTF-8"},
	{"name", p_nul, CS_REASON_NUL_BYTE, "field \"name\" contains a NUL byte"},
	{"name", p_nul_at_13, CS_REASON_NUL_BYTE, "field \"name\" contains a NUL byte"},
	{"name", p_bad_utf8_at_9, CS_REASON_INVALID_UTF8, "field \"name\" is not valid UTF-8"},
	{"name", p_bad_utf8_before_nul, CS_REASON_INVALID_UTF8, "field \"name\" is not valid UTF-8"},
	{"name", p_nul_before_bad_utf8, CS_REASON_NUL_BYTE, "field \"name\" contains a NUL byte"},
	{"tags", p_arr_with_nul, CS_REASON_NUL_BYTE, "field \"tags\" element 0 contains a NUL byte"},
	{"meta", p_json_nul, CS_REASON_NUL_BYTE, "field \"meta\" holds a string with a NUL byte"},
	{"meta", p_json_nul_key, CS_REASON_NUL_BYTE, "field \"meta\" holds a string with a NUL byte"},
	{"n", p_int32_over, CS_REASON_OUT_OF_RANGE,
	 "field \"n\" is out of range for integer: 2147483648"},
	{"small", p_int16_under, CS_REASON_OUT_OF_RANGE,
	 "field \"small\" is out of range for smallint: -32769"},
	{"id", p_uint64_max, CS_REASON_OUT_OF_RANGE,
	 "field \"id\" is out of range for bigint: 18446744073709551615"},
	{"name", p_long_text, CS_REASON_TOO_LARGE,
	 "field \"name\" has 257 bytes, more than the limit of 256"},
	{"tags", p_arr_too_large, CS_REASON_TOO_LARGE,
	 "field \"tags\" is larger than the limit of 256 bytes"},
	{"meta", p_json_too_large, CS_REASON_TOO_LARGE,
	 "field \"meta\" is larger than the field size limit"},
};

/* Every field case, each rejected with its reason and message, and the buffers left exactly
 * as they were (a valid tuple decoded first must survive byte for byte). */
static void field_rejections(void **state)
{
	for (size_t i = 0; i < sizeof(field_cases) / sizeof(field_cases[0]); i++) {
		const struct field_case *c = &field_cases[i];
		cs_buf_t t0, k0;
		cs_reason_t r;

		cs_buf_reset(&tuples), cs_buf_reset(&keys);
		msgpack_sbuffer_clear(&sbuf);
		msgpack_pack_map(&pk, 2);
		pack_required(9, "ok");
		assert_int_equal(decode_one(), CS_REASON_OK);
		cs_buf_init(&t0), cs_buf_init(&k0);
		assert_int_equal(cs_buf_append(&t0, tuples.data, tuples.len), 0);
		assert_int_equal(cs_buf_append(&k0, keys.data, keys.len), 0);

		msgpack_sbuffer_clear(&sbuf);
		if (strcmp(c->field, "id") == 0 || strcmp(c->field, "name") == 0) {
			/* replace a required field */
			msgpack_pack_map(&pk, 2);
			pack_str(c->field);
			c->pack();
			pack_str(strcmp(c->field, "id") == 0 ? "name" : "id");
			if (strcmp(c->field, "id") == 0)
				pack_str("x");
			else
				msgpack_pack_int(&pk, 1);
			r = decode_one();
		} else {
			r = decode_field(c->field, c->pack);
		}
		if (r != c->reason || strcmp(err, c->error) != 0)
			fail_msg("case %zu (%s): got %s \"%s\", expected %s \"%s\"", i, c->field,
				 cs_reason_name(r), err, cs_reason_name(c->reason), c->error);
		assert_int_equal(tuples.len, t0.len);
		assert_memory_equal(tuples.data, t0.data, t0.len);
		assert_int_equal(keys.len, k0.len);
		assert_memory_equal(keys.data, k0.data, k0.len);
		cs_buf_cleanup(&t0), cs_buf_cleanup(&k0);
	}
}

static void missing_required_fields(void **state)
{
	msgpack_pack_map(&pk, 1);
	pack_str("id"), msgpack_pack_int(&pk, 1);
	assert_int_equal(decode_one(), CS_REASON_MISSING_FIELD);
	assert_string_equal(err, "missing required field \"name\"");

	msgpack_sbuffer_clear(&sbuf);
	msgpack_pack_map(&pk, 2);
	pack_str("id"), msgpack_pack_nil(&pk);
	pack_str("name"), pack_str("x");
	assert_int_equal(decode_one(), CS_REASON_MISSING_FIELD);
	assert_string_equal(err, "missing required field \"id\"");
	assert_int_equal(tuples.len, 0);
	assert_int_equal(keys.len, 0);
}

static void entry_with_non_string_key(void **state)
{
	msgpack_pack_map(&pk, 3);
	pack_required(1, "n");
	msgpack_pack_int(&pk, 4), pack_str("x");
	assert_int_equal(decode_one(), CS_REASON_WRONG_TYPE);
	assert_string_equal(err, "entry has a map key of type int, field names must be strings");
}

static void repeated_key_last_counts(void **state)
{
	msgpack_pack_map(&pk, 3);
	pack_required(1, "first");
	pack_str("name"), pack_str("second");
	assert_int_equal(decode_one(), CS_REASON_OK);
	assert_field(1, "second", 6);
}

static void every_msgpack_type_in_every_field(void **state)
{
	void (*packers[])(void) = {p_str_abc, p_float, p_int, p_true, p_map, p_bin, p_ext,
				   p_nan, p_uint64_max, p_arr_with_int, p_emb_bin_inf};

	/* no combination may crash, and each result is either OK or a named reason with an
	 * error that names the field */
	for (int c = 0; c < spec.ncols; c++) {
		for (size_t p = 0; p < sizeof(packers) / sizeof(packers[0]); p++) {
			cs_reason_t r;
			cs_buf_reset(&tuples), cs_buf_reset(&keys);
			msgpack_sbuffer_clear(&sbuf);
			msgpack_pack_map(&pk, 3);
			pack_required(1, "n");
			pack_str(spec.cols[c].name);
			packers[p]();
			r = decode_one();
			assert_true(r < CS_REASON__COUNT);
			if (r != CS_REASON_OK) {
				char quoted[80];
				snprintf(quoted, sizeof(quoted), "\"%s\"", spec.cols[c].name);
				if (strstr(err, quoted) == NULL)
					fail_msg("column %s packer %zu: \"%s\"", spec.cols[c].name,
						 p, err);
				assert_int_equal(tuples.len, 0);
			}
		}
	}
}

/* ---------------------------------------------------------------- per-entry limits in arrays */

/* Middle elements for array_one_bad_entry: each packs one whole element with `pk`. */
static void nest(int levels)
{
	for (int i = 0; i < levels; i++)
		msgpack_pack_array(&pk, 1);
	msgpack_pack_nil(&pk);
}
static void e_deep_meta(void)
{
	msgpack_pack_map(&pk, 3);
	pack_required(1, "b");
	pack_str("meta");
	nest(40);
}
static void e_deep_unknown(void)
{
	msgpack_pack_map(&pk, 3);
	pack_required(1, "b");
	pack_str("other");
	nest(40);
}
static void e_long_name(void)
{
	char s[257];

	memset(s, 'x', sizeof(s));
	msgpack_pack_map(&pk, 2);
	pack_str("id"), msgpack_pack_int(&pk, 1);
	pack_str("name"), pack_str_n(s, sizeof(s));
}
static void e_long_tags(void)
{
	msgpack_pack_map(&pk, 3);
	pack_required(1, "b");
	pack_str("tags"), p_arr_too_large();
}
static void e_wrong_type(void)
{
	msgpack_pack_map(&pk, 3);
	pack_required(1, "b");
	pack_str("n"), pack_str("five");
}
static void e_bad_utf8(void)
{
	msgpack_pack_map(&pk, 2);
	pack_str("id"), msgpack_pack_int(&pk, 1);
	pack_str("name"), pack_str_n("b\xff", 2);
}
static void e_missing(void)
{
	msgpack_pack_map(&pk, 1);
	pack_str("id"), msgpack_pack_int(&pk, 1);
}
static void e_int(void) { msgpack_pack_int(&pk, 5); }
static void e_deep_array(void) { nest(40); }
static void e_noncanonical(void)
{
	/* map16 and str8 where shorter forms exist: the dead letter must keep these bytes */
	msgpack_sbuffer_write(&sbuf, "\xde\x00\x02\xd9\x02id\xd9\x01x\xa4name\xd9\x01" "b", 18);
}

static const struct entry_case {
	const char *what;
	void (*pack)(void);
	cs_reason_t reason;
	const char *error;
} entry_cases[] = {
	{"meta 40 deep", e_deep_meta, CS_REASON_TOO_DEEP,
	 "field \"meta\" nests deeper than 8 levels"},
	{"unknown field 40 deep", e_deep_unknown, CS_REASON_TOO_DEEP,
	 "entry nests deeper than 8 levels"},
	{"oversized string", e_long_name, CS_REASON_TOO_LARGE,
	 "field \"name\" has 257 bytes, more than the limit of 256"},
	{"oversized text[]", e_long_tags, CS_REASON_TOO_LARGE,
	 "field \"tags\" is larger than the limit of 256 bytes"},
	{"wrong type", e_wrong_type, CS_REASON_WRONG_TYPE,
	 "field \"n\" must be an integer, got str"},
	{"invalid UTF-8", e_bad_utf8, CS_REASON_INVALID_UTF8, "field \"name\" is not valid UTF-8"},
	{"missing field", e_missing, CS_REASON_MISSING_FIELD, "missing required field \"name\""},
	{"int element", e_int, CS_REASON_NOT_A_MAP, "entry 1 is int, not a map"},
	{"array element 40 deep", e_deep_array, CS_REASON_NOT_A_MAP, "entry 1 is array, not a map"},
	{"non-canonical msgpack", e_noncanonical, CS_REASON_WRONG_TYPE,
	 "field \"id\" must be an integer, got str"},
};

/* The tuple of entry {id, name, meta} decoded alone by a fresh decoder: what the entry must
 * look like wherever it travels. */
static void decode_alone(const char *msg, size_t len, cs_buf_t *out, cs_buf_t *key)
{
	cs_decode_limits_t limits;
	cs_decoder_t *d;
	cs_reason_t r;

	cs_decode_limits_default(&limits);
	d = cs_decoder_new(&limits);
	assert_non_null(d);
	assert_int_equal(cs_decode_open(d, msg, len, &r, err, sizeof(err)), 1);
	assert_int_equal(cs_decode_entry(d, 0, &spec, out, key, err, sizeof(err)), CS_REASON_OK);
	cs_decoder_destroy(d);
}

/* Pack [good 0, <case>, good 2] into sbuf; at[] gets each element's extent (at[3] = end). */
static void pack_three(void (*middle)(void), size_t at[4])
{
	msgpack_pack_array(&pk, 3);
	at[0] = sbuf.size;
	msgpack_pack_map(&pk, 3);
	pack_required(10, "first");
	pack_str("meta");
	msgpack_pack_map(&pk, 1);
	pack_str("k"), nest(2);
	at[1] = sbuf.size;
	middle();
	at[2] = sbuf.size;
	msgpack_pack_map(&pk, 2);
	pack_required(12, "third");
	at[3] = sbuf.size;
}

/* One case: entries 0 and 2 stored exactly as if sent alone, entry 1 rejected with its reason
 * and message, its dead-letter bytes the element's original bytes, the buffers untouched. */
static void check_one_bad_entry(const struct entry_case *c)
{
	static const char meta0[] = "\1{\"k\":[[null]]}";
	cs_buf_t want_t, want_k, raw;
	size_t at[4], t1, k1;
	int32_t len;
	cs_reason_t r;

	cs_buf_reset(&tuples), cs_buf_reset(&keys);
	msgpack_sbuffer_clear(&sbuf);
	pack_three(c->pack, at);
	cs_buf_init(&want_t), cs_buf_init(&want_k), cs_buf_init(&raw);
	decode_alone(sbuf.data + at[0], at[1] - at[0], &want_t, &want_k);
	decode_alone(sbuf.data + at[2], at[3] - at[2], &want_t, &want_k);

	if (open_msg(&r) != 3)
		fail_msg("%s: the message was rejected whole: %s \"%s\"", c->what,
			 cs_reason_name(r), err);
	assert_int_equal(cs_decode_entry(dec, 0, &spec, &tuples, &keys, err, sizeof(err)),
			 CS_REASON_OK);
	assert_field(0, "\0\0\0\0\0\0\0\x0a", 8);
	assert_field(1, "first", 5);
	assert_field(7, meta0, sizeof(meta0) - 1);
	t1 = tuples.len, k1 = keys.len;
	r = cs_decode_entry(dec, 1, &spec, &tuples, &keys, err, sizeof(err));
	if (r != c->reason || strcmp(err, c->error) != 0)
		fail_msg("%s: got %s \"%s\", expected %s \"%s\"", c->what, cs_reason_name(r), err,
			 cs_reason_name(c->reason), c->error);
	assert_int_equal(tuples.len, t1);
	assert_int_equal(keys.len, k1);
	assert_int_equal(cs_decode_entry_bytes(dec, 1, &raw), 0);
	assert_int_equal(raw.len, at[2] - at[1]);
	assert_memory_equal(raw.data, sbuf.data + at[1], raw.len);
	assert_int_equal(cs_decode_entry(dec, 2, &spec, &tuples, &keys, err, sizeof(err)),
			 CS_REASON_OK);
	/* both good tuples and keys, byte for byte */
	assert_int_equal(tuples.len, want_t.len);
	assert_memory_equal(tuples.data, want_t.data, want_t.len);
	assert_int_equal(keys.len, want_k.len);
	assert_memory_equal(keys.data, want_k.data, want_k.len);
	assert_memory_equal(tuples.data + t1 + 2 + 4, "\0\0\0\0\0\0\0\x0c", 8);
	assert_int_equal(be32((const unsigned char *)tuples.data + t1 + 2 + 12), 5);
	assert_memory_equal(tuples.data + t1 + 2 + 16, "third", 5);
	(void)len;

	/* out of order: every element's bytes are found again */
	for (int i = 2; i >= 0; i--) {
		cs_buf_reset(&raw);
		assert_int_equal(cs_decode_entry_bytes(dec, i, &raw), 0);
		assert_int_equal(raw.len, at[i + 1] - at[i]);
		assert_memory_equal(raw.data, sbuf.data + at[i], raw.len);
	}
	assert_int_equal(cs_decode_entry_bytes(dec, 3, &raw), -1);
	cs_buf_cleanup(&want_t), cs_buf_cleanup(&want_k), cs_buf_cleanup(&raw);
}

static void array_one_bad_entry(void **state)
{
	for (size_t i = 0; i < sizeof(entry_cases) / sizeof(entry_cases[0]); i++)
		check_one_bad_entry(&entry_cases[i]);
}

static void array_with_default_limits(void **state)
{
	/* with the default depth (32, msgpack-c's own container stack), a 40-deep element must
	 * not take its siblings down, and a 32-level entry (meta 31 arrays) still decodes */
	cs_decode_limits_t limits;
	cs_reason_t r;
	size_t at[4];

	cs_decoder_destroy(dec);
	cs_decode_limits_default(&limits);
	dec = cs_decoder_new(&limits);
	assert_non_null(dec);
	pack_three(e_deep_meta, at);
	assert_int_equal(open_msg(&r), 3);
	assert_int_equal(cs_decode_entry(dec, 0, &spec, &tuples, &keys, err, sizeof(err)),
			 CS_REASON_OK);
	assert_int_equal(cs_decode_entry(dec, 1, &spec, &tuples, &keys, err, sizeof(err)),
			 CS_REASON_TOO_DEEP);
	assert_string_equal(err, "field \"meta\" nests deeper than 32 levels");
	assert_int_equal(cs_decode_entry(dec, 2, &spec, &tuples, &keys, err, sizeof(err)),
			 CS_REASON_OK);

	cs_buf_reset(&tuples), cs_buf_reset(&keys);
	msgpack_sbuffer_clear(&sbuf);
	msgpack_pack_array(&pk, 2);
	for (int e = 0; e < 2; e++) {
		msgpack_pack_map(&pk, 3);
		pack_required(e, "n");
		pack_str("meta");
		nest(31 + e);
	}
	assert_int_equal(open_msg(&r), 2);
	assert_int_equal(cs_decode_entry(dec, 0, &spec, &tuples, &keys, err, sizeof(err)),
			 CS_REASON_OK);
	assert_int_equal(cs_decode_entry(dec, 1, &spec, &tuples, &keys, err, sizeof(err)),
			 CS_REASON_TOO_DEEP);
}

/* Messages that stay rejected whole, even though only one element is at fault. */
static void whole_message_rejections(void **state)
{
	static const struct {
		const char *what;
		const char *msg;
		size_t len;
		cs_reason_t reason;
		const char *errpart;
	} cases[] = {
		{"last element truncated", "\x93\x80\x80\x81\xa2id", 7, CS_REASON_MALFORMED,
		 "truncated or invalid at byte 7"},
		{"element declares more than the message holds", "\x92\x80\xdf\xff\xff\xff\xff", 7,
		 CS_REASON_MALFORMED, "truncated"},
		{"0xc1 inside an element", "\x92\x80\x81\xa1x\xc1", 6, CS_REASON_MALFORMED,
		 "invalid at byte 6"},
		{"bytes after the array", "\x91\x80\x80", 3, CS_REASON_MALFORMED,
		 "1 trailing bytes"},
		{"more entries than max_entries", "\x95\x80\x80\x80\x80\x80", 6,
		 CS_REASON_TOO_LARGE, "5 entries, more than the limit of 4"},
		{"top level a string", "\xa1x", 2, CS_REASON_NOT_A_MAP, "neither a map nor"},
	};
	char *big;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cs_reason_t r;
		int n = cs_decode_open(dec, cases[i].msg, cases[i].len, &r, err, sizeof(err));
		if (n != -1 || r != cases[i].reason || strstr(err, cases[i].errpart) == NULL)
			fail_msg("%s: got %d %s \"%s\"", cases[i].what, n, cs_reason_name(r), err);
		/* nothing of it is left to decode */
		assert_int_equal(cs_decode_entry(dec, 0, &spec, &tuples, &keys, err, sizeof(err)),
				 CS_REASON_MALFORMED);
	}
	/* an array over max_message_bytes, whatever its elements */
	big = calloc(1, 5000);
	assert_non_null(big);
	big[0] = (char)0x91, big[1] = (char)0xc4, big[2] = (char)0xff;
	open_rejects(big, 5000, CS_REASON_TOO_LARGE, "larger than the limit of 4096 bytes");
	free(big);
}

static void tombstone_key(void **state)
{
	int32_t len;

	/* the key array's values in the key columns, every other column NULL */
	msgpack_pack_array(&pk, 1);
	msgpack_pack_int(&pk, 7);
	assert_int_equal(cs_decode_key(dec, &spec, sbuf.data, sbuf.size, &tuples, &keys, err,
				       sizeof(err)),
			 CS_REASON_OK);
	assert_field(0, "\0\0\0\0\0\0\0\x07", 8);
	field_of(1, &len);
	assert_int_equal(len, -1);
	/* the message opened before is forgotten */
	assert_int_equal(cs_decode_entry_bytes(dec, 0, &tuples), -1);
	assert_int_equal(cs_decode_key(dec, &spec, "\x05", 1, &tuples, &keys, err, sizeof(err)),
			 CS_REASON_MALFORMED);
	assert_non_null(strstr(err, "tombstone key must be a msgpack array"));
	assert_int_equal(cs_decode_key(dec, &spec, "\x91\xa1", 2, &tuples, &keys, err,
				       sizeof(err)),
			 CS_REASON_MALFORMED);
	assert_non_null(strstr(err, "(tombstone key)"));
}

static void reason_names_are_distinct(void **state)
{
	for (int i = 0; i < CS_REASON__COUNT; i++) {
		assert_non_null(cs_reason_name((cs_reason_t)i));
		for (int j = 0; j < i; j++)
			assert_string_not_equal(cs_reason_name((cs_reason_t)i),
						cs_reason_name((cs_reason_t)j));
	}
	assert_string_equal(cs_reason_name(CS_REASON_MISSING_FIELD), "missing_field");
	assert_string_equal(cs_reason_name(CS_REASON__COUNT), "unknown");
}

static void decoder_reused_across_messages(void **state)
{
	/* many messages through one decoder: the zone is reused, results stay correct */
	for (int i = 0; i < 1000; i++) {
		char name[32];
		int32_t len;
		const unsigned char *p;

		cs_buf_reset(&tuples), cs_buf_reset(&keys);
		msgpack_sbuffer_clear(&sbuf);
		snprintf(name, sizeof(name), "entry-%d", i);
		msgpack_pack_map(&pk, 3);
		pack_required(i, name);
		pack_str("tags");
		msgpack_pack_array(&pk, (size_t)(i % 5));
		for (int t = 0; t < i % 5; t++)
			pack_str(name);
		assert_int_equal(decode_one(), CS_REASON_OK);
		assert_field(1, name, strlen(name));
		p = field_of(0, &len);
		assert_int_equal(be32(p + 4), (uint32_t)i);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(full_entry_exact_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(optional_fields_missing_or_nil_are_null, setup,
						teardown),
		cmocka_unit_test_setup_teardown(compact_embedding_is_little_endian_float32, setup,
						teardown),
		cmocka_unit_test_setup_teardown(json_escaping_and_numbers, setup, teardown),
		cmocka_unit_test_setup_teardown(json_column_has_no_version_byte, setup, teardown),
		cmocka_unit_test_setup_teardown(empty_text_array, setup, teardown),
		cmocka_unit_test_setup_teardown(long_text_accepted, setup, teardown),
		cmocka_unit_test_setup_teardown(integer_bounds_accepted, setup, teardown),
		cmocka_unit_test_setup_teardown(array_of_entries_one_bad, setup, teardown),
		cmocka_unit_test_setup_teardown(malformed_messages, setup, teardown),
		cmocka_unit_test_setup_teardown(message_not_a_map, setup, teardown),
		cmocka_unit_test_setup_teardown(entry_not_a_map, setup, teardown),
		cmocka_unit_test_setup_teardown(too_deep, setup, teardown),
		cmocka_unit_test_setup_teardown(depth_limit_boundary, setup, teardown),
		cmocka_unit_test_setup_teardown(too_large, setup, teardown),
		cmocka_unit_test_setup_teardown(field_rejections, setup, teardown),
		cmocka_unit_test_setup_teardown(missing_required_fields, setup, teardown),
		cmocka_unit_test_setup_teardown(entry_with_non_string_key, setup, teardown),
		cmocka_unit_test_setup_teardown(repeated_key_last_counts, setup, teardown),
		cmocka_unit_test_setup_teardown(every_msgpack_type_in_every_field, setup, teardown),
		cmocka_unit_test_setup_teardown(array_one_bad_entry, setup, teardown),
		cmocka_unit_test_setup_teardown(array_with_default_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(whole_message_rejections, setup, teardown),
		cmocka_unit_test_setup_teardown(tombstone_key, setup, teardown),
		cmocka_unit_test_setup_teardown(reason_names_are_distinct, setup, teardown),
		cmocka_unit_test_setup_teardown(decoder_reused_across_messages, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
