/* Loader: ELF and bzImage images, cmdline, initrd, boot_params and e820, byte by byte. */
#include <asm/bootparam.h>
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch/x86_64/loader_internal.h"
#include "../lib/testlib.h"

static struct guest_mem mem;
static struct errbuf eb;
static struct boot_info bi;

static void setup_64m(void)
{
	tb_mem_init(&mem, 64 * MiB);
	memset(&eb, 0, sizeof(eb));
	memset(&bi, 0, sizeof(bi));
}

static void remove_tmp(void);

static void teardown(void)
{
	mem_free(&mem);
	remove_tmp();
}

TestSuite(loader, .init = setup_64m, .fini = teardown);

static void remap(uint64_t bytes)
{
	mem_free(&mem);
	tb_mem_init(&mem, bytes);
}

static int load(const uint8_t *k, size_t klen, const uint8_t *rd, size_t rdlen, const char *cmd)
{
	struct load_args a = {
		.kernel = k, .kernel_len = klen, .initrd = rd, .initrd_len = rdlen, .cmdline = cmd,
	};

	return loader_load(&mem, &a, &bi, &eb);
}

static const struct boot_params *bp(void)
{
	const struct boot_params *p = gpa_ptr(&mem, BOOT_PARAMS_ADDR, sizeof(*p));

	cr_assert_not_null(p);
	return p;
}

static const uint8_t *guest(uint64_t gpa, uint64_t len)
{
	const uint8_t *p = gpa_ptr(&mem, gpa, len);

	cr_assert_not_null(p, "gpa 0x%llx+0x%llx not in RAM", (unsigned long long)gpa,
			   (unsigned long long)len);
	return p;
}

#define expect_error(ret, err, substr)                                                      \
	do {                                                                                \
		cr_assert_eq((ret), (err), "expected %d, got %d (%s)", (err), (ret), eb.msg); \
		cr_assert_not_null(strstr(eb.msg, (substr)), "message \"%s\" lacks \"%s\"",   \
				   eb.msg, (substr));                                       \
	} while (0)

/* text at 1 MiB: 8 KiB of file in a 12 KiB segment (4 KiB bss); data at 2 MiB. */
static const struct tb_elf_seg simple_segs[] = {
	{ .paddr = 0x100000, .filesz = 0x2000, .memsz = 0x3000, .flags = PF_R | PF_X, .seed = 1 },
	{ .paddr = 0x200000, .filesz = 0x1000, .memsz = 0x1000, .flags = PF_R | PF_W, .seed = 7 },
};
#define SIMPLE_ENTRY 0x100040ull

static uint8_t *simple_elf(size_t *len)
{
	uint8_t *img = tb_build_elf(simple_segs, 2, SIMPLE_ENTRY, len);

	cr_assert_not_null(img);
	return img;
}

static uint8_t *simple_bzimage(size_t *len)
{
	struct tb_bzimage b;
	uint8_t *img;

	tb_bzimage_defaults(&b);
	img = tb_build_bzimage(&b, len);
	cr_assert_not_null(img);
	return img;
}

/* ---- ELF: what is loaded ------------------------------------------------------------------ */

Test(loader, copies_elf_segments_to_their_physical_addresses)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	for (unsigned s = 0; s < 2; s++) {
		const uint8_t *g = guest(simple_segs[s].paddr, simple_segs[s].filesz);

		for (uint64_t i = 0; i < simple_segs[s].filesz; i++)
			cr_assert_eq(g[i], tb_seg_byte(simple_segs[s].seed, i), "seg %u byte %llu", s,
				     (unsigned long long)i);
	}
	free(img);
}

Test(loader, zeroes_elf_bss_beyond_file_size)
{
	size_t len;
	uint8_t *img = simple_elf(&len);
	const uint8_t *bss;

	memset(gpa_map_write(&mem, 0x102000, 0x1000), 0xcc, 0x1000);
	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	bss = guest(0x102000, 0x1000);
	for (unsigned i = 0; i < 0x1000; i++)
		cr_assert_eq(bss[i], 0, "bss byte %u", i);
	free(img);
}

Test(loader, reports_elf_entry_and_kernel_extent)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	cr_assert_eq(bi.kind, KERNEL_ELF);
	cr_assert_eq(bi.entry, SIMPLE_ENTRY);
	cr_assert_eq(bi.kernel_start, 0x100000);
	cr_assert_eq(bi.kernel_end, 0x201000);
	free(img);
}

Test(loader, skips_non_load_and_empty_program_headers)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	/* a PT_NOTE pointing nowhere and an empty PT_LOAD must both be ignored */
	tb_elf_phdr(img, 1)->p_type = PT_NOTE;
	tb_elf_phdr(img, 1)->p_paddr = 0x7000;
	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	cr_assert_eq(bi.kernel_end, 0x103000);
	free(img);
}

Test(loader, builds_default_setup_header_for_elf)
{
	size_t len;
	uint8_t *img = simple_elf(&len);
	const struct setup_header *h;

	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	h = &bp()->hdr;
	cr_assert_eq(h->boot_flag, 0xaa55);
	cr_assert_eq(h->header, 0x53726448);
	cr_assert_eq(h->version, 0x020f);
	cr_assert_eq(h->type_of_loader, 0xff);
	cr_assert(h->loadflags & LOADED_HIGH);
	cr_assert_eq(h->kernel_alignment, 0x1000000);
	cr_assert_eq(h->initrd_addr_max, 0x37ffffff);
	cr_assert_eq(h->cmdline_size, BOOT_CMDLINE_MAX - 1);
	cr_assert_eq(h->cmd_line_ptr, BOOT_CMDLINE_ADDR);
	cr_assert_eq(h->ramdisk_image, 0);
	cr_assert_eq(h->ramdisk_size, 0);
	cr_assert_eq(bp()->ext_cmd_line_ptr, 0);
	cr_assert_eq(bp()->sentinel, 0);
	free(img);
}

/* ---- ELF: rejections ------------------------------------------------------------------------ */

Test(loader, rejects_truncated_elf_header)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	expect_error(load(img, 40, NULL, 0, NULL), -EINVAL, "truncated ELF header");
	free(img);
}

