/*
 * Shared fixtures for the test_pager* tests: a raw memory file with a known page mix
 * (random pages, written zero pages, holes, a non-zero last page), guest RAM served
 * by a pager over it, and helpers to touch pages from several threads.
 */
#ifndef TEST_PAGER_FIXTURE_H
#define TEST_PAGER_FIXTURE_H

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "paging/paging.h"

#define PX_UNUSED __attribute__((unused))

enum px_kind { PX_DATA, PX_ZERO_WRITTEN, PX_HOLE };

/* The page mix: every 7th page a hole, every 11th written zeros, the rest random. */
static PX_UNUSED enum px_kind px_kind_of(uint64_t page, uint64_t npages)
{
	if (page == 0 || page == npages - 1)
		return PX_DATA;
	if (page % 7 == 3)
		return PX_HOLE;
	if (page % 11 == 5)
		return PX_ZERO_WRITTEN;
	return PX_DATA;
}

static PX_UNUSED uint64_t px_rand(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

struct px_file {
	char path[64];
	int fd;
	uint64_t size;
	uint8_t *expect;  /* what guest RAM must read as */
	uint64_t zero_pages;
};

/* Writes the page mix into a fresh temp file (holes left unwritten). */
static PX_UNUSED void px_file_make(struct px_file *f, uint64_t size, uint64_t seed)
{
	uint64_t npages = size / PAGE_SIZE, s = seed | 1;

	memset(f, 0, sizeof(*f));
	snprintf(f->path, sizeof(f->path), "/tmp/ember-pager-XXXXXX");
	f->fd = mkstemp(f->path);
	cr_assert_geq(f->fd, 0, "mkstemp: %s", strerror(errno));
	unlink(f->path);
	f->size = size;
	f->expect = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(f->expect, MAP_FAILED);
	for (uint64_t pg = 0; pg < npages; pg++) {
		uint8_t *dst = f->expect + pg * PAGE_SIZE;
		enum px_kind k = px_kind_of(pg, npages);

		if (k != PX_DATA) {
			f->zero_pages++;
			if (k == PX_HOLE)
				continue;
		} else {
			for (size_t i = 0; i < PAGE_SIZE; i += 8) {
				uint64_t v = px_rand(&s);

				memcpy(dst + i, &v, 8);
			}
		}
		cr_assert_eq(pwrite(f->fd, dst, PAGE_SIZE, (off_t)(pg * PAGE_SIZE)),
			     (ssize_t)PAGE_SIZE);
	}
	cr_assert_eq(ftruncate(f->fd, (off_t)size), 0);
}

static PX_UNUSED void px_file_free(struct px_file *f)
{
	if (f->expect)
		munmap(f->expect, f->size);
	if (f->fd >= 0)
		close(f->fd);
	f->expect = NULL;
	f->fd = -1;
}

/* Guest RAM of f->size bytes (one region) served by a pager over f. */
struct px_vm {
	struct guest_mem m;
	struct pager *p;
};

static PX_UNUSED void px_pager_up(struct px_vm *v, const struct px_file *f,
				  struct pager_config *cfg, bool start)
{
	struct errbuf eb = { "" };
	struct pager_config def = { 0 };

	if (!cfg)
		cfg = &def;
	cfg->mem_fd = f->fd;
	cfg->size = f->size;
	cr_assert_eq(mem_layout(&v->m, f->size, &eb), 0, "%s", eb.msg);
	cr_assert_eq(pager_create(&v->m, cfg, &v->p, &eb), 0, "pager_create: %s", eb.msg);
	cr_assert_not_null(v->m.base);
	if (start)
		cr_assert_eq(pager_start(v->p, &eb), 0, "pager_start: %s", eb.msg);
}

static PX_UNUSED void px_pager_down(struct px_vm *v)
{
	pager_destroy(v->p);
	v->p = NULL;
	mem_free(&v->m);
}

/* Resident pages of [base, base+len), by mincore (does not fault anything in). */
static PX_UNUSED uint64_t px_resident(const uint8_t *base, uint64_t len)
{
	uint64_t n = len / PAGE_SIZE, cnt = 0;
	unsigned char *vec = malloc(n);

	cr_assert_not_null(vec);
	cr_assert_eq(mincore((void *)base, len, vec), 0, "mincore: %s", strerror(errno));
	for (uint64_t i = 0; i < n; i++)
		cnt += vec[i] & 1;
	free(vec);
	return cnt;
}

static PX_UNUSED bool px_page_resident(const uint8_t *base, uint64_t page)
{
	return px_resident(base + page * PAGE_SIZE, PAGE_SIZE) == 1;
}

/* A thread that reads one byte of each listed page (volatile: it really faults). */
struct px_toucher {
	const uint8_t *base;
	const uint64_t *order;
	uint64_t n;
	pthread_barrier_t *start;
	uint64_t sum;
};

static PX_UNUSED void *px_touch_thread(void *arg)
{
	struct px_toucher *t = arg;
	uint64_t sum = 0;

	if (t->start)
		pthread_barrier_wait(t->start);
	for (uint64_t i = 0; i < t->n; i++)
		sum += *(volatile const uint8_t *)(t->base + t->order[i] * PAGE_SIZE + (i % 64) * 64);
	t->sum = sum;
	return NULL;
}

static PX_UNUSED uint64_t *px_order_linear(uint64_t n, bool reverse)
{
	uint64_t *o = malloc(n * sizeof(*o));

	cr_assert_not_null(o);
	for (uint64_t i = 0; i < n; i++)
		o[i] = reverse ? n - 1 - i : i;
	return o;
}

static PX_UNUSED uint64_t *px_order_random(uint64_t n, uint64_t seed)
{
	uint64_t *o = px_order_linear(n, false), s = seed | 1;

	for (uint64_t i = n - 1; i > 0; i--) {
		uint64_t j = px_rand(&s) % (i + 1), t = o[i];

		o[i] = o[j];
		o[j] = t;
	}
	return o;
}

/*
 * Stats lag the faults a little: the pager counts after the install ioctl has already
 * woken the faulter. Re-read them until cond holds (up to ~2 s), then assert as usual.
 */
#define PX_STATS_UNTIL(p, s, cond)                          \
	do {                                                \
		for (int px_i_ = 0; px_i_ < 2000; px_i_++) { \
			pager_stats((p), &(s));             \
			if (cond)                           \
				break;                      \
			usleep(1000);                       \
		}                                           \
	} while (0)

/* Waits (up to ~5 s) for the pager's prefetch to finish. */
static PX_UNUSED void px_wait_prefetch(struct pager *p, struct pager_stats *s)
{
	for (int i = 0; i < 5000; i++) {
		pager_stats(p, s);
		if (s->prefetch_done)
			return;
		usleep(1000);
	}
	cr_assert_fail("prefetch did not finish within 5 s");
}

static PX_UNUSED uint64_t px_now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* First differing page of guest RAM against the expected image, or -1. */
static PX_UNUSED int64_t px_first_mismatch(const uint8_t *ram, const uint8_t *expect, uint64_t size)
{
	for (uint64_t pg = 0; pg < size / PAGE_SIZE; pg++)
		if (memcmp(ram + pg * PAGE_SIZE, expect + pg * PAGE_SIZE, PAGE_SIZE))
			return (int64_t)pg;
	return -1;
}

#endif
