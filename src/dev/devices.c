/*
 * The device table: every device ember can give a guest, once, with where it lives.
 * Creation, bus registration, snapshot sections, `ember-snap verify`'s checks, start,
 * quiesce and teardown all walk it, in this order. Adding a device is its own file
 * plus one line here.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "../vmm.h"
#include "dev.h"

static bool want_vsock(const struct vm_config *cfg)
{
	return cfg->vsock_cid != 0;
}

#define VIRTIO_BASE(slot) (EMBER_VIRTIO_MMIO_BASE + (slot) * EMBER_VIRTIO_MMIO_SIZE)
#define VIRTIO_IRQ(slot)  (EMBER_VIRTIO_IRQ_BASE + (slot))

static const struct dev_slot dev_table[] = {
	{ &serial_ops, DEV_PIO, SERIAL_COM1_BASE, 8, SERIAL_COM1_IRQ, NULL, true },
	{ &i8042_ops, DEV_PIO, I8042_DATA_PORT, 5, 0, NULL, true },
	{ &guest_abi_ops, DEV_PIO, EMBER_PORT_BASE, EMBER_PORT_COUNT, 0, NULL, true },
	{ &virtio_rng_ops, DEV_MMIO, VIRTIO_BASE(EMBER_VIRTIO_RNG_SLOT), EMBER_VIRTIO_MMIO_SIZE,
	  VIRTIO_IRQ(EMBER_VIRTIO_RNG_SLOT), NULL, false },
	{ &virtio_vsock_ops, DEV_MMIO, VIRTIO_BASE(EMBER_VIRTIO_VSOCK_SLOT),
	  EMBER_VIRTIO_MMIO_SIZE, VIRTIO_IRQ(EMBER_VIRTIO_VSOCK_SLOT), want_vsock, false },
};

const struct dev_slot *dev_slot_find(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(dev_table); i++)
		if (!strcmp(dev_table[i].ops->name, name))
			return &dev_table[i];
	return NULL;
}

static int kvm_irq_line(void *opaque, unsigned gsi, int level)
{
	struct vm *vm = opaque;
	struct kvm_irq_level irq = { .irq = gsi, .level = (uint32_t)level };

	if (ioctl(vm->kvm.vm_fd, KVM_IRQ_LINE, &irq) < 0)
		return -errno;
	return 0;
}

void dev_request_reset(struct device *d, const char *why)
{
	if (d->vm)
		vm_request_stop(d->vm, VM_STOP_RESET, 0, "%s", why);
}

int dev_create(struct vm *vm, const struct dev_slot *slot, struct device **out,
	       struct errbuf *eb)
{
	const struct dev_ops *ops = slot->ops;
	struct device *d = calloc(1, sizeof(*d));
	int r;

	*out = NULL;
	if (!d)
		return errbuf_set(eb, -ENOMEM, "device %s: out of memory", ops->name);
	d->ops = ops;
	d->slot = slot;
	d->vm = vm;
	d->irq = (struct irq_line){ .set_level = kvm_irq_line, .opaque = vm, .gsi = slot->gsi };
	pthread_mutex_init(&d->lock, NULL);
	d->priv = ops->priv_size ? calloc(1, ops->priv_size) : NULL;
	if (ops->priv_size && !d->priv) {
		r = errbuf_set(eb, -ENOMEM, "device %s: out of memory", ops->name);
		goto fail;
	}
	r = ops->init(d, eb);
	if (r)
		goto fail;
	*out = d;
	return 0;
fail:
	pthread_mutex_destroy(&d->lock);
	free(d->priv);
	free(d);
	return r;
}

void dev_destroy(struct device *d)
{
	if (!d)
		return;
	if (d->ops->fini)
		d->ops->fini(d);
	pthread_mutex_destroy(&d->lock);
	free(d->priv);
	free(d);
}

static bool slot_present(struct vm *vm, const struct dev_slot *slot, const struct snap_state *st)
{
	if (st)
		return snap_state_find_device(st, slot->ops->name) != NULL;
	return !slot->wanted || slot->wanted(&vm->cfg);
}

int devices_create(struct vm *vm, const struct snap_state *st, struct errbuf *eb)
{
	struct device *d;
	int r;

	vm->devices = calloc(ARRAY_SIZE(dev_table), sizeof(*vm->devices));
	if (!vm->devices)
		return errbuf_set(eb, -ENOMEM, "out of memory");
	for (size_t i = 0; i < ARRAY_SIZE(dev_table); i++) {
		const struct dev_slot *slot = &dev_table[i];

		if (!slot_present(vm, slot, st))
			continue;
		r = dev_create(vm, slot, &d, eb);
		if (r)
			return r;
		vm->devices[vm->nr_devices++] = d;
		r = bus_add(slot->bus == DEV_PIO ? &vm->pio : &vm->mmio, slot->base, slot->len, d);
		if (r)
			return errbuf_set(eb, r, "device %s: %s 0x%llx+0x%llx: %s", slot->ops->name,
					  slot->bus == DEV_PIO ? "ports" : "MMIO",
					  (unsigned long long)slot->base, (unsigned long long)slot->len,
					  strerror(-r));
	}
	vm->serial = devices_find(vm, "serial");
	return 0;
}

struct device *devices_find(struct vm *vm, const char *name)
{
	for (unsigned i = 0; i < vm->nr_devices; i++)
		if (!strcmp(vm->devices[i]->ops->name, name))
			return vm->devices[i];
	return NULL;
}

void devices_destroy(struct vm *vm)
{
	for (unsigned i = vm->nr_devices; i-- > 0;)
		dev_destroy(vm->devices[i]);
	free(vm->devices);
	vm->devices = NULL;
	vm->nr_devices = 0;
	vm->serial = NULL;
}

int devices_start(struct vm *vm, struct errbuf *eb)
{
	int r;

	for (unsigned i = 0; i < vm->nr_devices; i++) {
		struct device *d = vm->devices[i];

		if (d->ops->start && (r = d->ops->start(d, eb)))
			return r;
	}
	return 0;
}

void devices_vcpu_write_fds(struct vm *vm, struct seccomp_fds *s)
{
	for (unsigned i = 0; i < vm->nr_devices; i++)
		if (vm->devices[i]->ops->write_fds)
			vm->devices[i]->ops->write_fds(vm->devices[i], s);
}

void devices_quiesce(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nr_devices; i++)
		if (vm->devices[i]->ops->quiesce)
			vm->devices[i]->ops->quiesce(vm->devices[i]);
}

void devices_unquiesce(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nr_devices; i++)
		if (vm->devices[i]->ops->unquiesce)
			vm->devices[i]->ops->unquiesce(vm->devices[i]);
}

void devices_post_restore(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nr_devices; i++)
		if (vm->devices[i]->ops->post_restore)
			vm->devices[i]->ops->post_restore(vm->devices[i]);
}

int devices_cmdline(struct vm *vm, char *buf, size_t len)
{
	size_t n = strlen(buf);

	for (unsigned i = 0; i < vm->nr_devices; i++) {
		const struct dev_slot *s = vm->devices[i]->slot;
		int w;

		/* every MMIO device is a virtio-mmio one */
		if (s->bus != DEV_MMIO)
			continue;
		w = snprintf(buf + n, len - n, "%svirtio_mmio.device=%lluK@0x%llx:%u", n ? " " : "",
			     (unsigned long long)(s->len >> 10), (unsigned long long)s->base, s->gsi);
		if (w < 0 || (size_t)w >= len - n)
			return -E2BIG;
		n += (size_t)w;
	}
	return 0;
}

