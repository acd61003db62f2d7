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

/* ---- vcpu_setup.c ------------------------------------------------------------ */
/* CPUID, MSRs, and for the BSP the boot entry state (after the loader ran). */
int x86_vcpu_init(struct vm *vm, struct vcpu *v, const struct kvm_cpuid2 *supported,
		  struct errbuf *eb);
int x86_vcpu_set_entry(struct vcpu *v, uint64_t entry, struct errbuf *eb);

/* ---- dump.c -------------------------------------------------------------------- */
/* "ember-regs vcpu=N rip=... cr3=..." per vCPU; vCPUs must be parked. */
void x86_dump_vcpus(struct vm *vm, FILE *f);

#endif
