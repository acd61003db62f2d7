/*
 * The invocation client (src/invoke.c) and `ember invoke`, against a fake hybrid vsock
 * socket: a thread that plays ember (the CONNECT line) and the guest's agent (the
 * frames) as each test scripts it, including every way a peer can misbehave. No KVM.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "testlib.h"

#define RUN_MS 20000
#define FAKE_HOST_PORT 1073741824u

enum fake_mode {
	FAKE_ANSWER,          /* OK, then answer every request as scripted */
	FAKE_CLOSE,           /* read the CONNECT line, close without a word */
	FAKE_SILENT,          /* read the CONNECT line, then say nothing until the client leaves */
	FAKE_SILENT_AFTER_OK, /* OK, read the request, never answer */
	FAKE_RAW_LINE,        /* answer CONNECT with raw_line instead of OK */
};

struct fake {
	char dir[PATH_MAX], path[PATH_MAX];
	int lfd, stop[2];
	pthread_t thread;
	bool started;
	/* the script */
	enum fake_mode mode;
	unsigned connections;    /* to accept, one after the other */
	const void *raw_line;    /* FAKE_RAW_LINE: the bytes sent instead of OK */
	size_t raw_len;
	const void *after_ok;    /* bytes sent right after the OK line */
	size_t after_ok_len;
	unsigned ok_delay_ms;    /* the OK line in two writes this far apart */
	uint16_t status;
	const void *resp;        /* the response payload; NULL: the request's bytes ^ 0xa5 */
	uint32_t resp_len;
	char magic[4];
	uint16_t version;
	uint64_t id_delta;       /* added to the request's id in the response */
	uint32_t reserved;
	bool lie_len;            /* declare declared_len instead of the real length */
	uint32_t declared_len;
	bool cut;                /* send only cut_at bytes of the response frame, then close */
	size_t cut_at;
	bool close_after_raw;    /* FAKE_RAW_LINE: close at once instead of waiting for EOF */
	bool never_read;         /* FAKE_RAW_LINE: wait for the client to leave without reading */
	/* what arrived */
	char connect_line[64];
	unsigned accepted, requests;
	uint8_t req_hdr[INVOKE_HDR_SIZE];
	uint8_t *req_payload;
	uint32_t req_len;
};

static struct fake F;

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t now_ms(void)
{
	return invoke_clock_ns() / 1000000;
}

/* Blocking I/O with the socket timeouts as a backstop: a broken test must not hang. */
static void fake_send(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n <= 0)
			return; /* the client left; that is its business */
		p += n;
		len -= (size_t)n;
	}
}

static size_t fake_recv(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = recv(fd, (uint8_t *)buf + got, len - got, 0);

		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return got;
}

static void wait_eof(int fd)
{
	char buf[4096];

	while (recv(fd, buf, sizeof(buf), 0) > 0)
		;
}

static bool read_connect_line(struct fake *f, int fd)
{
	size_t n = 0;

	while (n < sizeof(f->connect_line) - 1) {
		if (recv(fd, f->connect_line + n, 1, 0) != 1)
			return false;
		if (f->connect_line[n++] == '\n')
			break;
	}
	f->connect_line[n] = 0;
	return true;
}

static void respond(struct fake *f, int fd)
{
	uint32_t len = f->resp ? f->resp_len : f->req_len;
	size_t total = INVOKE_HDR_SIZE + (size_t)len;
	uint8_t *frame = calloc(1, total), *h = frame;

	memcpy(h, f->magic, 4);
	put_le(h + 4, f->version, 2);
	put_le(h + 6, f->status, 2);
	put_le(h + 8, le64(f->req_hdr + 8) + f->id_delta, 8);
	put_le(h + 16, f->lie_len ? f->declared_len : len, 4);
	put_le(h + 20, f->reserved, 4);
	if (f->resp)
		memcpy(frame + INVOKE_HDR_SIZE, f->resp, len);
	else
		for (uint32_t i = 0; i < len; i++)
			frame[INVOKE_HDR_SIZE + i] = f->req_payload[i] ^ 0xa5;
	fake_send(fd, frame, f->cut && f->cut_at < total ? f->cut_at : total);
	free(frame);
}

static void serve(struct fake *f, int fd)
{
	char ok[32];
	int n;

	if (!read_connect_line(f, fd))
		return;
	switch (f->mode) {
	case FAKE_CLOSE:
		return;
	case FAKE_SILENT:
		wait_eof(fd);
		return;
	case FAKE_RAW_LINE:
		fake_send(fd, f->raw_line, f->raw_len);
		if (f->never_read) {
			struct pollfd p = { .fd = fd, .events = POLLRDHUP };

			poll(&p, 1, 10000);
		} else if (!f->close_after_raw) {
			wait_eof(fd);
		}
		return;
	case FAKE_ANSWER:
	case FAKE_SILENT_AFTER_OK:
		break;
	}
	n = snprintf(ok, sizeof(ok), "OK %u\n", FAKE_HOST_PORT);
	if (f->ok_delay_ms) {
		struct timespec ts = { .tv_nsec = (long)f->ok_delay_ms * 1000000 };

		fake_send(fd, ok, 3);
		nanosleep(&ts, NULL);
		fake_send(fd, ok + 3, (size_t)n - 3);
	} else {
		fake_send(fd, ok, (size_t)n);
	}
	if (f->after_ok_len)
		fake_send(fd, f->after_ok, f->after_ok_len);
	for (;;) {
		if (fake_recv(fd, f->req_hdr, INVOKE_HDR_SIZE) != INVOKE_HDR_SIZE)
			return;
		f->req_len = le32(f->req_hdr + 16);
		if (f->req_len > INVOKE_MAX_PAYLOAD)
			return;
		free(f->req_payload);
		f->req_payload = malloc((size_t)f->req_len + 1);
		if (fake_recv(fd, f->req_payload, f->req_len) != f->req_len)
			return;
		f->requests++;
		if (f->mode == FAKE_SILENT_AFTER_OK) {
			wait_eof(fd);
			return;
		}
		respond(f, fd);
		if (f->cut)
			return;
	}
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;

	for (unsigned i = 0; i < f->connections; i++) {
		struct pollfd p[2] = { { .fd = f->lfd, .events = POLLIN },
				       { .fd = f->stop[0], .events = POLLIN } };
		struct timeval tv = { .tv_sec = 10 };
		int fd;

		if (poll(p, 2, 15000) <= 0 || p[1].revents)
			break;
		fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			break;
		f->accepted++;
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		serve(f, fd);
		close(fd);
	}
	return NULL;
}

