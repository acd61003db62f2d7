/*
 * The Linux x86-64 boot protocol, as a boot loader: put the kernel (ELF here,
 * bzImage in loader_bzimage.c), initrd and command line into guest RAM and describe
 * them, with the e820 map, in boot_params (the "zero page"). Every input byte is
 * untrusted: each image is validated completely before anything is copied.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loader_internal.h"
#include "snapfmt.h"

_Static_assert(sizeof(struct boot_params) == 4096, "boot_params is the 4 KiB zero page");

/* An ELF with more loadable segments than this is not a kernel we boot. */
#define ELF_MAX_LOADS 32
/* initrd_addr_max a bootloader assumes when the kernel has no setup header. */
#define ELF_INITRD_ADDR_MAX 0x37ffffffu
#define BOOT_HDR_MAGIC 0x53726448u /* "HdrS" */
#define E820_TYPE_RAM 1
#define E820_TYPE_RESERVED 2

static const struct {
	uint64_t start, end;
} boot_reserved[] = {
	{ BOOT_RESERVED_LO_START, BOOT_RESERVED_LO_END },
	{ EBDA_START, HIGH_MEM_START },
};

static bool ranges_overlap(uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1)
{
	return a0 < b1 && b0 < a1;
}

bool loader_range_usable(const struct guest_mem *m, uint64_t gpa, uint64_t size)
{
	if (size == 0 || size > UINT64_MAX - gpa)
		return false;
	for (unsigned i = 0; i < ARRAY_SIZE(boot_reserved); i++)
		if (ranges_overlap(gpa, gpa + size, boot_reserved[i].start, boot_reserved[i].end))
			return false;
	return gpa_ptr(m, gpa, size) != NULL;
}

int loader_check_kernel_range(const struct guest_mem *m, uint64_t gpa, uint64_t size,
			      const char *what, struct errbuf *eb)
{
	char regions[160] = "";
	size_t n = 0;

	if (size == 0)
		return errbuf_set(eb, -EINVAL, "%s at 0x%llx is empty", what,
				  (unsigned long long)gpa);
	if (size > UINT64_MAX - gpa)
		return errbuf_set(eb, -EINVAL, "%s: address 0x%llx + size 0x%llx overflows", what,
				  (unsigned long long)gpa, (unsigned long long)size);
	for (unsigned i = 0; i < ARRAY_SIZE(boot_reserved); i++)
		if (ranges_overlap(gpa, gpa + size, boot_reserved[i].start, boot_reserved[i].end))
			return errbuf_set(eb, -EINVAL,
					  "%s [0x%llx, 0x%llx) overlaps the boot structures at [0x%llx, 0x%llx)",
					  what, (unsigned long long)gpa,
					  (unsigned long long)(gpa + size),
					  (unsigned long long)boot_reserved[i].start,
					  (unsigned long long)boot_reserved[i].end);
	if (gpa_ptr(m, gpa, size))
		return 0;
	for (unsigned i = 0; i < m->nr_regions && n < sizeof(regions); i++) {
		int w = snprintf(regions + n, sizeof(regions) - n, " [0x%llx, 0x%llx)",
				 (unsigned long long)m->regions[i].gpa,
				 (unsigned long long)(m->regions[i].gpa + m->regions[i].size));
		if (w < 0)
			break;
		n += (size_t)w;
	}
	return errbuf_set(eb, -EINVAL, "%s [0x%llx, 0x%llx) is outside guest RAM (RAM:%s)", what,
			  (unsigned long long)gpa, (unsigned long long)(gpa + size), regions);
}

void loader_default_setup_header(struct setup_header *hdr)
{
	memset(hdr, 0, sizeof(*hdr));
	hdr->boot_flag = 0xaa55;
	hdr->header = BOOT_HDR_MAGIC;
	hdr->version = 0x020f;
	hdr->loadflags = LOADED_HIGH;
	hdr->kernel_alignment = 0x1000000;
	hdr->initrd_addr_max = ELF_INITRD_ADDR_MAX;
	hdr->cmdline_size = BOOT_CMDLINE_MAX - 1;
	hdr->xloadflags = XLF_KERNEL_64;
}

/* ---- ELF ------------------------------------------------------------------------ */

