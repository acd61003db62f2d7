/*
 * ember snapshot format library (libsnapfmt): the schema of ember's snapshots.
 *
 * Self-contained on purpose: no <linux/kvm.h>, no /dev/kvm, no ember headers, so it
 * can be unit-tested and fuzzed alone and used by third-party tools. The C structs
 * mirror the state keys of FORMAT.md; field names follow the KVM UAPI structs so the
 * VMM's conversion is mechanical. Every function returns 0 or a negative errno and,
 * on error, fills a struct snap_err (may be NULL) with a message naming what is
 * wrong, e.g. "vcpus[1].sregs.cs.limit: expected unsigned integer, got string".
 *
 * Typical use:
 *   save:    snap_state_init(&st, &err); fill st;  snap_writer_begin(dir, &w, &err);
 *            snap_writer_write_sparse(w, 0, ram, ram_size, &err);  snap_writer_commit(w, &st, &err);
 *   restore: snap_dir_open(dir, &d, &err);  use d.state and d.mem_fd;  snap_dir_close(&d);
 */
#ifndef EMBER_SNAPFMT_H
#define EMBER_SNAPFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SNAP_FORMAT_MAJOR 1
#define SNAP_FORMAT_MINOR 0

#define SNAP_MAGIC         "EMBRSNAP"
#define SNAP_PREAMBLE_SIZE 16
#define SNAP_STATE_FILE    "state.msgpack"
#define SNAP_MEMORY_FILE   "memory.raw"

/* Limits a reader enforces (FORMAT.md, "Reader limits"). */
#define SNAP_MAX_BODY        (64u << 20) /* state body bytes */
#define SNAP_MAX_DEPTH       8           /* container nesting */
#define SNAP_MAX_STR         4096
#define SNAP_MAX_BIN         (1u << 20)
#define SNAP_MAX_CONTAINER   65536       /* array entries / map pairs */
#define SNAP_MAX_OBJECTS     (2u << 20)  /* msgpack objects in the whole body */

#define SNAP_PAGE_SIZE       4096u
#define SNAP_MAX_GPA         (1ull << 52)
#define SNAP_MAX_REGIONS     8
#define SNAP_MAX_VCPUS       64
#define SNAP_XSAVE_MIN       4096u
#define SNAP_XSAVE_MAX       65536u
#define SNAP_MAX_XCRS        16
#define SNAP_LAPIC_SIZE      1024
#define SNAP_MAX_MSRS        1024
#define SNAP_MAX_CPUID       256
#define SNAP_MAX_DEVICES     64
#define SNAP_DEV_NAME_MAX    31          /* device and field names, bytes */
#define SNAP_DEV_MAX_FIELDS  256
#define SNAP_DEV_BIN_MAX     65536u
#define SNAP_MAX_RANGES      SNAP_MAX_CONTAINER
#define SNAP_ID_LEN          32          /* hex characters */
#define SNAP_IOAPIC_PINS     24
#define SNAP_PIT_CHANNELS    3

