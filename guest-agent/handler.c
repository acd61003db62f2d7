/*
 * Handler processes: fork/exec with a stdin and a stdout pipe, one poll loop that feeds
 * the payload, collects the output and watches the process (a pidfd), so that neither a
 * handler that never reads nor one that writes without end can block the agent.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "handler.h"

#define READ_CHUNK 65536

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* In the child: becomes its own process group, wires the pipes and execs. */
static void __attribute__((noreturn)) child_exec(char *const argv[], int in_rd, int out_wr)
{
	setpgid(0, 0);
	/* the agent ignores SIGPIPE; an ignored signal stays ignored across exec */
	signal(SIGPIPE, SIG_DFL);
	if (dup2(in_rd, STDIN_FILENO) < 0 || dup2(out_wr, STDOUT_FILENO) < 0)
		_exit(127);
	execv(argv[0], argv);
	_exit(127);
}

/* Appends what stdout has now, into r->out[0..cap); false at end of stream. Sets *over
 * once more than max bytes came (cap is max + 1 at most: one byte too many tells). */
static bool drain_output(int fd, struct handler_result *r, size_t cap, size_t max, bool *over)
{
	for (;;) {
		size_t room = cap - r->out_len;
		ssize_t n;

		if (!room)
			return true; /* the caller grows the buffer and comes back */
		n = read(fd, r->out + r->out_len, room < READ_CHUNK ? room : READ_CHUNK);
		if (n > 0) {
			r->out_len += (size_t)n;
			if (r->out_len > max) {
				*over = true;
				return true;
			}
			continue;
		}
		if (n == 0)
			return false;
		if (errno == EINTR)
			continue;
		return true; /* EAGAIN: nothing more now */
	}
}

/* Grows the output buffer (doubling, up to cap) when it is full. */
static int ensure_room(struct handler_result *r, size_t *alloc, size_t cap)
{
	size_t na;
	uint8_t *nb;

	if (r->out_len < *alloc || *alloc >= cap)
		return 0;
	na = *alloc * 2 < cap ? *alloc * 2 : cap;
	nb = realloc(r->out, na);
	if (!nb)
		return -ENOMEM;
	r->out = nb;
	*alloc = na;
	return 0;
}

static void set_outcome(struct handler_result *r, int wstatus)
{
	if (WIFEXITED(wstatus)) {
		r->outcome = HANDLER_EXITED;
		r->exit_code = WEXITSTATUS(wstatus);
	} else {
		r->outcome = HANDLER_SIGNALED;
		r->signal = WTERMSIG(wstatus);
	}
}

int handler_run(char *const argv[], const uint8_t *in, size_t in_len,
		const struct handler_limits *lim, struct handler_result *r)
{
	int in_p[2] = { -1, -1 }, out_p[2] = { -1, -1 }, pidfd = -1, ret, wstatus = 0;
	uint64_t start = now_ms(), deadline = lim->timeout_ms ? start + lim->timeout_ms : 0;
	size_t cap = lim->max_output + 1, written = 0;
	/* the output buffer grows up to cap; start small, most outputs are */
	size_t alloc = cap < READ_CHUNK ? cap : READ_CHUNK;
	bool exited = false, out_open = true, over = false, timed_out = false;
	pid_t pid;

	memset(r, 0, sizeof(*r));
	r->out = malloc(alloc);
	if (!r->out)
		return -ENOMEM;
	if (pipe2(in_p, O_CLOEXEC) || pipe2(out_p, O_CLOEXEC)) {
		ret = -errno;
		goto fail;
	}
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		goto fail;
	}
	if (pid == 0)
		child_exec(argv, in_p[0], out_p[1]);
	setpgid(pid, pid); /* also here: no window in which a kill(-pid) misses it */
	close_fd(&in_p[0]);
	close_fd(&out_p[1]);
	fcntl(in_p[1], F_SETFL, O_NONBLOCK);
	fcntl(out_p[0], F_SETFL, O_NONBLOCK);
	pidfd = pidfd_open(pid, 0);
	if (pidfd < 0) {
		ret = -errno;
		kill(-pid, SIGKILL);
		waitpid(pid, NULL, 0);
		goto fail;
	}
	if (!in_len)
		close_fd(&in_p[1]);

	while (!exited || out_open) {
		struct pollfd p[3];
		int np = 0, timeout = -1, i_in = -1, i_out = -1, i_pid = -1;

		if (deadline) {
			uint64_t t = now_ms();

			if (t >= deadline) {
				timed_out = true;
				break;
			}
			timeout = (int)(deadline - t);
		}
		if (in_p[1] >= 0) {
			p[np] = (struct pollfd){ .fd = in_p[1], .events = POLLOUT };
			i_in = np++;
		}
		if (out_open) {
			p[np] = (struct pollfd){ .fd = out_p[0], .events = POLLIN };
			i_out = np++;
		}
		if (!exited) {
			p[np] = (struct pollfd){ .fd = pidfd, .events = POLLIN };
			i_pid = np++;
		}
		if (poll(p, (nfds_t)np, timeout) < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			kill(-pid, SIGKILL);
			waitpid(pid, NULL, 0);
			goto fail;
		}
		if (i_in >= 0 && p[i_in].revents) {
			ssize_t n = write(in_p[1], in + written, in_len - written);

			if (n > 0)
				written += (size_t)n;
			/* EPIPE: the handler does not want the rest of its stdin */
			if ((n < 0 && errno != EAGAIN && errno != EINTR) || written == in_len)
				close_fd(&in_p[1]);
		}
		if (i_out >= 0 && p[i_out].revents) {
			if (ensure_room(r, &alloc, cap)) {
				ret = -ENOMEM;
				kill(-pid, SIGKILL);
				waitpid(pid, NULL, 0);
				goto fail;
			}
			out_open = drain_output(out_p[0], r, alloc, lim->max_output, &over);
			if (over)
				break;
		}
		if (i_pid >= 0 && p[i_pid].revents) {
			if (waitpid(pid, &wstatus, WNOHANG) == pid) {
				exited = true;
				/* what it wrote is in the pipe; a child it left behind may hold
				 * the pipe open, so take what is there and stop */
				while (out_open && !over && !ensure_room(r, &alloc, cap)) {
					size_t before = r->out_len;

					out_open = drain_output(out_p[0], r, alloc, lim->max_output,
								&over);
					if (r->out_len == before)
						break; /* EAGAIN: nothing more */
				}
				if (over)
					break;
				out_open = false;
			}
		}
	}
	/* whatever it started dies with it, on success too */
	kill(-pid, SIGKILL);
	if (!exited)
		waitpid(pid, &wstatus, 0);
	if (timed_out)
		r->outcome = HANDLER_TIMED_OUT;
	else if (over)
		r->outcome = HANDLER_TOO_MUCH;
	else
		set_outcome(r, wstatus);
	if (over)
		r->out_len = lim->max_output < r->out_len ? lim->max_output : r->out_len;
	r->elapsed_ms = (unsigned)(now_ms() - start);
	ret = 0;
	goto out;
fail:
	free(r->out);
	r->out = NULL;
out:
	close_fd(&in_p[0]);
	close_fd(&in_p[1]);
	close_fd(&out_p[0]);
	close_fd(&out_p[1]);
	close_fd(&pidfd);
	return ret;
}
