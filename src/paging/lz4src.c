/*
 * lz4-compressed images: a fault is served with its whole chunk (read the stored
 * bytes, decode, CRC32C-check, install every page of the chunk not yet installed),
 * so the next faults in the chunk never happen. A chunk that fails its check is never
 * installed: its pages are marked failed, the error is reported, and faulters on them
 * stay blocked until pager_stop.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "pager_int.h"

void pg_lz4_chunk_pages(const struct pager *p, uint64_t i, uint64_t *first, uint64_t *n)
{
	const struct snap_lz4_chunk *c = snap_lz4_chunk(p->lz4, i);

	*first = i * p->chunk_pages;
	*n = c ? c->len / PAGE_SIZE : 0;
}

static void fail_chunk(struct pager *p, uint64_t i)
{
	uint64_t first, n;

	pg_lz4_chunk_pages(p, i, &first, &n);
	for (uint64_t k = 0; k < n; k++)
		if (!bm_test(p->present_bm, first + k))
			bm_set(p->failed_bm, first + k);
}

int pg_lz4_decode(struct pager *p, uint64_t i, const uint8_t *stored, uint8_t *dst)
{
	const struct snap_lz4_chunk *c = snap_lz4_chunk(p->lz4, i);
	struct snap_err err = { "" };
	int r = snap_lz4_chunk_decode(p->lz4, i, stored, c->stored_len, dst, &err);

	if (r) {
		fail_chunk(p, i);
		pg_fail(p, "pager: memory %s", err.msg);
		return r;
	}
	pg_count(&p->n_chunks, 1);
	return 0;
}

/*
 * Installs decoded chunk i (src NULL: a zero chunk): the faulting pages first, so
 * their threads resume while the rest of the chunk goes in (a 64 KiB chunk is ~15 us
 * of UFFDIO_COPY), then every other page of it.
 */
static void install_chunk(struct pager *p, uint64_t i, const uint8_t *src, const uint64_t *pages,
			  unsigned np, uint64_t t0)
{
	uint64_t first, n, existing = 0;

	pg_lz4_chunk_pages(p, i, &first, &n);
	for (unsigned k = 0; k < np; k++) {
		if (pages[k] / p->chunk_pages != i)
			continue;
		pg_install(p, pages[k], src ? src + (pages[k] - first) * PAGE_SIZE : NULL, 1, false,
			   &existing);
		pg_lat_record(p, pg_now_ns() - t0);
	}
	pg_install(p, first, src, n, false, &existing);
	if (existing) {
		pg_count(&p->n_raced, existing);
		pg_uffd_wake(p->uffd, (uint64_t)(uintptr_t)(p->base + first * PAGE_SIZE),
			     n * PAGE_SIZE);
	}
}

/* Reads, decodes and installs chunks[0..nc) using staging slots 0..nc-1. */
static void serve_group(struct pager *p, const uint64_t *chunks, unsigned nc,
			const uint64_t *pages, unsigned np, uint64_t t0)
{
	struct pg_read reads[PG_MAX_BATCH];
	bool bad[PG_MAX_BATCH] = { false };
	unsigned nr = 0;
	int r;

	for (unsigned k = 0; k < nc; k++) {
		const struct snap_lz4_chunk *c = snap_lz4_chunk(p->lz4, chunks[k]);
		uint8_t *slot = p->dbuf + k * p->dslot;

		if (c->kind == SNAP_CHUNK_ZERO)
			continue;
		/* raw chunks go straight to the decoded area: the check runs in place */
		reads[nr++] = (struct pg_read){
			.off = c->offset, .len = c->stored_len,
			.dst = c->kind == SNAP_CHUNK_RAW ? slot + p->zoff : slot,
			.owner = (void *)(uintptr_t)k };
	}
	r = nr ? pg_io_read_all(&p->dio, reads, nr) : 0;
	for (unsigned j = 0; j < nr; j++) {
		unsigned k = (unsigned)(uintptr_t)reads[j].owner;
		uint64_t i = chunks[k];

		if (r < 0 || reads[j].res != (int32_t)reads[j].len) {
			int e = r < 0 ? r : reads[j].res < 0 ? reads[j].res : -ENODATA;

			bad[k] = true;
			fail_chunk(p, i);
			pg_fail(p, "pager: reading memory chunk %llu (%u bytes at file offset %llu) "
				"failed: %s", (unsigned long long)i, reads[j].len,
				(unsigned long long)reads[j].off,
				e == -ENODATA ? "short read (memory file truncated?)" : strerror(-e));
			continue;
		}
		pg_count(&p->n_bytes_read, reads[j].len);
	}
	for (unsigned k = 0; k < nc; k++) {
		const struct snap_lz4_chunk *c = snap_lz4_chunk(p->lz4, chunks[k]);
		uint8_t *slot = p->dbuf + k * p->dslot;

		if (bad[k])
			continue;
		if (c->kind == SNAP_CHUNK_ZERO)
			install_chunk(p, chunks[k], NULL, pages, np, t0);
		else if (pg_lz4_decode(p, chunks[k], c->kind == SNAP_CHUNK_RAW ? slot + p->zoff : slot,
				       slot + p->zoff) == 0)
			install_chunk(p, chunks[k], slot + p->zoff, pages, np, t0);
	}
}

void pg_lz4_serve(struct pager *p, const uint64_t *pages, unsigned np, uint64_t t0)
{
	uint64_t chunks[PG_MAX_BATCH];
	unsigned nc = 0;

	for (unsigned k = 0; k < np; k++) {
		uint64_t i = pages[k] / p->chunk_pages;
		unsigned j = 0;

		while (j < nc && chunks[j] != i)
			j++;
		if (j == nc)
			chunks[nc++] = i;
	}
	for (unsigned done = 0; done < nc; done += p->dslots) {
		unsigned g = nc - done < p->dslots ? nc - done : p->dslots;

		serve_group(p, chunks + done, g, pages, np, t0);
	}
}
