/*
 * Standby and in-place reset on real KVM, with the fn guest over vsock. The claim under
 * test: a reset VM is indistinguishable from a fresh restore. Both are snapshotted in
 * standby (state set, not run) and compared: every byte of guest memory, and every
 * `ember-snap dump` line but those that only say when (ids, clocks, TSCs).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch/x86_64/x86.h"
#include "cli.h"
#include "testlib.h"

#define HEAP_MIB 16
#define MEM_MIB  64
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

TestSuite(reset, .init = setup, .fini = teardown, .timeout = 180);

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* A clone in standby, its control socket at <name>.ctl and vsock at <name>.v. */
struct clone {
	struct proc *p;
	char ctl[PATH_MAX], uds[PATH_MAX];
};

static void clone_start(struct clone *c, const char *snapshot, const char *name,
			const char *backend)
{
	snapt_join(c->ctl, tmp, "%s.ctl", name);
	snapt_join(c->uds, tmp, "%s.v", name);
	c->p = fnt_restore(snapshot, c->uds, "--standby", "--api-sock", c->ctl, "--console",
			   "none", "--mem-backend", backend, NULL);
	snapt_wait_socket(c->ctl, SNAPT_RUN_MS);
}

static void clone_stop(struct clone *c)
{
	struct proc_result r;

	snapt_ctl(&r, c->ctl, "shutdown", NULL);
	proc_result_free(&r);
	cr_assert_eq(proc_finish(c->p, 10000, &r), 0);
	ember_test_assert_no_crash(&r);
	cr_expect_eq(r.status, 0, "clone exited %d:\n%s", r.status, r.err);
	proc_result_free(&r);
}

/* `ember ctl` that must answer ok; the output is returned in r. */
static void ctl_ok(struct proc_result *r, const struct clone *c, const char *verb,
		   const char *arg)
{
	snapt_ctl(r, c->ctl, verb, arg, NULL);
	cr_assert_eq(r->status, 0, "ctl %s: %s%s", verb, r->out, r->err);
}

static void ctl_do(const struct clone *c, const char *verb, const char *arg)
{
	struct proc_result r;

	ctl_ok(&r, c, verb, arg);
	proc_result_free(&r);
}

static void snapshot_to(const struct clone *c, const char *name, char *dir)
{
	snapt_join(dir, tmp, "%s", name);
	ctl_do(c, "snapshot", dir);
}

/* Invocations with random payloads, each answer checked against the golden heap. */
static void invoke_random(const struct clone *c, unsigned n, uint64_t seed)
{
	uint8_t *buf = malloc(64 << 10);
	int fd = fnt_connect(c->uds, FN_PORT);

	cr_assert_not_null(buf);
	for (unsigned i = 0; i < n; i++) {
		size_t len = (size_t)(rnd(&seed) % (64 << 10));

		for (size_t k = 0; k < len; k++)
			buf[k] = (uint8_t)rnd(&seed);
		fnt_invoke_check(&golden, fd, i + 1, buf, len);
	}
	close(fd);
	free(buf);
}

/* The vCPUs' TSCs ("vcpus[N].tsc = V" lines, which follow their MSRs). */
static void dump_tscs(const char *text, uint64_t *tsc, unsigned max)
{
	for (const char *p = strstr(text, "vcpus["); p; p = strstr(p + 1, "\nvcpus[")) {
		const char *eq, *nl;
		unsigned n;

		if (*p == '\n')
			p++;
		eq = strstr(p, "].tsc = ");
		nl = strchr(p, '\n');
		if (sscanf(p, "vcpus[%u].tsc = ", &n) == 1 && eq && (!nl || eq < nl) && n < max)
			tsc[n] = strtoull(eq + 8, NULL, 0); /* decimal in the dump */
	}
}

/*
 * What a snapshot says, minus what only says when it was taken: ids, clocks, the TSC, and
 * an IA32_TSC_DEADLINE that is the TSC (a zero deadline is saved as the vCPU's TSC).
 */
