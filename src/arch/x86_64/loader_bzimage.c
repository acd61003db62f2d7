/*
 * bzImage (boot protocol >= 2.12, 64-bit entry). Two ways in:
 *  - an LZ4 payload (Debian's kernels) is decompressed on the host into the vmlinux
 *    ELF and loaded directly, which skips the in-guest decompressor: on this
 *    platform guest ring-0 code is emulated and decompressing there takes minutes;
 *  - any other payload: the protected-mode part goes to pref_address (or a
 *    relocated address) and the guest enters its 64-bit entry at +0x200.
 */
#include <errno.h>
#include <lz4.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

#include "loader_internal.h"

#define BZ_HDR_OFF        0x1f1u  /* struct setup_header inside the image and boot_params */
#define BZ_JUMP_OFF       0x200u  /* short jmp; its displacement ends the header */
#define BZ_MAGIC_OFF      0x202u
#define BZ_MIN_VERSION    0x020cu /* 2.12: xloadflags, 64-bit entry at +0x200 */
#define BZ_ENTRY64_OFF    0x200u
#define BZ_RELOC_MIN      (16ull * MiB)
#define BZ_HDR_MAGIC      0x53726448u /* "HdrS" */
/* The header must reach init_size (the last field we rely on). */
#define BZ_MIN_HDR_END    (BZ_HDR_OFF + offsetof(struct setup_header, init_size) + 4)

#define LZ4_LEGACY_MAGIC  0x184c2102u
#define LZ4_LEGACY_BLOCK  (8u << 20) /* each legacy block decompresses to at most this */

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

bool loader_is_bzimage(const uint8_t *img, size_t len)
{
	return len >= BZ_MAGIC_OFF + 4 && le32(img + BZ_MAGIC_OFF) == BZ_HDR_MAGIC;
}

/* ---- LZ4 legacy frame ------------------------------------------------------------ */

int loader_unlz4_legacy(const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len,
			size_t *out_map_len, struct errbuf *eb)
{
	uint32_t declared;
	size_t map_len, pos = 0, p = 4, end;
	unsigned block = 0;
	uint8_t *buf;
	int ret;

	if (in_len < 8)
		return errbuf_set(eb, -EINVAL,
				  "LZ4 payload of %zu bytes is too short for the magic and the size trailer",
				  in_len);
	if (le32(in) != LZ4_LEGACY_MAGIC)
		return errbuf_set(eb, -EINVAL, "LZ4 payload: magic 0x%08x is not the legacy 0x%08x",
				  le32(in), LZ4_LEGACY_MAGIC);
	end = in_len - 4;
	declared = le32(in + end);
	if (declared == 0 || declared > LOADER_MAX_VMLINUX)
		return errbuf_set(eb, -E2BIG,
				  "LZ4 payload: declared uncompressed size %u is not in (0, %llu]",
				  declared, (unsigned long long)LOADER_MAX_VMLINUX);
	/* one block of slack: an oversized last block is then "larger than declared",
	 * not an LZ4 error */
	map_len = ((size_t)declared + LZ4_LEGACY_BLOCK + PAGE_SIZE - 1) & ~(size_t)(PAGE_SIZE - 1);
	buf = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return errbuf_set(eb, -ENOMEM, "LZ4 payload: cannot allocate %zu bytes", map_len);

	while (p < end) {
		uint32_t csize;
		int n;

		if (end - p < 4) {
			ret = errbuf_set(eb, -EINVAL,
					 "LZ4 block %u at payload offset %zu: truncated block size",
					 block, p);
			goto fail;
		}
		csize = le32(in + p);
		p += 4;
		if (csize == LZ4_LEGACY_MAGIC) /* concatenated legacy frames */
			continue;
		if (csize == 0 || csize > (uint32_t)LZ4_compressBound(LZ4_LEGACY_BLOCK) ||
		    csize > end - p) {
			ret = errbuf_set(eb, -EINVAL,
					 "LZ4 block %u at payload offset %zu: compressed size %u is invalid (%zu bytes remain)",
					 block, p - 4, csize, end - p);
			goto fail;
		}
		n = LZ4_decompress_safe((const char *)in + p, (char *)buf + pos, (int)csize,
					(int)LZ4_LEGACY_BLOCK);
		if (n < 0) {
			ret = errbuf_set(eb, -EINVAL, "LZ4 block %u at payload offset %zu is corrupt",
					 block, p - 4);
			goto fail;
		}
		pos += (size_t)n;
		p += csize;
		block++;
		if (pos > declared) {
			ret = errbuf_set(eb, -EINVAL,
					 "LZ4 payload decompresses to more than its declared %u bytes (block %u)",
					 declared, block - 1);
			goto fail;
		}
	}
	if (pos != declared) {
		ret = errbuf_set(eb, -EINVAL,
				 "LZ4 payload decompressed to %zu bytes, its trailer declares %u",
				 pos, declared);
		goto fail;
	}
	*out = buf;
	*out_len = pos;
	*out_map_len = map_len;
	return 0;
fail:
	munmap(buf, map_len);
	return ret;
}

