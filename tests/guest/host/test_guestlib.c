/*
 * Host-side tests of the guest library: number and command-line parsing, e820
 * queries, the formatter, the checksum, the heap, and the virtio driver, virtio-rng
 * and the vsock stack against the fake devices of fake_virtio.c. They run on a fake
 * zero page mapped below 4 GiB, where the library expects boot_params to be.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "../lib/bootparams.h"
#include "../lib/internal.h"
#include "fake_virtio.h"

uint64_t boot_params_gpa; /* what entry.S would have saved */
char _end[4096];          /* the linker script's end of image (heap_place) */

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

/* ---- heap (lib/heap.c): the sandbox's and fn's checksums must never drift ------------ */

static uint64_t heap_sum(uint64_t size, uint64_t seed)
{
	struct heap h = { .size = size, .pages = size / 4096, .seed = seed };
	uint64_t sum;

	h.base = aligned_alloc(4096, size);
	cr_assert_not_null(h.base);
	memset(h.base, 0xee, size); /* zero pages must come out zero whatever was there */
	heap_build(&h);
	sum = heap_checksum(&h);
	free(h.base);
	return sum;
}

Test(heap, checksums_recorded_from_the_sandbox_guest)
{
	/* printed by the sandbox guest before lib/heap.c existed (its "checksum=" line) */
	cr_assert_eq(heap_sum(4 << 20, 1), 0x4dbb46707d79f880ull);
	cr_assert_eq(heap_sum(1 << 20, 7), 0x75a287a9946da51eull);
	cr_assert_eq(heap_sum(8 << 20, 3), 0x9a3c2526a5a57c50ull);
	cr_assert_eq(heap_sum(16 << 20, 42), 0xaa53bd7df1703008ull);
	cr_assert_eq(heap_sum(16 << 20, 43), 0xf85148153f1a6b34ull);
}

TestSuite(heap_config, .init = fake_boot_params, .fini = drop_boot_params);

Test(heap_config, defaults_and_cmdline_values)
{
	struct heap h;

	set_cmdline("console=x");
	heap_config(&h);
	cr_assert_eq(h.size, HEAP_DEFAULT_SIZE);
	cr_assert_eq(h.seed, HEAP_DEFAULT_SEED);
	set_cmdline("heap=16M seed=0x2a");
	heap_config(&h);
	cr_assert_eq(h.size, 16 << 20);
	cr_assert_eq(h.pages, 4096);
	cr_assert_eq(h.seed, 42);
}

/* ---- virtio_mmio.device= parsing ----------------------------------------------------- */

static int mmio_arg(const char *s, struct virtio_mmio_loc *loc)
{
	return virtio_parse_mmio_arg(s, strlen(s), loc);
}

Test(virtio_cmdline, parses_size_base_irq_and_optional_id)
{
	struct virtio_mmio_loc loc;

	cr_assert_eq(mmio_arg("4K@0xd0000000:5", &loc), 0);
	cr_assert_eq(loc.size, 4096);
	cr_assert_eq(loc.base, 0xd0000000);
	cr_assert_eq(loc.irq, 5);
	cr_assert_eq(mmio_arg("0x1000@3489665024:6:1", &loc), 0);
	cr_assert_eq(loc.base, 0xd0001000);
	cr_assert_eq(loc.irq, 6);
	cr_assert_eq(mmio_arg("8k@0xfeb00000:12", &loc), 0);
	cr_assert_eq(loc.size, 8192);
}

Test(virtio_cmdline, rejects_malformed_entries)
{
	struct virtio_mmio_loc loc;

	cr_assert_eq(mmio_arg("4K", &loc), -EINVAL);
	cr_assert_eq(mmio_arg("4K@0xd0000000", &loc), -EINVAL);
	cr_assert_eq(mmio_arg("4K@0xd0000000:", &loc), -EINVAL);
	cr_assert_eq(mmio_arg("@0xd0000000:5", &loc), -EINVAL);
	cr_assert_eq(mmio_arg("4K@:5", &loc), -EINVAL);
	cr_assert_eq(mmio_arg("4K@0xd0000002:5", &loc), -EINVAL, "unaligned window");
	cr_assert_eq(mmio_arg("4K@0xd0000000:5:x", &loc), -EINVAL);
	cr_assert_eq(mmio_arg("4Q@0xd0000000:5", &loc), -EINVAL);
}

