/*
 * ember device layer. A device owns a plain state struct (guest-visible state only:
 * no host pointers, no fds), I/O handlers for the bus, and save/restore/check of that
 * state as a snapshot section. Handlers run on vCPU threads; the bus takes dev->lock
 * around them, and a device's own thread (virtio) takes it around its work, so a
 * device never sees two accesses at once.
 */
#ifndef EMBER_DEV_H
#define EMBER_DEV_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../vmm.h"
#include "snapfmt.h"

/* How a device raises an interrupt: level on a GSI (KVM_IRQ_LINE in the VMM, a
 * recording stub in unit tests). dev_create points it at the device's slot GSI. */
struct irq_line {
	int (*set_level)(void *opaque, unsigned gsi, int level);
	void *opaque;
	unsigned gsi;
};

enum dev_bus { DEV_PIO, DEV_MMIO };

struct device;
struct vm_config;

/*
 * A device: one file with its state struct and this table (kvmtool's pattern). The
 * device table (devices.c) names each device once with where it lives; creation, bus
 * registration, snapshot sections, `ember-snap verify` and teardown all come from it.
 * Every hook but init/read/write/save/restore/check may be NULL.
 */
struct dev_ops {
	const char *name;       /* also its snapshot section's name */
	uint32_t version;       /* its snapshot section's version */
	size_t priv_size;       /* private state, allocated zeroed with the device */
	/* The device synchronises itself: the bus does not take d->lock (guest_abi: a
	 * WAIT or PARK ucall sleeps and must not stall other vCPUs' ucalls). */
	bool self_locked;
	/* Power-on state; d->vm, d->slot, d->priv and d->irq are set. */
	int (*init)(struct device *d, struct errbuf *eb);
	void (*fini)(struct device *d);  /* undoes init (d and priv are freed after) */
	/* Once, before the vCPUs first run: device threads, main-loop watches. */
	int (*start)(struct device *d, struct errbuf *eb);
	/* Guest accesses; off is from the start of the device's range, on either bus. */
	void (*read)(struct device *d, uint64_t off, uint8_t *data, unsigned len);
	void (*write)(struct device *d, uint64_t off, const uint8_t *data, unsigned len);
	/* Snapshot section: plain state only (guest addresses, indices; no host pointers,
	 * no fds). restore gets untrusted input and validates every field first; check
	 * is the same validation with no device at hand (ember-snap verify and restore,
	 * before KVM is touched), given the whole snapshot state for what depends on it
	 * (guest RAM regions), or NULL. */
	int (*save)(struct device *d, struct snap_device *sd, struct snap_err *se);
	int (*restore)(struct device *d, const struct snap_device *sd, struct errbuf *eb);
	int (*check)(const struct snap_state *st, const struct snap_device *sd,
		     struct errbuf *eb);
	/* Before a snapshot: stop touching guest memory and queues; unquiesce after it. */
	void (*quiesce)(struct device *d);
	void (*unquiesce)(struct device *d);
	/* After every device's state is restored, before the vCPUs run. */
	void (*post_restore)(struct device *d);
	/* The fds its register handlers write (eventfds); vCPU threads' seccomp allows them. */
	void (*write_fds)(struct device *d, struct seccomp_fds *s);
};

/* A line of the device table: a device and where it lives. */
struct dev_slot {
	const struct dev_ops *ops;
	enum dev_bus bus;
	uint64_t base, len;
	unsigned gsi;            /* interrupt line, 0 for none */
	/* On boot the device exists when this says so (NULL: always). On restore it
	 * exists when the snapshot has its section; required ones must be there. */
	bool (*wanted)(const struct vm_config *cfg);
	bool required;
};

struct device {
	const struct dev_ops *ops;
	const struct dev_slot *slot;
	struct vm *vm;          /* a VM shell (vm_alloc) in unit tests */
	pthread_mutex_t lock;
	void *priv;
	struct irq_line irq;
};

/* bus dispatch (bus.c): takes d->lock unless ops->self_locked; unknown addresses read
 * as 0xff, writes are dropped */
void bus_pio(struct vm *vm, uint16_t port, bool is_write, uint8_t *data, unsigned len);
void bus_mmio(struct vm *vm, uint64_t addr, bool is_write, uint8_t *data, unsigned len);

/* ---- devices.c: the device table and what walks it ------------------------------ */
/* The table line of a device by name, or NULL. */
const struct dev_slot *dev_slot_find(const char *name);
/* One device, powered on, not on any bus (devices_create registers it). */
int dev_create(struct vm *vm, const struct dev_slot *slot, struct device **out,
	       struct errbuf *eb);
void dev_destroy(struct device *d);
/* The VM's devices in table order: on boot (st NULL) those the config wants, on
 * restore those the snapshot holds (after devices_check_state). Each is registered on
 * its bus. */
int devices_create(struct vm *vm, const struct snap_state *st, struct errbuf *eb);
void devices_destroy(struct vm *vm);
struct device *devices_find(struct vm *vm, const char *name);
int devices_start(struct vm *vm, struct errbuf *eb);
/* Adds the fds the devices' code writes from vCPU threads (seccomp_fds). */
void devices_vcpu_write_fds(struct vm *vm, struct seccomp_fds *s);
void devices_quiesce(struct vm *vm);
void devices_unquiesce(struct vm *vm);
int devices_save(struct vm *vm, struct snap_state *st, struct errbuf *eb);
/* Call devices_check_state first: this assumes the sections are present. */
int devices_restore(struct vm *vm, const struct snap_state *st, struct errbuf *eb);
void devices_post_restore(struct vm *vm);
/* Every section known, of a version we read, decodable and valid; every required
 * device present. Pure: ember-snap verify runs it too. */
