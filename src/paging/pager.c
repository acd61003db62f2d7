/*
 * The pager object and its thread. One thread installs every page, so the page
 * bitmaps need no locks and demand faults and prefetch never race each other: the
 * loop serves all pending faults first, then one bounded prefetch step, and repeats.
 *
 * Waking a sleeping thread costs ~20 us here (idle vCPUs halt; PLATFORM.md): a
 * blocked pager thread makes every fault pay it. So after serving a fault the thread
 * busy-polls the uffd for a while (default 50 us) before it blocks. Measured on 4096
 * back-to-back random 4 KiB faults: p50 50 us without, 17 us with 30 us, 16 us with
 * 100 us of spinning.
 *
 * Zero pages: a hole map from SEEK_DATA/SEEK_HOLE was measured at ~15 ms for a
 * 256 MiB file with a random 1/3 of its pages zero (14.5k extents, ~0.5 us per lseek),
 * too slow for the restore path; instead every page read is checked for zero bytes
 * (~0.1 us) and installed as UFFDIO_ZEROPAGE, which costs no memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pager_int.h"

bool pg_page_is_zero(const uint8_t *page)
{
	const uint64_t *w = (const uint64_t *)page;
	uint64_t acc = 0;

	if (w[0] | w[PAGE_SIZE / 8 - 1])
		return false;
	for (size_t i = 0; i < PAGE_SIZE / 8; i += 8)
		acc |= w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] |
		       w[i + 7];
	return acc == 0;
}

uint64_t pg_now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

void pg_fail(struct pager *p, const char *fmt, ...)
{
	bool first = false;
	va_list ap;

	pg_count(&p->n_errors, 1);
	pthread_mutex_lock(&p->err_lock);
	if (!atomic_load(&p->failed)) {
		va_start(ap, fmt);
		vsnprintf(p->err, sizeof(p->err), fmt, ap);
		va_end(ap);
		atomic_store(&p->failed, true);
		first = true;
	}
	pthread_mutex_unlock(&p->err_lock);
	if (first && p->cfg.on_error)
		p->cfg.on_error(p->cfg.opaque, p->err);
}

/* Latency histogram: 4 buckets per power of two (~19% resolution). */
static unsigned lat_bucket(uint64_t ns)
{
	unsigned e;

	if (ns < 4)
		return (unsigned)ns;
	e = 63u - (unsigned)__builtin_clzll(ns);
	return 4 * (e - 1) + (unsigned)((ns >> (e - 2)) & 3);
}

static uint64_t lat_bucket_top(unsigned b)
{
	unsigned e = b / 4 + 1;

	if (b < 4)
		return b;
	return ((4ull + b % 4 + 1) << (e - 2)) - 1;
}

void pg_lat_record(struct pager *p, uint64_t ns)
{
	pg_count(&p->lat_count, 1);
	pg_count(&p->lat_sum_ns, ns);
	if (ns > __atomic_load_n(&p->lat_max_ns, __ATOMIC_RELAXED))
		__atomic_store_n(&p->lat_max_ns, ns, __ATOMIC_RELAXED);
	pg_count(&p->lat_hist[lat_bucket(ns)], 1);
}

static uint64_t lat_percentile(const uint64_t *hist, unsigned pct)
{
	uint64_t count = 0, want, seen = 0;

	for (unsigned b = 0; b < PG_LAT_BUCKETS; b++)
		count += hist[b];
	want = (count * pct + 99) / 100;
	for (unsigned b = 0; b < PG_LAT_BUCKETS && count; b++) {
		seen += hist[b];
		if (seen >= want)
			return lat_bucket_top(b);
	}
	return 0;
}

static int check_config(const struct guest_mem *m, const struct pager_config *c,
			struct errbuf *eb)
{
	struct stat st;

