/*
 * pager_micro: the page server (src/paging) measured on its own, without a VM, over a
 * real snapshot and its recorded working set. The memory section of bench/run.sh runs
 * it on the golden sandbox snapshot; the numbers separate the pager's own cost from
 * what the (here: software) KVM adds per guest page fault.
 *
 *   pager_micro [--json FILE] [--faults N] RAW_SNAPSHOT [LZ4_SNAPSHOT]
 *
 * RAW_SNAPSHOT must hold a ws.bin; LZ4_SNAPSHOT is its `ember-snap compress` copy.
 * - fault latency: a host thread touches up to N (default 4096) working-set pages one
 *   at a time, in random order, and times each touch (raw: one 4 KiB page per fault;
 *   lz4: one page per distinct chunk, so every touch decodes a chunk), with io_uring
 *   (registered file, the default; unregistered; registered file + fixed buffer), with
 *   pread, and without the pager's busy-poll; plus a MAP_PRIVATE mapping of the raw
 *   file for reference (the mmap backend's host-side cost).
 * - prefetch throughput: the whole working set installed by the prefetcher (median of
 *   3), page cache warm, then cold (the memory file evicted with POSIX_FADV_DONTNEED).
 * Every touched or prefetched page is compared with the raw file.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "paging/pager_int.h"
#include "snapfmt.h"

#define PAGE          4096ull
#define PREFETCH_RUNS 3
#define PREFETCH_WAIT_NS (20ull * 1000 * 1000 * 1000)

struct snap {
	const char *dir;
	struct snap_dir d;
	uint64_t *ws;      /* the raw snapshot's working set (shared by both) */
	uint64_t nr_ws;
};