int devices_check_state(const struct snap_state *st, struct errbuf *eb);
/* Appends " virtio_mmio.device=4K@0x...:N" for every virtio device of the VM. */
int devices_cmdline(struct vm *vm, char *buf, size_t len);
/* The guest pulled the reset line (i8042): the VM stops with VM_STOP_RESET. */
void dev_request_reset(struct device *d, const char *why);

/* ---- dev_state.c: helpers for snapshot sections --------------------------------- */
int from_snap_err(struct errbuf *eb, int r, const struct snap_err *se);
/*
 * A state made of byte-sized registers plus one byte queue whose length is one of the
 * registers (serial, i8042): a table names them, so encode and decode cannot drift.
 */
struct byte_reg {
	const char *name;
	size_t off;
};
struct byte_state_desc {
	const char *dev;
	const struct byte_reg *regs;
	size_t nr_regs;
	const char *queue, *queue_len; /* the bin field and the register holding its length */
	size_t queue_off, queue_max;
};
int dev_bytes_encode(const struct byte_state_desc *d, const void *st, struct snap_device *sd,
		     struct snap_err *se);
/* Type and range checks only; the device's own invariants come after. */
int dev_bytes_decode(const struct byte_state_desc *d, const struct snap_device *sd, void *st,
		     size_t size, struct errbuf *eb);
/* A u64 field at most max, with the device named in the error. */
int dev_get_u64(const struct snap_device *sd, const char *field, uint64_t max, uint64_t *v,
		struct errbuf *eb);

/* ---- serial.c: 8250/16550A UART ------------------------------------------------ */
#define SERIAL_COM1_BASE 0x3f8
#define SERIAL_COM1_IRQ  4
#define SERIAL_FIFO_SIZE 64

/* Everything the guest can observe; saved and restored as is. */
struct serial_state {
	uint8_t ier, iir, fcr, lcr, mcr, lsr, msr, scr, dll, dlm;
	uint8_t thri_pending;             /* THR-empty interrupt latched until IIR read/THR write */
	uint8_t rx_len;                   /* bytes in rx_fifo, <= SERIAL_FIFO_SIZE */
	uint8_t rx_fifo[SERIAL_FIFO_SIZE];/* oldest first */
};

#define SERIAL_STATE_VERSION 1
extern const struct dev_ops serial_ops;  /* output to vm->console_fd, IRQ 4 */
/* Host -> guest input; returns bytes accepted (FIFO may be full). */
unsigned serial_input(struct device *d, const uint8_t *buf, unsigned len);
/* Writes buffered guest output to out_fd. */
void serial_flush(struct device *d);
/* Other guest output for the console (the PRINT ucall): in order with the UART's, and
 * under the same --console-limit and accounting. */
void serial_console_write(struct device *d, const void *buf, size_t len);
/* What became of the guest's console output so far (struct console_stats, vmm.h). */
void serial_console_stats(struct device *d, struct console_stats *cs);
void serial_get_state(struct device *d, struct serial_state *s);
int serial_set_state(struct device *d, const struct serial_state *s, struct errbuf *eb);
/* Pure invariant check, shared with ember-snap verify. */
int serial_state_validate(const struct serial_state *s, struct errbuf *eb);
/* The snapshot section (decode also runs serial_state_validate). */
int serial_encode(const struct serial_state *s, struct snap_device *sd, struct snap_err *se);
int serial_decode(const struct snap_device *sd, struct serial_state *s, struct errbuf *eb);

/* ---- i8042.c: keyboard controller, for its reset line ----------------------- */
#define I8042_DATA_PORT 0x60
#define I8042_CMD_PORT  0x64

struct i8042_state {
	uint8_t status;      /* status register */
	uint8_t cmd_byte;    /* controller configuration byte */
	uint8_t pending_cmd; /* command awaiting a data byte on 0x60, 0 if none */
	uint8_t out_len;     /* bytes queued for the guest on 0x60, <= 4 */
	uint8_t out[4];
};

#define I8042_STATE_VERSION 1
extern const struct dev_ops i8042_ops;   /* the reset line: dev_request_reset */
void i8042_get_state(struct device *d, struct i8042_state *s);
int i8042_set_state(struct device *d, const struct i8042_state *s, struct errbuf *eb);
int i8042_state_validate(const struct i8042_state *s, struct errbuf *eb);
int i8042_encode(const struct i8042_state *s, struct snap_device *sd, struct snap_err *se);
int i8042_decode(const struct snap_device *sd, struct i8042_state *s, struct errbuf *eb);

/* ---- guest_abi.c: the ember_abi.h ports (ready, ucall, park, generation) ------ */
#define ABI_STATE_VERSION 1
extern const struct dev_ops guest_abi_ops; /* section: ready_seen */

/* ---- virtio devices (virtio_*.c, on the transport of virtio.h) ------------------- */
#define VIRTIO_RNG_STATE_VERSION 1
extern const struct dev_ops virtio_rng_ops;   /* getrandom into the guest's buffers */
#define VIRTIO_VSOCK_STATE_VERSION 1
extern const struct dev_ops virtio_vsock_ops; /* Firecracker's hybrid vsock (INVOCATION.md) */

#endif
