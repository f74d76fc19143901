/*
 * stats.c - the periodic stats line
 */
#include "copysink/stats.h"

#include <stdio.h>
#include <string.h>

#include "copysink/log.h"

void cs_stats_log(const cs_stats_t *cur, cs_stats_t *prev, double secs,
		  const cs_tablespec_t *specs, int nspecs)
{
	char rows[32], rate[32], batches[32], dead[32], retries[32], held[32], tables[512];
	uint64_t r = 0, d = 0;
	size_t off = 0;

	for (int t = 0; t < nspecs && t < CS_STATS_MAX_TABLES; t++) {
		uint64_t n = cur->rows_written[t] - prev->rows_written[t];
		r += n;
		off += (size_t)snprintf(tables + off, off < sizeof(tables) ? sizeof(tables) - off : 0,
					"%s%s=%llu", t ? "," : "", specs[t].name,
					(unsigned long long)n);
		if (off >= sizeof(tables))
			off = sizeof(tables) - 1;
	}
	tables[off] = '\0';
	for (int i = 0; i < CS_REASON__COUNT; i++)
		d += cur->dead_letters[i] - prev->dead_letters[i];
	snprintf(rows, sizeof(rows), "%llu", (unsigned long long)r);
	snprintf(rate, sizeof(rate), "%.0f", secs > 0 ? (double)r / secs : 0.0);
	snprintf(batches, sizeof(batches), "%llu",
		 (unsigned long long)(cur->batches - prev->batches));
	snprintf(dead, sizeof(dead), "%llu", (unsigned long long)d);
	snprintf(retries, sizeof(retries), "%llu",
		 (unsigned long long)(cur->retries - prev->retries));
	snprintf(held, sizeof(held), "%llu", (unsigned long long)cur->bytes_held);
	cs_log_fields(CS_LOG_INFO, "stats", "rows", rows, "rows_per_s", rate, "batches", batches,
		      "dead_letters", dead, "retries", retries, "bytes_held", held, "tables",
		      tables, NULL);
	memcpy(prev, cur, sizeof(*prev));
}