struct micro {
	struct snap raw, lz4;
	bool have_lz4;
	uint64_t size;     /* guest RAM = memory.size */
	uint64_t max_faults;
	FILE *json;         /* --json, written through jw (snapshot-format/json.c) */
	struct json_w jw;
	uint8_t page[PAGE]; /* scratch for comparisons */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static void shuffle(uint64_t *a, uint64_t n, uint64_t seed)
{
	uint64_t s = seed | 1;

	for (uint64_t i = n; i > 1; i--) {
		uint64_t j = xorshift(&s) % i, t = a[i - 1];

		a[i - 1] = a[j];
		a[j] = t;
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Page `pg` of guest RAM must equal page `pg` of the raw memory file. */
static int check_page(struct micro *mi, const uint8_t *base, uint64_t pg, const char *what)
{
	ssize_t got = pread(mi->raw.d.mem_fd, mi->page, PAGE, (off_t)(pg * PAGE));

	if (got != (ssize_t)PAGE) {
		fprintf(stderr, "pager_micro: reading page %llu of %s: %s\n",
			(unsigned long long)pg, mi->raw.dir, got < 0 ? strerror(errno) : "short read");
		return -EIO;
	}
	if (memcmp(base + pg * PAGE, mi->page, PAGE)) {
		fprintf(stderr, "pager_micro: %s: page %llu differs from the raw memory file\n", what,
			(unsigned long long)pg);
		return -EINVAL;
	}
	return 0;
}

/* Guest RAM laid out as the snapshot says, served by a started pager. */
static int pager_up(struct micro *mi, const struct snap *s, struct pager_config *cfg,
		    struct guest_mem *m, struct pager **p)
{
	const struct snap_state *st = &s->d.state;
	struct mem_region regions[MEM_MAX_REGIONS];
	struct errbuf eb = { "" };
	int r;

	memset(m, 0, sizeof(*m));
	if (st->vm.nr_regions > MEM_MAX_REGIONS) {
		fprintf(stderr, "pager_micro: %s: %u memory regions (at most %d)\n", s->dir,
			st->vm.nr_regions, MEM_MAX_REGIONS);
		return -EINVAL;
	}
	for (unsigned i = 0; i < st->vm.nr_regions; i++)
		regions[i] = (struct mem_region){ .gpa = st->vm.regions[i].gpa,
						  .size = st->vm.regions[i].size,
						  .offset = st->vm.regions[i].file_offset };
	cfg->size = mi->size;
	cfg->lz4 = s->d.lz4;
	cfg->mem_fd = s->d.lz4 ? -1 : s->d.mem_fd;
	r = mem_set_regions(m, regions, st->vm.nr_regions, mi->size, &eb);
	if (!r)
		r = pager_create(m, cfg, p, &eb);
	if (!r) {
		r = pager_start(*p, &eb);
		if (r)
			pager_destroy(*p);
	}
	if (r) {
		mem_free(m);
		fprintf(stderr, "pager_micro: %s: %s\n", s->dir, eb.msg);
	}
	return r;
}

static void pager_down(struct guest_mem *m, struct pager *p)
{
	pager_destroy(p);
	mem_free(m);
}

/* ---- fault latency ------------------------------------------------------------------ */

static void print_latency(struct micro *mi, const char *what, const uint64_t *lat, uint64_t n,
			  const struct pager_stats *s)
{
	double p50 = lat[n / 2] / 1e3, p90 = lat[n * 9 / 10] / 1e3, p99 = lat[n * 99 / 100] / 1e3;

	/* 80 columns: the touch count, p90 and the I/O path are in the JSON; the row says
	 * so only when the pager fell back from io_uring to pread */
	if (s)
		printf("| %s%s | %llu | %.1f | %.1f | %.1f | %.1f |\n", what,
		       s->io_uring || !strstr(what, "io_uring") ? "" : " (pread: no io_uring)",
		       (unsigned long long)s->faults, p50, p99, s->lat_p50_ns / 1e3,
		       s->lat_p99_ns / 1e3);
	else
		printf("| %s | %llu | %.2f | %.2f | - | - |\n", what, (unsigned long long)n, p50,
		       p99);
	if (!mi->json)
		return;
	json_obj(&mi->jw, NULL);
	json_str(&mi->jw, "kind", "fault");
	json_str(&mi->jw, "what", what);
	json_u64(&mi->jw, "touches", n);
	json_f64(&mi->jw, "p50_us", p50, 2);
	json_f64(&mi->jw, "p90_us", p90, 2);
	json_f64(&mi->jw, "p99_us", p99, 2);
	if (s) {
		json_u64(&mi->jw, "faults", s->faults);
		json_f64(&mi->jw, "server_p50_us", s->lat_p50_ns / 1e3, 2);
		json_f64(&mi->jw, "server_p99_us", s->lat_p99_ns / 1e3, 2);
		json_str(&mi->jw, "io", s->io_uring ? "io_uring" : "pread");
	}
	json_obj_end(&mi->jw);
}

/* Touches pages[0..n) one by one through a pager (or, with s NULL, through base). */
static int touch_timed(struct micro *mi, const char *what, const uint8_t *base,
		       const uint64_t *pages, uint64_t n, uint64_t *lat)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t t0 = now_ns();

		(void)*(volatile const uint8_t *)(base + pages[i] * PAGE + (i % 64) * 64);
		lat[i] = now_ns() - t0;
	}
	for (uint64_t i = 0; i < n; i++)
		if (check_page(mi, base, pages[i], what))
			return -EINVAL;
	qsort(lat, n, sizeof(*lat), cmp_u64);
	return 0;
}

static int fault_latency(struct micro *mi, const char *what, const struct snap *s,
			 struct pager_config cfg, const uint64_t *pages, uint64_t n)
{
	uint64_t *lat = malloc(n * sizeof(*lat));
	struct pager_stats st;
	struct guest_mem m;
	struct pager *p;
	int r;

