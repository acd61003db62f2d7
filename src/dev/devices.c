/*
 * The device table of a VM, in an explicit order: creation, bus registration,
 * snapshot save/restore and teardown all walk it in this order.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "../vmm.h"
#include "dev.h"

static int irq_set_level(void *opaque, unsigned gsi, int level)
{
	struct vm *vm = opaque;
	struct kvm_irq_level irq = { .irq = gsi, .level = (uint32_t)level };

	if (ioctl(vm->kvm.vm_fd, KVM_IRQ_LINE, &irq) < 0)
		return -errno;
	return 0;
}

static void i8042_reset(void *opaque)
{
	vm_request_stop(opaque, VM_STOP_RESET, 0, "guest reset (i8042)");
}

static int add_device(struct vm *vm, struct device *d, uint64_t base, uint64_t len,
		      struct errbuf *eb)
{
	int r;

	d->vm = vm;
	vm->devices[vm->nr_devices++] = d;
	r = bus_add(&vm->pio, base, len, d);
	if (r)
		return errbuf_set(eb, r, "device %s: ports 0x%llx+%llu: %s", d->ops->name,
				  (unsigned long long)base, (unsigned long long)len, strerror(-r));
	return 0;
}

int devices_create(struct vm *vm, struct errbuf *eb)
{
	struct serial_config sc = {
		.out_fd = vm->console_fd,
		.irq = { .set_level = irq_set_level, .opaque = vm, .gsi = SERIAL_COM1_IRQ },
	};
	struct i8042_config kc = { .reset = i8042_reset, .opaque = vm };
	struct device *d;
	int r;

	vm->devices = calloc(4, sizeof(*vm->devices));
	if (!vm->devices)
		return errbuf_set(eb, -ENOMEM, "out of memory");

	r = serial_create(&sc, &d);
	if (r)
		return errbuf_set(eb, r, "serial: %s", strerror(-r));
	vm->serial = d;
	r = add_device(vm, d, SERIAL_COM1_BASE, 8, eb);
	if (r)
		return r;

	r = i8042_create(&kc, &d);
	if (r)
		return errbuf_set(eb, r, "i8042: %s", strerror(-r));
	r = add_device(vm, d, I8042_DATA_PORT, 5, eb);
	if (r)
		return r;

	r = abi_dev_create(vm, &d);
	if (r)
		return errbuf_set(eb, r, "guest-abi: %s", strerror(-r));
	return add_device(vm, d, EMBER_PORT_BASE, EMBER_PORT_COUNT, eb);
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
	if (vm->serial)
		serial_flush(vm->serial);
	for (unsigned i = vm->nr_devices; i-- > 0;)
		if (vm->devices[i]->ops->destroy)
			vm->devices[i]->ops->destroy(vm->devices[i]);
	free(vm->devices);
	vm->devices = NULL;
	vm->nr_devices = 0;
	vm->serial = NULL;
}

/* ---- snapshot sections, in table order (codecs in dev_state.c) -------------- */

int devices_save(struct vm *vm, struct snap_state *st, struct errbuf *eb)
{
	struct snap_device *sd;
	struct snap_err se;
	struct serial_state ss;
	struct i8042_state ks;
	struct device *d;
	int r;

	d = devices_find(vm, "serial");
	serial_get_state(d, &ss);
	r = snap_state_add_device(st, "serial", SERIAL_STATE_VERSION, &sd, &se);
	if (!r)
		r = serial_encode(&ss, sd, &se);
	if (r)
		return from_snap_err(eb, r, &se);

	d = devices_find(vm, "i8042");
	i8042_get_state(d, &ks);
	r = snap_state_add_device(st, "i8042", I8042_STATE_VERSION, &sd, &se);
	if (!r)
		r = i8042_encode(&ks, sd, &se);
	if (r)
		return from_snap_err(eb, r, &se);

	r = snap_state_add_device(st, "guest-abi", ABI_STATE_VERSION, &sd, &se);
	if (!r)
		r = snap_dev_put_u64(sd, "ready_seen", vm->ready_seen, &se);
	if (r)
		return from_snap_err(eb, r, &se);
	return 0;
}

int devices_restore(struct vm *vm, const struct snap_state *st, struct errbuf *eb)
{
	struct serial_state ss;
	struct i8042_state ks;
	bool ready = false;
	int r;

	/* devices_check_state ran before KVM was touched; decoding again is cheap */
	r = serial_decode(snap_state_find_device(st, "serial"), &ss, eb);
	if (!r)
		r = serial_set_state(devices_find(vm, "serial"), &ss, eb);
	if (!r)
		r = i8042_decode(snap_state_find_device(st, "i8042"), &ks, eb);
	if (!r)
		r = i8042_set_state(devices_find(vm, "i8042"), &ks, eb);
	if (!r)
		r = abi_decode(snap_state_find_device(st, "guest-abi"), &ready, eb);
	if (r)
		return r;
	vm->ready_seen = ready;
	return 0;
}
