/* Port bus: range bookkeeping and dispatch. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "vmm.h"
#include "dev/dev.h"

static struct device dev_a, dev_b;

Test(bus, finds_device_covering_access)
{
	struct bus b = { 0 };

	cr_assert_eq(bus_add(&b, 0x3f8, 8, &dev_a), 0);
	cr_assert_eq(bus_add(&b, 0x60, 5, &dev_b), 0);
	cr_assert_eq(bus_find(&b, 0x3f8, 1)->dev, &dev_a);
	cr_assert_eq(bus_find(&b, 0x3ff, 1)->dev, &dev_a);
	cr_assert_eq(bus_find(&b, 0x64, 1)->dev, &dev_b);
	cr_assert_eq(bus_find(&b, 0x60, 1)->base, 0x60);
}

Test(bus, misses_outside_ranges)
{
	struct bus b = { 0 };

	bus_add(&b, 0x3f8, 8, &dev_a);
	cr_assert_null(bus_find(&b, 0x3f7, 1));
	cr_assert_null(bus_find(&b, 0x400, 1));
	cr_assert_null(bus_find(&b, 0, 1));
	cr_assert_null(bus_find(&b, 0xffff, 1));
}

Test(bus, access_straddling_range_end_is_rejected)
{
	struct bus b = { 0 };

	bus_add(&b, 0x3f8, 8, &dev_a);
	cr_assert_null(bus_find(&b, 0x3fe, 4));
	cr_assert_not_null(bus_find(&b, 0x3fc, 4));
}

Test(bus, overlapping_ranges_refused)
{
	struct bus b = { 0 };

	cr_assert_eq(bus_add(&b, 0x100, 0x10, &dev_a), 0);
	cr_assert_eq(bus_add(&b, 0x10f, 1, &dev_b), -EBUSY);
	cr_assert_eq(bus_add(&b, 0xf8, 9, &dev_b), -EBUSY);
	cr_assert_eq(bus_add(&b, 0x100, 1, &dev_b), -EBUSY);
	cr_assert_eq(bus_add(&b, 0x110, 1, &dev_b), 0);
	cr_assert_eq(bus_add(&b, 0xff, 1, &dev_b), 0);
}

Test(bus, zero_length_and_wrapping_ranges_refused)
{
	struct bus b = { 0 };

	cr_assert_eq(bus_add(&b, 0x100, 0, &dev_a), -EINVAL);
	cr_assert_eq(bus_add(&b, UINT64_MAX, 2, &dev_a), -EINVAL);
}

Test(bus, keeps_ranges_sorted_whatever_the_insert_order)
{
	struct bus b = { 0 };
	uint64_t bases[] = { 0x500, 0x100, 0x300, 0x200, 0x400 };

	for (unsigned i = 0; i < 5; i++)
		cr_assert_eq(bus_add(&b, bases[i], 0x10, &dev_a), 0);
	for (unsigned i = 1; i < b.nr; i++)
		cr_assert_lt(b.ranges[i - 1].base, b.ranges[i].base);
	for (unsigned i = 0; i < 5; i++)
		cr_assert_eq(bus_find(&b, bases[i] + 3, 1)->base, bases[i]);
}

Test(bus, full_table_refuses_more)
{
	struct bus b = { 0 };

	for (unsigned i = 0; i < BUS_MAX_RANGES; i++)
		cr_assert_eq(bus_add(&b, i * 16, 16, &dev_a), 0);
	cr_assert_eq(bus_add(&b, 0x10000, 1, &dev_a), -ENOSPC);
}

/* dispatch through bus_pio with a recording device */
static uint64_t last_off;
static uint8_t last_byte;
static void rec_write(struct device *d, uint64_t off, const uint8_t *data, unsigned len)
{
	last_off = off;
	last_byte = data[0];
}
static void rec_read(struct device *d, uint64_t off, uint8_t *data, unsigned len)
{
	memset(data, (int)(0x40 + off), len);
}
static const struct dev_ops rec_ops = { .name = "rec", .read = rec_read, .write = rec_write };

Test(bus, pio_dispatch_passes_offset_and_unknown_ports_float_high)
{
	static struct vm vm;
	struct device d = { .ops = &rec_ops };
	uint8_t v = 0x5a;

	pthread_mutex_init(&d.lock, NULL);
	cr_assert_eq(bus_add(&vm.pio, 0x3f8, 8, &d), 0);
	bus_pio(&vm, 0x3fb, true, &v, 1);
	cr_assert_eq(last_off, 3);
	cr_assert_eq(last_byte, 0x5a);
	bus_pio(&vm, 0x3fd, false, &v, 1);
	cr_assert_eq(v, 0x45);
	bus_pio(&vm, 0x2f8, false, &v, 1);
	cr_assert_eq(v, 0xff);
}

Test(bus, mmio_dispatch_uses_the_mmio_bus_only)
{
	static struct vm vm;
	struct device d = { .ops = &rec_ops };
	uint8_t v[4] = { 0x11, 0x22, 0x33, 0x44 };

	pthread_mutex_init(&d.lock, NULL);
	cr_assert_eq(bus_add(&vm.mmio, 0xd0000000, 0x1000, &d), 0);
	bus_mmio(&vm, 0xd0000010, true, v, 4);
	cr_assert_eq(last_off, 0x10);
	cr_assert_eq(last_byte, 0x11);
	bus_mmio(&vm, 0xd0000fff, false, v, 1);
	cr_assert_eq(v[0], (uint8_t)(0x40 + 0xfff));
	/* the same address on the port bus, or an MMIO access off the device: nothing */
	bus_mmio(&vm, 0xd0001000, false, v, 4);
	cr_assert_eq(v[0], 0xff);
	cr_assert_eq(v[3], 0xff);
	bus_pio(&vm, 0x10, false, v, 1);
	cr_assert_eq(v[0], 0xff);
}
