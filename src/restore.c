/*
 * Restoring a VM from a snapshot directory. Everything in the files is checked before
 * KVM is touched (format, checksum, limits, regions against the memory file's size,
 * device sections), so a bad file costs no VM. Whether this host's CPU can run the
 * vCPUs needs KVM's CPUID table and is checked beside VM creation, before any state is
 * set. The VM is built by vm_build, as a boot builds it (memslots over reserved address
 * space before the irqchip, PLATFORM.md); memory then comes from the chosen backend into
 * that space (mmap: MAP_PRIVATE, lazy, one page cache for every clone; uffd: the page
 * server; eager: read up front), and state is set (vm_set_state).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "vmm.h"
#include "arch/x86_64/x86.h"
#include "dev/dev.h"
#include "paging/paging.h"
#include "snapfmt.h"

/* A fresh, non-zero generation per restore and reset: two clones never share one. */
int vm_new_generation(uint64_t *gen, struct errbuf *eb)
{
	do {
		if (getrandom(gen, sizeof(*gen), 0) != sizeof(*gen))
			return errbuf_set(eb, -errno, "getrandom: %s", strerror(errno));
	} while (*gen == 0);
	return 0;
}

/* The page server cannot serve a page: stop for good, and let no guest I/O out. */
static void pager_failed(void *opaque, const char *msg)
{
	struct vm *vm = opaque;

	atomic_store(&vm->wedged, true);
	vm_request_stop(vm, VM_STOP_ERROR, 0, "guest memory: %s", msg);
}

static int start_pager(struct vm *vm, struct snap_dir *d, const char *dir, struct errbuf *eb)
{
	struct pager_config pc = {
		.mem_fd = d->mem_fd,
		.size = d->state.memory.size,
		.lz4 = d->lz4,
		.record_ws = vm->cfg.record_ws,
		/* begins once the vCPUs run (vm_run): bulk UFFDIO_COPY holds mmap_lock and
		 * would stall thread creation and state restore on the same CPUs */
		.prefetch_deferred = true,
		.no_io_uring = vm->cfg.no_io_uring,
		.on_error = pager_failed,
		.opaque = vm,
		.seccomp = vm->cfg.seccomp,
		.notify_fd = vm->event_fd,
	};
	uint64_t *ws = NULL, nr_ws = 0;
	struct snap_err se;
	int r;

	if (vm->cfg.prefetch_ws) {
		r = snap_ws_load(dir, &d->state, &ws, &nr_ws, &se);
		if (r == -ENOENT)
			return errbuf_set(eb, r, "--prefetch ws: snapshot %s has no working set (record "
					  "one with 'ember restore --record-ws')", dir);
		if (r == -ENOMEM)
			return errbuf_set(eb, r, "%s", se.msg);
		/* prefetch only saves faults, and every page it would bring in is checked on
		 * its way anyway: a damaged ws.bin costs speed, not the restore (FORMAT.md 10.6) */
		if (r)
			pr_warn("--prefetch ws: %s: restoring without prefetch", se.msg);
		pc.ws_pages = ws;
		pc.nr_ws_pages = nr_ws;
	}
	r = pager_create(&vm->mem, &pc, &vm->pager, eb);
	free(ws); /* the pager keeps its own copy */
	if (r)
		return r;
	/* the index must outlive the pager: the VM owns it from here */
	vm->lz4 = d->lz4;
	d->lz4 = NULL;
	d->mem_fd = -1;
	return pager_start(vm->pager, eb);
}

/*
 * The reference backend: read the whole image into anonymous memory before the guest
 * runs (what a VMM without lazy loading does). Zero pages of a raw file are read too:
 * it is the baseline the lazy backends are measured against.
 */
