/*
 * Diff + base -> full snapshot. The output memory is the base memory with the diff's
 * page ranges laid over it, streamed in chunks through the sparse writer; the state is
 * the diff's (it describes the later moment), turned into a full raw snapshot with a
 * new id. Either input may be raw or lz4 (read through snap_dir_map_image).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snapfmt_int.h"

#define CHUNK (1u << 20)

static int check_compatible(const struct snap_state *b, const struct snap_state *d,
			    const char *base, const char *diff, struct snap_err *err)
{
	if (b->memory.kind != SNAP_MEM_FULL)
		return snap_err_set(err, -EINVAL, "merge: base %s is itself a diff (merge it into its own base first)", base);
	if (d->memory.kind != SNAP_MEM_DIFF)
		return snap_err_set(err, -EINVAL, "merge: %s is a full snapshot, not a diff", diff);
	if (strcmp(d->header.parent, b->header.id))
		return snap_err_set(err, -EINVAL, "merge: %s is a diff of %s, not of %s (id %s)", diff,
				    d->header.parent, base, b->header.id);
	if (b->memory.size != d->memory.size || b->memory.page_size != d->memory.page_size)
		return snap_err_set(err, -EINVAL, "merge: memory layouts differ (size 0x%" PRIx64 " vs 0x%" PRIx64 ")",
				    b->memory.size, d->memory.size);
	if (b->vm.nr_regions != d->vm.nr_regions)
		return snap_err_set(err, -EINVAL, "merge: %u RAM regions in the base, %u in the diff",
				    b->vm.nr_regions, d->vm.nr_regions);
	for (uint32_t i = 0; i < b->vm.nr_regions; i++) {
		const struct snap_region *x = &b->vm.regions[i], *y = &d->vm.regions[i];
		if (x->gpa != y->gpa || x->size != y->size || x->file_offset != y->file_offset)
			return snap_err_set(err, -EINVAL, "merge: vm.regions[%u] differs between base and diff", i);
	}
	return 0;
}

/* Copies base chunk by chunk, overlays the diff ranges falling into it, writes sparse. */
static int merge_memory(struct snap_writer *w, const uint8_t *base, const uint8_t *diff,
			const struct snap_memory *m, struct snap_err *err)
{
	uint8_t *buf = malloc(CHUNK);
	uint32_t ri = 0;
	int ret = 0;

	if (!buf)
		return snap_err_set(err, -ENOMEM, "merge: out of memory");
	for (uint64_t off = 0; off < m->size && !ret; off += CHUNK) {
		uint64_t end = m->size - off < CHUNK ? m->size : off + CHUNK;

		memcpy(buf, base + off, (size_t)(end - off));
		/* ranges are sorted: skip those ending before this chunk, apply those inside */
		while (ri < m->nr_ranges && (m->ranges[ri].first + m->ranges[ri].count) * SNAP_PAGE_SIZE <= off)
			ri++;
		for (uint32_t j = ri; j < m->nr_ranges; j++) {
			uint64_t rs = m->ranges[j].first * SNAP_PAGE_SIZE;
			uint64_t re = rs + m->ranges[j].count * SNAP_PAGE_SIZE;
			uint64_t s = rs > off ? rs : off, e = re < end ? re : end;

			if (rs >= end)
				break;
			memcpy(buf + (s - off), diff + s, (size_t)(e - s));
		}
		if (!ret)
			ret = snap_writer_write_sparse(w, off, buf, end - off, err);
	}
	free(buf);
	return ret;
}

int snap_merge(const char *base, const char *diff, const char *out,
	       struct snap_write_stats *stats, struct snap_err *err)
{
	const uint8_t *bimg = NULL, *dimg = NULL;
	struct snap_dir b, d;
	struct snap_writer *w = NULL;
	struct snap_memory *m;
	int ret;

	ret = snap_dir_open(base, &b, err);
	if (ret)
		return ret;
	ret = snap_dir_open(diff, &d, err);
	if (ret)
		goto out_b;
	ret = check_compatible(&b.state, &d.state, base, diff, err);
	if (ret)
		goto out_d;
	ret = snap_dir_map_image(&b, &bimg, err);
	if (!ret)
		ret = snap_dir_map_image(&d, &dimg, err);
	if (ret)
		goto out_d;
	ret = snap_writer_begin(out, &w, err);
	if (ret)
		goto out_d;
	ret = merge_memory(w, bimg, dimg, &d.state.memory, err);
	if (ret)
		goto out_abort;

	/* the merged snapshot: the diff's state as a full raw snapshot with its own id */
	m = &d.state.memory;
	m->kind = SNAP_MEM_FULL;
	d.state.header.parent[0] = '\0';
	free(m->ranges);
	m->ranges = NULL;
	m->nr_ranges = 0;
	snprintf(m->file, sizeof(m->file), "%s", SNAP_MEMORY_FILE);
	m->encoding = SNAP_ENC_RAW;
	m->chunk_size = 0;
	m->index_file[0] = '\0';
	m->compressed_size = 0;
	ret = snap_new_id(d.state.header.id, err);
	if (!ret) /* the merged image is new: its digests are read back from what was written */
		ret = snap_memory_digest_fd(&d.state, snap_writer_mem_fd(w), err);
	if (ret)
		goto out_abort;
	if (stats)
		*stats = *snap_writer_stats(w);
	ret = snap_writer_commit(w, &d.state, err); /* frees w */
	goto out_d;
out_abort:
	snap_writer_abort(w);
out_d:
	snap_dir_unmap_image(&d, dimg);
	snap_dir_unmap_image(&b, bimg);
	snap_dir_close(&d);
out_b:
	snap_dir_close(&b);
	return ret;
}
