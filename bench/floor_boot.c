/*
 * floor_boot: the least a VMM has to do to boot a test guest (build/guests/hello.elf)
 * to its write of the ready port. It is the baseline `ember boot` is measured against,
 * so it makes only the syscalls and KVM calls no VMM can skip, on the same VM shape as
 * ember: one anonymous memslot registered before the irqchip (PLATFORM.md: the other
 * order costs ~7 ms), TSS and identity-map addresses, in-kernel irqchip + PIT, one vCPU
 * with the supported CPUID, the ELF's PT_LOADs, boot_params, page tables and a GDT,
 * then KVM_RUN on this thread. No threads, no device model beyond answering the
 * UART's status reads, no teardown: it _exit()s at ready.
 *
 *   floor_boot GUEST.elf [MEM_MIB]
 *
 * Prints "ember-timing <phase> <us>" on stderr like ember --timings, counting from
 * EMBER_T0_NS (CLOCK_MONOTONIC at the launcher's spawn) when set. Exit 0 at ready,
 * 1 on any error. Standalone on purpose: it does not link libember.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kvm.h>
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

/* The guest-physical boot layout ember uses (src/arch/x86_64/x86.h), restated here. */
#define GDT_ADDR        0x500ull
#define BOOT_PARAMS     0x7000ull
#define STACK_TOP       0x8ff0ull
#define PML4_ADDR       0x9000ull
#define PDPT_ADDR       0xa000ull
#define PD_ADDR         0xb000ull
#define CMDLINE_ADDR    0x20000ull
#define LOW_RESERVED    0x30000ull
#define EBDA_START      0x9fc00ull
#define HIGH_MEM        0x100000ull
#define KVM_TSS         0xfffbd000ull
#define KVM_IDMAP       0xfffbc000ull

/* struct boot_params offsets (asm/bootparam.h) */
#define BP_E820_ENTRIES 0x1e8
#define BP_CMD_LINE_PTR 0x228
#define BP_E820_TABLE   0x2d0

#define COM1       0x3f8
#define COM1_IIR   (COM1 + 2)
#define COM1_LSR   (COM1 + 5)
#define CPUID_MAX  256

static uint64_t t0_ns;

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void mark(const char *phase)
{
	char line[80];
	int n = snprintf(line, sizeof(line), "ember-timing %s %" PRIu64 "\n", phase,
			 (mono_ns() - t0_ns) / 1000);

	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* nowhere to report it */
	}
}

static int fail(const char *what)
{
	fprintf(stderr, "floor_boot: %s: %s\n", what, strerror(errno));
	return 1;
}

static int failx(const char *what)
{
	fprintf(stderr, "floor_boot: %s\n", what);
	return 1;
}

/* PT_LOADs copied to p_paddr, checked only against the file and RAM. */
static int load_elf(const char *path, uint8_t *ram, uint64_t ram_size, uint64_t *entry)
{
	struct stat st;
	const Elf64_Ehdr *eh;
	uint8_t *img;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0)
		return fail(path);
	img = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (img == MAP_FAILED)
		return fail("mmap kernel");
	eh = (const Elf64_Ehdr *)img;
	if ((size_t)st.st_size < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) ||
	    eh->e_phentsize != sizeof(Elf64_Phdr) ||
	    eh->e_phoff + (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr) > (uint64_t)st.st_size)
		return failx("not a 64-bit ELF with a program header table");
	for (unsigned i = 0; i < eh->e_phnum; i++) {
		const Elf64_Phdr *ph = (const Elf64_Phdr *)(img + eh->e_phoff) + i;

		if (ph->p_type != PT_LOAD)
			continue;
		if (ph->p_filesz > ph->p_memsz || ph->p_offset + ph->p_filesz > (uint64_t)st.st_size ||
		    ph->p_paddr + ph->p_memsz > ram_size || ph->p_paddr < LOW_RESERVED)
			return failx("PT_LOAD outside the file or guest RAM");
		memcpy(ram + ph->p_paddr, img + ph->p_offset, ph->p_filesz);
		memset(ram + ph->p_paddr + ph->p_filesz, 0, ph->p_memsz - ph->p_filesz);
	}
	*entry = eh->e_entry;
	munmap(img, (size_t)st.st_size);
	return 0;
}

