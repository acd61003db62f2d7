/*
 * The fake devices of fake_virtio.h. Guest-physical addresses are host pointers here
 * (the guest's identity mapping becomes "the pointer is the address").
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/internal.h"
#include "fake_virtio.h"

#define HOST_CID      2
#define HOST_PORT0    1024
#define CTRL_QUEUE    64
#define IDLE_PARKS    2000 /* parks in a row with nothing to do: the guest hangs */
#define IDLE_STEP_US  10000

uint64_t fake_now;
unsigned fake_parks;
void (*fake_park_hook)(void);
jmp_buf *fake_assert_jmp;
char fake_assert_msg[256];
struct fake_rng fake_rng;
struct fake_vsock fake_vsock;

struct fq {
	uint32_t num_max, num, ready;
	uint64_t desc, avail, used;
	uint16_t last_avail;
	bool notified, starved;
};

struct fdev {
	uint64_t base;
	uint32_t id, version, status;
	uint32_t dev_sel, drv_sel, queue_sel;
	uint64_t features, drv_features;
	unsigned nq;
	struct fq q[3];
	bool present;
};

static struct fdev devs[2];
static unsigned idle_parks;

/* host -> guest control packets waiting for an RX buffer */
static struct virtio_vsock_hdr ctrl[CTRL_QUEUE];
static unsigned nr_ctrl;

char fake_log[1 << 16];
uint64_t fake_generation;
bool fake_ready;
unsigned fake_reports;
uint64_t fake_report_args[4];
jmp_buf *fake_reset_jmp;
bool fake_cmds_done;
static char cmds[8][EMBER_UCALL_DATA_MAX];
static unsigned nr_cmds;

/* ---- stubs of the guest library's platform side -------------------------------------- */

void guest_print(const char *fmt, ...)
{
	size_t used = strlen(fake_log);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(fake_log + used, sizeof(fake_log) - used, fmt, ap);
	va_end(ap);
	if (getenv("FAKE_VERBOSE"))
		fputs(fake_log + used, stderr);
}

void guest_ready(void)
{
	fake_ready = true;
}

uint64_t guest_generation(void)
{
	return fake_generation;
}

void guest_report(const char *msg, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3)
{
	(void)msg;
	fake_reports++;
	fake_report_args[0] = a0;
	fake_report_args[1] = a1;
	fake_report_args[2] = a2;
	fake_report_args[3] = a3;
}

void guest_reset(void)
{
	cr_assert_not_null(fake_reset_jmp, "the guest reset itself");
	longjmp(*fake_reset_jmp, 1);
}

void fake_cmd(const char *cmd)
{
	cr_assert_lt(nr_cmds, 8);
	strlcpy(cmds[nr_cmds++], cmd, sizeof(cmds[0]));
	idle_parks = 0;
}

int guest_poll_cmd(char *buf, size_t len)
{
	if (!nr_cmds)
		return fake_cmds_done ? -ENODATA : -EAGAIN;
	strlcpy(buf, cmds[0], len);
	memmove(cmds, cmds + 1, --nr_cmds * sizeof(cmds[0]));
	return (int)strlen(buf);
}

void guest_assert_fail(const char *file, unsigned line, uint64_t a0, uint64_t a1,
		       const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(fake_assert_msg, sizeof(fake_assert_msg), fmt, ap);
	va_end(ap);
	if (fake_assert_jmp)
		longjmp(*fake_assert_jmp, 1);
	cr_assert_fail("guest assertion at %s:%u: %s (0x%lx, 0x%lx)", file, line, fake_assert_msg,
		       (unsigned long)a0, (unsigned long)a1);
	abort();
}

/* glibc 2.36 has none; lib/string.c is not linked here (libc's mem* serve) */
size_t strlcpy(char *dst, const char *src, size_t size)
{
	size_t len = strlen(src);

	if (size) {
		size_t n = len < size - 1 ? len : size - 1;

		memcpy(dst, src, n);
		dst[n] = 0;
	}
	return len;
}

uint64_t time_us(void)
{
	return fake_now++; /* spinning loops end */
}

uint64_t tsc_khz(void)
{
	return 1000000;
}

