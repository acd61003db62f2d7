/*
 * ember core layer: KVM handles, guest memory, vCPUs, the I/O bus, the VM object,
 * logging and timing. Everything returns 0 or a negative errno; nothing here exits.
 */
#ifndef EMBER_VMM_H
#define EMBER_VMM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ember_abi.h"
#include "seccomp_slots.h"

#ifndef EMBER_VERSION
#define EMBER_VERSION "0.0.0-dev"
#endif

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define PAGE_SIZE 4096ull
#define MiB (1024ull * 1024)
#define GiB (1024ull * MiB)
/* the largest guest RAM ember runs (--mem, and a restored snapshot's memory.size) */
#define VM_MAX_MEM_BYTES (64ull * GiB)

/* ---- log.c ------------------------------------------------------------------ */
enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };
void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
/* "error", "warn", "info", "debug": 0 with *out, or -EINVAL. */
int log_parse_level(const char *s, enum log_level *out);
/* Log lines go to path from now on (O_APPEND, created 0600); a FIFO never blocks: see
 * README "Logging". 0 or -errno with the message in eb. */
struct errbuf;
int log_open_file(const char *path, struct errbuf *eb);
/* Where log lines go (2 unless --log-file): threads under seccomp may write it. */
int log_fd_get(void);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define pr_err(...)   log_msg(LOG_ERROR, __VA_ARGS__)
#define pr_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define pr_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define pr_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/*
 * An error buffer carried down a call chain that parses untrusted input, so the
 * innermost check can say exactly what is wrong ("initrd: 300 MiB does not fit
 * below initrd_addr_max ...") while callers still just return -errno.
 */
struct errbuf {
	char msg[512];
};
int errbuf_set(struct errbuf *eb, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

struct guest_mem;
/* ---- timing.c --------------------------------------------------------------- */
/*
 * Phase timestamps in microseconds since process start. "Process start" is the
 * CLOCK_MONOTONIC value in the EMBER_T0_NS environment variable when a launcher
 * (bench/) sets it just before exec, else the earliest constructor in the process.
 */
void timing_enable(bool on);
uint64_t timing_now_us(void);
/* Records the first occurrence of a phase; prints "ember-timing <phase> <us>". */
void timing_mark(const char *phase);
/* Returns the recorded time of a phase, or -1 if it has not happened. */
int64_t timing_get(const char *phase);
void timing_reset(void);
/* With timings on, prints "ember-mem rss_kb=N guest_resident_kb=M" (M: Rss of the
 * guest RAM mapping): the VMM's own overhead is the difference. */
void timing_report_memory(const struct guest_mem *m);

/* ---- machine_line.c: the lines for machines, as text or JSON (--timings-json) -- */
struct mline {
	char buf[1024];
	size_t len;
	bool json, cut;
};
void mline_set_json(bool on);
bool mline_json(void);
void mline_begin(struct mline *m, const char *kind);
void mline_str(struct mline *m, const char *key, const char *v);
void mline_u64(struct mline *m, const char *key, uint64_t v);
void mline_hex(struct mline *m, const char *key, uint64_t v);
/* text: the value alone ("ember-timing <phase> <us>"); JSON: "key": value */
void mline_pos_str(struct mline *m, const char *key, const char *v);
void mline_pos_u64(struct mline *m, const char *key, uint64_t v);
/* ends the line and writes it to stderr with one write() */
void mline_end(struct mline *m);

/* ---- kvm.c ------------------------------------------------------------------ */
struct kvm {
	int dev_fd;        /* /dev/kvm */
	int vm_fd;
	int run_mmap_size; /* KVM_GET_VCPU_MMAP_SIZE */
	int xsave_size;    /* bytes for KVM_GET_XSAVE2 (>= 4096) */
	int max_vcpus;
};
/* Opens /dev/kvm, checks the API version and every capability ember relies on. */
int kvm_open(struct kvm *k, struct errbuf *eb);
int kvm_create_vm(struct kvm *k, struct errbuf *eb);
/* Per-VM set-up that must follow the memslots (PLATFORM.md): TSS, identity map, irqchip, PIT. */
int kvm_create_irqchip(struct kvm *k, struct errbuf *eb);
void kvm_close(struct kvm *k);

/* ---- mem.c ------------------------------------------------------------------ */
#define MEM_MAX_REGIONS 8 /* = SNAP_MAX_REGIONS: a snapshot's layout is used as is */
/* The 32-bit PCI/MMIO hole: RAM above this goes to 4 GiB and up. */
#define MEM_HOLE_START 0xc0000000ull
#define MEM_HOLE_END   0x100000000ull

struct mem_region {
	uint64_t gpa;
	uint64_t size;
	uint64_t offset; /* offset in the host mapping and in the memory image */
};

struct guest_mem {
	struct mem_region regions[MEM_MAX_REGIONS];
	unsigned nr_regions;
	uint64_t size;      /* total RAM bytes = sum of region sizes */
	uint8_t *base;      /* one host mapping holding all regions back to back */
	/* address space reserved (PROT_NONE) by mem_reserve: memslots point into it before
	 * a backend maps the memory over it; base == reserved once one has */
	uint8_t *reserved;
	bool owned;         /* base was mapped by mem_alloc_anon / mem_map_file */
	bool anonymous;     /* plain anonymous memory: a page never touched is zero */
	bool dirty_log;     /* memslots registered with KVM_MEM_LOG_DIRTY_PAGES */
	/* Pages ember itself wrote (KVM's dirty log only sees guest writes), one bit per
	 * page of the host mapping; only kept while dirty_log is on. */
	uint64_t *host_dirty;
	/* Pages written (by the guest or by ember) since the VM was restored or last reset,
	 * whoever collected the dirty log in between (a diff snapshot does): what an
	 * in-place reset must put back. Kept while dirty_log is on. */
	uint64_t *since_reset;
};

/* Splits ram_bytes into regions around the hole. ram_bytes must be page aligned. */
int mem_layout(struct guest_mem *m, uint64_t ram_bytes, struct errbuf *eb);
/*
 * Reserves m->size bytes of address space for guest RAM, mapped PROT_NONE, so that the
 * memslots (and after them the irqchip: PLATFORM.md, ~7 ms the other way round) exist
 * before the memory does; the backends below, and the page server, map over it.
 */
int mem_reserve(struct guest_mem *m, struct errbuf *eb);
/* mmap of the guest RAM range: over the reservation if there is one, else anywhere. */
void *mem_map_backing(struct guest_mem *m, int flags, int fd);
/* Undoes mem_map_backing (of a failed set-up): the range is reserved again, if it was. */
void mem_unmap_backing(struct guest_mem *m, void *p);
int mem_alloc_anon(struct guest_mem *m, struct errbuf *eb);
/* Maps fd (a raw memory image of m->size bytes) MAP_PRIVATE: lazy, copy-on-write,
 * and the page cache is shared by every VM restored from the same file. */
int mem_map_file(struct guest_mem *m, int fd, struct errbuf *eb);
/* Sets the regions from a snapshot (validated by libsnapfmt) instead of mem_layout. */
int mem_set_regions(struct guest_mem *m, const struct mem_region *r, unsigned n, uint64_t size,
		    struct errbuf *eb);
void mem_free(struct guest_mem *m);
int mem_register(struct guest_mem *m, int vm_fd, bool dirty_log, struct errbuf *eb);
/*
 * For anonymous RAM: sets one bit per page of the host mapping (m->size / PAGE_SIZE
 * bits) for every page that exists (present or swapped, /proc/self/pagemap). Pages
 * without a bit were never touched and read as zero, so a snapshot can skip them
 * without reading them.
 */
int mem_populated_bitmap(const struct guest_mem *m, uint64_t *bitmap, struct errbuf *eb);
/* Records a host-side write to guest RAM for dirty tracking (gpa_map_write does it). */
void mem_mark_dirty(struct guest_mem *m, uint64_t gpa, uint64_t len);
/* ORs the pages written since the last call (guest and host writes) into bitmap (one
 * bit per page of the host mapping, m->size / PAGE_SIZE bits) and restarts tracking. */
int mem_dirty_collect(struct guest_mem *m, int vm_fd, uint64_t *bitmap, struct errbuf *eb);
/* Collects the dirty log into m->since_reset and returns it: the pages written since
 * restore or the last reset. The caller clears it once those pages are reverted. */
int mem_written_since_reset(struct guest_mem *m, int vm_fd, uint64_t **bitmap,
			    struct errbuf *eb);

/* Page bitmaps: one bit per page of the host mapping (dirty logs, populated pages, the
 * page server's installed pages). */
static inline uint64_t bm_words(uint64_t nbits)
{
	return (nbits + 63) / 64;
}
static inline bool bm_test(const uint64_t *w, uint64_t i)
{
	return (w[i / 64] >> (i % 64)) & 1;
}
static inline void bm_set(uint64_t *w, uint64_t i)
{
	w[i / 64] |= 1ull << (i % 64);
}
static inline void bm_clear(uint64_t *w, uint64_t i)
{
	w[i / 64] &= ~(1ull << (i % 64));
}
uint64_t *bm_alloc(uint64_t nbits); /* zeroed; NULL when out of memory */
/* Calls fn for every run of set bits [first, first + count) in a bitmap of npages
 * bits, in order; stops at (and returns) fn's first non-zero result. */
int bm_for_each_run(const uint64_t *bm, uint64_t npages,
		    int (*fn)(void *opaque, uint64_t first, uint64_t count), void *opaque);

/*
 * THE bounds check: every guest physical address ember dereferences goes through
 * here. Returns a host pointer to [gpa, gpa+len) or NULL when any byte of the range
 * is outside RAM or the range crosses a region boundary. Overflow-safe. Read-only:
 * whatever ember writes goes through gpa_map_write or gpa_write.
 */
const void *gpa_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len);
/* gpa_ptr's check alone, on a layout that may have no mapping yet (a snapshot's). */
bool gpa_in_ram(const struct guest_mem *m, uint64_t gpa, uint64_t len);
/*
 * THE way ember writes guest memory (device DMA, loaders, ucall replies): gpa_ptr's
 * check, and the range is recorded as written by the host (mem_mark_dirty) so diff
 * snapshots and dirty-page resets see it. The caller writes right away.
 */
void *gpa_map_write(struct guest_mem *m, uint64_t gpa, uint64_t len);
int gpa_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len);
int gpa_write(struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len);
/* Region index holding gpa, or -1. */
int mem_region_of(const struct guest_mem *m, uint64_t gpa);

