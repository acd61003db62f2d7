/*
 * Host-side tests of the PVH boot information (lib/pvh.c): an hvm_start_info becomes
 * the zero page the rest of the library reads, so the command line and the e820
 * queries work the same under QEMU's PVH boot as under ember's Linux boot protocol.
 * Everything lives in MAP_32BIT memory: the library refuses addresses above 4 GiB.
 */
#include <criterion/criterion.h>
#include <string.h>
#include <sys/mman.h>

#include "../lib/bootparams.h"
#include "../lib/internal.h"

uint64_t pvh_start_info_gpa; /* what pvh.S would have saved */

static uint8_t *area;     /* start info at 0, memory map at 1024, command line at 2048 */
static uint8_t *zero_page;

static void setup(void)
{
	area = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
	cr_assert_neq(area, MAP_FAILED);
	zero_page = area + 4096;
	boot_params_gpa = (uint64_t)(uintptr_t)zero_page;
}

static void teardown(void)
{
	munmap(area, 2 * 4096);
	boot_params_gpa = 0;
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* A version-1 start info with this command line and no memory map entries yet. */
static uint64_t start_info(uint32_t version, const char *cmdline)
{
	put32(area, 0x336ec578);
	put32(area + 4, version);
	strcpy((char *)area + 2048, cmdline);
	put64(area + 24, (uint64_t)(uintptr_t)(area + 2048));
	put64(area + 40, (uint64_t)(uintptr_t)(area + 1024));
	put32(area + 48, 0);
	return (uint64_t)(uintptr_t)area;
}

static void add_memmap(uint64_t addr, uint64_t size, uint32_t type)
{
	uint32_t n;
	uint8_t *e;

	memcpy(&n, area + 48, 4);
	e = area + 1024 + n * 24;
	put64(e, addr);
	put64(e + 8, size);
	put32(e + 16, type);
	put32(e + 20, 0);
	put32(area + 48, n + 1);
}

TestSuite(pvh, .init = setup, .fini = teardown);

Test(pvh, command_line_and_memory_map_become_the_zero_page)
{
	uint64_t si = start_info(1, "heap=16M resume_line"), v;

	add_memmap(0, 0x9fc00, E820_TYPE_RAM);
	add_memmap(0x9fc00, 0x60400, 2);
	add_memmap(0x100000, 0xff00000, E820_TYPE_RAM);
	cr_assert_eq(pvh_fill_zero_page(si, zero_page), 0);
	cr_assert_eq(zero_page[BP_E820_ENTRIES], 3);
	cr_assert_eq(cmdline_get_u64("heap", &v), 0);
	cr_assert_eq(v, 16ull << 20);
	cr_assert(cmdline_has_flag("resume_line"));
	cr_assert(e820_is_ram(0x200000, 64 << 20));
	cr_assert_not(e820_is_ram(0x9f000, 0x2000));
	cr_assert_eq(e820_ram_end(0x200000), 0x10000000);
	cr_assert_eq(e820_ram_total(), 0x9fc00 + 0xff00000);
}

Test(pvh, a_bad_magic_leaves_an_empty_zero_page)
{
	uint64_t si = start_info(1, "heap=16M");

	add_memmap(0x100000, 0xff00000, E820_TYPE_RAM);
	put32(area, 0x336ec579);
	memset(zero_page, 0xaa, BP_ZERO_PAGE_SIZE);
	cr_assert_eq(pvh_fill_zero_page(si, zero_page), -EINVAL);
	cr_assert_str_eq(cmdline_get(), "");
	cr_assert_eq(e820_ram_total(), 0);
	cr_assert_eq(pvh_fill_zero_page(0, zero_page), -EINVAL);
}

Test(pvh, version_0_has_a_command_line_but_no_memory_map)
{
	uint64_t si = start_info(0, "seed=3");

	add_memmap(0x100000, 0xff00000, E820_TYPE_RAM);
	cr_assert_eq(pvh_fill_zero_page(si, zero_page), 0);
	cr_assert_str_eq(cmdline_get(), "seed=3");
	cr_assert_eq(e820_ram_total(), 0);
}

Test(pvh, no_command_line_reads_as_empty)
{
	uint64_t si = start_info(1, "");

	put64(area + 24, 0);
	add_memmap(0x100000, 0x100000, E820_TYPE_RAM);
	cr_assert_eq(pvh_fill_zero_page(si, zero_page), 0);
	cr_assert_str_eq(cmdline_get(), "");
	cr_assert_eq(e820_ram_total(), 0x100000);
}

Test(pvh, more_entries_than_boot_params_holds_are_cut_at_128)
{
	uint64_t si = start_info(1, "");

	/* the map may lie anywhere below 4 GiB: point it at a bigger buffer */
	uint8_t *big = mmap(NULL, 200 * 24, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
	cr_assert_neq(big, MAP_FAILED);
	for (unsigned i = 0; i < 200; i++) {
		put64(big + i * 24, (uint64_t)i << 20);
		put64(big + i * 24 + 8, 1 << 20);
		put32(big + i * 24 + 16, E820_TYPE_RAM);
	}
	put64(area + 40, (uint64_t)(uintptr_t)big);
	put32(area + 48, 200);
	cr_assert_eq(pvh_fill_zero_page(si, zero_page), 0);
	cr_assert_eq(zero_page[BP_E820_ENTRIES], BP_E820_MAX);
	cr_assert_eq(e820_ram_end(0), (uint64_t)BP_E820_MAX << 20);
	munmap(big, 200 * 24);
}

Test(pvh, boot_init_points_the_library_at_its_own_zero_page)
{
	pvh_start_info_gpa = start_info(1, "pvh_snapshot");
	add_memmap(0x100000, 0x100000, E820_TYPE_RAM);
	pvh_boot_init();
	cr_assert(guest_booted_pvh());
	cr_assert_neq(boot_params_gpa, (uint64_t)(uintptr_t)zero_page);
	cr_assert(cmdline_has_flag("pvh_snapshot"));
	cr_assert_eq(e820_ram_total(), 0x100000);
	pvh_start_info_gpa = 0;
	cr_assert_not(guest_booted_pvh());
}