const char *tsc_khz_source(void)
{
	return "fake";
}

/* ---- rings --------------------------------------------------------------------------- */

struct chain {
	uint16_t head;
	unsigned n;
	struct {
		uint8_t *p;
		uint32_t len;
		bool write;
	} d[VIRTQ_MAX_SIZE];
};

static void violation(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(fake_vsock.last_violation, sizeof(fake_vsock.last_violation), fmt, ap);
	va_end(ap);
	fake_vsock.violations++;
	if (getenv("FAKE_VERBOSE"))
		fprintf(stderr, "fake: violation: %s\n", fake_vsock.last_violation);
}

static uint16_t *avail_idx(struct fq *q)
{
	return (uint16_t *)(uintptr_t)(q->avail + 2);
}

static uint16_t *avail_ring(struct fq *q)
{
	return (uint16_t *)(uintptr_t)(q->avail + 4);
}

static uint16_t *used_idx(struct fq *q)
{
	return (uint16_t *)(uintptr_t)(q->used + 2);
}

static struct vring_used_elem *used_ring(struct fq *q)
{
	return (struct vring_used_elem *)(uintptr_t)(q->used + 4);
}

/* The next available chain, checked like a strict device would (our driver must never
 * trip these: they are test failures, not device errors). */
static bool pop(struct fq *q, struct chain *c)
{
	struct vring_desc *desc = (struct vring_desc *)(uintptr_t)q->desc;
	uint16_t idx = __atomic_load_n(avail_idx(q), __ATOMIC_ACQUIRE), i;
	bool writable = false;

	if (!q->ready || idx == q->last_avail)
		return false;
	cr_assert_leq((uint16_t)(idx - q->last_avail), q->num, "avail idx jumped");
	c->head = avail_ring(q)[q->last_avail % q->num];
	q->last_avail++;
	cr_assert_lt(c->head, q->num, "head out of range");
	c->n = 0;
	for (i = c->head;; i = desc[i].next) {
		cr_assert_lt(c->n, q->num, "descriptor chain loops");
		cr_assert_lt(i, q->num, "next out of range");
		cr_assert_eq(desc[i].flags & VRING_DESC_F_INDIRECT, 0);
		if (writable)
			cr_assert(desc[i].flags & VRING_DESC_F_WRITE, "readable after writable");
		writable = desc[i].flags & VRING_DESC_F_WRITE;
		c->d[c->n].p = (uint8_t *)(uintptr_t)desc[i].addr;
		c->d[c->n].len = desc[i].len;
		c->d[c->n].write = writable;
		c->n++;
		if (!(desc[i].flags & VRING_DESC_F_NEXT))
			break;
	}
	return true;
}

static void push(struct fq *q, uint16_t head, uint32_t len)
{
	uint16_t u = *used_idx(q);

	used_ring(q)[u % q->num] = (struct vring_used_elem){ head, len };
	__atomic_store_n(used_idx(q), (uint16_t)(u + 1), __ATOMIC_RELEASE);
	idle_parks = 0;
}

/* ---- registers ----------------------------------------------------------------------- */

static struct fdev *dev_at(uint64_t addr, uint32_t *off)
{
	for (unsigned i = 0; i < 2; i++)
		if (devs[i].present && addr >= devs[i].base && addr < devs[i].base + 0x1000) {
			*off = (uint32_t)(addr - devs[i].base);
			return &devs[i];
		}
	return NULL;
}

