/*
 * What the floors that build a VM from an ember snapshot share (floor_restore.c,
 * floor_reset.c): reading and decoding state.msgpack with libsnapfmt, mapping the
 * memory file MAP_PRIVATE under memslots, and setting VM and vCPU state with the
 * values and in the order of ember's src/arch/x86_64/{vm,cpu}_state.c. Standalone:
 * no libember. Define FLOOR_NAME (the program's name, for messages) before including.
 * Header-only and all static: every bench program is a single file.
 */
#ifndef EMBER_BENCH_FLOOR_VM_H
#define EMBER_BENCH_FLOOR_VM_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ember_abi.h"
#include "snapfmt.h"

#ifndef FLOOR_NAME
#error "define FLOOR_NAME before including floor_vm.h"
#endif

/* The addresses ember gives KVM (src/arch/x86_64/x86.h), restated. */
#define KVM_TSS         0xfffbd000ull
#define KVM_IDMAP       0xfffbc000ull
#define MSR_IA32_TSC    0x10u
#define MSRS_PER_IOCTL  255u
#define COM1_IIR        0x3fau
#define COM1_LSR        0x3fdu

static uint64_t t0_ns;

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int fail(const char *what)
{
	fprintf(stderr, FLOOR_NAME ": %s: %s\n", what, strerror(errno));
	return 1;
}

static int failx(const char *what)
{
	fprintf(stderr, FLOOR_NAME ": %s\n", what);
	return 1;
}

#define IOCTL(fd, req, arg)                      \
	do {                                     \
		if (ioctl(fd, req, arg) < 0)     \
			return fail(#req);       \
	} while (0)

/* ---- reading the snapshot ------------------------------------------------------ */

/* A guest read (a port IN, an MMIO load) before its first report: the UART idles (FIFO
 * on, transmitter empty), everything else reads as all ones. */
static void answer_read(struct kvm_run *run)
{
	uint8_t *data = (uint8_t *)run + run->io.data_offset;

	if (run->exit_reason == KVM_EXIT_MMIO) {
		memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
		return;
	}
	memset(data, 0xff, (size_t)run->io.size * run->io.count);
	if (run->io.port == COM1_IIR)
		data[0] = 0xc1;
	else if (run->io.port == COM1_LSR)
		data[0] = 0x60;
}

static int load_state(const char *dir, struct snap_state *st)
{
	struct snap_err se;
	struct stat sb;
	char path[4096];
	uint8_t *buf;
	size_t got = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/" SNAP_STATE_FILE, dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) < 0)
		return fail(path);
	buf = malloc((size_t)sb.st_size + 1);
	if (!buf)
		return failx("out of memory");
	while (got < (size_t)sb.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)sb.st_size - got);

		if (n <= 0)
			return fail("read state");
		got += (size_t)n;
	}
	close(fd);
	if (snap_state_decode(buf, got, st, &se)) {
		fprintf(stderr, FLOOR_NAME ": %s: %s\n", path, se.msg);
		return 1;
	}
	free(buf);
	if (st->memory.encoding != SNAP_ENC_RAW || st->memory.kind != SNAP_MEM_FULL)
		return failx("only full raw snapshots (the mmap path) have a floor");
	return 0;
}

/* flags: the memslots' (KVM_MEM_LOG_DIRTY_PAGES for a dirty log) */
static int map_memory(const char *dir, const struct snap_state *st, int vm, uint32_t flags,
		      uint8_t **mem)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, st->memory.file);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(path);
	*mem = mmap(NULL, st->memory.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE,
		    fd, 0);
	if (*mem == MAP_FAILED)
		return fail("mmap memory file");
	close(fd);
	for (uint32_t i = 0; i < st->vm.nr_regions; i++) {
		const struct snap_region *r = &st->vm.regions[i];
		struct kvm_userspace_memory_region slot = {
			.slot = i, .flags = flags, .guest_phys_addr = r->gpa, .memory_size = r->size,
			.userspace_addr = (uintptr_t)(*mem + r->file_offset),
		};

		IOCTL(vm, KVM_SET_USER_MEMORY_REGION, &slot);
	}
	return 0;
}

