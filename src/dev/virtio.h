/*
 * ember's virtio layer (internal): split virtqueues, and the virtio-mmio transport
 * that the virtio devices sit on. Everything a guest writes into a ring is untrusted
 * input, possibly being rewritten from another vCPU while ember reads it.
 */
#ifndef EMBER_VIRTIO_H
#define EMBER_VIRTIO_H

#include <linux/virtio_ring.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "../vmm.h"

/* ---- virtq.c: split virtqueues ---- */
/*
 * The device side of a split virtqueue (virtio 1.x, little-endian rings, no
 * VIRTIO_RING_F_EVENT_IDX). Not thread-safe: the device serialises every call on one
 * queue (its dev->lock); the guest is the only other party and is never trusted.
 *
 * Lifecycle: virtq_init at power-on and device reset; the transport stores the
 * guest's QueueNum/QueueDesc/QueueDriver/QueueDevice writes into q->s.size/desc/
 * avail/used, sets q->indirect at feature negotiation, and calls virtq_enable on
 * QueueReady=1. Snapshots save q->s; restore goes through virtq_restore. Chains popped
 * and not yet pushed are not in q->s: a device that holds some across a snapshot must
 * push them first, or they are lost to the driver in the restored VM.
 */

#define VIRTQ_MAX_SIZE  256   /* the largest queue any ember device offers */
#define VIRTQ_MAX_CHAIN 256   /* buffers in one chain, indirect ones included */

/* What a snapshot keeps of a queue: guest addresses and indices only, never host pointers. */
struct virtq_state {
	uint16_t size;        /* QueueNum: entries, a power of two, 1..max_size */
	uint8_t ready;        /* QueueReady */
	uint64_t desc, avail, used;  /* guest-physical addresses of the three rings */
	uint16_t next_avail;  /* free-running index of the next avail entry the device reads */
	uint16_t next_used;   /* free-running used->idx the device last published */
};

struct virtq_buf {
	uint64_t gpa;
	uint32_t len;         /* never 0: zero-length descriptors are skipped */
	bool writable;        /* device-writable (VRING_DESC_F_WRITE) */
	uint8_t *hva;         /* host address of [gpa, gpa+len), checked when popped */
};

/* A validated descriptor chain. Its buffers stay valid guest RAM (RAM never moves),
 * but the guest may change their contents at any time: copy before parsing. */
struct virtq_chain {
	uint16_t head;            /* descriptor index to give back to virtq_push */
	unsigned nr;              /* buffers in buf[], all readable ones first */
	unsigned nr_readable;
	uint64_t readable_len, writable_len;   /* totals, each at most UINT32_MAX */
	struct virtq_buf buf[VIRTQ_MAX_CHAIN];
};

struct virtq {
	struct virtq_state s;
	uint16_t max_size;        /* QueueNumMax, 1..VIRTQ_MAX_SIZE */
	bool indirect;            /* VIRTIO_RING_F_INDIRECT_DESC negotiated */
	struct guest_mem *mem;
	/* derived from s by virtq_enable/virtq_restore; never saved; NULL when not ready */
	const struct vring_desc *desc;
	const struct vring_avail *avail;
	struct vring_used *used;
};

/* Power-on / device reset: not ready, size = max_size (clamped to 1..VIRTQ_MAX_SIZE),
 * addresses 0, indices 0, indirect off (features are renegotiated after a reset). */
void virtq_init(struct virtq *q, struct guest_mem *mem, uint16_t max_size);
/*
 * QueueReady=1: size a power of two in 1..max_size; desc (16-byte aligned, 16*size
 * bytes), avail (2-aligned, 6+2*size bytes), used (4-aligned, 6+8*size bytes) each
 * entirely inside one guest RAM region (gpa_ptr; no overflow); computes the host
 * pointers, sets ready. The indices are kept (a reset clears them, as in QEMU).
 * -EINVAL with a message naming the field otherwise (q is left unchanged).
 */
int virtq_enable(struct virtq *q, struct errbuf *eb);
/* QueueReady=0: not ready, host pointers dropped; guest addresses and indices kept. */
void virtq_disable(struct virtq *q);
/*
 * Pure check of a saved state against max_size (no guest memory needed): used by
 * `ember-snap verify`. ready is 0 or 1; when ready, size a power of two in 1..max_size,
 * ring alignments, addr+len without overflow. A queue that is not ready may hold any
 * size and addresses: they are only the driver's register writes until QueueReady
 * checks them, and a snapshot taken in between must stay restorable.
 */
int virtq_state_check(const struct virtq_state *s, uint16_t max_size, struct errbuf *eb);
/* With a layout at hand (a snapshot's regions; no mapping needed): a ready queue's
 * rings each lie inside one RAM region, as virtq_restore will require. */
