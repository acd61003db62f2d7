/*
 * In-place reset: puts a restored VM back to the snapshot it came from without a new
 * process, VM or memslot (PLATFORM.md: ~0.14 ms against ~2.4 ms for a restore plus
 * ~13-20 ms of teardown). Only what was written since the restore (or the last reset)
 * is reverted: the dirty log (guest writes) plus ember's own writes (gpa_map_write),
 * accumulated in mem.since_reset whoever collected the log in between. Then the
 * decoded snapshot state kept by vm_restore is set again, exactly as a restore sets
 * it, and the devices' post-restore hooks run: a reset VM is a fresh restore.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "vmm.h"
#include "dev/dev.h"
#include "paging/paging.h"
#include "snapfmt.h"

/* More runs than this and one madvise over all of guest RAM is cheaper than one per
 * run: with the mmap backend that only drops page-cache mappings besides the written
 * pages, which the guest maps again on its next touch. Batched (process_madvise) runs
 * cost about half as much: at 1052 runs here, ~2.2 ms batched against ~3.7 ms for the
 * whole 256 MiB mapping. */
#define RESET_MAX_RUNS         512
#define RESET_MAX_RUNS_BATCHED 2048
/* runs per process_madvise(2) call (at most UIO_MAXIOV) */
#define DROP_BATCH 256

static int self_pidfd = -1;
static bool drop_unbatched; /* the kernel refused MADV_DONTNEED in process_madvise */

struct revert {
	struct vm *vm;
	uint64_t pages, runs;
	struct iovec *iov;       /* mmap: runs to drop, DROP_BATCH at most */
	unsigned niov;
	uint8_t *chunk;          /* eager lz4: one decoded chunk */
	uint8_t *scratch;        /* eager lz4: its stored bytes */
	uint64_t chunk_idx;      /* which chunk is in `chunk`, or UINT64_MAX */
	struct errbuf *eb;
};

static int count_run(void *opaque, uint64_t first, uint64_t count)
{
	struct revert *rv = opaque;

	(void)first;
	rv->pages += count;
	rv->runs++;
	return 0;
}

static int drop_one(struct revert *rv, void *p, size_t len)
{
	uint64_t first = (uint64_t)((uint8_t *)p - rv->vm->mem.base) / PAGE_SIZE;

	if (madvise(p, len, MADV_DONTNEED) < 0)
		return errbuf_set(rv->eb, -errno, "reset: madvise(MADV_DONTNEED) of guest pages "
				  "%llu..%llu: %s", (unsigned long long)first,
				  (unsigned long long)(first + len / PAGE_SIZE - 1), strerror(errno));
	return 0;
}

/*
 * The batched runs, dropped with one process_madvise(2) on ourselves: one MMU-notifier
 * and TLB-flush round per call instead of per run (256 scattered pages: ~0.8 -> ~0.45 ms
 * here). Kernels that refuse MADV_DONTNEED there (before Linux 6.x) get one madvise per
 * run, as does a batch the call did not finish (dropping twice is harmless).
 */
static int drop_flush(struct revert *rv)
{
	size_t total = 0;
	int r = 0;

	for (unsigned i = 0; i < rv->niov; i++)
		total += rv->iov[i].iov_len;
	if (rv->niov && !drop_unbatched) {
		ssize_t n = -1;

		if (self_pidfd < 0)
			self_pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
		if (self_pidfd >= 0)
			n = syscall(SYS_process_madvise, self_pidfd, rv->iov, (size_t)rv->niov,
				    MADV_DONTNEED, 0);
		if (n >= 0 && (size_t)n == total)
			rv->niov = 0;
		else if (n < 0 && (errno == ENOSYS || errno == EINVAL || errno == EPERM))
			drop_unbatched = true;
	}
	for (unsigned i = 0; i < rv->niov && !r; i++)
		r = drop_one(rv, rv->iov[i].iov_base, rv->iov[i].iov_len);
	rv->niov = 0;
	return r;
}

static int drop_run(void *opaque, uint64_t first, uint64_t count)
{
	struct revert *rv = opaque;

	rv->iov[rv->niov++] = (struct iovec){ .iov_base = rv->vm->mem.base + first * PAGE_SIZE,
					      .iov_len = count * PAGE_SIZE };
	return rv->niov == DROP_BATCH ? drop_flush(rv) : 0;
}

/* eager, raw image: read the pages back */
static int reread_run(void *opaque, uint64_t first, uint64_t count)
{
	struct revert *rv = opaque;
	uint64_t off = first * PAGE_SIZE, end = (first + count) * PAGE_SIZE;

	while (off < end) {
		ssize_t n = pread(rv->vm->golden_fd, rv->vm->mem.base + off, end - off, (off_t)off);

		if (n <= 0)
			return errbuf_set(rv->eb, n < 0 ? -errno : -EIO, "reset: reading the memory "
					  "file at offset %llu: %s", (unsigned long long)off,
					  n < 0 ? strerror(errno) : "unexpected end of file");
		off += (uint64_t)n;
	}
	return 0;
}