Test(virtio_cmdline, rejects_windows_ring3_cannot_reach_or_too_small)
{
	struct virtio_mmio_loc loc;

	cr_assert_eq(mmio_arg("8K@0xfffff000:5", &loc), -ERANGE);
	cr_assert_eq(mmio_arg("4K@0x100000000:5", &loc), -ERANGE);
	cr_assert_eq(mmio_arg("256@0xd0000000:5", &loc), -ERANGE);
	cr_assert_eq(mmio_arg("4K@0xd0000000:0x100000000", &loc), -ERANGE);
}

TestSuite(virtio, .init = fake_boot_params, .fini = drop_boot_params);

Test(virtio, cmdline_lists_every_well_formed_entry_in_order)
{
	struct virtio_mmio_loc locs[4];

	set_cmdline("heap=1M virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=junk "
		    "xvirtio_mmio.device=4K@0xd0002000:7 virtio_mmio.device=4K@0xd0001000:6");
	cr_assert_eq(virtio_cmdline_devices(locs, 4), 2);
	cr_assert_eq(locs[0].base, 0xd0000000);
	cr_assert_eq(locs[1].base, 0xd0001000);
	cr_assert_eq(locs[1].irq, 6);
	cr_assert_eq(virtio_cmdline_devices(locs, 1), 1, "max is respected");
}

/* FAKE_CMDLINE=vsock_debug FAKE_VERBOSE=1 shows the guest's packet trace. */
static void boot_fake(bool rng, bool vsock)
{
	const char *extra = getenv("FAKE_CMDLINE");
	char cmd[512];

	fake_reset(rng, vsock);
	snprintf(cmd, sizeof(cmd), "heap=1M %s %s %s",
		 rng ? "virtio_mmio.device=4K@0xd0000000:5" : "",
		 vsock ? "virtio_mmio.device=4K@0xd0001000:6" : "", extra ? extra : "");
	set_cmdline(cmd);
}

Test(virtio, find_matches_the_device_id_and_checks_the_version)
{
	struct virtio_dev d;

	boot_fake(true, true);
	cr_assert_eq(virtio_find(VIRTIO_ID_VSOCK, &d), 0);
	cr_assert_eq(d.base, FAKE_VSOCK_BASE);
	cr_assert_eq(d.irq, 6);
	cr_assert_eq(virtio_find(VIRTIO_ID_RNG, &d), 0);
	cr_assert_eq(d.base, FAKE_RNG_BASE);
	cr_assert_eq(virtio_find(VIRTIO_ID_NET, &d), -ENODEV);
	fake_set_rng_version(1, 1ull << VIRTIO_F_VERSION_1);
	cr_assert_eq(virtio_find(VIRTIO_ID_RNG, &d), -EPROTO, "legacy layout");
	boot_fake(true, false);
	cr_assert_eq(virtio_find(VIRTIO_ID_VSOCK, &d), -ENODEV, "not on the command line");
}

Test(virtio, begin_needs_version_1_and_never_takes_unoffered_features)
{
	struct virtio_dev d;

	boot_fake(true, false);
	cr_assert_eq(virtio_find(VIRTIO_ID_RNG, &d), 0);
	cr_assert_eq(virtio_begin(&d, ~0ull), 0);
	cr_assert_eq(d.features, 1ull << VIRTIO_F_VERSION_1);
	cr_assert(virtio_status(&d) & VIRTIO_CONFIG_S_FEATURES_OK);
	fake_set_rng_version(2, 0);
	cr_assert_eq(virtio_begin(&d, 0), -EPROTO);
	cr_assert(virtio_status(&d) & VIRTIO_CONFIG_S_FAILED);
}