static void e820_add(uint8_t *bp, uint64_t addr, uint64_t size)
{
	uint8_t *e = bp + BP_E820_TABLE + bp[BP_E820_ENTRIES] * 20;
	uint32_t type = 1; /* RAM */

	memcpy(e, &addr, 8);
	memcpy(e + 8, &size, 8);
	memcpy(e + 16, &type, 4);
	bp[BP_E820_ENTRIES]++;
}

/* Zero page, e820, cmdline, identity map of the first 1 GiB (2 MiB pages), GDT. */
static void write_boot_structures(uint8_t *ram, uint64_t ram_size)
{
	uint8_t *bp = ram + BOOT_PARAMS;
	uint64_t *pml4 = (uint64_t *)(ram + PML4_ADDR);
	uint64_t *pdpt = (uint64_t *)(ram + PDPT_ADDR);
	uint64_t *pd = (uint64_t *)(ram + PD_ADDR);
	uint64_t *gdt = (uint64_t *)(ram + GDT_ADDR);
	uint32_t cmdline = CMDLINE_ADDR;

	/* RAM is fresh anonymous memory: already zero, nothing to clear */
	memcpy(bp + BP_CMD_LINE_PTR, &cmdline, 4);
	e820_add(bp, 0, EBDA_START);
	e820_add(bp, HIGH_MEM, ram_size - HIGH_MEM);

	pml4[0] = PDPT_ADDR | 3;
	pdpt[0] = PD_ADDR | 3;
	for (uint64_t i = 0; i < 512; i++)
		pd[i] = (i << 21) | 0x83; /* present, writable, 2 MiB */

	gdt[2] = 0x00af9b000000ffffull; /* 0x10: 64-bit code */
	gdt[3] = 0x00cf93000000ffffull; /* 0x18: data */
	gdt[4] = 0x00008b0000000067ull; /* 0x20: busy 64-bit TSS at 0 (high half 0) */
}

static void flat(struct kvm_segment *s, uint16_t sel, uint8_t type, uint8_t l, uint8_t db)
{
	*s = (struct kvm_segment){ .limit = 0xffffffff, .selector = sel, .type = type,
				   .present = 1, .db = db, .s = 1, .l = l, .g = 1 };
}

static int set_entry_state(int vcpu, uint64_t entry)
{
	struct kvm_sregs s;
	struct kvm_regs r = { .rip = entry, .rsi = BOOT_PARAMS, .rsp = STACK_TOP, .rflags = 2 };

	if (ioctl(vcpu, KVM_GET_SREGS, &s) < 0) /* keeps apic_base and the rest sane */
		return fail("KVM_GET_SREGS");
	flat(&s.cs, 0x10, 0xb, 1, 0);
	flat(&s.ds, 0x18, 0x3, 0, 1);
	s.es = s.fs = s.gs = s.ss = s.ds;
	/* KVM's entry checks want a usable TR, as at ember's entry */
	s.tr = (struct kvm_segment){ .limit = 0x67, .selector = 0x20, .type = 0xb, .present = 1 };
	s.gdt.base = GDT_ADDR;
	s.gdt.limit = 6 * 8 - 1;
	s.cr0 = 0x80050033; /* PG WP NE ET MP PE */
	s.cr3 = PML4_ADDR;
	s.cr4 = 0x620;      /* PAE OSFXSR OSXMMEXCPT */
	s.efer = 0x500;     /* LME LMA */
	if (ioctl(vcpu, KVM_SET_SREGS, &s) < 0)
		return fail("KVM_SET_SREGS");
	if (ioctl(vcpu, KVM_SET_REGS, &r) < 0)
		return fail("KVM_SET_REGS");
	return 0;
}

static int set_cpuid(int kvm, int vcpu)
{
	static union {
		struct kvm_cpuid2 c;
		uint8_t bytes[sizeof(struct kvm_cpuid2) + CPUID_MAX * sizeof(struct kvm_cpuid_entry2)];
	} u;

	u.c.nent = CPUID_MAX;
	if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &u.c) < 0)
		return fail("KVM_GET_SUPPORTED_CPUID");
	if (ioctl(vcpu, KVM_SET_CPUID2, &u.c) < 0)
		return fail("KVM_SET_CPUID2");
	return 0;
}

