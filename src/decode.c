/*
 * decode.c - msgpack entries to binary COPY tuples
 *
 * cs_decode_open() reads the message once with a bounded, non-recursive pre-scan: every declared
 * length is checked against the bytes that remain (a five-byte message declaring four billion
 * elements is refused without an allocation), the value must end where the message ends, and
 * the top level must be a map or an array of at most max_entries elements. Those are the only
 * whole-message rejections. Nesting is not limited there: limits that concern one entry (depth,
 * field size, types) are checked per entry by cs_decode_entry(), so one bad element of an array
 * is dead-lettered alone and its siblings are stored.
 *
 * cs_decode_entry() finds its element's extent in the message (a cursor makes the usual
 * sequential walk O(1) per entry), checks its nesting against the limit (the entry map is level
 * 1, whether it is the whole message or an array element), and only then lets msgpack-c parse
 * that element alone into a zone that is cleared per entry, so msgpack-c's own 32-level
 * container stack is never exceeded and memory is bounded by the largest entry, not the whole
 * message. The zone keeps its first chunk, so entries of usual size allocate nothing once warm.
 *
 * Entries are then encoded straight into the batch's buffers in PostgreSQL's binary COPY format;
 * on rejection both buffers are truncated back.
 */
#include "copysink/decode.h"

#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "copysink/embedding.h"
#include "copysink/numtext.h"
#include "copysink/pgbinary.h"
#include "copysink/unpack.h"

#define ZONE_CHUNK (64 * 1024)
#define MSGPACK_MAX_DEPTH 32 /* msgpack-c's container stack (MSGPACK_EMBED_STACK_SIZE) */
#define TEXTOID 25

struct cs_decoder {
	cs_decode_limits_t limits;
	msgpack_zone zone;
	msgpack_object root;        /* the tombstone key last unpacked by cs_decode_key() */
	const unsigned char *msg;   /* the message last opened (the caller's bytes, not owned) */
	size_t msg_len;
	size_t first;               /* offset of entry 0 (0 for a message that is one map) */
	int nentries;
	int next;                   /* the cursor: entry `next` starts at offset next_at */
	size_t next_at;
	int last;                   /* the entry last located, or -1; at last_at, last_len bytes */
	size_t last_at, last_len;
	bool last_depth_ok;         /* entry `last` nests within max_depth (seen while locating) */
	msgpack_object entry;       /* a message that is one map: its objects, built at open */
	bool built;                 /* `entry` holds entry 0 */
	uint64_t unknown_fields;
};

static const char *const reason_names[CS_REASON__COUNT] = {
	"ok",           "malformed",   "not_a_map",    "missing_field", "wrong_type",
	"embedding_dim", "not_finite", "invalid_utf8", "nul_byte",      "out_of_range",
	"too_deep",     "too_large",   "db_rejected",  "no_table",      "invalid_format",
};

const char *cs_reason_name(cs_reason_t reason)
{
	if ((int)reason < 0 || reason >= CS_REASON__COUNT)
		return "unknown";
	return reason_names[reason];
}

void cs_decode_limits_default(cs_decode_limits_t *limits)
{
	limits->max_message_bytes = 16 * 1024 * 1024;
	limits->max_entries = 100000;
	limits->max_depth = MSGPACK_MAX_DEPTH;
	limits->max_field_bytes = 1024 * 1024;
}

cs_decoder_t *cs_decoder_new(const cs_decode_limits_t *limits)
{
	cs_decoder_t *dec = calloc(1, sizeof(*dec));

	if (dec == NULL)
		return NULL;
	dec->limits = *limits;
	if (dec->limits.max_depth > MSGPACK_MAX_DEPTH || dec->limits.max_depth < 2)
		dec->limits.max_depth = MSGPACK_MAX_DEPTH;
	dec->last = -1;
	if (!msgpack_zone_init(&dec->zone, ZONE_CHUNK)) {
		free(dec);
		return NULL;
	}
	return dec;
}

void cs_decoder_destroy(cs_decoder_t *dec)
{
	if (dec == NULL)
		return;
	msgpack_zone_destroy(&dec->zone);
	free(dec);
}

uint64_t cs_decoder_unknown_fields(const cs_decoder_t *dec)
{
	return dec->unknown_fields;
}

/* ---------------------------------------------------------------- pre-scan */

typedef struct scan {
	const unsigned char *p;
	size_t len, pos;
	int max_depth;
	cs_reason_t reason;
} scan_t;

/* Read a big-endian unsigned integer of n bytes at the scan position; false if truncated. */
static bool scan_uint(scan_t *s, int n, uint64_t *v)
{
	if (s->len - s->pos < (size_t)n)
		return false;
	*v = 0;
	for (int i = 0; i < n; i++)
		*v = *v << 8 | s->p[s->pos++];
	return true;
}

/* Skip n payload bytes; false if fewer remain. */
static bool scan_skip(scan_t *s, uint64_t n)
{
	if (s->len - s->pos < n)
		return false;
	s->pos += (size_t)n;
	return true;
}

/* Read the head of one value and skip a scalar's payload. For an array or a map, *container is
 * set and *items is the number of values inside (twice the pairs of a map), which follow.
 * @returns false if the value is truncated or starts with the never-used byte 0xc1. */
