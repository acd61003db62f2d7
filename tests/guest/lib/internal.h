/*
 * Library-internal symbols shared between the assembly stub and the C files.
 * Guests include guest.h only.
 */
#ifndef EMBER_GUEST_INTERNAL_H
#define EMBER_GUEST_INTERNAL_H

#include "guest.h"

/* Saved by _start from rsi: the GPA of the Linux zero page (struct boot_params). */
extern uint64_t boot_params_gpa;
/* Written by cpu_setup: the XCR0 it set with xsetbv (0 when XSAVE is absent). */
extern uint64_t xcr0_enabled;

/* Ring-3 entry points the stub irets to (start.c, smp.c). */
noreturn_fn void lib_bsp_start(void);
noreturn_fn void lib_ap_start(void);

/* What isr_common pushed, lowest address first. */
struct trap_frame {
	uint64_t cr2;
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
	uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
	uint64_t vector, error;
	uint64_t rip, cs, rflags, rsp, ss; /* pushed by the CPU */
};

/* Ring 0: reports an unexpected exception/interrupt as an ASSERT ucall. */
noreturn_fn void trap_report(const struct trap_frame *f);

/* Sends a filled ucall block (ucall.c). */
void ucall_send(struct ember_ucall *uc);

/* 32-bit MMIO register accesses (mmio.c; the host-side test supplies a fake device). */
uint32_t mmio_read32(uint64_t addr);
void mmio_write32(uint64_t addr, uint32_t v);

#endif
