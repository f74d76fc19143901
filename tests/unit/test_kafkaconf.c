/*
 * test_kafkaconf.c - the [kafka] section into librdkafka: copysink's defaults and the file's
 * settings over them
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "copysink/config.h"
#include "copysink/kafkaconf.h"

/* The value librdkafka holds for key after cs_kafkaconf_new with the given overrides, in out;
 * also checks that a producer accepts the configuration (librdkafka checks the combination
 * only there). */
static void effective(char *const *overrides, int n, const char *key, char *out, size_t size)
{
	cs_config_t cfg;
	char err[512];
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;

	cs_config_init(&cfg);
	if (cs_config_load(&cfg, NULL, NULL, overrides, n, err, sizeof(err)) != 0)
		fail_msg("config: %s", err);
	conf = cs_kafkaconf_new(&cfg, true, err, sizeof(err));
	if (conf == NULL)
		fail_msg("cs_kafkaconf_new: %s", err);
	assert_int_equal(rd_kafka_conf_get(conf, key, out, &size), RD_KAFKA_CONF_OK);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	if (rk == NULL)
		fail_msg("librdkafka refused the configuration: %s", err);
	rd_kafka_destroy(rk);
	cs_config_cleanup(&cfg);
}

/* reconnect.backoff.max.ms: 1000 unless the file sets it, and never below the file's
 * reconnect.backoff.ms (librdkafka refuses that: the worker would not start). */
static void test_reconnect_backoff(void **state)
{
	char *none[] = {"kafka.bootstrap.servers=127.0.0.1:1"};
	char *max[] = {"kafka.bootstrap.servers=127.0.0.1:1", "kafka.reconnect.backoff.max.ms=300"};
	char *first_large[] = {"kafka.bootstrap.servers=127.0.0.1:1",
			       "kafka.reconnect.backoff.ms=2500"};
	char *first_small[] = {"kafka.bootstrap.servers=127.0.0.1:1",
			       "kafka.reconnect.backoff.ms=50"};
	char v[64];

	(void)state;
	effective(none, 1, "reconnect.backoff.max.ms", v, sizeof(v));
	assert_string_equal(v, "1000");
	effective(max, 2, "reconnect.backoff.max.ms", v, sizeof(v));
	assert_string_equal(v, "300");
	effective(first_large, 2, "reconnect.backoff.max.ms", v, sizeof(v));
	assert_string_equal(v, "2500");
	effective(first_small, 2, "reconnect.backoff.max.ms", v, sizeof(v));
	assert_string_equal(v, "1000");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reconnect_backoff),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