/* ---- the bzImage ----------------------------------------------------------------- */

struct bz_layout {
	const uint8_t *pm;     /* protected-mode part */
	size_t pm_len;
};

/* Header checks and the copy of the setup header into k->hdr. */
static int bz_parse(const uint8_t *img, size_t len, struct kernel_image *k, struct bz_layout *l,
		    struct errbuf *eb)
{
	struct setup_header *h = &k->hdr;
	size_t hdr_end, copy, setup_size;
	unsigned sects;

	if (len < BZ_HDR_OFF + sizeof(*h))
		return errbuf_set(eb, -EINVAL, "bzImage: truncated: %zu bytes, the setup header needs %zu",
				  len, BZ_HDR_OFF + sizeof(*h));
	memcpy(h, img + BZ_HDR_OFF, sizeof(*h));
	if (h->boot_flag != 0xaa55)
		return errbuf_set(eb, -EINVAL, "bzImage: boot_flag at 0x1fe is 0x%04x, not 0xaa55",
				  h->boot_flag);
	if (h->header != BZ_HDR_MAGIC)
		return errbuf_set(eb, -EINVAL, "bzImage: no \"HdrS\" magic at 0x202");
	if (h->version < BZ_MIN_VERSION)
		return errbuf_set(eb, -EINVAL,
				  "bzImage: boot protocol %u.%02u is too old: 2.12 or later is needed",
				  h->version >> 8, h->version & 0xff);
	if (img[BZ_JUMP_OFF] != 0xeb)
		return errbuf_set(eb, -EINVAL,
				  "bzImage: byte 0x%02x at 0x200 is not a short jump (0xeb) ending the setup header",
				  img[BZ_JUMP_OFF]);
	hdr_end = BZ_JUMP_OFF + 2 + img[BZ_JUMP_OFF + 1];
	if (hdr_end < BZ_MIN_HDR_END)
		return errbuf_set(eb, -EINVAL,
				  "bzImage: the setup header ends at 0x%zx (jump at 0x200), before init_size ends at 0x%zx",
				  hdr_end, (size_t)BZ_MIN_HDR_END);
	sects = h->setup_sects ? h->setup_sects : 4;
	setup_size = ((size_t)sects + 1) * 512;
	if (hdr_end > setup_size)
		return errbuf_set(eb, -EINVAL,
				  "bzImage: the setup header ends at 0x%zx, past the %zu-byte setup area",
				  hdr_end, setup_size);
	if (len <= setup_size)
		return errbuf_set(eb, -EINVAL,
				  "bzImage: file is %zu bytes but the setup area (setup_sects %u) takes %zu: no protected-mode kernel",
				  len, sects, setup_size);
	/* Fields past the header's real end belong to a newer protocol: not ours to copy. */
	copy = hdr_end - BZ_HDR_OFF;
	if (copy < sizeof(*h))
		memset((uint8_t *)h + copy, 0, sizeof(*h) - copy);
	l->pm = img + setup_size;
	l->pm_len = len - setup_size;

	if (!(h->loadflags & LOADED_HIGH))
		return errbuf_set(eb, -EINVAL,
				  "bzImage: loadflags 0x%02x lack LOADED_HIGH: zImage kernels are not supported",
				  h->loadflags);
	if (!(h->xloadflags & XLF_KERNEL_64))
		return errbuf_set(eb, -EINVAL,
				  "bzImage: xloadflags 0x%04x lack XLF_KERNEL_64: no 64-bit entry point",
				  h->xloadflags);
	if (h->init_size < l->pm_len)
		return errbuf_set(eb, -EINVAL,
				  "bzImage: init_size 0x%x is smaller than the protected-mode part (0x%zx bytes)",
				  h->init_size, l->pm_len);
	if (h->relocatable_kernel &&
	    (h->kernel_alignment < PAGE_SIZE || (h->kernel_alignment & (h->kernel_alignment - 1))))
		return errbuf_set(eb, -EINVAL,
				  "bzImage: kernel_alignment 0x%x is not a power of two >= 4 KiB",
				  h->kernel_alignment);
	if (h->payload_length &&
	    (h->payload_offset > l->pm_len || h->payload_length > l->pm_len - h->payload_offset))
		return errbuf_set(eb, -EINVAL,
				  "bzImage: payload (offset 0x%x, length 0x%x) is outside the protected-mode part (0x%zx bytes)",
				  h->payload_offset, h->payload_length, l->pm_len);
	return 0;
}

