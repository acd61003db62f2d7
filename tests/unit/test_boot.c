/* Boot tables and 64-bit entry state: page tables, GDT, regs, sregs, and a KVM run. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "arch/x86_64/x86.h"
#include "../lib/testlib.h"

static struct guest_mem mem;
static struct errbuf eb;

static void setup(void)
{
	tb_mem_init(&mem, 16 * MiB);
	memset(&eb, 0, sizeof(eb));
}

static void teardown(void)
{
	mem_free(&mem);
}

TestSuite(boot, .init = setup, .fini = teardown);

static uint64_t q(uint64_t gpa)
{
	uint64_t v;

	cr_assert_eq(gpa_read(&mem, gpa, &v, 8), 0);
	return v;
}

Test(boot, pml4_points_first_entry_at_pdpt_only)
{
	memset(gpa_map_write(&mem, BOOT_PML4_ADDR, 4096), 0xff, 4096);
	cr_assert_eq(boot_write_tables(&mem, &eb), 0, "%s", eb.msg);
	cr_assert_eq(q(BOOT_PML4_ADDR), BOOT_PDPT_ADDR | 0x3); /* present | rw, supervisor */
	for (unsigned i = 1; i < 512; i++)
		cr_assert_eq(q(BOOT_PML4_ADDR + i * 8), 0, "PML4[%u]", i);
}

Test(boot, pdpt_maps_four_gib_through_four_page_directories)
{
	memset(gpa_map_write(&mem, BOOT_PDPT_ADDR, 4096), 0xff, 4096);
	cr_assert_eq(boot_write_tables(&mem, &eb), 0, "%s", eb.msg);
	for (unsigned i = 0; i < 4; i++)
		cr_assert_eq(q(BOOT_PDPT_ADDR + i * 8), (BOOT_PD_ADDR + i * 4096) | 0x3, "PDPT[%u]", i);
	for (unsigned i = 4; i < 512; i++)
		cr_assert_eq(q(BOOT_PDPT_ADDR + i * 8), 0, "PDPT[%u]", i);
}

Test(boot, page_directories_identity_map_with_2mib_pages)
{
	cr_assert_eq(boot_write_tables(&mem, &eb), 0, "%s", eb.msg);
	for (uint64_t i = 0; i < 4 * 512; i++)
		cr_assert_eq(q(BOOT_PD_ADDR + i * 8), (i << 21) | 0x83, "PD entry %llu",
			     (unsigned long long)i);
	/* the last one maps the page just below 4 GiB */
	cr_assert_eq(q(BOOT_PD_ADDR + 2047 * 8), 0xffe00083ull);
}

Test(boot, gdt_has_null_code64_data_and_busy_tss_descriptors)
{
	cr_assert_eq(boot_write_tables(&mem, &eb), 0, "%s", eb.msg);
	cr_assert_eq(q(BOOT_GDT_ADDR + 0x00), 0);
	cr_assert_eq(q(BOOT_GDT_ADDR + 0x08), 0);
	cr_assert_eq(q(BOOT_GDT_ADDR + BOOT_CS), 0x00af9b000000ffffull); /* L, P, DPL0, type 0xb */
	cr_assert_eq(q(BOOT_GDT_ADDR + BOOT_DS), 0x00cf93000000ffffull); /* G, DB, P, type 3 */
	cr_assert_eq(q(BOOT_GDT_ADDR + BOOT_TSS), 0x00008b0000000067ull); /* busy TSS, limit 0x67 */
	cr_assert_eq(q(BOOT_GDT_ADDR + BOOT_TSS + 8), 0);                /* base 63:32 */
}

Test(boot, idt_is_empty)
{
	memset(gpa_map_write(&mem, BOOT_IDT_ADDR, 16), 0xff, 16);
	cr_assert_eq(boot_write_tables(&mem, &eb), 0, "%s", eb.msg);
	cr_assert_eq(q(BOOT_IDT_ADDR), 0);
	cr_assert_eq(q(BOOT_IDT_ADDR + 8), 0);
}

Test(boot, rejects_ram_that_does_not_cover_the_tables)
{
	mem_free(&mem);
	tb_mem_init(&mem, 0xa000); /* ends inside the PDPT page */
	cr_assert_eq(boot_write_tables(&mem, &eb), -ENOMEM);
	cr_assert_not_null(strstr(eb.msg, "boot tables"), "%s", eb.msg);
}

Test(boot, entry_regs_follow_the_64bit_boot_protocol)
{
	struct kvm_regs r;

	memset(&r, 0xa5, sizeof(r));
	boot_entry_regs(&r, 0x1000000);
	cr_assert_eq(r.rip, 0x1000000);
	cr_assert_eq(r.rsi, BOOT_PARAMS_ADDR);
	cr_assert_eq(r.rflags, 0x2);
	cr_assert_eq(r.rsp, BOOT_STACK_TOP);
	cr_assert_eq(r.rbp, BOOT_STACK_TOP);
	cr_assert_eq(r.rax | r.rbx | r.rcx | r.rdx | r.rdi | r.r8 | r.r15, 0);
}

