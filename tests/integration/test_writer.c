/*
 * test_writer.c - the writer against a real PostgreSQL: fencing, merge semantics, untouched
 * unchanged rows, rejected rows, deleted-row counts, lost connections and the ping
 *
 * Needs COPYSINK_TEST_PG_CONNINFO (scripts/test.sh sets it); creates and drops its own database.
 */
#define _DEFAULT_SOURCE /* MAP_ANON */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <msgpack.h>

#include "copysink/batch.h"
#include "copysink/decode.h"
#include "copysink/schema.h"
#include "copysink/writer.h"

static char conninfo[1024];
static char dbname[64];
static cs_tablespec_t spec;
static cs_decoder_t *dec;

/* Run SQL on the test database and return the first value of the first row ("" if none). */
static char *query(const char *sql, char *out, size_t size)
{
	PGconn *conn = PQconnectdb(conninfo);
	PGresult *res = PQexec(conn, sql);

	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
		fail_msg("%s: %s", sql, PQerrorMessage(conn));
	snprintf(out, size, "%s", PQntuples(res) > 0 ? PQgetvalue(res, 0, 0) : "");
	PQclear(res);
	PQfinish(conn);
	return out;
}

/* Add entry {id, body} at offset to the batch as the decoder would. */
static void add(cs_batch_t *b, int32_t partition, int64_t offset, int64_t id, const char *body)
{
	msgpack_sbuffer sbuf;
	msgpack_packer pk;
	cs_buf_t *tuples = cs_batch_tuples(b, 0), *keys = cs_batch_keys(b);
	size_t ts = tuples->len, ks = keys->len;
	cs_reason_t reason;
	char err[256];
	int part;

	msgpack_sbuffer_init(&sbuf);
	msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	msgpack_pack_str_with_body(&pk, "id", 2);
	msgpack_pack_int64(&pk, id);
	msgpack_pack_str_with_body(&pk, "body", 4);
	msgpack_pack_str_with_body(&pk, body, strlen(body));
	part = cs_batch_add_message(b, "topic", partition, offset, NULL, 0, sbuf.data, sbuf.size,
				    true);
	assert_true(part >= 0);
	assert_int_equal(cs_decode_open(dec, sbuf.data, sbuf.size, &reason, err, sizeof(err)), 1);
	assert_int_equal(cs_decode_entry(dec, 0, &spec, tuples, keys, err, sizeof(err)),
			 CS_REASON_OK);
	assert_int_equal(cs_batch_push_row(b, 0, part, offset, 0, ts, ks, false), 0);
	msgpack_sbuffer_destroy(&sbuf);
}

/* Rejected-row callback that records the SQLSTATEs it sees. */
static char rejected[256];
static int on_reject(void *opaque, int t, const cs_batch_row_t *row, const char *sqlstate,
		     const char *message)
{
	size_t n = strlen(rejected);
	snprintf(rejected + n, sizeof(rejected) - n, "%s%lld:%s", n ? "," : "",
		 (long long)row->offset, sqlstate);
	return 0;
}

/* Add a tombstone for key id at offset: a null value whose Kafka key is msgpack [id]. */
static void add_delete(cs_batch_t *b, int32_t partition, int64_t offset, int64_t id)
{
	msgpack_sbuffer sbuf;
	msgpack_packer pk;
	cs_buf_t *tuples = cs_batch_tuples(b, 0), *keys = cs_batch_keys(b);
	size_t ts = tuples->len, ks = keys->len;
	char err[256];
	int part;

	msgpack_sbuffer_init(&sbuf);
	msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 1);
	msgpack_pack_int64(&pk, id);
	part = cs_batch_add_message(b, "topic", partition, offset, sbuf.data, sbuf.size, NULL, 0,
				    true);
	assert_true(part >= 0);
	if (cs_decode_key(dec, &spec, sbuf.data, sbuf.size, tuples, keys, err, sizeof(err)) !=
	    CS_REASON_OK)
		fail_msg("%s", err);
	assert_int_equal(cs_batch_push_row(b, 0, part, offset, -1, ts, ks, true), 0);
	msgpack_sbuffer_destroy(&sbuf);
}

/* Write the batch, expecting for each of its partitions the offset stored now. The tests pick
 * their offsets freely: a batch that starts above the stored offset covers the partition from
 * it, as the consumer's batches do across a gap in the log. */
static cs_err_t try_write_batch(cs_writer_t *w, cs_batch_t *b, char *err, size_t errsize)
{
	int nparts;
	const cs_batch_part_t *parts = cs_batch_parts(b, &nparts);
	int64_t expected[8];

	assert_true(nparts <= 8);
	assert_int_equal(cs_writer_connect(w, err, errsize), CS_OK);
	for (int i = 0; i < nparts; i++)
		assert_int_equal(cs_writer_stored_offset(w, parts[i].topic, parts[i].partition,
							 &expected[i], err, errsize),
				 CS_OK);
	for (int i = 0; i < nparts; i++)
		if (expected[i] >= 0)
			cs_batch_cover_from(b, i, expected[i]);
	return cs_writer_write(w, b, expected, on_reject, NULL, err, errsize);
}

/* The same, expecting it written; the batch is emptied for the next one. */
static cs_err_t write_batch(cs_writer_t *w, cs_batch_t *b)
{
	char err[512];
	cs_err_t rc = try_write_batch(w, b, err, sizeof(err));

	if (rc != CS_OK)
		fail_msg("write failed: %s", err);
	cs_batch_reset(b);
	return rc;
}

/* Whether writers try the direct path; every test runs with it on and off. */
static bool direct = true;

/* The staging of the writers: COPYSINK_POSTGRES_STAGING=transaction, the worker's own override
 * of [postgres] staging, runs every test with staging tables per transaction. */
static cs_writer_staging_t staging_from_env(void)
{
	const char *v = getenv("COPYSINK_POSTGRES_STAGING");

	return v != NULL && strcmp(v, "transaction") == 0 ? CS_WRITER_STAGING_TRANSACTION
							  : CS_WRITER_STAGING_SESSION;
}

static cs_writer_t *new_writer(const char *group)
{
	cs_writer_t *w = cs_writer_new(conninfo, &spec, 1, group);

	assert_non_null(w);
	cs_writer_set_direct(w, direct);
	cs_writer_set_staging(w, staging_from_env());
	return w;
}

#define ROWS_SQL "SELECT coalesce(string_agg(id || '=' || body, ',' ORDER BY id), '') FROM items"

