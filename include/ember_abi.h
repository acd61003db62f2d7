/*
 * ember guest ABI: the only contract between the ember VMM and a guest.
 *
 * This header is shared verbatim by the host (src/) and by freestanding guests
 * (tests/guest/), and is meant to be copied into a Linux guest's init as well. It
 * uses only fixed-width integer types and has no dependencies.
 *
 * All channels are x86 I/O ports, so that a ring-3 program with IOPL=3 (our test
 * guests) or with ioperm() (a Linux init) can use them without a driver.
 *
 *   port                  width  dir   meaning
 *   EMBER_PORT_READY      8      out   "initialisation finished" (any value). ember
 *                                      records process-start -> ready, and this is the
 *                                      point where a golden snapshot is taken
 *                                      (--snapshot-on-ready). Re-writing it later is
 *                                      harmless: only the first write counts.
 *   EMBER_PORT_UCALL      32     out   guest-physical address of a struct ember_ucall
 *                                      (must lie in RAM and not cross a region end);
 *                                      the host acts on it before the OUT retires.
 *   EMBER_PORT_GEN_LO     32     in    low 32 bits of the VM generation
 *   EMBER_PORT_GEN_HI     32     in    high 32 bits of the VM generation
 *   EMBER_PORT_ABI        32     in    EMBER_ABI_VERSION of the host
 *
 * VM generation: 0 on a cold boot; a fresh random non-zero 64-bit value on every
 * restore from a snapshot (so two clones of one snapshot see different values). A
 * guest that keeps secrets or randomness seeded before the snapshot must compare
 * the generation after each request boundary and re-seed when it changed
 * (see FORMAT.md, "What a restored guest must re-seed"). Read HI first, then LO:
 * the host never changes the value while a vCPU is running.
 *
 * Linux guests: ioperm(EMBER_PORT_BASE, EMBER_PORT_COUNT, 1), then
 * outb(0, EMBER_PORT_READY) when the function runtime is initialised.
 *
 * virtio devices: ember's virtio-mmio devices (virtio 1.x, version-2 registers) sit at
 * fixed guest-physical addresses, one EMBER_VIRTIO_MMIO_SIZE window each, and ember
 * appends one "virtio_mmio.device=4K@0x<base>:<irq>" per device present to the kernel
 * command line, as Linux's virtio_mmio driver reads it (Firecracker does the same).
 * The windows are in the 32-bit hole, never RAM. A guest finds its devices there, or
 * probes each window for the magic value "virt".
 */
#ifndef EMBER_ABI_H
#define EMBER_ABI_H

#include <stdint.h>

#define EMBER_ABI_VERSION 2u /* 2: EMBER_UCALL_PARK, blocking WAIT, EMBER_WAIT_F_POLL */

#define EMBER_PORT_BASE   0x5e0u
#define EMBER_PORT_UCALL  0x5e0u
#define EMBER_PORT_READY  0x5e4u
#define EMBER_PORT_GEN_LO 0x5e8u
#define EMBER_PORT_GEN_HI 0x5ecu
#define EMBER_PORT_ABI    0x5f0u
#define EMBER_PORT_COUNT  0x14u

#define EMBER_VIRTIO_MMIO_BASE 0xd0000000u /* first window; device k at BASE + k * SIZE */
#define EMBER_VIRTIO_MMIO_SIZE 0x1000u
#define EMBER_VIRTIO_IRQ_BASE  5u          /* device k raises IRQ (GSI) BASE + k */
#define EMBER_VIRTIO_RNG_SLOT   0u         /* virtio-rng: always present */
#define EMBER_VIRTIO_VSOCK_SLOT 1u         /* virtio-vsock: with --vsock-cid */
#define EMBER_VSOCK_HOST_CID 2u            /* the host's CID, as in every vsock */

