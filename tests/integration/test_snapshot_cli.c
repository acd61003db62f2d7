/*
 * Snapshots through the ember binary, each restore in a fresh process: the golden
 * snapshot taken on ready, a snapshot taken over the control socket, and a chain of
 * restore -> snapshot -> restore cycles. The sandbox guest proves each restore is the
 * golden guest by checksumming its whole heap (`verify`); every snapshot written must
 * pass `ember-snap verify`.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

#define WAIT_MS 20000

static char tmp[PATH_MAX];
static struct proc_result r;

static void fini(void)
{
	proc_result_free(&r);
	ember_test_rmtree(tmp);
	tmp[0] = 0;
}

static void init(void)
{
	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
}

TestSuite(snapshot_cli, .init = init, .fini = fini, .timeout = 120);

static void assert_exit(const struct proc_result *res, int want, const char *what)
{
	ember_test_assert_no_crash(res);
	cr_assert_eq(res->status, want, "%s exited %d, expected %d; stdout:\n%s\nstderr:\n%s", what,
		     res->status, want, res->out, res->err);
}

/* `ember ctl ... VERB [ARG]` must answer ok. */
static void ctl_ok(const char *sock, const char *verb, const char *arg)
{
	struct proc_result c;

	snapt_ctl(&c, sock, verb, arg, NULL);
	cr_assert_eq(c.status, 0, "ember ctl %s %s exited %d:\n%s%s", verb, arg ? arg : "", c.status,
		     c.out, c.err);
	cr_assert(!strncmp(c.out, "ok\n", 3), "ember ctl %s printed:\n%s", verb, c.out);
	proc_result_free(&c);
}

/* The value of "key: VALUE" in `ember ctl status` output. */
static void status_value(const char *sock, const char *key, char *val, size_t len)
{
	struct proc_result c;
	char prefix[64], line[256];

	snapt_ctl(&c, sock, "status", NULL);
	cr_assert_eq(c.status, 0, "ember ctl status exited %d:\n%s", c.status, c.err);
	snprintf(prefix, sizeof(prefix), "%s: ", key);
	cr_assert_not_null(proc_find_line(c.out, prefix, line, sizeof(line)), "no %s in:\n%s", key,
			   c.out);
	snprintf(val, len, "%s", line + strlen(prefix));
	proc_result_free(&c);
}

static void snapshot_id(const char *dir, char *id, size_t len)
{
	struct proc_result i;
	char line[128];

	snapt_tool(&i, SNAPT_RUN_MS, "info", dir, NULL);
	assert_exit(&i, 0, "ember-snap info");
	cr_assert_not_null(proc_find_line(i.out, "id:", line, sizeof(line)), "%s", i.out);
	snprintf(id, len, "%s", line + strspn(line + 3, " ") + 3);
	proc_result_free(&i);
}

Test(snapshot_cli, restore_prints_the_golden_checksum_and_exits_0)
{
	char golden[PATH_MAX];
	uint64_t sum;

	snapt_join(golden, tmp, "golden");
	sum = snapt_golden(golden, "heap=16M seed=3", 64);
	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", golden, "--guest-cmd", "verify",
		       "--guest-cmd", "exit", NULL);
	assert_exit(&r, 0, "ember restore");
	cr_assert_eq(snapt_checksum(r.out, 0), sum, "restored heap checksum %016llx, golden %016llx",
		     (unsigned long long)snapt_checksum(r.out, 0), (unsigned long long)sum);
	cr_assert_eq(snapt_count(r.out, "checksum="), 1, "one verify, one checksum:\n%s", r.out);
	/* restore never touches the snapshot */
	snapt_verify_ok(golden);
}

