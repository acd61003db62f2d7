/*
 * The decoded state the index and working-set targets check their files against:
 * fuzz/data/state-{raw,lz4}.msgpack, real state files of a small snapshot
 * (fuzz/make-seeds.sh regenerates them). Read once per process.
 */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz.h"
#include "snapfmt.h"
#include "snapfmt_int.h"

#ifndef FUZZ_DATA_DIR
#define FUZZ_DATA_DIR "fuzz/data"
#endif

void fuzz_load_fixture(const char *name, struct snap_state *st)
{
	struct snap_err err = { "" };
	char path[512];
	uint8_t *buf = NULL;
	size_t len = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", FUZZ_DATA_DIR, name);
	f = fopen(path, "rb");
	if (f) {
		buf = malloc(SNAP_PREAMBLE_SIZE + SNAP_MAX_BODY);
		if (buf)
			len = fread(buf, 1, SNAP_PREAMBLE_SIZE + SNAP_MAX_BODY, f);
		fclose(f);
	}
	if (!buf || !len || snap_state_decode(buf, len, st, &err)) {
		fprintf(stderr, "fuzz: fixture %s: %s\n", path, buf && len ? err.msg : "cannot read");
		abort();
	}
	free(buf);
}

void fuzz_load_chunk_file(uint64_t expect_size)
{
	char path[512];
	uint8_t *buf;
	size_t len = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", FUZZ_DATA_DIR, SNAP_LZ4_MEMORY_FILE);
	buf = malloc(expect_size + 1);
	f = fopen(path, "rb");
	if (f && buf)
		len = fread(buf, 1, expect_size + 1, f);
	if (f)
		fclose(f);
	if (!buf || len != expect_size) {
		fprintf(stderr, "fuzz: fixture %s: %zu bytes, the state says %llu\n", path, len,
			(unsigned long long)expect_size);
		abort();
	}
	fuzz_write_file(SNAP_LZ4_MEMORY_FILE, buf, len);
	free(buf);
}
