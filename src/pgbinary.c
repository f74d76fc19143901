/*
 * pgbinary.c - binary COPY encoders of uuid, timestamptz, date, numeric, bytea and the numeric
 * arrays
 *
 * Each encoder writes what the type's PostgreSQL send function would: uuid its 16 bytes;
 * timestamptz an int64 of microseconds since 2000-01-01 00:00 UTC; date an int32 of days since
 * 2000-01-01; numeric int16 ndigits, weight, sign and dscale, then ndigits base-10000 digits,
 * the first being the weight-th power of 10000, without leading or trailing zero digits; an
 * array its dimension count (0 when empty, else 1), a has-null flag, the element OID, the size
 * and lower bound 1, then each element's length (-1: NULL) and bytes.
 *
 * Strings are parsed where they lie in the message; the only copy is a short one on the stack
 * for strtod(). Fields are written straight into the caller's buffer, nothing is allocated.
 */
#include "copysink/pgbinary.h"

#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "copysink/numtext.h"

#define OOM CS_REASON__COUNT

#define INT8OID 20
#define INT4OID 23
#define FLOAT8OID 701

/* PostgreSQL's epoch, 2000-01-01 00:00 UTC, in Unix days, seconds and milliseconds */
#define EPOCH_DAYS INT64_C(10957)
#define EPOCH_SECS INT64_C(946684800)
#define EPOCH_MSECS INT64_C(946684800000)
#define SECS_PER_DAY INT64_C(86400)
#define MSECS_PER_DAY INT64_C(86400000)
#define USECS_PER_SEC INT64_C(1000000)

/* PostgreSQL's range (datatype/timestamp.h): a timestamp from 4714-11-24 00:00 UTC BC (Julian
 * day 0) up to, not including, 294277-01-01 00:00 UTC; a date up to 5874898-01-01 */
#define MIN_TIMESTAMP INT64_C(-211813488000000000)
#define END_TIMESTAMP INT64_C(9223371331200000000)
#define MIN_DATE INT64_C(-2451545)
#define END_DATE INT64_C(2145031949)

/* numeric's sign word, and its limits: 131072 digits before the point, 16383 after */
#define NUMERIC_POS 0x0000
#define NUMERIC_NEG 0x4000
#define NUMERIC_MAX_WEIGHT 32767
#define NUMERIC_MAX_DSCALE 16383

/* A timestamp string is at most this long: "YYYY-MM-DDTHH:MM:SS" + fraction + "+HH:MM". */
#define MAX_TIMESTAMP_LEN 64

/* Append a field of 4 or 8 bytes: its length, then v big-endian. */
static cs_reason_t put_fixed(cs_buf_t *out, int bytes, uint64_t v)
{
	if (cs_buf_put_u32(out, (uint32_t)bytes) != 0)
		return OOM;
	if (bytes == 4)
		return cs_buf_put_u32(out, (uint32_t)v) == 0 ? CS_REASON_OK : OOM;
	return cs_buf_put_u64(out, v) == 0 ? CS_REASON_OK : OOM;
}

/* Big-endian unsigned integer of n bytes at p. */
static uint64_t get_be(const char *p, int n)
{
	uint64_t v = 0;

	for (int i = 0; i < n; i++)
		v = v << 8 | (unsigned char)p[i];
	return v;
}

/* ---------------------------------------------------------------- uuid */

/* Value of a hexadecimal digit, or -1. */
static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The canonical form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, hex digits of any case, into b. */
static bool parse_uuid(const char *s, size_t n, unsigned char b[16])
{
	size_t i = 0, o = 0;

	if (n != 36)
		return false;
	while (i < n) {
		int hi, lo;
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i++] != '-')
				return false;
			continue;
		}
		hi = hex_value(s[i]);
		lo = hex_value(s[i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		b[o++] = (unsigned char)(hi << 4 | lo);
		i += 2;
	}
	return true;
}

