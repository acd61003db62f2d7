/*
 * The KVM calls ember makes to restore, reset and pause a VM: their order and their
 * arguments, recorded by a link-time wrapper around ioctl (tests/wrap/ioctl_rec.c) that
 * passes every call on to the real KVM. The VM is the clock guest (it registers a
 * kvmclock page on vCPU 0; vCPU 1 never starts), snapshotted in-process at its ready
 * point, restored from the directory as `ember restore` does.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "arch/x86_64/x86.h"
#include "ioctl_rec.h"
#include "snapfmt.h"
#include "testlib.h"

#define NR_VCPUS 2

static struct {
	char tmp[PATH_MAX];
	char dir[PATH_MAX];
	struct vm *vm;
	struct snap_state golden;
	bool have_golden;
} fx;

static void fx_init(void)
{
	ember_test_require_kvm();
	ember_test_tmpdir(fx.tmp, sizeof(fx.tmp));
	snapt_join(fx.dir, fx.tmp, "golden");
}

static void fx_fini(void)
{
	iorec_stop();
	iorec_set_hook(NULL, NULL);
	iorec_fail(0, 0);
	vm_destroy(fx.vm);
	if (fx.have_golden)
		snap_state_free(&fx.golden);
	ember_test_rmtree(fx.tmp);
	memset(&fx, 0, sizeof(fx));
}

TestSuite(kvm_calls, .init = fx_init, .fini = fx_fini, .timeout = 120);

static void base_config(struct vm_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->console = CONSOLE_NONE;
	cfg->timeout_ms = 20000;
	cfg->dirty_tracking = true; /* an in-place reset needs it */
}

/* Boots the clock guest with nr vCPUs, snapshots it at ready into fx.dir. */
static void make_golden(unsigned nr)
{
	struct snapshot_opts o = { .diff = false };
	struct snapshot_stats ss;
	struct errbuf eb = { "" };
	struct snap_err se = { "" };
	struct vm_config cfg;
	enum vm_stop_reason why;
	struct vm *vm;

	base_config(&cfg);
	cfg.mem_bytes = 16 * MiB;
	cfg.nr_vcpus = nr;
	cfg.kernel = ember_test_guest("clock");
	cfg.cmdline = "check_ms=20";
	cfg.stop_on_ready = true;
	cr_assert_eq(vm_create(&vm, &cfg, &eb), 0, "%s", eb.msg);
	cr_assert_eq(vm_boot_load(vm, &eb), 0, "%s", eb.msg);
	why = vm_run(vm);
	cr_assert_eq(why, VM_STOP_READY, "boot stopped with %s: %s", vm_stop_reason_name(why),
		     vm->stop_msg);
	cr_assert_eq(vm_snapshot_save(vm, fx.dir, &o, &ss, &eb), 0, "%s", eb.msg);
	vm_destroy(vm);
	cr_assert_eq(snap_state_load(fx.dir, &fx.golden, &se), 0, "%s", se.msg);
	fx.have_golden = true;
}

static struct vm *restore_golden(void)
{
	struct errbuf eb = { "" };
	struct vm_config cfg;
	struct vm *vm;

	base_config(&cfg);
	cr_assert_eq(vm_restore(&vm, &cfg, fx.dir, &eb), 0, "%s", eb.msg);
	return vm;
}

/* fx.vm = a restore of the golden snapshot, its KVM calls recorded. */
static void recorded_restore(void)
{
	iorec_start();
	fx.vm = restore_golden();
	iorec_stop();
}

/* An in-place reset of fx.vm (paused: vm_run returned), its KVM calls recorded. */
static void recorded_reset(void)
{
	struct reset_stats rs;
	struct errbuf eb = { "" };

	iorec_start();
	cr_assert_eq(vm_reset(fx.vm, &rs, &eb), 0, "%s", eb.msg);
	iorec_stop();
}

static void run_to_done(struct vm *vm)
{
	enum vm_stop_reason why = vm_run(vm);

	cr_assert_eq(why, VM_STOP_DONE, "stopped with %s: %s", vm_stop_reason_name(why),
		     vm->stop_msg);
}

/* The golden snapshot restored, then reset in place, each recorded and checked by check;
 * the guest runs to its end after each. */
static void check_restore_and_reset(void (*check)(const struct vm *vm, const char *what))
{
	recorded_restore();
	check(fx.vm, "restore");
	run_to_done(fx.vm);
	recorded_reset();
	check(fx.vm, "reset");
	run_to_done(fx.vm);
}

