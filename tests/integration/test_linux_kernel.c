/*
 * A real Linux kernel: Debian's cloud bzImage (LZ4 payload) booted by ember. This
 * platform emulates guest ring 0 (shared/PLATFORM.md), so the kernel cannot finish
 * booting here; what we can check is that it left its entry path: after 2 s it runs
 * in its own page tables (CR3 is no longer ember's boot PML4) at a virtual kernel-text
 * address. The kernel is fetched once by scripts/fetch-debian-kernel.sh and cached in
 * build/debian-kernel/ (shared by build/ and build-san/).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <string.h>

#include "testlib.h"

#define FETCH_MS  240000 /* first run only: apt-get download of ~8 MB */

static struct proc_result fetch, boot;

static void fini(void)
{
	proc_result_free(&fetch);
	proc_result_free(&boot);
}

TestSuite(linux_kernel, .fini = fini, .timeout = 300);

/* Path of the cached vmlinuz; skips the test loudly when it cannot be had (exit 77). */
static const char *debian_kernel(void)
{
	static char *const argv[] = { "scripts/fetch-debian-kernel.sh", "build/debian-kernel", NULL };
	char *nl;

	cr_assert_eq(proc_run(argv, FETCH_MS, &fetch), 0, "cannot run %s", argv[0]);
	if (fetch.status == 77) {
		cr_log_info("SKIP: no Debian kernel: %s", fetch.err);
		cr_skip_test("scripts/fetch-debian-kernel.sh could not fetch the kernel (exit 77)");
	}
	cr_assert_eq(fetch.status, 0, "%s exited %d:\n%s", argv[0], fetch.status, fetch.err);
	nl = strchr(fetch.out, '\n');
	if (nl)
		*nl = 0;
	cr_assert_neq(fetch.out[0], 0, "%s printed no path", argv[0]);
	return fetch.out;
}

Test(linux_kernel, debian_kernel_reaches_its_own_page_tables)
{
	ember_test_require_kvm();
	ember_test_run(&boot, 30000, "boot", "--kernel", debian_kernel(), "--mem", "512",
		       "--timeout", "2", "--dump-regs", "--console", "none", NULL);
	ember_test_assert_linux_own_page_tables(&boot);
}
