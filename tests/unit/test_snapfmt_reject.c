/*
 * Untrusted state files: every corruption is rejected with a message that names the
 * problem, and no input crashes the reader (run under `make SAN=1` for the full value).
 */
#include "test_snapfmt_fixture.h"

static int decode(const uint8_t *f, size_t len, struct snap_err *err)
{
	struct snap_state st;
	int ret = snap_state_decode(f, len, &st, err);

	if (!ret)
		snap_state_free(&st);
	return ret;
}

static int decode_body(const uint8_t *body, size_t len, struct snap_err *err)
{
	size_t flen;
	uint8_t *f = fx_wrap(body, len, &flen);
	int ret = decode(f, flen, err);

	free(f);
	return ret;
}

/* ---- preamble ---- */
Test(snapfmt_reject, every_truncation_of_the_state_file)
{
	struct snap_err err;
	struct snap_state st;
	size_t len;
	uint8_t *f;

	fx_fill_state(&st);
	f = fx_encode(&st, &len);
	for (size_t cut = 0; cut < len; cut++)
		cr_assert_lt(decode(f, cut, &err), 0, "truncated to %zu bytes was accepted", cut);
	free(f);
	snap_state_free(&st);
}

Test(snapfmt_reject, every_truncation_of_the_body_even_with_a_matching_preamble)
{
	struct snap_err err;
	struct snap_state st;
	size_t len;
	uint8_t *f, *g;

	fx_fill_state(&st);
	f = fx_encode(&st, &len);
	g = malloc(len);
	for (size_t cut = SNAP_PREAMBLE_SIZE; cut < len; cut++) {
		memcpy(g, f, cut);
		fx_fix_preamble(g, cut);
		cr_assert_lt(decode(g, cut, &err), 0, "body truncated to %zu bytes was accepted",
			     cut - SNAP_PREAMBLE_SIZE);
	}
	free(g);
	free(f);
	snap_state_free(&st);
}

Test(snapfmt_reject, random_bit_flips_fail_the_crc)
{
	struct snap_err err;
	struct snap_state st;
	size_t len;
	uint8_t *f;
	uint32_t x = 2463534242u;

	fx_fill_state(&st);
	f = fx_encode(&st, &len);
	for (int i = 0; i < 2000; i++) {
		x ^= x << 13; x ^= x >> 17; x ^= x << 5;
		size_t pos = SNAP_PREAMBLE_SIZE + x % (len - SNAP_PREAMBLE_SIZE);
		uint8_t bit = (uint8_t)(1u << (x >> 29));
		f[pos] ^= bit;
		cr_assert_eq(decode(f, len, &err), -EBADMSG, "flip at %zu accepted", pos);
		cr_assert(strstr(err.msg, "CRC32C mismatch"), "%s", err.msg);
		f[pos] ^= bit;
	}
	cr_assert_eq(decode(f, len, &err), 0, "%s", err.msg);
	free(f);
	snap_state_free(&st);
}

Test(snapfmt_reject, wrong_magic)
{
	struct snap_err err;
	struct snap_state st;
	size_t len;
	uint8_t *f;

	fx_fill_state(&st);
	f = fx_encode(&st, &len);
	f[3] = 'X';
	cr_assert_eq(decode(f, len, &err), -EINVAL);
	cr_assert(strstr(err.msg, "bad magic"), "%s", err.msg);
	free(f);
	snap_state_free(&st);
}

Test(snapfmt_reject, body_length_not_matching_the_file)
{
	struct snap_err err;
	struct snap_state st;
	size_t len;
	uint8_t *f;

	fx_fill_state(&st);
	f = fx_encode(&st, &len);
	f[8] ^= 1;
	cr_assert_eq(decode(f, len, &err), -EINVAL);
	cr_assert(strstr(err.msg, "preamble declares"), "%s", err.msg);
	free(f);
	snap_state_free(&st);
}

Test(snapfmt_reject, body_over_64_mib_before_reading_it)
{
	struct snap_err err;
	uint8_t f[SNAP_PREAMBLE_SIZE + 4] = "EMBRSNAP";

	f[8] = 0; f[9] = 0; f[10] = 0; f[11] = 0x10; /* 256 MiB */
	cr_assert_eq(decode(f, sizeof(f), &err), -EFBIG);
	cr_assert(strstr(err.msg, "exceeds"), "%s", err.msg);
}

