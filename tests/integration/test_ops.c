/*
 * The operator's surface through the ember binary: --log-level, EMBER_LOG and
 * --log-file (a regular file and a FIFO, read or not), exit statuses and messages.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <msgpack.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "testlib.h"

#define WAIT_MS 20000

static char tmp[PATH_MAX];
static struct proc_result r;

static void fini(void)
{
	proc_result_free(&r);
	ember_test_rmtree(tmp);
	tmp[0] = 0;
}

static void init(void)
{
	unsetenv("EMBER_LOG");
	ember_test_tmpdir(tmp, sizeof(tmp));
}

TestSuite(ops, .init = init, .fini = fini, .timeout = 60);

static const char *tmp_path(const char *name)
{
	static char buf[4][PATH_MAX];
	static unsigned n;
	char *p = buf[n++ % 4];

	cr_assert_lt(snprintf(p, PATH_MAX, "%s/%s", tmp, name), PATH_MAX);
	return p;
}

static char *slurp(const char *path)
{
	static char buf[8192];
	int fd = open(path, O_RDONLY | O_NONBLOCK);
	ssize_t n;

	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	return buf;
}

Test(ops, log_file_gets_the_log_lines_appended_mode_0600)
{
	const char *log = tmp_path("ember.log");
	struct stat st;

	ember_test_run(&r, WAIT_MS, "boot", "--kernel", tmp_path("nonexistent"), "--log-file", log,
		       NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "stderr: %s", r.err);
	cr_assert_null(strstr(r.err, "ember: error:"), "the log line went to stderr: %s", r.err);
	cr_assert(strstr(slurp(log), "ember: error: kernel "), "log: %s", slurp(log));
	cr_assert_eq(stat(log, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
	proc_result_free(&r);
	/* appended, not truncated */
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", tmp_path("nonexistent"), "--log-file", log,
		       NULL);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(strstr(slurp(log), "ember: error:") + 1, "ember: error:"), "log: %s",
		  slurp(log));
}

Test(ops, log_file_fifo_without_a_reader_does_not_block)
{
	const char *fifo = tmp_path("log.fifo");

	cr_assert_eq(mkfifo(fifo, 0600), 0);
	ember_test_run(&r, 5000, "boot", "--kernel", tmp_path("nonexistent"), "--log-file", fifo,
		       NULL);
	cr_assert_not(r.timed_out, "ember blocked on a FIFO nobody reads");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "stderr: %s", r.err);
	cr_assert_null(strstr(r.err, "ember: error:"), "stderr: %s", r.err);
}

Test(ops, log_file_fifo_with_a_reader_gets_the_lines)
{
	const char *fifo = tmp_path("log.fifo");
	int rfd;

	cr_assert_eq(mkfifo(fifo, 0600), 0);
	rfd = open(fifo, O_RDONLY | O_NONBLOCK);
	cr_assert_geq(rfd, 0);
	ember_test_run(&r, 5000, "boot", "--kernel", tmp_path("nonexistent"), "--log-file", fifo,
		       "--log-level", "debug", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "stderr: %s", r.err);
	{
		char buf[4096];
		ssize_t n = read(rfd, buf, sizeof(buf) - 1);

		cr_assert_gt(n, 0, "nothing in the FIFO");
		buf[n] = 0;
		cr_assert(strstr(buf, "ember: error: kernel "), "FIFO: %s", buf);
	}
	close(rfd);
}

Test(ops, log_file_unopenable_is_an_error_naming_the_flag)
{
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", "k", "--log-file",
		       tmp_path("no-such-dir/log"), NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, "--log-file ") && strstr(r.err, "No such file"), "%s", r.err);
}

Test(ops, ember_log_unknown_value_exits_2_naming_the_variable)
{
	setenv("EMBER_LOG", "verbose", 1);
	ember_test_run(&r, WAIT_MS, "ctl", "--api-sock", tmp_path("s"), "status", NULL);
	unsetenv("EMBER_LOG");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 2, "stderr: %s", r.err);
	cr_assert(strstr(r.err, "EMBER_LOG: 'verbose' is not error, warn, info or debug"), "%s",
		  r.err);
}

