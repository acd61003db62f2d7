/*
 * floor_reset: the floors under ember's warm starts (bench/README.md, sections
 * "standby" and "reset"). It builds a VM from a golden snapshot exactly as
 * floor_restore does (floor_vm.h: state decoded with libsnapfmt, memory file mapped
 * MAP_PRIVATE under memslots made before the irqchip, TSS, identity map, irqchip, PIT,
 * vCPUs, VM and vCPU state with ember's values and order), untimed, and then obeys
 * line commands on stdin, one answer line each on stdout:
 *
 *   go            the standby floor: the VM is built and its state set but it never
 *                 ran. Runs vCPU 0 on this thread until the guest's first OUT.
 *                 -> "go resumed_us=R first_report_us=F": R just before the first
 *                 KVM_RUN, F when it exits for the OUT, both in µs from EMBER_T0_NS
 *                 (the client's clock, as `ember --timings` counts).
 *   dirty ARGS    answers the guest's pending WAIT ucall with the command "dirty ARGS"
 *                 (tests/guest/sandbox.c: the guest writes one word in each of N heap
 *                 pages, then REPORTs), runs it to that REPORT and completes the exit
 *                 (KVM_RUN with immediate_exit, as ember does before it pauses), untimed.
 *                 -> "dirtied pages=N"
 *   reset         the in-place reset floor, timed from its start to the guest's first
 *                 OUT after it: find the written pages (KVM_GET_DIRTY_LOG per memslot,
 *                 plus the pages this program wrote: the WAIT replies), drop them with
 *                 MADV_DONTNEED: one process_madvise(2) on ourselves for up to 1024 runs
 *                 of pages (one madvise per run where the kernel refuses that; with
 *                 --whole: one madvise over all of guest RAM, and no dirty log), set the VM
 *                 state (PIT2, CLOCK, IRQCHIP x3) and every vCPU's state (as at restore
 *                 but CPUID, which KVM refuses to change once a vCPU ran; ember's reset
 *                 skips it too), KVM_RUN until the first OUT, which must be the
 *                 sandbox's WAIT ucall.
 *                 -> "reset us_total=T us_log=L us_madvise=M us_state=S us_run=R
 *                     pages=P runs=U" (T = L + M + S + R; P pages in U runs dropped;
 *                     --whole: P is the mapping's size in pages, U = 1)
 *   quit          _exit(0) (also at the end of stdin)
 *
 * The guest's writes are real guest writes, through KVM (copy-on-write of the file's
 * pages in the host, the dirty log, the MMU's mappings), not host writes that model
 * them. The first line on stdout is "ready" once the VM is built. What this leaves out
 * of ember's reset: the control socket, pausing vCPU threads, quiescing devices and
 * their state, the VM generation, ember's own dirty bitmap bookkeeping.
 *
 *   floor_reset [--whole] SNAPSHOT_DIR
 *
 * Only raw full snapshots (the mmap path); only vCPU 0 runs. Exit 0 after quit, 1 on
 * any error (message on stderr). Does not link libember.
 */
#define FLOOR_NAME "floor_reset"
#include "floor_vm.h" /* reading the snapshot, building the VM, setting state */

#include <sys/syscall.h>
#include <sys/uio.h>

#define PAGE_SIZE 4096ull
#define DROP_BATCH 1024 /* UIO_MAXIOV */

struct floor {
	struct snap_state st;
	int kvm, vm, vcpu_fd[SNAP_MAX_VCPUS];
	struct kvm_run *run;
	uint8_t *mem;
	uint64_t pages;          /* of the memory file */
	bool whole;              /* --whole: no dirty log, one madvise over everything */
	bool io_pending;         /* stopped at an OUT exit that KVM has not completed */
	uint64_t *dirty;         /* pages to drop at the next reset (file page numbers) */
	uint64_t *slot_bm;       /* KVM_GET_DIRTY_LOG scratch, the largest slot's size */
};

static uint64_t us_since(uint64_t ns)
{
	return (mono_ns() - ns) / 1000;
}

/* ---- building ------------------------------------------------------------------------ */

