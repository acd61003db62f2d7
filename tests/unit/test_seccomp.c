/*
 * The per-thread seccomp filters (src/seccomp.c): what a thread needs works, writes go
 * only to the fds it was given, and anything else kills the whole process. Each test
 * applies a filter in a forked child (a kill must not take the test runner with it).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmm.h"

/* Runs fn in a child after applying filter t with write access to fd; returns the
 * child's wait status. */
static int in_child(enum seccomp_thread t, int fd, int (*fn)(int fd))
{
	int status;
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct seccomp_fds fds = { .n = 0 };

		seccomp_fds_add(&fds, fd);
		if (seccomp_apply(t, t == SECCOMP_MAIN ? NULL : &fds))
			_exit(100);
		_exit(fn(fd));
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	return status;
}

static bool killed_by_sigsys(int status)
{
	return WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS;
}

static int write_own_fd(int fd)
{
	void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (m == MAP_FAILED)
		return 1;
	return write(fd, "x", 1) == 1 ? 0 : 2;
}

static int write_other_fd(int fd)
{
	/* nothing written: the filter looks at the fd, not the length */
	return write(STDOUT_FILENO, "", 0) == 0 ? 0 : 2;
}

static int open_a_file(int fd)
{
	return open("/etc/hostname", O_RDONLY) >= 0 ? 0 : 2;
}

static int map_executable(int fd)
{
	return mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) ==
	       MAP_FAILED ? 2 : 0;
}

static int foreign_ioctl(int fd)
{
	int n = 0;

	return ioctl(fd, FIONREAD, &n) < 0 ? 2 : 0;
}

static int inet_socket(int fd)
{
	return socket(AF_INET, SOCK_STREAM, 0) < 0 ? 2 : 0;
}

static int unix_socket(int fd)
{
	return socket(AF_UNIX, SOCK_STREAM, 0) < 0 ? 2 : 0;
}

static int exec_a_program(int fd)
{
	char *argv[] = { "true", NULL };

	execv("/bin/true", argv);
	return 2;
}

/* signal 0: only the permission check, nothing is delivered */
static int signal_own_thread(int fd)
{
	return syscall(SYS_tgkill, getpid(), gettid(), 0) == 0 ? 0 : 2;
}

static int signal_another_process(int fd)
{
	return syscall(SYS_tgkill, getppid(), getppid(), 0) == 0 ? 0 : 2;
}

static int pipe_w(void)
{
	int p[2];

	cr_assert_eq(pipe(p), 0);
	return p[1];
}

#ifdef EMBER_NO_SECCOMP
/* Sanitizer builds compile the loading out (README, "Seccomp"): everything the filters
 * would forbid still works there. */
Test(seccomp, sanitizer_build_applies_no_filter)
{
	int (*const calls[])(int) = { write_own_fd, write_other_fd, open_a_file, map_executable,
				      foreign_ioctl, inet_socket, unix_socket, exec_a_program,
				      signal_own_thread, signal_another_process };

	cr_log_info("sanitizer build: seccomp filters are not loaded");
	(void)killed_by_sigsys;
	for (unsigned i = 0; i < ARRAY_SIZE(calls); i++) {
		int status = in_child(SECCOMP_VCPU, pipe_w(), calls[i]);

		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			  "call %u in a build without seccomp: status %#x", i, status);
	}
}
#else
static const enum seccomp_thread thread_kinds[] = {
	SECCOMP_VCPU, SECCOMP_PAGER, SECCOMP_VSOCK, SECCOMP_CPUCHECK,
};

Test(seccomp, every_thread_kind_may_map_memory_and_write_its_own_fds)
{
	for (unsigned i = 0; i < ARRAY_SIZE(thread_kinds); i++) {
		int status = in_child(thread_kinds[i], pipe_w(), write_own_fd);

		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: status %#x",
			  seccomp_thread_name(thread_kinds[i]), status);
	}
}

Test(seccomp, writing_an_fd_the_thread_does_not_own_kills_the_process)
{
	for (unsigned i = 0; i < ARRAY_SIZE(thread_kinds); i++)
		cr_assert(killed_by_sigsys(in_child(thread_kinds[i], pipe_w(), write_other_fd)),
			  "%s", seccomp_thread_name(thread_kinds[i]));
}

