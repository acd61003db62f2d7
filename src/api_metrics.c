/*
 * The control socket's `metrics` verb (FORMAT.md section 9): metrics.h's counters and
 * histograms, the page server's statistics and the restore's phase times, as one flat
 * msgpack map (every key is documented in README "Lines for machines").
 */
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "metrics.h"
#include "paging/paging.h"
#include "vmm.h"

/* the start's phases (ember-timing, boot or restore), µs from the process start (or
 * EMBER_T0_NS); 0: not reached, or not a phase of this kind of start */
static const char *const phases[][2] = {
	{ "state-loaded", "phase_state_loaded_us" },
	{ "vm-created", "phase_vm_created_us" },
	{ "memory-mapped", "phase_memory_mapped_us" },
	{ "state-set", "phase_state_set_us" },
	{ "loaded", "phase_loaded_us" },
	{ "first-entry", "phase_first_entry_us" },
	{ "resumed", "phase_resumed_us" },
	{ "ready", "phase_ready_us" },
	{ "first-report", "phase_first_report_us" },
	{ "first-response", "phase_first_response_us" },
};

#define HIST_KEYS 6 /* _count _sum _max _p50 _p99 _buckets */
#define PAGER_KEYS 6

void api_metrics_pack(struct vm *vm, struct msgpack_packer *pk, bool has_id, uint64_t id)
{
	struct metrics_read m;
	struct pager_stats ps = { 0 };
	char key[64];

	metrics_read(&m);
	if (vm->pager)
		pager_stats(vm->pager, &ps);
	msgpack_pack_map(pk, 1 + (has_id ? 1 : 0) + 1 + MX__COUNT + 1 + M__COUNT +
				     H__COUNT * HIST_KEYS + PAGER_KEYS + ARRAY_SIZE(phases));
	mp_put_str(pk, "ok");
	msgpack_pack_true(pk);
	if (has_id)
		mp_put_kv_u64(pk, "id", id);
	mp_put_kv_u64(pk, "uptime_us", timing_now_us());
	mp_put_kv_u64(pk, "exits", m.exits_total);
	for (unsigned x = 0; x < MX__COUNT; x++)
		mp_put_kv_u64(pk, metrics_exit_name(x), m.exits[x]);
	for (unsigned c = 0; c < M__COUNT; c++)
		mp_put_kv_u64(pk, metrics_name(c), m.counters[c]);
	for (unsigned h = 0; h < H__COUNT; h++) {
		const struct metrics_hist_read *hr = &m.hist[h];
		const char *n = metrics_hist_name(h);

		snprintf(key, sizeof(key), "%s_count", n);
		mp_put_kv_u64(pk, key, hr->count);
		snprintf(key, sizeof(key), "%s_sum", n);
		mp_put_kv_u64(pk, key, hr->sum);
		snprintf(key, sizeof(key), "%s_max", n);
		mp_put_kv_u64(pk, key, hr->max);
		snprintf(key, sizeof(key), "%s_p50", n);
		mp_put_kv_u64(pk, key, metrics_quantile(hr, 0.5));
		snprintf(key, sizeof(key), "%s_p99", n);
		mp_put_kv_u64(pk, key, metrics_quantile(hr, 0.99));
		snprintf(key, sizeof(key), "%s_buckets", n);
		mp_put_str(pk, key);
		msgpack_pack_array(pk, METRICS_HIST_BUCKETS);
		for (unsigned b = 0; b < METRICS_HIST_BUCKETS; b++)
			msgpack_pack_uint64(pk, hr->buckets[b]);
	}
	/* the page server (uffd backend); zeros without one */
	mp_put_kv_u64(pk, "pager_faults", ps.faults);
	mp_put_kv_u64(pk, "pager_bytes_read", ps.bytes_read);
	mp_put_kv_u64(pk, "pager_pages_prefetched", ps.pages_prefetched);
	mp_put_kv_u64(pk, "pager_pages_raced", ps.pages_raced);
	mp_put_kv_u64(pk, "pager_fault_p50_ns", ps.lat_p50_ns);
	mp_put_kv_u64(pk, "pager_fault_p99_ns", ps.lat_p99_ns);
	for (unsigned i = 0; i < ARRAY_SIZE(phases); i++) {
		int64_t us = timing_get(phases[i][0]);

		mp_put_kv_u64(pk, phases[i][1], us < 0 ? 0 : (uint64_t)us);
	}
}
