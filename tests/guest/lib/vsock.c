/*
 * A small vsock stack (stream sockets) over virtio-vsock, polled from ring 3.
 *
 * Queues: rx = 0 (device-writable buffers, each one descriptor of header + 64 KiB,
 * as Linux posts them), tx = 1 (the 44-byte header in its own descriptor, the payload
 * in a second one from a bounce buffer), event = 2 (TRANSPORT_RESET after a restore).
 *
 * Credit (virtio spec 5.10.6.3): every packet we send carries buf_alloc (our
 * per-connection receive buffer, VSOCK_CONN_BUF) and fwd_cnt (bytes the application
 * consumed); we never send more than peer_buf_alloc - (tx_cnt - peer_fwd_cnt). When
 * the reader has consumed half a buffer since the peer last heard our fwd_cnt, we send
 * a CREDIT_UPDATE; a CREDIT_REQUEST is answered at once.
 *
 * Exits are the cost on this platform (~65 us each: a notify, a park, a register
 * read), so: RX buffers go back to the device without a notify until half of them
 * did, TX kicks once per batch, the TX queue asks for no used-buffer signal unless a
 * writer waits for TX space, and an idle wait spins briefly before it parks.
 *
 * The protocol logic works on headers and connection records; only process_*() and
 * tx_packet() touch the rings, and mmio.c the registers, so the host-side test runs
 * all of it against a fake device (host/fake_virtio.c).
 */
#include "internal.h"

#define VQ_RX    0
#define VQ_TX    1
#define VQ_EVENT 2

#define EVENT_BUFS          4
#define TX_HDRS             64     /* header slots: data packets leave CTRL_RESERVE ... */
#define CTRL_RESERVE        8      /* ... free for RESPONSE, RST, CREDIT_* */
#define RST_BACKLOG         8      /* RSTs to unknown connections waiting for a slot */
#define CLOSE_TIMEOUT_US    2000000ull
#define CREDIT_REQ_AFTER_US 50000ull   /* a stall this long: ask for credit ... */
#define CREDIT_REQ_EVERY_US 1000000ull /* ... and again this often */
#define DEFAULT_SPIN_US     50
#define EPHEMERAL_FIRST     49152u
#define DROPS_PRINTED       4      /* without vsock_debug, the first few drops say why */
#define RX_BUF_SIZE         (VSOCK_HDR_SIZE + VSOCK_RX_PAYLOAD)
#define CONN_MASK           (VSOCK_CONN_BUF - 1)
_Static_assert((VSOCK_CONN_BUF & CONN_MASK) == 0, "the receive ring is a power of two");

enum {
	PEND_REQUEST = 1 << 0,
	PEND_RESPONSE = 1 << 1,
	PEND_CREDIT_UPDATE = 1 << 2,
	PEND_CREDIT_REQUEST = 1 << 3,
	PEND_SHUTDOWN = 1 << 4,
};

struct conn {
	enum vsock_state state;
	uint64_t peer_cid;
	uint32_t local_port, peer_port;
	uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
	uint32_t fwd_cnt, fwd_cnt_sent;  /* consumed by the app; as the peer last heard it */
	uint32_t rx_head, rx_len;        /* bytes waiting in rx_bufs[slot] */
	unsigned peer_shut, our_shut, shut_to_send;
	unsigned pending;                /* PEND_*: control packets owed (TX was full) */
	int err;
	uint64_t seq;                    /* accept order */
	uint64_t deadline;               /* CLOSING: then we send RST ourselves */
	uint64_t stall_since, credit_req_at;
};

struct rx_buf {
	uint8_t bytes[ALIGN_UP(RX_BUF_SIZE, 64)];
} __attribute__((aligned(64)));

struct tx_slot {
	struct virtio_vsock_hdr hdr; /* read by the device: keep it in place until used */
	int8_t buf;                  /* payload bounce buffer, -1 for none */
	bool busy;
};

struct rst_tuple {
	uint64_t cid;
	uint32_t local_port, peer_port;
};

/* device memory: static, identity-mapped */
static struct virtq_ring ring_mem[3];
static struct rx_buf rx_bufs[VSOCK_RX_BUFS];
static uint8_t tx_bufs[VSOCK_TX_BUFS][VSOCK_TX_PAYLOAD] __attribute__((aligned(4096)));
static struct tx_slot tx_slots[TX_HDRS];
static struct virtio_vsock_event events[EVENT_BUFS];
static uint8_t conn_bufs[VSOCK_MAX_CONNS][VSOCK_CONN_BUF] __attribute__((aligned(4096)));

static struct {
	struct virtio_dev dev;
	struct virtq vq[3];
	uint64_t cid;
	bool up, debug, tx_dirty, tx_waiting;
	unsigned rx_unkicked, hdrs_free, bufs_free, closing;
	uint32_t listeners[VSOCK_MAX_LISTEN];
	unsigned nr_listeners;
	struct conn conns[VSOCK_MAX_CONNS];
	uint64_t accept_seq, spin_us;
	uint32_t next_port;
	struct rst_tuple rst_backlog[RST_BACKLOG];
	unsigned nr_rst;
	unsigned drops_printed;
	struct vsock_stats stats;
} vs;

/* ---- tracing ------------------------------------------------------------------------- */

