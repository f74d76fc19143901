/*
 * embedding.c - embedding columns: their SQL types and their binary COPY forms
 *
 * The binary forms, as pgvector's receive functions read them (all big-endian):
 *   vector     int16 dim, int16 0, dim x float32
 *   halfvec    int16 dim, int16 0, dim x half (pgvector 0.7.0)
 *   sparsevec  int32 dim, int32 nnz, int32 0, nnz x int32 index (0-based, strictly
 *              ascending), nnz x float32 value (none zero) (pgvector 0.7.0)
 * and a float4[] as array_recv reads it: int32 ndim 1, int32 0 (no NULLs), the element OID,
 * int32 dim, int32 lower bound 1, then each element's int32 length 4 and its float32.
 *
 * Each field is encoded straight into the batch's buffer after one reserve. A sparsevec given
 * as indices and values is gathered as (index, value) pairs in scratch room reserved behind
 * the field, sorted there only when the indices were not ascending, and then written out: no
 * allocation per entry.
 */
#include "copysink/embedding.h"

#include <ctype.h>
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define FLOAT4OID 700
#define HALF_EXP_MASK 0x7c00    /* an all-ones exponent: infinity or NaN */
#define F32_EXP_MASK 0x7f800000 /* the same in a float32 */
#define F32_EXP_ONE 0x00800000  /* the lowest bit of a float32's exponent */
#define F32_SIGN 0x80000000
#define OOM CS_REASON__COUNT

static const char *const type_names[] = {
	[CS_EMB_AUTO] = "auto",           [CS_EMB_VECTOR] = "vector",
	[CS_EMB_HALFVEC] = "halfvec",     [CS_EMB_SPARSEVEC] = "sparsevec",
	[CS_EMB_REAL_ARRAY] = "real[]",
};

#define NTYPES (sizeof(type_names) / sizeof(type_names[0]))

const char *cs_embedding_type_name(cs_embtype_t type)
{
	return (size_t)type < NTYPES ? type_names[type] : "auto";
}

int cs_embedding_type_parse(const char *name, cs_embtype_t *type)
{
	for (size_t i = 0; i < NTYPES; i++) {
		if (strcasecmp(type_names[i], name) == 0) {
			*type = (cs_embtype_t)i;
			return 0;
		}
	}
	return -1;
}

int cs_embedding_parse_sql(const char *sql, cs_embtype_t *type, int *dim, char *errstr,
			   size_t errstr_size)
{
	static const struct {
		const char *name;
		cs_embtype_t type;
		bool bare; /* explicit without a dimension too */
	} typed[] = {
		{"vector", CS_EMB_VECTOR, false},
		{"halfvec", CS_EMB_HALFVEC, true},
		{"sparsevec", CS_EMB_SPARSEVEC, true},
	};
	long max, n;
	char *end;

	if (strcasecmp(sql, "real[]") == 0 || strcasecmp(sql, "float4[]") == 0) {
		*type = CS_EMB_REAL_ARRAY;
		*dim = 0;
		return 0;
	}
	for (size_t i = 0; i < sizeof(typed) / sizeof(typed[0]); i++) {
		size_t len = strlen(typed[i].name);
		const char *p = sql + len;

		if (strncasecmp(sql, typed[i].name, len) != 0)
			continue;
		if (*p == '\0') {
			if (!typed[i].bare)
				return 1;
			*type = typed[i].type;
			*dim = 0;
			return 0;
		}
		if (*p == ' ')
			p++;
		if (*p != '(')
			return 1;
		max = typed[i].type == CS_EMB_SPARSEVEC ? CS_SPARSEVEC_MAX_DIM : CS_EMBEDDING_MAX_DIM;
		n = isdigit((unsigned char)p[1]) ? strtol(p + 1, &end, 10) : 0;
		if (n < 1 || n > max || strcmp(end, ")") != 0) {
			snprintf(errstr, errstr_size,
				 "type \"%s\" needs a dimension from 1 to %ld, as in %s(384)", sql, max,
				 typed[i].name);
			return -1;
		}
		*type = typed[i].type;
		*dim = (int)n;
		return 0;
	}
	return 1;
}

