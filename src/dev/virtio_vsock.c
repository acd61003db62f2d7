/*
 * virtio-vsock (device id 19): queues rx 0, tx 1, event 2; configuration: the guest's
 * CID. The device runs on a thread of its own with its own epoll (queue notifications,
 * the host listener, every connection's socket), so a vCPU never waits on a host
 * socket. Connections live in vsock_conn.c.
 *
 * Snapshots, as Firecracker does them: the device quiesces (its thread stops touching
 * guest memory and queues), connections are not saved, the queues' and transport's
 * state is. After a restore the guest receives VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, so
 * it drops its stale connections and keeps its listening sockets.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>

#include "dev.h"
#include "virtio.h"

enum { RXQ = 0, TXQ = 1, EVQ = 2, NR_QUEUES = 3 };
#define QUEUE_MAX 256

/* epoll tags beyond the connections' indices */
#define TAG_KICK   (1ull << 32)   /* | queue */
#define TAG_LISTEN (2ull << 32)
#define TAG_CTL    (3ull << 32)

static void vsock_config_read(struct virtio_dev *vd, uint32_t off, uint8_t *data, unsigned len);
static void vsock_reset(struct virtio_dev *vd);
static void poke(struct vsock *vs);

static const struct virtio_ops vsock_virtio = {
	.device_id = VIRTIO_ID_VSOCK,
	.nr_queues = NR_QUEUES,
	.queue_max = QUEUE_MAX,
	.config_len = sizeof(struct virtio_vsock_config),
	.config_read = vsock_config_read,
	.reset = vsock_reset,
};

static struct vsock *to_vsock(struct device *d)
{
	return d->priv;
}

static void vsock_config_read(struct virtio_dev *vd, uint32_t off, uint8_t *data, unsigned len)
{
	struct virtio_vsock_config cfg = { .guest_cid = htole64(to_vsock(vd->dev)->cid) };

	memcpy(data, (uint8_t *)&cfg + off, len);
}

/* The driver reset the device: it has forgotten every connection. */
/*
 * The driver reset the device: it has forgotten every connection. Their sockets are
 * closed by the device thread, before it does anything else: this runs on the vCPU
 * thread that wrote the status, which may not close files (its seccomp allowlist).
 */
static void vsock_reset(struct virtio_dev *vd)
{
	struct vsock *vs = to_vsock(vd->dev);

	vs->guest_reset_pending = true;
	vs->event_pending = false;
	poke(vs);
}

/* ---- queues --------------------------------------------------------------------------- */

static void process_tx(struct vsock *vs, struct virtq_chain *ch)
{
	struct virtq *q = &vs->vd.vq[TXQ];
	struct errbuf eb;
	bool used = false;
	int r;

	while ((r = virtq_pop(q, ch, &eb)) == 1) {
		struct virtio_vsock_hdr h;

		if (virtq_chain_read(ch, 0, &h, sizeof(h)) == sizeof(h))
			vsock_guest_packet(vs, &h, ch);
		else
			vs->stats.bad_packets++; /* shorter than a header: dropped */
		virtq_push(q, ch->head, 0);
		used = true;
	}
	if (r < 0)
		virtio_fail(&vs->vd, "tx queue: %s", eb.msg);
	if (used && virtq_should_interrupt(q))
		virtio_raise(&vs->vd, VIRTIO_MMIO_INT_VRING);
}

static void process_rx(struct vsock *vs, struct virtq_chain *ch)
{
	struct virtq *q = &vs->vd.vq[RXQ];
	struct errbuf eb;
	bool used = false;
	uint32_t written;
	int r;

	while (!(vs->vd.t.status & VIRTIO_CONFIG_S_NEEDS_RESET) && (r = virtq_pop(q, ch, &eb)) != 0) {
		if (r < 0) {
			virtio_fail(&vs->vd, "rx queue: %s", eb.msg);
			break;
		}
		if (ch->nr_readable || ch->writable_len < VSOCK_HDR_SIZE) {
			/* ember writes only into device-writable buffers, and a packet needs a header */
			virtio_fail(&vs->vd, "rx buffer %u: %llu device-writable bytes (a header is %u) "
				    "and %u device-readable buffers", ch->head,
				    (unsigned long long)ch->writable_len, VSOCK_HDR_SIZE,
				    ch->nr_readable);
			break;
		}
		if (!vsock_next_for_guest(vs, ch, &written)) {
			virtq_unpop(q);
			break;
		}
		virtq_push(q, ch->head, written);
		used = true;
	}
	if (used && virtq_should_interrupt(q))
		virtio_raise(&vs->vd, VIRTIO_MMIO_INT_VRING);
}