static const char *op_name(uint16_t op)
{
	static const char *const names[] = {
		"INVALID", "REQUEST", "RESPONSE", "RST", "SHUTDOWN", "RW", "CREDIT_UPDATE",
		"CREDIT_REQUEST",
	};

	return op < ARRAY_SIZE(names) ? names[op] : "?";
}

static const char *state_name(enum vsock_state s)
{
	static const char *const names[] = {
		"FREE", "CONNECTING", "PENDING", "CONNECTED", "CLOSING", "DEAD",
	};

	return (unsigned)s < ARRAY_SIZE(names) ? names[s] : "?";
}

static void trace_pkt(const char *dir, const struct virtio_vsock_hdr *h)
{
	if (!vs.debug)
		return;
	guest_print("vsock: %s %s %lu:%u -> %lu:%u len=%u type=%u flags=0x%x buf_alloc=%u "
		    "fwd_cnt=%u\n", dir, op_name(h->op), (uint64_t)h->src_cid, h->src_port,
		    (uint64_t)h->dst_cid, h->dst_port, h->len, h->type, h->flags, h->buf_alloc,
		    h->fwd_cnt);
}

static int conn_id(const struct conn *c)
{
	return (int)(c - vs.conns);
}

static void set_state(struct conn *c, enum vsock_state s)
{
	if (vs.debug && c->state != s)
		guest_print("vsock: c%d %u <-> %lu:%u %s -> %s\n", conn_id(c), c->local_port,
			    c->peer_cid, c->peer_port, state_name(c->state), state_name(s));
	if (c->state == VSOCK_CLOSING)
		vs.closing--;
	if (s == VSOCK_CLOSING)
		vs.closing++;
	c->state = s;
}

static void drop(const struct virtio_vsock_hdr *h, const char *why)
{
	vs.stats.dropped++;
	if (!vs.debug && vs.drops_printed >= DROPS_PRINTED)
		return;
	vs.drops_printed++;
	if (h)
		guest_print("vsock: dropped %s %lu:%u -> %lu:%u len=%u: %s\n", op_name(h->op),
			    (uint64_t)h->src_cid, h->src_port, (uint64_t)h->dst_cid, h->dst_port,
			    h->len, why);
	else
		guest_print("vsock: dropped a packet: %s\n", why);
}

/* ---- TX: header slots, bounce buffers, the queue ------------------------------------- */

static bool reclaim_tx(void)
{
	struct tx_slot *s;
	uint32_t len;
	bool any = false;

	while ((s = virtq_get(&vs.vq[VQ_TX], &len))) {
		if (s->buf >= 0)
			vs.bufs_free |= 1u << s->buf;
		s->busy = false;
		vs.hdrs_free++;
		any = true;
	}
	return any;
}

static int alloc_slot(void)
{
	for (unsigned i = 0; i < TX_HDRS; i++)
		if (!tx_slots[i].busy)
			return (int)i;
	return -1;
}

/*
 * Queues one packet (header as given, payload copied to a bounce buffer); the caller
 * kicks with tx_flush(). -ENOSPC without a header slot, bounce buffer or descriptors;
 * data packets leave CTRL_RESERVE slots for control packets.
 */
static int tx_packet(const struct virtio_vsock_hdr *h, const void *payload, uint32_t len)
{
	struct virtq *q = &vs.vq[VQ_TX];
	unsigned need = len ? 2 : 1, reserve = len ? CTRL_RESERVE : 0;
	struct virtq_buf bufs[2];
	struct tx_slot *s;
	int i, b = -1;

	if (vs.hdrs_free <= reserve || q->num_free < need + reserve || (len && !vs.bufs_free))
		reclaim_tx();
	if (vs.hdrs_free <= reserve || q->num_free < need + reserve || (len && !vs.bufs_free) ||
	    len > VSOCK_TX_PAYLOAD)
		return -ENOSPC;
	i = alloc_slot();
	if (i < 0)
		return -ENOSPC;
	s = &tx_slots[i];
	s->hdr = *h;
	bufs[0] = (struct virtq_buf){ (uint64_t)(uintptr_t)&s->hdr, VSOCK_HDR_SIZE, false };
	if (len) {
		b = __builtin_ctz(vs.bufs_free);
		vs.bufs_free &= ~(1u << b);
		memcpy(tx_bufs[b], payload, len);
		bufs[1] = (struct virtq_buf){ (uint64_t)(uintptr_t)tx_bufs[b], len, false };
	}
	s->buf = (int8_t)b;
	s->busy = true;
	vs.hdrs_free--;
	GUEST_ASSERT(virtq_add(q, bufs, need, s) >= 0); /* checked num_free above */
	vs.tx_dirty = true;
	vs.stats.tx_pkts++;
	vs.stats.tx_bytes += len;
	trace_pkt("tx", h);
	return 0;
}

static void tx_flush(void)
{
	if (!vs.tx_dirty)
		return;
	vs.tx_dirty = false;
	virtq_kick(&vs.vq[VQ_TX]);
}

static void fill_hdr(struct virtio_vsock_hdr *h, uint64_t dst_cid, uint32_t src_port,
		     uint32_t dst_port, uint16_t op)
{
	memset(h, 0, sizeof(*h));
	h->src_cid = vs.cid;
	h->dst_cid = dst_cid;
	h->src_port = src_port;
	h->dst_port = dst_port;
	h->type = VIRTIO_VSOCK_TYPE_STREAM;
	h->op = op;
}

