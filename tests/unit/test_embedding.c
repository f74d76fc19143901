/*
 * test_embedding.c - embedding columns: float32 to half (every rounding case, then a sample of
 * all float32 values against a brute-force nearest-even reference), the exact binary COPY bytes
 * of halfvec and sparsevec, every rejection with its reason and message, the type spellings
 */
#include <float.h>
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
#include "copysink/embedding.h"

/* ---------------------------------------------------------------- half precision */

static float bits_f32(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

/* The exact value of a finite half (a reference independent of the code under test). */
static double half_value(uint16_t h)
{
	int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
	double v = exp == 0 ? ldexp(man, -24) : ldexp(1024 + man, exp - 25);

	return h & 0x8000 ? -v : v;
}

/* Every case of the conversion: exact values, ties to even (normal, subnormal, the carries
 * into the next binade and into the normals), zeros, underflow, overflow. */
static void half_cases(void **state)
{
	static const struct {
		uint32_t f32; /* float32 bits */
		int rc;
		uint16_t half;
	} cases[] = {
		{0x00000000, 0, 0x0000}, /* +0 */
		{0x80000000, 0, 0x8000}, /* -0 keeps its sign */
		{0x3f800000, 0, 0x3c00}, /* 1 */
		{0xc0000000, 0, 0xc000}, /* -2 */
		{0x3f000000, 0, 0x3800}, /* 0.5 */
		{0x477fe000, 0, 0x7bff}, /* 65504, the largest half */
		{0x477fefff, 0, 0x7bff}, /* just below 65520: down to 65504 */
		{0x477ff000, -1, 0},     /* 65520: the tie goes to even, beyond 65504: overflow */
		{0xc77ff000, -1, 0},     /* -65520 */
		{0x47800000, -1, 0},     /* 65536 */
		{0x7f7fffff, -1, 0},     /* FLT_MAX */
		{0x7f800000, -1, 0},     /* +inf */
		{0xff800000, -1, 0},     /* -inf */
		{0x7fc00000, -1, 0},     /* NaN */
		{0x7f800001, -1, 0},     /* signalling NaN */
		{0x38800000, 0, 0x0400}, /* 2^-14, the smallest normal */
		{0x387fc000, 0, 0x03ff}, /* 1023 * 2^-24, the largest subnormal */
		{0x33800000, 0, 0x0001}, /* 2^-24, the smallest subnormal */
		{0xb3800000, 0, 0x8001}, /* -2^-24 */
		{0x33000000, 0, 0x0000}, /* 2^-25: a tie between 0 and 2^-24, to even: 0 */
		{0xb3000000, 0, 0x8000}, /* -2^-25: -0 */
		{0x33000001, 0, 0x0001}, /* just above 2^-25: up */
		{0x32ffffff, 0, 0x0000}, /* just below: 0 */
		{0x33c00000, 0, 0x0002}, /* 3 * 2^-25: a tie between 1 and 2 units, to even: 2 */
		{0x33a00000, 0, 0x0001}, /* 5 * 2^-26 = 1.25 units: 1 */
		{0x34200000, 0, 0x0002}, /* 2.5 units: a tie, to even: 2 */
		{0x34600000, 0, 0x0004}, /* 3.5 units: a tie, to even: 4 */
		{0x34400000, 0, 0x0003}, /* 3 units exactly */
		{0x32800000, 0, 0x0000}, /* 2^-26 */
		{0x00000001, 0, 0x0000}, /* the smallest float32 subnormal */
		{0x80000001, 0, 0x8000},
		{0x387fe000, 0, 0x0400}, /* 2^-14 - 2^-25: a tie, 0x3ff is odd: up into the normals */
		{0x3f801000, 0, 0x3c00}, /* 1 + 2^-11: a tie, to even: 1 */
		{0x3f803000, 0, 0x3c02}, /* 1 + 3 * 2^-11: a tie between 0x3c01 and 0x3c02: even */
		{0x3f801001, 0, 0x3c01}, /* just above the tie: up */
		{0x3f800fff, 0, 0x3c00}, /* just below: down */
		{0x3ffff000, 0, 0x4000}, /* 2 - 2^-11: a tie, 0x3bff is odd: up, into the next binade */
		{0x3dcccccd, 0, 0x2e66}, /* 0.1 */
		{0x3eaaaaab, 0, 0x3555}, /* 1/3 */
		{0x40490fdb, 0, 0x4248}, /* pi */
		{0xc0490fdb, 0, 0xc248}, /* -pi */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint16_t h = 0xdead;
		int rc = cs_embedding_f32_to_half(bits_f32(cases[i].f32), &h);

		if (rc != cases[i].rc || (rc == 0 && h != cases[i].half))
			fail_msg("case %zu (float32 0x%08x): got %d 0x%04x, want %d 0x%04x", i,
				 cases[i].f32, rc, h, cases[i].rc, cases[i].half);
		if (rc != 0)
			assert_int_equal(h, 0xdead); /* untouched */
	}
	(void)state;
}

/* The correctly rounded half of finite x (nearest, ties to even) by search over the halves,
 * -1 on overflow: IEEE rounds as if the exponent were unbounded, so 65536 stands above
 * 65504 as the next value and reaching it is the overflow. */
static int reference_half(float x, uint16_t *h)
{
	double a = fabs((double)x), lo_v, hi_v;
	uint16_t sign = signbit(x) ? 0x8000 : 0, lo = 0, hi = 0x7bff;

	if (a >= 65504.0) {
		if (a >= 65520.0)
			return -1;
		*h = sign | 0x7bff;
		return 0;
	}
	while (lo < hi) { /* the largest half <= a */
		uint16_t mid = (uint16_t)((lo + hi + 1) / 2);
		if (half_value(mid) <= a)
			lo = mid;
		else
			hi = (uint16_t)(mid - 1);
	}
	lo_v = half_value(lo);
	hi_v = half_value((uint16_t)(lo + 1));
	if (a - lo_v < hi_v - a || (a - lo_v == hi_v - a && (lo & 1) == 0))
		*h = sign | lo;
	else
		*h = sign | (uint16_t)(lo + 1);
	return 0;
}

/* A sample of all float32 values: every 61st pattern where halves live (exponents 101 to
 * 144: underflow, subnormals, normals, overflow), every 4099th elsewhere. */
static void half_matches_reference(void **state)
{
	uint64_t checked = 0;

	for (uint64_t u = 0; u <= UINT32_MAX;) {
		uint32_t bits = (uint32_t)u, exp = (bits >> 23) & 0xff;
		float f = bits_f32(bits);
		uint16_t got = 0, want = 0;
		int rc = cs_embedding_f32_to_half(f, &got);
		int wrc = isfinite(f) ? reference_half(f, &want) : -1;

		if (rc != wrc || (rc == 0 && got != want))
			fail_msg("float32 0x%08x (%.9g): got %d 0x%04x, want %d 0x%04x", bits, f, rc,
				 got, wrc, want);
		checked++;
		u += exp >= 101 && exp <= 144 ? 61 : 4099;
	}
	assert_true(checked > 5000000);
	(void)state;
}

/* ---------------------------------------------------------------- encoding */

static msgpack_sbuffer sbuf;
static msgpack_packer pk;
static msgpack_zone zone;
static msgpack_object obj;
static cs_buf_t out;
static char err[256];

static int setup(void **state)
{
	msgpack_sbuffer_init(&sbuf);
	msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
	assert_true(msgpack_zone_init(&zone, 4096));
	cs_buf_init(&out);
	err[0] = '\0';
	(void)state;
	return 0;
}

static int teardown(void **state)
{
	msgpack_sbuffer_destroy(&sbuf);
	msgpack_zone_destroy(&zone);
	cs_buf_cleanup(&out);
	(void)state;
	return 0;
}

/* A column "e" of the given type, as a configured spec would have it (enc from emb_type). */
static cs_column_t column(cs_embtype_t type)
{
	cs_column_t col;

	memset(&col, 0, sizeof(col));
	snprintf(col.name, sizeof(col.name), "e");
	col.type = CS_COL_EMBEDDING;
	col.emb_type = type;
	return col;
}

/* Encode what was packed as column `type` of dimension dim. */
static cs_reason_t put(cs_embtype_t type, int dim)
{
	cs_column_t col = column(type);
	size_t off = 0;

	msgpack_zone_clear(&zone);
	assert_int_equal(msgpack_unpack(sbuf.data, sbuf.size, &off, &zone, &obj),
			 MSGPACK_UNPACK_SUCCESS);
	err[0] = '\0';
	return cs_embedding_put(&col, dim, &obj, &out, err, sizeof(err));
}

static void pack_str(const char *s) { msgpack_pack_str_with_body(&pk, s, strlen(s)); }

static void pack_floats(int n, const double *v)
{
	msgpack_pack_array(&pk, (size_t)n);
	for (int i = 0; i < n; i++)
		msgpack_pack_double(&pk, v[i]);
}

/* The map form {"indices": [...], "values": [...]}. */
static void pack_sparse(int n, const int64_t *idx, const double *val)
{
	msgpack_pack_map(&pk, 2);
	pack_str("indices");
	msgpack_pack_array(&pk, (size_t)n);
	for (int i = 0; i < n; i++)
		msgpack_pack_int64(&pk, idx[i]);
	pack_str("values");
	pack_floats(n, val);
}

static void assert_out(const unsigned char *want, size_t n)
{
	assert_int_equal(out.len, n);
	assert_memory_equal(out.data, want, n);
}

static void halfvec_bytes(void **state)
{
	static const double v[] = {1.0, -2.0, 65504.0, -0.0, 5.960464477539063e-08};
	static const unsigned char want[] = {
		0, 0, 0, 14,         /* field length: 4 + 2 * 5 */
		0, 5, 0, 0,          /* int16 dim, int16 unused */
		0x3c, 0x00, 0xc0, 0x00, 0x7b, 0xff, 0x80, 0x00, 0x00, 0x01};
	static const unsigned char le_halves[] = {0x01, 0x00, 0x00, 0x80, 0xff, 0x7b};
	static const unsigned char le_floats[] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 0x01, 0x10,
						  0x80, 0x3f};
	static const unsigned char want_halves[] = {0, 0, 0, 10, 0, 3, 0, 0, 0x00, 0x01,
						    0x80, 0x00, 0x7b, 0xff};
	static const unsigned char want_floats[] = {0, 0, 0, 10, 0, 3, 0, 0, 0x3c, 0x00,
						    0xc0, 0x00, 0x3c, 0x01};

	pack_floats(5, v);
	assert_int_equal(put(CS_EMB_HALFVEC, 5), CS_REASON_OK);
	assert_out(want, sizeof(want));

	/* a bin of 2 * dim bytes: little-endian halves, stored as they are */
	cs_buf_reset(&out);
	msgpack_sbuffer_clear(&sbuf);
	msgpack_pack_bin_with_body(&pk, le_halves, sizeof(le_halves));
	assert_int_equal(put(CS_EMB_HALFVEC, 3), CS_REASON_OK);
	assert_out(want_halves, sizeof(want_halves));

	/* a bin of 4 * dim bytes: little-endian float32, rounded (1 + 2^-23 + 2^-11: up) */
	cs_buf_reset(&out);
	msgpack_sbuffer_clear(&sbuf);
	msgpack_pack_bin_with_body(&pk, le_floats, sizeof(le_floats));
	assert_int_equal(put(CS_EMB_HALFVEC, 3), CS_REASON_OK);
	assert_out(want_floats, sizeof(want_floats));

	/* after what the buffer holds, and an int element */
	cs_buf_reset(&out);
	assert_int_equal(cs_buf_append(&out, "xy", 2), 0);
	msgpack_sbuffer_clear(&sbuf);
	msgpack_pack_array(&pk, 1);
	msgpack_pack_int(&pk, -3);
	assert_int_equal(put(CS_EMB_HALFVEC, 1), CS_REASON_OK);
	assert_out((const unsigned char *)"xy\0\0\0\6\0\1\0\0\xc2\0", 12);
	(void)state;
}