static char *dump_timeless(const char *dir)
{
	struct proc_result r;
	char *out, *line, *save = NULL;
	char tsc_msr[64] = "", deadline_msr[64] = "";
	uint64_t tsc[64] = { 0 };
	size_t cap, len = 0;

	snapt_tool(&r, SNAPT_RUN_MS, "dump", dir, NULL);
	cr_assert_eq(r.status, 0, "dump %s: %s", dir, r.err);
	dump_tscs(r.out, tsc, 64);
	cap = r.out_len + 1;
	out = calloc(1, cap);
	cr_assert_not_null(out);
	for (line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *dot;
		unsigned v;

		if (!strncmp(line, "header.id ", 10) || !strncmp(line, "header.created", 14) ||
		    !strncmp(line, "vm.clock.", 9) || strstr(line, ".count_load_time ") ||
		    (!strncmp(line, "vcpus[", 6) && strstr(line, "].tsc = ")) ||
		    /* digests of memory, which assert_same_memory compares byte by byte: block
		     * 0 holds the VMGenID, which differs */
		    !strncmp(line, "memory.digests", 14) || !strncmp(line, "memory.anchors", 14))
			continue;
		/* IA32_TSC (0x10), IA32_TSC_DEADLINE (0x6e0): the value line that follows the
		 * index line */
		if (strstr(line, ".index = 0x10") && (dot = strstr(line, ".index"))) {
			snprintf(tsc_msr, sizeof(tsc_msr), "%.*s.value ", (int)(dot - line), line);
		} else if (strstr(line, ".index = 0x6e0") && (dot = strstr(line, ".index"))) {
			snprintf(deadline_msr, sizeof(deadline_msr), "%.*s.value ", (int)(dot - line),
				 line);
		} else if (tsc_msr[0] && !strncmp(line, tsc_msr, strlen(tsc_msr))) {
			continue;
		} else if (deadline_msr[0] && !strncmp(line, deadline_msr, strlen(deadline_msr)) &&
			   sscanf(line, "vcpus[%u]", &v) == 1 && v < 64 &&
			   strtoull(line + strlen(deadline_msr) + 2, NULL, 0) == tsc[v]) {
			len += (size_t)snprintf(out + len, cap - len, "%s= <this vCPU's TSC>\n",
						deadline_msr);
			continue;
		}
		len += (size_t)snprintf(out + len, cap - len, "%s\n", line);
	}
	proc_result_free(&r);
	return out;
}

/* Every byte of guest memory is the same but the VMGenID, which must differ: each
 * restore and each reset gives the guest a new one (acpi/vmgenid.c). Region 0 starts at
 * guest address 0 and file offset 0, so the ID's file offset is its address. */
static void assert_same_memory(const char *a, const char *b)
{
	size_t la, lb;
	uint8_t *ma = snapt_read_file(a, &la), *mb = snapt_read_file(b, &lb);

	cr_assert_eq(la, lb, "memory files of %zu and %zu bytes (%s vs %s)", la, lb, a, b);
	cr_assert_gt(la, ACPI_VMGENID_ADDR + 16);
	cr_assert(memcmp(ma + ACPI_VMGENID_ADDR, mb + ACPI_VMGENID_ADDR, 16),
		  "the reset VM has the fresh restore's VMGenID (%s vs %s)", a, b);
	memset(ma + ACPI_VMGENID_ADDR, 0, 16);
	memset(mb + ACPI_VMGENID_ADDR, 0, 16);
	cr_assert(!memcmp(ma, mb, la), "guest memory after a reset differs from a fresh "
		  "restore's (%s vs %s)", a, b);
	free(ma);
	free(mb);
}

static void assert_same_vm(const char *fresh, const char *reset)
{
	char a[PATH_MAX + 16], b[PATH_MAX + 16];
	char *da = dump_timeless(fresh), *db = dump_timeless(reset);

	snprintf(a, sizeof(a), "%s/memory.raw", fresh);
	snprintf(b, sizeof(b), "%s/memory.raw", reset);
	assert_same_memory(a, b);
	if (strcmp(da, db)) {
		const char *pa = da, *pb = db;

		while (*pa && *pa == *pb)
			pa++, pb++;
		while (pa > da && pa[-1] != '\n')
			pa--, pb--;
		cr_assert_fail("state after a reset differs from a fresh restore's:\nfresh: %.*s\n"
			       "reset: %.*s", (int)strcspn(pa, "\n"), pa, (int)strcspn(pb, "\n"),
			       pb);
	}
	free(da);
	free(db);
}

