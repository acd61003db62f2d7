/*
 * Split virtqueues, device side, with the rings treated as hostile input.
 *
 * The guest owns the descriptor table and the avail ring and may rewrite them from
 * another vCPU while we read them, so every field is read exactly once into a local
 * copy and only the copy is validated and used. Every walk is bounded (by the queue
 * size, an indirect table's entry count, VIRTQ_MAX_CHAIN), every buffer goes through
 * gpa_ptr, and a broken queue yields -EINVAL with the reason instead of a guess.
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "virtio.h"

#define DESC_SIZE sizeof(struct vring_desc)

static bool is_pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

static uint64_t desc_bytes(uint16_t size)
{
	return DESC_SIZE * size;
}

/* flags, idx, ring[size], used_event */
static uint64_t avail_bytes(uint16_t size)
{
	return 6 + 2ull * size;
}

/* flags, idx, ring[size], avail_event */
static uint64_t used_bytes(uint16_t size)
{
	return 6 + 8ull * size;
}

/* True when the last byte of [addr, addr+len) lies past 2^64. */
static bool range_wraps(uint64_t addr, uint64_t len)
{
	return len && len - 1 > UINT64_MAX - addr;
}

/*
 * Says in eb why gpa_ptr refused [gpa, gpa+len): it wraps, starts outside RAM, or
 * runs past the end of its region. gpa_ptr is the check; this only words it.
 */
static int range_error(const struct guest_mem *m, uint64_t gpa, uint64_t len, const char *what,
		       struct errbuf *eb)
{
	unsigned long long a = gpa, l = len;

	if (range_wraps(gpa, len))
		return errbuf_set(eb, -EINVAL, "%s: address 0x%llx + length %llu overflows", what, a,
				  l);
	if (mem_region_of(m, gpa) < 0)
		return errbuf_set(eb, -EINVAL, "%s: address 0x%llx is not in guest RAM", what, a);
	return errbuf_set(eb, -EINVAL, "%s: 0x%llx + length %llu crosses the end of its guest "
			  "RAM region", what, a, l);
}

void virtq_init(struct virtq *q, struct guest_mem *mem, uint16_t max_size)
{
	memset(q, 0, sizeof(*q));
	if (max_size == 0 || max_size > VIRTQ_MAX_SIZE)
		max_size = VIRTQ_MAX_SIZE;
	q->max_size = max_size;
	q->s.size = max_size;
	q->mem = mem;
}

/* The ring layout rules that need no guest memory. */
static int check_layout(const struct virtq_state *s, uint16_t max_size, struct errbuf *eb)
{
	const struct {
		const char *name;
		uint64_t addr, align, len;
	} rings[] = {
		{ "descriptor table", s->desc, 16, desc_bytes(s->size) },
		{ "avail ring", s->avail, 2, avail_bytes(s->size) },
		{ "used ring", s->used, 4, used_bytes(s->size) },
	};

	if (max_size > VIRTQ_MAX_SIZE)
		max_size = VIRTQ_MAX_SIZE;
	if (s->size == 0)
		return errbuf_set(eb, -EINVAL, "queue size is 0");
	if (!is_pow2(s->size))
		return errbuf_set(eb, -EINVAL, "queue size %u is not a power of two", s->size);
	if (s->size > max_size)
		return errbuf_set(eb, -EINVAL, "queue size %u is larger than the maximum %u", s->size,
				  max_size);
	for (unsigned i = 0; i < ARRAY_SIZE(rings); i++) {
		if (rings[i].addr % rings[i].align)
			return errbuf_set(eb, -EINVAL, "%s address 0x%llx is not %llu-byte aligned",
					  rings[i].name, (unsigned long long)rings[i].addr,
					  (unsigned long long)rings[i].align);
		if (range_wraps(rings[i].addr, rings[i].len))
			return errbuf_set(eb, -EINVAL, "%s: address 0x%llx + length %llu overflows",
					  rings[i].name, (unsigned long long)rings[i].addr,
					  (unsigned long long)rings[i].len);
	}
	return 0;
}

int virtq_state_check_ram(const struct virtq_state *s, const struct guest_mem *m,
			  struct errbuf *eb)
{
	const struct {
		const char *name;
		uint64_t addr, len;
	} rings[] = {
		{ "descriptor table", s->desc, desc_bytes(s->size) },
		{ "avail ring", s->avail, avail_bytes(s->size) },
		{ "used ring", s->used, used_bytes(s->size) },
	};

