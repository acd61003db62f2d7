/* Generic device state helpers: put on save, get with range checks on restore. */
#include "test_snapfmt_fixture.h"

static struct snap_state st;
static struct snap_err err;
static struct snap_device *dev;

static void setup(void)
{
	memset(&err, 0, sizeof(err));
	cr_assert_eq(snap_state_init(&st, NULL), 0);
	cr_assert_eq(snap_state_add_device(&st, "serial", 2, &dev, NULL), 0);
	cr_assert_eq(snap_dev_put_u64(dev, "ier", 0x0f, NULL), 0);
	cr_assert_eq(snap_dev_put_bin(dev, "rx_fifo", "abc", 3, NULL), 0);
}

static void teardown(void)
{
	snap_state_free(&st);
}

TestSuite(snapfmt_dev, .init = setup, .fini = teardown);

Test(snapfmt_dev, get_returns_what_was_put)
{
	const uint8_t *p;
	uint32_t len;
	uint64_t v;

	cr_assert_eq(snap_dev_get_u64(dev, "ier", 0xff, &v, &err), 0, "%s", err.msg);
	cr_assert_eq(v, 0x0f);
	cr_assert_eq(snap_dev_get_bin(dev, "rx_fifo", 64, &p, &len, &err), 0, "%s", err.msg);
	cr_assert_eq(len, 3);
	cr_assert_eq(memcmp(p, "abc", 3), 0);
}

Test(snapfmt_dev, missing_field_names_device_and_field)
{
	uint64_t v;

	cr_assert_eq(snap_dev_get_u64(dev, "lcr", 0xff, &v, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "device serial: field lcr: missing");
}

Test(snapfmt_dev, wrong_type_names_device_and_field)
{
	const uint8_t *p;
	uint32_t len;
	uint64_t v;

	cr_assert_eq(snap_dev_get_u64(dev, "rx_fifo", 0xff, &v, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "device serial: field rx_fifo: expected unsigned integer, got bin");
	cr_assert_eq(snap_dev_get_bin(dev, "ier", 64, &p, &len, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "device serial: field ier: expected bin, got unsigned integer");
}

Test(snapfmt_dev, out_of_range_value_and_length)
{
	const uint8_t *p;
	uint32_t len;
	uint64_t v = 77;

	cr_assert_eq(snap_dev_get_u64(dev, "ier", 0x7, &v, &err), -ERANGE);
	cr_assert_str_eq(err.msg, "device serial: field ier: 15 exceeds the maximum 7");
	cr_assert_eq(v, 77, "output written on failure");
	cr_assert_eq(snap_dev_get_bin(dev, "rx_fifo", 2, &p, &len, &err), -ERANGE);
	cr_assert_str_eq(err.msg, "device serial: field rx_fifo: 3 bytes exceed the maximum 2");
}

Test(snapfmt_dev, missing_device_is_named)
{
	const struct snap_device *d;

	cr_assert_eq(snap_state_get_device(&st, "virtio-blk0", &d, &err), -ENOENT);
	cr_assert_str_eq(err.msg, "device virtio-blk0: missing from the snapshot");
	cr_assert_eq(snap_state_get_device(&st, "serial", &d, &err), 0);
	cr_assert_eq(d, dev);
}

Test(snapfmt_dev, duplicate_device_or_field_is_refused)
{
	cr_assert_eq(snap_state_add_device(&st, "serial", 1, NULL, &err), -EEXIST);
	cr_assert_eq(snap_dev_put_u64(dev, "ier", 1, &err), -EEXIST);
	cr_assert_str_eq(err.msg, "device serial: field ier put twice");
}

Test(snapfmt_dev, names_are_limited_to_31_identifier_bytes)
{
	cr_assert_eq(snap_state_add_device(&st, "abcdefghijabcdefghijabcdefghij12", 1, NULL, &err), -EINVAL);
	cr_assert_eq(snap_state_add_device(&st, "", 1, NULL, &err), -EINVAL);
	cr_assert_eq(snap_state_add_device(&st, "bad name", 1, NULL, &err), -EINVAL);
	cr_assert(strstr(err.msg, "0x20"), "%s", err.msg);
	cr_assert_eq(snap_dev_put_u64(dev, "new\nline", 1, &err), -EINVAL);
	cr_assert_eq(snap_state_add_device(&st, "abcdefghijabcdefghijabcdefghij1", 1, NULL, &err), 0);
}

Test(snapfmt_dev, bin_over_64_kib_is_refused)
{
	static uint8_t big[SNAP_DEV_BIN_MAX + 1];

	cr_assert_eq(snap_dev_put_bin(dev, "big", big, sizeof(big), &err), -EINVAL);
	cr_assert_eq(snap_dev_put_bin(dev, "big", big, SNAP_DEV_BIN_MAX, &err), 0);
}

Test(snapfmt_dev, device_pointers_stay_valid_as_devices_are_added)
{
	struct snap_device *first = dev, *d;
	char name[16];

	for (int i = 1; i < SNAP_MAX_DEVICES; i++) {
		snprintf(name, sizeof(name), "dev%d", i);
		cr_assert_eq(snap_state_add_device(&st, name, 1, &d, &err), 0, "%s", err.msg);
	}
	cr_assert_eq(snap_state_add_device(&st, "one-too-many", 1, &d, &err), -ENOSPC);
	cr_assert_eq(snap_dev_put_u64(first, "after", 5, &err), 0);
	cr_assert_eq(snap_state_find_device(&st, "serial"), first);
}

Test(snapfmt_dev, many_fields_survive_growth)
{
	char name[16];
	uint64_t v;

	for (int i = 0; i < SNAP_DEV_MAX_FIELDS - 2; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		cr_assert_eq(snap_dev_put_u64(dev, name, (uint64_t)i * 3, &err), 0, "%s", err.msg);
	}
	cr_assert_eq(snap_dev_put_u64(dev, "overflow", 1, &err), -ENOSPC);
	cr_assert_eq(snap_dev_get_u64(dev, "f200", UINT64_MAX, &v, &err), 0);
	cr_assert_eq(v, 600);
}
