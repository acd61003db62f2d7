/*
 * Split virtqueues (src/dev/virtq.c): normal operation against the test driver
 * (tests/lib/vq_driver.c), then a table of hostile rings, each of which must end in a
 * clean -EINVAL that says what is wrong, never in a crash or a guess.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "dev/virtio.h"
#include "testlib.h"

#define RING 0x10000ull   /* the driver's rings (vqd_init_at) */
#define DATA 0x100000ull  /* buffers from 1 MiB up */
#define TABLE 0x80000ull  /* indirect tables */
#define RAM (16 * MiB)
#define BIG_RAM (4 * GiB) /* two regions: [0, 3 GiB) and [4 GiB, 5 GiB), never touched */

static struct guest_mem m;
static struct vqd d;
static struct virtq q;
static struct virtq_chain c;
static struct errbuf eb;

static void teardown(void)
{
	mem_free(&m);
}

TestSuite(virtq, .fini = teardown);

/* ram bytes of guest RAM and an enabled queue of size entries at RING. */
static void start(uint64_t ram, uint16_t size, bool indirect)
{
	tb_mem_init(&m, ram);
	virtq_init(&q, &m, VIRTQ_MAX_SIZE);
	q.indirect = indirect;
	vqd_init_at(&d, &m, size, RING);
	vqd_attach(&d, &q);
	cr_assert_eq(virtq_enable(&q, &eb), 0, "virtq_enable: %s", eb.msg);
}

static void pop_ok(void)
{
	int r = virtq_pop(&q, &c, &eb);

	cr_assert_eq(r, 1, "virtq_pop returned %d (%s)", r, r < 0 ? eb.msg : "nothing");
}

static void assert_state_eq(const struct virtq_state *a, const struct virtq_state *b)
{
	cr_assert_eq(a->size, b->size);
	cr_assert_eq(a->ready, b->ready);
	cr_assert_eq(a->desc, b->desc);
	cr_assert_eq(a->avail, b->avail);
	cr_assert_eq(a->used, b->used);
	cr_assert_eq(a->next_avail, b->next_avail);
	cr_assert_eq(a->next_used, b->next_used);
}

static void assert_buf(unsigned i, uint64_t gpa, uint32_t len, bool writable)
{
	cr_assert_lt(i, c.nr);
	cr_assert_eq(c.buf[i].gpa, gpa, "buf %u gpa 0x%llx", i, (unsigned long long)c.buf[i].gpa);
	cr_assert_eq(c.buf[i].len, len, "buf %u len %u", i, c.buf[i].len);
	cr_assert_eq(c.buf[i].writable, writable, "buf %u writable", i);
	cr_assert_eq(c.buf[i].hva, gpa_ptr(&m, gpa, len), "buf %u hva", i);
}

/* ---- set-up, enable, pop ----------------------------------------------------------- */

Test(virtq, init_is_not_ready_with_the_maximum_size)
{
	memset(&q, 0xa5, sizeof(q));
	virtq_init(&q, NULL, 64);
	cr_assert_eq(q.s.ready, 0);
	cr_assert_eq(q.s.size, 64);
	cr_assert_eq(q.max_size, 64);
	cr_assert_eq(q.s.desc | q.s.avail | q.s.used, 0);
	cr_assert_eq(q.s.next_avail, 0);
	cr_assert_eq(q.s.next_used, 0);
	cr_assert_not(q.indirect);
	cr_assert_null(q.desc);
}

Test(virtq, pop_on_a_queue_that_is_not_ready_finds_nothing)
{
	tb_mem_init(&m, RAM);
	virtq_init(&q, &m, 8);
	cr_assert_eq(virtq_pop(&q, &c, &eb), 0);
}

Test(virtq, enable_maps_the_three_rings)
{
	start(RAM, 8, false);
	cr_assert_eq(q.s.ready, 1);
	cr_assert_eq((const void *)q.desc, gpa_ptr(&m, d.desc, 1));
	cr_assert_eq((const void *)q.avail, gpa_ptr(&m, d.avail, 1));
	cr_assert_eq((const void *)q.used, gpa_ptr(&m, d.used, 1));
}

Test(virtq, enable_accepts_the_smallest_queue_and_rings_at_their_minimum_alignment)
{
	tb_mem_init(&m, RAM);
	virtq_init(&q, &m, 8);
	q.s.size = 1;
	q.s.desc = 0x10010;
	q.s.avail = 0x10022;
	q.s.used = 0x10034;
	cr_assert_eq(virtq_enable(&q, &eb), 0, "%s", eb.msg);
}

Test(virtq, disable_drops_the_host_pointers_and_keeps_the_state)
{
	struct virtq_state s;

	start(RAM, 8, false);
	q.s.next_avail = 5;
	s = q.s;
	virtq_disable(&q);
	cr_assert_eq(q.s.ready, 0);
	cr_assert_null(q.desc);
	cr_assert_null(q.avail);
	cr_assert_null(q.used);
	cr_assert_eq(q.s.next_avail, 5);
	cr_assert_eq(q.s.desc, s.desc);
	cr_assert_eq(virtq_pop(&q, &c, &eb), 0);
}

Test(virtq, pop_with_nothing_published_finds_nothing)
{
	start(RAM, 8, false);
	cr_assert_eq(virtq_pop(&q, &c, &eb), 0);
	cr_assert_eq(q.s.next_avail, 0);
}

Test(virtq, pops_a_single_readable_buffer)
{
	struct vqd_buf b = { DATA, 100, false };
	uint16_t head;

	start(RAM, 8, false);
	head = vqd_add(&d, &b, 1);
	pop_ok();
	cr_assert_eq(c.head, head);
	cr_assert_eq(c.nr, 1);
	cr_assert_eq(c.nr_readable, 1);
	cr_assert_eq(c.readable_len, 100);
	cr_assert_eq(c.writable_len, 0);
	assert_buf(0, DATA, 100, false);
	cr_assert_eq(q.s.next_avail, 1);
	cr_assert_eq(virtq_pop(&q, &c, &eb), 0);
}

Test(virtq, pops_readable_then_writable_buffers_in_chain_order)
{
	struct vqd_buf b[] = {
		{ DATA, 16, false }, { DATA + 0x1000, 300, false },
		{ DATA + 0x2000, 4096, true }, { DATA + 0x5000, 7, true },
	};

	start(RAM, 8, false);
	vqd_add(&d, b, 4);
	pop_ok();
	cr_assert_eq(c.nr, 4);
	cr_assert_eq(c.nr_readable, 2);
	cr_assert_eq(c.readable_len, 316);
	cr_assert_eq(c.writable_len, 4103);
	for (unsigned i = 0; i < 4; i++)
		assert_buf(i, b[i].gpa, b[i].len, b[i].writable);
}

Test(virtq, pops_a_chain_of_writable_buffers_only)
{
	struct vqd_buf b[] = { { DATA, 64, true }, { DATA + 64, 64, true } };

	start(RAM, 8, false);
	vqd_add(&d, b, 2);
	pop_ok();
	cr_assert_eq(c.nr, 2);
	cr_assert_eq(c.nr_readable, 0);
	cr_assert_eq(c.writable_len, 128);
}

Test(virtq, skips_zero_length_buffers_wherever_they_point)
{
	struct vqd_buf b[] = {
		{ 0xffffffffffff0000ull, 0, false }, { DATA, 10, false },
		{ MEM_HOLE_START, 0, true }, { DATA + 0x1000, 20, true }, { 0, 0, false },
	};

	start(RAM, 8, false);
	vqd_add(&d, b, 5);
	pop_ok();
	cr_assert_eq(c.nr, 2);
	assert_buf(0, DATA, 10, false);
	assert_buf(1, DATA + 0x1000, 20, true);
}