static void conn_hdr(struct conn *c, struct virtio_vsock_hdr *h, uint16_t op, uint32_t flags,
		     uint32_t len)
{
	fill_hdr(h, c->peer_cid, c->local_port, c->peer_port, op);
	h->len = len;
	h->flags = flags;
	h->buf_alloc = VSOCK_CONN_BUF;
	h->fwd_cnt = c->fwd_cnt;
}

/* A packet of the connection; on success the peer has heard our fwd_cnt. */
static int conn_send(struct conn *c, uint16_t op, uint32_t flags, const void *p, uint32_t len)
{
	struct virtio_vsock_hdr h;
	int r;

	conn_hdr(c, &h, op, flags, len);
	r = tx_packet(&h, p, len);
	if (!r)
		c->fwd_cnt_sent = c->fwd_cnt;
	return r;
}

static const struct {
	unsigned bit;
	uint16_t op;
} pend_ops[] = {
	{ PEND_REQUEST, VIRTIO_VSOCK_OP_REQUEST },
	{ PEND_RESPONSE, VIRTIO_VSOCK_OP_RESPONSE },
	{ PEND_CREDIT_UPDATE, VIRTIO_VSOCK_OP_CREDIT_UPDATE },
	{ PEND_CREDIT_REQUEST, VIRTIO_VSOCK_OP_CREDIT_REQUEST },
	{ PEND_SHUTDOWN, VIRTIO_VSOCK_OP_SHUTDOWN },
};

/* Sends what the connection owes, in protocol order; stops at the first that does
 * not fit (a later one must not overtake it). */
static bool flush_pending(struct conn *c)
{
	bool any = false;

	for (unsigned i = 0; i < ARRAY_SIZE(pend_ops) && c->pending; i++) {
		if (!(c->pending & pend_ops[i].bit))
			continue;
		if (conn_send(c, pend_ops[i].op,
			      pend_ops[i].op == VIRTIO_VSOCK_OP_SHUTDOWN ? c->shut_to_send : 0,
			      NULL, 0))
			break;
		c->pending &= ~pend_ops[i].bit;
		if (pend_ops[i].op == VIRTIO_VSOCK_OP_CREDIT_UPDATE)
			vs.stats.credit_updates_tx++;
		if (pend_ops[i].op == VIRTIO_VSOCK_OP_CREDIT_REQUEST)
			vs.stats.credit_requests_tx++;
		any = true;
	}
	return any;
}

static void send_ctrl(struct conn *c, unsigned bit)
{
	c->pending |= bit;
	flush_pending(c);
}

static bool send_rst_now(uint64_t cid, uint32_t local_port, uint32_t peer_port)
{
	struct virtio_vsock_hdr h;

	fill_hdr(&h, cid, local_port, peer_port, VIRTIO_VSOCK_OP_RST);
	if (tx_packet(&h, NULL, 0))
		return false;
	vs.stats.rst_tx++;
	return true;
}

/* RSTs are per tuple, not per connection: the slot may be reused before it goes out. */
static void send_rst(uint64_t cid, uint32_t local_port, uint32_t peer_port)
{
	if (send_rst_now(cid, local_port, peer_port))
		return;
	if (vs.nr_rst == RST_BACKLOG) {
		drop(NULL, "no TX slot for an RST and the RST backlog is full");
		return;
	}
	vs.rst_backlog[vs.nr_rst++] = (struct rst_tuple){ cid, local_port, peer_port };
}

static bool flush_rst_backlog(void)
{
	unsigned done = 0;

	while (done < vs.nr_rst && send_rst_now(vs.rst_backlog[done].cid,
						vs.rst_backlog[done].local_port,
						vs.rst_backlog[done].peer_port))
		done++;
	if (done) {
		memmove(vs.rst_backlog, vs.rst_backlog + done,
			(vs.nr_rst - done) * sizeof(vs.rst_backlog[0]));
		vs.nr_rst -= done;
	}
	return done != 0;
}

/* ---- connections --------------------------------------------------------------------- */

static struct conn *conn_alloc(void)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct conn *c = &vs.conns[i];

		if (c->state == VSOCK_FREE) {
			memset(c, 0, sizeof(*c));
			return c;
		}
	}
	return NULL;
}

static void conn_free(struct conn *c)
{
	set_state(c, VSOCK_FREE);
	memset(c, 0, sizeof(*c));
}

/* The live connection a packet belongs to: DEAD ones only wait for vsock_close and
 * their tuple is free again. */
static struct conn *conn_find(uint64_t peer_cid, uint32_t peer_port, uint32_t local_port)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct conn *c = &vs.conns[i];

		if (c->state != VSOCK_FREE && c->state != VSOCK_DEAD && c->peer_cid == peer_cid &&
		    c->peer_port == peer_port && c->local_port == local_port)
			return c;
	}
	return NULL;
}

static bool port_in_use(uint32_t port)
{
	for (unsigned i = 0; i < vs.nr_listeners; i++)
		if (vs.listeners[i] == port)
			return true;
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		if (vs.conns[i].state != VSOCK_FREE && vs.conns[i].local_port == port)
			return true;
	return false;
}