struct snap_err {
	char msg[512];
};
/* Formats msg into err (if non-NULL) and returns code (a negative errno). */
int snap_err_set(struct snap_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- header ------------------------------------------------------------------ */
struct snap_cpu_info {
	char vendor[16];         /* CPUID vendor string, e.g. "GenuineIntel" */
	uint32_t family, model, stepping;
};

struct snap_header {
	uint32_t major, minor;   /* format version */
	char ember_version[64];  /* the writer's version */
	char arch[16];           /* "x86_64" */
	struct snap_cpu_info cpu;
	uint64_t created;        /* unix seconds */
	char id[SNAP_ID_LEN + 1];     /* 32 lowercase hex chars, random */
	char parent[SNAP_ID_LEN + 1]; /* id of the base of a diff, else "" */
};

/* ---- vm ---------------------------------------------------------------------- */
struct snap_region {
	uint64_t gpa, size, file_offset;
};

struct snap_clock {              /* kvm_clock_data */
	uint64_t clock;
	uint32_t flags;
	uint64_t realtime, host_tsc;
};

struct snap_pic {                /* kvm_pic_state */
	uint8_t last_irr, irr, imr, isr, priority_add, irq_base, read_reg_select, poll,
		special_mask, init_state, auto_eoi, rotate_on_auto_eoi,
		special_fully_nested_mode, init4, elcr, elcr_mask;
};

struct snap_ioapic {             /* kvm_ioapic_state */
	uint64_t base_address;
	uint32_t ioregsel, id, irr;
	uint64_t redirtbl[SNAP_IOAPIC_PINS];
};

struct snap_pit_channel {        /* kvm_pit_channel_state */
	uint32_t count;
	uint16_t latched_count;
	uint8_t count_latched, status_latched, status, read_state, write_state,
		write_latch, rw_mode, mode, bcd, gate;
	int64_t count_load_time;
};

struct snap_pit {                /* kvm_pit_state2 */
	uint32_t flags;
	struct snap_pit_channel channels[SNAP_PIT_CHANNELS];
};

struct snap_vm {
	struct snap_region regions[SNAP_MAX_REGIONS];
	uint32_t nr_regions;
	struct snap_clock clock;
	struct snap_pic pic_master, pic_slave;
	struct snap_ioapic ioapic;
	struct snap_pit pit;
	uint32_t tsc_khz;
};

/* ---- vcpus ------------------------------------------------------------------- */
struct snap_regs {               /* kvm_regs */
	uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
	uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
	uint64_t rip, rflags;
};

struct snap_segment {            /* kvm_segment */
	uint64_t base;
	uint32_t limit;
	uint16_t selector;
	uint8_t type, present, dpl, db, s, l, g, avl, unusable;
};

struct snap_dtable {             /* kvm_dtable */
	uint64_t base;
	uint16_t limit;
};

struct snap_sregs {              /* kvm_sregs */
	struct snap_segment cs, ds, es, fs, gs, ss, tr, ldt;
	struct snap_dtable gdt, idt;
	uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base;
	uint64_t interrupt_bitmap[4];
};

struct snap_xcr {
	uint32_t xcr;
	uint64_t value;
};

struct snap_msr {
	uint32_t index;
	uint64_t value;
};

struct snap_ev_exception {
	uint8_t injected, nr, has_error_code, pending;
	uint32_t error_code;
};
struct snap_ev_interrupt {
	uint8_t injected, nr, soft, shadow;
};
struct snap_ev_nmi {
	uint8_t injected, pending, masked;
};
struct snap_ev_smi {
	uint8_t smm, pending, smm_inside_nmi, latched_init;
};
struct snap_events {             /* kvm_vcpu_events */
	struct snap_ev_exception exception;
	struct snap_ev_interrupt interrupt;
	struct snap_ev_nmi nmi;
	uint32_t sipi_vector, flags;
	struct snap_ev_smi smi;
	uint8_t triple_fault_pending, exception_has_payload;
	uint64_t exception_payload;
};

struct snap_debugregs {          /* kvm_debugregs */
	uint64_t db[4], dr6, dr7, flags;
};

struct snap_cpuid_entry {        /* kvm_cpuid_entry2 */
	uint32_t function, index, flags, eax, ebx, ecx, edx;
};

struct snap_vcpu {
	uint32_t id;
	struct snap_regs regs;
	struct snap_sregs sregs;
	uint8_t *xsave;              /* heap, xsave_len bytes (4096..65536) */
	uint32_t xsave_len;
	struct snap_xcr xcrs[SNAP_MAX_XCRS];
	uint32_t nr_xcrs;
	uint8_t lapic[SNAP_LAPIC_SIZE];
	struct snap_msr *msrs;       /* heap, nr_msrs entries */
	uint32_t nr_msrs;
	struct snap_events events;
	uint32_t mp_state;
	struct snap_debugregs debugregs;
	struct snap_cpuid_entry *cpuid; /* heap, nr_cpuid entries */
	uint32_t nr_cpuid;
	uint64_t tsc;
};

/* ---- devices ----------------------------------------------------------------- */
enum snap_dev_type { SNAP_DEV_U64 = 1, SNAP_DEV_BIN = 2 };

struct snap_dev_field {
	char name[SNAP_DEV_NAME_MAX + 1];
	uint32_t type;               /* enum snap_dev_type */
	uint32_t len;                /* SNAP_DEV_BIN: bytes at bin */
	uint64_t u64;
	uint8_t *bin;                /* heap */
};

struct snap_device {
	char name[SNAP_DEV_NAME_MAX + 1];
	uint32_t version;
	struct snap_dev_field *fields; /* heap, in insertion (file) order */
	uint32_t nr_fields, cap_fields;
};

/* ---- memory ------------------------------------------------------------------ */
enum snap_mem_encoding { SNAP_ENC_RAW = 0 };
enum snap_mem_kind { SNAP_MEM_FULL = 0, SNAP_MEM_DIFF = 1 };

struct snap_range {              /* pages [first, first + count) */
	uint64_t first, count;
};

struct snap_memory {
	char file[256];              /* plain file name inside the snapshot directory */
	uint64_t size;               /* logical bytes of the memory file */
	uint32_t page_size;          /* 4096 */
	uint32_t encoding;           /* enum snap_mem_encoding */
	uint32_t kind;               /* enum snap_mem_kind */
	struct snap_range *ranges;   /* heap; diff only: sorted, disjoint, non-adjacent */
	uint32_t nr_ranges;
};

/* ---- the whole state --------------------------------------------------------- */
struct snap_state {
	struct snap_header header;
	struct snap_vm vm;
	struct snap_vcpu *vcpus;     /* heap, nr_vcpus entries */
	uint32_t nr_vcpus;
	struct snap_device *devices; /* heap, capacity SNAP_MAX_DEVICES: pointers stay valid */
	uint32_t nr_devices;
	struct snap_memory memory;
};

/*
 * Zeroes st and sets the defaults: format 1.0, this ember's version, "x86_64", the
 * current time, a fresh random id, memory file "memory.raw", page size 4096, raw
 * encoding, kind full. Fails only if no random bytes are available.
 */
int snap_state_init(struct snap_state *st, struct snap_err *err);
/* Frees every heap part and zeroes st. Safe on a zeroed or partially built state. */
void snap_state_free(struct snap_state *st);
/* Writes 32 random lowercase hex characters and a NUL. */
int snap_new_id(char out[SNAP_ID_LEN + 1], struct snap_err *err);

/* Allocation helpers: each replaces any previous array with n zeroed entries. */
int snap_state_set_vcpus(struct snap_state *st, uint32_t n, struct snap_err *err);
int snap_vcpu_set_xsave(struct snap_vcpu *v, const void *data, uint32_t len, struct snap_err *err);
int snap_vcpu_set_msrs(struct snap_vcpu *v, uint32_t n, struct snap_err *err);
int snap_vcpu_set_cpuid(struct snap_vcpu *v, uint32_t n, struct snap_err *err);
int snap_memory_set_ranges(struct snap_state *st, const struct snap_range *r, uint32_t n,
			   struct snap_err *err);

/* Devices: add one (name unique, <= 31 bytes), then put its fields. */
int snap_state_add_device(struct snap_state *st, const char *name, uint32_t version,
			  struct snap_device **out, struct snap_err *err);
struct snap_device *snap_state_find_device(const struct snap_state *st, const char *name);
/* Like find, but a missing device is an error naming it. */
int snap_state_get_device(const struct snap_state *st, const char *name,
			  const struct snap_device **out, struct snap_err *err);
int snap_dev_put_u64(struct snap_device *dev, const char *field, uint64_t value,
		     struct snap_err *err);
int snap_dev_put_bin(struct snap_device *dev, const char *field, const void *data,
		     uint32_t len, struct snap_err *err);
/* Fail with "device serial: field ier: ..." when missing, of the wrong type, > max_value / > max_len. */
int snap_dev_get_u64(const struct snap_device *dev, const char *field, uint64_t max_value,
		     uint64_t *out, struct snap_err *err);
int snap_dev_get_bin(const struct snap_device *dev, const char *field, uint32_t max_len,
		     const uint8_t **ptr, uint32_t *len, struct snap_err *err);

/* Semantic checks of a whole state (FORMAT.md, "Validation"). */
int snap_state_validate(const struct snap_state *st, struct snap_err *err);

/* ---- state file bytes -------------------------------------------------------- */
/*
 * Validates st, then encodes the whole state file (preamble + body) into a malloc'd
 * buffer the caller frees.
 */
int snap_state_encode(const struct snap_state *st, uint8_t **buf, size_t *len,
		      struct snap_err *err);
/*
 * Decodes untrusted state-file bytes into st (which it initialises): preamble and
 * CRC32C, bounds pre-pass, msgpack decode, schema walk, snap_state_validate.
 * On error st is left empty (nothing to free).
 */
int snap_state_decode(const void *file, size_t len, struct snap_state *st, struct snap_err *err);

/* Bounds pre-pass over a msgpack body (exposed for tests and fuzzing). */
int snap_msgpack_precheck(const uint8_t *body, size_t len, struct snap_err *err);

/* CRC32C (Castagnoli). crc is the previous result (0 to start): chains like zlib's crc32. */
uint32_t snap_crc32c(uint32_t crc, const void *buf, size_t len);
/* The portable table implementation, always available (for tests). */
uint32_t snap_crc32c_sw(uint32_t crc, const void *buf, size_t len);
bool snap_crc32c_hw_available(void);

/* ---- snapshot directories ---------------------------------------------------- */
/* Reads DIR/state.msgpack (size capped) and decodes + validates it. */
int snap_state_load(const char *dir, struct snap_state *st, struct snap_err *err);

struct snap_mem_info {
	uint64_t logical;            /* st_size */
	uint64_t allocated;          /* st_blocks * 512 */
};
/*
 * Opens the memory file named by st (O_RDONLY, O_NOFOLLOW, regular file) and checks
 * its size equals memory.size, so a MAP_PRIVATE mapping never SIGBUSes.
 * Returns the fd in *fd (O_CLOEXEC).
 */
int snap_mem_open(const char *dir, const struct snap_state *st, int *fd,
		  struct snap_mem_info *info, struct snap_err *err);

struct snap_dir {
	struct snap_state state;
	int mem_fd;
	struct snap_mem_info mem;
};
/* snap_state_load + snap_mem_open. On error d is left closed (mem_fd -1). */
int snap_dir_open(const char *dir, struct snap_dir *d, struct snap_err *err);
void snap_dir_close(struct snap_dir *d);

/* ---- writing ----------------------------------------------------------------- */
struct snap_write_stats {
	uint64_t bytes_written;      /* memory bytes written (data, not holes) */
	uint64_t pages_written;
	uint64_t zero_pages_skipped; /* left as holes */
};

struct snap_writer;
/*
 * Starts a snapshot at dir: fails with -EEXIST if dir exists; creates the sibling
 * "DIR.tmp.<pid>" and the memory file in it.
 */
int snap_writer_begin(const char *dir, struct snap_writer **out, struct snap_err *err);
/* The open memory file (O_RDWR), for a VMM that streams memory itself. */
int snap_writer_mem_fd(const struct snap_writer *w);
/*
 * Writes len bytes of guest RAM at file_offset (page aligned), skipping all-zero
 * 4 KiB pages (they stay holes). The file is extended to memory.size at commit.
 */
int snap_writer_write_sparse(struct snap_writer *w, uint64_t file_offset, const void *buf,
			     uint64_t len, struct snap_err *err);
/*
 * Diff snapshots: image holds the memory file layout (image_len bytes from file
 * offset 0); writes only the given page ranges, at their natural offsets, sparse.
 */
int snap_writer_write_ranges(struct snap_writer *w, const void *image, uint64_t image_len,
			     const struct snap_range *ranges, uint32_t n, struct snap_err *err);
const struct snap_write_stats *snap_writer_stats(const struct snap_writer *w);
/*
 * Validates st (memory.file must be "memory.raw"), sizes the memory file to
 * memory.size, writes the state file, fsyncs both and the directory, renames the
 * temp directory to DIR (never replacing one) and fsyncs the parent. Frees w, also
 * on failure (then it removes the temp directory: nothing loadable is left behind).
 */
int snap_writer_commit(struct snap_writer *w, const struct snap_state *st, struct snap_err *err);
/* Removes the temp directory and frees w. NULL is a no-op. */
void snap_writer_abort(struct snap_writer *w);

/* Writes a full snapshot at out: base's memory with diff's ranges applied, diff's state. */
int snap_merge(const char *base, const char *diff, const char *out,
	       struct snap_write_stats *stats, struct snap_err *err);

/* ---- text -------------------------------------------------------------------- */
/* Every field as "path = value" lines, in schema order (stable, diffable). */
int snap_dump(FILE *out, const struct snap_state *st);

#endif
