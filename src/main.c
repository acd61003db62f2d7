/* ember: the command-line front end. Parsing is in cli.c; this file runs commands. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "arch/x86_64/x86.h"

static void report_stop(struct vm *vm)
{
	switch (vm->stop_reason) {
	case VM_STOP_ERROR:
	case VM_STOP_ASSERT:
		pr_err("%s", vm->stop_msg);
		break;
	case VM_STOP_SIGNAL:
	case VM_STOP_TIMEOUT:
		pr_warn("%s", vm->stop_msg);
		break;
	default:
		pr_info("%s", vm->stop_msg);
	}
}

static int cmd_boot(const struct cli *c)
{
	struct errbuf eb = { "" };
	struct vm *vm;
	int r, status;

	r = vm_create(&vm, &c->vm, &eb);
	if (r) {
		pr_err("%s", eb.msg);
		return 1;
	}
	r = vm_boot_load(vm, &eb);
	if (r) {
		pr_err("%s", eb.msg);
		vm_destroy(vm);
		return 1;
	}
	vm_run(vm);
	timing_mark("exit");
	report_stop(vm);
	if (c->dump_regs)
		x86_dump_vcpus(vm, stderr);
	status = vm_exit_status(vm);
	vm_destroy(vm);
	return status;
}

int main(int argc, char **argv)
{
	struct errbuf eb = { "" };
	struct cli c;

	if (cli_parse(argc, argv, &c, &eb)) {
		fprintf(stderr, "ember: %s\nTry 'ember --help'.\n", eb.msg);
		return 2;
	}
	switch (c.cmd) {
	case CLI_HELP:
		cli_usage(stdout);
		return 0;
	case CLI_VERSION:
		printf("ember %s\n", EMBER_VERSION);
		return 0;
	case CLI_BOOT:
		timing_enable(c.vm.timings);
		return cmd_boot(&c);
	}
	return 2;
}
