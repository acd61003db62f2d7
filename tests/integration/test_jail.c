/*
 * ember jail on real KVM (README "The jailer"): a jailed restore runs the sandbox
 * guest to its answer, and the jailed process is checked from outside through /proc
 * (ids, capabilities, namespaces, fds, limits, cgroup, its root). The tests run as root,
 * as the jailer must. This machine's memory/cpu/pids controllers may be on cgroup v1
 * hierarchies: the cgroup test reads back whichever version the jailer reports and says
 * loudly which one it could not exercise (tests/unit/test_jail.c covers where the groups
 * of both versions go, not the kernel's side of v2).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sched.h>
#include <unistd.h>

#include "testlib.h"

#define RUN_MS   30000
#define JAIL_UID "64123"
#define JAIL_GID "64124"

static char tmp[PATH_MAX], base[PATH_MAX], golden[PATH_MAX], bind[PATH_MAX + 16];
static uint64_t golden_sum;

static void setup(void)
{
	ember_test_require_kvm();
	cr_assert_eq(geteuid(), 0, "ember jail needs root: these tests must run as root");
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(golden, tmp, "golden");
	snapt_join(base, tmp, "jails");
	golden_sum = snapt_golden(golden, "heap=4M seed=1", 64);
	/* the jail's ids read the snapshot through the bind mount: the operator's part */
	cr_assert_eq(chmod(golden, 0755), 0);
	snprintf(bind, sizeof(bind), "%s:/snapshot", golden);
}

static void teardown(void)
{
	ember_test_kill_strays(tmp);
	ember_test_rmtree(tmp);
}

TestSuite(jail, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers ------------------------------------------------------------------------ */

/* A jail id of this test's own (name-PID): a run that was killed half-way may have left
 * its groups, and ids are unique while they exist. Valid for the next few calls. */
static const char *J(const char *name)
{
	static char ring[8][64];
	static unsigned next;
	char *b = ring[next++ % 8];

	snprintf(b, sizeof(ring[0]), "%s-%d", name, (int)getpid());
	return b;
}

static bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

/* The jailed ember: the jailer's only child, once the ember-jail line says it runs. */
static pid_t jailed_pid(struct proc *p)
{
	char path[64], buf[64] = "";
	FILE *f;
	long pid = 0;

	cr_assert(proc_wait_output(p, "ember-jail ", RUN_MS), "no ember-jail line: the jail "
		  "was not set up");
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)proc_pid(p),
		 (int)proc_pid(p));
	f = fopen(path, "re");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	cr_assert_not_null(fgets(buf, sizeof(buf), f), "the jailer has no child");
	fclose(f);
	pid = strtol(buf, NULL, 10);
	cr_assert_gt(pid, 1);
	return (pid_t)pid;
}

/* The first line of /proc/PID/<file> that starts with key, value after it. */
static void proc_field(pid_t pid, const char *file, const char *key, char *out, size_t len)
{
	char path[64], line[512];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	f = fopen(path, "re");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key))) {
			char *v = line + strlen(key), *nl = strchr(v, '\n');

			if (nl)
				*nl = 0;
			while (*v == ' ' || *v == '\t')
				v++;
			snprintf(out, len, "%s", v);
			fclose(f);
			return;
		}
	fclose(f);
	cr_assert_fail("%s has no '%s' line", path, key);
}

static void ns_inode(pid_t pid, const char *ns, char *out, size_t len)
{
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)pid, ns);
	n = readlink(path, out, len - 1);
	cr_assert_gt(n, 0, "%s: %s", path, strerror(errno));
	out[n] = 0;
}

/* The jailer with its control socket: the guest waits for commands until shutdown.
 * The limits are ones each test can read back. */
static struct proc *start_confined(const char *id)
{
	return ember_test_start("jail", "--id", id, "--uid", JAIL_UID, "--gid", JAIL_GID,
				"--chroot-base", base, "--ro-bind", bind,
				"--cgroup", "memory.max=512M", "--cgroup", "pids.max=32",
				"--cgroup", "cpu.max=50000 100000",
				"--rlimit", "nofile=256", "--rlimit", "fsize=1073741824", "--",
				"restore", "--snapshot", "/snapshot", "--api-sock", "/run/api.sock",
				NULL);
}

