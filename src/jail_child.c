/*
 * The jailed process, from fork to exec, in Firecracker's jailer's order: cgroup, new
 * mount/IPC/UTS namespaces (the PID namespace came with the fork), the network
 * namespace, the mounts, pivot_root, rlimits, fds, ids and capabilities, exec. Every
 * failure names its step and path; the parent removes what was created.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <grp.h>

#include "jail.h"

#define STEP_FAIL(eb, ...) errbuf_set(eb, -errno, __VA_ARGS__)

/* A device node in the jail's /dev, as the host has it (or the usual numbers). */
static int make_dev(const struct jail_opts *o, const char *name, unsigned maj, unsigned min,
		    mode_t mode, bool for_jail, bool required, struct errbuf *eb)
{
	char host[64], p[2 * PATH_MAX];
	struct stat st;
	dev_t dev = makedev(maj, min);

	snprintf(host, sizeof(host), "/dev/%s", name);
	if (stat(host, &st) == 0 && S_ISCHR(st.st_mode))
		dev = st.st_rdev;
	else if (!required)
		return 0;
	snprintf(p, sizeof(p), "%s/dev/%s", o->root, name);
	if (mknod(p, S_IFCHR | mode, dev))
		return STEP_FAIL(eb, "mknod %s: %s", p, strerror(errno));
	/* chmod: the umask must not change the mode asked for */
	if (chmod(p, mode) || (for_jail && chown(p, o->uid, o->gid)))
		return STEP_FAIL(eb, "setting up %s: %s", p, strerror(errno));
	return 0;
}

static int do_mounts(const struct jail_opts *o, struct errbuf *eb)
{
	char p[2 * PATH_MAX];
	int r;

	/* nothing mounted here propagates back to the host's namespace */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
		return STEP_FAIL(eb, "making the mounts private: %s", strerror(errno));
	/* pivot_root needs the new root to be a mount point */
	if (mount(o->root, o->root, NULL, MS_BIND, NULL))
		return STEP_FAIL(eb, "binding %s onto itself: %s", o->root, strerror(errno));
	snprintf(p, sizeof(p), "%s/dev", o->root);
	if (mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k"))
		return STEP_FAIL(eb, "mounting a tmpfs on %s: %s", p, strerror(errno));
	/* /dev/kvm and /dev/userfaultfd for the jail's uid only; the uffd backend needs the
	 * latter when vm.unprivileged_userfaultfd is 0 */
	if ((r = make_dev(o, "kvm", 10, 232, 0600, true, true, eb)) ||
	    (r = make_dev(o, "userfaultfd", 10, 257, 0600, true, false, eb)) ||
	    (r = make_dev(o, "null", 1, 3, 0666, false, true, eb)))
		return r;
	snprintf(p, sizeof(p), "%s/proc", o->root);
	/* the pool re-executes /proc/self/exe; ember reads /proc/self/{statm,smaps,pagemap} */
	if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL))
		return STEP_FAIL(eb, "mounting proc on %s: %s", p, strerror(errno));
	for (unsigned i = 0; i < o->nr_binds; i++) {
		const struct jail_bind *b = &o->binds[i];
		unsigned long ro = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV |
				   (b->exec ? 0 : MS_NOEXEC);

		snprintf(p, sizeof(p), "%s%s", o->root, b->dst);
		if (mount(b->src, p, NULL, MS_BIND, NULL))
			return STEP_FAIL(eb, "binding %s to %s: %s", b->src, p, strerror(errno));
		/* a bind mount takes its flags only from a remount */
		if (mount(NULL, p, NULL, ro, NULL))
			return STEP_FAIL(eb, "making %s read-only: %s", p, strerror(errno));
	}
	if (mount(NULL, o->root, NULL, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV, NULL))
		return STEP_FAIL(eb, "remounting %s nosuid,nodev: %s", o->root, strerror(errno));
	return 0;
}

static int do_pivot(const struct jail_opts *o, struct errbuf *eb)
{
	if (chdir(o->root))
		return STEP_FAIL(eb, "chdir %s: %s", o->root, strerror(errno));
	/* new and old root on the same directory, then the old one detached: nothing of
	 * the host's tree stays reachable */
	if (syscall(SYS_pivot_root, ".", "."))
		return STEP_FAIL(eb, "pivot_root %s: %s", o->root, strerror(errno));
	if (umount2(".", MNT_DETACH))
		return STEP_FAIL(eb, "detaching the old root: %s", strerror(errno));
	if (chdir("/"))
		return STEP_FAIL(eb, "chdir / in the jail: %s", strerror(errno));
	return 0;
}

static int do_rlimits(const struct jail_opts *o, struct errbuf *eb)
{
	struct rlimit nofile = { o->nofile, o->nofile }, fsize = { o->fsize, o->fsize };

	if (setrlimit(RLIMIT_NOFILE, &nofile))
		return STEP_FAIL(eb, "setrlimit(RLIMIT_NOFILE, %llu): %s",
				 (unsigned long long)o->nofile, strerror(errno));
	if (o->fsize != RLIM_INFINITY && setrlimit(RLIMIT_FSIZE, &fsize))
		return STEP_FAIL(eb, "setrlimit(RLIMIT_FSIZE, %llu): %s",
				 (unsigned long long)o->fsize, strerror(errno));
	return 0;
}