/* eager, lz4 image: decode the chunks holding the pages and copy the pages back */
static int redecode_run(void *opaque, uint64_t first, uint64_t count)
{
	struct revert *rv = opaque;
	const struct snap_lz4_index *ix = rv->vm->lz4;
	uint64_t chunk_pages = ix->chunk_size / PAGE_SIZE;
	struct snap_err se;

	for (uint64_t pg = first; pg < first + count;) {
		uint64_t ci = pg / chunk_pages, in_chunk = pg % chunk_pages;
		uint64_t n = chunk_pages - in_chunk;

		if (n > first + count - pg)
			n = first + count - pg;
		if (rv->chunk_idx != ci) {
			int r = snap_lz4_chunk_read(ix, ci, rv->chunk, rv->scratch, &se);

			if (r)
				return errbuf_set(rv->eb, r, "reset: memory chunk %llu: %s",
						  (unsigned long long)ci, se.msg);
			rv->chunk_idx = ci;
		}
		memcpy(rv->vm->mem.base + pg * PAGE_SIZE, rv->chunk + in_chunk * PAGE_SIZE,
		       n * PAGE_SIZE);
		pg += n;
	}
	return 0;
}

static int revert_memory(struct vm *vm, struct reset_stats *rs, struct errbuf *eb)
{
	struct guest_mem *m = &vm->mem;
	uint64_t npages = m->size / PAGE_SIZE, *written;
	struct revert rv = { .vm = vm, .eb = eb, .chunk_idx = UINT64_MAX };
	int r = mem_written_since_reset(m, vm->kvm.vm_fd, &written, eb);

	if (r)
		return r;
	bm_for_each_run(written, npages, count_run, &rv);
	rs->pages_reverted = rv.pages;
	if (rv.pages == 0)
		return 0;
	switch (vm->cfg.mem_backend) {
	case MEM_BACKEND_UFFD:
		r = pager_discard(vm->pager, written);
		if (r)
			errbuf_set(eb, r, "reset: the page server cannot take pages back: %s",
				   strerror(-r));
		break;
	case MEM_BACKEND_EAGER:
		if (vm->lz4) {
			rv.chunk = malloc(vm->lz4->chunk_size);
			rv.scratch = malloc(vm->lz4->max_stored ? vm->lz4->max_stored : 1);
			r = rv.chunk && rv.scratch ? bm_for_each_run(written, npages, redecode_run, &rv)
						   : errbuf_set(eb, -ENOMEM, "out of memory");
			free(rv.chunk);
			free(rv.scratch);
		} else {
			r = bm_for_each_run(written, npages, reread_run, &rv);
		}
		break;
	default: { /* mmap: the private copies go, the file's pages show through again */
		struct iovec iov[DROP_BATCH];

		rv.iov = iov;
		if (rv.runs > (drop_unbatched ? RESET_MAX_RUNS : RESET_MAX_RUNS_BATCHED)) {
			rs->whole_mapping = true;
			r = drop_one(&rv, m->base, npages * PAGE_SIZE);
		} else {
			r = bm_for_each_run(written, npages, drop_run, &rv);
			if (!r)
				r = drop_flush(&rv);
		}
		break;
	}
	}
	if (!r)
		memset(written, 0, bm_words(npages) * sizeof(uint64_t));
	return r;
}

/* The per-VM things a fresh restore starts without. */
static void forget_run(struct vm *vm)
{
	char cmd[EMBER_UCALL_DATA_MAX];
	uint32_t len;

	while (vm_cmd_pending(vm))
		vm_cmd_pop(vm, cmd, sizeof(cmd), &len);
	snprintf(vm->last_snapshot_id, sizeof(vm->last_snapshot_id), "%s", vm->golden->header.id);
}

int vm_reset(struct vm *vm, struct reset_stats *rs, struct errbuf *eb)
{
	uint64_t t0 = timing_now_us(), t1;
	uint64_t gen;
	int r;

	memset(rs, 0, sizeof(*rs));
	if (!vm->golden)
		return errbuf_set(eb, -EINVAL, "reset: this VM was booted, not restored: there is "
				  "no snapshot to return to");
	if (!vm->mem.dirty_log)
		return errbuf_set(eb, -EINVAL, "reset: dirty page tracking is off for this VM");
	if (atomic_load(&vm->wedged))
		return errbuf_set(eb, -EIO, "reset: guest memory could not be served; the VM "
				  "must not run again");
	if (!vm->paused)
		return errbuf_set(eb, -EBUSY, "reset: the VM is running (pause it first)");
	r = vm_new_generation(&gen, eb);
	if (r)
		return r;
	vm->reset_start_us = t0;
	rs->changed = true;
	/* device threads keep off guest memory while it changes under them */
	devices_quiesce(vm);
	r = revert_memory(vm, rs, eb);
	t1 = timing_now_us();
	if (!r)
		r = vm_set_state(vm, vm->golden, eb);
	if (!r) {
		vm->generation = gen;
		forget_run(vm);
		devices_post_restore(vm);
		atomic_store(&vm->first_report_us, 0);
		atomic_store(&vm->first_report_pending, true);
		vm->resets++;
	}
	devices_unquiesce(vm);
	rs->us_memory = t1 - t0;
	rs->us_state = timing_now_us() - t1;
	rs->us_total = timing_now_us() - t0;
	return r;
}
