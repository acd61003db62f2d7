/*
 * Constants shared by the ring-0 assembly (entry.S, tables.S, vectors.S,
 * trampoline.S) and the C library. Plain #defines only: included from .S files.
 */
#ifndef EMBER_GUEST_LAYOUT_H
#define EMBER_GUEST_LAYOUT_H

#define MAX_CPUS 8

/* GDT: null, kernel code/data, user data/code (the order sysret wants), then one
 * 16-byte TSS descriptor per CPU. */
#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UDATA 0x18
#define SEL_UCODE 0x20
#define SEL_TSS0  0x28
#define GDT_SIZE  (SEL_TSS0 + 16 * MAX_CPUS)

/* 64-bit TSS: 104 bytes; all CPUs' TSSs share one I/O bitmap that follows them. */
#define TSS_SIZE       104
#define TSS_RSP0       4
#define TSS_IOMAP_BASE 102
#define IOBITMAP_BYTES 8192 /* 65536 ports, all allowed; then one 0xff byte */

/* Stacks, per CPU. */
#define KSTACK_SIZE 8192
#define USTACK_SHIFT 15 /* 32 KiB ring-3 stacks */
#define USTACK_SIZE (1 << USTACK_SHIFT)

/* Per-CPU block (GS base points at it; ring 3 reads it with %gs:off). */
#define PERCPU_SHIFT   6
#define PERCPU_CPU     0  /* cpu index */
#define PERCPU_APIC_ID 8
#define PERCPU_TICKS   16 /* APIC timer interrupts taken */

/* Vectors: 0-31 exceptions (reported), the APIC timer, the APIC spurious vector. */
#define TIMER_VECTOR    0x40
#define SPURIOUS_VECTOR 0xff
#define ISR_STUB_SIZE   16

/* Gateway (sys_gate) numbers in rax. Args: rdi, rsi. */
#define VECTOR_UD 6
#define SYS_WRMSR 1
#define SYS_RDMSR 2
#define SYS_HALT  3
#define SYS_CPUID 4 /* ring-3 cpuid runs natively here: the host's values */
#define SYS_IRQ_ENABLE  5 /* ring-3 sti/cli #GP here even with IOPL=3 */
#define SYS_IRQ_DISABLE 6

/* Where APs start: SIPI vector 0x30 -> real mode at 0x30000 (free low RAM). */
#define AP_TRAMPOLINE_ADDR 0x30000
#define AP_SIPI_VECTOR (AP_TRAMPOLINE_ADDR >> 12)

/* MSRs */
#define MSR_APIC_BASE   0x1b
#define MSR_EFER        0xc0000080
#define MSR_GS_BASE     0xc0000101
#define MSR_X2APIC_ID   0x802
#define MSR_X2APIC_EOI  0x80b
#define MSR_X2APIC_SVR  0x80f
#define MSR_X2APIC_ICR  0x830
#define MSR_X2APIC_LVTT 0x832
#define MSR_X2APIC_TMICT 0x838
#define MSR_X2APIC_TDCR 0x83e

#define EFER_LME (1 << 8)
#define APIC_BASE_EXTD_EN 0xc00 /* x2APIC mode + global enable */
#define APIC_SVR_ENABLE   0x100

/* Control registers: CR0 = PE|MP|ET|NE|WP|PG (cache enabled: CD/NW clear). */
#define CR0_VALUE      0x80050033
#define CR4_PAE        (1 << 5)
#define CR4_OSFXSR     (1 << 9)
#define CR4_OSXMMEXCPT (1 << 10)
#define CR4_OSXSAVE    (1 << 18)
#define CPUID1_ECX_X2APIC 21
#define CPUID1_ECX_XSAVE  26
/* XCR0: x87, SSE, AVX, and the three AVX-512 components when offered. */
#define XCR0_WANTED 0xe7

/* RFLAGS for ring 3: IOPL=3 (port I/O), IF=0 (irq_enable() sets it). */
#define USER_RFLAGS 0x3002

#endif