/* ember ctl shutdown through the socket's host path; the jailer exits 0 with it. */
static void stop_confined(struct proc *p, const char *id)
{
	char sock[PATH_MAX];
	struct proc_result r;

	snapt_join(sock, base, "%s/root/run/api.sock", id);
	snapt_wait_socket(sock, RUN_MS);
	snapt_ctl(&r, sock, "shutdown", NULL);
	cr_assert_eq(r.status, 0, "ember ctl shutdown: %s", r.err);
	proc_result_free(&r);
	cr_assert_eq(proc_finish(p, RUN_MS, &r), 0);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "the jailed ember exited %d:\n%s", r.status, r.err);
	proc_result_free(&r);
}

/* The jailed process's group for controller ctrl ("memory", "pids", "" for v2), as a
 * directory of this namespace's cgroup mounts. */
static void cgroup_dir(pid_t pid, const char *ctrl, char *out, size_t len)
{
	char path[64], line[1024];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	f = fopen(path, "re");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL, *nl;

		if (!c2)
			continue;
		*c2 = 0;
		if ((nl = strchr(c2 + 1, '\n')))
			*nl = 0;
		if (*ctrl ? strcmp(c1 + 1, ctrl) : c1[1] != 0)
			continue;
		if (*ctrl)
			snprintf(out, len, "/sys/fs/cgroup/%s%s", ctrl, c2 + 1);
		else
			snprintf(out, len, "/sys/fs/cgroup%s%s", exists("/sys/fs/cgroup/unified") ?
				 "/unified" : "", c2 + 1);
		fclose(f);
		return;
	}
	fclose(f);
	cr_assert_fail("%s has no line for '%s'", path, ctrl);
}

static void read_small(const char *dir, const char *name, char *out, size_t len)
{
	char path[PATH_MAX + 64];
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	n = read(fd, out, len - 1);
	close(fd);
	cr_assert_geq(n, 0);
	out[n] = 0;
	if (n && out[n - 1] == '\n')
		out[n - 1] = 0;
}

/* ---- a jailed restore ------------------------------------------------------------ */

Test(jail, jailed_restore_runs_the_guest_to_its_answer)
{
	struct proc_result r;

	ember_test_run(&r, RUN_MS, "jail", "--id", J("vm1"), "--uid", JAIL_UID, "--gid", JAIL_GID,
		       "--chroot-base", base, "--ro-bind", bind, "--", "restore", "--snapshot",
		       "/snapshot", "--guest-cmd", "verify", "--guest-cmd", "exit", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "ember jail exited %d:\n%s", r.status, r.err);
	cr_assert_eq(snapt_checksum(r.out, 0), golden_sum, "the jailed guest's checksum is wrong");
	cr_assert_not_null(strstr(r.err, "ember-jail id=vm1-"), "no ember-jail line:\n%s", r.err);
	proc_result_free(&r);
}

Test(jail, json_gives_the_ember_jail_line_as_one_object)
{
	struct proc_result r;
	char line[1024], want[256];
	char *canon;

	ember_test_run(&r, RUN_MS, "jail", "--json", "--id", J("js"), "--uid", JAIL_UID, "--gid",
		       JAIL_GID, "--chroot-base", base, "--ro-bind", bind, "--", "restore",
		       "--snapshot", "/snapshot", "--guest-cmd", "exit", NULL);
	cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
	cr_assert_not_null(proc_find_line(r.err, "{\"id\":", line, sizeof(line)),
			   "no JSON line:\n%s", r.err);
	cr_assert_null(strstr(r.err, "ember-jail id="), "the key=value line came too");
	strcat(line, "\n"); /* one line, as printed */
	canon = ember_test_json_canon(line);
	snprintf(want, sizeof(want), "\"gid\":%s,\"id\":\"%s\",\"pid\":", JAIL_GID, J("js"));
	cr_assert_not_null(strstr(canon, want), "%s lacks %s", canon, want);
	cr_assert(strstr(canon, "\"cgroup\":\"none\""), "%s", canon);
	free(canon);
	proc_result_free(&r);
}

