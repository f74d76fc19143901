/*
 * config.c - the worker's configuration: INI file, environment, command line
 *
 * Loading goes layer by layer: the defaults (cs_config_init), the file, the COPYSINK_*
 * variables, the overrides. Each value is checked when it is set, so an error names the line,
 * the variable or the override that gave it. [table NAME] sections are kept as raw values until
 * every layer is in, because `columns` and `key` may come after the keys that depend on them and
 * the environment may still change them; the specs are built from them at the end.
 *
 * libinih splits "key = value" and strips inline comments (';' after a blank). Our reader hands
 * it one physical line at a time, which gives us line numbers, and deals itself with what
 * libinih would get silently wrong: section headers (libinih truncates them at 49 bytes and
 * never reports an empty section), indented lines (libinih takes them as the continuation of
 * the previous value) and lines longer than its buffer (libinih splits them).
 */
#include "copysink/config.h"
#include "copysink/confkeys.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "copysink/embedding.h"

#define MAX_LINE 4096 /* longest line of a configuration file, in bytes */
#define ENV_PREFIX "COPYSINK_"



/* Where a value came from, for error messages. */
typedef enum origin_kind {
	ORIGIN_FILE,     /* line `line` of the file */
	ORIGIN_ENV,      /* `text` is the "NAME=value" entry of envp */
	ORIGIN_OVERRIDE, /* `text` is the "section.key=value" override */
} origin_kind_t;

typedef struct origin {
	origin_kind_t kind;
	int line;
	const char *text; /* lives as long as envp or the overrides: the whole load */
} origin_t;

/* A [table NAME] as collected so far: raw values indexed like cs_conf_keys[]. */
typedef struct rawtable {
	char name[CS_MAX_NAME];
	origin_t origin;    /* the section header, or the variable that created the table */
	char *vals[CS_CONF_NKEYS];  /* owned; NULL = not set */
	origin_t origins[CS_CONF_NKEYS];
} rawtable_t;

/* State of one cs_config_load call. */
typedef struct loader {
	cs_config_t *cfg;
	const char *path;
	FILE *fp;
	char *line; /* getline buffer, owned */
	size_t linecap;
	int lineno;
	int section;              /* index into cs_conf_sections[], -1 = none yet, CS_CONF_NSECTIONS = a table */
	int section_line[CS_CONF_NSECTIONS]; /* where each section was opened, 0 = not yet */
	rawtable_t *cur;          /* the [table NAME] being read, or NULL */
	rawtable_t tables[CS_MAX_TABLES];
	int ntables;
	bool failed;
	char *errstr;
	size_t errstr_size;
} loader_t;


/* Index into cs_conf_keys[] of section.name, or -1. */
static int key_find(const char *section, const char *name)
{
	for (int k = 0; k < CS_CONF_NKEYS; k++)
		if (strcmp(cs_conf_keys[k].section, section) == 0 && strcmp(cs_conf_keys[k].name, name) == 0)
			return k;
	return -1;
}

/* Index into cs_conf_sections[] of name, or -1. */
static int section_find(const char *name)
{
	for (int s = 0; s < CS_CONF_NSECTIONS; s++)
		if (strcmp(cs_conf_sections[s], name) == 0)
			return s;
	return -1;
}

/* The int64_t field of an integer key. */
static int64_t *int_field(cs_config_t *cfg, const keydef_t *kd)
{
	return (int64_t *)(void *)((char *)cfg + kd->offset);
}

/* The char * field of a string or enum key. */
static char **str_field(cs_config_t *cfg, const keydef_t *kd)
{
	return (char **)(void *)((char *)cfg + kd->offset);
}

/* Free a string field unless it still points at its default, which the table owns. */
static void str_release(char **field, const keydef_t *kd)
{
	if (*field != kd->def)
		free(*field);
	*field = NULL;
}

/* Point a string field at its default. The default is the table's literal and is not owned
 * (str_release leaves it alone), so that cs_config_init allocates nothing and cannot fail. */
static void str_default(char **field, const keydef_t *kd)
{
	*field = (char *)(uintptr_t)kd->def;
}

/* True when `value` is one of the '|'-separated `choices`. */
static bool choice_ok(const char *choices, const char *value)
{
	size_t n = strlen(value);

	for (const char *p = choices; p != NULL; p = strchr(p, '|'), p = p ? p + 1 : NULL) {
		size_t len = strcspn(p, "|");
		if (len == n && strncmp(p, value, n) == 0)
			return true;
	}
	return false;
}

/* Parse a plain decimal integer: an optional '-' and digits, nothing else.
 * @returns 0, 1 when it does not fit in 64 bits, -1 when it is not an integer. */