Test(virtq, pops_an_indirect_table_when_negotiated)
{
	struct vqd_buf b[] = { { DATA, 32, false }, { DATA + 0x1000, 64, true },
			       { DATA + 0x3000, 128, true } };
	uint16_t head;

	start(RAM, 8, true);
	head = vqd_indirect(&d, TABLE, b, 3);
	vqd_publish(&d, head);
	pop_ok();
	cr_assert_eq(c.head, head);
	cr_assert_eq(c.nr, 3);
	cr_assert_eq(c.nr_readable, 1);
	for (unsigned i = 0; i < 3; i++)
		assert_buf(i, b[i].gpa, b[i].len, b[i].writable);
}

Test(virtq, pops_direct_buffers_followed_by_an_indirect_table)
{
	start(RAM, 8, true);
	/* the spec: "zero or more normal chained descriptors followed by a single
	 * descriptor with flags&VIRTQ_DESC_F_INDIRECT" */
	vqd_set_desc(&d, 0, DATA, 8, VRING_DESC_F_NEXT, 1);
	vqd_set_desc(&d, 1, TABLE, 32, VRING_DESC_F_INDIRECT, 0);
	vqd_set_desc_at(&m, TABLE, DATA + 0x100, 16, VRING_DESC_F_NEXT, 1);
	vqd_set_desc_at(&m, TABLE + 16, DATA + 0x200, 24, VRING_DESC_F_WRITE, 0);
	vqd_publish(&d, 0);
	pop_ok();
	cr_assert_eq(c.nr, 3);
	assert_buf(0, DATA, 8, false);
	assert_buf(1, DATA + 0x100, 16, false);
	assert_buf(2, DATA + 0x200, 24, true);
}

Test(virtq, ignores_the_write_flag_of_the_indirect_descriptor_itself)
{
	start(RAM, 8, true);
	vqd_set_desc(&d, 0, TABLE, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE, 0);
	vqd_set_desc_at(&m, TABLE, DATA, 16, 0, 0);
	vqd_publish(&d, 0);
	pop_ok();
	assert_buf(0, DATA, 16, false);
}

Test(virtq, follows_next_links_in_any_order)
{
	start(RAM, 8, false);
	vqd_set_desc(&d, 6, DATA, 1, VRING_DESC_F_NEXT, 2);
	vqd_set_desc(&d, 2, DATA + 1, 2, VRING_DESC_F_NEXT, 7);
	vqd_set_desc(&d, 7, DATA + 3, 3, VRING_DESC_F_WRITE, 0);
	vqd_publish(&d, 6);
	pop_ok();
	cr_assert_eq(c.head, 6);
	cr_assert_eq(c.nr, 3);
	assert_buf(1, DATA + 1, 2, false);
	assert_buf(2, DATA + 3, 3, true);
}

Test(virtq, pops_chains_in_avail_order)
{
	struct vqd_buf b[] = { { DATA, 1, false }, { DATA + 1, 2, false }, { DATA + 3, 3, false } };
	uint16_t heads[3];

	start(RAM, 8, false);
	for (unsigned i = 0; i < 3; i++)
		heads[i] = vqd_add(&d, &b[i], 1);
	for (unsigned i = 0; i < 3; i++) {
		pop_ok();
		cr_assert_eq(c.head, heads[i]);
		assert_buf(0, b[i].gpa, b[i].len, false);
	}
	cr_assert_eq(virtq_pop(&q, &c, &eb), 0);
}

Test(virtq, accepts_a_direct_chain_as_long_as_the_queue)
{
	struct vqd_buf b[VIRTQ_MAX_SIZE];

	for (unsigned i = 0; i < VIRTQ_MAX_SIZE; i++)
		b[i] = (struct vqd_buf){ DATA + i, 1, i >= 200 };
	start(RAM, VIRTQ_MAX_SIZE, false);
	vqd_add(&d, b, VIRTQ_MAX_SIZE);
	pop_ok();
	cr_assert_eq(c.nr, VIRTQ_MAX_CHAIN);
	cr_assert_eq(c.nr_readable, 200);
	assert_buf(255, DATA + 255, 1, true);
}

Test(virtq, accepts_an_indirect_table_of_the_maximum_chain_length)
{
	static struct vqd_buf b[VIRTQ_MAX_CHAIN];

	for (unsigned i = 0; i < VIRTQ_MAX_CHAIN; i++)
		b[i] = (struct vqd_buf){ DATA + 8 * i, 8, false };
	start(RAM, 8, true);
	vqd_publish(&d, vqd_indirect(&d, TABLE, b, VIRTQ_MAX_CHAIN));
	pop_ok();
	cr_assert_eq(c.nr, VIRTQ_MAX_CHAIN);
	cr_assert_eq(c.readable_len, 8 * VIRTQ_MAX_CHAIN);
}

Test(virtq, accepts_buffers_totalling_exactly_the_largest_used_length)
{
	/* buffers may overlap: 3 GiB + (1 GiB - 1) of the low region = UINT32_MAX */
	struct vqd_buf b[] = { { 0, 3u << 30, true }, { 0, (1u << 30) - 1, true } };

	start(BIG_RAM, 8, false);
	vqd_add(&d, b, 2);
	pop_ok();
	cr_assert_eq(c.writable_len, UINT32_MAX);
}

Test(virtq, accepts_buffers_in_ram_above_the_32_bit_hole)
{
	struct vqd_buf b = { MEM_HOLE_END + 0x1000, 4096, true };

	start(BIG_RAM, 8, false);
	vqd_add(&d, &b, 1);
	pop_ok();
	assert_buf(0, MEM_HOLE_END + 0x1000, 4096, true);
}

Test(virtq, unpop_gives_back_the_same_chain)
{
	struct vqd_buf b[] = { { DATA, 5, false }, { DATA + 0x100, 6, true } };
	uint16_t head;

	start(RAM, 8, false);
	head = vqd_add(&d, b, 2);
	pop_ok();
	virtq_unpop(&q);
	cr_assert_eq(q.s.next_avail, 0);
	memset(&c, 0, sizeof(c));
	pop_ok();
	cr_assert_eq(c.head, head);
	cr_assert_eq(c.nr, 2);
	assert_buf(1, DATA + 0x100, 6, true);
}

/* ---- the used ring --------------------------------------------------------------- */

Test(virtq, push_writes_the_used_entry_and_the_index)
{
	struct vqd_buf b = { DATA, 64, true };
	uint16_t head, h;
	uint32_t id, len;

	start(RAM, 8, false);
	vqd_add(&d, &b, 1);
	head = vqd_add(&d, &b, 1);
	pop_ok();
	pop_ok();
	virtq_push(&q, head, 33);
	cr_assert_eq(vqd_used_idx(&d), 1);
	cr_assert_eq(q.s.next_used, 1);
	vqd_used_elem(&d, 0, &id, &len);
	cr_assert_eq(id, head);
	cr_assert_eq(len, 33);
	cr_assert(vqd_get_used(&d, &h, &len));
	cr_assert_eq(h, head);
	cr_assert_not(vqd_get_used(&d, &h, &len));
}

