/* Snapshot directories: the atomic writer, sparse memory, and the memory-file checks on open. */
#include <sys/mman.h>

#include "test_snapfmt_fixture.h"

static char *tmp;
static struct snap_state st;
static struct snap_err err;
static uint8_t mem[FX_MEM_SIZE];

static void setup(void)
{
	tmp = fx_tmpdir();
	fx_fill_state(&st);
	memset(&err, 0, sizeof(err));
	/* pages 0, 2, 3, 40 and the last one hold data; the rest are zero */
	memset(mem, 0, sizeof(mem));
	for (int pg = 0; pg < 64; pg++)
		if (pg == 0 || pg == 2 || pg == 3 || pg == 40 || pg == 63)
			for (uint32_t i = 0; i < SNAP_PAGE_SIZE; i += 97)
				mem[pg * SNAP_PAGE_SIZE + i] = (uint8_t)(pg + i + 1);
}

static void teardown(void)
{
	snap_state_free(&st);
	fx_rm_rf(tmp);
	free(tmp);
}

TestSuite(snapfmt_dir, .init = setup, .fini = teardown);

Test(snapfmt_dir, write_then_open_round_trips_state_and_memory)
{
	char *dir = fx_path(tmp, "snap");
	struct snap_dir d;
	uint8_t *map;

	fx_write_snapshot(dir, &st, mem);
	cr_assert_eq(snap_dir_open(dir, &d, &err), 0, "%s", err.msg);
	cr_assert_str_eq(d.state.header.id, st.header.id);
	cr_assert_eq(d.state.vcpus[1].regs.rip, st.vcpus[1].regs.rip);
	cr_assert_eq(d.mem.logical, FX_MEM_SIZE);
	map = mmap(NULL, FX_MEM_SIZE, PROT_READ, MAP_PRIVATE, d.mem_fd, 0);
	cr_assert_neq(map, MAP_FAILED);
	cr_assert_eq(memcmp(map, mem, FX_MEM_SIZE), 0, "memory image differs");
	cr_assert_eq(map[FX_MEM_SIZE - 1], mem[FX_MEM_SIZE - 1]);
	munmap(map, FX_MEM_SIZE);
	snap_dir_close(&d);
	cr_assert_eq(d.mem_fd, -1);
	free(dir);
}

Test(snapfmt_dir, zero_pages_are_skipped_and_counted)
{
	char *dir = fx_path(tmp, "snap");
	struct snap_writer *w;
	struct stat sb;
	char *memfile;

	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_sparse(w, 0, mem, FX_MEM_SIZE, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_stats(w)->pages_written, 5);
	cr_assert_eq(snap_writer_stats(w)->zero_pages_skipped, 59);
	cr_assert_eq(snap_writer_stats(w)->bytes_written, 5 * SNAP_PAGE_SIZE);
	cr_assert_eq(snap_writer_commit(w, &st, &err), 0, "%s", err.msg);
	memfile = fx_path(dir, SNAP_MEMORY_FILE);
	cr_assert_eq(stat(memfile, &sb), 0);
	cr_assert_eq(sb.st_size, FX_MEM_SIZE);
	cr_assert_lt((uint64_t)sb.st_blocks * 512, FX_MEM_SIZE / 2, "memory file is not sparse");
	free(memfile);
	free(dir);
}

Test(snapfmt_dir, trailing_zero_pages_still_give_the_full_size)
{
	char *dir = fx_path(tmp, "snap");
	struct snap_dir d;

	memset(mem + 40 * SNAP_PAGE_SIZE, 0, 24 * SNAP_PAGE_SIZE);
	fx_write_snapshot(dir, &st, mem);
	cr_assert_eq(snap_dir_open(dir, &d, &err), 0, "%s", err.msg);
	cr_assert_eq(d.mem.logical, FX_MEM_SIZE);
	snap_dir_close(&d);
	free(dir);
}

Test(snapfmt_dir, refuses_an_existing_directory)
{
	char *dir = fx_path(tmp, "snap");
	struct snap_writer *w = (void *)1;

	cr_assert_eq(mkdir(dir, 0755), 0);
	cr_assert_eq(snap_writer_begin(dir, &w, &err), -EEXIST);
	cr_assert_null(w);
	cr_assert(strstr(err.msg, "already exists"), "%s", err.msg);
	cr_assert_eq(fx_count_entries(tmp), 1);
	cr_assert_eq(fx_count_entries(dir), 0);
	free(dir);
}

