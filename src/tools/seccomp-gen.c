/*
 * Build-time tool: compiles ember's seccomp allowlists with libseccomp and writes them
 * as C arrays of BPF instructions. Compiling a filter at run time costs 0.1-0.3 ms per
 * thread here (measured), which restore cannot afford; loading a precompiled one is a
 * single prctl. Usage: seccomp-gen OUT.c
 *
 * One filter per kind of thread (README, "Seccomp"); anything not listed kills the
 * whole process (SCMP_ACT_KILL_PROCESS), as Firecracker does: a thread that makes a
 * call it never makes is taken over, and an error return would let it keep trying.
 */
#include <errno.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "../seccomp_slots.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* What every thread needs: glibc's locks, clocks, malloc, signal returns, exit. */
static const int common_syscalls[] = {
	SCMP_SYS(futex), SCMP_SYS(clock_gettime), SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep),
	SCMP_SYS(gettid), SCMP_SYS(getpid), SCMP_SYS(rt_sigreturn), SCMP_SYS(rt_sigprocmask),
	SCMP_SYS(restart_syscall), SCMP_SYS(sched_yield), SCMP_SYS(exit), SCMP_SYS(exit_group),
	SCMP_SYS(madvise), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(brk),
	SCMP_SYS(getrandom), SCMP_SYS(sysinfo),
};

/*
 * vCPU threads handle every guest exit, i.e. all guest-controlled input: KVM_RUN and
 * the few KVM ioctls exit handling makes; writes to the console, the log, stderr (the
 * report lines) and the eventfds of the main loop and of the devices; the kick signals
 * between the VMM's own threads. Nothing that opens, creates, closes, executes or talks
 * to the network.
 */
static const int vcpu_syscalls[] = { SCMP_SYS(read) };
static const unsigned long vcpu_ioctls[] = {
	KVM_RUN, KVM_IRQ_LINE, KVM_GET_REGS, KVM_GET_SREGS,
};

/*
 * The page server decodes untrusted memory files (lz4 chunks included) and answers the
 * guest's faults: it reads the memory file (pread or io_uring, whose ring it sets up
 * when the prefetch starts), polls, installs pages with the userfaultfd ioctls and
 * writes only the log, stderr and the main loop's eventfd (to report a failure). It
 * closes the prefetch's ring and eventfd when the prefetch ends.
 */
static const int pager_syscalls[] = {
	SCMP_SYS(read), SCMP_SYS(pread64), SCMP_SYS(preadv), SCMP_SYS(poll), SCMP_SYS(ppoll),
	SCMP_SYS(io_uring_setup), SCMP_SYS(io_uring_enter), SCMP_SYS(io_uring_register),
	SCMP_SYS(eventfd2), SCMP_SYS(close),
};
static const unsigned long pager_ioctls[] = {
	UFFDIO_COPY, UFFDIO_ZEROPAGE, UFFDIO_WAKE,
};

/*
 * The vsock device thread moves guest packets to and from host Unix sockets: it
 * accepts on the listener, connects to <uds>_<port>, sends, receives and closes those
 * connections, and writes only the device's interrupt eventfd, its own control eventfd,
 * the log and stderr.
 */
static const int vsock_syscalls[] = {
	SCMP_SYS(read), SCMP_SYS(readv), SCMP_SYS(poll), SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait), SCMP_SYS(epoll_ctl),
	SCMP_SYS(accept4), SCMP_SYS(connect), SCMP_SYS(recvfrom), SCMP_SYS(recvmsg),
	SCMP_SYS(sendto), SCMP_SYS(sendmsg), SCMP_SYS(shutdown), SCMP_SYS(close),
	SCMP_SYS(fcntl), SCMP_SYS(getsockopt),
};
static const unsigned long vsock_ioctls[] = { KVM_IRQ_LINE };

/*
 * The restore's CPU check compares the snapshot's (untrusted) CPUID with what this host
 * and KVM support, in parallel with the rest of the restore: two /dev/kvm queries,
 * memory, the log.
 */
static const int cpucheck_syscalls[] = { SCMP_SYS(read) };
static const unsigned long cpucheck_ioctls[] = { KVM_GET_SUPPORTED_CPUID, KVM_CHECK_EXTENSION };