static const char *name(unsigned long req)
{
	static char buf[8][32];
	static unsigned n;

	return iorec_name(req, buf[n++ % 8], sizeof(buf[0]));
}

static const unsigned long vcpu_sets[] = {
	KVM_SET_CPUID2, KVM_SET_MP_STATE, KVM_SET_REGS, KVM_SET_SREGS, KVM_SET_XSAVE,
	KVM_SET_XCRS, KVM_SET_DEBUGREGS, KVM_SET_LAPIC, KVM_SET_MSRS, KVM_SET_VCPU_EVENTS,
};

static bool is_vcpu_set(unsigned long req)
{
	for (unsigned i = 0; i < ARRAY_SIZE(vcpu_sets); i++)
		if (vcpu_sets[i] == req)
			return true;
	return false;
}

static int vcpu_of_fd(const struct vm *vm, int fd)
{
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		if (vm->vcpus[i].fd == fd)
			return (int)i;
	return -1;
}

/* Index of the last state-setting ioctl on any vCPU, -1 when none. */
static int last_vcpu_set(const struct vm *vm)
{
	int last = -1;

	for (unsigned i = 0; i < iorec_count(); i++) {
		const struct iorec_call *c = iorec_get(i);

		if (is_vcpu_set(c->req) && vcpu_of_fd(vm, c->fd) >= 0)
			last = (int)i;
	}
	return last;
}

/*
 * The VM-wide state (PIT, kvmclock, the PICs and the IOAPIC) is set only once every vCPU
 * is: KVM delivers what the saved IOAPIC/PIC hold pending as soon as they are set, and a
 * LAPIC still in its reset state would take it, to be overwritten by SET_LAPIC.
 */
static void assert_vcpus_before_vm_state(const struct vm *vm, const char *what)
{
	int last = last_vcpu_set(vm);
	static const unsigned long vm_sets[] = { KVM_SET_PIT2, KVM_SET_CLOCK, KVM_SET_IRQCHIP };

	cr_assert_geq(last, 0, "%s: no vCPU state was set", what);
	cr_assert_eq(iorec_count_of(KVM_SET_IRQCHIP, vm->kvm.vm_fd), 3, "%s: irqchips set", what);
	for (unsigned v = 0; v < vm->nr_vcpus; v++)
		cr_assert_eq(iorec_count_of(KVM_SET_LAPIC, vm->vcpus[v].fd), 1,
			     "%s: vCPU %u's LAPIC set once", what, v);
	for (unsigned k = 0; k < ARRAY_SIZE(vm_sets); k++) {
		int first = iorec_first(vm_sets[k], vm->kvm.vm_fd, 0);

		cr_assert_geq(first, 0, "%s: no %s", what, name(vm_sets[k]));
		cr_assert_gt(first, last, "%s: %s (call %d) before the last vCPU state call "
			     "(%s, call %d)", what, name(vm_sets[k]), first,
			     name(iorec_get((unsigned)last)->req), last);
	}
}

/* The state-setting calls of the recording, as (vCPU index or -1 for the VM, request). */
static unsigned state_sequence(const struct vm *vm, int *who, unsigned long *req, unsigned max)
{
	unsigned n = 0;

	for (unsigned i = 0; i < iorec_count() && n < max; i++) {
		const struct iorec_call *c = iorec_get(i);
		int v = vcpu_of_fd(vm, c->fd);

		if ((v >= 0 && is_vcpu_set(c->req) && c->req != KVM_SET_CPUID2) ||
		    (c->fd == vm->kvm.vm_fd && (c->req == KVM_SET_PIT2 || c->req == KVM_SET_CLOCK ||
						  c->req == KVM_SET_IRQCHIP))) {
			who[n] = c->fd == vm->kvm.vm_fd ? -1 : v;
			req[n++] = c->req;
		}
	}
	return n;
}

/* ---- fix 3: vCPUs before the interrupt controllers ------------------------------- */

Test(kvm_calls, restore_sets_every_vcpu_before_pit_clock_and_irqchips)
{
	make_golden(NR_VCPUS);
	recorded_restore();
	assert_vcpus_before_vm_state(fx.vm, "restore");
	run_to_done(fx.vm);
}

