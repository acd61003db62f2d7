/*
 * The test guests under QEMU's microvm, booted through their PVH note (bench/'s qemu
 * peer depends on it): they reach the UART, read their command line and memory map from
 * hvm_start_info, and end the VM through isa-debug-exit (QEMU exits with code*2+1).
 * Skipped, loudly, when qemu-system-x86_64 is not installed (bench/qemu_peer.sh installs
 * it) or /dev/kvm is unusable.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testlib.h"

#define RUN_MS 30000

static struct proc_result r;

static void fini(void)
{
	proc_result_free(&r);
}

TestSuite(qemu_pvh, .fini = fini, .timeout = 90);

static const char *qemu_path(void)
{
	static const char *const paths[] = { "/usr/bin/qemu-system-x86_64",
					     "/usr/local/bin/qemu-system-x86_64" };

	ember_test_require_kvm();
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (access(paths[i], X_OK) == 0)
			return paths[i];
	cr_log_info("SKIP: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86): "
		    "the guests' PVH boot is untested");
	cr_skip_test("qemu-system-x86_64 is not installed");
	return NULL;
}

/* Runs a guest under QEMU microvm, its COM1 on stdout; cmdline may be NULL. */
static void run_qemu(const char *guest, const char *cmdline)
{
	/* QEMU 7.2 aborts on -cpu host here: this KVM refuses IA32_ARCH_CAPABILITIES */
	char *argv[32] = { (char *)qemu_path(), "-M", "microvm", "-enable-kvm", "-cpu",
			   "host,-arch-capabilities", "-m", "256M", "-nodefaults",
			   "-no-user-config", "-nographic", "-serial", "stdio", "-device",
			   "isa-debug-exit", "-kernel", (char *)ember_test_guest(guest) };
	unsigned n = 17;

	if (cmdline) {
		argv[n++] = "-append";
		argv[n++] = (char *)cmdline;
	}
	argv[n] = NULL;
	cr_assert_eq(proc_run(argv, RUN_MS, &r), 0);
	cr_assert_not(r.timed_out, "QEMU still ran after %u ms; stdout:\n%s\nstderr:\n%s", RUN_MS,
		      r.out, r.err);
}

static uint64_t checksum(const char *text)
{
	const char *s = strstr(text, "checksum=");

	cr_assert_not_null(s, "no checksum= line in:\n%s", text);
	return strtoull(s + 9, NULL, 16);
}

Test(qemu_pvh, hello_prints_and_ends_through_isa_debug_exit)
{
	run_qemu("hello", NULL);
	cr_assert(strstr(r.out, "hello from ember guest\n"), "stdout:\n%s\nstderr:\n%s", r.out, r.err);
	cr_assert_eq(r.status, 1, "QEMU exited %d (want 1: the guest's reset, code 0)", r.status);
}

Test(qemu_pvh, sandbox_reads_its_command_line_and_memory_map_from_hvm_start_info)
{
	uint64_t under_qemu;

	run_qemu("sandbox", "heap=16M seed=7 resume_line");
	cr_assert(strstr(r.out, "sandbox: heap=16777216 seed=7 "), "stdout:\n%s", r.out);
	cr_assert(strstr(r.out, "\nresumed\n"), "stdout:\n%s", r.out);
	cr_assert_eq(r.status, 1, "QEMU exited %d; stdout:\n%s", r.status, r.out);
	under_qemu = checksum(r.out);
	proc_result_free(&r);

	/* the same heap under ember, from the same command line */
	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
		       "heap=16M seed=7", NULL);
	cr_assert_eq(r.status, 0, "ember exited %d; stderr:\n%s", r.status, r.err);
	cr_assert_eq(checksum(r.out), under_qemu, "QEMU's heap differs from ember's");
}

Test(qemu_pvh, a_failed_assertion_reaches_the_uart_and_the_exit_status)
{
	run_qemu("sandbox", "heap=lots");
	cr_assert(strstr(r.out, "heap=lots is not a number"), "stdout:\n%s", r.out);
	cr_assert_eq(r.status, 7, "QEMU exited %d (want 7: ASSERT, code 3)", r.status);
}
