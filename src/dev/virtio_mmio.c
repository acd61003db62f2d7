/*
 * The virtio-mmio transport (virtio 1.x, version-2 register layout), shared by every
 * virtio device: registers, feature negotiation, the status state machine, queue
 * set-up, notifications and interrupts, and the transport's part of a snapshot.
 *
 * Notifications: each queue has an eventfd that KVM signals on a QueueNotify write of
 * that queue's index (KVM_IOEVENTFD with datamatch), so a kick costs the vCPU no exit
 * to ember; where KVM lacks ioeventfds the write exits and the handler here signals
 * the same eventfd. Interrupts: an eventfd bound to the device's GSI on the in-kernel
 * IOAPIC (KVM_IRQFD), else a KVM_IRQ_LINE pulse. Either way the device's work runs
 * where it reads its eventfds (its thread, or the main loop), never on a vCPU.
 *
 * Everything the driver writes is untrusted: a protocol violation puts the device in
 * NEEDS_RESET (and raises a configuration interrupt) instead of being acted on.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include "dev.h"
#include "virtio.h"

#define MMIO_MAGIC   0x74726976u /* "virt" */
#define MMIO_VERSION 2u
#define MMIO_VENDOR  0x52424d45u /* "EMBR" */

#define STATUS_VALID (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |                \
		      VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FEATURES_OK |             \
		      VIRTIO_CONFIG_S_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED)
#define INT_VALID (VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG)

uint64_t virtio_offered(const struct virtio_dev *vd)
{
	return vd->ops->features | (1ull << VIRTIO_F_VERSION_1) |
	       (1ull << VIRTIO_RING_F_INDIRECT_DESC);
}

bool virtio_live(const struct virtio_dev *vd)
{
	return (vd->t.status & VIRTIO_CONFIG_S_DRIVER_OK) &&
	       !(vd->t.status & (VIRTIO_CONFIG_S_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED));
}

/* ---- interrupts ------------------------------------------------------------------- */

static void irq_pulse(struct virtio_dev *vd)
{
	struct device *d = vd->dev;
	uint64_t one = 1;

	if (vd->irq_fd >= 0 && !vd->irq_direct) {
		if (write(vd->irq_fd, &one, sizeof(one)) < 0) {
			/* the counter cannot overflow with KVM consuming it */
		}
	} else if (d->irq.set_level) {
		/* edge on an ISA pin (the MP table's default): up, then down */
		d->irq.set_level(d->irq.opaque, d->irq.gsi, 1);
		d->irq.set_level(d->irq.opaque, d->irq.gsi, 0);
	}
}

void virtio_raise(struct virtio_dev *vd, uint32_t why)
{
	vd->t.interrupt_status |= why;
	vd->interrupts++;
	irq_pulse(vd);
	/* a polling guest parked in a PARK ucall wakes up as an interrupted one would */
	if (vd->dev->vm)
		vm_wake(vd->dev->vm);
}

void virtio_fail(struct virtio_dev *vd, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	if (vd->t.status & VIRTIO_CONFIG_S_NEEDS_RESET)
		return; /* one report per reset: a hostile driver cannot flood the log */
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pr_warn("%s: %s; the device needs a reset", vd->dev->ops->name, msg);
	snprintf(vd->last_error, sizeof(vd->last_error), "%s", msg);
	vd->t.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
	if (vd->t.status & VIRTIO_CONFIG_S_DRIVER_OK)
		virtio_raise(vd, VIRTIO_MMIO_INT_CONFIG);
}

/* ---- set-up ------------------------------------------------------------------------ */

