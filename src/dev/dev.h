/*
 * ember device layer. A device owns a plain state struct (guest-visible state only:
 * no host pointers, no fds), I/O handlers for the bus, and get/set of that state for
 * snapshots. Handlers run on vCPU threads; the bus takes dev->lock around them, so a
 * device never sees two accesses at once.
 */
#ifndef EMBER_DEV_H
#define EMBER_DEV_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../vmm.h"
#include "snapfmt.h"

/* How a device raises an interrupt: level on a GSI (KVM_IRQ_LINE in the VMM,
 * a recording stub in unit tests). */
struct irq_line {
	int (*set_level)(void *opaque, unsigned gsi, int level);
	void *opaque;
	unsigned gsi;
};

struct device;
struct dev_ops {
	const char *name;
	/* off is the offset from the start of the device's range, on either bus. */
	void (*pio_read)(struct device *d, uint64_t off, uint8_t *data, unsigned len);
	void (*pio_write)(struct device *d, uint64_t off, const uint8_t *data, unsigned len);
	void (*destroy)(struct device *d);
	/* The device synchronises itself; the bus does not take dev->lock (guest_abi:
	 * a WAIT ucall may block and must not stall other vCPUs' ucalls). */
	bool self_locked;
};

struct device {
	const struct dev_ops *ops;
	struct vm *vm;          /* NULL in unit tests */
	pthread_mutex_t lock;
	void *priv;
};

/* bus dispatch (bus.c): takes d->lock unless ops->self_locked; unknown ports read as 0xff, writes are dropped */
void bus_pio(struct vm *vm, uint16_t port, bool is_write, uint8_t *data, unsigned len);
void bus_mmio(struct vm *vm, uint64_t addr, bool is_write, uint8_t *data, unsigned len);

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

struct serial_config {
	int out_fd;             /* -1: discard output */
	struct irq_line irq;
};
int serial_create(const struct serial_config *cfg, struct device **out);
/* Host -> guest input; returns bytes accepted (FIFO may be full). */
unsigned serial_input(struct device *d, const uint8_t *buf, unsigned len);
/* Writes buffered guest output to out_fd. */
void serial_flush(struct device *d);
void serial_get_state(struct device *d, struct serial_state *s);
int serial_set_state(struct device *d, const struct serial_state *s, struct errbuf *eb);
/* Pure invariant check, shared with ember-snap verify. */
int serial_state_validate(const struct serial_state *s, struct errbuf *eb);

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

struct i8042_config {
	void (*reset)(void *opaque);  /* guest pulsed the reset line (cmd 0xFE) */
	void *opaque;
};
int i8042_create(const struct i8042_config *cfg, struct device **out);
void i8042_get_state(struct device *d, struct i8042_state *s);
int i8042_set_state(struct device *d, const struct i8042_state *s, struct errbuf *eb);
int i8042_state_validate(const struct i8042_state *s, struct errbuf *eb);

/* ---- guest_abi.c: the ember_abi.h ports (ready, ucall, generation) ---------- */
int abi_dev_create(struct vm *vm, struct device **out);

/* ---- devices.c: the explicit, ordered device table of a VM ------------------- */
int devices_create(struct vm *vm, struct errbuf *eb);
void devices_destroy(struct vm *vm);
struct device *devices_find(struct vm *vm, const char *name);

int devices_save(struct vm *vm, struct snap_state *st, struct errbuf *eb);
/* Call devices_check_state first: this assumes the sections are present. */
int devices_restore(struct vm *vm, const struct snap_state *st, struct errbuf *eb);

/* ---- dev_state.c: device state <-> snapshot sections (pure) ----------------- */
#define SERIAL_STATE_VERSION 1
#define I8042_STATE_VERSION  1
#define ABI_STATE_VERSION    1
/* Every section known, of a version we read, decodable and valid; all present. */
int devices_check_state(const struct snap_state *st, struct errbuf *eb);
int serial_encode(const struct serial_state *s, struct snap_device *sd, struct snap_err *se);
int serial_decode(const struct snap_device *sd, struct serial_state *s, struct errbuf *eb);
int i8042_encode(const struct i8042_state *s, struct snap_device *sd, struct snap_err *se);
int i8042_decode(const struct snap_device *sd, struct i8042_state *s, struct errbuf *eb);
int abi_decode(const struct snap_device *sd, bool *ready_seen, struct errbuf *eb);
int from_snap_err(struct errbuf *eb, int r, const struct snap_err *se);

#endif
