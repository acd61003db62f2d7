/*
 * The chunk index of lz4-compressed memory (memory.idx): a fixed binary table, so a
 * page server finds chunk i at a computed offset and the loader validates it in one
 * linear pass. The whole index is checked against the state and the memory file's
 * size before a guest runs; only the chunk payloads are left to check, one at a time,
 * by their CRC32C when they are decoded.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snapfmt_int.h"

/* Header field offsets (FORMAT.md section 10.2). */
#define H_MAGIC      0
#define H_VERSION    8
#define H_CRC        12
#define H_CHUNK      16
#define H_RESERVED   20
#define H_MEMSIZE    24
#define H_COUNT      32
#define H_FILESIZE   40
#define H_ID         48
#define CRC_FROM     16 /* the CRC covers everything after itself */

uint64_t snap_lz4_nr_chunks(uint64_t mem_size, uint32_t chunk_size)
{
	return mem_size / chunk_size + (mem_size % chunk_size != 0);
}

static uint32_t chunk_len(uint64_t mem_size, uint32_t chunk_size, uint64_t i)
{
	uint64_t left = mem_size - i * chunk_size;

	return left < chunk_size ? (uint32_t)left : chunk_size;
}

int snap_lz4_index_encode(const struct snap_lz4_chunk *chunks, uint64_t n, uint32_t chunk_size,
			  uint64_t mem_size, uint64_t file_size, const char *id, uint8_t **buf,
			  size_t *len, struct snap_err *err)
{
	size_t size = SNAP_LZ4_INDEX_HEADER + (size_t)n * SNAP_LZ4_INDEX_ENTRY;
	uint8_t *p = calloc(1, size);

	if (!p)
		return snap_err_set(err, -ENOMEM, "%s: out of memory", SNAP_LZ4_INDEX_FILE);
	memcpy(p + H_MAGIC, SNAP_LZ4_INDEX_MAGIC, 8);
	snap_put_le32(p + H_VERSION, SNAP_LZ4_INDEX_VERSION);
	snap_put_le32(p + H_CHUNK, chunk_size);
	snap_put_le64(p + H_MEMSIZE, mem_size);
	snap_put_le64(p + H_COUNT, n);
	snap_put_le64(p + H_FILESIZE, file_size);
	memcpy(p + H_ID, id, SNAP_ID_LEN);
	for (uint64_t i = 0; i < n; i++) {
		uint8_t *e = p + SNAP_LZ4_INDEX_HEADER + i * SNAP_LZ4_INDEX_ENTRY;

		snap_put_le64(e, chunks[i].offset);
		snap_put_le32(e + 8, chunks[i].crc32c);
		snap_put_le32(e + 12, chunks[i].stored_len | (uint32_t)chunks[i].kind << 24);
	}
	snap_put_le32(p + H_CRC, snap_crc32c(0, p + CRC_FROM, size - CRC_FROM));
	*buf = p;
	*len = size;
	return 0;
}

/* One entry: its own rules, then its place in the memory file after *prev_end. */
static int parse_entry(struct snap_lz4_index *ix, uint64_t i, const uint8_t *e, uint64_t *prev_end,
		       struct snap_err *err)
{
	struct snap_lz4_chunk *c = &ix->chunks[i];
	uint32_t word = snap_get_le32(e + 12);

