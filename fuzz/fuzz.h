/*
 * Shared bits of the libFuzzer targets (fuzz/README.md). Each target feeds one
 * untrusted-input parser; where the format carries a CRC32C, the target recomputes it
 * over the fuzzed bytes first, so the fuzzer explores the parser behind the checksum
 * instead of stopping at it.
 */
#ifndef EMBER_FUZZ_H
#define EMBER_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A private scratch directory (under /dev/shm when it exists), made once per process. */
const char *fuzz_dir(void);
/* Writes len bytes to DIR/name (replacing it); aborts on I/O errors (not a finding). */
void fuzz_write_file(const char *name, const void *buf, size_t len);
/* Encodes st as DIR/state.msgpack (aborts if it cannot: the harness's own bug). */
struct snap_state;
void fuzz_write_state(const struct snap_state *st);
/* Decodes fuzz/data/NAME (a real state file) into st; aborts if it cannot. */
void fuzz_load_fixture(const char *name, struct snap_state *st);
/* Copies fuzz/data/memory.lz4 (expect_size bytes, or abort) into the scratch directory. */
void fuzz_load_chunk_file(uint64_t expect_size);
/* Little-endian CRC32C of buf[from..len) stored at buf[at..at+4), as the chunk-index and
 * working-set headers carry it (FORMAT.md §10.3, §10.5). No-op when len < from. */
void fuzz_fix_crc(uint8_t *buf, size_t len, size_t at, size_t from);

/* fuzz_write_file of a copy of data with its header CRC32C recomputed (fuzz_fix_crc at
 * 12, from 16: the chunk-index and working-set layout). */
void fuzz_write_file_crc(const char *name, const uint8_t *data, size_t size);

#endif
