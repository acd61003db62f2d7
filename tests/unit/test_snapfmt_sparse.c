/*
 * Compressing a sparse raw image reads only its data (SEEK_DATA / SEEK_HOLE): a 1 TiB
 * image with a few data pages compresses in well under a second with a small RSS,
 * where reading every hole took minutes and filled the page cache. Too many chunks
 * for one image are refused at once with the chunk size that would do.
 */
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#include "test_snapfmt_fixture.h"

#define TIB (1ull << 40)

static char *tmp, *raw, *lz, *tool;
static struct snap_state st;

/* A full snapshot whose second region makes the image 1 TiB; data only in the first
 * 32 pages and in one page at 512 GiB. */
static void setup(void)
{
	static uint8_t mem[FX_MEM_SIZE];
	const char *b = getenv("EMBER_BUILD");
	struct snap_err err = { "" };
	struct snap_writer *w;
	uint8_t page[SNAP_PAGE_SIZE];

	cr_assert(asprintf(&tool, "%s/ember-snap", b && *b ? b : "build") > 0);
	if (access(tool, X_OK))
		cr_skip_test("%s not built", tool);
	tmp = fx_tmpdir();
	raw = fx_path(tmp, "raw");
	lz = fx_path(tmp, "lz");
	fx_fill_ember_state(&st);
	st.memory.size = TIB;
	st.vm.regions[1].size = TIB - st.vm.regions[1].file_offset;
	for (size_t i = 0; i < 32 * SNAP_PAGE_SIZE; i++)
		mem[i] = (uint8_t)("sparse image "[i % 13]);
	memset(page, 0xa5, sizeof(page));
	cr_assert_eq(snap_writer_begin(raw, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_sparse(w, 0, mem, 32 * SNAP_PAGE_SIZE, &err), 0, "%s",
		     err.msg);
	cr_assert_eq(snap_writer_write_sparse(w, TIB / 2, page, sizeof(page), &err), 0, "%s",
		     err.msg);
	cr_assert_eq(snap_writer_commit(w, &st, &err), 0, "%s", err.msg);
}

static void teardown(void)
{
	snap_state_free(&st);
	if (tmp)
		fx_rm_rf(tmp);
	free(tmp);
	free(raw);
	free(lz);
	free(tool);
}

TestSuite(snapfmt_sparse, .init = setup, .fini = teardown, .timeout = 60);

struct run {
	int status;       /* exit status, or 128 + signal */
	double seconds;
	long maxrss_kb;
	char out[4096];   /* stdout + stderr */
};

/* Runs the tool with args (NULL-terminated), killing it after limit_s seconds. */
static void run_tool(struct run *r, unsigned limit_s, const char *const *args)
{
	const char *argv[8] = { tool };
	struct timespec t0, t1;
	struct rusage ru;
	int pipefd[2], status;
	size_t n = 0;
	ssize_t got;
	pid_t pid;

	for (unsigned i = 0; args[i]; i++)
		argv[i + 1] = args[i];
	cr_assert_eq(pipe(pipefd), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		close(pipefd[0]);
		alarm(limit_s); /* SIGALRM ends a run that takes minutes */
		execv(tool, (char *const *)argv);
		_exit(127);
	}
	close(pipefd[1]);
	while ((got = read(pipefd[0], r->out + n, sizeof(r->out) - 1 - n)) > 0)
		n += (size_t)got;
	r->out[n] = 0;
	close(pipefd[0]);
	cr_assert_eq(wait4(pid, &status, 0, &ru), pid);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	r->seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	r->maxrss_kb = ru.ru_maxrss;
	r->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

Test(snapfmt_sparse, data_extents_name_only_the_written_parts)
{
	struct snap_extent *ext;
	char *mem = fx_path(raw, SNAP_MEMORY_FILE);
	uint64_t nr;
	int fd = open(mem, O_RDONLY);

	cr_assert_geq(fd, 0);
	cr_assert_eq(snap_data_extents(fd, TIB, &ext, &nr), 0);
	cr_assert_eq(nr, 2, "%llu extents", (unsigned long long)nr);
	cr_assert_eq(ext[0].off, 0);
	cr_assert_geq(ext[0].len, 32 * SNAP_PAGE_SIZE);
	cr_assert_leq(ext[1].off, TIB / 2);
	cr_assert_geq(ext[1].off + ext[1].len, TIB / 2 + SNAP_PAGE_SIZE);
	cr_assert_lt(ext[1].off + ext[1].len, TIB, "the end of the file is a hole");
	free(ext);
	close(fd);
	free(mem);
}

Test(snapfmt_sparse, compress_of_a_sparse_1_tib_image_reads_only_its_data)
{
	static const char *const compress[] = { "compress", "--chunk-size=1M", NULL, NULL, NULL };
	const char *args[5], *verify[] = { "verify", NULL, NULL };
	struct run r;

	memcpy(args, compress, sizeof(args));
	args[2] = raw;
	args[3] = lz;
	run_tool(&r, 30, args);
	cr_assert_eq(r.status, 0, "exit %d after %.1f s:\n%s", r.status, r.seconds, r.out);
	cr_log_info("1 TiB sparse compress: %.2f s, max RSS %ld KiB", r.seconds, r.maxrss_kb);
	cr_assert_lt(r.seconds, 5.0, "compress took %.1f s", r.seconds);
	cr_assert_lt(r.maxrss_kb, 128 * 1024, "max RSS %ld KiB", r.maxrss_kb);
	cr_assert(strstr(r.out, "1048576: 1048574 zero"), "two data chunks, the rest zero:\n%s",
		  r.out);
	verify[1] = lz;
	run_tool(&r, 30, verify);
	cr_assert_eq(r.status, 0, "the lz4 snapshot does not verify:\n%s", r.out);
}

Test(snapfmt_sparse, too_many_chunks_are_refused_at_once_naming_the_chunk_size_needed)
{
	const char *args[] = { "compress", raw, lz, NULL };
	struct run r;

	run_tool(&r, 30, args);
	cr_assert_eq(r.status, 1, "exit %d:\n%s", r.status, r.out);
	cr_assert_lt(r.seconds, 5.0, "refusing took %.1f s", r.seconds);
	cr_assert(strstr(r.out, "16777216 chunks (at most 4194304"), "%s", r.out);
	cr_assert(strstr(r.out, "262144 bytes is needed"), "%s", r.out);
	cr_assert_neq(access(lz, F_OK), 0, "a refused compress left %s", lz);
}
