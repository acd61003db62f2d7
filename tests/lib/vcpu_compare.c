/*
 * Field-by-field comparison of a vCPU's state before a snapshot and after restoring it,
 * shared by the in-process snapshot tests (tests/unit/test_cpu_state.c,
 * tests/integration/test_snapshot_state.c). Everything must survive unchanged except
 * what runs on by itself: the TSC (never backwards), the LAPIC timer's current count, and
 * an IA32_TSC_DEADLINE saved as the TSC.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "snapfmt.h"
#include "testlib.h"

#define MSR_TSC     0x10u
#define MSR_TSC_DEADLINE 0x6e0u
#define LAPIC_TMCCT 0x390 /* timer current count: counts down in real time */

static void same_u64(const char *path, unsigned id, uint64_t a, uint64_t b)
{
	cr_expect_eq(a, b, "vCPU %u %s: saved 0x%llx, after restore 0x%llx", id, path,
		     (unsigned long long)a, (unsigned long long)b);
}

#define SAME(f) same_u64(#f, a->id, (uint64_t)a->f, (uint64_t)b->f);
#define SAME_SEG(seg)                                                                  \
	SAME(sregs.seg.base) SAME(sregs.seg.limit) SAME(sregs.seg.selector)              \
	SAME(sregs.seg.type) SAME(sregs.seg.present) SAME(sregs.seg.dpl) SAME(sregs.seg.db) \
	SAME(sregs.seg.s) SAME(sregs.seg.l) SAME(sregs.seg.g) SAME(sregs.seg.avl)         \
	SAME(sregs.seg.unusable)

static void same_bytes(const char *what, unsigned id, const uint8_t *a, const uint8_t *b,
		       size_t len, size_t skip_off, size_t skip_len)
{
	for (size_t i = 0; i < len; i++) {
		if (i >= skip_off && i < skip_off + skip_len)
			continue;
		if (a[i] != b[i]) {
			cr_expect_fail("vCPU %u %s: first difference at byte 0x%zx (0x%02x vs 0x%02x)",
				       id, what, i, a[i], b[i]);
			return;
		}
	}
}

