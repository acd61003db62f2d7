/*
 * The userfaultfd page server on a raw memory file: every page exactly right (data,
 * written zeros, holes, the last page) whatever the order and number of faulting
 * threads, through io_uring and through pread; concurrent faults on one page;
 * multi-region layouts through gpa_read; config errors; shutdown with a blocked
 * faulter.
 */
#include <seccomp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <linux/userfaultfd.h>

#include "test_pager_fixture.h"

#define RAM (4 * MiB)
#define NPAGES (RAM / PAGE_SIZE)

static struct px_file f;
static struct px_vm v;

static void setup(void) { px_file_make(&f, RAM, 0x1234); }
static void teardown(void)
{
	if (v.p || v.m.base)
		px_pager_down(&v);
	px_file_free(&f);
}

/* Touches every page from nthreads threads at once, each in its own order. */
static void touch_all_concurrently(unsigned nthreads)
{
	pthread_t th[8];
	struct px_toucher t[8];
	pthread_barrier_t bar;

	cr_assert_leq(nthreads, 8);
	pthread_barrier_init(&bar, NULL, nthreads);
	for (unsigned i = 0; i < nthreads; i++) {
		uint64_t *order = i == 0 ? px_order_linear(NPAGES, false)
				: i == 1 ? px_order_linear(NPAGES, true)
					 : px_order_random(NPAGES, 77 + i);

		t[i] = (struct px_toucher){ .base = v.m.base, .order = order, .n = NPAGES,
					    .start = &bar };
		cr_assert_eq(pthread_create(&th[i], NULL, px_touch_thread, &t[i]), 0);
	}
	for (unsigned i = 0; i < nthreads; i++) {
		pthread_join(th[i], NULL);
		free((void *)t[i].order);
	}
	pthread_barrier_destroy(&bar);
}

static void assert_all_pages_right(void)
{
	int64_t bad = px_first_mismatch(v.m.base, f.expect, RAM);

	cr_assert_eq(bad, -1, "guest page %lld differs from the memory file", (long long)bad);
}

Test(pager, every_page_matches_the_file_touched_in_order, .init = setup, .fini = teardown)
{
	struct pager_stats s;

	px_pager_up(&v, &f, NULL, true);
	touch_all_concurrently(1);
	assert_all_pages_right();
	PX_STATS_UNTIL(v.p, s, s.pages_copied + s.pages_zeroed == NPAGES && s.lat_count == NPAGES);
	cr_assert(s.io_uring, "io_uring is available on this machine");
	cr_assert_eq(s.pages_copied + s.pages_zeroed, NPAGES, "each page installed once");
	cr_assert_eq(s.pages_zeroed, f.zero_pages, "zero pages and holes map the zero page");
	cr_assert_eq(s.faults, NPAGES, "one fault per page from one thread");
	cr_assert_eq(s.bytes_read, RAM);
	cr_assert_eq(s.lat_count, NPAGES);
	cr_assert(s.lat_p50_ns > 0 && s.lat_p50_ns <= s.lat_p99_ns && s.lat_p99_ns <= 2 * s.lat_max_ns,
		  "latency p50 %llu p99 %llu max %llu", (unsigned long long)s.lat_p50_ns,
		  (unsigned long long)s.lat_p99_ns, (unsigned long long)s.lat_max_ns);
	cr_assert_eq(pager_error(v.p, NULL, 0), 0);
}

Test(pager, every_page_matches_with_two_threads_on_the_same_pages, .init = setup, .fini = teardown)
{
	struct pager_stats s;

	px_pager_up(&v, &f, NULL, true);
	touch_all_concurrently(2);
	assert_all_pages_right();
	PX_STATS_UNTIL(v.p, s, s.pages_copied + s.pages_zeroed == NPAGES);
	cr_assert_eq(s.pages_copied + s.pages_zeroed, NPAGES);
	cr_assert_geq(s.faults, NPAGES);
}

Test(pager, every_page_matches_with_four_threads_on_the_same_pages, .init = setup, .fini = teardown)
{
	struct pager_stats s;

	px_pager_up(&v, &f, NULL, true);
	touch_all_concurrently(4);
	assert_all_pages_right();
	PX_STATS_UNTIL(v.p, s, s.pages_copied + s.pages_zeroed == NPAGES);
	cr_assert_eq(s.pages_copied + s.pages_zeroed, NPAGES, "copied %llu zeroed %llu",
		     (unsigned long long)s.pages_copied, (unsigned long long)s.pages_zeroed);
	cr_assert_eq(s.errors, 0);
}

