/*
 * A polled virtio 1.x driver for the version-2 MMIO transport (virtio spec 4.2.2,
 * Linux's virtio_mmio.c), split virtqueues only. The guests take no interrupts: they
 * poll the used rings and park (guest_park) when idle; ember wakes a parked vCPU when
 * a device used a buffer.
 *
 * The device is another host thread: the driver writes descriptors and the avail
 * entry, then store-releases avail->idx, then a full barrier before it reads
 * used->flags (a device that sets NO_NOTIFY and then re-checks avail->idx must see
 * our idx, or we must see its flag clear: the classic store/load pair). used->idx is
 * read with acquire so the used entries and buffer contents after it are current.
 */
#include "internal.h"

#define VIRTIO_MAGIC       0x74726976u /* "virt" */
#define RESET_TRIES        1000
#define CONFIG_GEN_TRIES   16
#define MMIO_ARG           "virtio_mmio.device="
#define MMIO_MIN_WINDOW    0x200u      /* registers, then config from 0x100 */

bool virtio_debug;

#define VDBG(...)                                                                       \
	do {                                                                            \
		if (virtio_debug)                                                       \
			guest_print(__VA_ARGS__);                                       \
	} while (0)

/* ---- the command line: "virtio_mmio.device=<size>@<base>:<irq>[:<id>]" ----------- */

static size_t find_char(const char *s, size_t from, size_t len, char c)
{
	while (from < len && s[from] != c)
		from++;
	return from;
}

int virtio_parse_mmio_arg(const char *s, size_t len, struct virtio_mmio_loc *loc)
{
	size_t at = find_char(s, 0, len, '@'), colon, id;
	uint64_t size, base, irq, dev_id;
	int r;

	if (at == len)
		return -EINVAL;
	colon = find_char(s, at + 1, len, ':');
	if (colon == len)
		return -EINVAL;
	id = find_char(s, colon + 1, len, ':'); /* Linux's optional platform-device id */
	r = parse_u64_suffix(s, at, &size);
	if (!r)
		r = parse_u64_suffix(s + at + 1, colon - at - 1, &base);
	if (!r)
		r = parse_u64_suffix(s + colon + 1, id - colon - 1, &irq);
	if (!r && id < len)
		r = parse_u64_suffix(s + id + 1, len - id - 1, &dev_id);
	if (r)
		return r;
	if (base % 4)
		return -EINVAL;
	if (size < MMIO_MIN_WINDOW || irq > UINT32_MAX || base >= GUEST_MAPPED_END ||
	    size > GUEST_MAPPED_END - base)
		return -ERANGE;
	loc->size = size;
	loc->base = base;
	loc->irq = (uint32_t)irq;
	return 0;
}

unsigned virtio_cmdline_devices(struct virtio_mmio_loc *locs, unsigned max)
{
	const char *s = cmdline_get();
	size_t plen = strlen(MMIO_ARG);
	unsigned n = 0;

	while (*s && n < max) {
		const char *w;
		size_t wlen;

		while (*s == ' ' || *s == '\t' || *s == '\n')
			s++;
		w = s;
		while (*s && *s != ' ' && *s != '\t' && *s != '\n')
			s++;
		wlen = (size_t)(s - w);
		if (wlen > plen && !strncmp(w, MMIO_ARG, plen) &&
		    virtio_parse_mmio_arg(w + plen, wlen - plen, &locs[n]) == 0)
			n++;
	}
	return n;
}

/* ---- registers ------------------------------------------------------------------- */

uint32_t virtio_read(const struct virtio_dev *d, uint32_t off)
{
	return mmio_read32(d->base + off);
}

void virtio_write(const struct virtio_dev *d, uint32_t off, uint32_t v)
{
	mmio_write32(d->base + off, v);
}

uint32_t virtio_status(const struct virtio_dev *d)
{
	return virtio_read(d, VIRTIO_MMIO_STATUS);
}

