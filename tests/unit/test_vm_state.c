/*
 * VM-wide state save/restore (vm_state.c) on the real KVM: a tiny ring-0 guest programs
 * both PICs, the IOAPIC and a PIT channel, syncs; the test saves the VM (and its vCPU,
 * so the guest can go on), restores both into a fresh VM with a copy of RAM, saves
 * again and compares; then the restored guest finishes. Plus the checks x86_vm_restore
 * makes on untrusted input, and the TSC-frequency policy.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "arch/x86_64/x86.h"
#include "snapfmt.h"
#include "testlib.h"

#define G_UCALL_SYNC 0x31000
#define G_UCALL_DONE 0x31200
#define G_CODE       0x100000

#define XSTR_(x) #x
#define XSTR(x) XSTR_(x)
#define UCALL(addr) "mov $" XSTR(addr) ", %eax\n\tmov $0x5e0, %dx\n\tout %eax, %dx\n\t"

/*
 * Ring 0 (about 50 emulated instructions): PIC master at vector 0x30 with only the
 * cascade line unmasked, slave at 0x38, ELCR with IRQ 5, 9 and 11 level-triggered; PIT
 * channel 2 (gated off, so it never counts) in mode 3 with count 0x1234; IOAPIC id 3,
 * pins 4 and 9 masked level-triggered with vectors 0x44 / 0x49, pin 4 to APIC 3, IOREGSEL
 * left at 1. Nothing can raise an interrupt, so the state is stable.
 */
__asm__(".pushsection .rodata.guests, \"a\"\n"
	".code64\n"
	".globl chips_guest_start, chips_guest_end\n"
	"chips_guest_start:\n\t"
	"mov $0x11, %al\n\t" "out %al, $0x20\n\t"
	"mov $0x30, %al\n\t" "out %al, $0x21\n\t"
	"mov $0x04, %al\n\t" "out %al, $0x21\n\t"
	"mov $0x01, %al\n\t" "out %al, $0x21\n\t"
	"mov $0xfb, %al\n\t" "out %al, $0x21\n\t"
	"mov $0x11, %al\n\t" "out %al, $0xa0\n\t"
	"mov $0x38, %al\n\t" "out %al, $0xa1\n\t"
	"mov $0x02, %al\n\t" "out %al, $0xa1\n\t"
	"mov $0x01, %al\n\t" "out %al, $0xa1\n\t"
	"mov $0xbf, %al\n\t" "out %al, $0xa1\n\t"
	"mov $0x4d0, %dx\n\t" "mov $0x20, %al\n\t" "out %al, %dx\n\t"
	"mov $0x4d1, %dx\n\t" "mov $0x0a, %al\n\t" "out %al, %dx\n\t"
	"mov $0xb6, %al\n\t" "out %al, $0x43\n\t"
	"mov $0x34, %al\n\t" "out %al, $0x42\n\t"
	"mov $0x12, %al\n\t" "out %al, $0x42\n\t"
	"mov $0xfec00000, %ebx\n\t"
	"movl $0x18, (%rbx)\n\t" "movl $0x18044, 0x10(%rbx)\n\t"
	"movl $0x19, (%rbx)\n\t" "movl $0x03000000, 0x10(%rbx)\n\t"
	"movl $0x22, (%rbx)\n\t" "movl $0x18049, 0x10(%rbx)\n\t"
	"movl $0x00, (%rbx)\n\t" "movl $0x03000000, 0x10(%rbx)\n\t"
	"movl $0x01, (%rbx)\n\t"
	UCALL(G_UCALL_SYNC)
	UCALL(G_UCALL_DONE)
	"1: jmp 1b\n"
	"chips_guest_end:\n"
	".popsection");

extern const uint8_t chips_guest_start[], chips_guest_end[];

static struct {
	struct vm *vm;
	struct snap_vm saved, again;
	struct snap_vcpu vcpu;
} fx;

