/*
 * virtio-vsock connections and their host ends (Firecracker's hybrid scheme,
 * INVOCATION.md section 1): the state machine of each connection, credit flow control
 * in both directions, and the Unix sockets. Runs on the vsock device thread with
 * dev->lock held; every socket is non-blocking and edge-triggered, so nothing here
 * ever waits.
 *
 * Credit (virtio spec 5.10.6.3): ember grants the guest VSOCK_CONN_BUF bytes per
 * connection and counts what it has written to the host socket in fwd_cnt, so it never
 * holds more than that many of the guest's bytes; a guest that sends beyond its credit
 * is reset. Towards the guest, ember reads from the socket only as much as the guest's
 * own buf_alloc/fwd_cnt allow and as fits in the RX buffer at hand, straight into guest
 * memory.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "dev.h"
#include "virtio.h"
#include "metrics.h"

#define RXQ 0

uint64_t vsock_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t handshake_deadline(uint64_t now)
{
	return now + (uint64_t)VSOCK_HANDSHAKE_MS * 1000000ull;
}

void vsock_conn_init(struct vsock *vs)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		vs->conns[i] = (struct vsock_conn){ .fd = -1 };
	vs->rst_len = vs->rst_head = 0;
	vs->next_port = VSOCK_HOST_PORT_FIRST;
}

static void conn_free(struct vsock_conn *c)
{
	if (c->fd >= 0)
		close(c->fd); /* leaves the epoll set with it */
	free(c->buf);
	*c = (struct vsock_conn){ .fd = -1 };
}

void vsock_conn_close_all(struct vsock *vs)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		if (vs->conns[i].state != VCONN_FREE)
			conn_free(&vs->conns[i]);
	vs->rst_len = vs->rst_head = 0;
}

void vsock_conn_guest_reset(struct vsock *vs)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &vs->conns[i];

		if (c->state == VCONN_HELLO)
			continue;
		if (c->state == VCONN_REQUESTED && (c->pending & VPEND_REQUEST)) {
			/* the new driver hears of it once it is up, on the same deadline */
			continue;
		}
		if (c->state != VCONN_FREE)
			conn_free(c);
	}
	vs->rst_len = vs->rst_head = 0;
}

static void queue_rst(struct vsock *vs, uint32_t local_port, uint32_t peer_port)
{
	unsigned i;

	if (vs->rst_len == VSOCK_RST_RING) {
		/* the guest times the connection out itself; ember's memory stays bounded */
		vs->stats.rst_dropped++;
		return;
	}
	i = (vs->rst_head + vs->rst_len++) % VSOCK_RST_RING;
	vs->rst[i].local_port = local_port;
	vs->rst[i].peer_port = peer_port;
}

/* Ends a connection; the guest hears RST when it knows the connection exists. */
static void conn_reset(struct vsock *vs, struct vsock_conn *c)
{
	bool guest_knows = c->state == VCONN_OPEN || c->state == VCONN_CLOSING ||
			   (c->state == VCONN_REQUESTED && !(c->pending & VPEND_REQUEST));

	if (guest_knows)
		queue_rst(vs, c->local_port, c->peer_port);
	conn_free(c);
}

static struct vsock_conn *find(struct vsock *vs, uint32_t local_port, uint32_t peer_port)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &vs->conns[i];

		if (c->state >= VCONN_REQUESTED && c->local_port == local_port &&
		    c->peer_port == peer_port)
			return c;
	}
	return NULL;
}

static struct vsock_conn *alloc_conn(struct vsock *vs)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		if (vs->conns[i].state == VCONN_FREE)
			return &vs->conns[i];
	return NULL;
}

static int watch(struct vsock *vs, struct vsock_conn *c)
{
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
		.data.u64 = (uint64_t)(c - vs->conns),
	};

	/* readiness before the first edge is found by trying */
	c->readable = c->writable = true;
	return epoll_ctl(vs->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0 ? -errno : 0;
}

static bool port_in_use(const struct vsock *vs, uint32_t port)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		if (vs->conns[i].state >= VCONN_REQUESTED && vs->conns[i].local_port == port)
			return true;
	return false;
}