	for (unsigned i = 0; s->ready && i < ARRAY_SIZE(rings); i++)
		if (!gpa_in_ram(m, rings[i].addr, rings[i].len))
			return range_error(m, rings[i].addr, rings[i].len, rings[i].name, eb);
	return 0;
}

/* check_layout, then the rings against guest RAM: the host pointers, or -EINVAL. */
static int map_rings(const struct guest_mem *m, const struct virtq_state *s, uint16_t max_size,
		     const void **desc, const void **avail, const void **used, struct errbuf *eb)
{
	int r = check_layout(s, max_size, eb);

	if (r)
		return r;
	*desc = gpa_ptr(m, s->desc, desc_bytes(s->size));
	if (!*desc)
		return range_error(m, s->desc, desc_bytes(s->size), "descriptor table", eb);
	*avail = gpa_ptr(m, s->avail, avail_bytes(s->size));
	if (!*avail)
		return range_error(m, s->avail, avail_bytes(s->size), "avail ring", eb);
	*used = gpa_ptr(m, s->used, used_bytes(s->size));
	if (!*used)
		return range_error(m, s->used, used_bytes(s->size), "used ring", eb);
	return 0;
}

int virtq_enable(struct virtq *q, struct errbuf *eb)
{
	const void *desc, *avail, *used;
	int r = map_rings(q->mem, &q->s, q->max_size, &desc, &avail, &used, eb);

	if (r)
		return r;
	q->desc = desc;
	q->avail = avail;
	/* the used ring is the device's to write (virtq_push marks it dirty) */
	q->used = (struct vring_used *)used;
	q->s.ready = 1;
	return 0;
}

void virtq_disable(struct virtq *q)
{
	q->s.ready = 0;
	q->desc = NULL;
	q->avail = NULL;
	q->used = NULL;
}

int virtq_state_check(const struct virtq_state *s, uint16_t max_size, struct errbuf *eb)
{
	if (s->ready > 1)
		return errbuf_set(eb, -EINVAL, "queue ready flag %u is not 0 or 1", s->ready);
	/* not ready: size and addresses are only the driver's register writes so far
	 * (QueueReady checks them); any such state must stay restorable */
	if (!s->ready)
		return 0;
	return check_layout(s, max_size, eb);
}

int virtq_restore(struct virtq *q, const struct virtq_state *s, struct errbuf *eb)
{
	const void *desc = NULL, *avail = NULL, *used = NULL;
	int r = virtq_state_check(s, q->max_size, eb);

	if (r)
		return r;
	if (s->ready) {
		r = map_rings(q->mem, s, q->max_size, &desc, &avail, &used, eb);
		if (r)
			return r;
	}
	q->s = *s;
	q->desc = desc;
	q->avail = avail;
	q->used = (struct vring_used *)used;
	return 0;
}

/*
 * One read of a descriptor the guest may be rewriting. memcpy because an indirect
 * table need not be aligned; the barrier stops the compiler from re-reading *p in
 * place of the copy, so what we validate is what we use.
 */
static struct vring_desc read_desc(const void *p)
{
	struct vring_desc d;

	memcpy(&d, p, sizeof(d));
	__asm__ __volatile__("" ::: "memory");
	d.addr = le64toh(d.addr);
	d.len = le32toh(d.len);
	d.flags = le16toh(d.flags);
	d.next = le16toh(d.next);
	return d;
}

/* Where a descriptor lives, for error messages (formatted only on an error). */
struct desc_pos {
	uint16_t idx;      /* in the descriptor table, or the indirect descriptor's index */
	int entry;         /* in that indirect table, or -1 */
};

#define POS_STR_LEN 48

static const char *pos_str(const struct desc_pos *p, char *buf)
{
	if (p->entry < 0)
		snprintf(buf, POS_STR_LEN, "descriptor %u", p->idx);
	else
		snprintf(buf, POS_STR_LEN, "descriptor %u, indirect entry %d", p->idx, p->entry);
	return buf;
}

