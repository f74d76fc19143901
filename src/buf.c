/*
 * buf.c - growable byte buffer with big-endian writers
 */
#include "copysink/buf.h"

#include <stdlib.h>
#include <string.h>

/* Initialise an empty buffer. */
void cs_buf_init(cs_buf_t *buf)
{
	buf->data = NULL;
	buf->len = 0;
	buf->cap = 0;
}

/* Release the storage. */
void cs_buf_cleanup(cs_buf_t *buf)
{
	if (buf == NULL)
		return;
	free(buf->data);
	cs_buf_init(buf);
}

/* Grow geometrically so that appends are amortised O(1). */
int cs_buf_reserve(cs_buf_t *buf, size_t extra)
{
	size_t need, cap;
	char *p;

	if (extra > SIZE_MAX - buf->len)
		return -1;
	need = buf->len + extra;
	if (need <= buf->cap)
		return 0;
	cap = buf->cap ? buf->cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	p = realloc(buf->data, cap);
	if (p == NULL)
		return -1;
	buf->data = p;
	buf->cap = cap;
	return 0;
}

/* Append raw bytes. */
int cs_buf_append(cs_buf_t *buf, const void *data, size_t len)
{
	if (cs_buf_reserve(buf, len) != 0)
		return -1;
	if (len > 0)
		memcpy(buf->data + buf->len, data, len);
	buf->len += len;
	return 0;
}

/* Append a big-endian 16-bit integer. */
int cs_buf_put_u16(cs_buf_t *buf, uint16_t v)
{
	unsigned char b[2] = {(unsigned char)(v >> 8), (unsigned char)v};
	return cs_buf_append(buf, b, sizeof(b));
}

/* Append a big-endian 32-bit integer. */
int cs_buf_put_u32(cs_buf_t *buf, uint32_t v)
{
	unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
			      (unsigned char)(v >> 8), (unsigned char)v};
	return cs_buf_append(buf, b, sizeof(b));
}

/* Append a big-endian 64-bit integer. */
int cs_buf_put_u64(cs_buf_t *buf, uint64_t v)
{
	if (cs_buf_put_u32(buf, (uint32_t)(v >> 32)) != 0)
		return -1;
	return cs_buf_put_u32(buf, (uint32_t)v);
}

/* Patch a big-endian 32-bit integer in place. */
void cs_buf_patch_u32(cs_buf_t *buf, size_t pos, uint32_t v)
{
	unsigned char *b = (unsigned char *)buf->data + pos;
	b[0] = (unsigned char)(v >> 24);
	b[1] = (unsigned char)(v >> 16);
	b[2] = (unsigned char)(v >> 8);
	b[3] = (unsigned char)v;
}
