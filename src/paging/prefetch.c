/*
 * Working-set prefetch. The recorded pages (fault order) become sorted, merged pieces
 * (pages closer than `gap` are read together, at most one block per piece), ordered
 * by the first fault of any page in them, so what the guest touched first arrives
 * first. `depth` staging blocks are read in flight; a completed block is installed a
 * bounded amount at a time so that demand faults, served by the same loop between
 * steps, wait at most one step. Pages already installed (by a demand fault) are
 * skipped; zero pages are installed as UFFDIO_ZEROPAGE ranges.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "pager_int.h"

#define PF_DEFAULT_BLOCK (1u << 20)
#define PF_DEFAULT_DEPTH 4u
#define PF_DEFAULT_GAP   8u
#define PF_MAX_DEPTH     64u
#define PF_MAX_READS     256u         /* pieces per block */
#define PF_STEP_BYTES    (256u << 10) /* installed per step, between fault checks */

struct pf_piece {
	uint64_t first, count; /* units: pages (raw) or chunks (lz4) */
	uint64_t prio;         /* earliest fault order of a working-set page in it */
};

/* One piece in a staging block, and its read (none when the piece is all zero chunks). */
struct pf_entry {
	uint64_t first, count;
	struct pg_read rd;
	bool has_read;
};

struct pf_slot {
	uint8_t *buf;
	struct pf_entry ent[PF_MAX_READS];
	unsigned nr_ent, pending;     /* reads not yet completed */
	unsigned cur;                 /* entry being installed */
	uint64_t cur_unit;            /* units of it handled */
	uint64_t seq;                 /* fill order: install oldest first */
	bool busy;
};

struct prefetch {
	uint64_t *ws;                 /* the working set until the plan is made */
	uint64_t nr_ws;
	struct pf_piece *pieces;
	size_t nr_pieces, next;
	struct pf_slot *slots;
	unsigned nr_slots;
	uint32_t block;
	uint64_t seq;
	uint8_t *staging;
	size_t staging_len;
	uint8_t *dec;                 /* lz4: one decoded chunk */
	struct pg_io io;
	bool done;
};

struct ws_entry {
	uint64_t unit, order;
};

