/*
 * Can this host run a snapshot's vCPUs? KVM_SET_CPUID2 accepts feature bits the host
 * lacks, and the guest would then fault (#UD, #GP) at its first such instruction long
 * after the restore "succeeded"; so restore checks here first and refuses with a message
 * naming the missing feature. The check itself is a pure function of the structs;
 * x86_host_cpu_info and x86_cpu_reference gather what it compares against.
 */
#include <cpuid.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "x86.h"

enum cpuid_reg { REG_EAX, REG_EBX, REG_ECX, REG_EDX };

struct cpu_feature {
	const char *name;    /* as Linux's /proc/cpuinfo spells it */
	uint32_t leaf, subleaf;
	enum cpuid_reg reg;
	uint8_t bit;
};

/*
 * The registers of feature bits, every bit of which is compared: a guest may have
 * started using any feature its CPUID showed, named below or not. `exempt`: bits KVM
 * emulates on any host (x2apic and tsc_deadline_timer with an in-kernel irqchip,
 * arch_capabilities: KVM always emulates that MSR), bits ember or KVM synthesise
 * (hypervisor, apic, ht, cmp_legacy, topoext), and bits that mirror guest control
 * registers (osxsave, ospke), which KVM updates in the CPUID it reports.
 */
struct feature_reg {
	uint32_t leaf, subleaf;
	enum cpuid_reg reg;
	uint32_t exempt;
};

#define B(n) (1u << (n))
static const struct feature_reg feature_regs[] = {
	{ 1, 0, REG_ECX, B(21) | B(24) | B(27) | B(31) }, /* x2apic, tsc_deadline, osxsave, hypervisor */
	{ 1, 0, REG_EDX, B(9) | B(28) },                 /* apic, ht */
	{ 7, 0, REG_EBX, 0 },
	{ 7, 0, REG_ECX, B(4) },                         /* ospke */
	{ 7, 0, REG_EDX, B(29) },                        /* arch_capabilities */
	{ 7, 1, REG_EAX, 0 },
	{ 7, 1, REG_EDX, 0 },
	{ 0xd, 1, REG_EAX, 0 },
	{ 0x80000001, 0, REG_ECX, B(1) | B(22) },        /* cmp_legacy, topoext */
	{ 0x80000001, 0, REG_EDX, 0 },
	{ 0x80000007, 0, REG_EDX, 0 },                   /* invariant TSC */
	{ 0x80000008, 0, REG_EBX, 0 },                   /* AMD: clzero, ibpb, virt_ssbd, ... */
};
#undef B

