/*
 * dlq.c - the dead-letter topic producer
 */
#include "copysink/dlq.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "copysink/kafkaconf.h"
#include "copysink/log.h"

/* Room above [worker] max_message_bytes for a letter's key, headers and record framing: the
 * headers are short strings (the error message is bounded by the worker's buffers), and the key
 * of a message that met the broker's limit is small next to this. */
#define LETTER_HEADROOM (64 * 1024)
/* librdkafka's upper bound for message.max.bytes */
#define RDKAFKA_MAX_MSG_BYTES 1000000000LL

#define HDR_VALUE_SIZE    "copysink.value_size"
#define HDR_VALUE_DROPPED "copysink.value_dropped"

/* A letter the broker refused as too large, copied by its delivery report, to be sent again
 * without its value by the next cs_dlq_flush (a delivery report must not produce or wait). */
typedef struct resend {
	struct resend *next;
	char *topic;
	void *key; /* NULL: no key */
	size_t key_len;
	rd_kafka_headers_t *hdrs; /* the letter's headers plus the value_size/value_dropped ones */
	cs_dlq_tally_t *tally;
} resend_t;

struct cs_dlq {
	rd_kafka_t *rk;
	pthread_mutex_t lock; /* delivery reports may run on the loop and the writer thread */
	uint64_t delivered;
	uint64_t values_dropped; /* of `delivered`, letters that went without their value */
	char last_error[256];    /* the last delivery failure */
	resend_t *resends;       /* FIFO of letters to send again without their value */
	resend_t **resends_tail;
	int resending; /* taken off `resends` by a flush and not queued yet */
};

void cs_dlq_tally_reset(cs_dlq_tally_t *tally)
{
	atomic_store(&tally->failed, 0);
}

/* Monotonic milliseconds. */
static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* True when err says a message (or the batch holding it) exceeds a size limit: librdkafka's own
 * message.max.bytes check or the broker's MESSAGE_TOO_LARGE / RECORD_LIST_TOO_LARGE. */
static bool is_too_large(rd_kafka_resp_err_t err)
{
	return err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ||
	       err == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE;
}

/* Add a string header; @returns 0 or -1. */
static int add_header(rd_kafka_headers_t *hdrs, const char *name, const char *value)
{
	if (value == NULL)
		return 0;
	return rd_kafka_header_add(hdrs, name, -1, value, -1) == RD_KAFKA_RESP_ERR_NO_ERROR ? 0
											     : -1;
}

/* Mark a letter as sent without its value of value_len bytes. @returns 0 or -1. */
static int mark_value_dropped(rd_kafka_headers_t *hdrs, size_t value_len)
{
	char size[32];

	snprintf(size, sizeof(size), "%zu", value_len);
	return add_header(hdrs, HDR_VALUE_SIZE, size) || add_header(hdrs, HDR_VALUE_DROPPED, "true")
		       ? -1
		       : 0;
}