/* Create the database and the table for one test. */
static int setup(void **state)
{
	const char *admin = getenv("COPYSINK_TEST_PG_CONNINFO");
	char sql[256], err[512];
	PGconn *conn;

	if (admin == NULL)
		fail_msg("COPYSINK_TEST_PG_CONNINFO is not set: run through scripts/test.sh");
	snprintf(dbname, sizeof(dbname), "cs_writer_%d", (int)getpid());
	conn = PQconnectdb(admin);
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", dbname);
	PQclear(PQexec(conn, sql));
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", dbname);
	PQclear(PQexec(conn, sql));
	PQfinish(conn);
	snprintf(conninfo, sizeof(conninfo), "%s dbname=%s", admin, dbname);

	memset(&spec, 0, sizeof(spec));
	snprintf(spec.name, sizeof(spec.name), "items");
	snprintf(spec.schema, sizeof(spec.schema), "public");
	spec.dim = 3;
	spec.on_conflict = CS_CONFLICT_UPDATE;
	assert_int_equal(cs_tablespec_parse_columns(&spec, "id bigint not null, body text", "id",
						    err, sizeof(err)), 0);
	conn = PQconnectdb(conninfo);
	cs_schema_quiet_notices(conn);
	if (cs_schema_migrate(conn, &spec, 1, false, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	PQfinish(conn);
	rejected[0] = '\0';
	return 0;
}

static int setup_merge_only(void **state)
{
	direct = false;
	return setup(state);
}

static int teardown(void **state)
{
	PGconn *conn = PQconnectdb(getenv("COPYSINK_TEST_PG_CONNINFO"));
	char sql[128];

	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", dbname);
	PQclear(PQexec(conn, sql));
	PQfinish(conn);
	direct = true;
	return 0;
}

/* A writer that lost the partition cannot commit: its expected offset is stale. */
static void test_fencing(void **state)
{
	cs_writer_t *w1 = new_writer("g");
	cs_writer_t *w2 = new_writer("g");
	cs_batch_t *b1 = cs_batch_new(&spec, 1), *b2 = cs_batch_new(&spec, 1);
	int64_t none = -1, ten = 10;
	char err[512], v[64];

	assert_int_equal(cs_writer_connect(w1, err, sizeof(err)), CS_OK);
	assert_int_equal(cs_writer_connect(w2, err, sizeof(err)), CS_OK);
	for (int i = 0; i < 10; i++) {
		add(b1, 0, i, i, "zombie");
		add(b2, 0, i, i, "owner");
	}
	/* the new owner commits first */
	assert_int_equal(cs_writer_write(w2, b2, &none, on_reject, NULL, err, sizeof(err)), CS_OK);
	/* the zombie, still expecting no stored offset, is fenced and rolled back */
	assert_int_equal(cs_writer_write(w1, b1, &none, on_reject, NULL, err, sizeof(err)),
			 CS_ERR_FENCED);
	assert_non_null(strstr(err, "another worker owns them now"));
	assert_string_equal(query("SELECT string_agg(DISTINCT body, ',') FROM items", v, sizeof(v)),
			    "owner");
	assert_string_equal(query("SELECT count(*) FROM items", v, sizeof(v)), "10");
	assert_string_equal(query("SELECT next_offset FROM copysink_offsets", v, sizeof(v)), "10");
	/* the zombie's stale expectation fails again even with a later batch */
	cs_batch_reset(b1);
	add(b1, 0, 10, 10, "zombie");
	assert_int_equal(cs_writer_write(w1, b1, &none, on_reject, NULL, err, sizeof(err)),
			 CS_ERR_FENCED);
	/* the owner goes on from 10 */
	cs_batch_reset(b2);
	add(b2, 0, 10, 10, "owner");
	assert_int_equal(cs_writer_write(w2, b2, &ten, on_reject, NULL, err, sizeof(err)), CS_OK);
	assert_string_equal(query("SELECT next_offset FROM copysink_offsets", v, sizeof(v)), "11");
	assert_string_equal(query("SELECT count(*) FROM items WHERE body = 'zombie'", v, sizeof(v)),
			    "0");
	cs_batch_destroy(b1);
	cs_batch_destroy(b2);
	cs_writer_destroy(w1);
	cs_writer_destroy(w2);
}

/* Writers side by side ([postgres] writers): three writers, each in its own thread with its own
 * partition, commit 60 batches each at once. Every write commits (none fenced by another's
 * offsets), every row lands, and every partition's stored offset is its own end. */
#define SBS_WRITERS 3
#define SBS_BATCHES 60
#define SBS_ROWS 25

typedef struct sbs_lane {
	cs_writer_t *w;
	cs_batch_t *batches[SBS_BATCHES];
	int committed;
	cs_err_t first_error;
	char err[512];
} sbs_lane_t;

static void *sbs_run(void *arg)
{
	sbs_lane_t *l = arg;
	int64_t expected = -1;

	for (int i = 0; i < SBS_BATCHES; i++) {
		cs_err_t rc = cs_writer_write(l->w, l->batches[i], &expected, on_reject, NULL,
					      l->err, sizeof(l->err));
		if (rc != CS_OK) {
			l->first_error = rc;
			return NULL;
		}
		l->committed++;
		expected = (int64_t)(i + 1) * SBS_ROWS;
	}
	return NULL;
}

static void test_writers_side_by_side(void **state)
{
	sbs_lane_t lanes[SBS_WRITERS];
	pthread_t threads[SBS_WRITERS];
	char err[512], v[256], sql[256];

	memset(lanes, 0, sizeof(lanes));
	for (int p = 0; p < SBS_WRITERS; p++) {
		lanes[p].w = new_writer("g");
		cs_writer_set_key_order(lanes[p].w, true);
		assert_int_equal(cs_writer_connect(lanes[p].w, err, sizeof(err)), CS_OK);
		for (int i = 0; i < SBS_BATCHES; i++) {
			lanes[p].batches[i] = cs_batch_new(&spec, 1);
			assert_non_null(lanes[p].batches[i]);
			for (int r = 0; r < SBS_ROWS; r++) {
				int64_t off = (int64_t)i * SBS_ROWS + r;
				add(lanes[p].batches[i], p, off, p * 1000000 + off, "x");
			}
		}
	}
	for (int p = 0; p < SBS_WRITERS; p++)
		assert_int_equal(pthread_create(&threads[p], NULL, sbs_run, &lanes[p]), 0);
	for (int p = 0; p < SBS_WRITERS; p++)
		pthread_join(threads[p], NULL);
	for (int p = 0; p < SBS_WRITERS; p++) {
		if (lanes[p].committed != SBS_BATCHES)
			fail_msg("writer %d: %d of %d batches committed, then %d: %s", p,
				 lanes[p].committed, SBS_BATCHES, (int)lanes[p].first_error,
				 lanes[p].err);
		snprintf(sql, sizeof(sql),
			 "SELECT next_offset FROM copysink_offsets WHERE partition = %d", p);
		assert_int_equal(atoi(query(sql, v, sizeof(v))), SBS_BATCHES * SBS_ROWS);
		/* every id of the partition, once: count and the sum of the ids */
		snprintf(sql, sizeof(sql),
			 "SELECT count(DISTINCT id) || ':' || sum(id - %d) FROM items "
			 "WHERE id / 1000000 = %d", p * 1000000, p);
		snprintf(err, sizeof(err), "%d:%d", SBS_BATCHES * SBS_ROWS,
			 SBS_BATCHES * SBS_ROWS * (SBS_BATCHES * SBS_ROWS - 1) / 2);
		assert_string_equal(query(sql, v, sizeof(v)), err);
		for (int i = 0; i < SBS_BATCHES; i++)
			cs_batch_destroy(lanes[p].batches[i]);
		cs_writer_destroy(lanes[p].w);
	}
	assert_string_equal(query("SELECT count(*) FROM items", v, sizeof(v)), "4500");
}

/* update: the last entry of a key wins, inside a batch and across batches; rows whose
 * values did not change keep their updated_at and their tuple (xmin). */
static void test_update_semantics(void **state)
{
	cs_writer_t *w = new_writer("g");
	cs_batch_t *b = cs_batch_new(&spec, 1);
	int64_t expected = -1;
	char err[512], v[256], before[256];

	add(b, 0, 0, 1, "a1");
	add(b, 0, 1, 2, "b1");
	add(b, 0, 2, 1, "a2");
	add(b, 0, 3, 1, "a3");
	assert_int_equal(cs_writer_write(w, b, &expected, on_reject, NULL, err, sizeof(err)), CS_OK);
	assert_string_equal(query("SELECT string_agg(id || '=' || body, ',' ORDER BY id) FROM items",
				  v, sizeof(v)), "1=a3,2=b1");
	query("SELECT string_agg(id || ':' || xmin || ':' || updated_at, ',' ORDER BY id) FROM items",
	      before, sizeof(before));
	/* same values again: nothing is touched */
	cs_batch_reset(b);
	expected = 4;
	add(b, 0, 4, 1, "a3");
	add(b, 0, 5, 2, "b1");
	assert_int_equal(cs_writer_write(w, b, &expected, on_reject, NULL, err, sizeof(err)), CS_OK);
	assert_int_equal(cs_writer_table_stats(w, 0)->merged, 0);
	assert_string_equal(
		query("SELECT string_agg(id || ':' || xmin || ':' || updated_at, ',' ORDER BY id) "
		      "FROM items", v, sizeof(v)), before);
	/* a changed value is updated */
	cs_batch_reset(b);
	expected = 6;
	add(b, 0, 6, 2, "b2");
	assert_int_equal(cs_writer_write(w, b, &expected, on_reject, NULL, err, sizeof(err)), CS_OK);
	assert_int_equal(cs_writer_table_stats(w, 0)->merged, 1);
	assert_string_equal(query("SELECT string_agg(id || '=' || body, ',' ORDER BY id) FROM items",
				  v, sizeof(v)), "1=a3,2=b2");
	cs_batch_destroy(b);
	cs_writer_destroy(w);
}

/* Tombstones delete their key; entries and deletes of one key inside a batch apply in offset
 * order (update table: the last one wins, a delete before an insert still happens). */
static void test_tombstones_update(void **state)
{
	cs_writer_t *w = new_writer("g");
	cs_batch_t *b = cs_batch_new(&spec, 1);
	char v[256];

	for (int i = 1; i <= 5; i++)
		add(b, 0, i, i, "a");
	write_batch(w, b);
	add_delete(b, 0, 10, 1);         /* delete */
	add(b, 0, 11, 2, "b");           /* update, then delete */
	add_delete(b, 0, 12, 2);
	add_delete(b, 0, 13, 3);         /* delete, then insert again */
	add(b, 0, 14, 3, "c");
	add_delete(b, 0, 15, 9);         /* delete of a key that does not exist */
	add(b, 0, 16, 6, "new");         /* insert, delete, insert */
	add_delete(b, 0, 17, 6);
	add(b, 0, 18, 6, "again");
	write_batch(w, b);
	assert_string_equal(query(ROWS_SQL, v, sizeof(v)), "3=c,4=a,5=a,6=again");
	/* the row inserted again after its delete is a new row */
	assert_string_equal(query("SELECT created_at > (SELECT min(created_at) FROM items) "
				  "FROM items WHERE id = 3", v, sizeof(v)), "t");
	assert_string_equal(query("SELECT next_offset FROM copysink_offsets", v, sizeof(v)), "19");
	cs_batch_destroy(b);
	cs_writer_destroy(w);
}

/* skip table: the first entry after a delete wins; later ones are ignored. */
static void test_tombstones_skip(void **state)
{
	cs_writer_t *w;
	cs_batch_t *b;
	char v[256];

	spec.on_conflict = CS_CONFLICT_SKIP;
	w = new_writer("g");
	b = cs_batch_new(&spec, 1);
	add(b, 0, 0, 1, "first");
	add(b, 0, 1, 2, "first");
	write_batch(w, b);
	add(b, 0, 2, 1, "ignored");      /* the row exists: skipped */
	add_delete(b, 0, 3, 1);
	add(b, 0, 4, 1, "after delete"); /* first after the delete: wins */
	add(b, 0, 5, 1, "too late");
	add(b, 0, 6, 2, "ignored");
	write_batch(w, b);
	assert_string_equal(query(ROWS_SQL, v, sizeof(v)), "1=after delete,2=first");
	cs_batch_destroy(b);
	cs_writer_destroy(w);
	spec.on_conflict = CS_CONFLICT_UPDATE;
}

/* A replay (another group: its own offsets) never moves a row backwards: an entry or a
 * tombstone older than the one a row holds (same partition, lower offset) changes nothing;
 * a newer one, or one from another partition, does. */
static void test_never_backwards(void **state)
{
	cs_writer_t *live = new_writer("live");
	cs_writer_t *replay = new_writer("replay");
	cs_batch_t *b = cs_batch_new(&spec, 1);
	char v[256];

	add(b, 0, 100, 1, "live-100");
	add(b, 0, 101, 2, "live-101");
	add(b, 0, 102, 3, "live-102");
	write_batch(live, b);
	assert_string_equal(query("SELECT string_agg(id || ':' || copysink_partition || ':' || "
				  "copysink_offset, ',' ORDER BY id) FROM items", v, sizeof(v)),
			    "1:0:100,2:0:101,3:0:102");
	add(b, 0, 50, 1, "old-50");      /* older: ignored */
	add_delete(b, 0, 60, 2);         /* older tombstone: ignored */
	add(b, 0, 150, 3, "new-150");    /* newer: applied */
	add(b, 0, 70, 4, "old-70");      /* a key the table does not hold: inserted */
	write_batch(replay, b);
	assert_string_equal(query(ROWS_SQL, v, sizeof(v)), "1=live-100,2=live-101,3=new-150,4=old-70");
	/* the same key from another partition is not comparable: it applies */
	add(b, 1, 5, 1, "part1-5");
	write_batch(replay, b);
	assert_string_equal(query(ROWS_SQL, v, sizeof(v)),
			    "1=part1-5,2=live-101,3=new-150,4=old-70");
	/* a batch that collapses versions of a key to the values the row already holds still
	 * records the newer offset, so that the intermediate version, replayed, stays out */
	add(b, 0, 160, 3, "mid-160");
	add(b, 0, 170, 3, "new-150");
	write_batch(live, b);
	assert_string_equal(query("SELECT body || ':' || copysink_offset FROM items WHERE id = 3", v,
				  sizeof(v)), "new-150:170");
	add(b, 0, 160, 3, "mid-160");
	write_batch(replay, b);
	assert_string_equal(query("SELECT body FROM items WHERE id = 3", v, sizeof(v)), "new-150");
	/* a newer tombstone deletes */
	add_delete(b, 0, 200, 2);
	write_batch(replay, b);
	assert_string_equal(query(ROWS_SQL, v, sizeof(v)), "1=part1-5,3=new-150,4=old-70");
	cs_batch_destroy(b);
	cs_writer_destroy(live);
	cs_writer_destroy(replay);
}

/* Rows the server rejects are isolated and reported; the others commit with the offsets. */
static void test_rejected_rows(void **state)
{
	cs_writer_t *w = new_writer("g");
	cs_batch_t *b = cs_batch_new(&spec, 1);
	int64_t expected = -1;
	char err[512], v[64];

	query("ALTER TABLE items ADD CONSTRAINT no_bad CHECK (body <> 'bad')", v, sizeof(v));
	for (int i = 0; i < 1000; i++)
		add(b, 0, i, i, i == 3 || i == 500 || i == 501 ? "bad" : "good");
	assert_int_equal(cs_writer_write(w, b, &expected, on_reject, NULL, err, sizeof(err)), CS_OK);
	assert_string_equal(rejected, "3:23514,500:23514,501:23514");
	assert_int_equal(cs_writer_table_stats(w, 0)->rejected, 3);
	assert_string_equal(query("SELECT count(*) FROM items WHERE body = 'good'", v, sizeof(v)),
			    "997");
	assert_string_equal(query("SELECT count(*) FROM items", v, sizeof(v)), "997");
	assert_string_equal(query("SELECT next_offset FROM copysink_offsets", v, sizeof(v)), "1000");
	cs_batch_destroy(b);
	cs_writer_destroy(w);
}

#define SOURCE_SQL                                                                          \
	"SELECT string_agg(id || '=' || body || '@' || copysink_partition || ':' ||            \
	 copysink_offset, ',' ORDER BY id) FROM items WHERE created_at IS NOT NULL"

/* The direct path: a batch of new keys is COPYed straight into the table, with its source;
 * a batch whose first, middle or last key exists is merged without trying; one whose existing
 * key is elsewhere fails the direct COPY, is merged with the same outcome, and the next batch
 * merges without trying; a batch holding a delete merges. */
static void test_direct_path(void **state)
{
	cs_writer_t *w = new_writer("g");
	cs_batch_t *b = cs_batch_new(&spec, 1);
	char v[512];

	add(b, 0, 0, 1, "a");
	add(b, 1, 0, 2, "b");
	add(b, 0, 1, 1, "a2"); /* collapsed inside the batch: one row */
	write_batch(w, b);
	assert_true(cs_writer_table_stats(w, 0)->direct);
	assert_int_equal(cs_writer_table_stats(w, 0)->merged, 2);
	assert_string_equal(query(SOURCE_SQL, v, sizeof(v)), "1=a2@0:1,2=b@1:0");
	/* key 2 exists and is the batch's first: looked up, merged without a direct COPY, so the
	 * next batch of new keys goes straight in again */
	add(b, 0, 2, 2, "b2");
	add(b, 0, 3, 3, "c");
	write_batch(w, b);
	assert_false(cs_writer_table_stats(w, 0)->direct);
	assert_int_equal(cs_writer_table_stats(w, 0)->merged, 2);
	assert_string_equal(query(SOURCE_SQL, v, sizeof(v)), "1=a2@0:1,2=b2@0:2,3=c@0:3");
	add(b, 0, 4, 4, "d");
	write_batch(w, b);
	assert_true(cs_writer_table_stats(w, 0)->direct);
	/* key 3 exists as the second of five, which the lookup does not see: the direct COPY
	 * fails and is rolled back, the batch merges; the next batch merges without trying, the
	 * one after tries again */
	add(b, 0, 5, 10, "g");
	add(b, 0, 6, 3, "c2");
	add(b, 0, 7, 11, "h");
	add(b, 0, 8, 12, "i");
	add(b, 0, 9, 13, "j");
	write_batch(w, b);
	assert_false(cs_writer_table_stats(w, 0)->direct);
	assert_int_equal(cs_writer_table_stats(w, 0)->merged, 5);
	add(b, 0, 10, 14, "k");
	write_batch(w, b);
	assert_false(cs_writer_table_stats(w, 0)->direct);
	add(b, 0, 11, 15, "l");
	write_batch(w, b);
	assert_true(cs_writer_table_stats(w, 0)->direct);
	/* a delete: merged */
	add(b, 0, 12, 6, "f");
	add_delete(b, 0, 13, 1);
	write_batch(w, b);
	assert_false(cs_writer_table_stats(w, 0)->direct);
	assert_string_equal(query(SOURCE_SQL, v, sizeof(v)),
			    "2=b2@0:2,3=c2@0:6,4=d@0:4,6=f@0:12,10=g@0:5,11=h@0:7,12=i@0:8,"
			    "13=j@0:9,14=k@0:10,15=l@0:11");
	assert_string_equal(query("SELECT next_offset FROM copysink_offsets WHERE partition = 0", v,
				  sizeof(v)), "14");
	cs_batch_destroy(b);
	cs_writer_destroy(w);
}

/* A key lookup that fails for a reason a retry can change (here a lock timeout while another
 * session holds the table) fails the batch as retriable and keeps the lookup: after the retry
 * a batch whose first key exists merges at once, and the next batch of new keys goes straight
 * in again (with the lookup dropped, that batch's direct COPY would fail and back off). */
static void test_direct_lookup_retried(void **state)
{
	char info[1100], err[512], v[512];
	cs_writer_t *w;
	cs_batch_t *b = cs_batch_new(&spec, 1);
	PGconn *locker = PQconnectdb(conninfo);
	PGresult *res;
	cs_err_t rc;

	snprintf(info, sizeof(info), "%s options='-c lock_timeout=300'", conninfo);
	w = cs_writer_new(info, &spec, 1, "g");
	assert_non_null(w);
	cs_writer_set_direct(w, true);
	cs_writer_set_staging(w, staging_from_env());
	add(b, 0, 0, 1, "a");
	write_batch(w, b);
	assert_true(cs_writer_table_stats(w, 0)->direct);
	res = PQexec(locker, "BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE");
	assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
	PQclear(res);
	add(b, 0, 1, 2, "b");
	rc = try_write_batch(w, b, err, sizeof(err));
	res = PQexec(locker, "ROLLBACK"); /* before any check: a failed one would leave it held */
	PQclear(res);
	PQfinish(locker);
	print_message("write while the table is locked: %s\n", err);
	assert_int_equal(rc, CS_ERR_RETRIABLE);
	assert_non_null(strstr(err, "lock timeout"));
	write_batch(w, b); /* the same batch again */
	assert_true(cs_writer_table_stats(w, 0)->direct);
	add(b, 0, 2, 1, "a2");
	add(b, 0, 3, 3, "c");
	write_batch(w, b);
	assert_false(cs_writer_table_stats(w, 0)->direct);
	add(b, 0, 4, 4, "d");
	write_batch(w, b);
	assert_true(cs_writer_table_stats(w, 0)->direct);
	assert_string_equal(query(SOURCE_SQL, v, sizeof(v)), "1=a2@0:2,2=b@0:1,3=c@0:3,4=d@0:4");
	cs_batch_destroy(b);
	cs_writer_destroy(w);
}

/* With the direct path off, every batch merges. */
static void test_direct_off(void **state)
{
	cs_writer_t *w = new_writer("g");
	cs_batch_t *b = cs_batch_new(&spec, 1);
	char v[512];

	cs_writer_set_direct(w, false);
	add(b, 0, 0, 1, "a");
	write_batch(w, b);
	assert_false(cs_writer_table_stats(w, 0)->direct);
	assert_string_equal(query(SOURCE_SQL, v, sizeof(v)), "1=a@0:0");
	cs_batch_destroy(b);
	cs_writer_destroy(w);
}

/* With key order on (several writers), the merge inserts a batch's rows in key order whatever
 * order they arrived in: a trigger records the order of the inserts. Off, arrival order. */
static void test_key_order(void **state)
{
	cs_writer_t *w = new_writer("g");
	cs_batch_t *b = cs_batch_new(&spec, 1);
	static const int64_t ids[] = {7, 300, 2, 65536, 41, 1};
	char v[512];

	query("CREATE TABLE ins_order (n serial, id bigint);"
	      "CREATE FUNCTION note_id() RETURNS trigger LANGUAGE plpgsql AS "
	      "$$BEGIN INSERT INTO ins_order (id) VALUES (NEW.id); RETURN NEW; END$$;"
	      "CREATE TRIGGER note BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION note_id()",
	      v, sizeof(v));
	cs_writer_set_direct(w, false);
	for (int on = 0; on <= 1; on++) {
		cs_writer_set_key_order(w, on);
		for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
			add(b, 0, (int64_t)(on * 10 + i), ids[i] + on * 1000000, "x");
		write_batch(w, b);
	}
	assert_string_equal(query("SELECT string_agg(id::text, ',' ORDER BY n) FROM ins_order", v,
				  sizeof(v)),
			    "7,300,2,65536,41,1,1000001,1000002,1000007,1000041,1000300,1065536");
	cs_batch_destroy(b);
	cs_writer_destroy(w);
}

/* Rows up to 8 KB stay inline and uncompressed in the tables copysink creates, through the
 * direct COPY and through the staging table and merge (PostgreSQL's default compresses a
 * compressible value of a row past 2 KB, or moves it to the TOAST table). */
static void test_rows_stay_inline(void **state)
{
	cs_writer_t *w = new_writer("g");
	cs_batch_t *b = cs_batch_new(&spec, 1);
	char body[4001], v[512];

	for (int i = 0; i < 4000; i++)
		body[i] = (char)('0' + i % 10);
	body[4000] = '\0';
	add(b, 0, 0, 1, body);
	write_batch(w, b);
	body[0] = 'x'; /* the same key again: through the staging table and the merge */
	add(b, 0, 1, 1, body);
	add(b, 0, 2, 2, body);
	write_batch(w, b);
	assert_string_equal(query("SELECT string_agg(id || ':' || pg_column_size(body) || ':' || "
				  "(body = 'x' || substr(repeat('0123456789', 400), 2)), ',' "
				  "ORDER BY id) FROM items", v, sizeof(v)),
			    "1:4004:true,2:4004:true");
	assert_string_equal(query("SELECT pg_relation_size(reltoastrelid) FROM pg_class "
				  "WHERE relname = 'items'", v, sizeof(v)), "0");
	cs_batch_destroy(b);
	cs_writer_destroy(w);
}

/* A table that does not match its spec is a clear start-up error. */
static void test_shape_mismatch(void **state)
{
	cs_writer_t *w = new_writer("g");
	char err[512], v[16];

	query("ALTER TABLE items ALTER COLUMN body TYPE integer USING 0", v, sizeof(v));
	assert_int_equal(cs_writer_connect(w, err, sizeof(err)), CS_ERR_FATAL);
	assert_string_equal(err, "table \"public.items\" column \"body\" has type integer, expected text");
	cs_writer_destroy(w);
}

/* A writer connecting checks the catalog against a spec that the loop and the other writers
 * share and read meanwhile (the loop encodes rows with its columns' encodings): once the spec
 * is resolved, connecting again writes nothing to it. A second writer connects over a
 * read-only copy of the resolved spec; any write to it is a SIGSEGV. */
static void test_resolved_spec_untouched(void **state)
{
	cs_writer_t *w = new_writer("g");
	long page = sysconf(_SC_PAGESIZE);
	size_t size = (sizeof(spec) + (size_t)page - 1) / (size_t)page * (size_t)page;
	cs_tablespec_t *ro;
	char err[512];

	assert_int_equal(cs_writer_connect(w, err, sizeof(err)), CS_OK);
	ro = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANON, -1, 0);
	assert_true(ro != MAP_FAILED);
	memcpy(ro, &spec, sizeof(spec));
	assert_int_equal(mprotect(ro, size, PROT_READ), 0);
	cs_writer_t *w2 = cs_writer_new(conninfo, ro, 1, "g");
	assert_non_null(w2);
	if (cs_writer_connect(w2, err, sizeof(err)) != CS_OK)
		fail_msg("%s", err);
	cs_writer_destroy(w2);
	munmap(ro, size);
	cs_writer_destroy(w);
}

/* PostgreSQL unreachable is retriable, with the address in the message. */
static void test_unreachable(void **state)
{
	cs_writer_t *w = cs_writer_new("host=127.0.0.1 port=1 connect_timeout=2", &spec, 1, "g");
	char err[512];

	assert_int_equal(cs_writer_connect(w, err, sizeof(err)), CS_ERR_RETRIABLE);
	assert_non_null(strstr(err, "could not connect to PostgreSQL at \"127.0.0.1:1\""));
	cs_writer_destroy(w);
}

/* A connection lost while the writer connects (here at the check of the offsets table, the
 * last of its checks: a function in front of to_regclass ends its own backend, which takes the
 * signal at its next statement) is retriable,
 * as a server restarting at that moment is; the next connect succeeds. */
static void test_connect_lost_at_check(void **state)
{
	char info[1100], err[512], v[64];
	cs_writer_t *w;

	query("CREATE FUNCTION public.to_regclass(t text) RETURNS regclass LANGUAGE plpgsql AS "
	      "$$BEGIN IF t = 'copysink_offsets' THEN PERFORM pg_terminate_backend(pg_backend_pid());"
	      " END IF; RETURN pg_catalog.to_regclass(t); END$$",
	      v, sizeof(v));
	snprintf(info, sizeof(info), "%s options='-c search_path=public,pg_catalog'", conninfo);
	w = cs_writer_new(info, &spec, 1, "g");
	assert_non_null(w);
	cs_writer_set_staging(w, staging_from_env());
	err[0] = '\0';
	assert_int_equal(cs_writer_connect(w, err, sizeof(err)), CS_ERR_RETRIABLE);
	print_message("connection ended at the check: %s\n", err);
	assert_non_null(strstr(err, "copysink_offsets"));
	query("DROP FUNCTION public.to_regclass(text)", v, sizeof(v));
	assert_int_equal(cs_writer_connect(w, err, sizeof(err)), CS_OK);
	cs_writer_destroy(w);
}

/* Merged and deleted counts are exact and apart: N inserts and updates count N merged, M
 * tombstones of existing keys count M deleted, a tombstone of a missing key counts nothing;
 * a key deleted and written again in one batch counts once in each. */
static void test_deleted_count(void **state)
{
	cs_writer_t *w = new_writer("g");
	cs_batch_t *b = cs_batch_new(&spec, 1);
	const cs_writer_table_stats_t *ts;
	char v[256];

	for (int i = 1; i <= 5; i++)
		add(b, 0, i, i, "a");
	write_batch(w, b);
	ts = cs_writer_table_stats(w, 0);
	assert_int_equal(ts->merged, 5);
	assert_int_equal(ts->deleted, 0);
	/* 3 inserts, 2 deletes, 1 delete of a missing key */
	add(b, 0, 10, 10, "n");
	add(b, 0, 11, 11, "n");
	add(b, 0, 12, 12, "n");
	add_delete(b, 0, 13, 1);
	add_delete(b, 0, 14, 2);
	add_delete(b, 0, 15, 99);
	write_batch(w, b);
	ts = cs_writer_table_stats(w, 0);
	assert_int_equal(ts->rows, 6);
	assert_int_equal(ts->merged, 3);
	assert_int_equal(ts->deleted, 2);
	assert_string_equal(query(ROWS_SQL, v, sizeof(v)), "3=a,4=a,5=a,10=n,11=n,12=n");
	/* only a delete of a missing key */
	add_delete(b, 0, 16, 98);
	write_batch(w, b);
	ts = cs_writer_table_stats(w, 0);
	assert_int_equal(ts->merged, 0);
	assert_int_equal(ts->deleted, 0);
	/* an update, an unchanged row, a delete, a delete then insert of an existing key */
	add(b, 0, 17, 3, "b");
	add(b, 0, 18, 4, "a");
	add_delete(b, 0, 19, 10);
	add_delete(b, 0, 20, 5);
	add(b, 0, 21, 5, "again");
	write_batch(w, b);
	ts = cs_writer_table_stats(w, 0);
	assert_int_equal(ts->merged, 2);
	assert_int_equal(ts->deleted, 2);
	assert_string_equal(query(ROWS_SQL, v, sizeof(v)), "3=b,4=a,5=again,11=n,12=n");
	cs_batch_destroy(b);
	cs_writer_destroy(w);
}

/* The counts stay exact when a rejected row makes the writer bisect: rows of halves that
 * failed and were rolled back are not counted. */
static void test_deleted_count_bisect(void **state)
{
	cs_writer_t *w = new_writer("g");
	cs_batch_t *b = cs_batch_new(&spec, 1);
	const cs_writer_table_stats_t *ts;
	char v[256];

	for (int i = 1; i <= 4; i++)
		add(b, 0, i, i, "a");
	write_batch(w, b);
	query("ALTER TABLE items ADD CONSTRAINT no_bad CHECK (body <> 'bad')", v, sizeof(v));
	add_delete(b, 0, 10, 1);
	add(b, 0, 11, 20, "good");
	add_delete(b, 0, 12, 2);
	add(b, 0, 13, 21, "bad");
	add(b, 0, 14, 3, "good");
	add_delete(b, 0, 15, 99);
	write_batch(w, b);
	ts = cs_writer_table_stats(w, 0);
	assert_int_equal(ts->rejected, 1);
	assert_int_equal(ts->merged, 2);
	assert_int_equal(ts->deleted, 2);
	assert_string_equal(rejected, "13:23514");
	assert_string_equal(query(ROWS_SQL, v, sizeof(v)), "3=good,4=a,20=good");
	cs_batch_destroy(b);
	cs_writer_destroy(w);
}

#define STAGING_TABLES_SQL                                                                  \
	"SELECT count(*) FROM pg_class WHERE relname LIKE 'copysink\\_%stage\\_%' "             \
	"AND relpersistence = 't'"

/* staging = transaction: no staging table exists between transactions, from the connect on;
 * merges, deletes and a bisection (a direct COPY declined, the merge rejected, halves rolled
 * back to their savepoints) all find theirs; the contents and the offsets are those of
 * session staging. */
static void test_transaction_staging(void **state)
{
	cs_writer_t *w = new_writer("g");
	cs_batch_t *b = cs_batch_new(&spec, 1);
	char err[512], v[256];

	cs_writer_set_staging(w, CS_WRITER_STAGING_TRANSACTION);
	assert_int_equal(cs_writer_connect(w, err, sizeof(err)), CS_OK);
	assert_string_equal(query(STAGING_TABLES_SQL, v, sizeof(v)), "0");
	for (int i = 1; i <= 4; i++)
		add(b, 0, i, i, "a");
	write_batch(w, b);
	assert_string_equal(query(STAGING_TABLES_SQL, v, sizeof(v)), "0");
	query("ALTER TABLE items ADD CONSTRAINT no_bad CHECK (body <> 'bad')", v, sizeof(v));
	add(b, 0, 10, 1, "b");   /* an update */
	add_delete(b, 0, 11, 2); /* a delete */
	add(b, 0, 12, 7, "bad"); /* rejected */
	add(b, 0, 13, 8, "c");
	write_batch(w, b);
	assert_string_equal(rejected, "12:23514");
	assert_false(cs_writer_table_stats(w, 0)->direct);
	assert_string_equal(query(ROWS_SQL, v, sizeof(v)), "1=b,3=a,4=a,8=c");
	/* new keys with one bad row: the direct COPY is declined (when tried) before the staging
	 * table exists */
	rejected[0] = '\0';
	add(b, 0, 14, 20, "d");
	add(b, 0, 15, 21, "bad");
	write_batch(w, b);
	assert_string_equal(rejected, "15:23514");
	assert_string_equal(query(ROWS_SQL, v, sizeof(v)), "1=b,3=a,4=a,8=c,20=d");
	assert_string_equal(query(STAGING_TABLES_SQL, v, sizeof(v)), "0");
	assert_string_equal(query("SELECT next_offset FROM copysink_offsets", v, sizeof(v)), "16");
	cs_batch_destroy(b);
	cs_writer_destroy(w);
}

/* staging = session on a connection whose staging table went away (as when a pooler in
 * transaction mode runs the transaction on another server connection; here another session
 * drops it): the write fails as fatal, naming the cause and the setting. */
static void test_session_staging_lost(void **state)
{
	cs_writer_t *w = new_writer("g");
	cs_batch_t *b = cs_batch_new(&spec, 1);
	int64_t expected = 1;
	char err[1024], v[256];

	cs_writer_set_staging(w, CS_WRITER_STAGING_SESSION);
	add(b, 0, 0, 1, "a");
	write_batch(w, b);
	query("DO $$DECLARE r record; BEGIN FOR r IN SELECT n.nspname FROM pg_class c JOIN "
	      "pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 'copysink_stage_0' LOOP "
	      "EXECUTE format('DROP TABLE %I.copysink_stage_0', r.nspname); END LOOP; END$$",
	      v, sizeof(v));
	assert_string_equal(query(STAGING_TABLES_SQL, v, sizeof(v)), "0");
	add(b, 0, 1, 1, "b"); /* the key exists: the merge */
	err[0] = '\0';
	assert_int_equal(cs_writer_write(w, b, &expected, on_reject, NULL, err, sizeof(err)),
			 CS_ERR_FATAL);
	print_message("%s\n", err);
	assert_non_null(strstr(err, "could not write to table \"items\": the staging table "
				    "\"copysink_stage_0\" this connection created is gone"));
	assert_non_null(strstr(err, "pool_mode = transaction"));
	assert_non_null(strstr(err, "set [postgres] staging = transaction"));
	assert_non_null(strstr(err, "SQLSTATE 42P01"));
	assert_string_equal(cs_writer_last_sqlstate(w), "42P01");
	assert_string_equal(query(ROWS_SQL, v, sizeof(v)), "1=a");
	cs_batch_destroy(b);
	cs_writer_destroy(w);
}

/* End every other session on the test database (the writer's), waiting until they are gone. */
static void kill_backends(void)
{
	char v[64];

	query("SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
	      "WHERE datname = current_database() AND pid <> pg_backend_pid()",
	      v, sizeof(v));
	assert_true(atoi(v) >= 1);
}

/* Whether err is `what` followed by libpq's or the server's word for a closed connection. */
static bool has_cause(const char *err, const char *what)
{
	static const char *const causes[] = {
		"server closed the connection unexpectedly",
		"terminating connection due to administrator command",
		"connection to PostgreSQL lost",
	};

	if (strncmp(err, what, strlen(what)) != 0)
		return false;
	for (size_t i = 0; i < sizeof(causes) / sizeof(causes[0]); i++)
		if (strncmp(err + strlen(what), causes[i], strlen(causes[i])) == 0)
			return true;
	return false;
}

/* A connection PostgreSQL dropped between writes: the next write is retriable and says why,
 * the one after reconnects and commits; the same for reading a stored offset. */
static void test_connection_lost(void **state)
{
	cs_writer_t *w = new_writer("g");
	cs_batch_t *b = cs_batch_new(&spec, 1);
	int64_t expected = 1, next;
	char err[512], v[256];

	add(b, 0, 0, 1, "a");
	write_batch(w, b);
	kill_backends();
	add(b, 0, 1, 2, "b");
	err[0] = '\0';
	assert_int_equal(cs_writer_write(w, b, &expected, on_reject, NULL, err, sizeof(err)),
			 CS_ERR_RETRIABLE);
	print_message("first write after the kill: %s\n", err);
	assert_true(has_cause(err, "could not begin a transaction: "));
	err[0] = '\0';
	assert_int_equal(cs_writer_write(w, b, &expected, on_reject, NULL, err, sizeof(err)), CS_OK);
	assert_string_equal(query(ROWS_SQL, v, sizeof(v)), "1=a,2=b");
	assert_string_equal(query("SELECT next_offset FROM copysink_offsets", v, sizeof(v)), "2");
	kill_backends();
	err[0] = '\0';
	assert_int_equal(cs_writer_stored_offset(w, "topic", 0, &next, err, sizeof(err)),
			 CS_ERR_RETRIABLE);
	print_message("stored offset after the kill: %s\n", err);
	assert_true(has_cause(err, "could not read the stored offset of \"topic\" [0]: "));
	assert_int_equal(cs_writer_stored_offset(w, "topic", 0, &next, err, sizeof(err)), CS_OK);
	assert_int_equal(next, 2);
	cs_batch_destroy(b);
	cs_writer_destroy(w);
}

/* A write that finds PostgreSQL gone says so. */
static void test_write_unreachable(void **state)
{
	cs_writer_t *w = cs_writer_new("host=127.0.0.1 port=1 connect_timeout=2", &spec, 1, "g");
	cs_batch_t *b = cs_batch_new(&spec, 1);
	int64_t expected = -1, next;
	char err[512];

	add(b, 0, 0, 1, "a");
	err[0] = '\0';
	assert_int_equal(cs_writer_write(w, b, &expected, on_reject, NULL, err, sizeof(err)),
			 CS_ERR_RETRIABLE);
	assert_non_null(strstr(err, "could not connect to PostgreSQL at \"127.0.0.1:1\": "));
	err[0] = '\0';
	assert_int_equal(cs_writer_stored_offset(w, "topic", 0, &next, err, sizeof(err)),
			 CS_ERR_RETRIABLE);
	assert_non_null(strstr(err, "could not connect to PostgreSQL at \"127.0.0.1:1\": "));
	assert_int_equal(next, -1);
	cs_batch_destroy(b);
	cs_writer_destroy(w);
}

/* Monotonic milliseconds. */
static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The ping connects, answers, and gets over a connection PostgreSQL dropped by reconnecting. */
static void test_ping(void **state)
{
	cs_writer_t *w = new_writer("g");
	cs_writer_t *down = cs_writer_new("host=127.0.0.1 port=1", &spec, 1, "g");
	cs_batch_t *b = cs_batch_new(&spec, 1);
	char err[512], v[256];
	int64_t t0;

	assert_int_equal(cs_writer_ping(w, err, sizeof(err)), CS_OK); /* connects */
	assert_int_equal(cs_writer_ping(w, err, sizeof(err)), CS_OK); /* round trip */
	kill_backends();
	assert_int_equal(cs_writer_ping(w, err, sizeof(err)), CS_OK); /* reconnects */
	add(b, 0, 0, 1, "a");
	write_batch(w, b);
	assert_string_equal(query(ROWS_SQL, v, sizeof(v)), "1=a");
	/* nothing listening */
	t0 = mono_ms();
	err[0] = '\0';
	assert_int_equal(cs_writer_ping(down, err, sizeof(err)), CS_ERR_RETRIABLE);
	assert_true(mono_ms() - t0 < 3000);
	assert_non_null(strstr(err, "could not connect to PostgreSQL at \"127.0.0.1:1\": "));
	cs_batch_destroy(b);
	cs_writer_destroy(w);
	cs_writer_destroy(down);
}

/* A server that stops answering (its backend stopped with SIGSTOP) fails the ping within its
 * timeout instead of stalling the caller; once it answers again the ping reconnects. Needs to
 * signal the server's processes: skipped when not allowed. */
static void test_ping_hung(void **state)
{
	cs_writer_t *w = new_writer("g");
	char err[512], v[64];
	int64_t t0, ms;
	pid_t pid;

	assert_int_equal(cs_writer_ping(w, err, sizeof(err)), CS_OK);
	query("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
	      "AND pid <> pg_backend_pid()", v, sizeof(v));
	pid = (pid_t)atoi(v);
	assert_true(pid > 0);
	if (kill(pid, SIGSTOP) != 0) {
		cs_writer_destroy(w);
		skip();
	}
	t0 = mono_ms();
	err[0] = '\0';
	assert_int_equal(cs_writer_ping(w, err, sizeof(err)), CS_ERR_RETRIABLE);
	ms = mono_ms() - t0;
	kill(pid, SIGCONT);
	print_message("hung ping: %lld ms: %s\n", (long long)ms, err);
	assert_true(ms >= 1900 && ms < 3000);
	assert_non_null(strstr(err, "did not answer within 2000 ms"));
	assert_int_equal(cs_writer_ping(w, err, sizeof(err)), CS_OK);
	cs_writer_destroy(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_direct_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_direct_lookup_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resolved_spec_untouched, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_direct_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fencing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writers_side_by_side, setup, teardown),
		cmocka_unit_test_setup_teardown(test_update_semantics, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rejected_rows, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tombstones_update, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tombstones_skip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_never_backwards, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rows_stay_inline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rows_stay_inline, setup_merge_only, teardown),
		cmocka_unit_test_setup_teardown(test_shape_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreachable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connect_lost_at_check, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deleted_count, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deleted_count_bisect, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_lost, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_unreachable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ping_hung, setup, teardown),
		cmocka_unit_test_setup_teardown(test_transaction_staging, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_staging_lost, setup, teardown),
		/* the same again without the direct path */
		cmocka_unit_test_setup_teardown(test_fencing, setup_merge_only, teardown),
		cmocka_unit_test_setup_teardown(test_writers_side_by_side, setup_merge_only, teardown),
		cmocka_unit_test_setup_teardown(test_update_semantics, setup_merge_only, teardown),
		cmocka_unit_test_setup_teardown(test_rejected_rows, setup_merge_only, teardown),
		cmocka_unit_test_setup_teardown(test_tombstones_update, setup_merge_only, teardown),
		cmocka_unit_test_setup_teardown(test_tombstones_skip, setup_merge_only, teardown),
		cmocka_unit_test_setup_teardown(test_never_backwards, setup_merge_only, teardown),
		cmocka_unit_test_setup_teardown(test_deleted_count, setup_merge_only, teardown),
		cmocka_unit_test_setup_teardown(test_deleted_count_bisect, setup_merge_only, teardown),
		cmocka_unit_test_setup_teardown(test_connection_lost, setup_merge_only, teardown),
		cmocka_unit_test_setup_teardown(test_transaction_staging, setup_merge_only, teardown),
		cmocka_unit_test_setup_teardown(test_session_staging_lost, setup_merge_only, teardown),
	};
	cs_decode_limits_t limits;
	int rc;

	cs_decode_limits_default(&limits);
	dec = cs_decoder_new(&limits);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	cs_decoder_destroy(dec);
	return rc;
}