/* A uuid column: the canonical string, or a bin of its 16 bytes. */
static cs_reason_t put_uuid(const cs_column_t *col, const msgpack_object *o, cs_buf_t *out,
			    char *errstr, size_t size)
{
	unsigned char b[16];

	if (o->type == MSGPACK_OBJECT_BIN) {
		if (o->via.bin.size != 16)
			return cs_decode_reject(CS_REASON_INVALID_FORMAT, errstr, size,
				      "field \"%s\" is a bin of %u bytes, a uuid has 16", col->name,
				      o->via.bin.size);
		memcpy(b, o->via.bin.ptr, 16);
	} else if (o->type == MSGPACK_OBJECT_STR) {
		if (!parse_uuid(o->via.str.ptr, o->via.str.size, b))
			return cs_decode_reject(CS_REASON_INVALID_FORMAT, errstr, size,
				      "field \"%s\" is not a uuid "
				      "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, hexadecimal)",
				      col->name);
	} else {
		return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size,
			      "field \"%s\" must be a uuid string or a bin of 16 bytes, got %s",
			      col->name, cs_decode_type_name(o));
	}
	return cs_buf_put_u32(out, 16) == 0 && cs_buf_append(out, b, 16) == 0 ? CS_REASON_OK
									     : OOM;
}

/* ---------------------------------------------------------------- dates and times */

