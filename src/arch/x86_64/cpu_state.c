/*
 * vCPU state for snapshots: KVM's registers, FPU/XSAVE, LAPIC, CPUID, MSRs and pending
 * events to and from struct snap_vcpu. The ioctl order matters in both directions and
 * is explained above x86_vcpu_save and x86_vcpu_restore.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "x86.h"

/* MSR numbers (<asm/msr-index.h> is not part of the uapi headers). */
#define MSR_IA32_TSC            0x00000010u
#define MSR_KVM_WALL_CLOCK      0x00000011u
#define MSR_KVM_SYSTEM_TIME     0x00000012u
#define MSR_IA32_APIC_BASE      0x0000001bu
#define MSR_IA32_PRED_CMD       0x00000049u
#define MSR_MTRR_CAP            0x000000feu
#define MSR_IA32_FLUSH_CMD      0x0000010bu
#define MSR_IA32_SYSENTER_CS    0x00000174u
#define MSR_IA32_SYSENTER_ESP   0x00000175u
#define MSR_IA32_SYSENTER_EIP   0x00000176u
#define MSR_IA32_MISC_ENABLE    0x000001a0u
#define MSR_MTRR_PHYS_FIRST     0x00000200u /* 8 base/mask pairs, KVM's KVM_NR_VAR_MTRR */
#define MSR_MTRR_PHYS_LAST      0x0000020fu
#define MSR_MTRR_FIX_64K_00000  0x00000250u
#define MSR_MTRR_FIX_16K_80000  0x00000258u
#define MSR_MTRR_FIX_16K_A0000  0x00000259u
#define MSR_MTRR_FIX_4K_FIRST   0x00000268u
#define MSR_MTRR_FIX_4K_LAST    0x0000026fu
#define MSR_IA32_CR_PAT         0x00000277u
#define MSR_MTRR_DEF_TYPE       0x000002ffu
#define MSR_VMX_FIRST           0x00000480u /* IA32_VMX_BASIC .. IA32_VMX_VMFUNC */
#define MSR_VMX_LAST            0x00000491u
#define MSR_IA32_TSC_DEADLINE   0x000006e0u
#define MSR_X2APIC_FIRST        0x00000800u
#define MSR_X2APIC_LAST         0x000008ffu
#define MSR_HYPERV_FIRST        0x40000000u
#define MSR_HYPERV_LAST         0x400001ffu
#define MSR_KVM_WALL_CLOCK_NEW  0x4b564d00u
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01u
#define MSR_EFER                0xc0000080u
#define MSR_STAR                0xc0000081u
#define MSR_LSTAR               0xc0000082u
#define MSR_CSTAR               0xc0000083u
#define MSR_SYSCALL_MASK        0xc0000084u
#define MSR_FS_BASE             0xc0000100u
#define MSR_GS_BASE             0xc0000101u
#define MSR_KERNEL_GS_BASE      0xc0000102u

/* KVM_GET/SET_MSRS take fewer than MAX_IO_MSRS (256) entries per call. */
#define MSRS_PER_IOCTL 255u
#define XSAVE_LEGACY_SIZE 4096u /* struct kvm_xsave, what KVM_GET_XSAVE fills */

/*
 * Which MSRs a snapshot holds: what the guest can observe and KVM lets userspace move.
 *
 * The list starts from KVM_GET_MSR_INDEX_LIST (KVM's msrs_to_save + emulated_msrs,
 * i.e. what KVM itself considers migratable on this host; it includes TSC_AUX,
 * SPEC_CTRL, XSS... only when this host supports them), drops what
 * x86_msr_should_save rejects, and adds the MTRRs, which KVM handles without listing
 * them, plus the architectural ones every KVM handles (in case a list omits one).
 * Feature MSRs KVM does not list are not added: some KVMs answer host reads of them
 * but refuse the write on restore (seen here with XSS). Every vCPU save then drops
 * those KVM refuses to read for that vCPU. Typically kept:
 *   IA32_TSC (always first: TSC_DEADLINE holds an absolute TSC value; IA32_TSC's
 *     value is also snap_vcpu.tsc), TSC_ADJUST, TSC_DEADLINE;
 *   kvmclock system time / wall clock, new (0x4b564d01/00) and old (0x12/0x11), async
 *     page faults, steal time, PV EOI, poll control (0x4b564d02..07);
 *   STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, SYSENTER_CS/ESP/EIP;
 *   PAT, MISC_ENABLE, MTRRs (default type, fixed ranges, 8 variable pairs), TSC_AUX,
 *   SPEC_CTRL, XSS, MCG_STATUS/CTL, DEBUGCTL and the LBR records, and the per-vCPU
 *   feature MSRs KVM lets a guest read (ARCH_CAPABILITIES, PERF_CAPABILITIES,
 *   PLATFORM_INFO, UCODE_REV, MISC_FEATURES_ENABLES).
 * Not saved: machine-check banks (ember never sets up MCE banks, KVM resets them the
 * same on both sides) and everything x86_msr_should_save rejects.
 */
