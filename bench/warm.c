/*
 * warm: ember's warm starts against their floors (bench/README.md, sections standby,
 * reset and standby_mem). It drives the VMMs itself, over the control socket (msgpack
 * frames, FORMAT.md 9) and pipes, so that no process spawn sits between the request
 * and what is measured, interleaves ember and the floors sample by sample, and prints
 * markdown tables, the target checks, and (--json) every sample.
 *
 *   warm standby --sandbox SNAP --fn SNAP [common options]
 *   warm reset   --sandbox SNAP [--sizes "0 256 2048 16384"] [--patterns "seq random"]
 *                [--backends "mmap uffd"] [common options]
 *   warm mem     --sandbox SNAP [--fn SNAP] [--count K] [common options]
 *
 *   common: --ember PATH --floor PATH (floor_reset) --tmp DIR (sockets, logs)
 *           --runs R --json FILE
 *
 * standby: per round, three processes, each started and left to reach standby
 * (`--ready-fd`) before the clock starts: `ember restore --standby` of the sandbox
 * snapshot, then `resume` on its control socket; floor_reset of the same snapshot,
 * then `go` on its stdin; `ember restore --standby --vsock-uds` of the fn snapshot,
 * then `resume` and at once one 64-byte invocation over vsock. Times count from the
 * instant just before the request is written. R rounds after 2 warm-up rounds.
 *
 * reset: one long-lived VM per target (ember with each memory backend, floor_reset
 * with a dirty log and with --whole), each at the sandbox's WAIT. A sample: the guest
 * writes N pages (`guest-cmd dirty N`, awaited through its REPORT on ember's stderr),
 * then `reset`, then `status` until it reports reset_to_report_us. Every sample must
 * show pages_reverted >= N. R samples per (pattern, N) for N <= 256, R/2 for N <= 2048,
 * max(5, R/5) above; one warm-up sample per (pattern, N, target).
 *
 * mem: K standby VMs of the sandbox (mmap backend, console none), their PSS from
 * /proc/PID/smaps_rollup beyond the guest-memory mapping's page-cache pages; then, with
 * --fn, K fn VMs that served one invocation and were reset --standby.
 *
 * Exit 0 when everything was measured (targets missed included), 1 when a measurement
 * failed (a VMM died, a check such as pages_reverted >= N failed), 2 for usage errors.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <msgpack.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"
#include "snapfmt.h"

#define MS 1000000ull
#define SEC 1000000000ull
#define FN_PORT 5000u
#define STANDBY_WARMUP 2
#define MAX_SERIES 256
#define MAX_SIZES 8
#define GIB20_KB (UINT64_C(20) * 1024 * 1024)

static uint64_t now_ns(void)
{
	return invoke_clock_ns();
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / SEC), .tv_nsec = (long)(ns % SEC) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int failx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int failx(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "warm: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	return 1;
}

/* ---- options ------------------------------------------------------------------------ */

struct opts {
	const char *mode, *ember, *floor, *sandbox, *fn, *tmp, *json;
	const char *sizes, *patterns, *backends;
	unsigned runs, count;
};

static struct opts o = {
	.sizes = "0 256 2048 16384", .patterns = "seq random", .backends = "mmap uffd",
	.runs = 40, .count = 200,
};

/* ---- samples and statistics --------------------------------------------------------- */

struct series {
	char target[32], metric[48];
	uint64_t *v;
	unsigned n, cap;
};

static struct series series[MAX_SERIES];
static unsigned nr_series;

static struct series *series_get(const char *target, const char *metric)
{
	struct series *s;

	for (unsigned i = 0; i < nr_series; i++)
		if (!strcmp(series[i].target, target) && !strcmp(series[i].metric, metric))
			return &series[i];
	if (nr_series == MAX_SERIES) {
		failx("too many series");
		exit(1);
	}
	s = &series[nr_series++];
	snprintf(s->target, sizeof(s->target), "%s", target);
	snprintf(s->metric, sizeof(s->metric), "%s", metric);
	return s;
}

static void add(const char *target, const char *metric, uint64_t v)
{
	struct series *s = series_get(target, metric);

	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->v = realloc(s->v, s->cap * sizeof(*s->v));
		if (!s->v) {
			failx("out of memory");
			exit(1);
		}
	}
	s->v[s->n++] = v;
}

struct stat5 {
	unsigned n;
	uint64_t p50, p99, min, max;
};

/* Nearest-rank median and p99 of a series (its samples stay in order for the JSON). */
static bool stat_of(const char *target, const char *metric, struct stat5 *st)
{
	struct series *s = NULL;
	uint64_t *c;

	for (unsigned i = 0; i < nr_series; i++)
		if (!strcmp(series[i].target, target) && !strcmp(series[i].metric, metric))
			s = &series[i];
	memset(st, 0, sizeof(*st));
	if (!s || !s->n)
		return false;
	c = malloc(s->n * sizeof(*c));
	if (!c)
		return false;
	memcpy(c, s->v, s->n * sizeof(*c));
	qsort(c, s->n, sizeof(*c), bench_cmp_u64);
	st->n = s->n;
	st->p50 = bench_pct(c, s->n, 50);
	st->p99 = bench_pct(c, s->n, 99);
	st->min = c[0];
	st->max = c[s->n - 1];
	free(c);
	return true;
}

/* "p50" of a series or 0 */
static uint64_t p50(const char *target, const char *metric)
{
	struct stat5 st;

	return stat_of(target, metric, &st) ? st.p50 : 0;
}

/* --json FILE (or /dev/null), written through ember's JSON writer (snapshot-format/json.c)
 * as the run goes: the checks are recorded as they are printed. */
static FILE *json;
static struct json_w jw;

static void json_series(void)
{
	json_obj(&jw, "series");
	for (unsigned i = 0; i < nr_series; i++) {
		struct series *s = &series[i];
		struct stat5 st;
		char key[162];

		stat_of(s->target, s->metric, &st);
		snprintf(key, sizeof(key), "%.79s/%.79s", s->target, s->metric);
		json_obj(&jw, key);
		json_u64(&jw, "n", st.n);
		json_u64(&jw, "p50", st.p50);
		json_u64(&jw, "p99", st.p99);
		json_u64(&jw, "min", st.min);
		json_u64(&jw, "max", st.max);
		json_arr(&jw, "samples");
		for (unsigned k = 0; k < s->n; k++)
			json_u64(&jw, NULL, s->v[k]);
		json_arr_end(&jw);
		json_obj_end(&jw);
	}
	json_obj_end(&jw);
}

static void record_check(const char *name, const char *result, const char *detail)
{
	if (!strcmp(result, "info"))
		printf("- %s: %s\n", name, detail);
	else
		printf("- %s: %s (%s)\n", name, !strcmp(result, "MISSED") ? "**MISSED**" : result,
		       detail);
	json_obj(&jw, NULL);
	json_str(&jw, "target", name);
	json_str(&jw, "result", result);
	json_str(&jw, "detail", detail);
	json_obj_end(&jw);
}

