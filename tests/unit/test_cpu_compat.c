/*
 * cpu_compat.c: may this host run a snapshot's vCPUs? The check is a pure function of
 * the snapshot and a host CPUID table, so most tests use small synthetic tables; the
 * last ones use this machine's real tables.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch/x86_64/x86.h"
#include "snapfmt.h"

#define SIG KVM_CPUID_FLAG_SIGNIFCANT_INDEX

struct leaf {
	uint32_t fn, idx, flags, eax, ebx, ecx, edx;
};

/* "GenuineIntel" as EBX, EDX, ECX. */
#define INTEL_EBX 0x756e6547u
#define INTEL_EDX 0x49656e69u
#define INTEL_ECX 0x6c65746eu

/* A plausible Intel host: SSE2/AVX2-level features, XCR0 x87|SSE|AVX. */
static const struct leaf base_host[] = {
	{ 0x0, 0, 0, 0xd, INTEL_EBX, INTEL_ECX, INTEL_EDX },
	{ 0x1, 0, 0, 0x000906ea, 0, 0x1c000000 | (1u << 26) | (1u << 0), 0x078bfbff },
	{ 0x7, 0, SIG, 1, (1u << 5) | (1u << 3), 0, 0 },
	{ 0x7, 1, SIG, 0, 0, 0, 0 },
	{ 0xd, 0, SIG, 0x7, 0x340, 0x340, 0 },
	{ 0xd, 1, SIG, 0x1, 0, 0, 0 },
	{ 0x80000000, 0, 0, 0x80000008, 0, 0, 0 },
	{ 0x80000001, 0, 0, 0, 0, 0x1, (1u << 29) | (1u << 11) | (1u << 20) },
};

static struct kvm_cpuid2 *table(const struct leaf *l, unsigned n)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));

	cr_assert_not_null(c);
	c->nent = n;
	for (unsigned i = 0; i < n; i++) {
		c->entries[i].function = l[i].fn;
		c->entries[i].index = l[i].idx;
		c->entries[i].flags = l[i].flags;
		c->entries[i].eax = l[i].eax;
		c->entries[i].ebx = l[i].ebx;
		c->entries[i].ecx = l[i].ecx;
		c->entries[i].edx = l[i].edx;
	}
	return c;
}

static struct {
	struct snap_state st;
	struct kvm_cpuid2 *host;
	struct leaf leaves[16];
	unsigned nleaves;
	struct errbuf eb;
} fx;

static void fx_init(void)
{
	struct snap_err se = { "" };

	memset(&fx, 0, sizeof(fx));
	memcpy(fx.leaves, base_host, sizeof(base_host));
	fx.nleaves = ARRAY_SIZE(base_host);
	cr_assert_eq(snap_state_init(&fx.st, &se), 0, "%s", se.msg);
	snprintf(fx.st.header.cpu.vendor, sizeof(fx.st.header.cpu.vendor), "GenuineIntel");
}

static void fx_fini(void)
{
	snap_state_free(&fx.st);
	free(fx.host);
}

static struct leaf *leaf_of(uint32_t fn, uint32_t idx)
{
	for (unsigned i = 0; i < fx.nleaves; i++)
		if (fx.leaves[i].fn == fn && fx.leaves[i].idx == idx)
			return &fx.leaves[i];
	cr_assert_fail("no leaf 0x%x.%u in the fixture", fn, idx);
	return NULL;
}

/* n snapshot vCPUs whose CPUID is the fixture table as it is now, XCR0 = xcr0. */
static void snapshot_vcpus(unsigned n, uint64_t xcr0)
{
	struct snap_err se = { "" };
	uint8_t xsave[4096] = { 0 };

	cr_assert_eq(snap_state_set_vcpus(&fx.st, n, &se), 0, "%s", se.msg);
	for (unsigned v = 0; v < n; v++) {
		struct snap_vcpu *sv = &fx.st.vcpus[v];

		sv->id = v;
		cr_assert_eq(snap_vcpu_set_cpuid(sv, fx.nleaves, &se), 0, "%s", se.msg);
		for (unsigned i = 0; i < fx.nleaves; i++) {
			sv->cpuid[i].function = fx.leaves[i].fn;
			sv->cpuid[i].index = fx.leaves[i].idx;
			sv->cpuid[i].flags = fx.leaves[i].flags;
			sv->cpuid[i].eax = fx.leaves[i].eax;
			sv->cpuid[i].ebx = fx.leaves[i].ebx;
			sv->cpuid[i].ecx = fx.leaves[i].ecx;
			sv->cpuid[i].edx = fx.leaves[i].edx;
		}
		sv->nr_xcrs = 1;
		sv->xcrs[0].xcr = 0;
		sv->xcrs[0].value = xcr0;
		cr_assert_eq(snap_vcpu_set_xsave(sv, xsave, sizeof(xsave), &se), 0, "%s", se.msg);
	}
}

