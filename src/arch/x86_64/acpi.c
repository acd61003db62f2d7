/*
 * ACPI tables for a hardware-reduced microVM (as Firecracker gives its guests): RSDP,
 * XSDT, FADT, MADT and a DSDT describing the serial port, the virtio-mmio devices, a
 * VMGenID device and the Generic Event Device (GED) that notifies it.
 *
 * Everything lives in [ACPI_RSDP_ADDR, ACPI_TABLES_END), inside the window
 * [EBDA_START, HIGH_MEM_START) that ember backs with RAM, marks reserved in the e820 map
 * and keeps guest images out of. The RSDP sits at 0xe0000, the first place Linux scans
 * in the BIOS area (and boot_params.acpi_rsdp_addr points at it too); the other tables
 * follow it, 16-byte aligned. The VMGenID page (vmgenid.c) is the page after them.
 *
 * Interrupts are described as the MP table describes them (mptable.c has the reasons):
 * KVM's default routing, GSI n = IOAPIC pin n, so ISA IRQ 0 is pin 0; the MADT says so
 * with an interrupt source override, since without one a guest may assume the PC's
 * pin 2. The IOAPIC's id follows the vCPUs' APIC ids, as in the MP table.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "loader_internal.h"

#define ACPI_OEM_ID       "EMBER "
#define ACPI_OEM_TABLE_ID "EMBERVM "
#define ACPI_CREATOR_ID   "EMBR"
#define ACPI_OEM_REVISION 1
#define ACPI_CREATOR_REV  1

#define ACPI_LAPIC_ADDR  0xfee00000u
#define ACPI_IOAPIC_ADDR 0xfec00000u

struct acpi_sdt_header {
	char signature[4];
	uint32_t length;
	uint8_t revision;
	uint8_t checksum;
	char oem_id[6];
	char oem_table_id[8];
	uint32_t oem_revision;
	char creator_id[4];
	uint32_t creator_revision;
} __attribute__((packed));

struct acpi_rsdp {
	char signature[8];      /* "RSD PTR " */
	uint8_t checksum;       /* of the first 20 bytes */
	char oem_id[6];
	uint8_t revision;       /* 2: ACPI 2.0+, XSDT */
	uint32_t rsdt_address;  /* none: 0 */
	uint32_t length;
	uint64_t xsdt_address;
	uint8_t ext_checksum;   /* of all 36 bytes */
	uint8_t reserved[3];
} __attribute__((packed));

/* Generic Address Structure */
struct acpi_gas {
	uint8_t space_id, bit_width, bit_offset, access_size;
	uint64_t address;
} __attribute__((packed));

/* FADT, revision 6 (ACPI 6.3), 276 bytes */
struct acpi_fadt {
	struct acpi_sdt_header h;
	uint32_t firmware_ctrl, dsdt;
	uint8_t reserved0, preferred_pm_profile;
	uint16_t sci_int;
	uint32_t smi_cmd;
	uint8_t acpi_enable, acpi_disable, s4bios_req, pstate_cnt;
	uint32_t pm1a_evt_blk, pm1b_evt_blk, pm1a_cnt_blk, pm1b_cnt_blk, pm2_cnt_blk,
		 pm_tmr_blk, gpe0_blk, gpe1_blk;
	uint8_t pm1_evt_len, pm1_cnt_len, pm2_cnt_len, pm_tmr_len, gpe0_blk_len, gpe1_blk_len,
		gpe1_base, cst_cnt;
	uint16_t p_lvl2_lat, p_lvl3_lat, flush_size, flush_stride;
	uint8_t duty_offset, duty_width, day_alrm, mon_alrm, century;
	uint16_t iapc_boot_arch;
	uint8_t reserved1;
	uint32_t flags;
	struct acpi_gas reset_reg;
	uint8_t reset_value;
	uint16_t arm_boot_arch;
	uint8_t minor_version;
	uint64_t x_firmware_ctrl, x_dsdt;
	struct acpi_gas x_pm1a_evt_blk, x_pm1b_evt_blk, x_pm1a_cnt_blk, x_pm1b_cnt_blk,
		x_pm2_cnt_blk, x_pm_tmr_blk, x_gpe0_blk, x_gpe1_blk, sleep_control, sleep_status;
	uint64_t hypervisor_vendor_id;
} __attribute__((packed));

