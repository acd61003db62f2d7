/*
 * Read leases on the files bound into a jail, held by the jailer for its ember.
 *
 * A restored VM reads its raw memory file for as long as it runs (src/memguard.c), so
 * ember takes a read lease on it: whoever then truncates it or opens it for writing
 * blocks while the VM stops. A jailed ember runs as the jail's uid without
 * capabilities and cannot lease the operator's files (a lease needs the file's owner or
 * CAP_LEASE). The jailer, still root, takes the leases instead, on every regular file
 * of every --ro-bind (a directory's files, not recursively), before the jail starts.
 * On a break it stops the jailed ember (SIGTERM; SIGKILL after JAIL_LEASE_GRACE_S) and
 * drops its leases only once ember is gone, so the writer never runs while the VM does.
 * ember learns from EMBER_MEMGUARD=jailer that its files are guarded this way.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jail.h"

static int lease_one(struct jail_leases *l, int dirfd, const char *name, const char *shown,
		     struct errbuf *eb)
{
	struct stat st;
	int fd;

	if (l->nr >= JAIL_MAX_LEASES)
		return errbuf_set(eb, -E2BIG, "--ro-bind: more than %d files to protect (%s)",
				  JAIL_MAX_LEASES, shown);
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return errbuf_set(eb, -errno, "--ro-bind: %s: %s", shown, strerror(errno));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return 0;
	}
	if (fcntl(fd, F_SETSIG, JAIL_LEASE_SIGNAL) || fcntl(fd, F_SETLEASE, F_RDLCK)) {
		int e = errno;

		close(fd);
		if (e == EAGAIN)
			return errbuf_set(eb, -EBUSY, "--ro-bind: %s is open for writing by another "
					  "process: a VM must not run from a file that may change", shown);
		return errbuf_set(eb, -e, "--ro-bind: %s: cannot take a read lease to keep it from "
				  "changing under the VM: %s", shown, strerror(e));
	}
	l->fd[l->nr] = fd;
	snprintf(l->path[l->nr], sizeof(l->path[l->nr]), "%s", shown);
	l->nr++;
	return 0;
}

static int lease_dir(struct jail_leases *l, const char *path, struct errbuf *eb)
{
	char shown[PATH_MAX + 256];
	struct dirent *de;
	DIR *d = opendir(path);
	int r = 0;

	if (!d)
		return errbuf_set(eb, -errno, "--ro-bind: %s: %s", path, strerror(errno));
	while (!r && (de = readdir(d))) {
		if (de->d_type != DT_REG && de->d_type != DT_UNKNOWN)
			continue;
		snprintf(shown, sizeof(shown), "%s/%s", path, de->d_name);
		r = lease_one(l, dirfd(d), de->d_name, shown, eb);
	}
	closedir(d);
	return r;
}

int jail_leases_take(const struct jail_opts *o, struct jail_leases *l, struct errbuf *eb)
{
	struct stat st;
	int r = 0;

	l->nr = 0;
	for (unsigned i = 0; !r && i < o->nr_binds; i++) {
		const struct jail_bind *b = &o->binds[i];

		if (b->exec)
			continue; /* the binary and its libraries: not VM data */
		if (stat(b->src, &st))
			r = errbuf_set(eb, -errno, "--ro-bind: %s: %s", b->src, strerror(errno));
		else if (S_ISDIR(st.st_mode))
			r = lease_dir(l, b->src, eb);
		else if (S_ISREG(st.st_mode))
			r = lease_one(l, AT_FDCWD, b->src, b->src, eb);
	}
	if (r)
		jail_leases_drop(l);
	return r;
}

void jail_leases_drop(struct jail_leases *l)
{
	for (unsigned i = 0; i < l->nr; i++)
		close(l->fd[i]); /* the lease goes with the last reference: a writer goes on */
	l->nr = 0;
}

const char *jail_leases_path(const struct jail_leases *l, int fd)
{
	for (unsigned i = 0; i < l->nr; i++)
		if (l->fd[i] == fd)
			return l->path[i];
	return "a bound file";
}