static int elf_check_header(const Elf64_Ehdr *eh, size_t len, const char *what, struct errbuf *eb)
{
	uint64_t table;

	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
		return errbuf_set(eb, -EINVAL, "%s: no ELF magic", what);
	if (eh->e_ident[EI_CLASS] != ELFCLASS64)
		return errbuf_set(eb, -EINVAL, "%s: EI_CLASS %u is not ELFCLASS64 (2)", what,
				  eh->e_ident[EI_CLASS]);
	if (eh->e_ident[EI_DATA] != ELFDATA2LSB)
		return errbuf_set(eb, -EINVAL, "%s: EI_DATA %u is not little-endian (1)", what,
				  eh->e_ident[EI_DATA]);
	if (eh->e_ident[EI_VERSION] != EV_CURRENT || eh->e_version != EV_CURRENT)
		return errbuf_set(eb, -EINVAL, "%s: ELF version %u/%u is not EV_CURRENT (1)", what,
				  eh->e_ident[EI_VERSION], eh->e_version);
	if (eh->e_machine != EM_X86_64)
		return errbuf_set(eb, -EINVAL, "%s: e_machine %u is not x86-64 (62)", what,
				  eh->e_machine);
	if (eh->e_type != ET_EXEC)
		return errbuf_set(eb, -EINVAL,
				  "%s: e_type %u is not ET_EXEC (2); relocatable and PIE images are not supported",
				  what, eh->e_type);
	if (eh->e_phentsize != sizeof(Elf64_Phdr))
		return errbuf_set(eb, -EINVAL, "%s: e_phentsize %u is not %zu", what,
				  eh->e_phentsize, sizeof(Elf64_Phdr));
	if (eh->e_phnum == 0 || eh->e_phnum == PN_XNUM)
		return errbuf_set(eb, -EINVAL, "%s: e_phnum %u: no usable program header table", what,
				  eh->e_phnum);
	table = (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr);
	if (eh->e_phoff > len || table > len - eh->e_phoff)
		return errbuf_set(eb, -EINVAL,
				  "%s: program header table (e_phoff 0x%llx, %u entries) is outside the file (%zu bytes)",
				  what, (unsigned long long)eh->e_phoff, eh->e_phnum, len);
	return 0;
}

static int elf_check_load(const struct guest_mem *m, const Elf64_Phdr *ph, unsigned idx,
			  size_t len, const char *what, struct errbuf *eb)
{
	char name[96];

	if (ph->p_filesz > ph->p_memsz)
		return errbuf_set(eb, -EINVAL, "%s: PT_LOAD %u: p_filesz 0x%llx > p_memsz 0x%llx", what,
				  idx, (unsigned long long)ph->p_filesz,
				  (unsigned long long)ph->p_memsz);
	if (ph->p_offset > len || ph->p_filesz > len - ph->p_offset)
		return errbuf_set(eb, -EINVAL,
				  "%s: PT_LOAD %u: file range (p_offset 0x%llx, p_filesz 0x%llx) is outside the file (%zu bytes)",
				  what, idx, (unsigned long long)ph->p_offset,
				  (unsigned long long)ph->p_filesz, len);
	snprintf(name, sizeof(name), "%s: PT_LOAD %u", what, idx);
	return loader_check_kernel_range(m, ph->p_paddr, ph->p_memsz, name, eb);
}

int loader_load_elf(struct guest_mem *m, const uint8_t *img, size_t len, const char *what,
		    struct kernel_image *k, struct errbuf *eb)
{
	Elf64_Ehdr eh;
	Elf64_Phdr loads[ELF_MAX_LOADS];
	unsigned idx[ELF_MAX_LOADS];
	unsigned nload = 0;
	bool entry_ok = false;
	int ret;

	if (len < sizeof(eh))
		return errbuf_set(eb, -EINVAL, "%s: truncated ELF header: %zu bytes, need %zu", what,
				  len, sizeof(eh));
	memcpy(&eh, img, sizeof(eh)); /* the image need not be aligned */
	ret = elf_check_header(&eh, len, what, eb);
	if (ret)
		return ret;

	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;