Test(ops, log_level_info_prints_info_lines_and_error_hides_them)
{
	ember_test_require_kvm();
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("hello"), "--console",
		       "none", "--log-level", "info", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "stderr: %s", r.err);
	cr_assert(strstr(r.err, "ember: "), "no info line: %s", r.err);
	proc_result_free(&r);
	setenv("EMBER_LOG", "info", 1);
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("hello"), "--console",
		       "none", "--log-level", "error", NULL);
	unsetenv("EMBER_LOG");
	cr_assert_eq(r.status, 0, "stderr: %s", r.err);
	cr_assert_eq(r.err_len, 0, "the flag did not win over EMBER_LOG: %s", r.err);
}

/* ---- a fake control socket: answers one request with a fixed frame, or never ---- */

struct fake_server {
	int lfd;
	const void *resp;     /* the body to answer; NULL: accept, read, never answer */
	size_t resp_len;
	pthread_t thread;
	uint8_t req[4096];    /* the request body received */
	size_t req_len;
};

static void *fake_server_main(void *arg)
{
	struct fake_server *fs = arg;
	int fd = accept(fs->lfd, NULL, NULL);
	uint8_t hdr[4];
	size_t want;

	if (fd < 0)
		return NULL;
	if (recv(fd, hdr, 4, MSG_WAITALL) == 4) {
		want = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
		if (want <= sizeof(fs->req) && recv(fd, fs->req, want, MSG_WAITALL) == (ssize_t)want)
			fs->req_len = want;
	}
	if (fs->resp) {
		uint8_t h[4] = { (uint8_t)(fs->resp_len >> 24), (uint8_t)(fs->resp_len >> 16),
				 (uint8_t)(fs->resp_len >> 8), (uint8_t)fs->resp_len };

		if (send(fd, h, 4, MSG_NOSIGNAL) != 4 ||
		    send(fd, fs->resp, fs->resp_len, MSG_NOSIGNAL) != (ssize_t)fs->resp_len)
			fprintf(stderr, "fake server: send failed\n");
	} else {
		char c;

		/* until the client gives up */
		while (recv(fd, &c, 1, 0) > 0)
			;
	}
	close(fd);
	return NULL;
}

