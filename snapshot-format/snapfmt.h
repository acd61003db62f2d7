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
 *   restore: snap_dir_open(dir, &d, &err);  use d.state and d.mem_fd (raw) or d.lz4
 *            (lz4: snap_lz4_chunk + snap_lz4_chunk_decode per chunk);  snap_dir_close(&d);
 *   lz4:     as save, but snap_writer_write_lz4(w, ram, ram_size, &err) instead of
 *            write_sparse; the commit describes the compressed memory in the state.
 */
#ifndef EMBER_SNAPFMT_H
#define EMBER_SNAPFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SNAP_FORMAT_MAJOR 1
#define SNAP_FORMAT_MINOR 3

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
enum snap_mem_encoding { SNAP_ENC_RAW = 0, SNAP_ENC_LZ4 = 1 };
enum snap_mem_kind { SNAP_MEM_FULL = 0, SNAP_MEM_DIFF = 1 };

struct snap_range {              /* pages [first, first + count) */
	uint64_t first, count;
};

/* 1.3: memory digests (snap_digest.c, FORMAT.md section 5.1) */
#define SNAP_DIGEST_BLOCK   (2u << 20)   /* bytes per block digest ember writes */
#define SNAP_DIGEST_EIGHTHS 8            /* one anchor page per eighth of the image */
#define SNAP_MAX_ANCHORS    16
#define SNAP_DIGESTS_MAX    (1u << 20)   /* bytes of memory.digests: the reader's bin limit */
struct snap_anchor {             /* a page the restore checks: the image page, its CRC32C */
	uint64_t page;
	uint32_t crc32c;
};