/* ---- bus.c ------------------------------------------------------------------ */
struct device;
struct bus_range {
	uint64_t base, len;
	struct device *dev;
};
#define BUS_MAX_RANGES 32
struct bus {
	struct bus_range ranges[BUS_MAX_RANGES]; /* sorted by base, non-overlapping */
	unsigned nr;
};
int bus_add(struct bus *b, uint64_t base, uint64_t len, struct device *dev);
/* Finds the device covering [addr, addr+len), or NULL. */
const struct bus_range *bus_find(const struct bus *b, uint64_t addr, uint64_t len);

/* ---- the VM ----------------------------------------------------------------- */
enum console_kind { CONSOLE_STDIO, CONSOLE_NONE, CONSOLE_FILE };
/* Default --console-limit: far more than any boot log or test guest prints (Linux's boot
 * log is well under 1 MiB), yet a guest writing flat out (~3 MB/s through the UART
 * here) needs ~20 s to reach it, and N VMs can take at most N times 64 MiB of disk. */
#define CONSOLE_LIMIT_DEFAULT (64ull << 20)

/* The guest's serial output: every byte it wrote is in exactly one of the last three
 * (or none, with --console none). */
struct console_stats {
	uint64_t bytes;          /* written to the UART by the guest */
	uint64_t bytes_written;  /* reached the console */
	uint64_t bytes_dropped;  /* lost: the console failed (ENOSPC, EIO, ...) or stayed full */
	uint64_t bytes_limited;  /* not written: past --console-limit */
};

