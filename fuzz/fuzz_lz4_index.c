/*
 * The lz4 chunk index (memory.idx, FORMAT.md §10.3) as `ember restore` loads it,
 * against a real lz4 snapshot's state and chunk file; when an index passes, every chunk
 * it describes is read and decoded. Input: the index file (its CRC32C is recomputed).
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "snapfmt.h"

static struct snap_state st;
static void *scratch, *chunk;

static void setup(void)
{
	fuzz_load_fixture("state-lz4.msgpack", &st);
	fuzz_load_chunk_file(st.memory.compressed_size);
	scratch = malloc(st.memory.chunk_size * 2ull);
	chunk = malloc(st.memory.chunk_size);
	if (!scratch || !chunk)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct snap_err err = { "" };
	struct snap_lz4_index *ix;

	if (!scratch)
		setup();
	fuzz_write_file_crc(SNAP_LZ4_INDEX_FILE, data, size);
	if (snap_lz4_index_load(fuzz_dir(), &st, &ix, &err) == 0) {
		/* max_stored bounds every read: the scratch must hold it */
		if (ix->max_stored <= st.memory.chunk_size * 2ull)
			for (uint64_t i = 0; i < ix->nr_chunks; i++)
				(void)snap_lz4_chunk_read(ix, i, chunk, scratch, &err);
		snap_lz4_index_free(ix);
	}
	return 0;
}