Test(kvm_calls, reset_sets_state_in_the_same_order_as_a_restore)
{
	int who_a[256], who_b[256];
	unsigned long req_a[256], req_b[256];
	unsigned na, nb;

	make_golden(NR_VCPUS);
	recorded_restore();
	na = state_sequence(fx.vm, who_a, req_a, 256);
	run_to_done(fx.vm);
	recorded_reset();
	assert_vcpus_before_vm_state(fx.vm, "reset");
	nb = state_sequence(fx.vm, who_b, req_b, 256);
	cr_assert_eq(na, nb, "restore set %u things, reset %u", na, nb);
	for (unsigned i = 0; i < na; i++)
		cr_assert(who_a[i] == who_b[i] && req_a[i] == req_b[i],
			  "call %u: restore %s on %d, reset %s on %d", i, name(req_a[i]), who_a[i],
			  name(req_b[i]), who_b[i]);
	run_to_done(fx.vm);
}

/* ---- fix 1: kvmclock resumes from its saved value --------------------------------- */

static uint64_t realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * A snapshot carrying KVM_CLOCK_REALTIME with a wall-clock stamp 5 s old (what ember's
 * snapshots held until now, seen 5 s later): restore passes the clock alone (flags 0),
 * and KVM's clock then goes on from the saved value, not 5 s ahead of it.
 */
Test(kvm_calls, restore_sets_kvmclock_to_the_saved_value_without_realtime)
{
	struct kvm_clock_data set, now;
	struct snapmut *m;
	int i;

	make_golden(1);
	m = snapmut_load(fx.dir);
	snapmut_set_u64(m, "vm.clock.flags", KVM_CLOCK_REALTIME | KVM_CLOCK_TSC_STABLE |
			KVM_CLOCK_HOST_TSC);
	snapmut_set_u64(m, "vm.clock.realtime", realtime_ns() - 5000000000ull);
	snapmut_save(m, fx.dir);
	snapmut_free(m);
	recorded_restore();
	i = iorec_first(KVM_SET_CLOCK, fx.vm->kvm.vm_fd, 0);
	cr_assert_geq(i, 0, "no KVM_SET_CLOCK");
	cr_assert_eq(iorec_get((unsigned)i)->data_len, sizeof(set));
	memcpy(&set, iorec_get((unsigned)i)->data, sizeof(set));
	cr_assert_eq(set.flags, 0, "KVM_SET_CLOCK flags 0x%x", set.flags);
	cr_assert_eq(set.clock, fx.golden.vm.clock.clock);
	memset(&now, 0, sizeof(now));
	cr_assert_eq(ioctl(fx.vm->kvm.vm_fd, KVM_GET_CLOCK, &now), 0);
	cr_assert_geq(now.clock, fx.golden.vm.clock.clock);
	cr_assert_lt(now.clock - fx.golden.vm.clock.clock, 1000000000ull,
		     "kvmclock %llu ns ahead of its saved value",
		     (unsigned long long)(now.clock - fx.golden.vm.clock.clock));
	run_to_done(fx.vm);
}

/* ---- fix 2: PVCLOCK_GUEST_STOPPED on restore, reset and pause ------------------- */

/*
 * Every vCPU gets KVM_KVMCLOCK_CTRL once its own state is set: vCPU 0, whose guest
 * registered a kvmclock page, accepts it; vCPU 1 (never started, no page) answers
 * EINVAL, which is normal and must not fail the restore.
 */
static void assert_kvmclock_ctrl_per_vcpu(const struct vm *vm, const char *what)
{
	for (unsigned v = 0; v < vm->nr_vcpus; v++) {
		int fd = vm->vcpus[v].fd;
		int i = iorec_first(KVM_KVMCLOCK_CTRL, fd, 0);
		const struct iorec_call *c;

		cr_assert_geq(i, 0, "%s: no KVM_KVMCLOCK_CTRL for vCPU %u", what, v);
		cr_assert_eq(iorec_count_of(KVM_KVMCLOCK_CTRL, fd), 1, "%s: vCPU %u", what, v);
		cr_assert_gt(i, iorec_last(KVM_SET_MSRS, fd), "%s: vCPU %u: before its MSRs (which "
			     "register its kvmclock page)", what, v);
		cr_assert_gt(i, iorec_last(KVM_SET_CLOCK, vm->kvm.vm_fd), "%s: before KVM_SET_CLOCK",
			     what);
		c = iorec_get((unsigned)i);
		if (v == 0)
			cr_assert_eq(c->ret, 0, "%s: vCPU 0 (kvmclock page registered): errno %d",
				     what, c->err);
		else
			cr_assert(c->ret < 0 && c->err == EINVAL, "%s: vCPU %u without a kvmclock "
				  "page: ret %d errno %d", what, v, c->ret, c->err);
	}
}