Test(virtio, queue_size_is_a_power_of_two_within_both_limits)
{
	static struct virtq_ring ring;
	struct virtq q;
	struct virtio_dev d;

	boot_fake(true, false);
	cr_assert_eq(virtio_find(VIRTIO_ID_RNG, &d), 0);
	cr_assert_eq(virtio_begin(&d, 0), 0);
	cr_assert_eq(virtq_setup(&q, &d, 0, &ring, 100), 0);
	cr_assert_eq(q.size, 64);
	cr_assert_eq(virtq_setup(&q, &d, 0, &ring, 0), -EBUSY, "queue 0 is live already");
	cr_assert_eq(virtq_setup(&q, &d, 1, &ring, 0), -ENOENT, "rng has one queue");
}

Test(virtio, chains_are_freed_and_reused)
{
	static struct virtq_ring ring;
	static uint8_t bufs[8][16];
	struct virtq q;
	struct virtio_dev d;
	uint32_t len;
	int cookies = 0;

	boot_fake(true, false);
	cr_assert_eq(virtio_find(VIRTIO_ID_RNG, &d), 0);
	cr_assert_eq(virtio_begin(&d, 0), 0);
	cr_assert_eq(virtq_setup(&q, &d, 0, &ring, 8), 0);
	virtio_driver_ok(&d);
	for (unsigned round = 0; round < 5; round++) {
		struct virtq_buf b[3];
		int added = 0;

		for (unsigned i = 0; i < 3; i++)
			b[i] = (struct virtq_buf){ (uint64_t)(uintptr_t)bufs[i], 16, true };
		while (virtq_add(&q, b, 3, bufs[added]) >= 0)
			added++;
		cr_assert_eq(added, 2, "8 descriptors hold two 3-chains");
		cr_assert_geq(virtq_add(&q, b, 2, bufs[2]), 0, "then one 2-chain");
		cr_assert_eq(virtq_add(&q, b, 1, bufs[3]), -ENOSPC);
		virtq_kick(&q);
		guest_park(1);
		for (void *ck; (ck = virtq_get(&q, &len)); cookies++)
			cr_assert_eq(len, ck == bufs[2] ? 32u : 48u,
				     "the device fills whole chains");
		cr_assert_eq(q.num_free, 8, "round %u: every descriptor is back", round);
	}
	cr_assert_eq(cookies, 15);
}

Test(virtio, rejects_bad_chains)
{
	static struct virtq_ring ring;
	struct virtq q;
	struct virtio_dev d;
	struct virtq_buf b[2] = { { 0x1000, 1, true }, { 0x2000, 1, false } };

	boot_fake(true, false);
	cr_assert_eq(virtio_find(VIRTIO_ID_RNG, &d), 0);
	cr_assert_eq(virtio_begin(&d, 0), 0);
	cr_assert_eq(virtq_setup(&q, &d, 0, &ring, 8), 0);
	cr_assert_eq(virtq_add(&q, b, 2, &q), -EINVAL, "writable before readable");
	cr_assert_eq(virtq_add(&q, b, 0, &q), -EINVAL);
	cr_assert_eq(virtq_add(&q, b, 1, NULL), -EINVAL, "NULL cookie means \"none\"");
}

Test(virtio, a_used_id_not_in_flight_is_a_device_bug)
{
	static struct virtq_ring ring;
	struct virtq q;
	struct virtio_dev d;
	jmp_buf jb;
	uint32_t len;

	boot_fake(true, false);
	cr_assert_eq(virtio_find(VIRTIO_ID_RNG, &d), 0);
	cr_assert_eq(virtio_begin(&d, 0), 0);
	cr_assert_eq(virtq_setup(&q, &d, 0, &ring, 8), 0);
	ring.used.ring[0] = (struct vring_used_elem){ 5, 0 };
	ring.used.idx = 1;
	fake_assert_jmp = &jb;
	if (!setjmp(jb)) {
		virtq_get(&q, &len);
		cr_assert_fail("virtq_get accepted a used id that is not in flight");
	}
	cr_assert(strstr(fake_assert_msg, "not in flight"), "%s", fake_assert_msg);
}

