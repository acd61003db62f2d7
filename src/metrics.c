/*
 * The counters and histograms of metrics.h. Plain static storage: incrementing must
 * cost a relaxed atomic add and nothing else (no lock, no allocation, no branch on
 * whether anyone reads them).
 */
#include <linux/kvm.h>
#include <stdatomic.h>
#include <string.h>

#include "metrics.h"
#include "vmm.h"

struct hist {
	_Atomic uint64_t count, sum, max;
	_Atomic uint64_t buckets[METRICS_HIST_BUCKETS];
};

/* one cache line (or more) per vCPU: its thread is the only writer */
struct vcpu_exits {
	_Atomic uint64_t n[MX__COUNT];
} __attribute__((aligned(64)));

static _Atomic uint64_t counters[M__COUNT];
static struct hist hists[H__COUNT];
static struct vcpu_exits exits[VM_MAX_VCPUS];

static const char *const counter_names[M__COUNT] = {
	[M_UCALLS] = "ucalls",
	[M_VSOCK_CONNECTIONS] = "vsock_connections",
	[M_VSOCK_BYTES_TO_GUEST] = "vsock_bytes_to_guest",
	[M_VSOCK_BYTES_TO_HOST] = "vsock_bytes_to_host",
	[M_RNG_REQUESTS] = "rng_requests",
	[M_RNG_BYTES] = "rng_bytes",
	[M_SNAPSHOTS] = "snapshots",
	[M_SNAPSHOT_FAILURES] = "snapshot_failures",
	[M_SNAPSHOT_BYTES] = "snapshot_bytes",
	[M_RESETS] = "resets",
};

static const char *const exit_names[MX__COUNT] = {
	[MX_IO] = "exits_io", [MX_MMIO] = "exits_mmio", [MX_INTR] = "exits_intr",
	[MX_HLT] = "exits_hlt", [MX_SHUTDOWN] = "exits_shutdown",
	[MX_SYSTEM_EVENT] = "exits_system_event", [MX_INTERNAL_ERROR] = "exits_internal_error",
	[MX_FAIL_ENTRY] = "exits_fail_entry", [MX_OTHER] = "exits_other",
};

static const char *const hist_names[H__COUNT] = {
	[H_SNAPSHOT_US] = "snapshot_us",
	[H_RESET_US] = "reset_us",
};

const char *metrics_name(enum metric m)
{
	return counter_names[m];
}

const char *metrics_exit_name(enum metric_exit x)
{
	return exit_names[x];
}

const char *metrics_hist_name(enum metric_hist h)
{
	return hist_names[h];
}

void metrics_add(enum metric m, uint64_t n)
{
	atomic_fetch_add_explicit(&counters[m], n, memory_order_relaxed);
}

void metrics_exit(unsigned vcpu, uint32_t reason)
{
	enum metric_exit x;

	switch (reason) {
	case KVM_EXIT_IO: x = MX_IO; break;
	case KVM_EXIT_MMIO: x = MX_MMIO; break;
	case KVM_EXIT_INTR: x = MX_INTR; break;
	case KVM_EXIT_HLT: x = MX_HLT; break;
	case KVM_EXIT_SHUTDOWN: x = MX_SHUTDOWN; break;
	case KVM_EXIT_SYSTEM_EVENT: x = MX_SYSTEM_EVENT; break;
	case KVM_EXIT_INTERNAL_ERROR: x = MX_INTERNAL_ERROR; break;
	case KVM_EXIT_FAIL_ENTRY: x = MX_FAIL_ENTRY; break;
	default: x = MX_OTHER; break;
	}
	if (vcpu < VM_MAX_VCPUS)
		atomic_fetch_add_explicit(&exits[vcpu].n[x], 1, memory_order_relaxed);
}

unsigned metrics_bucket(uint64_t value)
{
	unsigned b = value ? 64 - (unsigned)__builtin_clzll(value) : 0;

	return b < METRICS_HIST_BUCKETS ? b : METRICS_HIST_BUCKETS - 1;
}

void metrics_observe(enum metric_hist h, uint64_t value)
{
	struct hist *s = &hists[h];
	uint64_t max = atomic_load_explicit(&s->max, memory_order_relaxed);

	atomic_fetch_add_explicit(&s->buckets[metrics_bucket(value)], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&s->sum, value, memory_order_relaxed);
	while (value > max && !atomic_compare_exchange_weak_explicit(&s->max, &max, value,
								     memory_order_relaxed,
								     memory_order_relaxed)) {
		/* max was reloaded: try again while value still beats it */
	}
}

uint64_t metrics_quantile(const struct metrics_hist_read *h, double q)
{
	uint64_t seen = 0, rank;

	if (!h->count)
		return 0;
	rank = (uint64_t)(q * (double)h->count + 0.999999);
	if (rank < 1)
		rank = 1;
	for (unsigned b = 0; b < METRICS_HIST_BUCKETS; b++) {
		seen += h->buckets[b];
		if (seen >= rank)
			/* the bucket's upper bound, which the largest value seen may undercut */
			return b == 0 ? 0 : (1ull << b) - 1 < h->max ? (1ull << b) - 1 : h->max;
	}
	return h->max;
}

void metrics_read(struct metrics_read *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned m = 0; m < M__COUNT; m++)
		out->counters[m] = atomic_load_explicit(&counters[m], memory_order_relaxed);
	for (unsigned v = 0; v < VM_MAX_VCPUS; v++)
		for (unsigned x = 0; x < MX__COUNT; x++)
			out->exits[x] += atomic_load_explicit(&exits[v].n[x], memory_order_relaxed);
	for (unsigned x = 0; x < MX__COUNT; x++)
		out->exits_total += out->exits[x];
	for (unsigned h = 0; h < H__COUNT; h++) {
		out->hist[h].count = atomic_load_explicit(&hists[h].count, memory_order_relaxed);
		out->hist[h].sum = atomic_load_explicit(&hists[h].sum, memory_order_relaxed);
		out->hist[h].max = atomic_load_explicit(&hists[h].max, memory_order_relaxed);
		for (unsigned b = 0; b < METRICS_HIST_BUCKETS; b++)
			out->hist[h].buckets[b] =
				atomic_load_explicit(&hists[h].buckets[b], memory_order_relaxed);
	}
}

void metrics_clear(void)
{
	for (unsigned m = 0; m < M__COUNT; m++)
		atomic_store(&counters[m], 0);
	for (unsigned v = 0; v < VM_MAX_VCPUS; v++)
		for (unsigned x = 0; x < MX__COUNT; x++)
			atomic_store(&exits[v].n[x], 0);
	for (unsigned h = 0; h < H__COUNT; h++) {
		atomic_store(&hists[h].count, 0);
		atomic_store(&hists[h].sum, 0);
		atomic_store(&hists[h].max, 0);
		for (unsigned b = 0; b < METRICS_HIST_BUCKETS; b++)
			atomic_store(&hists[h].buckets[b], 0);
	}
}