/*
 * The main thread once the VM is built and its threads run: the event loop, the control
 * socket, snapshots (files, directories, fsync, rename), in-place reset (madvise,
 * process_madvise, KVM state), standby, the log file and the --record-ws file. It may
 * write to any fd (the snapshot files it creates); it may not execute, trace, fork,
 * mount or create sockets other than Unix ones.
 */
static const int main_syscalls[] = {
	SCMP_SYS(read), SCMP_SYS(pread64), SCMP_SYS(readv), SCMP_SYS(preadv), SCMP_SYS(write),
	SCMP_SYS(pwrite64), SCMP_SYS(writev), SCMP_SYS(pwritev), SCMP_SYS(openat),
	SCMP_SYS(open), SCMP_SYS(close), SCMP_SYS(fstat), SCMP_SYS(newfstatat),
	SCMP_SYS(statx), SCMP_SYS(lstat), SCMP_SYS(stat), SCMP_SYS(lseek),
	SCMP_SYS(mkdir), SCMP_SYS(mkdirat), SCMP_SYS(rmdir), SCMP_SYS(rename),
	SCMP_SYS(renameat), SCMP_SYS(renameat2), SCMP_SYS(unlink), SCMP_SYS(unlinkat),
	SCMP_SYS(fsync), SCMP_SYS(fdatasync), SCMP_SYS(ftruncate), SCMP_SYS(fallocate),
	SCMP_SYS(getdents64), SCMP_SYS(fcntl), SCMP_SYS(dup), SCMP_SYS(dup3),
	SCMP_SYS(fchmod), SCMP_SYS(faccessat), SCMP_SYS(faccessat2), SCMP_SYS(access),
	SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait), SCMP_SYS(epoll_ctl), SCMP_SYS(poll),
	SCMP_SYS(ppoll), SCMP_SYS(accept4), SCMP_SYS(accept), SCMP_SYS(recvfrom),
	SCMP_SYS(recvmsg), SCMP_SYS(sendto), SCMP_SYS(sendmsg), SCMP_SYS(getsockopt),
	SCMP_SYS(shutdown), SCMP_SYS(bind), SCMP_SYS(listen), SCMP_SYS(connect),
	SCMP_SYS(eventfd2), SCMP_SYS(pidfd_open), SCMP_SYS(process_madvise),
	SCMP_SYS(io_uring_setup), SCMP_SYS(io_uring_enter), SCMP_SYS(io_uring_register),
	SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigtimedwait), SCMP_SYS(getrusage),
	SCMP_SYS(sysinfo), SCMP_SYS(uname), SCMP_SYS(getuid), SCMP_SYS(geteuid),
	SCMP_SYS(sync_file_range), SCMP_SYS(syncfs), SCMP_SYS(umask),
	/* the control socket's idle sweep, and snapshot directories resolved safely */
	SCMP_SYS(timerfd_settime), SCMP_SYS(openat2),
	/* what a thread started under this filter (lz4 snapshot workers) does first */
	SCMP_SYS(set_robust_list), SCMP_SYS(rseq),
};
static const unsigned long main_ioctls[] = {
	/* state for snapshots and in-place reset, dirty pages, interrupts */
	KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS, KVM_GET_FPU, KVM_SET_FPU,
	KVM_GET_XSAVE, KVM_SET_XSAVE, KVM_GET_XCRS, KVM_SET_XCRS, KVM_GET_MSRS, KVM_SET_MSRS,
	KVM_GET_LAPIC, KVM_SET_LAPIC, KVM_GET_MP_STATE, KVM_SET_MP_STATE,
	KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS, KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS,
	KVM_GET_CPUID2, KVM_SET_CPUID2, KVM_GET_TSC_KHZ, KVM_SET_TSC_KHZ, KVM_KVMCLOCK_CTRL,
	KVM_GET_IRQCHIP, KVM_SET_IRQCHIP, KVM_GET_PIT2, KVM_SET_PIT2, KVM_GET_CLOCK,
	KVM_SET_CLOCK, KVM_IRQ_LINE, KVM_GET_DIRTY_LOG, KVM_SET_USER_MEMORY_REGION,
	KVM_CHECK_EXTENSION, KVM_GET_DEVICE_ATTR, KVM_SET_DEVICE_ATTR, KVM_HAS_DEVICE_ATTR,
	KVM_GET_NESTED_STATE, KVM_RUN, KVM_GET_VCPU_MMAP_SIZE, KVM_IOEVENTFD, KVM_IRQFD,
	/* /dev/kvm: what a snapshot records about the host CPU */
	KVM_GET_MSR_INDEX_LIST, KVM_GET_SUPPORTED_CPUID, KVM_GET_API_VERSION,
	/* the page server's registration, dropped when it stops */
	UFFDIO_UNREGISTER, UFFDIO_REGISTER, UFFDIO_WAKE,
	/* glibc's stdio asks whether stdout is a terminal */
	TCGETS, FIONBIO, FIONREAD,
};

