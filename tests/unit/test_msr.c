/*
 * Initial MSRs (msr.c), and the per-vCPU set-up that applies them (vcpu_setup.c)
 * against the real KVM: CPUID, MSRs, FPU and LAPIC as KVM reports them back, and a
 * few guest instructions that read CPUID and an MSR from inside the guest.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "arch/x86_64/x86.h"

struct msr_want {
	uint32_t index;
	uint64_t data;
};

/* Firecracker's boot MSR set. */
static const struct msr_want want[] = {
	{ 0x174, 0 }, { 0x175, 0 }, { 0x176, 0 },               /* SYSENTER_CS/ESP/EIP */
	{ 0xc0000081, 0 }, { 0xc0000082, 0 }, { 0xc0000083, 0 }, /* STAR, LSTAR, CSTAR */
	{ 0xc0000084, 0 }, { 0xc0000102, 0 },                   /* SYSCALL_MASK, KERNEL_GS_BASE */
	{ 0x10, 0 },                                            /* TSC */
	{ 0x1a0, 1 },                                           /* MISC_ENABLE: fast strings */
	{ 0x2ff, 0x806 },                                       /* MTRRdefType: enabled, WB */
};

static const struct kvm_msr_entry *find_msr(const struct kvm_msr_entry *e, unsigned n,
					    uint32_t index)
{
	for (unsigned i = 0; i < n; i++)
		if (e[i].index == index)
			return &e[i];
	return NULL;
}

Test(msr, initial_set_has_every_boot_msr_with_its_value)
{
	struct kvm_msr_entry e[64];
	unsigned n = msrs_initial(e, ARRAY_SIZE(e));

	cr_assert_eq(n, ARRAY_SIZE(want));
	for (unsigned i = 0; i < ARRAY_SIZE(want); i++) {
		const struct kvm_msr_entry *m = find_msr(e, n, want[i].index);

		cr_assert_not_null(m, "MSR 0x%x missing", want[i].index);
		cr_assert_eq(m->data, want[i].data, "MSR 0x%x = 0x%llx", want[i].index,
			     (unsigned long long)m->data);
	}
}

Test(msr, initial_set_has_no_duplicates)
{
	struct kvm_msr_entry e[64];
	unsigned n = msrs_initial(e, ARRAY_SIZE(e));

	for (unsigned i = 0; i < n; i++)
		for (unsigned j = i + 1; j < n; j++)
			cr_assert_neq(e[i].index, e[j].index, "MSR 0x%x listed twice", e[i].index);
}

Test(msr, initial_set_truncates_to_max_without_overrun)
{
	struct kvm_msr_entry e[5], full[64];
	unsigned n;

	memset(e, 0xab, sizeof(e));
	n = msrs_initial(e, 3);
	cr_assert_eq(n, 3);
	msrs_initial(full, ARRAY_SIZE(full));
	cr_assert_eq(memcmp(e, full, 3 * sizeof(e[0])), 0, "a prefix of the full list");
	cr_assert_eq(e[3].index, 0xabababab, "entry past max untouched");
	cr_assert_eq(msrs_initial(e, 0), 0);
}

/* ---- vcpu_setup.c on the real KVM -------------------------------------------------------- */

#define GUEST_CODE_ADDR HIGH_MEM_START
#define GUEST_RAM (2 * MiB)
#define GUEST_PORT 0xe9

struct kvm_fixture {
	struct vm *vm;
	struct kvm_cpuid2 *supported;
};

static struct kvm_fixture fx;

static void kvm_vm_up(unsigned nr)
{
	struct errbuf eb = { "" };
	struct vm *vm;

	if (access("/dev/kvm", R_OK | W_OK) != 0)
		cr_skip_test("no /dev/kvm");
	vm = calloc(1, sizeof(*vm));
	cr_assert_not_null(vm);
	cr_assert_eq(kvm_open(&vm->kvm, &eb), 0, "%s", eb.msg);
	cr_assert_eq(kvm_create_vm(&vm->kvm, &eb), 0, "%s", eb.msg);
	cr_assert_eq(mem_layout(&vm->mem, GUEST_RAM, &eb), 0, "%s", eb.msg);
	cr_assert_eq(mem_alloc_anon(&vm->mem, &eb), 0, "%s", eb.msg);
	cr_assert_eq(mem_register(&vm->mem, vm->kvm.vm_fd, false, &eb), 0, "%s", eb.msg);
	cr_assert_eq(kvm_create_irqchip(&vm->kvm, &eb), 0, "%s", eb.msg);
	cr_assert_eq(cpuid_get_supported(vm->kvm.dev_fd, &fx.supported, &eb), 0, "%s", eb.msg);
	vm->vcpus = calloc(nr, sizeof(*vm->vcpus));
	cr_assert_not_null(vm->vcpus);
	vm->nr_vcpus = nr;
	for (unsigned i = 0; i < nr; i++) {
		struct vcpu *v = &vm->vcpus[i];

		v->vm = vm;
		v->id = i;
		v->fd = ioctl(vm->kvm.vm_fd, KVM_CREATE_VCPU, (unsigned long)i);
		cr_assert_geq(v->fd, 0, "KVM_CREATE_VCPU %u: %s", i, strerror(errno));
		cr_assert_eq(x86_vcpu_init(vm, v, fx.supported, &eb), 0, "vCPU %u: %s", i, eb.msg);
	}
	fx.vm = vm;
}

