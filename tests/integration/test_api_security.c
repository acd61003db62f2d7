/*
 * Who may use the control socket, and what it may make ember do (issue 9, item 3; README
 * "ember ctl", FORMAT.md section 9): the socket is 0600 whatever the umask, another user
 * cannot use it (unless --api-group says so), snapshot paths are absolute, symlink-free
 * and beneath --snapshot-root, a live socket is never taken over, silent clients do not
 * lock the socket, and `ember ctl` neither hangs on a stopped VMM nor prints its escape
 * codes. The pool's socket follows the same rules.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <msgpack.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#define WAIT_MS 20000
#define NOBODY 65534
#define GROUP 54321 /* a gid no file here belongs to */

static char tmp[PATH_MAX], sock[PATH_MAX];
static struct proc *vmm;

static void fini(void)
{
	if (vmm) {
		struct proc_result dead;

		kill(proc_pid(vmm), SIGCONT);
		proc_finish(vmm, 1, &dead);
		proc_result_free(&dead);
		vmm = NULL;
	}
	unsetenv("EMBER_API_IDLE_MS");
	ember_test_kill_strays(tmp);
	ember_test_rmtree(tmp);
	tmp[0] = 0;
}

static void init(void)
{
	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	/* other users may look into it: only the socket's own mode keeps them out */
	cr_assert_eq(chmod(tmp, 0755), 0);
	snapt_join(sock, tmp, "api.sock");
}

TestSuite(api_security, .init = init, .fini = fini, .timeout = 60);

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* The sandbox guest with a control socket at sock (and more flags), once it serves. */
static void start_vmm(const char *a1, const char *a2, const char *a3, const char *a4)
{
	vmm = ember_test_start("boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
			       "heap=4M ws=64K seed=2", "--mem", "16", "--api-sock", sock, a1, a2,
			       a3, a4, NULL);
	cr_assert(proc_wait_output(vmm, "checksum=", WAIT_MS), "the sandbox never printed its checksum");
	snapt_wait_socket(sock, WAIT_MS);
}

/* ---- raw clients -------------------------------------------------------------------- */

static int connect_to(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { 5, 0 };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	cr_assert_lt(strlen(path), sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

/* Sends {"verb": verb[, "dir": dir]}; reads the response into buf (its body, NUL-ended).
 * The body's length, 0 when the server closed without a frame, -1 on a timeout. */
static ssize_t request(int fd, const char *verb, const char *dir, char *buf, size_t cap)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint8_t hdr[4];
	size_t got = 0;
	uint32_t len;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, dir ? 2 : 1);
	msgpack_pack_str(&pk, 4);
	msgpack_pack_str_body(&pk, "verb", 4);
	msgpack_pack_str(&pk, strlen(verb));
	msgpack_pack_str_body(&pk, verb, strlen(verb));
	if (dir) {
		msgpack_pack_str(&pk, 3);
		msgpack_pack_str_body(&pk, "dir", 3);
		msgpack_pack_str(&pk, strlen(dir));
		msgpack_pack_str_body(&pk, dir, strlen(dir));
	}
	hdr[0] = hdr[1] = 0;
	hdr[2] = (uint8_t)(sb.size >> 8);
	hdr[3] = (uint8_t)sb.size;
	/* a refusing server may answer and close before the request is sent: read anyway */
	if (send(fd, hdr, 4, MSG_NOSIGNAL) == 4 &&
	    send(fd, sb.data, sb.size, MSG_NOSIGNAL) != (ssize_t)sb.size) {
		/* the answer, if any, is still in our receive queue */
	}
	msgpack_sbuffer_destroy(&sb);
	while (got < 4) {
		ssize_t n = recv(fd, hdr + got, 4 - got, 0);

		if (n <= 0)
			return n == 0 || errno == ECONNRESET ? 0 : -1;
		got += (size_t)n;
	}
	len = (uint32_t)hdr[2] << 8 | hdr[3];
	if (hdr[0] || hdr[1] || len >= cap)
		return -1;
	for (got = 0; got < len;) {
		ssize_t n = recv(fd, buf + got, len - got, 0);

		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	buf[len] = 0;
	/* msgpack strings are raw bytes: good enough for strstr on ASCII keys and texts */
	for (size_t i = 0; i < len; i++)
		if (!buf[i])
			buf[i] = ' ';
	return (ssize_t)len;
}

enum { AS_OK = 0, AS_CONNECT_DENIED = 10, AS_REFUSED = 20, AS_CLOSED = 30, AS_OTHER = 40 };

/* In a child running as uid NOBODY with gid (and only gid): a status request on path.
 * Returns what happened (AS_*). */
static int status_as_nobody(const char *path, gid_t gid)
{
	pid_t pid = fork();
	int st;

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		char buf[512];
		ssize_t n;
		int fd;

		if (setgroups(1, &gid) || setresgid(gid, gid, gid) ||
		    setresuid(NOBODY, NOBODY, NOBODY))
			_exit(99);
		fd = connect_to(path);
		if (fd == -EACCES)
			_exit(AS_CONNECT_DENIED);
		if (fd < 0)
			_exit(AS_OTHER);
		n = request(fd, "status", NULL, buf, sizeof(buf));
		if (n == 0)
			_exit(AS_CLOSED);
		if (n > 0 && strstr(buf, "permission denied"))
			_exit(AS_REFUSED);
		if (n > 0 && strstr(buf, "running"))
			_exit(AS_OK);
		_exit(AS_OTHER);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st), "the child died: status 0x%x", st);
	cr_assert_neq(WEXITSTATUS(st), 99, "setresuid to nobody failed (not root?)");
	return WEXITSTATUS(st);
}

