/*
 * http.h - /metrics (Prometheus text format), /healthz and /readyz
 *
 * libmicrohttpd serves requests on its own thread; every request reads a snapshot of the
 * published stats, so a scrape never blocks the main loop.
 */
#ifndef COPYSINK_HTTP_H
#define COPYSINK_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "copysink/buf.h"
#include "copysink/stats.h"
#include "copysink/tablespec.h"

typedef struct cs_http cs_http_t;

/*
 * Start serving on `listen` ("host:port", e.g. "0.0.0.0:9187"). `shared` and `specs` must
 * outlive the server. /healthz fails when the loop's heartbeat is older than stall_ms.
 * @returns the server, or NULL with errstr (address invalid or in use).
 */
cs_http_t *cs_http_start(const char *listen, cs_stats_shared_t *shared,
			 const cs_tablespec_t *specs, int nspecs, int64_t stall_ms, char *errstr,
			 size_t errstr_size);

/* Stop serving and free. NULL is a no-op. */
void cs_http_stop(cs_http_t *http);

/* Render the metrics of `st` in Prometheus text format into `out`.
 * @returns 0, or -1 when out of memory. */
CS_MUSTCHECK int cs_http_render_metrics(const cs_stats_t *st, const cs_tablespec_t *specs,
					int nspecs, cs_buf_t *out);

/* Health verdicts of a snapshot at monotonic time now_ms: 1 healthy/ready, 0 not; `why`
 * gets the reason when not. */
int cs_http_healthy(const cs_stats_t *st, int64_t now_ms, int64_t stall_ms, const char **why);
int cs_http_ready(const cs_stats_t *st, const char **why);

#endif /* COPYSINK_HTTP_H */
