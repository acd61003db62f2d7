/*
 * state: the snapshot-test guest (KVM selftests' state_test pattern). With the
 * x2APIC timer ticking at 1 kHz (counted by a tiny ring-0 handler), it runs
 * STAGES stages; in each it
 *   - checks the previous stage's memory pattern, writes a new one (MEM_BYTES),
 *   - waits for the timer to tick,
 *   - loads 13 general registers with stage values, sends GUEST_SYNC(stage) and
 *     compares them right after, in one assembly routine,
 *   - checks the memory pattern, that ticks and the TSC did not go backwards, and
 *     that the timer still ticks afterwards (a restored LAPIC timer must be armed).
 * The host may save, destroy and restore the VM at every SYNC. Ends in GUEST_DONE.
 */
#include "guest.h"

#define STAGES 6
#define MEM_BYTES (4u << 20)
#define TIMER_COUNT 1000000 /* 1 kHz at KVM's 1 GHz APIC timer clock */
#define TICK_TIMEOUT_CYCLES (5ull * 1000 * 1000 * 1000)
#define NREGS 13

static uint64_t mem[MEM_BYTES / 8] __attribute__((aligned(4096)));

static const char *const reg_names[NREGS] = {
	"rbx", "rcx", "rbp", "rsi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi",
};

/* Loads vals[0..12] into the registers named above, sends the ucall whose GPA is
 * in esi, returns a bit mask of the registers that changed. */
uint64_t state_regs_roundtrip(const uint64_t *vals, uint32_t uc);

__asm__(
	".macro load_reg reg, idx\n"
	"	movq \\idx*8(%rdi), \\reg\n"
	".endm\n"
	".macro check_reg reg, idx\n"
	"	cmpq \\idx*8(%rax), \\reg\n"
	"	je 1f\n"
	"	btsq $\\idx, %rdx\n"
	"1:\n"
	".endm\n"
	".text\n"
	".globl state_regs_roundtrip\n"
	"state_regs_roundtrip:\n"
	"	pushq %rbx\n"
	"	pushq %rbp\n"
	"	pushq %r12\n"
	"	pushq %r13\n"
	"	pushq %r14\n"
	"	pushq %r15\n"
	"	pushq %rdi\n"
	"	movl %esi, %eax\n"
	"	load_reg %rbx, 0\n"
	"	load_reg %rcx, 1\n"
	"	load_reg %rbp, 2\n"
	"	load_reg %rsi, 3\n"
	"	load_reg %r8, 4\n"
	"	load_reg %r9, 5\n"
	"	load_reg %r10, 6\n"
	"	load_reg %r11, 7\n"
	"	load_reg %r12, 8\n"
	"	load_reg %r13, 9\n"
	"	load_reg %r14, 10\n"
	"	load_reg %r15, 11\n"
	"	load_reg %rdi, 12\n"
	"	movl $0x5e0, %edx\n" /* EMBER_PORT_UCALL */
	"	outl %eax, %dx\n"
	"	movq (%rsp), %rax\n"
	"	xorl %edx, %edx\n"
	"	check_reg %rbx, 0\n"
	"	check_reg %rcx, 1\n"
	"	check_reg %rbp, 2\n"
	"	check_reg %rsi, 3\n"
	"	check_reg %r8, 4\n"
	"	check_reg %r9, 5\n"
	"	check_reg %r10, 6\n"
	"	check_reg %r11, 7\n"
	"	check_reg %r12, 8\n"
	"	check_reg %r13, 9\n"
	"	check_reg %r14, 10\n"
	"	check_reg %r15, 11\n"
	"	check_reg %rdi, 12\n"
	"	movq %rdx, %rax\n"
	"	popq %rdi\n"
	"	popq %r15\n"
	"	popq %r14\n"
	"	popq %r13\n"
	"	popq %r12\n"
	"	popq %rbp\n"
	"	popq %rbx\n"
	"	ret\n");
_Static_assert(EMBER_PORT_UCALL == 0x5e0, "the assembly above hard-codes the port");

static uint64_t pattern(uint64_t stage, uint64_t i)
{
	return mix64((stage << 40) ^ i);
}

static void mem_fill(uint64_t stage)
{
	for (uint64_t i = 0; i < ARRAY_SIZE(mem); i++)
		mem[i] = pattern(stage, i);
}

static void mem_check(uint64_t stage, const char *when)
{
	for (uint64_t i = 0; i < ARRAY_SIZE(mem); i++)
		if (mem[i] != pattern(stage, i))
			guest_assert_fail(__FILE__, __LINE__, mem[i], pattern(stage, i),
					  "%s: word %lu (GPA 0x%lx) of the stage-%lu pattern changed",
					  when, i, (uint64_t)(uintptr_t)&mem[i], stage);
}

/* Waits until this CPU's tick count reaches target; fails if the timer stalled. */
static uint64_t wait_ticks(uint64_t target, uint64_t stage, const char *when)
{
	uint64_t start = rdtsc(), t;

	while ((t = timer_ticks()) < target) {
		if (rdtsc() - start > TICK_TIMEOUT_CYCLES)
			guest_assert_fail(__FILE__, __LINE__, t, target,
					  "stage %lu %s: the APIC timer stalled at %lu ticks", stage,
					  when, t);
		cpu_relax();
	}
	return t;
}

static void run_stage(uint64_t stage, uint64_t *ticks)
{
	struct ember_ucall uc = { .cmd = EMBER_UCALL_SYNC, .args = { stage } };
	uint64_t vals[NREGS], changed, tsc_before, tsc_after, ticks_before, ticks_after;

	if (stage > 1)
		mem_check(stage - 1, "before the next stage");
	mem_fill(stage);
	for (unsigned r = 0; r < NREGS; r++)
		vals[r] = pattern(stage, 0x1000 + r);

	ticks_before = wait_ticks(*ticks + 2, stage, "before sync");
	tsc_before = rdtsc();
	changed = state_regs_roundtrip(vals, (uint32_t)(uintptr_t)&uc);
	tsc_after = rdtsc();
	ticks_after = timer_ticks();

	for (unsigned r = 0; r < NREGS; r++)
		GUEST_ASSERT_MSG(!(changed & (1ull << r)), "stage %lu: %s changed across the sync",
				 stage, reg_names[r]);
	mem_check(stage, "after sync");
	GUEST_ASSERT_MSG(ticks_after >= ticks_before, "stage %lu: ticks went back from %lu to %lu",
			 stage, ticks_before, ticks_after);
	GUEST_ASSERT_MSG(tsc_after > tsc_before, "stage %lu: TSC went back from 0x%lx to 0x%lx",
			 stage, tsc_before, tsc_after);
	*ticks = wait_ticks(ticks_after + 2, stage, "after sync");
	guest_print("state: stage %lu ok (ticks %lu)\n", stage, *ticks);
}

void guest_main(void)
{
	uint64_t ticks = 0;

	GUEST_ASSERT_MSG(cpu_has_x2apic(), "state needs an x2APIC for its timer");
	apic_timer_periodic(TIMER_COUNT);
	irq_enable();
	for (uint64_t stage = 1; stage <= STAGES; stage++)
		run_stage(stage, &ticks);
	irq_disable();
	apic_timer_stop();
	GUEST_DONE();
}