/* a single file bound: the kernel of a jailed boot */
Test(jail, jailed_boot_runs_a_bound_kernel_file)
{
	struct proc_result r;
	char kbind[PATH_MAX + 16];
	const char *kernel = ember_test_guest("hello");

	snprintf(kbind, sizeof(kbind), "%s:/kernel/hello.elf", kernel);
	ember_test_run(&r, RUN_MS, "jail", "--id", J("boot"), "--uid", JAIL_UID, "--gid",
		       JAIL_GID, "--chroot-base", base, "--ro-bind", kbind, "--", "boot",
		       "--kernel", "/kernel/hello.elf", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
	cr_assert_str_eq(r.out, "hello from ember guest\n");
	proc_result_free(&r);
}

/* the page server as an unprivileged user: /dev/userfaultfd in the jail is the jail's */
Test(jail, jailed_restore_with_the_uffd_backend_answers_right)
{
	struct proc_result r;

	ember_test_run(&r, RUN_MS, "jail", "--id", J("uffd"), "--uid", JAIL_UID, "--gid", JAIL_GID,
		       "--chroot-base", base, "--ro-bind", bind, "--", "restore", "--snapshot",
		       "/snapshot", "--mem-backend", "uffd", "--guest-cmd", "verify",
		       "--guest-cmd", "exit", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "ember jail exited %d:\n%s", r.status, r.err);
	cr_assert_eq(snapt_checksum(r.out, 0), golden_sum, "the jailed guest's checksum is wrong");
	proc_result_free(&r);
}

Test(jail, jailed_ember_runs_as_the_jail_uid_and_gid)
{
	struct proc *p = start_confined(J("ids"));
	pid_t pid = jailed_pid(p);
	char v[128];

	proc_field(pid, "status", "Uid:", v, sizeof(v));
	cr_assert_str_eq(v, JAIL_UID "\t" JAIL_UID "\t" JAIL_UID "\t" JAIL_UID);
	proc_field(pid, "status", "Gid:", v, sizeof(v));
	cr_assert_str_eq(v, JAIL_GID "\t" JAIL_GID "\t" JAIL_GID "\t" JAIL_GID);
	proc_field(pid, "status", "Groups:", v, sizeof(v));
	cr_assert_str_eq(v, "", "supplementary groups left: %s", v);
	stop_confined(p, J("ids"));
}

Test(jail, jailed_ember_has_no_capabilities_and_no_new_privs)
{
	struct proc *p = start_confined(J("caps"));
	pid_t pid = jailed_pid(p);
	static const char *const sets[] = { "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:" };
	char v[128];

	for (unsigned i = 0; i < 5; i++) {
		proc_field(pid, "status", sets[i], v, sizeof(v));
		cr_assert_str_eq(v, "0000000000000000", "%s %s", sets[i], v);
	}
	proc_field(pid, "status", "NoNewPrivs:", v, sizeof(v));
	cr_assert_str_eq(v, "1");
	stop_confined(p, J("caps"));
}

Test(jail, jailed_ember_has_its_own_mount_pid_ipc_and_uts_namespaces)
{
	struct proc *p = start_confined(J("ns"));
	pid_t pid = jailed_pid(p);
	static const char *const nss[] = { "mnt", "pid", "ipc", "uts" };
	char mine[64], its[64], v[64];

	for (unsigned i = 0; i < 4; i++) {
		ns_inode(getpid(), nss[i], mine, sizeof(mine));
		ns_inode(pid, nss[i], its, sizeof(its));
		cr_assert_str_neq(mine, its, "the jailed ember shares the %s namespace", nss[i]);
	}
	/* PID 1 of its namespace */
	proc_field(pid, "status", "NSpid:", v, sizeof(v));
	cr_assert(strlen(v) > 2 && !strcmp(v + strlen(v) - 2, "\t1"), "NSpid: %s", v);
	stop_confined(p, J("ns"));
}

Test(jail, netns_puts_the_jailed_ember_in_that_network_namespace)
{
	char nspath[64], want[64], its[64], mine[64];
	struct proc *p;
	pid_t holder, pid;
	int ready[2];
	char c;

	/* a process that holds a new network namespace for the test's length */
	cr_assert_eq(pipe(ready), 0);
	holder = fork();
	cr_assert_geq(holder, 0);
	if (holder == 0) {
		/* it dies with this test, whatever fails */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) || unshare(CLONE_NEWNET))
			_exit(1);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	close(ready[1]);
	cr_assert_eq(read(ready[0], &c, 1), 1, "the namespace holder failed");
	close(ready[0]);
	snprintf(nspath, sizeof(nspath), "/proc/%d/ns/net", (int)holder);
	ns_inode(holder, "net", want, sizeof(want));
	p = ember_test_start("jail", "--id", J("net"), "--uid", JAIL_UID, "--gid", JAIL_GID,
			     "--chroot-base", base, "--ro-bind", bind, "--netns", nspath, "--",
			     "restore", "--snapshot", "/snapshot", "--api-sock", "/run/api.sock",
			     NULL);
	pid = jailed_pid(p);
	ns_inode(pid, "net", its, sizeof(its));
	ns_inode(getpid(), "net", mine, sizeof(mine));
	cr_assert_str_eq(its, want, "the jailed ember is in %s, not %s", its, want);
	cr_assert_str_neq(its, mine);
	stop_confined(p, J("net"));
	kill(holder, SIGKILL);
	waitpid(holder, NULL, 0);
}