static uint32_t alloc_port(struct vsock *vs)
{
	for (;;) {
		uint32_t p = vs->next_port++;

		if (vs->next_port == UINT32_MAX)
			vs->next_port = VSOCK_HOST_PORT_FIRST;
		if (!port_in_use(vs, p))
			return p; /* at most VSOCK_MAX_CONNS ports are taken: this ends */
	}
}

/* ---- from the guest ------------------------------------------------------------------ */

static struct vsock_conn *guest_connect(struct vsock *vs, uint32_t local_port,
					uint32_t peer_port)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct vsock_conn *c;
	int n;

	c = vs->uds ? alloc_conn(vs) : NULL;
	if (!c) {
		vs->stats.conns_refused++;
		queue_rst(vs, local_port, peer_port);
		return NULL;
	}
	n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", vs->uds, local_port);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	/* a Unix connect never waits: it succeeds, or fails (EAGAIN: backlog full) */
	if (n >= (int)sizeof(sa.sun_path) || c->fd < 0 ||
	    connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		pr_debug("vsock: guest port %u -> host port %u: %s: %s", peer_port, local_port,
			 sa.sun_path, strerror(errno));
		conn_free(c);
		vs->stats.conns_refused++;
		queue_rst(vs, local_port, peer_port);
		return NULL;
	}
	c->state = VCONN_OPEN;
	c->local_port = local_port;
	c->peer_port = peer_port;
	c->pending = VPEND_RESPONSE;
	if (watch(vs, c)) {
		conn_reset(vs, c); /* RST answers the guest's REQUEST */
		return NULL;
	}
	vs->stats.conns_guest++;
	metrics_add(M_VSOCK_CONNECTIONS, 1);
	return c;
}

/* Bytes of the guest's, in order: whatever the socket takes now, the rest buffered. */
static void guest_data(struct vsock *vs, struct vsock_conn *c, const struct virtq_chain *ch,
		       uint32_t len)
{
	struct iovec iov[64];
	uint32_t done = 0;

	/* what the guest may have in flight, by the fwd_cnt it last heard */
	if ((uint64_t)(c->rx_cnt - c->fwd_cnt_told) + len > VSOCK_CONN_BUF) {
		pr_debug("vsock: guest port %u sent %u bytes beyond its credit", c->peer_port, len);
		vs->stats.bad_packets++;
		conn_reset(vs, c);
		return;
	}
	c->rx_cnt += len;
	vs->stats.bytes_from_guest += len;
	metrics_add(M_VSOCK_BYTES_TO_HOST, len);
	if (c->buf_len == 0 && c->ok_off == c->ok_len && c->writable) {
		while (done < len) {
			int n = virtq_chain_iov(&vs->vd.vq[1], ch, false, VSOCK_HDR_SIZE + done,
						len - done, iov, (int)ARRAY_SIZE(iov));
			struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)(n > 0 ? n : 0) };
			/* MSG_NOSIGNAL: a host peer gone is a reset, not a SIGPIPE */
			ssize_t w = n > 0 ? sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) : -1;

			if (w > 0) {
				done += (uint32_t)w;
				continue;
			}
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				c->writable = false;
				break;
			}
			conn_reset(vs, c); /* the host peer is gone */
			return;
		}
		c->fwd_cnt += done;
	}
	if (done < len) {
		if (!c->buf) {
			c->buf = malloc(VSOCK_CONN_BUF);
			if (!c->buf) {
				conn_reset(vs, c);
				return;
			}
		}
		if (c->buf_off + c->buf_len + (len - done) > VSOCK_CONN_BUF) {
			memmove(c->buf, c->buf + c->buf_off, c->buf_len);
			c->buf_off = 0;
		}
		/* fits: buf_len + len <= rx_cnt - fwd_cnt_told <= VSOCK_CONN_BUF (checked) */
		virtq_chain_read(ch, VSOCK_HDR_SIZE + done, c->buf + c->buf_off + c->buf_len,
				 len - done);
		c->buf_len += len - done;
	}
	if (c->fwd_cnt - c->fwd_cnt_told >= VSOCK_CONN_BUF / 2)
		c->pending |= VPEND_CREDIT_UPDATE;
}

