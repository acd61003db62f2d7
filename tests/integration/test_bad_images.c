/*
 * ember fed broken kernels and boot inputs, end to end: each must exit 1 with a message
 * on stderr that names the problem, and never crash (no signal, no sanitizer report).
 * The images are built with the image builder into a private temp directory.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testlib.h"

#define RUN_MS 20000

static struct proc_result r;
static char dir[PATH_MAX];

static void init(void)
{
	ember_test_tmpdir(dir, sizeof(dir));
}

static void fini(void)
{
	proc_result_free(&r);
	ember_test_rmtree(dir);
}

TestSuite(bad_images, .init = init, .fini = fini, .timeout = 60);

/* Boots `kernel` (with one more flag + value, or NULL) and expects exit 1 naming `what`. */
static void expect_rejected(const char *kernel, const char *what, const char *flag,
			    const char *value)
{
	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", kernel, "--mem", "64", "--console", "none",
		       flag, value, NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "ember exited %d, expected 1; stderr:\n%s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, "ember: error: "), "no error line on stderr:\n%s", r.err);
	cr_assert_not_null(strstr(r.err, what), "stderr does not say '%s':\n%s", what, r.err);
	cr_assert_null(strstr(r.err, "ember-timing first-entry"), "the guest ran:\n%s", r.err);
}

static const char *write_image(const char *name, const void *img, size_t len)
{
	return ember_test_write_file(dir, name, img, len);
}

/* One executable PT_LOAD at `paddr` with the entry at its start. */
static const char *write_elf_at(const char *name, uint64_t paddr, uint64_t size)
{
	struct tb_elf_seg seg = { .paddr = paddr, .filesz = size, .memsz = size,
				  .flags = PF_R | PF_X, .seed = 1 };
	size_t len;
	uint8_t *img = tb_build_elf(&seg, 1, paddr, &len);
	const char *path;

	cr_assert_not_null(img);
	path = write_image(name, img, len);
	free(img);
	return path;
}

/* The real hello guest, cut to `keep` bytes (0: half its size). */
static const char *write_truncated_hello(const char *name, size_t keep)
{
	const char *src = ember_test_guest("hello");
	FILE *f = fopen(src, "rb");
	static uint8_t buf[1 << 20];
	size_t len;

	cr_assert_not_null(f, "%s: %s", src, strerror(errno));
	len = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	cr_assert_gt(len, 4096u, "%s is suspiciously small", src);
	return write_image(name, buf, keep ? keep : len / 2);
}

/* ---- files that are not kernels at all ---------------------------------------------- */

Test(bad_images, nonexistent_kernel_is_named_with_the_os_error)
{
	char path[PATH_MAX + 16];

	snprintf(path, sizeof(path), "%s/no-such-kernel", dir);
	expect_rejected(path, "no-such-kernel: No such file or directory", NULL, NULL);
}

Test(bad_images, empty_kernel_file_is_rejected)
{
	expect_rejected(write_image("empty", "", 0), "file is empty", NULL, NULL);
}

Test(bad_images, directory_as_kernel_is_rejected)
{
	expect_rejected(dir, "not a regular file", NULL, NULL);
}

Test(bad_images, random_bytes_are_neither_elf_nor_bzimage)
{
	static uint8_t junk[64 << 10];
	uint64_t s = 0x9e3779b97f4a7c15ull;

	for (size_t i = 0; i < sizeof(junk); i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		junk[i] = (uint8_t)s;
	}
	junk[0] = 0; /* never \x7fELF by chance */
	junk[0x202] = 0; /* nor HdrS */
	expect_rejected(write_image("junk", junk, sizeof(junk)), "neither an ELF", NULL, NULL);
}

/* ---- broken ELF ------------------------------------------------------------------------ */

Test(bad_images, elf_cut_inside_its_header_is_rejected)
{
	expect_rejected(write_truncated_hello("cut-header.elf", 40), "truncated ELF header", NULL,
			NULL);
}

