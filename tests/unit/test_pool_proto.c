/*
 * The pool socket's pure parts (src/pool_proto.c, INVOCATION.md 7): what the pool
 * answers to each request header, the percentiles of its latency samples, and the
 * status document's keys. No processes, no KVM.
 */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <string.h>

#include "pool.h"
#include "snapfmt.h"

#define MAX_PAYLOAD (64u << 10)

static void check(const uint8_t *hdr, struct pool_req *rq)
{
	pool_check_request(hdr, MAX_PAYLOAD, rq);
}

Test(pool_proto, valid_request_is_run)
{
	uint8_t h[INVOKE_HDR_SIZE];
	struct pool_req rq;

	invoke_put_request_header(h, 0x1122334455667788ull, MAX_PAYLOAD);
	check(h, &rq);
	cr_assert_eq(rq.status, INVOKE_OK);
	cr_assert_eq(rq.id, 0x1122334455667788ull);
	cr_assert_eq(rq.len, MAX_PAYLOAD);
	cr_assert(!rq.discard && !rq.close);
}

Test(pool_proto, empty_payload_is_run)
{
	uint8_t h[INVOKE_HDR_SIZE];
	struct pool_req rq;

	invoke_put_request_header(h, 1, 0);
	check(h, &rq);
	cr_assert_eq(rq.status, INVOKE_OK);
	cr_assert_eq(rq.len, 0);
}

Test(pool_proto, bad_magic_is_bad_request_and_closes)
{
	uint8_t h[INVOKE_HDR_SIZE];
	struct pool_req rq;

	invoke_put_request_header(h, 9, 10);
	memcpy(h, "EMBR", 4); /* a response header sent as a request */
	check(h, &rq);
	cr_assert_eq(rq.status, INVOKE_BAD_REQUEST);
	cr_assert_eq(rq.id, 9, "the answer carries the request's id");
	cr_assert(rq.close && !rq.discard);
	cr_assert(strstr(rq.msg, "bad magic 'EMBR'"), "%s", rq.msg);
}

Test(pool_proto, other_version_is_unsupported_and_closes)
{
	uint8_t h[INVOKE_HDR_SIZE];
	struct pool_req rq;

	invoke_put_request_header(h, 9, 10);
	h[4] = 2;
	check(h, &rq);
	cr_assert_eq(rq.status, INVOKE_UNSUPPORTED_VERSION);
	cr_assert(rq.close);
	cr_assert(strstr(rq.msg, "version 2"), "%s", rq.msg);
}

Test(pool_proto, nonzero_flags_or_reserved_are_bad_requests)
{
	uint8_t h[INVOKE_HDR_SIZE];
	struct pool_req rq;

	invoke_put_request_header(h, 9, 10);
	h[6] = 1;
	check(h, &rq);
	cr_assert_eq(rq.status, INVOKE_BAD_REQUEST);
	cr_assert(rq.close);
	invoke_put_request_header(h, 9, 10);
	h[23] = 0x80;
	check(h, &rq);
	cr_assert_eq(rq.status, INVOKE_BAD_REQUEST);
	cr_assert(strstr(rq.msg, "reserved (0x80000000)"), "%s", rq.msg);
}

Test(pool_proto, payload_over_max_payload_is_read_and_dropped_then_too_large)
{
	uint8_t h[INVOKE_HDR_SIZE];
	struct pool_req rq;

	invoke_put_request_header(h, 3, MAX_PAYLOAD + 1);
	check(h, &rq);
	cr_assert_eq(rq.status, INVOKE_TOO_LARGE);
	cr_assert(rq.discard && !rq.close, "the connection stays framed and open");
	cr_assert_eq(rq.len, MAX_PAYLOAD + 1);
	cr_assert(strstr(rq.msg, "--max-payload 65536"), "%s", rq.msg);
}

Test(pool_proto, payload_over_16mib_is_too_large_and_closes_without_reading_it)
{
	uint8_t h[INVOKE_HDR_SIZE];
	struct pool_req rq;

	invoke_put_request_header(h, 3, UINT32_MAX);
	pool_check_request(h, INVOKE_MAX_PAYLOAD, &rq);
	cr_assert_eq(rq.status, INVOKE_TOO_LARGE);
	cr_assert(rq.close && !rq.discard);
	invoke_put_request_header(h, 3, INVOKE_MAX_PAYLOAD);
	pool_check_request(h, INVOKE_MAX_PAYLOAD, &rq);
	cr_assert_eq(rq.status, INVOKE_OK, "exactly 16 MiB is allowed");
}

Test(pool_proto, control_frames_start_with_a_zero_byte_invocations_never_do)
{
	cr_assert(pool_frame_is_control(0x00));
	cr_assert(!pool_frame_is_control('E'));
	cr_assert(!pool_frame_is_control(0x01), "a length over 16 MiB is no control frame");
}

/* ---- samples ------------------------------------------------------------------------ */

Test(pool_proto, percentiles_of_no_samples_are_zero)
{
	struct pool_samples s = { 0 };

	cr_assert_eq(pool_samples_pct(&s, 50), 0);
	cr_assert_eq(pool_samples_pct(&s, 99), 0);
}