Test(kvm_calls, restore_and_reset_tell_each_vcpu_it_was_stopped)
{
	make_golden(NR_VCPUS);
	check_restore_and_reset(assert_kvmclock_ctrl_per_vcpu);
}

/* A pause from the main loop, as the control socket makes one: recorded, then resumed. */
struct pause_probe {
	struct vm_watch w;
	bool done;
};

static void pause_now(struct vm *vm, struct vm_watch *w, uint32_t events)
{
	struct pause_probe *p = w->opaque;
	uint64_t n;

	if (read(w->fd, &n, sizeof(n)) < 0 || p->done)
		return;
	p->done = true;
	iorec_start();
	vm_pause(vm);
	iorec_stop();
	vm_resume(vm);
}

Test(kvm_calls, pause_tells_each_vcpu_it_is_stopped)
{
	struct itimerspec when = { .it_value = { .tv_nsec = 5 * 1000 * 1000 } };
	struct pause_probe p = { .done = false };
	unsigned ctrl = 0;

	make_golden(NR_VCPUS);
	fx.vm = restore_golden();
	p.w.fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	cr_assert_geq(p.w.fd, 0);
	p.w.cb = pause_now;
	p.w.opaque = &p;
	cr_assert_eq(timerfd_settime(p.w.fd, 0, &when, NULL), 0);
	cr_assert_eq(vm_watch_add(fx.vm, &p.w), 0);
	run_to_done(fx.vm);
	vm_watch_del(fx.vm, &p.w);
	close(p.w.fd);
	cr_assert(p.done, "the guest finished before the pause");
	for (unsigned v = 0; v < NR_VCPUS; v++) {
		int i = iorec_first(KVM_KVMCLOCK_CTRL, fx.vm->vcpus[v].fd, 0);

		cr_expect_geq(i, 0, "no KVM_KVMCLOCK_CTRL for vCPU %u on pause", v);
		ctrl += i >= 0;
	}
	cr_assert_eq(ctrl, NR_VCPUS);
	cr_assert_eq(iorec_get((unsigned)iorec_first(KVM_KVMCLOCK_CTRL, fx.vm->vcpus[0].fd, 0))->ret,
		     0);
}

/* ---- fix 8: one TSC offset for every vCPU --------------------------------------------- */

static uint64_t tsc_offset(const struct vcpu *v)
{
	uint64_t off = 0;
	struct kvm_device_attr a = { .group = KVM_VCPU_TSC_CTRL, .attr = KVM_VCPU_TSC_OFFSET,
				     .addr = (uint64_t)(uintptr_t)&off };

	cr_assert_eq(ioctl(v->fd, KVM_GET_DEVICE_ATTR, &a), 0, "vCPU %u: KVM_GET_DEVICE_ATTR: %s",
		     v->id, strerror(errno));
	return off;
}

static bool has_tsc_offset_attr(const struct vm *vm)
{
	struct kvm_device_attr a = { .group = KVM_VCPU_TSC_CTRL, .attr = KVM_VCPU_TSC_OFFSET };

	return ioctl(vm->vcpus[0].fd, KVM_HAS_DEVICE_ATTR, &a) == 0;
}

/*
 * After the vCPUs' IA32_TSC writes, before kvmclock is set: vCPU 0's offset, read with
 * KVM_GET_DEVICE_ATTR, written to every other vCPU, after KVM_HAS_DEVICE_ATTR said the
 * attribute exists. The offsets KVM then reports are equal.
 */