/*
 * The connection is over without an orderly close. The app still holds CONNECTING,
 * CONNECTED and DEAD ones (they become DEAD and wait for vsock_close); nobody holds a
 * PENDING or CLOSING one, so it is freed.
 */
static void conn_kill(struct conn *c, int err, bool rst)
{
	if (rst)
		send_rst(c->peer_cid, c->local_port, c->peer_port);
	c->pending = 0;
	if (c->state == VSOCK_PENDING || c->state == VSOCK_CLOSING) {
		conn_free(c);
		return;
	}
	c->err = err;
	set_state(c, VSOCK_DEAD);
}

/* What the peer can still take: buf_alloc - (tx_cnt - fwd_cnt), never negative (a peer
 * may shrink its buffer). */
static uint32_t peer_credit(const struct conn *c)
{
	uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;

	return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

static void maybe_credit_update(struct conn *c)
{
	if ((c->state != VSOCK_CONNECTED && c->state != VSOCK_PENDING) ||
	    (c->peer_shut & VSOCK_SHUT_WR))
		return;
	if (c->fwd_cnt - c->fwd_cnt_sent >= VSOCK_CONN_BUF / 2)
		send_ctrl(c, PEND_CREDIT_UPDATE);
}

static void rx_enqueue(struct conn *c, const uint8_t *p, uint32_t len)
{
	uint8_t *buf = conn_bufs[conn_id(c)];
	uint32_t tail = (c->rx_head + c->rx_len) & CONN_MASK;
	uint32_t first = len < VSOCK_CONN_BUF - tail ? len : VSOCK_CONN_BUF - tail;

	memcpy(buf + tail, p, first);
	memcpy(buf, p + first, len - first);
	c->rx_len += len;
}

static uint32_t rx_dequeue(struct conn *c, uint8_t *p, uint32_t len)
{
	const uint8_t *buf = conn_bufs[conn_id(c)];
	uint32_t n = len < c->rx_len ? len : c->rx_len;
	uint32_t first = n < VSOCK_CONN_BUF - c->rx_head ? n : VSOCK_CONN_BUF - c->rx_head;

	memcpy(p, buf + c->rx_head, first);
	memcpy(p + first, buf, n - first);
	c->rx_head = (c->rx_head + n) & CONN_MASK;
	c->rx_len -= n;
	c->fwd_cnt += n;
	return n;
}

/* ---- RX: one packet ------------------------------------------------------------------ */

static bool is_listening(uint32_t port)
{
	for (unsigned i = 0; i < vs.nr_listeners; i++)
		if (vs.listeners[i] == port)
			return true;
	return false;
}

static void handle_request(const struct virtio_vsock_hdr *h)
{
	struct conn *c;

	if (!is_listening(h->dst_port)) {
		send_rst(h->src_cid, h->dst_port, h->src_port);
		return;
	}
	c = conn_alloc();
	if (!c) {
		drop(h, "no free connection slot: refused");
		send_rst(h->src_cid, h->dst_port, h->src_port);
		return;
	}
	c->peer_cid = h->src_cid;
	c->peer_port = h->src_port;
	c->local_port = h->dst_port;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	c->seq = ++vs.accept_seq;
	set_state(c, VSOCK_PENDING);
	send_ctrl(c, PEND_RESPONSE);
}

static void handle_rw(struct conn *c, const struct virtio_vsock_hdr *h, const uint8_t *payload)
{
	if (c->state == VSOCK_CLOSING || (c->our_shut & VSOCK_SHUT_RD))
		return; /* we said we would not read: discard, as Linux does */
	if (h->len > VSOCK_CONN_BUF - c->rx_len) {
		/* beyond the credit we gave: the stream cannot continue intact */
		drop(h, "more than our credit: resetting the connection");
		conn_kill(c, -EPROTO, true);
		return;
	}
	rx_enqueue(c, payload, h->len);
}

static void handle_conn_pkt(struct conn *c, const struct virtio_vsock_hdr *h,
			    const uint8_t *payload)
{
	uint16_t op = h->op;

	c->peer_buf_alloc = h->buf_alloc; /* every header carries the peer's credit */
	c->peer_fwd_cnt = h->fwd_cnt;
	if (op == VIRTIO_VSOCK_OP_RST) {
		vs.stats.rst_rx++;
		/* ECONNRESET also for a refused connect, as Linux reports it */
		conn_kill(c, -ECONNRESET, false);
		return;
	}
	if (c->state == VSOCK_CONNECTING) {
		if (op == VIRTIO_VSOCK_OP_RESPONSE)
			set_state(c, VSOCK_CONNECTED);
		else
			conn_kill(c, -EPROTO, true);
		return;
	}
	switch (op) {
	case VIRTIO_VSOCK_OP_RW:
		handle_rw(c, h, payload);
		break;
	case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
		break;
	case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
		if (c->state != VSOCK_CLOSING)
			send_ctrl(c, PEND_CREDIT_UPDATE);
		break;
	case VIRTIO_VSOCK_OP_SHUTDOWN:
		c->peer_shut |= h->flags & (VSOCK_SHUT_RD | VSOCK_SHUT_WR);
		/* both sides done: finish with RST instead of waiting (Linux) */
		if (c->state == VSOCK_CLOSING &&
		    c->peer_shut == (VSOCK_SHUT_RD | VSOCK_SHUT_WR))
			conn_kill(c, 0, true);
		break;
	default: /* REQUEST on a live connection, RESPONSE out of turn, unknown ops */
		drop(h, "unexpected on an established connection: resetting it");
		conn_kill(c, -EPROTO, true);
	}
}

static void handle_rx(const struct rx_buf *b, uint32_t used_len)
{
	struct virtio_vsock_hdr h;
	struct conn *c;

	if (used_len < VSOCK_HDR_SIZE || used_len > RX_BUF_SIZE) {
		drop(NULL, "RX used length outside [header, buffer]");
		return;
	}
	memcpy(&h, b->bytes, sizeof(h)); /* one copy: the checks and the use see the same */
	vs.stats.rx_pkts++;
	trace_pkt("rx", &h);
	if (h.len > used_len - VSOCK_HDR_SIZE) {
		drop(&h, "len is beyond what the device wrote");
		return;
	}
	if (h.op != VIRTIO_VSOCK_OP_RW && h.len) {
		drop(&h, "payload on a control packet");
		return;
	}
	if (h.dst_cid != vs.cid) {
		drop(&h, "not for our CID");
		return;
	}
	vs.stats.rx_bytes += h.len;
	if (h.type != VIRTIO_VSOCK_TYPE_STREAM) {
		if (h.op != VIRTIO_VSOCK_OP_RST)
			send_rst(h.src_cid, h.dst_port, h.src_port);
		return;
	}
	c = conn_find(h.src_cid, h.src_port, h.dst_port);
	if (c)
		handle_conn_pkt(c, &h, b->bytes + VSOCK_HDR_SIZE);
	else if (h.op == VIRTIO_VSOCK_OP_REQUEST)
		handle_request(&h);
	else if (h.op == VIRTIO_VSOCK_OP_RST)
		vs.stats.rst_rx++; /* never answer an RST */
	else
		send_rst(h.src_cid, h.dst_port, h.src_port);
}

/* ---- the rings ----------------------------------------------------------------------- */

static void post_rx(struct rx_buf *b)
{
	struct virtq_buf vb = { (uint64_t)(uintptr_t)b->bytes, RX_BUF_SIZE, true };

	GUEST_ASSERT(virtq_add(&vs.vq[VQ_RX], &vb, 1, b) >= 0); /* one descriptor per buffer */
}

static void post_event(struct virtio_vsock_event *e)
{
	struct virtq_buf vb = { (uint64_t)(uintptr_t)e, sizeof(*e), true };

	GUEST_ASSERT(virtq_add(&vs.vq[VQ_EVENT], &vb, 1, e) >= 0);
}

static void transport_reset(void)
{
	vs.stats.transport_resets++;
	vs.cid = virtio_config_read64(&vs.dev, 0);
	if (vs.debug)
		guest_print("vsock: TRANSPORT_RESET: cid %lu; every connection reset\n", vs.cid);
	/* the peer forgot every connection: nothing to tell it (no RST) */
	vs.nr_rst = 0;
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		if (vs.conns[i].state != VSOCK_FREE && vs.conns[i].state != VSOCK_DEAD)
			conn_kill(&vs.conns[i], -ECONNRESET, false);
}

static bool process_events(void)
{
	struct virtq *q = &vs.vq[VQ_EVENT];
	struct virtio_vsock_event *e;
	uint32_t len;
	bool any = false;

	while ((e = virtq_get(q, &len))) {
		if (len >= sizeof(*e) && e->id == VIRTIO_VSOCK_EVENT_TRANSPORT_RESET)
			transport_reset();
		else if (vs.debug)
			guest_print("vsock: event id %u len %u ignored\n", e->id, len);
		post_event(e);
		any = true;
	}
	if (any)
		virtq_kick(q);
	return any;
}

static bool process_rx(void)
{
	struct virtq *q = &vs.vq[VQ_RX];
	struct rx_buf *b;
	uint32_t len;
	bool any = false;

	while ((b = virtq_get(q, &len))) {
		handle_rx(b, len);
		post_rx(b);
		vs.rx_unkicked++;
		any = true;
	}
	/* A device only waits for a notify once all buffers are used, and then all of
	 * them come back through here: kicking every half-ring is enough. */
	if (vs.rx_unkicked >= VSOCK_RX_BUFS / 2) {
		vs.rx_unkicked = 0;
		virtq_kick(q);
	} else if (any) {
		virtq_publish(q);
	}
	return any;
}

bool vsock_poll(void)
{
	bool any;

	if (!vs.up)
		return false;
	any = process_events();
	any |= process_rx();
	any |= reclaim_tx();
	any |= flush_rst_backlog();
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct conn *c = &vs.conns[i];

		if (c->pending)
			any |= flush_pending(c);
	}
	if (vs.closing) {
		uint64_t now = time_us();

		for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
			struct conn *c = &vs.conns[i];

			if (c->state == VSOCK_CLOSING && now >= c->deadline) {
				conn_kill(c, 0, true); /* the peer never answered our SHUTDOWN */
				any = true;
			}
		}
	}
	tx_flush();
	return any;
}