static void fake_setup(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	memset(&F, 0, sizeof(F));
	F.mode = FAKE_ANSWER;
	F.connections = 1;
	memcpy(F.magic, "EMBR", 4);
	F.version = 1;
	ember_test_tmpdir(F.dir, sizeof(F.dir));
	cr_assert_lt(snprintf(F.path, sizeof(F.path), "%s/v.sock", F.dir), (int)sizeof(sa.sun_path));
	strcpy(sa.sun_path, F.path);
	F.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(F.lfd, 0);
	cr_assert_eq(bind(F.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
	cr_assert_eq(listen(F.lfd, 8), 0);
	cr_assert_eq(pipe2(F.stop, O_CLOEXEC), 0);
}

static void fake_start(void)
{
	cr_assert_eq(pthread_create(&F.thread, NULL, fake_main, &F), 0);
	F.started = true;
}

/* Joins the server: what it recorded is stable afterwards. */
static void fake_stop(void)
{
	if (!F.started)
		return;
	cr_assert_eq(write(F.stop[1], "x", 1), 1);
	pthread_join(F.thread, NULL);
	F.started = false;
}

static void fake_teardown(void)
{
	fake_stop();
	close(F.lfd);
	close(F.stop[0]);
	close(F.stop[1]);
	free(F.req_payload);
	ember_test_rmtree(F.dir);
}

TestSuite(invoke, .init = fake_setup, .fini = fake_teardown);

static uint8_t *pattern(size_t len, uint64_t seed)
{
	uint8_t *p = malloc(len + 1);
	uint64_t x = seed | 1;

	cr_assert_not_null(p);
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
	return p;
}

static void assert_xor_of(const uint8_t *got, const uint8_t *sent, size_t len)
{
	for (size_t i = 0; i < len; i++)
		cr_assert_eq(got[i], sent[i] ^ 0xa5, "response byte %zu is 0x%02x, expected 0x%02x", i,
			     got[i], sent[i] ^ 0xa5);
}

static int once(size_t len, const void *payload, uint64_t timeout_ms, struct invoke_result *res,
		struct errbuf *eb)
{
	struct invoke_opts o = { .uds = F.path, .port = 5000, .request_id = 7,
				 .timeout_ms = timeout_ms };

	memset(eb, 0, sizeof(*eb));
	return invoke_once(&o, payload, (uint32_t)len, res, eb);
}

/* invoke_once against a server that misbehaves: the error and its message. */
static void expect_lib_error(int err, const char *needle)
{
	struct invoke_result res;
	struct errbuf eb;
	uint8_t payload[16] = { 1, 2, 3 };

	fake_start();
	cr_assert_eq(once(sizeof(payload), payload, 3000, &res, &eb), err, "got '%s'", eb.msg);
	cr_assert_not_null(strstr(eb.msg, needle), "message '%s' does not say '%s'", eb.msg,
			   needle);
	cr_assert_null(res.payload, "a failed call must not leave a payload");
}

/* ---- the library: round trips ---------------------------------------------------- */

static void lib_round_trip(size_t len)
{
	struct invoke_result res;
	struct errbuf eb;
	uint8_t *in = pattern(len, len + 1);

	fake_start();
	cr_assert_eq(once(len, in, 10000, &res, &eb), 0, "%s", eb.msg);
	fake_stop();
	cr_assert_eq(res.status, INVOKE_OK);
	cr_assert_eq(res.payload_len, len);
	cr_assert_not_null(res.payload);
	cr_assert_eq(res.payload[len], 0, "the payload is NUL-terminated");
	assert_xor_of(res.payload, in, len);
	cr_assert_eq(F.req_len, len);
	cr_assert_eq(memcmp(F.req_payload, in, len), 0, "the server got other bytes than sent");
	invoke_result_free(&res);
	cr_assert_null(res.payload);
	free(in);
}

Test(invoke, lib_round_trip_empty_payload)
{
	lib_round_trip(0);
}

Test(invoke, lib_round_trip_one_byte)
{
	lib_round_trip(1);
}

Test(invoke, lib_round_trip_one_mib_binary)
{
	lib_round_trip(1 << 20);
}

Test(invoke, lib_round_trip_largest_payload_16mib)
{
	lib_round_trip(INVOKE_MAX_PAYLOAD);
}

Test(invoke, lib_sends_connect_line_and_request_header_per_spec)
{
	struct invoke_result res;
	struct errbuf eb;
	struct invoke_opts o = { .uds = F.path, .port = 4294967295u,
				 .request_id = 0x0102030405060708ull, .timeout_ms = 5000 };
	static const uint8_t want[INVOKE_HDR_SIZE] = {
		'E', 'M', 'B', 'Q', 1, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1, 3, 0, 0, 0, 0, 0, 0, 0,
	};

	fake_start();
	cr_assert_eq(invoke_once(&o, "abc", 3, &res, &eb), 0, "%s", eb.msg);
	fake_stop();
	cr_assert_str_eq(F.connect_line, "CONNECT 4294967295\n");
	cr_assert_eq(memcmp(F.req_hdr, want, sizeof(want)), 0, "request header differs");
	cr_assert_eq(res.host_port, FAKE_HOST_PORT);
	invoke_result_free(&res);
}

Test(invoke, lib_reports_connect_and_response_times)
{
	struct invoke_result res;
	struct errbuf eb;

	F.ok_delay_ms = 50;
	fake_start();
	cr_assert_eq(once(3, "abc", 5000, &res, &eb), 0, "%s", eb.msg);
	cr_assert_geq(res.connect_us, 50000, "connect_us %llu must include the OK line's delay",
		      (unsigned long long)res.connect_us);
	cr_assert_lt(res.response_us, 5000000);
	invoke_result_free(&res);
}

Test(invoke, lib_ok_line_in_pieces_is_assembled)
{
	struct invoke_result res;
	struct errbuf eb;

	F.ok_delay_ms = 20; /* "OK " first, the digits and newline later */
	fake_start();
	cr_assert_eq(once(1, "x", 5000, &res, &eb), 0, "%s", eb.msg);
	cr_assert_eq(res.host_port, FAKE_HOST_PORT);
	invoke_result_free(&res);
}

Test(invoke, lib_two_calls_on_one_connection)
{
	struct invoke_result res;
	struct errbuf eb = { "" };
	uint64_t deadline = invoke_clock_ns() + 5000000000ull;
	uint32_t host_port = 0;
	int fd;

	fake_start();
	fd = invoke_connect(F.path, 5000, deadline, &host_port, &eb);
	cr_assert_geq(fd, 0, "%s", eb.msg);
	cr_assert_eq(host_port, FAKE_HOST_PORT);
	for (uint64_t id = 1; id <= 2; id++) {
		cr_assert_eq(invoke_call(fd, id, "ab", 2, deadline, &res, &eb), 0, "call %llu: %s",
			     (unsigned long long)id, eb.msg);
		cr_assert_eq(res.payload_len, 2);
		invoke_result_free(&res);
	}
	close(fd);
	fake_stop();
	cr_assert_eq(F.accepted, 1);
	cr_assert_eq(F.requests, 2);
	cr_assert_eq(le64(F.req_hdr + 8), 2);
}

Test(invoke, lib_bytes_after_ok_are_left_on_the_connection)
{
	struct errbuf eb = { "" };
	uint32_t host_port;
	char buf[8] = { 0 };
	int fd;

	F.after_ok = "XYZ";
	F.after_ok_len = 3;
	fake_start();
	fd = invoke_connect(F.path, 5000, invoke_clock_ns() + 5000000000ull, &host_port, &eb);
	cr_assert_geq(fd, 0, "%s", eb.msg);
	cr_assert_eq(fcntl(fd, F_SETFL, 0), 0);
	cr_assert_eq(recv(fd, buf, 3, MSG_WAITALL), 3);
	cr_assert_str_eq(buf, "XYZ", "the OK line reader consumed guest bytes");
	close(fd);
}

Test(invoke, lib_function_error_is_a_result_not_an_error)
{
	struct invoke_result res;
	struct errbuf eb;

	F.status = INVOKE_FUNCTION_ERROR;
	F.resp = "no such function";
	F.resp_len = 16;
	fake_start();
	cr_assert_eq(once(3, "abc", 5000, &res, &eb), 0, "%s", eb.msg);
	cr_assert_eq(res.status, INVOKE_FUNCTION_ERROR);
	cr_assert_str_eq((char *)res.payload, "no such function");
	invoke_result_free(&res);
}

Test(invoke, lib_too_large_is_a_result)
{
	struct invoke_result res;
	struct errbuf eb;

	F.status = INVOKE_TOO_LARGE;
	F.resp = "max_payload is 2";
	F.resp_len = 16;
	fake_start();
	cr_assert_eq(once(3, "abc", 5000, &res, &eb), 0, "%s", eb.msg);
	cr_assert_eq(res.status, INVOKE_TOO_LARGE);
	invoke_result_free(&res);
}

/* ---- the library: no connection ----------------------------------------------------- */

Test(invoke, lib_missing_socket_file_names_vsock_uds)
{
	struct invoke_result res;
	struct errbuf eb;

	strcat(F.path, ".absent");
	cr_assert_eq(once(0, NULL, 1000, &res, &eb), -ENOENT);
	cr_assert_not_null(strstr(eb.msg, "no such socket"), "%s", eb.msg);
	cr_assert_not_null(strstr(eb.msg, "--vsock-uds"), "%s", eb.msg);
}

Test(invoke, lib_socket_without_listener_names_vsock_uds)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct invoke_result res;
	struct errbuf eb;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	/* a socket file left by an ember that is gone: bound, nobody listening */
	strcat(F.path, ".stale");
	strcpy(sa.sun_path, F.path);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(once(0, NULL, 1000, &res, &eb), -ECONNREFUSED);
	cr_assert_not_null(strstr(eb.msg, "nobody listens"), "%s", eb.msg);
	cr_assert_not_null(strstr(eb.msg, "--vsock-uds"), "%s", eb.msg);
	close(fd);
}

Test(invoke, lib_socket_path_too_long_refused)
{
	struct errbuf eb = { "" };
	char path[200];
	uint32_t host_port;

	memset(path, 'p', sizeof(path) - 1);
	path[sizeof(path) - 1] = 0;
	cr_assert_eq(invoke_connect(path, 5000, 0, &host_port, &eb), -ENAMETOOLONG);
	cr_assert_not_null(strstr(eb.msg, "a Unix socket path has 1..107 bytes"), "%s", eb.msg);
}

Test(invoke, lib_closed_without_ok)
{
	F.mode = FAKE_CLOSE;
	expect_lib_error(-ECONNRESET, "closed the connection without answering OK to 'CONNECT 5000'");
}

Test(invoke, lib_timeout_waiting_for_ok)
{
	struct invoke_result res;
	struct errbuf eb;
	uint64_t t0;

	F.mode = FAKE_SILENT;
	fake_start();
	t0 = now_ms();
	cr_assert_eq(once(0, NULL, 200, &res, &eb), -ETIMEDOUT, "%s", eb.msg);
	cr_assert_geq(now_ms() - t0, 200);
	cr_assert_lt(now_ms() - t0, 2000, "the deadline was not kept");
	cr_assert_not_null(strstr(eb.msg, "answer to 'CONNECT 5000'"), "%s", eb.msg);
}

Test(invoke, lib_timeout_waiting_for_the_response)
{
	struct invoke_result res;
	struct errbuf eb;
	uint64_t t0;

	F.mode = FAKE_SILENT_AFTER_OK;
	fake_start();
	t0 = now_ms();
	cr_assert_eq(once(5, "hello", 200, &res, &eb), -ETIMEDOUT, "%s", eb.msg);
	cr_assert_lt(now_ms() - t0, 2000, "the deadline was not kept");
	cr_assert_not_null(strstr(eb.msg, "waiting for the response"), "%s", eb.msg);
	cr_assert_null(res.payload);
}

Test(invoke, lib_timeout_while_the_guest_does_not_read)
{
	struct invoke_result res;
	struct errbuf eb;
	uint8_t *big = pattern(8 << 20, 3);

	/* the server never reads the request: the socket buffers fill up */
	F.mode = FAKE_RAW_LINE;
	F.raw_line = "OK 9\n";
	F.raw_len = 5;
	F.never_read = true;
	fake_start();
	cr_assert_eq(once(8 << 20, big, 300, &res, &eb), -ETIMEDOUT, "%s", eb.msg);
	cr_assert_not_null(strstr(eb.msg, "timed out sending the request"), "%s", eb.msg);
	free(big);
}

Test(invoke, lib_request_over_16mib_refused_before_sending)
{
	struct invoke_result res;
	struct errbuf eb;
	int sv[2];
	char c;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	/* the length check comes first: the buffer is never read */
	cr_assert_eq(invoke_call(sv[0], 1, &c, INVOKE_MAX_PAYLOAD + 1, 0, &res, &eb), -EMSGSIZE);
	cr_assert_not_null(strstr(eb.msg, "16 MiB"), "%s", eb.msg);
	cr_assert_eq(recv(sv[1], &c, 1, 0), -1, "bytes were sent");
	close(sv[0]);
	close(sv[1]);
}

/* ---- the library: malformed answers -------------------------------------------------- */

Test(invoke, lib_bad_magic_is_malformed)
{
	memcpy(F.magic, "EMBQ", 4);
	expect_lib_error(-EPROTO, "magic 'EMBQ', not 'EMBR'");
}

Test(invoke, lib_bad_version_is_malformed)
{
	F.version = 2;
	expect_lib_error(-EPROTO, "version 2, not 1");
}

Test(invoke, lib_wrong_request_id_is_malformed)
{
	F.id_delta = 1;
	expect_lib_error(-EPROTO, "request_id 8, but the request's is 7");
}

Test(invoke, lib_reserved_nonzero_is_malformed)
{
	F.reserved = 0x100;
	expect_lib_error(-EPROTO, "reserved is 0x100, not 0");
}

Test(invoke, lib_payload_len_over_16mib_is_malformed)
{
	F.lie_len = true;
	F.declared_len = INVOKE_MAX_PAYLOAD + 1;
	expect_lib_error(-EPROTO, "payload_len 16777217 exceeds");
}

Test(invoke, lib_unknown_status_is_malformed)
{
	F.status = 5;
	expect_lib_error(-EPROTO, "status 5 is not one of");
}

Test(invoke, lib_truncated_payload_is_malformed)
{
	F.cut = true;
	F.cut_at = INVOKE_HDR_SIZE + 10;
	expect_lib_error(-EPROTO, "closed after 10 of 16 payload bytes");
}

Test(invoke, lib_truncated_header_is_malformed)
{
	F.cut = true;
	F.cut_at = 6;
	expect_lib_error(-EPROTO, "closed after 6 of 24 header bytes");
}

Test(invoke, lib_closed_before_any_response_is_malformed)
{
	F.cut = true;
	F.cut_at = 0;
	expect_lib_error(-EPROTO, "closed before any response");
}

/* ---- the library: the OK line ---------------------------------------------------------- */

static void expect_ok_line_error(const char *line, size_t len, int err, const char *needle)
{
	F.mode = FAKE_RAW_LINE;
	F.raw_line = line;
	F.raw_len = len;
	expect_lib_error(err, needle);
}

Test(invoke, lib_ok_line_with_letters)
{
	expect_ok_line_error("OK abc\n", 7, -EPROTO,
			     "answered 'CONNECT 5000' with 'OK abc\\n', not 'OK <host port>\\n'");
}

Test(invoke, lib_ok_line_without_port)
{
	expect_ok_line_error("OK\n", 3, -EPROTO, "with 'OK\\n'");
}

Test(invoke, lib_ok_line_port_over_32_bits)
{
	expect_ok_line_error("OK 4294967296\n", 14, -EPROTO, "'OK 4294967296\\n'");
}

Test(invoke, lib_ok_line_without_newline_within_32_bytes)
{
	expect_ok_line_error("OK 1234567890123456789012345678901234567890", 43, -EPROTO,
			     "no newline within 32 bytes: 'OK 12345678901234567890123456789'");
}

Test(invoke, lib_ok_line_escape_codes_are_escaped)
{
	expect_ok_line_error("\x1b[2J\aOK 1\r\n", 11, -EPROTO, "'\\x1b[2J\\x07OK 1\\x0d\\n'");
}

Test(invoke, lib_ok_line_cut_short_by_close)
{
	F.close_after_raw = true;
	expect_ok_line_error("OK 12", 5, -EPROTO, "in the middle of its answer to 'CONNECT 5000': "
			     "'OK 12'");
}

Test(invoke, lib_ok_line_cut_short_times_out)
{
	struct invoke_result res;
	struct errbuf eb;

	F.mode = FAKE_RAW_LINE;
	F.raw_line = "OK 12";
	F.raw_len = 5;
	fake_start();
	cr_assert_eq(once(0, NULL, 300, &res, &eb), -ETIMEDOUT, "%s", eb.msg);
	cr_assert_not_null(strstr(eb.msg, "5 bytes of it arrived"), "%s", eb.msg);
}

/* ---- escaping and names ------------------------------------------------------------------ */

Test(invoke, escape_keeps_printable_ascii_and_escapes_the_rest)
{
	char out[64];

	cr_assert_eq(invoke_escape("a \\\n\t\x1b\x7f\xff", 8, out, sizeof(out)), strlen(out));
	cr_assert_str_eq(out, "a \\\\\\n\\t\\x1b\\x7f\\xff");
}

Test(invoke, escape_keeps_nul_bytes_visible)
{
	char out[16];

	invoke_escape("a\0b", 3, out, sizeof(out));
	cr_assert_str_eq(out, "a\\x00b");
}

Test(invoke, escape_truncates_with_an_ellipsis)
{
	char out[8];

	invoke_escape("0123456789", 10, out, sizeof(out));
	cr_assert_str_eq(out, "0123...");
}

Test(invoke, escape_cuts_before_an_escape_that_does_not_fit)
{
	char out[8];

	invoke_escape("0123\x01\x02", 6, out, sizeof(out));
	cr_assert_str_eq(out, "0123...");
}

Test(invoke, escape_exact_fit_has_no_ellipsis)
{
	char out[5];

	invoke_escape("0123", 4, out, sizeof(out));
	cr_assert_str_eq(out, "0123");
}

Test(invoke, status_names)
{
	cr_assert_str_eq(invoke_status_name(0), "OK");
	cr_assert_str_eq(invoke_status_name(1), "BAD_REQUEST");
	cr_assert_str_eq(invoke_status_name(2), "TOO_LARGE");
	cr_assert_str_eq(invoke_status_name(3), "FUNCTION_ERROR");
	cr_assert_str_eq(invoke_status_name(4), "UNSUPPORTED_VERSION");
	cr_assert_str_eq(invoke_status_name(5), "BUSY");
	cr_assert_str_eq(invoke_status_name(6), "UNAVAILABLE");
	cr_assert_str_eq(invoke_status_name(7), "SHUTTING_DOWN");
	cr_assert_str_eq(invoke_status_name(8), "UNKNOWN");
	cr_assert_str_eq(invoke_status_name(65535), "UNKNOWN");
}

/* ---- ember invoke ------------------------------------------------------------------------ */

static void run_invoke(struct proc_result *r, const char *payload_path, const char *extra)
{
	if (payload_path)
		ember_test_run(r, RUN_MS, "invoke", "--vsock-uds", F.path, "--payload", payload_path,
			       extra, NULL);
	else
		ember_test_run(r, RUN_MS, "invoke", "--vsock-uds", F.path, extra, NULL);
	ember_test_assert_no_crash(r);
}

static void bin_round_trip(size_t len)
{
	struct proc_result r;
	uint8_t *in = pattern(len, len + 11);
	const char *file = ember_test_write_file(F.dir, "in.bin", in, len);

	fake_start();
	run_invoke(&r, file, NULL);
	fake_stop();
	cr_assert_eq(r.status, 0, "exit %d, stderr:\n%s", r.status, r.err);
	cr_assert_eq(r.out_len, len, "stdout has %zu bytes, the response %zu", r.out_len, len);
	assert_xor_of((uint8_t *)r.out, in, len);
	cr_assert_eq(F.req_len, len);
	cr_assert_eq(memcmp(F.req_payload, in, len), 0, "the server got other bytes than the file");
	cr_assert_eq(r.err_len, 0, "stderr is not empty:\n%s", r.err);
	proc_result_free(&r);
	free(in);
}

Test(invoke, bin_round_trip_empty_payload)
{
	struct proc_result r;

	fake_start();
	run_invoke(&r, NULL, NULL);
	fake_stop();
	cr_assert_eq(r.status, 0, "exit %d, stderr:\n%s", r.status, r.err);
	cr_assert_eq(r.out_len, 0);
	cr_assert_eq(F.requests, 1);
	cr_assert_eq(F.req_len, 0);
	cr_assert_str_eq(F.connect_line, "CONNECT 5000\n", "default port");
	cr_assert_eq(le64(F.req_hdr + 8), 1, "default request id");
	proc_result_free(&r);
}

Test(invoke, bin_round_trip_empty_payload_file)
{
	bin_round_trip(0);
}

Test(invoke, bin_round_trip_one_byte)
{
	bin_round_trip(1);
}

Test(invoke, bin_round_trip_one_mib_binary)
{
	bin_round_trip(1 << 20);
}

Test(invoke, bin_port_and_request_id_flags)
{
	struct proc_result r;

	fake_start();
	ember_test_run(&r, RUN_MS, "invoke", "--vsock-uds", F.path, "--port", "4242",
		       "--request-id", "18446744073709551615", NULL);
	fake_stop();
	cr_assert_eq(r.status, 0, "stderr:\n%s", r.err);
	cr_assert_str_eq(F.connect_line, "CONNECT 4242\n");
	cr_assert_eq(le64(F.req_hdr + 8), UINT64_MAX);
	proc_result_free(&r);
}

Test(invoke, bin_payload_from_stdin)
{
	struct proc_result r;
	size_t len = 1 << 20;
	uint8_t *in = pattern(len, 99);
	char *argv[] = { (char *)ember_test_path("ember"), "invoke", "--vsock-uds", F.path,
			 "--payload", "-", NULL };

	fake_start();
	cr_assert_eq(proc_run_input(argv, in, len, RUN_MS, &r), 0);
	fake_stop();
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "exit %d, stderr:\n%s", r.status, r.err);
	cr_assert_eq(F.req_len, len);
	cr_assert_eq(memcmp(F.req_payload, in, len), 0, "the server got other bytes than stdin");
	cr_assert_eq(r.out_len, len);
	assert_xor_of((uint8_t *)r.out, in, len);
	proc_result_free(&r);
	free(in);
}