static int parse_int(const char *s, int64_t *out)
{
	char *end;
	long long v;

	if (!(isdigit((unsigned char)s[0]) || (s[0] == '-' && isdigit((unsigned char)s[1]))))
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (*end != '\0')
		return -1;
	if (errno == ERANGE)
		return 1;
	*out = v;
	return 0;
}

/* Check `value` against kd; integers are parsed into *num. @returns 0, or -1 with the reason. */
static int value_check(const keydef_t *kd, const char *value, int64_t *num, char *why,
		       size_t whysize)
{
	const char *reason;
	int rc;

	switch (kd->type) {
	case KT_INT:
		rc = parse_int(value, num);
		if (rc < 0) {
			snprintf(why, whysize, "not an integer");
			return -1;
		}
		if (rc > 0 || *num < kd->min || *num > kd->max) {
			snprintf(why, whysize, "out of range (%lld .. %lld)", (long long)kd->min,
				 (long long)kd->max);
			return -1;
		}
		return 0;
	case KT_ENUM:
		if (!choice_ok(kd->choices, value)) {
			snprintf(why, whysize, "expected one of %s", kd->choices);
			return -1;
		}
		return 0;
	case KT_STRING:
		reason = kd->check ? kd->check(value) : NULL;
		if (reason != NULL) {
			snprintf(why, whysize, "%s", reason);
			return -1;
		}
		return 0;
	}
	return -1;
}

/* Length of the name part of a "NAME=value" entry. */
static int name_len(const char *text)
{
	return (int)strcspn(text, "=");
}

/* Record the first error as "<origin>: <message>" (origin may be NULL). @returns -1. */
__attribute__((format(printf, 3, 4))) static int fail(loader_t *ld, const origin_t *o,
						      const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	if (ld->failed)
		return -1;
	ld->failed = true;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (o == NULL)
		snprintf(ld->errstr, ld->errstr_size, "%s", msg);
	else if (o->kind == ORIGIN_FILE)
		snprintf(ld->errstr, ld->errstr_size, "%s:%d: %s", ld->path, o->line, msg);
	else if (o->kind == ORIGIN_ENV)
		snprintf(ld->errstr, ld->errstr_size, "environment variable \"%.*s\": %s",
			 name_len(o->text), o->text, msg);
	else
		snprintf(ld->errstr, ld->errstr_size, "override \"%.*s\": %s", name_len(o->text),
			 o->text, msg);
	return -1;
}

/* Report a value that failed value_check. @returns -1. */
static int fail_value(loader_t *ld, const origin_t *o, const keydef_t *kd, const char *table,
		      const char *value, const char *why)
{
	return fail(ld, o, "invalid value \"%s\" for key \"%s\" in section [%s%s%s]: %s", value,
		    kd->name, kd->section, table ? " " : "", table ? table : "", why);
}

/* Duplicate a string, recording "out of memory" on failure. */
static char *dup_or_fail(loader_t *ld, const char *s)
{
	char *d = strdup(s);

	if (d == NULL)
		fail(ld, NULL, "out of memory");
	return d;
}

/* Set one of the worker's own keys. @returns 0 or -1. */
static int own_set(loader_t *ld, const keydef_t *kd, const char *value, const origin_t *o)
{
	char why[256];
	int64_t num = 0;
	char *copy, **field;

	if (value_check(kd, value, &num, why, sizeof(why)) != 0)
		return fail_value(ld, o, kd, NULL, value, why);
	if (kd->type == KT_INT) {
		*int_field(ld->cfg, kd) = num;
		return 0;
	}
	copy = dup_or_fail(ld, value);
	if (copy == NULL)
		return -1;
	field = str_field(ld->cfg, kd);
	str_release(field, kd);
	*field = copy;
	return 0;
}

/* Add or replace a [kafka] key; file order is kept. @returns 0 or -1. */
static int kafka_set(loader_t *ld, const char *key, const char *value, const origin_t *o)
{
	cs_config_t *cfg = ld->cfg;
	char *v, *k = NULL;
	cs_kv_t *kv;

	if (key[0] == '\0')
		return fail(ld, o, "empty key in section [kafka]");
	v = dup_or_fail(ld, value);
	if (v == NULL)
		return -1;
	for (int i = 0; i < cfg->nkafka; i++) {
		if (strcmp(cfg->kafka[i].key, key) == 0) {
			free(cfg->kafka[i].value);
			cfg->kafka[i].value = v;
			return 0;
		}
	}
	kv = realloc(cfg->kafka, (size_t)(cfg->nkafka + 1) * sizeof(*kv));
	if (kv == NULL || (k = dup_or_fail(ld, key)) == NULL)
		goto fail;
	cfg->kafka = kv;
	cfg->kafka[cfg->nkafka].key = k;
	cfg->kafka[cfg->nkafka].value = v;
	cfg->nkafka++;
	return 0;
fail:
	if (kv != NULL)
		cfg->kafka = kv;
	free(v);
	return fail(ld, NULL, "out of memory");
}