#define VM_MAX_VCPUS 64
#define VM_MAX_GUEST_CMDS 64

struct vm_config {
	uint64_t mem_bytes;
	unsigned nr_vcpus;
	const char *kernel;
	const char *initrd;
	const char *cmdline;
	enum console_kind console;
	const char *console_path;
	uint64_t console_limit;       /* --console-limit: bytes of guest output, 0: none */
	bool console_input;           /* feed stdin to the UART */
	const char *guest_cmds[VM_MAX_GUEST_CMDS];
	unsigned nr_guest_cmds;
	bool stop_on_ready;           /* vm_run returns VM_STOP_READY at the ready port */
	bool stop_on_sync;            /* vm_run returns VM_STOP_SYNC at each GUEST_SYNC */
	bool timings;
	bool timings_json;            /* --timings-json: the machine lines as JSON objects */
	uint64_t timeout_ms;          /* 0: none; else stop with VM_STOP_TIMEOUT */
	bool dirty_tracking;          /* track dirty pages for diff snapshots */
	/* virtio-vsock (--vsock-cid, --vsock-uds): boot creates the device when vsock_cid
	 * is set; restore takes the CID from the snapshot (vsock_cid, when set, must match) */
	uint64_t vsock_cid;           /* 0: none (valid CIDs are 3..0xfffffffe) */
	const char *vsock_uds;        /* host side of the hybrid scheme (INVOCATION.md) */
	/* restore only */
	enum mem_backend { MEM_BACKEND_AUTO, MEM_BACKEND_MMAP, MEM_BACKEND_UFFD,
			   MEM_BACKEND_EAGER } mem_backend;
	bool record_ws;               /* uffd: record the first request's working set */
	bool prefetch_ws;             /* uffd: prefetch the snapshot's working set */
	bool no_io_uring;             /* uffd: read with pread (to measure io_uring) */
	/* the control socket: who may connect (--api-group), where snapshots may go */
	struct usock_access { bool has_group; gid_t gid; } api_access;
	const char *snapshot_root;    /* --snapshot-root DIR; NULL: any absolute path */
	bool seccomp;                 /* every thread installs its filter (src/seccomp.c) */
};

