/*
 * memguard.c's backstop: a VMM write into guest RAM whose backing file was truncated
 * under it must not kill ember with SIGBUS; the VM is wedged and stops with a message.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testlib.h"
#include "vmm.h"

TestSuite(memguard);

Test(memguard, a_sigbus_on_guest_ram_becomes_a_clean_stop)
{
	struct vm *vm = devt_vm(-1);
	struct mem_region region = { .gpa = 0, .size = 4 * PAGE_SIZE, .offset = 0 };
	struct errbuf eb = { "" };
	char path[] = "/tmp/ember-memguard.XXXXXX";
	uint8_t byte = 0x42, back = 0;
	int fd = mkstemp(path);

	cr_assert_geq(fd, 0);
	unlink(path);
	cr_assert_eq(ftruncate(fd, 4 * PAGE_SIZE), 0);
	cr_assert_eq(mem_set_regions(&vm->mem, &region, 1, 4 * PAGE_SIZE, &eb), 0, "%s", eb.msg);
	cr_assert_eq(mem_map_file(&vm->mem, fd, &eb), 0, "%s", eb.msg);
	cr_assert_eq(memguard_sigbus_init(vm), 0);
	/* the file loses its last two pages under the mapping: touching them is SIGBUS */
	cr_assert_eq(ftruncate(fd, 2 * PAGE_SIZE), 0);
	cr_assert_eq(gpa_write(&vm->mem, 3 * PAGE_SIZE + 5, &byte, 1), 0);
	cr_assert_eq(gpa_read(&vm->mem, 3 * PAGE_SIZE + 5, &back, 1), 0);
	cr_assert_eq(back, byte, "the access did not complete on the page put in place");
	cr_assert(atomic_load(&vm->wedged), "the VM was not wedged");
	memguard_poll(vm);
	cr_assert_eq(vm->stop_reason, VM_STOP_ERROR);
	cr_assert_not_null(strstr(vm->stop_msg, "offset 0x3000 could not be read (SIGBUS"), "%s",
			   vm->stop_msg);
	/* a page that is still there is untouched by all this */
	cr_assert_eq(gpa_write(&vm->mem, PAGE_SIZE, &byte, 1), 0);
	close(fd);
	devt_vm_free(vm);
}
