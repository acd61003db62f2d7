/*
 * Working-set prefetch and first-touch recording on a raw memory file: prefetched
 * pages are present and right without a fault, demand faults during prefetch are
 * served, close pages are merged, recording logs first touches in order until stopped,
 * and a recorded set prefetched on the next restore removes the faults.
 */
#include "test_pager_fixture.h"

#define RAM (4 * MiB)
#define NPAGES (RAM / PAGE_SIZE)

static struct px_file f;
static struct px_vm v;

static void setup(void) { px_file_make(&f, RAM, 0xbeef); }
static void teardown(void)
{
	if (v.p || v.m.base)
		px_pager_down(&v);
	px_file_free(&f);
}

/* A scattered working set: random pages, one contiguous run, page 0 and the last page. */
static uint64_t *scattered_ws(uint64_t *n)
{
	uint64_t *o = px_order_random(NPAGES, 31), *ws = malloc(600 * sizeof(*ws)), k = 0;

	cr_assert_not_null(ws);
	ws[k++] = NPAGES - 1;
	for (uint64_t i = 0; i < 300; i++)
		ws[k++] = o[i];
	for (uint64_t pg = 500; pg < 600; pg++)
		ws[k++] = pg;
	ws[k++] = 0;
	ws[k++] = o[7]; /* a duplicate */
	free(o);
	*n = k;
	return ws;
}

static void assert_ws_resident_and_right(const uint64_t *ws, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		cr_assert(px_page_resident(v.m.base, ws[i]), "ws page %llu not present",
			  (unsigned long long)ws[i]);
	}
	for (uint64_t i = 0; i < n; i++)
		cr_assert_eq(memcmp(v.m.base + ws[i] * PAGE_SIZE, f.expect + ws[i] * PAGE_SIZE,
				    PAGE_SIZE), 0, "ws page %llu", (unsigned long long)ws[i]);
}

static void prefetch_without_faults(bool no_io_uring)
{
	uint64_t n, *ws = scattered_ws(&n);
	struct pager_config cfg = { .ws_pages = ws, .nr_ws_pages = n, .no_io_uring = no_io_uring };
	struct pager_stats s;

	px_pager_up(&v, &f, &cfg, true);
	free(ws); /* the pager keeps its own plan */
	ws = scattered_ws(&n);
	px_wait_prefetch(v.p, &s);
	cr_assert_eq(s.faults, 0);
	cr_assert_geq(s.pages_prefetched, 400, "at least the distinct ws pages");
	cr_assert_eq(s.pages_prefetched, s.pages_copied + s.pages_zeroed);
	cr_assert_gt(s.prefetch_ns, 0);
	assert_ws_resident_and_right(ws, n);
	pager_stats(v.p, &s);
	cr_assert_eq(s.faults, 0, "reading prefetched pages takes no fault");
	cr_assert_eq(s.errors, 0);
	cr_assert_eq(s.io_uring, !no_io_uring);
	free(ws);
}

Test(pager_prefetch, working_set_is_present_and_right_without_faults, .init = setup,
     .fini = teardown)
{
	prefetch_without_faults(false);
}

Test(pager_prefetch, deferred_prefetch_waits_for_its_go_and_faults_are_served_meanwhile,
     .init = setup, .fini = teardown)
{
	uint64_t n, *ws = scattered_ws(&n);
	struct pager_config cfg = { .ws_pages = ws, .nr_ws_pages = n, .prefetch_deferred = true };
	struct pager_stats s;
	volatile uint8_t b;

	px_pager_up(&v, &f, &cfg, true);
	usleep(50 * 1000);
	pager_stats(v.p, &s);
	cr_assert_eq(s.pages_prefetched, 0, "prefetch began before pager_prefetch_begin");
	cr_assert_not(s.prefetch_done);
	/* the fault thread already serves demand faults */
	b = v.m.base[(NPAGES - 2) * PAGE_SIZE];
	(void)b;
	pager_stats(v.p, &s);
	cr_assert_eq(s.faults, 1);
	pager_prefetch_begin(v.p);
	px_wait_prefetch(v.p, &s);
	cr_assert_geq(s.pages_prefetched, 400);
	assert_ws_resident_and_right(ws, n);
	free(ws);
}

Test(pager_prefetch, working_set_is_prefetched_with_pread_too, .init = setup, .fini = teardown)
{
	prefetch_without_faults(true);
}

Test(pager_prefetch, zero_pages_in_the_working_set_are_zeropages, .init = setup, .fini = teardown)
{
	const uint64_t ws[] = { 3, 5, 12 }; /* a hole, written zeros, data */
	struct pager_config cfg = { .ws_pages = ws, .nr_ws_pages = 3, .prefetch_gap = 1 };
	struct pager_stats s;

	cr_assert_eq(px_kind_of(3, NPAGES), PX_HOLE);
	cr_assert_eq(px_kind_of(5, NPAGES), PX_ZERO_WRITTEN);
	cr_assert_eq(px_kind_of(4, NPAGES), PX_DATA);
	cr_assert_eq(px_kind_of(12, NPAGES), PX_DATA);
	px_pager_up(&v, &f, &cfg, true);
	px_wait_prefetch(v.p, &s);
	/* 3..5 merge (gap 1), 12 stays alone: pages 3, 4, 5, 12 */
	cr_assert_eq(s.pages_zeroed, 2, "zeroed %llu copied %llu", (unsigned long long)s.pages_zeroed,
		     (unsigned long long)s.pages_copied);
	cr_assert_eq(s.pages_copied, 2);
	assert_ws_resident_and_right(ws, 3);
}

