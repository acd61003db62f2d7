/*
 * `ember pool` on real KVM: standby VMs of the fn guest's golden snapshot behind one
 * socket (INVOCATION.md 7). Every mix answer is recomputed on the host from the
 * snapshot's memory file, so a VM that was not put back exactly to the golden state
 * would answer wrong. fn's `sleep` port (P+3) gives slow and hung functions. No test
 * asserts on a latency: the machine is shared and small.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <msgpack.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "snapfmt.h"
#include "testlib.h"

#define HEAP_MIB   16
#define MEM_MIB    128
#define MIX_PORT   "5000"
#define SLEEP_PORT "5003"
#define WAIT_MS    30000   /* for anything the pool does by itself */
#define CALL_MS    30000   /* one invocation's client-side deadline */

static char tmp[PATH_MAX], sock[PATH_MAX];
static struct fnt_golden golden;

static void setup(void)
{
	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	fnt_golden(&golden, tmp, HEAP_MIB, MEM_MIB);
	snapt_join(sock, tmp, "pool.sock");
	/* the pool's private run directory goes in here too: removed with it */
	setenv("TMPDIR", tmp, 1);
}

static void teardown(void)
{
	fnt_golden_free(&golden);
	ember_test_kill_strays(tmp);
	ember_test_rmtree(tmp);
}

TestSuite(pool, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers ------------------------------------------------------------------------ */

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* The pool's status response body (msgpack), into u (destroy it). */
static void status_get(msgpack_unpacked *u)
{
	static uint8_t resp[4 + API_MAX_FRAME];
	static const uint8_t req[] = { 0x81, 0xa4, 'v', 'e', 'r', 'b', 0xa6, 's', 't', 'a',
				       't', 'u', 's' };
	size_t len = 0, off = 0;
	int r = ctl_exchange(sock, req, sizeof(req), resp, sizeof(resp), &len, 0);

	cr_assert_eq(r, 0, "status request to %s: %s", sock, strerror(-r));
	msgpack_unpacked_init(u);
	cr_assert_eq(msgpack_unpack_next(u, (const char *)resp + 4, len, &off),
		     MSGPACK_UNPACK_SUCCESS);
	cr_assert_eq(u->data.type, MSGPACK_OBJECT_MAP);
}

static uint64_t stat_u64(const char *key)
{
	msgpack_unpacked u;
	const msgpack_object *v;
	uint64_t n;

	status_get(&u);
	v = snap_map_get(&u.data, key);
	cr_assert(v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER, "status has no u64 '%s'", key);
	n = v->via.u64;
	msgpack_unpacked_destroy(&u);
	return n;
}

/* Until status key is at least want; asserts within WAIT_MS. */
static void wait_stat(const char *key, uint64_t want)
{
	uint64_t v = 0;

	for (unsigned waited = 0; waited < WAIT_MS; waited += 10) {
		v = stat_u64(key);
		if (v >= want)
			return;
		sleep_ms(10);
	}
	cr_assert_fail("the pool's '%s' stayed at %lu, not %lu, for %u ms", key,
		       (unsigned long)v, (unsigned long)want, WAIT_MS);
}

/* The pid of the VM in state `state` (the first one), from the status's vms. */
static pid_t vm_pid(const char *state)
{
	msgpack_unpacked u;
	const msgpack_object *vms;
	pid_t pid = 0;

	status_get(&u);
	vms = snap_map_get(&u.data, "vms");
	cr_assert(vms && vms->type == MSGPACK_OBJECT_ARRAY);
	for (uint32_t i = 0; !pid && i < vms->via.array.size; i++) {
		const msgpack_object *st = snap_map_get(&vms->via.array.ptr[i], "state");
		const msgpack_object *p = snap_map_get(&vms->via.array.ptr[i], "pid");

		if (st && p && st->via.str.size == strlen(state) &&
		    !memcmp(st->via.str.ptr, state, st->via.str.size))
			pid = (pid_t)p->via.u64;
	}
	msgpack_unpacked_destroy(&u);
	cr_assert_gt(pid, 0, "no VM is %s", state);
	return pid;
}

/* `ember pool --snapshot golden --socket sock --size size --port port EXTRA... NULL`,
 * once every VM is idle. */
#define pool_start(size, port, ...) pool_start_(size, port, __VA_ARGS__)
static struct proc *pool_start_(const char *size, const char *port, const char *a1,
				const char *a2, const char *a3, const char *a4)
{
	struct proc *p = ember_test_start("pool", "--snapshot", golden.dir, "--socket", sock,
					  "--size", size, "--port", port, a1, a2, a3, a4, NULL);

	snapt_wait_socket(sock, WAIT_MS);
	wait_stat("idle", strtoull(size, NULL, 10));
	return p;
}

/* SIGTERM; the pool must drain and exit 0 leaving nothing behind. */
static void pool_stop(struct proc *p)
{
	struct proc_result r;
	DIR *d;
	struct dirent *e;

	kill(proc_pid(p), SIGTERM);
	cr_assert_eq(proc_finish(p, WAIT_MS, &r), 0);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "the pool exited %d:\n%s", r.status, r.err);
	cr_assert_eq(access(sock, F_OK), -1, "the pool's socket %s outlived it", sock);
	d = opendir(tmp);
	cr_assert_not_null(d);
	while ((e = readdir(d)))
		cr_assert(strncmp(e->d_name, "ember-pool.", 11), "the pool's run directory %s/%s "
			  "outlived it", tmp, e->d_name);
	closedir(d);
	cr_assert_eq(ember_test_count_procs(golden.dir), 0, "VMs outlived the pool");
	proc_result_free(&r);
}

