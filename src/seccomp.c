/*
 * seccomp for the threads that handle guest-controlled data. The filters are compiled
 * at build time (src/tools/seccomp-gen.c, with libseccomp) so that applying one costs
 * a prctl, not the 0.1-0.3 ms a run-time compile takes here.
 */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>

#include "vmm.h"

extern const unsigned char seccomp_vcpu_bpf[];
extern const unsigned seccomp_vcpu_bpf_len;

int seccomp_apply_vcpu(void)
{
#ifdef EMBER_NO_SECCOMP
	/* sanitizer builds: their runtimes make syscalls the allowlist does not expect */
	return 0;
#else
	struct sock_fprog prog = {
		.len = (unsigned short)(seccomp_vcpu_bpf_len / sizeof(struct sock_filter)),
		.filter = (struct sock_filter *)(uintptr_t)seccomp_vcpu_bpf,
	};

	/* for this thread only: the main thread still creates files and sockets */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		return -errno;
	return 0;
#endif
}
