/*
 * kafkaconf.c - librdkafka configuration from the [kafka] section
 */
#include "copysink/kafkaconf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "copysink/log.h"

/* Keys that only a consumer understands; a producer would warn about each. */
static const char *const consumer_only[] = {
	"group.id", "group.instance.id", "enable.auto.commit", "auto.commit.interval.ms",
	"auto.offset.reset", "enable.auto.offset.store", "partition.assignment.strategy",
	"session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms",
	"enable.partition.eof", "fetch.min.bytes", "fetch.wait.max.ms", "fetch.max.bytes",
	"max.partition.fetch.bytes", "fetch.message.max.bytes", "queued.min.messages",
	"queued.max.messages.kbytes", "isolation.level", "check.crcs", "group.protocol.type",
	"allow.auto.create.topics", "coordinator.query.interval.ms", "fetch.queue.backoff.ms",
};

/* True when key is consumer-only. */
static bool is_consumer_only(const char *key)
{
	for (size_t i = 0; i < sizeof(consumer_only) / sizeof(consumer_only[0]); i++)
		if (strcmp(consumer_only[i], key) == 0)
			return true;
	return false;
}

/* librdkafka's log, through our logger (levels are syslog levels). */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	cs_log_level_t l = level <= 3 ? CS_LOG_ERROR : level <= 4 ? CS_LOG_WARNING
				     : level <= 6 ? CS_LOG_INFO : CS_LOG_DEBUG;

	cs_log_fields(l, buf, "source", "librdkafka", "facility", fac, "client",
		      rk ? rd_kafka_name(rk) : "", NULL);
}

/* copysink's reconnect.backoff.max.ms, in buf: 1000, or conf's reconnect.backoff.ms (the
 * file's, already set and checked by librdkafka) when larger. */
static const char *backoff_max(const rd_kafka_conf_t *conf, char *buf, size_t size)
{
	size_t n = size;
	long long first = 0;

	if (rd_kafka_conf_get(conf, "reconnect.backoff.ms", buf, &n) == RD_KAFKA_CONF_OK)
		first = strtoll(buf, NULL, 10);
	snprintf(buf, size, "%lld", first > 1000 ? first : 1000);
	return buf;
}

rd_kafka_conf_t *cs_kafkaconf_new(const cs_config_t *cfg, bool producer, char *errstr,
				  size_t errstr_size)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char why[512], backoff[32];

	for (int i = 0; i < cfg->nkafka; i++) {
		if (producer && is_consumer_only(cfg->kafka[i].key))
			continue;
		if (rd_kafka_conf_set(conf, cfg->kafka[i].key, cfg->kafka[i].value, why,
				      sizeof(why)) != RD_KAFKA_CONF_OK) {
			snprintf(errstr, errstr_size, "invalid [kafka] setting \"%s\": %s",
				 cfg->kafka[i].key, why);
			rd_kafka_conf_destroy(conf);
			return NULL;
		}
	}
	/* librdkafka doubles the wait before each reconnect up to reconnect.backoff.max.ms
	 * (10 s by its default): after a broker restart of a few seconds the group coordinator's
	 * connection stayed down up to 10 s longer, so the Kafka-side offset commits waited that
	 * long, and a SIGTERM then found rd_kafka_consumer_close() waiting for them past the close
	 * guard (main.c). 1 s brings every connection back within a second of the broker;
	 * librdkafka refuses a maximum below reconnect.backoff.ms, so a larger first wait set in
	 * the file is the maximum too. */
	if (cs_kafkaconf_default(conf, cfg, "reconnect.backoff.max.ms",
				 backoff_max(conf, backoff, sizeof(backoff)), errstr,
				 errstr_size) != 0) {
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rd_kafka_conf_set_log_cb(conf, log_cb);
	return conf;
}

int cs_kafkaconf_default(rd_kafka_conf_t *conf, const cs_config_t *cfg, const char *key,
			 const char *value, char *errstr, size_t errstr_size)
{
	char why[512];

	for (int i = 0; i < cfg->nkafka; i++)
		if (strcmp(cfg->kafka[i].key, key) == 0)
			return 0;
	if (rd_kafka_conf_set(conf, key, value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
		snprintf(errstr, errstr_size, "could not set Kafka setting \"%s\": %s", key, why);
		return -1;
	}
	return 0;
}

/* rd_kafka_produceva rather than the rd_kafka_producev macros: the macros use GNU statement
 * expressions and cast away const, which a pedantic C11 build refuses. */
rd_kafka_resp_err_t cs_kafka_produce(rd_kafka_t *rk, const char *topic, const void *key,
				     size_t key_len, const void *value, size_t value_len,
				     rd_kafka_headers_t *headers, void *opaque)
{
	rd_kafka_vu_t vu[6];
	rd_kafka_error_t *error;
	rd_kafka_resp_err_t err;
	size_t n = 0;

	memset(vu, 0, sizeof(vu));
	vu[n].vtype = RD_KAFKA_VTYPE_TOPIC;
	vu[n++].u.cstr = topic;
	vu[n].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
	vu[n++].u.i = RD_KAFKA_MSG_F_COPY;
	vu[n].vtype = RD_KAFKA_VTYPE_KEY;
	vu[n].u.mem.ptr = (void *)(uintptr_t)key; /* copied (F_COPY), never written */
	vu[n++].u.mem.size = key_len;
	vu[n].vtype = RD_KAFKA_VTYPE_VALUE;
	vu[n].u.mem.ptr = (void *)(uintptr_t)value;
	vu[n++].u.mem.size = value_len;
	if (headers != NULL) {
		vu[n].vtype = RD_KAFKA_VTYPE_HEADERS;
		vu[n++].u.headers = headers;
	}
	if (opaque != NULL) {
		vu[n].vtype = RD_KAFKA_VTYPE_OPAQUE;
		vu[n++].u.ptr = opaque;
	}
	error = rd_kafka_produceva(rk, vu, n);
	if (error == NULL)
		return RD_KAFKA_RESP_ERR_NO_ERROR;
	err = rd_kafka_error_code(error);
	rd_kafka_error_destroy(error);
	return err;
}