static void expect_flat(const struct kvm_segment *s, uint16_t sel, uint8_t type, uint8_t l,
			uint8_t db, const char *name)
{
	cr_assert_eq(s->base, 0, "%s.base", name);
	cr_assert_eq(s->limit, 0xffffffff, "%s.limit", name);
	cr_assert_eq(s->selector, sel, "%s.selector", name);
	cr_assert_eq(s->type, type, "%s.type", name);
	cr_assert_eq(s->present, 1, "%s.present", name);
	cr_assert_eq(s->dpl, 0, "%s.dpl", name);
	cr_assert_eq(s->db, db, "%s.db", name);
	cr_assert_eq(s->s, 1, "%s.s", name);
	cr_assert_eq(s->l, l, "%s.l", name);
	cr_assert_eq(s->g, 1, "%s.g", name);
	cr_assert_eq(s->unusable, 0, "%s.unusable", name);
}

Test(boot, entry_sregs_load_flat_64bit_segments)
{
	struct kvm_sregs s;

	memset(&s, 0x5a, sizeof(s));
	boot_entry_sregs(&s);
	expect_flat(&s.cs, BOOT_CS, 0xb, 1, 0, "cs");
	expect_flat(&s.ds, BOOT_DS, 0x3, 0, 1, "ds");
	expect_flat(&s.es, BOOT_DS, 0x3, 0, 1, "es");
	expect_flat(&s.fs, BOOT_DS, 0x3, 0, 1, "fs");
	expect_flat(&s.gs, BOOT_DS, 0x3, 0, 1, "gs");
	expect_flat(&s.ss, BOOT_DS, 0x3, 0, 1, "ss");
}

Test(boot, entry_sregs_load_a_usable_task_register)
{
	struct kvm_sregs s;

	memset(&s, 0x5a, sizeof(s));
	boot_entry_sregs(&s);
	cr_assert_eq(s.tr.selector, BOOT_TSS);
	cr_assert_eq(s.tr.base, 0);
	cr_assert_eq(s.tr.limit, 0x67);
	cr_assert_eq(s.tr.type, 0xb);
	cr_assert_eq(s.tr.present, 1);
	cr_assert_eq(s.tr.s, 0);
	cr_assert_eq(s.tr.g, 0);
	cr_assert_eq(s.tr.unusable, 0);
}

Test(boot, entry_sregs_enable_long_mode_paging)
{
	struct kvm_sregs s;

	memset(&s, 0, sizeof(s));
	s.apic_base = 0xfee00900;
	boot_entry_sregs(&s);
	cr_assert_eq(s.cr0, 0x80010033ull); /* PG WP NE ET MP PE */
	cr_assert_eq(s.cr3, BOOT_PML4_ADDR);
	cr_assert(s.cr4 & (1u << 5), "CR4.PAE");
	cr_assert_eq(s.cr4 & ~0x620ull, 0, "cr4 0x%llx", (unsigned long long)s.cr4);
	cr_assert_eq(s.efer, 0x500); /* LME | LMA, no NX */
	cr_assert_eq(s.gdt.base, BOOT_GDT_ADDR);
	cr_assert_eq(s.gdt.limit, 6 * 8 - 1);
	cr_assert_eq(s.idt.base, BOOT_IDT_ADDR);
	cr_assert_eq(s.idt.limit, 0);
	cr_assert_eq(s.apic_base, 0xfee00900, "fields KVM gave us stay");
}

/* Decodes a GDT descriptor the way the CPU would load it into a segment register. */
static void expect_matches_gdt(const struct kvm_segment *s, const char *name)
{
	uint64_t d = q(BOOT_GDT_ADDR + s->selector);
	uint32_t limit = (uint32_t)((d & 0xffff) | ((d >> 32) & 0xf0000));
	uint64_t base = ((d >> 16) & 0xffffff) | ((d >> 32) & 0xff000000);

	if ((d >> 55) & 1)
		limit = (limit << 12) | 0xfff;
	cr_assert_eq(s->base, base, "%s.base vs GDT", name);
	cr_assert_eq(s->limit, limit, "%s.limit vs GDT", name);
	cr_assert_eq(s->type, (d >> 40) & 0xf, "%s.type vs GDT", name);
	cr_assert_eq(s->s, (d >> 44) & 1, "%s.s vs GDT", name);
	cr_assert_eq(s->dpl, (d >> 45) & 3, "%s.dpl vs GDT", name);
	cr_assert_eq(s->present, (d >> 47) & 1, "%s.present vs GDT", name);
	cr_assert_eq(s->l, (d >> 53) & 1, "%s.l vs GDT", name);
	cr_assert_eq(s->db, (d >> 54) & 1, "%s.db vs GDT", name);
	cr_assert_eq(s->g, (d >> 55) & 1, "%s.g vs GDT", name);
}

