/*
 * fetchwake.c - wakes librdkafka's fetcher once the prefetch queue has room again
 *
 * See fetchwake.h for why. A thread of its own, because rd_kafka_offsets_for_times() blocks
 * for a round trip to each leader; the loop only sets a flag.
 */
#include "copysink/fetchwake.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

/* How long one wake-up request may take; a slower broker only delays the next one. */
#define WAKE_TIMEOUT_MS 1000

struct cs_fetchwake {
	rd_kafka_t *rk;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool kicked, stop;
	uint64_t sent;
};

bool cs_fetchwake_needed(int rdkafka_version)
{
	return rdkafka_version < 0x020200ff; /* 2.2.0 added fetch.queue.backoff.ms */
}

/* Send one ListOffsets request for the current assignment. */
static void wake(rd_kafka_t *rk)
{
	rd_kafka_topic_partition_list_t *list = NULL;

	if (rd_kafka_assignment(rk, &list) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return;
	if (list->cnt > 0) {
		for (int i = 0; i < list->cnt; i++)
			list->elems[i].offset = RD_KAFKA_OFFSET_END; /* a timestamp: "the latest" */
		/* the answer does not matter: the request is what wakes the broker threads */
		(void)rd_kafka_offsets_for_times(rk, list, WAKE_TIMEOUT_MS);
	}
	rd_kafka_topic_partition_list_destroy(list);
}

static void *run(void *arg)
{
	cs_fetchwake_t *fw = arg;

	pthread_mutex_lock(&fw->lock);
	for (;;) {
		while (!fw->kicked && !fw->stop)
			pthread_cond_wait(&fw->cond, &fw->lock);
		if (fw->stop)
			break;
		fw->kicked = false;
		pthread_mutex_unlock(&fw->lock);
		wake(fw->rk);
		pthread_mutex_lock(&fw->lock);
		fw->sent++;
	}
	pthread_mutex_unlock(&fw->lock);
	return NULL;
}

cs_fetchwake_t *cs_fetchwake_new(rd_kafka_t *rk)
{
	cs_fetchwake_t *fw = calloc(1, sizeof(*fw));

	if (fw == NULL)
		return NULL;
	fw->rk = rk;
	if (pthread_mutex_init(&fw->lock, NULL) != 0)
		goto fail_mutex;
	if (pthread_cond_init(&fw->cond, NULL) != 0)
		goto fail_cond;
	if (pthread_create(&fw->thread, NULL, run, fw) != 0)
		goto fail_thread;
	return fw;
fail_thread:
	pthread_cond_destroy(&fw->cond);
fail_cond:
	pthread_mutex_destroy(&fw->lock);
fail_mutex:
	free(fw);
	return NULL;
}

void cs_fetchwake_destroy(cs_fetchwake_t *fw)
{
	if (fw == NULL)
		return;
	pthread_mutex_lock(&fw->lock);
	fw->stop = true;
	pthread_cond_signal(&fw->cond);
	pthread_mutex_unlock(&fw->lock);
	pthread_join(fw->thread, NULL);
	pthread_cond_destroy(&fw->cond);
	pthread_mutex_destroy(&fw->lock);
	free(fw);
}

void cs_fetchwake_kick(cs_fetchwake_t *fw)
{
	pthread_mutex_lock(&fw->lock);
	if (!fw->kicked) {
		fw->kicked = true;
		pthread_cond_signal(&fw->cond);
	}
	pthread_mutex_unlock(&fw->lock);
}

uint64_t cs_fetchwake_count(cs_fetchwake_t *fw)
{
	uint64_t n;

	pthread_mutex_lock(&fw->lock);
	n = fw->sent;
	pthread_mutex_unlock(&fw->lock);
	return n;
}