/* The collected table called name (case-insensitive, as variables are upper case), or NULL. */
static rawtable_t *table_find(loader_t *ld, const char *name)
{
	for (int t = 0; t < ld->ntables; t++)
		if (strcasecmp(ld->tables[t].name, name) == 0)
			return &ld->tables[t];
	return NULL;
}

/* True when name is one of the built-in table specs. */
static bool is_builtin(const char *name)
{
	cs_tablespec_t spec;

	return cs_tablespec_builtin(name, &spec) == 0;
}

/* Start collecting a new table. @returns it, or NULL after recording the error. */
static rawtable_t *table_add(loader_t *ld, const char *name, const origin_t *o)
{
	rawtable_t *rt;

	if (!cs_conf_is_identifier(name)) {
		fail(ld, o, "invalid table name \"%s\": %s", name, cs_conf_check_identifier(name));
		return NULL;
	}
	if (ld->ntables == CS_MAX_TABLES) {
		fail(ld, o, "too many tables (at most %d)", CS_MAX_TABLES);
		return NULL;
	}
	rt = &ld->tables[ld->ntables++];
	memset(rt, 0, sizeof(*rt));
	snprintf(rt->name, sizeof(rt->name), "%s", name);
	rt->origin = *o;
	return rt;
}

/* Set key `k` (an index into cs_conf_keys[]) of a collected table. @returns 0 or -1. */
static int table_set(loader_t *ld, rawtable_t *rt, int k, const char *value, const origin_t *o)
{
	char why[256];
	int64_t num;
	char *copy;

	if (value_check(&cs_conf_keys[k], value, &num, why, sizeof(why)) != 0)
		return fail_value(ld, o, &cs_conf_keys[k], rt->name, value, why);
	copy = dup_or_fail(ld, value);
	if (copy == NULL)
		return -1;
	free(rt->vals[k]);
	rt->vals[k] = copy;
	rt->origins[k] = *o;
	return 0;
}

/* Set section.key (section is not "table") to value. @returns 0 or -1. */
static int key_set(loader_t *ld, const char *section, const char *key, const char *value,
		   const origin_t *o)
{
	int k;

	if (strcmp(section, "kafka") == 0)
		return kafka_set(ld, key, value, o);
	if (section_find(section) < 0)
		return fail(ld, o, "unknown section [%s]", section);
	k = key_find(section, key);
	if (k < 0)
		return fail(ld, o, "unknown key \"%s\" in section [%s]", key, section);
	return own_set(ld, &cs_conf_keys[k], value, o);
}

/*
 * The file
 */

/* Open a section from its header text (between the brackets). @returns 0 or -1. */
static int section_open(loader_t *ld, char *text)
{
	origin_t o = {ORIGIN_FILE, ld->lineno, NULL};
	char *name;
	int s;
	rawtable_t *rt;

	while (isspace((unsigned char)*text))
		text++;
	for (char *e = text + strlen(text); e > text && isspace((unsigned char)e[-1]); e--)
		e[-1] = '\0';
	ld->cur = NULL;
	if (strncmp(text, "table", 5) == 0 &&
	    (text[5] == '\0' || isspace((unsigned char)text[5]))) {
		name = text + 5;
		while (isspace((unsigned char)*name))
			name++;
		if (*name == '\0')
			return fail(ld, &o, "section [table] needs a table name: [table NAME]");
		rt = table_find(ld, name);
		if (rt != NULL)
			return fail(ld, &o, "duplicate section [table %s] (first at line %d)", name,
				    rt->origin.line);
		rt = table_add(ld, name, &o);
		if (rt == NULL)
			return -1;
		ld->cur = rt;
		ld->section = CS_CONF_NSECTIONS;
		return 0;
	}
	s = section_find(text);
	if (s < 0)
		return fail(ld, &o, "unknown section [%s]", text);
	if (ld->section_line[s] != 0)
		return fail(ld, &o, "duplicate section [%s] (first at line %d)", text,
			    ld->section_line[s]);
	ld->section_line[s] = ld->lineno;
	ld->section = s;
	return 0;
}

/* Handle a "[section]" line (leading blanks already skipped). @returns 0 or -1. */
static int header_line(loader_t *ld, char *line)
{
	origin_t o = {ORIGIN_FILE, ld->lineno, NULL};
	char *end = strchr(line, ']');
	char *rest;

	if (end == NULL)
		return fail(ld, &o, "syntax error: missing \"]\" in section header");
	*end = '\0';
	rest = end + 1;
	while (isspace((unsigned char)*rest))
		rest++;
	if (*rest != '\0' && *rest != ';' && *rest != '#')
		return fail(ld, &o, "syntax error: unexpected text after section header");
	return section_open(ld, line + 1);
}