static void guest_shutdown(struct vsock *vs, struct vsock_conn *c, uint32_t flags)
{
	if (flags & VIRTIO_VSOCK_SHUTDOWN_RCV)
		c->guest_no_recv = true;
	if (flags & VIRTIO_VSOCK_SHUTDOWN_SEND)
		c->guest_no_send = true;
	if (c->guest_no_recv && c->guest_no_send && c->state == VCONN_OPEN) {
		/* a close: flush what the guest sent, then answer RST (Linux waits for it) */
		c->state = VCONN_CLOSING;
		c->deadline_ns = handshake_deadline(vsock_now_ns());
	}
}

void vsock_guest_packet(struct vsock *vs, const struct virtio_vsock_hdr *h,
			const struct virtq_chain *ch)
{
	uint32_t local = le32toh(h->dst_port), peer = le32toh(h->src_port);
	uint32_t len = le32toh(h->len);
	uint16_t op = le16toh(h->op);
	struct vsock_conn *c;

	if (le64toh(h->src_cid) != vs->cid || le64toh(h->dst_cid) != EMBER_VSOCK_HOST_CID) {
		/* not from this guest, or not for the host: dropped, as Firecracker does */
		vs->stats.bad_packets++;
		return;
	}
	c = find(vs, local, peer);
	if (le16toh(h->type) != VIRTIO_VSOCK_TYPE_STREAM || len > ch->readable_len - VSOCK_HDR_SIZE ||
	    (len && op != VIRTIO_VSOCK_OP_RW)) {
		vs->stats.bad_packets++;
		if (c)
			conn_reset(vs, c);
		else if (op != VIRTIO_VSOCK_OP_RST)
			queue_rst(vs, local, peer);
		return;
	}
	if (c && op != VIRTIO_VSOCK_OP_RST) {
		c->peer_buf_alloc = le32toh(h->buf_alloc);
		c->peer_fwd_cnt = le32toh(h->fwd_cnt);
	}
	switch (op) {
	case VIRTIO_VSOCK_OP_REQUEST:
		if (c) {
			conn_reset(vs, c); /* a second REQUEST for a live connection */
		} else if ((c = guest_connect(vs, local, peer))) {
			/* the REQUEST carries the guest's credit like every packet */
			c->peer_buf_alloc = le32toh(h->buf_alloc);
			c->peer_fwd_cnt = le32toh(h->fwd_cnt);
		}
		break;
	case VIRTIO_VSOCK_OP_RESPONSE:
		if (c && c->state == VCONN_REQUESTED && !(c->pending & VPEND_REQUEST)) {
			c->state = VCONN_OPEN;
			c->ok_len = (uint8_t)snprintf(c->ok, sizeof(c->ok), "OK %u\n", c->local_port);
			c->ok_off = 0;
			vs->stats.conns_host++;
			metrics_add(M_VSOCK_CONNECTIONS, 1);
		} else if (c) {
			conn_reset(vs, c);
		} else {
			queue_rst(vs, local, peer);
		}
		break;
	case VIRTIO_VSOCK_OP_RST:
		if (c)
			conn_free(c);
		break;
	case VIRTIO_VSOCK_OP_SHUTDOWN:
		if (c && c->state >= VCONN_OPEN)
			guest_shutdown(vs, c, le32toh(h->flags));
		else if (c)
			conn_reset(vs, c);
		else
			queue_rst(vs, local, peer);
		break;
	case VIRTIO_VSOCK_OP_RW:
		if (c && c->state == VCONN_OPEN && !c->guest_no_send)
			guest_data(vs, c, ch, len);
		else if (c)
			conn_reset(vs, c);
		else
			queue_rst(vs, local, peer);
		break;
	case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
		if (!c)
			queue_rst(vs, local, peer);
		break;
	case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
		if (c)
			c->pending |= VPEND_CREDIT_UPDATE;
		else
			queue_rst(vs, local, peer);
		break;
	default:
		vs->stats.bad_packets++;
		if (c)
			conn_reset(vs, c);
		else
			queue_rst(vs, local, peer);
	}
}

/* ---- from the host -------------------------------------------------------------------- */

