/*
 * The snapshot's memory file under running clones, and declared sizes against reality.
 * A raw golden file truncated or rewritten under a running clone must stop the clone
 * cleanly (exit 1, a message naming the file, no SIGBUS, its control socket removed),
 * never let it run on changed bytes; an lz4 snapshot declaring far more memory than
 * ember runs is refused before anything is sized by it.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapfmt.h"
#include "snapfmt_int.h"
#include "testlib.h"

#define WAIT_MS 30000

static char tmp[PATH_MAX];

static void fini(void)
{
	if (tmp[0])
		ember_test_kill_strays(tmp);
	ember_test_rmtree(tmp);
	tmp[0] = 0;
}

TestSuite(snapshot_memfile, .fini = fini, .timeout = 120);

/* A golden snapshot and a clone of it running (mmap backend) behind a control socket. */
static struct proc *running_clone(char *golden, char *sock, const char *backend)
{
	struct proc *p;

	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(golden, tmp, "golden");
	snapt_join(sock, tmp, "api.sock");
	snapt_golden(golden, "heap=16M seed=1", 64);
	p = ember_test_start("restore", "--snapshot", golden, "--mem-backend", backend,
			     "--api-sock", sock, NULL);
	snapt_wait_socket(sock, WAIT_MS);
	return p;
}

static void assert_clean_stop(struct proc *p, const char *sock, const char *what)
{
	struct proc_result r;
	struct stat stb;

	cr_assert_eq(proc_finish(p, WAIT_MS, &r), 0);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.signal, 0, "%s: the clone died of signal %d:\n%s", what, r.signal, r.err);
	cr_assert_eq(r.status, 1, "%s: the clone exited %d, not 1:\n%s", what, r.status, r.err);
	cr_assert_not_null(strstr(r.err, "memory.raw is being changed by another process"),
			   "%s: no message naming the memory file:\n%s", what, r.err);
	cr_assert_neq(stat(sock, &stb), 0, "%s: the control socket %s was left behind", what, sock);
	proc_result_free(&r);
}

Test(snapshot_memfile, truncating_the_golden_file_stops_an_mmap_clone_cleanly)
{
	char golden[PATH_MAX], sock[PATH_MAX], mem[PATH_MAX];
	struct proc *p = running_clone(golden, sock, "mmap");

	snapt_join(mem, golden, "memory.raw");
	/* blocks until the clone has let go of the file */
	cr_assert_eq(truncate(mem, 4096), 0, "truncate: %s", strerror(errno));
	assert_clean_stop(p, sock, "truncate");
}

Test(snapshot_memfile, rewriting_the_golden_file_in_place_stops_a_clone_before_it_changes)
{
	char golden[PATH_MAX], sock[PATH_MAX], mem[PATH_MAX];
	static uint8_t junk[1 << 16];
	struct proc *p = running_clone(golden, sock, "uffd");
	int fd;

	snapt_join(mem, golden, "memory.raw");
	memset(junk, 0xa5, sizeof(junk));
	/* the open blocks until the clone has stopped: it never sees the new bytes */
	fd = open(mem, O_WRONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "open: %s", strerror(errno));
	assert_clean_stop(p, sock, "rewrite");
	cr_assert_eq(pwrite(fd, junk, sizeof(junk), 1 << 20), (ssize_t)sizeof(junk));
	close(fd);
}

Test(snapshot_memfile, a_golden_file_open_for_writing_is_refused)
{
	char golden[PATH_MAX], mem[PATH_MAX];
	struct proc_result r;
	int fd;

	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(golden, tmp, "golden");
	snapt_golden(golden, "heap=16M seed=1", 64);
	snapt_join(mem, golden, "memory.raw");
	fd = open(mem, O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", golden, "--guest-cmd", "verify",
		       "--guest-cmd", "exit", NULL);
	close(fd);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "exited %d:\n%s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, "is open for writing by another process"), "%s", r.err);
	proc_result_free(&r);
}

/* An all-zero lz4 snapshot of `mem` bytes in 2 MiB chunks: an empty chunk file, and an
 * index that agrees with the state. */
static void declare_lz4_memory(const char *dir, uint64_t mem)
{
	const uint32_t chunk = 2u << 20;
	uint64_t n = snap_lz4_nr_chunks(mem, chunk);
	struct snap_lz4_chunk *chunks = calloc(n, sizeof(*chunks));
	struct snap_state st;
	struct snap_err se;
	char path[PATH_MAX];
	uint8_t *buf;
	size_t len;

	cr_assert_not_null(chunks);
	cr_assert_eq(snap_state_load(dir, &st, &se), 0, "%s", se.msg);
	st.memory.size = mem;
	snap_memory_clear_digests(&st.memory); /* as an older writer: no digests */
	st.memory.encoding = SNAP_ENC_LZ4;
	st.memory.chunk_size = chunk;
	st.memory.compressed_size = 0;
	snprintf(st.memory.file, sizeof(st.memory.file), "%s", SNAP_LZ4_MEMORY_FILE);
	snprintf(st.memory.index_file, sizeof(st.memory.index_file), "%s", SNAP_LZ4_INDEX_FILE);
	cr_assert_eq(snap_lz4_index_encode(chunks, n, chunk, mem, 0, st.header.id, &buf, &len, &se),
		     0, "%s", se.msg);
	ember_test_write_file(dir, SNAP_LZ4_INDEX_FILE, buf, len);
	free(buf);
	cr_assert_eq(snap_state_encode(&st, &buf, &len, &se), 0, "%s", se.msg);
	snapt_join(path, dir, "%s", SNAP_STATE_FILE);
	unlink(path);
	ember_test_write_file(dir, SNAP_STATE_FILE, buf, len);
	free(buf);
	ember_test_write_file(dir, SNAP_LZ4_MEMORY_FILE, "", 0);
	snapt_join(path, dir, "memory.raw");
	unlink(path);
	snap_state_free(&st);
	free(chunks);
}

Test(snapshot_memfile, a_256_gib_lz4_snapshot_with_an_empty_chunk_file_is_refused_quickly)
{
	char golden[PATH_MAX];
	struct proc_result r;
	struct rusage ru;
	uint64_t t0;
	struct timespec ts;

	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(golden, tmp, "golden");
	snapt_golden(golden, "heap=16M seed=1", 64);
	declare_lz4_memory(golden, 256ull << 30);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	t0 = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", golden, "--guest-cmd", "exit", NULL);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "exited %d:\n%s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, "declares 262144 MiB of memory, more than the 65536 MiB"),
			   "%s", r.err);
	cr_assert_lt((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 - t0, 2000,
		     "the refusal took over 2 s");
	/* every child of this test so far: the golden boot (64 MiB guest) and the refusal */
	cr_assert_eq(getrusage(RUSAGE_CHILDREN, &ru), 0);
	cr_assert_lt(ru.ru_maxrss, 256 * 1024, "a child grew to %ld KiB", ru.ru_maxrss);
	proc_result_free(&r);
}
