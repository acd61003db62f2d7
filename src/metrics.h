/*
 * Counters and latency histograms for operators (`ember ctl metrics`, FORMAT.md 9, README
 * "Lines for machines"). One process runs one VM, so the counters are process-wide.
 * Increments are relaxed atomics, one line at the place that counts; the vCPU exit
 * counters are per vCPU, each on its own cache line, and summed on read, so that vCPU
 * threads never bounce a line between them on the exit path.
 */
#ifndef EMBER_METRICS_H
#define EMBER_METRICS_H

#include <stdint.h>

enum metric {
	M_UCALLS,                /* guest ucalls of every kind */
	M_VSOCK_CONNECTIONS,     /* vsock connections opened (either side) */
	M_VSOCK_BYTES_TO_GUEST,  /* payload bytes from host sockets into the guest */
	M_VSOCK_BYTES_TO_HOST,   /* payload bytes from the guest to host sockets */
	M_RNG_REQUESTS,          /* virtio-rng buffers filled */
	M_RNG_BYTES,             /* bytes of randomness given */
	M_SNAPSHOTS,             /* snapshots written */
	M_SNAPSHOT_FAILURES,     /* snapshots that failed */
	M_SNAPSHOT_BYTES,        /* bytes the snapshots wrote */
	M_RESETS,                /* in-place resets done */
	M__COUNT
};

enum metric_hist {
	H_SNAPSHOT_US,           /* a snapshot's duration */
	H_RESET_US,              /* an in-place reset's duration */
	H__COUNT
};

/* KVM exit reasons the vCPU loop tells apart */
enum metric_exit {
	MX_IO, MX_MMIO, MX_INTR, MX_HLT, MX_SHUTDOWN, MX_SYSTEM_EVENT, MX_INTERNAL_ERROR,
	MX_FAIL_ENTRY, MX_OTHER, MX__COUNT
};

/* bucket 0: value 0; bucket i (1..): 2^(i-1) <= value < 2^i; the last takes the rest */
#define METRICS_HIST_BUCKETS 32

struct metrics_hist_read {
	uint64_t count, sum, max;
	uint64_t buckets[METRICS_HIST_BUCKETS];
};

struct metrics_read {
	uint64_t counters[M__COUNT];
	uint64_t exits[MX__COUNT];
	uint64_t exits_total;
	struct metrics_hist_read hist[H__COUNT];
};

void metrics_add(enum metric m, uint64_t n);
/* vCPU vcpu's thread saw a KVM_RUN exit with KVM's reason (KVM_EXIT_*). */
void metrics_exit(unsigned vcpu, uint32_t kvm_exit_reason);
void metrics_observe(enum metric_hist h, uint64_t value);
/* A consistent-enough copy (each counter read once, relaxed). */
void metrics_read(struct metrics_read *out);
/* The histogram's bucket for value, and the value under which a fraction q of the
 * observations fall, as the upper bound of that bucket or the maximum seen if smaller
 * (0 when empty). */
unsigned metrics_bucket(uint64_t value);
uint64_t metrics_quantile(const struct metrics_hist_read *h, double q);
const char *metrics_name(enum metric m);
const char *metrics_exit_name(enum metric_exit x);
const char *metrics_hist_name(enum metric_hist h);
/* Unit tests: every counter back to 0. */
void metrics_clear(void);

#endif