void virtio_set_status(const struct virtio_dev *d, uint32_t status)
{
	VDBG("virtio: %s: status <- 0x%x\n", d->name, status);
	virtio_write(d, VIRTIO_MMIO_STATUS, status);
}

static const char *device_name(uint32_t id)
{
	switch (id) {
	case VIRTIO_ID_RNG:
		return "virtio-rng";
	case VIRTIO_ID_VSOCK:
		return "virtio-vsock";
	default:
		return "virtio";
	}
}

int virtio_probe(struct virtio_dev *d, uint64_t base, uint32_t device_id)
{
	uint32_t magic, id, version;

	memset(d, 0, sizeof(*d));
	d->base = base;
	d->name = device_name(device_id);
	virtio_debug |= cmdline_has_flag("virtio_debug");
	magic = virtio_read(d, VIRTIO_MMIO_MAGIC_VALUE);
	if (magic != VIRTIO_MAGIC) {
		VDBG("virtio: 0x%lx: magic 0x%x is not \"virt\"\n", base, magic);
		return -ENODEV;
	}
	id = virtio_read(d, VIRTIO_MMIO_DEVICE_ID);
	version = virtio_read(d, VIRTIO_MMIO_VERSION);
	VDBG("virtio: 0x%lx: device id %u version %u\n", base, id, version);
	if (id != device_id)
		return id ? -ENXIO : -ENODEV; /* id 0: a placeholder window */
	if (version != 2)
		return -EPROTO; /* 1 is the legacy layout (QueuePFN), which we do not drive */
	d->device_id = id;
	return 0;
}

int virtio_find(uint32_t device_id, struct virtio_dev *d)
{
	struct virtio_mmio_loc locs[16];
	unsigned n = virtio_cmdline_devices(locs, ARRAY_SIZE(locs));
	int best = -ENODEV;

	for (unsigned i = 0; i < n; i++) {
		int r = virtio_probe(d, locs[i].base, device_id);

		if (r == 0) {
			d->irq = locs[i].irq;
			return 0;
		}
		if (r == -EPROTO)
			best = r; /* the device is there, in a layout we do not speak */
	}
	return best;
}

int virtio_reset(const struct virtio_dev *d)
{
	virtio_set_status(d, 0);
	/* spec 4.2.3.1: wait until the reset is complete (it usually is at once) */
	for (unsigned i = 0; i < RESET_TRIES; i++)
		if (virtio_status(d) == 0)
			return 0;
	return -ETIMEDOUT;
}