/* True when a key line has '=' or ':' before any inline comment, as libinih wants. */
static bool has_separator(const char *s)
{
	bool blank = false;

	for (; *s != '\0'; s++) {
		if (*s == '=' || *s == ':')
			return true;
		if (blank && *s == ';')
			return false;
		blank = isspace((unsigned char)*s);
	}
	return false;
}

/*
 * libinih's reader: give it the next line of the file with leading blanks removed (so that no
 * line is a continuation), section headers and comments blanked out (we handle those), and stop
 * it (return NULL) at the end of the file or after the first error.
 */
static char *read_line(char *str, int num, void *stream)
{
	loader_t *ld = stream;
	origin_t o = {ORIGIN_FILE, 0, NULL};
	ssize_t n;
	char *p;

	if (ld->failed)
		return NULL;
	n = getline(&ld->line, &ld->linecap, ld->fp);
	if (n < 0) {
		if (ferror(ld->fp))
			fail(ld, NULL, "could not read configuration file \"%s\": %s", ld->path,
			     strerror(errno));
		return NULL;
	}
	o.line = ++ld->lineno;
	p = ld->line;
	if (ld->lineno == 1 && strncmp(p, "\xEF\xBB\xBF", 3) == 0)
		p += 3; /* UTF-8 byte order mark */
	if (strlen(ld->line) != (size_t)n) {
		fail(ld, &o, "line contains a NUL byte");
		return NULL;
	}
	while (isspace((unsigned char)*p))
		p++;
	if (strlen(p) >= (size_t)num) {
		fail(ld, &o, "line is too long (at most %d bytes)", num - 3);
		return NULL;
	}
	if (*p == '[') {
		if (header_line(ld, p) != 0)
			return NULL;
		p = "";
	} else if (*p == ';' || *p == '#') {
		p = "";
	} else if (*p != '\0' && !has_separator(p)) {
		fail(ld, &o, "syntax error: expected \"key = value\" or \"[section]\"");
		return NULL;
	}
	snprintf(str, (size_t)num, "%s", p[0] ? p : "\n");
	return str;
}

/* One "key = value" line of the file, in the current section. @returns 0 or -1. */
static int key_line(loader_t *ld, const char *name, const char *value)
{
	origin_t o = {ORIGIN_FILE, ld->lineno, NULL};
	int k;

	if (name[0] == '\0')
		return fail(ld, &o, "syntax error: missing key name before \"=\"");
	if (ld->section < 0)
		return fail(ld, &o, "key \"%s\" is outside of any section", name);
	if (ld->cur == NULL)
		return key_set(ld, cs_conf_sections[ld->section], name, value, &o);
	k = key_find("table", name);
	if (k < 0)
		return fail(ld, &o, "unknown key \"%s\" in section [table %s]", name,
			    ld->cur->name);
	return table_set(ld, ld->cur, k, value, &o);
}

/* libinih's handler. @returns 1, or 0 on error. */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
	loader_t *ld = user;

	(void)section; /* libinih's copy is truncated at 49 bytes; ours is ld->section */
	return !ld->failed && key_line(ld, name, value) == 0;
}

/* libinih's process-wide options (Debian builds it with INI_RUNTIME_OPTIONS). */
typedef struct ini_options {
	int max_line;
	bool inline_comments;
	char *inline_prefixes;
	bool multiline;
	bool stop_on_first_error;
} ini_options_t;

/* Save libinih's options into *saved and set ours: lines up to MAX_LINE bytes, inline comments
 * after ';', no continuation lines, stop at the first error. */
static void ini_options_set(ini_options_t *saved)
{
	static char semicolon[] = ";";

	*saved = (ini_options_t){ini_max_line, ini_allow_inline_comments,
				 ini_inline_comment_prefixes, ini_allow_multiline,
				 ini_stop_on_first_error};
	ini_max_line = MAX_LINE + 3; /* libinih counts the '\r', '\n' and '\0' */
	ini_allow_inline_comments = true;
	ini_inline_comment_prefixes = semicolon;
	ini_allow_multiline = false;
	ini_stop_on_first_error = true;
}

/* Put libinih's options back. */
static void ini_options_restore(const ini_options_t *saved)
{
	ini_max_line = saved->max_line;
	ini_allow_inline_comments = saved->inline_comments;
	ini_inline_comment_prefixes = saved->inline_prefixes;
	ini_allow_multiline = saved->multiline;
	ini_stop_on_first_error = saved->stop_on_first_error;
}