Test(pager, every_page_matches_in_random_order, .init = setup, .fini = teardown)
{
	uint64_t *order = px_order_random(NPAGES, 99);

	px_pager_up(&v, &f, NULL, true);
	for (uint64_t i = 0; i < NPAGES; i++) {
		uint64_t pg = order[i];

		cr_assert_eq(memcmp(v.m.base + pg * PAGE_SIZE, f.expect + pg * PAGE_SIZE, PAGE_SIZE), 0,
			     "page %llu", (unsigned long long)pg);
	}
	free(order);
}

Test(pager, pread_fallback_serves_every_page, .init = setup, .fini = teardown)
{
	struct pager_config cfg = { .no_io_uring = true };
	struct pager_stats s;

	px_pager_up(&v, &f, &cfg, true);
	touch_all_concurrently(2);
	assert_all_pages_right();
	PX_STATS_UNTIL(v.p, s, s.pages_copied + s.pages_zeroed == NPAGES);
	cr_assert_not(s.io_uring);
	cr_assert_eq(s.pages_copied + s.pages_zeroed, NPAGES);
}

Test(pager, last_page_of_ram_is_served_alone, .init = setup, .fini = teardown)
{
	struct pager_stats s;

	px_pager_up(&v, &f, NULL, true);
	cr_assert_eq(memcmp(v.m.base + RAM - PAGE_SIZE, f.expect + RAM - PAGE_SIZE, PAGE_SIZE), 0);
	cr_assert_neq(f.expect[RAM - 1] | f.expect[RAM - 2] | f.expect[RAM - 3], 0,
		      "the fixture's last page is not zero");
	PX_STATS_UNTIL(v.p, s, s.pages_copied == 1);
	cr_assert_eq(s.pages_copied, 1);
	cr_assert_not(px_page_resident(v.m.base, NPAGES - 2), "no neighbour installed");
}

Test(pager, first_write_to_a_page_keeps_the_rest_of_its_bytes, .init = setup, .fini = teardown)
{
	const uint64_t pg = 10;

	px_pager_up(&v, &f, NULL, true);
	/* a store is the first touch: the page must arrive before the store lands */
	v.m.base[pg * PAGE_SIZE + 100] = 0x5a;
	cr_assert_eq(v.m.base[pg * PAGE_SIZE + 100], 0x5a);
	cr_assert_eq(memcmp(v.m.base + pg * PAGE_SIZE, f.expect + pg * PAGE_SIZE, 100), 0);
	cr_assert_eq(memcmp(v.m.base + pg * PAGE_SIZE + 101, f.expect + pg * PAGE_SIZE + 101,
			    PAGE_SIZE - 101), 0);
}

Test(pager, written_zero_pages_and_holes_use_zeropage, .init = setup, .fini = teardown)
{
	struct pager_stats s;

	px_pager_up(&v, &f, NULL, true);
	cr_assert_eq(px_kind_of(3, NPAGES), PX_HOLE);
	cr_assert_eq(px_kind_of(5, NPAGES), PX_ZERO_WRITTEN);
	cr_assert_eq(*(volatile uint8_t *)(v.m.base + 3 * PAGE_SIZE), 0);
	cr_assert_eq(*(volatile uint8_t *)(v.m.base + 5 * PAGE_SIZE + 4095), 0);
	PX_STATS_UNTIL(v.p, s, s.pages_zeroed == 2);
	cr_assert_eq(s.pages_zeroed, 2, "zeroed %llu copied %llu faults %llu raced %llu", (unsigned long long)s.pages_zeroed, (unsigned long long)s.pages_copied, (unsigned long long)s.faults, (unsigned long long)s.pages_raced);
	cr_assert_eq(s.pages_copied, 0);
}

/* ---- one page, many threads ---------------------------------------------------------- */

