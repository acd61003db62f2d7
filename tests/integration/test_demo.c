/*
 * scripts/demo.sh (make demo), run small: it must succeed, print the exact ember
 * commands it runs (the boot with its --mem 256 --timings, real paths, no
 * placeholders), and keep its golden snapshot in the directory it names; a directory
 * that is not its own it must refuse to empty.
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
	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
}

static void fini(void)
{
	ember_test_kill_strays(tmp);
	proc_result_free(&r);
	ember_test_rmtree(tmp);
}

TestSuite(demo, .init = init, .fini = fini, .timeout = 300);

static void demo(const char *dir)
{
	char env[PATH_MAX + 16], build[PATH_MAX];
	const char *b = getenv("EMBER_BUILD");
	char *argv[] = { "/usr/bin/env", "DEMO_CLONES=3", "DEMO_POOL_N=20", env, build,
			 "scripts/demo.sh", NULL };

	snprintf(env, sizeof(env), "DEMO_DIR=%s", dir);
	snprintf(build, sizeof(build), "EMBER_BUILD=%s", b ? b : "build");
	cr_assert_eq(proc_run(argv, 240000, &r), 0);
}

Test(demo, prints_the_exact_commands_and_keeps_its_snapshot_where_it_says)
{
	char dir[PATH_MAX], want[2 * PATH_MAX], golden[PATH_MAX];
	const char *b = getenv("EMBER_BUILD");
	struct proc_result v = { 0 };

	snapt_join(dir, tmp, "demo");
	demo(dir);
	cr_assert_eq(r.status, 0, "demo exited %d\n%s\n%s", r.status, r.out, r.err);
	snprintf(want, sizeof(want),
		 "   $ %s/ember boot --kernel %s/guests/sandbox.elf --cmdline 'heap=64M seed=42' "
		 "--mem 256 --timings --snapshot-on-ready %s/golden --exit-after-snapshot\n",
		 b ? b : "build", b ? b : "build", dir);
	cr_assert(strstr(r.out, want), "no line\n%s\nin:\n%s", want, r.out);
	snprintf(want, sizeof(want),
		 "   $ %s/ember restore --snapshot %s/golden --timings --guest-cmd verify "
		 "--guest-cmd generation --guest-cmd exit\n", b ? b : "build", dir);
	cr_assert(strstr(r.out, want), "no line\n%s\nin:\n%s", want, r.out);
	cr_assert_null(strstr(r.out, " DIR "), "a placeholder in a command:\n%s", r.out);
	cr_assert_null(strstr(r.out, "SOCK"), "a placeholder in a command:\n%s", r.out);
	snprintf(want, sizeof(want), "kept in %s: the golden snapshots", dir);
	cr_assert(strstr(r.out, want), "%s", r.out);

	snapt_join(golden, dir, "golden");
	ember_test_run(&v, 60000, "restore", "--snapshot", golden, "--guest-cmd", "verify",
		       "--guest-cmd", "exit", "--console", "none", NULL);
	cr_assert_eq(v.status, 0, "the kept golden snapshot does not restore:\n%s", v.err);
	proc_result_free(&v);
}

Test(demo, refuses_to_empty_a_directory_that_is_not_its_own)
{
	char dir[PATH_MAX];
	struct stat st;

	snapt_join(dir, tmp, "precious");
	cr_assert_eq(mkdir(dir, 0755), 0);
	ember_test_write_file(dir, "data", "keep me", 7);
	demo(dir);
	cr_assert_eq(r.status, 1, "demo exited %d\n%s", r.status, r.out);
	cr_assert(strstr(r.err, "is not a demo directory"), "%s", r.err);
	snapt_join(dir, tmp, "precious/data");
	cr_assert_eq(stat(dir, &st), 0, "the demo deleted a file it does not own");
}