static bool scan_head(scan_t *s, uint64_t *items, bool *container)
{
	unsigned char b;
	uint64_t n;

	*items = 0;
	*container = false;
	if (s->pos >= s->len)
		return false;
	b = s->p[s->pos++];
	if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
		return true;
	if (b <= 0x9f) {
		*container = true;
		*items = b <= 0x8f ? 2 * (uint64_t)(b & 0x0f) : b & 0x0f;
		return true;
	}
	if (b <= 0xbf)
		return scan_skip(s, b & 0x1f);
	switch (b) {
	case 0xc4: case 0xd9: return scan_uint(s, 1, &n) && scan_skip(s, n);
	case 0xc5: case 0xda: return scan_uint(s, 2, &n) && scan_skip(s, n);
	case 0xc6: case 0xdb: return scan_uint(s, 4, &n) && scan_skip(s, n);
	case 0xc7: return scan_uint(s, 1, &n) && scan_skip(s, n + 1);
	case 0xc8: return scan_uint(s, 2, &n) && scan_skip(s, n + 1);
	case 0xc9: return scan_uint(s, 4, &n) && scan_skip(s, n + 1);
	case 0xca: return scan_skip(s, 4);
	case 0xcb: return scan_skip(s, 8);
	case 0xcc: case 0xd0: return scan_skip(s, 1);
	case 0xcd: case 0xd1: return scan_skip(s, 2);
	case 0xce: case 0xd2: return scan_skip(s, 4);
	case 0xcf: case 0xd3: return scan_skip(s, 8);
	case 0xd4: return scan_skip(s, 2);
	case 0xd5: return scan_skip(s, 3);
	case 0xd6: return scan_skip(s, 5);
	case 0xd7: return scan_skip(s, 9);
	case 0xd8: return scan_skip(s, 17);
	case 0xdc: case 0xdd: case 0xde: case 0xdf:
		*container = true;
		if (!scan_uint(s, b & 1 ? 4 : 2, &n))
			return false;
		*items = b >= 0xde ? 2 * n : n;
		return true;
	default: /* 0xc1 is never used */
		return false;
	}
}

/* Skip one whole value of any depth without recursion: `pending` counts the values still to
 * read, a container adding its items. Every value takes at least one byte, so a pending count
 * above the bytes left cannot be honest (and pending never overflows). */
static bool scan_skip_value(scan_t *s)
{
	uint64_t pending = 1, items;
	bool container;

	while (pending > 0) {
		if (!scan_head(s, &items, &container))
			return false;
		pending = pending - 1 + items;
		if (pending > s->len - s->pos)
			return false;
	}
	return true;
}

/* Scan one value at level `depth` (the level of the container holding it); an array or a map
 * opens level depth + 1, which may not exceed the limit (s->reason is then TOO_DEEP). The
 * recursion is bounded by max_depth. */
static bool scan_value(scan_t *s, int depth)
{
	uint64_t items;
	bool container;

	if (!scan_head(s, &items, &container))
		return false;
	if (!container)
		return true;
	if (depth + 1 > s->max_depth) {
		s->reason = CS_REASON_TOO_DEEP;
		return false;
	}
	if (items > s->len - s->pos)
		return false;
	for (uint64_t i = 0; i < items; i++)
		if (!scan_value(s, depth + 1))
			return false;
	return true;
}

/* Name of the msgpack type whose value starts with head byte b, as type_name() spells it. */
static const char *head_type_name(unsigned char b)
{
	if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3))
		return "int";
	if (b <= 0x8f || b == 0xde || b == 0xdf)
		return "map";
	if (b <= 0x9f || b == 0xdc || b == 0xdd)
		return "array";
	if (b <= 0xbf || (b >= 0xd9 && b <= 0xdb))
		return "str";
	if (b == 0xc0)
		return "nil";
	if (b == 0xc2 || b == 0xc3)
		return "bool";
	if (b >= 0xc4 && b <= 0xc6)
		return "bin";
	if (b == 0xca || b == 0xcb)
		return "float";
	return "ext"; /* 0xc7-0xc9, 0xd4-0xd8 (0xc1 never gets here: the pre-scan refuses it) */
}

/* ---------------------------------------------------------------- open */

/* Forget the message last opened. */
static void forget_message(cs_decoder_t *dec)
{
	dec->msg = NULL;
	dec->msg_len = dec->first = dec->next_at = 0;
	dec->nentries = dec->next = 0;
	dec->last = -1;
	dec->last_depth_ok = false;
	dec->built = false;
}

/* The checks every message and tombstone key passes: not empty, within max_message_bytes, one
 * complete msgpack value and nothing after it. @returns CS_REASON_OK or the reason, with
 * errstr. */
static cs_reason_t check_message(const cs_decoder_t *dec, const void *value, size_t len,
				 char *errstr, size_t errstr_size)
{
	scan_t s = {.p = value, .len = len};

	if (value == NULL || len == 0)
		return cs_decode_reject(CS_REASON_MALFORMED, errstr, errstr_size, "message is empty");
	if (len > dec->limits.max_message_bytes)
		return cs_decode_reject(CS_REASON_TOO_LARGE, errstr, errstr_size,
			      "message of %zu bytes is larger than the limit of %zu bytes", len,
			      dec->limits.max_message_bytes);
	if (!scan_skip_value(&s))
		return cs_decode_reject(CS_REASON_MALFORMED, errstr, errstr_size,
			      "message is not valid msgpack: truncated or invalid at byte %zu",
			      s.pos);
	if (s.pos != len)
		return cs_decode_reject(CS_REASON_MALFORMED, errstr, errstr_size,
			      "message is not valid msgpack: %zu trailing bytes after the value",
			      len - s.pos);
	return CS_REASON_OK;
}

/* A message that is one map, complete, nothing after it, within the size and depth limits:
 * the usual message, checked, located, depth-checked and unpacked in one pass by cs_unpack(),
 * which refuses exactly what the pre-scan (scan_value from level 0) refuses (four passes
 * otherwise: bench/results/cpu_profile.md). False for anything else, which the full checks
 * then judge. */
