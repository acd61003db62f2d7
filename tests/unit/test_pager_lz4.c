/*
 * The page server on lz4-compressed snapshots written by libsnapfmt's writer: zero,
 * lz4, raw-fallback and half-zero chunks and a short last chunk all read back exactly;
 * one fault installs its whole chunk; a damaged chunk is reported (pager_error and the
 * callback), never installed, and its faulter is released by pager_stop; prefetch
 * decodes the chunks covering the working set.
 */
#include "test_snapfmt_fixture.h"
#include "test_pager_fixture.h"

#define CS (16u << 10)
#define CS_PAGES (CS / PAGE_SIZE)
/* not a multiple of the chunk size: the last chunk is 12 KiB */
#define RAM (4 * MiB + 12 * 1024)
#define NPAGES (RAM / PAGE_SIZE)

static char *tmp;
static uint8_t *img;
static struct snap_dir d = { .mem_fd = -1 };
static struct guest_mem m;
static struct pager *pg;

static uint64_t rng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Chunk k: zero, text (lz4), random (stored raw), half zero half text, by k % 4. */
static void fill_chunk(uint8_t *p, uint32_t len, uint64_t k)
{
	static const char text[] = "record id=%05u counter=%u name=ember ";
	uint64_t s = k * 0x9e3779b97f4a7c15ull + 1;
	uint32_t from = 0;

	switch (k % 4) {
	case 0:
		memset(p, 0, len);
		return;
	case 2:
		for (uint32_t i = 0; i + 8 <= len; i += 8) {
			uint64_t v = rng(&s);

			memcpy(p + i, &v, 8);
		}
		return;
	case 3:
		from = len / 2;
		memset(p, 0, from);
		break;
	}
	for (uint32_t i = from; i < len; i++)
		p[i] = (uint8_t)(text[i % (sizeof(text) - 1)] + (k + i / 4096) % 7);
}

static void setup(void)
{
	struct snap_state st;
	struct snap_err err = { "" };
	struct snap_writer *w;
	uint64_t half = RAM / 2 / PAGE_SIZE * PAGE_SIZE;

	tmp = fx_tmpdir();
	img = malloc(RAM);
	cr_assert_not_null(img);
	for (uint64_t off = 0, k = 0; off < RAM; off += CS, k++)
		fill_chunk(img + off, RAM - off < CS ? (uint32_t)(RAM - off) : CS, k);
	img[RAM - 1] = 0x77; /* the last page is never zero */

	fx_fill_state(&st);
	st.memory.size = RAM;
	st.vm.regions[0] = (struct snap_region){ .gpa = 0, .size = half, .file_offset = 0 };
	st.vm.regions[1] = (struct snap_region){ .gpa = MEM_HOLE_END, .size = RAM - half,
						 .file_offset = half };
	char *dir = fx_path(tmp, "snap");

	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_lz4_chunked(w, img, RAM, CS, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_commit(w, &st, &err), 0, "%s", err.msg);
	snap_state_free(&st);
	cr_assert_eq(snap_dir_open(dir, &d, &err), 0, "%s", err.msg);
	free(dir);
	cr_assert_not_null(d.lz4);
	cr_assert_gt(d.lz4->nr_zero, 0);
	cr_assert_gt(d.lz4->nr_raw, 0);
	cr_assert_gt(d.lz4->nr_lz4, 0);
}

static void teardown(void)
{
	pager_destroy(pg);
	pg = NULL;
	mem_free(&m);
	snap_dir_close(&d);
	free(img);
	fx_rm_rf(tmp);
	free(tmp);
}

static void up(struct pager_config *cfg, bool start)
{
	struct errbuf eb = { "" };
	struct pager_config def = { 0 };
	struct mem_region r[MEM_MAX_REGIONS];

	if (!cfg)
		cfg = &def;
	cfg->lz4 = d.lz4;
	cfg->mem_fd = -1;
	cfg->size = RAM;
	for (unsigned i = 0; i < d.state.vm.nr_regions; i++)
		r[i] = (struct mem_region){ .gpa = d.state.vm.regions[i].gpa,
					    .size = d.state.vm.regions[i].size,
					    .offset = d.state.vm.regions[i].file_offset };
	cr_assert_eq(mem_set_regions(&m, r, d.state.vm.nr_regions, RAM, &eb), 0, "%s", eb.msg);
	cr_assert_eq(pager_create(&m, cfg, &pg, &eb), 0, "%s", eb.msg);
	if (start)
		cr_assert_eq(pager_start(pg, &eb), 0, "%s", eb.msg);
}