Test(virtq, chains_may_come_back_out_of_order)
{
	struct vqd_buf b = { DATA, 64, true };
	uint16_t heads[4], h;

	start(RAM, 4, false);
	for (unsigned i = 0; i < 4; i++)
		heads[i] = vqd_add(&d, &b, 1);
	for (unsigned i = 0; i < 4; i++)
		pop_ok();
	virtq_push(&q, heads[2], 1);
	virtq_push(&q, heads[0], 2);
	cr_assert(vqd_get_used(&d, &h, NULL));
	cr_assert_eq(h, heads[2]);
	cr_assert(vqd_get_used(&d, &h, NULL));
	cr_assert_eq(h, heads[0]);
	/* the freed descriptors are reused by the next chains */
	cr_assert_eq(d.nr_free, 2);
	vqd_add(&d, &b, 1);
	pop_ok();
	cr_assert(c.head == heads[0] || c.head == heads[2]);
}

Test(virtq, free_running_indices_wrap_from_65535_to_0)
{
	struct virtq_state s;
	struct vqd_buf b = { DATA, 64, true };
	uint16_t heads[5], h;
	uint32_t len;

	start(RAM, 4, false);
	vqd_start_at(&d, 65534);
	s = q.s;
	s.next_avail = 65534;
	s.next_used = 65534;
	cr_assert_eq(virtq_restore(&q, &s, &eb), 0, "%s", eb.msg);
	for (unsigned round = 0; round < 5; round++) {
		heads[round] = vqd_add(&d, &b, 1);
		pop_ok();
		cr_assert_eq(c.head, heads[round]);
		virtq_push(&q, c.head, 10 + round);
		cr_assert(vqd_get_used(&d, &h, &len));
		cr_assert_eq(h, heads[round]);
		cr_assert_eq(len, 10 + round);
	}
	/* 65534 + 5 */
	cr_assert_eq(q.s.next_avail, 3);
	cr_assert_eq(q.s.next_used, 3);
	cr_assert_eq(vqd_used_idx(&d), 3);
}

Test(virtq, a_full_ring_of_chains_is_accepted_at_the_wrap)
{
	struct virtq_state s;
	struct vqd_buf b = { DATA, 1, false };

	start(RAM, 8, false);
	vqd_start_at(&d, 65532);
	s = q.s;
	s.next_avail = s.next_used = 65532;
	cr_assert_eq(virtq_restore(&q, &s, &eb), 0, "%s", eb.msg);
	for (unsigned i = 0; i < 8; i++)
		vqd_add(&d, &b, 1);
	/* avail->idx is now 4: it moved by exactly the queue size */
	for (unsigned i = 0; i < 8; i++)
		pop_ok();
	cr_assert_eq(virtq_pop(&q, &c, &eb), 0);
}

Test(virtq, notify_off_sets_no_notify_and_notify_on_clears_it)
{
	start(RAM, 8, false);
	cr_assert_eq(vqd_used_flags(&d), 0);
	virtq_notify_off(&q);
	cr_assert_eq(vqd_used_flags(&d), VRING_USED_F_NO_NOTIFY);
	cr_assert_not(virtq_notify_on(&q));
	cr_assert_eq(vqd_used_flags(&d), 0);
}

Test(virtq, notify_on_reports_buffers_published_while_notifications_were_off)
{
	struct vqd_buf b = { DATA, 1, false };

	start(RAM, 8, false);
	virtq_notify_off(&q);
	vqd_add(&d, &b, 1);
	cr_assert(virtq_notify_on(&q));
	pop_ok();
	virtq_notify_off(&q);
	cr_assert_not(virtq_notify_on(&q));
}

Test(virtq, should_interrupt_follows_the_no_interrupt_flag)
{
	start(RAM, 8, false);
	cr_assert(virtq_should_interrupt(&q));
	vqd_set_avail_flags(&d, VRING_AVAIL_F_NO_INTERRUPT);
	cr_assert_not(virtq_should_interrupt(&q));
	vqd_set_avail_flags(&d, 0);
	cr_assert(virtq_should_interrupt(&q));
}

Test(virtq, used_ring_calls_on_a_queue_that_is_not_ready_do_nothing)
{
	tb_mem_init(&m, RAM);
	virtq_init(&q, &m, 8);
	vqd_init_at(&d, &m, 8, RING);
	vqd_attach(&d, &q);
	vqd_track_dirty(&m);
	virtq_push(&q, 0, 1);
	virtq_notify_off(&q);
	cr_assert_not(virtq_notify_on(&q));
	cr_assert_not(virtq_should_interrupt(&q));
	cr_assert_eq(q.s.next_used, 0);
	cr_assert_eq(vqd_used_idx(&d), 0);
	cr_assert_eq(vqd_used_flags(&d), 0);
	cr_assert_not(vqd_dirty(&m, d.used));
}

/* ---- chain data -------------------------------------------------------------------- */

/* Readable 100 + 1 + 3000 bytes, then writable 50 + 4096 + 10 (page-crossing ones). */
static const struct vqd_buf data_chain[] = {
	{ DATA + 0x0ff0, 100, false }, { DATA + 0x3000, 1, false }, { DATA + 0x4800, 3000, false },
	{ DATA + 0x8fe0, 50, true }, { DATA + 0xa800, 4096, true }, { DATA + 0xd000, 10, true },
};
#define DATA_READABLE 3101u
#define DATA_WRITABLE 4156u

static void start_data_chain(void)
{
	start(RAM, 8, false);
	for (unsigned i = 0; i < ARRAY_SIZE(data_chain); i++)
		vqd_fill_pattern(&m, data_chain[i].gpa, data_chain[i].len, (uint8_t)(i + 1));
	vqd_add(&d, data_chain, ARRAY_SIZE(data_chain));
	pop_ok();
}

/* Byte off of the readable part as the pattern fill left it. */
static uint8_t readable_byte(uint64_t off)
{
	for (unsigned i = 0; i < 3; i++) {
		if (off < data_chain[i].len)
			return vqd_pattern_byte((uint8_t)(i + 1), off);
		off -= data_chain[i].len;
	}
	cr_assert_fail("offset past the readable part");
	return 0;
}

Test(virtq, chain_read_copies_across_buffers_from_an_offset)
{
	uint8_t out[200];

	start_data_chain();
	/* from 60: 40 bytes of the first buffer, the 1-byte one, 159 of the third */
	cr_assert_eq(virtq_chain_read(&c, 60, out, sizeof(out)), sizeof(out));
	for (unsigned i = 0; i < sizeof(out); i++)
		cr_assert_eq(out[i], readable_byte(60 + i), "byte %u", i);
}

Test(virtq, chain_read_is_short_at_the_end_of_the_readable_part)
{
	uint8_t out[64];

	start_data_chain();
	cr_assert_eq(virtq_chain_read(&c, DATA_READABLE - 10, out, sizeof(out)), 10);
	for (unsigned i = 0; i < 10; i++)
		cr_assert_eq(out[i], readable_byte(DATA_READABLE - 10 + i));
	cr_assert_eq(virtq_chain_read(&c, DATA_READABLE, out, sizeof(out)), 0);
	cr_assert_eq(virtq_chain_read(&c, UINT64_MAX, out, sizeof(out)), 0);
}

Test(virtq, chain_write_fills_writable_buffers_from_an_offset)
{
	uint8_t in[4200];

	for (unsigned i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 13 + 1);
	start_data_chain();
	cr_assert_eq(virtq_chain_write(&q, &c, 20, in, 4100), 4100);
	/* writable byte 20.. : 30 bytes into the first buffer, 4070 into the second */
	cr_assert(vqd_check_pattern(&m, DATA + 0x8fe0, 20, 4));
	cr_assert_arr_eq(vqd_ptr(&m, DATA + 0x8fe0 + 20, 30), in, 30);
	cr_assert_arr_eq(vqd_ptr(&m, DATA + 0xa800, 4070), in + 30, 4070);
	cr_assert_eq(vqd_ptr(&m, DATA + 0xa800 + 4070, 1)[0], vqd_pattern_byte(5, 4070));
	cr_assert(vqd_check_pattern(&m, DATA + 0xd000, 10, 6));
}

