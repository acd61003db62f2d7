/*
 * Memory digests (format 1.3, FORMAT.md section 5.1): what ties a memory file to its
 * state file and lets it be checked. A raw memory file has no header to carry the
 * snapshot id, so the state records its contents instead: a CRC32C of every
 * SNAP_DIGEST_BLOCK bytes of the memory image (checked by `ember-snap verify --deep`)
 * and of a few "anchor" pages, cheap enough to read on every restore: the page holding
 * vCPU 0's page-table root (CR3), and the first non-zero page of each eighth of the
 * image. A memory file from another snapshot, or one that is all zeros, fails the
 * anchors; a changed byte anywhere fails a block.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "snapfmt_int.h"

static const uint8_t zero_page[SNAP_PAGE_SIZE];

struct digester {
	struct snap_state *st;
	const uint64_t *present;     /* pages that may be non-zero; NULL: all */
	uint64_t cr3_page;           /* image page of vCPU 0's CR3, UINT64_MAX if none */
	uint64_t eighth;             /* pages per eighth of the image */
	bool slot_done[SNAP_DIGEST_EIGHTHS];
	bool cr3_done;
};

/* The image page holding guest physical address gpa, or UINT64_MAX outside RAM. */
static uint64_t gpa_to_page(const struct snap_state *st, uint64_t gpa)
{
	for (uint32_t i = 0; i < st->vm.nr_regions; i++) {
		const struct snap_region *r = &st->vm.regions[i];

		if (gpa >= r->gpa && gpa - r->gpa < r->size)
			return (r->file_offset + (gpa - r->gpa)) / SNAP_PAGE_SIZE;
	}
	return UINT64_MAX;
}

static bool page_present(const struct digester *g, uint64_t pg)
{
	return !g->present || (g->present[pg / 64] >> (pg % 64)) & 1;
}

static int add_anchor(struct snap_memory *m, uint64_t pg, const uint8_t *p)
{
	if (m->nr_anchors == SNAP_MAX_ANCHORS)
		return 0;
	m->anchors[m->nr_anchors++] = (struct snap_anchor){
		.page = pg, .crc32c = snap_crc32c(0, p, SNAP_PAGE_SIZE) };
	return 0;
}

/* Records pg as an anchor if it is one ember wants and is not all zero. */
static void maybe_anchor(struct digester *g, uint64_t pg, const uint8_t *page)
{
	uint64_t slot = pg / g->eighth;
	bool want = (pg == g->cr3_page && !g->cr3_done) ||
		    (slot < SNAP_DIGEST_EIGHTHS && !g->slot_done[slot]);

	if (!want || !page_present(g, pg) || snap_is_zero(page, SNAP_PAGE_SIZE))
		return;
	if (pg == g->cr3_page)
		g->cr3_done = true;
	if (slot < SNAP_DIGEST_EIGHTHS)
		g->slot_done[slot] = true;
	add_anchor(&g->st->memory, pg, page);
}

/*
 * One block of the image, bytes [first_page * 4096, + len), held at p. Runs of present
 * pages go to the CRC in one call each (the three-stream CRC pays ~100 ns per call);
 * absent pages are fed from a zero page, never read.
 */
static uint32_t crc_block(struct digester *g, const uint8_t *p, uint64_t first_page,
			  uint64_t len)
{
	uint64_t pages = len / SNAP_PAGE_SIZE, run = 0;
	uint32_t crc = 0;

	for (uint64_t k = 0; k < pages; k++) {
		maybe_anchor(g, first_page + k, p + k * SNAP_PAGE_SIZE);
		if (page_present(g, first_page + k))
			continue;
		if (run < k)
			crc = snap_crc32c(crc, p + run * SNAP_PAGE_SIZE, (k - run) * SNAP_PAGE_SIZE);
		crc = snap_crc32c(crc, zero_page, SNAP_PAGE_SIZE);
		run = k + 1;
	}
	if (run < pages)
		crc = snap_crc32c(crc, p + run * SNAP_PAGE_SIZE, (pages - run) * SNAP_PAGE_SIZE);
	return crc;
}

static int digest_begin(struct digester *g, struct snap_state *st, const uint64_t *present,
			struct snap_err *err)
{
	struct snap_memory *m = &st->memory;
	uint64_t blocks = (m->size + SNAP_DIGEST_BLOCK - 1) / SNAP_DIGEST_BLOCK;

