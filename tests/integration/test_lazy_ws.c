/*
 * Working sets: `ember restore --record-ws` writes ws.bin (the pages the guest first
 * touched until its first request's report), and a later `--prefetch ws` restore loads
 * them in bulk, so the same request takes far fewer faults and still gets the golden
 * answers. The flag combinations that cannot work are refused with a clear message.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testlib.h"

#define CMDLINE "heap=32M seed=21 ws=4M"
#define MEM_MIB 64

static char tmp[PATH_MAX];
static struct lazyt_golden g;

static void golden(bool compress)
{
	char dir[PATH_MAX];

	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(dir, tmp, "golden");
	lazyt_golden(&g, dir, CMDLINE, MEM_MIB, compress);
}

static void init(void)
{
	golden(false);
}

static void init_lz4(void)
{
	golden(true);
}

static void fini(void)
{
	if (tmp[0])
		ember_test_rmtree(tmp);
	tmp[0] = 0;
}

TestSuite(lazy_ws, .fini = fini, .timeout = 120);

/* The recording run: serve only, so the first request's pages are all it sees. */
static uint64_t record(void)
{
	struct proc_result r;
	char served[sizeof(g.served)], ws[PATH_MAX];
	uint64_t faults;

	snapt_join(ws, g.dir, "ws.bin");
	cr_assert_neq(access(ws, F_OK), 0, "a fresh snapshot has no working set");
	lazyt_restore(&r, g.dir, "--mem-backend uffd --record-ws", "serve verify exit");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "recording run exited %d:\n%s", r.status, r.err);
	cr_assert_not_null(proc_find_line(r.out, "served ", served, sizeof(served)), "%s", r.out);
	cr_assert_str_eq(served, g.served);
	cr_assert_eq(snapt_checksum(r.out, 0), g.checksum);
	cr_assert_eq(access(ws, F_OK), 0, "no %s after the recording run", ws);
	faults = lazyt_pager_stat(&r, "faults");
	proc_result_free(&r);
	return faults;
}

/* Faults of one on-demand or prefetching `serve` request (and pages prefetched). */
static uint64_t serve_faults(const char *opts, uint64_t *prefetched)
{
	struct proc_result r;
	char served[sizeof(g.served)];
	uint64_t faults;

	lazyt_restore(&r, g.dir, opts, "serve exit");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "%s exited %d:\n%s", opts, r.status, r.err);
	cr_assert_not_null(proc_find_line(r.out, "served ", served, sizeof(served)), "%s", r.out);
	cr_assert_str_eq(served, g.served, "%s: the request's answer", opts);
	faults = lazyt_pager_stat(&r, "faults");
	*prefetched = lazyt_pager_stat(&r, "pages_prefetched");
	proc_result_free(&r);
	return faults;
}

