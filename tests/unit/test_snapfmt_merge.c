/* Diff snapshots and merge: the merged memory is the base with exactly the diff's pages applied. */
#include <sys/mman.h>

#include "test_snapfmt_fixture.h"

#define PAGES (FX_MEM_SIZE / SNAP_PAGE_SIZE)

static char *tmp, *base_dir, *diff_dir, *out_dir;
static struct snap_state base, diff;
static struct snap_err err;
static uint8_t base_mem[FX_MEM_SIZE], diff_mem[FX_MEM_SIZE];

static void fill_page(uint8_t *mem, unsigned pg, uint8_t seed)
{
	for (uint32_t i = 0; i < SNAP_PAGE_SIZE; i++)
		mem[pg * SNAP_PAGE_SIZE + i] = (uint8_t)(seed + i * 3 + pg);
}

/* Base: data on even pages. Diff (ranges 1-2, 10, 62-63): new data, plus page 10 zeroed. */
static const struct snap_range ranges[] = { { 1, 2 }, { 10, 1 }, { 62, 2 } };

static void setup(void)
{
	tmp = fx_tmpdir();
	base_dir = fx_path(tmp, "base");
	diff_dir = fx_path(tmp, "diff");
	out_dir = fx_path(tmp, "out");
	memset(&err, 0, sizeof(err));
	memset(base_mem, 0, sizeof(base_mem));
	for (unsigned pg = 0; pg < PAGES; pg += 2)
		fill_page(base_mem, pg, 0x11);
	memcpy(diff_mem, base_mem, sizeof(diff_mem));
	fill_page(diff_mem, 1, 0x22);
	fill_page(diff_mem, 2, 0x33);
	memset(diff_mem + 10 * SNAP_PAGE_SIZE, 0, SNAP_PAGE_SIZE); /* data -> zero */
	fill_page(diff_mem, 62, 0x44);
	fill_page(diff_mem, 63, 0x55);

	fx_fill_state(&base);
	fx_write_snapshot(base_dir, &base, base_mem);
	fx_fill_state(&diff);
	cr_assert_eq(snap_new_id(diff.header.id, NULL), 0);
	diff.vcpus[0].regs.rip = 0xd1ff;
	diff.memory.kind = SNAP_MEM_DIFF;
	memcpy(diff.header.parent, base.header.id, sizeof(diff.header.parent));
	cr_assert_eq(snap_memory_set_ranges(&diff, ranges, 3, NULL), 0);
	fx_write_snapshot(diff_dir, &diff, diff_mem);
}

static void teardown(void)
{
	snap_state_free(&base);
	snap_state_free(&diff);
	fx_rm_rf(tmp);
	free(tmp);
	free(base_dir);
	free(diff_dir);
	free(out_dir);
}

TestSuite(snapfmt_merge, .init = setup, .fini = teardown);

static void assert_memory_equals(const char *dir, const uint8_t *want)
{
	struct snap_dir d;
	uint8_t *map;

	cr_assert_eq(snap_dir_open(dir, &d, &err), 0, "%s", err.msg);
	map = mmap(NULL, FX_MEM_SIZE, PROT_READ, MAP_PRIVATE, d.mem_fd, 0);
	cr_assert_neq(map, MAP_FAILED);
	for (unsigned pg = 0; pg < PAGES; pg++)
		cr_assert_eq(memcmp(map + pg * SNAP_PAGE_SIZE, want + pg * SNAP_PAGE_SIZE, SNAP_PAGE_SIZE), 0,
			     "page %u differs", pg);
	munmap(map, FX_MEM_SIZE);
	snap_dir_close(&d);
}

Test(snapfmt_merge, diff_file_holds_only_its_ranges)
{
	struct snap_dir d;
	uint8_t page[SNAP_PAGE_SIZE];

	cr_assert_eq(snap_dir_open(diff_dir, &d, &err), 0, "%s", err.msg);
	cr_assert_eq(d.state.memory.kind, SNAP_MEM_DIFF);
	cr_assert_eq(d.mem.logical, FX_MEM_SIZE);
	/* page 4 has base data but is not in the diff: a hole */
	cr_assert_eq(pread(d.mem_fd, page, sizeof(page), 4 * SNAP_PAGE_SIZE), (ssize_t)sizeof(page));
	for (size_t i = 0; i < sizeof(page); i++)
		cr_assert_eq(page[i], 0);
	cr_assert_eq(pread(d.mem_fd, page, sizeof(page), 63 * SNAP_PAGE_SIZE), (ssize_t)sizeof(page));
	cr_assert_eq(memcmp(page, diff_mem + 63 * SNAP_PAGE_SIZE, sizeof(page)), 0);
	snap_dir_close(&d);
}

Test(snapfmt_merge, merged_memory_is_base_with_diff_pages_applied)
{
	struct snap_write_stats ws;

	cr_assert_eq(snap_merge(base_dir, diff_dir, out_dir, &ws, &err), 0, "%s", err.msg);
	assert_memory_equals(out_dir, diff_mem);
	/* the 32 even pages, + new pages 1 and 63, - page 10 zeroed by the diff */
	cr_assert_eq(ws.pages_written, 33, "pages written: %lu", (unsigned long)ws.pages_written);
	cr_assert_eq(ws.zero_pages_skipped, PAGES - 33);
}

Test(snapfmt_merge, merged_state_is_the_diff_as_a_full_snapshot)
{
	struct snap_state m;

	cr_assert_eq(snap_merge(base_dir, diff_dir, out_dir, NULL, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_state_load(out_dir, &m, &err), 0, "%s", err.msg);
	cr_assert_eq(m.memory.kind, SNAP_MEM_FULL);
	cr_assert_eq(m.memory.nr_ranges, 0);
	cr_assert_str_eq(m.header.parent, "");
	cr_assert_str_neq(m.header.id, diff.header.id);
	cr_assert_str_neq(m.header.id, base.header.id);
	cr_assert_eq(m.vcpus[0].regs.rip, 0xd1ff);
	snap_state_free(&m);
}

Test(snapfmt_merge, refuses_a_diff_of_another_base)
{
	char *other = fx_path(tmp, "other");

	cr_assert_eq(snap_new_id(base.header.id, NULL), 0);
	fx_write_snapshot(other, &base, base_mem);
	cr_assert_eq(snap_merge(other, diff_dir, out_dir, NULL, &err), -EINVAL);
	cr_assert(strstr(err.msg, "is a diff of"), "%s", err.msg);
	cr_assert_eq(access(out_dir, F_OK), -1);
	free(other);
}

Test(snapfmt_merge, refuses_swapped_arguments)
{
	cr_assert_eq(snap_merge(diff_dir, base_dir, out_dir, NULL, &err), -EINVAL);
	cr_assert(strstr(err.msg, "is itself a diff"), "%s", err.msg);
}

Test(snapfmt_merge, refuses_different_layouts)
{
	char *other = fx_path(tmp, "other");

	base.vm.regions[1].gpa += 1ull << 32;
	fx_write_snapshot(other, &base, base_mem);
	cr_assert_eq(snap_merge(other, diff_dir, out_dir, NULL, &err), -EINVAL);
	cr_assert(strstr(err.msg, "vm.regions[1] differs"), "%s", err.msg);
	free(other);
}

Test(snapfmt_merge, refuses_an_existing_output)
{
	cr_assert_eq(mkdir(out_dir, 0755), 0);
	cr_assert_eq(snap_merge(base_dir, diff_dir, out_dir, NULL, &err), -EEXIST);
	cr_assert_eq(fx_count_entries(out_dir), 0);
}