	c->offset = snap_get_le64(e);
	c->crc32c = snap_get_le32(e + 8);
	c->stored_len = word & 0xffffff;
	c->kind = (uint8_t)(word >> 24);
	c->len = chunk_len(ix->mem_size, ix->chunk_size, i);
	switch (c->kind) {
	case SNAP_CHUNK_ZERO:
		if (c->stored_len || c->offset || c->crc32c)
			return snap_err_set(err, -EINVAL, "chunk %" PRIu64 ": a zero chunk must have offset, "
					    "length and crc 0 (has 0x%" PRIx64 ", %u, 0x%08x)", i, c->offset,
					    c->stored_len, c->crc32c);
		ix->nr_zero++;
		return 0;
	case SNAP_CHUNK_RAW:
		if (c->stored_len != c->len)
			return snap_err_set(err, -EINVAL, "chunk %" PRIu64 ": raw chunk of %u stored bytes, "
					    "expected exactly %u", i, c->stored_len, c->len);
		ix->nr_raw++;
		break;
	case SNAP_CHUNK_LZ4:
		/* a chunk that does not shrink is stored raw: lz4 payloads are < len */
		if (c->stored_len == 0 || c->stored_len >= c->len)
			return snap_err_set(err, -EINVAL, "chunk %" PRIu64 ": lz4 chunk of %u stored bytes "
					    "(1..%u allowed)", i, c->stored_len, c->len - 1);
		ix->nr_lz4++;
		break;
	default:
		return snap_err_set(err, -EINVAL, "chunk %" PRIu64 ": unknown kind %u (0 zero, 1 raw, 2 lz4)",
				    i, c->kind);
	}
	if (c->offset < *prev_end)
		return snap_err_set(err, -EINVAL, "chunk %" PRIu64 ": offset 0x%" PRIx64 " overlaps or precedes "
				    "the previous stored chunk (which ends at 0x%" PRIx64 ")", i, c->offset,
				    *prev_end);
	if (c->offset > ix->file_size || c->stored_len > ix->file_size - c->offset)
		return snap_err_set(err, -EINVAL, "chunk %" PRIu64 ": bytes 0x%" PRIx64 "+0x%x extend past the "
				    "end of the memory file (0x%" PRIx64 " bytes)", i, c->offset, c->stored_len,
				    ix->file_size);
	*prev_end = c->offset + c->stored_len;
	if (c->stored_len > ix->max_stored)
		ix->max_stored = c->stored_len;
	return 0;
}

/* Header fields against the (already validated) state. */
static int check_header(const uint8_t *h, const struct snap_state *st, uint64_t n,
			struct snap_err *err)
{
	const struct snap_memory *m = &st->memory;
	uint64_t v;

	if (snap_get_le32(h + H_CHUNK) != m->chunk_size)
		return snap_err_set(err, -EINVAL, "chunk size %u, but memory.chunk_size is %u",
				    snap_get_le32(h + H_CHUNK), m->chunk_size);
	if (snap_get_le32(h + H_RESERVED))
		return snap_err_set(err, -EINVAL, "reserved header bytes 20..23 are not zero");
	if ((v = snap_get_le64(h + H_MEMSIZE)) != m->size)
		return snap_err_set(err, -EINVAL, "memory size 0x%" PRIx64 ", but memory.size is 0x%" PRIx64,
				    v, m->size);
	if ((v = snap_get_le64(h + H_COUNT)) != n)
		return snap_err_set(err, -EINVAL, "%" PRIu64 " entries, expected %" PRIu64, v, n);
	if ((v = snap_get_le64(h + H_FILESIZE)) != m->compressed_size)
		return snap_err_set(err, -EINVAL, "memory file size 0x%" PRIx64 ", but memory.compressed_size "
				    "is 0x%" PRIx64, v, m->compressed_size);
	if (memcmp(h + H_ID, st->header.id, SNAP_ID_LEN))
		return snap_err_set(err, -EINVAL, "belongs to another snapshot (id %.32s, this one is %s)",
				    (const char *)(h + H_ID), st->header.id);
	return 0;
}

/* Reads and checks the index file (fd, size bytes) of ix->nr_chunks entries into ix->chunks. */
static int read_index(int fd, uint64_t size, const struct snap_state *st, struct snap_lz4_index *ix,
		      struct snap_err *err)
{
	uint64_t n = ix->nr_chunks, want, prev_end = 0;
	uint8_t *buf = NULL;
	int ret;

