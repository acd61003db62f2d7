/*
 * memory.idx: every kind of damage to the chunk index, or to its relation with the
 * state and the memory file, is rejected by snap_lz4_index_load (and so by
 * snap_dir_open) with a message naming it, before anything reads a chunk.
 */
#include "test_snapfmt_fixture.h"

#define CS     (16u << 10)
#define NCH    6u                  /* chunks: z c r z c r */
#define HDR    SNAP_LZ4_INDEX_HEADER
#define ENT(i) (HDR + (i) * SNAP_LZ4_INDEX_ENTRY)

static char *tmp, *dir, *idx_path, *lz_path;
static struct snap_state st;
static uint8_t *idx;
static size_t idx_len;

static void fill(uint8_t *p, char kind, uint64_t seed)
{
	uint64_t s = seed + 88172645463325252ull;

	for (uint32_t i = 0; i < CS; i++) {
		if (kind == 'z') {
			p[i] = 0;
		} else if (kind == 'c') {
			p[i] = (uint8_t)("abcdefgh"[i % 8]);
		} else {
			s ^= s << 13;
			s ^= s >> 7;
			s ^= s << 17;
			p[i] = (uint8_t)s;
		}
	}
}

static void read_file(const char *path, uint8_t **buf, size_t *len)
{
	struct stat sb;
	int fd = open(path, O_RDONLY);

	cr_assert_geq(fd, 0, "%s", path);
	cr_assert_eq(fstat(fd, &sb), 0);
	*len = (size_t)sb.st_size;
	*buf = malloc(*len + 1);
	cr_assert_eq(pread(fd, *buf, *len, 0), (ssize_t)*len);
	close(fd);
}

