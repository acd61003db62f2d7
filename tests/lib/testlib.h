/*
 * Helpers shared by ember's Criterion tests (the tests/lib sources, linked into every test
 * binary). One section per source file; keep each section's helpers together.
 */
#ifndef EMBER_TESTLIB_H
#define EMBER_TESTLIB_H

#include <elf.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "vmm.h"

/* ---- image_builder.c: synthetic kernel images, built in memory --------------------- */

/* One PT_LOAD segment. Its file bytes are a pattern seeded by `seed` (tb_seg_byte). */
struct tb_elf_seg {
	uint64_t paddr;
	uint64_t filesz, memsz;
	uint32_t flags;  /* PF_R | PF_W | PF_X */
	uint8_t seed;
};

/*
 * An ELF64 x86-64 ET_EXEC image with one PT_LOAD per segment, in order (p_vaddr =
 * p_paddr), file data page-aligned after the headers. malloc'ed; *len is its size.
 * Tests corrupt it afterwards through tb_elf_ehdr / tb_elf_phdr.
 */
uint8_t *tb_build_elf(const struct tb_elf_seg *segs, unsigned n, uint64_t entry, size_t *len);
Elf64_Ehdr *tb_elf_ehdr(uint8_t *img);
Elf64_Phdr *tb_elf_phdr(uint8_t *img, unsigned i);
/* The byte tb_build_elf put at offset `off` of a segment's file data. */
uint8_t tb_seg_byte(uint8_t seed, uint64_t off);

/* A bzImage; tb_bzimage_defaults gives a valid relocatable 64-bit 2.15 kernel. */
struct tb_bzimage {
	uint8_t setup_sects;       /* as stored: 0 means 4 */
	uint8_t hdr_jump;          /* byte at 0x201: the setup header ends at 0x202 + this */
	uint16_t version;
	uint8_t loadflags;
	uint16_t xloadflags;
	uint8_t relocatable;
	uint32_t kernel_alignment;
	uint64_t pref_address;
	uint32_t init_size;
	uint32_t initrd_addr_max;
	uint32_t cmdline_size;
	const uint8_t *pm;         /* protected-mode part; NULL: pm_len pattern bytes */
	size_t pm_len;
	uint32_t payload_offset;   /* relative to the protected-mode part */
	uint32_t payload_length;
};
void tb_bzimage_defaults(struct tb_bzimage *b);
uint8_t *tb_build_bzimage(const struct tb_bzimage *b, size_t *len);
/* The byte a NULL-pm bzImage carries at offset `off` of its protected-mode part. */
uint8_t tb_pm_byte(uint64_t off);
/* The setup header inside a built image (at 0x1f1), for corrupting it. */
struct setup_header;
struct setup_header *tb_bzimage_hdr(uint8_t *img);
/* Offset of the protected-mode part in a built image. */
size_t tb_bzimage_pm_offset(const uint8_t *img);

/*
 * LZ4 legacy frame (magic, then [le32 size][block] per block of block_size input
 * bytes) followed by the le32 uncompressed size, as the kernel build makes it.
 */
uint8_t *tb_lz4_legacy(const uint8_t *data, size_t len, size_t block_size, size_t *out_len);
/*
 * A default bzImage whose payload is tb_lz4_legacy(vmlinux, 8 MiB blocks) at
 * TB_LZ4_PAYLOAD_OFFSET of the protected-mode part, with a few stub bytes after it.
 */
#define TB_LZ4_PAYLOAD_OFFSET 0x100u
uint8_t *tb_build_lz4_bzimage(const uint8_t *vmlinux, size_t vmlinux_len, size_t *len);

/* Guest RAM for loader tests (mem_layout + mem_alloc_anon); asserts on failure. */
void tb_mem_init(struct guest_mem *m, uint64_t bytes);

/* ---- proc.c: running ember (or any program) from a test ---------------------------- */

/* What a finished child did. out/err are NUL-terminated (never NULL after proc_finish). */
struct proc_result {
	int status;       /* exit status, or 128+N when killed by signal N (shell convention) */
	int signal;       /* N when killed by signal N, else 0 */
	bool timed_out;   /* our deadline passed and we killed it with SIGKILL */
	char *out, *err;  /* captured stdout / stderr */
	size_t out_len, err_len;
};

struct proc; /* a running child whose stdout/stderr we capture */