Test(jail, jailed_ember_leads_a_session_of_its_own)
{
	struct proc *p = start_confined(J("sid"));
	pid_t pid = jailed_pid(p);
	char path[64], buf[512], *close_paren;
	int sid = 0, fd;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	cr_assert_gt(n, 0);
	buf[n] = 0;
	/* pid (comm) state ppid pgrp session ... */
	close_paren = strrchr(buf, ')');
	cr_assert_not_null(close_paren);
	cr_assert_eq(sscanf(close_paren + 2, "%*c %*d %*d %d", &sid), 1);
	cr_assert_eq(sid, pid, "the jailed ember is in session %d, not its own", sid);
	stop_confined(p, J("sid"));
}

Test(jail, an_fd_the_launcher_leaked_is_closed_in_the_jailed_ember)
{
	char leak_path[PATH_MAX], dir[64], link[PATH_MAX];
	int leak;
	struct proc *p;
	pid_t pid;
	DIR *d;
	struct dirent *e;

	snapt_join(leak_path, tmp, "leaked-fd");
	/* no O_CLOEXEC: the jailer inherits it, as from a careless launcher */
	leak = open(leak_path, O_RDWR | O_CREAT, 0600);
	cr_assert_geq(leak, 3);
	p = start_confined(J("fds"));
	close(leak);
	pid = jailed_pid(p);
	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	d = opendir(dir);
	cr_assert_not_null(d);
	while ((e = readdir(d))) {
		char path[PATH_MAX];
		ssize_t n;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n < 0)
			continue;
		link[n] = 0;
		cr_assert_null(strstr(link, "leaked-fd"), "fd %s of the jailed ember is the "
			       "launcher's %s", e->d_name, link);
	}
	closedir(d);
	stop_confined(p, J("fds"));
}

Test(jail, cgroup_limits_are_set_on_the_jailed_embers_group)
{
	struct proc *p = start_confined(J("cg"));
	pid_t pid = jailed_pid(p);
	char dir[PATH_MAX], v[64];

	if (exists("/sys/fs/cgroup/memory/cgroup.procs")) {
		/* said on every run (the runner shows [----] lines); not cr_log_warn, which
		 * makes Criterion exit 1 */
		cr_log_info("NOT TESTED HERE: cgroup v1 controllers on this machine, so the "
			    "jailer's v1 path runs; cgroup v2 limits are not exercised on a kernel "
			    "(only where v2's group goes, by tests/unit/test_jail.c)");
		cgroup_dir(pid, "memory", dir, sizeof(dir));
		read_small(dir, "memory.limit_in_bytes", v, sizeof(v));
		cr_assert_str_eq(v, "536870912");
		cgroup_dir(pid, "pids", dir, sizeof(dir));
		read_small(dir, "pids.max", v, sizeof(v));
		cr_assert_str_eq(v, "32");
		cgroup_dir(pid, "cpu", dir, sizeof(dir));
		read_small(dir, "cpu.cfs_quota_us", v, sizeof(v));
		cr_assert_str_eq(v, "50000");
		read_small(dir, "cpu.cfs_period_us", v, sizeof(v));
		cr_assert_str_eq(v, "100000");
	} else {
		cr_log_info("NOT TESTED HERE: cgroup v2 on this machine, so the jailer's v1 path "
			    "is not exercised");
		cgroup_dir(pid, "", dir, sizeof(dir));
		read_small(dir, "memory.max", v, sizeof(v));
		cr_assert_str_eq(v, "536870912");
		read_small(dir, "pids.max", v, sizeof(v));
		cr_assert_str_eq(v, "32");
		read_small(dir, "cpu.max", v, sizeof(v));
		cr_assert_str_eq(v, "50000 100000");
	}
	cr_assert_not_null(strstr(dir, "/ember/cg-"), "the group %s is not PARENT/ID", dir);
	stop_confined(p, J("cg"));
	cr_assert(!exists(dir), "the jailer left the group %s behind", dir);
}