/* The number written with the n decimal digits at s, or -1 if one is not a digit. */
static int decimal_digits(const char *s, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* Days of month m (1-12) in year y of the proleptic Gregorian calendar. */
static int month_days(int y, int m)
{
	static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return m == 2 && leap ? 29 : days[m - 1];
}

/* Days from 2000-01-01 to y-m-d (proleptic Gregorian; H. Hinnant's days_from_civil). */
static int64_t days_since_epoch(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468 - EPOCH_DAYS;
}

/* "YYYY-MM-DD" at s (10 bytes) as days since 2000-01-01. */
static cs_reason_t parse_date(const cs_column_t *col, const char *s, int64_t *days,
			      char *errstr, size_t size)
{
	int y = decimal_digits(s, 4), m = decimal_digits(s + 5, 2), d = decimal_digits(s + 8, 2);

	if (y < 0 || m < 0 || d < 0 || s[4] != '-' || s[7] != '-')
		return cs_decode_reject(CS_REASON_INVALID_FORMAT, errstr, size,
			      "field \"%s\" does not start with a date (YYYY-MM-DD)", col->name);
	if (y == 0) /* year 0000 is 1 BC, which PostgreSQL does not take in this form */
		return cs_decode_reject(CS_REASON_OUT_OF_RANGE, errstr, size,
			      "field \"%s\" is out of range: year 0000", col->name);
	if (m < 1 || m > 12 || d < 1 || d > month_days(y, m))
		return cs_decode_reject(CS_REASON_INVALID_FORMAT, errstr, size,
			      "field \"%s\" is not a valid date: there is no %04d-%02d-%02d",
			      col->name, y, m, d);
	*days = days_since_epoch(y, m, d);
	return CS_REASON_OK;
}

/* Fractional seconds ".ddd..." (n bytes, a point and at least one digit) in microseconds, as
 * PostgreSQL rounds them: rint() of the fraction read by strtod(), times 10^6 (1000000 when it
 * rounds up to the next second). */
static int64_t fraction_usecs(const char *s, size_t n)
{
	char buf[MAX_TIMESTAMP_LEN + 1];

	memcpy(buf, s, n);
	buf[n] = '\0';
	return (int64_t)rint(strtod(buf, NULL) * 1000000.0);
}

/* An RFC 3339 timestamp, "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)" ('T' or 't' or ' ',
 * 'Z' or 'z'), as microseconds since 2000-01-01 00:00 UTC. A second of 60 (a leap second) is
 * the first second of the next minute, as in PostgreSQL. */
static cs_reason_t parse_timestamp(const cs_column_t *col, const char *s, size_t n,
				   int64_t *usecs, char *errstr, size_t size)
{
	int64_t days, secs, fsec = 0;
	int h, mi, sec, oh = 0, om = 0, sign = 0;
	size_t p = 19, frac_at = 0;
	cs_reason_t r;

	if (n < 19 || n > MAX_TIMESTAMP_LEN)
		goto bad;
	r = parse_date(col, s, &days, errstr, size);
	if (r != CS_REASON_OK)
		return r;
	h = decimal_digits(s + 11, 2);
	mi = decimal_digits(s + 14, 2);
	sec = decimal_digits(s + 17, 2);
	if ((s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':' || s[16] != ':' ||
	    h < 0 || mi < 0 || sec < 0)
		goto bad;
	if (p < n && s[p] == '.') {
		frac_at = p++;
		while (p < n && s[p] >= '0' && s[p] <= '9')
			p++;
		if (p == frac_at + 1)
			goto bad;
	}
	if (p == n)
		return cs_decode_reject(CS_REASON_INVALID_FORMAT, errstr, size,
			      "field \"%s\" has no UTC offset (end it with Z or +HH:MM)",
			      col->name);
	if ((s[p] == 'Z' || s[p] == 'z') && p + 1 == n) {
		sign = 0;
	} else if ((s[p] == '+' || s[p] == '-') && p + 6 == n && s[p + 3] == ':') {
		sign = s[p] == '+' ? 1 : -1;
		oh = decimal_digits(s + p + 1, 2);
		om = decimal_digits(s + p + 4, 2);
		if (oh < 0 || om < 0)
			goto bad;
	} else {
		goto bad;
	}
	if (h > 23 || mi > 59 || sec > 60 || oh > 23 || om > 59)
		return cs_decode_reject(CS_REASON_INVALID_FORMAT, errstr, size,
			      "field \"%s\" is not a valid time: %02d:%02d:%02d, offset %02d:%02d",
			      col->name, h, mi, sec, oh, om);
	if (frac_at > 0)
		fsec = fraction_usecs(s + frac_at, p - frac_at);
	secs = days * SECS_PER_DAY + h * 3600 + mi * 60 + sec - sign * (oh * 3600 + om * 60);
	*usecs = secs * USECS_PER_SEC + fsec;
	return CS_REASON_OK;
bad:
	return cs_decode_reject(CS_REASON_INVALID_FORMAT, errstr, size,
		      "field \"%s\" is not an RFC 3339 timestamp "
		      "(YYYY-MM-DDTHH:MM:SS[.fraction] and Z or +HH:MM)",
		      col->name);
}

/* The msgpack timestamp extension (type -1): seconds since the Unix epoch and nanoseconds. */
static cs_reason_t ext_timestamp(const cs_column_t *col, const msgpack_object *o, int64_t *secs,
				 uint32_t *nsecs, char *errstr, size_t size)
{
	const char *p = o->via.ext.ptr;
	uint64_t v;

	if (o->via.ext.type != -1)
		return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size,
			      "field \"%s\" is an ext of type %d, not a timestamp (-1)", col->name,
			      o->via.ext.type);
	switch (o->via.ext.size) {
	case 4:
		*secs = (int64_t)get_be(p, 4);
		*nsecs = 0;
		break;
	case 8:
		v = get_be(p, 8);
		*secs = (int64_t)(v & UINT64_C(0x3ffffffff));
		*nsecs = (uint32_t)(v >> 34);
		break;
	case 12:
		*nsecs = (uint32_t)get_be(p, 4);
		*secs = (int64_t)get_be(p + 4, 8);
		break;
	default:
		return cs_decode_reject(CS_REASON_INVALID_FORMAT, errstr, size,
			      "field \"%s\" is a timestamp ext of %u bytes, not 4, 8 or 12",
			      col->name, o->via.ext.size);
	}
	if (*nsecs > 999999999)
		return cs_decode_reject(CS_REASON_INVALID_FORMAT, errstr, size,
			      "field \"%s\" is a timestamp ext with %u nanoseconds", col->name,
			      *nsecs);
	return CS_REASON_OK;
}

/* A msgpack int as epoch milliseconds; beyond int64 is out of range. */
static cs_reason_t int_millis(const cs_column_t *col, const msgpack_object *o, int64_t *ms,
			      char *errstr, size_t size)
{
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 > INT64_MAX)
		return cs_decode_reject(CS_REASON_OUT_OF_RANGE, errstr, size,
			      "field \"%s\" is out of range: %llu milliseconds", col->name,
			      (unsigned long long)o->via.u64);
	*ms = o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)o->via.u64 : o->via.i64;
	return CS_REASON_OK;
}

