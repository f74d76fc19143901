/*
 * produce.c - JSON lines to msgpack entries on a Kafka topic (the `produce` command)
 */
#include "copysink/produce.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "copysink/kafkaconf.h"

/* Only guards against a stuck client: librdkafka fails every message that is not delivered
 * within message.timeout.ms (5 minutes by default), and flush returns once all have reported. */
#define FLUSH_TIMEOUT_MS (15 * 60 * 1000)
#define POLL_MS 100

/* Delivery reports, counted by the callback (which runs inside rd_kafka_poll/flush). */
typedef struct deliveries {
	uint64_t delivered;
	uint64_t failed;
	char first_error[256]; /* the first failure, "" when none */
} deliveries_t;

/* State of one run. */
typedef struct run {
	const cs_tablespec_t *spec;
	const char *topic;
	const char *input; /* name of the input in messages */
	rd_kafka_t *rk;
	deliveries_t dr;
	uint64_t queued;
	msgpack_sbuffer value;
	msgpack_sbuffer key;
} run_t;

/* Pack a JSON object as a map, keys in document order. */
static int pack_object(json_t *obj, msgpack_packer *pk)
{
	if (msgpack_pack_map(pk, json_object_size(obj)) != 0)
		return -1;
	for (void *it = json_object_iter(obj); it != NULL; it = json_object_iter_next(obj, it)) {
		if (msgpack_pack_str_with_body(pk, json_object_iter_key(it),
					       json_object_iter_key_len(it)) != 0 ||
		    cs_produce_json_to_msgpack(json_object_iter_value(it), pk) != 0)
			return -1;
	}
	return 0;
}

/* Pack a JSON array as an array. */
static int pack_array(json_t *arr, msgpack_packer *pk)
{
	size_t n = json_array_size(arr);

	if (msgpack_pack_array(pk, n) != 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (cs_produce_json_to_msgpack(json_array_get(arr, i), pk) != 0)
			return -1;
	return 0;
}

int cs_produce_json_to_msgpack(json_t *value, msgpack_packer *pk)
{
	int rc = -1;

	switch (json_typeof(value)) {
	case JSON_OBJECT:
		return pack_object(value, pk);
	case JSON_ARRAY:
		return pack_array(value, pk);
	case JSON_STRING:
		rc = msgpack_pack_str_with_body(pk, json_string_value(value),
						json_string_length(value));
		break;
	case JSON_INTEGER:
		rc = msgpack_pack_int64(pk, (int64_t)json_integer_value(value));
		break;
	case JSON_REAL:
		rc = msgpack_pack_double(pk, json_real_value(value));
		break;
	case JSON_TRUE:
		rc = msgpack_pack_true(pk);
		break;
	case JSON_FALSE:
		rc = msgpack_pack_false(pk);
		break;
	case JSON_NULL:
		rc = msgpack_pack_nil(pk);
		break;
	}
	return rc == 0 ? 0 : -1;
}

int cs_produce_pack_key(const cs_tablespec_t *spec, json_t *obj, msgpack_packer *pk)
{
	int nkeys = cs_tablespec_nkeys(spec);

	if (nkeys == 0)
		return 0;
	if (msgpack_pack_array(pk, (size_t)nkeys) != 0)
		return -1;
	for (int c = 0; c < spec->ncols; c++) {
		json_t *v;

		if (!spec->cols[c].in_key)
			continue;
		v = json_object_get(obj, spec->cols[c].name);
		if ((v == NULL ? msgpack_pack_nil(pk) : cs_produce_json_to_msgpack(v, pk)) != 0)
			return -1;
	}
	return nkeys;
}

/* Delivery report: count it, keep the first failure. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
	deliveries_t *dr = opaque;

	if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
		dr->delivered++;
		return;
	}
	if (dr->failed++ == 0)
		snprintf(dr->first_error, sizeof(dr->first_error), "%s",
			 rd_kafka_err2str(rkm->err));
}

/* The configured table called name, or NULL. */
static const cs_tablespec_t *table_by_name(const cs_config_t *cfg, const char *name)
{
	for (int t = 0; t < cfg->ntables; t++)
		if (strcmp(cfg->tables[t].name, name) == 0)
			return &cfg->tables[t];
	return NULL;
}

/* Create the producer. @returns 0, or -1 with errstr. */
static int producer_new(run_t *r, const cs_config_t *cfg, char *errstr, size_t errstr_size)
{
	rd_kafka_conf_t *conf = cs_kafkaconf_new(cfg, true, errstr, errstr_size);
	char why[512];

	if (conf == NULL)
		return -1;
	if (cs_kafkaconf_default(conf, cfg, "enable.idempotence", "true", errstr, errstr_size) ||
	    cs_kafkaconf_default(conf, cfg, "linger.ms", "5", errstr, errstr_size) ||
	    cs_kafkaconf_default(conf, cfg, "client.id", "copysink-produce", errstr, errstr_size))
		goto fail;
	rd_kafka_conf_set_opaque(conf, &r->dr);
	rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
	r->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
	if (r->rk == NULL) {
		snprintf(errstr, errstr_size, "could not create the Kafka producer: %s", why);
		goto fail;
	}
	return 0; /* conf is owned by rk now */
fail:
	rd_kafka_conf_destroy(conf);
	return -1;
}

/* True when the line holds only blanks. */
static bool is_blank(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!isspace((unsigned char)s[i]))
			return false;
	return true;
}

/* "an array", "a string", ...: what a JSON value is, for messages. */
static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	case JSON_NULL:
		break;
	}
	return "null";
}

/* Queue the message in r->value / r->key, waiting while librdkafka's queue is full.
 * @returns 0, or -1 with errstr. */
