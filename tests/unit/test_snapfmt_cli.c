/*
 * ember-snap, run as a program: exit codes, verify/info/dump/merge output. Uses the
 * binary from $EMBER_BUILD (default build/); skipped if it has not been built.
 */
#include <stdarg.h>
#include <sys/wait.h>

#include "test_snapfmt_fixture.h"
#include "testlib.h"

static char *tmp, *snap_dir, *tool;
static struct snap_state st;
static uint8_t mem[FX_MEM_SIZE];

static void setup(void)
{
	const char *b = getenv("EMBER_BUILD");

	cr_assert(asprintf(&tool, "%s/ember-snap", b && *b ? b : "build") > 0);
	if (access(tool, X_OK))
		cr_skip_test("%s not built", tool);
	tmp = fx_tmpdir();
	snap_dir = fx_path(tmp, "snap");
	fx_fill_ember_state(&st);
	memset(mem, 0x5a, SNAP_PAGE_SIZE);
	fx_write_snapshot(snap_dir, &st, mem);
}

static void teardown(void)
{
	snap_state_free(&st);
	if (tmp)
		fx_rm_rf(tmp);
	free(tmp);
	free(snap_dir);
	free(tool);
}

TestSuite(snapfmt_cli, .init = setup, .fini = teardown);

/* Runs "tool args", returns the exit status and the (stdout + stderr) text. */
static int run(char **out, const char *args)
{
	char *cmd;
	size_t cap = 1 << 20, n = 0;
	FILE *p;
	int status;

	cr_assert(asprintf(&cmd, "'%s' %s 2>&1", tool, args) > 0);
	*out = calloc(1, cap + 1);
	p = popen(cmd, "r");
	cr_assert(p);
	for (size_t r; (r = fread(*out + n, 1, cap - n, p)) > 0;)
		n += r;
	status = pclose(p);
	free(cmd);
	cr_assert(WIFEXITED(status));
	return WEXITSTATUS(status);
}

__attribute__((format(printf, 2, 3)))
static int runf(char **out, const char *fmt, ...)
{
	char *args;
	va_list ap;
	int ret, n;

	va_start(ap, fmt);
	n = vasprintf(&args, fmt, ap);
	va_end(ap);
	cr_assert(n > 0);
	ret = run(out, args);
	free(args);
	return ret;
}

Test(snapfmt_cli, verify_prints_ok)
{
	char *out;

	cr_assert_eq(runf(&out, "verify '%s'", snap_dir), 0);
	cr_assert_str_eq(out, "ok\n");
	free(out);
}

Test(snapfmt_cli, verify_reports_a_truncated_memory_file_with_exit_1)
{
	char *out, *memfile = fx_path(snap_dir, SNAP_MEMORY_FILE);

	cr_assert_eq(truncate(memfile, 4096), 0);
	cr_assert_eq(runf(&out, "verify '%s'", snap_dir), 1);
	cr_assert(strstr(out, "error: ") && strstr(out, "truncated"), "%s", out);
	free(out);
	free(memfile);
}

Test(snapfmt_cli, usage_errors_exit_2_and_name_the_argument)
{
	char *out;

	cr_assert_eq(run(&out, ""), 2);
	free(out);
	cr_assert_eq(run(&out, "frobnicate x"), 2);
	cr_assert(strstr(out, "unknown command 'frobnicate'"), "%s", out);
	free(out);
	cr_assert_eq(run(&out, "verify"), 2);
	cr_assert(strstr(out, "verify takes DIR"), "%s", out);
	free(out);
	cr_assert_eq(run(&out, "dump --all x"), 2);
	cr_assert(strstr(out, "unknown option '--all'"), "%s", out);
	free(out);
	cr_assert_eq(run(&out, "--help"), 0);
	cr_assert(strstr(out, "merge BASE DIFF OUT"), "%s", out);
	free(out);
}

Test(snapfmt_cli, dump_matches_the_library_dump)
{
	char *out, *want = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&want, &size);

	cr_assert_eq(snap_dump(f, &st), 0);
	fclose(f);
	cr_assert_eq(runf(&out, "dump '%s'", snap_dir), 0);
	cr_assert_str_eq(out, want);
	free(out);
	free(want);
}

Test(snapfmt_cli, info_summarises)
{
	char *out;

	cr_assert_eq(runf(&out, "info '%s'", snap_dir), 0);
	cr_assert(strstr(out, "format:    1.3 (written by ember 9.8.7-test)"), "%s", out);
	cr_assert(strstr(out, "id:        0123456789abcdef0123456789abcdef"), "%s", out);
	cr_assert(strstr(out, "vcpus:     2"), "%s", out);
	cr_assert(strstr(out, "serial"), "%s", out);
	cr_assert(strstr(out, "256.0 KiB logical"), "%s", out);
	free(out);
}

Test(snapfmt_cli, merge_writes_a_verifiable_snapshot)
{
	char *out, *diff = fx_path(tmp, "diff"), *merged = fx_path(tmp, "merged");
	struct snap_range r = { 3, 1 };

	cr_assert_eq(snap_new_id(st.header.id, NULL), 0);
	memcpy(st.header.parent, "0123456789abcdef0123456789abcdef", SNAP_ID_LEN + 1);
	st.memory.kind = SNAP_MEM_DIFF;
	cr_assert_eq(snap_memory_set_ranges(&st, &r, 1, NULL), 0);
	fx_write_snapshot(diff, &st, mem);
	cr_assert_eq(runf(&out, "merge '%s' '%s' '%s'", snap_dir, diff, merged), 0, "%s", out);
	free(out);
	cr_assert_eq(runf(&out, "verify '%s'", merged), 0);
	free(out);
	cr_assert_eq(runf(&out, "merge '%s' '%s' '%s'", diff, snap_dir, merged), 1);
	free(out);
	free(diff);
	free(merged);
}

/* --json: one object, validated by a JSON parser, keys as README documents */
Test(snapfmt_cli, info_and_verify_json_are_valid_json)
{
	char *out, *canon;

	cr_assert_eq(runf(&out, "info --json '%s'", snap_dir), 0, "%s", out);
	canon = ember_test_json_canon(out);
	cr_assert(strstr(canon, "\"kind\":\"full\""), "%s", canon);
	cr_assert(strstr(canon, "\"vcpus\":"), "%s", canon);
	cr_assert(strstr(canon, "\"memory\":{"), "%s", canon);
	cr_assert(strstr(canon, "\"devices\":["), "%s", canon);
	cr_assert(strstr(canon, "\"ws\":null"), "%s", canon);
	free(canon);
	free(out);
	cr_assert_eq(runf(&out, "verify '%s' --json", snap_dir), 0, "%s", out);
	canon = ember_test_json_canon(out);
	cr_assert(strstr(canon, "\"ok\":true"), "%s", canon);
	free(canon);
	free(out);
}

Test(snapfmt_cli, verify_json_reports_the_error_with_exit_1)
{
	char *out, *canon, *memfile = fx_path(snap_dir, SNAP_MEMORY_FILE);

	cr_assert_eq(truncate(memfile, 4096), 0);
	cr_assert_eq(runf(&out, "verify --json '%s'", snap_dir), 1);
	canon = ember_test_json_canon(out);
	cr_assert(strstr(canon, "\"ok\":false") && strstr(canon, "truncated"), "%s", canon);
	free(canon);
	free(out);
	free(memfile);
	cr_assert_eq(runf(&out, "dump --json '%s'", snap_dir), 2);
	cr_assert(strstr(out, "--json applies to info and verify"), "%s", out);
	free(out);
}
