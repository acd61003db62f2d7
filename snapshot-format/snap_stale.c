/*
 * Temporary snapshot directories left behind by a writer that died (SIGKILL, a crash,
 * a power cut): "DIR.tmp.<pid>.<8 hex>" next to DIR (snap_writer.c). A later writer of
 * the same DIR removes those whose process no longer exists, so a killed run does not
 * leave a full-size copy of guest memory behind for good.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapfmt_int.h"

/* The pid in "<base>.tmp.<pid>.<8 hex>", or 0 when name is not one of those. */
static int stale_pid(const char *name, const char *base, size_t base_len)
{
	unsigned long pid;
	char *end;

	if (strncmp(name, base, base_len) || strncmp(name + base_len, ".tmp.", 5))
		return 0;
	name += base_len + 5;
	if (*name < '1' || *name > '9')
		return 0;
	errno = 0;
	pid = strtoul(name, &end, 10);
	if (errno || pid > INT_MAX || *end != '.' || strlen(end + 1) != 8 ||
	    strspn(end + 1, "0123456789abcdef") != 8)
		return 0;
	return (int)pid;
}

/* Removes the files in the directory name (in parent dfd), then it. Anything but a
 * regular file inside means it is not what a writer leaves: it is kept. */
static int remove_stale(int dfd, const char *name)
{
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *e;
	DIR *d;
	int ret = 0;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		ret = -errno;
		close(fd);
		return ret;
	}
	while ((e = readdir(d))) {
		struct stat st;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			ret = -ENOTEMPTY;
		else if (unlinkat(fd, e->d_name, 0) < 0)
			ret = -errno;
	}
	closedir(d);
	if (!ret && unlinkat(dfd, name, AT_REMOVEDIR) < 0)
		ret = -errno;
	return ret;
}

int snap_writer_clean_stale(const char *dir, snap_stale_fn fn, void *arg)
{
	char parent[PATH_MAX], base[NAME_MAX + 1];
	size_t len = strlen(dir), base_len;
	const char *slash;
	struct dirent *e;
	int dfd, found = 0;
	DIR *d;

	while (len > 1 && dir[len - 1] == '/')
		len--;
	if (len >= sizeof(parent))
		return -ENAMETOOLONG;
	memcpy(parent, dir, len);
	parent[len] = 0;
	slash = strrchr(parent, '/');
	if (strlen(slash ? slash + 1 : parent) > NAME_MAX - 20)
		return 0; /* no temp name can be made from it: nothing stale either */
	snprintf(base, sizeof(base), "%s", slash ? slash + 1 : parent);
	if (!slash)
		snprintf(parent, sizeof(parent), ".");
	else if (slash == parent)
		parent[1] = 0;
	else
		parent[slash - parent] = 0;
	base_len = strlen(base);
	dfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return errno == ENOENT ? 0 : -errno;
	d = fdopendir(dup(dfd));
	if (!d) {
		close(dfd);
		return -errno;
	}
	while ((e = readdir(d))) {
		int pid = stale_pid(e->d_name, base, base_len), r;
		char path[PATH_MAX];
		struct stat st;

		if (!pid || fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISDIR(st.st_mode))
			continue;
		/* still being written (or the pid was reused): not ours to judge */
		if (kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		r = remove_stale(dfd, e->d_name);
		snprintf(path, sizeof(path), "%s/%s", parent, e->d_name);
		if (fn)
			fn(path, pid, r, arg);
		found++;
	}
	closedir(d);
	close(dfd);
	return found;
}