Test(pager, concurrent_faults_on_one_page_install_it_once, .init = setup, .fini = teardown)
{
	enum { T = 8 };
	const uint64_t pg = 42;
	pthread_t th[T];
	struct px_toucher t[T];
	pthread_barrier_t bar;
	struct pager_stats s;

	cr_assert_eq(px_kind_of(pg, NPAGES), PX_DATA);
	px_pager_up(&v, &f, NULL, true);
	pthread_barrier_init(&bar, NULL, T);
	for (unsigned i = 0; i < T; i++) {
		t[i] = (struct px_toucher){ .base = v.m.base, .order = &pg, .n = 1, .start = &bar };
		cr_assert_eq(pthread_create(&th[i], NULL, px_touch_thread, &t[i]), 0);
	}
	for (unsigned i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(t[i].sum, f.expect[pg * PAGE_SIZE], "thread %u read the file's byte", i);
	}
	pthread_barrier_destroy(&bar);
	PX_STATS_UNTIL(v.p, s, s.pages_copied == 1);
	cr_assert_eq(s.pages_copied, 1, "one UFFDIO_COPY; the others were woken");
	cr_assert_eq(s.pages_zeroed, 0);
	cr_assert_geq(s.faults, 1);
	cr_assert_leq(s.pages_raced, s.faults - 1);
	cr_assert_eq(memcmp(v.m.base + pg * PAGE_SIZE, f.expect + pg * PAGE_SIZE, PAGE_SIZE), 0);
}

/* ---- regions ------------------------------------------------------------------------ */

Test(pager, second_region_reads_its_file_offset_through_gpa_read, .init = setup, .fini = teardown)
{
	struct mem_region r[2] = {
		{ .gpa = 0, .size = RAM / 2, .offset = 0 },
		{ .gpa = MEM_HOLE_END, .size = RAM / 2, .offset = RAM / 2 },
	};
	struct pager_config cfg = { .mem_fd = f.fd, .size = RAM };
	struct errbuf eb = { "" };
	uint8_t buf[PAGE_SIZE];

	cr_assert_eq(mem_set_regions(&v.m, r, 2, RAM, &eb), 0, "%s", eb.msg);
	cr_assert_eq(pager_create(&v.m, &cfg, &v.p, &eb), 0, "%s", eb.msg);
	cr_assert_eq(pager_start(v.p, &eb), 0, "%s", eb.msg);
	/* the VMM's own reads (ucalls) fault on its thread and are served too */
	cr_assert_eq(gpa_read(&v.m, MEM_HOLE_END + 3 * PAGE_SIZE, buf, sizeof(buf)), 0);
	cr_assert_eq(memcmp(buf, f.expect + RAM / 2 + 3 * PAGE_SIZE, PAGE_SIZE), 0);
	cr_assert_eq(gpa_read(&v.m, MEM_HOLE_END + RAM / 2 - PAGE_SIZE, buf, sizeof(buf)), 0);
	cr_assert_eq(memcmp(buf, f.expect + RAM - PAGE_SIZE, PAGE_SIZE), 0, "last page of RAM");
}

Test(pager, caller_may_close_its_memory_fd_once_created, .init = setup, .fini = teardown)
{
	struct pager_config cfg = { .size = RAM };
	struct errbuf eb = { "" };

	cfg.mem_fd = dup(f.fd);
	cr_assert_geq(cfg.mem_fd, 0);
	cr_assert_eq(mem_layout(&v.m, RAM, &eb), 0);
	cr_assert_eq(pager_create(&v.m, &cfg, &v.p, &eb), 0, "%s", eb.msg);
	close(cfg.mem_fd); /* like snap_dir_close right after restore */
	cr_assert_eq(pager_start(v.p, &eb), 0, "%s", eb.msg);
	touch_all_concurrently(1);
	assert_all_pages_right();
}

/* ---- config errors ---------------------------------------------------------------- */

Test(pager, rejects_a_memory_file_shorter_than_ram, .init = setup, .fini = teardown)
{
	struct pager_config cfg = { .mem_fd = f.fd, .size = RAM };
	struct errbuf eb = { "" };
	struct pager *p = NULL;

	cr_assert_eq(ftruncate(f.fd, RAM - PAGE_SIZE), 0);
	cr_assert_eq(mem_layout(&v.m, RAM, &eb), 0);
	cr_assert_eq(pager_create(&v.m, &cfg, &p, &eb), -EINVAL);
	cr_assert_null(p);
	cr_assert_null(v.m.base, "nothing mapped on failure");
	cr_assert(strstr(eb.msg, "memory file holds 4190208 bytes"), "%s", eb.msg);
}

