/*
 * ember paging layer: the "uffd" memory backend for restore. Guest RAM is anonymous
 * memory registered with userfaultfd (MISSING mode); a page server thread answers
 * each fault with the page's bytes from the snapshot's memory file (raw, or
 * lz4-compressed chunks), read through io_uring (or pread), installed with
 * UFFDIO_COPY / UFFDIO_ZEROPAGE. It can prefetch a recorded working set in bulk while
 * the guest runs, and record the order in which a guest first touches its pages.
 *
 * Lifecycle (the VMM's restore):
 *   mem_set_regions(m, ...);            regions of the snapshot, m->base == NULL
 *   pager_create(m, &cfg, &p, eb);      maps m->base (anonymous, m->owned), registers it
 *   pager_start(p, eb);                 before anything touches guest RAM
 *   mem_register(m, vm_fd, ...);        ... run the VM ...
 *   pager_stop(p);                      before joining threads that may be blocked in
 *                                       a fault (it releases them), then
 *   pager_destroy(p);  mem_free(m);
 *
 * The host mapping holds the regions back to back at their file offsets
 * (struct mem_region.offset), so page i of the mapping is page i of the memory image.
 */
#ifndef EMBER_PAGING_H
#define EMBER_PAGING_H

#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm.h"

struct snap_lz4_index;
struct pager;

struct pager_config {
	int mem_fd;                    /* raw memory image (lz4 == NULL), duplicated: the
					  caller may close its fd; with lz4 the payload is read
					  through (a dup of) the index's fd and this is ignored */
	uint64_t size;                 /* guest RAM bytes = memory.size = m->size */
	const struct snap_lz4_index *lz4; /* NULL: raw image; the index (its chunk table)
					  must outlive the pager */
	const uint64_t *ws_pages;      /* prefetch set (page indices), fault order; copied */
	uint64_t nr_ws_pages;
	bool record_ws;                /* log first-touch order until pager_record_stop */
	bool prefetch_deferred;        /* prefetch waits for pager_prefetch_begin (the VMM
					  finishes restoring state first: same CPUs) */
	bool no_io_uring;              /* read with pread (to measure io_uring's benefit) */
	/* Called once, from the pager thread, when a page cannot be served (short read,
	 * I/O error, damaged chunk). The VMM should stop the VM: the faulting thread stays
	 * blocked until pager_stop. Must not call back into the pager except pager_error. */
	void (*on_error)(void *opaque, const char *msg);
	void *opaque;
	/* The fault thread confines itself (src/seccomp.c): it may then write only stderr,
	 * the log and notify_fd (what on_error writes, -1 for none). */
	bool seccomp;
	int notify_fd;
	/* Tuning; 0 picks the default (see pager.c). */
	uint32_t prefetch_block;       /* bytes per prefetch read buffer (default 1 MiB) */
	uint32_t prefetch_depth;       /* buffers in flight (default 4) */
	uint32_t prefetch_gap;         /* merge ws pages closer than this many pages (8) */
	int32_t spin_us;               /* busy-poll after a fault (default 50 us; < 0: never):
					  waking a blocked thread costs ~20 us here */
};

/*
 * Maps m->size bytes of anonymous guest RAM at m->base (m->owned: mem_free unmaps it),
 * registers it with userfaultfd and sets up the readers. m's regions must be set and
 * m->base NULL. Validates the config (file size, working-set pages inside RAM). Errors
 * name the cause, e.g. "userfaultfd: Operation not permitted (need root or
 * vm.unprivileged_userfaultfd=1)". If io_uring cannot be set up the pager falls back
 * to pread with a warning (pager_stats says which is in use).
 */
int pager_create(struct guest_mem *m, const struct pager_config *c, struct pager **out,
		 struct errbuf *eb);
/* Starts the fault thread; it also prefetches the working set, if any. */
int pager_start(struct pager *p, struct errbuf *eb);
/* Lets a deferred prefetch begin. Faults are served from pager_start on regardless. */
void pager_prefetch_begin(struct pager *p);
/* Ends recording (the end of the first request); later faults are not logged. */
void pager_record_stop(struct pager *p);
/* The recorded first-touch order: a malloc'd copy in *pages (caller frees), *n entries.
 * -EINVAL when the pager was not created with record_ws. */
int pager_ws_pages(struct pager *p, uint64_t **pages, uint64_t *n);

/*
 * In-place reset: drops the pages set in `pages` (one bit per page of guest RAM) from
 * guest RAM and forgets they were installed, so the next touch faults and is served
 * from the snapshot again. The vCPUs and devices must not touch guest RAM meanwhile.
 * -EIO once the pager has failed (the VM must not run again).
 */
int pager_discard(struct pager *p, const uint64_t *pages);

/* --record-ws: stops recording and writes what was recorded as dir's ws.bin. */
int pager_save_ws(struct pager *p, const char *dir, bool replace, struct errbuf *eb);

struct pager_stats {
	bool io_uring;                 /* reads go through io_uring (else pread) */
	uint64_t faults;               /* page-fault messages read from the uffd */
	uint64_t fault_batches;        /* reads of the uffd that returned faults */
	uint64_t pages_copied;         /* installed with UFFDIO_COPY (demand + prefetch) */
	uint64_t pages_zeroed;         /* installed with UFFDIO_ZEROPAGE */
	uint64_t pages_raced;          /* fault on a page already installed: woken only */
	uint64_t pages_prefetched;     /* installed by prefetch (subset of copied/zeroed) */
	uint64_t bytes_read;           /* from the memory file */
	uint64_t chunks_decoded;       /* lz4 chunks decompressed */
	uint64_t errors;               /* pages that could not be served */
	bool prefetch_done;            /* no prefetch, or all of it installed */
	uint64_t prefetch_ns;          /* pager_start to the last prefetch install */
	/* Service time of a fault: from reading its message to installing the page. */
	uint64_t lat_count, lat_avg_ns, lat_p50_ns, lat_p99_ns, lat_max_ns;
};
void pager_stats(struct pager *p, struct pager_stats *s);
/* --timings: one "ember-pager io=... faults=... bytes_read=..." line on stderr (JSON
 * with --timings-json). */
void pager_report(struct pager *p);
/* 0 while all is well; else non-zero with the first error's message in msg. */
int pager_error(struct pager *p, char *msg, size_t len);
/*
 * Stops the fault thread and unregisters guest RAM from userfaultfd, which wakes every
 * thread blocked in a fault: they continue with plain anonymous memory (zero pages
 * where nothing was installed), so call it only when the guest will not run again.
 * Idempotent; safe while faults are pending.
 */
void pager_stop(struct pager *p);
/* pager_stop, then frees the pager. Guest RAM stays mapped (mem_free unmaps it). */
void pager_destroy(struct pager *p);

#endif
