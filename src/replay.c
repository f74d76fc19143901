/*
 * replay.c - start and end offsets of a replay, its progress
 */
#include "copysink/replay.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "copysink/log.h"

#define META_TIMEOUT_MS 10000
#define BAR_WIDTH 30

typedef struct rpart {
	char topic[CS_MAX_TOPIC];
	int32_t partition;
	int64_t start; /* first offset to load */
	int64_t end;   /* offset to stop at (exclusive); INT64_MAX without until_end */
	int64_t pos;   /* next offset to read */
	bool done;
} rpart_t;

struct cs_replay {
	rpart_t *parts;
	int nparts;
	bool until_end, tty;
	struct timespec started;
	double last_print;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era;
	int yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (int)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

int cs_replay_parse_time(const char *s, int64_t *ms)
{
	int y, mo, d, h, mi, sec, n = 0, frac_ms = 0, off = 0;
	const char *p;

	if (sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
	    n != 19 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return -1;
	p = s + n;
	if (*p == '.') {
		int digits = 0;
		for (p++; isdigit((unsigned char)*p); p++, digits++)
			if (digits < 3)
				frac_ms = frac_ms * 10 + (*p - '0');
		if (digits == 0)
			return -1;
		for (; digits < 3; digits++)
			frac_ms *= 10;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if ((*p == '+' || *p == '-') && isdigit((unsigned char)p[1]) &&
		   isdigit((unsigned char)p[2]) && p[3] == ':' && isdigit((unsigned char)p[4]) &&
		   isdigit((unsigned char)p[5])) {
		off = ((p[1] - '0') * 10 + (p[2] - '0')) * 60 + (p[4] - '0') * 10 + (p[5] - '0');
		off = *p == '-' ? -off : off;
		p += 6;
	} else {
		return -1;
	}
	if (*p != '\0')
		return -1;
	*ms = ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec) - (int64_t)off * 60) *
		      1000 +
	      frac_ms;
	return 0;
}

/* Append a partition to the plan. @returns the new entry, or NULL when out of memory. */
static rpart_t *add_part(cs_replay_t *r, const char *topic, int32_t partition)
{
	rpart_t *p = realloc(r->parts, (size_t)(r->nparts + 1) * sizeof(*p));

	if (p == NULL)
		return NULL;
	r->parts = p;
	p = &r->parts[r->nparts++];
	memset(p, 0, sizeof(*p));
	snprintf(p->topic, sizeof(p->topic), "%s", topic);
	p->partition = partition;
	return p;
}

static rpart_t *find_part(cs_replay_t *r, const char *topic, int32_t partition)
{
	for (int i = 0; i < r->nparts; i++)
		if (r->parts[i].partition == partition && strcmp(r->parts[i].topic, topic) == 0)
			return &r->parts[i];
	return NULL;
}

/* Number of partitions of `topic`. @returns the count, or -1 with errstr. */
static int partition_count(rd_kafka_t *rk, const char *topic, char *errstr, size_t errstr_size)
{
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t err;
	int n = -1;

	if (rkt == NULL) {
		snprintf(errstr, errstr_size, "topic \"%s\": %s", topic,
			 rd_kafka_err2str(rd_kafka_last_error()));
		return -1;
	}
	err = rd_kafka_metadata(rk, 0, rkt, &md, META_TIMEOUT_MS);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		snprintf(errstr, errstr_size, "could not read the metadata of topic \"%s\": %s", topic,
			 rd_kafka_err2str(err));
	else if (md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR)
		snprintf(errstr, errstr_size, "topic \"%s\" does not exist: %s", topic,
			 rd_kafka_err2str(md->topic_cnt == 1 ? md->topics[0].err
							      : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART));
	else
		n = md->topics[0].partition_cnt;
	if (md != NULL)
		rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(rkt);
	return n;
}

/* Every partition of every table topic, starting at its low watermark. */
static int plan_all(cs_replay_t *r, rd_kafka_t *rk, const cs_config_t *cfg, char *errstr,
		    size_t errstr_size)
{
	for (int t = 0; t < cfg->ntables; t++) {
		int n;
		if (t > 0 && find_part(r, cfg->tables[t].topic, 0) != NULL)
			continue; /* two tables on one topic: once */
		n = partition_count(rk, cfg->tables[t].topic, errstr, errstr_size);
		if (n < 0)
			return -1;
		for (int p = 0; p < n; p++)
			if (add_part(r, cfg->tables[t].topic, p) == NULL)
				goto oom;
	}
	return 0;
oom:
	snprintf(errstr, errstr_size, "out of memory");
	return -1;
}

/* "topic:partition:offset,..." (topic names hold no ':'). */
static int plan_list(cs_replay_t *r, rd_kafka_t *rk, const cs_config_t *cfg, const char *list,
		     char *errstr, size_t errstr_size)
{
	char *copy = strdup(list), *save = NULL, *item;
	int rc = -1;

	if (copy == NULL) {
		snprintf(errstr, errstr_size, "out of memory");
		return -1;
	}
	for (item = strtok_r(copy, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
		char *c2 = strrchr(item, ':'), *c1, *end1, *end2;
		long part;
		long long off;
		rpart_t *p;
		int n;

		c1 = NULL;
		for (char *q = item; c2 != NULL && q < c2; q++)
			if (*q == ':')
				c1 = q;
		if (c1 == NULL || c1 == item) {
			snprintf(errstr, errstr_size,
				 "--from: \"%s\" is not topic:partition:offset", item);
			goto out;
		}
		*c1 = *c2 = '\0';
		part = strtol(c1 + 1, &end1, 10);
		off = strtoll(c2 + 1, &end2, 10);
		if (*end1 != '\0' || *end2 != '\0' || c1[1] == '\0' || c2[1] == '\0' || part < 0 ||
		    off < 0) {
			snprintf(errstr, errstr_size, "--from: bad partition or offset for \"%s\"",
				 item);
			goto out;
		}
		if (cs_config_table_for_topic(cfg, item) == NULL) {
			snprintf(errstr, errstr_size, "--from: no table reads topic \"%s\"", item);
			goto out;
		}
		n = partition_count(rk, item, errstr, errstr_size);
		if (n < 0)
			goto out;
		if (part >= n) {
			snprintf(errstr, errstr_size, "--from: topic \"%s\" has no partition %ld", item,
				 part);
			goto out;
		}
		if (find_part(r, item, (int32_t)part) != NULL) {
			snprintf(errstr, errstr_size, "--from: partition \"%s\" [%ld] given twice",
				 item, part);
			goto out;
		}
		p = add_part(r, item, (int32_t)part);
		if (p == NULL) {
			snprintf(errstr, errstr_size, "out of memory");
			goto out;
		}
		p->start = off;
	}
	rc = r->nparts > 0 ? 0 : -1;
	if (rc != 0)
		snprintf(errstr, errstr_size, "--from: no position given");
out:
	free(copy);
	return rc;
}

/* Start offsets for "earliest" or a time, and the end offsets; clamp listed starts. */
static int resolve(cs_replay_t *r, rd_kafka_t *rk, const char *from, bool list, char *errstr,
		   size_t errstr_size)
{
	rd_kafka_topic_partition_list_t *times = NULL;
	int64_t at = -1;
	int rc = -1;

	if (!list && strcmp(from, "earliest") != 0) {
		if (cs_replay_parse_time(from, &at) != 0) {
			snprintf(errstr, errstr_size,
				 "--from \"%s\": expected earliest, an RFC 3339 time such as "
				 "2026-11-24T08:00:00Z, or topic:partition:offset,...",
				 from);
			return -1;
		}
		times = rd_kafka_topic_partition_list_new(r->nparts);
		for (int i = 0; i < r->nparts; i++)
			rd_kafka_topic_partition_list_add(times, r->parts[i].topic,
							  r->parts[i].partition)->offset = at;
		rd_kafka_resp_err_t err = rd_kafka_offsets_for_times(rk, times, META_TIMEOUT_MS);
		if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			snprintf(errstr, errstr_size, "could not look up offsets for %s: %s", from,
				 rd_kafka_err2str(err));
			goto out;
		}
	}
	for (int i = 0; i < r->nparts; i++) {
		rpart_t *p = &r->parts[i];
		int64_t low, high;
		rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
			rk, p->topic, p->partition, &low, &high, META_TIMEOUT_MS);

		if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			snprintf(errstr, errstr_size, "could not read the offsets of \"%s\" [%d]: %s",
				 p->topic, (int)p->partition, rd_kafka_err2str(err));
			goto out;
		}
		if (times != NULL) /* -1: no message at or after the time */
			p->start = times->elems[i].offset >= 0 ? times->elems[i].offset : high;
		else if (!list)
			p->start = low;
		if (p->start < low)
			p->start = low; /* deleted by retention: start at what is left */
		p->end = r->until_end ? high : INT64_MAX;
		p->pos = p->start;
		p->done = r->until_end && p->start >= p->end;
	}
	rc = 0;
