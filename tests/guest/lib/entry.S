/*
 * The ring-0 stub: the boot CPU enters _start in 64-bit mode from ember's Linux
 * boot protocol loader (rsi = boot_params); APs arrive from trampoline.S. Both run
 * cpu_setup once (75 emulated instructions, 8 of them CPUID/MSR/XSETBV exits), which
 * loads the static tables from tables.S and irets to ring 3, where everything else
 * runs; ring 0 is re-entered only through vectors.S.
 */
#include "layout.h"

	.section .text.entry, "ax"
	.globl _start
_start:
	movq %rsi, boot_params_gpa(%rip)
	xorl %r13d, %r13d                /* cpu 0 */
	movl $lib_bsp_start, %r12d
	jmp cpu_setup

/*
 * Per-CPU setup. r13 = cpu index, r12 = ring-3 entry point. Needs only a few bytes
 * of whatever stack the CPU arrived on (ember's boot stack, or the AP's kstack).
 */
	.globl cpu_setup
cpu_setup:
	lgdt gdt_desc(%rip)
	lidt idt_desc(%rip)
	movl $SEL_KDATA, %eax
	movl %eax, %ss
	xorl %eax, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %fs
	movl %eax, %gs
	pushq $SEL_KCODE
	leaq 1f(%rip), %rax
	pushq %rax
	lretq
1:	movl %r13d, %eax
	shll $4, %eax
	addl $SEL_TSS0, %eax
	ltr %ax
	movl $pml4, %eax
	movq %rax, %cr3                  /* our tables: ember's map is supervisor-only */
	movl $CR0_VALUE, %eax
	movq %rax, %cr0

	/* SSE always; XSAVE (and through XCR0 AVX / AVX-512) when CPUID offers it */
	movl $1, %eax
	xorl %ecx, %ecx
	cpuid
	movl %ecx, %r14d                 /* CPUID.1:ECX features */
	movl $(CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT), %eax
	btl $CPUID1_ECX_XSAVE, %r14d
	jnc 2f
	orl $CR4_OSXSAVE, %eax
2:	movq %rax, %cr4
	btl $CPUID1_ECX_XSAVE, %r14d     /* mov to CR4 leaves the flags undefined */
	jnc 3f
	movl $0xd, %eax
	xorl %ecx, %ecx
	cpuid                            /* eax: XCR0 bits this CPU supports */
	andl $XCR0_WANTED, %eax
	xorl %edx, %edx
	xorl %ecx, %ecx
	xsetbv
	movl %eax, xcr0_enabled(%rip)
3:	fninit

	/* per-CPU block: GS base, cpu index */
	movl %r13d, %r15d
	shll $PERCPU_SHIFT, %r15d
	addl $percpu, %r15d
	movq %r13, PERCPU_CPU(%r15)
	movl $MSR_GS_BASE, %ecx
	movl %r15d, %eax
	xorl %edx, %edx
	wrmsr

	/* x2APIC on, software-enabled (spurious vector 0xff), id for ring 3 */
	btl $CPUID1_ECX_X2APIC, %r14d
	jnc 4f
	movl $MSR_APIC_BASE, %ecx
	rdmsr
	orl $APIC_BASE_EXTD_EN, %eax
	wrmsr
	movl $MSR_X2APIC_SVR, %ecx
	movl $(APIC_SVR_ENABLE | SPURIOUS_VECTOR), %eax
	xorl %edx, %edx
	wrmsr
	movl $MSR_X2APIC_ID, %ecx
	rdmsr
	movl %eax, PERCPU_APIC_ID(%r15)

	/* to ring 3, IOPL=3, IF=0, on this CPU's user stack (entered like a call) */
4:	leal 1(%r13d), %eax
	shll $USTACK_SHIFT, %eax
	addl $ustacks - 8, %eax
	pushq $(SEL_UDATA | 3)
	pushq %rax
	pushq $USER_RFLAGS
	pushq $(SEL_UCODE | 3)
	pushq %r12
	iretq

	.section .note.GNU-stack, "", @progbits

	.data
	.balign 8
	.globl boot_params_gpa
boot_params_gpa:
	.quad 0
	.globl xcr0_enabled
xcr0_enabled:
	.quad 0
