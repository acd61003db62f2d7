/*
 * Helpers shared by ember's Criterion tests (the tests/lib sources, linked into every test
 * binary). One section per source file; keep each section's helpers together.
 */
#ifndef EMBER_TESTLIB_H
#define EMBER_TESTLIB_H

#include <elf.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm.h"

/* ---- image_builder.c: synthetic kernel images, built in memory --------------------- */

/* One PT_LOAD segment. Its file bytes are a pattern seeded by `seed` (tb_seg_byte). */
struct tb_elf_seg {
	uint64_t paddr;
	uint64_t filesz, memsz;
	uint32_t flags;  /* PF_R | PF_W | PF_X */
	uint8_t seed;
};

/*
 * An ELF64 x86-64 ET_EXEC image with one PT_LOAD per segment, in order (p_vaddr =
 * p_paddr), file data page-aligned after the headers. malloc'ed; *len is its size.
 * Tests corrupt it afterwards through tb_elf_ehdr / tb_elf_phdr.
 */
uint8_t *tb_build_elf(const struct tb_elf_seg *segs, unsigned n, uint64_t entry, size_t *len);
Elf64_Ehdr *tb_elf_ehdr(uint8_t *img);
Elf64_Phdr *tb_elf_phdr(uint8_t *img, unsigned i);
/* The byte tb_build_elf put at offset `off` of a segment's file data. */
uint8_t tb_seg_byte(uint8_t seed, uint64_t off);

/* A bzImage; tb_bzimage_defaults gives a valid relocatable 64-bit 2.15 kernel. */
struct tb_bzimage {
	uint8_t setup_sects;       /* as stored: 0 means 4 */
	uint8_t hdr_jump;          /* byte at 0x201: the setup header ends at 0x202 + this */
	uint16_t version;
	uint8_t loadflags;
	uint16_t xloadflags;
	uint8_t relocatable;
	uint32_t kernel_alignment;
	uint64_t pref_address;
	uint32_t init_size;
	uint32_t initrd_addr_max;
	uint32_t cmdline_size;
	const uint8_t *pm;         /* protected-mode part; NULL: pm_len pattern bytes */
	size_t pm_len;
	uint32_t payload_offset;   /* relative to the protected-mode part */
	uint32_t payload_length;
};
void tb_bzimage_defaults(struct tb_bzimage *b);
uint8_t *tb_build_bzimage(const struct tb_bzimage *b, size_t *len);
/* The byte a NULL-pm bzImage carries at offset `off` of its protected-mode part. */
uint8_t tb_pm_byte(uint64_t off);
/* The setup header inside a built image (at 0x1f1), for corrupting it. */
struct setup_header;
struct setup_header *tb_bzimage_hdr(uint8_t *img);
/* Offset of the protected-mode part in a built image. */
size_t tb_bzimage_pm_offset(const uint8_t *img);

/*
 * LZ4 legacy frame (magic, then [le32 size][block] per block of block_size input
 * bytes) followed by the le32 uncompressed size, as the kernel build makes it.
 */
uint8_t *tb_lz4_legacy(const uint8_t *data, size_t len, size_t block_size, size_t *out_len);
/*
 * A default bzImage whose payload is tb_lz4_legacy(vmlinux, 8 MiB blocks) at
 * TB_LZ4_PAYLOAD_OFFSET of the protected-mode part, with a few stub bytes after it.
 */
#define TB_LZ4_PAYLOAD_OFFSET 0x100u
uint8_t *tb_build_lz4_bzimage(const uint8_t *vmlinux, size_t vmlinux_len, size_t *len);

/* Guest RAM for loader tests (mem_layout + mem_alloc_anon); asserts on failure. */
void tb_mem_init(struct guest_mem *m, uint64_t bytes);

#endif
