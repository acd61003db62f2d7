/*
 * lz4-compressed memory: writer -> index -> decode round trips (zero, lz4 and
 * raw-fallback chunks, a short last chunk), payload corruption caught by
 * snap_lz4_chunk_decode, the state rules for the lz4 keys, and the snapshot-level
 * conversions and merge with lz4 inputs.
 */
#include <sys/mman.h>

#include "test_snapfmt_fixture.h"

#define CS (16u << 10) /* small chunks: several of each kind in a small image */

static char *tmp;

static void setup(void)
{
	tmp = fx_tmpdir();
}

static void teardown(void)
{
	fx_rm_rf(tmp);
	free(tmp);
}

TestSuite(snapfmt_lz4, .init = setup, .fini = teardown);

/* A valid full state whose two regions cover exactly size bytes. */
static void sized_state(struct snap_state *st, uint64_t size)
{
	uint64_t half = size / 2 / SNAP_PAGE_SIZE * SNAP_PAGE_SIZE;

	fx_fill_state(st);
	st->memory.size = size;
	st->vm.regions[0] = (struct snap_region){ .gpa = 0, .size = half, .file_offset = 0 };
	st->vm.regions[1] = (struct snap_region){ .gpa = 0x100000000ull, .size = size - half,
						  .file_offset = half };
	cr_assert_eq(snap_state_validate(st, NULL), 0);
}

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Chunk k of the image: 'z' zero, 'c' compressible text, 'r' random, 'm' half zero half text. */
static void fill_chunk(uint8_t *p, uint32_t len, char kind, uint64_t seed)
{
	static const char text[] = "record id=%05u counter=%u name=ember ";
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;

	switch (kind) {
	case 'z':
		memset(p, 0, len);
		break;
	case 'r':
		for (uint32_t i = 0; i + 8 <= len; i += 8) {
			uint64_t v = rng(&s);
			memcpy(p + i, &v, 8);
		}
		break;
	case 'm':
		memset(p, 0, len / 2);
		p += len / 2;
		len -= len / 2;
		/* fall through */
	default:
		for (uint32_t i = 0; i < len; i++)
			p[i] = (uint8_t)(text[i % (sizeof(text) - 1)] + (i / 4096) % 3);
		break;
	}
}

/* An image of size bytes whose chunks (of CS bytes) follow pattern, cyclically. */
static uint8_t *make_image(uint64_t size, const char *pattern)
{
	uint8_t *img = malloc(size);
	size_t np = strlen(pattern);

	cr_assert(img);
	for (uint64_t off = 0, k = 0; off < size; off += CS, k++) {
		uint32_t len = size - off < CS ? (uint32_t)(size - off) : CS;
		fill_chunk(img + off, len, pattern[k % np], k);
	}
	return img;
}

static void write_lz4(const char *dir, const struct snap_state *st, const uint8_t *img, uint32_t cs)
{
	struct snap_err err = { "" };
	struct snap_writer *w;

	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_lz4_chunked(w, img, st->memory.size, cs, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_commit(w, st, &err), 0, "%s", err.msg);
}

/* Decodes every chunk of d through snap_lz4_chunk_read and compares with img. */
static void assert_chunks_equal(const struct snap_dir *d, const uint8_t *img)
{
	const struct snap_lz4_index *ix = d->lz4;
	struct snap_err err = { "" };
	uint8_t *dst = malloc(ix->chunk_size), *scratch = malloc(ix->max_stored + 1);

	for (uint64_t i = 0; i < ix->nr_chunks; i++) {
		const struct snap_lz4_chunk *c = snap_lz4_chunk(ix, i);

		memset(dst, 0xee, ix->chunk_size);
		cr_assert_eq(snap_lz4_chunk_read(ix, i, dst, scratch, &err), 0, "chunk %lu: %s",
			     (unsigned long)i, err.msg);
		cr_assert_eq(memcmp(dst, img + i * ix->chunk_size, c->len), 0, "chunk %lu differs",
			     (unsigned long)i);
	}
	free(dst);
	free(scratch);
}