struct snap_memory {
	char file[256];              /* plain file name inside the snapshot directory */
	uint64_t size;               /* logical bytes of the memory file */
	uint32_t page_size;          /* 4096 */
	uint32_t encoding;           /* enum snap_mem_encoding */
	uint32_t kind;               /* enum snap_mem_kind */
	struct snap_range *ranges;   /* heap; diff only: sorted, disjoint, non-adjacent */
	uint32_t nr_ranges;
	/* lz4 only (format 1.1; all zero / "" for raw): */
	uint32_t chunk_size;         /* uncompressed bytes per chunk, power of two 4 KiB..2 MiB */
	char index_file[256];        /* plain file name of the chunk index ("memory.idx") */
	uint64_t compressed_size;    /* exact byte length of the memory file */
	/* 1.3, optional (0 / NULL: none, an older writer): */
	uint32_t digest_block;       /* bytes per digest, a power of two 4 KiB..1 GiB */
	uint8_t *digests;            /* heap: le32 CRC32C of each block of the image */
	uint32_t digests_len;        /* 4 * ceil(size / digest_block) */
	struct snap_anchor *anchors; /* heap: pages checked on every restore */
	uint32_t nr_anchors;
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
/* The value of string key `key` in map m (the first one), or NULL; NULL for a non-map. */
struct msgpack_object;
const struct msgpack_object *snap_map_get(const struct msgpack_object *m, const char *key);

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
 * its size equals memory.size, so a MAP_PRIVATE mapping never SIGBUSes (lz4: equals
 * memory.compressed_size; the chunks need snap_lz4_index_load).
 * Returns the fd in *fd (O_CLOEXEC).
 */
int snap_mem_open(const char *dir, const struct snap_state *st, int *fd,
		  struct snap_mem_info *info, struct snap_err *err);

struct snap_lz4_index;
struct snap_dir {
	struct snap_state state;
	int mem_fd;                  /* the memory file; owned by d (for lz4 by d->lz4): don't close */
	struct snap_mem_info mem;
	struct snap_lz4_index *lz4;  /* lz4 encoding: the validated chunk index, else NULL */
};
/*
 * snap_state_load + snap_mem_open; for lz4 also snap_lz4_index_load (the whole index
 * validated, mem_fd is the index's fd). On error d is left closed (mem_fd -1).
 */
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
/* The same with dir relative to the directory dfd (open, not O_PATH: it is fsync'd),
 * which must stay open until commit or abort; nothing is resolved outside it. */
int snap_writer_begin_at(int dfd, const char *dir, struct snap_writer **out,
			 struct snap_err *err);
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
 * After snap_writer_write_lz4 the memory map written is st's with encoding, file,
 * chunk_size, index_file and compressed_size replaced by what the writer wrote (st's
 * values of these are ignored; memory.size must equal the image length); the index
 * file is written and fsync'd with the memory file. A working set given with
 * snap_writer_set_ws is written as ws.bin in the same atomic step.
 */
int snap_writer_commit(struct snap_writer *w, const struct snap_state *st, struct snap_err *err);
/* Removes the temp directory and frees w. NULL is a no-op. */
void snap_writer_abort(struct snap_writer *w);
/*
 * For a SIGINT/SIGTERM handler (async-signal-safe): removes the temp directory of the
 * writer in flight, if any, with every file in it. One slot: meant for a tool that
 * writes one snapshot at a time (ember-snap); the handler then exits.
 */
void snap_writer_remove_in_flight(void);
/*
 * snap_stale.c: removes the temp directories "DIR.tmp.<pid>.<8 hex>" next to DIR whose
 * process is gone (kill(pid, 0) says ESRCH), calling fn for each (ret 0: removed, else
 * -errno: kept, e.g. -ENOTEMPTY when it held something other than regular files).
 * Returns how many were found, or -errno when DIR's parent cannot be read.
 */
typedef void (*snap_stale_fn)(const char *path, int pid, int ret, void *arg);
int snap_writer_clean_stale(const char *dir, snap_stale_fn fn, void *arg);

/* Writes a full snapshot at out: base's memory with diff's ranges applied, diff's state. */
int snap_merge(const char *base, const char *diff, const char *out,
	       struct snap_write_stats *stats, struct snap_err *err);

/* ---- text -------------------------------------------------------------------- */
/* Every field as "path = value" lines, in schema order (stable, diffable). */
int snap_dump(FILE *out, const struct snap_state *st);

/* ---- lz4-compressed memory (format 1.1, FORMAT.md section 10) ------------------ */
#define SNAP_LZ4_MEMORY_FILE   "memory.lz4"
#define SNAP_LZ4_INDEX_FILE    "memory.idx"
#define SNAP_LZ4_INDEX_MAGIC   "EMBRMIDX"
#define SNAP_LZ4_INDEX_VERSION 1
#define SNAP_LZ4_INDEX_HEADER  80u       /* bytes before the first entry */
#define SNAP_LZ4_INDEX_ENTRY   16u       /* bytes per entry */
#define SNAP_LZ4_CHUNK_MIN     4096u
#define SNAP_LZ4_CHUNK_MAX     (2u << 20)
/* Chunks one lz4 image may have: the writer keeps an entry per chunk in memory and the
 * index holds 16 bytes per chunk, so 2^22 chunks is a 64 MiB index (1 TiB at 256 KiB
 * chunks). A larger image needs larger chunks. */
#define SNAP_LZ4_MAX_CHUNKS    (1u << 22)
/*
 * Default chunk size, measured on a 512 MiB sandbox snapshot (heap=256M seed=1: zero,
 * record and random pages mixed; 171 MiB of non-zero pages), LZ4_compress_default on
 * one core; "fault" = snap_lz4_chunk_read of one lz4 chunk (pread from a hot page cache
 * + LZ4_decompress_safe + CRC32C), median / p99:
 *   chunk    stored     compress    fault              index
 *   16 KiB   114.3 MiB  1560 MB/s    3.1 / 6.5 us      512 KiB
 *   64 KiB   113.2 MiB  1690 MB/s    9.4 / 15.9 us     128 KiB
 *   256 KiB  112.3 MiB  1570 MB/s   33.5 / 52.4 us      32 KiB
 *   1 MiB    112.3 MiB  1270 MB/s  134.6 / 195.5 us      8 KiB
 * The ratio barely moves above 16 KiB while a fault's cost grows with the chunk; at
 * 64 KiB a fault stays well under one userfaultfd round trip (~25 us here) and the
 * index, read and checked on every restore, stays small. FORMAT.md section 10.4.
 */
#define SNAP_LZ4_CHUNK_DEFAULT (64u << 10)

enum snap_chunk_kind { SNAP_CHUNK_ZERO = 0, SNAP_CHUNK_RAW = 1, SNAP_CHUNK_LZ4 = 2 };

/* A byte range of a file that holds data (not a hole). */
struct snap_extent {
	uint64_t off, len;
};

struct snap_lz4_chunk {
	uint64_t offset;             /* of the stored bytes in the memory file (0: zero chunk) */
	uint32_t stored_len;         /* zero: 0; raw: len; lz4: 1..len-1 */
	uint32_t len;                /* uncompressed bytes: chunk_size, less for the last chunk */
	uint32_t crc32c;             /* CRC32C of the len uncompressed bytes (0 for zero chunks) */
	uint8_t kind;                /* enum snap_chunk_kind */
};

/*
 * A validated chunk index. Chunk i holds memory bytes [i * chunk_size, + len);
 * i = offset >> chunk_shift. Every entry has been checked against the memory file's
 * size at load, so a reader may pread(fd, buf, stored_len, offset) any chunk without
 * further bounds checks; the bytes read are still untrusted until
 * snap_lz4_chunk_decode has checked them.
 */
struct snap_lz4_index {
	int fd;                      /* memory file, O_RDONLY|O_CLOEXEC, owned by the index */
	uint32_t chunk_size, chunk_shift;
	uint64_t nr_chunks;
	uint64_t mem_size;           /* memory.size: uncompressed bytes */
	uint64_t file_size;          /* memory file bytes (== memory.compressed_size) */
	uint32_t max_stored;         /* largest stored_len: enough for any read buffer */
	uint64_t nr_zero, nr_raw, nr_lz4;
	struct snap_mem_info mem;    /* of the memory file */
	struct snap_lz4_chunk *chunks; /* nr_chunks entries */
};

/*
 * Opens DIR's lz4 memory file (O_NOFOLLOW, regular, exactly memory.compressed_size
 * bytes) and index file, and validates the whole index before anything uses it:
 * preamble, CRC32C, snapshot id, geometry against st, and per entry: kind known,
 * zero chunks empty, raw chunks exactly len bytes, lz4 chunks 1..len-1 bytes,
 * offset + length inside the memory file without overflow, entries in file order
 * without overlap. st must be a validated lz4 state.
 */
int snap_lz4_index_load(const char *dir, const struct snap_state *st,
			struct snap_lz4_index **out, struct snap_err *err);
/* Closes the fd and frees. NULL is a no-op. */
void snap_lz4_index_free(struct snap_lz4_index *ix);
/* Entry i, or NULL if i >= nr_chunks. */
const struct snap_lz4_chunk *snap_lz4_chunk(const struct snap_lz4_index *ix, uint64_t i);
/*
 * Turns chunk i's stored bytes (stored_len bytes read from offset; NULL/0 for a zero
 * chunk) into its len uncompressed bytes at dst (at least len bytes, not overlapping
 * stored unless stored == dst for a raw chunk) and checks their CRC32C. On any error
 * (length mismatch, LZ4 error, wrong decompressed size, CRC mismatch) dst[0..len) is
 * zeroed, so unverified bytes never reach a caller that ignores the return value.
 * Thread-safe: touches only its arguments.
 */
int snap_lz4_chunk_decode(const struct snap_lz4_index *ix, uint64_t i, const void *stored,
			  uint32_t stored_len, void *dst, struct snap_err *err);
/*
 * pread + decode of chunk i into dst (len bytes). scratch: max_stored bytes (unused
 * for zero and raw chunks, which are read straight into dst, then checked).
 */
int snap_lz4_chunk_read(const struct snap_lz4_index *ix, uint64_t i, void *dst, void *scratch,
			struct snap_err *err);

/*
 * Compresses the whole memory image (len bytes from memory offset 0, the future
 * memory.size) into the writer's memory file as lz4 chunks of SNAP_LZ4_CHUNK_DEFAULT
 * / chunk_size bytes, using every online CPU (at most 8). Called at most once per
 * writer, instead of write_sparse/write_ranges.
 */
int snap_writer_write_lz4(struct snap_writer *w, const void *image, uint64_t len,
			  struct snap_err *err);
/* The same, when only the extents `data` of image may be non-zero (the rest is not
 * read: a sparse file's holes); data NULL: all of it may be. */
int snap_writer_write_lz4_sparse(struct snap_writer *w, const void *image, uint64_t len,
				 uint32_t chunk_size, const struct snap_extent *data,
				 uint64_t nr_data, struct snap_err *err);
int snap_writer_write_lz4_chunked(struct snap_writer *w, const void *image, uint64_t len,
				  uint32_t chunk_size, struct snap_err *err);
/* Stores a copy of a working set that snap_writer_commit writes as ws.bin. */
int snap_writer_set_ws(struct snap_writer *w, const uint64_t *pages, uint64_t n,
		       struct snap_err *err);

/* Whole-snapshot conversions (ember-snap compress/decompress): DST must not exist; the
 * state (id, parent, created, ...) is kept, only the memory description changes; a
 * ws.bin is carried over. chunk_size 0 = SNAP_LZ4_CHUNK_DEFAULT. Any source encoding. */
int snap_compress(const char *src, const char *dst, uint32_t chunk_size, struct snap_err *err);
int snap_decompress(const char *src, const char *dst, struct snap_err *err);

/*
 * Checks every byte of a snapshot's memory that can be checked: lz4: reads and
 * decodes every chunk (CRC32C each). raw has no checksums: nothing beyond
 * snap_dir_open's checks. *bad_chunk gets the first failing chunk (or UINT64_MAX).
 */
int snap_dir_verify_memory(const struct snap_dir *d, uint64_t *bad_chunk, struct snap_err *err);

/*
 * Memory digests (1.3): fills st->memory's digest_block, digests and anchors from the
 * whole memory image (memory.size bytes; st's regions and vCPUs are used to place the
 * CR3 anchor). present: a page bitmap, NULL for all; an absent page is read as zero
 * without touching image. _fd reads the image from a raw memory file instead.
 */
int snap_memory_digest(struct snap_state *st, const void *image, const uint64_t *present,
		       struct snap_err *err);
int snap_memory_digest_fd(struct snap_state *st, int fd, struct snap_err *err);
void snap_memory_clear_digests(struct snap_memory *m);
/* Reads the anchor pages (a few KiB) and compares their CRC32C: a memory file from
 * another snapshot, or all zeros, is refused naming the page. 0 when none recorded. */
int snap_dir_check_anchors(const struct snap_dir *d, const char *dir, struct snap_err *err);
/* verify --deep: every block's CRC32C; *bad_block the first failing one, or UINT64_MAX. */
int snap_dir_verify_digests(const struct snap_dir *d, uint64_t *bad_block, struct snap_err *err);

/* ---- working-set file (format 1.1, FORMAT.md section 10) ----------------------- */
#define SNAP_WS_FILE        "ws.bin"
#define SNAP_WS_MAGIC       "EMBRWSET"
#define SNAP_WS_VERSION     1
#define SNAP_WS_HEADER      64u          /* bytes before the page list */
#define SNAP_WS_MAX_PAGES   (1u << 26)   /* 256 GiB worth of 4 KiB pages */

/*
 * Writes DIR/ws.bin for the snapshot in DIR (whose state it loads for the id and the
 * page count): pages are 4 KiB page indices (memory offset / 4096) in first-touch
 * order, each < memory.size / 4096, n <= min(that, SNAP_WS_MAX_PAGES). Atomic: a
 * temp file in DIR, fsync, rename over any older ws.bin, fsync of DIR.
 */
int snap_ws_write(const char *dir, const uint64_t *pages, uint64_t n, struct snap_err *err);
/* The same, but -EEXIST (message set) when DIR already has a ws.bin, checked atomically
 * at the rename (RENAME_NOREPLACE): a good recording is never lost by accident. */
int snap_ws_write_new(const char *dir, const uint64_t *pages, uint64_t n, struct snap_err *err);
/*
 * Reads and validates DIR/ws.bin against st (magic, version, CRC32C, id, page count,
 * every page < memory.size / 4096). -ENOENT (message set) when DIR has no ws.bin.
 * *pages is malloc'd (NULL when n == 0); the caller frees it.
 */
int snap_ws_load(const char *dir, const struct snap_state *st, uint64_t **pages,
		 uint64_t *n, struct snap_err *err);
/*
 * The set of pages as sorted, disjoint ranges for bulk prefetch: duplicates dropped,
 * and two ranges separated by at most max_gap missing pages merged into one (the gap
 * pages are then prefetched too; max_gap 0 merges only adjacent pages). *ranges is
 * malloc'd (NULL when n == 0), at most n entries. O(n) time (radix sort).
 */
int snap_ws_ranges(const uint64_t *pages, uint64_t n, uint64_t max_gap,
		   struct snap_range **ranges, uint64_t *nr, struct snap_err *err);

/* sparse_extents.c: the data extents of fd's first size bytes, sorted, disjoint
 * (*out malloc'd, NULL when all hole). -ENOTSUP when unknown (no SEEK_DATA, or more
 * than SNAP_MAX_EXTENTS pieces): treat the whole file as data then. */
#define SNAP_MAX_EXTENTS (1u << 20)
int snap_data_extents(int fd, uint64_t size, struct snap_extent **out, uint64_t *nr);

/* ---- file_kind.c ----------------------------------------------------------------- */
/* "fifo", "directory", "socket", ... for st_mode: names what a path is when ember wanted
 * a regular file. */
const char *snap_file_kind(unsigned mode);

/* ---- size_parse.c ---------------------------------------------------------------- */
/* Digits with an optional K, M or G suffix (binary, either case); a plain number counts
 * plain_unit bytes. 0 with *out bytes, or -EINVAL (no digits, other characters,
 * overflow). */
int snap_parse_size(const char *s, uint64_t plain_unit, uint64_t *out);

/* ---- json.c: the JSON writer of every --json output (ember and ember-snap) ---------- */
#define JSON_MAX_DEPTH 16
struct json_w {
	FILE *f;
	int depth;
	unsigned count[JSON_MAX_DEPTH]; /* members written at each open level */
};
/* A string literal of any bytes: '"', '\\', control bytes and DEL escaped; well-formed
 * UTF-8 as it is; a byte that is not part of well-formed UTF-8 as \u00XX (its value as a
 * code point), so that the output is always valid JSON. */
void json_write_string(FILE *f, const void *s, size_t n);
void json_begin(struct json_w *w, FILE *f);
/* key: NULL inside arrays and for the top-level value; closing the top level ends the line */
void json_obj(struct json_w *w, const char *key);
void json_obj_end(struct json_w *w);
void json_arr(struct json_w *w, const char *key);
void json_arr_end(struct json_w *w);
void json_str(struct json_w *w, const char *key, const char *s);
void json_strn(struct json_w *w, const char *key, const void *s, size_t n);
void json_u64(struct json_w *w, const char *key, uint64_t v);
void json_i64(struct json_w *w, const char *key, int64_t v);
void json_bool(struct json_w *w, const char *key, bool v);
void json_null(struct json_w *w, const char *key);
/* A number with `decimals` digits after the point (the bench's measurements); NaN and
 * infinities, which JSON has no form for, as null. */
void json_f64(struct json_w *w, const char *key, double v, int decimals);
/* A msgpack value as JSON: maps with their keys as they are (a non-string key as the
 * string "(type N)"), strings, integers and booleans as such, bin/float/nil/ext as null. */
void json_msgpack(struct json_w *w, const char *key, const struct msgpack_object *v);

#endif
