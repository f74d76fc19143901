/*
 * confprint.c - the configuration written out: --print-config (secrets masked) and
 * "copysink help config", both driven by the key table of config.c
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "copysink/config.h"
#include "copysink/confkeys.h"
#include "copysink/embedding.h"

#define MASK "******"

/* The value of an integer key. */
static int64_t int_value(const cs_config_t *cfg, const keydef_t *kd)
{
	return *(const int64_t *)(const void *)((const char *)cfg + kd->offset);
}

/* The value of a string or enum key, "" for NULL. */
static const char *str_value(const cs_config_t *cfg, const keydef_t *kd)
{
	const char *v = *(char *const *)(const void *)((const char *)cfg + kd->offset);

	return v != NULL ? v : "";
}

/* Write the URI form of a conninfo with the password (user:PASSWORD@, ?password=) masked. */
static void put_uri_masked(const char *uri, FILE *out)
{
	const char *auth = strstr(uri, "://") + 3;
	size_t alen = strcspn(auth, "/?#");
	const char *at = NULL, *colon, *p;

	for (p = auth; p < auth + alen; p++)
		if (*p == '@')
			at = p;
	colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
	if (colon != NULL) {
		fwrite(uri, 1, (size_t)(colon + 1 - uri), out);
		fputs(MASK, out);
		p = at;
	} else {
		p = uri;
	}
	while (*p != '\0') {
		size_t n = strcspn(p, "?&");
		fwrite(p, 1, n, out);
		p += n;
		if (*p == '\0')
			break;
		fputc(*p++, out);
		if (strncmp(p, "password=", 9) == 0) {
			fputs("password=" MASK, out);
			p += 9 + strcspn(p + 9, "&#");
		}
	}
}

/* Write a conninfo with the value of password masked: "k = v" pairs with quoted values
 * ('a \'b\'') or a postgres:// URI. What does not parse as a conninfo is masked whole. */
static void put_conninfo_masked(const char *ci, FILE *out)
{
	const char *p = ci, *k, *kend, *v;

	if (strncmp(ci, "postgresql://", 13) == 0 || strncmp(ci, "postgres://", 11) == 0) {
		put_uri_masked(ci, out);
		return;
	}
	while (*p != '\0') {
		if (isspace((unsigned char)*p)) {
			fputc(*p++, out);
			continue;
		}
		k = p;
		while (*p != '\0' && *p != '=' && !isspace((unsigned char)*p))
			p++;
		kend = p;
		while (isspace((unsigned char)*p))
			p++;
		if (*p != '=') {
			fputs(MASK, out);
			return;
		}
		p++;
		while (isspace((unsigned char)*p))
			p++;
		v = p;
		if (*p == '\'') {
			for (p++; *p != '\0' && *p != '\''; p++)
				if (*p == '\\' && p[1] != '\0')
					p++;
			if (*p == '\'')
				p++;
		} else {
			for (; *p != '\0' && !isspace((unsigned char)*p); p++)
				if (*p == '\\' && p[1] != '\0')
					p++;
		}
		fwrite(k, 1, (size_t)(v - k), out);
		if (kend - k == 8 && strncmp(k, "password", 8) == 0)
			fputs(MASK, out);
		else
			fwrite(v, 1, (size_t)(p - v), out);
	}
}

/* True when s contains word, ignoring case. */
static bool contains_ci(const char *s, const char *word)
{
	size_t n = strlen(word);

	for (; *s != '\0'; s++)
		if (strncasecmp(s, word, n) == 0)
			return true;
	return false;
}

/* True when a [kafka] key holds a secret. */
static bool kafka_secret(const char *key)
{
	return contains_ci(key, "password") || contains_ci(key, "secret") ||
	       strcmp(key, "ssl.key.pem") == 0;
}

/* True when spec has exactly the columns of the built-in spec of its name. */
static bool spec_is_builtin(const cs_tablespec_t *spec)
{
	cs_tablespec_t b;

	if (cs_tablespec_builtin(spec->name, &b) != 0 || b.ncols != spec->ncols)
		return false;
	for (int c = 0; c < b.ncols; c++) {
		const cs_column_t *x = &b.cols[c], *y = &spec->cols[c];
		if (strcmp(x->name, y->name) != 0 || x->type != y->type ||
		    x->required != y->required || x->in_key != y->in_key)
			return false;
	}
	return true;
}

/* Write the [table NAME] section of spec. */
static void print_table(const cs_tablespec_t *spec, FILE *out)
{
	static const char *const modes[] = {"update", "skip", "none"};
	const char *sep = "";

	fprintf(out, "\n[table %s]\ntopic = %s\non_conflict = %s\nschema = %s\ndim = %d\n"
		     "dlq_topic = %s\nembedding_type = %s\n",
		spec->name, spec->topic, modes[spec->on_conflict], spec->schema, spec->dim,
		spec->dlq_topic, cs_embedding_type_name(spec->embedding_type));
	if (spec_is_builtin(spec))
		return;
	fputs("columns = ", out);
	for (int c = 0; c < spec->ncols; c++) {
		const cs_column_t *col = &spec->cols[c];
		char emb[32] = "embedding"; /* of the table's embedding_type, else as spelled */

		if (col->type == CS_COL_EMBEDDING && col->emb_type != spec->embedding_type)
			cs_embedding_sql(col->emb_type, spec->dim, emb, sizeof(emb));
		fprintf(out, "%s%s %s%s", c ? ", " : "", col->name,
			col->type == CS_COL_EMBEDDING ? emb : cs_coltype_sql(col->type),
			col->required ? " not null" : "");
	}
	fputs("\nkey = ", out);
	for (int c = 0; c < spec->ncols; c++) {
		if (spec->cols[c].in_key) {
			fprintf(out, "%s%s", sep, spec->cols[c].name);
			sep = ", ";
		}
	}
	fputc('\n', out);
}

