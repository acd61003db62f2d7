/*
 * Every memory backend restores every page: a golden snapshot of the sandbox is
 * restored under mmap, uffd (raw, lz4 written at snapshot time, lz4 from ember-snap
 * compress, each with and without a prefetched working set, and raw with pread) and
 * eager (raw, lz4). Each clone checksums its whole heap before and after serving a
 * request, and must give the golden VM's answers: the heap checksum the boot printed
 * and the served line the original VM printed after the snapshot.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "testlib.h"

/* 32 MiB of heap in 64 MiB of RAM: zero, record and random pages (the sandbox's mix). */
#define CMDLINE "heap=32M seed=11 ws=4M"
#define MEM_MIB 64

static char tmp[PATH_MAX];
static struct lazyt_golden g;

static void init(void)
{
	char dir[PATH_MAX];

	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(dir, tmp, "golden");
	lazyt_golden(&g, dir, CMDLINE, MEM_MIB, false);
}

static void init_lz4(void)
{
	char dir[PATH_MAX];

	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(dir, tmp, "golden-lz4");
	lazyt_golden(&g, dir, CMDLINE, MEM_MIB, true);
}

static void fini(void)
{
	if (tmp[0])
		ember_test_rmtree(tmp);
	tmp[0] = 0;
}

TestSuite(lazy_backends, .fini = fini, .timeout = 120);

static void expect_golden(const char *dir, const char *opts)
{
	struct proc_result r;
	char what[256];

	snprintf(what, sizeof(what), "restore %s", opts);
	lazyt_restore(&r, dir, opts, "verify serve verify exit");
	lazyt_assert_golden_answers(&r, &g, what);
	proc_result_free(&r);
}

/* A recording run (on-demand faults) that leaves ws.bin behind. */
static void record_ws(const char *dir)
{
	struct proc_result r;
	char served[sizeof(g.served)];

	lazyt_restore(&r, dir, "--mem-backend uffd --record-ws", "serve exit");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "recording run exited %d:\n%s", r.status, r.err);
	cr_assert_not_null(proc_find_line(r.out, "served ", served, sizeof(served)));
	cr_assert_str_eq(served, g.served);
	proc_result_free(&r);
}

/* The lz4 copy of the golden raw snapshot that ember-snap compress writes. */
static void compressed_copy(char *dst)
{
	struct proc_result r;

	snapt_join(dst, tmp, "compressed");
	snapt_tool(&r, SNAPT_RUN_MS, "compress", g.dir, dst, NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "ember-snap compress exited %d:\n%s", r.status, r.err);
	proc_result_free(&r);
	snapt_verify_ok(dst);
}

Test(lazy_backends, mmap_restores_the_golden_heap, .init = init)
{
	expect_golden(g.dir, "--mem-backend mmap");
}

Test(lazy_backends, uffd_on_demand_restores_the_golden_heap, .init = init)
{
	struct proc_result r;

	expect_golden(g.dir, "--mem-backend uffd");
	/* and every page went through the page server: no prefetch, faults only */
	lazyt_restore(&r, g.dir, "--mem-backend uffd", "verify exit");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_geq(lazyt_pager_stat(&r, "faults"), g.heap / 4096, "verify faults on every heap page");
	cr_assert_eq(lazyt_pager_stat(&r, "pages_prefetched"), 0);
	proc_result_free(&r);
}

Test(lazy_backends, uffd_with_pread_restores_the_golden_heap, .init = init)
{
	expect_golden(g.dir, "--mem-backend uffd --no-io-uring");
}

Test(lazy_backends, uffd_lz4_written_at_snapshot_restores_the_golden_heap, .init = init_lz4)
{
	expect_golden(g.dir, "--mem-backend uffd");
}

Test(lazy_backends, uffd_lz4_from_ember_snap_compress_restores_the_golden_heap, .init = init)
{
	char dir[PATH_MAX];

	compressed_copy(dir);
	expect_golden(dir, "--mem-backend uffd");
	/* auto picks uffd for lz4 */
	expect_golden(dir, "");
}

Test(lazy_backends, uffd_raw_with_prefetched_working_set_restores_the_golden_heap, .init = init)
{
	record_ws(g.dir);
	expect_golden(g.dir, "--mem-backend uffd --prefetch ws");
}

Test(lazy_backends, uffd_lz4_with_prefetched_working_set_restores_the_golden_heap,
     .init = init_lz4)
{
	record_ws(g.dir);
	expect_golden(g.dir, "--mem-backend uffd --prefetch ws");
}