	if (!lat)
		return -ENOMEM;
	r = pager_up(mi, s, &cfg, &m, &p);
	if (r)
		goto out;
	r = touch_timed(mi, what, m.base, pages, n, lat);
	pager_stats(p, &st);
	pager_down(&m, p);
	if (!r && st.errors) {
		fprintf(stderr, "pager_micro: %s: %llu pages could not be served\n", what,
			(unsigned long long)st.errors);
		r = -EIO;
	}
	if (!r)
		print_latency(mi, what, lat, n, &st);
out:
	free(lat);
	return r;
}

/* The mmap backend's host side: read faults on a MAP_PRIVATE mapping of the file. */
static int mmap_latency(struct micro *mi, const uint64_t *pages, uint64_t n)
{
	uint64_t *lat = malloc(n * sizeof(*lat));
	uint8_t *map;
	int r;

	if (!lat)
		return -ENOMEM;
	map = mmap(NULL, mi->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, mi->raw.d.mem_fd, 0);
	if (map == MAP_FAILED) {
		r = -errno;
		fprintf(stderr, "pager_micro: mmap %s: %s\n", mi->raw.dir, strerror(errno));
		free(lat);
		return r;
	}
	r = touch_timed(mi, "raw 4K mmap MAP_PRIVATE", map, pages, n, lat);
	munmap(map, mi->size);
	if (!r)
		print_latency(mi, "raw 4K mmap MAP_PRIVATE (no pager)", lat, n, NULL);
	free(lat);
	return r;
}

/* One working-set page per distinct lz4 chunk, in random order: every touch decodes. */
static uint64_t *pages_one_per_chunk(const struct micro *mi, uint64_t *n)
{
	const struct snap_lz4_index *ix = mi->lz4.d.lz4;
	uint64_t *out = malloc(mi->raw.nr_ws * sizeof(*out)), k = 0;
	uint8_t *seen = calloc(ix->nr_chunks, 1);

	if (!out || !seen) {
		free(out);
		free(seen);
		return NULL;
	}
	for (uint64_t i = 0; i < mi->raw.nr_ws; i++) {
		uint64_t c = (mi->raw.ws[i] * PAGE) >> ix->chunk_shift;

		if (c < ix->nr_chunks && !seen[c]) {
			seen[c] = 1;
			out[k++] = mi->raw.ws[i];
		}
	}
	free(seen);
	shuffle(out, k, 11);
	*n = k;
	return out;
}

static int run_faults(struct micro *mi)
{
	struct pager_config def = { 0 }, nospin = { .spin_us = -1 }, pr = { .no_io_uring = true };
	uint64_t n = mi->raw.nr_ws < mi->max_faults ? mi->raw.nr_ws : mi->max_faults, nc;
	uint64_t *pages = malloc(mi->raw.nr_ws * sizeof(*pages)), *chunks = NULL;
	int r;

	if (!pages)
		return -ENOMEM;
	memcpy(pages, mi->raw.ws, mi->raw.nr_ws * sizeof(*pages));
	shuffle(pages, mi->raw.nr_ws, 9);
	printf("\n#### page server: one fault as the faulting thread sees it (no VM), page cache warm\n\n");
	printf("Touches of working-set pages in random order (without a pager: touches, not "
	       "faults); `server` = the pager's own service time (fault message read -> page "
	       "installed). us; p90 and the touch count in the JSON.\n\n");
	printf("| path | faults | p50 | p99 | server p50 | server p99 |\n");
	printf("|---|---:|---:|---:|---:|---:|\n");
	r = fault_latency(mi, "raw 4K io_uring", &mi->raw, def, pages, n);
	if (!r)
		r = fault_latency(mi, "raw 4K io_uring, no busy-poll", &mi->raw, nospin, pages, n);
	if (!r) {
		pg_io_features = 0;
		r = fault_latency(mi, "raw 4K io_uring, unregistered fd", &mi->raw, def, pages, n);
		pg_io_features = PG_IO_FIXED_FILE | PG_IO_FIXED_BUF;
		if (!r)
			r = fault_latency(mi, "raw 4K io_uring, fixed file + buffer", &mi->raw, def,
					  pages, n);
		pg_io_features = PG_IO_FIXED_FILE;
	}
	if (!r)
		r = fault_latency(mi, "raw 4K pread", &mi->raw, pr, pages, n);
	if (!r)
		r = mmap_latency(mi, pages, n);
	if (!r && mi->have_lz4) {
		chunks = pages_one_per_chunk(mi, &nc);
		if (!chunks)
			r = -ENOMEM;
		if (nc > n)
			nc = n;
		if (!r)
			r = fault_latency(mi, "lz4 chunk io_uring", &mi->lz4, def, chunks, nc);
		if (!r)
			r = fault_latency(mi, "lz4 chunk io_uring, no busy-poll", &mi->lz4, nospin,
					  chunks, nc);
		if (!r)
			r = fault_latency(mi, "lz4 chunk pread", &mi->lz4, pr, chunks, nc);
	}
	free(chunks);
	free(pages);
	return r;
}

/* ---- prefetch throughput ------------------------------------------------------------ */

/* Drops the snapshot's memory file (only it) from the page cache. */
static int evict(const struct snap *s)
{
	int fd = s->d.lz4 ? s->d.lz4->fd : s->d.mem_fd, err;

	if (fdatasync(fd) < 0 && errno != EINVAL)
		return -errno;
	err = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	return -err;
}

static int prefetch_once(struct micro *mi, const char *what, const struct snap *s,
			 struct pager_config cfg, bool cold, bool check, double *mbps)
{
	struct pager_stats st = { 0 };
	struct guest_mem m;
	struct pager *p;
	uint64_t deadline;
	int r;

