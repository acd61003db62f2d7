/*
 * seccomp for every ember thread (README, "Seccomp"). The filters are compiled at build
 * time (src/tools/seccomp-gen.c, with libseccomp) so that applying one costs a prctl,
 * not the 0.1-0.3 ms a run-time compile takes here. A call outside a thread's allowlist
 * kills the whole process (SIGSYS).
 *
 * The `write` rules compare the fd with placeholders (src/seccomp_slots.h): the loader
 * patches a copy of the program with the fds the thread owns, and tgkill's thread
 * group with our pid, before loading it.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "seccomp_slots.h"
#include "vmm.h"

extern const unsigned char seccomp_vcpu_bpf[], seccomp_pager_bpf[], seccomp_vsock_bpf[],
	seccomp_cpucheck_bpf[], seccomp_main_bpf[], seccomp_pool_bpf[];
extern const unsigned seccomp_vcpu_bpf_len, seccomp_pager_bpf_len, seccomp_vsock_bpf_len,
	seccomp_cpucheck_bpf_len, seccomp_main_bpf_len, seccomp_pool_bpf_len;

static const struct {
	const char *name;
	const unsigned char *bpf;
	const unsigned *len;
	bool write_slots;   /* its `write` rule compares SECCOMP_FD_SLOTS placeholders */
	bool pid_slot;      /* its `tgkill` rule compares the pid placeholder */
} filters[] = {
	[SECCOMP_MAIN] = { "main", seccomp_main_bpf, &seccomp_main_bpf_len, false, true },
	[SECCOMP_VCPU] = { "vcpu", seccomp_vcpu_bpf, &seccomp_vcpu_bpf_len, true, true },
	[SECCOMP_PAGER] = { "pager", seccomp_pager_bpf, &seccomp_pager_bpf_len, true, false },
	[SECCOMP_VSOCK] = { "vsock", seccomp_vsock_bpf, &seccomp_vsock_bpf_len, true, false },
	[SECCOMP_CPUCHECK] = { "cpucheck", seccomp_cpucheck_bpf, &seccomp_cpucheck_bpf_len,
			       true, false },
	[SECCOMP_POOL] = { "pool", seccomp_pool_bpf, &seccomp_pool_bpf_len, true, false },
};

const char *seccomp_thread_name(enum seccomp_thread t)
{
	return filters[t].name;
}

#ifndef EMBER_NO_SECCOMP
/*
 * EMBER_SECCOMP_PROBE=<thread kind>: that thread makes a call its allowlist forbids
 * right after installing its filter, so tests can see the kill. Harmless in production:
 * with the filter in place the call never runs, it ends the process.
 */
static void probe(enum seccomp_thread t)
{
	const char *want = getenv("EMBER_SECCOMP_PROBE");
	long fd;

	if (!want || strcmp(want, filters[t].name))
		return;
	/* the finding's example (forbidden on every thread but main), then a call every
	 * allowlist forbids; were either allowed, it would only leak a closed fd */
	fd = syscall(SYS_openat, AT_FDCWD, "/etc/shadow", O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
		close((int)fd);
	fd = syscall(SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0)
		close((int)fd);
}
#endif

/* Patches the placeholders; the count check catches a generator whose program does not
 * have the shape the loader expects (a slot compared twice, or not at all). */
static int patch(struct sock_filter *f, unsigned n, enum seccomp_thread t,
		 const struct seccomp_fds *fds)
{
	unsigned fd_hits = 0, pid_hits = 0;

	for (unsigned i = 0; i < n; i++) {
		uint32_t k = f[i].k;

		if (f[i].code != (BPF_JMP | BPF_JEQ | BPF_K))
			continue;
		if (k == SECCOMP_PID_PLACEHOLDER) {
			f[i].k = (uint32_t)getpid();
			pid_hits++;
		} else if (k >= SECCOMP_FD_PLACEHOLDER &&
			   k < SECCOMP_FD_PLACEHOLDER + SECCOMP_FD_SLOTS) {
			unsigned slot = k - SECCOMP_FD_PLACEHOLDER;

			if (!fds)
				return -EINVAL;

			/* unused slots repeat the first fd: they allow nothing more */
			f[i].k = (uint32_t)fds->fd[slot < fds->n ? slot : 0];
			fd_hits++;
		}
	}
	if (fd_hits != (filters[t].write_slots ? SECCOMP_FD_SLOTS : 0) ||
	    pid_hits != (filters[t].pid_slot ? 1u : 0))
		return -EINVAL;
	return 0;
}

int seccomp_apply(enum seccomp_thread t, const struct seccomp_fds *fds)
{
	unsigned len = *filters[t].len / sizeof(struct sock_filter);
	struct sock_filter *copy;
	struct sock_fprog prog;
	int r = 0;

	if (filters[t].write_slots && (!fds || fds->n == 0))
		return -EINVAL;
	if (fds && fds->overflow)
		return -E2BIG;
	copy = malloc(len * sizeof(*copy));
	if (!copy)
		return -ENOMEM;
	memcpy(copy, filters[t].bpf, len * sizeof(*copy));
	r = patch(copy, len, t, fds);
	if (r)
		goto out;
	prog = (struct sock_fprog){ .len = (unsigned short)len, .filter = copy };
#ifdef EMBER_NO_SECCOMP
	/* sanitizer builds: their runtimes make syscalls the allowlists do not expect, so
	 * the program is built and checked but not loaded (README, "Seccomp") */
	(void)prog;
#else
	/* this thread only: each thread installs its own, no TSYNC */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
		r = -errno;
		goto out;
	}
	free(copy);
	probe(t);
	return 0;
#endif
out:
	free(copy);
	return r;
}

void seccomp_fds_add(struct seccomp_fds *s, int fd)
{
	if (fd < 0)
		return;
	for (unsigned i = 0; i < s->n; i++)
		if (s->fd[i] == fd)
			return;
	if (s->n == SECCOMP_FD_SLOTS)
		s->overflow = true; /* seccomp_apply refuses: never a silently missing fd */
	else
		s->fd[s->n++] = fd;
}
