/*
 * VM-wide KVM state for snapshots: kvmclock, the in-kernel PICs, IOAPIC and PIT, and
 * the guest TSC frequency. Guest memory regions are the snapshot orchestrator's.
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "x86.h"

#define IOAPIC_DEFAULT_BASE 0xfec00000ull

/*
 * kvmclock. A snapshot keeps what KVM_GET_CLOCK reported: the clock, and flags saying
 * which of realtime (the host's wall clock at that moment) and host_tsc are valid.
 * Restore sets the clock alone (KVM_SET_CLOCK, flags 0), as Firecracker does and QEMU
 * (which sets only the value): the guest's kvmclock, hence Linux's CLOCK_MONOTONIC and
 * sched_clock, goes on from where it stopped. With KVM_CLOCK_REALTIME KVM would add the
 * wall time since the snapshot, so a clone of a day-old golden snapshot would resume a
 * day ahead (watchdog, soft-lockup and RCU-stall reports; timers all due at once), and
 * host kernels before 5.16 refuse the flag. ember's snapshots before this passed
 * REALTIME on; it is ignored now.
 */
#define CLOCK_KNOWN_FLAGS ((uint32_t)(KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC))

#define PIC_FIELDS(X) X(last_irr) X(irr) X(imr) X(isr) X(priority_add) X(irq_base) \
	X(read_reg_select) X(poll) X(special_mask) X(init_state) X(auto_eoi) \
	X(rotate_on_auto_eoi) X(special_fully_nested_mode) X(init4) X(elcr) X(elcr_mask)
#define PIT_CHANNEL_FIELDS(X) X(count) X(latched_count) X(count_latched) X(status_latched) \
	X(status) X(read_state) X(write_state) X(write_latch) X(rw_mode) X(mode) X(bcd) \
	X(gate) X(count_load_time)

#define COPY(f) d->f = s->f;

static void pic_to_snap(struct snap_pic *d, const struct kvm_pic_state *s)
{
	PIC_FIELDS(COPY)
}

static void pic_from_snap(struct kvm_pic_state *d, const struct snap_pic *s)
{
	PIC_FIELDS(COPY)
}

static void pit_channel_to_snap(struct snap_pit_channel *d, const struct kvm_pit_channel_state *s)
{
	PIT_CHANNEL_FIELDS(COPY)
}

static void pit_channel_from_snap(struct kvm_pit_channel_state *d,
				  const struct snap_pit_channel *s)
{
	PIT_CHANNEL_FIELDS(COPY)
}

_Static_assert(SNAP_IOAPIC_PINS == KVM_IOAPIC_NUM_PINS, "IOAPIC pin count");
_Static_assert(SNAP_PIT_CHANNELS == 3, "PIT channel count");

static void ioapic_to_snap(struct snap_ioapic *d, const struct kvm_ioapic_state *s)
{
	d->base_address = s->base_address;
	d->ioregsel = s->ioregsel;
	d->id = s->id;
	d->irr = s->irr;
	for (unsigned i = 0; i < SNAP_IOAPIC_PINS; i++)
		d->redirtbl[i] = s->redirtbl[i].bits;
}

static void ioapic_from_snap(struct kvm_ioapic_state *d, const struct snap_ioapic *s)
{
	d->base_address = s->base_address;
	d->ioregsel = s->ioregsel;
	d->id = s->id;
	d->irr = s->irr;
	for (unsigned i = 0; i < SNAP_IOAPIC_PINS; i++)
		d->redirtbl[i].bits = s->redirtbl[i];
}

#define VM_IOCTL(req, arg, what)                                                         \
	do {                                                                             \
		if (ioctl(vm->kvm.vm_fd, req, arg) < 0)                                  \
			return errbuf_set(eb, -errno, "%s: %s", what, strerror(errno));  \
	} while (0)

static int get_irqchip(struct vm *vm, unsigned chip, struct kvm_irqchip *c, struct errbuf *eb)
{
	memset(c, 0, sizeof(*c));
	c->chip_id = chip;
	if (ioctl(vm->kvm.vm_fd, KVM_GET_IRQCHIP, c) < 0)
		return errbuf_set(eb, -errno, "KVM_GET_IRQCHIP (chip %u): %s", chip, strerror(errno));
	return 0;
}

static int set_irqchip(struct vm *vm, struct kvm_irqchip *c, struct errbuf *eb)
{
	if (ioctl(vm->kvm.vm_fd, KVM_SET_IRQCHIP, c) < 0)
		return errbuf_set(eb, -errno, "KVM_SET_IRQCHIP (chip %u): %s", c->chip_id,
				  strerror(errno));
	return 0;
}