static const uint32_t msr_extras[] = {
	MSR_IA32_TSC_DEADLINE, MSR_IA32_CR_PAT, MSR_IA32_MISC_ENABLE, MSR_MTRR_DEF_TYPE,
	MSR_MTRR_FIX_64K_00000, MSR_MTRR_FIX_16K_80000, MSR_MTRR_FIX_16K_A0000,
	MSR_KVM_SYSTEM_TIME_NEW, MSR_KVM_WALL_CLOCK_NEW, MSR_KVM_SYSTEM_TIME, MSR_KVM_WALL_CLOCK,
	MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SYSCALL_MASK, MSR_KERNEL_GS_BASE,
	MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP,
};

bool x86_msr_should_save(uint32_t index)
{
	switch (index) {
	case MSR_IA32_APIC_BASE: /* sregs.apic_base */
	case MSR_EFER:           /* sregs.efer */
	case MSR_FS_BASE:        /* sregs.fs.base */
	case MSR_GS_BASE:        /* sregs.gs.base */
	case MSR_MTRR_CAP:       /* read-only: KVM's MTRR capabilities */
	case MSR_IA32_PRED_CMD:  /* write-only commands: no state to read */
	case MSR_IA32_FLUSH_CMD:
		return false;
	}
	/* x2APIC registers are views of the LAPIC page, which is saved whole. */
	if (index >= MSR_X2APIC_FIRST && index <= MSR_X2APIC_LAST)
		return false;
	/* VMX capability reports: read-only and the host's, not guest state. */
	if (index >= MSR_VMX_FIRST && index <= MSR_VMX_LAST)
		return false;
	/* Hyper-V enlightenments: ember's CPUID offers no Hyper-V interface. */
	if (index >= MSR_HYPERV_FIRST && index <= MSR_HYPERV_LAST)
		return false;
	return true;
}

/* ---- the per-process MSR candidate list ------------------------------------------ */

static pthread_mutex_t msr_list_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t msr_list[SNAP_MAX_MSRS];
static unsigned msr_list_len; /* 0 until built */

static void msr_list_add(uint32_t index)
{
	for (unsigned i = 0; i < msr_list_len; i++)
		if (msr_list[i] == index)
			return;
	if (msr_list_len < ARRAY_SIZE(msr_list))
		msr_list[msr_list_len++] = index;
}

static int msr_list_build(int kvm_fd, struct errbuf *eb)
{
	struct kvm_msr_list *kl;
	uint32_t i;

	kl = calloc(1, sizeof(*kl) + SNAP_MAX_MSRS * sizeof(kl->indices[0]));
	if (!kl)
		return errbuf_set(eb, -ENOMEM, "out of memory for the MSR index list");
	kl->nmsrs = SNAP_MAX_MSRS;
	if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, kl) < 0) {
		int r = -errno;

		free(kl);
		return errbuf_set(eb, r, "KVM_GET_MSR_INDEX_LIST (room for %u): %s", SNAP_MAX_MSRS,
				  strerror(-r));
	}
	msr_list_len = 0;
	msr_list_add(MSR_IA32_TSC);
	for (i = 0; i < kl->nmsrs && i < SNAP_MAX_MSRS; i++)
		if (x86_msr_should_save(kl->indices[i]))
			msr_list_add(kl->indices[i]);
	free(kl);
	for (i = 0; i < ARRAY_SIZE(msr_extras); i++)
		msr_list_add(msr_extras[i]);
	for (i = MSR_MTRR_PHYS_FIRST; i <= MSR_MTRR_PHYS_LAST; i++)
		msr_list_add(i);
	for (i = MSR_MTRR_FIX_4K_FIRST; i <= MSR_MTRR_FIX_4K_LAST; i++)
		msr_list_add(i);
	return 0;
}

/* The candidates, IA32_TSC first. Built once per process; never changes after. */
static int msr_list_get(int kvm_fd, const uint32_t **list, unsigned *n, struct errbuf *eb)
{
	int r = 0;

	pthread_mutex_lock(&msr_list_lock);
	if (!msr_list_len)
		r = msr_list_build(kvm_fd, eb);
	pthread_mutex_unlock(&msr_list_lock);
	*list = msr_list;
	*n = r ? 0 : msr_list_len;
	return r;
}

