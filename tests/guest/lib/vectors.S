/*
 * Ring-0 entry points after boot: the 256 interrupt stubs, the APIC timer tick,
 * and the ring-3 -> ring-0 gateway. Each of them is a handful of instructions because ring
 * 0 is emulated here; anything that is not the timer or the spurious vector is
 * fatal and reported to the host by trap_report() (an ASSERT ucall), never by a
 * silent triple fault.
 */
#include "layout.h"

	.text

/* ---- 256 stubs of exactly ISR_STUB_SIZE bytes: [error code], vector, common path --- */
	.balign 4096                     /* guest.ld: the IDT gates need no carry out of bits 0-15 */
	.globl isr_vectors
isr_vectors:
	.set vec, 0
	.rept 256
	.balign ISR_STUB_SIZE
	/* the CPU pushes an error code for these; push a dummy for the others */
	.if (vec != 8) && (vec != 10) && (vec != 11) && (vec != 12) && (vec != 13) && \
	    (vec != 14) && (vec != 17) && (vec != 21) && (vec != 29) && (vec != 30)
	pushq $0
	.endif
	pushq $vec
	jmp isr_common
	.set vec, vec + 1
	.endr
isr_vectors_end:

/* stack: vector, error, rip, cs, rflags, rsp, ss */
isr_common:
	cmpq $TIMER_VECTOR, (%rsp)
	je timer_tick
	cmpq $VECTOR_UD, (%rsp)
	jne 1f
	cmpq $sys_gate, 16(%rsp)
	je gate
1:	cmpq $SPURIOUS_VECTOR, (%rsp)
	je 2f
	/* fatal: save everything into a struct trap_frame (trap.c) and report */
	pushq %rax
	pushq %rbx
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %rbp
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	movq %cr2, %rax
	pushq %rax
	movq %rsp, %rdi
	andq $-16, %rsp
	cld
	call trap_report                 /* does not return */
3:	cli
	hlt
	jmp 3b
2:	addq $16, %rsp                  /* spurious: no EOI */
	iretq

/* ~12 instructions per tick: count in this CPU's per-CPU block, EOI, return. */
timer_tick:
	pushq %rax
	pushq %rcx
	pushq %rdx
	incq %gs:PERCPU_TICKS
	movl $MSR_X2APIC_EOI, %ecx
	xorl %eax, %eax
	xorl %edx, %edx
	wrmsr
	popq %rdx
	popq %rcx
	popq %rax
	addq $16, %rsp
	iretq

/*
 * The gateway from ring 3: `call sys_gate` with rax = SYS_*, rdi = MSR, rsi =
 * value; returns rax, preserves every other register (SYS_CPUID: rdi = leaf,
 * rsi = subleaf, returns eax..edx). It is a #UD at a known
 * address because on this platform `syscall` reaches LSTAR still at CPL 3 (and
 * `int $n` fails); exceptions are the one reliable way into ring 0. IF is set
 * here too: ring-3 sti/cli #GP here despite IOPL=3.
 */
	.globl sys_gate
sys_gate:
	ud2
	ret

gate:
	addq $16, %rsp                  /* drop vector and error code */
	addq $2, (%rsp)                 /* resume after the ud2 */
	pushq %rcx
	pushq %rdx
	movl %edi, %ecx
	cmpl $SYS_WRMSR, %eax
	jne 1f
	movl %esi, %eax
	movq %rsi, %rdx
	shrq $32, %rdx
	wrmsr
	jmp 9f
1:	cmpl $SYS_RDMSR, %eax
	jne 2f
	rdmsr
	shlq $32, %rdx
	orq %rdx, %rax
	jmp 9f
2:	cmpl $SYS_HALT, %eax
	jne 3f
4:	hlt                              /* IF=0 (interrupt gate): parked for good */
	jmp 4b
3:	cmpl $SYS_IRQ_ENABLE, %eax
	jne 6f
	orq $0x200, 32(%rsp)             /* IF in the saved RFLAGS (above rcx, rdx, rip, cs) */
	jmp 9f
6:	cmpl $SYS_IRQ_DISABLE, %eax
	jne 7f
	andq $~0x200, 32(%rsp)
	jmp 9f
7:	cmpl $SYS_CPUID, %eax
	jne 5f
	movl %edi, %eax                  /* returns eax, ebx, ecx, edx */
	movl %esi, %ecx
	cpuid
	addq $16, %rsp
	iretq
5:	movq $-1, %rax
9:	popq %rdx
	popq %rcx
	iretq

	.section .note.GNU-stack, "", @progbits
