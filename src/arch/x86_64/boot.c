/*
 * The state the 64-bit boot protocol promises at the kernel's entry: long mode with
 * paging on, an identity map covering the kernel and boot_params, flat __BOOT_CS /
 * __BOOT_DS segments, rsi = boot_params. We write it straight into guest RAM and the
 * vCPU registers, so no guest code has to run in real or protected mode (which this
 * platform emulates slowly).
 */
#include <errno.h>
#include <string.h>

#include "x86.h"

#define PTE_P  (1ull << 0)
#define PTE_RW (1ull << 1)
#define PTE_PS (1ull << 7)

#define CR0_PE (1ull << 0)
#define CR0_MP (1ull << 1)
#define CR0_ET (1ull << 4)
#define CR0_NE (1ull << 5)
#define CR0_WP (1ull << 16)
#define CR0_PG (1ull << 31)
#define CR4_PAE        (1ull << 5)
#define CR4_OSFXSR     (1ull << 9)
#define CR4_OSXMMEXCPT (1ull << 10)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)

#define GDT_ENTRIES 6 /* null, null, code64, data, 16-byte TSS descriptor */
#define TSS_LIMIT 0x67

/* Segment descriptor layout: limit 15:0, base 23:0, access byte, flags:limit 19:16, base 31:24. */
static uint64_t gdt_entry(uint8_t access, uint8_t flags, uint32_t base, uint32_t limit)
{
	return ((uint64_t)(base & 0xff000000u) << 32) | ((uint64_t)(flags & 0xf) << 52) |
	       ((uint64_t)(limit & 0xf0000u) << 32) | ((uint64_t)access << 40) |
	       ((uint64_t)(base & 0x00ffffffu) << 16) | (limit & 0xffffu);
}

/* access: P | DPL0 | S | type; flags: G | DB | L */
#define GDT_CODE64 gdt_entry(0x80 | 0x10 | 0xb, 0x8 | 0x2, 0, 0xfffff)
#define GDT_DATA   gdt_entry(0x80 | 0x10 | 0x3, 0x8 | 0x4, 0, 0xfffff)
#define GDT_TSS64  gdt_entry(0x80 | 0xb, 0, 0, TSS_LIMIT) /* busy TSS; high half 0 */

int boot_write_tables(struct guest_mem *m, struct errbuf *eb)
{
	uint64_t *pml4 = gpa_map_write(m, BOOT_PML4_ADDR, PAGE_SIZE);
	uint64_t *pdpt = gpa_map_write(m, BOOT_PDPT_ADDR, PAGE_SIZE);
	uint64_t *pd = gpa_map_write(m, BOOT_PD_ADDR, BOOT_PD_PAGES * PAGE_SIZE);
	uint64_t *gdt = gpa_map_write(m, BOOT_GDT_ADDR, GDT_ENTRIES * 8);
	uint64_t *idt = gpa_map_write(m, BOOT_IDT_ADDR, 16);

	if (!pml4 || !pdpt || !pd || !gdt || !idt)
		return errbuf_set(eb, -ENOMEM, "guest RAM does not cover the boot tables at 0x500-0x%llx",
				  (unsigned long long)(BOOT_PD_ADDR + BOOT_PD_PAGES * PAGE_SIZE));

	memset(pml4, 0, PAGE_SIZE);
	memset(pdpt, 0, PAGE_SIZE);
	pml4[0] = BOOT_PDPT_ADDR | PTE_P | PTE_RW;
	for (unsigned i = 0; i < BOOT_PD_PAGES; i++)
		pdpt[i] = (BOOT_PD_ADDR + i * PAGE_SIZE) | PTE_P | PTE_RW;
	/* 4 x 512 2-MiB pages: 0..4 GiB, so the kernel, boot_params and any MMIO are mapped. */
	for (uint64_t i = 0; i < BOOT_PD_PAGES * 512ull; i++)
		pd[i] = (i << 21) | PTE_P | PTE_RW | PTE_PS;

	gdt[0] = 0;
	gdt[1] = 0;
	gdt[BOOT_CS / 8] = GDT_CODE64;
	gdt[BOOT_DS / 8] = GDT_DATA;
	gdt[BOOT_TSS / 8] = GDT_TSS64;
	gdt[BOOT_TSS / 8 + 1] = 0;
	memset(idt, 0, 16);
	return 0;
}

void boot_entry_regs(struct kvm_regs *regs, uint64_t entry)
{
	memset(regs, 0, sizeof(*regs));
	regs->rip = entry;
	regs->rsi = BOOT_PARAMS_ADDR;
	regs->rflags = 0x2; /* bit 1 is reserved-as-one; IF off */
	regs->rsp = BOOT_STACK_TOP;
	regs->rbp = BOOT_STACK_TOP;
}

/* The hidden part of a segment register must match the descriptor in the GDT. */
static void seg_flat(struct kvm_segment *s, uint16_t sel, uint8_t type, uint8_t l, uint8_t db)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xffffffff; /* 0xfffff pages, as KVM stores it with g=1 */
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->dpl = 0;
	s->db = db;
	s->s = 1;
	s->l = l;
	s->g = 1;
}

void boot_entry_sregs(struct kvm_sregs *sregs)
{
	seg_flat(&sregs->cs, BOOT_CS, 0xb, 1, 0);
	seg_flat(&sregs->ds, BOOT_DS, 0x3, 0, 1);
	sregs->es = sregs->ds;
	sregs->fs = sregs->ds;
	sregs->gs = sregs->ds;
	sregs->ss = sregs->ds;

	memset(&sregs->tr, 0, sizeof(sregs->tr));
	sregs->tr.base = 0;
	sregs->tr.limit = TSS_LIMIT;
	sregs->tr.selector = BOOT_TSS;
	sregs->tr.type = 0xb; /* 64-bit busy TSS: KVM's entry checks want a usable TR */
	sregs->tr.present = 1;

	sregs->gdt.base = BOOT_GDT_ADDR;
	sregs->gdt.limit = GDT_ENTRIES * 8 - 1;
	sregs->idt.base = BOOT_IDT_ADDR;
	sregs->idt.limit = 0;

	sregs->cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
	sregs->cr3 = BOOT_PML4_ADDR;
	sregs->cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
	sregs->efer = EFER_LME | EFER_LMA;
}
