/*
 * Guest CPUID: KVM_GET_SUPPORTED_CPUID once per VM, then a per-vCPU copy rewritten so
 * that every leaf a guest uses to discover topology tells the same story: `nr`
 * single-threaded cores in one package, one node, APIC id == vCPU index (KVM's APIC id
 * is the KVM_CREATE_VCPU id, which ember sets to the index). Vendor-specific leaves are
 * only touched where the vendor defines them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "x86.h"

/* KVM's own limit is 256 today; allow a few doublings before giving up. */
#define CPUID_SUPPORTED_LIMIT (CPUID_MAX_ENTRIES * 16)
/* Entries normalisation may add: 0x40000000/1, three subleaves each of 0xB and 0x1F,
 * and 0x8000001E. */
#define CPUID_EXTRA_ENTRIES 9
/* xAPIC ids are 8 bits and 0xff is the broadcast id. */
#define CPUID_MAX_VCPUS 255

#define LEAF_BASIC_MAX   0x0u
#define LEAF_FEATURES    0x1u
#define LEAF_CACHE_PARAM 0x4u
#define LEAF_PERFMON     0xau
#define LEAF_TOPOLOGY    0xbu
#define LEAF_TOPOLOGY_V2 0x1fu
#define LEAF_HV_BASE     0x40000000u
#define LEAF_KVM_FEATURES 0x40000001u
#define LEAF_EXT_MAX     0x80000000u
#define LEAF_EXT_FEATURES 0x80000001u
#define LEAF_AMD_SIZES   0x80000008u
#define LEAF_AMD_CACHE_TOPO 0x8000001du
#define LEAF_AMD_TOPO    0x8000001eu
#define LEAF_AMD_PERFMON_V2 0x80000022u

#define BIT(n) (1u << (n))
#define CPUID1_ECX_VMX        BIT(5)
#define CPUID1_ECX_PDCM       BIT(15)
#define CPUID1_ECX_X2APIC     BIT(21)
#define CPUID1_ECX_TSC_DEADLINE BIT(24)
#define CPUID1_ECX_HYPERVISOR BIT(31)
#define CPUID1_EDX_HTT        BIT(28)
#define EXT1_ECX_CMP_LEGACY   BIT(1)
#define EXT1_ECX_SVM          BIT(2)
#define EXT1_ECX_TOPOEXT      BIT(22)
#define EXT1_ECX_PERFCTR_CORE BIT(23)

/* Level types in leaves 0xB / 0x1F ECX[15:8]. */
#define TOPO_LEVEL_INVALID 0u
#define TOPO_LEVEL_SMT     1u
#define TOPO_LEVEL_CORE    2u

/* "KVMKVMKVM\0\0\0" as the three registers EBX, ECX, EDX hold it. */
#define KVM_SIG_EBX 0x4b4d564bu
#define KVM_SIG_ECX 0x564b4d56u
#define KVM_SIG_EDX 0x0000004du

enum cpu_vendor { VENDOR_OTHER, VENDOR_INTEL, VENDOR_AMD };

int cpuid_get_supported(int kvm_fd, struct kvm_cpuid2 **out, struct errbuf *eb)
{
	struct kvm_cpuid2 *c = NULL;
	unsigned n = CPUID_MAX_ENTRIES;
	struct kvm_cpuid_entry2 *e1;

	*out = NULL;
	for (;;) {
		free(c);
		c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		if (!c)
			return errbuf_set(eb, -ENOMEM, "out of memory for %u CPUID entries", n);
		c->nent = n;
		if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
			break;
		if (errno != E2BIG || n >= CPUID_SUPPORTED_LIMIT) {
			int r = -errno;

			free(c);
			return errbuf_set(eb, r, "KVM_GET_SUPPORTED_CPUID with room for %u entries: %s",
					  n, strerror(-r));
		}
		n *= 2;
	}
	/*
	 * KVM leaves TSC-deadline out of the supported table on some kernels and reports it
	 * as a capability instead (api.rst); fold it in so normalisation stays a pure
	 * function of this table.
	 */
	e1 = cpuid_find(c, LEAF_FEATURES, 0);
	if (e1 && ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0)
		e1->ecx |= CPUID1_ECX_TSC_DEADLINE;
	*out = c;
	return 0;
}

struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *c, uint32_t function, uint32_t index)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function != function)
			continue;
		/* Without SIGNIFCANT_INDEX the entry answers every subleaf, as in KVM. */
		if (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == index)
			return e;
	}
	return NULL;
}

/* ---- table editing ------------------------------------------------------------- */

/* out has room for `cap` entries. Returns the new entry (zeroed) or NULL when full. */
static struct kvm_cpuid_entry2 *cpuid_add(struct kvm_cpuid2 *c, unsigned cap, uint32_t function,
					  uint32_t index, uint32_t flags)
{
	struct kvm_cpuid_entry2 *e;

	if (c->nent >= cap)
		return NULL;
	e = &c->entries[c->nent++];
	memset(e, 0, sizeof(*e));
	e->function = function;
	e->index = index;
	e->flags = flags;
	return e;
}

static void cpuid_remove_function(struct kvm_cpuid2 *c, uint32_t function)
{
	uint32_t w = 0;

	for (uint32_t r = 0; r < c->nent; r++)
		if (c->entries[r].function != function)
			c->entries[w++] = c->entries[r];
	c->nent = w;
}

static uint32_t set_field(uint32_t reg, unsigned lo, unsigned width, uint32_t val)
{
	uint32_t mask = (width >= 32 ? ~0u : (1u << width) - 1) << lo;

	return (reg & ~mask) | ((val << lo) & mask);
}

/* Smallest s with (1 << s) >= n, for n >= 1. */
static unsigned ceil_log2(unsigned n)
{
	unsigned s = 0;

	while ((1u << s) < n)
		s++;
	return s;
}

static uint32_t min_u32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

static enum cpu_vendor cpuid_vendor(const struct kvm_cpuid_entry2 *leaf0)
{
	/* The vendor string is EBX, EDX, ECX in that order. */
	if (leaf0->ebx == 0x756e6547 && leaf0->edx == 0x49656e69 && leaf0->ecx == 0x6c65746e)
		return VENDOR_INTEL; /* GenuineIntel */
	if (leaf0->ebx == 0x68747541 && leaf0->edx == 0x69746e65 && leaf0->ecx == 0x444d4163)
		return VENDOR_AMD;   /* AuthenticAMD */
	if (leaf0->ebx == 0x6f677948 && leaf0->edx == 0x6e65476e && leaf0->ecx == 0x656e6975)
		return VENDOR_AMD;   /* HygonGenuine: AMD's topology leaves */
	return VENDOR_OTHER;
}

/*
 * Copies the supported entries that lie inside their range's advertised maximum: a leaf
 * above leaf 0's (or 0x80000000's) EAX is one the guest is told does not exist, and KVM
 * answers such queries from the highest basic leaf instead, so a stale entry there would
 * only cause confusion. The hypervisor range is rebuilt to end at 0x40000001.
 */
static void copy_in_range(struct kvm_cpuid2 *dst, const struct kvm_cpuid2 *src,
			  uint32_t basic_max, uint32_t ext_max)
{
	dst->nent = 0;
	for (uint32_t i = 0; i < src->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &src->entries[i];
		uint32_t f = e->function;

		if (f < LEAF_HV_BASE && f > basic_max)
			continue;
		if (f >= LEAF_HV_BASE && f < LEAF_EXT_MAX && f > LEAF_KVM_FEATURES)
			continue;
		if (f >= LEAF_EXT_MAX && f < 0xc0000000u && f > ext_max)
			continue;
		dst->entries[dst->nent++] = *e;
	}
}

