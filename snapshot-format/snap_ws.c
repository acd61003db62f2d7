/*
 * The working-set file (ws.bin): the pages a restored guest touched first, in fault
 * order, so a page server can prefetch them in bulk. A fixed binary layout (header +
 * le64 array) rather than msgpack: it is read on the restore path, where one read, a
 * CRC and a bounds loop beat a general decoder, and the array can be read in place.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "snapfmt_int.h"

/* Header field offsets (FORMAT.md section 10.5). */
#define W_MAGIC    0
#define W_VERSION  8
#define W_CRC      12
#define W_COUNT    16
#define W_PAGES    24
#define W_ID       32
#define CRC_FROM   16

#define RADIX_BITS 11
#define RADIX      (1u << RADIX_BITS)

static int check_pages(const uint64_t *pages, uint64_t n, uint64_t mem_pages, struct snap_err *err)
{
	uint64_t limit = mem_pages < SNAP_WS_MAX_PAGES ? mem_pages : SNAP_WS_MAX_PAGES;

	if (n > limit)
		return snap_err_set(err, -EINVAL, "%" PRIu64 " pages listed (at most %" PRIu64 ")", n, limit);
	for (uint64_t i = 0; i < n; i++)
		if (pages[i] >= mem_pages)
			return snap_err_set(err, -EINVAL, "entry %" PRIu64 ": page 0x%" PRIx64 " is outside the "
					    "memory (0x%" PRIx64 " pages)", i, pages[i], mem_pages);
	return 0;
}

int snap_ws_write_at(int dirfd, const char *dir, const char *id, uint64_t mem_pages,
		     const uint64_t *pages, uint64_t n, bool replace, struct snap_err *err)
{
	struct snap_err inner = { "" };
	char tmp[64];
	uint8_t *buf;
	size_t len;
	uint32_t r = 0;
	int fd, ret;

	ret = check_pages(pages, n, mem_pages, &inner);
	if (ret)
		return snap_err_set(err, ret, "%s/%s: %s", dir, SNAP_WS_FILE, inner.msg);
	len = SNAP_WS_HEADER + (size_t)n * 8;
	buf = calloc(1, len);
	if (!buf)
		return snap_err_set(err, -ENOMEM, "%s/%s: out of memory", dir, SNAP_WS_FILE);
	memcpy(buf + W_MAGIC, SNAP_WS_MAGIC, 8);
	snap_put_le32(buf + W_VERSION, SNAP_WS_VERSION);
	snap_put_le64(buf + W_COUNT, n);
	snap_put_le64(buf + W_PAGES, mem_pages);
	memcpy(buf + W_ID, id, SNAP_ID_LEN);
	for (uint64_t i = 0; i < n; i++)
		snap_put_le64(buf + SNAP_WS_HEADER + i * 8, pages[i]);
	snap_put_le32(buf + W_CRC, snap_crc32c(0, buf + CRC_FROM, len - CRC_FROM));

	/* temp + rename: a reader sees the old file or the new one, never a partial one */
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = 0;
	snprintf(tmp, sizeof(tmp), ".%s.tmp.%d.%08x", SNAP_WS_FILE, (int)getpid(), r);
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = snap_err_set(err, -errno, "%s/%s: %s", dir, tmp, strerror(errno));
		free(buf);
		return ret;
	}
	ret = snap_write_all(fd, buf, len, 0);
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	free(buf);
	/* without replace, a ws.bin that appeared meanwhile still wins: RENAME_NOREPLACE */
	if (!ret && renameat2(dirfd, tmp, dirfd, SNAP_WS_FILE, replace ? 0 : RENAME_NOREPLACE) < 0)
		ret = -errno;
	if (ret) {
		unlinkat(dirfd, tmp, 0);
		if (ret == -EEXIST)
			return snap_err_set(err, ret, "%s/%s exists (a working set is not replaced "
					    "unless asked to)", dir, SNAP_WS_FILE);
		return snap_err_set(err, ret, "%s/%s: %s", dir, SNAP_WS_FILE, strerror(-ret));
	}
	if (fsync(dirfd) < 0)
		return snap_err_set(err, -errno, "fsync of %s: %s", dir, strerror(errno));
	return 0;
}

static int ws_write(const char *dir, const uint64_t *pages, uint64_t n, bool replace,
		    struct snap_err *err)
{
	struct snap_state st;
	int dfd, ret;

