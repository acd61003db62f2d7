/*
 * The per-VM directory of ember jail: CHROOT_BASE/ID/root, the jail's root. It holds
 * only directories and empty mount points on disk; the snapshot files, the ember binary
 * and its libraries are bind-mounted read-only over them inside the jail's own mount
 * namespace (never copied, never hard-linked: a hard link shares the inode, so the jail
 * could not be given other permissions than the original has).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jail.h"

/* mkdir -p of path's components below `from` (which exists), mode 0755, owned by root. */
static int mkdirs(const char *path, size_t from, struct errbuf *eb)
{
	char p[2 * PATH_MAX];
	size_t n = strlen(path);

	if (n >= sizeof(p))
		return errbuf_set(eb, -ENAMETOOLONG, "%s: path too long", path);
	memcpy(p, path, n + 1);
	for (size_t i = from + 1; i <= n; i++) {
		if (p[i] != '/' && p[i] != 0)
			continue;
		p[i] = 0;
		if (mkdir(p, 0755) && errno != EEXIST)
			return errbuf_set(eb, -errno, "creating %s: %s", p, strerror(errno));
		p[i] = path[i];
	}
	return 0;
}

static int add_bind(struct jail_opts *o, const char *src, const char *dst, bool exec,
		    struct errbuf *eb)
{
	struct jail_bind *b;

	if (o->nr_binds >= sizeof(o->binds) / sizeof(o->binds[0]))
		return errbuf_set(eb, -E2BIG, "too many files to bind into the jail");
	b = &o->binds[o->nr_binds];
	if (!realpath(src, b->src))
		return errbuf_set(eb, -errno, "%s: %s", src, strerror(errno));
	snprintf(b->dst, sizeof(b->dst), "%s", dst);
	b->exec = exec;
	o->nr_binds++;
	return 0;
}

struct libs_ctx {
	struct jail_opts *o;
	struct errbuf *eb;
	int err;
};

static int add_lib(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct libs_ctx *c = arg;

	/* the executable itself has no name, the vDSO no path */
	if (!info->dlpi_name || info->dlpi_name[0] != '/')
		return 0;
	c->err = add_bind(c->o, info->dlpi_name, info->dlpi_name, true, c->eb);
	return c->err;
}

/*
 * ember links libc (and, in sanitizer builds, the sanitizer runtimes) dynamically: the
 * jail gets exactly the shared objects this process runs with, at the paths the dynamic
 * loader finds them by, and the binary itself at /ember.
 */
int jail_fs_add_runtime(struct jail_opts *o, struct errbuf *eb)
{
	struct libs_ctx c = { o, eb, 0 };
	int r = add_bind(o, "/proc/self/exe", JAIL_EMBER_PATH, true, eb);

	if (r)
		return r;
	dl_iterate_phdr(add_lib, &c);
	return c.err;
}

static int make_mount_point(const struct jail_opts *o, const struct jail_bind *b,
			    struct errbuf *eb)
{
	char p[2 * PATH_MAX];
	struct stat st;
	char *slash;
	int fd, r;

	if (stat(b->src, &st))
		return errbuf_set(eb, -errno, "%s: %s", b->src, strerror(errno));
	if (snprintf(p, sizeof(p), "%s%s", o->root, b->dst) >= (int)sizeof(p))
		return errbuf_set(eb, -ENAMETOOLONG, "%s%s: path too long", o->root, b->dst);
	if (S_ISDIR(st.st_mode))
		return mkdirs(p, strlen(o->root), eb);
	slash = strrchr(p, '/');
	*slash = 0;
	if ((r = mkdirs(p, strlen(o->root), eb)))
		return r;
	*slash = '/';
	fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0444);
	if (fd < 0)
		return errbuf_set(eb, -errno, "creating %s: %s", p, strerror(errno));
	close(fd);
	return 0;
}

static int owned_dir(const struct jail_opts *o, const char *name, struct errbuf *eb)
{
	char p[2 * PATH_MAX];

	snprintf(p, sizeof(p), "%s/%s", o->root, name);
	if (mkdir(p, 0700) || chown(p, o->uid, o->gid))
		return errbuf_set(eb, -errno, "creating %s: %s", p, strerror(errno));
	return 0;
}

int jail_fs_prepare(const struct jail_opts *o, struct errbuf *eb)
{
	struct stat st;
	int r;

	if ((r = mkdirs(o->chroot_base, 0, eb)))
		return r;
	if (mkdir(o->dir, 0755)) {
		if (errno == EEXIST)
			return errbuf_set(eb, -EEXIST, "%s already exists (a jail with id %s ran "
					  "before: 'ember jail --cleanup --id %s' removes it)",
					  o->dir, o->id, o->id);
		return errbuf_set(eb, -errno, "creating %s: %s", o->dir, strerror(errno));
	}
	/* from here on the directory is ours to remove on failure */
	if (lstat(o->dir, &st) || !S_ISDIR(st.st_mode) || mkdir(o->root, 0755)) {
		r = errbuf_set(eb, -errno, "creating %s: %s", o->root, strerror(errno));
		goto fail;
	}
	if ((r = owned_dir(o, "tmp", eb)) ||
	    (r = owned_dir(o, "run", eb)))
		goto fail;
	for (const char *d = "dev\0proc\0"; *d; d += strlen(d) + 1) {
		char p[2 * PATH_MAX];

		snprintf(p, sizeof(p), "%s/%s", o->root, d);
		if (mkdir(p, 0755)) {
			r = errbuf_set(eb, -errno, "creating %s: %s", p, strerror(errno));
			goto fail;
		}
	}
	for (unsigned i = 0; i < o->nr_binds; i++)
		if ((r = make_mount_point(o, &o->binds[i], eb)))
			goto fail;
	return 0;
fail:
	jail_fs_remove(o->dir);
	return r;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return (flag == FTW_DP ? rmdir(path) : unlink(path)) ? -1 : 0;
}

int jail_fs_remove(const char *dir)
{
	/* FTW_MOUNT: never into a file system mounted below (the operator's own, if any) */
	return nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) ? -errno : 0;
}
