/* Synthetic kernel images for loader tests: ELF, bzImage, LZ4 legacy payloads. */
#include <asm/bootparam.h>
#include <criterion/criterion.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

#define TB_PAGE 4096u

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* ---- ELF ---------------------------------------------------------------------------- */

uint8_t tb_seg_byte(uint8_t seed, uint64_t off)
{
	return (uint8_t)(seed + off * 31 + (off >> 8));
}

uint8_t *tb_build_elf(const struct tb_elf_seg *segs, unsigned n, uint64_t entry, size_t *len)
{
	size_t hdrs = sizeof(Elf64_Ehdr) + (size_t)n * sizeof(Elf64_Phdr);
	size_t off = (hdrs + TB_PAGE - 1) & ~(size_t)(TB_PAGE - 1);
	size_t total = off;
	Elf64_Ehdr *eh;
	uint8_t *img;

	for (unsigned i = 0; i < n; i++)
		total += (segs[i].filesz + TB_PAGE - 1) & ~(uint64_t)(TB_PAGE - 1);
	img = calloc(1, total);
	if (!img)
		return NULL;
	eh = (Elf64_Ehdr *)img;
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_ident[EI_VERSION] = EV_CURRENT;
	eh->e_type = ET_EXEC;
	eh->e_machine = EM_X86_64;
	eh->e_version = EV_CURRENT;
	eh->e_entry = entry;
	eh->e_phoff = sizeof(Elf64_Ehdr);
	eh->e_ehsize = sizeof(Elf64_Ehdr);
	eh->e_phentsize = sizeof(Elf64_Phdr);
	eh->e_phnum = (uint16_t)n;
	for (unsigned i = 0; i < n; i++) {
		Elf64_Phdr *ph = tb_elf_phdr(img, i);

		ph->p_type = PT_LOAD;
		ph->p_flags = segs[i].flags;
		ph->p_offset = off;
		ph->p_vaddr = segs[i].paddr;
		ph->p_paddr = segs[i].paddr;
		ph->p_filesz = segs[i].filesz;
		ph->p_memsz = segs[i].memsz;
		ph->p_align = TB_PAGE;
		for (uint64_t j = 0; j < segs[i].filesz; j++)
			img[off + j] = tb_seg_byte(segs[i].seed, j);
		off += (segs[i].filesz + TB_PAGE - 1) & ~(uint64_t)(TB_PAGE - 1);
	}
	*len = total;
	return img;
}

Elf64_Ehdr *tb_elf_ehdr(uint8_t *img)
{
	return (Elf64_Ehdr *)img;
}

Elf64_Phdr *tb_elf_phdr(uint8_t *img, unsigned i)
{
	return (Elf64_Phdr *)(img + sizeof(Elf64_Ehdr) + (size_t)i * sizeof(Elf64_Phdr));
}

/* ---- bzImage -------------------------------------------------------------------------- */

uint8_t tb_pm_byte(uint64_t off)
{
	return (uint8_t)(0x5a ^ (off * 13) ^ (off >> 9));
}

void tb_bzimage_defaults(struct tb_bzimage *b)
{
	memset(b, 0, sizeof(*b));
	b->setup_sects = 4;
	b->hdr_jump = 0x6a; /* header to 0x26c, as in 2.15 kernels */
	b->version = 0x020f;
	b->loadflags = LOADED_HIGH;
	b->xloadflags = XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G;
	b->relocatable = 1;
	b->kernel_alignment = 0x200000;
	b->pref_address = 0x1000000;
	b->init_size = 0x100000;
	b->initrd_addr_max = 0x7fffffff;
	b->cmdline_size = 2047;
	b->pm_len = 0x10000;
}

struct setup_header *tb_bzimage_hdr(uint8_t *img)
{
	return (struct setup_header *)(img + 0x1f1);
}

size_t tb_bzimage_pm_offset(const uint8_t *img)
{
	unsigned sects = img[0x1f1] ? img[0x1f1] : 4;

	return ((size_t)sects + 1) * 512;
}

