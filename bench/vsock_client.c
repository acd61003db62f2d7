/*
 * vsock_client: floor_vsock's measurements against a real ember, through its hybrid
 * vsock socket with the invocation client (src/invoke.c), to the fn test guest's
 * ports: P = mix (n bytes in, 8 + n out), P+1 = sink (n in, 16 out), P+2 = source
 * (le64 N in, N out). One connection per measurement, many requests on it.
 *
 *   vsock_client --uds PATH [--port P] [--n N] [--bulk-n M] [--bulk-bytes B]
 *                [--connects K] [--samples] [--timeout SEC]
 *   vsock_client --spawn --uds PATH [--port P] [--timeout SEC] -- CMD [ARG...]
 *
 * Measurement mode prints floor_vsock's lines on stdout (vsock-rtt, vsock-h2g,
 * vsock-g2h, same keys, same warm-up) and then, unless K is 0 (default 20):
 *   vsock-connect n=K req_bytes=0 resp_bytes=0 p50_ns=.. ... mb_per_s=0.0
 * the time of K fresh connections from connect() through ember's OK line, each
 * followed by one 64-byte mix request (not timed) and closed.
 *
 * --spawn measures "spawn -> first response": it takes CLOCK_MONOTONIC, spawns CMD
 * (e.g. `ember restore --snapshot S --vsock-uds PATH`) with EMBER_T0_NS set to that
 * instant (as bench/harness.c does, so CMD's own ember-timing lines share the origin)
 * and its stdout sent to our stderr, connects as soon as PATH accepts (retrying every
 * 100 us while it is missing, refuses, or closes without OK), sends one 64-byte mix
 * request, and prints
 *   vsock-spawn first_response_us=.. connect_us=.. attempts=.. host_port=..
 * on stdout (first_response_us: spawn -> the response's last byte; connect_us: spawn ->
 * the OK line), plus "ember-timing vsock-connected <us>" and "ember-timing
 * vsock-first-response <us>" on stderr for the harness. Then it stops CMD (SIGTERM;
 * SIGKILL after 5 s). --timeout (default 10 s) bounds each connection's exchanges and
 * the whole of --spawn. Exit 0, or 1 on any error (an unexpected status or size is
 * one).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"

#define RTT_BYTES 64
#define RTT_WARMUP 20
#define BULK_WARMUP 2
#define RETRY_NS 100000ull

enum fn_kind { FN_MIX, FN_SINK, FN_SOURCE };

struct opts {
	const char *uds;
	uint32_t port;
	unsigned n, bulk_n, connects;
	uint32_t bulk_bytes;
	uint64_t timeout_ms;
	bool samples, spawn;
	char **cmd;
};

static int failx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int failx(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "vsock_client: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	return 1;
}


/* One invocation that must answer OK with exactly want bytes, timed around the call. */
static int call(int fd, uint64_t id, const uint8_t *req, uint32_t len, uint64_t want,
		uint64_t deadline_ns, uint64_t *ns)
{
	struct invoke_result res;
	struct errbuf eb = { "" };
	uint64_t t0 = invoke_clock_ns();
	int r = invoke_call(fd, id, req, len, deadline_ns, &res, &eb);

	*ns = invoke_clock_ns() - t0;
	if (r)
		return failx("request %" PRIu64 ": %s", id, eb.msg);
	if (res.status != INVOKE_OK || res.payload_len != want) {
		char msg[256] = "";

		if (res.status != INVOKE_OK)
			invoke_escape(res.payload, res.payload_len, msg, sizeof(msg));
		failx("request %" PRIu64 ": %s with %" PRIu32 " bytes (expected OK with %" PRIu64
		      ") %s", id, invoke_status_name(res.status), res.payload_len, want, msg);
		invoke_result_free(&res);
		return 1;
	}
	invoke_result_free(&res);
	return 0;
}

static uint64_t deadline_after(uint64_t ms)
{
	return invoke_clock_ns() + ms * 1000000ull;
}

static int connect_port(const struct opts *o, uint32_t port, uint32_t *host_port)
{
	struct errbuf eb = { "" };
	int fd = invoke_connect(o->uds, port, deadline_after(o->timeout_ms), host_port, &eb);

	if (fd < 0)
		failx("%s", eb.msg);
	return fd;
}

