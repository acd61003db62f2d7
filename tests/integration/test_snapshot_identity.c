/*
 * A raw memory file has no header: the state ties it to itself through the memory
 * digests (FORMAT.md section 5.1). A memory file from another snapshot, or all zeros,
 * must be refused by restore and by ember-snap verify; verify --deep finds one flipped
 * byte anywhere and names its block.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snapfmt.h"
#include "testlib.h"

#define WAIT_MS 30000

static char tmp[PATH_MAX];

static void fini(void)
{
	ember_test_rmtree(tmp);
	tmp[0] = 0;
}

TestSuite(snapshot_identity, .fini = fini, .timeout = 120);

static void golden(char *dir, const char *name, const char *cmdline)
{
	snapt_join(dir, tmp, "%s", name);
	snapt_golden(dir, cmdline, 64);
}

/* dst: src's state with the memory file replaced by `mem` (copied). */
static void with_memory_of(const char *src, const char *mem_dir, char *dst)
{
	char a[PATH_MAX], b[PATH_MAX];

	snapt_join(dst, tmp, "mixed");
	snapt_copy_dir(src, dst, true);
	snapt_join(a, mem_dir, "memory.raw");
	snapt_join(b, dst, "memory.raw");
	cr_assert_eq(unlink(b), 0);
	cr_assert_eq(link(a, b), 0, "link: %s", strerror(errno));
}

static void assert_refused(const char *dir, const char *needle)
{
	struct proc_result r;

	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", dir, "--guest-cmd", "verify",
		       "--guest-cmd", "exit", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "restore exited %d:\n%s%s", r.status, r.out, r.err);
	cr_assert_not_null(strstr(r.err, needle), "restore said:\n%s", r.err);
	proc_result_free(&r);
	snapt_tool(&r, WAIT_MS, "verify", dir, NULL);
	cr_assert_eq(r.status, 1, "verify exited %d:\n%s%s", r.status, r.out, r.err);
	cr_assert_not_null(strstr(r.out, needle), "verify said:\n%s", r.out);
	proc_result_free(&r);
}

Test(snapshot_identity, a_memory_file_from_another_snapshot_is_refused)
{
	char a[PATH_MAX], b[PATH_MAX], mixed[PATH_MAX];

	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	golden(a, "a", "heap=16M seed=1");
	golden(b, "b", "heap=16M seed=2");
	with_memory_of(a, b, mixed);
	assert_refused(mixed, "memory file memory.raw does not belong to this state file");
}

Test(snapshot_identity, an_all_zero_memory_file_is_refused)
{
	char a[PATH_MAX], mem[PATH_MAX];

	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	golden(a, "a", "heap=16M seed=1");
	snapt_join(mem, a, "memory.raw");
	cr_assert_eq(truncate(mem, 0), 0);
	cr_assert_eq(truncate(mem, 64 << 20), 0);
	assert_refused(a, "does not belong to this state file");
}

Test(snapshot_identity, verify_deep_finds_one_flipped_byte_and_names_its_block)
{
	char a[PATH_MAX], mem[PATH_MAX];
	struct proc_result r;
	const off_t off = (5 << 20) + 4096 * 3 + 77; /* in block 2 of 2 MiB */
	uint8_t byte;
	int fd;

	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	golden(a, "a", "heap=16M seed=1");
	snapt_tool(&r, WAIT_MS, "verify", "--deep", a, NULL);
	cr_assert_eq(r.status, 0, "verify --deep of a good snapshot exited %d:\n%s", r.status, r.err);
	proc_result_free(&r);
	snapt_join(mem, a, "memory.raw");
	fd = open(mem, O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &byte, 1, off), 1);
	byte ^= 0x10;
	cr_assert_eq(pwrite(fd, &byte, 1, off), 1);
	close(fd);
	snapt_tool(&r, WAIT_MS, "verify", "--deep", a, NULL);
	cr_assert_eq(r.status, 1, "verify --deep exited %d:\n%s%s", r.status, r.out, r.err);
	cr_assert_not_null(strstr(r.out, "memory block 2 (bytes 0x400000..0x600000): CRC32C"),
			   "verify --deep said:\n%s", r.out);
	proc_result_free(&r);
}