static int check_against_base_host(void)
{
	free(fx.host);
	fx.host = table(base_host, ARRAY_SIZE(base_host));
	return x86_check_snapshot_cpu(&fx.st, fx.host, &fx.eb);
}

static void expect_message(const char *want)
{
	cr_assert(strstr(fx.eb.msg, want), "message \"%s\" lacks \"%s\"", fx.eb.msg, want);
}

TestSuite(cpu_compat, .init = fx_init, .fini = fx_fini);

Test(cpu_compat, accepts_a_snapshot_of_the_same_cpu)
{
	snapshot_vcpus(2, 0x7);
	cr_assert_eq(check_against_base_host(), 0, "%s", fx.eb.msg);
}

Test(cpu_compat, rejects_another_vendor_naming_both)
{
	snapshot_vcpus(1, 0x7);
	snprintf(fx.st.header.cpu.vendor, sizeof(fx.st.header.cpu.vendor), "AuthenticAMD");
	cr_assert_eq(check_against_base_host(), -ENOTSUP);
	expect_message("snapshot was taken on a AuthenticAMD CPU, this host is GenuineIntel");
}

Test(cpu_compat, unterminated_vendor_from_the_file_is_cut_not_overrun)
{
	snapshot_vcpus(1, 0x7);
	memset(fx.st.header.cpu.vendor, 'A', sizeof(fx.st.header.cpu.vendor));
	cr_assert_eq(check_against_base_host(), -ENOTSUP);
	expect_message("taken on a AAAAAAAAAAAAAAA CPU");
}

Test(cpu_compat, rejects_a_feature_the_host_lacks_naming_it_and_its_bit)
{
	leaf_of(7, 0)->ebx |= 1u << 16; /* avx512f */
	snapshot_vcpus(1, 0x7);
	cr_assert_eq(check_against_base_host(), -ENOTSUP);
	cr_assert_str_eq(fx.eb.msg, "snapshot needs CPU feature avx512f (CPUID.(EAX=7,ECX=0):EBX[16]), "
			 "which this host lacks (vCPU 0)");
}

Test(cpu_compat, rejects_a_feature_whose_leaf_the_host_lacks)
{
	struct leaf host[ARRAY_SIZE(base_host)];
	unsigned n = 0;

	snapshot_vcpus(1, 0x7);
	for (unsigned i = 0; i < ARRAY_SIZE(base_host); i++)
		if (base_host[i].fn != 0x80000001)
			host[n++] = base_host[i];
	fx.host = table(host, n);
	cr_assert_eq(x86_check_snapshot_cpu(&fx.st, fx.host, &fx.eb), -ENOTSUP);
	/* lahf_lm (ECX bit 0) is the first of the leaf's features in the table */
	expect_message("lahf_lm (CPUID.(EAX=0x80000001,ECX=0):ECX[0])");
}

Test(cpu_compat, checks_extended_leaf_features)
{
	leaf_of(0x80000001, 0)->edx |= 1u << 27; /* rdtscp */
	snapshot_vcpus(1, 0x7);
	cr_assert_eq(check_against_base_host(), -ENOTSUP);
	expect_message("rdtscp (CPUID.(EAX=0x80000001,ECX=0):EDX[27])");
}

Test(cpu_compat, checks_the_right_subleaf)
{
	leaf_of(7, 1)->eax |= 1u << 4; /* avx_vnni */
	snapshot_vcpus(1, 0x7);
	cr_assert_eq(check_against_base_host(), -ENOTSUP);
	expect_message("avx_vnni (CPUID.(EAX=7,ECX=1):EAX[4])");
}

Test(cpu_compat, checks_xsave_feature_subleaf)
{
	leaf_of(0xd, 1)->eax |= 1u << 3; /* xsaves */
	snapshot_vcpus(1, 0x7);
	cr_assert_eq(check_against_base_host(), -ENOTSUP);
	expect_message("xsaves (CPUID.(EAX=0xd,ECX=1):EAX[3])");
}