static void fake_server_start(struct fake_server *fs, const char *path, const void *resp,
			      size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	memset(fs, 0, sizeof(*fs));
	fs->resp = resp;
	fs->resp_len = len;
	cr_assert_lt(strlen(path), sizeof(sa.sun_path));
	strcpy(sa.sun_path, path);
	unlink(path);
	fs->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	cr_assert_geq(fs->lfd, 0);
	cr_assert_eq(bind(fs->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
	cr_assert_eq(listen(fs->lfd, 4), 0);
	cr_assert_eq(pthread_create(&fs->thread, NULL, fake_server_main, fs), 0);
}

static void fake_server_stop(struct fake_server *fs)
{
	pthread_join(fs->thread, NULL);
	close(fs->lfd);
}

static void pack_cstr(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str(pk, strlen(s));
	msgpack_pack_str_body(pk, s, strlen(s));
}

/* A response with every kind of value the control socket sends, and hostile strings. */
static void hostile_response(msgpack_sbuffer *sb, bool ok)
{
	msgpack_packer pk;

	msgpack_sbuffer_init(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, ok ? 5 : 2);
	pack_cstr(&pk, "ok");
	if (ok)
		msgpack_pack_true(&pk);
	else
		msgpack_pack_false(&pk);
	if (!ok) {
		pack_cstr(&pk, "error");
		pack_cstr(&pk, "bad\x1b]0;pwned\x07\x1b[2J thing\n\xff");
		return;
	}
	pack_cstr(&pk, "state");
	pack_cstr(&pk, "run\x1b[31m\"q\"\\\xff\xc3\xa9\xc0\xaf\x7f");
	pack_cstr(&pk, "generation");
	msgpack_pack_uint64(&pk, UINT64_MAX);
	pack_cstr(&pk, "paused");
	msgpack_pack_false(&pk);
	pack_cstr(&pk, "devices");
	msgpack_pack_array(&pk, 2);
	msgpack_pack_map(&pk, 1);
	pack_cstr(&pk, "name");
	pack_cstr(&pk, "serial");
	msgpack_pack_map(&pk, 2);
	pack_cstr(&pk, "name");
	pack_cstr(&pk, "virtio-vsock");
	pack_cstr(&pk, "queues");
	msgpack_pack_uint32(&pk, 3);
}

/* `ember ctl VERB [flag]` against a fake server answering hostile_response(ok), into r */
static void ctl_hostile(bool ok, const char *verb, const char *flag)
{
	const char *sock = tmp_path("ctl.sock");
	struct fake_server fs;
	msgpack_sbuffer sb;

	hostile_response(&sb, ok);
	fake_server_start(&fs, sock, sb.data, sb.size);
	ember_test_run(&r, WAIT_MS, "ctl", "--api-sock", sock, verb, flag, NULL);
	fake_server_stop(&fs);
	msgpack_sbuffer_destroy(&sb);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, ok ? 0 : 1, "stderr: %s", r.err);
}

Test(ops, ctl_json_is_one_valid_object_with_the_msgpack_keys)
{
	char *canon;

	ctl_hostile(true, "status", "--json");
	canon = ember_test_json_canon(r.out);
	cr_assert_str_eq(canon,
			 "{\"devices\":[{\"name\":\"serial\"},{\"name\":\"virtio-vsock\","
			 "\"queues\":3}],\"generation\":18446744073709551615,\"ok\":true,"
			 "\"paused\":false,\"state\":\"run\\u001b[31m\\\"q\\\"\\\\"
			 "\\u00ff\\u00e9\\u00c0\\u00af\\u007f\"}\n");
	/* and no raw escape byte reached the terminal */
	cr_assert_null(memchr(r.out, 0x1b, r.out_len));
	free(canon);
}

Test(ops, ctl_json_of_a_refusal_is_json_too_and_exits_1)
{
	char *canon;

	ctl_hostile(false, "pause", "--json");
	canon = ember_test_json_canon(r.out);
	cr_assert(strstr(canon, "\"ok\":false"), "%s", canon);
	free(canon);
}

/* ---- ember ctl's messages: one prefix, hints, timeouts, escaping ---- */

Test(ops, ctl_usage_errors_all_read_ember_ctl_colon)
{
	const char *sock = tmp_path("none.sock");
	static const char *const cases[][3] = {
		{ NULL, NULL, "ember ctl: missing verb\n" },
		{ "reboot", NULL, "ember ctl: unknown verb 'reboot' (status, " },
		{ "snapshot", NULL, "ember ctl: snapshot takes 1 argument\n" },
		{ "status", "--diff", "ember ctl: --diff and --compress only apply to snapshot\n" },
		{ "status", "--timeout=0", "ember ctl: --timeout: '0' is not a positive number" },
		{ "reboot\x1b[2J", NULL, "ember ctl: unknown verb 'reboot\\x1b[2J'" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ember_test_run(&r, WAIT_MS, "ctl", "--api-sock", sock, cases[i][0], cases[i][1], NULL);
		ember_test_assert_no_crash(&r);
		cr_assert_eq(r.status, 2, "case %zu: exit %d: %s", i, r.status, r.err);
		cr_assert(!strncmp(r.err, cases[i][2], strlen(cases[i][2])), "case %zu: %s", i,
			  r.err);
		cr_assert(strstr(r.err, "Try 'ember --help'."), "%s", r.err);
		cr_assert_null(strstr(r.err, "ember: "), "%s", r.err);
		proc_result_free(&r);
	}
}

Test(ops, ctl_without_a_server_hints_at_api_sock)
{
	const char *sock = tmp_path("none.sock");
	char want[PATH_MAX + 64];
	int fd;

	snprintf(want, sizeof(want), "is ember running with --api-sock %s?", sock);
	ember_test_run(&r, WAIT_MS, "ctl", "--api-sock", sock, "status", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1);
	cr_assert(!strncmp(r.err, "ember ctl: ", 11) && strstr(r.err, "No such file") &&
		  strstr(r.err, want), "%s", r.err);
	proc_result_free(&r);
	/* a socket file nobody listens on: refused, same hint */
	{
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		strcpy(sa.sun_path, sock);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		close(fd);
	}
	ember_test_run(&r, WAIT_MS, "ctl", "--api-sock", sock, "status", NULL);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, "Connection refused") && strstr(r.err, want), "%s", r.err);
}

