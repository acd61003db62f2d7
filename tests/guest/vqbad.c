/*
 * vqbad: one malformed use of a virtio device per boot (`case=<name>`, `case=list`
 * prints them). After the bad request it waits up to SETTLE_US for the device to
 * react, prints "vqbad: <case> status=0x<hex>" (0x40 = NEEDS_RESET; a device may
 * instead ignore the request), checks what must never happen (a device writing into
 * a read-only buffer, FEATURES_OK or a config write that sticks), then proves ember
 * still serves well-formed requests: a reset and a 16-byte virtio-rng read, and for
 * vsock cases a fresh vsock init plus a connect to host port `probe_port=` (default
 * 1) that must end in a refusal or a connection, not a timeout. Then it prints
 * "vqbad: <case> healthy" and returns (GUEST_DONE).
 *
 * vsock cases need ember's --vsock-cid and --vsock-uds; credit-violation needs
 * something listening on the host at <uds>_<port> (`port=`, default 5555).
 */
#include "guest.h"

#define SETTLE_US        100000ull
#define PROBE_TIMEOUT_US 3000000ull
#define DEFAULT_PROBE    1
#define DEFAULT_PORT     5555
#define OUTSIDE_RAM      0x4000000000ull /* 256 GiB: no test VM has RAM there */
#define HOLE_ADDR        0xc0000000ull   /* the 32-bit hole, below the MMIO windows */
#define PATTERN          0x5a
#define BUF_LEN          64

enum dev_kind { DEV_RNG, DEV_VSOCK };

struct bad_case {
	const char *name;
	enum dev_kind dev;
	void (*run)(void);
	const char *what;
};

static const char *case_name;
static struct virtio_dev dev;           /* the device under attack */
static struct virtq vq[3];
static struct virtq_ring rings[3];
static uint8_t buf_a[4096] __attribute__((aligned(4096)));
static uint8_t buf_b[4096] __attribute__((aligned(4096)));
static struct vring_desc indirect_table[4] __attribute__((aligned(16)));
static struct virtio_vsock_hdr tx_hdr;

/* ---- helpers ------------------------------------------------------------------------ */

static void need(int r, const char *what)
{
	GUEST_ASSERT_MSG(r == 0, "vqbad: %s: %s failed: %d", case_name, what, r);
}

static void open_dev(uint32_t id)
{
	int r = virtio_find(id, &dev);

	GUEST_ASSERT_MSG(r == 0, "vqbad: %s: no %s device (%d)%s", case_name,
			 id == VIRTIO_ID_RNG ? "virtio-rng" : "virtio-vsock", r,
			 id == VIRTIO_ID_VSOCK ? ": boot ember with --vsock-cid N --vsock-uds PATH"
					       : "");
}

/* The device, started properly, with every queue in `nq` set up by the library. */
static void start_dev(uint32_t id, unsigned nq)
{
	open_dev(id);
	need(virtio_begin(&dev, 0), "feature negotiation");
	for (unsigned i = 0; i < nq; i++)
		need(virtq_setup(&vq[i], &dev, (uint16_t)i, &rings[i], 0), "queue setup");
	virtio_driver_ok(&dev);
}

static uint16_t used_idx(const struct virtq *q)
{
	return __atomic_load_n(&q->ring->used.idx, __ATOMIC_ACQUIRE);
}

/* Gives the device time to use the chain or give up; reports a used entry. */
static void settle(const struct virtq *q, uint16_t before)
{
	uint64_t deadline = deadline_after(SETTLE_US);

	while (deadline_left(deadline) && (!q || used_idx(q) == before))
		guest_park(deadline_left(deadline));
	if (q && used_idx(q) != before) {
		const struct vring_used_elem *e = &q->ring->used.ring[before & (q->size - 1)];

		guest_print("vqbad: %s used: idx %u -> %u, first id %u len %u\n", case_name,
			    before, used_idx(q), e->id, e->len);
	}
}

/* Writes descriptor i by hand. */
static void desc(struct virtq *q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
		 uint16_t next)
{
	q->ring->desc[i] = (struct vring_desc){ addr, len, flags, next };
}