/* Golden -> fresh standby clone A; clone B runs invocations, is reset, and must be A. */
static void reset_equals_fresh(const char *backend)
{
	char fresh[PATH_MAX], after[PATH_MAX], name[32];
	struct clone a, b;

	snprintf(name, sizeof(name), "a-%s", backend);
	clone_start(&a, golden.dir, name, backend);
	snprintf(name, sizeof(name), "b-%s", backend);
	clone_start(&b, golden.dir, name, backend);
	snprintf(name, sizeof(name), "fresh-%s", backend);
	snapshot_to(&a, name, fresh);
	clone_stop(&a);

	ctl_do(&b, "resume", NULL);
	for (unsigned round = 0; round < 3; round++) {
		invoke_random(&b, 20, 0x5eed + round);
		ctl_do(&b, "reset", round == 2 ? "--standby" : NULL);
	}
	snprintf(name, sizeof(name), "reset-%s", backend);
	snapshot_to(&b, name, after);
	clone_stop(&b);
	assert_same_vm(fresh, after);
}

Test(reset, reset_vm_equals_a_fresh_restore_with_the_mmap_backend)
{
	reset_equals_fresh("mmap");
}

Test(reset, reset_vm_equals_a_fresh_restore_with_the_uffd_backend)
{
	reset_equals_fresh("uffd");
}

Test(reset, reset_vm_equals_a_fresh_restore_with_the_eager_backend)
{
	reset_equals_fresh("eager");
}

Test(reset, reset_vm_equals_a_fresh_restore_from_an_lz4_snapshot)
{
	char lz4[PATH_MAX], fresh[PATH_MAX], after[PATH_MAX];
	struct proc_result r;
	struct clone a, b;

	snapt_join(lz4, tmp, "golden-lz4");
	snapt_tool(&r, SNAPT_RUN_MS, "compress", golden.dir, lz4, NULL);
	cr_assert_eq(r.status, 0, "compress: %s", r.err);
	proc_result_free(&r);
	for (unsigned i = 0; i < 2; i++) {
		const char *backend = i ? "eager" : "uffd";

		clone_start(&a, lz4, i ? "lz4-a-eager" : "lz4-a-uffd", backend);
		clone_start(&b, lz4, i ? "lz4-b-eager" : "lz4-b-uffd", backend);
		snapshot_to(&a, i ? "lz4-fresh-eager" : "lz4-fresh-uffd", fresh);
		clone_stop(&a);
		ctl_do(&b, "resume", NULL);
		invoke_random(&b, 20, 0x1234 + i);
		ctl_do(&b, "reset", "--standby");
		snapshot_to(&b, i ? "lz4-reset-eager" : "lz4-reset-uffd", after);
		clone_stop(&b);
		assert_same_vm(fresh, after);
	}
}

/* A diff snapshot collects the dirty log; the reset must still see those pages. */
Test(reset, pages_written_before_a_diff_snapshot_are_still_reverted)
{
	char fresh[PATH_MAX], diff[PATH_MAX], after[PATH_MAX];
	struct proc_result r;
	struct clone a, b;

	clone_start(&a, golden.dir, "da", "mmap");
	clone_start(&b, golden.dir, "db", "mmap");
	snapshot_to(&a, "d-fresh", fresh);
	clone_stop(&a);
	ctl_do(&b, "resume", NULL);
	invoke_random(&b, 10, 77);
	snapt_join(diff, tmp, "d-diff");
	snapt_ctl(&r, b.ctl, "snapshot", diff, "--diff", NULL);
	cr_assert_eq(r.status, 0, "diff snapshot: %s", r.err);
	proc_result_free(&r);
	ctl_do(&b, "reset", "--standby");
	snapshot_to(&b, "d-reset", after);
	clone_stop(&b);
	assert_same_vm(fresh, after);
}

static bool file_contains(const char *path, const uint8_t *needle, size_t n)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint8_t *m;
	bool found;

	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(fstat(fd, &st), 0);
	m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	cr_assert_neq(m, MAP_FAILED);
	found = memmem(m, (size_t)st.st_size, needle, n) != NULL;
	munmap(m, (size_t)st.st_size);
	close(fd);
	return found;
}

/* The payload lands in guest memory twice: where the device put it (vsock RX buffers)
 * and where the guest copied it (its request buffer). Neither survives a reset. */