#define FADT_F_PWR_BUTTON     (1u << 4)  /* no fixed power button */
#define FADT_F_SLP_BUTTON     (1u << 5)  /* no fixed sleep button */
#define FADT_F_RESET_REG_SUP  (1u << 10)
#define FADT_F_HW_REDUCED     (1u << 20)
#define FADT_BOOT_NO_VGA      (1u << 2)
#define FADT_BOOT_NO_CMOS_RTC (1u << 5)
#define ACPI_GAS_SYSTEM_IO    1
#define ACPI_GAS_ACCESS_BYTE  1

struct acpi_madt {
	struct acpi_sdt_header h;
	uint32_t lapic_address;
	uint32_t flags;
} __attribute__((packed));

#define MADT_PCAT_COMPAT 1u /* KVM's irqchip has the two 8259s too */

struct madt_lapic {
	uint8_t type, length, processor_uid, apic_id;
	uint32_t flags;
} __attribute__((packed));

struct madt_ioapic {
	uint8_t type, length, ioapic_id, reserved;
	uint32_t address, gsi_base;
} __attribute__((packed));

struct madt_iso {
	uint8_t type, length, bus, source;
	uint32_t gsi;
	uint16_t flags; /* 0: conforms to the bus (ISA: edge, active high) */
} __attribute__((packed));

struct madt_lapic_nmi {
	uint8_t type, length, processor_uid;
	uint16_t flags;
	uint8_t lint;
} __attribute__((packed));

enum { MADT_LAPIC = 0, MADT_IOAPIC = 1, MADT_ISO = 2, MADT_LAPIC_NMI = 4 };
#define MADT_LAPIC_ENABLED 1u
#define MADT_ALL_PROCESSORS 0xff

_Static_assert(sizeof(struct acpi_sdt_header) == 36, "SDT header is 36 bytes");
_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP is 36 bytes");
_Static_assert(sizeof(struct acpi_gas) == 12, "GAS is 12 bytes");
_Static_assert(sizeof(struct acpi_fadt) == 276, "FADT revision 6 is 276 bytes");
_Static_assert(offsetof(struct acpi_fadt, x_dsdt) == 140, "FADT X_DSDT at 140");
_Static_assert(sizeof(struct acpi_madt) == 44, "MADT header is 44 bytes");
_Static_assert(sizeof(struct madt_lapic) == 8 && sizeof(struct madt_ioapic) == 12 &&
	       sizeof(struct madt_iso) == 10 && sizeof(struct madt_lapic_nmi) == 6,
	       "MADT entry sizes");
_Static_assert(EBDA_START + 4096 <= ACPI_RSDP_ADDR, "MP table and ACPI tables apart");
_Static_assert(ACPI_VMGENID_ADDR + PAGE_SIZE <= HIGH_MEM_START, "VMGenID in the window");

uint8_t acpi_checksum(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;

	for (size_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + p[i]);
	return (uint8_t)(0x100 - sum);
}

static void sdt_header(struct acpi_sdt_header *h, const char *sig, uint32_t len, uint8_t rev)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->signature, sig, 4);
	h->length = len;
	h->revision = rev;
	memcpy(h->oem_id, ACPI_OEM_ID, 6);
	memcpy(h->oem_table_id, ACPI_OEM_TABLE_ID, 8);
	h->oem_revision = ACPI_OEM_REVISION;
	memcpy(h->creator_id, ACPI_CREATOR_ID, 4);
	h->creator_revision = ACPI_CREATOR_REV;
}

/* The image being built: tables appended at 16-byte aligned offsets. */
struct image {
	uint8_t *buf;
	size_t len, cap;
};

static uint8_t *img_alloc(struct image *im, size_t len, size_t *off)
{
	size_t at = (im->len + 15) & ~(size_t)15;

	if (at > im->cap || len > im->cap - at)
		return NULL;
	memset(im->buf + im->len, 0, at - im->len + len);
	im->len = at + len;
	*off = at;
	return im->buf + at;
}