/* Spawns argv[0] (PATH not searched) with stdin from /dev/null. 0 or -errno. */
int proc_start(struct proc **out, char *const argv[]);
pid_t proc_pid(const struct proc *p);
/*
 * Reads the child's output until `needle` appears in its stdout or stderr (true), or it
 * closes both, or timeout_ms passes (false). The output read so far stays captured.
 */
bool proc_wait_output(struct proc *p, const char *needle, unsigned timeout_ms);
/*
 * Collects the rest of the output and the exit status, SIGKILLing the child after
 * timeout_ms (r->timed_out). Frees p. 0, or -errno when waiting failed.
 */
int proc_finish(struct proc *p, unsigned timeout_ms, struct proc_result *r);
/* proc_start + proc_finish. */
int proc_run(char *const argv[], unsigned timeout_ms, struct proc_result *r);
/*
 * Same with the child's stdin a pipe fed with a copy of input[0..len) (by the waits
 * above, while they read its output), then closed: end-of-file after the last byte. A
 * child that stops reading early is no error (the rest is dropped, no SIGPIPE).
 */
int proc_start_input(struct proc **out, char *const argv[], const void *input, size_t len);
int proc_run_input(char *const argv[], const void *input, size_t len, unsigned timeout_ms,
		   struct proc_result *r);
void proc_result_free(struct proc_result *r);

/* One "ember-timing <phase> <us>" line. */
struct proc_timing {
	char phase[32];
	int64_t us;
};
/* The timing lines of `text`, in order of appearance; returns how many were stored. */
unsigned proc_parse_timings(const char *text, struct proc_timing *t, unsigned max);
/* The value of `phase`, or -1 when no such line. */
int64_t proc_timing_us(const char *text, const char *phase);
/*
 * Copies the first line of `text` that starts with `prefix` into buf (without the
 * newline). Returns buf, or NULL when no line matches.
 */
const char *proc_find_line(const char *text, const char *prefix, char *buf, size_t len);
/* Parses " key=VALUE" (decimal or 0x hex) in a key=value line. 0, or -ENOENT / -EINVAL. */
int proc_line_u64(const char *line, const char *key, uint64_t *v);

/* ---- ember_test.c: the ember binary and guests under test --------------------------- */

/*
 * ember under test: $EMBER_BUILD (default "build") holds ember and guests/, so the same
 * tests run against build-san/ under `make SAN=1 test`. Paths live in a small ring of
 * static buffers: valid for the next few calls, which covers one argv.
 */
const char *ember_test_path(const char *rel);          /* "$EMBER_BUILD/<rel>" */
const char *ember_test_guest(const char *name);        /* "$EMBER_BUILD/guests/<name>.elf" */
/* Runs `$EMBER_BUILD/ember ARGS... NULL`; asserts that it could be spawned. */
void ember_test_run(struct proc_result *r, unsigned timeout_ms, ...);
/* Same, not waiting: for tests that signal a running ember. */
struct proc *ember_test_start(const char *first, ...);
/* Skips the test, loudly (a [WARN] line with the reason), when /dev/kvm is unusable. */
void ember_test_require_kvm(void);
/* Fails unless the child exited by itself: no signal, no timeout, no sanitizer report. */
void ember_test_assert_no_crash(const struct proc_result *r);
/* A `boot --timeout N --dump-regs` of a Linux kernel: stopped by the timeout (124), and
 * vCPU 0 runs in the kernel's text mapping on page tables of its own, not ember's boot
 * ones: as far as this machine's KVM lets a Linux boot go (README, This platform). */
void ember_test_assert_linux_own_page_tables(const struct proc_result *boot);
/* A fresh private temp directory (mkdtemp), and its recursive removal. */
void ember_test_tmpdir(char *buf, size_t len);
void ember_test_rmtree(const char *dir);
/* SIGKILLs every process whose command line names dir: what a failed assertion left
 * running (Criterion ends the test there; its children outlive it). */
void ember_test_kill_strays(const char *dir);
/* How many live processes (zombies excepted) have dir in their command line. */
unsigned ember_test_count_procs(const char *dir);
/* Writes len bytes to dir/name; returns the path in a ring buffer (as above). */
const char *ember_test_write_file(const char *dir, const char *name, const void *data,
				  size_t len);
/* Runs fn(arg) in this process with stderr (ember's log lines) captured into buf. */
void ember_test_capture_stderr(void (*fn)(void *arg), void *arg, char *buf, size_t len);

/* ---- json_check.c ------------------------------------------------------------------ */