static void register_kvm(struct virtio_dev *vd)
{
	struct device *d = vd->dev;
	int vm_fd = d->vm ? d->vm->kvm.vm_fd : -1;
	const char *missing = NULL;
	int err = 0;

	if (vm_fd < 0)
		return; /* unit tests: no VM, the exit path it is */
	for (unsigned q = 0; q < vd->ops->nr_queues && !missing; q++) {
		struct kvm_ioeventfd io = {
			.datamatch = q,
			.addr = d->slot->base + VIRTIO_MMIO_QUEUE_NOTIFY,
			.len = 4,
			.fd = vd->kick_fd[q],
			.flags = KVM_IOEVENTFD_FLAG_DATAMATCH,
		};

		if (ioctl(vm_fd, KVM_IOEVENTFD, &io) < 0) {
			err = errno;
			missing = "ioeventfd";
			/* the queues registered so far still work: KVM signals their fds */
		}
	}
	vd->ioeventfd = !missing;
	if (missing)
		pr_info("%s: KVM_IOEVENTFD failed (%s): queue notifications take the exit path",
			d->ops->name, strerror(err));
	vd->irq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (vd->irq_fd >= 0) {
		struct kvm_irqfd f = { .fd = (uint32_t)vd->irq_fd, .gsi = d->slot->gsi };

		if (ioctl(vm_fd, KVM_IRQFD, &f) < 0) {
			pr_info("%s: KVM_IRQFD failed (%s): interrupts take the KVM_IRQ_LINE path",
				d->ops->name, strerror(errno));
			close(vd->irq_fd);
			vd->irq_fd = -1;
		}
	}
}

static void queues_reset(struct virtio_dev *vd)
{
	for (unsigned q = 0; q < vd->ops->nr_queues; q++)
		virtq_init(&vd->vq[q], &vd->dev->vm->mem, vd->ops->queue_max);
}

int virtio_init(struct virtio_dev *vd, struct device *d, const struct virtio_ops *ops,
		struct errbuf *eb)
{
	memset(vd, 0, sizeof(*vd));
	vd->dev = d;
	vd->ops = ops;
	vd->irq_fd = -1;
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
		vd->kick_fd[q] = -1;
	if (ops->nr_queues > VIRTIO_MAX_QUEUES || ops->queue_max > VIRTQ_MAX_SIZE)
		return errbuf_set(eb, -EINVAL, "%s: %u queues of %u", d->ops->name, ops->nr_queues,
				  ops->queue_max);
	for (unsigned q = 0; q < ops->nr_queues; q++) {
		vd->kick_fd[q] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (vd->kick_fd[q] < 0) {
			int r = -errno;

			virtio_fini(vd);
			return errbuf_set(eb, r, "%s: eventfd: %s", d->ops->name, strerror(-r));
		}
	}
	queues_reset(vd);
	register_kvm(vd);
	return 0;
}

void virtio_fini(struct virtio_dev *vd)
{
	/* KVM drops its ioeventfd and irqfd bindings when the VM goes */
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
		if (vd->kick_fd[q] >= 0)
			close(vd->kick_fd[q]);
	if (vd->irq_fd >= 0)
		close(vd->irq_fd);
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
		vd->kick_fd[q] = -1;
	vd->irq_fd = -1;
}

void virtio_write_fds(const struct virtio_dev *vd, struct seccomp_fds *s)
{
	for (unsigned q = 0; q < vd->ops->nr_queues; q++)
		seccomp_fds_add(s, vd->kick_fd[q]);
	seccomp_fds_add(s, vd->irq_fd);
}

void virtio_kick(struct virtio_dev *vd, unsigned q)
{
	uint64_t one = 1;

	if (q < vd->ops->nr_queues && write(vd->kick_fd[q], &one, sizeof(one)) < 0) {
		/* EAGAIN: already signalled */
	}
}

bool virtio_take_kick(struct virtio_dev *vd, unsigned q)
{
	uint64_t n;

	return q < vd->ops->nr_queues && read(vd->kick_fd[q], &n, sizeof(n)) == sizeof(n);
}

/* ---- registers ---------------------------------------------------------------------- */

static struct virtq *selected(struct virtio_dev *vd)
{
	return vd->t.queue_sel < vd->ops->nr_queues ? &vd->vq[vd->t.queue_sel] : NULL;
}

static void device_reset(struct virtio_dev *vd)
{
	if (vd->ops->reset)
		vd->ops->reset(vd);
	memset(&vd->t, 0, sizeof(vd->t));
	vd->last_error[0] = 0;
	queues_reset(vd);
}