	ret = snap_state_load(dir, &st, err);
	if (ret)
		return ret;
	dfd = snap_open_dir(dir, err);
	if (dfd >= 0) {
		ret = snap_ws_write_at(dfd, dir, st.header.id, st.memory.size / SNAP_PAGE_SIZE, pages, n, replace, err);
		close(dfd);
	} else {
		ret = dfd;
	}
	snap_state_free(&st);
	return ret;
}

int snap_ws_write(const char *dir, const uint64_t *pages, uint64_t n, struct snap_err *err)
{
	return ws_write(dir, pages, n, true, err);
}

int snap_ws_write_new(const char *dir, const uint64_t *pages, uint64_t n, struct snap_err *err)
{
	return ws_write(dir, pages, n, false, err);
}

/* Checks the header against st; *n gets the entry count. */
static int check_header(const uint8_t *h, uint64_t size, const struct snap_state *st, uint64_t *n,
			struct snap_err *err)
{
	uint64_t mem_pages = st->memory.size / SNAP_PAGE_SIZE, v;

	if (memcmp(h + W_MAGIC, SNAP_WS_MAGIC, 8))
		return snap_err_set(err, -EINVAL, "bad magic (not an ember working-set file)");
	if (snap_get_le32(h + W_VERSION) != SNAP_WS_VERSION)
		return snap_err_set(err, -ENOTSUP, "version %u (this ember reads %u)",
				    snap_get_le32(h + W_VERSION), SNAP_WS_VERSION);
	v = snap_get_le64(h + W_COUNT);
	if (v > SNAP_WS_MAX_PAGES || v > mem_pages)
		return snap_err_set(err, -EINVAL, "%" PRIu64 " pages listed (at most %" PRIu64 ")", v,
				    mem_pages < SNAP_WS_MAX_PAGES ? mem_pages : SNAP_WS_MAX_PAGES);
	if (size != SNAP_WS_HEADER + v * 8)
		return snap_err_set(err, -EINVAL, "%" PRIu64 " bytes, expected %" PRIu64 " for %" PRIu64
				    " pages: %s", size, SNAP_WS_HEADER + v * 8, v,
				    size < SNAP_WS_HEADER + v * 8 ? "truncated" : "too long");
	*n = v;
	return 0;
}

/* After the CRC: the fields that tie the file to this snapshot. */
static int check_owner(const uint8_t *h, const struct snap_state *st, struct snap_err *err)
{
	uint64_t mem_pages = st->memory.size / SNAP_PAGE_SIZE, v = snap_get_le64(h + W_PAGES);

	if (v != mem_pages)
		return snap_err_set(err, -EINVAL, "recorded for 0x%" PRIx64 " pages of memory, the snapshot has 0x%"
				    PRIx64, v, mem_pages);
	if (memcmp(h + W_ID, st->header.id, SNAP_ID_LEN))
		return snap_err_set(err, -EINVAL, "belongs to another snapshot (id %.32s, this one is %s)",
				    (const char *)(h + W_ID), st->header.id);
	return 0;
}

static int load_fd(int fd, uint64_t size, const struct snap_state *st, uint64_t **pages,
		   uint64_t *np, struct snap_err *err)
{
	uint8_t h[SNAP_WS_HEADER];
	uint64_t *p = NULL, n = 0;
	uint32_t crc;
	int ret;

	if (size < SNAP_WS_HEADER)
		return snap_err_set(err, -EINVAL, "%" PRIu64 " bytes: truncated (the header is %u)", size,
				    SNAP_WS_HEADER);
	ret = snap_read_all(fd, h, sizeof(h), 0);
	if (ret)
		return snap_err_set(err, ret, "read: %s", strerror(-ret));
	ret = check_header(h, size, st, &n, err);
	if (ret)
		return ret;
	if (n) {
		p = malloc(n * sizeof(*p));
		if (!p)
			return snap_err_set(err, -ENOMEM, "out of memory for %" PRIu64 " pages", n);
		ret = snap_read_all(fd, p, n * sizeof(*p), SNAP_WS_HEADER);
		if (ret) {
			free(p);
			return snap_err_set(err, ret, "read: %s", strerror(-ret));
		}
	}
	crc = snap_crc32c(0, h + CRC_FROM, SNAP_WS_HEADER - CRC_FROM);
	crc = snap_crc32c(crc, p, n * sizeof(*p));
	if (crc != snap_get_le32(h + W_CRC))
		ret = snap_err_set(err, -EINVAL, "CRC32C mismatch (stored 0x%08x, computed 0x%08x): the file "
				   "is damaged", snap_get_le32(h + W_CRC), crc);
	if (!ret)
		ret = check_owner(h, st, err);
	for (uint64_t i = 0; !ret && i < n; i++)
		p[i] = le64toh(p[i]);
	if (!ret)
		ret = check_pages(p, n, st->memory.size / SNAP_PAGE_SIZE, err);
	if (ret) {
		free(p);
		return ret;
	}
	*pages = p;
	*np = n;
	return 0;
}