static int host_tsc_khz(struct vm *vm, uint32_t *khz, struct errbuf *eb)
{
	int r;

	/* A vCPU ioctl: the frequency is per vCPU (all equal under ember). */
	if (vm->nr_vcpus == 0)
		return errbuf_set(eb, -EINVAL, "VM has no vCPU to ask for the TSC frequency");
	r = ioctl(vm->vcpus[0].fd, KVM_GET_TSC_KHZ, 0);
	if (r <= 0)
		return errbuf_set(eb, r < 0 ? -errno : -EIO, "KVM_GET_TSC_KHZ: %s",
				  r < 0 ? strerror(errno) : "returned 0");
	*khz = (uint32_t)r;
	return 0;
}

int x86_vm_save(struct vm *vm, struct snap_vm *out, struct errbuf *eb)
{
	struct kvm_clock_data clock;
	struct kvm_pit_state2 pit;
	struct kvm_irqchip chip;
	int r;

	memset(&clock, 0, sizeof(clock));
	VM_IOCTL(KVM_GET_CLOCK, &clock, "KVM_GET_CLOCK");
	out->clock.clock = clock.clock;
	/* a flag a newer KVM may add means nothing to this ember: kept out of the file,
	 * whose unknown flags restore refuses */
	out->clock.flags = clock.flags & CLOCK_KNOWN_FLAGS;
	out->clock.realtime = clock.realtime;
	out->clock.host_tsc = clock.host_tsc;

	r = get_irqchip(vm, KVM_IRQCHIP_PIC_MASTER, &chip, eb);
	if (r)
		return r;
	pic_to_snap(&out->pic_master, &chip.chip.pic);
	r = get_irqchip(vm, KVM_IRQCHIP_PIC_SLAVE, &chip, eb);
	if (r)
		return r;
	pic_to_snap(&out->pic_slave, &chip.chip.pic);
	r = get_irqchip(vm, KVM_IRQCHIP_IOAPIC, &chip, eb);
	if (r)
		return r;
	ioapic_to_snap(&out->ioapic, &chip.chip.ioapic);

	memset(&pit, 0, sizeof(pit));
	VM_IOCTL(KVM_GET_PIT2, &pit, "KVM_GET_PIT2");
	out->pit.flags = pit.flags;
	for (unsigned i = 0; i < SNAP_PIT_CHANNELS; i++)
		pit_channel_to_snap(&out->pit.channels[i], &pit.channels[i]);

	return host_tsc_khz(vm, &out->tsc_khz, eb);
}

/* Firecracker's tolerance: calibrations of one clock disagree by less, and NTP can slew a
 * guest clock by at most 500 ppm, so a rate off by more is never corrected. */
#define TSC_KHZ_TOLERANCE_PPM 250u

bool x86_tsc_khz_differs(uint32_t snapshot_khz, uint32_t host_khz)
{
	uint64_t diff = snapshot_khz > host_khz ? snapshot_khz - host_khz : host_khz - snapshot_khz;

	return diff * 1000000 > (uint64_t)snapshot_khz * TSC_KHZ_TOLERANCE_PPM;
}

/*
 * The guest's TSC must keep the rate it had, or its TSC-derived clocks (kvmclock scale,
 * a TSC clocksource, calibrated delays) run fast or slow for good. Scale it with
 * KVM_SET_TSC_KHZ, which needs KVM_CAP_TSC_CONTROL (hardware TSC scaling); refuse the
 * restore when KVM cannot, as Firecracker does. Without the capability KVM still takes a
 * higher rate, but only by "catching up" the TSC at guest entries while it runs at the
 * host's rate in between (PLATFORM.md measured it): not scaling.
 */
static int restore_tsc_khz(struct vm *vm, uint32_t snap_khz, struct errbuf *eb)
{
	uint32_t host_khz;
	int r;

	if (snap_khz == 0)
		return errbuf_set(eb, -EINVAL, "snapshot TSC frequency is 0 kHz");
	r = host_tsc_khz(vm, &host_khz, eb);
	if (r || !x86_tsc_khz_differs(snap_khz, host_khz))
		return r;
	if (ioctl(vm->kvm.vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_CONTROL) <= 0)
		return errbuf_set(eb, -ENOTSUP, "snapshot guest TSC ran at %u kHz, this host's runs "
				  "at %u kHz (more than %u ppm apart) and KVM cannot scale it (no "
				  "KVM_CAP_TSC_CONTROL): the guest's TSC and TSC-based clocks would "
				  "run at the wrong rate", snap_khz, host_khz, TSC_KHZ_TOLERANCE_PPM);
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		r = x86_vcpu_set_tsc_khz(&vm->vcpus[i], snap_khz, eb);
		if (r)
			return r;
	}
	return 0;
}