static uint64_t chunk_of_kind(uint8_t kind, uint64_t nth)
{
	for (uint64_t i = 0; i < d.lz4->nr_chunks; i++)
		if (snap_lz4_chunk(d.lz4, i)->kind == kind && nth-- == 0)
			return i;
	cr_assert_fail("no chunk of kind %u", kind);
	return 0;
}

/* Flips a byte in the middle of chunk i's stored bytes, in the file the pager reads. */
static void damage_chunk(uint64_t i)
{
	const struct snap_lz4_chunk *c = snap_lz4_chunk(d.lz4, i);
	char *path = fx_path(tmp, "snap/" SNAP_LZ4_MEMORY_FILE);
	int fd = open(path, O_RDWR);
	uint8_t b;

	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &b, 1, (off_t)(c->offset + c->stored_len / 2)), 1);
	b ^= 0x10;
	cr_assert_eq(pwrite(fd, &b, 1, (off_t)(c->offset + c->stored_len / 2)), 1);
	close(fd);
	free(path);
}

static void touch_all(unsigned nthreads)
{
	pthread_t th[4];
	struct px_toucher t[4];

	for (unsigned i = 0; i < nthreads; i++) {
		t[i] = (struct px_toucher){ .base = m.base, .n = NPAGES,
					    .order = i == 0 ? px_order_linear(NPAGES, false)
							    : px_order_random(NPAGES, i) };
		cr_assert_eq(pthread_create(&th[i], NULL, px_touch_thread, &t[i]), 0);
	}
	for (unsigned i = 0; i < nthreads; i++) {
		pthread_join(th[i], NULL);
		free((void *)t[i].order);
	}
}

Test(pager_lz4, every_page_matches_the_image_from_one_thread, .init = setup, .fini = teardown)
{
	struct pager_stats s;
	int64_t bad;

	up(NULL, true);
	touch_all(1);
	bad = px_first_mismatch(m.base, img, RAM);
	cr_assert_eq(bad, -1, "page %lld", (long long)bad);
	PX_STATS_UNTIL(pg, s, s.pages_copied + s.pages_zeroed == NPAGES);
	cr_assert_eq(s.pages_copied + s.pages_zeroed, NPAGES);
	cr_assert_eq(s.faults, d.lz4->nr_chunks, "one fault per chunk");
	cr_assert_eq(s.chunks_decoded, d.lz4->nr_raw + d.lz4->nr_lz4);
	cr_assert_eq(s.bytes_read, d.lz4->file_size, "each stored byte read once");
	cr_assert_eq(s.errors, 0);
}

Test(pager_lz4, every_page_matches_the_image_from_three_threads, .init = setup, .fini = teardown)
{
	struct pager_stats s;
	int64_t bad;

	up(NULL, true);
	touch_all(3);
	bad = px_first_mismatch(m.base, img, RAM);
	cr_assert_eq(bad, -1, "page %lld", (long long)bad);
	PX_STATS_UNTIL(pg, s, s.pages_copied + s.pages_zeroed == NPAGES);
	cr_assert_eq(s.pages_copied + s.pages_zeroed, NPAGES, "each page installed once");
}

Test(pager_lz4, pread_mode_matches_the_image, .init = setup, .fini = teardown)
{
	struct pager_config cfg = { .no_io_uring = true };
	int64_t bad;

	up(&cfg, true);
	touch_all(2);
	bad = px_first_mismatch(m.base, img, RAM);
	cr_assert_eq(bad, -1, "page %lld", (long long)bad);
}

