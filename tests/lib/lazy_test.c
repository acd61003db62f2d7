/*
 * Helpers for the lazy-memory tests (uffd backend, lz4 chunks, working sets): golden
 * snapshots whose original VM also served a request (the reference every restore is
 * compared with), restores with options and guest commands given as space-separated
 * lists, the page server's statistics line, damaging one lz4 chunk, and restoring
 * with userfaultfd or io_uring made unavailable by a seccomp filter.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapfmt.h"
#include "testlib.h"

#define MAX_ARGS 64

/* Splits a space-separated list into argv entries (modifying buf). */
static void split_into(char *buf, const char *prefix, char **argv, unsigned *n)
{
	for (char *save = NULL, *tok = strtok_r(buf, " ", &save); tok;
	     tok = strtok_r(NULL, " ", &save)) {
		cr_assert_lt(*n + 2, MAX_ARGS, "too many arguments");
		if (prefix)
			argv[(*n)++] = (char *)prefix;
		argv[(*n)++] = tok;
	}
}

/* argv for `ember restore --snapshot dir --timings OPTS --guest-cmd CMD...`; bufs are
 * the caller's copies of opts and cmds, which argv points into. */
static void restore_argv(char **argv, const char *dir, char *opts_buf, char *cmds_buf)
{
	unsigned n = 0;

	argv[n++] = (char *)ember_test_path("ember");
	cr_assert_eq(access(argv[0], X_OK), 0, "%s is not built: run `make`", argv[0]);
	argv[n++] = "restore";
	argv[n++] = "--snapshot";
	argv[n++] = (char *)dir;
	argv[n++] = "--timings";
	argv[n++] = "--console";
	argv[n++] = "stdio";
	split_into(opts_buf, NULL, argv, &n);
	split_into(cmds_buf, "--guest-cmd", argv, &n);
	argv[n] = NULL;
}

void lazyt_golden(struct lazyt_golden *g, const char *dir, const char *cmdline, unsigned mem_mib,
		  bool compress)
{
	struct proc_result r;
	char mem[16], line[256];
	/* last in the list: NULL ends it early */
	const char *comp = compress ? "--compress" : NULL;

	memset(g, 0, sizeof(*g));
	cr_assert_lt(snprintf(g->dir, sizeof(g->dir), "%s", dir), (int)sizeof(g->dir));
	snprintf(mem, sizeof(mem), "%u", mem_mib);
	/* the original VM goes on after the snapshot and serves one request: its answer is
	 * what every restored clone must answer */
	ember_test_run(&r, SNAPT_RUN_MS, "boot", "--kernel", ember_test_guest("sandbox"),
		       "--cmdline", cmdline, "--mem", mem, "--console", "stdio",
		       "--snapshot-on-ready", dir, "--guest-cmd", "serve", "--guest-cmd", "exit", comp,
		       NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "golden boot exited %d:\n%s%s", r.status, r.out, r.err);
	g->checksum = snapt_checksum(r.out, 0);
	cr_assert_not_null(proc_find_line(r.out, "served ", g->served, sizeof(g->served)),
			   "the golden VM served no request:\n%s", r.out);
	cr_assert_not_null(proc_find_line(r.out, "sandbox: ", line, sizeof(line)), "%s", r.out);
	cr_assert_eq(proc_line_u64(line, "heap_at", &g->heap_at), 0, "%s", line);
	cr_assert_eq(proc_line_u64(line, "heap", &g->heap), 0, "%s", line);
	cr_assert_eq(proc_line_u64(line, "ws", &g->ws), 0, "%s", line);
	g->mem = (uint64_t)mem_mib << 20;
	proc_result_free(&r);
	snapt_verify_ok(dir);
}

void lazyt_restore(struct proc_result *r, const char *dir, const char *opts, const char *cmds)
{
	char *argv[MAX_ARGS], *o = strdup(opts), *c = strdup(cmds);
	int ret;

	cr_assert(o && c);
	restore_argv(argv, dir, o, c);
	ret = proc_run(argv, SNAPT_RUN_MS, r);
	free(o);
	free(c);
	cr_assert_eq(ret, 0, "spawning ember: %s", strerror(-ret));
}

struct proc *lazyt_restore_start(const char *dir, const char *opts, const char *cmds)
{
	/* argv must outlive only the spawn: posix_spawn copies it */
	char *argv[MAX_ARGS], *o = strdup(opts), *c = strdup(cmds);
	struct proc *p;
	int ret;

	cr_assert(o && c);
	restore_argv(argv, dir, o, c);
	ret = proc_start(&p, argv);
	free(o);
	free(c);
	cr_assert_eq(ret, 0, "spawning ember: %s", strerror(-ret));
	return p;
}

void lazyt_assert_golden_answers(const struct proc_result *r, const struct lazyt_golden *g,
				 const char *what)
{
	char served[sizeof(g->served)];

	ember_test_assert_no_crash(r);
	cr_assert_eq(r->status, 0, "%s: exit %d\n%s%s", what, r->status, r->out, r->err);
	cr_assert_eq(snapt_checksum(r->out, 0), g->checksum,
		     "%s: verify before serve: the heap is not the golden one\n%s", what, r->out);
	cr_assert_not_null(proc_find_line(r->out, "served ", served, sizeof(served)), "%s:\n%s",
			   what, r->out);
	cr_assert_str_eq(served, g->served, "%s: the request's answer differs from the golden VM's",
			 what);
	cr_assert_eq(snapt_checksum(r->out, 1), g->checksum, "%s: verify after serve\n%s", what,
		     r->out);
}

