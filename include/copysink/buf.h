/*
 * buf.h - growable byte buffer with big-endian writers
 *
 * The batch keeps every encoded row in a few of these buffers; they grow by doubling and are
 * reset (not freed) after each commit, so the hot path does no per-row allocation.
 */
#ifndef COPYSINK_BUF_H
#define COPYSINK_BUF_H

#include <stddef.h>
#include <stdint.h>

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
 * Make room for at least `extra` more bytes.
 * @returns 0 on success, -1 when memory could not be allocated (the buffer is unchanged).
 */
CS_MUSTCHECK int cs_buf_reserve(cs_buf_t *buf, size_t extra);

/* Append bytes / big-endian integers. @returns 0, or -1 when out of memory. */
CS_MUSTCHECK int cs_buf_append(cs_buf_t *buf, const void *data, size_t len);
CS_MUSTCHECK int cs_buf_put_u16(cs_buf_t *buf, uint16_t v);
CS_MUSTCHECK int cs_buf_put_u32(cs_buf_t *buf, uint32_t v);
CS_MUSTCHECK int cs_buf_put_u64(cs_buf_t *buf, uint64_t v);

/* Overwrite a big-endian u32 at `pos` (used to patch a length written before the data). */
void cs_buf_patch_u32(cs_buf_t *buf, size_t pos, uint32_t v);

#endif /* COPYSINK_BUF_H */