/* Read the file into the configuration and the collected tables. @returns 0 or -1. */
static int file_load(loader_t *ld, const char *path)
{
	ini_options_t saved;
	int rc;

	ld->cfg->path = dup_or_fail(ld, path);
	if (ld->cfg->path == NULL)
		return -1;
	ld->fp = fopen(path, "r");
	if (ld->fp == NULL)
		return fail(ld, NULL, "could not open configuration file \"%s\": %s", path,
			    strerror(errno));
	ini_options_set(&saved);
	rc = ini_parse_stream(read_line, ld, on_key, ld);
	ini_options_restore(&saved);
	fclose(ld->fp);
	ld->fp = NULL;
	if (ld->failed)
		return -1;
	if (rc == -2)
		return fail(ld, NULL, "out of memory");
	if (rc != 0) {
		origin_t o = {ORIGIN_FILE, rc, NULL};
		return fail(ld, &o, "syntax error");
	}
	return 0;
}

/*
 * Environment and overrides
 */

/* Copy s into dst (size n) in upper case. */
void cs_conf_upper(char *dst, size_t n, const char *s)
{
	size_t i = 0;

	for (; s[i] != '\0' && i + 1 < n; i++)
		dst[i] = (char)toupper((unsigned char)s[i]);
	dst[i] = '\0';
}

/* Score of reading `rest` as NAME_KEY with key k: 0 = no, 1 = NAME is built in, 2 = NAME is
 * a table already; the table name goes into name. */
static int env_table_score(loader_t *ld, const char *rest, int k, char *name)
{
	char suffix[64];
	size_t n = strlen(rest), sl, nl;

	suffix[0] = '_';
	cs_conf_upper(suffix + 1, sizeof(suffix) - 1, cs_conf_keys[k].name);
	sl = strlen(suffix);
	if (n <= sl || n - sl >= CS_MAX_NAME || strcmp(rest + n - sl, suffix) != 0)
		return 0;
	nl = n - sl;
	for (size_t i = 0; i < nl; i++)
		name[i] = (char)tolower((unsigned char)rest[i]);
	name[nl] = '\0';
	return table_find(ld, name) != NULL ? 2 : is_builtin(name) ? 1 : 0;
}

/*
 * A table key from the environment: `rest` is what follows COPYSINK_TABLE_, NAME_KEY. Table
 * names may hold '_' and so may keys (dlq_topic ends in _topic), so every key whose suffix
 * matches is tried: a table already declared beats a built-in name (which the variable then
 * creates), and a longer key beats a shorter one. @returns 0 or -1.
 */
static int env_table(loader_t *ld, const char *rest, const char *value, const origin_t *o)
{
	char name[CS_MAX_NAME], best_name[CS_MAX_NAME];
	int best = 0, best_k = -1;
	rawtable_t *rt;

	for (int k = 0; k < CS_CONF_NKEYS; k++) {
		int score;

		if (strcmp(cs_conf_keys[k].section, "table") != 0)
			continue;
		score = env_table_score(ld, rest, k, name);
		if (score > best || (score == best && score > 0 &&
				     strlen(cs_conf_keys[k].name) > strlen(cs_conf_keys[best_k].name))) {
			best = score;
			best_k = k;
			snprintf(best_name, sizeof(best_name), "%s", name);
		}
	}
	if (best_k < 0)
		return fail(ld, o, "unknown variable: expected COPYSINK_TABLE_<NAME>_<KEY> with a "
				   "table of the file or a built-in table as NAME");
	rt = table_find(ld, best_name);
	if (rt == NULL && (rt = table_add(ld, best_name, o)) == NULL)
		return -1;
	return table_set(ld, rt, best_k, value, o);
}

/* One COPYSINK_* variable, "NAME=value". @returns 0 or -1. */
static int env_apply(loader_t *ld, const char *entry)
{
	origin_t o = {ORIGIN_ENV, 0, entry};
	const char *eq = strchr(entry, '=');
	char name[256], upper[128];
	size_t n;

	if (eq == NULL || (size_t)(eq - entry) >= sizeof(name))
		return fail(ld, &o, "unknown variable");
	n = (size_t)(eq - entry) - strlen(ENV_PREFIX);
	memcpy(name, entry + strlen(ENV_PREFIX), n);
	name[n] = '\0';
	if (strncmp(name, "KAFKA_", 6) == 0) {
		for (char *p = name + 6; *p != '\0'; p++)
			*p = *p == '_' ? '.' : (char)tolower((unsigned char)*p);
		return kafka_set(ld, name + 6, eq + 1, &o);
	}
	if (strncmp(name, "TABLE_", 6) == 0)
		return env_table(ld, name + 6, eq + 1, &o);
	for (int k = 0; k < CS_CONF_NKEYS; k++) {
		if (cs_conf_keys[k].offset == NO_FIELD)
			continue;
		snprintf(upper, sizeof(upper), "%s_%s", cs_conf_keys[k].section, cs_conf_keys[k].name);
		cs_conf_upper(upper, sizeof(upper), upper);
		if (strcmp(upper, name) == 0)
			return own_set(ld, &cs_conf_keys[k], eq + 1, &o);
	}
	return fail(ld, &o, "unknown variable: expected COPYSINK_<SECTION>_<KEY>, see \"copysink "
			    "help config\"");
}

