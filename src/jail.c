/*
 * ember jail: the launcher side. Validates the flags, creates the per-VM directory and
 * cgroup, forks the jailed process as PID 1 of a new PID namespace (jail_child.c does
 * the rest there) and stays as its parent: it relays SIGTERM/SIGINT/SIGHUP, returns its
 * exit status, and removes what it created when the setup fails (README "The jailer").
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jail.h"

static int parse_id(const char *s, struct errbuf *eb)
{
	size_t n = strlen(s);

	if (n == 0 || n > JAIL_ID_MAX)
		return errbuf_set(eb, -EINVAL, "--id: '%s' must be 1..%d characters", s, JAIL_ID_MAX);
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
			return errbuf_set(eb, -EINVAL, "--id: '%s' may hold only letters, digits, "
					  "'-' and '_' (it names a directory)", s);
	return 0;
}

/* A uid or gid: decimal, not 0 (the point is to run unprivileged), not (uid_t)-1. */
static int parse_id_num(const char *flag, const char *s, uint32_t *out, struct errbuf *eb)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (!*s || *end || errno || s[0] == '-' || v >= UINT32_MAX)
		return errbuf_set(eb, -EINVAL, "%s: '%s' is not a numeric id", flag, s);
	if (v == 0)
		return errbuf_set(eb, -EINVAL, "%s: 0 is root; the jailed ember must run "
				  "unprivileged", flag);
	*out = (uint32_t)v;
	return 0;
}

static int parse_rlimit(const char *s, struct jail_opts *o, struct errbuf *eb)
{
	const char *eq = strchr(s, '=');
	char *end;
	unsigned long long v;

	if (!eq)
		return errbuf_set(eb, -EINVAL, "--rlimit: '%s' is not NAME=VALUE", s);
	errno = 0;
	v = strtoull(eq + 1, &end, 10);
	if (!eq[1] || *end || errno || eq[1] == '-')
		return errbuf_set(eb, -EINVAL, "--rlimit: '%s': the value must be a decimal "
				  "number", s);
	if (!strncmp(s, "nofile=", 7)) {
		if (v < 16 || v > (1u << 20))
			return errbuf_set(eb, -EINVAL, "--rlimit nofile: %llu is not in 16..%u", v,
					  1u << 20);
		o->nofile = v;
	} else if (!strncmp(s, "fsize=", 6)) {
		o->fsize = v;
	} else {
		return errbuf_set(eb, -EINVAL, "--rlimit: unknown limit in '%s' (nofile, fsize)", s);
	}
	return 0;
}

/* HOST[:JAIL]: JAIL absolute, no "..", not where the jail's own mounts go. */
static int parse_bind(const char *s, struct jail_opts *o, struct errbuf *eb)
{
	struct jail_bind *b;
	const char *colon = strchr(s, ':'), *base;
	char host[PATH_MAX];
	size_t hl = colon ? (size_t)(colon - s) : strlen(s);

	if (o->nr_binds >= JAIL_MAX_BINDS)
		return errbuf_set(eb, -EINVAL, "--ro-bind: at most %d", JAIL_MAX_BINDS);
	if (hl == 0 || hl >= sizeof(host))
		return errbuf_set(eb, -EINVAL, "--ro-bind: '%s': no host path", s);
	memcpy(host, s, hl);
	host[hl] = 0;
	b = &o->binds[o->nr_binds];
	if (!realpath(host, b->src))
		return errbuf_set(eb, -errno, "--ro-bind: %s: %s", host, strerror(errno));
	if (colon) {
		if (strlen(colon + 1) >= sizeof(b->dst))
			return errbuf_set(eb, -EINVAL, "--ro-bind: '%s': path too long", s);
		strcpy(b->dst, colon + 1);
	} else {
		base = strrchr(b->src, '/');
		snprintf(b->dst, sizeof(b->dst), "/%s", base && base[1] ? base + 1 : "host");
	}
	if (b->dst[0] != '/' || !strcmp(b->dst, "/") || strstr(b->dst, "/..") ||
	    strstr(b->dst, "//"))
		return errbuf_set(eb, -EINVAL, "--ro-bind: '%s': the jail path must be absolute, "
				  "below /, without '..'", s);
	static const char *const reserved[] = { "/dev", "/proc", "/tmp", "/run",
						JAIL_EMBER_PATH, "/lib", "/lib64", "/usr" };
	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
		size_t rl = strlen(reserved[i]);

		if (!strncmp(b->dst, reserved[i], rl) && (!b->dst[rl] || b->dst[rl] == '/'))
			return errbuf_set(eb, -EINVAL, "--ro-bind: '%s': %s is the jail's own",
					  s, reserved[i]);
	}
	o->nr_binds++;
	return 0;
}