Test(bad_images, elf_cut_inside_a_segment_is_rejected)
{
	expect_rejected(write_truncated_hello("cut-segment.elf", 0), "is outside the file", NULL,
			NULL);
}

Test(bad_images, elf_segment_over_boot_params_is_rejected)
{
	/* [0x6000, 0x8000) covers boot_params at 0x7000 */
	expect_rejected(write_elf_at("low.elf", 0x6000, 0x2000), "overlaps the boot structures",
			NULL, NULL);
}

Test(bad_images, elf_segment_beyond_ram_is_rejected)
{
	/* 128 MiB into a 64 MiB guest */
	expect_rejected(write_elf_at("high.elf", 128ull << 20, 0x1000), "is outside guest RAM",
			NULL, NULL);
}

/* ---- broken bzImage ------------------------------------------------------------------------ */

Test(bad_images, bzimage_with_bad_boot_flag_is_rejected)
{
	struct tb_bzimage b;
	size_t len;
	uint8_t *img;

	tb_bzimage_defaults(&b);
	img = tb_build_bzimage(&b, &len);
	cr_assert_not_null(img);
	img[0x1fe] = 0x12; /* boot_flag 0xaa55 -> 0xaa12 */
	expect_rejected(write_image("badflag.bzImage", img, len), "boot_flag at 0x1fe", NULL, NULL);
	free(img);
}

Test(bad_images, bzimage_without_hdrs_magic_is_not_recognised)
{
	struct tb_bzimage b;
	size_t len;
	uint8_t *img;

	tb_bzimage_defaults(&b);
	img = tb_build_bzimage(&b, &len);
	cr_assert_not_null(img);
	memcpy(img + 0x202, "HdrX", 4);
	expect_rejected(write_image("badmagic.bzImage", img, len), "nor a bzImage", NULL, NULL);
	free(img);
}

Test(bad_images, bzimage_with_corrupt_lz4_payload_is_rejected)
{
	struct tb_elf_seg seg = { .paddr = 0x1000000, .filesz = 0x10000, .memsz = 0x20000,
				  .flags = PF_R | PF_X, .seed = 3 };
	size_t elen, len;
	uint8_t *elf = tb_build_elf(&seg, 1, 0x1000000, &elen);
	uint8_t *img, *payload;

	cr_assert_not_null(elf);
	img = tb_build_lz4_bzimage(elf, elen, &len);
	free(elf);
	cr_assert_not_null(img);
	payload = img + tb_bzimage_pm_offset(img) + TB_LZ4_PAYLOAD_OFFSET;
	/* past the magic and the first block size: LZ4 match offsets that point before
	 * the start of the output */
	memset(payload + 8, 0xff, 64);
	expect_rejected(write_image("badlz4.bzImage", img, len), "LZ4 block 0", NULL, NULL);
	cr_assert_not_null(strstr(r.err, "corrupt"), "stderr:\n%s", r.err);
	free(img);
}

/* ---- other boot inputs ---------------------------------------------------------------------- */

Test(bad_images, missing_initrd_is_named_with_the_os_error)
{
	char path[PATH_MAX + 16];

	snprintf(path, sizeof(path), "%s/no-such-initrd", dir);
	expect_rejected(ember_test_guest("hello"), "initrd", "--initrd", path);
	cr_assert_not_null(strstr(r.err, "no-such-initrd: No such file or directory"), "stderr:\n%s",
			   r.err);
}

Test(bad_images, cmdline_over_the_limit_is_rejected_with_its_length)
{
	static char cmdline[70001];

	memset(cmdline, 'a', sizeof(cmdline) - 1);
	/* 70000 bytes and the virtio-rng entry ember appends */
	expect_rejected(ember_test_guest("hello"), "kernel command line is 700", "--cmdline",
			cmdline);
	cr_assert_not_null(strstr(r.err, "virtio_mmio.device entries ember appended"), "%s", r.err);
}
