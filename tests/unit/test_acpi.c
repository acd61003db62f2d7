/*
 * The ACPI tables as a guest reads them: the tests find the RSDP the way Linux scans
 * the BIOS area, follow the XSDT and read each table from raw bytes at the ACPI 6.3
 * offsets (not acpi.c's structures). ACPICA's own disassembler (iasl -d, Debian's
 * acpica-tools) must take every table without an error, and the DSDT it writes back
 * must compile again: that checks the AML as the reference implementation reads it.
 */
#include <criterion/criterion.h>
#include <asm/bootparam.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arch/x86_64/x86.h"

#define RAM (2 * MiB)

static struct guest_mem mem;

static void mem_up(void)
{
	cr_assert_eq(mem_layout(&mem, RAM, NULL), 0);
	cr_assert_eq(mem_alloc_anon(&mem, NULL), 0);
	memset(mem.base, 0, RAM);
}

static void mem_down(void)
{
	mem_free(&mem);
}

static const uint8_t *at(uint64_t gpa, uint64_t len)
{
	const uint8_t *p = gpa_ptr(&mem, gpa, len);

	cr_assert_not_null(p, "0x%llx+%llu outside RAM", (unsigned long long)gpa,
			   (unsigned long long)len);
	return p;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return rd16(p) | (uint32_t)rd16(p + 2) << 16; }
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;

	while (n--)
		s = (uint8_t)(s + *p++);
	return s;
}

/* ember's devices: COM1, virtio-rng and virtio-vsock (README "Devices") */
static struct acpi_layout layout(unsigned nr_vcpus)
{
	struct acpi_layout l = { .nr_vcpus = nr_vcpus, .serial_port = 0x3f8, .serial_gsi = 4,
				 .nr_virtio = 2, .vmgenid_addr = ACPI_VMGENID_ADDR,
				 .ged_gsi = ACPI_GED_GSI };

	l.virtio[0].base = 0xd0000000;
	l.virtio[0].size = 0x1000;
	l.virtio[0].gsi = 5;
	l.virtio[1].base = 0xd0001000;
	l.virtio[1].size = 0x1000;
	l.virtio[1].gsi = 6;
	return l;
}

static void write_tables(unsigned nr_vcpus)
{
	struct acpi_layout l = layout(nr_vcpus);
	struct errbuf eb = { "" };

	cr_assert_eq(acpi_write(&mem, &l, &eb), 0, "%s", eb.msg);
}

/* As Linux's acpi_find_root_pointer: 16-byte steps over 0xe0000-0xfffff */
static uint64_t scan_rsdp(void)
{
	for (uint64_t a = 0xe0000; a < 0x100000; a += 16)
		if (!memcmp(at(a, 8), "RSD PTR ", 8) && sum(at(a, 20), 20) == 0)
			return a;
	return 0;
}

/* A table's header checked (signature, length, checksum); returns its length. */
static uint32_t check_table(uint64_t gpa, const char *sig)
{
	const uint8_t *h = at(gpa, 36);
	uint32_t len = rd32(h + 4);

	cr_assert(!memcmp(h, sig, 4), "table at 0x%llx is %.4s, expected %s",
		  (unsigned long long)gpa, (const char *)h, sig);
	cr_assert_geq(len, 36, "%s length %u", sig, len);
	cr_assert_eq(sum(at(gpa, len), len), 0, "%s checksum", sig);
	return len;
}

/* The XSDT entry whose table has signature sig, or 0. */
static uint64_t xsdt_find(const char *sig)
{
	const uint8_t *r = at(scan_rsdp(), 36);
	uint64_t xsdt = rd64(r + 24);
	uint32_t len = check_table(xsdt, "XSDT");

	for (uint32_t off = 36; off + 8 <= len; off += 8) {
		uint64_t t = rd64(at(xsdt + off, 8));

		if (!memcmp(at(t, 4), sig, 4))
			return t;
	}
	return 0;
}

static uint64_t dsdt_addr(void)
{
	uint64_t fadt = xsdt_find("FACP");

	cr_assert_neq(fadt, 0);
	return rd64(at(fadt + 140, 8));
}

static bool contains(const uint8_t *p, size_t n, const void *needle, size_t k)
{
	for (size_t i = 0; i + k <= n; i++)
		if (!memcmp(p + i, needle, k))
			return true;
	return false;
}

static unsigned count(const uint8_t *p, size_t n, const void *needle, size_t k)
{
	unsigned c = 0;

	for (size_t i = 0; i + k <= n; i++)
		if (!memcmp(p + i, needle, k))
			c++;
	return c;
}

TestSuite(acpi, .init = mem_up, .fini = mem_down);