uint32_t mmio_read32(uint64_t addr)
{
	uint32_t off;
	struct fdev *d = dev_at(addr, &off);
	struct fq *q;

	if (!d)
		return 0xffffffff;
	q = d->queue_sel < d->nq ? &d->q[d->queue_sel] : NULL;
	switch (off) {
	case VIRTIO_MMIO_MAGIC_VALUE: return 0x74726976;
	case VIRTIO_MMIO_VERSION: return d->version;
	case VIRTIO_MMIO_DEVICE_ID: return d->id;
	case VIRTIO_MMIO_DEVICE_FEATURES:
		return d->dev_sel == 0 ? (uint32_t)d->features :
		       d->dev_sel == 1 ? (uint32_t)(d->features >> 32) : 0;
	case VIRTIO_MMIO_QUEUE_NUM_MAX: return q ? q->num_max : 0;
	case VIRTIO_MMIO_QUEUE_READY: return q ? q->ready : 0;
	case VIRTIO_MMIO_STATUS: return d->status;
	case VIRTIO_MMIO_CONFIG_GENERATION: return 0;
	case VIRTIO_MMIO_CONFIG: return d == &devs[1] ? (uint32_t)fake_vsock.cid : 0;
	case VIRTIO_MMIO_CONFIG + 4: return d == &devs[1] ? (uint32_t)(fake_vsock.cid >> 32) : 0;
	default: return 0;
	}
}

static void set_status(struct fdev *d, uint32_t v)
{
	if (v == 0) {
		d->status = 0;
		memset(d->q, 0, sizeof(d->q));
		for (unsigned i = 0; i < d->nq; i++)
			d->q[i].num_max = 256;
		d->drv_features = 0;
		return;
	}
	if ((v & VIRTIO_CONFIG_S_FEATURES_OK) && !(d->status & VIRTIO_CONFIG_S_FEATURES_OK) &&
	    (d->drv_features & ~d->features))
		v &= ~VIRTIO_CONFIG_S_FEATURES_OK; /* features never offered: refuse */
	d->status = v;
}

static void set64(uint64_t *x, bool hi, uint32_t v)
{
	*x = hi ? (*x & 0xffffffffull) | (uint64_t)v << 32 : (*x & ~0xffffffffull) | v;
}

void mmio_write32(uint64_t addr, uint32_t v)
{
	uint32_t off;
	struct fdev *d = dev_at(addr, &off);
	struct fq *q;

	if (!d)
		return;
	q = d->queue_sel < d->nq ? &d->q[d->queue_sel] : NULL;
	switch (off) {
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL: d->dev_sel = v; break;
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL: d->drv_sel = v; break;
	case VIRTIO_MMIO_DRIVER_FEATURES:
		if (d->drv_sel < 2)
			set64(&d->drv_features, d->drv_sel, v);
		break;
	case VIRTIO_MMIO_QUEUE_SEL: d->queue_sel = v; break;
	case VIRTIO_MMIO_QUEUE_NUM: if (q) q->num = v; break;
	case VIRTIO_MMIO_QUEUE_READY:
		if (q)
			q->ready = v && q->num && q->num <= q->num_max && !(q->num & (q->num - 1));
		break;
	case VIRTIO_MMIO_QUEUE_DESC_LOW: case VIRTIO_MMIO_QUEUE_DESC_HIGH:
		if (q) set64(&q->desc, off == VIRTIO_MMIO_QUEUE_DESC_HIGH, v);
		break;
	case VIRTIO_MMIO_QUEUE_AVAIL_LOW: case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
		if (q) set64(&q->avail, off == VIRTIO_MMIO_QUEUE_AVAIL_HIGH, v);
		break;
	case VIRTIO_MMIO_QUEUE_USED_LOW: case VIRTIO_MMIO_QUEUE_USED_HIGH:
		if (q) set64(&q->used, off == VIRTIO_MMIO_QUEUE_USED_HIGH, v);
		break;
	case VIRTIO_MMIO_QUEUE_NOTIFY:
		if (!(d->status & VIRTIO_CONFIG_S_DRIVER_OK))
			violation("notify before DRIVER_OK");
		if (v < d->nq) {
			d->q[v].notified = true;
			d->q[v].starved = false;
			if (d == &devs[1])
				fake_vsock.notifies[v]++;
		}
		break;
	case VIRTIO_MMIO_STATUS: set_status(d, v); break;
	default: break;
	}
}

/* ---- rng ----------------------------------------------------------------------------- */

