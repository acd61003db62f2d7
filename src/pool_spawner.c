/*
 * The pool's spawner (README, "Seccomp"; INVOCATION.md 7): a child of the pool, forked
 * before the pool handles any client and before it installs its own seccomp filter. A
 * filter survives execve, so the pool cannot start its VMs itself once it is filtered
 * (they would inherit it); the spawner stays unfiltered and does only that, on request:
 *
 *   pool -> spawner  struct spawn_req (SPAWN_VM: fork+exec `ember restore --standby`
 *                    for VM <id>; UNLINK_SOCKET: remove the pool's socket file)
 *   spawner -> pool  struct spawn_reply, with the VM's ready pipe (read end), a
 *                    read-only fd of its log and a pidfd, over SCM_RIGHTS
 *   spawner -> pool  struct spawn_exit on a second socket, each time it reaps a VM,
 *                    after it removed the VM's files from the run directory
 *
 * So the pool opens no file, unlinks nothing, forks and executes nothing and signals
 * only its own VMs (pidfd_send_signal) after start-up. The spawner dies with the pool
 * (PR_SET_PDEATHSIG) and the VMs with the spawner; when the pool closes the request
 * socket, the spawner kills what is left, reaps it, removes the run directory and exits.
 * It trusts nothing it reads but a fixed-size request whose only free field is an id.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pool_int.h"

struct child {
	pid_t pid;
	unsigned id;
};

struct spawner {
	const struct pool *p;  /* the forked copy: configuration and run directory only */
	int req_fd, ev_fd, sig_fd;
	struct child *kids;
	size_t nr_kids, cap_kids;
	struct spawn_exit *out; /* reports the pool has not taken yet */
	size_t nr_out, cap_out;
};

int pool_vm_paths(const char *run_dir, unsigned id, char *ctl, size_t ctl_cap, char *uds,
		  size_t uds_cap, char *log, size_t log_cap)
{
	int a = snprintf(ctl, ctl_cap, "%s/vm-%u.ctl", run_dir, id);
	/* ember binds the vsock socket's PATH_<port> too: keep room for 11 bytes */
	int b = snprintf(uds, uds_cap - 11, "%s/vm-%u.vsock", run_dir, id);
	int c = snprintf(log, log_cap, "%s/vm-%u.log", run_dir, id);

	return a >= (int)ctl_cap || b >= (int)uds_cap - 11 || c >= (int)log_cap ? -ENAMETOOLONG
										  : 0;
}

/* fork, not posix_spawn: the child must die with the spawner (PR_SET_PDEATHSIG), which
 * dies with the pool, so a pool that is killed never leaves VMs behind. */
static pid_t spawn_child(const struct pool *p, const char *ctl, const char *uds, int ready_w,
			 int log_fd)
{
	char *argv[] = {
		"ember", "restore", "--snapshot", (char *)p->snapshot, "--standby",
		"--api-sock", (char *)ctl, "--vsock-uds", (char *)uds, "--console", "none",
		"--ready-fd", "3", NULL,
	};
	pid_t parent = getpid(), pid;
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigset_t none;

	sigemptyset(&none);
	pid = fork();
	if (pid != 0)
		return pid;
	/* the child: async-signal-safe calls only */
	sigaction(SIGPIPE, &dfl, NULL);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != parent)
		_exit(127);
	if (dup2(p->null_fd, 0) < 0 || dup2(p->null_fd, 1) < 0 || dup2(log_fd, 2) < 0)
		_exit(127);
	if (ready_w == 3 ? fcntl(3, F_SETFD, 0) : dup2(ready_w, 3) < 0)
		_exit(127);
#ifdef SYS_close_range
	syscall(SYS_close_range, 4u, ~0u, 0u);
#endif
	execv("/proc/self/exe", argv);
	_exit(127);
}