static bool open_one_map(cs_decoder_t *dec, const unsigned char *p, size_t len)
{
	if (p == NULL || len == 0 || len > dec->limits.max_message_bytes ||
	    !((p[0] >= 0x80 && p[0] <= 0x8f) || p[0] == 0xde || p[0] == 0xdf))
		return false;
	/* the previous entry's objects are no longer needed: its tuple is in the buffers */
	msgpack_zone_clear(&dec->zone);
	if (cs_unpack(p, len, dec->limits.max_depth, &dec->zone, &dec->entry) != 0)
		return false;
	dec->msg = p;
	dec->msg_len = len;
	dec->nentries = 1;
	dec->last = 0;
	dec->last_at = 0;
	dec->last_len = len;
	dec->last_depth_ok = true;
	dec->next = 1;
	dec->next_at = len;
	dec->built = true;
	return true;
}

int cs_decode_open(cs_decoder_t *dec, const void *value, size_t len, cs_reason_t *reason,
		   char *errstr, size_t errstr_size)
{
	scan_t s = {.p = value, .len = len};
	unsigned char b;
	uint64_t items;
	bool container;

	forget_message(dec);
	if (open_one_map(dec, value, len)) {
		*reason = CS_REASON_OK;
		return 1;
	}
	*reason = check_message(dec, value, len, errstr, errstr_size);
	if (*reason != CS_REASON_OK)
		return -1;
	b = s.p[0];
	if (!scan_head(&s, &items, &container) || !container) {
		*reason = cs_decode_reject(CS_REASON_NOT_A_MAP, errstr, errstr_size,
				 "message is neither a map nor an array of maps");
		return -1;
	}
	dec->msg = value;
	dec->msg_len = len;
	if ((b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf) {
		dec->nentries = 1; /* the message is the entry: its limits apply to it alone */
		return 1;
	}
	if (items == 0) {
		forget_message(dec);
		*reason = cs_decode_reject(CS_REASON_MALFORMED, errstr, errstr_size,
				 "message is an empty array");
		return -1;
	}
	if (items > (uint64_t)dec->limits.max_entries) {
		forget_message(dec);
		*reason = cs_decode_reject(CS_REASON_TOO_LARGE, errstr, errstr_size,
				 "message holds %llu entries, more than the limit of %d",
				 (unsigned long long)items, dec->limits.max_entries);
		return -1;
	}
	dec->first = dec->next_at = s.pos;
	dec->nentries = (int)items;
	return dec->nentries;
}

/* Find the extent of entry i (0 <= i < nentries) of the message last opened. Sequential calls,
 * and a repeated call for the same entry, cost O(1); going back rescans from entry 0.
 * @returns false only if the bytes are not what cs_decode_open() checked (a bug). */
static bool locate_entry(cs_decoder_t *dec, int i, size_t *at, size_t *len)
{
	if (i != dec->last) {
		if (i < dec->next) {
			dec->next = 0;
			dec->next_at = dec->first;
		}
		while (dec->next <= i) {
			scan_t s = {.p = dec->msg, .len = dec->msg_len, .pos = dec->next_at,
				    .max_depth = dec->limits.max_depth};
			/* the depth-limited scan checks the entry's nesting on the way (the entry is
			 * level 1, as in check_depth); one too deep is scanned again without */
			dec->last_depth_ok = scan_value(&s, 0);
			if (!dec->last_depth_ok) {
				s.pos = dec->next_at;
				if (!scan_skip_value(&s))
					return false;
			}
			dec->last = dec->next++;
			dec->last_at = dec->next_at;
			dec->last_len = s.pos - dec->next_at;
			dec->next_at = s.pos;
		}
	}
	*at = dec->last_at;
	*len = dec->last_len;
	return true;
}

/* ---------------------------------------------------------------- text */

/* True when the 8 bytes at p are ASCII and none is NUL: no high bit set, and none borrows when
 * 1 is taken from every byte (only a zero byte does, and the borrow sets its high bit). */
static bool ascii8(const unsigned char *p)
{
	uint64_t x;

	memcpy(&x, p, sizeof(x));
	return ((x | (x - 0x0101010101010101ULL)) & 0x8080808080808080ULL) == 0;
}

/* Check UTF-8 (no overlongs, no surrogates, at most U+10FFFF) and the absence of NUL. ASCII
 * goes eight bytes at a time (a byte at a time took 6 instructions a byte under callgrind). */
static cs_reason_t check_text(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;

	while (p < end) {
		unsigned c = *p;
		size_t len;
		unsigned min, cp;

		if (end - p >= 8 && ascii8(p)) {
			p += 8;
			continue;
		}
		if (c < 0x80) {
			if (c == 0)
				return CS_REASON_NUL_BYTE;
			p++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			len = 2, min = 0x80, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			len = 3, min = 0x800, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			len = 4, min = 0x10000, cp = c & 0x07;
		else
			return CS_REASON_INVALID_UTF8;
		if ((size_t)(end - p) < len)
			return CS_REASON_INVALID_UTF8;
		for (size_t i = 1; i < len; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return CS_REASON_INVALID_UTF8;
			cp = cp << 6 | (p[i] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return CS_REASON_INVALID_UTF8;
		p += len;
	}
	return CS_REASON_OK;
}

cs_reason_t cs_decode_reject(cs_reason_t reason, char *errstr, size_t errstr_size,
			     const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errstr, errstr_size, fmt, ap);
	va_end(ap);
	return reason;
}

/* Name of a msgpack type, for messages. */
static const char *type_name(msgpack_object_type t)
{
	switch (t) {
	case MSGPACK_OBJECT_NIL: return "nil";
	case MSGPACK_OBJECT_BOOLEAN: return "bool";
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "int";
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return "float";
	case MSGPACK_OBJECT_STR: return "str";
	case MSGPACK_OBJECT_ARRAY: return "array";
	case MSGPACK_OBJECT_MAP: return "map";
	case MSGPACK_OBJECT_BIN: return "bin";
	case MSGPACK_OBJECT_EXT: return "ext";
	}
	return "unknown";
}

const char *cs_decode_type_name(const struct msgpack_object *o)
{
	return type_name(o->type);
}

/* ---------------------------------------------------------------- JSON */

typedef struct json {
	cs_buf_t *out;
	size_t limit;  /* bytes the field may take */
	size_t start;
	int depth, max_depth;
	cs_reason_t reason;
	bool oom;
} json_t;

/* Append bytes to the JSON output, within the field's size limit. Inlined, so that a call with
 * a constant length (punctuation, null, true) is a store, not a call to memcpy. */
static inline __attribute__((always_inline)) bool json_put(json_t *j, const char *s, size_t n)
{
	if (j->out->len - j->start + n > j->limit) {
		j->reason = CS_REASON_TOO_LARGE;
		return false;
	}
	if (cs_buf_append(j->out, s, n) != 0) {
		j->oom = true;
		return false;
	}
	return true;
}

/* True when s[0..n) is printable ASCII without a quote or a backslash: valid UTF-8 without NUL
 * that JSON takes as it is, as most keys and values are. */
static bool json_plain(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\')
			return false;
	}
	return true;
}

/* A JSON string: valid UTF-8 without NUL (jsonb cannot hold \u0000), escaped. A plain one is
 * checked and copied in one pass (the same puts as the escaping loop makes for it). */
static bool json_string(json_t *j, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t run = 0;

	if (json_plain(s, n)) {
		j->reason = CS_REASON_OK;
		return json_put(j, "\"", 1) && json_put(j, s, n) && json_put(j, "\"", 1);
	}
	j->reason = check_text(s, n);
	if (j->reason != CS_REASON_OK || !json_put(j, "\"", 1))
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[6] = {'\\', 0, 0, 0, 0, 0};
		size_t elen = 2;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		if (!json_put(j, s + run, i - run))
			return false;
		run = i + 1;
		switch (c) {
		case '"': esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		default:
			esc[1] = 'u', esc[2] = '0', esc[3] = '0', esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
			elen = 6;
		}
		if (!json_put(j, esc, elen))
			return false;
	}
	return json_put(j, s + run, n - run) && json_put(j, "\"", 1);
}

/* A finite double, in the shortest form that reads back exactly. */
static bool json_number(json_t *j, double d)
{
	char num[CS_NUMTEXT_DOUBLE_SIZE];

	if (!isfinite(d)) {
		j->reason = CS_REASON_NOT_FINITE;
		return false;
	}
	return json_put(j, num, cs_numtext_double(d, num));
}

static bool json_value(json_t *j, const msgpack_object *o);

/* A map as a JSON object (keys must be strings). */
static bool json_map(json_t *j, const msgpack_object_map *m)
{
	if (!json_put(j, "{", 1))
		return false;
	for (uint32_t i = 0; i < m->size; i++) {
		const msgpack_object_kv *kv = &m->ptr[i];
		if (kv->key.type != MSGPACK_OBJECT_STR) {
			j->reason = CS_REASON_WRONG_TYPE;
			return false;
		}
		if ((i > 0 && !json_put(j, ",", 1)) ||
		    !json_string(j, kv->key.via.str.ptr, kv->key.via.str.size) ||
		    !json_put(j, ":", 1) || !json_value(j, &kv->val))
			return false;
	}
	return json_put(j, "}", 1);
}

/* Any msgpack value except bin and ext as JSON. */
static bool json_value(json_t *j, const msgpack_object *o)
{
	char num[CS_NUMTEXT_INT_SIZE], *p;
	bool ok;

	switch (o->type) {
	case MSGPACK_OBJECT_NIL: return json_put(j, "null", 4);
	case MSGPACK_OBJECT_BOOLEAN:
		return o->via.boolean ? json_put(j, "true", 4) : json_put(j, "false", 5);
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		p = cs_numtext_u64(o->via.u64, num + sizeof(num));
		return json_put(j, p, (size_t)(num + sizeof(num) - p));
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		p = cs_numtext_i64(o->via.i64, num + sizeof(num));
		return json_put(j, p, (size_t)(num + sizeof(num) - p));
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return json_number(j, o->via.f64);
	case MSGPACK_OBJECT_STR: return json_string(j, o->via.str.ptr, o->via.str.size);
	case MSGPACK_OBJECT_ARRAY:
	case MSGPACK_OBJECT_MAP:
		if (++j->depth > j->max_depth) {
			j->reason = CS_REASON_TOO_DEEP;
			return false;
		}
		if (o->type == MSGPACK_OBJECT_MAP) {
			ok = json_map(j, &o->via.map);
		} else {
			ok = json_put(j, "[", 1);
			for (uint32_t i = 0; ok && i < o->via.array.size; i++)
				ok = (i == 0 || json_put(j, ",", 1)) &&
				     json_value(j, &o->via.array.ptr[i]);
			ok = ok && json_put(j, "]", 1);
		}
		j->depth--;
		return ok;
	default:
		j->reason = CS_REASON_WRONG_TYPE;
		return false;
	}
}

/* ---------------------------------------------------------------- columns */

#define OOM CS_REASON__COUNT

/* Append a big-endian float32. The buffer has room (reserved by the caller). */
static void put_f32(cs_buf_t *out, float f)
{
	uint32_t u;
	unsigned char *b = (unsigned char *)out->data + out->len;

	memcpy(&u, &f, sizeof(u));
	b[0] = (unsigned char)(u >> 24), b[1] = (unsigned char)(u >> 16);
	b[2] = (unsigned char)(u >> 8), b[3] = (unsigned char)u;
	out->len += 4;
}

/* Append a big-endian u32 into reserved room. */
static void put_u32_raw(cs_buf_t *out, uint32_t v)
{
	unsigned char *b = (unsigned char *)out->data + out->len;

	b[0] = (unsigned char)(v >> 24), b[1] = (unsigned char)(v >> 16);
	b[2] = (unsigned char)(v >> 8), b[3] = (unsigned char)v;
	out->len += 4;
}

/* An embedding as its column's type has it (embedding.h). */
static cs_reason_t put_embedding(const cs_column_t *col, int dim, const msgpack_object *o,
				 cs_buf_t *out, char *errstr, size_t size)
{
	return cs_embedding_put(col, dim, o, out, errstr, size);
}

/* An integer column of `bytes` bytes (2, 4, 8). */
static cs_reason_t put_int(const cs_column_t *col, int bytes, const msgpack_object *o,
			   cs_buf_t *out, char *errstr, size_t size)
{
	static const char *const names[] = {"", "", "smallint", "", "integer", "", "", "", "bigint"};
	int64_t min = bytes == 2 ? INT16_MIN : bytes == 4 ? INT32_MIN : INT64_MIN;
	int64_t max = bytes == 2 ? INT16_MAX : bytes == 4 ? INT32_MAX : INT64_MAX;
	int64_t v;
	int rc;

	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (o->via.u64 > (uint64_t)max)
			return cs_decode_reject(CS_REASON_OUT_OF_RANGE, errstr, size,
				      "field \"%s\" is out of range for %s: %llu", col->name,
				      names[bytes], (unsigned long long)o->via.u64);
		v = (int64_t)o->via.u64;
	} else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		if (o->via.i64 < min)
			return cs_decode_reject(CS_REASON_OUT_OF_RANGE, errstr, size,
				      "field \"%s\" is out of range for %s: %lld", col->name,
				      names[bytes], (long long)o->via.i64);
		v = o->via.i64;
	} else {
		return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size,
			      "field \"%s\" must be an integer, got %s", col->name,
			      type_name(o->type));
	}
	rc = cs_buf_put_u32(out, (uint32_t)bytes);
	if (rc == 0 && bytes == 2)
		rc = cs_buf_put_u16(out, (uint16_t)v);
	else if (rc == 0 && bytes == 4)
		rc = cs_buf_put_u32(out, (uint32_t)v);
	else if (rc == 0)
		rc = cs_buf_put_u64(out, (uint64_t)v);
	return rc == 0 ? CS_REASON_OK : OOM;
}