static void assert_tsc_offsets_synced(const struct vm *vm, const char *what)
{
	int has = iorec_first(KVM_HAS_DEVICE_ATTR, vm->vcpus[0].fd, 0);
	int get = iorec_first(KVM_GET_DEVICE_ATTR, vm->vcpus[0].fd, 0);
	int last_msrs = iorec_last(KVM_SET_MSRS, -1);
	int clock = iorec_first(KVM_SET_CLOCK, vm->kvm.vm_fd, 0);
	const struct kvm_device_attr *a;

	cr_assert_geq(has, 0, "%s: no KVM_HAS_DEVICE_ATTR on vCPU 0", what);
	a = (const void *)iorec_get((unsigned)has)->data;
	cr_assert(a->group == KVM_VCPU_TSC_CTRL && a->attr == KVM_VCPU_TSC_OFFSET,
		  "%s: KVM_HAS_DEVICE_ATTR of group %u attr %llu", what, a->group,
		  (unsigned long long)a->attr);
	cr_assert_gt(has, last_msrs, "%s: the offsets are synced before the last TSC write", what);
	cr_assert_gt(get, has, "%s: no KVM_GET_DEVICE_ATTR on vCPU 0 after the check", what);
	cr_assert_lt(get, clock, "%s: kvmclock set before the TSCs were synced", what);
	for (unsigned v = 1; v < vm->nr_vcpus; v++) {
		int set = iorec_first(KVM_SET_DEVICE_ATTR, vm->vcpus[v].fd, 0);

		cr_assert_gt(set, get, "%s: vCPU %u's offset not set after vCPU 0's was read", what,
			     v);
		cr_assert_lt(set, clock, "%s: vCPU %u synced after kvmclock was set", what, v);
		cr_assert_eq(iorec_get((unsigned)set)->value, iorec_get((unsigned)get)->value,
			     "%s: vCPU %u given offset %lld, vCPU 0 has %lld", what, v,
			     (long long)iorec_get((unsigned)set)->value,
			     (long long)iorec_get((unsigned)get)->value);
		cr_assert_eq(tsc_offset(&vm->vcpus[v]), tsc_offset(&vm->vcpus[0]),
			     "%s: vCPU %u's TSC offset differs from vCPU 0's", what, v);
	}
	cr_assert_eq(iorec_count_of(KVM_SET_DEVICE_ATTR, vm->vcpus[0].fd), 0,
		     "%s: vCPU 0 keeps its own offset", what);
}

/* The golden snapshot and a VM restored from it (fx.vm), on a KVM with the attribute. */
static void golden_where_tsc_offsets_exist(void)
{
	make_golden(NR_VCPUS);
	fx.vm = restore_golden();
	if (!has_tsc_offset_attr(fx.vm))
		cr_skip_test("this KVM has no KVM_VCPU_TSC_OFFSET (Linux < 5.16)");
}

Test(kvm_calls, restore_and_reset_give_every_vcpu_vcpu0s_tsc_offset)
{
	golden_where_tsc_offsets_exist();
	vm_destroy(fx.vm);
	check_restore_and_reset(assert_tsc_offsets_synced);
}

/* vCPU 1's IA32_TSC written more than a second after vCPU 0's: past KVM's matching
 * window, so only the explicit sync gives them one offset (on a KVM that honours TSC
 * writes; this platform's ignores them and keeps every offset 0, PLATFORM.md). */
static void slow_second_tsc(int fd, unsigned long req, void *arg, void *opaque)
{
	const struct vm *vm = opaque;

	(void)arg;
	if (req == KVM_SET_MSRS && vm && fd == vm->vcpus[1].fd)
		usleep(1100 * 1000);
}

Test(kvm_calls, tscs_written_seconds_apart_still_get_one_offset)
{
	golden_where_tsc_offsets_exist();
	run_to_done(fx.vm);
	iorec_set_hook(slow_second_tsc, fx.vm);
	recorded_reset();
	iorec_set_hook(NULL, NULL);
	cr_assert_eq(tsc_offset(&fx.vm->vcpus[1]), tsc_offset(&fx.vm->vcpus[0]));
	run_to_done(fx.vm);
}

static void restore_recorded(void *unused)
{
	(void)unused;
	recorded_restore();
}

/* A KVM without the attribute (before Linux 5.16): KVM_HAS_DEVICE_ATTR fails, nothing
 * more is asked, the restore goes on with KVM's own matching and says so at debug level. */
Test(kvm_calls, without_the_tsc_offset_attribute_restore_falls_back_and_says_so)
{
	char log[8192];
	enum log_level was = log_get_level();

	make_golden(NR_VCPUS);
	iorec_fail(KVM_HAS_DEVICE_ATTR, ENXIO);
	log_set_level(LOG_DEBUG);
	ember_test_capture_stderr(restore_recorded, NULL, log, sizeof(log));
	log_set_level(was);
	iorec_fail(0, 0);
	cr_assert_geq(iorec_first(KVM_HAS_DEVICE_ATTR, fx.vm->vcpus[0].fd, 0), 0);
	cr_assert_eq(iorec_count_of(KVM_GET_DEVICE_ATTR, -1), 0);
	cr_assert_eq(iorec_count_of(KVM_SET_DEVICE_ATTR, -1), 0);
	cr_assert(strstr(log, "KVM_VCPU_TSC_OFFSET"), "no debug line about the fallback:\n%s", log);
	run_to_done(fx.vm);
}
