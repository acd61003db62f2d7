/*
 * Diff snapshots over the control socket: a diff D taken after the guest dirtied pages,
 * merged onto its base F1, must give exactly the full snapshot F2 taken at the same
 * (paused) point: the same memory file byte for byte, the same state except the
 * snapshot's identity and the clocks, which keep running while a VM is paused; both
 * must restore to the same guest. Diffs also work relative to the snapshot a process
 * was restored from; a diff without a base, a diff given to restore and a merge onto
 * the wrong base are refused with a message that says why.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testlib.h"

#define WAIT_MS 20000

static char tmp[PATH_MAX], sock[PATH_MAX];
static struct proc *vmm;
static struct proc_result r;

static void fini(void)
{
	if (vmm) {
		struct proc_result dead;

		proc_finish(vmm, 1, &dead); /* SIGKILLs what a failed test left running */
		proc_result_free(&dead);
		vmm = NULL;
	}
	proc_result_free(&r);
	ember_test_rmtree(tmp);
	tmp[0] = 0;
}

static void init(void)
{
	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(sock, tmp, "api.sock");
}

TestSuite(snapshot_diff, .init = init, .fini = fini, .timeout = 120);

static void ctl_expect(int want, const char *verb, const char *arg, const char *arg2)
{
	struct proc_result c;

	snapt_ctl(&c, sock, verb, arg, arg2, NULL);
	cr_assert_eq(c.status, want, "ember ctl %s %s %s exited %d (wanted %d):\n%s%s", verb,
		     arg ? arg : "", arg2 ? arg2 : "", c.status, want, c.out, c.err);
	proc_result_free(&c);
}

static void ctl_ok(const char *verb, const char *arg, const char *arg2)
{
	ctl_expect(0, verb, arg, arg2);
}

/* ember with the control socket, on the sandbox (boot) or a snapshot (restore). */
static void start_boot(void)
{
	vmm = ember_test_start("boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
			       "heap=16M seed=9", "--mem", "64", "--api-sock", sock, NULL);
	cr_assert(proc_wait_output(vmm, "checksum=", WAIT_MS), "the sandbox never printed its checksum");
	snapt_wait_socket(sock, WAIT_MS);
}

static void serve_once(const char *marker)
{
	ctl_ok("guest-cmd", "serve", NULL);
	cr_assert(proc_wait_output(vmm, marker, WAIT_MS), "no '%s' from the guest", marker);
}

static void stop_vmm(void)
{
	ctl_ok("shutdown", NULL, NULL);
	cr_assert_eq(proc_finish(vmm, WAIT_MS, &r), 0);
	vmm = NULL;
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "ember exited %d:\n%s", r.status, r.err);
}

static uint64_t restore_and_verify(const char *dir)
{
	struct proc_result v;
	uint64_t sum;

	ember_test_run(&v, WAIT_MS, "restore", "--snapshot", dir, "--guest-cmd", "verify",
		       "--guest-cmd", "exit", NULL);
	ember_test_assert_no_crash(&v);
	cr_assert_eq(v.status, 0, "restore of %s exited %d:\n%s", dir, v.status, v.err);
	sum = snapt_checksum(v.out, 0);
	proc_result_free(&v);
	return sum;
}

static char *dump(const char *dir)
{
	struct proc_result d;

	snapt_tool(&d, SNAPT_RUN_MS, "dump", dir, NULL);
	ember_test_assert_no_crash(&d);
	cr_assert_eq(d.status, 0, "ember-snap dump %s: %s", dir, d.err);
	free(d.err);
	return d.out;
}

/* Lines that name this snapshot rather than the guest. */
static bool is_identity(const char *key)
{
	return !strcmp(key, "header.id") || !strcmp(key, "header.created") ||
	       !strcmp(key, "header.parent");
}

/* Lines that follow the host clock, which runs on while the VM is paused (the value of
 * IA32_TSC or IA32_TSC_DEADLINE: a zero deadline is saved as the TSC). */
static bool is_clock(const char *key, bool prev_was_tsc_index)
{
	size_t n = strlen(key);

	return !strncmp(key, "vm.clock.", 9) ||
	       (n > 4 && !strcmp(key + n - 4, ".tsc") && !strncmp(key, "vcpus[", 6)) ||
	       (prev_was_tsc_index && n > 6 && !strcmp(key + n - 6, ".value"));
}

/*
 * a (merged) and b (taken right after the diff) must have the same lines, and equal
 * values except identity and clock lines; clocks in b must not be behind a's.
 */
