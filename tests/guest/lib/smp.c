/*
 * AP bring-up. The boot CPU sends INIT + SIPI through the x2APIC ICR (a wrmsr via
 * sys_gate); each AP runs trampoline.S -> cpu_setup -> lib_ap_start()
 * in ring 3, calls the guest's function, then parks in hlt so an idle AP costs the
 * host nothing.
 */
#include "internal.h"
#include "layout.h"

#define ICR_INIT          0x00000500u
#define ICR_STARTUP       0x00000600u
#define ICR_LEVEL_ASSERT  0x00004000u

static void (*volatile ap_fn)(unsigned cpu);
static volatile uint32_t aps_online;

void lib_ap_start(void)
{
	void (*fn)(unsigned) = ap_fn;

	__atomic_fetch_add(&aps_online, 1, __ATOMIC_SEQ_CST);
	if (fn)
		fn(guest_cpu_id());
	sys_halt();
}

static void send_ipi(uint32_t apic_id, uint32_t icr_low)
{
	/* x2APIC ICR: destination in bits 63:32, one wrmsr sends it */
	sys_wrmsr(MSR_X2APIC_ICR, ((uint64_t)apic_id << 32) | icr_low);
}

int smp_start_aps(unsigned ncpus, void (*fn)(unsigned cpu))
{
	if (ncpus < 1 || ncpus > GUEST_MAX_CPUS)
		return -EINVAL;
	if (!cpu_has_x2apic())
		return -ENODEV;
	ap_fn = fn;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	for (unsigned id = 1; id < ncpus; id++)
		send_ipi(id, ICR_INIT | ICR_LEVEL_ASSERT);
	/* KVM latches INIT then SIPI; the second SIPI (as the MP spec asks) is
	 * ignored by an AP that already started */
	for (unsigned round = 0; round < 2; round++)
		for (unsigned id = 1; id < ncpus; id++)
			send_ipi(id, ICR_STARTUP | ICR_LEVEL_ASSERT | AP_SIPI_VECTOR);
	return 0;
}

unsigned smp_aps_online(void)
{
	return __atomic_load_n(&aps_online, __ATOMIC_SEQ_CST);
}

int smp_wait_aps(unsigned n, uint64_t timeout_cycles)
{
	uint64_t start = rdtsc();

	while (smp_aps_online() < n) {
		if (rdtsc() - start > timeout_cycles)
			return -ETIMEDOUT;
		cpu_relax();
	}
	return 0;
}