/*
 * Reads the candidates into out (room for n). KVM_GET_MSRS stops at the first MSR it
 * cannot read for this vCPU and returns how many it read: drop that one, go on after it.
 */
static int msrs_read(struct vcpu *v, const uint32_t *idx, unsigned n, struct kvm_msr_entry *out,
		     unsigned *nout, struct errbuf *eb)
{
	struct kvm_msrs *m = calloc(1, sizeof(*m) + MSRS_PER_IOCTL * sizeof(m->entries[0]));
	unsigned pos = 0, kept = 0;

	if (!m)
		return errbuf_set(eb, -ENOMEM, "out of memory for MSRs");
	while (pos < n) {
		unsigned chunk = n - pos < MSRS_PER_IOCTL ? n - pos : MSRS_PER_IOCTL;
		int got;

		memset(m->entries, 0, chunk * sizeof(m->entries[0]));
		m->nmsrs = chunk;
		for (unsigned i = 0; i < chunk; i++)
			m->entries[i].index = idx[pos + i];
		got = ioctl(v->fd, KVM_GET_MSRS, m);
		if (got < 0 || (unsigned)got > chunk) {
			int r = got < 0 ? -errno : -EIO;

			free(m);
			return errbuf_set(eb, r, "vCPU %u: KVM_GET_MSRS: %s", v->id, strerror(-r));
		}
		memcpy(&out[kept], m->entries, (size_t)got * sizeof(m->entries[0]));
		kept += (unsigned)got;
		pos += (unsigned)got;
		if ((unsigned)got < chunk) {
			pr_debug("vCPU %u: MSR 0x%x not readable, not saved", v->id, idx[pos]);
			pos++;
		}
	}
	free(m);
	*nout = kept;
	return 0;
}

/* Writes entries in chunks; names the first MSR KVM refuses. */
static int msrs_write(struct vcpu *v, const struct kvm_msr_entry *e, unsigned n,
		      struct errbuf *eb)
{
	struct kvm_msrs *m = calloc(1, sizeof(*m) + MSRS_PER_IOCTL * sizeof(m->entries[0]));
	unsigned pos = 0;
	int r = 0;

	if (!m)
		return errbuf_set(eb, -ENOMEM, "out of memory for MSRs");
	while (pos < n) {
		unsigned chunk = n - pos < MSRS_PER_IOCTL ? n - pos : MSRS_PER_IOCTL;
		int set;

		m->nmsrs = chunk;
		memcpy(m->entries, &e[pos], chunk * sizeof(e[0]));
		set = ioctl(v->fd, KVM_SET_MSRS, m);
		if (set < 0) {
			r = errbuf_set(eb, -errno, "vCPU %u: KVM_SET_MSRS: %s", v->id, strerror(errno));
			break;
		}
		if ((unsigned)set < chunk) {
			r = errbuf_set(eb, -EINVAL, "vCPU %u: KVM rejected MSR 0x%x (value 0x%llx) "
				       "from the snapshot; %u of %u MSRs were set", v->id,
				       e[pos + (unsigned)set].index,
				       (unsigned long long)e[pos + (unsigned)set].data,
				       pos + (unsigned)set, n);
			break;
		}
		pos += chunk;
	}
	free(m);
	return r;
}

/* ---- struct conversions ------------------------------------------------------- */

#define REGS_FIELDS(X) X(rax) X(rbx) X(rcx) X(rdx) X(rsi) X(rdi) X(rsp) X(rbp) \
	X(r8) X(r9) X(r10) X(r11) X(r12) X(r13) X(r14) X(r15) X(rip) X(rflags)
#define SEG_FIELDS(X) X(base) X(limit) X(selector) X(type) X(present) X(dpl) X(db) X(s) \
	X(l) X(g) X(avl) X(unusable)
#define SREGS_SEGS(X) X(cs) X(ds) X(es) X(fs) X(gs) X(ss) X(tr) X(ldt)
#define SREGS_SCALARS(X) X(gdt.base) X(gdt.limit) X(idt.base) X(idt.limit) X(cr0) X(cr2) \
	X(cr3) X(cr4) X(cr8) X(efer) X(apic_base) X(interrupt_bitmap[0]) \
	X(interrupt_bitmap[1]) X(interrupt_bitmap[2]) X(interrupt_bitmap[3])