	cfg.ws_pages = mi->raw.ws;
	cfg.nr_ws_pages = mi->raw.nr_ws;
	if (cold && (r = evict(s))) {
		fprintf(stderr, "pager_micro: evicting %s: %s\n", s->dir, strerror(-r));
		return r;
	}
	r = pager_up(mi, s, &cfg, &m, &p);
	if (r)
		return r;
	deadline = now_ns() + PREFETCH_WAIT_NS;
	for (;;) {
		pager_stats(p, &st);
		if (st.prefetch_done || st.errors || now_ns() > deadline)
			break;
		usleep(200);
	}
	if (!st.prefetch_done || st.errors) {
		fprintf(stderr, "pager_micro: %s: prefetch %s\n", what,
			st.errors ? "could not serve every page" : "did not finish within 20 s");
		r = -EIO;
	}
	for (uint64_t i = 0; !r && check && i < mi->raw.nr_ws; i++)
		r = check_page(mi, m.base, mi->raw.ws[i], what);
	pager_down(&m, p);
	*mbps = st.prefetch_ns ? (double)(mi->raw.nr_ws * PAGE) / (double)st.prefetch_ns * 1e3 : 0;
	return r;
}

static int prefetch_rate(struct micro *mi, const char *what, const struct snap *s,
			 struct pager_config cfg, bool cold)
{
	double r3[PREFETCH_RUNS], sorted[PREFETCH_RUNS], mib = (double)(mi->raw.nr_ws * PAGE) / (1 << 20);

