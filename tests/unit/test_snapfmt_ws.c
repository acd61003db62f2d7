/*
 * The working-set file (ws.bin): write/load round trip, atomic replacement, every
 * kind of damage rejected at load, the writer and the conversions carrying it, and
 * the range merging used for bulk prefetch.
 */
#include "test_snapfmt_fixture.h"

#define PAGES (FX_MEM_SIZE / SNAP_PAGE_SIZE)

static char *tmp, *dir, *ws_path;
static struct snap_state st;
static uint8_t mem[FX_MEM_SIZE];

static void setup(void)
{
	tmp = fx_tmpdir();
	dir = fx_path(tmp, "s");
	ws_path = fx_path(dir, "ws.bin");
	fx_fill_state(&st);
	memset(mem + 3 * SNAP_PAGE_SIZE, 0x3c, SNAP_PAGE_SIZE);
	fx_write_snapshot(dir, &st, mem);
}

static void teardown(void)
{
	snap_state_free(&st);
	fx_rm_rf(tmp);
	free(tmp);
	free(dir);
	free(ws_path);
}

TestSuite(snapfmt_ws, .init = setup, .fini = teardown);

static void write_ws(const uint64_t *pages, uint64_t n)
{
	struct snap_err err = { "" };

	cr_assert_eq(snap_ws_write(dir, pages, n, &err), 0, "%s", err.msg);
}

static int load(uint64_t **pages, uint64_t *n, struct snap_err *err)
{
	return snap_ws_load(dir, &st, pages, n, err);
}

Test(snapfmt_ws, round_trip_keeps_fault_order)
{
	static const uint64_t pages[] = { 7, 3, 63, 0, 8, 9, 3 };
	struct snap_err err = { "" };
	uint64_t *got, n;

	write_ws(pages, 7);
	cr_assert_eq(load(&got, &n, &err), 0, "%s", err.msg);
	cr_assert_eq(n, 7);
	cr_assert_eq(memcmp(got, pages, sizeof(pages)), 0);
	free(got);
}

Test(snapfmt_ws, file_layout_is_the_documented_one)
{
	static const uint64_t pages[] = { 0x12, 0x3f };
	uint8_t f[SNAP_WS_HEADER + 16 + 1]; /* one spare byte: the file must end at 80 */
	int fd;

	write_ws(pages, 2);
	fd = open(ws_path, O_RDONLY);
	cr_assert_eq(read(fd, f, sizeof(f)), (ssize_t)sizeof(f) - 1);
	close(fd);
	cr_assert_eq(memcmp(f, "EMBRWSET", 8), 0);
	cr_assert_eq(f[8], 1);
	cr_assert_eq(f[16], 2, "count");
	cr_assert_eq(f[24], PAGES, "memory pages");
	cr_assert_eq(memcmp(f + 32, st.header.id, 32), 0);
	cr_assert_eq(f[64], 0x12);
	cr_assert_eq(f[72], 0x3f);
	cr_assert_eq(f[12] | f[13] << 8 | f[14] << 16 | (uint32_t)f[15] << 24,
		     snap_crc32c(0, f + 16, sizeof(f) - 1 - 16));
}

Test(snapfmt_ws, empty_working_set_round_trips)
{
	struct snap_err err = { "" };
	uint64_t *got = (void *)1, n = 99;

	write_ws(NULL, 0);
	cr_assert_eq(load(&got, &n, &err), 0, "%s", err.msg);
	cr_assert_eq(n, 0);
	cr_assert_null(got);
}

Test(snapfmt_ws, rewrite_replaces_the_old_file_and_leaves_no_temp_files)
{
	static const uint64_t a[] = { 1, 2, 3 }, b[] = { 60 };
	struct snap_err err = { "" };
	uint64_t *got, n;

	write_ws(a, 3);
	write_ws(b, 1);
	cr_assert_eq(load(&got, &n, &err), 0, "%s", err.msg);
	cr_assert_eq(n, 1);
	cr_assert_eq(got[0], 60);
	cr_assert_eq(fx_count_entries(dir), 3, "state, memory, ws and nothing else");
	free(got);
}

Test(snapfmt_ws, write_rejects_a_page_outside_the_memory)
{
	static const uint64_t pages[] = { 1, PAGES };
	struct snap_err err = { "" };

	cr_assert_eq(snap_ws_write(dir, pages, 2, &err), -EINVAL);
	cr_assert(strstr(err.msg, "entry 1: page 0x40 is outside the memory (0x40 pages)"), "%s", err.msg);
	cr_assert_eq(access(ws_path, F_OK), -1);
	cr_assert_eq(fx_count_entries(dir), 2);
}