/* ---- who may use it ------------------------------------------------------------------- */

Test(api_security, socket_is_0600_even_under_umask_000)
{
	struct stat st;
	mode_t old = umask(0); /* inherited by ember */

	start_vmm(NULL, NULL, NULL, NULL);
	umask(old);
	cr_assert_eq(lstat(sock, &st), 0);
	cr_assert(S_ISSOCK(st.st_mode));
	cr_assert_eq(st.st_mode & 07777, 0600, "socket mode %o", st.st_mode & 07777);
}

Test(api_security, another_user_cannot_connect)
{
	mode_t old = umask(0);

	start_vmm(NULL, NULL, NULL, NULL);
	umask(old);
	cr_assert_eq(status_as_nobody(sock, NOBODY), AS_CONNECT_DENIED);
}

Test(api_security, another_user_is_refused_by_peer_credentials_even_if_the_mode_lets_it_in)
{
	struct proc_result r;

	start_vmm(NULL, NULL, NULL, NULL);
	cr_assert_eq(chmod(sock, 0666), 0); /* an operator's mistake */
	cr_assert_eq(status_as_nobody(sock, NOBODY), AS_REFUSED);
	cr_assert(proc_wait_output(vmm, "refused a client: uid=65534", WAIT_MS),
		  "no log line for the refused client");
	/* and ember still serves its owner */
	snapt_ctl(&r, sock, "status", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	proc_result_free(&r);
}

Test(api_security, api_group_lets_its_members_in)
{
	char gid[16];
	struct stat st;

	snprintf(gid, sizeof(gid), "%d", GROUP);
	start_vmm("--api-group", gid, NULL, NULL);
	cr_assert_eq(lstat(sock, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0660, "socket mode %o", st.st_mode & 07777);
	cr_assert_eq(st.st_gid, GROUP);
	cr_assert_eq(status_as_nobody(sock, GROUP), AS_OK);
	/* and only them */
	cr_assert_eq(status_as_nobody(sock, NOBODY), AS_CONNECT_DENIED);
}

Test(api_security, unknown_api_group_is_a_usage_error)
{
	struct proc_result r;

	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("hello"), "--api-sock",
		       sock, "--api-group", "no-such-group-here", NULL);
	cr_assert_eq(r.status, 2, "exit %d: %s", r.status, r.err);
	cr_assert(strstr(r.err, "--api-group: 'no-such-group-here'"), "%s", r.err);
	proc_result_free(&r);
}

/* ---- no takeover ---------------------------------------------------------------------- */

Test(api_security, second_ember_does_not_take_over_a_live_socket)
{
	struct proc_result r;

	start_vmm(NULL, NULL, NULL, NULL);
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("hello"), "--api-sock",
		       sock, NULL);
	cr_assert_eq(r.status, 1, "exit %d: %s", r.status, r.err);
	cr_assert(strstr(r.err, "another process is serving this socket"), "%s", r.err);
	proc_result_free(&r);
	snapt_ctl(&r, sock, "status", NULL);
	cr_assert_eq(r.status, 0, "the first ember no longer answers: %s", r.err);
	proc_result_free(&r);
}

