/*
 * Whole-snapshot memory conversions: raw <-> lz4. The guest state is the same
 * moment, so the state is copied as is (id, parent, created included); only the
 * memory description changes. A working-set file is carried over: it names guest
 * pages, which do not depend on the encoding.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "snapfmt_int.h"

/* Hands src's ws.bin (if any, validated) to the writer. */
static int carry_ws(const char *src, const struct snap_state *st, struct snap_writer *w,
		    struct snap_err *err)
{
	uint64_t *pages = NULL, n = 0;
	int ret = snap_ws_load(src, st, &pages, &n, err);

	if (ret == -ENOENT)
		return 0;
	if (!ret)
		ret = snap_writer_set_ws(w, pages, n, err);
	free(pages);
	return ret;
}

static const struct snap_extent all_hole; /* with nr_data 0: no data anywhere */

static int convert(const char *src, const char *dst, bool to_lz4, uint32_t chunk_size,
		   struct snap_err *err)
{
	const uint8_t *img = NULL;
	struct snap_extent *data = NULL;
	uint64_t nr_data = 0;
	bool sparse = false;
	struct snap_writer *w = NULL;
	struct snap_state st;
	struct snap_memory *m;
	struct snap_dir d;
	int ret;

	ret = snap_dir_open(src, &d, err);
	if (ret)
		return ret;
	m = &d.state.memory;
	ret = snap_dir_map_image(&d, &img, err);
	if (ret)
		goto out;
	ret = snap_writer_begin(dst, &w, err);
	if (ret)
		goto out;
	/* a raw image's holes are zero: compress reads only its data (sparse_extents.c) */
	if (to_lz4 && !d.lz4)
		sparse = !snap_data_extents(d.mem_fd, m->size, &data, &nr_data);
	if (to_lz4)
		ret = snap_writer_write_lz4_sparse(w, img, m->size, chunk_size,
						   sparse ? (data ? data : &all_hole) : NULL, nr_data,
						   err);
	else if (m->kind == SNAP_MEM_DIFF)
		ret = snap_writer_write_ranges(w, img, m->size, m->ranges, m->nr_ranges, err);
	else
		ret = snap_writer_write_sparse(w, 0, img, m->size, err);
	if (!ret)
		ret = carry_ws(src, &d.state, w, err);
	if (ret) {
		snap_writer_abort(w);
		goto out;
	}
	st = d.state; /* shallow copy, the raw description for decompress */
	st.header.minor = SNAP_FORMAT_MINOR; /* written by this writer, in its format */
	if (!to_lz4) {
		snprintf(st.memory.file, sizeof(st.memory.file), "%s", SNAP_MEMORY_FILE);
		st.memory.encoding = SNAP_ENC_RAW;
		st.memory.chunk_size = 0;
		st.memory.index_file[0] = '\0';
		st.memory.compressed_size = 0;
	}
	ret = snap_writer_commit(w, &st, err); /* frees w */
out:
	free(data);
	snap_dir_unmap_image(&d, img);
	snap_dir_close(&d);
	return ret;
}

int snap_compress(const char *src, const char *dst, uint32_t chunk_size, struct snap_err *err)
{
	return convert(src, dst, true, chunk_size ? chunk_size : SNAP_LZ4_CHUNK_DEFAULT, err);
}

int snap_decompress(const char *src, const char *dst, struct snap_err *err)
{
	return convert(src, dst, false, 0, err);
}