Test(ops, ctl_times_out_on_a_server_that_never_answers)
{
	const char *sock = tmp_path("mute.sock");
	struct fake_server fs;

	fake_server_start(&fs, sock, NULL, 0);
	ember_test_run(&r, 10000, "ctl", "--api-sock", sock, "--timeout", "0.5", "status", NULL);
	fake_server_stop(&fs);
	cr_assert_not(r.timed_out, "ember ctl waited for ever");
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1);
	cr_assert(!strncmp(r.err, "ember ctl: ", 11) && strstr(r.err, "no answer within 0.5 s"),
		  "%s", r.err);
}

Test(ops, ctl_escapes_the_servers_strings)
{
	ctl_hostile(false, "pause", NULL);
	cr_assert_null(memchr(r.err, 0x1b, r.err_len), "an escape reached stderr");
	cr_assert_null(memchr(r.err, 0x07, r.err_len), "a BEL reached stderr");
	cr_assert(strstr(r.err, "ember ctl: pause: refused: bad\\x1b]0;pwned\\x07\\x1b[2J thing\\n"
			 "\\xff\n"), "%s", r.err);
	proc_result_free(&r);
	ctl_hostile(true, "status", NULL);
	cr_assert_null(memchr(r.out, 0x1b, r.out_len), "an escape reached stdout");
	cr_assert(strstr(r.out, "state: run\\x1b[31m\"q\"\\\\"), "%s", r.out);
	cr_assert(strstr(r.out, "devices: name=virtio-vsock queues=3\n"), "%s", r.out);
}

/* ---- the memory backend chosen without --mem-backend is named (README "Memory") ---- */

Test(ops, record_ws_on_a_raw_snapshot_says_it_uses_uffd)
{
	const char *golden = tmp_path("golden");

	ember_test_require_kvm();
	snapt_golden(golden, "heap=4M seed=1", 32);
	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", golden, "--console", "none",
		       "--log-level", "info", "--record-ws", "--guest-cmd", "serve", "--guest-cmd",
		       "exit", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "stderr: %s", r.err);
	cr_assert(strstr(r.err, "ember: memory backend uffd instead of the raw snapshot's default "
			 "mmap: --record-ws needs the userfaultfd page server\n"), "%s", r.err);
	proc_result_free(&r);
	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", golden, "--console", "none",
		       "--log-level", "info", "--prefetch", "ws", "--guest-cmd", "exit", NULL);
	cr_assert_eq(r.status, 0, "stderr: %s", r.err);
	cr_assert(strstr(r.err, "memory backend uffd instead of the raw snapshot's default mmap: "
			 "--prefetch ws needs"), "%s", r.err);
	proc_result_free(&r);
	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", golden, "--console", "none",
		       "--log-level", "info", "--guest-cmd", "exit", NULL);
	cr_assert_eq(r.status, 0, "stderr: %s", r.err);
	cr_assert(strstr(r.err, "ember: memory backend mmap: the default for a raw snapshot\n"),
		  "%s", r.err);
	proc_result_free(&r);
	/* at the default level (warn) nothing is said (--force: a working set exists now) */
	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", golden, "--console", "none",
		       "--record-ws", "--force", "--guest-cmd", "serve", "--guest-cmd", "exit",
		       NULL);
	cr_assert_eq(r.status, 0, "stderr: %s", r.err);
	cr_assert_null(strstr(r.err, "memory backend"), "%s", r.err);
}

/* ---- early failures ---- */