static void compare_dumps(char *a, char *b)
{
	char *sa, *sb, *la = strtok_r(a, "\n", &sa), *lb = strtok_r(b, "\n", &sb);
	bool tsc_index = false;
	unsigned lines = 0, clocks = 0;

	for (; la && lb; la = strtok_r(NULL, "\n", &sa), lb = strtok_r(NULL, "\n", &sb), lines++) {
		char *ea = strstr(la, " = "), *eb = strstr(lb, " = ");

		cr_assert(ea && eb, "unexpected dump lines '%s' / '%s'", la, lb);
		*ea = *eb = 0;
		cr_assert_str_eq(la, lb, "dump line %u: keys differ", lines);
		if (!is_identity(la) && is_clock(la, tsc_index)) {
			clocks++;
			cr_expect_geq(strtoull(eb + 3, NULL, 0), strtoull(ea + 3, NULL, 0),
				      "%s: %s in the merged snapshot, %s in the later full one", la,
				      ea + 3, eb + 3);
		} else if (!is_identity(la)) {
			cr_expect_str_eq(ea + 3, eb + 3, "%s differs: merged %s, full %s", la, ea + 3,
					 eb + 3);
		}
		tsc_index = strstr(la, ".msrs[") && !strcmp(strrchr(la, '.'), ".index") &&
			    (strtoull(ea + 3, NULL, 0) == 0x10 || strtoull(ea + 3, NULL, 0) == 0x6e0);
	}
	cr_assert(!la && !lb, "the dumps have different lengths (after %u lines)", lines);
	cr_assert_geq(clocks, 5, "the clock lines were not recognised (%u)", clocks);
}

static void memory_path(char *out, const char *dir)
{
	snapt_join(out, dir, "memory.raw");
}

Test(snapshot_diff, merged_diff_equals_the_full_snapshot_at_the_same_point)
{
	char f1[PATH_MAX], d[PATH_MAX], f2[PATH_MAX], m[PATH_MAX], ma[PATH_MAX], mb[PATH_MAX];
	char *dump_m, *dump_f2;
	uint64_t golden;

	snapt_join(f1, tmp, "F1");
	snapt_join(d, tmp, "D");
	snapt_join(f2, tmp, "F2");
	snapt_join(m, tmp, "M");
	start_boot();
	ctl_ok("snapshot", f1, NULL);
	serve_once("served ");
	ctl_ok("pause", NULL, NULL);
	ctl_ok("snapshot", d, "--diff");
	ctl_ok("snapshot", f2, NULL);
	stop_vmm();

	snapt_tool(&r, SNAPT_RUN_MS, "merge", f1, d, m, NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "ember-snap merge: %s", r.err);
	memory_path(ma, m);
	memory_path(mb, f2);
	cr_assert(snapt_files_equal(ma, mb), "merged memory file differs from the full snapshot's");

	dump_m = dump(m);
	dump_f2 = dump(f2);
	compare_dumps(dump_m, dump_f2);
	free(dump_m);
	free(dump_f2);

	golden = restore_and_verify(f1);
	cr_assert_eq(restore_and_verify(m), golden, "the merged snapshot restores a different heap");
	cr_assert_eq(restore_and_verify(f2), golden, "the full snapshot restores a different heap");
	snapt_verify_ok(f1);
	snapt_verify_ok(d);
	snapt_verify_ok(f2);
	snapt_verify_ok(m);
}

