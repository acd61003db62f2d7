/*
 * A snapshot that cannot be written (no space, no permission) fails with a message,
 * leaves nothing that would load, and the VM keeps running. ENOSPC comes from a tiny
 * tmpfs mounted for the test (root only: skipped loudly otherwise).
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

#define WAIT_MS 20000

static char tmp[PATH_MAX], sock[PATH_MAX], small[PATH_MAX];
static bool mounted;
static struct proc *vmm;

static void fini(void)
{
	if (vmm) {
		struct proc_result dead;

		proc_finish(vmm, 1, &dead);
		proc_result_free(&dead);
		vmm = NULL;
	}
	if (mounted)
		umount2(small, MNT_DETACH);
	mounted = false;
	ember_test_rmtree(tmp);
	tmp[0] = 0;
}

static void start_sandbox(void)
{
	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(sock, tmp, "api.sock");
	vmm = ember_test_start("boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
			       "heap=16M seed=5", "--mem", "64", "--api-sock", sock, NULL);
	cr_assert(proc_wait_output(vmm, "checksum=", WAIT_MS), "the sandbox never printed its checksum");
	snapt_wait_socket(sock, WAIT_MS);
}

TestSuite(snapshot_failure, .fini = fini, .timeout = 60);

/* Nothing named like a snapshot or its temporary sibling may be left in dir. */
static void assert_nothing_left(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	cr_assert_not_null(d, "%s: %s", dir, strerror(errno));
	while ((e = readdir(d)))
		cr_assert(e->d_name[0] == '.' && (!e->d_name[1] || !strcmp(e->d_name, "..")),
			  "a failed snapshot left %s/%s behind", dir, e->d_name);
	closedir(d);
}

/* The VM still answers and its heap is intact: verify prints the boot checksum. */
static void assert_vm_keeps_running(void)
{
	struct proc_result r;
	uint64_t golden;

	snapt_ctl(&r, sock, "status", NULL);
	cr_assert_eq(r.status, 0, "status after a failed snapshot:\n%s%s", r.out, r.err);
	cr_assert(strstr(r.out, "state: running"), "the VM is not running:\n%s", r.out);
	proc_result_free(&r);
	snapt_ctl(&r, sock, "guest-cmd", "verify", NULL);
	cr_assert_eq(r.status, 0);
	proc_result_free(&r);
	/* commands run in order: once "generation=" is out, so is verify's checksum */
	snapt_ctl(&r, sock, "guest-cmd", "generation", NULL);
	cr_assert_eq(r.status, 0);
	proc_result_free(&r);
	cr_assert(proc_wait_output(vmm, "generation=", WAIT_MS), "the guest stopped answering");
	snapt_ctl(&r, sock, "shutdown", NULL);
	proc_result_free(&r);
	cr_assert_eq(proc_finish(vmm, WAIT_MS, &r), 0);
	vmm = NULL;
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "ember exited %d:\n%s", r.status, r.err);
	golden = snapt_checksum(r.out, 0);
	cr_assert_eq(snapt_checksum(r.out, 1), golden, "the heap changed:\n%s", r.out);
	proc_result_free(&r);
}

Test(snapshot_failure, no_space_left_fails_cleanly_and_the_vm_keeps_running)
{
	char dir[PATH_MAX];
	struct proc_result r;

	start_sandbox();
	snapt_join(small, tmp, "small");
	cr_assert_eq(mkdir(small, 0755), 0);
	if (mount("ember-test", small, "tmpfs", 0, "size=1m") != 0) {
		cr_log_info("SKIP: cannot mount a tmpfs (%s): ENOSPC not tested", strerror(errno));
		cr_skip_test("mounting a tmpfs needs root");
	}
	mounted = true;
	snapt_join(dir, small, "snap");
	snapt_ctl(&r, sock, "snapshot", dir, NULL);
	cr_assert_eq(r.status, 1, "a snapshot into 1 MiB succeeded?\n%s%s", r.out, r.err);
	cr_assert(strstr(r.err, "No space left on device"), "the error does not say why:\n%s", r.err);
	proc_result_free(&r);
	assert_nothing_left(small);
	assert_vm_keeps_running();
}

