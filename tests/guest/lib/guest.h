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
/* virtio UAPI headers: constants and plain structs only, usable freestanding */
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>
#include <linux/virtio_vsock.h>

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
/* A result record; the host logs "ember-report msg=<msg> a0=0x.. a1=0x.. a2=0x.. a3=0x..
 * us=<host us>" (README "Lines for machines"). */
void guest_report(const char *msg, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3);
/*
 * Waits for the next host command (--guest-cmd NAME, or the control socket); the host
 * blocks the vCPU while none is queued and answers EMBER_WAIT_AGAIN now and then (a
 * pause, a stop), which this loops over. Returns its length (truncated to len - 1,
 * always NUL-terminated), or -ENODATA once the host has no more commands.
 */
int guest_wait_cmd(char *buf, size_t len);
/* The next host command if one is queued now (EMBER_WAIT_F_POLL: never sleeps): its
 * length as guest_wait_cmd's, -EAGAIN when none is queued yet, -ENODATA when none can
 * ever come (no control socket and the --guest-cmd list is used up). */
int guest_poll_cmd(char *buf, size_t len);
/*
 * Parks the vCPU in the host (EMBER_UCALL_PARK) until a virtio device used a buffer, a
 * host command was queued, the VM is paused or stopped, or timeout_us passed (0: no
 * timeout). Returns EMBER_PARK_EVENT or EMBER_PARK_TIMEOUT. An event since the previous
 * park returned makes it return at once, so "check the rings, then park" never sleeps
 * through work; spurious EVENT returns happen, so callers re-check and loop.
 */
int guest_park(uint64_t timeout_us);
/* "Initialisation finished": the host's golden-snapshot point. Under PVH (QEMU) with
 * `pvh_snapshot` on the command line it prints "pvh: ready" on the UART and returns
 * only once the VM was stopped and resumed (a migration restored): see pvh_vmm.c. */
void guest_ready(void);
noreturn_fn void guest_reset(void);
/* 0 on a cold boot, a fresh random value in every restored clone (0 under PVH). */
uint64_t guest_generation(void);
uint32_t guest_abi_version(void); /* 0 under PVH */
/*
 * true when a PVH loader (QEMU's microvm, through the XEN_ELFNOTE_PHYS32_ENTRY note)
 * booted the guest rather than ember: ember's ports are absent, so ucalls are served
 * in the guest (PRINT, REPORT and ASSERT text goes to the UART, WAIT answers "no
 * commands", DONE and reset leave through QEMU's isa-debug-exit port when present).
 */
bool guest_booted_pvh(void);

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
/* cmdline_get_u64 with a default for an absent key; asserts (naming the key and the
 * accepted syntax) on a malformed or too large value. */
uint64_t cmdline_u64_or(const char *key, uint64_t def);

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

/* ---- kvmclock (lib/kvmclock.c): KVM's paravirtual clock, read as Linux reads it ------ */
#define KVMCLOCK_TSC_STABLE    (1u << 0) /* PVCLOCK_TSC_STABLE_BIT */
#define KVMCLOCK_GUEST_STOPPED (1u << 1) /* PVCLOCK_GUEST_STOPPED: the VMM stopped us */
/* The VMM's CPUID offers KVM's clocksource2 (leaves 0x40000000/1, read in ring 0). */
bool kvmclock_available(void);
/* Registers this CPU's pvclock page (MSR_KVM_SYSTEM_TIME_NEW); false without kvmclock. */
bool kvmclock_enable(void);
/* This CPU's kvmclock in ns (the pvclock algorithm on its page); 0 before enabling. */
uint64_t kvmclock_ns(void);
/* The page's flags byte: KVMCLOCK_TSC_STABLE, KVMCLOCK_GUEST_STOPPED. KVM keeps
 * GUEST_STOPPED in the page until the guest clears it, as Linux's watchdogs do. */
uint8_t kvmclock_flags(void);
void kvmclock_clear_stopped(void);

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

/* ---- optional modules ------------------------------------------------------------
 * lib/time.c, heap.c, virtio.c, vsock.c, rng.c are linked from an archive: a guest
 * gets them (and their .bss: vsock's buffers are ~7 MiB) only when it calls them. */

