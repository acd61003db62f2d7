/*
 * Internals of the paging layer, shared by its files only: the pager object and its
 * thread (pager.c), the userfaultfd wrappers (uffd.c), the reader (pgio.c: io_uring or
 * pread), installing pages (install.c), demand fault service (fault.c; lz4 chunks in
 * lz4src.c), prefetch (prefetch.c) and first-touch recording (ws_record.c).
 * Only the pager thread installs pages, so the page bitmaps need no locking.
 */
#ifndef EMBER_PAGER_INT_H
#define EMBER_PAGER_INT_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>

#include "paging.h"
#include "snapfmt.h"

#define PG_MAX_BATCH   64  /* fault messages per read() of the uffd */
#define PG_LAT_BUCKETS 256
#define PG_SPIN_NS     50000ull /* default busy-poll after a fault */

/* A 4 KiB page of zero bytes: installed as UFFDIO_ZEROPAGE (no copy, no RSS). */
bool pg_page_is_zero(const uint8_t *page);

/* ---- uffd.c ------------------------------------------------------------------- */
/* A userfaultfd (O_NONBLOCK, O_CLOEXEC) after the API handshake, or -errno. */
int pg_uffd_open(struct errbuf *eb);
int pg_uffd_register(int uffd, void *base, uint64_t len, struct errbuf *eb);
int pg_uffd_unregister(int uffd, void *base, uint64_t len);
/*
 * Installs [dst, dst+len) from src (UFFDIO_COPY) or as zero pages (UFFDIO_ZEROPAGE),
 * waking waiters. Pages that already exist are skipped and counted in *existing.
 * Returns 0 or -errno.
 */
int pg_uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len, uint64_t *existing);
int pg_uffd_zero(int uffd, uint64_t dst, uint64_t len, uint64_t *existing);
int pg_uffd_wake(int uffd, uint64_t dst, uint64_t len);

/* ---- pgio.c: file reads through io_uring or pread ------------------------------ */
/* Which io_uring registrations to use; tests and benchmarks clear bits to measure. */
#define PG_IO_FIXED_FILE 1u
#define PG_IO_FIXED_BUF  2u
extern unsigned pg_io_features;
struct pg_read {
	uint64_t off;      /* file offset */
	uint32_t len;
	uint8_t *dst;      /* inside the registered buffer, if any */
	int32_t res;       /* bytes read (len on success) or -errno */
	void *owner;       /* for the caller: what this read belongs to */
};

struct pg_io {
	int fd;
	bool uring;        /* false: pread */
	bool fixed_file;   /* the fd is registered: IOSQE_FIXED_FILE, index 0 */
	bool fixed_buf;    /* [buf, buf+buf_len) is registered buffer 0: READ_FIXED */
	uint8_t *buf;
	size_t buf_len;
	int efd;           /* eventfd signalled on completions (pg_io_init_async), or -1 */
	unsigned queued;   /* prepared, not yet submitted */
	unsigned in_flight;
	struct io_uring ring;
	/* pread mode: requests completed at submit time, reaped later */
	struct pg_read **done;
	unsigned nr_done, cap_done;
};
/*
 * Sets up a reader of fd with room for `entries` requests in flight into buffer
 * [buf, buf+buf_len). With use_uring false, or when io_uring cannot be set up, it
 * reads with pread (io->uring false). async: completions signal io->efd.
 */
int pg_io_init(struct pg_io *io, int fd, unsigned entries, uint8_t *buf, size_t buf_len,
	       bool use_uring, bool async, struct errbuf *eb);
void pg_io_exit(struct pg_io *io);
/* Reads all n requests and waits for them; r[i].res holds each result. */
int pg_io_read_all(struct pg_io *io, struct pg_read *r, unsigned n);
/* Queues one read (submitted by pg_io_flush; pread mode: performed now). */
int pg_io_queue(struct pg_io *io, struct pg_read *r);
int pg_io_flush(struct pg_io *io);
/* Completed reads, without waiting: up to max into out[]. */
unsigned pg_io_reap(struct pg_io *io, struct pg_read **out, unsigned max);
/* Finishes a short read with pread; returns 0 when r->len bytes are now in r->dst. */
int pg_io_complete_short(struct pg_io *io, struct pg_read *r);

