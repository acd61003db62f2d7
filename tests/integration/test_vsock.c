/*
 * The invocation channel end to end on real KVM: the fn guest's golden snapshot,
 * restored clones invoked through their hybrid vsock sockets (INVOCATION.md), every
 * answer recomputed on the host from the snapshot's memory file.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "testlib.h"

#define HEAP_MIB 16
#define MEM_MIB  128
#define FN_PORT  5000

static char tmp[PATH_MAX];
static struct fnt_golden golden;

static void setup(void)
{
	fnt_suite_setup(&golden, tmp, sizeof(tmp), HEAP_MIB, MEM_MIB);
}

static void teardown(void)
{
	fnt_suite_teardown(&golden, tmp);
}

TestSuite(vsock, .init = setup, .fini = teardown, .timeout = 120);

/* xorshift: the tests' payloads, reproducible from the seed in a failure message */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* 1 B .. 1 MiB, spread evenly over the powers of two */
static size_t random_len(uint64_t *s)
{
	unsigned bits = (unsigned)(rnd(s) % 21);

	return 1 + (size_t)(rnd(s) % (1ull << bits));
}

static void fill_random(uint8_t *p, size_t n, uint64_t *s)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd(s);
}

static void stop(struct proc *p, struct proc_result *r)
{
	kill(proc_pid(p), SIGTERM);
	cr_assert_eq(proc_finish(p, 10000, r), 0);
	ember_test_assert_no_crash(r);
}

Test(vsock, restored_clone_answers_100_random_invocations_from_the_golden_heap)
{
	uint8_t *buf = malloc(1 << 20);
	char uds[PATH_MAX];
	struct proc_result r;
	uint64_t seed = 0x5eed;
	struct proc *p;
	int fd = -1;

	snapt_join(uds, tmp, "clone.sock");
	p = fnt_restore(golden.dir, uds, NULL);
	for (unsigned i = 0; i < 100; i++) {
		size_t n = i == 0 ? 1 : i == 1 ? (1 << 20) : random_len(&seed);

		/* ten invocations per connection (fn serves one connection at a time) */
		if (i % 10 == 0)
			fd = fnt_connect(uds, FN_PORT);
		fill_random(buf, n, &seed);
		fnt_invoke_check(&golden, fd, i, buf, n);
		if (i % 10 == 9)
			close(fd);
	}
	stop(p, &r);
	cr_assert_eq(r.status, 128 + SIGTERM, "ember exited %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.out, "fn: restored generation="), "%s", r.out);
	cr_assert_eq(access(uds, F_OK), -1, "the clone's socket %s outlived it", uds);
	proc_result_free(&r);
	free(buf);
}

struct clone_job {
	char uds[PATH_MAX];
	uint64_t seed;
	unsigned failures;
};

static void *invoke_clone(void *arg)
{
	struct clone_job *j = arg;
	uint8_t *buf = malloc(256 << 10);
	struct errbuf eb = { "" };

	for (unsigned i = 0; buf && i < 5; i++) {
		struct invoke_opts o = { .uds = j->uds, .port = FN_PORT, .request_id = i,
					 .timeout_ms = 20000 };
		struct invoke_result res = { 0 };
		size_t n = 1 + (size_t)(rnd(&j->seed) % (256 << 10)), wlen;
		uint8_t *want = malloc(n + 8);

		fill_random(buf, n, &j->seed);
		wlen = fnt_mix(&golden, buf, n, want);
		if (invoke_once(&o, buf, (uint32_t)n, &res, &eb) || res.status != INVOKE_OK ||
		    res.payload_len != wlen || memcmp(res.payload, want, wlen))
			j->failures++;
		invoke_result_free(&res);
		free(want);
	}
	free(buf);
	return NULL;
}

Test(vsock, ten_clones_invoked_concurrently_each_through_its_own_socket)
{
	struct clone_job jobs[10];
	pthread_t th[10];
	struct proc *p[10];

	for (unsigned i = 0; i < 10; i++) {
		snapt_join(jobs[i].uds, tmp, "c%u.sock", i);
		jobs[i].seed = 1000 + i;
		jobs[i].failures = 0;
		p[i] = fnt_restore(golden.dir, jobs[i].uds, NULL);
	}
	for (unsigned i = 0; i < 10; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, invoke_clone, &jobs[i]), 0);
	for (unsigned i = 0; i < 10; i++)
		pthread_join(th[i], NULL);
	for (unsigned i = 0; i < 10; i++) {
		struct proc_result r;

		stop(p[i], &r);
		cr_expect_eq(jobs[i].failures, 0, "clone %u: %u of 5 invocations failed:\n%s", i,
			     jobs[i].failures, r.err);
		proc_result_free(&r);
	}
}

