/* The vCPU threads' seccomp allowlist: what exit handling needs works, the rest fails. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vmm.h"

struct probe {
	int pipe[2];
	int applied, write_ok, open_errno, socket_errno, exec_map_errno, rw_map_ok, ioctl_errno;
};

static void *probe_thread(void *arg)
{
	struct probe *p = arg;
	void *m;
	int n = 0;

	p->applied = seccomp_apply_vcpu();
	p->write_ok = write(p->pipe[1], "x", 1) == 1;
	p->open_errno = open("/etc/hostname", O_RDONLY) < 0 ? errno : 0;
	p->socket_errno = socket(AF_UNIX, SOCK_STREAM, 0) < 0 ? errno : 0;
	m = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	p->exec_map_errno = m == MAP_FAILED ? errno : 0;
	m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	p->rw_map_ok = m != MAP_FAILED;
	/* an ioctl that is not one of the vCPU's KVM requests */
	p->ioctl_errno = ioctl(p->pipe[0], FIONREAD, &n) < 0 ? errno : 0;
	return NULL;
}

#ifdef EMBER_NO_SECCOMP
/* Sanitizer builds compile the filter out (src/seccomp.c): applying it is a no-op. */
Test(seccomp, sanitizer_build_applies_no_filter)
{
	struct probe p = { 0 };
	pthread_t t;

	cr_assert_eq(pipe(p.pipe), 0);
	cr_assert_eq(pthread_create(&t, NULL, probe_thread, &p), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(p.applied, 0);
	cr_assert_eq(p.open_errno, 0, "open failed with errno %d in a build without seccomp",
		     p.open_errno);
}
#else
Test(seccomp, vcpu_allowlist_permits_exit_handling_and_refuses_the_rest)
{
	struct probe p = { 0 };
	pthread_t t;

	cr_assert_eq(pipe(p.pipe), 0);
	cr_assert_eq(pthread_create(&t, NULL, probe_thread, &p), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(p.applied, 0, "seccomp_apply_vcpu: %d", p.applied);
	cr_assert(p.write_ok, "console writes must work");
	cr_assert(p.rw_map_ok, "malloc's anonymous mappings must work");
	cr_assert_eq(p.open_errno, EPERM, "open: errno %d", p.open_errno);
	cr_assert_eq(p.socket_errno, EPERM, "socket: errno %d", p.socket_errno);
	cr_assert_eq(p.exec_map_errno, EPERM, "executable mmap: errno %d", p.exec_map_errno);
	cr_assert_eq(p.ioctl_errno, EPERM, "non-KVM ioctl: errno %d", p.ioctl_errno);
}
#endif

Test(seccomp, filter_stays_with_its_thread)
{
	struct probe p = { 0 };
	pthread_t t;
	int fd;

	cr_assert_eq(pipe(p.pipe), 0);
	cr_assert_eq(pthread_create(&t, NULL, probe_thread, &p), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	/* the main thread still opens files (snapshots, sockets) */
	fd = open("/etc/hostname", O_RDONLY);
	cr_assert_geq(fd, 0, "open in the main thread: errno %d", errno);
	close(fd);
}
