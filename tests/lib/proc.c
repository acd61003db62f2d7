/*
 * Running a child process from a test: spawn (stdin from /dev/null, or fed from a
 * buffer), capture stdout and stderr through pipes, wait with a deadline, and parse
 * ember's machine-readable lines (ember-timing, ember-regs, ember-mem). Pipes rather
 * than temp files so a test can wait for a line while the child is still running (e.g.
 * "ready" before sending SIGTERM).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

extern char **environ;

struct outbuf {
	char *data;
	size_t len, cap;
	int fd; /* -1 once closed */
};

/* What proc_start_input feeds the child's stdin. */
struct inbuf {
	uint8_t *data;
	size_t len, off;
	int fd; /* -1 once everything is written or the child stopped reading */
};

struct proc {
	pid_t pid;
	struct outbuf out, err;
	struct inbuf in;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Keeps data NUL-terminated so callers can strstr() at any time. */
static int outbuf_append(struct outbuf *b, const char *src, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->data, cap);
		if (!p)
			return -ENOMEM;
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, src, n);
	b->len += n;
	b->data[b->len] = 0;
	return 0;
}

/* input == NULL: stdin from /dev/null; else a pipe that pump() fills with input. */
static int spawn(struct proc **out, char *const argv[], const void *input, size_t len)
{
	posix_spawn_file_actions_t fa;
	int opipe[2] = { -1, -1 }, epipe[2] = { -1, -1 }, ipipe[2] = { -1, -1 };
	struct proc *p;
	int r;

	*out = NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->out.fd = p->err.fd = p->in.fd = -1;
	if (outbuf_append(&p->out, "", 0) || outbuf_append(&p->err, "", 0)) {
		r = -ENOMEM;
		goto fail;
	}
	if (input) {
		p->in.data = malloc(len ? len : 1);
		if (!p->in.data) {
			r = -ENOMEM;
			goto fail;
		}
		memcpy(p->in.data, input, len);
		p->in.len = len;
	}
	if (pipe2(opipe, O_CLOEXEC) < 0 || pipe2(epipe, O_CLOEXEC) < 0 ||
	    (input && pipe2(ipipe, O_CLOEXEC) < 0)) {
		r = -errno;
		goto fail;
	}
	/* our end only: pump() must never block on a full pipe */
	if (input && fcntl(ipipe[1], F_SETFL, O_NONBLOCK) < 0) {
		r = -errno;
		goto fail;
	}
	r = posix_spawn_file_actions_init(&fa);
	if (r) {
		r = -r;
		goto fail;
	}
	/* dup2 clears O_CLOEXEC on the child's 0, 1 and 2; the originals close on exec */
	if (input)
		posix_spawn_file_actions_adddup2(&fa, ipipe[0], STDIN_FILENO);
	else
		posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, opipe[1], STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, epipe[1], STDERR_FILENO);
	r = posix_spawn(&p->pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r) {
		r = -r;
		goto fail;
	}
	close(opipe[1]);
	close(epipe[1]);
	p->out.fd = opipe[0];
	p->err.fd = epipe[0];
	if (input) {
		close(ipipe[0]);
		p->in.fd = ipipe[1];
		if (len == 0) { /* nothing to feed: end-of-file at once */
			close(p->in.fd);
			p->in.fd = -1;
		}
	}
	*out = p;
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		if (opipe[i] >= 0)
			close(opipe[i]);
		if (epipe[i] >= 0)
			close(epipe[i]);
		if (ipipe[i] >= 0)
			close(ipipe[i]);
	}
	free(p->out.data);
	free(p->err.data);
	free(p->in.data);
	free(p);
	return r;
}

int proc_start(struct proc **out, char *const argv[])
{
	return spawn(out, argv, NULL, 0);
}

int proc_start_input(struct proc **out, char *const argv[], const void *input, size_t len)
{
	return spawn(out, argv, input ? input : "", len);
}

pid_t proc_pid(const struct proc *p)
{
	return p->pid;
}

static void close_input(struct proc *p)
{
	if (p->in.fd >= 0)
		close(p->in.fd);
	p->in.fd = -1;
}