Test(cpu_compat, host_entry_without_significant_index_answers_every_subleaf)
{
	static const struct leaf host[] = {
		{ 0x0, 0, 0, 0xd, INTEL_EBX, INTEL_ECX, INTEL_EDX },
		{ 0x7, 0, 0, 1u << 4, 0, 0, 0 }, /* no SIG flag: answers 7.1 too */
	};

	leaf_of(7, 1)->eax |= 1u << 4;
	leaf_of(7, 0)->ebx = 0;
	leaf_of(1, 0)->ecx = leaf_of(1, 0)->edx = 0;
	leaf_of(0x80000001, 0)->ecx = leaf_of(0x80000001, 0)->edx = 0;
	leaf_of(0xd, 1)->eax = 0;
	snapshot_vcpus(1, 0x1);
	fx.host = table(host, ARRAY_SIZE(host));
	cr_assert_eq(x86_check_snapshot_cpu(&fx.st, fx.host, &fx.eb), 0, "%s", fx.eb.msg);
}

Test(cpu_compat, ignores_bits_kvm_emulates_synthesises_or_the_guest_os_controls)
{
	/* hypervisor, x2apic, tsc_deadline_timer, osxsave; ospke; apic */
	leaf_of(1, 0)->ecx |= (1u << 31) | (1u << 21) | (1u << 24) | (1u << 27);
	leaf_of(7, 0)->ecx |= 1u << 4;
	leaf_of(1, 0)->edx |= 1u << 9;
	snapshot_vcpus(1, 0x7);
	cr_assert_eq(check_against_base_host(), 0, "%s", fx.eb.msg);
}

Test(cpu_compat, checks_every_vcpu)
{
	snapshot_vcpus(2, 0x7);
	fx.st.vcpus[1].cpuid[2].ebx |= 1u << 30; /* leaf 7.0: avx512bw on vCPU 1 only */
	cr_assert_eq(fx.st.vcpus[1].cpuid[2].function, 7);
	cr_assert_eq(check_against_base_host(), -ENOTSUP);
	expect_message("avx512bw");
	expect_message("(vCPU 1)");
}

Test(cpu_compat, rejects_xcr0_components_the_host_does_not_support)
{
	snapshot_vcpus(1, 0xe7);
	cr_assert_eq(check_against_base_host(), -ENOTSUP);
	expect_message("snapshot vCPU 0 has XCR0 0xe7: state components 0xe0 are not supported");
	expect_message("supported XCR0 bits 0x7");
}

Test(cpu_compat, accepts_xcr0_within_the_host_set)
{
	snapshot_vcpus(1, 0x3);
	cr_assert_eq(check_against_base_host(), 0, "%s", fx.eb.msg);
}

Test(cpu_compat, ignores_other_xcrs)
{
	snapshot_vcpus(1, 0x7);
	fx.st.vcpus[0].xcrs[0].xcr = 1; /* not XCR0 */
	fx.st.vcpus[0].xcrs[0].value = ~0ull;
	cr_assert_eq(check_against_base_host(), 0, "%s", fx.eb.msg);
}

static void set_xsave_len(uint32_t len, uint32_t nonzero_at)
{
	struct snap_err se = { "" };
	uint8_t *x = calloc(1, len);

	cr_assert_not_null(x);
	if (nonzero_at < len)
		x[nonzero_at] = 0x5a;
	cr_assert_eq(snap_vcpu_set_xsave(&fx.st.vcpus[0], x, len, &se), 0, "%s", se.msg);
	free(x);
}

Test(cpu_compat, rejects_xsave_state_past_what_the_host_kvm_takes)
{
	snapshot_vcpus(1, 0x7);
	set_xsave_len(8192, 5000); /* the host needs 0x340 bytes: KVM takes 4096 */
	cr_assert_eq(check_against_base_host(), -ENOTSUP);
	expect_message("snapshot vCPU 0 has a 8192-byte XSAVE area with state past byte 4096");
}

Test(cpu_compat, accepts_a_longer_xsave_area_with_a_zero_tail)
{
	snapshot_vcpus(1, 0x7);
	set_xsave_len(8192, 4095);
	cr_assert_eq(check_against_base_host(), 0, "%s", fx.eb.msg);
}

