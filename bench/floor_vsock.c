/*
 * floor_vsock: the host-only floor under the vsock invocation path. A child process
 * plays the guest's agent at the other end of a Unix stream socketpair and speaks the
 * request/response framing of INVOCATION.md (no CONNECT line: nothing sits in
 * between), so the numbers are what the framing costs over the cheapest local stream
 * the kernel has. Each measurement gets its own socketpair and child, as vsock_client
 * gets its own connection to each of the fn guest's ports:
 *
 *   rtt  N round trips of a 64-byte request answered with 8 + 64 bytes (fn's "mix")
 *   h2g  B-byte requests (default 1 MiB) answered with 16 bytes (fn's "sink"):
 *        host -> guest
 *   g2h  8-byte requests (le64 B) answered with B bytes (fn's "source"): guest -> host
 *
 *   floor_vsock [--n N] [--bulk-n M] [--bulk-bytes B] [--samples]
 *   floor_vsock --serve PATH [--port P] [--listen-delay-ms D]
 *
 * Prints on stdout, per measurement, one line (vsock_client prints the same ones):
 *   vsock-<rtt|h2g|g2h> n=.. req_bytes=.. resp_bytes=.. p50_ns=.. p90_ns=.. p99_ns=..
 *       min_ns=.. max_ns=.. mean_ns=.. mb_per_s=..
 * (payload bytes; mb_per_s = 10^6 bytes/s of the bulk direction at the median, 0 for
 * rtt), preceded with --samples by one "vsock-<kind>-sample ns=.." line per exchange.
 * Warm-up exchanges (20 for rtt, 2 for bulk) are not counted. Exit 0, or 1 on error.
 *
 * --serve plays ember's hybrid socket and the fn guest together, for trying
 * vsock_client without a VM: it listens on PATH (after D ms), answers "CONNECT P" (mix),
 * P+1 (sink) and P+2 (source) with "OK <n>" and closes any other port unanswered; one
 * child process per connection. SIGTERM removes PATH and exits. The agent's
 * responses are the least that has the right sizes: mix = le64 n + the request's
 * bytes, sink = le64 n + 8 zero bytes, source = a fixed pattern. Standalone on
 * purpose: it does not link libember.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define HDR 24
#define MAX_PAYLOAD (16u << 20)
#define RTT_BYTES 64
#define RTT_WARMUP 20
#define BULK_WARMUP 2

enum fn_kind { FN_MIX, FN_SINK, FN_SOURCE };

static const char *serve_path;

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int fail(const char *what)
{
	fprintf(stderr, "floor_vsock: %s: %s\n", what, strerror(errno));
	return 1;
}

static int failx(const char *what)
{
	fprintf(stderr, "floor_vsock: %s\n", what);
	return 1;
}

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* 0, or -1 with errno (EPIPE for a closed peer). */
static int send_iov(int fd, struct iovec *iov, int cnt)
{
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)cnt };

	while (mh.msg_iovlen) {
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		while (mh.msg_iovlen && (size_t)n >= mh.msg_iov->iov_len) {
			n -= (ssize_t)mh.msg_iov->iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen) {
			mh.msg_iov->iov_base = (uint8_t *)mh.msg_iov->iov_base + n;
			mh.msg_iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

/* 1 when all len bytes arrived, 0 at end-of-file before the first byte, -1 else. */
static int recv_all(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = recv(fd, (uint8_t *)buf + got, len - got, MSG_WAITALL);

		if (n > 0) {
			got += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 && got == 0)
			return 0;
		if (n == 0)
			errno = EPROTO;
		return -1;
	}
	return 1;
}

/* ---- the agent (the guest side) ------------------------------------------------------ */

/* Grows *buf to at least n bytes; a fresh part is filled with a pattern. */
static int reserve(uint8_t **buf, uint64_t *cap, uint64_t n)
{
	uint8_t *p;

	if (n <= *cap)
		return 0;
	p = realloc(*buf, n);
	if (!p)
		return -1;
	for (uint64_t i = *cap; i < n; i++)
		p[i] = (uint8_t)(i * 131u + 7u);
	*buf = p;
	*cap = n;
	return 0;
}

/* Answers requests on fd until end-of-file, like the fn guest's port for `kind`. */
static int agent(int fd, enum fn_kind kind)
{
	uint8_t hdr[HDR], resp_hdr[HDR] = { 'E', 'M', 'B', 'R', 1, 0 }, small[16];
	uint8_t *req = NULL, *src = NULL; /* grown on demand: set-up is not measured */
	uint64_t req_cap = 0, src_cap = 0;
	int r = 1;

	for (;;) {
		struct iovec iov[3] = { { resp_hdr, HDR } };
		uint64_t len, n = 0;
		uint16_t status = 0;
		int k = recv_all(fd, hdr, HDR), cnt = 2;

		if (k <= 0) {
			r = k < 0;
			break;
		}
		len = get_le(hdr + 16, 4);
		if (memcmp(hdr, "EMBQ", 4) || len > MAX_PAYLOAD || reserve(&req, &req_cap, len + 1) ||
		    recv_all(fd, req, len) != 1)
			break;
		switch (kind) {
		case FN_MIX:
			put_le(small, len, 8);
			iov[1] = (struct iovec){ small, 8 };
			iov[2] = (struct iovec){ req, len };
			cnt = 3;
			n = 8 + len;
			break;
		case FN_SINK:
			put_le(small, len, 8);
			put_le(small + 8, 0, 8);
			iov[1] = (struct iovec){ small, 16 };
			n = 16;
			break;
		case FN_SOURCE:
			n = len == 8 ? get_le(req, 8) : MAX_PAYLOAD + 1ull;
			if (n > MAX_PAYLOAD || reserve(&src, &src_cap, n + 1)) {
				status = 3; /* FUNCTION_ERROR, without a message */
				n = 0;
			}
			iov[1] = (struct iovec){ src, n };
			break;
		}
		memcpy(resp_hdr + 8, hdr + 8, 8); /* request_id */
		put_le(resp_hdr + 6, status, 2);
		put_le(resp_hdr + 16, n, 4);
		if (send_iov(fd, iov, cnt) < 0)
			break;
	}
	free(req);
	free(src);
	return r;
}

/* ---- the client side ------------------------------------------------------------------- */

/* One request, its response read whole and its size checked; ns taken around it. */
static int exchange(int fd, uint64_t id, const uint8_t *req, uint32_t len, uint8_t *resp,
		    uint64_t want, uint64_t *ns)
{
	uint8_t hdr[HDR] = { 'E', 'M', 'B', 'Q', 1, 0 }, rh[HDR];
	struct iovec iov[2] = { { hdr, HDR }, { (void *)req, len } };
	uint64_t t0;

	put_le(hdr + 8, id, 8);
	put_le(hdr + 16, len, 4);
	t0 = mono_ns();
	if (send_iov(fd, iov, 2) < 0)
		return fail("sending a request");
	if (recv_all(fd, rh, HDR) != 1)
		return fail("reading a response header");
	if (memcmp(rh, "EMBR", 4) || get_le(rh + 6, 2) != 0 || get_le(rh + 8, 8) != id ||
	    get_le(rh + 16, 4) != want)
		return failx("unexpected response header");
	if (recv_all(fd, resp, want) != 1)
		return fail("reading a response payload");
	*ns = mono_ns() - t0;
	return 0;
}

struct plan {
	unsigned n, bulk_n;
	uint32_t bulk_bytes;
	bool samples;
};

static int measure(const struct plan *pl, enum fn_kind kind)
{
	static const char *const names[] = { [FN_MIX] = "rtt", [FN_SINK] = "h2g",
					     [FN_SOURCE] = "g2h" };
	unsigned n = kind == FN_MIX ? pl->n : pl->bulk_n;
	unsigned warm = kind == FN_MIX ? RTT_WARMUP : BULK_WARMUP;
	uint32_t len = kind == FN_MIX ? RTT_BYTES : kind == FN_SINK ? pl->bulk_bytes : 8;
	uint64_t want = kind == FN_MIX ? 8 + RTT_BYTES : kind == FN_SINK ? 16 : pl->bulk_bytes;
	uint64_t *s = calloc(n, sizeof(*s));
	uint8_t *req = calloc(1, len), *resp = malloc(want ? want : 1);
	int sv[2], r = 1, status;
	pid_t pid;

	if (!s || !req || !resp)
		return failx("out of memory");
	for (uint32_t i = 0; i < len; i++)
		req[i] = (uint8_t)(i * 7u + 1u);
	if (kind == FN_SOURCE)
		put_le(req, pl->bulk_bytes, 8);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return fail("socketpair");
	pid = fork();
	if (pid < 0)
		return fail("fork");
	if (pid == 0) {
		close(sv[0]);
		_exit(agent(sv[1], kind));
	}
	close(sv[1]);
	for (unsigned i = 0; i < warm + n; i++) {
		uint64_t ns;

		if (exchange(sv[0], i + 1, req, len, resp, want, &ns))
			goto out;
		if (i < warm)
			continue;
		s[i - warm] = ns;
		if (pl->samples)
			printf("vsock-%s-sample ns=%" PRIu64 "\n", names[kind], ns);
	}
	bench_vsock_report(names[kind], s, n, len, want, kind == FN_SINK ? len : kind == FN_SOURCE ? want : 0);
	r = 0;
out:
	close(sv[0]); /* the agent reads end-of-file and exits */
	waitpid(pid, &status, 0);
	free(s);
	free(req);
	free(resp);
	return r;
}

/* ---- --serve: ember's hybrid socket and the fn guest, without a VM ------------------- */

static void on_term(int sig)
{
	(void)sig;
	unlink(serve_path);
	_exit(0);
}

static void serve_conn(int fd, uint32_t port, uint32_t host_port)
{
	char line[33], ok[32];
	size_t n = 0;
	unsigned long p;
	char *end;

	/* the CONNECT line, byte by byte: the rest belongs to the agent */
	while (n < sizeof(line) - 1 && recv(fd, line + n, 1, 0) == 1 && line[n++] != '\n')
		;
	line[n] = 0;
	if (n == 0 || strncmp(line, "CONNECT ", 8) || line[n - 1] != '\n')
		return;
	p = strtoul(line + 8, &end, 10);
	if (*end != '\n' || p < port || p > (unsigned long)port + 2)
		return; /* nothing listens there: ember closes without a word */
	n = (size_t)snprintf(ok, sizeof(ok), "OK %" PRIu32 "\n", host_port);
	if (send(fd, ok, n, MSG_NOSIGNAL) != (ssize_t)n)
		return;
	agent(fd, (enum fn_kind)(p - port));
}

static int serve(const char *path, uint32_t port, unsigned delay_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timespec d = { .tv_sec = delay_ms / 1000, .tv_nsec = (long)(delay_ms % 1000) * 1000000 };
	uint32_t host_port = 1u << 30;
	int lfd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return failx("--serve: path too long for a Unix socket");
	strcpy(sa.sun_path, path);
	serve_path = path;
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	signal(SIGCHLD, SIG_IGN); /* connection children reap themselves */
	nanosleep(&d, NULL);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return fail("socket");
	unlink(path);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 64) < 0)
		return fail(path);
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		pid_t pid;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return fail("accept");
		}
		host_port++;
		pid = fork();
		if (pid == 0) {
			signal(SIGTERM, SIG_DFL);
			signal(SIGINT, SIG_DFL);
			close(lfd);
			serve_conn(fd, port, host_port);
			_exit(0);
		}
		close(fd);
	}
}