Test(snapfmt_dir, refuses_a_directory_that_appears_before_commit)
{
	char *dir = fx_path(tmp, "snap");
	struct snap_writer *w;

	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_sparse(w, 0, mem, FX_MEM_SIZE, &err), 0);
	cr_assert_eq(mkdir(dir, 0755), 0); /* an empty dir: plain rename() would replace it */
	cr_assert_eq(snap_writer_commit(w, &st, &err), -EEXIST);
	cr_assert(strstr(err.msg, "appeared while writing"), "%s", err.msg);
	cr_assert_eq(fx_count_entries(dir), 0);
	cr_assert_eq(fx_count_entries(tmp), 1, "temp directory left behind");
	free(dir);
}

Test(snapfmt_dir, nonexistent_parent_leaves_nothing)
{
	char *dir = fx_path(tmp, "missing/snap");
	struct snap_writer *w;

	cr_assert_eq(snap_writer_begin(dir, &w, &err), -ENOENT);
	cr_assert(strstr(err.msg, "No such file or directory"), "%s", err.msg);
	cr_assert_eq(fx_count_entries(tmp), 0);
	free(dir);
}

Test(snapfmt_dir, unwritable_parent_leaves_nothing)
{
	struct snap_writer *w;

	/* /sys and /proc refuse mkdir even for root, unlike a chmod 0555 directory */
	cr_assert_lt(snap_writer_begin("/sys/ember-snapfmt-test", &w, &err), 0);
	cr_assert(strstr(err.msg, "cannot create snapshot temp directory"), "%s", err.msg);
	cr_assert_lt(snap_writer_begin("/proc/ember-snapfmt-test", &w, &err), 0);
}

Test(snapfmt_dir, failed_commit_removes_the_temp_directory)
{
	char *dir = fx_path(tmp, "snap");
	struct snap_writer *w;

	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(fx_count_entries(tmp), 1);
	cr_assert_eq(snap_writer_write_sparse(w, 0, mem, FX_MEM_SIZE, &err), 0);
	st.vcpus[1].id = 0; /* invalid: duplicate vCPU id */
	cr_assert_eq(snap_writer_commit(w, &st, &err), -EINVAL);
	cr_assert(strstr(err.msg, "duplicate vCPU id"), "%s", err.msg);
	cr_assert_eq(fx_count_entries(tmp), 0, "something was left behind");
	free(dir);
}

Test(snapfmt_dir, memory_written_past_memory_size_fails_the_commit)
{
	char *dir = fx_path(tmp, "snap");
	struct snap_writer *w;

	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_sparse(w, FX_MEM_SIZE, mem, SNAP_PAGE_SIZE, &err), 0);
	cr_assert_eq(snap_writer_commit(w, &st, &err), -EINVAL);
	cr_assert(strstr(err.msg, "memory written up to 0x41000 but memory.size is 0x40000"), "%s", err.msg);
	cr_assert_eq(fx_count_entries(tmp), 0);
	free(dir);
}

Test(snapfmt_dir, abort_removes_everything)
{
	char *dir = fx_path(tmp, "snap");
	struct snap_writer *w;

	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_sparse(w, 0, mem, FX_MEM_SIZE, &err), 0);
	snap_writer_abort(w);
	cr_assert_eq(fx_count_entries(tmp), 0);
	snap_writer_abort(NULL);
	free(dir);
}

Test(snapfmt_dir, unaligned_write_offset_is_refused)
{
	char *dir = fx_path(tmp, "snap");
	struct snap_writer *w;

	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_sparse(w, 100, mem, 10, &err), -EINVAL);
	cr_assert(strstr(err.msg, "not page aligned"), "%s", err.msg);
	snap_writer_abort(w);
	free(dir);
}

static char *written_snapshot(void)
{
	char *dir = fx_path(tmp, "snap");
	fx_write_snapshot(dir, &st, mem);
	return dir;
}

static void resize_memory_file(const char *dir, off_t size)
{
	char *p = fx_path(dir, SNAP_MEMORY_FILE);
	cr_assert_eq(truncate(p, size), 0);
	free(p);
}

Test(snapfmt_dir, memory_file_too_short)
{
	char *dir = written_snapshot();
	struct snap_dir d;

	resize_memory_file(dir, FX_MEM_SIZE - SNAP_PAGE_SIZE);
	cr_assert_eq(snap_dir_open(dir, &d, &err), -EINVAL);
	cr_assert(strstr(err.msg, "memory file memory.raw is 258048 bytes but memory.size is 262144 (truncated)"),
		  "%s", err.msg);
	cr_assert_eq(d.mem_fd, -1);
	free(dir);
}