static int pool_connect(void)
{
	struct errbuf eb = { "" };
	int fd = invoke_pool_connect(sock, invoke_clock_ns() + CALL_MS * 1000000ull, &eb);

	cr_assert_geq(fd, 0, "%s", eb.msg);
	return fd;
}

/* One invocation on a pool connection; r is invoke_pool_call's result. */
static int call(int fd, uint64_t id, const void *p, size_t n, struct invoke_result *res,
		struct errbuf *eb)
{
	return invoke_pool_call(fd, id, p, (uint32_t)n, invoke_clock_ns() + CALL_MS * 1000000ull,
				res, eb);
}

/* A mix invocation on fd whose answer must be the golden heap's. */
static void mix_check(int fd, uint64_t id, const uint8_t *p, size_t n)
{
	struct invoke_result res;
	struct errbuf eb = { "" };
	uint8_t *want = malloc(n + 8);
	size_t wlen = fnt_mix(&golden, p, n, want);
	int r = call(fd, id, p, n, &res, &eb);

	cr_assert_eq(r, 0, "invocation %lu (%zu bytes): %s", (unsigned long)id, n, eb.msg);
	cr_assert_eq(res.status, INVOKE_OK, "invocation %lu: %s: %s", (unsigned long)id,
		     invoke_status_name(res.status), (const char *)res.payload);
	cr_assert_eq(res.payload_len, wlen);
	cr_assert(!memcmp(res.payload, want, wlen), "invocation %lu (%zu bytes): the answer is "
		  "not the golden heap's", (unsigned long)id, n);
	invoke_result_free(&res);
	free(want);
}

/* A sleep invocation through a fresh connection, as `ember invoke --pool` makes one. */
struct sleeper {
	pthread_t th;
	uint64_t ms;
	int r;
	struct invoke_result res;
	struct errbuf eb;
};

static void *sleeper_main(void *arg)
{
	struct sleeper *s = arg;
	struct invoke_opts o = { .pool = sock, .request_id = s->ms, .timeout_ms = CALL_MS };
	uint8_t le[8];

	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(s->ms >> (8 * i));
	s->r = invoke_once(&o, le, sizeof(le), &s->res, &s->eb);
	return NULL;
}

static void sleeper_start(struct sleeper *s, uint64_t ms)
{
	memset(s, 0, sizeof(*s));
	s->ms = ms;
	cr_assert_eq(pthread_create(&s->th, NULL, sleeper_main, s), 0);
}

