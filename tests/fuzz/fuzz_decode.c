/*
 * fuzz_decode.c - libFuzzer target for the decoder
 *
 * Each input is one Kafka message value. It is opened and every entry is decoded against the
 * three built-in specs (dimension 4, so that small inputs reach the embedding encoder) and an
 * operator-style spec with a column of every type, in every embedding encoding (real[],
 * vector, halfvec, sparsevec). Whatever the
 * input, the decoder must return OK or a reason, never crash, read out of bounds or leak, and a
 * rejected entry must leave the buffers as they were. Built by -DCOPYSINK_FUZZ=ON (clang);
 * scripts/test.sh runs it for a bounded time on tests/fuzz/corpus.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "copysink/decode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NSPECS 7

static cs_tablespec_t specs[NSPECS];
static cs_decoder_t *dec;
static cs_buf_t tuples, keys, raw;

static void init(void)
{
	static const char *const builtin[] = {"memory_entries", "patterns", "trajectories"};
	cs_decode_limits_t limits;
	char err[256];

	for (int i = 0; i < 3; i++) {
		if (cs_tablespec_builtin(builtin[i], &specs[i]) != 0)
			abort();
		specs[i].dim = 4;
	}
	for (int i = 3; i < NSPECS; i++) {
		snprintf(specs[i].name, sizeof(specs[i].name), "all_types");
		if (cs_tablespec_parse_columns(&specs[i],
					       "id bigint not null, s text, i2 smallint, i4 integer, "
					       "f4 real, f8 double precision, b boolean, j jsonb, "
					       "t text[], embedding embedding, u uuid, ts timestamptz, "
					       "d date, n numeric, by bytea, fa double precision[], "
					       "ia integer[], la bigint[], js json",
					       /* the second copy keys on numeric and uuid too */
					       i == 3 ? "id" : "id, n, u", err, sizeof(err)) != 0) {
			fprintf(stderr, "fuzz_decode: %s\n", err);
			abort();
		}
		specs[i].dim = 4;
	}
	for (int c = 0; c < specs[4].ncols; c++) {
		if (specs[4].cols[c].type == CS_COL_EMBEDDING) {
			specs[4].cols[c].enc = CS_ENC_VECTOR;
			specs[5].cols[c].enc = CS_ENC_HALFVEC;
			specs[6].cols[c].enc = CS_ENC_SPARSEVEC;
		}
		if (specs[4].cols[c].type == CS_COL_JSONB)
			specs[4].cols[c].enc = CS_ENC_JSON;
	}
	cs_decode_limits_default(&limits);
	limits.max_message_bytes = 1 << 20;
	limits.max_field_bytes = 1 << 16;
	dec = cs_decoder_new(&limits);
	if (dec == NULL)
		abort();
	cs_buf_init(&tuples);
	cs_buf_init(&keys);
	cs_buf_init(&raw);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	cs_reason_t reason;
	int n;

	if (dec == NULL)
		init();
	n = cs_decode_open(dec, data, size, &reason, err, sizeof(err));
	if (n < 0) {
		if (reason <= CS_REASON_OK || reason >= CS_REASON__COUNT || err[0] == '\0')
			abort();
		return 0;
	}
	for (int s = 0; s < NSPECS; s++) {
		cs_buf_reset(&tuples);
		cs_buf_reset(&keys);
		for (int i = 0; i < n; i++) {
			size_t t0 = tuples.len, k0 = keys.len;
			cs_reason_t r = cs_decode_entry(dec, i, &specs[s], &tuples, &keys, err,
							sizeof(err));
			if (r == CS_REASON__COUNT)
				abort(); /* out of memory within libFuzzer's limit: a leak or a bug */
			if (r != CS_REASON_OK && (tuples.len != t0 || keys.len != k0))
				abort();
			if (r == CS_REASON_OK && (tuples.len <= t0 || keys.len <= k0))
				abort();
		}
	}
	for (int i = 0; i < n; i++) {
		cs_buf_reset(&raw);
		if (cs_decode_entry_bytes(dec, i, &raw) != 0)
			abort();
	}
	return 0;
}
