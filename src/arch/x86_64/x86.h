/*
 * ember x86-64 layer: the guest-physical boot layout, the Linux 64-bit boot protocol
 * loader, CPUID normalisation, initial MSRs, the MP table, and vCPU/VM state.
 */
#ifndef EMBER_X86_H
#define EMBER_X86_H

#include <linux/kvm.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "../../vmm.h"

/*
 * Guest-physical layout of what ember writes before the first instruction.
 * Guest images (ELF PT_LOAD segments, the kernel, the initrd) must not overlap
 * [BOOT_RESERVED_LO_START, BOOT_RESERVED_LO_END) or [EBDA_START, HIGH_MEM_START).
 * [BOOT_RESERVED_LO_END, EBDA_START) is free low RAM (e.g. an AP trampoline).
 */
#define BOOT_GDT_ADDR          0x500ull    /* 5 entries: null, null, code64 0x10, data 0x18, tss 0x20 */
#define BOOT_IDT_ADDR          0x540ull    /* empty IDT, limit 0 */
#define BOOT_PARAMS_ADDR       0x7000ull   /* struct boot_params (zero page) */
#define BOOT_STACK_TOP         0x8ff0ull   /* rsp at entry */
#define BOOT_PML4_ADDR         0x9000ull
#define BOOT_PDPT_ADDR         0xa000ull
#define BOOT_PD_ADDR           0xb000ull   /* 4 pages: identity map of 0..4 GiB, 2 MiB pages */
#define BOOT_PD_PAGES          4
#define BOOT_CMDLINE_ADDR      0x20000ull
#define BOOT_CMDLINE_MAX       0x10000ull  /* our own hard limit, incl. NUL */
#define BOOT_RESERVED_LO_START 0x0ull
#define BOOT_RESERVED_LO_END   0x30000ull
#define EBDA_START             0x9fc00ull  /* MP table lives here */
#define ACPI_RSDP_ADDR         0xe0000ull  /* RSDP, then the other ACPI tables (acpi.c) */
#define ACPI_TABLES_END        0xe4000ull
#define ACPI_VMGENID_ADDR      0xe4000ull  /* one page; the 16-byte VMGenID at its start */
#define ACPI_GED_GSI           23u         /* the GED's interrupt: VMGenID changed */
#define HIGH_MEM_START         0x100000ull
#define KERNEL_DEFAULT_ADDR    0x1000000ull
/* KVM's TSS (3 pages) and identity-map page: in the MMIO hole, never RAM. */
#define KVM_TSS_ADDR           0xfffbd000ull
#define KVM_IDENTITY_MAP_ADDR  0xfffbc000ull

#define BOOT_CS 0x10
#define BOOT_DS 0x18
#define BOOT_TSS 0x20

/* ---- loader.c: Linux x86-64 boot protocol ---------------------------------- */
enum kernel_kind { KERNEL_ELF, KERNEL_BZIMAGE, KERNEL_BZIMAGE_LZ4 };

struct load_args {
	const uint8_t *kernel;  /* whole image file */
	size_t kernel_len;
	const uint8_t *initrd;  /* may be NULL */
	size_t initrd_len;
	const char *cmdline;    /* may be NULL */
};

struct boot_info {
	enum kernel_kind kind;
	uint64_t entry;          /* 64-bit entry point (GPA) */
	uint64_t kernel_start;   /* lowest GPA written for the kernel */
	uint64_t kernel_end;     /* one past the highest (incl. init_size / bss) */
	uint64_t initrd_addr, initrd_size;
	uint64_t cmdline_addr;
	uint32_t cmdline_size;   /* bytes incl. NUL */
};

/*
 * Loads kernel, initrd and cmdline into guest memory and writes boot_params, the
 * e820 map, page tables and GDT. Input buffers are untrusted: every malformed image
 * returns -EINVAL (or -E2BIG / -ENOMEM for size problems) with a message in eb.
 */
int loader_load(struct guest_mem *m, const struct load_args *a, struct boot_info *bi,
		struct errbuf *eb);
/* Same, reading the files (mapped read-only). */
int loader_load_files(struct guest_mem *m, const char *kernel, const char *initrd,
		      const char *cmdline, struct boot_info *bi, struct errbuf *eb);

/* boot.c: page tables, GDT and the BSP's 64-bit entry register state. */
int boot_write_tables(struct guest_mem *m, struct errbuf *eb);
void boot_entry_regs(struct kvm_regs *regs, uint64_t entry);
void boot_entry_sregs(struct kvm_sregs *sregs);