Test(api_security, stale_socket_is_replaced)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct proc_result r;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	cr_assert_lt(strlen(sock), sizeof(sa.sun_path));
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd); /* the file stays, nobody listens */
	start_vmm(NULL, NULL, NULL, NULL);
	snapt_ctl(&r, sock, "status", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	proc_result_free(&r);
}

/* ---- silent clients -------------------------------------------------------------------- */

static void lock_out_attempt(size_t bytes_each)
{
	static const uint8_t half[] = { 0, 0, 0, 20, 0x81 };
	struct proc_result r;
	int fds[8];
	char c;

	setenv("EMBER_API_IDLE_MS", "300", 1);
	start_vmm(NULL, NULL, NULL, NULL);
	for (int i = 0; i < 8; i++) {
		fds[i] = connect_to(sock);
		cr_assert_geq(fds[i], 0);
		if (bytes_each)
			cr_assert_eq(send(fds[i], half, bytes_each, 0), (ssize_t)bytes_each);
	}
	sleep_ms(600);
	snapt_ctl(&r, sock, "--timeout", "5", "status", NULL);
	cr_assert_eq(r.status, 0, "a ninth client was locked out: %s", r.err);
	proc_result_free(&r);
	for (int i = 0; i < 8; i++) {
		cr_assert_eq(recv(fds[i], &c, 1, 0), 0, "silent client %d was not dropped", i);
		close(fds[i]);
	}
}

Test(api_security, eight_silent_clients_do_not_lock_out_a_ninth)
{
	lock_out_attempt(0);
}

Test(api_security, eight_half_sent_requests_do_not_lock_out_a_ninth)
{
	lock_out_attempt(5);
}

Test(api_security, a_served_client_may_wait_between_requests)
{
	char buf[512];
	int fd;

	setenv("EMBER_API_IDLE_MS", "200", 1);
	start_vmm(NULL, NULL, NULL, NULL);
	fd = connect_to(sock);
	cr_assert_geq(fd, 0);
	cr_assert_gt(request(fd, "status", NULL, buf, sizeof(buf)), 0);
	sleep_ms(600); /* as ember pool's connection to a VM in standby */
	cr_assert_gt(request(fd, "status", NULL, buf, sizeof(buf)), 0, "dropped between requests");
	close(fd);
}

Test(api_security, a_served_client_stuck_inside_its_next_request_is_dropped)
{
	static const uint8_t half[] = { 0, 0, 0, 20, 0x81 };
	char buf[512], c;
	int fd;

	setenv("EMBER_API_IDLE_MS", "200", 1);
	start_vmm(NULL, NULL, NULL, NULL);
	fd = connect_to(sock);
	cr_assert_geq(fd, 0);
	cr_assert_gt(request(fd, "status", NULL, buf, sizeof(buf)), 0);
	cr_assert_eq(send(fd, half, sizeof(half), 0), (ssize_t)sizeof(half));
	cr_assert_eq(recv(fd, &c, 1, 0), 0, "not dropped half-way through a request");
	close(fd);
}

Test(api_security, bad_idle_limit_is_an_error)
{
	struct proc_result r;

	setenv("EMBER_API_IDLE_MS", "soon", 1);
	ember_test_run(&r, WAIT_MS, "boot", "--kernel", ember_test_guest("hello"), "--api-sock",
		       sock, NULL);
	cr_assert_eq(r.status, 1, "exit %d: %s", r.status, r.err);
	cr_assert(strstr(r.err, "EMBER_API_IDLE_MS: 'soon'"), "%s", r.err);
	proc_result_free(&r);
}

/* ---- ember ctl on a stopped or hostile server ------------------------------------------- */

