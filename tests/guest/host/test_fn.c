/*
 * The fn guest (tests/guest/fn.c) run on the host against the fake vsock device: a
 * scripted client in the park hook speaks INVOCATION.md to it, and the expected
 * answers are computed here from the spec and fn's heap, not from fn's code.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "../lib/bootparams.h"
#include "../lib/internal.h"
#include "fake_virtio.h"

#define REGION_SIZE (32u << 20) /* heap + fn's request and response buffers */
#define HDR         24
#define MAX_REQS    8

void fn_guest_main(void);
void fake_heap_place(struct heap *h);

static uint8_t *zero_page, *region;
static struct heap *fn_heap;

/* ---- a zero page and RAM below 4 GiB ------------------------------------------------- */

static void add_ram(uint64_t addr, uint64_t size)
{
	uint8_t *e = zero_page + BP_E820_TABLE + zero_page[BP_E820_ENTRIES] * E820_ENTRY_SIZE;
	uint32_t type = E820_TYPE_RAM;

	memcpy(e, &addr, 8);
	memcpy(e + 8, &size, 8);
	memcpy(e + 16, &type, 4);
	zero_page[BP_E820_ENTRIES]++;
}

static void setup(void)
{
	zero_page = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
	region = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
	cr_assert_neq(zero_page, MAP_FAILED);
	cr_assert_neq(region, MAP_FAILED);
	boot_params_gpa = (uint64_t)(uintptr_t)zero_page;
	add_ram((uint64_t)(uintptr_t)region, REGION_SIZE);
}

static void teardown(void)
{
	munmap(zero_page, 2 * 4096);
	munmap(region, REGION_SIZE);
	boot_params_gpa = 0;
}

/* heap_place for the host: the heap at the start of the region */
void fake_heap_place(struct heap *h)
{
	cr_assert_leq(h->size, REGION_SIZE / 2);
	h->base = region;
	h->pages = h->size / 4096;
	fn_heap = h;
}

static void set_cmdline(const char *extra)
{
	char *dst = (char *)zero_page + 4096;
	uint32_t lo = (uint32_t)(uintptr_t)dst;

	snprintf(dst, 4096, "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 "
		 "%s %s", extra, getenv("FAKE_CMDLINE") ? getenv("FAKE_CMDLINE") : "");
	memcpy(zero_page + BP_CMD_LINE_PTR, &lo, 4);
}

/* ---- the scripted client ------------------------------------------------------------- */

struct buf {
	uint8_t *p;
	size_t len;
};

static struct client {
	int h;                 /* fake host connection, -1 before connecting */
	uint32_t port;
	unsigned nreq, sent, nresp;
	struct buf req[MAX_REQS], resp[MAX_REQS];
	struct buf in;         /* bytes received, not yet a whole response */
	bool rst_at_end;       /* the client resets instead of waiting for the guest */
	bool done;
} cl;

static void (*script)(void); /* runs after the client at every park */
static unsigned phase;