/* The instant of a timestamptz field, in microseconds since 2000-01-01 00:00 UTC. */
static cs_reason_t timestamptz_usecs(const cs_column_t *col, const msgpack_object *o,
				     int64_t *usecs, char *errstr, size_t size)
{
	int64_t ms = 0, secs = 0;
	uint32_t ns;
	cs_reason_t r;

	switch (o->type) {
	case MSGPACK_OBJECT_STR:
		return parse_timestamp(col, o->via.str.ptr, o->via.str.size, usecs, errstr, size);
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		r = int_millis(col, o, &ms, errstr, size);
		if (r != CS_REASON_OK)
			return r;
		if (ms < MIN_TIMESTAMP / 1000 + EPOCH_MSECS ||
		    ms >= END_TIMESTAMP / 1000 + EPOCH_MSECS)
			return cs_decode_reject(CS_REASON_OUT_OF_RANGE, errstr, size,
				      "field \"%s\" is out of range for timestamptz: %lld "
				      "milliseconds", col->name, (long long)ms);
		*usecs = (ms - EPOCH_MSECS) * 1000;
		return CS_REASON_OK;
	case MSGPACK_OBJECT_EXT:
		r = ext_timestamp(col, o, &secs, &ns, errstr, size);
		if (r != CS_REASON_OK)
			return r;
		if (secs < MIN_TIMESTAMP / USECS_PER_SEC + EPOCH_SECS - 1 ||
		    secs > END_TIMESTAMP / USECS_PER_SEC + EPOCH_SECS)
			return cs_decode_reject(CS_REASON_OUT_OF_RANGE, errstr, size,
				      "field \"%s\" is out of range for timestamptz: %lld seconds",
				      col->name, (long long)secs);
		/* to the microsecond, half to even */
		*usecs = (secs - EPOCH_SECS) * USECS_PER_SEC + ns / 1000 +
			 (ns % 1000 > 500 || (ns % 1000 == 500 && (ns / 1000) % 2 == 1));
		return CS_REASON_OK;
	default:
		return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size,
			      "field \"%s\" must be an RFC 3339 string, an int of epoch "
			      "milliseconds or a timestamp ext, got %s",
			      col->name, cs_decode_type_name(o));
	}
}

/* A timestamptz column. */
static cs_reason_t put_timestamptz(const cs_column_t *col, const msgpack_object *o,
				   cs_buf_t *out, char *errstr, size_t size)
{
	int64_t usecs = 0;
	cs_reason_t r = timestamptz_usecs(col, o, &usecs, errstr, size);

	if (r != CS_REASON_OK)
		return r;
	if (usecs < MIN_TIMESTAMP || usecs >= END_TIMESTAMP)
		return cs_decode_reject(CS_REASON_OUT_OF_RANGE, errstr, size,
			      "field \"%s\" is out of range for timestamptz", col->name);
	return put_fixed(out, 8, (uint64_t)usecs);
}

/* The day of a date field, in days since 2000-01-01: a whole day (midnight UTC) when the field
 * is an instant, so that no time zone can shift it silently. */
static cs_reason_t date_days(const cs_column_t *col, const msgpack_object *o, int64_t *days,
			     char *errstr, size_t size)
{
	int64_t ms = 0, secs = 0;
	uint32_t ns;
	cs_reason_t r;

	switch (o->type) {
	case MSGPACK_OBJECT_STR:
		if (o->via.str.size != 10)
			return cs_decode_reject(CS_REASON_INVALID_FORMAT, errstr, size,
				      "field \"%s\" is not a date (YYYY-MM-DD)", col->name);
		return parse_date(col, o->via.str.ptr, days, errstr, size);
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		r = int_millis(col, o, &ms, errstr, size);
		if (r != CS_REASON_OK)
			return r;
		if (ms % MSECS_PER_DAY != 0)
			goto not_midnight;
		*days = ms / MSECS_PER_DAY - EPOCH_DAYS;
		return CS_REASON_OK;
	case MSGPACK_OBJECT_EXT:
		r = ext_timestamp(col, o, &secs, &ns, errstr, size);
		if (r != CS_REASON_OK)
			return r;
		if (ns != 0 || secs % SECS_PER_DAY != 0)
			goto not_midnight;
		*days = secs / SECS_PER_DAY - EPOCH_DAYS;
		return CS_REASON_OK;
	default:
		return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size,
			      "field \"%s\" must be a YYYY-MM-DD string, an int of epoch "
			      "milliseconds or a timestamp ext, got %s",
			      col->name, cs_decode_type_name(o));
	}
not_midnight:
	return cs_decode_reject(CS_REASON_INVALID_FORMAT, errstr, size,
		      "field \"%s\" is not midnight UTC: a date takes whole days", col->name);
}