/*
 * True for COPYSINK_* variables that are not configuration: only names that start with a
 * section (COPYSINK_BATCH_..., COPYSINK_TABLE_..., ...) configure copysink. Others share the
 * prefix by accident and are left alone: the service-link variables Kubernetes injects for a
 * Service called "copysink" (COPYSINK_SERVICE_HOST, COPYSINK_PORT_9187_TCP, ...) and those of
 * the test harness (COPYSINK_BIN, COPYSINK_TEST_...). A misspelt key inside a section is still
 * an error.
 */
static bool env_ignored(const char *entry)
{
	static const char *const env_sections[] = {"BATCH_", "DLQ_", "HTTP_", "KAFKA_",
					       "POSTGRES_", "TABLE_", "WORKER_"};
	const char *name = entry + strlen(ENV_PREFIX);

	for (size_t i = 0; i < sizeof(env_sections) / sizeof(env_sections[0]); i++)
		if (strncmp(name, env_sections[i], strlen(env_sections[i])) == 0)
			return false;
	return true;
}

/* Apply every COPYSINK_* variable of envp. @returns 0 or -1. */
static int env_load(loader_t *ld, char *const *envp)
{
	for (; envp != NULL && *envp != NULL; envp++) {
		if (strncmp(*envp, ENV_PREFIX, strlen(ENV_PREFIX)) != 0 || env_ignored(*envp))
			continue;
		if (env_apply(ld, *envp) != 0)
			return -1;
	}
	return 0;
}

/* One override "section.key=value" or "table.NAME.key=value". @returns 0 or -1. */
static int override_apply(loader_t *ld, const char *ov)
{
	origin_t o = {ORIGIN_OVERRIDE, 0, ov};
	const char *eq = strchr(ov, '='), *dot, *value;
	char lhs[256], *key, *tkey;
	rawtable_t *rt;
	int k;

	dot = strchr(ov, '.');
	if (eq == NULL || dot == NULL || dot > eq || (size_t)(eq - ov) >= sizeof(lhs))
		return fail(ld, &o, "expected SECTION.KEY=VALUE");
	memcpy(lhs, ov, (size_t)(eq - ov));
	lhs[eq - ov] = '\0';
	value = eq + 1;
	key = lhs + (dot - ov);
	*key++ = '\0';
	if (strcmp(lhs, "table") != 0)
		return key_set(ld, lhs, key, value, &o);
	tkey = strchr(key, '.');
	if (tkey == NULL)
		return fail(ld, &o, "expected table.NAME.KEY=VALUE");
	*tkey++ = '\0';
	k = key_find("table", tkey);
	if (k < 0)
		return fail(ld, &o, "unknown key \"%s\" in section [table %s]", tkey, key);
	rt = table_find(ld, key);
	if (rt == NULL && !is_builtin(key))
		return fail(ld, &o, "no section [table %s] and \"%s\" is not a built-in table", key,
			    key);
	if (rt == NULL && (rt = table_add(ld, key, &o)) == NULL)
		return -1;
	return table_set(ld, rt, k, value, &o);
}

/*
 * Building the table specs
 */

/* The raw value of table key `name`, or NULL; *o gets its origin (or the table's). */
static const char *raw(const rawtable_t *rt, const char *name, const origin_t **o)
{
	int k = key_find("table", name);

	*o = rt->vals[k] != NULL ? &rt->origins[k] : &rt->origin;
	return rt->vals[k];
}

/* The columns of spec: the built-in ones, or the operator's `columns` and `key`. */
static int spec_columns(loader_t *ld, const rawtable_t *rt, cs_tablespec_t *spec)
{
	const origin_t *oc, *ok;
	const char *columns = raw(rt, "columns", &oc), *key = raw(rt, "key", &ok);
	char why[512]; /* room for the list of supported types */

	memset(spec, 0, sizeof(*spec));
	if (columns == NULL) {
		if (cs_tablespec_builtin(rt->name, spec) == 0) {
			if (key != NULL)
				return fail(ld, ok,
					    "key \"key\" of table \"%s\" needs \"columns\" too",
					    rt->name);
			return 0;
		}
		return fail(ld, &rt->origin, "table \"%s\" is not built in: it needs \"columns\" "
					     "(and \"key\" unless it is insert-only)", rt->name);
	}
	if (cs_tablespec_parse_columns(spec, columns, "", why, sizeof(why)) != 0)
		return fail(ld, oc, "invalid \"columns\" of table \"%s\": %s", rt->name, why);
	if (cs_tablespec_parse_columns(spec, columns, key ? key : "", why, sizeof(why)) != 0)
		return fail(ld, ok, "invalid \"key\" of table \"%s\": %s", rt->name, why);
	return 0;
}

