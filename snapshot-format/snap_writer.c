/*
 * Atomic snapshot writer. Everything goes into a sibling temp directory
 * ("DIR.tmp.<pid>.<rand>"): memory first, state last, each fsync'd; then the temp
 * directory is renamed to DIR without replacing anything and the parent is fsync'd.
 * A crash or error at any point leaves no DIR, so there is never a half-written
 * snapshot that would load.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "snapfmt_int.h"

/*
 * The temp directory of the writer in flight, for snap_writer_remove_in_flight in a
 * signal handler: one slot, for tools that write one snapshot at a time (ember-snap).
 * Set once the directory exists, cleared when the writer is freed (committed or not).
 */
static char in_flight[PATH_MAX];
static volatile sig_atomic_t in_flight_set;

static void track_in_flight(const char *tmp)
{
	size_t len = strlen(tmp);

	if (len >= sizeof(in_flight))
		return;
	in_flight_set = 0;
	memcpy(in_flight, tmp, len + 1);
	in_flight_set = 1;
}

static void untrack_in_flight(const char *tmp)
{
	if (tmp && in_flight_set && !strcmp(in_flight, tmp))
		in_flight_set = 0;
}

/* getdents64's record: glibc's readdir is not async-signal-safe, the system call is */
struct dirent64_rec {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

/* Unlinks every entry of the directory fd (all files the writer made); one pass may
 * miss entries that moved while it unlinked, so it goes again until one removes none. */
static void unlink_all_at(int fd)
{
	static char buf[4096] __attribute__((aligned(8)));

	for (int pass = 0; pass < 8; pass++) {
		bool removed = false;
		long n;

		if (lseek(fd, 0, SEEK_SET) < 0)
			return;
		while ((n = syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0) {
			for (long off = 0; off < n;) {
				struct dirent64_rec *d = (struct dirent64_rec *)(buf + off);

				off += d->d_reclen;
				if (d->d_name[0] == '.' && (!d->d_name[1] ||
							    (d->d_name[1] == '.' && !d->d_name[2])))
					continue;
				removed |= unlinkat(fd, d->d_name, 0) == 0;
			}
		}
		if (!removed)
			return;
	}
}

void snap_writer_remove_in_flight(void)
{
	int fd, saved = errno;

	if (!in_flight_set)
		return;
	/* after the final rename the temp path is gone: nothing is removed then */
	fd = open(in_flight, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0) {
		unlink_all_at(fd);
		close(fd);
		rmdir(in_flight);
	}
	in_flight_set = 0;
	errno = saved;
}

struct snap_writer {
	int dfd;            /* dir and tmp are relative to it (AT_FDCWD: plain paths) */
	char *dir;          /* final path, no trailing '/' */
	char *tmp;          /* temp sibling */
	int tmp_fd;         /* the temp directory */
	int mem_fd;
	uint64_t mem_end;   /* end of the furthest byte range written */
	struct snap_write_stats stats;
	/* after snap_writer_write_lz4: mem_fd is memory.lz4, described by these */
	bool lz4;
	uint32_t chunk_size;
	uint64_t lz4_len, lz4_file_size, nr_chunks;
	struct snap_lz4_chunk *chunks;
	/* snap_writer_set_ws */
	uint64_t *ws;
	uint64_t nr_ws;
	bool has_ws;
};

static void writer_free(struct snap_writer *w)
{
	untrack_in_flight(w->tmp);
	if (w->mem_fd >= 0)
		close(w->mem_fd);
	if (w->tmp_fd >= 0)
		close(w->tmp_fd);
	free(w->chunks);
	free(w->ws);
	free(w->dir);
	free(w->tmp);
	free(w);
}

/* Removes what this writer created; the directory name (relative to pfd) is the temp
 * or the final one. */
static void remove_snapshot_dir(int pfd, int dfd, const char *path)
{
	static const char *const files[] = {
		SNAP_STATE_FILE, SNAP_MEMORY_FILE, SNAP_LZ4_MEMORY_FILE, SNAP_LZ4_INDEX_FILE, SNAP_WS_FILE,
	};

	if (dfd >= 0)
		for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
			unlinkat(dfd, files[i], 0);
	unlinkat(pfd, path, AT_REMOVEDIR);
}

void snap_writer_abort(struct snap_writer *w)
{
	if (!w)
		return;
	remove_snapshot_dir(w->dfd, w->tmp_fd, w->tmp);
	writer_free(w);
}

int snap_writer_begin(const char *dir, struct snap_writer **out, struct snap_err *err)
{
	return snap_writer_begin_at(AT_FDCWD, dir, out, err);
}

int snap_writer_begin_at(int dfd, const char *dir, struct snap_writer **out,
			 struct snap_err *err)
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
	w->dfd = dfd;
	w->dir = strndup(dir, len);
	if (!w->dir) {
		ret = snap_err_set(err, -ENOMEM, "snapshot writer: out of memory");
		goto fail;
	}
	if (fstatat(dfd, w->dir, &stb, AT_SYMLINK_NOFOLLOW) == 0) {
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
		if (mkdirat(dfd, w->tmp, 0755) == 0) {
			/* the signal-time cleanup knows paths only: a name inside dfd is not one */
			if (dfd == AT_FDCWD)
				track_in_flight(w->tmp);
			break;
		}
		if (errno != EEXIST || tries == 8) {
			ret = snap_err_set(err, -errno, "cannot create snapshot temp directory %s: %s", w->tmp,
					   strerror(errno));
			free(w->tmp);
			w->tmp = NULL; /* not ours: never remove it */
			goto fail;
		}
	}
	w->tmp_fd = openat(dfd, w->tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
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
	remove_snapshot_dir(dfd, w->tmp_fd, w->tmp);
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


int snap_writer_write_sparse(struct snap_writer *w, uint64_t file_offset, const void *buf,
			     uint64_t len, struct snap_err *err)
{
	const uint8_t *p = buf;
	uint64_t pos = 0;

	if (w->lz4)
		return snap_err_set(err, -EINVAL, "memory write: this writer already wrote lz4 memory");
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
		if (snap_is_zero(p + pos, n)) {
			w->stats.zero_pages_skipped++;
			pos += n;
			continue;
		}
		while (pos < len) {
			n = len - pos < SNAP_PAGE_SIZE ? len - pos : SNAP_PAGE_SIZE;
			if (snap_is_zero(p + pos, n))
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

int snap_writer_write_lz4(struct snap_writer *w, const void *image, uint64_t len,
			  struct snap_err *err)
{
	return snap_writer_write_lz4_chunked(w, image, len, SNAP_LZ4_CHUNK_DEFAULT, err);
}

int snap_writer_write_lz4_chunked(struct snap_writer *w, const void *image, uint64_t len,
				  uint32_t chunk_size, struct snap_err *err)
{
	return snap_writer_write_lz4_sparse(w, image, len, chunk_size, NULL, 0, err);
}

int snap_writer_write_lz4_sparse(struct snap_writer *w, const void *image, uint64_t len,
				 uint32_t chunk_size, const struct snap_extent *data,
				 uint64_t nr_data, struct snap_err *err)
{
	int ret;

	if (w->lz4 || w->mem_end)
		return snap_err_set(err, -EINVAL, "lz4 memory write: memory was already written");
	if (chunk_size < SNAP_LZ4_CHUNK_MIN || chunk_size > SNAP_LZ4_CHUNK_MAX || (chunk_size & (chunk_size - 1)))
		return snap_err_set(err, -EINVAL, "lz4 memory write: chunk size %u (must be a power of two, %u..%u)",
				    chunk_size, SNAP_LZ4_CHUNK_MIN, SNAP_LZ4_CHUNK_MAX);
	if (len == 0 || len % SNAP_PAGE_SIZE || len > SNAP_MAX_GPA)
		return snap_err_set(err, -EINVAL, "lz4 memory write: 0x%" PRIx64 " bytes (must be a non-zero "
				    "multiple of %u, at most 2^52)", len, SNAP_PAGE_SIZE);
	if (snap_lz4_nr_chunks(len, chunk_size) > SNAP_LZ4_MAX_CHUNKS)
		return snap_err_set(err, -E2BIG, "lz4 memory write: 0x%" PRIx64 " bytes in %u-byte "
				    "chunks make %" PRIu64 " chunks (at most %u: a chunk size of "
				    "at least %" PRIu64 " bytes is needed)", len, chunk_size,
				    snap_lz4_nr_chunks(len, chunk_size), SNAP_LZ4_MAX_CHUNKS,
				    len / SNAP_LZ4_MAX_CHUNKS > SNAP_LZ4_CHUNK_MIN
					    ? len / SNAP_LZ4_MAX_CHUNKS : SNAP_LZ4_CHUNK_MIN);
	/* the raw file made by begin is replaced by the lz4 one */
	close(w->mem_fd);
	unlinkat(w->tmp_fd, SNAP_MEMORY_FILE, 0);
	w->mem_fd = openat(w->tmp_fd, SNAP_LZ4_MEMORY_FILE, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (w->mem_fd < 0)
		return snap_err_set(err, -errno, "%s/%s: %s", w->tmp, SNAP_LZ4_MEMORY_FILE, strerror(errno));
	w->lz4 = true;
	ret = snap_lz4_compress_image(w->mem_fd, image, len, chunk_size, data, nr_data, &w->chunks,
				      &w->nr_chunks, &w->lz4_file_size, err);
	if (ret)
		return ret;
	w->chunk_size = chunk_size;
	w->lz4_len = len;
	for (uint64_t i = 0; i < w->nr_chunks; i++) {
		uint64_t pages = w->chunks[i].len / SNAP_PAGE_SIZE;

		if (w->chunks[i].kind == SNAP_CHUNK_ZERO)
			w->stats.zero_pages_skipped += pages;
		else
			w->stats.pages_written += pages;
	}
	w->stats.bytes_written = w->lz4_file_size;
	return 0;
}

int snap_writer_set_ws(struct snap_writer *w, const uint64_t *pages, uint64_t n,
		       struct snap_err *err)
{
	uint64_t *copy = NULL;

	if (n > SNAP_WS_MAX_PAGES)
		return snap_err_set(err, -EINVAL, "working set: %" PRIu64 " pages (at most %u)", n,
				    SNAP_WS_MAX_PAGES);
	if (n) {
		copy = malloc(n * sizeof(*copy));
		if (!copy)
			return snap_err_set(err, -ENOMEM, "working set: out of memory");
		memcpy(copy, pages, n * sizeof(*copy));
	}
	free(w->ws);
	w->ws = copy;
	w->nr_ws = n;
	w->has_ws = true;
	return 0;
}

/* lz4: the index file, written and fsync'd before the state names it. */
static int write_index(struct snap_writer *w, const struct snap_state *st, struct snap_err *err)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	int fd, ret;

	ret = snap_lz4_index_encode(w->chunks, w->nr_chunks, w->chunk_size, w->lz4_len, w->lz4_file_size,
				    st->header.id, &buf, &len, err);
	if (ret)
		return ret;
	fd = openat(w->tmp_fd, SNAP_LZ4_INDEX_FILE, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
	} else {
		ret = snap_write_all(fd, buf, len, 0);
		if (!ret && fsync(fd) < 0)
			ret = -errno;
		close(fd);
	}
	free(buf);
	if (ret)
		return snap_err_set(err, ret, "%s/%s: %s", w->tmp, SNAP_LZ4_INDEX_FILE, strerror(-ret));
	return 0;
}

/* The memory map as written: st's, with the lz4 description when the writer compressed. */
static int described_state(const struct snap_writer *w, const struct snap_state *st,
			   struct snap_state *out, struct snap_err *err)
{
	struct snap_memory *m = &out->memory;

	*out = *st; /* shallow: heap parts stay st's */
	if (!w->lz4) {
		if (strcmp(st->memory.file, SNAP_MEMORY_FILE) || st->memory.encoding != SNAP_ENC_RAW)
			return snap_err_set(err, -EINVAL, "memory.file: the writer writes raw \"%s\", not %s \"%s\"",
					    SNAP_MEMORY_FILE, st->memory.encoding == SNAP_ENC_RAW ? "raw" : "lz4",
					    st->memory.file);
		return 0;
	}
	if (st->memory.size != w->lz4_len)
		return snap_err_set(err, -EINVAL, "memory.size is 0x%" PRIx64 " but the lz4 image written is 0x%"
				    PRIx64 " bytes", st->memory.size, w->lz4_len);
	snprintf(m->file, sizeof(m->file), "%s", SNAP_LZ4_MEMORY_FILE);
	snprintf(m->index_file, sizeof(m->index_file), "%s", SNAP_LZ4_INDEX_FILE);
	m->encoding = SNAP_ENC_LZ4;
	m->chunk_size = w->chunk_size;
	m->compressed_size = w->lz4_file_size;
	return 0;
}

int snap_fsync_parent(const char *path, struct snap_err *err)
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

	if (renameat2(w->dfd, w->tmp, w->dfd, w->dir, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		goto fail;
	/* file system without RENAME_NOREPLACE: check, then a plain rename */
	if (fstatat(w->dfd, w->dir, &stb, AT_SYMLINK_NOFOLLOW) == 0) {
		errno = EEXIST;
		goto fail;
	}
	if (renameat(w->dfd, w->tmp, w->dfd, w->dir) == 0)
		return 0;
fail:
	if (errno == EEXIST || errno == ENOTEMPTY)
		return snap_err_set(err, -EEXIST, "snapshot directory %s appeared while writing (not replacing it)",
				    w->dir);
	return snap_err_set(err, -errno, "rename %s -> %s: %s", w->tmp, w->dir, strerror(errno));
}

int snap_writer_commit(struct snap_writer *w, const struct snap_state *st, struct snap_err *err)
{
	struct snap_state desc;
	uint8_t *buf = NULL;
	size_t len = 0;
	int fd = -1, ret;

	ret = described_state(w, st, &desc, err);
	if (ret)
		goto fail;
	st = &desc;
	ret = snap_state_encode(st, &buf, &len, err);
	if (ret)
		goto fail;
	if (w->mem_end > st->memory.size) {
		ret = snap_err_set(err, -EINVAL, "memory written up to 0x%" PRIx64 " but memory.size is 0x%" PRIx64,
				   w->mem_end, st->memory.size);
		goto fail;
	}
	if ((!w->lz4 && ftruncate(w->mem_fd, (off_t)st->memory.size) < 0) || fsync(w->mem_fd) < 0) {
		ret = snap_err_set(err, -errno, "%s/%s: %s", w->tmp, st->memory.file, strerror(errno));
		goto fail;
	}
	if (w->lz4) {
		ret = write_index(w, st, err);
		if (ret)
			goto fail;
	}
	if (w->has_ws) {
		ret = snap_ws_write_at(w->tmp_fd, w->tmp, st->header.id, st->memory.size / SNAP_PAGE_SIZE,
				       w->ws, w->nr_ws, true, err);
		if (ret)
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
	if (w->dfd == AT_FDCWD)
		ret = snap_fsync_parent(w->dir, err);
	else if (fsync(w->dfd) < 0)
		ret = snap_err_set(err, -errno, "fsync of the directory of %s: %s", w->dir,
				   strerror(errno));
	if (ret) {
		/* installed but not durable: take it back rather than leave a maybe-snapshot */
		remove_snapshot_dir(w->dfd, w->tmp_fd, w->dir);
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
