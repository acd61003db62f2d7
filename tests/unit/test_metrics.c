/* The metrics' counters and log2 histograms (src/metrics.c). */
#include <criterion/criterion.h>
#include <linux/kvm.h>
#include <pthread.h>

#include "metrics.h"
#include "vmm.h"

static void clear(void)
{
	metrics_clear();
}

TestSuite(metrics, .init = clear);

Test(metrics, counters_add_up)
{
	struct metrics_read m;

	metrics_add(M_UCALLS, 1);
	metrics_add(M_UCALLS, 2);
	metrics_add(M_VSOCK_BYTES_TO_HOST, 1000);
	metrics_read(&m);
	cr_assert_eq(m.counters[M_UCALLS], 3);
	cr_assert_eq(m.counters[M_VSOCK_BYTES_TO_HOST], 1000);
	cr_assert_eq(m.counters[M_SNAPSHOTS], 0);
}

Test(metrics, exits_are_counted_by_reason_and_summed_over_vcpus)
{
	struct metrics_read m;

	metrics_exit(0, KVM_EXIT_IO);
	metrics_exit(1, KVM_EXIT_IO);
	metrics_exit(VM_MAX_VCPUS - 1, KVM_EXIT_MMIO);
	metrics_exit(2, 0xdead); /* unknown: other */
	metrics_exit(VM_MAX_VCPUS, KVM_EXIT_IO); /* no such vCPU: ignored, no overflow */
	metrics_read(&m);
	cr_assert_eq(m.exits[MX_IO], 2);
	cr_assert_eq(m.exits[MX_MMIO], 1);
	cr_assert_eq(m.exits[MX_OTHER], 1);
	cr_assert_eq(m.exits_total, 4);
}

Test(metrics, buckets_are_powers_of_two)
{
	cr_assert_eq(metrics_bucket(0), 0);
	cr_assert_eq(metrics_bucket(1), 1);
	cr_assert_eq(metrics_bucket(2), 2);
	cr_assert_eq(metrics_bucket(3), 2);
	cr_assert_eq(metrics_bucket(4), 3);
	cr_assert_eq(metrics_bucket(1023), 10);
	cr_assert_eq(metrics_bucket(1024), 11);
	cr_assert_eq(metrics_bucket(UINT64_MAX), METRICS_HIST_BUCKETS - 1);
}

Test(metrics, histogram_keeps_count_sum_max_and_quantiles)
{
	struct metrics_read m;

	for (unsigned i = 0; i < 99; i++)
		metrics_observe(H_SNAPSHOT_US, 100); /* bucket 7: 64..127 */
	metrics_observe(H_SNAPSHOT_US, 5000);        /* bucket 13: 4096..8191 */
	metrics_read(&m);
	cr_assert_eq(m.hist[H_SNAPSHOT_US].count, 100);
	cr_assert_eq(m.hist[H_SNAPSHOT_US].sum, 99 * 100 + 5000);
	cr_assert_eq(m.hist[H_SNAPSHOT_US].max, 5000);
	cr_assert_eq(m.hist[H_SNAPSHOT_US].buckets[7], 99);
	cr_assert_eq(m.hist[H_SNAPSHOT_US].buckets[13], 1);
	cr_assert_eq(metrics_quantile(&m.hist[H_SNAPSHOT_US], 0.5), 127);
	cr_assert_eq(metrics_quantile(&m.hist[H_SNAPSHOT_US], 0.99), 127);
	cr_assert_eq(metrics_quantile(&m.hist[H_SNAPSHOT_US], 1.0), 5000); /* the max, not 8191 */
	cr_assert_eq(m.hist[H_RESET_US].count, 0);
	cr_assert_eq(metrics_quantile(&m.hist[H_RESET_US], 0.5), 0);
}

static void *hammer(void *arg)
{
	unsigned id = (unsigned)(uintptr_t)arg;

	for (unsigned i = 0; i < 100000; i++) {
		metrics_exit(id, KVM_EXIT_IO);
		metrics_add(M_UCALLS, 1);
		metrics_observe(H_RESET_US, i);
	}
	return NULL;
}

Test(metrics, concurrent_increments_are_not_lost)
{
	pthread_t th[4];
	struct metrics_read m;

	for (unsigned i = 0; i < 4; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, hammer, (void *)(uintptr_t)i), 0);
	for (unsigned i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	metrics_read(&m);
	cr_assert_eq(m.exits[MX_IO], 400000);
	cr_assert_eq(m.counters[M_UCALLS], 400000);
	cr_assert_eq(m.hist[H_RESET_US].count, 400000);
	cr_assert_eq(m.hist[H_RESET_US].max, 99999);
}

Test(metrics, every_metric_has_a_name)
{
	for (unsigned i = 0; i < M__COUNT; i++)
		cr_assert(metrics_name(i) && *metrics_name(i), "counter %u", i);
	for (unsigned i = 0; i < MX__COUNT; i++)
		cr_assert(metrics_exit_name(i) && *metrics_exit_name(i), "exit %u", i);
	for (unsigned i = 0; i < H__COUNT; i++)
		cr_assert(metrics_hist_name(i) && *metrics_hist_name(i), "histogram %u", i);
}
