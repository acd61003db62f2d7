/*
 * Installing verified bytes into guest RAM: runs of pages that need it, all-zero pages
 * as UFFDIO_ZEROPAGE (the shared zero page: no copy, no memory), the rest as
 * UFFDIO_COPY, one ioctl per run. Used by demand faults and prefetch alike.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "pager_int.h"

uint64_t pg_install(struct pager *p, uint64_t first, const uint8_t *src, uint64_t n,
		    bool prefetch, uint64_t *existing)
{
	uint64_t i = 0, installed = 0;

	while (i < n) {
		uint64_t run = 0, ex = 0, page = first + i;
		uint64_t dst = (uint64_t)(uintptr_t)(p->base + page * PAGE_SIZE);
		const uint8_t *s = src ? src + i * PAGE_SIZE : NULL;
		bool zero = !s || pg_page_is_zero(s);
		int r;

		if (bm_test(p->present_bm, page) || bm_test(p->failed_bm, page)) {
			i++;
			continue;
		}
		while (i + run < n && !bm_test(p->present_bm, page + run) &&
		       !bm_test(p->failed_bm, page + run) &&
		       (!s || pg_page_is_zero(s + run * PAGE_SIZE) == zero))
			run++;
		r = zero ? pg_uffd_zero(p->uffd, dst, run * PAGE_SIZE, &ex)
			 : pg_uffd_copy(p->uffd, dst, s, run * PAGE_SIZE, &ex);
		if (r) {
			for (uint64_t k = 0; k < run; k++)
				bm_set(p->failed_bm, page + k);
			pg_fail(p, "pager: installing guest pages %llu..%llu: %s",
				(unsigned long long)page, (unsigned long long)(page + run - 1),
				strerror(-r));
		} else {
			for (uint64_t k = 0; k < run; k++)
				bm_set(p->present_bm, page + k);
			pg_count(zero ? &p->n_zeroed : &p->n_copied, run - ex);
			if (prefetch)
				pg_count(&p->n_prefetched, run - ex);
			installed += run - ex;
			if (existing)
				*existing += ex;
		}
		i += run;
	}
	return installed;
}

static int discard_run(void *opaque, uint64_t first, uint64_t count)
{
	struct pager *p = opaque;

	if (first >= p->npages || count > p->npages - first)
		return -EINVAL;
	if (madvise(p->base + first * PAGE_SIZE, count * PAGE_SIZE, MADV_DONTNEED) < 0)
		return -errno;
	for (uint64_t k = 0; k < count; k++)
		bm_clear(p->present_bm, first + k);
	return 0;
}

int pager_discard(struct pager *p, const uint64_t *pages)
{
	int r;

	if (pager_error(p, NULL, 0))
		return -EIO; /* a page it could not serve: the VM is wedged for good */
	pthread_mutex_lock(&p->bm_lock);
	r = bm_for_each_run(pages, p->npages, discard_run, p);
	pthread_mutex_unlock(&p->bm_lock);
	return r;
}