Test(acpi, rsdp_is_in_the_bios_area_with_both_checksums_and_in_boot_params)
{
	uint64_t a;
	const uint8_t *r;

	write_tables(1);
	a = scan_rsdp();
	cr_assert_eq(a, ACPI_RSDP_ADDR);
	r = at(a, 36);
	cr_assert_eq(r[15], 2, "RSDP revision %u", r[15]);
	cr_assert_eq(rd32(r + 20), 36, "RSDP length");
	cr_assert_eq(sum(r, 36), 0, "extended checksum");
	cr_assert_eq(rd64(at(BOOT_PARAMS_ADDR + offsetof(struct boot_params, acpi_rsdp_addr), 8)),
		     a);
}

Test(acpi, xsdt_points_at_the_fadt_and_the_madt_with_valid_checksums)
{
	uint64_t xsdt;

	write_tables(2);
	xsdt = rd64(at(scan_rsdp() + 24, 8));
	cr_assert_eq(check_table(xsdt, "XSDT"), 36 + 2 * 8);
	cr_assert_eq(check_table(rd64(at(xsdt + 36, 8)), "FACP"), 276);
	check_table(rd64(at(xsdt + 44, 8)), "APIC");
}

Test(acpi, fadt_is_hardware_reduced_and_points_at_the_dsdt)
{
	uint64_t fadt, dsdt;
	const uint8_t *f;

	write_tables(1);
	fadt = xsdt_find("FACP");
	f = at(fadt, 276);
	cr_assert_eq(f[8], 6, "FADT revision");
	cr_assert(rd32(f + 112) & (1u << 20), "HW_REDUCED_ACPI flag");
	dsdt = rd64(f + 140);
	cr_assert_eq(rd32(f + 40), (uint32_t)dsdt, "32-bit DSDT pointer agrees with X_DSDT");
	check_table(dsdt, "DSDT");
	/* the reset register: 0xfe to the i8042 command port */
	cr_assert_eq(f[116], 1, "reset register in system I/O space");
	cr_assert_eq(rd64(f + 120), 0x64);
	cr_assert_eq(f[128], 0xfe);
}

static void check_madt(unsigned nr)
{
	uint64_t madt;
	uint32_t len;
	unsigned lapics = 0, ioapics = 0, isos = 0;
	const uint8_t *m;

	write_tables(nr);
	madt = xsdt_find("APIC");
	cr_assert_neq(madt, 0);
	len = check_table(madt, "APIC");
	m = at(madt, len);
	cr_assert_eq(rd32(m + 36), 0xfee00000u, "local APIC address");
	for (uint32_t off = 44; off < len; off += m[off + 1]) {
		cr_assert_geq(m[off + 1], 2, "MADT entry at %u has length %u", off, m[off + 1]);
		cr_assert_leq(off + m[off + 1], len, "MADT entry at %u overruns", off);
		switch (m[off]) {
		case 0:
			cr_assert_eq(m[off + 2], lapics, "processor uid");
			cr_assert_eq(m[off + 3], lapics, "APIC id of vCPU %u", lapics);
			cr_assert_eq(rd32(m + off + 4) & 1, 1, "vCPU %u enabled", lapics);
			lapics++;
			break;
		case 1:
			cr_assert_eq(m[off + 2], nr, "IOAPIC id follows the vCPUs' APIC ids");
			cr_assert_eq(rd32(m + off + 4), 0xfec00000u);
			cr_assert_eq(rd32(m + off + 8), 0, "GSI base");
			ioapics++;
			break;
		case 2:
			/* KVM's routing: ISA IRQ 0 is GSI 0, as in the MP table */
			cr_assert_eq(m[off + 3], 0);
			cr_assert_eq(rd32(m + off + 4), 0);
			isos++;
			break;
		}
	}
	cr_assert_eq(lapics, nr, "%u local APICs for %u vCPUs", lapics, nr);
	cr_assert_eq(ioapics, 1);
	cr_assert_eq(isos, 1);
}

Test(acpi, madt_lists_one_local_apic_for_one_vcpu) { check_madt(1); }
Test(acpi, madt_lists_one_local_apic_per_vcpu_for_eight) { check_madt(8); }
Test(acpi, madt_lists_one_local_apic_per_vcpu_for_the_maximum) { check_madt(VM_MAX_VCPUS); }