/* Why vm_run returned. */
enum vm_stop_reason {
	VM_STOP_NONE = 0,
	VM_STOP_RESET,     /* a reset the guest asked for (i8042, KVM system event): exit 0 */
	VM_STOP_DONE,      /* GUEST_DONE: exit 0 */
	VM_STOP_ASSERT,    /* GUEST_ASSERT: exit 3 */
	VM_STOP_ERROR,     /* VMM or KVM error: exit 1 */
	VM_STOP_SIGNAL,    /* SIGINT/SIGTERM: exit 128+sig */
	VM_STOP_READY,     /* guest wrote the ready port and cfg.stop_on_ready */
	VM_STOP_SYNC,      /* GUEST_SYNC and cfg.stop_on_sync */
	VM_STOP_REQUEST,   /* vm_request_stop() from another thread (control socket) */
	VM_STOP_TIMEOUT,   /* cfg.timeout_ms elapsed: exit 124 */
	VM_STOP_CRASH,     /* triple fault or KVM crash event: the guest died, exit 4 */
};
const char *vm_stop_reason_name(enum vm_stop_reason r);

enum vcpu_msg {
	VCPU_MSG_NONE = 0,
	VCPU_MSG_RUN,    /* enter/continue KVM_RUN */
	VCPU_MSG_PAUSE,  /* leave KVM_RUN (completing pending I/O) and park */
	VCPU_MSG_QUIT,   /* leave the thread */
};

enum vcpu_run_state { VCPU_PARKED, VCPU_RUNNING, VCPU_EXITED };

struct vm;
struct vcpu {
	struct vm *vm;
	unsigned id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool thread_started;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	enum vcpu_msg msg;            /* pending message, under lock */
	enum vcpu_run_state state;    /* under lock */
	unsigned acked;               /* message sequence number acknowledged */
	unsigned seq;                 /* message sequence number sent */
	uint64_t entries;             /* KVM_RUN calls that returned */
	uint32_t wake_seen;           /* vm->wake_seq when its last PARK/WAIT returned */
	bool cpuid_set;               /* the snapshot's CPUID is in KVM (see restore_cpuid) */
};

struct vm;
/* An fd the main loop watches (EPOLLIN); cb runs on the main thread. */
struct vm_watch {
	int fd;
	void (*cb)(struct vm *vm, struct vm_watch *w, uint32_t events);
	void *opaque;
};

