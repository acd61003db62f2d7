/*
 * CPUID normalisation on synthetic supported tables: one shaped like an Intel host's
 * (leaf 4, 0xB and 0x1F with host values) and one copied from the AMD host with
 * topoext these tests were written on (0xB reduced to subleaf 0, 0x8000001E zeroed).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch/x86_64/x86.h"

#define SIG KVM_CPUID_FLAG_SIGNIFCANT_INDEX

static const struct kvm_cpuid_entry2 intel_host[] = {
	/* "GenuineIntel", max basic leaf 0x1f */
	{ .function = 0x0, .eax = 0x1f, .ebx = 0x756e6547, .ecx = 0x6c65746e, .edx = 0x49656e69 },
	/* host APIC id 7, 16 logical, PDCM set, no x2APIC/hypervisor bit, HTT set */
	{ .function = 0x1, .eax = 0x906ea, .ebx = 0x07100800, .ecx = 0x0000a201, .edx = 0xbfebfbff },
	{ .function = 0x4, .index = 0, .flags = SIG, .eax = 0x1c004121, .ebx = 0x01c0003f, .ecx = 0x3f },
	{ .function = 0x4, .index = 1, .flags = SIG, .eax = 0x1c004122, .ebx = 0x01c0003f, .ecx = 0x3f },
	{ .function = 0x4, .index = 2, .flags = SIG, .eax = 0x1c004143, .ebx = 0x00c0003f, .ecx = 0x3ff },
	{ .function = 0x4, .index = 3, .flags = SIG, .eax = 0x1c03c163, .ebx = 0x03c0003f, .ecx = 0x3fff },
	{ .function = 0x4, .index = 4, .flags = SIG },
	{ .function = 0xa, .eax = 0x07300404, .edx = 0x603 },
	{ .function = 0xb, .index = 0, .flags = SIG, .eax = 1, .ebx = 2, .ecx = 0x100, .edx = 7 },
	{ .function = 0xb, .index = 1, .flags = SIG, .eax = 4, .ebx = 16, .ecx = 0x201, .edx = 7 },
	{ .function = 0x1f, .index = 0, .flags = SIG, .eax = 1, .ebx = 2, .ecx = 0x100, .edx = 7 },
	{ .function = 0x1f, .index = 1, .flags = SIG, .eax = 4, .ebx = 16, .ecx = 0x201, .edx = 7 },
	{ .function = 0x40000000, .eax = 0x40000001, .ebx = 0x4b4d564b, .ecx = 0x564b4d56, .edx = 0x4d },
	{ .function = 0x40000001, .eax = 0x01007efb },
	{ .function = 0x80000000, .eax = 0x80000008 },
	{ .function = 0x80000001, .ecx = 0x121, .edx = 0x2c100800 },
	{ .function = 0x80000008, .eax = 0x3027 },
};

static const struct kvm_cpuid_entry2 amd_host[] = {
	{ .function = 0x0, .eax = 0x1c, .ebx = 0x68747541, .ecx = 0x444d4163, .edx = 0x69746e65 },
	{ .function = 0x1, .eax = 0x00b00f21, .ebx = 0x01020800, .ecx = 0x81202000, .edx = 0x078bfbff },
	{ .function = 0x4, .index = 0, .flags = SIG },
	{ .function = 0xa },
	{ .function = 0xb, .index = 0, .flags = SIG, .edx = 1 },
	{ .function = 0x40000000, .eax = 0x40000001, .ebx = 0x4b4d564b, .ecx = 0x564b4d56, .edx = 0x4d },
	{ .function = 0x40000001, .eax = 0x01007efb },
	{ .function = 0x80000000, .eax = 0x80000021, .ebx = 0x68747541, .ecx = 0x444d4163, .edx = 0x69746e65 },
	{ .function = 0x80000001, .eax = 0x00b00f21, .ebx = 0x40000000, .ecx = 0x00400393, .edx = 0x23d3fbff },
	{ .function = 0x80000008, .eax = 0x3030, .ebx = 0x50020005, .ecx = 0x00007001 },
	{ .function = 0x8000001d, .index = 0, .flags = SIG, .eax = 0x121, .ebx = 0x02c0003f, .ecx = 0x3f },
	{ .function = 0x8000001d, .index = 1, .flags = SIG, .eax = 0x122, .ebx = 0x01c0003f, .ecx = 0x3f },
	{ .function = 0x8000001d, .index = 2, .flags = SIG, .eax = 0x143, .ebx = 0x03c0003f, .ecx = 0x3ff, .edx = 2 },
	{ .function = 0x8000001d, .index = 3, .flags = SIG, .eax = 0x4163, .ebx = 0x03c0003f, .ecx = 0x7fff, .edx = 1 },
	{ .function = 0x8000001d, .index = 4, .flags = SIG },
	{ .function = 0x8000001e },
	{ .function = 0x80000021, .eax = 0x204, .ecx = 6 },
};