/* A float4 / float8 column from a msgpack float or integer. */
static cs_reason_t put_float(const cs_column_t *col, bool f8, const msgpack_object *o,
			     cs_buf_t *out, char *errstr, size_t size)
{
	double d;
	uint64_t u;

	if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
		d = o->via.f64;
	else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		d = (double)o->via.u64;
	else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		d = (double)o->via.i64;
	else
		return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size,
			      "field \"%s\" must be a number, got %s", col->name, type_name(o->type));
	if (!isfinite(d) || (!f8 && !isfinite((float)d)))
		return cs_decode_reject(CS_REASON_NOT_FINITE, errstr, size, "field \"%s\" is not finite%s",
			      col->name, f8 ? "" : " as a float32");
	if (!f8) {
		if (cs_buf_reserve(out, 8) != 0)
			return OOM;
		put_u32_raw(out, 4);
		put_f32(out, (float)d);
		return CS_REASON_OK;
	}
	memcpy(&u, &d, sizeof(u));
	return cs_buf_put_u32(out, 8) == 0 && cs_buf_put_u64(out, u) == 0 ? CS_REASON_OK : OOM;
}

/* A text column. */
static cs_reason_t put_text(const cs_column_t *col, const msgpack_object *o, cs_buf_t *out,
			    size_t limit, char *errstr, size_t size)
{
	cs_reason_t r;

	if (o->type != MSGPACK_OBJECT_STR)
		return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size,
			      "field \"%s\" must be a string, got %s", col->name, type_name(o->type));
	if (o->via.str.size > limit)
		return cs_decode_reject(CS_REASON_TOO_LARGE, errstr, size,
			      "field \"%s\" has %u bytes, more than the limit of %zu", col->name,
			      o->via.str.size, limit);
	r = check_text(o->via.str.ptr, o->via.str.size);
	if (r != CS_REASON_OK)
		return cs_decode_reject(r, errstr, size, "field \"%s\" %s", col->name,
			      r == CS_REASON_NUL_BYTE ? "contains a NUL byte" : "is not valid UTF-8");
	return cs_buf_put_u32(out, o->via.str.size) == 0 &&
			       cs_buf_append(out, o->via.str.ptr, o->via.str.size) == 0
		       ? CS_REASON_OK
		       : OOM;
}