static int send_reply(int fd, const struct spawn_reply *rep, const int *fds, unsigned nfds)
{
	union {
		char buf[CMSG_SPACE(3 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { (void *)rep, sizeof(*rep) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds) {
		struct cmsghdr *cm;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	return sendmsg(fd, &mh, MSG_NOSIGNAL) == (ssize_t)sizeof(*rep) ? 0 : -errno;
}

/* One VM: its log, its ready pipe, the child, a pidfd; the pool gets the three fds. */
static void do_spawn(struct spawner *s, unsigned id)
{
	char ctl[108], uds[108], log[PATH_MAX];
	struct spawn_reply rep = { .err = 0 };
	int pipefd[2] = { -1, -1 }, log_w = -1, fds[3] = { -1, -1, -1 };
	pid_t pid = -1;

	if (s->nr_kids == s->cap_kids) {
		size_t cap = s->cap_kids ? 2 * s->cap_kids : 16;
		struct child *k = realloc(s->kids, cap * sizeof(*k));

		if (!k) {
			rep.err = -ENOMEM;
			goto reply;
		}
		s->kids = k;
		s->cap_kids = cap;
	}
	rep.err = pool_vm_paths(s->p->run_dir, id, ctl, sizeof(ctl), uds, sizeof(uds), log,
				sizeof(log));
	if (rep.err)
		goto reply;
	log_w = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	fds[1] = log_w < 0 ? -1 : open(log, O_RDONLY | O_CLOEXEC);
	if (fds[1] < 0 || pipe2(pipefd, O_CLOEXEC | O_NONBLOCK)) {
		rep.err = -errno;
		goto reply;
	}
	fds[0] = pipefd[0];
	/* the child's end blocks: ember writes one line there */
	fcntl(pipefd[1], F_SETFL, 0);
	pid = spawn_child(s->p, ctl, uds, pipefd[1], log_w);
	if (pid < 0) {
		rep.err = -errno;
		goto reply;
	}
	s->kids[s->nr_kids++] = (struct child){ pid, id };
	rep.pid = pid;
	/* not reaped before the pool has the pidfd: it cannot name another process */
	fds[2] = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fds[2] < 0) {
		rep.err = -errno;
		kill(pid, SIGKILL); /* reaped (and reported) like any other */
	}
reply:
	if (rep.err && pid < 0)
		unlink(log);
	send_reply(s->req_fd, &rep, fds, rep.err ? 0 : 3);
	for (unsigned i = 0; i < 3; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	if (log_w >= 0)
		close(log_w);
}

static void reap(struct spawner *s)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (size_t i = 0; i < s->nr_kids; i++) {
			char ctl[108], uds[108], log[PATH_MAX];

			if (s->kids[i].pid != pid)
				continue;
			if (!pool_vm_paths(s->p->run_dir, s->kids[i].id, ctl, sizeof(ctl), uds,
					   sizeof(uds), log, sizeof(log))) {
				/* the pool still reads the log through its own fd */
				unlink(log);
				unlink(ctl);
				unlink(uds);
			}
			s->kids[i] = s->kids[--s->nr_kids];
			if (s->nr_out == s->cap_out) {
				size_t cap = s->cap_out ? 2 * s->cap_out : 16;
				struct spawn_exit *o = realloc(s->out, cap * sizeof(*o));

				if (!o)
					_exit(1); /* the pool sees it go and stops */
				s->out = o;
				s->cap_out = cap;
			}
			s->out[s->nr_out++] = (struct spawn_exit){ pid, status };
			break;
		}
	}
}

/* Reports go out as the pool takes them: the spawner never blocks on the pool. */
static void flush_reports(struct spawner *s)
{
	size_t done = 0;

	while (done < s->nr_out &&
	       send(s->ev_fd, &s->out[done], sizeof(s->out[done]), MSG_NOSIGNAL | MSG_DONTWAIT) ==
		       (ssize_t)sizeof(s->out[done]))
		done++;
	if (done) {
		memmove(s->out, s->out + done, (s->nr_out - done) * sizeof(*s->out));
		s->nr_out -= done;
	}
}

void pool_remove_run_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (d) {
		while ((e = readdir(d)))
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
				unlinkat(dirfd(d), e->d_name, 0);
		closedir(d);
	}
	rmdir(dir);
}

static void spawner_main(struct spawner *s)
{
	for (;;) {
		struct pollfd pf[3] = {
			{ s->req_fd, POLLIN, 0 },
			{ s->sig_fd, POLLIN, 0 },
			{ s->ev_fd, s->nr_out ? POLLOUT : 0, 0 },
		};
		struct signalfd_siginfo si;
		struct spawn_req rq;
		ssize_t n;

		if (poll(pf, 3, -1) < 0 && errno != EINTR)
			break;
		while (read(s->sig_fd, &si, sizeof(si)) == sizeof(si))
			;
		reap(s);
		flush_reports(s);
		if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		n = recv(s->req_fd, &rq, sizeof(rq), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t)sizeof(rq))
			break; /* the pool is gone (or broken): stop */
		if (rq.op == SPAWN_VM) {
			do_spawn(s, rq.id);
		} else {
			struct spawn_reply rep = { .err = rq.op == UNLINK_SOCKET ? 0 : -EINVAL };

			if (rq.op == UNLINK_SOCKET && unlink(s->p->socket_path))
				rep.err = -errno;
			send_reply(s->req_fd, &rep, NULL, 0);
		}
	}
	/* the pool closed its end: nothing is left to serve */
	for (size_t i = 0; i < s->nr_kids; i++)
		kill(s->kids[i].pid, SIGKILL);
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
		;
	pool_remove_run_dir(s->p->run_dir);
	free(s->kids);
	free(s->out);
}