/* What KVM would take silently and get wrong. */
static int check_vm_state(const struct snap_vm *in, struct errbuf *eb)
{
	if (in->clock.flags & ~CLOCK_KNOWN_FLAGS)
		return errbuf_set(eb, -EINVAL, "vm.clock.flags 0x%x: unknown flags 0x%x", in->clock.flags,
				  in->clock.flags & ~CLOCK_KNOWN_FLAGS);
	/* KVM keeps the IOAPIC's MMIO window where it created it, so another base would
	 * leave the guest with an IOAPIC it cannot reach. */
	if (in->ioapic.base_address != IOAPIC_DEFAULT_BASE)
		return errbuf_set(eb, -EINVAL, "vm.ioapic.base_address 0x%llx: KVM's IOAPIC is at "
				  "0x%llx", (unsigned long long)in->ioapic.base_address,
				  IOAPIC_DEFAULT_BASE);
	return 0;
}

int x86_vm_restore_prepare(struct vm *vm, const struct snap_vm *in, struct errbuf *eb)
{
	return check_vm_state(in, eb) ?: restore_tsc_khz(vm, in->tsc_khz, eb);
}

/*
 * PIT2, CLOCK and the three irqchips, as Firecracker does, once every vCPU is set
 * (x86.h). Field values are left for KVM to validate, except where KVM would silently
 * accept nonsense.
 */
int x86_vm_restore(struct vm *vm, const struct snap_vm *in, struct errbuf *eb)
{
	struct kvm_clock_data clock;
	struct kvm_pit_state2 pit;
	struct kvm_irqchip chip;
	int r;

	r = check_vm_state(in, eb);
	if (r)
		return r;
	memset(&pit, 0, sizeof(pit));
	pit.flags = in->pit.flags;
	for (unsigned i = 0; i < SNAP_PIT_CHANNELS; i++)
		pit_channel_from_snap(&pit.channels[i], &in->pit.channels[i]);
	VM_IOCTL(KVM_SET_PIT2, &pit, "KVM_SET_PIT2");

	memset(&clock, 0, sizeof(clock));
	clock.clock = in->clock.clock; /* flags 0: the saved value, not the wall clock's */
	VM_IOCTL(KVM_SET_CLOCK, &clock, "KVM_SET_CLOCK");

	memset(&chip, 0, sizeof(chip));
	chip.chip_id = KVM_IRQCHIP_PIC_MASTER;
	pic_from_snap(&chip.chip.pic, &in->pic_master);
	r = set_irqchip(vm, &chip, eb);
	if (r)
		return r;
	memset(&chip, 0, sizeof(chip));
	chip.chip_id = KVM_IRQCHIP_PIC_SLAVE;
	pic_from_snap(&chip.chip.pic, &in->pic_slave);
	r = set_irqchip(vm, &chip, eb);
	if (r)
		return r;
	memset(&chip, 0, sizeof(chip));
	chip.chip_id = KVM_IRQCHIP_IOAPIC;
	ioapic_from_snap(&chip.chip.ioapic, &in->ioapic);
	return set_irqchip(vm, &chip, eb);
}

/*
 * KVM_KVMCLOCK_CTRL on every vCPU: KVM sets PVCLOCK_GUEST_STOPPED in the vCPU's kvmclock
 * page at its next entry, and Linux's watchdogs (soft lockup, RCU stall, hung task) then
 * excuse the time the guest did not run instead of reporting it. Firecracker asks on
 * pause and at the end of a restore, QEMU whenever a stopped VM starts. EINVAL means the
 * guest registered no kvmclock page on that vCPU (not booted that far, not started, or
 * without kvmclock): normal. Any other failure is only worth a warning.
 */
void x86_kvmclock_stopped(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		if (ioctl(vm->vcpus[i].fd, KVM_KVMCLOCK_CTRL, 0) == 0)
			continue;
		if (errno == EINVAL)
			pr_debug("vCPU %u: KVM_KVMCLOCK_CTRL: no kvmclock page registered", i);
		else
			pr_warn("vCPU %u: KVM_KVMCLOCK_CTRL: %s", i, strerror(errno));
	}
}
