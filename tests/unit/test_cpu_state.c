/*
 * vCPU state save/restore (cpu_state.c) on the real KVM, in the style of the KVM
 * selftests' state_test: run a small guest to a sync point, save every vCPU and the VM,
 * push the state through the snapshot format (encode + decode), restore it into a fresh
 * VM with the same config and a copy of guest RAM, save again and compare field by
 * field, then let the restored guest finish and check what it computed.
 *
 * The guests are a few dozen instructions assembled into this binary (below) and placed
 * in guest RAM by the test, entered through ember's boot-entry state. Ring-0 code is
 * emulated slowly on this platform, so anything with a loop runs in ring 3.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "arch/x86_64/x86.h"
#include "ioctl_rec.h"
#include "snapfmt.h"
#include "testlib.h"

/* Guest-physical layout (free low RAM is [0x30000, 0x9fc00), see x86.h). Kept free of
 * C suffixes: the guest code below pastes them into assembly. */
#define G_IDT        0x30000
#define G_UCALL_SYNC 0x31000
#define G_UCALL_DONE 0x31200
#define G_DATA       0x32000 /* patterns the guest loads */
#define G_DUMP       0x33000 /* what the guest stores after the restore */
#define G_KVMCLOCK   0x34000
#define G_FLAG       0x35000
#define G_TSS        0x40000 /* with a full I/O bitmap: see enter_ring3 */
#define G_STACK      0x48000
#define G_AP_STACK   0x49000
#define G_CODE       0x100000
#define G_AP_CODE    0x101000
#define G_RAM        (4 * MiB)

#define XSTR_(x) #x
#define XSTR(x) XSTR_(x)

#define TIMER_VECTOR 0x40
#define CR4_OSXSAVE (1ull << 18)
#define CPUID1_ECX_XSAVE (1u << 26)
#define CPUID1_ECX_AVX (1u << 28)
#define XCR0_X87_SSE_AVX 0x7ull
#define LAPIC_TMCCT 0x390
#define LAPIC_LVTT 0x320
#define MSR_TSC 0x10u
#define MSR_TSC_DEADLINE 0x6e0u

/* ---- guest code ----------------------------------------------------------------- */

#define UCALL(addr) "mov $" XSTR(addr) ", %eax\n\tmov $0x5e0, %dx\n\tout %eax, %dx\n\t"

/*
 * Ring 3, one vCPU: loads x87 (control word, three stack values), MXCSR, xmm0-15 and
 * ten general registers, syncs, and after the restore stores them all to G_DUMP.
 */
__asm__(".pushsection .rodata.guests, \"a\"\n"
	".code64\n"
	".globl ring3_fpu_start, ring3_fpu_end\n"
	"ring3_fpu_start:\n\t"
	"movdqu " XSTR(G_DATA) "+0x00, %xmm0\n\t"  "movdqu " XSTR(G_DATA) "+0x10, %xmm1\n\t"
	"movdqu " XSTR(G_DATA) "+0x20, %xmm2\n\t"  "movdqu " XSTR(G_DATA) "+0x30, %xmm3\n\t"
	"movdqu " XSTR(G_DATA) "+0x40, %xmm4\n\t"  "movdqu " XSTR(G_DATA) "+0x50, %xmm5\n\t"
	"movdqu " XSTR(G_DATA) "+0x60, %xmm6\n\t"  "movdqu " XSTR(G_DATA) "+0x70, %xmm7\n\t"
	"movdqu " XSTR(G_DATA) "+0x80, %xmm8\n\t"  "movdqu " XSTR(G_DATA) "+0x90, %xmm9\n\t"
	"movdqu " XSTR(G_DATA) "+0xa0, %xmm10\n\t" "movdqu " XSTR(G_DATA) "+0xb0, %xmm11\n\t"
	"movdqu " XSTR(G_DATA) "+0xc0, %xmm12\n\t" "movdqu " XSTR(G_DATA) "+0xd0, %xmm13\n\t"
	"movdqu " XSTR(G_DATA) "+0xe0, %xmm14\n\t" "movdqu " XSTR(G_DATA) "+0xf0, %xmm15\n\t"
	"fninit\n\t"
	"fldcw " XSTR(G_DATA) "+0x100\n\t"
	"fldpi\n\t" "fld1\n\t" "fldl2t\n\t"
	"ldmxcsr " XSTR(G_DATA) "+0x104\n\t"
	"movabs $0x1111111111111111, %rbx\n\t" "movabs $0x2222222222222222, %rbp\n\t"
	"movabs $0x3333333333333333, %rsi\n\t" "movabs $0x4444444444444444, %rdi\n\t"
	"movabs $0x8888888888888888, %r8\n\t"  "movabs $0x9999999999999999, %r9\n\t"
	"movabs $0xaaaaaaaaaaaaaaaa, %r10\n\t" "movabs $0xbbbbbbbbbbbbbbbb, %r11\n\t"
	"movabs $0xcccccccccccccccc, %r12\n\t" "movabs $0xdddddddddddddddd, %r13\n\t"
	UCALL(G_UCALL_SYNC)
	"movdqu %xmm0, " XSTR(G_DUMP) "+0x00\n\t"  "movdqu %xmm1, " XSTR(G_DUMP) "+0x10\n\t"
	"movdqu %xmm2, " XSTR(G_DUMP) "+0x20\n\t"  "movdqu %xmm3, " XSTR(G_DUMP) "+0x30\n\t"
	"movdqu %xmm4, " XSTR(G_DUMP) "+0x40\n\t"  "movdqu %xmm5, " XSTR(G_DUMP) "+0x50\n\t"
	"movdqu %xmm6, " XSTR(G_DUMP) "+0x60\n\t"  "movdqu %xmm7, " XSTR(G_DUMP) "+0x70\n\t"
	"movdqu %xmm8, " XSTR(G_DUMP) "+0x80\n\t"  "movdqu %xmm9, " XSTR(G_DUMP) "+0x90\n\t"
	"movdqu %xmm10, " XSTR(G_DUMP) "+0xa0\n\t" "movdqu %xmm11, " XSTR(G_DUMP) "+0xb0\n\t"
	"movdqu %xmm12, " XSTR(G_DUMP) "+0xc0\n\t" "movdqu %xmm13, " XSTR(G_DUMP) "+0xd0\n\t"
	"movdqu %xmm14, " XSTR(G_DUMP) "+0xe0\n\t" "movdqu %xmm15, " XSTR(G_DUMP) "+0xf0\n\t"
	"fnstcw " XSTR(G_DUMP) "+0x100\n\t"
	"stmxcsr " XSTR(G_DUMP) "+0x104\n\t"
	"fstpt " XSTR(G_DUMP) "+0x110\n\t" "fstpt " XSTR(G_DUMP) "+0x120\n\t"
	"fstpt " XSTR(G_DUMP) "+0x130\n\t"
	"mov %rbx, " XSTR(G_DUMP) "+0x140\n\t" "mov %rbp, " XSTR(G_DUMP) "+0x148\n\t"
	"mov %rsi, " XSTR(G_DUMP) "+0x150\n\t" "mov %rdi, " XSTR(G_DUMP) "+0x158\n\t"
	"mov %r8, " XSTR(G_DUMP) "+0x160\n\t"  "mov %r9, " XSTR(G_DUMP) "+0x168\n\t"
	"mov %r10, " XSTR(G_DUMP) "+0x170\n\t" "mov %r11, " XSTR(G_DUMP) "+0x178\n\t"
	"mov %r12, " XSTR(G_DUMP) "+0x180\n\t" "mov %r13, " XSTR(G_DUMP) "+0x188\n\t"
	UCALL(G_UCALL_DONE)
	"1: jmp 1b\n"
	"ring3_fpu_end:\n"
	".popsection");

