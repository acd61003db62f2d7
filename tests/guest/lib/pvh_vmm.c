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

void pvh_ready(void)
{
	if (!cmdline_has_flag("pvh_snapshot"))
		return;
	if (!kvmclock_enable()) {
		serial_printf("pvh: no kvmclock (KVM CPUID leaves): cannot wait for a snapshot\n");
		return;
	}
	serial_printf("pvh: ready\n");
	while (!(kvmclock_flags() & KVMCLOCK_GUEST_STOPPED))
		cpu_relax();
}
