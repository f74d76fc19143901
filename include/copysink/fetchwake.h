/*
 * fetchwake.h - wakes librdkafka's fetcher once the prefetch queue has room again
 *
 * librdkafka before 2.2.0 (Debian 12 ships 2.0.2) stops fetching a partition whose prefetch
 * queue holds queued.max.messages.kbytes and decides again only when its broker thread wakes
 * up: when a request for that broker is queued, or at the latest after a second. With a queue
 * sized to one batch, which drains in a fraction of that second, the worker would starve for
 * the rest of it (docs/BENCHMARKS.md). The waker's thread sends a ListOffsets request for the
 * assigned partitions (rd_kafka_offsets_for_times(), which librdkafka routes to each
 * partition's leader), so each fetching broker thread looks at its queue again at once.
 *
 * librdkafka 2.2.0 and later (Debian 13 ships 2.8.0) instead back such a partition off for
 * fetch.queue.backoff.ms (1000 by default) and do not fetch it before that time, whatever
 * wakes the broker thread: there waking after the queue drained would wake nothing. The
 * consumer sets fetch.queue.backoff.ms to CS_FETCHWAKE_BACKOFF_MS unless [kafka] sets it
 * (cs_fetchwake_needed() tells the two apart).
 *
 * On every version a resumed partition has the same wait: a resume does not wake the broker
 * thread either. The consumer calls cs_fetchwake_kick() after every resume, and before 2.2.0
 * also whenever the loop has taken a good part of the queue; the request runs on the waker's
 * own thread, so the loop never waits for the broker.
 */
#ifndef COPYSINK_FETCHWAKE_H
#define COPYSINK_FETCHWAKE_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cs_fetchwake cs_fetchwake_t;

/* fetch.queue.backoff.ms where librdkafka has it: a partition whose queue was full is looked
 * at again after this long, about as soon as a waker's request would have made its broker
 * thread look (which then wakes 100 times a second while the queue stays full: next to
 * nothing). */
#define CS_FETCHWAKE_BACKOFF_MS 10

/* @returns true when librdkafka version `rdkafka_version` (as rd_kafka_version() returns it)
 * needs the waker as its queue drains: before 2.2.0, which has no fetch.queue.backoff.ms. */
bool cs_fetchwake_needed(int rdkafka_version);

/* Start the waker for consumer `rk` (borrowed: it must outlive the waker).
 * @returns the waker, or NULL when out of memory or the thread could not start. */
cs_fetchwake_t *cs_fetchwake_new(rd_kafka_t *rk);

/* Stop and join the thread (waiting for a request in flight, at most its timeout).
 * Call it before closing the consumer. NULL is a no-op. */
void cs_fetchwake_destroy(cs_fetchwake_t *fw);

/* Ask for a wake-up; returns at once. Kicks while one is pending or in flight merge into one.
 * @locality the loop's thread (any thread is safe) */
void cs_fetchwake_kick(cs_fetchwake_t *fw);

/* How many wake-ups the thread has carried out (each one request per leader of the assigned
 * partitions, none while nothing is assigned). */
uint64_t cs_fetchwake_count(cs_fetchwake_t *fw);

#endif /* COPYSINK_FETCHWAKE_H */
