/*
 * Where a `snapshot` request on the control socket may write (FORMAT.md section 9). The
 * client names a directory; ember, often root, creates it. So the path must be absolute
 * (ember's working directory is not the client's), no component may be a symlink (a
 * client could point one at any directory root can write), and with --snapshot-root
 * (always, inside the jailer) it must lie beneath that directory. The kernel checks all
 * of it in one openat2() of the parent: RESOLVE_NO_SYMLINKS, and RESOLVE_BENEATH from
 * the root; the writer then works relative to the descriptor it returned
 * (snap_writer_begin_at).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vmm.h"

static int open_beneath(int dirfd, const char *path, uint64_t resolve)
{
	struct open_how how = {
		.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC, /* not O_PATH: the writer fsyncs it */
		.resolve = resolve | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));

	return fd < 0 ? -errno : (int)fd;
}

int api_snapshot_parent(const char *root, const char *dir, char name[NAME_MAX + 1],
			struct errbuf *eb)
{
	char parent[PATH_MAX];
	const char *rel = parent, *slash;
	size_t len = strlen(dir), rlen;
	int rootfd = AT_FDCWD, fd;

	if (dir[0] != '/')
		return errbuf_set(eb, -EINVAL, "snapshot directory '%s' is not an absolute path",
				  dir);
	while (len > 1 && dir[len - 1] == '/')
		len--;
	if (len >= sizeof(parent))
		return errbuf_set(eb, -ENAMETOOLONG, "snapshot directory '%s' is too long", dir);
	memcpy(parent, dir, len);
	parent[len] = 0;
	slash = strrchr(parent, '/');
	if (!slash[1] || !strcmp(slash + 1, ".") || !strcmp(slash + 1, "..") ||
	    strlen(slash + 1) > NAME_MAX)
		return errbuf_set(eb, -EINVAL, "snapshot directory '%s' does not end in a name", dir);
	strcpy(name, slash + 1);
	parent[slash == parent ? 1 : slash - parent] = 0;

	if (root) {
		/* --snapshot-root was made absolute and free of symlinks at start-up */
		rlen = strlen(root);
		if (strncmp(parent, root, rlen) || (parent[rlen] && parent[rlen] != '/' &&
						    strcmp(root, "/")))
			return errbuf_set(eb, -EPERM, "snapshot directory '%s' is outside "
					  "--snapshot-root %s", dir, root);
		rel = parent + rlen;
		while (*rel == '/')
			rel++;
		if (!*rel)
			rel = ".";
		rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (rootfd < 0)
			return errbuf_set(eb, -errno, "--snapshot-root %s: %s", root, strerror(errno));
	}
	fd = open_beneath(rootfd, rel, root ? RESOLVE_BENEATH : 0);
	if (rootfd >= 0)
		close(rootfd);
	if (fd == -ENOSYS)
		return errbuf_set(eb, fd, "snapshot directory '%s': this kernel has no openat2(2) "
				  "(Linux 5.6+), needed to resolve it safely", dir);
	if (fd == -ELOOP)
		return errbuf_set(eb, fd, "snapshot directory '%s': its parent path goes through a "
				  "symlink (not followed)", dir);
	if (fd == -EXDEV)
		return errbuf_set(eb, fd, "snapshot directory '%s' is outside --snapshot-root %s",
				  dir, root);
	if (fd < 0)
		return errbuf_set(eb, fd, "snapshot directory '%s': parent directory: %s", dir,
				  strerror(-fd));
	return fd;
}