void cs_embedding_sql(cs_embtype_t type, int dim, char *out, size_t size)
{
	if (cs_embedding_needs_pgvector(type))
		snprintf(out, size, "%s(%d)", type_names[type], dim);
	else
		snprintf(out, size, "real[]");
}

bool cs_embedding_needs_pgvector(cs_embtype_t type)
{
	return type == CS_EMB_VECTOR || type == CS_EMB_HALFVEC || type == CS_EMB_SPARSEVEC;
}

const char *cs_embedding_min_pgvector(cs_embtype_t type)
{
	return type == CS_EMB_HALFVEC || type == CS_EMB_SPARSEVEC ? "0.7.0" : NULL;
}

int cs_embedding_type_of(const char *typname, cs_embtype_t *type, cs_colenc_t *enc)
{
	static const struct {
		const char *typname;
		cs_embtype_t type;
		cs_colenc_t enc;
	} known[] = {
		{"vector", CS_EMB_VECTOR, CS_ENC_VECTOR},
		{"halfvec", CS_EMB_HALFVEC, CS_ENC_HALFVEC},
		{"sparsevec", CS_EMB_SPARSEVEC, CS_ENC_SPARSEVEC},
		{"_float4", CS_EMB_REAL_ARRAY, CS_ENC_FLOAT4_ARRAY},
	};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		if (strcmp(known[i].typname, typname) == 0) {
			*type = known[i].type;
			*enc = known[i].enc;
			return 0;
		}
	}
	return -1;
}

/* ---------------------------------------------------------------- half precision */

/* m / 2^shift rounded to nearest, ties to even (1 <= shift <= 31). */
static uint32_t round_shift(uint32_t m, unsigned shift)
{
	uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);

	return q + (rem > halfway || (rem == halfway && (q & 1)));
}

int cs_embedding_f32_to_half(float f, uint16_t *h)
{
	uint32_t u, exp, man, r;
	uint16_t sign;

	memcpy(&u, &f, sizeof(u));
	sign = (uint16_t)((u >> 16) & 0x8000);
	exp = (u >> 23) & 0xff;
	man = u & 0x7fffff;
	if (exp == 0xff)
		return -1; /* infinity or NaN */
	if (exp < 102) {
		/* below 2^-25 (float32 subnormals included): less than half the smallest half
		 * subnormal (2^-24), so zero; exactly 2^-25 is handled below (ties to even: 0) */
		*h = sign;
		return 0;
	}
	if (exp <= 112) {
		/* a half subnormal: the value in units of 2^-24 is (1.man) * 2^(exp - 127 + 24),
		 * i.e. (man | 2^23) >> (126 - exp), rounded; a carry to 0x400 is the smallest
		 * normal, which is its right encoding */
		r = round_shift(man | 0x800000, 126 - exp);
	} else {
		/* a normal: rebias the exponent (127 -> 15) and round the mantissa from 23 to 10
		 * bits; a carry out of the mantissa moves into the exponent, as it should */
		r = ((exp - 112) << 10) + round_shift(man, 13);
	}
	if (r >= HALF_EXP_MASK)
		return -1; /* 65520 and above round beyond 65504 */
	*h = (uint16_t)(sign | r);
	return 0;
}

/* ---------------------------------------------------------------- encoding */

/* Big-endian writers into room the caller reserved; each returns the next position. */
static unsigned char *be16(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 8), p[1] = (unsigned char)v;
	return p + 2;
}

static unsigned char *be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
	return p + 4;
}

static uint32_t f32_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

