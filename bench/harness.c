/*
 * bench harness: runs commands many times, interleaved (A B A B ...) so that drift on a
 * shared machine affects each of them equally, and reports per-metric median, p99, min
 * and max as a markdown table (stdout) and JSON (--json FILE).
 *
 *   harness [-n RUNS] [-w WARMUP] [--title T] [--json FILE] [--baseline NAME]
 *           [--timeout SEC] [--only PREFIX]... [--check METRIC<=LIMIT]...
 *           [--tsv FILE] [--scratch PATH] [--rusage] [--long]
 *           [--cache NAME=warm:PATH|NAME=cold:PATH]...
 *           -- NAME CMD ARG... [:: NAME CMD ARG...]...
 *
 * Each child gets EMBER_T0_NS = CLOCK_MONOTONIC in ns, taken immediately before
 * posix_spawn (a vfork+exec in glibc), so its "ember-timing <phase> <us>" lines count
 * from the spawn. The harness also timestamps, on its own clock, the moment each such
 * line reaches it ("<phase> (seen)") and the child's exit ("exit (wall)", including VM
 * teardown). "ember-mem k=v ..." lines become metrics "mem <k>", plus "mem rss -
 * guest (kB)" when both rss_kb and guest_resident_kb are present; the numeric values
 * of an "ember-snapshot k=v ..." line become "snap <k>". --scratch PATH is removed
 * before and after every run, and what a run left there is measured first ("disk
 * allocated", "disk logical"): commands that write a snapshot to PATH start clean.
 * --tsv FILE writes one summary line per command and metric for scripts.
 * --long prints one table row per command and metric instead of four columns per command.
 * "ember-pager k=v ..." (the uffd backend's counters, at exit) becomes "pager <k>";
 * with both first-report and first-response, "first-response - first-report" is the
 * guest's request as it ran it; "ember-report msg=<name> ... us=<us>" becomes "report <name>
 * #k", and "report serve #2 - #1" is a second serve request (its pages all mapped). --rusage adds the child's major/minor faults and the
 * bytes it read from the block device (wait4). --cache NAME=cold:PATH evicts every file
 * under PATH from the page cache before each run of NAME (POSIX_FADV_DONTNEED, after
 * fdatasync), NAME=warm:PATH reads them all in; either way "cache resident" records
 * what was cached when the run started. A run that
 * exits non-zero, is killed, or times out is counted as failed and left out of the
 * statistics.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "snapfmt.h"

#define MAX_CMDS    12
#define MAX_METRICS 64
#define MAX_RUNS    1000
#define MAX_CHECKS  8
#define MAX_ONLY    8
#define MAX_CACHE   16
#define NAME_LEN    48

struct metric {
	char name[NAME_LEN];
	const char *unit;
	double *samples;
	unsigned n;
};

struct command {
	const char *name;
	char **argv;
	unsigned failures;
	char last_error[256];
	struct metric metrics[MAX_METRICS];
	unsigned nr_metrics;
};

struct check {
	char metric[NAME_LEN];
	double limit;
};

/* --cache NAME=warm:PATH | NAME=cold:PATH: page-cache state of PATH before each run */
struct cache_rule {
	const char *cmd;
	const char *path;
	bool warm;
};

struct opts {
	unsigned runs, warmup, timeout_s;
	const char *title, *json, *baseline, *tsv;
	const char *only[MAX_ONLY]; /* markdown shows only metrics with these prefixes */
	unsigned nr_only;
	const char *scratch; /* measured, then removed, after every run */
	struct check checks[MAX_CHECKS];
	unsigned nr_checks;
	struct cache_rule cache[MAX_CACHE];
	unsigned nr_cache;
	bool rusage; /* record the child's faults and block reads (wait4) */
	bool long_table; /* --long: one markdown row per command and metric */
};

/* One run's values before they are committed (only successful runs count). */
struct sample {
	char name[NAME_LEN];
	const char *unit;
	double v;
};