Test(snapfmt_lz4, round_trip_of_zero_lz4_and_raw_chunks_is_byte_identical)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct snap_dir d;
	char *dir = fx_path(tmp, "s");
	uint8_t *img;

	sized_state(&st, 24 * CS);
	img = make_image(st.memory.size, "zcrmcz");
	write_lz4(dir, &st, img, CS);
	cr_assert_eq(snap_dir_open(dir, &d, &err), 0, "%s", err.msg);
	cr_assert(d.lz4);
	cr_assert_eq(d.mem_fd, d.lz4->fd);
	cr_assert_eq(d.lz4->nr_chunks, 24);
	cr_assert_eq(d.lz4->nr_zero, 8);
	cr_assert_eq(d.lz4->nr_raw, 4);
	cr_assert_eq(d.lz4->nr_lz4, 12);
	cr_assert_eq(snap_lz4_chunk(d.lz4, 1)->kind, SNAP_CHUNK_LZ4);
	cr_assert_eq(snap_lz4_chunk(d.lz4, 2)->kind, SNAP_CHUNK_RAW);
	cr_assert_eq(snap_lz4_chunk(d.lz4, 2)->stored_len, CS);
	cr_assert_eq(snap_lz4_chunk(d.lz4, 0)->kind, SNAP_CHUNK_ZERO);
	cr_assert_lt(snap_lz4_chunk(d.lz4, 1)->stored_len, CS / 4);
	cr_assert_null(snap_lz4_chunk(d.lz4, 24));
	assert_chunks_equal(&d, img);
	snap_dir_close(&d);
	free(img);
	free(dir);
	snap_state_free(&st);
}

Test(snapfmt_lz4, commit_describes_the_compressed_memory_in_the_state)
{
	struct snap_err err = { "" };
	struct snap_state st, back;
	struct stat sb;
	char *dir = fx_path(tmp, "s"), *lz = fx_path(dir, "memory.lz4");
	uint8_t *img;

	sized_state(&st, 8 * CS);
	img = make_image(st.memory.size, "cr");
	write_lz4(dir, &st, img, CS);
	cr_assert_eq(snap_state_load(dir, &back, &err), 0, "%s", err.msg);
	cr_assert_eq(back.memory.encoding, SNAP_ENC_LZ4);
	cr_assert_str_eq(back.memory.file, "memory.lz4");
	cr_assert_str_eq(back.memory.index_file, "memory.idx");
	cr_assert_eq(back.memory.chunk_size, CS);
	cr_assert_eq(stat(lz, &sb), 0);
	cr_assert_eq(back.memory.compressed_size, (uint64_t)sb.st_size);
	cr_assert_eq(back.header.minor, SNAP_FORMAT_MINOR);
	cr_assert_eq(fx_count_entries(dir), 3, "state, memory.lz4, memory.idx and nothing else");
	snap_state_free(&back);
	free(img);
	free(lz);
	free(dir);
	snap_state_free(&st);
}

Test(snapfmt_lz4, short_last_chunk_round_trips)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct snap_dir d;
	char *dir = fx_path(tmp, "s");
	uint8_t *img;

	/* 5 full chunks + 3 pages: memory.size need not be a multiple of chunk_size */
	sized_state(&st, 5 * CS + 3 * SNAP_PAGE_SIZE);
	img = make_image(st.memory.size, "cr");
	write_lz4(dir, &st, img, CS);
	cr_assert_eq(snap_dir_open(dir, &d, &err), 0, "%s", err.msg);
	cr_assert_eq(d.lz4->nr_chunks, 6);
	cr_assert_eq(snap_lz4_chunk(d.lz4, 5)->len, 3 * SNAP_PAGE_SIZE);
	cr_assert_eq(snap_lz4_chunk(d.lz4, 5)->kind, SNAP_CHUNK_RAW);
	cr_assert_eq(snap_lz4_chunk(d.lz4, 5)->stored_len, 3 * SNAP_PAGE_SIZE);
	cr_assert_eq(snap_lz4_chunk(d.lz4, 4)->len, CS);
	assert_chunks_equal(&d, img);
	snap_dir_close(&d);
	free(img);
	free(dir);
	snap_state_free(&st);
}

Test(snapfmt_lz4, short_last_chunk_that_compresses_round_trips)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct snap_dir d;
	char *dir = fx_path(tmp, "s");
	uint8_t *img;

	sized_state(&st, 2 * CS + SNAP_PAGE_SIZE);
	img = make_image(st.memory.size, "c");
	write_lz4(dir, &st, img, CS);
	cr_assert_eq(snap_dir_open(dir, &d, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_lz4_chunk(d.lz4, 2)->kind, SNAP_CHUNK_LZ4);
	assert_chunks_equal(&d, img);
	snap_dir_close(&d);
	free(img);
	free(dir);
	snap_state_free(&st);
}

