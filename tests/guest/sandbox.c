/*
 * sandbox: the function-runtime model. Init builds a heap of `heap=` bytes from
 * `seed=` (lib/heap.c: a deterministic mix of zero, compressible and random pages),
 * prints its checksum and signals ready (the golden-snapshot point); then it serves
 * host commands until there are none:
 *   verify      checksum the whole heap again       -> "checksum=<hex>"
 *   serve       touch a working set of `ws=` bytes  -> "served ws=<bytes> checksum=<hex>"
 *                 (pages in `pattern=random|seq` order) + REPORT "serve"
 *   generation  the VM generation                   -> "generation=<hex>"
 *   dirty N [seq]  write one word (+1) in each of N distinct heap pages -> REPORT
 *                 "dirty" <N> <first page> <stride> <tsc cycles>, nothing printed. The
 *                 pages are spread over the heap like serve's random pattern (a
 *                 seed-derived stride coprime to the heap's pages), or pages 0..N-1
 *                 with seq. For the in-place reset bench (bench/warm.c): it changes
 *                 the heap (verify then differs); a reset reverts it.
 *   spin        loop forever in ring 3 (for signal, timeout and pause tests)
 *   exit        reset
 * With `resume_line` it prints "resumed" on the UART right after the ready point: the
 * first output of a restored clone, the same under ember and under QEMU (PVH boot,
 * `pvh_snapshot`), which bench/ times for both.
 * Everything runs in ring 3, at native speed.
 */
#include "guest.h"

#define DEFAULT_WS   (4ull << 20)
#define WORDS_PER_PAGE (PAGE_SIZE / 8)

/* Never returns; keeps a counter moving so a paused or snapshotted spinner is busy. */
static void __attribute__((noreturn)) spin(void)
{
	static volatile uint64_t spins;

	guest_print("spinning\n");
	for (;;)
		spins++;
}

struct config {
	uint64_t ws;
	bool random_pattern;
};

static struct heap heap; /* lib/heap.c: heap= and seed= */
static struct config cfg;
/* Written by every request, outside the heap, so serving dirties a few pages
 * without changing the heap checksum. */
static volatile uint64_t request_counters[16 * WORDS_PER_PAGE];
static uint64_t requests_served;

/* ---- configuration -------------------------------------------------------------- */

static void config_read(struct config *c)
{
	char pattern[16] = "random";
	int ret;

	heap_config(&heap);
	c->ws = cmdline_u64_or("ws", DEFAULT_WS);
	ret = cmdline_get_str("pattern", pattern, sizeof(pattern));
	GUEST_ASSERT_MSG(ret == 0 || ret == -ENOENT, "pattern= is too long (random or seq)");
	GUEST_ASSERT_MSG(!strcmp(pattern, "random") || !strcmp(pattern, "seq"),
			 "pattern=%s: expected random or seq", pattern);
	c->random_pattern = !strcmp(pattern, "random");

	GUEST_ASSERT_MSG(c->ws && c->ws % PAGE_SIZE == 0,
			 "ws=%lu must be a non-zero multiple of 4096", c->ws);
	GUEST_ASSERT_MSG(c->ws <= heap.size, "ws=%lu is larger than heap=%lu", c->ws, heap.size);
}

/* ---- requests ------------------------------------------------------------------ */

static uint64_t gcd(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

/* The first page and a stride coprime to the heap's pages: a seed-derived walk that
 * visits distinct pages (serve's random pattern). */
static void heap_walk(uint64_t *page, uint64_t *stride)
{
	uint64_t heap_pages = heap.pages, seed = heap.seed;

	*page = 0;
	*stride = 1;
	if (heap_pages <= 1)
		return;
	*page = mix64(seed ^ 0x5e7e5e7eull) % heap_pages;
	*stride = mix64(seed ^ 0x57a1deull) % heap_pages;
	if (*stride == 0)
		*stride = 1;
	while (gcd(*stride, heap_pages) != 1)
		*stride = *stride + 1 < heap_pages ? *stride + 1 : 1;
}

/*
 * Touches the working set: the same pages in the same order on every request (a
 * recorded working set stays valid for later clones). "random" walks the heap
 * with a seed-derived stride coprime to its size, so the pages are distinct.
 */
static void serve(void)
{
	uint64_t n = cfg.ws / PAGE_SIZE, page = 0, stride = 1, sum = 0;
	uint64_t heap_pages = heap.pages;
	uint64_t t0 = rdtsc();

	if (cfg.random_pattern)
		heap_walk(&page, &stride);
	for (uint64_t k = 0; k < n; k++) {
		sum = hash64(heap.base + page * PAGE_SIZE, PAGE_SIZE, sum);
		request_counters[page % ARRAY_SIZE(request_counters)]++;
		page = (page + stride) % heap_pages;
	}
	requests_served++;
	guest_print("served ws=%lu checksum=%016lx\n", n * PAGE_SIZE, sum);
	guest_report("serve", n * PAGE_SIZE, n, sum, rdtsc() - t0);
}

/* "dirty N [seq]": one written word in each of N distinct heap pages, then REPORT. */
static void dirty(const char *args)
{
	uint64_t n = 0, page = 0, stride = 1, first, t0 = rdtsc();
	size_t len = 0;
	const char *sp;
	bool seq;

	while (args[len] && args[len] != ' ')
		len++;
	sp = args[len] ? args + len : NULL;
	seq = sp && !strcmp(sp + 1, "seq");

	if (parse_u64_suffix(args, len, &n) || (sp && !seq) || n > heap.pages) {
		guest_print("dirty: '%s': expected a page count <= %lu, then optionally seq\n",
			    args, heap.pages);
		guest_report("dirty-error", 0, 0, 0, 0);
		return;
	}
	if (!seq)
		heap_walk(&page, &stride);
	first = page;
	for (uint64_t k = 0; k < n; k++) {
		volatile uint64_t *w = (volatile uint64_t *)(heap.base + page * PAGE_SIZE);

		*w += 1;
		page = (page + stride) % heap.pages;
	}
	guest_report("dirty", n, first, stride, rdtsc() - t0);
}

void guest_main(void)
{
	char cmd[EMBER_UCALL_DATA_MAX];
	uint64_t t0 = rdtsc();
	bool resume_line = cmdline_has_flag("resume_line"); /* read before the snapshot */

	config_read(&cfg);
	heap_place(&heap);
	heap_build(&heap);
	guest_print("sandbox: heap=%lu seed=%lu ws=%lu pattern=%s heap_at=0x%lx init_cycles=%lu\n",
		    heap.size, heap.seed, cfg.ws, cfg.random_pattern ? "random" : "seq",
		    (uint64_t)(uintptr_t)heap.base, rdtsc() - t0);
	guest_print("checksum=%016lx\n", heap_checksum(&heap));
	guest_ready();
	if (resume_line)
		serial_write("resumed\n", 8); /* short: every byte is an exit */

	while (guest_wait_cmd(cmd, sizeof(cmd)) >= 0) {
		if (!strcmp(cmd, "verify"))
			guest_print("checksum=%016lx\n", heap_checksum(&heap));
		else if (!strcmp(cmd, "serve"))
			serve();
		else if (!strncmp(cmd, "dirty ", 6))
			dirty(cmd + 6);
		else if (!strcmp(cmd, "generation"))
			guest_print("generation=%016lx\n", guest_generation());
		else if (!strcmp(cmd, "spin"))
			spin();
		else if (!strcmp(cmd, "exit"))
			break;
		else
			guest_print("unknown command: %s\n", cmd);
	}
	guest_reset();
}