int jail_parse(int argc, char **argv, struct jail_opts *o, struct errbuf *eb)
{
	int i, r;

	memset(o, 0, sizeof(*o));
	o->chroot_base = JAIL_DEFAULT_BASE;
	o->cgroup_parent = JAIL_DEFAULT_CGROUP_PARENT;
	o->nofile = JAIL_DEFAULT_NOFILE;
	o->fsize = RLIM_INFINITY;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (!strcmp(a, "--cleanup")) {
			o->cleanup = true;
			continue;
		}
		if (!strcmp(a, "--json")) {
			o->json = true;
			continue;
		}
		if (strncmp(a, "--", 2))
			return errbuf_set(eb, -EINVAL, "jail: unexpected '%s' (ember's command goes "
					  "after '--')", a);
		if (!v)
			return errbuf_set(eb, -EINVAL, "jail: %s needs a value", a);
		i++;
		if (!strcmp(a, "--id")) {
			if ((r = parse_id(v, eb)))
				return r;
			o->id = v;
		} else if (!strcmp(a, "--uid")) {
			if ((r = parse_id_num(a, v, &o->uid, eb)))
				return r;
			o->uid_set = true;
		} else if (!strcmp(a, "--gid")) {
			if ((r = parse_id_num(a, v, &o->gid, eb)))
				return r;
			o->gid_set = true;
		} else if (!strcmp(a, "--chroot-base")) {
			if (v[0] != '/' || strlen(v) > PATH_MAX - JAIL_ID_MAX - 64)
				return errbuf_set(eb, -EINVAL, "--chroot-base: '%s' must be an absolute "
						  "path", v);
			o->chroot_base = v;
		} else if (!strcmp(a, "--cgroup-parent")) {
			if (!v[0] || strstr(v, "..") || strlen(v) > 256)
				return errbuf_set(eb, -EINVAL, "--cgroup-parent: '%s' is not a cgroup "
						  "path", v);
			o->cgroup_parent = v;
		} else if (!strcmp(a, "--cgroup")) {
			const char *eq = strchr(v, '=');
			char key[32];

			if (o->nr_cg >= JAIL_MAX_CGROUP)
				return errbuf_set(eb, -EINVAL, "--cgroup: at most %d", JAIL_MAX_CGROUP);
			if (!eq || eq == v || (size_t)(eq - v) >= sizeof(key))
				return errbuf_set(eb, -EINVAL, "--cgroup: '%s' is not KEY=VALUE", v);
			memcpy(key, v, (size_t)(eq - v));
			key[eq - v] = 0;
			if ((r = jail_cgroup_check(key, eq + 1, eb)))
				return r;
			snprintf(o->cg[o->nr_cg].key, sizeof(o->cg[0].key), "%s", key);
			o->cg[o->nr_cg++].value = eq + 1;
		} else if (!strcmp(a, "--netns")) {
			o->netns = v;
		} else if (!strcmp(a, "--rlimit")) {
			if ((r = parse_rlimit(v, o, eb)))
				return r;
		} else if (!strcmp(a, "--ro-bind")) {
			if ((r = parse_bind(v, o, eb)))
				return r;
		} else {
			return errbuf_set(eb, -EINVAL, "jail: unknown flag '%s'", a);
		}
	}
	if (!o->id)
		return errbuf_set(eb, -EINVAL, "jail: --id is required");
	if (snprintf(o->dir, sizeof(o->dir), "%s/%s", o->chroot_base, o->id) >= (int)sizeof(o->dir) ||
	    snprintf(o->root, sizeof(o->root), "%s/root", o->dir) >= (int)sizeof(o->root))
		return errbuf_set(eb, -EINVAL, "--chroot-base: path too long");
	if (o->cleanup)
		return i < argc ? errbuf_set(eb, -EINVAL, "jail --cleanup runs nothing: no "
					     "command after '--'") : 0;
	if (!o->uid_set || !o->gid_set)
		return errbuf_set(eb, -EINVAL, "jail: --uid and --gid are required (the ids the "
				  "jailed ember runs as)");
	if (i >= argc)
		return errbuf_set(eb, -EINVAL, "jail: no command: ember jail [flags] -- "
				  "restore|boot|pool ...");
	if (strcmp(argv[i], "restore") && strcmp(argv[i], "boot") && strcmp(argv[i], "pool"))
		return errbuf_set(eb, -EINVAL, "jail: '%s' cannot be jailed (restore, boot or pool)",
				  argv[i]);
	if (o->netns && access(o->netns, R_OK))
		return errbuf_set(eb, -EINVAL, "--netns: %s: %s", o->netns, strerror(errno));
	o->argv = argv + i;
	o->argc = argc - i;
	return 0;
}

/* A restore or boot with a control socket and no --snapshot-root of its own gets
 * `--snapshot-root /run` appended (README, the jailer). */