/* ---- time (lib/time.c): the TSC, scaled by a frequency found once --------------- */
#define GUEST_FOREVER UINT64_MAX /* a timeout or deadline that never passes */
/*
 * The TSC frequency. The first call finds it: ember's CPUID table (through cpuid(),
 * not the host's) leaf 0x15 (crystal * ratio), KVM's 0x40000010, leaf 0x16 (base MHz);
 * else it calibrates against the x2APIC timer (KVM counts it at 1 GHz) for ~10 ms; else
 * it assumes 2 GHz. This platform (AMD, nested) has none of the leaves: calibration.
 */
uint64_t tsc_khz(void);
const char *tsc_khz_source(void); /* "cpuid-15", "kvm", "cpuid-16", "apic", "guess" */
/* Microseconds on the TSC (rdtsc / tsc_khz); the origin is arbitrary. */
uint64_t time_us(void);

/* now + timeout_us, saturating; GUEST_FOREVER stays forever. */
static inline uint64_t deadline_after(uint64_t timeout_us)
{
	uint64_t now;

	if (timeout_us == GUEST_FOREVER)
		return GUEST_FOREVER;
	now = time_us();
	return timeout_us > GUEST_FOREVER - 1 - now ? GUEST_FOREVER - 1 : now + timeout_us;
}

/* Microseconds left before deadline: 0 once it passed, GUEST_FOREVER for forever. */
static inline uint64_t deadline_left(uint64_t deadline)
{
	uint64_t now;

	if (deadline == GUEST_FOREVER)
		return GUEST_FOREVER;
	now = time_us();
	return deadline > now ? deadline - now : 0;
}

/* ---- the function-runtime heap (lib/heap.c), shared by sandbox and fn ------------- */
/*
 * `size` bytes at the first page after the image, built from `seed`: each 4 KiB page is
 * zero, 64-byte records (compressible) or xorshift bytes, chosen by
 * mix64(seed ^ mix64(page)). The contents depend only on (size, seed): the host can
 * rebuild them and the checksum is comparable across boots.
 */
struct heap {
	uint8_t *base;
	uint64_t size, pages, seed;
};
#define HEAP_DEFAULT_SIZE (64ull << 20)
#define HEAP_DEFAULT_SEED 1ull
/* heap= and seed= from the command line (defaults above); asserts on bad values. */
void heap_config(struct heap *h);
/* Puts the heap at the first page after the image; asserts it is RAM below 4 GiB. */
void heap_place(struct heap *h);
/* Fills base[0, pages * 4096) from seed (base and pages may be set by hand). */
void heap_build(struct heap *h);
uint64_t heap_checksum(const struct heap *h);

/* ---- virtio-mmio, polled from ring 3 (lib/virtio.c) ------------------------------
 * A minimal virtio 1.x driver for the version-2 MMIO transport: no interrupts (the
 * guest polls the used rings and parks with guest_park() when idle), split virtqueues
 * in static memory (identity mapping: a pointer is its guest-physical address). Every
 * register access is a 32-bit volatile load/store, i.e. one exit to ember. */

/* One "virtio_mmio.device=<size>@<base>:<irq>[:<id>]" of the command line. */
struct virtio_mmio_loc {
	uint64_t size, base;
	uint32_t irq;
};
/* Parses the value of one entry (the text after '='); -EINVAL when malformed, -ERANGE
 * when the window is not inside the 4 GiB ring 3 maps or too small for the registers. */
int virtio_parse_mmio_arg(const char *s, size_t len, struct virtio_mmio_loc *loc);
/* All well-formed entries of the command line, in order; returns how many (<= max). */
unsigned virtio_cmdline_devices(struct virtio_mmio_loc *locs, unsigned max);

struct virtio_dev {
	uint64_t base;
	uint32_t irq, device_id;
	uint64_t features;        /* negotiated */
	const char *name;         /* for messages: "virtio-rng", "virtio-vsock", ... */
};

/* Finds the device with this id among the command line's entries (checks magic "virt",
 * version 2 and the id); -ENODEV when there is none. */
