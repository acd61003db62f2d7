/*
 * Intel MultiProcessor Specification 1.4 tables: how a guest without ACPI (a Linux
 * booted with an MP table, our own test guests) learns the CPUs, the IOAPIC and how
 * the ISA interrupts are wired.
 *
 * Placement: the floating pointer sits at EBDA_START (639 KiB), one of the places
 * Linux scans for "_MP_", and the configuration table follows it directly. That first
 * KiB holds the table for up to MPTABLE_FIT_EBDA_VCPUS (37) vCPUs; beyond that the table
 * continues past 0xa0000. That is still inside [EBDA_START, HIGH_MEM_START), which ember
 * backs with RAM, reserves in the e820 map and keeps guest images out of, and the config
 * table may live anywhere (the pointer holds its address). MPTABLE_MAX_BYTES bounds it.
 *
 * Interrupt routing follows what KVM's in-kernel irqchip actually does with its
 * default GSI routing (ember installs no other): GSI n drives IOAPIC pin n and, for
 * n < 16, PIC input n. The PIT raises GSI 0, so ISA IRQ 0 is IOAPIC pin 0 -- not pin 2
 * as on PC chipsets with an interrupt source override; a table claiming pin 2 would
 * leave Linux's timer check without interrupts. IRQ 2 is the PIC cascade and gets no
 * entry. Pins 16-23 are listed as ISA IRQs too (like Firecracker), so devices wired to
 * them (virtio-mmio) are usable by a guest that only knows the MP table.
 */
#include <errno.h>
#include <string.h>

#include "x86.h"

#define MPTABLE_MAX_BYTES 4096u

#define MP_APIC_VERSION    0x14 /* integrated xAPIC */
#define MP_IOAPIC_VERSION  0x11
#define MP_IOAPIC_ADDR     0xfec00000u
#define MP_LAPIC_ADDR      0xfee00000u
#define MP_IOAPIC_PINS     24   /* KVM_IOAPIC_NUM_PINS */
#define MP_ISA_CASCADE_IRQ 2
#define MP_SPEC_REV        4    /* 1.4 */
#define MP_BUS_ISA         0

enum mp_entry_type {
	MP_PROCESSOR = 0,
	MP_BUS = 1,
	MP_IOAPIC = 2,
	MP_IOINTSRC = 3,
	MP_LINTSRC = 4,
};
enum mp_irq_type { MP_IRQ_INT = 0, MP_IRQ_NMI = 1, MP_IRQ_EXTINT = 3 };

#define MP_CPU_ENABLED 0x1
#define MP_CPU_BSP     0x2
#define MP_IOAPIC_ENABLED 0x1
/* Family 6 signature with FPU and APIC feature bits: the spec wants CPUID values here,
 * Linux only prints them, and they are the same for every vCPU. */
#define MP_CPU_SIGNATURE 0x600u
#define MP_CPU_FEATURES  ((1u << 0) | (1u << 9))
#define MP_LINT_ALL_APICS 0xff

struct mpf_intel {
	char signature[4];     /* "_MP_" */
	uint32_t physptr;      /* config table address */
	uint8_t length;        /* in 16-byte units: 1 */
	uint8_t specification; /* 4 = 1.4 */
	uint8_t checksum;
	uint8_t feature1;      /* 0: a config table is present */
	uint8_t feature2;      /* bit 7 clear: no IMCR, virtual wire mode */
	uint8_t feature3, feature4, feature5;
} __attribute__((packed));

struct mpc_table {
	char signature[4];     /* "PCMP" */
	uint16_t length;       /* base table incl. entries */
	uint8_t spec;
	uint8_t checksum;
	char oem[8];
	char productid[12];
	uint32_t oemptr;
	uint16_t oemsize;
	uint16_t oemcount;     /* number of entries */
	uint32_t lapic;
	uint16_t ext_length;
	uint8_t ext_checksum;
	uint8_t reserved;
} __attribute__((packed));