/*
 * Validates text as exactly one line holding one JSON value (python3's json module,
 * strict UTF-8); returns its canonical form (keys sorted, no spaces, non-ASCII as \uXXXX),
 * malloc'd. Fails the test on invalid JSON; skips it, loudly, without python3.
 */
char *ember_test_json_canon(const char *text);

/* ---- snap_test.c: snapshots under test ---------------------------------------------- */

/* Per-process deadline for the snapshot helpers' children (ember, ember-snap, ctl). */
#define SNAPT_RUN_MS 30000

/*
 * Boots the sandbox guest with `--cmdline cmdline --mem mem_mib --snapshot-on-ready dir
 * --exit-after-snapshot`, asserts a clean exit and that ember-snap verify accepts dir.
 * Returns the heap checksum the boot printed.
 */
uint64_t snapt_golden(const char *dir, const char *cmdline, unsigned mem_mib);
/* out (PATH_MAX bytes) = "dir/" + the formatted name; asserts it fits. */
void snapt_join(char *out, const char *dir, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The n-th (from 0) line "checksum=<16 hex>" of text; asserts it exists. */
uint64_t snapt_checksum(const char *text, unsigned n);
unsigned snapt_count(const char *hay, const char *needle);
/* Runs `$EMBER_BUILD/ember-snap ARGS... NULL`. */
void snapt_tool(struct proc_result *r, unsigned timeout_ms, ...);
/* ember-snap verify dir must exit 0 and print "ok". */
void snapt_verify_ok(const char *dir);
/* Runs `ember ctl --api-sock sock ARGS... NULL` and asserts it did not crash. */
void snapt_ctl(struct proc_result *r, const char *sock, ...);
/* Waits until something accepts connections on the Unix socket at path. */
void snapt_wait_socket(const char *path, unsigned timeout_ms);
/* Copies snapshot dir src to dst (created): the state file, and the memory file either
 * hard-linked (share_memory: for tests that only edit the state) or copied sparsely. */
void snapt_copy_dir(const char *src, const char *dst, bool share_memory);
bool snapt_files_equal(const char *a, const char *b);

/* ---- snapmut.c: editing a state file below libsnapfmt, for bad-snapshot tests ------- */

/* The whole file at path (malloc'd); asserts. */
uint8_t *snapt_read_file(const char *path, size_t *len);
/* Rewrites the preamble's body length and CRC32C for file[16..len). */
void snapt_fix_preamble(uint8_t *file, size_t len);

/*
 * A decoded state body to edit. Paths name map keys separated by dots and array
 * elements in brackets: "vcpus[0].cpuid[3].ebx", "devices[1].state.rx_len". Every edit
 * asserts that the path exists; snapmut_save re-encodes with a correct preamble.
 */
struct snapmut;
struct msgpack_object;
struct snapmut *snapmut_load(const char *dir);
void snapmut_free(struct snapmut *m);
struct msgpack_object *snapmut_get(struct snapmut *m, const char *path); /* NULL: absent */
uint64_t snapmut_get_u64(struct snapmut *m, const char *path);
void snapmut_set_u64(struct snapmut *m, const char *path, uint64_t v);
void snapmut_set_str(struct snapmut *m, const char *path, const char *s);
void snapmut_set_bin(struct snapmut *m, const char *path, const void *data, uint32_t len);
/* Shrinks, or grows with deep copies of the last element. */
void snapmut_resize(struct snapmut *m, const char *array_path, uint32_t n);
void snapmut_remove(struct snapmut *m, const char *array_path, uint32_t index);
void snapmut_remove_key(struct snapmut *m, const char *map_path, const char *key);
/* Index of the first map in the array whose key equals value (a string, or an unsigned
 * integer written in decimal), or -1. */
int snapmut_find(struct snapmut *m, const char *array_path, const char *key, const char *value);
/* The whole state file (preamble + body), malloc'd. */
uint8_t *snapmut_encode(struct snapmut *m, size_t *len);
/* Replaces dir/state.msgpack (unlinked first, so a hard-linked original is untouched). */
void snapmut_save(struct snapmut *m, const char *dir);

/* ---- lazy_test.c: lazy memory (uffd backend, lz4 chunks, working sets) ------------- */

/* A golden snapshot of the sandbox, and what its original VM answered. */
struct lazyt_golden {
	char dir[4096];           /* PATH_MAX */
	uint64_t checksum;        /* the heap checksum the boot printed */
	char served[128];         /* the original VM's "served ws=.. checksum=.." line */
	uint64_t heap_at, heap, ws; /* from the sandbox's first line */
	uint64_t mem;             /* guest RAM bytes */
};
/*
 * Boots the sandbox (`--cmdline cmdline --mem mem_mib`), snapshots it at ready into dir
 * (lz4 with compress), lets the original VM serve one request, and checks the snapshot
 * with ember-snap verify.
 */
void lazyt_golden(struct lazyt_golden *g, const char *dir, const char *cmdline, unsigned mem_mib,
		  bool compress);
/*
 * Runs `ember restore --snapshot dir --timings OPTS... --guest-cmd C...` where opts
 * ("--mem-backend uffd --prefetch ws") and cmds ("verify serve exit") are space-separated
 * lists; either may be "". lazyt_restore_start does not wait.
 */
void lazyt_restore(struct proc_result *r, const char *dir, const char *opts, const char *cmds);
struct proc *lazyt_restore_start(const char *dir, const char *opts, const char *cmds);
/* For cmds "verify serve verify ...": a clean exit, both checksums the golden one and
 * the served line the golden VM's. what names the run in failure messages. */
void lazyt_assert_golden_answers(const struct proc_result *r, const struct lazyt_golden *g,
				 const char *what);
/* A numeric field of the "ember-pager ..." line on stderr; asserts it is there. */
uint64_t lazyt_pager_stat(const struct proc_result *r, const char *key);
/* Copies every file of snapshot dir src into dst (created). */
void lazyt_copy_snapshot(const char *src, const char *dst);
/* The first chunk with stored bytes at or after memory offset from_offset (lz4 dir). */
uint64_t lazyt_nonzero_chunk(const char *dir, uint64_t from_offset);
/*
 * Flips one bit of chunk's stored bytes in place: its last byte (an LZ4 block ends in
 * literals, so it still decodes and only the chunk's CRC32C catches the change) or
 * its middle one. The index still accepts the file.
 */
void lazyt_damage_chunk(const char *dir, uint64_t chunk, bool last_byte);
/* dir/ws.bin, validated by libsnapfmt (malloc'd pages, *n of them). */
uint64_t *lazyt_ws_load(const char *dir, uint64_t *n);
/* lazyt_restore under a seccomp filter that makes these unavailable to ember. */
#define LAZYT_DENY_USERFAULTFD 1u /* userfaultfd(2) and /dev/userfaultfd: EPERM */
#define LAZYT_DENY_IO_URING    2u /* io_uring_setup(2): ENOSYS */
void lazyt_restore_denied(struct proc_result *r, unsigned deny, const char *dir, const char *opts,
			  const char *cmds);

/* ---- dev_test.c: devices under unit test, outside a running VM --------------------- */

/* A VM shell (vm_alloc: no KVM, no vCPUs) for devices to hang on; its console is
 * console_fd (-1: none). Free with devt_vm_free after destroying its devices. */
struct vm *devt_vm(int console_fd);
void devt_vm_free(struct vm *vm);
/* The table's device `name`, powered on, on vm (asserts). Destroy with dev_destroy. */
struct device *devt_create(struct vm *vm, const char *name);
/* Whether a device asked the VM to reset (i8042) since the last call; clears it. */
bool devt_take_reset(struct vm *vm);
/* ram bytes of anonymous guest RAM for the VM shell (asserts). */
void devt_vm_ram(struct vm *vm, uint64_t ram);
/* Guest accesses as the bus makes them: d->lock held around ops->read/write. */
void devt_read(struct device *d, uint64_t off, void *data, unsigned len);
void devt_write(struct device *d, uint64_t off, const void *data, unsigned len);
uint32_t devt_read32(struct device *d, uint64_t off);
void devt_write32(struct device *d, uint64_t off, uint32_t v);
/* An interrupt recorder in place of KVM_IRQ_LINE: counts rising edges on the line. */
struct devt_irq {
	unsigned edges;      /* 0 -> 1 transitions (atomic: device threads raise too) */
	int level;
	unsigned gsi;        /* the GSI of the last change */
};
void devt_irq_record(struct device *d, struct devt_irq *rec);
unsigned devt_irq_edges(struct devt_irq *rec);
/* A virtio driver's start-up over the MMIO transport, asserting each step: reset,
 * ACKNOWLEDGE, DRIVER, driver features (VERSION_1 added), FEATURES_OK read back. */
void devt_virtio_features(struct device *d, uint64_t features);
/* Queue q on the driver's rings: QueueSel, QueueNum, the three addresses, QueueReady. */
struct vqd;
void devt_virtio_queue(struct device *d, unsigned q, const struct vqd *vq);
/* Sets DRIVER_OK and asserts it stuck. */
void devt_virtio_driver_ok(struct device *d);

/* ---- fn_test.c: the fn guest over vsock (INVOCATION.md) -------------------------- */

/* A golden snapshot of fn (heap=<heap_mib>M seed=7, --vsock-cid 3) and its heap as the
 * snapshot's memory file holds it. */
struct fnt_golden {
	char dir[4096];           /* PATH_MAX */
	uint64_t heap_at, heap_bytes, checksum;
	uint8_t *heap;
};
/* Boots fn with vsock, snapshots it at ready into dir/fn-golden, verifies it. */
void fnt_golden(struct fnt_golden *g, const char *dir, unsigned heap_mib, unsigned mem_mib);
void fnt_golden_free(struct fnt_golden *g);
/* A suite's .init/.fini around one fn golden snapshot in a temporary directory: needs
 * /dev/kvm; the teardown also kills whatever the tests left running there. */
void fnt_suite_setup(struct fnt_golden *g, char *tmp, size_t len, unsigned heap_mib,
		     unsigned mem_mib);
void fnt_suite_teardown(struct fnt_golden *g, char *tmp);
/* `ember restore --snapshot DIR --vsock-uds uds ARGS... NULL`, once uds accepts. */
struct proc *fnt_restore(const char *snapshot, const char *uds, ...);
/* fn's mix function on the host: out (n + 8 bytes) = le64 digest, payload ^ heap. */
size_t fnt_mix(const struct fnt_golden *g, const uint8_t *p, size_t n, uint8_t *out);
/* A connection to guest port through the hybrid socket uds (asserts). */
int fnt_connect(const char *uds, uint32_t port);
/* One mix invocation on fd; asserts status OK and the answer the golden heap gives. */
void fnt_invoke_check(const struct fnt_golden *g, int fd, uint64_t id, const uint8_t *p, size_t n);
/* `ember ctl --api-sock sock guest-cmd cmd`, asserted to be accepted. */
void fnt_guest_cmd(const char *sock, const char *cmd);

/* ---- vcpu_compare.c: a vCPU's state across a snapshot ------------------------------ */

/* Expects (cr_expect) every field of b, restored, to equal a, saved; the TSC may only
 * move forward, the LAPIC timer's current count may differ, and an IA32_TSC_DEADLINE
 * saved as the TSC (no deadline pending) may be the new TSC. */
struct snap_vcpu;
void snapt_compare_vcpu(const struct snap_vcpu *a, const struct snap_vcpu *b);

/* ---- vq_driver.c: the driver side of a virtqueue, for device tests ---- */
#include "dev/virtio.h"

/*
 * A host-side virtio driver playing the guest: it lays out split rings anywhere in a
 * struct guest_mem, hands out descriptors, publishes chains and reads used entries.
 * Its writes are the guest's (through vqd_ptr, not gpa_map_write), so they never
 * show up in m->host_dirty. Raw pokes write any ring field, for malformed queues.
 * Every helper asserts (Criterion) that what it touches lies in guest RAM.
 */
struct vqd {
	struct guest_mem *mem;
	uint16_t size;
	uint64_t desc, avail, used;       /* ring GPAs */
	uint16_t avail_idx;               /* the driver's avail->idx, free-running */
	uint16_t used_idx;                /* used entries consumed, free-running */
	/* descriptor bookkeeping: a free list threaded through next[], and each head's
	 * chain length (0: not a head the driver handed out) */
	uint16_t free_head;
	unsigned nr_free;
	uint16_t next[VIRTQ_MAX_SIZE];
	uint16_t chain_len[VIRTQ_MAX_SIZE];
};

/* One buffer of a chain the driver adds. */
struct vqd_buf {
	uint64_t gpa;
	uint32_t len;
	bool writable;     /* VRING_DESC_F_WRITE: the device writes it */
};

/* Rings at the given GPAs (any alignment: enable-time tests want bad ones too), zeroed,
 * every descriptor free, indices 0. size: 1..VIRTQ_MAX_SIZE. */
void vqd_init(struct vqd *d, struct guest_mem *m, uint16_t size, uint64_t desc, uint64_t avail,
	      uint64_t used);
/* The usual layout from base: descriptor table, avail ring right after it, used ring
 * at the next 4 KiB boundary. base must be 16-byte aligned for a valid queue. */
void vqd_init_at(struct vqd *d, struct guest_mem *m, uint16_t size, uint64_t base);
/* The transport's register writes: q->s.size/desc/avail/used (not QueueReady). */
void vqd_attach(const struct vqd *d, struct virtq *q);
/* Both free-running indices (avail->idx, used->idx and the driver's copies) start at
 * idx, as after that many round trips; the device's must match (virtq_restore). */
void vqd_start_at(struct vqd *d, uint16_t idx);

/* n >= 1 free descriptors linked by VRING_DESC_F_NEXT for bufs, in order; returns the
 * head. Not published. */
uint16_t vqd_chain(struct vqd *d, const struct vqd_buf *bufs, unsigned n);
/* An indirect table for bufs at table_gpa (entries 0..n-1 linked in order) and one
 * ring descriptor with VRING_DESC_F_INDIRECT pointing at it; returns its index. */
uint16_t vqd_indirect(struct vqd *d, uint64_t table_gpa, const struct vqd_buf *bufs, unsigned n);
/* head into the next avail slot, then avail->idx + 1 (release). head is not checked. */
void vqd_publish(struct vqd *d, uint16_t head);
/* vqd_chain + vqd_publish. */
uint16_t vqd_add(struct vqd *d, const struct vqd_buf *bufs, unsigned n);
/* The next used entry: true with *head and *len (either may be NULL) and its
 * descriptors free again; false when the device has published nothing new. Asserts
 * that the device returned a head the driver handed out. */
bool vqd_get_used(struct vqd *d, uint16_t *head, uint32_t *len);

/* Raw pokes, nothing checked but that the bytes are in RAM. */
void vqd_set_desc(struct vqd *d, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
		  uint16_t next);                                   /* i < size */
void vqd_set_desc_at(struct guest_mem *m, uint64_t gpa, uint64_t addr, uint32_t len,
		     uint16_t flags, uint16_t next);                /* e.g. in an indirect table */
void vqd_set_avail_ring(struct vqd *d, uint16_t slot, uint16_t head); /* slot < size */
void vqd_set_avail_idx(struct vqd *d, uint16_t idx);        /* also the driver's copy */
void vqd_set_avail_flags(struct vqd *d, uint16_t flags);
void vqd_set_used_flags(struct vqd *d, uint16_t flags);
void vqd_set_used_idx(struct vqd *d, uint16_t idx);
void vqd_set_used_elem(struct vqd *d, uint16_t slot, uint32_t id, uint32_t len);
uint16_t vqd_used_flags(const struct vqd *d);
uint16_t vqd_used_idx(const struct vqd *d);
void vqd_used_elem(const struct vqd *d, uint16_t slot, uint32_t *id, uint32_t *len);

/* Guest memory as the guest sees it: [gpa, gpa+len) must be in RAM (asserted). */
uint8_t *vqd_ptr(struct guest_mem *m, uint64_t gpa, uint64_t len);
/* A byte pattern for buffer contents: byte off of pattern seed. */
uint8_t vqd_pattern_byte(uint8_t seed, uint64_t off);
void vqd_fill_pattern(struct guest_mem *m, uint64_t gpa, uint64_t len, uint8_t seed);
/* True when [gpa, gpa+len) holds pattern seed. */
bool vqd_check_pattern(struct guest_mem *m, uint64_t gpa, uint64_t len, uint8_t seed);
/* Host-side dirty tracking without KVM: allocates m->host_dirty (mem_free frees it). */
void vqd_track_dirty(struct guest_mem *m);
/* Whether the page holding gpa is marked in m->host_dirty, and clearing every mark. */
bool vqd_dirty(const struct guest_mem *m, uint64_t gpa);
void vqd_dirty_clear(struct guest_mem *m);

/* ---- cpio_test.c: newc archives (the Linux kit's initramfs, guest-agent/mkcpio) ------ */

struct cpio_entry {
	char name[256];
	uint32_t mode, rmajor, rminor;
	const uint8_t *data; /* into the archive */
	size_t size;
};
/* Every entry of a newc archive up to its trailer (not included), as the kernel's
 * init/initramfs.c unpacks it; asserts on anything it would reject. */
unsigned cpio_parse(const uint8_t *a, size_t len, struct cpio_entry *e, unsigned max);
const struct cpio_entry *cpio_find(const struct cpio_entry *e, unsigned n, const char *name);

#endif
