/*
 * The guest's console output on the host: a guest cannot fill the host's disk
 * (--console-limit), output lost to a failing console (a full disk) is counted,
 * reported and makes the run exit 1, and ctl status shows the counts.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

#define RUN_MS 30000
#define GUEST_BYTES 100000

static char tmp[PATH_MAX], small[PATH_MAX];
static bool mounted;
static struct proc_result r;

static void fini(void)
{
	proc_result_free(&r);
	if (mounted)
		umount2(small, MNT_DETACH);
	mounted = false;
	if (tmp[0])
		ember_test_rmtree(tmp);
	tmp[0] = 0;
}

TestSuite(console, .fini = fini, .timeout = 90);

/* Writes GUEST_BYTES 'x' to COM1, then resets through the i8042 (exit 0). */
static const char *chatty_guest(void)
{
	static const uint8_t code[] = {
		0xb9, GUEST_BYTES & 0xff, (GUEST_BYTES >> 8) & 0xff, (GUEST_BYTES >> 16) & 0xff,
		0x00,                   /* mov ecx, GUEST_BYTES */
		0x66, 0xba, 0xf8, 0x03, /* mov dx, 0x3f8 */
		0xb0, 0x78,             /* mov al, 'x' */
		0xee,                   /* 1: out dx, al */
		0xe2, 0xfd,             /* loop 1b */
		0xb0, 0xfe, 0xe6, 0x64, /* mov al, 0xfe; out 0x64, al */
		0xf4, 0xeb, 0xfd,       /* hlt; jmp .-1 */
	};
	struct tb_elf_seg seg = { .paddr = 0x200000, .filesz = 4096, .memsz = 4096,
				  .flags = PF_R | PF_X };
	size_t len;
	uint8_t *img = tb_build_elf(&seg, 1, 0x200000, &len);
	const char *path;

	cr_assert_not_null(img);
	memcpy(img + tb_elf_phdr(img, 0)->p_offset, code, sizeof(code));
	path = ember_test_write_file(tmp, "chatty.elf", img, len);
	free(img);
	return path;
}

static void setup(void)
{
	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
}

static uint64_t console_field(const char *key)
{
	char line[512], pat[64];
	const char *v;

	cr_assert_not_null(proc_find_line(r.err, "ember-console ", line, sizeof(line)),
			   "no ember-console line:\n%s", r.err);
	snprintf(pat, sizeof(pat), " %s=", key);
	v = strstr(line, pat);
	cr_assert_not_null(v, "no %s in: %s", key, line);
	return strtoull(v + strlen(pat), NULL, 10);
}

static off_t file_size(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
	return st.st_size;
}

Test(console, console_limit_caps_what_reaches_the_console_file, .init = setup)
{
	char out[PATH_MAX], arg[PATH_MAX + 8];

	snapt_join(out, tmp, "console.log");
	snprintf(arg, sizeof(arg), "file:%s", out);
	ember_test_run(&r, RUN_MS, "boot", "--kernel", chatty_guest(), "--console", arg,
		       "--console-limit", "10K", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "a limit the user set is not an error: exit %d\n%s", r.status,
		     r.err);
	cr_assert_eq(file_size(out), 10240, "the console file is not 10 KiB");
	cr_assert_eq(console_field("bytes"), GUEST_BYTES);
	cr_assert_eq(console_field("bytes_written"), 10240);
	cr_assert_eq(console_field("bytes_limited"), GUEST_BYTES - 10240);
	cr_assert_eq(console_field("bytes_dropped"), 0);
	cr_assert_eq(console_field("limit"), 10240);
	cr_assert(strstr(r.err, "--console-limit"), "no warning about the limit:\n%s", r.err);
}

Test(console, output_under_the_default_limit_is_all_written_and_not_reported, .init = setup)
{
	char out[PATH_MAX], arg[PATH_MAX + 8];

	snapt_join(out, tmp, "console.log");
	snprintf(arg, sizeof(arg), "file:%s", out);
	ember_test_run(&r, RUN_MS, "boot", "--kernel", chatty_guest(), "--console", arg, NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "exit %d\n%s", r.status, r.err);
	cr_assert_eq(file_size(out), GUEST_BYTES);
	cr_assert_null(strstr(r.err, "ember-console"), "nothing was lost:\n%s", r.err);
}