#define EVENTS_FIELDS(X) X(exception.injected) X(exception.nr) X(exception.has_error_code) \
	X(exception.pending) X(exception.error_code) X(interrupt.injected) X(interrupt.nr) \
	X(interrupt.soft) X(interrupt.shadow) X(nmi.injected) X(nmi.pending) X(nmi.masked) \
	X(sipi_vector) X(flags) X(smi.smm) X(smi.pending) X(smi.smm_inside_nmi) \
	X(smi.latched_init) X(exception_has_payload) X(exception_payload)
#define DEBUGREGS_FIELDS(X) X(db[0]) X(db[1]) X(db[2]) X(db[3]) X(dr6) X(dr7) X(flags)

#define COPY(f) d->f = s->f;
#define COPY_SEG_FIELD(f) d->f = s->f;

static void seg_to_snap(struct snap_segment *d, const struct kvm_segment *s)
{
	SEG_FIELDS(COPY_SEG_FIELD)
}

static void seg_from_snap(struct kvm_segment *d, const struct snap_segment *s)
{
	SEG_FIELDS(COPY_SEG_FIELD)
}

static void regs_to_snap(struct snap_regs *d, const struct kvm_regs *s)
{
	REGS_FIELDS(COPY)
}

static void regs_from_snap(struct kvm_regs *d, const struct snap_regs *s)
{
	REGS_FIELDS(COPY)
}

#define SEG_TO_SNAP(seg) seg_to_snap(&d->seg, &s->seg);
#define SEG_FROM_SNAP(seg) seg_from_snap(&d->seg, &s->seg);

static void sregs_to_snap(struct snap_sregs *d, const struct kvm_sregs *s)
{
	SREGS_SEGS(SEG_TO_SNAP)
	SREGS_SCALARS(COPY)
}

static void sregs_from_snap(struct kvm_sregs *d, const struct snap_sregs *s)
{
	SREGS_SEGS(SEG_FROM_SNAP)
	SREGS_SCALARS(COPY)
}

static void events_to_snap(struct snap_events *d, const struct kvm_vcpu_events *s)
{
	EVENTS_FIELDS(COPY)
	d->triple_fault_pending = s->triple_fault.pending;
}

static void events_from_snap(struct kvm_vcpu_events *d, const struct snap_events *s)
{
	EVENTS_FIELDS(COPY)
	d->triple_fault.pending = s->triple_fault_pending;
}

static void debugregs_to_snap(struct snap_debugregs *d, const struct kvm_debugregs *s)
{
	DEBUGREGS_FIELDS(COPY)
}

static void debugregs_from_snap(struct kvm_debugregs *d, const struct snap_debugregs *s)
{
	DEBUGREGS_FIELDS(COPY)
}

#define CPUID_FIELDS(X) X(function) X(index) X(flags) X(eax) X(ebx) X(ecx) X(edx)

static void cpuid_to_snap(struct snap_cpuid_entry *d, const struct kvm_cpuid_entry2 *s)
{
	CPUID_FIELDS(COPY)
}

static void cpuid_from_snap(struct kvm_cpuid_entry2 *d, const struct snap_cpuid_entry *s)
{
	memset(d, 0, sizeof(*d)); /* KVM's padding must be zero */
	CPUID_FIELDS(COPY)
}

static int snap_failed(struct errbuf *eb, int r, unsigned id, const struct snap_err *se)
{
	return errbuf_set(eb, r, "vCPU %u: %s", id, se->msg);
}

/* ---- save ----------------------------------------------------------------------- */

/* The vCPU's state as KVM reports it, before conversion. */
struct vcpu_kvm_state {
	struct kvm_mp_state mp;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	uint8_t *xsave;                 /* kvm.xsave_size bytes */
	struct kvm_xcrs xcrs;
	struct kvm_debugregs dbg;
	struct kvm_lapic_state lapic;
	struct kvm_cpuid2 *cpuid;       /* room for SNAP_MAX_CPUID */
	struct kvm_msr_entry *msrs;     /* room for every candidate */
	unsigned nr_msrs;
	struct kvm_vcpu_events events;
};

#define GET(req, arg, what)                                                              \
	do {                                                                             \
		if (ioctl(v->fd, req, arg) < 0)                                          \
			return errbuf_set(eb, -errno, "vCPU %u: %s: %s", v->id, what,    \
					  strerror(errno));                              \
	} while (0)

