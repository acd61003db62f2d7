/*
 * ember-snap interrupted while it writes: SIGINT/SIGTERM remove its temporary
 * directory (a full-size copy of guest memory) before it exits 128 + signal, and a
 * directory left by a run that was killed outright is removed by the next run for the
 * same destination. The signal is sent at a fixed point, deterministically: the tool
 * runs under ptrace until its first write into the temporary directory.
 */
#include <dirent.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/reg.h>
#include <sys/wait.h>

#include "test_snapfmt_fixture.h"

static char *tmp, *raw, *lz, *tool;
static struct snap_state st;

static void setup(void)
{
	static uint8_t mem[FX_MEM_SIZE];
	const char *b = getenv("EMBER_BUILD");

	cr_assert(asprintf(&tool, "%s/ember-snap", b && *b ? b : "build") > 0);
	if (access(tool, X_OK))
		cr_skip_test("%s not built", tool);
	tmp = fx_tmpdir();
	raw = fx_path(tmp, "raw");
	lz = fx_path(tmp, "lz");
	fx_fill_ember_state(&st);
	for (size_t i = 0; i < sizeof(mem); i++)
		mem[i] = (uint8_t)(i * 7 + (i >> 12));
	fx_write_snapshot(raw, &st, mem);
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

TestSuite(snapfmt_signals, .init = setup, .fini = teardown, .timeout = 30);

/* Entries of tmp whose name starts with prefix. */
static int count_prefixed(const char *prefix)
{
	DIR *d = opendir(tmp);
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d)))
		n += !strncmp(e->d_name, prefix, strlen(prefix));
	closedir(d);
	return n;
}

/*
 * Runs the tool with args under ptrace; at its first pwrite/pwritev (the first bytes
 * written into the temporary directory) sends sig and lets it go. Returns the wait
 * status.
 */
static int run_until_first_write(const char *const *args, const char *tmp_prefix, int sig)
{
	const char *argv[8] = { tool };
	bool in_syscall = false;
	int status;
	pid_t pid;

	for (unsigned i = 0; args[i]; i++)
		argv[i + 1] = args[i];
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		ptrace(PTRACE_TRACEME, 0, NULL, NULL);
		execv(tool, (char *const *)argv);
		_exit(127);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSTOPPED(status), "the tool did not stop at exec");
	cr_assert_eq(ptrace(PTRACE_SETOPTIONS, pid, NULL, (void *)PTRACE_O_TRACESYSGOOD), 0);
	for (;;) {
		long nr;

		cr_assert_eq(ptrace(PTRACE_SYSCALL, pid, NULL, NULL), 0);
		cr_assert_eq(waitpid(pid, &status, 0), pid);
		cr_assert(WIFSTOPPED(status), "the tool ended (status 0x%x) before writing", status);
		if (WSTOPSIG(status) != (SIGTRAP | 0x80))
			continue; /* a signal stop of its own: not expected, keep going */
		in_syscall = !in_syscall;
		if (!in_syscall)
			continue;
		errno = 0;
		nr = ptrace(PTRACE_PEEKUSER, pid, (void *)(8 * ORIG_RAX), NULL);
		cr_assert_eq(errno, 0, "PTRACE_PEEKUSER: %s", strerror(errno));
		if (nr == SYS_pwrite64 || nr == SYS_pwritev || nr == SYS_pwritev2)
			break;
	}
	cr_assert_eq(count_prefixed(tmp_prefix), 1, "no %s* directory while writing", tmp_prefix);
	/* pending now, delivered once the write returns (0: no signal, just let it run) */
	if (sig)
		cr_assert_eq(kill(pid, sig), 0);
	cr_assert_eq(ptrace(PTRACE_DETACH, pid, NULL, NULL), 0);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	return status;
}

Test(snapfmt_signals, sigterm_during_compress_removes_the_temporary_directory)
{
	const char *args[] = { "compress", raw, lz, NULL };
	int status = run_until_first_write(args, "lz.tmp.", SIGTERM);

	cr_assert(WIFEXITED(status), "killed by signal %d: no handler cleaned up",
		  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	cr_assert_eq(WEXITSTATUS(status), 128 + SIGTERM);
	cr_assert_eq(count_prefixed("lz"), 0, "the interrupted compress left lz or its temp dir");
	cr_assert_eq(fx_count_entries(tmp), 1, "only the source is left");
}

Test(snapfmt_signals, sigint_during_decompress_removes_the_temporary_directory)
{
	const char *compress[] = { "compress", raw, lz, NULL };
	char *back = fx_path(tmp, "lz.raw");
	const char *args[] = { "decompress", lz, back, NULL };
	int status;

	/* a compressed source first, uninterrupted */
	status = run_until_first_write(compress, "lz.tmp.", 0);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "compress failed: 0x%x", status);
	status = run_until_first_write(args, "lz.raw.tmp.", SIGINT);
	cr_assert(WIFEXITED(status), "killed by signal %d: no handler cleaned up",
		  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	cr_assert_eq(WEXITSTATUS(status), 128 + SIGINT);
	cr_assert_eq(count_prefixed("lz.raw"), 0, "the interrupted decompress left something");
	free(back);
}

/* A pid that existed and is gone: a child that exited and was reaped. */
static int dead_pid(void)
{
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(0);
	cr_assert_eq(waitpid(pid, NULL, 0), pid);
	return (int)pid;
}

static char *make_temp_dir(int pid, const char *tag)
{
	char *name = NULL, *path, *file;
	FILE *f;

	cr_assert(asprintf(&name, "lz.tmp.%d.%s", pid, tag) > 0);
	path = fx_path(tmp, name);
	cr_assert_eq(mkdir(path, 0755), 0);
	file = fx_path(path, "memory.raw");
	f = fopen(file, "w");
	cr_assert_not_null(f);
	fputs("half a snapshot", f);
	fclose(f);
	free(file);
	free(name);
	return path;
}

Test(snapfmt_signals, next_run_removes_a_temporary_directory_whose_process_is_gone)
{
	char *stale = make_temp_dir(dead_pid(), "0badf00d");
	char *live = make_temp_dir((int)getpid(), "00000001");
	char *cmd = NULL, out[4096] = "";
	FILE *p;
	size_t n;
	int status;

	cr_assert(asprintf(&cmd, "'%s' compress '%s' '%s' 2>&1", tool, raw, lz) > 0);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = 0;
	status = pclose(p);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s", out);
	cr_assert(strstr(out, "removed stale temporary directory"), "%s", out);
	cr_assert(strstr(out, stale), "the message names the directory:\n%s", out);
	cr_assert_neq(access(stale, F_OK), 0, "%s is still there", stale);
	cr_assert_eq(access(live, F_OK), 0, "a running process's directory was removed");
	free(cmd);
	free(stale);
	free(live);
}
