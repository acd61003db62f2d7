/*
 * A fake virtio-mmio transport with a virtio-rng and a virtio-vsock device, for
 * running the guest library's virtio.c, rng.c and vsock.c on the host. It replaces
 * mmio.c (register accesses), guest_park(), time_us() and friends. Devices run only
 * inside guest_park(), like a host thread the guest waits for, and they are strict:
 * a queue is looked at only after a notify, RX only until it runs dry, and every
 * guest packet is checked against the protocol (counted in fake_vsock.violations).
 */
#ifndef FAKE_VIRTIO_H
#define FAKE_VIRTIO_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FAKE_RNG_BASE   0xd0000000ull
#define FAKE_VSOCK_BASE 0xd0001000ull

/* Resets both devices and the clock; the command line names what `rng`/`vsock` say. */
void fake_reset(bool rng, bool vsock);

/* The fake clock (µs), advanced by time_us() calls and idle parks. */
extern uint64_t fake_now;
extern unsigned fake_parks;
/* Called at every guest_park() after the devices ran: the test's host side. */
extern void (*fake_park_hook)(void);
/* When set, a guest assertion longjmps here instead of failing the test. */
extern jmp_buf *fake_assert_jmp;
extern char fake_assert_msg[256];

/* ---- the rest of the platform, for guests run on the host (fn.c) ------------------- */
extern char fake_log[1 << 16];          /* everything guest_print() printed */
extern uint64_t fake_generation;        /* guest_generation() */
extern bool fake_ready;                 /* guest_ready() was called */
extern unsigned fake_reports;           /* guest_report() calls */
extern uint64_t fake_report_args[4];    /* the last one's */
extern jmp_buf *fake_reset_jmp;         /* guest_reset() longjmps here */
/* Queues a host command for guest_poll_cmd(); fake_cmds_done: -ENODATA after them. */
void fake_cmd(const char *cmd);
extern bool fake_cmds_done;

/* ---- rng -------------------------------------------------------------------------- */
struct fake_rng {
	uint32_t max_per_request; /* bytes filled per request (0: all) */
	unsigned requests;
	uint8_t next;             /* bytes are 1, 2, 3, ... (never 0) */
};
extern struct fake_rng fake_rng;
/* Changes what the rng window reports after fake_reset. */
void fake_set_rng_version(uint32_t version, uint64_t features);

/* ---- vsock ------------------------------------------------------------------------- */
#define FAKE_CONNS 32

struct hconn {
	bool live;
	bool established;         /* guest answered RESPONSE (or we did) */
	bool rst;                 /* the guest reset it, or we did */
	bool refused;
	uint32_t host_port, guest_port;
	unsigned guest_shut;      /* SHUTDOWN flags the guest sent */
	/* host -> guest */
	uint8_t *out;
	size_t out_len, out_off;
	uint32_t tx_cnt;          /* bytes delivered to the guest */
	uint32_t guest_buf_alloc, guest_fwd_cnt;
	/* guest -> host */
	uint8_t *in;
	size_t in_len, in_cap, in_read;
	uint32_t rx_cnt, fwd_cnt;  /* received, consumed by the "host app" */
};

struct fake_vsock {
	uint64_t cid;
	uint32_t buf_alloc;        /* the host's, advertised to the guest */
	uint32_t max_pkt;          /* largest RW payload delivered to the guest */
	bool auto_consume;         /* the host app reads at once, sending credit updates */
	bool credit_on_request;    /* ... but only when the guest asks (CREDIT_REQUEST) */
	bool ignore_guest_credit;  /* misbehave: send beyond the guest's buf_alloc */
	bool silent_on_shutdown;   /* misbehave: never RST a guest SHUTDOWN */
	uint32_t listen[8];
	unsigned nr_listen;
	struct hconn conns[FAKE_CONNS];
	/* what the guest did */
	unsigned violations;       /* protocol or driver rule broken */
	char last_violation[160];
	unsigned tx_pkts, rx_pkts, credit_updates, credit_requests, rsts, shutdowns;
	unsigned rx_starved;       /* times RX ran dry and waited for a notify */
	unsigned notifies[3];
	bool event_pending;
	uint64_t features;
};
extern struct fake_vsock fake_vsock;

void fake_vsock_listen(uint32_t host_port);
/* A host client connecting to the guest's port; the connection's index. */
int fake_vsock_connect(uint32_t guest_port);
void fake_vsock_send(int h, const void *data, size_t len);
/* What the guest sent and the host app has not read yet; reading it frees credit. */
size_t fake_vsock_recv(int h, void *buf, size_t len);
void fake_vsock_shutdown(int h, unsigned flags);
void fake_vsock_rst(int h);
/* A packet from the host exactly as given (for wrong CIDs, credit requests, ...). */
void fake_vsock_inject(uint64_t src_cid, uint64_t dst_cid, uint32_t src_port, uint32_t dst_port,
		       uint16_t op, uint32_t flags);
/* A restore: every connection gone, TRANSPORT_RESET on the event queue, a new CID. */
void fake_vsock_transport_reset(uint64_t new_cid);
/* The host connection from host_port to the guest port, or -1. */
int fake_vsock_find(uint32_t host_port, uint32_t guest_port);

#endif
