/*
 * seccomp on every ember thread, on a real restored VM (README, "Seccomp"): the fn
 * guest's golden snapshot restored with the userfaultfd page server and vsock, so that
 * every kind of thread exists. Each thread runs under its own filter, and a forbidden
 * call on any of them (EMBER_SECCOMP_PROBE) kills ember with SIGSYS.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "testlib.h"

#define HEAP_MIB 16
#define MEM_MIB  128
#define FN_PORT  5000
#ifdef EMBER_NO_SECCOMP
#define WANT_SECCOMP 0 /* sanitizer builds: README, "Seccomp" */
#else
#define WANT_SECCOMP 2 /* SECCOMP_MODE_FILTER */
#endif

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

TestSuite(seccomp, .init = setup, .fini = teardown, .timeout = 120);

struct task {
	char comm[32];
	int seccomp, filters;
};

/* /proc/PID/task/ * /{comm,status}: each thread's name and seccomp mode and filter count. */
static unsigned read_tasks(pid_t pid, struct task *t, unsigned max)
{
	char path[PATH_MAX], line[256];
	unsigned n = 0;
	struct dirent *e;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	cr_assert_not_null(d, "%s", path);
	while ((e = readdir(d)) && n < max) {
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		t[n] = (struct task){ .seccomp = -1, .filters = -1 };
		snprintf(path, sizeof(path), "/proc/%d/task/%s/comm", (int)pid, e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue; /* the thread ended meanwhile */
		if (fgets(t[n].comm, sizeof(t[n].comm), f))
			t[n].comm[strcspn(t[n].comm, "\n")] = 0;
		fclose(f);
		snprintf(path, sizeof(path), "/proc/%d/task/%s/status", (int)pid, e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f)) {
			sscanf(line, "Seccomp: %d", &t[n].seccomp);
			sscanf(line, "Seccomp_filters: %d", &t[n].filters);
		}
		fclose(f);
		n++;
	}
	closedir(d);
	return n;
}

static const struct task *find_task(const struct task *t, unsigned n, const char *comm)
{
	for (unsigned i = 0; i < n; i++)
		if (!strcmp(t[i].comm, comm))
			return &t[i];
	return NULL;
}

static const char *const thread_names[] = { "ember", "ember-vcpu0", "ember-pager",
					    "ember-vsock" };

Test(seccomp, every_thread_of_a_restored_vm_runs_under_its_own_filter)
{
	uint8_t payload[64] = "seccomp";
	struct task t[16];
	struct proc_result r;
	char uds[PATH_MAX];
	struct proc *p;
	unsigned n;
	int fd;

	snapt_join(uds, tmp, "clone.sock");
	p = fnt_restore(golden.dir, uds, "--mem-backend", "uffd", NULL);
	/* an answer: every thread exists and the vCPUs run; the main thread installs its
	 * filter right after it lets them run, so give it a moment (bounded) */
	fd = fnt_connect(uds, FN_PORT);
	fnt_invoke_check(&golden, fd, 1, payload, sizeof(payload));
	close(fd);
	for (unsigned tries = 0;; tries++) {
		const struct task *m;

		n = read_tasks(proc_pid(p), t, ARRAY_SIZE(t));
		m = find_task(t, n, "ember");
		if (tries == 100 || (m && m->seccomp == WANT_SECCOMP))
			break;
		usleep(50 * 1000);
	}

	for (unsigned i = 0; i < ARRAY_SIZE(thread_names); i++)
		cr_assert_not_null(find_task(t, n, thread_names[i]), "no thread named %s",
				   thread_names[i]);
#ifdef EMBER_NO_SECCOMP
	/* the documented exception (README, "Seccomp"): sanitizer builds run unfiltered */
	cr_log_info("sanitizer build: no seccomp filters; checking Seccomp: 0 instead");
#endif
	for (unsigned i = 0; i < n; i++) {
#ifdef EMBER_NO_SECCOMP
		cr_assert_eq(t[i].seccomp, 0, "thread %s: Seccomp: %d", t[i].comm, t[i].seccomp);
#else
		cr_assert_eq(t[i].seccomp, 2, "thread %s: Seccomp: %d", t[i].comm, t[i].seccomp);
		/* its own filter only: each was installed by the thread itself, and every
		 * thread exists before the main thread installs its own */
		cr_assert_eq(t[i].filters, 1, "thread %s: Seccomp_filters: %d", t[i].comm,
			     t[i].filters);
#endif
	}
	kill(proc_pid(p), SIGTERM);
	cr_assert_eq(proc_finish(p, 10000, &r), 0);
	ember_test_assert_no_crash(&r);
	proc_result_free(&r);
}

