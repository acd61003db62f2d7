/*
 * AP start: a SIPI with vector AP_SIPI_VECTOR starts an AP in real mode at
 * AP_TRAMPOLINE_ADDR (guest.ld places this section there, in ember's free low
 * window). Real mode is emulated here, so go straight to long mode: with CR4.PAE,
 * CR3 and EFER.LME set, setting CR0.PE and CR0.PG together enters IA-32e mode in one
 * step, and a far jump to the 64-bit code selector finishes it.
 */
#include "layout.h"

	.section .trampoline, "ax"
	.code16
	.globl ap_trampoline
ap_trampoline:
	cli
	movw %cs, %ax
	movw %ax, %ds
	lgdtl tramp_gdtr - ap_trampoline
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
	ljmpl $SEL_KCODE, $ap_long_mode

	.code64
ap_long_mode:
	movl $1, %r13d
	lock xaddl %r13d, ap_next_cpu(%rip)   /* arrival order = cpu index */
	cmpl $MAX_CPUS, %r13d
	jae ap_too_many
	leal 1(%r13d), %eax
	imull $KSTACK_SIZE, %eax
	addl $kstacks, %eax
	movq %rax, %rsp
	movl $lib_ap_start, %r12d
	movl $cpu_setup, %eax
	jmp *%rax
ap_too_many:
	hlt                                   /* IF=0: parked for good */
	jmp ap_too_many

	.balign 8
tramp_gdtr:
	.word GDT_SIZE - 1
	.long gdt

	.data
	.balign 4
	.globl ap_next_cpu
ap_next_cpu:
	.long 1

	.section .note.GNU-stack, "", @progbits