bool jail_wants_snapshot_root(const struct jail_opts *o)
{
	bool api = false;

	if (o->argc < 1 || (strcmp(o->argv[0], "restore") && strcmp(o->argv[0], "boot")))
		return false;
	for (int i = 1; i < o->argc; i++) {
		if (!strcmp(o->argv[i], "--"))
			break;
		if (!strncmp(o->argv[i], "--snapshot-root", 15))
			return false;
		if (!strncmp(o->argv[i], "--api-sock", 10))
			api = true;
	}
	return api;
}

/* ---- running -------------------------------------------------------------------------- */

static volatile sig_atomic_t child_pid;
static volatile sig_atomic_t lease_broken_fd = -1;

static void relay_signal(int sig)
{
	if (child_pid > 0)
		kill(child_pid, sig);
}

/* A bound file is about to change: stop the jailed ember first (jail_lease.c). */
static void on_lease_break(int sig, siginfo_t *si, void *uctx)
{
	(void)sig;
	(void)uctx;
	if (lease_broken_fd < 0)
		lease_broken_fd = si->si_fd;
	if (child_pid > 0) {
		kill(child_pid, SIGTERM);
		alarm(JAIL_LEASE_GRACE_S);
	}
}

static void on_grace_over(int sig)
{
	(void)sig;
	if (child_pid > 0)
		kill(child_pid, SIGKILL);
}

/* The jailer holds CHROOT_BASE/ID locked (flock) while its ember runs: --cleanup must
 * not pull the directory and the group from under a live VM. */
static int lock_dir(const char *dir, bool wait)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB))) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

static int cleanup_run(struct jail_opts *o)
{
	struct jail_cgroup cg;
	struct errbuf eb = { "" };
	int lock = lock_dir(o->dir, false), r = 0;

	if (lock == -EWOULDBLOCK) {
		fprintf(stderr, "ember jail: --cleanup: the jail %s is running (its jailer holds "
			"%s); stop it first\n", o->id, o->dir);
		return 1;
	}
	if (o->nr_cg == 0) {
		/* which controllers a run used is not recorded: look for all three */
		o->cg[0] = (struct jail_cg_set){ .key = "memory.max", .value = "max" };
		o->cg[1] = (struct jail_cg_set){ .key = "cpu.max", .value = "max" };
		o->cg[2] = (struct jail_cg_set){ .key = "pids.max", .value = "max" };
		o->nr_cg = 3;
	}
	if (jail_cgroup_locate(&cg, o, &eb) == 0)
		jail_cgroup_remove(&cg);
	if (lock >= 0 && (r = jail_fs_remove(o->dir)) && r != -ENOENT) {
		fprintf(stderr, "ember jail: --cleanup: removing %s: %s\n", o->dir, strerror(-r));
		r = 1;
	} else {
		r = 0;
	}
	if (lock >= 0)
		close(lock);
	return r;
}

static void print_line(const struct jail_opts *o, pid_t pid, enum jail_cg_version v)
{
	/* id is [A-Za-z0-9_-]; root comes from the operator's --chroot-base: escape it */
	if (o->json) {
		fprintf(stderr, "{\"id\":\"%s\",\"pid\":%d,\"root\":\"", o->id, (int)pid);
		for (const char *p = o->root; *p; p++)
			if (*p == '"' || *p == '\\')
				fprintf(stderr, "\\%c", *p);
			else if ((unsigned char)*p < 0x20 || *p == 0x7f || (unsigned char)*p >= 0x80)
				fprintf(stderr, "\\u%04x", (unsigned char)*p);
			else
				fputc(*p, stderr);
		fprintf(stderr, "\",\"cgroup\":\"%s\",\"uid\":%u,\"gid\":%u}\n",
			jail_cgroup_name(v), (unsigned)o->uid, (unsigned)o->gid);
	} else {
		fprintf(stderr, "ember-jail id=%s pid=%d root=%s cgroup=%s uid=%u gid=%u\n", o->id,
			(int)pid, o->root, jail_cgroup_name(v), (unsigned)o->uid, (unsigned)o->gid);
	}
}

