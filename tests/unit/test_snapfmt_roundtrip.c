/* Encode -> decode round trips, the dump text, and the minor-version evolution rule. */
#include "test_snapfmt_fixture.h"

static void roundtrip(const struct snap_state *in, struct snap_state *out)
{
	struct snap_err err = { "" };
	size_t len;
	uint8_t *f = fx_encode(in, &len);

	cr_assert_eq(snap_state_decode(f, len, out, &err), 0, "decode: %s", err.msg);
	free(f);
}

#define SAME(field) cr_assert_eq(memcmp(&a->field, &b->field, sizeof(a->field)), 0, #field " differs")

static void assert_vcpu_equal(const struct snap_vcpu *a, const struct snap_vcpu *b)
{
	cr_assert_eq(a->id, b->id);
	SAME(regs);
	SAME(sregs.cs); SAME(sregs.ds); SAME(sregs.es); SAME(sregs.fs); SAME(sregs.gs);
	SAME(sregs.ss); SAME(sregs.tr); SAME(sregs.ldt); SAME(sregs.gdt); SAME(sregs.idt);
	SAME(sregs);
	cr_assert_eq(a->xsave_len, b->xsave_len);
	cr_assert_eq(memcmp(a->xsave, b->xsave, a->xsave_len), 0, "xsave differs");
	cr_assert_eq(a->nr_xcrs, b->nr_xcrs);
	SAME(xcrs);
	SAME(lapic);
	cr_assert_eq(a->nr_msrs, b->nr_msrs);
	cr_assert_eq(memcmp(a->msrs, b->msrs, a->nr_msrs * sizeof(*a->msrs)), 0, "msrs differ");
	SAME(events.exception); SAME(events.interrupt); SAME(events.nmi); SAME(events.smi);
	SAME(events);
	cr_assert_eq(a->mp_state, b->mp_state);
	SAME(debugregs);
	cr_assert_eq(a->nr_cpuid, b->nr_cpuid);
	cr_assert_eq(memcmp(a->cpuid, b->cpuid, a->nr_cpuid * sizeof(*a->cpuid)), 0, "cpuid differs");
	cr_assert_eq(a->tsc, b->tsc);
}

static void assert_state_equal(const struct snap_state *a, const struct snap_state *b)
{
	SAME(header.cpu);
	SAME(header);
	SAME(vm.regions); cr_assert_eq(a->vm.nr_regions, b->vm.nr_regions);
	SAME(vm.clock); SAME(vm.pic_master); SAME(vm.pic_slave); SAME(vm.ioapic);
	SAME(vm.pit.channels[0]); SAME(vm.pit.channels[1]); SAME(vm.pit.channels[2]); SAME(vm.pit);
	SAME(vm);
	cr_assert_eq(a->nr_vcpus, b->nr_vcpus);
	for (uint32_t i = 0; i < a->nr_vcpus; i++)
		assert_vcpu_equal(&a->vcpus[i], &b->vcpus[i]);
	cr_assert_eq(a->nr_devices, b->nr_devices);
	for (uint32_t i = 0; i < a->nr_devices; i++) {
		const struct snap_device *x = &a->devices[i], *y = &b->devices[i];
		cr_assert_str_eq(x->name, y->name);
		cr_assert_eq(x->version, y->version);
		cr_assert_eq(x->nr_fields, y->nr_fields);
		for (uint32_t j = 0; j < x->nr_fields; j++) {
			cr_assert_str_eq(x->fields[j].name, y->fields[j].name);
			cr_assert_eq(x->fields[j].type, y->fields[j].type);
			cr_assert_eq(x->fields[j].u64, y->fields[j].u64);
			cr_assert_eq(x->fields[j].len, y->fields[j].len);
			if (x->fields[j].len)
				cr_assert_eq(memcmp(x->fields[j].bin, y->fields[j].bin, x->fields[j].len), 0);
		}
	}
	cr_assert_str_eq(a->memory.file, b->memory.file);
	cr_assert_eq(a->memory.size, b->memory.size);
	cr_assert_eq(a->memory.page_size, b->memory.page_size);
	cr_assert_eq(a->memory.encoding, b->memory.encoding);
	cr_assert_eq(a->memory.kind, b->memory.kind);
	cr_assert_eq(a->memory.nr_ranges, b->memory.nr_ranges);
	if (a->memory.nr_ranges)
		cr_assert_eq(memcmp(a->memory.ranges, b->memory.ranges,
				    a->memory.nr_ranges * sizeof(*a->memory.ranges)), 0);
}

static char *dump_to_string(const struct snap_state *st)
{
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);

	cr_assert(f);
	cr_assert_eq(snap_dump(f, st), 0);
	fclose(f);
	return text;
}

Test(snapfmt_roundtrip, fully_populated_state_survives_field_by_field)
{
	struct snap_state in, out;

	fx_fill_state(&in);
	roundtrip(&in, &out);
	assert_state_equal(&in, &out);
	cr_assert_eq(out.vcpus[1].sregs.cs.limit, in.vcpus[1].sregs.cs.limit);
	cr_assert_eq(out.vm.pit.channels[1].count_load_time, -123456789012345ll);
	snap_state_free(&in);
	snap_state_free(&out);
}

Test(snapfmt_roundtrip, extreme_integer_values_survive)
{
	struct snap_state in, out;

	fx_fill_state(&in);
	in.vcpus[0].regs.rip = UINT64_MAX;
	in.vcpus[0].regs.rax = 0;
	in.vcpus[0].sregs.cs.type = UINT8_MAX;
	in.vcpus[0].sregs.gdt.limit = UINT16_MAX;
	in.vm.tsc_khz = UINT32_MAX;
	in.vm.pit.channels[0].count_load_time = INT64_MIN;
	in.vm.pit.channels[2].count_load_time = INT64_MAX;
	roundtrip(&in, &out);
	assert_state_equal(&in, &out);
	snap_state_free(&in);
	snap_state_free(&out);
}