Test(pager_lz4, one_fault_installs_its_whole_chunk, .init = setup, .fini = teardown)
{
	uint64_t c = chunk_of_kind(SNAP_CHUNK_LZ4, 3);
	uint64_t pg1 = c * CS_PAGES + 1;
	struct pager_stats s;

	up(NULL, true);
	cr_assert_eq(*(volatile uint8_t *)(m.base + pg1 * PAGE_SIZE + 5), img[pg1 * PAGE_SIZE + 5]);
	/* the faulting page goes in first; the rest of the chunk right after */
	PX_STATS_UNTIL(pg, s, s.pages_copied + s.pages_zeroed == CS_PAGES);
	cr_assert_eq(s.faults, 1);
	for (uint64_t k = 0; k < CS_PAGES; k++)
		cr_assert(px_page_resident(m.base, c * CS_PAGES + k), "page %llu of the chunk",
			  (unsigned long long)k);
	cr_assert_not(px_page_resident(m.base, c * CS_PAGES - 1), "previous chunk untouched");
	cr_assert_not(px_page_resident(m.base, (c + 1) * CS_PAGES), "next chunk untouched");
	cr_assert_eq(memcmp(m.base + c * CS, img + c * CS, CS), 0);
}

Test(pager_lz4, short_last_chunk_and_last_page_are_right, .init = setup, .fini = teardown)
{
	struct pager_stats s;

	up(NULL, true);
	cr_assert_eq(*(volatile uint8_t *)(m.base + RAM - 1), 0x77);
	cr_assert_eq(memcmp(m.base + RAM - 12 * 1024, img + RAM - 12 * 1024, 12 * 1024), 0);
	PX_STATS_UNTIL(pg, s, s.pages_copied + s.pages_zeroed == 3);
	cr_assert_eq(s.pages_copied + s.pages_zeroed, 3, "the 12 KiB chunk is 3 pages");
}

Test(pager_lz4, zero_chunks_and_zero_pages_map_the_zero_page, .init = setup, .fini = teardown)
{
	uint64_t z = chunk_of_kind(SNAP_CHUNK_ZERO, 1);
	struct pager_stats s;

	up(NULL, true);
	cr_assert_eq(*(volatile uint8_t *)(m.base + z * CS), 0);
	PX_STATS_UNTIL(pg, s, s.pages_zeroed == CS_PAGES);
	cr_assert_eq(s.pages_zeroed, CS_PAGES);
	cr_assert_eq(s.pages_copied, 0);
	cr_assert_eq(s.bytes_read, 0, "a zero chunk has no stored bytes");
}

/* ---- damage ------------------------------------------------------------------------- */

struct err_seen {
	pthread_mutex_t lock;
	unsigned calls;
	char msg[512];
};

static void on_error(void *opaque, const char *msg)
{
	struct err_seen *e = opaque;

	pthread_mutex_lock(&e->lock);
	e->calls++;
	snprintf(e->msg, sizeof(e->msg), "%s", msg);
	pthread_mutex_unlock(&e->lock);
}

static unsigned wait_error(struct err_seen *e)
{
	unsigned n = 0;

	for (int i = 0; i < 3000 && n == 0; i++) {
		pthread_mutex_lock(&e->lock);
		n = e->calls;
		pthread_mutex_unlock(&e->lock);
		if (!n)
			usleep(1000);
	}
	return n;
}

static void assert_damaged_chunk_reported(uint8_t kind, struct pager_config *cfg,
					  struct err_seen *seen)
{
	uint64_t c = chunk_of_kind(kind, 2), page = c * CS_PAGES + 2;
	uint64_t good = chunk_of_kind(kind, 5) * CS_PAGES;
	struct px_toucher t = { .order = &page, .n = 1 };
	pthread_t th;
	char msg[512];

	damage_chunk(c);
	cfg->on_error = on_error;
	cfg->opaque = seen;
	up(cfg, true);
	t.base = m.base;
	cr_assert_eq(pthread_create(&th, NULL, px_touch_thread, &t), 0);
	cr_assert_eq(wait_error(seen), 1, "on_error called once");
	cr_assert_neq(pager_error(pg, msg, sizeof(msg)), 0);
	cr_assert_str_eq(msg, seen->msg);
	cr_assert(strstr(msg, "chunk"), "%s", msg);
	usleep(20000);
	for (uint64_t k = 0; k < CS_PAGES; k++)
		cr_assert_not(px_page_resident(m.base, c * CS_PAGES + k),
			      "page %llu of the damaged chunk installed", (unsigned long long)k);
	/* other chunks are still served while the VMM stops the VM */
	cr_assert_eq(memcmp(m.base + good * PAGE_SIZE, img + good * PAGE_SIZE, PAGE_SIZE), 0);
	pager_stop(pg);
	pthread_join(th, NULL);
}

