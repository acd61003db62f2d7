/*
 * Host-side tests of the guest library's pure parts: number and command-line
 * parsing, e820 queries, the formatter and the checksum. They run on a fake zero
 * page mapped below 4 GiB, where the library expects boot_params to be.
 */
#include <criterion/criterion.h>
#include <sys/mman.h>

#include "../lib/bootparams.h"
#include "../lib/guest.h"

uint64_t boot_params_gpa; /* what entry.S would have saved */

static uint8_t *zero_page;

static void fake_boot_params(void)
{
	/* MAP_32BIT: cmdline_get() refuses addresses at or above 4 GiB */
	zero_page = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
	cr_assert_neq(zero_page, MAP_FAILED);
	boot_params_gpa = (uint64_t)(uintptr_t)zero_page;
}

static void drop_boot_params(void)
{
	munmap(zero_page, 2 * 4096);
	boot_params_gpa = 0;
}

static void set_cmdline(const char *s)
{
	char *dst = (char *)zero_page + 4096;
	uint32_t lo = (uint32_t)(uintptr_t)dst;

	memcpy(dst, s, strlen(s) + 1);
	memcpy(zero_page + BP_CMD_LINE_PTR, &lo, 4);
	memset(zero_page + BP_EXT_CMD_LINE_PTR, 0, 4);
}

static void add_e820(uint64_t addr, uint64_t size, uint32_t type)
{
	uint8_t *e = zero_page + BP_E820_TABLE + zero_page[BP_E820_ENTRIES] * E820_ENTRY_SIZE;

	memcpy(e, &addr, 8);
	memcpy(e + 8, &size, 8);
	memcpy(e + 16, &type, 4);
	zero_page[BP_E820_ENTRIES]++;
}

/* ---- parse_u64_suffix ------------------------------------------------------------ */

static int parse(const char *s, uint64_t *v)
{
	return parse_u64_suffix(s, strlen(s), v);
}

Test(parse_u64, accepts_decimal_hex_and_binary_suffixes)
{
	uint64_t v = 0;

	cr_assert_eq(parse("4096", &v), 0);
	cr_assert_eq(v, 4096);
	cr_assert_eq(parse("0x1F", &v), 0);
	cr_assert_eq(v, 31);
	cr_assert_eq(parse("64M", &v), 0);
	cr_assert_eq(v, 64ull << 20);
	cr_assert_eq(parse("4k", &v), 0);
	cr_assert_eq(v, 4096);
	cr_assert_eq(parse("2G", &v), 0);
	cr_assert_eq(v, 2ull << 30);
	cr_assert_eq(parse("0x10M", &v), 0);
	cr_assert_eq(v, 16ull << 20);
}

Test(parse_u64, rejects_malformed_numbers)
{
	uint64_t v = 7;

	cr_assert_eq(parse("", &v), -EINVAL);
	cr_assert_eq(parse("M", &v), -EINVAL);
	cr_assert_eq(parse("12Q", &v), -EINVAL);
	cr_assert_eq(parse("1Kx", &v), -EINVAL);
	cr_assert_eq(parse("0x", &v), -EINVAL);
	cr_assert_eq(parse("-1", &v), -EINVAL);
	cr_assert_eq(v, 7, "a failed parse must not write the result");
}

Test(parse_u64, reports_overflow_as_erange)
{
	uint64_t v;

	cr_assert_eq(parse("18446744073709551615", &v), 0);
	cr_assert_eq(v, UINT64_MAX);
	cr_assert_eq(parse("18446744073709551616", &v), -ERANGE);
	cr_assert_eq(parse("17179869184G", &v), -ERANGE);
}

/* ---- command line ------------------------------------------------------------ */

TestSuite(cmdline, .init = fake_boot_params, .fini = drop_boot_params);

Test(cmdline, last_occurrence_of_a_key_wins)
{
	uint64_t v;

	set_cmdline("heap=16M seed=7 heap=32M");
	cr_assert_eq(cmdline_get_u64("heap", &v), 0);
	cr_assert_eq(v, 32ull << 20);
	cr_assert_eq(cmdline_get_u64("seed", &v), 0);
	cr_assert_eq(v, 7);
}

Test(cmdline, key_must_match_the_whole_word_before_equals)
{
	uint64_t v;

	set_cmdline("heapx=1 xheap=2  ws=3");
	cr_assert_eq(cmdline_get_u64("heap", &v), -ENOENT);
	cr_assert_eq(cmdline_get_u64("ws", &v), 0);
	cr_assert_eq(v, 3);
}

Test(cmdline, malformed_value_is_einval_not_enoent)
{
	uint64_t v;

	set_cmdline("heap=lots");
	cr_assert_eq(cmdline_get_u64("heap", &v), -EINVAL);
}