static void fx_fini(void)
{
	vm_destroy(fx.vm);
	/* the vCPU's heap parts (snapfmt allocates them with malloc) */
	free(fx.vcpu.xsave);
	free(fx.vcpu.msrs);
	free(fx.vcpu.cpuid);
	memset(&fx, 0, sizeof(fx));
}

static struct vm *vm_new(void)
{
	struct vm_config cfg;
	struct errbuf eb = { "" };
	struct vm *vm;

	if (access("/dev/kvm", R_OK | W_OK) != 0)
		cr_skip_test("no /dev/kvm");
	memset(&cfg, 0, sizeof(cfg));
	cfg.mem_bytes = 2 * MiB;
	cfg.nr_vcpus = 1;
	cfg.console = CONSOLE_NONE;
	cfg.stop_on_sync = true;
	cfg.timeout_ms = 10000;
	cr_assert_eq(vm_create(&vm, &cfg, &eb), 0, "vm_create: %s", eb.msg);
	return vm;
}

static void put_ucall(struct vm *vm, uint64_t gpa, uint32_t cmd)
{
	struct ember_ucall uc;

	memset(&uc, 0, sizeof(uc));
	uc.cmd = cmd;
	cr_assert_eq(gpa_write(&vm->mem, gpa, &uc, sizeof(uc)), 0);
}

static void expect_stop(struct vm *vm, enum vm_stop_reason want)
{
	enum vm_stop_reason got = vm_run(vm);

	cr_assert_eq(got, want, "vm_run stopped with %s, wanted %s: %s", vm_stop_reason_name(got),
		     vm_stop_reason_name(want), vm->stop_msg);
}

/* fx.vm runs the chips guest to its sync. */
static void run_chips_guest(void)
{
	struct errbuf eb = { "" };

	fx.vm = vm_new();
	cr_assert_eq(boot_write_tables(&fx.vm->mem, &eb), 0, "%s", eb.msg);
	put_ucall(fx.vm, G_UCALL_SYNC, EMBER_UCALL_SYNC);
	put_ucall(fx.vm, G_UCALL_DONE, EMBER_UCALL_DONE);
	cr_assert_eq(gpa_write(&fx.vm->mem, G_CODE, chips_guest_start,
			       (uint64_t)(chips_guest_end - chips_guest_start)), 0);
	cr_assert_eq(x86_vcpu_set_entry(&fx.vm->vcpus[0], G_CODE, &eb), 0, "%s", eb.msg);
	expect_stop(fx.vm, VM_STOP_SYNC);
}

/* Saves fx.vm into fx.saved (+ its vCPU), restores both into a fresh VM, saves fx.again. */
static void snapshot_and_restore(void)
{
	struct errbuf eb = { "" };
	struct vm *vm;

	cr_assert_eq(x86_vm_save(fx.vm, &fx.saved, &eb), 0, "%s", eb.msg);
	cr_assert_eq(x86_vcpu_save(&fx.vm->vcpus[0], &fx.vcpu, &eb), 0, "%s", eb.msg);
	vm = vm_new();
	memcpy(vm->mem.base, fx.vm->mem.base, fx.vm->mem.size);
	vm_destroy(fx.vm);
	fx.vm = vm;
	cr_assert_eq(x86_vm_restore_prepare(vm, &fx.saved, &eb), 0, "%s", eb.msg);
	cr_assert_eq(x86_vcpu_restore(&vm->vcpus[0], &fx.vcpu, &eb), 0, "%s", eb.msg);
	cr_assert_eq(x86_vm_restore(vm, &fx.saved, &eb), 0, "%s", eb.msg);
	cr_assert_eq(x86_vm_save(vm, &fx.again, &eb), 0, "%s", eb.msg);
}

#define SAME(f) cr_expect_eq((uint64_t)a->f, (uint64_t)b->f, #f ": saved 0x%llx, restored 0x%llx", \
			     (unsigned long long)a->f, (unsigned long long)b->f);