	memset(g, 0, sizeof(*g));
	g->st = st;
	g->present = present;
	g->eighth = (m->size / SNAP_PAGE_SIZE + SNAP_DIGEST_EIGHTHS - 1) / SNAP_DIGEST_EIGHTHS;
	g->cr3_page = st->nr_vcpus ? gpa_to_page(st, st->vcpus[0].sregs.cr3 & ~0xfffull) : UINT64_MAX;
	snap_memory_clear_digests(m);
	if (blocks * 4 > SNAP_DIGESTS_MAX)
		return snap_err_set(err, -E2BIG, "memory digests: %" PRIu64 " blocks exceed %u", blocks,
				    SNAP_DIGESTS_MAX / 4);
	m->digests = malloc(blocks * 4);
	m->anchors = calloc(SNAP_MAX_ANCHORS, sizeof(*m->anchors));
	if (!m->digests || !m->anchors) {
		snap_memory_clear_digests(m);
		return snap_err_set(err, -ENOMEM, "memory digests: out of memory");
	}
	m->digests_len = (uint32_t)(blocks * 4);
	m->digest_block = SNAP_DIGEST_BLOCK;
	return 0;
}

static uint64_t block_len(const struct snap_memory *m, uint64_t b)
{
	uint64_t off = b * SNAP_DIGEST_BLOCK;

	return m->size - off < SNAP_DIGEST_BLOCK ? m->size - off : SNAP_DIGEST_BLOCK;
}

/* A block whose pages are all absent is zero: its CRC is the same for every such block. */
static bool block_absent(const struct digester *g, uint64_t first_page, uint64_t pages)
{
	if (!g->present)
		return false;
	for (uint64_t pg = first_page; pg < first_page + pages; pg++)
		if (page_present(g, pg))
			return false;
	return true;
}

int snap_memory_digest(struct snap_state *st, const void *image, const uint64_t *present,
		       struct snap_err *err)
{
	struct snap_memory *m = &st->memory;
	uint64_t blocks = (m->size + SNAP_DIGEST_BLOCK - 1) / SNAP_DIGEST_BLOCK;
	uint32_t zero_crc = 0;
	bool have_zero = false;
	struct digester g;
	int ret = digest_begin(&g, st, present, err);

	for (uint64_t b = 0; !ret && b < blocks; b++) {
		uint64_t len = block_len(m, b), first = b * SNAP_DIGEST_BLOCK / SNAP_PAGE_SIZE;
		uint32_t crc;

		if (block_absent(&g, first, len / SNAP_PAGE_SIZE) && len == SNAP_DIGEST_BLOCK) {
			if (!have_zero)
				zero_crc = crc_block(&g, (const uint8_t *)image + b * SNAP_DIGEST_BLOCK,
							first, len);
			have_zero = true;
			crc = zero_crc;
		} else {
			crc = crc_block(&g, (const uint8_t *)image + b * SNAP_DIGEST_BLOCK, first, len);
		}
		snap_put_le32(m->digests + b * 4, crc);
	}
	return ret;
}

int snap_memory_digest_fd(struct snap_state *st, int fd, struct snap_err *err)
{
	struct snap_memory *m = &st->memory;
	uint64_t blocks = (m->size + SNAP_DIGEST_BLOCK - 1) / SNAP_DIGEST_BLOCK;
	uint8_t *buf = malloc(SNAP_DIGEST_BLOCK);
	struct digester g;
	int ret = buf ? digest_begin(&g, st, NULL, err)
		      : snap_err_set(err, -ENOMEM, "memory digests: out of memory");

	for (uint64_t b = 0; !ret && b < blocks; b++) {
		uint64_t len = block_len(m, b), got = 0;

		/* a sparse file being written may end before memory.size: the rest is zero */
		while (got < len) {
			ssize_t n = pread(fd, buf + got, len - got, (off_t)(b * SNAP_DIGEST_BLOCK + got));

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				ret = snap_err_set(err, -errno, "memory digests: reading: %s", strerror(errno));
				break;
			}
			if (n == 0) {
				memset(buf + got, 0, len - got);
				break;
			}
			got += (uint64_t)n;
		}
		if (!ret)
			snap_put_le32(m->digests + b * 4,
				      crc_block(&g, buf, b * SNAP_DIGEST_BLOCK / SNAP_PAGE_SIZE, len));
	}
	free(buf);
	return ret;
}

