/*
 * http.c - /metrics (Prometheus text format), /healthz and /readyz on libmicrohttpd
 */
#include "copysink/http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cs_http {
	struct MHD_Daemon *daemon;
	cs_stats_shared_t *shared;
	const cs_tablespec_t *specs;
	int nspecs;
	int64_t stall_ms;
};

/* Append printf output to out. */
static int put(cs_buf_t *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int put(cs_buf_t *out, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (cs_buf_reserve(out, 512) != 0)
		return -1;
	va_start(ap, fmt);
	n = vsnprintf(out->data + out->len, out->cap - out->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n >= out->cap - out->len) {
		if (cs_buf_reserve(out, (size_t)n + 1) != 0)
			return -1;
		va_start(ap, fmt);
		vsnprintf(out->data + out->len, out->cap - out->len, fmt, ap);
		va_end(ap);
	}
	out->len += (size_t)n;
	return 0;
}

/* HELP and TYPE lines of a metric. */
static int head(cs_buf_t *out, const char *name, const char *type, const char *help)
{
	return put(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Per-table and per-reason counters. */
static int render_counters(const cs_stats_t *st, const cs_tablespec_t *specs, int nspecs,
			   cs_buf_t *out)
{
	int rc = head(out, "copysink_rows_written_total", "counter", "Rows sent to PostgreSQL per table");
	for (int t = 0; t < nspecs && t < CS_STATS_MAX_TABLES; t++)
		rc |= put(out, "copysink_rows_written_total{table=\"%s\"} %llu\n", specs[t].name,
			  (unsigned long long)st->rows_written[t]);
	rc |= head(out, "copysink_rows_merged_total", "counter",
		   "Rows inserted or updated by the merge per table");
	for (int t = 0; t < nspecs && t < CS_STATS_MAX_TABLES; t++)
		rc |= put(out, "copysink_rows_merged_total{table=\"%s\"} %llu\n", specs[t].name,
			  (unsigned long long)st->rows_merged[t]);
	rc |= head(out, "copysink_rows_deleted_total", "counter",
		   "Rows deleted by tombstones per table");
	for (int t = 0; t < nspecs && t < CS_STATS_MAX_TABLES; t++)
		rc |= put(out, "copysink_rows_deleted_total{table=\"%s\"} %llu\n", specs[t].name,
			  (unsigned long long)st->rows_deleted[t]);
	rc |= head(out, "copysink_dead_letters_total", "counter", "Entries dead-lettered by reason");
	for (int r = 1; r < CS_REASON__COUNT; r++)
		rc |= put(out, "copysink_dead_letters_total{reason=\"%s\"} %llu\n",
			  cs_reason_name((cs_reason_t)r), (unsigned long long)st->dead_letters[r]);
	rc |= head(out, "copysink_db_errors_total", "counter", "Failed PostgreSQL statements by SQLSTATE");
	for (int i = 0; i < st->ndb_errors; i++)
		rc |= put(out, "copysink_db_errors_total{sqlstate=\"%s\"} %llu\n",
			  st->db_errors[i].sqlstate, (unsigned long long)st->db_errors[i].count);
	return rc;
}

/* Scalars: messages, batches, retries, bytes held, last commit. */
static int render_scalars(const cs_stats_t *st, cs_buf_t *out)
{
	static const struct {
		const char *name, *type, *help;
		size_t off;
	} rows[] = {
		{"copysink_messages_total", "counter", "Kafka messages consumed", offsetof(cs_stats_t, messages)},
		{"copysink_entries_total", "counter", "Entries decoded", offsetof(cs_stats_t, entries)},
		{"copysink_batches_total", "counter", "Batches committed", offsetof(cs_stats_t, batches)},
		{"copysink_retries_total", "counter", "Batch writes retried", offsetof(cs_stats_t, retries)},
		{"copysink_fenced_total", "counter", "Batches dropped by fencing", offsetof(cs_stats_t, fenced)},
		{"copysink_messages_skipped_total", "counter",
		 "Messages delivered again below their partition's position, dropped",
		 offsetof(cs_stats_t, stale_skipped)},
		{"copysink_position_rewinds_total", "counter",
		 "Partitions sought back after their position jumped ahead",
		 offsetof(cs_stats_t, position_rewinds)},
		{"copysink_dead_letter_values_dropped_total", "counter",
		 "Dead letters sent without their value (too large for the dead-letter topic)",
		 offsetof(cs_stats_t, dead_letter_values_dropped)},
		{"copysink_unknown_fields_total", "counter", "Entry fields matching no column",
		 offsetof(cs_stats_t, unknown_fields)},
		{"copysink_bytes_held", "gauge", "Bytes held in the current batch",
		 offsetof(cs_stats_t, bytes_held)},
	};
	int rc = 0;

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		uint64_t v;
		memcpy(&v, (const char *)st + rows[i].off, sizeof(v));
		rc |= head(out, rows[i].name, rows[i].type, rows[i].help);
		rc |= put(out, "%s %llu\n", rows[i].name, (unsigned long long)v);
	}
	rc |= head(out, "copysink_last_commit_timestamp_seconds", "gauge",
		   "Wall-clock time of the last committed batch");
	rc |= put(out, "copysink_last_commit_timestamp_seconds %.3f\n",
		  (double)st->last_commit_ms / 1000.0);
	return rc;
}

/* The batch-duration histogram (buckets are cumulative in the exposition format). */
static int render_histogram(const cs_stats_t *st, cs_buf_t *out)
{
	uint64_t cum = 0;
	int rc = head(out, "copysink_batch_duration_seconds", "histogram",
		      "Time to write and commit one batch");

	for (int i = 0; i < CS_STATS_BUCKETS; i++) {
		cum += st->batch_buckets[i];
		if (i == CS_STATS_BUCKETS - 1)
			rc |= put(out, "copysink_batch_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
				  (unsigned long long)cum);
		else
			rc |= put(out, "copysink_batch_duration_seconds_bucket{le=\"%g\"} %llu\n",
				  cs_stats_bucket_le[i], (unsigned long long)cum);
	}
	rc |= put(out, "copysink_batch_duration_seconds_sum %.6f\n", st->batch_seconds_sum);
	rc |= put(out, "copysink_batch_duration_seconds_count %llu\n", (unsigned long long)cum);
	return rc;
}

/* Per partition: stored offset, high watermark, lag. A value not known yet (no offset stored
 * for the partition, no fetch answered yet) is left out rather than shown as 0, so that a lag
 * of 0 always means caught up. */
static int render_partitions(const cs_stats_t *st, cs_buf_t *out)
{
	int rc = head(out, "copysink_partition_stored_offset", "gauge",
		      "Next offset stored in PostgreSQL per partition");
	for (int i = 0; i < st->nparts; i++)
		if (st->parts[i].stored >= 0)
			rc |= put(out,
				  "copysink_partition_stored_offset{topic=\"%s\",partition=\"%d\"} %lld\n",
				  st->parts[i].topic, (int)st->parts[i].partition,
				  (long long)st->parts[i].stored);
	rc |= head(out, "copysink_partition_high_watermark", "gauge", "High watermark per partition");
	for (int i = 0; i < st->nparts; i++)
		if (st->parts[i].high >= 0)
			rc |= put(out,
				  "copysink_partition_high_watermark{topic=\"%s\",partition=\"%d\"} %lld\n",
				  st->parts[i].topic, (int)st->parts[i].partition,
				  (long long)st->parts[i].high);
	rc |= head(out, "copysink_partition_lag", "gauge",
		   "Messages between the stored offset and the high watermark");
	for (int i = 0; i < st->nparts; i++) {
		const cs_stats_partition_t *p = &st->parts[i];
		if (p->high < 0 || p->stored < 0)
			continue;
		rc |= put(out, "copysink_partition_lag{topic=\"%s\",partition=\"%d\"} %lld\n",
			  p->topic, (int)p->partition,
			  p->high > p->stored ? (long long)(p->high - p->stored) : 0LL);
	}
	return rc;
}

int cs_http_render_metrics(const cs_stats_t *st, const cs_tablespec_t *specs, int nspecs,
			   cs_buf_t *out)
{
	int rc = render_counters(st, specs, nspecs, out);

	rc |= render_scalars(st, out);
	rc |= render_histogram(st, out);
	rc |= render_partitions(st, out);
	rc |= head(out, "copysink_up", "gauge", "1 when PostgreSQL and Kafka are usable");
	rc |= put(out, "copysink_up %d\n", cs_http_ready(st, &(const char *){NULL}));
	return rc ? -1 : 0;
}

int cs_http_healthy(const cs_stats_t *st, int64_t now_ms, int64_t stall_ms, const char **why)
{
	if (st->heartbeat_ms == 0) {
		*why = "main loop not started";
		return 0;
	}
	if (now_ms - st->heartbeat_ms > stall_ms) {
		*why = "main loop stuck";
		return 0;
	}
	return 1;
}

int cs_http_ready(const cs_stats_t *st, const char **why)
{
	if (!st->pg_ok) {
		*why = "PostgreSQL not connected";
		return 0;
	}
	if (!st->kafka_ok) {
		*why = "Kafka not connected";
		return 0;
	}
	if (st->retrying) {
		*why = "retrying a batch";
		return 0;
	}
	return 1;
}

/* Monotonic milliseconds (same clock as the worker's heartbeat). */
static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Queue a response with a copy of body. */
static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *type,
			       const char *body, size_t len)
{
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
	enum MHD_Result ret;

	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", type);
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* Route one request. */
static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
			       const char *method, const char *version, const char *upload_data,
			       size_t *upload_data_size, void **con_cls)
{
	cs_http_t *http = cls;
	cs_stats_t *st;
	const char *why = "ok";
	enum MHD_Result ret;

	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return respond(conn, 405, "text/plain", "method not allowed\n", 19);
	st = malloc(sizeof(*st));
	if (st == NULL)
		return MHD_NO;
	cs_stats_snapshot(http->shared, st);
	if (strcmp(url, "/metrics") == 0) {
		cs_buf_t out;
		cs_buf_init(&out);
		if (cs_http_render_metrics(st, http->specs, http->nspecs, &out) != 0)
			ret = respond(conn, 500, "text/plain", "out of memory\n", 14);
		else
			ret = respond(conn, 200, "text/plain; version=0.0.4", out.data, out.len);
		cs_buf_cleanup(&out);
	} else if (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0) {
		char body[128];
		int ok = url[1] == 'h' ? cs_http_healthy(st, mono_ms(), http->stall_ms, &why)
				       : cs_http_ready(st, &why);
		int n = snprintf(body, sizeof(body), "%s\n", ok ? "ok" : why);
		ret = respond(conn, ok ? 200 : 503, "text/plain", body, (size_t)n);
	} else {
		ret = respond(conn, 404, "text/plain", "not found\n", 10);
	}
	free(st);
	return ret;
}

cs_http_t *cs_http_start(const char *listen, cs_stats_shared_t *shared,
			 const cs_tablespec_t *specs, int nspecs, int64_t stall_ms, char *errstr,
			 size_t errstr_size)
{
	struct sockaddr_in addr;
	char host[64];
	const char *colon = strrchr(listen, ':');
	long port;
	cs_http_t *http;

	if (colon == NULL || (size_t)(colon - listen) >= sizeof(host) ||
	    (port = strtol(colon + 1, NULL, 10)) <= 0 || port > 65535) {
		snprintf(errstr, errstr_size, "invalid [http] listen address \"%s\" (want host:port)",
			 listen);
		return NULL;
	}
	memcpy(host, listen, (size_t)(colon - listen));
	host[colon - listen] = '\0';
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &addr.sin_addr) != 1) {
		snprintf(errstr, errstr_size, "invalid [http] listen address \"%s\"", listen);
		return NULL;
	}
	http = calloc(1, sizeof(*http));
	if (http == NULL) {
		snprintf(errstr, errstr_size, "out of memory");
		return NULL;
	}
	http->shared = shared;
	http->specs = specs;
	http->nspecs = nspecs;
	http->stall_ms = stall_ms;
	http->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port, NULL, NULL,
					handler, http, MHD_OPTION_SOCK_ADDR, &addr,
					MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
	if (http->daemon == NULL) {
		snprintf(errstr, errstr_size, "could not listen on \"%s\" for metrics and health",
			 listen);
		free(http);
		return NULL;
	}
	return http;
}

void cs_http_stop(cs_http_t *http)
{
	if (http == NULL)
		return;
	MHD_stop_daemon(http->daemon);
	free(http);
}