Test(snapshot_failure, unwritable_place_fails_cleanly_and_the_vm_keeps_running)
{
	struct proc_result r;

	start_sandbox();
	/* /proc refuses new directories even to root */
	snapt_ctl(&r, sock, "snapshot", "/proc/ember-snapshot", NULL);
	cr_assert_eq(r.status, 1, "a snapshot into /proc succeeded?\n%s%s", r.out, r.err);
	cr_assert(strstr(r.err, "/proc/ember-snapshot"), "the error does not name the place:\n%s",
		  r.err);
	proc_result_free(&r);
	assert_vm_keeps_running();
}

Test(snapshot_failure, existing_directory_is_never_replaced)
{
	char dir[PATH_MAX], marker[PATH_MAX];
	struct proc_result r;

	start_sandbox();
	snapt_join(dir, tmp, "taken");
	cr_assert_eq(mkdir(dir, 0755), 0);
	snapt_join(marker, dir, "keep-me");
	ember_test_write_file(dir, "keep-me", "x", 1);
	snapt_ctl(&r, sock, "snapshot", dir, NULL);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, "exists"), "%s", r.err);
	proc_result_free(&r);
	cr_assert_eq(access(marker, F_OK), 0, "the existing directory was touched");
	assert_vm_keeps_running();
}

Test(snapshot_failure, snapshot_on_ready_failure_exits_1_with_exit_after_snapshot)
{
	struct proc_result r;

	ember_test_require_kvm();
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
		       "heap=4M", "--mem", "32", "--snapshot-on-ready", "/proc/ember-golden",
		       "--exit-after-snapshot", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "exit %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "snapshot /proc/ember-golden"), "%s", r.err);
	proc_result_free(&r);
}

/* A tmpfs of 1 MiB under tmp: a snapshot written there runs out of space. */
static void mount_small(void)
{
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(small, tmp, "small");
	cr_assert_eq(mkdir(small, 0755), 0);
	if (mount("ember-test", small, "tmpfs", 0, "size=1m") != 0) {
		cr_log_info("SKIP: cannot mount a tmpfs (%s): ENOSPC not tested", strerror(errno));
		cr_skip_test("mounting a tmpfs needs root");
	}
	mounted = true;
}

Test(snapshot_failure, snapshot_on_ready_out_of_space_exits_1_after_the_guest_carried_on)
{
	char dir[PATH_MAX];
	struct proc_result r;

	ember_test_require_kvm();
	mount_small();
	snapt_join(dir, small, "golden");
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
		       "heap=4M", "--mem", "32", "--snapshot-on-ready", dir, "--guest-cmd",
		       "verify", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "a failed golden snapshot, exit %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "No space left on device"), "the error does not say why:\n%s",
		  r.err);
	cr_assert_eq(snapt_checksum(r.out, 1), snapt_checksum(r.out, 0), "%s", r.out);
	proc_result_free(&r);
	assert_nothing_left(small);
}

Test(snapshot_failure, snapshot_on_ready_out_of_space_exits_1_with_exit_after_snapshot)
{
	char dir[PATH_MAX];
	struct proc_result r;

	ember_test_require_kvm();
	mount_small();
	snapt_join(dir, small, "golden");
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
		       "heap=4M", "--mem", "32", "--snapshot-on-ready", dir,
		       "--exit-after-snapshot", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "exit %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "No space left on device"), "%s", r.err);
	proc_result_free(&r);
	assert_nothing_left(small);
}

Test(snapshot_failure, snapshot_on_ready_failure_lets_the_guest_carry_on_and_exits_1)
{
	struct proc_result r;

	ember_test_require_kvm();
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
		       "heap=4M", "--mem", "32", "--snapshot-on-ready", "/proc/ember-golden",
		       "--guest-cmd", "verify", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "exit %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "snapshot /proc/ember-golden"), "no error reported:\n%s", r.err);
	cr_assert_eq(snapt_checksum(r.out, 1), snapt_checksum(r.out, 0), "%s", r.out);
	proc_result_free(&r);
}