Test(virtq, chain_write_never_touches_readable_buffers)
{
	uint8_t in[8192];

	memset(in, 0xee, sizeof(in));
	start_data_chain();
	cr_assert_eq(virtq_chain_write(&q, &c, 0, in, sizeof(in)), DATA_WRITABLE);
	for (unsigned i = 0; i < 3; i++)
		cr_assert(vqd_check_pattern(&m, data_chain[i].gpa, data_chain[i].len, (uint8_t)(i + 1)),
			  "readable buffer %u changed", i);
	/* nor the bytes around the writable ones */
	cr_assert_eq(vqd_ptr(&m, DATA + 0x8fe0 - 1, 1)[0], 0);
	cr_assert_eq(vqd_ptr(&m, DATA + 0x8fe0 + 50, 1)[0], 0);
	cr_assert_eq(vqd_ptr(&m, DATA + 0xd000 + 10, 1)[0], 0);
	cr_assert_eq(vqd_ptr(&m, DATA + 0xd000 + 9, 1)[0], 0xee);
}

Test(virtq, chain_write_is_short_at_the_end_of_the_writable_part)
{
	uint8_t in[64] = { 0 };

	start_data_chain();
	cr_assert_eq(virtq_chain_write(&q, &c, DATA_WRITABLE - 4, in, sizeof(in)), 4);
	cr_assert_eq(virtq_chain_write(&q, &c, DATA_WRITABLE, in, sizeof(in)), 0);
}

Test(virtq, chain_write_on_a_readable_only_chain_writes_nothing)
{
	struct vqd_buf b = { DATA, 64, false };
	uint8_t in[16] = { 1 };

	start(RAM, 8, false);
	vqd_fill_pattern(&m, DATA, 64, 9);
	vqd_add(&d, &b, 1);
	pop_ok();
	cr_assert_eq(virtq_chain_write(&q, &c, 0, in, sizeof(in)), 0);
	cr_assert(vqd_check_pattern(&m, DATA, 64, 9));
}

Test(virtq, chain_iov_covers_a_readable_range_across_buffers)
{
	struct iovec iov[8];
	int n;

	start_data_chain();
	n = virtq_chain_iov(&q, &c, false, 99, 200, iov, 8);
	cr_assert_eq(n, 3);
	cr_assert_eq(iov[0].iov_base, vqd_ptr(&m, DATA + 0x0ff0 + 99, 1));
	cr_assert_eq(iov[0].iov_len, 1);
	cr_assert_eq(iov[1].iov_base, vqd_ptr(&m, DATA + 0x3000, 1));
	cr_assert_eq(iov[1].iov_len, 1);
	cr_assert_eq(iov[2].iov_base, vqd_ptr(&m, DATA + 0x4800, 1));
	cr_assert_eq(iov[2].iov_len, 198);
}

Test(virtq, chain_iov_covers_the_writable_part_from_an_offset)
{
	struct iovec iov[8];
	int n;

	start_data_chain();
	n = virtq_chain_iov(&q, &c, true, 49, UINT64_MAX, iov, 8);
	cr_assert_eq(n, 3);
	cr_assert_eq(iov[0].iov_base, vqd_ptr(&m, DATA + 0x8fe0 + 49, 1));
	cr_assert_eq(iov[0].iov_len, 1);
	cr_assert_eq(iov[1].iov_len, 4096);
	cr_assert_eq(iov[2].iov_base, vqd_ptr(&m, DATA + 0xd000, 1));
	cr_assert_eq(iov[2].iov_len, 10);
}

Test(virtq, chain_iov_stops_at_max_iovecs)
{
	struct iovec iov[2];

	start_data_chain();
	cr_assert_eq(virtq_chain_iov(&q, &c, false, 0, DATA_READABLE, iov, 2), 2);
	cr_assert_eq(iov[0].iov_len, 100);
	cr_assert_eq(iov[1].iov_len, 1);
	cr_assert_eq(virtq_chain_iov(&q, &c, false, 0, DATA_READABLE, iov, 0), 0);
	cr_assert_eq(virtq_chain_iov(&q, &c, false, DATA_READABLE, 10, iov, 2), 0);
}

/* ---- dirty pages --------------------------------------------------------------------- */

Test(virtq, pop_writes_nothing_to_guest_memory)
{
	start(RAM, 8, false);
	vqd_track_dirty(&m);
	vqd_add(&d, data_chain, ARRAY_SIZE(data_chain));
	pop_ok();
	for (uint64_t gpa = 0; gpa < 0x200000; gpa += PAGE_SIZE)
		cr_assert_not(vqd_dirty(&m, gpa), "page 0x%llx", (unsigned long long)gpa);
}

Test(virtq, push_and_notify_mark_the_used_ring_dirty)
{
	struct vqd_buf b = { DATA, 8, false };

	start(RAM, 8, false);
	vqd_track_dirty(&m);
	vqd_add(&d, &b, 1);
	pop_ok();
	virtq_push(&q, c.head, 0);
	cr_assert(vqd_dirty(&m, d.used));
	cr_assert_not(vqd_dirty(&m, d.desc));
	cr_assert_not(vqd_dirty(&m, DATA));
	vqd_dirty_clear(&m);
	virtq_notify_off(&q);
	cr_assert(vqd_dirty(&m, d.used));
}

Test(virtq, push_marks_both_pages_when_the_used_entry_and_index_straddle_one)
{
	struct vqd_buf b = { DATA, 8, false };

	/* used ring at 0x11ffc: flags and idx on page 0x11000, entry 0 on page 0x12000 */
	start(RAM, 8, false);
	vqd_init(&d, &m, 8, RING, RING + 0x80, RING + 0x1ffc);
	virtq_init(&q, &m, 8);
	vqd_attach(&d, &q);
	cr_assert_eq(virtq_enable(&q, &eb), 0, "%s", eb.msg);
	vqd_track_dirty(&m);
	vqd_add(&d, &b, 1);
	pop_ok();
	virtq_push(&q, c.head, 0);
	cr_assert(vqd_dirty(&m, 0x11000));
	cr_assert(vqd_dirty(&m, 0x12000));
	cr_assert_not(vqd_dirty(&m, 0x10000));
}

Test(virtq, chain_write_marks_exactly_the_written_pages_dirty)
{
	uint8_t in[64] = { 0 };

	start_data_chain();
	vqd_track_dirty(&m);
	/* writable bytes 40..104: the last 10 bytes of the first writable buffer (page
	 * 0x109000) and the first 54 of the second (page 0x10a000) */
	cr_assert_eq(virtq_chain_write(&q, &c, 40, in, sizeof(in)), sizeof(in));
	cr_assert(vqd_dirty(&m, DATA + 0x9000));
	cr_assert(vqd_dirty(&m, DATA + 0xa000));
	cr_assert_not(vqd_dirty(&m, DATA + 0x8000));
	cr_assert_not(vqd_dirty(&m, DATA + 0xb000));
	cr_assert_not(vqd_dirty(&m, DATA + 0xd000));
	cr_assert_not(vqd_dirty(&m, DATA + 0x0000));
}