/* A text[] column: a binary array of text (element OID from the catalog, text by default). */
static cs_reason_t put_text_array(const cs_column_t *col, const msgpack_object *o, cs_buf_t *out,
				  size_t limit, char *errstr, size_t size)
{
	size_t start = out->len;
	uint32_t n;

	if (o->type != MSGPACK_OBJECT_ARRAY)
		return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size,
			      "field \"%s\" must be an array of strings, got %s", col->name,
			      type_name(o->type));
	n = o->via.array.size;
	if (cs_buf_reserve(out, 24) != 0)
		return OOM;
	put_u32_raw(out, 0); /* length, patched below */
	put_u32_raw(out, n > 0 ? 1 : 0);
	put_u32_raw(out, 0);
	put_u32_raw(out, col->elem_oid ? col->elem_oid : TEXTOID);
	if (n > 0) {
		put_u32_raw(out, n);
		put_u32_raw(out, 1);
	}
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *e = &o->via.array.ptr[i];
		cs_reason_t r;
		if (e->type != MSGPACK_OBJECT_STR)
			return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size,
				      "field \"%s\" must be an array of strings, element %u is %s",
				      col->name, i, type_name(e->type));
		r = check_text(e->via.str.ptr, e->via.str.size);
		if (r != CS_REASON_OK)
			return cs_decode_reject(r, errstr, size, "field \"%s\" element %u %s", col->name, i,
				      r == CS_REASON_NUL_BYTE ? "contains a NUL byte"
							      : "is not valid UTF-8");
		if (cs_buf_put_u32(out, e->via.str.size) != 0 ||
		    cs_buf_append(out, e->via.str.ptr, e->via.str.size) != 0)
			return OOM;
		if (out->len - start > limit)
			return cs_decode_reject(CS_REASON_TOO_LARGE, errstr, size,
				      "field \"%s\" is larger than the limit of %zu bytes", col->name,
				      limit);
	}
	cs_buf_patch_u32(out, start, (uint32_t)(out->len - start - 4));
	return CS_REASON_OK;
}