Test(reset, a_secret_from_one_invocation_is_gone_after_the_reset)
{
	char before[PATH_MAX], after[PATH_MAX], mem[PATH_MAX + 16];
	uint8_t secret[4096];
	uint64_t seed = 0xc0ffee;
	struct clone c;
	int fd;

	for (size_t i = 0; i < sizeof(secret); i++)
		secret[i] = (uint8_t)rnd(&seed);
	clone_start(&c, golden.dir, "s", "mmap");
	ctl_do(&c, "resume", NULL);
	fd = fnt_connect(c.uds, FN_PORT);
	fnt_invoke_check(&golden, fd, 1, secret, sizeof(secret));
	close(fd);
	ctl_do(&c, "pause", NULL);
	snapshot_to(&c, "s-before", before);
	snprintf(mem, sizeof(mem), "%s/memory.raw", before);
	/* the check is real: the secret is in guest memory before the reset */
	cr_assert(file_contains(mem, secret + 1024, 64), "the payload never reached guest memory");

	ctl_do(&c, "reset", "--standby");
	snapshot_to(&c, "s-after", after);
	snprintf(mem, sizeof(mem), "%s/memory.raw", after);
	cr_assert_not(file_contains(mem, secret + 1024, 64),
		      "invocation 1's payload is still in guest memory after the reset");
	ctl_do(&c, "resume", NULL);
	invoke_random(&c, 5, 99);
	clone_stop(&c);
}

Test(reset, every_reset_gives_a_new_generation_and_the_guest_sees_it)
{
	char ctl[PATH_MAX], uds[PATH_MAX], console[PATH_MAX], arg[PATH_MAX + 8];
	uint64_t gens[4];
	struct proc_result r;
	struct clone c;
	size_t len;
	char *text;

	snapt_join(ctl, tmp, "g.ctl");
	snapt_join(uds, tmp, "g.v");
	snapt_join(console, tmp, "g.console");
	snprintf(arg, sizeof(arg), "file:%s", console);
	c.p = fnt_restore(golden.dir, uds, "--api-sock", ctl, "--console", arg, NULL);
	snprintf(c.ctl, sizeof(c.ctl), "%s", ctl);
	snprintf(c.uds, sizeof(c.uds), "%s", uds);
	snapt_wait_socket(ctl, SNAPT_RUN_MS);
	for (unsigned i = 0; i < 4; i++) {
		char line[128];

		invoke_random(&c, 2, 5 + i);
		ctl_ok(&r, &c, "reset", NULL);
		cr_assert_not_null(proc_find_line(r.out, "generation: ", line, sizeof(line)), "%s",
				   r.out);
		gens[i] = strtoull(line + 12, NULL, 16); /* 16 hex digits, as the guest's */
		cr_assert_neq(gens[i], 0);
		for (unsigned k = 0; k < i; k++)
			cr_assert_neq(gens[i], gens[k], "reset %u reused generation %llu", i,
				      (unsigned long long)gens[i]);
		proc_result_free(&r);
	}
	ctl_ok(&r, &c, "status", NULL);
	cr_assert(strstr(r.out, "resets: 4\n"), "%s", r.out);
	cr_assert(strstr(r.out, "state: running\n"), "%s", r.out);
	proc_result_free(&r);
	/* an invocation after the last reset: the guest has looked at its generation */
	invoke_random(&c, 2, 11);
	clone_stop(&c);
	text = (char *)snapt_read_file(console, &len);
	text = realloc(text, len + 1);
	cr_assert_not_null(text);
	text[len] = 0;
	for (unsigned i = 0; i < 4; i++) {
		char want[64];

		snprintf(want, sizeof(want), "restored generation=%016llx", (unsigned long long)gens[i]);
		cr_assert(strstr(text, want), "the guest never saw generation %016llx:\n%s",
			  (unsigned long long)gens[i], text);
	}
	free(text);
}

Test(reset, one_hundred_invoke_and_reset_cycles_all_answer_right)
{
	struct proc_result r;
	struct clone c;

	clone_start(&c, golden.dir, "h", "uffd");
	ctl_do(&c, "resume", NULL);
	for (unsigned i = 0; i < 100; i++) {
		invoke_random(&c, 1, 1000 + i);
		ctl_do(&c, "reset", NULL);
	}
	ctl_ok(&r, &c, "status", NULL);
	cr_assert(strstr(r.out, "resets: 100\n"), "%s", r.out);
	proc_result_free(&r);
	clone_stop(&c);
}

