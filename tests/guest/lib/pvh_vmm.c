/*
 * What stands in for ember's ports when a PVH loader (QEMU's microvm) booted the
 * guest: writes to them go nowhere there and reads return all ones, so the ucalls are
 * served here, their text on the UART.
 *
 * The ready point. ember snapshots while the guest's OUT to the ready port is in
 * flight; QEMU can only stop a running VM from outside. So with `pvh_snapshot` on the
 * command line guest_ready() registers a kvmclock page, prints "pvh: ready" on the
 * UART (the host's cue to stop the VM and migrate it to a file), and spins in ring 3,
 * without exits, until KVM sets PVCLOCK_GUEST_STOPPED in that page: QEMU asks for
 * the flag (KVM_KVMCLOCK_CTRL) whenever it starts a stopped VM again, a restored
 * migration among them, and not on its first start, when no page is registered yet.
 * A restored QEMU clone therefore returns from guest_ready() at the same point as an
 * ember clone does.
 */
#include "internal.h"

#define DEBUG_EXIT_PORT 0x501 /* -device isa-debug-exit, default iobase */

/* Linux's struct pvclock_vcpu_time_info (asm/pvclock-abi.h), written by KVM */
struct pvclock_time {
	uint32_t version, pad0;
	uint64_t tsc_timestamp, system_time;
	uint32_t tsc_to_system_mul;
	int8_t tsc_shift;
	uint8_t flags;
	uint8_t pad[2];
};

#define PVCLOCK_GUEST_STOPPED   (1 << 1)
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define KVM_CPUID_SIGNATURE     0x40000000
#define KVM_CPUID_FEATURES      0x40000001
#define KVM_FEATURE_CLOCKSOURCE2 3

_Static_assert(sizeof(struct pvclock_time) == 32, "pvclock_vcpu_time_info layout");

/* Own cache line; identity-mapped, so its address is its GPA. */
static struct pvclock_time pvclock __attribute__((aligned(64)));

void pvh_debug_exit(uint8_t code)
{
	outb(DEBUG_EXIT_PORT, code); /* QEMU exits with status (code << 1) | 1 */
}

/* A field of the block: NUL-terminated by the sender, bounded here all the same
 * (fmt has no precision for %s). */
static void write_field(const char *s, size_t max)
{
	serial_write(s, strnlen(s, max));
}

void pvh_ucall(struct ember_ucall *uc)
{
	switch (uc->cmd) {
	case EMBER_UCALL_PRINT:
		write_field(uc->msg, sizeof(uc->msg));
		break;
	case EMBER_UCALL_REPORT:
		/* ember's own stderr line, less the host's timestamp */
		serial_write("ember-report msg=", 17);
		write_field(uc->msg, sizeof(uc->msg));
		serial_printf(" a0=0x%lx a1=0x%lx a2=0x%lx a3=0x%lx\n", uc->args[0], uc->args[1],
			      uc->args[2], uc->args[3]);
		break;
	case EMBER_UCALL_ASSERT:
		write_field(uc->file, sizeof(uc->file));
		serial_printf(":%u: ", uc->line);
		write_field(uc->msg, sizeof(uc->msg));
		serial_write("\n", 1);
		pvh_debug_exit(3); /* ember's exit status for a failed assertion */
		break;
	case EMBER_UCALL_DONE:
		pvh_debug_exit(0);
		break;
	case EMBER_UCALL_WAIT:
		uc->status = EMBER_WAIT_NONE; /* nobody sends commands: the guest finishes */
		break;
	case EMBER_UCALL_PARK:
		uc->status = EMBER_PARK_EVENT; /* a spurious wake, which callers allow */
		break;
	default: /* SYNC: nobody to synchronise with */
		break;
	}
}

static bool has_kvmclock(void)
{
	/* cpuid() runs in ring 0, so this is QEMU's table, not the outer host's */
	struct cpuid_regs sig = cpuid(KVM_CPUID_SIGNATURE, 0);

	if (sig.ebx != 0x4b4d564b || sig.ecx != 0x564b4d56 || sig.edx != 0x4d) /* "KVMKVMKVM" */
		return false;
	return (cpuid(KVM_CPUID_FEATURES, 0).eax >> KVM_FEATURE_CLOCKSOURCE2) & 1;
}

void pvh_ready(void)
{
	if (!cmdline_has_flag("pvh_snapshot"))
		return;
	if (!has_kvmclock()) {
		serial_printf("pvh: no kvmclock (KVM CPUID leaves): cannot wait for a snapshot\n");
		return;
	}
	sys_wrmsr(MSR_KVM_SYSTEM_TIME_NEW, (uint64_t)(uintptr_t)&pvclock | 1);
	serial_printf("pvh: ready\n");
	while (!(__atomic_load_n(&pvclock.flags, __ATOMIC_ACQUIRE) & PVCLOCK_GUEST_STOPPED))
		cpu_relax();
}