/* A jsonb (version byte 1 + JSON text) or json column from any msgpack value but bin/ext: a
 * json spec column, or a jsonb one stored in a json column, has no version byte. */
static cs_reason_t put_json(const cs_decoder_t *dec, const cs_column_t *col, int depth,
			    const msgpack_object *o, cs_buf_t *out, char *errstr, size_t size)
{
	size_t start = out->len;
	json_t j = {.out = out, .limit = dec->limits.max_field_bytes, .depth = depth,
		    .max_depth = dec->limits.max_depth, .reason = CS_REASON_OK};
	static const char *const what[CS_REASON__COUNT] = {
		[CS_REASON_WRONG_TYPE] = "holds a bin, an ext or a non-string map key",
		[CS_REASON_NOT_FINITE] = "holds NaN or an infinity",
		[CS_REASON_INVALID_UTF8] = "holds a string that is not valid UTF-8",
		[CS_REASON_NUL_BYTE] = "holds a string with a NUL byte",
		[CS_REASON_TOO_DEEP] = "nests too deep",
		[CS_REASON_TOO_LARGE] = "is larger than the field size limit",
	};

	if (cs_buf_put_u32(out, 0) != 0)
		return OOM;
	j.start = out->len;
	if (col->type == CS_COL_JSONB && col->enc != CS_ENC_JSON && !json_put(&j, "\1", 1))
		return j.oom ? OOM : j.reason;
	if (!json_value(&j, o)) {
		if (j.oom)
			return OOM;
		return cs_decode_reject(j.reason, errstr, size, "field \"%s\" %s", col->name,
			      what[j.reason] ? what[j.reason] : "cannot be stored as JSON");
	}
	cs_buf_patch_u32(out, start, (uint32_t)(out->len - start - 4));
	return CS_REASON_OK;
}

/* Encode one column's value (present and not nil). */
static cs_reason_t put_column(const cs_decoder_t *dec, const cs_tablespec_t *spec,
			      const cs_column_t *col, const msgpack_object *o, cs_buf_t *out,
			      char *errstr, size_t size)
{
	switch (col->type) {
	case CS_COL_TEXT: return put_text(col, o, out, dec->limits.max_field_bytes, errstr, size);
	case CS_COL_INT2: return put_int(col, 2, o, out, errstr, size);
	case CS_COL_INT4: return put_int(col, 4, o, out, errstr, size);
	case CS_COL_INT8: return put_int(col, 8, o, out, errstr, size);
	case CS_COL_FLOAT4: return put_float(col, false, o, out, errstr, size);
	case CS_COL_FLOAT8: return put_float(col, true, o, out, errstr, size);
	case CS_COL_BOOL:
		if (o->type != MSGPACK_OBJECT_BOOLEAN)
			return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size,
				      "field \"%s\" must be a bool, got %s", col->name,
				      type_name(o->type));
		return cs_buf_put_u32(out, 1) == 0 &&
				       cs_buf_append(out, o->via.boolean ? "\1" : "\0", 1) == 0
			       ? CS_REASON_OK
			       : OOM;
	case CS_COL_JSONB: /* the entry map is level 1, as in check_depth() */
	case CS_COL_JSON:
		return put_json(dec, col, 1, o, out, errstr, size);
	case CS_COL_TEXT_ARRAY:
		return put_text_array(col, o, out, dec->limits.max_field_bytes, errstr, size);
	case CS_COL_EMBEDDING: return put_embedding(col, spec->dim, o, out, errstr, size);
	case CS_COL_UUID:
	case CS_COL_TIMESTAMPTZ:
	case CS_COL_DATE:
	case CS_COL_NUMERIC:
	case CS_COL_BYTEA:
	case CS_COL_FLOAT8_ARRAY:
	case CS_COL_INT4_ARRAY:
	case CS_COL_INT8_ARRAY:
		return cs_pgbinary_put(col, o, dec->limits.max_field_bytes, out, errstr, size);
	}
	return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size, "field \"%s\" has an unknown type",
		      col->name);
}

/* True when column `col` is named by the msgpack str `k`. */
static bool names(const cs_column_t *col, const msgpack_object *k)
{
	return strlen(col->name) == k->via.str.size &&
	       memcmp(col->name, k->via.str.ptr, k->via.str.size) == 0;
}