/* Ring 3: ymm0-15 (upper halves included) from G_DATA, sync, store them to G_DUMP. */
__asm__(".pushsection .rodata.guests, \"a\"\n"
	".code64\n"
	".globl ring3_avx_start, ring3_avx_end\n"
	"ring3_avx_start:\n\t"
	".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n\t"
	"vmovdqu " XSTR(G_DATA) "+\\n*32, %ymm\\n\n\t"
	".endr\n\t"
	UCALL(G_UCALL_SYNC)
	".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n\t"
	"vmovdqu %ymm\\n, " XSTR(G_DUMP) "+\\n*32\n\t"
	".endr\n\t"
	UCALL(G_UCALL_DONE)
	"1: jmp 1b\n"
	"ring3_avx_end:\n"
	".popsection");

/* Ring 3, for an AP: spins, counting in r14 and publishing the count at G_FLAG. */
__asm__(".pushsection .rodata.guests, \"a\"\n"
	".code64\n"
	".globl ring3_spin_start, ring3_spin_end\n"
	"ring3_spin_start:\n\t"
	"movabs $0x7777777777777777, %r15\n\t"
	"xor %r14d, %r14d\n"
	"1:\tinc %r14\n\t"
	"mov %r14, " XSTR(G_FLAG) "\n\t"
	"pause\n\t"
	"jmp 1b\n"
	"ring3_spin_end:\n"
	".popsection");

/* Ring 3, for the BSP: waits until the AP has run (G_FLAG != 0), syncs, finishes. */
__asm__(".pushsection .rodata.guests, \"a\"\n"
	".code64\n"
	".globl ring3_wait_start, ring3_wait_end\n"
	"ring3_wait_start:\n"
	"1:\tpause\n\t"
	"cmpq $0, " XSTR(G_FLAG) "\n\t"
	"je 1b\n\t"
	UCALL(G_UCALL_SYNC)
	UCALL(G_UCALL_DONE)
	"2: jmp 2b\n"
	"ring3_wait_end:\n"
	".popsection");

/*
 * Ring 0: writes the syscall/sysenter MSRs, PAT, a fixed MTRR and kvmclock, arms the
 * LAPIC timer (rdi = 0: one-shot with TMICT = rsi; rdi = 1: TSC-deadline at now + rsi
 * cycles), syncs, then waits with sti; hlt until the timer interrupt has bumped r12 and
 * reports DONE. The handler at ring0_timer_handler EOIs through the xAPIC page.
 */
__asm__(".pushsection .rodata.guests, \"a\"\n"
	".code64\n"
	".globl ring0_timer_start, ring0_timer_handler, ring0_timer_end\n"
	"ring0_timer_start:\n\t"
	"mov $0xc0000082, %ecx\n\t" "mov $0x81000000, %eax\n\t" "mov $0xffffffff, %edx\n\t" "wrmsr\n\t"
	"mov $0xc0000083, %ecx\n\t" "mov $0x81000100, %eax\n\t" "wrmsr\n\t"
	"mov $0xc0000081, %ecx\n\t" "xor %eax, %eax\n\t" "mov $0x00230010, %edx\n\t" "wrmsr\n\t"
	"mov $0xc0000084, %ecx\n\t" "mov $0x47700, %eax\n\t" "xor %edx, %edx\n\t" "wrmsr\n\t"
	"mov $0xc0000102, %ecx\n\t" "mov $0x00001000, %eax\n\t" "mov $0xffff8880, %edx\n\t" "wrmsr\n\t"
	"mov $0x174, %ecx\n\t" "mov $0x10, %eax\n\t" "xor %edx, %edx\n\t" "wrmsr\n\t"
	"mov $0x175, %ecx\n\t" "mov $0x01234000, %eax\n\t" "wrmsr\n\t"
	"mov $0x176, %ecx\n\t" "mov $0x81000200, %eax\n\t" "mov $0xffffffff, %edx\n\t" "wrmsr\n\t"
	"mov $0x277, %ecx\n\t" "mov $0x00070106, %eax\n\t" "mov $0x00070106, %edx\n\t" "wrmsr\n\t"
	"mov $0x250, %ecx\n\t" "mov $0x06060606, %eax\n\t" "mov $0x06060606, %edx\n\t" "wrmsr\n\t"
	"mov $0x4b564d01, %ecx\n\t" "mov $" XSTR(G_KVMCLOCK) "+1, %eax\n\t" "xor %edx, %edx\n\t"
	"wrmsr\n\t"
	"mov $0xfee00000, %ebx\n\t"
	"movl $0x1ff, 0xf0(%rbx)\n\t"              /* SVR: software enable */
	"movl $0xb, 0x3e0(%rbx)\n\t"               /* TDCR: divide by 1 */
	"test %edi, %edi\n\t"
	"jnz 1f\n\t"
	"movl $" XSTR(TIMER_VECTOR) ", 0x320(%rbx)\n\t"   /* LVTT one-shot */
	"movl %esi, 0x380(%rbx)\n\t"               /* TMICT */
	"jmp 2f\n"
	"1:\tmovl $(" XSTR(TIMER_VECTOR) " | 0x40000), 0x320(%rbx)\n\t" /* LVTT TSC-deadline */
	"rdtsc\n\t" "shl $32, %rdx\n\t" "or %rdx, %rax\n\t" "add %rsi, %rax\n\t"
	"mov %rax, %rdx\n\t" "shr $32, %rdx\n\t" "mov $0x6e0, %ecx\n\t" "wrmsr\n"
	"2:\txor %r12d, %r12d\n\t"
	UCALL(G_UCALL_SYNC)
	"3:\tsti\n\t" "hlt\n\t" "cli\n\t"
	"test %r12, %r12\n\t"
	"jz 3b\n\t"
	UCALL(G_UCALL_DONE)
	"4: jmp 4b\n"
	"ring0_timer_handler:\n\t"
	"inc %r12\n\t"
	"movl $0, 0xb0(%rbx)\n\t"                  /* EOI */
	"iretq\n"
	"ring0_timer_end:\n"
	".popsection");

extern const uint8_t ring3_fpu_start[], ring3_fpu_end[];
extern const uint8_t ring3_avx_start[], ring3_avx_end[];
extern const uint8_t ring3_spin_start[], ring3_spin_end[];
extern const uint8_t ring3_wait_start[], ring3_wait_end[];
extern const uint8_t ring0_timer_start[], ring0_timer_handler[], ring0_timer_end[];

/* ---- the VMs ------------------------------------------------------------------- */

static struct {
	struct vm *vm;
	struct snap_state saved, again;
} fx;

static void fx_fini(void)
{
	vm_destroy(fx.vm);
	snap_state_free(&fx.saved);
	snap_state_free(&fx.again);
	memset(&fx, 0, sizeof(fx));
}

static struct vm *vm_from_cfg(const struct vm_config *cfg)
{
	struct errbuf eb = { "" };
	struct vm *vm;

	if (access("/dev/kvm", R_OK | W_OK) != 0)
		cr_skip_test("no /dev/kvm");
	cr_assert_eq(vm_create(&vm, cfg, &eb), 0, "vm_create: %s", eb.msg);
	return vm;
}

static struct vm *vm_new(unsigned nr_vcpus, uint64_t timeout_ms)
{
	struct vm_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.mem_bytes = G_RAM;
	cfg.nr_vcpus = nr_vcpus;
	cfg.console = CONSOLE_NONE;
	cfg.stop_on_sync = true;
	cfg.timeout_ms = timeout_ms;
	return vm_from_cfg(&cfg);
}

