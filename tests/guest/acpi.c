/*
 * acpi: reads ember's ACPI tables as an OS would and watches the VMGenID.
 *
 * Finds the RSDP by scanning 0xe0000-0xfffff, checks its two checksums, walks the XSDT
 * checking every table's checksum, follows the FADT's X_DSDT, counts the MADT's local
 * APICs, and takes from the DSDT the VMGenID address (the VGEN device's ADDR package)
 * and the GED's interrupt (the Extended Interrupt descriptor after "ACPI0013"). Prints
 *   acpi: rsdp=0x<gpa> tables=<n checked> lapics=<n> vmgenid=0x<gpa> ged_gsi=<n>
 * then routes that GSI in the IOAPIC to the timer vector, whose ring-0 handler counts
 * (vectors.S), and prints the 16-byte ID and the count before and after the ready point:
 *   vmgenid: when=boot|ready id_lo=0x.. id_hi=0x.. notified=<interrupts> generation=<hex>
 * A restored clone (or a reset one) resumes after the ready point: a new ID and one
 * more interrupt. Then, for each host command "id", the same line with when=cmd, until
 * "exit" or no more commands.
 */
#include "guest.h"
#include "layout.h"

#define BIOS_START 0xe0000ul
#define BIOS_END   0x100000ul
#define IOAPIC_BASE 0xfec00000ul
#define IOAPIC_REDTBL(pin) (0x10 + 2 * (pin))

static uint8_t sum8(const uint8_t *p, uint64_t n)
{
	uint8_t s = 0;

	while (n--)
		s = (uint8_t)(s + *p++);
	return s;
}

static uint32_t rd32(const uint8_t *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
	return rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static const uint8_t *table(uint64_t gpa, const char *sig)
{
	const uint8_t *t = (const uint8_t *)gpa;
	uint32_t len;

	GUEST_ASSERT_MSG(gpa && gpa < 0x100000000ul, "%s at 0x%lx", sig, gpa);
	GUEST_ASSERT_MSG(!memcmp(t, sig, 4), "table at 0x%lx is not %s", gpa, sig);
	len = rd32(t + 4);
	GUEST_ASSERT_MSG(len >= 36 && len < 0x10000, "%s length %u", sig, len);
	GUEST_ASSERT_MSG(sum8(t, len) == 0, "%s checksum", sig);
	return t;
}

static uint64_t find_rsdp(void)
{
	for (uint64_t a = BIOS_START; a < BIOS_END; a += 16) {
		const uint8_t *p = (const uint8_t *)a;

		if (!memcmp(p, "RSD PTR ", 8) && sum8(p, 20) == 0) {
			GUEST_ASSERT_MSG(p[15] >= 2, "RSDP revision %u: no XSDT", p[15]);
			GUEST_ASSERT_MSG(sum8(p, rd32(p + 20)) == 0, "RSDP extended checksum");
			return a;
		}
	}
	GUEST_ASSERT_MSG(false, "no RSDP in 0x%lx-0x%lx", BIOS_START, BIOS_END);
	return 0;
}

static const uint8_t *find(const uint8_t *p, uint32_t len, const void *needle, uint32_t n)
{
	for (uint32_t i = 0; i + n <= len; i++)
		if (!memcmp(p + i, needle, n))
			return p + i;
	return 0;
}

/* An AML integer (ZeroOp, OneOp, Byte/Word/DWord/QWordPrefix); advances *p. */
static uint64_t aml_int(const uint8_t **p)
{
	const uint8_t *q = *p;
	unsigned n;
	uint64_t v = 0;

	switch (*q) {
	case 0x00: *p = q + 1; return 0;
	case 0x01: *p = q + 1; return 1;
	case 0x0a: n = 1; break;
	case 0x0b: n = 2; break;
	case 0x0c: n = 4; break;
	case 0x0e: n = 8; break;
	default:
		GUEST_ASSERT_MSG(false, "AML: 0x%x is not an integer", *q);
		return 0;
	}
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)q[1 + i] << (8 * i);
	*p = q + 1 + n;
	return v;
}

struct acpi_seen {
	uint64_t rsdp, vmgenid;
	unsigned tables, lapics, ged_gsi;
};