/* ---- the rules ------------------------------------------------------------------ */

struct topo {
	unsigned id, nr;
	unsigned core_bits; /* APIC-id bits for the core number: ceil(log2(nr)) */
};

static void fix_leaf1(struct kvm_cpuid_entry2 *e, const struct topo *t)
{
	/* The guest's initial APIC id must equal the one KVM gives this vCPU's LAPIC. */
	e->ebx = set_field(e->ebx, 24, 8, t->id);
	/* Addressable logical processors in the package: a power of two covering nr,
	 * the same APIC-id width leaves 0xB and 0x80000008 report. */
	e->ebx = set_field(e->ebx, 16, 8, min_u32(1u << t->core_bits, 255));
	/* CLFLUSH line size in 8-byte units: 64 bytes on every x86-64 part. */
	e->ebx = set_field(e->ebx, 8, 8, 8);
	/* Tells the guest it is virtualised, so it looks for the KVM leaves at 0x40000000. */
	e->ecx |= CPUID1_ECX_HYPERVISOR;
	/* KVM emulates x2APIC in software whatever the host has; guests want it for >255 ids
	 * and for cheap MSR-based EOI/ICR access. */
	e->ecx |= CPUID1_ECX_X2APIC;
	/* PDCM advertises IA32_PERF_CAPABILITIES, a PMU MSR; guests get no PMU. */
	e->ecx &= ~CPUID1_ECX_PDCM;
	/* No nested virtualization: its state is not saved (x86_check_snapshot_nested). */
	e->ecx &= ~CPUID1_ECX_VMX;
	/* TSC-deadline (bit 24) stays as cpuid_get_supported found it. */
	/* HTT says EBX[23:16] is valid, i.e. there is more than one logical processor. */
	if (t->nr > 1)
		e->edx |= CPUID1_EDX_HTT;
	else
		e->edx &= ~CPUID1_EDX_HTT;
}

/* Intel deterministic cache parameters (also AMD's 0x8000001D, same EAX layout). */
static void fix_cache_leaf(struct kvm_cpuid_entry2 *e, const struct topo *t, bool intel)
{
	unsigned type = e->eax & 0x1f, level = (e->eax >> 5) & 0x7;

	if (type == 0) /* null entry: end of the list */
		return;
	/* Who shares the cache: L1/L2 belong to one core (one thread each here); the
	 * last level is shared by the whole package, as on a real single-socket part.
	 * Linux derives its LLC and scheduler domains from this. */
	e->eax = set_field(e->eax, 14, 12, level >= 3 ? min_u32(t->nr - 1, 0xfff) : 0);
	/* Intel only: cores in the package - 1; with the host's value a guest would
	 * believe in cores it does not have. */
	if (intel)
		e->eax = set_field(e->eax, 26, 6, min_u32(t->nr - 1, 63));
}

/*
 * Leaves 0xB / 0x1F are rebuilt from scratch: KVM passes the host's through (and
 * recent kernels report only subleaf 0), while the guest needs its own two levels.
 * SMT level: 1 thread per core, so 0 APIC-id bits. Core level: nr cores, core_bits
 * bits, which makes every vCPU's package id (APIC id >> core_bits) 0. Subleaf 2 is
 * the invalid level that ends the enumeration. EDX is the x2APIC id in every subleaf.
 */
static int add_topology_leaf(struct kvm_cpuid2 *c, unsigned cap, uint32_t function,
			     const struct topo *t)
{
	static const uint32_t levels[] = { TOPO_LEVEL_SMT, TOPO_LEVEL_CORE, TOPO_LEVEL_INVALID };

	cpuid_remove_function(c, function);
	for (uint32_t i = 0; i < ARRAY_SIZE(levels); i++) {
		struct kvm_cpuid_entry2 *e =
			cpuid_add(c, cap, function, i, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);

		if (!e)
			return -ENOSPC;
		e->ecx = i | (levels[i] << 8);
		e->edx = t->id;
		if (levels[i] == TOPO_LEVEL_SMT) {
			e->eax = 0;
			e->ebx = 1;
		} else if (levels[i] == TOPO_LEVEL_CORE) {
			e->eax = t->core_bits;
			e->ebx = t->nr;
		}
	}
	return 0;
}