/* A bin of little-endian float32 as vector and as real[]: every value's bits exactly, byte
 * order reversed (zeros of both signs, subnormals, the extremes, a pseudo-random sample), after
 * what the buffer holds; the first value that is not finite is the one named. 67 values: the
 * encoder takes four at a time where it can, and the last three one by one. */
static void float32_bin_bytes(void **state)
{
	enum { N = 67 };
	uint32_t bits[N] = {0x00000000, 0x80000000, 0x00000001, 0x807fffff, 0x7f7fffff,
			    0xff7fffff, 0x3f800000, 0x00800000};
	unsigned char le[4 * N], want[8 + 20 + 8 * N];
	uint32_t x = 12345;
	static const struct {
		int at[3];
		const char *bytes[3];
		const char *msg;
	} bad[] = {
		/* NaN at 9, infinities at 5 and 63: value 5 is named */
		{{9, 5, 63}, {"\1\0\xc0\x7f", "\0\0\x80\xff", "\0\0\x80\x7f"},
		 "field \"e\" value 5 is not a finite float32"},
		/* in the values taken one by one only */
		{{66, 66, 66}, {"\0\0\xc0\xff", "\0\0\xc0\xff", "\0\0\xc0\xff"},
		 "field \"e\" value 66 is not a finite float32"},
		/* in the last four taken together only */
		{{62, 62, 62}, {"\0\0\x80\x7f", "\0\0\x80\x7f", "\0\0\x80\x7f"},
		 "field \"e\" value 62 is not a finite float32"},
	};

	for (int i = 8; i < N; i++) {
		do
			x = x * 1103515245u + 12345u;
		while ((x & 0x7f800000) == 0x7f800000);
		bits[i] = x;
	}
	for (int i = 0; i < N; i++)
		for (int k = 0; k < 4; k++)
			le[4 * i + k] = (unsigned char)(bits[i] >> (8 * k));
	for (int vector = 0; vector <= 1; vector++) {
		static const unsigned char vec_head[] = {0, 0, 1, 0x10, 0, N, 0, 0};
		static const unsigned char arr_head[] = {0, 0, 2, 0x2c, 0, 0, 0, 1, 0, 0, 0, 0, 0,
							 0, 2, 188, 0, 0, 0, N, 0, 0, 0, 1};
		size_t n = vector ? sizeof(vec_head) : sizeof(arr_head);
		unsigned char *p = want + 2 + n;

		memcpy(want, "ab", 2);
		memcpy(want + 2, vector ? vec_head : arr_head, n);
		for (int i = 0; i < N; i++) {
			if (!vector)
				memcpy(p, "\0\0\0\4", 4), p += 4;
			for (int k = 0; k < 4; k++)
				*p++ = (unsigned char)(bits[i] >> (24 - 8 * k));
		}
		msgpack_sbuffer_clear(&sbuf);
		msgpack_pack_bin_with_body(&pk, le, sizeof(le));
		cs_buf_reset(&out);
		assert_int_equal(cs_buf_append(&out, "ab", 2), 0);
		assert_int_equal(put(vector ? CS_EMB_VECTOR : CS_EMB_REAL_ARRAY, N), CS_REASON_OK);
		assert_out(want, (size_t)(p - want));
	}
	for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
		unsigned char le_bad[sizeof(le)];

		memcpy(le_bad, le, sizeof(le));
		for (int k = 0; k < 3; k++)
			memcpy(le_bad + 4 * bad[b].at[k], bad[b].bytes[k], 4);
		for (int vector = 0; vector <= 1; vector++) {
			msgpack_sbuffer_clear(&sbuf);
			msgpack_pack_bin_with_body(&pk, le_bad, sizeof(le_bad));
			cs_buf_reset(&out);
			assert_int_equal(cs_buf_append(&out, "ab", 2), 0);
			assert_int_equal(put(vector ? CS_EMB_VECTOR : CS_EMB_REAL_ARRAY, N),
					 CS_REASON_NOT_FINITE);
			assert_string_equal(err, bad[b].msg);
			assert_int_equal(out.len, 2);
		}
	}
	(void)state;
}