void vsock_host_accept(struct vsock *vs)
{
	for (;;) {
		int fd = accept4(vs->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct vsock_conn *c;

		if (fd < 0 && (errno == ECONNABORTED || errno == EINTR || errno == EPROTO))
			continue; /* a client that left already */
		if (fd < 0) {
			/* EAGAIN; anything else (out of fds) is retried at the next client */
			if (errno != EAGAIN && errno != EWOULDBLOCK && !vs->accept_warned) {
				pr_warn("vsock: accept on %s: %s", vs->uds, strerror(errno));
				vs->accept_warned = true;
			}
			return;
		}
		c = alloc_conn(vs);
		if (!c) {
			/* INVOCATION.md: at the limit, ember closes without a word */
			vs->stats.conns_refused++;
			close(fd);
			continue;
		}
		c->state = VCONN_HELLO;
		c->fd = fd;
		c->deadline_ns = handshake_deadline(vsock_now_ns());
		if (watch(vs, c))
			conn_free(c);
	}
}

void vsock_host_ready(struct vsock *vs, struct vsock_conn *c, uint32_t events)
{
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		c->readable = true;
	if (events & (EPOLLHUP | EPOLLERR))
		c->hup = true;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		c->writable = true;
}

/* "CONNECT <port>\n": decimal, no sign, no leading zeros, at most 10 digits. */
static int parse_connect(const char *line, size_t len, uint32_t *port)
{
	const char *p = line + 8;
	uint64_t v = 0;
	size_t digits = 0;

	if (len < 10 || memcmp(line, "CONNECT ", 8) || line[len - 1] != '\n')
		return -EINVAL;
	for (; p < line + len - 1; p++, digits++) {
		if (*p < '0' || *p > '9' || digits == 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (!digits || (digits > 1 && line[8] == '0') || v > UINT32_MAX)
		return -EINVAL;
	*port = (uint32_t)v;
	return 0;
}

/* HELLO: the CONNECT line, read without taking a byte past its newline (the client's
 * first bytes of data may follow it in the same write). */
static void read_hello(struct vsock *vs, struct vsock_conn *c, uint64_t now)
{
	char buf[VSOCK_LINE_MAX];
	ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_PEEK);
	char *nl;
	uint32_t port;

	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
		c->readable = false;
		return;
	}
	nl = n > 0 ? memchr(buf, '\n', (size_t)n) : NULL;
	if (!nl) {
		if (n <= 0 || n == (ssize_t)sizeof(buf)) {
			conn_free(c); /* gone, or no newline within the line's limit */
			return;
		}
		c->readable = false; /* wait for the rest of the line */
		return;
	}
	n = nl - buf + 1;
	if (recv(c->fd, buf, (size_t)n, 0) != n || parse_connect(buf, (size_t)n, &port)) {
		pr_debug("vsock: host client sent a malformed CONNECT line");
		conn_free(c);
		return;
	}
	c->state = VCONN_REQUESTED;
	c->local_port = alloc_port(vs);
	c->peer_port = port;
	c->pending = VPEND_REQUEST;
	c->deadline_ns = handshake_deadline(now);
}

/* Writes what the guest sent (and the OK line first) while the socket takes it. */
static bool flush_to_host(struct vsock *vs, struct vsock_conn *c)
{
	while (c->writable && (c->ok_off < c->ok_len || c->buf_len)) {
		bool ok = c->ok_off < c->ok_len;
		const void *p = ok ? (const void *)(c->ok + c->ok_off) : c->buf + c->buf_off;
		size_t len = ok ? (size_t)(c->ok_len - c->ok_off) : c->buf_len;
		ssize_t w = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->writable = false;
			break;
		}
		if (w <= 0) {
			conn_reset(vs, c);
			return false;
		}
		if (ok) {
			c->ok_off = (uint8_t)(c->ok_off + w);
		} else {
			c->buf_off += (uint32_t)w;
			c->buf_len -= (uint32_t)w;
			c->fwd_cnt += (uint32_t)w;
			if (!c->buf_len)
				c->buf_off = 0;
		}
	}
	if (c->fwd_cnt - c->fwd_cnt_told >= VSOCK_CONN_BUF / 2)
		c->pending |= VPEND_CREDIT_UPDATE;
	return true;
}