Test(virtio, notify_honours_no_notify)
{
	static struct virtq_ring ring;
	static uint8_t buf[16];
	struct virtq q;
	struct virtio_dev d;
	struct virtq_buf b = { (uint64_t)(uintptr_t)buf, 16, true };

	boot_fake(true, false);
	cr_assert_eq(virtio_find(VIRTIO_ID_RNG, &d), 0);
	cr_assert_eq(virtio_begin(&d, 0), 0);
	cr_assert_eq(virtq_setup(&q, &d, 0, &ring, 8), 0);
	virtio_driver_ok(&d);
	cr_assert_geq(virtq_add(&q, &b, 1, buf), 0);
	ring.used.flags = VRING_USED_F_NO_NOTIFY;
	cr_assert_not(virtq_kick(&q));
	cr_assert_eq(ring.avail.idx, 1, "published all the same");
	ring.used.flags = 0;
	cr_assert_not(virtq_kick(&q), "nothing new since the last decision");
	cr_assert_geq(virtq_add(&q, &b, 1, buf), 0);
	cr_assert(virtq_kick(&q));
	cr_assert_eq(q.kicks, 1);
}

/* ---- virtio-rng ---------------------------------------------------------------------- */

TestSuite(rng, .init = fake_boot_params, .fini = drop_boot_params);

Test(rng, loops_until_the_buffer_is_full)
{
	uint8_t buf[1000];

	boot_fake(true, false);
	fake_rng.max_per_request = 7;
	memset(buf, 0, sizeof(buf));
	cr_assert_eq(rng_read(buf, sizeof(buf)), (long)sizeof(buf));
	cr_assert_eq(fake_rng.requests, (sizeof(buf) + 6) / 7);
	for (unsigned i = 0; i < sizeof(buf); i++)
		cr_assert_neq(buf[i], 0, "byte %u never written", i);
}

Test(rng, no_device_is_enodev)
{
	uint8_t buf[4];

	boot_fake(false, true);
	cr_assert_eq(rng_read(buf, sizeof(buf)), -ENODEV);
}

Test(rng, a_device_that_never_answers_times_out)
{
	uint8_t buf[4];

	boot_fake(true, false);
	fake_rng.max_per_request = 0;
	cr_assert_eq(rng_init(), 0);
	/* a device that stopped: its queue never becomes ready again */
	mmio_write32(FAKE_RNG_BASE + VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
	cr_assert_eq(rng_read(buf, sizeof(buf)), -ETIMEDOUT);
}

/* ---- vsock against the fake device --------------------------------------------------- */

TestSuite(vsock, .init = fake_boot_params, .fini = drop_boot_params);

#define GUEST_PORT 5000
#define HOST_PORT  7000
#define SEC        1000000ull

static void vsock_up(void)
{
	boot_fake(true, true);
	cr_assert_eq(vsock_init(), 0);
	cr_assert_eq(vsock_listen(GUEST_PORT), 0);
}

static void assert_clean(void)
{
	cr_assert_eq(fake_vsock.violations, 0, "the guest broke a rule: %s",
		     fake_vsock.last_violation);
}

/* A host client connected to GUEST_PORT and accepted by the guest. */
static int accepted(int *h)
{
	int c;

	*h = fake_vsock_connect(GUEST_PORT);
	c = vsock_accept(GUEST_PORT, SEC);
	cr_assert_geq(c, 0, "accept: %d", c);
	guest_park(1); /* the device takes the RESPONSE off the TX queue */
	cr_assert(fake_vsock.conns[*h].established, "the guest never sent RESPONSE");
	return c;
}

static uint8_t *pattern(size_t len, unsigned seed)
{
	uint8_t *p = malloc(len);

	cr_assert_not_null(p);
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(i * 131 + seed + (i >> 12));
	return p;
}

static long read_exactly(int c, uint8_t *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		long n = vsock_read(c, buf + got, len - got, SEC);

		if (n <= 0)
			return n;
		got += (size_t)n;
	}
	return (long)got;
}