Test(snapfmt_roundtrip, diff_state_with_ranges_survives)
{
	struct snap_state in, out;
	struct snap_range r[] = { { 0, 2 }, { 5, 1 }, { 63, 1 } };

	fx_fill_state(&in);
	in.memory.kind = SNAP_MEM_DIFF;
	snprintf(in.header.parent, sizeof(in.header.parent), "fedcba9876543210fedcba9876543210");
	cr_assert_eq(snap_memory_set_ranges(&in, r, 3, NULL), 0);
	roundtrip(&in, &out);
	assert_state_equal(&in, &out);
	cr_assert_str_eq(out.header.parent, in.header.parent);
	snap_state_free(&in);
	snap_state_free(&out);
}

Test(snapfmt_roundtrip, encoding_is_deterministic)
{
	struct snap_state st;
	size_t l1, l2;
	uint8_t *a, *b;

	fx_fill_state(&st);
	a = fx_encode(&st, &l1);
	b = fx_encode(&st, &l2);
	cr_assert_eq(l1, l2);
	cr_assert_eq(memcmp(a, b, l1), 0);
	free(a);
	free(b);
	snap_state_free(&st);
}

Test(snapfmt_dump, is_identical_before_and_after_a_round_trip)
{
	struct snap_state in, out;
	char *t1, *t2;

	fx_fill_state(&in);
	roundtrip(&in, &out);
	t1 = dump_to_string(&in);
	t2 = dump_to_string(&out);
	cr_assert_str_eq(t1, t2);
	free(t1);
	free(t2);
	snap_state_free(&in);
	snap_state_free(&out);
}

Test(snapfmt_dump, prints_paths_values_hex_bins_and_zero_runs)
{
	struct snap_state st;
	char *t;

	fx_fill_state(&st);
	st.vcpus[0].regs.rip = 0x200040;
	st.vcpus[1].sregs.cs.present = 1;
	t = dump_to_string(&st);
	cr_assert(strstr(t, "\nvcpus[0].regs.rip = 0x200040\n"), "%s", t);
	cr_assert(strstr(t, "\nvcpus[1].sregs.cs.present = 1\n"));
	cr_assert(strstr(t, "header.major = 1\n"));
	cr_assert(strstr(t, "\nheader.id = \"0123456789abcdef0123456789abcdef\"\n"));
	cr_assert(strstr(t, "\nmemory.kind = \"full\"\n"));
	cr_assert(strstr(t, "\nvm.pit.channels[1].count_load_time = -123456789012345\n"));
	cr_assert(strstr(t, "\nvcpus[0].xsave = <4608 bytes>\n"));
	cr_assert(strstr(t, "\nvcpus[0].xsave[0x0400..0x0c00] = zero\n"));
	cr_assert(strstr(t, "\nvcpus[0].lapic[0x0000] = 05121f2c"));
	cr_assert(strstr(t, "\ndevices[0].name = \"serial\"\n"));
	cr_assert(strstr(t, "\ndevices[0].state.ier = 0xf\n"));
	cr_assert(strstr(t, "\ndevices[0].state.rx_fifo[0x0000] = a0a1a2"));
	cr_assert(strstr(t, "\ndevices[0].state.empty = <0 bytes>\n"));
	/* one "path = value" per line */
	for (char *line = t; *line; line = strchr(line, '\n') + 1)
		cr_assert(strstr(line, " = ") && strstr(line, " = ") < strchr(line, '\n'), "bad line: %.60s", line);
	free(t);
	snap_state_free(&st);
}

Test(snapfmt_evolution, newer_minor_with_unknown_keys_is_accepted)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct fx_tree t;

	fx_fill_state(&st);
	fx_tree_from_state(&t, &st);
	fx_at(&t.root, "header.minor")->via.u64 = 7;
	fx_map_add(&t, &t.root, "working_set", fx_str("ws.bin"));
	fx_map_add(&t, fx_at(&t.root, "vcpus[0]"), "future_field", fx_uint(42));
	fx_map_add(&t, fx_at(&t.root, "vm.pit.channels[2]"), "extra", fx_str("x"));
	fx_map_add(&t, fx_at(&t.root, "devices[0]"), "flags", fx_uint(1));
	cr_assert_eq(fx_decode_tree(&t, &err), 0, "%s", err.msg);
	fx_tree_free(&t);
	snap_state_free(&st);
}

Test(snapfmt_evolution, missing_optional_keys_default_to_empty)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct fx_tree t;

	fx_fill_state(&st);
	fx_tree_from_state(&t, &st);
	fx_map_del(fx_at(&t.root, "header"), "parent");
	fx_map_del(fx_at(&t.root, "memory"), "ranges");
	cr_assert_eq(fx_decode_tree(&t, &err), 0, "%s", err.msg);
	fx_tree_free(&t);
	snap_state_free(&st);
}

Test(snapfmt_evolution, missing_required_key_is_named)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct fx_tree t;

	fx_fill_state(&st);
	fx_tree_from_state(&t, &st);
	fx_map_del(fx_at(&t.root, "vcpus[1].sregs.ldt"), "avl");
	cr_assert_eq(fx_decode_tree(&t, &err), -EINVAL);
	cr_assert_str_eq(err.msg, "vcpus[1].sregs.ldt.avl: missing");
	fx_tree_free(&t);
	snap_state_free(&st);
}
