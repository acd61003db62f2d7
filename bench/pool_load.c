/*
 * pool_load: end-to-end invocation latency and throughput, client -> response, with
 * the invocation client library (src/invoke.c). Two ways to run a function:
 *
 *   pool_load --pool PATH [common]            through an `ember pool` at PATH
 *   pool_load --fresh SNAPSHOT [common]       a fresh `ember restore --snapshot SNAPSHOT
 *                                             --vsock-uds TMP --console none` per
 *                                             invocation: spawn, connect, invoke, then
 *                                             the process is stopped off the clock
 * common: [--ember PATH] [--n N] [--concurrency C] [--payload-bytes B] [--port P]
 *         [--warmup W] [--timeout SEC] [--tmp DIR] [--samples FILE]
 *
 * C threads share N invocations (after W untimed ones each) of the fn guest's mix
 * function with a B-byte random payload (default 1024); with --pool each thread keeps
 * one connection to the pool, with --fresh each invocation is its own VM process.
 * A sample runs from the first byte of the request written (--pool) or the spawn
 * (--fresh) to the response's last byte read. Every response must be OK with 8 + B
 * bytes. inv_per_s counts every completed invocation, warm-up included, over the whole
 * run. Prints one line on stdout (bench/README.md):
 *   pool-load mode=pool|fresh n= concurrency= payload_bytes= ok= errors= p50_us= p90_us=
 *   p99_us= max_us= mean_us= wall_ms= inv_per_s=
 * and exits 1 if any invocation failed. --samples FILE appends every sample (µs), one per
 * line, for runs to be pooled across rounds.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"

#define MAX_THREADS 64
#define RETRY_NS    100000ull

static struct {
	const char *pool, *fresh, *ember, *tmp, *samples_path;
	unsigned n, conc, warmup;
	uint32_t bytes, port;
	uint64_t timeout_ns;
} opt = { .ember = "build/ember", .tmp = "/tmp", .n = 1000, .conc = 1, .warmup = 20,
	  .bytes = 1024, .port = INVOKE_DEFAULT_PORT, .timeout_ns = 10000000000ull };

static atomic_uint next_sample;
static atomic_uint errors;
static atomic_uint completed;       /* warm-up included: the throughput's numerator */
static uint64_t *samples;
static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	va_list ap;

	atomic_fetch_add(&errors, 1);
	pthread_mutex_lock(&err_lock);
	fprintf(stderr, "pool_load: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	pthread_mutex_unlock(&err_lock);
}

static void fill(uint8_t *p, size_t n, uint64_t *s)
{
	for (size_t i = 0; i < n; i++) {
		*s ^= *s << 13;
		*s ^= *s >> 7;
		*s ^= *s << 17;
		p[i] = (uint8_t)*s;
	}
}

static bool check(int r, const struct invoke_result *res, const struct errbuf *eb)
{
	if (r) {
		fail("invocation: %s", eb->msg[0] ? eb->msg : strerror(-r));
		return false;
	}
	if (res->status != INVOKE_OK || res->payload_len != 8 + opt.bytes) {
		fail("invocation answered %s with %u bytes", invoke_status_name(res->status),
		     res->payload_len);
		return false;
	}
	return true;
}

/* ---- through the pool -------------------------------------------------------------- */

static void *pool_thread(void *arg)
{
	uint64_t seed = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1, id = 0;
	uint8_t *payload = malloc(opt.bytes ? opt.bytes : 1);
	struct errbuf eb = { "" };
	int fd;

	if (!payload)
		return NULL;
	fd = invoke_pool_connect(opt.pool, invoke_clock_ns() + opt.timeout_ns, &eb);
	if (fd < 0) {
		fail("%s: %s", opt.pool, eb.msg);
		free(payload);
		return NULL;
	}
	for (unsigned w = 0;; w++) {
		struct invoke_result res;
		unsigned k = UINT_MAX;
		uint64_t t0;
		int r;

		if (w >= opt.warmup) {
			k = atomic_fetch_add(&next_sample, 1);
			if (k >= opt.n)
				break;
		}
		fill(payload, opt.bytes, &seed);
		t0 = invoke_clock_ns();
		r = invoke_pool_call(fd, ++id, payload, opt.bytes, t0 + opt.timeout_ns, &res, &eb);
		if (k != UINT_MAX)
			samples[k] = (invoke_clock_ns() - t0) / 1000;
		if (!check(r, &res, &eb)) {
			if (k != UINT_MAX)
				samples[k] = UINT64_MAX;
			if (!r)
				invoke_result_free(&res);
			break;
		}
		invoke_result_free(&res);
		atomic_fetch_add(&completed, 1);
	}
	close(fd);
	free(payload);
	return NULL;
}