/* Nothing to do is no error, but it is said: the guest asked and got nothing. */
Test(snapshot_cli, restore_without_commands_says_the_guest_got_none)
{
	char golden[PATH_MAX];

	snapt_join(golden, tmp, "golden");
	snapt_golden(golden, "heap=4M seed=3 ws=1M", 32);
	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", golden, "--console", "none", NULL);
	assert_exit(&r, 0, "ember restore");
	cr_assert(strstr(r.err, "none was given (--guest-cmd)"), "no word about the missing "
		  "commands:\n%s", r.err);
	proc_result_free(&r);
	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", golden, "--console", "none",
		       "--guest-cmd", "verify", NULL);
	assert_exit(&r, 0, "ember restore --guest-cmd verify");
	cr_assert_null(strstr(r.err, "none was given"), "warned although a command was given:\n%s",
		       r.err);
}

/* A restored guest serves the same request the same way as the guest it was cut from. */
Test(snapshot_cli, ctl_snapshot_of_a_booted_guest_restores_in_a_new_process)
{
	char sock[PATH_MAX], snap[PATH_MAX], line[128];
	struct proc *p;
	struct proc_result booted;
	uint64_t sum;

	snapt_join(sock, tmp, "api.sock");
	snapt_join(snap, tmp, "mid-run");
	p = ember_test_start("boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
			     "heap=8M seed=5", "--mem", "32", "--api-sock", sock, NULL);
	cr_assert(proc_wait_output(p, "checksum=", WAIT_MS), "the sandbox never printed its checksum");
	snapt_wait_socket(sock, WAIT_MS);
	ctl_ok(sock, "snapshot", snap);
	/* the original carries on and serves one request after the snapshot point */
	ctl_ok(sock, "guest-cmd", "serve");
	cr_assert(proc_wait_output(p, "served ", WAIT_MS), "the booted guest did not serve");
	ctl_ok(sock, "shutdown", NULL);
	cr_assert_eq(proc_finish(p, WAIT_MS, &booted), 0);
	assert_exit(&booted, 0, "ember boot");
	sum = snapt_checksum(booted.out, 0);
	snapt_verify_ok(snap);

	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", snap, "--guest-cmd", "serve",
		       "--guest-cmd", "verify", "--guest-cmd", "exit", NULL);
	assert_exit(&r, 0, "ember restore");
	cr_assert_eq(snapt_checksum(r.out, 0), sum, "restored heap differs from the booted one");
	cr_assert_not_null(proc_find_line(booted.out, "served ", line, sizeof(line)));
	cr_assert(strstr(r.out, line), "the clone served differently: booted '%s', clone:\n%s", line,
		  r.out);
	proc_result_free(&booted);
}

/*
 * One restore -> snapshot cycle on an ember started from prev: verify the heap, check
 * what `status` reports, snapshot into next (ctl_flag: NULL or "--compress"), shut down.
 */
static void cycle(unsigned i, const char *prev, const char *next, const char *backend,
		  const char *ctl_flag, uint64_t golden_sum, uint64_t *prev_gen)
{
	char sock[PATH_MAX], val[128], id[64];
	struct proc_result c;
	struct proc *p;
	uint64_t gen;

	snapt_join(sock, tmp, "api%u.sock", i);
	p = backend ? ember_test_start("restore", "--snapshot", prev, "--mem-backend", backend,
				       "--api-sock", sock, "--guest-cmd", "verify", NULL)
		    : ember_test_start("restore", "--snapshot", prev, "--api-sock", sock,
				       "--guest-cmd", "verify", NULL);
	cr_assert(proc_wait_output(p, "checksum=", WAIT_MS), "cycle %u: no checksum", i);
	snapt_wait_socket(sock, WAIT_MS);

	/* the process knows what it was restored from and has a fresh generation */
	snapshot_id(prev, id, sizeof(id));
	status_value(sock, "last_snapshot", val, sizeof(val));
	cr_assert_str_eq(val, id, "cycle %u: last_snapshot", i);
	status_value(sock, "generation", val, sizeof(val));
	gen = strtoull(val, NULL, 16); /* 16 hex digits, as the guest prints it */
	cr_assert_neq(gen, 0, "cycle %u: generation 0 after a restore", i);
	cr_assert_neq(gen, *prev_gen, "cycle %u: same generation as the previous cycle", i);
	*prev_gen = gen;

	snapt_ctl(&c, sock, "snapshot", next, ctl_flag, NULL);
	cr_assert_eq(c.status, 0, "cycle %u: ember ctl snapshot %s: %s", i, ctl_flag ? ctl_flag : "",
		     c.err);
	proc_result_free(&c);
	ctl_ok(sock, "shutdown", NULL);
	cr_assert_eq(proc_finish(p, WAIT_MS, &r), 0);
	assert_exit(&r, 0, "ember restore");
	cr_assert_eq(snapt_checksum(r.out, 0), golden_sum,
		     "cycle %u (%s): heap checksum %016llx, golden %016llx", i,
		     backend ? backend : "default backend",
		     (unsigned long long)snapt_checksum(r.out, 0), (unsigned long long)golden_sum);
	proc_result_free(&r);
	snapt_verify_ok(next);
}