Test(snapfmt_dir, memory_file_too_long)
{
	char *dir = written_snapshot();
	struct snap_dir d;

	resize_memory_file(dir, FX_MEM_SIZE + 1);
	cr_assert_eq(snap_dir_open(dir, &d, &err), -EINVAL);
	cr_assert(strstr(err.msg, "(too long)"), "%s", err.msg);
	free(dir);
}

Test(snapfmt_dir, memory_file_symlink_is_refused)
{
	char *dir = written_snapshot();
	char *memfile = fx_path(dir, SNAP_MEMORY_FILE), *real = fx_path(tmp, "real.raw");
	struct snap_dir d;

	cr_assert_eq(rename(memfile, real), 0);
	cr_assert_eq(symlink(real, memfile), 0);
	cr_assert_eq(snap_dir_open(dir, &d, &err), -ELOOP);
	cr_assert(strstr(err.msg, "symbolic link"), "%s", err.msg);
	free(memfile);
	free(real);
	free(dir);
}

Test(snapfmt_dir, memory_file_that_is_a_fifo_is_refused_without_blocking)
{
	char *dir = written_snapshot();
	char *memfile = fx_path(dir, SNAP_MEMORY_FILE);
	struct snap_dir d;

	cr_assert_eq(unlink(memfile), 0);
	cr_assert_eq(mkfifo(memfile, 0644), 0);
	cr_assert_eq(snap_dir_open(dir, &d, &err), -EINVAL);
	cr_assert(strstr(err.msg, "not a regular file (fifo)"), "%s", err.msg);
	free(memfile);
	free(dir);
}

Test(snapfmt_dir, missing_state_file)
{
	char *dir = written_snapshot();
	char *state = fx_path(dir, SNAP_STATE_FILE);
	struct snap_dir d;

	cr_assert_eq(unlink(state), 0);
	cr_assert_eq(snap_dir_open(dir, &d, &err), -ENOENT);
	cr_assert(strstr(err.msg, "state.msgpack"), "%s", err.msg);
	free(state);
	free(dir);
}

Test(snapfmt_dir, corrupt_state_file_names_the_directory)
{
	char *dir = written_snapshot();
	char *state = fx_path(dir, SNAP_STATE_FILE);
	struct snap_dir d;
	int fd = open(state, O_WRONLY);

	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, "\xff", 1, 100), 1);
	close(fd);
	cr_assert_eq(snap_dir_open(dir, &d, &err), -EBADMSG);
	cr_assert(strstr(err.msg, dir) && strstr(err.msg, "CRC32C mismatch"), "%s", err.msg);
	free(state);
	free(dir);
}

Test(snapfmt_dir, trailing_slash_in_the_target_is_accepted)
{
	char *dir = fx_path(tmp, "snap/");
	struct snap_dir d;

	fx_write_snapshot(dir, &st, mem);
	cr_assert_eq(snap_dir_open(dir, &d, &err), 0, "%s", err.msg);
	snap_dir_close(&d);
	cr_assert_eq(fx_count_entries(tmp), 1);
	free(dir);
}

/* snap_writer_begin_at: everything relative to an open directory (the control socket's
 * snapshots, resolved with openat2 first) */
Test(snapfmt_dir, writer_at_a_directory_fd_writes_inside_it)
{
	char *sub = fx_path(tmp, "sub"), *dir = fx_path(tmp, "sub/snap");
	struct snap_writer *w;
	struct snap_dir d;
	int fd;

	cr_assert_eq(mkdir(sub, 0755), 0);
	fd = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(snap_writer_begin_at(fd, "snap", &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_sparse(w, 0, mem, FX_MEM_SIZE, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_commit(w, &st, &err), 0, "%s", err.msg);
	close(fd);
	cr_assert_eq(snap_dir_open(dir, &d, &err), 0, "%s", err.msg);
	snap_dir_close(&d);
	cr_assert_eq(fx_count_entries(sub), 1, "temp directory left behind");
	cr_assert_neq(access("snap", F_OK), 0, "written relative to the working directory");
	free(dir);
	free(sub);
}

Test(snapfmt_dir, writer_at_does_not_follow_a_symlink_in_the_last_component)
{
	char *sub = fx_path(tmp, "sub"), *target = fx_path(tmp, "target"),
	     *link = fx_path(tmp, "sub/snap");
	struct snap_writer *w = (void *)1;
	int fd;

	cr_assert_eq(mkdir(sub, 0755), 0);
	/* a symlink where the snapshot should go: neither followed nor replaced */
	cr_assert_eq(symlink(target, link), 0);
	fd = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(snap_writer_begin_at(fd, "snap", &w, &err), -EEXIST);
	cr_assert_null(w);
	close(fd);
	cr_assert_neq(access(target, F_OK), 0);
	free(link);
	free(target);
	free(sub);
}
