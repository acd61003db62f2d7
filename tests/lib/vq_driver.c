/*
 * The driver side of a split virtqueue, for tests that play the guest against
 * ember's virtqueue library and the virtio devices built on it.
 */
#include <criterion/criterion.h>
#include <endian.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

uint8_t *vqd_ptr(struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	/* the guest writes its own memory: no host_dirty mark, unlike gpa_map_write */
	uint8_t *p = (uint8_t *)gpa_ptr(m, gpa, len);

	cr_assert_not_null(p, "vq driver: [0x%llx, +%llu) is not in guest RAM",
			   (unsigned long long)gpa, (unsigned long long)len);
	return p;
}

static void put16(struct guest_mem *m, uint64_t gpa, uint16_t v)
{
	uint16_t le = htole16(v);

	memcpy(vqd_ptr(m, gpa, 2), &le, 2);
}

static uint16_t get16(struct guest_mem *m, uint64_t gpa)
{
	uint16_t le;

	memcpy(&le, vqd_ptr(m, gpa, 2), 2);
	return le16toh(le);
}

static void put32(struct guest_mem *m, uint64_t gpa, uint32_t v)
{
	uint32_t le = htole32(v);

	memcpy(vqd_ptr(m, gpa, 4), &le, 4);
}

static uint32_t get32(struct guest_mem *m, uint64_t gpa)
{
	uint32_t le;

	memcpy(&le, vqd_ptr(m, gpa, 4), 4);
	return le32toh(le);
}

void vqd_init(struct vqd *d, struct guest_mem *m, uint16_t size, uint64_t desc, uint64_t avail,
	      uint64_t used)
{
	cr_assert(size >= 1 && size <= VIRTQ_MAX_SIZE, "vq driver: queue size %u", size);
	memset(d, 0, sizeof(*d));
	d->mem = m;
	d->size = size;
	d->desc = desc;
	d->avail = avail;
	d->used = used;
	memset(vqd_ptr(m, desc, 16ull * size), 0, 16ull * size);
	memset(vqd_ptr(m, avail, 6 + 2ull * size), 0, 6 + 2ull * size);
	memset(vqd_ptr(m, used, 6 + 8ull * size), 0, 6 + 8ull * size);
	for (unsigned i = 0; i < size; i++)
		d->next[i] = (uint16_t)(i + 1);
	d->free_head = 0;
	d->nr_free = size;
}

void vqd_init_at(struct vqd *d, struct guest_mem *m, uint16_t size, uint64_t base)
{
	uint64_t avail = base + 16ull * size;
	uint64_t used = (avail + 6 + 2ull * size + 4095) & ~4095ull;

	vqd_init(d, m, size, base, avail, used);
}

void vqd_attach(const struct vqd *d, struct virtq *q)
{
	q->s.size = d->size;
	q->s.desc = d->desc;
	q->s.avail = d->avail;
	q->s.used = d->used;
}

void vqd_start_at(struct vqd *d, uint16_t idx)
{
	vqd_set_avail_idx(d, idx);
	vqd_set_used_idx(d, idx);
	d->used_idx = idx;
}

void vqd_set_desc_at(struct guest_mem *m, uint64_t gpa, uint64_t addr, uint32_t len,
		     uint16_t flags, uint16_t next)
{
	struct vring_desc v = {
		.addr = htole64(addr), .len = htole32(len),
		.flags = htole16(flags), .next = htole16(next),
	};

	memcpy(vqd_ptr(m, gpa, sizeof(v)), &v, sizeof(v));
}

void vqd_set_desc(struct vqd *d, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
		  uint16_t next)
{
	cr_assert_lt(i, d->size, "vq driver: descriptor %u of a queue of %u", i, d->size);
	vqd_set_desc_at(d->mem, d->desc + 16ull * i, addr, len, flags, next);
}

/* n free descriptors off the free list; their next[] links are the chain's order. */
static uint16_t take(struct vqd *d, unsigned n)
{
	uint16_t head = d->free_head, i = head;

	cr_assert(n >= 1 && n <= d->nr_free, "vq driver: %u descriptors wanted, %u free", n,
		  d->nr_free);
	for (unsigned k = 0; k < n; k++)
		i = d->next[i];
	d->free_head = i;
	d->nr_free -= n;
	d->chain_len[head] = (uint16_t)n;
	return head;
}

uint16_t vqd_chain(struct vqd *d, const struct vqd_buf *bufs, unsigned n)
{
	uint16_t head = take(d, n), i = head;

	for (unsigned k = 0; k < n; k++) {
		uint16_t flags = bufs[k].writable ? VRING_DESC_F_WRITE : 0;

		if (k + 1 < n)
			flags |= VRING_DESC_F_NEXT;
		vqd_set_desc(d, i, bufs[k].gpa, bufs[k].len, flags, k + 1 < n ? d->next[i] : 0);
		i = d->next[i];
	}
	return head;
}

uint16_t vqd_indirect(struct vqd *d, uint64_t table_gpa, const struct vqd_buf *bufs, unsigned n)
{
	uint16_t head = take(d, 1);

	cr_assert(n >= 1, "vq driver: empty indirect table");
	for (unsigned k = 0; k < n; k++)
		vqd_set_desc_at(d->mem, table_gpa + 16ull * k, bufs[k].gpa, bufs[k].len,
				(uint16_t)((bufs[k].writable ? VRING_DESC_F_WRITE : 0) |
					   (k + 1 < n ? VRING_DESC_F_NEXT : 0)),
				(uint16_t)(k + 1 < n ? k + 1 : 0));
	vqd_set_desc(d, head, table_gpa, 16 * n, VRING_DESC_F_INDIRECT, 0);
	return head;
}