	if (m->base)
		return errbuf_set(eb, -EINVAL, "pager: guest RAM is already mapped");
	if (c->size != m->size || c->size == 0 || c->size % PAGE_SIZE)
		return errbuf_set(eb, -EINVAL, "pager: size %llu does not match guest RAM (%llu bytes, "
				  "a positive multiple of 4 KiB)", (unsigned long long)c->size,
				  (unsigned long long)m->size);
	if (c->lz4) {
		const struct snap_lz4_index *ix = c->lz4;

		/* the index was validated against the state; check what the pager relies on */
		if (ix->mem_size != c->size || ix->chunk_size < PAGE_SIZE ||
		    ix->chunk_size != 1u << ix->chunk_shift ||
		    ix->nr_chunks != (c->size + ix->chunk_size - 1) / ix->chunk_size)
			return errbuf_set(eb, -EINVAL, "pager: lz4 index (%llu bytes in %llu chunks of "
					  "%u) does not describe %llu bytes of guest RAM",
					  (unsigned long long)ix->mem_size,
					  (unsigned long long)ix->nr_chunks, ix->chunk_size,
					  (unsigned long long)c->size);
		return 0;
	}
	if (fstat(c->mem_fd, &st) < 0)
		return errbuf_set(eb, -errno, "pager: memory file: %s", strerror(errno));
	if (!S_ISREG(st.st_mode))
		return errbuf_set(eb, -EINVAL, "pager: memory file is not a regular file");
	if ((uint64_t)st.st_size < c->size)
		return errbuf_set(eb, -EINVAL, "pager: memory file holds %llu bytes, guest RAM is %llu",
				  (unsigned long long)st.st_size, (unsigned long long)c->size);
	return 0;
}

/*
 * Demand staging: raw, one page per fault of a batch; lz4, per chunk its stored bytes
 * then its decoded bytes, as many chunks as fit in ~4 MiB (big chunks: fewer per batch).
 */
static void staging_geometry(struct pager *p)
{
	if (!p->lz4) {
		p->dslot = PAGE_SIZE;
		p->dslots = PG_MAX_BATCH;
	} else {
		uint64_t slots;

		p->zoff = (p->lz4->max_stored + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
		p->dslot = p->zoff + p->lz4->chunk_size;
		slots = (4 * MiB) / p->dslot;
		p->dslots = slots < 1 ? 1 : slots > PG_MAX_BATCH ? PG_MAX_BATCH : (unsigned)slots;
	}
	p->dbuf_len = p->dslots * p->dslot;
}

static void pager_free(struct pager *p)
{
	pg_prefetch_free(p);
	pg_io_exit(&p->dio);
	if (p->dbuf)
		munmap(p->dbuf, p->dbuf_len);
	if (p->uffd >= 0)
		close(p->uffd);
	if (p->stop_fd >= 0)
		close(p->stop_fd);
	if (p->go_fd >= 0)
		close(p->go_fd);
	if (p->fd >= 0)
		close(p->fd);
	free(p->present_bm);
	free(p->failed_bm);
	free(p->rec);
	pthread_mutex_destroy(&p->rec_lock);
	pthread_mutex_destroy(&p->err_lock);
	pthread_mutex_destroy(&p->bm_lock);
	free(p);
}

int pager_create(struct guest_mem *m, const struct pager_config *c, struct pager **out,
		 struct errbuf *eb)
{
	struct pager *p;
	void *base;
	int r;

	*out = NULL;
	r = check_config(m, c, eb);
	if (r)
		return r;
	p = calloc(1, sizeof(*p));
	if (!p)
		return errbuf_set(eb, -ENOMEM, "pager: out of memory");
	pthread_mutex_init(&p->rec_lock, NULL);
	pthread_mutex_init(&p->err_lock, NULL);
	pthread_mutex_init(&p->bm_lock, NULL);
	p->uffd = p->stop_fd = p->go_fd = p->fd = -1;
	p->dio.efd = -1;
	p->cfg = *c;
	p->cfg.ws_pages = NULL;
	p->m = m;
	p->size = c->size;
	p->npages = c->size / PAGE_SIZE;
	p->lz4 = c->lz4;
	p->chunk_pages = c->lz4 ? c->lz4->chunk_size / PAGE_SIZE : 1;
	p->record_enabled = c->record_ws;
	p->spin_ns = c->spin_us < 0 ? 0 : c->spin_us ? (uint64_t)c->spin_us * 1000 : PG_SPIN_NS;
	atomic_store(&p->recording, c->record_ws);
	atomic_store(&p->prefetch_done, c->nr_ws_pages == 0);

	/* our own fd: the caller may close the snapshot's (snap_dir_close) once we run */
	p->fd = fcntl(c->lz4 ? c->lz4->fd : c->mem_fd, F_DUPFD_CLOEXEC, 0);
	if (p->fd < 0) {
		r = errbuf_set(eb, -errno, "pager: memory file: %s", strerror(errno));
		goto fail;
	}
	r = -ENOMEM;
	p->present_bm = bm_alloc(p->npages);
	p->failed_bm = bm_alloc(p->npages);
	if (!p->present_bm || !p->failed_bm) {
		errbuf_set(eb, r, "pager: out of memory for the page bitmaps");
		goto fail;
	}
	p->go_fd = eventfd(c->prefetch_deferred ? 0 : 1, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->go_fd < 0) {
		r = errbuf_set(eb, -errno, "pager: eventfd: %s", strerror(errno));
		goto fail;
	}
	p->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->stop_fd < 0) {
		r = errbuf_set(eb, -errno, "pager: eventfd: %s", strerror(errno));
		goto fail;
	}
	staging_geometry(p);
	p->dbuf = mmap(NULL, p->dbuf_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p->dbuf == MAP_FAILED) {
		p->dbuf = NULL;
		r = errbuf_set(eb, -errno, "pager: staging buffer: %s", strerror(errno));
		goto fail;
	}
	r = pg_io_init(&p->dio, p->fd, p->dslots, p->dbuf, p->dbuf_len, !c->no_io_uring, false, eb);
	if (r)
		goto fail;
	if (c->nr_ws_pages) {
		r = pg_prefetch_create(p, c->ws_pages, c->nr_ws_pages, eb);
		if (r)
			goto fail;
	}
	r = pg_uffd_open(eb);
	if (r < 0)
		goto fail;
	p->uffd = r;
	base = mem_map_backing(m, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1);
	if (base == MAP_FAILED) {
		r = errbuf_set(eb, -errno, "pager: cannot map %llu MiB of guest RAM: %s",
			       (unsigned long long)(p->size / MiB), strerror(errno));
		goto fail;
	}
	r = pg_uffd_register(p->uffd, base, p->size, eb);
	if (r) {
		mem_unmap_backing(m, base);
		goto fail;
	}
	p->base = base;
	m->base = base;
	m->owned = true;
	*out = p;
	return 0;
fail:
	pager_free(p);
	return r;
}

