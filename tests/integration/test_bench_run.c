/*
 * A short real bench run (bench/run.sh, its rss section: a few boots on /dev/kvm) into a
 * private directory: its results JSON must parse with jq and carry the run's metadata
 * and the section's targets, the CSV must start with its header, and RESULTS.md must
 * be written from it. (Whether the targets are met is the bench's business, not this
 * test's: BENCH_ALLOW_MISSED=1.)
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

TestSuite(bench_run, .init = init, .fini = fini, .timeout = 300);

static void sh(const char *cmd)
{
	char *argv[] = { "/bin/sh", "-c", (char *)cmd, NULL };

	proc_result_free(&r);
	cr_assert_eq(proc_run(argv, 240000, &r), 0);
}

Test(bench_run, rss_run_writes_json_with_metadata_csv_and_results_md)
{
	char cmd[4 * PATH_MAX];
	const char *b = getenv("EMBER_BUILD");

	snprintf(cmd, sizeof(cmd),
		 "EMBER_BUILD=%s BENCH_SECTIONS=rss BENCH_ALLOW_MISSED=1 BENCH_RESULTS_DIR=%s/r "
		 "BENCH_RESULTS_MD=%s/RESULTS.md bench/run.sh", b ? b : "build", tmp, tmp);
	sh(cmd);
	cr_assert_eq(r.status, 0, "bench/run.sh exited %d\nout:\n%s\nerr:\n%s", r.status, r.out,
		     r.err);
	/* the numbers are not the point here (a sanitizer build misses the RSS target) */
	cr_assert(strstr(r.out, "- hello: mem rss - guest max <= 2048: "), "%s", r.out);

	/* jq: metadata strings non-empty, the rss section and its two targets */
	snprintf(cmd, sizeof(cmd),
		 "jq -e '([.date, .commit, .ember_version, .cpu_model, .kernel] "
		 "| all(type == \"string\" and length > 0)) "
		 "and .cpus > 0 and (.sections.rss.commands | length) == 2 "
		 "and ([.targets[] | select(.section == \"rss\" and "
		 "(.status == \"met\" or .status == \"missed\"))] "
		 "| length) == 2' %s/r/*.json", tmp);
	sh(cmd);
	cr_assert_eq(r.status, 0, "results JSON: jq said %d:\n%s%s", r.status, r.out, r.err);
	cr_assert_str_eq(r.out, "true\n");

	snprintf(cmd, sizeof(cmd), "head -n 1 %s/r/*.csv && grep -c '^\"rss\",' %s/r/*.csv", tmp,
		 tmp);
	sh(cmd);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(!strncmp(r.out, "section,case,series,metric,unit,n,median,p99,min,max\n",
			   strlen("section,case,series,metric,unit,n,median,p99,min,max\n")),
		  "%s", r.out);

	snprintf(cmd, sizeof(cmd), "grep -cE '^\\| rss \\| .* \\| (met|\\*\\*MISSED\\*\\*) \\|' "
		 "%s/RESULTS.md", tmp);
	sh(cmd);
	cr_assert_str_eq(r.out, "2\n", "RESULTS.md: %s", r.err);
}

/* The idle section waited for all its shell's children, the section's own tee among
 * them: a bare `wait` that never returned (the full bench hung there). Two clones, one
 * second: it must finish and write its JSON. */
Test(bench_run, idle_section_finishes)
{
	char cmd[4 * PATH_MAX];
	const char *b = getenv("EMBER_BUILD");

	snprintf(cmd, sizeof(cmd),
		 "EMBER_BUILD=%s BENCH_SECTIONS=idle BENCH_IDLE_CLONES=2 BENCH_IDLE_WINDOW=1 "
		 "BENCH_ALLOW_MISSED=1 BENCH_RESULTS_DIR=%s/r timeout 120 bench/run.sh",
		 b ? b : "build", tmp);
	sh(cmd);
	cr_assert_eq(r.status, 0, "bench/run.sh exited %d (124: it hung)\nout:\n%s\nerr:\n%s",
		     r.status, r.out, r.err);
	snprintf(cmd, sizeof(cmd), "jq -e '.sections.idle | type == \"object\"' %s/r/*.json", tmp);
	sh(cmd);
	cr_assert_str_eq(r.out, "true\n", "results JSON: %s%s", r.out, r.err);
}