	if (n > (SIZE_MAX - SNAP_LZ4_INDEX_HEADER) / SNAP_LZ4_INDEX_ENTRY / 2)
		return snap_err_set(err, -EFBIG, "%" PRIu64 " chunks: too many", n);
	want = SNAP_LZ4_INDEX_HEADER + n * SNAP_LZ4_INDEX_ENTRY;
	if (size < CRC_FROM) {
		ret = snap_err_set(err, -EINVAL, "%" PRIu64 " bytes: truncated (no preamble)",
				   size);
		goto out;
	}
	buf = malloc(size > want ? CRC_FROM : want);
	if (!buf) {
		ret = snap_err_set(err, -ENOMEM, "out of memory for %" PRIu64 " entries", n);
		goto out;
	}
	ret = snap_read_all(fd, buf, CRC_FROM, 0);
	if (ret) {
		ret = snap_err_set(err, ret, "read: %s", strerror(-ret));
		goto out;
	}
	if (memcmp(buf + H_MAGIC, SNAP_LZ4_INDEX_MAGIC, 8)) {
		ret = snap_err_set(err, -EINVAL, "bad magic (not an ember chunk index)");
		goto out;
	}
	if (snap_get_le32(buf + H_VERSION) != SNAP_LZ4_INDEX_VERSION) {
		ret = snap_err_set(err, -ENOTSUP, "index version %u (this ember reads %u)",
				   snap_get_le32(buf + H_VERSION), SNAP_LZ4_INDEX_VERSION);
		goto out;
	}
	if (size != want) {
		ret = snap_err_set(err, -EINVAL, "%" PRIu64 " bytes, expected %" PRIu64 " (%u-byte header + %"
				   PRIu64 " entries of %u bytes): %s", size, want,
				   SNAP_LZ4_INDEX_HEADER, n, SNAP_LZ4_INDEX_ENTRY,
				   size < want ? "truncated" : "too long");
		goto out;
	}
	ret = snap_read_all(fd, buf + CRC_FROM, (size_t)want - CRC_FROM, CRC_FROM);
	if (ret) {
		ret = snap_err_set(err, ret, "read: %s", strerror(-ret));
		goto out;
	}
	if (snap_crc32c(0, buf + CRC_FROM, (size_t)want - CRC_FROM) != snap_get_le32(buf + H_CRC)) {
		ret = snap_err_set(err, -EINVAL, "CRC32C mismatch (stored 0x%08x): the index is damaged",
				   snap_get_le32(buf + H_CRC));
		goto out;
	}
	ret = check_header(buf, st, n, err);
	for (uint64_t i = 0; !ret && i < n; i++)
		ret = parse_entry(ix, i, buf + SNAP_LZ4_INDEX_HEADER + i * SNAP_LZ4_INDEX_ENTRY,
				  &prev_end, err);
out:
	free(buf);
	return ret;
}

int snap_lz4_index_load(const char *dir, const struct snap_state *st,
			struct snap_lz4_index **out, struct snap_err *err)
{
	const struct snap_memory *m = &st->memory;
	struct snap_err inner = { "" };
	struct snap_lz4_index *ix;
	struct stat stb;
	int dfd, fd, ret;

	*out = NULL;
	if (m->encoding != SNAP_ENC_LZ4)
		return snap_err_set(err, -EINVAL, "snapshot %s: memory is not lz4-encoded (no chunk index)", dir);
	ret = snap_state_validate(st, err);
	if (ret)
		return ret;
	ix = calloc(1, sizeof(*ix));
	if (!ix)
		return snap_err_set(err, -ENOMEM, "snapshot %s: out of memory", dir);
	ix->fd = -1;
	ix->chunk_size = m->chunk_size;
	ix->chunk_shift = (uint32_t)__builtin_ctz(m->chunk_size);
	ix->mem_size = m->size;
	ix->file_size = m->compressed_size;
	ix->nr_chunks = snap_lz4_nr_chunks(m->size, m->chunk_size);
	ret = snap_mem_open(dir, st, &ix->fd, &ix->mem, err);
	if (ret)
		goto fail;
	ix->chunks = calloc(ix->nr_chunks, sizeof(*ix->chunks));
	if (!ix->chunks) {
		ret = snap_err_set(err, -ENOMEM, "snapshot %s: out of memory for %" PRIu64 " chunks", dir,
				   ix->nr_chunks);
		goto fail;
	}
	dfd = snap_open_dir(dir, err);
	if (dfd < 0) {
		ret = dfd;
		goto fail;
	}
	fd = snap_open_regular(dfd, m->index_file, O_RDONLY, &stb, "index file", &inner);
	close(dfd);
	if (fd < 0) {
		ret = snap_err_set(err, fd, "snapshot %s: %s", dir, inner.msg);
		goto fail;
	}
	ret = read_index(fd, (uint64_t)stb.st_size, st, ix, &inner);
	close(fd);
	if (ret) {
		snap_err_set(err, ret, "snapshot %s: %s: %s", dir, m->index_file, inner.msg);
		goto fail;
	}
	*out = ix;
	return 0;
fail:
	snap_lz4_index_free(ix);
	return ret;
}

void snap_lz4_index_free(struct snap_lz4_index *ix)
{
	if (!ix)
		return;
	if (ix->fd >= 0)
		close(ix->fd);
	free(ix->chunks);
	free(ix);
}

const struct snap_lz4_chunk *snap_lz4_chunk(const struct snap_lz4_index *ix, uint64_t i)
{
	return i < ix->nr_chunks ? &ix->chunks[i] : NULL;
}
