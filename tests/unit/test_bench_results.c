/*
 * bench/results.sh judges a bench results file and writes RESULTS.md; bench/to_csv.sh
 * turns one into CSV. Fed crafted result files here: a missed target must make the
 * summarizer exit non-zero (unless allowed), a file without the run's metadata is
 * refused, and the CSV starts with its header.
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

TestSuite(bench_results, .init = init, .fini = fini, .timeout = 60);

#define META "\"date\": \"2026-12-03T000000Z\", \"commit\": \"0123abc\", " \
	     "\"ember_version\": \"0.1.0\", \"cpu_model\": \"Test CPU\", \"kernel\": \"6.1.0\", "
/* one harness-shaped section: a command with one metric and its samples */
#define SECTIONS "\"sections\": {\"boot\": {\"title\": \"t\", \"runs\": 2, \"commands\": [" \
	"{\"name\": \"ember\", \"metrics\": {\"ready\": {\"unit\": \"us\", \"n\": 2, " \
	"\"median\": 150.0, \"p99\": 200.0, \"min\": 100.0, \"max\": 200.0, " \
	"\"samples\": [100, 200]}}}]}}"
#define MET "{\"section\": \"boot\", \"target\": \"ready <= 1 ms\", \"status\": \"met\", " \
	"\"detail\": \"0.15 ms\"}"
#define MISSED "{\"section\": \"qemu\", \"target\": \"restore >= 50x faster than QEMU\", " \
	"\"status\": \"missed\", \"detail\": \"24.7x\"}"

static const char *results(const char *json)
{
	return ember_test_write_file(tmp, "results.json", json, strlen(json));
}

static void run(const char *env, const char *md, const char *file)
{
	char *argv[8];
	int n = 0;

	argv[n++] = "/usr/bin/env";
	argv[n++] = (char *)(env ? env : "BENCH_ALLOW_MISSED=0");
	argv[n++] = "bench/results.sh";
	if (md) {
		argv[n++] = "--md";
		argv[n++] = (char *)md;
	}
	argv[n++] = (char *)file;
	argv[n] = NULL;
	cr_assert_eq(proc_run(argv, 30000, &r), 0);
}

Test(bench_results, a_missed_target_makes_the_summarizer_exit_1)
{
	run(NULL, NULL, results("{" META "\"targets\": [" MET ", " MISSED "], " SECTIONS "}"));
	cr_assert_eq(r.status, 1, "status %d; out:\n%s\nerr:\n%s", r.status, r.out, r.err);
	cr_assert(strstr(r.out, "MISSED: qemu: restore >= 50x faster than QEMU (24.7x)"), "%s",
		  r.out);
	cr_assert(strstr(r.err, "1 target(s) MISSED"), "%s", r.err);
}

Test(bench_results, bench_allow_missed_makes_a_missed_target_exit_0)
{
	run("BENCH_ALLOW_MISSED=1", NULL,
	    results("{" META "\"targets\": [" MISSED "], " SECTIONS "}"));
	cr_assert_eq(r.status, 0, "status %d; err:\n%s", r.status, r.err);
	cr_assert(strstr(r.out, "MISSED"), "%s", r.out);
}

Test(bench_results, targets_all_met_exit_0_and_results_md_lists_them_with_plots)
{
	char md[PATH_MAX], plots[PATH_MAX], *text;
	FILE *f;
	long len;

	snapt_join(md, tmp, "RESULTS.md");
	snapt_join(plots, tmp, "plots");
	cr_assert_eq(mkdir(plots, 0755), 0);
	ember_test_write_file(plots, "reset-pages.svg", "<svg/>", 6);
	run(NULL, md, results("{" META "\"cpus\": 2, \"targets\": [" MET "], " SECTIONS "}"));
	cr_assert_eq(r.status, 0, "status %d; err:\n%s", r.status, r.err);
	f = fopen(md, "r");
	cr_assert(f, "no %s", md);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	text = calloc(1, (size_t)len + 1);
	cr_assert(text && fread(text, 1, (size_t)len, f) == (size_t)len);
	fclose(f);
	cr_assert(strstr(text, "| commit | `0123abc` |"), "%s", text);
	cr_assert(strstr(text, "| CPU | Test CPU (2 CPUs) |"), "%s", text);
	cr_assert(strstr(text, "| kernel | 6.1.0 |"), "%s", text);
	cr_assert(strstr(text, "1 met, 0 missed, 0 not measured."), "%s", text);
	cr_assert(strstr(text, "| boot | ready <= 1 ms | met | 0.15 ms |"), "%s", text);
	cr_assert(strstr(text, "![reset-pages](plots/reset-pages.svg)"), "%s", text);
	cr_assert_null(strstr(text, "restore-cdf"), "a plot that is not there is linked:\n%s", text);
	free(text);
}

Test(bench_results, a_results_file_without_its_commit_is_refused_naming_the_field)
{
	run(NULL, NULL, results("{\"date\": \"d\", \"ember_version\": \"0.1.0\", \"cpu_model\": \"c\", "
				"\"kernel\": \"k\", \"targets\": [], " SECTIONS "}"));
	cr_assert_eq(r.status, 2, "status %d; err:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "metadata field \"commit\" is missing"), "%s", r.err);
}

Test(bench_results, a_target_with_an_unknown_status_is_refused)
{
	run(NULL, NULL, results("{" META "\"targets\": [{\"section\": \"s\", \"target\": \"t\", "
				"\"status\": \"great\", \"detail\": \"\"}], " SECTIONS "}"));
	cr_assert_eq(r.status, 2, "status %d; err:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "s: t: status great"), "%s", r.err);
}

Test(bench_results, not_json_is_refused)
{
	run(NULL, NULL, results("{\"date\": "));
	cr_assert_eq(r.status, 2, "status %d; err:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "not a JSON object"), "%s", r.err);
}

Test(bench_results, csv_has_its_header_and_one_row_per_series)
{
	char *argv[] = { "bench/to_csv.sh", NULL, NULL };

	argv[1] = (char *)results("{" META "\"targets\": [], " SECTIONS "}");
	cr_assert_eq(proc_run(argv, 30000, &r), 0);
	cr_assert_eq(r.status, 0, "err:\n%s", r.err);
	cr_assert_str_eq(r.out, "section,case,series,metric,unit,n,median,p99,min,max\n"
				"\"boot\",\"-\",\"ember\",\"ready\",\"us\",2,150,200,100,200\n");
}