static unsigned count_substr(const char *hay, const char *needle)
{
	unsigned n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

Test(ops, snapshot_on_ready_into_an_existing_dir_fails_before_booting)
{
	const char *dir = tmp_path("exists");

	cr_assert_eq(mkdir(dir, 0700), 0);
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--console",
		       "none", "--timings", "--snapshot-on-ready", dir, "--exit-after-snapshot",
		       NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "stderr: %s", r.err);
	cr_assert(strstr(r.err, "ember: error: --snapshot-on-ready: ") &&
		  strstr(r.err, "already exists"), "%s", r.err);
	cr_assert_eq(count_substr(r.err, dir), 1, "the directory is not named once: %s", r.err);
	cr_assert_null(strstr(r.err, "ember-timing"), "the guest was booted: %s", r.err);
	proc_result_free(&r);
	/* a parent that does not exist: the same, before booting */
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--console",
		       "none", "--timings", "--snapshot-on-ready", tmp_path("no/such/dir"), NULL);
	cr_assert_eq(r.status, 1, "stderr: %s", r.err);
	cr_assert(strstr(r.err, "its parent directory ") && strstr(r.err, "/no/such does not exist"),
		  "%s", r.err);
	cr_assert_null(strstr(r.err, "ember-timing"), "the guest was booted: %s", r.err);
}

/* ---- lines for machines (README): key=value, guest words and ids in hex ---- */

Test(ops, ember_report_is_key_value_with_the_guest_words_in_hex)
{
	const char *golden = tmp_path("golden");
	char line[512];
	uint64_t v;

	ember_test_require_kvm();
	snapt_golden(golden, "heap=4M seed=1", 32);
	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", golden, "--console", "none",
		       "--guest-cmd", "serve", "--guest-cmd", "exit", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "stderr: %s", r.err);
	cr_assert_not_null(proc_find_line(r.err, "ember-report msg=serve a0=0x", line, sizeof(line)),
			   "%s", r.err);
	for (unsigned i = 0; i < 4; i++) {
		char key[8], *p;

		snprintf(key, sizeof(key), " a%u=0x", i);
		p = strstr(line, key);
		cr_assert_not_null(p, "no%s in %s", key, line);
		p += strlen(key);
		cr_assert(strspn(p, "0123456789abcdef") > 0 && p[strspn(p, "0123456789abcdef")] == ' ',
			  "a%u is not hex: %s", i, line);
	}
	cr_assert_eq(proc_line_u64(line, "us", &v), 0, "%s", line);
	cr_assert_gt(v, 0);
}

Test(ops, ctl_status_generation_is_the_guests_in_hex)
{
	const char *golden = tmp_path("golden"), *sock = tmp_path("api.sock");
	struct proc *p;
	struct proc_result c;
	char line[128], want[160];
	const char *g;

	ember_test_require_kvm();
	snapt_golden(golden, "heap=4M seed=1", 32);
	p = ember_test_start("restore", "--snapshot", golden, "--api-sock", sock, "--guest-cmd",
			     "generation", NULL);
	cr_assert(proc_wait_output(p, "generation=", WAIT_MS), "the guest never printed it");
	snapt_wait_socket(sock, WAIT_MS);
	ember_test_run(&c, WAIT_MS, "ctl", "--api-sock", sock, "status", NULL);
	cr_assert_eq(c.status, 0, "%s", c.err);
	cr_assert_not_null(proc_find_line(c.out, "generation: ", line, sizeof(line)), "%s", c.out);
	snprintf(want, sizeof(want), "generation=%s", line + strlen("generation: "));
	proc_result_free(&c);
	ember_test_run(&c, WAIT_MS, "ctl", "--api-sock", sock, "shutdown", NULL);
	proc_result_free(&c);
	cr_assert_eq(proc_finish(p, WAIT_MS, &r), 0);
	g = strstr(r.out, "generation=");
	cr_assert_not_null(g, "%s", r.out);
	cr_assert(!strncmp(g, want, strlen(want)) && strlen(want) == strlen("generation=") + 16,
		  "ctl says %s, the guest printed: %s", want, r.out);
}
