/*
 * ember jail: runs one ember (restore, boot or pool) confined as Firecracker's jailer
 * confines Firecracker (README "The jailer"). jail.c parses the flags and runs the
 * steps in order, jail_cgroup.c places the VM in a cgroup (v2, or v1 where that is all
 * the machine has), jail_fs.c builds and removes the per-VM directory, jail_child.c is
 * what happens in the new namespaces up to the exec.
 */
#ifndef EMBER_JAIL_H
#define EMBER_JAIL_H

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "vmm.h"

#define JAIL_ID_MAX        64
#define JAIL_MAX_BINDS     16
#define JAIL_MAX_CGROUP    8
#define JAIL_MAX_LIBS      32
#define JAIL_DEFAULT_BASE  "/srv/ember"
#define JAIL_DEFAULT_CGROUP_PARENT "ember"
#define JAIL_DEFAULT_NOFILE 2048
#define JAIL_EMBER_PATH    "/ember"  /* the ember binary, inside the jail */

/* A file or directory of the host mounted read-only into the jail (never copied). */
struct jail_bind {
	char src[PATH_MAX];  /* host path, resolved */
	char dst[PATH_MAX];  /* absolute path inside the jail */
	bool exec;           /* the binary and its libraries: not noexec */
};

struct jail_cg_set {
	char key[32];        /* memory.max, cpu.max or pids.max (cgroup v2 names) */
	const char *value;
};

struct jail_opts {
	const char *id;
	uid_t uid;
	gid_t gid;
	bool uid_set, gid_set;
	const char *chroot_base;
	const char *cgroup_parent;   /* relative: below the jailer's own cgroup; absolute:
				      * below the hierarchy's root */
	const char *netns;
	struct jail_cg_set cg[JAIL_MAX_CGROUP];
	unsigned nr_cg;
	struct jail_bind binds[JAIL_MAX_BINDS + JAIL_MAX_LIBS + 1];
	unsigned nr_binds;
	rlim_t nofile, fsize;        /* RLIM_INFINITY: fsize not limited */
	bool cleanup;                /* --cleanup: remove what a run left, run nothing */
	bool json;                   /* the ember-jail line as JSON */
	char **argv;                 /* ember's command line after "--" (argv[0] = verb) */
	int argc;
	/* derived */
	char dir[PATH_MAX];          /* chroot_base/id */
	char root[PATH_MAX];         /* chroot_base/id/root */
};

/* ---- jail.c ---- */
/* Parses `ember jail ...` (argv[0] is "jail"). 0, or -EINVAL with the message in eb. */
int jail_parse(int argc, char **argv, struct jail_opts *o, struct errbuf *eb);
/* restore/boot with --api-sock and without --snapshot-root: the jailer adds
 * `--snapshot-root /run` to ember's command line. */
bool jail_wants_snapshot_root(const struct jail_opts *o);
/* ember jail: returns the process exit status (the jailed ember's, or 1, or 2). */
int jail_main(int argc, char **argv);

/* ---- jail_lease.c ---- */
#define JAIL_MAX_LEASES    64
#define JAIL_LEASE_SIGNAL  (SIGRTMIN + 1)   /* a lease break, with si_fd */
#define JAIL_LEASE_GRACE_S 5                /* SIGTERM, then SIGKILL after this */
struct jail_leases {
	int fd[JAIL_MAX_LEASES];
	char path[JAIL_MAX_LEASES][PATH_MAX];
	unsigned nr;
};
/* Read leases on the regular files of every --ro-bind (a directory's own files): 0, or
 * an error naming the file (one open for writing elsewhere is refused). */
int jail_leases_take(const struct jail_opts *o, struct jail_leases *l, struct errbuf *eb);
void jail_leases_drop(struct jail_leases *l);
/* The bound file a lease fd is for (for the message). */
const char *jail_leases_path(const struct jail_leases *l, int fd);

/* ---- jail_cgroup.c ---- */
enum jail_cg_version { JAIL_CG_NONE = 0, JAIL_CG_V1 = 1, JAIL_CG_V2 = 2 };

#define JAIL_CG_CTRLS 3 /* memory, cpu, pids */
struct jail_cgroup {
	enum jail_cg_version version;
	unsigned nr;                       /* v1: one group per controller used; v2: 1 */
	char mnt[JAIL_CG_CTRLS][PATH_MAX]; /* v1: each used controller's hierarchy; v2: [0] */
	char leaf[JAIL_CG_CTRLS][PATH_MAX];/* the per-VM groups, created by setup */
	unsigned ctrl[JAIL_CG_CTRLS];      /* v1: which controller leaf[i] is for */
	unsigned needed;                   /* bit i: controller i has a limit */
};
/* Checks a --cgroup key=value: 0 or -EINVAL with the message in eb. */
int jail_cgroup_check(const char *key, const char *value, struct errbuf *eb);
/* Where the groups go, without creating anything (setup and --cleanup both use it):
 * v2 when a cgroup2 mount offers every controller the --cgroup keys need, else v1. */
int jail_cgroup_locate(struct jail_cgroup *cg, const struct jail_opts *o, struct errbuf *eb);
/* The same with the hierarchies given: mnt[i] is where controller i (memory, cpu, pids;
 * for v2 all the same) is mounted, own[i] the jailer's cgroup in it ("/..."). */
int jail_cgroup_locate_at(struct jail_cgroup *cg, const struct jail_opts *o,
			  enum jail_cg_version v, const char *const mnt[JAIL_CG_CTRLS],
			  const char *const own[JAIL_CG_CTRLS], struct errbuf *eb);
/* Creates the per-VM groups and writes the limits. On failure, removes what it made. */
int jail_cgroup_setup(struct jail_cgroup *cg, const struct jail_opts *o, struct errbuf *eb);
/* Moves the calling process into the groups (before it unshares anything). */
int jail_cgroup_join(const struct jail_cgroup *cg, struct errbuf *eb);
/* rmdir of the per-VM groups (they must be empty: the jailed processes are gone). */
void jail_cgroup_remove(const struct jail_cgroup *cg);
const char *jail_cgroup_name(enum jail_cg_version v); /* "none", "v1", "v2" */

/* ---- jail_fs.c ---- */
/* Creates dir and root (dir must not exist), /tmp and /run owned by the jail ids, and
 * the mount points of the binds. On failure removes dir if it made it. */
int jail_fs_prepare(const struct jail_opts *o, struct errbuf *eb);
/* Adds the ember binary and the shared objects this process runs with as binds. */
int jail_fs_add_runtime(struct jail_opts *o, struct errbuf *eb);
/* Removes dir and everything below it, never crossing a mount point. 0 or -errno. */
int jail_fs_remove(const char *dir);

/* ---- jail_child.c ---- */
/* In the child (PID 1 of the new PID namespace): every step up to the exec of ember.
 * Returns only on failure, with the step and path in eb. */
void jail_child(const struct jail_opts *o, const struct jail_cgroup *cg, int errfd,
		struct errbuf *eb);

#endif