static uint32_t reg_read(struct virtio_dev *vd, uint64_t off)
{
	struct virtq *q = selected(vd);

	switch (off) {
	case VIRTIO_MMIO_MAGIC_VALUE:
		return MMIO_MAGIC;
	case VIRTIO_MMIO_VERSION:
		return MMIO_VERSION;
	case VIRTIO_MMIO_DEVICE_ID:
		return vd->ops->device_id;
	case VIRTIO_MMIO_VENDOR_ID:
		return MMIO_VENDOR;
	case VIRTIO_MMIO_DEVICE_FEATURES:
		return vd->t.device_features_sel < 2
			       ? (uint32_t)(virtio_offered(vd) >> (32 * vd->t.device_features_sel))
			       : 0;
	case VIRTIO_MMIO_QUEUE_NUM_MAX:
		return q ? q->max_size : 0;
	case VIRTIO_MMIO_QUEUE_READY:
		return q ? q->s.ready : 0;
	case VIRTIO_MMIO_INTERRUPT_STATUS:
		return vd->t.interrupt_status;
	case VIRTIO_MMIO_STATUS:
		return vd->t.status;
	case VIRTIO_MMIO_CONFIG_GENERATION:
		return vd->t.config_generation;
	default:
		return 0; /* write-only and reserved registers */
	}
}

static void set_addr(struct virtio_dev *vd, uint64_t *field, bool high, uint32_t v)
{
	struct virtq *q = selected(vd);

	if (!q)
		return;
	if (q->s.ready) {
		virtio_fail(vd, "queue %u: address written while the queue is ready",
			    vd->t.queue_sel);
		return;
	}
	*field = high ? (*field & 0xffffffffull) | ((uint64_t)v << 32)
		      : (*field & ~0xffffffffull) | v;
}

static void write_status(struct virtio_dev *vd, uint32_t v)
{
	uint32_t old = vd->t.status;

	if (v == 0) {
		device_reset(vd);
		return;
	}
	if (v & ~STATUS_VALID) {
		virtio_fail(vd, "status 0x%x has unknown bits", v);
		return;
	}
	/* the driver only ever adds bits; NEEDS_RESET is the device's */
	if ((old & ~v & ~VIRTIO_CONFIG_S_NEEDS_RESET) || (v & ~old & VIRTIO_CONFIG_S_NEEDS_RESET)) {
		virtio_fail(vd, "status 0x%x after 0x%x clears bits or sets NEEDS_RESET", v, old);
		return;
	}
	v |= old & VIRTIO_CONFIG_S_NEEDS_RESET;
	if ((v & VIRTIO_CONFIG_S_FEATURES_OK) && !(old & VIRTIO_CONFIG_S_FEATURES_OK)) {
		uint64_t extra = vd->t.driver_features & ~virtio_offered(vd);

		/* refused: the driver reads FEATURES_OK back and gives up */
		if (extra || !(vd->t.driver_features & (1ull << VIRTIO_F_VERSION_1))) {
			pr_debug("%s: refused features 0x%" PRIx64 "%s", vd->dev->ops->name,
				 vd->t.driver_features, extra ? " (never offered)" : " (no VERSION_1)");
			v &= ~(uint32_t)VIRTIO_CONFIG_S_FEATURES_OK;
		} else {
			for (unsigned q = 0; q < vd->ops->nr_queues; q++)
				vd->vq[q].indirect = vd->t.driver_features &
						     (1ull << VIRTIO_RING_F_INDIRECT_DESC);
		}
	}
	if ((v & VIRTIO_CONFIG_S_DRIVER_OK) && !(v & VIRTIO_CONFIG_S_FEATURES_OK)) {
		vd->t.status = v & ~(uint32_t)VIRTIO_CONFIG_S_DRIVER_OK;
		virtio_fail(vd, "DRIVER_OK without FEATURES_OK");
		return;
	}
	vd->t.status = v;
	if ((v & VIRTIO_CONFIG_S_DRIVER_OK) && !(old & VIRTIO_CONFIG_S_DRIVER_OK)) {
		if (vd->ops->activate)
			vd->ops->activate(vd);
		/* buffers queued before DRIVER_OK were not looked at: look now */
		for (unsigned q = 0; q < vd->ops->nr_queues; q++)
			virtio_kick(vd, q);
	}
}

