/*
 * check.c - `copysink check`: configuration, connectivity and table shapes, explained
 */
#include "copysink/check.h"

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <string.h>

#include "copysink/kafkaconf.h"
#include "copysink/schema.h"

#define CHECK_TIMEOUT_MS 10000

/* Check that the connected role may write table `spec` as the worker does: INSERT and SELECT,
 * UPDATE for the update merge, DELETE for tombstones (`deletes`, tables with a key). */
static int check_privileges(PGconn *conn, const cs_tablespec_t *spec, bool deletes, FILE *out)
{
	char schema[2 * CS_MAX_NAME + 3], name[2 * CS_MAX_NAME + 3], table[4 * CS_MAX_NAME + 8];
	const char *params[1] = {table};
	PGresult *res;
	int problems = 0;

	cs_schema_quote(schema, sizeof(schema), spec->schema);
	cs_schema_quote(name, sizeof(name), spec->name);
	snprintf(table, sizeof(table), "%s.%s", schema, name);
	res = PQexecParams(conn,
			   "SELECT has_table_privilege($1, 'INSERT'), "
			   "has_table_privilege($1, 'UPDATE'), has_table_privilege($1, 'SELECT'), "
			   "has_table_privilege($1, 'DELETE')",
			   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		fprintf(out, "error: could not check privileges on table \"%s\": %s", spec->name,
			PQresultErrorMessage(res));
		problems++;
	} else {
		static const char *const privs[] = {"INSERT", "UPDATE", "SELECT", "DELETE"};
		for (int i = 0; i < 4; i++) {
			if (PQgetvalue(res, 0, i)[0] == 't')
				continue;
			if (i == 1 && spec->on_conflict != CS_CONFLICT_UPDATE)
				continue; /* UPDATE: only the update merge */
			if (i == 3 && (!deletes || spec->on_conflict == CS_CONFLICT_NONE))
				continue; /* DELETE: tombstones, only for tables with a key */
			fprintf(out, "error: role \"%s\" lacks privilege %s on table \"%s.%s\"\n",
				PQuser(conn), privs[i], spec->schema, spec->name);
			problems++;
		}
	}
	PQclear(res);
	return problems;
}

/* The bookkeeping table, as a spec, for the privilege check (it is updated on every batch). */
static const cs_tablespec_t offsets_spec = {.name = CS_OFFSETS_TABLE, .schema = "public",
					    .on_conflict = CS_CONFLICT_UPDATE};

/* PostgreSQL: reachable, tables of the right shape and writable, bookkeeping present. */
static int check_postgres(cs_config_t *cfg, FILE *out)
{
	PGconn *conn = PQconnectdb(cfg->pg_conninfo ? cfg->pg_conninfo : "");
	char errstr[1024];
	int problems = 0;

	if (PQstatus(conn) != CONNECTION_OK) {
		fprintf(out, "error: could not connect to PostgreSQL at \"%s:%s\": %s",
			PQhost(conn) ? PQhost(conn) : "", PQport(conn) ? PQport(conn) : "",
			PQerrorMessage(conn));
		PQfinish(conn);
		return 1;
	}
	fprintf(out, "ok: connected to PostgreSQL at \"%s:%s\" database \"%s\" as \"%s\"\n",
		PQhost(conn), PQport(conn), PQdb(conn), PQuser(conn));
	for (int t = 0; t < cfg->ntables; t++) {
		cs_table_shape_t shape;
		if (cs_schema_resolve(conn, &cfg->tables[t], &shape, errstr, sizeof(errstr)) != 0) {
			fprintf(out, "error: %s\n", errstr);
			problems++;
			continue;
		}
		if (check_privileges(conn, &cfg->tables[t], true, out) != 0) {
			problems++;
			continue;
		}
		if (!shape.has_source && cs_tablespec_nkeys(&cfg->tables[t]) > 0)
			fprintf(out, "warning: table \"%s.%s\" has no copysink_partition and "
				     "copysink_offset columns: a replay could move its rows backwards "
				     "(run \"copysink migrate\" to add them)\n",
				cfg->tables[t].schema, cfg->tables[t].name);
		fprintf(out, "ok: table \"%s.%s\" matches its spec\n", cfg->tables[t].schema,
			cfg->tables[t].name);
	}
	if (cs_schema_check_offsets(conn, errstr, sizeof(errstr)) != 0) {
		fprintf(out, "error: %s\n", errstr);
		problems++;
	} else if (check_privileges(conn, &offsets_spec, false, out) != 0) {
		problems++;
	} else {
		fprintf(out, "ok: table \"%s\" present\n", CS_OFFSETS_TABLE);
	}
	PQfinish(conn);
	return problems;
}

/* Kafka: brokers reachable, every table's topic present. */
static int check_kafka(cs_config_t *cfg, FILE *out)
{
	char errstr[512];
	rd_kafka_conf_t *conf = cs_kafkaconf_new(cfg, true, errstr, sizeof(errstr));
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t err;
	rd_kafka_t *rk;
	int problems = 0;

	if (conf == NULL) {
		fprintf(out, "error: %s\n", errstr);
		return 1;
	}
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL) {
		rd_kafka_conf_destroy(conf);
		fprintf(out, "error: could not create a Kafka client: %s\n", errstr);
		return 1;
	}
	err = rd_kafka_metadata(rk, 1, NULL, &md, CHECK_TIMEOUT_MS);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		fprintf(out, "error: Kafka brokers unreachable: %s\n", rd_kafka_err2str(err));
		rd_kafka_destroy(rk);
		return 1;
	}
	fprintf(out, "ok: connected to Kafka (%d broker(s))\n", md->broker_cnt);
	for (int t = 0; t < cfg->ntables; t++) {
		int found = -1;
		for (int i = 0; i < md->topic_cnt; i++)
			if (strcmp(md->topics[i].topic, cfg->tables[t].topic) == 0)
				found = i;
		if (found < 0) {
			fprintf(out, "error: topic \"%s\" of table \"%s\" does not exist\n",
				cfg->tables[t].topic, cfg->tables[t].name);
			problems++;
		} else {
			fprintf(out, "ok: topic \"%s\" has %d partition(s)\n", cfg->tables[t].topic,
				md->topics[found].partition_cnt);
		}
	}
	rd_kafka_metadata_destroy(md);
	rd_kafka_destroy(rk);
	return problems;
}

int cs_check_run(cs_config_t *cfg, FILE *out)
{
	int problems = 0;

	if (cfg->ntables == 0) {
		fprintf(out, "error: no [table NAME] section in the configuration\n");
		problems++;
	}
	problems += check_postgres(cfg, out);
	problems += check_kafka(cfg, out);
	fprintf(out, "%s: %d problem(s)\n", problems ? "error" : "ok", problems);
	return problems;
}