static int wait_status(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return 1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int jail_main(int argc, char **argv)
{
	static struct jail_opts o;
	static struct jail_leases leases;
	struct sigaction lsa = { .sa_sigaction = on_lease_break, .sa_flags = SA_SIGINFO };
	struct sigaction asa = { .sa_handler = on_grace_over };
	struct jail_cgroup cg = { 0 };
	struct errbuf eb = { "" };
	struct sigaction sa = { .sa_handler = relay_signal };
	int errpipe[2] = { -1, -1 }, status, own_pidns = -1, dir_lock = -1;
	char msg[sizeof(eb.msg)];
	ssize_t got;
	pid_t pid;

	if (jail_parse(argc, argv, &o, &eb)) {
		fprintf(stderr, "ember: %s\nTry 'ember --help'.\n", eb.msg);
		return 2;
	}
	if (o.cleanup)
		return cleanup_run(&o);
	if (geteuid() != 0) {
		fprintf(stderr, "ember jail: must run as root (it creates namespaces, cgroups "
			"and device nodes)\n");
		return 1;
	}
	/* steps 1-2: the directory, with the mount points of everything bound into it */
	if (jail_fs_add_runtime(&o, &eb) || jail_fs_prepare(&o, &eb)) {
		fprintf(stderr, "ember jail: %s\n", eb.msg);
		return 1;
	}
	/* ours, new: nobody else holds it (kept to the end; the child closes its copy) */
	dir_lock = lock_dir(o.dir, true);
	if (dir_lock < 0) {
		errbuf_set(&eb, dir_lock, "locking %s: %s", o.dir, strerror(-dir_lock));
		goto fail;
	}
	/* the bound files cannot change under the VM: the jailer holds their leases */
	sigemptyset(&lsa.sa_mask);
	sigemptyset(&asa.sa_mask);
	if (sigaction(JAIL_LEASE_SIGNAL, &lsa, NULL) || sigaction(SIGALRM, &asa, NULL)) {
		errbuf_set(&eb, -errno, "sigaction: %s", strerror(errno));
		goto fail;
	}
	if (jail_leases_take(&o, &leases, &eb))
		goto fail;
	/* step 3: the cgroup, joined by the child before it unshares anything */
	if (o.nr_cg && (jail_cgroup_locate(&cg, &o, &eb) ||
			jail_cgroup_setup(&cg, &o, &eb)))
		goto fail;
	if (pipe2(errpipe, O_CLOEXEC)) {
		errbuf_set(&eb, -errno, "pipe: %s", strerror(errno));
		goto fail;
	}
	/* step 4: the child is PID 1 of a new PID namespace; this process stays outside,
	 * and its later children (none of ours, but a sanitizer's) in its own again */
	own_pidns = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
	if (own_pidns < 0 || unshare(CLONE_NEWPID)) {
		errbuf_set(&eb, -errno, "unshare(CLONE_NEWPID): %s", strerror(errno));
		goto fail;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		errbuf_set(&eb, -errno, "fork: %s", strerror(errno));
		goto fail;
	}
	if (pid > 0) {
		if (setns(own_pidns, CLONE_NEWPID))
			pr_warn("jail: back to our own PID namespace: %s", strerror(errno));
		close(own_pidns);
		own_pidns = -1;
	}
	if (pid == 0) {
		close(errpipe[0]);
		close(own_pidns);
		jail_child(&o, &cg, errpipe[1], &eb);
		/* only failures come back */
		if (write(errpipe[1], eb.msg, strlen(eb.msg)) < 0)
			_exit(1);
		_exit(1);
	}
	child_pid = pid;
	if (lease_broken_fd >= 0)
		on_lease_break(JAIL_LEASE_SIGNAL, &(siginfo_t){ .si_fd = lease_broken_fd }, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	close(errpipe[1]);
	errpipe[1] = -1;
	/* EOF without a word: the exec succeeded (the pipe is close-on-exec) */
	do
		got = read(errpipe[0], msg, sizeof(msg) - 1);
	while (got < 0 && errno == EINTR);
	close(errpipe[0]);
	errpipe[0] = -1;
	if (got > 0) {
		msg[got] = 0;
		wait_status(pid);
		snprintf(eb.msg, sizeof(eb.msg), "%s", msg);
		goto fail;
	}
	print_line(&o, pid, cg.version);
	status = wait_status(pid);
	alarm(0);
	if (lease_broken_fd >= 0) {
		fprintf(stderr, "ember jail: %s is being changed by another process (truncated or "
			"opened for writing): the jailed VM was stopped before its memory could "
			"change\n", jail_leases_path(&leases, lease_broken_fd));
		status = 1;
	}
	/* only now may the writer go on: nothing of the jail runs any more */
	jail_leases_drop(&leases);
	/* the PID namespace died with its PID 1: the groups are empty now */
	jail_cgroup_remove(&cg);
	close(dir_lock);
	return status;
fail:
	fprintf(stderr, "ember jail: %s\n", eb.msg);
	if (own_pidns >= 0)
		close(own_pidns);
	if (errpipe[0] >= 0)
		close(errpipe[0]);
	if (errpipe[1] >= 0)
		close(errpipe[1]);
	jail_leases_drop(&leases);
	jail_cgroup_remove(&cg);
	jail_fs_remove(o.dir);
	if (dir_lock >= 0)
		close(dir_lock);
	return 1;
}