Test(loader, rejects_image_that_is_neither_elf_nor_bzimage)
{
	uint8_t junk[4096];

	memset(junk, 0x41, sizeof(junk));
	expect_error(load(junk, sizeof(junk), NULL, 0, NULL), -EINVAL, "neither an ELF");
}

Test(loader, rejects_empty_kernel)
{
	uint8_t b = 0;

	expect_error(load(&b, 0, NULL, 0, NULL), -EINVAL, "kernel image is empty");
}

Test(loader, rejects_32bit_elf)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_ehdr(img)->e_ident[EI_CLASS] = ELFCLASS32;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "EI_CLASS 1");
	free(img);
}

Test(loader, rejects_big_endian_elf)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_ehdr(img)->e_ident[EI_DATA] = ELFDATA2MSB;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "not little-endian");
	free(img);
}

Test(loader, rejects_bad_elf_version)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_ehdr(img)->e_version = 7;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "ELF version");
	free(img);
}

Test(loader, rejects_non_x86_64_elf)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_ehdr(img)->e_machine = EM_386;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "e_machine 3 is not x86-64");
	free(img);
}

Test(loader, rejects_pie_elf)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_ehdr(img)->e_type = ET_DYN;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "e_type 3 is not ET_EXEC");
	free(img);
}

Test(loader, rejects_wrong_phentsize)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_ehdr(img)->e_phentsize = 32;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "e_phentsize 32");
	free(img);
}

Test(loader, rejects_elf_without_program_headers)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_ehdr(img)->e_phnum = 0;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "e_phnum 0");
	free(img);
}

Test(loader, rejects_program_header_table_past_end_of_file)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_ehdr(img)->e_phoff = len - 60;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "program header table");
	free(img);
}

Test(loader, rejects_program_header_offset_that_overflows)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_ehdr(img)->e_phoff = UINT64_MAX - 8;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "is outside the file");
	free(img);
}

Test(loader, rejects_segment_file_range_outside_file)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_phdr(img, 1)->p_offset = len - 0x800; /* 0x1000 bytes from there run past EOF */
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "PT_LOAD 1: file range");
	free(img);
}

Test(loader, rejects_segment_file_offset_plus_size_overflow)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_phdr(img, 0)->p_offset = UINT64_MAX - 0x10;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "PT_LOAD 0: file range");
	free(img);
}

Test(loader, rejects_filesz_larger_than_memsz)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_phdr(img, 0)->p_memsz = 0x1000;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "p_filesz 0x2000 > p_memsz 0x1000");
	free(img);
}

Test(loader, rejects_segment_beyond_end_of_ram)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_phdr(img, 1)->p_paddr = 64 * MiB - 0x800;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "PT_LOAD 1 [0x3fff800, 0x4000800) is outside guest RAM");
	free(img);
}

Test(loader, rejects_segment_crossing_into_the_mmio_hole)
{
	size_t len;
	uint8_t *img;

	remap(4 * GiB); /* [0, 3 GiB) + [4 GiB, 5 GiB) */
	img = simple_elf(&len);
	tb_elf_phdr(img, 1)->p_paddr = MEM_HOLE_START - 0x800;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "is outside guest RAM");
	free(img);
}

Test(loader, loads_segment_above_the_mmio_hole)
{
	size_t len;
	uint8_t *img;

	remap(4 * GiB);
	img = simple_elf(&len);
	tb_elf_phdr(img, 1)->p_paddr = MEM_HOLE_END + 0x200000;
	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	cr_assert_eq(guest(MEM_HOLE_END + 0x200000, 1)[5], tb_seg_byte(7, 5));
	free(img);
}

Test(loader, rejects_entry_above_the_boot_identity_map)
{
	struct tb_elf_seg seg = { .paddr = MEM_HOLE_END, .filesz = 0x1000, .memsz = 0x1000,
				  .flags = PF_R | PF_X };
	size_t len;
	uint8_t *img;

	remap(4 * GiB);
	img = tb_build_elf(&seg, 1, MEM_HOLE_END + 0x10, &len);
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL,
		     "entry point 0x100000010 is above 4 GiB");
	free(img);
}

Test(loader, rejects_segment_address_overflow)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_phdr(img, 1)->p_paddr = UINT64_MAX - 0x100;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "overflows");
	free(img);
}

Test(loader, rejects_elf_segment_over_boot_params)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_phdr(img, 1)->p_paddr = BOOT_PARAMS_ADDR;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL,
		     "PT_LOAD 1 [0x7000, 0x8000) overlaps the boot structures at [0x0, 0x30000)");
	free(img);
}

Test(loader, rejects_elf_segment_over_ebda_and_bios_area)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_phdr(img, 1)->p_paddr = 0xff800; /* runs into 1 MiB from the reserved side */
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL,
		     "overlaps the boot structures at [0x9fc00, 0x100000)");
	free(img);
}

Test(loader, accepts_segment_in_free_low_ram)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_phdr(img, 1)->p_paddr = BOOT_RESERVED_LO_END;
	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	cr_assert_eq(bi.kernel_start, BOOT_RESERVED_LO_END);
	free(img);
}

Test(loader, rejects_overlapping_segments)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_phdr(img, 1)->p_paddr = 0x102800; /* inside segment 0's bss */
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL,
		     "PT_LOAD 1 [0x102800, 0x103800) overlaps PT_LOAD 0 [0x100000, 0x103000)");
	free(img);
}

Test(loader, rejects_entry_outside_every_segment)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_ehdr(img)->e_entry = 0x400000;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL,
		     "entry point 0x400000 is not inside an executable PT_LOAD");
	free(img);
}

Test(loader, rejects_entry_in_non_executable_segment)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_ehdr(img)->e_entry = 0x200010;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "entry point 0x200010");
	free(img);
}

Test(loader, rejects_elf_without_loadable_segments)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_phdr(img, 0)->p_type = PT_NOTE;
	tb_elf_phdr(img, 1)->p_type = PT_NOTE;
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "no PT_LOAD segment");
	free(img);
}