/* Joins; the status it got (asserting that the exchange itself worked). */
static uint16_t sleeper_join(struct sleeper *s)
{
	uint16_t st;

	pthread_join(s->th, NULL);
	cr_assert_eq(s->r, 0, "sleep %lu: %s", (unsigned long)s->ms, s->eb.msg);
	st = s->res.status;
	if (st == INVOKE_OK) {
		cr_assert_eq(s->res.payload_len, 8);
		cr_assert_eq(s->res.payload[0] | s->res.payload[1] << 8, (int)s->ms);
	}
	return st;
}

/* ---- correctness ----------------------------------------------------------------------- */

Test(pool, thousand_random_invocations_are_answered_from_the_golden_heap)
{
	uint8_t *buf = malloc(64 << 10);
	uint64_t seed = 0x9001;
	struct proc *p = pool_start("3", MIX_PORT, NULL, NULL, NULL, NULL);
	int fd = -1;

	for (unsigned i = 0; i < 1000; i++) {
		size_t n = i == 0 ? 0 : i == 1 ? (64 << 10) : (size_t)(rnd(&seed) % ((64 << 10) + 1));

		/* 100 invocations per connection: each goes to whichever VM is idle */
		if (i % 100 == 0)
			fd = pool_connect();
		for (size_t k = 0; k < n; k++)
			buf[k] = (uint8_t)rnd(&seed);
		mix_check(fd, i, buf, n);
		if (i % 100 == 99)
			close(fd);
	}
	cr_assert_eq(stat_u64("invocations_ok"), 1000);
	cr_assert_eq(stat_u64("crashes") + stat_u64("reset_failures") + stat_u64("killed"), 0,
		     "VMs failed during plain invocations");
	pool_stop(p);
	free(buf);
}

struct client_job {
	pthread_t th;
	uint64_t seed;
	unsigned done;
	char err[600];
};

static void *client_main(void *arg)
{
	struct client_job *j = arg;
	struct errbuf eb = { "" };
	uint8_t *buf = malloc(16 << 10), *want = malloc((16 << 10) + 8);
	int fd = invoke_pool_connect(sock, invoke_clock_ns() + CALL_MS * 1000000ull, &eb);

	if (fd < 0) {
		snprintf(j->err, sizeof(j->err), "connect: %s", eb.msg);
		goto out;
	}
	for (unsigned i = 0; i < 25; i++) {
		size_t n = (size_t)(rnd(&j->seed) % (16 << 10)), wlen;
		struct invoke_result res;

		for (size_t k = 0; k < n; k++)
			buf[k] = (uint8_t)rnd(&j->seed);
		wlen = fnt_mix(&golden, buf, n, want);
		if (call(fd, i, buf, n, &res, &eb)) {
			snprintf(j->err, sizeof(j->err), "invocation %u: %s", i, eb.msg);
			break;
		}
		if (res.status != INVOKE_OK || res.payload_len != wlen ||
		    memcmp(res.payload, want, wlen)) {
			snprintf(j->err, sizeof(j->err), "invocation %u: status %s, %u bytes, %s", i,
				 invoke_status_name(res.status), res.payload_len,
				 res.status ? (const char *)res.payload : "wrong bytes");
			invoke_result_free(&res);
			break;
		}
		invoke_result_free(&res);
		j->done++;
	}
	close(fd);
out:
	free(buf);
	free(want);
	return NULL;
}

Test(pool, eight_concurrent_clients_on_two_vms_all_get_their_own_answers)
{
	struct proc *p = pool_start("2", MIX_PORT, NULL, NULL, NULL, NULL);
	struct client_job jobs[8];

	for (unsigned i = 0; i < 8; i++) {
		memset(&jobs[i], 0, sizeof(jobs[i]));
		jobs[i].seed = 77 + i;
		cr_assert_eq(pthread_create(&jobs[i].th, NULL, client_main, &jobs[i]), 0);
	}
	for (unsigned i = 0; i < 8; i++) {
		pthread_join(jobs[i].th, NULL);
		cr_expect_eq(jobs[i].done, 25, "client %u: %s", i, jobs[i].err);
	}
	cr_assert_eq(stat_u64("invocations_ok"), 200);
	cr_assert_eq(stat_u64("rejected_busy"), 0, "the queue (64) holds 8 clients");
	pool_stop(p);
}