int virtq_state_check_ram(const struct virtq_state *s, const struct guest_mem *m,
			  struct errbuf *eb);
/* Restore: virtq_state_check, then (when ready) virtq_enable's RAM checks; sets q->s
 * and the host pointers. q is left unchanged on error. */
int virtq_restore(struct virtq *q, const struct virtq_state *s, struct errbuf *eb);
/*
 * The next available chain: 1 with *c filled, 0 when none is available, -EINVAL
 * (message in eb) when the driver broke the queue: the caller puts the device in
 * NEEDS_RESET and stops using the queue. Not ready -> 0. On error next_avail does
 * not move and *c is garbage. Every ring field is read once and the copy validated.
 * Direct descriptors may be followed by one indirect descriptor (virtio 1.x 2.7.5.3.2).
 */
int virtq_pop(struct virtq *q, struct virtq_chain *c, struct errbuf *eb);
/* Gives back the chain most recently popped (the device could not use it yet): only
 * right after a virtq_pop that returned 1. */
void virtq_unpop(struct virtq *q);
/*
 * Hands a chain back: used ring entry {head, written}, then used->idx with release
 * ordering; marks the used ring's written bytes dirty (mem_mark_dirty). written is
 * what the device wrote into the chain's writable part. No-op when not ready.
 */
void virtq_push(struct virtq *q, uint16_t head, uint32_t written);
/* The driver did not ask to be spared interrupts (VRING_AVAIL_F_NO_INTERRUPT); call
 * after virtq_push (a full barrier orders the used->idx store before this read). */
bool virtq_should_interrupt(const struct virtq *q);
/*
 * Ask the driver not to notify (VRING_USED_F_NO_NOTIFY) while the device polls, and to
 * notify again; notify_on returns true when buffers arrived meanwhile (re-check, no race).
 */
void virtq_notify_off(struct virtq *q);
bool virtq_notify_on(struct virtq *q);
/* Copies out of the chain's readable part, from byte off of that part; returns bytes
 * copied (short at its end). */
size_t virtq_chain_read(const struct virtq_chain *c, uint64_t off, void *dst, size_t len);
/* Copies into the chain's writable part only, from byte off of that part; marks
 * written pages dirty; returns bytes copied (short at its end). */
size_t virtq_chain_write(struct virtq *q, const struct virtq_chain *c, uint64_t off,
			 const void *src, size_t len);
/*
 * iovecs over [off, off+len) of the readable (writable=false) or writable part, for
 * readv/writev straight between a socket and guest memory. Writable ranges are marked
 * dirty (the caller writes them). Returns the number of iovecs (<= max), covering as
 * much as fits.
 */
int virtq_chain_iov(struct virtq *q, const struct virtq_chain *c, bool writable, uint64_t off,
		    uint64_t len, struct iovec *iov, int max);

/* ---- virtio_mmio.c: the virtio-mmio transport (version-2 registers) ---- */
#define VIRTIO_MAX_QUEUES 3

struct virtio_dev;
struct device;
struct snap_device;
struct snap_err;
struct snap_state;

/* What a virtio device tells the transport about itself. */
struct virtio_ops {
	uint32_t device_id;
	uint64_t features;          /* offered besides VERSION_1 and INDIRECT_DESC */
	unsigned nr_queues;
	uint16_t queue_max;         /* QueueNumMax of every queue */
	uint32_t config_len;        /* bytes of device configuration (read-only) */
	/* off + len <= config_len, checked by the transport */
	void (*config_read)(struct virtio_dev *vd, uint32_t off, uint8_t *data, unsigned len);
	/* DRIVER_OK was set (dev->lock held). */
	void (*activate)(struct virtio_dev *vd);
	/* The driver reset the device (dev->lock held): drop in-flight work. */
	void (*reset)(struct virtio_dev *vd);
};

/* The transport's registers that a snapshot keeps. */
struct virtio_mmio_state {
	uint32_t status;
	uint32_t device_features_sel, driver_features_sel;
	uint32_t queue_sel;
	uint32_t interrupt_status;
	uint32_t config_generation;
	uint64_t driver_features;   /* acked by the driver */
};

struct virtio_dev {
	struct device *dev;         /* lock, VM, slot (base, GSI) */
	const struct virtio_ops *ops;
	struct virtio_mmio_state t;
	struct virtq vq[VIRTIO_MAX_QUEUES];
	int kick_fd[VIRTIO_MAX_QUEUES]; /* eventfds: the guest notified queue q */
	int irq_fd;                 /* KVM irqfd on the device's GSI; -1: KVM_IRQ_LINE */
	/* KVM_IRQ_LINE even with an irqfd (post-restore, vCPUs stopped): KVM injects an
	 * irqfd's interrupt into the PIC/IOAPIC from a kworker, some time later; a restore
	 * or reset must leave the interrupt in the irqchip state before anything runs or
	 * is saved */
	bool irq_direct;
	bool ioeventfd;             /* KVM signals kick_fd without an exit */
	uint64_t interrupts;        /* raised so far (statistics, tests) */
	uint64_t exit_kicks;        /* notifications that took the exit path */
	char last_error[256];       /* why the device last went to NEEDS_RESET */
};