/* Names for the messages, as Linux's /proc/cpuinfo spells them. */
static const struct cpu_feature features[] = {
	/* CPUID.1:EDX */
	{ "fpu", 1, 0, REG_EDX, 0 },       { "tsc", 1, 0, REG_EDX, 4 },
	{ "msr", 1, 0, REG_EDX, 5 },       { "pae", 1, 0, REG_EDX, 6 },
	{ "cx8", 1, 0, REG_EDX, 8 },       { "sep", 1, 0, REG_EDX, 11 },
	{ "mtrr", 1, 0, REG_EDX, 12 },     { "pge", 1, 0, REG_EDX, 13 },
	{ "cmov", 1, 0, REG_EDX, 15 },     { "pat", 1, 0, REG_EDX, 16 },
	{ "pse36", 1, 0, REG_EDX, 17 },    { "clflush", 1, 0, REG_EDX, 19 },
	{ "mmx", 1, 0, REG_EDX, 23 },      { "fxsr", 1, 0, REG_EDX, 24 },
	{ "sse", 1, 0, REG_EDX, 25 },      { "sse2", 1, 0, REG_EDX, 26 },
	/* CPUID.1:ECX */
	{ "pni", 1, 0, REG_ECX, 0 },       { "pclmulqdq", 1, 0, REG_ECX, 1 },
	{ "ssse3", 1, 0, REG_ECX, 9 },     { "fma", 1, 0, REG_ECX, 12 },
	{ "cx16", 1, 0, REG_ECX, 13 },     { "pcid", 1, 0, REG_ECX, 17 },
	{ "sse4_1", 1, 0, REG_ECX, 19 },   { "sse4_2", 1, 0, REG_ECX, 20 },
	{ "movbe", 1, 0, REG_ECX, 22 },    { "popcnt", 1, 0, REG_ECX, 23 },
	{ "aes", 1, 0, REG_ECX, 25 },      { "xsave", 1, 0, REG_ECX, 26 },
	{ "avx", 1, 0, REG_ECX, 28 },      { "f16c", 1, 0, REG_ECX, 29 },
	{ "rdrand", 1, 0, REG_ECX, 30 },
	/* CPUID.(7,0):EBX */
	{ "fsgsbase", 7, 0, REG_EBX, 0 },  { "bmi1", 7, 0, REG_EBX, 3 },
	{ "hle", 7, 0, REG_EBX, 4 },       { "avx2", 7, 0, REG_EBX, 5 },
	{ "smep", 7, 0, REG_EBX, 7 },      { "bmi2", 7, 0, REG_EBX, 8 },
	{ "erms", 7, 0, REG_EBX, 9 },      { "invpcid", 7, 0, REG_EBX, 10 },
	{ "rtm", 7, 0, REG_EBX, 11 },      { "mpx", 7, 0, REG_EBX, 14 },
	{ "avx512f", 7, 0, REG_EBX, 16 },  { "avx512dq", 7, 0, REG_EBX, 17 },
	{ "rdseed", 7, 0, REG_EBX, 18 },   { "adx", 7, 0, REG_EBX, 19 },
	{ "smap", 7, 0, REG_EBX, 20 },     { "avx512ifma", 7, 0, REG_EBX, 21 },
	{ "clflushopt", 7, 0, REG_EBX, 23 }, { "clwb", 7, 0, REG_EBX, 24 },
	{ "avx512pf", 7, 0, REG_EBX, 26 }, { "avx512er", 7, 0, REG_EBX, 27 },
	{ "avx512cd", 7, 0, REG_EBX, 28 }, { "sha_ni", 7, 0, REG_EBX, 29 },
	{ "avx512bw", 7, 0, REG_EBX, 30 }, { "avx512vl", 7, 0, REG_EBX, 31 },
	/* CPUID.(7,0):ECX */
	{ "avx512vbmi", 7, 0, REG_ECX, 1 }, { "umip", 7, 0, REG_ECX, 2 },
	{ "pku", 7, 0, REG_ECX, 3 },       { "waitpkg", 7, 0, REG_ECX, 5 },
	{ "avx512_vbmi2", 7, 0, REG_ECX, 6 }, { "gfni", 7, 0, REG_ECX, 8 },
	{ "vaes", 7, 0, REG_ECX, 9 },      { "vpclmulqdq", 7, 0, REG_ECX, 10 },
	{ "avx512_vnni", 7, 0, REG_ECX, 11 }, { "avx512_bitalg", 7, 0, REG_ECX, 12 },
	{ "avx512_vpopcntdq", 7, 0, REG_ECX, 14 }, { "la57", 7, 0, REG_ECX, 16 },
	{ "rdpid", 7, 0, REG_ECX, 22 },    { "cldemote", 7, 0, REG_ECX, 25 },
	{ "movdiri", 7, 0, REG_ECX, 27 },  { "movdir64b", 7, 0, REG_ECX, 28 },
	/* CPUID.(7,0):EDX */
	{ "avx512_4vnniw", 7, 0, REG_EDX, 2 }, { "avx512_4fmaps", 7, 0, REG_EDX, 3 },
	{ "fsrm", 7, 0, REG_EDX, 4 },      { "avx512_vp2intersect", 7, 0, REG_EDX, 8 },
	{ "md_clear", 7, 0, REG_EDX, 10 }, { "serialize", 7, 0, REG_EDX, 14 },
	{ "tsxldtrk", 7, 0, REG_EDX, 16 }, { "amx_bf16", 7, 0, REG_EDX, 22 },
	{ "avx512_fp16", 7, 0, REG_EDX, 23 }, { "amx_tile", 7, 0, REG_EDX, 24 },
	{ "amx_int8", 7, 0, REG_EDX, 25 }, { "spec_ctrl", 7, 0, REG_EDX, 26 },
	{ "intel_stibp", 7, 0, REG_EDX, 27 }, { "flush_l1d", 7, 0, REG_EDX, 28 },
	{ "ssbd", 7, 0, REG_EDX, 31 },
	/* CPUID.(7,1):EAX */
	{ "avx_vnni", 7, 1, REG_EAX, 4 },  { "avx512_bf16", 7, 1, REG_EAX, 5 },
	{ "fzrm", 7, 1, REG_EAX, 10 },     { "fsrs", 7, 1, REG_EAX, 11 },
	{ "fsrc", 7, 1, REG_EAX, 12 },     { "amx_fp16", 7, 1, REG_EAX, 21 },
	{ "avx_ifma", 7, 1, REG_EAX, 23 },
	/* CPUID.(0xD,1):EAX */
	{ "xsaveopt", 0xd, 1, REG_EAX, 0 }, { "xsavec", 0xd, 1, REG_EAX, 1 },
	{ "xgetbv1", 0xd, 1, REG_EAX, 2 }, { "xsaves", 0xd, 1, REG_EAX, 3 },
	{ "xfd", 0xd, 1, REG_EAX, 4 },
	/* CPUID.0x80000001:ECX */
	{ "lahf_lm", 0x80000001, 0, REG_ECX, 0 }, { "svm", 0x80000001, 0, REG_ECX, 2 },
	{ "abm", 0x80000001, 0, REG_ECX, 5 }, { "sse4a", 0x80000001, 0, REG_ECX, 6 },
	{ "misalignsse", 0x80000001, 0, REG_ECX, 7 },
	{ "3dnowprefetch", 0x80000001, 0, REG_ECX, 8 },
	{ "xop", 0x80000001, 0, REG_ECX, 11 }, { "fma4", 0x80000001, 0, REG_ECX, 16 },
	{ "tbm", 0x80000001, 0, REG_ECX, 21 },
	/* CPUID.0x80000001:EDX */
	{ "syscall", 0x80000001, 0, REG_EDX, 11 }, { "nx", 0x80000001, 0, REG_EDX, 20 },
	{ "mmxext", 0x80000001, 0, REG_EDX, 22 }, { "fxsr_opt", 0x80000001, 0, REG_EDX, 25 },
	{ "pdpe1gb", 0x80000001, 0, REG_EDX, 26 }, { "rdtscp", 0x80000001, 0, REG_EDX, 27 },
	{ "lm", 0x80000001, 0, REG_EDX, 29 },
};

