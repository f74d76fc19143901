/*
 * check.h - `copysink check`: configuration, connectivity and table shapes, explained
 */
#ifndef COPYSINK_CHECK_H
#define COPYSINK_CHECK_H

#include <stdio.h>

#include "copysink/config.h"

/*
 * Check everything the worker needs and write one line per check to `out` ("ok: ..." or
 * "error: ..."): PostgreSQL reachable; each table present, of its spec's shape, and writable;
 * the bookkeeping table present; the Kafka brokers reachable; each topic present.
 * @returns the number of problems found (0 = ready to run).
 */
int cs_check_run(cs_config_t *cfg, FILE *out);

#endif /* COPYSINK_CHECK_H */