Test(virtq, chain_iov_marks_writable_ranges_dirty_and_readable_ones_not)
{
	struct iovec iov[8];

	start_data_chain();
	vqd_track_dirty(&m);
	cr_assert_eq(virtq_chain_iov(&q, &c, false, 0, UINT64_MAX, iov, 8), 3);
	for (unsigned i = 0; i < 3; i++)
		cr_assert_not(vqd_dirty(&m, data_chain[i].gpa), "readable buffer %u", i);
	cr_assert_eq(virtq_chain_iov(&q, &c, true, 0, UINT64_MAX, iov, 8), 3);
	cr_assert(vqd_dirty(&m, DATA + 0x8000));
	cr_assert(vqd_dirty(&m, DATA + 0x9000));
	cr_assert(vqd_dirty(&m, DATA + 0xa000));
	cr_assert(vqd_dirty(&m, DATA + 0xb000));
	cr_assert(vqd_dirty(&m, DATA + 0xd000));
	cr_assert_not(vqd_dirty(&m, DATA + 0xc000));
}

/* ---- snapshots ------------------------------------------------------------------------- */

Test(virtq, state_round_trips_through_restore_with_host_pointers_recomputed)
{
	struct vqd_buf b = { DATA, 8, true };
	struct virtq_state s;
	struct virtq q2;

	start(RAM, 8, true);
	for (unsigned i = 0; i < 3; i++) {
		vqd_add(&d, &b, 1);
		pop_ok();
		virtq_push(&q, c.head, 8);
	}
	vqd_add(&d, &b, 1);
	s = q.s;
	cr_assert_eq(virtq_state_check(&s, 8, &eb), 0, "%s", eb.msg);
	virtq_init(&q2, &m, 8);
	q2.indirect = true;
	cr_assert_eq(virtq_restore(&q2, &s, &eb), 0, "%s", eb.msg);
	assert_state_eq(&q2.s, &q.s);
	cr_assert_eq(q2.desc, q.desc);
	cr_assert_eq(q2.avail, q.avail);
	cr_assert_eq(q2.used, q.used);
	/* and it carries on where the original stopped */
	cr_assert_eq(virtq_pop(&q2, &c, &eb), 1, "%s", eb.msg);
	virtq_push(&q2, c.head, 8);
	cr_assert_eq(vqd_used_idx(&d), 4);
}

Test(virtq, restore_of_a_queue_that_is_not_ready_accepts_whatever_the_driver_wrote)
{
	/* QueueNum and the addresses are register writes until QueueReady checks them:
	 * a snapshot taken in between must restore */
	struct virtq_state s = { .size = 3, .ready = 0, .desc = 0x123, .avail = MEM_HOLE_START,
				 .used = UINT64_MAX, .next_avail = 7, .next_used = 3 };

	tb_mem_init(&m, RAM);
	virtq_init(&q, &m, 8);
	cr_assert_eq(virtq_state_check(&s, 8, &eb), 0, "%s", eb.msg);
	cr_assert_eq(virtq_restore(&q, &s, &eb), 0, "%s", eb.msg);
	assert_state_eq(&q.s, &s);
	cr_assert_null(q.desc);
	cr_assert_eq(virtq_pop(&q, &c, &eb), 0);
	/* and enabling it is where the size is refused */
	cr_assert_eq(virtq_enable(&q, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "queue size 3 is not a power of two"), "%s", eb.msg);
	s.size = 0;
	cr_assert_eq(virtq_state_check(&s, 8, &eb), 0, "%s", eb.msg);
	s.size = 512;
	cr_assert_eq(virtq_state_check(&s, 8, &eb), 0, "%s", eb.msg);
}

Test(virtq, state_check_needs_no_guest_memory)
{
	struct virtq_state s = { .size = 256, .ready = 1, .desc = 0x7fff0000,
				 .avail = 0xfffffffffffffd00ull, .used = 0xffffffffffffeffcull };

	/* ember-snap verify: addresses are RAM-checked only at restore */
	cr_assert_eq(virtq_state_check(&s, 256, &eb), 0, "%s", eb.msg);
}

/* ---- a driver rewriting a descriptor while the device pops it ------------------------ */

static bool racing;

static void *flip_descriptor(void *arg)
{
	struct vring_desc *desc = arg;

	/* alternate a valid buffer and one in the 32-bit hole of huge length */
	for (uint64_t i = 0; __atomic_load_n(&racing, __ATOMIC_RELAXED); i++) {
		__atomic_store_n(&desc->addr, i & 1 ? DATA : MEM_HOLE_START, __ATOMIC_RELAXED);
		__atomic_store_n(&desc->len, i & 2 ? 16 : 0xfffffff0u, __ATOMIC_RELAXED);
	}
	return NULL;
}