/* Port I/O: the UART's status registers, its data register, and the ready port. */
static void handle_io(struct kvm_run *run, char *line, size_t *len)
{
	uint8_t *data = (uint8_t *)run + run->io.data_offset;

	if (run->io.direction == KVM_EXIT_IO_OUT) {
		if (run->io.port == EMBER_PORT_READY) {
			mark("ready");
			_exit(0); /* the kernel tears the VM down; nothing for us to do */
		}
		if (run->io.port == COM1) {
			for (unsigned i = 0; i < run->io.count; i++) {
				line[(*len)++] = (char)data[i * run->io.size];
				if (line[*len - 1] == '\n' || *len == 256) {
					if (write(STDOUT_FILENO, line, *len) < 0) {
						/* console output is best effort */
					}
					*len = 0;
				}
			}
		}
		return;
	}
	/* IN: FIFO enabled, transmitter empty, everything else reads as all ones */
	memset(data, 0xff, (size_t)run->io.size * run->io.count);
	if (run->io.port == COM1_IIR)
		data[0] = 0xc1;
	else if (run->io.port == COM1_LSR)
		data[0] = 0x60;
}

int main(int argc, char **argv)
{
	const char *t0 = getenv("EMBER_T0_NS");
	uint64_t mem = 256ull << 20, entry = 0;
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	struct kvm_userspace_memory_region region;
	uint64_t idmap = KVM_IDMAP;
	struct kvm_run *run;
	char line[260];
	size_t line_len = 0;
	uint8_t *ram;
	int kvm, vm, vcpu, run_size;

	t0_ns = mono_ns();
	if (t0 && *t0 && strtoull(t0, NULL, 10) && strtoull(t0, NULL, 10) <= t0_ns)
		t0_ns = strtoull(t0, NULL, 10); /* same rule as ember's timing.c */
	if (argc < 2 || argc > 3)
		return failx("usage: floor_boot GUEST.elf [MEM_MIB]");
	if (argc == 3)
		mem = strtoull(argv[2], NULL, 10) << 20;
	if (mem < (2ull << 20) || mem > (1ull << 30))
		return failx("MEM_MIB must be 2..1024 (one memslot below the PCI hole)");

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		return fail("/dev/kvm");
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		return fail("KVM_CREATE_VM");
	ram = mmap(NULL, mem, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		   -1, 0);
	if (ram == MAP_FAILED)
		return fail("mmap guest RAM");
	region = (struct kvm_userspace_memory_region){ .slot = 0, .guest_phys_addr = 0,
						       .memory_size = mem,
						       .userspace_addr = (uintptr_t)ram };
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		return fail("KVM_SET_USER_MEMORY_REGION");
	if (ioctl(vm, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS) < 0)
		return fail("KVM_SET_TSS_ADDR");
	if (ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
		return fail("KVM_SET_IDENTITY_MAP_ADDR");
	if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
		return fail("KVM_CREATE_IRQCHIP");
	if (ioctl(vm, KVM_CREATE_PIT2, &pit) < 0)
		return fail("KVM_CREATE_PIT2");
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		return fail("KVM_CREATE_VCPU");
	run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size <= 0)
		return fail("KVM_GET_VCPU_MMAP_SIZE");
	run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		return fail("mmap kvm_run");
	if (set_cpuid(kvm, vcpu))
		return 1;
	mark("kvm-ready");

	if (load_elf(argv[1], ram, mem, &entry))
		return 1;
	write_boot_structures(ram, mem);
	if (set_entry_state(vcpu, entry))
		return 1;
	mark("loaded");

	mark("first-entry");
	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return fail("KVM_RUN");
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			handle_io(run, line, &line_len);
			break;
		case KVM_EXIT_MMIO:
			if (!run->mmio.is_write)
				memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
			break;
		default:
			fprintf(stderr, "floor_boot: unexpected exit %u before ready\n",
				run->exit_reason);
			return 1;
		}
	}
}
