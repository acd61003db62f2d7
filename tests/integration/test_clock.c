/*
 * What a guest's clocks do across a snapshot, on the real KVM, with the clock guest
 * (tests/guest/clock.c): it registers a kvmclock page, reads kvmclock and the TSC right
 * before the ready point (where `ember boot --snapshot-on-ready` takes the golden
 * snapshot) and right after it (where a restored clone resumes), and prints both gaps.
 * A clone restored seconds after its snapshot must not see those seconds in kvmclock
 * (Linux's CLOCK_MONOTONIC and sched_clock): ember restores kvmclock to its saved value.
 * Both clocks must stay monotonic, which the guest asserts.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "testlib.h"

#define GAP_S 5
/* "far less than the gap": a restore takes milliseconds, even under sanitizers */
#define MAX_DELTA_US 1000000u

static char tmp[PATH_MAX];

static void setup(void)
{
	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
}

static void teardown(void)
{
	ember_test_kill_strays(tmp);
	ember_test_rmtree(tmp);
}

TestSuite(clock, .init = setup, .fini = teardown, .timeout = 120);

struct clock_seen {
	uint64_t delta_us, tsc_delta, stopped, stable;
};

static void golden(const char *dir)
{
	struct proc_result r;

	ember_test_run(&r, SNAPT_RUN_MS, "boot", "--kernel", ember_test_guest("clock"),
		       "--cmdline", "check_ms=200", "--snapshot-on-ready", dir,
		       "--exit-after-snapshot", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "boot: %s%s", r.out, r.err);
	proc_result_free(&r);
	snapt_verify_ok(dir);
}

/* Parses the guest's report line; asserts it finished and stayed monotonic. */
static void parse_clock(const struct proc_result *r, struct clock_seen *s, const char *what)
{
	char line[256];

	ember_test_assert_no_crash(r);
	cr_assert_eq(r->status, 0, "%s exited %d:\n%s%s", what, r->status, r->out, r->err);
	cr_assert_not_null(proc_find_line(r->out, "clock: kvmclock_delta_us=", line, sizeof(line)),
			   "%s: no clock line in:\n%s", what, r->out);
	cr_assert_eq(proc_line_u64(line, "kvmclock_delta_us", &s->delta_us), 0, "%s", line);
	cr_assert_eq(proc_line_u64(line, "tsc_delta", &s->tsc_delta), 0, "%s", line);
	cr_assert_eq(proc_line_u64(line, "stopped", &s->stopped), 0, "%s", line);
	cr_assert_eq(proc_line_u64(line, "stable", &s->stable), 0, "%s", line);
	cr_assert_not_null(strstr(r->out, "clock: monotonic reads="), "%s:\n%s", what, r->out);
	cr_log_info("%s: %s", what, line);
}

