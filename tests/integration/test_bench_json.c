/*
 * bench/pager_micro's --json goes through ember's JSON writer: a snapshot directory whose
 * name needs escaping comes out as the same string (the pasted JSON of before was
 * invalid), with every result the memory section reads.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	proc_result_free(&r);
	ember_test_rmtree(tmp);
}

TestSuite(bench_json_kvm, .init = init, .fini = fini, .timeout = 180);

Test(bench_json_kvm, pager_micro_json_escapes_the_snapshot_path)
{
	char cmd[8 * PATH_MAX];
	char *argv[] = { "/bin/sh", "-c", cmd, NULL };
	const char *b = getenv("EMBER_BUILD");

	/* a sandbox snapshot with a recorded working set, in a directory named
	 * 'snap "q" \' (as run.sh's mem_golden makes one) */
	snprintf(cmd, sizeof(cmd),
		 "set -e; B=%s; d='%s/snap \"q\" \\'; "
		 "$B/ember boot --kernel $B/guests/sandbox.elf --cmdline 'heap=16M seed=1 ws=1M' "
		 "--mem 64 --snapshot-on-ready \"$d\" --exit-after-snapshot --console none; "
		 "$B/ember restore --snapshot \"$d\" --mem-backend uffd --record-ws "
		 "--guest-cmd serve --guest-cmd exit --console none; "
		 "$B/bench/pager_micro --faults 64 --json '%s/pm.json' \"$d\" >/dev/null; "
		 "jq -e --arg d \"$d\" '.snapshot == $d and .ws_pages > 0 "
		 "and ([.results[] | select(.kind == \"fault\" and .p90_us != null)] | length) > 0 "
		 "and ([.results[] | select(.kind == \"prefetch\")] | length) > 0' '%s/pm.json'",
		 b ? b : "build", tmp, tmp, tmp);
	cr_assert_eq(proc_run(argv, 170000, &r), 0);
	cr_assert_eq(r.status, 0, "status %d\nout:\n%s\nerr:\n%s", r.status, r.out, r.err);
	cr_assert_str_eq(r.out, "true\n");
}