/* Appends one buffer to c after validating the local copy d. */
static int add_buf(struct virtq *q, struct virtq_chain *c, const struct vring_desc *d,
		   const struct desc_pos *pos, struct errbuf *eb)
{
	bool writable = d->flags & VRING_DESC_F_WRITE;
	uint64_t *total = writable ? &c->writable_len : &c->readable_len;
	char where[POS_STR_LEN];
	struct virtq_buf *b;
	uint8_t *hva;

	/* nothing to read or write: the spec allows it and there is nothing to check */
	if (d->len == 0)
		return 0;
	/* the device writes through hva: const only because gpa_ptr serves readers too */
	hva = (uint8_t *)gpa_ptr(q->mem, d->addr, d->len);
	if (!hva)
		return range_error(q->mem, d->addr, d->len, pos_str(pos, where), eb);
	if (!writable && c->nr > c->nr_readable)
		return errbuf_set(eb, -EINVAL, "%s: device-readable buffer after a device-writable "
				  "one", pos_str(pos, where));
	if (c->nr == VIRTQ_MAX_CHAIN)
		return errbuf_set(eb, -EINVAL, "%s: chain has more than %u buffers",
				  pos_str(pos, where), VIRTQ_MAX_CHAIN);
	/* a used-ring length is 32 bits: larger totals could not be reported */
	if (d->len > UINT32_MAX - *total)
		return errbuf_set(eb, -EINVAL, "%s: device-%s buffers total more than %u bytes",
				  pos_str(pos, where), writable ? "writable" : "readable",
				  UINT32_MAX);
	*total += d->len;
	if (!writable)
		c->nr_readable++;
	b = &c->buf[c->nr++];
	b->gpa = d->addr;
	b->len = d->len;
	b->writable = writable;
	b->hva = hva;
	return 0;
}

/* The table an indirect descriptor (index idx, copy d) points to: checked, or NULL. */
static const uint8_t *indirect_table(struct virtq *q, uint16_t idx, const struct vring_desc *d,
				     struct errbuf *eb)
{
	const uint8_t *table;
	char what[POS_STR_LEN];

	if (!q->indirect) {
		errbuf_set(eb, -EINVAL, "descriptor %u: indirect descriptor, but "
			   "VIRTIO_RING_F_INDIRECT_DESC was not negotiated", idx);
		return NULL;
	}
	if (d->flags & VRING_DESC_F_NEXT) {
		errbuf_set(eb, -EINVAL, "descriptor %u: indirect descriptor also has "
			   "VRING_DESC_F_NEXT", idx);
		return NULL;
	}
	if (d->len == 0) {
		errbuf_set(eb, -EINVAL, "descriptor %u: indirect table length is 0", idx);
		return NULL;
	}
	if (d->len % DESC_SIZE) {
		errbuf_set(eb, -EINVAL, "descriptor %u: indirect table length %u is not a multiple "
			   "of 16", idx, d->len);
		return NULL;
	}
	if (d->len / DESC_SIZE > VIRTQ_MAX_CHAIN) {
		errbuf_set(eb, -EINVAL, "descriptor %u: indirect table of %u entries, more than %u",
			   idx, (unsigned)(d->len / DESC_SIZE), VIRTQ_MAX_CHAIN);
		return NULL;
	}
	table = gpa_ptr(q->mem, d->addr, d->len);
	if (!table) {
		snprintf(what, sizeof(what), "descriptor %u: indirect table", idx);
		range_error(q->mem, d->addr, d->len, what, eb);
	}
	return table;
}

/* The chain inside the indirect table that descriptor idx (copy d) points to. */
static int walk_indirect(struct virtq *q, struct virtq_chain *c, uint16_t idx,
			 const struct vring_desc *d, struct errbuf *eb)
{
	const uint8_t *table = indirect_table(q, idx, d, eb);
	unsigned n = d->len / DESC_SIZE, j = 0;
	int r;

	if (!table)
		return -EINVAL;
	/* each entry is visited at most once unless the chain loops */
	for (unsigned visited = 1;; visited++) {
		struct desc_pos pos = { .idx = idx, .entry = (int)j };
		struct vring_desc e;

		if (visited > n)
			return errbuf_set(eb, -EINVAL, "descriptor %u: indirect chain is longer than "
					  "its table of %u entries (a loop)", idx, n);
		e = read_desc(table + (size_t)j * DESC_SIZE);
		if (e.flags & VRING_DESC_F_INDIRECT)
			return errbuf_set(eb, -EINVAL, "descriptor %u, indirect entry %u: nested "
					  "indirect descriptor", idx, j);
		r = add_buf(q, c, &e, &pos, eb);
		if (r)
			return r;
		if (!(e.flags & VRING_DESC_F_NEXT))
			return 0;
		if (e.next >= n)
			return errbuf_set(eb, -EINVAL, "descriptor %u, indirect entry %u: next index "
					  "%u is out of range (table of %u entries)", idx, j, e.next,
					  n);
		j = e.next;
	}
}