static void process_event(struct vsock *vs, struct virtq_chain *ch)
{
	struct virtio_vsock_event ev = { .id = htole32(VIRTIO_VSOCK_EVENT_TRANSPORT_RESET) };
	struct virtq *q = &vs->vd.vq[EVQ];
	struct errbuf eb;
	int r;

	if (!vs->event_pending || !virtio_live(&vs->vd))
		return;
	r = virtq_pop(q, ch, &eb);
	if (r < 0) {
		virtio_fail(&vs->vd, "event queue: %s", eb.msg);
		return;
	}
	if (r == 0)
		return; /* delivered once the driver posts an event buffer */
	if (ch->nr_readable || ch->writable_len < sizeof(ev)) {
		virtio_fail(&vs->vd, "event buffer %u holds %llu device-writable bytes, needs %zu",
			    ch->head, (unsigned long long)ch->writable_len, sizeof(ev));
		return;
	}
	virtq_chain_write(q, ch, 0, &ev, sizeof(ev));
	virtq_push(q, ch->head, sizeof(ev));
	vs->event_pending = false;
	virtio_raise(&vs->vd, VIRTIO_MMIO_INT_VRING);
}

/* Everything there is to do; dev->lock held, not quiesced. */
static void vsock_work(struct vsock *vs, struct virtq_chain *ch)
{
	uint64_t now = vsock_now_ns();

	if (vs->guest_reset_pending) {
		vs->guest_reset_pending = false;
		vsock_conn_guest_reset(vs);
	}
	if (vs->listen_ready) {
		vs->listen_ready = false;
		vsock_host_accept(vs);
	}
	if (!virtio_live(&vs->vd)) {
		/* nothing reaches the guest before DRIVER_OK: handshakes wait or time out */
		vsock_host_work(vs, now);
		return;
	}
	vs->kick_rx = vs->kick_evt = false;
	/* a restored guest hears of the reset before anything else */
	process_event(vs, ch);
	if (vs->kick_tx) {
		vs->kick_tx = false;
		process_tx(vs, ch);
	}
	vsock_host_work(vs, now);
	process_rx(vs, ch);
	/* reading may have ended connections (EOF after a guest shutdown) */
	vsock_host_work(vs, now);
	process_rx(vs, ch);
}

/* ---- the device thread --------------------------------------------------------------- */

static void note_event(struct vsock *vs, const struct epoll_event *e)
{
	uint64_t tag = e->data.u64, n;

	if (tag == TAG_CTL) {
		if (read(vs->ctl_fd, &n, sizeof(n)) < 0) {
			/* EAGAIN: another wake-up took it */
		}
	} else if (tag == TAG_LISTEN) {
		vs->listen_ready = true;
	} else if ((tag & ~0xffffffffull) == TAG_KICK) {
		unsigned q = (unsigned)(tag & 0xffffffffull);

		if (virtio_take_kick(&vs->vd, q)) {
			vs->kick_rx |= q == RXQ;
			vs->kick_tx |= q == TXQ;
			vs->kick_evt |= q == EVQ;
		}
	} else if (tag < VSOCK_MAX_CONNS && vs->conns[tag].state != VCONN_FREE) {
		vsock_host_ready(vs, &vs->conns[tag], e->events);
	}
}

/* From vCPU threads (register writes) and this device's own thread alike. */
static void vsock_write_fds(struct device *d, struct seccomp_fds *s)
{
	virtio_write_fds(&to_vsock(d)->vd, s);
	seccomp_fds_add(s, to_vsock(d)->ctl_fd);
}