int pool_spawner_start(struct pool *p)
{
	int req[2], ev[2], r;
	pid_t parent = getpid(), pid;
	sigset_t mask;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, req))
		return -errno;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ev)) {
		r = -errno;
		close(req[0]);
		close(req[1]);
		return r;
	}
	pid = fork();
	if (pid < 0) {
		r = -errno;
		close(req[0]);
		close(req[1]);
		close(ev[0]);
		close(ev[1]);
		return r;
	}
	if (pid == 0) {
		struct spawner s = { .p = p, .req_fd = req[1], .ev_fd = ev[1] };

		if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != parent)
			_exit(1);
		prctl(PR_SET_NAME, "ember-spawner");
		close(req[0]);
		close(ev[0]);
		close(p->listen_fd);
		close(p->epfd);
		close(p->sig_fd);
		/* SIGCHLD (and the pool's SIGTERM/SIGINT, which stay blocked: the pool decides)
		 * are blocked since setup */
		sigemptyset(&mask);
		sigaddset(&mask, SIGCHLD);
		s.sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
		if (s.sig_fd < 0)
			_exit(1);
		spawner_main(&s);
		_exit(0);
	}
	close(req[1]);
	close(ev[1]);
	p->spawner_pid = pid;
	p->spawn_fd = req[0];
	p->spawn_ev_fd = ev[0];
	fcntl(p->spawn_ev_fd, F_SETFL, O_NONBLOCK);
	return 0;
}

/* A request and its answer; fds (3) get the passed descriptors, or -1. */
static int request(struct pool *p, const struct spawn_req *rq, struct spawn_reply *rep,
		   int *fds)
{
	union {
		char buf[CMSG_SPACE(3 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { rep, sizeof(*rep) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf) };
	ssize_t n;

	for (unsigned i = 0; fds && i < 3; i++)
		fds[i] = -1;
	if (send(p->spawn_fd, rq, sizeof(*rq), MSG_NOSIGNAL) != (ssize_t)sizeof(*rq))
		return -errno;
	do
		n = recvmsg(p->spawn_fd, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(*rep))
		return n < 0 ? -errno : -EPIPE;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		size_t nfds = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < nfds; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (fds && i < 3)
				fds[i] = fd;
			else
				close(fd);
		}
	}
	return 0;
}

int pool_spawner_spawn(struct pool *p, struct pool_vm *vm)
{
	struct spawn_req rq = { .op = SPAWN_VM, .id = vm->id };
	struct spawn_reply rep;
	int fds[3], r = request(p, &rq, &rep, fds);

	if (!r && rep.err)
		r = rep.err;
	if (!r && (fds[0] < 0 || fds[1] < 0 || fds[2] < 0))
		r = -EPROTO;
	if (r) {
		for (unsigned i = 0; i < 3; i++)
			close_fd(&fds[i]);
		/* a VM that started but could not be handed over is killed and reported */
		return r;
	}
	vm->pid = rep.pid;
	vm->ready_fd = fds[0];
	vm->log_fd = fds[1];
	vm->pidfd = fds[2];
	return 0;
}

int pool_spawner_unlink_socket(struct pool *p)
{
	struct spawn_req rq = { .op = UNLINK_SOCKET };
	struct spawn_reply rep;
	int r = request(p, &rq, &rep, NULL);

	return r ? r : rep.err;
}

void pool_vm_kill(struct pool_vm *vm)
{
	if (!vm->reaped && vm->pidfd >= 0)
		syscall(SYS_pidfd_send_signal, vm->pidfd, SIGKILL, NULL, 0);
}

void pool_spawner_stop(struct pool *p)
{
	close_fd(&p->spawn_fd);
	close_fd(&p->spawn_ev_fd);
	if (p->spawner_pid > 0)
		while (waitpid(p->spawner_pid, NULL, 0) < 0 && errno == EINTR)
			;
	p->spawner_pid = 0;
}
