/*
 * The control socket (FORMAT.md section 9): every verb round-trips through `ember ctl`,
 * and hostile clients on the raw socket (bad frame lengths, bodies that are not msgpack,
 * wrong types, unknown verbs, huge declared lengths, half frames, too many clients) get
 * an error response or a closed connection, never a crash, and ember keeps serving.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "testlib.h"

#define WAIT_MS 20000

static char tmp[PATH_MAX], sock[PATH_MAX];
static struct proc *vmm;

static void fini(void)
{
	if (vmm) {
		struct proc_result dead;

		proc_finish(vmm, 1, &dead);
		proc_result_free(&dead);
		vmm = NULL;
	}
	ember_test_rmtree(tmp);
	tmp[0] = 0;
}

static void init(void)
{
	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(sock, tmp, "api.sock");
	vmm = ember_test_start("boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
			       "heap=4M ws=64K seed=2", "--mem", "16", "--api-sock", sock, NULL);
	cr_assert(proc_wait_output(vmm, "checksum=", WAIT_MS), "the sandbox never printed its checksum");
	snapt_wait_socket(sock, WAIT_MS);
}

TestSuite(snapshot_api, .init = init, .fini = fini, .timeout = 60);

/* ---- through ember ctl ------------------------------------------------------------- */

static void ctl(struct proc_result *r, const char *verb, const char *arg)
{
	snapt_ctl(r, sock, verb, arg, NULL);
	cr_assert_eq(r->status, 0, "ember ctl %s exited %d:\n%s%s", verb, r->status, r->out, r->err);
	cr_assert(!strncmp(r->out, "ok\n", 3), "ember ctl %s printed:\n%s", verb, r->out);
}

static void expect_status_line(const char *line)
{
	struct proc_result r;

	ctl(&r, "status", NULL);
	cr_assert(strstr(r.out, line), "status lacks '%s':\n%s", line, r.out);
	proc_result_free(&r);
}

/* ember must answer, then exit 0 on shutdown without a sanitizer report. */
static void shutdown_cleanly(void)
{
	struct proc_result r;

	ctl(&r, "shutdown", NULL);
	proc_result_free(&r);
	cr_assert_eq(proc_finish(vmm, WAIT_MS, &r), 0);
	vmm = NULL;
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "ember exited %d after shutdown:\n%s", r.status, r.err);
	proc_result_free(&r);
}

Test(snapshot_api, status_pause_resume_guest_cmd_and_shutdown_round_trip)
{
	struct proc_result r;

	ctl(&r, "status", NULL);
	cr_assert(strstr(r.out, "state: running\n"), "%s", r.out);
	cr_assert(strstr(r.out, "vcpus: 1\n"), "%s", r.out);
	cr_assert(strstr(r.out, "mem_bytes: 16777216\n"), "%s", r.out);
	cr_assert(strstr(r.out, "generation: 0000000000000000\n"), "a booted VM has generation 0:\n%s",
		  r.out);
	cr_assert(strstr(r.out, "last_snapshot: \n"), "%s", r.out);
	cr_assert(strstr(r.out, "uptime_us: "), "%s", r.out);
	proc_result_free(&r);

	ctl(&r, "pause", NULL);
	proc_result_free(&r);
	expect_status_line("state: paused\n");
	/* a command queued while paused waits for the resume */
	ctl(&r, "guest-cmd", "generation");
	proc_result_free(&r);
	cr_assert(!proc_wait_output(vmm, "generation=", 300), "a paused guest ran a command");
	ctl(&r, "resume", NULL);
	proc_result_free(&r);
	expect_status_line("state: running\n");
	cr_assert(proc_wait_output(vmm, "generation=", WAIT_MS), "the resumed guest never ran it");
	shutdown_cleanly();
}

Test(snapshot_api, guest_cmd_reaches_the_guest)
{
	struct proc_result r;

	ctl(&r, "guest-cmd", "generation");
	proc_result_free(&r);
	cr_assert(proc_wait_output(vmm, "generation=", WAIT_MS), "the guest never ran the command");
	shutdown_cleanly();
}

