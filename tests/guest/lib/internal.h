/*
 * Library-internal symbols shared between the assembly stub and the C files.
 * Guests include guest.h only.
 */
#ifndef EMBER_GUEST_INTERNAL_H
#define EMBER_GUEST_INTERNAL_H

#include "guest.h"

/* Saved by _start from rsi: the GPA of the Linux zero page (struct boot_params). */
extern uint64_t boot_params_gpa;
/* Saved by pvh_start (pvh.S) from ebx: the GPA of struct hvm_start_info; 0 when ember
 * booted us through _start. */
extern uint64_t pvh_start_info_gpa;
/* Fills a zero page (BP_ZERO_PAGE_SIZE bytes) from the hvm_start_info at start_info:
 * command line and memory map. -EINVAL (and an empty page) for a bad magic. */
int pvh_fill_zero_page(uint64_t start_info, uint8_t *zero_page);
/* Boot CPU, ring 3, before guest_main: points boot_params_gpa at a translated page. */
void pvh_boot_init(void);

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

/* Without ember (PVH boot, pvh_vmm.c): a ucall served in the guest (text to the UART,
 * WAIT answers NONE, DONE and ASSERT leave through isa-debug-exit; the caller halts
 * after it as on ember); the ready point; QEMU's isa-debug-exit. */
void pvh_ucall(struct ember_ucall *uc);
void pvh_ready(void);
void pvh_debug_exit(uint8_t code);

/* 32-bit MMIO register accesses (mmio.c; the host-side test supplies a fake device). */
uint32_t mmio_read32(uint64_t addr);
void mmio_write32(uint64_t addr, uint32_t v);

#endif