uint8_t *tb_build_bzimage(const struct tb_bzimage *b, size_t *len)
{
	unsigned sects = b->setup_sects ? b->setup_sects : 4;
	size_t setup = ((size_t)sects + 1) * 512;
	struct setup_header *h;
	uint8_t *img = calloc(1, setup + b->pm_len);

	if (!img)
		return NULL;
	h = tb_bzimage_hdr(img);
	h->setup_sects = b->setup_sects;
	h->boot_flag = 0xaa55;
	h->jump = (uint16_t)(0xeb | b->hdr_jump << 8);
	h->header = 0x53726448;
	h->version = b->version;
	h->loadflags = b->loadflags;
	h->kernel_version = 0x200;
	h->initrd_addr_max = b->initrd_addr_max;
	h->kernel_alignment = b->kernel_alignment;
	h->relocatable_kernel = b->relocatable;
	h->min_alignment = 21;
	h->xloadflags = b->xloadflags;
	h->cmdline_size = b->cmdline_size;
	h->payload_offset = b->payload_offset;
	h->payload_length = b->payload_length;
	h->pref_address = b->pref_address;
	h->init_size = b->init_size;
	h->syssize = (uint32_t)((b->pm_len + 15) / 16);
	if (b->pm)
		memcpy(img + setup, b->pm, b->pm_len);
	else
		for (size_t i = 0; i < b->pm_len; i++)
			img[setup + i] = tb_pm_byte(i);
	*len = setup + b->pm_len;
	return img;
}

/* ---- LZ4 ---------------------------------------------------------------------------------- */

uint8_t *tb_lz4_legacy(const uint8_t *data, size_t len, size_t block_size, size_t *out_len)
{
	size_t blocks = (len + block_size - 1) / block_size;
	size_t cap = 8 + blocks * (4 + (size_t)LZ4_compressBound((int)block_size));
	uint8_t *out = malloc(cap);
	size_t pos = 4;

	if (!out)
		return NULL;
	put_le32(out, 0x184c2102);
	for (size_t in = 0; in < len; in += block_size) {
		size_t chunk = len - in < block_size ? len - in : block_size;
		int n = LZ4_compress_default((const char *)data + in, (char *)out + pos + 4,
					     (int)chunk, (int)(cap - pos - 4));

		if (n <= 0) {
			free(out);
			return NULL;
		}
		put_le32(out + pos, (uint32_t)n);
		pos += 4 + (size_t)n;
	}
	put_le32(out + pos, (uint32_t)len);
	*out_len = pos + 4;
	return out;
}

uint8_t *tb_build_lz4_bzimage(const uint8_t *vmlinux, size_t vmlinux_len, size_t *len)
{
	struct tb_bzimage b;
	size_t lz_len;
	uint8_t *lz = tb_lz4_legacy(vmlinux, vmlinux_len, 8u << 20, &lz_len);
	uint8_t *pm, *img;

	if (!lz)
		return NULL;
	tb_bzimage_defaults(&b);
	b.pm_len = TB_LZ4_PAYLOAD_OFFSET + lz_len + 0x40;
	pm = malloc(b.pm_len);
	if (!pm) {
		free(lz);
		return NULL;
	}
	memset(pm, 0x90, b.pm_len); /* "decompressor" stub bytes */
	memcpy(pm + TB_LZ4_PAYLOAD_OFFSET, lz, lz_len);
	b.pm = pm;
	b.payload_offset = TB_LZ4_PAYLOAD_OFFSET;
	b.payload_length = (uint32_t)lz_len;
	b.init_size = (uint32_t)(b.pm_len > 0x400000 ? b.pm_len : 0x400000);
	img = tb_build_bzimage(&b, len);
	free(pm);
	free(lz);
	return img;
}

/* ---- guest memory -------------------------------------------------------------------------- */

void tb_mem_init(struct guest_mem *m, uint64_t bytes)
{
	struct errbuf eb = { { 0 } };

	cr_assert_eq(mem_layout(m, bytes, &eb), 0, "mem_layout: %s", eb.msg);
	cr_assert_eq(mem_alloc_anon(m, &eb), 0, "mem_alloc_anon: %s", eb.msg);
}
