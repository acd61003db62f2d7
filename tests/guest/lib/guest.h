/*
 * The ember test-guest library: everything a freestanding test guest may call.
 *
 * A guest is one C file defining guest_main(). The library's ring-0 stub (entry.S)
 * has already built the GDT/TSS/IDT and page tables and dropped to ring 3 with IOPL=3
 * and interrupts off before guest_main() runs; returning from it sends GUEST_DONE.
 * Ring 3 runs at native speed on this platform, ring 0 is emulated (~1 us per
 * instruction), so all real work happens here, in ring 3.
 */
#ifndef EMBER_GUEST_H
#define EMBER_GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <asm-generic/errno.h> /* plain macros: EINVAL, ENODATA, ETIMEDOUT, ... */

#include "ember_abi.h"

#define GUEST_MAX_CPUS 8
#define PAGE_SIZE ((uint64_t)4096)
/* The stub identity-maps [0, 4 GiB) for ring 3; nothing above is reachable. */
#define GUEST_MAPPED_END ((uint64_t)0x100000000)

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ALIGN_UP(x, a) (((x) + (a) - 1) & ~((uint64_t)(a) - 1))
#define noreturn_fn __attribute__((noreturn))
#define printf_like(f, a) __attribute__((format(printf, f, a)))

/* The guest's entry point, called on the boot CPU in ring 3. */
void guest_main(void);

/* ---- port I/O and CPU helpers (ring 3 may use them: IOPL=3 + an open I/O bitmap) -- */
static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;

	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory");
	return v;
}

static inline uint32_t inl(uint16_t port)
{
	uint32_t v;

	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port) : "memory");
	return v;
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" : : : "memory");
}

struct cpuid_regs {
	uint32_t eax, ebx, ecx, edx;
};

/*
 * CPUID executed in ring 3. On this platform (PVM) user-mode CPUID is not
 * intercepted: it returns the *host's* values, not ember's per-vCPU table. Use
 * cpuid() for anything the VMM defines (APIC ids, features, XSAVE sizes).
 */
static inline struct cpuid_regs cpuid_native(uint32_t leaf, uint32_t subleaf)
{
	struct cpuid_regs r;

	__asm__ volatile("cpuid" : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx)
			 : "a"(leaf), "c"(subleaf));
	return r;
}

/* ---- ucalls (include/ember_abi.h), KVM-selftests style ------------------------------ */
/* Each builds a struct ember_ucall on the caller's stack (identity-mapped, so its
 * address is its GPA): several vCPUs may ucall at once. */
void guest_sync(uint64_t stage);
noreturn_fn void guest_done(void);
noreturn_fn void guest_assert_fail(const char *file, unsigned line, uint64_t a0, uint64_t a1,
				   const char *fmt, ...) printf_like(5, 6);
/* Console text through one PRINT ucall per 159 bytes (one exit, unlike the UART). */
void guest_print(const char *fmt, ...) printf_like(1, 2);
/* A result record; the host logs "ember-report <msg> a0 a1 a2 a3 <host us>". */
void guest_report(const char *msg, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3);
/*
 * Waits for the next host command (--guest-cmd NAME, or the control socket), polling
 * through EMBER_WAIT_AGAIN. Returns its length (truncated to len - 1, always
 * NUL-terminated), or -ENODATA once the host has no more commands.
 */
int guest_wait_cmd(char *buf, size_t len);
/* "Initialisation finished": the host's golden-snapshot point. */
void guest_ready(void);
noreturn_fn void guest_reset(void);
/* 0 on a cold boot, a fresh random value in every restored clone. */
uint64_t guest_generation(void);
uint32_t guest_abi_version(void);

