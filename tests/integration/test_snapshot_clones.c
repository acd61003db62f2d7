/*
 * Clones: one golden snapshot restored many times, two processes at a time. Every clone
 * must be the golden guest (the heap checksum it computes after the restore), must get
 * its own VM generation (FORMAT.md section 11: clones re-seed from it), and must leave
 * the snapshot exactly as it was: the memory file is shared read-only through the page
 * cache, never written.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testlib.h"
#include "snapfmt.h"

#define WAIT_MS 30000
#define CLONES 20
#define PARALLEL 2

static char tmp[PATH_MAX];

static void fini(void)
{
	ember_test_rmtree(tmp);
	tmp[0] = 0;
}

TestSuite(snapshot_clones, .fini = fini, .timeout = 180);

struct dir_fingerprint {
	uint8_t *state;
	size_t state_len;
	struct stat mem;
	uint32_t mem_crc;
};

static void fingerprint(const char *dir, struct dir_fingerprint *fp)
{
	char path[PATH_MAX];
	uint8_t *mem;
	size_t len;

	snapt_join(path, dir, "%s", SNAP_STATE_FILE);
	fp->state = snapt_read_file(path, &fp->state_len);
	snapt_join(path, dir, "%s", SNAP_MEMORY_FILE);
	cr_assert_eq(stat(path, &fp->mem), 0);
	mem = snapt_read_file(path, &len);
	fp->mem_crc = snap_crc32c(0, mem, len);
	free(mem);
}

static uint64_t generation_of(const char *out)
{
	char line[64];
	uint64_t gen;
	char *end;

	cr_assert_not_null(proc_find_line(out, "generation=", line, sizeof(line)), "no generation:\n%s",
			   out);
	gen = strtoull(line + 11, &end, 16);
	cr_assert_eq(*end, 0, "bad generation line '%s'", line);
	return gen;
}

Test(snapshot_clones, twenty_clones_are_the_golden_guest_with_distinct_generations)
{
	char golden[PATH_MAX];
	struct dir_fingerprint before, after;
	static const char *const backends[] = { "mmap", "uffd", "mmap", "eager" };
	uint64_t sum, gens[CLONES];

	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(golden, tmp, "golden");
	sum = snapt_golden(golden, "heap=64M seed=1", 96);
	fingerprint(golden, &before);

	for (unsigned c = 0; c < CLONES; c += PARALLEL) {
		struct proc *p[PARALLEL];

		/* every backend shares the snapshot read-only */
		for (unsigned k = 0; k < PARALLEL; k++)
			p[k] = ember_test_start("restore", "--snapshot", golden, "--mem-backend",
						backends[(c + k) % ARRAY_SIZE(backends)], "--guest-cmd",
						"verify", "--guest-cmd", "generation", "--guest-cmd",
						"exit", NULL);
		for (unsigned k = 0; k < PARALLEL; k++) {
			struct proc_result r;

			cr_assert_eq(proc_finish(p[k], WAIT_MS, &r), 0);
			ember_test_assert_no_crash(&r);
			cr_assert_eq(r.status, 0, "clone %u (%s) exited %d:\n%s", c + k,
				     backends[(c + k) % ARRAY_SIZE(backends)], r.status, r.err);
			cr_assert_eq(snapt_checksum(r.out, 0), sum,
				     "clone %u: heap checksum %016llx, golden %016llx", c + k,
				     (unsigned long long)snapt_checksum(r.out, 0),
				     (unsigned long long)sum);
			gens[c + k] = generation_of(r.out);
			cr_assert_neq(gens[c + k], 0, "clone %u: generation 0 after a restore", c + k);
			for (unsigned j = 0; j < c + k; j++)
				cr_assert_neq(gens[j], gens[c + k], "clones %u and %u share generation "
					      "%016llx", j, c + k, (unsigned long long)gens[j]);
			proc_result_free(&r);
		}
	}

	fingerprint(golden, &after);
	cr_assert_eq(after.state_len, before.state_len);
	cr_assert_eq(memcmp(after.state, before.state, before.state_len), 0,
		     "the state file changed");
	cr_assert_eq(after.mem.st_size, before.mem.st_size, "the memory file changed size");
	cr_assert(after.mem.st_mtim.tv_sec == before.mem.st_mtim.tv_sec &&
		  after.mem.st_mtim.tv_nsec == before.mem.st_mtim.tv_nsec,
		  "the memory file was written to (mtime changed)");
	cr_assert_eq(after.mem_crc, before.mem_crc, "the memory file's bytes changed");
	free(before.state);
	free(after.state);
	snapt_verify_ok(golden);
}
