/* Guest memory layout and gpa_ptr(), the one bounds check for guest addresses. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "vmm.h"

Test(mem, small_ram_is_one_region_from_zero)
{
	struct guest_mem m;

	cr_assert_eq(mem_layout(&m, 256 * MiB, NULL), 0);
	cr_assert_eq(m.nr_regions, 1);
	cr_assert_eq(m.regions[0].gpa, 0);
	cr_assert_eq(m.regions[0].size, 256 * MiB);
	cr_assert_eq(m.size, 256 * MiB);
}

Test(mem, ram_above_hole_start_moves_to_4g)
{
	struct guest_mem m;

	cr_assert_eq(mem_layout(&m, 4 * GiB, NULL), 0);
	cr_assert_eq(m.nr_regions, 2);
	cr_assert_eq(m.regions[0].size, MEM_HOLE_START);
	cr_assert_eq(m.regions[1].gpa, MEM_HOLE_END);
	cr_assert_eq(m.regions[1].size, 4 * GiB - MEM_HOLE_START);
	cr_assert_eq(m.regions[1].offset, MEM_HOLE_START);
}

Test(mem, rejects_unaligned_and_zero_sizes)
{
	struct guest_mem m;
	struct errbuf eb;

	cr_assert_eq(mem_layout(&m, 0, &eb), -EINVAL);
	cr_assert_eq(mem_layout(&m, 4097, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "4097"));
}

static struct guest_mem fake_mem(uint64_t size, uint8_t *buf)
{
	struct guest_mem m;

	mem_layout(&m, size, NULL);
	m.base = buf;
	return m;
}

Test(mem, gpa_ptr_inside_ram)
{
	static uint8_t buf[64 * 1024];
	struct guest_mem m = fake_mem(sizeof(buf), buf);

	cr_assert_eq(gpa_ptr(&m, 0, 1), buf);
	cr_assert_eq(gpa_ptr(&m, 100, 10), buf + 100);
	cr_assert_eq(gpa_ptr(&m, sizeof(buf) - 1, 1), buf + sizeof(buf) - 1);
	cr_assert_eq(gpa_ptr(&m, 0, sizeof(buf)), buf);
}

Test(mem, gpa_ptr_rejects_ranges_past_the_end)
{
	static uint8_t buf[64 * 1024];
	struct guest_mem m = fake_mem(sizeof(buf), buf);

	cr_assert_null(gpa_ptr(&m, sizeof(buf), 1));
	cr_assert_null(gpa_ptr(&m, sizeof(buf) - 1, 2));
	cr_assert_null(gpa_ptr(&m, 0, sizeof(buf) + 1));
}

Test(mem, gpa_ptr_is_overflow_safe)
{
	static uint8_t buf[64 * 1024];
	struct guest_mem m = fake_mem(sizeof(buf), buf);

	cr_assert_null(gpa_ptr(&m, 16, UINT64_MAX));
	cr_assert_null(gpa_ptr(&m, UINT64_MAX, 2));
	cr_assert_null(gpa_ptr(&m, UINT64_MAX - 1, 4));
}

Test(mem, gpa_ptr_rejects_the_hole_and_region_crossings)
{
	struct guest_mem m;

	mem_layout(&m, 4 * GiB, NULL);
	m.base = (uint8_t *)0x10000000; /* never dereferenced */
	cr_assert_null(gpa_ptr(&m, MEM_HOLE_START, 1));
	cr_assert_null(gpa_ptr(&m, MEM_HOLE_END - 1, 1));
	cr_assert_null(gpa_ptr(&m, MEM_HOLE_START - 8, 16));
	cr_assert_eq(gpa_ptr(&m, MEM_HOLE_END, 8), m.base + MEM_HOLE_START);
	cr_assert_eq(mem_region_of(&m, MEM_HOLE_END + 5), 1);
	cr_assert_eq(mem_region_of(&m, MEM_HOLE_START), -1);
}

Test(mem, gpa_read_write_round_trip_and_fault)
{
	static uint8_t buf[8192];
	struct guest_mem m = fake_mem(sizeof(buf), buf);
	uint64_t v = 0x1122334455667788ull, w = 0;

	cr_assert_eq(gpa_write(&m, 4096, &v, sizeof(v)), 0);
	cr_assert_eq(gpa_read(&m, 4096, &w, sizeof(w)), 0);
	cr_assert_eq(w, v);
	cr_assert_eq(gpa_write(&m, 8190, &v, sizeof(v)), -EFAULT);
	cr_assert_eq(gpa_read(&m, 8190, &w, sizeof(w)), -EFAULT);
}

struct runs {
	uint64_t first[16], count[16];
	unsigned n;
};

static int note_run(void *opaque, uint64_t first, uint64_t count)
{
	struct runs *r = opaque;

	cr_assert_lt(r->n, 16);
	r->first[r->n] = first;
	r->count[r->n++] = count;
	return 0;
}

Test(mem, bitmap_runs_cross_words_and_stop_at_npages)
{
	uint64_t bm[3] = { 0 };
	struct runs r = { .n = 0 };

	bm[0] = 1ull | 1ull << 62 | 1ull << 63; /* 0; 62..65 across the word */
	bm[1] = 0x3;
	bm[2] = ~0ull;                          /* 128..: only up to npages */
	cr_assert_eq(bm_for_each_run(bm, 130, note_run, &r), 0);
	cr_assert_eq(r.n, 3);
	cr_assert_eq(r.first[0], 0);
	cr_assert_eq(r.count[0], 1);
	cr_assert_eq(r.first[1], 62);
	cr_assert_eq(r.count[1], 4);
	cr_assert_eq(r.first[2], 128);
	cr_assert_eq(r.count[2], 2);
}

static int stop_at_second(void *opaque, uint64_t first, uint64_t count)
{
	unsigned *calls = opaque;

	return ++*calls == 2 ? -EIO : 0;
}

Test(mem, bitmap_runs_stop_at_the_first_error)
{
	uint64_t bm[1] = { 0x5 | 1ull << 40 };
	unsigned calls = 0;

	cr_assert_eq(bm_for_each_run(bm, 64, stop_at_second, &calls), -EIO);
	cr_assert_eq(calls, 2);
}

Test(mem, empty_bitmap_has_no_runs)
{
	uint64_t bm[2] = { 0 };
	struct runs r = { .n = 0 };

	cr_assert_eq(bm_for_each_run(bm, 128, note_run, &r), 0);
	cr_assert_eq(r.n, 0);
}