/* Publishes head (bumping avail->idx by bump) and notifies, whatever the flags say. */
static void submit(struct virtq *q, uint16_t head, uint16_t bump)
{
	uint16_t before = used_idx(q);

	virtq_push_raw(q, head, bump);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	virtio_write(q->dev, VIRTIO_MMIO_QUEUE_NOTIFY, q->index);
	settle(q, before);
}

static bool all_bytes(const uint8_t *p, size_t n, uint8_t v)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != v)
			return false;
	return true;
}

static uint64_t addr_of(const void *p)
{
	return (uint64_t)(uintptr_t)p;
}

/* ---- rng: malformed chains ----------------------------------------------------------- */

static void rng_chain(uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	start_dev(VIRTIO_ID_RNG, 1);
	desc(&vq[0], 0, addr, len, flags, next);
	submit(&vq[0], 0, 1);
}

static void case_desc_loop(void)
{
	start_dev(VIRTIO_ID_RNG, 1);
	desc(&vq[0], 0, addr_of(buf_a), 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
	desc(&vq[0], 1, addr_of(buf_b), 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 0);
	submit(&vq[0], 0, 1);
}

static void case_self_loop(void)
{
	rng_chain(addr_of(buf_a), 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 0);
}

static void case_head_oob(void)
{
	start_dev(VIRTIO_ID_RNG, 1);
	desc(&vq[0], 0, addr_of(buf_a), 16, VRING_DESC_F_WRITE, 0);
	submit(&vq[0], (uint16_t)(vq[0].size + 7), 1);
}

static void case_next_oob(void)
{
	start_dev(VIRTIO_ID_RNG, 1);
	desc(&vq[0], 0, addr_of(buf_a), 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
	     (uint16_t)(vq[0].size + 3));
	submit(&vq[0], 0, 1);
}

static void case_addr_outside_ram(void)
{
	rng_chain(OUTSIDE_RAM, 16, VRING_DESC_F_WRITE, 0);
}

static void case_addr_hole(void)
{
	rng_chain(HOLE_ADDR, 16, VRING_DESC_F_WRITE, 0);
}

static void case_addr_overflow(void)
{
	rng_chain(0xfffffffffffff000ull, 0x2000, VRING_DESC_F_WRITE, 0);
}

static void case_huge_len(void)
{
	rng_chain(addr_of(buf_a), 0xffffffffu, VRING_DESC_F_WRITE, 0);
}

static void case_avail_jump(void)
{
	start_dev(VIRTIO_ID_RNG, 1);
	desc(&vq[0], 0, addr_of(buf_a), 16, VRING_DESC_F_WRITE, 0);
	submit(&vq[0], 0, (uint16_t)(vq[0].size + 10));
}

static void case_rng_readonly(void)
{
	memset(buf_a, PATTERN, BUF_LEN);
	rng_chain(addr_of(buf_a), BUF_LEN, 0, 0);
	GUEST_ASSERT_MSG(all_bytes(buf_a, BUF_LEN, PATTERN),
			 "vqbad: %s: the device wrote into a device-readable buffer", case_name);
}

static void case_indirect(void)
{
	memset(buf_a, PATTERN, BUF_LEN);
	indirect_table[0] = (struct vring_desc){ addr_of(buf_a), BUF_LEN, VRING_DESC_F_WRITE, 0 };
	rng_chain(addr_of(indirect_table), sizeof(indirect_table[0]), VRING_DESC_F_INDIRECT, 0);
	guest_print("vqbad: %s buffer %s\n", case_name,
		    all_bytes(buf_a, BUF_LEN, PATTERN) ? "untouched" : "written");
}

/* ---- rng: queue and feature setup --------------------------------------------------- */

static void write_addr(uint32_t lo_reg, const void *p)
{
	virtio_write(&dev, lo_reg, (uint32_t)addr_of(p));
	virtio_write(&dev, lo_reg + 4, (uint32_t)(addr_of(p) >> 32));
}

/* Queue 0 configured by hand with `num` entries; prints whether QueueReady stuck. */
static void raw_queue(uint32_t num)
{
	uint32_t max, ready;

	open_dev(VIRTIO_ID_RNG);
	need(virtio_begin(&dev, 0), "feature negotiation");
	virtio_write(&dev, VIRTIO_MMIO_QUEUE_SEL, 0);
	max = virtio_read(&dev, VIRTIO_MMIO_QUEUE_NUM_MAX);
	if (num == UINT32_MAX) /* over the maximum, but a power of two: only that is wrong */
		for (num = 1; num <= max; num <<= 1)
			;
	memset(&rings[0], 0, sizeof(rings[0]));
	virtio_write(&dev, VIRTIO_MMIO_QUEUE_NUM, num);
	write_addr(VIRTIO_MMIO_QUEUE_DESC_LOW, rings[0].desc);
	write_addr(VIRTIO_MMIO_QUEUE_AVAIL_LOW, &rings[0].avail);
	write_addr(VIRTIO_MMIO_QUEUE_USED_LOW, &rings[0].used);
	virtio_write(&dev, VIRTIO_MMIO_QUEUE_READY, 1);
	ready = virtio_read(&dev, VIRTIO_MMIO_QUEUE_READY);
	guest_print("vqbad: %s queue_num=%u max=%u ready=%u\n", case_name, num, max, ready);
	virtio_driver_ok(&dev);
	/* one well-formed request on the ill-sized ring */
	rings[0].desc[0] = (struct vring_desc){ addr_of(buf_a), 16, VRING_DESC_F_WRITE, 0 };
	rings[0].avail.ring[0] = 0;
	__atomic_store_n(&rings[0].avail.idx, 1, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	virtio_write(&dev, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	settle(NULL, 0);
	guest_print("vqbad: %s used->idx=%u\n", case_name,
		    __atomic_load_n(&rings[0].used.idx, __ATOMIC_ACQUIRE));
}

static void case_qsize_0(void)
{
	raw_queue(0);
}

static void case_qsize_npot(void)
{
	raw_queue(3);
}

static void case_qsize_over_max(void)
{
	raw_queue(UINT32_MAX);
}

static void case_notify_before_ok(void)
{
	struct virtq_buf b = { addr_of(buf_a), 16, true };
	uint16_t before;

	open_dev(VIRTIO_ID_RNG);
	need(virtio_begin(&dev, 0), "feature negotiation");
	need(virtq_setup(&vq[0], &dev, 0, &rings[0], 0), "queue setup");
	before = used_idx(&vq[0]);
	GUEST_ASSERT(virtq_add(&vq[0], &b, 1, buf_a) >= 0);
	virtq_publish(&vq[0]);
	virtio_write(&dev, VIRTIO_MMIO_QUEUE_NOTIFY, 0); /* FEATURES_OK, not DRIVER_OK */
	settle(&vq[0], before);
	guest_print("vqbad: %s %s before DRIVER_OK\n", case_name,
		    used_idx(&vq[0]) == before ? "nothing used" : "the device used a buffer");
}

static void case_features_unoffered(void)
{
	const uint32_t base = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
	uint64_t offered;
	uint32_t status;

	open_dev(VIRTIO_ID_RNG);
	need(virtio_reset(&dev), "reset");
	virtio_set_status(&dev, VIRTIO_CONFIG_S_ACKNOWLEDGE);
	virtio_set_status(&dev, base);
	offered = virtio_device_features(&dev);
	GUEST_ASSERT_MSG(~offered, "vqbad: %s: the device offers every feature bit", case_name);
	virtio_write_features(&dev, offered | ~offered);
	virtio_set_status(&dev, base | VIRTIO_CONFIG_S_FEATURES_OK);
	status = virtio_status(&dev);
	guest_print("vqbad: %s offered=0x%lx\n", case_name, offered);
	GUEST_ASSERT_MSG(!(status & VIRTIO_CONFIG_S_FEATURES_OK),
			 "vqbad: %s: FEATURES_OK stuck with features 0x%lx never offered "
			 "(status 0x%x)", case_name, ~offered, status);
}

/* ---- vsock -------------------------------------------------------------------------- */

static void need_vsock(void)
{
	int r = vsock_init();

	GUEST_ASSERT_MSG(r != -ENODEV, "vqbad: %s needs virtio-vsock: boot ember with "
			 "--vsock-cid N --vsock-uds PATH", case_name);
	need(r, "vsock_init");
	dev = *vsock_device();
}

static void host_hdr(struct virtio_vsock_hdr *h, uint16_t op, uint32_t dst_port)
{
	memset(h, 0, sizeof(*h));
	h->src_cid = vsock_local_cid();
	h->dst_cid = EMBER_VSOCK_HOST_CID;
	h->src_port = 50000;
	h->dst_port = dst_port;
	h->type = VIRTIO_VSOCK_TYPE_STREAM;
	h->op = op;
	h->buf_alloc = 4096;
}

static void send_and_settle(const struct virtio_vsock_hdr *h, const void *p, uint32_t len)
{
	struct virtq *rx = vsock_queue(0);
	uint16_t before = used_idx(rx);

	need(vsock_send_raw(h, p, len), "sending the packet");
	settle(rx, before);
	vsock_poll();
}

static void case_vsock_rx_readonly(void)
{
	struct virtq_buf rb;
	uint64_t cid;

	start_dev(VIRTIO_ID_VSOCK, 3);
	cid = virtio_config_read64(&dev, 0);
	memset(buf_a, PATTERN, sizeof(buf_a));
	for (unsigned i = 0; i < 4; i++) {
		rb = (struct virtq_buf){ addr_of(buf_a + i * 1024), 1024, false };
		GUEST_ASSERT(virtq_add(&vq[0], &rb, 1, buf_a + i * 1024) >= 0);
	}
	virtq_kick(&vq[0]);
	/* a REQUEST to a host port: the host's answer (RST or RESPONSE) needs an RX buffer */
	tx_hdr = (struct virtio_vsock_hdr){
		.src_cid = cid, .dst_cid = EMBER_VSOCK_HOST_CID, .src_port = 50001,
		.dst_port = (uint32_t)cmdline_u64_or("probe_port", DEFAULT_PROBE),
		.type = VIRTIO_VSOCK_TYPE_STREAM, .op = VIRTIO_VSOCK_OP_REQUEST,
		.buf_alloc = 4096,
	};
	rb = (struct virtq_buf){ addr_of(&tx_hdr), sizeof(tx_hdr), false };
	GUEST_ASSERT(virtq_add(&vq[1], &rb, 1, &tx_hdr) >= 0);
	virtq_kick(&vq[1]);
	settle(&vq[0], 0);
	GUEST_ASSERT_MSG(all_bytes(buf_a, sizeof(buf_a), PATTERN),
			 "vqbad: %s: the device wrote into device-readable RX buffers", case_name);
}

static void case_config_write(void)
{
	uint64_t cid, after;

	need_vsock();
	cid = vsock_local_cid();
	virtio_config_write32(&dev, 0, (uint32_t)cid + 1000);
	virtio_config_write32(&dev, 4, 0x5a5a5a5a);
	after = virtio_config_read64(&dev, 0);
	guest_print("vqbad: %s cid %lu, after the write %lu\n", case_name, cid, after);
	GUEST_ASSERT_MSG(after == cid, "vqbad: %s: guest_cid changed from %lu to %lu", case_name,
			 cid, after);
}

static void case_vsock_tx_len(void)
{
	uint8_t payload[100];

	need_vsock();
	memset(payload, PATTERN, sizeof(payload));
	host_hdr(&tx_hdr, VIRTIO_VSOCK_OP_RW, (uint32_t)cmdline_u64_or("probe_port",
									  DEFAULT_PROBE));
	tx_hdr.len = 60000; /* the payload descriptor holds 100 bytes */
	send_and_settle(&tx_hdr, payload, sizeof(payload));
}

static void case_vsock_wrong_cid(void)
{
	need_vsock();
	host_hdr(&tx_hdr, VIRTIO_VSOCK_OP_REQUEST, (uint32_t)cmdline_u64_or("probe_port",
									       DEFAULT_PROBE));
	tx_hdr.dst_cid = 12345; /* neither the host nor us */
	send_and_settle(&tx_hdr, NULL, 0);
}

static void case_vsock_spoof_cid(void)
{
	need_vsock();
	host_hdr(&tx_hdr, VIRTIO_VSOCK_OP_REQUEST, (uint32_t)cmdline_u64_or("probe_port",
									       DEFAULT_PROBE));
	tx_hdr.src_cid = vsock_local_cid() + 77; /* not our CID */
	send_and_settle(&tx_hdr, NULL, 0);
}

static void case_credit_violation(void)
{
	uint32_t port = (uint32_t)cmdline_u64_or("port", DEFAULT_PORT);
	struct vsock_conn_info info;
	uint64_t sent = 0, limit;
	uint64_t deadline;
	int c;

	need_vsock();
	c = vsock_connect(EMBER_VSOCK_HOST_CID, port, PROBE_TIMEOUT_US);
	if (c < 0) {
		guest_print("vqbad: %s connect to host port %u failed (%d): nothing to violate "
			    "(listen on <uds>_%u)\n", case_name, port, c, port);
		return;
	}
	vsock_conn_info(c, &info);
	limit = (uint64_t)info.peer_buf_alloc + VSOCK_TX_PAYLOAD;
	if (limit > (16ull << 20))
		limit = 16ull << 20;
	memset(buf_a, PATTERN, sizeof(buf_a));
	deadline = deadline_after(PROBE_TIMEOUT_US);
	/* RW packets the credit does not cover, never waiting for the peer to read */
	while (sent < limit && deadline_left(deadline)) {
		struct virtio_vsock_hdr h;
		uint64_t left = limit - sent;
		uint32_t n = (uint32_t)(left < sizeof(buf_a) ? left : sizeof(buf_a));

		h = (struct virtio_vsock_hdr){
			.src_cid = vsock_local_cid(), .dst_cid = info.peer_cid,
			.src_port = info.local_port, .dst_port = info.peer_port, .len = n,
			.type = VIRTIO_VSOCK_TYPE_STREAM, .op = VIRTIO_VSOCK_OP_RW,
			.buf_alloc = VSOCK_CONN_BUF, .fwd_cnt = info.fwd_cnt,
		};
		if (vsock_send_raw(&h, buf_a, n) == -ENOSPC) {
			vsock_wait(deadline);
			continue;
		}
		sent += n;
	}
	settle(NULL, 0);
	vsock_poll();
	vsock_conn_info(c, &info);
	guest_print("vqbad: %s sent=%lu peer_buf_alloc=%u peer_fwd_cnt=%u conn=%s\n", case_name,
		    sent, info.peer_buf_alloc, info.peer_fwd_cnt,
		    info.state == VSOCK_DEAD ? "reset" : "open");
	vsock_close(c);
}

/* ---- the table ---------------------------------------------------------------------- */

static const struct bad_case cases[] = {
	{ "desc-loop", DEV_RNG, case_desc_loop, "two descriptors chained into a loop" },
	{ "self-loop", DEV_RNG, case_self_loop, "a descriptor whose next is itself" },
	{ "head-oob", DEV_RNG, case_head_oob, "avail ring head index >= queue size" },
	{ "next-oob", DEV_RNG, case_next_oob, "next index >= queue size" },
	{ "addr-outside-ram", DEV_RNG, case_addr_outside_ram, "buffer at 256 GiB" },
	{ "addr-hole", DEV_RNG, case_addr_hole, "buffer in the 32-bit hole (0xc0000000)" },
	{ "addr-overflow", DEV_RNG, case_addr_overflow, "address + length wraps around" },
	{ "huge-len", DEV_RNG, case_huge_len, "length 0xffffffff from a RAM address" },
	{ "avail-jump", DEV_RNG, case_avail_jump, "avail->idx moves by queue size + 10" },
	{ "qsize-0", DEV_RNG, case_qsize_0, "QueueNum 0, then QueueReady" },
	{ "qsize-npot", DEV_RNG, case_qsize_npot, "QueueNum 3 (not a power of two)" },
	{ "qsize-over-max", DEV_RNG, case_qsize_over_max,
	  "QueueNum = the first power of two above QueueNumMax" },
	{ "notify-before-ok", DEV_RNG, case_notify_before_ok, "QueueNotify before DRIVER_OK" },
	{ "rng-readonly", DEV_RNG, case_rng_readonly, "rng request with a device-readable buffer" },
	{ "features-unoffered", DEV_RNG, case_features_unoffered,
	  "driver features the device never offered" },
	{ "indirect", DEV_RNG, case_indirect, "VRING_DESC_F_INDIRECT without negotiating it" },
	{ "vsock-rx-readonly", DEV_VSOCK, case_vsock_rx_readonly,
	  "vsock RX ring with device-readable buffers only" },
	{ "config-write", DEV_VSOCK, case_config_write, "write guest_cid after DRIVER_OK" },
	{ "vsock-tx-len", DEV_VSOCK, case_vsock_tx_len, "TX header len beyond its buffers" },
	{ "vsock-wrong-cid", DEV_VSOCK, case_vsock_wrong_cid, "TX packet to CID 12345" },
	{ "vsock-spoof-cid", DEV_VSOCK, case_vsock_spoof_cid, "TX packet from a CID not ours" },
	{ "credit-violation", DEV_VSOCK, case_credit_violation,
	  "RW beyond the host's buf_alloc (needs a listener at <uds>_<port>)" },
};

/* ---- health ------------------------------------------------------------------------- */

static void check_rng(void)
{
	uint8_t bytes[16];
	long r;

	memset(bytes, 0, sizeof(bytes));
	r = rng_read(bytes, sizeof(bytes));
	GUEST_ASSERT_MSG(r == (long)sizeof(bytes), "vqbad: %s: virtio-rng read after the case: %ld",
			 case_name, r);
	GUEST_ASSERT_MSG(!all_bytes(bytes, sizeof(bytes), 0),
			 "vqbad: %s: virtio-rng returned 16 zero bytes", case_name);
}

static void check_vsock(void)
{
	uint32_t probe = (uint32_t)cmdline_u64_or("probe_port", DEFAULT_PROBE);
	int r = vsock_init(), c;

	GUEST_ASSERT_MSG(r == 0, "vqbad: %s: fresh vsock_init failed: %d", case_name, r);
	c = vsock_connect(EMBER_VSOCK_HOST_CID, probe, PROBE_TIMEOUT_US);
	GUEST_ASSERT_MSG(c >= 0 || c == -ECONNRESET,
			 "vqbad: %s: connect to host port %u after the case: %d (the device did "
			 "not answer)", case_name, probe, c);
	if (c >= 0)
		vsock_close(c);
}

void guest_main(void)
{
	static char name[40];
	const struct bad_case *bc = NULL;
	int r = cmdline_get_str("case", name, sizeof(name));

	GUEST_ASSERT_MSG(r == 0, "vqbad: give case=<name> (case=list prints them)");
	case_name = name;
	if (!strcmp(name, "list")) {
		for (unsigned i = 0; i < ARRAY_SIZE(cases); i++)
			guest_print("vqbad: case %s: %s\n", cases[i].name, cases[i].what);
		return;
	}
	for (unsigned i = 0; i < ARRAY_SIZE(cases); i++)
		if (!strcmp(name, cases[i].name))
			bc = &cases[i];
	GUEST_ASSERT_MSG(bc, "vqbad: unknown case '%s' (case=list prints them)", name);

	bc->run();
	guest_print("vqbad: %s status=0x%x\n", name, virtio_status(&dev));
	need(virtio_reset(&dev), "reset after the case");
	check_rng();
	if (bc->dev == DEV_VSOCK)
		check_vsock();
	guest_print("vqbad: %s healthy\n", name);
}
