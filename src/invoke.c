/*
 * The invocation client (INVOCATION.md): reaches a guest port through ember's hybrid
 * vsock socket ("CONNECT <port>\n", answered "OK <host port>\n"), writes one request
 * frame and reads its response. Everything that comes back is the guest's doing, so
 * every byte is checked before it is believed, and every wait is bounded by one
 * absolute deadline (non-blocking sockets + ppoll): a silent peer costs a timeout,
 * never a hang. The same client speaks to an `ember pool` socket (no CONNECT line; the
 * pool's statuses 5..7 are valid there). The frames themselves are invoke_proto.c's.
 * `ember invoke` (invoke_run) is at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define CONNECT_LINE_MAX 32 /* INVOCATION.md 1: ember's lines are at most this, newline included */
#define MESSAGE_MAX INVOKE_MESSAGE_MAX

uint64_t invoke_clock_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Waits until fd is ready for events or the deadline (0: none) passes. */
static int wait_fd(int fd, short events, uint64_t deadline_ns)
{
	struct pollfd pfd = { .fd = fd, .events = events };

	for (;;) {
		struct timespec ts, *tsp = NULL;
		int n;

		if (deadline_ns) {
			uint64_t now = invoke_clock_ns(), left;

			if (now >= deadline_ns)
				return -ETIMEDOUT;
			left = deadline_ns - now;
			ts.tv_sec = (time_t)(left / 1000000000ull);
			ts.tv_nsec = (long)(left % 1000000000ull);
			tsp = &ts;
		}
		n = ppoll(&pfd, 1, tsp, NULL);
		/* POLLERR / POLLHUP count as ready: the next send or recv says what happened */
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

/* Writes every byte of iov; *sent counts them. Reads nothing meanwhile: the agent
 * reads a whole request before it answers (INVOCATION.md 5). */
static int send_all(int fd, struct iovec *iov, int iovcnt, uint64_t deadline_ns, size_t *sent)
{
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };

	*sent = 0;
	while (mh.msg_iovlen) {
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		size_t done;
		int r;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -errno;
			r = wait_fd(fd, POLLOUT, deadline_ns);
			if (r)
				return r;
			continue;
		}
		*sent += (size_t)n;
		done = (size_t)n;
		while (mh.msg_iovlen && done >= mh.msg_iov->iov_len) {
			done -= mh.msg_iov->iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen) {
			mh.msg_iov->iov_base = (uint8_t *)mh.msg_iov->iov_base + done;
			mh.msg_iov->iov_len -= done;
		}
	}
	return 0;
}

/* Reads exactly len bytes; *got counts them. -ECONNRESET when the peer closed or reset
 * the connection first. */
static int recv_exact(int fd, void *buf, size_t len, uint64_t deadline_ns, size_t *got)
{
	*got = 0;
	while (*got < len) {
		ssize_t n = recv(fd, (uint8_t *)buf + *got, len - *got, 0);
		int r;

		if (n > 0) {
			*got += (size_t)n;
			continue;
		}
		if (n == 0 || errno == ECONNRESET)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		r = wait_fd(fd, POLLIN, deadline_ns);
		if (r)
			return r;
	}
	return 0;
}

/* AF_UNIX has no EINPROGRESS: a non-blocking connect either succeeds at once or fails
 * with EAGAIN when the listener's backlog is full. That is worth retrying until the
 * deadline; every other error is final. */
static int connect_unix(int fd, const struct sockaddr_un *sa, uint64_t deadline_ns)
{
	for (;;) {
		struct timespec pause = { .tv_nsec = 1000000 };

		if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 || errno == EISCONN)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		if (deadline_ns && invoke_clock_ns() >= deadline_ns)
			return -ETIMEDOUT;
		nanosleep(&pause, NULL);
	}
}

/* flag: the option that names the socket ("--vsock-uds", "--socket"), what: whose it is */
static int explain_connect_error(int r, const char *path, const char *what, const char *flag,
				 struct errbuf *eb)
{
	switch (r) {
	case -ENOENT:
		return errbuf_set(eb, r, "%s: no such socket: is %s running with %s %s?", path,
				  what, flag, path);
	case -ECONNREFUSED:
		return errbuf_set(eb, r, "%s: nobody listens on this socket: is %s running with "
				  "%s %s?", path, what, flag, path);
	case -ETIMEDOUT:
		return errbuf_set(eb, r, "%s: timed out connecting: the socket's backlog stayed full",
				  path);
	default:
		return errbuf_set(eb, r, "%s: connect: %s", path, strerror(-r));
	}
}

