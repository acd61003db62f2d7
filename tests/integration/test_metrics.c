/*
 * `ember ctl metrics` on a real restored VM (FORMAT.md 9, README "Lines for machines"):
 * after an invocation over vsock and a snapshot, the counters an operator watches are
 * non-zero, and they grow with more work. Read through `ember ctl metrics --json` and
 * parsed by jq, as a monitoring script would.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testlib.h"

#define HEAP_MIB 4
#define MEM_MIB  32
#define FN_PORT  5000

static char tmp[PATH_MAX], uds[PATH_MAX], sock[PATH_MAX];
static struct fnt_golden golden;
static struct proc *vmm;

static void setup(void)
{
	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	fnt_golden(&golden, tmp, HEAP_MIB, MEM_MIB);
	snapt_join(uds, tmp, "vm.sock");
	snapt_join(sock, tmp, "api.sock");
}

static void teardown(void)
{
	if (vmm) {
		struct proc_result r;

		proc_finish(vmm, 1, &r);
		proc_result_free(&r);
		vmm = NULL;
	}
	fnt_golden_free(&golden);
	ember_test_kill_strays(tmp);
	ember_test_rmtree(tmp);
}

TestSuite(metrics_live, .init = setup, .fini = teardown, .timeout = 120);

#define NR_KEYS 8
static const char *const keys[NR_KEYS] = {
	"exits", "exits_io", "ucalls", "vsock_connections", "vsock_bytes_to_host",
	"vsock_bytes_to_guest", "snapshots", "snapshot_us_count",
};

/* `ember ctl metrics --json`, the keys above picked out by jq */
static void read_metrics(uint64_t v[NR_KEYS])
{
	char filter[512] = "[", *p;
	char *jq[] = { "/usr/bin/jq", "-r", filter, NULL };
	struct proc_result r, q;

	for (unsigned i = 0; i < NR_KEYS; i++)
		snprintf(filter + strlen(filter), sizeof(filter) - strlen(filter), "%s.%s",
			 i ? "," : "", keys[i]);
	strcat(filter, "] | @tsv");
	snapt_ctl(&r, sock, "--json", "metrics", NULL);
	cr_assert_eq(r.status, 0, "ember ctl metrics --json: %s", r.err);
	cr_assert_eq(proc_run_input(jq, r.out, r.out_len, 10000, &q), 0);
	cr_assert_eq(q.status, 0, "jq rejected %s: %s", r.out, q.err);
	p = q.out;
	for (unsigned i = 0; i < NR_KEYS; i++) {
		char *end;

		v[i] = strtoull(p, &end, 10);
		cr_assert(end != p, "no number for %s in jq's %s (from %s)", keys[i], q.out, r.out);
		p = end;
	}
	proc_result_free(&q);
	proc_result_free(&r);
}

static void invoke_once(uint64_t id)
{
	uint8_t payload[4096];
	int fd = fnt_connect(uds, FN_PORT);

	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i * 7 + id);
	fnt_invoke_check(&golden, fd, id, payload, sizeof(payload));
	close(fd);
}

static void snapshot(const char *name)
{
	char dir[PATH_MAX];
	struct proc_result r;

	snapt_join(dir, tmp, "%s", name);
	snapt_ctl(&r, sock, "snapshot", dir, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	proc_result_free(&r);
}

Test(metrics_live, counters_move_with_invocations_and_snapshots)
{
	uint64_t a[NR_KEYS], b[NR_KEYS];

	vmm = fnt_restore(golden.dir, uds, "--api-sock", sock, NULL);
	snapt_wait_socket(sock, 20000);
	invoke_once(1);
	snapshot("s1");
	read_metrics(a);
	for (unsigned i = 0; i < NR_KEYS; i++)
		cr_assert_gt(a[i], 0, "%s is 0 after an invocation and a snapshot", keys[i]);
	cr_assert_eq(a[6], 1, "snapshots: %lu", (unsigned long)a[6]);

	invoke_once(2);
	snapshot("s2");
	read_metrics(b);
	for (unsigned i = 0; i < NR_KEYS; i++)
		cr_assert_gt(b[i], a[i], "%s did not grow: %lu then %lu", keys[i],
			     (unsigned long)a[i], (unsigned long)b[i]);
	cr_assert_eq(b[6], 2);
	/* fn's answer is the payload plus an 8-byte digest, each way at least the payload */
	cr_assert_geq(b[4] - a[4], 4096);
	cr_assert_geq(b[5] - a[5], 4096 + 8);
}

Test(metrics_live, text_form_is_one_key_value_line)
{
	struct proc_result r;
	uint64_t v;
	char line[8192];

	vmm = fnt_restore(golden.dir, uds, "--api-sock", sock, NULL);
	snapt_wait_socket(sock, 20000);
	invoke_once(1);
	snapt_ctl(&r, sock, "metrics", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(proc_find_line(r.out, "ember-metrics ", line, sizeof(line)), "%s", r.out);
	cr_assert_eq(strchr(r.out, '\n') - r.out, (long)strlen(line), "more than one line: %s", r.out);
	cr_assert_eq(proc_line_u64(line, "ucalls", &v), 0, "%s", line);
	cr_assert_gt(v, 0);
	cr_assert_eq(proc_line_u64(line, "phase_resumed_us", &v), 0, "%s", line);
	cr_assert_gt(v, 0, "the restore's phase times are missing");
	cr_assert(strstr(line, " snapshot_us_buckets=0,0,0,"), "%s", line);
	proc_result_free(&r);
}

/* one numeric field of `ember ctl metrics --json`, by jq */
static uint64_t metric(const char *key)
{
	char filter[64];
	char *jq[] = { "/usr/bin/jq", "-r", filter, NULL };
	struct proc_result r, q;
	uint64_t v;
	char *end;

	snprintf(filter, sizeof(filter), ".%s", key);
	snapt_ctl(&r, sock, "--json", "metrics", NULL);
	cr_assert_eq(r.status, 0, "ember ctl metrics --json: %s", r.err);
	cr_assert_eq(proc_run_input(jq, r.out, r.out_len, 10000, &q), 0);
	cr_assert_eq(q.status, 0, "jq: %s", q.err);
	v = strtoull(q.out, &end, 10);
	cr_assert(end != q.out, "%s is not a number in %s", key, r.out);
	proc_result_free(&q);
	proc_result_free(&r);
	return v;
}

Test(metrics_live, page_server_and_reset_metrics_move)
{
	struct proc_result r;
	uint64_t faults, bytes;

	vmm = fnt_restore(golden.dir, uds, "--api-sock", sock, "--mem-backend", "uffd", NULL);
	snapt_wait_socket(sock, 20000);
	invoke_once(1);
	faults = metric("pager_faults");
	bytes = metric("pager_bytes_read");
	cr_assert_gt(faults, 0, "no page-server faults with --mem-backend uffd");
	cr_assert_gt(bytes, 0);
	cr_assert_eq(metric("resets"), 0);
	snapt_ctl(&r, sock, "reset", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	proc_result_free(&r);
	invoke_once(2); /* after a reset the pages come from the snapshot again */
	cr_assert_gt(metric("pager_faults"), faults);
	cr_assert_eq(metric("resets"), 1);
	cr_assert_eq(metric("reset_us_count"), 1);
	cr_assert_gt(metric("reset_us_max"), 0);
}