Test(lazy_ws, record_ws_writes_the_pages_of_the_first_request, .init = init)
{
	uint64_t n, in_heap = 0, ws_pages = g.ws / 4096, mem_pages = g.mem / 4096;
	uint64_t *pages, *seen = calloc(mem_pages / 64, sizeof(uint64_t));
	struct proc_result r;
	char line[256];

	cr_assert_not_null(seen);
	record();
	snapt_verify_ok(g.dir);
	snapt_tool(&r, SNAPT_RUN_MS, "info", g.dir, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_not_null(proc_find_line(r.out, "ws:", line, sizeof(line)), "%s", r.out);
	cr_assert(strstr(line, "ws.bin"), "ember-snap info shows the working set: %s", line);
	proc_result_free(&r);

	pages = lazyt_ws_load(g.dir, &n);
	for (uint64_t i = 0; i < n; i++) {
		cr_assert_lt(pages[i], mem_pages, "entry %llu is outside RAM", (unsigned long long)i);
		cr_assert_eq(seen[pages[i] / 64] >> (pages[i] % 64) & 1, 0, "page %llu twice",
			     (unsigned long long)pages[i]);
		seen[pages[i] / 64] |= 1ull << (pages[i] % 64);
		in_heap += pages[i] * 4096 >= g.heap_at && pages[i] * 4096 < g.heap_at + g.heap;
	}
	/* serve hashes ws bytes of distinct heap pages; the rest is code, stack, counters */
	cr_assert_eq(in_heap, ws_pages, "%llu heap pages recorded, the request touched %llu",
		     (unsigned long long)in_heap, (unsigned long long)ws_pages);
	cr_assert_leq(n - in_heap, 256, "%llu pages outside the heap: more than the guest's image",
		      (unsigned long long)(n - in_heap));
	free(pages);
	free(seen);
}

Test(lazy_ws, prefetched_restore_takes_far_fewer_faults, .init = init)
{
	uint64_t recorded = record(), n_ws, none, pf_pages;
	uint64_t on_demand = serve_faults("--mem-backend uffd", &none);
	uint64_t prefetched = serve_faults("--mem-backend uffd --prefetch ws", &pf_pages);

	free(lazyt_ws_load(g.dir, &n_ws));
	cr_assert_geq(on_demand, g.ws / 4096, "on demand, every page of the request faults");
	cr_assert_eq(none, 0);
	/* the guest runs while the prefetch goes on: what it reaches first faults */
	cr_assert_geq(pf_pages + prefetched, n_ws, "prefetch installed the working set (%llu of %llu)",
		      (unsigned long long)pf_pages, (unsigned long long)n_ws);
	cr_assert_leq(prefetched * 3, on_demand,
		      "with the working set prefetched: %llu faults, on demand %llu (recording %llu)",
		      (unsigned long long)prefetched, (unsigned long long)on_demand,
		      (unsigned long long)recorded);
}

Test(lazy_ws, lz4_prefetched_restore_takes_far_fewer_faults, .init = init_lz4)
{
	uint64_t on_demand, prefetched, none, pf_pages;

	record();
	on_demand = serve_faults("--mem-backend uffd", &none);
	prefetched = serve_faults("--mem-backend uffd --prefetch ws", &pf_pages);
	cr_assert_gt(on_demand, 0);
	cr_assert_gt(pf_pages, 0);
	cr_assert_leq(prefetched * 3, on_demand, "lz4 prefetched: %llu faults, on demand %llu",
		      (unsigned long long)prefetched, (unsigned long long)on_demand);
}

Test(lazy_ws, record_ws_never_replaces_an_existing_working_set, .init = init)
{
	struct proc_result r;
	char ws[PATH_MAX];
	uint8_t *before, *after;
	size_t len_before, len_after;

	record();
	snapt_join(ws, g.dir, "ws.bin");
	before = snapt_read_file(ws, &len_before);
	/* a second recording whose first request touches almost nothing */
	lazyt_restore(&r, g.dir, "--mem-backend uffd --record-ws", "exit");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "exit %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "ws.bin already exists"), "%s", r.err);
	cr_assert(strstr(r.err, "--force"), "the message says how to replace it:\n%s", r.err);
	proc_result_free(&r);
	after = snapt_read_file(ws, &len_after);
	cr_assert(len_after == len_before && !memcmp(before, after, len_before),
		  "the working set changed");
	free(before);
	free(after);
}

Test(lazy_ws, record_ws_with_force_replaces_the_working_set, .init = init)
{
	struct proc_result r;
	uint64_t n_first, n_second;

	record();
	free(lazyt_ws_load(g.dir, &n_first));
	lazyt_restore(&r, g.dir, "--mem-backend uffd --record-ws --force", "exit");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
	proc_result_free(&r);
	free(lazyt_ws_load(g.dir, &n_second));
	cr_assert_lt(n_second, n_first, "the new, smaller recording did not replace the old one "
		     "(%llu pages, then %llu)", (unsigned long long)n_first,
		     (unsigned long long)n_second);
	snapt_verify_ok(g.dir);
}

Test(lazy_ws, force_without_record_ws_is_a_usage_error, .init = init)
{
	struct proc_result r;

	lazyt_restore(&r, g.dir, "--mem-backend uffd --force", "exit");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 2, "exit %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "--force only applies to --record-ws"), "%s", r.err);
	proc_result_free(&r);
}

Test(lazy_ws, prefetch_without_a_working_set_is_a_clear_error, .init = init)
{
	struct proc_result r;

	lazyt_restore(&r, g.dir, "--mem-backend uffd --prefetch ws", "verify exit");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "exit %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "has no working set"), "%s", r.err);
	cr_assert(strstr(r.err, "--record-ws"), "the message says how to get one:\n%s", r.err);
	cr_assert_eq(snapt_count(r.out, "checksum="), 0, "the guest never ran");
	proc_result_free(&r);
}

Test(lazy_ws, record_ws_with_prefetch_is_a_usage_error, .init = init)
{
	struct proc_result r;

	record(); /* a working set exists: only the combination is wrong */
	lazyt_restore(&r, g.dir, "--record-ws --prefetch ws", "verify exit");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 2, "exit %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "--record-ws and --prefetch ws exclude each other"), "%s", r.err);
	proc_result_free(&r);
}

Test(lazy_ws, prefetch_or_record_with_mmap_or_eager_is_a_usage_error, .init = init)
{
	static const char *const opts[] = {
		"--mem-backend mmap --prefetch ws", "--mem-backend mmap --record-ws",
		"--mem-backend eager --prefetch ws", "--mem-backend eager --record-ws",
	};
	struct proc_result r;

	record();
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		lazyt_restore(&r, g.dir, opts[i], "verify exit");
		ember_test_assert_no_crash(&r);
		cr_assert_eq(r.status, 2, "%s: exit %d:\n%s", opts[i], r.status, r.err);
		cr_assert(strstr(r.err, "need --mem-backend uffd"), "%s:\n%s", opts[i], r.err);
		proc_result_free(&r);
	}
}