/* ---- cpuid.c ----------------------------------------------------------------- */
#define CPUID_MAX_ENTRIES 256
/* Allocates and fills KVM_GET_SUPPORTED_CPUID. Free with free(). */
int cpuid_get_supported(int kvm_fd, struct kvm_cpuid2 **out, struct errbuf *eb);
/*
 * Returns a per-vCPU copy of the supported table, normalised for vCPU `id` of `nr`:
 * APIC ids, topology leaves (1, 4, 0xB, 0x1F, 0x8000001E, 0x80000008), hypervisor
 * bit, KVM paravirt leaves 0x40000000/1. Pure: no ioctls, unit-testable.
 */
int cpuid_normalize(const struct kvm_cpuid2 *supported, unsigned id, unsigned nr,
		    struct kvm_cpuid2 **out, struct errbuf *eb);
/* Looks up (function, index); NULL when absent. */
struct kvm_cpuid_entry2 *cpuid_find(struct kvm_cpuid2 *c, uint32_t function, uint32_t index);

/* ---- msr.c ------------------------------------------------------------------- */
/* Fills the initial MSR values for a fresh vCPU; returns the count written. */
unsigned msrs_initial(struct kvm_msr_entry *out, unsigned max);

/* ---- mptable.c --------------------------------------------------------------- */
/* Writes an Intel MP 1.4 floating pointer + config table at EBDA_START. */
int mptable_write(struct guest_mem *m, unsigned nr_vcpus, struct errbuf *eb);

/* ---- aml.c: a small AML writer (ACPI 6.3 chapter 20) ------------------------- */
#define AML_MAX_DEPTH 8
struct aml {
	uint8_t *buf;
	size_t len, cap;
	size_t open[AML_MAX_DEPTH]; /* where each open PkgLength starts */
	unsigned depth;
	bool bad;                   /* full, bad name or unbalanced: aml_finish fails */
};
void aml_init(struct aml *a, uint8_t *buf, size_t cap);
void aml_bytes(struct aml *a, const void *p, size_t n);
/* "\\_SB_.VGEN", "_HID": optional root, 4-character segments joined by '.' */
void aml_namestring(struct aml *a, const char *path);
void aml_integer(struct aml *a, uint64_t v); /* the shortest encoding */
void aml_dword(struct aml *a, uint32_t v);   /* always DWordConst */
void aml_string(struct aml *a, const char *s);
void aml_eisaid(struct aml *a, const char *id); /* "PNP0501" */
void aml_name(struct aml *a, const char *name); /* Name(name, <the object written next>) */
/* Opened objects: their contents follow, aml_end closes the innermost. */
void aml_scope(struct aml *a, const char *name);
void aml_device(struct aml *a, const char *name);
void aml_method(struct aml *a, const char *name, unsigned nargs, bool serialized);
void aml_if(struct aml *a);                  /* predicate, then the body */
void aml_package(struct aml *a, unsigned nelems);
void aml_end(struct aml *a);
void aml_buffer(struct aml *a, const uint8_t *data, size_t len);
void aml_lequal(struct aml *a);              /* two operands follow */
void aml_arg(struct aml *a, unsigned n);
void aml_notify(struct aml *a, const char *path, uint64_t value);
int aml_finish(const struct aml *a);         /* 0, or -E2BIG after any misuse */
/* Resource descriptors, into a ResourceTemplate written with aml_buffer. */
void aml_res_io(struct aml *a, uint16_t base, uint8_t len);
void aml_res_irq(struct aml *a, unsigned irq);               /* ISA IRQ 0-15, edge */
void aml_res_mem32(struct aml *a, uint32_t base, uint32_t len);
void aml_res_ext_irq(struct aml *a, uint32_t gsi);           /* edge, active high */
void aml_res_end(struct aml *a);

/* ---- acpi.c: RSDP, XSDT, FADT (hardware-reduced), MADT, DSDT ------------------ */
#define ACPI_MAX_VIRTIO 16
#define ACPI_MAX_VCPUS  254 /* APIC ids 0..n-1 and the IOAPIC's n below 0xff */
struct acpi_layout {
	unsigned nr_vcpus;
	uint16_t serial_port;       /* COM1's base port, 0 for none */
	unsigned serial_gsi;
	struct { uint64_t base, size; unsigned gsi; } virtio[ACPI_MAX_VIRTIO];
	unsigned nr_virtio;
	uint64_t vmgenid_addr;
	unsigned ged_gsi;
};
/* Offsets of the tables in the image, and its size. */
struct acpi_offsets {
	size_t rsdp, xsdt, fadt, madt, dsdt, size;
};
uint8_t acpi_checksum(const uint8_t *p, size_t len); /* the byte that makes the sum 0 */
/* Builds every table into buf as they will lie at guest-physical address base (pure). */
int acpi_build(const struct acpi_layout *l, uint64_t base, uint8_t *buf, size_t cap,
	       struct acpi_offsets *o, struct errbuf *eb);
