/*
 * Damaged compressed snapshots. What the index can check (sizes, CRC of the index,
 * the snapshot id, the memory file's length) is refused at restore, before any VM:
 * exit 1 with a message naming the file. A chunk whose bytes were changed in place
 * passes those checks; its CRC32C catches it when the page server (on a fault, or
 * while prefetching) or the eager loader decodes it: the VM stops with an error naming
 * the chunk, no checksum is ever printed from the damaged memory, and nothing hangs.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapfmt.h"
#include "testlib.h"

#define CMDLINE "heap=32M seed=31 ws=4M"
#define MEM_MIB 64
/* ember's own deadline: a hang shows as exit 124, not as a stuck test */
#define EMBER_TIMEOUT "--timeout 20"

static char tmp[PATH_MAX];
static struct lazyt_golden g;

static void init(void)
{
	char dir[PATH_MAX];

	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(dir, tmp, "golden");
	lazyt_golden(&g, dir, CMDLINE, MEM_MIB, true);
}

static void fini(void)
{
	if (tmp[0])
		ember_test_rmtree(tmp);
	tmp[0] = 0;
}

TestSuite(lazy_corrupt, .init = init, .fini = fini, .timeout = 120);

static void file_path(char *out, const char *dir, const char *name)
{
	snapt_join(out, dir, "%s", name);
}

static void truncate_by(const char *name, off_t bytes)
{
	char path[PATH_MAX];
	struct stat st;

	file_path(path, g.dir, name);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(truncate(path, st.st_size - bytes), 0);
}

static void flip_byte(const char *name, off_t off)
{
	char path[PATH_MAX];
	uint8_t *data;
	size_t len;

	file_path(path, g.dir, name);
	data = snapt_read_file(path, &len);
	cr_assert_lt((size_t)off, len);
	data[off] ^= 0x01;
	cr_assert_eq(unlink(path), 0);
	ember_test_write_file(g.dir, name, data, len);
	free(data);
}

/* A restore of g.dir that must be refused before the guest runs, naming `needle`. */
static void expect_refused(const char *opts, const char *needle)
{
	struct proc_result r;

	lazyt_restore(&r, g.dir, opts, "verify serve exit");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "exit %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, needle), "the message names '%s':\n%s", needle, r.err);
	cr_assert_eq(snapt_count(r.out, "checksum="), 0, "the guest ran:\n%s", r.out);
	proc_result_free(&r);
}

Test(lazy_corrupt, truncated_memory_file_is_refused)
{
	truncate_by(SNAP_LZ4_MEMORY_FILE, 1000);
	expect_refused("--mem-backend uffd", "memory.lz4 is");
	expect_refused("--mem-backend eager", "truncated");
}

Test(lazy_corrupt, truncated_index_is_refused)
{
	truncate_by("memory.idx", 16);
	expect_refused("--mem-backend uffd", "memory.idx");
	expect_refused("--mem-backend uffd", "truncated");
}

Test(lazy_corrupt, index_cut_inside_its_header_is_refused)
{
	char path[PATH_MAX];

	file_path(path, g.dir, "memory.idx");
	cr_assert_eq(truncate(path, 10), 0);
	expect_refused("--mem-backend uffd", "memory.idx");
}

Test(lazy_corrupt, garbled_index_entry_is_refused)
{
	/* a byte of entry 3 (80-byte header, 16 bytes per entry): the index CRC catches it */
	flip_byte("memory.idx", 80 + 3 * 16 + 9);
	expect_refused("--mem-backend uffd", "memory.idx: CRC32C mismatch");
}

Test(lazy_corrupt, garbled_index_magic_is_refused)
{
	flip_byte("memory.idx", 0);
	expect_refused("--mem-backend uffd", "memory.idx: bad magic");
}

Test(lazy_corrupt, missing_index_is_refused)
{
	char path[PATH_MAX];

	file_path(path, g.dir, "memory.idx");
	cr_assert_eq(unlink(path), 0);
	expect_refused("--mem-backend uffd", "memory.idx: No such file or directory");
	expect_refused("--mem-backend eager", "memory.idx");
}

Test(lazy_corrupt, index_of_another_snapshot_is_refused)
{
	struct lazyt_golden other;
	char dir[PATH_MAX], path[PATH_MAX];
	uint8_t *idx;
	size_t len;

	/* the same guest again: same geometry, a different snapshot */
	snapt_join(dir, tmp, "other");
	lazyt_golden(&other, dir, CMDLINE, MEM_MIB, true);
	file_path(path, dir, "memory.idx");
	idx = snapt_read_file(path, &len);
	file_path(path, g.dir, "memory.idx");
	cr_assert_eq(unlink(path), 0);
	ember_test_write_file(g.dir, "memory.idx", idx, len);
	free(idx);
	expect_refused("--mem-backend uffd", "memory.idx");
}