Test(jail, rlimits_nofile_and_fsize_are_applied)
{
	struct proc *p = start_confined(J("rl"));
	pid_t pid = jailed_pid(p);
	char v[128], soft[32], hard[32];

	proc_field(pid, "limits", "Max open files", v, sizeof(v));
	cr_assert_eq(sscanf(v, "%31s %31s", soft, hard), 2);
	cr_assert_str_eq(soft, "256");
	cr_assert_str_eq(hard, "256");
	proc_field(pid, "limits", "Max file size", v, sizeof(v));
	cr_assert_eq(sscanf(v, "%31s %31s", soft, hard), 2);
	cr_assert_str_eq(soft, "1073741824");
	cr_assert_str_eq(hard, "1073741824");
	stop_confined(p, J("rl"));
}

Test(jail, snapshot_is_the_original_files_mounted_read_only_not_a_copy)
{
	struct proc *p = start_confined(J("ro"));
	pid_t pid = jailed_pid(p);
	char in_jail[PATH_MAX], orig[PATH_MAX];
	struct stat a, b;
	struct statvfs vfs;
	int fd;

	snprintf(in_jail, sizeof(in_jail), "/proc/%d/root/snapshot/memory.raw", (int)pid);
	snapt_join(orig, golden, "memory.raw");
	cr_assert_eq(stat(in_jail, &a), 0, "%s: %s", in_jail, strerror(errno));
	cr_assert_eq(stat(orig, &b), 0);
	cr_assert(a.st_dev == b.st_dev && a.st_ino == b.st_ino, "the jail's memory.raw is "
		  "not the snapshot's own file");
	cr_assert_eq(statvfs(in_jail, &vfs), 0);
	cr_assert(vfs.f_flag & ST_RDONLY, "the snapshot is not mounted read-only in the jail");
	/* even root cannot write through it */
	fd = open(in_jail, O_WRONLY | O_CLOEXEC);
	cr_assert(fd < 0 && errno == EROFS, "opening it for writing: %s",
		  fd < 0 ? strerror(errno) : "succeeded");
	/* and nothing of it on the host's side of the jail directory */
	snapt_join(in_jail, base, "%s/root/snapshot/memory.raw", J("ro"));
	cr_assert(!exists(in_jail), "%s exists outside the jail's mount namespace", in_jail);
	stop_confined(p, J("ro"));
}

Test(jail, a_host_path_outside_the_jail_root_is_not_reachable)
{
	struct proc_result r;

	ember_test_run(&r, RUN_MS, "jail", "--id", J("out"), "--uid", JAIL_UID, "--gid", JAIL_GID,
		       "--chroot-base", base, "--ro-bind", bind, "--", "restore", "--snapshot",
		       golden, "--guest-cmd", "exit", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "exit %d:\n%s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, golden), "the error does not name %s:\n%s", golden,
			   r.err);
	cr_assert_null(strstr(r.out, "checksum="), "the guest ran from a host path");
	proc_result_free(&r);
}

Test(jail, jailed_ember_dies_with_a_killed_jailer)
{
	struct proc *p = start_confined(J("orphan"));
	pid_t pid = jailed_pid(p);
	struct proc_result r;
	char stat_path[64];
	unsigned waited;

	cr_assert_eq(kill(proc_pid(p), SIGKILL), 0);
	proc_finish(p, RUN_MS, &r);
	proc_result_free(&r);
	snprintf(stat_path, sizeof(stat_path), "/proc/%d/status", (int)pid);
	for (waited = 0; waited < 5000 && exists(stat_path); waited += 10)
		usleep(10000);
	cr_assert(!exists(stat_path), "the jailed ember %d outlived its jailer", (int)pid);
	/* nothing removed its group: --cleanup does */
	ember_test_run(&r, RUN_MS, "jail", "--cleanup", "--id", J("orphan"), "--chroot-base", base,
		       NULL);
	cr_assert_eq(r.status, 0, "--cleanup exited %d:\n%s", r.status, r.err);
	proc_result_free(&r);
}