/* EMBER_SECCOMP_PROBE=kind: ember dies of SIGSYS, and the next ember can still take the
 * vsock socket the killed one left behind. */
static void probe_kills(const char *kind)
{
	uint8_t payload[16] = "after a kill";
	struct proc_result r;
	char uds[PATH_MAX];
	struct proc *p;
	int fd;

#ifdef EMBER_NO_SECCOMP
	cr_skip_test("sanitizer build: no seccomp filters to break (README, \"Seccomp\")");
#endif
	snapt_join(uds, tmp, "clone.sock");
	cr_assert_eq(setenv("EMBER_SECCOMP_PROBE", kind, 1), 0);
	ember_test_run(&r, SNAPT_RUN_MS, "restore", "--snapshot", golden.dir, "--mem-backend",
		       "uffd", "--vsock-uds", uds, NULL);
	unsetenv("EMBER_SECCOMP_PROBE");
	cr_assert(!r.timed_out, "probe %s: ember was not killed:\n%s", kind, r.err);
	cr_assert_eq(r.signal, SIGSYS, "probe %s: ember ended with status %d, signal %d:\n%s",
		     kind, r.status, r.signal, r.err);
	proc_result_free(&r);

	p = fnt_restore(golden.dir, uds, "--mem-backend", "uffd", NULL);
	fd = fnt_connect(uds, FN_PORT);
	fnt_invoke_check(&golden, fd, 1, payload, sizeof(payload));
	close(fd);
	kill(proc_pid(p), SIGTERM);
	cr_assert_eq(proc_finish(p, 10000, &r), 0);
	ember_test_assert_no_crash(&r);
	proc_result_free(&r);
}

Test(seccomp, a_forbidden_call_on_the_main_thread_kills_ember)
{
	probe_kills("main");
}

Test(seccomp, a_forbidden_call_on_a_vcpu_thread_kills_ember)
{
	probe_kills("vcpu");
}

Test(seccomp, a_forbidden_call_on_the_page_server_thread_kills_ember)
{
	probe_kills("pager");
}

Test(seccomp, a_forbidden_call_on_the_vsock_thread_kills_ember)
{
	probe_kills("vsock");
}

Test(seccomp, a_forbidden_call_on_the_restore_cpu_check_thread_kills_ember)
{
	probe_kills("cpucheck");
}

/* ---- a thread that cannot install its filter ---------------------------------------- */

struct unconfinable {
	struct proc_result r;
	int err;
};

/* In its own thread (the filter stays there, inherited by the ember it spawns): every
 * attempt to install a seccomp filter fails with EACCES. */
static void *boot_unconfinable(void *arg)
{
	struct unconfinable *u = arg;
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	char *argv[] = { (char *)ember_test_path("ember"), "boot", "--kernel",
			 (char *)ember_test_guest("hello"), "--timings", NULL };

	u->err = ctx ? 0 : -ENOMEM;
	if (!u->err)
		u->err = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(prctl), 1,
					  SCMP_A0(SCMP_CMP_EQ, PR_SET_SECCOMP));
	if (!u->err)
		u->err = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(seccomp), 0);
	if (!u->err)
		u->err = seccomp_load(ctx);
	seccomp_release(ctx);
	if (!u->err)
		u->err = proc_run(argv, SNAPT_RUN_MS, &u->r);
	return NULL;
}

Test(seccomp, an_ember_whose_threads_cannot_install_filters_stops_before_the_guest_runs)
{
	struct unconfinable u = { .err = 0 };
	pthread_t t;

#ifdef EMBER_NO_SECCOMP
	cr_skip_test("sanitizer build: filters are not loaded (README, \"Seccomp\")");
#endif
	cr_assert_eq(pthread_create(&t, NULL, boot_unconfinable, &u), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	cr_assert_eq(u.err, 0, "setting up the run: %s", strerror(-u.err));
	ember_test_assert_no_crash(&u.r);
	cr_assert_eq(u.r.status, 1, "ember exited %d:\n%s", u.r.status, u.r.err);
	cr_assert(strstr(u.r.err, "vCPU 0: seccomp: Permission denied"), "%s", u.r.err);
	/* first-entry: a vCPU's first KVM_RUN */
	cr_assert_null(strstr(u.r.err, "ember-timing first-entry"), "a vCPU entered the guest "
		       "unconfined:\n%s", u.r.err);
	cr_assert_str_eq(u.r.out, "", "the guest ran unconfined: %s", u.r.out);
	proc_result_free(&u.r);
}