Test(pool_proto, percentiles_are_nearest_rank)
{
	struct pool_samples s = { 0 };

	/* 1..100 in a scrambled order */
	for (unsigned i = 0; i < 100; i++)
		pool_samples_add(&s, (i * 37) % 100 + 1);
	cr_assert_eq(pool_samples_pct(&s, 50), 50);
	cr_assert_eq(pool_samples_pct(&s, 90), 90);
	cr_assert_eq(pool_samples_pct(&s, 99), 99);
	cr_assert_eq(pool_samples_pct(&s, 100), 100);
	cr_assert_eq(s.max, 100);
}

Test(pool_proto, one_sample_is_every_percentile)
{
	struct pool_samples s = { 0 };

	pool_samples_add(&s, 1234);
	cr_assert_eq(pool_samples_pct(&s, 1), 1234);
	cr_assert_eq(pool_samples_pct(&s, 50), 1234);
	cr_assert_eq(pool_samples_pct(&s, 99), 1234);
}

Test(pool_proto, only_the_most_recent_samples_count_but_max_is_forever)
{
	struct pool_samples s = { 0 };

	pool_samples_add(&s, 1000000);
	for (unsigned i = 0; i < POOL_SAMPLES; i++)
		pool_samples_add(&s, 7);
	cr_assert_eq(s.n, POOL_SAMPLES);
	cr_assert_eq(pool_samples_pct(&s, 100), 7, "the old outlier fell out of the ring");
	cr_assert_eq(s.max, 1000000);
}

Test(pool_proto, huge_samples_saturate)
{
	struct pool_samples s = { 0 };

	pool_samples_add(&s, 1ull << 40);
	cr_assert_eq(pool_samples_pct(&s, 50), UINT32_MAX);
	cr_assert_eq(s.max, 1ull << 40);
}

/* ---- the status document ---------------------------------------------------------- */

static uint64_t get_u64(const msgpack_object *m, const char *key)
{
	const msgpack_object *v = snap_map_get(m, key);

	cr_assert(v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER, "no u64 '%s'", key);
	return v->via.u64;
}

Test(pool_proto, status_document_has_every_key_with_its_value)
{
	struct pool_samples lat = { 0 }, rst = { 0 };
	struct pool_vm_info vms[2] = {
		{ .id = 3, .pid = 4444, .state = "idle", .uses = 9 },
		{ .id = 4, .pid = 5555, .state = "busy", .uses = 1 },
	};
	struct pool_status st = {
		.state = "draining", .size = 2, .max_uses = 1000, .queue_max = 64,
		.timeout_ms = 10000, .max_payload = 1 << 20, .port = 5000, .idle = 1, .busy = 1,
		.queued = 3, .clients = 5, .invocations_ok = 100, .invocations_error = 2,
		.invocations_unavailable = 1, .rejected_busy = 4, .rejected_invalid = 6,
		.resets = 101, .reset_failures = 1, .spawned = 4, .retired = 1, .crashes = 1,
		.killed = 1, .respawned = 2, .timeouts = 1, .latency = &lat, .reset = &rst,
		.vms = vms, .nr_vms = 2,
	};
	msgpack_unpacked u;
	const msgpack_object *arr, *state;
	size_t len, off = 0;
	uint8_t *body;

	for (unsigned i = 1; i <= 10; i++)
		pool_samples_add(&lat, i * 100);
	pool_samples_add(&rst, 700);
	body = pool_status_encode(&st, &len);
	cr_assert_not_null(body);
	msgpack_unpacked_init(&u);
	cr_assert_eq(msgpack_unpack_next(&u, (const char *)body, len, &off), MSGPACK_UNPACK_SUCCESS);
	cr_assert_eq(off, len);
	cr_assert(snap_map_get(&u.data, "ok")->via.boolean);
	state = snap_map_get(&u.data, "state");
	cr_assert(state->via.str.size == 8 && !memcmp(state->via.str.ptr, "draining", 8));
	cr_assert_eq(get_u64(&u.data, "size"), 2);
	cr_assert_eq(get_u64(&u.data, "queued"), 3);
	cr_assert_eq(get_u64(&u.data, "invocations_ok"), 100);
	cr_assert_eq(get_u64(&u.data, "rejected_invalid"), 6);
	cr_assert_eq(get_u64(&u.data, "resets"), 101);
	cr_assert_eq(get_u64(&u.data, "respawned"), 2);
	cr_assert_eq(get_u64(&u.data, "latency_samples"), 10);
	cr_assert_eq(get_u64(&u.data, "latency_us_p50"), 500);
	cr_assert_eq(get_u64(&u.data, "latency_us_p90"), 900);
	cr_assert_eq(get_u64(&u.data, "latency_us_p99"), 1000);
	cr_assert_eq(get_u64(&u.data, "latency_us_max"), 1000);
	cr_assert_eq(get_u64(&u.data, "reset_us_p50"), 700);
	arr = snap_map_get(&u.data, "vms");
	cr_assert(arr && arr->type == MSGPACK_OBJECT_ARRAY && arr->via.array.size == 2);
	cr_assert_eq(get_u64(&arr->via.array.ptr[1], "pid"), 5555);
	cr_assert_eq(get_u64(&arr->via.array.ptr[0], "uses"), 9);
	msgpack_unpacked_destroy(&u);
	free(body);
}