static void write_file(const char *path, const uint8_t *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_TRUNC);

	cr_assert_geq(fd, 0, "%s", path);
	cr_assert_eq(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

static void setup(void)
{
	struct snap_err err = { "" };
	struct snap_writer *w;
	static const char kinds[] = "zcrzcr";
	uint8_t *img = malloc(NCH * CS);

	tmp = fx_tmpdir();
	dir = fx_path(tmp, "s");
	idx_path = fx_path(dir, "memory.idx");
	lz_path = fx_path(dir, "memory.lz4");
	fx_fill_state(&st);
	st.memory.size = NCH * CS;
	st.vm.regions[0] = (struct snap_region){ .gpa = 0, .size = NCH * CS / 2, .file_offset = 0 };
	st.vm.regions[1] = (struct snap_region){ .gpa = 1ull << 32, .size = NCH * CS / 2,
						 .file_offset = NCH * CS / 2 };
	for (unsigned i = 0; i < NCH; i++)
		fill(img + i * CS, kinds[i], i);
	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_lz4_chunked(w, img, NCH * CS, CS, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_commit(w, &st, &err), 0, "%s", err.msg);
	free(img);
	read_file(idx_path, &idx, &idx_len);
	cr_assert_eq(idx_len, HDR + NCH * SNAP_LZ4_INDEX_ENTRY);
	/* the reference state is the one on disk (it carries the lz4 description) */
	snap_state_free(&st);
	cr_assert_eq(snap_state_load(dir, &st, &err), 0, "%s", err.msg);
}

static void teardown(void)
{
	snap_state_free(&st);
	fx_rm_rf(tmp);
	free(tmp);
	free(dir);
	free(idx_path);
	free(lz_path);
	free(idx);
}

TestSuite(snapfmt_lz4_index, .init = setup, .fini = teardown);

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Writes the edited index back with a correct CRC: only the edit is wrong. */
static void store_fixed(void)
{
	put32(idx + 12, snap_crc32c(0, idx + 16, idx_len - 16));
	write_file(idx_path, idx, idx_len);
}

/* Loads through snap_dir_open; returns the error and leaves the message in err. */
static int try_open(struct snap_err *err)
{
	struct snap_dir d;
	int ret = snap_dir_open(dir, &d, err);

	if (!ret)
		snap_dir_close(&d);
	else
		cr_assert_eq(d.mem_fd, -1);
	return ret;
}

static void expect_reject(int code, const char *msg_part)
{
	struct snap_err err = { "" };
	struct snap_lz4_index *ix = (void *)1;

	cr_assert_eq(try_open(&err), code, "expected %d: %s", code, err.msg);
	cr_assert(strstr(err.msg, msg_part), "message \"%s\" lacks \"%s\"", err.msg, msg_part);
	cr_assert_eq(snap_lz4_index_load(dir, &st, &ix, &err), code);
	cr_assert_null(ix);
}

Test(snapfmt_lz4_index, intact_index_loads)
{
	struct snap_err err = { "" };
	struct snap_lz4_index *ix;

	cr_assert_eq(snap_lz4_index_load(dir, &st, &ix, &err), 0, "%s", err.msg);
	cr_assert_eq(ix->nr_chunks, NCH);
	cr_assert_eq(ix->nr_zero, 2);
	cr_assert_eq(ix->nr_raw, 2);
	cr_assert_eq(ix->nr_lz4, 2);
	cr_assert_eq(ix->max_stored, CS);
	cr_assert_eq(ix->file_size, st.memory.compressed_size);
	snap_lz4_index_free(ix);
}

Test(snapfmt_lz4_index, raw_state_has_no_index)
{
	struct snap_err err = { "" };
	struct snap_lz4_index *ix;
	struct snap_state raw;

	fx_fill_state(&raw);
	cr_assert_eq(snap_lz4_index_load(dir, &raw, &ix, &err), -EINVAL);
	cr_assert(strstr(err.msg, "not lz4-encoded"), "%s", err.msg);
	snap_state_free(&raw);
}

Test(snapfmt_lz4_index, missing_index_is_rejected)
{
	cr_assert_eq(unlink(idx_path), 0);
	expect_reject(-ENOENT, "index file memory.idx: No such file");
}

Test(snapfmt_lz4_index, symlinked_index_is_rejected)
{
	char *real = fx_path(tmp, "real.idx");

	cr_assert_eq(rename(idx_path, real), 0);
	cr_assert_eq(symlink(real, idx_path), 0);
	expect_reject(-ELOOP, "is a symbolic link");
	free(real);
}

Test(snapfmt_lz4_index, fifo_as_index_is_rejected_without_hanging)
{
	cr_assert_eq(unlink(idx_path), 0);
	cr_assert_eq(mkfifo(idx_path, 0644), 0);
	expect_reject(-EINVAL, "not a regular file");
}

Test(snapfmt_lz4_index, index_without_a_preamble_is_truncated)
{
	idx_len = 10;
	write_file(idx_path, idx, idx_len);
	expect_reject(-EINVAL, "memory.idx: 10 bytes: truncated (no preamble)");
}

Test(snapfmt_lz4_index, index_missing_its_last_entry_is_truncated)
{
	idx_len -= SNAP_LZ4_INDEX_ENTRY;
	write_file(idx_path, idx, idx_len);
	expect_reject(-EINVAL, "160 bytes, expected 176 (80-byte header + 6 entries of 16 bytes): truncated");
}

Test(snapfmt_lz4_index, index_one_byte_short_is_truncated)
{
	write_file(idx_path, idx, idx_len - 1);
	expect_reject(-EINVAL, "truncated");
}

Test(snapfmt_lz4_index, index_with_trailing_bytes_is_too_long)
{
	idx = realloc(idx, idx_len + 1);
	idx[idx_len++] = 0;
	store_fixed();
	expect_reject(-EINVAL, "too long");
}

Test(snapfmt_lz4_index, bad_magic_is_rejected)
{
	memcpy(idx, "EMBRSNAP", 8);
	store_fixed();
	expect_reject(-EINVAL, "bad magic (not an ember chunk index)");
}

Test(snapfmt_lz4_index, newer_index_version_is_rejected)
{
	put32(idx + 8, 2);
	store_fixed();
	expect_reject(-ENOTSUP, "index version 2 (this ember reads 1)");
}

Test(snapfmt_lz4_index, damaged_entry_fails_the_crc)
{
	idx[ENT(4) + 8] ^= 1; /* a chunk's CRC field: without the index CRC, unnoticed until decode */
	write_file(idx_path, idx, idx_len);
	expect_reject(-EINVAL, "CRC32C mismatch");
}

Test(snapfmt_lz4_index, damaged_header_fails_the_crc)
{
	idx[40] ^= 0x80;
	write_file(idx_path, idx, idx_len);
	expect_reject(-EINVAL, "the index is damaged");
}

Test(snapfmt_lz4_index, chunk_size_other_than_the_state_is_rejected)
{
	put32(idx + 16, 2 * CS);
	store_fixed();
	expect_reject(-EINVAL, "chunk size 32768, but memory.chunk_size is 16384");
}

Test(snapfmt_lz4_index, reserved_header_bytes_must_be_zero)
{
	put32(idx + 20, 1);
	store_fixed();
	expect_reject(-EINVAL, "reserved header bytes");
}

Test(snapfmt_lz4_index, memory_size_other_than_the_state_is_rejected)
{
	put64(idx + 24, NCH * CS + SNAP_PAGE_SIZE);
	store_fixed();
	expect_reject(-EINVAL, "but memory.size is 0x18000");
}

Test(snapfmt_lz4_index, entry_count_other_than_the_geometry_is_rejected)
{
	put64(idx + 32, NCH - 1);
	store_fixed();
	expect_reject(-EINVAL, "5 entries, expected 6");
}

Test(snapfmt_lz4_index, file_size_other_than_the_state_is_rejected)
{
	put64(idx + 40, get64(idx + 40) + 1);
	store_fixed();
	expect_reject(-EINVAL, "but memory.compressed_size is");
}

Test(snapfmt_lz4_index, index_of_another_snapshot_is_rejected)
{
	memcpy(idx + 48, "ffffffffffffffffffffffffffffffff", 32);
	store_fixed();
	expect_reject(-EINVAL, "belongs to another snapshot (id ffffffffffffffffffffffffffffffff");
}

Test(snapfmt_lz4_index, offset_past_the_end_of_the_memory_file_is_rejected)
{
	put64(idx + ENT(5), st.memory.compressed_size);
	store_fixed();
	expect_reject(-EINVAL, "chunk 5: bytes");
}

Test(snapfmt_lz4_index, length_past_the_end_of_the_memory_file_is_rejected)
{
	/* the last chunk (raw) moved up by one byte: its end is one past EOF */
	put64(idx + ENT(5), get64(idx + ENT(5)) + 1);
	store_fixed();
	expect_reject(-EINVAL, "extend past the end of the memory file");
}

Test(snapfmt_lz4_index, offset_that_overflows_is_rejected)
{
	put64(idx + ENT(5), UINT64_MAX - 100);
	store_fixed();
	expect_reject(-EINVAL, "chunk 5: bytes 0xffffffffffffff9b+0x4000 extend past the end");
}

Test(snapfmt_lz4_index, overlapping_chunks_are_rejected)
{
	/* chunk 2 (raw) starts inside chunk 1 */
	put64(idx + ENT(2), get64(idx + ENT(1)) + 1);
	store_fixed();
	expect_reject(-EINVAL, "chunk 2: offset");
}

Test(snapfmt_lz4_index, chunks_out_of_file_order_are_rejected)
{
	uint8_t e[8];

	/* swap the offsets of chunks 1 and 2: no overlap, but not in order */
	memcpy(e, idx + ENT(1), 8);
	memcpy(idx + ENT(1), idx + ENT(2), 8);
	memcpy(idx + ENT(2), e, 8);
	store_fixed();
	expect_reject(-EINVAL, "overlaps or precedes the previous stored chunk");
}

Test(snapfmt_lz4_index, raw_chunk_with_a_short_length_is_rejected)
{
	put32(idx + ENT(2) + 12, (CS - 1) | (uint32_t)SNAP_CHUNK_RAW << 24);
	store_fixed();
	expect_reject(-EINVAL, "chunk 2: raw chunk of 16383 stored bytes, expected exactly 16384");
}

Test(snapfmt_lz4_index, lz4_chunk_not_smaller_than_the_chunk_is_rejected)
{
	put32(idx + ENT(1) + 12, CS | (uint32_t)SNAP_CHUNK_LZ4 << 24);
	store_fixed();
	expect_reject(-EINVAL, "chunk 1: lz4 chunk of 16384 stored bytes (1..16383 allowed)");
}

Test(snapfmt_lz4_index, empty_lz4_chunk_is_rejected)
{
	put32(idx + ENT(1) + 12, (uint32_t)SNAP_CHUNK_LZ4 << 24);
	store_fixed();
	expect_reject(-EINVAL, "chunk 1: lz4 chunk of 0 stored bytes");
}

Test(snapfmt_lz4_index, zero_chunk_with_a_length_is_rejected)
{
	put32(idx + ENT(0) + 12, 5);
	store_fixed();
	expect_reject(-EINVAL, "chunk 0: a zero chunk must have offset, length and crc 0");
}

Test(snapfmt_lz4_index, zero_chunk_with_an_offset_is_rejected)
{
	put64(idx + ENT(3), 64);
	store_fixed();
	expect_reject(-EINVAL, "chunk 3: a zero chunk");
}

Test(snapfmt_lz4_index, unknown_chunk_kind_is_rejected)
{
	put32(idx + ENT(4) + 12, (get64(idx + ENT(4) + 8) >> 32 & 0xffffff) | 3u << 24);
	store_fixed();
	expect_reject(-EINVAL, "chunk 4: unknown kind 3");
}

Test(snapfmt_lz4_index, truncated_memory_file_is_rejected)
{
	cr_assert_eq(truncate(lz_path, (off_t)st.memory.compressed_size - 1), 0);
	expect_reject(-EINVAL, "memory file memory.lz4 is");
	struct snap_err err = { "" };
	try_open(&err);
	cr_assert(strstr(err.msg, "but memory.compressed_size is"), "%s", err.msg);
	cr_assert(strstr(err.msg, "(truncated)"), "%s", err.msg);
}

Test(snapfmt_lz4_index, symlinked_memory_file_is_rejected)
{
	char *real = fx_path(tmp, "real.lz4");

	cr_assert_eq(rename(lz_path, real), 0);
	cr_assert_eq(symlink(real, lz_path), 0);
	expect_reject(-ELOOP, "is a symbolic link");
	free(real);
}

/*
 * Every single-byte change of the index (CRC recomputed, so it reaches the entry
 * checks) is rejected at load, except a change of a chunk's own CRC field, which the
 * load cannot tell from data; that chunk then fails when read. Never a crash (ASan),
 * never wrong bytes.
 */
Test(snapfmt_lz4_index, any_byte_changed_is_rejected_or_caught_at_read)
{
	uint8_t *orig = malloc(idx_len), *want = malloc(NCH * CS), *dst = malloc(CS), *scratch = malloc(CS);
	struct snap_err err = { "" };
	struct snap_dir d;
	unsigned accepted = 0;

	memcpy(orig, idx, idx_len);
	cr_assert_eq(snap_dir_open(dir, &d, &err), 0, "%s", err.msg);
	for (uint64_t i = 0; i < NCH; i++)
		cr_assert_eq(snap_lz4_chunk_read(d.lz4, i, want + i * CS, scratch, &err), 0, "%s", err.msg);
	snap_dir_close(&d);
	for (size_t pos = 16; pos < idx_len; pos++) {
		memcpy(idx, orig, idx_len);
		idx[pos] ^= 0xa5;
		store_fixed();
		if (snap_dir_open(dir, &d, &err))
			continue;
		accepted++;
		cr_assert_geq(pos, HDR, "header byte %zu change accepted", pos);
		cr_assert(((pos - HDR) % SNAP_LZ4_INDEX_ENTRY) / 4 == 2, "byte %zu (not a CRC) accepted", pos);
		for (uint64_t i = 0; i < NCH; i++) {
			int ret = snap_lz4_chunk_read(d.lz4, i, dst, scratch, &err);

			if (i == (pos - HDR) / SNAP_LZ4_INDEX_ENTRY)
				cr_assert_eq(ret, -EBADMSG, "byte %zu: chunk %lu not caught", pos, (unsigned long)i);
			else
				cr_assert_eq(memcmp(dst, want + i * CS, CS), 0, "byte %zu: chunk %lu", pos,
					     (unsigned long)i);
		}
		snap_dir_close(&d);
	}
	cr_assert_eq(accepted, 4 * 4, "the CRC bytes of the 4 non-zero chunks");
	free(orig);
	free(want);
	free(dst);
	free(scratch);
}
