/*
 * floor_restore: the least a VMM has to do to resume an ember snapshot (raw memory) up
 * to the guest's first port write. It is the baseline `ember restore` is measured
 * against (bench/README.md, section "restore"), so it makes only the calls no VMM can
 * skip when it restores the same state into the same VM shape:
 *
 *   - read state.msgpack whole and decode it with libsnapfmt (snap_state_decode: CRC,
 *     bounds pre-pass, msgpack, schema). Decoding is unavoidable; what ember adds on
 *     top (CPU compatibility against the host, device-section checks) is not.
 *   - open the memory file and mmap it MAP_PRIVATE (no fstat: the floor trusts the
 *     size; ember checks it so that a short file cannot SIGBUS it).
 *   - /dev/kvm, KVM_CREATE_VM, the memslots (before the irqchip, PLATFORM.md),
 *     TSS + identity map, irqchip, PIT, the vCPUs and their kvm_run areas.
 *   - VM state: PIT2, CLOCK, IRQCHIP x3. Per vCPU: CPUID2, MP_STATE, REGS, SREGS,
 *     XSAVE, XCRS, DEBUGREGS, LAPIC, MSRS (IA32_TSC first), VCPU_EVENTS - the order
 *     and the values of ember's src/arch/x86_64/{vm,cpu}_state.c.
 *   - KVM_RUN on this thread until the first OUT. For the sandbox guest that is its
 *     WAIT ucall (port EMBER_PORT_UCALL): the floor checks that the address it writes
 *     points at a WAIT ucall, which proves the guest resumed where it was, then
 *     _exit()s without tearing anything down.
 *
 * Not done (ember does them): KVM capability and API checks, the TSC frequency check,
 * the VM generation, devices, a console, vCPU threads, signal handling, teardown.
 * Only vCPU 0 runs (every vCPU's state is set).
 *
 *   floor_restore SNAPSHOT_DIR
 *
 * Prints "ember-timing <phase> <us>" on stderr like `ember restore --timings`, counting
 * from EMBER_T0_NS when set: state-loaded, vm-created, memory-mapped, state-set,
 * resumed (just before the first KVM_RUN), first-report (the first OUT exit).
 * Exit 0 at the first report, 1 on any error. Does not link libember.
 */
#define FLOOR_NAME "floor_restore"
#include "floor_vm.h" /* reading the snapshot, building the VM, setting state */

static void mark(const char *phase)
{
	char line[80];
	int n = snprintf(line, sizeof(line), "ember-timing %s %" PRIu64 "\n", phase,
			 (mono_ns() - t0_ns) / 1000);

	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* nowhere to report it */
	}
}

/* ---- running to the first report -------------------------------------------------- */

/* The guest's first OUT: for a ucall, check it names a WAIT ucall in RAM. */
static int first_out(const struct kvm_run *run, const struct snap_state *st, const uint8_t *mem)
{
	const uint8_t *data = (const uint8_t *)run + run->io.data_offset;
	uint32_t gpa, cmd;

	mark("first-report");
	if (run->io.port != EMBER_PORT_UCALL)
		return 0; /* some other first sign of life: the time is what counts */
	if (run->io.size != 4)
		return failx("ucall OUT is not 32 bits wide");
	memcpy(&gpa, data, 4);
	for (uint32_t i = 0; i < st->vm.nr_regions; i++) {
		const struct snap_region *r = &st->vm.regions[i];

		if (gpa >= r->gpa && gpa - r->gpa <= r->size - EMBER_UCALL_SIZE) {
			memcpy(&cmd, mem + r->file_offset + (gpa - r->gpa), 4);
			if (cmd != EMBER_UCALL_WAIT)
				return failx("first ucall after restore is not WAIT");
			return 0;
		}
	}
	return failx("first ucall points outside guest RAM");
}

static int run_to_first_report(int vcpu, struct kvm_run *run, const struct snap_state *st,
			       const uint8_t *mem)
{
	mark("resumed");
	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return fail("KVM_RUN");
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			if (run->io.direction == KVM_EXIT_IO_OUT)
				return first_out(run, st, mem);
			answer_read(run);
			break;
		case KVM_EXIT_MMIO:
			if (!run->mmio.is_write)
				answer_read(run);
			break;
		case KVM_EXIT_INTR:
			break;
		default:
			fprintf(stderr, "floor_restore: unexpected exit %u before the first report\n",
				run->exit_reason);
			return 1;
		}
	}
}

int main(int argc, char **argv)
{
	const char *t0 = getenv("EMBER_T0_NS");
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	uint64_t idmap = KVM_IDMAP;
	static struct snap_state st;
	static int vcpu_fd[SNAP_MAX_VCPUS];
	struct kvm_run *run0;
	int kvm, vm, run_size;
	uint8_t *mem;

	t0_ns = mono_ns();
	if (t0 && *t0 && strtoull(t0, NULL, 10) && strtoull(t0, NULL, 10) <= t0_ns)
		t0_ns = strtoull(t0, NULL, 10); /* same rule as ember's timing.c */
	if (argc != 2)
		return failx("usage: floor_restore SNAPSHOT_DIR");
	if (load_state(argv[1], &st))
		return 1;
	mark("state-loaded");

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		return fail("/dev/kvm");
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		return fail("KVM_CREATE_VM");
	mark("vm-created");
	if (map_memory(argv[1], &st, vm, 0, &mem))
		return 1;
	mark("memory-mapped");

	IOCTL(vm, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS);
	IOCTL(vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap);
	IOCTL(vm, KVM_CREATE_IRQCHIP, 0);
	IOCTL(vm, KVM_CREATE_PIT2, &pit);
	run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size <= 0)
		return fail("KVM_GET_VCPU_MMAP_SIZE");
	for (uint32_t i = 0; i < st.nr_vcpus; i++) {
		vcpu_fd[i] = ioctl(vm, KVM_CREATE_VCPU, (unsigned long)i);
		if (vcpu_fd[i] < 0)
			return fail("KVM_CREATE_VCPU");
	}
	run0 = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd[0], 0);
	if (run0 == MAP_FAILED)
		return fail("mmap kvm_run");
	if (set_vm_state(vm, &st.vm))
		return 1;
	/* the decoder checked that the ids are exactly 0..n-1 */
	for (uint32_t i = 0; i < st.nr_vcpus; i++)
		if (set_vcpu_state(vcpu_fd[st.vcpus[i].id], &st.vcpus[i], true))
			return 1;
	mark("state-set");
	if (run_to_first_report(vcpu_fd[0], run0, &st, mem))
		return 1;
	_exit(0); /* the kernel tears the VM down; that is not restore latency */
}
