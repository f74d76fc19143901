/*
 * numtext.c - numbers as decimal text, for JSON and numeric columns
 *
 * A double in "%.15g" is written without printf when those 15 digits read back as the same
 * double, which is the case of every double that came from a decimal of at most 15 significant
 * digits (0.1, 3.25, 1e-05): snprintf took about 2,000 instructions for one such number under
 * callgrind and strtod's check 800 more, this about 400 (bench/results/cpu_profile.md). The
 * others (16 or 17 digits, or an exponent outside the exact powers of ten) go through snprintf
 * and strtod as before.
 *
 * Why the text is printf's, digit for digit: let N be a 15-digit integer with N * 10^-k rounding
 * to d. The 15-digit decimals near d are 10^(e-14) apart (10^e <= |d| < 10^(e+1)), while those
 * rounding to d lie within half an ulp of it, less than 0.12 of that spacing (an ulp is at most
 * 2^-52 |d|). So N * 10^-k is the one 15-digit decimal nearest to d, which is what printf's
 * correctly rounded "%.15g" prints. Whether N * 10^-k rounds to d is decided exactly: with
 * N < 2^53 and 10^k exact (|k| <= 22) one IEEE division or multiplication is correctly rounded,
 * so it gives the double nearest to N * 10^-k, as strtod does (Clinger's fast path).
 */
#include "copysink/numtext.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P15_LOW 100000000000000ULL   /* 10^14: the smallest 15-digit integer */
#define P15_HIGH 1000000000000000ULL /* 10^15 */

/* 10^0 .. 10^22: the powers of ten a double holds exactly. */
static const double exact_pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
				     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
				     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

#define MAX_EXACT 22

char *cs_numtext_u64(uint64_t v, char *end)
{
	do
		*--end = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	return end;
}

char *cs_numtext_i64(int64_t v, char *end)
{
	/* the magnitude in unsigned arithmetic: INT64_MIN has no positive int64 */
	char *p = cs_numtext_u64(v < 0 ? 0 - (uint64_t)v : (uint64_t)v, end);

	if (v < 0)
		*--p = '-';
	return p;
}

/* a * 10^-k for |k| <= MAX_EXACT: one correctly rounded operation. */
static double scale_down(double a, int k)
{
	return k >= 0 ? a / exact_pow10[k] : a * exact_pow10[-k];
}

/* The 15-digit integer N and the k with N * 10^-k == a (a > 0) exactly as doubles, or false.
 * k starts from an estimate of the decimal exponent and moves until N has 15 digits. */
static bool fifteen_digits(double a, uint64_t *n, int *k)
{
	int e2, kk;

	(void)frexp(a, &e2);
	kk = 14 - (int)floor((e2 - 1) * 0.30102999566398120); /* 14 - floor(log10(a)), +-1 */
	for (int tries = 0; tries < 3; tries++) {
		double x;
		uint64_t nn;

		if (kk > MAX_EXACT || kk < -MAX_EXACT)
			return false;
		x = kk >= 0 ? a * exact_pow10[kk] : a / exact_pow10[-kk]; /* approximate */
		if (!(x < (double)P15_HIGH * 100)) /* the estimate is off by one at most */
			return false;
		nn = (uint64_t)(x + 0.5);
		if (nn >= P15_HIGH) {
			kk--;
			continue;
		}
		if (nn < P15_LOW) {
			kk++;
			continue;
		}
		if (scale_down((double)nn, kk) != a)
			return false; /* 15 digits do not read back: printf decides */
		*n = nn;
		*k = kk;
		return true;
	}
	return false;
}

/* "%.15g" of the decimal N * 10^-k (N of 15 digits), with the sign: fixed notation for a
 * decimal exponent from -4 to 14, else d.ddde+XX; trailing zeros and a bare point dropped. */
static size_t format_g15(bool neg, uint64_t n, int k, char *out)
{
	char dig[15], *p = out;
	int x = 14 - k, nd = 15;

	for (int i = 14; i >= 0; i--, n /= 10)
		dig[i] = (char)('0' + n % 10);
	while (nd > 1 && dig[nd - 1] == '0')
		nd--;
	if (neg)
		*p++ = '-';
	if (x < -4 || x >= 15) {
		int ax = abs(x);
		*p++ = dig[0];
		if (nd > 1) {
			*p++ = '.';
			memcpy(p, dig + 1, (size_t)nd - 1), p += nd - 1;
		}
		*p++ = 'e';
		*p++ = x < 0 ? '-' : '+';
		*p++ = (char)('0' + ax / 10); /* |x| <= 36 here: two digits, as printf's minimum */
		*p++ = (char)('0' + ax % 10);
	} else if (x >= 0) {
		memcpy(p, dig, (size_t)x + 1), p += x + 1;
		if (nd > x + 1) {
			*p++ = '.';
			memcpy(p, dig + x + 1, (size_t)(nd - x - 1)), p += nd - x - 1;
		}
	} else {
		*p++ = '0';
		*p++ = '.';
		for (int i = 0; i < -x - 1; i++)
			*p++ = '0';
		memcpy(p, dig, (size_t)nd), p += nd;
	}
	*p = '\0';
	return (size_t)(p - out);
}

size_t cs_numtext_double(double d, char *out)
{
	uint64_t n;
	int k, len = 0;

	if (d != 0 && fifteen_digits(fabs(d), &n, &k))
		return format_g15(d < 0, n, k, out);
	for (int prec = 15; prec <= 17; prec++) {
		len = snprintf(out, CS_NUMTEXT_DOUBLE_SIZE, "%.*g", prec, d);
		if (strtod(out, NULL) == d)
			break;
	}
	return (size_t)len;
}