/* Device init: eventfds, queues at power-on, KVM ioeventfds and irqfd when there is a
 * VM fd (unit tests have none: the exit path, and d->irq for interrupts). */
int virtio_init(struct virtio_dev *vd, struct device *d, const struct virtio_ops *ops,
		struct errbuf *eb);
void virtio_fini(struct virtio_dev *vd);
/* Adds the eventfds the transport writes (queue kicks, the irqfd) for seccomp. */
void virtio_write_fds(const struct virtio_dev *vd, struct seccomp_fds *s);
/* The device's dev_ops read/write delegate here (the bus holds dev->lock). */
void virtio_mmio_read(struct virtio_dev *vd, uint64_t off, uint8_t *data, unsigned len);
void virtio_mmio_write(struct virtio_dev *vd, uint64_t off, const uint8_t *data, unsigned len);
/* Features offered to the driver. */
uint64_t virtio_offered(const struct virtio_dev *vd);
/* DRIVER_OK and not NEEDS_RESET/FAILED: the device may use its queues. */
bool virtio_live(const struct virtio_dev *vd);
/* Interrupt the driver (VIRTIO_MMIO_INT_VRING / _CONFIG), and wake parked vCPUs. */
void virtio_raise(struct virtio_dev *vd, uint32_t why);
/* The driver broke the protocol: log once, NEEDS_RESET, configuration interrupt. */
void virtio_fail(struct virtio_dev *vd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Signal queue q's eventfd as a notification would; consume one (true if there was). */
void virtio_kick(struct virtio_dev *vd, unsigned q);
bool virtio_take_kick(struct virtio_dev *vd, unsigned q);
/* The transport's and queues' fields of the device's snapshot section. decode is pure
 * (ember-snap verify); restore also checks the rings against guest RAM. */
int virtio_save(struct virtio_dev *vd, struct snap_device *sd, struct snap_err *se);
int virtio_decode(const struct snap_device *sd, const struct virtio_ops *ops,
		  struct virtio_mmio_state *t, struct virtq_state *qs, struct errbuf *eb);
/* The device check of ember-snap verify and restore: virtio_decode, and with the
 * snapshot's state at hand (st non-NULL) every ready ring inside its RAM regions. */
int virtio_check(const struct snap_state *st, const struct snap_device *sd,
		 const struct virtio_ops *ops, struct errbuf *eb);
int virtio_restore(struct virtio_dev *vd, const struct snap_device *sd, struct errbuf *eb);
/* Re-raises a pending interrupt and re-kicks ready queues after a restore. */
void virtio_post_restore(struct virtio_dev *vd);

/* ---- virtio_vsock.c, vsock_conn.c: virtio-vsock, Firecracker's hybrid scheme ---- */
/*
 * The guest's vsock connections end in host Unix sockets (INVOCATION.md section 1):
 * a client of the listener at `uds` says "CONNECT <port>", a guest connection to host
 * port P is connected to `uds_P`. Memory ember holds is bounded: at most
 * VSOCK_MAX_CONNS connections, each buffering at most VSOCK_CONN_BUF bytes on their
 * way to the host (the credit ember grants the guest); bytes to the guest are read
 * from the socket only into guest buffers the guest's credit allows. A peer that stops
 * reading stalls only its own connection.
 */
#include <linux/virtio_vsock.h>

#define VSOCK_MAX_CONNS       64
#define VSOCK_CONN_BUF        (512u << 10)
#define VSOCK_MAX_PKT         (64u << 10)   /* payload of one packet ember sends */
#define VSOCK_HANDSHAKE_MS    2000          /* CONNECT line, guest RESPONSE, guest close */
#define VSOCK_LINE_MAX        32            /* "CONNECT <port>\n" */
#define VSOCK_RST_RING        64
#define VSOCK_HOST_PORT_FIRST (1u << 30)    /* ephemeral host-side ports, as Firecracker */
#define VSOCK_HDR_SIZE        ((uint32_t)sizeof(struct virtio_vsock_hdr))

enum vsock_conn_state {
	VCONN_FREE = 0,
	VCONN_HELLO,      /* host client accepted; its CONNECT line not read yet */
	VCONN_REQUESTED,  /* REQUEST owed or sent to the guest; waiting for RESPONSE */
	VCONN_OPEN,       /* established (guest-initiated ones start here) */
	VCONN_CLOSING,    /* guest shut both ways: flushing to the host, then RST */
};

/* Control packets a connection owes the guest, sent when the RX queue has room. */
#define VPEND_REQUEST        1u
#define VPEND_RESPONSE       2u
#define VPEND_CREDIT_UPDATE  4u
#define VPEND_CREDIT_REQUEST 8u
#define VPEND_SHUTDOWN_SEND  16u  /* the host will send no more */

struct vsock_conn {
	enum vsock_conn_state state;
	int fd;                        /* the host Unix socket */
	uint32_t local_port;           /* host side (CID 2) */
	uint32_t peer_port;            /* guest side */
	uint32_t pending;              /* VPEND_* */
	uint64_t deadline_ns;          /* HELLO, REQUESTED, CLOSING give up then */
	bool readable, writable;       /* edge-triggered readiness not used up yet */
	/* guest -> host */
	uint32_t rx_cnt;               /* payload bytes received from the guest */
	uint32_t fwd_cnt;              /* of those, written to the socket */
	uint32_t fwd_cnt_told;         /* fwd_cnt as the guest last heard it */
	uint8_t *buf;                  /* bytes not yet written: buf[buf_off, +buf_len) */
	uint32_t buf_off, buf_len;
	char ok[24];                   /* "OK <host port>\n" not yet written */
	uint8_t ok_off, ok_len;
	bool guest_no_send, guest_no_recv; /* the guest's SHUTDOWN flags */
	bool host_eof;                 /* the host peer sent EOF */
	/* host -> guest */
	uint32_t tx_cnt;               /* payload bytes sent to the guest */
	uint32_t peer_buf_alloc, peer_fwd_cnt;
	bool credit_requested;         /* CREDIT_REQUEST owed or sent since credit ran out */
	bool hup;                      /* the host peer closed its socket (EPOLLHUP) */
	char line[VSOCK_LINE_MAX + 1];
	unsigned line_len;
};

struct vsock_stats {
	uint64_t conns_host, conns_guest, conns_refused;
	uint64_t bytes_to_guest, bytes_from_guest;
	uint64_t rst_sent, rst_dropped, bad_packets;
};

struct vsock {
	struct virtio_dev vd;
	uint64_t cid;
	char *uds;                     /* NULL: no host side (every guest connect is reset) */
	int listen_fd;
	uint64_t listen_dev, listen_ino;  /* the socket file ember made, to remove only it */
	int ep;                        /* the device thread's epoll */
	int ctl_fd;                    /* eventfd: stop, unquiesce */
	pthread_t thread;
	bool thread_started;
	pthread_cond_t cond;           /* with dev->lock: quiesce handshakes */
	bool quiesced, stop, parked;
	bool kick_rx, kick_tx, kick_evt, listen_ready, rx_starved;
	bool event_pending;            /* TRANSPORT_RESET owed to the guest */
	bool guest_reset_pending;      /* the driver reset the device: drop its connections */
	bool accept_warned;
	uint32_t next_port;
	unsigned rr;                   /* round-robin start for data to the guest */
	struct vsock_conn conns[VSOCK_MAX_CONNS];
	struct { uint32_t local_port, peer_port; } rst[VSOCK_RST_RING];
	unsigned rst_head, rst_len;
	struct vsock_stats stats;
};

/* vsock_conn.c: the connections (all with dev->lock held, on the device thread). */
void vsock_conn_init(struct vsock *vs);
void vsock_conn_close_all(struct vsock *vs);
/* The driver reset the device: the connections it knew of end; host clients it never
 * heard of (a CONNECT line pending, or a REQUEST not yet sent) wait for the new driver. */
void vsock_conn_guest_reset(struct vsock *vs);
/* One packet from the guest's TX queue: hdr validated for size; payload in c after it. */
void vsock_guest_packet(struct vsock *vs, const struct virtio_vsock_hdr *h,
			const struct virtq_chain *c);
void vsock_host_accept(struct vsock *vs);
void vsock_host_ready(struct vsock *vs, struct vsock_conn *c, uint32_t events);
/* Handshakes, writes to the host, deadlines: everything that needs no RX buffer. */
void vsock_host_work(struct vsock *vs, uint64_t now_ns);
/* Writes the next packet owed to the guest into chain ch: true with *written set,
 * false when nothing is owed now. */
bool vsock_next_for_guest(struct vsock *vs, const struct virtq_chain *ch, uint32_t *written);
/* ns until the nearest connection deadline, or -1 */
int64_t vsock_next_deadline(const struct vsock *vs, uint64_t now_ns);
uint64_t vsock_now_ns(void);

#endif
