/*
 * test_stats.c - the published copy: everything before and after the partition table, and the
 * partitions in use, read back as they were published (twice, the second with fewer)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "copysink/stats.h"

static void published_copy(void **state)
{
	static cs_stats_shared_t shared;
	static cs_stats_t cur, got;
	size_t head = offsetof(cs_stats_t, parts), tail = offsetof(cs_stats_t, nparts);

	cs_stats_shared_init(&shared);
	for (int round = 0; round < 2; round++) {
		memset(&cur, 0x5a + round, sizeof(cur));
		cur.nparts = round == 0 ? 3 : 1;
		for (int i = 0; i < cur.nparts; i++) {
			snprintf(cur.parts[i].topic, sizeof(cur.parts[i].topic), "t%d.%d", round, i);
			cur.parts[i].partition = i;
			cur.parts[i].stored = 100 * round + i;
			cur.parts[i].high = -1;
		}
		cs_stats_publish(&shared, &cur);
		cs_stats_snapshot(&shared, &got);
		assert_memory_equal(&got, &cur, head);
		assert_memory_equal((char *)&got + tail, (char *)&cur + tail, sizeof(cur) - tail);
		assert_memory_equal(got.parts, cur.parts, (size_t)cur.nparts * sizeof(cur.parts[0]));
	}
	cs_stats_shared_cleanup(&shared);
	(void)state;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(published_copy),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