Test(snapfmt_lz4, all_zero_memory_has_an_empty_memory_file)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct snap_dir d;
	char *dir = fx_path(tmp, "s");
	uint8_t *img;

	sized_state(&st, 3 * CS);
	img = make_image(st.memory.size, "z");
	write_lz4(dir, &st, img, CS);
	cr_assert_eq(snap_dir_open(dir, &d, &err), 0, "%s", err.msg);
	cr_assert_eq(d.state.memory.compressed_size, 0);
	cr_assert_eq(d.lz4->nr_zero, 3);
	cr_assert_eq(d.lz4->max_stored, 0);
	assert_chunks_equal(&d, img);
	snap_dir_close(&d);
	free(img);
	free(dir);
	snap_state_free(&st);
}

Test(snapfmt_lz4, every_chunk_size_round_trips)
{
	for (uint32_t cs = SNAP_LZ4_CHUNK_MIN; cs <= SNAP_LZ4_CHUNK_MAX; cs <<= 2) {
		struct snap_err err = { "" };
		struct snap_state st;
		struct snap_dir d;
		char name[32], *dir;
		uint8_t *img;

		snprintf(name, sizeof(name), "s%u", cs);
		dir = fx_path(tmp, name);
		sized_state(&st, 4u << 20 | 5 * SNAP_PAGE_SIZE);
		img = make_image(st.memory.size, "zcrmc");
		write_lz4(dir, &st, img, cs);
		cr_assert_eq(snap_dir_open(dir, &d, &err), 0, "%u: %s", cs, err.msg);
		cr_assert_eq(d.lz4->chunk_size, cs);
		cr_assert_eq(1u << d.lz4->chunk_shift, cs);
		assert_chunks_equal(&d, img);
		snap_dir_close(&d);
		free(img);
		free(dir);
		snap_state_free(&st);
	}
}

Test(snapfmt_lz4, default_chunk_size_is_used_by_write_lz4)
{
	struct snap_err err = { "" };
	struct snap_writer *w;
	struct snap_state st;
	struct snap_dir d;
	char *dir = fx_path(tmp, "s");
	uint8_t *img;

	sized_state(&st, 2u << 20);
	img = make_image(st.memory.size, "crz");
	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_lz4(w, img, st.memory.size, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_commit(w, &st, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_dir_open(dir, &d, &err), 0, "%s", err.msg);
	cr_assert_eq(d.state.memory.chunk_size, SNAP_LZ4_CHUNK_DEFAULT);
	assert_chunks_equal(&d, img);
	snap_dir_close(&d);
	free(img);
	free(dir);
	snap_state_free(&st);
}

Test(snapfmt_lz4, writer_stats_count_zero_and_stored_pages)
{
	struct snap_err err = { "" };
	struct snap_writer *w;
	struct snap_state st;
	char *dir = fx_path(tmp, "s");
	uint8_t *img;

	sized_state(&st, 4 * CS);
	img = make_image(st.memory.size, "zczr");
	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_lz4_chunked(w, img, st.memory.size, CS, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_stats(w)->zero_pages_skipped, 2 * CS / SNAP_PAGE_SIZE);
	cr_assert_eq(snap_writer_stats(w)->pages_written, 2 * CS / SNAP_PAGE_SIZE);
	cr_assert_gt(snap_writer_stats(w)->bytes_written, CS);
	cr_assert_lt(snap_writer_stats(w)->bytes_written, 2 * CS);
	snap_writer_abort(w);
	free(img);
	free(dir);
	snap_state_free(&st);
}

Test(snapfmt_lz4, writer_refuses_lz4_after_raw_and_raw_after_lz4)
{
	struct snap_err err = { "" };
	struct snap_writer *w;
	uint8_t page[SNAP_PAGE_SIZE];
	char *dir = fx_path(tmp, "s");

	memset(page, 1, sizeof(page));
	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_sparse(w, 0, page, sizeof(page), &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_lz4(w, page, sizeof(page), &err), -EINVAL);
	cr_assert(strstr(err.msg, "already written"), "%s", err.msg);
	snap_writer_abort(w);

	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_lz4(w, page, sizeof(page), &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_sparse(w, 0, page, sizeof(page), &err), -EINVAL);
	cr_assert(strstr(err.msg, "already wrote lz4"), "%s", err.msg);
	snap_writer_abort(w);
	cr_assert_eq(access(dir, F_OK), -1);
	free(dir);
}

Test(snapfmt_lz4, writer_rejects_bad_chunk_sizes_and_lengths)
{
	struct snap_err err = { "" };
	struct snap_writer *w;
	static uint8_t img[3 * SNAP_PAGE_SIZE];
	char *dir = fx_path(tmp, "s");

	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_lz4_chunked(w, img, sizeof(img), 3 * SNAP_PAGE_SIZE, &err), -EINVAL);
	cr_assert(strstr(err.msg, "power of two"), "%s", err.msg);
	cr_assert_eq(snap_writer_write_lz4_chunked(w, img, sizeof(img), 2048, &err), -EINVAL);
	cr_assert_eq(snap_writer_write_lz4_chunked(w, img, sizeof(img), 4u << 20, &err), -EINVAL);
	cr_assert_eq(snap_writer_write_lz4_chunked(w, img, sizeof(img) - 1, CS, &err), -EINVAL);
	cr_assert(strstr(err.msg, "multiple of 4096"), "%s", err.msg);
	cr_assert_eq(snap_writer_write_lz4_chunked(w, img, 0, CS, &err), -EINVAL);
	snap_writer_abort(w);
	free(dir);
}

