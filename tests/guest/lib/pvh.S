/*
 * PVH entry, for VMMs that boot an ELF through its XEN_ELFNOTE_PHYS32_ENTRY note
 * (QEMU's microvm): the boot CPU arrives here in flat 32-bit protected mode, paging
 * off, ebx = physical address of struct hvm_start_info, no usable stack. ember
 * ignores the note and enters _start in 64-bit mode instead (Linux boot protocol).
 *
 * Long mode in one step, as trampoline.S does for the APs: tables.S's static page
 * tables already identity-map [0, 4 GiB), so PAE + CR3 + EFER.LME, then CR0.PG with
 * PE, and a far jump to the 64-bit kernel code selector. Real and protected mode are
 * emulated here (~1 us per instruction): a dozen instructions, then cpu_setup.
 */
#include "layout.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18

/* One note, "Xen\0" + the entry address: QEMU reads the descriptor as a 64-bit
 * value and aligns the name to the segment's p_align, which guest.ld keeps at 4. */
	.section .note.pvh, "a", @note
	.balign 4
	.long 2f - 1f                    /* n_namesz */
	.long 4f - 3f                    /* n_descsz */
	.long XEN_ELFNOTE_PHYS32_ENTRY   /* n_type */
1:	.asciz "Xen"
2:	.balign 4
3:	.quad pvh_start
4:	.balign 4

	.section .text.pvh, "ax"
	.code32
	.globl pvh_start
pvh_start:
	movl %ebx, pvh_start_info_gpa    /* the upper half of the .quad stays 0 */
	lgdtl gdt_desc                   /* 32-bit mode reads limit + the low 32 bits of base */
	movl $CR4_PAE, %eax
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $MSR_EFER, %ecx
	rdmsr
	orl $EFER_LME, %eax
	wrmsr
	movl $CR0_VALUE, %eax
	movl %eax, %cr0
	ljmpl $SEL_KCODE, $pvh_long_mode

	.code64
pvh_long_mode:
	movl $(kstacks + KSTACK_SIZE), %esp  /* cpu 0's ring-0 stack: free until ring 3 */
	xorl %r13d, %r13d                    /* cpu 0 */
	movl $lib_bsp_start, %r12d
	jmp cpu_setup

	.data
	.balign 8
	.globl pvh_start_info_gpa
pvh_start_info_gpa:                      /* 0: booted by ember (Linux boot protocol) */
	.quad 0

	.section .note.GNU-stack, "", @progbits
