/*
 * The working-set file (ws.bin, FORMAT.md §10.5-10.6) as `--prefetch ws` loads it,
 * against a real snapshot's state, then turned into prefetch ranges. Input: the file
 * (its CRC32C is recomputed).
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "snapfmt.h"

static struct snap_state st;
static int loaded;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct snap_err err = { "" };
	struct snap_range *r = NULL;
	uint64_t *pages = NULL, n = 0;
	uint64_t nr = 0;

	if (!loaded) {
		fuzz_load_fixture("state-raw.msgpack", &st);
		loaded = 1;
	}
	fuzz_write_file_crc(SNAP_WS_FILE, data, size);
	if (snap_ws_load(fuzz_dir(), &st, &pages, &n, &err) == 0) {
		if (snap_ws_ranges(pages, n, 8, &r, &nr, &err) == 0)
			free(r);
		free(pages);
	}
	return 0;
}