static void put_ucall(struct vm *vm, uint64_t gpa, uint32_t cmd)
{
	struct ember_ucall uc;

	memset(&uc, 0, sizeof(uc));
	uc.cmd = cmd;
	uc.args[0] = 1;
	cr_assert_eq(gpa_write(&vm->mem, gpa, &uc, sizeof(uc)), 0);
}

/* ember's boot tables with the user bit on every paging entry, so ring 3 may use them. */
static void guest_env_init(struct vm *vm)
{
	struct errbuf eb = { "" };
	uint64_t *pml4 = gpa_map_write(&vm->mem, BOOT_PML4_ADDR, PAGE_SIZE);
	uint64_t *pdpt = gpa_map_write(&vm->mem, BOOT_PDPT_ADDR, PAGE_SIZE);
	uint64_t *pd = gpa_map_write(&vm->mem, BOOT_PD_ADDR, BOOT_PD_PAGES * PAGE_SIZE);

	cr_assert_eq(boot_write_tables(&vm->mem, &eb), 0, "%s", eb.msg);
	pml4[0] |= 4;
	for (unsigned i = 0; i < BOOT_PD_PAGES; i++)
		pdpt[i] |= 4;
	for (unsigned i = 0; i < BOOT_PD_PAGES * 512; i++)
		pd[i] |= 4;
	put_ucall(vm, G_UCALL_SYNC, EMBER_UCALL_SYNC);
	put_ucall(vm, G_UCALL_DONE, EMBER_UCALL_DONE);
}

static void load_code(struct vm *vm, uint64_t gpa, const uint8_t *start, const uint8_t *end)
{
	cr_assert_eq(gpa_write(&vm->mem, gpa, start, (uint64_t)(end - start)), 0);
}

static void enter_ring0(struct vcpu *v, uint64_t rip)
{
	struct errbuf eb = { "" };

	cr_assert_eq(x86_vcpu_set_entry(v, rip, &eb), 0, "%s", eb.msg);
}

#define TSS_IOMAP_OFF 0x68u
#define TSS_IOMAP_LEN 0x2000u /* one bit per port, all 64K */

/*
 * Ring 3 straight from the host: DPL-3 segments in the registers (no GDT entries
 * needed as nothing reloads them) and IOPL 3. This platform still consults the TSS I/O
 * bitmap for ring-3 port I/O (PLATFORM.md), so TR points at a TSS whose bitmap allows
 * every port.
 */
static void enter_ring3(struct vcpu *v, uint64_t rip, uint64_t rsp)
{
	struct kvm_sregs s;
	struct kvm_regs r;
	struct kvm_segment *data[] = { &s.ds, &s.es, &s.fs, &s.gs, &s.ss };
	uint16_t iomap = TSS_IOMAP_OFF;
	uint8_t end = 0xff;

	cr_assert_eq(gpa_write(&v->vm->mem, G_TSS + 0x66, &iomap, sizeof(iomap)), 0);
	cr_assert_eq(gpa_write(&v->vm->mem, G_TSS + TSS_IOMAP_OFF + TSS_IOMAP_LEN, &end, 1), 0);
	enter_ring0(v, rip);
	cr_assert_eq(ioctl(v->fd, KVM_GET_SREGS, &s), 0);
	s.tr.base = G_TSS;
	s.tr.limit = TSS_IOMAP_OFF + TSS_IOMAP_LEN;
	s.cs.selector = 0x23;
	s.cs.dpl = 3;
	for (unsigned i = 0; i < ARRAY_SIZE(data); i++) {
		data[i]->selector = 0x1b;
		data[i]->dpl = 3;
	}
	cr_assert_eq(ioctl(v->fd, KVM_SET_SREGS, &s), 0, "KVM_SET_SREGS: %s", strerror(errno));
	cr_assert_eq(ioctl(v->fd, KVM_GET_REGS, &r), 0);
	r.rsp = rsp;
	r.rflags = 0x3002; /* IOPL 3 (port I/O from ring 3), IF off */
	cr_assert_eq(ioctl(v->fd, KVM_SET_REGS, &r), 0);
}

static void set_mp_state(struct vcpu *v, uint32_t state)
{
	struct kvm_mp_state mp = { .mp_state = state };

	cr_assert_eq(ioctl(v->fd, KVM_SET_MP_STATE, &mp), 0, "%s", strerror(errno));
}

static void expect_stop(struct vm *vm, enum vm_stop_reason want)
{
	enum vm_stop_reason got = vm_run(vm);

	cr_assert_eq(got, want, "vm_run stopped with %s, wanted %s: %s", vm_stop_reason_name(got),
		     vm_stop_reason_name(want), vm->stop_msg);
}

static void save_all(struct vm *vm, struct snap_state *st)
{
	struct errbuf eb = { "" };
	struct snap_err se = { "" };

	cr_assert_eq(snap_state_init(st, &se), 0, "%s", se.msg);
	x86_host_cpu_info(&st->header.cpu);
	cr_assert_eq(snap_state_set_vcpus(st, vm->nr_vcpus, &se), 0, "%s", se.msg);
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		cr_assert_eq(x86_vcpu_save(&vm->vcpus[i], &st->vcpus[i], &eb), 0, "%s", eb.msg);
	cr_assert_eq(x86_vm_save(vm, &st->vm, &eb), 0, "%s", eb.msg);
	st->vm.nr_regions = vm->mem.nr_regions;
	for (unsigned i = 0; i < vm->mem.nr_regions; i++) {
		st->vm.regions[i].gpa = vm->mem.regions[i].gpa;
		st->vm.regions[i].size = vm->mem.regions[i].size;
		st->vm.regions[i].file_offset = vm->mem.regions[i].offset;
	}
	st->memory.size = vm->mem.size;
}

/* Through the file format and back, as a real restore would read it. */
static void reencode(struct snap_state *st)
{
	struct snap_err se = { "" };
	struct snap_state copy;
	uint8_t *buf;
	size_t len;

	cr_assert_eq(snap_state_encode(st, &buf, &len, &se), 0, "encode: %s", se.msg);
	cr_assert_eq(snap_state_decode(buf, len, &copy, &se), 0, "decode: %s", se.msg);
	free(buf);
	snap_state_free(st);
	*st = copy;
}

static void restore_all(struct vm *vm, const struct snap_state *st)
{
	struct errbuf eb = { "" };
	struct kvm_cpuid2 *host;

	cr_assert_eq(x86_host_cpuid(vm, &host, &eb), 0, "%s", eb.msg);
	cr_assert_eq(x86_check_snapshot_cpu(st, host, &eb), 0, "%s", eb.msg);
	free(host);
	cr_assert_eq(x86_vm_restore_prepare(vm, &st->vm, &eb), 0, "%s", eb.msg);
	for (unsigned i = 0; i < st->nr_vcpus; i++)
		cr_assert_eq(x86_vcpu_restore(&vm->vcpus[st->vcpus[i].id], &st->vcpus[i], &eb), 0,
			     "%s", eb.msg);
	cr_assert_eq(x86_vm_restore(vm, &st->vm, &eb), 0, "%s", eb.msg);
}

/*
 * The state_test step: save fx.vm into fx.saved, restore into a fresh VM with the same
 * config and a copy of RAM (which replaces fx.vm), save that into fx.again.
 */