uint64_t virtio_device_features(const struct virtio_dev *d)
{
	uint64_t lo, hi;

	virtio_write(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	lo = virtio_read(d, VIRTIO_MMIO_DEVICE_FEATURES);
	virtio_write(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	hi = virtio_read(d, VIRTIO_MMIO_DEVICE_FEATURES);
	return hi << 32 | lo;
}

void virtio_write_features(const struct virtio_dev *d, uint64_t features)
{
	virtio_write(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	virtio_write(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)features);
	virtio_write(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	virtio_write(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
}

int virtio_begin(struct virtio_dev *d, uint64_t wanted)
{
	const uint32_t base = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
	uint64_t offered, features;
	uint32_t status;
	int r = virtio_reset(d);

	if (r)
		return r;
	virtio_set_status(d, VIRTIO_CONFIG_S_ACKNOWLEDGE);
	virtio_set_status(d, base);
	offered = virtio_device_features(d);
	VDBG("virtio: %s: device features 0x%lx\n", d->name, offered);
	if (!(offered & (1ull << VIRTIO_F_VERSION_1))) {
		virtio_set_status(d, base | VIRTIO_CONFIG_S_FAILED);
		return -EPROTO;
	}
	features = offered & (wanted | 1ull << VIRTIO_F_VERSION_1);
	virtio_write_features(d, features);
	virtio_set_status(d, base | VIRTIO_CONFIG_S_FEATURES_OK);
	status = virtio_status(d);
	if (!(status & VIRTIO_CONFIG_S_FEATURES_OK)) {
		VDBG("virtio: %s: FEATURES_OK did not stick (status 0x%x)\n", d->name, status);
		return -EIO;
	}
	d->features = features;
	return 0;
}

void virtio_driver_ok(const struct virtio_dev *d)
{
	virtio_set_status(d, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
				     VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
}

uint32_t virtio_config_read32(const struct virtio_dev *d, uint32_t off)
{
	return virtio_read(d, VIRTIO_MMIO_CONFIG + off);
}

uint64_t virtio_config_read64(const struct virtio_dev *d, uint32_t off)
{
	uint64_t lo = 0, hi = 0;

	/* two 32-bit halves: retry if the device changed the config between them */
	for (unsigned i = 0; i < CONFIG_GEN_TRIES; i++) {
		uint32_t gen = virtio_read(d, VIRTIO_MMIO_CONFIG_GENERATION);

		lo = virtio_config_read32(d, off);
		hi = virtio_config_read32(d, off + 4);
		if (virtio_read(d, VIRTIO_MMIO_CONFIG_GENERATION) == gen)
			break;
	}
	return hi << 32 | lo;
}

void virtio_config_write32(const struct virtio_dev *d, uint32_t off, uint32_t v)
{
	virtio_write(d, VIRTIO_MMIO_CONFIG + off, v);
}

/* ---- split virtqueues -------------------------------------------------------------- */

static void write_addr(const struct virtio_dev *d, uint32_t lo_reg, const void *p)
{
	uint64_t a = (uint64_t)(uintptr_t)p; /* identity mapping: the pointer is the GPA */

	virtio_write(d, lo_reg, (uint32_t)a);
	virtio_write(d, lo_reg + 4, (uint32_t)(a >> 32));
}

int virtq_setup(struct virtq *q, struct virtio_dev *d, uint16_t index, struct virtq_ring *ring,
		uint16_t want)
{
	uint32_t max, size = want && want < VIRTQ_MAX_SIZE ? want : VIRTQ_MAX_SIZE;

	virtio_write(d, VIRTIO_MMIO_QUEUE_SEL, index);
	if (virtio_read(d, VIRTIO_MMIO_QUEUE_READY)) {
		VDBG("virtio: %s: queue %u is already live\n", d->name, index);
		return -EBUSY;
	}
	max = virtio_read(d, VIRTIO_MMIO_QUEUE_NUM_MAX);
	if (!max) {
		VDBG("virtio: %s: queue %u does not exist\n", d->name, index);
		return -ENOENT;
	}
	if (size > max)
		size = max;
	while (size & (size - 1)) /* split rings: a power of two */
		size &= size - 1;

	memset(ring, 0, sizeof(*ring));
	memset(q, 0, sizeof(*q));
	q->dev = d;
	q->ring = ring;
	q->index = index;
	q->size = (uint16_t)size;
	q->num_free = (uint16_t)size;
	for (uint16_t i = 0; i < size; i++)
		q->next[i] = (uint16_t)(i + 1);

	virtio_write(d, VIRTIO_MMIO_QUEUE_NUM, size);
	write_addr(d, VIRTIO_MMIO_QUEUE_DESC_LOW, ring->desc);
	write_addr(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, &ring->avail);
	write_addr(d, VIRTIO_MMIO_QUEUE_USED_LOW, &ring->used);
	virtio_write(d, VIRTIO_MMIO_QUEUE_READY, 1);
	if (virtio_read(d, VIRTIO_MMIO_QUEUE_READY) != 1) {
		VDBG("virtio: %s: queue %u: QueueReady did not stick\n", d->name, index);
		return -EIO;
	}
	VDBG("virtio: %s: queue %u: size %u (max %u) desc %p avail %p used %p\n", d->name, index,
	     size, max, (void *)ring->desc, (void *)&ring->avail, (void *)&ring->used);
	return 0;
}

int virtq_add(struct virtq *q, const struct virtq_buf *bufs, unsigned n, void *cookie)
{
	uint16_t head = q->free_head, idx = head;
	bool writable = false;

	if (n == 0 || n > q->size || !cookie)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		if (writable && !bufs[i].device_writes)
			return -EINVAL; /* spec 2.7.4.2: device-writable ones come last */
		writable = bufs[i].device_writes;
	}
	if (q->num_free < n)
		return -ENOSPC;
	for (unsigned i = 0; i < n; i++) {
		struct vring_desc *d = &q->ring->desc[idx];
		bool more = i + 1 < n;

		d->addr = bufs[i].addr;
		d->len = bufs[i].len;
		d->flags = (uint16_t)((bufs[i].device_writes ? VRING_DESC_F_WRITE : 0) |
				      (more ? VRING_DESC_F_NEXT : 0));
		d->next = more ? q->next[idx] : 0;
		idx = q->next[idx];
	}
	q->free_head = idx;
	q->num_free = (uint16_t)(q->num_free - n);
	q->chain_len[head] = (uint16_t)n;
	q->cookie[head] = cookie;
	q->in_flight[head] = true;
	q->ring->avail.ring[q->avail_idx & (q->size - 1)] = head;
	q->avail_idx++;
	return head;
}

void virtq_publish(struct virtq *q)
{
	/* release: the descriptors and the avail entry before the index that exposes them */
	__atomic_store_n(&q->ring->avail.idx, q->avail_idx, __ATOMIC_RELEASE);
}

bool virtq_kick(struct virtq *q)
{
	virtq_publish(q);
	if (q->kicked_idx == q->avail_idx)
		return false; /* nothing new since the last decision */
	q->kicked_idx = q->avail_idx;
	/* our idx store before the flag load (see the top of the file) */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&q->ring->used.flags, __ATOMIC_RELAXED) & VRING_USED_F_NO_NOTIFY)
		return false;
	virtio_write(q->dev, VIRTIO_MMIO_QUEUE_NOTIFY, q->index);
	q->kicks++;
	return true;
}

bool virtq_has_used(const struct virtq *q)
{
	return __atomic_load_n(&q->ring->used.idx, __ATOMIC_ACQUIRE) != q->last_used;
}

void *virtq_get(struct virtq *q, uint32_t *len)
{
	uint16_t used = __atomic_load_n(&q->ring->used.idx, __ATOMIC_ACQUIRE), id, n;
	const struct vring_used_elem *e;
	void *cookie;

	if (used == q->last_used)
		return NULL;
	GUEST_ASSERT_MSG((uint16_t)(used - q->last_used) <= q->size,
			 "%s queue %u: used->idx jumped from %u to %u (size %u)", q->dev->name,
			 q->index, q->last_used, used, q->size);
	e = &q->ring->used.ring[q->last_used & (q->size - 1)];
	id = (uint16_t)e->id;
	GUEST_ASSERT_MSG(e->id < q->size && q->in_flight[id],
			 "%s queue %u: used entry %u names descriptor %u, which is not in flight",
			 q->dev->name, q->index, q->last_used, e->id);
	*len = e->len;
	q->last_used++;
	cookie = q->cookie[id];
	q->in_flight[id] = false;
	/* the chain's descriptors back on the free list, from our copy of the links */
	n = q->chain_len[id];
	for (uint16_t k = 1, idx = id; k <= n; k++) {
		if (k == n) {
			q->next[idx] = q->free_head;
			break;
		}
		idx = q->next[idx];
	}
	q->free_head = id;
	q->num_free = (uint16_t)(q->num_free + n);
	return cookie;
}

void virtq_push_raw(struct virtq *q, uint16_t head, uint16_t bump)
{
	q->ring->avail.ring[q->avail_idx & (q->size - 1)] = head;
	q->avail_idx = (uint16_t)(q->avail_idx + bump);
	virtq_publish(q);
}