void vqd_publish(struct vqd *d, uint16_t head)
{
	put16(d->mem, d->avail + 4 + 2ull * (d->avail_idx & (d->size - 1)), head);
	d->avail_idx++;
	/* release: a device that sees the index sees the entry and the descriptors (a
	 * fence, not an atomic store: rings may sit misaligned on purpose) */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	put16(d->mem, d->avail + 2, d->avail_idx);
}

uint16_t vqd_add(struct vqd *d, const struct vqd_buf *bufs, unsigned n)
{
	uint16_t head = vqd_chain(d, bufs, n);

	vqd_publish(d, head);
	return head;
}

bool vqd_get_used(struct vqd *d, uint16_t *head, uint32_t *len)
{
	uint16_t idx = get16(d->mem, d->used + 2), tail;
	uint32_t id, n;

	if (idx == d->used_idx)
		return false;
	/* acquire: the entry is read after the index that covers it */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	vqd_used_elem(d, d->used_idx & (d->size - 1), &id, &n);
	d->used_idx++;
	cr_assert(id < d->size && d->chain_len[id],
		  "vq driver: the device used descriptor %u, which is not a head the driver gave", id);
	/* the chain goes back to the front of the free list */
	tail = (uint16_t)id;
	for (unsigned k = 1; k < d->chain_len[id]; k++)
		tail = d->next[tail];
	d->next[tail] = d->free_head;
	d->free_head = (uint16_t)id;
	d->nr_free += d->chain_len[id];
	d->chain_len[id] = 0;
	if (head)
		*head = (uint16_t)id;
	if (len)
		*len = n;
	return true;
}

void vqd_set_avail_ring(struct vqd *d, uint16_t slot, uint16_t head)
{
	cr_assert_lt(slot, d->size, "vq driver: avail slot %u of a queue of %u", slot, d->size);
	put16(d->mem, d->avail + 4 + 2ull * slot, head);
}

void vqd_set_avail_idx(struct vqd *d, uint16_t idx)
{
	put16(d->mem, d->avail + 2, idx);
	d->avail_idx = idx;
}

void vqd_set_avail_flags(struct vqd *d, uint16_t flags)
{
	put16(d->mem, d->avail, flags);
}

void vqd_set_used_flags(struct vqd *d, uint16_t flags)
{
	put16(d->mem, d->used, flags);
}

void vqd_set_used_idx(struct vqd *d, uint16_t idx)
{
	put16(d->mem, d->used + 2, idx);
}

void vqd_set_used_elem(struct vqd *d, uint16_t slot, uint32_t id, uint32_t len)
{
	cr_assert_lt(slot, d->size, "vq driver: used slot %u of a queue of %u", slot, d->size);
	put32(d->mem, d->used + 4 + 8ull * slot, id);
	put32(d->mem, d->used + 8 + 8ull * slot, len);
}

uint16_t vqd_used_flags(const struct vqd *d)
{
	return get16(d->mem, d->used);
}

uint16_t vqd_used_idx(const struct vqd *d)
{
	return get16(d->mem, d->used + 2);
}

void vqd_used_elem(const struct vqd *d, uint16_t slot, uint32_t *id, uint32_t *len)
{
	cr_assert_lt(slot, d->size, "vq driver: used slot %u of a queue of %u", slot, d->size);
	*id = get32(d->mem, d->used + 4 + 8ull * slot);
	*len = get32(d->mem, d->used + 8 + 8ull * slot);
}

uint8_t vqd_pattern_byte(uint8_t seed, uint64_t off)
{
	return (uint8_t)(seed * 151 + off * 7 + (off >> 9));
}

void vqd_fill_pattern(struct guest_mem *m, uint64_t gpa, uint64_t len, uint8_t seed)
{
	uint8_t *p = vqd_ptr(m, gpa, len);

	for (uint64_t i = 0; i < len; i++)
		p[i] = vqd_pattern_byte(seed, i);
}

bool vqd_check_pattern(struct guest_mem *m, uint64_t gpa, uint64_t len, uint8_t seed)
{
	const uint8_t *p = vqd_ptr(m, gpa, len);

	for (uint64_t i = 0; i < len; i++)
		if (p[i] != vqd_pattern_byte(seed, i))
			return false;
	return true;
}

void vqd_track_dirty(struct guest_mem *m)
{
	free(m->host_dirty);
	m->host_dirty = calloc((m->size / PAGE_SIZE + 63) / 64, sizeof(uint64_t));
	cr_assert_not_null(m->host_dirty);
}

bool vqd_dirty(const struct guest_mem *m, uint64_t gpa)
{
	const uint8_t *p = gpa_ptr(m, gpa, 1);
	uint64_t pg;

	cr_assert_not_null(p, "vq driver: 0x%llx is not in guest RAM", (unsigned long long)gpa);
	cr_assert_not_null(m->host_dirty, "vq driver: dirty tracking is off (vqd_track_dirty)");
	pg = (uint64_t)(p - m->base) / PAGE_SIZE;
	return m->host_dirty[pg / 64] & (1ull << (pg % 64));
}

void vqd_dirty_clear(struct guest_mem *m)
{
	cr_assert_not_null(m->host_dirty, "vq driver: dirty tracking is off (vqd_track_dirty)");
	memset(m->host_dirty, 0, (m->size / PAGE_SIZE + 63) / 64 * sizeof(uint64_t));
}
