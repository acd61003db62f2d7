/*
 * The pool socket's pure parts (INVOCATION.md 7): what the pool answers to a request
 * header, the latency samples behind its percentiles, the status document, and
 * `ember pool status`, its client. No event loop, no processes: unit-tested alone.
 */
#include <errno.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"

void pool_check_request(const uint8_t *hdr, uint32_t max_payload, struct pool_req *rq)
{
	struct errbuf eb = { "" };

	memset(rq, 0, sizeof(*rq));
	rq->status = invoke_check_request_header(hdr, &rq->id, &rq->len, &eb);
	if (rq->status != INVOKE_OK) {
		/* the stream's framing cannot be trusted any more: answer, then close */
		snprintf(rq->msg, sizeof(rq->msg), "%s", eb.msg);
		rq->close = true;
		return;
	}
	if (rq->len > INVOKE_MAX_PAYLOAD) {
		/* past the protocol's own bound: not worth reading up to 4 GiB to stay framed */
		rq->status = INVOKE_TOO_LARGE;
		rq->close = true;
		snprintf(rq->msg, sizeof(rq->msg), "payload_len %" PRIu32 " exceeds the protocol's "
			 "16 MiB (%u); the pool closes the connection", rq->len,
			 INVOKE_MAX_PAYLOAD);
		return;
	}
	if (rq->len > max_payload) {
		rq->status = INVOKE_TOO_LARGE;
		rq->discard = true;
		snprintf(rq->msg, sizeof(rq->msg), "payload_len %" PRIu32 " exceeds the pool's "
			 "--max-payload %" PRIu32, rq->len, max_payload);
	}
}

void pool_samples_add(struct pool_samples *s, uint64_t us)
{
	s->v[s->next] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
	s->next = (s->next + 1) % POOL_SAMPLES;
	if (s->n < POOL_SAMPLES)
		s->n++;
	if (us > s->max)
		s->max = us;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

uint64_t pool_samples_pct(const struct pool_samples *s, unsigned pct)
{
	uint32_t sorted[POOL_SAMPLES];
	unsigned rank;

	if (!s->n)
		return 0;
	memcpy(sorted, s->v, s->n * sizeof(sorted[0]));
	qsort(sorted, s->n, sizeof(sorted[0]), cmp_u32);
	rank = (unsigned)(((uint64_t)pct * s->n + 99) / 100); /* ceil(pct/100 * n), 1-based */
	if (rank == 0)
		rank = 1;
	return sorted[rank - 1];
}

/* ---- the status document ------------------------------------------------------------ */

uint8_t *pool_status_encode(const struct pool_status *st, size_t *len)
{
	const struct { const char *key; uint64_t v; } u[] = {
		{ "size", st->size },
		{ "max_uses", st->max_uses },
		{ "queue_max", st->queue_max },
		{ "timeout_ms", st->timeout_ms },
		{ "max_payload", st->max_payload },
		{ "port", st->port },
		{ "idle", st->idle },
		{ "busy", st->busy },
		{ "starting", st->starting },
		{ "resetting", st->resetting },
		{ "retiring", st->retiring },
		{ "queued", st->queued },
		{ "clients", st->clients },
		{ "uptime_us", st->uptime_us },
		{ "invocations_ok", st->invocations_ok },
		{ "invocations_error", st->invocations_error },
		{ "invocations_unavailable", st->invocations_unavailable },
		{ "invocations_aborted", st->invocations_aborted },
		{ "rejected_busy", st->rejected_busy },
		{ "rejected_invalid", st->rejected_invalid },
		{ "rejected_shutting_down", st->rejected_shutting_down },
		{ "resets", st->resets },
		{ "reset_failures", st->reset_failures },
		{ "spawned", st->spawned },
		{ "spawn_failures", st->spawn_failures },
		{ "retired", st->retired },
		{ "crashes", st->crashes },
		{ "killed", st->killed },
		{ "respawned", st->respawned },
		{ "timeouts", st->timeouts },
		{ "latency_samples", st->latency->n },
		{ "latency_us_p50", pool_samples_pct(st->latency, 50) },
		{ "latency_us_p90", pool_samples_pct(st->latency, 90) },
		{ "latency_us_p99", pool_samples_pct(st->latency, 99) },
		{ "latency_us_max", st->latency->max },
		{ "reset_samples", st->reset->n },
		{ "reset_us_p50", pool_samples_pct(st->reset, 50) },
		{ "reset_us_p99", pool_samples_pct(st->reset, 99) },
		{ "reset_us_max", st->reset->max },
	};
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3 + ARRAY_SIZE(u));
	mp_put_str(&pk, "ok");
	msgpack_pack_true(&pk);
	mp_put_kv_str(&pk, "state", st->state);
	for (size_t i = 0; i < ARRAY_SIZE(u); i++)
		mp_put_kv_u64(&pk, u[i].key, u[i].v);
	mp_put_str(&pk, "vms");
	msgpack_pack_array(&pk, st->nr_vms);
	for (unsigned i = 0; i < st->nr_vms; i++) {
		msgpack_pack_map(&pk, 4);
		mp_put_kv_u64(&pk, "id", st->vms[i].id);
		mp_put_kv_u64(&pk, "pid", (uint64_t)st->vms[i].pid);
		mp_put_kv_str(&pk, "state", st->vms[i].state);
		mp_put_kv_u64(&pk, "uses", st->vms[i].uses);
	}
	*len = sb.size;
	return (uint8_t *)sb.data; /* NULL only if every write failed to allocate */
}

/* ---- ember pool status ---------------------------------------------------------------- */

int pool_status_run(const struct cli *c)
{
	static uint8_t resp[4 + API_MAX_FRAME];
	static const uint8_t req[] = { 0x81, 0xa4, 'v', 'e', 'r', 'b', 0xa6, 's', 't', 'a',
				       't', 'u', 's' }; /* {"verb": "status"} */
	size_t len = 0;
	int r;

	r = ctl_exchange(c->pool_socket, req, sizeof(req), resp, sizeof(resp), &len, 0);
	if (r == -ENOENT || r == -ECONNREFUSED) {
		fprintf(stderr, "ember pool status: %s: %s: is ember pool running with --socket %s?\n",
			c->pool_socket, strerror(-r), c->pool_socket);
		return 1;
	}
	if (r) {
		fprintf(stderr, "ember pool status: %s: %s\n", c->pool_socket, strerror(-r));
		return 1;
	}
	return ctl_print_response(resp + 4, len, c->json, "ember pool status");
}