/* A host listener at PATH_<port>, as guest-initiated connections find it. */
static int listen_at(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_lt(strlen(path), sizeof(sa.sun_path));
	strcpy(sa.sun_path, path);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
	cr_assert_eq(listen(fd, 4), 0);
	return fd;
}

Test(vsock, guest_initiated_connection_reaches_the_host_listener)
{
	char uds[PATH_MAX], host[PATH_MAX + 16], line[128] = "";
	struct timeval tv = { 10, 0 };
	struct proc_result r;
	struct proc *p;
	int lfd, c;
	ssize_t n;

	snapt_join(uds, tmp, "dial.sock");
	snprintf(host, sizeof(host), "%s_7000", uds);
	lfd = listen_at(host);
	p = fnt_restore(golden.dir, uds, "--guest-cmd", "dial 7000", "--guest-cmd", "exit", NULL);
	setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	c = accept(lfd, NULL, NULL);
	cr_assert_geq(c, 0, "the guest never connected to host port 7000: %s", strerror(errno));
	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	n = recv(c, line, sizeof(line) - 1, 0);
	cr_assert_gt(n, 0);
	cr_assert(!strncmp(line, "hello from fn ", 14), "the guest sent '%s'", line);
	cr_assert_eq(send(c, "pong from host\n", 15, MSG_NOSIGNAL), 15);
	cr_assert_eq(proc_finish(p, 20000, &r), 0);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "ember exited %d:\n%s", r.status, r.err);
	cr_assert(strstr(r.out, "dial: pong from host"), "guest output:\n%s", r.out);
	proc_result_free(&r);
	close(c);
	close(lfd);
}

Test(vsock, guest_connection_to_a_port_nobody_serves_is_refused)
{
	char uds[PATH_MAX];
	struct proc_result r;

	snapt_join(uds, tmp, "refused.sock");
	/* run to its end: the guest exits on its own, and a wait for the vsock socket
	 * (fnt_restore) could start after ember had already removed it */
	ember_test_run(&r, 20000, "restore", "--snapshot", golden.dir, "--vsock-uds", uds,
		       "--guest-cmd", "dial 7001", "--guest-cmd", "exit", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "ember exited %d:\n%s", r.status, r.err);
	/* an RST answering a REQUEST: ECONNRESET, as Linux reports it */
	cr_assert(strstr(r.out, "dial: error connect: connection reset"), "guest output:\n%s",
		  r.out);
	proc_result_free(&r);
}

static void wait_output(struct proc *p, const char *needle)
{
	cr_assert(proc_wait_output(p, needle, 20000), "no '%s' from ember", needle);
}

