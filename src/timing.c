/*
 * Phase timestamps. bench/ sets EMBER_T0_NS (CLOCK_MONOTONIC, taken just before exec)
 * so that phases count from the launcher's spawn rather than from our first
 * instruction; without it the origin is this constructor, the earliest point we see.
 */
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
	char line[96];
	int n;

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
		n = snprintf(line, sizeof(line), "ember-timing %s %" PRIu64 "\n", phase, now);
		if (write(STDERR_FILENO, line, (size_t)n) < 0) {
			/* nothing useful to do if stderr is gone */
		}
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
