/*
 * test_buf.c - the growable buffer: contents kept across every growth, below and past the size
 * where the storage moves into a mapping of its own, reset keeping the storage, cleanup and
 * reuse, and a growth that cannot be satisfied leaving the buffer unchanged
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "copysink/buf.h"

/* The byte at position i of the pattern the tests write. */
static char pattern(size_t i)
{
	return (char)((i * 2654435761u) >> 13);
}

/* Append `n` bytes of the pattern in pieces of `piece`, then check all of it. */
static void fill_and_check(cs_buf_t *b, size_t n, size_t piece)
{
	char chunk[4096];

	assert_true(piece <= sizeof(chunk));
	for (size_t at = b->len; at < n;) {
		size_t k = n - at < piece ? n - at : piece;

		for (size_t i = 0; i < k; i++)
			chunk[i] = pattern(at + i);
		assert_int_equal(cs_buf_append(b, chunk, k), 0);
		at += k;
		assert_int_equal(b->len, at);
		assert_true(b->cap >= b->len);
	}
	for (size_t i = 0; i < n; i++)
		if (b->data[i] != pattern(i))
			fail_msg("byte %zu of %zu changed after growing to %zu", i, n, b->cap);
}

static void test_grows_keeping_contents(void **state)
{
	cs_buf_t b;

	(void)state;
	cs_buf_init(&b);
	/* from nothing to 9 MiB: every doubling, the move into a mapping at 1 MiB and its
	 * growth after */
	fill_and_check(&b, (size_t)9 << 20, 4093);
	assert_true(b.cap >= ((size_t)9 << 20));
	cs_buf_cleanup(&b);
	assert_null(b.data);
	assert_int_equal(b.cap, 0);
	assert_int_equal(b.len, 0);
}

static void test_reset_keeps_storage(void **state)
{
	cs_buf_t b;
	size_t cap;
	char *data;

	(void)state;
	cs_buf_init(&b);
	fill_and_check(&b, (size_t)3 << 20, 1000);
	cap = b.cap;
	data = b.data;
	cs_buf_reset(&b);
	assert_int_equal(b.len, 0);
	fill_and_check(&b, (size_t)3 << 20, 333);
	assert_int_equal(b.cap, cap);
	assert_ptr_equal(b.data, data);
	cs_buf_cleanup(&b);
	/* reusable after cleanup, small again */
	fill_and_check(&b, 1000, 7);
	assert_true(b.cap < ((size_t)1 << 20));
	cs_buf_cleanup(&b);
}

static void test_one_large_append(void **state)
{
	cs_buf_t b;
	size_t n = ((size_t)5 << 20) + 17;
	char *big = malloc(n);

	(void)state;
	assert_non_null(big);
	for (size_t i = 0; i < n; i++)
		big[i] = pattern(i);
	cs_buf_init(&b);
	assert_int_equal(cs_buf_append(&b, "ab", 2), 0);
	assert_int_equal(cs_buf_append(&b, big, n), 0);
	assert_int_equal(b.len, n + 2);
	assert_memory_equal(b.data, "ab", 2);
	assert_memory_equal(b.data + 2, big, n);
	free(big);
	cs_buf_cleanup(&b);
}

static void test_impossible_growth_leaves_buffer(void **state)
{
	cs_buf_t b;

	(void)state;
	cs_buf_init(&b);
	fill_and_check(&b, (size_t)2 << 20, 4096);
	assert_int_equal(cs_buf_reserve(&b, SIZE_MAX - 10), -1); /* len + extra overflows */
	assert_int_equal(b.len, (size_t)2 << 20);
	fill_and_check(&b, (size_t)2 << 20, 4096); /* checks the contents are intact */
	cs_buf_cleanup(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_grows_keeping_contents),
		cmocka_unit_test(test_reset_keeps_storage),
		cmocka_unit_test(test_one_large_append),
		cmocka_unit_test(test_impossible_growth_leaves_buffer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
