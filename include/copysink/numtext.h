/*
 * numtext.h - numbers as decimal text, for JSON and numeric columns
 *
 * The text is exactly what printf writes (the decoder's output must not depend on which of the
 * two wrote it); the common cases are written without printf, which costs more than the rest
 * of an entry's JSON (bench/results/cpu_profile.md).
 *
 * Pure functions of their arguments: callable from any thread.
 */
#ifndef COPYSINK_NUMTEXT_H
#define COPYSINK_NUMTEXT_H

#include <stddef.h>
#include <stdint.h>

/* Room for any text of cs_numtext_double (sign, 17 digits, point, exponent) and its NUL. */
#define CS_NUMTEXT_DOUBLE_SIZE 32

/* Room for the digits of any uint64_t and a sign. */
#define CS_NUMTEXT_INT_SIZE 21

/*
 * The decimal digits of v, as printf's "%llu" writes them, placed to end at `end` (the caller
 * has CS_NUMTEXT_INT_SIZE bytes before it; nothing is NUL-terminated).
 * @returns where the text starts.
 */
char *cs_numtext_u64(uint64_t v, char *end);

/* The same for a signed value, as "%lld" writes it. */
char *cs_numtext_i64(int64_t v, char *end);

/*
 * A finite double in the shortest of printf's "%.15g", "%.16g" and "%.17g" that reads back
 * (strtod) as the same value, written NUL-terminated into out (CS_NUMTEXT_DOUBLE_SIZE bytes).
 * @returns the length of the text.
 */
size_t cs_numtext_double(double d, char *out);

#endif /* COPYSINK_NUMTEXT_H */