		memcpy(&ph, img + eh.e_phoff + (uint64_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
			continue;
		ret = elf_check_load(m, &ph, i, len, what, eb);
		if (ret)
			return ret;
		if (nload == ELF_MAX_LOADS)
			return errbuf_set(eb, -EINVAL, "%s: more than %u PT_LOAD segments", what,
					  ELF_MAX_LOADS);
		for (unsigned j = 0; j < nload; j++)
			if (ranges_overlap(ph.p_paddr, ph.p_paddr + ph.p_memsz, loads[j].p_paddr,
					   loads[j].p_paddr + loads[j].p_memsz))
				return errbuf_set(eb, -EINVAL,
						  "%s: PT_LOAD %u [0x%llx, 0x%llx) overlaps PT_LOAD %u [0x%llx, 0x%llx)",
						  what, i, (unsigned long long)ph.p_paddr,
						  (unsigned long long)(ph.p_paddr + ph.p_memsz), idx[j],
						  (unsigned long long)loads[j].p_paddr,
						  (unsigned long long)(loads[j].p_paddr + loads[j].p_memsz));
		if ((ph.p_flags & PF_X) && eh.e_entry >= ph.p_paddr &&
		    eh.e_entry - ph.p_paddr < ph.p_memsz)
			entry_ok = true;
		loads[nload] = ph;
		idx[nload++] = i;
	}
	if (nload == 0)
		return errbuf_set(eb, -EINVAL, "%s: no PT_LOAD segment with p_memsz > 0", what);
	if (!entry_ok)
		return errbuf_set(eb, -EINVAL,
				  "%s: entry point 0x%llx is not inside an executable PT_LOAD segment",
				  what, (unsigned long long)eh.e_entry);
	if (eh.e_entry >= BOOT_IDENTITY_MAP_END)
		return errbuf_set(eb, -EINVAL,
				  "%s: entry point 0x%llx is above 4 GiB, outside the boot identity map",
				  what, (unsigned long long)eh.e_entry);

	k->start = UINT64_MAX;
	k->end = 0;
	for (unsigned j = 0; j < nload; j++) {
		const Elf64_Phdr *ph = &loads[j];
		uint8_t *dst = gpa_map_write(m, ph->p_paddr, ph->p_memsz); /* checked above */

		if (!dst)
			return errbuf_set(eb, -EFAULT, "%s: PT_LOAD %u vanished from RAM", what, idx[j]);
		memcpy(dst, img + ph->p_offset, ph->p_filesz);
		memset(dst + ph->p_filesz, 0, ph->p_memsz - ph->p_filesz);
		if (ph->p_paddr < k->start)
			k->start = ph->p_paddr;
		if (ph->p_paddr + ph->p_memsz > k->end)
			k->end = ph->p_paddr + ph->p_memsz;
	}
	k->entry = eh.e_entry;
	return 0;
}

/* ---- command line, initrd, e820 ---------------------------------------------------- */

static int write_cmdline(struct guest_mem *m, const char *cmdline, const struct setup_header *hdr,
			 struct boot_info *bi, struct errbuf *eb)
{
	uint64_t limit = BOOT_CMDLINE_MAX - 1;
	size_t len;
	uint8_t *dst;

