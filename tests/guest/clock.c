/*
 * clock: what a guest's clocks do across a snapshot. Registers a kvmclock page, checks
 * kvmclock and the TSC run forward, reads both, signals ready (the golden snapshot's
 * point), reads both again at once and prints
 *   clock: kvmclock_delta_us=<us> tsc_delta=<cycles> stopped=<0|1> stable=<0|1> generation=<hex>
 * (stopped: KVM set PVCLOCK_GUEST_STOPPED in the page, i.e. the VMM told the guest it
 * was stopped), then reads both for check_ms ms of kvmclock time, asserting neither goes
 * back and counting the times it finds PVCLOCK_GUEST_STOPPED set (clearing it, as Linux
 * does), prints "clock: monotonic reads=<n> stops=<n>" and finishes. A restored clone
 * prints the gap between its snapshot and its own resumption; a booted VM that does not
 * stop at ready prints a gap of one port exit; a VM paused meanwhile (ember ctl pause)
 * counts a stop.
 */
#include "guest.h"

static void check_monotonic(uint64_t ms, const char *when, uint64_t *reads, uint64_t *stops)
{
	uint64_t k0 = kvmclock_ns(), k = k0, t = rdtsc(), n = 0;

	while (k - k0 < ms * 1000000) {
		uint64_t k1 = kvmclock_ns(), t1 = rdtsc();

		GUEST_ASSERT_MSG(k1 >= k, "%s: kvmclock went back from %lu to %lu ns", when, k, k1);
		GUEST_ASSERT_MSG(t1 >= t, "%s: TSC went back from 0x%lx to 0x%lx", when, t, t1);
		if (kvmclock_flags() & KVMCLOCK_GUEST_STOPPED) {
			kvmclock_clear_stopped();
			(*stops)++;
		}
		k = k1;
		t = t1;
		n++;
	}
	*reads += n;
}

void guest_main(void)
{
	uint64_t check_ms = cmdline_u64_or("check_ms", 200), reads = 0, stops = 0;
	uint64_t k0, k1, t0, t1;
	uint8_t flags;

	GUEST_ASSERT_MSG(kvmclock_enable(), "clock needs kvmclock (KVM's CPUID leaves)");
	check_monotonic(10, "before ready", &reads, &stops);
	kvmclock_clear_stopped();
	t0 = rdtsc();
	k0 = kvmclock_ns();
	guest_ready();
	k1 = kvmclock_ns();
	t1 = rdtsc();
	flags = kvmclock_flags();
	kvmclock_clear_stopped();
	GUEST_ASSERT_MSG(k1 >= k0, "kvmclock went back across ready: %lu -> %lu ns", k0, k1);
	GUEST_ASSERT_MSG(t1 >= t0, "TSC went back across ready: 0x%lx -> 0x%lx", t0, t1);
	guest_print("clock: kvmclock_delta_us=%lu tsc_delta=%lu stopped=%u stable=%u "
		    "generation=%lx\n", (k1 - k0) / 1000, t1 - t0,
		    (flags & KVMCLOCK_GUEST_STOPPED) ? 1 : 0, (flags & KVMCLOCK_TSC_STABLE) ? 1 : 0,
		    guest_generation());
	stops = 0;
	check_monotonic(check_ms, "after ready", &reads, &stops);
	guest_print("clock: monotonic reads=%lu stops=%lu\n", reads, stops);
}