int virtq_pop(struct virtq *q, struct virtq_chain *c, struct errbuf *eb)
{
	uint16_t size = q->s.size, slot, avail_idx, moved, head, idx;
	int r;

	if (!q->s.ready)
		return 0;
	/* acquire: the ring entry and descriptors are read after the index that covers them */
	avail_idx = le16toh(__atomic_load_n(&q->avail->idx, __ATOMIC_ACQUIRE));
	moved = (uint16_t)(avail_idx - q->s.next_avail);
	if (moved == 0)
		return 0;
	if (moved > size)
		return errbuf_set(eb, -EINVAL, "avail index moved by %u, more than the queue size %u",
				  moved, size);
	slot = q->s.next_avail & (size - 1);
	head = le16toh(__atomic_load_n(&q->avail->ring[slot], __ATOMIC_RELAXED));
	if (head >= size)
		return errbuf_set(eb, -EINVAL, "avail ring entry %u: head descriptor %u is out of "
				  "range (queue size %u)", slot, head, size);

	c->head = head;
	c->nr = 0;
	c->nr_readable = 0;
	c->readable_len = 0;
	c->writable_len = 0;
	idx = head;
	/* a chain of more than size descriptors must revisit one: a loop */
	for (unsigned visited = 1;; visited++) {
		struct desc_pos pos = { .idx = idx, .entry = -1 };
		struct vring_desc d;

		if (visited > size)
			return errbuf_set(eb, -EINVAL, "chain from head %u is longer than the queue "
					  "size %u (a loop)", head, size);
		d = read_desc(&q->desc[idx]);
		/* the spec's only place for it is the end of the chain: it may not have NEXT */
		if (d.flags & VRING_DESC_F_INDIRECT) {
			r = walk_indirect(q, c, idx, &d, eb);
			if (r)
				return r;
			break;
		}
		r = add_buf(q, c, &d, &pos, eb);
		if (r)
			return r;
		if (!(d.flags & VRING_DESC_F_NEXT))
			break;
		if (d.next >= size)
			return errbuf_set(eb, -EINVAL, "descriptor %u: next index %u is out of range "
					  "(queue size %u)", idx, d.next, size);
		idx = d.next;
	}
	q->s.next_avail++;
	return 1;
}

void virtq_unpop(struct virtq *q)
{
	q->s.next_avail--;
}

/* The guest-physical address of a byte of the used ring, for dirty marking. */
static uint64_t used_gpa(const struct virtq *q, const void *p)
{
	return q->s.used + (uint64_t)((const uint8_t *)p - (const uint8_t *)q->used);
}

void virtq_push(struct virtq *q, uint16_t head, uint32_t written)
{
	struct vring_used_elem *e;
	uint16_t idx = q->s.next_used;

	if (!q->s.ready)
		return;
	e = &q->used->ring[idx & (q->s.size - 1)];
	__atomic_store_n(&e->id, htole32(head), __ATOMIC_RELAXED);
	__atomic_store_n(&e->len, htole32(written), __ATOMIC_RELAXED);
	mem_mark_dirty(q->mem, used_gpa(q, e), sizeof(*e));
	idx++;
	/* release: the driver that sees the new index sees the entry */
	__atomic_store_n(&q->used->idx, htole16(idx), __ATOMIC_RELEASE);
	mem_mark_dirty(q->mem, used_gpa(q, &q->used->idx), sizeof(q->used->idx));
	q->s.next_used = idx;
}