/* The conflict mode of spec from on_conflict and the presence of a key. */
static int spec_conflict(loader_t *ld, const rawtable_t *rt, cs_tablespec_t *spec)
{
	const origin_t *o;
	const char *mode = raw(rt, "on_conflict", &o);
	bool keyed = cs_tablespec_nkeys(spec) > 0;

	if (mode == NULL)
		spec->on_conflict = keyed ? CS_CONFLICT_UPDATE : CS_CONFLICT_NONE;
	else if (strcmp(mode, "none") == 0)
		spec->on_conflict = CS_CONFLICT_NONE;
	else
		spec->on_conflict =
			strcmp(mode, "skip") == 0 ? CS_CONFLICT_SKIP : CS_CONFLICT_UPDATE;
	if (keyed && spec->on_conflict == CS_CONFLICT_NONE)
		return fail(ld, o, "table \"%s\" has a key: on_conflict must be \"update\" or "
				   "\"skip\"", rt->name);
	if (!keyed && spec->on_conflict != CS_CONFLICT_NONE)
		return fail(ld, o, "table \"%s\" has no key: on_conflict must be \"none\"",
			    rt->name);
	return 0;
}

/* The type and dimension of the embedding columns. A column list's spelling wins for its
 * column (halfvec(768), real[]); embedding_type is the type of the others. A table has one
 * dim: a spelled dimension must match the `dim` key and every other one, and sets the table's
 * dim when the key is absent. Only sparsevec takes more than CS_EMBEDDING_MAX_DIM. */
static int spec_embedding(loader_t *ld, const rawtable_t *rt, cs_tablespec_t *spec)
{
	const origin_t *ot, *od, *oc;
	const char *type = raw(rt, "embedding_type", &ot), *dim = raw(rt, "dim", &od);
	bool spelled = false;

	raw(rt, "columns", &oc);
	spec->embedding_type = CS_EMB_AUTO;
	if (type != NULL && cs_embedding_type_parse(type, &spec->embedding_type) != 0)
		return fail(ld, ot, "invalid embedding_type \"%s\"", type); /* checked when set */
	for (int c = 0; c < spec->ncols; c++) {
		cs_column_t *col = &spec->cols[c];

		if (col->type != CS_COL_EMBEDDING)
			continue;
		if (col->emb_type == CS_EMB_AUTO)
			col->emb_type = spec->embedding_type;
		if (col->emb_dim != 0 && (dim != NULL || spelled) && col->emb_dim != spec->dim)
			return fail(ld, dim != NULL ? od : oc,
				    "table \"%s\" column \"%s\" has dimension %d, but the table's dim "
				    "is %d (a table has one)",
				    spec->name, col->name, col->emb_dim, spec->dim);
		if (col->emb_dim != 0) {
			spec->dim = col->emb_dim;
			spelled = true;
		}
	}
	for (int c = 0; c < spec->ncols; c++) {
		const cs_column_t *col = &spec->cols[c];

		if (col->type != CS_COL_EMBEDDING || col->emb_type == CS_EMB_SPARSEVEC ||
		    spec->dim <= CS_EMBEDDING_MAX_DIM)
			continue;
		return fail(ld, dim != NULL ? od : oc,
			    "table \"%s\" column \"%s\" cannot have %d dimensions: vector, halfvec "
			    "and real[] take at most %d (sparsevec takes more)",
			    spec->name, col->name, spec->dim, CS_EMBEDDING_MAX_DIM);
	}
	return 0;
}

/* Build the spec of a collected table into cfg->tables. @returns 0 or -1. */
static int spec_build(loader_t *ld, const rawtable_t *rt)
{
	cs_tablespec_t *spec = &ld->cfg->tables[ld->cfg->ntables];
	const origin_t *o;
	const char *v;

	if (spec_columns(ld, rt, spec) != 0 || spec_conflict(ld, rt, spec) != 0)
		return -1;
	snprintf(spec->name, sizeof(spec->name), "%s", rt->name);
	v = raw(rt, "topic", &o);
	snprintf(spec->topic, sizeof(spec->topic), "%s", v ? v : rt->name);
	v = raw(rt, "schema", &o);
	snprintf(spec->schema, sizeof(spec->schema), "%s", v ? v : "public");
	v = raw(rt, "dlq_topic", &o);
	snprintf(spec->dlq_topic, sizeof(spec->dlq_topic), "%s", v ? v : "");
	v = raw(rt, "dim", &o);
	spec->dim = v ? atoi(v) : CS_DEFAULT_DIM; /* range checked when set */
	if (spec_embedding(ld, rt, spec) != 0)
		return -1;
	for (int t = 0; t < ld->cfg->ntables; t++) {
		if (strcmp(ld->cfg->tables[t].topic, spec->topic) == 0) {
			raw(rt, "topic", &o);
			return fail(ld, o, "tables \"%s\" and \"%s\" both read topic \"%s\"",
				    ld->cfg->tables[t].name, spec->name, spec->topic);
		}
	}
	ld->cfg->ntables++;
	return 0;
}