static void sparsevec_bytes(void **state)
{
	static const int64_t idx[] = {3, 0, 4};
	static const double val[] = {2.5, -1.0, 0.0}; /* the zero is left out */
	static const unsigned char want[] = {
		0, 0, 0, 28,                   /* field length: 12 + 8 * 2 */
		0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0, 0, /* dim 5, nnz 2, unused */
		0, 0, 0, 0, 0, 0, 0, 3,        /* indices, ascending */
		0xbf, 0x80, 0, 0, 0x40, 0x20, 0, 0}; /* -1, 2.5 */
	static const double dense[] = {0.0, 1.5, 0.0, 0.0, -0.0};
	static const unsigned char want_dense[] = {0, 0, 0, 20, 0, 0, 0, 5, 0, 0, 0, 1,
						   0, 0, 0, 0, 0, 0, 0, 1, 0x3f, 0xc0, 0, 0};
	static const unsigned char le_floats[] = {0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x80};
	static const unsigned char want_bin[] = {0, 0, 0, 20, 0, 0, 0, 3, 0, 0, 0, 1,
						 0, 0, 0, 0, 0, 0, 0, 1, 0x3f, 0x80, 0, 0};
	static const unsigned char want_empty[] = {0, 0, 0, 12, 0, 0, 0, 5, 0, 0, 0, 0,
						   0, 0, 0, 0};

	pack_sparse(3, idx, val);
	assert_int_equal(put(CS_EMB_SPARSEVEC, 5), CS_REASON_OK);
	assert_out(want, sizeof(want));

	cs_buf_reset(&out);
	msgpack_sbuffer_clear(&sbuf);
	pack_floats(5, dense);
	assert_int_equal(put(CS_EMB_SPARSEVEC, 5), CS_REASON_OK);
	assert_out(want_dense, sizeof(want_dense));

	cs_buf_reset(&out);
	msgpack_sbuffer_clear(&sbuf);
	msgpack_pack_bin_with_body(&pk, le_floats, sizeof(le_floats));
	assert_int_equal(put(CS_EMB_SPARSEVEC, 3), CS_REASON_OK);
	assert_out(want_bin, sizeof(want_bin));

	/* nothing but zeros: a sparsevec without elements */
	cs_buf_reset(&out);
	msgpack_sbuffer_clear(&sbuf);
	pack_sparse(0, NULL, NULL);
	assert_int_equal(put(CS_EMB_SPARSEVEC, 5), CS_REASON_OK);
	assert_out(want_empty, sizeof(want_empty));
	(void)state;
}