static void snapshot_and_restore(uint64_t new_timeout_ms)
{
	struct vm *old = fx.vm, *vm;
	struct vm_config cfg = old->cfg;

	snap_state_free(&fx.saved);
	snap_state_free(&fx.again);
	save_all(old, &fx.saved);
	reencode(&fx.saved);
	cfg.timeout_ms = new_timeout_ms;
	vm = vm_from_cfg(&cfg);
	cr_assert_eq(vm->mem.size, old->mem.size);
	memcpy(vm->mem.base, old->mem.base, old->mem.size);
	vm_destroy(old);
	fx.vm = vm;
	restore_all(vm, &fx.saved);
	save_all(vm, &fx.again);
}

static void compare_states(void)
{
	cr_assert_eq(fx.saved.nr_vcpus, fx.again.nr_vcpus);
	for (uint32_t i = 0; i < fx.saved.nr_vcpus; i++)
		snapt_compare_vcpu(&fx.saved.vcpus[i], &fx.again.vcpus[i]);
	cr_expect_geq(fx.again.vm.clock.clock, fx.saved.vm.clock.clock, "kvmclock went back");
}

static uint32_t lapic_reg(const struct snap_vcpu *v, unsigned off)
{
	uint32_t x;

	memcpy(&x, &v->lapic[off], sizeof(x));
	return x;
}

static const struct snap_msr *find_msr(const struct snap_vcpu *v, uint32_t index)
{
	for (uint32_t i = 0; i < v->nr_msrs; i++)
		if (v->msrs[i].index == index)
			return &v->msrs[i];
	return NULL;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- x87 / SSE / general registers ------------------------------------------------ */

struct fpu_dump {
	uint8_t xmm[16][16];
	uint16_t fcw;
	uint16_t pad0;
	uint32_t mxcsr;
	uint8_t pad1[8];
	uint8_t st[3][16];      /* fstpt: 10 bytes each, 16 apart */
	uint64_t gpr[10];       /* rbx rbp rsi rdi r8 r9 r10 r11 r12 r13 */
};

static void x87_constants(uint8_t out[3][16])
{
	memset(out, 0, 3 * 16);
	/* What the guest pops: log2(10), 1, pi (loaded with round-to-nearest). */
	__asm__ volatile("fldl2t\n\tfstpt %0\n\tfld1\n\tfstpt %1\n\tfldpi\n\tfstpt %2"
			 : "=m"(*(uint8_t(*)[10])out[0]), "=m"(*(uint8_t(*)[10])out[1]),
			   "=m"(*(uint8_t(*)[10])out[2]));
}

Test(cpu_state, x87_sse_and_gprs_survive_restore_and_guest_finishes, .fini = fx_fini)
{
	uint8_t pattern[0x110];
	uint16_t fcw = 0x027f;       /* 53-bit precision: not the reset value 0x037f */
	uint32_t mxcsr = 0x3f80;     /* round down: not the reset value 0x1f80 */
	struct fpu_dump d;
	uint8_t st[3][16];
	static const uint64_t gpr[10] = {
		0x1111111111111111, 0x2222222222222222, 0x3333333333333333, 0x4444444444444444,
		0x8888888888888888, 0x9999999999999999, 0xaaaaaaaaaaaaaaaa, 0xbbbbbbbbbbbbbbbb,
		0xcccccccccccccccc, 0xdddddddddddddddd,
	};

	fx.vm = vm_new(1, 10000);
	guest_env_init(fx.vm);
	for (unsigned i = 0; i < 256; i++)
		pattern[i] = (uint8_t)(i * 37 + 11);
	memcpy(&pattern[0x100], &fcw, sizeof(fcw));
	memcpy(&pattern[0x104], &mxcsr, sizeof(mxcsr));
	cr_assert_eq(gpa_write(&fx.vm->mem, G_DATA, pattern, sizeof(pattern)), 0);
	load_code(fx.vm, G_CODE, ring3_fpu_start, ring3_fpu_end);
	enter_ring3(&fx.vm->vcpus[0], G_CODE, G_STACK);
	expect_stop(fx.vm, VM_STOP_SYNC);

	snapshot_and_restore(10000);
	compare_states();
	/* The x87 control word and MXCSR live in the legacy XSAVE area. */
	cr_assert_eq(fx.saved.vcpus[0].xsave[0] | fx.saved.vcpus[0].xsave[1] << 8, fcw);
	cr_assert_eq(memcmp(&fx.saved.vcpus[0].xsave[24], &mxcsr, 4), 0);

	/* The restored guest stores what it loaded before the snapshot. */
	expect_stop(fx.vm, VM_STOP_DONE);
	cr_assert_eq(gpa_read(&fx.vm->mem, G_DUMP, &d, sizeof(d)), 0);
	for (unsigned i = 0; i < 16; i++)
		cr_expect_eq(memcmp(d.xmm[i], &pattern[i * 16], 16), 0, "xmm%u differs", i);
	cr_expect_eq(d.fcw, fcw, "x87 control word 0x%x", d.fcw);
	cr_expect_eq(d.mxcsr, mxcsr, "MXCSR 0x%x", d.mxcsr);
	x87_constants(st);
	for (unsigned i = 0; i < 3; i++)
		cr_expect_eq(memcmp(d.st[i], st[i], 10), 0, "x87 st(%u) differs", i);
	for (unsigned i = 0; i < 10; i++)
		cr_expect_eq(d.gpr[i], gpr[i], "general register %u: 0x%llx", i,
			     (unsigned long long)d.gpr[i]);
}

/* ---- AVX ------------------------------------------------------------------------- */

/*
 * This platform's KVM leaves XSAVE and AVX out of CPUID.1 even when the host has them;
 * offer them to this one vCPU (the hardware runs ring 3 natively) if leaf 0xD says
 * KVM manages the AVX state component. Returns false when it cannot.
 */
static bool offer_avx(struct vcpu *v)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + 256 * sizeof(c->entries[0]));
	struct kvm_cpuid_entry2 *e1, *ed;
	struct kvm_sregs s;
	struct kvm_xcrs x = { .nr_xcrs = 1, .xcrs = { { .xcr = 0, .value = XCR0_X87_SSE_AVX } } };
	unsigned eax = 1, ebx, ecx = 0, edx;
	bool ok;

	cr_assert_not_null(c);
	c->nent = 256;
	cr_assert_eq(ioctl(v->fd, KVM_GET_CPUID2, c), 0, "%s", strerror(errno));
	e1 = cpuid_find(c, 1, 0);
	ed = cpuid_find(c, 0xd, 0);
	__asm__("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx));
	ok = e1 && ed && (ed->eax & 4) && (ecx & CPUID1_ECX_AVX);
	if (ok) {
		e1->ecx |= CPUID1_ECX_XSAVE | CPUID1_ECX_AVX;
		ok = ioctl(v->fd, KVM_SET_CPUID2, c) == 0 && ioctl(v->fd, KVM_GET_SREGS, &s) == 0;
	}
	if (ok) {
		s.cr4 |= CR4_OSXSAVE;
		ok = ioctl(v->fd, KVM_SET_SREGS, &s) == 0 && ioctl(v->fd, KVM_SET_XCRS, &x) == 0;
	}
	free(c);
	return ok;
}

/* The saved XSAVE image itself holds the upper halves (XSTATE_BV bit 2, the AVX
 * component at the offset CPUID.(0xD,2):EBX gives). */