Test(pool, ember_invoke_pool_prints_the_functions_answer)
{
	struct proc *p = pool_start("1", MIX_PORT, NULL, NULL, NULL, NULL);
	uint8_t in[3000], want[3008];
	struct proc_result r;
	uint64_t seed = 5;
	const char *file;

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)rnd(&seed);
	file = ember_test_write_file(tmp, "in.bin", in, sizeof(in));
	fnt_mix(&golden, in, sizeof(in), want);
	ember_test_run(&r, CALL_MS, "invoke", "--pool", sock, "--payload", file, NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "ember invoke exited %d:\n%s", r.status, r.err);
	cr_assert_eq(r.out_len, sizeof(want));
	cr_assert(!memcmp(r.out, want, sizeof(want)), "stdout is not the mix answer");
	proc_result_free(&r);
	pool_stop(p);
}

Test(pool, a_vm_is_retired_after_max_uses_and_replaced)
{
	struct proc *p = pool_start("1", MIX_PORT, "--max-uses", "2", NULL, NULL);
	uint8_t in[100] = { 1, 2, 3 };
	int fd = pool_connect();

	for (unsigned i = 0; i < 5; i++)
		mix_check(fd, i, in, sizeof(in));
	close(fd);
	wait_stat("retired", 2);
	cr_assert_geq(stat_u64("spawned"), 3);
	cr_assert_eq(stat_u64("crashes"), 0);
	pool_stop(p);
}

/* ---- failures ------------------------------------------------------------------------------ */

Test(pool, vm_killed_mid_invocation_answers_unavailable_and_is_replaced)
{
	struct proc *p = pool_start("2", SLEEP_PORT, NULL, NULL, NULL, NULL);
	struct sleeper s;
	pid_t victim;

	sleeper_start(&s, 20000);
	wait_stat("busy", 1);
	victim = vm_pid("busy");
	cr_assert_eq(kill(victim, SIGKILL), 0);
	cr_assert_eq(sleeper_join(&s), INVOKE_UNAVAILABLE, "got %s",
		     invoke_status_name(s.res.status));
	cr_assert(strstr((const char *)s.res.payload, "failed"), "the message: %s",
		  (const char *)s.res.payload);
	invoke_result_free(&s.res);
	/* the pool goes on: the other VM, then the replacement */
	for (unsigned i = 0; i < 4; i++) {
		sleeper_start(&s, i);
		cr_assert_eq(sleeper_join(&s), INVOKE_OK, "after the kill: %s: %s",
			     invoke_status_name(s.res.status), (const char *)s.res.payload);
		invoke_result_free(&s.res);
	}
	cr_assert_eq(stat_u64("crashes"), 1);
	cr_assert_geq(stat_u64("respawned"), 1);
	cr_assert_eq(stat_u64("invocations_unavailable"), 1);
	wait_stat("idle", 2);
	pool_stop(p);
}

Test(pool, hung_function_is_killed_at_the_timeout_and_its_client_gets_unavailable)
{
	struct proc *p = pool_start("1", SLEEP_PORT, "--timeout-ms", "1000", NULL, NULL);
	struct sleeper s;

	sleeper_start(&s, 20000);
	cr_assert_eq(sleeper_join(&s), INVOKE_UNAVAILABLE, "got %s",
		     invoke_status_name(s.res.status));
	cr_assert(strstr((const char *)s.res.payload, "did not answer within --timeout-ms 1000"),
		  "the message: %s", (const char *)s.res.payload);
	invoke_result_free(&s.res);
	cr_assert_eq(stat_u64("timeouts"), 1);
	cr_assert_eq(stat_u64("killed"), 1);
	sleeper_start(&s, 1);
	cr_assert_eq(sleeper_join(&s), INVOKE_OK);
	invoke_result_free(&s.res);
	pool_stop(p);
}