/* A non-blocking connected Unix stream socket, or -errno with the reason in eb. */
static int open_unix(const char *path, const char *what, const char *flag, uint64_t deadline_ns,
		     struct errbuf *eb)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t plen = strlen(path);
	int fd, r;

	if (plen == 0 || plen >= sizeof(sa.sun_path))
		return errbuf_set(eb, -ENAMETOOLONG, "'%s': a Unix socket path has 1..%zu bytes",
				  path, sizeof(sa.sun_path) - 1);
	memcpy(sa.sun_path, path, plen);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errbuf_set(eb, -errno, "socket: %s", strerror(errno));
	r = connect_unix(fd, &sa, deadline_ns);
	if (r) {
		close(fd);
		return explain_connect_error(r, path, what, flag, eb);
	}
	return fd;
}

static int closed_without_ok(uint32_t port, struct errbuf *eb)
{
	return errbuf_set(eb, -ECONNRESET,
			  "ember closed the connection without answering OK to 'CONNECT %" PRIu32
			  "': nothing listens on guest port %" PRIu32 " (or the guest did not accept "
			  "within 2 s), or ember is at its connection limit", port, port);
}

/*
 * Reads ember's answer to CONNECT, a line of at most CONNECT_LINE_MAX bytes, without
 * consuming a byte past its newline: what follows belongs to the guest. Peeking first
 * and then taking only up to the newline costs two syscalls instead of one per byte.
 */
static int read_ok_line(int fd, uint32_t port, uint64_t deadline_ns, uint32_t *host_port,
			struct errbuf *eb)
{
	char line[CONNECT_LINE_MAX], esc[4 * CONNECT_LINE_MAX + 4];
	const char *nl = NULL;
	size_t len = 0;
	int r;

	while (!nl && len < sizeof(line)) {
		ssize_t n = recv(fd, line + len, sizeof(line) - len, MSG_PEEK);
		size_t take;

		if (n > 0) {
			nl = memchr(line + len, '\n', (size_t)n);
			take = nl ? (size_t)(nl - (line + len)) + 1 : (size_t)n;
			/* the peeked bytes are queued for us alone: this cannot come up short */
			if (recv(fd, line + len, take, 0) != (ssize_t)take)
				return errbuf_set(eb, -EIO, "reading ember's answer to 'CONNECT %" PRIu32
						  "': %s", port, strerror(errno));
			len += take;
			continue;
		}
		if (n == 0 || errno == ECONNRESET) {
			if (len == 0)
				return closed_without_ok(port, eb);
			invoke_escape(line, len, esc, sizeof(esc));
			return errbuf_set(eb, -EPROTO, "ember closed the connection in the middle of "
					  "its answer to 'CONNECT %" PRIu32 "': '%s'", port, esc);
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return errbuf_set(eb, -errno, "reading ember's answer to 'CONNECT %" PRIu32
					  "': %s", port, strerror(errno));
		r = wait_fd(fd, POLLIN, deadline_ns);
		if (r == -ETIMEDOUT)
			return errbuf_set(eb, r, "timed out waiting for ember's answer to 'CONNECT %"
					  PRIu32 "' (%zu bytes of it arrived)", port, len);
		if (r)
			return errbuf_set(eb, r, "poll: %s", strerror(-r));
	}
	invoke_escape(line, len, esc, sizeof(esc));
	if (!nl)
		return errbuf_set(eb, -EPROTO, "ember's answer to 'CONNECT %" PRIu32 "' has no "
				  "newline within %d bytes: '%s'", port, CONNECT_LINE_MAX, esc);
	if (invoke_parse_ok_line(line, len, host_port) == 0)
		return 0;
	return errbuf_set(eb, -EPROTO, "ember answered 'CONNECT %" PRIu32 "' with '%s', not "
			  "'OK <host port>\\n'", port, esc);
}

int invoke_connect(const char *uds, uint32_t port, uint64_t deadline_ns, uint32_t *host_port,
		   struct errbuf *eb)
{
	char cmd[CONNECT_LINE_MAX];
	struct iovec iov;
	size_t sent;
	int fd, r, n;