	if (!cmdline)
		cmdline = "";
	/* cmdline_size exists from protocol 2.06 and excludes the NUL. */
	if (hdr->version >= 0x0206 && hdr->cmdline_size < limit)
		limit = hdr->cmdline_size;
	len = strnlen(cmdline, limit + 1);
	if (len > limit)
		return errbuf_set(eb, -E2BIG,
				  "kernel command line is %zu bytes, the limit is %llu (kernel cmdline_size %u, ember maximum %llu)",
				  strlen(cmdline), (unsigned long long)limit, hdr->cmdline_size,
				  (unsigned long long)(BOOT_CMDLINE_MAX - 1));
	dst = gpa_map_write(m, BOOT_CMDLINE_ADDR, len + 1);
	if (!dst)
		return errbuf_set(eb, -EFAULT, "command line area at 0x%llx is outside guest RAM",
				  (unsigned long long)BOOT_CMDLINE_ADDR);
	memcpy(dst, cmdline, len);
	dst[len] = 0;
	bi->cmdline_addr = BOOT_CMDLINE_ADDR;
	bi->cmdline_size = (uint32_t)(len + 1);
	return 0;
}

/* The highest page-aligned spot below the kernel's limit and the end of low RAM. */
static int place_initrd(struct guest_mem *m, const struct load_args *a,
			const struct kernel_image *k, struct boot_info *bi, struct errbuf *eb)
{
	uint64_t top = (uint64_t)k->hdr.initrd_addr_max + 1;
	uint64_t ram_end = m->regions[0].gpa + m->regions[0].size;
	uint64_t addr;
	uint8_t *dst;

	if (!a->initrd)
		return 0;
	if (a->initrd_len == 0)
		return errbuf_set(eb, -EINVAL, "initrd is empty");
	if (ram_end < top)
		top = ram_end;
	if (a->initrd_len > top - HIGH_MEM_START)
		return errbuf_set(eb, -ENOMEM,
				  "initrd of %zu bytes does not fit below 0x%llx (initrd_addr_max 0x%x, low RAM end 0x%llx)",
				  a->initrd_len, (unsigned long long)top, k->hdr.initrd_addr_max,
				  (unsigned long long)ram_end);
	addr = (top - a->initrd_len) & ~(PAGE_SIZE - 1);
	if (ranges_overlap(addr, addr + a->initrd_len, k->start, k->end)) {
		/* the kernel sits at the top: the next candidate is just below it */
		if (k->start < HIGH_MEM_START + a->initrd_len)
			return errbuf_set(eb, -ENOMEM,
					  "initrd of %zu bytes does not fit below 0x%llx without overlapping the kernel at [0x%llx, 0x%llx)",
					  a->initrd_len, (unsigned long long)top,
					  (unsigned long long)k->start, (unsigned long long)k->end);
		addr = (k->start - a->initrd_len) & ~(PAGE_SIZE - 1);
	}
	if (addr < HIGH_MEM_START || !(dst = gpa_map_write(m, addr, a->initrd_len)))
		return errbuf_set(eb, -ENOMEM, "initrd of %zu bytes does not fit in guest RAM at 0x%llx",
				  a->initrd_len, (unsigned long long)addr);
	memcpy(dst, a->initrd, a->initrd_len);
	bi->initrd_addr = addr;
	bi->initrd_size = a->initrd_len;
	return 0;
}

static void e820_add(struct boot_params *bp, uint64_t addr, uint64_t size, uint32_t type)
{
	struct boot_e820_entry e = { .addr = addr, .size = size, .type = type };
	unsigned i = bp->e820_entries;

	/* insertion keeps the table sorted whatever order the regions come in */
	while (i > 0 && bp->e820_table[i - 1].addr > addr) {
		bp->e820_table[i] = bp->e820_table[i - 1];
		i--;
	}
	bp->e820_table[i] = e;
	bp->e820_entries++;
}

static void build_e820(const struct guest_mem *m, struct boot_params *bp)
{
	bp->e820_entries = 0;
	e820_add(bp, 0, EBDA_START, E820_TYPE_RAM);
	e820_add(bp, EBDA_START, HIGH_MEM_START - EBDA_START, E820_TYPE_RESERVED);
	for (unsigned i = 0; i < m->nr_regions; i++) {
		uint64_t start = m->regions[i].gpa, end = start + m->regions[i].size;

		if (start < HIGH_MEM_START)
			start = HIGH_MEM_START;
		if (end > start)
			e820_add(bp, start, end - start, E820_TYPE_RAM);
	}
}

/* ---- the whole load -------------------------------------------------------------------- */

static int load_kernel(struct guest_mem *m, const struct load_args *a, struct kernel_image *k,
		       struct errbuf *eb)
{
	if (!a->kernel || a->kernel_len == 0)
		return errbuf_set(eb, -EINVAL, "kernel image is empty");
	if (a->kernel_len >= SELFMAG && memcmp(a->kernel, ELFMAG, SELFMAG) == 0) {
		k->kind = KERNEL_ELF;
		loader_default_setup_header(&k->hdr);
		return loader_load_elf(m, a->kernel, a->kernel_len, "kernel ELF", k, eb);
	}
	if (loader_is_bzimage(a->kernel, a->kernel_len))
		return loader_load_bzimage(m, a->kernel, a->kernel_len, k, eb);
	return errbuf_set(eb, -EINVAL,
			  "kernel image (%zu bytes) is neither an ELF (no \\x7fELF magic) nor a bzImage (no \"HdrS\" at 0x202)",
			  a->kernel_len);
}

int loader_load(struct guest_mem *m, const struct load_args *a, struct boot_info *bi,
		struct errbuf *eb)
{
	struct kernel_image k;
	struct boot_params bp;
	int ret;

	memset(&k, 0, sizeof(k));
	memset(bi, 0, sizeof(*bi));
	if (!m->base || m->nr_regions == 0 || m->regions[0].gpa != 0)
		return errbuf_set(eb, -EINVAL, "guest RAM is not set up");
	if (m->regions[0].size <= HIGH_MEM_START)
		return errbuf_set(eb, -ENOMEM,
				  "guest RAM of %llu KiB is too small: the boot layout needs RAM above 1 MiB",
				  (unsigned long long)(m->regions[0].size / 1024));
	ret = load_kernel(m, a, &k, eb);
	if (ret)
		return ret;