static struct kvm_cpuid2 *table(const struct kvm_cpuid_entry2 *e, unsigned n)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));

	cr_assert_not_null(c);
	c->nent = n;
	memcpy(c->entries, e, n * sizeof(e[0]));
	return c;
}

#define INTEL() table(intel_host, ARRAY_SIZE(intel_host))
#define AMD() table(amd_host, ARRAY_SIZE(amd_host))

static struct kvm_cpuid2 *norm(struct kvm_cpuid2 *sup, unsigned id, unsigned nr)
{
	struct kvm_cpuid2 *out = NULL;
	struct errbuf eb = { "" };
	int r = cpuid_normalize(sup, id, nr, &out, &eb);

	cr_assert_eq(r, 0, "cpuid_normalize(%u of %u): %d %s", id, nr, r, eb.msg);
	cr_assert_not_null(out);
	return out;
}

static struct kvm_cpuid_entry2 *must_find(struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
	struct kvm_cpuid_entry2 *e = cpuid_find(c, fn, idx);

	cr_assert_not_null(e, "leaf 0x%x.%u missing", fn, idx);
	return e;
}

static unsigned count_function(const struct kvm_cpuid2 *c, uint32_t fn)
{
	unsigned n = 0;

	for (uint32_t i = 0; i < c->nent; i++)
		n += c->entries[i].function == fn;
	return n;
}

/* ---- leaf 1 ------------------------------------------------------------------------ */

Test(cpuid, leaf1_carries_apic_id_package_size_and_clflush)
{
	struct kvm_cpuid2 *s = INTEL(), *c = norm(s, 3, 4);
	struct kvm_cpuid_entry2 *e = must_find(c, 1, 0);

	cr_assert_eq(e->ebx >> 24, 3);
	cr_assert_eq((e->ebx >> 16) & 0xff, 4);
	cr_assert_eq((e->ebx >> 8) & 0xff, 8);
	cr_assert(e->edx & (1u << 28), "HTT must be set with 4 vCPUs");
	free(c);
	free(s);
}

Test(cpuid, leaf1_logical_count_rounds_up_to_power_of_two)
{
	struct kvm_cpuid2 *s = AMD(), *c3 = norm(s, 0, 3), *c5 = norm(s, 0, 5);

	cr_assert_eq((must_find(c3, 1, 0)->ebx >> 16) & 0xff, 4);
	cr_assert_eq((must_find(c5, 1, 0)->ebx >> 16) & 0xff, 8);
	free(c3);
	free(c5);
	free(s);
}

Test(cpuid, leaf1_single_vcpu_clears_htt)
{
	struct kvm_cpuid2 *s = INTEL(), *c = norm(s, 0, 1);
	struct kvm_cpuid_entry2 *e = must_find(c, 1, 0);

	cr_assert_eq(e->edx & (1u << 28), 0);
	cr_assert_eq(e->ebx >> 24, 0);
	free(c);
	free(s);
}

Test(cpuid, leaf1_sets_hypervisor_and_x2apic_and_clears_pdcm)
{
	struct kvm_cpuid2 *s = INTEL(), *c = norm(s, 0, 2);
	struct kvm_cpuid_entry2 *e = must_find(c, 1, 0);

	cr_assert(e->ecx & (1u << 31));
	cr_assert(e->ecx & (1u << 21));
	cr_assert_eq(e->ecx & (1u << 15), 0);
	cr_assert(e->ecx & 1u, "unrelated feature bits (SSE3) must survive");
	free(c);
	free(s);
}