static int load_eager(struct vm *vm, const struct snap_dir *d, struct errbuf *eb)
{
	const struct snap_lz4_index *ix = vm->lz4;
	struct snap_err se;
	uint8_t *scratch = NULL;
	int r = mem_alloc_anon(&vm->mem, eb);

	if (r)
		return r;
	if (!ix) {
		for (uint64_t off = 0; off < vm->mem.size;) {
			ssize_t n = pread(d->mem_fd, vm->mem.base + off, vm->mem.size - off, (off_t)off);

			if (n <= 0)
				return errbuf_set(eb, n < 0 ? -errno : -EIO, "reading the memory file at "
						  "offset %llu: %s", (unsigned long long)off,
						  n < 0 ? strerror(errno) : "unexpected end of file");
			off += (uint64_t)n;
		}
		return 0;
	}
	scratch = malloc(ix->max_stored ? ix->max_stored : 1);
	if (!scratch)
		return errbuf_set(eb, -ENOMEM, "out of memory");
	for (uint64_t i = 0; i < ix->nr_chunks && !r; i++) {
		uint64_t off = i << ix->chunk_shift;

		r = snap_lz4_chunk_read(ix, i, vm->mem.base + off, scratch, &se);
		if (r)
			errbuf_set(eb, r, "memory chunk %llu: %s", (unsigned long long)i, se.msg);
	}
	free(scratch);
	return r;
}

/* The eager backend reads written pages back from the image on a reset. */
static int keep_image(struct vm *vm, struct snap_dir *d, struct errbuf *eb)
{
	if (d->lz4) {
		vm->lz4 = d->lz4; /* owns the payload fd */
		d->lz4 = NULL;
		d->mem_fd = -1;
		return 0;
	}
	vm->golden_fd = fcntl(d->mem_fd, F_DUPFD_CLOEXEC, 0);
	if (vm->golden_fd < 0)
		return errbuf_set(eb, -errno, "memory file: %s", strerror(errno));
	return 0;
}

/* Attaches guest memory from the chosen backend into the range vm_build reserved. */
static int map_memory(struct vm *vm, struct snap_dir *d, const char *dir, struct errbuf *eb)
{
	/* every backend reads a raw file for the VM's life (faults, resets): memguard.c */
	int r = d->lz4 ? 0 : memguard_protect(vm, d->mem_fd, dir, d->state.memory.file, eb);

	if (r)
		return r;
	r = memguard_sigbus_init(vm);
	if (r)
		return errbuf_set(eb, r, "SIGBUS handler: %s", strerror(-r));
	if (vm->cfg.mem_backend == MEM_BACKEND_UFFD)
		return start_pager(vm, d, dir, eb);
	if (vm->cfg.mem_backend == MEM_BACKEND_EAGER)
		return keep_image(vm, d, eb) ?: load_eager(vm, d, eb);
	return mem_map_file(&vm->mem, d->mem_fd, eb);
}

static int snapshot_shape(const struct snap_state *st, struct mem_region *regions,
			  struct vm_shape *s, struct errbuf *eb)
{
	if (st->vm.nr_regions > MEM_MAX_REGIONS)
		return errbuf_set(eb, -EINVAL, "snapshot has %u memory regions, ember supports %u",
				  st->vm.nr_regions, MEM_MAX_REGIONS);
	for (unsigned i = 0; i < st->vm.nr_regions; i++)
		regions[i] = (struct mem_region){ .gpa = st->vm.regions[i].gpa,
						  .size = st->vm.regions[i].size,
						  .offset = st->vm.regions[i].file_offset };
	*s = (struct vm_shape){ .nr_vcpus = st->nr_vcpus, .regions = regions,
				.nr_regions = st->vm.nr_regions, .mem_bytes = st->memory.size,
				.devices = st, .fresh_vcpus = false };
	return 0;
}

/* auto: mmap for raw files (lazy, shared page cache), uffd for what mmap cannot map. */
static int choose_backend(struct vm_config *cfg, const struct snap_state *st, const char *dir,
			  struct errbuf *eb)
{
	bool lz4 = st->memory.encoding != SNAP_ENC_RAW;