Test(snapshot_api, ctl_rejects_bad_usage_without_contacting_ember)
{
	struct proc_result r;

	snapt_ctl(&r, sock, "reboot", NULL);
	cr_assert_eq(r.status, 2, "unknown verb: exit %d", r.status);
	cr_assert(strstr(r.err, "unknown verb 'reboot'"), "%s", r.err);
	proc_result_free(&r);
	snapt_ctl(&r, sock, "snapshot", NULL);
	cr_assert_eq(r.status, 2, "missing argument: exit %d", r.status);
	proc_result_free(&r);
	snapt_ctl(&r, sock, "status", "--diff", NULL);
	cr_assert_eq(r.status, 2, "--diff on status: exit %d", r.status);
	proc_result_free(&r);
	expect_status_line("state: running\n");
	shutdown_cleanly();
}

Test(snapshot_api, snapshot_into_an_existing_directory_is_an_error_and_ember_carries_on)
{
	struct proc_result r;

	snapt_ctl(&r, sock, "snapshot", tmp, NULL);
	cr_assert_eq(r.status, 1, "snapshot over an existing directory: exit %d", r.status);
	cr_assert(strstr(r.err, "ember ctl: snapshot: refused: "), "%s", r.err);
	proc_result_free(&r);
	expect_status_line("state: running\n");
	shutdown_cleanly();
}

/* ---- raw frames -------------------------------------------------------------------- */

static int raw_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 5 };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	strcpy(sa.sun_path, sock);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %s",
		     strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void raw_send(int fd, const void *buf, size_t len)
{
	cr_assert_eq(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len, "send: %s", strerror(errno));
}

static void send_frame(int fd, const void *body, uint32_t len)
{
	uint8_t hdr[4] = { (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			   (uint8_t)len };

	raw_send(fd, hdr, 4);
	if (len)
		raw_send(fd, body, len);
}

static bool recv_all(int fd, uint8_t *buf, size_t len)
{
	for (size_t got = 0; got < len;) {
		ssize_t n = recv(fd, buf + got, len - got, 0);

		if (n <= 0)
			return false;
		got += (size_t)n;
	}
	return true;
}

struct response {
	bool ok;
	char error[512];
	char state[16];
};

/* Reads one response frame: true and *rs filled, or false when the peer closed. */
static bool recv_response(int fd, struct response *rs)
{
	uint8_t hdr[4], *body;
	msgpack_unpacked u;
	uint32_t len;
	size_t off = 0;

	memset(rs, 0, sizeof(*rs));
	if (!recv_all(fd, hdr, 4))
		return false;
	len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
	cr_assert(len >= 1 && len <= 65536, "response frame length %u", len);
	body = malloc(len);
	cr_assert_not_null(body);
	cr_assert(recv_all(fd, body, len), "response body cut short");
	msgpack_unpacked_init(&u);
	cr_assert_eq(msgpack_unpack_next(&u, (const char *)body, len, &off), MSGPACK_UNPACK_SUCCESS);
	cr_assert_eq(u.data.type, MSGPACK_OBJECT_MAP);
	for (uint32_t i = 0; i < u.data.via.map.size; i++) {
		msgpack_object *k = &u.data.via.map.ptr[i].key, *v = &u.data.via.map.ptr[i].val;

		if (k->type != MSGPACK_OBJECT_STR)
			continue;
		if (k->via.str.size == 2 && !memcmp(k->via.str.ptr, "ok", 2))
			rs->ok = v->type == MSGPACK_OBJECT_BOOLEAN && v->via.boolean;
		else if (k->via.str.size == 5 && !memcmp(k->via.str.ptr, "error", 5) &&
			 v->type == MSGPACK_OBJECT_STR)
			snprintf(rs->error, sizeof(rs->error), "%.*s", (int)v->via.str.size,
				 v->via.str.ptr);
		else if (k->via.str.size == 5 && !memcmp(k->via.str.ptr, "state", 5) &&
			 v->type == MSGPACK_OBJECT_STR)
			snprintf(rs->state, sizeof(rs->state), "%.*s", (int)v->via.str.size,
				 v->via.str.ptr);
	}
	msgpack_unpacked_destroy(&u);
	free(body);
	return true;
}

static bool peer_closed(int fd)
{
	uint8_t b;

	return recv(fd, &b, 1, 0) == 0;
}

/* A msgpack map {"verb": verb} plus optional extra packed pairs. */
static void pack_str(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str(pk, strlen(s));
	msgpack_pack_str_body(pk, s, strlen(s));
}

static void send_status(int fd)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	pack_str(&pk, "verb");
	pack_str(&pk, "status");
	send_frame(fd, sb.data, (uint32_t)sb.size);
	msgpack_sbuffer_destroy(&sb);
}