Test(loader, rejects_elf_with_too_many_load_segments)
{
	struct tb_elf_seg segs[33];
	size_t len;
	uint8_t *img;

	for (unsigned i = 0; i < 33; i++)
		segs[i] = (struct tb_elf_seg){ .paddr = 0x100000 + i * 0x1000, .filesz = 0x10,
					       .memsz = 0x1000, .flags = PF_R | PF_X };
	img = tb_build_elf(segs, 33, 0x100000, &len);
	cr_assert_not_null(img);
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "more than 32 PT_LOAD segments");
	free(img);
}

Test(loader, writes_nothing_when_a_later_segment_is_invalid)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	tb_elf_phdr(img, 1)->p_paddr = 128 * MiB;
	cr_assert_neq(load(img, len, NULL, 0, NULL), 0);
	cr_assert_eq(guest(0x100000, 1)[0], 0, "segment 0 was copied before segment 1 was checked");
	free(img);
}

/* ---- command line ------------------------------------------------------------------------------ */

Test(loader, copies_cmdline_with_terminator)
{
	const char *cmd = "console=ttyS0 panic=-1 quiet";
	size_t len;
	uint8_t *img = simple_elf(&len);

	memset(gpa_map_write(&mem, BOOT_CMDLINE_ADDR, 64), 0xee, 64);
	cr_assert_eq(load(img, len, NULL, 0, cmd), 0, "%s", eb.msg);
	cr_assert_eq(memcmp(guest(BOOT_CMDLINE_ADDR, strlen(cmd)), cmd, strlen(cmd)), 0);
	cr_assert_eq(guest(BOOT_CMDLINE_ADDR, 64)[strlen(cmd)], 0);
	cr_assert_eq(bi.cmdline_addr, BOOT_CMDLINE_ADDR);
	cr_assert_eq(bi.cmdline_size, strlen(cmd) + 1);
	cr_assert_eq(bp()->hdr.cmd_line_ptr, BOOT_CMDLINE_ADDR);
	free(img);
}

Test(loader, writes_empty_cmdline_when_none_given)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	memset(gpa_map_write(&mem, BOOT_CMDLINE_ADDR, 1), 0xee, 1);
	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	cr_assert_eq(guest(BOOT_CMDLINE_ADDR, 1)[0], 0);
	cr_assert_eq(bi.cmdline_size, 1);
	free(img);
}

Test(loader, accepts_cmdline_of_exactly_the_limit)
{
	size_t len;
	uint8_t *img = simple_elf(&len);
	char *cmd = malloc(BOOT_CMDLINE_MAX);

	memset(cmd, 'a', BOOT_CMDLINE_MAX - 1);
	cmd[BOOT_CMDLINE_MAX - 1] = 0;
	cr_assert_eq(load(img, len, NULL, 0, cmd), 0, "%s", eb.msg);
	cr_assert_eq(guest(BOOT_CMDLINE_ADDR, BOOT_CMDLINE_MAX)[BOOT_CMDLINE_MAX - 1], 0);
	free(cmd);
	free(img);
}

Test(loader, rejects_cmdline_over_ember_limit_naming_both_sizes)
{
	size_t len;
	uint8_t *img = simple_elf(&len);
	char *cmd = malloc(BOOT_CMDLINE_MAX + 1);

	memset(cmd, 'a', BOOT_CMDLINE_MAX);
	cmd[BOOT_CMDLINE_MAX] = 0;
	expect_error(load(img, len, NULL, 0, cmd), -E2BIG,
		     "kernel command line is 65536 bytes, the limit is 65535");
	free(cmd);
	free(img);
}

Test(loader, rejects_cmdline_over_bzimage_cmdline_size)
{
	size_t len;
	uint8_t *img = simple_bzimage(&len);
	char cmd[2100];

	memset(cmd, 'b', 2048);
	cmd[2048] = 0;
	expect_error(load(img, len, NULL, 0, cmd), -E2BIG,
		     "kernel command line is 2048 bytes, the limit is 2047");
	free(img);
}

/* ---- initrd ---------------------------------------------------------------------------------------- */

static uint8_t *pattern(size_t n, uint8_t seed)
{
	uint8_t *p = malloc(n);

	cr_assert_not_null(p);
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 3);
	return p;
}

Test(loader, places_initrd_at_top_of_low_ram_page_aligned)
{
	size_t len, rdlen = 0x12345;
	uint8_t *img = simple_elf(&len), *rd = pattern(rdlen, 9);
	uint64_t expect = (64 * MiB - rdlen) & ~0xfffull;

	cr_assert_eq(load(img, len, rd, rdlen, NULL), 0, "%s", eb.msg);
	cr_assert_eq(bi.initrd_addr, expect);
	cr_assert_eq(bi.initrd_size, rdlen);
	cr_assert_eq(bp()->hdr.ramdisk_image, expect);
	cr_assert_eq(bp()->hdr.ramdisk_size, rdlen);
	cr_assert_eq(bp()->ext_ramdisk_image, 0);
	cr_assert_eq(memcmp(guest(expect, rdlen), rd, rdlen), 0);
	free(rd);
	free(img);
}

Test(loader, keeps_elf_initrd_below_default_initrd_addr_max)
{
	size_t len, rdlen = 0x3000;
	uint8_t *img, *rd = pattern(rdlen, 1);

	remap(1 * GiB);
	img = simple_elf(&len);
	cr_assert_eq(load(img, len, rd, rdlen, NULL), 0, "%s", eb.msg);
	cr_assert_eq(bi.initrd_addr, 0x38000000 - rdlen);
	free(rd);
	free(img);
}

Test(loader, honours_bzimage_initrd_addr_max)
{
	struct tb_bzimage b;
	size_t len, rdlen = 0x2000;
	uint8_t *img, *rd = pattern(rdlen, 2);

	remap(1 * GiB);
	tb_bzimage_defaults(&b);
	b.initrd_addr_max = 0x0fffffff;
	img = tb_build_bzimage(&b, &len);
	cr_assert_eq(load(img, len, rd, rdlen, NULL), 0, "%s", eb.msg);
	cr_assert_eq(bi.initrd_addr, 0x10000000 - rdlen);
	free(rd);
	free(img);
}