/* ---- the bounds pre-pass ---- */
Test(snapfmt_precheck, huge_declared_array_length_is_rejected_before_allocation)
{
	struct snap_err err;
	/* {"vcpus": array16 of 65535} with 3 bytes of elements */
	static const uint8_t body[] = { 0x81, 0xa5, 'v', 'c', 'p', 'u', 's', 0xdc, 0xff, 0xff, 1, 2, 3 };

	cr_assert_eq(snap_msgpack_precheck(body, sizeof(body), &err), -EINVAL);
	cr_assert(strstr(err.msg, "declares 65535 entries but only 3 bytes remain"), "%s", err.msg);
	cr_assert_eq(decode_body(body, sizeof(body), &err), -EINVAL);
}

Test(snapfmt_precheck, array32_of_four_billion_entries)
{
	struct snap_err err;
	static const uint8_t body[] = { 0x81, 0xa1, 'a', 0xdd, 0xff, 0xff, 0xff, 0xff };

	cr_assert_eq(snap_msgpack_precheck(body, sizeof(body), &err), -EINVAL);
	cr_assert(strstr(err.msg, "4294967295 entries (at most 65536)"), "%s", err.msg);
}

Test(snapfmt_precheck, map32_and_bin32_and_str32_lengths_past_the_end)
{
	struct snap_err err;
	static const uint8_t map[] = { 0xdf, 0x00, 0x00, 0x10, 0x00, 0xa0 };
	static const uint8_t bin[] = { 0x81, 0xa1, 'a', 0xc6, 0x00, 0x00, 0x10, 0x00, 0 };
	static const uint8_t str[] = { 0x81, 0xa1, 'a', 0xdb, 0x00, 0x00, 0x01, 0x00, 'x' };

	cr_assert_eq(snap_msgpack_precheck(map, sizeof(map), &err), -EINVAL);
	cr_assert(strstr(err.msg, "map declares 4096 entries"), "%s", err.msg);
	cr_assert_eq(snap_msgpack_precheck(bin, sizeof(bin), &err), -EINVAL);
	cr_assert(strstr(err.msg, "bin declares 4096 bytes but only 1 remain"), "%s", err.msg);
	cr_assert_eq(snap_msgpack_precheck(str, sizeof(str), &err), -EINVAL);
	cr_assert(strstr(err.msg, "string declares 256 bytes"), "%s", err.msg);
}

Test(snapfmt_precheck, deep_nesting)
{
	struct snap_err err;
	uint8_t body[64];
	size_t n = 0;

	/* {"a": [[[[[[[[1]]]]]]]]}: map + 8 arrays = 9 levels */
	body[n++] = 0x81; body[n++] = 0xa1; body[n++] = 'a';
	for (int i = 0; i < 8; i++)
		body[n++] = 0x91;
	body[n++] = 0x01;
	cr_assert_eq(snap_msgpack_precheck(body, n, &err), -EINVAL);
	cr_assert(strstr(err.msg, "nesting deeper than 8"), "%s", err.msg);
	cr_assert_eq(decode_body(body, n, &err), -EINVAL);

	/* 8 levels are fine for the pre-pass */
	n = 0;
	body[n++] = 0x81; body[n++] = 0xa1; body[n++] = 'a';
	for (int i = 0; i < 7; i++)
		body[n++] = 0x91;
	body[n++] = 0x01;
	cr_assert_eq(snap_msgpack_precheck(body, n, &err), 0, "%s", err.msg);
}

Test(snapfmt_precheck, long_strings_and_bins)
{
	struct snap_err err;
	size_t n = 3 + 3 + SNAP_MAX_STR + 1;
	uint8_t *body = calloc(1, n + 8);

	body[0] = 0x81; body[1] = 0xa1; body[2] = 'a';
	body[3] = 0xda; body[4] = (SNAP_MAX_STR + 1) >> 8; body[5] = (SNAP_MAX_STR + 1) & 0xff;
	cr_assert_eq(snap_msgpack_precheck(body, n, &err), -EINVAL);
	cr_assert(strstr(err.msg, "string of 4097 bytes (at most 4096)"), "%s", err.msg);
	free(body);

	static const uint8_t bin[] = { 0x81, 0xa1, 'a', 0xc6, 0x00, 0x10, 0x00, 0x01 };
	cr_assert_eq(snap_msgpack_precheck(bin, sizeof(bin), &err), -EINVAL);
	cr_assert(strstr(err.msg, "bin of 1048577 bytes"), "%s", err.msg);
}