Test(vsock, snapshot_with_an_open_connection_restores_with_the_connection_reset)
{
	char sock[PATH_MAX], sock2[PATH_MAX], uds[PATH_MAX], uds2[PATH_MAX], snap[PATH_MAX];
	uint8_t payload[300];
	struct proc_result r;
	uint64_t seed = 42;
	struct proc *orig, *clone;
	int fd, fd2;

	snapt_join(sock, tmp, "api.sock");
	snapt_join(sock2, tmp, "api2.sock");
	snapt_join(uds, tmp, "orig.sock");
	snapt_join(uds2, tmp, "clone2.sock");
	snapt_join(snap, tmp, "with-conn");
	orig = fnt_restore(golden.dir, uds, "--api-sock", sock, NULL);
	snapt_wait_socket(sock, SNAPT_RUN_MS);
	fill_random(payload, sizeof(payload), &seed);
	fd = fnt_connect(uds, FN_PORT);
	fnt_invoke_check(&golden, fd, 1, payload, sizeof(payload));

	snapt_ctl(&r, sock, "snapshot", snap, NULL);
	cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
	proc_result_free(&r);
	/* the original VM keeps its connection across the snapshot */
	fnt_invoke_check(&golden, fd, 2, payload, sizeof(payload));

	/* the clone starts with that connection reset, its listeners alive */
	clone = fnt_restore(snap, uds2, "--api-sock", sock2, NULL);
	snapt_wait_socket(sock2, SNAPT_RUN_MS);
	fd2 = fnt_connect(uds2, FN_PORT);
	fnt_invoke_check(&golden, fd2, 3, payload, sizeof(payload));
	fnt_guest_cmd(sock2, "stats");
	wait_output(clone, "fn: served=");
	close(fd2);
	close(fd);
	stop(clone, &r);
	/* the original had served 1 before the snapshot and seen one reset (its own
	 * restore); the clone one more of each */
	cr_assert(strstr(r.out, "fn: served=2 resets=2"), "clone's output:\n%s", r.out);
	proc_result_free(&r);
	stop(orig, &r);
	proc_result_free(&r);
}

static void ctl_ok(const char *sock, const char *verb, const char *arg, const char *flag)
{
	struct proc_result r;

	snapt_ctl(&r, sock, verb, arg, flag, NULL);
	cr_assert_eq(r.status, 0, "ctl %s: %s%s", verb, r.out, r.err);
	proc_result_free(&r);
}

Test(vsock, diff_snapshot_holds_the_pages_the_device_wrote)
{
	char sock[PATH_MAX], uds[PATH_MAX], s1[PATH_MAX], s2[PATH_MAX], s3[PATH_MAX],
		merged[PATH_MAX], m1[PATH_MAX + 16], m2[PATH_MAX + 16];
	uint8_t *payload = malloc(60 << 10);
	struct proc_result r;
	uint64_t seed = 7;
	struct proc *p;
	int fd;

	snapt_join(sock, tmp, "api.sock");
	snapt_join(uds, tmp, "diff.sock");
	snapt_join(s1, tmp, "s1");
	snapt_join(s2, tmp, "s2");
	snapt_join(s3, tmp, "s3");
	snapt_join(merged, tmp, "merged");
	p = fnt_restore(golden.dir, uds, "--api-sock", sock, NULL);
	snapt_wait_socket(sock, SNAPT_RUN_MS);
	ctl_ok(sock, "snapshot", s1, NULL);
	/* the device writes ~15 pages of receive buffers the guest only reads */
	fill_random(payload, 60 << 10, &seed);
	fd = fnt_connect(uds, FN_PORT);
	fnt_invoke_check(&golden, fd, 1, payload, 60 << 10);
	ctl_ok(sock, "pause", NULL, NULL);
	ctl_ok(sock, "snapshot", s2, "--diff");
	ctl_ok(sock, "snapshot", s3, NULL);
	ctl_ok(sock, "resume", NULL, NULL);
	snapt_tool(&r, SNAPT_RUN_MS, "merge", s1, s2, merged, NULL);
	cr_assert_eq(r.status, 0, "merge: %s%s", r.out, r.err);
	proc_result_free(&r);
	/* s1 + the diff must be exactly the VM as s3 saw it, device writes included */
	snprintf(m1, sizeof(m1), "%s/memory.raw", merged);
	snprintf(m2, sizeof(m2), "%s/memory.raw", s3);
	cr_assert(snapt_files_equal(m1, m2), "merged s1+s2 differs from s3: the diff misses "
		  "pages ember wrote");
	close(fd);
	stop(p, &r);
	proc_result_free(&r);
	free(payload);
}