Test(pool, sigterm_lets_invocations_in_flight_finish_then_exits_clean)
{
	struct proc *p = pool_start("2", SLEEP_PORT, NULL, NULL, NULL, NULL);
	struct sleeper s[2];

	sleeper_start(&s[0], 1500);
	sleeper_start(&s[1], 1500);
	wait_stat("busy", 2);
	pool_stop(p); /* SIGTERM while both are in flight */
	for (unsigned i = 0; i < 2; i++) {
		cr_assert_eq(sleeper_join(&s[i]), INVOKE_OK, "in flight at SIGTERM: %s: %s",
			     invoke_status_name(s[i].res.status), (const char *)s[i].res.payload);
		invoke_result_free(&s[i].res);
	}
}

Test(pool, queued_invocations_get_shutting_down_at_sigterm)
{
	struct proc *p = pool_start("1", SLEEP_PORT, NULL, NULL, NULL, NULL);
	struct sleeper busy, queued;

	sleeper_start(&busy, 1500);
	wait_stat("busy", 1);
	sleeper_start(&queued, 1);
	wait_stat("queued", 1);
	pool_stop(p);
	cr_assert_eq(sleeper_join(&busy), INVOKE_OK);
	cr_assert_eq(sleeper_join(&queued), INVOKE_SHUTTING_DOWN, "got %s",
		     invoke_status_name(queued.res.status));
	invoke_result_free(&busy.res);
	invoke_result_free(&queued.res);
}