static void kvm_vm_down(void)
{
	struct vm *vm = fx.vm;

	if (!vm)
		return;
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		close(vm->vcpus[i].fd);
	free(vm->vcpus);
	kvm_close(&vm->kvm);
	mem_free(&vm->mem);
	free(vm);
	free(fx.supported);
	memset(&fx, 0, sizeof(fx));
}

static void one_vcpu(void) { kvm_vm_up(1); }
static void two_vcpus(void) { kvm_vm_up(2); }

static uint32_t lapic_reg(int fd, unsigned off)
{
	struct kvm_lapic_state s;
	uint32_t v;

	cr_assert_eq(ioctl(fd, KVM_GET_LAPIC, &s), 0, "KVM_GET_LAPIC: %s", strerror(errno));
	memcpy(&v, &s.regs[off], sizeof(v));
	return v;
}

Test(vcpu_setup, kvm_holds_every_initial_msr_value, .init = one_vcpu, .fini = kvm_vm_down)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[ARRAY_SIZE(want)];
	} m;

	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = ARRAY_SIZE(want);
	for (unsigned i = 0; i < ARRAY_SIZE(want); i++)
		m.e[i].index = want[i].index;
	cr_assert_eq(ioctl(fx.vm->vcpus[0].fd, KVM_GET_MSRS, &m), (int)ARRAY_SIZE(want));
	for (unsigned i = 0; i < ARRAY_SIZE(want); i++) {
		if (want[i].index == 0x10) /* the TSC has moved on since it was set to 0 */
			continue;
		cr_assert_eq(m.e[i].data, want[i].data, "MSR 0x%x = 0x%llx", want[i].index,
			     (unsigned long long)m.e[i].data);
	}
}

Test(vcpu_setup, init_puts_the_fpu_in_reset_state, .init = one_vcpu, .fini = kvm_vm_down)
{
	struct vcpu *v = &fx.vm->vcpus[0];
	struct errbuf eb = { "" };
	struct kvm_fpu f = { .fcw = 0x40 };
	size_t xsz = (size_t)fx.vm->kvm.xsave_size;
	uint8_t *xs = calloc(1, xsz);
	uint32_t mxcsr;

	/* dirty the x87 control word, then set the vCPU up again */
	cr_assert_eq(ioctl(v->fd, KVM_SET_FPU, &f), 0);
	cr_assert_eq(x86_vcpu_init(fx.vm, v, fx.supported, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ioctl(v->fd, KVM_GET_FPU, &f), 0);
	cr_assert_eq(f.fcw, 0x37f);
	/* KVM_GET_FPU does not report MXCSR; the XSAVE legacy area (offset 24) does. */
	cr_assert_not_null(xs);
	cr_assert_eq(ioctl(v->fd, KVM_GET_XSAVE2, xs), 0, "KVM_GET_XSAVE2: %s", strerror(errno));
	memcpy(&mxcsr, xs + 24, sizeof(mxcsr));
	cr_assert_eq(mxcsr, 0x1f80);
	free(xs);
}

Test(vcpu_setup, bsp_lint0_is_extint_and_lint1_is_nmi, .init = two_vcpus, .fini = kvm_vm_down)
{
	cr_assert_eq(lapic_reg(fx.vm->vcpus[0].fd, 0x350), 0x700, "BSP LVT0 unmasked ExtINT");
	cr_assert_eq(lapic_reg(fx.vm->vcpus[0].fd, 0x360), 0x400, "BSP LVT1 unmasked NMI");
}

Test(vcpu_setup, ap_local_interrupt_pins_stay_masked, .init = two_vcpus, .fini = kvm_vm_down)
{
	cr_assert(lapic_reg(fx.vm->vcpus[1].fd, 0x350) & 0x10000, "AP LVT0 masked");
	cr_assert(lapic_reg(fx.vm->vcpus[1].fd, 0x360) & 0x10000, "AP LVT1 masked");
}

Test(vcpu_setup, kvm_holds_the_normalized_cpuid, .init = two_vcpus, .fini = kvm_vm_down)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + 512 * sizeof(c->entries[0]));
	struct kvm_cpuid_entry2 *e;

	cr_assert_not_null(c);
	c->nent = 512;
	cr_assert_eq(ioctl(fx.vm->vcpus[1].fd, KVM_GET_CPUID2, c), 0, "%s", strerror(errno));
	e = cpuid_find(c, 1, 0);
	cr_assert_not_null(e);
	cr_assert_eq(e->ebx >> 24, 1);
	e = cpuid_find(c, 0x40000000, 0);
	cr_assert_not_null(e);
	cr_assert_eq(e->ebx, 0x4b4d564b);
	free(c);
}