static void append(struct buf *b, const void *p, size_t n)
{
	b->p = realloc(b->p, b->len + n + 1);
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static uint64_t le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* A request: header fields as given, then the payload. */
static struct buf request(uint32_t magic, uint16_t version, uint16_t flags, uint64_t id,
			  uint32_t plen, uint32_t reserved, const void *payload, size_t n)
{
	struct buf b = { 0 };
	uint8_t h[HDR];

	put_le(h, magic, 4);
	put_le(h + 4, version, 2);
	put_le(h + 6, flags, 2);
	put_le(h + 8, id, 8);
	put_le(h + 16, plen, 4);
	put_le(h + 20, reserved, 4);
	append(&b, h, HDR);
	if (n)
		append(&b, payload, n);
	return b;
}

#define EMBQ 0x51424d45u
#define EMBR 0x52424d45u

static struct buf ok_request(uint64_t id, const void *payload, size_t n)
{
	return request(EMBQ, 1, 0, id, (uint32_t)n, 0, payload, n);
}

static void client_start(uint32_t port)
{
	for (unsigned i = 0; i < MAX_REQS; i++) {
		free(cl.req[i].p);
		free(cl.resp[i].p);
	}
	free(cl.in.p);
	memset(&cl, 0, sizeof(cl));
	cl.h = -1;
	cl.port = port;
}

static void client_add(struct buf req)
{
	cr_assert_lt(cl.nreq, MAX_REQS);
	cl.req[cl.nreq++] = req;
}

static bool guest_closed(void)
{
	return cl.h >= 0 && !fake_vsock.conns[cl.h].live;
}

static void client_step(void)
{
	uint8_t tmp[65536];
	size_t n;

	if (cl.done || !cl.nreq)
		return;
	if (cl.h < 0) {
		cl.h = fake_vsock_connect(cl.port);
		fake_vsock_send(cl.h, cl.req[0].p, cl.req[0].len);
		cl.sent = 1;
		return;
	}
	while ((n = fake_vsock_recv(cl.h, tmp, sizeof(tmp))))
		append(&cl.in, tmp, n);
	while (cl.in.len >= HDR && cl.in.len >= HDR + le(cl.in.p + 16, 4)) {
		size_t whole = HDR + le(cl.in.p + 16, 4);

		cr_assert_lt(cl.nresp, cl.nreq, "a response nobody asked for");
		append(&cl.resp[cl.nresp++], cl.in.p, whole);
		memmove(cl.in.p, cl.in.p + whole, cl.in.len - whole);
		cl.in.len -= whole;
		if (cl.sent < cl.nreq) {
			fake_vsock_send(cl.h, cl.req[cl.sent].p, cl.req[cl.sent].len);
			cl.sent++;
		}
	}
	if (cl.nresp == cl.nreq || guest_closed()) {
		if (cl.rst_at_end && !guest_closed())
			fake_vsock_rst(cl.h);
		cl.done = true;
	}
}

static void hook(void)
{
	client_step();
	if (script)
		script();
}

/* The usual ending: one connection's exchange, then "exit". */
static void exit_when_done(void)
{
	if (cl.done && phase == 0) {
		phase = 1;
		fake_cmd("exit");
	}
}

/* Boots fn with this command line and runs it until it resets. */
static void run_fn(const char *cmdline)
{
	jmp_buf jb;

	fake_reset(true, true);
	fake_vsock.auto_consume = false; /* the client reads (client_step) */
	set_cmdline(cmdline);
	fake_park_hook = hook;
	fake_reset_jmp = &jb;
	if (!setjmp(jb)) {
		fn_guest_main();
		cr_assert_fail("fn returned from guest_main");
	}
	cr_assert(fake_ready, "fn never signalled ready");
	cr_assert_eq(fake_vsock.violations, 0, "fn broke a vsock rule: %s",
		     fake_vsock.last_violation);
}

/* ---- checking responses -------------------------------------------------------------- */

static const uint8_t *response(unsigned i, uint64_t id, uint16_t status, size_t *len)
{
	const struct buf *r = &cl.resp[i];

	cr_assert_lt(i, cl.nresp, "no response %u (%u came)", i, cl.nresp);
	cr_assert_eq(le(r->p, 4), EMBR, "magic");
	cr_assert_eq(le(r->p + 4, 2), 1, "version");
	cr_assert_eq(le(r->p + 6, 2), status, "status %lu, message: %.*s",
		     (unsigned long)le(r->p + 6, 2), (int)(r->len - HDR), (const char *)r->p + HDR);
	cr_assert_eq(le(r->p + 8, 8), id, "request_id");
	cr_assert_eq(le(r->p + 20, 4), 0, "reserved");
	*len = le(r->p + 16, 4);
	cr_assert_eq(r->len, HDR + *len);
	if (status)
		cr_assert_leq(*len, 1024, "error messages are short");
	return r->p + HDR;
}

static uint8_t *payload_bytes(size_t n, unsigned seed)
{
	uint8_t *p = malloc(n + 1);

	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 7 + seed * 13 + (i >> 9));
	return p;
}

/* The mix function straight from the spec (INVOCATION.md via the fn guest's header). */
static void expect_mix(const uint8_t *p, size_t n, const uint8_t *got, size_t got_len)
{
	uint64_t pages = fn_heap->pages, bytes = fn_heap->size;
	uint64_t key = hash64(p, n, 0x6d6978), start = key % pages, d = key;
	uint64_t touched = n ? (n + 4095) / 4096 : 1;

	for (uint64_t k = 0; k < touched; k++)
		d = hash64(fn_heap->base + ((start + k) % pages) * 4096, 4096, d);
	cr_assert_eq(got_len, 8 + n);
	cr_assert_eq(le(got, 8), d, "digest");
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(got[8 + i], p[i] ^ fn_heap->base[(start * 4096 + i) % bytes],
			     "byte %zu", i);
}

TestSuite(fn, .init = setup, .fini = teardown);

