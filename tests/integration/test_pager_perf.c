/*
 * Page server measurements, printed as "pager-perf ..." lines: the latency of one
 * fault as the faulting thread sees it (raw 4 KiB page; lz4 chunk), and bulk prefetch
 * throughput, each with io_uring (with and without the registered file / fixed
 * buffer) and with pread. The memory file is in the page cache. Sizes: 64 MiB, or
 * EMBER_PAGER_PERF_MB (the numbers in the report used 256). The asserts are loose
 * sanity bounds (a 10x regression fails), not benchmarks. No .timeout: with
 * overlapping timed tests under --jobs 2, Criterion 2.4's runner leaks 48 bytes and
 * ASan (make SAN=1) fails the binary.
 */
#include "../unit/test_snapfmt_fixture.h"
#include "../unit/test_pager_fixture.h"
#include "paging/pager_int.h"

static uint64_t size;
static uint8_t *image;
static char *tmp;
static int raw_fd = -1;
static struct snap_dir sd = { .mem_fd = -1 };

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The sandbox guest's heap mix, per 64 KiB: zero, text records, random bytes. */
static void setup(void)
{
	static const char text[] = "id=%05u counter=%u name=ember rec ";
	const char *e = getenv("EMBER_PAGER_PERF_MB");
	uint64_t s = 42;
	char *path;

	size = (e ? strtoull(e, NULL, 10) : 64) * MiB;
	cr_assert(size >= 16 * MiB);
	image = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(image, MAP_FAILED);
	for (uint64_t off = 0; off < size; off += 64 * 1024) {
		switch ((off >> 16) % 3) {
		case 0:
			break;
		case 1:
			for (uint64_t i = 0; i < 65536; i++)
				image[off + i] = (uint8_t)(text[i % (sizeof(text) - 1)] + (off >> 16) % 5);
			break;
		default:
			for (uint64_t i = 0; i < 65536; i += 8) {
				uint64_t v = px_rand(&s);

				memcpy(image + off + i, &v, 8);
			}
		}
	}
	tmp = fx_tmpdir();
	path = fx_path(tmp, "memory.raw");
	raw_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(raw_fd, 0);
	cr_assert_eq(pwrite(raw_fd, image, size, 0), (ssize_t)size);
	free(path);
}

static void teardown(void)
{
	snap_dir_close(&sd);
	if (raw_fd >= 0)
		close(raw_fd);
	raw_fd = -1;
	if (image)
		munmap(image, size);
	image = NULL;
	fx_rm_rf(tmp);
	free(tmp);
	pg_io_features = PG_IO_FIXED_FILE;
}

static void make_lz4(void)
{
	struct snap_state st;
	struct snap_err err = { "" };
	struct snap_writer *w;
	char *dir = fx_path(tmp, "snap");

	fx_fill_state(&st);
	st.memory.size = size;
	st.vm.nr_regions = 1;
	st.vm.regions[0] = (struct snap_region){ .gpa = 0, .size = size, .file_offset = 0 };
	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_lz4(w, image, size, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_commit(w, &st, &err), 0, "%s", err.msg);
	snap_state_free(&st);
	cr_assert_eq(snap_dir_open(dir, &sd, &err), 0, "%s", err.msg);
	free(dir);
}

static void up(struct guest_mem *m, struct pager **p, struct pager_config *cfg)
{
	struct errbuf eb = { "" };

	cfg->size = size;
	if (!cfg->lz4)
		cfg->mem_fd = raw_fd;
	cr_assert_eq(mem_layout(m, size, &eb), 0, "%s", eb.msg);
	cr_assert_eq(pager_create(m, cfg, p, &eb), 0, "%s", eb.msg);
	cr_assert_eq(pager_start(*p, &eb), 0, "%s", eb.msg);
}

static void down(struct guest_mem *m, struct pager *p)
{
	pager_destroy(p);
	mem_free(m);
}

/* Touches `n` pages (random order, one per `stride` pages) one by one; prints percentiles. */
static uint64_t fault_latency(const char *what, struct pager_config *cfg, uint64_t stride,
			      uint64_t n)
{
	struct guest_mem m;
	struct pager *p;
	struct pager_stats s;
	uint64_t *order = px_order_random(size / PAGE_SIZE / stride, 9), *lat = malloc(n * 8);
	uint64_t p50;

	cr_assert_not_null(lat);
	up(&m, &p, cfg);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t pg = order[i] * stride, t0 = px_now_ns();

		(void)*(volatile uint8_t *)(m.base + pg * PAGE_SIZE + 64);
		lat[i] = px_now_ns() - t0;
	}
	for (uint64_t i = 0; i < n; i++) {
		uint64_t pg = order[i] * stride;

		cr_assert_eq(memcmp(m.base + pg * PAGE_SIZE, image + pg * PAGE_SIZE, PAGE_SIZE), 0);
	}
	pager_stats(p, &s);
	qsort(lat, n, 8, cmp_u64);
	fprintf(stderr, "pager-perf fault %-31s n=%llu p50=%.1fus p90=%.1fus p99=%.1fus "
		"(server p50=%.1fus p99=%.1fus) io_uring=%d\n", what, (unsigned long long)n,
		lat[n / 2] / 1e3, lat[n * 9 / 10] / 1e3, lat[n * 99 / 100] / 1e3,
		s.lat_p50_ns / 1e3, s.lat_p99_ns / 1e3, s.io_uring);
	down(&m, p);
	free(order);
	p50 = lat[n / 2];
	free(lat);
	return p50;
}

