/*
 * Saving a snapshot of a parked VM. Order: devices, then vCPUs, then VM-wide state,
 * then memory (Firecracker's order): device state is plain data; vCPU state must be
 * read after the devices stopped generating interrupts and before the irqchip/clock,
 * whose state the vCPU reads (e.g. KVM_GET_MP_STATE accepting pending APIC events) may
 * still change; memory last because everything above is small and memory is the part
 * that takes time and can fail (ENOSPC), at which point nothing has been published.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmm.h"
#include "arch/x86_64/x86.h"
#include "dev/dev.h"
#include "snapfmt.h"
#include "metrics.h"

static int snap_fail(struct errbuf *eb, int r, const struct snap_err *se)
{
	return errbuf_set(eb, r, "%s", se->msg);
}

struct range_list {
	struct snap_range *r;
	uint32_t n, cap;
};

static int add_range(void *opaque, uint64_t first, uint64_t count)
{
	struct range_list *l = opaque;

	if (l->n == SNAP_MAX_RANGES)
		return -E2BIG;
	if (l->n == l->cap) {
		uint32_t cap = l->cap ? l->cap * 2 : 64;
		struct snap_range *r = realloc(l->r, cap * sizeof(*r));

		if (!r)
			return -ENOMEM;
		l->r = r;
		l->cap = cap;
	}
	l->r[l->n++] = (struct snap_range){ .first = first, .count = count };
	return 0;
}

/* Turns a page bitmap into sorted, merged page ranges. */
static int bitmap_to_ranges(const uint64_t *bm, uint64_t pages, struct snap_range **out,
			    uint32_t *nr)
{
	struct range_list l = { NULL, 0, 0 };
	int r = bm_for_each_run(bm, pages, add_range, &l);

	if (r) {
		free(l.r);
		return r;
	}
	*out = l.r;
	*nr = l.n;
	return 0;
}

struct sparse_out {
	struct vm *vm;
	struct snap_writer *w;
	struct snap_err *se;
};

static int write_run(void *opaque, uint64_t first, uint64_t count)
{
	struct sparse_out *o = opaque;

	return snap_writer_write_sparse(o->w, first * PAGE_SIZE, o->vm->mem.base + first * PAGE_SIZE,
					count * PAGE_SIZE, o->se);
}

/* Pages of anonymous guest RAM that exist (the others are zero and were never touched). */
static int populated_pages(struct vm *vm, uint64_t **pop, struct snap_err *se)
{
	struct errbuf eb;
	int r;

	*pop = NULL;
	if (!vm->mem.anonymous)
		return 0;
	*pop = bm_alloc(vm->mem.size / PAGE_SIZE);
	if (!*pop)
		return snap_err_set(se, -ENOMEM, "out of memory for the page bitmap");
	r = mem_populated_bitmap(&vm->mem, *pop, &eb);
	if (r) {
		free(*pop);
		*pop = NULL;
		return snap_err_set(se, r, "%s", eb.msg);
	}
	return 0;
}

/*
 * A full snapshot of anonymous guest RAM: only pages that exist are read and written;
 * pages the guest never touched are zero and become holes without being read (reading
 * them would fault in ~all of RAM just to find zeros).
 */
static int write_populated(struct vm *vm, const uint64_t *pop, struct snap_writer *w,
			   struct snap_err *se)
{
	struct sparse_out o = { vm, w, se };

	return bm_for_each_run(pop, vm->mem.size / PAGE_SIZE, write_run, &o);
}

static int save_state(struct vm *vm, struct snap_state *st, struct errbuf *eb)
{
	struct snap_err se;
	int r;

	x86_host_cpu_info(&st->header.cpu);
	r = devices_save(vm, st, eb);
	if (r)
		return r;
	r = snap_state_set_vcpus(st, vm->nr_vcpus, &se);
	if (r)
		return snap_fail(eb, r, &se);
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		r = x86_vcpu_save(&vm->vcpus[i], &st->vcpus[i], eb);
		if (r)
			return r;
	}
	/* what restore would refuse is not written */
	r = x86_check_snapshot_nested(st, eb);
	if (r)
		return r;
	for (unsigned i = 0; i < vm->mem.nr_regions; i++)
		st->vm.regions[i] = (struct snap_region){ .gpa = vm->mem.regions[i].gpa,
							  .size = vm->mem.regions[i].size,
							  .file_offset = vm->mem.regions[i].offset };
	st->vm.nr_regions = vm->mem.nr_regions;
	r = x86_vm_save(vm, &st->vm, eb);
	if (r)
		return r;
	st->memory.size = vm->mem.size;
	return 0;
}

int vm_snapshot_save(struct vm *vm, const char *dir, const struct snapshot_opts *o,
		     struct snapshot_stats *stats, struct errbuf *eb)
{
	uint64_t pages = vm->mem.size / PAGE_SIZE, t0 = timing_now_us(), t1, t2;
	uint64_t *dirty = NULL, *pop = NULL;
	struct snap_range *ranges = NULL;
	struct snap_writer *w = NULL;
	struct snap_state st;
	struct snap_err se;
	uint32_t nr_ranges = 0;
	int r;