Test(invoke, bin_payload_from_stdin_over_16mib_is_a_usage_error)
{
	struct proc_result r;
	size_t len = INVOKE_MAX_PAYLOAD + 4096;
	uint8_t *in = calloc(1, len);
	char *argv[] = { (char *)ember_test_path("ember"), "invoke", "--vsock-uds", F.path,
			 "--payload", "-", NULL };

	fake_start();
	cr_assert_eq(proc_run_input(argv, in, len, RUN_MS, &r), 0);
	fake_stop();
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 2, "exit %d, stderr:\n%s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, "16 MiB (16777216 bytes)"), "%s", r.err);
	cr_assert_eq(F.accepted, 0, "it connected anyway");
	proc_result_free(&r);
	free(in);
}

Test(invoke, bin_payload_from_stdin_of_exactly_16mib_is_sent)
{
	struct proc_result r;
	size_t len = INVOKE_MAX_PAYLOAD;
	uint8_t *in = pattern(len, 5);
	char *argv[] = { (char *)ember_test_path("ember"), "invoke", "--vsock-uds", F.path,
			 "--payload", "-", NULL };

	fake_start();
	cr_assert_eq(proc_run_input(argv, in, len, RUN_MS, &r), 0);
	fake_stop();
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "exit %d, stderr:\n%s", r.status, r.err);
	cr_assert_eq(F.req_len, len);
	cr_assert_eq(r.out_len, len);
	proc_result_free(&r);
	free(in);
}