/* ---- VM and vCPU state, as ember's vm_state.c / cpu_state.c set them ----------- */

static void pic_from(struct kvm_pic_state *d, const struct snap_pic *s)
{
	*d = (struct kvm_pic_state){
		.last_irr = s->last_irr, .irr = s->irr, .imr = s->imr, .isr = s->isr,
		.priority_add = s->priority_add, .irq_base = s->irq_base,
		.read_reg_select = s->read_reg_select, .poll = s->poll,
		.special_mask = s->special_mask, .init_state = s->init_state,
		.auto_eoi = s->auto_eoi, .rotate_on_auto_eoi = s->rotate_on_auto_eoi,
		.special_fully_nested_mode = s->special_fully_nested_mode, .init4 = s->init4,
		.elcr = s->elcr, .elcr_mask = s->elcr_mask,
	};
}

static int set_vm_state(int vm, const struct snap_vm *in)
{
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
	struct kvm_irqchip chip;

	memset(&pit, 0, sizeof(pit));
	pit.flags = in->pit.flags;
	for (unsigned i = 0; i < SNAP_PIT_CHANNELS; i++) {
		const struct snap_pit_channel *s = &in->pit.channels[i];

		pit.channels[i] = (struct kvm_pit_channel_state){
			.count = s->count, .latched_count = s->latched_count,
			.count_latched = s->count_latched, .status_latched = s->status_latched,
			.status = s->status, .read_state = s->read_state,
			.write_state = s->write_state, .write_latch = s->write_latch,
			.rw_mode = s->rw_mode, .mode = s->mode, .bcd = s->bcd, .gate = s->gate,
			.count_load_time = s->count_load_time,
		};
	}
	IOCTL(vm, KVM_SET_PIT2, &pit);

	memset(&clock, 0, sizeof(clock));
	clock.clock = in->clock.clock;
	clock.flags = in->clock.flags & KVM_CLOCK_REALTIME; /* the only flag SET takes */
	clock.realtime = in->clock.realtime;
	IOCTL(vm, KVM_SET_CLOCK, &clock);

	memset(&chip, 0, sizeof(chip));
	chip.chip_id = KVM_IRQCHIP_PIC_MASTER;
	pic_from(&chip.chip.pic, &in->pic_master);
	IOCTL(vm, KVM_SET_IRQCHIP, &chip);
	memset(&chip, 0, sizeof(chip));
	chip.chip_id = KVM_IRQCHIP_PIC_SLAVE;
	pic_from(&chip.chip.pic, &in->pic_slave);
	IOCTL(vm, KVM_SET_IRQCHIP, &chip);
	memset(&chip, 0, sizeof(chip));
	chip.chip_id = KVM_IRQCHIP_IOAPIC;
	chip.chip.ioapic.base_address = in->ioapic.base_address;
	chip.chip.ioapic.ioregsel = in->ioapic.ioregsel;
	chip.chip.ioapic.id = in->ioapic.id;
	chip.chip.ioapic.irr = in->ioapic.irr;
	for (unsigned i = 0; i < SNAP_IOAPIC_PINS; i++)
		chip.chip.ioapic.redirtbl[i].bits = in->ioapic.redirtbl[i];
	IOCTL(vm, KVM_SET_IRQCHIP, &chip);
	return 0;
}

static void seg_from(struct kvm_segment *d, const struct snap_segment *s)
{
	*d = (struct kvm_segment){
		.base = s->base, .limit = s->limit, .selector = s->selector, .type = s->type,
		.present = s->present, .dpl = s->dpl, .db = s->db, .s = s->s, .l = s->l,
		.g = s->g, .avl = s->avl, .unusable = s->unusable,
	};
}

