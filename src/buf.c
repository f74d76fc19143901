/*
 * buf.c - growable byte buffer with big-endian writers (the writers are inline in buf.h)
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
int cs_buf_grow(cs_buf_t *buf, size_t extra)
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

/* Patch a big-endian 32-bit integer in place. */
void cs_buf_patch_u32(cs_buf_t *buf, size_t pos, uint32_t v)
{
	unsigned char *b = (unsigned char *)buf->data + pos;
	b[0] = (unsigned char)(v >> 24);
	b[1] = (unsigned char)(v >> 16);
	b[2] = (unsigned char)(v >> 8);
	b[3] = (unsigned char)v;
}