Test(acpi, dsdt_describes_the_serial_port_virtio_devices_vmgenid_and_ged)
{
	uint64_t d;
	uint32_t len;
	const uint8_t *p;
	/* Name(ADDR, Package(2) { DWord low, DWord high }) */
	uint8_t addr_pkg[] = { 0x08, 'A', 'D', 'D', 'R', 0x12, 0x0c, 0x02,
			       0x0c, (uint8_t)ACPI_VMGENID_ADDR, (uint8_t)(ACPI_VMGENID_ADDR >> 8),
			       (uint8_t)(ACPI_VMGENID_ADDR >> 16), 0, 0x0c, 0, 0, 0, 0 };
	/* EISAID("PNP0501") as a DWordConst */
	uint8_t pnp0501[] = { 0x0c, 0x41, 0xd0, 0x05, 0x01 };
	/* Extended Interrupt descriptor: consumer, edge, active high, GSI 23 */
	uint8_t ged_irq[] = { 0x89, 6, 0, 3, 1, ACPI_GED_GSI, 0, 0, 0 };
	/* Memory32Fixed of virtio-rng */
	uint8_t rng_mem[] = { 0x86, 9, 0, 1, 0, 0, 0, 0xd0, 0, 0x10, 0, 0 };

	write_tables(1);
	d = dsdt_addr();
	len = check_table(d, "DSDT");
	p = at(d, len);
	cr_assert(contains(p, len, "COM1", 4));
	cr_assert(contains(p, len, pnp0501, sizeof(pnp0501)));
	cr_assert_eq(count(p, len, "LNRO0005", 9), 2, "two virtio-mmio devices");
	cr_assert(contains(p, len, rng_mem, sizeof(rng_mem)));
	cr_assert(contains(p, len, "VMGENCTR", 9));
	cr_assert(contains(p, len, "VM_Gen_Counter", 15));
	cr_assert(contains(p, len, addr_pkg, sizeof(addr_pkg)), "ADDR package with 0x%llx",
		  (unsigned long long)ACPI_VMGENID_ADDR);
	cr_assert(contains(p, len, "ACPI0013", 9));
	cr_assert(contains(p, len, ged_irq, sizeof(ged_irq)));
	cr_assert(contains(p, len, "_EVT", 4));
}

Test(acpi, every_virtio_device_gets_its_own_dsdt_device)
{
	struct acpi_layout l = layout(1);
	struct errbuf eb = { "" };
	uint64_t d;
	uint32_t len;

	l.nr_virtio = ACPI_MAX_VIRTIO;
	for (unsigned i = 0; i < l.nr_virtio; i++)
		l.virtio[i] = (typeof(l.virtio[i])){ .base = 0xd0000000 + i * 0x1000ull,
						     .size = 0x1000, .gsi = 5 + i };
	cr_assert_eq(acpi_write(&mem, &l, &eb), 0, "%s", eb.msg);
	d = dsdt_addr();
	len = check_table(d, "DSDT");
	cr_assert_eq(count(at(d, len), len, "LNRO0005", 9), ACPI_MAX_VIRTIO);
}

Test(acpi, vmgenid_is_written_non_zero_and_changes_on_every_write)
{
	uint8_t a[16], b[16], zero[16] = { 0 };
	struct errbuf eb = { "" };

	write_tables(1);
	memcpy(a, at(ACPI_VMGENID_ADDR, 16), 16);
	cr_assert(memcmp(a, zero, 16), "boot wrote a VMGenID");
	cr_assert_eq(vmgenid_write(&mem, &eb), 0, "%s", eb.msg);
	memcpy(b, at(ACPI_VMGENID_ADDR, 16), 16);
	cr_assert(memcmp(a, b, 16), "a second write gives a new ID");
}

Test(acpi, too_many_vcpus_is_refused_with_a_message)
{
	struct acpi_layout l = layout(ACPI_MAX_VCPUS + 1);
	struct errbuf eb = { "" };
	uint8_t buf[4096];
	struct acpi_offsets o;

	cr_assert_eq(acpi_build(&l, ACPI_RSDP_ADDR, buf, sizeof(buf), &o, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "vCPUs"), "%s", eb.msg);
}

Test(acpi, a_buffer_too_small_is_refused_not_overrun)
{
	struct acpi_layout l = layout(4);
	struct errbuf eb = { "" };
	uint8_t buf[300 + 64];
	struct acpi_offsets o;

	memset(buf, 0xa5, sizeof(buf));
	cr_assert_eq(acpi_build(&l, ACPI_RSDP_ADDR, buf, 300, &o, &eb), -E2BIG);
	for (size_t i = 300; i < sizeof(buf); i++)
		cr_assert_eq(buf[i], 0xa5, "byte %zu past the buffer written", i);
}

/* ---- AML writer --------------------------------------------------------------------- */

Test(aml, pkglength_takes_two_bytes_past_63_and_counts_itself)
{
	uint8_t buf[256], body[100] = { 0 };
	struct aml a;

	aml_init(&a, buf, sizeof(buf));
	aml_if(&a);
	aml_bytes(&a, body, sizeof(body));
	aml_end(&a);
	cr_assert_eq(aml_finish(&a), 0);
	cr_assert_eq(a.len, 1 + 2 + 100);
	/* 102 = 0x66: lead byte (1 << 6) | 0x6, then 0x66 >> 4 */
	cr_assert_eq(buf[1], 0x46);
	cr_assert_eq(buf[2], 0x06);
}