struct run {
	struct sample s[MAX_METRICS];
	unsigned n;
	double rss_kb, guest_kb;
	bool have_rss, have_guest;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void run_add(struct run *r, const char *name, const char *unit, double v)
{
	for (unsigned i = 0; i < r->n; i++)
		if (!strcmp(r->s[i].name, name))
			return; /* first occurrence wins, as in ember's timing.c */
	if (r->n == MAX_METRICS)
		return;
	snprintf(r->s[r->n].name, NAME_LEN, "%s", name);
	r->s[r->n].unit = unit;
	r->s[r->n].v = v;
	r->n++;
}

static bool run_get(const struct run *r, const char *name, double *v)
{
	for (unsigned i = 0; i < r->n; i++)
		if (!strcmp(r->s[i].name, name)) {
			*v = r->s[i].v;
			return true;
		}
	return false;
}

static struct metric *metric_get(struct command *c, const char *name, const char *unit,
				 unsigned runs)
{
	struct metric *m;

	for (unsigned i = 0; i < c->nr_metrics; i++)
		if (!strcmp(c->metrics[i].name, name))
			return &c->metrics[i];
	if (c->nr_metrics == MAX_METRICS)
		return NULL;
	m = &c->metrics[c->nr_metrics];
	m->samples = calloc(runs, sizeof(double));
	if (!m->samples)
		return NULL;
	snprintf(m->name, NAME_LEN, "%s", name);
	m->unit = unit;
	c->nr_metrics++;
	return m;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && !strcmp(s + a - b, suffix);
}

/* "ember-snapshot k=v ..." / "ember-pager k=v ...": numeric values become "<prefix>
 * <k>" (us_* and *_us in us, *_ns in ns, *bytes* in bytes); the others (dir=, id=,
 * io=) are skipped. */
static void parse_kv(struct run *r, const char *p, const char *prefix)
{
	while (*p) {
		char key[32], val[64], name[NAME_LEN], *end;
		unsigned long long v;
		int used = 0;

		if (sscanf(p, " %31[^= ]=%63s%n", key, val, &used) != 2 || used == 0)
			break;
		p += used;
		v = strtoull(val, &end, 10);
		if (*end || !val[0])
			continue;
		snprintf(name, sizeof(name), "%s %s", prefix, key);
		run_add(r, name, !strncmp(key, "us_", 3) || ends_with(key, "_us") ? "us" :
				 ends_with(key, "_ns") ? "ns" : strstr(key, "bytes") ? "B" : "n",
			(double)v);
	}
}

/* "ember-report msg=<name> a0=0x.. a1=0x.. a2=0x.. a3=0x.. us=<us>": the guest's k-th
 * report of that name becomes "report <name> #k" (from spawn; the first 4 of each name
 * are kept). */
static void parse_report(struct run *r, const char *p)
{
	char name[24], metric[NAME_LEN];
	unsigned long long us;
	double ignored;

	if (sscanf(p, "msg=%23s a0=%*x a1=%*x a2=%*x a3=%*x us=%llu", name, &us) != 2)
		return;
	for (int k = 1; k <= 4; k++) {
		snprintf(metric, sizeof(metric), "report %s #%d", name, k);
		if (!run_get(r, metric, &ignored)) {
			run_add(r, metric, "us", (double)us);
			return;
		}
	}
}

/* "ember-timing <phase> <us>", "ember-mem k=v ...", "ember-snapshot k=v ...",
 * "ember-pager k=v ..." and "ember-report ..." lines. */
static void parse_line(struct run *r, const char *line, uint64_t t0)
{
	double seen_us = (double)(mono_ns() - t0) / 1000.0;
	char phase[NAME_LEN - 8], name[NAME_LEN];
	long long us;

	if (sscanf(line, "ember-timing %39s %lld", phase, &us) == 2) {
		run_add(r, phase, "us", (double)us);
		snprintf(name, sizeof(name), "%s (seen)", phase);
		run_add(r, name, "us", seen_us);
		return;
	}
	if (!strncmp(line, "ember-snapshot ", 15)) {
		parse_kv(r, line + 15, "snap");
		return;
	}
	if (!strncmp(line, "ember-pager ", 12)) {
		parse_kv(r, line + 12, "pager");
		return;
	}
	if (!strncmp(line, "ember-report ", 13)) {
		parse_report(r, line + 13);
		return;
	}
	if (strncmp(line, "ember-mem ", 10))
		return;
	for (const char *p = line + 10; *p;) {
		char key[32];
		unsigned long long v;
		int used = 0;

		if (sscanf(p, " %31[^= ]=%llu%n", key, &v, &used) != 2 || used == 0)
			break;
		snprintf(name, sizeof(name), "mem %s", key);
		run_add(r, name, "kB", (double)v);
		if (!strcmp(key, "rss_kb")) {
			r->rss_kb = (double)v;
			r->have_rss = true;
		} else if (!strcmp(key, "guest_resident_kb")) {
			r->guest_kb = (double)v;
			r->have_guest = true;
		}
		p += used;
	}
}

/* Per-run values computed from others: the guest's own request times. */
static void derive(struct run *r)
{
	double report, response, second;

	if (r->have_rss && r->have_guest)
		run_add(r, "mem rss - guest", "kB", r->rss_kb - r->guest_kb);
	/* first-report is the guest's WAIT for a command; first-response its REPORT at
	 * the end of that command: the difference is the request as the guest ran it */
	if (run_get(r, "first-report", &report) && run_get(r, "first-response", &response))
		run_add(r, "first-response - first-report", "us", response - report);
	/* a second identical request finds every page mapped: the guest's own work */
	if (run_get(r, "report serve #1", &response) && run_get(r, "report serve #2", &second))
		run_add(r, "report serve #2 - #1", "us", second - response);
}

/* Runs c once; on success fills r and returns 0, else says why in c->last_error. */
static int run_once(struct command *c, char **envp, char *slot, size_t slot_len,
		    unsigned timeout_s, bool want_rusage, struct run *r)
{
	posix_spawn_file_actions_t fa;
	struct rusage ru;
	char buf[4096], line[1024], err_line[256] = "";
	size_t line_len = 0;
	int pipefd[2], status = 0, err;
	uint64_t t0, deadline;
	bool killed = false;
	pid_t pid;

	memset(r, 0, sizeof(*r));
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDERR_FILENO);