static bool rng_step(struct fdev *d)
{
	struct fq *q = &d->q[0];
	struct chain c;
	bool any = false;

	if (!q->notified)
		return false;
	q->notified = false;
	while (pop(q, &c)) {
		uint32_t done = 0, max = fake_rng.max_per_request;

		for (unsigned i = 0; i < c.n; i++) {
			cr_assert(c.d[i].write, "rng buffers are device-writable");
			for (uint32_t k = 0; k < c.d[i].len && (!max || done < max); k++, done++)
				c.d[i].p[k] = ++fake_rng.next ? fake_rng.next : ++fake_rng.next;
		}
		fake_rng.requests++;
		push(q, c.head, done);
		any = true;
	}
	return any;
}

/* ---- vsock --------------------------------------------------------------------------- */

static void hdr_to_guest(struct virtio_vsock_hdr *h, uint32_t host_port, uint32_t guest_port,
			 uint16_t op)
{
	memset(h, 0, sizeof(*h));
	h->src_cid = HOST_CID;
	h->dst_cid = fake_vsock.cid;
	h->src_port = host_port;
	h->dst_port = guest_port;
	h->type = VIRTIO_VSOCK_TYPE_STREAM;
	h->op = op;
	h->buf_alloc = fake_vsock.buf_alloc;
}

static void queue_ctrl(const struct virtio_vsock_hdr *h)
{
	cr_assert_lt(nr_ctrl, CTRL_QUEUE, "fake: control queue full");
	ctrl[nr_ctrl++] = *h;
}

static void conn_ctrl(struct hconn *c, uint16_t op, uint32_t flags)
{
	struct virtio_vsock_hdr h;

	hdr_to_guest(&h, c->host_port, c->guest_port, op);
	h.flags = flags;
	h.fwd_cnt = c->fwd_cnt;
	queue_ctrl(&h);
}

static struct hconn *hconn_find(uint32_t host_port, uint32_t guest_port)
{
	for (unsigned i = 0; i < FAKE_CONNS; i++) {
		struct hconn *c = &fake_vsock.conns[i];

		if (c->live && c->host_port == host_port && c->guest_port == guest_port)
			return c;
	}
	return NULL;
}

int fake_vsock_find(uint32_t host_port, uint32_t guest_port)
{
	struct hconn *c = hconn_find(host_port, guest_port);

	return c ? (int)(c - fake_vsock.conns) : -1;
}

static struct hconn *hconn_new(uint32_t host_port, uint32_t guest_port)
{
	for (unsigned i = 0; i < FAKE_CONNS; i++) {
		struct hconn *c = &fake_vsock.conns[i];

		if (!c->live && !c->in && !c->out) {
			memset(c, 0, sizeof(*c));
			c->live = true;
			c->host_port = host_port;
			c->guest_port = guest_port;
			return c;
		}
	}
	cr_assert_fail("fake: out of host connections");
	return NULL;
}

static void take_credit(struct hconn *c, const struct virtio_vsock_hdr *h)
{
	c->guest_buf_alloc = h->buf_alloc;
	c->guest_fwd_cnt = h->fwd_cnt;
}

static void host_consumed(struct hconn *c, uint32_t n)
{
	c->fwd_cnt += n;
	if (!fake_vsock.credit_on_request)
		conn_ctrl(c, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 0);
}

