/*
 * The page server's environment: userfaultfd or io_uring taken away by a seccomp
 * filter (as a container runtime's profile would), and a SIGTERM that arrives while
 * the guest is blocked in faults. Without userfaultfd the uffd backend cannot work
 * and says so; without io_uring it reads with pread (documented fallback) and every
 * page is still right; a SIGTERM ends the VM promptly with the signal's status.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "testlib.h"

#define CMDLINE "heap=32M seed=41 ws=4M"
#define MEM_MIB 64

static char tmp[PATH_MAX];
static struct lazyt_golden g;

static void golden(bool compress, const char *cmdline, unsigned mem_mib)
{
	char dir[PATH_MAX];

	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(dir, tmp, "golden");
	lazyt_golden(&g, dir, cmdline, mem_mib, compress);
}

static void init(void)
{
	golden(false, CMDLINE, MEM_MIB);
}

static void init_lz4(void)
{
	golden(true, CMDLINE, MEM_MIB);
}

static void fini(void)
{
	if (tmp[0])
		ember_test_rmtree(tmp);
	tmp[0] = 0;
}

TestSuite(lazy_env, .fini = fini, .timeout = 120);

Test(lazy_env, uffd_without_userfaultfd_fails_naming_it, .init = init)
{
	struct proc_result r;

	lazyt_restore_denied(&r, LAZYT_DENY_USERFAULTFD, g.dir, "--mem-backend uffd", "verify exit");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "exit %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "userfaultfd: Operation not permitted"), "%s", r.err);
	cr_assert(strstr(r.err, "/dev/userfaultfd"), "both ways were tried:\n%s", r.err);
	cr_assert_eq(snapt_count(r.out, "checksum="), 0);
	proc_result_free(&r);
}

Test(lazy_env, lz4_snapshot_without_userfaultfd_fails_naming_it, .init = init_lz4)
{
	struct proc_result r;

	/* the default backend for lz4 is uffd; mmap cannot map chunks */
	lazyt_restore_denied(&r, LAZYT_DENY_USERFAULTFD, g.dir, "", "verify exit");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "exit %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "userfaultfd"), "%s", r.err);
	proc_result_free(&r);
}

Test(lazy_env, mmap_and_eager_need_no_userfaultfd, .init = init)
{
	struct proc_result r;

	lazyt_restore_denied(&r, LAZYT_DENY_USERFAULTFD, g.dir, "", "verify serve verify exit");
	lazyt_assert_golden_answers(&r, &g, "default backend (mmap) without userfaultfd");
	proc_result_free(&r);
	lazyt_restore_denied(&r, LAZYT_DENY_USERFAULTFD, g.dir, "--mem-backend eager",
			     "verify serve verify exit");
	lazyt_assert_golden_answers(&r, &g, "eager without userfaultfd");
	proc_result_free(&r);
}

/* The filter itself: without it the same restore reads through io_uring. */
static void expect_pread_fallback(const char *opts)
{
	struct proc_result r;
	char what[128];

	snprintf(what, sizeof(what), "%s without io_uring", opts);
	lazyt_restore_denied(&r, LAZYT_DENY_IO_URING, g.dir, opts, "verify serve verify exit");
	lazyt_assert_golden_answers(&r, &g, what);
	cr_assert(strstr(r.err, "io_uring unavailable"), "%s: a warning says so:\n%s", what, r.err);
	cr_assert(strstr(r.err, "ember-pager io=pread "), "%s:\n%s", what, r.err);
	cr_assert_gt(lazyt_pager_stat(&r, "bytes_read"), 0);
	proc_result_free(&r);

	lazyt_restore(&r, g.dir, opts, "verify exit");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.err, "ember-pager io=io_uring "), "unfiltered: %s", r.err);
	proc_result_free(&r);
}

Test(lazy_env, uffd_without_io_uring_falls_back_to_pread, .init = init)
{
	expect_pread_fallback("--mem-backend uffd");
}

Test(lazy_env, lz4_without_io_uring_falls_back_to_pread, .init = init_lz4)
{
	expect_pread_fallback("--mem-backend uffd");
}

Test(lazy_env, prefetch_without_io_uring_falls_back_to_pread, .init = init)
{
	struct proc_result r;

	lazyt_restore(&r, g.dir, "--record-ws", "serve exit");
	cr_assert_eq(r.status, 0, "recording run:\n%s", r.err);
	proc_result_free(&r);
	expect_pread_fallback("--prefetch ws");
	lazyt_restore_denied(&r, LAZYT_DENY_IO_URING, g.dir, "--prefetch ws", "serve exit");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_gt(lazyt_pager_stat(&r, "pages_prefetched"), 0);
	proc_result_free(&r);
}

/* ---- SIGTERM while faults are pending ------------------------------------------------ */

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Signals ember once the guest is inside a request that faults on every page. */
static void sigterm_during_serve(const char *opts)
{
	struct timespec settle = { 0, 30 * 1000 * 1000 };
	struct proc_result r;
	struct proc *p;
	uint64_t t0, faults;

	/* generation prints at once; serve then walks the whole heap, page by page */
	p = lazyt_restore_start(g.dir, opts, "generation serve exit");
	cr_assert(proc_wait_output(p, "generation=", SNAPT_RUN_MS), "the guest never ran");
	nanosleep(&settle, NULL);
	t0 = mono_ms();
	cr_assert_eq(kill(proc_pid(p), SIGTERM), 0);
	cr_assert_eq(proc_finish(p, 10000, &r), 0);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 143, "%s: exit %d\n%s", opts, r.status, r.err);
	cr_assert_lt(mono_ms() - t0, 2000, "%s: %llu ms from SIGTERM to exit", opts,
		     (unsigned long long)(mono_ms() - t0));
	/* the signal came mid-request: it never answered, and it had faulted */
	cr_assert_eq(snapt_count(r.out, "served "), 0,
		     "%s: the request finished before the signal; make the heap larger:\n%s", opts,
		     r.out);
	faults = lazyt_pager_stat(&r, "faults");
	cr_assert_gt(faults, 0);
	cr_assert_lt(faults, g.heap / 4096);
	proc_result_free(&r);
}

static void init_big_ws(void)
{
	/* the request touches the whole heap: ~16k faults, ~0.5 s here */
	golden(false, "heap=64M seed=43 ws=64M", 128);
}

Test(lazy_env, sigterm_while_faults_are_pending_exits_143_promptly, .init = init_big_ws)
{
	sigterm_during_serve("--mem-backend uffd");
}

Test(lazy_env, sigterm_while_pread_faults_are_pending_exits_143_promptly, .init = init_big_ws)
{
	sigterm_during_serve("--mem-backend uffd --no-io-uring");
}