static void *vsock_thread(void *arg)
{
	struct device *d = arg;
	struct vsock *vs = to_vsock(d);
	struct virtq_chain *ch = malloc(sizeof(*ch));
	struct epoll_event evs[32];

	pthread_setname_np(pthread_self(), "ember-vsock");
	if (d->vm->cfg.seccomp) {
		/* the connections' fds are sockets: send and sendmsg, never write */
		struct seccomp_fds fds = { .n = 0 };
		int r;

		seccomp_fds_add(&fds, STDERR_FILENO);
		seccomp_fds_add(&fds, log_fd_get());
		seccomp_fds_add(&fds, d->vm->event_fd);
		vsock_write_fds(d, &fds);
		r = seccomp_apply(SECCOMP_VSOCK, &fds);
		if (r) {
			vm_request_stop(d->vm, VM_STOP_ERROR, 0, "virtio-vsock: seccomp: %s",
					strerror(-r));
			free(ch);
			return NULL;
		}
	}
	if (!ch) {
		pr_err("virtio-vsock: out of memory; the device stops");
		return NULL;
	}
	for (;;) {
		int timeout = -1, n;
		int64_t left;

		pthread_mutex_lock(&d->lock);
		if (vs->stop) {
			pthread_mutex_unlock(&d->lock);
			break;
		}
		left = vs->quiesced ? -1 : vsock_next_deadline(vs, vsock_now_ns());
		if (left >= 0)
			timeout = (int)((left + 999999) / 1000000);
		pthread_mutex_unlock(&d->lock);

		n = epoll_wait(vs->ep, evs, (int)ARRAY_SIZE(evs), timeout);

		pthread_mutex_lock(&d->lock);
		/* readiness is edge-triggered: note all of it, even while quiesced */
		for (int i = 0; i < n; i++)
			note_event(vs, &evs[i]);
		if (!vs->quiesced && !vs->stop)
			vsock_work(vs, ch);
		pthread_mutex_unlock(&d->lock);
	}
	free(ch);
	return NULL;
}

static void poke(struct vsock *vs)
{
	uint64_t one = 1;

	if (write(vs->ctl_fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the thread has a wake-up pending anyway */
	}
}

/* ---- the host listener ------------------------------------------------------------------- */

/*
 * Binds the hybrid socket. A socket file left by an ember that is gone is replaced; one
 * that still answers belongs to a live VM and is never taken over.
 */
static int listen_uds(struct vsock *vs, struct errbuf *eb)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	if (strlen(vs->uds) + 12 > sizeof(sa.sun_path) - 1)
		return errbuf_set(eb, -ENAMETOOLONG, "--vsock-uds %s: longer than %zu bytes with the "
				  "_<port> suffix of guest-initiated connections", vs->uds,
				  sizeof(sa.sun_path) - 1);
	memcpy(sa.sun_path, vs->uds, strlen(vs->uds));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errbuf_set(eb, -errno, "vsock socket: %s", strerror(errno));
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	if (r < 0 && errno == EADDRINUSE) {
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		bool live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;

		if (probe >= 0)
			close(probe);
		if (lstat(vs->uds, &st) == 0 && !S_ISSOCK(st.st_mode)) {
			r = errbuf_set(eb, -EEXIST, "--vsock-uds %s: exists and is not a socket",
				       vs->uds);
			goto fail;
		}
		if (live) {
			r = errbuf_set(eb, -EADDRINUSE, "--vsock-uds %s: another process serves it "
				       "(each VM needs its own path)", vs->uds);
			goto fail;
		}
		unlink(vs->uds);
		r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	}
	if (r < 0 || listen(fd, 64) < 0 || stat(vs->uds, &st) < 0) {
		r = errbuf_set(eb, -errno, "--vsock-uds %s: %s", vs->uds, strerror(errno));
		goto fail;
	}
	vs->listen_fd = fd;
	vs->listen_dev = st.st_dev;
	vs->listen_ino = st.st_ino;
	return 0;
fail:
	close(fd);
	return r;
}