static void guest_packet(const struct virtio_vsock_hdr *h, const uint8_t *p)
{
	struct hconn *c = hconn_find(h->dst_port, h->src_port);

	fake_vsock.tx_pkts++;
	if (h->src_cid != fake_vsock.cid || h->dst_cid != HOST_CID)
		violation("packet %u:%u -> %u:%u with wrong CIDs", (unsigned)h->src_cid,
			  h->src_port, (unsigned)h->dst_cid, h->dst_port);
	if (h->type != VIRTIO_VSOCK_TYPE_STREAM)
		violation("type %u", h->type);
	if (h->op == VIRTIO_VSOCK_OP_REQUEST) {
		bool listening = false;

		for (unsigned i = 0; i < fake_vsock.nr_listen; i++)
			listening |= fake_vsock.listen[i] == h->dst_port;
		if (c || !listening) {
			struct virtio_vsock_hdr r;

			hdr_to_guest(&r, h->dst_port, h->src_port, VIRTIO_VSOCK_OP_RST);
			queue_ctrl(&r);
			return;
		}
		c = hconn_new(h->dst_port, h->src_port);
		c->established = true;
		take_credit(c, h);
		conn_ctrl(c, VIRTIO_VSOCK_OP_RESPONSE, 0);
		return;
	}
	if (!c) {
		if (h->op != VIRTIO_VSOCK_OP_RST) {
			struct virtio_vsock_hdr r;

			hdr_to_guest(&r, h->dst_port, h->src_port, VIRTIO_VSOCK_OP_RST);
			queue_ctrl(&r);
		}
		return;
	}
	take_credit(c, h);
	switch (h->op) {
	case VIRTIO_VSOCK_OP_RESPONSE:
		if (c->established)
			violation("RESPONSE on an established connection");
		c->established = true;
		break;
	case VIRTIO_VSOCK_OP_RST:
		fake_vsock.rsts++;
		c->rst = true;
		c->live = false;
		break;
	case VIRTIO_VSOCK_OP_SHUTDOWN:
		fake_vsock.shutdowns++;
		c->guest_shut |= h->flags;
		if (c->guest_shut == 3 && !fake_vsock.silent_on_shutdown) {
			conn_ctrl(c, VIRTIO_VSOCK_OP_RST, 0); /* Linux: both ways shut: reset */
			c->live = false;
		}
		break;
	case VIRTIO_VSOCK_OP_RW:
		if (!c->established)
			violation("RW before the connection is established");
		if (c->rx_cnt - c->fwd_cnt + h->len > fake_vsock.buf_alloc)
			violation("credit: %u bytes in flight + %u > buf_alloc %u",
				  c->rx_cnt - c->fwd_cnt, h->len, fake_vsock.buf_alloc);
		if (c->in_len + h->len > c->in_cap) {
			c->in_cap = (c->in_len + h->len) * 2;
			c->in = realloc(c->in, c->in_cap);
		}
		memcpy(c->in + c->in_len, p, h->len);
		c->in_len += h->len;
		c->rx_cnt += h->len;
		if (fake_vsock.auto_consume) {
			uint32_t n = (uint32_t)(c->in_len - c->in_read);

			c->in_read = c->in_len;
			host_consumed(c, n);
		}
		break;
	case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
		fake_vsock.credit_updates++;
		break;
	case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
		fake_vsock.credit_requests++;
		conn_ctrl(c, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 0);
		break;
	default:
		violation("op %u", h->op);
	}
}

static bool vsock_tx(struct fdev *d)
{
	struct fq *q = &d->q[1];
	static uint8_t pkt[VSOCK_HDR_SIZE + (1 << 20)];
	struct chain c;
	bool any = false;

	if (!q->notified)
		return false;
	q->notified = false;
	while (pop(q, &c)) {
		struct virtio_vsock_hdr h;
		size_t n = 0;

		if (c.d[0].len != VSOCK_HDR_SIZE)
			violation("TX header descriptor of %u bytes", c.d[0].len);
		for (unsigned i = 0; i < c.n; i++) {
			cr_assert(!c.d[i].write, "TX buffers are device-readable");
			cr_assert_leq(n + c.d[i].len, sizeof(pkt));
			memcpy(pkt + n, c.d[i].p, c.d[i].len);
			n += c.d[i].len;
		}
		cr_assert_geq(n, VSOCK_HDR_SIZE);
		memcpy(&h, pkt, sizeof(h));
		if (h.len != n - VSOCK_HDR_SIZE)
			violation("TX len %u but %zu payload bytes", h.len, n - VSOCK_HDR_SIZE);
		else
			guest_packet(&h, pkt + VSOCK_HDR_SIZE);
		push(q, c.head, 0);
		any = true;
	}
	return any;
}

/* One RX buffer, or NULL (and starved until the next RX notify). */
static bool rx_buffer(struct fdev *d, struct chain *c)
{
	struct fq *q = &d->q[0];

	if (q->starved)
		return false;
	if (pop(q, c)) {
		cr_assert_eq(c->n, 1, "one descriptor per RX buffer");
		cr_assert(c->d[0].write);
		cr_assert_geq(c->d[0].len, VSOCK_HDR_SIZE + 1);
		return true;
	}
	q->starved = true;
	fake_vsock.rx_starved++;
	return false;
}