	t0 = mono_ns();
	snprintf(slot, slot_len, "EMBER_T0_NS=%" PRIu64, t0);
	err = posix_spawn(&pid, c->argv[0], &fa, NULL, c->argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	close(pipefd[1]);
	if (err) {
		close(pipefd[0]);
		snprintf(c->last_error, sizeof(c->last_error), "spawn %s: %s", c->argv[0],
			 strerror(err));
		return -err;
	}
	deadline = t0 + (uint64_t)timeout_s * 1000000000ull;

	for (;;) {
		struct pollfd pfd = { .fd = pipefd[0], .events = POLLIN };
		uint64_t now = mono_ns();
		ssize_t got;

		if (now >= deadline && !killed) {
			kill(pid, SIGKILL);
			killed = true;
		}
		if (poll(&pfd, 1, killed ? 100 : (int)((deadline - now) / 1000000 + 1)) <= 0)
			continue;
		got = read(pipefd[0], buf, sizeof(buf));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		for (ssize_t i = 0; i < got; i++) {
			if (buf[i] != '\n') {
				if (line_len < sizeof(line) - 1)
					line[line_len++] = buf[i];
				continue;
			}
			line[line_len] = 0;
			parse_line(r, line, t0);
			if (!strncmp(line, "ember: error", 12) || !strncmp(line, "floor_", 6))
				snprintf(err_line, sizeof(err_line), "%.200s", line);
			line_len = 0;
		}
	}
	close(pipefd[0]);
	while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR)
		;
	run_add(r, "exit (wall)", "us", (double)(mono_ns() - t0) / 1000.0);
	derive(r);
	if (want_rusage) {
		/* the child and all its threads; ru_inblock counts 512-byte blocks read
		 * from the device (page-cache hits are not in it) */
		run_add(r, "ru majflt", "n", (double)ru.ru_majflt);
		run_add(r, "ru minflt", "n", (double)ru.ru_minflt);
		run_add(r, "ru read", "B", (double)ru.ru_inblock * 512.0);
	}
	if (killed) {
		snprintf(c->last_error, sizeof(c->last_error), "timed out after %u s", timeout_s);
		return -ETIMEDOUT;
	}
	if (WIFSIGNALED(status) || WEXITSTATUS(status) != 0) {
		snprintf(c->last_error, sizeof(c->last_error), "%s %d%s%.200s",
			 WIFSIGNALED(status) ? "signal" : "exit",
			 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
			 err_line[0] ? ": " : "", err_line);
		return -ECHILD;
	}
	return 0;
}

/* ---- --scratch: what a run left on disk --------------------------------------------- */

static uint64_t du_allocated, du_logical;

static int du_visit(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	if (type == FTW_F) {
		du_allocated += (uint64_t)sb->st_blocks * 512;
		du_logical += (uint64_t)sb->st_size;
	}
	return 0;
}

