/*
 * sandbox: the function-runtime model. Init builds a heap of `heap=` bytes from
 * `seed=` (a deterministic mix of zero, compressible and random pages), prints its
 * checksum and signals ready (the golden-snapshot point); then it serves host
 * commands until there are none:
 *   verify      checksum the whole heap again       -> "checksum=<hex>"
 *   serve       touch a working set of `ws=` bytes  -> "served ws=<bytes> checksum=<hex>"
 *                 (pages in `pattern=random|seq` order) + REPORT "serve"
 *   generation  the VM generation                   -> "generation=<hex>"
 *   spin        loop forever in ring 3 (for signal, timeout and pause tests)
 *   exit        reset
 * Everything runs in ring 3, at native speed.
 */
#include "guest.h"

#define DEFAULT_HEAP (64ull << 20)
#define DEFAULT_WS   (4ull << 20)
#define DEFAULT_SEED 1ull
#define RECORD_SIZE  64
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
	uint64_t heap_size, seed, ws;
	bool random_pattern;
};

struct record {
	uint64_t id;
	uint32_t counter;
	uint16_t kind, flags;
	char name[24];
	char tag[16];
	uint64_t updated;
};
_Static_assert(sizeof(struct record) == RECORD_SIZE, "64-byte records");

static uint8_t *heap;
static uint64_t heap_pages;
static struct config cfg;
/* Written by every request, outside the heap, so serving dirties a few pages
 * without changing the heap checksum. */
static volatile uint64_t request_counters[16 * WORDS_PER_PAGE];
static uint64_t requests_served;

/* ---- configuration -------------------------------------------------------------- */

static uint64_t config_u64(const char *key, uint64_t def)
{
	char raw[64] = "";
	uint64_t v = def;
	int ret = cmdline_get_u64(key, &v);

	if (ret == -ENOENT)
		return def;
	cmdline_get_str(key, raw, sizeof(raw));
	GUEST_ASSERT_MSG(ret == 0, "%s=%s is not a number (decimal or 0x hex, optional K/M/G/T)%s",
			 key, raw, ret == -ERANGE ? ": too large" : "");
	return v;
}

static void config_read(struct config *c)
{
	char pattern[16] = "random";
	int ret;

	c->heap_size = config_u64("heap", DEFAULT_HEAP);
	c->seed = config_u64("seed", DEFAULT_SEED);
	c->ws = config_u64("ws", DEFAULT_WS);
	ret = cmdline_get_str("pattern", pattern, sizeof(pattern));
	GUEST_ASSERT_MSG(ret == 0 || ret == -ENOENT, "pattern= is too long (random or seq)");
	GUEST_ASSERT_MSG(!strcmp(pattern, "random") || !strcmp(pattern, "seq"),
			 "pattern=%s: expected random or seq", pattern);
	c->random_pattern = !strcmp(pattern, "random");

	GUEST_ASSERT_MSG(c->heap_size && c->heap_size % PAGE_SIZE == 0,
			 "heap=%lu must be a non-zero multiple of 4096", c->heap_size);
	GUEST_ASSERT_MSG(c->ws && c->ws % PAGE_SIZE == 0,
			 "ws=%lu must be a non-zero multiple of 4096", c->ws);
	GUEST_ASSERT_MSG(c->ws <= c->heap_size, "ws=%lu is larger than heap=%lu", c->ws,
			 c->heap_size);
}

/* The heap starts at the first page after the image and must be RAM, all of it. */
static void heap_place(uint64_t size)
{
	uint64_t start = ALIGN_UP((uint64_t)(uintptr_t)_end, PAGE_SIZE);
	uint64_t ram_end = e820_ram_end(start);

	GUEST_ASSERT_MSG(size <= GUEST_MAPPED_END - start,
			 "heap=%lu at 0x%lx would end above the 4 GiB the guest maps", size, start);
	GUEST_ASSERT_MSG(ram_end >= start + size,
			 "heap=%lu does not fit in RAM: it needs [0x%lx, 0x%lx) but RAM there ends "
			 "at 0x%lx (give ember more --mem or a smaller heap=)",
			 size, start, start + size, ram_end);
	heap = (uint8_t *)(uintptr_t)start;
	heap_pages = size / PAGE_SIZE;
}

/* ---- heap contents: decided per page by a hash of (seed, page index) ------------ */

static const char *const tags[8] = {
	"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
};