#define LEAF_VENDOR 0x0u
#define LEAF_XSTATE 0xdu
#define XCR_XFEATURE_ENABLED_MASK 0u
#define XSAVE_KVM_MIN 4096u /* sizeof(struct kvm_xsave) */

static const char *const reg_names[] = { "EAX", "EBX", "ECX", "EDX" };

static uint32_t reg_of(uint32_t eax, uint32_t ebx, uint32_t ecx, uint32_t edx, enum cpuid_reg r)
{
	switch (r) {
	case REG_EAX:
		return eax;
	case REG_EBX:
		return ebx;
	case REG_ECX:
		return ecx;
	case REG_EDX:
		return edx;
	}
	return 0;
}

static uint32_t *reg_ptr(struct kvm_cpuid_entry2 *e, enum cpuid_reg r)
{
	return r == REG_EAX ? &e->eax : r == REG_EBX ? &e->ebx : r == REG_ECX ? &e->ecx : &e->edx;
}

/* Lookups with KVM's subleaf rule: without SIGNIFCANT_INDEX an entry answers any index. */
static const struct kvm_cpuid_entry2 *host_find(const struct kvm_cpuid2 *c, uint32_t leaf,
						uint32_t sub)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function == leaf &&
		    (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == sub))
			return e;
	}
	return NULL;
}