#define SAME_PIC(p) SAME(p.last_irr) SAME(p.irr) SAME(p.imr) SAME(p.isr) SAME(p.priority_add) \
	SAME(p.irq_base) SAME(p.read_reg_select) SAME(p.poll) SAME(p.special_mask)          \
	SAME(p.init_state) SAME(p.auto_eoi) SAME(p.rotate_on_auto_eoi)                      \
	SAME(p.special_fully_nested_mode) SAME(p.init4) SAME(p.elcr) SAME(p.elcr_mask)

static void compare_vm(const struct snap_vm *a, const struct snap_vm *b)
{
	SAME_PIC(pic_master)
	SAME_PIC(pic_slave)
	SAME(ioapic.base_address) SAME(ioapic.ioregsel) SAME(ioapic.id) SAME(ioapic.irr)
	for (unsigned i = 0; i < SNAP_IOAPIC_PINS; i++)
		cr_expect_eq(a->ioapic.redirtbl[i], b->ioapic.redirtbl[i], "IOAPIC pin %u", i);
	SAME(pit.flags)
	for (unsigned i = 0; i < SNAP_PIT_CHANNELS; i++) {
		SAME(pit.channels[i].count) SAME(pit.channels[i].latched_count)
		SAME(pit.channels[i].count_latched) SAME(pit.channels[i].status_latched)
		SAME(pit.channels[i].status) SAME(pit.channels[i].read_state)
		SAME(pit.channels[i].write_state) SAME(pit.channels[i].write_latch)
		SAME(pit.channels[i].rw_mode) SAME(pit.channels[i].mode) SAME(pit.channels[i].bcd)
		SAME(pit.channels[i].gate)
		/* KVM reloads each channel's count on restore, at the new "now". */
		cr_expect_geq(b->pit.channels[i].count_load_time, a->pit.channels[i].count_load_time);
	}
	SAME(tsc_khz) SAME(clock.flags)
	cr_expect_geq(b->clock.clock, a->clock.clock, "kvmclock went back");
}

Test(vm_state, chips_programmed_by_the_guest_survive_restore_and_guest_finishes, .fini = fx_fini)
{
	const struct snap_vm *s;

	run_chips_guest();
	snapshot_and_restore();
	compare_vm(&fx.saved, &fx.again);
	s = &fx.saved;
	cr_expect_eq(s->pic_master.irq_base, 0x30);
	cr_expect_eq(s->pic_master.imr, 0xfb);
	cr_expect_eq(s->pic_master.elcr, 0x20);
	cr_expect_eq(s->pic_slave.irq_base, 0x38);
	cr_expect_eq(s->pic_slave.imr, 0xbf);
	cr_expect_eq(s->pic_slave.elcr, 0x0a);
	cr_expect_eq(s->ioapic.base_address, 0xfec00000ull);
	cr_expect_eq(s->ioapic.id, 3);
	cr_expect_eq(s->ioapic.ioregsel, 1);
	cr_expect_eq(s->ioapic.redirtbl[4], 0x0300000000018044ull);
	cr_expect_eq(s->ioapic.redirtbl[9], 0x18049ull);
	cr_expect_eq(s->ioapic.redirtbl[5], 0x10000ull, "untouched pins stay masked");
	cr_expect_eq(s->pit.channels[2].count, 0x1234);
	cr_expect_eq(s->pit.channels[2].mode, 3);
	cr_expect_eq(s->pit.channels[2].rw_mode, 3);
	expect_stop(fx.vm, VM_STOP_DONE);
}