/* Leaf 0x80000001 on every vendor: AMD's SVM bit lives there (Intel leaves it 0). */
static void fix_ext_features(struct kvm_cpuid2 *c)
{
	struct kvm_cpuid_entry2 *e = cpuid_find(c, LEAF_EXT_FEATURES, 0);

	/* No nested virtualization: its state is not saved (x86_check_snapshot_nested). */
	if (e)
		e->ecx &= ~EXT1_ECX_SVM;
}

static void fix_amd_leaves(struct kvm_cpuid2 *c, const struct topo *t)
{
	struct kvm_cpuid_entry2 *e;

	e = cpuid_find(c, LEAF_EXT_FEATURES, 0);
	if (e) {
		/* CmpLegacy: the logical processors leaf 1 counts are cores, not threads;
		 * meaningful only when there are several. */
		if (t->nr > 1)
			e->ecx |= EXT1_ECX_CMP_LEGACY;
		else
			e->ecx &= ~EXT1_ECX_CMP_LEGACY;
		/* Core performance counter extensions: no PMU for guests. */
		e->ecx &= ~EXT1_ECX_PERFCTR_CORE;
	}
	e = cpuid_find(c, LEAF_AMD_SIZES, 0);
	if (e) {
		/* NC = cores - 1, and ApicIdCoreIdSize = APIC-id bits for the core number,
		 * the "legacy" topology Linux reads when leaf 0xB is absent. */
		e->ecx = set_field(e->ecx, 0, 8, t->nr - 1);
		e->ecx = set_field(e->ecx, 12, 4, t->core_bits);
	}
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == LEAF_AMD_CACHE_TOPO)
			fix_cache_leaf(&c->entries[i], t, false);
	e = cpuid_find(c, LEAF_AMD_TOPO, 0);
	if (e) {
		/* Extended APIC id = the LAPIC's id; compute unit (core) id = index with one
		 * thread per unit (EBX[15:8] = threads - 1 = 0); one node, node id 0. KVM
		 * reports zeros here, which would give every vCPU APIC id 0. */
		e->eax = t->id;
		e->ebx = t->id & 0xff;
		e->ecx = 0;
		e->edx = 0;
	}
	e = cpuid_find(c, LEAF_AMD_PERFMON_V2, 0);
	if (e) /* PerfMonV2 counter counts: no PMU for guests */
		e->eax = e->ebx = e->ecx = e->edx = 0;
}

/* The KVM paravirt leaves: signature and max leaf, and the features KVM supports
 * (kvmclock, async PF, PV EOI, ...), so a Linux guest uses kvmclock. */
static int add_kvm_leaves(struct kvm_cpuid2 *c, unsigned cap)
{
	struct kvm_cpuid_entry2 *e = cpuid_find(c, LEAF_HV_BASE, 0);

	if (!e && !(e = cpuid_add(c, cap, LEAF_HV_BASE, 0, 0)))
		return -ENOSPC;
	e->eax = LEAF_KVM_FEATURES;
	e->ebx = KVM_SIG_EBX;
	e->ecx = KVM_SIG_ECX;
	e->edx = KVM_SIG_EDX;
	/* Kept as supported; when absent, present with no features rather than missing. */
	if (!cpuid_find(c, LEAF_KVM_FEATURES, 0) && !cpuid_add(c, cap, LEAF_KVM_FEATURES, 0, 0))
		return -ENOSPC;
	return 0;
}