/* A date column. */
static cs_reason_t put_date(const cs_column_t *col, const msgpack_object *o, cs_buf_t *out,
			    char *errstr, size_t size)
{
	int64_t days;
	cs_reason_t r = date_days(col, o, &days, errstr, size);

	if (r != CS_REASON_OK)
		return r;
	if (days < MIN_DATE || days >= END_DATE)
		return cs_decode_reject(CS_REASON_OUT_OF_RANGE, errstr, size,
			      "field \"%s\" is out of range for date", col->name);
	return put_fixed(out, 4, (uint64_t)(uint32_t)(int32_t)days);
}

/* ---------------------------------------------------------------- numeric */

/* A decimal number as written: [+-] digits [. digits] [(e|E) [+-] digits], at least one digit
 * before the exponent. Its digits are int_part then frac_part; digit k counts 10^(nint-1-k+exp). */
typedef struct decimal {
	const char *int_part, *frac_part;
	int64_t nint, nfrac;
	int64_t exp; /* saturated at +-EXP_CAP: far beyond any representable value */
	bool negative;
} decimal_t;

#define EXP_CAP INT64_C(1000000000)

/* Parse s[0..n) as a decimal. @returns false when it is not one. */
static bool parse_decimal(const char *s, size_t n, decimal_t *d)
{
	size_t p = 0;
	bool exp_negative = false;

	memset(d, 0, sizeof(*d));
	if (n == 0) /* and s may be NULL */
		return false;
	if (s[p] == '+' || s[p] == '-')
		d->negative = s[p++] == '-';
	d->int_part = s + p;
	while (p < n && s[p] >= '0' && s[p] <= '9')
		p++, d->nint++;
	d->frac_part = s + p;
	if (p < n && s[p] == '.') {
		d->frac_part = s + ++p;
		while (p < n && s[p] >= '0' && s[p] <= '9')
			p++, d->nfrac++;
	}
	if (d->nint + d->nfrac == 0)
		return false;
	if (p < n && (s[p] == 'e' || s[p] == 'E')) {
		size_t first;
		if (++p < n && (s[p] == '+' || s[p] == '-'))
			exp_negative = s[p++] == '-';
		first = p;
		while (p < n && s[p] >= '0' && s[p] <= '9') {
			if (d->exp < EXP_CAP)
				d->exp = d->exp * 10 + (s[p] - '0');
			p++;
		}
		if (p == first)
			return false;
		if (d->exp > EXP_CAP)
			d->exp = EXP_CAP;
		if (exp_negative)
			d->exp = -d->exp;
	}
	return p == n;
}

/* Digit k of a decimal, 0 outside its digits. */
static int decimal_digit(const decimal_t *d, int64_t k)
{
	if (k < 0 || k >= d->nint + d->nfrac)
		return 0;
	return (k < d->nint ? d->int_part[k] : d->frac_part[k - d->nint]) - '0';
}

/* floor(a / 4) for any sign of a. */
static int64_t floor_div4(int64_t a)
{
	return a >= 0 ? a / 4 : -((-a + 3) / 4);
}

/* Append a decimal as a binary numeric field. Its display scale is that of PostgreSQL's
 * numeric_in: the digits after the point, less the exponent, at least 0. */