Test(lazy_corrupt, index_whose_id_is_another_snapshots_is_refused)
{
	struct snapmut *m = snapmut_load(g.dir);

	/* everything matches but the id the index was written for */
	snapmut_set_str(m, "header.id", "0123456789abcdef0123456789abcdef");
	snapmut_save(m, g.dir);
	snapmut_free(m);
	expect_refused("--mem-backend uffd", "memory.idx: belongs to another snapshot");
}

/* ---- damage the index cannot see ------------------------------------------------------ */

/* Runs the damaged snapshot and checks the VM stopped on chunk `chunk`, cleanly. */
static void expect_stopped_on_chunk(const char *opts, const char *cmds, uint64_t chunk,
				    const char *why)
{
	struct proc_result r;
	char name[64];

	lazyt_restore(&r, g.dir, opts, cmds);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "%s: exit %d (124: it hung)\n%s%s", opts, r.status, r.out, r.err);
	snprintf(name, sizeof(name), "chunk %llu ", (unsigned long long)chunk);
	cr_assert(strstr(r.err, name), "%s: the error names %s:\n%s", opts, name, r.err);
	cr_assert(strstr(r.err, why), "%s: the error says '%s':\n%s", opts, why, r.err);
	cr_assert_eq(snapt_count(r.out, "checksum="), 0, "%s: a checksum from damaged memory:\n%s",
		     opts, r.out);
	proc_result_free(&r);
}

Test(lazy_corrupt, damaged_chunk_met_by_a_fault_stops_the_vm_naming_it)
{
	/* inside the heap: verify reads it */
	uint64_t chunk = lazyt_nonzero_chunk(g.dir, g.heap_at + g.heap / 2);

	lazyt_damage_chunk(g.dir, chunk, true);
	expect_stopped_on_chunk("--mem-backend uffd " EMBER_TIMEOUT, "verify serve exit", chunk,
				"guest memory: pager: memory chunk");
	expect_stopped_on_chunk("--mem-backend uffd " EMBER_TIMEOUT, "verify serve exit", chunk,
				"CRC32C");
}

Test(lazy_corrupt, garbled_lz4_block_met_by_a_fault_stops_the_vm_naming_it)
{
	uint64_t chunk = lazyt_nonzero_chunk(g.dir, g.heap_at);

	/* the middle of an lz4 block: the decoder or the CRC32C refuses it */
	lazyt_damage_chunk(g.dir, chunk, false);
	expect_stopped_on_chunk("--mem-backend uffd " EMBER_TIMEOUT, "verify serve exit", chunk,
				"guest memory: pager: memory chunk");
}

Test(lazy_corrupt, damaged_chunk_met_by_the_eager_loader_is_refused)
{
	uint64_t chunk = lazyt_nonzero_chunk(g.dir, g.heap_at + g.heap / 3);

	lazyt_damage_chunk(g.dir, chunk, true);
	expect_stopped_on_chunk("--mem-backend eager", "verify serve exit", chunk, "CRC32C");
}

/*
 * Records the working set of one request and returns the first or last non-zero heap
 * chunk in it, in prefetch order (first touch): the first is read before the vCPU
 * has even started, the last while it runs.
 */
static uint64_t working_set_chunk(bool first)
{
	struct snap_err err = { "" };
	struct snap_state st;
	struct proc_result r;
	uint64_t n, *ws, chunk = UINT64_MAX, chunk_size;

	lazyt_restore(&r, g.dir, "--record-ws", "serve exit");
	cr_assert_eq(r.status, 0, "recording run:\n%s", r.err);
	proc_result_free(&r);
	cr_assert_eq(snap_state_load(g.dir, &st, &err), 0, "%s", err.msg);
	chunk_size = st.memory.chunk_size;
	snap_state_free(&st);
	ws = lazyt_ws_load(g.dir, &n);
	for (uint64_t k = 0; k < n && chunk == UINT64_MAX; k++) {
		uint64_t page = ws[first ? k : n - 1 - k], c = page * 4096 / chunk_size;

		if (page * 4096 >= g.heap_at && lazyt_nonzero_chunk(g.dir, c * chunk_size) == c)
			chunk = c;
	}
	free(ws);
	cr_assert_neq(chunk, UINT64_MAX, "the working set has a non-zero heap chunk");
	return chunk;
}

/* The guest only spins: it never touches the heap, so only the prefetch meets the chunk. */
Test(lazy_corrupt, damaged_chunk_met_early_in_prefetch_stops_the_vm_naming_it)
{
	uint64_t chunk = working_set_chunk(true);

	lazyt_damage_chunk(g.dir, chunk, true);
	expect_stopped_on_chunk("--prefetch ws " EMBER_TIMEOUT, "spin", chunk, "CRC32C");
}

Test(lazy_corrupt, damaged_chunk_met_late_in_prefetch_stops_the_vm_naming_it)
{
	uint64_t chunk = working_set_chunk(false);

	lazyt_damage_chunk(g.dir, chunk, true);
	expect_stopped_on_chunk("--prefetch ws " EMBER_TIMEOUT, "spin", chunk, "CRC32C");
}