struct device;
struct api_server;
struct pager;
struct snap_lz4_index;
struct vm {
	struct vm_config cfg;
	struct kvm kvm;
	struct guest_mem mem;
	struct vcpu *vcpus;
	unsigned nr_vcpus;
	struct bus pio;
	struct bus mmio;
	struct device **devices; /* in dev_table order */
	unsigned nr_devices;
	struct device *serial;   /* shortcuts into devices[] */
	int console_fd;          /* guest console output, -1 for none */
	bool console_fd_owned;
	struct kvm_cpuid2 *supported_cpuid;
	const char *entry_phase; /* timing phase of the first KVM_RUN: first-entry/resumed */
	atomic_bool entered;
	bool threads_started;
	char last_snapshot_id[33];  /* parent of the next diff snapshot; "" if none */
	int sig_fd;              /* signalfd for SIGINT/SIGTERM */
	int ep;                  /* the main loop's epoll */
	struct vm_watch event_watch, sig_watch, stdin_watch;
	struct console_input {   /* --console-input: stdin bytes the UART has not taken yet */
		uint8_t buf[256];
		unsigned len;
		bool open;
	} console_in;
	struct api_server *api;
	bool paused;             /* paused by the control socket inside vm_run */
	/* restore: the uffd page server and what it reads (NULL with the mmap backend) */
	struct pager *pager;
	struct snap_lz4_index *lz4;
	char *snapshot_dir;          /* restored from; where --record-ws saves ws.bin */
	/* restore: the decoded snapshot state, what an in-place reset puts back (reset.c);
	 * the eager backend keeps the raw image open (golden_fd) or the lz4 index (lz4) to
	 * read written pages back */
	struct snap_state *golden;
	int golden_fd;
	bool standby;                /* --standby: built, not run until resumed */
	int ready_fd;                /* --ready-fd: told once the VM is ready, -1 */
	uint64_t resets;             /* in-place resets done */
	uint64_t reset_start_us;     /* when the last reset began (timing_now_us) */
	/* the guest's first port write after a restore, resume or reset (timing_now_us) */
	_Atomic uint64_t first_report_us;
	atomic_bool wedged;          /* guest memory could not be served: never run again */
	int lease_fd;                /* memguard.c: read lease on the raw memory file, -1 */
	char memfile_name[4352];     /* the restored memory file (dir/name), for messages */

	/* guest command queue for EMBER_UCALL_WAIT */
	pthread_mutex_t cmd_lock;
	char *cmds[VM_MAX_GUEST_CMDS];
	unsigned cmd_head, cmd_tail;
	bool cmd_may_arrive;     /* a control socket can queue more */
	atomic_bool told_no_cmds; /* warned that the guest asked and nothing could come */

	uint64_t generation;     /* EMBER_PORT_GEN_*: 0 on cold boot */
	bool ready_seen;

	/* stop handling: first reason wins */
	pthread_mutex_t stop_lock;
	enum vm_stop_reason stop_reason;
	int stop_code;           /* signal number or sync stage */
	char stop_msg[512];
	int event_fd;            /* vCPU -> main loop wake-up */
	bool seccomp_on;        /* the main thread's filter is installed */
	atomic_bool stopping;
	atomic_bool first_report_pending; /* restore: mark "first-report" on next guest report */

	/* vCPUs parked in a PARK or WAIT ucall sleep on wake_seq (a futex): vm_wake bumps
	 * it; wake_sleepers spares the wake-up syscall when nobody sleeps */
	uint32_t wake_seq;
	uint32_t wake_sleepers;
};

/* vm.c: lifecycle. */
int vm_create(struct vm **out, const struct vm_config *cfg, struct errbuf *eb);
int vm_boot_load(struct vm *vm, struct errbuf *eb);  /* kernel/initrd/cmdline + entry state */
/* Resumes every vCPU and runs until a stop reason; vCPUs are parked on return. */
enum vm_stop_reason vm_run(struct vm *vm);
/* memguard.c: the raw memory file cannot change under the VM (read lease, or
 * immutable; refused otherwise), and a SIGBUS on guest RAM stops the VM cleanly. */
#define MEMGUARD_LEASE_SIGNAL (SIGRTMIN + 1)
int memguard_block_lease_signal(void);
int memguard_protect(struct vm *vm, int mem_fd, const char *dir, const char *name,
		     struct errbuf *eb);
void memguard_release(struct vm *vm);
void memguard_lease_broken(struct vm *vm);
int memguard_sigbus_init(struct vm *vm);
void memguard_sigbus_fini(struct vm *vm);
void memguard_poll(struct vm *vm);

