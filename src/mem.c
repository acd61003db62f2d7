/* Guest RAM: the region layout around the 32-bit hole, the host mapping, memslots,
 * and gpa_ptr(), the one place a guest physical address becomes a host pointer. */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

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

int mem_alloc_anon(struct guest_mem *m, struct errbuf *eb)
{
	void *p = mmap(NULL, m->size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return errbuf_set(eb, -errno, "cannot map %llu MiB of guest RAM: %s",
				  (unsigned long long)(m->size / MiB), strerror(errno));
	m->base = p;
	m->owned = true;
	return 0;
}

void mem_free(struct guest_mem *m)
{
	if (m->base && m->owned)
		munmap(m->base, m->size);
	m->base = NULL;
	m->owned = false;
}

int mem_register(const struct guest_mem *m, int vm_fd, bool dirty_log, struct errbuf *eb)
{
	for (unsigned i = 0; i < m->nr_regions; i++) {
		struct kvm_userspace_memory_region r = {
			.slot = i,
			.flags = dirty_log ? KVM_MEM_LOG_DIRTY_PAGES : 0,
			.guest_phys_addr = m->regions[i].gpa,
			.memory_size = m->regions[i].size,
			.userspace_addr = (uint64_t)(uintptr_t)(m->base + m->regions[i].offset),
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

void *gpa_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	int i = mem_region_of(m, gpa);
	uint64_t off;

	if (i < 0 || !m->base)
		return NULL;
	off = gpa - m->regions[i].gpa;
	/* written as a subtraction so that huge len cannot wrap */
	if (len > m->regions[i].size - off)
		return NULL;
	return m->base + m->regions[i].offset + off;
}

int gpa_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len)
{
	void *p = gpa_ptr(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(dst, p, len);
	return 0;
}

int gpa_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len)
{
	void *p = gpa_ptr(m, gpa, len);

	if (!p)
		return -EFAULT;
	memcpy(p, src, len);
	return 0;
}