Test(cpuid, leaf1_tsc_deadline_follows_supported_table)
{
	struct kvm_cpuid2 *with = AMD(), *without = INTEL();
	struct kvm_cpuid2 *a = norm(with, 0, 1), *b = norm(without, 0, 1);

	cr_assert(must_find(a, 1, 0)->ecx & (1u << 24));
	cr_assert_eq(must_find(b, 1, 0)->ecx & (1u << 24), 0);
	free(a);
	free(b);
	free(with);
	free(without);
}

/* Nested virtualization: its state (VMCS/VMCB) is not in a snapshot, so guests are not
 * offered it even when KVM could (kvm_intel/kvm_amd nested=1). */
Test(cpuid, vmx_and_svm_are_never_offered)
{
	struct kvm_cpuid2 *intel = INTEL(), *amd = AMD(), *a, *b;

	must_find(intel, 1, 0)->ecx |= 1u << 5;          /* VMX */
	must_find(amd, 0x80000001, 0)->ecx |= 1u << 2;   /* SVM */
	a = norm(intel, 0, 2);
	b = norm(amd, 1, 2);
	cr_assert_eq(must_find(a, 1, 0)->ecx & (1u << 5), 0, "VMX offered");
	cr_assert_eq(must_find(b, 0x80000001, 0)->ecx & (1u << 2), 0, "SVM offered");
	cr_assert(must_find(a, 1, 0)->ecx & 1u, "unrelated feature bits (SSE3) must survive");
	cr_assert(must_find(b, 0x80000001, 0)->ecx & 1u, "LAHF/SAHF must survive");
	free(a);
	free(b);
	free(intel);
	free(amd);
}

/* ---- leaf 4 (Intel cache parameters) -------------------------------------------------- */

Test(cpuid, intel_leaf4_cores_and_sharing_match_vcpu_count)
{
	struct kvm_cpuid2 *s = INTEL(), *c = norm(s, 1, 6);

	for (uint32_t i = 0; i < 4; i++) {
		struct kvm_cpuid_entry2 *e = must_find(c, 4, i);
		unsigned level = (e->eax >> 5) & 7;

		cr_assert_eq(e->eax >> 26, 5, "subleaf %u: cores per package - 1", i);
		cr_assert_eq((e->eax >> 14) & 0xfff, level == 3 ? 5u : 0u, "subleaf %u sharing", i);
		cr_assert_eq(e->eax & 0x3fff, intel_host[2 + i].eax & 0x3fff, "type/level kept");
		cr_assert_eq(e->ebx, intel_host[2 + i].ebx);
	}
	cr_assert_eq(must_find(c, 4, 4)->eax, 0, "the null terminator stays null");
	free(c);
	free(s);
}

/* ---- leaves 0xB / 0x1F ------------------------------------------------------------------ */

static void check_topology_leaf(struct kvm_cpuid2 *c, uint32_t fn, unsigned id, unsigned nr,
				unsigned core_bits)
{
	struct kvm_cpuid_entry2 *smt = must_find(c, fn, 0), *core = must_find(c, fn, 1),
				*end = must_find(c, fn, 2);

	cr_assert_eq(count_function(c, fn), 3, "leaf 0x%x: exactly three subleaves", fn);
	cr_assert_eq(smt->eax & 0x1f, 0);
	cr_assert_eq(smt->ebx & 0xffff, 1);
	cr_assert_eq(smt->ecx, 0x100, "subleaf 0: SMT level, index 0");
	cr_assert_eq(core->eax & 0x1f, core_bits);
	cr_assert_eq(core->ebx & 0xffff, nr);
	cr_assert_eq(core->ecx, 0x201, "subleaf 1: core level, index 1");
	cr_assert_eq(end->ecx, 2, "subleaf 2: invalid level ends the list");
	cr_assert_eq(end->ebx, 0);
	for (uint32_t i = 0; i < 3; i++) {
		struct kvm_cpuid_entry2 *e = must_find(c, fn, i);

		cr_assert_eq(e->edx, id, "leaf 0x%x.%u x2APIC id", fn, i);
		cr_assert(e->flags & SIG);
	}
}

