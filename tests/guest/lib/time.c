/*
 * Time from the TSC. The frequency comes from ember's CPUID table when it has one
 * (cpuid(), through the ring-0 gate: ring-3 cpuid returns the host's values here),
 * else from a ~10 ms calibration against the x2APIC timer, which KVM counts at 1 GHz
 * whatever the host. Found once, before the golden snapshot in practice, so restored
 * clones do not pay for it; ember keeps the guest TSC rate across a restore.
 */
#include "internal.h"
#include "layout.h"

#define MSR_X2APIC_TMCCT   0x839
#define LVT_MASKED         (1u << 16)
#define TDCR_DIVIDE_BY_1   0xb
#define APIC_TIMER_KHZ     1000000ull  /* KVM's APIC bus: 1 ns per count */
#define CALIBRATE_CYCLES   20000000ull /* ~8 ms at 2.4 GHz; 20 ms even at 1 GHz */
#define GUESS_KHZ          2000000ull

static uint64_t khz;
static const char *khz_source = "none";

/* TSC and APIC count at one instant: the TSC read halfway through the gate call. */
static void sample(uint64_t *tsc, uint64_t *count)
{
	uint64_t a = rdtsc();

	*count = sys_rdmsr(MSR_X2APIC_TMCCT);
	*tsc = a + (rdtsc() - a) / 2;
}

static uint64_t calibrate_apic(void)
{
	uint64_t t0, c0, t1, c1;

	if (!cpu_has_x2apic())
		return 0;
	/* one-shot and masked: it counts down but never interrupts */
	sys_wrmsr(MSR_X2APIC_LVTT, LVT_MASKED | TIMER_VECTOR);
	sys_wrmsr(MSR_X2APIC_TDCR, TDCR_DIVIDE_BY_1);
	sys_wrmsr(MSR_X2APIC_TMICT, 0xffffffffu);
	sample(&t0, &c0);
	while (rdtsc() - t0 < CALIBRATE_CYCLES)
		cpu_relax();
	sample(&t1, &c1);
	sys_wrmsr(MSR_X2APIC_TMICT, 0);
	if (c1 >= c0 || t1 <= t0)
		return 0;
	return (t1 - t0) * APIC_TIMER_KHZ / (c0 - c1);
}

static uint64_t find_khz(void)
{
	uint32_t max = cpuid(0, 0).eax;
	struct cpuid_regs r;
	uint64_t k;

	if (max >= 0x15) {
		r = cpuid(0x15, 0); /* TSC = crystal (ecx Hz) * ebx / eax */
		if (r.eax && r.ebx && r.ecx) {
			khz_source = "cpuid-15";
			return (uint64_t)r.ecx * r.ebx / r.eax / 1000;
		}
	}
	if (cpuid(0x40000000, 0).eax >= 0x40000010) {
		r = cpuid(0x40000010, 0); /* KVM/VMware timing leaf: eax = TSC kHz */
		if (r.eax) {
			khz_source = "kvm";
			return r.eax;
		}
	}
	if (max >= 0x16) {
		r = cpuid(0x16, 0); /* base MHz: the TSC rate on the parts that have it */
		if (r.eax & 0xffff) {
			khz_source = "cpuid-16";
			return (uint64_t)(r.eax & 0xffff) * 1000;
		}
	}
	k = calibrate_apic();
	if (k) {
		khz_source = "apic";
		return k;
	}
	khz_source = "guess";
	return GUESS_KHZ;
}

uint64_t tsc_khz(void)
{
	if (!khz)
		khz = find_khz();
	return khz;
}

const char *tsc_khz_source(void)
{
	tsc_khz();
	return khz_source;
}

uint64_t time_us(void)
{
	uint64_t t = rdtsc(), k = tsc_khz();

	/* t * 1000 / k without a 128-bit division (no libgcc here) */
	return t / k * 1000 + t % k * 1000 / k;
}
