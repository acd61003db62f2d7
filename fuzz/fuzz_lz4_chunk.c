/*
 * One lz4 chunk's stored bytes through snap_lz4_chunk_decode, the decoder the page
 * server runs on every lazily loaded chunk. Input: byte 0 picks the chunk size (4 KiB
 * .. 2 MiB) and byte 1 the kind (zero, raw, lz4); the rest are the stored bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "snapfmt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct snap_err err = { "" };
	struct snap_lz4_chunk ch = { 0 };
	struct snap_lz4_index ix = { .fd = -1 };
	uint8_t *dst;

	if (size < 2)
		return 0;
	ix.chunk_shift = 12 + data[0] % 10;
	ix.chunk_size = 1u << ix.chunk_shift;
	ix.nr_chunks = 1;
	ix.mem_size = ix.chunk_size;
	ix.chunks = &ch;
	ch.kind = data[1] % 3;
	ch.len = ix.chunk_size;
	ch.stored_len = (uint32_t)(size - 2);
	ch.offset = ch.kind == SNAP_CHUNK_ZERO ? 0 : 4096;
	ix.max_stored = ch.stored_len;
	dst = malloc(ix.chunk_size);
	if (!dst)
		return 0;
	ch.crc32c = snap_crc32c(0, data + 2, size - 2);
	(void)snap_lz4_chunk_decode(&ix, 0, size > 2 ? data + 2 : NULL, ch.stored_len, dst, &err);
	free(dst);
	return 0;
}