Test(vsock, every_clone_reads_its_own_entropy_from_virtio_rng)
{
	char uds[2][PATH_MAX], rng[2][80];
	struct proc_result r;

	for (unsigned i = 0; i < 2; i++) {
		const char *line;

		snapt_join(uds[i], tmp, "rng%u.sock", i);
		/* to its end, not through fnt_restore: see ..._is_refused */
		ember_test_run(&r, 20000, "restore", "--snapshot", golden.dir, "--vsock-uds",
			       uds[i], "--guest-cmd", "rng", "--guest-cmd", "exit", NULL);
		ember_test_assert_no_crash(&r);
		cr_assert_eq(r.status, 0, "%s", r.err);
		line = proc_find_line(r.out, "rng=", rng[i], sizeof(rng[i]));
		cr_assert_not_null(line, "no rng= line:\n%s", r.out);
		cr_assert_eq(strlen(rng[i]), 4 + 64, "%s", rng[i]);
		cr_assert_str_neq(rng[i] + 4, "0000000000000000000000000000000000000000000000000000000000000000");
		proc_result_free(&r);
	}
	cr_assert_str_neq(rng[0], rng[1], "two clones read the same bytes from virtio-rng");
}

/* CPU time (user + system) of a process so far, in clock ticks. */
static unsigned long cpu_ticks(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	cr_assert_not_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	p = strrchr(buf, ')'); /* the command name may hold spaces */
	cr_assert_not_null(p);
	cr_assert_eq(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st), 2);
	return ut + st;
}

/*
 * Not a benchmark: a guest that polled for work (the 2 ms WAIT of old, or a spinning
 * vsock driver) would burn most of a CPU here, a parked one next to none.
 */
Test(vsock, an_idle_clone_parks_its_vcpu_and_still_answers_at_once)
{
	struct timespec second = { 1, 0 };
	uint8_t payload[64] = { 1, 2, 3 };
	char uds[PATH_MAX];
	struct proc_result r;
	unsigned long t0, t1;
	struct proc *p;
	int fd;

	snapt_join(uds, tmp, "idle.sock");
	p = fnt_restore(golden.dir, uds, NULL);
	fd = fnt_connect(uds, FN_PORT);
	fnt_invoke_check(&golden, fd, 1, payload, sizeof(payload));
	nanosleep(&second, NULL); /* the guest goes idle with the connection open */
	t0 = cpu_ticks(proc_pid(p));
	nanosleep(&second, NULL);
	t1 = cpu_ticks(proc_pid(p));
	cr_expect_leq(t1 - t0, sysconf(_SC_CLK_TCK) / 10, "an idle clone used %lu ticks of %ld "
		      "in one second", t1 - t0, sysconf(_SC_CLK_TCK));
	fnt_invoke_check(&golden, fd, 2, payload, sizeof(payload));
	close(fd);
	stop(p, &r);
	proc_result_free(&r);
}