/* True when the delivered or refused message is a letter already sent without its value. */
static bool was_value_dropped(const rd_kafka_message_t *rkm)
{
	rd_kafka_headers_t *hdrs;
	const void *value; /* get_last writes both, NULL is not allowed */
	size_t size;

	return rd_kafka_message_headers(rkm, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
	       rd_kafka_header_get_last(hdrs, HDR_VALUE_DROPPED, &value, &size) ==
		       RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* Free a resend_t. NULL is a no-op. */
static void resend_free(resend_t *rs)
{
	if (rs == NULL)
		return;
	if (rs->hdrs != NULL)
		rd_kafka_headers_destroy(rs->hdrs);
	free(rs->key);
	free(rs->topic);
	free(rs);
}

/* Copy what a refused letter needs to go again without its value (delivery-report thread).
 * @returns the copy, or NULL when out of memory. */
static resend_t *resend_new(const rd_kafka_message_t *rkm, cs_dlq_tally_t *tally)
{
	resend_t *rs = calloc(1, sizeof(*rs));
	rd_kafka_headers_t *src;

	if (rs == NULL)
		return NULL;
	rs->tally = tally;
	rs->topic = strdup(rd_kafka_topic_name(rkm->rkt));
	rs->hdrs = rd_kafka_message_headers(rkm, &src) == RD_KAFKA_RESP_ERR_NO_ERROR
			   ? rd_kafka_headers_copy(src)
			   : rd_kafka_headers_new(2);
	if (rkm->key != NULL) {
		rs->key = malloc(rkm->key_len > 0 ? rkm->key_len : 1);
		if (rs->key != NULL)
			memcpy(rs->key, rkm->key, rkm->key_len);
		rs->key_len = rkm->key_len;
	}
	if (rs->topic == NULL || rs->hdrs == NULL || (rkm->key != NULL && rs->key == NULL) ||
	    mark_value_dropped(rs->hdrs, rkm->len) != 0) {
		resend_free(rs);
		return NULL;
	}
	return rs;
}

/*
 * Delivery report (runs inside rd_kafka_poll/flush on whichever thread calls them): count
 * successes; a letter refused as too large is set aside to be sent again without its value
 * (cs_dlq_flush does that, not this callback); any other failure, and a failure of a letter
 * already without its value, is charged to the tally of the letter's batch.
 */
static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
	cs_dlq_t *dlq = opaque;
	cs_dlq_tally_t *tally = rkm->_private;
	bool dropped = was_value_dropped(rkm);
	resend_t *rs = NULL;

	(void)rk;
	if (is_too_large(rkm->err) && !dropped)
		rs = resend_new(rkm, tally); /* NULL (out of memory): a failure like any other */
	pthread_mutex_lock(&dlq->lock);
	if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
		dlq->delivered++;
		dlq->values_dropped += dropped ? 1 : 0;
	} else if (rs != NULL) {
		*dlq->resends_tail = rs;
		dlq->resends_tail = &rs->next;
	} else {
		snprintf(dlq->last_error, sizeof(dlq->last_error), "%s", rd_kafka_err2str(rkm->err));
	}
	pthread_mutex_unlock(&dlq->lock);
	if (rkm->err != RD_KAFKA_RESP_ERR_NO_ERROR && rs == NULL && tally != NULL)
		atomic_fetch_add(&tally->failed, 1);
}

/* True when the operator set `key` in [kafka]. */
static bool kafka_key_set(const cs_config_t *cfg, const char *key)
{
	for (int i = 0; i < cfg->nkafka; i++)
		if (strcmp(cfg->kafka[i].key, key) == 0)
			return true;
	return false;
}

/*
 * The producer's size settings, unless the operator chose them in [kafka].
 *
 * message.max.bytes: librdkafka refuses to queue a message whose key, value and headers exceed
 * it (1 MB by default), while the worker accepts message values up to max_message_bytes: a
 * letter carries such a value whole, so the limit follows max_message_bytes plus headroom.
 *
 * compression.type = lz4: the broker's max.message.bytes (and librdkafka's batching) apply to
 * the compressed record batch. The source message met its topic's limit compressed, as
 * producers usually send; sent uncompressed, the same bytes as a letter can exceed the same
 * limit on the dead-letter topic. lz4 costs little CPU (dead letters are rare), needs no
 * library beyond librdkafka's built-in one, and every supported broker takes it. A letter too
 * large even so goes without its value (see dlq.h).
 */
static int size_defaults(rd_kafka_conf_t *conf, const cs_config_t *cfg, char *errstr,
			 size_t errstr_size)
{
	long long max = (long long)cfg->max_message_bytes + LETTER_HEADROOM;
	char value[32];

	snprintf(value, sizeof(value), "%lld", max < RDKAFKA_MAX_MSG_BYTES ? max
									 : RDKAFKA_MAX_MSG_BYTES);
	if (cs_kafkaconf_default(conf, cfg, "message.max.bytes", value, errstr, errstr_size))
		return -1;
	if (kafka_key_set(cfg, "compression.codec")) /* compression.type's alias */
		return 0;
	return cs_kafkaconf_default(conf, cfg, "compression.type", "lz4", errstr, errstr_size);
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
	dlq->resends_tail = &dlq->resends;
	conf = cs_kafkaconf_new(cfg, true, errstr, errstr_size);
	if (conf == NULL)
		goto fail;
	if (cs_kafkaconf_default(conf, cfg, "enable.idempotence", "true", errstr, errstr_size) ||
	    cs_kafkaconf_default(conf, cfg, "linger.ms", "5", errstr, errstr_size) ||
	    cs_kafkaconf_default(conf, cfg, "client.id", "copysink-dlq", errstr, errstr_size) ||
	    size_defaults(conf, cfg, errstr, errstr_size))
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

/* Queue one message, waiting once for room when librdkafka's queue is full. On success
 * librdkafka owns hdrs. @returns librdkafka's error code. */
static rd_kafka_resp_err_t enqueue(cs_dlq_t *dlq, const char *topic, const void *key,
				   size_t key_len, const void *value, size_t value_len,
				   rd_kafka_headers_t *hdrs, cs_dlq_tally_t *tally)
{
	rd_kafka_resp_err_t err;

	err = cs_kafka_produce(dlq->rk, topic, key, key_len, value, value_len, hdrs, tally);
	if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
		/* wait for room once, then give up on this try */
		rd_kafka_poll(dlq->rk, 1000);
		err = cs_kafka_produce(dlq->rk, topic, key, key_len, value, value_len, hdrs, tally);
	}
	return err;
}