Test(loader, keeps_initrd_in_ram_below_the_mmio_hole)
{
	size_t len, rdlen = 0x1000;
	uint8_t *img, *rd = pattern(rdlen, 3);
	struct tb_bzimage b;

	remap(4 * GiB);
	tb_bzimage_defaults(&b);
	b.initrd_addr_max = 0xffffffff;
	img = tb_build_bzimage(&b, &len);
	cr_assert_eq(load(img, len, rd, rdlen, NULL), 0, "%s", eb.msg);
	cr_assert_eq(bi.initrd_addr, MEM_HOLE_START - rdlen);
	free(rd);
	free(img);
}

Test(loader, places_initrd_below_a_kernel_at_the_top_of_ram)
{
	struct tb_elf_seg seg = { .paddr = 60 * MiB, .filesz = 0x1000, .memsz = 2 * MiB,
				  .flags = PF_R | PF_X };
	size_t len, rdlen = 4 * MiB;
	uint8_t *img = tb_build_elf(&seg, 1, 60 * MiB, &len), *rd = pattern(rdlen, 4);

	cr_assert_eq(load(img, len, rd, rdlen, NULL), 0, "%s", eb.msg);
	cr_assert_eq(bi.initrd_addr, 56 * MiB);
	free(rd);
	free(img);
}

Test(loader, rejects_initrd_that_cannot_avoid_the_kernel)
{
	struct tb_elf_seg seg = { .paddr = 2 * MiB, .filesz = 0x1000, .memsz = 60 * MiB,
				  .flags = PF_R | PF_X };
	size_t len, rdlen = 3 * MiB;
	uint8_t *img = tb_build_elf(&seg, 1, 2 * MiB, &len), *rd = pattern(rdlen, 4);

	expect_error(load(img, len, rd, rdlen, NULL), -ENOMEM, "without overlapping the kernel");
	free(rd);
	free(img);
}

Test(loader, rejects_initrd_larger_than_low_ram)
{
	size_t len, rdlen = 64 * MiB;
	uint8_t *img = simple_elf(&len), *rd = pattern(rdlen, 5);

	expect_error(load(img, len, rd, rdlen, NULL), -ENOMEM,
		     "initrd of 67108864 bytes does not fit below 0x4000000");
	free(rd);
	free(img);
}

Test(loader, rejects_empty_initrd)
{
	size_t len;
	uint8_t *img = simple_elf(&len), b = 0;

	expect_error(load(img, len, &b, 0, NULL), -EINVAL, "initrd is empty");
	free(img);
}

/* ---- e820 -------------------------------------------------------------------------------------------- */

static void expect_e820(unsigned i, uint64_t addr, uint64_t size, uint32_t type)
{
	const struct boot_e820_entry *e = &bp()->e820_table[i];

	cr_assert_eq(e->addr, addr, "e820[%u].addr 0x%llx", i, (unsigned long long)e->addr);
	cr_assert_eq(e->size, size, "e820[%u].size 0x%llx", i, (unsigned long long)e->size);
	cr_assert_eq(e->type, type, "e820[%u].type %u", i, e->type);
}

Test(loader, e820_describes_low_ram_reserved_area_and_high_ram)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	cr_assert_eq(bp()->e820_entries, 3);
	expect_e820(0, 0, 0x9fc00, 1);
	expect_e820(1, 0x9fc00, 0x100000 - 0x9fc00, 2);
	expect_e820(2, 0x100000, 63 * MiB, 1);
	free(img);
}

Test(loader, e820_lists_ram_above_the_mmio_hole)
{
	size_t len;
	uint8_t *img;

	remap(5 * GiB);
	img = simple_elf(&len);
	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	cr_assert_eq(bp()->e820_entries, 4);
	expect_e820(2, 0x100000, MEM_HOLE_START - 0x100000, 1);
	expect_e820(3, MEM_HOLE_END, 2 * GiB, 1);
	free(img);
}

Test(loader, rejects_ram_too_small_for_the_boot_layout)
{
	size_t len;
	uint8_t *img = simple_elf(&len);

	remap(1 * MiB);
	expect_error(load(img, len, NULL, 0, NULL), -ENOMEM, "too small");
	free(img);
}

Test(loader, writes_page_tables_and_gdt)
{
	size_t len;
	uint8_t *img = simple_elf(&len);
	uint64_t pml4e, code;

	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	memcpy(&pml4e, guest(BOOT_PML4_ADDR, 8), 8);
	memcpy(&code, guest(BOOT_GDT_ADDR + BOOT_CS, 8), 8);
	cr_assert_eq(pml4e, BOOT_PDPT_ADDR | 3);
	cr_assert_eq(code, 0x00af9b000000ffffull);
	free(img);
}

/* ---- bzImage ---------------------------------------------------------------------------------------- */

Test(loader, loads_bzimage_protected_mode_part_at_pref_address)
{
	size_t len;
	uint8_t *img = simple_bzimage(&len);
	const uint8_t *g;

	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	cr_assert_eq(bi.kind, KERNEL_BZIMAGE);
	cr_assert_eq(bi.entry, 0x1000000 + 0x200);
	cr_assert_eq(bi.kernel_start, 0x1000000);
	cr_assert_eq(bi.kernel_end, 0x1000000 + 0x100000);
	g = guest(0x1000000, 0x10000);
	for (unsigned i = 0; i < 0x10000; i++)
		cr_assert_eq(g[i], tb_pm_byte(i), "pm byte %u", i);
	free(img);
}