static int drop_privileges(const struct jail_opts *o, struct errbuf *eb)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct none[2];

	/* the bounding set first: dropping it needs CAP_SETPCAP, which setresuid takes */
	for (int cap = 0; cap < 64; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) && errno != EINVAL)
			return STEP_FAIL(eb, "dropping capability %d from the bounding set: %s", cap,
					 strerror(errno));
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) && errno != EINVAL)
		return STEP_FAIL(eb, "clearing the ambient capabilities: %s", strerror(errno));
	if (setgroups(0, NULL))
		return STEP_FAIL(eb, "setgroups: %s", strerror(errno));
	if (setresgid(o->gid, o->gid, o->gid))
		return STEP_FAIL(eb, "setresgid %u: %s", (unsigned)o->gid, strerror(errno));
	if (setresuid(o->uid, o->uid, o->uid))
		return STEP_FAIL(eb, "setresuid %u: %s", (unsigned)o->uid, strerror(errno));
	/* leaving uid 0 cleared the permitted and effective sets; the inheritable one stays
	 * unless cleared */
	memset(none, 0, sizeof(none));
	if (syscall(SYS_capset, &hdr, none))
		return STEP_FAIL(eb, "capset: %s", strerror(errno));
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return STEP_FAIL(eb, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	return 0;
}

void jail_child(const struct jail_opts *o, const struct jail_cgroup *cg, int errfd,
		struct errbuf *eb)
{
	static char *argv[256];
	char *envp[5];
	unsigned ne = 0;
	static char env_log[256], env_t0[64];
	const char *e;
	int fd;

	if (cg->nr && jail_cgroup_join(cg, eb))
		return;
	if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS)) {
		STEP_FAIL(eb, "unshare(mount, IPC, UTS namespaces): %s", strerror(errno));
		return;
	}
	/* a session of its own: no controlling terminal (no TIOCSTI into the operator's),
	 * and a Ctrl-C reaches it once, passed on by the jailer, not twice */
	if (setsid() < 0) {
		STEP_FAIL(eb, "setsid: %s", strerror(errno));
		return;
	}
	if (o->netns) {
		fd = open(o->netns, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET)) {
			STEP_FAIL(eb, "entering the network namespace %s: %s", o->netns,
				  strerror(errno));
			return;
		}
		close(fd);
	}
	if (sethostname(o->id, strlen(o->id))) {
		STEP_FAIL(eb, "sethostname %s: %s", o->id, strerror(errno));
		return;
	}
	if (do_mounts(o, eb) || do_pivot(o, eb) || do_rlimits(o, eb))
		return;
	/* every inherited fd but 0-2 (and our close-on-exec error pipe) */
	if ((errfd > 3 && syscall(SYS_close_range, 3u, (unsigned)errfd - 1, 0u)) ||
	    syscall(SYS_close_range, (unsigned)errfd + 1, ~0u, 0u)) {
		STEP_FAIL(eb, "close_range: %s", strerror(errno));
		return;
	}
	if (drop_privileges(o, eb))
		return;
	/* a jailer that dies takes the VM with it. Set here: a change of credentials
	 * clears it. If the jailer died already, the read end of errfd is gone. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL)) {
		STEP_FAIL(eb, "PR_SET_PDEATHSIG: %s", strerror(errno));
		return;
	}
	struct pollfd pfd = { .fd = errfd, .events = POLLOUT };
	if (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLERR))
		_exit(1);
	/* a small environment: the jail has no use for the launcher's */
	if ((e = getenv("EMBER_LOG")) && strlen(e) < 200) {
		snprintf(env_log, sizeof(env_log), "EMBER_LOG=%s", e);
		envp[ne++] = env_log;
	}
	if ((e = getenv("EMBER_T0_NS")) && strlen(e) < 32) {
		snprintf(env_t0, sizeof(env_t0), "EMBER_T0_NS=%s", e);
		envp[ne++] = env_t0;
	}
	envp[ne++] = "TMPDIR=/tmp";
	/* the jailer holds the bound files' read leases (jail_lease.c, src/memguard.c) */
	envp[ne++] = "EMBER_MEMGUARD=jailer";
	envp[ne] = NULL;
	if (o->argc + 4 > (int)(sizeof(argv) / sizeof(argv[0]))) {
		errbuf_set(eb, -E2BIG, "too many arguments for ember");
		return;
	}
	argv[0] = "ember";
	for (int i = 0; i < o->argc; i++)
		argv[i + 1] = o->argv[i];
	argv[o->argc + 1] = NULL;
	if (jail_wants_snapshot_root(o)) {
		/* snapshots the control socket asks for go beneath the jail's /run only */
		argv[o->argc + 1] = "--snapshot-root";
		argv[o->argc + 2] = "/run";
		argv[o->argc + 3] = NULL;
	}
	execve(JAIL_EMBER_PATH, argv, envp);
	STEP_FAIL(eb, "exec %s in the jail: %s", JAIL_EMBER_PATH, strerror(errno));
}