void snap_memory_clear_digests(struct snap_memory *m)
{
	free(m->digests);
	free(m->anchors);
	m->digests = NULL;
	m->anchors = NULL;
	m->digests_len = m->nr_anchors = m->digest_block = 0;
}

/* Reads image page pg of an open snapshot into buf (4 KiB; lz4 needs chunk bytes). */
static int read_page(const struct snap_dir *d, uint64_t pg, uint8_t *chunk, uint8_t *scratch,
		     uint8_t *out, struct snap_err *err)
{
	const struct snap_lz4_index *ix = d->lz4;
	uint64_t off = pg * SNAP_PAGE_SIZE, i;
	int ret;

	if (!ix) {
		ret = snap_read_all(d->mem_fd, out, SNAP_PAGE_SIZE, off);
		return ret ? snap_err_set(err, ret, "reading page 0x%" PRIx64 ": %s", pg,
					  strerror(-ret)) : 0;
	}
	i = off >> ix->chunk_shift;
	ret = snap_lz4_chunk_read(ix, i, chunk, scratch, err);
	if (!ret)
		memcpy(out, chunk + (off - (i << ix->chunk_shift)), SNAP_PAGE_SIZE);
	return ret;
}

int snap_dir_check_anchors(const struct snap_dir *d, const char *dir, struct snap_err *err)
{
	const struct snap_memory *m = &d->state.memory;
	uint8_t *chunk = NULL, *scratch = NULL, page[SNAP_PAGE_SIZE];
	struct snap_err inner = { "" };
	int ret = 0;

	if (!m->nr_anchors)
		return 0;
	if (d->lz4) {
		chunk = malloc(d->lz4->chunk_size);
		scratch = malloc(d->lz4->max_stored ? d->lz4->max_stored : 1);
		if (!chunk || !scratch) {
			ret = snap_err_set(err, -ENOMEM, "out of memory");
			goto out;
		}
	}
	for (uint32_t a = 0; a < m->nr_anchors && !ret; a++) {
		const struct snap_anchor *an = &m->anchors[a];
		uint32_t crc;

		ret = read_page(d, an->page, chunk, scratch, page, &inner);
		if (ret) {
			snap_err_set(err, ret, "snapshot %s: memory file %s: %s", dir, m->file, inner.msg);
			break;
		}
		crc = snap_crc32c(0, page, SNAP_PAGE_SIZE);
		if (crc != an->crc32c)
			ret = snap_err_set(err, -EINVAL, "snapshot %s: memory file %s does not belong to "
					   "this state file: page 0x%" PRIx64 " has CRC32C 0x%08x, the "
					   "state recorded 0x%08x (memory.anchors[%u]; a memory file "
					   "from another snapshot, or a damaged one)", dir, m->file,
					   an->page, crc, an->crc32c, a);
	}
out:
	free(chunk);
	free(scratch);
	return ret;
}

int snap_dir_verify_digests(const struct snap_dir *d, uint64_t *bad_block, struct snap_err *err)
{
	const struct snap_memory *m = &d->state.memory;
	const uint8_t *img = NULL;
	int ret;

	*bad_block = UINT64_MAX;
	if (!m->digest_block)
		return 0;
	ret = snap_dir_map_image(d, &img, err);
	if (ret)
		return ret;
	for (uint64_t b = 0; b < m->digests_len / 4u && !ret; b++) {
		uint64_t off = b * m->digest_block;
		uint64_t len = m->size - off < m->digest_block ? m->size - off : m->digest_block;
		uint32_t crc = snap_crc32c(0, img + off, len), want = snap_get_le32(m->digests + b * 4);

		if (crc != want) {
			*bad_block = b;
			ret = snap_err_set(err, -EINVAL, "memory block %" PRIu64 " (bytes 0x%" PRIx64
					   "..0x%" PRIx64 "): CRC32C 0x%08x, the state recorded 0x%08x",
					   b, off, off + len, crc, want);
		}
	}
	snap_dir_unmap_image(d, img);
	return ret;
}