Test(pager_prefetch, pages_between_close_working_set_pages_come_along, .init = setup,
     .fini = teardown)
{
	const uint64_t ws[] = { 100, 104, 200 };
	struct pager_config cfg = { .ws_pages = ws, .nr_ws_pages = 3, .prefetch_gap = 3 };
	struct pager_stats s;

	px_pager_up(&v, &f, &cfg, true);
	px_wait_prefetch(v.p, &s);
	for (uint64_t pg = 100; pg <= 104; pg++)
		cr_assert(px_page_resident(v.m.base, pg), "page %llu in the merged gap",
			  (unsigned long long)pg);
	cr_assert_not(px_page_resident(v.m.base, 105));
	cr_assert_not(px_page_resident(v.m.base, 199));
	cr_assert(px_page_resident(v.m.base, 200));
	cr_assert_eq(s.pages_prefetched, 6);
}

Test(pager_prefetch, gap_wider_than_the_limit_is_not_read, .init = setup, .fini = teardown)
{
	const uint64_t ws[] = { 100, 104 };
	struct pager_config cfg = { .ws_pages = ws, .nr_ws_pages = 2, .prefetch_gap = 2 };
	struct pager_stats s;

	px_pager_up(&v, &f, &cfg, true);
	px_wait_prefetch(v.p, &s);
	cr_assert_eq(s.pages_prefetched, 2);
	cr_assert_not(px_page_resident(v.m.base, 102));
}

Test(pager_prefetch, demand_faults_during_prefetch_are_served_right, .init = setup,
     .fini = teardown)
{
	uint64_t *ws = px_order_random(NPAGES, 3);
	/* small blocks, one in flight: the prefetch takes many steps */
	struct pager_config cfg = { .ws_pages = ws, .nr_ws_pages = NPAGES, .prefetch_block = 16384,
				    .prefetch_depth = 1 };
	struct px_toucher t[2];
	pthread_t th[2];
	struct pager_stats s;
	int64_t bad;

	px_pager_up(&v, &f, &cfg, true);
	for (unsigned i = 0; i < 2; i++) {
		t[i] = (struct px_toucher){ .base = v.m.base, .n = NPAGES,
					    .order = px_order_linear(NPAGES, i == 1) };
		cr_assert_eq(pthread_create(&th[i], NULL, px_touch_thread, &t[i]), 0);
	}
	for (unsigned i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		free((void *)t[i].order);
	}
	px_wait_prefetch(v.p, &s);
	bad = px_first_mismatch(v.m.base, f.expect, RAM);
	cr_assert_eq(bad, -1, "page %lld", (long long)bad);
	cr_assert_eq(s.pages_copied + s.pages_zeroed, NPAGES, "every page installed exactly once");
	cr_assert_eq(s.errors, 0);
	free(ws);
}

/* ---- recording ------------------------------------------------------------------------ */

static void touch(uint64_t pg)
{
	(void)*(volatile uint8_t *)(v.m.base + pg * PAGE_SIZE + 17);
}

Test(pager_record, logs_first_touches_in_order_until_stopped, .init = setup, .fini = teardown)
{
	struct pager_config cfg = { .record_ws = true };
	const uint64_t want[] = { 5, 3, 9, NPAGES - 1 };
	uint64_t *pages, n;

	px_pager_up(&v, &f, &cfg, true);
	touch(5);
	touch(3);
	touch(9);
	touch(3); /* second touch: no fault, not logged */
	touch(NPAGES - 1);
	pager_record_stop(v.p);
	touch(11);
	cr_assert_eq(pager_ws_pages(v.p, &pages, &n), 0);
	cr_assert_eq(n, ARRAY_SIZE(want));
	for (uint64_t i = 0; i < n; i++)
		cr_assert_eq(pages[i], want[i], "entry %llu: %llu", (unsigned long long)i,
			     (unsigned long long)pages[i]);
	free(pages);
}

Test(pager_record, asking_for_the_set_without_recording_is_an_error, .init = setup,
     .fini = teardown)
{
	uint64_t *pages = (uint64_t *)1, n = 1;

	px_pager_up(&v, &f, NULL, true);
	touch(1);
	cr_assert_eq(pager_ws_pages(v.p, &pages, &n), -EINVAL);
	cr_assert_null(pages);
	cr_assert_eq(n, 0);
}

Test(pager_record, recorded_set_prefetched_next_time_removes_the_faults, .init = setup,
     .fini = teardown)
{
	struct pager_config rec = { .record_ws = true };
	uint64_t *order = px_order_random(NPAGES, 11), *pages, n;
	struct pager_stats s;

	/* first restore: the "request" touches 200 pages */
	px_pager_up(&v, &f, &rec, true);
	for (uint64_t i = 0; i < 200; i++)
		touch(order[i]);
	pager_record_stop(v.p);
	cr_assert_eq(pager_ws_pages(v.p, &pages, &n), 0);
	cr_assert_eq(n, 200);
	px_pager_down(&v);

	/* second restore with the recorded set: the same request takes no fault */
	struct pager_config cfg = { .ws_pages = pages, .nr_ws_pages = n };

	px_pager_up(&v, &f, &cfg, true);
	px_wait_prefetch(v.p, &s);
	for (uint64_t i = 0; i < 200; i++) {
		touch(order[i]);
		cr_assert_eq(memcmp(v.m.base + order[i] * PAGE_SIZE, f.expect + order[i] * PAGE_SIZE,
				    PAGE_SIZE), 0);
	}
	pager_stats(v.p, &s);
	cr_assert_eq(s.faults, 0);
	free(pages);
	free(order);
}