Test(snapshot_diff, diff_holds_only_the_pages_the_guest_dirtied)
{
	char f1[PATH_MAX], d[PATH_MAX], line[256];
	uint64_t pages = 0, ranges = 0;

	snapt_join(f1, tmp, "F1");
	snapt_join(d, tmp, "D");
	start_boot();
	ctl_ok("snapshot", f1, NULL);
	serve_once("served ");
	ctl_ok("snapshot", d, "--diff");
	stop_vmm();
	snapt_tool(&r, SNAPT_RUN_MS, "info", d, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_not_null(proc_find_line(r.out, "diff:", line, sizeof(line)), "%s", r.out);
	cr_assert_eq(sscanf(line, "diff: %lu range%*s %lu pages", &ranges, &pages), 2, "%s", line);
	/* serve writes a 128 KiB counter area (32 pages) and the guest's stack and ucall
	 * blocks; the 16 MiB heap it only reads */
	cr_assert_geq(pages, 1, "%s", line);
	cr_assert_lt(pages, 256, "a diff after one request should be small: %s", line);
	cr_assert(strstr(r.out, "parent "), "%s", r.out);
	snapt_verify_ok(d);
}

/*
 * After a restore the pages ember tracks are those written since the restore, on every
 * memory backend: golden + diff must equal a full snapshot taken at the same point.
 */
static void diff_after_restore(const char *backend)
{
	char golden[PATH_MAX], d[PATH_MAX], f[PATH_MAX], m[PATH_MAX], ma[PATH_MAX], mb[PATH_MAX];
	uint64_t sum;

	snapt_join(golden, tmp, "golden");
	snapt_join(d, tmp, "D");
	snapt_join(f, tmp, "F");
	snapt_join(m, tmp, "M");
	sum = snapt_golden(golden, "heap=16M seed=9", 64);
	vmm = ember_test_start("restore", "--snapshot", golden, "--mem-backend", backend,
			       "--api-sock", sock, NULL);
	snapt_wait_socket(sock, WAIT_MS);
	serve_once("served ");
	ctl_ok("pause", NULL, NULL);
	ctl_ok("snapshot", d, "--diff");
	ctl_ok("snapshot", f, NULL);
	stop_vmm();
	snapt_verify_ok(d);
	snapt_verify_ok(f);
	snapt_tool(&r, SNAPT_RUN_MS, "merge", golden, d, m, NULL);
	cr_assert_eq(r.status, 0, "merge onto the restored-from snapshot: %s", r.err);
	proc_result_free(&r);
	memory_path(ma, m);
	memory_path(mb, f);
	cr_assert(snapt_files_equal(ma, mb), "%s: golden + diff differs from the full snapshot: a "
		  "page written after the restore was not tracked", backend);
	cr_assert_eq(restore_and_verify(m), sum);
}

Test(snapshot_diff, diff_after_an_mmap_restore_holds_every_page_written_since)
{
	diff_after_restore("mmap");
}

Test(snapshot_diff, diff_after_a_uffd_restore_holds_every_page_written_since)
{
	diff_after_restore("uffd");
}

Test(snapshot_diff, diff_after_an_eager_restore_holds_every_page_written_since)
{
	diff_after_restore("eager");
}

/* The golden snapshot taken on ready is a base too, within the same process. */
Test(snapshot_diff, diff_relative_to_the_golden_snapshot_taken_on_ready)
{
	char g[PATH_MAX], d[PATH_MAX], f[PATH_MAX], m[PATH_MAX], ma[PATH_MAX], mb[PATH_MAX];

	snapt_join(g, tmp, "G");
	snapt_join(d, tmp, "D");
	snapt_join(f, tmp, "F");
	snapt_join(m, tmp, "M");
	vmm = ember_test_start("boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
			       "heap=16M seed=9", "--mem", "64", "--api-sock", sock,
			       "--snapshot-on-ready", g, NULL);
	snapt_wait_socket(sock, WAIT_MS);
	cr_assert(proc_wait_output(vmm, "checksum=", WAIT_MS), "the sandbox never printed its checksum");
	serve_once("served ");
	ctl_ok("pause", NULL, NULL);
	ctl_ok("snapshot", d, "--diff");
	ctl_ok("snapshot", f, NULL);
	stop_vmm();
	snapt_verify_ok(g);
	snapt_tool(&r, SNAPT_RUN_MS, "merge", g, d, m, NULL);
	cr_assert_eq(r.status, 0, "merge onto the golden snapshot: %s", r.err);
	proc_result_free(&r);
	memory_path(ma, m);
	memory_path(mb, f);
	cr_assert(snapt_files_equal(ma, mb), "golden + diff differs from the full snapshot");
}

Test(snapshot_diff, diff_without_an_earlier_snapshot_is_refused_clearly)
{
	char d[PATH_MAX];
	struct proc_result c;

	snapt_join(d, tmp, "D");
	start_boot();
	snapt_ctl(&c, sock, "snapshot", d, "--diff", NULL);
	cr_assert_eq(c.status, 1, "ember ctl exited %d:\n%s%s", c.status, c.out, c.err);
	cr_assert(strstr(c.err, "diff snapshot") && strstr(c.err, "no earlier snapshot"),
		  "unclear error:\n%s", c.err);
	proc_result_free(&c);
	cr_assert_eq(access(d, F_OK), -1, "a refused snapshot left %s behind", d);
	/* the VMM is still fine and can take a full one */
	ctl_ok("snapshot", d, NULL);
	stop_vmm();
	snapt_verify_ok(d);
}

Test(snapshot_diff, restore_refuses_a_diff_and_merge_refuses_the_wrong_base)
{
	char f1[PATH_MAX], f2[PATH_MAX], d[PATH_MAX], m[PATH_MAX];

	snapt_join(f1, tmp, "F1");
	snapt_join(f2, tmp, "F2");
	snapt_join(d, tmp, "D");
	snapt_join(m, tmp, "M");
	start_boot();
	ctl_ok("snapshot", f1, NULL);
	ctl_ok("snapshot", f2, NULL);
	ctl_ok("snapshot", d, "--diff"); /* parent: F2 */
	stop_vmm();

	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", d, NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "restore of a diff exited %d", r.status);
	cr_assert(strstr(r.err, "diff snapshot") && strstr(r.err, "merge"), "unclear error:\n%s",
		  r.err);
	proc_result_free(&r);

	snapt_tool(&r, SNAPT_RUN_MS, "merge", f1, d, m, NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "merge onto the wrong base exited %d:\n%s", r.status, r.out);
	cr_assert(strstr(r.err, "is a diff of") && strstr(r.err, "not of"), "unclear error:\n%s",
		  r.err);
	cr_assert_eq(access(m, F_OK), -1, "a failed merge left %s behind", m);
}
