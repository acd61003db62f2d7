/*
 * The bench's JSON is written by a serializer, never pasted: the awk scripts hand their
 * numbers to bench/paths_to_json.sh (jq), the C programs use ember's JSON writer. Fed
 * crafted input here: strings that need escaping come out as the same strings, a
 * missing number is null, and every field the readers (results.sh, to_csv.sh, plot.sh)
 * know is there.
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
	ember_test_tmpdir(tmp, sizeof(tmp));
}

static void fini(void)
{
	proc_result_free(&r);
	ember_test_rmtree(tmp);
}

TestSuite(bench_json, .init = init, .fini = fini, .timeout = 60);

static void sh(const char *cmd)
{
	char *argv[] = { "/bin/sh", "-c", (char *)cmd, NULL };

	proc_result_free(&r);
	cr_assert_eq(proc_run(argv, 30000, &r), 0);
}

Test(bench_json, paths_to_json_keeps_quotes_backslashes_and_nulls)
{
	sh("printf 's\\tsay \"hi\" \\\\ there\\ta\\tb\\nn\\t\\ta\\tc\\nn\\t2.5\\tl\\t#0\\tx\\n"
	   "b\\t0\\tl\\t#0\\tok\\n' | bench/paths_to_json.sh '{\"l\": []}' | jq -c .");
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_str_eq(r.out, "{\"l\":[{\"x\":2.5,\"ok\":false}],"
				"\"a\":{\"b\":\"say \\\"hi\\\" \\\\ there\",\"c\":null}}\n");
}

Test(bench_json, paths_to_json_refuses_an_unknown_type_or_a_bad_number)
{
	sh("printf 'q\\t1\\ta\\n' | bench/paths_to_json.sh");
	cr_assert_neq(r.status, 0);
	cr_assert(strstr(r.err, "type q is none of n, s, b"), "%s", r.err);
	sh("printf 'n\\t12x\\ta\\n' | bench/paths_to_json.sh");
	cr_assert_neq(r.status, 0, "%s", r.out);
}

/* A harness TSV line: command metric unit n median p99 min max */
static void tsv_line(FILE *f, const char *cmd, const char *metric, double median)
{
	fprintf(f, "%s\t%s\tus\t3\t%.1f\t%.1f\t%.1f\t%.1f\n", cmd, metric, median, median * 2,
		median / 2, median * 2);
}

Test(bench_json, memory_summary_writes_every_field_through_jq)
{
	static const char *backends[] = { "mmap", "uffd", "uffd-pf", "lz4-pf", "eager" };
	char path[PATH_MAX + 64], cmd[8 * PATH_MAX];
	FILE *f;

	snprintf(path, sizeof(path), "%s/memory-32M.tsv", tmp);
	f = fopen(path, "w");
	cr_assert(f);
	for (unsigned b = 0; b < 5; b++)
		for (unsigned c = 0; c < 2; c++) {
			char name[32];

			snprintf(name, sizeof(name), "%s-%s", backends[b], c ? "cold" : "warm");
			/* warm 1000, 2000, ... us; cold 10x that; no pager counters for mmap */
			tsv_line(f, name, "first-response", (b + 1) * 1000.0 * (c ? 10 : 1));
			tsv_line(f, name, "resumed", 500);
			if (b)
				tsv_line(f, name, "pager faults", 42);
		}
	fclose(f);
	ember_test_write_file(tmp, "sizes", "32 536870912 178532352 100000000 1000000\n", 41);
	snprintf(cmd, sizeof(cmd),
		 "awk -F'\\t' -f bench/memory_summary.awk -v json=%s/s.tsv -v sizes=%s/sizes "
		 "-v wslist=32 -v target_ws=32 %s >/dev/null && bench/paths_to_json.sh "
		 "'{\"per_ws\": {}, \"ratios\": {}, \"targets_ws\": null, \"targets\": []}' "
		 "<%s/s.tsv | jq -c '[.per_ws[\"32M\"][\"uffd-warm\"] "
		 "| .first_response_us, .pager_faults, .prefetch_us, .ratio_vs_mmap_same_cache], "
		 "(.per_ws[\"32M\"] | keys | length), .ratios[\"32M\"].best_cold, "
		 ".ratios[\"32M\"].lz4_bytes, .targets_ws, (.targets | length), "
		 "(.targets | map(keys) | unique), .targets[0].target'",
		 tmp, tmp, path, tmp);
	sh(cmd);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_str_eq(r.out, "[2000,42,null,2]\n10\n\"uffd\"\n101000000\n\"32M\"\n6\n"
				"[[\"ok\",\"ratio\",\"target\"]]\n"
				"\"uffd + prefetch >= 3x faster than uffd on demand (warm)\"\n");
}

Test(bench_json, harness_json_keeps_a_title_and_argv_that_need_escaping)
{
	char cmd[4 * PATH_MAX];

	snprintf(cmd, sizeof(cmd),
		 "%s -n 1 -w 0 --title 'say \"hi\"\t\\ now' --json %s/h.json -- "
		 "'the \"one\"' /bin/echo 'a\\b' >/dev/null && "
		 "jq -c '[.title, .commands[0].name, .commands[0].argv[1]]' %s/h.json",
		 ember_test_path("bench/harness"), tmp, tmp);
	sh(cmd);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_str_eq(r.out, "[\"say \\\"hi\\\"\\t\\\\ now\",\"the \\\"one\\\"\",\"a\\\\b\"]\n");
}
