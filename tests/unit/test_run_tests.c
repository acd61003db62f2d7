/*
 * scripts/run-tests.sh reads Criterion's TAP reporter: fed stand-in test binaries
 * (shell scripts that write the TAP Criterion 2.4 writes to --tap=FILE), it must pass a
 * clean run, show skips loudly, and fail on a failed test or on a binary that stopped
 * before its plan was done, even when that binary exits 0.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testlib.h"

static char tmp[PATH_MAX];
static struct proc_result r;

static void init(void)
{
	ember_test_tmpdir(tmp, sizeof(tmp));
}

static void fini(void)
{
	proc_result_free(&r);
	ember_test_rmtree(tmp);
}

TestSuite(run_tests, .init = init, .fini = fini, .timeout = 60);

/* A stand-in test binary that writes `tap` to the file of its --tap=FILE argument and
 * exits with `status`. */
static const char *fake(const char *name, const char *tap, int status)
{
	char script[2048];
	const char *path;

	snprintf(script, sizeof(script),
		 "#!/bin/sh\nfor a; do case $a in --tap=*) f=${a#--tap=} ;; esac; done\n"
		 "cat >\"$f\" <<'EOF'\nTAP version 13\n%sEOF\nexit %d\n", tap, status);
	path = ember_test_write_file(tmp, name, script, strlen(script));
	cr_assert_eq(chmod(path, 0755), 0);
	return path;
}

static void run(const char *a, const char *b)
{
	char pa[PATH_MAX], pb[PATH_MAX];
	char *argv[] = { "scripts/run-tests.sh", pa, b ? pb : NULL, NULL };

	snprintf(pa, sizeof(pa), "%s", a);
	if (b)
		snprintf(pb, sizeof(pb), "%s", b);
	cr_assert_eq(proc_run(argv, 30000, &r), 0);
}

#define OK2 "1..2\n# Criterion v2.4.1\nok - s::a  (0.00s)\nok - s::b  (0.01s)\n"

Test(run_tests, a_clean_run_passes_with_counts_and_totals)
{
	run(fake("t_ok", OK2, 0), NULL);
	cr_assert_eq(r.status, 0, "%s", r.out);
	cr_assert(strstr(r.out, "== t_ok: 2 passed, 0 failed, 0 skipped ("), "%s", r.out);
	cr_assert(strstr(r.out, "tests: 2 passed, 0 failed, 0 skipped\nALL TESTS PASSED\n"), "%s",
		  r.out);
}

Test(run_tests, a_skip_is_shown_with_its_reason_and_loudly_at_the_end)
{
	run(fake("t_skip", "1..2\nok - s::a  (0.00s)\nok - s::kvm  # SKIP no /dev/kvm\n", 0), NULL);
	cr_assert_eq(r.status, 0, "%s", r.out);
	cr_assert(strstr(r.out, "   SKIP s::kvm: no /dev/kvm\n"), "%s", r.out);
	cr_assert(strstr(r.out, "!!!!!!!! SKIPPED TESTS in: t_skip"), "%s", r.out);
}

Test(run_tests, a_failed_test_fails_the_run_and_shows_its_message)
{
	run(fake("t_fail", "1..2\nok - s::a  (0.00s)\nnot ok - s::b  (0.00s)\n  ---\n"
			   "  assertions: 1\n  failures:\n  - t.c:3: |+\n      Assertion failed: boom\n"
			   "  ...\n", 1),
	    fake("t_ok", OK2, 0));
	cr_assert_eq(r.status, 1, "%s", r.out);
	cr_assert(strstr(r.out, "== t_fail: 1 passed, 1 failed, 0 skipped"), "%s", r.out);
	cr_assert(strstr(r.out, "FAIL s::b"), "%s", r.out);
	cr_assert(strstr(r.out, "Assertion failed: boom"), "%s", r.out);
	/* the next binary still runs */
	cr_assert(strstr(r.out, "== t_ok: 2 passed"), "%s", r.out);
	cr_assert(strstr(r.out, "TESTS FAILED"), "%s", r.out);
}

Test(run_tests, a_binary_that_stops_before_its_plan_fails_even_with_exit_0)
{
	run(fake("t_short", "1..3\nok - s::a  (0.00s)\n", 0), NULL);
	cr_assert_eq(r.status, 1, "%s", r.out);
	cr_assert(strstr(r.out, "1 results for a plan of 3 tests"), "%s", r.out);
}