static int rm_visit(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* Sizes of the files under path ("disk allocated": blocks, "disk logical": st_size). */
static void scratch_measure(const char *path, struct run *r)
{
	struct stat sb;

	if (lstat(path, &sb) < 0)
		return;
	du_allocated = du_logical = 0;
	if (nftw(path, du_visit, 16, FTW_PHYS) == 0) {
		run_add(r, "disk allocated", "B", (double)du_allocated);
		run_add(r, "disk logical", "B", (double)du_logical);
	}
}

static int scratch_remove(const char *path)
{
	struct stat sb;

	if (lstat(path, &sb) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (nftw(path, rm_visit, 16, FTW_DEPTH | FTW_PHYS) < 0) {
		fprintf(stderr, "harness: removing %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* ---- --cache: the page-cache state of a snapshot before a run ---------------------- */

static bool cache_warm;           /* nftw has no user pointer: the visit's parameters */
static uint64_t cache_resident;   /* bytes of the visited files now in the page cache */
static char cache_error[256];

/* Bytes of fd's file in the page cache: mincore over a mapping faults nothing in. */
static int file_resident(int fd, uint64_t size, uint64_t *bytes)
{
	long pg = sysconf(_SC_PAGESIZE);
	uint64_t npages = (size + (uint64_t)pg - 1) / (uint64_t)pg, n = 0;
	unsigned char *vec;
	void *map;

	*bytes = 0;
	if (!size)
		return 0;
	map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	vec = malloc(npages);
	if (!vec) {
		munmap(map, size);
		return -ENOMEM;
	}
	if (mincore(map, size, vec) < 0) {
		int err = -errno;

		free(vec);
		munmap(map, size);
		return err;
	}
	for (uint64_t i = 0; i < npages; i++)
		n += vec[i] & 1;
	free(vec);
	munmap(map, size);
	*bytes = n * (uint64_t)pg;
	return 0;
}

/* Reads the whole file (holes included: they become cached zero pages, as after
 * earlier restores that touched them). */
static int file_read_all(int fd, uint64_t size)
{
	static char buf[1 << 20];

	for (uint64_t off = 0; off < size;) {
		ssize_t got = pread(fd, buf, sizeof(buf), (off_t)off);

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -errno;
		if (got == 0)
			break;
		off += (uint64_t)got;
	}
	return 0;
}

static int cache_visit(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	uint64_t size = (uint64_t)sb->st_size, res;
	const char *what = "open";
	int fd, err = 0;

	if (type != FTW_F || !S_ISREG(sb->st_mode))
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		goto fail;
	}
	what = "mincore";
	err = file_resident(fd, size, &res);
	if (!err && cache_warm && res < size) {
		what = "read";
		err = file_read_all(fd, size);
	} else if (!err && !cache_warm && res) {
		/* DONTNEED skips dirty pages: write them back first */
		what = "fdatasync";
		if (fdatasync(fd) < 0)
			err = -errno;
		if (!err) {
			what = "posix_fadvise(DONTNEED)";
			err = -posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		}
	}
	if (!err) {
		what = "mincore";
		err = file_resident(fd, size, &res);
	}
	close(fd);
	if (err)
		goto fail;
	cache_resident += res;
	return 0;
fail:
	snprintf(cache_error, sizeof(cache_error), "%s: %s: %s", path, what, strerror(-err));
	return -1;
}

/*
 * Puts every file under the rules' paths for command `cmd` in the page cache (warm) or
 * evicts them (cold: POSIX_FADV_DONTNEED, only these files, nobody else's cache);
 * *resident gets the bytes cached afterwards, so the JSON shows what each run saw.
 * Returns 0 (also when no rule applies: *resident < 0) or -1 with cache_error set.
 */
static int cache_apply(const struct opts *o, const char *cmd, double *resident)
{
	bool any = false;

	cache_resident = 0;
	for (unsigned i = 0; i < o->nr_cache; i++) {
		if (strcmp(o->cache[i].cmd, cmd))
			continue;
		any = true;
		cache_warm = o->cache[i].warm;
		if (nftw(o->cache[i].path, cache_visit, 16, FTW_PHYS)) {
			if (!cache_error[0])
				snprintf(cache_error, sizeof(cache_error), "%s: %s", o->cache[i].path,
					 strerror(errno));
			return -1;
		}
	}
	*resident = any ? (double)cache_resident : -1;
	return 0;
}

static void commit(struct command *c, const struct run *r, unsigned runs)
{
	for (unsigned i = 0; i < r->n; i++) {
		struct metric *m = metric_get(c, r->s[i].name, r->s[i].unit, runs);

		if (m && m->n < runs)
			m->samples[m->n++] = r->s[i].v;
	}
}

/* ---- statistics and output ------------------------------------------------------- */

struct stats {
	double median, p99, min, max;
	unsigned n;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static struct stats stats_of(const struct metric *m)
{
	struct stats s = { 0 };
	double *v;
	unsigned rank;

	if (!m || m->n == 0)
		return s;
	v = malloc(m->n * sizeof(double));
	if (!v)
		return s;
	memcpy(v, m->samples, m->n * sizeof(double));
	qsort(v, m->n, sizeof(double), cmp_double);
	s.n = m->n;
	s.min = v[0];
	s.max = v[m->n - 1];
	s.median = m->n % 2 ? v[m->n / 2] : (v[m->n / 2 - 1] + v[m->n / 2]) / 2;
	rank = (99 * m->n + 99) / 100; /* nearest rank: ceil(0.99 n) */
	s.p99 = v[rank ? rank - 1 : 0];
	free(v);
	return s;
}

static const struct metric *find_metric(const struct command *c, const char *name)
{
	for (unsigned i = 0; i < c->nr_metrics; i++)
		if (!strcmp(c->metrics[i].name, name))
			return &c->metrics[i];
	return NULL;
}

/* Every metric name, in order of first appearance across commands; "(seen)" and wall
 * times after the child-reported phases, memory last. */
static unsigned metric_order(const struct command *cmds, unsigned nr, const char **names)
{
	unsigned n = 0;

	for (int pass = 0; pass < 3; pass++)
		for (unsigned c = 0; c < nr; c++)
			for (unsigned i = 0; i < cmds[c].nr_metrics; i++) {
				const char *name = cmds[c].metrics[i].name;
				int kind = !strncmp(name, "mem ", 4) || !strncmp(name, "disk ", 5) ||
					   !strncmp(name, "cache ", 6) || !strncmp(name, "ru ", 3) ? 2 :
					   (strstr(name, "(seen)") || strstr(name, "(wall)")) ? 1 : 0;
				bool dup = false;

				if (kind != pass)
					continue;
				for (unsigned k = 0; k < n; k++)
					dup |= !strcmp(names[k], name);
				if (!dup && n < MAX_METRICS * MAX_CMDS)
					names[n++] = name;
			}
	return n;
}

/* A row of times is shown in ms when any of its values reaches 10 ms. */
static bool row_in_ms(const struct command *cmds, unsigned nr, const char *name)
{
	for (unsigned c = 0; c < nr; c++) {
		const struct metric *m = find_metric(&cmds[c], name);
		struct stats s = stats_of(m);

		if (s.n && !strcmp(m->unit, "us") && s.max >= 10000)
			return true;
	}
	return false;
}

static void print_value(double v, bool ms, const char *unit)
{
	if (!strcmp(unit, "B"))
		printf(" %.1f MiB |", v / (1 << 20));
	else if (ms) /* tenths only below 100 ms: the --long rows fit 80 columns */
		printf(" %.*f ms |", v < 100000 ? 1 : 0, v / 1000);
	else
		printf(" %.0f |", v);
}

static int baseline_index(const struct command *cmds, unsigned nr, const char *baseline)
{
	for (unsigned c = 0; baseline && c < nr; c++)
		if (!strcmp(cmds[c].name, baseline))
			return (int)c;
	return -1;
}

static bool shown(const struct opts *o, const char *metric)
{
	for (unsigned k = 0; k < o->nr_only; k++)
		if (!strncmp(metric, o->only[k], strlen(o->only[k])))
			return true;
	return o->nr_only == 0;
}

/* --long: one row per command and metric, median / p99 / max, so that ten commands
 * still fit 80 columns (the wide table has four columns per command; min is in the
 * JSON and TSV). */
static void print_long(const struct opts *o, const struct command *cmds, unsigned nr,
		       const char **names, unsigned n)
{
	printf("| command | metric | median | p99 | max |\n");
	printf("|---|---|---:|---:|---:|\n");
	for (unsigned c = 0; c < nr; c++)
		for (unsigned i = 0; i < n; i++) {
			const struct metric *m = find_metric(&cmds[c], names[i]);
			bool ms = row_in_ms(cmds, nr, names[i]);
			struct stats s = stats_of(m);

			if (!shown(o, names[i]) || !s.n)
				continue;
			printf("| %s | %s |", cmds[c].name, names[i]);
			print_value(s.median, ms, m->unit);
			print_value(s.p99, ms, m->unit);
			print_value(s.max, ms, m->unit);
			printf("\n");
		}
}

static void print_markdown(const struct opts *o, const struct command *cmds, unsigned nr)
{
	const char *names[MAX_METRICS * MAX_CMDS];
	unsigned n = metric_order(cmds, nr, names);
	int base = baseline_index(cmds, nr, o->baseline);

	printf("\n### %s\n\n", o->title ? o->title : "results");
	printf("%u interleaved runs per command (+%u warm-up); times in us (from spawn, except "
	       "`snap us_*` durations) unless marked ms, memory in kB; median / p99 / min / "
	       "max.\n\n", o->runs, o->warmup);
	if (o->long_table) {
		print_long(o, cmds, nr, names, n);
		goto checks;
	}
	printf("| metric |");
	for (unsigned c = 0; c < nr; c++)
		printf(" %s median | p99 | min | max |", cmds[c].name);
	for (unsigned c = 0; base >= 0 && c < nr; c++)
		if ((int)c != base)
			printf(" %s/%s |", cmds[c].name, cmds[base].name);
	printf("\n|---|");
	for (unsigned c = 0; c < nr; c++)
		printf("---:|---:|---:|---:|");
	for (unsigned c = 0; base >= 0 && c < nr; c++)
		if ((int)c != base)
			printf("---:|");
	printf("\n");
	for (unsigned i = 0; i < n; i++) {
		bool ms = row_in_ms(cmds, nr, names[i]);

		if (!shown(o, names[i]))
			continue;
		printf("| %s |", names[i]);
		for (unsigned c = 0; c < nr; c++) {
			struct stats s = stats_of(find_metric(&cmds[c], names[i]));

			if (!s.n) {
				printf(" - | - | - | - |");
				continue;
			}
			const char *unit = find_metric(&cmds[c], names[i])->unit;

			print_value(s.median, ms, unit);
			print_value(s.p99, ms, unit);
			print_value(s.min, ms, unit);
			print_value(s.max, ms, unit);
		}
		for (unsigned c = 0; base >= 0 && c < nr; c++) {
			struct stats a, b;

			if ((int)c == base)
				continue;
			a = stats_of(find_metric(&cmds[c], names[i]));
			b = stats_of(find_metric(&cmds[base], names[i]));
			if (a.n && b.n && b.median > 0)
				printf(" %.2fx |", a.median / b.median);
			else
				printf(" - |");
		}
		printf("\n");
	}
checks:
	for (unsigned c = 0; c < nr; c++)
		if (cmds[c].failures)
			printf("\n**%s: %u of %u runs failed** (last: %s)\n", cmds[c].name,
			       cmds[c].failures, o->runs + o->warmup, cmds[c].last_error);
	for (unsigned k = 0; k < o->nr_checks; k++)
		for (unsigned c = 0; c < nr; c++) {
			struct stats s = stats_of(find_metric(&cmds[c], o->checks[k].metric));

			/* a target line as run.sh collects them: "- TARGET: ok|**MISSED** (DETAIL)" */
			if (s.n)
				printf("\n- %s: %s max <= %.0f: %s (max %.0f)\n", cmds[c].name,
				       o->checks[k].metric, o->checks[k].limit,
				       s.max <= o->checks[k].limit ? "ok" : "**MISSED**", s.max);
		}
	fflush(stdout);
}

/* --json FILE through ember's JSON writer (snapshot-format/json.c): any title, argv or
 * metric name gives valid JSON. */
static int write_json(const struct opts *o, const struct command *cmds, unsigned nr)
{
	FILE *f = fopen(o->json, "w");
	struct json_w w;

	if (!f) {
		fprintf(stderr, "harness: %s: %s\n", o->json, strerror(errno));
		return -1;
	}
	json_begin(&w, f);
	json_obj(&w, NULL);
	json_str(&w, "title", o->title ? o->title : "");
	json_u64(&w, "runs", o->runs);
	json_u64(&w, "warmup", o->warmup);
	json_str(&w, "baseline", o->baseline ? o->baseline : "");
	json_arr(&w, "commands");
	for (unsigned c = 0; c < nr; c++) {
		json_obj(&w, NULL);
		json_str(&w, "name", cmds[c].name);
		json_arr(&w, "argv");
		for (char **a = cmds[c].argv; *a; a++)
			json_str(&w, NULL, *a);
		json_arr_end(&w);
		json_u64(&w, "failures", cmds[c].failures);
		json_obj(&w, "metrics");
		for (unsigned i = 0; i < cmds[c].nr_metrics; i++) {
			const struct metric *m = &cmds[c].metrics[i];
			struct stats s = stats_of(m);

			json_obj(&w, m->name);
			json_str(&w, "unit", m->unit);
			json_u64(&w, "n", s.n);
			json_f64(&w, "median", s.median, 1);
			json_f64(&w, "p99", s.p99, 1);
			json_f64(&w, "min", s.min, 1);
			json_f64(&w, "max", s.max, 1);
			json_arr(&w, "samples");
			for (unsigned k = 0; k < m->n; k++)
				json_f64(&w, NULL, m->samples[k], 0);
			json_arr_end(&w);
			json_obj_end(&w);
		}
		json_obj_end(&w);
		json_obj_end(&w);
	}
	json_arr_end(&w);
	json_obj_end(&w);
	return fclose(f) ? -1 : 0;
}

/* One line per command and metric, tab-separated, for scripts (run.sh's summary):
 * command metric unit n median p99 min max */
static int write_tsv(const struct opts *o, const struct command *cmds, unsigned nr)
{
	FILE *f = fopen(o->tsv, "w");

	if (!f) {
		fprintf(stderr, "harness: %s: %s\n", o->tsv, strerror(errno));
		return -1;
	}
	for (unsigned c = 0; c < nr; c++)
		for (unsigned i = 0; i < cmds[c].nr_metrics; i++) {
			const struct metric *m = &cmds[c].metrics[i];
			struct stats s = stats_of(m);

			fprintf(f, "%s\t%s\t%s\t%u\t%.1f\t%.1f\t%.1f\t%.1f\n", cmds[c].name, m->name,
				m->unit, s.n, s.median, s.p99, s.min, s.max);
		}
	return fclose(f) ? -1 : 0;
}

/* ---- command line ------------------------------------------------------------------ */

static int usage(void)
{
	fprintf(stderr,
		"usage: harness [-n RUNS] [-w WARMUP] [--title T] [--json FILE] [--baseline NAME]\n"
		"               [--timeout SEC] [--only PREFIX]... [--check METRIC<=LIMIT]...\n"
		"               [--tsv FILE] [--scratch PATH] [--rusage] [--long]\n"
		"               [--cache NAME=warm:PATH|NAME=cold:PATH]...\n"
		"               -- NAME CMD ARG... [:: NAME CMD ARG...]...\n");
	return 2;
}

/* NAME=warm:PATH or NAME=cold:PATH */
static int parse_cache(struct opts *o, char *s)
{
	char *eq = strchr(s, '=');
	struct cache_rule *c;

	if (!eq || eq == s || o->nr_cache == MAX_CACHE)
		return -1;
	*eq = 0;
	c = &o->cache[o->nr_cache];
	if (!strncmp(eq + 1, "warm:", 5))
		c->warm = true;
	else if (strncmp(eq + 1, "cold:", 5))
		return -1;
	c->cmd = s;
	c->path = eq + 6;
	if (!c->path[0])
		return -1;
	o->nr_cache++;
	return 0;
}

static int parse_check(struct opts *o, const char *s)
{
	const char *le = strstr(s, "<=");
	struct check *k;

	if (!le || le == s || (size_t)(le - s) >= NAME_LEN || o->nr_checks == MAX_CHECKS)
		return -1;
	k = &o->checks[o->nr_checks++];
	memcpy(k->metric, s, (size_t)(le - s));
	k->metric[le - s] = 0;
	k->limit = strtod(le + 2, NULL);
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = { .runs = 30, .warmup = 2, .timeout_s = 30 };
	struct command cmds[MAX_CMDS];
	unsigned nr = 0;
	char slot[64] = "EMBER_T0_NS=0";
	char **envp;
	int i, status = 0;

	memset(cmds, 0, sizeof(cmds));
	for (i = 1; i < argc && strcmp(argv[i], "--"); i++) {
		const char *a = argv[i];
		char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--long")) {
			o.long_table = true;
			continue;
		}
		if (!strcmp(a, "--rusage")) {
			o.rusage = true;
			continue;
		}
		if (!v)
			return usage();
		if (!strcmp(a, "-n"))
			o.runs = (unsigned)atoi(v);
		else if (!strcmp(a, "-w"))
			o.warmup = (unsigned)atoi(v);
		else if (!strcmp(a, "--title"))
			o.title = v;
		else if (!strcmp(a, "--json"))
			o.json = v;
		else if (!strcmp(a, "--baseline"))
			o.baseline = v;
		else if (!strcmp(a, "--only")) {
			if (o.nr_only == MAX_ONLY)
				return usage();
			o.only[o.nr_only++] = v;
		}
		else if (!strcmp(a, "--tsv"))
			o.tsv = v;
		else if (!strcmp(a, "--scratch"))
			o.scratch = v;
		else if (!strcmp(a, "--timeout"))
			o.timeout_s = (unsigned)atoi(v);
		else if (!strcmp(a, "--check")) {
			if (parse_check(&o, v))
				return usage();
		} else if (!strcmp(a, "--cache")) {
			if (parse_cache(&o, v))
				return usage();
		} else
			return usage();
		i++;
	}
	if (i >= argc || o.runs == 0 || o.runs > MAX_RUNS || o.timeout_s == 0)
		return usage();
	/* it is removed after every run: refuse anything that looks like a mistake */
	if (o.scratch && (!o.scratch[0] || !strcmp(o.scratch, "/") || !strcmp(o.scratch, ".") ||
			  !strcmp(o.scratch, "..") || strstr(o.scratch, "..")))
		return usage();
	/* NAME CMD ARGS... [:: NAME CMD ARGS...]: cut argv in place at each "::" */
	for (i++; i < argc; i++) {
		int start = i;

		while (i < argc && strcmp(argv[i], "::"))
			i++;
		if (i - start < 2 || nr == MAX_CMDS)
			return usage();
		cmds[nr].name = argv[start];
		cmds[nr].argv = &argv[start + 1];
		if (i < argc)
			argv[i] = NULL;
		nr++;
	}
	if (nr == 0)
		return usage();
	for (unsigned k = 0; k < o.nr_cache; k++) {
		bool known = false;

		for (unsigned c = 0; c < nr; c++)
			known |= !strcmp(cmds[c].name, o.cache[k].cmd);
		if (!known) {
			fprintf(stderr, "harness: --cache %s: no command of that name\n", o.cache[k].cmd);
			return usage();
		}
	}
	envp = bench_envp(slot);
	if (!envp)
		return 1;

	for (unsigned k = 0; k < o.warmup + o.runs; k++) {
		for (unsigned c = 0; c < nr; c++) {
			struct run r;
			double resident;
			int failed;

			if (o.scratch && scratch_remove(o.scratch))
				return 1; /* nothing sensible to measure */
			if (cache_apply(&o, cmds[c].name, &resident)) {
				fprintf(stderr, "harness: --cache: %s\n", cache_error);
				return 1; /* a cold run on a warm cache would be a lie */
			}
			failed = run_once(&cmds[c], envp, slot, sizeof(slot), o.timeout_s, o.rusage,
					  &r);
			if (resident >= 0)
				run_add(&r, "cache resident", "B", resident);
			if (o.scratch) {
				scratch_measure(o.scratch, &r);
				if (scratch_remove(o.scratch))
					return 1;
			}
			if (failed) {
				cmds[c].failures++;
				continue;
			}
			if (k >= o.warmup)
				commit(&cmds[c], &r, o.runs);
		}
	}

	print_markdown(&o, cmds, nr);
	if (o.json && write_json(&o, cmds, nr))
		status = 1;
	if (o.tsv && write_tsv(&o, cmds, nr))
		status = 1;
	for (unsigned c = 0; c < nr; c++) {
		if (cmds[c].failures == o.warmup + o.runs)
			status = 1; /* nothing measured: the command is broken */
		for (unsigned m = 0; m < cmds[c].nr_metrics; m++)
			free(cmds[c].metrics[m].samples);
	}
	free(envp);
	return status;
}