static bool rings_busy(void)
{
	return virtq_has_used(&vs.vq[VQ_RX]) || virtq_has_used(&vs.vq[VQ_EVENT]) ||
	       (vs.tx_waiting && virtq_has_used(&vs.vq[VQ_TX]));
}

/* Used TX buffers only matter to a writer waiting for TX space: otherwise ask the
 * device not to signal them (each signal may wake a parked vCPU: an exit). */
static void tx_signal(bool want)
{
	struct virtq *q = &vs.vq[VQ_TX];
	uint16_t flags = want ? 0 : VRING_AVAIL_F_NO_INTERRUPT;

	if (q->ring->avail.flags == flags)
		return;
	__atomic_store_n(&q->ring->avail.flags, flags, __ATOMIC_RELAXED);
	/* the flag before our re-check of used->idx (vsock_wait) */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

bool vsock_wait(uint64_t deadline)
{
	uint64_t spin_end, left;

	if (!vs.up)
		return false;
	tx_signal(vs.tx_waiting);
	if (vsock_poll())
		return true;
	/* the device thread often answers within microseconds: a park costs ~65 us */
	spin_end = deadline_after(vs.spin_us);
	if (spin_end > deadline)
		spin_end = deadline;
	while (time_us() < spin_end) {
		if (rings_busy()) {
			vsock_poll();
			return true;
		}
		cpu_relax();
	}
	left = deadline_left(deadline);
	if (!left)
		return false;
	vs.stats.parks++;
	guest_park(left == GUEST_FOREVER ? 0 : left);
	return vsock_poll();
}

bool vsock_await_reset(uint64_t seen, uint64_t timeout_us)
{
	uint64_t deadline = deadline_after(timeout_us);

	if (!vs.up)
		return false;
	vsock_poll();
	if (vs.stats.transport_resets > seen)
		return true;
	/* a raw notify: virtq_kick would see nothing new and stay quiet */
	virtio_write(&vs.dev, VIRTIO_MMIO_QUEUE_NOTIFY, VQ_EVENT);
	while (vs.stats.transport_resets <= seen && deadline_left(deadline))
		vsock_wait(deadline);
	return vs.stats.transport_resets > seen;
}

/* ---- init ---------------------------------------------------------------------------- */

int vsock_init(void)
{
	int r;

	memset(&vs, 0, sizeof(vs));
	memset(tx_slots, 0, sizeof(tx_slots));
	vs.debug = cmdline_has_flag("vsock_debug");
	vs.spin_us = cmdline_u64_or("vsock_spin_us", DEFAULT_SPIN_US);
	vs.next_port = EPHEMERAL_FIRST;
	vs.hdrs_free = TX_HDRS;
	vs.bufs_free = (1u << VSOCK_TX_BUFS) - 1;
	tsc_khz(); /* find the TSC rate now, before a golden snapshot, not in every clone */

	r = virtio_find(VIRTIO_ID_VSOCK, &vs.dev);
	if (r)
		return r;
	r = virtio_begin(&vs.dev, 0); /* stream only: no SEQPACKET */
	if (r)
		return r;
	r = virtq_setup(&vs.vq[VQ_RX], &vs.dev, VQ_RX, &ring_mem[VQ_RX], VSOCK_RX_BUFS);
	if (!r)
		r = virtq_setup(&vs.vq[VQ_TX], &vs.dev, VQ_TX, &ring_mem[VQ_TX], 0);
	if (!r)
		r = virtq_setup(&vs.vq[VQ_EVENT], &vs.dev, VQ_EVENT, &ring_mem[VQ_EVENT],
				EVENT_BUFS);
	if (r)
		return r;
	if (vs.vq[VQ_RX].size < VSOCK_RX_BUFS || vs.vq[VQ_EVENT].size < 1 ||
	    vs.vq[VQ_TX].size < 2 * CTRL_RESERVE) {
		guest_print("vsock: queues too small (rx %u, tx %u, event %u)\n",
			    vs.vq[VQ_RX].size, vs.vq[VQ_TX].size, vs.vq[VQ_EVENT].size);
		return -ENOSPC;
	}
	virtio_driver_ok(&vs.dev);
	vs.cid = virtio_config_read64(&vs.dev, 0);
	for (unsigned i = 0; i < VSOCK_RX_BUFS; i++)
		post_rx(&rx_bufs[i]);
	for (unsigned i = 0; i < vs.vq[VQ_EVENT].size && i < EVENT_BUFS; i++)
		post_event(&events[i]);
	vs.up = true;
	tx_signal(false);
	virtq_kick(&vs.vq[VQ_RX]);
	virtq_kick(&vs.vq[VQ_EVENT]);
	if (vs.debug)
		guest_print("vsock: up at 0x%lx irq %u: cid %lu, queues rx %u tx %u event %u, "
			    "tsc %lu kHz (%s)\n", vs.dev.base, vs.dev.irq, vs.cid,
			    vs.vq[VQ_RX].size, vs.vq[VQ_TX].size, vs.vq[VQ_EVENT].size, tsc_khz(),
			    tsc_khz_source());
	return 0;
}

uint64_t vsock_local_cid(void)
{
	return vs.cid;
}

struct virtio_dev *vsock_device(void)
{
	return vs.dev.base ? &vs.dev : NULL;
}

struct virtq *vsock_queue(unsigned index)
{
	return index < 3 && vs.up ? &vs.vq[index] : NULL;
}

const struct vsock_stats *vsock_get_stats(void)
{
	vs.stats.kicks = vs.vq[VQ_RX].kicks + vs.vq[VQ_TX].kicks + vs.vq[VQ_EVENT].kicks;
	return &vs.stats;
}

int vsock_send_raw(const struct virtio_vsock_hdr *h, const void *payload, uint32_t payload_len)
{
	int r;

	if (!vs.up)
		return -ENODEV;
	r = tx_packet(h, payload, payload_len);
	tx_flush();
	return r;
}

/* ---- the socket API ------------------------------------------------------------------ */

static struct conn *conn_get(int c)
{
	if (!vs.up || c < 0 || c >= VSOCK_MAX_CONNS || vs.conns[c].state == VSOCK_FREE ||
	    vs.conns[c].state == VSOCK_CLOSING || vs.conns[c].state == VSOCK_PENDING)
		return NULL;
	return &vs.conns[c];
}

int vsock_listen(uint32_t port)
{
	if (!vs.up)
		return -ENODEV;
	if (port == VSOCK_PORT_ANY)
		return -EINVAL;
	if (is_listening(port))
		return -EADDRINUSE;
	if (vs.nr_listeners == VSOCK_MAX_LISTEN)
		return -ENOSPC;
	vs.listeners[vs.nr_listeners++] = port;
	return 0;
}

static int try_accept(uint32_t port)
{
	struct conn *best = NULL;

	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct conn *c = &vs.conns[i];

		if (c->state == VSOCK_PENDING &&
		    (port == VSOCK_PORT_ANY || c->local_port == port) &&
		    !(c->pending & PEND_RESPONSE) && (!best || c->seq < best->seq))
			best = c;
	}
	if (!best)
		return -EAGAIN;
	set_state(best, VSOCK_CONNECTED);
	return conn_id(best);
}