bool virtq_should_interrupt(const struct virtq *q)
{
	uint16_t flags;

	if (!q->s.ready)
		return false;
	/* the used->idx store must be visible before we read the flag the driver sets
	 * before re-checking used->idx, or both sides could miss each other */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	flags = le16toh(__atomic_load_n(&q->avail->flags, __ATOMIC_RELAXED));
	return !(flags & VRING_AVAIL_F_NO_INTERRUPT);
}

static void set_used_flags(struct virtq *q, uint16_t flags)
{
	__atomic_store_n(&q->used->flags, htole16(flags), __ATOMIC_RELAXED);
	mem_mark_dirty(q->mem, used_gpa(q, &q->used->flags), sizeof(q->used->flags));
}

void virtq_notify_off(struct virtq *q)
{
	if (q->s.ready)
		set_used_flags(q, VRING_USED_F_NO_NOTIFY);
}

bool virtq_notify_on(struct virtq *q)
{
	uint16_t avail_idx;

	if (!q->s.ready)
		return false;
	set_used_flags(q, 0);
	/* store flag, then load idx: a driver that published before seeing the flag
	 * cleared skipped its notification, and we must see its index */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	avail_idx = le16toh(__atomic_load_n(&q->avail->idx, __ATOMIC_ACQUIRE));
	/* a broken index counts too: the caller's virtq_pop then reports it */
	return avail_idx != q->s.next_avail;
}

/*
 * Walks the buffers of one part of c covering [off, off+len): fn gets each piece.
 * Returns the bytes covered; stops early when fn returns false.
 */
static uint64_t for_each_piece(const struct virtq_chain *c, bool writable, uint64_t off,
			       uint64_t len,
			       bool (*fn)(const struct virtq_buf *b, uint32_t at, uint32_t n,
					  void *arg),
			       void *arg)
{
	unsigned i = writable ? c->nr_readable : 0, end = writable ? c->nr : c->nr_readable;
	uint64_t done = 0;

	for (; i < end && done < len; i++) {
		const struct virtq_buf *b = &c->buf[i];
		uint64_t n;

		if (off >= b->len) {
			off -= b->len;
			continue;
		}
		n = b->len - off;
		if (n > len - done)
			n = len - done;
		if (!fn(b, (uint32_t)off, (uint32_t)n, arg))
			break;
		done += n;
		off = 0;
	}
	return done;
}

struct copy_arg {
	struct virtq *q;
	uint8_t *out;
	const uint8_t *in;
};

static bool read_piece(const struct virtq_buf *b, uint32_t at, uint32_t n, void *arg)
{
	struct copy_arg *a = arg;

	memcpy(a->out, b->hva + at, n);
	a->out += n;
	return true;
}

static bool write_piece(const struct virtq_buf *b, uint32_t at, uint32_t n, void *arg)
{
	struct copy_arg *a = arg;

	memcpy(b->hva + at, a->in, n);
	mem_mark_dirty(a->q->mem, b->gpa + at, n);
	a->in += n;
	return true;
}

size_t virtq_chain_read(const struct virtq_chain *c, uint64_t off, void *dst, size_t len)
{
	struct copy_arg a = { .out = dst };

	return (size_t)for_each_piece(c, false, off, len, read_piece, &a);
}

size_t virtq_chain_write(struct virtq *q, const struct virtq_chain *c, uint64_t off,
			 const void *src, size_t len)
{
	struct copy_arg a = { .q = q, .in = src };

	return (size_t)for_each_piece(c, true, off, len, write_piece, &a);
}

struct iov_arg {
	struct virtq *q;
	struct iovec *iov;
	int nr, max;
	bool mark;
};

static bool iov_piece(const struct virtq_buf *b, uint32_t at, uint32_t n, void *arg)
{
	struct iov_arg *a = arg;

	if (a->nr == a->max)
		return false;
	a->iov[a->nr].iov_base = b->hva + at;
	a->iov[a->nr].iov_len = n;
	a->nr++;
	if (a->mark)
		mem_mark_dirty(a->q->mem, b->gpa + at, n);
	return true;
}

int virtq_chain_iov(struct virtq *q, const struct virtq_chain *c, bool writable, uint64_t off,
		    uint64_t len, struct iovec *iov, int max)
{
	struct iov_arg a = { .q = q, .iov = iov, .max = max < 0 ? 0 : max, .mark = writable };

	for_each_piece(c, writable, off, len, iov_piece, &a);
	return a.nr;
}