static int build(struct floor *f, const char *dir)
{
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	uint64_t idmap = KVM_IDMAP, max_slot = 0;
	int run_size;

	if (load_state(dir, &f->st))
		return 1;
	f->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (f->kvm < 0)
		return fail("/dev/kvm");
	f->vm = ioctl(f->kvm, KVM_CREATE_VM, 0);
	if (f->vm < 0)
		return fail("KVM_CREATE_VM");
	if (map_memory(dir, &f->st, f->vm, f->whole ? 0 : KVM_MEM_LOG_DIRTY_PAGES, &f->mem))
		return 1;
	IOCTL(f->vm, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS);
	IOCTL(f->vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap);
	IOCTL(f->vm, KVM_CREATE_IRQCHIP, 0);
	IOCTL(f->vm, KVM_CREATE_PIT2, &pit);
	run_size = ioctl(f->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size <= 0)
		return fail("KVM_GET_VCPU_MMAP_SIZE");
	for (uint32_t i = 0; i < f->st.nr_vcpus; i++) {
		f->vcpu_fd[i] = ioctl(f->vm, KVM_CREATE_VCPU, (unsigned long)i);
		if (f->vcpu_fd[i] < 0)
			return fail("KVM_CREATE_VCPU");
	}
	f->run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, f->vcpu_fd[0], 0);
	if (f->run == MAP_FAILED)
		return fail("mmap kvm_run");
	if (set_vm_state(f->vm, &f->st.vm))
		return 1;
	for (uint32_t i = 0; i < f->st.nr_vcpus; i++)
		if (set_vcpu_state(f->vcpu_fd[f->st.vcpus[i].id], &f->st.vcpus[i], true))
			return 1;
	f->pages = f->st.memory.size / PAGE_SIZE;
	for (uint32_t i = 0; i < f->st.vm.nr_regions; i++)
		if (f->st.vm.regions[i].size / PAGE_SIZE > max_slot)
			max_slot = f->st.vm.regions[i].size / PAGE_SIZE;
	/* allocated (and touched) now: the timed path allocates nothing */
	f->dirty = calloc((f->pages + 63) / 64, 8);
	f->slot_bm = calloc((max_slot + 63) / 64, 8);
	if (!f->dirty || !f->slot_bm)
		return failx("out of memory");
	return 0;
}

/* ---- running ------------------------------------------------------------------------- */

/* The host pointer of a guest ucall block, NULL if it is not in RAM. */
static struct ember_ucall *ucall_at(struct floor *f, uint32_t gpa, uint64_t *file_page)
{
	for (uint32_t i = 0; i < f->st.vm.nr_regions; i++) {
		const struct snap_region *r = &f->st.vm.regions[i];

		if (gpa >= r->gpa && gpa - r->gpa <= r->size - EMBER_UCALL_SIZE) {
			uint64_t off = r->file_offset + (gpa - r->gpa);

			*file_page = off / PAGE_SIZE;
			return (struct ember_ucall *)(f->mem + off);
		}
	}
	return NULL;
}

/* The ucall the current OUT exit names, or NULL (another port, or a bad address). */
static struct ember_ucall *exit_ucall(struct floor *f, uint64_t *file_page)
{
	uint32_t gpa;

	if (f->run->io.port != EMBER_PORT_UCALL || f->run->io.size != 4)
		return NULL;
	memcpy(&gpa, (uint8_t *)f->run + f->run->io.data_offset, 4);
	return ucall_at(f, gpa, file_page);
}

/*
 * KVM_RUN until an OUT exit (returned with the OUT not yet completed by KVM). IN
 * exits are answered as floor_restore does (the UART idles, everything else all ones).
 */
