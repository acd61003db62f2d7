/*
 * The operator's surface through the ember binary: --log-level, EMBER_LOG and
 * --log-file (a regular file and a FIFO, read or not), exit statuses and messages.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

#define WAIT_MS 20000

static char tmp[PATH_MAX];
static struct proc_result r;

static void fini(void)
{
	proc_result_free(&r);
	ember_test_rmtree(tmp);
	tmp[0] = 0;
}

static void init(void)
{
	unsetenv("EMBER_LOG");
	ember_test_tmpdir(tmp, sizeof(tmp));
}

TestSuite(ops, .init = init, .fini = fini, .timeout = 60);

static const char *tmp_path(const char *name)
{
	static char buf[4][PATH_MAX];
	static unsigned n;
	char *p = buf[n++ % 4];

	cr_assert_lt(snprintf(p, PATH_MAX, "%s/%s", tmp, name), PATH_MAX);
	return p;
}

static char *slurp(const char *path)
{
	static char buf[8192];
	int fd = open(path, O_RDONLY | O_NONBLOCK);
	ssize_t n;

	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	return buf;
}

Test(ops, log_file_gets_the_log_lines_appended_mode_0600)
{
	const char *log = tmp_path("ember.log");
	struct stat st;

	ember_test_run(&r, WAIT_MS, "boot", "--kernel", tmp_path("nonexistent"), "--log-file", log,
		       NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "stderr: %s", r.err);
	cr_assert_null(strstr(r.err, "ember: error:"), "the log line went to stderr: %s", r.err);
	cr_assert(strstr(slurp(log), "ember: error: kernel "), "log: %s", slurp(log));
	cr_assert_eq(stat(log, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
	proc_result_free(&r);
	/* appended, not truncated */
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", tmp_path("nonexistent"), "--log-file", log,
		       NULL);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(strstr(slurp(log), "ember: error:") + 1, "ember: error:"), "log: %s",
		  slurp(log));
}

Test(ops, log_file_fifo_without_a_reader_does_not_block)
{
	const char *fifo = tmp_path("log.fifo");

	cr_assert_eq(mkfifo(fifo, 0600), 0);
	ember_test_run(&r, 5000, "boot", "--kernel", tmp_path("nonexistent"), "--log-file", fifo,
		       NULL);
	cr_assert_not(r.timed_out, "ember blocked on a FIFO nobody reads");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "stderr: %s", r.err);
	cr_assert_null(strstr(r.err, "ember: error:"), "stderr: %s", r.err);
}

Test(ops, log_file_fifo_with_a_reader_gets_the_lines)
{
	const char *fifo = tmp_path("log.fifo");
	int rfd;

	cr_assert_eq(mkfifo(fifo, 0600), 0);
	rfd = open(fifo, O_RDONLY | O_NONBLOCK);
	cr_assert_geq(rfd, 0);
	ember_test_run(&r, 5000, "boot", "--kernel", tmp_path("nonexistent"), "--log-file", fifo,
		       "--log-level", "debug", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "stderr: %s", r.err);
	{
		char buf[4096];
		ssize_t n = read(rfd, buf, sizeof(buf) - 1);

		cr_assert_gt(n, 0, "nothing in the FIFO");
		buf[n] = 0;
		cr_assert(strstr(buf, "ember: error: kernel "), "FIFO: %s", buf);
	}
	close(rfd);
}

Test(ops, log_file_unopenable_is_an_error_naming_the_flag)
{
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", "k", "--log-file",
		       tmp_path("no-such-dir/log"), NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, "--log-file ") && strstr(r.err, "No such file"), "%s", r.err);
}

Test(ops, ember_log_unknown_value_exits_2_naming_the_variable)
{
	setenv("EMBER_LOG", "verbose", 1);
	ember_test_run(&r, WAIT_MS, "ctl", "--api-sock", tmp_path("s"), "status", NULL);
	unsetenv("EMBER_LOG");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 2, "stderr: %s", r.err);
	cr_assert(strstr(r.err, "EMBER_LOG: 'verbose' is not error, warn, info or debug"), "%s",
		  r.err);
}

Test(ops, log_level_info_prints_info_lines_and_error_hides_them)
{
	ember_test_require_kvm();
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("hello"), "--console",
		       "none", "--log-level", "info", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "stderr: %s", r.err);
	cr_assert(strstr(r.err, "ember: "), "no info line: %s", r.err);
	proc_result_free(&r);
	setenv("EMBER_LOG", "info", 1);
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("hello"), "--console",
		       "none", "--log-level", "error", NULL);
	unsetenv("EMBER_LOG");
	cr_assert_eq(r.status, 0, "stderr: %s", r.err);
	cr_assert_eq(r.err_len, 0, "the flag did not win over EMBER_LOG: %s", r.err);
}