/* The connection is still usable: a status request gets an ok answer. */
static void expect_still_serving(int fd, const char *after)
{
	struct response rs;

	send_status(fd);
	cr_assert(recv_response(fd, &rs), "after %s: connection closed", after);
	cr_assert(rs.ok, "after %s: status failed: %s", after, rs.error);
}

static void expect_error(int fd, const char *needle, const char *what)
{
	struct response rs;

	cr_assert(recv_response(fd, &rs), "%s: no response, connection closed", what);
	cr_assert(!rs.ok, "%s: answered ok", what);
	cr_assert(strstr(rs.error, needle), "%s: error '%s' lacks '%s'", what, rs.error, needle);
}

Test(snapshot_api, bad_frame_lengths_get_an_error_and_a_closed_connection)
{
	static const uint32_t lengths[] = { 0, 65537, 0x7fffffff, 0xffffffff };

	for (unsigned i = 0; i < ARRAY_SIZE(lengths); i++) {
		uint8_t hdr[4] = { (uint8_t)(lengths[i] >> 24), (uint8_t)(lengths[i] >> 16),
				   (uint8_t)(lengths[i] >> 8), (uint8_t)lengths[i] };
		char what[48];
		int fd = raw_connect();

		snprintf(what, sizeof(what), "frame length %u", lengths[i]);
		raw_send(fd, hdr, 4);
		expect_error(fd, "frame length", what);
		cr_assert(peer_closed(fd), "%s: connection left open", what);
		close(fd);
	}
	expect_status_line("state: running\n");
	shutdown_cleanly();
}

Test(snapshot_api, malformed_bodies_get_an_error_and_the_connection_stays_usable)
{
	static const struct {
		const char *what;
		const uint8_t *body;
		uint32_t len;
		const char *needle;
	} cases[] = {
#define BODY(lit) (const uint8_t *)(lit), sizeof(lit) - 1
		{ "not msgpack (reserved byte)", BODY("\xc1"), "malformed request" },
		{ "an array, not a map", BODY("\x91\xa6status"), "malformed request" },
		{ "a str32 declaring 4 GiB", BODY("\x81\xa4verb\xdb\xff\xff\xff\xff"),
		  "malformed request" },
		{ "a map declaring 2^32-1 entries", BODY("\xdf\xff\xff\xff\xff"),
		  "malformed request" },
		{ "a bin32 declaring 4 GiB", BODY("\x81\xa4verb\xc6\xff\xff\xff\xff"),
		  "malformed request" },
		{ "bytes after the map", BODY("\x81\xa4verb\xa6status\x00"),
		  "malformed request" },
		{ "a float", BODY("\x81\xa4verb\xcb\0\0\0\0\0\0\0\0"),
		  "malformed request" },
		{ "verb is an integer", BODY("\x81\xa4verb\x05"), "'verb' must be a string" },
		{ "verb is empty", BODY("\x81\xa4verb\xa0"), "'verb' must be 1.." },
		{ "no verb", BODY("\x81\xa2id\x05"), "no 'verb'" },
		{ "id is a string", BODY("\x82\xa4verb\xa6status\xa2id\xa1x"),
		  "'id' must be an unsigned integer" },
		{ "diff is a string", BODY("\x82\xa4verb\xa8snapshot\xa4" "diff\xa3yes"),
		  "'diff' must be a boolean" },
		{ "dir is a map", BODY("\x82\xa4verb\xa8snapshot\xa3" "dir\x80"),
		  "'dir' must be a string" },
		{ "cmd with a NUL byte", BODY("\x82\xa4verb\xa9guest-cmd\xa3" "cmd\xa3" "a\0b"), "NUL" },
		{ "cmd of 64 bytes", NULL, 0, "'cmd' must be 1..63 bytes" },
		{ "unknown verb", BODY("\x81\xa4verb\xa6reboot"), "unknown verb 'reboot'" },
		{ "snapshot without dir", BODY("\x81\xa4verb\xa8snapshot"), "needs 'dir'" },
		{ "guest-cmd without cmd", BODY("\x81\xa4verb\xa9guest-cmd"), "needs 'cmd'" },
	};
#undef BODY
	static const char prefix[] = "\x82\xa4verb\xa9guest-cmd\xa3" "cmd\xd9\x40";
	uint8_t long_cmd[sizeof(prefix) - 1 + 64];
	int fd = raw_connect();

	/* {"verb": "guest-cmd", "cmd": <64 x 'a'>} */
	memcpy(long_cmd, prefix, sizeof(prefix) - 1);
	memset(long_cmd + sizeof(prefix) - 1, 'a', 64);
	for (unsigned i = 0; i < ARRAY_SIZE(cases); i++) {
		const uint8_t *body = cases[i].body ? cases[i].body : long_cmd;
		uint32_t len = cases[i].body ? cases[i].len : (uint32_t)sizeof(long_cmd);

		send_frame(fd, body, len);
		expect_error(fd, cases[i].needle, cases[i].what);
		expect_still_serving(fd, cases[i].what);
	}
	close(fd);
	shutdown_cleanly();
}

