/*
 * The function-runtime heap of the sandbox and fn guests: `heap=` bytes right after
 * the image, built from `seed=`. The contents are a pure function of (size, seed), so
 * checksums compare across boots and a host test can rebuild any page. Changing
 * anything here changes every recorded checksum (host/test_guestlib.c pins some).
 */
#include "internal.h"

#define RECORD_SIZE    64
#define WORDS_PER_PAGE (PAGE_SIZE / 8)

struct record {
	uint64_t id;
	uint32_t counter;
	uint16_t kind, flags;
	char name[24];
	char tag[16];
	uint64_t updated;
};
_Static_assert(sizeof(struct record) == RECORD_SIZE, "64-byte records");

void heap_config(struct heap *h)
{
	h->size = cmdline_u64_or("heap", HEAP_DEFAULT_SIZE);
	h->seed = cmdline_u64_or("seed", HEAP_DEFAULT_SEED);
	GUEST_ASSERT_MSG(h->size && h->size % PAGE_SIZE == 0,
			 "heap=%lu must be a non-zero multiple of 4096", h->size);
	h->pages = h->size / PAGE_SIZE;
	h->base = NULL;
}

/* The heap starts at the first page after the image and must be RAM, all of it. */
void heap_place(struct heap *h)
{
	uint64_t start = ALIGN_UP((uint64_t)(uintptr_t)_end, PAGE_SIZE);
	uint64_t ram_end = e820_ram_end(start);

	GUEST_ASSERT_MSG(h->size <= GUEST_MAPPED_END - start,
			 "heap=%lu at 0x%lx would end above the 4 GiB the guest maps", h->size, start);
	GUEST_ASSERT_MSG(ram_end >= start + h->size,
			 "heap=%lu does not fit in RAM: it needs [0x%lx, 0x%lx) but RAM there ends "
			 "at 0x%lx (give ember more --mem or a smaller heap=)",
			 h->size, start, start + h->size, ram_end);
	h->base = (uint8_t *)(uintptr_t)start;
	h->pages = h->size / PAGE_SIZE;
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

void heap_build(struct heap *h)
{
	for (uint64_t idx = 0; idx < h->pages; idx++) {
		uint8_t *page = h->base + idx * PAGE_SIZE;
		uint64_t x = mix64(h->seed ^ mix64(idx));

		switch (x % 3) {
		case 0:
			ensure_zero(page);
			break;
		case 1:
			fill_records(page, x, idx);
			break;
		default:
			fill_random(page, x);
		}
	}
}

uint64_t heap_checksum(const struct heap *h)
{
	return hash64(h->base, h->pages * PAGE_SIZE, 0);
}