/*
 * A child that stops reading its stdin (it exited, or refused the input) must not kill
 * the test with SIGPIPE: block the signal around the write and discard the one the
 * write raised, unless one was already pending before.
 */
static ssize_t write_nosigpipe(int fd, const void *buf, size_t n)
{
	sigset_t pipe_set, old, pending;
	struct timespec zero = { 0 };
	bool was_pending;
	ssize_t r;
	int saved;

	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	sigpending(&pending);
	was_pending = sigismember(&pending, SIGPIPE);
	r = write(fd, buf, n);
	saved = errno;
	if (r < 0 && saved == EPIPE && !was_pending)
		sigtimedwait(&pipe_set, NULL, &zero);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = saved;
	return r;
}

/* Feeds the child's stdin as far as the pipe takes it; closes it when all is written. */
static void feed_input(struct proc *p)
{
	while (p->in.fd >= 0 && p->in.off < p->in.len) {
		size_t n = p->in.len - p->in.off;
		ssize_t w = write_nosigpipe(p->in.fd, p->in.data + p->in.off, n > 65536 ? 65536 : n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				close_input(p); /* EPIPE: the child stopped reading */
			return;
		}
		p->in.off += (size_t)w;
	}
	close_input(p);
}

/*
 * One poll round over the open pipes: 1 when it read, wrote or closed something, 0
 * when nothing was ready in timeout_ms, -1 once stdout and stderr are both closed.
 */
static int pump(struct proc *p, int timeout_ms)
{
	struct outbuf *bufs[2] = { &p->out, &p->err };
	struct pollfd pfd[3];
	nfds_t n = 0, nout;
	char chunk[8192];

	for (int i = 0; i < 2; i++)
		if (bufs[i]->fd >= 0)
			pfd[n++] = (struct pollfd){ .fd = bufs[i]->fd, .events = POLLIN };
	if (n == 0) {
		close_input(p); /* the child is gone or has stopped talking: stop feeding it */
		return -1;
	}
	nout = n;
	if (p->in.fd >= 0)
		pfd[n++] = (struct pollfd){ .fd = p->in.fd, .events = POLLOUT };
	if (poll(pfd, n, timeout_ms) <= 0)
		return 0;
	if (n > nout && pfd[nout].revents)
		feed_input(p); /* POLLERR: the read end closed; the write says EPIPE */
	for (nfds_t k = 0; k < nout; k++) {
		struct outbuf *b = pfd[k].fd == p->out.fd ? &p->out : &p->err;
		ssize_t got;

		if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		got = read(b->fd, chunk, sizeof(chunk));
		if (got > 0) {
			outbuf_append(b, chunk, (size_t)got);
		} else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
			close(b->fd);
			b->fd = -1;
		}
	}
	return 1;
}

static int remaining_ms(uint64_t deadline)
{
	uint64_t now = now_ms();

	return now >= deadline ? 0 : (int)(deadline - now);
}

bool proc_wait_output(struct proc *p, const char *needle, unsigned timeout_ms)
{
	uint64_t deadline = now_ms() + timeout_ms;

	for (;;) {
		if (strstr(p->out.data, needle) || strstr(p->err.data, needle))
			return true;
		if (remaining_ms(deadline) == 0 || pump(p, remaining_ms(deadline)) < 0)
			return strstr(p->out.data, needle) || strstr(p->err.data, needle);
	}
}

