/*
 * kvmclock, as a Linux guest uses it: a per-CPU pvclock page registered through
 * MSR_KVM_SYSTEM_TIME_NEW, which KVM rewrites (system time at a TSC stamp, the TSC
 * scale) whenever the clock must be re-anchored, a restore among those times. Read in
 * ring 3 with the pvclock algorithm; registered through the ring-0 gate.
 */
#include "internal.h"

#define MSR_KVM_SYSTEM_TIME_NEW  0x4b564d01
#define KVM_CPUID_SIGNATURE      0x40000000
#define KVM_CPUID_FEATURES       0x40000001
#define KVM_FEATURE_CLOCKSOURCE2 3

/* Linux's struct pvclock_vcpu_time_info (asm/pvclock-abi.h), written by KVM */
struct pvclock_time {
	uint32_t version, pad0;
	uint64_t tsc_timestamp, system_time;
	uint32_t tsc_to_system_mul;
	int8_t tsc_shift;
	uint8_t flags;
	uint8_t pad[2];
};

_Static_assert(sizeof(struct pvclock_time) == 32, "pvclock_vcpu_time_info layout");

/* One per CPU, each in its own cache line; identity-mapped, so the address is the GPA. */
static struct pvclock_time pages[GUEST_MAX_CPUS] __attribute__((aligned(64)));
static bool enabled[GUEST_MAX_CPUS];

bool kvmclock_available(void)
{
	/* cpuid() runs in ring 0: the VMM's table, not the outer host's */
	struct cpuid_regs sig = cpuid(KVM_CPUID_SIGNATURE, 0);

	if (sig.ebx != 0x4b4d564b || sig.ecx != 0x564b4d56 || sig.edx != 0x4d) /* "KVMKVMKVM" */
		return false;
	return (cpuid(KVM_CPUID_FEATURES, 0).eax >> KVM_FEATURE_CLOCKSOURCE2) & 1;
}

static volatile struct pvclock_time *this_page(void)
{
	unsigned cpu = guest_cpu_id();

	return cpu < GUEST_MAX_CPUS ? &pages[cpu] : NULL;
}

bool kvmclock_enable(void)
{
	volatile struct pvclock_time *p = this_page();

	if (!p || !kvmclock_available())
		return false;
	sys_wrmsr(MSR_KVM_SYSTEM_TIME_NEW, (uint64_t)(uintptr_t)p | 1);
	enabled[guest_cpu_id()] = true;
	return true;
}

static inline uint64_t rdtsc_ordered(void)
{
	__asm__ volatile("lfence" : : : "memory");
	return rdtsc();
}

uint64_t kvmclock_ns(void)
{
	volatile struct pvclock_time *p = this_page();
	uint32_t version;
	uint64_t ns;

	if (!p || !enabled[guest_cpu_id()])
		return 0;
	do {
		uint64_t delta;

		version = __atomic_load_n(&p->version, __ATOMIC_ACQUIRE);
		delta = rdtsc_ordered() - p->tsc_timestamp;
		if (p->tsc_shift < 0)
			delta >>= -p->tsc_shift;
		else
			delta <<= p->tsc_shift;
		ns = p->system_time +
		     (uint64_t)(((unsigned __int128)delta * p->tsc_to_system_mul) >> 32);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
	} while ((version & 1) || version != p->version);
	return ns;
}

uint8_t kvmclock_flags(void)
{
	volatile struct pvclock_time *p = this_page();

	return p ? __atomic_load_n(&p->flags, __ATOMIC_ACQUIRE) : 0;
}

void kvmclock_clear_stopped(void)
{
	volatile struct pvclock_time *p = this_page();

	if (p)
		__atomic_fetch_and(&p->flags, (uint8_t)~KVMCLOCK_GUEST_STOPPED, __ATOMIC_ACQ_REL);
}