static const struct snap_cpuid_entry *snap_find(const struct snap_vcpu *v, uint32_t leaf,
						uint32_t sub)
{
	for (uint32_t i = 0; i < v->nr_cpuid; i++) {
		const struct snap_cpuid_entry *e = &v->cpuid[i];

		if (e->function == leaf &&
		    (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == sub))
			return e;
	}
	return NULL;
}

/* The 12-byte vendor string of a leaf-0 entry (EBX, EDX, ECX). */
static void vendor_string(char out[16], uint32_t ebx, uint32_t ecx, uint32_t edx)
{
	memset(out, 0, 16);
	memcpy(out, &ebx, 4);
	memcpy(out + 4, &edx, 4);
	memcpy(out + 8, &ecx, 4);
}

void x86_host_cpu_info(struct snap_cpu_info *out)
{
	unsigned eax = 0, ebx = 0, ecx = 0, edx = 0, base_fam, fam, model;

	memset(out, 0, sizeof(*out));
	__cpuid(0, eax, ebx, ecx, edx);
	vendor_string(out->vendor, ebx, ecx, edx);
	__cpuid(1, eax, ebx, ecx, edx);
	/* "As displayed" (SDM vol. 2, CPUID): the extended fields only count for the
	 * families that define them. */
	base_fam = (eax >> 8) & 0xf;
	fam = base_fam == 0xf ? base_fam + ((eax >> 20) & 0xff) : base_fam;
	model = (eax >> 4) & 0xf;
	if (base_fam == 0x6 || base_fam == 0xf)
		model |= ((eax >> 16) & 0xf) << 4;
	out->family = fam;
	out->model = model;
	out->stepping = eax & 0xf;
}

bool x86_xsave_fits(const uint8_t *xsave, uint32_t len, uint32_t host_len)
{
	if (len <= host_len)
		return true;
	for (uint32_t i = host_len; i < len; i++)
		if (xsave[i])
			return false;
	return true;
}

/* "CPUID.(EAX=7,ECX=0):EBX[16]" in the SDM's notation. */
static void feature_where(char *buf, size_t len, const struct cpu_feature *f)
{
	snprintf(buf, len, f->leaf < 10 ? "CPUID.(EAX=%u,ECX=%u):%s[%u]" :
		 "CPUID.(EAX=%#x,ECX=%u):%s[%u]", f->leaf, f->subleaf, reg_names[f->reg], f->bit);
}

static const char *feature_name(uint32_t leaf, uint32_t sub, enum cpuid_reg reg, unsigned bit)
{
	for (size_t i = 0; i < ARRAY_SIZE(features); i++)
		if (features[i].leaf == leaf && features[i].subleaf == sub &&
		    features[i].reg == reg && features[i].bit == bit)
			return features[i].name;
	return NULL;
}

static int check_features(const struct snap_vcpu *v, const struct kvm_cpuid2 *host,
			  struct errbuf *eb)
{
	for (size_t i = 0; i < ARRAY_SIZE(feature_regs); i++) {
		const struct feature_reg *fr = &feature_regs[i];
		const struct snap_cpuid_entry *se = snap_find(v, fr->leaf, fr->subleaf);
		const struct kvm_cpuid_entry2 *he;
		struct cpu_feature f = { NULL, fr->leaf, fr->subleaf, fr->reg, 0 };
		uint32_t need, have, missing;
		char where[64];

		if (!se)
			continue;
		need = reg_of(se->eax, se->ebx, se->ecx, se->edx, fr->reg) & ~fr->exempt;
		he = host_find(host, fr->leaf, fr->subleaf);
		have = he ? reg_of(he->eax, he->ebx, he->ecx, he->edx, fr->reg) : 0;
		missing = need & ~have;
		if (!missing)
			continue;
		f.bit = (uint8_t)__builtin_ctz(missing);
		f.name = feature_name(f.leaf, f.subleaf, f.reg, f.bit);
		feature_where(where, sizeof(where), &f);
		if (!f.name)
			return errbuf_set(eb, -ENOTSUP, "snapshot needs CPU feature bit %s, which this "
					  "host lacks (vCPU %u)", where, v->id);
		return errbuf_set(eb, -ENOTSUP, "snapshot needs CPU feature %s (%s), which this "
				  "host lacks (vCPU %u)", f.name, where, v->id);
	}
	return 0;
}