	if (cfg->mem_backend == MEM_BACKEND_AUTO) {
		cfg->mem_backend = lz4 || cfg->record_ws || cfg->prefetch_ws ? MEM_BACKEND_UFFD
									 : MEM_BACKEND_MMAP;
		/* not silent: a raw snapshot's documented default is mmap */
		if (lz4)
			pr_info("memory backend uffd: snapshot %s has lz4-compressed memory", dir);
		else if (cfg->record_ws || cfg->prefetch_ws)
			pr_info("memory backend uffd instead of the raw snapshot's default mmap: %s "
				"needs the userfaultfd page server",
				cfg->record_ws ? "--record-ws" : "--prefetch ws");
		else
			pr_info("memory backend mmap: the default for a raw snapshot");
	}
	if (cfg->mem_backend == MEM_BACKEND_MMAP && lz4)
		return errbuf_set(eb, -EINVAL, "snapshot %s has lz4-compressed memory, which the mmap "
				  "backend cannot map: use --mem-backend uffd", dir);
	if (cfg->mem_backend != MEM_BACKEND_UFFD && (cfg->record_ws || cfg->prefetch_ws))
		return errbuf_set(eb, -EINVAL, "--record-ws and --prefetch need --mem-backend uffd");
	if (cfg->record_ws && cfg->prefetch_ws)
		return errbuf_set(eb, -EINVAL, "--record-ws and --prefetch ws exclude each other: "
				  "prefetched pages never fault, so they would not be recorded");
	return 0;
}

/*
 * The CPU check runs beside VM creation: KVM_GET_SUPPORTED_CPUID alone costs ~0.3 ms
 * here, as much as creating the VM. It still completes before any state is set or any
 * guest instruction runs; a failure throws the half-built VM away.
 */
struct cpu_check {
	pthread_t thread;
	struct vm *vm;
	const struct snap_state *st;
	struct errbuf eb;
	int r;
	bool started;
};

static void *cpu_check_run(void *arg)
{
	struct cpu_check *c = arg;

	pthread_setname_np(pthread_self(), "ember-cpucheck");
	if (c->vm->cfg.seccomp) {
		/* it reads the snapshot's CPUID: untrusted input, under its own filter */
		struct seccomp_fds fds = { .n = 0 };

		seccomp_fds_add(&fds, STDERR_FILENO);
		seccomp_fds_add(&fds, log_fd_get());
		c->r = seccomp_apply(SECCOMP_CPUCHECK, &fds);
		if (c->r) {
			errbuf_set(&c->eb, c->r, "CPU check thread: seccomp: %s", strerror(-c->r));
			return NULL;
		}
	}
	c->r = x86_check_host_cpu(c->vm->kvm.dev_fd, c->st, &c->vm->supported_cpuid, &c->eb);
	return NULL;
}

static int cpu_check_join(struct cpu_check *c, struct errbuf *eb)
{
	if (!c->started)
		return 0;
	pthread_join(c->thread, NULL);
	c->started = false;
	if (c->r)
		errbuf_set(eb, c->r, "%s", c->eb.msg);
	return c->r;
}

/*
 * The one sequence that sets a snapshot's state, for a restore and an in-place reset
 * alike (x86.h has the reasons): the TSC frequency, every vCPU and one TSC offset for
 * them all, then the VM-wide state (PIT, kvmclock, PICs, IOAPIC), then the devices,
 * whose interrupt lines are re-driven from their restored state; then a new VMGenID
 * and its interrupt (after the irqchip, or the edge would be lost); last, every guest
 * is told it was stopped.
 */
int vm_set_state(struct vm *vm, const struct snap_state *st, struct errbuf *eb)
{
	int r = x86_vm_restore_prepare(vm, &st->vm, eb);

	for (unsigned i = 0; !r && i < vm->nr_vcpus; i++)
		r = x86_vcpu_restore(&vm->vcpus[i], &st->vcpus[i], eb);
	if (!r)
		x86_vcpus_sync_tsc(vm);
	if (!r)
		r = x86_vm_restore(vm, &st->vm, eb);
	if (!r)
		r = devices_restore(vm, st, eb);
	if (!r)
		r = vmgenid_update(vm, eb);
	if (!r)
		x86_kvmclock_stopped(vm);
	return r;
}

int vm_restore(struct vm **out, const struct vm_config *cfg_in, const char *dir,
	       struct errbuf *eb)
{
	struct vm_config cfg = *cfg_in;
	struct cpu_check check = { .started = false };
	struct mem_region regions[MEM_MAX_REGIONS];
	struct vm_shape shape;
	struct snap_dir d;
	struct snap_err se;
	struct vm *vm = NULL;
	int r;