/* One target line, "met" / "**MISSED**", into stdout and the JSON's "checks". */
static void check(const char *name, bool measured, bool ok, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void check(const char *name, bool measured, bool ok, const char *fmt, ...)
{
	char detail[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	record_check(name, !measured ? "not measured" : ok ? "met" : "MISSED", detail);
}

/* A number that goes with the targets but is none: "- name: detail". */
static void info(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void info(const char *name, const char *fmt, ...)
{
	char detail[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	record_check(name, "info", detail);
}

static double ratio(uint64_t a, uint64_t b)
{
	return b ? (double)a / (double)b : 0.0;
}

/* ---- child processes ---------------------------------------------------------------- */

struct reader {
	int fd;
	size_t len;
	char buf[16384];
};

/*
 * The next line of r (without its newline) into out. 1: a line; 0: deadline passed;
 * -1: end of file or error.
 */
static int read_line(struct reader *r, char *out, size_t cap, uint64_t deadline)
{
	for (;;) {
		char *nl = memchr(r->buf, '\n', r->len);
		struct pollfd p = { .fd = r->fd, .events = POLLIN };
		uint64_t now;
		ssize_t n;

		if (nl) {
			size_t l = (size_t)(nl - r->buf);

			snprintf(out, cap, "%.*s", (int)l, r->buf);
			memmove(r->buf, nl + 1, r->len - l - 1);
			r->len -= l + 1;
			return 1;
		}
		if (r->len == sizeof(r->buf))
			r->len = 0; /* a line longer than the buffer: drop it */
		now = now_ns();
		if (now >= deadline)
			return 0;
		if (poll(&p, 1, (int)((deadline - now) / MS) + 1) < 0 && errno != EINTR)
			return -1;
		if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		n = read(r->fd, r->buf + r->len, sizeof(r->buf) - r->len);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			return -1;
		r->len += (size_t)n;
	}
}

enum { CH_IN = 1, CH_OUT = 2, CH_ERR = 4, CH_READY = 8 };

struct child {
	pid_t pid;
	uint64_t t0;             /* EMBER_T0_NS: the child's timing lines count from here */
	int in;                  /* CH_IN: our end of its stdin, else -1 */
	struct reader out, err;  /* CH_OUT / CH_ERR: its stdout / stderr, fd -1 if not */
	struct reader ready;     /* CH_READY: its fd 3 (--ready-fd 3) */
	int ctl;                 /* control socket, -1 */
	char sock[256], uds[256];
};

/* A pipe whose ends are both >= 10 (so dup2 onto 0..3 in the child never meets one). */
static int pipe_hi(int p[2])
{
	int q[2];

	if (pipe2(q, O_CLOEXEC) < 0)
		return -1;
	p[0] = fcntl(q[0], F_DUPFD_CLOEXEC, 10);
	p[1] = fcntl(q[1], F_DUPFD_CLOEXEC, 10);
	close(q[0]);
	close(q[1]);
	return p[0] < 0 || p[1] < 0 ? -1 : 0;
}

/* Spawns argv with EMBER_T0_NS = the spawn instant; errlog: its stderr when not CH_ERR. */
static int child_spawn(struct child *c, char **argv, unsigned flags, const char *errlog)
{
	posix_spawn_file_actions_t fa;
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 }, rd[2] = { -1, -1 };
	char slot[64];
	char **envp = bench_envp(slot);
	int e;

	memset(c, 0, sizeof(*c));
	c->in = c->out.fd = c->err.fd = c->ready.fd = c->ctl = -1;
	if (!envp)
		return failx("out of memory");
	if (((flags & CH_IN) && pipe_hi(in)) || ((flags & CH_OUT) && pipe_hi(out)) ||
	    ((flags & CH_ERR) && pipe_hi(err)) || ((flags & CH_READY) && pipe_hi(rd)))
		return failx("pipe: %s", strerror(errno));
	posix_spawn_file_actions_init(&fa);
	if (flags & CH_IN)
		posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
	else
		posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	if (flags & CH_OUT)
		posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
	else
		posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	if (flags & CH_ERR)
		posix_spawn_file_actions_adddup2(&fa, err[1], STDERR_FILENO);
	else if (errlog)
		posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, errlog,
						 O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (flags & CH_READY)
		posix_spawn_file_actions_adddup2(&fa, rd[1], 3);
	c->t0 = now_ns();
	snprintf(slot, sizeof(slot), "EMBER_T0_NS=%" PRIu64, c->t0);
	e = posix_spawn(&c->pid, argv[0], &fa, NULL, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	free(envp);
	close(in[0]);
	close(out[1]);
	close(err[1]);
	close(rd[1]);
	c->in = in[1];
	c->out.fd = out[0];
	c->err.fd = err[0];
	c->ready.fd = rd[0];
	if (e) {
		c->pid = 0;
		return failx("spawning %s: %s", argv[0], strerror(e));
	}
	return 0;
}

/* µs from the child's spawn to t (a now_ns() value) */
static uint64_t child_us(const struct child *c, uint64_t t)
{
	return (t - c->t0) / 1000;
}

/* Waits for the child (SIGKILL after timeout) and closes our ends. Returns its status. */
static int child_reap(struct child *c, uint64_t timeout_ns)
{
	uint64_t until = now_ns() + timeout_ns;
	int status = -1;

	if (c->in >= 0)
		close(c->in);
	c->in = -1;
	while (c->pid > 0) {
		pid_t p = waitpid(c->pid, &status, WNOHANG);

		if (p == c->pid || (p < 0 && errno != EINTR))
			break;
		if (now_ns() > until) {
			kill(c->pid, SIGKILL);
			waitpid(c->pid, &status, 0);
			break;
		}
		sleep_ns(MS / 2);
	}
	c->pid = 0;
	if (c->ctl >= 0)
		close(c->ctl);
	if (c->out.fd >= 0)
		close(c->out.fd);
	if (c->err.fd >= 0)
		close(c->err.fd);
	if (c->ready.fd >= 0)
		close(c->ready.fd);
	c->ctl = c->out.fd = c->err.fd = c->ready.fd = -1;
	return status;
}

/* "ready pid=N" on fd 3 (ember --ready-fd 3) */
static int child_wait_ready(struct child *c, const char *what)
{
	char line[128];
	int r = read_line(&c->ready, line, sizeof(line), now_ns() + 20 * SEC);

	if (r != 1 || strncmp(line, "ready pid=", 10))
		return failx("%s: no ready line from ember (%s)", what,
			     r == 0 ? "timed out" : "it closed fd 3 without one: see its stderr");
	return 0;
}

/* ---- the control socket (FORMAT.md 9) ------------------------------------------------- */

static int ctl_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

/* One request frame: {"verb": verb[, "cmd": cmd][, "standby": true]} */
static int ctl_send(int fd, const char *verb, const char *cmd, bool standby)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint8_t frame[512];
	size_t len;
	ssize_t n;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1 + (cmd ? 1 : 0) + (standby ? 1 : 0));
	pack_str(&pk, "verb");
	pack_str(&pk, verb);
	if (cmd) {
		pack_str(&pk, "cmd");
		pack_str(&pk, cmd);
	}
	if (standby) {
		pack_str(&pk, "standby");
		msgpack_pack_true(&pk);
	}
	len = sb.size;
	if (len + 4 > sizeof(frame)) {
		msgpack_sbuffer_destroy(&sb);
		return -1;
	}
	frame[0] = (uint8_t)(len >> 24);
	frame[1] = (uint8_t)(len >> 16);
	frame[2] = (uint8_t)(len >> 8);
	frame[3] = (uint8_t)len;
	memcpy(frame + 4, sb.data, len);
	msgpack_sbuffer_destroy(&sb);
	n = send(fd, frame, len + 4, MSG_NOSIGNAL); /* one write: nothing between the halves */
	return n == (ssize_t)(len + 4) ? 0 : -1;
}

#define RESP_MAX 16

struct resp {
	bool ok;
	char error[256];
	unsigned n;
	struct {
		char key[32];
		uint64_t u;
	} kv[RESP_MAX];
};

static bool resp_u64(const struct resp *r, const char *key, uint64_t *v)
{
	for (unsigned i = 0; i < r->n; i++)
		if (!strcmp(r->kv[i].key, key)) {
			*v = r->kv[i].u;
			return true;
		}
	return false;
}

static int recv_full(int fd, uint8_t *buf, size_t len, uint64_t deadline)
{
	size_t got = 0;

	while (got < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint64_t now = now_ns();
		ssize_t n;

		if (now >= deadline)
			return -1;
		if (poll(&p, 1, (int)((deadline - now) / MS) + 1) <= 0)
			continue;
		n = recv(fd, buf + got, len - got, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

/* One response; its u64 values and error message in r. 0, or -1 (no response). */
static int ctl_recv(int fd, struct resp *r, uint64_t deadline)
{
	static uint8_t body[65536];
	uint8_t hdr[4];
	msgpack_unpacked u;
	struct snap_err se;
	size_t len, off = 0;

	memset(r, 0, sizeof(*r));
	if (recv_full(fd, hdr, 4, deadline))
		return -1;
	len = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
	if (len == 0 || len > sizeof(body) || recv_full(fd, body, len, deadline))
		return -1;
	if (snap_msgpack_precheck(body, len, &se))
		return -1;
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, (const char *)body, len, &off) != MSGPACK_UNPACK_SUCCESS ||
	    u.data.type != MSGPACK_OBJECT_MAP) {
		msgpack_unpacked_destroy(&u);
		return -1;
	}
	for (uint32_t i = 0; i < u.data.via.map.size; i++) {
		const msgpack_object *k = &u.data.via.map.ptr[i].key, *v = &u.data.via.map.ptr[i].val;
		char key[32];

		if (k->type != MSGPACK_OBJECT_STR || k->via.str.size >= sizeof(key))
			continue;
		snprintf(key, sizeof(key), "%.*s", (int)k->via.str.size, k->via.str.ptr);
		if (!strcmp(key, "ok") && v->type == MSGPACK_OBJECT_BOOLEAN)
			r->ok = v->via.boolean;
		else if (!strcmp(key, "error") && v->type == MSGPACK_OBJECT_STR)
			snprintf(r->error, sizeof(r->error), "%.*s", (int)v->via.str.size, v->via.str.ptr);
		else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && r->n < RESP_MAX) {
			snprintf(r->kv[r->n].key, sizeof(r->kv[r->n].key), "%s", key);
			r->kv[r->n++].u = v->via.u64;
		}
	}
	msgpack_unpacked_destroy(&u);
	return 0;
}

/* Request + response that must say ok. */
static int ctl_do(struct child *c, const char *verb, const char *cmd, bool standby,
		  struct resp *r)
{
	struct resp ignored;

	if (!r)
		r = &ignored;
	if (ctl_send(c->ctl, verb, cmd, standby) || ctl_recv(c->ctl, r, now_ns() + 30 * SEC))
		return failx("%s: no answer to '%s' on the control socket", c->sock, verb);
	if (!r->ok)
		return failx("%s: '%s' failed: %s", c->sock, verb, r->error);
	return 0;
}

/* Stops an ember (shutdown, then SIGKILL if it does not go). Returns its status. */
static int ember_stop(struct child *c)
{
	struct resp r;

	if (c->ctl < 0)
		c->ctl = ctl_connect(c->sock);
	if (c->ctl < 0 || ctl_send(c->ctl, "shutdown", NULL, false) ||
	    ctl_recv(c->ctl, &r, now_ns() + 5 * SEC))
		kill(c->pid, SIGTERM);
	return child_reap(c, 10 * SEC);
}

/* ember's "ember-timing <phase> <us>" lines on stderr until `last`; 0 if all came. */
struct timings {
	int64_t standby_resume, resumed, first_report;
};

static int read_timings(struct child *c, const char *last, struct timings *t)
{
	uint64_t deadline = now_ns() + 10 * SEC;
	char line[512];

	for (;;) {
		char phase[64];
		long long us;
		int r = read_line(&c->err, line, sizeof(line), deadline);

		if (r != 1)
			return failx("ember (%s): no '%s' timing line (%s)", c->sock, last,
				     r ? "stderr closed" : "timed out");
		if (sscanf(line, "ember-timing %63s %lld", phase, &us) != 2) {
			if (strncmp(line, "ember-", 6))
				fprintf(stderr, "ember: %s\n", line);
			continue;
		}
		if (!strcmp(phase, "standby-resume"))
			t->standby_resume = us;
		else if (!strcmp(phase, "resumed"))
			t->resumed = us;
		else if (!strcmp(phase, "first-report"))
			t->first_report = us;
		if (!strcmp(phase, last))
			return 0;
	}
}

/* ---- standby ---------------------------------------------------------------------------- */

static int ember_standby_start(struct child *c, const char *snap, const char *name, bool vsock)
{
	char sock[256], uds[256];
	char *argv[] = { (char *)o.ember, "restore", "--snapshot", (char *)snap, "--standby",
			 "--api-sock", sock, "--console", "none", "--timings", "--ready-fd", "3",
			 vsock ? "--vsock-uds" : NULL, uds, NULL };

	snprintf(sock, sizeof(sock), "%s/%s.ctl", o.tmp, name);
	snprintf(uds, sizeof(uds), "%s/%s.v", o.tmp, name);
	unlink(sock);
	unlink(uds);
	if (child_spawn(c, argv, CH_ERR | CH_READY, NULL))
		return 1;
	snprintf(c->sock, sizeof(c->sock), "%s", sock);
	snprintf(c->uds, sizeof(c->uds), "%s", uds);
	if (child_wait_ready(c, name))
		return 1;
	c->ctl = ctl_connect(c->sock);
	if (c->ctl < 0)
		return failx("%s: cannot connect: %s", c->sock, strerror(errno));
	return 0;
}

/* ember restore --standby of the sandbox; resume; timings to the first report */
static int standby_ember_sample(bool record)
{
	struct child c;
	struct timings t = { -1, -1, -1 };
	struct resp r;
	uint64_t t_send, t_ack, send_us;
	int status;

	if (ember_standby_start(&c, o.sandbox, "standby", false))
		return 1;
	sleep_ns(2 * MS); /* ember's main loop back in epoll_wait */
	t_send = now_ns();
	if (ctl_send(c.ctl, "resume", NULL, false) || ctl_recv(c.ctl, &r, now_ns() + 10 * SEC) ||
	    !r.ok) {
		ember_stop(&c);
		return failx("standby: resume failed: %s", r.error);
	}
	t_ack = now_ns();
	if (read_timings(&c, "first-report", &t)) {
		ember_stop(&c);
		return 1;
	}
	status = ember_stop(&c);
	if (status != 0)
		return failx("standby: ember exited with status 0x%x", status);
	if (t.standby_resume < 0 || t.resumed < 0)
		return failx("standby: ember printed no standby-resume/resumed timing");
	send_us = child_us(&c, t_send);
	if (!record)
		return 0;
	add("ember", "running", (uint64_t)t.resumed - send_us);
	add("ember", "first-report", (uint64_t)t.first_report - send_us);
	add("ember", "request seen", (uint64_t)t.standby_resume - send_us);
	add("ember", "seen -> running", (uint64_t)(t.resumed - t.standby_resume));
	add("ember", "response", child_us(&c, t_ack) - send_us);
	return 0;
}

static int floor_start(struct child *c, bool whole)
{
	char *argv[] = { (char *)o.floor, whole ? "--whole" : (char *)o.sandbox,
			 whole ? (char *)o.sandbox : NULL, NULL };
	char line[128];

	if (child_spawn(c, argv, CH_IN | CH_OUT, NULL))
		return 1;
	snprintf(c->sock, sizeof(c->sock), "floor_reset%s", whole ? " --whole" : "");
	if (read_line(&c->out, line, sizeof(line), now_ns() + 20 * SEC) != 1 || strcmp(line, "ready"))
		return failx("%s: not ready", c->sock);
	return 0;
}

/* A command to the floor and its one-line answer, which must start with `want`. */
static int floor_cmd(struct child *c, const char *cmd, const char *want, char *ans, size_t cap)
{
	char buf[256];
	int n = snprintf(buf, sizeof(buf), "%s\n", cmd);

	if (write(c->in, buf, (size_t)n) != n)
		return failx("%s: writing '%s': %s", c->sock, cmd, strerror(errno));
	if (read_line(&c->out, ans, cap, now_ns() + 60 * SEC) != 1)
		return failx("%s: no answer to '%s'", c->sock, cmd);
	if (strncmp(ans, want, strlen(want)))
		return failx("%s: '%s' answered '%s'", c->sock, cmd, ans);
	return 0;
}

static uint64_t kv_u64(const char *line, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), " %s=", key);
	p = strstr(line, pat);
	return p ? strtoull(p + strlen(pat), NULL, 10) : 0;
}