/* ---- a jailed pool ---------------------------------------------------------------- */

Test(jail, jailed_pool_serves_an_invocation_and_drains_on_sigterm)
{
	struct fnt_golden fg;
	char fbind[PATH_MAX + 16], sock[PATH_MAX];
	uint8_t in[1000], want[1008];
	struct proc_result r;
	struct proc *p;
	pid_t pool_pid;
	const char *file;

	fnt_golden(&fg, tmp, 4, 64);
	cr_assert_eq(chmod(fg.dir, 0755), 0);
	snprintf(fbind, sizeof(fbind), "%s:/snapshot", fg.dir);
	p = ember_test_start("jail", "--id", J("pool"), "--uid", JAIL_UID, "--gid", JAIL_GID,
			     "--chroot-base", base, "--ro-bind", fbind, "--cgroup", "pids.max=16",
			     "--", "pool", "--snapshot", "/snapshot", "--socket", "/run/pool.sock",
			     "--size", "1", NULL);
	pool_pid = jailed_pid(p);
	snapt_join(sock, base, "%s/root/run/pool.sock", J("pool"));
	snapt_wait_socket(sock, RUN_MS);
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 7 + 3);
	file = ember_test_write_file(tmp, "in.bin", in, sizeof(in));
	cr_assert_eq(fnt_mix(&fg, in, sizeof(in), want), sizeof(want));
	ember_test_run(&r, RUN_MS, "invoke", "--pool", sock, "--payload", file, NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "ember invoke exited %d:\n%s", r.status, r.err);
	cr_assert_eq(r.out_len, sizeof(want));
	cr_assert(!memcmp(r.out, want, sizeof(want)), "the answer is not the golden heap's");
	proc_result_free(&r);
	/* the jailer passes SIGTERM on: the pool drains and exits 0 */
	cr_assert_eq(kill(proc_pid(p), SIGTERM), 0);
	cr_assert_eq(proc_finish(p, RUN_MS, &r), 0);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "the jailed pool exited %d:\n%s", r.status, r.err);
	proc_result_free(&r);
	cr_assert(kill(pool_pid, 0) < 0 && errno == ESRCH, "the pool outlived its jailer");
	fnt_golden_free(&fg);
}

/* ---- bad arguments and failed setups leave nothing behind -------------------------- */

static void assert_refused(int want_status, const char *needle, const char *const *args)
{
	struct proc_result r;
	char *argv[32];
	unsigned n = 0;
	int ret;

	argv[n++] = (char *)ember_test_path("ember");
	for (; *args; args++)
		argv[n++] = (char *)*args;
	argv[n] = NULL;
	ret = proc_run(argv, RUN_MS, &r);
	cr_assert_eq(ret, 0);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, want_status, "exit %d, not %d:\n%s", r.status, want_status, r.err);
	cr_assert_not_null(strstr(r.err, needle), "the error does not say '%s':\n%s", needle,
			   r.err);
	proc_result_free(&r);
}

Test(jail, missing_uid_is_a_usage_error_and_creates_nothing)
{
	const char *args[] = { "jail", "--id", J("nouid"), "--gid", JAIL_GID, "--chroot-base", base,
			       "--", "restore", "--snapshot", "/snapshot", NULL };

	assert_refused(2, "--uid and --gid are required", args);
	cr_assert(!exists(base), "%s was created", base);
}

Test(jail, id_with_a_slash_is_refused)
{
	const char *args[] = { "jail", "--id", "../x", "--uid", JAIL_UID, "--gid", JAIL_GID,
			       "--chroot-base", base, "--", "restore", NULL };

	assert_refused(2, "--id: '../x' may hold only", args);
	cr_assert(!exists(base), "%s was created", base);
}