Test(loader, copies_bzimage_setup_header_and_sets_loader_fields)
{
	size_t len;
	uint8_t *img = simple_bzimage(&len);
	const struct setup_header *h;

	tb_bzimage_hdr(img)->setup_data = 0x123456; /* a pointer we must not pass on */
	cr_assert_eq(load(img, len, NULL, 0, "x"), 0, "%s", eb.msg);
	h = &bp()->hdr;
	cr_assert_eq(h->setup_sects, 4);
	cr_assert_eq(h->version, 0x020f);
	cr_assert_eq(h->kernel_version, 0x200);
	cr_assert_eq(h->init_size, 0x100000);
	cr_assert_eq(h->pref_address, 0x1000000);
	cr_assert_eq(h->min_alignment, 21);
	cr_assert_eq(h->cmdline_size, 2047);
	cr_assert_eq(h->type_of_loader, 0xff);
	cr_assert_eq(h->code32_start, 0x1000000);
	cr_assert_eq(h->cmd_line_ptr, BOOT_CMDLINE_ADDR);
	cr_assert_eq(h->setup_data, 0);
	free(img);
}

Test(loader, copies_setup_header_only_up_to_its_jump_end)
{
	struct tb_bzimage b;
	size_t len;
	uint8_t *img;

	tb_bzimage_defaults(&b);
	b.hdr_jump = 0x66; /* header ends at 0x268: handover_offset is the last field */
	img = tb_build_bzimage(&b, &len);
	tb_bzimage_hdr(img)->handover_offset = 0x1111;
	tb_bzimage_hdr(img)->kernel_info_offset = 0x2222; /* past the end: not header */
	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	cr_assert_eq(bp()->hdr.handover_offset, 0x1111);
	cr_assert_eq(bp()->hdr.kernel_info_offset, 0);
	free(img);
}

Test(loader, treats_zero_setup_sects_as_four)
{
	struct tb_bzimage b;
	size_t len;
	uint8_t *img;

	tb_bzimage_defaults(&b);
	b.setup_sects = 0;
	img = tb_build_bzimage(&b, &len);
	cr_assert_eq(len, 5 * 512 + b.pm_len);
	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	cr_assert_eq(guest(0x1000000, 1)[0], tb_pm_byte(0));
	free(img);
}

Test(loader, finds_protected_mode_part_after_many_setup_sectors)
{
	struct tb_bzimage b;
	size_t len;
	uint8_t *img;

	tb_bzimage_defaults(&b);
	b.setup_sects = 39;
	img = tb_build_bzimage(&b, &len);
	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	cr_assert_eq(memcmp(guest(0x1000000, 0x100), img + 40 * 512, 0x100), 0);
	free(img);
}

Test(loader, relocates_bzimage_when_pref_address_is_outside_ram)
{
	struct tb_bzimage b;
	size_t len;
	uint8_t *img;

	tb_bzimage_defaults(&b);
	b.pref_address = 0x80000000;
	b.kernel_alignment = 0x2000000;
	img = tb_build_bzimage(&b, &len);
	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	cr_assert_eq(bi.kernel_start, 0x2000000);
	cr_assert_eq(bi.entry, 0x2000200);
	cr_assert_eq(bp()->hdr.code32_start, 0x2000000);
	cr_assert_eq(guest(0x2000000, 1)[0], tb_pm_byte(0));
	free(img);
}

Test(loader, relocates_bzimage_whose_pref_address_is_above_4gib)
{
	struct tb_bzimage b;
	size_t len;
	uint8_t *img;

	remap(4 * GiB); /* RAM at [4 GiB, 5 GiB) exists but is not identity-mapped at entry */
	tb_bzimage_defaults(&b);
	b.pref_address = MEM_HOLE_END;
	img = tb_build_bzimage(&b, &len);
	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	cr_assert_eq(bi.kernel_start, 0x1000000);
	free(img);
}

Test(loader, rejects_non_relocatable_bzimage_outside_ram)
{
	struct tb_bzimage b;
	size_t len;
	uint8_t *img;

	tb_bzimage_defaults(&b);
	b.relocatable = 0;
	b.pref_address = 0x80000000;
	img = tb_build_bzimage(&b, &len);
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "non-relocatable kernel");
	cr_assert_not_null(strstr(eb.msg, "outside guest RAM"), "%s", eb.msg);
	free(img);
}

Test(loader, rejects_bzimage_whose_init_size_fits_nowhere)
{
	struct tb_bzimage b;
	size_t len;
	uint8_t *img;

	tb_bzimage_defaults(&b);
	b.init_size = 60 * MiB;
	img = tb_build_bzimage(&b, &len);
	expect_error(load(img, len, NULL, 0, NULL), -ENOMEM,
		     "init_size 0x3c00000 does not fit in guest RAM");
	free(img);
}

static void expect_bz_error(void (*mutate)(struct tb_bzimage *), void (*poke)(uint8_t *),
			    int err, const char *substr)
{
	struct tb_bzimage b;
	size_t len;
	uint8_t *img;

	tb_bzimage_defaults(&b);
	if (mutate)
		mutate(&b);
	img = tb_build_bzimage(&b, &len);
	cr_assert_not_null(img);
	if (poke)
		poke(img);
	expect_error(load(img, len, NULL, 0, NULL), err, substr);
	free(img);
}

Test(loader, rejects_truncated_bzimage_header)
{
	size_t len;
	uint8_t *img = simple_bzimage(&len);

	expect_error(load(img, 0x230, NULL, 0, NULL), -EINVAL, "bzImage: truncated: 560 bytes");
	free(img);
}

static void poke_boot_flag(uint8_t *img) { tb_bzimage_hdr(img)->boot_flag = 0x1234; }
Test(loader, rejects_bzimage_without_boot_flag)
{
	expect_bz_error(NULL, poke_boot_flag, -EINVAL, "boot_flag at 0x1fe is 0x1234");
}

static void old_version(struct tb_bzimage *b) { b->version = 0x020b; }
Test(loader, rejects_bzimage_older_than_protocol_2_12)
{
	expect_bz_error(old_version, NULL, -EINVAL, "boot protocol 2.11 is too old");
}

static void poke_jump(uint8_t *img) { img[0x200] = 0xe9; }
Test(loader, rejects_bzimage_without_short_jump)
{
	expect_bz_error(NULL, poke_jump, -EINVAL, "not a short jump");
}

static void short_header(struct tb_bzimage *b) { b->hdr_jump = 0x50; }
Test(loader, rejects_setup_header_ending_before_init_size)
{
	expect_bz_error(short_header, NULL, -EINVAL, "setup header ends at 0x252");
}