int virtio_find(uint32_t device_id, struct virtio_dev *d);
/* Checks the window at base: -ENODEV (no magic), -EPROTO (not version 2), -ENXIO
 * (another device id). */
int virtio_probe(struct virtio_dev *d, uint64_t base, uint32_t device_id);
uint32_t virtio_read(const struct virtio_dev *d, uint32_t off);
void virtio_write(const struct virtio_dev *d, uint32_t off, uint32_t v);
uint32_t virtio_status(const struct virtio_dev *d);
void virtio_set_status(const struct virtio_dev *d, uint32_t status);
/* Writes 0 to Status and waits until it reads 0; -ETIMEDOUT if it never does. */
int virtio_reset(const struct virtio_dev *d);
uint64_t virtio_device_features(const struct virtio_dev *d);
/* Reset, ACKNOWLEDGE|DRIVER, features: the device's & (wanted | VERSION_1), FEATURES_OK
 * read back. -EPROTO when the device lacks VERSION_1, -EIO when FEATURES_OK does not
 * stick (the status is left as the device had it, for the caller to report). */
int virtio_begin(struct virtio_dev *d, uint64_t wanted);
/* Writes exactly these driver features (no masking: vqbad offers unoffered bits). */
void virtio_write_features(const struct virtio_dev *d, uint64_t features);
void virtio_driver_ok(const struct virtio_dev *d);
/* Config space, 32-bit accesses; read64 retries until ConfigGeneration is stable. */
uint32_t virtio_config_read32(const struct virtio_dev *d, uint32_t off);
uint64_t virtio_config_read64(const struct virtio_dev *d, uint32_t off);
void virtio_config_write32(const struct virtio_dev *d, uint32_t off, uint32_t v);

#define VIRTQ_MAX_SIZE 256
/* The memory of one split virtqueue of up to VIRTQ_MAX_SIZE entries; the +1 entries
 * hold used_event / avail_event. Declare it static (it must not move). */
struct virtq_ring {
	struct vring_desc desc[VIRTQ_MAX_SIZE] __attribute__((aligned(4096)));
	struct {
		uint16_t flags, idx;
		uint16_t ring[VIRTQ_MAX_SIZE + 1];
	} avail __attribute__((aligned(64)));      /* the driver area */
	struct {
		uint16_t flags, idx;
		struct vring_used_elem ring[VIRTQ_MAX_SIZE];
		uint16_t avail_event;
	} used __attribute__((aligned(64)));       /* the device area */
};

struct virtq {
	struct virtio_dev *dev;
	struct virtq_ring *ring;
	uint16_t index, size;       /* size: a power of two <= QueueNumMax */
	uint16_t free_head, num_free;
	uint16_t avail_idx;         /* next avail->idx to publish */
	uint16_t kicked_idx;        /* avail_idx when we last notified (or decided not to) */
	uint16_t last_used;         /* next used entry to consume */
	uint32_t kicks;             /* notifications actually written */
	/* driver-side copies: a chain is freed from these, never from ring memory the
	 * device could have scribbled on */
	uint16_t next[VIRTQ_MAX_SIZE];
	uint16_t chain_len[VIRTQ_MAX_SIZE];
	void *cookie[VIRTQ_MAX_SIZE];
	bool in_flight[VIRTQ_MAX_SIZE];
};

struct virtq_buf {
	uint64_t addr;              /* guest-physical = pointer */
	uint32_t len;
	bool device_writes;         /* VRING_DESC_F_WRITE; these come after the readable ones */
};

/*
 * Sets up queue `index`: QueueSel, QueueReady must read 0, QueueNumMax (0: -ENOENT),
 * size = the largest power of two <= min(want, QueueNumMax, VIRTQ_MAX_SIZE), the three
 * addresses, QueueReady = 1 (read back: -EIO when it does not stick). Between
 * FEATURES_OK and virtio_driver_ok().
 */
int virtq_setup(struct virtq *q, struct virtio_dev *d, uint16_t index, struct virtq_ring *ring,
		uint16_t want);
/* Adds one chain (readable buffers first); returns its head, -ENOSPC without enough
 * free descriptors, -EINVAL for n == 0 or writable before readable. cookie (not NULL)
 * comes back from virtq_get(). Not yet visible to the device: virtq_publish() or
 * virtq_kick(). */