static int check_xstate(const struct snap_vcpu *v, const struct kvm_cpuid2 *host,
			struct errbuf *eb)
{
	const struct kvm_cpuid_entry2 *hx = host_find(host, LEAF_XSTATE, 0);
	/* x87 state (bit 0) is architectural: XCR0 always has it. */
	uint64_t host_xcr0 = (hx ? hx->eax | (uint64_t)hx->edx << 32 : 0) | 1;
	/* KVM_CAP_XSAVE2's size: what the host's supported components need, >= 4096. */
	uint32_t host_len = hx && hx->ecx > XSAVE_KVM_MIN ? hx->ecx : XSAVE_KVM_MIN;

	for (uint32_t i = 0; i < v->nr_xcrs && i < SNAP_MAX_XCRS; i++) {
		uint64_t xcr0 = v->xcrs[i].value;

		if (v->xcrs[i].xcr != XCR_XFEATURE_ENABLED_MASK)
			continue;
		if (xcr0 & ~host_xcr0)
			return errbuf_set(eb, -ENOTSUP, "snapshot vCPU %u has XCR0 0x%llx: state "
					  "components 0x%llx are not supported by this host "
					  "(supported XCR0 bits 0x%llx)", v->id,
					  (unsigned long long)xcr0,
					  (unsigned long long)(xcr0 & ~host_xcr0),
					  (unsigned long long)host_xcr0);
	}
	if (v->xsave && !x86_xsave_fits(v->xsave, v->xsave_len, host_len))
		return errbuf_set(eb, -ENOTSUP, "snapshot vCPU %u has a %u-byte XSAVE area with "
				  "state past byte %u, the most this host's KVM takes", v->id,
				  v->xsave_len, host_len);
	return 0;
}

/* The vendor the guest itself saw (CPUID leaf 0) chose its vendor-specific code paths
 * (SYSENTER vs SYSCALL in compat mode, errata workarounds): the header's vendor is only
 * where the snapshot was taken. */
static int check_vcpu_vendor(const struct snap_vcpu *v, const char *host_vendor,
			     struct errbuf *eb)
{
	const struct snap_cpuid_entry *e = snap_find(v, LEAF_VENDOR, 0);
	char vendor[16];

	if (!e)
		return 0;
	vendor_string(vendor, e->ebx, e->ecx, e->edx);
	if (!strcmp(vendor, host_vendor))
		return 0;
	for (unsigned i = 0; i < 12; i++)
		if (vendor[i] < 0x20 || vendor[i] > 0x7e)
			vendor[i] = '?'; /* untrusted bytes: keep the message printable */
	return errbuf_set(eb, -ENOTSUP, "snapshot vCPU %u's CPUID leaf 0 says the guest runs on a "
			  "%s CPU, this host is %s", v->id, vendor, host_vendor);
}

int x86_check_snapshot_cpu(const struct snap_state *st, const struct kvm_cpuid2 *host_supported,
			   struct errbuf *eb)
{
	const struct kvm_cpuid_entry2 *h0;
	char host_vendor[16], snap_vendor[16];
	int r;

