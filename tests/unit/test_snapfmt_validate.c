/* Semantic validation: vCPU ids, memory layout, diff ranges, ids, device names. */
#include "test_snapfmt_fixture.h"

static struct snap_state st;
static struct snap_err err;

static void setup(void)
{
	memset(&err, 0, sizeof(err));
	fx_fill_state(&st);
}

static void teardown(void)
{
	snap_state_free(&st);
}

TestSuite(snapfmt_validate, .init = setup, .fini = teardown);

static void expect_invalid(const char *needle)
{
	cr_assert_lt(snap_state_validate(&st, &err), 0, "accepted; wanted: %s", needle);
	cr_assert(strstr(err.msg, needle), "message \"%s\" lacks \"%s\"", err.msg, needle);
}

Test(snapfmt_validate, fixture_is_valid)
{
	cr_assert_eq(snap_state_validate(&st, &err), 0, "%s", err.msg);
}

Test(snapfmt_validate, zero_vcpus)
{
	st.nr_vcpus = 0;
	expect_invalid("vcpus: 0 vCPUs (1..64 supported)");
	st.nr_vcpus = 2;
}

Test(snapfmt_validate, sixty_five_vcpus)
{
	cr_assert_eq(snap_state_set_vcpus(&st, 65, &err), -EINVAL);
	cr_assert_eq(snap_state_set_vcpus(&st, 64, &err), 0);
	for (uint32_t i = 0; i < 64; i++)
		cr_assert_eq(snap_vcpu_set_xsave(&st.vcpus[i], NULL, 4096, NULL), 0);
	cr_assert_eq(snap_state_validate(&st, &err), 0, "%s", err.msg);
}