int proc_finish(struct proc *p, unsigned timeout_ms, struct proc_result *r)
{
	uint64_t deadline = now_ms() + timeout_ms;
	int wstatus = 0, ret = 0, slice;
	bool killed = false;

	memset(r, 0, sizeof(*r));
	for (;;) {
		pid_t w = waitpid(p->pid, &wstatus, WNOHANG);

		if (w == p->pid)
			break;
		if (w < 0 && errno != EINTR) {
			ret = -errno;
			break;
		}
		if (!killed && remaining_ms(deadline) == 0) {
			kill(p->pid, SIGKILL);
			killed = true;
		}
		/* drain the pipes meanwhile, so a chatty child never blocks on a full one */
		slice = killed ? 10 : remaining_ms(deadline);
		if (pump(p, slice < 10 ? slice : 10) < 0)
			usleep(1000);
	}
	/*
	 * The child is gone: what is left in the pipes is the end of its output. Stop at
	 * the first quiet poll in case a grandchild still holds a pipe open.
	 */
	while (pump(p, 0) > 0)
		;
	r->timed_out = killed;
	if (ret == 0) {
		if (WIFEXITED(wstatus)) {
			r->status = WEXITSTATUS(wstatus);
		} else if (WIFSIGNALED(wstatus)) {
			r->signal = WTERMSIG(wstatus);
			r->status = 128 + r->signal;
		}
	}
	r->out = p->out.data;
	r->out_len = p->out.len;
	r->err = p->err.data;
	r->err_len = p->err.len;
	close_input(p);
	free(p->in.data);
	free(p);
	return ret;
}

int proc_run(char *const argv[], unsigned timeout_ms, struct proc_result *r)
{
	struct proc *p;
	int ret = proc_start(&p, argv);

	if (ret) {
		memset(r, 0, sizeof(*r));
		return ret;
	}
	return proc_finish(p, timeout_ms, r);
}

int proc_run_input(char *const argv[], const void *input, size_t len, unsigned timeout_ms,
		   struct proc_result *r)
{
	struct proc *p;
	int ret = proc_start_input(&p, argv, input, len);

	if (ret) {
		memset(r, 0, sizeof(*r));
		return ret;
	}
	return proc_finish(p, timeout_ms, r);
}

void proc_result_free(struct proc_result *r)
{
	free(r->out);
	free(r->err);
	r->out = r->err = NULL;
}

/* ---- parsing ember's key=value lines ------------------------------------------------- */

unsigned proc_parse_timings(const char *text, struct proc_timing *t, unsigned max)
{
	static const char tag[] = "ember-timing ";
	unsigned n = 0;

	for (const char *line = text; line && *line && n < max;) {
		const char *eol = strchr(line, '\n');
		char phase[sizeof(t->phase)];
		long long us;

		if (!strncmp(line, tag, sizeof(tag) - 1) &&
		    sscanf(line + sizeof(tag) - 1, "%31s %lld", phase, &us) == 2) {
			snprintf(t[n].phase, sizeof(t[n].phase), "%s", phase);
			t[n].us = us;
			n++;
		}
		line = eol ? eol + 1 : NULL;
	}
	return n;
}

int64_t proc_timing_us(const char *text, const char *phase)
{
	struct proc_timing t[64];
	unsigned n = proc_parse_timings(text, t, 64);

	for (unsigned i = 0; i < n; i++)
		if (!strcmp(t[i].phase, phase))
			return t[i].us;
	return -1;
}

const char *proc_find_line(const char *text, const char *prefix, char *buf, size_t len)
{
	size_t plen = strlen(prefix);

	for (const char *line = text; line && *line;) {
		const char *eol = strchr(line, '\n');
		size_t n = eol ? (size_t)(eol - line) : strlen(line);

		if (n >= plen && !strncmp(line, prefix, plen)) {
			if (len == 0)
				return NULL;
			if (n >= len)
				n = len - 1;
			memcpy(buf, line, n);
			buf[n] = 0;
			return buf;
		}
		line = eol ? eol + 1 : NULL;
	}
	return NULL;
}

int proc_line_u64(const char *line, const char *key, uint64_t *v)
{
	size_t klen = strlen(key);

	for (const char *s = strstr(line, key); s; s = strstr(s + 1, key)) {
		char *end;

		/* whole keys only: "rip=" must not match "xrip=" */
		if ((s != line && s[-1] != ' ') || s[klen] != '=')
			continue;
		errno = 0;
		*v = strtoull(s + klen + 1, &end, 0);
		if (errno || end == s + klen + 1 || (*end && *end != ' '))
			return -EINVAL;
		return 0;
	}
	return -ENOENT;
}