Test(snapfmt_ws, write_rejects_more_entries_than_pages)
{
	uint64_t pages[PAGES + 1] = { 0 };
	struct snap_err err = { "" };

	cr_assert_eq(snap_ws_write(dir, pages, PAGES + 1, &err), -EINVAL);
	cr_assert(strstr(err.msg, "65 pages listed (at most 64)"), "%s", err.msg);
}

Test(snapfmt_ws, write_new_refuses_to_replace_an_existing_working_set)
{
	static const uint64_t first[] = { 7, 3, 63 }, second[] = { 1 };
	struct snap_err err = { "" };
	uint64_t *got, n;

	write_ws(first, 3);
	cr_assert_eq(snap_ws_write_new(dir, second, 1, &err), -EEXIST);
	cr_assert(strstr(err.msg, "ws.bin exists"), "%s", err.msg);
	cr_assert_eq(load(&got, &n, &err), 0, "%s", err.msg);
	cr_assert_eq(n, 3, "the first recording was replaced");
	cr_assert_eq(memcmp(got, first, sizeof(first)), 0);
	cr_assert_eq(fx_count_entries(dir), 3, "no temporary file left behind");
	free(got);
}

Test(snapfmt_ws, write_new_writes_when_there_is_none)
{
	static const uint64_t pages[] = { 5 };
	struct snap_err err = { "" };
	uint64_t *got, n;

	cr_assert_eq(snap_ws_write_new(dir, pages, 1, &err), 0, "%s", err.msg);
	cr_assert_eq(load(&got, &n, &err), 0, "%s", err.msg);
	cr_assert_eq(n, 1);
	free(got);
}

Test(snapfmt_ws, write_into_a_missing_snapshot_fails)
{
	static const uint64_t pages[] = { 1 };
	struct snap_err err = { "" };
	char *nowhere = fx_path(tmp, "nowhere");

	cr_assert_eq(snap_ws_write(nowhere, pages, 1, &err), -ENOENT);
	free(nowhere);
}

Test(snapfmt_ws, missing_file_is_enoent_with_a_message)
{
	struct snap_err err = { "" };
	uint64_t *got, n;

	cr_assert_eq(load(&got, &n, &err), -ENOENT);
	cr_assert(strstr(err.msg, "no working-set file (ws.bin)"), "%s", err.msg);
}

/* ---- damage ---- */

static uint8_t *file;
static size_t file_len;

static void load_file(void)
{
	struct stat sb;
	int fd = open(ws_path, O_RDONLY);

	cr_assert_geq(fd, 0);
	fstat(fd, &sb);
	file_len = (size_t)sb.st_size;
	file = malloc(file_len + 8);
	cr_assert_eq(read(fd, file, file_len), (ssize_t)file_len);
	close(fd);
}

static void store_file(bool fix_crc)
{
	int fd = open(ws_path, O_WRONLY | O_TRUNC);

	if (fix_crc) {
		uint32_t crc = snap_crc32c(0, file + 16, file_len - 16);
		for (int i = 0; i < 4; i++)
			file[12 + i] = (uint8_t)(crc >> (8 * i));
	}
	cr_assert_eq(write(fd, file, file_len), (ssize_t)file_len);
	close(fd);
	free(file);
}

static void prepare(void)
{
	static const uint64_t pages[] = { 5, 6, 7, 40 };

	write_ws(pages, 4);
	load_file();
}

static void expect_reject(int code, const char *part)
{
	struct snap_err err = { "" };
	uint64_t *got = (void *)1, n = 1;

	cr_assert_eq(load(&got, &n, &err), code, "%s", err.msg);
	cr_assert(strstr(err.msg, part), "message \"%s\" lacks \"%s\"", err.msg, part);
	cr_assert(strstr(err.msg, "ws.bin"), "%s", err.msg);
	cr_assert_null(got);
	cr_assert_eq(n, 0);
}

Test(snapfmt_ws, bad_magic_is_rejected)
{
	prepare();
	file[0] = 'X';
	store_file(true);
	expect_reject(-EINVAL, "bad magic");
}

Test(snapfmt_ws, newer_version_is_rejected)
{
	prepare();
	file[8] = 2;
	store_file(true);
	expect_reject(-ENOTSUP, "version 2 (this ember reads 1)");
}

Test(snapfmt_ws, flipped_page_byte_fails_the_crc)
{
	prepare();
	file[SNAP_WS_HEADER + 9] ^= 0x20;
	store_file(false);
	expect_reject(-EINVAL, "CRC32C mismatch");
}