static void restore(const char *dir, struct clock_seen *s, const char *what)
{
	struct proc_result r;

	ember_test_run(&r, SNAPT_RUN_MS, "restore", "--snapshot", dir, NULL);
	parse_clock(&r, s, what);
	proc_result_free(&r);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * The golden snapshot as ember writes it, and a copy whose vm.clock says what ember
 * wrote before (KVM_CLOCK_REALTIME alone, meant for KVM_SET_CLOCK): both verify, and
 * both restore GAP_S seconds later without the gap in kvmclock.
 */
Test(clock, a_clone_restored_seconds_later_does_not_see_them_in_kvmclock)
{
	char g[PATH_MAX], old[PATH_MAX];
	struct clock_seen now, before;
	struct snapmut *m;
	uint64_t t0;

	snapt_join(g, tmp, "golden");
	snapt_join(old, tmp, "golden-realtime");
	golden(g);
	t0 = mono_ms();
	snapt_copy_dir(g, old, true);
	m = snapmut_load(old);
	snapmut_set_u64(m, "vm.clock.flags", KVM_CLOCK_REALTIME);
	snapmut_save(m, old);
	snapmut_free(m);
	snapt_verify_ok(old);
	while (mono_ms() - t0 < GAP_S * 1000)
		usleep(100 * 1000);
	restore(g, &now, "restore");
	restore(old, &before, "restore of a snapshot with KVM_CLOCK_REALTIME");
	cr_expect_lt(now.delta_us, MAX_DELTA_US, "kvmclock jumped %llu us across a %u s gap",
		     (unsigned long long)now.delta_us, GAP_S);
	cr_expect_lt(before.delta_us, MAX_DELTA_US, "with KVM_CLOCK_REALTIME in the snapshot: "
		     "kvmclock jumped %llu us across a %u s gap", (unsigned long long)before.delta_us,
		     GAP_S);
}

static void parse_stops(const char *out, uint64_t *stops)
{
	char line[256];

	cr_assert_not_null(proc_find_line(out, "clock: monotonic reads=", line, sizeof(line)),
			   "no monotonic line in:\n%s", out);
	cr_assert_eq(proc_line_u64(line, "stops", stops), 0, "%s", line);
}

/* KVM_KVMCLOCK_CTRL: a restored clone finds PVCLOCK_GUEST_STOPPED in its kvmclock page
 * (Linux then excuses the pause instead of reporting a soft lockup), and so does the
 * booted VM that goes on after its golden snapshot; a booted VM that never stopped
 * does not. */
Test(clock, a_restored_clone_is_told_it_was_stopped)
{
	char g[PATH_MAX], g2[PATH_MAX];
	struct clock_seen s;
	struct proc_result r;

	snapt_join(g, tmp, "golden");
	golden(g);
	restore(g, &s, "restore");
	cr_assert_eq(s.stopped, 1, "no PVCLOCK_GUEST_STOPPED after the restore");

	snapt_join(g2, tmp, "golden-go-on");
	ember_test_run(&r, SNAPT_RUN_MS, "boot", "--kernel", ember_test_guest("clock"),
		       "--cmdline", "check_ms=50", "--snapshot-on-ready", g2, NULL);
	parse_clock(&r, &s, "boot going on after its snapshot");
	proc_result_free(&r);
	cr_assert_eq(s.stopped, 1, "the VM that went on after its snapshot was not told it stood "
		     "still");

	ember_test_run(&r, SNAPT_RUN_MS, "boot", "--kernel", ember_test_guest("clock"),
		       "--cmdline", "check_ms=50", NULL);
	parse_clock(&r, &s, "boot");
	proc_result_free(&r);
	cr_assert_eq(s.stopped, 0, "a booted VM that never stopped was told it was");
}

/* Paused for a while over the control socket and resumed: the guest notices a stop. */
Test(clock, a_paused_and_resumed_vm_is_told_it_was_stopped)
{
	char sock[PATH_MAX];
	struct proc_result r, c;
	struct proc *p;
	uint64_t stops;

	snapt_join(sock, tmp, "api.sock");
	p = ember_test_start("boot", "--kernel", ember_test_guest("clock"), "--cmdline",
			     "check_ms=3000", "--api-sock", sock, NULL);
	cr_assert(proc_wait_output(p, "clock: kvmclock_delta_us=", SNAPT_RUN_MS));
	snapt_wait_socket(sock, SNAPT_RUN_MS);
	snapt_ctl(&c, sock, "pause", NULL);
	cr_assert_eq(c.status, 0, "pause: %s%s", c.out, c.err);
	proc_result_free(&c);
	usleep(300 * 1000);
	snapt_ctl(&c, sock, "resume", NULL);
	cr_assert_eq(c.status, 0, "resume: %s%s", c.out, c.err);
	proc_result_free(&c);
	cr_assert_eq(proc_finish(p, SNAPT_RUN_MS, &r), 0);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	parse_stops(r.out, &stops);
	proc_result_free(&r);
	cr_assert_geq(stops, 1, "the guest never found PVCLOCK_GUEST_STOPPED after a pause");
}