void vsock_host_work(struct vsock *vs, uint64_t now)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &vs->conns[i];
		bool flushed;

		switch (c->state) {
		case VCONN_FREE:
			continue;
		case VCONN_HELLO:
			if (c->readable)
				read_hello(vs, c, now);
			if (c->state == VCONN_HELLO && now >= c->deadline_ns)
				conn_free(c);
			continue;
		case VCONN_REQUESTED:
			if (now >= c->deadline_ns) {
				pr_debug("vsock: guest port %u did not answer", c->peer_port);
				conn_reset(vs, c);
			}
			continue;
		case VCONN_OPEN:
		case VCONN_CLOSING:
			break;
		}
		if (!flush_to_host(vs, c))
			continue;
		flushed = c->ok_off == c->ok_len && !c->buf_len;
		if (c->guest_no_send && flushed)
			shutdown(c->fd, SHUT_WR); /* the host reads EOF; repeating it is harmless */
		if (c->state == VCONN_CLOSING && (flushed || now >= c->deadline_ns))
			conn_reset(vs, c); /* the RST the guest's close waits for */
		else if (c->guest_no_send && c->host_eof && flushed &&
			 !(c->pending & VPEND_SHUTDOWN_SEND))
			conn_reset(vs, c); /* both directions are done */
		else if (c->hup && (c->host_eof || c->guest_no_recv))
			/* the host closed after a half-close, or while the guest reads no more:
			 * nothing is left to read, so no EOF will tell */
			conn_reset(vs, c);
	}
}

int64_t vsock_next_deadline(const struct vsock *vs, uint64_t now)
{
	int64_t best = -1;

	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		const struct vsock_conn *c = &vs->conns[i];
		int64_t left;

		if (c->state != VCONN_HELLO && c->state != VCONN_REQUESTED && c->state != VCONN_CLOSING)
			continue;
		left = c->deadline_ns > now ? (int64_t)(c->deadline_ns - now) : 0;
		if (best < 0 || left < best)
			best = left;
	}
	return best;
}

/* ---- to the guest --------------------------------------------------------------------- */

static void put_hdr(struct vsock *vs, const struct virtq_chain *ch, struct vsock_conn *c,
		    uint32_t local, uint32_t peer, uint16_t op, uint32_t flags, uint32_t len)
{
	struct virtio_vsock_hdr h = {
		.src_cid = htole64(EMBER_VSOCK_HOST_CID),
		.dst_cid = htole64(vs->cid),
		.src_port = htole32(local),
		.dst_port = htole32(peer),
		.len = htole32(len),
		.type = htole16(VIRTIO_VSOCK_TYPE_STREAM),
		.op = htole16(op),
		.flags = htole32(flags),
		.buf_alloc = htole32(c ? VSOCK_CONN_BUF : 0),
		.fwd_cnt = htole32(c ? c->fwd_cnt : 0),
	};

	if (c)
		c->fwd_cnt_told = c->fwd_cnt;
	virtq_chain_write(&vs->vd.vq[RXQ], ch, 0, &h, sizeof(h));
}