Test(vsock, init_posts_rx_and_event_buffers_and_reads_the_cid)
{
	boot_fake(true, true);
	fake_vsock.cid = 42;
	cr_assert_eq(vsock_init(), 0);
	cr_assert_eq(vsock_local_cid(), 42);
	cr_assert_eq(vsock_queue(0)->ring->avail.idx, VSOCK_RX_BUFS);
	cr_assert_eq(vsock_queue(2)->ring->avail.idx, 4);
	cr_assert_eq(vsock_queue(1)->ring->avail.flags, VRING_AVAIL_F_NO_INTERRUPT);
	cr_assert_eq(vsock_device()->features, 1ull << VIRTIO_F_VERSION_1, "no SEQPACKET");
}

Test(vsock, no_device_is_enodev)
{
	boot_fake(true, false);
	cr_assert_eq(vsock_init(), -ENODEV);
	cr_assert_eq(vsock_listen(1), -ENODEV);
}

Test(vsock, listen_rejects_duplicates)
{
	vsock_up();
	cr_assert_eq(vsock_listen(GUEST_PORT), -EADDRINUSE);
	cr_assert_eq(vsock_listen(VSOCK_PORT_ANY), -EINVAL);
}

Test(vsock, host_connection_to_a_port_nobody_listens_on_gets_rst)
{
	int h;

	vsock_up();
	h = fake_vsock_connect(GUEST_PORT + 1);
	cr_assert_eq(vsock_accept(VSOCK_PORT_ANY, 0), -EAGAIN);
	guest_park(1);
	vsock_poll();
	guest_park(1);
	cr_assert(!fake_vsock.conns[h].established);
	cr_assert(fake_vsock.conns[h].rst, "no RST for a port nobody listens on");
	assert_clean();
}

Test(vsock, host_to_guest_1mib_arrives_intact_with_credit_updates)
{
	size_t len = 1 << 20;
	uint8_t *data = pattern(len, 1), *got = malloc(len);
	int h, c;

	vsock_up();
	c = accepted(&h);
	fake_vsock_send(h, data, len);
	cr_assert_eq(read_exactly(c, got, len), (long)len);
	cr_assert(!memcmp(got, data, len), "the stream was corrupted");
	/* 1 MiB through a 256 KiB window: an update per 128 KiB (or more) read */
	cr_assert_geq(fake_vsock.credit_updates, len / VSOCK_CONN_BUF - 1);
	cr_assert_leq(fake_vsock.credit_updates, len / (VSOCK_CONN_BUF / 2) + 1);
	assert_clean();
	free(data);
	free(got);
}

Test(vsock, guest_to_host_1mib_stays_within_the_hosts_credit)
{
	size_t len = 1 << 20;
	uint8_t *data = pattern(len, 2);
	int c;

	boot_fake(true, true);
	fake_vsock.buf_alloc = 48 << 10; /* not a multiple of the packet size */
	fake_vsock_listen(HOST_PORT);
	cr_assert_eq(vsock_init(), 0);
	c = vsock_connect(EMBER_VSOCK_HOST_CID, HOST_PORT, SEC);
	cr_assert_geq(c, 0, "connect: %d", c);
	cr_assert_eq(vsock_write(c, data, len, 10 * SEC), (long)len);
	for (unsigned i = 0; i < 10; i++)
		guest_park(1); /* the device drains the TX queue */
	{
		int h = fake_vsock_find(HOST_PORT, 0);
		struct vsock_conn_info info;

		vsock_conn_info(c, &info);
		h = fake_vsock_find(HOST_PORT, info.local_port);
		cr_assert_geq(h, 0);
		cr_assert_eq(fake_vsock.conns[h].in_len, len);
		cr_assert(!memcmp(fake_vsock.conns[h].in, data, len), "the stream was corrupted");
	}
	assert_clean();
	free(data);
}