	fd = open_unix(uds, "ember", "--vsock-uds", deadline_ns, eb);
	if (fd < 0)
		return fd;
	n = invoke_format_connect(port, cmd, sizeof(cmd));
	iov = (struct iovec){ .iov_base = cmd, .iov_len = (size_t)n };
	r = send_all(fd, &iov, 1, deadline_ns, &sent);
	if (r == -EPIPE || r == -ECONNRESET) {
		/* ember may close at once, e.g. at its connection limit */
		r = closed_without_ok(port, eb);
		goto fail;
	}
	if (r == -ETIMEDOUT) {
		errbuf_set(eb, r, "timed out sending 'CONNECT %" PRIu32 "' to %s", port, uds);
		goto fail;
	}
	if (r) {
		errbuf_set(eb, r, "%s: sending 'CONNECT %" PRIu32 "': %s", uds, port, strerror(-r));
		goto fail;
	}
	r = read_ok_line(fd, port, deadline_ns, host_port, eb);
	if (r)
		goto fail;
	return fd;
fail:
	close(fd);
	return r;
}

/* invoke_call and invoke_pool_call: statuses above max_status are malformed. */
static int call(int fd, uint64_t request_id, const void *payload, uint32_t len,
		uint64_t deadline_ns, uint16_t max_status, struct invoke_result *res,
		struct errbuf *eb)
{
	uint8_t req[INVOKE_HDR_SIZE] = { 0 }, hdr[INVOKE_HDR_SIZE];
	struct iovec iov[2] = {
		{ .iov_base = req, .iov_len = sizeof(req) },
		{ .iov_base = (void *)payload, .iov_len = len },
	};
	uint64_t t_start;
	uint16_t status;
	uint32_t plen;
	size_t done;
	int r;

	memset(res, 0, sizeof(*res));
	if (len > INVOKE_MAX_PAYLOAD)
		return errbuf_set(eb, -EMSGSIZE, "a request payload of %" PRIu32 " bytes exceeds the "
				  "protocol's 16 MiB (%u)", len, INVOKE_MAX_PAYLOAD);
	invoke_put_request_header(req, request_id, len);

	t_start = invoke_clock_ns();
	r = send_all(fd, iov, len ? 2 : 1, deadline_ns, &done);
	if (r == -ETIMEDOUT)
		return errbuf_set(eb, r, "timed out sending the request (%zu of %zu bytes written): "
				  "the guest is not reading", done, sizeof(req) + len);
	if (r == -EPIPE || r == -ECONNRESET)
		return errbuf_set(eb, -EPIPE, "the connection closed while sending the request "
				  "(%zu of %zu bytes written)", done, sizeof(req) + len);
	if (r)
		return errbuf_set(eb, r, "sending the request: %s", strerror(-r));

	r = recv_exact(fd, hdr, sizeof(hdr), deadline_ns, &done);
	if (r == -ETIMEDOUT)
		return errbuf_set(eb, r, "timed out waiting for the response (%zu of its %d header "
				  "bytes arrived)", done, INVOKE_HDR_SIZE);
	if (r == -ECONNRESET && done == 0)
		return errbuf_set(eb, -EPROTO, "malformed response: the connection closed before "
				  "any response (the guest's agent closed or reset it)");
	if (r == -ECONNRESET)
		return errbuf_set(eb, -EPROTO, "malformed response: the connection closed after %zu "
				  "of %d header bytes", done, INVOKE_HDR_SIZE);
	if (r)
		return errbuf_set(eb, r, "reading the response: %s", strerror(-r));
	r = invoke_check_response_header(hdr, request_id, max_status, &status, &plen, eb);
	if (r)
		return r;

