/*
 * buf.c - growable byte buffer with big-endian writers (the writers are inline in buf.h)
 */
#define _GNU_SOURCE /* mremap */
#include "copysink/buf.h"

#include <stdlib.h>
#include <string.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CS_BUF_ASAN 1
#endif
#endif
#if defined(__linux__) && !defined(__SANITIZE_ADDRESS__) && !defined(CS_BUF_ASAN)
#include <sys/mman.h>
/*
 * A buffer that grows past CS_BUF_MAP_MIN gets its own mapping, grown with mremap: no copy, no
 * freed block left behind, and only the pages written are resident. Through malloc, the
 * batches' buffers grew in glibc's main heap (its mmap threshold rises to the largest block
 * librdkafka frees, a fetch response of up to fetch.max.bytes), each doubling leaving the
 * block before it free but resident: the heap held 19-24 MB in 20 of 21 of the benchmark's
 * backlog runs, 4-5 MB with the mappings (the next run, same command:
 * bench/results/memory/README.md). The
 * sanitizer build keeps malloc, so that ASan sees every access.
 */
#define CS_BUF_MAP_MIN ((size_t)1 << 20)
#define CS_BUF_MAPPED 1
#else
#define CS_BUF_MAPPED 0
#endif

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
#if CS_BUF_MAPPED
	if (buf->cap >= CS_BUF_MAP_MIN) {
		munmap(buf->data, buf->cap);
		cs_buf_init(buf);
		return;
	}
#endif
	free(buf->data);
	cs_buf_init(buf);
}

#if CS_BUF_MAPPED
/* Move or grow the storage into a mapping of `cap` bytes (a multiple of CS_BUF_MAP_MIN).
 * @returns the storage, or NULL (the buffer unchanged). */
static char *grow_mapped(cs_buf_t *buf, size_t cap)
{
	void *p;

	if (buf->cap >= CS_BUF_MAP_MIN) {
		p = mremap(buf->data, buf->cap, cap, MREMAP_MAYMOVE);
		return p == MAP_FAILED ? NULL : p;
	}
	p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (buf->len > 0)
		memcpy(p, buf->data, buf->len);
	free(buf->data);
	return p;
}
#endif

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
#if CS_BUF_MAPPED
	if (cap >= CS_BUF_MAP_MIN) {
		cap = (cap + CS_BUF_MAP_MIN - 1) & ~(CS_BUF_MAP_MIN - 1);
		if (cap < need || (p = grow_mapped(buf, cap)) == NULL)
			return -1;
		buf->data = p;
		buf->cap = cap;
		return 0;
	}
#endif
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