static void sregs_from(struct kvm_sregs *d, const struct snap_sregs *s)
{
	memset(d, 0, sizeof(*d));
	seg_from(&d->cs, &s->cs);
	seg_from(&d->ds, &s->ds);
	seg_from(&d->es, &s->es);
	seg_from(&d->fs, &s->fs);
	seg_from(&d->gs, &s->gs);
	seg_from(&d->ss, &s->ss);
	seg_from(&d->tr, &s->tr);
	seg_from(&d->ldt, &s->ldt);
	d->gdt.base = s->gdt.base;
	d->gdt.limit = s->gdt.limit;
	d->idt.base = s->idt.base;
	d->idt.limit = s->idt.limit;
	d->cr0 = s->cr0;
	d->cr2 = s->cr2;
	d->cr3 = s->cr3;
	d->cr4 = s->cr4;
	d->cr8 = s->cr8;
	d->efer = s->efer;
	d->apic_base = s->apic_base;
	memcpy(d->interrupt_bitmap, s->interrupt_bitmap, sizeof(d->interrupt_bitmap));
}

static void regs_from(struct kvm_regs *d, const struct snap_regs *s)
{
	*d = (struct kvm_regs){
		.rax = s->rax, .rbx = s->rbx, .rcx = s->rcx, .rdx = s->rdx, .rsi = s->rsi,
		.rdi = s->rdi, .rsp = s->rsp, .rbp = s->rbp, .r8 = s->r8, .r9 = s->r9,
		.r10 = s->r10, .r11 = s->r11, .r12 = s->r12, .r13 = s->r13, .r14 = s->r14,
		.r15 = s->r15, .rip = s->rip, .rflags = s->rflags,
	};
}

static void events_from(struct kvm_vcpu_events *d, const struct snap_events *s)
{
	memset(d, 0, sizeof(*d));
	d->exception.injected = s->exception.injected;
	d->exception.nr = s->exception.nr;
	d->exception.has_error_code = s->exception.has_error_code;
	d->exception.pending = s->exception.pending;
	d->exception.error_code = s->exception.error_code;
	d->interrupt.injected = s->interrupt.injected;
	d->interrupt.nr = s->interrupt.nr;
	d->interrupt.soft = s->interrupt.soft;
	d->interrupt.shadow = s->interrupt.shadow;
	d->nmi.injected = s->nmi.injected;
	d->nmi.pending = s->nmi.pending;
	d->nmi.masked = s->nmi.masked;
	d->sipi_vector = s->sipi_vector;
	d->flags = s->flags;
	d->smi.smm = s->smi.smm;
	d->smi.pending = s->smi.pending;
	d->smi.smm_inside_nmi = s->smi.smm_inside_nmi;
	d->smi.latched_init = s->smi.latched_init;
	d->triple_fault.pending = s->triple_fault_pending;
	d->exception_has_payload = s->exception_has_payload;
	d->exception_payload = s->exception_payload;
}

/* Scratch big enough for any ioctl argument: one vCPU's state is set at a time. */
static union {
	struct kvm_cpuid2 cpuid;
	struct kvm_msrs msrs;
	uint8_t bytes[SNAP_XSAVE_MAX]; /* KVM_SET_XSAVE reads KVM's size, not ours */
} scratch;
_Static_assert(sizeof(struct kvm_cpuid2) + SNAP_MAX_CPUID * sizeof(struct kvm_cpuid_entry2) <=
	       SNAP_XSAVE_MAX, "CPUID fits the scratch");
_Static_assert(sizeof(struct kvm_msrs) + MSRS_PER_IOCTL * sizeof(struct kvm_msr_entry) <=
	       SNAP_XSAVE_MAX, "MSRs fit the scratch");