/*
 * `ember pool`'s process, from before it handles its first client (src/pool.c): the
 * epoll loop, clients on its listening socket, the VMs' control and vsock sockets
 * (connect, AF_UNIX), the ready pipes, the VMs' logs through fds the spawner passed
 * (lseek, pread), clients' credentials (getsockopt, geteuid), requests to the spawner
 * (sendmsg/recvmsg with SCM_RIGHTS), its exit reports, SIGKILL to its VMs through their
 * pidfds only, reaping the spawner at exit;
 * `write` to stderr and the log only (clients get send). No open, unlink, fork, execve,
 * kill: the unfiltered spawner (src/pool_spawner.c) does those.
 */
static const int pool_syscalls[] = {
	SCMP_SYS(read), SCMP_SYS(pread64), SCMP_SYS(lseek), SCMP_SYS(close),
	SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait), SCMP_SYS(epoll_ctl), SCMP_SYS(accept4),
	SCMP_SYS(connect), SCMP_SYS(recvfrom), SCMP_SYS(recvmsg), SCMP_SYS(sendto),
	SCMP_SYS(sendmsg), SCMP_SYS(getsockopt), SCMP_SYS(fcntl), SCMP_SYS(wait4),
	SCMP_SYS(rt_sigaction),
	/* a client's SO_PEERCRED is compared with our euid (src/usock.c) */
	SCMP_SYS(geteuid),
};
/* an invocation's relay: the loop, then client and guest bytes */
static const int pool_hot[] = { SCMP_SYS(epoll_wait), SCMP_SYS(recvfrom), SCMP_SYS(sendto) };

struct filter_spec {
	const char *name;
	const int *syscalls;
	size_t nr_syscalls;
	const unsigned long *ioctls;
	size_t nr_ioctls;
	bool write_slots;   /* write only to the fds patched into the slots */
	bool tgkill_self;   /* signal the VMM's own threads (vCPU kicks) */
	bool unix_sockets;  /* socket(AF_UNIX, ...) */
	bool threads;       /* start threads (the lz4 snapshot writer's workers) */
	bool pidfd_kill;    /* pidfd_send_signal(SIGKILL) on pidfds it was given */
	const int *hot;     /* checked first (after the ioctls): the calls of its hot path */
	size_t nr_hot;
};

static int add_list(scmp_filter_ctx c, const int *nrs, size_t n)
{
	int r = 0;

	for (size_t i = 0; !r && i < n; i++)
		r = seccomp_rule_add(c, SCMP_ACT_ALLOW, nrs[i], 0);
	return r;
}

