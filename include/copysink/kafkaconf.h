/*
 * kafkaconf.h - librdkafka configuration from the [kafka] section
 */
#ifndef COPYSINK_KAFKACONF_H
#define COPYSINK_KAFKACONF_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>

#include "copysink/config.h"

/*
 * Build a librdkafka configuration from cfg->kafka. For a producer, consumer-only keys
 * (group.id, enable.auto.commit, auto.offset.reset, ...) are left out. Routes librdkafka's own
 * log lines through the copysink logger.
 * @returns the configuration (the caller owns it until rd_kafka_new takes it), or NULL with
 *          errstr naming the key librdkafka refused.
 */
rd_kafka_conf_t *cs_kafkaconf_new(const cs_config_t *cfg, bool producer, char *errstr,
				  size_t errstr_size);

/* Set key=value unless cfg->kafka sets key. @returns 0, or -1 with errstr. */
int cs_kafkaconf_default(rd_kafka_conf_t *conf, const cs_config_t *cfg, const char *key,
			 const char *value, char *errstr, size_t errstr_size);

/*
 * Queue one message (its key and value copied) on `topic`. `headers` may be NULL; when the call
 * succeeds librdkafka owns them, otherwise the caller still does. A NULL key or value is sent
 * as null (a value of NULL is a tombstone). `opaque` reaches the delivery report as the
 * message's _private (NULL: none).
 * @returns RD_KAFKA_RESP_ERR_NO_ERROR or librdkafka's error code (__QUEUE_FULL among them).
 */
rd_kafka_resp_err_t cs_kafka_produce(rd_kafka_t *rk, const char *topic, const void *key,
				     size_t key_len, const void *value, size_t value_len,
				     rd_kafka_headers_t *headers, void *opaque);

#endif /* COPYSINK_KAFKACONF_H */