static int run_to_out(struct floor *f)
{
	struct kvm_run *run = f->run;

	for (;;) {
		if (ioctl(f->vcpu_fd[0], KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return fail("KVM_RUN");
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			if (run->io.direction == KVM_EXIT_IO_OUT) {
				f->io_pending = true;
				return 0;
			}
			answer_read(run);
			break;
		case KVM_EXIT_MMIO:
			if (!run->mmio.is_write)
				answer_read(run);
			break;
		case KVM_EXIT_INTR:
			break;
		default:
			fprintf(stderr, FLOOR_NAME ": unexpected exit %u\n", run->exit_reason);
			return 1;
		}
	}
}

/* KVM completes an OUT on the next KVM_RUN: do that without running guest code. */
static int complete_io(struct floor *f)
{
	if (!f->io_pending)
		return 0;
	f->run->immediate_exit = 1;
	if (ioctl(f->vcpu_fd[0], KVM_RUN, 0) < 0 && errno != EINTR && errno != EAGAIN)
		return fail("KVM_RUN (completing the OUT)");
	f->run->immediate_exit = 0;
	f->io_pending = false;
	return 0;
}

/* The current exit must be the sandbox's WAIT ucall. */
static int check_wait(struct floor *f)
{
	uint64_t page;
	struct ember_ucall *uc = exit_ucall(f, &page);

	if (!uc || uc->cmd != EMBER_UCALL_WAIT)
		return failx("the guest's first OUT is not a WAIT ucall (is this the sandbox?)");
	return 0;
}

static int cmd_go(struct floor *f)
{
	uint64_t resumed, report;

	resumed = us_since(t0_ns);
	if (run_to_out(f))
		return 1;
	report = us_since(t0_ns);
	if (check_wait(f))
		return 1;
	printf("go resumed_us=%" PRIu64 " first_report_us=%" PRIu64 "\n", resumed, report);
	return 0;
}

/* Answers the pending WAIT with cmd and runs the guest to its REPORT "dirty". */
static int cmd_dirty(struct floor *f, const char *args)
{
	uint64_t page;
	struct ember_ucall *uc = exit_ucall(f, &page);
	char cmd[EMBER_UCALL_DATA_MAX];
	int n = snprintf(cmd, sizeof(cmd), "dirty %s", args);

	if (!f->io_pending || !uc || uc->cmd != EMBER_UCALL_WAIT)
		return failx("dirty: the guest is not waiting for a command (send go first)");
	if (n < 0 || (size_t)n >= sizeof(cmd))
		return failx("dirty: command too long");
	memset(uc->data, 0, sizeof(uc->data));
	memcpy(uc->data, cmd, (size_t)n);
	uc->data_len = (uint32_t)n;
	uc->status = EMBER_WAIT_CMD;
	f->dirty[page / 64] |= 1ull << (page % 64); /* our write: not in KVM's log */
	for (;;) {
		if (run_to_out(f))
			return 1;
		uc = exit_ucall(f, &page);
		if (!uc)
			continue; /* a UART byte */
		if (uc->cmd == EMBER_UCALL_PRINT) {
			fprintf(stderr, "guest: %.*s", EMBER_UCALL_MSG_MAX, uc->msg);
			continue;
		}
		if (uc->cmd == EMBER_UCALL_REPORT && !strncmp(uc->msg, "dirty", 6)) {
			printf("dirtied pages=%" PRIu64 "\n", uc->args[0]);
			return complete_io(f);
		}
		return failx("dirty: the guest made another ucall than REPORT dirty (a bad "
			     "page count?)");
	}
}

struct drop {
	struct floor *f;
	uint64_t pages, runs;
	struct iovec iov[DROP_BATCH];
	unsigned niov;
};

/* The batch in one process_madvise(2) on ourselves (one MMU-notifier and TLB-flush
 * round instead of one per run); one madvise per run where the kernel refuses it. */
static int drop_flush(struct drop *d)
{
	static int pidfd = -1;
	size_t total = 0;

	for (unsigned i = 0; i < d->niov; i++)
		total += d->iov[i].iov_len;
	if (d->niov && pidfd < 0)
		pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (d->niov && pidfd >= 0 &&
	    syscall(SYS_process_madvise, pidfd, d->iov, (size_t)d->niov, MADV_DONTNEED, 0) ==
		    (ssize_t)total)
		d->niov = 0;
	for (unsigned i = 0; i < d->niov; i++)
		if (madvise(d->iov[i].iov_base, d->iov[i].iov_len, MADV_DONTNEED) < 0)
			return fail("madvise(MADV_DONTNEED)");
	d->niov = 0;
	return 0;
}

static int drop_run(struct drop *d, uint64_t first, uint64_t count)
{
	d->iov[d->niov++] = (struct iovec){ .iov_base = d->f->mem + first * PAGE_SIZE,
					    .iov_len = count * PAGE_SIZE };
	d->pages += count;
	d->runs++;
	return d->niov == DROP_BATCH ? drop_flush(d) : 0;
}

/* Every run of set bits in f->dirty, dropped and cleared. */
static int drop_dirty(struct drop *d)
{
	struct floor *f = d->f;
	uint64_t pg = 0;

	while (pg < f->pages) {
		uint64_t w = f->dirty[pg / 64] >> (pg % 64), first;

		if (!w) {
			pg = (pg / 64 + 1) * 64;
			continue;
		}
		pg += (uint64_t)__builtin_ctzll(w);
		if (pg >= f->pages)
			break;
		first = pg;
		while (pg < f->pages && (f->dirty[pg / 64] >> (pg % 64)) & 1)
			pg++;
		if (drop_run(d, first, pg - first))
			return 1;
	}
	memset(f->dirty, 0, (f->pages + 63) / 64 * 8);
	return drop_flush(d);
}

/* KVM_GET_DIRTY_LOG of every memslot, into f->dirty (file page numbers). */
static int collect_log(struct floor *f)
{
	for (uint32_t i = 0; i < f->st.vm.nr_regions; i++) {
		const struct snap_region *r = &f->st.vm.regions[i];
		uint64_t pages = r->size / PAGE_SIZE, base = r->file_offset / PAGE_SIZE;
		struct kvm_dirty_log log = { .slot = i, .dirty_bitmap = f->slot_bm };

		IOCTL(f->vm, KVM_GET_DIRTY_LOG, &log);
		for (uint64_t w = 0; w < (pages + 63) / 64; w++) {
			uint64_t bits = f->slot_bm[w];

			while (bits) {
				uint64_t pg = base + w * 64 + (uint64_t)__builtin_ctzll(bits);

				f->dirty[pg / 64] |= 1ull << (pg % 64);
				bits &= bits - 1;
			}
		}
	}
	return 0;
}

static int cmd_reset(struct floor *f)
{
	static struct drop d;
	uint64_t t0, t_log, t_mem, t_state, t_run;

	if (complete_io(f)) /* normally done already, after the dirty REPORT */
		return 1;
	d = (struct drop){ .f = f };
	t0 = mono_ns();
	if (!f->whole && collect_log(f))
		return 1;
	t_log = mono_ns();
	if (f->whole) {
		if (drop_run(&d, 0, f->pages) || drop_flush(&d))
			return 1;
		memset(f->dirty, 0, (f->pages + 63) / 64 * 8);
	} else if (drop_dirty(&d)) {
		return 1;
	}
	t_mem = mono_ns();
	if (set_vm_state(f->vm, &f->st.vm))
		return 1;
	for (uint32_t i = 0; i < f->st.nr_vcpus; i++)
		if (set_vcpu_state(f->vcpu_fd[f->st.vcpus[i].id], &f->st.vcpus[i], false))
			return 1;
	t_state = mono_ns();
	if (run_to_out(f))
		return 1;
	t_run = mono_ns();
	if (check_wait(f))
		return 1;
	printf("reset us_total=%" PRIu64 " us_log=%" PRIu64 " us_madvise=%" PRIu64
	       " us_state=%" PRIu64 " us_run=%" PRIu64 " pages=%" PRIu64 " runs=%" PRIu64 "\n",
	       (t_run - t0) / 1000, (t_log - t0) / 1000, (t_mem - t_log) / 1000,
	       (t_state - t_mem) / 1000, (t_run - t_state) / 1000, d.pages, d.runs);
	return 0;
}

int main(int argc, char **argv)
{
	const char *t0 = getenv("EMBER_T0_NS");
	static struct floor f;
	char line[128];
	int a = 1;

	t0_ns = mono_ns();
	if (t0 && *t0 && strtoull(t0, NULL, 10) && strtoull(t0, NULL, 10) <= t0_ns)
		t0_ns = strtoull(t0, NULL, 10); /* same rule as ember's timing.c */
	if (a < argc && !strcmp(argv[a], "--whole")) {
		f.whole = true;
		a++;
	}
	if (a + 1 != argc)
		return failx("usage: floor_reset [--whole] SNAPSHOT_DIR");
	if (build(&f, argv[a]))
		return 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	while (fgets(line, sizeof(line), stdin)) {
		int r;

		line[strcspn(line, "\n")] = 0;
		if (!strcmp(line, "go"))
			r = cmd_go(&f);
		else if (!strncmp(line, "dirty ", 6))
			r = cmd_dirty(&f, line + 6);
		else if (!strcmp(line, "reset"))
			r = cmd_reset(&f);
		else if (!strcmp(line, "quit"))
			break;
		else
			r = failx("unknown command (go, dirty N [seq], reset, quit)");
		if (r)
			return 1;
	}
	_exit(0); /* the kernel tears the VM down */
}
