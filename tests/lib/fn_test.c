/*
 * The fn guest under test: golden snapshots of it with a vsock device, restored clones
 * reached through their hybrid sockets, and its `mix` function recomputed on the host
 * from the snapshot's own memory file, so a response proves the restored heap right.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "testlib.h"

#define MIX_SEED 0x6d6978ull /* "mix" */

uint64_t hash64(const void *buf, size_t len, uint64_t seed); /* tests/guest/lib/hash.c */

static uint64_t line_hex(const char *text, const char *key)
{
	const char *p = strstr(text, key);

	cr_assert_not_null(p, "no '%s' in:\n%s", key, text);
	return strtoull(p + strlen(key), NULL, 0);
}

void fnt_golden(struct fnt_golden *g, const char *dir, unsigned heap_mib, unsigned mem_mib)
{
	char cmdline[64], mem[16], sock[PATH_MAX], mfile[PATH_MAX + 16];
	struct proc_result r;
	ssize_t got;
	int fd;

	memset(g, 0, sizeof(*g));
	snapt_join(g->dir, dir, "fn-golden");
	snapt_join(sock, dir, "fn-boot.sock");
	snprintf(cmdline, sizeof(cmdline), "heap=%uM seed=7", heap_mib);
	snprintf(mem, sizeof(mem), "%u", mem_mib);
	ember_test_run(&r, SNAPT_RUN_MS, "boot", "--kernel", ember_test_guest("fn"), "--cmdline",
		       cmdline, "--mem", mem, "--vsock-cid", "3", "--vsock-uds", sock,
		       "--snapshot-on-ready", g->dir, "--exit-after-snapshot", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "fn boot exited %d:\n%s%s", r.status, r.out, r.err);
	g->heap_at = line_hex(r.out, "heap_at=");
	g->heap_bytes = (uint64_t)heap_mib << 20;
	g->checksum = snapt_checksum(r.out, 0);
	proc_result_free(&r);
	snapt_verify_ok(g->dir);
	cr_assert_eq(access(sock, F_OK), -1, "the boot's vsock socket %s was left behind", sock);

	/* below 3 GiB, a RAM address is its offset in the memory file */
	cr_assert_leq(g->heap_at + g->heap_bytes, MEM_HOLE_START);
	snprintf(mfile, sizeof(mfile), "%s/memory.raw", g->dir);
	fd = open(mfile, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s: %s", mfile, strerror(errno));
	g->heap = malloc(g->heap_bytes);
	cr_assert_not_null(g->heap);
	got = pread(fd, g->heap, g->heap_bytes, (off_t)g->heap_at);
	cr_assert_eq(got, (ssize_t)g->heap_bytes, "short read of the heap from %s", mfile);
	close(fd);
	cr_assert_eq(hash64(g->heap, g->heap_bytes, 0), g->checksum,
		     "the memory file's heap does not have the checksum fn printed");
}

void fnt_golden_free(struct fnt_golden *g)
{
	free(g->heap);
	g->heap = NULL;
}

struct proc *fnt_restore(const char *snapshot, const char *uds, ...)
{
	char *argv[64];
	unsigned n = 0;
	struct proc *p;
	va_list ap;

	argv[n++] = (char *)ember_test_path("ember");
	argv[n++] = "restore";
	argv[n++] = "--snapshot";
	argv[n++] = (char *)snapshot;
	argv[n++] = "--vsock-uds";
	argv[n++] = (char *)uds;
	va_start(ap, uds);
	for (const char *a = va_arg(ap, const char *); a; a = va_arg(ap, const char *)) {
		cr_assert_lt(n, ARRAY_SIZE(argv) - 1);
		argv[n++] = (char *)a;
	}
	va_end(ap);
	argv[n] = NULL;
	cr_assert_eq(proc_start(&p, argv), 0);
	snapt_wait_socket(uds, SNAPT_RUN_MS);
	return p;
}

size_t fnt_mix(const struct fnt_golden *g, const uint8_t *p, size_t n, uint8_t *out)
{
	uint64_t pages = g->heap_bytes / 4096, key = hash64(p, n, MIX_SEED);
	uint64_t start = key % pages, d = key, touched = n ? (n + 4095) / 4096 : 1;

	for (uint64_t k = 0; k < touched; k++)
		d = hash64(g->heap + ((start + k) % pages) * 4096, 4096, d);
	for (int i = 0; i < 8; i++)
		out[i] = (uint8_t)(d >> (8 * i));
	for (size_t i = 0; i < n; i++)
		out[8 + i] = p[i] ^ g->heap[(start * 4096 + i) % g->heap_bytes];
	return 8 + n;
}

int fnt_connect(const char *uds, uint32_t port)
{
	struct errbuf eb = { "" };
	uint32_t host_port;
	int fd = invoke_connect(uds, port, invoke_clock_ns() + 10ull * 1000000000, &host_port, &eb);

	cr_assert_geq(fd, 0, "connecting to port %u through %s: %s", port, uds, eb.msg);
	return fd;
}

void fnt_invoke_check(const struct fnt_golden *g, int fd, uint64_t id, const uint8_t *p, size_t n)
{
	struct invoke_result res = { 0 };
	struct errbuf eb = { "" };
	uint8_t *want = malloc(n + 8);
	size_t wlen;
	int r;

	cr_assert_not_null(want);
	r = invoke_call(fd, id, p, (uint32_t)n, invoke_clock_ns() + 20ull * 1000000000, &res, &eb);
	cr_assert_eq(r, 0, "invocation %" PRIu64 " (%zu bytes): %s", id, n, eb.msg);
	cr_assert_eq(res.status, INVOKE_OK, "invocation %" PRIu64 ": status %u: %s", id, res.status,
		     res.payload ? (const char *)res.payload : "");
	wlen = fnt_mix(g, p, n, want);
	cr_assert_eq(res.payload_len, wlen, "invocation %" PRIu64 ": %u bytes back, expected %zu", id,
		     res.payload_len, wlen);
	for (size_t i = 0; i < wlen; i++)
		if (res.payload[i] != want[i])
			cr_assert_fail("invocation %" PRIu64 " (%zu bytes): byte %zu is 0x%02x, the "
				       "golden heap gives 0x%02x", id, n, i, res.payload[i], want[i]);
	invoke_result_free(&res);
	free(want);
}

/* Runs `ember ctl --api-sock sock guest-cmd CMD` and asserts it was accepted. */
void fnt_guest_cmd(const char *sock, const char *cmd)
{
	struct proc_result r;

	snapt_ctl(&r, sock, "guest-cmd", cmd, NULL);
	cr_assert_eq(r.status, 0, "guest-cmd %s: %s%s", cmd, r.out, r.err);
	proc_result_free(&r);
}

void fnt_suite_setup(struct fnt_golden *g, char *tmp, size_t len, unsigned heap_mib,
		     unsigned mem_mib)
{
	ember_test_require_kvm();
	ember_test_tmpdir(tmp, len);
	fnt_golden(g, tmp, heap_mib, mem_mib);
}

void fnt_suite_teardown(struct fnt_golden *g, char *tmp)
{
	fnt_golden_free(g);
	ember_test_kill_strays(tmp);
	ember_test_rmtree(tmp);
}
