/*
 * smp: brings up `cpus=` CPUs (default 2, at most 8) with INIT + SIPI. Every AP
 * records, from ring 3, its x2APIC id (as its CPUID table reports it) and bumps a shared
 * counter many times with atomics; the boot CPU waits (bounded by the TSC), checks
 * the ids are distinct and the counter exact, prints
 *   smp: N cpus ran: apic ids 0 1 ...
 * and finishes with GUEST_DONE.
 */
#include "guest.h"

#define DEFAULT_CPUS 2
#define INCREMENTS_PER_CPU 100000
/* ~1.5 ms per AP to reach long mode here; allow seconds on any TSC rate. */
#define AP_TIMEOUT_CYCLES (5ull * 1000 * 1000 * 1000)

struct cpu_slot {
	volatile uint32_t ran;
	volatile uint32_t apic_id;
	volatile uint64_t increments;
} __attribute__((aligned(64)));

static struct cpu_slot slots[GUEST_MAX_CPUS];
static volatile uint64_t shared_counter;

/* CPUID leaf 0xB EDX: the x2APIC id ember put in this vCPU's CPUID table (cpuid()
 * runs it in ring 0; ring-3 CPUID would report the host CPU here). */
static uint32_t cpuid_x2apic_id(void)
{
	return cpuid(0xb, 0).edx;
}

static void ap_work(unsigned cpu)
{
	struct cpu_slot *s = &slots[cpu];

	for (unsigned i = 0; i < INCREMENTS_PER_CPU; i++)
		__atomic_fetch_add(&shared_counter, 1, __ATOMIC_RELAXED);
	s->increments = INCREMENTS_PER_CPU;
	s->apic_id = cpuid_x2apic_id();
	GUEST_ASSERT_EQ(s->apic_id, guest_apic_id()); /* what the stub read in ring 0 */
	__atomic_store_n(&s->ran, 1, __ATOMIC_RELEASE);
}

static unsigned aps_finished(unsigned ncpus)
{
	unsigned n = 0;

	for (unsigned c = 1; c < ncpus; c++)
		n += __atomic_load_n(&slots[c].ran, __ATOMIC_ACQUIRE);
	return n;
}

void guest_main(void)
{
	uint64_t ncpus = DEFAULT_CPUS, start;
	char line[160];
	size_t len;
	int ret = cmdline_get_u64("cpus", &ncpus);

	GUEST_ASSERT_MSG(ret == 0 || ret == -ENOENT, "cpus= is not a number");
	GUEST_ASSERT_MSG(ncpus >= 1 && ncpus <= GUEST_MAX_CPUS, "cpus=%lu: expected 1..%d",
			 ncpus, GUEST_MAX_CPUS);
	GUEST_ASSERT_MSG(cpu_has_x2apic(), "smp needs an x2APIC (CPUID.1:ECX bit 21)");
	GUEST_ASSERT_EQ(guest_cpu_id(), 0);

	slots[0].apic_id = cpuid_x2apic_id();
	slots[0].ran = 1;
	GUEST_ASSERT_EQ(slots[0].apic_id, guest_apic_id());

	start = rdtsc();
	ret = smp_start_aps((unsigned)ncpus, ap_work);
	GUEST_ASSERT_MSG(ret == 0, "smp_start_aps(%lu) failed: %d", ncpus, ret);
	while (aps_finished((unsigned)ncpus) < ncpus - 1) {
		GUEST_ASSERT_MSG(rdtsc() - start < AP_TIMEOUT_CYCLES,
				 "timeout: of %lu APs, %u reached ring 3 and %u finished (does ember "
				 "have --vcpus %lu?)", ncpus - 1, smp_aps_online(),
				 aps_finished((unsigned)ncpus), ncpus);
		cpu_relax();
	}

	GUEST_ASSERT_EQ(shared_counter, (ncpus - 1) * INCREMENTS_PER_CPU);
	len = (size_t)fmt_snprintf(line, sizeof(line), "smp: %lu cpus ran: apic ids", ncpus);
	/* in id order, whatever order the APs arrived in; ids must be distinct */
	for (uint32_t id = 0, found = 0; found < ncpus && len < sizeof(line); id++) {
		unsigned hits = 0;

		GUEST_ASSERT_MSG(id < 4096, "APIC ids are not distinct or too sparse");
		for (unsigned c = 0; c < ncpus; c++)
			hits += slots[c].apic_id == id;
		GUEST_ASSERT_MSG(hits <= 1, "two CPUs report x2APIC id %u", id);
		if (hits) {
			len += (size_t)fmt_snprintf(line + len, sizeof(line) - len, " %u", id);
			found++;
		}
	}
	serial_printf("%s\nsmp: bring-up took %lu TSC cycles\n", line, rdtsc() - start);
	GUEST_DONE();
}