int vsock_accept(uint32_t port, uint64_t timeout_us)
{
	uint64_t deadline = deadline_after(timeout_us);
	int r;

	if (!vs.up)
		return -ENODEV;
	for (;;) {
		r = try_accept(port);
		if (r != -EAGAIN)
			return r;
		if (!timeout_us) {
			vsock_poll();
			return try_accept(port);
		}
		if (!deadline_left(deadline))
			return -ETIMEDOUT;
		vsock_wait(deadline);
	}
}

int vsock_connect(uint64_t cid, uint32_t port, uint64_t timeout_us)
{
	uint64_t deadline = deadline_after(timeout_us);
	struct conn *c;
	int r;

	if (!vs.up)
		return -ENODEV;
	if (!timeout_us)
		return -EINVAL; /* a connection needs a round trip */
	/* a TRANSPORT_RESET already in the event ring (a restore) is older than this
	 * connection: it must not kill it */
	vsock_poll();
	c = conn_alloc();
	if (!c)
		return -ENOSPC;
	for (unsigned tries = 0; port_in_use(vs.next_port) && tries < 65536; tries++)
		vs.next_port = vs.next_port == 0xffffffffu - 1 ? EPHEMERAL_FIRST : vs.next_port + 1;
	c->local_port = vs.next_port++;
	c->peer_cid = cid;
	c->peer_port = port;
	set_state(c, VSOCK_CONNECTING);
	send_ctrl(c, PEND_REQUEST);
	tx_flush();
	for (;;) {
		if (c->state == VSOCK_CONNECTED)
			return conn_id(c);
		if (c->state == VSOCK_DEAD) {
			r = c->err;
			conn_free(c);
			return r;
		}
		if (!deadline_left(deadline)) {
			send_rst(c->peer_cid, c->local_port, c->peer_port);
			tx_flush();
			conn_free(c);
			return -ETIMEDOUT;
		}
		vsock_wait(deadline);
	}
}