/* Writes the tables at ACPI_RSDP_ADDR, boot_params.acpi_rsdp_addr and a first VMGenID
 * (after the loader wrote boot_params). */
int acpi_write(struct guest_mem *m, const struct acpi_layout *l, struct errbuf *eb);

/* ---- vmgenid.c: the VM generation ID (Microsoft's VMGenID, Linux's vmgenid) ----- */
/* A fresh random 16-byte ID at ACPI_VMGENID_ADDR, written as ember writes guest RAM. */
int vmgenid_write(struct guest_mem *m, struct errbuf *eb);
/* On every restore and in-place reset, before the vCPUs run: a fresh ID, then an edge
 * on ACPI_GED_GSI so the guest's GED runs _EVT and notifies the VMGenID device. */
int vmgenid_update(struct vm *vm, struct errbuf *eb);

/* ---- vcpu_setup.c ------------------------------------------------------------ */
/* CPUID, MSRs, and for the BSP the boot entry state (after the loader ran). */
int x86_vcpu_init(struct vm *vm, struct vcpu *v, const struct kvm_cpuid2 *supported,
		  struct errbuf *eb);
int x86_vcpu_set_entry(struct vcpu *v, uint64_t entry, struct errbuf *eb);

/* ---- dump.c -------------------------------------------------------------------- */
/* "ember-regs vcpu=N rip=... cr3=..." per vCPU; vCPUs must be parked. */
void x86_dump_vcpus(struct vm *vm);

/* ---- snapshot state: cpu_state.c, vm_state.c, cpu_compat.c ------------------- */
/*
 * Conversions between KVM's vCPU/VM state and the snapshot format's KVM-independent
 * structs (snapshot-format/snapfmt.h). Restore input is untrusted: every count and
 * length is checked again here, where it sizes a KVM buffer.
 */
#include "snapfmt.h"

/*
 * vCPU state, taken/applied while the vCPU is parked (not in KVM_RUN), from any
 * thread. Save allocates out's heap parts through the snapfmt helpers (free them with
 * snap_state_free, also after a failed save). Restore expects a vCPU that has not run
 * yet (KVM refuses a different CPUID afterwards).
 */
int x86_vcpu_save(struct vcpu *v, struct snap_vcpu *out, struct errbuf *eb);
int x86_vcpu_restore(struct vcpu *v, const struct snap_vcpu *in, struct errbuf *eb);
/* After every vCPU's restore: vCPU 0's TSC offset for all (KVM_VCPU_TSC_OFFSET), where
 * KVM has the attribute. Never fails (cpu_state.c says why). */
void x86_vcpus_sync_tsc(struct vm *vm);
/* KVM_SET_TSC_KHZ: needs KVM_CAP_TSC_CONTROL; must precede the vCPU's TSC restore. */
int x86_vcpu_set_tsc_khz(struct vcpu *v, uint32_t khz, struct errbuf *eb);
/*
 * The MSR filter of the save list (pure): false for MSRs that live elsewhere in the
 * state (APIC base, EFER, FS/GS base, x2APIC registers), are read-only capability
 * reports of the host, are write-only commands, or belong to interfaces ember does not
 * expose (Hyper-V). Documented with the list in cpu_state.c.
 */
bool x86_msr_should_save(uint32_t index);

/*
 * VM-wide state: kvmclock, PIC master/slave, IOAPIC, PIT, TSC frequency (not the
 * memory regions). A restore is three steps, in this order (restore.c vm_set_state):
 *  - x86_vm_restore_prepare: checks the state and sets each vCPU's TSC frequency,
 *    which must precede the vCPUs' TSC MSR;
 *  - x86_vcpu_restore for every vCPU, then x86_vcpus_sync_tsc;
 *  - x86_vm_restore: PIT, kvmclock and the irqchips. Only now: setting the PICs and
 *    the IOAPIC makes KVM deliver what they hold pending (the IOAPIC's IRR) at once,
 *    and a LAPIC not yet restored would take it and lose it to its own SET_LAPIC.
 *    Firecracker restores in this order too.
 */
