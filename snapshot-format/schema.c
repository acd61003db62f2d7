/*
 * The state schema: every key of state.msgpack, its C location, type and range.
 * Encode, decode and dump all walk these tables; FORMAT.md documents the same keys
 * in the same order. Adding an optional key = one row here + a minor bump.
 */
#include "snapfmt_int.h"

#define MEMBER_SIZE(T, m) sizeof(((T *)0)->m)

#define F_U(T, m, fl) \
	{ .key = #m, .klen = sizeof(#m) - 1, .kind = SF_UINT, .width = MEMBER_SIZE(T, m), .flags = (fl), .off = offsetof(T, m) }
#define F_S64(T, m) \
	{ .key = #m, .klen = sizeof(#m) - 1, .kind = SF_SINT, .width = 8, .off = offsetof(T, m) }
#define F_STR(T, m, fl) \
	{ .key = #m, .klen = sizeof(#m) - 1, .kind = SF_STR, .flags = (fl), .off = offsetof(T, m), .max = MEMBER_SIZE(T, m) - 1 }
#define F_ENUM(T, m, nm, cnt) \
	{ .key = #m, .klen = sizeof(#m) - 1, .kind = SF_ENUM, .width = 4, .off = offsetof(T, m), .max = (cnt), .names = (nm) }
#define F_STRUCT(T, m, s) \
	{ .key = #m, .klen = sizeof(#m) - 1, .kind = SF_STRUCT, .off = offsetof(T, m), .sub = &(s) }
#define F_UINTS(T, m, fl) \
	{ .key = #m, .klen = sizeof(#m) - 1, .kind = SF_UINTS, .width = MEMBER_SIZE(T, m[0]), .flags = (fl), .off = offsetof(T, m), \
	  .max = MEMBER_SIZE(T, m) / MEMBER_SIZE(T, m[0]) }
#define F_STRUCTS(T, m, s) \
	{ .key = #m, .klen = sizeof(#m) - 1, .kind = SF_STRUCTS, .off = offsetof(T, m), .elem = MEMBER_SIZE(T, m[0]), \
	  .max = MEMBER_SIZE(T, m) / MEMBER_SIZE(T, m[0]), .sub = &(s) }
#define F_VSTRUCTS(T, m, nr, s) \
	{ .key = #m, .klen = sizeof(#m) - 1, .kind = SF_VSTRUCTS, .off = offsetof(T, m), .off_n = offsetof(T, nr), \
	  .elem = MEMBER_SIZE(T, m[0]), .max = MEMBER_SIZE(T, m) / MEMBER_SIZE(T, m[0]), .sub = &(s) }
#define F_HSTRUCTS(T, m, nr, ET, lim, fl, s) \
	{ .key = #m, .klen = sizeof(#m) - 1, .kind = SF_HSTRUCTS, .flags = (fl), .off = offsetof(T, m), .off_n = offsetof(T, nr), \
	  .elem = sizeof(ET), .max = (lim), .sub = &(s) }
#define F_BLOB(T, m) \
	{ .key = #m, .klen = sizeof(#m) - 1, .kind = SF_BLOB, .off = offsetof(T, m), .min = MEMBER_SIZE(T, m), .max = MEMBER_SIZE(T, m) }
#define F_HBLOB(T, m, len, lo, hi) \
	{ .key = #m, .klen = sizeof(#m) - 1, .kind = SF_HBLOB, .off = offsetof(T, m), .off_n = offsetof(T, len), .min = (lo), .max = (hi) }

#define SCHEMA(nm, arr) \
	static const struct sschema nm = { #nm, arr, sizeof(arr) / sizeof(arr[0]) }

#define X SFF_HEX

const char *const snap_encoding_names[] = { "raw", "lz4" };
const char *const snap_kind_names[] = { "full", "diff" };

/* ---- header ---- */
static const struct sfield cpu_f[] = {
	F_STR(struct snap_cpu_info, vendor, 0),
	F_U(struct snap_cpu_info, family, 0),
	F_U(struct snap_cpu_info, model, 0),
	F_U(struct snap_cpu_info, stepping, 0),
};
SCHEMA(cpu_s, cpu_f);

static const struct sfield header_f[] = {
	F_U(struct snap_header, major, 0),
	F_U(struct snap_header, minor, 0),
	F_STR(struct snap_header, ember_version, 0),
	F_STR(struct snap_header, arch, 0),
	F_STRUCT(struct snap_header, cpu, cpu_s),
	F_U(struct snap_header, created, 0),
	F_STR(struct snap_header, id, 0),
	F_STR(struct snap_header, parent, SFF_OPT),
};
SCHEMA(header_s, header_f);

/* ---- vm ---- */
static const struct sfield region_f[] = {
	F_U(struct snap_region, gpa, X),
	F_U(struct snap_region, size, X),
	F_U(struct snap_region, file_offset, X),
};
SCHEMA(region_s, region_f);

static const struct sfield clock_f[] = {
	F_U(struct snap_clock, clock, 0),
	F_U(struct snap_clock, flags, X),
	F_U(struct snap_clock, realtime, 0),
	F_U(struct snap_clock, host_tsc, 0),
};
SCHEMA(clock_s, clock_f);

#define PIC(m) F_U(struct snap_pic, m, X)
static const struct sfield pic_f[] = {
	PIC(last_irr), PIC(irr), PIC(imr), PIC(isr), PIC(priority_add), PIC(irq_base),
	PIC(read_reg_select), PIC(poll), PIC(special_mask), PIC(init_state), PIC(auto_eoi),
	PIC(rotate_on_auto_eoi), PIC(special_fully_nested_mode), PIC(init4), PIC(elcr),
	PIC(elcr_mask),
};
SCHEMA(pic_s, pic_f);

static const struct sfield ioapic_f[] = {
	F_U(struct snap_ioapic, base_address, X),
	F_U(struct snap_ioapic, ioregsel, X),
	F_U(struct snap_ioapic, id, X),
	F_U(struct snap_ioapic, irr, X),
	F_UINTS(struct snap_ioapic, redirtbl, X),
};
SCHEMA(ioapic_s, ioapic_f);

#define PCH(m, fl) F_U(struct snap_pit_channel, m, fl)
static const struct sfield pit_channel_f[] = {
	PCH(count, X), PCH(latched_count, X), PCH(count_latched, X), PCH(status_latched, X),
	PCH(status, X), PCH(read_state, X), PCH(write_state, X), PCH(write_latch, X),
	PCH(rw_mode, X), PCH(mode, X), PCH(bcd, X), PCH(gate, X),
	F_S64(struct snap_pit_channel, count_load_time),
};
SCHEMA(pit_channel_s, pit_channel_f);

static const struct sfield pit_f[] = {
	F_U(struct snap_pit, flags, X),
	F_STRUCTS(struct snap_pit, channels, pit_channel_s),
};
SCHEMA(pit_s, pit_f);

static const struct sfield vm_f[] = {
	F_VSTRUCTS(struct snap_vm, regions, nr_regions, region_s),
	F_STRUCT(struct snap_vm, clock, clock_s),
	F_STRUCT(struct snap_vm, pic_master, pic_s),
	F_STRUCT(struct snap_vm, pic_slave, pic_s),
	F_STRUCT(struct snap_vm, ioapic, ioapic_s),
	F_STRUCT(struct snap_vm, pit, pit_s),
	F_U(struct snap_vm, tsc_khz, 0),
};
SCHEMA(vm_s, vm_f);

/* ---- vcpus ---- */
#define REG(m) F_U(struct snap_regs, m, X)
static const struct sfield regs_f[] = {
	REG(rax), REG(rbx), REG(rcx), REG(rdx), REG(rsi), REG(rdi), REG(rsp), REG(rbp),
	REG(r8), REG(r9), REG(r10), REG(r11), REG(r12), REG(r13), REG(r14), REG(r15),
	REG(rip), REG(rflags),
};
SCHEMA(regs_s, regs_f);

#define SEG(m, fl) F_U(struct snap_segment, m, fl)
static const struct sfield segment_f[] = {
	SEG(base, X), SEG(limit, X), SEG(selector, X), SEG(type, X), SEG(present, 0),
	SEG(dpl, 0), SEG(db, 0), SEG(s, 0), SEG(l, 0), SEG(g, 0), SEG(avl, 0), SEG(unusable, 0),
};
SCHEMA(segment_s, segment_f);

static const struct sfield dtable_f[] = {
	F_U(struct snap_dtable, base, X),
	F_U(struct snap_dtable, limit, X),
};
SCHEMA(dtable_s, dtable_f);

#define SR_SEG(m) F_STRUCT(struct snap_sregs, m, segment_s)
#define SR(m) F_U(struct snap_sregs, m, X)
static const struct sfield sregs_f[] = {
	SR_SEG(cs), SR_SEG(ds), SR_SEG(es), SR_SEG(fs), SR_SEG(gs), SR_SEG(ss), SR_SEG(tr),
	SR_SEG(ldt),
	F_STRUCT(struct snap_sregs, gdt, dtable_s),
	F_STRUCT(struct snap_sregs, idt, dtable_s),
	SR(cr0), SR(cr2), SR(cr3), SR(cr4), SR(cr8), SR(efer), SR(apic_base),
	F_UINTS(struct snap_sregs, interrupt_bitmap, X),
};
SCHEMA(sregs_s, sregs_f);

static const struct sfield xcr_f[] = {
	F_U(struct snap_xcr, xcr, X),
	F_U(struct snap_xcr, value, X),
};
SCHEMA(xcr_s, xcr_f);

static const struct sfield msr_f[] = {
	F_U(struct snap_msr, index, X),
	F_U(struct snap_msr, value, X),
};
SCHEMA(msr_s, msr_f);

static const struct sfield ev_exception_f[] = {
	F_U(struct snap_ev_exception, injected, 0),
	F_U(struct snap_ev_exception, nr, 0),
	F_U(struct snap_ev_exception, has_error_code, 0),
	F_U(struct snap_ev_exception, pending, 0),
	F_U(struct snap_ev_exception, error_code, X),
};
SCHEMA(ev_exception_s, ev_exception_f);

static const struct sfield ev_interrupt_f[] = {
	F_U(struct snap_ev_interrupt, injected, 0),
	F_U(struct snap_ev_interrupt, nr, 0),
	F_U(struct snap_ev_interrupt, soft, 0),
	F_U(struct snap_ev_interrupt, shadow, 0),
};
SCHEMA(ev_interrupt_s, ev_interrupt_f);

static const struct sfield ev_nmi_f[] = {
	F_U(struct snap_ev_nmi, injected, 0),
	F_U(struct snap_ev_nmi, pending, 0),
	F_U(struct snap_ev_nmi, masked, 0),
};
SCHEMA(ev_nmi_s, ev_nmi_f);

static const struct sfield ev_smi_f[] = {
	F_U(struct snap_ev_smi, smm, 0),
	F_U(struct snap_ev_smi, pending, 0),
	F_U(struct snap_ev_smi, smm_inside_nmi, 0),
	F_U(struct snap_ev_smi, latched_init, 0),
};
SCHEMA(ev_smi_s, ev_smi_f);

static const struct sfield events_f[] = {
	F_STRUCT(struct snap_events, exception, ev_exception_s),
	F_STRUCT(struct snap_events, interrupt, ev_interrupt_s),
	F_STRUCT(struct snap_events, nmi, ev_nmi_s),
	F_U(struct snap_events, sipi_vector, X),
	F_U(struct snap_events, flags, X),
	F_STRUCT(struct snap_events, smi, ev_smi_s),
	F_U(struct snap_events, triple_fault_pending, 0),
	F_U(struct snap_events, exception_has_payload, 0),
	F_U(struct snap_events, exception_payload, X),
};
SCHEMA(events_s, events_f);

static const struct sfield debugregs_f[] = {
	F_UINTS(struct snap_debugregs, db, X),
	F_U(struct snap_debugregs, dr6, X),
	F_U(struct snap_debugregs, dr7, X),
	F_U(struct snap_debugregs, flags, X),
};
SCHEMA(debugregs_s, debugregs_f);

#define CPUID(m) F_U(struct snap_cpuid_entry, m, X)
static const struct sfield cpuid_f[] = {
	CPUID(function), CPUID(index), CPUID(flags), CPUID(eax), CPUID(ebx), CPUID(ecx), CPUID(edx),
};
SCHEMA(cpuid_s, cpuid_f);

static const struct sfield vcpu_f[] = {
	F_U(struct snap_vcpu, id, 0),
	F_STRUCT(struct snap_vcpu, regs, regs_s),
	F_STRUCT(struct snap_vcpu, sregs, sregs_s),
	F_HBLOB(struct snap_vcpu, xsave, xsave_len, SNAP_XSAVE_MIN, SNAP_XSAVE_MAX),
	F_VSTRUCTS(struct snap_vcpu, xcrs, nr_xcrs, xcr_s),
	F_BLOB(struct snap_vcpu, lapic),
	F_HSTRUCTS(struct snap_vcpu, msrs, nr_msrs, struct snap_msr, SNAP_MAX_MSRS, 0, msr_s),
	F_STRUCT(struct snap_vcpu, events, events_s),
	F_U(struct snap_vcpu, mp_state, 0),
	F_STRUCT(struct snap_vcpu, debugregs, debugregs_s),
	F_HSTRUCTS(struct snap_vcpu, cpuid, nr_cpuid, struct snap_cpuid_entry, SNAP_MAX_CPUID, 0, cpuid_s),
	F_U(struct snap_vcpu, tsc, 0),
};
SCHEMA(vcpu_s, vcpu_f);

/* ---- memory ---- */
static const struct sfield range_f[] = {
	F_U(struct snap_range, first, X),
	F_U(struct snap_range, count, 0),
};
SCHEMA(range_s, range_f);

static const struct sfield anchor_f[] = {
	F_U(struct snap_anchor, page, X),
	F_U(struct snap_anchor, crc32c, X),
};
SCHEMA(anchor_s, anchor_f);

static const struct sfield memory_f[] = {
	F_STR(struct snap_memory, file, 0),
	F_U(struct snap_memory, size, X),
	F_U(struct snap_memory, page_size, 0),
	F_ENUM(struct snap_memory, encoding, snap_encoding_names, SNAP_NR_ENCODINGS),
	F_ENUM(struct snap_memory, kind, snap_kind_names, SNAP_NR_KINDS),
	F_HSTRUCTS(struct snap_memory, ranges, nr_ranges, struct snap_range, SNAP_MAX_RANGES, SFF_OPT,
		   range_s),
	/* 1.1, lz4 only */
	F_U(struct snap_memory, chunk_size, SFF_OPT | SFF_OMITZ),
	F_STR(struct snap_memory, index_file, SFF_OPT | SFF_OMITZ),
	F_U(struct snap_memory, compressed_size, SFF_OPT | SFF_OMITZ),
	/* 1.3, memory digests */
	F_U(struct snap_memory, digest_block, SFF_OPT | SFF_OMITZ),
	{ .key = "digests", .klen = 7, .kind = SF_HBLOB, .flags = SFF_OPT | SFF_OMITZ,
	  .off = offsetof(struct snap_memory, digests), .off_n = offsetof(struct snap_memory, digests_len),
	  .min = 0, .max = SNAP_DIGESTS_MAX },
	F_HSTRUCTS(struct snap_memory, anchors, nr_anchors, struct snap_anchor, SNAP_MAX_ANCHORS,
		   SFF_OPT | SFF_OMITZ, anchor_s),
};
SCHEMA(memory_s, memory_f);

/* ---- root ---- */
static const struct sfield root_f[] = {
	F_STRUCT(struct snap_state, header, header_s),
	F_STRUCT(struct snap_state, vm, vm_s),
	F_HSTRUCTS(struct snap_state, vcpus, nr_vcpus, struct snap_vcpu, SNAP_MAX_VCPUS, 0, vcpu_s),
	{ .key = "devices", .klen = 7, .kind = SF_DEVICES, .off = offsetof(struct snap_state, devices),
	  .off_n = offsetof(struct snap_state, nr_devices), .max = SNAP_MAX_DEVICES },
	F_STRUCT(struct snap_state, memory, memory_s),
};
const struct sschema snap_schema_root = { "root", root_f, sizeof(root_f) / sizeof(root_f[0]) };