Test(pager, rejects_a_size_that_is_not_the_guest_ram_size, .init = setup, .fini = teardown)
{
	struct pager_config cfg = { .mem_fd = f.fd, .size = RAM / 2 };
	struct errbuf eb = { "" };
	struct pager *p = NULL;

	cr_assert_eq(mem_layout(&v.m, RAM, &eb), 0);
	cr_assert_eq(pager_create(&v.m, &cfg, &p, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "does not match guest RAM"), "%s", eb.msg);
}

Test(pager, rejects_a_working_set_page_outside_ram, .init = setup, .fini = teardown)
{
	const uint64_t ws[] = { 1, 2, NPAGES };
	struct pager_config cfg = { .mem_fd = f.fd, .size = RAM, .ws_pages = ws, .nr_ws_pages = 3 };
	struct errbuf eb = { "" };
	struct pager *p = NULL;

	cr_assert_eq(mem_layout(&v.m, RAM, &eb), 0);
	cr_assert_eq(pager_create(&v.m, &cfg, &p, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "working-set entry 2: page 1024 is outside guest RAM (1024 pages)"),
		  "%s", eb.msg);
	cr_assert_null(v.m.base);
}

/* ---- errors at fault time ------------------------------------------------------------ */

struct err_seen {
	pthread_mutex_t lock;
	unsigned calls;
	char msg[512];
};

static void on_error(void *opaque, const char *msg)
{
	struct err_seen *e = opaque;

	pthread_mutex_lock(&e->lock);
	e->calls++;
	snprintf(e->msg, sizeof(e->msg), "%s", msg);
	pthread_mutex_unlock(&e->lock);
}

static unsigned err_calls(struct err_seen *e)
{
	unsigned n;

	pthread_mutex_lock(&e->lock);
	n = e->calls;
	pthread_mutex_unlock(&e->lock);
	return n;
}

Test(pager, short_read_reports_the_error_and_installs_nothing, .init = setup, .fini = teardown,
     .timeout = 20)
{
	static struct err_seen seen = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct pager_config cfg = { .on_error = on_error, .opaque = &seen };
	const uint64_t pg = NPAGES - 1;
	struct px_toucher t = { .order = &pg, .n = 1 };
	pthread_t th;
	char msg[512];

	px_pager_up(&v, &f, &cfg, true);
	cr_assert_eq(ftruncate(f.fd, RAM - PAGE_SIZE), 0, "the file shrinks under the pager");
	t.base = v.m.base;
	cr_assert_eq(pthread_create(&th, NULL, px_touch_thread, &t), 0);
	for (int i = 0; i < 2000 && err_calls(&seen) == 0; i++)
		usleep(1000);
	cr_assert_eq(err_calls(&seen), 1, "on_error called once");
	cr_assert(strstr(seen.msg, "guest page 1023") && strstr(seen.msg, "short read"), "%s",
		  seen.msg);
	cr_assert_neq(pager_error(v.p, msg, sizeof(msg)), 0);
	cr_assert_str_eq(msg, seen.msg);
	usleep(20000);
	cr_assert_not(px_page_resident(v.m.base, pg), "no bytes installed for the failed page");
	/* the VMM stops the VM: the faulter is released, never served */
	pager_stop(v.p);
	pthread_join(th, NULL);
	cr_assert_eq(err_calls(&seen), 1);
}

Test(pager, destroy_releases_a_thread_blocked_in_a_fault, .init = setup, .fini = teardown,
     .timeout = 20)
{
	const uint64_t pg = 7;
	struct px_toucher t = { .order = &pg, .n = 1 };
	pthread_t th;

	px_pager_up(&v, &f, NULL, false); /* not started: nobody serves the fault */
	t.base = v.m.base;
	cr_assert_eq(pthread_create(&th, NULL, px_touch_thread, &t), 0);
	usleep(50000);
	cr_assert_not(px_page_resident(v.m.base, pg));
	pager_destroy(v.p);
	v.p = NULL;
	pthread_join(th, NULL);
	cr_assert_eq(t.sum, 0, "released onto plain anonymous memory");
}