static int measure(const struct opts *o, enum fn_kind kind)
{
	static const char *const names[] = { [FN_MIX] = "rtt", [FN_SINK] = "h2g",
					     [FN_SOURCE] = "g2h" };
	unsigned n = kind == FN_MIX ? o->n : o->bulk_n;
	unsigned warm = kind == FN_MIX ? RTT_WARMUP : BULK_WARMUP;
	uint32_t len = kind == FN_MIX ? RTT_BYTES : kind == FN_SINK ? o->bulk_bytes : 8;
	uint64_t want = kind == FN_MIX ? 8 + RTT_BYTES : kind == FN_SINK ? 16 : o->bulk_bytes;
	uint64_t *s = calloc(n, sizeof(*s));
	uint8_t *req = calloc(1, len ? len : 1);
	uint32_t host_port;
	int fd, r = 1;

	if (!s || !req)
		return failx("out of memory");
	for (uint32_t i = 0; i < len; i++)
		req[i] = (uint8_t)(i * 7u + 1u);
	if (kind == FN_SOURCE)
		for (int i = 0; i < 8; i++)
			req[i] = (uint8_t)((uint64_t)o->bulk_bytes >> (8 * i));
	fd = connect_port(o, o->port + (uint32_t)kind, &host_port);
	if (fd < 0)
		goto out;
	for (unsigned i = 0; i < warm + n; i++) {
		uint64_t ns;

		if (call(fd, i + 1, req, len, want, deadline_after(o->timeout_ms), &ns))
			goto out;
		if (i < warm)
			continue;
		s[i - warm] = ns;
		if (o->samples)
			printf("vsock-%s-sample ns=%" PRIu64 "\n", names[kind], ns);
	}
	bench_vsock_report(names[kind], s, n, len, want, kind == FN_SINK ? len : kind == FN_SOURCE ? want : 0);
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	free(s);
	free(req);
	return r;
}

/* K fresh connections: connect() through OK, timed; then one mix request, untimed. */
static int measure_connects(const struct opts *o)
{
	uint64_t *s = calloc(o->connects, sizeof(*s));
	uint8_t req[RTT_BYTES] = { 1 };
	int r = 1;

	if (!s)
		return failx("out of memory");
	for (unsigned i = 0; i < o->connects; i++) {
		uint64_t t0 = invoke_clock_ns(), ns;
		uint32_t host_port;
		int fd = connect_port(o, o->port, &host_port);

		if (fd < 0)
			goto out;
		s[i] = invoke_clock_ns() - t0;
		if (o->samples)
			printf("vsock-connect-sample ns=%" PRIu64 "\n", s[i]);
		r = call(fd, 1, req, sizeof(req), 8 + RTT_BYTES, deadline_after(o->timeout_ms), &ns);
		close(fd);
		if (r)
			goto out;
		r = 1;
	}
	bench_vsock_report("connect", s, o->connects, 0, 0, 0);
	r = 0;
out:
	free(s);
	return r;
}

/* ---- --spawn ------------------------------------------------------------------------ */


/* SIGTERM, then SIGKILL if it is still there after 5 s. */
static void stop_child(pid_t pid)
{
	uint64_t until = invoke_clock_ns() + 5000000000ull;
	struct timespec pause = { .tv_nsec = 1000000 };
	int status;

	kill(pid, SIGTERM);
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (invoke_clock_ns() > until) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return;
		}
		nanosleep(&pause, NULL);
	}
}