static int build(scmp_filter_ctx c, const struct filter_spec *f)
{
	int r = add_list(c, common_syscalls, N(common_syscalls));

	if (!r)
		r = add_list(c, f->syscalls, f->nr_syscalls);
	/* checked first: KVM_RUN and UFFDIO_COPY are the hot calls */
	if (!r && f->nr_ioctls)
		r = seccomp_syscall_priority(c, SCMP_SYS(ioctl), 255);
	for (size_t i = 0; !r && i < f->nr_hot; i++)
		r = seccomp_syscall_priority(c, f->hot[i], 254);
	for (size_t i = 0; !r && i < f->nr_ioctls; i++)
		r = seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
				     SCMP_A1(SCMP_CMP_EQ, f->ioctls[i]));
	for (unsigned i = 0; !r && f->write_slots && i < SECCOMP_FD_SLOTS; i++)
		r = seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(write), 1,
				     SCMP_A0(SCMP_CMP_EQ, SECCOMP_FD_PLACEHOLDER + i));
	if (!r && f->tgkill_self)
		r = seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
				     SCMP_A0(SCMP_CMP_EQ, SECCOMP_PID_PLACEHOLDER));
	/* threads, never processes: clone only with CLONE_THREAD; clone3's flags sit behind
	 * a pointer the filter cannot read, so it fails with ENOSYS and glibc uses clone */
	if (!r && f->threads)
		r = seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
				     SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
	if (!r && f->threads)
		r = seccomp_rule_add(c, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	if (!r && f->unix_sockets)
		r = seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
				     SCMP_A0(SCMP_CMP_EQ, AF_UNIX));
	if (!r && f->pidfd_kill)
		r = seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(pidfd_send_signal), 1,
				     SCMP_A1(SCMP_CMP_EQ, SIGKILL));
	/* malloc and io_uring map memory, never executable memory */
	if (!r)
		r = seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
				     SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	if (!r)
		r = seccomp_rule_add(c, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
				     SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	return r;
}

static const struct filter_spec filters[] = {
	{ "seccomp_vcpu_bpf", vcpu_syscalls, N(vcpu_syscalls), vcpu_ioctls, N(vcpu_ioctls),
	  .write_slots = true, .tgkill_self = true },
	{ "seccomp_pager_bpf", pager_syscalls, N(pager_syscalls), pager_ioctls,
	  N(pager_ioctls), .write_slots = true },
	{ "seccomp_vsock_bpf", vsock_syscalls, N(vsock_syscalls), vsock_ioctls,
	  N(vsock_ioctls), .write_slots = true, .unix_sockets = true },
	{ "seccomp_cpucheck_bpf", cpucheck_syscalls, N(cpucheck_syscalls), cpucheck_ioctls,
	  N(cpucheck_ioctls), .write_slots = true },
	{ "seccomp_main_bpf", main_syscalls, N(main_syscalls), main_ioctls, N(main_ioctls),
	  .tgkill_self = true, .unix_sockets = true, .threads = true },
	{ "seccomp_pool_bpf", pool_syscalls, N(pool_syscalls), NULL, 0, .write_slots = true,
	  .unix_sockets = true, .pidfd_kill = true, .hot = pool_hot, .nr_hot = N(pool_hot) },
};

static int emit(FILE *out, const struct filter_spec *f, bool log_only)
{
	scmp_filter_ctx c = seccomp_init(log_only ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS);
	unsigned char buf[65536];
	FILE *tmp = tmpfile();
	size_t n;
	int r;

	if (!c || !tmp)
		return -ENOMEM;
	r = build(c, f);
	if (!r)
		r = seccomp_export_bpf(c, fileno(tmp));
	seccomp_release(c);
	if (r)
		return r;
	rewind(tmp);
	n = fread(buf, 1, sizeof(buf), tmp);
	fclose(tmp);
	if (n == 0 || n % 8 || n / 8 > 0xffff)
		return -EIO;
	fprintf(out, "const unsigned char %s[%zu] __attribute__((aligned(8))) = {", f->name, n);
	for (size_t i = 0; i < n; i++)
		fprintf(out, "%s0x%02x,", i % 12 ? " " : "\n\t", buf[i]);
	fprintf(out, "\n};\nconst unsigned %s_len = %zu;\n", f->name, n);
	return 0;
}

int main(int argc, char **argv)
{
	bool log_only = argc == 3 && !strcmp(argv[1], "--log");
	const char *path = argv[argc - 1];
	FILE *out;
	int r = 0;

	if (argc != 2 && !log_only) {
		fprintf(stderr, "usage: seccomp-gen [--log] OUT.c\n");
		return 2;
	}
	out = fopen(path, "w");
	if (!out) {
		perror(path);
		return 1;
	}
	fprintf(out, "/* Generated by src/tools/seccomp-gen.c: BPF for prctl(PR_SET_SECCOMP). */\n");
	for (size_t i = 0; !r && i < N(filters); i++)
		r = emit(out, &filters[i], log_only);
	if (fclose(out) || r) {
		fprintf(stderr, "seccomp-gen: %s\n", strerror(r ? -r : errno));
		unlink(path);
		return 1;
	}
	return 0;
}