Test(cmdline, string_value_that_does_not_fit_is_e2big)
{
	char buf[7];

	set_cmdline("pattern=random pattern2=sequence");
	cr_assert_eq(cmdline_get_str("pattern", buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf, "random");
	cr_assert_eq(cmdline_get_str("pattern2", buf, sizeof(buf)), -E2BIG);
}

Test(cmdline, bare_flag_is_found_only_without_equals)
{
	set_cmdline("quiet seed=1");
	cr_assert(cmdline_has_flag("quiet"));
	cr_assert_not(cmdline_has_flag("seed"));
	cr_assert_not(cmdline_has_flag("qui"));
}

Test(cmdline, missing_command_line_pointer_reads_as_empty)
{
	uint64_t v;

	memset(zero_page + BP_CMD_LINE_PTR, 0, 4);
	cr_assert_str_eq(cmdline_get(), "");
	cr_assert_eq(cmdline_get_u64("heap", &v), -ENOENT);
}

/* ---- e820 ---------------------------------------------------------------------- */

TestSuite(e820, .init = fake_boot_params, .fini = drop_boot_params);

Test(e820, range_inside_one_ram_entry_is_ram)
{
	add_e820(0, 0x9fc00, E820_TYPE_RAM);
	add_e820(0x9fc00, 0x60400, 2);
	add_e820(0x100000, 0x7f00000, E820_TYPE_RAM);
	cr_assert(e820_is_ram(0x200000, 16 << 20));
	cr_assert_eq(e820_ram_end(0x300000), 0x8000000);
	cr_assert_eq(e820_ram_total(), 0x9fc00 + 0x7f00000);
}

Test(e820, range_crossing_the_end_of_ram_is_not_ram)
{
	add_e820(0x100000, 0x7f00000, E820_TYPE_RAM);
	cr_assert_not(e820_is_ram(0x200000, 0x8000000));
	cr_assert_not(e820_is_ram(0x8000000, 4096));
	cr_assert_eq(e820_ram_end(0x8000000), 0);
}

Test(e820, reserved_hole_splits_ram)
{
	add_e820(0, 0x9fc00, E820_TYPE_RAM);
	add_e820(0x9fc00, 0x60400, 2);
	add_e820(0x100000, 0x100000, E820_TYPE_RAM);
	cr_assert_not(e820_is_ram(0x9f000, 0x2000));
	cr_assert_eq(e820_ram_end(0x1000), 0x9fc00);
}

Test(e820, adjacent_unsorted_ram_entries_merge)
{
	add_e820(0x4000000, 0x4000000, E820_TYPE_RAM);
	add_e820(0x100000, 0x3f00000, E820_TYPE_RAM);
	cr_assert_eq(e820_ram_end(0x200000), 0x8000000);
	cr_assert(e820_is_ram(0x200000, 0x7000000));
}

/* ---- formatting ----------------------------------------------------------------- */

static const char *fmt(const char *f, ...)
{
	static char buf[128];
	va_list ap;

	va_start(ap, f);
	fmt_vsnprintf(buf, sizeof(buf), f, ap);
	va_end(ap);
	return buf;
}

Test(format, zero_padded_hex_of_a_u64)
{
	cr_assert_str_eq(fmt("checksum=%016lx", 0x1234ul), "checksum=0000000000001234");
	cr_assert_str_eq(fmt("%lx", UINT64_MAX), "ffffffffffffffff");
	cr_assert_str_eq(fmt("%X", 0xabcu), "ABC");
}

Test(format, signed_values_width_and_alignment)
{
	cr_assert_str_eq(fmt("%d", -2147483647 - 1), "-2147483648");
	cr_assert_str_eq(fmt("%05d", -42), "-0042");
	cr_assert_str_eq(fmt("[%-5d]", -3), "[-3   ]");
	cr_assert_str_eq(fmt("[%4u]", 7u), "[   7]");
	cr_assert_str_eq(fmt("%lu", UINT64_MAX), "18446744073709551615");
	cr_assert_str_eq(fmt("%ld", (long)INT64_MIN), "-9223372036854775808");
}

Test(format, strings_chars_percent_and_null)
{
	cr_assert_str_eq(fmt("%s|%-4s|%3s", "ab", "cd", "e"), "ab|cd  |  e");
	cr_assert_str_eq(fmt("%c%c %%", 'o', 'k'), "ok %");
	cr_assert_str_eq(fmt("%s", (char *)NULL), "(null)");
	cr_assert_str_eq(fmt("%p", (void *)0x1000), "0x1000");
}

Test(format, truncates_but_returns_the_full_length)
{
	char buf[8];

	cr_assert_eq(fmt_snprintf(buf, sizeof(buf), "%s", "0123456789"), 10);
	cr_assert_str_eq(buf, "0123456");
	cr_assert_eq(fmt_snprintf(NULL, 0, "%d", 12345), 5);
}

/* ---- hash64 ---------------------------------------------------------------------- */

#define HASH64_PINNED 0x219d3b05a81984a5ull

Test(hash64, pinned_value_so_sandbox_checksums_stay_comparable)
{
	uint8_t buf[100];

	for (unsigned i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7 + 1);
	/* Changing the algorithm changes every sandbox checksum: update this knowingly. */
	cr_assert_eq(hash64(buf, sizeof(buf), 0), HASH64_PINNED, "hash64 = 0x%016lx",
		     hash64(buf, sizeof(buf), 0));
}

Test(hash64, every_bit_position_matters)
{
	uint8_t buf[4096] = { 0 };
	uint64_t base = hash64(buf, sizeof(buf), 0);

	for (unsigned i = 0; i < sizeof(buf); i += 509) {
		buf[i] ^= 0x10;
		cr_assert_neq(hash64(buf, sizeof(buf), 0), base, "flip at byte %u not seen", i);
		buf[i] ^= 0x10;
	}
}

Test(hash64, length_and_seed_change_the_hash_of_zeros)
{
	static uint8_t zeros[8192];

	cr_assert_neq(hash64(zeros, 4096, 0), hash64(zeros, 8192, 0));
	cr_assert_neq(hash64(zeros, 4096, 0), hash64(zeros, 4096, 1));
	cr_assert_neq(hash64(zeros, 4095, 0), hash64(zeros, 4096, 0));
}
