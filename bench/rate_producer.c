/*
 * rate_producer.c - the latency mode's producer: records at a fixed rate, with send times
 *
 *   copysink_rate_producer TOPIC RATE RECORDS OUT [PROPERTY=VALUE ...]
 *
 * RECORDS holds the records already encoded, each as a little-endian uint32 key length, a
 * uint32 value length, the key and the value (bench.py writes it before the clock starts).
 * They are produced at RATE records per second on an even schedule. OUT receives one line per
 * delivered record: "partition offset send_time", the send time being the wall clock (seconds,
 * microsecond resolution) when the record was handed to librdkafka. The PROPERTY=VALUE
 * arguments configure the producer (bootstrap.servers among them): bench.py passes its own
 * producer's settings, so that both produce alike. warm.up.topic=NAME is the producer's own:
 * before the clock starts it delivers one record to that topic and reads the metadata of
 * TOPIC, so that connecting, the idempotent producer's id and the partition leaders are not
 * part of the first records' latency (a new broker's first idempotent producer waits seconds
 * for its transaction coordinator).
 *
 * The benchmark's producer shares a small machine with the worker, the broker and PostgreSQL;
 * written in Python it took close to half a CPU at the latency mode's rate, which the system
 * under test then lacked. In C the same schedule costs a small fraction of that.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct sent {
	double at;        /* wall clock when handed to the producer */
	int32_t partition; /* from the delivery report, -1 until then */
	int64_t offset;
} sent_t;

typedef struct run {
	sent_t *sent;
	size_t failed;
	char first_error[256];
} run_t;

static double wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
	run_t *run = opaque;
	sent_t *s = rkm->_private;
	(void)rk;
	if (s == NULL) /* the warm-up record: its failure shows in the flush before the clock */
		return;
	if (rkm->err) {
		if (run->failed++ == 0)
			snprintf(run->first_error, sizeof(run->first_error), "%s",
				 rd_kafka_err2str(rkm->err));
		return;
	}
	s->partition = rkm->partition;
	s->offset = rkm->offset;
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
	char err[512];
	if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
		fprintf(stderr, "rate-producer: %s = %s: %s\n", name, value, err);
		return -1;
	}
	return 0;
}

/* Count the records of the file and check that they fill it exactly. */
static long count_records(const unsigned char *p, size_t len)
{
	size_t pos = 0;
	long n = 0;
	while (pos < len) {
		if (len - pos < 8)
			return -1;
		size_t rec = 8 + (size_t)get_u32(p + pos) + get_u32(p + pos + 4);
		if (rec > len - pos)
			return -1;
		pos += rec;
		n++;
	}
	return n;
}

