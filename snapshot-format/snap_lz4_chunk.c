/*
 * Reading lz4 chunks: decode with the CRC32C check that stands between the memory
 * file and the guest, a pread+decode convenience, whole-memory verification, and the
 * full decoded image used by the conversions and merge.
 */
#include <errno.h>
#include <inttypes.h>
#include <lz4.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "snapfmt_int.h"

/* Zeroes what dst may have received, so a caller ignoring the error gets no unchecked bytes. */
static int reject(void *dst, uint32_t len, struct snap_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static int reject(void *dst, uint32_t len, struct snap_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	memset(dst, 0, len);
	if (err) {
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return code;
}

int snap_lz4_chunk_decode(const struct snap_lz4_index *ix, uint64_t i, const void *stored,
			  uint32_t stored_len, void *dst, struct snap_err *err)
{
	const struct snap_lz4_chunk *c = snap_lz4_chunk(ix, i);
	uint32_t crc;
	int n;

	if (!c)
		return snap_err_set(err, -EINVAL, "chunk %" PRIu64 ": out of range (%" PRIu64 " chunks)", i,
				    ix->nr_chunks);
	if (stored_len != c->stored_len || (stored_len && !stored))
		return reject(dst, c->len, err, -EINVAL, "chunk %" PRIu64 ": %u stored bytes given, the index "
			      "says %u", i, stored_len, c->stored_len);
	switch (c->kind) {
	case SNAP_CHUNK_ZERO:
		memset(dst, 0, c->len);
		return 0;
	case SNAP_CHUNK_RAW:
		/* the index load checked this; a hand-built index (or a bug) must not overread */
		if (stored_len != c->len)
			return reject(dst, c->len, err, -EINVAL, "chunk %" PRIu64 ": raw chunk of %u "
				      "stored bytes, expected %u", i, stored_len, c->len);
		if (dst != stored)
			memcpy(dst, stored, c->len);
		break;
	case SNAP_CHUNK_LZ4:
		n = LZ4_decompress_safe(stored, dst, (int)stored_len, (int)c->len);
		if (n < 0)
			return reject(dst, c->len, err, -EBADMSG, "chunk %" PRIu64 ": corrupt lz4 data "
				      "(LZ4_decompress_safe returned %d)", i, n);
		if ((uint32_t)n != c->len)
			return reject(dst, c->len, err, -EBADMSG, "chunk %" PRIu64 ": lz4 data decodes to %d "
				      "bytes, expected %u", i, n, c->len);
		break;
	default:
		return reject(dst, c->len, err, -EINVAL, "chunk %" PRIu64 ": unknown kind %u", i, c->kind);
	}
	/* checked in dst, after the copy: what the caller gets is what was checked */
	crc = snap_crc32c(0, dst, c->len);
	if (crc != c->crc32c)
		return reject(dst, c->len, err, -EBADMSG, "chunk %" PRIu64 " (memory 0x%" PRIx64 "+0x%x): CRC32C "
			      "0x%08x, the index says 0x%08x: the memory file is damaged", i,
			      i << ix->chunk_shift, c->len, crc, c->crc32c);
	return 0;
}

int snap_lz4_chunk_read(const struct snap_lz4_index *ix, uint64_t i, void *dst, void *scratch,
			struct snap_err *err)
{
	const struct snap_lz4_chunk *c = snap_lz4_chunk(ix, i);
	void *buf;
	int ret;

	if (!c)
		return snap_err_set(err, -EINVAL, "chunk %" PRIu64 ": out of range (%" PRIu64 " chunks)", i,
				    ix->nr_chunks);
	buf = c->kind == SNAP_CHUNK_LZ4 ? scratch : dst;
	if (c->stored_len) {
		ret = snap_read_all(ix->fd, buf, c->stored_len, c->offset);
		if (ret)
			return reject(dst, c->len, err, ret, "chunk %" PRIu64 ": reading 0x%x bytes at 0x%" PRIx64
				      ": %s", i, c->stored_len, c->offset, strerror(-ret));
	}
	return snap_lz4_chunk_decode(ix, i, c->stored_len ? buf : NULL, c->stored_len, dst, err);
}

int snap_dir_verify_memory(const struct snap_dir *d, uint64_t *bad_chunk, struct snap_err *err)
{
	const struct snap_lz4_index *ix = d->lz4;
	uint8_t *dst, *scratch;
	int ret = 0;

	*bad_chunk = UINT64_MAX;
	if (!ix)
		return 0;
	dst = malloc(ix->chunk_size);
	scratch = malloc(ix->max_stored ? ix->max_stored : 1);
	if (!dst || !scratch) {
		ret = snap_err_set(err, -ENOMEM, "verify: out of memory");
		goto out;
	}
	for (uint64_t i = 0; i < ix->nr_chunks && !ret; i++) {
		/* a zero entry was checked whole with the index: zeroing a buffer for it
		 * would only cost time (minutes for a sparse 1 TiB image) */
		if (ix->chunks[i].kind == SNAP_CHUNK_ZERO)
			continue;
		ret = snap_lz4_chunk_read(ix, i, dst, scratch, err);
		if (ret)
			*bad_chunk = i;
	}
out:
	free(dst);
	free(scratch);
	return ret;
}

int snap_dir_map_image(const struct snap_dir *d, const uint8_t **img, struct snap_err *err)
{
	const struct snap_lz4_index *ix = d->lz4;
	uint64_t size = d->state.memory.size;
	uint8_t *p, *scratch;
	int ret = 0;

	*img = NULL;
	if (!ix) {
		/* raw: the file is exactly memory.size bytes (checked at open) */
		p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, d->mem_fd, 0);
		if (p == MAP_FAILED)
			return snap_err_set(err, -errno, "mapping the memory file: %s", strerror(errno));
		*img = p;
		return 0;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return snap_err_set(err, -errno, "memory image of 0x%" PRIx64 " bytes: %s", size, strerror(errno));
	scratch = malloc(ix->max_stored ? ix->max_stored : 1);
	if (!scratch) {
		ret = snap_err_set(err, -ENOMEM, "out of memory");
		goto fail;
	}
	/* zero chunks stay untouched anonymous memory: already zero, and never allocated */
	for (uint64_t i = 0; i < ix->nr_chunks && !ret; i++)
		if (ix->chunks[i].kind != SNAP_CHUNK_ZERO)
			ret = snap_lz4_chunk_read(ix, i, p + (i << ix->chunk_shift), scratch, err);
	free(scratch);
	if (ret)
		goto fail;
	*img = p;
	return 0;
fail:
	munmap(p, size);
	return ret;
}

void snap_dir_unmap_image(const struct snap_dir *d, const uint8_t *img)
{
	if (img)
		munmap((void *)img, d->state.memory.size);
}