/* Drops the memory file from the page cache (only ours: POSIX_FADV_DONTNEED). */
static void evict(const struct pager_config *cfg)
{
	int fd = cfg->lz4 ? cfg->lz4->fd : raw_fd;

	cr_assert_eq(fdatasync(fd), 0);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
}

static bool cold;

/* Prefetches the whole image; returns MB/s (median of 3). */
static double prefetch_rate(const char *what, struct pager_config *base)
{
	uint64_t *ws = px_order_random(size / PAGE_SIZE, 4);
	double r[3];

	for (int k = 0; k < 3; k++) {
		struct pager_config cfg = *base;
		struct guest_mem m;
		struct pager *p;
		struct pager_stats s;

		cfg.ws_pages = ws;
		cfg.nr_ws_pages = size / PAGE_SIZE;
		if (cold)
			evict(&cfg);
		up(&m, &p, &cfg);
		px_wait_prefetch(p, &s);
		cr_assert_eq(s.pages_prefetched, size / PAGE_SIZE);
		cr_assert_eq(s.errors, 0);
		if (k == 0)
			cr_assert_eq(px_first_mismatch(m.base, image, size), -1);
		r[k] = (double)size / (double)s.prefetch_ns * 1e3;
		down(&m, p);
	}
	qsort(r, 3, sizeof(r[0]), cmp_double);
	fprintf(stderr, "pager-perf prefetch %-28s %llu MiB: %.0f MB/s (runs %.0f %.0f %.0f)\n", what,
		(unsigned long long)(size / MiB), r[1], r[0], r[1], r[2]);
	free(ws);
	return r[1];
}

Test(pager_perf, raw_fault_latency, .init = setup, .fini = teardown)
{
	struct pager_config uring = { 0 }, pread_cfg = { .no_io_uring = true };
	struct pager_config nospin = { .spin_us = -1 };
	uint64_t n = size / PAGE_SIZE / 4;

	cr_assert_lt(fault_latency("raw 4K io_uring", &uring, 1, n), 1000 * 1000);
	fault_latency("raw 4K io_uring, no spin", &nospin, 1, n);
	pg_io_features = 0;
	fault_latency("raw 4K io_uring unregistered", &uring, 1, n);
	pg_io_features = PG_IO_FIXED_FILE | PG_IO_FIXED_BUF;
	fault_latency("raw 4K io_uring file+fixed buf", &uring, 1, n);
	pg_io_features = PG_IO_FIXED_FILE;
	cr_assert_lt(fault_latency("raw 4K pread", &pread_cfg, 1, n), 1000 * 1000);
}

Test(pager_perf, lz4_chunk_fault_latency, .init = setup, .fini = teardown)
{
	struct pager_config cfg = { .mem_fd = -1 };
	struct pager_config pr = { .mem_fd = -1, .no_io_uring = true };
	struct pager_config nospin = { .mem_fd = -1, .spin_us = -1 };
	uint64_t stride;

	make_lz4();
	cfg.lz4 = pr.lz4 = nospin.lz4 = sd.lz4;
	stride = sd.lz4->chunk_size / PAGE_SIZE; /* one fault per chunk */
	cr_assert_lt(fault_latency("lz4 chunk io_uring", &cfg, stride, size / sd.lz4->chunk_size / 2),
		     2000 * 1000);
	fault_latency("lz4 chunk pread", &pr, stride, size / sd.lz4->chunk_size / 2);
	fault_latency("lz4 chunk io_uring, no spin", &nospin, stride, size / sd.lz4->chunk_size / 2);
}

Test(pager_perf, prefetch_throughput, .init = setup, .fini = teardown)
{
	struct pager_config uring = { 0 }, pread_cfg = { .no_io_uring = true };
	struct pager_config big = { .prefetch_block = 2u << 20, .prefetch_depth = 8 };
	struct pager_config small = { .prefetch_block = 256u << 10, .prefetch_depth = 4 };

	cr_assert_gt(prefetch_rate("raw io_uring 1M x4", &uring), 50);
	prefetch_rate("raw io_uring 2M x8", &big);
	prefetch_rate("raw io_uring 256K x4", &small);
	pg_io_features = 0;
	prefetch_rate("raw io_uring unregistered", &uring);
	pg_io_features = PG_IO_FIXED_FILE | PG_IO_FIXED_BUF;
	prefetch_rate("raw io_uring file+fixed buf", &uring);
	pg_io_features = PG_IO_FIXED_FILE;
	cr_assert_gt(prefetch_rate("raw pread 1M", &pread_cfg), 50);

	make_lz4();
	uring.lz4 = pread_cfg.lz4 = sd.lz4;
	uring.mem_fd = pread_cfg.mem_fd = -1;
	cr_assert_gt(prefetch_rate("lz4 io_uring", &uring), 50);
	prefetch_rate("lz4 pread", &pread_cfg);
}

/* Not in the page cache: reads go to the disk, and io_uring keeps several in flight. */
Test(pager_perf, prefetch_throughput_from_disk, .init = setup, .fini = teardown)
{
	struct pager_config uring = { 0 }, pread_cfg = { .no_io_uring = true };
	struct pager_config deep = { .prefetch_depth = 16 };

	cold = true;
	cr_assert_gt(prefetch_rate("raw io_uring 1M x4, cold", &uring), 5);
	prefetch_rate("raw io_uring 1M x16, cold", &deep);
	prefetch_rate("raw pread 1M, cold", &pread_cfg);
	make_lz4();
	uring.lz4 = pread_cfg.lz4 = sd.lz4;
	uring.mem_fd = pread_cfg.mem_fd = -1;
	prefetch_rate("lz4 io_uring, cold", &uring);
	prefetch_rate("lz4 pread, cold", &pread_cfg);
}