/* Find each column's value in the entry map (a repeated key: the last one counts). Producers
 * write the fields in one order, mostly the spec's: the column after the last one matched is
 * tried first, then all of them (names are unique, so the first match is the only one). */
static cs_reason_t match_fields(cs_decoder_t *dec, const cs_tablespec_t *spec,
				const msgpack_object_map *m, const msgpack_object **vals,
				char *errstr, size_t size)
{
	int guess = 0;

	for (uint32_t i = 0; i < m->size; i++) {
		const msgpack_object *k = &m->ptr[i].key;
		int c;

		if (k->type != MSGPACK_OBJECT_STR)
			return cs_decode_reject(CS_REASON_WRONG_TYPE, errstr, size,
				      "entry has a map key of type %s, field names must be strings",
				      type_name(k->type));
		if (guess < spec->ncols && names(&spec->cols[guess], k))
			c = guess;
		else
			for (c = 0; c < spec->ncols && !names(&spec->cols[c], k); c++)
				;
		if (c < spec->ncols) {
			vals[c] = &m->ptr[i].val;
			guess = c + 1;
		} else {
			dec->unknown_fields++;
		}
	}
	return CS_REASON_OK;
}

/* Append the tuple of vals[] (one per spec column, NULL when absent) and its key. With
 * `key_only`, the columns outside the key are sent as NULL whatever their spec says (a delete
 * needs the key alone). On rejection neither buffer changes. */
static cs_reason_t encode_tuple(const cs_decoder_t *dec, const cs_tablespec_t *spec,
				const msgpack_object **vals, bool key_only, cs_buf_t *tuples,
				cs_buf_t *keys, char *errstr, size_t errstr_size)
{
	size_t field_at[CS_MAX_COLUMNS];
	size_t t0 = tuples->len, k0 = keys->len;
	cs_reason_t r = CS_REASON_OK;

	if (cs_buf_put_u16(tuples, (uint16_t)spec->ncols) != 0)
		return OOM;
	for (int c = 0; c < spec->ncols && r == CS_REASON_OK; c++) {
		const cs_column_t *col = &spec->cols[c];
		field_at[c] = tuples->len;
		if (vals[c] == NULL || vals[c]->type == MSGPACK_OBJECT_NIL) {
			if (col->in_key || (col->required && !key_only))
				r = cs_decode_reject(CS_REASON_MISSING_FIELD, errstr, errstr_size,
					   "missing required field \"%s\"", col->name);
			else if (cs_buf_put_u32(tuples, UINT32_MAX) != 0) /* -1: NULL */
				r = OOM;
			continue;
		}
		r = put_column(dec, spec, col, vals[c], tuples, errstr, errstr_size);
	}
	for (int c = 0; c < spec->ncols && r == CS_REASON_OK; c++) {
		size_t end = c + 1 < spec->ncols ? field_at[c + 1] : tuples->len;
		if (spec->cols[c].in_key &&
		    cs_buf_append(keys, tuples->data + field_at[c], end - field_at[c]) != 0)
			r = OOM;
		else if (spec->cols[c].in_key) /* equal values, equal key bytes */
			cs_pgbinary_canonical_key(&spec->cols[c],
						  keys->data + keys->len - (end - field_at[c]),
						  end - field_at[c]);
	}
	if (r != CS_REASON_OK) {
		tuples->len = t0;
		keys->len = k0;
	}
	return r;
}

/* The spec column named by the msgpack str at p[0..len), or NULL (not a str, or no column). */
static const cs_column_t *column_named(const cs_tablespec_t *spec, const unsigned char *p,
				       size_t len)
{
	size_t hdr = p[0] >= 0xa0 && p[0] <= 0xbf ? 1 : p[0] == 0xd9 ? 2 : p[0] == 0xda ? 3
		     : p[0] == 0xdb ? 5 : 0;

	if (hdr == 0 || len < hdr)
		return NULL;
	for (int c = 0; c < spec->ncols; c++)
		if (strlen(spec->cols[c].name) == len - hdr &&
		    memcmp(spec->cols[c].name, p + hdr, len - hdr) == 0)
			return &spec->cols[c];
	return NULL;
}

/* Check the nesting of the entry map p[0..len) before msgpack-c parses it: the entry is level 1,
 * an array or map in one of its fields level 2, and so on up to max_depth. A too deep field is
 * named when it is a column of the spec (map keys are message data, never copied to errstr). */
static cs_reason_t check_depth(const cs_decoder_t *dec, const cs_tablespec_t *spec,
			       const unsigned char *p, size_t len, char *errstr, size_t size)
{
	scan_t s = {.p = p, .len = len, .max_depth = dec->limits.max_depth,
		    .reason = CS_REASON_MALFORMED};
	uint64_t items;
	bool container;

	if (!scan_head(&s, &items, &container))
		return cs_decode_reject(CS_REASON_MALFORMED, errstr, size, "entry is not valid msgpack");
	for (uint64_t k = 0; k < items; k += 2) {
		size_t key_at = s.pos, key_len;
		const cs_column_t *col;

		if (!scan_value(&s, 1))
			break;
		key_len = s.pos - key_at;
		if (scan_value(&s, 1))
			continue;
		col = column_named(spec, p + key_at, key_len);
		if (s.reason == CS_REASON_TOO_DEEP && col != NULL)
			return cs_decode_reject(CS_REASON_TOO_DEEP, errstr, size,
				      "field \"%s\" nests deeper than %d levels", col->name,
				      s.max_depth);
		break;
	}
	if (s.reason == CS_REASON_TOO_DEEP)
		return cs_decode_reject(CS_REASON_TOO_DEEP, errstr, size, "entry nests deeper than %d levels",
			      s.max_depth);
	if (s.pos != len)
		return cs_decode_reject(CS_REASON_MALFORMED, errstr, size, "entry is not valid msgpack");
	return CS_REASON_OK;
}