static void seal(uint8_t *table)
{
	struct acpi_sdt_header *h = (struct acpi_sdt_header *)table;

	h->checksum = 0;
	h->checksum = acpi_checksum(table, h->length);
}

static int build_dsdt(const struct acpi_layout *l, struct image *im, size_t *off,
		      struct errbuf *eb)
{
	struct acpi_sdt_header h;
	struct aml a, res;
	uint8_t rbuf[64];
	char name[16]; /* "Vnnn"; i < ACPI_MAX_VIRTIO */
	size_t at = (im->len + 15) & ~(size_t)15;

	if (at > im->cap || im->cap - at < sizeof(h))
		return errbuf_set(eb, -E2BIG, "ACPI: no room for the DSDT");
	memset(im->buf + im->len, 0, at - im->len);
	aml_init(&a, im->buf + at + sizeof(h), im->cap - at - sizeof(h));

	aml_scope(&a, "\\_SB_");
	if (l->serial_port) {
		aml_device(&a, "COM1");
		aml_name(&a, "_HID");
		aml_eisaid(&a, "PNP0501");
		aml_name(&a, "_UID");
		aml_integer(&a, 0);
		aml_init(&res, rbuf, sizeof(rbuf));
		aml_res_io(&res, l->serial_port, 8);
		aml_res_irq(&res, l->serial_gsi);
		aml_res_end(&res);
		aml_name(&a, "_CRS");
		aml_buffer(&a, rbuf, res.len);
		aml_end(&a);
	}
	for (unsigned i = 0; i < l->nr_virtio; i++) {
		snprintf(name, sizeof(name), "V%03u", i);
		aml_device(&a, name);
		aml_name(&a, "_HID");
		aml_string(&a, "LNRO0005"); /* Linux's virtio_mmio ACPI id */
		aml_name(&a, "_UID");
		aml_integer(&a, i);
		aml_name(&a, "_CCA"); /* cache-coherent DMA */
		aml_integer(&a, 1);
		aml_init(&res, rbuf, sizeof(rbuf));
		aml_res_mem32(&res, (uint32_t)l->virtio[i].base, (uint32_t)l->virtio[i].size);
		aml_res_ext_irq(&res, l->virtio[i].gsi);
		aml_res_end(&res);
		aml_name(&a, "_CRS");
		aml_buffer(&a, rbuf, res.len);
		aml_end(&a);
	}
	/* VMGenID as Linux's drivers/virt/vmgenid.c finds it: ADDR is a package of the
	 * generation ID's address, low and high 32 bits */
	aml_device(&a, "VGEN");
	aml_name(&a, "_HID");
	aml_string(&a, "VMGENCTR");
	aml_name(&a, "_CID");
	aml_string(&a, "VM_Gen_Counter");
	aml_name(&a, "_DDN");
	aml_string(&a, "VM_Gen_Counter");
	aml_name(&a, "ADDR");
	aml_package(&a, 2);
	aml_dword(&a, (uint32_t)l->vmgenid_addr);
	aml_dword(&a, (uint32_t)(l->vmgenid_addr >> 32));
	aml_end(&a);
	aml_end(&a);
	/* The GED: its interrupt runs _EVT, which tells VGEN's driver (Notify 0x80) */
	aml_device(&a, "GED_");
	aml_name(&a, "_HID");
	aml_string(&a, "ACPI0013");
	aml_name(&a, "_UID");
	aml_integer(&a, 0);
	aml_init(&res, rbuf, sizeof(rbuf));
	aml_res_ext_irq(&res, l->ged_gsi);
	aml_res_end(&res);
	aml_name(&a, "_CRS");
	aml_buffer(&a, rbuf, res.len);
	aml_method(&a, "_EVT", 1, true);
	aml_if(&a);
	aml_lequal(&a);
	aml_arg(&a, 0);
	aml_integer(&a, l->ged_gsi);
	aml_notify(&a, "\\_SB_.VGEN", 0x80);
	aml_end(&a); /* If */
	aml_end(&a); /* _EVT */
	aml_end(&a); /* GED_ */
	aml_end(&a); /* \_SB_ */