static int set_cpuid(int fd, const struct snap_vcpu *in)
{
	memset(&scratch, 0, sizeof(scratch));
	scratch.cpuid.nent = in->nr_cpuid;
	for (uint32_t i = 0; i < in->nr_cpuid; i++) {
		const struct snap_cpuid_entry *s = &in->cpuid[i];

		scratch.cpuid.entries[i] = (struct kvm_cpuid_entry2){
			.function = s->function, .index = s->index, .flags = s->flags,
			.eax = s->eax, .ebx = s->ebx, .ecx = s->ecx, .edx = s->edx,
		};
	}
	IOCTL(fd, KVM_SET_CPUID2, &scratch.cpuid);
	return 0;
}

/* IA32_TSC first, from snap_vcpu.tsc, then the rest, as ember's restore_msrs. */
static int set_msrs(int fd, const struct snap_vcpu *in)
{
	uint32_t i = 0;
	bool tsc_done = false;

	while (i < in->nr_msrs || !tsc_done) {
		struct kvm_msr_entry *e = scratch.msrs.entries;
		uint32_t n = 0;
		int set;

		memset(&scratch.msrs, 0, sizeof(scratch.msrs));
		if (!tsc_done) {
			e[n++] = (struct kvm_msr_entry){ .index = MSR_IA32_TSC, .data = in->tsc };
			tsc_done = true;
		}
		for (; i < in->nr_msrs && n < MSRS_PER_IOCTL; i++)
			if (in->msrs[i].index != MSR_IA32_TSC)
				e[n++] = (struct kvm_msr_entry){ .index = in->msrs[i].index,
								 .data = in->msrs[i].value };
		scratch.msrs.nmsrs = n;
		set = ioctl(fd, KVM_SET_MSRS, &scratch.msrs);
		if (set < 0)
			return fail("KVM_SET_MSRS");
		if ((uint32_t)set != n)
			return failx("KVM_SET_MSRS refused an MSR of the snapshot");
	}
	return 0;
}

/* cpuid: false for a vCPU that ran already (KVM refuses CPUID changes then; ember's
 * reset skips it too) */
static int set_vcpu_state(int fd, const struct snap_vcpu *in, bool cpuid)
{
	struct kvm_mp_state mp = { .mp_state = in->mp_state };
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs dbg;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events events;

	if (cpuid && set_cpuid(fd, in))
		return 1;
	IOCTL(fd, KVM_SET_MP_STATE, &mp);
	regs_from(&regs, &in->regs);
	IOCTL(fd, KVM_SET_REGS, &regs);
	sregs_from(&sregs, &in->sregs);
	IOCTL(fd, KVM_SET_SREGS, &sregs);
	memset(&scratch, 0, sizeof(scratch));
	memcpy(scratch.bytes, in->xsave, in->xsave_len);
	IOCTL(fd, KVM_SET_XSAVE, scratch.bytes);
	memset(&xcrs, 0, sizeof(xcrs));
	xcrs.nr_xcrs = in->nr_xcrs < KVM_MAX_XCRS ? in->nr_xcrs : KVM_MAX_XCRS;
	for (uint32_t i = 0; i < xcrs.nr_xcrs; i++) {
		xcrs.xcrs[i].xcr = in->xcrs[i].xcr;
		xcrs.xcrs[i].value = in->xcrs[i].value;
	}
	IOCTL(fd, KVM_SET_XCRS, &xcrs);
	memset(&dbg, 0, sizeof(dbg));
	memcpy(dbg.db, in->debugregs.db, sizeof(dbg.db));
	dbg.dr6 = in->debugregs.dr6;
	dbg.dr7 = in->debugregs.dr7;
	dbg.flags = in->debugregs.flags;
	IOCTL(fd, KVM_SET_DEBUGREGS, &dbg);
	memcpy(lapic.regs, in->lapic, sizeof(lapic.regs));
	IOCTL(fd, KVM_SET_LAPIC, &lapic);
	if (set_msrs(fd, in))
		return 1;
	events_from(&events, &in->events);
	IOCTL(fd, KVM_SET_VCPU_EVENTS, &events);
	return 0;
}

#endif