Test(snapfmt_lz4, commit_rejects_a_size_other_than_the_image)
{
	struct snap_err err = { "" };
	struct snap_writer *w;
	struct snap_state st;
	char *dir = fx_path(tmp, "s");
	uint8_t *img;

	sized_state(&st, 4 * CS);
	img = make_image(st.memory.size, "c");
	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_lz4_chunked(w, img, 2 * CS, CS, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_commit(w, &st, &err), -EINVAL);
	cr_assert(strstr(err.msg, "memory.size is 0x10000 but the lz4 image written is 0x8000 bytes"), "%s",
		  err.msg);
	cr_assert_eq(access(dir, F_OK), -1, "nothing left behind");
	free(img);
	free(dir);
	snap_state_free(&st);
}

/* ---- snap_lz4_chunk_decode on damaged payloads ---- */

struct loaded {
	struct snap_dir d;
	uint8_t *img, *stored, *dst;
	char *dir;
};

static void load(struct loaded *l, const char *pattern)
{
	struct snap_err err = { "" };
	struct snap_state st;

	l->dir = fx_path(tmp, "s");
	sized_state(&st, 6 * CS);
	l->img = make_image(st.memory.size, pattern);
	write_lz4(l->dir, &st, l->img, CS);
	snap_state_free(&st);
	cr_assert_eq(snap_dir_open(l->dir, &l->d, &err), 0, "%s", err.msg);
	l->stored = malloc(CS);
	l->dst = malloc(CS);
}

static void unload(struct loaded *l)
{
	snap_dir_close(&l->d);
	free(l->img);
	free(l->stored);
	free(l->dst);
	free(l->dir);
}