static void deliver(struct fdev *d, struct chain *c, const struct virtio_vsock_hdr *h,
		    const uint8_t *p)
{
	memcpy(c->d[0].p, h, VSOCK_HDR_SIZE);
	if (h->len)
		memcpy(c->d[0].p + VSOCK_HDR_SIZE, p, h->len);
	push(&d->q[0], c->head, VSOCK_HDR_SIZE + h->len);
	fake_vsock.rx_pkts++;
}

static bool vsock_rx(struct fdev *d)
{
	struct chain c;
	bool any = false;

	while (nr_ctrl) {
		if (!rx_buffer(d, &c))
			return any;
		deliver(d, &c, &ctrl[0], NULL);
		memmove(ctrl, ctrl + 1, --nr_ctrl * sizeof(ctrl[0]));
		any = true;
	}
	for (unsigned i = 0; i < FAKE_CONNS; i++) {
		struct hconn *hc = &fake_vsock.conns[i];

		while (hc->live && hc->established && hc->out_off < hc->out_len) {
			uint32_t credit = hc->guest_buf_alloc - (hc->tx_cnt - hc->guest_fwd_cnt);
			size_t n = hc->out_len - hc->out_off;
			struct virtio_vsock_hdr h;

			if (fake_vsock.ignore_guest_credit)
				credit = UINT32_MAX;
			if (n > credit)
				n = credit;
			if (n > fake_vsock.max_pkt)
				n = fake_vsock.max_pkt;
			if (!n || !rx_buffer(d, &c))
				break;
			if (n > c.d[0].len - VSOCK_HDR_SIZE)
				n = c.d[0].len - VSOCK_HDR_SIZE;
			hdr_to_guest(&h, hc->host_port, hc->guest_port, VIRTIO_VSOCK_OP_RW);
			h.len = (uint32_t)n;
			h.fwd_cnt = hc->fwd_cnt;
			deliver(d, &c, &h, hc->out + hc->out_off);
			hc->out_off += n;
			hc->tx_cnt += (uint32_t)n;
			any = true;
		}
	}
	return any;
}

static bool vsock_events(struct fdev *d)
{
	struct fq *q = &d->q[2];
	struct chain c;

	if (!fake_vsock.event_pending || !pop(q, &c))
		return false;
	cr_assert(c.d[0].write);
	cr_assert_geq(c.d[0].len, 4);
	memset(c.d[0].p, 0, 4); /* VIRTIO_VSOCK_EVENT_TRANSPORT_RESET */
	push(q, c.head, 4);
	fake_vsock.event_pending = false;
	return true;
}

static bool devices_step(void)
{
	bool any = false;

	if (devs[0].present && (devs[0].status & VIRTIO_CONFIG_S_DRIVER_OK))
		any |= rng_step(&devs[0]);
	if (devs[1].present && (devs[1].status & VIRTIO_CONFIG_S_DRIVER_OK)) {
		any |= vsock_events(&devs[1]);
		any |= vsock_tx(&devs[1]);
		any |= vsock_rx(&devs[1]);
	}
	return any;
}

int guest_park(uint64_t timeout_us)
{
	bool any;

	fake_parks++;
	any = devices_step();
	if (fake_park_hook)
		fake_park_hook();
	any |= devices_step();
	if (any)
		return EMBER_PARK_EVENT;
	cr_assert_lt(++idle_parks, IDLE_PARKS, "the guest parks forever with nothing to do");
	/* small steps, so timers inside a long wait (credit requests) get their turn */
	fake_now += timeout_us && timeout_us < IDLE_STEP_US ? timeout_us : IDLE_STEP_US;
	return EMBER_PARK_TIMEOUT;
}

/* ---- the host side's API ------------------------------------------------------------- */

void fake_vsock_listen(uint32_t host_port)
{
	fake_vsock.listen[fake_vsock.nr_listen++] = host_port;
}

