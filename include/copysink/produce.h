/*
 * produce.h - JSON lines to msgpack entries on a Kafka topic (the `produce` command)
 *
 * Each non-blank input line is one JSON object, published as one message whose value is the
 * msgpack map of the object and whose key is the msgpack array of the entry's conflict-key
 * values, so that one key stays in one partition and keeps its order (as the worker expects of
 * any producer). It is a tool for tests, demos and back-fills, not part of the worker.
 */
#ifndef COPYSINK_PRODUCE_H
#define COPYSINK_PRODUCE_H

#include <jansson.h>
#include <msgpack.h>
#include <stddef.h>

#include "copysink/config.h"
#include "copysink/tablespec.h"

/*
 * Pack a JSON value as msgpack: integer -> int (msgpack's smallest encoding), real -> float64,
 * string -> str, array -> array, object -> map (keys in document order), null -> nil,
 * true/false -> bool. Recursive; jansson bounds the depth of what it parses.
 * @returns 0, or -1 when the packer's writer failed (out of memory).
 * @locality any thread
 */
__attribute__((warn_unused_result)) int cs_produce_json_to_msgpack(json_t *value,
								   msgpack_packer *pk);

/*
 * Pack the Kafka key of entry `obj` (a JSON object) for `spec`: the msgpack array of the values
 * of its key columns, in the order of spec->cols. A missing key field packs as nil: the worker
 * dead-letters such an entry, the key only chooses its partition. Packs nothing for a table
 * without key (on_conflict = none).
 * @returns the number of key columns (0: send the message without a key), or -1 when the
 *          packer's writer failed.
 * @locality any thread
 */
__attribute__((warn_unused_result)) int cs_produce_pack_key(const cs_tablespec_t *spec,
							    json_t *obj, msgpack_packer *pk);

/*
 * Publish the JSON lines of `path` (NULL or "-": stdin) to `topic` (NULL: the topic of `table`)
 * as entries of the configured table `table`, with the [kafka] settings of `cfg` (consumer-only
 * keys left out; enable.idempotence=true and linger.ms=5 unless cfg sets them). Blank lines are
 * skipped; the first line that is not a JSON object stops the run. Waits until every queued
 * message is delivered or has failed, then writes `produced N entries to "topic"` on stderr.
 * @returns 0 when every line was published and delivered, or -1 with errstr naming the input
 *          line (input errors) or the delivery failure; the messages queued before an input
 *          error are still delivered.
 * @locality main thread
 */
__attribute__((warn_unused_result)) int cs_produce_run(const cs_config_t *cfg, const char *table,
						       const char *topic, const char *path,
						       char *errstr, size_t errstr_size);

#endif /* COPYSINK_PRODUCE_H */
