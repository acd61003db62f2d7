/* Devices under unit test: the real table and creation path on a VM shell. */
#include <criterion/criterion.h>

#include "testlib.h"
#include "dev/dev.h"

struct vm *devt_vm(int console_fd)
{
	struct vm_config cfg = { .nr_vcpus = 1, .console = CONSOLE_NONE };
	struct vm *vm = vm_alloc(&cfg);

	cr_assert_not_null(vm, "vm_alloc");
	vm->console_fd = console_fd;
	return vm;
}

void devt_vm_free(struct vm *vm)
{
	vm->console_fd = -1; /* the test's, not the VM's */
	vm_destroy(vm);
}

struct device *devt_create(struct vm *vm, const char *name)
{
	const struct dev_slot *slot = dev_slot_find(name);
	struct errbuf eb = { "" };
	struct device *d = NULL;

	cr_assert_not_null(slot, "no device %s in the table", name);
	cr_assert_eq(dev_create(vm, slot, &d, &eb), 0, "%s: %s", name, eb.msg);
	return d;
}

bool devt_take_reset(struct vm *vm)
{
	bool reset = vm->stop_reason == VM_STOP_RESET;

	vm->stop_reason = VM_STOP_NONE;
	atomic_store(&vm->stopping, false);
	return reset;
}