	/* one spare byte: the payload reads as a C string too (messages) */
	res->payload = malloc((size_t)plen + 1);
	if (!res->payload)
		return errbuf_set(eb, -ENOMEM, "no memory for a %" PRIu32 "-byte response", plen);
	r = recv_exact(fd, res->payload, plen, deadline_ns, &done);
	if (r) {
		invoke_result_free(res);
		if (r == -ETIMEDOUT)
			return errbuf_set(eb, r, "timed out reading the response payload (%zu of %"
					  PRIu32 " bytes arrived)", done, plen);
		if (r == -ECONNRESET)
			return errbuf_set(eb, -EPROTO, "malformed response: the connection closed "
					  "after %zu of %" PRIu32 " payload bytes", done, plen);
		return errbuf_set(eb, r, "reading the response payload: %s", strerror(-r));
	}
	res->payload[plen] = 0;
	res->payload_len = plen;
	res->status = status;
	res->response_us = (invoke_clock_ns() - t_start) / 1000;
	return 0;
}

int invoke_call(int fd, uint64_t request_id, const void *payload, uint32_t len,
		uint64_t deadline_ns, struct invoke_result *res, struct errbuf *eb)
{
	return call(fd, request_id, payload, len, deadline_ns, INVOKE_UNSUPPORTED_VERSION, res, eb);
}

int invoke_pool_call(int fd, uint64_t request_id, const void *payload, uint32_t len,
		     uint64_t deadline_ns, struct invoke_result *res, struct errbuf *eb)
{
	return call(fd, request_id, payload, len, deadline_ns, INVOKE_MAX_STATUS, res, eb);
}

int invoke_pool_connect(const char *path, uint64_t deadline_ns, struct errbuf *eb)
{
	return open_unix(path, "ember pool", "--socket", deadline_ns, eb);
}

int invoke_once(const struct invoke_opts *o, const void *payload, uint32_t len,
		struct invoke_result *res, struct errbuf *eb)
{
	uint64_t t0 = invoke_clock_ns(), connect_us;
	uint64_t deadline = o->timeout_ms ? t0 + o->timeout_ms * 1000000ull : 0;
	uint32_t host_port = 0;
	int fd, r;

	memset(res, 0, sizeof(*res));
	if (o->pool)
		fd = invoke_pool_connect(o->pool, deadline, eb);
	else
		fd = invoke_connect(o->uds, o->port, deadline, &host_port, eb);
	if (fd < 0)
		return fd;
	connect_us = (invoke_clock_ns() - t0) / 1000;
	if (o->pool)
		r = invoke_pool_call(fd, o->request_id, payload, len, deadline, res, eb);
	else
		r = invoke_call(fd, o->request_id, payload, len, deadline, res, eb);
	close(fd);
	if (r)
		return r;
	res->host_port = host_port;
	res->connect_us = connect_us;
	return 0;
}

void invoke_result_free(struct invoke_result *res)
{
	free(res->payload);
	res->payload = NULL;
	res->payload_len = 0;
}

/* ---- ember invoke --------------------------------------------------------------- */

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "ember: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'ember --help'.\n");
	return 2;
}

/* Reads fd to end-of-file into a malloc'd buffer; -EFBIG past max bytes. */
static int read_bounded(int fd, size_t max, uint8_t **out, size_t *len)
{
	size_t cap = 0, n = 0;
	uint8_t *buf = NULL;
	int r;

	for (;;) {
		ssize_t got;

		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 64 * 1024;
			uint8_t *p;

			if (ncap > max + 1)
				ncap = max + 1; /* one byte past the limit tells "too large" */
			p = realloc(buf, ncap);
			if (!p) {
				r = -ENOMEM;
				goto fail;
			}
			buf = p;
			cap = ncap;
		}
		got = read(fd, buf + n, cap - n);
		if (got > 0) {
			n += (size_t)got;
			if (n > max) {
				r = -EFBIG;
				goto fail;
			}
			continue;
		}
		if (got == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			/* a non-blocking stdin inherited from the shell */
			struct pollfd pfd = { .fd = fd, .events = POLLIN };

			if (poll(&pfd, 1, -1) < 0 && errno != EINTR) {
				r = -errno;
				goto fail;
			}
			continue;
		}
		r = -errno;
		goto fail;
	}
	*out = buf;
	*len = n;
	return 0;
fail:
	free(buf);
	return r;
}

/* --payload: 0, 1 (I/O error) or 2 (usage error), with the message printed. */
static int load_payload(const char *arg, uint8_t **data, size_t *len)
{
	struct stat st;
	int fd, r;

	*data = NULL;
	*len = 0;
	if (!arg)
		return 0;
	if (!strcmp(arg, "-")) {
		r = read_bounded(STDIN_FILENO, INVOKE_MAX_PAYLOAD, data, len);
		if (r == -EFBIG)
			return usage_error("--payload -: stdin holds more than the protocol's 16 MiB "
					   "(%u bytes)", INVOKE_MAX_PAYLOAD);
		if (r) {
			fprintf(stderr, "ember invoke: reading the payload from stdin: %s\n",
				strerror(-r));
			return 1;
		}
		return 0;
	}
	/* O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below */
	fd = open(arg, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		fprintf(stderr, "ember invoke: --payload %s: %s\n", arg, strerror(errno));
		return 1;
	}
	if (fstat(fd, &st) < 0) {
		fprintf(stderr, "ember invoke: --payload %s: %s\n", arg, strerror(errno));
		close(fd);
		return 1;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return usage_error("--payload %s: not a regular file (a pipe or device could block "
				   "forever; use --payload - and redirect it to stdin)", arg);
	}
	if ((uint64_t)st.st_size > INVOKE_MAX_PAYLOAD) {
		close(fd);
		return usage_error("--payload %s: %lld bytes, more than the protocol's 16 MiB (%u "
				   "bytes)", arg, (long long)st.st_size, INVOKE_MAX_PAYLOAD);
	}
	r = read_bounded(fd, INVOKE_MAX_PAYLOAD, data, len);
	close(fd);
	if (r == -EFBIG) /* it grew since fstat */
		return usage_error("--payload %s: more than the protocol's 16 MiB (%u bytes)", arg,
				   INVOKE_MAX_PAYLOAD);
	if (r) {
		fprintf(stderr, "ember invoke: --payload %s: %s\n", arg, strerror(-r));
		return 1;
	}
	return 0;
}