	if (!host_supported || !(h0 = host_find(host_supported, LEAF_VENDOR, 0)))
		return errbuf_set(eb, -EINVAL, "host CPUID table has no leaf 0 (vendor)");
	vendor_string(host_vendor, h0->ebx, h0->ecx, h0->edx);
	/* The snapshot's field is untrusted and need not be terminated. */
	snprintf(snap_vendor, sizeof(snap_vendor), "%.*s", (int)sizeof(st->header.cpu.vendor) - 1,
		 st->header.cpu.vendor);
	/* KVM's emulation (and a guest's errata workarounds) differ between vendors. */
	if (strcmp(host_vendor, snap_vendor) != 0)
		return errbuf_set(eb, -ENOTSUP, "snapshot was taken on a %s CPU, this host is %s",
				  snap_vendor[0] ? snap_vendor : "(unnamed)", host_vendor);
	if (st->nr_vcpus && !st->vcpus)
		return errbuf_set(eb, -EINVAL, "snapshot has %u vCPUs but no vCPU state", st->nr_vcpus);
	for (uint32_t i = 0; i < st->nr_vcpus; i++) {
		const struct snap_vcpu *v = &st->vcpus[i];

		if (v->nr_cpuid && !v->cpuid)
			return errbuf_set(eb, -EINVAL, "snapshot vCPU %u: %u CPUID entries missing",
					  v->id, v->nr_cpuid);
		r = check_vcpu_vendor(v, host_vendor, eb);
		if (!r)
			r = check_features(v, host_supported, eb);
		if (!r)
			r = check_xstate(v, host_supported, eb);
		if (r)
			return r;
	}
	return 0;
}

int x86_host_cpuid(struct vm *vm, struct kvm_cpuid2 **out, struct errbuf *eb)
{
	struct kvm_cpuid2 *norm = NULL, *c = NULL;
	struct vcpu *v;
	int r;

	*out = NULL;
	if (!vm->nr_vcpus || !vm->supported_cpuid)
		return errbuf_set(eb, -EINVAL, "VM has no vCPU or no supported CPUID table");
	v = &vm->vcpus[0];
	r = cpuid_normalize(vm->supported_cpuid, 0, vm->nr_vcpus, &norm, eb);
	if (r)
		return r;
	if (ioctl(v->fd, KVM_SET_CPUID2, norm) < 0) {
		r = errbuf_set(eb, -errno, "vCPU 0: KVM_SET_CPUID2: %s", strerror(errno));
		goto out;
	}
	c = calloc(1, sizeof(*c) + CPUID_MAX_ENTRIES * sizeof(c->entries[0]));
	if (!c) {
		r = errbuf_set(eb, -ENOMEM, "out of memory");
		goto out;
	}
	c->nent = CPUID_MAX_ENTRIES;
	if (ioctl(v->fd, KVM_GET_CPUID2, c) < 0) {
		r = errbuf_set(eb, -errno, "vCPU 0: KVM_GET_CPUID2: %s", strerror(errno));
		free(c);
		goto out;
	}
	*out = c;
out:
	free(norm);
	return r;
}

void x86_native_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	unsigned a, b, c, d;

	__cpuid_count(leaf, sub, a, b, c, d);
	r[0] = a;
	r[1] = b;
	r[2] = c;
	r[3] = d;
}

/*
 * Every x86-64 CPU with hardware virtualization has SSE3, and hardware KVM offers it. A
 * supported table without it on a CPU that has it is a software KVM that under-reports:
 * this platform's kvm_pvm (PLATFORM.md), whose KVM_GET_SUPPORTED_CPUID lacks SSE3 and
 * most of leaf 7 while its vCPUs run guest code natively, with every feature of the CPU,
 * and whose KVM_GET_CPUID2 (hence a snapshot taken there) lists them.
 */
bool x86_kvm_underreports(const struct kvm_cpuid2 *supported, x86_cpuid_fn native)
{
	const struct kvm_cpuid_entry2 *e = host_find(supported, 1, 0);
	uint32_t r[4];

	native(1, 0, r);
	return e && !(e->ecx & 1u) && (r[REG_ECX] & 1u);
}

