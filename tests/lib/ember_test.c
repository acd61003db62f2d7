/*
 * The ember binary and guests under test, for integration tests: where they are
 * ($EMBER_BUILD), running them, skipping loudly without KVM, and the "did it crash"
 * check that every test of a failure path needs.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch/x86_64/x86.h"
#include "testlib.h"

#define PATH_RING 8
#define MAX_ARGS 64

/* Several paths are often needed in one argv: hand out a ring of buffers. */
static char *next_path_buf(void)
{
	static char ring[PATH_RING][PATH_MAX];
	static unsigned next;

	return ring[next++ % PATH_RING];
}

static const char *build_dir(void)
{
	const char *b = getenv("EMBER_BUILD");

	return b && *b ? b : "build";
}

const char *ember_test_path(const char *rel)
{
	char *buf = next_path_buf();

	cr_assert_lt(snprintf(buf, PATH_MAX, "%s/%s", build_dir(), rel), PATH_MAX);
	return buf;
}

const char *ember_test_guest(const char *name)
{
	char *buf = next_path_buf();
	const char *path;

	cr_assert_lt(snprintf(buf, PATH_MAX, "%s/guests/%s.elf", build_dir(), name), PATH_MAX);
	path = buf;
	cr_assert_eq(access(path, R_OK), 0,
		     "guest %s is not built (%s): run `make` (tests/guest/guest.mk)", name, path);
	return path;
}

/* argv = { ember, first, va..., NULL } */
static void collect_args(char **argv, const char *first, va_list ap)
{
	static char ember[PATH_MAX]; /* not from the ring: the caller's paths stay valid */
	unsigned n = 0;

	cr_assert_lt(snprintf(ember, sizeof(ember), "%s/ember", build_dir()), PATH_MAX);
	cr_assert_eq(access(ember, X_OK), 0, "%s is not built: run `make`", ember);
	argv[n++] = (char *)ember;
	for (const char *a = first; a; a = va_arg(ap, const char *)) {
		cr_assert_lt(n, MAX_ARGS - 1, "too many arguments for ember_test_run");
		argv[n++] = (char *)a;
	}
	argv[n] = NULL;
}

void ember_test_run(struct proc_result *r, unsigned timeout_ms, ...)
{
	char *argv[MAX_ARGS];
	const char *first;
	va_list ap;
	int ret;

	va_start(ap, timeout_ms);
	first = va_arg(ap, const char *);
	collect_args(argv, first, ap);
	va_end(ap);
	ret = proc_run(argv, timeout_ms, r);
	cr_assert_eq(ret, 0, "spawning %s: %s", argv[0], strerror(-ret));
}

struct proc *ember_test_start(const char *first, ...)
{
	char *argv[MAX_ARGS];
	struct proc *p;
	va_list ap;
	int ret;

	va_start(ap, first);
	collect_args(argv, first, ap);
	va_end(ap);
	ret = proc_start(&p, argv);
	cr_assert_eq(ret, 0, "spawning %s: %s", argv[0], strerror(-ret));
	return p;
}

void ember_test_require_kvm(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd >= 0) {
		close(fd);
		return;
	}
	cr_log_info("SKIP: /dev/kvm is not usable (%s): this test boots a guest and needs KVM",
		    strerror(errno));
	cr_skip_test("/dev/kvm is not usable: %s", strerror(errno));
}

void ember_test_assert_no_crash(const struct proc_result *r)
{
	static const char *const reports[] = {
		"AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
		"runtime error:", "Segmentation fault", "core dumped",
	};

	cr_assert(!r->timed_out, "ember did not finish in time; stderr:\n%s", r->err);
	cr_assert_eq(r->signal, 0, "ember was killed by signal %d; stderr:\n%s", r->signal, r->err);
	for (size_t i = 0; i < ARRAY_SIZE(reports); i++)
		cr_assert_null(strstr(r->err, reports[i]), "ember's stderr has a '%s' report:\n%s",
			       reports[i], r->err);
}