Test(reset, standby_clone_runs_only_once_resumed)
{
	struct proc_result r;
	struct clone c;
	int fd;

	clone_start(&c, golden.dir, "w", "mmap");
	ctl_ok(&r, &c, "status", NULL);
	cr_assert(strstr(r.out, "state: standby\n"), "%s", r.out);
	proc_result_free(&r);
	ctl_do(&c, "resume", NULL);
	ctl_ok(&r, &c, "status", NULL);
	cr_assert(strstr(r.out, "state: running\n"), "%s", r.out);
	proc_result_free(&r);
	fd = fnt_connect(c.uds, FN_PORT);
	close(fd);
	snapt_ctl(&r, c.ctl, "shutdown", NULL);
	proc_result_free(&r);
	cr_assert_eq(proc_finish(c.p, 10000, &r), 0);
	cr_assert_eq(r.status, 0, "%s", r.err);
	proc_result_free(&r);
}

Test(reset, standby_timings_show_resume_then_running)
{
	char ctl[PATH_MAX], uds[PATH_MAX];
	struct proc_result r;
	struct proc *p;
	int64_t resume, running;

	snapt_join(ctl, tmp, "t.ctl");
	snapt_join(uds, tmp, "t.v");
	p = fnt_restore(golden.dir, uds, "--standby", "--api-sock", ctl, "--console", "none",
			"--timings", NULL);
	snapt_wait_socket(ctl, SNAPT_RUN_MS);
	snapt_ctl(&r, ctl, "resume", NULL);
	proc_result_free(&r);
	fnt_guest_cmd(ctl, "exit");
	cr_assert_eq(proc_finish(p, 10000, &r), 0);
	resume = proc_timing_us(r.err, "standby-resume");
	running = proc_timing_us(r.err, "resumed");
	cr_assert_gt(resume, 0, "%s", r.err);
	cr_assert_geq(running, resume, "the vCPUs ran before the resume:\n%s", r.err);
	proc_result_free(&r);
}

Test(reset, reset_of_a_booted_vm_is_refused_and_the_vm_keeps_running)
{
	char ctl[PATH_MAX], uds[PATH_MAX];
	struct proc_result r;
	struct proc *p;

	snapt_join(ctl, tmp, "boot.ctl");
	snapt_join(uds, tmp, "boot.v");
	p = ember_test_start("boot", "--kernel", ember_test_guest("fn"), "--cmdline",
			     "heap=1M seed=3", "--mem", "32", "--vsock-cid", "3", "--vsock-uds", uds,
			     "--api-sock", ctl, "--console", "none", NULL);
	snapt_wait_socket(ctl, SNAPT_RUN_MS);
	snapt_ctl(&r, ctl, "reset", NULL);
	cr_assert_neq(r.status, 0);
	cr_assert(strstr(r.err, "booted, not restored"), "%s", r.err);
	proc_result_free(&r);
	snapt_ctl(&r, ctl, "status", NULL);
	cr_assert_eq(r.status, 0, "the VM died after a refused reset: %s", r.err);
	cr_assert(strstr(r.out, "state: running\n"), "%s", r.out);
	proc_result_free(&r);
	fnt_guest_cmd(ctl, "exit");
	cr_assert_eq(proc_finish(p, 10000, &r), 0);
	cr_assert_eq(r.status, 0, "%s", r.err);
	proc_result_free(&r);
}

Test(reset, ready_fd_gets_one_line_once_the_standby_vm_is_ready)
{
	char ctl[PATH_MAX], uds[PATH_MAX], ready[PATH_MAX], cmd[6 * PATH_MAX];
	char *argv[] = { "/bin/sh", "-c", cmd, NULL };
	struct proc_result r;
	struct proc *p;
	char buf[64] = "";
	FILE *f;

	snapt_join(ctl, tmp, "rf.ctl");
	snapt_join(uds, tmp, "rf.v");
	snapt_join(ready, tmp, "rf.ready");
	snprintf(cmd, sizeof(cmd), "exec %s restore --snapshot %s --standby --api-sock %s "
		 "--vsock-uds %s --console none --ready-fd 3 3>%s", ember_test_path("ember"),
		 golden.dir, ctl, uds, ready);
	cr_assert_eq(proc_start(&p, argv), 0);
	snapt_wait_socket(ctl, SNAPT_RUN_MS);
	for (unsigned i = 0; i < 1000 && !buf[0]; i++) {
		f = fopen(ready, "r");
		if (f) {
			if (!fgets(buf, sizeof(buf), f))
				buf[0] = 0;
			fclose(f);
		}
		if (!buf[0])
			usleep(10000);
	}
	snprintf(cmd, sizeof(cmd), "ready pid=%d\n", (int)proc_pid(p));
	cr_assert_str_eq(buf, cmd);
	snapt_ctl(&r, ctl, "shutdown", NULL);
	proc_result_free(&r);
	cr_assert_eq(proc_finish(p, 10000, &r), 0);
	cr_assert_eq(r.status, 0, "%s", r.err);
	proc_result_free(&r);
}