int x86_vm_save(struct vm *vm, struct snap_vm *out, struct errbuf *eb);
int x86_vm_restore_prepare(struct vm *vm, const struct snap_vm *in, struct errbuf *eb);
int x86_vm_restore(struct vm *vm, const struct snap_vm *in, struct errbuf *eb);
/* Tells every vCPU's guest it was stopped (PVCLOCK_GUEST_STOPPED in its kvmclock page,
 * KVM_KVMCLOCK_CTRL): after a restore or reset, and on pause. Never fails. */
void x86_kvmclock_stopped(struct vm *vm);
/* true when two TSC frequencies differ by more than calibration noise: 250 ppm of the
 * snapshot's (restore then scales the guest's TSC, or refuses when KVM cannot). */
bool x86_tsc_khz_differs(uint32_t snapshot_khz, uint32_t host_khz);

/* cpu_compat.c: may this host run a snapshot's vCPUs? */
void x86_host_cpu_info(struct snap_cpu_info *out); /* from the CPUID instruction */
/*
 * Pure check of st against a table of what this host may give vCPUs (x86_cpu_reference):
 * same CPU vendor; every feature bit a vCPU's CPUID has in the feature registers (leaf
 * 1 ECX/EDX, 7.0 EBX/ECX/EDX, 7.1 EAX/EDX, 0xD.1 EAX, 0x80000001 ECX/EDX, 0x80000007
 * EDX, 0x80000008 EBX), named or not, is in the table, except the few KVM emulates or
 * ember and KVM synthesise (cpu_compat.c); each vCPU's XCR0 within the table's; its
 * XSAVE area fits this host's KVM (x86_xsave_fits with the size the table implies).
 */
int x86_check_snapshot_cpu(const struct snap_state *st, const struct kvm_cpuid2 *host_supported,
			   struct errbuf *eb);
/* CPUID leaf/subleaf into r[EAX, EBX, ECX, EDX]: x86_native_cpuid (the instruction), or a
 * table in tests. */
typedef void (*x86_cpuid_fn)(uint32_t leaf, uint32_t subleaf, uint32_t r[4]);
void x86_native_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t r[4]);
/* A software KVM that under-reports: its supported table lacks SSE3 while the CPU has it
 * (this platform's kvm_pvm, PLATFORM.md). Hardware KVM never does. */
bool x86_kvm_underreports(const struct kvm_cpuid2 *supported, x86_cpuid_fn native);
/* The table to check snapshots against: a copy of KVM's supported table; on a KVM that
 * under-reports (*software), plus the CPU's own bits in the feature registers, which
 * its vCPUs run natively. Free *out with free(). */
int x86_cpu_reference(const struct kvm_cpuid2 *supported, x86_cpuid_fn native,
		      struct kvm_cpuid2 **out, bool *software, struct errbuf *eb);
/* Refuses a snapshot in which a vCPU uses nested virtualization (CR4.VMXE, EFER.SVME):
 * its state is not saved. Pure; restore, save and ember-snap verify run it. */
int x86_check_snapshot_nested(const struct snap_state *st, struct errbuf *eb);
/* Restore's check: KVM's supported table (stored in *supported for the caller), its
 * x86_cpu_reference, then x86_check_snapshot_cpu. */
int x86_check_host_cpu(int kvm_fd, const struct snap_state *st, struct kvm_cpuid2 **supported,
		       struct errbuf *eb);
/*
 * The CPUID table this host's KVM really gives a vCPU, to check snapshots against:
 * ember's normalised supported table set on vCPU 0, read back with KVM_GET_CPUID2.
 * Not simply KVM_GET_SUPPORTED_CPUID: some KVMs (this platform's kvm_pvm) add the
 * host's features on KVM_SET_CPUID2 that the supported table omits, and a snapshot
 * taken on this very host would then fail the check. Sets vCPU 0's CPUID: call it
 * before vCPU 0 has run and before restoring the vCPUs. Free *out with free().
 */
int x86_host_cpuid(struct vm *vm, struct kvm_cpuid2 **out, struct errbuf *eb);
/*
 * An XSAVE image of len bytes fits a KVM buffer of host_len bytes when it is no
 * longer, or when everything past host_len is zero (a bigger host's KVM pads the
 * buffer for state components the guest never enabled).
 */
bool x86_xsave_fits(const uint8_t *xsave, uint32_t len, uint32_t host_len);

#endif