struct mpc_cpu {
	uint8_t type, apicid, apicver, cpuflag;
	uint32_t cpufeature, featureflag;
	uint32_t reserved[2];
} __attribute__((packed));

struct mpc_bus {
	uint8_t type, busid;
	char bustype[6];
} __attribute__((packed));

struct mpc_ioapic {
	uint8_t type, apicid, apicver, flags;
	uint32_t apicaddr;
} __attribute__((packed));

struct mpc_intsrc { /* also the layout of local interrupt entries */
	uint8_t type, irqtype;
	uint16_t irqflag;      /* 0: polarity and trigger conform to the bus */
	uint8_t srcbus, srcbusirq, dstapic, dstirq;
} __attribute__((packed));

_Static_assert(sizeof(struct mpf_intel) == 16, "MP floating pointer is 16 bytes");
_Static_assert(sizeof(struct mpc_table) == 44, "MP config header is 44 bytes");
_Static_assert(sizeof(struct mpc_cpu) == 20, "MP processor entry is 20 bytes");
_Static_assert(sizeof(struct mpc_bus) == 8 && sizeof(struct mpc_ioapic) == 8 &&
	       sizeof(struct mpc_intsrc) == 8, "MP bus/IOAPIC/interrupt entries are 8 bytes");

#define MP_IO_ENTRIES (MP_IOAPIC_PINS - 1) /* every pin but the cascade */
#define MP_FIXED_BYTES                                                                  \
	(sizeof(struct mpf_intel) + sizeof(struct mpc_table) + sizeof(struct mpc_bus) +   \
	 sizeof(struct mpc_ioapic) + (MP_IO_ENTRIES + 2) * sizeof(struct mpc_intsrc))
#define MPTABLE_MAX_VCPUS_BY_SIZE ((MPTABLE_MAX_BYTES - MP_FIXED_BYTES) / sizeof(struct mpc_cpu))
/* APIC ids 0..nr-1 and the IOAPIC id nr must all be below the broadcast id 0xff. */
#define MPTABLE_MAX_VCPUS                                                                \
	(MPTABLE_MAX_VCPUS_BY_SIZE < 254 ? MPTABLE_MAX_VCPUS_BY_SIZE : 254)
#define MPTABLE_FIT_EBDA_VCPUS ((1024 - MP_FIXED_BYTES) / sizeof(struct mpc_cpu))

_Static_assert(MPTABLE_MAX_VCPUS >= VM_MAX_VCPUS, "MP table must describe VM_MAX_VCPUS");
_Static_assert(EBDA_START + MPTABLE_MAX_BYTES <= HIGH_MEM_START, "MP table in reserved window");

static uint8_t mp_checksum(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;

	for (size_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + p[i]);
	return (uint8_t)(0x100 - sum);
}

/* Appends one entry to the table being built in buf. */
static void put(uint8_t *buf, size_t *off, const void *entry, size_t len)
{
	memcpy(buf + *off, entry, len);
	*off += len;
}

