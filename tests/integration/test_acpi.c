/*
 * ACPI and the VMGenID on real KVM, with the acpi guest (tests/guest/acpi.c): the guest
 * finds the RSDP, checks every table, takes the VMGenID address and the GED's interrupt
 * from the DSDT, routes that interrupt to a counting handler and prints the 16-byte ID
 * (and the count) before and after its ready point. Every restored clone and every
 * in-place reset must see a new ID, different from the snapshot's and from every other
 * clone's, and exactly one GED interrupt, before it runs on.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "testlib.h"

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

TestSuite(acpi, .init = setup, .fini = teardown, .timeout = 120);

struct id_seen {
	uint64_t lo, hi, notified;
};

/* The n-th (from 0) "vmgenid: when=<when>" line of out. */
static struct id_seen id_line(const char *out, const char *when, unsigned n)
{
	char needle[64], line[256];
	const char *p = out;
	struct id_seen s;
	size_t len;

	snprintf(needle, sizeof(needle), "vmgenid: when=%s ", when);
	for (unsigned i = 0; i <= n; i++, p++) {
		p = strstr(p, needle);
		cr_assert_not_null(p, "no line %u '%s' in:\n%s", n, needle, out);
	}
	p--;
	len = strcspn(p, "\n");
	cr_assert_lt(len, sizeof(line));
	memcpy(line, p, len);
	line[len] = 0;
	cr_assert_eq(proc_line_u64(line, "id_lo", &s.lo), 0, "%s", line);
	cr_assert_eq(proc_line_u64(line, "id_hi", &s.hi), 0, "%s", line);
	cr_assert_eq(proc_line_u64(line, "notified", &s.notified), 0, "%s", line);
	cr_log_info("%s", line);
	return s;
}

static bool same_id(struct id_seen a, struct id_seen b)
{
	return a.lo == b.lo && a.hi == b.hi;
}

static void assert_ran(const struct proc_result *r, const char *what)
{
	ember_test_assert_no_crash(r);
	cr_assert_eq(r->status, 0, "%s exited %d:\n%s%s", what, r->status, r->out, r->err);
}

/* Boots the guest to its golden snapshot; returns the ID it saw before it. */
static struct id_seen golden(const char *dir)
{
	struct proc_result r;
	struct id_seen s;

	ember_test_run(&r, SNAPT_RUN_MS, "boot", "--kernel", ember_test_guest("acpi"),
		       "--snapshot-on-ready", dir, "--exit-after-snapshot", NULL);
	assert_ran(&r, "boot");
	s = id_line(r.out, "boot", 0);
	proc_result_free(&r);
	return s;
}

Test(acpi, a_booted_guest_finds_every_table_and_a_non_zero_vmgenid)
{
	struct proc_result r;
	uint64_t v;
	char line[256];
	struct id_seen s;

	ember_test_run(&r, SNAPT_RUN_MS, "boot", "--kernel", ember_test_guest("acpi"), "--vcpus",
		       "3", "--guest-cmd", "exit", NULL);
	assert_ran(&r, "boot");
	cr_assert_not_null(proc_find_line(r.out, "acpi: rsdp=", line, sizeof(line)), "%s", r.out);
	cr_assert_eq(proc_line_u64(line, "tables", &v), 0);
	cr_assert_eq(v, 4, "XSDT, FADT, MADT and DSDT: %s", line);
	cr_assert_eq(proc_line_u64(line, "lapics", &v), 0);
	cr_assert_eq(v, 3, "one local APIC per vCPU: %s", line);
	cr_assert_eq(proc_line_u64(line, "vmgenid", &v), 0);
	cr_assert_eq(v, 0xe4000, "%s", line);
	s = id_line(r.out, "boot", 0);
	cr_assert(s.lo || s.hi, "the VMGenID is zero at boot");
	cr_assert_eq(s.notified, 0, "a GED interrupt at boot");
	/* a VM that was never restored keeps its ID across its ready point */
	cr_assert(same_id(s, id_line(r.out, "ready", 0)));
	proc_result_free(&r);
}

Test(acpi, every_restored_clone_gets_its_own_vmgenid_and_one_notify_interrupt)
{
	char g[PATH_MAX];
	struct id_seen snap, c[2];
	struct proc_result r;

	snapt_join(g, tmp, "golden");
	snap = golden(g);
	for (unsigned i = 0; i < 2; i++) {
		ember_test_run(&r, SNAPT_RUN_MS, "restore", "--snapshot", g, "--guest-cmd", "id",
			       "--guest-cmd", "exit", NULL);
		assert_ran(&r, "restore");
		c[i] = id_line(r.out, "ready", 0);
		cr_assert(same_id(c[i], id_line(r.out, "cmd", 0)), "the ID changed while running");
		proc_result_free(&r);
		cr_assert(!same_id(c[i], snap), "clone %u kept the snapshot's VMGenID", i);
		cr_assert_eq(c[i].notified, 1, "clone %u: %llu GED interrupts before it ran on", i,
			     (unsigned long long)c[i].notified);
	}
	cr_assert(!same_id(c[0], c[1]), "two clones share a VMGenID");
}

Test(acpi, an_in_place_reset_changes_the_vmgenid_and_notifies_again)
{
	char g[PATH_MAX], sock[PATH_MAX];
	struct id_seen snap, first, again;
	struct proc_result r, c;
	struct proc *p;

	snapt_join(g, tmp, "golden");
	snapt_join(sock, tmp, "api.sock");
	snap = golden(g);
	p = ember_test_start("restore", "--snapshot", g, "--api-sock", sock, NULL);
	cr_assert(proc_wait_output(p, "vmgenid: when=ready", SNAPT_RUN_MS));
	snapt_wait_socket(sock, SNAPT_RUN_MS);
	snapt_ctl(&c, sock, "reset", NULL);
	cr_assert_eq(c.status, 0, "reset: %s%s", c.out, c.err);
	proc_result_free(&c);
	snapt_ctl(&c, sock, "guest-cmd", "exit", NULL);
	cr_assert_eq(c.status, 0, "guest-cmd: %s%s", c.out, c.err);
	proc_result_free(&c);
	cr_assert_eq(proc_finish(p, SNAPT_RUN_MS, &r), 0);
	assert_ran(&r, "restore + reset");
	first = id_line(r.out, "ready", 0);
	again = id_line(r.out, "ready", 1);
	proc_result_free(&r);
	cr_assert(!same_id(first, snap) && !same_id(again, snap), "the snapshot's ID came back");
	cr_assert(!same_id(first, again), "the reset kept the VMGenID");
	/* the handler's count lives in guest memory: the reset reverted it, then one more */
	cr_assert_eq(again.notified, 1, "%llu GED interrupts after the reset",
		     (unsigned long long)again.notified);
}