out:
	if (times != NULL)
		rd_kafka_topic_partition_list_destroy(times);
	return rc;
}

cs_replay_t *cs_replay_start(rd_kafka_t *rk, const cs_config_t *cfg, const cs_replay_opts_t *opts,
			     char *errstr, size_t errstr_size)
{
	cs_replay_t *r = calloc(1, sizeof(*r));
	rd_kafka_topic_partition_list_t *assign = NULL;
	int64_t at;
	bool list = strchr(opts->from, ':') != NULL && cs_replay_parse_time(opts->from, &at) != 0;
	rd_kafka_resp_err_t err;

	if (r == NULL) {
		snprintf(errstr, errstr_size, "out of memory");
		return NULL;
	}
	r->until_end = opts->until_end;
	r->tty = opts->tty;
	cs_log_clear_line(r->tty);
	clock_gettime(CLOCK_MONOTONIC, &r->started);
	if ((list ? plan_list(r, rk, cfg, opts->from, errstr, errstr_size)
		  : plan_all(r, rk, cfg, errstr, errstr_size)) != 0 ||
	    resolve(r, rk, opts->from, list, errstr, errstr_size) != 0)
		goto fail;
	assign = rd_kafka_topic_partition_list_new(r->nparts);
	for (int i = 0; i < r->nparts; i++) {
		const rpart_t *p = &r->parts[i];
		if (p->done)
			continue;
		rd_kafka_topic_partition_list_add(assign, p->topic, p->partition)->offset = p->start;
		cs_info("replaying \"%s\" [%d] from offset %lld%s%lld", p->topic, (int)p->partition,
			(long long)p->start, r->until_end ? " to " : "",
			r->until_end ? (long long)p->end : 0LL);
	}
	err = rd_kafka_assign(rk, assign);
	rd_kafka_topic_partition_list_destroy(assign);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(errstr, errstr_size, "could not assign the partitions: %s",
			 rd_kafka_err2str(err));
		goto fail;
	}
	r->last_print = now_s();
	return r;
