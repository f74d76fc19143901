/*
 * stats.c - counters, their published copy, and the periodic stats line
 */
#include "copysink/stats.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "copysink/log.h"

const double cs_stats_bucket_le[CS_STATS_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
						     0.5,   1.0,  2.5,   5.0,  10.0, 1e308};

void cs_stats_shared_init(cs_stats_shared_t *shared)
{
	pthread_mutex_init(&shared->lock, NULL);
	memset(&shared->stats, 0, sizeof(shared->stats));
}

void cs_stats_shared_cleanup(cs_stats_shared_t *shared)
{
	pthread_mutex_destroy(&shared->lock);
}

/* The partitions in use only: the table of CS_STATS_MAX_PARTITIONS is most of the 70 kB struct
 * and the loop publishes every 100 ms; readers look at parts[0..nparts) alone. */
void cs_stats_publish(cs_stats_shared_t *shared, const cs_stats_t *cur)
{
	size_t head = offsetof(cs_stats_t, parts), tail = offsetof(cs_stats_t, nparts);
	int n = cur->nparts < 0 ? 0 : cur->nparts > CS_STATS_MAX_PARTITIONS
					      ? CS_STATS_MAX_PARTITIONS : cur->nparts;

	pthread_mutex_lock(&shared->lock);
	memcpy(&shared->stats, cur, head);
	memcpy(shared->stats.parts, cur->parts, (size_t)n * sizeof(cur->parts[0]));
	memcpy((char *)&shared->stats + tail, (const char *)cur + tail, sizeof(*cur) - tail);
	pthread_mutex_unlock(&shared->lock);
}

void cs_stats_snapshot(cs_stats_shared_t *shared, cs_stats_t *out)
{
	pthread_mutex_lock(&shared->lock);
	memcpy(out, &shared->stats, sizeof(*out));
	pthread_mutex_unlock(&shared->lock);
}

void cs_stats_db_error(cs_stats_t *st, const char *sqlstate)
{
	const char *s = sqlstate ? sqlstate : "";

	for (int i = 0; i < st->ndb_errors; i++) {
		if (strcmp(st->db_errors[i].sqlstate, s) == 0) {
			st->db_errors[i].count++;
			return;
		}
	}
	if (st->ndb_errors < CS_STATS_MAX_SQLSTATES) {
		snprintf(st->db_errors[st->ndb_errors].sqlstate, 6, "%.5s", s);
		st->db_errors[st->ndb_errors++].count = 1;
	}
}

void cs_stats_batch_duration(cs_stats_t *st, double seconds)
{
	for (int i = 0; i < CS_STATS_BUCKETS; i++) {
		if (seconds <= cs_stats_bucket_le[i]) {
			st->batch_buckets[i]++;
			break;
		}
	}
	st->batch_seconds_sum += seconds;
}

void cs_stats_partition(cs_stats_t *st, const char *topic, int32_t partition, int64_t stored,
			int64_t high)
{
	cs_stats_partition_t *p = NULL;

	for (int i = 0; i < st->nparts && p == NULL; i++)
		if (st->parts[i].partition == partition && strcmp(st->parts[i].topic, topic) == 0)
			p = &st->parts[i];
	if (p == NULL) {
		if (st->nparts == CS_STATS_MAX_PARTITIONS)
			return;
		p = &st->parts[st->nparts++];
		snprintf(p->topic, sizeof(p->topic), "%s", topic);
		p->partition = partition;
		p->stored = -1;
		p->high = -1;
	}
	if (stored >= 0)
		p->stored = stored;
	if (high >= 0)
		p->high = high;
}

void cs_stats_partition_remove(cs_stats_t *st, const char *topic, int32_t partition)
{
	for (int i = 0; i < st->nparts; i++) {
		if (st->parts[i].partition == partition && strcmp(st->parts[i].topic, topic) == 0) {
			st->parts[i] = st->parts[--st->nparts];
			return;
		}
	}
}

/* Write "name=n,..." of the per-table counter `cur` - `prev` into out; @returns the sum. */
static uint64_t per_table(const uint64_t *cur, const uint64_t *prev, const cs_tablespec_t *specs,
			  int nspecs, char *out, size_t size)
{
	uint64_t sum = 0;
	size_t off = 0;

	out[0] = '\0';
	for (int t = 0; t < nspecs && t < CS_STATS_MAX_TABLES; t++) {
		uint64_t n = cur[t] - prev[t];
		sum += n;
		if (off < size)
			off += (size_t)snprintf(out + off, size - off, "%s%s=%llu", t ? "," : "",
						specs[t].name, (unsigned long long)n);
	}
	return sum;
}

void cs_stats_log(const cs_stats_t *cur, cs_stats_t *prev, double secs,
		  const cs_tablespec_t *specs, int nspecs)
{
	char rows[32], rate[32], deleted[32], batches[32], dead[32], retries[32], held[32];
	char tables[512], tables_deleted[512];
	uint64_t r, del, d = 0;

	r = per_table(cur->rows_written, prev->rows_written, specs, nspecs, tables, sizeof(tables));
	del = per_table(cur->rows_deleted, prev->rows_deleted, specs, nspecs, tables_deleted,
			sizeof(tables_deleted));
	for (int i = 0; i < CS_REASON__COUNT; i++)
		d += cur->dead_letters[i] - prev->dead_letters[i];
	snprintf(rows, sizeof(rows), "%llu", (unsigned long long)r);
	snprintf(rate, sizeof(rate), "%.0f", secs > 0 ? (double)r / secs : 0.0);
	snprintf(deleted, sizeof(deleted), "%llu", (unsigned long long)del);
	snprintf(batches, sizeof(batches), "%llu",
		 (unsigned long long)(cur->batches - prev->batches));
	snprintf(dead, sizeof(dead), "%llu", (unsigned long long)d);
	snprintf(retries, sizeof(retries), "%llu",
		 (unsigned long long)(cur->retries - prev->retries));
	snprintf(held, sizeof(held), "%llu", (unsigned long long)cur->bytes_held);
	cs_log_fields(CS_LOG_INFO, "stats", "rows", rows, "rows_per_s", rate, "deleted", deleted,
		      "batches", batches, "dead_letters", dead, "retries", retries, "bytes_held",
		      held, "tables", tables, "tables_deleted", tables_deleted, NULL);
	memcpy(prev, cur, sizeof(*prev));
}