static cs_reason_t put_decimal(const cs_column_t *col, const decimal_t *d, cs_buf_t *out,
			       char *errstr, size_t size)
{
	int64_t ndig = d->nint + d->nfrac, first = 0, last = ndig - 1, dscale, weight, low, n;

	dscale = d->nfrac - d->exp > 0 ? d->nfrac - d->exp : 0;
	if (dscale > NUMERIC_MAX_DSCALE)
		return cs_decode_reject(CS_REASON_OUT_OF_RANGE, errstr, size,
			      "field \"%s\" is out of range for numeric: more than %d digits "
			      "after the decimal point", col->name, NUMERIC_MAX_DSCALE);
	while (first < ndig && decimal_digit(d, first) == 0)
		first++;
	if (first == ndig) /* zero: no digits, weight 0, positive */
		return cs_buf_put_u32(out, 8) == 0 && cs_buf_put_u64(out, (uint64_t)dscale) == 0
			       ? CS_REASON_OK
			       : OOM;
	while (decimal_digit(d, last) == 0)
		last--;
	weight = floor_div4(d->nint - 1 - first + d->exp);
	low = floor_div4(d->nint - 1 - last + d->exp);
	if (weight > NUMERIC_MAX_WEIGHT)
		return cs_decode_reject(CS_REASON_OUT_OF_RANGE, errstr, size,
			      "field \"%s\" is out of range for numeric: more than %d digits "
			      "before the decimal point", col->name, 4 * (NUMERIC_MAX_WEIGHT + 1));
	n = weight - low + 1;
	if (cs_buf_reserve(out, 12 + 2 * (size_t)n) != 0)
		return OOM;
	if (cs_buf_put_u32(out, (uint32_t)(8 + 2 * n)) != 0 ||
	    cs_buf_put_u16(out, (uint16_t)n) != 0 ||
	    cs_buf_put_u16(out, (uint16_t)(int16_t)weight) != 0 ||
	    cs_buf_put_u16(out, d->negative ? NUMERIC_NEG : NUMERIC_POS) != 0 ||
	    cs_buf_put_u16(out, (uint16_t)dscale) != 0)
		return OOM;
	for (int64_t g = weight; g >= low; g--) {
		int v = 0;
		/* decimal position 4g + j is digit nint - 1 + exp - (4g + j) */
		for (int j = 3; j >= 0; j--)
			v = v * 10 + decimal_digit(d, d->nint - 1 + d->exp - (4 * g + j));
		if (cs_buf_put_u16(out, (uint16_t)v) != 0)
			return OOM;
	}
	return CS_REASON_OK;
}

/* True when s[0..n) is one of PostgreSQL's spellings of NaN or an infinity. */
static bool non_finite_spelling(const char *s, size_t n)
{
	static const char *const names[] = {"nan", "infinity", "+infinity", "-infinity",
					    "inf", "+inf", "-inf"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) == n && strncasecmp(names[i], s, n) == 0)
			return true;
	return false;
}

/* A float in the shortest %g form (at most 17 digits, 9 for a float32) that reads back as the
 * same value: what the producer printed, e.g. 0.1 rather than 0.1000000000000000055. */
static size_t float_text(const msgpack_object *o, char *buf, size_t size)
{
	bool f32 = o->type == MSGPACK_OBJECT_FLOAT32;
	int n = 0;

	if (!f32 && size >= CS_NUMTEXT_DOUBLE_SIZE)
		return cs_numtext_double(o->via.f64, buf);
	for (int prec = f32 ? 6 : 15; prec <= (f32 ? 9 : 17); prec++) {
		double back;
		n = snprintf(buf, size, "%.*g", prec, o->via.f64);
		back = strtod(buf, NULL);
		if (f32 ? (float)back == (float)o->via.f64 : back == o->via.f64)
			break;
	}
	return (size_t)n;
}

/* A numeric column: a decimal string, an int, or a finite float (NaN and the infinities, which
 * numeric could hold, are refused as in every other number column). */
static cs_reason_t put_numeric(const cs_column_t *col, const msgpack_object *o, size_t limit,
			       cs_buf_t *out, char *errstr, size_t size)
{
	char buf[40];
	const char *s = buf;
	size_t n;
	decimal_t d;

	switch (o->type) {
	case MSGPACK_OBJECT_STR:
		s = o->via.str.ptr, n = o->via.str.size;
		if (n > limit)
			return cs_decode_reject(CS_REASON_TOO_LARGE, errstr, size,
				      "field \"%s\" has %zu bytes, more than the limit of %zu",
				      col->name, n, limit);
		if (non_finite_spelling(s, n))
			return cs_decode_reject(CS_REASON_NOT_FINITE, errstr, size,
				      "field \"%s\" is not finite: numeric takes finite numbers "
				      "only",
				      col->name);
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		s = cs_numtext_u64(o->via.u64, buf + sizeof(buf));
		n = (size_t)(buf + sizeof(buf) - s);
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		s = cs_numtext_i64(o->via.i64, buf + sizeof(buf));
		n = (size_t)(buf + sizeof(buf) - s);
		break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		if (!isfinite(o->via.f64))
			return cs_decode_reject(CS_REASON_NOT_FINITE, errstr, size,
				      "field \"%s\" is not finite: numeric takes finite numbers "
				      "only",
				      col->name);
		n = float_text(o, buf, sizeof(buf));
		break;
	default:
		return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size,
			      "field \"%s\" must be a decimal string or a number, got %s",
			      col->name, cs_decode_type_name(o));
	}
	if (!parse_decimal(s, n, &d))
		return cs_decode_reject(CS_REASON_INVALID_FORMAT, errstr, size,
			      "field \"%s\" is not a decimal number (such as -123.45 or 1.5e-3)",
			      col->name);
	return put_decimal(col, &d, out, errstr, size);
}

