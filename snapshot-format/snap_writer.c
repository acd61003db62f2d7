/*
 * Atomic snapshot writer. Everything goes into a sibling temp directory
 * ("DIR.tmp.<pid>.<rand>"): memory first, state last, each fsync'd; then the temp
 * directory is renamed to DIR without replacing anything and the parent is fsync'd.
 * A crash or error at any point leaves no DIR, so there is never a half-written
 * snapshot that would load.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapfmt_int.h"

struct snap_writer {
	char *dir;          /* final path, no trailing '/' */
	char *tmp;          /* temp sibling */
	int tmp_fd;         /* the temp directory */
	int mem_fd;
	uint64_t mem_end;   /* end of the furthest byte range written */
	struct snap_write_stats stats;
};

static void writer_free(struct snap_writer *w)
{
	if (w->mem_fd >= 0)
		close(w->mem_fd);
	if (w->tmp_fd >= 0)
		close(w->tmp_fd);
	free(w->dir);
	free(w->tmp);
	free(w);
}

/* Removes what this writer created; the directory name is the temp or the final one. */
static void remove_snapshot_dir(int dfd, const char *path)
{
	if (dfd >= 0) {
		unlinkat(dfd, SNAP_STATE_FILE, 0);
		unlinkat(dfd, SNAP_MEMORY_FILE, 0);
	}
	rmdir(path);
}

void snap_writer_abort(struct snap_writer *w)
{
	if (!w)
		return;
	remove_snapshot_dir(w->tmp_fd, w->tmp);
	writer_free(w);
}

