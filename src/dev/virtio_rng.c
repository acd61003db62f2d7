/*
 * virtio-rng: fills the guest's device-writable buffers from getrandom(2), at most
 * RNG_MAX_PER_REQUEST bytes per request, so a restored clone can re-seed its RNGs
 * (FORMAT.md section 11). The work runs on the VM's main loop, woken by the queue's
 * eventfd; the device has no state of its own beyond the transport and its queue.
 */
#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>

#include "dev.h"
#include "virtio.h"
#include "metrics.h"

#define RNG_QUEUE_MAX 64
/* A request asking for more gets this much: the driver asks again. */
#define RNG_MAX_PER_REQUEST 65536u

struct rng {
	struct virtio_dev vd;
	struct vm_watch watch;
	bool watching;
	uint64_t bytes;             /* handed out so far */
};

static const struct virtio_ops rng_virtio = {
	.device_id = VIRTIO_ID_RNG,
	.nr_queues = 1,
	.queue_max = RNG_QUEUE_MAX,
};

static struct rng *to_rng(struct device *d)
{
	return d->priv;
}

/* One request: random bytes into its writable part only. */
static int fill(struct rng *g, const struct virtq_chain *c, uint32_t *written)
{
	struct iovec iov[16];
	uint64_t want = c->writable_len < RNG_MAX_PER_REQUEST ? c->writable_len : RNG_MAX_PER_REQUEST;
	int n = virtq_chain_iov(&g->vd.vq[0], c, true, 0, want, iov, (int)ARRAY_SIZE(iov));

	*written = 0;
	for (int i = 0; i < n; i++) {
		size_t done = 0;

		while (done < iov[i].iov_len) {
			ssize_t got = getrandom((uint8_t *)iov[i].iov_base + done,
						iov[i].iov_len - done, 0);

			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0)
				return -errno;
			done += (size_t)got;
		}
		*written += (uint32_t)done;
	}
	return 0;
}

/* Serves every pending request; d->lock held. */
static void rng_process(struct device *d)
{
	struct rng *g = to_rng(d);
	struct virtq *q = &g->vd.vq[0];
	struct virtq_chain c;
	struct errbuf eb;
	bool used = false;
	int r;

	if (!virtio_live(&g->vd))
		return;
	while ((r = virtq_pop(q, &c, &eb)) == 1) {
		uint32_t written;

		if (!c.writable_len) {
			virtio_fail(&g->vd, "request %u has no device-writable buffer", c.head);
			break; /* the requests served so far still get their interrupt */
		}
		if (fill(g, &c, &written)) {
			/* getrandom failing is the host's problem: try again on the next kick */
			pr_warn("virtio-rng: getrandom: %s", strerror(errno));
			virtq_unpop(q);
			break;
		}
		g->bytes += written;
		metrics_add(M_RNG_REQUESTS, 1);
		metrics_add(M_RNG_BYTES, written);
		virtq_push(q, c.head, written);
		used = true;
	}
	if (r < 0)
		virtio_fail(&g->vd, "queue 0: %s", eb.msg);
	if (used && virtq_should_interrupt(q))
		virtio_raise(&g->vd, VIRTIO_MMIO_INT_VRING);
}

static void on_kick(struct vm *vm, struct vm_watch *w, uint32_t events)
{
	struct device *d = w->opaque;

	pthread_mutex_lock(&d->lock);
	if (virtio_take_kick(&to_rng(d)->vd, 0))
		rng_process(d);
	pthread_mutex_unlock(&d->lock);
}

static int rng_init(struct device *d, struct errbuf *eb)
{
	return virtio_init(&to_rng(d)->vd, d, &rng_virtio, eb);
}

static void rng_fini(struct device *d)
{
	struct rng *g = to_rng(d);

	if (g->watching)
		vm_watch_del(d->vm, &g->watch);
	virtio_fini(&g->vd);
}

static int rng_start(struct device *d, struct errbuf *eb)
{
	struct rng *g = to_rng(d);
	int r;

	g->watch = (struct vm_watch){ .fd = g->vd.kick_fd[0], .cb = on_kick, .opaque = d };
	r = vm_watch_add(d->vm, &g->watch);
	if (r)
		return errbuf_set(eb, r, "virtio-rng: watching its queue: %s", strerror(-r));
	g->watching = true;
	return 0;
}

static void rng_read(struct device *d, uint64_t off, uint8_t *data, unsigned len)
{
	virtio_mmio_read(&to_rng(d)->vd, off, data, len);
}

static void rng_write(struct device *d, uint64_t off, const uint8_t *data, unsigned len)
{
	virtio_mmio_write(&to_rng(d)->vd, off, data, len);
}

static int rng_save(struct device *d, struct snap_device *sd, struct snap_err *se)
{
	return virtio_save(&to_rng(d)->vd, sd, se);
}

static int rng_restore(struct device *d, const struct snap_device *sd, struct errbuf *eb)
{
	return virtio_restore(&to_rng(d)->vd, sd, eb);
}

static int rng_check(const struct snap_state *st, const struct snap_device *sd,
		     struct errbuf *eb)
{
	return virtio_check(st, sd, &rng_virtio, eb);
}

static void rng_post_restore(struct device *d)
{
	virtio_post_restore(&to_rng(d)->vd);
}

static void rng_write_fds(struct device *d, struct seccomp_fds *s)
{
	virtio_write_fds(&to_rng(d)->vd, s);
}

const struct dev_ops virtio_rng_ops = {
	.name = "virtio-rng",
	.version = VIRTIO_RNG_STATE_VERSION,
	.priv_size = sizeof(struct rng),
	.init = rng_init,
	.fini = rng_fini,
	.start = rng_start,
	.read = rng_read,
	.write = rng_write,
	.save = rng_save,
	.restore = rng_restore,
	.check = rng_check,
	.post_restore = rng_post_restore,
	.write_fds = rng_write_fds,
};