static int parse_num(const char *s, uint64_t max, uint64_t *v)
{
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	*v = strtoull(s, &end, 10);
	return errno || *end || *v > max ? -1 : 0;
}

int main(int argc, char **argv)
{
	struct plan pl = { .n = 2000, .bulk_n = 50, .bulk_bytes = 1u << 20 };
	const char *serve_at = NULL;
	uint64_t port = 5000, delay = 0, v;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--samples")) {
			pl.samples = true;
			continue;
		}
		if (!strcmp(a, "--serve") && val) {
			serve_at = val;
		} else if (!strcmp(a, "--n") && !parse_num(val, 10000000, &v) && v) {
			pl.n = (unsigned)v;
		} else if (!strcmp(a, "--bulk-n") && !parse_num(val, 1000000, &v) && v) {
			pl.bulk_n = (unsigned)v;
		} else if (!strcmp(a, "--bulk-bytes") && !parse_num(val, MAX_PAYLOAD, &v)) {
			pl.bulk_bytes = (uint32_t)v;
		} else if (!strcmp(a, "--port") && !parse_num(val, UINT32_MAX - 2, &v)) {
			port = v;
		} else if (!strcmp(a, "--listen-delay-ms") && !parse_num(val, 600000, &v)) {
			delay = v;
		} else {
			return failx("usage: floor_vsock [--n N] [--bulk-n M] [--bulk-bytes B] "
				     "[--samples]\n       floor_vsock --serve PATH [--port P] "
				     "[--listen-delay-ms D]");
		}
		i++;
	}
	if (serve_at)
		return serve(serve_at, (uint32_t)port, (unsigned)delay);
	if (measure(&pl, FN_MIX) || measure(&pl, FN_SINK) || measure(&pl, FN_SOURCE))
		return 1;
	return 0;
}
