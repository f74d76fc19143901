/*
 * test_pgbinary.c - the binary COPY encoders of uuid, timestamptz, date, numeric, bytea and the
 * numeric arrays, byte for byte, and every rejection with its reason
 *
 * The expected bytes are PostgreSQL's own: each was taken from the server's send function of
 * the same value (uuid_send, timestamptz_send, date_send, numeric_send, array_send), preceded
 * by the field's 4-byte length. The last tests go through the decoder: json columns, the
 * canonical key of a numeric, an array with NULL elements in a whole tuple.
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
#include "copysink/pgbinary.h"

/* ---------------------------------------------------------------- inputs */

/* One msgpack value, packed by msgpack-c itself so inputs do not depend on the code tested. */
typedef enum kind { STR, INT, UINT, F64, F32, BIN, RAW, BOOL } kind_t;

typedef struct in {
	kind_t kind;
	const char *s; /* STR: the string; BIN: its bytes in hex; RAW: the msgpack bytes in hex */
	int64_t i;
	uint64_t u;
	double f;
} in_t;

#define S(x) {.kind = STR, .s = (x)}
#define I(x) {.kind = INT, .i = (x)}
#define U(x) {.kind = UINT, .u = (x)}
#define F(x) {.kind = F64, .f = (x)}
#define F32(x) {.kind = F32, .f = (x)}
#define B(x) {.kind = BIN, .s = (x)}
#define X(x) {.kind = RAW, .s = (x)}
#define TRUE_ {.kind = BOOL}

static msgpack_zone zone;
static msgpack_sbuffer sbuf; /* the packed value: its str and bin stay in it, not copied */
static cs_buf_t out;
static char err[512];

/* Hex (spaces allowed) to bytes; @returns the count. */
static size_t unhex(const char *hex, unsigned char *b, size_t size)
{
	size_t n = 0;

	for (const char *p = hex; *p != '\0'; p++) {
		unsigned v;
		if (*p == ' ')
			continue;
		assert_true(sscanf(p, "%2x", &v) == 1);
		assert_true(n < size);
		b[n++] = (unsigned char)v;
		p++;
	}
	return n;
}

/* Lower-case hex of n bytes into a static buffer. */
static const char *hex(const char *p, size_t n)
{
	static char s[4096];

	assert_true(2 * n < sizeof(s));
	for (size_t i = 0; i < n; i++)
		snprintf(s + 2 * i, 3, "%02x", (unsigned char)p[i]);
	s[2 * n] = '\0';
	return s;
}

/* Hex without its spaces, for comparisons. */
static const char *squeeze(const char *h)
{
	static char s[4096];
	size_t o = 0;

	for (; *h != '\0' && o + 1 < sizeof(s); h++)
		if (*h != ' ')
			s[o++] = *h;
	s[o] = '\0';
	return s;
}

/* The msgpack object of an input, valid until the next call. */
static msgpack_object object_of(const in_t *in)
{
	unsigned char raw[2048];
	msgpack_packer pk;
	msgpack_object o;
	size_t off = 0, n;

	msgpack_sbuffer_clear(&sbuf);
	msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
	switch (in->kind) {
	case STR: msgpack_pack_str_with_body(&pk, in->s, strlen(in->s)); break;
	case INT: msgpack_pack_int64(&pk, in->i); break;
	case UINT: msgpack_pack_uint64(&pk, in->u); break;
	case F64: msgpack_pack_double(&pk, in->f); break;
	case F32: msgpack_pack_float(&pk, (float)in->f); break;
	case BOOL: msgpack_pack_true(&pk); break;
	case BIN:
		n = unhex(in->s, raw, sizeof(raw));
		msgpack_pack_bin_with_body(&pk, raw, n);
		break;
	case RAW:
		n = unhex(in->s, raw, sizeof(raw));
		msgpack_sbuffer_write(&sbuf, (const char *)raw, n);
		break;
	}
	assert_int_equal(msgpack_unpack(sbuf.data, sbuf.size, &off, &zone, &o),
			 MSGPACK_UNPACK_SUCCESS);
	assert_int_equal(off, sbuf.size);
	return o;
}

static int setup(void **state)
{
	assert_true(msgpack_zone_init(&zone, 4096));
	msgpack_sbuffer_init(&sbuf);
	cs_buf_init(&out);
	(void)state;
	return 0;
}

static int teardown(void **state)
{
	msgpack_zone_destroy(&zone);
	msgpack_sbuffer_destroy(&sbuf);
	cs_buf_cleanup(&out);
	(void)state;
	return 0;
}

/* Encode `in` as a column of `type` called "f", limit 1 MiB. */
static cs_reason_t encode(cs_coltype_t type, const in_t *in)
{
	cs_column_t col = {.name = "f", .type = type};
	msgpack_object o = object_of(in);

	cs_buf_reset(&out);
	err[0] = '\0';
	return cs_pgbinary_put(&col, &o, 1024 * 1024, &out, err, sizeof(err));
}

/* ---------------------------------------------------------------- cases */

typedef struct ok_case {
	const char *what;
	cs_coltype_t type;
	in_t in;
	const char *want; /* the field in hex: length, then the send format */
} ok_case_t;

typedef struct bad_case {
	const char *what;
	cs_coltype_t type;
	in_t in;
	cs_reason_t reason;
	const char *error; /* a part of the message */
} bad_case_t;

static void run_ok(const ok_case_t *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const ok_case_t *c = &cases[i];
		cs_reason_t r = encode(c->type, &c->in);
		const char *want = squeeze(c->want);

		if (r != CS_REASON_OK)
			fail_msg("%s: rejected as %s: %s", c->what, cs_reason_name(r), err);
		if (strcmp(hex(out.data, out.len), want) != 0)
			fail_msg("%s: got %s, expected %s", c->what, hex(out.data, out.len), want);
	}
}