static const struct snap_lz4_chunk *read_stored(struct loaded *l, uint64_t i)
{
	const struct snap_lz4_chunk *c = snap_lz4_chunk(l->d.lz4, i);

	cr_assert_eq(pread(l->d.lz4->fd, l->stored, c->stored_len, (off_t)c->offset), (ssize_t)c->stored_len);
	return c;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

Test(snapfmt_lz4, decode_of_intact_chunks_succeeds)
{
	struct snap_err err = { "" };
	struct loaded l;

	load(&l, "cr");
	for (uint64_t i = 0; i < 2; i++) {
		const struct snap_lz4_chunk *c = read_stored(&l, i);
		cr_assert_eq(snap_lz4_chunk_decode(l.d.lz4, i, l.stored, c->stored_len, l.dst, &err), 0, "%s",
			     err.msg);
		cr_assert_eq(memcmp(l.dst, l.img + i * CS, CS), 0);
	}
	unload(&l);
}

/*
 * A flip either fails (and dst is zeroed) or decodes to exactly the original bytes:
 * in repetitive data some flips only move a match offset onto identical bytes.
 */
Test(snapfmt_lz4, flipped_bits_in_an_lz4_payload_never_yield_wrong_bytes)
{
	struct snap_err err = { "" };
	struct loaded l;
	const struct snap_lz4_chunk *c;
	unsigned detected = 0, total = 0;

	load(&l, "m");
	c = read_stored(&l, 0);
	cr_assert_eq(c->kind, SNAP_CHUNK_LZ4);
	for (uint32_t pos = 0; pos < c->stored_len; pos++) {
		for (int bit = 0; bit < 8; bit++) {
			l.stored[pos] ^= (uint8_t)(1u << bit);
			memset(l.dst, 0xa5, CS);
			total++;
			if (snap_lz4_chunk_decode(l.d.lz4, 0, l.stored, c->stored_len, l.dst, &err) < 0) {
				detected++;
				cr_assert(all_zero(l.dst, CS), "byte %u bit %d: dst keeps unchecked bytes", pos, bit);
			} else {
				cr_assert_eq(memcmp(l.dst, l.img, CS), 0, "byte %u bit %d: wrong bytes accepted", pos, bit);
			}
			l.stored[pos] ^= (uint8_t)(1u << bit);
		}
	}
	cr_assert_gt(detected, total * 3 / 4, "only %u of %u flips changed the output", detected, total);
	unload(&l);
}

Test(snapfmt_lz4, flipped_byte_in_a_raw_chunk_fails_the_crc)
{
	struct snap_err err = { "" };
	struct loaded l;
	const struct snap_lz4_chunk *c;

	load(&l, "rc");
	c = read_stored(&l, 0);
	cr_assert_eq(c->kind, SNAP_CHUNK_RAW);
	l.stored[CS / 2] ^= 0x40;
	cr_assert_eq(snap_lz4_chunk_decode(l.d.lz4, 0, l.stored, c->stored_len, l.dst, &err), -EBADMSG);
	cr_assert(strstr(err.msg, "chunk 0 (memory 0x0+0x4000): CRC32C 0x"), "%s", err.msg);
	cr_assert(strstr(err.msg, "the memory file is damaged"), "%s", err.msg);
	cr_assert(all_zero(l.dst, CS));
	unload(&l);
}

Test(snapfmt_lz4, raw_chunk_can_be_checked_in_place)
{
	struct snap_err err = { "" };
	struct loaded l;
	const struct snap_lz4_chunk *c;

	load(&l, "rc");
	c = read_stored(&l, 0);
	cr_assert_eq(snap_lz4_chunk_decode(l.d.lz4, 0, l.stored, c->stored_len, l.stored, &err), 0, "%s",
		     err.msg);
	cr_assert_eq(memcmp(l.stored, l.img, CS), 0);
	l.stored[7] ^= 1;
	cr_assert_eq(snap_lz4_chunk_decode(l.d.lz4, 0, l.stored, c->stored_len, l.stored, &err), -EBADMSG);
	cr_assert(all_zero(l.stored, CS));
	unload(&l);
}

Test(snapfmt_lz4, truncated_payload_and_wrong_length_are_rejected)
{
	struct snap_err err = { "" };
	struct loaded l;
	const struct snap_lz4_chunk *c;

	load(&l, "c");
	c = read_stored(&l, 0);
	cr_assert_eq(snap_lz4_chunk_decode(l.d.lz4, 0, l.stored, c->stored_len - 1, l.dst, &err), -EINVAL);
	cr_assert(strstr(err.msg, "stored bytes given, the index says"), "%s", err.msg);
	cr_assert(all_zero(l.dst, CS));
	cr_assert_eq(snap_lz4_chunk_decode(l.d.lz4, 0, NULL, c->stored_len, l.dst, &err), -EINVAL);
	cr_assert_eq(snap_lz4_chunk_decode(l.d.lz4, 99, l.stored, c->stored_len, l.dst, &err), -EINVAL);
	cr_assert(strstr(err.msg, "out of range"), "%s", err.msg);
	unload(&l);
}

Test(snapfmt_lz4, garbage_payloads_never_crash_the_decoder)
{
	struct snap_err err = { "" };
	struct loaded l;
	const struct snap_lz4_chunk *c;
	uint64_t s = 12345;

	load(&l, "c");
	c = read_stored(&l, 0);
	for (int round = 0; round < 2000; round++) {
		/* random bytes, or the real payload with a random run overwritten */
		if (round & 1) {
			for (uint32_t i = 0; i < c->stored_len; i++)
				l.stored[i] = (uint8_t)rng(&s);
		} else {
			uint32_t at = (uint32_t)(rng(&s) % c->stored_len), n = (uint32_t)(rng(&s) % 16) + 1;
			read_stored(&l, 0);
			for (uint32_t i = at; i < at + n && i < c->stored_len; i++)
				l.stored[i] = (uint8_t)rng(&s);
		}
		int ret = snap_lz4_chunk_decode(l.d.lz4, 0, l.stored, c->stored_len, l.dst, &err);
		if (ret == 0)
			cr_assert_eq(memcmp(l.dst, l.img, CS), 0, "round %d: accepted wrong bytes", round);
		else
			cr_assert(all_zero(l.dst, CS));
	}
	unload(&l);
}

Test(snapfmt_lz4, zero_chunk_decodes_to_zeros)
{
	struct snap_err err = { "" };
	struct loaded l;

	load(&l, "zc");
	memset(l.dst, 0x77, CS);
	cr_assert_eq(snap_lz4_chunk_decode(l.d.lz4, 0, NULL, 0, l.dst, &err), 0, "%s", err.msg);
	cr_assert(all_zero(l.dst, CS));
	unload(&l);
}

static void flip_byte(int fd, uint64_t off)
{
	uint8_t b;

	cr_assert_eq(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0x10;
	cr_assert_eq(pwrite(fd, &b, 1, (off_t)off), 1);
}

Test(snapfmt_lz4, verify_memory_names_the_first_damaged_chunk)
{
	struct snap_err err = { "" };
	struct loaded l;
	const struct snap_lz4_chunk *c;
	uint64_t bad;
	char *lz;
	int fd;

	load(&l, "zcr");
	cr_assert_eq(snap_dir_verify_memory(&l.d, &bad, &err), 0, "%s", err.msg);
	cr_assert_eq(bad, UINT64_MAX);
	c = snap_lz4_chunk(l.d.lz4, 4);
	lz = fx_path(l.dir, "memory.lz4");
	fd = open(lz, O_RDWR);
	cr_assert_geq(fd, 0);
	flip_byte(fd, c->offset + c->stored_len / 2);
	close(fd);
	cr_assert_lt(snap_dir_verify_memory(&l.d, &bad, &err), 0);
	cr_assert_eq(bad, 4);
	cr_assert(strstr(err.msg, "chunk 4"), "%s", err.msg);
	free(lz);
	unload(&l);
}

/* ---- state rules for the lz4 keys ---- */

Test(snapfmt_lz4, raw_state_with_lz4_keys_is_invalid)
{
	struct snap_err err = { "" };
	struct snap_state st;

	fx_fill_state(&st);
	st.memory.chunk_size = 65536;
	cr_assert_eq(snap_state_validate(&st, &err), -EINVAL);
	cr_assert(strstr(err.msg, "belong to the lz4 encoding"), "%s", err.msg);
	snap_state_free(&st);
}

Test(snapfmt_lz4, lz4_state_needs_a_power_of_two_chunk_size_in_range)
{
	static const uint32_t bad[] = { 0, 2048, 12288, 4u << 20 };
	struct snap_err err = { "" };
	struct snap_state st;

	fx_fill_state(&st);
	st.memory.encoding = SNAP_ENC_LZ4;
	snprintf(st.memory.file, sizeof(st.memory.file), "memory.lz4");
	snprintf(st.memory.index_file, sizeof(st.memory.index_file), "memory.idx");
	st.memory.chunk_size = 4096;
	cr_assert_eq(snap_state_validate(&st, &err), 0, "%s", err.msg);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		st.memory.chunk_size = bad[i];
		cr_assert_eq(snap_state_validate(&st, &err), -EINVAL, "%u accepted", bad[i]);
		cr_assert(strstr(err.msg, "memory.chunk_size"), "%s", err.msg);
	}
	snap_state_free(&st);
}

Test(snapfmt_lz4, lz4_state_needs_a_distinct_plain_index_file)
{
	struct snap_err err = { "" };
	struct snap_state st;

	fx_fill_state(&st);
	st.memory.encoding = SNAP_ENC_LZ4;
	st.memory.chunk_size = 65536;
	snprintf(st.memory.file, sizeof(st.memory.file), "memory.lz4");
	cr_assert_eq(snap_state_validate(&st, &err), -EINVAL);
	cr_assert(strstr(err.msg, "memory.index_file"), "%s", err.msg);
	snprintf(st.memory.index_file, sizeof(st.memory.index_file), "../idx");
	cr_assert_eq(snap_state_validate(&st, &err), -EINVAL);
	snprintf(st.memory.index_file, sizeof(st.memory.index_file), "memory.lz4");
	cr_assert_eq(snap_state_validate(&st, &err), -EINVAL);
	cr_assert(strstr(err.msg, "three different files"), "%s", err.msg);
	snprintf(st.memory.index_file, sizeof(st.memory.index_file), "state.msgpack");
	cr_assert_eq(snap_state_validate(&st, &err), -EINVAL);
	snap_state_free(&st);
}

Test(snapfmt_lz4, lz4_keys_round_trip_and_are_absent_from_raw_files)
{
	struct snap_err err = { "" };
	struct snap_state st, back;
	uint8_t *f;
	size_t len;

	fx_fill_state(&st);
	f = fx_encode(&st, &len);
	cr_assert_null(memmem(f, len, "chunk_size", 10), "raw files keep the 1.0 shape");
	cr_assert_null(memmem(f, len, "index_file", 10));
	free(f);
	st.memory.encoding = SNAP_ENC_LZ4;
	st.memory.chunk_size = 1u << 20;
	st.memory.compressed_size = 0x123456789ull;
	snprintf(st.memory.file, sizeof(st.memory.file), "m.lz4");
	snprintf(st.memory.index_file, sizeof(st.memory.index_file), "m.idx");
	f = fx_encode(&st, &len);
	cr_assert_eq(snap_state_decode(f, len, &back, &err), 0, "%s", err.msg);
	cr_assert_eq(back.memory.encoding, SNAP_ENC_LZ4);
	cr_assert_eq(back.memory.chunk_size, 1u << 20);
	cr_assert_eq(back.memory.compressed_size, 0x123456789ull);
	cr_assert_str_eq(back.memory.index_file, "m.idx");
	cr_assert_str_eq(back.memory.file, "m.lz4");
	snap_state_free(&back);
	free(f);
	snap_state_free(&st);
}

Test(snapfmt_lz4, dump_shows_lz4_keys_only_for_lz4)
{
	struct snap_state st;
	char *buf = NULL;
	size_t n = 0;
	FILE *f;

	fx_fill_state(&st);
	f = open_memstream(&buf, &n);
	snap_dump(f, &st);
	fclose(f);
	cr_assert_null(strstr(buf, "chunk_size"), "%s", buf);
	free(buf);
	st.memory.encoding = SNAP_ENC_LZ4;
	st.memory.chunk_size = 65536;
	snprintf(st.memory.index_file, sizeof(st.memory.index_file), "memory.idx");
	f = open_memstream(&buf, &n);
	snap_dump(f, &st);
	fclose(f);
	cr_assert(strstr(buf, "\nmemory.encoding = \"lz4\"\n"), "%s", buf);
	cr_assert(strstr(buf, "\nmemory.chunk_size = 65536\n"), "%s", buf);
	cr_assert(strstr(buf, "\nmemory.index_file = \"memory.idx\"\n"), "%s", buf);
	free(buf);
	snap_state_free(&st);
}

/* ---- snapshot-level: compress, decompress, merge ---- */

static uint8_t *read_raw(const char *dir, uint64_t size)
{
	char *p = fx_path(dir, "memory.raw");
	uint8_t *buf = malloc(size);
	int fd = open(p, O_RDONLY);

	cr_assert_geq(fd, 0, "%s", p);
	cr_assert_eq(pread(fd, buf, size, 0), (ssize_t)size);
	close(fd);
	free(p);
	return buf;
}

Test(snapfmt_lz4, compress_then_decompress_restores_the_raw_image_and_keeps_the_id)
{
	struct snap_err err = { "" };
	struct snap_state st, c, r;
	char *raw = fx_path(tmp, "raw"), *lz = fx_path(tmp, "lz"), *back = fx_path(tmp, "back");
	uint8_t *img, *got;

	sized_state(&st, 9 * CS + SNAP_PAGE_SIZE);
	img = make_image(st.memory.size, "zrcmcz");
	fx_write_snapshot(raw, &st, img);
	cr_assert_eq(snap_compress(raw, lz, CS, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_decompress(lz, back, &err), 0, "%s", err.msg);
	got = read_raw(back, st.memory.size);
	cr_assert_eq(memcmp(got, img, st.memory.size), 0);
	cr_assert_eq(snap_state_load(lz, &c, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_state_load(back, &r, &err), 0, "%s", err.msg);
	cr_assert_str_eq(c.header.id, st.header.id);
	cr_assert_str_eq(r.header.id, st.header.id);
	cr_assert_eq(c.header.created, st.header.created);
	cr_assert_eq(c.memory.chunk_size, CS);
	cr_assert_eq(r.memory.encoding, SNAP_ENC_RAW);
	cr_assert_str_eq(r.memory.file, "memory.raw");
	cr_assert_eq(r.memory.chunk_size, 0);
	cr_assert_eq(r.vcpus[1].regs.rip, st.vcpus[1].regs.rip);
	snap_state_free(&c);
	snap_state_free(&r);
	free(got);
	free(img);
	free(raw);
	free(lz);
	free(back);
	snap_state_free(&st);
}

Test(snapfmt_lz4, compress_refuses_an_existing_destination)
{
	struct snap_err err = { "" };
	struct snap_state st;
	char *raw = fx_path(tmp, "raw"), *lz = fx_path(tmp, "lz");
	uint8_t *img;

	sized_state(&st, 2 * CS);
	img = make_image(st.memory.size, "c");
	fx_write_snapshot(raw, &st, img);
	cr_assert_eq(mkdir(lz, 0755), 0);
	cr_assert_eq(snap_compress(raw, lz, 0, &err), -EEXIST);
	cr_assert_eq(fx_count_entries(lz), 0);
	free(img);
	free(raw);
	free(lz);
	snap_state_free(&st);
}

Test(snapfmt_lz4, recompressing_with_another_chunk_size_keeps_the_bytes)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct snap_dir d;
	char *raw = fx_path(tmp, "raw"), *a = fx_path(tmp, "a"), *b = fx_path(tmp, "b");
	uint8_t *img;

	sized_state(&st, 16 * CS);
	img = make_image(st.memory.size, "zrcm");
	fx_write_snapshot(raw, &st, img);
	cr_assert_eq(snap_compress(raw, a, CS, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_compress(a, b, 4 * CS, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_dir_open(b, &d, &err), 0, "%s", err.msg);
	cr_assert_eq(d.lz4->chunk_size, 4 * CS);
	assert_chunks_equal(&d, img);
	snap_dir_close(&d);
	free(img);
	free(raw);
	free(a);
	free(b);
	snap_state_free(&st);
}

Test(snapfmt_lz4, merge_accepts_lz4_base_and_diff)
{
	struct snap_err err = { "" };
	struct snap_state base, diff;
	struct snap_range r[2] = { { .first = 1, .count = 2 }, { .first = 20, .count = 3 } };
	char *b = fx_path(tmp, "b"), *d = fx_path(tmp, "d"), *bl = fx_path(tmp, "bl"),
	     *dl = fx_path(tmp, "dl"), *out = fx_path(tmp, "out");
	uint8_t *bimg, *dimg, *got;

	sized_state(&base, 8 * CS);
	bimg = make_image(base.memory.size, "crzc");
	dimg = make_image(base.memory.size, "rcrz");
	fx_write_snapshot(b, &base, bimg);
	sized_state(&diff, 8 * CS);
	snprintf(diff.header.id, sizeof(diff.header.id), "fedcba9876543210fedcba9876543210");
	snprintf(diff.header.parent, sizeof(diff.header.parent), "%s", base.header.id);
	diff.memory.kind = SNAP_MEM_DIFF;
	cr_assert_eq(snap_memory_set_ranges(&diff, r, 2, NULL), 0);
	fx_write_snapshot(d, &diff, dimg);
	cr_assert_eq(snap_compress(b, bl, CS, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_compress(d, dl, CS, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_merge(bl, dl, out, NULL, &err), 0, "%s", err.msg);
	got = read_raw(out, base.memory.size);
	/* expected: base with the diff's pages 1-2 and 20-22 */
	memcpy(bimg + 1 * SNAP_PAGE_SIZE, dimg + 1 * SNAP_PAGE_SIZE, 2 * SNAP_PAGE_SIZE);
	memcpy(bimg + 20 * SNAP_PAGE_SIZE, dimg + 20 * SNAP_PAGE_SIZE, 3 * SNAP_PAGE_SIZE);
	cr_assert_eq(memcmp(got, bimg, base.memory.size), 0);
	free(got);
	free(bimg);
	free(dimg);
	free(b);
	free(d);
	free(bl);
	free(dl);
	free(out);
	snap_state_free(&base);
	snap_state_free(&diff);
}

/* Found by fuzz/fuzz_lz4_chunk: the decoder trusted the index's raw-chunk length and
 * copied chunk-size bytes from a shorter buffer. It checks the length itself now. */
Test(snapfmt_lz4, decode_refuses_a_raw_chunk_shorter_than_the_chunk)
{
	struct snap_lz4_chunk ch = { .offset = 4096, .stored_len = 100, .len = 4096,
				     .kind = SNAP_CHUNK_RAW };
	struct snap_lz4_index ix = { .fd = -1, .chunk_size = 4096, .chunk_shift = 12,
				     .nr_chunks = 1, .mem_size = 4096, .chunks = &ch };
	struct snap_err err = { "" };
	uint8_t stored[100], dst[4096];

	memset(stored, 0xab, sizeof(stored));
	memset(dst, 0xcd, sizeof(dst));
	cr_assert_eq(snap_lz4_chunk_decode(&ix, 0, stored, sizeof(stored), dst, &err), -EINVAL);
	cr_assert(strstr(err.msg, "raw chunk of 100 stored bytes"), "%s", err.msg);
	for (size_t i = 0; i < sizeof(dst); i++)
		cr_assert_eq(dst[i], 0, "dst[%zu] not zeroed", i);
}