int virtq_add(struct virtq *q, const struct virtq_buf *bufs, unsigned n, void *cookie);
/* Makes added chains visible (store-release of avail->idx). */
void virtq_publish(struct virtq *q);
/* virtq_publish, a full barrier, then QueueNotify unless the device set
 * VRING_USED_F_NO_NOTIFY. Returns true when it notified (an exit). */
bool virtq_kick(struct virtq *q);
/* true when the device has used a chain not consumed yet (acquire load). */
bool virtq_has_used(const struct virtq *q);
/* The next used chain: frees its descriptors, returns its cookie and sets *len to the
 * bytes the device wrote; NULL when there is none. Asserts on a used id that is not in
 * flight (a device bug that would corrupt the free list). */
void *virtq_get(struct virtq *q, uint32_t *len);
/* Writes a raw avail entry and bumps avail->idx by `bump` (vqbad: bad heads, jumps). */
void virtq_push_raw(struct virtq *q, uint16_t head, uint16_t bump);

/* Debug traces of the transport ("virtio_debug" on the command line): register writes,
 * queue setup, device status. */
extern bool virtio_debug;

/* ---- virtio-rng (lib/rng.c) ------------------------------------------------------ */
/* Finds and starts the device (the first rng_read does it too); -ENODEV, -EIO. */
int rng_init(void);
/* Fills buf from the device, looping over requests (it fills at most some bounded
 * amount per request); len, or -ETIMEDOUT after 5 s without progress, or rng_init's
 * error. */
long rng_read(void *buf, size_t len);
/* The device, for vqbad (NULL before rng_init). */
struct virtio_dev *rng_device(void);

/* ---- vsock over virtio-vsock (lib/vsock.c) ----------------------------------------
 * Stream sockets only. Connections are small integers (a slot), at most
 * VSOCK_MAX_CONNS at once including listen backlogs and closing ones. Timeouts are in
 * microseconds: 0 means "do not wait" (-EAGAIN when nothing could be done),
 * GUEST_FOREVER means no limit. Calls that wait process the device's rings, spin for
 * vsock_spin_us, then park; they never sleep through work (see guest_park()).
 */
#define VSOCK_MAX_CONNS    16
#define VSOCK_MAX_LISTEN   8
#define VSOCK_CONN_BUF     (256u << 10) /* per-connection receive buffer = buf_alloc */
#define VSOCK_RX_BUFS      32           /* posted RX buffers, each header + ... */
#define VSOCK_RX_PAYLOAD   (64u << 10)  /* ... this much payload */
#define VSOCK_TX_PAYLOAD   (64u << 10)  /* largest payload of one packet we send */
#define VSOCK_TX_BUFS      16           /* TX payload bounce buffers */
#define VSOCK_PORT_ANY     0xffffffffu
#define VSOCK_SHUT_RD      VIRTIO_VSOCK_SHUTDOWN_RCV
#define VSOCK_SHUT_WR      VIRTIO_VSOCK_SHUTDOWN_SEND
#define VSOCK_HDR_SIZE     44u
_Static_assert(sizeof(struct virtio_vsock_hdr) == VSOCK_HDR_SIZE, "vsock header is 44 bytes");

/* Finds the device, resets it, sets up its queues, posts the RX and event buffers
 * and reads the CID. Forgets every connection and listener (a fresh start). -ENODEV
 * without a device; -EIO/-EPROTO/-ENOENT when the device refuses the setup. Reads
 * "vsock_debug" (packet traces) and "vsock_spin_us=" from the command line. */
int vsock_init(void);
uint64_t vsock_local_cid(void);
struct virtio_dev *vsock_device(void);
/* Accepts connections to port (answers their REQUEST at once, Linux-style); -EADDRINUSE,
 * -ENOSPC (VSOCK_MAX_LISTEN). Listeners survive a transport reset. */
int vsock_listen(uint32_t port);
/* The oldest established, not yet accepted connection to port (VSOCK_PORT_ANY: any
 * listener); -EAGAIN / -ETIMEDOUT when none came in time. */