/* Little-endian readers of bin payloads. */
static float le_f32(const char *s)
{
	const unsigned char *b = (const unsigned char *)s;
	uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
		     (uint32_t)b[3] << 24;
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

static uint16_t le_u16(const char *s)
{
	const unsigned char *b = (const unsigned char *)s;

	return (uint16_t)(b[0] | b[1] << 8);
}

/* One number of an embedding: its float32 (as a C cast rounds it) and the value sent. */
typedef struct num {
	float f;
	double sent; /* for messages and for telling a finite value from NaN and infinities */
} num_t;

/* A msgpack number as num_t; false when `e` is not a number. */
static bool number(const msgpack_object *e, num_t *n)
{
	switch (e->type) {
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: n->f = (float)e->via.f64, n->sent = e->via.f64; return true;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		n->f = (float)e->via.u64, n->sent = (double)e->via.u64;
		return true;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		n->f = (float)e->via.i64, n->sent = (double)e->via.i64;
		return true;
	default: return false;
	}
}

/* A dense embedding: an array of numbers or a bin of little-endian float32 (or, for halfvec,
 * of little-endian half: `halves`), of exactly dim values. */
typedef struct dense {
	const cs_column_t *col;
	const msgpack_object *o;
	uint32_t n;   /* values given */
	bool halfvec; /* for a halfvec column: finite values beyond float32 are out of range */
	bool halves;  /* a bin of 2-byte halves */
	char *errstr;
	size_t size;
} dense_t;

/* Value i of a dense embedding as a float32, checked finite. @returns CS_REASON_OK or the
 * reason, with errstr. */
static cs_reason_t dense_value(const dense_t *d, uint32_t i, num_t *n)
{
	if (d->o->type == MSGPACK_OBJECT_BIN) {
		n->f = le_f32(d->o->via.bin.ptr + 4 * (size_t)i);
		n->sent = n->f;
	} else if (!number(&d->o->via.array.ptr[i], n)) {
		return cs_decode_reject(CS_REASON_WRONG_TYPE, d->errstr, d->size,
			      "field \"%s\" value %u is a %s, not a number", d->col->name, i,
			      cs_decode_type_name(&d->o->via.array.ptr[i]));
	}
	if (!isfinite(n->f) && (!d->halfvec || !isfinite(n->sent)))
		return cs_decode_reject(CS_REASON_NOT_FINITE, d->errstr, d->size,
			      "field \"%s\" value %u is not a finite float32", d->col->name, i);
	return CS_REASON_OK;
}

/* Check the form and the count of a dense embedding. `halves_ok`: a bin of 2*dim bytes is
 * taken as halves. @returns CS_REASON_OK or the reason, with errstr. */
static cs_reason_t dense_open(dense_t *d, int dim, bool halves_ok)
{
	const msgpack_object *o = d->o;

	if (o->type == MSGPACK_OBJECT_ARRAY) {
		d->n = o->via.array.size;
	} else if (o->type == MSGPACK_OBJECT_BIN && o->via.bin.size / 4 == (uint32_t)dim &&
		   o->via.bin.size % 4 == 0) {
		d->n = (uint32_t)dim;
	} else if (o->type == MSGPACK_OBJECT_BIN && halves_ok &&
		   o->via.bin.size == 2 * (uint32_t)dim) {
		d->n = (uint32_t)dim;
		d->halves = true;
	} else if (o->type == MSGPACK_OBJECT_BIN && halves_ok) {
		return cs_decode_reject(CS_REASON_EMBEDDING_DIM, d->errstr, d->size,
			      "field \"%s\" is a bin of %u bytes, expected %d (little-endian float32) "
			      "or %d (little-endian half)",
			      d->col->name, o->via.bin.size, 4 * dim, 2 * dim); /* dim <= 16000 */
	} else if (o->type == MSGPACK_OBJECT_BIN && o->via.bin.size % 4 == 0) {
		d->n = o->via.bin.size / 4; /* the wrong count, said below */
	} else if (o->type == MSGPACK_OBJECT_BIN) {
		return cs_decode_reject(CS_REASON_EMBEDDING_DIM, d->errstr, d->size,
			      "field \"%s\" is a bin of %u bytes, expected %lld (little-endian float32)",
			      d->col->name, o->via.bin.size, 4 * (long long)dim);
	} else {
		return cs_decode_reject(CS_REASON_WRONG_TYPE, d->errstr, d->size,
			      "field \"%s\" must be an array of numbers or a bin, got %s",
			      d->col->name, cs_decode_type_name(o));
	}
	if (d->n != (uint32_t)dim)
		return cs_decode_reject(CS_REASON_EMBEDDING_DIM, d->errstr, d->size,
			      "field \"%s\" has %u values, expected %d", d->col->name, d->n, dim);
	return CS_REASON_OK;
}

/* The values of a bin of little-endian float32 written big-endian at p (each after its length
 * 4 for a float4[]): the bits as given, byte order reversed, in one pass without a branch per
 * value; with SSE2, four at a time. Under callgrind the benchmark's real[] field of 384 values
 * cost 17,600 instructions value by value through dense_value(), 4,560 with the scalar loop
 * and 2,740 with SSE2 (bench/results/cpu_profile.md). Nothing is checked but finiteness: an
 * exponent of all ones, and only that, carries into the sign bit when its lowest bit is added.
 * @returns true when every value is finite. */
static bool bin_float32s(const dense_t *d, unsigned char *p, bool lengths)
{
	const unsigned char *s = (const unsigned char *)d->o->via.bin.ptr;
	uint32_t n = d->n, i = 0, special = 0;

#if defined(__SSE2__) /* x86: little-endian, so a lane loads a value as it is */
	const __m128i mask = _mm_set1_epi32(F32_EXP_MASK), one = _mm_set1_epi32(F32_EXP_ONE);
	const __m128i len4 = _mm_set1_epi32(0x04000000); /* the bytes 0 0 0 4: be32(4) */
	__m128i acc = _mm_setzero_si128();

	for (; n - i >= 4; i += 4, s += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)s);

		acc = _mm_or_si128(acc, _mm_add_epi32(_mm_and_si128(v, mask), one));
		/* each lane's bytes reversed: its two halves swapped, then the bytes of each half */
		v = _mm_shufflelo_epi16(v, _MM_SHUFFLE(2, 3, 0, 1));
		v = _mm_shufflehi_epi16(v, _MM_SHUFFLE(2, 3, 0, 1));
		v = _mm_or_si128(_mm_slli_epi16(v, 8), _mm_srli_epi16(v, 8));
		if (lengths) {
			_mm_storeu_si128((__m128i *)(void *)p, _mm_unpacklo_epi32(len4, v));
			_mm_storeu_si128((__m128i *)(void *)(p + 16), _mm_unpackhi_epi32(len4, v));
			p += 32;
		} else {
			_mm_storeu_si128((__m128i *)(void *)p, v);
			p += 16;
		}
	}
	special = (uint32_t)_mm_movemask_ps(_mm_castsi128_ps(acc)) ? F32_SIGN : 0;
