/*
 * Per-vCPU set-up right after KVM_CREATE_VCPU (CPUID, MSRs, FPU, and the BSP's local
 * interrupt pins) and the BSP's 64-bit entry state once the loader has run.
 * CPUID goes first: KVM decides which MSRs and xsave features exist from it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "x86.h"

#define MSRS_INIT_MAX 32

/* LAPIC register offsets in struct kvm_lapic_state and the LVT delivery modes. */
#define APIC_LVT0 0x350
#define APIC_LVT1 0x360
#define APIC_DM_NMI    0x400u
#define APIC_DM_EXTINT 0x700u

#define FPU_FCW_RESET   0x37f
#define FPU_MXCSR_RESET 0x1f80

static int set_cpuid(struct vm *vm, struct vcpu *v, const struct kvm_cpuid2 *supported,
		     struct errbuf *eb)
{
	struct kvm_cpuid2 *c;
	int r;

	r = cpuid_normalize(supported, v->id, vm->nr_vcpus, &c, eb);
	if (r)
		return r;
	r = 0;
	if (ioctl(v->fd, KVM_SET_CPUID2, c) < 0)
		r = errbuf_set(eb, -errno, "vCPU %u: KVM_SET_CPUID2 (%u entries): %s", v->id, c->nent,
			       strerror(errno));
	free(c);
	return r;
}

static int set_msrs(struct vcpu *v, struct errbuf *eb)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[MSRS_INIT_MAX];
	} m;
	int set;

	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = msrs_initial(m.e, MSRS_INIT_MAX);
	set = ioctl(v->fd, KVM_SET_MSRS, &m);
	if (set < 0)
		return errbuf_set(eb, -errno, "vCPU %u: KVM_SET_MSRS: %s", v->id, strerror(errno));
	/* KVM stops at the first MSR it rejects and returns how many it set. */
	if ((unsigned)set != m.hdr.nmsrs)
		return errbuf_set(eb, -EINVAL, "vCPU %u: KVM rejected MSR 0x%x (value 0x%llx), "
				  "%d of %u initial MSRs set", v->id, m.e[set].index,
				  (unsigned long long)m.e[set].data, set, m.hdr.nmsrs);
	return 0;
}

static int set_fpu(struct vcpu *v, struct errbuf *eb)
{
	struct kvm_fpu fpu;

	/*
	 * The x87/SSE reset state (FNINIT control word, all SSE exceptions masked), in case
	 * the vCPU is being set up again. This KVM ignores kvm_fpu.mxcsr in both directions
	 * (KVM_GET_XSAVE shows it); its own reset value is already 0x1f80.
	 */
	memset(&fpu, 0, sizeof(fpu));
	fpu.fcw = FPU_FCW_RESET;
	fpu.mxcsr = FPU_MXCSR_RESET;
	if (ioctl(v->fd, KVM_SET_FPU, &fpu) < 0)
		return errbuf_set(eb, -errno, "vCPU %u: KVM_SET_FPU: %s", v->id, strerror(errno));
	return 0;
}

static void lapic_set_reg(struct kvm_lapic_state *s, unsigned off, uint32_t val)
{
	memcpy(&s->regs[off], &val, sizeof(val));
}

/*
 * "Virtual wire" mode, as a BIOS leaves the BSP: LINT0 delivers the 8259 PIC's
 * interrupts (ExtINT) and LINT1 is NMI, both unmasked, so a guest that has not set
 * up the IOAPIC yet (Linux's early timer and console) still gets legacy interrupts.
 * APs keep KVM's reset state (all LVTs masked): a second vCPU accepting ExtINT would
 * let KVM hand PIC interrupts to it, and Linux masks LINT0/1 on APs anyway.
 */
static int set_lint_bsp(struct vcpu *v, struct errbuf *eb)
{
	struct kvm_lapic_state s;

	if (ioctl(v->fd, KVM_GET_LAPIC, &s) < 0)
		return errbuf_set(eb, -errno, "vCPU %u: KVM_GET_LAPIC: %s", v->id, strerror(errno));
	lapic_set_reg(&s, APIC_LVT0, APIC_DM_EXTINT);
	lapic_set_reg(&s, APIC_LVT1, APIC_DM_NMI);
	if (ioctl(v->fd, KVM_SET_LAPIC, &s) < 0)
		return errbuf_set(eb, -errno, "vCPU %u: KVM_SET_LAPIC: %s", v->id, strerror(errno));
	return 0;
}

int x86_vcpu_init(struct vm *vm, struct vcpu *v, const struct kvm_cpuid2 *supported,
		  struct errbuf *eb)
{
	int r;

	r = set_cpuid(vm, v, supported, eb);
	if (!r)
		r = set_msrs(v, eb);
	if (!r)
		r = set_fpu(v, eb);
	if (!r && v->id == 0)
		r = set_lint_bsp(v, eb);
	return r;
}

int x86_vcpu_set_entry(struct vcpu *v, uint64_t entry, struct errbuf *eb)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	/* Start from KVM's sregs: boot_entry_sregs leaves APIC base and the pending
	 * interrupt bitmap alone, and those must stay as KVM has them. */
	if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		return errbuf_set(eb, -errno, "vCPU %u: KVM_GET_SREGS: %s", v->id, strerror(errno));
	boot_entry_sregs(&sregs);
	if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0)
		return errbuf_set(eb, -errno, "vCPU %u: KVM_SET_SREGS: %s", v->id, strerror(errno));
	memset(&regs, 0, sizeof(regs));
	boot_entry_regs(&regs, entry);
	if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0)
		return errbuf_set(eb, -errno, "vCPU %u: KVM_SET_REGS: %s", v->id, strerror(errno));
	return 0;
}
