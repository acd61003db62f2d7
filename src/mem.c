/* Guest RAM: the region layout around the 32-bit hole, the host mapping, memslots,
 * and gpa_ptr(), the one place a guest physical address becomes a host pointer. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <unistd.h>

#include "vmm.h"

int mem_layout(struct guest_mem *m, uint64_t ram_bytes, struct errbuf *eb)
{
	uint64_t low;

	memset(m, 0, sizeof(*m));
	if (ram_bytes == 0 || ram_bytes % PAGE_SIZE)
		return errbuf_set(eb, -EINVAL, "guest RAM size %llu is not a positive multiple of 4 KiB",
				  (unsigned long long)ram_bytes);
	/* x86 physical address width is at least 36 bits on anything KVM runs on. */
	if (ram_bytes > (1ull << 36) - MEM_HOLE_END)
		return errbuf_set(eb, -E2BIG, "guest RAM size %llu MiB is too large",
				  (unsigned long long)(ram_bytes / MiB));
	low = ram_bytes < MEM_HOLE_START ? ram_bytes : MEM_HOLE_START;
	m->regions[0] = (struct mem_region){ .gpa = 0, .size = low, .offset = 0 };
	m->nr_regions = 1;
	if (ram_bytes > low) {
		m->regions[1] = (struct mem_region){
			.gpa = MEM_HOLE_END, .size = ram_bytes - low, .offset = low };
		m->nr_regions = 2;
	}
	m->size = ram_bytes;
	return 0;
}