static uint32_t guest_credit(const struct vsock_conn *c)
{
	uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;

	return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

/* The control packet c owes the guest, if any. */
static bool control_for_guest(struct vsock *vs, struct vsock_conn *c, const struct virtq_chain *ch)
{
	static const struct { uint32_t bit; uint16_t op; uint32_t flags; } order[] = {
		{ VPEND_REQUEST, VIRTIO_VSOCK_OP_REQUEST, 0 },
		{ VPEND_RESPONSE, VIRTIO_VSOCK_OP_RESPONSE, 0 },
		{ VPEND_SHUTDOWN_SEND, VIRTIO_VSOCK_OP_SHUTDOWN, VIRTIO_VSOCK_SHUTDOWN_SEND },
		{ VPEND_CREDIT_UPDATE, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 0 },
		{ VPEND_CREDIT_REQUEST, VIRTIO_VSOCK_OP_CREDIT_REQUEST, 0 },
	};

	if (c->state < VCONN_REQUESTED)
		return false;
	for (size_t k = 0; k < ARRAY_SIZE(order); k++) {
		if (!(c->pending & order[k].bit))
			continue;
		/* a restored guest must see the reset before a new connection, or the reset
		 * would take the new one down too */
		if (order[k].bit == VPEND_REQUEST && vs->event_pending)
			continue;
		c->pending &= ~order[k].bit;
		put_hdr(vs, ch, c, c->local_port, c->peer_port, order[k].op, order[k].flags, 0);
		return true;
	}
	return false;
}

/* Reads what the host sent, as much as the guest's credit and this buffer take. */
static bool data_for_guest(struct vsock *vs, struct vsock_conn *c, const struct virtq_chain *ch,
			   uint32_t *written)
{
	uint32_t room = (uint32_t)(ch->writable_len - VSOCK_HDR_SIZE), credit = guest_credit(c);
	uint32_t want = room < credit ? room : credit;
	struct iovec iov[64];
	ssize_t n;
	int nv;

	if (c->state != VCONN_OPEN || c->guest_no_recv || c->host_eof || !c->readable ||
	    (c->pending & (VPEND_REQUEST | VPEND_RESPONSE)))
		return false;
	if (!credit) {
		/* the guest's reader is behind: ask once where it stands (it sends an update
		 * when its reader catches up) */
		if (!c->credit_requested)
			c->pending |= VPEND_CREDIT_REQUEST;
		c->credit_requested = true;
		return false;
	}
	c->credit_requested = false;
	if (want > VSOCK_MAX_PKT)
		want = VSOCK_MAX_PKT;
	if (!want)
		return false;
	nv = virtq_chain_iov(&vs->vd.vq[RXQ], ch, true, VSOCK_HDR_SIZE, want, iov, (int)ARRAY_SIZE(iov));
	do
		n = readv(c->fd, iov, nv);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		c->readable = false;
		return false;
	}
	if (n < 0) {
		conn_reset(vs, c);
		return false;
	}
	if (n == 0) {
		struct pollfd p = { .fd = c->fd };

		/* the host closed its socket (both directions shut: POLLHUP): a reset, as
		 * INVOCATION.md says; after everything it sent, which the guest has */
		if (poll(&p, 1, 0) == 1 && (p.revents & POLLHUP)) {
			conn_reset(vs, c);
			return false;
		}
		/* the host shut its writing side only: the guest reads end-of-stream */
		c->host_eof = true;
		c->pending |= VPEND_SHUTDOWN_SEND;
		return false;
	}
	put_hdr(vs, ch, c, c->local_port, c->peer_port, VIRTIO_VSOCK_OP_RW, 0, (uint32_t)n);
	c->tx_cnt += (uint32_t)n;
	vs->stats.bytes_to_guest += (uint64_t)n;
	metrics_add(M_VSOCK_BYTES_TO_GUEST, (uint64_t)n);
	*written = VSOCK_HDR_SIZE + (uint32_t)n;
	return true;
}

bool vsock_next_for_guest(struct vsock *vs, const struct virtq_chain *ch, uint32_t *written)
{
	*written = VSOCK_HDR_SIZE;
	if (vs->rst_len) {
		unsigned i = vs->rst_head;

		vs->rst_head = (vs->rst_head + 1) % VSOCK_RST_RING;
		vs->rst_len--;
		vs->stats.rst_sent++;
		put_hdr(vs, ch, NULL, vs->rst[i].local_port, vs->rst[i].peer_port,
			VIRTIO_VSOCK_OP_RST, 0, 0);
		return true;
	}
	for (unsigned k = 0; k < VSOCK_MAX_CONNS; k++) {
		struct vsock_conn *c = &vs->conns[(vs->rr + k) % VSOCK_MAX_CONNS];

		if (c->pending && control_for_guest(vs, c, ch))
			return true;
	}
	for (unsigned k = 0; k < VSOCK_MAX_CONNS; k++) {
		unsigned i = (vs->rr + k) % VSOCK_MAX_CONNS;
		struct vsock_conn *c = &vs->conns[i];

		if (c->state == VCONN_FREE)
			continue;
		if (data_for_guest(vs, c, ch, written)) {
			vs->rr = (i + 1) % VSOCK_MAX_CONNS; /* the next connection goes first */
			return true;
		}
		/* reading may have owed a SHUTDOWN or a CREDIT_REQUEST, or reset c */
		if (c->pending && control_for_guest(vs, c, ch))
			return true;
		if (vs->rst_len)
			return vsock_next_for_guest(vs, ch, written);
	}
	return false;
}