/* Checks across keys, once every layer is in. @returns 0 or -1. */
static int cross_check(loader_t *ld)
{
	const cs_config_t *cfg = ld->cfg;

	if (cfg->retry_backoff_max_ms < cfg->retry_backoff_ms)
		return fail(ld, NULL, "[worker] retry_backoff_max_ms (%lld) is less than "
				      "retry_backoff_ms (%lld)",
			    (long long)cfg->retry_backoff_max_ms, (long long)cfg->retry_backoff_ms);
	/* a pooled server connection keeps the temp_buffers of its first temporary table */
	if (cfg->pg_staging != NULL && strcmp(cfg->pg_staging, "transaction") == 0 &&
	    cfg->pg_temp_buffers_mb != 0)
		return fail(ld, NULL, "[postgres] temp_buffers_mb (%lld) needs staging = session: "
				      "with staging = transaction it cannot be set",
			    (long long)cfg->pg_temp_buffers_mb);
	return 0;
}

/*
 * The public functions
 */

void cs_config_init(cs_config_t *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	for (int k = 0; k < CS_CONF_NKEYS; k++) {
		if (cs_conf_keys[k].offset == NO_FIELD)
			continue;
		if (cs_conf_keys[k].type == KT_INT)
			*int_field(cfg, &cs_conf_keys[k]) = strtoll(cs_conf_keys[k].def, NULL, 10);
		else
			str_default(str_field(cfg, &cs_conf_keys[k]), &cs_conf_keys[k]);
	}
}

void cs_config_cleanup(cs_config_t *cfg)
{
	if (cfg == NULL)
		return;
	for (int k = 0; k < CS_CONF_NKEYS; k++)
		if (cs_conf_keys[k].offset != NO_FIELD && cs_conf_keys[k].type != KT_INT)
			str_release(str_field(cfg, &cs_conf_keys[k]), &cs_conf_keys[k]);
	for (int i = 0; i < cfg->nkafka; i++) {
		free(cfg->kafka[i].key);
		free(cfg->kafka[i].value);
	}
	free(cfg->kafka);
	free(cfg->path);
	cs_config_init(cfg);
}

int cs_config_load(cs_config_t *cfg, const char *path, char *const *envp,
		   char *const *overrides, int noverrides, char *errstr, size_t errstr_size)
{
	loader_t *ld = calloc(1, sizeof(*ld));
	int rc = -1;

	if (ld == NULL) {
		snprintf(errstr, errstr_size, "out of memory");
		return -1;
	}
	ld->cfg = cfg;
	ld->path = path;
	ld->section = -1;
	ld->errstr = errstr;
	ld->errstr_size = errstr_size;
	if (path != NULL && file_load(ld, path) != 0)
		goto fail;
	if (env_load(ld, envp) != 0)
		goto fail;
	for (int i = 0; i < noverrides; i++)
		if (override_apply(ld, overrides[i]) != 0)
			goto fail;
	for (int t = 0; t < ld->ntables; t++)
		if (spec_build(ld, &ld->tables[t]) != 0)
			goto fail;
	if (cross_check(ld) != 0)
		goto fail;
	rc = 0;
fail:
	for (int t = 0; t < ld->ntables; t++)
		for (int k = 0; k < CS_CONF_NKEYS; k++)
			free(ld->tables[t].vals[k]);
	free(ld->line);
	free(ld);
	return rc;
}

const cs_tablespec_t *cs_config_table_for_topic(const cs_config_t *cfg, const char *topic)
{
	for (int t = 0; t < cfg->ntables; t++)
		if (strcmp(cfg->tables[t].topic, topic) == 0)
			return &cfg->tables[t];
	return NULL;
}

int cs_config_writers(const cs_config_t *cfg)
{
	if (cfg->pg_writers == NULL || strcmp(cfg->pg_writers, "auto") == 0)
		return 0;
	return atoi(cfg->pg_writers); /* checked at load: 1 .. CS_WRITERS_MAX */
}

const char *cs_config_dlq_topic(const cs_config_t *cfg, const cs_tablespec_t *spec, char *buf,
				size_t size)
{
	if (spec != NULL && spec->dlq_topic[0] != '\0')
		snprintf(buf, size, "%s", spec->dlq_topic);
	else if (cfg->dlq_topic != NULL && cfg->dlq_topic[0] != '\0')
		snprintf(buf, size, "%s", cfg->dlq_topic);
	else
		snprintf(buf, size, "%s.dlq", spec != NULL ? spec->topic : "copysink");
	return buf;
}