/*
 * The save order (Firecracker's, for these reasons):
 *  - MP_STATE first: KVM_GET_MP_STATE runs kvm_apic_accept_events(), which may
 *    process a pending INIT/SIPI and so change registers and LAPIC; everything read
 *    afterwards is consistent with the mp_state saved.
 *  - REGS, SREGS, XSAVE, XCRS, DEBUGREGS: plain reads.
 *  - LAPIC: KVM_GET_LAPIC may itself update the page (TMCCT from the running timer).
 *  - CPUID, MSRs: reads without side effects (MSRs KVM cannot read for this vCPU
 *    are dropped, see msrs_read).
 *  - VCPU_EVENTS last: other GETs can move state into or out of the pending
 *    exception/interrupt/NMI fields it reports.
 */
#define MSR_IA32_XSS 0xda0
#define CPUID_XSAVES_LEAF 0xd /* subleaf 1, EAX bit 3 */

/*
 * XSS is only reachable by a guest whose CPUID has XSAVES; without it the value is
 * unobservable, and some KVMs (this platform's) answer the host's read but refuse the
 * write on restore. Keep it only when the guest can see it.
 */
static void drop_unreachable_msrs(struct vcpu_kvm_state *k)
{
	bool xsaves = false;
	unsigned kept = 0;

	for (uint32_t i = 0; i < k->cpuid->nent; i++)
		if (k->cpuid->entries[i].function == CPUID_XSAVES_LEAF &&
		    k->cpuid->entries[i].index == 1)
			xsaves = k->cpuid->entries[i].eax & (1u << 3);
	for (unsigned i = 0; i < k->nr_msrs; i++)
		if (k->msrs[i].index != MSR_IA32_XSS || xsaves)
			k->msrs[kept++] = k->msrs[i];
	k->nr_msrs = kept;
}

static int kvm_state_read(struct vcpu *v, struct vcpu_kvm_state *k, struct errbuf *eb)
{
	uint32_t xsave_len = (uint32_t)v->vm->kvm.xsave_size;
	const uint32_t *candidates;
	unsigned nr_candidates;
	int r;

	GET(KVM_GET_MP_STATE, &k->mp, "KVM_GET_MP_STATE");
	GET(KVM_GET_REGS, &k->regs, "KVM_GET_REGS");
	GET(KVM_GET_SREGS, &k->sregs, "KVM_GET_SREGS");
	/* KVM_GET_XSAVE fills exactly 4096 bytes; larger areas need KVM_GET_XSAVE2. */
	if (xsave_len > XSAVE_LEGACY_SIZE)
		GET(KVM_GET_XSAVE2, k->xsave, "KVM_GET_XSAVE2");
	else
		GET(KVM_GET_XSAVE, k->xsave, "KVM_GET_XSAVE");
	GET(KVM_GET_XCRS, &k->xcrs, "KVM_GET_XCRS");
	GET(KVM_GET_DEBUGREGS, &k->dbg, "KVM_GET_DEBUGREGS");
	GET(KVM_GET_LAPIC, &k->lapic, "KVM_GET_LAPIC");
	k->cpuid->nent = SNAP_MAX_CPUID;
	GET(KVM_GET_CPUID2, k->cpuid, "KVM_GET_CPUID2");
	r = msr_list_get(v->vm->kvm.dev_fd, &candidates, &nr_candidates, eb);
	if (r)
		return r;
	r = msrs_read(v, candidates, nr_candidates, k->msrs, &k->nr_msrs, eb);
	if (r)
		return r;
	drop_unreachable_msrs(k);
	GET(KVM_GET_VCPU_EVENTS, &k->events, "KVM_GET_VCPU_EVENTS");
	return 0;
}

/*
 * IA32_TSC_DEADLINE reads 0 when the LAPIC timer is not in TSC-deadline mode, when the
 * guest disarmed it, and once it fired. Firecracker found snapshots of the last kind
 * whose timer interrupt had not reached the saved LAPIC: restored as 0, that vCPU never
 * got a timer tick again. Saved as the vCPU's TSC instead, a deadline already due: in
 * TSC-deadline mode the restored timer fires at once (at worst one spurious tick, which
 * guests take), in any other mode KVM ignores the write. The IA32_TSC value is read in
 * the same KVM_GET_MSRS, first.
 */
static void fix_zero_tsc_deadline(struct snap_vcpu *out)
{
	for (uint32_t i = 0; i < out->nr_msrs; i++)
		if (out->msrs[i].index == MSR_IA32_TSC_DEADLINE && out->msrs[i].value == 0)
			out->msrs[i].value = out->tsc;
}

static int kvm_state_to_snap(struct vcpu *v, const struct vcpu_kvm_state *k,
			     struct snap_vcpu *out, struct errbuf *eb)
{
	struct snap_err se = { "" };
	bool have_tsc = false;
	int r;

