/*
 * dlq.c - the dead-letter topic producer
 */
#include "copysink/dlq.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "copysink/kafkaconf.h"
#include "copysink/log.h"

struct cs_dlq {
	rd_kafka_t *rk;
	pthread_mutex_t lock; /* delivery reports may run on the loop and the writer thread */
	uint64_t delivered;
	char last_error[256]; /* the last delivery failure */
};

void cs_dlq_tally_reset(cs_dlq_tally_t *tally)
{
	atomic_store(&tally->failed, 0);
}

/* Delivery report: count successes; charge a failure to the tally of the letter's batch. */
static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
	cs_dlq_t *dlq = opaque;
	cs_dlq_tally_t *tally = rkm->_private;

	pthread_mutex_lock(&dlq->lock);
	if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR)
		dlq->delivered++;
	else
		snprintf(dlq->last_error, sizeof(dlq->last_error), "%s", rd_kafka_err2str(rkm->err));
	pthread_mutex_unlock(&dlq->lock);
	if (rkm->err != RD_KAFKA_RESP_ERR_NO_ERROR && tally != NULL)
		atomic_fetch_add(&tally->failed, 1);
}

cs_dlq_t *cs_dlq_new(const cs_config_t *cfg, char *errstr, size_t errstr_size)
{
	cs_dlq_t *dlq = calloc(1, sizeof(*dlq));
	rd_kafka_conf_t *conf = NULL;
	char why[512];

	if (dlq == NULL || pthread_mutex_init(&dlq->lock, NULL) != 0) {
		free(dlq);
		snprintf(errstr, errstr_size, "out of memory");
		return NULL;
	}
	conf = cs_kafkaconf_new(cfg, true, errstr, errstr_size);
	if (conf == NULL)
		goto fail;
	if (cs_kafkaconf_default(conf, cfg, "enable.idempotence", "true", errstr, errstr_size) ||
	    cs_kafkaconf_default(conf, cfg, "linger.ms", "5", errstr, errstr_size) ||
	    cs_kafkaconf_default(conf, cfg, "client.id", "copysink-dlq", errstr, errstr_size))
		goto fail;
	rd_kafka_conf_set_opaque(conf, dlq);
	rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
	dlq->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
	if (dlq->rk == NULL) {
		snprintf(errstr, errstr_size, "could not create the dead-letter producer: %s", why);
		goto fail;
	}
	conf = NULL; /* owned by rk now */
	return dlq;
fail:
	if (conf != NULL)
		rd_kafka_conf_destroy(conf);
	pthread_mutex_destroy(&dlq->lock);
	free(dlq);
	return NULL;
}

void cs_dlq_destroy(cs_dlq_t *dlq)
{
	if (dlq == NULL)
		return;
	rd_kafka_flush(dlq->rk, 10000);
	rd_kafka_destroy(dlq->rk);
	pthread_mutex_destroy(&dlq->lock);
	free(dlq);
}

/* Add a string header; @returns 0 or -1. */
static int add_header(rd_kafka_headers_t *hdrs, const char *name, const char *value)
{
	if (value == NULL)
		return 0;
	return rd_kafka_header_add(hdrs, name, -1, value, -1) == RD_KAFKA_RESP_ERR_NO_ERROR ? 0
											     : -1;
}

int cs_dlq_send(cs_dlq_t *dlq, const cs_dead_letter_t *dl, cs_dlq_tally_t *tally, char *errstr,
		size_t errstr_size)
{
	rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
	char part[16], off[32], entry[16];
	rd_kafka_resp_err_t err;

	snprintf(part, sizeof(part), "%d", (int)dl->partition);
	snprintf(off, sizeof(off), "%lld", (long long)dl->offset);
	snprintf(entry, sizeof(entry), "%d", dl->entry);
	if (add_header(hdrs, "copysink.reason", dl->reason) || add_header(hdrs, "copysink.error", dl->error) ||
	    add_header(hdrs, "copysink.topic", dl->topic) ||
	    add_header(hdrs, "copysink.partition", part) || add_header(hdrs, "copysink.offset", off) ||
	    add_header(hdrs, "copysink.entry", dl->entry >= 0 ? entry : NULL) ||
	    add_header(hdrs, "copysink.table", dl->table) ||
	    add_header(hdrs, "copysink.sqlstate", dl->sqlstate)) {
		rd_kafka_headers_destroy(hdrs);
		atomic_fetch_add(&tally->failed, 1);
		snprintf(errstr, errstr_size, "could not build dead-letter headers");
		return -1;
	}
	err = cs_kafka_produce(dlq->rk, dl->dlq_topic, dl->key, dl->key_len, dl->value,
			       dl->value_len, hdrs, tally);
	if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
		/* wait for room once, then give up on this try */
		rd_kafka_poll(dlq->rk, 1000);
		err = cs_kafka_produce(dlq->rk, dl->dlq_topic, dl->key, dl->key_len, dl->value,
				       dl->value_len, hdrs, tally);
	}
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rd_kafka_headers_destroy(hdrs); /* not taken by a failed producev */
		atomic_fetch_add(&tally->failed, 1);
		snprintf(errstr, errstr_size, "could not queue a dead letter for \"%s\": %s",
			 dl->dlq_topic, rd_kafka_err2str(err));
		return -1;
	}
	rd_kafka_poll(dlq->rk, 0);
	return 0;
}

cs_err_t cs_dlq_flush(cs_dlq_t *dlq, cs_dlq_tally_t *tally, int timeout_ms, char *errstr,
		      size_t errstr_size)
{
	rd_kafka_resp_err_t err = rd_kafka_flush(dlq->rk, timeout_ms);
	uint64_t failed = atomic_load(&tally->failed);

	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(errstr, errstr_size, "dead letters not acknowledged within %d ms: %s",
			 timeout_ms, rd_kafka_err2str(err));
		return CS_ERR_RETRIABLE;
	}
	if (failed > 0) {
		pthread_mutex_lock(&dlq->lock);
		snprintf(errstr, errstr_size, "%llu dead letter(s) could not be delivered: %s",
			 (unsigned long long)failed,
			 dlq->last_error[0] ? dlq->last_error : "not queued");
		pthread_mutex_unlock(&dlq->lock);
		return CS_ERR_RETRIABLE;
	}
	return CS_OK;
}

uint64_t cs_dlq_delivered(cs_dlq_t *dlq)
{
	uint64_t n;

	pthread_mutex_lock(&dlq->lock);
	n = dlq->delivered;
	pthread_mutex_unlock(&dlq->lock);
	return n;
}