Test(pool, full_queue_answers_busy_and_the_waiting_ones_are_served)
{
	struct proc *p = pool_start("1", SLEEP_PORT, "--queue", "1", NULL, NULL);
	struct sleeper busy, queued, rejected;
	struct proc_result r;

	sleeper_start(&busy, 1500);
	wait_stat("busy", 1);
	sleeper_start(&queued, 2);
	wait_stat("queued", 1);
	sleeper_start(&rejected, 3);
	cr_assert_eq(sleeper_join(&rejected), INVOKE_BUSY, "got %s",
		     invoke_status_name(rejected.res.status));
	cr_assert(strstr((const char *)rejected.res.payload, "busy"), "%s",
		  (const char *)rejected.res.payload);
	/* the command line says so too, exit 4 */
	ember_test_run(&r, CALL_MS, "invoke", "--pool", sock, NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 4, "exit %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.err, "the pool answered BUSY (5)"), "%s", r.err);
	proc_result_free(&r);
	cr_assert_eq(sleeper_join(&busy), INVOKE_OK);
	cr_assert_eq(sleeper_join(&queued), INVOKE_OK);
	cr_assert_eq(stat_u64("rejected_busy"), 2);
	invoke_result_free(&busy.res);
	invoke_result_free(&queued.res);
	invoke_result_free(&rejected.res);
	pool_stop(p);
}

/* ---- bad requests --------------------------------------------------------------------------- */

/* Reads one response frame from fd (blocking, 30 s), payload NUL-terminated in msg. */
static uint16_t read_response(int fd, uint64_t id, char *msg, size_t cap)
{
	uint8_t hdr[INVOKE_HDR_SIZE];
	struct errbuf eb = { "" };
	size_t got = 0;
	uint16_t status;
	uint32_t len;
	struct timeval tv = { 30, 0 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (got < sizeof(hdr)) {
		ssize_t n = recv(fd, hdr + got, sizeof(hdr) - got, 0);

		cr_assert_gt(n, 0, "no response header: %s", n ? strerror(errno) : "closed");
		got += (size_t)n;
	}
	cr_assert_eq(invoke_check_response_header(hdr, id, INVOKE_MAX_STATUS, &status, &len, &eb),
		     0, "%s", eb.msg);
	cr_assert_lt(len, cap);
	for (got = 0; got < len;) {
		ssize_t n = recv(fd, msg + got, len - got, 0);

		cr_assert_gt(n, 0);
		got += (size_t)n;
	}
	msg[len] = 0;
	return status;
}

/* A blocking connection with a 30 s receive timeout. */
static int raw_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	strcpy(sa.sun_path, sock);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
	return fd;
}

static void assert_closed_by_pool(int fd)
{
	char b;

	cr_assert_eq(recv(fd, &b, 1, 0), 0, "the pool kept a connection whose framing is lost");
}

Test(pool, malformed_header_gets_bad_request_and_the_pool_keeps_serving)
{
	struct proc *p = pool_start("1", MIX_PORT, NULL, NULL, NULL, NULL);
	uint8_t hdr[INVOKE_HDR_SIZE], in[10] = { 9 };
	char msg[2048];
	int fd = raw_connect();

	invoke_put_request_header(hdr, 42, 0);
	memcpy(hdr, "XMBQ", 4);
	cr_assert_eq(send(fd, hdr, sizeof(hdr), MSG_NOSIGNAL), (ssize_t)sizeof(hdr));
	cr_assert_eq(read_response(fd, 42, msg, sizeof(msg)), INVOKE_BAD_REQUEST);
	cr_assert(strstr(msg, "bad magic"), "%s", msg);
	assert_closed_by_pool(fd);
	close(fd);

	fd = raw_connect();
	invoke_put_request_header(hdr, 43, 0);
	hdr[4] = 2; /* version 2 */
	cr_assert_eq(send(fd, hdr, sizeof(hdr), MSG_NOSIGNAL), (ssize_t)sizeof(hdr));
	cr_assert_eq(read_response(fd, 43, msg, sizeof(msg)), INVOKE_UNSUPPORTED_VERSION);
	assert_closed_by_pool(fd);
	close(fd);

	fd = pool_connect();
	mix_check(fd, 1, in, sizeof(in));
	close(fd);
	cr_assert_eq(stat_u64("rejected_invalid"), 2);
	pool_stop(p);
}

Test(pool, oversized_payload_gets_too_large_and_the_connection_keeps_serving)
{
	struct proc *p = pool_start("1", MIX_PORT, "--max-payload", "65536", NULL, NULL);
	size_t n = 100000;
	uint8_t *big = calloc(1, INVOKE_HDR_SIZE + n), small[64] = { 7 };
	char msg[2048];
	int fd = raw_connect();

	invoke_put_request_header(big, 5, (uint32_t)n);
	cr_assert_eq(send(fd, big, INVOKE_HDR_SIZE + n, MSG_NOSIGNAL), (ssize_t)(INVOKE_HDR_SIZE + n));
	cr_assert_eq(read_response(fd, 5, msg, sizeof(msg)), INVOKE_TOO_LARGE);
	cr_assert(strstr(msg, "--max-payload 65536"), "%s", msg);
	/* the payload was read and dropped: the same connection is still framed */
	mix_check(fd, 6, small, sizeof(small));
	close(fd);

	/* past the protocol's own 16 MiB: answered at once, then closed */
	fd = raw_connect();
	invoke_put_request_header(big, 7, INVOKE_MAX_PAYLOAD + 1);
	cr_assert_eq(send(fd, big, INVOKE_HDR_SIZE, MSG_NOSIGNAL), INVOKE_HDR_SIZE);
	cr_assert_eq(read_response(fd, 7, msg, sizeof(msg)), INVOKE_TOO_LARGE);
	assert_closed_by_pool(fd);
	close(fd);
	cr_assert_eq(stat_u64("rejected_invalid"), 2);
	cr_assert_eq(stat_u64("invocations_ok"), 1);
	free(big);
	pool_stop(p);
}

Test(pool, control_frame_with_a_bad_length_gets_an_error_and_is_closed)
{
	struct proc *p = pool_start("1", MIX_PORT, NULL, NULL, NULL, NULL);
	uint8_t frame[4] = { 0, 0x10, 0, 0 }; /* 1 MiB */
	uint8_t resp[256];
	int fd = raw_connect();
	ssize_t n;

	cr_assert_eq(send(fd, frame, 4, MSG_NOSIGNAL), 4);
	n = recv(fd, resp, sizeof(resp), MSG_WAITALL);
	cr_assert_gt(n, 4);
	resp[n] = 0;
	cr_assert(memmem(resp, (size_t)n, "frame length must be 1..65536", 29), "no error message");
	close(fd);
	cr_assert_eq(stat_u64("idle"), 1, "the pool still answers");
	pool_stop(p);
}

/* ---- the socket and the status ------------------------------------------------------------- */

Test(pool, socket_is_private_and_a_live_one_is_not_taken_over)
{
	struct proc *p = pool_start("1", MIX_PORT, NULL, NULL, NULL, NULL);
	struct proc_result r;
	struct stat st;

	cr_assert_eq(stat(sock, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
	ember_test_run(&r, WAIT_MS, "pool", "--snapshot", golden.dir, "--socket", sock, NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "a second pool on a live socket exited %d", r.status);
	cr_assert(strstr(r.err, "another process is serving this socket"), "%s", r.err);
	proc_result_free(&r);
	cr_assert_eq(stat_u64("idle"), 1, "the first pool still answers");
	pool_stop(p);
}

Test(pool, stale_socket_file_is_replaced)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct proc *p;

	strcpy(sa.sun_path, sock);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd); /* a socket file nobody listens on, as a killed pool leaves */
	p = pool_start("1", MIX_PORT, NULL, NULL, NULL, NULL);
	pool_stop(p);
}

Test(pool, status_json_is_one_valid_object_with_every_documented_key)
{
	static const char *const keys[] = {
		"\"ok\":true", "\"state\":\"serving\"", "\"size\":2", "\"idle\":2", "\"busy\":",
		"\"starting\":", "\"resetting\":", "\"queued\":", "\"invocations_ok\":1",
		"\"invocations_error\":", "\"invocations_unavailable\":", "\"rejected_busy\":",
		"\"resets\":", "\"reset_failures\":", "\"retired\":", "\"respawned\":",
		"\"crashes\":", "\"latency_us_p50\":", "\"latency_us_p90\":", "\"latency_us_p99\":",
		"\"latency_us_max\":", "\"reset_us_p50\":", "\"reset_us_p99\":", "\"vms\":[{\"id\":",
	};
	struct proc *p = pool_start("2", MIX_PORT, NULL, NULL, NULL, NULL);
	uint8_t in[16] = { 1 };
	struct proc_result r;
	int fd = pool_connect();

	mix_check(fd, 1, in, sizeof(in));
	close(fd);
	wait_stat("idle", 2);
	ember_test_run(&r, WAIT_MS, "pool", "status", "--socket", sock, "--json", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_eq(r.out[0], '{');
	cr_assert_eq(strchr(r.out, '\n'), r.out + r.out_len - 1, "not one line: %s", r.out);
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		cr_expect(strstr(r.out, keys[i]), "no %s in %s", keys[i], r.out);
	if (access("/usr/bin/python3", X_OK) == 0) {
		char *argv[] = { "/usr/bin/python3", "-m", "json.tool", NULL };
		struct proc_result j;

		cr_assert_eq(proc_run_input(argv, r.out, r.out_len, WAIT_MS, &j), 0);
		cr_assert_eq(j.status, 0, "python3 -m json.tool refuses it:\n%s\n%s", j.err, r.out);
		proc_result_free(&j);
	} else {
		cr_log_info("SKIP part: no /usr/bin/python3 to parse the JSON (checked by hand)");
	}
	proc_result_free(&r);
	ember_test_run(&r, WAIT_MS, "pool", "status", "--socket", sock, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "state: serving\n") && strstr(r.out, "invocations_ok: 1\n"),
		  "%s", r.out);
	proc_result_free(&r);
	pool_stop(p);
}

/* ---- seccomp (README, "Seccomp") -------------------------------------------------------- */

#ifdef EMBER_NO_SECCOMP
#define WANT_SECCOMP 0 /* sanitizer builds: README, "Seccomp" */
#else
#define WANT_SECCOMP 2 /* SECCOMP_MODE_FILTER */
#endif

/* /proc/PID/status's Seccomp: and Seccomp_filters: (its main thread's). */
static void seccomp_of(pid_t pid, int *mode, int *filters)
{
	char path[64], line[256];
	FILE *f;

	*mode = *filters = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "Seccomp: %d", mode);
		sscanf(line, "Seccomp_filters: %d", filters);
	}
	fclose(f);
}