static void parse_dsdt(const uint8_t *d, struct acpi_seen *s)
{
	uint32_t len = rd32(d + 4);
	const uint8_t *p = find(d, len, "ADDR", 4), *e;
	uint64_t lo, hi;

	/* Name(ADDR, Package(2) {lo, hi}): NameOp 'ADDR' PackageOp PkgLength(1) 2 ... */
	GUEST_ASSERT_MSG(p && p[-1] == 0x08 && p[4] == 0x12 && p[6] == 2,
			 "DSDT: no ADDR package of two elements");
	p += 7;
	lo = aml_int(&p);
	hi = aml_int(&p);
	s->vmgenid = lo | hi << 32;
	p = find(d, len, "ACPI0013", 9);
	GUEST_ASSERT_MSG(p, "DSDT: no GED (ACPI0013)");
	e = find(p, (uint32_t)(d + len - p), "\x89\x06\x00", 3);
	GUEST_ASSERT_MSG(e && e[4] == 1, "DSDT: the GED has no single extended interrupt");
	s->ged_gsi = rd32(e + 5);
}

static void read_tables(struct acpi_seen *s)
{
	const uint8_t *x, *fadt = 0, *madt = 0;
	uint32_t xlen;

	s->rsdp = find_rsdp();
	x = table(rd64((const uint8_t *)s->rsdp + 24), "XSDT");
	s->tables = 1;
	xlen = rd32(x + 4);
	for (uint32_t off = 36; off + 8 <= xlen; off += 8) {
		const uint8_t *t = (const uint8_t *)rd64(x + off);

		table((uint64_t)t, !memcmp(t, "FACP", 4) ? "FACP" : !memcmp(t, "APIC", 4) ? "APIC"
										       : "????");
		s->tables++;
		if (!memcmp(t, "FACP", 4))
			fadt = t;
		else if (!memcmp(t, "APIC", 4))
			madt = t;
	}
	GUEST_ASSERT_MSG(fadt && madt, "XSDT lacks the FADT or the MADT");
	GUEST_ASSERT_MSG(rd32(fadt + 112) & (1u << 20), "FADT is not hardware-reduced");
	parse_dsdt(table(rd64(fadt + 140), "DSDT"), s);
	s->tables++;
	for (uint32_t off = 44, len = rd32(madt + 4); off + 2 <= len; off += madt[off + 1]) {
		GUEST_ASSERT_MSG(madt[off + 1] >= 2, "MADT entry of length %u", madt[off + 1]);
		if (madt[off] == 0 && (rd32(madt + off + 4) & 1))
			s->lapics++;
	}
}

static void ioapic_write(uint32_t reg, uint32_t v)
{
	*(volatile uint32_t *)IOAPIC_BASE = reg;
	*(volatile uint32_t *)(IOAPIC_BASE + 0x10) = v;
}

/* GSI -> TIMER_VECTOR on APIC 0: fixed, physical, edge, active high, unmasked. */
static void route_ged(unsigned gsi)
{
	ioapic_write(IOAPIC_REDTBL(gsi) + 1, (uint32_t)guest_apic_id() << 24);
	ioapic_write(IOAPIC_REDTBL(gsi), TIMER_VECTOR);
}

static void print_id(const char *when, uint64_t addr)
{
	const volatile uint64_t *id = (const volatile uint64_t *)addr;

	guest_print("vmgenid: when=%s id_lo=0x%lx id_hi=0x%lx notified=%lu generation=%lx\n",
		    when, id[0], id[1], timer_ticks(), guest_generation());
}

void guest_main(void)
{
	struct acpi_seen s = { 0 };
	char cmd[64];

	read_tables(&s);
	guest_print("acpi: rsdp=0x%lx tables=%u lapics=%u vmgenid=0x%lx ged_gsi=%u\n", s.rsdp,
		    s.tables, s.lapics, s.vmgenid, s.ged_gsi);
	GUEST_ASSERT_MSG(s.ged_gsi < 24, "GED GSI %u is not an IOAPIC pin", s.ged_gsi);
	route_ged(s.ged_gsi);
	irq_enable();
	print_id("boot", s.vmgenid);
	guest_ready();
	print_id("ready", s.vmgenid);
	while (guest_wait_cmd(cmd, sizeof(cmd)) >= 0) {
		if (!strcmp(cmd, "exit"))
			break;
		if (!strcmp(cmd, "id"))
			print_id("cmd", s.vmgenid);
	}
	guest_done();
}