/* Many pairs in reverse order: sorted, the values following their indices. */
static void sparsevec_sorts_pairs(void **state)
{
	enum { N = 1000, DIM = 100000 };
	int64_t idx[N];
	double val[N];
	const unsigned char *p;

	for (int i = 0; i < N; i++) {
		idx[i] = DIM - 1 - 97 * i;
		val[i] = i + 1;
	}
	pack_sparse(N, idx, val);
	assert_int_equal(put(CS_EMB_SPARSEVEC, DIM), CS_REASON_OK);
	assert_int_equal(out.len, 4 + 12 + 8 * N);
	p = (const unsigned char *)out.data + 16;
	for (int k = 0; k < N; k++) {
		int i = N - 1 - k; /* the k-th smallest index is the i-th given */
		uint32_t index = (uint32_t)p[4 * k] << 24 | (uint32_t)p[4 * k + 1] << 16 |
				 (uint32_t)p[4 * k + 2] << 8 | p[4 * k + 3];
		const unsigned char *v = p + 4 * N + 4 * k;
		uint32_t bits = (uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 | (uint32_t)v[2] << 8 |
				v[3];
		assert_int_equal(index, idx[i]);
		assert_true(bits_f32(bits) == (float)val[i]);
	}
	(void)state;
}

/* Packers of rejected values. */
static void p_half_overflow(void) { pack_floats(3, (const double[]){1, 2, 65520}); }
static void p_half_f64_overflow(void) { pack_floats(3, (const double[]){1, 1e300, 2}); }
static void p_half_nan(void) { pack_floats(3, (const double[]){1, NAN, 2}); }
static void p_half_inf(void) { pack_floats(3, (const double[]){-INFINITY, 1, 2}); }
static void p_half_bin_inf(void)
{
	msgpack_pack_bin_with_body(&pk, "\0\0\0\x7c\0\0", 6);
}
static void p_half_bin_nan(void)
{
	msgpack_pack_bin_with_body(&pk, "\0\0\0\0\x01\xfe", 6);
}
static void p_half_bin_f32_inf(void)
{
	msgpack_pack_bin_with_body(&pk, "\0\0\0\0\0\0\x80\x7f\0\0\0\0", 12);
}
static void p_half_bin_8(void) { msgpack_pack_bin_with_body(&pk, "\0\0\0\0\0\0\0\0", 8); }
static void p_half_2(void) { pack_floats(2, (const double[]){1, 2}); }
static void p_half_str(void) { pack_str("abc"); }
static void p_half_elem_str(void)
{
	msgpack_pack_array(&pk, 3);
	msgpack_pack_int(&pk, 1), pack_str("x"), msgpack_pack_int(&pk, 2);
}
static void p_sp_index_high(void)
{
	pack_sparse(2, (const int64_t[]){0, 5}, (const double[]){1, 2});
}
static void p_sp_index_neg(void)
{
	pack_sparse(2, (const int64_t[]){-1, 2}, (const double[]){1, 2});
}
static void p_sp_dup(void)
{
	pack_sparse(3, (const int64_t[]){3, 1, 3}, (const double[]){1, 2, 3});
}
static void p_sp_lengths(void)
{
	msgpack_pack_map(&pk, 2);
	pack_str("indices");
	msgpack_pack_array(&pk, 2);
	msgpack_pack_int(&pk, 0), msgpack_pack_int(&pk, 1);
	pack_str("values");
	pack_floats(1, (const double[]){1});
}
static void p_sp_extra_key(void)
{
	msgpack_pack_map(&pk, 3);
	pack_str("indices"), msgpack_pack_array(&pk, 0);
	pack_str("values"), msgpack_pack_array(&pk, 0);
	pack_str("dim"), msgpack_pack_int(&pk, 5);
}
static void p_sp_no_values(void)
{
	msgpack_pack_map(&pk, 1);
	pack_str("indices"), msgpack_pack_array(&pk, 0);
}
static void p_sp_indices_map(void)
{
	msgpack_pack_map(&pk, 2);
	pack_str("indices"), msgpack_pack_map(&pk, 0);
	pack_str("values"), msgpack_pack_array(&pk, 0);
}
static void p_sp_index_float(void)
{
	msgpack_pack_map(&pk, 2);
	pack_str("values"), pack_floats(1, (const double[]){1});
	pack_str("indices"), pack_floats(1, (const double[]){1});
}
static void p_sp_value_nan(void)
{
	pack_sparse(2, (const int64_t[]){0, 1}, (const double[]){1, NAN});
}
static void p_sp_value_str(void)
{
	msgpack_pack_map(&pk, 2);
	pack_str("indices"), msgpack_pack_array(&pk, 1), msgpack_pack_int(&pk, 0);
	pack_str("values"), msgpack_pack_array(&pk, 1), pack_str("x");
}
static void p_sp_dense_4(void) { pack_floats(4, (const double[]){0, 1, 0, 2}); }
static void p_sp_bool(void) { msgpack_pack_true(&pk); }
static void p_sp_too_many(void)
{
	static float ones[CS_SPARSEVEC_MAX_NNZ + 1];

	for (int i = 0; i <= CS_SPARSEVEC_MAX_NNZ; i++)
		ones[i] = 1.0f; /* little-endian hosts only, as the suite's are */
	msgpack_pack_bin_with_body(&pk, ones, sizeof(ones));
}

/* Every rejection: reason and message; the buffer's length stays. */
static void rejections(void **state)
{
	static const struct {
		cs_embtype_t type;
		int dim;
		void (*pack)(void);
		cs_reason_t reason;
		const char *msg;
	} cases[] = {
		{CS_EMB_HALFVEC, 3, p_half_overflow, CS_REASON_OUT_OF_RANGE,
		 "field \"e\" value 2 is out of range for halfvec: 65520"},
		{CS_EMB_HALFVEC, 3, p_half_f64_overflow, CS_REASON_OUT_OF_RANGE,
		 "field \"e\" value 1 is out of range for halfvec: 1e+300"},
		{CS_EMB_HALFVEC, 3, p_half_nan, CS_REASON_NOT_FINITE,
		 "field \"e\" value 1 is not a finite float32"},
		{CS_EMB_HALFVEC, 3, p_half_inf, CS_REASON_NOT_FINITE,
		 "field \"e\" value 0 is not a finite float32"},
		{CS_EMB_HALFVEC, 3, p_half_bin_inf, CS_REASON_NOT_FINITE,
		 "field \"e\" value 1 is not a finite half"},
		{CS_EMB_HALFVEC, 3, p_half_bin_nan, CS_REASON_NOT_FINITE,
		 "field \"e\" value 2 is not a finite half"},
		{CS_EMB_HALFVEC, 3, p_half_bin_f32_inf, CS_REASON_NOT_FINITE,
		 "field \"e\" value 1 is not a finite float32"},
		{CS_EMB_HALFVEC, 3, p_half_bin_8, CS_REASON_EMBEDDING_DIM,
		 "field \"e\" is a bin of 8 bytes, expected 12 (little-endian float32) or 6 "
		 "(little-endian half)"},
		{CS_EMB_HALFVEC, 3, p_half_2, CS_REASON_EMBEDDING_DIM,
		 "field \"e\" has 2 values, expected 3"},
		{CS_EMB_HALFVEC, 3, p_half_str, CS_REASON_WRONG_TYPE,
		 "field \"e\" must be an array of numbers or a bin, got str"},
		{CS_EMB_HALFVEC, 3, p_half_elem_str, CS_REASON_WRONG_TYPE,
		 "field \"e\" value 1 is a str, not a number"},
		{CS_EMB_VECTOR, 3, p_half_overflow, CS_REASON_OK, ""}, /* fine as float32 */
		{CS_EMB_VECTOR, 3, p_half_f64_overflow, CS_REASON_NOT_FINITE,
		 "field \"e\" value 1 is not a finite float32"},
		{CS_EMB_SPARSEVEC, 5, p_sp_index_high, CS_REASON_OUT_OF_RANGE,
		 "field \"e\" index 1 is out of range for sparsevec(5): 5"},
		{CS_EMB_SPARSEVEC, 5, p_sp_index_neg, CS_REASON_OUT_OF_RANGE,
		 "field \"e\" index 0 is out of range for sparsevec(5): -1"},
		{CS_EMB_SPARSEVEC, 5, p_sp_dup, CS_REASON_EMBEDDING_DIM,
		 "field \"e\" has index 3 twice"},
		{CS_EMB_SPARSEVEC, 5, p_sp_lengths, CS_REASON_EMBEDDING_DIM,
		 "field \"e\" has 2 indices and 1 values"},
		{CS_EMB_SPARSEVEC, 5, p_sp_extra_key, CS_REASON_WRONG_TYPE,
		 "field \"e\" must be a map of \"indices\" and \"values\", an array of numbers or a "
		 "bin"},
		{CS_EMB_SPARSEVEC, 5, p_sp_no_values, CS_REASON_WRONG_TYPE,
		 "field \"e\" must be a map of \"indices\" and \"values\", an array of numbers or a "
		 "bin"},
		{CS_EMB_SPARSEVEC, 5, p_sp_indices_map, CS_REASON_WRONG_TYPE,
		 "field \"e\" indices must be an array, got map"},
		{CS_EMB_SPARSEVEC, 5, p_sp_index_float, CS_REASON_WRONG_TYPE,
		 "field \"e\" index 0 is a float, not an int"},
		{CS_EMB_SPARSEVEC, 5, p_sp_value_nan, CS_REASON_NOT_FINITE,
		 "field \"e\" value 1 is not a finite float32"},
		{CS_EMB_SPARSEVEC, 5, p_sp_value_str, CS_REASON_WRONG_TYPE,
		 "field \"e\" value 0 is a str, not a number"},
		{CS_EMB_SPARSEVEC, 5, p_sp_dense_4, CS_REASON_EMBEDDING_DIM,
		 "field \"e\" has 4 values, expected 5"},
		{CS_EMB_SPARSEVEC, 5, p_sp_bool, CS_REASON_WRONG_TYPE,
		 "field \"e\" must be an array of numbers or a bin, got bool"},
		{CS_EMB_SPARSEVEC, CS_SPARSEVEC_MAX_NNZ + 1, p_sp_too_many, CS_REASON_EMBEDDING_DIM,
		 "field \"e\" has 16001 non-zero values, more than the 16000 of a sparsevec"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cs_reason_t r;

		msgpack_sbuffer_clear(&sbuf);
		cs_buf_reset(&out);
		assert_int_equal(cs_buf_append(&out, "ab", 2), 0);
		cases[i].pack();
		r = put(cases[i].type, cases[i].dim);
		if (r != cases[i].reason || (r != CS_REASON_OK && strcmp(err, cases[i].msg) != 0))
			fail_msg("case %zu: got %s \"%s\", want %s \"%s\"", i, cs_reason_name(r), err,
				 cs_reason_name(cases[i].reason), cases[i].msg);
		if (r != CS_REASON_OK)
			assert_int_equal(out.len, 2);
	}
	(void)state;
}

/* The catalog's encoding wins over the configured type (auto, or a type checked since). */
static void encoding_from_catalog(void **state)
{
	cs_column_t col = column(CS_EMB_AUTO);
	size_t off = 0;

	pack_floats(2, (const double[]){1, 2});
	assert_int_equal(msgpack_unpack(sbuf.data, sbuf.size, &off, &zone, &obj),
			 MSGPACK_UNPACK_SUCCESS);
	col.enc = CS_ENC_HALFVEC;
	assert_int_equal(cs_embedding_put(&col, 2, &obj, &out, err, sizeof(err)), CS_REASON_OK);
	assert_out((const unsigned char *)"\0\0\0\x08\0\x02\0\0\x3c\0\x40\0", 12);
	cs_buf_reset(&out);
	col.enc = CS_ENC_DEFAULT; /* auto, not resolved yet: real[] */
	assert_int_equal(cs_embedding_put(&col, 2, &obj, &out, err, sizeof(err)), CS_REASON_OK);
	assert_int_equal(out.len, 4 + 20 + 16);
	(void)state;
}

/* Through the decoder: a column list's halfvec(3), an overflowing value dead-lettered as
 * out_of_range with the entry's other buffers untouched. */
static void through_the_decoder(void **state)
{
	cs_decode_limits_t limits;
	cs_tablespec_t spec;
	cs_decoder_t *dec;
	cs_buf_t keys;
	cs_reason_t r;
	char e[256];

	memset(&spec, 0, sizeof(spec));
	spec.dim = 3;
	assert_int_equal(cs_tablespec_parse_columns(&spec, "id bigint not null, e halfvec(3)", "id",
						    e, sizeof(e)),
			 0);
	assert_int_equal(spec.cols[1].type, CS_COL_EMBEDDING);
	assert_int_equal(spec.cols[1].emb_type, CS_EMB_HALFVEC);
	assert_int_equal(spec.cols[1].emb_dim, 3);
	cs_decode_limits_default(&limits);
	dec = cs_decoder_new(&limits);
	assert_non_null(dec);
	cs_buf_init(&keys);
	msgpack_pack_map(&pk, 2);
	pack_str("id"), msgpack_pack_int(&pk, 1);
	pack_str("e"), pack_floats(3, (const double[]){0.5, -70000, 1});
	assert_int_equal(cs_decode_open(dec, sbuf.data, sbuf.size, &r, e, sizeof(e)), 1);
	r = cs_decode_entry(dec, 0, &spec, &out, &keys, e, sizeof(e));
	assert_int_equal(r, CS_REASON_OUT_OF_RANGE);
	assert_string_equal(cs_reason_name(r), "out_of_range");
	assert_string_equal(e, "field \"e\" value 1 is out of range for halfvec: -70000");
	assert_int_equal(out.len, 0);
	assert_int_equal(keys.len, 0);
	cs_buf_cleanup(&keys);
	cs_decoder_destroy(dec);
	(void)state;
}

/* ---------------------------------------------------------------- spellings */

static void spellings(void **state)
{
	static const struct {
		const char *sql;
		int rc;
		cs_embtype_t type;
		int dim;
	} cases[] = {
		{"vector(384)", 0, CS_EMB_VECTOR, 384},
		{"VECTOR (3)", 0, CS_EMB_VECTOR, 3},
		{"halfvec(16000)", 0, CS_EMB_HALFVEC, 16000},
		{"halfvec", 0, CS_EMB_HALFVEC, 0},
		{"sparsevec(1000000000)", 0, CS_EMB_SPARSEVEC, 1000000000},
		{"sparsevec", 0, CS_EMB_SPARSEVEC, 0},
		{"real[]", 0, CS_EMB_REAL_ARRAY, 0},
		{"float4[]", 0, CS_EMB_REAL_ARRAY, 0},
		{"vector", 1, CS_EMB_AUTO, 0},     /* the old spelling of embedding */
		{"embedding", 1, CS_EMB_AUTO, 0},
		{"text", 1, CS_EMB_AUTO, 0},
		{"vectors", 1, CS_EMB_AUTO, 0},
		{"vector(0)", -1, CS_EMB_AUTO, 0},
		{"vector(16001)", -1, CS_EMB_AUTO, 0},
		{"halfvec()", -1, CS_EMB_AUTO, 0},
		{"halfvec(-3)", -1, CS_EMB_AUTO, 0},
		{"sparsevec(1000000001)", -1, CS_EMB_AUTO, 0},
		{"vector(3", -1, CS_EMB_AUTO, 0},
		{"vector(3) x", -1, CS_EMB_AUTO, 0},
	};
	char e[128], sql[32];
	cs_colenc_t enc;
	cs_embtype_t t;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cs_embtype_t type = CS_EMB_AUTO;
		int dim = 0, rc = cs_embedding_parse_sql(cases[i].sql, &type, &dim, e, sizeof(e));

		if (rc != cases[i].rc || (rc == 0 && (type != cases[i].type || dim != cases[i].dim)))
			fail_msg("case %zu \"%s\": got %d %d %d", i, cases[i].sql, rc, (int)type, dim);
	}
	assert_int_equal(cs_embedding_parse_sql("halfvec(0)", &t, &(int){0}, e, sizeof(e)), -1);
	assert_string_equal(e, "type \"halfvec(0)\" needs a dimension from 1 to 16000, as in "
			       "halfvec(384)");
	for (int i = CS_EMB_AUTO; i <= CS_EMB_REAL_ARRAY; i++) {
		assert_int_equal(cs_embedding_type_parse(cs_embedding_type_name(i), &t), 0);
		assert_int_equal(t, i);
	}
	assert_int_equal(cs_embedding_type_parse("float16", &t), -1);
	cs_embedding_sql(CS_EMB_HALFVEC, 768, sql, sizeof(sql));
	assert_string_equal(sql, "halfvec(768)");
	cs_embedding_sql(CS_EMB_SPARSEVEC, 30522, sql, sizeof(sql));
	assert_string_equal(sql, "sparsevec(30522)");
	cs_embedding_sql(CS_EMB_REAL_ARRAY, 384, sql, sizeof(sql));
	assert_string_equal(sql, "real[]");
	assert_string_equal(cs_embedding_min_pgvector(CS_EMB_HALFVEC), "0.7.0");
	assert_string_equal(cs_embedding_min_pgvector(CS_EMB_SPARSEVEC), "0.7.0");
	assert_null(cs_embedding_min_pgvector(CS_EMB_VECTOR));
	assert_int_equal(cs_embedding_type_of("halfvec", &t, &enc), 0);
	assert_int_equal(t, CS_EMB_HALFVEC);
	assert_int_equal(enc, CS_ENC_HALFVEC);
	assert_int_equal(cs_embedding_type_of("_float4", &t, &enc), 0);
	assert_int_equal(enc, CS_ENC_FLOAT4_ARRAY);
	assert_int_equal(cs_embedding_type_of("_float8", &t, &enc), -1);
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(half_cases),
		cmocka_unit_test(half_matches_reference),
		cmocka_unit_test_setup_teardown(halfvec_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(float32_bin_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(sparsevec_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(sparsevec_sorts_pairs, setup, teardown),
		cmocka_unit_test_setup_teardown(rejections, setup, teardown),
		cmocka_unit_test_setup_teardown(encoding_from_catalog, setup, teardown),
		cmocka_unit_test_setup_teardown(through_the_decoder, setup, teardown),
		cmocka_unit_test(spellings),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
