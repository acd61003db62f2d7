/*
 * Compressing a memory image into lz4 chunks. Compression happens once per golden
 * snapshot and is CPU-bound, so windows of chunks are compressed by every online CPU
 * (threads claim chunks from a shared counter), then written in chunk order with
 * pwritev: the file layout is sequential, which the index rules require.
 *
 * LZ4_compress_default, not LZ4HC: on a 512 MiB sandbox image HC level 9 stored 4%
 * less (108.2 vs 113.2 MiB at 64 KiB chunks) and decoded ~13% faster, but compressed
 * at ~105 MB/s instead of ~1700 MB/s per core (FORMAT.md section 10.4).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <lz4.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "snapfmt_int.h"

#define WINDOW_BYTES (32u << 20)
#define MAX_THREADS  8
#define MAX_IOV      1024 /* IOV_MAX on Linux */

struct window {
	const uint8_t *image;
	uint64_t len;
	uint32_t chunk_size;
	uint64_t first, count;          /* the chunks of this window */
	uint8_t *out;                   /* count slots of chunk_size bytes */
	struct snap_lz4_chunk *chunks;  /* all chunks, indexed globally */
	const struct snap_extent *data; /* where image may be non-zero; NULL: anywhere */
	uint64_t nr_data;
	uint8_t *in_hole;               /* per slot: 1 when the chunk lies in a hole */
	atomic_uint_fast64_t next;      /* next slot to claim */
};

static void compress_chunk(struct window *w, uint64_t slot)
{
	uint64_t i = w->first + slot, off = i * w->chunk_size;
	uint32_t len = w->len - off < w->chunk_size ? (uint32_t)(w->len - off) : w->chunk_size;
	const uint8_t *src = w->image + off;
	struct snap_lz4_chunk *c = &w->chunks[i];
	int n;

	c->len = len;
	/* a hole is zero without a look: reading it would only fill the page cache */
	if (w->in_hole[slot] || snap_is_zero(src, len)) {
		c->kind = SNAP_CHUNK_ZERO;
		return;
	}
	c->crc32c = snap_crc32c(0, src, len);
	/* room for len - 1 bytes: LZ4 gives up (0) when the chunk would not shrink */
	n = LZ4_compress_default((const char *)src, (char *)w->out + slot * w->chunk_size, (int)len,
				 (int)len - 1);
	if (n > 0) {
		c->kind = SNAP_CHUNK_LZ4;
		c->stored_len = (uint32_t)n;
	} else {
		c->kind = SNAP_CHUNK_RAW;
		c->stored_len = len;
	}
}

static void *worker(void *arg)
{
	struct window *w = arg;

	for (;;) {
		uint64_t slot = atomic_fetch_add(&w->next, 1);
		if (slot >= w->count)
			return NULL;
		compress_chunk(w, slot);
	}
}

static unsigned nr_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (unsigned)n;
}

/* pwritev of iov[0..n) at off, resuming after short writes. */
static int write_iov(int fd, struct iovec *iov, int n, uint64_t off)
{
	while (n > 0) {
		ssize_t r = pwritev(fd, iov, n, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO;
		off += (uint64_t)r;
		while (n > 0 && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
	return 0;
}

/* Appends the window's stored chunks at *pos, assigning their offsets. */
static int write_window(int fd, struct window *w, uint64_t *pos)
{
	struct iovec iov[MAX_IOV];
	uint64_t start = *pos;
	int n = 0, ret;

	for (uint64_t slot = 0; slot < w->count; slot++) {
		struct snap_lz4_chunk *c = &w->chunks[w->first + slot];

		if (c->kind == SNAP_CHUNK_ZERO)
			continue;
		c->offset = *pos;
		*pos += c->stored_len;
		iov[n].iov_base = c->kind == SNAP_CHUNK_RAW
			? (void *)(w->image + (w->first + slot) * w->chunk_size)
			: w->out + slot * w->chunk_size;
		iov[n].iov_len = c->stored_len;
		if (++n == MAX_IOV) {
			ret = write_iov(fd, iov, n, start);
			if (ret)
				return ret;
			start = *pos;
			n = 0;
		}
	}
	return n ? write_iov(fd, iov, n, start) : 0;
}

/* Marks the window's chunks that lie in holes; false when the whole window does. */
static bool mark_holes(struct window *w, uint64_t *cursor)
{
	bool any = false;

	for (uint64_t slot = 0; slot < w->count; slot++) {
		uint64_t off = (w->first + slot) * w->chunk_size;
		uint64_t len = w->len - off < w->chunk_size ? w->len - off : w->chunk_size;

		w->in_hole[slot] = w->data && !snap_extents_overlap(w->data, w->nr_data, cursor,
								    off, len);
		any |= !w->in_hole[slot];
	}
	return any;
}

int snap_lz4_compress_image(int fd, const void *image, uint64_t len, uint32_t chunk_size,
			    const struct snap_extent *data, uint64_t nr_data,
			    struct snap_lz4_chunk **chunks_out, uint64_t *nr, uint64_t *file_size,
			    struct snap_err *err)
{
	uint64_t n = snap_lz4_nr_chunks(len, chunk_size), per_window, pos = 0;
	unsigned threads = nr_threads();
	pthread_t tid[MAX_THREADS];
	struct snap_lz4_chunk *chunks;
	struct window w = { .image = image, .len = len, .chunk_size = chunk_size, .data = data,
			    .nr_data = nr_data };
	uint64_t cursor = 0;
	int ret = 0;

	per_window = WINDOW_BYTES / chunk_size ? WINDOW_BYTES / chunk_size : 1;
	if (per_window > n)
		per_window = n;
	chunks = calloc(n ? n : 1, sizeof(*chunks));
	w.out = malloc(per_window * chunk_size);
	w.in_hole = malloc(per_window);
	if (!chunks || !w.out || !w.in_hole) {
		ret = snap_err_set(err, -ENOMEM, "lz4: out of memory");
		goto fail;
	}
	w.chunks = chunks;
	for (w.first = 0; w.first < n; w.first += per_window) {
		unsigned started = 0;

		w.count = n - w.first < per_window ? n - w.first : per_window;
		if (!mark_holes(&w, &cursor)) {
			/* all hole: zero chunks, nothing to compress or write */
			for (uint64_t slot = 0; slot < w.count; slot++) {
				uint64_t off = (w.first + slot) * chunk_size;

				chunks[w.first + slot].len = (uint32_t)(len - off < chunk_size
									? len - off : chunk_size);
			}
			continue;
		}
		atomic_store(&w.next, 0);
		/* a thread that cannot start just leaves its share to the others */
		while (started + 1 < threads && !pthread_create(&tid[started], NULL, worker, &w))
			started++;
		worker(&w);
		for (unsigned t = 0; t < started; t++)
			pthread_join(tid[t], NULL);
		ret = write_window(fd, &w, &pos);
		if (ret) {
			ret = snap_err_set(err, ret, "%s: write at 0x%" PRIx64 ": %s", SNAP_LZ4_MEMORY_FILE, pos,
					   strerror(-ret));
			goto fail;
		}
	}
	free(w.out);
	free(w.in_hole);
	*chunks_out = chunks;
	*nr = n;
	*file_size = pos;
	return 0;
fail:
	free(w.out);
	free(w.in_hole);
	free(chunks);
	return ret;
}
