/*
 * What more than one bench program needs: launching a child with the spawn instant in
 * EMBER_T0_NS (the harness and vsock_client --spawn), and the vsock lines that
 * floor_vsock and vsock_client print key for key. Header-only: every bench program is
 * a single file, and floor_vsock links nothing of ember's.
 */
#ifndef EMBER_BENCH_H
#define EMBER_BENCH_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

/* environ without EMBER_T0_NS, plus slot ("EMBER_T0_NS=<ns>", filled in just before
 * each spawn); NULL when out of memory. */
static inline char **bench_envp(char *slot)
{
	size_t n = 0, k = 0;
	char **envp;

	while (environ[n])
		n++;
	envp = calloc(n + 2, sizeof(char *));
	if (!envp)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "EMBER_T0_NS=", 12))
			envp[k++] = environ[i];
	envp[k++] = slot;
	envp[k] = NULL;
	return envp;
}

static inline int bench_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples. */
static inline uint64_t bench_pct(const uint64_t *s, unsigned n, unsigned p)
{
	unsigned k = (n * p + 99) / 100;

	return s[k ? k - 1 : 0];
}

/* "vsock-<kind> n= req_bytes= resp_bytes= p50_ns= ... mb_per_s=" (bench/README.md);
 * sorts s. */
static inline void bench_vsock_report(const char *kind, uint64_t *s, unsigned n,
				      uint64_t req_bytes, uint64_t resp_bytes,
				      uint64_t bulk_bytes)
{
	uint64_t sum = 0, p50;

	qsort(s, n, sizeof(*s), bench_cmp_u64);
	for (unsigned i = 0; i < n; i++)
		sum += s[i];
	p50 = bench_pct(s, n, 50);
	printf("vsock-%s n=%u req_bytes=%" PRIu64 " resp_bytes=%" PRIu64 " p50_ns=%" PRIu64
	       " p90_ns=%" PRIu64 " p99_ns=%" PRIu64 " min_ns=%" PRIu64 " max_ns=%" PRIu64
	       " mean_ns=%" PRIu64 " mb_per_s=%.1f\n", kind, n, req_bytes, resp_bytes, p50,
	       bench_pct(s, n, 90), bench_pct(s, n, 99), s[0], s[n - 1], sum / n,
	       bulk_bytes && p50 ? (double)bulk_bytes * 1e3 / (double)p50 : 0.0);
	fflush(stdout);
}

#endif