int mem_reserve(struct guest_mem *m, struct errbuf *eb)
{
	void *p;

	if (m->base || m->reserved)
		return errbuf_set(eb, -EINVAL, "guest RAM is already mapped");
	p = mmap(NULL, m->size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return errbuf_set(eb, -errno, "cannot reserve %llu MiB of address space for guest "
				  "RAM: %s", (unsigned long long)(m->size / MiB), strerror(errno));
	m->reserved = p;
	return 0;
}

void *mem_map_backing(struct guest_mem *m, int flags, int fd)
{
	return mmap(m->reserved, m->size, PROT_READ | PROT_WRITE,
		    flags | (m->reserved ? MAP_FIXED : 0), fd, 0);
}

void mem_unmap_backing(struct guest_mem *m, void *p)
{
	/* never a hole another thread's mmap could land in while the reservation is ours */
	if (m->reserved && p == m->reserved)
		mmap(p, m->size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
		     -1, 0);
	else
		munmap(p, m->size);
}

int mem_alloc_anon(struct guest_mem *m, struct errbuf *eb)
{
	void *p = mem_map_backing(m, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1);

	if (p == MAP_FAILED)
		return errbuf_set(eb, -errno, "cannot map %llu MiB of guest RAM: %s",
				  (unsigned long long)(m->size / MiB), strerror(errno));
	m->base = p;
	m->owned = true;
	m->anonymous = true;
	return 0;
}

int mem_map_file(struct guest_mem *m, int fd, struct errbuf *eb)
{
	void *p = mem_map_backing(m, MAP_PRIVATE | MAP_NORESERVE, fd);

	if (p == MAP_FAILED)
		return errbuf_set(eb, -errno, "cannot map the %llu MiB memory file: %s",
				  (unsigned long long)(m->size / MiB), strerror(errno));
	m->base = p;
	m->owned = true;
	return 0;
}

int mem_set_regions(struct guest_mem *m, const struct mem_region *r, unsigned n, uint64_t size,
		    struct errbuf *eb)
{
	memset(m, 0, sizeof(*m));
	if (n == 0 || n > MEM_MAX_REGIONS)
		return errbuf_set(eb, -EINVAL, "%u memory regions, ember supports 1..%u", n,
				  MEM_MAX_REGIONS);
	if (size == 0 || size % PAGE_SIZE)
		return errbuf_set(eb, -EINVAL, "memory size %llu is not a positive multiple of 4 KiB",
				  (unsigned long long)size);
	for (unsigned i = 0; i < n; i++) {
		/* the snapshot library checked these; the host mapping depends on them */
		if (r[i].size == 0 || r[i].offset > size || r[i].size > size - r[i].offset)
			return errbuf_set(eb, -EINVAL, "memory region %u lies outside the memory image", i);
		m->regions[i] = r[i];
	}
	m->nr_regions = n;
	m->size = size;
	return 0;
}

void mem_free(struct guest_mem *m)
{
	if (m->base && m->owned)
		munmap(m->base, m->size);
	else if (m->reserved)
		munmap(m->reserved, m->size);
	m->reserved = NULL;
	free(m->host_dirty);
	free(m->since_reset);
	m->host_dirty = m->since_reset = NULL;
	m->base = NULL;
	m->owned = false;
}

int mem_register(struct guest_mem *m, int vm_fd, bool dirty_log, struct errbuf *eb)
{
	uint8_t *host = m->base ? m->base : m->reserved;

	if (!host)
		return errbuf_set(eb, -EINVAL, "guest RAM has neither memory nor reserved space");
	if (dirty_log) {
		m->host_dirty = bm_alloc(m->size / PAGE_SIZE);
		m->since_reset = bm_alloc(m->size / PAGE_SIZE);
		if (!m->host_dirty || !m->since_reset)
			return errbuf_set(eb, -ENOMEM, "out of memory for the dirty bitmap");
		m->dirty_log = true;
	}
	for (unsigned i = 0; i < m->nr_regions; i++) {
		struct kvm_userspace_memory_region r = {
			.slot = i,
			.flags = dirty_log ? KVM_MEM_LOG_DIRTY_PAGES : 0,
			.guest_phys_addr = m->regions[i].gpa,
			.memory_size = m->regions[i].size,
			.userspace_addr = (uint64_t)(uintptr_t)(host + m->regions[i].offset),
		};
		if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
			return errbuf_set(eb, -errno, "KVM_SET_USER_MEMORY_REGION slot %u: %s", i,
					  strerror(errno));
	}
	return 0;
}

int mem_region_of(const struct guest_mem *m, uint64_t gpa)
{
	for (unsigned i = 0; i < m->nr_regions; i++)
		if (gpa >= m->regions[i].gpa && gpa - m->regions[i].gpa < m->regions[i].size)
			return (int)i;
	return -1;
}

bool gpa_in_ram(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	int i = mem_region_of(m, gpa);

	/* written as a subtraction so that huge len cannot wrap */
	return i >= 0 && len <= m->regions[i].size - (gpa - m->regions[i].gpa);
}

const void *gpa_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	int i = mem_region_of(m, gpa);

	if (!m->base || !gpa_in_ram(m, gpa, len))
		return NULL;
	return m->base + m->regions[i].offset + (gpa - m->regions[i].gpa);
}

void *gpa_map_write(struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	void *p = (void *)gpa_ptr(m, gpa, len);

	if (p)
		mem_mark_dirty(m, gpa, len);
	return p;
}