static int standby_floor_sample(bool record)
{
	struct child c;
	char ans[256];
	uint64_t t_send, send_us;

	if (floor_start(&c, false))
		return 1;
	sleep_ns(2 * MS);
	t_send = now_ns();
	if (floor_cmd(&c, "go", "go ", ans, sizeof(ans))) {
		child_reap(&c, SEC);
		return 1;
	}
	if (child_reap(&c, 10 * SEC) != 0)
		return failx("floor_reset exited badly");
	send_us = child_us(&c, t_send);
	if (!record)
		return 0;
	add("floor", "running", kv_u64(ans, "resumed_us") - send_us);
	add("floor", "first-report", kv_u64(ans, "first_report_us") - send_us);
	return 0;
}

/* fn: resume, then at once one 64-byte invocation over vsock */
static int standby_fn_sample(bool record)
{
	struct child c;
	struct timings t = { -1, -1, -1 };
	struct errbuf eb = { "" };
	struct invoke_result res;
	struct resp r;
	uint8_t req[64];
	uint64_t t_send, t_conn, t_resp, deadline, send_us;
	uint32_t host_port;
	int fd, status;

	for (unsigned i = 0; i < sizeof(req); i++)
		req[i] = (uint8_t)(i * 7 + 1);
	if (ember_standby_start(&c, o.fn, "standby-fn", true))
		return 1;
	sleep_ns(2 * MS);
	t_send = now_ns();
	deadline = t_send + 10 * SEC;
	if (ctl_send(c.ctl, "resume", NULL, false)) {
		ember_stop(&c);
		return failx("standby fn: sending resume failed");
	}
	fd = invoke_connect(c.uds, FN_PORT, deadline, &host_port, &eb);
	t_conn = now_ns();
	if (fd < 0) {
		ember_stop(&c);
		return failx("standby fn: %s", eb.msg);
	}
	if (invoke_call(fd, 1, req, sizeof(req), deadline, &res, &eb)) {
		close(fd);
		ember_stop(&c);
		return failx("standby fn: invocation: %s", eb.msg);
	}
	t_resp = now_ns();
	close(fd);
	if (res.status != INVOKE_OK || res.payload_len != 8 + sizeof(req)) {
		invoke_result_free(&res);
		ember_stop(&c);
		return failx("standby fn: status %u, %u bytes", res.status, res.payload_len);
	}
	invoke_result_free(&res);
	if (ctl_recv(c.ctl, &r, now_ns() + 10 * SEC) || !r.ok || read_timings(&c, "first-report", &t)) {
		ember_stop(&c);
		return failx("standby fn: resume failed or no timings");
	}
	status = ember_stop(&c);
	if (status != 0)
		return failx("standby fn: ember exited with status 0x%x", status);
	send_us = child_us(&c, t_send);
	if (!record)
		return 0;
	add("fn", "running", (uint64_t)t.resumed - send_us);
	add("fn", "first-report", (uint64_t)t.first_report - send_us);
	add("fn", "vsock connected", child_us(&c, t_conn) - send_us);
	add("fn", "first response", child_us(&c, t_resp) - send_us);
	return 0;
}