	memset(stats, 0, sizeof(*stats));
	if (o->diff && !vm->mem.dirty_log)
		return errbuf_set(eb, -EINVAL, "diff snapshot: dirty page tracking is off "
				  "(it is on when ember runs with --api-sock)");
	if (o->diff && o->compress)
		return errbuf_set(eb, -EINVAL, "a diff snapshot cannot be compressed: merge it, then "
				  "'ember-snap compress' the result");
	if (o->diff && !vm->last_snapshot_id[0])
		return errbuf_set(eb, -EINVAL, "diff snapshot: no earlier snapshot of this VM to "
				  "be relative to (take a full one first)");
	r = snap_state_init(&st, &se);
	if (r)
		return snap_fail(eb, r, &se);
	/* device threads leave guest memory and queues alone until the memory is written */
	devices_quiesce(vm);
	r = save_state(vm, &st, eb);
	if (r)
		goto out;

	/* Collecting the dirty log also restarts it, so the next diff is relative to
	 * this snapshot whatever its kind. */
	if (vm->mem.dirty_log) {
		dirty = bm_alloc(pages);
		if (!dirty) {
			r = errbuf_set(eb, -ENOMEM, "out of memory for the dirty bitmap");
			goto out;
		}
		r = mem_dirty_collect(&vm->mem, vm->kvm.vm_fd, dirty, eb);
		if (r)
			goto out;
	}
	if (o->diff) {
		r = bitmap_to_ranges(dirty, pages, &ranges, &nr_ranges);
		if (r) {
			errbuf_set(eb, r, "diff snapshot: too many dirty ranges");
			goto out;
		}
		st.memory.kind = SNAP_MEM_DIFF;
		snprintf(st.header.parent, sizeof(st.header.parent), "%s", vm->last_snapshot_id);
		r = snap_memory_set_ranges(&st, ranges, nr_ranges, &se);
		if (r) {
			snap_fail(eb, r, &se);
			goto out;
		}
	}
	t1 = timing_now_us();

	r = o->diff ? 0 : populated_pages(vm, &pop, &se);
	/* what ties the memory file to this state: FORMAT.md section 5.1 */
	if (!r && !o->diff)
		r = snap_memory_digest(&st, vm->mem.base, pop, &se);
	if (!r)
		r = o->in_dir ? snap_writer_begin_at(o->dir_fd, dir, &w, &se)
			      : snap_writer_begin(dir, &w, &se);
	if (r) {
		snap_fail(eb, r, &se);
		goto out;
	}
	stats->us_digest = timing_now_us() - t1;
	if (o->diff)
		r = snap_writer_write_ranges(w, vm->mem.base, vm->mem.size, ranges, nr_ranges, &se);
	else if (o->compress)
		r = snap_writer_write_lz4(w, vm->mem.base, vm->mem.size, &se);
	else if (pop)
		r = write_populated(vm, pop, w, &se);
	else
		r = snap_writer_write_sparse(w, 0, vm->mem.base, vm->mem.size, &se);
	if (r) {
		snap_fail(eb, r, &se);
		snap_writer_abort(w);
		goto out;
	}
	stats->bytes_written = snap_writer_stats(w)->bytes_written;
	stats->pages_written = snap_writer_stats(w)->pages_written;
	stats->zero_pages = snap_writer_stats(w)->zero_pages_skipped;
	t2 = timing_now_us();
	r = snap_writer_commit(w, &st, &se);
	if (r) {
		snap_fail(eb, r, &se);
		goto out;
	}
	snprintf(vm->last_snapshot_id, sizeof(vm->last_snapshot_id), "%s", st.header.id);
	snprintf(stats->id, sizeof(stats->id), "%s", st.header.id);
	stats->us_state = t1 - t0;
	stats->us_memory = t2 - t1;
	stats->us_commit = timing_now_us() - t2;
	stats->us_total = timing_now_us() - t0;
	metrics_add(M_SNAPSHOTS, 1);
	metrics_add(M_SNAPSHOT_BYTES, stats->bytes_written);
	metrics_observe(H_SNAPSHOT_US, stats->us_total);
out:
	if (r)
		metrics_add(M_SNAPSHOT_FAILURES, 1);
	devices_unquiesce(vm);
	if (r && dirty && vm->mem.dirty_log) {
		/* the pages we consumed from the log are still unsaved: give them back */
		for (uint64_t wd = 0; wd < bm_words(pages); wd++)
			__atomic_or_fetch(&vm->mem.host_dirty[wd], dirty[wd], __ATOMIC_RELAXED);
	}
	free(ranges);
	free(dirty);
	free(pop);
	snap_state_free(&st);
	return r;
}