	out->id = v->id;
	out->mp_state = k->mp.mp_state;
	regs_to_snap(&out->regs, &k->regs);
	sregs_to_snap(&out->sregs, &k->sregs);
	r = snap_vcpu_set_xsave(out, k->xsave, (uint32_t)v->vm->kvm.xsave_size, &se);
	if (r)
		return snap_failed(eb, r, v->id, &se);
	if (k->xcrs.nr_xcrs > SNAP_MAX_XCRS)
		return errbuf_set(eb, -EIO, "vCPU %u: KVM reported %u XCRs", v->id, k->xcrs.nr_xcrs);
	out->nr_xcrs = k->xcrs.nr_xcrs;
	for (uint32_t i = 0; i < k->xcrs.nr_xcrs; i++) {
		out->xcrs[i].xcr = k->xcrs.xcrs[i].xcr;
		out->xcrs[i].value = k->xcrs.xcrs[i].value;
	}
	debugregs_to_snap(&out->debugregs, &k->dbg);
	_Static_assert(sizeof(k->lapic.regs) == SNAP_LAPIC_SIZE, "LAPIC page size");
	memcpy(out->lapic, k->lapic.regs, SNAP_LAPIC_SIZE);
	r = snap_vcpu_set_cpuid(out, k->cpuid->nent, &se);
	if (r)
		return snap_failed(eb, r, v->id, &se);
	for (uint32_t i = 0; i < k->cpuid->nent; i++)
		cpuid_to_snap(&out->cpuid[i], &k->cpuid->entries[i]);
	r = snap_vcpu_set_msrs(out, k->nr_msrs, &se);
	if (r)
		return snap_failed(eb, r, v->id, &se);
	for (unsigned i = 0; i < k->nr_msrs; i++) {
		out->msrs[i].index = k->msrs[i].index;
		out->msrs[i].value = k->msrs[i].data;
		if (k->msrs[i].index == MSR_IA32_TSC) {
			out->tsc = k->msrs[i].data;
			have_tsc = true;
		}
	}
	if (!have_tsc)
		return errbuf_set(eb, -EIO, "vCPU %u: KVM did not report IA32_TSC", v->id);
	fix_zero_tsc_deadline(out);
	events_to_snap(&out->events, &k->events);
	return 0;
}

int x86_vcpu_save(struct vcpu *v, struct snap_vcpu *out, struct errbuf *eb)
{
	struct vcpu_kvm_state *k = calloc(1, sizeof(*k));
	int r;

	if (!k)
		return errbuf_set(eb, -ENOMEM, "out of memory");
	k->xsave = calloc(1, (size_t)v->vm->kvm.xsave_size);
	k->cpuid = calloc(1, sizeof(*k->cpuid) + SNAP_MAX_CPUID * sizeof(k->cpuid->entries[0]));
	k->msrs = calloc(SNAP_MAX_MSRS, sizeof(*k->msrs));
	if (!k->xsave || !k->cpuid || !k->msrs)
		r = errbuf_set(eb, -ENOMEM, "out of memory");
	else
		r = kvm_state_read(v, k, eb);
	if (!r)
		r = kvm_state_to_snap(v, k, out, eb);
	free(k->xsave);
	free(k->cpuid);
	free(k->msrs);
	free(k);
	return r;
}

/* ---- restore -------------------------------------------------------------------- */

#define SET(req, arg, what)                                                              \
	do {                                                                             \
		if (ioctl(v->fd, req, arg) < 0)                                          \
			return errbuf_set(eb, -errno, "vCPU %u: %s: %s", v->id, what,    \
					  strerror(errno));                              \
	} while (0)

static int restore_cpuid(struct vcpu *v, const struct snap_vcpu *in, struct errbuf *eb)
{
	struct kvm_cpuid2 *c;
	int r = 0;

	/* An in-place reset sets the same snapshot's state again: KVM refuses a CPUID
	 * change once a vCPU has run (before Linux 5.19 even an identical one). */
	if (v->cpuid_set)
		return 0;
	if (in->nr_cpuid == 0 || in->nr_cpuid > SNAP_MAX_CPUID || !in->cpuid)
		return errbuf_set(eb, -EINVAL, "vCPU %u: snapshot has %u CPUID entries (1..%u needed)",
				  v->id, in->nr_cpuid, SNAP_MAX_CPUID);
	c = calloc(1, sizeof(*c) + in->nr_cpuid * sizeof(c->entries[0]));
	if (!c)
		return errbuf_set(eb, -ENOMEM, "out of memory");
	c->nent = in->nr_cpuid;
	for (uint32_t i = 0; i < in->nr_cpuid; i++)
		cpuid_from_snap(&c->entries[i], &in->cpuid[i]);
	if (ioctl(v->fd, KVM_SET_CPUID2, c) < 0)
		r = errbuf_set(eb, -errno, "vCPU %u: KVM_SET_CPUID2 (%u entries from the snapshot): %s",
			       v->id, c->nent, strerror(errno));
	v->cpuid_set = r == 0;
	free(c);
	return r;
}

