/*
 * ember --timings-json: every line for machines on stderr is one JSON object (checked
 * by python3's json module), with the fields of its text form (--timings).
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

#define WAIT_MS 60000

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

TestSuite(timings_json, .init = init, .fini = fini, .timeout = 120);

/* Checks that every stderr line is a JSON object; returns the canonical lines joined. */
static char *all_lines_json(const char *err)
{
	size_t cap = strlen(err) * 2 + 1, n = 0;
	char *all = calloc(1, cap), *copy = strdup(err), *save = NULL;

	cr_assert(all && copy);
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char buf[2048], *canon;

		cr_assert_eq(line[0], '{', "a stderr line that is not JSON: %s", line);
		snprintf(buf, sizeof(buf), "%s\n", line);
		canon = ember_test_json_canon(buf);
		cr_assert_lt(n + strlen(canon), cap);
		memcpy(all + n, canon, strlen(canon) + 1);
		n += strlen(canon);
		free(canon);
	}
	free(copy);
	return all;
}

Test(timings_json, boot_prints_every_phase_and_memory_as_json_objects)
{
	static const char *const phases[] = { "vm-created", "kvm-ready", "loaded", "first-entry",
					      "ready", "exit" };
	char want[128], *all;

	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("hello"), "--console",
		       "none", "--timings-json", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "stderr:\n%s", r.err);
	all = all_lines_json(r.err);
	for (size_t i = 0; i < sizeof(phases) / sizeof(phases[0]); i++) {
		snprintf(want, sizeof(want), "{\"line\":\"ember-timing\",\"phase\":\"%s\",\"us\":",
			 phases[i]);
		cr_assert(strstr(all, want), "no %s phase in:\n%s", phases[i], all);
	}
	cr_assert(strstr(all, "{\"guest_resident_kb\":"), "no ember-mem object in:\n%s", all);
	cr_assert(strstr(all, "\"line\":\"ember-mem\",\"rss_kb\":"), "%s", all);
	free(all);
}

Test(timings_json, snapshot_report_and_pager_lines_are_json_objects)
{
	char snap[PATH_MAX], *all;

	snapt_join(snap, tmp, "snap");
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
		       "heap=16M seed=1 ws=1M", "--snapshot-on-ready", snap,
		       "--exit-after-snapshot", "--console", "none", "--timings-json", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "stderr:\n%s", r.err);
	all = all_lines_json(r.err);
	cr_assert(strstr(all, "\"line\":\"ember-snapshot\""), "%s", all);
	cr_assert(strstr(all, "\"bytes_written\":"), "%s", all);
	free(all);
	proc_result_free(&r);

	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", snap, "--mem-backend", "uffd",
		       "--guest-cmd", "serve", "--guest-cmd", "exit", "--console", "none",
		       "--timings-json", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "stderr:\n%s", r.err);
	all = all_lines_json(r.err);
	/* guest words stay hex strings; decimal fields are JSON numbers */
	cr_assert(strstr(all, "{\"a0\":\"0x"), "no ember-report object in:\n%s", all);
	cr_assert(strstr(all, "\"line\":\"ember-report\",\"msg\":\"serve\",\"us\":"), "%s", all);
	cr_assert(strstr(all, "\"line\":\"ember-pager\""), "%s", all);
	cr_assert(strstr(all, "\"faults\":"), "%s", all);
	cr_assert(strstr(all, "\"phase\":\"resumed\""), "%s", all);
	free(all);
}

Test(timings_json, dump_regs_lines_are_json_objects_too)
{
	char *all;

	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("hello"), "--console",
		       "none", "--dump-regs", "--timings-json", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "stderr:\n%s", r.err);
	all = all_lines_json(r.err);
	/* all_lines_json gives each object with sorted keys */
	cr_assert(strstr(all, "\"line\":\"ember-regs\",\"mp_state\":"),
		  "no ember-regs object in:\n%s", all);
	cr_assert(strstr(all, "\"rip\":\"0x"), "no rip in:\n%s", all);
	free(all);
}
