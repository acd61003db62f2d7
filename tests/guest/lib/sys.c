/*
 * Ring 3's way into ring 0: sys_gate in vectors.S (a #UD the handler recognises by
 * address; `syscall` and `int $n` do not reach ring 0 on this platform), and the
 * x2APIC operations built on it.
 */
#include "internal.h"
#include "layout.h"

static uint64_t sys_call(uint64_t nr, uint64_t a0, uint64_t a1)
{
	uint64_t ret;

	/* no red zone (-mno-red-zone), so the call's push clobbers nothing */
	__asm__ volatile("call sys_gate" : "=a"(ret) : "a"(nr), "D"(a0), "S"(a1) : "memory");
	return ret;
}

void sys_wrmsr(uint32_t msr, uint64_t val)
{
	sys_call(SYS_WRMSR, msr, val);
}

uint64_t sys_rdmsr(uint32_t msr)
{
	return sys_call(SYS_RDMSR, msr, 0);
}

void sys_halt(void)
{
	for (;;)
		sys_call(SYS_HALT, 0, 0);
}

struct cpuid_regs cpuid(uint32_t leaf, uint32_t subleaf)
{
	struct cpuid_regs r;

	__asm__ volatile("call sys_gate"
			 : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx)
			 : "a"(SYS_CPUID), "D"(leaf), "S"(subleaf)
			 : "memory");
	return r;
}

void irq_enable(void)
{
	sys_call(SYS_IRQ_ENABLE, 0, 0);
}

void irq_disable(void)
{
	sys_call(SYS_IRQ_DISABLE, 0, 0);
}

uint64_t guest_xcr0(void)
{
	return xcr0_enabled;
}

bool cpu_has_x2apic(void)
{
	return (cpuid(1, 0).ecx >> CPUID1_ECX_X2APIC) & 1;
}

#define LVT_TIMER_PERIODIC (1u << 17)
#define LVT_MASKED         (1u << 16)
#define TDCR_DIVIDE_BY_1   0xb

void apic_timer_periodic(uint32_t count)
{
	sys_wrmsr(MSR_X2APIC_TDCR, TDCR_DIVIDE_BY_1);
	sys_wrmsr(MSR_X2APIC_LVTT, LVT_TIMER_PERIODIC | TIMER_VECTOR);
	sys_wrmsr(MSR_X2APIC_TMICT, count); /* writing the count starts the timer */
}

void apic_timer_stop(void)
{
	sys_wrmsr(MSR_X2APIC_LVTT, LVT_MASKED | TIMER_VECTOR);
	sys_wrmsr(MSR_X2APIC_TMICT, 0);
}