Test(snapshot_cli, five_chained_restore_snapshot_cycles_keep_the_golden_heap)
{
	char prev[PATH_MAX], next[PATH_MAX];
	uint64_t golden_sum, gen = 0;

	snapt_join(prev, tmp, "golden");
	golden_sum = snapt_golden(prev, "heap=16M", 64);
	for (unsigned i = 1; i <= 5; i++) {
		snapt_join(next, tmp, "cycle%u", i);
		cycle(i, prev, next, NULL, NULL, golden_sum, &gen);
		snprintf(prev, sizeof(prev), "%s", next);
	}
	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", prev, "--guest-cmd", "verify",
		       "--guest-cmd", "exit", NULL);
	assert_exit(&r, 0, "the last restore");
	cr_assert_eq(snapt_checksum(r.out, 0), golden_sum);
}

/*
 * The same chain through every memory backend and both encodings: a VM restored lazily
 * (uffd: most pages never faulted in) must still snapshot every page.
 */
Test(snapshot_cli, chained_cycles_across_memory_backends_and_encodings)
{
	static const struct { const char *backend, *ctl_flag; } steps[] = {
		{ "uffd", "--compress" }, /* raw -> lz4 */
		{ "uffd", NULL },         /* lz4 -> raw */
		{ "eager", "--compress" },
		{ "eager", NULL },
		{ "mmap", NULL },
	};
	char prev[PATH_MAX], next[PATH_MAX];
	uint64_t golden_sum, gen = 0;

	snapt_join(prev, tmp, "golden");
	golden_sum = snapt_golden(prev, "heap=16M seed=4", 64);
	for (unsigned i = 0; i < ARRAY_SIZE(steps); i++) {
		snapt_join(next, tmp, "step%u", i);
		cycle(i + 1, prev, next, steps[i].backend, steps[i].ctl_flag, golden_sum, &gen);
		snprintf(prev, sizeof(prev), "%s", next);
	}
}