Test(cpuid, intel_leaf_b_and_1f_describe_one_package_of_single_thread_cores)
{
	struct kvm_cpuid2 *s = INTEL(), *c = norm(s, 5, 6);

	check_topology_leaf(c, 0xb, 5, 6, 3);
	check_topology_leaf(c, 0x1f, 5, 6, 3);
	free(c);
	free(s);
}

Test(cpuid, amd_leaf_b_rebuilt_from_subleaf0_only)
{
	struct kvm_cpuid2 *s = AMD(), *c = norm(s, 2, 4);

	check_topology_leaf(c, 0xb, 2, 4, 2);
	cr_assert_null(cpuid_find(c, 0x1f, 0), "0x1F is not invented when the host lacks it");
	free(c);
	free(s);
}

Test(cpuid, single_vcpu_core_level_has_zero_shift)
{
	struct kvm_cpuid2 *s = AMD(), *c = norm(s, 0, 1);

	check_topology_leaf(c, 0xb, 0, 1, 0);
	free(c);
	free(s);
}

/* ---- AMD extended leaves ----------------------------------------------------------------- */

Test(cpuid, amd_8000001e_gives_extended_apic_id_and_core_id)
{
	struct kvm_cpuid2 *s = AMD(), *c = norm(s, 6, 8);
	struct kvm_cpuid_entry2 *e = must_find(c, 0x8000001e, 0);

	cr_assert_eq(e->eax, 6);
	cr_assert_eq(e->ebx & 0xff, 6, "core id");
	cr_assert_eq((e->ebx >> 8) & 0xff, 0, "one thread per core");
	cr_assert_eq(e->ecx & 0x7ff, 0, "node 0, one node");
	free(c);
	free(s);
}

Test(cpuid, amd_8000001e_added_when_topoext_and_missing)
{
	struct kvm_cpuid2 *s = AMD(), *c;

	/* drop the last-but-one entry (0x8000001e) */
	s->entries[ARRAY_SIZE(amd_host) - 2] = s->entries[ARRAY_SIZE(amd_host) - 1];
	s->nent--;
	cr_assert_null(cpuid_find(s, 0x8000001e, 0));
	c = norm(s, 3, 4);
	cr_assert_eq(must_find(c, 0x8000001e, 0)->eax, 3);
	free(c);
	free(s);
}

Test(cpuid, amd_80000008_core_count_and_apic_id_size)
{
	struct kvm_cpuid2 *s = AMD(), *c = norm(s, 0, 5);
	struct kvm_cpuid_entry2 *e = must_find(c, 0x80000008, 0);

	cr_assert_eq(e->ecx & 0xff, 4, "NC = nr - 1");
	cr_assert_eq((e->ecx >> 12) & 0xf, 3, "ApicIdCoreIdSize = ceil(log2(5))");
	cr_assert_eq(e->eax, 0x3030, "address sizes untouched");
	free(c);
	free(s);
}

Test(cpuid, amd_8000001d_last_level_cache_shared_by_all_vcpus)
{
	struct kvm_cpuid2 *s = AMD(), *c = norm(s, 0, 4);

	cr_assert_eq((must_find(c, 0x8000001d, 0)->eax >> 14) & 0xfff, 0, "L1d per core");
	cr_assert_eq((must_find(c, 0x8000001d, 2)->eax >> 14) & 0xfff, 0, "L2 per core");
	cr_assert_eq((must_find(c, 0x8000001d, 3)->eax >> 14) & 0xfff, 3, "L3 shared by 4");
	cr_assert_eq(must_find(c, 0x8000001d, 3)->eax & 0x3fff, 0x163, "type/level kept");
	free(c);
	free(s);
}

Test(cpuid, amd_cmp_legacy_only_with_several_vcpus)
{
	struct kvm_cpuid2 *s = AMD(), *one = norm(s, 0, 1), *two = norm(s, 0, 2);

	cr_assert_eq(must_find(one, 0x80000001, 0)->ecx & 2u, 0);
	cr_assert(must_find(two, 0x80000001, 0)->ecx & 2u);
	cr_assert(must_find(two, 0x80000001, 0)->ecx & (1u << 22), "topoext kept");
	free(one);
	free(two);
	free(s);
}

