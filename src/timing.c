/*
 * Phase timestamps. bench/ sets EMBER_T0_NS (CLOCK_MONOTONIC, taken just before exec)
 * so that phases count from the launcher's spawn rather than from our first
 * instruction; without it the origin is this constructor, the earliest point we see.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vmm.h"

#define TIMING_MAX 32

static uint64_t t0_ns;
static bool enabled;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	const char *phase;
	uint64_t us;
} marks[TIMING_MAX];
static unsigned nr_marks;

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

__attribute__((constructor(101))) static void timing_origin(void)
{
	const char *e = getenv("EMBER_T0_NS");
	char *end;
	uint64_t v;

	t0_ns = mono_ns();
	if (e && *e) {
		v = strtoull(e, &end, 10);
		if (!*end && v && v <= t0_ns)
			t0_ns = v;
	}
}

void timing_enable(bool on)
{
	enabled = on;
}

uint64_t timing_now_us(void)
{
	return (mono_ns() - t0_ns) / 1000;
}

void timing_mark(const char *phase)
{
	uint64_t now = timing_now_us();
	struct mline l;

	pthread_mutex_lock(&lock);
	for (unsigned i = 0; i < nr_marks; i++) {
		if (!strcmp(marks[i].phase, phase)) {
			pthread_mutex_unlock(&lock);
			return;
		}
	}
	if (nr_marks < TIMING_MAX) {
		marks[nr_marks].phase = phase;
		marks[nr_marks].us = now;
		nr_marks++;
	}
	pthread_mutex_unlock(&lock);
	if (enabled) {
		mline_begin(&l, "ember-timing");
		mline_pos_str(&l, "phase", phase);
		mline_pos_u64(&l, "us", now);
		mline_end(&l);
	}
}

int64_t timing_get(const char *phase)
{
	int64_t r = -1;

	pthread_mutex_lock(&lock);
	for (unsigned i = 0; i < nr_marks; i++)
		if (!strcmp(marks[i].phase, phase))
			r = (int64_t)marks[i].us;
	pthread_mutex_unlock(&lock);
	return r;
}

void timing_reset(void)
{
	pthread_mutex_lock(&lock);
	nr_marks = 0;
	pthread_mutex_unlock(&lock);
}

/* Rss of the mapping that starts at addr, from /proc/self/smaps. Unlike mincore this
 * does not count the shared zero page, so it is what the guest really costs. */
static int mapping_rss_kb(const void *addr, unsigned long *kb)
{
	char line[256];
	bool in = false;
	FILE *f = fopen("/proc/self/smaps", "re");
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = lo == (unsigned long)(uintptr_t)addr;
			continue;
		}
		if (in && sscanf(line, "Rss: %lu kB", kb) == 1) {
			r = 0;
			break;
		}
	}
	fclose(f);
	return r;
}

void timing_report_memory(const struct guest_mem *m)
{
	unsigned long size_pages = 0, rss_pages = 0, guest_kb = 0;
	struct mline l;
	FILE *f;

	if (!enabled || !m->base)
		return;
	f = fopen("/proc/self/statm", "re");
	if (!f)
		return;
	if (fscanf(f, "%lu %lu", &size_pages, &rss_pages) != 2)
		rss_pages = 0;
	fclose(f);
	if (mapping_rss_kb(m->base, &guest_kb))
		return;
	mline_begin(&l, "ember-mem");
	mline_u64(&l, "rss_kb", rss_pages * (unsigned long)(sysconf(_SC_PAGESIZE) / 1024));
	mline_u64(&l, "guest_resident_kb", guest_kb);
	mline_end(&l);
}