int fake_vsock_connect(uint32_t guest_port)
{
	static uint32_t next_port = HOST_PORT0;
	struct hconn *c = hconn_new(next_port++, guest_port);
	struct virtio_vsock_hdr h;

	hdr_to_guest(&h, c->host_port, guest_port, VIRTIO_VSOCK_OP_REQUEST);
	queue_ctrl(&h);
	idle_parks = 0;
	return (int)(c - fake_vsock.conns);
}

void fake_vsock_send(int h, const void *data, size_t len)
{
	struct hconn *c = &fake_vsock.conns[h];

	c->out = realloc(c->out, c->out_len + len);
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	idle_parks = 0;
}

size_t fake_vsock_recv(int h, void *buf, size_t len)
{
	struct hconn *c = &fake_vsock.conns[h];
	size_t n = c->in_len - c->in_read;

	if (n > len)
		n = len;
	if (!n)
		return 0;
	memcpy(buf, c->in + c->in_read, n);
	c->in_read += n;
	if (c->live)
		host_consumed(c, (uint32_t)n);
	return n;
}

void fake_vsock_shutdown(int h, unsigned flags)
{
	conn_ctrl(&fake_vsock.conns[h], VIRTIO_VSOCK_OP_SHUTDOWN, flags);
	idle_parks = 0;
}

void fake_vsock_rst(int h)
{
	conn_ctrl(&fake_vsock.conns[h], VIRTIO_VSOCK_OP_RST, 0);
	fake_vsock.conns[h].live = false;
	idle_parks = 0;
}

void fake_vsock_inject(uint64_t src_cid, uint64_t dst_cid, uint32_t src_port, uint32_t dst_port,
		       uint16_t op, uint32_t flags)
{
	struct virtio_vsock_hdr h;

	hdr_to_guest(&h, src_port, dst_port, op);
	h.src_cid = src_cid;
	h.dst_cid = dst_cid;
	h.flags = flags;
	queue_ctrl(&h);
	idle_parks = 0;
}

void fake_vsock_transport_reset(uint64_t new_cid)
{
	for (unsigned i = 0; i < FAKE_CONNS; i++)
		fake_vsock.conns[i].live = false;
	nr_ctrl = 0;
	fake_vsock.cid = new_cid;
	fake_vsock.event_pending = true;
	idle_parks = 0;
}

/* ---- setup --------------------------------------------------------------------------- */

static void dev_init(struct fdev *d, uint64_t base, uint32_t id, unsigned nq, uint64_t features)
{
	memset(d, 0, sizeof(*d));
	d->present = true;
	d->base = base;
	d->id = id;
	d->version = 2;
	d->nq = nq;
	d->features = features;
	set_status(d, 0);
}

void fake_reset(bool rng, bool vsock)
{
	for (unsigned i = 0; i < FAKE_CONNS; i++) {
		free(fake_vsock.conns[i].in);
		free(fake_vsock.conns[i].out);
	}
	memset(&fake_vsock, 0, sizeof(fake_vsock));
	memset(&fake_rng, 0, sizeof(fake_rng));
	memset(devs, 0, sizeof(devs));
	fake_log[0] = 0;
	fake_generation = 0;
	fake_ready = false;
	fake_reports = 0;
	fake_reset_jmp = NULL;
	fake_cmds_done = false;
	nr_cmds = 0;
	nr_ctrl = 0;
	idle_parks = 0;
	fake_now = 1000;
	fake_parks = 0;
	fake_park_hook = NULL;
	fake_assert_jmp = NULL;
	fake_vsock.cid = 3;
	fake_vsock.buf_alloc = 256 << 10;
	fake_vsock.max_pkt = 64 << 10;
	fake_vsock.auto_consume = true;
	if (rng)
		dev_init(&devs[0], FAKE_RNG_BASE, VIRTIO_ID_RNG, 1, 1ull << VIRTIO_F_VERSION_1);
	if (vsock)
		dev_init(&devs[1], FAKE_VSOCK_BASE, VIRTIO_ID_VSOCK, 3,
			 1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_VSOCK_F_SEQPACKET);
}

void fake_set_rng_version(uint32_t version, uint64_t features)
{
	devs[0].version = version;
	devs[0].features = features;
}