#endif
	for (; i < n; i++, s += 4) {
		uint32_t u = (uint32_t)s[0] | (uint32_t)s[1] << 8 | (uint32_t)s[2] << 16 |
			     (uint32_t)s[3] << 24;

		special |= (u & F32_EXP_MASK) + F32_EXP_ONE;
		if (lengths)
			p = be32(p, 4);
		p = be32(p, u);
	}
	return (special & F32_SIGN) == 0;
}

/* A vector or a float4[]: header, then each value (a float4[] gives each its length). */
static cs_reason_t put_float32s(dense_t *d, int dim, bool vector, cs_buf_t *out)
{
	size_t bytes = vector ? 4 + 4 * (size_t)dim : 20 + 8 * (size_t)dim;
	unsigned char *p;
	cs_reason_t r = dense_open(d, dim, false);

	if (r != CS_REASON_OK)
		return r;
	if (cs_buf_reserve(out, 4 + bytes) != 0)
		return OOM;
	p = be32((unsigned char *)out->data + out->len, (uint32_t)bytes);
	if (vector) {
		p = be32(p, (uint32_t)dim << 16); /* int16 dim, int16 unused */
	} else {
		p = be32(be32(p, 1), 0); /* one dimension, no NULLs */
		p = be32(p, d->col->elem_oid ? d->col->elem_oid : FLOAT4OID);
		p = be32(be32(p, (uint32_t)dim), 1);
	}
	if (d->o->type == MSGPACK_OBJECT_BIN) {
		/* a NaN or an infinity: said by dense_value(), which finds the first */
		if (!bin_float32s(d, p, !vector))
			for (uint32_t i = 0; i < d->n; i++)
				if ((r = dense_value(d, i, &(num_t){0, 0})) != CS_REASON_OK)
					return r;
		out->len += 4 + bytes;
		return CS_REASON_OK;
	}
	for (uint32_t i = 0; i < d->n; i++) {
		num_t n = {0, 0};
		if ((r = dense_value(d, i, &n)) != CS_REASON_OK)
			return r;
		if (!vector)
			p = be32(p, 4);
		p = be32(p, f32_bits(n.f));
	}
	out->len += 4 + bytes;
	return CS_REASON_OK;
}