/* The pool's child named ember-spawner (its only child that is not a VM). */
static pid_t spawner_of(pid_t pool)
{
	char path[300], comm[32];
	pid_t found = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;

	cr_assert_not_null(d);
	while (!found && (e = readdir(d))) {
		char stat[512], *rp;
		int ppid = 0;
		FILE *f;

		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		stat[0] = 0;
		if (!fgets(stat, sizeof(stat), f))
			stat[0] = 0;
		fclose(f);
		rp = strrchr(stat, ')');
		if (!rp || sscanf(rp, ") %*c %d", &ppid) != 1 || ppid != pool)
			continue;
		if (sscanf(stat, "%*d (%31[^)])", comm) == 1 && !strcmp(comm, "ember-spawner"))
			found = (pid_t)atoi(e->d_name);
	}
	closedir(d);
	cr_assert_gt(found, 0, "the pool (pid %d) has no ember-spawner child", (int)pool);
	return found;
}

Test(pool, the_pool_process_runs_under_its_own_filter_and_its_vms_do_not_inherit_it)
{
	struct proc *p = pool_start("1", MIX_PORT, NULL, NULL, NULL, NULL);
	pid_t vm = vm_pid("idle");
	int mode, filters;
	uint8_t in[32] = "filtered";
	int fd;

	/* an invocation first: the filter is on while the pool serves */
	fd = pool_connect();
	mix_check(fd, 1, in, sizeof(in));
	close(fd);
	seccomp_of(proc_pid(p), &mode, &filters);
	cr_assert_eq(mode, WANT_SECCOMP, "the pool process: Seccomp: %d", mode);
#ifndef EMBER_NO_SECCOMP
	cr_assert_eq(filters, 1, "the pool process: Seccomp_filters: %d", filters);
#endif
	/* the spawner forks the VMs unfiltered: each VM has its own filter, not the pool's */
	seccomp_of(spawner_of(proc_pid(p)), &mode, &filters);
	cr_assert_eq(mode, 0, "the spawner: Seccomp: %d", mode);
	seccomp_of(vm, &mode, &filters);
	cr_assert_eq(mode, WANT_SECCOMP, "the VM: Seccomp: %d", mode);
#ifndef EMBER_NO_SECCOMP
	cr_assert_eq(filters, 1, "the VM's main thread: Seccomp_filters: %d (the pool's "
		     "inherited?)", filters);
#endif
	pool_stop(p);
}