Test(vsock, restore_without_a_vsock_socket_still_runs_the_guest)
{
	struct proc_result r;

	ember_test_run(&r, SNAPT_RUN_MS, "restore", "--snapshot", golden.dir, "--guest-cmd",
		       "verify", "--guest-cmd", "exit", "--console", "stdio", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_eq(snapt_checksum(r.out, 0), golden.checksum, "%s", r.out);
	proc_result_free(&r);
}

Test(vsock, restore_with_another_cid_than_the_snapshot_is_refused)
{
	char uds[PATH_MAX];
	struct proc_result r;

	snapt_join(uds, tmp, "cid.sock");
	ember_test_run(&r, SNAPT_RUN_MS, "restore", "--snapshot", golden.dir, "--vsock-cid", "4",
		       "--vsock-uds", uds, "--guest-cmd", "exit", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "%s", r.err);
	cr_assert(strstr(r.err, "--vsock-cid 4: the snapshot's guest has CID 3"), "%s", r.err);
	cr_assert_eq(access(uds, F_OK), -1, "a refused restore left %s", uds);
	proc_result_free(&r);
}

Test(vsock, a_second_ember_cannot_take_over_a_live_vsock_socket)
{
	char uds[PATH_MAX];
	struct proc_result r, r2;
	struct proc *p;

	snapt_join(uds, tmp, "taken.sock");
	p = fnt_restore(golden.dir, uds, NULL);
	ember_test_run(&r2, SNAPT_RUN_MS, "restore", "--snapshot", golden.dir, "--vsock-uds", uds,
		       "--guest-cmd", "exit", NULL);
	ember_test_assert_no_crash(&r2);
	cr_assert_eq(r2.status, 1, "%s", r2.err);
	cr_assert(strstr(r2.err, "another process serves it"), "%s", r2.err);
	/* and the first one still answers */
	close(fnt_connect(uds, FN_PORT));
	stop(p, &r);
	proc_result_free(&r);
	proc_result_free(&r2);
}

/* ---- a hostile guest ------------------------------------------------------------------ */

static const char *const vqbad_cases[] = {
	"desc-loop", "self-loop", "head-oob", "next-oob", "addr-outside-ram", "addr-hole",
	"addr-overflow", "huge-len", "avail-jump", "qsize-0", "qsize-npot", "qsize-over-max",
	"notify-before-ok", "rng-readonly", "features-unoffered", "indirect",
	"vsock-rx-readonly", "config-write", "vsock-tx-len", "vsock-wrong-cid",
	"vsock-spoof-cid", "credit-violation",
};

Test(vsock, a_guest_feeding_malformed_rings_leaves_ember_serving)
{
	char uds[PATH_MAX], host[PATH_MAX + 16], cmdline[64], want[96];
	int lfd;

	snapt_join(uds, tmp, "bad.sock");
	snprintf(host, sizeof(host), "%s_5555", uds);
	/* credit-violation sends beyond its credit to a host listener */
	lfd = listen_at(host);

	for (size_t i = 0; i < ARRAY_SIZE(vqbad_cases); i++) {
		struct proc_result r;

		snprintf(cmdline, sizeof(cmdline), "case=%s", vqbad_cases[i]);
		ember_test_run(&r, SNAPT_RUN_MS, "boot", "--kernel", ember_test_guest("vqbad"),
			       "--cmdline", cmdline, "--mem", "64", "--vsock-cid", "3", "--vsock-uds",
			       uds, "--timeout", "20", NULL);
		ember_test_assert_no_crash(&r);
		cr_expect_eq(r.status, 0, "case %s: ember exited %d:\n%s%s", vqbad_cases[i], r.status,
			     r.out, r.err);
		snprintf(want, sizeof(want), "vqbad: %s healthy", vqbad_cases[i]);
		cr_expect(strstr(r.out, want), "case %s:\n%s%s", vqbad_cases[i], r.out, r.err);
		proc_result_free(&r);
	}
	close(lfd);
}

/*
 * The driver's reset arrives on a vCPU thread, which seccomp keeps from closing files:
 * the host sockets of the connections it ends must still close (on the device thread).
 */
Test(vsock, a_guest_driver_reset_closes_the_host_end_of_its_connections)
{
	char sock[PATH_MAX], uds[PATH_MAX], c;
	uint8_t payload[32] = { 9 };
	struct proc_result r;
	struct proc *p;
	int fd;

	snapt_join(sock, tmp, "api.sock");
	snapt_join(uds, tmp, "reinit.sock");
	p = fnt_restore(golden.dir, uds, "--api-sock", sock, NULL);
	snapt_wait_socket(sock, SNAPT_RUN_MS);
	fd = fnt_connect(uds, FN_PORT);
	fnt_invoke_check(&golden, fd, 1, payload, sizeof(payload));
	fnt_guest_cmd(sock, "reinit");
	wait_output(p, "fn: vsock reinit");
	/* the client's socket is non-blocking: wait for the end, then read it */
	cr_assert_eq(poll(&(struct pollfd){ .fd = fd, .events = POLLIN }, 1, 5000), 1,
		     "the host end stayed open after the guest's reset");
	cr_assert_eq(recv(fd, &c, 1, 0), 0, "the host end stayed open after the guest's reset: %s",
		     strerror(errno));
	close(fd);
	fd = fnt_connect(uds, FN_PORT);
	fnt_invoke_check(&golden, fd, 2, payload, sizeof(payload));
	close(fd);
	stop(p, &r);
	proc_result_free(&r);
}