Test(vm_state, kvmclock_continues_from_the_saved_value, .fini = fx_fini)
{
	struct kvm_clock_data now;

	run_chips_guest();
	/* Age the first VM's clock well past what the new one reaches on its own. */
	usleep(300 * 1000);
	snapshot_and_restore();
	memset(&now, 0, sizeof(now));
	cr_assert_eq(ioctl(fx.vm->kvm.vm_fd, KVM_GET_CLOCK, &now), 0);
	cr_assert_geq(now.clock, fx.saved.clock.clock);
	/* It resumes where it stopped, not at host time (KVM_CLOCK_REALTIME, which this
	 * KVM reports once the guest ran, is saved but not passed back). */
	cr_assert_lt(now.clock - fx.saved.clock.clock, 2000000000ull,
		     "clock jumped by %llu ns", (unsigned long long)(now.clock - fx.saved.clock.clock));
	cr_assert_eq(fx.saved.clock.flags & ~(uint32_t)(KVM_CLOCK_REALTIME | KVM_CLOCK_TSC_STABLE |
							 KVM_CLOCK_HOST_TSC), 0,
		     "only the flags KVM_GET_CLOCK documents are saved");
}

Test(vm_state, tsc_khz_is_vcpu0s, .fini = fx_fini)
{
	struct errbuf eb = { "" };

	fx.vm = vm_new();
	cr_assert_eq(x86_vm_save(fx.vm, &fx.saved, &eb), 0, "%s", eb.msg);
	cr_assert_gt(fx.saved.tsc_khz, 0);
	cr_assert_eq((int)fx.saved.tsc_khz, ioctl(fx.vm->vcpus[0].fd, KVM_GET_TSC_KHZ, 0));
}

/* ---- untrusted input ---------------------------------------------------------------- */

static void saved_fresh(void)
{
	struct errbuf eb = { "" };

	fx.vm = vm_new();
	cr_assert_eq(x86_vm_save(fx.vm, &fx.saved, &eb), 0, "%s", eb.msg);
}

Test(vm_state, restore_rejects_unknown_clock_flags, .fini = fx_fini)
{
	struct errbuf eb = { "" };

	saved_fresh();
	fx.saved.clock.flags = 0x102;
	/* before any vCPU state is set, and again by the step that would use them */
	cr_assert_eq(x86_vm_restore_prepare(fx.vm, &fx.saved, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "vm.clock.flags 0x102: unknown flags 0x100"), "%s", eb.msg);
	cr_assert_eq(x86_vm_restore(fx.vm, &fx.saved, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "vm.clock.flags 0x102: unknown flags 0x100"), "%s", eb.msg);
}

/* The flags describe the source host's clock: accepted, not passed to KVM. */
Test(vm_state, restore_ignores_clock_flags_about_the_source_host, .fini = fx_fini)
{
	struct errbuf eb = { "" };

	saved_fresh();
	fx.saved.clock.flags = KVM_CLOCK_TSC_STABLE | KVM_CLOCK_HOST_TSC | KVM_CLOCK_REALTIME;
	fx.saved.clock.realtime = 1; /* 1970: KVM would add 56 years if it were passed */
	cr_assert_eq(x86_vm_restore(fx.vm, &fx.saved, &eb), 0, "%s", eb.msg);
}

Test(vm_state, restore_rejects_an_ioapic_at_another_address, .fini = fx_fini)
{
	struct errbuf eb = { "" };

	saved_fresh();
	fx.saved.ioapic.base_address = 0xfed00000;
	cr_assert_eq(x86_vm_restore_prepare(fx.vm, &fx.saved, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "vm.ioapic.base_address 0xfed00000"), "%s", eb.msg);
	cr_assert_eq(x86_vm_restore(fx.vm, &fx.saved, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "vm.ioapic.base_address 0xfed00000"), "%s", eb.msg);
}

Test(vm_state, restore_rejects_a_zero_tsc_frequency, .fini = fx_fini)
{
	struct errbuf eb = { "" };

	saved_fresh();
	fx.saved.tsc_khz = 0;
	cr_assert_eq(x86_vm_restore_prepare(fx.vm, &fx.saved, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "TSC frequency is 0"), "%s", eb.msg);
}