static int cmp_entry(const void *a, const void *b)
{
	const struct ws_entry *x = a, *y = b;

	if (x->unit != y->unit)
		return x->unit < y->unit ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

static int cmp_piece(const void *a, const void *b)
{
	const struct pf_piece *x = a, *y = b;

	if (x->prio != y->prio)
		return x->prio < y->prio ? -1 : 1;
	return x->first < y->first ? -1 : x->first > y->first;
}

/* Where unit u's stored bytes are in the file; len 0 for a zero chunk. */
static void unit_span(const struct pager *p, uint64_t u, uint64_t *off, uint64_t *len)
{
	if (!p->lz4) {
		*off = u * PAGE_SIZE;
		*len = PAGE_SIZE;
	} else {
		const struct snap_lz4_chunk *c = snap_lz4_chunk(p->lz4, u);

		*off = c->offset;
		*len = c->stored_len;
	}
}

/* The file range holding units [first, first+count): *len 0 when there is nothing to read. */
static void piece_span(const struct pager *p, uint64_t first, uint64_t count, uint64_t *off,
		       uint64_t *len)
{
	uint64_t start = 0, end = 0;
	bool any = false;

	for (uint64_t u = first; u < first + count; u++) {
		uint64_t o, l;

		unit_span(p, u, &o, &l);
		if (!l)
			continue;
		if (!any)
			start = o;
		end = o + l; /* units are stored in file order */
		any = true;
	}
	*off = start;
	*len = end - start;
}

/* Sorted unique units with their first fault order (pages were validated at create). */
static struct ws_entry *unique_units(const struct pager *p, const uint64_t *ws, uint64_t n,
				     uint64_t *nout)
{
	struct ws_entry *e = malloc(n * sizeof(*e));
	uint64_t nu = 0;

	if (!e)
		return NULL;
	for (uint64_t i = 0; i < n; i++)
		e[i] = (struct ws_entry){ .unit = ws[i] / p->chunk_pages, .order = i };
	qsort(e, n, sizeof(*e), cmp_entry);
	for (uint64_t i = 0; i < n; i++)
		if (nu == 0 || e[nu - 1].unit != e[i].unit)
			e[nu++] = e[i];
	*nout = nu;
	return e;
}

/*
 * Merges runs of units (gaps <= gap units) and cuts them into pieces whose file span
 * fits one block. Every piece holds a working-set unit, so there are at most nu.
 */
static size_t make_pieces(const struct pager *p, const struct ws_entry *u, uint64_t nu,
			  uint64_t gap, uint64_t block, struct pf_piece *out)
{
	size_t np = 0;
	uint64_t i = 0;

	while (i < nu) {
		uint64_t j = i + 1, last = u[i].unit, k = i;

		while (j < nu && u[j].unit - last - 1 <= gap)
			last = u[j++].unit;
		while (k < j) {
			uint64_t first = u[k].unit, end = first, prio = UINT64_MAX;
			uint64_t start = 0;
			bool any = false;

			/* grow while the file span still fits a block (at least one unit) */
			for (; end <= last; end++) {
				uint64_t o, l;

				unit_span(p, end, &o, &l);
				if (!l)
					continue;
				if (any && o + l - start > block)
					break;
				start = any ? start : o;
				any = true;
			}
			while (k < j && u[k].unit < end)
				prio = u[k].order < prio ? u[k].order : prio, k++;
			out[np++] = (struct pf_piece){ .first = first, .count = end - first, .prio = prio };
		}
		i = j;
	}
	return np;
}

/*
 * On the restore path: validate the configuration and every page, copy the list.
 * The plan, staging and ring are built by the pager thread (pg_prefetch_setup), off
 * the critical path: sorting a large working set takes milliseconds.
 */
int pg_prefetch_create(struct pager *p, const uint64_t *ws, uint64_t n, struct errbuf *eb)
{
	uint32_t block = p->cfg.prefetch_block ? p->cfg.prefetch_block : PF_DEFAULT_BLOCK;
	unsigned depth = p->cfg.prefetch_depth ? p->cfg.prefetch_depth : PF_DEFAULT_DEPTH;
	struct prefetch *pf;

	if (block % PAGE_SIZE || block > (64u << 20) || depth > PF_MAX_DEPTH)
		return errbuf_set(eb, -EINVAL, "pager: prefetch block %u (4 KiB..64 MiB, page "
				  "multiple) or depth %u (1..%u) out of range", block, depth,
				  PF_MAX_DEPTH);
	for (uint64_t i = 0; i < n; i++)
		if (ws[i] >= p->npages)
			return errbuf_set(eb, -EINVAL, "pager: working-set entry %llu: page %llu is "
					  "outside guest RAM (%llu pages)", (unsigned long long)i,
					  (unsigned long long)ws[i], (unsigned long long)p->npages);
	pf = calloc(1, sizeof(*pf));
	if (!pf)
		return errbuf_set(eb, -ENOMEM, "pager: out of memory for prefetch");
	p->pf = pf;
	pf->io.efd = -1;
	pf->block = block;
	pf->nr_slots = depth;
	pf->ws = malloc(n * sizeof(*ws));
	if (!pf->ws)
		return errbuf_set(eb, -ENOMEM, "pager: out of memory for the working set");
	memcpy(pf->ws, ws, n * sizeof(*ws));
	pf->nr_ws = n;
	return 0;
}

static int setup(struct pager *p, struct errbuf *eb)
{
	struct prefetch *pf = p->pf;
	uint64_t gap = p->cfg.prefetch_gap ? p->cfg.prefetch_gap : PF_DEFAULT_GAP;
	struct ws_entry *u;
	uint64_t nu = 0;

	/* a block must hold any one chunk's stored bytes */
	if (p->lz4 && pf->block < p->lz4->max_stored)
		pf->block = (p->lz4->max_stored + PAGE_SIZE - 1) & ~(uint32_t)(PAGE_SIZE - 1);
	u = unique_units(p, pf->ws, pf->nr_ws, &nu);
	free(pf->ws);
	pf->ws = NULL;
	pf->pieces = u ? malloc(nu * sizeof(*pf->pieces)) : NULL;
	pf->slots = calloc(pf->nr_slots, sizeof(*pf->slots));
	if (!u || !pf->pieces || !pf->slots) {
		free(u);
		return errbuf_set(eb, -ENOMEM, "out of memory");
	}
	pf->nr_pieces = make_pieces(p, u, nu, gap / p->chunk_pages, pf->block, pf->pieces);
	free(u);
	qsort(pf->pieces, pf->nr_pieces, sizeof(*pf->pieces), cmp_piece);

	pf->staging_len = (size_t)pf->block * pf->nr_slots + (p->lz4 ? p->lz4->chunk_size : 0);
	pf->staging = mmap(NULL, pf->staging_len, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pf->staging == MAP_FAILED) {
		pf->staging = NULL;
		return errbuf_set(eb, -errno, "staging (%zu bytes): %s", pf->staging_len,
				  strerror(errno));
	}
	for (unsigned i = 0; i < pf->nr_slots; i++)
		pf->slots[i].buf = pf->staging + (size_t)i * pf->block;
	pf->dec = pf->staging + (size_t)pf->block * pf->nr_slots;
	return pg_io_init(&pf->io, p->fd, pf->nr_slots * PF_MAX_READS, pf->staging,
			  (size_t)pf->block * pf->nr_slots, !p->cfg.no_io_uring, true, eb);
}

static void finish(struct pager *p);

void pg_prefetch_setup(struct pager *p)
{
	struct errbuf eb = { "" };

	if (!p->pf || p->pf->done)
		return;
	if (setup(p, &eb)) {
		/* only speed is lost: every page is still served on demand */
		pr_warn("pager: prefetch disabled: %s", eb.msg);
		finish(p);
	}
}

static void prefetch_release(struct prefetch *pf)
{
	pg_io_exit(&pf->io);
	if (pf->staging)
		munmap(pf->staging, pf->staging_len);
	pf->staging = NULL;
	free(pf->pieces);
	pf->pieces = NULL;
	free(pf->slots);
	pf->slots = NULL;
	free(pf->ws);
	pf->ws = NULL;
}

void pg_prefetch_free(struct pager *p)
{
	if (!p->pf)
		return;
	prefetch_release(p->pf);
	free(p->pf);
	p->pf = NULL;
}

bool pg_prefetch_active(struct pager *p)
{
	return p->pf && !p->pf->done;
}

int pg_prefetch_poll_fd(struct pager *p)
{
	return pg_prefetch_active(p) ? p->pf->io.efd : -1;
}

static struct pf_slot *installable_slot(struct prefetch *pf)
{
	struct pf_slot *best = NULL;

	for (unsigned i = 0; i < pf->nr_slots; i++) {
		struct pf_slot *s = &pf->slots[i];

		if (s->busy && !s->pending && (!best || s->seq < best->seq))
			best = s;
	}
	return best;
}

bool pg_prefetch_ready(struct pager *p)
{
	struct prefetch *pf = p->pf;

	if (!pg_prefetch_active(p))
		return false;
	if (!pf->io.uring)
		return true; /* pread: reads complete when queued */
	if (installable_slot(pf))
		return true;
	for (unsigned i = 0; i < pf->nr_slots; i++)
		if (!pf->slots[i].busy && pf->next < pf->nr_pieces)
			return true;
	return false;
}

static bool all_done(const struct pager *p, uint64_t first, uint64_t n)
{
	for (uint64_t k = 0; k < n; k++)
		if (!bm_test(p->present_bm, first + k) && !bm_test(p->failed_bm, first + k))
			return false;
	return true;
}

/* lz4: decodes and installs chunk u of entry e (read into the slot). Returns bytes. */
static uint64_t install_chunk(struct pager *p, const struct pf_entry *e, uint64_t u)
{
	const struct snap_lz4_chunk *c = snap_lz4_chunk(p->lz4, u);
	uint64_t first, n;

	pg_lz4_chunk_pages(p, u, &first, &n);
	if (all_done(p, first, n))
		return PAGE_SIZE; /* a demand fault got there first */
	if (c->kind == SNAP_CHUNK_ZERO) {
		pg_install(p, first, NULL, n, true, NULL);
		return n * PAGE_SIZE;
	}
	if (pg_lz4_decode(p, u, e->rd.dst + (c->offset - e->rd.off), p->pf->dec) == 0)
		pg_install(p, first, p->pf->dec, n, true, NULL);
	return c->len;
}

/* Installs up to budget bytes of slot s; true when the slot is finished. */
static bool install_slot(struct pager *p, struct pf_slot *s, uint64_t *budget)
{
	while (s->cur < s->nr_ent && *budget) {
		struct pf_entry *e = &s->ent[s->cur];

		if (s->cur_unit == 0 && e->has_read && e->rd.res != (int32_t)e->rd.len) {
			/* the demand path will report the pages if they are ever touched */
			pg_fail(p, "pager: prefetch: reading %u bytes at file offset %llu failed: %s",
				e->rd.len, (unsigned long long)e->rd.off,
				e->rd.res < 0 ? strerror(-e->rd.res) : "short read (memory file truncated?)");
			s->cur_unit = e->count;
		} else if (s->cur_unit == 0 && e->has_read) {
			pg_count(&p->n_bytes_read, e->rd.len);
		}
		while (s->cur_unit < e->count && *budget) {
			uint64_t used;

			if (p->lz4) {
				used = install_chunk(p, e, e->first + s->cur_unit);
				s->cur_unit++;
			} else {
				uint64_t left = e->count - s->cur_unit;
				uint64_t cap = *budget / PAGE_SIZE ? *budget / PAGE_SIZE : 1;
				uint64_t n = left < cap ? left : cap;

				pg_install(p, e->first + s->cur_unit, e->rd.dst + s->cur_unit * PAGE_SIZE,
					   n, true, NULL);
				s->cur_unit += n;
				used = n * PAGE_SIZE;
			}
			*budget = *budget > used ? *budget - used : 0;
		}
		if (s->cur_unit == e->count) {
			s->cur++;
			s->cur_unit = 0;
		}
	}
	return s->cur == s->nr_ent;
}

static int fill_slot(struct pager *p, struct pf_slot *s)
{
	struct prefetch *pf = p->pf;
	uint64_t used = 0;

	s->nr_ent = s->pending = s->cur = 0;
	s->cur_unit = 0;
	while (pf->next < pf->nr_pieces && s->nr_ent < PF_MAX_READS) {
		const struct pf_piece *pc = &pf->pieces[pf->next];
		struct pf_entry *e = &s->ent[s->nr_ent];
		uint64_t off, len;

		piece_span(p, pc->first, pc->count, &off, &len);
		if (used + len > pf->block)
			break;
		*e = (struct pf_entry){ .first = pc->first, .count = pc->count, .has_read = len > 0,
					.rd = { .off = off, .len = (uint32_t)len, .dst = s->buf + used,
						.owner = s } };
		s->pending += e->has_read;
		s->nr_ent++;
		used += (len + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1); /* keep buffers page aligned */
		pf->next++;
	}
	if (!s->nr_ent)
		return 0;
	s->busy = true;
	s->seq = pf->seq++;
	for (unsigned i = 0; i < s->nr_ent; i++) {
		int r = s->ent[i].has_read ? pg_io_queue(&pf->io, &s->ent[i].rd) : 0;

		if (r < 0) {
			/* not queued: these reads count as failed */
			for (unsigned j = i; j < s->nr_ent; j++) {
				if (s->ent[j].has_read)
					s->pending--;
				s->ent[j].rd.res = r;
			}
			return r;
		}
	}
	return 0;
}

static void finish(struct pager *p)
{
	struct prefetch *pf = p->pf;

	__atomic_store_n(&p->prefetch_ns, pg_now_ns() - p->t_start_ns, __ATOMIC_RELAXED);
	pf->done = true;
	prefetch_release(pf); /* the staging memory is not needed any more */
	atomic_store(&p->prefetch_done, true);
}

void pg_prefetch_step(struct pager *p)
{
	struct prefetch *pf = p->pf;
	struct pg_read *done[64];
	uint64_t budget = PF_STEP_BYTES;
	struct pf_slot *s;
	unsigned n;
	bool busy = false;
	int r;

	if (!pg_prefetch_active(p) || !pf->slots)
		return;
	while ((n = pg_io_reap(&pf->io, done, ARRAY_SIZE(done))) > 0)
		for (unsigned i = 0; i < n; i++)
			((struct pf_slot *)done[i]->owner)->pending--;
	while (budget && (s = installable_slot(pf)))
		if (install_slot(p, s, &budget))
			s->busy = false;
	for (unsigned i = 0; i < pf->nr_slots; i++) {
		if (!pf->slots[i].busy && pf->next < pf->nr_pieces) {
			r = fill_slot(p, &pf->slots[i]);
			if (r < 0)
				pg_fail(p, "pager: prefetch: queueing a read: %s", strerror(-r));
		}
		busy |= pf->slots[i].busy;
	}
	r = pg_io_flush(&pf->io);
	if (r < 0)
		pg_fail(p, "pager: prefetch: io_uring_submit: %s", strerror(-r));
	if (!busy && pf->next == pf->nr_pieces)
		finish(p);
}
