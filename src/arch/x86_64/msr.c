/*
 * The MSR values a freshly created x86-64 vCPU gets before its first instruction. KVM's
 * reset state is mostly right already; these are the ones a boot loader or firmware
 * would have set up, chosen as Firecracker does, so that a Linux guest starts the same
 * way under either VMM. (<asm/msr-index.h> is not part of the uapi headers.)
 */
#include "x86.h"

#define MSR_IA32_TSC            0x00000010u
#define MSR_IA32_SYSENTER_CS    0x00000174u
#define MSR_IA32_SYSENTER_ESP   0x00000175u
#define MSR_IA32_SYSENTER_EIP   0x00000176u
#define MSR_IA32_MISC_ENABLE    0x000001a0u
#define MSR_MTRR_DEF_TYPE       0x000002ffu
#define MSR_STAR                0xc0000081u
#define MSR_LSTAR               0xc0000082u
#define MSR_CSTAR               0xc0000083u
#define MSR_SYSCALL_MASK        0xc0000084u
#define MSR_KERNEL_GS_BASE      0xc0000102u

#define MISC_ENABLE_FAST_STRING (1ull << 0)
#define MTRR_DEF_TYPE_ENABLE    (1ull << 11)
#define MTRR_TYPE_WB            6ull

static const struct kvm_msr_entry initial_msrs[] = {
	/* No syscall/sysenter entry points until the guest kernel installs its own. */
	{ .index = MSR_IA32_SYSENTER_CS, .data = 0 },
	{ .index = MSR_IA32_SYSENTER_ESP, .data = 0 },
	{ .index = MSR_IA32_SYSENTER_EIP, .data = 0 },
	{ .index = MSR_STAR, .data = 0 },
	{ .index = MSR_CSTAR, .data = 0 },
	{ .index = MSR_KERNEL_GS_BASE, .data = 0 },
	{ .index = MSR_SYSCALL_MASK, .data = 0 },
	{ .index = MSR_LSTAR, .data = 0 },
	/* Every vCPU starts its TSC at 0 (KVM synchronises writes made close together). */
	{ .index = MSR_IA32_TSC, .data = 0 },
	/* Fast string operations enabled, as every BIOS leaves it; Linux warns otherwise. */
	{ .index = MSR_IA32_MISC_ENABLE, .data = MISC_ENABLE_FAST_STRING },
	/* MTRRs on with write-back as the default type: with MTRRs off (KVM's reset state)
	 * a guest that honours them would treat all of RAM as uncached. */
	{ .index = MSR_MTRR_DEF_TYPE, .data = MTRR_DEF_TYPE_ENABLE | MTRR_TYPE_WB },
};

unsigned msrs_initial(struct kvm_msr_entry *out, unsigned max)
{
	unsigned n = ARRAY_SIZE(initial_msrs) < max ? ARRAY_SIZE(initial_msrs) : max;

	for (unsigned i = 0; i < n; i++)
		out[i] = initial_msrs[i];
	return n;
}
