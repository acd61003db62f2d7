/*
 * The test guests' PVH entry note (tests/guest/lib/pvh.S, guest.ld), read from the
 * built ELFs: what QEMU needs to boot them (one XEN_ELFNOTE_PHYS32_ENTRY note in a
 * PT_NOTE segment aligned as QEMU expects, pointing at 32-bit code that first saves
 * ebx), and what ember needs not to notice it (its loader still loads the same
 * PT_LOADs and enters at e_entry, the 64-bit _start).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <elf.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/x86_64/loader_internal.h"
#include "../lib/testlib.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18

struct image {
	uint8_t *data;
	size_t len;
	Elf64_Ehdr eh;
};

static void read_image(const char *path, struct image *img)
{
	img->data = snapt_read_file(path, &img->len);
	cr_assert_geq(img->len, sizeof(img->eh), "%s: too short for an ELF header", path);
	memcpy(&img->eh, img->data, sizeof(img->eh));
	cr_assert_eq(memcmp(img->eh.e_ident, ELFMAG, SELFMAG), 0, "%s: no ELF magic", path);
	cr_assert_leq(img->eh.e_phoff + (uint64_t)img->eh.e_phnum * sizeof(Elf64_Phdr), img->len,
		      "%s: program headers outside the file", path);
}

static Elf64_Phdr phdr(const struct image *img, unsigned i)
{
	Elf64_Phdr ph;

	memcpy(&ph, img->data + img->eh.e_phoff + i * sizeof(ph), sizeof(ph));
	return ph;
}

/* The PVH entry of the note; asserts the note segment is well-formed. */
static uint64_t pvh_entry(const char *path, const struct image *img)
{
	unsigned notes = 0, found = 0;
	uint64_t entry = 0;

	for (unsigned i = 0; i < img->eh.e_phnum; i++) {
		Elf64_Phdr ph = phdr(img, i);
		uint64_t off, end;

		if (ph.p_type != PT_NOTE)
			continue;
		notes++;
		/* QEMU aligns the note name to p_align: anything but 4 misreads the entry */
		cr_assert_eq(ph.p_align, 4, "%s: PT_NOTE p_align %lu, QEMU needs 4", path, ph.p_align);
		cr_assert_leq(ph.p_offset + ph.p_filesz, img->len, "%s: PT_NOTE outside the file", path);
		off = ph.p_offset;
		end = ph.p_offset + ph.p_filesz;
		while (off + 12 <= end) {
			uint32_t hdr[3];
			uint64_t name, desc, next;

			memcpy(hdr, img->data + off, sizeof(hdr));
			name = off + 12;
			desc = name + ((hdr[0] + 3) & ~3u);
			next = desc + ((hdr[1] + 3) & ~3u);
			cr_assert_leq(next, end, "%s: a note runs past its segment", path);
			if (hdr[2] == XEN_ELFNOTE_PHYS32_ENTRY && hdr[0] == 4 &&
			    !memcmp(img->data + name, "Xen", 4)) {
				cr_assert_eq(hdr[1], 8, "%s: QEMU reads the entry as 8 bytes, desc has %u",
					     path, hdr[1]);
				memcpy(&entry, img->data + desc, 8);
				found++;
			}
			off = next;
		}
	}
	cr_assert_eq(notes, 1, "%s: %u PT_NOTE segments, want 1", path, notes);
	cr_assert_eq(found, 1, "%s: %u Xen PHYS32_ENTRY notes, want 1", path, found);
	return entry;
}

/* The file bytes at guest-physical addr, inside an executable PT_LOAD; asserts. */
static const uint8_t *code_at(const char *path, const struct image *img, uint64_t addr)
{
	for (unsigned i = 0; i < img->eh.e_phnum; i++) {
		Elf64_Phdr ph = phdr(img, i);

		if (ph.p_type == PT_LOAD && (ph.p_flags & PF_X) && addr >= ph.p_paddr &&
		    addr + 16 <= ph.p_paddr + ph.p_filesz)
			return img->data + ph.p_offset + (addr - ph.p_paddr);
	}
	cr_assert_fail("%s: 0x%lx is not in an executable PT_LOAD", path, addr);
	return NULL;
}

Test(pvh_note, every_guest_has_a_pvh_entry_and_ember_still_enters_at_start)
{
	glob_t g;
	char pattern[4096];
	struct guest_mem mem;

	snprintf(pattern, sizeof(pattern), "%s/*.elf", ember_test_path("guests"));
	cr_assert_eq(glob(pattern, 0, NULL, &g), 0, "no guests at %s: build them first", pattern);
	tb_mem_init(&mem, 256 * MiB);
	for (size_t k = 0; k < g.gl_pathc; k++) {
		const char *path = g.gl_pathv[k];
		struct kernel_image ki = { 0 };
		struct errbuf eb = { 0 };
		struct image img;
		uint64_t entry;
		const uint8_t *code;

		read_image(path, &img);
		entry = pvh_entry(path, &img);
		cr_assert_lt(entry, 1ull << 32, "%s: a 32-bit entry above 4 GiB", path);
		cr_assert_neq(entry, img.eh.e_entry, "%s: PVH entry is the 64-bit _start", path);
		code = code_at(path, &img, entry);
		/* mov %ebx, moffs32: hvm_start_info's address is saved before anything else */
		cr_assert(code[0] == 0x89 && code[1] == 0x1d,
			  "%s: the PVH entry does not begin by saving ebx (%02x %02x)", path, code[0],
			  code[1]);
		cr_assert_eq(loader_load_elf(&mem, img.data, img.len, path, &ki, &eb), 0, "%s: %s",
			     path, eb.msg);
		cr_assert_eq(ki.entry, img.eh.e_entry, "%s: ember's entry moved", path);
		free(img.data);
	}
	cr_log_info("%zu guests checked", g.gl_pathc);
	mem_free(&mem);
	globfree(&g);
}
