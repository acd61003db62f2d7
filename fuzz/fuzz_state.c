/*
 * The state-file decoder: msgpack precheck, schema decode and validation, then the
 * checks `ember restore` and `ember-snap verify` run on a decoded state (devices,
 * nested-state compatibility), then the dump. Input: the msgpack body; the harness
 * writes the 16-byte preamble with the right length and CRC32C around it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/x86_64/x86.h"
#include "dev/dev.h"
#include "fuzz.h"
#include "snapfmt.h"
#include "snapfmt_int.h"
#include "vmm.h"

static FILE *devnull;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct snap_err err = { "" };
	struct errbuf eb = { { 0 } };
	struct snap_state st;
	uint8_t *file;

	if (size > SNAP_MAX_BODY)
		return 0;
	if (!devnull)
		devnull = fopen("/dev/null", "w");
	file = malloc(SNAP_PREAMBLE_SIZE + size + 1);
	if (!file)
		return 0;
	memcpy(file, SNAP_MAGIC, 8);
	snap_put_le32(file + 8, (uint32_t)size);
	snap_put_le32(file + 12, snap_crc32c(0, data, size));
	memcpy(file + SNAP_PREAMBLE_SIZE, data, size);
	if (snap_state_decode(file, SNAP_PREAMBLE_SIZE + size, &st, &err) == 0) {
		if (snap_state_validate(&st, &err) == 0 && devices_check_state(&st, &eb) == 0)
			(void)x86_check_snapshot_nested(&st, &eb);
		if (devnull)
			snap_dump(devnull, &st);
	}
	snap_state_free(&st);
	free(file);
	return 0;
}
