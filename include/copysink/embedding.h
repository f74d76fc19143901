/*
 * embedding.h - embedding columns: their SQL types and their binary COPY forms
 *
 * An embedding column is stored as pgvector's vector(dim) (float32), halfvec(dim) (IEEE 754
 * half precision), sparsevec(dim) (the non-zero values and their indices) or as real[]. This
 * module spells those types (column lists, DDL, messages) and encodes an entry's embedding
 * field into the binary COPY form of the column's type: the bytes pgvector's *_recv functions
 * read (vector.c, halfvec.c, sparsevec.c) or array_recv's float4[].
 *
 * Input forms (docs/FORMAT.md "Embeddings"):
 *   - an array of exactly dim msgpack numbers, or a bin of 4*dim bytes of little-endian
 *     float32 (every type);
 *   - halfvec also takes a bin of 2*dim bytes of little-endian half precision, stored as is;
 *   - sparsevec also takes a map {"indices": [int, ...], "values": [number, ...]} of 0-based
 *     indices below dim (any order) and their values; dense input is stored without its zeros.
 *
 * Numbers are rounded to float32 first (to nearest even), as the vector path and pgvector's
 * own input do; halfvec then rounds that float32 to half, to nearest even. NaN and infinities
 * are `not_finite`; a finite value beyond half's range (|x| >= 65520 after rounding) is
 * `out_of_range`.
 *
 * Pure functions of their arguments: callable from any thread.
 */
#ifndef COPYSINK_EMBEDDING_H
#define COPYSINK_EMBEDDING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "copysink/buf.h"
#include "copysink/decode.h"
#include "copysink/tablespec.h"

struct msgpack_object;

#define CS_EMBEDDING_MAX_DIM 16000      /* vector and halfvec (pgvector's limit), and real[] */
#define CS_SPARSEVEC_MAX_DIM 1000000000 /* pgvector's sparsevec limit */
#define CS_SPARSEVEC_MAX_NNZ 16000      /* non-zero values a sparsevec holds */

/* The configuration spelling of a type: "auto", "vector", "halfvec", "sparsevec", "real[]".
 * Never NULL. */
const char *cs_embedding_type_name(cs_embtype_t type);

/* The type named `name` as cs_embedding_type_name() spells it (case-insensitive).
 * @returns 0 and sets *type, or -1 when no type has that name. */
int cs_embedding_type_parse(const char *name, cs_embtype_t *type);

/*
 * Read a column list's type spelling `sql` as an embedding type: vector(N), halfvec(N),
 * sparsevec(N) (a blank before the parenthesis is allowed) set *dim to N; halfvec, sparsevec
 * and real[] (or float4[]) without a dimension set *dim to 0 (the table's dim). `embedding`
 * and `vector` alone are not explicit types (the table's embedding_type applies): 1.
 * @returns 0 with *type and *dim set, 1 when `sql` is no explicit embedding type (try the
 *          other types), or -1 with errstr for a bad dimension, e.g. "vector(0)".
 */
int cs_embedding_parse_sql(const char *sql, cs_embtype_t *type, int *dim, char *errstr,
			   size_t errstr_size);

/* Write the DDL spelling of a type of dimension `dim` into out: "vector(384)", "halfvec(384)",
 * "sparsevec(30522)", "real[]" (also for CS_EMB_AUTO, whose type the caller has not chosen). */
void cs_embedding_sql(cs_embtype_t type, int dim, char *out, size_t size);

/* True for the types of the pgvector extension (vector, halfvec, sparsevec). */
bool cs_embedding_needs_pgvector(cs_embtype_t type);

/* The oldest pgvector release that has the type, as "major.minor.patch": "0.7.0" for halfvec
 * and sparsevec, NULL when any release will do. */
const char *cs_embedding_min_pgvector(cs_embtype_t type);

/* The type a column of catalog type name `typname` ("vector", "halfvec", "sparsevec",
 * "_float4") holds. @returns 0 and sets *type and *enc, or -1 for any other type. */
int cs_embedding_type_of(const char *typname, cs_embtype_t *type, cs_colenc_t *enc);

/*
 * Convert a finite float32 to IEEE 754 half precision, rounding to nearest even (subnormal
 * halves included; magnitudes below 2^-25 become a zero of the same sign).
 * @returns 0 and sets *h, or -1 when `f` is infinite, NaN or rounds beyond half's largest
 *          finite value (65504), *h untouched.
 */
int cs_embedding_f32_to_half(float f, uint16_t *h);

/*
 * Append the embedding field `o` (present and not nil) of column `col` to `out` as one binary
 * COPY field (its 4-byte length, then the bytes): pgvector's vector, halfvec or sparsevec
 * binary form, or a float4[] array, by col->enc (from the catalog) or, while that is
 * CS_ENC_DEFAULT, by col->emb_type. `dim` is the table's dimension. On rejection out->len is
 * as it was (the room reserved may have grown).
 * @returns CS_REASON_OK; a data reason (wrong_type, embedding_dim, not_finite,
 *          out_of_range) with errstr naming the field, e.g.
 *          "field \"embedding\" value 3 is out of range for halfvec: 70000"; or
 *          CS_REASON__COUNT when out of memory.
 */
CS_MUSTCHECK cs_reason_t cs_embedding_put(const cs_column_t *col, int dim,
					  const struct msgpack_object *o, cs_buf_t *out,
					  char *errstr, size_t errstr_size);

#endif /* COPYSINK_EMBEDDING_H */