Test(seccomp, opening_a_file_kills_the_process_from_any_thread_but_main)
{
	for (unsigned i = 0; i < ARRAY_SIZE(thread_kinds); i++)
		cr_assert(killed_by_sigsys(in_child(thread_kinds[i], pipe_w(), open_a_file)),
			  "%s", seccomp_thread_name(thread_kinds[i]));
}

Test(seccomp, executable_memory_kills_the_process_on_every_thread)
{
	cr_assert(killed_by_sigsys(in_child(SECCOMP_MAIN, pipe_w(), map_executable)));
	for (unsigned i = 0; i < ARRAY_SIZE(thread_kinds); i++)
		cr_assert(killed_by_sigsys(in_child(thread_kinds[i], pipe_w(), map_executable)),
			  "%s", seccomp_thread_name(thread_kinds[i]));
}

Test(seccomp, an_ioctl_outside_the_threads_requests_kills_the_process)
{
	for (unsigned i = 0; i < ARRAY_SIZE(thread_kinds); i++)
		cr_assert(killed_by_sigsys(in_child(thread_kinds[i], pipe_w(), foreign_ioctl)),
			  "%s", seccomp_thread_name(thread_kinds[i]));
}

Test(seccomp, main_thread_keeps_files_but_not_exec_or_inet_sockets)
{
	int status = in_child(SECCOMP_MAIN, pipe_w(), open_a_file);

	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "open: status %#x", status);
	status = in_child(SECCOMP_MAIN, pipe_w(), unix_socket);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "AF_UNIX: status %#x", status);
	cr_assert(killed_by_sigsys(in_child(SECCOMP_MAIN, pipe_w(), inet_socket)));
	cr_assert(killed_by_sigsys(in_child(SECCOMP_MAIN, pipe_w(), exec_a_program)));
}

Test(seccomp, vcpu_and_main_may_signal_their_own_threads_only)
{
	static const enum seccomp_thread kinds[] = { SECCOMP_VCPU, SECCOMP_MAIN };

	for (unsigned i = 0; i < ARRAY_SIZE(kinds); i++) {
		int status = in_child(kinds[i], pipe_w(), signal_own_thread);

		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: own thread: %#x",
			  seccomp_thread_name(kinds[i]), status);
		cr_assert(killed_by_sigsys(in_child(kinds[i], pipe_w(), signal_another_process)),
			  "%s", seccomp_thread_name(kinds[i]));
	}
}

Test(seccomp, vsock_thread_may_make_unix_sockets_only)
{
	int status = in_child(SECCOMP_VSOCK, pipe_w(), unix_socket);

	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "AF_UNIX: status %#x", status);
	cr_assert(killed_by_sigsys(in_child(SECCOMP_VSOCK, pipe_w(), inet_socket)));
}

#endif

/* Checked in every build: sanitizer builds build the program without loading it. */
Test(seccomp, a_thread_filter_needs_the_fds_it_may_write)
{
	struct seccomp_fds none = { .n = 0 };

	cr_assert_eq(seccomp_apply(SECCOMP_VCPU, &none), -EINVAL);
	cr_assert_eq(seccomp_apply(SECCOMP_PAGER, NULL), -EINVAL);
}

Test(seccomp, more_fds_than_slots_is_refused_not_truncated)
{
	struct seccomp_fds many = { .n = 0 };

	for (int fd = 100; fd < 100 + SECCOMP_FD_SLOTS + 1; fd++)
		seccomp_fds_add(&many, fd);
	cr_assert(many.overflow);
	cr_assert_eq(seccomp_apply(SECCOMP_VCPU, &many), -E2BIG);
}
static void *confine_self(void *arg)
{
	return (void *)(intptr_t)seccomp_apply(SECCOMP_VCPU, arg);
}

Test(seccomp, filter_stays_with_its_thread)
{
	struct seccomp_fds fds = { .n = 0 };
	void *applied;
	pthread_t t;
	int fd, status;
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		/* a thread confines itself; the main thread still opens files */
		seccomp_fds_add(&fds, STDERR_FILENO);
		if (pthread_create(&t, NULL, confine_self, &fds))
			_exit(3);
		pthread_join(t, &applied);
		if (applied)
			_exit(4);
		fd = open("/etc/hostname", O_RDONLY);
		_exit(fd >= 0 ? 0 : 2);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x", status);
}