/* Structured records: sequential ids, small counters, short repeated text. */
static void fill_records(uint8_t *page, uint64_t h, uint64_t idx)
{
	struct record *r = (struct record *)page;
	uint64_t ts = 1700000000ull + (h & 0xffffff);

	memset(page, 0, PAGE_SIZE); /* padding bytes too: the page must be a function of (seed, idx) */
	for (unsigned i = 0; i < PAGE_SIZE / RECORD_SIZE; i++, r++) {
		uint64_t id = idx * (PAGE_SIZE / RECORD_SIZE) + i;
		unsigned num = (unsigned)(id % 100000);

		r->id = id;
		r->counter = (uint32_t)((h >> (i % 48)) & 0xff);
		r->kind = (uint16_t)(i & 3);
		r->flags = (uint16_t)((h >> i) & 1);
		memcpy(r->name, "user-", 5);
		for (int d = 9; d >= 5; d--, num /= 10)
			r->name[d] = (char)('0' + num % 10);
		memcpy(r->name + 10, "@example.org", 12);
		strlcpy(r->tag, tags[(h >> (i % 61)) & 7], sizeof(r->tag));
		r->updated = ts + i * 60;
	}
}

/* Incompressible bytes: xorshift64* seeded from the page hash. */
static void fill_random(uint8_t *page, uint64_t h)
{
	uint64_t *w = (uint64_t *)page, s = h | 1;

	for (unsigned i = 0; i < WORDS_PER_PAGE; i++) {
		s ^= s >> 12;
		s ^= s << 25;
		s ^= s >> 27;
		w[i] = s * 0x2545f4914f6cdd1dull;
	}
}

/* Zero pages are only read: a read of untouched RAM costs the host no page. */
static void ensure_zero(uint8_t *page)
{
	const uint64_t *w = (const uint64_t *)page;
	uint64_t any = 0;

	for (unsigned i = 0; i < WORDS_PER_PAGE; i++)
		any |= w[i];
	if (any)
		memset(page, 0, PAGE_SIZE);
}

static void heap_build(void)
{
	for (uint64_t idx = 0; idx < heap_pages; idx++) {
		uint8_t *page = heap + idx * PAGE_SIZE;
		uint64_t h = mix64(cfg.seed ^ mix64(idx));

		switch (h % 3) {
		case 0:
			ensure_zero(page);
			break;
		case 1:
			fill_records(page, h, idx);
			break;
		default:
			fill_random(page, h);
		}
	}
}

static uint64_t heap_checksum(void)
{
	return hash64(heap, heap_pages * PAGE_SIZE, 0);
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

/*
 * Touches the working set: the same pages in the same order on every request (a
 * recorded working set stays valid for later clones). "random" walks the heap
 * with a seed-derived stride coprime to its size, so the pages are distinct.
 */
static void serve(void)
{
	uint64_t n = cfg.ws / PAGE_SIZE, page = 0, stride = 1, sum = 0;
	uint64_t t0 = rdtsc();

	if (cfg.random_pattern && heap_pages > 1) {
		page = mix64(cfg.seed ^ 0x5e7e5e7eull) % heap_pages;
		stride = mix64(cfg.seed ^ 0x57a1deull) % heap_pages;
		if (stride == 0)
			stride = 1;
		while (gcd(stride, heap_pages) != 1)
			stride = stride + 1 < heap_pages ? stride + 1 : 1;
	}
	for (uint64_t k = 0; k < n; k++) {
		sum = hash64(heap + page * PAGE_SIZE, PAGE_SIZE, sum);
		request_counters[page % ARRAY_SIZE(request_counters)]++;
		page = (page + stride) % heap_pages;
	}
	requests_served++;
	guest_print("served ws=%lu checksum=%016lx\n", n * PAGE_SIZE, sum);
	guest_report("serve", n * PAGE_SIZE, n, sum, rdtsc() - t0);
}

void guest_main(void)
{
	char cmd[EMBER_UCALL_DATA_MAX];
	uint64_t t0 = rdtsc();

	config_read(&cfg);
	heap_place(cfg.heap_size);
	heap_build();
	guest_print("sandbox: heap=%lu seed=%lu ws=%lu pattern=%s heap_at=0x%lx init_cycles=%lu\n",
		    cfg.heap_size, cfg.seed, cfg.ws, cfg.random_pattern ? "random" : "seq",
		    (uint64_t)(uintptr_t)heap, rdtsc() - t0);
	guest_print("checksum=%016lx\n", heap_checksum());
	guest_ready();

	while (guest_wait_cmd(cmd, sizeof(cmd)) >= 0) {
		if (!strcmp(cmd, "verify"))
			guest_print("checksum=%016lx\n", heap_checksum());
		else if (!strcmp(cmd, "serve"))
			serve();
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