/* The big-endian uint32 at p. */
static uint32_t get_u32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;

	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* A float of `size` bytes (big-endian) at p that is -0 becomes +0 (its sign bit cleared). */
static void positive_zero(char *p, size_t size)
{
	for (size_t i = 1; i < size; i++)
		if (p[i] != 0)
			return;
	if ((unsigned char)p[0] == 0x80)
		p[0] = 0;
}

void cs_pgbinary_canonical_key(const cs_column_t *col, char *field, size_t len)
{
	switch (col->type) {
	case CS_COL_NUMERIC:
		/* length (4 bytes), ndigits, weight, sign, dscale (2 bytes each) */
		if (len >= 12)
			field[10] = field[11] = 0;
		break;
	case CS_COL_FLOAT4:
	case CS_COL_FLOAT8:
		/* length, then the value: -0 and +0 are one value to PostgreSQL's index */
		if (len == 8 || len == 12)
			positive_zero(field + 4, len - 4);
		break;
	case CS_COL_FLOAT8_ARRAY:
		/* length, ndim, flags, element type, then per dimension size and lower bound, then
		 * each element as length (-1: NULL) and 8 bytes */
		if (len >= 24 && get_u32(field + 4) == 1) {
			for (size_t at = 24; at + 4 <= len;) {
				uint32_t n = get_u32(field + at);
				at += 4;
				if (n == UINT32_MAX)
					continue;
				if (n == 8 && at + 8 <= len)
					positive_zero(field + at, 8);
				at += n;
			}
		}
		break;
	default:
		break;
	}
}

/* ---------------------------------------------------------------- bytea */

/* A bytea column from a msgpack bin. */
static cs_reason_t put_bytea(const cs_column_t *col, const msgpack_object *o, size_t limit,
			     cs_buf_t *out, char *errstr, size_t size)
{
	if (o->type != MSGPACK_OBJECT_BIN)
		return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size,
			      "field \"%s\" must be a bin, got %s", col->name,
			      cs_decode_type_name(o));
	if (o->via.bin.size > limit)
		return cs_decode_reject(CS_REASON_TOO_LARGE, errstr, size,
			      "field \"%s\" has %u bytes, more than the limit of %zu", col->name,
			      o->via.bin.size, limit);
	return cs_buf_put_u32(out, o->via.bin.size) == 0 &&
			       cs_buf_append(out, o->via.bin.ptr, o->via.bin.size) == 0
		       ? CS_REASON_OK
		       : OOM;
}

/* ---------------------------------------------------------------- numeric arrays */

/* Element i (not nil) of a double precision[] / integer[] / bigint[] column as the bits of its
 * binary form. */
