/*
 * RAM queries over the e820 map ember put in boot_params. The table is sorted by
 * the loader but we do not rely on it: adjacent or overlapping RAM entries are
 * merged by rescanning until the range stops growing (the table is tiny).
 */
#include "bootparams.h"
#include "internal.h"

struct e820_entry {
	uint64_t addr, size;
	uint32_t type;
} __attribute__((packed));

_Static_assert(sizeof(struct e820_entry) == E820_ENTRY_SIZE, "boot_e820_entry layout");

static unsigned e820_count(const struct e820_entry **table)
{
	const uint8_t *bp = (const uint8_t *)(uintptr_t)boot_params_gpa;
	unsigned n;

	if (!bp)
		return 0;
	n = bp[BP_E820_ENTRIES];
	*table = (const struct e820_entry *)(bp + BP_E820_TABLE);
	return n > BP_E820_MAX ? BP_E820_MAX : n;
}

uint64_t e820_ram_end(uint64_t addr)
{
	const struct e820_entry *t = NULL;
	unsigned n = e820_count(&t);
	uint64_t end = addr;
	bool grew = true;

	while (grew) {
		grew = false;
		for (unsigned i = 0; i < n; i++) {
			uint64_t s = t[i].addr, e = t[i].addr + t[i].size;

			if (t[i].type != E820_TYPE_RAM || e < s)
				continue;
			/* the entry holds the byte at `end`: RAM continues through e */
			if (s <= end && e > end) {
				end = e;
				grew = true;
			}
		}
	}
	return end > addr ? end : 0;
}

bool e820_is_ram(uint64_t addr, uint64_t len)
{
	uint64_t end = e820_ram_end(addr);

	return len && addr + len >= addr && end && addr + len <= end;
}

uint64_t e820_ram_total(void)
{
	const struct e820_entry *t = NULL;
	unsigned n = e820_count(&t);
	uint64_t total = 0;

	for (unsigned i = 0; i < n; i++)
		if (t[i].type == E820_TYPE_RAM)
			total += t[i].size;
	return total;
}