	*out = NULL;
	/* before any thread exists, so that none takes the memory file's lease signal */
	r = memguard_block_lease_signal();
	if (r)
		return errbuf_set(eb, r, "pthread_sigmask: %s", strerror(-r));
	r = snap_dir_open(dir, &d, &se);
	if (r) /* its messages already name the snapshot */
		return errbuf_set(eb, r, "%s", se.msg);
	if (d.state.memory.kind != SNAP_MEM_FULL) {
		r = errbuf_set(eb, -EINVAL, "snapshot %s is a diff snapshot (parent %s): merge it "
			       "onto its base with 'ember-snap merge' first", dir, d.state.header.parent);
		goto out;
	}
	/* raw: a few KiB read and CRC'd, so a memory file from another snapshot, or zeros, is
	 * refused (~8 us). lz4 needs none: its index carries the snapshot id, and each chunk
	 * is checked against the index's CRC32C as it is read (decoding the anchors' chunks
	 * would cost ~0.1 ms) */
	r = d.lz4 ? 0 : snap_dir_check_anchors(&d, dir, &se);
	if (r) {
		errbuf_set(eb, r, "%s", se.msg);
		goto out;
	}
	if (!d.state.memory.nr_anchors)
		pr_warn("snapshot %s records no memory digests (format %u.%u, before 1.3): its memory "
			"file cannot be checked against its state", dir, d.state.header.major,
			d.state.header.minor);
	r = choose_backend(&cfg, &d.state, dir, eb);
	if (r)
		goto out;
	/* a declared size is bounded by what ember can run, before anything is sized by it */
	if (d.state.memory.size > VM_MAX_MEM_BYTES) {
		r = errbuf_set(eb, -E2BIG, "snapshot %s declares %llu MiB of memory, more than the "
			       "%llu MiB ember runs", dir,
			       (unsigned long long)(d.state.memory.size / MiB),
			       (unsigned long long)(VM_MAX_MEM_BYTES / MiB));
		goto out;
	}
	r = devices_check_state(&d.state, eb);
	if (!r)
		r = x86_check_snapshot_nested(&d.state, eb);
	if (r)
		goto out;
	timing_mark("state-loaded");

	cfg.nr_vcpus = d.state.nr_vcpus;
	cfg.mem_bytes = d.state.memory.size;
	vm = vm_alloc(&cfg);
	if (!vm) {
		r = errbuf_set(eb, -ENOMEM, "out of memory");
		goto out;
	}
	r = kvm_open(&vm->kvm, eb);
	if (r)
		goto out;
	check.vm = vm;
	check.st = &d.state;
	if (pthread_create(&check.thread, NULL, cpu_check_run, &check)) {
		r = errbuf_set(eb, -EAGAIN, "cannot start the CPU check thread");
		goto out;
	}
	check.started = true;
	r = vm_new_generation(&vm->generation, eb);
	if (r)
		goto out;

	vm->snapshot_dir = strdup(dir);
	if (!vm->snapshot_dir) {
		r = errbuf_set(eb, -ENOMEM, "out of memory");
		goto out;
	}
	r = snapshot_shape(&d.state, regions, &shape, eb);
	if (!r)
		r = vm_build(vm, &shape, eb);
	if (!r)
		r = map_memory(vm, &d, dir, eb);
	if (r)
		goto out;
	timing_mark("memory-mapped");
	r = cpu_check_join(&check, eb);
	if (r)
		goto out;
	r = vm_set_state(vm, &d.state, eb);
	if (r)
		goto out;
	devices_post_restore(vm);
	snprintf(vm->last_snapshot_id, sizeof(vm->last_snapshot_id), "%s", d.state.header.id);
	/* kept for in-place resets: the VM owns the decoded state from here */
	vm->golden = malloc(sizeof(*vm->golden));
	if (!vm->golden) {
		r = errbuf_set(eb, -ENOMEM, "out of memory");
		goto out;
	}
	*vm->golden = d.state;
	memset(&d.state, 0, sizeof(d.state));
	vm->entry_phase = "resumed";
	atomic_store(&vm->first_report_pending, true);
	timing_mark("state-set");
	*out = vm;
	vm = NULL;
out:
	if (check.started) {
		struct errbuf ignored;

		cpu_check_join(&check, &ignored);
	}
	if (r && vm)
		vm_destroy(vm);
	snap_dir_close(&d);
	return r;
}