/* The decompressed vmlinux goes where its PT_LOADs say; boot_params keeps the bzImage's header. */
static int bz_load_lz4(struct guest_mem *m, const struct bz_layout *l, struct kernel_image *k,
		       struct errbuf *eb)
{
	uint8_t *elf;
	size_t elf_len, map_len;
	int ret;

	ret = loader_unlz4_legacy(l->pm + k->hdr.payload_offset, k->hdr.payload_length, &elf,
				  &elf_len, &map_len, eb);
	if (ret)
		return ret;
	if (elf_len < 4 || memcmp(elf, "\x7f" "ELF", 4) != 0) {
		ret = errbuf_set(eb, -EINVAL,
				 "bzImage: the decompressed LZ4 payload (%zu bytes) is not an ELF (no \\x7fELF magic)",
				 elf_len);
		goto out;
	}
	ret = loader_load_elf(m, elf, elf_len, "bzImage: decompressed vmlinux", k, eb);
	if (ret)
		goto out;
	/* The kernel may use up to init_size from its load address (page tables, brk). */
	if (k->hdr.init_size > k->end - k->start) {
		ret = loader_check_kernel_range(m, k->start, k->hdr.init_size,
						"bzImage: kernel init_size", eb);
		if (ret)
			goto out;
		k->end = k->start + k->hdr.init_size;
	}
	k->kind = KERNEL_BZIMAGE_LZ4;
out:
	munmap(elf, map_len);
	return ret;
}

/* The entry (+0x200) must be reachable through the boot identity map. */
static bool bz_fits(const struct guest_mem *m, uint64_t addr, uint64_t size)
{
	return loader_range_usable(m, addr, size) && addr + size <= BOOT_IDENTITY_MAP_END;
}

static int bz_load_plain(struct guest_mem *m, const struct bz_layout *l, struct kernel_image *k,
			 struct errbuf *eb)
{
	struct setup_header *h = &k->hdr;
	uint64_t size = h->init_size; /* >= pm_len, checked */
	uint64_t addr = h->pref_address;
	uint8_t *dst;

	if (!bz_fits(m, addr, size)) {
		uint64_t align = h->kernel_alignment;

		if (!h->relocatable_kernel) {
			if (addr < BOOT_IDENTITY_MAP_END && size <= BOOT_IDENTITY_MAP_END - addr)
				return loader_check_kernel_range(m, addr, size,
								 "bzImage: non-relocatable kernel (pref_address + init_size)",
								 eb);
			return errbuf_set(eb, -EINVAL,
					  "bzImage: non-relocatable kernel at pref_address 0x%llx + init_size 0x%x ends above 4 GiB",
					  (unsigned long long)addr, h->init_size);
		}
		addr = (BZ_RELOC_MIN + align - 1) & ~(align - 1);
		if (!bz_fits(m, addr, size))
			return errbuf_set(eb, -ENOMEM,
					  "bzImage: init_size 0x%x does not fit in guest RAM at pref_address 0x%llx nor at 0x%llx",
					  h->init_size, (unsigned long long)h->pref_address,
					  (unsigned long long)addr);
	}
	dst = gpa_map_write(m, addr, size);
	if (!dst)
		return errbuf_set(eb, -EFAULT, "bzImage: load range vanished from RAM");
	memcpy(dst, l->pm, l->pm_len);
	h->code32_start = (uint32_t)addr; /* where the protected-mode part really is */
	k->kind = KERNEL_BZIMAGE;
	k->entry = addr + BZ_ENTRY64_OFF;
	k->start = addr;
	k->end = addr + size;
	return 0;
}

int loader_load_bzimage(struct guest_mem *m, const uint8_t *img, size_t len,
			struct kernel_image *k, struct errbuf *eb)
{
	struct bz_layout l = { 0 };
	int ret;

	ret = bz_parse(img, len, k, &l, eb);
	if (ret)
		return ret;
	if (k->hdr.payload_length >= 4 &&
	    le32(l.pm + k->hdr.payload_offset) == LZ4_LEGACY_MAGIC)
		return bz_load_lz4(m, &l, k, eb);
	return bz_load_plain(m, &l, k, eb);
}