static int spawn_first_response(const struct opts *o)
{
	posix_spawn_file_actions_t fa;
	struct errbuf eb = { "" };
	uint8_t req[RTT_BYTES] = { 1 };
	char slot[64];
	char **envp = bench_envp(slot);
	uint64_t t0, deadline, t_conn, t_resp, ns;
	uint32_t host_port = 0;
	unsigned attempts = 0;
	int fd, r = 1, status, err;
	pid_t pid;

	if (!envp)
		return failx("out of memory");
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	/* our stdout carries the result; the child's console goes to stderr */
	posix_spawn_file_actions_adddup2(&fa, STDERR_FILENO, STDOUT_FILENO);
	t0 = invoke_clock_ns();
	snprintf(slot, sizeof(slot), "EMBER_T0_NS=%" PRIu64, t0);
	err = posix_spawn(&pid, o->cmd[0], &fa, NULL, o->cmd, envp);
	posix_spawn_file_actions_destroy(&fa);
	free(envp);
	if (err)
		return failx("spawning %s: %s", o->cmd[0], strerror(err));
	deadline = t0 + o->timeout_ms * 1000000ull;
	for (;;) {
		struct timespec pause = { .tv_nsec = RETRY_NS };

		attempts++;
		fd = invoke_connect(o->uds, o->port, deadline, &host_port, &eb);
		if (fd >= 0)
			break;
		/* not there yet: no socket, not listening, or the guest not accepting yet */
		if (fd != -ENOENT && fd != -ECONNREFUSED && fd != -ECONNRESET) {
			failx("%s", eb.msg);
			goto out;
		}
		if (waitpid(pid, &status, WNOHANG) == pid) {
			failx("%s exited (status 0x%x) before answering; last: %s", o->cmd[0],
			      status, eb.msg);
			return 1;
		}
		if (invoke_clock_ns() + RETRY_NS >= deadline) {
			failx("no connection within %" PRIu64 " ms after %u attempts; last: %s",
			      o->timeout_ms, attempts, eb.msg);
			goto out;
		}
		nanosleep(&pause, NULL);
	}
	t_conn = invoke_clock_ns();
	r = call(fd, 1, req, sizeof(req), 8 + RTT_BYTES, deadline, &ns);
	t_resp = invoke_clock_ns();
	close(fd);
	if (r)
		goto out;
	fprintf(stderr, "ember-timing vsock-connected %" PRIu64 "\n", (t_conn - t0) / 1000);
	fprintf(stderr, "ember-timing vsock-first-response %" PRIu64 "\n", (t_resp - t0) / 1000);
	printf("vsock-spawn first_response_us=%" PRIu64 " connect_us=%" PRIu64 " attempts=%u "
	       "host_port=%" PRIu32 "\n", (t_resp - t0) / 1000, (t_conn - t0) / 1000, attempts,
	       host_port);
	fflush(stdout);
out:
	stop_child(pid);
	return r;
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

static int usage(void)
{
	return failx("usage: vsock_client --uds PATH [--port P] [--n N] [--bulk-n M] "
		     "[--bulk-bytes B] [--connects K] [--samples] [--timeout SEC]\n"
		     "       vsock_client --spawn --uds PATH [--port P] [--timeout SEC] -- CMD "
		     "[ARG...]");
}

int main(int argc, char **argv)
{
	struct opts o = { .port = INVOKE_DEFAULT_PORT, .n = 2000, .bulk_n = 50, .connects = 20,
			  .bulk_bytes = 1u << 20, .timeout_ms = 10000 };
	uint64_t v;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--samples")) {
			o.samples = true;
			continue;
		}
		if (!strcmp(a, "--spawn")) {
			o.spawn = true;
			continue;
		}
		if (!strcmp(a, "--")) {
			o.cmd = argv + i + 1;
			break;
		}
		if (!strcmp(a, "--uds") && val) {
			o.uds = val;
		} else if (!strcmp(a, "--port") && !parse_num(val, UINT32_MAX - 2, &v)) {
			o.port = (uint32_t)v;
		} else if (!strcmp(a, "--n") && !parse_num(val, 10000000, &v) && v) {
			o.n = (unsigned)v;
		} else if (!strcmp(a, "--bulk-n") && !parse_num(val, 1000000, &v) && v) {
			o.bulk_n = (unsigned)v;
		} else if (!strcmp(a, "--bulk-bytes") && !parse_num(val, INVOKE_MAX_PAYLOAD, &v)) {
			o.bulk_bytes = (uint32_t)v;
		} else if (!strcmp(a, "--connects") && !parse_num(val, 1000000, &v)) {
			o.connects = (unsigned)v;
		} else if (!strcmp(a, "--timeout") && !parse_num(val, 3600, &v) && v) {
			o.timeout_ms = v * 1000;
		} else {
			return usage();
		}
		i++;
	}
	if (!o.uds || o.spawn != (o.cmd && o.cmd[0]))
		return usage();
	if (o.spawn)
		return spawn_first_response(&o);
	if (measure(&o, FN_MIX) || measure(&o, FN_SINK) || measure(&o, FN_SOURCE))
		return 1;
	return o.connects ? measure_connects(&o) : 0;
}