void snapt_compare_vcpu(const struct snap_vcpu *a, const struct snap_vcpu *b)
{
	SAME(id) SAME(mp_state)
	SAME(regs.rax) SAME(regs.rbx) SAME(regs.rcx) SAME(regs.rdx) SAME(regs.rsi) SAME(regs.rdi)
	SAME(regs.rsp) SAME(regs.rbp) SAME(regs.r8) SAME(regs.r9) SAME(regs.r10) SAME(regs.r11)
	SAME(regs.r12) SAME(regs.r13) SAME(regs.r14) SAME(regs.r15) SAME(regs.rip)
	SAME(regs.rflags)
	SAME_SEG(cs) SAME_SEG(ds) SAME_SEG(es) SAME_SEG(fs) SAME_SEG(gs) SAME_SEG(ss)
	SAME_SEG(tr) SAME_SEG(ldt)
	SAME(sregs.gdt.base) SAME(sregs.gdt.limit) SAME(sregs.idt.base) SAME(sregs.idt.limit)
	SAME(sregs.cr0) SAME(sregs.cr2) SAME(sregs.cr3) SAME(sregs.cr4) SAME(sregs.cr8)
	SAME(sregs.efer) SAME(sregs.apic_base) SAME(sregs.interrupt_bitmap[0])
	SAME(sregs.interrupt_bitmap[1]) SAME(sregs.interrupt_bitmap[2])
	SAME(sregs.interrupt_bitmap[3])
	SAME(xsave_len)
	if (a->xsave_len == b->xsave_len)
		same_bytes("xsave", a->id, a->xsave, b->xsave, a->xsave_len, 0, 0);
	SAME(nr_xcrs)
	for (uint32_t i = 0; i < a->nr_xcrs && i < b->nr_xcrs; i++) {
		cr_expect_eq(a->xcrs[i].xcr, b->xcrs[i].xcr, "vCPU %u xcrs[%u].xcr", a->id, i);
		cr_expect_eq(a->xcrs[i].value, b->xcrs[i].value, "vCPU %u XCR%u: 0x%llx vs 0x%llx",
			     a->id, a->xcrs[i].xcr, (unsigned long long)a->xcrs[i].value,
			     (unsigned long long)b->xcrs[i].value);
	}
	same_bytes("lapic", a->id, a->lapic, b->lapic, SNAP_LAPIC_SIZE, LAPIC_TMCCT, 4);
	SAME(nr_msrs)
	for (uint32_t i = 0; i < a->nr_msrs && i < b->nr_msrs; i++) {
		cr_expect_eq(a->msrs[i].index, b->msrs[i].index, "vCPU %u msrs[%u]: MSR 0x%x vs 0x%x",
			     a->id, i, a->msrs[i].index, b->msrs[i].index);
		if (a->msrs[i].index == MSR_TSC)
			cr_expect_geq(b->msrs[i].value, a->msrs[i].value, "vCPU %u MSR TSC went back",
				      a->id);
		else if (a->msrs[i].index == MSR_TSC_DEADLINE && a->msrs[i].value == a->tsc)
			/* no deadline pending, saved as the TSC then (cpu_state.c): again the
			 * TSC, or still that deadline if KVM has not taken it as due yet */
			cr_expect(b->msrs[i].value == b->tsc || b->msrs[i].value == a->msrs[i].value,
				  "vCPU %u IA32_TSC_DEADLINE: saved as the TSC 0x%llx, after restore "
				  "0x%llx, TSC 0x%llx", a->id, (unsigned long long)a->msrs[i].value,
				  (unsigned long long)b->msrs[i].value, (unsigned long long)b->tsc);
		else
			cr_expect_eq(a->msrs[i].value, b->msrs[i].value,
				     "vCPU %u MSR 0x%x: saved 0x%llx, after restore 0x%llx", a->id,
				     a->msrs[i].index, (unsigned long long)a->msrs[i].value,
				     (unsigned long long)b->msrs[i].value);
	}
	SAME(events.exception.injected) SAME(events.exception.nr)
	SAME(events.exception.has_error_code) SAME(events.exception.pending)
	SAME(events.exception.error_code) SAME(events.interrupt.injected)
	SAME(events.interrupt.nr) SAME(events.interrupt.soft) SAME(events.interrupt.shadow)
	SAME(events.nmi.injected) SAME(events.nmi.pending) SAME(events.nmi.masked)
	SAME(events.sipi_vector) SAME(events.flags) SAME(events.smi.smm) SAME(events.smi.pending)
	SAME(events.smi.smm_inside_nmi) SAME(events.smi.latched_init)
	SAME(events.triple_fault_pending) SAME(events.exception_has_payload)
	SAME(events.exception_payload)
	SAME(debugregs.db[0]) SAME(debugregs.db[1]) SAME(debugregs.db[2]) SAME(debugregs.db[3])
	SAME(debugregs.dr6) SAME(debugregs.dr7) SAME(debugregs.flags)
	SAME(nr_cpuid)
	for (uint32_t i = 0; i < a->nr_cpuid && i < b->nr_cpuid; i++)
		cr_expect_eq(memcmp(&a->cpuid[i], &b->cpuid[i], sizeof(a->cpuid[i])), 0,
			     "vCPU %u CPUID entry %u (leaf 0x%x.%u) differs", a->id, i,
			     a->cpuid[i].function, a->cpuid[i].index);
	/* The TSC restarts from the saved value and moves on. */
	cr_expect_geq(b->tsc, a->tsc, "vCPU %u TSC went back: 0x%llx -> 0x%llx", a->id,
		      (unsigned long long)a->tsc, (unsigned long long)b->tsc);
}
