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