void ember_test_tmpdir(char *buf, size_t len)
{
	const char *base = getenv("TMPDIR");

	cr_assert_lt(snprintf(buf, len, "%s/ember-test.XXXXXX", base && *base ? base : "/tmp"),
		     (int)len);
	cr_assert_not_null(mkdtemp(buf), "mkdtemp %s: %s", buf, strerror(errno));
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	remove(path);
	return 0;
}

void ember_test_rmtree(const char *dir)
{
	if (dir && *dir)
		nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

const char *ember_test_write_file(const char *dir, const char *name, const void *data, size_t len)
{
	char *path = next_path_buf();
	FILE *f;

	cr_assert_lt(snprintf(path, PATH_MAX, "%s/%s", dir, name), PATH_MAX);
	f = fopen(path, "wb");
	cr_assert_not_null(f, "creating %s: %s", path, strerror(errno));
	cr_assert_eq(fwrite(data, 1, len, f), len, "writing %s", path);
	cr_assert_eq(fclose(f), 0, "closing %s", path);
	return path;
}

/* Every process but this one whose command line names dir: signalled with sig (0: none).
 * Returns how many there were. */
static unsigned procs_naming(const char *dir, int sig)
{
	DIR *proc = opendir("/proc");
	struct dirent *e;
	unsigned n_found = 0;

	if (!proc)
		return 0;
	while ((e = readdir(proc))) {
		char path[64], cmd[8192];
		ssize_t n;
		int fd;
		pid_t pid = (pid_t)atoi(e->d_name);

		if (pid <= 0 || pid == getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, cmd, sizeof(cmd) - 1);
		close(fd);
		if (n <= 0)
			continue; /* a zombie has an empty command line */
		for (ssize_t i = 0; i < n; i++)
			if (!cmd[i])
				cmd[i] = ' '; /* the arguments are NUL-separated */
		cmd[n] = 0;
		if (!strstr(cmd, dir))
			continue;
		n_found++;
		if (sig)
			kill(pid, sig);
	}
	closedir(proc);
	return n_found;
}

void ember_test_kill_strays(const char *dir)
{
	procs_naming(dir, SIGKILL);
}

unsigned ember_test_count_procs(const char *dir)
{
	return procs_naming(dir, 0);
}

void ember_test_capture_stderr(void (*fn)(void *arg), void *arg, char *buf, size_t len)
{
	char path[] = "/tmp/ember-stderr-XXXXXX";
	int fd = mkstemp(path), saved = dup(STDERR_FILENO);
	ssize_t n;

	cr_assert_geq(fd, 0, "mkstemp: %s", strerror(errno));
	cr_assert_geq(saved, 0);
	unlink(path);
	fflush(stderr);
	dup2(fd, STDERR_FILENO);
	fn(arg);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	n = pread(fd, buf, len - 1, 0);
	buf[n > 0 ? n : 0] = 0;
	close(fd);
}

/* the x86-64 kernel's text mapping (Documentation/arch/x86/x86_64/mm.rst) */
#define LINUX_KERNEL_VA 0xffffffff80000000ull

void ember_test_assert_linux_own_page_tables(const struct proc_result *boot)
{
	char line[512];
	uint64_t cr3, rip;

	ember_test_assert_no_crash(boot);
	cr_assert_eq(boot->status, 124, "ember exited %d, expected the --timeout status 124:\n%s",
		     boot->status, boot->err);
	cr_assert_not_null(proc_find_line(boot->err, "ember-regs vcpu=0 ", line, sizeof(line)),
			   "no register dump for vcpu 0:\n%s", boot->err);
	cr_assert_eq(proc_line_u64(line, "cr3", &cr3), 0, "no cr3 in: %s", line);
	cr_assert_eq(proc_line_u64(line, "rip", &rip), 0, "no rip in: %s", line);
	cr_assert_neq(cr3, BOOT_PML4_ADDR, "the kernel still runs on ember's boot page tables: %s",
		      line);
	cr_assert_geq(rip, LINUX_KERNEL_VA, "rip is not in the kernel's virtual text mapping: %s",
		      line);
}