Test(api_security, ctl_times_out_on_a_stopped_server)
{
	struct proc_result r;
	struct timespec t0, t1;

	start_vmm(NULL, NULL, NULL, NULL);
	cr_assert_eq(kill(proc_pid(vmm), SIGSTOP), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	snapt_ctl(&r, sock, "--timeout", "1", "status", NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	kill(proc_pid(vmm), SIGCONT);
	cr_assert_eq(r.status, 1, "exit %d: %s", r.status, r.err);
	cr_assert(strstr(r.err, "no answer within 1 s"), "%s", r.err);
	cr_assert_lt(t1.tv_sec - t0.tv_sec, 10);
	proc_result_free(&r);
}

struct fake_server {
	int listen_fd;
	const uint8_t *reply;
	size_t reply_len;
};

/* Answers one request with a canned response body. */
static void *fake_serve(void *arg)
{
	struct fake_server *f = arg;
	uint8_t req[512], hdr[4] = { 0, 0, (uint8_t)(f->reply_len >> 8), (uint8_t)f->reply_len };
	int fd = accept(f->listen_fd, NULL, NULL);

	if (fd >= 0) {
		uint8_t rh[4];
		size_t want = 0;

		/* the whole request first: closing on a half-read one would reset ctl's send */
		if (recv(fd, rh, 4, MSG_WAITALL) == 4)
			want = (size_t)rh[2] << 8 | rh[3];
		if (want && want <= sizeof(req) && recv(fd, req, want, MSG_WAITALL) > 0 &&
		    send(fd, hdr, 4, MSG_NOSIGNAL) == 4 &&
		    send(fd, f->reply, f->reply_len, MSG_NOSIGNAL) > 0) {
			/* sent */
		}
		close(fd);
	}
	return NULL;
}

/* `ember ctl status` against a server that answers with the msgpack map {ok, key: val}. */
static void ctl_against_fake(bool ok, const char *key, const char *val, struct proc_result *r)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct fake_server f;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	pthread_t th;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	msgpack_pack_str(&pk, 2);
	msgpack_pack_str_body(&pk, "ok", 2);
	if (ok)
		msgpack_pack_true(&pk);
	else
		msgpack_pack_false(&pk);
	msgpack_pack_str(&pk, strlen(key));
	msgpack_pack_str_body(&pk, key, strlen(key));
	msgpack_pack_str(&pk, strlen(val));
	msgpack_pack_str_body(&pk, val, strlen(val));
	f = (struct fake_server){ .listen_fd = socket(AF_UNIX, SOCK_STREAM, 0),
				  .reply = (const uint8_t *)sb.data, .reply_len = sb.size };
	cr_assert_lt(strlen(sock), sizeof(sa.sun_path));
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	cr_assert_eq(bind(f.listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(listen(f.listen_fd, 1), 0);
	cr_assert_eq(pthread_create(&th, NULL, fake_serve, &f), 0);
	snapt_ctl(r, sock, "status", NULL);
	pthread_join(th, NULL);
	close(f.listen_fd);
	msgpack_sbuffer_destroy(&sb);
}

Test(api_security, ctl_escapes_escape_codes_in_a_refusal)
{
	struct proc_result r;

	ctl_against_fake(false, "error", "\x1b[2Jgone\x07\n", &r);
	cr_assert_eq(r.status, 1, "exit %d", r.status);
	cr_assert(!memchr(r.err, 0x1b, r.err_len) && !memchr(r.err, 0x07, r.err_len),
		  "a raw escape code reached the terminal");
	cr_assert(strstr(r.err, "refused: \\x1b[2Jgone\\x07\\n"), "%s", r.err);
	proc_result_free(&r);
}

Test(api_security, ctl_escapes_escape_codes_in_values)
{
	struct proc_result r;

	ctl_against_fake(true, "state", "\x1b]0;owned\x07", &r);
	cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.err);
	cr_assert(!memchr(r.out, 0x1b, r.out_len) && !memchr(r.out, 0x07, r.out_len),
		  "a raw escape code reached the terminal");
	cr_assert(strstr(r.out, "state: \\x1b]0;owned\\x07"), "%s", r.out);
	proc_result_free(&r);
}

/* ---- where snapshots may go ------------------------------------------------------------- */

static void expect_snapshot_refused(const char *dir, const char *why)
{
	char buf[1024];
	int fd = connect_to(sock);

	cr_assert_geq(fd, 0);
	cr_assert_gt(request(fd, "snapshot", dir, buf, sizeof(buf)), 0);
	close(fd);
	cr_assert(strstr(buf, why), "snapshot %s: %s", dir, buf);
	cr_assert(strstr(buf, dir) || dir[0] != '/', "the error does not name %s: %s", dir, buf);
}

Test(api_security, relative_snapshot_path_is_refused)
{
	char buf[1024];
	int fd;

	start_vmm(NULL, NULL, NULL, NULL);
	fd = connect_to(sock);
	cr_assert_geq(fd, 0);
	cr_assert_gt(request(fd, "snapshot", "rel-snap", buf, sizeof(buf)), 0);
	close(fd);
	cr_assert(strstr(buf, "snapshot directory 'rel-snap' is not an absolute path"), "%s", buf);
	cr_assert_neq(access("rel-snap", F_OK), 0, "created relative to ember's cwd");
}

Test(api_security, snapshot_path_through_a_symlink_is_refused)
{
	char real[PATH_MAX], link[PATH_MAX], via[PATH_MAX + 8], made[PATH_MAX + 8];

	start_vmm(NULL, NULL, NULL, NULL);
	snapt_join(real, tmp, "real");
	snapt_join(link, tmp, "link");
	cr_assert_eq(mkdir(real, 0755), 0);
	cr_assert_eq(symlink(real, link), 0);
	snprintf(via, sizeof(via), "%s/s1", link);
	expect_snapshot_refused(via, "symlink");
	snprintf(made, sizeof(made), "%s/s1", real);
	cr_assert_neq(access(made, F_OK), 0, "the snapshot went through the symlink");
}

Test(api_security, snapshot_outside_snapshot_root_is_refused)
{
	char root[PATH_MAX], other[PATH_MAX], dir[PATH_MAX + 32];
	struct proc_result r;

	snapt_join(root, tmp, "root");
	snapt_join(other, tmp, "other");
	cr_assert_eq(mkdir(root, 0755), 0);
	cr_assert_eq(mkdir(other, 0755), 0);
	start_vmm("--snapshot-root", root, NULL, NULL);
	snprintf(dir, sizeof(dir), "%s/s1", other);
	expect_snapshot_refused(dir, "is outside --snapshot-root");
	snprintf(dir, sizeof(dir), "%s/../other/s2", root);
	expect_snapshot_refused(dir, "is outside --snapshot-root");
	snprintf(dir, sizeof(dir), "%s/s2", other);
	cr_assert_neq(access(dir, F_OK), 0, "the snapshot escaped the root by ..");
	/* beneath the root it works */
	snprintf(dir, sizeof(dir), "%s/s3", root);
	snapt_ctl(&r, sock, "snapshot", dir, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	proc_result_free(&r);
	snapt_verify_ok(dir);
}

Test(api_security, symlink_inside_snapshot_root_is_refused)
{
	char root[PATH_MAX], out[PATH_MAX], link[PATH_MAX + 8], dir[PATH_MAX + 16];

	snapt_join(root, tmp, "root");
	snapt_join(out, tmp, "out");
	cr_assert_eq(mkdir(root, 0755), 0);
	cr_assert_eq(mkdir(out, 0755), 0);
	snprintf(link, sizeof(link), "%s/esc", root);
	cr_assert_eq(symlink(out, link), 0);
	start_vmm("--snapshot-root", root, NULL, NULL);
	snprintf(dir, sizeof(dir), "%s/s1", link);
	expect_snapshot_refused(dir, "symlink");
}

/* ---- the pool's socket ------------------------------------------------------------------- */

Test(api_security, pool_socket_is_0600_and_refuses_other_users)
{
	struct fnt_golden golden;
	struct proc_result r;
	struct stat st;
	mode_t old;

	setenv("TMPDIR", tmp, 1); /* the pool's run directory: removed with tmp */
	fnt_golden(&golden, tmp, 4, 32);
	old = umask(0);
	vmm = ember_test_start("pool", "--snapshot", golden.dir, "--socket", sock, "--size", "1",
			       NULL);
	umask(old);
	snapt_wait_socket(sock, WAIT_MS);
	cr_assert_eq(lstat(sock, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600, "pool socket mode %o", st.st_mode & 07777);
	cr_assert_eq(status_as_nobody(sock, NOBODY), AS_CONNECT_DENIED);
	cr_assert_eq(chmod(sock, 0666), 0);
	cr_assert_eq(status_as_nobody(sock, NOBODY), AS_CLOSED);
	cr_assert(proc_wait_output(vmm, "refused a client: uid=65534", WAIT_MS),
		  "no log line for the refused client");
	/* a second pool on the same socket is refused; the first still answers */
	ember_test_run(&r, WAIT_MS, "pool", "--snapshot", golden.dir, "--socket", sock, NULL);
	cr_assert_neq(r.status, 0);
	cr_assert(strstr(r.err, "another process is serving this socket"), "%s", r.err);
	proc_result_free(&r);
	ember_test_run(&r, WAIT_MS, "pool", "status", "--socket", sock, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	proc_result_free(&r);
	/* a drained pool reaps its VMs: none is left for the test runner to adopt */
	kill(proc_pid(vmm), SIGTERM);
	cr_assert_eq(proc_finish(vmm, WAIT_MS, &r), 0);
	vmm = NULL;
	cr_assert_eq(r.status, 0, "the pool exited %d: %s", r.status, r.err);
	proc_result_free(&r);
	fnt_golden_free(&golden);
}