Test(fn, prints_its_config_and_the_heap_checksum)
{
	char want[64];

	client_start(5000);
	phase = 0;
	script = exit_when_done;
	cl.done = true; /* no client: exit at the first park */
	run_fn("heap=1M seed=3");
	cr_assert(strstr(fake_log, "fn: heap=1048576 seed=3 heap_at=0x"), "%s", fake_log);
	cr_assert(strstr(fake_log, " port=5000 max_payload=4194304\n"), "%s", fake_log);
	snprintf(want, sizeof(want), "checksum=%016lx\n", (unsigned long)heap_checksum(fn_heap));
	cr_assert(strstr(fake_log, want), "%s", fake_log);
	/* the sandbox's checksum for the same heap= seed= (lib/heap.c is shared) */
	cr_assert_eq(heap_checksum(fn_heap), 0x533e4d154fc106e8ull);
}

Test(fn, mix_on_one_connection)
{
	static const size_t sizes[] = { 0, 1, 5000, 70000, 3 << 20 };
	uint8_t *p[5];
	size_t len;

	client_start(5000);
	for (unsigned i = 0; i < 5; i++) {
		p[i] = payload_bytes(sizes[i], i);
		client_add(ok_request(100 + i, p[i], sizes[i]));
	}
	phase = 0;
	script = exit_when_done;
	run_fn("heap=1M seed=3"); /* the 3 MiB payload wraps around the 1 MiB heap */
	for (unsigned i = 0; i < 5; i++) {
		const uint8_t *r = response(i, 100 + i, 0, &len);

		expect_mix(p[i], sizes[i], r, len);
		free(p[i]);
	}
	cr_assert_eq(fake_reports, 1, "one report: the first response after ready");
	cr_assert_eq(fake_report_args[0], 5000);
	cr_assert_eq(fake_report_args[1], 0);
	cr_assert_eq(fake_report_args[2], 0);
	cr_assert_eq(fake_report_args[3], 8);
}

Test(fn, sink_hashes_and_counts)
{
	uint8_t *p = payload_bytes(100000, 9);
	const uint8_t *r;
	size_t len;

	client_start(5001);
	client_add(ok_request(1, NULL, 0));
	client_add(ok_request(2, p, 100000));
	script = exit_when_done;
	phase = 0;
	run_fn("heap=1M");
	r = response(0, 1, 0, &len);
	cr_assert_eq(len, 16);
	cr_assert_eq(le(r, 8), 0);
	cr_assert_eq(le(r + 8, 8), hash64(p, 0, 0));
	r = response(1, 2, 0, &len);
	cr_assert_eq(le(r, 8), 100000);
	cr_assert_eq(le(r + 8, 8), hash64(p, 100000, 0));
	free(p);
}

Test(fn, source_streams_the_heap_and_rejects_bad_payloads)
{
	uint8_t n8[8], big[8];
	const uint8_t *r;
	size_t len;

	put_le(n8, 3u << 20, 8);
	put_le(big, (4u << 20) + 1, 8);
	client_start(5002);
	client_add(ok_request(1, n8, 8));
	client_add(ok_request(2, n8, 7));
	client_add(ok_request(3, big, 8));
	put_le(n8, 0, 8);
	client_add(ok_request(4, n8, 8));
	script = exit_when_done;
	phase = 0;
	run_fn("heap=1M seed=5");
	r = response(0, 1, 0, &len);
	cr_assert_eq(len, 3u << 20);
	for (size_t i = 0; i < len; i++)
		cr_assert_eq(r[i], fn_heap->base[i % fn_heap->size], "byte %zu", i);
	r = response(1, 2, 3, &len);
	cr_assert(len > 0);
	response(2, 3, 3, &len);
	response(3, 4, 0, &len);
	cr_assert_eq(len, 0, "the connection stays open after FUNCTION_ERROR");
}

static void bad_header(uint32_t magic, uint16_t version, uint16_t flags, uint32_t reserved,
		       uint16_t status)
{
	size_t len;

	client_start(5000);
	client_add(request(magic, version, flags, 77, 5, reserved, "abcde", 5));
	client_add(ok_request(78, "x", 1)); /* never answered: the agent closes */
	script = exit_when_done;
	phase = 0;
	run_fn("heap=1M");
	response(0, 77, status, &len);
	cr_assert_eq(cl.nresp, 1);
	cr_assert(!fake_vsock.conns[cl.h].live, "the agent must close after status %u", status);
}