/* Charge a letter that could not be queued to its tally and keep the reason. */
static void queue_failed(cs_dlq_t *dlq, cs_dlq_tally_t *tally, rd_kafka_resp_err_t err)
{
	pthread_mutex_lock(&dlq->lock);
	snprintf(dlq->last_error, sizeof(dlq->last_error), "%s", rd_kafka_err2str(err));
	pthread_mutex_unlock(&dlq->lock);
	if (tally != NULL)
		atomic_fetch_add(&tally->failed, 1);
}

/* Copy string header `name` of hdrs into buf ("" when absent). @returns buf. */
static const char *header_str(const rd_kafka_headers_t *hdrs, const char *name, char *buf,
			      size_t size)
{
	const void *value;
	size_t len;

	buf[0] = '\0';
	if (rd_kafka_header_get_last(hdrs, name, &value, &len) == RD_KAFKA_RESP_ERR_NO_ERROR &&
	    value != NULL)
		snprintf(buf, size, "%.*s", (int)(len < size ? len : size - 1), (const char *)value);
	return buf;
}

/* Log that a letter goes without its value, with where it came from. */
static void log_value_dropped(const char *dlq_topic, const rd_kafka_headers_t *hdrs)
{
	char topic[256], part[16], off[32], size[32];

	cs_log_fields(CS_LOG_WARNING, "dead letter too large: sending it without its value",
		      "dlq_topic", dlq_topic,
		      "topic", header_str(hdrs, "copysink.topic", topic, sizeof(topic)),
		      "partition", header_str(hdrs, "copysink.partition", part, sizeof(part)),
		      "offset", header_str(hdrs, "copysink.offset", off, sizeof(off)),
		      "value_size", header_str(hdrs, HDR_VALUE_SIZE, size, sizeof(size)), NULL);
}

/* Queue the letters that delivery reports set aside, without their values.
 * @returns how many were queued (those that could not be are charged to their tallies). */
static int resend_pending(cs_dlq_t *dlq)
{
	resend_t *list;
	int n = 0;

	pthread_mutex_lock(&dlq->lock);
	list = dlq->resends;
	dlq->resends = NULL;
	dlq->resends_tail = &dlq->resends;
	for (resend_t *rs = list; rs != NULL; rs = rs->next)
		dlq->resending++;
	pthread_mutex_unlock(&dlq->lock);
	while (list != NULL) {
		resend_t *rs = list;
		rd_kafka_resp_err_t err;

		list = rs->next;
		log_value_dropped(rs->topic, rs->hdrs);
		err = enqueue(dlq, rs->topic, rs->key, rs->key_len, NULL, 0, rs->hdrs, rs->tally);
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
			rs->hdrs = NULL; /* librdkafka's now */
			n++;
		} else {
			queue_failed(dlq, rs->tally, err);
		}
		pthread_mutex_lock(&dlq->lock);
		dlq->resending--; /* only now: a concurrent flush must not see it neither queued
				   * nor pending */
		pthread_mutex_unlock(&dlq->lock);
		resend_free(rs);
	}
	return n;
}

/* Flush until every letter, those sent again without their value included, is acknowledged
 * or has failed. @returns RD_KAFKA_RESP_ERR_NO_ERROR or __TIMED_OUT. */