int snap_writer_begin(const char *dir, struct snap_writer **out, struct snap_err *err)
{
	struct snap_writer *w;
	struct stat stb;
	size_t len = strlen(dir);
	int ret;

	*out = NULL;
	while (len > 1 && dir[len - 1] == '/')
		len--;
	if (len == 0 || (len == 1 && dir[0] == '/'))
		return snap_err_set(err, -EINVAL, "snapshot directory \"%s\": not a usable path", dir);
	w = calloc(1, sizeof(*w));
	if (!w)
		return snap_err_set(err, -ENOMEM, "snapshot writer: out of memory");
	w->tmp_fd = w->mem_fd = -1;
	w->dir = strndup(dir, len);
	if (!w->dir) {
		ret = snap_err_set(err, -ENOMEM, "snapshot writer: out of memory");
		goto fail;
	}
	if (lstat(w->dir, &stb) == 0) {
		ret = snap_err_set(err, -EEXIST, "snapshot directory %s already exists (not replacing it)", w->dir);
		goto fail;
	}
	if (errno != ENOENT) {
		ret = snap_err_set(err, -errno, "snapshot directory %s: %s", w->dir, strerror(errno));
		goto fail;
	}
	for (int tries = 0;; tries++) {
		uint32_t r = 0;

		if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
			r = (uint32_t)tries;
		free(w->tmp);
		if (asprintf(&w->tmp, "%s.tmp.%d.%08x", w->dir, (int)getpid(), r) < 0) {
			w->tmp = NULL;
			ret = snap_err_set(err, -ENOMEM, "snapshot writer: out of memory");
			goto fail;
		}
		if (mkdir(w->tmp, 0755) == 0)
			break;
		if (errno != EEXIST || tries == 8) {
			ret = snap_err_set(err, -errno, "cannot create snapshot temp directory %s: %s", w->tmp,
					   strerror(errno));
			free(w->tmp);
			w->tmp = NULL; /* not ours: never remove it */
			goto fail;
		}
	}
	w->tmp_fd = open(w->tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w->tmp_fd < 0) {
		ret = snap_err_set(err, -errno, "%s: %s", w->tmp, strerror(errno));
		goto fail_rm;
	}
	w->mem_fd = openat(w->tmp_fd, SNAP_MEMORY_FILE, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (w->mem_fd < 0) {
		ret = snap_err_set(err, -errno, "%s/%s: %s", w->tmp, SNAP_MEMORY_FILE, strerror(errno));
		goto fail_rm;
	}
	*out = w;
	return 0;
fail_rm:
	remove_snapshot_dir(w->tmp_fd, w->tmp);
fail:
	writer_free(w);
	return ret;
}

int snap_writer_mem_fd(const struct snap_writer *w)
{
	return w->mem_fd;
}

const struct snap_write_stats *snap_writer_stats(const struct snap_writer *w)
{
	return &w->stats;
}

static bool page_is_zero(const uint8_t *p, size_t n)
{
	uint64_t acc = 0, w;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		memcpy(&w, p + i, 8);
		acc |= w;
		if ((i & 511) == 504 && acc)
			return false;
	}
	for (; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

int snap_writer_write_sparse(struct snap_writer *w, uint64_t file_offset, const void *buf,
			     uint64_t len, struct snap_err *err)
{
	const uint8_t *p = buf;
	uint64_t pos = 0;

	if (file_offset % SNAP_PAGE_SIZE)
		return snap_err_set(err, -EINVAL, "memory write: file offset 0x%" PRIx64 " is not page aligned",
				    file_offset);
	if (len > SNAP_MAX_GPA || file_offset > SNAP_MAX_GPA - len)
		return snap_err_set(err, -EINVAL, "memory write: 0x%" PRIx64 "+0x%" PRIx64 " is too large",
				    file_offset, len);
	while (pos < len) {
		uint64_t run = pos, n;
		int ret;

		/* skip zero pages, then gather the following run of non-zero ones */
		n = len - pos < SNAP_PAGE_SIZE ? len - pos : SNAP_PAGE_SIZE;
		if (page_is_zero(p + pos, n)) {
			w->stats.zero_pages_skipped++;
			pos += n;
			continue;
		}
		while (pos < len) {
			n = len - pos < SNAP_PAGE_SIZE ? len - pos : SNAP_PAGE_SIZE;
			if (page_is_zero(p + pos, n))
				break;
			pos += n;
			w->stats.pages_written++;
		}
		ret = snap_write_all(w->mem_fd, p + run, pos - run, file_offset + run);
		if (ret)
			return snap_err_set(err, ret, "memory write at 0x%" PRIx64 ": %s", file_offset + run,
					    strerror(-ret));
		w->stats.bytes_written += pos - run;
	}
	if (file_offset + len > w->mem_end)
		w->mem_end = file_offset + len;
	return 0;
}

int snap_writer_write_ranges(struct snap_writer *w, const void *image, uint64_t image_len,
			     const struct snap_range *ranges, uint32_t n, struct snap_err *err)
{
	const uint8_t *p = image;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t first = ranges[i].first, count = ranges[i].count;
		uint64_t pages = image_len / SNAP_PAGE_SIZE;
		int ret;

		if (first >= pages || count > pages - first)
			return snap_err_set(err, -EINVAL, "memory write: range %u (pages 0x%" PRIx64 "+0x%" PRIx64
					    ") is outside the 0x%" PRIx64 "-byte image", i, first, count, image_len);
		ret = snap_writer_write_sparse(w, first * SNAP_PAGE_SIZE, p + first * SNAP_PAGE_SIZE,
					       count * SNAP_PAGE_SIZE, err);
		if (ret)
			return ret;
	}
	return 0;
}

static int fsync_parent(const char *path, struct snap_err *err)
{
	const char *slash = strrchr(path, '/');
	char *parent;
	int fd, ret = 0;

	if (!slash)
		parent = strdup(".");
	else if (slash == path)
		parent = strdup("/");
	else
		parent = strndup(path, (size_t)(slash - path));
	if (!parent)
		return snap_err_set(err, -ENOMEM, "snapshot writer: out of memory");
	fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		ret = snap_err_set(err, -errno, "fsync of %s: %s", parent, strerror(errno));
	if (fd >= 0)
		close(fd);
	free(parent);
	return ret;
}

static int install(struct snap_writer *w, struct snap_err *err)
{
	struct stat stb;

	if (renameat2(AT_FDCWD, w->tmp, AT_FDCWD, w->dir, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		goto fail;
	/* file system without RENAME_NOREPLACE: check, then a plain rename */
	if (lstat(w->dir, &stb) == 0) {
		errno = EEXIST;
		goto fail;
	}
	if (rename(w->tmp, w->dir) == 0)
		return 0;
fail:
	if (errno == EEXIST || errno == ENOTEMPTY)
		return snap_err_set(err, -EEXIST, "snapshot directory %s appeared while writing (not replacing it)",
				    w->dir);
	return snap_err_set(err, -errno, "rename %s -> %s: %s", w->tmp, w->dir, strerror(errno));
}

int snap_writer_commit(struct snap_writer *w, const struct snap_state *st, struct snap_err *err)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	int fd = -1, ret;

	if (strcmp(st->memory.file, SNAP_MEMORY_FILE)) {
		ret = snap_err_set(err, -EINVAL, "memory.file: the writer writes \"%s\", not \"%s\"",
				   SNAP_MEMORY_FILE, st->memory.file);
		goto fail;
	}
	ret = snap_state_encode(st, &buf, &len, err);
	if (ret)
		goto fail;
	if (w->mem_end > st->memory.size) {
		ret = snap_err_set(err, -EINVAL, "memory written up to 0x%" PRIx64 " but memory.size is 0x%" PRIx64,
				   w->mem_end, st->memory.size);
		goto fail;
	}
	if (ftruncate(w->mem_fd, (off_t)st->memory.size) < 0 || fsync(w->mem_fd) < 0) {
		ret = snap_err_set(err, -errno, "%s/%s: %s", w->tmp, SNAP_MEMORY_FILE, strerror(errno));
		goto fail;
	}
	fd = openat(w->tmp_fd, SNAP_STATE_FILE, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = snap_err_set(err, -errno, "%s/%s: %s", w->tmp, SNAP_STATE_FILE, strerror(errno));
		goto fail;
	}
	ret = snap_write_all(fd, buf, len, 0);
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	if (!ret && fsync(w->tmp_fd) < 0)
		ret = -errno;
	if (ret) {
		ret = snap_err_set(err, ret, "%s/%s: %s", w->tmp, SNAP_STATE_FILE, strerror(-ret));
		goto fail;
	}
	ret = install(w, err);
	if (ret)
		goto fail;
	ret = fsync_parent(w->dir, err);
	if (ret) {
		/* installed but not durable: take it back rather than leave a maybe-snapshot */
		remove_snapshot_dir(w->tmp_fd, w->dir);
		close(fd);
		free(buf);
		writer_free(w);
		return ret;
	}
	close(fd);
	free(buf);
	writer_free(w);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	free(buf);
	snap_writer_abort(w);
	return ret;
}