static void row(const char *label, const char *a, const char *b, const char *metric)
{
	struct stat5 x, y;
	bool hx = stat_of(a, metric, &x), hy = b && stat_of(b, metric, &y);
	char r[32] = "-";

	if (!hx)
		return;
	if (hy && y.p50)
		snprintf(r, sizeof(r), "%.2fx", ratio(x.p50, y.p50));
	if (hy)
		printf("| %s | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | %s |\n", label,
		       x.p50, x.p99, y.p50, y.p99, r);
	else
		printf("| %s | %" PRIu64 " | %" PRIu64 " | - | - | - |\n", label, x.p50, x.p99);
}

static int run_standby(void)
{
	uint64_t er, fr, ef, ff, vr, vf;

	if (!o.sandbox || !o.fn || !o.floor)
		return failx("standby needs --sandbox, --fn and --floor");
	for (unsigned round = 0; round < STANDBY_WARMUP + o.runs; round++) {
		bool rec = round >= STANDBY_WARMUP;

		if (standby_ember_sample(rec) || standby_floor_sample(rec) || standby_fn_sample(rec))
			return 1;
	}
	printf("\n### standby: resume of a standby VM -> running / first report / first response "
	       "(µs from the request, %u runs, interleaved)\n\n", o.runs);
	printf("| from the resume request (`go` for the floor) to | ember p50 | p99 | floor p50 | "
	       "p99 | ember/floor |\n|---|---:|---:|---:|---:|---:|\n");
	row("running: the first KVM_RUN (sandbox)", "ember", "floor", "running");
	row("first report: the guest's first port write (sandbox)", "ember", "floor",
	    "first-report");
	row("ember read the request (`standby-resume`)", "ember", NULL, "request seen");
	row("... then to running, inside ember", "ember", NULL, "seen -> running");
	row("resume response received", "ember", NULL, "response");
	row("fn: running", "fn", NULL, "running");
	row("fn: first report (port write)", "fn", NULL, "first-report");
	row("fn: vsock connected (ember's OK line)", "fn", NULL, "vsock connected");
	row("fn: **first response** (64-byte invocation answered)", "fn", NULL, "first response");
	er = p50("ember", "running");
	fr = p50("floor", "running");
	ef = p50("ember", "first-report");
	ff = p50("floor", "first-report");
	vr = p50("fn", "first response");
	vf = p50("fn", "first-report");
	printf("\nember: `ember restore --standby` + `resume` on its control socket; floor: "
	       "bench/floor_reset (state set, never run) + `go` on its stdin; fn: the fn "
	       "guest, resume then one invocation over vsock at once.\n\nTargets:\n");
	json_obj(&jw, NULL);
	json_u64(&jw, "runs", o.runs);
	json_arr(&jw, "checks");
	check("standby resume -> running <= 0.3 ms p50", true, er <= 300,
	      "%" PRIu64 " us; floor %" PRIu64 " us, ember/floor %.2fx%s", er, fr, ratio(er, fr),
	      er <= 300 ? "" : fr > 300 ? ": the floor itself is above 0.3 ms here"
					: ": see `request seen` and `seen -> running` above");
	info("standby resume -> first report (no target)", "%" PRIu64 " us; floor %" PRIu64
	     " us, ember/floor %.2fx", ef, ff, ratio(ef, ff));
	info("standby resume -> first vsock response, fn (no target)", "%" PRIu64 " us; the fn "
	     "guest's first port write %" PRIu64 " us, %.2fx that", vr, vf, ratio(vr, vf));
	json_arr_end(&jw);
	json_series();
	json_obj_end(&jw);
	return 0;
}