#define GUEST_SYNC(stage) guest_sync(stage)
#define GUEST_DONE() guest_done()
#define GUEST_ASSERT(cond)                                                              \
	do {                                                                            \
		if (!(cond))                                                            \
			guest_assert_fail(__FILE__, __LINE__, 0, 0, "%s", "assertion failed: " #cond); \
	} while (0)
#define GUEST_ASSERT_MSG(cond, ...)                                                     \
	do {                                                                            \
		if (!(cond))                                                            \
			guest_assert_fail(__FILE__, __LINE__, 0, 0, __VA_ARGS__);      \
	} while (0)
#define GUEST_ASSERT_EQ(a, b)                                                           \
	do {                                                                            \
		uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);                        \
		if (a_ != b_)                                                           \
			guest_assert_fail(__FILE__, __LINE__, a_, b_,                   \
					  "%s == %s: 0x%lx != 0x%lx", #a, #b, a_, b_);  \
	} while (0)

/* ---- console: the COM1 8250 UART ------------------------------------------------ */
void serial_write(const char *s, size_t len);
void serial_printf(const char *fmt, ...) printf_like(1, 2);

/* ---- formatting: %s %c %d %i %u %x %X %p %%, flags '0' '-', width, l/ll/z ---------- */
int fmt_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int fmt_snprintf(char *buf, size_t size, const char *fmt, ...) printf_like(3, 4);

/* ---- strings (the compiler may also emit calls to the mem* ones) ----------------- */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
/* Copies at most size - 1 bytes and always terminates; returns strlen(src). */
size_t strlcpy(char *dst, const char *src, size_t size);

/* ---- boot parameters: command line and e820 ------------------------------------- */
const char *cmdline_get(void);
/* Copies the value of the last "key=value"; -ENOENT if absent, -E2BIG if it does not fit. */
int cmdline_get_str(const char *key, char *buf, size_t len);
/* Decimal or 0x-hex with an optional K/M/G/T suffix (powers of 1024); -ENOENT if
 * absent, -EINVAL if malformed, -ERANGE on overflow. */
int cmdline_get_u64(const char *key, uint64_t *val);
/* Parses a size/number as cmdline_get_u64 does (exposed for commands). */
int parse_u64_suffix(const char *s, size_t len, uint64_t *val);
/* A bare word, "key" with no '=', anywhere on the command line. */
bool cmdline_has_flag(const char *key);

/* true when all of [addr, addr + len) is e820 RAM (adjacent RAM entries merge). */
bool e820_is_ram(uint64_t addr, uint64_t len);
/* The end of the contiguous RAM that contains addr, or 0 when addr is not RAM. */
uint64_t e820_ram_end(uint64_t addr);
uint64_t e820_ram_total(void);

/* ---- checksums ---------------------------------------------------------------- */
/* Fast 64-bit hash over 8-byte words (4 lanes); any length; deterministic. */
uint64_t hash64(const void *buf, size_t len, uint64_t seed);
/* splitmix64's finaliser: a good mixer for (seed, index) -> pseudo-random word. */
static inline uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* ---- per-CPU state, privileged operations, timer ---------------------------------- */
/* 0 for the boot CPU, then APs in the order they reached long mode. */
static inline unsigned guest_cpu_id(void)
{
	uint64_t v;

	__asm__ volatile("movq %%gs:0, %0" : "=r"(v));
	return (unsigned)v;
}

/* The x2APIC id the stub read in ring 0 (0 when the CPU has no x2APIC). */
static inline uint32_t guest_apic_id(void)
{
	uint64_t v;

	__asm__ volatile("movq %%gs:8, %0" : "=r"(v));
	return (uint32_t)v;
}

/* Local APIC timer interrupts this CPU has taken (counted by the ring-0 handler). */
static inline uint64_t timer_ticks(void)
{
	uint64_t v;

	__asm__ volatile("movq %%gs:16, %0" : "=r"(v) : : "memory");
	return v;
}

/* The gateway (vectors.S: a #UD at a known address; `syscall` stays at CPL 3 on
 * this platform): the only way ring 3 reaches ring 0, ~25 emulated instructions.
 * A bad MSR is reported as an exception (#GP in ring 0 inside the gateway). */
void sys_wrmsr(uint32_t msr, uint64_t val);
uint64_t sys_rdmsr(uint32_t msr);
noreturn_fn void sys_halt(void); /* cli; hlt forever: parks an AP without spinning */
/* CPUID executed in ring 0, so the VMM's values (see cpuid_native()). */
struct cpuid_regs cpuid(uint32_t leaf, uint32_t subleaf);
/* Set / clear IF for ring 3 (through the gate: ring-3 sti/cli #GP on this
 * platform although IOPL=3). Interrupts start disabled. */
void irq_enable(void);
void irq_disable(void);
/* The XCR0 the stub enabled (0 without XSAVE): x87|SSE|AVX[|AVX-512] as offered. */
uint64_t guest_xcr0(void);

bool cpu_has_x2apic(void);
/* Starts the x2APIC timer in periodic mode on this CPU. KVM's APIC timer counts at
 * 1 GHz with divide-by-1, so count 1000000 is 1 kHz. */
void apic_timer_periodic(uint32_t count);
void apic_timer_stop(void);

/*
 * SMP: sends INIT + SIPI to x2APIC ids 1..ncpus-1 (ember numbers vCPUs' APIC ids
 * 0..n-1). Each AP goes to long mode through the trampoline at 0x30000, then runs
 * fn(cpu) in ring 3 on its own stack and parks. Returns -EINVAL for a bad ncpus,
 * -ENODEV without x2APIC.
 */
int smp_start_aps(unsigned ncpus, void (*fn)(unsigned cpu));
/* Number of APs that reached ring 3. */
unsigned smp_aps_online(void);
/* Waits until n APs are online; -ETIMEDOUT after timeout_cycles TSC cycles. */
int smp_wait_aps(unsigned n, uint64_t timeout_cycles);

/* ---- tiny spinlock for ring-3 code shared between CPUs -------------------------- */
struct spinlock {
	volatile uint32_t locked;
};

static inline void spin_lock(struct spinlock *l)
{
	while (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE))
		while (l->locked)
			cpu_relax();
}

static inline void spin_unlock(struct spinlock *l)
{
	__atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
}

/* First byte after the loaded image (end of .bss), from the linker script. */
extern char _end[];

#endif