static void no_pm(struct tb_bzimage *b) { b->pm_len = 0; }
Test(loader, rejects_bzimage_without_protected_mode_part)
{
	expect_bz_error(no_pm, NULL, -EINVAL, "no protected-mode kernel");
}

static void not_high(struct tb_bzimage *b) { b->loadflags = 0; }
Test(loader, rejects_bzimage_without_loaded_high)
{
	expect_bz_error(not_high, NULL, -EINVAL, "lack LOADED_HIGH");
}

static void not_64(struct tb_bzimage *b) { b->xloadflags = XLF_CAN_BE_LOADED_ABOVE_4G; }
Test(loader, rejects_bzimage_without_64bit_entry)
{
	expect_bz_error(not_64, NULL, -EINVAL, "lack XLF_KERNEL_64");
}

static void small_init(struct tb_bzimage *b) { b->init_size = 0x1000; }
Test(loader, rejects_init_size_smaller_than_the_kernel)
{
	expect_bz_error(small_init, NULL, -EINVAL, "init_size 0x1000 is smaller");
}

static void odd_align(struct tb_bzimage *b) { b->kernel_alignment = 0x300000; }
Test(loader, rejects_kernel_alignment_not_power_of_two)
{
	expect_bz_error(odd_align, NULL, -EINVAL, "kernel_alignment 0x300000");
}

static void payload_past_end(struct tb_bzimage *b)
{
	b->payload_offset = 0x100;
	b->payload_length = 0x10000;
}
Test(loader, rejects_payload_outside_protected_mode_part)
{
	expect_bz_error(payload_past_end, NULL, -EINVAL, "payload (offset 0x100, length 0x10000)");
}

static void payload_overflow(struct tb_bzimage *b)
{
	b->payload_offset = 0xffffffff;
	b->payload_length = 0x10;
}
Test(loader, rejects_payload_offset_plus_length_overflow)
{
	expect_bz_error(payload_overflow, NULL, -EINVAL, "is outside the protected-mode part");
}

/* ---- bzImage with an LZ4 payload ---------------------------------------------------------------- */

/* A vmlinux-like ELF: text at 16 MiB entered at its start, data + bss after it. */
static const struct tb_elf_seg vmlinux_segs[] = {
	{ .paddr = 0x1000000, .filesz = 0x30000, .memsz = 0x30000, .flags = PF_R | PF_X, .seed = 11 },
	{ .paddr = 0x1200000, .filesz = 0x8000, .memsz = 0x20000, .flags = PF_R | PF_W, .seed = 12 },
};

static uint8_t *vmlinux_elf(size_t *len)
{
	uint8_t *img = tb_build_elf(vmlinux_segs, 2, 0x1000000, len);

	cr_assert_not_null(img);
	return img;
}

Test(loader, decompresses_lz4_bzimage_and_loads_its_vmlinux)
{
	size_t elen, len;
	uint8_t *elf = vmlinux_elf(&elen);
	uint8_t *img = tb_build_lz4_bzimage(elf, elen, &len);
	const uint8_t *g;

	cr_assert_not_null(img);
	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	cr_assert_eq(bi.kind, KERNEL_BZIMAGE_LZ4);
	cr_assert_eq(bi.entry, 0x1000000);
	g = guest(0x1000000, 0x30000);
	for (unsigned i = 0; i < 0x30000; i += 97)
		cr_assert_eq(g[i], tb_seg_byte(11, i), "text byte %u", i);
	cr_assert_eq(guest(0x1200000, 0x8000)[0x7fff], tb_seg_byte(12, 0x7fff));
	free(img);
	free(elf);
}

Test(loader, keeps_bzimage_header_for_lz4_kernel)
{
	size_t elen, len;
	uint8_t *elf = vmlinux_elf(&elen);
	uint8_t *img = tb_build_lz4_bzimage(elf, elen, &len);

	cr_assert_eq(load(img, len, NULL, 0, NULL), 0, "%s", eb.msg);
	cr_assert_eq(bp()->hdr.header, 0x53726448);
	cr_assert_eq(bp()->hdr.payload_offset, TB_LZ4_PAYLOAD_OFFSET);
	cr_assert_eq(bp()->hdr.init_size, 0x400000);
	cr_assert_eq(bp()->hdr.type_of_loader, 0xff);
	/* the kernel owns init_size from its start, so an initrd must go above that */
	cr_assert_eq(bi.kernel_end, 0x1000000 + 0x400000);
	free(img);
	free(elf);
}

Test(loader, decompresses_lz4_payload_of_many_blocks)
{
	size_t elen, zlen, olen, omap;
	uint8_t *elf = vmlinux_elf(&elen), *out;
	uint8_t *z = tb_lz4_legacy(elf, elen, 0x1000, &zlen);

	cr_assert_eq(loader_unlz4_legacy(z, zlen, &out, &olen, &omap, &eb), 0, "%s", eb.msg);
	cr_assert_eq(olen, elen);
	cr_assert_eq(memcmp(out, elf, elen), 0);
	munmap(out, omap);
	free(z);
	free(elf);
}

Test(loader, decompresses_concatenated_lz4_legacy_frames)
{
	size_t elen, z1len, z2len, olen, omap;
	uint8_t *elf = vmlinux_elf(&elen), *out;
	uint8_t *z1 = tb_lz4_legacy(elf, 0x10000, 0x10000, &z1len);
	uint8_t *z2 = tb_lz4_legacy(elf + 0x10000, elen - 0x10000, 0x10000, &z2len);
	uint8_t *cat = malloc(z1len + z2len);

	/* frame 1 without its trailer, then frame 2 with the total size as trailer */
	memcpy(cat, z1, z1len - 4);
	memcpy(cat + z1len - 4, z2, z2len);
	memcpy(cat + z1len - 4 + z2len - 4, &(uint32_t){ (uint32_t)elen }, 4);
	cr_assert_eq(loader_unlz4_legacy(cat, z1len + z2len - 4, &out, &olen, &omap, &eb), 0, "%s",
		     eb.msg);
	cr_assert_eq(memcmp(out, elf, elen), 0);
	munmap(out, omap);
	free(cat);
	free(z2);
	free(z1);
	free(elf);
}