Test(virtq, a_descriptor_rewritten_during_pop_is_validated_as_it_is_used)
{
	struct timespec t0, t;
	pthread_t th;
	unsigned ok = 0, bad = 0;

	start(BIG_RAM, 8, false);
	vqd_set_desc(&d, 0, DATA, 16, 0, 0);
	vqd_publish(&d, 0);
	__atomic_store_n(&racing, true, __ATOMIC_RELAXED);
	cr_assert_eq(pthread_create(&th, NULL, flip_descriptor, vqd_ptr(&m, d.desc, 16)), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		int r = virtq_pop(&q, &c, &eb);

		if (r == 1) {
			/* whatever the copy said, it is inside RAM and hva matches it */
			cr_assert_eq(c.nr, 1);
			cr_assert_not_null(c.buf[0].hva);
			cr_assert_eq(c.buf[0].hva, gpa_ptr(&m, c.buf[0].gpa, c.buf[0].len));
			virtq_unpop(&q);
			ok++;
		} else {
			cr_assert_eq(r, -EINVAL);
			bad++;
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < 200000000L);
	__atomic_store_n(&racing, false, __ATOMIC_RELAXED);
	pthread_join(th, NULL);
	cr_assert_eq(q.s.next_avail, 0);
	cr_log_info("racing pops: %u accepted, %u rejected", ok, bad);
}

/* ---- hostile rings --------------------------------------------------------------------- */

/*
 * Each row breaks one rule on an otherwise good queue: 4 GiB of RAM in two regions
 * around the 32-bit hole, a queue of 8 at RING (max 256), indirect negotiated.
 * AT_POP rows must enable fine and fail in virtq_pop; AT_ENABLE rows fail in
 * virtq_enable; AT_CHECK rows edit f->st, which virtq_state_check and virtq_restore
 * must both reject; AT_RESTORE rows pass the pure check and fail restore's RAM check.
 */
enum hostile_stage { AT_POP, AT_ENABLE, AT_CHECK, AT_RESTORE };

struct hfix {
	struct guest_mem m;
	struct vqd d;
	struct virtq q;
	struct virtq_state st;   /* AT_CHECK / AT_RESTORE: a valid ready state to break */
	struct virtq_chain c;
};

struct hostile {
	const char *name;
	enum hostile_stage stage;
	void (*setup)(struct hfix *f);
	const char *expect;      /* a substring of the error message */
};

#define HI_END (MEM_HOLE_END + 1 * GiB)  /* the end of RAM */

/* a one-buffer chain at descriptor 0, published */
static void one_buf(struct hfix *f, uint64_t addr, uint32_t len, uint16_t flags)
{
	vqd_set_desc(&f->d, 0, addr, len, flags, 0);
	vqd_publish(&f->d, 0);
}

/* descriptor 0: an indirect table of len bytes at addr, published */
static void indirect_at(struct hfix *f, uint64_t addr, uint32_t len)
{
	vqd_set_desc(&f->d, 0, addr, len, VRING_DESC_F_INDIRECT, 0);
	vqd_publish(&f->d, 0);
}

static void table_entry(struct hfix *f, unsigned j, uint64_t addr, uint32_t len, uint16_t flags,
			uint16_t next)
{
	vqd_set_desc_at(&f->m, TABLE + 16ull * j, addr, len, flags, next);
}

static void h_avail_jump(struct hfix *f)
{
	vqd_set_avail_idx(&f->d, 9);
}

static void h_avail_backwards(struct hfix *f)
{
	vqd_set_avail_idx(&f->d, 0xffff);
}

static void h_avail_jump_after_progress(struct hfix *f)
{
	f->q.s.next_avail = f->q.s.next_used = 40000;
	vqd_set_avail_idx(&f->d, 40000 + 100);
}

static void h_head_range(struct hfix *f)
{
	vqd_set_desc(&f->d, 0, DATA, 8, 0, 0);
	vqd_publish(&f->d, 8);
}

static void h_head_ffff(struct hfix *f)
{
	vqd_publish(&f->d, 0xffff);
}

static void h_next_range(struct hfix *f)
{
	vqd_set_desc(&f->d, 0, DATA, 8, VRING_DESC_F_NEXT, 8);
	vqd_publish(&f->d, 0);
}

static void h_loop(struct hfix *f)
{
	vqd_set_desc(&f->d, 2, DATA, 8, VRING_DESC_F_NEXT, 5);
	vqd_set_desc(&f->d, 5, DATA, 8, VRING_DESC_F_NEXT, 2);
	vqd_publish(&f->d, 2);
}

static void h_self_loop(struct hfix *f)
{
	vqd_set_desc(&f->d, 3, DATA, 8, VRING_DESC_F_NEXT, 3);
	vqd_publish(&f->d, 3);
}

static void h_zero_len_loop(struct hfix *f)
{
	/* skipped buffers still count as descriptors visited */
	vqd_set_desc(&f->d, 0, 0, 0, VRING_DESC_F_NEXT, 1);
	vqd_set_desc(&f->d, 1, 0, 0, VRING_DESC_F_NEXT, 0);
	vqd_publish(&f->d, 0);
}

static void h_long_loop(struct hfix *f)
{
	/* through every descriptor, then back to the second */
	for (uint16_t i = 0; i < 8; i++)
		vqd_set_desc(&f->d, i, DATA, 1, VRING_DESC_F_NEXT, i < 7 ? i + 1 : 1);
	vqd_publish(&f->d, 0);
}

static void h_past_ram(struct hfix *f)
{
	one_buf(f, HI_END, 16, 0);
}

static void h_in_hole(struct hfix *f)
{
	one_buf(f, 0xd0000000, 16, VRING_DESC_F_WRITE);
}

static void h_into_hole(struct hfix *f)
{
	one_buf(f, MEM_HOLE_START - 0x1000, 0x2000, VRING_DESC_F_WRITE);
}

static void h_overflow(struct hfix *f)
{
	one_buf(f, 0xfffffffffffff000ull, 8192, 0);
}

static void h_huge_len(struct hfix *f)
{
	one_buf(f, DATA, 0xffffffff, VRING_DESC_F_WRITE);
}

static void h_huge_len_high(struct hfix *f)
{
	one_buf(f, HI_END - 4096, 8192, 0);
}

static void h_readable_after_writable(struct hfix *f)
{
	struct vqd_buf b[] = { { DATA, 8, false }, { DATA + 8, 8, true }, { DATA + 16, 8, false } };

	vqd_add(&f->d, b, 3);
}

static void h_readable_after_writable_indirect(struct hfix *f)
{
	vqd_set_desc(&f->d, 0, DATA, 8, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
	vqd_set_desc(&f->d, 1, TABLE, 16, VRING_DESC_F_INDIRECT, 0);
	table_entry(f, 0, DATA + 8, 8, 0, 0);
	vqd_publish(&f->d, 0);
}

static void h_readable_after_writable_in_table(struct hfix *f)
{
	table_entry(f, 0, DATA, 8, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
	table_entry(f, 1, DATA + 8, 8, 0, 0);
	indirect_at(f, TABLE, 32);
}

static void h_indirect_not_negotiated(struct hfix *f)
{
	f->q.indirect = false;
	table_entry(f, 0, DATA, 8, 0, 0);
	indirect_at(f, TABLE, 16);
}

static void h_indirect_len_24(struct hfix *f)
{
	indirect_at(f, TABLE, 24);
}

static void h_indirect_len_0(struct hfix *f)
{
	indirect_at(f, TABLE, 0);
}

static void h_indirect_outside(struct hfix *f)
{
	indirect_at(f, 0xd0000000, 32);
}

static void h_indirect_overflow(struct hfix *f)
{
	indirect_at(f, 0xfffffffffffffff0ull, 32);
}

static void h_indirect_crosses_end(struct hfix *f)
{
	indirect_at(f, HI_END - 16, 32);
}

static void h_nested_indirect(struct hfix *f)
{
	table_entry(f, 0, DATA, 8, VRING_DESC_F_NEXT, 1);
	table_entry(f, 1, TABLE, 32, VRING_DESC_F_INDIRECT, 0);
	indirect_at(f, TABLE, 32);
}

static void h_indirect_next(struct hfix *f)
{
	table_entry(f, 0, DATA, 8, 0, 0);
	vqd_set_desc(&f->d, 0, TABLE, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 1);
	vqd_set_desc(&f->d, 1, DATA, 8, 0, 0);
	vqd_publish(&f->d, 0);
}

static void h_indirect_loop(struct hfix *f)
{
	table_entry(f, 0, DATA, 8, VRING_DESC_F_NEXT, 1);
	table_entry(f, 1, DATA, 8, VRING_DESC_F_NEXT, 2);
	table_entry(f, 2, DATA, 8, VRING_DESC_F_NEXT, 3);
	table_entry(f, 3, DATA, 8, VRING_DESC_F_NEXT, 1);
	indirect_at(f, TABLE, 64);
}

static void h_indirect_self_loop(struct hfix *f)
{
	table_entry(f, 0, DATA, 0, VRING_DESC_F_NEXT, 0);
	indirect_at(f, TABLE, 16 * VIRTQ_MAX_CHAIN);
}

static void h_indirect_next_range(struct hfix *f)
{
	table_entry(f, 0, DATA, 8, VRING_DESC_F_NEXT, 4);
	indirect_at(f, TABLE, 64);
}

static void h_indirect_too_big(struct hfix *f)
{
	indirect_at(f, TABLE, 16 * (VIRTQ_MAX_CHAIN + 1));
}

static void h_indirect_huge_len(struct hfix *f)
{
	indirect_at(f, TABLE, 0xfffffff0u);
}

static void h_indirect_buf_in_hole(struct hfix *f)
{
	table_entry(f, 0, DATA, 8, VRING_DESC_F_NEXT, 1);
	table_entry(f, 1, DATA, 8, VRING_DESC_F_NEXT, 2);
	table_entry(f, 2, MEM_HOLE_START, 8, 0, 0);
	indirect_at(f, TABLE, 48);
}

static void h_too_many_buffers(struct hfix *f)
{
	/* 255 direct buffers and an indirect table of 2: 257 buffers */
	vqd_init_at(&f->d, &f->m, VIRTQ_MAX_SIZE, RING);
	vqd_attach(&f->d, &f->q);
	for (uint16_t i = 0; i < 255; i++)
		vqd_set_desc(&f->d, i, DATA + i, 1, VRING_DESC_F_NEXT, i + 1);
	vqd_set_desc(&f->d, 255, TABLE, 32, VRING_DESC_F_INDIRECT, 0);
	table_entry(f, 0, DATA, 1, VRING_DESC_F_NEXT, 1);
	table_entry(f, 1, DATA, 1, 0, 0);
	vqd_publish(&f->d, 0);
}

static void h_readable_over_4g(struct hfix *f)
{
	struct vqd_buf b[] = { { 0, 3u << 30, false }, { 0, 3u << 30, false } };

	vqd_add(&f->d, b, 2);
}

static void h_writable_over_4g(struct hfix *f)
{
	struct vqd_buf b[] = { { DATA, 8, false }, { 0, 3u << 30, true }, { 0, 1u << 30, true } };

	vqd_add(&f->d, b, 3);
}

static void h_size_0(struct hfix *f)
{
	f->q.s.size = 0;
}

static void h_size_6(struct hfix *f)
{
	f->q.s.size = 6;
}

static void h_size_512(struct hfix *f)
{
	f->q.s.size = 512;
}

static void h_size_over_device_max(struct hfix *f)
{
	virtq_init(&f->q, &f->m, 8);
	vqd_attach(&f->d, &f->q);
	f->q.s.size = 16;
}

static void h_desc_misaligned(struct hfix *f)
{
	f->q.s.desc += 8;
}

static void h_avail_misaligned(struct hfix *f)
{
	f->q.s.avail += 1;
}

static void h_used_misaligned(struct hfix *f)
{
	f->q.s.used += 2;
}

static void h_desc_crosses_end(struct hfix *f)
{
	f->q.s.desc = HI_END - 64;
}

static void h_used_into_hole(struct hfix *f)
{
	f->q.s.used = MEM_HOLE_START - 32;
}

static void h_avail_in_hole(struct hfix *f)
{
	f->q.s.avail = 0xd0000000;
}

static void h_desc_overflow(struct hfix *f)
{
	f->q.s.desc = 0xfffffffffffffff0ull;
}

static void h_used_past_ram(struct hfix *f)
{
	f->q.s.used = HI_END;
}

static void s_size_0(struct hfix *f)
{
	f->st.size = 0;
}

static void s_ready_2(struct hfix *f)
{
	f->st.ready = 2;
}

static void s_size_512(struct hfix *f)
{
	f->st.size = 512;
}

static void s_size_12(struct hfix *f)
{
	f->st.size = 12;
}

static void s_used_misaligned(struct hfix *f)
{
	f->st.used = RING + 0x1002;
}

static void s_desc_misaligned(struct hfix *f)
{
	f->st.desc = RING + 4;
}

static void s_avail_overflow(struct hfix *f)
{
	f->st.avail = 0xfffffffffffffffcull;
}

static void r_used_outside(struct hfix *f)
{
	f->st.used = 0x200000000ull;
}

static void r_desc_in_hole(struct hfix *f)
{
	f->st.desc = MEM_HOLE_START;
}

static void r_avail_crosses_end(struct hfix *f)
{
	f->st.avail = MEM_HOLE_START - 8;
}

static const struct hostile hostile_rings[] = {
	{ "avail index jumps past the queue size", AT_POP, h_avail_jump,
	  "avail index moved by 9, more than the queue size 8" },
	{ "avail index moves backwards", AT_POP, h_avail_backwards,
	  "avail index moved by 65535, more than the queue size 8" },
	{ "avail index jumps after progress", AT_POP, h_avail_jump_after_progress,
	  "avail index moved by 100" },
	{ "head index out of range", AT_POP, h_head_range,
	  "avail ring entry 0: head descriptor 8 is out of range (queue size 8)" },
	{ "head index 0xffff", AT_POP, h_head_ffff, "head descriptor 65535 is out of range" },
	{ "next index out of range", AT_POP, h_next_range,
	  "descriptor 0: next index 8 is out of range (queue size 8)" },
	{ "chain loop a->b->a", AT_POP, h_loop,
	  "chain from head 2 is longer than the queue size 8 (a loop)" },
	{ "self loop", AT_POP, h_self_loop, "chain from head 3 is longer than the queue size" },
	{ "loop of zero-length descriptors", AT_POP, h_zero_len_loop, "(a loop)" },
	{ "loop through the whole table", AT_POP, h_long_loop, "(a loop)" },
	{ "buffer past the end of RAM", AT_POP, h_past_ram,
	  "descriptor 0: address 0x140000000 is not in guest RAM" },
	{ "buffer in the 32-bit hole", AT_POP, h_in_hole,
	  "descriptor 0: address 0xd0000000 is not in guest RAM" },
	{ "buffer running into the 32-bit hole", AT_POP, h_into_hole,
	  "descriptor 0: 0xbffff000 + length 8192 crosses the end of its guest RAM region" },
	{ "buffer address + length overflows", AT_POP, h_overflow,
	  "descriptor 0: address 0xfffffffffffff000 + length 8192 overflows" },
	{ "huge length past the end of the low region", AT_POP, h_huge_len,
	  "0x100000 + length 4294967295 crosses the end" },
	{ "buffer crossing the end of RAM", AT_POP, h_huge_len_high,
	  "0x13ffff000 + length 8192 crosses the end" },
	{ "readable after writable", AT_POP, h_readable_after_writable,
	  "descriptor 2: device-readable buffer after a device-writable one" },
	{ "indirect readable after direct writable", AT_POP, h_readable_after_writable_indirect,
	  "descriptor 1, indirect entry 0: device-readable buffer after a device-writable one" },
	{ "readable after writable in an indirect table", AT_POP,
	  h_readable_after_writable_in_table,
	  "descriptor 0, indirect entry 1: device-readable buffer after" },
	{ "indirect not negotiated", AT_POP, h_indirect_not_negotiated,
	  "descriptor 0: indirect descriptor, but VIRTIO_RING_F_INDIRECT_DESC was not negotiated" },
	{ "indirect table length not a multiple of 16", AT_POP, h_indirect_len_24,
	  "descriptor 0: indirect table length 24 is not a multiple of 16" },
	{ "indirect table length 0", AT_POP, h_indirect_len_0,
	  "descriptor 0: indirect table length is 0" },
	{ "indirect table in the 32-bit hole", AT_POP, h_indirect_outside,
	  "descriptor 0: indirect table: address 0xd0000000 is not in guest RAM" },
	{ "indirect table address overflows", AT_POP, h_indirect_overflow,
	  "indirect table: address 0xfffffffffffffff0 + length 32 overflows" },
	{ "indirect table crossing the end of RAM", AT_POP, h_indirect_crosses_end,
	  "indirect table: 0x13ffffff0 + length 32 crosses the end" },
	{ "nested indirect", AT_POP, h_nested_indirect,
	  "descriptor 0, indirect entry 1: nested indirect descriptor" },
	{ "indirect with NEXT", AT_POP, h_indirect_next,
	  "descriptor 0: indirect descriptor also has VRING_DESC_F_NEXT" },
	{ "loop inside an indirect table", AT_POP, h_indirect_loop,
	  "descriptor 0: indirect chain is longer than its table of 4 entries (a loop)" },
	{ "self loop in a full indirect table", AT_POP, h_indirect_self_loop,
	  "longer than its table of 256 entries" },
	{ "indirect next index out of range", AT_POP, h_indirect_next_range,
	  "descriptor 0, indirect entry 0: next index 4 is out of range (table of 4 entries)" },
	{ "indirect table of more than 256 entries", AT_POP, h_indirect_too_big,
	  "descriptor 0: indirect table of 257 entries, more than 256" },
	{ "indirect table of 4 GiB", AT_POP, h_indirect_huge_len,
	  "indirect table of 268435455 entries" },
	{ "indirect entry in the 32-bit hole", AT_POP, h_indirect_buf_in_hole,
	  "descriptor 0, indirect entry 2: address 0xc0000000 is not in guest RAM" },
	{ "more than 256 buffers in one chain", AT_POP, h_too_many_buffers,
	  "descriptor 255, indirect entry 1: chain has more than 256 buffers" },
	{ "readable total over 4 GiB", AT_POP, h_readable_over_4g,
	  "descriptor 1: device-readable buffers total more than 4294967295 bytes" },
	{ "writable total over 4 GiB", AT_POP, h_writable_over_4g,
	  "descriptor 2: device-writable buffers total more than 4294967295 bytes" },

	{ "enable with size 0", AT_ENABLE, h_size_0, "queue size is 0" },
	{ "enable with size 6", AT_ENABLE, h_size_6, "queue size 6 is not a power of two" },
	{ "enable with size 512", AT_ENABLE, h_size_512,
	  "queue size 512 is larger than the maximum 256" },
	{ "enable above the device's maximum", AT_ENABLE, h_size_over_device_max,
	  "queue size 16 is larger than the maximum 8" },
	{ "misaligned descriptor table", AT_ENABLE, h_desc_misaligned,
	  "descriptor table address 0x10008 is not 16-byte aligned" },
	{ "misaligned avail ring", AT_ENABLE, h_avail_misaligned,
	  "avail ring address 0x10081 is not 2-byte aligned" },
	{ "misaligned used ring", AT_ENABLE, h_used_misaligned,
	  "used ring address 0x11002 is not 4-byte aligned" },
	{ "descriptor table crossing the end of RAM", AT_ENABLE, h_desc_crosses_end,
	  "descriptor table: 0x13fffffc0 + length 128 crosses the end of its guest RAM region" },
	{ "used ring running into the 32-bit hole", AT_ENABLE, h_used_into_hole,
	  "used ring: 0xbfffffe0 + length 70 crosses the end" },
	{ "avail ring in the 32-bit hole", AT_ENABLE, h_avail_in_hole,
	  "avail ring: address 0xd0000000 is not in guest RAM" },
	{ "descriptor table address overflows", AT_ENABLE, h_desc_overflow,
	  "descriptor table: address 0xfffffffffffffff0 + length 128 overflows" },
	{ "used ring past the end of RAM", AT_ENABLE, h_used_past_ram,
	  "used ring: address 0x140000000 is not in guest RAM" },

	{ "restore ready with size 0", AT_CHECK, s_size_0, "queue size is 0" },
	{ "restore ready flag 2", AT_CHECK, s_ready_2, "queue ready flag 2 is not 0 or 1" },
	{ "restore size 512", AT_CHECK, s_size_512, "queue size 512 is larger than the maximum 256" },
	{ "restore size 12", AT_CHECK, s_size_12, "queue size 12 is not a power of two" },
	{ "restore misaligned used ring", AT_CHECK, s_used_misaligned,
	  "used ring address 0x11002 is not 4-byte aligned" },
	{ "restore misaligned descriptor table", AT_CHECK, s_desc_misaligned,
	  "descriptor table address 0x10004 is not 16-byte aligned" },
	{ "restore avail ring address overflows", AT_CHECK, s_avail_overflow,
	  "avail ring: address 0xfffffffffffffffc + length 22 overflows" },
	{ "restore used ring outside RAM", AT_RESTORE, r_used_outside,
	  "used ring: address 0x200000000 is not in guest RAM" },
	{ "restore descriptor table in the 32-bit hole", AT_RESTORE, r_desc_in_hole,
	  "descriptor table: address 0xc0000000 is not in guest RAM" },
	{ "restore avail ring running into the hole", AT_RESTORE, r_avail_crosses_end,
	  "avail ring: 0xbffffff8 + length 22 crosses the end" },
};

/*
 * Criterion hands each run a byte copy of its parameter in a freshly executed worker,
 * where the table's pointers (names, setup functions) would be the parent's: pass the
 * row number and look the row up.
 */
ParameterizedTestParameters(virtq_hostile, is_rejected_cleanly)
{
	static unsigned rows[ARRAY_SIZE(hostile_rings)];

	for (unsigned i = 0; i < ARRAY_SIZE(rows); i++)
		rows[i] = i;
	return cr_make_param_array(unsigned, rows, ARRAY_SIZE(rows));
}

static struct hfix f;

static void hostile_teardown(void)
{
	mem_free(&f.m);
}

/* A rejected enable or restore leaves the queue as it was: not ready, no pointers. */
static void assert_q_unchanged(const char *name, const struct virtq *a, const struct virtq *b)
{
	cr_assert(a->s.size == b->s.size && a->s.ready == b->s.ready && a->s.desc == b->s.desc &&
		  a->s.avail == b->s.avail && a->s.used == b->s.used &&
		  a->s.next_avail == b->s.next_avail && a->s.next_used == b->s.next_used,
		  "%s: the queue state changed", name);
	cr_assert(a->desc == b->desc && a->avail == b->avail && a->used == b->used,
		  "%s: the host pointers changed", name);
	cr_assert_eq(a->s.ready, 0, "%s: the queue is ready", name);
}

ParameterizedTest(unsigned *row, virtq_hostile, is_rejected_cleanly, .fini = hostile_teardown)
{
	const struct hostile *h = &hostile_rings[*row];
	struct virtq before;
	struct errbuf e = { { 0 } };
	int r;

	tb_mem_init(&f.m, BIG_RAM);
	virtq_init(&f.q, &f.m, VIRTQ_MAX_SIZE);
	f.q.indirect = true;
	vqd_init_at(&f.d, &f.m, 8, RING);
	vqd_attach(&f.d, &f.q);
	f.st = f.q.s;
	f.st.ready = 1;
	f.st.next_avail = 3;
	f.st.next_used = 2;
	h->setup(&f);

	before = f.q;
	switch (h->stage) {
	case AT_POP:
		r = virtq_enable(&f.q, &e);
		cr_assert_eq(r, 0, "%s: virtq_enable: %s", h->name, e.msg);
		before = f.q;
		r = virtq_pop(&f.q, &f.c, &e);
		cr_assert_eq(r, -EINVAL, "%s: virtq_pop returned %d", h->name, r);
		cr_assert_eq(f.q.s.next_avail, before.s.next_avail, "%s: next_avail moved", h->name);
		/* the queue stays broken the same way: nothing was consumed */
		r = virtq_pop(&f.q, &f.c, &e);
		cr_assert_eq(r, -EINVAL, "%s: second virtq_pop returned %d", h->name, r);
		break;
	case AT_ENABLE:
		r = virtq_enable(&f.q, &e);
		cr_assert_eq(r, -EINVAL, "%s: virtq_enable returned %d", h->name, r);
		cr_assert_eq(virtq_pop(&f.q, &f.c, &e), 0, "%s: pop on the rejected queue", h->name);
		break;
	case AT_CHECK:
		r = virtq_state_check(&f.st, f.q.max_size, &e);
		cr_assert_eq(r, -EINVAL, "%s: virtq_state_check returned %d", h->name, r);
		cr_assert(strstr(e.msg, h->expect), "%s: check said \"%s\", expected \"%s\"",
			  h->name, e.msg, h->expect);
		memset(&e, 0, sizeof(e));
		r = virtq_restore(&f.q, &f.st, &e);
		cr_assert_eq(r, -EINVAL, "%s: virtq_restore returned %d", h->name, r);
		break;
	case AT_RESTORE:
		cr_assert_eq(virtq_state_check(&f.st, f.q.max_size, &e), 0,
			     "%s: the pure check should pass: %s", h->name, e.msg);
		r = virtq_restore(&f.q, &f.st, &e);
		cr_assert_eq(r, -EINVAL, "%s: virtq_restore returned %d", h->name, r);
		break;
	}
	if (h->stage != AT_POP)
		assert_q_unchanged(h->name, &f.q, &before);
	cr_assert(strstr(e.msg, h->expect), "%s: said \"%s\", expected \"%s\"", h->name, e.msg,
		  h->expect);
}