static void unlisten(struct vsock *vs)
{
	struct stat st;

	if (vs->listen_fd < 0)
		return;
	close(vs->listen_fd);
	vs->listen_fd = -1;
	/* only the file ember made: not one put there by someone else since */
	if (stat(vs->uds, &st) == 0 && st.st_dev == vs->listen_dev && st.st_ino == vs->listen_ino)
		unlink(vs->uds);
}

/* ---- dev_ops ---------------------------------------------------------------------------- */

static int add_watch(struct vsock *vs, int fd, uint64_t tag, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.u64 = tag };

	return epoll_ctl(vs->ep, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static int vsock_init(struct device *d, struct errbuf *eb)
{
	struct vsock *vs = to_vsock(d);
	const struct vm_config *cfg = &d->vm->cfg;
	int r;

	vs->listen_fd = vs->ep = vs->ctl_fd = -1;
	vsock_conn_init(vs);
	vs->cid = cfg->vsock_cid;
	r = virtio_init(&vs->vd, d, &vsock_virtio, eb);
	if (r)
		return r;
	vs->ep = epoll_create1(EPOLL_CLOEXEC);
	vs->ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (vs->ep < 0 || vs->ctl_fd < 0) {
		r = errbuf_set(eb, -errno, "virtio-vsock: %s", strerror(errno));
		goto fail;
	}
	r = add_watch(vs, vs->ctl_fd, TAG_CTL, EPOLLIN);
	for (unsigned q = 0; !r && q < NR_QUEUES; q++)
		r = add_watch(vs, vs->vd.kick_fd[q], TAG_KICK | q, EPOLLIN);
	if (r) {
		errbuf_set(eb, r, "virtio-vsock: epoll: %s", strerror(-r));
		goto fail;
	}
	if (cfg->vsock_uds) {
		vs->uds = strdup(cfg->vsock_uds);
		if (!vs->uds) {
			r = errbuf_set(eb, -ENOMEM, "out of memory");
			goto fail;
		}
		r = listen_uds(vs, eb);
		if (!r)
			r = add_watch(vs, vs->listen_fd, TAG_LISTEN, EPOLLIN | EPOLLET);
		if (r)
			goto fail;
	}
	return 0;
fail:
	d->ops->fini(d);
	return r;
}

static void vsock_fini(struct device *d)
{
	struct vsock *vs = to_vsock(d);

	if (vs->thread_started) {
		pthread_mutex_lock(&d->lock);
		vs->stop = true;
		pthread_mutex_unlock(&d->lock);
		poke(vs);
		pthread_join(vs->thread, NULL);
		vs->thread_started = false;
	}
	vsock_conn_close_all(vs);
	unlisten(vs);
	if (vs->ep >= 0)
		close(vs->ep);
	if (vs->ctl_fd >= 0)
		close(vs->ctl_fd);
	vs->ep = vs->ctl_fd = -1;
	free(vs->uds);
	vs->uds = NULL;
	virtio_fini(&vs->vd);
}

static int vsock_start(struct device *d, struct errbuf *eb)
{
	struct vsock *vs = to_vsock(d);
	int r = thread_start_nosig(&vs->thread, vsock_thread, d);

	if (r)
		return errbuf_set(eb, r, "virtio-vsock: starting its thread: %s", strerror(-r));
	vs->thread_started = true;
	return 0;
}

static void vsock_quiesce(struct device *d)
{
	/* the thread touches guest memory only under the lock and only when not quiesced */
	pthread_mutex_lock(&d->lock);
	to_vsock(d)->quiesced = true;
	pthread_mutex_unlock(&d->lock);
}

static void vsock_unquiesce(struct device *d)
{
	pthread_mutex_lock(&d->lock);
	to_vsock(d)->quiesced = false;
	pthread_mutex_unlock(&d->lock);
	poke(to_vsock(d));
}

static void vsock_read(struct device *d, uint64_t off, uint8_t *data, unsigned len)
{
	virtio_mmio_read(&to_vsock(d)->vd, off, data, len);
}

static void vsock_write(struct device *d, uint64_t off, const uint8_t *data, unsigned len)
{
	virtio_mmio_write(&to_vsock(d)->vd, off, data, len);
}

/* ---- snapshot section: the transport, the queues and the CID ---------------------------- */

#define CID_MIN 3ull
#define CID_MAX 0xfffffffeull

static int vsock_save(struct device *d, struct snap_device *sd, struct snap_err *se)
{
	struct vsock *vs = to_vsock(d);
	int r;

	pthread_mutex_lock(&d->lock);
	r = snap_dev_put_u64(sd, "guest_cid", vs->cid, se);
	if (!r)
		r = virtio_save(&vs->vd, sd, se);
	pthread_mutex_unlock(&d->lock);
	return r;
}

static int decode_cid(const struct snap_device *sd, uint64_t *cid, struct errbuf *eb)
{
	int r = dev_get_u64(sd, "guest_cid", CID_MAX, cid, eb);

	if (!r && *cid < CID_MIN)
		r = errbuf_set(eb, -EINVAL, "device %s: guest_cid %llu is reserved (valid: 3..%llu)",
			       sd->name, (unsigned long long)*cid, CID_MAX);
	return r;
}

static int vsock_check(const struct snap_state *st, const struct snap_device *sd,
		       struct errbuf *eb)
{
	uint64_t cid = 0;
	int r = decode_cid(sd, &cid, eb);

	return r ? r : virtio_check(st, sd, &vsock_virtio, eb);
}

static int vsock_restore(struct device *d, const struct snap_device *sd, struct errbuf *eb)
{
	struct vsock *vs = to_vsock(d);
	uint64_t cid = 0;
	int r = decode_cid(sd, &cid, eb);

	if (r)
		return r;
	if (d->vm->cfg.vsock_cid && d->vm->cfg.vsock_cid != cid)
		return errbuf_set(eb, -EINVAL, "--vsock-cid %llu: the snapshot's guest has CID %llu "
				  "(its driver read it at boot)",
				  (unsigned long long)d->vm->cfg.vsock_cid, (unsigned long long)cid);
	pthread_mutex_lock(&d->lock);
	r = virtio_restore(&vs->vd, sd, eb);
	if (!r) {
		vs->cid = cid;
		/* an in-place reset: connections are not part of the state, and nothing the
		 * previous guest asked for is owed to this one */
		vsock_conn_close_all(vs);
		vs->kick_rx = vs->kick_tx = vs->kick_evt = vs->rx_starved = false;
		vs->event_pending = vs->guest_reset_pending = false;
	}
	pthread_mutex_unlock(&d->lock);
	return r;
}

static void vsock_post_restore(struct device *d)
{
	struct vsock *vs = to_vsock(d);
	struct virtq_chain *ch = malloc(sizeof(*ch));

	/* the guest's connections ended with the VM that was snapshotted; the event goes
	 * into its ring now, before its vCPUs run, so the first thing a restored guest
	 * looks at already holds it (waiting for it costs an exit and a park) */
	pthread_mutex_lock(&d->lock);
	vs->event_pending = true;
	virtio_post_restore(&vs->vd);
	vs->vd.irq_direct = true; /* the event's interrupt too: see irq_direct */
	if (ch && virtio_live(&vs->vd))
		process_event(vs, ch);
	vs->vd.irq_direct = false;
	pthread_mutex_unlock(&d->lock);
	free(ch);
}

const struct dev_ops virtio_vsock_ops = {
	.name = "virtio-vsock",
	.version = VIRTIO_VSOCK_STATE_VERSION,
	.priv_size = sizeof(struct vsock),
	.init = vsock_init,
	.fini = vsock_fini,
	.start = vsock_start,
	.read = vsock_read,
	.write = vsock_write,
	.save = vsock_save,
	.restore = vsock_restore,
	.check = vsock_check,
	.quiesce = vsock_quiesce,
	.write_fds = vsock_write_fds,
	.unquiesce = vsock_unquiesce,
	.post_restore = vsock_post_restore,
};