static int enqueue(run_t *r, bool keyed, char *errstr, size_t errstr_size)
{
	rd_kafka_resp_err_t err;

	for (;;) {
		err = cs_kafka_produce(r->rk, r->topic, keyed ? r->key.data : NULL,
				       keyed ? r->key.size : 0, r->value.data, r->value.size, NULL,
				       NULL);
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			break;
		rd_kafka_poll(r->rk, POLL_MS);
	}
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(errstr, errstr_size, "could not queue the message for topic \"%s\": %s",
			 r->topic, rd_kafka_err2str(err));
		return -1;
	}
	r->queued++;
	rd_kafka_poll(r->rk, 0); /* serve delivery reports as we go */
	return 0;
}

/* Publish one non-blank line. @returns 0, or -1 with errstr (without the line's position). */
static int produce_line(run_t *r, const char *line, size_t len, char *errstr, size_t errstr_size)
{
	msgpack_packer vpk, kpk;
	json_error_t jerr;
	size_t flags = JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL;
	json_t *obj = json_loadb(line, len, flags, &jerr);
	int nkeys, rc = -1;

	if (obj == NULL) {
		snprintf(errstr, errstr_size, "invalid JSON at column %d: %s", jerr.column,
			 jerr.text);
		return -1;
	}
	if (!json_is_object(obj)) {
		snprintf(errstr, errstr_size, "expected a JSON object, got %s", json_kind(obj));
		goto fail;
	}
	msgpack_sbuffer_clear(&r->value);
	msgpack_sbuffer_clear(&r->key);
	msgpack_packer_init(&vpk, &r->value, msgpack_sbuffer_write);
	msgpack_packer_init(&kpk, &r->key, msgpack_sbuffer_write);
	if (cs_produce_json_to_msgpack(obj, &vpk) != 0 ||
	    (nkeys = cs_produce_pack_key(r->spec, obj, &kpk)) < 0) {
		snprintf(errstr, errstr_size, "out of memory");
		goto fail;
	}
	rc = enqueue(r, nkeys > 0, errstr, errstr_size);
fail:
	json_decref(obj);
	return rc;
}

/* Publish every line of `in`; stops at the first bad one. @returns 0, or -1 with errstr. */
static int produce_lines(run_t *r, FILE *in, char *errstr, size_t errstr_size)
{
	char *line = NULL, why[512];
	size_t cap = 0;
	ssize_t len;
	int lineno = 0, rc = 0;

	while ((len = getline(&line, &cap, in)) >= 0) {
		lineno++;
		if (is_blank(line, (size_t)len))
			continue;
		if (produce_line(r, line, (size_t)len, why, sizeof(why)) != 0) {
			snprintf(errstr, errstr_size, "%s:%d: %s", r->input, lineno, why);
			rc = -1;
			break;
		}
	}
	if (rc == 0 && ferror(in)) {
		snprintf(errstr, errstr_size, "could not read %s: %s", r->input, strerror(errno));
		rc = -1;
	}
	free(line);
	return rc;
}

/* Wait for every delivery report. @returns 0, or -1 with errstr when a message failed. */
static int wait_deliveries(run_t *r, char *errstr, size_t errstr_size)
{
	char why[512];
	int left;

	rd_kafka_flush(r->rk, FLUSH_TIMEOUT_MS);
	left = rd_kafka_outq_len(r->rk);
	if (rd_kafka_fatal_error(r->rk, why, sizeof(why)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(errstr, errstr_size, "the Kafka producer failed: %s", why);
		return -1;
	}
	if (r->dr.failed > 0) {
		snprintf(errstr, errstr_size,
			 "%" PRIu64 " of %" PRIu64 " entries were not delivered to \"%s\": %s",
			 r->dr.failed, r->queued, r->topic, r->dr.first_error);
		return -1;
	}
	if (left > 0) {
		snprintf(errstr, errstr_size, "%d entries still undelivered to \"%s\" after %d s",
			 left, r->topic, FLUSH_TIMEOUT_MS / 1000);
		return -1;
	}
	return 0;
}

int cs_produce_run(const cs_config_t *cfg, const char *table, const char *topic,
		   const char *path, char *errstr, size_t errstr_size)
{
	bool from_stdin = path == NULL || strcmp(path, "-") == 0;
	run_t r = {0};
	FILE *in = NULL;
	char why[512];
	int rc = -1;

	msgpack_sbuffer_init(&r.value);
	msgpack_sbuffer_init(&r.key);
	r.spec = table_by_name(cfg, table);
	if (r.spec == NULL) {
		snprintf(errstr, errstr_size, "table \"%s\" is not in the configuration", table);
		goto fail;
	}
	r.topic = topic != NULL ? topic : r.spec->topic;
	r.input = from_stdin ? "<stdin>" : path;
	in = from_stdin ? stdin : fopen(path, "r");
	if (in == NULL) {
		snprintf(errstr, errstr_size, "could not open \"%s\": %s", path, strerror(errno));
		goto fail;
	}
	if (producer_new(&r, cfg, errstr, errstr_size) != 0)
		goto fail;
	rc = produce_lines(&r, in, errstr, errstr_size);
	/* deliver what was queued even after a bad line; the input error is the one reported */
	if (wait_deliveries(&r, rc == 0 ? errstr : why, rc == 0 ? errstr_size : sizeof(why)) != 0)
		rc = -1;
	fprintf(stderr, "produced %" PRIu64 " entries to \"%s\"\n", r.dr.delivered, r.topic);
fail:
	if (r.rk != NULL)
		rd_kafka_destroy(r.rk);
	if (in != NULL && in != stdin)
		fclose(in);
	msgpack_sbuffer_destroy(&r.value);
	msgpack_sbuffer_destroy(&r.key);
	return rc;
}