/* A halfvec: header, then each value rounded to half (a bin of halves is taken as is). */
static cs_reason_t put_halfvec(dense_t *d, int dim, cs_buf_t *out)
{
	size_t bytes = 4 + 2 * (size_t)dim;
	unsigned char *p;
	cs_reason_t r = dense_open(d, dim, true);

	if (r != CS_REASON_OK)
		return r;
	if (cs_buf_reserve(out, 4 + bytes) != 0)
		return OOM;
	p = be32((unsigned char *)out->data + out->len, (uint32_t)bytes);
	p = be32(p, (uint32_t)dim << 16); /* int16 dim, int16 unused */
	for (uint32_t i = 0; i < d->n; i++) {
		uint16_t h;
		num_t n = {0, 0};

		if (d->halves) {
			h = le_u16(d->o->via.bin.ptr + 2 * (size_t)i);
			if ((h & HALF_EXP_MASK) == HALF_EXP_MASK)
				return cs_decode_reject(CS_REASON_NOT_FINITE, d->errstr, d->size,
					      "field \"%s\" value %u is not a finite half",
					      d->col->name, i);
		} else if ((r = dense_value(d, i, &n)) != CS_REASON_OK) {
			return r;
		} else if (cs_embedding_f32_to_half(n.f, &h) != 0) {
			return cs_decode_reject(CS_REASON_OUT_OF_RANGE, d->errstr, d->size,
				      "field \"%s\" value %u is out of range for halfvec: %.9g",
				      d->col->name, i, n.sent);
		}
		p = be16(p, h);
	}
	out->len += 4 + bytes;
	return CS_REASON_OK;
}

/* ---------------------------------------------------------------- sparsevec */

/* Pairs (index << 32 | float32 bits) order by index; indices are distinct once checked. */
static int pair_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a >> 32, y = *(const uint64_t *)b >> 32;

	return x < y ? -1 : x > y;
}

/* A sparse embedding being gathered: its pairs in scratch room of `out`. */
typedef struct sparse {
	const cs_column_t *col;
	int dim;
	uint64_t *pairs;
	uint32_t nnz;
	bool sorted;
	char *errstr;
	size_t size;
} sparse_t;

/* The indices and values of the map form {"indices": [...], "values": [...]}, or NULL. */
static cs_reason_t sparse_arrays(const sparse_t *s, const msgpack_object *o,
				 const msgpack_object **idx, const msgpack_object **val)
{
	*idx = *val = NULL;
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
		bool is_idx = k->type == MSGPACK_OBJECT_STR && k->via.str.size == 7 &&
			      memcmp(k->via.str.ptr, "indices", 7) == 0;
		bool is_val = k->type == MSGPACK_OBJECT_STR && k->via.str.size == 6 &&
			      memcmp(k->via.str.ptr, "values", 6) == 0;

		if (!is_idx && !is_val)
			break;
		if (v->type != MSGPACK_OBJECT_ARRAY)
			return cs_decode_reject(CS_REASON_WRONG_TYPE, s->errstr, s->size,
				      "field \"%s\" %s must be an array, got %s", s->col->name,
				      is_idx ? "indices" : "values", cs_decode_type_name(v));
		*(is_idx ? idx : val) = v;
	}
	if (*idx == NULL || *val == NULL || o->via.map.size != 2)
		return cs_decode_reject(CS_REASON_WRONG_TYPE, s->errstr, s->size,
			      "field \"%s\" must be a map of \"indices\" and \"values\", an array of "
			      "numbers or a bin",
			      s->col->name);
	if ((*idx)->via.array.size != (*val)->via.array.size)
		return cs_decode_reject(CS_REASON_EMBEDDING_DIM, s->errstr, s->size,
			      "field \"%s\" has %u indices and %u values", s->col->name,
			      (*idx)->via.array.size, (*val)->via.array.size);
	return CS_REASON_OK;
}