static void write_queue_ready(struct virtio_dev *vd, uint32_t v)
{
	struct virtq *q = selected(vd);
	struct errbuf eb;

	if (!q)
		return;
	if (v == 0) {
		virtq_disable(q);
		return;
	}
	if (q->s.ready)
		return;
	if (virtq_enable(q, &eb))
		virtio_fail(vd, "queue %u: %s", vd->t.queue_sel, eb.msg);
}

static void reg_write(struct virtio_dev *vd, uint64_t off, uint32_t v)
{
	struct virtq *q = selected(vd);
	bool features_open = (vd->t.status & VIRTIO_CONFIG_S_DRIVER) &&
			     !(vd->t.status & VIRTIO_CONFIG_S_FEATURES_OK);

	switch (off) {
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
		vd->t.device_features_sel = v;
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES:
		if (!features_open) {
			virtio_fail(vd, "driver features written outside negotiation");
			break;
		}
		if (vd->t.driver_features_sel < 2) {
			unsigned sh = 32 * vd->t.driver_features_sel;

			vd->t.driver_features = (vd->t.driver_features & ~(0xffffffffull << sh)) |
						((uint64_t)v << sh);
		} else if (v) {
			/* bits past 63: nothing there was offered; FEATURES_OK will not stick */
			vd->t.driver_features |= 1ull << 63;
		}
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
		vd->t.driver_features_sel = v;
		break;
	case VIRTIO_MMIO_QUEUE_SEL:
		vd->t.queue_sel = v;
		break;
	case VIRTIO_MMIO_QUEUE_NUM:
		if (!q)
			break;
		if (q->s.ready)
			virtio_fail(vd, "queue %u: size written while the queue is ready",
				    vd->t.queue_sel);
		else
			q->s.size = (uint16_t)(v > UINT16_MAX ? 0 : v); /* checked at QueueReady */
		break;
	case VIRTIO_MMIO_QUEUE_READY:
		write_queue_ready(vd, v);
		break;
	case VIRTIO_MMIO_QUEUE_NOTIFY:
		/* only reached without an ioeventfd; the device ignores kicks before DRIVER_OK */
		vd->exit_kicks++;
		virtio_kick(vd, v);
		break;
	case VIRTIO_MMIO_INTERRUPT_ACK:
		vd->t.interrupt_status &= ~v;
		break;
	case VIRTIO_MMIO_STATUS:
		write_status(vd, v);
		break;
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
		set_addr(vd, q ? &q->s.desc : NULL, off == VIRTIO_MMIO_QUEUE_DESC_HIGH, v);
		break;
	case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
	case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
		set_addr(vd, q ? &q->s.avail : NULL, off == VIRTIO_MMIO_QUEUE_AVAIL_HIGH, v);
		break;
	case VIRTIO_MMIO_QUEUE_USED_LOW:
	case VIRTIO_MMIO_QUEUE_USED_HIGH:
		set_addr(vd, q ? &q->s.used : NULL, off == VIRTIO_MMIO_QUEUE_USED_HIGH, v);
		break;
	default:
		break; /* read-only and reserved registers */
	}
}

void virtio_mmio_read(struct virtio_dev *vd, uint64_t off, uint8_t *data, unsigned len)
{
	memset(data, 0, len);
	if (off >= VIRTIO_MMIO_CONFIG) {
		uint64_t c = off - VIRTIO_MMIO_CONFIG;

		if (c < vd->ops->config_len && len <= vd->ops->config_len - c && vd->ops->config_read)
			vd->ops->config_read(vd, (uint32_t)c, data, len);
		return;
	}
	/* registers are 32 bits wide and read whole, as the spec requires */
	if (len == 4 && off % 4 == 0) {
		uint32_t v = reg_read(vd, off);

		memcpy(data, &v, 4);
	}
}

void virtio_mmio_write(struct virtio_dev *vd, uint64_t off, const uint8_t *data, unsigned len)
{
	uint32_t v;

	if (off >= VIRTIO_MMIO_CONFIG) {
		/* ember's devices have read-only configuration */
		pr_debug("%s: ignored a %u-byte configuration write at 0x%llx", vd->dev->ops->name,
			 len, (unsigned long long)off);
		return;
	}
	if (len != 4 || off % 4) {
		pr_debug("%s: ignored a %u-byte register write at 0x%llx", vd->dev->ops->name, len,
			 (unsigned long long)off);
		return;
	}
	memcpy(&v, data, 4);
	reg_write(vd, off, v);
}