Test(cpu_compat, rejects_a_host_table_without_vendor_leaf)
{
	static const struct leaf host[] = { { 0x1, 0, 0, 0, 0, 0, 0 } };

	snapshot_vcpus(1, 0x7);
	fx.host = table(host, 1);
	cr_assert_eq(x86_check_snapshot_cpu(&fx.st, fx.host, &fx.eb), -EINVAL);
	expect_message("no leaf 0");
	cr_assert_eq(x86_check_snapshot_cpu(&fx.st, NULL, &fx.eb), -EINVAL);
}

Test(cpu_compat, xsave_fits_when_not_longer_or_the_excess_is_zero)
{
	uint8_t x[64] = { 0 };

	cr_assert(x86_xsave_fits(x, 32, 32));
	cr_assert(x86_xsave_fits(x, 16, 32));
	cr_assert(x86_xsave_fits(x, 64, 32));
	x[31] = 1;
	cr_assert(x86_xsave_fits(x, 64, 32), "byte 31 is inside");
	x[32] = 1;
	cr_assert(!x86_xsave_fits(x, 64, 32));
	x[32] = 0;
	x[63] = 1;
	cr_assert(!x86_xsave_fits(x, 64, 32), "the last byte counts");
}

/* ---- this machine ------------------------------------------------------------------ */

static long proc_cpuinfo_field(const char *name)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512];
	size_t n = strlen(name);
	long v = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, name, n) && (line[n] == ' ' || line[n] == '\t')) {
			char *colon = strchr(line, ':');

			v = colon ? strtol(colon + 1, NULL, 10) : -1;
			break;
		}
	}
	fclose(f);
	return v;
}

Test(cpu_compat, host_cpu_info_matches_proc_cpuinfo)
{
	struct snap_cpu_info ci;
	long fam = proc_cpuinfo_field("cpu family"), model = proc_cpuinfo_field("model");

	x86_host_cpu_info(&ci);
	cr_assert(!strcmp(ci.vendor, "GenuineIntel") || !strcmp(ci.vendor, "AuthenticAMD") ||
		  !strcmp(ci.vendor, "HygonGenuine"), "vendor \"%s\"", ci.vendor);
	cr_assert_eq(ci.vendor[12], 0);
	if (fam < 0 || model < 0)
		cr_skip_test("no /proc/cpuinfo");
	cr_assert_eq(ci.family, (uint32_t)fam);
	cr_assert_eq(ci.model, (uint32_t)model);
}

static struct kvm_cpuid2 *real_supported(void)
{
	struct errbuf eb = { "" };
	struct kvm_cpuid2 *c;
	int fd;

	fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		cr_skip_test("no /dev/kvm");
	cr_assert_eq(cpuid_get_supported(fd, &c, &eb), 0, "%s", eb.msg);
	close(fd);
	return c;
}

/* The tables ember gives its vCPUs, as a snapshot of this host would hold them. */
static void snapshot_normalized(const struct kvm_cpuid2 *supported, unsigned n)
{
	struct snap_err se = { "" };
	struct errbuf eb = { "" };
	uint8_t xsave[4096] = { 0 };

	x86_host_cpu_info(&fx.st.header.cpu);
	cr_assert_eq(snap_state_set_vcpus(&fx.st, n, &se), 0, "%s", se.msg);
	for (unsigned v = 0; v < n; v++) {
		struct snap_vcpu *sv = &fx.st.vcpus[v];
		struct kvm_cpuid2 *c;

		cr_assert_eq(cpuid_normalize(supported, v, n, &c, &eb), 0, "%s", eb.msg);
		sv->id = v;
		cr_assert_eq(snap_vcpu_set_cpuid(sv, c->nent, &se), 0, "%s", se.msg);
		for (unsigned i = 0; i < c->nent; i++) {
			sv->cpuid[i].function = c->entries[i].function;
			sv->cpuid[i].index = c->entries[i].index;
			sv->cpuid[i].flags = c->entries[i].flags;
			sv->cpuid[i].eax = c->entries[i].eax;
			sv->cpuid[i].ebx = c->entries[i].ebx;
			sv->cpuid[i].ecx = c->entries[i].ecx;
			sv->cpuid[i].edx = c->entries[i].edx;
		}
		free(c);
		sv->nr_xcrs = 1;
		sv->xcrs[0].value = 1;
		cr_assert_eq(snap_vcpu_set_xsave(sv, xsave, sizeof(xsave), &se), 0, "%s", se.msg);
	}
}