static void check_saved_ymm_upper(const struct snap_vcpu *v, const uint8_t *pattern)
{
	const struct snap_cpuid_entry *avx = NULL;
	uint64_t xstate_bv;

	for (uint32_t i = 0; i < v->nr_cpuid; i++)
		if (v->cpuid[i].function == 0xd && v->cpuid[i].index == 2)
			avx = &v->cpuid[i];
	cr_assert_not_null(avx, "no CPUID leaf 0xD.2");
	memcpy(&xstate_bv, &v->xsave[512], sizeof(xstate_bv));
	cr_assert(xstate_bv & 4, "XSTATE_BV 0x%llx lacks AVX", (unsigned long long)xstate_bv);
	cr_assert_leq(avx->ebx + 256, v->xsave_len);
	for (unsigned i = 0; i < 16; i++)
		cr_expect_eq(memcmp(&v->xsave[avx->ebx + i * 16], &pattern[i * 32 + 16], 16), 0,
			     "saved upper half of ymm%u differs", i);
}

Test(cpu_state, avx_upper_halves_survive_restore, .fini = fx_fini)
{
	uint8_t pattern[16 * 32], dump[16 * 32];
	struct vcpu *v;

	fx.vm = vm_new(1, 10000);
	guest_env_init(fx.vm);
	for (unsigned i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(i * 13 + 5);
	cr_assert_eq(gpa_write(&fx.vm->mem, G_DATA, pattern, sizeof(pattern)), 0);
	load_code(fx.vm, G_CODE, ring3_avx_start, ring3_avx_end);
	v = &fx.vm->vcpus[0];
	enter_ring3(v, G_CODE, G_STACK);
	if (!offer_avx(v))
		cr_skip_test("no AVX on this host / KVM");
	expect_stop(fx.vm, VM_STOP_SYNC);

	snapshot_and_restore(10000);
	compare_states();
	cr_assert_eq(fx.saved.vcpus[0].nr_xcrs, 1);
	cr_assert_eq(fx.saved.vcpus[0].xcrs[0].value, XCR0_X87_SSE_AVX);
	check_saved_ymm_upper(&fx.saved.vcpus[0], pattern);
	expect_stop(fx.vm, VM_STOP_DONE);
	cr_assert_eq(gpa_read(&fx.vm->mem, G_DUMP, dump, sizeof(dump)), 0);
	for (unsigned i = 0; i < 16; i++) {
		cr_expect_eq(memcmp(&dump[i * 32], &pattern[i * 32], 16), 0, "xmm%u differs", i);
		cr_expect_eq(memcmp(&dump[i * 32 + 16], &pattern[i * 32 + 16], 16), 0,
			     "upper half of ymm%u differs", i);
	}
}

/* ---- a running AP -------------------------------------------------------------------- */

Test(cpu_state, running_ap_keeps_its_place_in_the_loop, .fini = fx_fini)
{
	struct vcpu *ap;
	uint64_t r14;
	struct kvm_regs regs;

	fx.vm = vm_new(2, 10000);
	guest_env_init(fx.vm);
	load_code(fx.vm, G_CODE, ring3_wait_start, ring3_wait_end);
	load_code(fx.vm, G_AP_CODE, ring3_spin_start, ring3_spin_end);
	enter_ring3(&fx.vm->vcpus[0], G_CODE, G_STACK);
	ap = &fx.vm->vcpus[1];
	enter_ring3(ap, G_AP_CODE, G_AP_STACK);
	set_mp_state(ap, KVM_MP_STATE_RUNNABLE);
	expect_stop(fx.vm, VM_STOP_SYNC);

	snapshot_and_restore(10000);
	compare_states();
	cr_assert_eq(fx.saved.vcpus[1].mp_state, KVM_MP_STATE_RUNNABLE);
	cr_assert_eq(fx.saved.vcpus[1].regs.r15, 0x7777777777777777ull);
	r14 = fx.saved.vcpus[1].regs.r14;
	cr_assert_gt(r14, 0, "the AP ran before the snapshot");
	cr_assert_geq(fx.saved.vcpus[1].regs.rip, G_AP_CODE);
	cr_assert_lt(fx.saved.vcpus[1].regs.rip, G_AP_CODE + (ring3_spin_end - ring3_spin_start));

	/* The AP spins on from its saved count while the BSP finishes. */
	expect_stop(fx.vm, VM_STOP_DONE);
	cr_assert_eq(ioctl(fx.vm->vcpus[1].fd, KVM_GET_REGS, &regs), 0);
	cr_assert_geq(regs.r14, r14);
	cr_assert_eq(regs.r15, 0x7777777777777777ull);
}

/* ---- MSRs, LAPIC timer, mp_state --------------------------------------------------- */

static void write_timer_idt(struct vm *vm)
{
	uint64_t handler = G_CODE + (uint64_t)(ring0_timer_handler - ring0_timer_start);
	uint64_t gate[2];

	/* 64-bit interrupt gate, present, DPL 0, ember's boot code segment. */
	gate[0] = (handler & 0xffff) | (uint64_t)BOOT_CS << 16 | 0x8eull << 40 |
		  ((handler >> 16) & 0xffff) << 48;
	gate[1] = handler >> 32;
	cr_assert_eq(gpa_write(&vm->mem, G_IDT + TIMER_VECTOR * 16, gate, sizeof(gate)), 0);
}

static void start_timer_guest(unsigned nr_vcpus, uint64_t mode, uint64_t arg, uint64_t timeout)
{
	struct vcpu *v;
	struct kvm_sregs s;
	struct kvm_regs r;

	fx.vm = vm_new(nr_vcpus, timeout);
	guest_env_init(fx.vm);
	load_code(fx.vm, G_CODE, ring0_timer_start, ring0_timer_end);
	write_timer_idt(fx.vm);
	v = &fx.vm->vcpus[0];
	enter_ring0(v, G_CODE);
	cr_assert_eq(ioctl(v->fd, KVM_GET_SREGS, &s), 0);
	s.idt.base = G_IDT;
	s.idt.limit = 256 * 16 - 1;
	cr_assert_eq(ioctl(v->fd, KVM_SET_SREGS, &s), 0);
	cr_assert_eq(ioctl(v->fd, KVM_GET_REGS, &r), 0);
	r.rdi = mode;
	r.rsi = arg;
	cr_assert_eq(ioctl(v->fd, KVM_SET_REGS, &r), 0);
}

static void expect_msr(const struct snap_vcpu *v, uint32_t index, uint64_t value)
{
	const struct snap_msr *m = find_msr(v, index);

	cr_assert_not_null(m, "MSR 0x%x not saved", index);
	cr_expect_eq(m->value, value, "MSR 0x%x = 0x%llx, guest wrote 0x%llx", index,
		     (unsigned long long)m->value, (unsigned long long)value);
}

#define ONESHOT_NS 150000000u /* TMICT at divide-by-1: KVM's APIC timer counts at 1 GHz */

Test(cpu_state, msrs_written_by_the_guest_are_saved_and_restored, .fini = fx_fini)
{
	const struct snap_vcpu *v;

	start_timer_guest(1, 0, ONESHOT_NS, 10000);
	expect_stop(fx.vm, VM_STOP_SYNC);
	snapshot_and_restore(10000);
	compare_states();
	v = &fx.saved.vcpus[0];
	expect_msr(v, 0xc0000082, 0xffffffff81000000ull); /* LSTAR */
	expect_msr(v, 0xc0000083, 0xffffffff81000100ull); /* CSTAR */
	expect_msr(v, 0xc0000081, 0x0023001000000000ull); /* STAR */
	expect_msr(v, 0xc0000084, 0x47700);               /* SFMASK */
	expect_msr(v, 0xc0000102, 0xffff888000001000ull); /* KERNEL_GS_BASE */
	expect_msr(v, 0x174, 0x10);                       /* SYSENTER_CS */
	expect_msr(v, 0x175, 0x01234000);                 /* SYSENTER_ESP */
	expect_msr(v, 0x176, 0xffffffff81000200ull);      /* SYSENTER_EIP */
	expect_msr(v, 0x277, 0x0007010600070106ull);      /* PAT */
	expect_msr(v, 0x250, 0x0606060606060606ull);      /* MTRR fixed 64K */
	expect_msr(v, 0x2ff, 0x806);                      /* MTRR default type (ember's) */
	expect_msr(v, 0x1a0, 1);                          /* MISC_ENABLE fast strings */
	expect_msr(v, 0x4b564d01, G_KVMCLOCK + 1);        /* kvmclock system time, new */
	/* IA32_TSC comes first (restore writes it first) and is snap_vcpu.tsc. */
	cr_assert_eq(v->msrs[0].index, MSR_TSC);
	cr_assert_eq(v->msrs[0].value, v->tsc);
	/* Never in the list: state kept elsewhere. */
	cr_expect_null(find_msr(v, 0x1b), "APIC_BASE is in sregs");
	cr_expect_null(find_msr(v, 0xc0000080), "EFER is in sregs");
	cr_expect_null(find_msr(v, 0xc0000100), "FS_BASE is in sregs");
}

Test(cpu_state, unstarted_ap_stays_uninitialized_and_oneshot_timer_fires_after_restore,
     .fini = fx_fini)
{
	struct kvm_regs regs;
	uint32_t tmcct;
	uint64_t t0;

	start_timer_guest(2, 0, ONESHOT_NS, 10000);
	expect_stop(fx.vm, VM_STOP_SYNC);
	snapshot_and_restore(10000);
	compare_states();
	cr_assert_eq(fx.saved.vcpus[1].mp_state, KVM_MP_STATE_UNINITIALIZED);
	cr_assert_eq(fx.again.vcpus[1].mp_state, KVM_MP_STATE_UNINITIALIZED);
	cr_assert_eq(fx.saved.vcpus[0].regs.r12, 0, "no interrupt before the snapshot");
	cr_assert_eq(lapic_reg(&fx.saved.vcpus[0], LAPIC_LVTT), TIMER_VECTOR);
	/* Armed and counting down from where it was saved. */
	tmcct = lapic_reg(&fx.saved.vcpus[0], LAPIC_TMCCT);
	cr_assert_gt(tmcct, 0);
	cr_assert_leq(tmcct, ONESHOT_NS);
	cr_assert_leq(lapic_reg(&fx.again.vcpus[0], LAPIC_TMCCT), tmcct);
	cr_assert_gt(lapic_reg(&fx.again.vcpus[0], LAPIC_TMCCT), 0);

	t0 = now_ms();
	expect_stop(fx.vm, VM_STOP_DONE);
	cr_assert_geq(now_ms() - t0 + 20, tmcct / 1000000u,
		      "timer fired after %llu ms, %u ns were left", (unsigned long long)(now_ms() - t0),
		      tmcct);
	cr_assert_eq(ioctl(fx.vm->vcpus[0].fd, KVM_GET_REGS, &regs), 0);
	cr_assert_eq(regs.r12, 1, "one timer interrupt after the restore");
}

/* The timer guest in TSC-deadline mode, armed ms_ahead ms ahead: it runs past the sync
 * into sti; hlt and is stopped there by the 40 ms timeout. */
static void halt_waiting_for_deadline(uint64_t ms_ahead)
{
	struct kvm_regs regs;
	int khz;

	start_timer_guest(1, 1, 0, 40);
	khz = ioctl(fx.vm->vcpus[0].fd, KVM_GET_TSC_KHZ, 0);
	cr_assert_gt(khz, 0);
	cr_assert_eq(ioctl(fx.vm->vcpus[0].fd, KVM_GET_REGS, &regs), 0);
	regs.rsi = (uint64_t)khz * ms_ahead;
	cr_assert_eq(ioctl(fx.vm->vcpus[0].fd, KVM_SET_REGS, &regs), 0);
	fx.vm->cfg.stop_on_sync = false;
	expect_stop(fx.vm, VM_STOP_TIMEOUT);
}

/* The restored timer guest gets exactly its one interrupt and finishes. */
static void expect_one_tick_after_restore(void)
{
	struct kvm_regs regs;

	fx.vm->cfg.stop_on_sync = false;
	expect_stop(fx.vm, VM_STOP_DONE);
	cr_assert_eq(ioctl(fx.vm->vcpus[0].fd, KVM_GET_REGS, &regs), 0);
	cr_assert_eq(regs.r12, 1, "one timer interrupt after the restore");
}

Test(cpu_state, halted_vcpu_with_tsc_deadline_timer_saved_mid_wait, .fini = fx_fini)
{
	const struct snap_msr *deadline;

	halt_waiting_for_deadline(150);
	snapshot_and_restore(10000);
	compare_states();
	cr_assert_eq(fx.saved.vcpus[0].mp_state, KVM_MP_STATE_HALTED);
	cr_assert_eq(fx.again.vcpus[0].mp_state, KVM_MP_STATE_HALTED);
	cr_assert_eq(fx.saved.vcpus[0].regs.r12, 0);
	cr_assert_eq(lapic_reg(&fx.saved.vcpus[0], LAPIC_LVTT), TIMER_VECTOR | 0x40000);
	deadline = find_msr(&fx.saved.vcpus[0], MSR_TSC_DEADLINE);
	cr_assert_not_null(deadline);
	cr_assert_gt(deadline->value, fx.saved.vcpus[0].tsc, "deadline still ahead");
	expect_one_tick_after_restore();
}

/* ---- ember's test guests, booted through the library ---------------------------------- */

static const char *guest_path(const char *name, char *buf, size_t len)
{
	const char *b = getenv("EMBER_BUILD");

	snprintf(buf, len, "%s/guests/%s", b && *b ? b : "build", name);
	if (access(buf, R_OK) != 0)
		cr_skip_test("%s not built", buf);
	return buf;
}

static void boot_guest(const char *elf, const char *cmdline, unsigned nr_vcpus)
{
	struct vm_config cfg;
	struct errbuf eb = { "" };

	memset(&cfg, 0, sizeof(cfg));
	cfg.mem_bytes = 64 * MiB;
	cfg.nr_vcpus = nr_vcpus;
	cfg.kernel = elf;
	cfg.cmdline = cmdline;
	cfg.console = CONSOLE_NONE;
	cfg.stop_on_sync = true;
	cfg.timeout_ms = 20000;
	fx.vm = vm_from_cfg(&cfg);
	cr_assert_eq(vm_boot_load(fx.vm, &eb), 0, "%s", eb.msg);
}

/* At every GUEST_SYNC: save, restore into a fresh VM, compare, go on. Returns the syncs. */
static unsigned run_restoring_at_every_sync(void)
{
	unsigned syncs = 0;
	enum vm_stop_reason r;

	while ((r = vm_run(fx.vm)) == VM_STOP_SYNC) {
		syncs++;
		snapshot_and_restore(20000);
		compare_states();
	}
	cr_assert_eq(r, VM_STOP_DONE, "guest stopped with %s after %u syncs: %s",
		     vm_stop_reason_name(r), syncs, fx.vm->stop_msg);
	return syncs;
}

Test(cpu_state, state_guest_passes_its_checks_restored_at_every_sync, .fini = fx_fini)
{
	char path[512];

	boot_guest(guest_path("state.elf", path, sizeof(path)), NULL, 1);
	cr_assert_eq(run_restoring_at_every_sync(), 6);
}

/* x87 | SSE | AVX | the three AVX-512 components, as far as CPUID.(0xD,0) offers them. */
static uint64_t guest_xcr0_offered(const struct snap_vcpu *v)
{
	for (uint32_t i = 0; i < v->nr_cpuid; i++)
		if (v->cpuid[i].function == 0xd && v->cpuid[i].index == 0)
			return v->cpuid[i].eax & 0xe7;
	return 1;
}

Test(cpu_state, fpu_guest_keeps_its_vector_state_restored_at_every_sync, .fini = fx_fini)
{
	char path[512];

	boot_guest(guest_path("fpu.elf", path, sizeof(path)), NULL, 1);
	cr_assert_eq(run_restoring_at_every_sync(), 4);
	/* The guest enables every XSAVE component its CPUID offers (AVX-512 here). */
	cr_assert_eq(fx.saved.vcpus[0].nr_xcrs, 1);
	cr_assert_eq(fx.saved.vcpus[0].xcrs[0].value, guest_xcr0_offered(&fx.saved.vcpus[0]));
	cr_assert(fx.saved.vcpus[0].xcrs[0].value & 4, "XCR0 0x%llx: no AVX",
		  (unsigned long long)fx.saved.vcpus[0].xcrs[0].value);
}

Test(cpu_state, smp_guest_aps_parked_in_hlt_survive_restore, .fini = fx_fini)
{
	char path[512];
	unsigned halted = 0;

	boot_guest(guest_path("smp.elf", path, sizeof(path)), "cpus=3", 3);
	/* The guest has no sync: let it finish, restore the finished VM, compare. */
	expect_stop(fx.vm, VM_STOP_DONE);
	/* The BSP reports done as soon as the APs have checked in, which can be a moment
	 * before they execute hlt: let everyone reach hlt (the BSP halts after DONE). */
	fx.vm->cfg.timeout_ms = 100;
	expect_stop(fx.vm, VM_STOP_TIMEOUT);
	fx.vm->cfg.timeout_ms = 0;
	snapshot_and_restore(20000);
	compare_states();
	for (unsigned i = 1; i < 3; i++)
		halted += fx.saved.vcpus[i].mp_state == KVM_MP_STATE_HALTED;
	cr_assert_eq(halted, 2, "both APs parked in hlt");
}

/* ---- what restore refuses (untrusted input) -------------------------------------------- */

/* fx.vm: a fresh 2-vCPU VM; fx.saved: its state, untouched by any guest. */
static void fresh_saved(void)
{
	fx.vm = vm_new(2, 10000);
	save_all(fx.vm, &fx.saved);
}

static int restore_vcpu(unsigned idx, struct errbuf *eb)
{
	return x86_vcpu_restore(&fx.vm->vcpus[idx], &fx.saved.vcpus[idx], eb);
}

Test(cpu_state, fresh_vcpu_save_has_tsc_first_no_duplicate_msrs_and_kvm_xsave_size,
     .fini = fx_fini)
{
	const struct snap_vcpu *v;

	fresh_saved();
	v = &fx.saved.vcpus[1];
	cr_assert_eq(v->id, 1);
	cr_assert_eq(v->xsave_len, (uint32_t)fx.vm->kvm.xsave_size);
	cr_assert_gt(v->nr_cpuid, 0);
	cr_assert_eq(v->mp_state, KVM_MP_STATE_UNINITIALIZED);
	cr_assert_eq(lapic_reg(v, 0x20) >> 24, 1, "LAPIC id of vCPU 1");
	cr_assert_gt(v->nr_msrs, 20);
	cr_assert_eq(v->msrs[0].index, MSR_TSC);
	for (uint32_t i = 0; i < v->nr_msrs; i++) {
		cr_expect(x86_msr_should_save(v->msrs[i].index), "MSR 0x%x saved", v->msrs[i].index);
		for (uint32_t j = i + 1; j < v->nr_msrs; j++)
			cr_expect_neq(v->msrs[i].index, v->msrs[j].index, "MSR 0x%x twice",
				      v->msrs[i].index);
	}
}

Test(cpu_state, restore_accepts_a_longer_xsave_area_whose_tail_is_zero, .fini = fx_fini)
{
	struct errbuf eb = { "" };
	struct snap_err se = { "" };
	struct snap_vcpu *v;
	uint32_t len;
	uint8_t *big;

	fresh_saved();
	v = &fx.saved.vcpus[0];
	len = v->xsave_len + 4096;
	big = calloc(1, len);
	cr_assert_not_null(big);
	memcpy(big, v->xsave, v->xsave_len);
	cr_assert_eq(snap_vcpu_set_xsave(v, big, len, &se), 0, "%s", se.msg);
	cr_assert_eq(restore_vcpu(0, &eb), 0, "%s", eb.msg);
	free(big);
}

Test(cpu_state, restore_rejects_xsave_state_past_what_this_kvm_takes, .fini = fx_fini)
{
	struct errbuf eb = { "" };
	struct snap_err se = { "" };
	struct snap_vcpu *v;
	uint32_t len, host;
	uint8_t *big;
	char want[128];

	fresh_saved();
	v = &fx.saved.vcpus[0];
	host = v->xsave_len;
	len = host + 4096;
	big = calloc(1, len);
	cr_assert_not_null(big);
	memcpy(big, v->xsave, host);
	big[len - 1] = 1;
	cr_assert_eq(snap_vcpu_set_xsave(v, big, len, &se), 0, "%s", se.msg);
	cr_assert_eq(restore_vcpu(0, &eb), -EINVAL);
	snprintf(want, sizeof(want), "vCPU 0: XSAVE area of %u bytes has state past byte %u", len,
		 host);
	cr_assert(strstr(eb.msg, want), "message: %s", eb.msg);
	free(big);
}

Test(cpu_state, restore_rejects_a_short_xsave_area, .fini = fx_fini)
{
	struct errbuf eb = { "" };

	fresh_saved();
	fx.saved.vcpus[0].xsave_len = 512;
	cr_assert_eq(restore_vcpu(0, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "XSAVE area of 512 bytes, at least 4096 needed"), "%s", eb.msg);
}

Test(cpu_state, restore_rejects_state_of_another_vcpu, .fini = fx_fini)
{
	struct errbuf eb = { "" };

	fresh_saved();
	cr_assert_eq(x86_vcpu_restore(&fx.vm->vcpus[0], &fx.saved.vcpus[1], &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "snapshot vCPU 1 cannot be restored into vCPU 0"), "%s", eb.msg);
}

Test(cpu_state, restore_rejects_a_vcpu_without_cpuid, .fini = fx_fini)
{
	struct errbuf eb = { "" };

	fresh_saved();
	fx.saved.vcpus[0].nr_cpuid = 0;
	cr_assert_eq(restore_vcpu(0, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "0 CPUID entries"), "%s", eb.msg);
}

Test(cpu_state, restore_rejects_more_xcrs_than_kvm_takes, .fini = fx_fini)
{
	struct errbuf eb = { "" };

	fresh_saved();
	fx.saved.vcpus[0].nr_xcrs = SNAP_MAX_XCRS + 1;
	cr_assert_eq(restore_vcpu(0, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "17 XCRs"), "%s", eb.msg);
}

Test(cpu_state, restore_rejects_more_msrs_than_the_format_allows, .fini = fx_fini)
{
	struct errbuf eb = { "" };

	fresh_saved();
	fx.saved.vcpus[0].nr_msrs = SNAP_MAX_MSRS + 1;
	cr_assert_eq(restore_vcpu(0, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "1025 MSRs"), "%s", eb.msg);
}

Test(cpu_state, restore_names_the_msr_kvm_rejects, .fini = fx_fini)
{
	struct errbuf eb = { "" };
	struct snap_err se = { "" };
	struct snap_vcpu *v;
	struct snap_msr *copy;
	uint32_t n;

	fresh_saved();
	v = &fx.saved.vcpus[0];
	n = v->nr_msrs;
	copy = calloc(n, sizeof(*copy));
	cr_assert_not_null(copy);
	memcpy(copy, v->msrs, n * sizeof(*copy));
	cr_assert_eq(snap_vcpu_set_msrs(v, n + 1, &se), 0, "%s", se.msg);
	memcpy(v->msrs, copy, 3 * sizeof(*copy));
	v->msrs[3].index = 0xdeadbeef;
	v->msrs[3].value = 0x42;
	memcpy(&v->msrs[4], &copy[3], (n - 3) * sizeof(*copy));
	free(copy);
	cr_assert_eq(restore_vcpu(0, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "KVM rejected MSR 0xdeadbeef (value 0x42)"), "%s", eb.msg);
}

Test(cpu_state, restore_reports_kvm_refusing_bad_register_state, .fini = fx_fini)
{
	struct errbuf eb = { "" };

	fresh_saved();
	fx.saved.vcpus[0].debugregs.flags = 1; /* KVM_SET_DEBUGREGS wants 0 */
	cr_assert_eq(restore_vcpu(0, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "vCPU 0: KVM_SET_DEBUGREGS"), "%s", eb.msg);
}

/* ---- the MSR filter --------------------------------------------------------------------- */

Test(cpu_state, msr_filter_keeps_guest_visible_msrs)
{
	static const uint32_t keep[] = {
		0x10, 0x3b, 0x6e0, 0x11, 0x12, 0x4b564d00, 0x4b564d01, 0x4b564d02, 0xc0000081,
		0xc0000082, 0xc0000083, 0xc0000084, 0xc0000102, 0x174, 0x175, 0x176, 0x277,
		0x1a0, 0x2ff, 0x200, 0x20f, 0x250, 0x26f, 0xc0000103, 0x48, 0xda0, 0x10a,
	};

	for (size_t i = 0; i < ARRAY_SIZE(keep); i++)
		cr_expect(x86_msr_should_save(keep[i]), "MSR 0x%x dropped", keep[i]);
}

Test(cpu_state, msr_filter_drops_state_kept_elsewhere_and_host_capabilities)
{
	static const uint32_t drop[] = {
		0x1b,                               /* APIC_BASE: sregs */
		0xc0000080, 0xc0000100, 0xc0000101, /* EFER, FS/GS base: sregs */
		0x800, 0x830, 0x8ff,                /* x2APIC: the LAPIC page */
		0x480, 0x491,                       /* VMX capabilities */
		0x40000000, 0x40000073, 0x400001ff, /* Hyper-V */
		0xfe, 0x49, 0x10b,                  /* MTRRcap, PRED_CMD, FLUSH_CMD */
	};

	for (size_t i = 0; i < ARRAY_SIZE(drop); i++)
		cr_expect(!x86_msr_should_save(drop[i]), "MSR 0x%x kept", drop[i]);
	cr_expect(x86_msr_should_save(0x7ff) && x86_msr_should_save(0x900), "x2APIC range edges");
}

/* ---- a deadline that expires while the vCPU's state is read ------------------------ */

struct late_msrs {
	int fd;
	bool slept;
};

/* Before the vCPU's first KVM_GET_MSRS of the save: let the deadline pass. */
static void sleep_before_msrs(int fd, unsigned long req, void *arg, void *opaque)
{
	struct late_msrs *l = opaque;

	(void)arg;
	if (req == KVM_GET_MSRS && fd == l->fd && !l->slept) {
		l->slept = true;
		usleep(200 * 1000);
	}
}

/*
 * A halted vCPU waits for a TSC-deadline timer 100 ms ahead; the save reads its LAPIC,
 * then (the hook) waits until the deadline has passed, then reads the MSRs. The timer's
 * interrupt is not in the saved LAPIC page; the saved deadline must still make it come
 * after the restore, or the guest halts forever.
 */
Test(cpu_state, tsc_deadline_expiring_during_the_save_still_fires_after_restore,
     .fini = fx_fini)
{
	struct late_msrs late = { .slept = false };
	const struct snap_msr *deadline;

	halt_waiting_for_deadline(100);
	late.fd = fx.vm->vcpus[0].fd;
	iorec_set_hook(sleep_before_msrs, &late);
	iorec_start();
	snapshot_and_restore(3000);
	iorec_stop();
	iorec_set_hook(NULL, NULL);
	cr_assert(late.slept);
	cr_assert_eq(fx.saved.vcpus[0].mp_state, KVM_MP_STATE_HALTED);
	deadline = find_msr(&fx.saved.vcpus[0], MSR_TSC_DEADLINE);
	cr_assert_not_null(deadline);
	cr_log_info("saved deadline 0x%llx, tsc 0x%llx, IRR word 0x%x",
		    (unsigned long long)deadline->value, (unsigned long long)fx.saved.vcpus[0].tsc,
		    lapic_reg(&fx.saved.vcpus[0], 0x200 + (TIMER_VECTOR / 32) * 0x10));
	expect_one_tick_after_restore();
}

/* ---- a zero TSC deadline is saved as the vCPU's TSC -------------------------------- */

/* KVM reports IA32_TSC_DEADLINE 0 for a timer not in TSC-deadline mode and for one that
 * fired: the snapshot holds the vCPU's TSC instead, a deadline already due. */
Test(cpu_state, a_zero_tsc_deadline_is_saved_as_the_vcpus_tsc, .fini = fx_fini)
{
	fresh_saved();
	for (unsigned i = 0; i < fx.saved.nr_vcpus; i++) {
		const struct snap_vcpu *v = &fx.saved.vcpus[i];
		const struct snap_msr *deadline = find_msr(v, MSR_TSC_DEADLINE);

		cr_assert_not_null(deadline, "vCPU %u: no IA32_TSC_DEADLINE saved", i);
		cr_assert_eq(deadline->value, v->tsc, "vCPU %u: deadline 0x%llx, TSC 0x%llx", i,
			     (unsigned long long)deadline->value, (unsigned long long)v->tsc);
	}
}

/*
 * The state Firecracker found in snapshots: the LAPIC timer in TSC-deadline mode,
 * unmasked, IA32_TSC_DEADLINE 0 and no timer interrupt pending (here: the guest halts
 * waiting for a deadline the host then clears). Restored as saved, the vCPU would never
 * get a timer interrupt again; saved as a deadline already due, it gets one at once.
 */
Test(cpu_state, a_vcpu_whose_deadline_was_cleared_gets_a_tick_after_restore, .fini = fx_fini)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[1];
	} m;

	halt_waiting_for_deadline(60 * 1000); /* a minute ahead */
	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = 1;
	m.e[0].index = MSR_TSC_DEADLINE;
	cr_assert_eq(ioctl(fx.vm->vcpus[0].fd, KVM_SET_MSRS, &m), 1);
	snapshot_and_restore(3000);
	cr_assert_eq(fx.saved.vcpus[0].mp_state, KVM_MP_STATE_HALTED);
	cr_assert_eq(lapic_reg(&fx.saved.vcpus[0], LAPIC_LVTT), TIMER_VECTOR | 0x40000);
	expect_one_tick_after_restore();
}