static void *pager_thread(void *arg)
{
	struct pager *p = arg;
	uint64_t last_fault = 0, count;
	bool go = !p->pf;
	sigset_t all;

	/* signals are for the VMM's threads (vCPU kicks, signalfd), never this one */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	pthread_setname_np(pthread_self(), "ember-pager");
	if (p->cfg.seccomp) {
		/* from here on, every fault and every memory-file byte is handled under it */
		struct seccomp_fds fds = { .n = 0 };
		int r;

		seccomp_fds_add(&fds, STDERR_FILENO);
		seccomp_fds_add(&fds, log_fd_get());
		seccomp_fds_add(&fds, p->cfg.notify_fd);
		r = seccomp_apply(SECCOMP_PAGER, &fds);
		if (r) {
			pg_fail(p, "pager: seccomp: %s", strerror(-r));
			return NULL;
		}
	}
	for (;;) {
		struct pollfd fds[3] = {
			{ .fd = p->uffd, .events = POLLIN },
			{ .fd = p->stop_fd, .events = POLLIN },
			{ .fd = go ? pg_prefetch_poll_fd(p) : p->go_fd, .events = POLLIN },
		};
		int timeout = go && pg_prefetch_ready(p) ? 0 : -1;
		int n;

		if (!go && read(p->go_fd, &count, sizeof(count)) == sizeof(count)) {
			go = true;
			pthread_mutex_lock(&p->bm_lock);
			pg_prefetch_setup(p);
			pg_prefetch_step(p);
			pthread_mutex_unlock(&p->bm_lock);
			continue;
		}

		/* busy-poll a while after a fault: the next one is likely close behind */
		if (timeout < 0 && p->spin_ns && pg_now_ns() - last_fault < p->spin_ns)
			timeout = 0;
		n = poll(fds, fds[2].fd >= 0 ? 3 : 2, timeout);

		if (n < 0 && errno != EINTR) {
			pg_fail(p, "pager: poll: %s", strerror(errno));
			break;
		}
		if (n < 0)
			continue;
		if (fds[1].revents)
			break;
		if (fds[0].revents & POLLIN) {
			int r;

			pthread_mutex_lock(&p->bm_lock);
			r = pg_fault_serve(p);
			pthread_mutex_unlock(&p->bm_lock);

			last_fault = pg_now_ns();
			if (r < 0) {
				pg_fail(p, "pager: reading the userfaultfd: %s", strerror(-r));
				break;
			}
		} else if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
			pg_fail(p, "pager: userfaultfd closed");
			break;
		}
		if (go && pg_prefetch_active(p)) {
			pthread_mutex_lock(&p->bm_lock);
			pg_prefetch_step(p);
			pthread_mutex_unlock(&p->bm_lock);
		}
	}
	return NULL;
}

