/*
 * batch.c - rows gathered for one transaction, deduplicated by conflict key
 *
 * Deduplication uses an open-addressing hash table over (table, encoded key bytes), sized to
 * twice the rows and kept across batches, so pushing a row costs one hash and one probe run.
 */
#include "copysink/batch.h"

#include <stdlib.h>
#include <string.h>

typedef struct slot {
	uint64_t hash;  /* 0 = empty */
	uint32_t table;
	uint32_t row;
} slot_t;

struct cs_batch {
	const cs_tablespec_t *specs;
	int nspecs;
	cs_batch_table_t *tables;
	cs_buf_t keys;
	cs_buf_t msgs;    /* per kept message: u32 key length, key, u32 value length, value */
	size_t cur_msg;   /* offset in msgs of the message being decoded */
	cs_batch_part_t *parts;
	int nparts, parts_cap;
	slot_t *slots;
	size_t nslots;  /* power of two */
	size_t used;    /* occupied slots */
	size_t entries; /* rows offered, duplicates included */
	size_t live;
};

cs_batch_t *cs_batch_new(const cs_tablespec_t *specs, int nspecs)
{
	cs_batch_t *b = calloc(1, sizeof(*b));

	if (b == NULL)
		return NULL;
	b->specs = specs;
	b->nspecs = nspecs;
	b->tables = calloc((size_t)(nspecs > 0 ? nspecs : 1), sizeof(*b->tables));
	if (b->tables == NULL) {
		free(b);
		return NULL;
	}
	for (int t = 0; t < nspecs; t++)
		cs_buf_init(&b->tables[t].tuples);
	cs_buf_init(&b->keys);
	cs_buf_init(&b->msgs);
	return b;
}

void cs_batch_destroy(cs_batch_t *b)
{
	if (b == NULL)
		return;
	for (int t = 0; t < b->nspecs; t++) {
		cs_buf_cleanup(&b->tables[t].tuples);
		free(b->tables[t].rows);
	}
	free(b->tables);
	cs_buf_cleanup(&b->keys);
	cs_buf_cleanup(&b->msgs);
	free(b->parts);
	free(b->slots);
	free(b);
}

void cs_batch_reset(cs_batch_t *b)
{
	for (int t = 0; t < b->nspecs; t++) {
		cs_buf_reset(&b->tables[t].tuples);
		b->tables[t].nrows = 0;
		b->tables[t].live = 0;
	}
	cs_buf_reset(&b->keys);
	cs_buf_reset(&b->msgs);
	b->nparts = 0;
	if (b->used > 0 && b->slots != NULL)
		memset(b->slots, 0, b->nslots * sizeof(*b->slots));
	b->used = 0;
	b->entries = 0;
	b->live = 0;
}

cs_buf_t *cs_batch_tuples(cs_batch_t *b, int t)
{
	return &b->tables[t].tuples;
}

cs_buf_t *cs_batch_keys(cs_batch_t *b)
{
	return &b->keys;
}

/* Copy a message's key and value into the message buffer. */
static int keep_message(cs_batch_t *b, const void *key, size_t key_len, const void *value,
			size_t value_len)
{
	size_t start = b->msgs.len;

	if (key_len > UINT32_MAX || value_len > UINT32_MAX ||
	    cs_buf_reserve(&b->msgs, 8 + key_len + value_len) != 0)
		return -1;
	if (cs_buf_put_u32(&b->msgs, (uint32_t)key_len) != 0 ||
	    cs_buf_append(&b->msgs, key, key_len) != 0 ||
	    cs_buf_put_u32(&b->msgs, (uint32_t)value_len) != 0 ||
	    cs_buf_append(&b->msgs, value, value_len) != 0)
		return -1;
	b->cur_msg = start;
	return 0;
}

/* Read a big-endian u32. */
static uint32_t get_u32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;
	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

void cs_batch_row_message(const cs_batch_t *b, const cs_batch_row_t *row, const void **key,
			  size_t *key_len, const void **value, size_t *value_len)
{
	const char *p = b->msgs.data + row->msg_off;

	*key_len = get_u32(p);
	*key = *key_len ? p + 4 : NULL;
	p += 4 + *key_len;
	*value_len = get_u32(p);
	*value = p + 4;
}

