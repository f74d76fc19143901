/*
 * confkeys.h - the table of the worker's configuration keys, shared by config.c (parsing,
 * environment, overrides) and confprint.c (--print-config, help config); not an API of its own
 */
#ifndef COPYSINK_CONFKEYS_H
#define COPYSINK_CONFKEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "copysink/config.h"

typedef enum keytype {
	KT_INT,    /* int64_t field, decimal, within [min, max] */
	KT_STRING, /* char * field, optionally checked by `check` */
	KT_ENUM,   /* char * field, one of `choices` ("a|b|c") */
} keytype_t;

/* Extra validation of a string value. @returns NULL when the value is fine, else the reason. */
typedef const char *(*check_fn)(const char *value);

/* One key: where it lives, what it takes, what it means. */
typedef struct keydef {
	const char *section; /* "batch", ...; "table" for the keys of every [table NAME] */
	const char *name;
	keytype_t type;
	const char *def;     /* default as written in a file; NULL: see doc */
	int64_t min, max;    /* KT_INT */
	const char *choices; /* KT_ENUM */
	check_fn check;      /* KT_STRING, may be NULL */
	size_t offset;       /* field in cs_config_t; NO_FIELD for table keys */
	const char *doc;
} keydef_t;

#define FIELD(f) offsetof(cs_config_t, f)
#define NO_FIELD SIZE_MAX

/* Every key; the keys of one section are printed in their order here. */
#define CS_CONF_NKEYS 28
extern const keydef_t cs_conf_keys[];
extern const int cs_conf_nkeys;

/* Sections other than [table NAME], in the order they are printed. */
#define CS_CONF_NSECTIONS 6
extern const char *const cs_conf_sections[];
extern const int cs_conf_nsections;

/* True when s is a plain SQL identifier: [A-Za-z_][A-Za-z0-9_]*, at most 63 bytes. */
bool cs_conf_is_identifier(const char *s);

/* NULL when value is such an identifier, else the reason it is not. */
const char *cs_conf_check_identifier(const char *value);

/* Copy s into dst (n bytes with the NUL) in upper case: environment variable names. */
void cs_conf_upper(char *dst, size_t n, const char *s);

#endif
