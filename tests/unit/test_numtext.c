/*
 * test_numtext.c - numbers as text: every output compared with printf's (the reference is the
 * shortest of %.15g, %.16g, %.17g that strtod reads back), over the decimals producers send
 * (1 to 17 significant digits at every exponent), the neighbours of powers of ten, the edges of
 * the fast path's range and random bit patterns; integers against %llu and %lld
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

#include "copysink/numtext.h"

/* The text the decoder wrote before cs_numtext_double (printf alone). */
static void reference(double d, char *out, size_t size)
{
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(out, size, "%.*g", prec, d);
		if (strtod(out, NULL) == d)
			break;
	}
}

static unsigned long checked;

static void check(double d)
{
	char want[64], got[CS_NUMTEXT_DOUBLE_SIZE];
	size_t n;

	if (!isfinite(d))
		return;
	reference(d, want, sizeof(want));
	memset(got, 'x', sizeof(got));
	n = cs_numtext_double(d, got);
	if (n != strlen(want) || strcmp(got, want) != 0)
		fail_msg("%a: got \"%s\" (%zu), want \"%s\"", d, got, n, want);
	checked++;
}

static void check_both_signs(double d)
{
	check(d);
	check(-d);
}

static uint64_t rng = 88172645463325252ULL;

static uint64_t next(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return rng;
}

/* Decimals of 1..17 significant digits at decimal exponents -30..40, as strtod reads them. */
static void decimals(void **state)
{
	uint64_t low = 1;

	for (int digits = 1; digits <= 17; digits++, low *= 10)
		for (int e = -30; e <= 40; e++)
			for (int i = 0; i < 200; i++) {
				uint64_t m = low + next() % (9 * low); /* exactly `digits` digits */
				char text[64];

				snprintf(text, sizeof(text), "%llue%d", (unsigned long long)m, e);
				check_both_signs(strtod(text, NULL));
			}
	(void)state;
}

/* Powers of ten, 15-digit boundaries and their neighbours a few ulps away; zero, the extremes. */
static void edges(void **state)
{
	static const double fixed[] = {0.0,
				       1.0,
				       0.1,
				       0.5,
				       1e-4,
				       1e-5,
				       0.0001234,
				       0.00001234,
				       123456789012345.0,
				       999999999999999.0,
				       999999999999999.4,
				       999999999999999.6,
				       1e15,
				       1e16,
				       9.99999999999999e22,
				       1e22,
				       1e23,
				       1e-8,
				       1e-9,
				       DBL_MAX,
				       DBL_MIN,
				       DBL_TRUE_MIN,
				       DBL_EPSILON,
				       9007199254740992.0,
				       0.3,
				       2.0 / 3.0,
				       4.35,
				       0.123456};

	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		check_both_signs(fixed[i]);
	for (int e = -40; e <= 40; e++) {
		char text[32];
		double p;

		snprintf(text, sizeof(text), "1e%d", e);
		p = strtod(text, NULL);
		for (double q = p, r = p; q != 0 && r < INFINITY; q = nextafter(q, 0),
			    r = nextafter(r, INFINITY)) {
			check_both_signs(q), check_both_signs(r);
			if (fabs(q - p) > 64 * fabs(nextafter(p, INFINITY) - p))
				break;
		}
		/* 9.99999999999999x * 10^e: where rounding to 15 digits moves to the next decade */
		snprintf(text, sizeof(text), "9.99999999999999e%d", e);
		p = strtod(text, NULL);
		for (int k = 0; k < 64; k++, p = nextafter(p, INFINITY))
			check_both_signs(p);
	}
	(void)state;
}

/* Random bit patterns (every finite double is a fair input, if a rare one). */
static void random_bits(void **state)
{
	for (int i = 0; i < 300000; i++) {
		uint64_t u = next();
		double d;

		memcpy(&d, &u, sizeof(d));
		check(d);
	}
	/* and random doubles of the fast path's range, 1e-9 .. 1e37 */
	for (int i = 0; i < 300000; i++)
		check_both_signs(pow(10, -9 + 46 * ((double)(next() >> 11) / 9007199254740992.0)));
	(void)state;
}

static void integers(void **state)
{
	static const int64_t cases[] = {0, 1, -1, 9, 10, -10, 99, 100, INT64_MAX, INT64_MIN,
					INT64_MIN + 1, 1234567890123456789LL};
	char want[32], buf[CS_NUMTEXT_INT_SIZE], *p;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]) + 100000; i++) {
		int64_t v = i < sizeof(cases) / sizeof(cases[0]) ? cases[i]
								  : (int64_t)(next() >> (next() % 64));
		uint64_t u = (uint64_t)v;

		snprintf(want, sizeof(want), "%lld", (long long)v);
		p = cs_numtext_i64(v, buf + sizeof(buf));
		assert_int_equal((size_t)(buf + sizeof(buf) - p), strlen(want));
		assert_memory_equal(p, want, strlen(want));
		snprintf(want, sizeof(want), "%llu", (unsigned long long)u);
		p = cs_numtext_u64(u, buf + sizeof(buf));
		assert_int_equal((size_t)(buf + sizeof(buf) - p), strlen(want));
		assert_memory_equal(p, want, strlen(want));
	}
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(decimals),
		cmocka_unit_test(edges),
		cmocka_unit_test(random_bits),
		cmocka_unit_test(integers),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);

	printf("doubles compared: %lu\n", checked);
	return rc;
}