Test(snapshot_api, pipelined_requests_in_one_write_are_answered_in_order)
{
	uint8_t buf[3 * 64];
	size_t n = 0;
	struct response rs;
	int fd = raw_connect();

	/* status, a bad one, status: three frames in one send */
	static const uint8_t status[] = "\x81\xa4verb\xa6status";
	static const uint8_t bad[] = "\x81\xa4verb\xa4nope";

	for (unsigned k = 0; k < 3; k++) {
		const uint8_t *b = k == 1 ? bad : status;
		uint32_t len = k == 1 ? sizeof(bad) - 1 : sizeof(status) - 1;

		buf[n++] = 0;
		buf[n++] = 0;
		buf[n++] = 0;
		buf[n++] = (uint8_t)len;
		memcpy(buf + n, b, len);
		n += len;
	}
	raw_send(fd, buf, n);
	cr_assert(recv_response(fd, &rs) && rs.ok && !strcmp(rs.state, "running"), "first: %s",
		  rs.error);
	cr_assert(recv_response(fd, &rs) && !rs.ok && strstr(rs.error, "unknown verb 'nope'"),
		  "second: %s", rs.error);
	cr_assert(recv_response(fd, &rs) && rs.ok, "third: %s", rs.error);
	close(fd);
	shutdown_cleanly();
}

Test(snapshot_api, half_frames_and_vanishing_clients_do_not_disturb_ember)
{
	static const uint8_t status[] = "\x00\x00\x00\x0d\x81\xa4verb\xa6status";
	int fd;

	/* the header only, a header and part of a body, a byte: then gone */
	for (unsigned cut = 1; cut < sizeof(status) - 1; cut += 5) {
		fd = raw_connect();
		raw_send(fd, status, cut);
		close(fd);
	}
	/* a frame that arrives one byte at a time is still one request */
	fd = raw_connect();
	for (unsigned i = 0; i < sizeof(status) - 1; i++) {
		raw_send(fd, status + i, 1);
		usleep(1000);
	}
	{
		struct response rs;

		cr_assert(recv_response(fd, &rs) && rs.ok, "byte-wise frame: %s", rs.error);
	}
	close(fd);
	expect_status_line("state: running\n");
	shutdown_cleanly();
}

Test(snapshot_api, more_clients_than_slots_are_turned_away_and_ember_keeps_serving)
{
	int fds[12];
	unsigned served = 0, closed = 0;

	for (unsigned i = 0; i < ARRAY_SIZE(fds); i++)
		fds[i] = raw_connect();
	for (unsigned i = 0; i < ARRAY_SIZE(fds); i++) {
		struct response rs;

		/* a turned-away client may see its send fail or its connection closed */
		if (send(fds[i], "\x00\x00\x00\x0d\x81\xa4verb\xa6status", 17, MSG_NOSIGNAL) != 17 ||
		    !recv_response(fds[i], &rs)) {
			closed++;
			continue;
		}
		cr_assert(rs.ok, "client %u: %s", i, rs.error);
		served++;
	}
	for (unsigned i = 0; i < ARRAY_SIZE(fds); i++)
		close(fds[i]);
	cr_assert_eq(served, 8, "%u clients served, %u turned away (8 slots)", served, closed);
	expect_status_line("state: running\n");
	shutdown_cleanly();
}