/* ---- reset ------------------------------------------------------------------------------- */

struct target {
	char name[32];
	bool floor, whole;
	char backend[24];
	struct child c;
};

static int reset_ember_start(struct target *t)
{
	char sock[256];
	char *argv[] = { (char *)o.ember, "restore", "--snapshot", (char *)o.sandbox,
			 "--api-sock", sock, "--console", "none", "--mem-backend",
			 (char *)t->backend, "--ready-fd", "3", NULL };

	snprintf(sock, sizeof(sock), "%s/reset-%s.ctl", o.tmp, t->backend);
	unlink(sock);
	if (child_spawn(&t->c, argv, CH_ERR | CH_READY, NULL))
		return 1;
	snprintf(t->c.sock, sizeof(t->c.sock), "%s", sock);
	if (child_wait_ready(&t->c, t->name))
		return 1;
	t->c.ctl = ctl_connect(sock);
	return t->c.ctl < 0 ? failx("%s: cannot connect", sock) : 0;
}

/* ember's stderr until "ember-report msg=dirty a0=<n> ..." (the guest finished writing) */
static int await_dirty_report(struct target *t, uint64_t n)
{
	uint64_t deadline = now_ns() + 120 * SEC;
	char line[512];

	for (;;) {
		unsigned long long got;
		int r = read_line(&t->c.err, line, sizeof(line), deadline);

		if (r != 1)
			return failx("%s: no REPORT dirty from the guest (%s)", t->name,
				     r ? "ember's stderr closed" : "timed out");
		if (sscanf(line, "ember-report msg=dirty a0=%llx", &got) == 1) {
			if (got != n)
				return failx("%s: the guest dirtied %llu pages, not %" PRIu64, t->name,
					     got, n);
			return 0;
		}
		if (!strncmp(line, "ember-report msg=dirty-error", 28))
			return failx("%s: the guest refused the dirty command", t->name);
		fprintf(stderr, "%s: %s\n", t->name, line);
	}
}

static void key_of(char *key, size_t cap, const char *pattern, uint64_t n, const char *target)
{
	snprintf(key, cap, "%.31s %.23s/%" PRIu64, target, pattern, n);
}

static int reset_sample(struct target *t, const char *pattern, uint64_t n, bool record)
{
	char cmd[64], key[80], ans[256];
	uint64_t to_report = 0, mem, state, total, pages, run;

	snprintf(cmd, sizeof(cmd), "dirty %" PRIu64 "%s", n, strcmp(pattern, "seq") ? "" : " seq");
	key_of(key, sizeof(key), pattern, n, t->name);
	if (t->floor) {
		if (floor_cmd(&t->c, cmd, "dirtied ", ans, sizeof(ans)) ||
		    floor_cmd(&t->c, "reset", "reset ", ans, sizeof(ans)))
			return 1;
		to_report = kv_u64(ans, "us_total");
		mem = kv_u64(ans, "us_log") + kv_u64(ans, "us_madvise");
		state = kv_u64(ans, "us_state");
		run = kv_u64(ans, "us_run");
		total = to_report - run;
		pages = kv_u64(ans, "pages");
	} else {
		struct resp r;
		uint64_t t_send, t_ack, deadline;

		if (ctl_do(&t->c, "guest-cmd", cmd, false, NULL) || await_dirty_report(t, n))
			return 1;
		t_send = now_ns();
		if (ctl_do(&t->c, "reset", NULL, false, &r))
			return 1;
		t_ack = now_ns();
		if (!resp_u64(&r, "pages_reverted", &pages) || !resp_u64(&r, "us_memory", &mem) ||
		    !resp_u64(&r, "us_state", &state) || !resp_u64(&r, "us_total", &total))
			return failx("%s: the reset response lacks its counters", t->name);
		/* the guest runs to its WAIT within ~1 ms; ask after it had the time */
		deadline = now_ns() + 5 * SEC;
		sleep_ns(2 * MS);
		for (;;) {
			if (ctl_do(&t->c, "status", NULL, false, &r))
				return 1;
			if (resp_u64(&r, "reset_to_report_us", &to_report) && to_report)
				break;
			if (now_ns() > deadline)
				return failx("%s: no port write within 5 s of the reset", t->name);
			sleep_ns(MS);
		}
		run = to_report > total ? to_report - total : 0;
		if (record)
			add(key, "response", (t_ack - t_send) / 1000);
	}
	if (!t->whole && pages < n)
		return failx("%s: %s %" PRIu64 ": the reset reverted %" PRIu64 " pages, fewer than "
			     "the %" PRIu64 " the guest wrote: it measured nothing", t->name, pattern,
			     n, pages, n);
	if (!record)
		return 0;
	add(key, "to report", to_report);
	add(key, "memory", mem);
	add(key, "state", state);
	add(key, "reset", total);
	add(key, "run", run);
	add(key, "pages", pages);
	return 0;
}

static unsigned runs_for(uint64_t n)
{
	unsigned r = n <= 256 ? o.runs : n <= 2048 ? o.runs / 2 : o.runs / 5;

	return r < 5 ? 5 : r;
}

static unsigned split_words(const char *s, char words[][24], unsigned max)
{
	unsigned n = 0;

	while (*s && n < max) {
		int used = 0;

		while (isspace((unsigned char)*s))
			s++;
		if (!*s || sscanf(s, "%23s%n", words[n], &used) != 1)
			break;
		s += used;
		n++;
	}
	return n;
}

struct cell {
	char pattern[24];
	uint64_t n;
	unsigned runs;
};

