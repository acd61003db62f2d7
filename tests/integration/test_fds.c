/*
 * File descriptors a careless launcher leaks into ember (opened without O_CLOEXEC) are
 * closed before ember opens anything of its own: a VMM that a guest escapes into must
 * not find the launcher's files (issue 9). Only 0-2 and a --ready-fd survive.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "snapfmt.h"
#include "testlib.h"

#define RUN_MS 30000

static char tmp[PATH_MAX], golden[PATH_MAX];

static void setup(void)
{
	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(golden, tmp, "golden");
	snapt_golden(golden, "heap=4M seed=1", 64);
}

static void teardown(void)
{
	ember_test_kill_strays(tmp);
	ember_test_rmtree(tmp);
}

TestSuite(fds, .init = setup, .fini = teardown, .timeout = 60);

/* Does any fd of pid point at a path containing needle? */
static bool has_fd_to(pid_t pid, const char *needle)
{
	char dir[64], path[PATH_MAX], link[PATH_MAX];
	struct dirent *e;
	bool found = false;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	d = opendir(dir);
	cr_assert_not_null(d, "%s: %s", dir, strerror(errno));
	while (!found && (e = readdir(d))) {
		ssize_t n;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n < 0)
			continue;
		link[n] = 0;
		found = strstr(link, needle) != NULL;
	}
	closedir(d);
	return found;
}

Test(fds, an_fd_the_launcher_leaked_is_closed_in_a_restored_vmm)
{
	char leak_path[PATH_MAX], sock[PATH_MAX];
	struct proc_result r;
	struct proc *p;
	int leak;

	snapt_join(leak_path, tmp, "leaked-fd");
	snapt_join(sock, tmp, "api.sock");
	/* no O_CLOEXEC: ember inherits it, as from a careless launcher */
	leak = open(leak_path, O_RDWR | O_CREAT, 0600);
	cr_assert_geq(leak, 3);
	p = ember_test_start("restore", "--snapshot", golden, "--api-sock", sock, NULL);
	close(leak);
	snapt_wait_socket(sock, RUN_MS);
	cr_assert_not(has_fd_to(proc_pid(p), "leaked-fd"),
		      "ember kept the launcher's fd to %s", leak_path);
	snapt_ctl(&r, sock, "shutdown", NULL);
	cr_assert_eq(r.status, 0, "ember ctl shutdown: %s", r.err);
	proc_result_free(&r);
	cr_assert_eq(proc_finish(p, RUN_MS, &r), 0);
	cr_assert_eq(r.status, 0, "ember exited %d:\n%s", r.status, r.err);
	proc_result_free(&r);
}