/* ---- snapshot section: the transport's and the queues' fields ------------------------ */

static const struct {
	const char *name;
	size_t off;
	uint64_t max;
} transport_fields[] = {
#define F(f, m) { #f, offsetof(struct virtio_mmio_state, f), m }
	F(status, STATUS_VALID),
	F(device_features_sel, UINT32_MAX),
	F(driver_features_sel, UINT32_MAX),
	F(queue_sel, UINT32_MAX),
	F(interrupt_status, INT_VALID),
	F(config_generation, UINT32_MAX),
#undef F
};

static uint32_t *tfield(struct virtio_mmio_state *t, size_t i)
{
	return (uint32_t *)((uint8_t *)t + transport_fields[i].off);
}

int virtio_save(struct virtio_dev *vd, struct snap_device *sd, struct snap_err *se)
{
	char name[SNAP_DEV_NAME_MAX + 1];
	int r = snap_dev_put_u64(sd, "driver_features", vd->t.driver_features, se);

	for (size_t i = 0; !r && i < ARRAY_SIZE(transport_fields); i++)
		r = snap_dev_put_u64(sd, transport_fields[i].name, *tfield(&vd->t, i), se);
	for (unsigned q = 0; !r && q < vd->ops->nr_queues; q++) {
		const struct virtq_state *s = &vd->vq[q].s;
		const struct { const char *f; uint64_t v; } qf[] = {
			{ "size", s->size }, { "ready", s->ready }, { "desc", s->desc },
			{ "avail", s->avail }, { "used", s->used }, { "next_avail", s->next_avail },
			{ "next_used", s->next_used },
		};

		for (size_t i = 0; !r && i < ARRAY_SIZE(qf); i++) {
			snprintf(name, sizeof(name), "q%u_%s", q, qf[i].f);
			r = snap_dev_put_u64(sd, name, qf[i].v, se);
		}
	}
	return r;
}

/* Names the device and queue in front of the virtqueue library's message. */
static int queue_error(struct errbuf *eb, int r, const char *dev, unsigned q)
{
	char msg[sizeof(eb->msg)];

	snprintf(msg, sizeof(msg), "%s", eb->msg);
	return errbuf_set(eb, r, "device %s: queue %u: %s", dev, q, msg);
}

int virtio_decode(const struct snap_device *sd, const struct virtio_ops *ops,
		  struct virtio_mmio_state *t, struct virtq_state *qs, struct errbuf *eb)
{
	uint64_t offered = ops->features | (1ull << VIRTIO_F_VERSION_1) |
			   (1ull << VIRTIO_RING_F_INDIRECT_DESC);
	char name[SNAP_DEV_NAME_MAX + 1];
	uint64_t v = 0;
	int r;