/*
 * 64-bit guest code at GUEST_CODE_ADDR: cpuid(1) leaves its EBX in RBX; rdmsr of
 * MTRRdefType puts it in RAX; cpuid(0xB, 1) EDX into RDI; then an OUT exits to us.
 */
static const uint8_t guest_code[] = {
	0xb8, 0x0b, 0x00, 0x00, 0x00, /* mov eax, 0xb */
	0xb9, 0x01, 0x00, 0x00, 0x00, /* mov ecx, 1 */
	0x0f, 0xa2,                   /* cpuid */
	0x89, 0xd7,                   /* mov edi, edx */
	0xb8, 0x01, 0x00, 0x00, 0x00, /* mov eax, 1 */
	0x0f, 0xa2,                   /* cpuid */
	0xb9, 0xff, 0x02, 0x00, 0x00, /* mov ecx, 0x2ff */
	0x0f, 0x32,                   /* rdmsr */
	0xe6, GUEST_PORT,             /* out 0xe9, al */
	0xf4,                         /* hlt (not reached) */
};

static void run_to_port(struct vcpu *v, struct kvm_regs *regs)
{
	long sz = ioctl(fx.vm->kvm.dev_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	struct kvm_run *run = mmap(NULL, (size_t)sz, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);

	cr_assert_neq(run, MAP_FAILED);
	cr_assert_eq(ioctl(v->fd, KVM_RUN, 0), 0, "KVM_RUN: %s", strerror(errno));
	cr_assert_eq(run->exit_reason, KVM_EXIT_IO, "exit reason %u", run->exit_reason);
	cr_assert_eq(run->io.port, GUEST_PORT);
	cr_assert_eq(ioctl(v->fd, KVM_GET_REGS, regs), 0);
	munmap(run, (size_t)sz);
}

static void load_guest(void)
{
	struct errbuf eb = { "" };

	cr_assert_eq(boot_write_tables(&fx.vm->mem, &eb), 0, "%s", eb.msg);
	cr_assert_eq(gpa_write(&fx.vm->mem, GUEST_CODE_ADDR, guest_code, sizeof(guest_code)), 0);
}

Test(vcpu_setup, bsp_guest_sees_its_apic_id_and_mtrr_default, .init = two_vcpus,
     .fini = kvm_vm_down)
{
	struct errbuf eb = { "" };
	struct kvm_regs regs;
	struct kvm_sregs sregs;

	load_guest();
	cr_assert_eq(x86_vcpu_set_entry(&fx.vm->vcpus[0], GUEST_CODE_ADDR, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ioctl(fx.vm->vcpus[0].fd, KVM_GET_SREGS, &sregs), 0);
	cr_assert_eq(sregs.cs.selector, BOOT_CS);
	cr_assert(sregs.cs.l, "64-bit code segment");
	cr_assert(sregs.apic_base & (1u << 8), "BSP flag in APIC base kept");
	run_to_port(&fx.vm->vcpus[0], &regs);
	cr_assert_eq((regs.rbx >> 24) & 0xff, 0, "CPUID.1 initial APIC id");
	cr_assert_eq((regs.rbx >> 16) & 0xff, 2, "CPUID.1 logical processors");
	cr_assert_eq(regs.rax & 0xffffffff, 0x806, "MTRRdefType read by the guest");
	cr_assert_eq(regs.rsi, BOOT_PARAMS_ADDR, "boot protocol: rsi = boot_params");
}

Test(vcpu_setup, ap_guest_sees_its_own_apic_id, .init = two_vcpus, .fini = kvm_vm_down)
{
	struct errbuf eb = { "" };
	struct kvm_regs regs;
	struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
	struct vcpu *ap = &fx.vm->vcpus[1];

	load_guest();
	/* Skip INIT/SIPI: put the AP straight into the same 64-bit state. */
	cr_assert_eq(x86_vcpu_set_entry(ap, GUEST_CODE_ADDR, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ioctl(ap->fd, KVM_SET_MP_STATE, &mp), 0, "%s", strerror(errno));
	run_to_port(ap, &regs);
	cr_assert_eq((regs.rbx >> 24) & 0xff, 1, "CPUID.1 initial APIC id");
	cr_assert_eq(regs.rdi & 0xffffffff, 1, "CPUID.0xB x2APIC id");
}