Test(boot, entry_sregs_agree_with_the_gdt_in_memory)
{
	struct kvm_sregs s;

	memset(&s, 0, sizeof(s));
	cr_assert_eq(boot_write_tables(&mem, &eb), 0, "%s", eb.msg);
	boot_entry_sregs(&s);
	expect_matches_gdt(&s.cs, "cs");
	expect_matches_gdt(&s.ss, "ss");
	expect_matches_gdt(&s.ds, "ds");
	expect_matches_gdt(&s.tr, "tr");
	cr_assert_geq(s.gdt.limit, BOOT_TSS + 15, "the 16-byte TSS descriptor is inside the GDT");
}

/* ---- KVM: the entry state really runs ---------------------------------------------------------- */

/*
 * At 0x100000:
 *   movabs $0x1122334455667788, %rbx   (only decodes this way in 64-bit mode)
 *   mov 0x202(%rsi), %eax              (boot_params.hdr.header through rsi)
 *   push %rax ; pop %rcx               (the stack at BOOT_STACK_TOP works)
 *   out %eax, $0x80
 *   hlt
 */
static const uint8_t guest_code[] = {
	0x48, 0xbb, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
	0x8b, 0x86, 0x02, 0x02, 0x00, 0x00,
	0x50, 0x59,
	0xe7, 0x80,
	0xf4,
};

static int kvm_set_cpuid(int kvm, int vcpu)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + 256 * sizeof(c->entries[0]));
	int ret;

	c->nent = 256;
	ret = ioctl(kvm, KVM_GET_SUPPORTED_CPUID, c);
	if (ret == 0)
		ret = ioctl(vcpu, KVM_SET_CPUID2, c);
	free(c);
	return ret;
}

Test(boot, kvm_runs_from_entry_state_to_first_port_write, .timeout = 30)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_run *run;
	struct load_args a = { .cmdline = "ember" };
	struct boot_info bi;
	struct tb_elf_seg seg = { .paddr = 0x100000, .filesz = 0x1000, .memsz = 0x1000,
				  .flags = PF_R | PF_X };
	size_t len;
	uint8_t *img;
	int kvm, vm, vcpu, run_size;
	uint32_t port_data;

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		/* Criterion prints skip reasons only with --verbose: say it loudly */
		cr_log_info("SKIP boot::kvm_runs_from_entry_state_to_first_port_write: /dev/kvm: %s",
			    strerror(errno));
		cr_skip_test("/dev/kvm is not available (%s)", strerror(errno));
	}
	img = tb_build_elf(&seg, 1, 0x100000, &len);
	memcpy(img + tb_elf_phdr(img, 0)->p_offset, guest_code, sizeof(guest_code));
	a.kernel = img;
	a.kernel_len = len;
	cr_assert_eq(loader_load(&mem, &a, &bi, &eb), 0, "%s", eb.msg);

	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	cr_assert_geq(vm, 0, "KVM_CREATE_VM: %s", strerror(errno));
	cr_assert_eq(mem_register(&mem, vm, false, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ioctl(vm, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_ADDR), 0);
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	cr_assert_geq(vcpu, 0, "KVM_CREATE_VCPU: %s", strerror(errno));
	cr_assert_eq(kvm_set_cpuid(kvm, vcpu), 0, "CPUID: %s", strerror(errno));
	run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	cr_assert_neq(run, MAP_FAILED);

	cr_assert_eq(ioctl(vcpu, KVM_GET_SREGS, &sregs), 0);
	boot_entry_sregs(&sregs);
	cr_assert_eq(ioctl(vcpu, KVM_SET_SREGS, &sregs), 0, "KVM_SET_SREGS: %s", strerror(errno));
	boot_entry_regs(&regs, bi.entry);
	cr_assert_eq(ioctl(vcpu, KVM_SET_REGS, &regs), 0, "KVM_SET_REGS: %s", strerror(errno));

	cr_assert_eq(ioctl(vcpu, KVM_RUN, 0), 0, "KVM_RUN: %s", strerror(errno));
	cr_assert_eq(run->exit_reason, KVM_EXIT_IO, "exit reason %u (internal error suberror %u)",
		     run->exit_reason, run->internal.suberror);
	cr_assert_eq(run->io.port, 0x80);
	cr_assert_eq(run->io.size, 4);
	cr_assert_eq(run->io.direction, KVM_EXIT_IO_OUT);
	memcpy(&port_data, (uint8_t *)run + run->io.data_offset, 4);
	cr_assert_eq(port_data, 0x53726448, "the guest read \"HdrS\" from boot_params via rsi");

	cr_assert_eq(ioctl(vcpu, KVM_GET_REGS, &regs), 0);
	cr_assert_eq(regs.rbx, 0x1122334455667788ull, "64-bit mode");
	cr_assert_eq(regs.rcx, 0x53726448, "push/pop through the boot stack");
	cr_assert_eq(regs.rsp, BOOT_STACK_TOP);

	munmap(run, (size_t)run_size);
	close(vcpu);
	close(vm);
	close(kvm);
	free(img);
}