Test(aml, a_bad_name_or_unbalanced_end_fails)
{
	uint8_t buf[64];
	struct aml a;

	aml_init(&a, buf, sizeof(buf));
	aml_name(&a, "TOOLONG");
	cr_assert_neq(aml_finish(&a), 0);
	aml_init(&a, buf, sizeof(buf));
	aml_device(&a, "DEV0");
	cr_assert_neq(aml_finish(&a), 0, "an open device");
	aml_end(&a);
	cr_assert_eq(aml_finish(&a), 0);
	aml_end(&a);
	cr_assert_neq(aml_finish(&a), 0, "one end too many");
}

Test(aml, eisaid_encodes_as_acpica_does)
{
	uint8_t buf[8];
	struct aml a;

	aml_init(&a, buf, sizeof(buf));
	aml_eisaid(&a, "PNP0A03");
	cr_assert_eq(aml_finish(&a), 0);
	cr_assert_eq(a.len, 5);
	cr_assert_eq(rd32(buf + 1), 0x030ad041u);
}

/* ---- iasl ---------------------------------------------------------------------------- */

/* Runs cmd in dir (sh -c), output into *out (malloc'd); returns the exit status. */
static int run(const char *dir, const char *cmd, char **out)
{
	char full[1024];
	size_t cap = 65536, n = 0;
	FILE *f;
	int st;

	snprintf(full, sizeof(full), "cd '%s' && %s 2>&1", dir, cmd);
	*out = calloc(1, cap);
	cr_assert_not_null(*out);
	f = popen(full, "r");
	cr_assert_not_null(f, "popen %s", full);
	while (n + 1 < cap) {
		size_t k = fread(*out + n, 1, cap - 1 - n, f);

		if (k == 0)
			break;
		n += k;
	}
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void dump(const char *dir, const char *name, uint64_t gpa)
{
	char path[512];
	uint32_t len = rd32(at(gpa + 4, 4));
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(at(gpa, len), 1, len, f), len);
	fclose(f);
}

static void iasl_ok(const char *dir, const char *args, const char *what)
{
	char cmd[256], *out;
	int rc;

	snprintf(cmd, sizeof(cmd), "iasl %s", args);
	rc = run(dir, cmd, &out);
	/* 127: not installed. The test must not pass without it (scripts/install-deps.sh) */
	cr_assert_neq(rc, 127, "iasl not found: install acpica-tools (scripts/install-deps.sh)");
	cr_assert_eq(rc, 0, "iasl %s (%s) exited %d:\n%s", args, what, rc, out);
	cr_assert(!strstr(out, "Error") || strstr(out, " 0 Errors"), "iasl %s (%s):\n%s", args,
		  what, out);
	free(out);
}

Test(acpi, iasl_disassembles_every_table_and_recompiles_the_dsdt)
{
	char dir[] = "/tmp/ember-acpi-XXXXXX", *out;
	uint64_t xsdt;

	write_tables(4);
	cr_assert_not_null(mkdtemp(dir));
	xsdt = rd64(at(scan_rsdp() + 24, 8));
	dump(dir, "xsdt.dat", xsdt);
	dump(dir, "facp.dat", xsdt_find("FACP"));
	dump(dir, "apic.dat", xsdt_find("APIC"));
	dump(dir, "dsdt.dat", dsdt_addr());
	iasl_ok(dir, "-d xsdt.dat", "XSDT");
	iasl_ok(dir, "-d facp.dat", "FADT");
	iasl_ok(dir, "-d apic.dat", "MADT");
	iasl_ok(dir, "-d dsdt.dat", "DSDT");
	/* The disassembly compiles again: ACPICA reads the AML as ember meant it. Error 6035
	 * ("_HID suffix must be all hex digits") is the compiler's rule for ASL source
	 * only: Linux's vmgenid driver matches the _HID "VMGENCTR" as it is (Firecracker
	 * gives the same), so it is waived, and nothing else. */
	iasl_ok(dir, "-vw 6035 -p recompiled dsdt.dsl", "DSDT recompiled");
	cr_assert_eq(run(dir, "grep -c -E 'Device \\((COM1|V000|V001|VGEN|GED)\\)' dsdt.dsl",
			 &out), 0);
	cr_assert_eq(atoi(out), 5, "devices in the disassembly: %s", out);
	free(out);
	cr_assert_eq(run(dir, "grep -c 'Notify (\\\\_SB.VGEN, 0x80)' dsdt.dsl", &out), 0,
		     "_EVT notifies VGEN: %s", out);
	free(out);
	{
		char rm[128];

		snprintf(rm, sizeof(rm), "rm -rf '%s'", dir);
		cr_assert_eq(system(rm), 0);
	}
}