Test(snapshot_cli, every_memory_backend_restores_the_golden_heap)
{
	static const struct { bool lz4; const char *backend; } runs[] = {
		{ false, "mmap" }, { false, "eager" }, { false, "uffd" },
		{ true, "uffd" },  { true, "eager" },
	};
	char raw[PATH_MAX], lz4[PATH_MAX];
	uint64_t sum, sum_lz4;

	snapt_join(raw, tmp, "raw");
	snapt_join(lz4, tmp, "lz4");
	sum = snapt_golden(raw, "heap=16M seed=6", 64);
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
		       "heap=16M seed=6", "--mem", "64", "--snapshot-on-ready", lz4,
		       "--exit-after-snapshot", "--compress", NULL);
	assert_exit(&r, 0, "ember boot --compress");
	sum_lz4 = snapt_checksum(r.out, 0);
	proc_result_free(&r);
	cr_assert_eq(sum_lz4, sum, "the same (heap, seed) built another heap");
	snapt_verify_ok(lz4);

	for (unsigned i = 0; i < ARRAY_SIZE(runs); i++) {
		ember_test_run(&r, WAIT_MS, "restore", "--snapshot", runs[i].lz4 ? lz4 : raw,
			       "--mem-backend", runs[i].backend, "--guest-cmd", "verify",
			       "--guest-cmd", "exit", NULL);
		assert_exit(&r, 0, runs[i].backend);
		cr_assert_eq(snapt_checksum(r.out, 0), sum, "%s %s: checksum %016llx, golden %016llx",
			     runs[i].lz4 ? "lz4" : "raw", runs[i].backend,
			     (unsigned long long)snapt_checksum(r.out, 0), (unsigned long long)sum);
		proc_result_free(&r);
	}
	/* a compressed file cannot be mapped: refused, naming the way out */
	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", lz4, "--mem-backend", "mmap", NULL);
	assert_exit(&r, 1, "mmap of an lz4 snapshot");
	cr_assert(strstr(r.err, "uffd"), "%s", r.err);
}

/* An AP that never got its SIPI is saved and restored waiting for it. */
Test(snapshot_cli, two_vcpu_golden_with_an_ap_waiting_for_sipi_restores)
{
	char golden[PATH_MAX], line[128];

	snapt_join(golden, tmp, "golden");
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
		       "heap=4M ws=64K seed=8", "--mem", "16", "--vcpus", "2", "--snapshot-on-ready",
		       golden, "--exit-after-snapshot", NULL);
	assert_exit(&r, 0, "ember boot --vcpus 2");
	snapt_checksum(r.out, 0);
	proc_result_free(&r);
	snapt_verify_ok(golden);
	snapt_tool(&r, SNAPT_RUN_MS, "dump", golden, NULL);
	cr_assert_not_null(proc_find_line(r.out, "vcpus[1].mp_state = ", line, sizeof(line)), "%s",
			   r.out);
	cr_assert_str_eq(line, "vcpus[1].mp_state = 1", "the AP should wait for SIPI "
			 "(KVM_MP_STATE_UNINITIALIZED)");
	proc_result_free(&r);
	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", golden, "--guest-cmd", "verify",
		       "--guest-cmd", "exit", NULL);
	assert_exit(&r, 0, "ember restore of 2 vCPUs");
	snapt_checksum(r.out, 0);
}

/*
 * A guest caught in the middle of a ring-3 loop (the control socket kicks the vCPU out of
 * KVM_RUN) resumes the loop: it neither faults nor resets; only the timeout stops it.
 */
Test(snapshot_cli, guest_snapshotted_mid_loop_resumes_the_loop)
{
	char sock[PATH_MAX], snap[PATH_MAX];
	struct proc *p;
	struct proc_result booted;

	snapt_join(sock, tmp, "api.sock");
	snapt_join(snap, tmp, "spinning");
	p = ember_test_start("boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
			     "heap=4M ws=64K", "--mem", "16", "--api-sock", sock, "--guest-cmd", "spin",
			     NULL);
	cr_assert(proc_wait_output(p, "spinning", WAIT_MS), "the guest never started spinning");
	snapt_wait_socket(sock, WAIT_MS);
	ctl_ok(sock, "snapshot", snap);
	ctl_ok(sock, "shutdown", NULL);
	cr_assert_eq(proc_finish(p, WAIT_MS, &booted), 0);
	assert_exit(&booted, 0, "ember boot");
	proc_result_free(&booted);
	snapt_verify_ok(snap);

	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", snap, "--timeout", "0.3", NULL);
	assert_exit(&r, 124, "the restored spinner");
	cr_assert_str_eq(r.out, "", "the restored guest should only spin:\n%s", r.out);
}