Test(cpuid, intel_gets_no_amd_topology_fields)
{
	struct kvm_cpuid2 *s = INTEL(), *c = norm(s, 0, 4);

	cr_assert_eq(must_find(c, 0x80000008, 0)->ecx, 0, "0x80000008 ECX is reserved on Intel");
	cr_assert_eq(must_find(c, 0x80000001, 0)->ecx, 0x121);
	cr_assert_null(cpuid_find(c, 0x8000001e, 0));
	free(c);
	free(s);
}

/* ---- PMU, KVM leaves, dropped leaves, purity, bad input ------------------------------------ */

Test(cpuid, arch_perfmon_leaf_is_zeroed)
{
	struct kvm_cpuid2 *s = INTEL(), *c = norm(s, 0, 2);
	struct kvm_cpuid_entry2 *e = must_find(c, 0xa, 0);

	cr_assert_eq(e->eax | e->ebx | e->ecx | e->edx, 0);
	free(c);
	free(s);
}

static void check_kvm_leaves(struct kvm_cpuid2 *c, uint32_t features)
{
	struct kvm_cpuid_entry2 *b = must_find(c, 0x40000000, 0);
	char sig[12];

	cr_assert_eq(b->eax, 0x40000001);
	memcpy(sig, &b->ebx, 4);
	memcpy(sig + 4, &b->ecx, 4);
	memcpy(sig + 8, &b->edx, 4);
	cr_assert_eq(memcmp(sig, "KVMKVMKVM\0\0\0", 12), 0);
	cr_assert_eq(must_find(c, 0x40000001, 0)->eax, features);
	cr_assert_eq(count_function(c, 0x40000000), 1);
	cr_assert_eq(count_function(c, 0x40000001), 1);
}

Test(cpuid, kvm_leaves_keep_supported_paravirt_features)
{
	struct kvm_cpuid2 *s = AMD(), *c = norm(s, 0, 1);

	check_kvm_leaves(c, 0x01007efb);
	free(c);
	free(s);
}

Test(cpuid, kvm_leaves_added_when_supported_table_lacks_them)
{
	struct kvm_cpuid2 *s = INTEL(), *c;
	uint32_t w = 0;

	for (uint32_t i = 0; i < s->nent; i++)
		if ((s->entries[i].function & 0xf0000000u) != 0x40000000u)
			s->entries[w++] = s->entries[i];
	s->nent = w;
	c = norm(s, 0, 1);
	check_kvm_leaves(c, 0);
	free(c);
	free(s);
}

Test(cpuid, drops_leaves_beyond_advertised_maximum)
{
	struct kvm_cpuid_entry2 extra[ARRAY_SIZE(intel_host) + 3];
	struct kvm_cpuid2 *s, *c;

	memcpy(extra, intel_host, sizeof(intel_host));
	extra[ARRAY_SIZE(intel_host)] = (struct kvm_cpuid_entry2){ .function = 0x20, .eax = 1 };
	extra[ARRAY_SIZE(intel_host) + 1] = (struct kvm_cpuid_entry2){ .function = 0x80000009 };
	extra[ARRAY_SIZE(intel_host) + 2] = (struct kvm_cpuid_entry2){ .function = 0x40000010 };
	s = table(extra, ARRAY_SIZE(extra));
	c = norm(s, 0, 1);
	cr_assert_null(cpuid_find(c, 0x20, 0));
	cr_assert_null(cpuid_find(c, 0x80000009, 0));
	cr_assert_null(cpuid_find(c, 0x40000010, 0));
	cr_assert_not_null(cpuid_find(c, 0x80000008, 0));
	free(c);
	free(s);
}

Test(cpuid, leaves_without_topology_meaning_are_copied_unchanged)
{
	struct kvm_cpuid2 *s = AMD(), *c = norm(s, 1, 2);
	struct kvm_cpuid_entry2 *e = must_find(c, 0x80000021, 0);

	cr_assert_eq(e->eax, 0x204);
	cr_assert_eq(e->ecx, 6);
	cr_assert_eq(must_find(c, 0, 0)->eax, 0x1c);
	free(c);
	free(s);
}