int gpa_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len)
{
	const void *p = gpa_ptr(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(dst, p, len);
	return 0;
}

int gpa_write(struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len)
{
	void *p = gpa_map_write(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(p, src, len);
	return 0;
}

void mem_mark_dirty(struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	const uint8_t *p = gpa_ptr(m, gpa, len);
	uint64_t first, last;

	if (!m->host_dirty || !p || len == 0)
		return;
	first = (uint64_t)(p - m->base) / PAGE_SIZE;
	last = ((uint64_t)(p - m->base) + len - 1) / PAGE_SIZE;
	for (uint64_t pg = first; pg <= last; pg++)
		__atomic_or_fetch(&m->host_dirty[pg / 64], 1ull << (pg % 64), __ATOMIC_RELAXED);
}

int mem_dirty_collect(struct guest_mem *m, int vm_fd, uint64_t *bitmap, struct errbuf *eb)
{
	uint64_t words = bm_words(m->size / PAGE_SIZE);

	if (!m->dirty_log)
		return errbuf_set(eb, -EINVAL, "dirty page tracking is off for this VM");
	for (unsigned i = 0; i < m->nr_regions; i++) {
		uint64_t pages = m->regions[i].size / PAGE_SIZE, base = m->regions[i].offset / PAGE_SIZE;
		uint64_t *slot = bm_alloc(pages);
		struct kvm_dirty_log log = { .slot = i, .dirty_bitmap = slot };

		if (!slot)
			return errbuf_set(eb, -ENOMEM, "out of memory for the dirty bitmap");
		if (ioctl(vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
			int r = -errno;

			free(slot);
			return errbuf_set(eb, r, "KVM_GET_DIRTY_LOG slot %u: %s", i, strerror(-r));
		}
		/* word by word, set bits only: a bit at a time cost ~70 µs per 256 MiB here,
		 * most of an in-place reset's memory phase when few pages were written */
		for (uint64_t w = 0; w < bm_words(pages); w++) {
			uint64_t bits = slot[w];

			if (bits && base % 64 == 0) {
				bitmap[base / 64 + w] |= bits; /* KVM leaves the bits past `pages` clear */
				continue;
			}
			while (bits) {
				uint64_t pg = base + w * 64 + (uint64_t)__builtin_ctzll(bits);

				bm_set(bitmap, pg);
				bits &= bits - 1;
			}
		}
		free(slot);
	}
	for (uint64_t w = 0; w < words; w++)
		bitmap[w] |= __atomic_exchange_n(&m->host_dirty[w], 0, __ATOMIC_RELAXED);
	if (bitmap != m->since_reset)
		for (uint64_t w = 0; w < words; w++)
			m->since_reset[w] |= bitmap[w];
	return 0;
}

int mem_written_since_reset(struct guest_mem *m, int vm_fd, uint64_t **bitmap,
			    struct errbuf *eb)
{
	int r = mem_dirty_collect(m, vm_fd, m->since_reset, eb);

	*bitmap = r ? NULL : m->since_reset;
	return r;
}

uint64_t *bm_alloc(uint64_t nbits)
{
	return calloc(bm_words(nbits), sizeof(uint64_t));
}

int bm_for_each_run(const uint64_t *bm, uint64_t npages,
		    int (*fn)(void *opaque, uint64_t first, uint64_t count), void *opaque)
{
	uint64_t pg = 0;

	while (pg < npages) {
		uint64_t w = bm[pg / 64] >> (pg % 64), first;
		int r;

		if (!w) {
			pg = (pg / 64 + 1) * 64; /* the rest of this word is clear */
			continue;
		}
		pg += (uint64_t)__builtin_ctzll(w);
		if (pg >= npages)
			break;
		first = pg;
		while (pg < npages && bm_test(bm, pg))
			pg++;
		r = fn(opaque, first, pg - first);
		if (r)
			return r;
	}
	return 0;
}


#define PAGEMAP_PRESENT (1ull << 63)
#define PAGEMAP_SWAPPED (1ull << 62)

int mem_populated_bitmap(const struct guest_mem *m, uint64_t *bitmap, struct errbuf *eb)
{
	uint64_t pages = m->size / PAGE_SIZE, ent[4096];
	uint64_t first = (uint64_t)(uintptr_t)m->base / PAGE_SIZE;
	int fd, r = 0;

	if (!m->anonymous)
		return errbuf_set(eb, -EINVAL, "guest RAM is not anonymous memory");
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errbuf_set(eb, -errno, "/proc/self/pagemap: %s", strerror(errno));
	for (uint64_t pg = 0; pg < pages;) {
		uint64_t n = pages - pg < ARRAY_SIZE(ent) ? pages - pg : ARRAY_SIZE(ent);
		ssize_t got = pread(fd, ent, n * sizeof(ent[0]), (off_t)((first + pg) * sizeof(ent[0])));

		if (got <= 0 || got % (ssize_t)sizeof(ent[0])) {
			r = errbuf_set(eb, got < 0 ? -errno : -EIO, "/proc/self/pagemap: short read");
			break;
		}
		n = (uint64_t)got / sizeof(ent[0]);
		for (uint64_t i = 0; i < n; i++)
			if (ent[i] & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED))
				bm_set(bitmap, pg + i);
		pg += n;
	}
	close(fd);
	return r;
}