void pager_prefetch_begin(struct pager *p)
{
	uint64_t one = 1;

	if (p && write(p->go_fd, &one, sizeof(one)) != sizeof(one))
		pr_warn("pager: cannot start the prefetch: %s", strerror(errno));
}

int pager_start(struct pager *p, struct errbuf *eb)
{
	int r;

	if (p->started)
		return errbuf_set(eb, -EALREADY, "pager: already started");
	p->t_start_ns = pg_now_ns();
	r = pthread_create(&p->thread, NULL, pager_thread, p);
	if (r)
		return errbuf_set(eb, -r, "pager: cannot start the fault thread: %s", strerror(r));
	p->started = true;
	return 0;
}

void pager_stop(struct pager *p)
{
	uint64_t one = 1;

	if (!p || p->stopped)
		return;
	if (p->started) {
		if (write(p->stop_fd, &one, sizeof(one)) != sizeof(one))
			pr_warn("pager: cannot signal the fault thread: %s", strerror(errno));
		pthread_join(p->thread, NULL);
	}
	/* wakes every blocked faulter; they retry on plain anonymous memory */
	if (p->base) {
		int r = pg_uffd_unregister(p->uffd, p->base, p->size);

		if (r)
			pr_debug("pager: UFFDIO_UNREGISTER: %s", strerror(-r));
	}
	close(p->uffd);
	p->uffd = -1;
	p->stopped = true;
}

void pager_destroy(struct pager *p)
{
	if (!p)
		return;
	pager_stop(p);
	pager_free(p);
}

int pager_error(struct pager *p, char *msg, size_t len)
{
	int failed;

	pthread_mutex_lock(&p->err_lock);
	failed = atomic_load(&p->failed);
	if (failed && msg && len)
		snprintf(msg, len, "%s", p->err);
	pthread_mutex_unlock(&p->err_lock);
	return failed ? -EIO : 0;
}

#define LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

void pager_stats(struct pager *p, struct pager_stats *s)
{
	uint64_t hist[PG_LAT_BUCKETS];

	memset(s, 0, sizeof(*s));
	s->io_uring = p->dio.uring;
	s->faults = LD(p->n_faults);
	s->fault_batches = LD(p->n_batches);
	s->pages_copied = LD(p->n_copied);
	s->pages_zeroed = LD(p->n_zeroed);
	s->pages_raced = LD(p->n_raced);
	s->pages_prefetched = LD(p->n_prefetched);
	s->bytes_read = LD(p->n_bytes_read);
	s->chunks_decoded = LD(p->n_chunks);
	s->errors = LD(p->n_errors);
	s->prefetch_done = atomic_load(&p->prefetch_done);
	s->prefetch_ns = LD(p->prefetch_ns);
	s->lat_count = LD(p->lat_count);
	s->lat_max_ns = LD(p->lat_max_ns);
	s->lat_avg_ns = s->lat_count ? LD(p->lat_sum_ns) / s->lat_count : 0;
	for (unsigned b = 0; b < PG_LAT_BUCKETS; b++)
		hist[b] = LD(p->lat_hist[b]);
	s->lat_p50_ns = lat_percentile(hist, 50);
	s->lat_p99_ns = lat_percentile(hist, 99);
}

void pager_report(struct pager *p)
{
	struct pager_stats ps;
	struct mline l;

	pager_stats(p, &ps);
	mline_begin(&l, "ember-pager");
	mline_str(&l, "io", ps.io_uring ? "io_uring" : "pread");
	mline_u64(&l, "faults", ps.faults);
	mline_u64(&l, "pages_copied", ps.pages_copied);
	mline_u64(&l, "pages_zeroed", ps.pages_zeroed);
	mline_u64(&l, "pages_prefetched", ps.pages_prefetched);
	mline_u64(&l, "bytes_read", ps.bytes_read);
	mline_u64(&l, "chunks_decoded", ps.chunks_decoded);
	mline_u64(&l, "prefetch_done", ps.prefetch_done);
	mline_u64(&l, "prefetch_us", ps.prefetch_ns / 1000);
	mline_u64(&l, "fault_p50_ns", ps.lat_p50_ns);
	mline_u64(&l, "fault_p99_ns", ps.lat_p99_ns);
	mline_end(&l);
}