Test(pager, destroy_with_the_thread_running_and_a_fault_pending, .init = setup, .fini = teardown,
     .timeout = 20)
{
	struct px_toucher t[4];
	uint64_t *order = px_order_random(NPAGES, 5);
	pthread_t th[4];

	px_pager_up(&v, &f, NULL, true);
	for (unsigned i = 0; i < 4; i++) {
		t[i] = (struct px_toucher){ .base = v.m.base, .order = order, .n = NPAGES };
		cr_assert_eq(pthread_create(&th[i], NULL, px_touch_thread, &t[i]), 0);
	}
	usleep(2000); /* mid-way through the faults */
	pager_destroy(v.p);
	v.p = NULL;
	for (unsigned i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	free(order);
}

Test(pager, destroy_of_a_never_started_idle_pager_is_clean, .init = setup, .fini = teardown)
{
	px_pager_up(&v, &f, NULL, false);
	pager_stop(v.p);
	pager_stop(v.p);
	pager_destroy(v.p);
	v.p = NULL;
}

/* ---- missing kernel features (seccomp makes the syscalls fail in this test process) --- */

static void deny(int nr, int err, unsigned nargs_cmp, uint64_t arg1)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);

	cr_assert_not_null(ctx);
	if (nargs_cmp)
		cr_assert_eq(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(err), nr, 1,
					      SCMP_A1(SCMP_CMP_EQ, arg1)), 0);
	else
		cr_assert_eq(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(err), nr, 0), 0);
	cr_assert_eq(seccomp_load(ctx), 0);
	seccomp_release(ctx);
}

Test(pager, missing_userfaultfd_is_a_clear_error, .init = setup, .fini = teardown)
{
	struct pager_config cfg = { .mem_fd = f.fd, .size = RAM };
	struct errbuf eb = { "" };
	struct pager *p = NULL;

	deny(SCMP_SYS(userfaultfd), EPERM, 0, 0);
	deny(SCMP_SYS(ioctl), EPERM, 1, USERFAULTFD_IOC_NEW);
	cr_assert_eq(mem_layout(&v.m, RAM, &eb), 0);
	cr_assert_eq(pager_create(&v.m, &cfg, &p, &eb), -EPERM);
	cr_assert(strstr(eb.msg, "userfaultfd: Operation not permitted") &&
		  strstr(eb.msg, "(need root or vm.unprivileged_userfaultfd=1)"), "%s", eb.msg);
	cr_assert_null(v.m.base);
}

Test(pager, missing_io_uring_falls_back_to_pread, .init = setup, .fini = teardown)
{
	struct pager_stats s;

	deny(SCMP_SYS(io_uring_setup), ENOSYS, 0, 0);
	px_pager_up(&v, &f, NULL, true);
	touch_all_concurrently(1);
	assert_all_pages_right();
	pager_stats(v.p, &s);
	cr_assert_not(s.io_uring);
}

/* In-place reset: written pages dropped and served from the file again. */
Test(pager, discarded_pages_are_served_from_the_file_again, .init = setup, .fini = teardown)
{
	uint64_t *bm = calloc(NPAGES / 64, sizeof(uint64_t));

	cr_assert_not_null(bm);
	px_pager_up(&v, &f, NULL, true);
	assert_all_pages_right();
	/* scribble over every page kind (data, written zeros, holes) and mark it */
	for (uint64_t pg = 0; pg < NPAGES; pg += 3) {
		memset(v.m.base + pg * PAGE_SIZE, 0xee, PAGE_SIZE);
		bm[pg / 64] |= 1ull << (pg % 64);
	}
	cr_assert_neq(px_first_mismatch(v.m.base, f.expect, RAM), -1);
	cr_assert_eq(pager_discard(v.p, bm), 0);
	assert_all_pages_right();
	free(bm);
}

Test(pager, discard_of_nothing_changes_nothing, .init = setup, .fini = teardown)
{
	uint64_t *bm = calloc(NPAGES / 64, sizeof(uint64_t));

	cr_assert_not_null(bm);
	px_pager_up(&v, &f, NULL, true);
	v.m.base[5 * PAGE_SIZE] = 0x11;
	cr_assert_eq(pager_discard(v.p, bm), 0);
	cr_assert_eq(v.m.base[5 * PAGE_SIZE], 0x11);
	free(bm);
}