static void run_bad(const bad_case_t *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const bad_case_t *c = &cases[i];
		cs_reason_t r = encode(c->type, &c->in);

		if (r != c->reason || strstr(err, c->error) == NULL)
			fail_msg("%s: got %s \"%s\", expected %s \"...%s...\"", c->what,
				 cs_reason_name(r), err, cs_reason_name(c->reason), c->error);
		if (strstr(err, "field \"f\"") == NULL)
			fail_msg("%s: the message does not name the field: %s", c->what, err);
	}
}

#define RUN_OK(cases) run_ok(cases, sizeof(cases) / sizeof(cases[0]))
#define RUN_BAD(cases) run_bad(cases, sizeof(cases) / sizeof(cases[0]))

/* ---------------------------------------------------------------- uuid */

#define UUID_BYTES "00000010 a0eebc999c0b4ef8bb6d6bb9bd380a11"

static void test_uuid(void **state)
{
	static const ok_case_t ok[] = {
		{"lower case", CS_COL_UUID, S("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), UUID_BYTES},
		{"upper case", CS_COL_UUID, S("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"), UUID_BYTES},
		{"mixed case", CS_COL_UUID, S("a0EEbc99-9C0b-4eF8-Bb6d-6bb9BD380a11"), UUID_BYTES},
		{"bin of 16", CS_COL_UUID, B("a0eebc999c0b4ef8bb6d6bb9bd380a11"), UUID_BYTES},
		{"nil uuid", CS_COL_UUID, S("00000000-0000-0000-0000-000000000000"),
		 "00000010 00000000000000000000000000000000"},
		{"max uuid", CS_COL_UUID, S("ffffffff-ffff-ffff-ffff-ffffffffffff"),
		 "00000010 ffffffffffffffffffffffffffffffff"},
	};
	static const bad_case_t bad[] = {
		{"35 chars", CS_COL_UUID, S("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1"),
		 CS_REASON_INVALID_FORMAT, "is not a uuid"},
		{"37 chars", CS_COL_UUID, S("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111"),
		 CS_REASON_INVALID_FORMAT, "is not a uuid"},
		{"no hyphens", CS_COL_UUID, S("a0eebc999c0b4ef8bb6d6bb9bd380a11"),
		 CS_REASON_INVALID_FORMAT, "is not a uuid"},
		{"braces", CS_COL_UUID, S("{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
		 CS_REASON_INVALID_FORMAT, "is not a uuid"},
		{"hyphen moved", CS_COL_UUID, S("a0eebc999-c0b-4ef8-bb6d-6bb9bd380a11"),
		 CS_REASON_INVALID_FORMAT, "is not a uuid"},
		{"not hex", CS_COL_UUID, S("g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
		 CS_REASON_INVALID_FORMAT, "is not a uuid"},
		{"empty", CS_COL_UUID, S(""), CS_REASON_INVALID_FORMAT, "is not a uuid"},
		{"bin of 15", CS_COL_UUID, B("a0eebc999c0b4ef8bb6d6bb9bd380a"),
		 CS_REASON_INVALID_FORMAT, "is a bin of 15 bytes, a uuid has 16"},
		{"bin of 17", CS_COL_UUID, B("a0eebc999c0b4ef8bb6d6bb9bd380a1100"),
		 CS_REASON_INVALID_FORMAT, "is a bin of 17 bytes"},
		{"int", CS_COL_UUID, I(7), CS_REASON_WRONG_TYPE,
		 "must be a uuid string or a bin of 16 bytes, got int"},
	};
	(void)state;
	RUN_OK(ok);
	RUN_BAD(bad);
}

/* ---------------------------------------------------------------- timestamptz */

#define TS_20261203 "00000008 000304b9f1a95800" /* 2026-12-03 14:00:00 UTC */

static void test_timestamptz(void **state)
{
	static const ok_case_t ok[] = {
		{"Z", CS_COL_TIMESTAMPTZ, S("2026-12-03T14:00:00Z"), TS_20261203},
		{"+02:00", CS_COL_TIMESTAMPTZ, S("2026-12-03T16:00:00+02:00"), TS_20261203},
		{"-04:30", CS_COL_TIMESTAMPTZ, S("2026-12-03T09:30:00-04:30"), TS_20261203},
		{"lower case t and z", CS_COL_TIMESTAMPTZ, S("2026-12-03t14:00:00z"), TS_20261203},
		{"space", CS_COL_TIMESTAMPTZ, S("2026-12-03 14:00:00Z"), TS_20261203},
		{"-00:00", CS_COL_TIMESTAMPTZ, S("2026-12-03T14:00:00-00:00"), TS_20261203},
		{"the epoch", CS_COL_TIMESTAMPTZ, S("2000-01-01T00:00:00Z"),
		 "00000008 0000000000000000"},
		{"1 us before 2000", CS_COL_TIMESTAMPTZ, S("1999-12-31T23:59:59.999999Z"),
		 "00000008 ffffffffffffffff"},
		{"1970", CS_COL_TIMESTAMPTZ, S("1970-01-01T00:00:00Z"),
		 "00000008 fffca2fec4c82000"},
		{"1969, half a second", CS_COL_TIMESTAMPTZ, S("1969-07-20T20:17:40.5Z"),
		 "00000008 fffc96188bb60220"},
		/* PostgreSQL rounds the fraction to the microsecond with rint(): half to even */
		{"0.5 us rounds down to even", CS_COL_TIMESTAMPTZ,
		 S("2026-12-03T14:00:00.0000005Z"), TS_20261203},
		{"1.5 us rounds up to even", CS_COL_TIMESTAMPTZ,
		 S("2026-12-03T14:00:00.0000015Z"), "00000008 000304b9f1a95802"},
		{"rounds into the next second", CS_COL_TIMESTAMPTZ,
		 S("2026-12-03T14:00:00.9999995Z"), "00000008 000304b9f1b89a40"},
		{"nanoseconds", CS_COL_TIMESTAMPTZ, S("2026-12-03T14:00:00.123456789Z"),
		 "00000008 000304b9f1ab3a41"},
		{"year 1", CS_COL_TIMESTAMPTZ, S("0001-01-01T00:00:00Z"),
		 "00000008 ff1fe2ffc59c6000"},
		{"year 9999, -15:59", CS_COL_TIMESTAMPTZ, S("9999-12-31T23:59:59.999999-15:59"),
		 "00000008 0380e718f6e238ff"},
		{"leap second", CS_COL_TIMESTAMPTZ, S("2016-12-31T23:59:60Z"),
		 "00000008 0001e7fbe286c000"},
		{"29 February", CS_COL_TIMESTAMPTZ, S("2024-02-29T12:00:00Z"),
		 "00000008 0002b582c4781000"},
		{"1900, +00:01", CS_COL_TIMESTAMPTZ, S("1900-03-01T00:00:00.000001+00:01"),
		 "00000008 fff4ce91591b1901"},
		/* epoch milliseconds */
		{"ms 0", CS_COL_TIMESTAMPTZ, I(0), "00000008 fffca2fec4c82000"},
		{"ms -1", CS_COL_TIMESTAMPTZ, I(-1), "00000008 fffca2fec4c81c18"},
		{"ms 2025", CS_COL_TIMESTAMPTZ, I(1764770400000), "00000008 0002e80b65957800"},
		{"ms lowest", CS_COL_TIMESTAMPTZ, I(-210866803200000),
		 "00000008 fd0f7cc1411fa000"}, /* 4714-11-24 00:00:00 UTC BC */
		{"ms highest", CS_COL_TIMESTAMPTZ, I(9224318015999999),
		 "00000008 7fffff5bb3b29c18"}, /* 294276-12-31 23:59:59.999 UTC */
		/* the msgpack timestamp extension */
		{"ext 32", CS_COL_TIMESTAMPTZ, X("d6ff 6b1175e0"), TS_20261203},
		{"ext 32 zero", CS_COL_TIMESTAMPTZ, X("d6ff 00000000"), "00000008 fffca2fec4c82000"},
		{"ext 64", CS_COL_TIMESTAMPTZ, X("d7ff 00001f40 00000001"),
		 "00000008 fffca2fec4d76242"}, /* 1 s 2000 ns */
		{"ext 64 1500 ns to even", CS_COL_TIMESTAMPTZ, X("d7ff 00001770 00000001"),
		 "00000008 fffca2fec4d76242"},
		{"ext 64 2500 ns to even", CS_COL_TIMESTAMPTZ, X("d7ff 00002710 00000001"),
		 "00000008 fffca2fec4d76242"},
		{"ext 64 500 ns", CS_COL_TIMESTAMPTZ, X("d7ff 000007d0 00000001"),
		 "00000008 fffca2fec4d76240"},
		{"ext 64 501 ns", CS_COL_TIMESTAMPTZ, X("d7ff 000007d4 00000001"),
		 "00000008 fffca2fec4d76241"},
		{"ext 96 before 1970", CS_COL_TIMESTAMPTZ, X("c70cff 00000000 ffffffffffffffff"),
		 "00000008 fffca2fec4b8ddc0"},
		{"ext 96 rounds up a second", CS_COL_TIMESTAMPTZ,
		 X("c70cff 3b9ac9ff ffffffffffffffff"), "00000008 fffca2fec4c82000"},
	};
	static const bad_case_t bad[] = {
		{"no offset", CS_COL_TIMESTAMPTZ, S("2026-12-03T14:00:00"), CS_REASON_INVALID_FORMAT,
		 "has no UTC offset (end it with Z or +HH:MM)"},
		{"no offset, fraction", CS_COL_TIMESTAMPTZ, S("2026-12-03T14:00:00.5"),
		 CS_REASON_INVALID_FORMAT, "has no UTC offset"},
		{"a date", CS_COL_TIMESTAMPTZ, S("2026-12-03"), CS_REASON_INVALID_FORMAT,
		 "is not an RFC 3339 timestamp"},
		{"no seconds", CS_COL_TIMESTAMPTZ, S("2026-12-03T14:00Z"), CS_REASON_INVALID_FORMAT,
		 "is not an RFC 3339 timestamp"},
		{"empty fraction", CS_COL_TIMESTAMPTZ, S("2026-12-03T14:00:00.Z"),
		 CS_REASON_INVALID_FORMAT, "is not an RFC 3339 timestamp"},
		{"offset without colon", CS_COL_TIMESTAMPTZ, S("2026-12-03T14:00:00+0200"),
		 CS_REASON_INVALID_FORMAT, "is not an RFC 3339 timestamp"},
		{"hour offset", CS_COL_TIMESTAMPTZ, S("2026-12-03T14:00:00+02"),
		 CS_REASON_INVALID_FORMAT, "is not an RFC 3339 timestamp"},
		{"zone name", CS_COL_TIMESTAMPTZ, S("2026-12-03T14:00:00 UTC"),
		 CS_REASON_INVALID_FORMAT, "is not an RFC 3339 timestamp"},
		{"trailing", CS_COL_TIMESTAMPTZ, S("2026-12-03T14:00:00Zx"),
		 CS_REASON_INVALID_FORMAT, "is not an RFC 3339 timestamp"},
		{"other separator", CS_COL_TIMESTAMPTZ, S("2026-12-03_14:00:00Z"),
		 CS_REASON_INVALID_FORMAT, "is not an RFC 3339 timestamp"},
		{"slashes", CS_COL_TIMESTAMPTZ, S("2026/12/03T14:00:00Z"), CS_REASON_INVALID_FORMAT,
		 "does not start with a date"},
		{"infinity", CS_COL_TIMESTAMPTZ, S("infinity"), CS_REASON_INVALID_FORMAT,
		 "is not an RFC 3339 timestamp"},
		{"no 29 February", CS_COL_TIMESTAMPTZ, S("2026-02-29T00:00:00Z"),
		 CS_REASON_INVALID_FORMAT, "is not a valid date: there is no 2026-02-29"},
		{"month 13", CS_COL_TIMESTAMPTZ, S("2026-13-01T00:00:00Z"), CS_REASON_INVALID_FORMAT,
		 "there is no 2026-13-01"},
		{"hour 24", CS_COL_TIMESTAMPTZ, S("2026-12-03T24:00:00Z"), CS_REASON_INVALID_FORMAT,
		 "is not a valid time: 24:00:00"},
		{"second 61", CS_COL_TIMESTAMPTZ, S("2026-12-03T14:00:61Z"), CS_REASON_INVALID_FORMAT,
		 "is not a valid time"},
		{"offset 24:00", CS_COL_TIMESTAMPTZ, S("2026-12-03T14:00:00+24:00"),
		 CS_REASON_INVALID_FORMAT, "offset 24:00"},
		{"year 0", CS_COL_TIMESTAMPTZ, S("0000-01-01T00:00:00Z"), CS_REASON_OUT_OF_RANGE,
		 "year 0000"},
		{"too long", CS_COL_TIMESTAMPTZ,
		 S("2026-12-03T14:00:00.000000000000000000000000000000000000000000000000Z"),
		 CS_REASON_INVALID_FORMAT, "is not an RFC 3339 timestamp"},
		{"ms below", CS_COL_TIMESTAMPTZ, I(-210866803200001), CS_REASON_OUT_OF_RANGE,
		 "is out of range for timestamptz: -210866803200001 milliseconds"},
		{"ms above", CS_COL_TIMESTAMPTZ, I(9224318016000000), CS_REASON_OUT_OF_RANGE,
		 "is out of range for timestamptz"},
		{"ms int64 min", CS_COL_TIMESTAMPTZ, I(INT64_MIN), CS_REASON_OUT_OF_RANGE,
		 "is out of range"},
		{"ms above int64", CS_COL_TIMESTAMPTZ, U(UINT64_MAX), CS_REASON_OUT_OF_RANGE,
		 "is out of range: 18446744073709551615 milliseconds"},
		{"float", CS_COL_TIMESTAMPTZ, F(1.5), CS_REASON_WRONG_TYPE,
		 "must be an RFC 3339 string, an int of epoch milliseconds or a timestamp ext, "
		 "got float"},
		{"bool", CS_COL_TIMESTAMPTZ, TRUE_, CS_REASON_WRONG_TYPE, "got bool"},
		{"other ext", CS_COL_TIMESTAMPTZ, X("d605 00000000"), CS_REASON_WRONG_TYPE,
		 "is an ext of type 5, not a timestamp (-1)"},
		{"ext of 5 bytes", CS_COL_TIMESTAMPTZ, X("c705ff 0000000000"),
		 CS_REASON_INVALID_FORMAT, "is a timestamp ext of 5 bytes, not 4, 8 or 12"},
		{"ext 96, 10^9 ns", CS_COL_TIMESTAMPTZ, X("c70cff 3b9aca00 0000000000000000"),
		 CS_REASON_INVALID_FORMAT, "with 1000000000 nanoseconds"},
		{"ext 96 far future", CS_COL_TIMESTAMPTZ, X("c70cff 00000000 4000000000000000"),
		 CS_REASON_OUT_OF_RANGE, "is out of range for timestamptz"},
		{"ext 96 far past", CS_COL_TIMESTAMPTZ, X("c70cff 00000000 8000000000000000"),
		 CS_REASON_OUT_OF_RANGE, "is out of range for timestamptz"},
	};
	(void)state;
	RUN_OK(ok);
	RUN_BAD(bad);
}

/* ---------------------------------------------------------------- date */

static void test_date(void **state)
{
	static const ok_case_t ok[] = {
		{"2026", CS_COL_DATE, S("2026-12-03"), "00000004 00002669"},
		{"the epoch", CS_COL_DATE, S("2000-01-01"), "00000004 00000000"},
		{"the day before", CS_COL_DATE, S("1999-12-31"), "00000004 ffffffff"},
		{"leap year", CS_COL_DATE, S("2024-02-29"), "00000004 00002279"},
		{"leap 400-year", CS_COL_DATE, S("2000-02-29"), "00000004 0000003b"},
		{"year 1", CS_COL_DATE, S("0001-01-01"), "00000004 fff4dbf9"},
		{"year 9999", CS_COL_DATE, S("9999-12-31"), "00000004 002c95d3"},
		{"ms 1970", CS_COL_DATE, I(0), "00000004 ffffd533"},
		{"ms 2026", CS_COL_DATE, I(1796256000000), "00000004 00002669"},
		{"ms first day", CS_COL_DATE, I(-210866803200000),
		 "00000004 ffda97a7"}, /* 4714-11-24 BC */
		{"ms last day", CS_COL_DATE, I(185331706992000000),
		 "00000004 7fda970c"}, /* 5874897-12-31 */
		{"ext 32", CS_COL_DATE, X("d6ff 6b10b100"), "00000004 00002669"},
		{"ext 96 before 1970", CS_COL_DATE, X("c70cff 00000000 fffffffffffeae80"),
		 "00000004 ffffd532"},
	};
	static const bad_case_t bad[] = {
		{"no 29 February", CS_COL_DATE, S("2023-02-29"), CS_REASON_INVALID_FORMAT,
		 "there is no 2023-02-29"},
		{"1900 not leap", CS_COL_DATE, S("1900-02-29"), CS_REASON_INVALID_FORMAT,
		 "there is no 1900-02-29"},
		{"31 April", CS_COL_DATE, S("2026-04-31"), CS_REASON_INVALID_FORMAT,
		 "there is no 2026-04-31"},
		{"day 0", CS_COL_DATE, S("2026-04-00"), CS_REASON_INVALID_FORMAT, "there is no"},
		{"one digit", CS_COL_DATE, S("2026-12-3"), CS_REASON_INVALID_FORMAT,
		 "is not a date (YYYY-MM-DD)"},
		{"slashes", CS_COL_DATE, S("2026/12/03"), CS_REASON_INVALID_FORMAT,
		 "does not start with a date"},
		{"a timestamp", CS_COL_DATE, S("2026-12-03T00:00:00Z"), CS_REASON_INVALID_FORMAT,
		 "is not a date (YYYY-MM-DD)"},
		{"year 0", CS_COL_DATE, S("0000-01-01"), CS_REASON_OUT_OF_RANGE, "year 0000"},
		{"ms not midnight", CS_COL_DATE, I(1796256000001), CS_REASON_INVALID_FORMAT,
		 "is not midnight UTC: a date takes whole days"},
		{"ms before the first day", CS_COL_DATE, I(-210866889600000),
		 CS_REASON_OUT_OF_RANGE, "is out of range for date"},
		{"ms after the last day", CS_COL_DATE, I(185331707078400000),
		 CS_REASON_OUT_OF_RANGE, "is out of range for date"},
		{"ext with ns", CS_COL_DATE, X("d7ff 00000004 6b10b100"), CS_REASON_INVALID_FORMAT,
		 "is not midnight UTC"},
		{"ext far future", CS_COL_DATE, X("c70cff 00000000 0132f4579c980000"),
		 CS_REASON_OUT_OF_RANGE, "is out of range for date"},
		{"float", CS_COL_DATE, F(1.0), CS_REASON_WRONG_TYPE,
		 "must be a YYYY-MM-DD string, an int of epoch milliseconds or a timestamp ext, "
		 "got float"},
	};
	(void)state;
	RUN_OK(ok);
	RUN_BAD(bad);
}

/* ---------------------------------------------------------------- numeric */

static void test_numeric(void **state)
{
	/* length, ndigits, weight, sign (4000: negative), dscale, base-10000 digits */
	static const ok_case_t ok[] = {
		{"0", CS_COL_NUMERIC, S("0"), "00000008 0000 0000 0000 0000"},
		{"0.00 keeps its scale", CS_COL_NUMERIC, S("0.00"), "00000008 0000 0000 0000 0002"},
		{"-0.00 is positive", CS_COL_NUMERIC, S("-0.00"), "00000008 0000 0000 0000 0002"},
		{"000", CS_COL_NUMERIC, S("000"), "00000008 0000 0000 0000 0000"},
		{"-123.4500", CS_COL_NUMERIC, S("-123.4500"),
		 "0000000c 0002 0000 4000 0004 007b 1194"},
		{"1e-3", CS_COL_NUMERIC, S("1e-3"), "0000000a 0001 ffff 0000 0003 000a"},
		{"1.50e-1", CS_COL_NUMERIC, S("1.50e-1"), "0000000a 0001 ffff 0000 0003 05dc"},
		{"12345678.9", CS_COL_NUMERIC, S("12345678.9"),
		 "0000000e 0003 0001 0000 0001 04d2 162e 2328"},
		{"1e100: weight 25", CS_COL_NUMERIC, S("1e100"), "0000000a 0001 0019 0000 0000 0001"},
		{".5", CS_COL_NUMERIC, S(".5"), "0000000a 0001 ffff 0000 0001 1388"},
		{"5.", CS_COL_NUMERIC, S("5."), "0000000a 0001 0000 0000 0000 0005"},
		{"+7", CS_COL_NUMERIC, S("+7"), "0000000a 0001 0000 0000 0000 0007"},
		{"1.5E+3", CS_COL_NUMERIC, S("1.5E+3"), "0000000a 0001 0000 0000 0000 05dc"},
		{"0.0001", CS_COL_NUMERIC, S("0.0001"), "0000000a 0001 ffff 0000 0004 0001"},
		{"-9999.9999", CS_COL_NUMERIC, S("-9999.9999"),
		 "0000000c 0002 0000 4000 0004 270f 270f"},
		{"10000", CS_COL_NUMERIC, S("10000"), "0000000a 0001 0001 0000 0000 0001"},
		{"100", CS_COL_NUMERIC, S("100"), "0000000a 0001 0000 0000 0000 0064"},
		{"2.5", CS_COL_NUMERIC, S("2.5"), "0000000c 0002 0000 0000 0001 0002 1388"},
		{"30 digits", CS_COL_NUMERIC, S("123456789012345678901234567890"),
		 "00000018 0008 0007 0000 0000 000c 0d80 1ed2 04d2 162e 2334 0d80 1ed2"},
		{"smallest scale", CS_COL_NUMERIC, S("1e-16383"),
		 "0000000a 0001 f000 0000 3fff 000a"},
		{"largest weight", CS_COL_NUMERIC, S("1e131071"),
		 "0000000a 0001 7fff 0000 0000 03e8"},
		{"0e-5", CS_COL_NUMERIC, S("0e-5"), "00000008 0000 0000 0000 0005"},
		{"0e999999999999", CS_COL_NUMERIC, S("0e999999999999"),
		 "00000008 0000 0000 0000 0000"},
		/* ints */
		{"int 0", CS_COL_NUMERIC, I(0), "00000008 0000 0000 0000 0000"},
		{"int -1", CS_COL_NUMERIC, I(-1), "0000000a 0001 0000 4000 0000 0001"},
		{"uint64 max", CS_COL_NUMERIC, U(UINT64_MAX),
		 "00000012 0005 0004 0000 0000 0734 1a58 02e1 03bb 064f"},
		{"int64 min", CS_COL_NUMERIC, I(INT64_MIN),
		 "00000012 0005 0004 4000 0000 039a 0d2c 0170 1565 16b0"},
		/* floats: the shortest form that reads back */
		{"float 0.1", CS_COL_NUMERIC, F(0.1), "0000000a 0001 ffff 0000 0001 03e8"},
		{"float32 0.1", CS_COL_NUMERIC, F32(0.1), "0000000a 0001 ffff 0000 0001 03e8"},
		{"float 100.0", CS_COL_NUMERIC, F(100.0), "0000000a 0001 0000 0000 0000 0064"},
		{"float -2.5", CS_COL_NUMERIC, F(-2.5), "0000000c 0002 0000 4000 0001 0002 1388"},
		{"float -0.0", CS_COL_NUMERIC, F(-0.0), "00000008 0000 0000 0000 0000"},
		{"float 1e100", CS_COL_NUMERIC, F(1e100), "0000000a 0001 0019 0000 0000 0001"},
		/* 15 digits read back as this one (as in jsonb), not the shortest "5e-324" */
		{"float denormal", CS_COL_NUMERIC, F(4.9406564584124654e-324),
		 "00000012 0005 ffaf 0000 0152 0004 24be 160d 20dc 125c"},
	};
	static const bad_case_t bad[] = {
		{"letters", CS_COL_NUMERIC, S("abc"), CS_REASON_INVALID_FORMAT,
		 "is not a decimal number"},
		{"empty", CS_COL_NUMERIC, S(""), CS_REASON_INVALID_FORMAT, "is not a decimal number"},
		{"a point", CS_COL_NUMERIC, S("."), CS_REASON_INVALID_FORMAT, "not a decimal"},
		{"a sign", CS_COL_NUMERIC, S("-"), CS_REASON_INVALID_FORMAT, "not a decimal"},
		{"no exponent digits", CS_COL_NUMERIC, S("1e"), CS_REASON_INVALID_FORMAT,
		 "not a decimal"},
		{"two points", CS_COL_NUMERIC, S("1.2.3"), CS_REASON_INVALID_FORMAT, "not a decimal"},
		{"blank", CS_COL_NUMERIC, S(" 1"), CS_REASON_INVALID_FORMAT, "not a decimal"},
		{"comma", CS_COL_NUMERIC, S("1,5"), CS_REASON_INVALID_FORMAT, "not a decimal"},
		{"hex", CS_COL_NUMERIC, S("0x10"), CS_REASON_INVALID_FORMAT, "not a decimal"},
		{"underscore", CS_COL_NUMERIC, S("1_000"), CS_REASON_INVALID_FORMAT, "not a decimal"},
		{"NaN", CS_COL_NUMERIC, S("NaN"), CS_REASON_NOT_FINITE,
		 "is not finite: numeric takes finite numbers only"},
		{"-Infinity", CS_COL_NUMERIC, S("-Infinity"), CS_REASON_NOT_FINITE, "is not finite"},
		{"inf", CS_COL_NUMERIC, S("inf"), CS_REASON_NOT_FINITE, "is not finite"},
		{"float NaN", CS_COL_NUMERIC, F(NAN), CS_REASON_NOT_FINITE, "is not finite"},
		{"float inf", CS_COL_NUMERIC, F(INFINITY), CS_REASON_NOT_FINITE, "is not finite"},
		{"float32 -inf", CS_COL_NUMERIC, F32(-INFINITY), CS_REASON_NOT_FINITE,
		 "is not finite"},
		{"scale too large", CS_COL_NUMERIC, S("1e-16384"), CS_REASON_OUT_OF_RANGE,
		 "more than 16383 digits after the decimal point"},
		{"zero, scale too large", CS_COL_NUMERIC, S("0e-20000"), CS_REASON_OUT_OF_RANGE,
		 "after the decimal point"},
		{"weight too large", CS_COL_NUMERIC, S("1e131072"), CS_REASON_OUT_OF_RANGE,
		 "more than 131072 digits before the decimal point"},
		{"huge exponent", CS_COL_NUMERIC, S("1e99999999999999999999"),
		 CS_REASON_OUT_OF_RANGE, "before the decimal point"},
		{"huge negative exponent", CS_COL_NUMERIC, S("1e-99999999999999999999"),
		 CS_REASON_OUT_OF_RANGE, "after the decimal point"},
		{"bool", CS_COL_NUMERIC, TRUE_, CS_REASON_WRONG_TYPE,
		 "must be a decimal string or a number, got bool"},
		{"bin", CS_COL_NUMERIC, B("01"), CS_REASON_WRONG_TYPE, "got bin"},
	};
	(void)state;
	RUN_OK(ok);
	RUN_BAD(bad);
}

/* A numeric string above the field limit is too large, before it is parsed. */
static void test_numeric_limit(void **state)
{
	cs_column_t col = {.name = "f", .type = CS_COL_NUMERIC};
	in_t in = S("1234567890.5");
	msgpack_object o = object_of(&in);

	(void)state;
	assert_int_equal(cs_pgbinary_put(&col, &o, 8, &out, err, sizeof(err)),
			 CS_REASON_TOO_LARGE);
	assert_string_equal(err, "field \"f\" has 12 bytes, more than the limit of 8");
}

/* ---------------------------------------------------------------- bytea */

static void test_bytea(void **state)
{
	static const ok_case_t ok[] = {
		{"bytes", CS_COL_BYTEA, B("00ff10"), "00000003 00ff10"},
		{"empty", CS_COL_BYTEA, B(""), "00000000"},
	};
	static const bad_case_t bad[] = {
		{"str", CS_COL_BYTEA, S("abc"), CS_REASON_WRONG_TYPE, "must be a bin, got str"},
		{"array", CS_COL_BYTEA, X("9101"), CS_REASON_WRONG_TYPE, "got array"},
	};
	cs_column_t col = {.name = "f", .type = CS_COL_BYTEA};
	in_t big = B("0102030405");
	msgpack_object o;

	(void)state;
	RUN_OK(ok);
	RUN_BAD(bad);
	o = object_of(&big);
	assert_int_equal(cs_pgbinary_put(&col, &o, 4, &out, err, sizeof(err)),
			 CS_REASON_TOO_LARGE);
	assert_string_equal(err, "field \"f\" has 5 bytes, more than the limit of 4");
}

/* ---------------------------------------------------------------- arrays */

static void test_arrays(void **state)
{
	/* length, ndim, has-null, element OID, size, lower bound, then (length, bytes) each */
	static const ok_case_t ok[] = {
		{"float8[] with NULL", CS_COL_FLOAT8_ARRAY, X("93 cb3ff8000000000000 c0 fe"),
		 "00000030 00000001 00000001 000002bd 00000003 00000001 "
		 "00000008 3ff8000000000000 ffffffff 00000008 c000000000000000"},
		{"float8[] of float32", CS_COL_FLOAT8_ARRAY, X("91 ca3fc00000"),
		 "00000020 00000001 00000000 000002bd 00000001 00000001 00000008 3ff8000000000000"},
		{"int4[]", CS_COL_INT4_ARRAY, X("93 01 ff ce7fffffff"),
		 "0000002c 00000001 00000000 00000017 00000003 00000001 "
		 "00000004 00000001 00000004 ffffffff 00000004 7fffffff"},
		{"int4[] min", CS_COL_INT4_ARRAY, X("91 d280000000"),
		 "0000001c 00000001 00000000 00000017 00000001 00000001 00000004 80000000"},
		{"int8[] empty", CS_COL_INT8_ARRAY, X("90"),
		 "0000000c 00000000 00000000 00000014"},
		{"int8[] min, NULL", CS_COL_INT8_ARRAY, X("92 d38000000000000000 c0"),
		 "00000024 00000001 00000001 00000014 00000002 00000001 "
		 "00000008 8000000000000000 ffffffff"},
		{"int8[] max", CS_COL_INT8_ARRAY, X("91 cf7fffffffffffffff"),
		 "00000020 00000001 00000000 00000014 00000001 00000001 00000008 7fffffffffffffff"},
		{"int8[] all NULL", CS_COL_INT8_ARRAY, X("92 c0 c0"),
		 "0000001c 00000001 00000001 00000014 00000002 00000001 ffffffff ffffffff"},
	};
	static const bad_case_t bad[] = {
		{"not an array", CS_COL_INT4_ARRAY, I(1), CS_REASON_WRONG_TYPE,
		 "must be an array of integers, got int"},
		{"float8[] of str", CS_COL_FLOAT8_ARRAY, X("92 01 a161"), CS_REASON_WRONG_TYPE,
		 "element 1 is str, not a number"},
		{"float8[] NaN", CS_COL_FLOAT8_ARRAY, X("91 cb7ff8000000000000"),
		 CS_REASON_NOT_FINITE, "element 0 is not finite"},
		{"int4[] above", CS_COL_INT4_ARRAY, X("92 01 ce80000000"), CS_REASON_OUT_OF_RANGE,
		 "element 1 is out of range for integer: 2147483648"},
		{"int4[] far below", CS_COL_INT4_ARRAY, X("91 d3ffffffff7fffffff"),
		 CS_REASON_OUT_OF_RANGE, "element 0 is out of range for integer: -2147483649"},
		{"int8[] above", CS_COL_INT8_ARRAY, X("91 cf8000000000000000"),
		 CS_REASON_OUT_OF_RANGE, "element 0 is out of range for bigint: 9223372036854775808"},
		{"int4[] of float", CS_COL_INT4_ARRAY, X("91 cb3ff0000000000000"),
		 CS_REASON_WRONG_TYPE, "element 0 is float, not an integer"},
		{"nested", CS_COL_INT8_ARRAY, X("91 9101"), CS_REASON_WRONG_TYPE,
		 "element 0 is array, not an integer"},
	};
	(void)state;
	RUN_OK(ok);
	RUN_BAD(bad);
}

/* The element OID comes from the catalog when the schema check found one; the size limit
 * holds for the whole array. */
static void test_array_oid_and_limit(void **state)
{
	cs_column_t col = {.name = "f", .type = CS_COL_INT4_ARRAY, .elem_oid = 0x1234};
	in_t in = X("92 01 02");
	msgpack_object o = object_of(&in);

	(void)state;
	assert_int_equal(cs_pgbinary_put(&col, &o, 1024, &out, err, sizeof(err)), CS_REASON_OK);
	assert_string_equal(hex(out.data, out.len),
			    "0000002400000001000000000000123400000002000000010000000400000001"
			    "0000000400000002");
	cs_buf_reset(&out);
	assert_int_equal(cs_pgbinary_put(&col, &o, 35, &out, err, sizeof(err)),
			 CS_REASON_TOO_LARGE);
	assert_string_equal(err, "field \"f\" is larger than the limit of 35 bytes");
}

/* ---------------------------------------------------------------- through the decoder */

/* One spec of the new types; key: a numeric. Decodes one entry map given as msgpack hex. */
static cs_reason_t decode_hex(const char *spec_columns, const char *key, const char *mp,
			      cs_buf_t *tuples, cs_buf_t *keys)
{
	static cs_tablespec_t spec;
	cs_decode_limits_t limits;
	unsigned char raw[1024];
	size_t n = unhex(mp, raw, sizeof(raw));
	cs_decoder_t *dec;
	cs_reason_t reason;
	char e[512];

	memset(&spec, 0, sizeof(spec));
	snprintf(spec.name, sizeof(spec.name), "t");
	assert_int_equal(cs_tablespec_parse_columns(&spec, spec_columns, key, e, sizeof(e)), 0);
	cs_decode_limits_default(&limits);
	dec = cs_decoder_new(&limits);
	assert_non_null(dec);
	assert_int_equal(cs_decode_open(dec, raw, n, &reason, err, sizeof(err)), 1);
	reason = cs_decode_entry(dec, 0, &spec, tuples, keys, err, sizeof(err));
	cs_decoder_destroy(dec);
	return reason;
}

/* 1.5 and 1.50 are one key (PostgreSQL's unique index holds them equal), yet each tuple keeps
 * its own scale. */
static void test_numeric_key(void **state)
{
	cs_buf_t t1, k1, t2, k2;

	(void)state;
	cs_buf_init(&t1), cs_buf_init(&k1), cs_buf_init(&t2), cs_buf_init(&k2);
	/* {"n": "1.5"} and {"n": "1.50"} */
	assert_int_equal(decode_hex("n numeric not null", "n", "81 a16e a3312e35", &t1, &k1),
			 CS_REASON_OK);
	assert_int_equal(decode_hex("n numeric not null", "n", "81 a16e a4312e3530", &t2, &k2),
			 CS_REASON_OK);
	assert_string_equal(hex(t1.data, t1.len), "00010000000c000200000000000100011388");
	assert_string_equal(hex(t2.data, t2.len), "00010000000c000200000000000200011388");
	assert_int_equal(k1.len, k2.len);
	assert_memory_equal(k1.data, k2.data, k1.len);
	assert_string_equal(hex(k1.data, k1.len), "0000000c000200000000000000011388");
	cs_buf_cleanup(&t1), cs_buf_cleanup(&k1), cs_buf_cleanup(&t2), cs_buf_cleanup(&k2);
}

/* -0 and +0 are one key (a float's unique index holds them equal), in a float, a real and a
 * double precision[] element; each tuple keeps its own sign. */
static void test_float_zero_key(void **state)
{
	static const struct {
		const char *columns, *key, *neg, *pos;
	} cases[] = {
		{"f double precision not null", "f", "81 a166 cb8000000000000000",
		 "81 a166 cb0000000000000000"},
		{"f real not null", "f", "81 a166 ca80000000", "81 a166 ca00000000"},
		{"f double precision[] not null", "f", "81 a166 92 cb8000000000000000 c0",
		 "81 a166 92 cb0000000000000000 c0"},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cs_buf_t t1, k1, t2, k2;

		cs_buf_init(&t1), cs_buf_init(&k1), cs_buf_init(&t2), cs_buf_init(&k2);
		assert_int_equal(decode_hex(cases[i].columns, cases[i].key, cases[i].neg, &t1, &k1),
				 CS_REASON_OK);
		assert_int_equal(decode_hex(cases[i].columns, cases[i].key, cases[i].pos, &t2, &k2),
				 CS_REASON_OK);
		/* the tuples differ (the sign is stored as sent), the keys do not */
		assert_int_equal(t1.len, t2.len);
		assert_memory_not_equal(t1.data, t2.data, t1.len);
		assert_int_equal(k1.len, k2.len);
		assert_memory_equal(k1.data, k2.data, k1.len);
		cs_buf_cleanup(&t1), cs_buf_cleanup(&k1), cs_buf_cleanup(&t2), cs_buf_cleanup(&k2);
	}
}

/* A json column is the JSON text without jsonb's version byte; jsonb keeps it. */
static void test_json_column(void **state)
{
	cs_buf_t t, k;

	(void)state;
	cs_buf_init(&t), cs_buf_init(&k);
	/* {"id": 1, "j": {"a": [1, null]}, "b": {"a": [1, null]}} */
	assert_int_equal(decode_hex("id bigint, j json, b jsonb", "id",
				    "83 a26964 01 a16a 81a161 9201c0 a162 81a161 9201c0", &t, &k),
			 CS_REASON_OK);
	assert_string_equal(hex(t.data, t.len),
			    "0003" "00000008" "0000000000000001"
			    "0000000e" "7b2261223a5b312c6e756c6c5d7d"
			    "0000000f" "01" "7b2261223a5b312c6e756c6c5d7d");
	cs_buf_cleanup(&t), cs_buf_cleanup(&k);
}

/* A bad value of a new type rejects the entry and leaves the buffers as they were. */
static void test_rejection_through_decoder(void **state)
{
	cs_buf_t t, k;

	(void)state;
	cs_buf_init(&t), cs_buf_init(&k);
	/* {"id": 1, "at": "2026-12-03T14:00:00"} */
	assert_int_equal(decode_hex("id bigint, at timestamptz", "id",
				    "82 a26964 01 a26174 b3323032362d31322d30335431343a30303a3030",
				    &t, &k),
			 CS_REASON_INVALID_FORMAT);
	assert_string_equal(err, "field \"at\" has no UTC offset (end it with Z or +HH:MM)");
	assert_int_equal(t.len, 0);
	assert_int_equal(k.len, 0);
	assert_string_equal(cs_reason_name(CS_REASON_INVALID_FORMAT), "invalid_format");
	cs_buf_cleanup(&t), cs_buf_cleanup(&k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_uuid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timestamptz, setup, teardown),
		cmocka_unit_test_setup_teardown(test_date, setup, teardown),
		cmocka_unit_test_setup_teardown(test_numeric, setup, teardown),
		cmocka_unit_test_setup_teardown(test_numeric_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bytea, setup, teardown),
		cmocka_unit_test_setup_teardown(test_arrays, setup, teardown),
		cmocka_unit_test_setup_teardown(test_array_oid_and_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_numeric_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_float_zero_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_column, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rejection_through_decoder, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