Test(snapfmt_ws, header_shorter_than_64_bytes_is_truncated)
{
	prepare();
	file_len = 40;
	store_file(false);
	expect_reject(-EINVAL, "40 bytes: truncated");
}

Test(snapfmt_ws, missing_last_entry_is_truncated)
{
	prepare();
	file_len -= 8;
	store_file(true);
	expect_reject(-EINVAL, "88 bytes, expected 96 for 4 pages: truncated");
}

Test(snapfmt_ws, trailing_bytes_are_too_long)
{
	prepare();
	memset(file + file_len, 0, 8);
	file_len += 8;
	store_file(true);
	expect_reject(-EINVAL, "too long");
}

Test(snapfmt_ws, huge_count_is_rejected_before_reading)
{
	prepare();
	file[16 + 5] = 0x10; /* count 2^40 + 4 */
	store_file(true);
	expect_reject(-EINVAL, "pages listed (at most 64)");
}

Test(snapfmt_ws, page_outside_the_memory_is_rejected)
{
	prepare();
	file[SNAP_WS_HEADER + 3 * 8] = PAGES; /* 40 -> 64 */
	store_file(true);
	expect_reject(-EINVAL, "entry 3: page 0x40 is outside the memory");
}

Test(snapfmt_ws, file_of_another_snapshot_is_rejected)
{
	prepare();
	memcpy(file + 32, "00000000000000000000000000000000", 32);
	store_file(true);
	expect_reject(-EINVAL, "belongs to another snapshot");
}

Test(snapfmt_ws, file_for_another_memory_size_is_rejected)
{
	prepare();
	file[24] = PAGES * 2;
	store_file(true);
	expect_reject(-EINVAL, "recorded for 0x80 pages of memory, the snapshot has 0x40");
}

Test(snapfmt_ws, symlinked_file_is_rejected)
{
	static const uint64_t pages[] = { 1 };
	char *real = fx_path(tmp, "real.ws");

	write_ws(pages, 1);
	cr_assert_eq(rename(ws_path, real), 0);
	cr_assert_eq(symlink(real, ws_path), 0);
	expect_reject(-ELOOP, "symbolic link");
	free(real);
}

/* ---- carried by the writer and the conversions ---- */

