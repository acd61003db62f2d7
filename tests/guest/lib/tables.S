/*
 * Every ring-0 table, complete at link time, so the stub only has to load them:
 * on this platform each ring-0 instruction costs ~1 us, a fill loop would cost ms.
 * Descriptor fields that split an address into pieces (IDT gates, TSS
 * descriptors) cannot be computed by the assembler from a relocatable symbol, so
 * guest.ld computes them (idt_off_*, tss_desc_base) and we only add constants.
 */
#include "layout.h"

	.section .data.tables, "aw"

/* ---- page tables: identity map of [0, 4 GiB), 2 MiB pages, U/S set --------------- */
	.balign 4096
	.globl pml4
pml4:
	.quad pdpt + 0x7                 /* P | RW | US */
	.fill 511, 8, 0
pdpt:
	.quad pd + 0x0000 + 0x7
	.quad pd + 0x1000 + 0x7
	.quad pd + 0x2000 + 0x7
	.quad pd + 0x3000 + 0x7
	.fill 508, 8, 0
pd:
	.set i, 0
	.rept 2048
	.quad (i << 21) | 0x87           /* P | RW | US | PS */
	.set i, i + 1
	.endr

/* ---- GDT ------------------------------------------------------------------------- */
	.balign 16
	.globl gdt, gdt_desc
gdt:
	.quad 0
	.quad 0x00af9b000000ffff         /* 0x08 kernel code: L, DPL0 */
	.quad 0x00cf93000000ffff         /* 0x10 kernel data */
	.quad 0x00cff3000000ffff         /* 0x18 user data: DPL3 */
	.quad 0x00affb000000ffff         /* 0x20 user code: L, DPL3 */
	.set i, 0
	.rept MAX_CPUS
	/* available 64-bit TSS (0x89), limit covers the shared bitmap and its 0xff byte */
	.quad tss_desc_base + ((i * TSS_SIZE) << 16) + (0x89 << 40) + \
	      (iobitmap - tss_area - i * TSS_SIZE + IOBITMAP_BYTES)
	.quad 0
	.set i, i + 1
	.endr
gdt_end:
	.balign 8
	.word 0
gdt_desc:
	.word gdt_end - gdt - 1
	.quad gdt

/* ---- IDT: 256 interrupt gates to the 16-byte stubs in vectors.S ------------------ */
	.balign 4096
	.globl idt, idt_desc
idt:
	.set i, 0
	.rept 256
	.word idt_off_lo + i * ISR_STUB_SIZE
	.word SEL_KCODE
	.word 0x8e00                     /* present, DPL0, 64-bit interrupt gate */
	.word idt_off_mid
	.long idt_off_hi
	.long 0
	.set i, i + 1
	.endr
	.word 0, 0, 0
idt_desc:
	.word 256 * 16 - 1
	.quad idt

/* ---- TSSs (one per CPU) followed by the shared, all-open I/O bitmap ---------------- */
	.balign 4096
	.globl tss_area
tss_area:
	.set i, 0
	.rept MAX_CPUS
	.long 0
	.quad kstacks + (i + 1) * KSTACK_SIZE        /* RSP0 */
	.fill 11, 8, 0                               /* RSP1-2, reserved, IST1-7, reserved */
	.word 0
	.word iobitmap - tss_area - i * TSS_SIZE     /* I/O map base, from this TSS */
	.set i, i + 1
	.endr
iobitmap:
	.fill IOBITMAP_BYTES, 1, 0
	.byte 0xff

/* ---- per-CPU blocks, stacks -------------------------------------------------------- */
	.section .bss.tables, "aw", @nobits
	.balign 64
	.globl percpu
percpu:
	.skip MAX_CPUS << PERCPU_SHIFT
	.balign 4096
	.globl kstacks
kstacks:
	.skip MAX_CPUS * KSTACK_SIZE
	.globl ustacks
ustacks:
	.skip MAX_CPUS * USTACK_SIZE

	.section .note.GNU-stack, "", @progbits