	memset(&bp, 0, sizeof(bp));
	ret = write_cmdline(m, a->cmdline, &k.hdr, bi, eb);
	if (ret)
		return ret;
	ret = place_initrd(m, a, &k, bi, eb);
	if (ret)
		return ret;

	bp.hdr = k.hdr;
	bp.hdr.type_of_loader = 0xff; /* "undefined" boot loader */
	bp.hdr.loadflags |= LOADED_HIGH;
	bp.hdr.cmd_line_ptr = (uint32_t)bi->cmdline_addr;
	bp.ext_cmd_line_ptr = 0;
	bp.hdr.ramdisk_image = (uint32_t)bi->initrd_addr;
	bp.hdr.ramdisk_size = (uint32_t)bi->initrd_size;
	bp.ext_ramdisk_image = (uint32_t)(bi->initrd_addr >> 32);
	bp.ext_ramdisk_size = (uint32_t)(bi->initrd_size >> 32);
	bp.hdr.setup_data = 0; /* we pass none; never trust a pointer from the file */
	build_e820(m, &bp);
	if (gpa_write(m, BOOT_PARAMS_ADDR, &bp, sizeof(bp)))
		return errbuf_set(eb, -EFAULT, "boot_params at 0x%llx is outside guest RAM",
				  (unsigned long long)BOOT_PARAMS_ADDR);
	ret = boot_write_tables(m, eb);
	if (ret)
		return ret;

	bi->kind = k.kind;
	bi->entry = k.entry;
	bi->kernel_start = k.start;
	bi->kernel_end = k.end;
	return 0;
}

/* ---- files ------------------------------------------------------------------------------ */

struct mapped_file {
	const uint8_t *data;
	size_t len;
};

static int map_file(const char *role, const char *path, struct mapped_file *f, struct errbuf *eb)
{
	struct stat st;
	void *p;
	int fd, err;

	/* O_NONBLOCK: a FIFO named by --kernel or --initrd must not hang the open (it is
	 * refused just below); a symlink is followed, since the user named the path */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return errbuf_set(eb, -errno, "%s %s: %s", role, path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		err = errno;
		close(fd);
		return errbuf_set(eb, -err, "%s %s: %s", role, path, strerror(err));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return errbuf_set(eb, -EINVAL, "%s %s: not a regular file (%s)", role, path,
				  snap_file_kind(st.st_mode));
	}
	if (st.st_size == 0) {
		close(fd);
		return errbuf_set(eb, -EINVAL, "%s %s: file is empty", role, path);
	}
	if ((uint64_t)st.st_size > SIZE_MAX) {
		close(fd);
		return errbuf_set(eb, -EFBIG, "%s %s: file is too large", role, path);
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	err = errno;
	close(fd);
	if (p == MAP_FAILED)
		return errbuf_set(eb, -err, "%s %s: mmap: %s", role, path, strerror(err));
	f->data = p;
	f->len = (size_t)st.st_size;
	return 0;
}

static void unmap_file(struct mapped_file *f)
{
	if (f->data)
		munmap((void *)f->data, f->len);
	f->data = NULL;
}

int loader_load_files(struct guest_mem *m, const char *kernel, const char *initrd,
		      const char *cmdline, struct boot_info *bi, struct errbuf *eb)
{
	struct mapped_file kf = { 0 }, rf = { 0 };
	struct load_args a = { .cmdline = cmdline };
	int ret;

	if (!kernel)
		return errbuf_set(eb, -EINVAL, "no kernel given");
	ret = map_file("kernel", kernel, &kf, eb);
	if (ret)
		return ret;
	if (initrd) {
		ret = map_file("initrd", initrd, &rf, eb);
		if (ret)
			goto out;
	}
	a.kernel = kf.data;
	a.kernel_len = kf.len;
	a.initrd = rf.data;
	a.initrd_len = rf.len;
	ret = loader_load(m, &a, bi, eb);
	if (ret && eb) {
		char why[sizeof(eb->msg)];

		snprintf(why, sizeof(why), "%s", eb->msg);
		errbuf_set(eb, ret, "loading %s: %s", kernel, why);
	}
out:
	unmap_file(&rf);
	unmap_file(&kf);
	return ret;
}