/* Builds an LZ4 bzImage and returns a pointer to its payload for corruption. */
static uint8_t *lz4_image(size_t *len, uint8_t **payload, size_t *plen)
{
	size_t elen;
	uint8_t *elf = vmlinux_elf(&elen);
	uint8_t *img = tb_build_lz4_bzimage(elf, elen, len);

	free(elf);
	cr_assert_not_null(img);
	*payload = img + tb_bzimage_pm_offset(img) + TB_LZ4_PAYLOAD_OFFSET;
	*plen = tb_bzimage_hdr(img)->payload_length;
	return img;
}

Test(loader, rejects_corrupt_lz4_block)
{
	size_t len, plen;
	uint8_t *p, *img = lz4_image(&len, &p, &plen);

	/* an LZ4 match offset of 0xffff points before the start of the output */
	memset(p + 8, 0xff, 64);
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "LZ4 block 0 at payload offset 4 is corrupt");
	free(img);
}

Test(loader, rejects_lz4_output_larger_than_declared)
{
	size_t len, plen;
	uint8_t *p, *img = lz4_image(&len, &p, &plen);
	uint32_t small = 0x1000;

	memcpy(p + plen - 4, &small, 4);
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "more than its declared 4096 bytes");
	free(img);
}

Test(loader, rejects_lz4_output_smaller_than_declared)
{
	size_t len, plen;
	uint8_t *p, *img = lz4_image(&len, &p, &plen);
	uint32_t declared, big;

	memcpy(&declared, p + plen - 4, 4);
	big = declared + 1;
	memcpy(p + plen - 4, &big, 4);
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "its trailer declares");
	free(img);
}

Test(loader, rejects_lz4_declared_size_over_the_limit)
{
	size_t len, plen;
	uint8_t *p, *img = lz4_image(&len, &p, &plen);
	uint32_t huge = 0xf0000000;

	memcpy(p + plen - 4, &huge, 4);
	expect_error(load(img, len, NULL, 0, NULL), -E2BIG, "declared uncompressed size 4026531840");
	free(img);
}

Test(loader, rejects_lz4_block_size_past_the_payload)
{
	size_t len, plen;
	uint8_t *p, *img = lz4_image(&len, &p, &plen);
	uint32_t csize;

	memcpy(&csize, p + 4, 4);
	csize += 100;
	memcpy(p + 4, &csize, 4);
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL, "LZ4 block 0 at payload offset 4: compressed size");
	free(img);
}

Test(loader, rejects_lz4_payload_with_truncated_block_header)
{
	size_t elen, zlen, olen, omap;
	uint8_t *elf = vmlinux_elf(&elen), *out;
	uint8_t *z = tb_lz4_legacy(elf, elen, 8u << 20, &zlen);
	uint8_t *z2 = malloc(zlen + 2);

	/* two stray bytes between the last block and the size trailer */
	memcpy(z2, z, zlen - 4);
	memset(z2 + zlen - 4, 0, 2);
	memcpy(z2 + zlen - 2, z + zlen - 4, 4);
	expect_error(loader_unlz4_legacy(z2, zlen + 2, &out, &olen, &omap, &eb), -EINVAL,
		     "truncated block size");
	free(z2);
	free(z);
	free(elf);
}

Test(loader, rejects_lz4_payload_that_is_not_an_elf)
{
	uint8_t data[0x2000];
	size_t len;
	uint8_t *img;

	memset(data, 'K', sizeof(data));
	img = tb_build_lz4_bzimage(data, sizeof(data), &len);
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL,
		     "decompressed LZ4 payload (8192 bytes) is not an ELF");
	free(img);
}

Test(loader, rejects_lz4_vmlinux_with_bad_segment)
{
	size_t elen, len;
	uint8_t *elf = vmlinux_elf(&elen), *img;

	tb_elf_phdr(elf, 1)->p_paddr = 0x8000;
	img = tb_build_lz4_bzimage(elf, elen, &len);
	expect_error(load(img, len, NULL, 0, NULL), -EINVAL,
		     "decompressed vmlinux: PT_LOAD 1 [0x8000, 0x28000) overlaps the boot structures");
	free(img);
	free(elf);
}

/* ---- files ------------------------------------------------------------------------------------------ */

/* Criterion forks per test, so each test gets its own directory; teardown removes it. */
static char tmpdir[64];
static char tmpfiles[4][128];
static unsigned ntmp;

static const char *write_tmp(const char *name, const void *data, size_t len)
{
	char *p;
	FILE *f;

	cr_assert_lt(ntmp, 4);
	if (!tmpdir[0]) {
		snprintf(tmpdir, sizeof(tmpdir), "/tmp/ember-loader-XXXXXX");
		cr_assert_not_null(mkdtemp(tmpdir));
	}
	p = tmpfiles[ntmp++];
	snprintf(p, sizeof(tmpfiles[0]), "%s/%s", tmpdir, name);
	f = fopen(p, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(data, 1, len, f), len);
	fclose(f);
	return p;
}

static void remove_tmp(void)
{
	for (unsigned i = 0; i < ntmp; i++)
		unlink(tmpfiles[i]);
	if (tmpdir[0])
		rmdir(tmpdir);
	ntmp = 0;
	tmpdir[0] = 0;
}

Test(loader, loads_kernel_and_initrd_from_files)
{
	size_t len;
	uint8_t *img = simple_elf(&len);
	const char *k = write_tmp("kernel.elf", img, len);
	const char *r = write_tmp("initrd.img", "INITRD!!", 8);

	cr_assert_eq(loader_load_files(&mem, k, r, "root=/dev/ram0", &bi, &eb), 0, "%s", eb.msg);
	cr_assert_eq(bi.entry, SIMPLE_ENTRY);
	cr_assert_eq(bi.initrd_size, 8);
	cr_assert_eq(memcmp(guest(bi.initrd_addr, 8), "INITRD!!", 8), 0);
	cr_assert_eq(strcmp((const char *)guest(BOOT_CMDLINE_ADDR, 15), "root=/dev/ram0"), 0);
	free(img);
}

