/*
 * Boot information under PVH (lib/pvh.S): the VMM hands over struct hvm_start_info
 * instead of a Linux zero page. The rest of the library reads the zero page only
 * (cmdline.c, e820.c), so at start the boot CPU translates the start info into one:
 * the command-line pointer and the memory map as e820 entries. No port I/O here, so
 * the host-side test runs it on fake start infos.
 */
#include "bootparams.h"
#include "internal.h"

/* xen/arch-x86/hvm/start_info.h, by offset: the fields the library uses */
#define HVM_START_MAGIC        0x336ec578
#define HVM_SI_MAGIC           0
#define HVM_SI_VERSION         4
#define HVM_SI_CMDLINE_PADDR   24
#define HVM_SI_MEMMAP_PADDR    40 /* version >= 1 */
#define HVM_SI_MEMMAP_ENTRIES  48
#define HVM_MEMMAP_ENTRY_SIZE  24 /* u64 addr, u64 size, u32 type, u32 reserved */

static uint32_t rd32(uint64_t gpa)
{
	uint32_t v;

	__builtin_memcpy(&v, (const void *)(uintptr_t)gpa, 4);
	return v;
}

static uint64_t rd64(uint64_t gpa)
{
	uint64_t v;

	__builtin_memcpy(&v, (const void *)(uintptr_t)gpa, 8);
	return v;
}

int pvh_fill_zero_page(uint64_t start_info, uint8_t *zp)
{
	uint64_t cmdline, memmap;
	uint32_t n;

	memset(zp, 0, BP_ZERO_PAGE_SIZE);
	if (!start_info || start_info >= GUEST_MAPPED_END ||
	    rd32(start_info + HVM_SI_MAGIC) != HVM_START_MAGIC)
		return -EINVAL;
	cmdline = rd64(start_info + HVM_SI_CMDLINE_PADDR);
	if (cmdline < GUEST_MAPPED_END) { /* 0 (none) reads as an empty command line */
		uint32_t lo = (uint32_t)cmdline;

		__builtin_memcpy(zp + BP_CMD_LINE_PTR, &lo, 4);
	}
	if (rd32(start_info + HVM_SI_VERSION) < 1)
		return 0; /* no memory map: e820 queries find no RAM */
	memmap = rd64(start_info + HVM_SI_MEMMAP_PADDR);
	n = rd32(start_info + HVM_SI_MEMMAP_ENTRIES);
	if (n > BP_E820_MAX)
		n = BP_E820_MAX;
	if (!memmap || memmap + (uint64_t)n * HVM_MEMMAP_ENTRY_SIZE > GUEST_MAPPED_END)
		return 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t src = memmap + (uint64_t)i * HVM_MEMMAP_ENTRY_SIZE;
		uint8_t *dst = zp + BP_E820_TABLE + i * E820_ENTRY_SIZE;

		/* addr, size and type have the same layout; e820 entries are packed */
		memcpy(dst, (const void *)(uintptr_t)src, E820_ENTRY_SIZE);
	}
	zp[BP_E820_ENTRIES] = (uint8_t)n;
	return 0;
}

void pvh_boot_init(void)
{
	static uint8_t zero_page[BP_ZERO_PAGE_SIZE] __attribute__((aligned(4096)));

	/* a bad magic leaves an empty zero page: no command line, no RAM, no crash */
	pvh_fill_zero_page(pvh_start_info_gpa, zero_page);
	boot_params_gpa = (uint64_t)(uintptr_t)zero_page;
}

bool guest_booted_pvh(void)
{
	return pvh_start_info_gpa != 0;
}