/* The console file's text so far (NUL-terminated; "" while it does not exist). */
static char *console_text(const char *path)
{
	size_t len = 0;
	char *text = access(path, F_OK) ? NULL : (char *)snapt_read_file(path, &len);

	text = realloc(text, len + 1);
	cr_assert_not_null(text);
	text[len] = 0;
	return text;
}

/* Waits until the console holds n heap checksums and returns the n-th (from 1). */
static uint64_t await_checksum(const char *console, unsigned n)
{
	for (unsigned i = 0; i < 2000; i++) {
		char *text = console_text(console);
		unsigned have = snapt_count(text, "\nchecksum=") + !strncmp(text, "checksum=", 9);
		uint64_t sum = have >= n ? snapt_checksum(text, n - 1) : 0;

		free(text);
		if (have >= n)
			return sum;
		usleep(10000);
	}
	cr_assert_fail("no checksum #%u on the console %s", n, console);
	return 0;
}

/*
 * The sandbox writes N heap pages (`dirty`, spread over the heap: hundreds of runs, so
 * the mmap backend's drops go in several batches), the reset must revert at least those
 * and the heap must checksum as the golden guest's again; then once more with N pages in
 * one run.
 */
static void many_pages_reverted(const char *backend)
{
	static const struct {
		const char *cmd;
		uint64_t pages;
	} rounds[] = { { "dirty 1200", 1200 }, { "dirty 3000 seq", 3000 } };
	char dir[PATH_MAX], ctl[PATH_MAX], console[PATH_MAX], arg[PATH_MAX + 8], name[64];
	unsigned sums = 0;
	uint64_t golden_sum;
	struct proc *p;

	snprintf(name, sizeof(name), "sb-%s", backend);
	snapt_join(dir, tmp, "%s", name);
	golden_sum = snapt_golden(dir, "heap=16M seed=5", 64);
	snapt_join(ctl, tmp, "%s.ctl", name);
	snapt_join(console, tmp, "%s.console", name);
	snprintf(arg, sizeof(arg), "file:%s", console);
	p = ember_test_start("restore", "--snapshot", dir, "--api-sock", ctl, "--console", arg,
			     "--mem-backend", backend, NULL);
	snapt_wait_socket(ctl, SNAPT_RUN_MS);
	for (unsigned i = 0; i < ARRAY_SIZE(rounds); i++) {
		struct proc_result r;
		char line[128];
		uint64_t reverted = 0;

		fnt_guest_cmd(ctl, rounds[i].cmd);
		fnt_guest_cmd(ctl, "verify");
		cr_assert_neq(await_checksum(console, ++sums), golden_sum,
			      "%s did not change the heap", rounds[i].cmd);
		snapt_ctl(&r, ctl, "reset", NULL);
		cr_assert_eq(r.status, 0, "reset: %s%s", r.out, r.err);
		cr_assert_not_null(proc_find_line(r.out, "pages_reverted: ", line, sizeof(line)),
				   "%s", r.out);
		reverted = strtoull(line + 16, NULL, 10);
		cr_assert_geq(reverted, rounds[i].pages, "%s: the reset reverted %llu pages",
			      rounds[i].cmd, (unsigned long long)reverted);
		proc_result_free(&r);
		fnt_guest_cmd(ctl, "verify");
		cr_assert_eq(await_checksum(console, ++sums), golden_sum,
			     "%s, reset: the heap is not the golden one", rounds[i].cmd);
	}
	{
		struct proc_result r;

		fnt_guest_cmd(ctl, "exit");
		cr_assert_eq(proc_finish(p, 10000, &r), 0);
		ember_test_assert_no_crash(&r);
		cr_assert_eq(r.status, 0, "%s", r.err);
		proc_result_free(&r);
	}
}

Test(reset, many_written_pages_are_reverted_with_the_mmap_backend)
{
	many_pages_reverted("mmap");
}

Test(reset, many_written_pages_are_reverted_with_the_uffd_backend)
{
	many_pages_reverted("uffd");
}