/* Find or add the partition and move its offsets past `offset`. */
static int note_offset(cs_batch_t *b, const char *topic, int32_t partition, int64_t offset)
{
	cs_batch_part_t *p;

	for (int i = b->nparts - 1; i >= 0; i--) {
		p = &b->parts[i];
		if (p->partition == partition && strcmp(p->topic, topic) == 0) {
			if (offset + 1 > p->next_offset)
				p->next_offset = offset + 1;
			if (offset < p->first_offset)
				p->first_offset = offset;
			if (offset < p->start_offset)
				p->start_offset = offset;
			return i;
		}
	}
	if (b->nparts == b->parts_cap) {
		int cap = b->parts_cap ? b->parts_cap * 2 : 16;
		cs_batch_part_t *np = realloc(b->parts, (size_t)cap * sizeof(*np));
		if (np == NULL)
			return -1;
		b->parts = np;
		b->parts_cap = cap;
	}
	p = &b->parts[b->nparts];
	memset(p, 0, sizeof(*p));
	strncpy(p->topic, topic, sizeof(p->topic) - 1);
	p->partition = partition;
	p->first_offset = p->start_offset = offset;
	p->next_offset = offset + 1;
	return b->nparts++;
}

int cs_batch_add_message(cs_batch_t *b, const char *topic, int32_t partition, int64_t offset,
			 const void *key, size_t key_len, const void *value, size_t value_len,
			 bool keep)
{
	if (keep && keep_message(b, key, key_len, value, value_len) != 0)
		return -1;
	return note_offset(b, topic, partition, offset);
}

/* FNV-1a over the table number and the key bytes; never 0 (0 marks an empty slot). */
static uint64_t key_hash(int t, const char *key, size_t len)
{
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)t;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)key[i];
		h *= 1099511628211ULL;
	}
	return h ? h : 1;
}

/* Double the hash table (or create it) and re-insert the occupied slots. */
static int grow_slots(cs_batch_t *b)
{
	size_t n = b->nslots ? b->nslots * 2 : 1024;
	slot_t *ns = calloc(n, sizeof(*ns));

	if (ns == NULL)
		return -1;
	for (size_t i = 0; i < b->nslots; i++) {
		size_t j;
		if (b->slots[i].hash == 0)
			continue;
		for (j = b->slots[i].hash & (n - 1); ns[j].hash != 0; j = (j + 1) & (n - 1))
			;
		ns[j] = b->slots[i];
	}
	free(b->slots);
	b->slots = ns;
	b->nslots = n;
	return 0;
}

/* Find the slot holding the key (table t, bytes key/len) or the empty slot where it goes. */
static slot_t *find_slot(cs_batch_t *b, int t, uint64_t h, const char *key, size_t len)
{
	for (size_t j = h & (b->nslots - 1);; j = (j + 1) & (b->nslots - 1)) {
		slot_t *s = &b->slots[j];
		const cs_batch_row_t *r;

		if (s->hash == 0)
			return s;
		if (s->hash != h || s->table != (uint32_t)t)
			continue;
		r = &b->tables[t].rows[s->row];
		if (r->key_len == len && memcmp(b->keys.data + r->key_off, key, len) == 0)
			return s;
	}
}

/* Append a row record to table t. */
static cs_batch_row_t *append_row(cs_batch_table_t *tab)
{
	if (tab->nrows == tab->rows_cap) {
		size_t cap = tab->rows_cap ? tab->rows_cap * 2 : 1024;
		cs_batch_row_t *nr = realloc(tab->rows, cap * sizeof(*nr));
		if (nr == NULL)
			return NULL;
		tab->rows = nr;
		tab->rows_cap = cap;
	}
	return &tab->rows[tab->nrows++];
}