Test(invoke, bin_payload_file_over_16mib_is_a_usage_error)
{
	struct proc_result r;
	char path[PATH_MAX];
	int fd;

	cr_assert_lt(snprintf(path, sizeof(path), "%s/big", F.dir), (int)sizeof(path));
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, INVOKE_MAX_PAYLOAD + 1), 0); /* sparse */
	close(fd);
	run_invoke(&r, path, NULL);
	cr_assert_eq(r.status, 2, "exit %d, stderr:\n%s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, "16777217 bytes, more than the protocol's 16 MiB"), "%s",
			   r.err);
	proc_result_free(&r);
}

Test(invoke, bin_payload_fifo_refused_without_waiting)
{
	struct proc_result r;
	char path[PATH_MAX];
	uint64_t t0 = now_ms();

	cr_assert_lt(snprintf(path, sizeof(path), "%s/fifo", F.dir), (int)sizeof(path));
	cr_assert_eq(mkfifo(path, 0600), 0);
	run_invoke(&r, path, NULL);
	cr_assert_eq(r.status, 2, "exit %d, stderr:\n%s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, "not a regular file"), "%s", r.err);
	cr_assert_lt(now_ms() - t0, 5000);
	proc_result_free(&r);
}

Test(invoke, bin_payload_missing_file)
{
	struct proc_result r;

	run_invoke(&r, "/nonexistent/payload.bin", NULL);
	cr_assert_eq(r.status, 1, "exit %d, stderr:\n%s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, "/nonexistent/payload.bin: No such file"), "%s", r.err);
	proc_result_free(&r);
}

static void bin_expect_status(uint16_t status, const char *msg, const char *needle)
{
	struct proc_result r;

	F.status = status;
	F.resp = msg;
	F.resp_len = (uint32_t)strlen(msg);
	fake_start();
	run_invoke(&r, NULL, NULL);
	cr_assert_eq(r.status, 3, "exit %d, stderr:\n%s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, needle), "stderr:\n%s", r.err);
	cr_assert_eq(r.out_len, 0, "a message went to stdout");
	proc_result_free(&r);
}

Test(invoke, bin_function_error_exits_3_with_the_message)
{
	bin_expect_status(INVOKE_FUNCTION_ERROR, "division by zero",
			  "ember invoke: the function answered FUNCTION_ERROR (3): division by zero\n");
}

Test(invoke, bin_too_large_exits_3)
{
	bin_expect_status(INVOKE_TOO_LARGE, "max_payload is 1024",
			  "ember invoke: the function answered TOO_LARGE (2): max_payload is 1024\n");
}

Test(invoke, bin_bad_request_exits_3)
{
	bin_expect_status(INVOKE_BAD_REQUEST, "flags", "answered BAD_REQUEST (1): flags\n");
}

Test(invoke, bin_function_message_is_escaped)
{
	struct proc_result r;

	F.status = INVOKE_FUNCTION_ERROR;
	F.resp = "\x1b]0;pwned\a\nboom";
	F.resp_len = 15;
	fake_start();
	run_invoke(&r, NULL, NULL);
	cr_assert_eq(r.status, 3);
	cr_assert_not_null(strstr(r.err, "(3): \\x1b]0;pwned\\x07\\nboom\n"), "%s", r.err);
	cr_assert_null(memchr(r.err, 0x1b, r.err_len), "a raw escape byte reached the terminal");
	proc_result_free(&r);
}

Test(invoke, bin_long_function_message_is_cut)
{
	struct proc_result r;
	char msg[3000];

	memset(msg, 'm', sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = 0;
	F.status = INVOKE_FUNCTION_ERROR;
	F.resp = msg;
	F.resp_len = sizeof(msg) - 1;
	fake_start();
	run_invoke(&r, NULL, NULL);
	cr_assert_eq(r.status, 3);
	cr_assert_lt(r.err_len, 1200, "the whole message was printed");
	cr_assert_not_null(strstr(r.err, "mmm...\n"), "%s", r.err);
	proc_result_free(&r);
}

Test(invoke, bin_closed_without_ok_exits_1)
{
	struct proc_result r;

	F.mode = FAKE_CLOSE;
	fake_start();
	run_invoke(&r, NULL, NULL);
	cr_assert_eq(r.status, 1, "exit %d, stderr:\n%s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, "ember invoke: ember closed the connection without "
				  "answering OK to 'CONNECT 5000'"), "%s", r.err);
	proc_result_free(&r);
}

Test(invoke, bin_missing_socket_exits_1_naming_vsock_uds)
{
	struct proc_result r;

	strcat(F.path, ".absent");
	run_invoke(&r, NULL, NULL);
	cr_assert_eq(r.status, 1, "exit %d, stderr:\n%s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, "is ember running with --vsock-uds"), "%s", r.err);
	proc_result_free(&r);
}

Test(invoke, bin_silent_server_times_out_with_124_within_the_deadline)
{
	struct proc_result r;
	uint64_t t0, ms;

	F.mode = FAKE_SILENT_AFTER_OK;
	fake_start();
	t0 = now_ms();
	run_invoke(&r, NULL, "--timeout=0.3");
	ms = now_ms() - t0;
	cr_assert_eq(r.status, 124, "exit %d, stderr:\n%s", r.status, r.err);
	cr_assert_geq(ms, 300, "gave up after %llu ms", (unsigned long long)ms);
	cr_assert_lt(ms, 3000, "took %llu ms for a 0.3 s timeout", (unsigned long long)ms);
	cr_assert_not_null(strstr(r.err, "timed out waiting for the response"), "%s", r.err);
	cr_assert_not_null(strstr(r.err, "(--timeout 0.300 s)"), "%s", r.err);
	proc_result_free(&r);
}

Test(invoke, bin_silent_connect_times_out_with_124)
{
	struct proc_result r;

	F.mode = FAKE_SILENT;
	fake_start();
	run_invoke(&r, NULL, "--timeout=0.3");
	cr_assert_eq(r.status, 124, "exit %d, stderr:\n%s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, "answer to 'CONNECT 5000'"), "%s", r.err);
	proc_result_free(&r);
}

static void bin_expect_malformed(const char *needle)
{
	struct proc_result r;

	fake_start();
	run_invoke(&r, NULL, "--timeout=5");
	cr_assert_eq(r.status, 1, "exit %d, stderr:\n%s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, needle), "stderr:\n%s", r.err);
	cr_assert_eq(r.out_len, 0, "a malformed response reached stdout");
	proc_result_free(&r);
}

Test(invoke, bin_bad_magic_exits_1)
{
	memcpy(F.magic, "XMBR", 4);
	bin_expect_malformed("malformed response: magic 'XMBR'");
}

Test(invoke, bin_wrong_request_id_exits_1)
{
	F.id_delta = 41;
	bin_expect_malformed("malformed response: request_id 42, but the request's is 1");
}

Test(invoke, bin_truncated_payload_exits_1)
{
	F.resp = "0123456789";
	F.resp_len = 10;
	F.cut = true;
	F.cut_at = INVOKE_HDR_SIZE + 4;
	bin_expect_malformed("closed after 4 of 10 payload bytes");
}

Test(invoke, bin_payload_len_over_16mib_exits_1)
{
	F.lie_len = true;
	F.declared_len = 0xffffffffu;
	bin_expect_malformed("payload_len 4294967295 exceeds");
}

Test(invoke, bin_reserved_nonzero_exits_1)
{
	F.reserved = 1;
	bin_expect_malformed("reserved is 0x1, not 0");
}

static void bin_expect_ok_line_error(const char *line, size_t len, const char *needle)
{
	struct proc_result r;

	F.mode = FAKE_RAW_LINE;
	F.raw_line = line;
	F.raw_len = len;
	fake_start();
	run_invoke(&r, NULL, "--timeout=5");
	cr_assert_eq(r.status, 1, "exit %d, stderr:\n%s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, needle), "stderr:\n%s", r.err);
	cr_assert_null(memchr(r.err, 0x1b, r.err_len), "a raw escape byte reached the terminal");
	proc_result_free(&r);
}

Test(invoke, bin_ok_line_garbage_exits_1)
{
	bin_expect_ok_line_error("OK abc\n", 7, "with 'OK abc\\n', not 'OK <host port>\\n'");
}

Test(invoke, bin_ok_line_without_newline_exits_1)
{
	bin_expect_ok_line_error("OKOKOKOKOKOKOKOKOKOKOKOKOKOKOKOKOKOK", 36,
				 "no newline within 32 bytes: 'OKOKOKOKOKOKOKOKOKOKOKOKOKOKOKOK'\n");
}

Test(invoke, bin_ok_line_escape_codes_exit_1_escaped)
{
	bin_expect_ok_line_error("\x1b[31mERR\n", 9, "with '\\x1b[31mERR\\n'");
}

/* ---- --timings and --json ----------------------------------------------------------------- */

Test(invoke, bin_timings_line_has_every_field)
{
	struct proc_result r;
	char line[512];
	uint64_t v;
	const char *file = ember_test_write_file(F.dir, "in.bin", "hello", 5);

	fake_start();
	ember_test_run(&r, RUN_MS, "invoke", "--vsock-uds", F.path, "--payload", file,
		       "--request-id", "7", "--timings", NULL);
	fake_stop();
	cr_assert_eq(r.status, 0, "stderr:\n%s", r.err);
	cr_assert_not_null(proc_find_line(r.err, "ember-invoke ", line, sizeof(line)), "%s", r.err);
	cr_assert_not_null(strstr(line, " status=OK "), "%s", line);
	cr_assert_eq(proc_line_u64(line, "request_id", &v), 0);
	cr_assert_eq(v, 7);
	cr_assert_eq(proc_line_u64(line, "host_port", &v), 0);
	cr_assert_eq(v, FAKE_HOST_PORT);
	cr_assert_eq(proc_line_u64(line, "bytes_sent", &v), 0);
	cr_assert_eq(v, 24 + 5);
	cr_assert_eq(proc_line_u64(line, "bytes_received", &v), 0);
	cr_assert_eq(v, 24 + 5);
	cr_assert_eq(proc_line_u64(line, "connect_us", &v), 0, "%s", line);
	cr_assert_lt(v, 10000000);
	cr_assert_eq(proc_line_u64(line, "response_us", &v), 0, "%s", line);
	cr_assert_lt(v, 10000000);
	cr_assert_eq(r.out_len, 5, "the payload still goes to stdout");
	proc_result_free(&r);
}

Test(invoke, bin_timings_line_on_function_error)
{
	struct proc_result r;
	char line[512];

	F.status = INVOKE_FUNCTION_ERROR;
	F.resp = "nope";
	F.resp_len = 4;
	fake_start();
	run_invoke(&r, NULL, "--timings");
	cr_assert_eq(r.status, 3);
	cr_assert_not_null(proc_find_line(r.err, "ember-invoke ", line, sizeof(line)), "%s", r.err);
	cr_assert_not_null(strstr(line, "status=FUNCTION_ERROR "), "%s", line);
	cr_assert_not_null(strstr(line, "bytes_received=28 "), "%s", line);
	proc_result_free(&r);
}

Test(invoke, bin_no_timings_line_without_the_flag)
{
	struct proc_result r;

	fake_start();
	run_invoke(&r, NULL, NULL);
	cr_assert_eq(r.status, 0);
	cr_assert_null(strstr(r.err, "ember-invoke"), "%s", r.err);
	cr_assert_null(strstr(r.err, "{"), "%s", r.err);
	proc_result_free(&r);
}

Test(invoke, bin_json_is_one_valid_object_with_the_same_fields)
{
	static const char check[] =
		"import json, sys\n"
		"d = json.loads(sys.argv[1])\n"
		"assert set(d) == {'status', 'request_id', 'host_port', 'bytes_sent',\n"
		"                  'bytes_received', 'connect_us', 'response_us'}, d\n"
		"assert d['status'] == 'OK' and d['request_id'] == 18446744073709551615, d\n"
		"assert d['host_port'] == 1073741824 and d['bytes_sent'] == 27, d\n"
		"assert d['bytes_received'] == 27, d\n"
		"assert all(isinstance(d[k], int) for k in d if k != 'status'), d\n";
	struct proc_result r, py;
	const char *file = ember_test_write_file(F.dir, "in.bin", "abc", 3);
	char line[512];

	fake_start();
	ember_test_run(&r, RUN_MS, "invoke", "--vsock-uds", F.path, "--payload", file,
		       "--request-id", "18446744073709551615", "--json", NULL);
	fake_stop();
	cr_assert_eq(r.status, 0, "stderr:\n%s", r.err);
	cr_assert_not_null(proc_find_line(r.err, "{", line, sizeof(line)), "%s", r.err);
	cr_assert_null(strstr(r.err, "ember-invoke "), "--json replaces the key=value line");
	if (access("/usr/bin/python3", X_OK))
		cr_skip_test("no /usr/bin/python3 to check the JSON with");
	{
		char *argv[] = { "/usr/bin/python3", "-c", (char *)check, line, NULL };

		cr_assert_eq(proc_run(argv, RUN_MS, &py), 0);
		cr_assert_eq(py.status, 0, "python3 rejected '%s':\n%s", line, py.err);
		proc_result_free(&py);
	}
	proc_result_free(&r);
}

Test(invoke, bin_json_with_timings_prints_one_line)
{
	struct proc_result r;

	fake_start();
	run_invoke(&r, NULL, "--json");
	cr_assert_eq(r.status, 0);
	cr_assert_not_null(strstr(r.err, "{\"status\":\"OK\",\"request_id\":1,"), "%s", r.err);
	proc_result_free(&r);
}