	for (int k = 0; k < PREFETCH_RUNS; k++) {
		int r = prefetch_once(mi, what, s, cfg, cold, k == 0, &r3[k]);

		if (r)
			return r;
		sorted[k] = r3[k];
	}
	for (int i = 1; i < PREFETCH_RUNS; i++) /* 3 values: insertion sort */
		for (int j = i; j > 0 && sorted[j] < sorted[j - 1]; j--) {
			double t = sorted[j];

			sorted[j] = sorted[j - 1];
			sorted[j - 1] = t;
		}
	printf("| %s | %s | %.1f | %.0f | %.1f | %.0f %.0f %.0f |\n", what, cold ? "cold" : "warm",
	       mib, sorted[1], mib * 1.048576 / sorted[1] * 1e3, r3[0], r3[1], r3[2]);
	if (mi->json) {
		json_obj(&mi->jw, NULL);
		json_str(&mi->jw, "kind", "prefetch");
		json_str(&mi->jw, "what", what);
		json_str(&mi->jw, "cache", cold ? "cold" : "warm");
		json_f64(&mi->jw, "mib", mib, 1);
		json_f64(&mi->jw, "mb_per_s", sorted[1], 0);
		json_arr(&mi->jw, "runs_mb_per_s");
		for (int k = 0; k < PREFETCH_RUNS; k++)
			json_f64(&mi->jw, NULL, r3[k], 0);
		json_arr_end(&mi->jw);
		json_obj_end(&mi->jw);
	}
	return 0;
}

static int run_prefetch(struct micro *mi)
{
	struct pager_config def = { 0 }, pr = { .no_io_uring = true };
	struct pager_config big = { .prefetch_block = 2u << 20, .prefetch_depth = 8 };
	struct pager_config small = { .prefetch_block = 256u << 10, .prefetch_depth = 4 };
	struct pager_config deep = { .prefetch_depth = 16 };
	int r;

	printf("\n#### page server: prefetch of the recorded working set (no VM)\n\n");
	printf("pager_start -> the last working-set page installed; median of %d (MB/s = 10^6 "
	       "bytes of guest pages per second), then the 3 runs.\n\n", PREFETCH_RUNS);
	printf("| path | cache | MiB | MB/s | ms | runs MB/s |\n|---|---|---:|---:|---:|---|\n");
	r = prefetch_rate(mi, "raw io_uring 1M x4 (default)", &mi->raw, def, false);
	if (!r)
		r = prefetch_rate(mi, "raw io_uring 2M x8", &mi->raw, big, false);
	if (!r)
		r = prefetch_rate(mi, "raw io_uring 256K x4", &mi->raw, small, false);
	if (!r) {
		pg_io_features = 0;
		r = prefetch_rate(mi, "raw io_uring, unregistered fd", &mi->raw, def, false);
		pg_io_features = PG_IO_FIXED_FILE | PG_IO_FIXED_BUF;
		if (!r)
			r = prefetch_rate(mi, "raw io_uring, fixed file + buffer", &mi->raw, def, false);
		pg_io_features = PG_IO_FIXED_FILE;
	}
	if (!r)
		r = prefetch_rate(mi, "raw pread 1M", &mi->raw, pr, false);
	if (!r && mi->have_lz4)
		r = prefetch_rate(mi, "lz4 io_uring", &mi->lz4, def, false);
	if (!r && mi->have_lz4)
		r = prefetch_rate(mi, "lz4 pread", &mi->lz4, pr, false);
	if (!r)
		r = prefetch_rate(mi, "raw io_uring 1M x4 (default)", &mi->raw, def, true);
	if (!r)
		r = prefetch_rate(mi, "raw io_uring 1M x16", &mi->raw, deep, true);
	if (!r)
		r = prefetch_rate(mi, "raw pread 1M", &mi->raw, pr, true);
	if (!r && mi->have_lz4)
		r = prefetch_rate(mi, "lz4 io_uring", &mi->lz4, def, true);
	if (!r && mi->have_lz4)
		r = prefetch_rate(mi, "lz4 pread", &mi->lz4, pr, true);
	return r;
}

/* ---- main ----------------------------------------------------------------------------- */

static int open_snap(struct snap *s, const char *dir)
{
	struct snap_err err = { "" };
	int r;

	s->dir = dir;
	r = snap_dir_open(dir, &s->d, &err);
	if (r)
		fprintf(stderr, "pager_micro: %s\n", err.msg);
	return r;
}

static int usage(void)
{
	fprintf(stderr, "usage: pager_micro [--json FILE] [--faults N] RAW_SNAPSHOT [LZ4_SNAPSHOT]\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct micro mi = { .max_faults = 4096 };
	const char *json = NULL, *raw_dir = NULL, *lz4_dir = NULL;
	struct snap_err err = { "" };
	int r, i;

	mi.raw.d.mem_fd = mi.lz4.d.mem_fd = -1;
	for (i = 1; i < argc && argv[i][0] == '-'; i += 2) {
		if (i + 1 >= argc)
			return usage();
		if (!strcmp(argv[i], "--json"))
			json = argv[i + 1];
		else if (!strcmp(argv[i], "--faults"))
			mi.max_faults = strtoull(argv[i + 1], NULL, 10);
		else
			return usage();
	}
	if (i >= argc || argc - i > 2 || mi.max_faults == 0)
		return usage();
	raw_dir = argv[i];
	lz4_dir = i + 1 < argc ? argv[i + 1] : NULL;

	r = open_snap(&mi.raw, raw_dir);
	if (r)
		return 1;
	if (mi.raw.d.lz4) {
		fprintf(stderr, "pager_micro: %s: expected a raw snapshot (it is lz4)\n", raw_dir);
		r = -EINVAL;
		goto out;
	}
	mi.size = mi.raw.d.state.memory.size;
	r = snap_ws_load(raw_dir, &mi.raw.d.state, &mi.raw.ws, &mi.raw.nr_ws, &err);
	if (r || mi.raw.nr_ws == 0) {
		fprintf(stderr, "pager_micro: %s\n", r ? err.msg : "the working set is empty");
		r = r ? r : -EINVAL;
		goto out;
	}
	if (lz4_dir) {
		r = open_snap(&mi.lz4, lz4_dir);
		if (r)
			goto out;
		mi.have_lz4 = true;
		if (!mi.lz4.d.lz4 || mi.lz4.d.state.memory.size != mi.size ||
		    strcmp(mi.lz4.d.state.header.id, mi.raw.d.state.header.id)) {
			fprintf(stderr, "pager_micro: %s is not an lz4 copy of %s\n", lz4_dir, raw_dir);
			r = -EINVAL;
			goto out;
		}
	}
	if (json) {
		mi.json = fopen(json, "w");
		if (!mi.json) {
			fprintf(stderr, "pager_micro: %s: %s\n", json, strerror(errno));
			r = -errno;
			goto out;
		}
		json_begin(&mi.jw, mi.json);
		json_obj(&mi.jw, NULL);
		json_str(&mi.jw, "snapshot", raw_dir);
		json_u64(&mi.jw, "memory_bytes", mi.size);
		json_u64(&mi.jw, "ws_pages", mi.raw.nr_ws);
		json_arr(&mi.jw, "results");
	}
	printf("\npager_micro: %s (%llu MiB), working set %llu pages (%.1f MiB)%s%s\n", raw_dir,
	       (unsigned long long)(mi.size >> 20), (unsigned long long)mi.raw.nr_ws,
	       (double)(mi.raw.nr_ws * PAGE) / (1 << 20), lz4_dir ? ", lz4 copy " : "",
	       lz4_dir ? lz4_dir : "");
	r = run_faults(&mi);
	if (!r)
		r = run_prefetch(&mi);
	if (mi.json) {
		json_arr_end(&mi.jw);
		json_obj_end(&mi.jw);
		if (fclose(mi.json) && !r)
			r = -EIO;
	}
out:
	free(mi.raw.ws);
	snap_dir_close(&mi.raw.d);
	if (mi.have_lz4)
		snap_dir_close(&mi.lz4.d);
	return r ? 1 : 0;
}