Test(vsock, a_zero_credit_stall_ends_with_a_credit_request)
{
	uint8_t data[100 << 10];
	int c;

	boot_fake(true, true);
	fake_vsock.buf_alloc = 32 << 10;
	fake_vsock.credit_on_request = true; /* a host that never volunteers credit */
	fake_vsock_listen(HOST_PORT);
	cr_assert_eq(vsock_init(), 0);
	c = vsock_connect(EMBER_VSOCK_HOST_CID, HOST_PORT, SEC);
	cr_assert_geq(c, 0);
	memset(data, 7, sizeof(data));
	cr_assert_eq(vsock_write(c, data, sizeof(data), 30 * SEC), (long)sizeof(data));
	cr_assert_geq(fake_vsock.credit_requests, 3, "%u", fake_vsock.credit_requests);
	assert_clean();
}

Test(vsock, one_byte_packets_never_starve_the_rx_ring)
{
	size_t len = 3000;
	uint8_t *data = pattern(len, 3), *got = malloc(len);
	int h, c;

	vsock_up();
	fake_vsock.max_pkt = 1;
	c = accepted(&h);
	fake_vsock_send(h, data, len);
	cr_assert_eq(read_exactly(c, got, len), (long)len);
	cr_assert(!memcmp(got, data, len));
	/* RX notifies come once per half ring, not per packet */
	cr_assert_leq(fake_vsock.notifies[0], len / (VSOCK_RX_BUFS / 2) + 2, "%u RX notifies",
		      fake_vsock.notifies[0]);
	assert_clean();
	free(data);
	free(got);
}

Test(vsock, end_of_stream_after_the_data)
{
	uint8_t buf[16];
	int h, c;

	vsock_up();
	c = accepted(&h);
	fake_vsock_send(h, "abc", 3);
	fake_vsock_shutdown(h, VSOCK_SHUT_WR);
	cr_assert_eq(read_exactly(c, buf, 3), 3);
	cr_assert_eq(vsock_read(c, buf, sizeof(buf), SEC), 0, "no EOF after SHUTDOWN(SEND)");
	cr_assert_eq(vsock_read(c, buf, sizeof(buf), 0), 0, "EOF stays");
	cr_assert_eq(vsock_write(c, "x", 1, SEC), 1, "the other direction is still open");
	assert_clean();
}

Test(vsock, reset_after_the_data)
{
	uint8_t buf[16];
	int h, c;

	vsock_up();
	c = accepted(&h);
	fake_vsock_send(h, "xyz", 3);
	guest_park(1);
	fake_vsock_rst(h);
	cr_assert_eq(read_exactly(c, buf, 3), 3, "bytes before the RST are kept");
	cr_assert_eq(vsock_read(c, buf, sizeof(buf), SEC), -ECONNRESET);
	cr_assert_eq(vsock_write(c, "x", 1, SEC), -ECONNRESET);
	vsock_close(c);
	cr_assert_eq(vsock_read(c, buf, sizeof(buf), 0), -EBADF, "closed");
	assert_clean();
}

Test(vsock, read_timeouts)
{
	uint8_t buf[4];
	int h, c;
	uint64_t t0;

	vsock_up();
	c = accepted(&h);
	cr_assert_eq(vsock_read(c, buf, sizeof(buf), 0), -EAGAIN);
	t0 = fake_now;
	cr_assert_eq(vsock_read(c, buf, sizeof(buf), 50000), -ETIMEDOUT);
	cr_assert_geq(fake_now - t0, 50000);
	cr_assert_lt(fake_now - t0, 80000, "waited %lu us", (unsigned long)(fake_now - t0));
}

Test(vsock, close_is_shutdown_then_the_peers_rst)
{
	struct vsock_conn_info info;
	int h, c;

	vsock_up();
	c = accepted(&h);
	vsock_close(c);
	vsock_conn_info(c, &info);
	cr_assert_eq(info.state, VSOCK_CLOSING);
	guest_park(1);
	vsock_poll();
	cr_assert_eq(fake_vsock.conns[h].guest_shut, VSOCK_SHUT_RD | VSOCK_SHUT_WR);
	vsock_conn_info(c, &info);
	cr_assert_eq(info.state, VSOCK_FREE, "the host's RST did not free the slot");
	cr_assert_eq(fake_vsock.rsts, 0, "nobody answers an RST");
	assert_clean();
}