cs_reason_t cs_decode_entry(cs_decoder_t *dec, int i, const cs_tablespec_t *spec,
			    cs_buf_t *tuples, cs_buf_t *keys, char *errstr, size_t errstr_size)
{
	const msgpack_object *vals[CS_MAX_COLUMNS] = {NULL};
	const unsigned char *p;
	msgpack_object o;
	size_t at, len;
	cs_reason_t r;

	if (i < 0 || i >= dec->nentries)
		return cs_decode_reject(CS_REASON_MALFORMED, errstr, errstr_size, "no entry %d", i);
	if (!locate_entry(dec, i, &at, &len))
		return cs_decode_reject(CS_REASON_MALFORMED, errstr, errstr_size,
			      "entry %d is not valid msgpack", i);
	p = dec->msg + at;
	if (!((p[0] >= 0x80 && p[0] <= 0x8f) || p[0] == 0xde || p[0] == 0xdf))
		return cs_decode_reject(CS_REASON_NOT_A_MAP, errstr, errstr_size, "entry %d is %s, not a map",
			      i, head_type_name(p[0]));
	if (dec->built) { /* the message is this map, unpacked at open */
		o = dec->entry;
	} else {
		r = dec->last_depth_ok ? CS_REASON_OK
				       : check_depth(dec, spec, p, len, errstr, errstr_size);
		if (r != CS_REASON_OK)
			return r;
		/* the previous entry's objects are no longer needed: its tuple is in the buffers */
		msgpack_zone_clear(&dec->zone);
		if (cs_unpack(p, len, dec->limits.max_depth, &dec->zone, &o) != 0)
			return cs_decode_reject(CS_REASON_MALFORMED, errstr, errstr_size,
				      "entry %d is not valid msgpack", i);
	}
	r = match_fields(dec, spec, &o.via.map, vals, errstr, errstr_size);
	if (r != CS_REASON_OK)
		return r;
	return encode_tuple(dec, spec, vals, false, tuples, keys, errstr, errstr_size);
}

/* Parse a whole tombstone key into dec->root, nesting limited from the key itself (level 1).
 * @returns CS_REASON_OK, or the reason with errstr. */
static cs_reason_t unpack_key(cs_decoder_t *dec, const void *key, size_t key_len, char *errstr,
			      size_t errstr_size)
{
	scan_t s = {.p = key, .len = key_len, .max_depth = dec->limits.max_depth,
		    .reason = CS_REASON_MALFORMED};
	size_t off = 0;
	cs_reason_t r = check_message(dec, key, key_len, errstr, errstr_size);

	if (r != CS_REASON_OK)
		return r;
	if (!scan_value(&s, 0))
		return cs_decode_reject(CS_REASON_TOO_DEEP, errstr, errstr_size,
			      "message nests deeper than %d levels", s.max_depth);
	msgpack_zone_clear(&dec->zone);
	if (msgpack_unpack(key, key_len, &off, &dec->zone, &dec->root) != MSGPACK_UNPACK_SUCCESS ||
	    off != key_len)
		return cs_decode_reject(CS_REASON_MALFORMED, errstr, errstr_size,
			      "message is not valid msgpack");
	return CS_REASON_OK;
}

cs_reason_t cs_decode_key(cs_decoder_t *dec, const cs_tablespec_t *spec, const void *key,
			  size_t key_len, cs_buf_t *tuples, cs_buf_t *keys, char *errstr,
			  size_t errstr_size)
{
	const msgpack_object *vals[CS_MAX_COLUMNS] = {NULL};
	int nkeys = cs_tablespec_nkeys(spec), k = 0;
	cs_reason_t r;

	forget_message(dec); /* the key is not a list of entries */
	if (nkeys == 0)
		return cs_decode_reject(CS_REASON_MALFORMED, errstr, errstr_size,
			      "a tombstone (null value) cannot delete from table \"%s\", which has "
			      "no conflict key", spec->name);
	if (key == NULL || key_len == 0)
		return cs_decode_reject(CS_REASON_MALFORMED, errstr, errstr_size,
			      "a tombstone (null value) needs a key: the msgpack array of the "
			      "conflict-key fields");
	r = unpack_key(dec, key, key_len, errstr, errstr_size);
	if (r != CS_REASON_OK) {
		size_t n = strlen(errstr);
		if (n < errstr_size)
			snprintf(errstr + n, errstr_size - n, " (tombstone key)");
		return r;
	}
	if (dec->root.type != MSGPACK_OBJECT_ARRAY || dec->root.via.array.size != (uint32_t)nkeys)
		return cs_decode_reject(CS_REASON_MALFORMED, errstr, errstr_size,
			      "tombstone key must be a msgpack array of the %d conflict-key "
			      "field(s) of table \"%s\"",
			      nkeys, spec->name);
	for (int c = 0; c < spec->ncols; c++)
		if (spec->cols[c].in_key)
			vals[c] = &dec->root.via.array.ptr[k++];
	return encode_tuple(dec, spec, vals, true, tuples, keys, errstr, errstr_size);
}

int cs_decode_entry_bytes(cs_decoder_t *dec, int i, cs_buf_t *out)
{
	size_t at, len;

	if (i < 0 || i >= dec->nentries || !locate_entry(dec, i, &at, &len))
		return -1;
	return cs_buf_append(out, dec->msg + at, len);
}