Test(snapfmt_precheck, non_string_keys_floats_ext_and_reserved_bytes)
{
	struct snap_err err;
	static const uint8_t intkey[] = { 0x81, 0x01, 0x02 };
	static const uint8_t flt[] = { 0x81, 0xa1, 'a', 0xca, 0, 0, 0, 0 };
	static const uint8_t ext[] = { 0x81, 0xa1, 'a', 0xd4, 0x01, 0x00 };
	static const uint8_t c1[] = { 0x81, 0xa1, 'a', 0xc1 };

	cr_assert_eq(snap_msgpack_precheck(intkey, sizeof(intkey), &err), -EINVAL);
	cr_assert(strstr(err.msg, "map key is a integer, not a string") ||
		  strstr(err.msg, "map key"), "%s", err.msg);
	cr_assert_eq(snap_msgpack_precheck(flt, sizeof(flt), &err), -EINVAL);
	cr_assert(strstr(err.msg, "float"), "%s", err.msg);
	cr_assert_eq(snap_msgpack_precheck(ext, sizeof(ext), &err), -EINVAL);
	cr_assert(strstr(err.msg, "ext"), "%s", err.msg);
	cr_assert_eq(snap_msgpack_precheck(c1, sizeof(c1), &err), -EINVAL);
	cr_assert(strstr(err.msg, "0xc1"), "%s", err.msg);
}

Test(snapfmt_precheck, top_level_must_be_one_map_without_trailing_bytes)
{
	struct snap_err err;
	static const uint8_t arr[] = { 0x90 };
	static const uint8_t trailing[] = { 0x80, 0x00 };
	static const uint8_t ok[] = { 0x80 };

	cr_assert_eq(snap_msgpack_precheck(arr, sizeof(arr), &err), -EINVAL);
	cr_assert(strstr(err.msg, "not a map"), "%s", err.msg);
	cr_assert_eq(snap_msgpack_precheck(trailing, sizeof(trailing), &err), -EINVAL);
	cr_assert(strstr(err.msg, "1 trailing bytes"), "%s", err.msg);
	cr_assert_eq(snap_msgpack_precheck(ok, sizeof(ok), &err), 0);
	cr_assert_eq(snap_msgpack_precheck(ok, 0, &err), -EINVAL);
}

Test(snapfmt_precheck, accepts_every_encoded_state)
{
	struct snap_err err = { "" };
	struct snap_state st;
	size_t len;
	uint8_t *f;

	fx_fill_state(&st);
	f = fx_encode(&st, &len);
	cr_assert_eq(snap_msgpack_precheck(f + SNAP_PREAMBLE_SIZE, len - SNAP_PREAMBLE_SIZE, &err), 0, "%s", err.msg);
	free(f);
	snap_state_free(&st);
}

/* ---- mutation fuzzing with the CRC fixed up: reject or accept, never crash ---- */
Test(snapfmt_fuzz, mutated_bodies_with_valid_crc_never_crash)
{
	static const uint8_t interesting[] = { 0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0,
					       0xc1, 0xc4, 0xc6, 0xca, 0xcf, 0xd3, 0xd9, 0xdb, 0xdc,
					       0xdd, 0xde, 0xdf, 0xe0, 0xff };
	struct snap_err err;
	struct snap_state st;
	size_t len;
	uint8_t *f, *g;
	uint64_t x = 88172645463325252ull;
	int accepted = 0, rejected = 0;

	fx_fill_state(&st);
	f = fx_encode(&st, &len);
	g = malloc(len);
	for (int iter = 0; iter < 4000; iter++) {
		size_t glen = len;
		int nmut = 1 + iter % 4;

		memcpy(g, f, len);
		for (int m = 0; m < nmut; m++) {
			x ^= x << 13; x ^= x >> 7; x ^= x << 17;
			size_t pos = SNAP_PREAMBLE_SIZE + (x >> 8) % (glen - SNAP_PREAMBLE_SIZE);
			switch (x % 5) {
			case 0: g[pos] ^= (uint8_t)(1u << ((x >> 40) & 7)); break;
			case 1: g[pos] = interesting[(x >> 40) % sizeof(interesting)]; break;
			case 2: g[pos] = (uint8_t)(x >> 48); break;
			case 3: /* a length field of 0xff.. after a type byte */
				if (pos + 4 < glen) { g[pos] = 0xdd; g[pos + 1] = 0xff; g[pos + 2] = 0xff; }
				break;
			case 4: glen = pos + 1; break; /* truncate */
			}
		}
		fx_fix_preamble(g, glen);
		struct snap_state out;
		int ret = snap_state_decode(g, glen, &out, &err);
		if (ret == 0) {
			cr_assert_eq(snap_state_validate(&out, NULL), 0);
			snap_state_free(&out);
			accepted++;
		} else {
			cr_assert_lt(ret, 0);
			cr_assert_neq(err.msg[0], '\0');
			rejected++;
		}
	}
	cr_assert_gt(rejected, 1000, "only %d of 4000 mutations rejected", rejected);
	cr_log_info("mutations: %d accepted, %d rejected", accepted, rejected);
	free(g);
	free(f);
	snap_state_free(&st);
}