int vsock_accept(uint32_t port, uint64_t timeout_us);
/* Connects to (cid, port); the connection, or -ECONNRESET (refused with an RST, as
 * Linux reports it), -ETIMEDOUT,
 * -ENOSPC (no free slot or TX buffer), -ECONNRESET (transport reset meanwhile; one
 * already in the event ring is processed first), -EINVAL for timeout 0. */
int vsock_connect(uint64_t cid, uint32_t port, uint64_t timeout_us);
/* Up to len bytes as soon as any are there; 0 at end of stream (the peer shut down its
 * sending side and everything was read); -EAGAIN / -ETIMEDOUT; -ECONNRESET once reset
 * (bytes received before the reset are still returned first); -EBADF. */
long vsock_read(int c, void *buf, size_t len, uint64_t timeout_us);
/* Queues all of buf within the peer's credit (copying it: buf is free on return);
 * returns len, or the bytes queued before the timeout, or -EAGAIN / -ETIMEDOUT when
 * none were, -EPIPE after a shutdown of either direction that forbids it,
 * -ECONNRESET, -EBADF. */
long vsock_write(int c, const void *buf, size_t len, uint64_t timeout_us);
/* OP_SHUTDOWN with VSOCK_SHUT_RD / VSOCK_SHUT_WR. */
int vsock_shutdown(int c, unsigned how);
/* Frees the connection: a live one is shut down both ways and its slot stays busy
 * until the peer's RST (or 2 s, then we send RST); never waits. */
void vsock_close(int c);
/* Bytes readable now without waiting. */
size_t vsock_readable(int c);
/* Processes the rings once (events, RX, TX completions, close deadlines); true when
 * anything happened. */
bool vsock_poll(void);
/* After a restore: true once more than `seen` transport resets were processed, false
 * after timeout_us. Notifies the event queue first: a device may write the event only
 * when it next runs, and it must not run the guest's TX before it. */
bool vsock_await_reset(uint64_t seen, uint64_t timeout_us);
/* vsock_poll; when nothing happened, spin (vsock_spin_us) then park until deadline
 * (absolute, time_us()). true when something happened; false on a timeout or a wake
 * with nothing for vsock (e.g. a host command). */
bool vsock_wait(uint64_t deadline);

enum vsock_state {
	VSOCK_FREE = 0,
	VSOCK_CONNECTING,   /* we sent REQUEST */
	VSOCK_PENDING,      /* established by a peer, waiting for vsock_accept */
	VSOCK_CONNECTED,
	VSOCK_CLOSING,      /* closed by us; waiting for the peer's RST */
	VSOCK_DEAD,         /* reset (RST, transport reset, refused); waiting for vsock_close */
};

struct vsock_conn_info {
	enum vsock_state state;
	uint64_t peer_cid;
	uint32_t local_port, peer_port;
	/* the peer's credit: tx_cnt - peer_fwd_cnt bytes are in flight */
	uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
	uint32_t fwd_cnt, rx_len;                      /* ours */
	unsigned peer_shut, our_shut;                  /* VSOCK_SHUT_* */
	int err;                                       /* why it is DEAD */
};
int vsock_conn_info(int c, struct vsock_conn_info *info);

struct vsock_stats {
	uint64_t rx_pkts, tx_pkts, rx_bytes, tx_bytes;
	uint64_t transport_resets, rst_rx, rst_tx, credit_updates_tx, credit_requests_tx;
	uint64_t dropped;          /* malformed, wrong CID, over credit, no TX buffer for RST */
	uint64_t kicks, parks;     /* exits spent on notifies and parks */
};
const struct vsock_stats *vsock_get_stats(void);

/* vqbad: queues a packet with this header exactly as given (h->len may lie) and
 * payload_len bytes of payload (0: header only) in its own descriptor, and kicks.
 * -ENOSPC without TX space, -ENODEV before vsock_init. */
int vsock_send_raw(const struct virtio_vsock_hdr *h, const void *payload, uint32_t payload_len);
/* vqbad: the RX and TX virtqueues. */
struct virtq *vsock_queue(unsigned index);

#endif