/* ---- a fresh restore per invocation ----------------------------------------------- */

static pid_t spawn_restore(const char *uds)
{
	char *argv[] = { (char *)opt.ember, "restore", "--snapshot", (char *)opt.fresh,
			 "--vsock-uds", (char *)uds, "--console", "none", NULL };
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int r;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	/* its ember-report lines are not ours to print; a failure shows as no answer */
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
	r = posix_spawn(&pid, opt.ember, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	return r ? -r : pid;
}

static int fresh_one(const char *uds, const uint8_t *payload, uint64_t *us)
{
	uint64_t t0 = invoke_clock_ns(), deadline = t0 + opt.timeout_ns;
	struct invoke_result res;
	struct errbuf eb = { "" };
	bool ok = false;
	uint32_t host_port;
	pid_t pid = spawn_restore(uds);
	int fd = -1, r;

	if (pid < 0) {
		fail("spawning %s: %s", opt.ember, strerror((int)-pid));
		return -1;
	}
	/* connect as soon as the socket accepts and the guest answers */
	while (fd < 0 && invoke_clock_ns() < deadline) {
		fd = invoke_connect(uds, opt.port, deadline, &host_port, &eb);
		if (fd < 0) {
			struct timespec ts = { 0, RETRY_NS };

			nanosleep(&ts, NULL);
		}
	}
	if (fd < 0) {
		fail("fresh restore never answered on %s: %s", uds, eb.msg);
	} else {
		r = invoke_call(fd, 1, payload, opt.bytes, deadline, &res, &eb);
		*us = (invoke_clock_ns() - t0) / 1000;
		ok = check(r, &res, &eb);
		if (!r)
			invoke_result_free(&res);
		close(fd);
	}
	/* the teardown is not part of the invocation */
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	unlink(uds);
	return ok ? 0 : -1;
}

static void *fresh_thread(void *arg)
{
	uint64_t seed = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1, us = 0;
	uint8_t *payload = malloc(opt.bytes ? opt.bytes : 1);
	char uds[PATH_MAX];

	if (!payload)
		return NULL;
	snprintf(uds, sizeof(uds), "%s/pool-load-%d-%u.v", opt.tmp, (int)getpid(),
		 (unsigned)(uintptr_t)arg);
	for (unsigned w = 0;; w++) {
		unsigned k = UINT_MAX;

		if (w >= opt.warmup) {
			k = atomic_fetch_add(&next_sample, 1);
			if (k >= opt.n)
				break;
		}
		fill(payload, opt.bytes, &seed);
		if (fresh_one(uds, payload, &us)) {
			if (k != UINT_MAX)
				samples[k] = UINT64_MAX;
			break;
		}
		if (k != UINT_MAX)
			samples[k] = us;
		atomic_fetch_add(&completed, 1);
	}
	free(payload);
	return NULL;
}

/* ---- main ------------------------------------------------------------------------- */

static unsigned parse_u(const char *flag, const char *v, unsigned min, unsigned max)
{
	char *end;
	unsigned long x = strtoul(v ? v : "", &end, 10);

	if (!v || !*v || *end || x < min || x > max) {
		fprintf(stderr, "pool_load: %s: '%s' is not a number in %u..%u\n", flag,
			v ? v : "", min, max);
		exit(2);
	}
	return (unsigned)x;
}

int main(int argc, char **argv)
{
	pthread_t th[MAX_THREADS];
	uint64_t t0, wall_ns, sum = 0;
	unsigned ok = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--pool"))
			opt.pool = v;
		else if (!strcmp(a, "--fresh"))
			opt.fresh = v;
		else if (!strcmp(a, "--ember"))
			opt.ember = v;
		else if (!strcmp(a, "--tmp"))
			opt.tmp = v;
		else if (!strcmp(a, "--samples"))
			opt.samples_path = v;
		else if (!strcmp(a, "--n"))
			opt.n = parse_u(a, v, 1, 10000000);
		else if (!strcmp(a, "--concurrency"))
			opt.conc = parse_u(a, v, 1, MAX_THREADS);
		else if (!strcmp(a, "--payload-bytes"))
			opt.bytes = parse_u(a, v, 0, 1u << 20);
		else if (!strcmp(a, "--port"))
			opt.port = parse_u(a, v, 0, UINT_MAX);
		else if (!strcmp(a, "--warmup"))
			opt.warmup = parse_u(a, v, 0, 100000);
		else if (!strcmp(a, "--timeout"))
			opt.timeout_ns = parse_u(a, v, 1, 3600) * 1000000000ull;
		else {
			fprintf(stderr, "pool_load: unknown option '%s'\n", a);
			return 2;
		}
		if (!v) {
			fprintf(stderr, "pool_load: %s needs a value\n", a);
			return 2;
		}
		i++;
	}
	if (!opt.pool == !opt.fresh) {
		fprintf(stderr, "pool_load: give one of --pool PATH or --fresh SNAPSHOT\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	samples = calloc(opt.n, sizeof(*samples));
	if (!samples)
		return 1;
	t0 = invoke_clock_ns();
	for (unsigned i = 0; i < opt.conc; i++)
		if (pthread_create(&th[i], NULL, opt.pool ? pool_thread : fresh_thread,
				   (void *)(uintptr_t)(i + 1))) {
			fprintf(stderr, "pool_load: cannot start thread %u\n", i);
			return 1;
		}
	for (unsigned i = 0; i < opt.conc; i++)
		pthread_join(th[i], NULL);
	wall_ns = invoke_clock_ns() - t0;
	/* the timed samples that completed; a failed thread leaves the rest at 0 */
	for (unsigned i = 0; i < opt.n; i++)
		if (samples[i] && samples[i] != UINT64_MAX)
			samples[ok++] = samples[i];
	if (ok == 0) {
		fprintf(stderr, "pool_load: no invocation completed\n");
		return 1;
	}
	if (opt.samples_path) {
		FILE *f = fopen(opt.samples_path, "a");

		if (!f) {
			fprintf(stderr, "pool_load: %s: %s\n", opt.samples_path, strerror(errno));
			return 1;
		}
		for (unsigned i = 0; i < ok; i++)
			fprintf(f, "%" PRIu64 "\n", samples[i]);
		fclose(f);
	}
	qsort(samples, ok, sizeof(*samples), bench_cmp_u64);
	for (unsigned i = 0; i < ok; i++)
		sum += samples[i];
	printf("pool-load mode=%s n=%u concurrency=%u payload_bytes=%u ok=%u errors=%u p50_us=%"
	       PRIu64 " p90_us=%" PRIu64 " p99_us=%" PRIu64 " max_us=%" PRIu64 " mean_us=%" PRIu64
	       " wall_ms=%" PRIu64 " inv_per_s=%.0f\n", opt.pool ? "pool" : "fresh", opt.n,
	       opt.conc, opt.bytes, ok, atomic_load(&errors), bench_pct(samples, ok, 50),
	       bench_pct(samples, ok, 90), bench_pct(samples, ok, 99), samples[ok - 1], sum / ok,
	       wall_ns / 1000000, (double)atomic_load(&completed) * 1e9 / (double)wall_ns);
	return atomic_load(&errors) || ok < opt.n ? 1 : 0;
}