Test(lazy_backends, ember_snap_compress_carries_the_working_set_over, .init = init)
{
	char dir[PATH_MAX];
	struct proc_result r;

	record_ws(g.dir);
	compressed_copy(dir);
	lazyt_restore(&r, dir, "--prefetch ws", "verify serve verify exit");
	lazyt_assert_golden_answers(&r, &g, "lz4 copy, --prefetch ws");
	cr_assert_gt(lazyt_pager_stat(&r, "pages_prefetched"), 0);
	proc_result_free(&r);
}

Test(lazy_backends, eager_raw_restores_the_golden_heap, .init = init)
{
	expect_golden(g.dir, "--mem-backend eager");
}

Test(lazy_backends, eager_lz4_restores_the_golden_heap, .init = init_lz4)
{
	expect_golden(g.dir, "--mem-backend eager");
}

/* ---- the last page of RAM ------------------------------------------------------------ */

#define EDGE_MEM_MIB 16

/* Where the sandbox's heap starts and where RAM ends, from the guest's own complaint
 * about a heap that does not fit (the image size decides the start). */
static void heap_bounds(uint64_t *start, uint64_t *ram_end)
{
	struct proc_result r;
	const char *s;
	unsigned long long a, b, e;

	ember_test_run(&r, SNAPT_RUN_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
		       "heap=32M", "--mem", "16", "--console", "stdio", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 3, "a 32 MiB heap in 16 MiB of RAM must fail the guest's check:\n%s",
		     r.err);
	s = strstr(r.err, "it needs [");
	cr_assert_not_null(s, "%s", r.err);
	cr_assert_eq(sscanf(s, "it needs [%llx, %llx) but RAM there ends at %llx", &a, &b, &e), 3,
		     "%s", r.err);
	*start = a;
	*ram_end = e;
	proc_result_free(&r);
}

/* The sandbox's choice for heap page idx (tests/guest/sandbox.c): h % 3 == 0 is zero. */
static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static bool page_is_zero_kind(uint64_t seed, uint64_t idx)
{
	return mix64(seed ^ mix64(idx)) % 3 == 0;
}

/* A golden snapshot whose heap ends at the last byte of RAM, its last page zero or not. */
static void edge_golden(bool last_page_zero, bool compress)
{
	uint64_t start, end, heap, seed = 1;
	char cmdline[128], dir[PATH_MAX];

	heap_bounds(&start, &end);
	cr_assert_eq(end, (uint64_t)EDGE_MEM_MIB << 20, "RAM is one region up to --mem");
	heap = end - start;
	while (page_is_zero_kind(seed, heap / 4096 - 1) != last_page_zero)
		seed++;
	snprintf(cmdline, sizeof(cmdline), "heap=%llu seed=%llu ws=%llu pattern=seq",
		 (unsigned long long)heap, (unsigned long long)seed, (unsigned long long)heap);
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(dir, tmp, "edge");
	lazyt_golden(&g, dir, cmdline, EDGE_MEM_MIB, compress);
	cr_assert_eq(g.heap_at + g.heap, g.mem, "the heap ends at the end of RAM");
}

/* The golden image's last page, as restored by no backend: straight from the raw file. */
static bool image_last_page_is_zero(void)
{
	char path[PATH_MAX];
	uint8_t *img;
	size_t len;
	bool zero = true;

	snapt_join(path, g.dir, "memory.raw");
	img = snapt_read_file(path, &len);
	cr_assert_eq(len, g.mem);
	for (size_t i = len - 4096; i < len; i++)
		zero &= img[i] == 0;
	free(img);
	return zero;
}

static void edge_all_backends(void)
{
	/* serve walks the heap in order up to its last page (ws = heap, pattern=seq) */
	expect_golden(g.dir, "--mem-backend uffd");
	expect_golden(g.dir, "--mem-backend mmap");
	expect_golden(g.dir, "--mem-backend eager");
}

Test(lazy_backends, heap_ending_at_the_last_page_of_ram_with_data_there)
{
	ember_test_require_kvm();
	edge_golden(false, false);
	cr_assert_not(image_last_page_is_zero(), "seed chosen for a non-zero last page");
	edge_all_backends();
}

Test(lazy_backends, heap_ending_at_the_last_page_of_ram_with_a_zero_page_there)
{
	ember_test_require_kvm();
	edge_golden(true, false);
	cr_assert(image_last_page_is_zero(), "seed chosen for a zero last page");
	edge_all_backends();
}

Test(lazy_backends, lz4_heap_ending_at_the_last_page_of_ram)
{
	ember_test_require_kvm();
	edge_golden(false, true);
	expect_golden(g.dir, "--mem-backend uffd");
	expect_golden(g.dir, "--mem-backend eager");
}