/* ucall numbers (struct ember_ucall.cmd) */
enum ember_ucall_cmd {
	EMBER_UCALL_NONE = 0,
	EMBER_UCALL_SYNC = 1,   /* IN args[0] = stage. A checkpoint; the host may pause,
				 * snapshot, or compare state here, then resumes. */
	EMBER_UCALL_DONE = 2,   /* the test finished successfully; the VM stops, exit 0 */
	EMBER_UCALL_ASSERT = 3, /* IN file, line, msg, args[0..1]; the VM stops, exit 3 */
	EMBER_UCALL_PRINT = 4,  /* IN msg (NUL-terminated); written to the console */
	EMBER_UCALL_WAIT = 5,   /* IN args[0] = flags (EMBER_WAIT_F_*); OUT status, data: the
				 * next host command (see below). With an empty queue that a
				 * control socket may still fill, the vCPU sleeps in the host
				 * until a command arrives or the VM is paused or stops, then
				 * answers AGAIN; with EMBER_WAIT_F_POLL it answers at once. */
	EMBER_UCALL_REPORT = 6, /* IN args[0..3], msg: a result record; the host logs it
				 * as "ember-report msg=<msg> a0=0x.. ... us=N" on stderr */
	EMBER_UCALL_PARK = 7,   /* IN args[0] = timeout in microseconds (0: none); OUT status
				 * (enum ember_park_status). Parks the vCPU in the host until
				 * something may have changed for the guest: a virtio device
				 * used a buffer or raised an interrupt, a host command was
				 * queued, the VM is being paused or stopped, or the timeout.
				 * An event since this vCPU's previous PARK returned makes it
				 * return at once, so "check the queues, then PARK" never
				 * sleeps through work. Spurious returns are allowed. For
				 * guests that poll instead of taking interrupts (a Linux guest
				 * uses hlt with interrupts on instead). */
};

/* struct ember_ucall.args[0] flags for EMBER_UCALL_WAIT */
#define EMBER_WAIT_F_POLL 1u /* never sleep: AGAIN at once when the queue is empty */

/* struct ember_ucall.status values written by the host for EMBER_UCALL_PARK */
enum ember_park_status {
	EMBER_PARK_EVENT = 0,   /* woken (or something happened before it slept) */
	EMBER_PARK_TIMEOUT = 1, /* args[0] microseconds passed without an event */
};

/* struct ember_ucall.status values written by the host for EMBER_UCALL_WAIT */
enum ember_wait_status {
	EMBER_WAIT_CMD = 0,   /* data holds the next command, NUL-terminated */
	EMBER_WAIT_NONE = 1,  /* the queue is empty and no command can arrive: finish */
	EMBER_WAIT_AGAIN = 2, /* none yet, but one may arrive (control socket): ask again */
};

#define EMBER_UCALL_FILE_MAX 64
#define EMBER_UCALL_MSG_MAX  160
#define EMBER_UCALL_DATA_MAX 64

/*
 * The ucall block. The guest fills the IN fields and writes its guest-physical
 * address to EMBER_PORT_UCALL; the host reads it, validates every field (it is
 * untrusted), and writes only the OUT fields.
 */
struct ember_ucall {
	uint32_t cmd;                         /* IN  enum ember_ucall_cmd */
	uint32_t line;                        /* IN  source line (ASSERT) */
	uint64_t args[4];                     /* IN  command-specific */
	char file[EMBER_UCALL_FILE_MAX];      /* IN  source file (ASSERT) */
	char msg[EMBER_UCALL_MSG_MAX];        /* IN  text (ASSERT, PRINT, REPORT) */
	uint32_t status;                      /* OUT enum ember_wait_status (WAIT),
					       *     enum ember_park_status (PARK) */
	uint32_t data_len;                    /* OUT length of data without NUL (WAIT) */
	char data[EMBER_UCALL_DATA_MAX];      /* OUT command text (WAIT) */
};

#define EMBER_UCALL_SIZE 336u
_Static_assert(sizeof(struct ember_ucall) == EMBER_UCALL_SIZE, "ucall layout is ABI");

#endif