Test(cpu_compat, real_supported_table_accepts_its_own_normalized_vcpus)
{
	fx.host = real_supported();
	snapshot_normalized(fx.host, 2);
	cr_assert_eq(x86_check_snapshot_cpu(&fx.st, fx.host, &fx.eb), 0, "%s", fx.eb.msg);
}

Test(cpu_compat, real_table_rejects_a_feature_added_beyond_it)
{
	fx.host = real_supported();
	snapshot_normalized(fx.host, 1);
	for (uint32_t i = 0; i < fx.st.vcpus[0].nr_cpuid; i++)
		if (fx.st.vcpus[0].cpuid[i].function == 0x80000001)
			fx.st.vcpus[0].cpuid[i].ecx |= 1u << 16; /* fma4: AMD-only, long gone */
	cr_assert_eq(x86_check_snapshot_cpu(&fx.st, fx.host, &fx.eb), -ENOTSUP);
	expect_message("fma4");
}

/* What KVM really gives a vCPU is at least the supported table (more on this platform). */
Test(cpu_compat, host_cpuid_of_a_vm_accepts_the_normalized_supported_tables)
{
	struct vm_config cfg;
	struct errbuf eb = { "" };
	struct vm *vm;

	if (access("/dev/kvm", R_OK | W_OK) != 0)
		cr_skip_test("no /dev/kvm");
	memset(&cfg, 0, sizeof(cfg));
	cfg.mem_bytes = 2 * MiB;
	cfg.nr_vcpus = 2;
	cfg.console = CONSOLE_NONE;
	cr_assert_eq(vm_create(&vm, &cfg, &eb), 0, "%s", eb.msg);
	cr_assert_eq(x86_host_cpuid(vm, &fx.host, &eb), 0, "%s", eb.msg);
	snapshot_normalized(vm->supported_cpuid, 2);
	vm_destroy(vm);
	cr_assert_eq(x86_check_snapshot_cpu(&fx.st, fx.host, &fx.eb), 0, "%s", fx.eb.msg);
}

/* ---- what the check compares against: KVM's table, and a software KVM's allowance ---- */

/* Every feature bit a snapshot's CPUID has is compared, named or not. */
Test(cpu_compat, rejects_a_feature_bit_outside_the_named_list)
{
	leaf_of(7, 0)->ebx |= 1u << 22; /* reserved today: no name */
	snapshot_vcpus(1, 0x7);
	cr_assert_eq(check_against_base_host(), -ENOTSUP);
	cr_assert_str_eq(fx.eb.msg, "snapshot needs CPU feature bit CPUID.(EAX=7,ECX=0):EBX[22], "
			 "which this host lacks (vCPU 0)");
}

Test(cpu_compat, compares_the_amd_feature_leaves_too)
{
	fx.leaves[fx.nleaves++] = (struct leaf){ 0x80000008, 0, 0, 0x3030, 1u << 0, 0, 0 };
	snapshot_vcpus(1, 0x7); /* clzero, 0x80000008 EBX[0]: the host's table lacks the leaf */
	cr_assert_eq(check_against_base_host(), -ENOTSUP);
	expect_message("CPUID.(EAX=0x80000008,ECX=0):EBX[0]");
}

/* A CPU's own CPUID as a table of leaves (fake_native_table), for x86_cpu_reference. */
static const struct leaf *fake_native_table;
static unsigned fake_native_n;

static void fake_native(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	r[0] = r[1] = r[2] = r[3] = 0;
	for (unsigned i = 0; i < fake_native_n; i++) {
		const struct leaf *l = &fake_native_table[i];

		if (l->fn == leaf && (l->idx == sub || !(l->flags & SIG))) {
			r[0] = l->eax;
			r[1] = l->ebx;
			r[2] = l->ecx;
			r[3] = l->edx;
			return;
		}
	}
}

/* base_host as the CPU runs it, with AVX-512F, which the KVM tables below omit. */
static void native_with_avx512f(struct leaf *native)
{
	memcpy(native, base_host, sizeof(base_host));
	for (unsigned i = 0; i < ARRAY_SIZE(base_host); i++)
		if (native[i].fn == 7 && native[i].idx == 0)
			native[i].ebx |= 1u << 16;
	fake_native_table = native;
	fake_native_n = ARRAY_SIZE(base_host);
}

