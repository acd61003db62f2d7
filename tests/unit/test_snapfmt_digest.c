/* Memory digests (format 1.3): computing them, their round trip, and their validation. */
#include "test_snapfmt_fixture.h"

static uint8_t *image_of(uint64_t size)
{
	uint8_t *img = calloc(1, size);

	cr_assert_not_null(img);
	/* a few non-zero pages, one of them where vCPU 0's CR3 points */
	for (uint64_t pg = 3; pg < size / SNAP_PAGE_SIZE; pg += 7)
		memset(img + pg * SNAP_PAGE_SIZE + 100, (int)(pg & 0xff) | 1, 50);
	return img;
}

static bool page_is_zero(const uint8_t *p)
{
	for (unsigned i = 0; i < SNAP_PAGE_SIZE; i++)
		if (p[i])
			return false;
	return true;
}

static void digest(struct snap_state *st, const uint8_t *img)
{
	struct snap_err err = { "" };

	cr_assert_eq(snap_memory_digest(st, img, NULL, &err), 0, "%s", err.msg);
}

Test(snapfmt_digest, every_block_and_anchor_page_gets_its_crc32c)
{
	struct snap_state st;
	uint8_t *img;

	fx_fill_state(&st);
	img = image_of(st.memory.size);
	st.vcpus[0].sregs.cr3 = 10 * SNAP_PAGE_SIZE + 0x18; /* page 10: only its flag bits */
	memset(img + 10 * SNAP_PAGE_SIZE, 0x5a, 8);
	digest(&st, img);
	cr_assert_eq(st.memory.digest_block, SNAP_DIGEST_BLOCK);
	cr_assert_eq(st.memory.digests_len, 4 * ((st.memory.size + SNAP_DIGEST_BLOCK - 1) /
						 SNAP_DIGEST_BLOCK));
	cr_assert_eq(st.memory.digests[0] | st.memory.digests[1] << 8 | st.memory.digests[2] << 16 |
		     (uint32_t)st.memory.digests[3] << 24,
		     snap_crc32c(0, img, st.memory.size < SNAP_DIGEST_BLOCK ? st.memory.size
										: SNAP_DIGEST_BLOCK));
	cr_assert_gt(st.memory.nr_anchors, 1);
	bool cr3 = false;
	for (uint32_t i = 0; i < st.memory.nr_anchors; i++) {
		const struct snap_anchor *a = &st.memory.anchors[i];

		cr_assert_eq(a->crc32c, snap_crc32c(0, img + a->page * SNAP_PAGE_SIZE, SNAP_PAGE_SIZE));
		cr_assert(!page_is_zero(img + a->page * SNAP_PAGE_SIZE),
			  "anchor %u is a zero page", i);
		cr3 |= a->page == 10;
	}
	cr_assert(cr3, "no anchor on the CR3 page");
	free(img);
	snap_state_free(&st);
}

Test(snapfmt_digest, absent_pages_count_as_zero_without_being_read)
{
	struct snap_state a, b;
	uint64_t *present;
	uint8_t *img, *zeroed;
	uint64_t pages;

	fx_fill_state(&a);
	fx_fill_state(&b);
	pages = a.memory.size / SNAP_PAGE_SIZE;
	img = image_of(a.memory.size);
	zeroed = malloc(a.memory.size);
	memcpy(zeroed, img, a.memory.size);
	present = calloc((pages + 63) / 64, 8);
	/* pages 0..7 absent: garbage there must not count, the zeros must */
	for (uint64_t pg = 8; pg < pages; pg++)
		present[pg / 64] |= 1ull << (pg % 64);
	memset(img, 0xee, 8 * SNAP_PAGE_SIZE);
	memset(zeroed, 0, 8 * SNAP_PAGE_SIZE);
	cr_assert_eq(snap_memory_digest(&a, img, present, NULL), 0);
	digest(&b, zeroed);
	cr_assert_eq(a.memory.digests_len, b.memory.digests_len);
	cr_assert_eq(memcmp(a.memory.digests, b.memory.digests, a.memory.digests_len), 0);
	free(present);
	free(img);
	free(zeroed);
	snap_state_free(&a);
	snap_state_free(&b);
}

Test(snapfmt_digest, digests_and_anchors_survive_a_round_trip)
{
	struct snap_state in, out;
	struct snap_err err = { "" };
	uint8_t *img, *f;
	size_t len;

	fx_fill_state(&in);
	img = image_of(in.memory.size);
	digest(&in, img);
	f = fx_encode(&in, &len);
	cr_assert_eq(snap_state_decode(f, len, &out, &err), 0, "decode: %s", err.msg);
	cr_assert_eq(out.memory.digest_block, in.memory.digest_block);
	cr_assert_eq(out.memory.digests_len, in.memory.digests_len);
	cr_assert_eq(memcmp(out.memory.digests, in.memory.digests, in.memory.digests_len), 0);
	cr_assert_eq(out.memory.nr_anchors, in.memory.nr_anchors);
	cr_assert_eq(memcmp(out.memory.anchors, in.memory.anchors,
			    in.memory.nr_anchors * sizeof(*in.memory.anchors)), 0);
	free(f);
	free(img);
	snap_state_free(&in);
	snap_state_free(&out);
}

Test(snapfmt_digest, a_state_without_digests_is_still_valid_and_writes_none)
{
	struct snap_state in, out;
	struct snap_err err = { "" };
	uint8_t *f;
	size_t len;

	fx_fill_state(&in);
	f = fx_encode(&in, &len);
	cr_assert_null(memmem(f, len, "digest", 6), "a state without digests names them");
	cr_assert_null(memmem(f, len, "anchors", 7));
	cr_assert_eq(snap_state_decode(f, len, &out, &err), 0, "decode: %s", err.msg);
	cr_assert_eq(out.memory.digest_block, 0);
	cr_assert_eq(out.memory.nr_anchors, 0);
	free(f);
	snap_state_free(&in);
	snap_state_free(&out);
}

Test(snapfmt_digest, digests_of_the_wrong_length_are_refused)
{
	struct snap_state st;
	struct snap_err err = { "" };
	uint8_t *img = NULL, *f = NULL;
	size_t len;

	fx_fill_state(&st);
	img = image_of(st.memory.size);
	digest(&st, img);
	st.memory.digests_len -= 4;
	cr_assert_neq(snap_state_encode(&st, &f, &len, &err), 0);
	cr_assert_not_null(strstr(err.msg, "memory.digests:"), "%s", err.msg);
	st.memory.digests_len += 4;
	st.memory.anchors[0].page = st.memory.size / SNAP_PAGE_SIZE;
	cr_assert_neq(snap_state_encode(&st, &f, &len, &err), 0);
	cr_assert_not_null(strstr(err.msg, "memory.anchors[0].page"), "%s", err.msg);
	free(img);
	snap_state_free(&st);
}