	if (aml_finish(&a) || aml_finish(&res))
		return errbuf_set(eb, -E2BIG, "ACPI: DSDT does not fit in %zu bytes", im->cap - at);
	sdt_header(&h, "DSDT", (uint32_t)(sizeof(h) + a.len), 2); /* 2: 64-bit integers */
	memcpy(im->buf + at, &h, sizeof(h));
	im->len = at + h.length;
	*off = at;
	seal(im->buf + at);
	return 0;
}

static int build_madt(const struct acpi_layout *l, struct image *im, size_t *off,
		      struct errbuf *eb)
{
	size_t len = sizeof(struct acpi_madt) + l->nr_vcpus * sizeof(struct madt_lapic) +
		     sizeof(struct madt_ioapic) + sizeof(struct madt_iso) +
		     sizeof(struct madt_lapic_nmi);
	uint8_t *t = img_alloc(im, len, off), *p;
	struct acpi_madt madt;
	struct madt_ioapic io = { .type = MADT_IOAPIC, .length = sizeof(io),
				  .ioapic_id = (uint8_t)l->nr_vcpus, .address = ACPI_IOAPIC_ADDR,
				  .gsi_base = 0 };
	/* ISA IRQ 0 (the PIT) is GSI 0 under KVM's routing, not the PC's pin 2 */
	struct madt_iso iso = { .type = MADT_ISO, .length = sizeof(iso), .bus = 0, .source = 0,
				.gsi = 0, .flags = 0 };
	/* LINT1 of every local APIC is NMI, as the BSP's LVTs are set (vcpu_setup.c) */
	struct madt_lapic_nmi nmi = { .type = MADT_LAPIC_NMI, .length = sizeof(nmi),
				      .processor_uid = MADT_ALL_PROCESSORS, .flags = 0, .lint = 1 };

	if (!t)
		return errbuf_set(eb, -E2BIG, "ACPI: no room for the MADT");
	sdt_header(&madt.h, "APIC", (uint32_t)len, 5);
	madt.lapic_address = ACPI_LAPIC_ADDR;
	madt.flags = MADT_PCAT_COMPAT;
	memcpy(t, &madt, sizeof(madt));
	p = t + sizeof(madt);
	for (unsigned i = 0; i < l->nr_vcpus; i++) {
		struct madt_lapic c = { .type = MADT_LAPIC, .length = sizeof(c),
					.processor_uid = (uint8_t)i, .apic_id = (uint8_t)i,
					.flags = MADT_LAPIC_ENABLED };

		memcpy(p, &c, sizeof(c));
		p += sizeof(c);
	}
	memcpy(p, &io, sizeof(io));
	p += sizeof(io);
	memcpy(p, &iso, sizeof(iso));
	p += sizeof(iso);
	memcpy(p, &nmi, sizeof(nmi));
	seal(t);
	return 0;
}

static int build_fadt(struct image *im, uint64_t dsdt_gpa, size_t *off, struct errbuf *eb)
{
	uint8_t *t = img_alloc(im, sizeof(struct acpi_fadt), off);
	struct acpi_fadt f;

	if (!t)
		return errbuf_set(eb, -E2BIG, "ACPI: no room for the FADT");
	memset(&f, 0, sizeof(f));
	sdt_header(&f.h, "FACP", sizeof(f), 6);
	f.minor_version = 3;
	f.flags = FADT_F_HW_REDUCED | FADT_F_RESET_REG_SUP | FADT_F_PWR_BUTTON | FADT_F_SLP_BUTTON;
	/* no VGA, no RTC; no 8042 flag: ember's i8042 is only the reset line */
	f.iapc_boot_arch = FADT_BOOT_NO_VGA | FADT_BOOT_NO_CMOS_RTC;
	/* reset: 0xfe to the i8042 command port, which ember's i8042 turns into a VM reset */
	f.reset_reg = (struct acpi_gas){ .space_id = ACPI_GAS_SYSTEM_IO, .bit_width = 8,
					 .access_size = ACPI_GAS_ACCESS_BYTE, .address = 0x64 };
	f.reset_value = 0xfe;
	f.dsdt = dsdt_gpa <= UINT32_MAX ? (uint32_t)dsdt_gpa : 0;
	f.x_dsdt = dsdt_gpa;
	memcpy(t, &f, sizeof(f));
	seal(t);
	return 0;
}

