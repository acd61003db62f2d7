/*
 * Working-set recording: the order in which the guest (and the VMM on its behalf)
 * first touches each page, up to pager_record_stop. Only faults are seen, so record
 * without prefetch: a prefetched page never faults.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pager_int.h"

void pg_record_page(struct pager *p, uint64_t page)
{
	if (!atomic_load_explicit(&p->recording, memory_order_relaxed))
		return;
	pthread_mutex_lock(&p->rec_lock);
	if (!atomic_load(&p->recording)) {
		pthread_mutex_unlock(&p->rec_lock);
		return;
	}
	if (p->nr_rec == p->cap_rec) {
		uint64_t cap = p->cap_rec ? p->cap_rec * 2 : 4096;
		uint64_t *n = realloc(p->rec, cap * sizeof(*n));

		if (!n) {
			/* a shorter working set only costs prefetch coverage */
			atomic_store(&p->recording, false);
			pthread_mutex_unlock(&p->rec_lock);
			pr_warn("pager: out of memory recording the working set; recording stopped");
			return;
		}
		p->rec = n;
		p->cap_rec = cap;
	}
	p->rec[p->nr_rec++] = page;
	pthread_mutex_unlock(&p->rec_lock);
}

void pager_record_stop(struct pager *p)
{
	/* under the lock: once this returns, the list no longer grows */
	pthread_mutex_lock(&p->rec_lock);
	atomic_store(&p->recording, false);
	pthread_mutex_unlock(&p->rec_lock);
}

int pager_ws_pages(struct pager *p, uint64_t **pages, uint64_t *n)
{
	int r = 0;

	*pages = NULL;
	*n = 0;
	if (!p->record_enabled)
		return -EINVAL;
	pthread_mutex_lock(&p->rec_lock);
	if (p->nr_rec) {
		*pages = malloc(p->nr_rec * sizeof(**pages));
		if (*pages) {
			memcpy(*pages, p->rec, p->nr_rec * sizeof(**pages));
			*n = p->nr_rec;
		} else {
			r = -ENOMEM;
		}
	}
	pthread_mutex_unlock(&p->rec_lock);
	return r;
}

int pager_save_ws(struct pager *p, const char *dir, bool replace, struct errbuf *eb)
{
	uint64_t *pages = NULL, n = 0;
	struct snap_err se;
	int r;

	pager_record_stop(p);
	r = pager_ws_pages(p, &pages, &n);
	if (r)
		return errbuf_set(eb, r, "working set: %s", strerror(-r));
	r = replace ? snap_ws_write(dir, pages, n, &se) : snap_ws_write_new(dir, pages, n, &se);
	free(pages);
	if (r)
		return errbuf_set(eb, r, "working set of %s: %s", dir, se.msg);
	pr_info("recorded a working set of %llu pages in %s", (unsigned long long)n, dir);
	return 0;
}