/* Hardware KVM (its table has SSE3): what KVM does not offer is missing, whatever the
 * CPU itself has. */
Test(cpu_compat, on_hardware_kvm_the_reference_is_kvms_table_alone)
{
	struct leaf native[ARRAY_SIZE(base_host)];
	struct kvm_cpuid2 *supported = table(base_host, ARRAY_SIZE(base_host));
	bool software = true;

	native_with_avx512f(native);
	cr_assert(!x86_kvm_underreports(supported, fake_native));
	cr_assert_eq(x86_cpu_reference(supported, fake_native, &fx.host, &software, &fx.eb), 0,
		     "%s", fx.eb.msg);
	cr_assert(!software);
	free(supported);
	leaf_of(7, 0)->ebx |= 1u << 16;
	snapshot_vcpus(1, 0x7);
	cr_assert_eq(x86_check_snapshot_cpu(&fx.st, fx.host, &fx.eb), -ENOTSUP,
		     "a feature KVM does not expose passed because the CPU has it");
	expect_message("avx512f");
}

/* A software KVM whose table lacks SSE3 while the CPU has it (this platform's kvm_pvm):
 * its vCPUs run the CPU's features natively, so they count. */
Test(cpu_compat, on_a_software_kvm_that_underreports_the_cpus_features_count)
{
	struct leaf native[ARRAY_SIZE(base_host)], kvm[ARRAY_SIZE(base_host)];
	struct kvm_cpuid2 *supported;
	bool software = false;

	native_with_avx512f(native);
	memcpy(kvm, base_host, sizeof(base_host));
	kvm[1].ecx &= ~1u; /* leaf 1 ECX: no SSE3 */
	supported = table(kvm, ARRAY_SIZE(kvm));
	cr_assert(x86_kvm_underreports(supported, fake_native));
	cr_assert_eq(x86_cpu_reference(supported, fake_native, &fx.host, &software, &fx.eb), 0,
		     "%s", fx.eb.msg);
	cr_assert(software);
	free(supported);
	leaf_of(7, 0)->ebx |= 1u << 16;
	snapshot_vcpus(1, 0x7);
	cr_assert_eq(x86_check_snapshot_cpu(&fx.st, fx.host, &fx.eb), 0, "%s", fx.eb.msg);
}

/* This machine: kvm_pvm under-reports (PLATFORM.md); a hardware KVM must not look so. */
Test(cpu_compat, this_kvm_is_recognised_for_what_it_is)
{
	struct kvm_cpuid2 *supported = real_supported();
	bool pvm = access("/sys/module/kvm_pvm", F_OK) == 0;

	cr_assert_eq(x86_kvm_underreports(supported, x86_native_cpuid), pvm,
		     "kvm_pvm %s, but the table %s SSE3", pvm ? "loaded" : "not loaded",
		     pvm ? "has" : "lacks");
	free(supported);
}

/* ---- nested virtualization in use: no host can restore it -------------------------- */

#define CR4_VMXE  (1ull << 13)
#define EFER_SVME (1ull << 12)

Test(cpu_compat, refuses_a_vcpu_in_vmx_operation)
{
	snapshot_vcpus(2, 0x7);
	fx.st.vcpus[1].sregs.cr4 |= CR4_VMXE;
	cr_assert_eq(x86_check_snapshot_nested(&fx.st, &fx.eb), -ENOTSUP);
	expect_message("snapshot vCPU 1 uses nested virtualization (CR4.VMXE)");
}

Test(cpu_compat, refuses_a_vcpu_with_svm_enabled)
{
	snapshot_vcpus(1, 0x7);
	fx.st.vcpus[0].sregs.efer |= EFER_SVME;
	cr_assert_eq(x86_check_snapshot_nested(&fx.st, &fx.eb), -ENOTSUP);
	expect_message("snapshot vCPU 0 uses nested virtualization (EFER.SVME)");
}

/* Offered by an older ember but never turned on: nothing was lost, the guest keeps the
 * CPUID it booted with. */
Test(cpu_compat, accepts_vmx_in_cpuid_while_unused)
{
	leaf_of(1, 0)->ecx |= 1u << 5;
	snapshot_vcpus(1, 0x7);
	cr_assert_eq(x86_check_snapshot_nested(&fx.st, &fx.eb), 0, "%s", fx.eb.msg);
}