static int run_reset(void)
{
	char sizes[MAX_SIZES][24], patterns[4][24], backends[4][24]; /* %23s words */
	unsigned ns = split_words(o.sizes, sizes, MAX_SIZES);
	unsigned np = split_words(o.patterns, patterns, 4);
	unsigned nb = split_words(o.backends, backends, 4);
	struct target targets[8];
	struct cell cells[32];
	unsigned nt = 0, nc = 0, max_runs = 0;
	int r = 1;

	if (!o.sandbox || !o.floor || !ns || !np)
		return failx("reset needs --sandbox, --floor, --sizes and --patterns");
	memset(targets, 0, sizeof(targets));
	for (unsigned i = 0; i < nb; i++) {
		snprintf(targets[nt].name, sizeof(targets[nt].name), "ember-%.23s", backends[i]);
		snprintf(targets[nt++].backend, sizeof(targets[0].backend), "%.23s", backends[i]);
	}
	snprintf(targets[nt].name, sizeof(targets[nt].name), "floor");
	targets[nt++].floor = true;
	snprintf(targets[nt].name, sizeof(targets[nt].name), "floor-whole");
	targets[nt].floor = true;
	targets[nt++].whole = true;
	/* the cells: random only where it differs from seq (0 pages and the whole heap do not) */
	for (unsigned p = 0; p < np; p++)
		for (unsigned s = 0; s < ns; s++) {
			uint64_t n = strtoull(sizes[s], NULL, 10);

			if (strcmp(patterns[p], "seq") && strcmp(patterns[p], "random"))
				return failx("--patterns: seq or random, not '%s'", patterns[p]);
			if (p > 0 && (n == 0 || n >= 16384))
				continue;
			snprintf(cells[nc].pattern, sizeof(cells[nc].pattern), "%.23s", patterns[p]);
			cells[nc].n = n;
			cells[nc].runs = runs_for(n);
			if (cells[nc].runs > max_runs)
				max_runs = cells[nc].runs;
			nc++;
		}
	for (unsigned i = 0; i < nt; i++) {
		if (targets[i].floor) {
			char ans[128];

			if (floor_start(&targets[i].c, targets[i].whole) ||
			    floor_cmd(&targets[i].c, "go", "go ", ans, sizeof(ans)))
				goto out;
		} else if (reset_ember_start(&targets[i])) {
			goto out;
		}
	}
	/* one warm-up sample per cell and target, then rounds: every cell still short of its
	 * runs gets one sample of each target, in turn */
	for (unsigned round = 0; round <= max_runs; round++)
		for (unsigned c = 0; c < nc; c++) {
			if (round > cells[c].runs)
				continue;
			for (unsigned i = 0; i < nt; i++)
				if (reset_sample(&targets[i], cells[c].pattern, cells[c].n, round > 0))
					goto out;
		}

	printf("\n### reset: in-place reset -> the guest's first port write, sandbox heap=64M "
	       "(mem 256M), after N written pages (µs)\n\n");
	printf("| pattern | N | target | runs | to first report p50 | p99 | memory p50 | state p50 | "
	       "run p50 | pages reverted (min) | response p50 |\n"
	       "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (unsigned c = 0; c < nc; c++)
		for (unsigned i = 0; i < nt; i++) {
			char key[80], resp[24] = "-";
			struct stat5 tr, pg, rs;

			key_of(key, sizeof(key), cells[c].pattern, cells[c].n, targets[i].name);
			stat_of(key, "to report", &tr);
			stat_of(key, "pages", &pg);
			if (stat_of(key, "response", &rs))
				snprintf(resp, sizeof(resp), "%" PRIu64, rs.p50);
			printf("| %s | %" PRIu64 " | %s | %u | %" PRIu64 " | %" PRIu64 " | %" PRIu64
			       " | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | %s |\n", cells[c].pattern,
			       cells[c].n, targets[i].name, tr.n, tr.p50, tr.p99, p50(key, "memory"),
			       p50(key, "state"), p50(key, "run"), pg.min, resp);
		}
	printf("\nto first report: reset start -> the guest's first port write after it (ember: "
	       "`status` reset_to_report_us; floor: its own clock) = memory (ember us_memory; "
	       "floor: dirty log + madvise) + state + run (the rest: resuming the vCPU and "
	       "running the guest to its WAIT). response: the `reset` request's round trip as "
	       "the client saw it. floor-whole: one madvise over all guest RAM, no dirty log.\n\n");
	printf("| pattern | N | floor (best of floor, floor-whole) p50 |");
	for (unsigned i = 0; i < nt; i++)
		if (!targets[i].floor)
			printf(" %s | /floor |", targets[i].name);
	printf("\n|---|---:|---:|");
	for (unsigned i = 0; i < nt; i++)
		if (!targets[i].floor)
			printf("---:|---:|");
	printf("\n");
	json_obj(&jw, NULL);
	json_u64(&jw, "runs", o.runs);
	json_str(&jw, "sizes", o.sizes);
	json_str(&jw, "patterns", o.patterns);
	json_arr(&jw, "ratios");
	for (unsigned c = 0; c < nc; c++) {
		char key[80];
		uint64_t fl, fw, best;

		key_of(key, sizeof(key), cells[c].pattern, cells[c].n, "floor");
		fl = p50(key, "to report");
		key_of(key, sizeof(key), cells[c].pattern, cells[c].n, "floor-whole");
		fw = p50(key, "to report");
		best = fl && (fl < fw || !fw) ? fl : fw;
		printf("| %s | %" PRIu64 " | %" PRIu64 " |", cells[c].pattern, cells[c].n, best);
		json_obj(&jw, NULL);
		json_str(&jw, "pattern", cells[c].pattern);
		json_u64(&jw, "pages", cells[c].n);
		json_u64(&jw, "floor_us", best);
		for (unsigned i = 0; i < nt; i++) {
			uint64_t e;

			if (targets[i].floor)
				continue;
			key_of(key, sizeof(key), cells[c].pattern, cells[c].n, targets[i].name);
			e = p50(key, "to report");
			printf(" %" PRIu64 " | %.2fx |", e, ratio(e, best));
			snprintf(key, sizeof(key), "%.60s_us", targets[i].name);
			json_u64(&jw, key, e);
			snprintf(key, sizeof(key), "%.60s_vs_floor", targets[i].name);
			json_f64(&jw, key, ratio(e, best), 3);
		}
		printf("\n");
		json_obj_end(&jw);
	}
	json_arr_end(&jw);
	json_arr(&jw, "checks");
	printf("\nTargets:\n");
	for (unsigned c = 0; c < nc; c++) {
		char key[80], name[160];
		uint64_t e, fl, fw, best;

		if (cells[c].n != 256)
			continue;
		key_of(key, sizeof(key), cells[c].pattern, 256, "floor");
		fl = p50(key, "to report");
		key_of(key, sizeof(key), cells[c].pattern, 256, "floor-whole");
		fw = p50(key, "to report");
		best = fl && (fl < fw || !fw) ? fl : fw;
		for (unsigned i = 0; i < nt; i++) {
			if (targets[i].floor)
				continue;
			key_of(key, sizeof(key), cells[c].pattern, 256, targets[i].name);
			e = p50(key, "to report");
			snprintf(name, sizeof(name), "%.31s: reset -> running (first port write) <= 0.3 "
				 "ms p50 after 256 %.23s pages", targets[i].name, cells[c].pattern);
			check(name, true, e <= 300, "%" PRIu64 " us; floor %" PRIu64 " us, %.2fx the "
			      "floor%s", e, best, ratio(e, best),
			      e <= 300 ? "" : best > 300 ? ": the floor itself is above 0.3 ms here"
							 : ": see bench/README.md, reset");
		}
	}
	json_arr_end(&jw);
	json_series();
	json_obj_end(&jw);
	r = 0;
out:
	for (unsigned i = 0; i < nt; i++) {
		if (!targets[i].c.pid)
			continue;
		if (targets[i].floor)
			child_reap(&targets[i].c, 10 * SEC);
		else
			ember_stop(&targets[i].c);
	}
	return r;
}

/* ---- mem ----------------------------------------------------------------------------------- */

struct pss {
	uint64_t pss, pss_anon, pss_file, rss;  /* kB, smaps_rollup */
	uint64_t guest_pss, guest_anon, guest_rss; /* kB, the memory-file mapping */
};

static int read_pss(pid_t pid, const char *memfile, struct pss *p)
{
	char path[64], line[512];
	bool in = false;
	FILE *f;

	memset(p, 0, sizeof(*p));
	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "Rss: %" SCNu64, &p->rss);
		sscanf(line, "Pss: %" SCNu64, &p->pss);
		sscanf(line, "Pss_Anon: %" SCNu64, &p->pss_anon);
		sscanf(line, "Pss_File: %" SCNu64, &p->pss_file);
	}
	fclose(f);
	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		uint64_t v;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			size_t l = strcspn(line, "\n");

			line[l] = 0;
			in = l >= strlen(memfile) && !strcmp(line + l - strlen(memfile), memfile);
			continue;
		}
		if (!in)
			continue;
		if (sscanf(line, "Pss: %" SCNu64, &v) == 1)
			p->guest_pss += v;
		else if (sscanf(line, "Anonymous: %" SCNu64, &v) == 1)
			p->guest_anon += v;
		else if (sscanf(line, "Rss: %" SCNu64, &v) == 1)
			p->guest_rss += v;
	}
	fclose(f);
	return 0;
}

/* /proc/meminfo fields, kB; "kernel" is the sum of the last five */
static const char *const mi_keys[] = {
	"MemAvailable", "AnonPages", "VmallocUsed", "Slab", "PageTables", "SecPageTables",
	"KernelStack",
};
#define NR_MI (sizeof(mi_keys) / sizeof(mi_keys[0]))
#define MI_FIRST_KERNEL 2

