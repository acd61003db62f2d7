/*
 * Snapshot test helpers: golden snapshots of the sandbox guest, running ember-snap
 * and `ember ctl`, copying snapshot directories (sharing or copying the memory file),
 * and comparing files. Every helper asserts, so a test reads as the steps it takes.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "snapfmt.h"
#include "testlib.h"

#define MAX_ARGS 64

static void run_va(struct proc_result *r, unsigned timeout_ms, const char *prog, va_list ap)
{
	char *argv[MAX_ARGS];
	unsigned n = 0;
	int ret;

	argv[n++] = (char *)ember_test_path(prog);
	cr_assert_eq(access(argv[0], X_OK), 0, "%s is not built: run `make`", argv[0]);
	for (const char *a = va_arg(ap, const char *); a; a = va_arg(ap, const char *)) {
		cr_assert_lt(n, MAX_ARGS - 1, "too many arguments");
		argv[n++] = (char *)a;
	}
	argv[n] = NULL;
	ret = proc_run(argv, timeout_ms, r);
	cr_assert_eq(ret, 0, "spawning %s: %s", argv[0], strerror(-ret));
}

void snapt_join(char *out, const char *dir, const char *fmt, ...)
{
	char name[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	cr_assert_lt(n, (int)sizeof(name));
	cr_assert_lt(snprintf(out, PATH_MAX, "%s/%s", dir, name), PATH_MAX, "path too long");
}

void snapt_tool(struct proc_result *r, unsigned timeout_ms, ...)
{
	va_list ap;

	va_start(ap, timeout_ms);
	run_va(r, timeout_ms, "ember-snap", ap);
	va_end(ap);
}

void snapt_verify_ok(const char *dir)
{
	struct proc_result r;

	snapt_tool(&r, SNAPT_RUN_MS, "verify", dir, NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "ember-snap verify %s exited %d:\n%s%s", dir, r.status, r.out,
		     r.err);
	cr_assert_str_eq(r.out, "ok\n", "ember-snap verify %s printed:\n%s", dir, r.out);
	proc_result_free(&r);
}

void snapt_ctl(struct proc_result *r, const char *sock, ...)
{
	char *argv[MAX_ARGS];
	unsigned n = 0;
	va_list ap;
	int ret;

	argv[n++] = (char *)ember_test_path("ember");
	argv[n++] = "ctl";
	argv[n++] = "--api-sock";
	argv[n++] = (char *)sock;
	va_start(ap, sock);
	for (const char *a = va_arg(ap, const char *); a; a = va_arg(ap, const char *)) {
		cr_assert_lt(n, MAX_ARGS - 1, "too many arguments");
		argv[n++] = (char *)a;
	}
	va_end(ap);
	argv[n] = NULL;
	ret = proc_run(argv, SNAPT_RUN_MS, r);
	cr_assert_eq(ret, 0, "spawning ember ctl: %s", strerror(-ret));
	ember_test_assert_no_crash(r);
}

void snapt_wait_socket(const char *path, unsigned timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timespec ts = { 0, 2 * 1000 * 1000 };

	cr_assert_lt(strlen(path), sizeof(sa.sun_path));
	strcpy(sa.sun_path, path);
	for (unsigned waited = 0; waited < timeout_ms; waited += 2) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		cr_assert_geq(fd, 0);
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(fd);
			return;
		}
		close(fd);
		nanosleep(&ts, NULL);
	}
	cr_assert_fail("nothing listens on %s after %u ms", path, timeout_ms);
}

uint64_t snapt_checksum(const char *text, unsigned n)
{
	unsigned seen = 0;

	/* whole lines only: "served ws=... checksum=" is a request's result, not the heap's */
	for (const char *line = text; line && *line;) {
		const char *eol = strchr(line, '\n');

		if (!strncmp(line, "checksum=", 9) && seen++ == n) {
			unsigned long long v;
			char *end;

			v = strtoull(line + 9, &end, 16);
			cr_assert_eq(end - (line + 9), 16, "checksum is not 16 hex digits:\n%s", text);
			return v;
		}
		line = eol ? eol + 1 : NULL;
	}
	cr_assert_fail("fewer than %u checksum= lines in:\n%s", n + 1, text);
	return 0;
}