/* bytes_sent / bytes_received: request and response frames, headers included */
static void print_timings(const struct cli *c, const struct invoke_result *res, size_t sent)
{
	const char *name = invoke_status_name(res->status);
	size_t received = INVOKE_HDR_SIZE + (size_t)res->payload_len;

	/* status names are plain identifiers: nothing in the JSON needs escaping */
	if (c->json)
		fprintf(stderr, "{\"status\":\"%s\",\"request_id\":%" PRIu64 ",\"host_port\":%"
			PRIu32 ",\"bytes_sent\":%zu,\"bytes_received\":%zu,\"connect_us\":%" PRIu64
			",\"response_us\":%" PRIu64 "}\n", name, c->invoke_request_id, res->host_port,
			sent, received, res->connect_us, res->response_us);
	else
		fprintf(stderr, "ember-invoke status=%s request_id=%" PRIu64 " host_port=%" PRIu32
			" bytes_sent=%zu bytes_received=%zu connect_us=%" PRIu64 " response_us=%"
			PRIu64 "\n", name, c->invoke_request_id, res->host_port, sent, received,
			res->connect_us, res->response_us);
}

static int write_stdout(const uint8_t *p, size_t len)
{
	if (len && fwrite(p, 1, len, stdout) != len)
		return -errno;
	if (fflush(stdout))
		return -errno;
	return 0;
}

int invoke_run(const struct cli *c)
{
	struct invoke_opts o = {
		.uds = c->vm.vsock_uds,
		.pool = c->invoke_pool,
		.port = c->invoke_port,
		.request_id = c->invoke_request_id,
		.timeout_ms = c->vm.timeout_ms,
	};
	struct invoke_result res;
	struct errbuf eb = { "" };
	uint8_t *payload;
	size_t len;
	int r, status;

	status = load_payload(c->invoke_payload, &payload, &len);
	if (status)
		return status;
	r = invoke_once(&o, payload, (uint32_t)len, &res, &eb);
	free(payload);
	if (r == -ETIMEDOUT) {
		fprintf(stderr, "ember invoke: %s (--timeout %" PRIu64 ".%03" PRIu64 " s)\n", eb.msg,
			o.timeout_ms / 1000, o.timeout_ms % 1000);
		return 124;
	}
	if (r) {
		fprintf(stderr, "ember invoke: %s\n", eb.msg);
		return 1;
	}
	if (res.status == INVOKE_OK) {
		r = write_stdout(res.payload, res.payload_len);
		if (r)
			fprintf(stderr, "ember invoke: writing the response to stdout: %s\n",
				strerror(-r));
		status = r ? 1 : 0;
	} else {
		/* the message is the guest's (or the pool's): escaped, and bounded like the
		 * protocol bounds it */
		char msg[4 * MESSAGE_MAX + 1];
		bool cut = res.payload_len > MESSAGE_MAX;
		bool pool_status = res.status >= INVOKE_BUSY;

		invoke_escape(res.payload, cut ? MESSAGE_MAX : res.payload_len, msg, sizeof(msg));
		fprintf(stderr, "ember invoke: the %s answered %s (%u): %s%s\n",
			pool_status ? "pool" : "function", invoke_status_name(res.status),
			res.status, msg, cut ? "..." : "");
		status = pool_status ? 4 : 3;
	}
	if (c->vm.timings || c->json)
		print_timings(c, &res, INVOKE_HDR_SIZE + len);
	invoke_result_free(&res);
	return status;
}