static int restore_xsave(struct vcpu *v, const struct snap_vcpu *in, struct errbuf *eb)
{
	uint32_t host_len = (uint32_t)v->vm->kvm.xsave_size;
	uint8_t *buf;
	int r = 0;

	if (!in->xsave || in->xsave_len < XSAVE_LEGACY_SIZE)
		return errbuf_set(eb, -EINVAL, "vCPU %u: XSAVE area of %u bytes, at least %u needed",
				  v->id, in->xsave_len, XSAVE_LEGACY_SIZE);
	/* KVM_SET_XSAVE reads host_len bytes whatever the snapshot holds: copy into a
	 * buffer of exactly that size, never more than it has room for. */
	if (!x86_xsave_fits(in->xsave, in->xsave_len, host_len))
		return errbuf_set(eb, -EINVAL, "vCPU %u: XSAVE area of %u bytes has state past "
				  "byte %u, the most this host's KVM takes", v->id, in->xsave_len,
				  host_len);
	buf = calloc(1, host_len);
	if (!buf)
		return errbuf_set(eb, -ENOMEM, "out of memory");
	memcpy(buf, in->xsave, in->xsave_len < host_len ? in->xsave_len : host_len);
	if (ioctl(v->fd, KVM_SET_XSAVE, buf) < 0)
		r = errbuf_set(eb, -errno, "vCPU %u: KVM_SET_XSAVE: %s", v->id, strerror(errno));
	free(buf);
	return r;
}

static int restore_xcrs(struct vcpu *v, const struct snap_vcpu *in, struct errbuf *eb)
{
	struct kvm_xcrs x;

	if (in->nr_xcrs > KVM_MAX_XCRS || in->nr_xcrs > SNAP_MAX_XCRS)
		return errbuf_set(eb, -EINVAL, "vCPU %u: %u XCRs in the snapshot, KVM takes %u",
				  v->id, in->nr_xcrs, KVM_MAX_XCRS);
	memset(&x, 0, sizeof(x));
	x.nr_xcrs = in->nr_xcrs;
	for (uint32_t i = 0; i < in->nr_xcrs; i++) {
		x.xcrs[i].xcr = in->xcrs[i].xcr;
		x.xcrs[i].value = in->xcrs[i].value;
	}
	SET(KVM_SET_XCRS, &x, "KVM_SET_XCRS");
	return 0;
}

/*
 * IA32_TSC goes first, from snap_vcpu.tsc (the authority; an IA32_TSC entry in the MSR
 * list is skipped), so that TSC_DEADLINE, an absolute TSC value, is armed against the
 * restored TSC. (This platform's kvm_pvm runs guests on the host TSC and ignores the
 * write; hardware KVM honours it.)
 */
static int restore_msrs(struct vcpu *v, const struct snap_vcpu *in, struct errbuf *eb)
{
	struct kvm_msr_entry *e;
	unsigned n = 0;
	int r;

	if (in->nr_msrs > SNAP_MAX_MSRS || (in->nr_msrs && !in->msrs))
		return errbuf_set(eb, -EINVAL, "vCPU %u: %u MSRs in the snapshot (at most %u)",
				  v->id, in->nr_msrs, SNAP_MAX_MSRS);
	e = calloc(in->nr_msrs + 1u, sizeof(*e));
	if (!e)
		return errbuf_set(eb, -ENOMEM, "out of memory");
	e[n].index = MSR_IA32_TSC;
	e[n++].data = in->tsc;
	for (uint32_t i = 0; i < in->nr_msrs; i++) {
		if (in->msrs[i].index == MSR_IA32_TSC)
			continue;
		e[n].index = in->msrs[i].index;
		e[n++].data = in->msrs[i].value;
	}
	r = msrs_write(v, e, n, eb);
	free(e);
	return r;
}

/*
 * After every vCPU's IA32_TSC was written: one TSC offset for all of them. KVM gives TSC
 * writes one offset only when they arrive within about a second of each other and agree
 * with the time between them (its write matching); a restore slowed down past that (a
 * loaded host, faults on guest memory) leaves the vCPUs' TSCs apart, which a guest sees
 * as unsynchronised TSCs (Linux drops the TSC clocksource, KVM drops kvmclock's stable
 * bit). So, as Cloud Hypervisor does, vCPU 0's offset (KVM_VCPU_TSC_OFFSET in the
 * KVM_VCPU_TSC_CTRL group, Linux 5.16+) is given to every other vCPU: their saved TSCs
 * were read a few microseconds apart from one running clock. Without the attribute the
 * matching is all there is, which a debug line says; a failure is only a warning.
 */
