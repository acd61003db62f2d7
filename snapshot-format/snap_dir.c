/*
 * Reading a snapshot directory: the state file (size-capped, decoded and validated)
 * and the memory file (a regular file, not a symlink, exactly memory.size bytes long so
 * a MAP_PRIVATE mapping of it can never SIGBUS on the last page).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapfmt_int.h"

int snap_write_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int snap_read_all(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* sizes are checked at open: the file shrank */
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

bool snap_is_zero(const void *buf, size_t n)
{
	const uint8_t *p = buf;
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

/* O_NONBLOCK so a FIFO planted in a snapshot cannot hang the open; cleared once regular. */
int snap_open_regular(int dirfd, const char *name, int flags, struct stat *stb,
		      const char *what, struct snap_err *err)
{
	int fd = openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0) {
		if (errno == ELOOP)
			return snap_err_set(err, -ELOOP, "%s %s: is a symbolic link (refused)", what, name);
		return snap_err_set(err, -errno, "%s %s: %s", what, name, strerror(errno));
	}
	if (fstat(fd, stb) < 0) {
		int e = -errno;
		close(fd);
		return snap_err_set(err, e, "%s %s: fstat: %s", what, name, strerror(-e));
	}
	if (!S_ISREG(stb->st_mode)) {
		close(fd);
		return snap_err_set(err, -EINVAL, "%s %s: not a regular file (%s)", what, name,
				    snap_file_kind(stb->st_mode));
	}
	if (fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
		int e = -errno;
		close(fd);
		return snap_err_set(err, e, "%s %s: fcntl: %s", what, name, strerror(-e));
	}
	return fd;
}

int snap_read_file_at(int dirfd, const char *name, size_t max, uint8_t **buf, size_t *len,
		      struct snap_err *err)
{
	struct stat stb;
	size_t size, got = 0;
	uint8_t *p;
	int fd, ret = 0;

	fd = snap_open_regular(dirfd, name, O_RDONLY, &stb, "file", err);
	if (fd < 0)
		return fd;
	if ((uint64_t)stb.st_size > max) {
		ret = snap_err_set(err, -EFBIG, "file %s: %" PRIu64 " bytes (at most %zu)", name,
				   (uint64_t)stb.st_size, max);
		goto out;
	}
	size = (size_t)stb.st_size;
	p = malloc(size ? size : 1);
	if (!p) {
		ret = snap_err_set(err, -ENOMEM, "file %s: out of memory", name);
		goto out;
	}
	while (got < size) {
		ssize_t n = read(fd, p + got, size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = snap_err_set(err, n ? -errno : -EIO, "file %s: %s", name,
					   n ? strerror(errno) : "changed size while being read");
			free(p);
			goto out;
		}
		got += (size_t)n;
	}
	*buf = p;
	*len = size;
out:
	close(fd);
	return ret;
}

int snap_open_dir(const char *dir, struct snap_err *err)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return snap_err_set(err, -errno, "snapshot %s: %s", dir, strerror(errno));
	return fd;
}

int snap_state_load(const char *dir, struct snap_state *st, struct snap_err *err)
{
	struct snap_err inner = { "" };
	uint8_t *buf = NULL;
	size_t len = 0;
	int dfd, ret;

	memset(st, 0, sizeof(*st));
	dfd = snap_open_dir(dir, err);
	if (dfd < 0)
		return dfd;
	ret = snap_read_file_at(dfd, SNAP_STATE_FILE, SNAP_PREAMBLE_SIZE + (size_t)SNAP_MAX_BODY,
				&buf, &len, &inner);
	close(dfd);
	if (!ret) {
		ret = snap_state_decode(buf, len, st, &inner);
		free(buf);
	}
	if (ret)
		return snap_err_set(err, ret, "snapshot %s: %s", dir, inner.msg);
	return 0;
}

int snap_mem_open(const char *dir, const struct snap_state *st, int *fdp,
		  struct snap_mem_info *info, struct snap_err *err)
{
	struct snap_err inner = { "" };
	bool lz4 = st->memory.encoding == SNAP_ENC_LZ4;
	struct stat stb;
	uint64_t want;
	int dfd, fd;

	*fdp = -1;
	if (!snap_plain_name_ok(st->memory.file))
		return snap_err_set(err, -EINVAL, "snapshot %s: memory.file is not a plain file name", dir);
	dfd = snap_open_dir(dir, err);
	if (dfd < 0)
		return dfd;
	fd = snap_open_regular(dfd, st->memory.file, O_RDONLY, &stb, "memory file", &inner);
	close(dfd);
	if (fd < 0)
		return snap_err_set(err, fd, "snapshot %s: %s", dir, inner.msg);
	/* raw: the image itself; lz4: the chunk payloads, whose length the state records */
	want = lz4 ? st->memory.compressed_size : st->memory.size;
	if ((uint64_t)stb.st_size != want) {
		close(fd);
		return snap_err_set(err, -EINVAL, "snapshot %s: memory file %s is %" PRIu64
				    " bytes but memory.%s is %" PRIu64 " (%s)", dir, st->memory.file,
				    (uint64_t)stb.st_size, lz4 ? "compressed_size" : "size", want,
				    (uint64_t)stb.st_size < want ? "truncated" : "too long");
	}
	if (info) {
		info->logical = (uint64_t)stb.st_size;
		info->allocated = (uint64_t)stb.st_blocks * 512;
	}
	*fdp = fd;
	return 0;
}

int snap_dir_open(const char *dir, struct snap_dir *d, struct snap_err *err)
{
	int ret;

	memset(d, 0, sizeof(*d));
	d->mem_fd = -1;
	ret = snap_state_load(dir, &d->state, err);
	if (ret)
		return ret;
	if (d->state.memory.encoding == SNAP_ENC_LZ4) {
		ret = snap_lz4_index_load(dir, &d->state, &d->lz4, err);
		if (!ret) {
			d->mem_fd = d->lz4->fd;
			d->mem = d->lz4->mem;
		}
	} else {
		ret = snap_mem_open(dir, &d->state, &d->mem_fd, &d->mem, err);
	}
	if (ret)
		snap_state_free(&d->state);
	return ret;
}

void snap_dir_close(struct snap_dir *d)
{
	if (d->lz4)
		snap_lz4_index_free(d->lz4); /* owns mem_fd */
	else if (d->mem_fd >= 0)
		close(d->mem_fd);
	d->lz4 = NULL;
	d->mem_fd = -1;
	snap_state_free(&d->state);
}
