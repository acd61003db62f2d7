/*
 * Demand faults: one read() of the uffd gives a batch of fault messages; every page
 * that needs data is read in one io_uring submission, then installed. Two threads
 * faulting the same page give two messages: the first install wakes both, and a
 * message for a page that is already installed is answered with a wake only.
 * lz4 images are served a whole chunk at a time (lz4src.c).
 */
#include <errno.h>
#include <linux/userfaultfd.h>
#include <string.h>
#include <unistd.h>

#include "pager_int.h"

/* A fault on a page we already installed: someone else's fault won the race. */
static void answer_raced(struct pager *p, uint64_t page)
{
	uint64_t dst = (uint64_t)(uintptr_t)(p->base + page * PAGE_SIZE);
	uint64_t existing = 0;

	/*
	 * ZEROPAGE, not a bare WAKE: if the page was discarded since (MADV_DONTNEED), zero
	 * is what anonymous memory reads as, and a bare wake would refault forever.
	 */
	if (pg_uffd_zero(p->uffd, dst, PAGE_SIZE, &existing) == 0 && existing)
		pg_uffd_wake(p->uffd, dst, PAGE_SIZE);
	pg_count(&p->n_raced, 1);
}

static unsigned collect_pages(struct pager *p, const struct uffd_msg *msgs, unsigned n,
			      uint64_t *pages)
{
	unsigned np = 0;

	for (unsigned i = 0; i < n; i++) {
		uint64_t addr = msgs[i].arg.pagefault.address & ~(PAGE_SIZE - 1);
		uint64_t base = (uint64_t)(uintptr_t)p->base, page;
		bool dup = false;

		if (msgs[i].event != UFFD_EVENT_PAGEFAULT || addr < base || addr - base >= p->size)
			continue;
		page = (addr - base) / PAGE_SIZE;
		pg_count(&p->n_faults, 1);
		for (unsigned j = 0; j < np && !dup; j++)
			dup = pages[j] == page;
		if (!dup)
			pages[np++] = page;
	}
	return np;
}

static void serve_raw(struct pager *p, const uint64_t *pages, unsigned np, uint64_t t0)
{
	struct pg_read reads[PG_MAX_BATCH];
	unsigned nr = 0;
	int r;

	for (unsigned i = 0; i < np; i++) {
		reads[nr] = (struct pg_read){ .off = pages[i] * PAGE_SIZE, .len = PAGE_SIZE,
					      .dst = p->dbuf + nr * PAGE_SIZE,
					      .owner = (void *)(uintptr_t)pages[i] };
		nr++;
	}
	r = pg_io_read_all(&p->dio, reads, nr);
	for (unsigned i = 0; i < nr; i++) {
		uint64_t page = (uint64_t)(uintptr_t)reads[i].owner;
		uint64_t existing = 0;

		if (r < 0 || reads[i].res != (int32_t)reads[i].len) {
			int e = r < 0 ? r : reads[i].res < 0 ? reads[i].res : -ENODATA;

			/* never install bytes we did not read: the faulter stays blocked */
			bm_set(p->failed_bm, page);
			pg_fail(p, "pager: reading guest page %llu (file offset %llu) failed: %s",
				(unsigned long long)page, (unsigned long long)reads[i].off,
				e == -ENODATA ? "short read (memory file truncated?)" : strerror(-e));
			continue;
		}
		pg_count(&p->n_bytes_read, reads[i].len);
		pg_install(p, page, reads[i].dst, 1, false, &existing);
		if (existing) {
			pg_count(&p->n_raced, existing);
			pg_uffd_wake(p->uffd, (uint64_t)(uintptr_t)(p->base + page * PAGE_SIZE), PAGE_SIZE);
		}
		pg_lat_record(p, pg_now_ns() - t0);
	}
}

int pg_fault_serve(struct pager *p)
{
	struct uffd_msg msgs[PG_MAX_BATCH];
	uint64_t pages[PG_MAX_BATCH], todo[PG_MAX_BATCH];
	unsigned np, nt = 0;
	ssize_t n;
	uint64_t t0;

	n = read(p->uffd, msgs, sizeof(msgs));
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	t0 = pg_now_ns();
	np = collect_pages(p, msgs, (unsigned)((size_t)n / sizeof(msgs[0])), pages);
	if (!np)
		return 0;
	pg_count(&p->n_batches, 1);
	for (unsigned i = 0; i < np; i++) {
		if (bm_test(p->failed_bm, pages[i]))
			continue;
		if (bm_test(p->present_bm, pages[i])) {
			answer_raced(p, pages[i]);
			continue;
		}
		pg_record_page(p, pages[i]);
		todo[nt++] = pages[i];
	}
	if (nt && p->lz4)
		pg_lz4_serve(p, todo, nt, t0);
	else if (nt)
		serve_raw(p, todo, nt, t0);
	return 0;
}
