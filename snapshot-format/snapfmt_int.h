/*
 * libsnapfmt internals: the schema tables that drive encode, decode and dump, so the
 * three can never disagree about a key, its type or its range.
 */
#ifndef EMBER_SNAPFMT_INT_H
#define EMBER_SNAPFMT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "snapfmt.h"

enum sf_kind {
	SF_UINT,     /* unsigned integer, width bytes at off */
	SF_SINT,     /* int64_t at off */
	SF_STR,      /* char[max + 1] at off: a string of at most max bytes, no NUL */
	SF_ENUM,     /* uint32_t at off, msgpack string from names[0..max) */
	SF_STRUCT,   /* nested map, sub at off */
	SF_UINTS,    /* array of exactly max unsigned integers of width bytes at off */
	SF_STRUCTS,  /* array of exactly max structs (elem bytes each) at off */
	SF_VSTRUCTS, /* array of min..max structs in a fixed C array at off, u32 count at off_n */
	SF_HSTRUCTS, /* array of min..max structs on the heap: pointer at off, u32 count at off_n */
	SF_BLOB,     /* bin of exactly max bytes, uint8_t[max] at off */
	SF_HBLOB,    /* bin of min..max bytes on the heap: pointer at off, u32 length at off_n */
	SF_DEVICES,  /* the generic device list (special-cased) */
};

#define SFF_OPT 1u /* may be absent (then zero / empty) */
#define SFF_HEX 2u /* dump in hex */
/* Optional and left out (of the file and the dump) while zero / "": keys added by a
 * minor version for one variant only, so the other variant's files keep their shape. */
#define SFF_OMITZ 4u

struct sschema;
struct sfield {
	const char *key;
	uint8_t klen;   /* strlen(key) */
	uint8_t kind;
	uint8_t width;
	uint8_t flags;
	size_t off;
	size_t off_n;
	uint32_t min, max;
	size_t elem;
	const struct sschema *sub;
	const char *const *names;
};

struct sschema {
	const char *name;
	const struct sfield *f;
	unsigned n;
};

extern const struct sschema snap_schema_root;
extern const char *const snap_encoding_names[];
extern const char *const snap_kind_names[];
#define SNAP_NR_ENCODINGS 2u
#define SNAP_NR_KINDS 2u

static inline uint64_t sf_get_u(const void *p, unsigned width)
{
	uint8_t u8; uint16_t u16; uint32_t u32; uint64_t u64;

	switch (width) {
	case 1: memcpy(&u8, p, 1); return u8;
	case 2: memcpy(&u16, p, 2); return u16;
	case 4: memcpy(&u32, p, 4); return u32;
	default: memcpy(&u64, p, 8); return u64;
	}
}

static inline void sf_put_u(void *p, unsigned width, uint64_t v)
{
	uint8_t u8 = (uint8_t)v; uint16_t u16 = (uint16_t)v; uint32_t u32 = (uint32_t)v;

	switch (width) {
	case 1: memcpy(p, &u8, 1); break;
	case 2: memcpy(p, &u16, 2); break;
	case 4: memcpy(p, &u32, 4); break;
	default: memcpy(p, &v, 8); break;
	}
}

static inline uint64_t sf_max_u(unsigned width)
{
	return width >= 8 ? UINT64_MAX : (1ull << (8 * width)) - 1;
}

static inline uint32_t sf_get_u32(const void *base, size_t off)
{
	uint32_t v;
	memcpy(&v, (const uint8_t *)base + off, sizeof(v));
	return v;
}

static inline void *sf_get_ptr(const void *base, size_t off)
{
	void *p;
	memcpy(&p, (const uint8_t *)base + off, sizeof(p));
	return p;
}

/* True for an SFF_OMITZ field holding its default (0 or ""): not written, not dumped. */
static inline bool sf_omitted(const struct sfield *f, const void *base)
{
	const uint8_t *p = (const uint8_t *)base + f->off;

	if (!(f->flags & SFF_OMITZ))
		return false;
	if (f->kind == SF_STR)
		return p[0] == '\0';
	if (f->kind == SF_HBLOB || f->kind == SF_HSTRUCTS) /* empty */
		return sf_get_u32(base, f->off_n) == 0;
	return f->kind == SF_UINT && sf_get_u(p, f->width) == 0;
}

/* Little-endian helpers for the preamble. */
static inline void snap_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t snap_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void snap_put_le64(uint8_t *p, uint64_t v)
{
	snap_put_le32(p, (uint32_t)v);
	snap_put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint64_t snap_get_le64(const uint8_t *p)
{
	return (uint64_t)snap_get_le32(p) | (uint64_t)snap_get_le32(p + 4) << 32;
}

/* Device list parts shared by encode/decode/dump (snap_dev.c). */
void snap_device_free(struct snap_device *dev);
int snap_dev_check_name(const char *what, const char *name, size_t len, struct snap_err *err);

/* Whole-file I/O helpers (snap_dir.c). */
int snap_read_file_at(int dirfd, const char *name, size_t max, uint8_t **buf, size_t *len,
		      struct snap_err *err);
int snap_write_all(int fd, const void *buf, size_t len, uint64_t off);

/* Valid plain file name for memory.file: not empty, no '/', not "." or "..". */
bool snap_plain_name_ok(const char *name);

/* Opens name in dirfd: O_NOFOLLOW, must be a regular file (snap_dir.c). */
int snap_open_regular(int dirfd, const char *name, int flags, struct stat *stb, const char *what,
		      struct snap_err *err);
int snap_open_dir(const char *dir, struct snap_err *err);
int snap_read_all(int fd, void *buf, size_t len, uint64_t off);
bool snap_is_zero(const void *p, size_t n);
/* fsync of the directory containing path. */
int snap_fsync_parent(const char *path, struct snap_err *err);

/* lz4 parts (snap_lz4_index.c, snap_lz4_compress.c). */
uint64_t snap_lz4_nr_chunks(uint64_t mem_size, uint32_t chunk_size);
/* The whole uncompressed image of an open snapshot, read-only: raw maps the memory
 * file; lz4 decodes (and so checks) every chunk into anonymous memory (snap_lz4_chunk.c). */
int snap_dir_map_image(const struct snap_dir *d, const uint8_t **img, struct snap_err *err);
void snap_dir_unmap_image(const struct snap_dir *d, const uint8_t *img);
int snap_lz4_index_encode(const struct snap_lz4_chunk *chunks, uint64_t n, uint32_t chunk_size,
			  uint64_t mem_size, uint64_t file_size, const char *id, uint8_t **buf,
			  size_t *len, struct snap_err *err);
int snap_lz4_compress_image(int fd, const void *image, uint64_t len, uint32_t chunk_size,
			    const struct snap_extent *data, uint64_t nr_data,
			    struct snap_lz4_chunk **chunks, uint64_t *nr, uint64_t *file_size,
			    struct snap_err *err);

/* sparse_extents.c: does [off, off + len) meet any extent? Calls must come in increasing off; *cursor
 * starts at 0 and carries the position from one call to the next. */
bool snap_extents_overlap(const struct snap_extent *ext, uint64_t nr, uint64_t *cursor,
			  uint64_t off, uint64_t len);

/* Working-set file bytes, for the writer (snap_ws.c). */
int snap_ws_write_at(int dirfd, const char *dir, const char *id, uint64_t mem_pages,
		     const uint64_t *pages, uint64_t n, bool replace, struct snap_err *err);

#endif