/* Deliver one record to WARM_UP and read TOPIC's metadata. @returns 0, or 1 after saying why. */
static int ready(rd_kafka_t *rk, const char *warm_up, const char *topic)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_t *rkt;
	rd_kafka_resp_err_t e;
	rd_kafka_vu_t vu[2] = {
		{.vtype = RD_KAFKA_VTYPE_TOPIC, .u.cstr = warm_up},
		{.vtype = RD_KAFKA_VTYPE_VALUE, .u.mem = {"warm-up", 7}},
	};
	rd_kafka_error_t *error = rd_kafka_produceva(rk, vu, 2);

	if (error != NULL) {
		fprintf(stderr, "rate-producer: warm-up: %s\n", rd_kafka_error_string(error));
		rd_kafka_error_destroy(error);
		return 1;
	}
	if (rd_kafka_flush(rk, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		fprintf(stderr, "rate-producer: warm-up record to %s undelivered\n", warm_up);
		return 1;
	}
	rkt = rd_kafka_topic_new(rk, topic, NULL);
	if (rkt == NULL) {
		fprintf(stderr, "rate-producer: %s: %s\n", topic,
			rd_kafka_err2str(rd_kafka_last_error()));
		return 1;
	}
	e = rd_kafka_metadata(rk, 0, rkt, &md, 30000);
	rd_kafka_topic_destroy(rkt);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		fprintf(stderr, "rate-producer: metadata of %s: %s\n", topic, rd_kafka_err2str(e));
		return 1;
	}
	rd_kafka_metadata_destroy(md);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "Usage: copysink_rate_producer TOPIC RATE RECORDS OUT "
				"[PROPERTY=VALUE ...]\n");
		return 2;
	}
	const char *topic = argv[1], *records = argv[3], *out_path = argv[4];
	char *end;
	double rate = strtod(argv[2], &end);
	if (*end || !(rate > 0)) {
		fprintf(stderr, "rate-producer: RATE must be a positive number, not %s\n", argv[2]);
		return 2;
	}

	/* the producer's settings first: a mistake there costs nothing to report */
	char err[512];
	const char *warm_up = NULL;
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	for (int a = 5; a < argc; a++) {
		char *eq = strchr(argv[a], '=');
		if (eq == NULL) {
			fprintf(stderr, "rate-producer: %s is not PROPERTY=VALUE\n", argv[a]);
			rd_kafka_conf_destroy(conf);
			return 2;
		}
		*eq = '\0';
		if (strcmp(argv[a], "warm.up.topic") == 0) {
			warm_up = eq + 1;
			continue;
		}
		if (set(conf, argv[a], eq + 1)) {
			rd_kafka_conf_destroy(conf);
			return 2;
		}
	}

	int fd = open(records, O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "rate-producer: %s: %s\n", records, strerror(errno));
		if (fd >= 0)
			close(fd);
		rd_kafka_conf_destroy(conf);
		return 1;
	}
	size_t len = (size_t)st.st_size;
	unsigned char *data = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
	close(fd);
	if (len && data == MAP_FAILED) {
		fprintf(stderr, "rate-producer: mmap %s: %s\n", records, strerror(errno));
		rd_kafka_conf_destroy(conf);
		return 1;
	}
	long n = count_records(data, len);
	run_t run = {.sent = n < 0 ? NULL : calloc((size_t)n + 1, sizeof(sent_t))};
	rd_kafka_t *rk = NULL;
	if (n < 0)
		fprintf(stderr, "rate-producer: %s: truncated record\n", records);
	else if (!run.sent)
		fprintf(stderr, "rate-producer: out of memory for %ld records\n", n);
	else {
		rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
		rd_kafka_conf_set_opaque(conf, &run);
		rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
		if (!rk)
			fprintf(stderr, "rate-producer: %s\n", err);
	}
	if (!rk) {
		rd_kafka_conf_destroy(conf);
		free(run.sent);
		if (len)
			munmap(data, len);
		return 1;
	}

	int rc = warm_up != NULL ? ready(rk, warm_up, topic) : 0;
	size_t pos = 0;
	double t0 = mono_now();
	for (long i = 0; rc == 0 && i < n; i++) {
		double wait = t0 + (double)i / rate - mono_now();
		if (wait > 0.001) {
			struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
			nanosleep(&ts, NULL);
		}
		uint32_t klen = get_u32(data + pos), vlen = get_u32(data + pos + 4);
		const unsigned char *key = data + pos + 8, *value = key + klen;
		pos += 8 + (size_t)klen + vlen;
		sent_t *s = &run.sent[i];
		s->partition = -1;
		s->at = wall_now();
		/* rd_kafka_produceva: the rd_kafka_producev macros use GNU statement expressions */
		rd_kafka_vu_t vu[4] = {
			{.vtype = RD_KAFKA_VTYPE_TOPIC, .u.cstr = topic},
			{.vtype = RD_KAFKA_VTYPE_KEY, .u.mem = {(void *)(uintptr_t)key, klen}},
			{.vtype = RD_KAFKA_VTYPE_VALUE, .u.mem = {(void *)(uintptr_t)value, vlen}},
			{.vtype = RD_KAFKA_VTYPE_OPAQUE, .u.ptr = s},
		};
		rd_kafka_error_t *error;
		while ((error = rd_kafka_produceva(rk, vu, 4)) != NULL &&
		       rd_kafka_error_code(error) == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
			rd_kafka_error_destroy(error);
			rd_kafka_poll(rk, 1);
		}
		if (error != NULL) {
			fprintf(stderr, "rate-producer: produce: %s\n", rd_kafka_error_string(error));
			rd_kafka_error_destroy(error);
			rc = 1;
			n = i;
			break;
		}
		rd_kafka_poll(rk, 0);
	}
	if (rd_kafka_flush(rk, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		fprintf(stderr, "rate-producer: %d records left undelivered\n", rd_kafka_outq_len(rk));
		rc = 1;
	}
	if (run.failed) {
		fprintf(stderr, "rate-producer: %zu records failed: %s\n", run.failed, run.first_error);
		rc = 1;
	}
	rd_kafka_destroy(rk);

	FILE *out = fopen(out_path, "w");
	if (!out) {
		fprintf(stderr, "rate-producer: %s: %s\n", out_path, strerror(errno));
		rc = 1;
	} else {
		for (long i = 0; i < n; i++)
			if (run.sent[i].partition >= 0)
				fprintf(out, "%" PRId32 " %" PRId64 " %.6f\n", run.sent[i].partition,
					run.sent[i].offset, run.sent[i].at);
		if (fclose(out) != 0) {
			fprintf(stderr, "rate-producer: %s: %s\n", out_path, strerror(errno));
			rc = 1;
		}
	}
	free(run.sent);
	if (len)
		munmap(data, len);
	return rc;
}