static rd_kafka_resp_err_t flush_all(cs_dlq_t *dlq, int timeout_ms)
{
	int64_t deadline = mono_ms() + timeout_ms;

	for (;;) {
		int64_t left = deadline - mono_ms();
		bool busy;

		if (rd_kafka_flush(dlq->rk, left > 0 ? (int)left : 0) != RD_KAFKA_RESP_ERR_NO_ERROR)
			return RD_KAFKA_RESP_ERR__TIMED_OUT;
		if (resend_pending(dlq) > 0)
			continue; /* flush those too */
		pthread_mutex_lock(&dlq->lock);
		busy = dlq->resends != NULL || dlq->resending > 0;
		pthread_mutex_unlock(&dlq->lock);
		if (!busy)
			return RD_KAFKA_RESP_ERR_NO_ERROR;
		if (left <= 0)
			return RD_KAFKA_RESP_ERR__TIMED_OUT;
		rd_kafka_poll(dlq->rk, 10); /* another thread is queueing letters again */
	}
}

void cs_dlq_destroy(cs_dlq_t *dlq)
{
	if (dlq == NULL)
		return;
	(void)flush_all(dlq, 10000);
	rd_kafka_destroy(dlq->rk);
	while (dlq->resends != NULL) { /* refused as too large after the flush gave up */
		resend_t *rs = dlq->resends;

		dlq->resends = rs->next;
		resend_free(rs);
	}
	pthread_mutex_destroy(&dlq->lock);
	free(dlq);
}

/* Build a letter's headers. @returns them, or NULL when out of memory. */
static rd_kafka_headers_t *letter_headers(const cs_dead_letter_t *dl)
{
	rd_kafka_headers_t *hdrs = rd_kafka_headers_new(10);
	char part[16], off[32], entry[16];

	snprintf(part, sizeof(part), "%d", (int)dl->partition);
	snprintf(off, sizeof(off), "%lld", (long long)dl->offset);
	snprintf(entry, sizeof(entry), "%d", dl->entry);
	if (hdrs == NULL || add_header(hdrs, "copysink.reason", dl->reason) ||
	    add_header(hdrs, "copysink.error", dl->error) ||
	    add_header(hdrs, "copysink.topic", dl->topic) ||
	    add_header(hdrs, "copysink.partition", part) ||
	    add_header(hdrs, "copysink.offset", off) ||
	    add_header(hdrs, "copysink.entry", dl->entry >= 0 ? entry : NULL) ||
	    add_header(hdrs, "copysink.table", dl->table) ||
	    add_header(hdrs, "copysink.sqlstate", dl->sqlstate)) {
		if (hdrs != NULL)
			rd_kafka_headers_destroy(hdrs);
		return NULL;
	}
	return hdrs;
}

int cs_dlq_send(cs_dlq_t *dlq, const cs_dead_letter_t *dl, cs_dlq_tally_t *tally, char *errstr,
		size_t errstr_size)
{
	rd_kafka_headers_t *hdrs = letter_headers(dl);
	rd_kafka_resp_err_t err;

	if (hdrs == NULL) {
		atomic_fetch_add(&tally->failed, 1);
		snprintf(errstr, errstr_size, "could not build dead-letter headers");
		return -1;
	}
	err = enqueue(dlq, dl->dlq_topic, dl->key, dl->key_len, dl->value, dl->value_len, hdrs,
		      tally);
	if (is_too_large(err)) {
		/* above message.max.bytes: librdkafka refused it before any broker saw it */
		if (mark_value_dropped(hdrs, dl->value_len) != 0) {
			err = RD_KAFKA_RESP_ERR__FAIL;
		} else {
			log_value_dropped(dl->dlq_topic, hdrs);
			err = enqueue(dlq, dl->dlq_topic, dl->key, dl->key_len, NULL, 0, hdrs,
				      tally);
		}
	}
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rd_kafka_headers_destroy(hdrs); /* not taken by a failed produce */
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
	rd_kafka_resp_err_t err = flush_all(dlq, timeout_ms);
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

uint64_t cs_dlq_values_dropped(cs_dlq_t *dlq)
{
	uint64_t n;

	pthread_mutex_lock(&dlq->lock);
	n = dlq->values_dropped;
	pthread_mutex_unlock(&dlq->lock);
	return n;
}