Test(jail, uid_0_is_refused)
{
	const char *args[] = { "jail", "--id", J("root"), "--uid", "0", "--gid", JAIL_GID,
			       "--chroot-base", base, "--", "restore", NULL };

	assert_refused(2, "--uid: 0 is root", args);
}

Test(jail, missing_snapshot_to_bind_is_refused_and_creates_nothing)
{
	char nope[PATH_MAX], arg[PATH_MAX + 16];
	const char *args[] = { "jail", "--id", J("nosnap"), "--uid", JAIL_UID, "--gid", JAIL_GID,
			       "--chroot-base", base, "--ro-bind", arg, "--", "restore",
			       "--snapshot", "/snapshot", NULL };

	snapt_join(nope, tmp, "no-such-snapshot");
	snprintf(arg, sizeof(arg), "%s:/snapshot", nope);
	assert_refused(2, nope, args);
	cr_assert(!exists(base), "%s was created", base);
}

Test(jail, failed_setup_removes_the_jail_directory_and_its_cgroup)
{
	char notns[PATH_MAX], dir[PATH_MAX];
	const char *args[] = { "jail", "--id", J("fail"), "--uid", JAIL_UID, "--gid", JAIL_GID,
			       "--chroot-base", base, "--ro-bind", bind, "--cgroup", "pids.max=8",
			       "--netns", notns, "--", "restore", "--snapshot", "/snapshot", NULL };
	FILE *f;
	char line[1024];

	/* a readable file that is no namespace: setns fails in the child, after the
	 * directory and the group were made */
	snapt_join(notns, tmp, "not-a-netns");
	ember_test_write_file(tmp, "not-a-netns", "x", 1);
	assert_refused(1, "network namespace", args);
	snapt_join(dir, base, "%s", J("fail"));
	cr_assert(!exists(dir), "%s was left behind", dir);
	cr_assert(exists(base), "the chroot base itself stays");
	/* our own pids group + ember/fail */
	f = fopen("/proc/self/cgroup", "re");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *c = strstr(line, ":pids:"), *nl = strchr(line, '\n');

		if (!c)
			continue;
		if (nl)
			*nl = 0;
		snprintf(dir, sizeof(dir), "/sys/fs/cgroup/pids%s/ember/%s",
			 strcmp(c + 6, "/") ? c + 6 : "", J("fail"));
		cr_assert(!exists(dir), "the group %s was left behind", dir);
	}
	fclose(f);
}

Test(jail, an_existing_jail_directory_is_refused_and_kept)
{
	char dir[PATH_MAX], keep[PATH_MAX];
	const char *args[] = { "jail", "--id", J("busy"), "--uid", JAIL_UID, "--gid", JAIL_GID,
			       "--chroot-base", base, "--", "restore", "--snapshot", "/snapshot",
			       NULL };

	snapt_join(dir, base, "%s", J("busy"));
	cr_assert_eq(mkdir(base, 0755), 0);
	cr_assert_eq(mkdir(dir, 0755), 0);
	snapt_join(keep, dir, "keep");
	ember_test_write_file(dir, "keep", "k", 1);
	assert_refused(1, "already exists", args);
	cr_assert(exists(keep), "the existing directory was touched");
}

Test(jail, cleanup_removes_what_a_run_left)
{
	struct proc_result r;
	char dir[PATH_MAX];

	ember_test_run(&r, RUN_MS, "jail", "--id", J("left"), "--uid", JAIL_UID, "--gid", JAIL_GID,
		       "--chroot-base", base, "--ro-bind", bind, "--", "restore", "--snapshot",
		       "/snapshot", "--guest-cmd", "exit", "--console", "file:/run/console.log",
		       NULL);
	cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
	proc_result_free(&r);
	snapt_join(dir, base, "%s/root/run/console.log", J("left"));
	cr_assert(exists(dir), "the console file is not in the jail's /run on the host");
	ember_test_run(&r, RUN_MS, "jail", "--cleanup", "--id", J("left"), "--chroot-base", base,
		       NULL);
	cr_assert_eq(r.status, 0, "--cleanup exited %d:\n%s", r.status, r.err);
	proc_result_free(&r);
	snapt_join(dir, base, "%s", J("left"));
	cr_assert(!exists(dir), "%s is still there", dir);
}