struct meminfo {
	int64_t v[NR_MI];
};

static void read_meminfo(struct meminfo *m)
{
	char line[256];
	FILE *f = fopen("/proc/meminfo", "re");

	memset(m, 0, sizeof(*m));
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char key[64];
		long long v;

		if (sscanf(line, "%63[^:]: %lld", key, &v) != 2)
			continue;
		for (unsigned i = 0; i < NR_MI; i++)
			if (!strcmp(key, mi_keys[i]))
				m->v[i] = v;
	}
	fclose(f);
}

/* Per group: what the whole machine's counters moved per VM (kB): the VMs' level minus
 * the mean of the levels before they started and after they stopped (drift cancels). */
struct sysdelta {
	const char *label;
	unsigned vms;
	double per_vm[NR_MI], kernel;
	uint64_t threads, fds;   /* of the first VM */
};

static struct sysdelta sysd[2];
static unsigned nr_sysd;

static unsigned count_threads(pid_t pid)
{
	char path[64], line[128];
	unsigned n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (f) {
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "Threads: %u", &n) == 1)
				break;
		fclose(f);
	}
	return n;
}

static unsigned count_open_files(pid_t pid)
{
	char path[64];
	unsigned n = 0;
	struct dirent *e;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return 0;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/*
 * K VMs of snapshot `snap` in standby (with fn: each resumed, one invocation, reset
 * --standby), measured, stopped. Series "<label>" with the per-VM kB values.
 */
static int mem_group(const char *label, const char *snap, bool fn, unsigned k)
{
	struct child *vms = calloc(k, sizeof(*vms));
	struct sysdelta *sd = &sysd[nr_sysd++];
	struct meminfo before, up, after;
	char log[256], memfile[4200];
	unsigned started = 0;
	int r = 1;

	if (!vms)
		return failx("out of memory");
	sd->label = label;
	sd->vms = k;
	snprintf(log, sizeof(log), "%s/mem-%s.err", o.tmp, label);
	snprintf(memfile, sizeof(memfile), "%s/memory.raw", snap);
	sleep_ns(500 * MS);
	read_meminfo(&before);
	for (; started < k; started++) {
		struct child *c = &vms[started];
		char sock[256], uds[256];
		char *argv[] = { (char *)o.ember, "restore", "--snapshot", (char *)snap, "--standby",
				 "--api-sock", sock, "--console", "none", "--mem-backend", "mmap",
				 "--ready-fd", "3", fn ? "--vsock-uds" : NULL, uds, NULL };

		snprintf(sock, sizeof(sock), "%s/m-%s-%u.ctl", o.tmp, label, started);
		snprintf(uds, sizeof(uds), "%s/m-%s-%u.v", o.tmp, label, started);
		unlink(sock);
		unlink(uds);
		if (child_spawn(c, argv, CH_READY, log))
			goto out;
		snprintf(c->sock, sizeof(c->sock), "%s", sock);
		snprintf(c->uds, sizeof(c->uds), "%s", uds);
		if (child_wait_ready(c, label)) {
			started++;
			goto out;
		}
		close(c->ready.fd);
		c->ready.fd = -1;
		if (fn) {
			struct errbuf eb = { "" };
			struct invoke_opts io = { .uds = uds, .port = FN_PORT, .request_id = 1,
						  .timeout_ms = 10000 };
			struct invoke_result res;
			uint8_t req[64] = { 1, 2, 3 };

			c->ctl = ctl_connect(sock);
			if (c->ctl < 0 || ctl_do(c, "resume", NULL, false, NULL)) {
				started++;
				goto out;
			}
			if (invoke_once(&io, req, sizeof(req), &res, &eb) || res.status != INVOKE_OK) {
				failx("%s %u: invocation failed: %s", label, started, eb.msg);
				started++;
				goto out;
			}
			invoke_result_free(&res);
			if (ctl_do(c, "reset", NULL, true, NULL)) {
				started++;
				goto out;
			}
			close(c->ctl);
			c->ctl = -1;
		}
	}
	sleep_ns(SEC); /* settle: every VM idle in standby */
	read_meminfo(&up);
	sd->threads = count_threads(vms[0].pid);
	sd->fds = count_open_files(vms[0].pid);
	for (unsigned i = 0; i < k; i++) {
		struct pss p;

		if (read_pss(vms[i].pid, memfile, &p)) {
			failx("%s: cannot read /proc/%d/smaps", label, (int)vms[i].pid);
			goto out;
		}
		add(label, "private kB", p.pss - (p.guest_pss - p.guest_anon));
		add(label, "Pss kB", p.pss);
		add(label, "Pss_Anon kB", p.pss_anon);
		add(label, "Pss_File kB", p.pss_file);
		add(label, "guest page cache Pss kB", p.guest_pss - p.guest_anon);
		add(label, "guest anon kB", p.guest_anon);
		add(label, "guest Rss kB", p.guest_rss);
		add(label, "Rss kB", p.rss);
	}
	r = 0;
out:
	for (unsigned i = 0; i < started; i++)
		if (vms[i].pid) {
			int st = ember_stop(&vms[i]);

			if (st != 0 && !r)
				r = failx("%s %u: ember exited with status 0x%x (see %s)", label, i, st, log);
		}
	free(vms);
	if (r)
		return r;
	sleep_ns(SEC); /* teardowns finish in the kernel after the exits */
	read_meminfo(&after);
	for (unsigned i = 0; i < NR_MI; i++) {
		double level = (double)up.v[i] - ((double)before.v[i] + (double)after.v[i]) / 2;

		/* MemAvailable falls as the VMs take memory: report the fall */
		sd->per_vm[i] = (i == 0 ? -level : level) / k;
		if (i >= MI_FIRST_KERNEL)
			sd->kernel += sd->per_vm[i];
	}
	return 0;
}

static const struct sysdelta *sysd_of(const char *label)
{
	for (unsigned i = 0; i < nr_sysd; i++)
		if (!strcmp(sysd[i].label, label))
			return &sysd[i];
	return NULL;
}

static void mem_table(const char *label, const char *what)
{
	static const char *const rows[] = {
		"private kB", "Pss kB", "Pss_Anon kB", "Pss_File kB", "guest page cache Pss kB",
		"guest anon kB", "guest Rss kB", "Rss kB",
	};
	const struct sysdelta *sd = sysd_of(label);
	struct stat5 st;

	if (!stat_of(label, "private kB", &st) || !sd)
		return;
	printf("\n### standby_mem: %s, %u VMs at once (kB per VM)\n\n", what, st.n);
	printf("| per VM (/proc/PID/smaps_rollup, smaps) | p50 | p99 | min | max |\n"
	       "|---|---:|---:|---:|---:|\n");
	for (unsigned i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		if (stat_of(label, rows[i], &st))
			printf("| %s%s%s | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " |\n",
			       i ? "" : "**", rows[i], i ? "" : "**", st.p50, st.p99, st.min, st.max);
	printf("\n| whole machine (/proc/meminfo): the VMs' level minus the mean of before and "
	       "after, / VMs; other users' activity is noise | kB per VM |\n|---|---:|\n");
	for (unsigned i = 0; i < NR_MI; i++)
		printf("| %s%s | %.0f |\n", mi_keys[i], i ? "" : " (fall)", sd->per_vm[i]);
	printf("| **kernel (KVM) estimate**: VmallocUsed + Slab + PageTables + SecPageTables + "
	       "KernelStack | %.0f |\n", sd->kernel);
	printf("| threads / open files of one VM | %" PRIu64 " / %" PRIu64 " |\n", sd->threads,
	       sd->fds);
}

static void mem_json(const char *label)
{
	const struct sysdelta *sd = sysd_of(label);

	if (!sd)
		return;
	json_obj(&jw, label);
	json_u64(&jw, "vms", sd->vms);
	json_u64(&jw, "threads", sd->threads);
	json_u64(&jw, "fds", sd->fds);
	json_f64(&jw, "kernel_kb_per_vm", sd->kernel, 0);
	for (unsigned i = 0; i < NR_MI; i++) {
		char key[80];

		snprintf(key, sizeof(key), "%s_kb_per_vm", mi_keys[i]);
		json_f64(&jw, key, sd->per_vm[i], 0);
	}
	json_obj_end(&jw);
}

static uint64_t fit(double kb)
{
	return kb >= 1 ? (uint64_t)((double)GIB20_KB / kb) : 0;
}

static int run_mem(void)
{
	struct meminfo m;
	struct rlimit nofile, nproc;
	unsigned k = o.count;
	const struct sysdelta *sd;
	struct stat5 st, fst;
	bool have_fn = false;
	double kern;

	if (!o.sandbox)
		return failx("mem needs --sandbox");
	read_meminfo(&m);
	getrlimit(RLIMIT_NOFILE, &nofile);
	getrlimit(RLIMIT_NPROC, &nproc);
	/* room: at most a quarter of what is available at 16 MiB per VM (generous: ember's
	 * own few hundred kB, KVM's ~1 MiB, the pages a guest touches); 4 fds of ours and
	 * ~8 tasks per VM */
	if ((uint64_t)k * 16384 > (uint64_t)m.v[0] / 4) {
		unsigned room = (unsigned)((uint64_t)m.v[0] / 4 / 16384);

		printf("\nstandby_mem: backing off: MemAvailable %" PRId64 " MiB leaves room for %u "
		       "VMs, not %u\n", m.v[0] / 1024, room, k);
		k = room;
	}
	if (nofile.rlim_cur != RLIM_INFINITY && (uint64_t)k * 4 + 64 > nofile.rlim_cur) {
		k = (unsigned)((nofile.rlim_cur - 64) / 4);
		printf("\nstandby_mem: backing off: RLIMIT_NOFILE %llu: %u VMs\n",
		       (unsigned long long)nofile.rlim_cur, k);
	}
	if (nproc.rlim_cur != RLIM_INFINITY && (uint64_t)k * 8 + 256 > nproc.rlim_cur) {
		k = (unsigned)((nproc.rlim_cur - 256) / 8);
		printf("\nstandby_mem: backing off: RLIMIT_NPROC %llu: %u VMs\n",
		       (unsigned long long)nproc.rlim_cur, k);
	}
	if (k < 1)
		return failx("no room for a single VM");
	if (mem_group("standby", o.sandbox, false, k))
		return 1;
	if (o.fn) {
		if (mem_group("fn-reset", o.fn, true, k))
			return 1;
		have_fn = true;
	}
	mem_table("standby", "sandbox heap=64M (mem 256M), restored --standby, never run");
	if (have_fn)
		mem_table("fn-reset", "fn heap=64M (mem 256M): resumed, one invocation over vsock, "
			  "reset --standby");
	stat_of("standby", "private kB", &st);
	sd = sysd_of("standby");
	kern = sd ? sd->kernel : 0;
	printf("\nprivate = Pss - (the memory file mapping's Pss - its Anonymous): everything in "
	       "ember's address space but the golden snapshot's page-cache pages the guest maps "
	       "(shared by all clones and counted once, in the page cache). The kernel's memory "
	       "for the VM (KVM's memslot metadata, vCPU and MMU pages) is not in any PSS: the "
	       "whole-machine rows estimate it.\n\nFit in 20 GiB (**extrapolated** from %u VMs, "
	       "not measured): %" PRIu64 " VMs by the private PSS median, %" PRIu64 " by the p99; "
	       "%" PRIu64 " by private PSS + the kernel estimate (%.0f + %.0f kB). Threads and "
	       "pids would also bound it: %" PRIu64 " tasks per VM.\n\nTargets:\n", k, fit(st.p50),
	       fit(st.p99), fit(st.p50 + kern), (double)st.p50, kern, sd ? sd->threads : 0);
	json_obj(&jw, NULL);
	json_u64(&jw, "vms", k);
	json_obj(&jw, "fit_in_20GiB_extrapolated");
	json_u64(&jw, "by_private_pss_p50", fit(st.p50));
	json_u64(&jw, "by_private_pss_p99", fit(st.p99));
	json_u64(&jw, "by_private_pss_p50_plus_kernel", fit(st.p50 + kern));
	json_obj_end(&jw);
	mem_json("standby");
	if (have_fn)
		mem_json("fn-reset");
	json_arr(&jw, "checks");
	check("host memory per idle standby VM <= 3 MiB (private PSS p50)", true, st.p50 <= 3072,
	      "%" PRIu64 " kB p50, %" PRIu64 " kB p99 over %u VMs, %.2fx the target; with the kernel "
	      "estimate %.0f kB%s", st.p50, st.p99, k, (double)st.p50 / 3072, st.p50 + kern,
	      st.p50 <= 3072 ? "" : ": see the parts in the table above");
	if (have_fn) {
		stat_of("fn-reset", "private kB", &fst);
		sd = sysd_of("fn-reset");
		info("fn VM after an invocation and a reset --standby (no target)", "private PSS %"
		     PRIu64 " kB p50, %" PRIu64 " kB p99; with the kernel estimate %.0f kB", fst.p50,
		     fst.p99, fst.p50 + (sd ? sd->kernel : 0));
	}
	json_arr_end(&jw);
	json_series();
	json_obj_end(&jw);
	return 0;
}

/* ---- main ------------------------------------------------------------------------------- */

static int usage(void)
{
	fprintf(stderr, "usage: warm standby|reset|mem --ember PATH --floor PATH --sandbox SNAP "
		"[--fn SNAP] --tmp DIR [--runs R] [--count K] [--sizes \"N...\"] "
		"[--patterns \"seq random\"] [--backends \"mmap uffd\"] [--json FILE]\n");
	return 2;
}

int main(int argc, char **argv)
{
	int r;

	if (argc < 2)
		return usage();
	o.mode = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v)
			return usage();
		i++;
		if (!strcmp(a, "--ember"))
			o.ember = v;
		else if (!strcmp(a, "--floor"))
			o.floor = v;
		else if (!strcmp(a, "--sandbox"))
			o.sandbox = v;
		else if (!strcmp(a, "--fn"))
			o.fn = v;
		else if (!strcmp(a, "--tmp"))
			o.tmp = v;
		else if (!strcmp(a, "--json"))
			o.json = v;
		else if (!strcmp(a, "--sizes"))
			o.sizes = v;
		else if (!strcmp(a, "--patterns"))
			o.patterns = v;
		else if (!strcmp(a, "--backends"))
			o.backends = v;
		else if (!strcmp(a, "--runs") && atoi(v) > 0)
			o.runs = (unsigned)atoi(v);
		else if (!strcmp(a, "--count") && atoi(v) > 0)
			o.count = (unsigned)atoi(v);
		else
			return usage();
	}
	if (!o.ember || !o.tmp)
		return usage();
	json = fopen(o.json ? o.json : "/dev/null", "we");
	if (!json)
		return failx("%s: %s", o.json, strerror(errno));
	json_begin(&jw, json);
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(o.mode, "standby"))
		r = run_standby();
	else if (!strcmp(o.mode, "reset"))
		r = run_reset();
	else if (!strcmp(o.mode, "mem"))
		r = run_mem();
	else
		return usage();
	fclose(json);
	return r;
}