Test(vsock, close_gives_up_on_a_silent_peer_with_rst)
{
	struct vsock_conn_info info;
	uint64_t deadline;
	int h, c;

	vsock_up();
	fake_vsock.silent_on_shutdown = true;
	c = accepted(&h);
	vsock_close(c);
	deadline = deadline_after(5 * SEC);
	do {
		vsock_wait(deadline);
		vsock_conn_info(c, &info);
	} while (info.state != VSOCK_FREE && deadline_left(deadline));
	cr_assert_eq(info.state, VSOCK_FREE);
	guest_park(1);
	cr_assert_eq(fake_vsock.rsts, 1, "no RST after the close timeout");
	assert_clean();
}

Test(vsock, connect_refused_and_accepted)
{
	int c;

	vsock_up();
	/* refused: an RST answers the REQUEST, ECONNRESET as in Linux */
	cr_assert_eq(vsock_connect(EMBER_VSOCK_HOST_CID, HOST_PORT, SEC), -ECONNRESET);
	fake_vsock_listen(HOST_PORT);
	c = vsock_connect(EMBER_VSOCK_HOST_CID, HOST_PORT, SEC);
	cr_assert_geq(c, 0);
	cr_assert_eq(vsock_connect(EMBER_VSOCK_HOST_CID, HOST_PORT, 0), -EINVAL);
	assert_clean();
}

static int echo_conn = -1;

static void echo_hook(void)
{
	char buf[64];
	size_t n;

	if (echo_conn < 0) {
		for (int i = 0; i < FAKE_CONNS; i++)
			if (fake_vsock.conns[i].live && fake_vsock.conns[i].host_port == HOST_PORT)
				echo_conn = i;
		if (echo_conn < 0)
			return;
	}
	n = fake_vsock_recv(echo_conn, buf, sizeof(buf));
	if (n)
		fake_vsock_send(echo_conn, "hi there\n", 9);
}

Test(vsock, dial_style_exchange)
{
	char line[16];
	int c;

	vsock_up();
	fake_vsock.auto_consume = false;
	fake_vsock_listen(HOST_PORT);
	fake_park_hook = echo_hook;
	c = vsock_connect(EMBER_VSOCK_HOST_CID, HOST_PORT, SEC);
	cr_assert_geq(c, 0);
	cr_assert_eq(vsock_write(c, "hello\n", 6, SEC), 6);
	cr_assert_eq(read_exactly(c, (uint8_t *)line, 9), 9);
	cr_assert(!memcmp(line, "hi there\n", 9));
	assert_clean();
}

Test(vsock, transport_reset_keeps_listeners_and_rereads_the_cid)
{
	uint8_t buf[8];
	int h, c, c2;

	vsock_up();
	c = accepted(&h);
	fake_vsock_transport_reset(77);
	cr_assert_eq(vsock_read(c, buf, sizeof(buf), SEC), -ECONNRESET);
	cr_assert_eq(vsock_local_cid(), 77);
	cr_assert_eq(vsock_get_stats()->transport_resets, 1);
	vsock_close(c);
	c2 = accepted(&h);
	cr_assert_geq(c2, 0, "the listener did not survive");
	fake_vsock_send(h, "after", 5);
	cr_assert_eq(read_exactly(c2, buf, 5), 5);
	assert_clean();
}

Test(vsock, credit_request_is_answered)
{
	int h, c;
	unsigned before;

	vsock_up();
	c = accepted(&h);
	(void)c;
	before = fake_vsock.credit_updates;
	fake_vsock_inject(2, 3, fake_vsock.conns[h].host_port, GUEST_PORT,
			  VIRTIO_VSOCK_OP_CREDIT_REQUEST, 0);
	guest_park(1);
	vsock_poll();
	guest_park(1);
	cr_assert_eq(fake_vsock.credit_updates, before + 1);
	assert_clean();
}

Test(vsock, packets_for_another_cid_are_dropped)
{
	int h, c;

	vsock_up();
	c = accepted(&h);
	(void)c;
	fake_vsock_inject(2, 99, fake_vsock.conns[h].host_port, GUEST_PORT,
			  VIRTIO_VSOCK_OP_CREDIT_REQUEST, 0);
	guest_park(1);
	vsock_poll();
	cr_assert_eq(vsock_get_stats()->dropped, 1);
	assert_clean();
}