/* ---- schema walk: types and ranges, with the exact path ---- */
Test(snapfmt_schema, wrong_type_is_named_by_path)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct fx_tree t;

	fx_fill_state(&st);
	fx_tree_from_state(&t, &st);
	*fx_at(&t.root, "vcpus[1].sregs.cs.limit") = fx_str("big");
	cr_assert_eq(fx_decode_tree(&t, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "vcpus[1].sregs.cs.limit: expected unsigned integer, got string");
	fx_tree_free(&t);
	snap_state_free(&st);
}

Test(snapfmt_schema, out_of_range_value_is_named_by_path)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct fx_tree t;

	fx_fill_state(&st);
	fx_tree_from_state(&t, &st);
	fx_at(&t.root, "vm.pic_slave.imr")->via.u64 = 256;
	cr_assert_eq(fx_decode_tree(&t, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "vm.pic_slave.imr: 256 is out of range (at most 255)");
	fx_tree_free(&t);
	snap_state_free(&st);
}

Test(snapfmt_schema, lapic_must_be_exactly_1024_bytes)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct fx_tree t;

	fx_fill_state(&st);
	fx_tree_from_state(&t, &st);
	fx_at(&t.root, "vcpus[0].lapic")->via.bin.size = 1000;
	cr_assert_eq(fx_decode_tree(&t, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "vcpus[0].lapic: expected exactly 1024 bytes, got 1000");
	fx_tree_free(&t);
	snap_state_free(&st);
}

Test(snapfmt_schema, xsave_shorter_than_4096_bytes)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct fx_tree t;

	fx_fill_state(&st);
	fx_tree_from_state(&t, &st);
	fx_at(&t.root, "vcpus[1].xsave")->via.bin.size = 4000;
	cr_assert_eq(fx_decode_tree(&t, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "vcpus[1].xsave: 4000 bytes (4096..65536 allowed)");
	fx_tree_free(&t);
	snap_state_free(&st);
}

Test(snapfmt_schema, ioapic_redirection_table_needs_24_entries)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct fx_tree t;

	fx_fill_state(&st);
	fx_tree_from_state(&t, &st);
	fx_array_resize(&t, fx_at(&t.root, "vm.ioapic.redirtbl"), 23);
	cr_assert_eq(fx_decode_tree(&t, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "vm.ioapic.redirtbl: expected exactly 24 entries, got 23");
	fx_tree_free(&t);
	snap_state_free(&st);
}

Test(snapfmt_schema, too_many_msrs)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct fx_tree t;

	fx_fill_state(&st);
	fx_tree_from_state(&t, &st);
	fx_array_resize(&t, fx_at(&t.root, "vcpus[0].msrs"), SNAP_MAX_MSRS + 1);
	cr_assert_eq(fx_decode_tree(&t, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "vcpus[0].msrs: 1025 entries exceed the maximum of 1024");
	fx_tree_free(&t);
	snap_state_free(&st);
}