void vm_request_stop(struct vm *vm, enum vm_stop_reason r, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Process exit status for a stop reason (0, 1, 3, 128+sig). */
int vm_exit_status(const struct vm *vm);
void vm_destroy(struct vm *vm);
/* park.c: the guest command queue, and vCPUs parked in a WAIT or PARK ucall. */
int vm_cmd_push(struct vm *vm, const char *cmd);
bool vm_cmd_pending(struct vm *vm);
/* Pops into buf; returns EMBER_WAIT_* status, never waits. */
int vm_cmd_pop(struct vm *vm, char *buf, size_t len, uint32_t *out_len);
/* Something may have changed for the guest (a device used a buffer, a command was
 * queued, a vCPU got a message): parked vCPUs return from vm_park. Any thread. */
void vm_wake(struct vm *vm);
/* On a vCPU thread (v NULL: unit tests without one): sleeps until vm_wake happened
 * after this vCPU's previous park returned, a message for v, a stop, or timeout_us
 * (0: none). true when woken, false on timeout. */
bool vm_park(struct vm *vm, struct vcpu *v, uint64_t timeout_us);

/* Main-loop fds and pause/resume from within the loop (the control socket). */
int vm_watch_add(struct vm *vm, struct vm_watch *w);
void vm_watch_del(struct vm *vm, struct vm_watch *w);
/* One turn of the main loop: waits up to timeout_ms (-1: forever) and runs the
 * callbacks of the watches that fired. Their number, or -errno. */
int vm_loop_once(struct vm *vm, int timeout_ms);
void vm_pause(struct vm *vm);
void vm_resume(struct vm *vm);

/*
 * A VM's shape: the KVM objects it is made of. Boot takes it from the config (--mem,
 * --vcpus, the devices the flags ask for), restore from the snapshot. Everything else
 * in vm_config is per run (console, sockets, timings); the generation is per restore.
 */
struct snap_state;
struct vm_shape {
	unsigned nr_vcpus;
	const struct mem_region *regions;
	unsigned nr_regions;
	uint64_t mem_bytes;
	const struct snap_state *devices; /* NULL: the devices the config asks for (boot) */
	bool fresh_vcpus;                 /* boot: power-on CPUID and MSRs */
};
struct vm *vm_alloc(const struct vm_config *cfg);
/*
 * The one build sequence, for boot and restore alike, in the order that is cheapest on
 * KVM: VM, memslots over reserved address space, irqchip, vCPUs, console and devices.
 * Guest memory itself is attached afterwards by the caller's backend (mem_alloc_anon,
 * mem_map_file, the page server), into the reservation.
 */
int vm_build(struct vm *vm, const struct vm_shape *s, struct errbuf *eb);

/* ---- snapshot.c / restore.c ------------------------------------------------------ */
struct snapshot_opts {
	bool diff;          /* only pages written since the previous snapshot */
	bool compress;      /* lz4-compressed memory (FORMAT.md section 10) */
	bool in_dir;        /* dir is a name inside the open directory dir_fd */
	int dir_fd;
};
struct snapshot_stats {
	uint64_t us_total, us_state, us_memory, us_commit;
	uint64_t us_digest;          /* memory digests, part of us_memory (FORMAT.md 5.1) */
	uint64_t bytes_written, pages_written, zero_pages;
	char id[33];
};
/* Saves a parked VM (vm_run has returned, or the control socket paused it) into a new
 * directory dir; on failure nothing loadable is left and the VM is untouched. */
int vm_snapshot_save(struct vm *vm, const char *dir, const struct snapshot_opts *o,
		     struct snapshot_stats *stats, struct errbuf *eb);
/* Builds a VM from a snapshot directory, validating everything before touching KVM.
 * cfg supplies console, timings, guest commands; vCPU count and RAM come from the
 * snapshot. */
int vm_restore(struct vm **out, const struct vm_config *cfg, const char *dir, struct errbuf *eb);

/* reset.c: in-place reset to the snapshot the VM was restored from (memory, VM, vCPU
 * and device state; vsock connections end; a new generation). The VM must be paused
 * (vm_pause) and stays paused. On failure the VM must not run again. */
struct reset_stats {
	uint64_t pages_reverted;
	uint64_t us_memory, us_state, us_total;
	bool whole_mapping;         /* memory reverted in one call instead of per run */
	bool changed;               /* the VM was touched: after a failure it must not run */
};
int vm_reset(struct vm *vm, struct reset_stats *rs, struct errbuf *eb);
/* restore.c, shared with reset.c */
int vm_set_state(struct vm *vm, const struct snap_state *st, struct errbuf *eb);
int vm_new_generation(uint64_t *gen, struct errbuf *eb);

/* ---- api.c: the control socket (FORMAT.md, "Control socket") ---------------- */
#define API_MAX_FRAME 65536
struct api_request {
	char verb[32];
	char dir[4096];
	char cmd[EMBER_UCALL_DATA_MAX];
	bool diff;
	bool compress;
	bool standby;       /* reset: stay paused afterwards */
	uint64_t id;
	bool has_id;
};
/* Decodes one untrusted request body (the msgpack map after the length prefix). */
int api_decode_request(const uint8_t *body, size_t len, struct api_request *rq,
		       struct errbuf *eb);
int api_start(struct vm *vm, const char *path, struct errbuf *eb);
/* api_metrics.c: the whole `metrics` response (ok, id, the metrics) into pk */
struct msgpack_packer;
void api_metrics_pack(struct vm *vm, struct msgpack_packer *pk, bool has_id, uint64_t id);
/* api_path.c: opens the parent of the snapshot directory dir: absolute, no
 * symlink on the way, beneath root when root is set; name gets the last component. */
int api_snapshot_parent(const char *root, const char *dir, char name[256], struct errbuf *eb);

/* ---- usock.c: Unix sockets only their owner (and --api-group) can use -------- */
struct ucred;
int usock_parse_group(const char *val, gid_t *gid, struct errbuf *eb);
/* Binds and listens at path, mode 0600 (0660 and acc's group); refuses a live socket
 * there, replaces a stale one. The fd (non-blocking) or -errno; flag names the option. */
int usock_listen(const char *path, const char *flag, const struct usock_access *acc,
		 int backlog, struct errbuf *eb);
/* The peer of fd is root, ember's euid, or in acc's group; *cred says who it is. */
bool usock_peer_allowed(int fd, const struct usock_access *acc, struct ucred *cred);
void api_stop(struct vm *vm);

/* ---- msgpack_put.c: strings and key/value pairs of the sockets' msgpack replies -- */
struct msgpack_packer;
void mp_put_str(struct msgpack_packer *pk, const char *s);
void mp_put_kv_str(struct msgpack_packer *pk, const char *k, const char *v);
void mp_put_kv_u64(struct msgpack_packer *pk, const char *k, uint64_t v);

/* ---- seccomp.c: one build-time filter per kind of thread (README, "Seccomp") ---- */
enum seccomp_thread { SECCOMP_MAIN, SECCOMP_VCPU, SECCOMP_PAGER, SECCOMP_VSOCK,
		      SECCOMP_CPUCHECK, SECCOMP_POOL /* `ember pool`'s process */ };
/* The fds a thread may write to (its filter's `write` rule); up to SECCOMP_FD_SLOTS. */
struct seccomp_fds {
	int fd[SECCOMP_FD_SLOTS];
	unsigned n;
	bool overflow;
};
/* Adds fd (ignores fd < 0 and repeats). */
void seccomp_fds_add(struct seccomp_fds *s, int fd);
/* Confines the calling thread to its allowlist; anything else kills the process. fds:
 * what it may write to (NULL for the main thread, which writes snapshot files). Then
 * EMBER_SECCOMP_PROBE=<name> makes the named kind of thread break its own rules. */
int seccomp_apply(enum seccomp_thread t, const struct seccomp_fds *fds);
const char *seccomp_thread_name(enum seccomp_thread t);
/* The fds a VM's vCPU threads write: stderr, the log, the console, the main loop's
 * eventfd, the devices' eventfds (vm.c). */
void vm_vcpu_write_fds(struct vm *vm, struct seccomp_fds *s);

/* vcpu.c */
int vcpu_create(struct vm *vm, struct vcpu *v, unsigned id, struct errbuf *eb);
int vcpu_start_thread(struct vcpu *v);
/* pthread_create with every signal blocked in the new thread (vCPUs, device threads). */
int thread_start_nosig(pthread_t *t, void *(*fn)(void *), void *arg);
/* Sends a message to every vCPU and waits until all have acted on it. */
int vcpus_send(struct vm *vm, enum vcpu_msg msg);
void vcpu_destroy(struct vcpu *v);
/* Installs the kick signal handler; call once per process before starting threads. */
int vcpu_signals_init(void);
/* The vCPU whose thread this is, or NULL. */
struct vcpu *vcpu_current(void);
/* A message for v is waiting (it must leave KVM_RUN or a park). */
bool vcpu_msg_pending(struct vcpu *v);

#endif