/* ---- the pager ---------------------------------------------------------------- */
struct prefetch;

struct pager {
	struct guest_mem *m;
	uint8_t *base;
	uint64_t size, npages;
	int uffd;
	int stop_fd;                /* eventfd: the thread leaves its loop */
	int go_fd;                  /* eventfd: deferred prefetch may begin */
	pthread_t thread;
	bool started, stopped;
	struct pager_config cfg;    /* ws_pages not kept: see pf */
	int fd;                     /* our dup of the raw image or lz4 payload fd */
	const struct snap_lz4_index *lz4;
	uint64_t chunk_pages;       /* lz4: pages per chunk */

	/* held by the pager thread while it installs pages, and by pager_discard: the
	 * only other writer of present_bm */
	pthread_mutex_t bm_lock;
	uint64_t *present_bm;       /* installed by us */
	uint64_t *failed_bm;        /* could not be served: never installed */

	/* demand faults: staging of dslots slots of dslot bytes each; raw: one page per
	 * slot; lz4: a chunk's stored bytes (zoff bytes) then its decoded bytes */
	struct pg_io dio;
	uint8_t *dbuf;
	size_t dbuf_len, dslot, zoff;
	unsigned dslots;

	struct prefetch *pf;        /* NULL: no working set */
	uint64_t t_start_ns;
	uint64_t spin_ns;           /* busy-poll the uffd this long after a fault */

	/* recording */
	pthread_mutex_t rec_lock;
	atomic_bool recording;
	bool record_enabled;
	uint64_t *rec;
	uint64_t nr_rec, cap_rec;

	/* first error */
	pthread_mutex_t err_lock;
	atomic_bool failed;
	char err[512];

	/* counters: written by the pager thread, read with relaxed atomics */
	uint64_t n_faults, n_batches, n_copied, n_zeroed, n_raced, n_prefetched,
		n_bytes_read, n_chunks, n_errors, lat_count, lat_sum_ns, lat_max_ns,
		prefetch_ns;
	atomic_bool prefetch_done;
	uint64_t lat_hist[PG_LAT_BUCKETS];
};

static inline void pg_count(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}
uint64_t pg_now_ns(void);
/* Records an error for the first failing page and calls on_error once. */
void pg_fail(struct pager *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pg_lat_record(struct pager *p, uint64_t ns);

/*
 * install.c: installs pages [first, first+n) from src (n pages; NULL: all zero),
 * skipping pages already installed or failed. Returns the pages it installed; pages
 * the kernel already had are added to *existing (may be NULL). Errors mark the
 * pages failed and go to pg_fail.
 */
uint64_t pg_install(struct pager *p, uint64_t first, const uint8_t *src, uint64_t n,
		    bool prefetch, uint64_t *existing);

/* fault.c: serves one batch of fault messages (the uffd was readable). */
int pg_fault_serve(struct pager *p);

/* lz4src.c: lz4 chunks */
/* Serves the faulting pages (deduplicated, not installed) chunk by chunk. */
void pg_lz4_serve(struct pager *p, const uint64_t *pages, unsigned np, uint64_t t0);
/* Decodes + CRC-checks chunk i into dst; on failure marks its pages failed, reports. */
int pg_lz4_decode(struct pager *p, uint64_t i, const uint8_t *stored, uint8_t *dst);
/* Pages of chunk i: first page and count. */
void pg_lz4_chunk_pages(const struct pager *p, uint64_t i, uint64_t *first, uint64_t *n);

/* prefetch.c */
int pg_prefetch_create(struct pager *p, const uint64_t *ws, uint64_t n, struct errbuf *eb);
/* Builds the plan, staging and reader: on the pager thread, before the first step. */
void pg_prefetch_setup(struct pager *p);
void pg_prefetch_free(struct pager *p);
/* The fd to poll for completions (-1: none) and whether a step can run right now. */
int pg_prefetch_poll_fd(struct pager *p);
bool pg_prefetch_ready(struct pager *p);
/* Installs a bounded amount of prefetched data, then tops up the reads in flight. */
void pg_prefetch_step(struct pager *p);
bool pg_prefetch_active(struct pager *p);

/* ws_record.c */
void pg_record_page(struct pager *p, uint64_t page);

#endif