struct prepare_call {
	struct errbuf *eb;
	int r;
};

static void run_prepare(void *arg)
{
	struct prepare_call *c = arg;

	c->r = x86_vm_restore_prepare(fx.vm, &fx.saved, c->eb);
}

/* Runs x86_vm_restore_prepare (the TSC frequency) with stderr captured into buf. */
static int restore_capturing_stderr(char *buf, size_t len, struct errbuf *eb)
{
	struct prepare_call c = { eb, 0 };

	ember_test_capture_stderr(run_prepare, &c, buf, len);
	return c.r;
}

/* 1% off: scaled where KVM can (KVM_CAP_TSC_CONTROL), refused where it cannot. */
Test(vm_state, other_tsc_frequency_is_scaled_or_refused_naming_both, .fini = fx_fini)
{
	struct errbuf eb = { "" };
	char want[128];
	uint32_t host;

	saved_fresh();
	host = fx.saved.tsc_khz;
	fx.saved.tsc_khz = host + host / 100; /* 1% faster */
	if (ioctl(fx.vm->kvm.vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_CONTROL) > 0) {
		cr_assert_eq(x86_vm_restore_prepare(fx.vm, &fx.saved, &eb), 0, "%s", eb.msg);
		cr_assert_eq(ioctl(fx.vm->vcpus[0].fd, KVM_GET_TSC_KHZ, 0), (int)fx.saved.tsc_khz);
		return;
	}
	cr_assert_eq(x86_vm_restore_prepare(fx.vm, &fx.saved, &eb), -ENOTSUP, "%s", eb.msg);
	snprintf(want, sizeof(want), "TSC ran at %u kHz, this host's runs at %u kHz",
		 fx.saved.tsc_khz, host);
	cr_assert(strstr(eb.msg, want), "%s", eb.msg);
	cr_assert(strstr(eb.msg, "KVM_CAP_TSC_CONTROL"), "%s", eb.msg);
	/* nothing was changed: the vCPUs keep the host's rate */
	cr_assert_eq(ioctl(fx.vm->vcpus[0].fd, KVM_GET_TSC_KHZ, 0), (int)host);
}

Test(vm_state, same_tsc_frequency_restores_silently, .fini = fx_fini)
{
	struct errbuf eb = { "" };
	char out[2048];

	saved_fresh();
	fx.saved.tsc_khz += fx.saved.tsc_khz / 10000; /* 100 ppm: calibration noise */
	log_set_level(LOG_WARN);
	cr_assert_eq(restore_capturing_stderr(out, sizeof(out), &eb), 0, "%s", eb.msg);
	cr_assert_eq(out[0], 0, "stderr: %s", out);
}

/* Firecracker's tolerance, 250 ppm of the snapshot's rate: NTP slews at most 500 ppm, so
 * a guest clock off by more than that could never be corrected by it. */
Test(vm_state, tsc_khz_differs_beyond_250_ppm)
{
	cr_assert(!x86_tsc_khz_differs(2600000, 2600000));
	cr_assert(!x86_tsc_khz_differs(2600600, 2600000), "+230 ppm");
	cr_assert(!x86_tsc_khz_differs(2599400, 2600000), "-230 ppm");
	cr_assert(x86_tsc_khz_differs(2600700, 2600000), "+269 ppm");
	cr_assert(x86_tsc_khz_differs(2599300, 2600000), "-269 ppm");
	cr_assert(x86_tsc_khz_differs(2601000, 2600000), "+400 ppm (accepted at 0.1%)");
	cr_assert(x86_tsc_khz_differs(1, 2600000));
	cr_assert(x86_tsc_khz_differs(UINT32_MAX, 2600000), "no overflow");
	cr_assert(x86_tsc_khz_differs(2600000, UINT32_MAX), "no overflow");
	cr_assert(!x86_tsc_khz_differs(UINT32_MAX, UINT32_MAX));
}
