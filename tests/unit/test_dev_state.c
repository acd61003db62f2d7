/* Device state <-> snapshot sections: round trip and validation of every device. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "testlib.h"
#include "dev/dev.h"

/* A VM shell with the devices a boot would give it, from the real table. */
static struct vm *fake_vm(void)
{
	struct vm *vm = devt_vm(-1);
	struct errbuf eb = { "" };

	cr_assert_eq(devices_create(vm, NULL, &eb), 0, "%s", eb.msg);
	for (unsigned i = 0; i < vm->nr_devices; i++)
		vm->devices[i]->irq.set_level = NULL; /* no KVM here */
	return vm;
}

static void free_vm(struct vm *vm)
{
	devices_destroy(vm);
	devt_vm_free(vm);
}

static void out8(struct device *d, uint64_t off, uint8_t v)
{
	d->ops->write(d, off, &v, 1);
}

static struct snap_state saved_from_busy_vm(struct vm **vmp)
{
	struct vm *vm = fake_vm();
	struct snap_state st = { 0 };
	struct errbuf eb;

	out8(vm->devices[0], 3, 0x03);  /* LCR 8N1 */
	out8(vm->devices[0], 7, 0x5a);  /* scratch */
	out8(vm->devices[0], 2, 0x07);  /* FIFO on + clear */
	out8(vm->devices[0], 1, 0x01);  /* IER: RX data interrupts */
	cr_assert_eq(serial_input(vm->devices[0], (const uint8_t *)"hey", 3), 3);
	out8(vm->devices[1], 4, 0xaa);  /* i8042 self-test: queues 0x55 */
	vm->ready_seen = true;
	cr_assert_eq(devices_save(vm, &st, &eb), 0, "%s", eb.msg);
	*vmp = vm;
	return st;
}

Test(dev_state, round_trip_restores_identical_device_state)
{
	struct vm *a, *b = fake_vm();
	struct snap_state st = saved_from_busy_vm(&a);
	struct serial_state sa, sb;
	struct i8042_state ka, kb;
	struct errbuf eb;

	cr_assert_eq(st.nr_devices, 4, "serial, i8042, guest-abi, virtio-rng");
	cr_assert_eq(devices_check_state(&st, &eb), 0, "%s", eb.msg);
	cr_assert_eq(devices_restore(b, &st, &eb), 0, "%s", eb.msg);
	serial_get_state(a->devices[0], &sa);
	serial_get_state(b->devices[0], &sb);
	cr_assert_eq(memcmp(&sa, &sb, sizeof(sa)), 0);
	cr_assert_eq(sb.rx_len, 3);
	i8042_get_state(a->devices[1], &ka);
	i8042_get_state(b->devices[1], &kb);
	cr_assert_eq(memcmp(&ka, &kb, sizeof(ka)), 0);
	cr_assert(b->ready_seen);
	snap_state_free(&st);
	free_vm(a);
	free_vm(b);
}

static struct snap_dev_field *field(struct snap_state *st, const char *dev, const char *name)
{
	struct snap_device *d = snap_state_find_device(st, dev);

	for (uint32_t i = 0; d && i < d->nr_fields; i++)
		if (!strcmp(d->fields[i].name, name))
			return &d->fields[i];
	cr_assert_fail("no field %s.%s", dev, name);
	return NULL;
}

static void expect_rejected(struct snap_state *st, const char *needle)
{
	struct errbuf eb;

	cr_assert_lt(devices_check_state(st, &eb), 0, "accepted; wanted '%s'", needle);
	cr_assert(strstr(eb.msg, needle), "message '%s' lacks '%s'", eb.msg, needle);
}

Test(dev_state, rejects_serial_rx_len_past_fifo)
{
	struct vm *vm;
	struct snap_state st = saved_from_busy_vm(&vm);

	field(&st, "serial", "rx_len")->u64 = 200;
	expect_rejected(&st, "rx_len");
	snap_state_free(&st);
	free_vm(vm);
}

Test(dev_state, rejects_serial_fifo_length_mismatch)
{
	struct vm *vm;
	struct snap_state st = saved_from_busy_vm(&vm);

	field(&st, "serial", "rx_len")->u64 = 2;
	expect_rejected(&st, "rx_fifo holds 3 bytes but rx_len is 2");
	snap_state_free(&st);
	free_vm(vm);
}

Test(dev_state, rejects_register_value_out_of_byte_range)
{
	struct vm *vm;
	struct snap_state st = saved_from_busy_vm(&vm);

	field(&st, "serial", "ier")->u64 = 300;
	expect_rejected(&st, "ier");
	snap_state_free(&st);
	free_vm(vm);
}

Test(dev_state, rejects_i8042_out_len_past_queue)
{
	struct vm *vm;
	struct snap_state st = saved_from_busy_vm(&vm);

	field(&st, "i8042", "out_len")->u64 = 9;
	expect_rejected(&st, "out");
	snap_state_free(&st);
	free_vm(vm);
}

Test(dev_state, rejects_newer_device_version)
{
	struct vm *vm;
	struct snap_state st = saved_from_busy_vm(&vm);

	snap_state_find_device(&st, "i8042")->version = 2;
	expect_rejected(&st, "i8042: state version 2");
	snap_state_free(&st);
	free_vm(vm);
}

Test(dev_state, rejects_missing_device)
{
	struct vm *vm;
	struct snap_state st = saved_from_busy_vm(&vm);

	strcpy(snap_state_find_device(&st, "guest-abi")->name, "guest-abx");
	expect_rejected(&st, "guest-abi: missing");
	snap_state_free(&st);
	free_vm(vm);
}

Test(dev_state, rejects_unknown_device)
{
	struct vm *vm;
	struct snap_state st = saved_from_busy_vm(&vm);
	struct snap_device *d;
	struct snap_err se;

	cr_assert_eq(snap_state_add_device(&st, "virtio-net", 1, &d, &se), 0);
	expect_rejected(&st, "virtio-net: unknown");
	snap_state_free(&st);
	free_vm(vm);
}