void cs_config_print(const cs_config_t *cfg, FILE *out)
{
	fputs("; effective configuration, secrets masked\n[kafka]\n", out);
	for (int i = 0; i < cfg->nkafka; i++)
		fprintf(out, "%s = %s\n", cfg->kafka[i].key,
			kafka_secret(cfg->kafka[i].key) ? MASK : cfg->kafka[i].value);
	for (int s = 1; s < cs_conf_nsections; s++) {
		fprintf(out, "\n[%s]\n", cs_conf_sections[s]);
		for (int k = 0; k < cs_conf_nkeys; k++) {
			const keydef_t *kd = &cs_conf_keys[k];
			const char *v;

			if (strcmp(kd->section, cs_conf_sections[s]) != 0)
				continue;
			fprintf(out, "%s = ", kd->name);
			if (kd->type == KT_INT) {
				fprintf(out, "%lld\n", (long long)int_value(cfg, kd));
				continue;
			}
			v = str_value(cfg, kd);
			if (kd->offset == FIELD(pg_conninfo))
				put_conninfo_masked(v, out);
			else
				fputs(v, out);
			fputc('\n', out);
		}
	}
	for (int t = 0; t < cfg->ntables; t++)
		print_table(&cfg->tables[t], out);
}

/* Write the help of one key. */
static void help_key(const keydef_t *kd, FILE *out)
{
	char env[128];

	fprintf(out, "  %s = %s", kd->name,
		kd->def == NULL ? "(see below)" : kd->def[0] ? kd->def : "(empty)");
	if (kd->type == KT_INT)
		fprintf(out, "   (integer, %lld .. %lld)", (long long)kd->min, (long long)kd->max);
	else if (kd->type == KT_ENUM)
		fprintf(out, "   (%s)", kd->choices);
	fprintf(out, "\n      %s\n", kd->doc);
	if (strcmp(kd->section, "table") == 0) {
		cs_conf_upper(env, sizeof(env), kd->name);
		fprintf(out, "      env COPYSINK_TABLE_<NAME>_%s, -o table.<name>.%s=...\n", env,
			kd->name);
	} else {
		snprintf(env, sizeof(env), "%s_%s", kd->section, kd->name);
		cs_conf_upper(env, sizeof(env), env);
		fprintf(out, "      env COPYSINK_%s, -o %s.%s=...\n", env, kd->section, kd->name);
	}
}

void cs_config_help(FILE *out)
{
	fputs("copysink configuration: an INI file (-c FILE), then COPYSINK_<SECTION>_<KEY>\n"
	      "environment variables, then -o SECTION.KEY=VALUE options; each overrides the one\n"
	      "before. Comments start a line with ';' or '#', or follow a value after \" ;\".\n"
	      "\n[kafka]\n"
	      "  any librdkafka property, passed as is (bootstrap.servers, group.id, ...)\n"
	      "      env COPYSINK_KAFKA_<KEY> with '.' written '_' (COPYSINK_KAFKA_GROUP_ID),\n"
	      "      -o kafka.<key>=...\n"
	      "      unless set: enable.auto.commit=false (offsets live in PostgreSQL),\n"
	      "      auto.offset.reset=earliest, reconnect.backoff.max.ms=1000 (librdkafka: 10000),\n"
	      "      the prefetch queue from max_bytes (docs/OPERATIONS.md)\n",
	      out);
	for (int s = 1; s <= cs_conf_nsections; s++) {
		const char *name = s < cs_conf_nsections ? cs_conf_sections[s] : "table";

		if (s < cs_conf_nsections)
			fprintf(out, "\n[%s]\n", name);
		else
			fputs("\n[table NAME]   (one per target table; NAME is the table's name)\n",
			      out);
		for (int k = 0; k < cs_conf_nkeys; k++)
			if (strcmp(cs_conf_keys[k].section, name) == 0)
				help_key(&cs_conf_keys[k], out);
	}
	fputs("\nColumn types: text, smallint, integer, bigint, real, double precision, boolean,\n"
	      "jsonb, text[], embedding (vector(dim) with pgvector, real[] otherwise), uuid,\n"
	      "timestamptz, date, numeric, bytea, double precision[], integer[], bigint[], json.\n"
	      "What each takes from an entry: docs/FORMAT.md, \"Field types\".\n",
	      out);
	fputs("An embedding column spelled `embedding` has the table's embedding_type and dim;\n"
	      "spelled vector(N), halfvec(N), sparsevec(N) or real[], it has that type.\n",
	      out);
}
