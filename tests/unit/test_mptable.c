/*
 * The MP table as a guest reads it: the tests find the floating pointer the way Linux
 * scans for it and parse every entry from raw bytes at the MP 1.4 offsets, without
 * using mptable.c's structures.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "arch/x86_64/x86.h"

#define RAM (2 * MiB)

static struct guest_mem mem;

static void mem_up(void)
{
	cr_assert_eq(mem_layout(&mem, RAM, NULL), 0);
	cr_assert_eq(mem_alloc_anon(&mem, NULL), 0);
	memset(mem.base, 0xcc, RAM);
}

static void mem_down(void)
{
	mem_free(&mem);
}

static const uint8_t *at(uint64_t gpa)
{
	const uint8_t *p = gpa_ptr(&mem, gpa, 1);

	cr_assert_not_null(p);
	return p;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return rd16(p) | (uint32_t)rd16(p + 2) << 16; }

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;

	while (n--)
		s = (uint8_t)(s + *p++);
	return s;
}

/* As Linux's smp_scan_config: 16-byte steps, signature, length 1, checksum, spec 1/4. */
static uint64_t scan_for_mpf(uint64_t base, uint64_t len)
{
	for (uint64_t a = base; a + 16 <= base + len; a += 16) {
		const uint8_t *p = at(a);

		if (!memcmp(p, "_MP_", 4) && p[8] == 1 && sum(p, 16) == 0 && (p[9] == 1 || p[9] == 4))
			return a;
	}
	return 0;
}

struct parsed {
	uint64_t cfg;          /* config table GPA */
	uint16_t length, count;
	unsigned cpus, buses, ioapics, ioints, lints;
	uint8_t apic_ids[256], cpu_flags[256], cpu_ver[256];
	uint8_t isa_bus_id;
	uint8_t ioapic_id, ioapic_ver, ioapic_flags;
	uint32_t ioapic_addr;
	int irq_pin[256];      /* ISA IRQ -> IOAPIC pin, -1 when absent */
	uint8_t irq_dstapic[256];
	uint8_t lint_type[2], lint_dst[2];
	bool types_in_order;
};

static void parse(struct parsed *t)
{
	uint64_t mpf = scan_for_mpf(EBDA_START, 1024);
	const uint8_t *h, *e, *end;
	int last_type = -1;

	memset(t, 0, sizeof(*t));
	memset(t->irq_pin, -1, sizeof(t->irq_pin));
	t->types_in_order = true;
	cr_assert_eq(mpf, EBDA_START, "floating pointer not found where Linux scans");
	cr_assert_eq(at(mpf)[11], 0, "feature1: a config table follows, no default config");
	t->cfg = rd32(at(mpf) + 4);
	h = gpa_ptr(&mem, t->cfg, 44);
	cr_assert_not_null(h, "config table at 0x%llx outside RAM", (unsigned long long)t->cfg);
	cr_assert_eq(memcmp(h, "PCMP", 4), 0);
	t->length = rd16(h + 4);
	cr_assert_eq(h[6], 4, "spec revision 1.4");
	cr_assert_not_null(gpa_ptr(&mem, t->cfg, t->length));
	cr_assert_eq(sum(h, t->length), 0, "config table checksum");
	cr_assert_eq(rd32(h + 36), 0xfee00000, "local APIC address");
	cr_assert_eq(rd16(h + 40), 0, "no extended table");
	t->count = rd16(h + 34);

	e = h + 44;
	end = h + t->length;
	for (unsigned n = 0; n < t->count; n++) {
		cr_assert(e < end, "entry %u past the table length", n);
		if (e[0] < last_type)
			t->types_in_order = false;
		last_type = e[0];
		switch (e[0]) {
		case 0:
			t->apic_ids[t->cpus] = e[1];
			t->cpu_ver[t->cpus] = e[2];
			t->cpu_flags[t->cpus] = e[3];
			t->cpus++;
			e += 20;
			break;
		case 1:
			cr_assert_eq(memcmp(e + 2, "ISA   ", 6), 0);
			t->isa_bus_id = e[1];
			t->buses++;
			e += 8;
			break;
		case 2:
			t->ioapic_id = e[1];
			t->ioapic_ver = e[2];
			t->ioapic_flags = e[3];
			t->ioapic_addr = rd32(e + 4);
			t->ioapics++;
			e += 8;
			break;
		case 3:
			cr_assert_eq(e[1], 0, "I/O interrupt type INT");
			cr_assert_eq(e[4], t->isa_bus_id, "source bus is the ISA bus");
			cr_assert_eq(t->irq_pin[e[5]], -1, "IRQ %u routed twice", e[5]);
			t->irq_pin[e[5]] = e[7];
			t->irq_dstapic[e[5]] = e[6];
			t->ioints++;
			e += 8;
			break;
		case 4:
			cr_assert_lt(e[7], 2, "LINT pin");
			t->lint_type[e[7]] = e[1];
			t->lint_dst[e[7]] = e[6];
			t->lints++;
			e += 8;
			break;
		default:
			cr_assert_fail("unknown entry type %u", e[0]);
		}
	}
	cr_assert_eq(e, end, "table length matches the entries");
}

static void write_ok(unsigned nr)
{
	struct errbuf eb = { "" };

	cr_assert_eq(mptable_write(&mem, nr, &eb), 0, "%u vCPUs: %s", nr, eb.msg);
}

TestSuite(mptable, .init = mem_up, .fini = mem_down);