/* A damaged or foreign ws.bin: a warning naming it, then a restore without prefetch. */
static void assert_restores_without_prefetch(const char *dir, const char *why)
{
	struct proc_result r;

	lazyt_restore(&r, dir, "--mem-backend uffd --prefetch ws", "verify exit");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "warning: --prefetch ws:"), "no warning:\n%s", r.err);
	cr_assert(strstr(r.err, why), "the warning does not say '%s':\n%s", why, r.err);
	cr_assert(strstr(r.err, "restoring without prefetch"), "%s", r.err);
	cr_assert_eq(lazyt_pager_stat(&r, "pages_prefetched"), 0, "%s", r.err);
	cr_assert_eq(snapt_checksum(r.out, 0), g.checksum, "wrong memory after the restore");
	proc_result_free(&r);
}

Test(lazy_ws, a_damaged_working_set_is_a_warning_and_the_restore_goes_on, .init = init)
{
	char ws[PATH_MAX];
	uint8_t *bytes;
	size_t len;

	record();
	snapt_join(ws, g.dir, "ws.bin");
	bytes = snapt_read_file(ws, &len);
	cr_assert_gt(len, 72);
	bytes[len - 1] ^= 0x40; /* a page index: the CRC no longer matches */
	ember_test_write_file(g.dir, "ws.bin", bytes, len);
	free(bytes);
	assert_restores_without_prefetch(g.dir, "CRC");
}

Test(lazy_ws, a_working_set_from_another_snapshot_is_a_warning, .init = init)
{
	struct lazyt_golden other;
	struct proc_result r;
	char dir[PATH_MAX], from[PATH_MAX];
	uint8_t *ws;
	size_t len;

	record();
	/* same guest, same RAM size: only the id tells the recordings apart */
	snapt_join(dir, tmp, "other");
	lazyt_golden(&other, dir, CMDLINE, MEM_MIB, false);
	snapt_join(from, g.dir, "ws.bin");
	ws = snapt_read_file(from, &len);
	ember_test_write_file(dir, "ws.bin", ws, len);
	free(ws);
	lazyt_restore(&r, dir, "--mem-backend uffd --prefetch ws", "verify exit");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "belongs to another snapshot"), "%s", r.err);
	cr_assert(strstr(r.err, "restoring without prefetch"), "%s", r.err);
	cr_assert_eq(lazyt_pager_stat(&r, "pages_prefetched"), 0, "%s", r.err);
	cr_assert_eq(snapt_checksum(r.out, 0), other.checksum);
	proc_result_free(&r);
}