Test(pool, a_forbidden_call_in_the_pool_process_kills_it_and_its_vms)
{
	struct proc_result r;

#ifdef EMBER_NO_SECCOMP
	cr_skip_test("sanitizer build: no seccomp filters to break (README, \"Seccomp\")");
#endif
	cr_assert_eq(setenv("EMBER_SECCOMP_PROBE", "pool", 1), 0);
	ember_test_run(&r, WAIT_MS, "pool", "--snapshot", golden.dir, "--socket", sock, "--size",
		       "1", "--port", MIX_PORT, NULL);
	unsetenv("EMBER_SECCOMP_PROBE");
	cr_assert(!r.timed_out, "the pool was not killed:\n%s", r.err);
	cr_assert_eq(r.signal, SIGSYS, "the pool ended with status %d, signal %d:\n%s", r.status,
		     r.signal, r.err);
	proc_result_free(&r);
	/* the spawner dies with the pool, its VMs with the spawner */
	for (unsigned waited = 0; ember_test_count_procs(golden.dir) && waited < WAIT_MS;
	     waited += 10)
		sleep_ms(10);
	cr_assert_eq(ember_test_count_procs(golden.dir), 0, "VMs outlived the killed pool");
}

Test(pool, a_vm_that_fails_to_start_has_its_log_tail_on_the_pools_stderr)
{
	char empty[PATH_MAX];
	struct proc_result r;

	snapt_join(empty, tmp, "not-a-snapshot");
	cr_assert_eq(mkdir(empty, 0700), 0);
	ember_test_run(&r, WAIT_MS, "pool", "--snapshot", empty, "--socket", sock, "--size", "1",
		       "--port", MIX_PORT, NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "the pool exited %d:\n%s", r.status, r.err);
	/* the log is read through the fd the spawner passed: the pool opens no files */
	cr_assert(strstr(r.err, "pool: vm 1: | ember: error: snapshot"), "%s", r.err);
	cr_assert(strstr(r.err, "giving up"), "%s", r.err);
	cr_assert_eq(access(sock, F_OK), -1, "the pool's socket %s outlived it", sock);
	proc_result_free(&r);
}