Test(snapfmt_validate, sixty_five_vcpus_in_a_file)
{
	struct fx_tree t;

	fx_tree_from_state(&t, &st);
	fx_array_resize(&t, fx_at(&t.root, "vcpus"), 65);
	cr_assert_eq(fx_decode_tree(&t, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "vcpus: 65 entries exceed the maximum of 64");
	fx_tree_free(&t);
}

Test(snapfmt_validate, duplicate_vcpu_ids)
{
	st.vcpus[1].id = 0;
	expect_invalid("vcpus[1].id: duplicate vCPU id 0");
}

Test(snapfmt_validate, vcpu_id_out_of_range)
{
	st.vcpus[1].id = 2;
	expect_invalid("vcpus[1].id: 2 is out of range (2 vCPUs: ids must be 0..1)");
}

Test(snapfmt_validate, vcpu_ids_in_any_order)
{
	st.vcpus[0].id = 1;
	st.vcpus[1].id = 0;
	cr_assert_eq(snap_state_validate(&st, &err), 0, "%s", err.msg);
}

Test(snapfmt_validate, overlapping_guest_regions)
{
	st.vm.regions[1].gpa = 31 * SNAP_PAGE_SIZE;
	expect_invalid("vm.regions[1]: guest addresses 0x1f000+0x20000 overlap vm.regions[0]");
}

Test(snapfmt_validate, overlapping_file_ranges)
{
	st.vm.regions[1].file_offset = 16 * SNAP_PAGE_SIZE;
	expect_invalid("file range 0x10000+0x20000 overlaps vm.regions[0]");
}

Test(snapfmt_validate, region_outside_memory_size)
{
	st.vm.regions[1].file_offset = 33 * SNAP_PAGE_SIZE;
	expect_invalid("vm.regions[1]: file range 0x21000+0x20000 is outside memory.size 0x40000");
}

Test(snapfmt_validate, region_offset_overflow)
{
	st.vm.regions[1].file_offset = UINT64_MAX - 4095;
	expect_invalid("is outside memory.size");
}

Test(snapfmt_validate, region_beyond_2_pow_52)
{
	st.vm.regions[1].gpa = (1ull << 52) - SNAP_PAGE_SIZE;
	expect_invalid("goes beyond 2^52");
}

Test(snapfmt_validate, unaligned_region)
{
	st.vm.regions[0].size = 32 * SNAP_PAGE_SIZE - 1;
	expect_invalid("must all be multiples of 4096");
}

Test(snapfmt_validate, no_regions_or_too_many)
{
	st.vm.nr_regions = 0;
	expect_invalid("vm.regions: 0 regions (1..8 allowed)");
	st.vm.nr_regions = 9;
	expect_invalid("vm.regions: 9 regions (1..8 allowed)");
}

Test(snapfmt_validate, zero_size_region)
{
	st.vm.regions[1].size = 0;
	expect_invalid("vm.regions[1].size: zero");
}

Test(snapfmt_validate, memory_size_unaligned_or_zero)
{
	st.memory.size = FX_MEM_SIZE + 1;
	expect_invalid("memory.size");
	st.memory.size = 0;
	expect_invalid("memory.size");
}

Test(snapfmt_validate, page_size_other_than_4096)
{
	st.memory.page_size = 2 << 20;
	expect_invalid("memory.page_size: 2097152 (only 4096 is supported)");
}

Test(snapfmt_validate, memory_file_must_be_a_plain_name)
{
	snprintf(st.memory.file, sizeof(st.memory.file), "../etc/passwd");
	expect_invalid("memory.file: must be a plain file name");
	snprintf(st.memory.file, sizeof(st.memory.file), "..");
	expect_invalid("memory.file");
	st.memory.file[0] = '\0';
	expect_invalid("memory.file");
}

Test(snapfmt_validate, bad_ids)
{
	st.header.id[5] = 'G';
	expect_invalid("header.id: expected 32 lowercase hex characters");
}

Test(snapfmt_validate, full_snapshot_with_ranges_or_parent)
{
	struct snap_range r = { 0, 1 };

	cr_assert_eq(snap_memory_set_ranges(&st, &r, 1, NULL), 0);
	expect_invalid("memory.ranges: a full snapshot has no ranges");
	cr_assert_eq(snap_memory_set_ranges(&st, NULL, 0, NULL), 0);
	snprintf(st.header.parent, sizeof(st.header.parent), "%s", "fedcba9876543210fedcba9876543210");
	expect_invalid("header.parent: a full snapshot has no parent");
}

static void make_diff(const struct snap_range *r, uint32_t n)
{
	st.memory.kind = SNAP_MEM_DIFF;
	snprintf(st.header.parent, sizeof(st.header.parent), "%s", "fedcba9876543210fedcba9876543210");
	cr_assert_eq(snap_memory_set_ranges(&st, r, n, NULL), 0);
}

Test(snapfmt_validate, diff_needs_a_parent)
{
	make_diff(NULL, 0);
	cr_assert_eq(snap_state_validate(&st, &err), 0, "%s", err.msg);
	st.header.parent[0] = '\0';
	expect_invalid("header.parent: a diff snapshot needs the id of its base");
}

Test(snapfmt_validate, diff_ranges_must_be_sorted)
{
	struct snap_range r[] = { { 10, 2 }, { 3, 1 } };
	make_diff(r, 2);
	expect_invalid("memory.ranges[1]: starts at page 0x3");
}

Test(snapfmt_validate, diff_ranges_must_not_overlap_or_touch)
{
	struct snap_range overlap[] = { { 10, 5 }, { 12, 1 } };
	struct snap_range adjacent[] = { { 10, 5 }, { 15, 1 } };
	struct snap_range ok[] = { { 10, 5 }, { 16, 1 } };

	make_diff(overlap, 2);
	expect_invalid("memory.ranges[1]");
	make_diff(adjacent, 2);
	expect_invalid("non-adjacent");
	make_diff(ok, 2);
	cr_assert_eq(snap_state_validate(&st, &err), 0, "%s", err.msg);
}

Test(snapfmt_validate, diff_ranges_within_memory_size)
{
	struct snap_range last[] = { { 63, 1 } };
	struct snap_range past[] = { { 63, 2 } };
	struct snap_range wrap[] = { { 1, UINT64_MAX } };
	struct snap_range empty[] = { { 3, 0 } };

	make_diff(last, 1);
	cr_assert_eq(snap_state_validate(&st, &err), 0, "%s", err.msg);
	make_diff(past, 1);
	expect_invalid("extend past the memory size");
	make_diff(wrap, 1);
	expect_invalid("extend past the memory size");
	make_diff(empty, 1);
	expect_invalid("memory.ranges[0]: empty range");
}

Test(snapfmt_validate, duplicate_device_names)
{
	snprintf(st.devices[1].name, sizeof(st.devices[1].name), "serial");
	expect_invalid("devices[1].name: duplicate device name \"serial\"");
}

Test(snapfmt_validate, empty_device_name)
{
	st.devices[0].name[0] = '\0';
	expect_invalid("devices[0].name: empty name");
}

Test(snapfmt_validate, device_name_of_32_chars_in_a_file)
{
	struct fx_tree t;

	fx_tree_from_state(&t, &st);
	*fx_at(&t.root, "devices[0].name") = fx_str("abcdefghijabcdefghijabcdefghij12");
	cr_assert_eq(fx_decode_tree(&t, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "devices[0].name: name of 32 bytes (at most 31)");
	fx_tree_free(&t);
}

Test(snapfmt_validate, encode_refuses_an_invalid_state)
{
	uint8_t *buf = NULL;
	size_t len;

	st.vcpus[1].id = 0;
	cr_assert_eq(snap_state_encode(&st, &buf, &len, &err), -EINVAL);
	cr_assert_null(buf);
}

Test(snapfmt_validate, header_strings_must_be_printable)
{
	snprintf(st.header.cpu.vendor, sizeof(st.header.cpu.vendor), "Evil\x1b[2J");
	expect_invalid("must be printable ASCII");
}