/* Index i of the map form, checked within [0, dim). */
static cs_reason_t sparse_index(const sparse_t *s, const msgpack_object *idx, uint32_t i,
				uint32_t *index)
{
	const msgpack_object *e = &idx->via.array.ptr[i];

	if (e->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return cs_decode_reject(CS_REASON_OUT_OF_RANGE, s->errstr, s->size,
			      "field \"%s\" index %u is out of range for sparsevec(%d): %lld",
			      s->col->name, i, s->dim, (long long)e->via.i64);
	if (e->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return cs_decode_reject(CS_REASON_WRONG_TYPE, s->errstr, s->size,
			      "field \"%s\" index %u is a %s, not an int", s->col->name, i,
			      cs_decode_type_name(e));
	if (e->via.u64 >= (uint64_t)s->dim)
		return cs_decode_reject(CS_REASON_OUT_OF_RANGE, s->errstr, s->size,
			      "field \"%s\" index %u is out of range for sparsevec(%d): %llu",
			      s->col->name, i, s->dim, (unsigned long long)e->via.u64);
	*index = (uint32_t)e->via.u64;
	return CS_REASON_OK;
}

/* Value i of the map form as a finite float32. */
static cs_reason_t sparse_value(const sparse_t *s, const msgpack_object *val, uint32_t i,
				float *f)
{
	num_t n = {0, 0};

	if (!number(&val->via.array.ptr[i], &n))
		return cs_decode_reject(CS_REASON_WRONG_TYPE, s->errstr, s->size,
			      "field \"%s\" value %u is a %s, not a number", s->col->name, i,
			      cs_decode_type_name(&val->via.array.ptr[i]));
	if (!isfinite(n.f))
		return cs_decode_reject(CS_REASON_NOT_FINITE, s->errstr, s->size,
			      "field \"%s\" value %u is not a finite float32", s->col->name, i);
	*f = n.f;
	return CS_REASON_OK;
}

/* Add a pair (zeros are left out: sparsevec stores none); notes whether order holds. */
static void sparse_add(sparse_t *s, uint32_t index, float f)
{
	if (f == 0.0f)
		return;
	if (s->nnz > 0 && (uint32_t)(s->pairs[s->nnz - 1] >> 32) >= index)
		s->sorted = false;
	s->pairs[s->nnz++] = (uint64_t)index << 32 | f32_bits(f);
}

/* Count the non-zero values of the input (every index and value checked), so that room can
 * be reserved for exactly them. */
static cs_reason_t sparse_count(const sparse_t *s, const msgpack_object *idx,
				const msgpack_object *val, dense_t *d, uint32_t *nnz)
{
	uint32_t n = idx ? idx->via.array.size : d->n;
	cs_reason_t r;

	*nnz = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t index;
		num_t v = {0, 0};

		if (idx != NULL && ((r = sparse_index(s, idx, i, &index)) != CS_REASON_OK ||
				    (r = sparse_value(s, val, i, &v.f)) != CS_REASON_OK))
			return r;
		if (idx == NULL && (r = dense_value(d, i, &v)) != CS_REASON_OK)
			return r;
		*nnz += v.f != 0.0f;
	}
	if (*nnz > CS_SPARSEVEC_MAX_NNZ)
		return cs_decode_reject(CS_REASON_EMBEDDING_DIM, s->errstr, s->size,
			      "field \"%s\" has %u non-zero values, more than the %d of a sparsevec",
			      s->col->name, *nnz, CS_SPARSEVEC_MAX_NNZ);
	return CS_REASON_OK;
}

/* Sort the pairs if needed and refuse an index given twice. */
static cs_reason_t sparse_order(sparse_t *s)
{
	if (!s->sorted)
		qsort(s->pairs, s->nnz, sizeof(s->pairs[0]), pair_cmp);
	for (uint32_t i = 1; i < s->nnz; i++)
		if (s->pairs[i] >> 32 == s->pairs[i - 1] >> 32)
			return cs_decode_reject(CS_REASON_EMBEDDING_DIM, s->errstr, s->size,
				      "field \"%s\" has index %u twice", s->col->name,
				      (unsigned)(s->pairs[i] >> 32));
	return CS_REASON_OK;
}

/* A sparsevec from the map form or a dense embedding. */
static cs_reason_t put_sparsevec(const cs_column_t *col, int dim, const msgpack_object *o,
				 cs_buf_t *out, char *errstr, size_t size)
{
	sparse_t s = {.col = col, .dim = dim, .sorted = true, .errstr = errstr, .size = size};
	dense_t d = {.col = col, .o = o, .errstr = errstr, .size = size};
	const msgpack_object *idx = NULL, *val = NULL;
	size_t bytes, scratch;
	uint32_t nnz;
	unsigned char *p;
	cs_reason_t r;

	r = o->type == MSGPACK_OBJECT_MAP ? sparse_arrays(&s, o, &idx, &val) : dense_open(&d, dim,
											   false);
	if (r == CS_REASON_OK)
		r = sparse_count(&s, idx, val, &d, &nnz);
	if (r != CS_REASON_OK)
		return r;
	/* the field, then the pairs in scratch room behind it, 8-byte aligned */
	bytes = 12 + 8 * (size_t)nnz;
	scratch = (out->len + 4 + bytes + 7) & ~(size_t)7;
	if (cs_buf_reserve(out, scratch - out->len + 8 * (size_t)nnz) != 0)
		return OOM;
	s.pairs = (uint64_t *)(void *)(out->data + scratch);
	for (uint32_t i = 0; i < (idx ? idx->via.array.size : d.n); i++) {
		uint32_t index = i;
		num_t v = {0, 0};

		if (idx != NULL) {
			(void)sparse_index(&s, idx, i, &index); /* checked by sparse_count() */
			(void)sparse_value(&s, val, i, &v.f);
		} else {
			(void)dense_value(&d, i, &v);
		}
		sparse_add(&s, index, v.f);
	}
	if ((r = sparse_order(&s)) != CS_REASON_OK)
		return r;
	p = be32((unsigned char *)out->data + out->len, (uint32_t)bytes);
	p = be32(be32(be32(p, (uint32_t)dim), nnz), 0); /* dim, nnz, unused */
	for (uint32_t i = 0; i < nnz; i++)
		p = be32(p, (uint32_t)(s.pairs[i] >> 32));
	for (uint32_t i = 0; i < nnz; i++)
		p = be32(p, (uint32_t)s.pairs[i]);
	out->len += 4 + bytes;
	return CS_REASON_OK;
}

/* ---------------------------------------------------------------- the column */

/* The encoding of an embedding column: the catalog's, else the configured type's. */
static cs_colenc_t encoding(const cs_column_t *col)
{
	if (col->enc != CS_ENC_DEFAULT)
		return col->enc;
	switch (col->emb_type) {
	case CS_EMB_VECTOR: return CS_ENC_VECTOR;
	case CS_EMB_HALFVEC: return CS_ENC_HALFVEC;
	case CS_EMB_SPARSEVEC: return CS_ENC_SPARSEVEC;
	default: return CS_ENC_FLOAT4_ARRAY;
	}
}

cs_reason_t cs_embedding_put(const cs_column_t *col, int dim, const msgpack_object *o,
			     cs_buf_t *out, char *errstr, size_t errstr_size)
{
	cs_colenc_t enc = encoding(col);
	dense_t d = {.col = col, .o = o, .halfvec = enc == CS_ENC_HALFVEC, .errstr = errstr,
		     .size = errstr_size};

	switch (enc) {
	case CS_ENC_VECTOR: return put_float32s(&d, dim, true, out);
	case CS_ENC_HALFVEC: return put_halfvec(&d, dim, out);
	case CS_ENC_SPARSEVEC: return put_sparsevec(col, dim, o, out, errstr, errstr_size);
	default: return put_float32s(&d, dim, false, out);
	}
}