Test(jail, cleanup_refuses_a_running_jail)
{
	struct proc *p = start_confined(J("live"));
	struct proc_result r;
	char dir[PATH_MAX];

	jailed_pid(p);
	ember_test_run(&r, RUN_MS, "jail", "--cleanup", "--id", J("live"), "--chroot-base", base,
		       NULL);
	cr_assert_eq(r.status, 1, "--cleanup of a running jail exited %d:\n%s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, "is running"), "%s", r.err);
	proc_result_free(&r);
	snapt_join(dir, base, "%s/root/run", J("live"));
	cr_assert(exists(dir), "--cleanup removed a running jail's directory");
	stop_confined(p, J("live"));
	ember_test_run(&r, RUN_MS, "jail", "--cleanup", "--id", J("live"), "--chroot-base", base,
		       NULL);
	cr_assert_eq(r.status, 0, "--cleanup after the jail stopped exited %d:\n%s", r.status,
		     r.err);
	proc_result_free(&r);
	snapt_join(dir, base, "%s", J("live"));
	cr_assert(!exists(dir), "%s is still there", dir);
}

/* ---- the bound files cannot change under the jailed VM (src/jail_lease.c) ---------- */

/* The jailed ember cannot lease the operator's files (not its own, no CAP_LEASE): the
 * jailer holds the leases, and a truncate of the golden memory file stops the jailed VM
 * before the truncate can happen. Before: the jailed ember refused to restore at all. */
Test(jail, truncating_the_bound_memory_file_stops_the_jailed_vm_first)
{
	const char *id = J("lease");
	struct proc *p = start_confined(id);
	char sock[PATH_MAX], mem[PATH_MAX];
	struct proc_result r;

	jailed_pid(p);
	snapt_join(sock, base, "%s/root/run/api.sock", id);
	snapt_wait_socket(sock, RUN_MS);
	snapt_join(mem, golden, "memory.raw");
	/* blocks until the jailer has stopped its ember and let go of the file */
	cr_assert_eq(truncate(mem, 4096), 0, "truncate: %s", strerror(errno));
	cr_assert_eq(proc_finish(p, RUN_MS, &r), 0, "the jailer did not end");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "the jailer exited %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "memory.raw is being changed by another process"), "%s", r.err);
	proc_result_free(&r);
}

Test(jail, a_bound_file_open_for_writing_elsewhere_is_refused)
{
	const char *args[] = { "jail", "--id", J("busy"), "--uid", JAIL_UID, "--gid", JAIL_GID,
			       "--chroot-base", base, "--ro-bind", bind, "--", "restore",
			       "--snapshot", "/snapshot", NULL };
	char mem[PATH_MAX], dir[PATH_MAX];
	int fd;

	snapt_join(mem, golden, "memory.raw");
	fd = open(mem, O_WRONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "open: %s", strerror(errno));
	assert_refused(1, "is open for writing by another process", args);
	close(fd);
	snapt_join(dir, base, "%s", J("busy"));
	cr_assert_not(exists(dir), "%s was left behind", dir);
}

/* The jailer gives its ember --snapshot-root /run: a snapshot asked for through the
 * control socket lands beneath /run, anywhere else in the jail is refused. */
Test(jail, snapshots_through_the_control_socket_go_beneath_run_only)
{
	const char *id = J("snaproot");
	struct proc *p = start_confined(id);
	char sock[PATH_MAX], made[PATH_MAX];
	struct proc_result r;

	jailed_pid(p);
	snapt_join(sock, base, "%s/root/run/api.sock", id);
	snapt_wait_socket(sock, RUN_MS);
	snapt_ctl(&r, sock, "snapshot", "/tmp/s1", NULL);
	cr_assert_neq(r.status, 0, "a snapshot outside /run was taken");
	cr_assert(strstr(r.err, "/tmp/s1"), "the error does not name the path: %s", r.err);
	proc_result_free(&r);
	snapt_ctl(&r, sock, "snapshot", "/run/s2", NULL);
	cr_assert_eq(r.status, 0, "snapshot beneath /run: %s", r.err);
	proc_result_free(&r);
	snapt_join(made, base, "%s/root/run/s2/state.msgpack", id);
	cr_assert(exists(made), "%s is missing", made);
	stop_confined(p, id);
}