Test(vsock, a_peer_beyond_our_credit_gets_reset)
{
	size_t len = 2 * VSOCK_CONN_BUF, got = 0;
	uint8_t *data = pattern(len, 4), buf[4096];
	long n;
	int h, c;

	vsock_up();
	fake_vsock.ignore_guest_credit = true;
	c = accepted(&h);
	fake_vsock_send(h, data, len);
	guest_park(1);
	vsock_poll();
	while ((n = vsock_read(c, buf, sizeof(buf), SEC)) > 0) {
		cr_assert(!memcmp(buf, data + got, (size_t)n));
		got += (size_t)n;
	}
	cr_assert_eq(n, -EPROTO);
	cr_assert_leq(got, VSOCK_CONN_BUF);
	guest_park(1);
	cr_assert(fake_vsock.conns[h].rst, "the host was not told");
	free(data);
}

Test(vsock, connection_slots_are_bounded)
{
	int h[VSOCK_MAX_CONNS + 1];

	vsock_up();
	for (unsigned i = 0; i <= VSOCK_MAX_CONNS; i++)
		h[i] = fake_vsock_connect(GUEST_PORT);
	for (unsigned i = 0; i < 4; i++) {
		guest_park(1);
		vsock_poll();
	}
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		cr_assert(fake_vsock.conns[h[i]].established, "connection %u", i);
	cr_assert(fake_vsock.conns[h[VSOCK_MAX_CONNS]].rst, "one too many was not refused");
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		cr_assert_geq(vsock_accept(GUEST_PORT, 0), 0);
	cr_assert_eq(vsock_accept(GUEST_PORT, 0), -EAGAIN);
	assert_clean();
}

Test(vsock, accept_is_first_come_first_served)
{
	struct vsock_conn_info info;
	int h1, h2, c;

	vsock_up();
	cr_assert_eq(vsock_listen(GUEST_PORT + 1), 0);
	h1 = fake_vsock_connect(GUEST_PORT + 1);
	h2 = fake_vsock_connect(GUEST_PORT);
	c = vsock_accept(VSOCK_PORT_ANY, SEC);
	vsock_conn_info(c, &info);
	cr_assert_eq(info.local_port, GUEST_PORT + 1);
	cr_assert_eq(info.peer_port, fake_vsock.conns[h1].host_port);
	c = vsock_accept(GUEST_PORT + 1, 0);
	cr_assert_eq(c, -EAGAIN);
	c = vsock_accept(GUEST_PORT, 0);
	vsock_conn_info(c, &info);
	cr_assert_eq(info.peer_port, fake_vsock.conns[h2].host_port);
	assert_clean();
}

/* ---- time helpers -------------------------------------------------------------------- */

Test(time, deadlines_saturate_and_forever_stays_forever)
{
	fake_reset(false, false);
	cr_assert_eq(deadline_after(GUEST_FOREVER), GUEST_FOREVER);
	cr_assert_eq(deadline_left(GUEST_FOREVER), GUEST_FOREVER);
	cr_assert_eq(deadline_after(GUEST_FOREVER - 1), GUEST_FOREVER - 1);
	cr_assert_eq(deadline_left(fake_now - 1), 0);
	cr_assert_geq(deadline_left(deadline_after(100)), 98);
}

Test(vsock, a_transport_reset_already_delivered_does_not_kill_a_new_connect)
{
	int c;

	vsock_up();
	fake_vsock_listen(HOST_PORT);
	fake_vsock_transport_reset(3);
	guest_park(1); /* the event is in the used ring before the guest looks */
	c = vsock_connect(EMBER_VSOCK_HOST_CID, HOST_PORT, SEC);
	cr_assert_geq(c, 0, "connect: %d: the old reset killed the new connection", c);
	cr_assert_eq(vsock_get_stats()->transport_resets, 1);
	assert_clean();
}