static cs_reason_t array_element(const cs_column_t *col, uint32_t i, const msgpack_object *e,
				 uint64_t *bits, char *errstr, size_t size)
{
	int64_t min = col->type == CS_COL_INT4_ARRAY ? INT32_MIN : INT64_MIN;
	int64_t max = col->type == CS_COL_INT4_ARRAY ? INT32_MAX : INT64_MAX;
	const char *what = col->type == CS_COL_INT4_ARRAY ? "integer" : "bigint";
	double f;

	if (col->type == CS_COL_FLOAT8_ARRAY) {
		if (e->type == MSGPACK_OBJECT_FLOAT32 || e->type == MSGPACK_OBJECT_FLOAT64)
			f = e->via.f64;
		else if (e->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
			f = (double)e->via.u64;
		else if (e->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
			f = (double)e->via.i64;
		else
			return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size,
				      "field \"%s\" element %u is %s, not a number", col->name, i,
				      cs_decode_type_name(e));
		if (!isfinite(f))
			return cs_decode_reject(CS_REASON_NOT_FINITE, errstr, size,
				      "field \"%s\" element %u is not finite", col->name, i);
		memcpy(bits, &f, sizeof(*bits));
		return CS_REASON_OK;
	}
	if (e->type == MSGPACK_OBJECT_POSITIVE_INTEGER && e->via.u64 > (uint64_t)max)
		return cs_decode_reject(CS_REASON_OUT_OF_RANGE, errstr, size,
			      "field \"%s\" element %u is out of range for %s: %llu", col->name, i,
			      what, (unsigned long long)e->via.u64);
	if (e->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && e->via.i64 < min)
		return cs_decode_reject(CS_REASON_OUT_OF_RANGE, errstr, size,
			      "field \"%s\" element %u is out of range for %s: %lld", col->name, i,
			      what, (long long)e->via.i64);
	if (e->type != MSGPACK_OBJECT_POSITIVE_INTEGER &&
	    e->type != MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size,
			      "field \"%s\" element %u is %s, not an integer", col->name, i,
			      cs_decode_type_name(e));
	*bits = e->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? e->via.u64 : (uint64_t)e->via.i64;
	return CS_REASON_OK;
}

/* A one-dimensional double precision[], integer[] or bigint[] column; a nil element is NULL. */
static cs_reason_t put_number_array(const cs_column_t *col, const msgpack_object *o,
				    size_t limit, cs_buf_t *out, char *errstr, size_t size)
{
	int bytes = col->type == CS_COL_INT4_ARRAY ? 4 : 8;
	uint32_t oid = col->type == CS_COL_FLOAT8_ARRAY ? FLOAT8OID
		       : col->type == CS_COL_INT4_ARRAY ? INT4OID
							: INT8OID;
	uint32_t n, nulls = 0;
	size_t len;

	if (o->type != MSGPACK_OBJECT_ARRAY)
		return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size,
			      "field \"%s\" must be an array of %s, got %s", col->name,
			      col->type == CS_COL_FLOAT8_ARRAY ? "numbers" : "integers",
			      cs_decode_type_name(o));
	n = o->via.array.size;
	for (uint32_t i = 0; i < n; i++)
		nulls += o->via.array.ptr[i].type == MSGPACK_OBJECT_NIL;
	len = (n > 0 ? 20 : 12) + 4 * (size_t)n + (size_t)bytes * (n - nulls);
	if (len > limit)
		return cs_decode_reject(CS_REASON_TOO_LARGE, errstr, size,
			      "field \"%s\" is larger than the limit of %zu bytes", col->name,
			      limit);
	if (cs_buf_reserve(out, 4 + len) != 0)
		return OOM;
	if (cs_buf_put_u32(out, (uint32_t)len) != 0 || cs_buf_put_u32(out, n > 0) != 0 ||
	    cs_buf_put_u32(out, nulls > 0) != 0 ||
	    cs_buf_put_u32(out, col->elem_oid ? col->elem_oid : oid) != 0 ||
	    (n > 0 && (cs_buf_put_u32(out, n) != 0 || cs_buf_put_u32(out, 1) != 0)))
		return OOM;
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *e = &o->via.array.ptr[i];
		uint64_t bits = 0;
		cs_reason_t r;

		if (e->type == MSGPACK_OBJECT_NIL) {
			if (cs_buf_put_u32(out, UINT32_MAX) != 0) /* -1: NULL */
				return OOM;
			continue;
		}
		r = array_element(col, i, e, &bits, errstr, size);
		if (r != CS_REASON_OK)
			return r;
		if (put_fixed(out, bytes, bits) != CS_REASON_OK)
			return OOM;
	}
	return CS_REASON_OK;
}

/* ---------------------------------------------------------------- dispatch */

cs_reason_t cs_pgbinary_put(const cs_column_t *col, const struct msgpack_object *o, size_t limit,
			    cs_buf_t *out, char *errstr, size_t errstr_size)
{
	switch (col->type) {
	case CS_COL_UUID: return put_uuid(col, o, out, errstr, errstr_size);
	case CS_COL_TIMESTAMPTZ: return put_timestamptz(col, o, out, errstr, errstr_size);
	case CS_COL_DATE: return put_date(col, o, out, errstr, errstr_size);
	case CS_COL_NUMERIC: return put_numeric(col, o, limit, out, errstr, errstr_size);
	case CS_COL_BYTEA: return put_bytea(col, o, limit, out, errstr, errstr_size);
	case CS_COL_FLOAT8_ARRAY:
	case CS_COL_INT4_ARRAY:
	case CS_COL_INT8_ARRAY: return put_number_array(col, o, limit, out, errstr, errstr_size);
	default:
		return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, errstr_size,
			      "field \"%s\" has a type this encoder does not own", col->name);
	}
}