/* One attempt; -EAGAIN when the caller should wait. */
static long try_read(struct conn *c, void *buf, size_t len)
{
	if (c->rx_len) {
		uint32_t n = rx_dequeue(c, buf, len > UINT32_MAX ? UINT32_MAX : (uint32_t)len);

		maybe_credit_update(c);
		tx_flush();
		return n;
	}
	if (c->state == VSOCK_DEAD)
		return c->err ? c->err : 0;
	if (c->state == VSOCK_CONNECTING)
		return -ENOTCONN;
	if ((c->peer_shut & VSOCK_SHUT_WR) || (c->our_shut & VSOCK_SHUT_RD))
		return 0;
	return -EAGAIN;
}

long vsock_read(int cd, void *buf, size_t len, uint64_t timeout_us)
{
	struct conn *c = conn_get(cd);
	uint64_t deadline = deadline_after(timeout_us);
	long r;

	if (!c)
		return -EBADF;
	if (!len)
		return 0;
	for (;;) {
		r = try_read(c, buf, len);
		if (r != -EAGAIN)
			return r;
		if (!timeout_us) {
			vsock_poll();
			return try_read(c, buf, len);
		}
		if (!deadline_left(deadline))
			return -ETIMEDOUT;
		vsock_wait(deadline);
	}
}

size_t vsock_readable(int cd)
{
	struct conn *c = conn_get(cd);

	return c ? c->rx_len : 0;
}