int cpuid_normalize(const struct kvm_cpuid2 *supported, unsigned id, unsigned nr,
		    struct kvm_cpuid2 **out, struct errbuf *eb)
{
	const struct kvm_cpuid_entry2 *leaf0 = NULL, *ext0 = NULL;
	struct kvm_cpuid2 *c;
	struct kvm_cpuid_entry2 *e;
	struct topo t = { .id = id, .nr = nr, .core_bits = ceil_log2(nr) };
	enum cpu_vendor vendor;
	unsigned cap;
	int r;

	*out = NULL;
	if (!supported || supported->nent > CPUID_SUPPORTED_LIMIT)
		return errbuf_set(eb, -EINVAL, "supported CPUID table missing or too large (%u entries)",
				  supported ? supported->nent : 0);
	if (nr == 0 || nr > CPUID_MAX_VCPUS)
		return errbuf_set(eb, -EINVAL, "CPUID: %u vCPUs, must be 1..%u", nr, CPUID_MAX_VCPUS);
	if (id >= nr)
		return errbuf_set(eb, -EINVAL, "CPUID: vCPU id %u out of range for %u vCPUs", id, nr);
	for (uint32_t i = 0; i < supported->nent; i++) {
		if (supported->entries[i].function == LEAF_BASIC_MAX)
			leaf0 = &supported->entries[i];
		else if (supported->entries[i].function == LEAF_EXT_MAX)
			ext0 = &supported->entries[i];
	}
	if (!leaf0 || leaf0->eax < LEAF_FEATURES)
		return errbuf_set(eb, -EINVAL, "supported CPUID lacks leaf 0 or leaf 1");
	vendor = cpuid_vendor(leaf0);

	cap = supported->nent + CPUID_EXTRA_ENTRIES;
	c = calloc(1, sizeof(*c) + cap * sizeof(c->entries[0]));
	if (!c)
		return errbuf_set(eb, -ENOMEM, "out of memory for %u CPUID entries", cap);
	copy_in_range(c, supported, leaf0->eax, ext0 ? ext0->eax : 0);

	e = cpuid_find(c, LEAF_FEATURES, 0);
	if (!e) {
		r = errbuf_set(eb, -EINVAL, "supported CPUID lacks leaf 1");
		goto fail;
	}
	fix_leaf1(e, &t);
	fix_ext_features(c);
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == LEAF_CACHE_PARAM)
			fix_cache_leaf(&c->entries[i], &t, vendor == VENDOR_INTEL);
	e = cpuid_find(c, LEAF_PERFMON, 0);
	if (e) /* architectural PMU: none, so a snapshot never depends on the host's counters */
		e->eax = e->ebx = e->ecx = e->edx = 0;
	r = 0;
	if (cpuid_find(c, LEAF_TOPOLOGY, 0))
		r = add_topology_leaf(c, cap, LEAF_TOPOLOGY, &t);
	if (!r && cpuid_find(c, LEAF_TOPOLOGY_V2, 0))
		r = add_topology_leaf(c, cap, LEAF_TOPOLOGY_V2, &t);
	if (!r && vendor == VENDOR_AMD) {
		struct kvm_cpuid_entry2 *x1 = cpuid_find(c, LEAF_EXT_FEATURES, 0);

		/* With topology extensions the guest reads 0x8000001E for its APIC id. */
		if (x1 && (x1->ecx & EXT1_ECX_TOPOEXT) && ext0 && ext0->eax >= LEAF_AMD_TOPO &&
		    !cpuid_find(c, LEAF_AMD_TOPO, 0) && !cpuid_add(c, cap, LEAF_AMD_TOPO, 0, 0))
			r = -ENOSPC;
		if (!r)
			fix_amd_leaves(c, &t);
	}
	if (!r)
		r = add_kvm_leaves(c, cap);
	if (r) {
		r = errbuf_set(eb, r, "CPUID: no room for the entries normalisation adds");
		goto fail;
	}
	*out = c;
	return 0;
fail:
	free(c);
	return r;
}