unsigned snapt_count(const char *hay, const char *needle)
{
	unsigned n = 0;

	for (const char *s = strstr(hay, needle); s; s = strstr(s + 1, needle))
		n++;
	return n;
}

uint64_t snapt_golden(const char *dir, const char *cmdline, unsigned mem_mib)
{
	struct proc_result r;
	char mem[16];
	uint64_t sum;

	snprintf(mem, sizeof(mem), "%u", mem_mib);
	ember_test_run(&r, SNAPT_RUN_MS, "boot", "--kernel", ember_test_guest("sandbox"),
		       "--cmdline", cmdline, "--mem", mem, "--console", "stdio",
		       "--snapshot-on-ready", dir, "--exit-after-snapshot", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "golden boot exited %d:\n%s", r.status, r.err);
	sum = snapt_checksum(r.out, 0);
	proc_result_free(&r);
	snapt_verify_ok(dir);
	return sum;
}

static void copy_sparse(const char *src, const char *dst)
{
	int in = open(src, O_RDONLY | O_CLOEXEC), out;
	static uint8_t buf[1 << 20];
	struct stat st;
	off_t data = 0, hole;

	cr_assert_geq(in, 0, "%s: %s", src, strerror(errno));
	cr_assert_eq(fstat(in, &st), 0);
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	cr_assert_geq(out, 0, "%s: %s", dst, strerror(errno));
	while ((data = lseek(in, data, SEEK_DATA)) >= 0) {
		hole = lseek(in, data, SEEK_HOLE);
		cr_assert_geq(hole, data);
		while (data < hole) {
			size_t n = (size_t)(hole - data) < sizeof(buf) ? (size_t)(hole - data) : sizeof(buf);
			ssize_t got = pread(in, buf, n, data);

			cr_assert_gt(got, 0, "reading %s", src);
			cr_assert_eq(pwrite(out, buf, (size_t)got, data), got, "writing %s", dst);
			data += got;
		}
	}
	cr_assert_eq(ftruncate(out, st.st_size), 0);
	close(in);
	close(out);
}

void snapt_copy_dir(const char *src, const char *dst, bool share_memory)
{
	char a[PATH_MAX], b[PATH_MAX];
	uint8_t *state;
	size_t len;

	cr_assert_eq(mkdir(dst, 0755), 0, "mkdir %s: %s", dst, strerror(errno));
	snprintf(a, sizeof(a), "%s/%s", src, SNAP_STATE_FILE);
	state = snapt_read_file(a, &len);
	ember_test_write_file(dst, SNAP_STATE_FILE, state, len);
	free(state);
	snprintf(a, sizeof(a), "%s/%s", src, SNAP_MEMORY_FILE);
	snprintf(b, sizeof(b), "%s/%s", dst, SNAP_MEMORY_FILE);
	/* a hard link: restore maps the file MAP_PRIVATE and never writes it */
	if (share_memory)
		cr_assert_eq(link(a, b), 0, "link %s: %s", b, strerror(errno));
	else
		copy_sparse(a, b);
}

bool snapt_files_equal(const char *a, const char *b)
{
	FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
	static uint8_t ba[1 << 16], bb[1 << 16];
	bool same = true;

	cr_assert_not_null(fa, "%s: %s", a, strerror(errno));
	cr_assert_not_null(fb, "%s: %s", b, strerror(errno));
	for (;;) {
		size_t na = fread(ba, 1, sizeof(ba), fa), nb = fread(bb, 1, sizeof(bb), fb);

		if (na != nb || memcmp(ba, bb, na)) {
			same = false;
			break;
		}
		if (na == 0)
			break;
	}
	fclose(fa);
	fclose(fb);
	return same;
}