Test(fn, bad_magic_is_bad_request_and_closes)
{
	bad_header(0x51424d46, 1, 0, 0, 1);
}

Test(fn, unknown_version_is_unsupported_and_closes)
{
	bad_header(EMBQ, 2, 0, 0, 4);
}

Test(fn, version_check_comes_before_the_flags)
{
	bad_header(EMBQ, 7, 1, 0, 4);
}

Test(fn, nonzero_flags_or_reserved_are_bad_requests)
{
	bad_header(EMBQ, 1, 1, 0, 1);
	bad_header(EMBQ, 1, 0, 9, 1);
}

Test(fn, too_large_is_read_discarded_and_the_connection_stays)
{
	size_t n = (64 << 10) + 1, len;
	uint8_t *p = payload_bytes(n, 1);
	const uint8_t *r;

	client_start(5001);
	client_add(ok_request(1, p, n));
	client_add(ok_request(2, "abc", 3));
	script = exit_when_done;
	phase = 0;
	run_fn("heap=1M max_payload=64K");
	response(0, 1, 2, &len);
	r = response(1, 2, 0, &len);
	cr_assert_eq(le(r, 8), 3, "the next request was framed right");
	free(p);
}

Test(fn, client_reset_mid_payload_then_a_new_connection)
{
	struct buf half = request(EMBQ, 1, 0, 5, 100, 0, "0123456789", 10);
	size_t len;

	/* a request that promises 100 bytes, then RST; then a normal one */
	client_start(5001);
	script = NULL;
	phase = 0;
	{
		int h;
		jmp_buf jb;

		fake_reset(true, true);
		fake_vsock.auto_consume = false;
		set_cmdline("heap=1M");
		fake_park_hook = hook;
		fake_reset_jmp = &jb;
		h = fake_vsock_connect(5001);
		fake_vsock_send(h, half.p, half.len);
		free(half.p);
		fake_vsock_rst(h);
		client_add(ok_request(6, "hello", 5));
		script = exit_when_done;
		if (!setjmp(jb))
			fn_guest_main();
	}
	response(0, 6, 0, &len);
	cr_assert_eq(len, 16);
}

/* ---- commands ------------------------------------------------------------------------ */

static void cmds_then_exit(void)
{
	if (phase++ == 0) {
		fake_cmd("verify");
		fake_cmd("generation");
		fake_cmd("frobnicate");
		fake_cmd("stats");
		fake_cmd("exit");
	}
}

Test(fn, commands)
{
	char want[64];

	client_start(5000);
	script = cmds_then_exit;
	phase = 0;
	run_fn("heap=1M seed=4");
	snprintf(want, sizeof(want), "checksum=%016lx\n", (unsigned long)heap_checksum(fn_heap));
	cr_assert(strstr(strstr(fake_log, want) + 1, want), "verify:\n%s", fake_log);
	cr_assert(strstr(fake_log, "generation=0000000000000000\n"), "%s", fake_log);
	cr_assert(strstr(fake_log, "fn: unknown command: frobnicate\n"), "%s", fake_log);
	cr_assert(strstr(fake_log, "fn: served=0 resets=0\n"), "%s", fake_log);
}

static int dial_conn = -1;

static void dial_script(void)
{
	uint8_t buf[128];
	size_t n;

	if (phase == 0) {
		fake_vsock_listen(6000);
		fake_cmd("dial 6000");
		fake_cmd("dial 6001");
		phase = 1;
	}
	if (dial_conn < 0)
		for (int i = 0; i < FAKE_CONNS; i++)
			if (fake_vsock.conns[i].live && fake_vsock.conns[i].host_port == 6000)
				dial_conn = i;
	if (dial_conn >= 0 && (n = fake_vsock_recv(dial_conn, buf, sizeof(buf) - 1))) {
		char want[64];

		buf[n] = 0;
		snprintf(want, sizeof(want), "hello from fn %016lx\n",
			 (unsigned long)fake_generation);
		cr_assert_str_eq((char *)buf, want);
		fake_vsock_send(dial_conn, "pong\n", 5);
	}
	if (phase == 1 && strstr(fake_log, "dial: error")) {
		fake_cmd("exit");
		phase = 2;
	}
}

Test(fn, dial_talks_to_a_host_listener_and_reports_refusals)
{
	client_start(5000);
	script = dial_script;
	phase = 0;
	dial_conn = -1;
	run_fn("heap=1M");
	cr_assert(strstr(fake_log, "dial: pong\n"), "%s", fake_log);
	cr_assert(strstr(fake_log, "dial: error connect: connection reset"), "%s", fake_log);
}