Test(mptable, floating_pointer_points_at_a_valid_config_table)
{
	struct parsed t;

	write_ok(1);
	parse(&t);
	cr_assert_eq(t.cfg, EBDA_START + 16, "config table follows the pointer");
	cr_assert_eq(at(EBDA_START)[12], 0, "feature2: no IMCR, virtual wire mode");
}

Test(mptable, one_enabled_processor_per_vcpu_and_only_the_first_is_bsp)
{
	struct parsed t;

	write_ok(4);
	parse(&t);
	cr_assert_eq(t.cpus, 4);
	for (unsigned i = 0; i < 4; i++) {
		cr_assert_eq(t.apic_ids[i], i);
		cr_assert_eq(t.cpu_ver[i], 0x14);
		cr_assert_eq(t.cpu_flags[i], i == 0 ? 3 : 1, "cpu %u flags", i);
	}
}

Test(mptable, one_isa_bus_and_one_ioapic_with_an_unused_id)
{
	struct parsed t;

	write_ok(3);
	parse(&t);
	cr_assert_eq(t.buses, 1);
	cr_assert_eq(t.ioapics, 1);
	cr_assert_eq(t.ioapic_id, 3);
	cr_assert_eq(t.ioapic_ver, 0x11);
	cr_assert_eq(t.ioapic_flags & 1, 1, "enabled");
	cr_assert_eq(t.ioapic_addr, 0xfec00000);
}

Test(mptable, isa_irqs_map_to_the_ioapic_pins_kvm_routes_them_to)
{
	struct parsed t;

	write_ok(2);
	parse(&t);
	/* KVM's default routing: GSI n -> IOAPIC pin n; the PIT is GSI 0. */
	cr_assert_eq(t.irq_pin[0], 0, "timer");
	cr_assert_eq(t.irq_pin[2], -1, "cascade has no entry");
	for (unsigned irq = 0; irq < 24; irq++) {
		if (irq == 2)
			continue;
		cr_assert_eq(t.irq_pin[irq], (int)irq, "IRQ %u", irq);
		cr_assert_eq(t.irq_dstapic[irq], t.ioapic_id, "IRQ %u goes to the IOAPIC", irq);
	}
	cr_assert_eq(t.ioints, 23);
}

Test(mptable, lint0_is_extint_and_lint1_is_nmi_on_all_cpus)
{
	struct parsed t;

	write_ok(2);
	parse(&t);
	cr_assert_eq(t.lints, 2);
	cr_assert_eq(t.lint_type[0], 3, "ExtINT");
	cr_assert_eq(t.lint_type[1], 1, "NMI");
	cr_assert_eq(t.lint_dst[0], 0xff);
	cr_assert_eq(t.lint_dst[1], 0xff);
}

Test(mptable, entry_count_and_type_order)
{
	struct parsed t;

	write_ok(5);
	parse(&t);
	cr_assert_eq(t.count, 5 + 1 + 1 + 23 + 2);
	cr_assert(t.types_in_order, "entries sorted by type as MP 1.4 lists them");
}

Test(mptable, max_vcpus_fit_inside_the_reserved_window)
{
	struct parsed t;

	write_ok(VM_MAX_VCPUS);
	parse(&t);
	cr_assert_eq(t.cpus, VM_MAX_VCPUS);
	cr_assert_eq(t.apic_ids[VM_MAX_VCPUS - 1], VM_MAX_VCPUS - 1);
	cr_assert_eq(t.ioapic_id, VM_MAX_VCPUS);
	cr_assert_leq(t.cfg + t.length, HIGH_MEM_START);
}

Test(mptable, first_ebda_kib_holds_the_table_for_up_to_37_vcpus)
{
	struct parsed t;

	write_ok(37);
	parse(&t);
	cr_assert_leq(t.cfg + t.length, 0xa0000);
	write_ok(38);
	parse(&t);
	cr_assert_gt(t.cfg + t.length, 0xa0000);
}

Test(mptable, writes_nothing_outside_the_table)
{
	struct parsed t;
	uint64_t end;

	write_ok(8);
	parse(&t);
	end = t.cfg + t.length;
	cr_assert_eq(at(EBDA_START - 1)[0], 0xcc);
	cr_assert_eq(at(end)[0], 0xcc, "byte after the table");
	for (uint64_t a = 0; a < EBDA_START; a += PAGE_SIZE)
		cr_assert_eq(at(a)[0], 0xcc, "0x%llx", (unsigned long long)a);
}

Test(mptable, rejects_zero_and_too_many_vcpus)
{
	struct errbuf eb;

	cr_assert_eq(mptable_write(&mem, 0, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "0 vCPUs"), "%s", eb.msg);
	cr_assert_eq(mptable_write(&mem, 255, &eb), -E2BIG);
	cr_assert(strstr(eb.msg, "255 vCPUs"), "%s", eb.msg);
	cr_assert_eq(at(EBDA_START)[0], 0xcc, "nothing written on error");
}

Test(mptable, rejects_guest_ram_that_ends_below_the_ebda)
{
	struct guest_mem small;
	struct errbuf eb;

	cr_assert_eq(mem_layout(&small, 0x9f000, NULL), 0);
	cr_assert_eq(mem_alloc_anon(&small, NULL), 0);
	cr_assert_lt(mptable_write(&small, 1, &eb), 0);
	cr_assert(strstr(eb.msg, "0x9fc00"), "%s", eb.msg);
	mem_free(&small);
}