Test(console, timings_always_print_the_console_line, .init = setup)
{
	ember_test_run(&r, RUN_MS, "boot", "--kernel", chatty_guest(), "--console", "none",
		       "--timings", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "exit %d\n%s", r.status, r.err);
	cr_assert_eq(console_field("bytes"), GUEST_BYTES);
	cr_assert_eq(console_field("bytes_written"), 0);
	cr_assert_eq(console_field("bytes_dropped"), 0, "--console none drops nothing");
}

Test(console, output_lost_on_a_full_disk_is_counted_and_exits_1, .init = setup)
{
	char out[PATH_MAX], arg[PATH_MAX + 8], fill[PATH_MAX];
	static char block[4096];
	int fd;

	snapt_join(small, tmp, "small");
	cr_assert_eq(mkdir(small, 0755), 0);
	if (mount("ember-test", small, "tmpfs", 0, "size=64k") != 0) {
		cr_log_info("SKIP: cannot mount a tmpfs (%s): ENOSPC not tested", strerror(errno));
		cr_skip_test("mounting a tmpfs needs root");
	}
	mounted = true;
	/* fill it: the console's first write meets ENOSPC */
	snapt_join(fill, small, "fill");
	fd = open(fill, O_WRONLY | O_CREAT, 0644);
	cr_assert_geq(fd, 0);
	while (write(fd, block, sizeof(block)) > 0)
		;
	cr_assert_eq(errno, ENOSPC);
	close(fd);
	snapt_join(out, small, "console.log");
	snprintf(arg, sizeof(arg), "file:%s", out);
	ember_test_run(&r, RUN_MS, "boot", "--kernel", chatty_guest(), "--console", arg, NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "lost console output, exit %d\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "No space left on device"), "the cause is not named:\n%s", r.err);
	cr_assert_eq(console_field("bytes"), GUEST_BYTES);
	cr_assert_eq(console_field("bytes_written") + console_field("bytes_dropped"), GUEST_BYTES);
	cr_assert_eq(console_field("bytes_dropped"), GUEST_BYTES - (uint64_t)file_size(out));
	cr_assert(strstr(r.err, "bytes of guest console output were lost"), "%s", r.err);
}

Test(console, ctl_status_reports_the_console_counts, .init = setup)
{
	char sock[PATH_MAX];
	struct proc *vmm;
	struct proc_result st;

	snapt_join(sock, tmp, "api.sock");
	vmm = ember_test_start("boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
			       "heap=4M seed=5", "--mem", "32", "--api-sock", sock, "--console-limit", "8",
			       NULL);
	snapt_wait_socket(sock, RUN_MS);
	/* the sandbox prints its checksum line once booted: more than the 8 bytes allowed */
	for (unsigned waited = 0;; waited += 50) {
		snapt_ctl(&st, sock, "--json", "status", NULL);
		cr_assert_eq(st.status, 0, "%s%s", st.out, st.err);
		cr_assert(strstr(st.out, "\"console_bytes\":"), "%s", st.out);
		cr_assert(strstr(st.out, "\"console_dropped\":0"), "%s", st.out);
		cr_assert(strstr(st.out, "\"console_limited\":"), "%s", st.out);
		if (!strstr(st.out, "\"console_limited\":0"))
			break;
		cr_assert_lt(waited, RUN_MS, "console_limited stayed 0: %s", st.out);
		proc_result_free(&st);
		usleep(50 * 1000);
	}
	proc_result_free(&st);
	snapt_ctl(&st, sock, "shutdown", NULL);
	proc_result_free(&st);
	cr_assert_eq(proc_finish(vmm, RUN_MS, &r), 0);
	cr_assert_eq(r.status, 0, "%s", r.err);
}