/* ---- restore ------------------------------------------------------------------------- */

static void restore_script(void)
{
	if (phase == 0 && cl.done) {
		/* a snapshot was restored: new generation, every connection reset */
		fake_generation = 0xabc;
		fake_vsock_transport_reset(3);
		client_start(5001);
		client_add(ok_request(2, "after", 5));
		phase = 1;
	} else if (phase == 1 && cl.done) {
		fake_cmd("stats");
		fake_cmd("exit");
		phase = 2;
	}
}

Test(fn, a_restore_is_noted_once_and_listeners_survive)
{
	const char *first;
	size_t len;

	client_start(5001);
	client_add(ok_request(1, "before", 6));
	script = restore_script;
	phase = 0;
	run_fn("heap=1M");
	response(0, 2, 0, &len);
	first = strstr(fake_log, "fn: restored generation=0000000000000abc\n");
	cr_assert(first, "%s", fake_log);
	cr_assert_null(strstr(first + 1, "fn: restored"), "noted twice:\n%s", fake_log);
	cr_assert_eq(fake_reports, 2, "each generation reports its first response");
	cr_assert(strstr(fake_log, "fn: served=2 resets=1\n"), "%s", fake_log);
}

Test(fn, max_payload_above_16m_is_refused)
{
	jmp_buf jb;

	fake_reset(true, true);
	set_cmdline("heap=1M max_payload=17M");
	fake_assert_jmp = &jb;
	if (!setjmp(jb)) {
		fn_guest_main();
		cr_assert_fail("fn accepted max_payload=17M");
	}
	cr_assert(strstr(fake_assert_msg, "max_payload=17825792"), "%s", fake_assert_msg);
}

Test(fn, no_vsock_device_fails_clearly)
{
	jmp_buf jb;

	fake_reset(true, false);
	set_cmdline("heap=1M");
	/* the command line still names the vsock window, but nothing answers there */
	fake_assert_jmp = &jb;
	if (!setjmp(jb)) {
		fn_guest_main();
		cr_assert_fail("fn ran without a vsock device");
	}
	cr_assert(strstr(fake_assert_msg, "no virtio-vsock device found"), "%s", fake_assert_msg);
}

static void dial_after_restore(void)
{
	if (phase == 0) {
		fake_vsock_listen(6000);
		fake_cmd("dial 6000");
		phase = 1;
	}
	dial_script();
	if (phase == 1 && strstr(fake_log, "dial: ")) {
		fake_cmd("exit");
		phase = 2;
	}
}

Test(fn, a_clone_takes_the_transport_reset_before_its_first_dial)
{
	/* a clone resuming: new generation, the device's event not in the ring yet */
	client_start(5000);
	script = dial_after_restore;
	phase = 0;
	dial_conn = -1;
	fake_reset(true, true);
	fake_vsock.auto_consume = false;
	set_cmdline("heap=1M");
	fake_park_hook = hook;
	fake_generation = 0x55;
	fake_vsock_transport_reset(3);
	{
		jmp_buf jb;

		fake_reset_jmp = &jb;
		if (!setjmp(jb))
			fn_guest_main();
	}
	cr_assert(strstr(fake_log, "dial: pong\n"), "%s", fake_log);
	cr_assert_null(strstr(fake_log, "no TRANSPORT_RESET"), "%s", fake_log);
	cr_assert(strstr(fake_log, "fn: restored generation=0000000000000055\n"), "%s", fake_log);
}

static void exit_after_restored(void)
{
	if (phase == 0 && strstr(fake_log, "fn: restored")) {
		fake_cmd("exit");
		phase = 1;
	}
}

Test(fn, a_restore_without_transport_reset_is_reported_and_served_anyway)
{
	jmp_buf jb;

	client_start(5000);
	script = exit_after_restored;
	phase = 0;
	fake_reset(true, true);
	set_cmdline("heap=1M");
	fake_park_hook = hook;
	fake_generation = 0x66; /* a new generation, and no event ever */
	fake_reset_jmp = &jb;
	if (!setjmp(jb))
		fn_guest_main();
	cr_assert(strstr(fake_log, "fn: no TRANSPORT_RESET within 100 ms of the restore\n"), "%s",
		  fake_log);
	cr_assert(strstr(fake_log, "fn: restored generation=0000000000000066\n"), "%s", fake_log);
}