/*
 * What a snapshot's vCPUs are checked against: KVM's supported table, which on hardware
 * KVM is exactly what a vCPU may be given (a feature the CPU has but KVM does not expose
 * would pass a restore and #UD later). Only on a software KVM that under-reports (above)
 * are the CPU's own feature bits added, register by register of feature_regs.
 */
int x86_cpu_reference(const struct kvm_cpuid2 *supported, x86_cpuid_fn native,
		      struct kvm_cpuid2 **out, bool *software, struct errbuf *eb)
{
	uint32_t cap = supported->nent + ARRAY_SIZE(feature_regs);
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + cap * sizeof(c->entries[0]));

	*out = NULL;
	if (!c)
		return errbuf_set(eb, -ENOMEM, "out of memory");
	c->nent = supported->nent;
	memcpy(c->entries, supported->entries, supported->nent * sizeof(c->entries[0]));
	*software = x86_kvm_underreports(supported, native);
	for (size_t i = 0; *software && i < ARRAY_SIZE(feature_regs); i++) {
		const struct feature_reg *fr = &feature_regs[i];
		struct kvm_cpuid_entry2 *e = (struct kvm_cpuid_entry2 *)host_find(c, fr->leaf,
										   fr->subleaf);
		uint32_t r[4];

		native(fr->leaf, fr->subleaf, r);
		if (!r[fr->reg])
			continue;
		if (!e) {
			e = &c->entries[c->nent++];
			e->function = fr->leaf;
			e->index = fr->subleaf;
			e->flags = fr->subleaf ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
		}
		*reg_ptr(e, fr->reg) |= r[fr->reg];
	}
	*out = c;
	return 0;
}

int x86_check_host_cpu(int kvm_fd, const struct snap_state *st, struct kvm_cpuid2 **supported,
		       struct errbuf *eb)
{
	struct kvm_cpuid2 *usable;
	bool software;
	int r;

	r = cpuid_get_supported(kvm_fd, supported, eb);
	if (!r)
		r = x86_cpu_reference(*supported, x86_native_cpuid, &usable, &software, eb);
	if (r)
		return r;
	if (software)
		pr_debug("KVM's supported CPUID lacks SSE3, which this CPU has: a software KVM "
			 "(kvm_pvm) whose vCPUs run the CPU's features natively; checking the "
			 "snapshot against KVM's table plus the CPU's own feature bits");
	r = x86_check_snapshot_cpu(st, usable, eb);
	free(usable);
	return r;
}

/*
 * A vCPU in VMX operation (CR4.VMXE) or with SVM enabled (EFER.SVME) runs nested
 * virtualization, whose state (the VMCS/VMCB of its own guests, KVM_GET_NESTED_STATE) no
 * snapshot holds: restoring the rest would leave a guest hypervisor whose guests vanished
 * (on a KVM without nested support, KVM_SET_SREGS simply fails). ember offers neither
 * VMX nor SVM (cpuid.c); a snapshot whose CPUID has them, from an ember that did, is
 * restored with that CPUID as long as neither is on: the guest keeps the CPUID it booted
 * with, and nothing was lost.
 */
#define CR4_VMXE  (1ull << 13)
#define EFER_SVME (1ull << 12)

int x86_check_snapshot_nested(const struct snap_state *st, struct errbuf *eb)
{
	for (uint32_t i = 0; i < st->nr_vcpus && st->vcpus; i++) {
		const struct snap_vcpu *v = &st->vcpus[i];
		const char *what = v->sregs.cr4 & CR4_VMXE ? "CR4.VMXE" :
				   v->sregs.efer & EFER_SVME ? "EFER.SVME" : NULL;

		if (what)
			return errbuf_set(eb, -ENOTSUP, "snapshot vCPU %u uses nested virtualization "
					  "(%s), whose state a snapshot does not hold", v->id, what);
	}
	return 0;
}