fail:
	cs_replay_destroy(r);
	return NULL;
}

void cs_replay_destroy(cs_replay_t *r)
{
	if (r == NULL)
		return;
	cs_log_clear_line(false);
	free(r->parts);
	free(r);
}

/* Mark the partition done and stop fetching it. */
static void finish(rpart_t *p, rd_kafka_t *rk)
{
	rd_kafka_topic_partition_list_t *list;

	if (p->done)
		return;
	p->done = true;
	p->pos = p->end;
	list = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(list, p->topic, p->partition);
	rd_kafka_pause_partitions(rk, list);
	rd_kafka_topic_partition_list_destroy(list);
	cs_debug("partition \"%s\" [%d] replayed to its end", p->topic, (int)p->partition);
}

bool cs_replay_take(cs_replay_t *r, rd_kafka_t *rk, const char *topic, int32_t partition,
		    int64_t offset)
{
	rpart_t *p = find_part(r, topic, partition);

	if (p == NULL)
		return false;
	if (offset >= p->end || p->done) {
		finish(p, rk);
		return false;
	}
	p->pos = offset + 1;
	if (r->until_end && p->pos >= p->end)
		finish(p, rk);
	return true;
}

void cs_replay_eof(cs_replay_t *r, rd_kafka_t *rk, const char *topic, int32_t partition,
		   int64_t offset)
{
	rpart_t *p = find_part(r, topic, partition);

	if (p != NULL && r->until_end && offset >= p->end)
		finish(p, rk);
}

bool cs_replay_done(const cs_replay_t *r)
{
	if (!r->until_end)
		return false;
	for (int i = 0; i < r->nparts; i++)
		if (!r->parts[i].done)
			return false;
	return true;
}

void cs_replay_progress(cs_replay_t *r, uint64_t rows, uint64_t dead, bool final)
{
	double now = now_s(), elapsed, rate, frac = -1, eta = -1;
	struct timespec ts;
	int64_t total = 0, read = 0;
	char bar[BAR_WIDTH + 1];

	if (!final && now - r->last_print < (r->tty ? 0.2 : 10.0))
		return;
	r->last_print = now;
	ts = r->started;
	elapsed = now - ((double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
	rate = elapsed > 0 ? (double)rows / elapsed : 0;
	if (r->until_end) {
		for (int i = 0; i < r->nparts; i++) {
			total += r->parts[i].end - r->parts[i].start;
			read += (r->parts[i].done ? r->parts[i].end : r->parts[i].pos) -
				r->parts[i].start;
		}
		frac = total > 0 ? (double)read / (double)total : 1.0;
		if (frac > 0 && frac < 1)
			eta = elapsed * (1 - frac) / frac;
	}
	if (final) {
		cs_info("replay finished: %llu rows written, %llu entries dead-lettered, %.1f s, "
			"%.0f rows/s%s",
			(unsigned long long)rows, (unsigned long long)dead, elapsed, rate,
			r->until_end && frac < 1 ? " (stopped before the end)" : "");
		return;
	}
	if (!r->tty) {
		if (frac >= 0)
			cs_info("replay: %llu rows, %.0f rows/s, %.1f%% of the range, ETA %.0f s",
				(unsigned long long)rows, rate, frac * 100, eta < 0 ? 0 : eta);
		else
			cs_info("replay: %llu rows, %.0f rows/s", (unsigned long long)rows, rate);
		return;
	}
	if (frac < 0) {
		fprintf(stderr, "\r\033[K%llu rows  %.0f rows/s", (unsigned long long)rows, rate);
	} else {
		int fill = (int)(frac * BAR_WIDTH);
		memset(bar, '#', (size_t)fill);
		memset(bar + fill, '.', (size_t)(BAR_WIDTH - fill));
		bar[BAR_WIDTH] = '\0';
		fprintf(stderr, "\r\033[K[%s] %5.1f%%  %llu rows  %.0f rows/s  ETA %d:%02d", bar,
			frac * 100, (unsigned long long)rows, rate, (int)(eta < 0 ? 0 : eta) / 60,
			(int)(eta < 0 ? 0 : eta) % 60);
	}
	fflush(stderr);
}