Test(loader, names_missing_kernel_file)
{
	expect_error(loader_load_files(&mem, "/nonexistent/x.elf", NULL, NULL, &bi, &eb), -ENOENT,
		     "kernel /nonexistent/x.elf: No such file or directory");
}

Test(loader, names_missing_initrd_file)
{
	size_t len;
	uint8_t *img = simple_elf(&len);
	const char *k = write_tmp("k2.elf", img, len);

	expect_error(loader_load_files(&mem, k, "/nonexistent/rd", NULL, &bi, &eb), -ENOENT,
		     "initrd /nonexistent/rd: No such file or directory");
	free(img);
}

Test(loader, rejects_empty_kernel_file)
{
	const char *k = write_tmp("empty", "", 0);

	expect_error(loader_load_files(&mem, k, NULL, NULL, &bi, &eb), -EINVAL, "file is empty");
	cr_assert_not_null(strstr(eb.msg, k), "%s", eb.msg);
}

Test(loader, rejects_directory_as_kernel)
{
	expect_error(loader_load_files(&mem, "/tmp", NULL, NULL, &bi, &eb), -EINVAL,
		     "kernel /tmp: not a regular file (directory)");
}

/* A FIFO would block open(2) until a writer came: refused at once instead. */
Test(loader, rejects_fifo_as_kernel_without_blocking, .timeout = 10)
{
	char *path = NULL;

	write_tmp("unused", "x", 1); /* makes tmpdir */
	cr_assert_geq(asprintf(&path, "%s/fifo-kernel", tmpdir), 0);
	cr_assert_eq(mkfifo(path, 0600), 0);
	expect_error(loader_load_files(&mem, path, NULL, NULL, &bi, &eb), -EINVAL,
		     "not a regular file (fifo)");
	cr_assert_not_null(strstr(eb.msg, path), "%s", eb.msg);
	unlink(path);
	free(path);
}

Test(loader, rejects_fifo_as_initrd_without_blocking, .timeout = 10)
{
	size_t len;
	uint8_t *img = simple_elf(&len);
	const char *k = write_tmp("k.elf", img, len);
	char *path = NULL;

	free(img);
	cr_assert_geq(asprintf(&path, "%s/fifo-initrd", tmpdir), 0); /* write_tmp made it */
	cr_assert_eq(mkfifo(path, 0600), 0);
	expect_error(loader_load_files(&mem, k, path, NULL, &bi, &eb), -EINVAL,
		     "initrd");
	cr_assert_not_null(strstr(eb.msg, "not a regular file (fifo)"), "%s", eb.msg);
	unlink(path);
	free(path);
}

Test(loader, names_kernel_file_in_image_errors)
{
	size_t len;
	uint8_t *img = simple_elf(&len);
	const char *k;

	tb_elf_ehdr(img)->e_machine = EM_ARM;
	k = write_tmp("arm.elf", img, len);
	expect_error(loader_load_files(&mem, k, NULL, NULL, &bi, &eb), -EINVAL, "e_machine 40");
	cr_assert_not_null(strstr(eb.msg, "arm.elf"), "%s", eb.msg);
	free(img);
}

/* ---- the real thing: Debian's cloud kernel (bzImage, LZ4 payload) -------------------------------- */

/* Finds (or fetches, through the script) the kernel; on failure says why in `why`. */
static bool debian_kernel(char *path, size_t size, char *why, size_t why_size)
{
	const char *env = getenv("EMBER_DEBIAN_KERNEL");
	const char *build = getenv("EMBER_BUILD");
	char cmd[512];
	FILE *p;
	int st;

	if (env && *env) {
		snprintf(path, size, "%s", env);
		snprintf(why, why_size, "EMBER_DEBIAN_KERNEL=%s is not readable", env);
		return access(path, R_OK) == 0;
	}
	if (access("scripts/fetch-debian-kernel.sh", X_OK) != 0) {
		snprintf(why, why_size, "scripts/fetch-debian-kernel.sh not found: run from the "
			 "repository root or set EMBER_DEBIAN_KERNEL");
		return false;
	}
	snprintf(cmd, sizeof(cmd), "scripts/fetch-debian-kernel.sh %s/debian-kernel",
		 build && *build ? build : "build");
	snprintf(why, why_size, "%s failed (needs apt and network; see its SKIP message)", cmd);
	p = popen(cmd, "r");
	if (!p)
		return false;
	if (!fgets(path, (int)size, p))
		path[0] = 0;
	st = pclose(p);
	path[strcspn(path, "\n")] = 0;
	return st == 0 && path[0];
}

Test(loader, loads_real_debian_bzimage_through_lz4_path, .timeout = 120)
{
	char path[512], why[640];
	const uint8_t *text;

	if (!debian_kernel(path, sizeof(path), why, sizeof(why))) {
		/* Criterion prints skip reasons only with --verbose: say it loudly */
		cr_log_info("SKIP loader::loads_real_debian_bzimage_through_lz4_path: %s", why);
		cr_skip_test("no real Debian kernel to load: %s", why);
	}
	remap(512 * MiB);
	cr_assert_eq(loader_load_files(&mem, path, NULL, "console=ttyS0", &bi, &eb), 0, "%s", eb.msg);
	cr_assert_eq(bi.kind, KERNEL_BZIMAGE_LZ4);
	cr_assert_eq(bi.entry, 0x1000000, "entry 0x%llx", (unsigned long long)bi.entry);
	cr_assert_eq(bi.kernel_start, 0x1000000);
	cr_assert_geq(bi.kernel_end, 0x1000000 + bp()->hdr.init_size);
	cr_assert_geq(bp()->hdr.version, 0x020c);
	cr_assert_eq(bp()->hdr.type_of_loader, 0xff);
	/* startup_64 begins with "lea <stack>(%rip), %rsp" (48 8d 25 disp32) */
	text = guest(0x1000000, 16);
	cr_assert(text[0] == 0x48 && text[1] == 0x8d && text[2] == 0x25,
		  "startup_64 bytes %02x %02x %02x %02x", text[0], text[1], text[2], text[3]);
}