Test(snapfmt_schema, duplicate_known_key)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct fx_tree t;

	fx_fill_state(&st);
	fx_tree_from_state(&t, &st);
	fx_map_add(&t, fx_at(&t.root, "vcpus[0].regs"), "rip", fx_uint(1));
	cr_assert_eq(fx_decode_tree(&t, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "vcpus[0].regs.rip: duplicate key");
	fx_tree_free(&t);
	snap_state_free(&st);
}

Test(snapfmt_schema, unknown_memory_encoding)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct fx_tree t;

	fx_fill_state(&st);
	fx_tree_from_state(&t, &st);
	*fx_at(&t.root, "memory.encoding") = fx_str("zstd");
	cr_assert_eq(fx_decode_tree(&t, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "memory.encoding: unknown value \"zstd\" (this ember knows: raw, lz4)");
	fx_tree_free(&t);
	snap_state_free(&st);
}

Test(snapfmt_schema, string_with_nul_byte)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct fx_tree t;
	static const char evil[] = "x86_64\0evil";

	fx_fill_state(&st);
	fx_tree_from_state(&t, &st);
	msgpack_object *o = fx_at(&t.root, "header.arch");
	o->via.str.ptr = evil;
	o->via.str.size = sizeof(evil) - 1;
	cr_assert_eq(fx_decode_tree(&t, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "header.arch: string contains a NUL byte");
	fx_tree_free(&t);
	snap_state_free(&st);
}

Test(snapfmt_schema, device_field_of_wrong_type)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct fx_tree t;

	fx_fill_state(&st);
	fx_tree_from_state(&t, &st);
	*fx_at(&t.root, "devices[1].state.status") = fx_str("x");
	cr_assert_eq(fx_decode_tree(&t, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "devices[1].state.status: expected unsigned integer or bin, got string");
	fx_tree_free(&t);
	snap_state_free(&st);
}

/* ---- versions ---- */
Test(snapfmt_version, newer_major_is_rejected_with_both_versions)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct fx_tree t;

	fx_fill_state(&st);
	fx_tree_from_state(&t, &st);
	fx_at(&t.root, "header.major")->via.u64 = 2;
	fx_at(&t.root, "header.minor")->via.u64 = 3;
	fx_map_del(&t.root, "vcpus"); /* a 2.x file may look different: version first */
	cr_assert_eq(fx_decode_tree(&t, &err), -ENOTSUP);
	cr_assert_str_eq(err.msg, "snapshot format 2.3 is newer than this ember (1.3)");
	fx_tree_free(&t);
	snap_state_free(&st);
}

Test(snapfmt_version, major_zero_is_rejected)
{
	struct snap_err err = { "" };
	struct snap_state st;

	fx_fill_state(&st);
	st.header.major = 0;
	cr_assert_eq(snap_state_validate(&st, &err), -ENOTSUP);
	cr_assert(strstr(err.msg, "not supported"), "%s", err.msg);
	snap_state_free(&st);
}

Test(snapfmt_version, other_arch_is_rejected)
{
	struct snap_err err = { "" };
	struct snap_state st;

	fx_fill_state(&st);
	snprintf(st.header.arch, sizeof(st.header.arch), "aarch64");
	cr_assert_eq(snap_state_validate(&st, &err), -ENOTSUP);
	cr_assert(strstr(err.msg, "header.arch: \"aarch64\""), "%s", err.msg);
	snap_state_free(&st);
}

Test(snapfmt_schema, device_field_name_with_a_control_byte)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct fx_tree t;

	fx_fill_state(&st);
	fx_tree_from_state(&t, &st);
	msgpack_object *state = fx_at(&t.root, "devices[1].state");
	state->via.map.ptr[0].key = fx_str("a\nb");
	cr_assert_eq(fx_decode_tree(&t, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "devices[1].state.a?b: name has byte 0x0a (allowed: A-Z a-z 0-9 _ - .)");
	fx_tree_free(&t);
	snap_state_free(&st);
}

Test(snapfmt_schema, duplicate_device_names_in_a_file)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct fx_tree t;

	fx_fill_state(&st);
	fx_tree_from_state(&t, &st);
	*fx_at(&t.root, "devices[1].name") = fx_str("serial");
	cr_assert_eq(fx_decode_tree(&t, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "devices[1].name: duplicate device name \"serial\"");
	fx_tree_free(&t);
	snap_state_free(&st);
}
