/*
 * Private to the loader files (loader.c, loader_bzimage.c): the kernel-image step
 * hands back where the kernel went and the setup header boot_params should carry.
 */
#ifndef EMBER_LOADER_INTERNAL_H
#define EMBER_LOADER_INTERNAL_H

#include <asm/bootparam.h>

#include "x86.h"

/* boot.c's page tables map [0, 4 GiB): the entry point must lie below. */
#define BOOT_IDENTITY_MAP_END (BOOT_PD_PAGES * GiB)

/* Upper bound for a decompressed vmlinux: real ones are 30-80 MiB. */
#define LOADER_MAX_VMLINUX (1024ull * MiB)

struct kernel_image {
	enum kernel_kind kind;
	uint64_t entry;
	uint64_t start, end;        /* [start, end): GPAs the kernel owns, incl. bss/init_size */
	struct setup_header hdr;    /* what goes into boot_params.hdr before the loader fields */
};

/* True when [gpa, gpa+size) is non-empty, in one RAM region and clear of the boot structures. */
bool loader_range_usable(const struct guest_mem *m, uint64_t gpa, uint64_t size);
/* Same check, explaining a failure in eb; `what` names the range ("kernel ELF: PT_LOAD 1"). */
int loader_check_kernel_range(const struct guest_mem *m, uint64_t gpa, uint64_t size,
			      const char *what, struct errbuf *eb);

/* Fills hdr with what a boot loader would present for a kernel without one (ELF). */
void loader_default_setup_header(struct setup_header *hdr);

/*
 * Validates an ELF64 x86-64 ET_EXEC image completely, then copies its PT_LOAD
 * segments to their physical addresses. `what` names the image in messages.
 * Sets k->entry/start/end; leaves k->hdr and k->kind alone.
 */
int loader_load_elf(struct guest_mem *m, const uint8_t *img, size_t len, const char *what,
		    struct kernel_image *k, struct errbuf *eb);

/* True when img carries the "HdrS" boot protocol magic. */
bool loader_is_bzimage(const uint8_t *img, size_t len);

/* Validates a bzImage and loads it (plain, or its LZ4 payload as a vmlinux ELF). */
int loader_load_bzimage(struct guest_mem *m, const uint8_t *img, size_t len,
			struct kernel_image *k, struct errbuf *eb);

/*
 * Decompresses an LZ4 legacy-format payload whose last 4 bytes are the le32
 * uncompressed size (as the kernel build appends it). On success *out is an
 * mmap'ed buffer of *out_len bytes; release with munmap(*out, *out_map_len).
 */
int loader_unlz4_legacy(const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len,
			size_t *out_map_len, struct errbuf *eb);

#endif