Test(pager_lz4, damaged_lz4_chunk_is_reported_and_never_installed, .init = setup,
     .fini = teardown, .timeout = 20)
{
	static struct err_seen seen = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct pager_config cfg = { 0 };

	assert_damaged_chunk_reported(SNAP_CHUNK_LZ4, &cfg, &seen);
	cr_assert(strstr(seen.msg, "CRC32C") || strstr(seen.msg, "lz4"), "%s", seen.msg);
}

Test(pager_lz4, damaged_raw_chunk_fails_its_crc_and_is_never_installed, .init = setup,
     .fini = teardown, .timeout = 20)
{
	static struct err_seen seen = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct pager_config cfg = { 0 };

	assert_damaged_chunk_reported(SNAP_CHUNK_RAW, &cfg, &seen);
	cr_assert(strstr(seen.msg, "CRC32C"), "%s", seen.msg);
}

Test(pager_lz4, damaged_chunk_in_the_working_set_is_reported_by_prefetch, .init = setup,
     .fini = teardown, .timeout = 20)
{
	static struct err_seen seen = { .lock = PTHREAD_MUTEX_INITIALIZER };
	uint64_t c = chunk_of_kind(SNAP_CHUNK_LZ4, 2);
	const uint64_t ws[] = { c * CS_PAGES, (c + 1) * CS_PAGES };
	struct pager_config cfg = { .ws_pages = ws, .nr_ws_pages = 2, .on_error = on_error,
				    .opaque = &seen };
	struct pager_stats s;

	damage_chunk(c);
	up(&cfg, true);
	px_wait_prefetch(pg, &s);
	cr_assert_eq(wait_error(&seen), 1);
	cr_assert_not(px_page_resident(m.base, c * CS_PAGES));
	cr_assert(px_page_resident(m.base, (c + 1) * CS_PAGES), "the good chunk is prefetched");
	cr_assert_eq(memcmp(m.base + (c + 1) * CS, img + (c + 1) * CS, CS), 0);
}

/* ---- prefetch ------------------------------------------------------------------------ */

Test(pager_lz4, prefetch_decodes_the_chunks_of_the_working_set, .init = setup, .fini = teardown)
{
	uint64_t *o = px_order_random(NPAGES, 17);
	struct pager_config cfg = { .ws_pages = o, .nr_ws_pages = 100 };
	struct pager_stats s;

	up(&cfg, true);
	px_wait_prefetch(pg, &s);
	cr_assert_eq(s.faults, 0);
	for (uint64_t i = 0; i < 100; i++) {
		uint64_t c = o[i] / CS_PAGES;

		cr_assert(px_page_resident(m.base, o[i]));
		cr_assert_eq(memcmp(m.base + c * CS, img + c * CS,
				    RAM - c * CS < CS ? RAM - c * CS : CS), 0, "chunk %llu",
			     (unsigned long long)c);
	}
	pager_stats(pg, &s);
	cr_assert_eq(s.faults, 0, "prefetched chunks take no fault");
	cr_assert_gt(s.chunks_decoded, 0);
	free(o);
}

Test(pager_lz4, whole_image_prefetch_with_pread_matches, .init = setup, .fini = teardown)
{
	uint64_t *o = px_order_random(NPAGES, 18);
	struct pager_config cfg = { .ws_pages = o, .nr_ws_pages = NPAGES, .no_io_uring = true };
	struct pager_stats s;
	int64_t bad;

	up(&cfg, true);
	px_wait_prefetch(pg, &s);
	cr_assert_eq(s.pages_prefetched, NPAGES);
	bad = px_first_mismatch(m.base, img, RAM);
	cr_assert_eq(bad, -1, "page %lld", (long long)bad);
	pager_stats(pg, &s);
	cr_assert_eq(s.faults, 0);
	free(o);
}