	memset(t, 0, sizeof(*t));
	r = dev_get_u64(sd, "driver_features", UINT64_MAX, &t->driver_features, eb);
	for (size_t i = 0; !r && i < ARRAY_SIZE(transport_fields); i++) {
		r = dev_get_u64(sd, transport_fields[i].name, transport_fields[i].max, &v, eb);
		*tfield(t, i) = (uint32_t)v;
	}
	if (r)
		return r;
	if (t->status & ~STATUS_VALID)
		return errbuf_set(eb, -EINVAL, "device %s: status 0x%x has unknown bits", sd->name,
				  t->status);
	if (t->interrupt_status & ~INT_VALID)
		return errbuf_set(eb, -EINVAL, "device %s: interrupt_status 0x%x has unknown bits",
				  sd->name, t->interrupt_status);
	if ((t->status & VIRTIO_CONFIG_S_FEATURES_OK) && (t->driver_features & ~offered))
		return errbuf_set(eb, -EINVAL, "device %s: driver_features 0x%" PRIx64 " were never "
				  "offered (0x%" PRIx64 ")", sd->name, t->driver_features, offered);
	/* the transport refuses FEATURES_OK without it (write_status) */
	if ((t->status & VIRTIO_CONFIG_S_FEATURES_OK) &&
	    !(t->driver_features & (1ull << VIRTIO_F_VERSION_1)))
		return errbuf_set(eb, -EINVAL, "device %s: FEATURES_OK with driver_features 0x%"
				  PRIx64 ", without VERSION_1", sd->name, t->driver_features);
	if ((t->status & VIRTIO_CONFIG_S_DRIVER_OK) && !(t->status & VIRTIO_CONFIG_S_FEATURES_OK))
		return errbuf_set(eb, -EINVAL, "device %s: status 0x%x has DRIVER_OK without "
				  "FEATURES_OK", sd->name, t->status);
	for (unsigned q = 0; q < ops->nr_queues; q++) {
		const char *f[] = { "size", "ready", "desc", "avail", "used", "next_avail",
				    "next_used" };
		/* a queue not ready holds whatever the driver wrote: checked at QueueReady */
		const uint64_t max[] = { UINT16_MAX, 1, UINT64_MAX, UINT64_MAX, UINT64_MAX,
					 UINT16_MAX, UINT16_MAX };
		uint64_t val[7];

		for (size_t i = 0; i < ARRAY_SIZE(f); i++) {
			snprintf(name, sizeof(name), "q%u_%s", q, f[i]);
			r = dev_get_u64(sd, name, max[i], &val[i], eb);
			if (r)
				return r;
		}
		qs[q] = (struct virtq_state){ .size = (uint16_t)val[0], .ready = (uint8_t)val[1],
					      .desc = val[2], .avail = val[3], .used = val[4],
					      .next_avail = (uint16_t)val[5],
					      .next_used = (uint16_t)val[6] };
		r = virtq_state_check(&qs[q], ops->queue_max, eb);
		if (r)
			return queue_error(eb, r, sd->name, q);
	}
	return 0;
}

int virtio_check(const struct snap_state *st, const struct snap_device *sd,
		 const struct virtio_ops *ops, struct errbuf *eb)
{
	struct virtq_state qs[VIRTIO_MAX_QUEUES];
	struct mem_region regions[MEM_MAX_REGIONS];
	struct virtio_mmio_state t;
	struct guest_mem layout;
	int r = virtio_decode(sd, ops, &t, qs, eb);

	/* no layout: ember-snap's callers that hold a bare section (a state without
	 * regions never gets past the snapshot library's checks) */
	if (r || !st || !st->vm.nr_regions)
		return r;
	/* the snapshot library validated the regions; this only asks where RAM is */
	for (unsigned i = 0; i < st->vm.nr_regions && i < MEM_MAX_REGIONS; i++)
		regions[i] = (struct mem_region){ .gpa = st->vm.regions[i].gpa,
						  .size = st->vm.regions[i].size,
						  .offset = st->vm.regions[i].file_offset };
	r = mem_set_regions(&layout, regions, st->vm.nr_regions, st->memory.size, eb);
	for (unsigned q = 0; !r && q < ops->nr_queues; q++) {
		r = virtq_state_check_ram(&qs[q], &layout, eb);
		if (r)
			return queue_error(eb, r, sd->name, q);
	}
	return r;
}

int virtio_restore(struct virtio_dev *vd, const struct snap_device *sd, struct errbuf *eb)
{
	struct virtq_state qs[VIRTIO_MAX_QUEUES];
	struct virtio_mmio_state t;
	int r = virtio_decode(sd, vd->ops, &t, qs, eb);

	if (r)
		return r;
	queues_reset(vd);
	for (unsigned q = 0; q < vd->ops->nr_queues; q++) {
		vd->vq[q].indirect = t.driver_features & (1ull << VIRTIO_RING_F_INDIRECT_DESC);
		r = virtq_restore(&vd->vq[q], &qs[q], eb);
		if (r)
			return queue_error(eb, r, sd->name, q);
	}
	vd->t = t;
	return 0;
}

void virtio_post_restore(struct virtio_dev *vd)
{
	bool direct = vd->irq_direct;

	/* an interrupt the guest had not taken yet must reach it (Firecracker does too),
	 * and buffers a kick announced before the snapshot are looked at again */
	vd->irq_direct = true;
	if (vd->t.interrupt_status)
		irq_pulse(vd);
	vd->irq_direct = direct;
	for (unsigned q = 0; q < vd->ops->nr_queues; q++)
		if (vd->vq[q].s.ready)
			virtio_kick(vd, q);
}
