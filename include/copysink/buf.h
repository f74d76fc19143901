/*
 * buf.h - growable byte buffer with big-endian writers
 *
 * The batch keeps every encoded row in a few of these buffers; they grow by doubling and are
 * reset (not freed) after each commit, so the hot path does no per-row allocation.
 *
 * The writers are inline: a row's encoding makes dozens of them, nearly all of a few bytes into
 * room already there (bench/results/cpu_profile.md measures them). Only growing calls out.
 */
#ifndef COPYSINK_BUF_H
#define COPYSINK_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CS_MUSTCHECK __attribute__((warn_unused_result))

typedef struct cs_buf {
	char *data;  /* owned; NULL until the first reserve */
	size_t len;  /* bytes in use */
	size_t cap;  /* bytes allocated */
} cs_buf_t;

/* Initialise an empty buffer (no allocation). */
void cs_buf_init(cs_buf_t *buf);

/* Free the storage; the buffer is empty and reusable afterwards. NULL is a no-op. */
void cs_buf_cleanup(cs_buf_t *buf);

/* Forget the contents but keep the storage for reuse. */
static inline void cs_buf_reset(cs_buf_t *buf) { buf->len = 0; }

/*
 * Grow the storage to hold at least `extra` more bytes (cs_buf_reserve's slow path).
 * @returns 0 on success, -1 when memory could not be allocated (the buffer is unchanged).
 */
CS_MUSTCHECK int cs_buf_grow(cs_buf_t *buf, size_t extra);

/*
 * Make room for at least `extra` more bytes.
 * @returns 0 on success, -1 when memory could not be allocated (the buffer is unchanged).
 */
CS_MUSTCHECK static inline int cs_buf_reserve(cs_buf_t *buf, size_t extra)
{
	return extra <= buf->cap - buf->len ? 0 : cs_buf_grow(buf, extra);
}

/* Append bytes / big-endian integers. @returns 0, or -1 when out of memory. */
CS_MUSTCHECK static inline int cs_buf_append(cs_buf_t *buf, const void *data, size_t len)
{
	if (cs_buf_reserve(buf, len) != 0)
		return -1;
	if (len > 0)
		memcpy(buf->data + buf->len, data, len);
	buf->len += len;
	return 0;
}

CS_MUSTCHECK static inline int cs_buf_put_u16(cs_buf_t *buf, uint16_t v)
{
	unsigned char *b;

	if (cs_buf_reserve(buf, 2) != 0)
		return -1;
	b = (unsigned char *)buf->data + buf->len;
	b[0] = (unsigned char)(v >> 8), b[1] = (unsigned char)v;
	buf->len += 2;
	return 0;
}

CS_MUSTCHECK static inline int cs_buf_put_u32(cs_buf_t *buf, uint32_t v)
{
	unsigned char *b;

	if (cs_buf_reserve(buf, 4) != 0)
		return -1;
	b = (unsigned char *)buf->data + buf->len;
	b[0] = (unsigned char)(v >> 24), b[1] = (unsigned char)(v >> 16);
	b[2] = (unsigned char)(v >> 8), b[3] = (unsigned char)v;
	buf->len += 4;
	return 0;
}

CS_MUSTCHECK static inline int cs_buf_put_u64(cs_buf_t *buf, uint64_t v)
{
	unsigned char *b;

	if (cs_buf_reserve(buf, 8) != 0)
		return -1;
	b = (unsigned char *)buf->data + buf->len;
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (56 - 8 * i));
	buf->len += 8;
	return 0;
}

/* Overwrite a big-endian u32 at `pos` (used to patch a length written before the data). */
void cs_buf_patch_u32(cs_buf_t *buf, size_t pos, uint32_t v);

#endif /* COPYSINK_BUF_H */