void x86_vcpus_sync_tsc(struct vm *vm)
{
	uint64_t off = 0;
	struct kvm_device_attr a = { .group = KVM_VCPU_TSC_CTRL, .attr = KVM_VCPU_TSC_OFFSET };

	if (vm->nr_vcpus < 2)
		return;
	if (ioctl(vm->vcpus[0].fd, KVM_HAS_DEVICE_ATTR, &a) < 0) {
		pr_debug("KVM has no KVM_VCPU_TSC_OFFSET (%s): the vCPUs' TSCs are left to KVM's "
			 "matching of their IA32_TSC writes", strerror(errno));
		return;
	}
	a.addr = (uint64_t)(uintptr_t)&off;
	if (ioctl(vm->vcpus[0].fd, KVM_GET_DEVICE_ATTR, &a) < 0) {
		pr_warn("vCPU 0: KVM_GET_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET): %s; the vCPUs' TSCs are "
			"left to KVM's matching", strerror(errno));
		return;
	}
	for (unsigned i = 1; i < vm->nr_vcpus; i++)
		if (ioctl(vm->vcpus[i].fd, KVM_SET_DEVICE_ATTR, &a) < 0)
			pr_warn("vCPU %u: KVM_SET_DEVICE_ATTR(KVM_VCPU_TSC_OFFSET): %s", i,
				strerror(errno));
}

int x86_vcpu_set_tsc_khz(struct vcpu *v, uint32_t khz, struct errbuf *eb)
{
	SET(KVM_SET_TSC_KHZ, (unsigned long)khz, "KVM_SET_TSC_KHZ");
	return 0;
}

/*
 * The restore order (Firecracker's, for these reasons):
 *  - CPUID2 first: KVM derives from it which MSRs exist, which XSAVE components and
 *    XCR0 bits are valid, and the CR4 bits SET_SREGS accepts.
 *  - MP_STATE, then REGS (SET_REGS drops a pending exception, which VCPU_EVENTS
 *    restores at the end), SREGS (also carries APIC base: x2APIC mode decides how
 *    SET_LAPIC reads the ID register), XSAVE, XCRS, DEBUGREGS.
 *  - LAPIC after SREGS and before the MSRs: TSC_DEADLINE is only accepted and armed
 *    when LVTT is already in TSC-deadline mode; SET_LAPIC re-arms the one-shot and
 *    periodic timer from the saved current count.
 *  - MSRs, IA32_TSC first (restore_msrs).
 *  - VCPU_EVENTS last: the earlier SETs may clear pending events.
 */
int x86_vcpu_restore(struct vcpu *v, const struct snap_vcpu *in, struct errbuf *eb)
{
	struct kvm_mp_state mp = { .mp_state = in->mp_state };
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_debugregs dbg;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events events;
	int r;

	if (in->id != v->id)
		return errbuf_set(eb, -EINVAL, "snapshot vCPU %u cannot be restored into vCPU %u "
				  "(APIC ids would not match)", in->id, v->id);
	r = restore_cpuid(v, in, eb);
	if (r)
		return r;
	SET(KVM_SET_MP_STATE, &mp, "KVM_SET_MP_STATE");
	memset(&regs, 0, sizeof(regs));
	regs_from_snap(&regs, &in->regs);
	SET(KVM_SET_REGS, &regs, "KVM_SET_REGS");
	memset(&sregs, 0, sizeof(sregs));
	sregs_from_snap(&sregs, &in->sregs);
	SET(KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
	r = restore_xsave(v, in, eb);
	if (!r)
		r = restore_xcrs(v, in, eb);
	if (r)
		return r;
	memset(&dbg, 0, sizeof(dbg));
	debugregs_from_snap(&dbg, &in->debugregs);
	SET(KVM_SET_DEBUGREGS, &dbg, "KVM_SET_DEBUGREGS");
	memcpy(lapic.regs, in->lapic, SNAP_LAPIC_SIZE);
	SET(KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC");
	r = restore_msrs(v, in, eb);
	if (r)
		return r;
	memset(&events, 0, sizeof(events));
	events_from_snap(&events, &in->events);
	SET(KVM_SET_VCPU_EVENTS, &events, "KVM_SET_VCPU_EVENTS");
	return 0;
}