int acpi_build(const struct acpi_layout *l, uint64_t base, uint8_t *buf, size_t cap,
	       struct acpi_offsets *o, struct errbuf *eb)
{
	struct image im = { .buf = buf, .len = 0, .cap = cap };
	struct acpi_rsdp rsdp;
	struct acpi_sdt_header xh;
	uint8_t *x, *r;
	uint64_t entries[2];
	int ret;

	memset(o, 0, sizeof(*o));
	if (l->nr_vcpus == 0 || l->nr_vcpus > ACPI_MAX_VCPUS)
		return errbuf_set(eb, -EINVAL, "ACPI: %u vCPUs, supported 1..%u", l->nr_vcpus,
				  ACPI_MAX_VCPUS);
	if (l->nr_virtio > ACPI_MAX_VIRTIO)
		return errbuf_set(eb, -EINVAL, "ACPI: %u virtio devices, supported up to %u",
				  l->nr_virtio, ACPI_MAX_VIRTIO);
	for (unsigned i = 0; i < l->nr_virtio; i++)
		if (l->virtio[i].base > UINT32_MAX || l->virtio[i].size > UINT32_MAX - l->virtio[i].base)
			return errbuf_set(eb, -EINVAL, "ACPI: virtio device %u is not below 4 GiB", i);
	r = img_alloc(&im, sizeof(rsdp), &o->rsdp);
	if (!r)
		return errbuf_set(eb, -E2BIG, "ACPI: no room for the RSDP");
	ret = build_dsdt(l, &im, &o->dsdt, eb);
	if (!ret)
		ret = build_fadt(&im, base + o->dsdt, &o->fadt, eb);
	if (!ret)
		ret = build_madt(l, &im, &o->madt, eb);
	if (ret)
		return ret;
	x = img_alloc(&im, sizeof(xh) + sizeof(entries), &o->xsdt);
	if (!x)
		return errbuf_set(eb, -E2BIG, "ACPI: no room for the XSDT");
	sdt_header(&xh, "XSDT", sizeof(xh) + sizeof(entries), 1);
	entries[0] = base + o->fadt;
	entries[1] = base + o->madt;
	memcpy(x, &xh, sizeof(xh));
	memcpy(x + sizeof(xh), entries, sizeof(entries));
	seal(x);

	memset(&rsdp, 0, sizeof(rsdp));
	memcpy(rsdp.signature, "RSD PTR ", 8);
	memcpy(rsdp.oem_id, ACPI_OEM_ID, 6);
	rsdp.revision = 2;
	rsdp.length = sizeof(rsdp);
	rsdp.xsdt_address = base + o->xsdt;
	memcpy(r, &rsdp, sizeof(rsdp));
	r[offsetof(struct acpi_rsdp, checksum)] = acpi_checksum(r, 20);
	r[offsetof(struct acpi_rsdp, ext_checksum)] = acpi_checksum(r, sizeof(rsdp));
	o->size = im.len;
	return 0;
}

int acpi_write(struct guest_mem *m, const struct acpi_layout *l, struct errbuf *eb)
{
	uint8_t buf[ACPI_TABLES_END - ACPI_RSDP_ADDR];
	struct acpi_offsets o;
	uint64_t rsdp = ACPI_RSDP_ADDR;
	int r = acpi_build(l, ACPI_RSDP_ADDR, buf, sizeof(buf), &o, eb);

	if (r)
		return r;
	if (gpa_write(m, ACPI_RSDP_ADDR, buf, o.size))
		return errbuf_set(eb, -ENOMEM, "ACPI: guest RAM does not cover [0x%llx, 0x%llx)",
				  (unsigned long long)ACPI_RSDP_ADDR,
				  (unsigned long long)(ACPI_RSDP_ADDR + o.size));
	/* Linux takes the RSDP from the zero page before it scans the BIOS area */
	if (gpa_write(m, BOOT_PARAMS_ADDR + offsetof(struct boot_params, acpi_rsdp_addr), &rsdp,
		      sizeof(rsdp)))
		return errbuf_set(eb, -EFAULT, "ACPI: boot_params is outside guest RAM");
	return vmgenid_write(m, eb);
}
