/*
 * The VM generation ID (Microsoft's "Virtual Machine Generation ID", read by Linux's
 * drivers/virt/vmgenid.c since 5.18): 16 random bytes in guest RAM that change whenever
 * the VM may have been duplicated. Every restore and in-place reset is a duplicate (many
 * clones of one snapshot), so the guest's RNG must reseed then, or two clones would
 * produce the same "random" numbers from the same restored state.
 *
 * The ID lives at ACPI_VMGENID_ADDR, in the reserved low window (acpi.c), so it is part
 * of a snapshot like any guest memory; the DSDT's VGEN device gives the address (ADDR).
 * A new ID is written before the guest runs, through gpa_map_write (the page counts as
 * written: a diff snapshot has it, the next reset reverts it before writing another),
 * then the GED's interrupt makes Linux run _EVT, which notifies VGEN (Notify 0x80) and
 * the driver reseeds. A guest that has not enabled the pin just leaves the edge latched
 * in the IOAPIC; nothing else sees it.
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>

#include "x86.h"

#define VMGENID_LEN 16

int vmgenid_write(struct guest_mem *m, struct errbuf *eb)
{
	uint8_t id[VMGENID_LEN];
	uint8_t *dst;

	if (getrandom(id, sizeof(id), 0) != (ssize_t)sizeof(id))
		return errbuf_set(eb, -EIO, "VMGenID: getrandom failed");
	dst = gpa_map_write(m, ACPI_VMGENID_ADDR, sizeof(id));
	if (!dst)
		return errbuf_set(eb, -EFAULT, "VMGenID: 0x%llx is outside guest RAM",
				  (unsigned long long)ACPI_VMGENID_ADDR);
	memcpy(dst, id, sizeof(id));
	return 0;
}

int vmgenid_update(struct vm *vm, struct errbuf *eb)
{
	struct kvm_irq_level irq = { .irq = ACPI_GED_GSI, .level = 1 };
	int r = vmgenid_write(&vm->mem, eb);

	if (r)
		return r;
	/* an edge: the GED's interrupt is edge-triggered (its _CRS) */
	if (ioctl(vm->kvm.vm_fd, KVM_IRQ_LINE, &irq) < 0)
		return errbuf_set(eb, -errno, "VMGenID: raising GSI %u: %s", ACPI_GED_GSI,
				  strerror(errno));
	irq.level = 0;
	if (ioctl(vm->kvm.vm_fd, KVM_IRQ_LINE, &irq) < 0)
		return errbuf_set(eb, -errno, "VMGenID: lowering GSI %u: %s", ACPI_GED_GSI,
				  strerror(errno));
	return 0;
}