Test(snapfmt_ws, writer_writes_the_working_set_in_the_same_commit)
{
	static const uint64_t pages[] = { 9, 8, 1 };
	struct snap_err err = { "" };
	struct snap_writer *w;
	uint64_t *got, n;
	char *other = fx_path(tmp, "o");

	cr_assert_eq(snap_writer_begin(other, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_sparse(w, 0, mem, sizeof(mem), &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_set_ws(w, pages, 3, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_commit(w, &st, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_ws_load(other, &st, &got, &n, &err), 0, "%s", err.msg);
	cr_assert_eq(n, 3);
	cr_assert_eq(memcmp(got, pages, sizeof(pages)), 0);
	free(got);
	free(other);
}

Test(snapfmt_ws, writer_with_a_bad_working_set_leaves_nothing)
{
	static const uint64_t pages[] = { PAGES + 5 };
	struct snap_err err = { "" };
	struct snap_writer *w;
	char *other = fx_path(tmp, "o");

	cr_assert_eq(snap_writer_begin(other, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_sparse(w, 0, mem, sizeof(mem), &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_set_ws(w, pages, 1, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_commit(w, &st, &err), -EINVAL);
	cr_assert(strstr(err.msg, "outside the memory"), "%s", err.msg);
	cr_assert_eq(access(other, F_OK), -1);
	cr_assert_eq(fx_count_entries(tmp), 1, "no temp directory left");
	free(other);
}

Test(snapfmt_ws, compress_and_decompress_carry_the_working_set)
{
	static const uint64_t pages[] = { 3, 2, 1, 50 };
	struct snap_err err = { "" };
	struct snap_state cst;
	uint64_t *got, n;
	char *lz = fx_path(tmp, "lz"), *raw = fx_path(tmp, "raw");

	write_ws(pages, 4);
	cr_assert_eq(snap_compress(dir, lz, 0, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_decompress(lz, raw, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_state_load(lz, &cst, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_ws_load(lz, &cst, &got, &n, &err), 0, "%s", err.msg);
	cr_assert_eq(n, 4);
	cr_assert_eq(memcmp(got, pages, sizeof(pages)), 0);
	free(got);
	cr_assert_eq(snap_ws_load(raw, &cst, &got, &n, &err), 0, "%s", err.msg);
	cr_assert_eq(memcmp(got, pages, sizeof(pages)), 0);
	free(got);
	snap_state_free(&cst);
	free(lz);
	free(raw);
}

/* ---- ranges ---- */

static void expect_ranges(const uint64_t *pages, uint64_t n, uint64_t gap, const uint64_t *want,
			  uint64_t nwant)
{
	struct snap_err err = { "" };
	struct snap_range *r;
	uint64_t nr;

	cr_assert_eq(snap_ws_ranges(pages, n, gap, &r, &nr, &err), 0, "%s", err.msg);
	cr_assert_eq(nr, nwant, "%lu ranges, expected %lu", (unsigned long)nr, (unsigned long)nwant);
	for (uint64_t i = 0; i < nr; i++) {
		cr_assert_eq(r[i].first, want[2 * i], "range %lu first", (unsigned long)i);
		cr_assert_eq(r[i].count, want[2 * i + 1], "range %lu count", (unsigned long)i);
	}
	free(r);
}

Test(snapfmt_ws_ranges, unsorted_pages_with_repeats_become_sorted_disjoint_ranges)
{
	static const uint64_t pages[] = { 9, 1, 2, 10, 2, 3, 20, 11, 1 };
	static const uint64_t want[] = { 1, 3, 9, 3, 20, 1 };

	expect_ranges(pages, 9, 0, want, 3);
}

Test(snapfmt_ws_ranges, gaps_up_to_max_gap_are_merged)
{
	static const uint64_t pages[] = { 0, 3, 7, 12 }; /* gaps of 2, 3, 4 missing pages */
	static const uint64_t g2[] = { 0, 4, 7, 1, 12, 1 };
	static const uint64_t g3[] = { 0, 8, 12, 1 };
	static const uint64_t g4[] = { 0, 13 };
	static const uint64_t g1[] = { 0, 1, 3, 1, 7, 1, 12, 1 };

	expect_ranges(pages, 4, 1, g1, 4);
	expect_ranges(pages, 4, 2, g2, 3);
	expect_ranges(pages, 4, 3, g3, 2);
	expect_ranges(pages, 4, 4, g4, 1);
	expect_ranges(pages, 4, UINT64_MAX, g4, 1);
}

Test(snapfmt_ws_ranges, single_page_and_empty_list)
{
	static const uint64_t one[] = { 77 }, want[] = { 77, 1 };
	struct snap_err err = { "" };
	struct snap_range *r = (void *)1;
	uint64_t nr = 5;

	expect_ranges(one, 1, 0, want, 1);
	cr_assert_eq(snap_ws_ranges(NULL, 0, 0, &r, &nr, &err), 0);
	cr_assert_null(r);
	cr_assert_eq(nr, 0);
}

Test(snapfmt_ws_ranges, rejects_pages_beyond_the_address_limit)
{
	static const uint64_t pages[] = { 1, SNAP_MAX_GPA / SNAP_PAGE_SIZE };
	struct snap_err err = { "" };
	struct snap_range *r;
	uint64_t nr;

	cr_assert_eq(snap_ws_ranges(pages, 2, 0, &r, &nr, &err), -EINVAL);
	cr_assert(strstr(err.msg, "beyond 2^52"), "%s", err.msg);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Large page numbers take several radix passes: compare with qsort + a plain merge. */
Test(snapfmt_ws_ranges, matches_a_reference_on_random_large_page_numbers)
{
	enum { N = 50000 };
	uint64_t *pages = malloc(N * sizeof(*pages)), *ref = malloc(N * sizeof(*ref)), s = 42;
	struct snap_err err = { "" };
	struct snap_range *r;
	uint64_t nr, k = 0, first, end;

	for (int i = 0; i < N; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		/* clustered: a few dense areas spread over 2^38 pages */
		pages[i] = ((s >> 20) % 8) << 35 | (s % 90000);
	}
	memcpy(ref, pages, N * sizeof(*ref));
	qsort(ref, N, sizeof(*ref), cmp_u64);
	cr_assert_eq(snap_ws_ranges(pages, N, 3, &r, &nr, &err), 0, "%s", err.msg);
	first = ref[0];
	end = first + 1;
	for (int i = 1; i <= N; i++) {
		if (i < N && ref[i] < end)
			continue;
		if (i < N && ref[i] - end <= 3) {
			end = ref[i] + 1;
			continue;
		}
		cr_assert_lt(k, nr);
		cr_assert_eq(r[k].first, first, "range %lu", (unsigned long)k);
		cr_assert_eq(r[k].count, end - first, "range %lu", (unsigned long)k);
		k++;
		if (i < N) {
			first = ref[i];
			end = first + 1;
		}
	}
	cr_assert_eq(k, nr);
	free(r);
	free(pages);
	free(ref);
}