int cs_batch_push_row(cs_batch_t *b, int t, int part, int64_t offset, int entry,
		      size_t tuple_start, size_t key_start, bool tombstone)
{
	cs_batch_table_t *tab = &b->tables[t];
	cs_conflict_t mode = b->specs[t].on_conflict;
	size_t klen = b->keys.len - key_start;
	const char *key = b->keys.data + key_start;
	slot_t *s = NULL;
	uint64_t h = 0;
	uint8_t old_op = CS_ROW_UPSERT;
	bool dup = false;
	cs_batch_row_t *r;

	if (mode != CS_CONFLICT_NONE) {
		if ((b->used + 1) * 2 > b->nslots && grow_slots(b) != 0)
			return -1;
		h = key_hash(t, key, klen);
		s = find_slot(b, t, h, key, klen);
		dup = s->hash != 0;
		if (dup)
			old_op = tab->rows[s->row].op;
		if (dup && mode == CS_CONFLICT_SKIP && !tombstone && old_op != CS_ROW_DELETE) {
			/* the earlier entry wins: forget this one and its bytes */
			tab->tuples.len = tuple_start;
			b->keys.len = key_start;
			b->entries++;
			return 0;
		}
	}
	r = append_row(tab);
	if (r == NULL)
		return -1;
	r->tuple_off = tuple_start;
	r->tuple_len = tab->tuples.len - tuple_start;
	r->key_off = key_start;
	r->key_len = klen;
	r->offset = offset;
	r->part = part;
	r->entry = entry;
	r->msg_off = b->cur_msg;
	r->live = true;
	r->op = tombstone ? CS_ROW_DELETE : CS_ROW_UPSERT;
	r->collapsed = false;
	b->entries++;
	if (dup) {
		/* the later entry replaces the earlier one; a delete before it still happens */
		if (!tombstone && old_op != CS_ROW_UPSERT)
			r->op = CS_ROW_REPLACE;
		r->collapsed = !tombstone && old_op != CS_ROW_DELETE;
		tab->rows[s->row].live = false;
		s->row = (uint32_t)(tab->nrows - 1);
		return 0;
	}
	if (s != NULL) {
		s->hash = h;
		s->table = (uint32_t)t;
		s->row = (uint32_t)(tab->nrows - 1);
		b->used++;
	}
	tab->live++;
	b->live++;
	return 0;
}

size_t cs_batch_entries(const cs_batch_t *b)
{
	return b->entries;
}

size_t cs_batch_live_rows(const cs_batch_t *b)
{
	return b->live;
}

size_t cs_batch_bytes(const cs_batch_t *b)
{
	size_t n = b->keys.len + b->msgs.len;

	for (int t = 0; t < b->nspecs; t++)
		n += b->tables[t].tuples.len;
	return n;
}

bool cs_batch_empty(const cs_batch_t *b)
{
	return b->nparts == 0;
}

bool cs_batch_due(const cs_batch_t *b, const cs_batch_bounds_t *bounds, int64_t age_ms)
{
	if (cs_batch_empty(b))
		return false;
	return (int64_t)cs_batch_entries(b) >= bounds->max_rows ||
	       (int64_t)cs_batch_bytes(b) >= bounds->max_bytes || age_ms >= bounds->linger_ms;
}

const cs_batch_table_t *cs_batch_table(const cs_batch_t *b, int t)
{
	return &b->tables[t];
}

int cs_batch_ntables(const cs_batch_t *b)
{
	return b->nspecs;
}

const cs_batch_part_t *cs_batch_parts(const cs_batch_t *b, int *nparts)
{
	*nparts = b->nparts;
	return b->parts;
}

void cs_batch_kill_row(cs_batch_t *b, int t, size_t r)
{
	cs_batch_table_t *tab = &b->tables[t];

	if (r < tab->nrows && tab->rows[r].live) {
		tab->rows[r].live = false;
		tab->live--;
		b->live--;
	}
}

void cs_batch_cover_from(cs_batch_t *b, int part, int64_t from)
{
	if (from < b->parts[part].start_offset)
		b->parts[part].start_offset = from;
}

void cs_batch_drop_partition(cs_batch_t *b, const char *topic, int32_t partition)
{
	for (int i = 0; i < b->nparts; i++) {
		if (b->parts[i].partition != partition || strcmp(b->parts[i].topic, topic) != 0)
			continue;
		for (int t = 0; t < b->nspecs; t++)
			for (size_t r = 0; r < b->tables[t].nrows; r++)
				if (b->tables[t].rows[r].part == i)
					cs_batch_kill_row(b, t, r);
		/* keep the index stable for the other rows; mark the partition as gone */
		b->parts[i].topic[0] = '\0';
		b->parts[i].partition = -1;
	}
}