uint64_t lazyt_pager_stat(const struct proc_result *r, const char *key)
{
	char line[512];
	uint64_t v;

	cr_assert_not_null(proc_find_line(r->err, "ember-pager ", line, sizeof(line)),
			   "no ember-pager line (uffd backend, --timings):\n%s", r->err);
	cr_assert_eq(proc_line_u64(line, key, &v), 0, "no %s= in '%s'", key, line);
	return v;
}

void lazyt_copy_snapshot(const char *src, const char *dst)
{
	DIR *d = opendir(src);
	struct dirent *e;

	cr_assert_not_null(d, "%s: %s", src, strerror(errno));
	cr_assert_eq(mkdir(dst, 0755), 0, "mkdir %s: %s", dst, strerror(errno));
	while ((e = readdir(d))) {
		char path[PATH_MAX];
		uint8_t *data;
		size_t len;

		if (e->d_name[0] == '.')
			continue;
		snapt_join(path, src, "%s", e->d_name);
		data = snapt_read_file(path, &len);
		ember_test_write_file(dst, e->d_name, data, len);
		free(data);
	}
	closedir(d);
}

uint64_t lazyt_nonzero_chunk(const char *dir, uint64_t from_offset)
{
	struct snap_err err = { "" };
	struct snap_dir sd;
	uint64_t i;

	cr_assert_eq(snap_dir_open(dir, &sd, &err), 0, "%s", err.msg);
	cr_assert_not_null(sd.lz4, "%s is not lz4-encoded", dir);
	for (i = from_offset >> sd.lz4->chunk_shift; i < sd.lz4->nr_chunks; i++)
		if (snap_lz4_chunk(sd.lz4, i)->kind != SNAP_CHUNK_ZERO)
			break;
	cr_assert_lt(i, sd.lz4->nr_chunks, "no non-zero chunk at or after 0x%llx",
		     (unsigned long long)from_offset);
	snap_dir_close(&sd);
	return i;
}

void lazyt_damage_chunk(const char *dir, uint64_t chunk, bool last_byte)
{
	struct snap_err err = { "" };
	struct snap_dir sd;
	const struct snap_lz4_chunk *c;
	char path[PATH_MAX];
	uint64_t off;
	uint8_t b;
	int fd;

	cr_assert_eq(snap_dir_open(dir, &sd, &err), 0, "%s", err.msg);
	cr_assert_not_null(sd.lz4, "%s is not lz4-encoded", dir);
	c = snap_lz4_chunk(sd.lz4, chunk);
	cr_assert_not_null(c);
	cr_assert_neq(c->kind, SNAP_CHUNK_ZERO, "chunk %llu has no stored bytes",
		      (unsigned long long)chunk);
	off = c->offset + (last_byte ? c->stored_len - 1 : c->stored_len / 2);
	snapt_join(path, dir, "%s", sd.state.memory.file);
	snap_dir_close(&sd);
	/* in place: the file keeps its size, so the index still accepts it */
	fd = open(path, O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0x20;
	cr_assert_eq(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
}

uint64_t *lazyt_ws_load(const char *dir, uint64_t *n)
{
	struct snap_err err = { "" };
	struct snap_state st;
	uint64_t *pages = NULL;

	cr_assert_eq(snap_state_load(dir, &st, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_ws_load(dir, &st, &pages, n, &err), 0, "%s", err.msg);
	snap_state_free(&st);
	return pages;
}

/* ---- restoring with userfaultfd or io_uring unavailable ---------------------------- */

struct denied_run {
	unsigned deny;
	char **argv;
	struct proc_result *r;
	const char *failed;   /* what went wrong in the thread (no asserts there) */
	int err;
};

static int load_filter(unsigned deny)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	int r = 0;

	if (!ctx)
		return -ENOMEM;
	if (deny & LAZYT_DENY_USERFAULTFD) {
		/* both ways to get one: the syscall and /dev/userfaultfd's ioctl */
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(userfaultfd), 0);
		if (!r)
			r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
					     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu,
						     USERFAULTFD_IOC_NEW));
	}
	if (!r && (deny & LAZYT_DENY_IO_URING))
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(io_uring_setup), 0);
	if (!r)
		r = seccomp_load(ctx); /* this thread only (no TSYNC), inherited by ember */
	seccomp_release(ctx);
	return r;
}

/* Runs in its own thread: the filter stays on that thread and the ember it spawns. */
static void *denied_thread(void *arg)
{
	struct denied_run *d = arg;

	d->err = load_filter(d->deny);
	if (d->err) {
		d->failed = "loading the seccomp filter";
		return NULL;
	}
	d->err = proc_run(d->argv, SNAPT_RUN_MS, d->r);
	if (d->err)
		d->failed = "spawning ember";
	return NULL;
}

void lazyt_restore_denied(struct proc_result *r, unsigned deny, const char *dir, const char *opts,
			  const char *cmds)
{
	char *argv[MAX_ARGS], *o = strdup(opts), *c = strdup(cmds);
	struct denied_run d = { .deny = deny, .argv = argv, .r = r };
	pthread_t t;

	cr_assert(o && c);
	restore_argv(argv, dir, o, c);
	cr_assert_eq(pthread_create(&t, NULL, denied_thread, &d), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	free(o);
	free(c);
	cr_assert_null(d.failed, "%s: %s", d.failed, strerror(-d.err));
}