int mptable_write(struct guest_mem *m, unsigned nr_vcpus, struct errbuf *eb)
{
	uint8_t buf[MPTABLE_MAX_BYTES];
	struct mpf_intel mpf;
	struct mpc_table hdr;
	size_t off, cfg_off = sizeof(mpf);
	uint16_t count = 0;
	uint8_t ioapic_id = (uint8_t)nr_vcpus;

	if (nr_vcpus == 0 || nr_vcpus > MPTABLE_MAX_VCPUS)
		return errbuf_set(eb, nr_vcpus ? -E2BIG : -EINVAL,
				  "MP table: %u vCPUs, supported 1..%zu", nr_vcpus,
				  (size_t)MPTABLE_MAX_VCPUS);
	memset(buf, 0, sizeof(buf));
	off = cfg_off + sizeof(hdr);

	for (unsigned i = 0; i < nr_vcpus; i++) {
		struct mpc_cpu c = {
			.type = MP_PROCESSOR,
			.apicid = (uint8_t)i, /* == KVM vCPU id == CPUID initial APIC id */
			.apicver = MP_APIC_VERSION,
			.cpuflag = MP_CPU_ENABLED | (i == 0 ? MP_CPU_BSP : 0),
			.cpufeature = MP_CPU_SIGNATURE,
			.featureflag = MP_CPU_FEATURES,
		};
		put(buf, &off, &c, sizeof(c));
		count++;
	}
	{
		struct mpc_bus b = { .type = MP_BUS, .busid = MP_BUS_ISA };

		memcpy(b.bustype, "ISA   ", sizeof(b.bustype));
		put(buf, &off, &b, sizeof(b));
		count++;
	}
	{
		/* An id no local APIC uses: on the pre-xAPIC APIC bus they shared one space. */
		struct mpc_ioapic io = { .type = MP_IOAPIC, .apicid = ioapic_id,
					 .apicver = MP_IOAPIC_VERSION, .flags = MP_IOAPIC_ENABLED,
					 .apicaddr = MP_IOAPIC_ADDR };
		put(buf, &off, &io, sizeof(io));
		count++;
	}
	for (unsigned pin = 0; pin < MP_IOAPIC_PINS; pin++) {
		struct mpc_intsrc s = { .type = MP_IOINTSRC, .irqtype = MP_IRQ_INT, .irqflag = 0,
					.srcbus = MP_BUS_ISA, .srcbusirq = (uint8_t)pin,
					.dstapic = ioapic_id, .dstirq = (uint8_t)pin };

		if (pin == MP_ISA_CASCADE_IRQ)
			continue;
		put(buf, &off, &s, sizeof(s));
		count++;
	}
	{
		/* Virtual wire mode, matching the BSP's LVTs (vcpu_setup.c). */
		struct mpc_intsrc lint0 = { .type = MP_LINTSRC, .irqtype = MP_IRQ_EXTINT,
					    .srcbus = MP_BUS_ISA, .dstapic = MP_LINT_ALL_APICS,
					    .dstirq = 0 };
		struct mpc_intsrc lint1 = { .type = MP_LINTSRC, .irqtype = MP_IRQ_NMI,
					    .srcbus = MP_BUS_ISA, .dstapic = MP_LINT_ALL_APICS,
					    .dstirq = 1 };
		put(buf, &off, &lint0, sizeof(lint0));
		put(buf, &off, &lint1, sizeof(lint1));
		count += 2;
	}

	memset(&hdr, 0, sizeof(hdr));
	memcpy(hdr.signature, "PCMP", 4);
	hdr.length = (uint16_t)(off - cfg_off);
	hdr.spec = MP_SPEC_REV;
	memcpy(hdr.oem, "EMBER   ", sizeof(hdr.oem));
	memcpy(hdr.productid, "EMBER VMM   ", sizeof(hdr.productid));
	hdr.oemcount = count;
	hdr.lapic = MP_LAPIC_ADDR;
	memcpy(buf + cfg_off, &hdr, sizeof(hdr));
	buf[cfg_off + offsetof(struct mpc_table, checksum)] = mp_checksum(buf + cfg_off, hdr.length);

	memset(&mpf, 0, sizeof(mpf));
	memcpy(mpf.signature, "_MP_", 4);
	mpf.physptr = (uint32_t)(EBDA_START + cfg_off);
	mpf.length = 1;
	mpf.specification = MP_SPEC_REV;
	memcpy(buf, &mpf, sizeof(mpf));
	buf[offsetof(struct mpf_intel, checksum)] = mp_checksum(buf, sizeof(mpf));

	if (gpa_write(m, EBDA_START, buf, off) < 0)
		return errbuf_set(eb, -ENOMEM, "MP table: guest RAM does not cover [0x%llx, 0x%llx)",
				  (unsigned long long)EBDA_START,
				  (unsigned long long)(EBDA_START + off));
	return 0;
}