/* Queues what credit and TX space allow; returns bytes queued or an error. */
static long try_write(struct conn *c, const uint8_t *buf, size_t len)
{
	size_t sent = 0;

	if (c->state == VSOCK_DEAD)
		return c->err ? c->err : -EPIPE;
	if (c->state != VSOCK_CONNECTED)
		return -ENOTCONN;
	if ((c->our_shut & VSOCK_SHUT_WR) || (c->peer_shut & VSOCK_SHUT_RD))
		return -EPIPE;
	if (c->pending)
		flush_pending(c); /* a RESPONSE or REQUEST must go before any data */
	while (sent < len && !(c->pending & (PEND_RESPONSE | PEND_REQUEST))) {
		uint32_t credit = peer_credit(c), n = VSOCK_TX_PAYLOAD;

		if (!credit)
			break;
		if (n > credit)
			n = credit;
		if (n > len - sent)
			n = (uint32_t)(len - sent);
		if (conn_send(c, VIRTIO_VSOCK_OP_RW, 0, buf + sent, n)) {
			vs.tx_waiting = true; /* out of TX space: want used-buffer signals */
			break;
		}
		c->tx_cnt += n;
		sent += n;
	}
	tx_flush();
	return (long)sent;
}

/* Zero credit for a while: maybe the peer's CREDIT_UPDATE got lost; ask. */
static void credit_stall(struct conn *c)
{
	uint64_t now = time_us();

	if (peer_credit(c)) {
		c->stall_since = 0;
		return;
	}
	if (!c->stall_since) {
		c->stall_since = now;
		return;
	}
	if (now - c->stall_since >= CREDIT_REQ_AFTER_US &&
	    (!c->credit_req_at || now - c->credit_req_at >= CREDIT_REQ_EVERY_US)) {
		c->credit_req_at = now;
		send_ctrl(c, PEND_CREDIT_REQUEST);
		tx_flush();
	}
}

static long write_loop(struct conn *c, const uint8_t *buf, size_t len, uint64_t timeout_us)
{
	uint64_t deadline = deadline_after(timeout_us);
	size_t sent = 0;

	for (;;) {
		long r = try_write(c, buf + sent, len - sent);

		if (r < 0)
			return sent ? (long)sent : r;
		sent += (size_t)r;
		if (sent == len)
			return (long)len;
		credit_stall(c);
		if (!timeout_us) {
			if (!vsock_poll())
				return sent ? (long)sent : -EAGAIN;
			continue;
		}
		if (!deadline_left(deadline))
			return sent ? (long)sent : -ETIMEDOUT;
		vsock_wait(deadline);
	}
}

long vsock_write(int cd, const void *buf, size_t len, uint64_t timeout_us)
{
	struct conn *c = conn_get(cd);
	long r;

	if (!c)
		return -EBADF;
	r = write_loop(c, buf, len, timeout_us);
	vs.tx_waiting = false; /* nobody waits for TX space any more */
	return r;
}

int vsock_shutdown(int cd, unsigned how)
{
	struct conn *c = conn_get(cd);

	if (!c)
		return -EBADF;
	how &= VSOCK_SHUT_RD | VSOCK_SHUT_WR;
	if (c->state != VSOCK_CONNECTED)
		return c->state == VSOCK_DEAD ? c->err : -ENOTCONN;
	if (!(how & ~c->our_shut))
		return 0;
	c->our_shut |= how;
	c->shut_to_send = c->our_shut;
	send_ctrl(c, PEND_SHUTDOWN);
	tx_flush();
	return 0;
}

void vsock_close(int cd)
{
	struct conn *c = conn_get(cd);

	if (!c)
		return;
	switch (c->state) {
	case VSOCK_CONNECTING:
		send_rst(c->peer_cid, c->local_port, c->peer_port);
		conn_free(c);
		break;
	case VSOCK_CONNECTED:
		if (c->peer_shut == (VSOCK_SHUT_RD | VSOCK_SHUT_WR)) {
			/* the peer is done too: RST ends it (Linux) */
			send_rst(c->peer_cid, c->local_port, c->peer_port);
			conn_free(c);
			break;
		}
		c->our_shut = VSOCK_SHUT_RD | VSOCK_SHUT_WR;
		c->shut_to_send = c->our_shut;
		c->rx_len = 0;
		c->deadline = deadline_after(CLOSE_TIMEOUT_US);
		set_state(c, VSOCK_CLOSING);
		send_ctrl(c, PEND_SHUTDOWN);
		break;
	default: /* DEAD */
		conn_free(c);
	}
	tx_flush();
}

int vsock_conn_info(int cd, struct vsock_conn_info *info)
{
	const struct conn *c;

	if (cd < 0 || cd >= VSOCK_MAX_CONNS)
		return -EBADF;
	c = &vs.conns[cd];
	*info = (struct vsock_conn_info){
		.state = c->state,
		.peer_cid = c->peer_cid,
		.local_port = c->local_port,
		.peer_port = c->peer_port,
		.peer_buf_alloc = c->peer_buf_alloc,
		.peer_fwd_cnt = c->peer_fwd_cnt,
		.tx_cnt = c->tx_cnt,
		.fwd_cnt = c->fwd_cnt,
		.rx_len = c->rx_len,
		.peer_shut = c->peer_shut,
		.our_shut = c->our_shut,
		.err = c->err,
	};
	return 0;
}