Test(cpuid, vcpus_differ_only_in_apic_id_fields)
{
	struct kvm_cpuid2 *s = AMD(), *a = norm(s, 0, 8), *b = norm(s, 5, 8);

	cr_assert_eq(a->nent, b->nent);
	for (uint32_t i = 0; i < a->nent; i++) {
		struct kvm_cpuid_entry2 *x = &a->entries[i], *y = &b->entries[i];

		cr_assert_eq(x->function, y->function);
		cr_assert_eq(x->index, y->index);
		if (x->function == 1) {
			cr_assert_eq(x->ebx & 0xffffff, y->ebx & 0xffffff);
			cr_assert_eq(y->ebx >> 24, 5);
		} else if (x->function == 0xb) {
			cr_assert_eq(y->edx, 5);
			cr_assert_eq(x->ecx, y->ecx);
		} else if (x->function == 0x8000001e) {
			cr_assert_eq(y->eax, 5);
		} else {
			cr_assert_eq(memcmp(x, y, sizeof(*x)), 0, "leaf 0x%x.%u differs", x->function,
				     x->index);
		}
	}
	free(a);
	free(b);
	free(s);
}

Test(cpuid, normalize_leaves_its_input_unchanged)
{
	struct kvm_cpuid2 *s = AMD(), *c = norm(s, 3, 4);

	cr_assert_eq(s->nent, ARRAY_SIZE(amd_host));
	cr_assert_eq(memcmp(s->entries, amd_host, sizeof(amd_host)), 0);
	free(c);
	free(s);
}

Test(cpuid, rejects_vcpu_id_out_of_range_and_bad_counts)
{
	struct kvm_cpuid2 *s = AMD(), *c = (void *)1;
	struct errbuf eb;

	cr_assert_eq(cpuid_normalize(s, 4, 4, &c, &eb), -EINVAL);
	cr_assert_null(c, "out is cleared on failure");
	cr_assert(strstr(eb.msg, "vCPU id 4"), "message: %s", eb.msg);
	cr_assert_eq(cpuid_normalize(s, 0, 0, &c, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "0 vCPUs"), "message: %s", eb.msg);
	cr_assert_eq(cpuid_normalize(s, 0, 256, &c, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "256 vCPUs"), "message: %s", eb.msg);
	free(s);
}

Test(cpuid, rejects_table_without_leaf_1)
{
	struct kvm_cpuid2 *s = table(amd_host, 1), *c;
	struct errbuf eb;

	cr_assert_eq(cpuid_normalize(s, 0, 1, &c, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "leaf 1"), "message: %s", eb.msg);
	free(s);
}

Test(cpuid, find_ignores_index_unless_significant)
{
	struct kvm_cpuid2 *s = AMD();

	cr_assert_not_null(cpuid_find(s, 1, 7), "leaf 1 answers any subleaf");
	cr_assert_null(cpuid_find(s, 0x8000001d, 9));
	cr_assert_eq(cpuid_find(s, 0x8000001d, 3)->eax, 0x4163);
	free(s);
}

/* ---- the real KVM ------------------------------------------------------------------------ */

Test(cpuid, host_supported_table_normalizes_for_every_vcpu)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	struct kvm_cpuid2 *s = NULL;
	struct errbuf eb = { "" };

	if (fd < 0)
		cr_skip_test("no /dev/kvm");
	cr_assert_eq(cpuid_get_supported(fd, &s, &eb), 0, "%s", eb.msg);
	cr_assert_gt(s->nent, 2);
	for (unsigned id = 0; id < VM_MAX_VCPUS; id++) {
		struct kvm_cpuid2 *c = norm(s, id, VM_MAX_VCPUS);

		cr_assert_eq(must_find(c, 1, 0)->ebx >> 24, id);
		cr_assert_eq(must_find(c, 0x40000000, 0)->eax, 0x40000001);
		free(c);
	}
	free(s);
	close(fd);
}