/* ---- snapshot sections, in table order ------------------------------------------ */

int devices_save(struct vm *vm, struct snap_state *st, struct errbuf *eb)
{
	struct snap_device *sd;
	struct snap_err se;
	int r;

	for (unsigned i = 0; i < vm->nr_devices; i++) {
		struct device *d = vm->devices[i];

		r = snap_state_add_device(st, d->ops->name, d->ops->version, &sd, &se);
		if (!r)
			r = d->ops->save(d, sd, &se);
		if (r)
			return from_snap_err(eb, r, &se);
	}
	return 0;
}

int devices_restore(struct vm *vm, const struct snap_state *st, struct errbuf *eb)
{
	int r;

	for (unsigned i = 0; i < vm->nr_devices; i++) {
		struct device *d = vm->devices[i];

		r = d->ops->restore(d, snap_state_find_device(st, d->ops->name), eb);
		if (r)
			return r;
	}
	return 0;
}

static int check_section(const struct snap_state *st, const struct snap_device *sd,
			 struct errbuf *eb)
{
	const struct dev_slot *slot = dev_slot_find(sd->name);

	if (!slot)
		return errbuf_set(eb, -EINVAL, "device %s: unknown to this ember", sd->name);
	if (sd->version != slot->ops->version)
		return errbuf_set(eb, -EINVAL, "device %s: state version %u, this ember reads version %u",
				  sd->name, sd->version, slot->ops->version);
	return slot->ops->check(st, sd, eb);
}

int devices_check_state(const struct snap_state *st, struct errbuf *eb)
{
	int r;

	for (size_t i = 0; i < ARRAY_SIZE(dev_table); i++)
		if (dev_table[i].required && !snap_state_find_device(st, dev_table[i].ops->name))
			return errbuf_set(eb, -EINVAL, "device %s: missing from the snapshot",
					  dev_table[i].ops->name);
	for (uint32_t i = 0; i < st->nr_devices; i++) {
		r = check_section(st, &st->devices[i], eb);
		if (r)
			return r;
	}
	return 0;
}