int snap_ws_load(const char *dir, const struct snap_state *st, uint64_t **pages,
		 uint64_t *n, struct snap_err *err)
{
	struct snap_err inner = { "" };
	struct stat stb;
	int dfd, fd, ret;

	*pages = NULL;
	*n = 0;
	dfd = snap_open_dir(dir, err);
	if (dfd < 0)
		return dfd;
	fd = snap_open_regular(dfd, SNAP_WS_FILE, O_RDONLY, &stb, "working-set file", &inner);
	close(dfd);
	if (fd == -ENOENT)
		return snap_err_set(err, -ENOENT, "snapshot %s: no working-set file (%s)", dir, SNAP_WS_FILE);
	if (fd < 0)
		return snap_err_set(err, fd, "snapshot %s: %s", dir, inner.msg);
	ret = load_fd(fd, (uint64_t)stb.st_size, st, pages, n, &inner);
	close(fd);
	if (ret)
		return snap_err_set(err, ret, "snapshot %s: %s: %s", dir, SNAP_WS_FILE, inner.msg);
	return 0;
}

/* LSD radix sort of a[0..n) using tmp; returns whichever buffer holds the result. */
static uint64_t *radix_sort(uint64_t *a, uint64_t *tmp, uint64_t n, uint64_t max)
{
	for (unsigned shift = 0; shift < 64 && (max >> shift); shift += RADIX_BITS) {
		uint64_t count[RADIX] = { 0 }, sum = 0;

		for (uint64_t i = 0; i < n; i++)
			count[(a[i] >> shift) & (RADIX - 1)]++;
		for (unsigned d = 0; d < RADIX; d++) {
			uint64_t c = count[d];
			count[d] = sum;
			sum += c;
		}
		for (uint64_t i = 0; i < n; i++)
			tmp[count[(a[i] >> shift) & (RADIX - 1)]++] = a[i];
		uint64_t *t = a;
		a = tmp;
		tmp = t;
	}
	return a;
}

int snap_ws_ranges(const uint64_t *pages, uint64_t n, uint64_t max_gap,
		   struct snap_range **ranges, uint64_t *nr, struct snap_err *err)
{
	const uint64_t max_page = SNAP_MAX_GPA / SNAP_PAGE_SIZE;
	uint64_t *a, *b, *sorted, max = 0, k = 0, first, end;
	struct snap_range *out;

	*ranges = NULL;
	*nr = 0;
	if (!n)
		return 0;
	for (uint64_t i = 0; i < n; i++) {
		if (pages[i] >= max_page)
			return snap_err_set(err, -EINVAL, "working set: page 0x%" PRIx64 " is beyond 2^52 bytes",
					    pages[i]);
		if (pages[i] > max)
			max = pages[i];
	}
	if (n > SIZE_MAX / sizeof(*a) / 2)
		return snap_err_set(err, -ENOMEM, "working set: too many pages");
	a = malloc(n * sizeof(*a));
	b = malloc(n * sizeof(*b));
	out = malloc(n * sizeof(*out));
	if (!a || !b || !out) {
		free(a);
		free(b);
		free(out);
		return snap_err_set(err, -ENOMEM, "working set: out of memory");
	}
	memcpy(a, pages, n * sizeof(*a));
	sorted = radix_sort(a, b, n, max);
	first = sorted[0];
	end = first + 1;
	for (uint64_t i = 1; i < n; i++) {
		uint64_t p = sorted[i];

		if (p < end)
			continue; /* a repeat */
		if (p - end > max_gap) {
			out[k++] = (struct snap_range){ .first = first, .count = end - first };
			first = p;
		}
		end = p + 1;
	}
	out[k++] = (struct snap_range){ .first = first, .count = end - first };
	free(a);
	free(b);
	*ranges = realloc(out, k * sizeof(*out)) ?: out;
	*nr = k;
	return 0;
}
