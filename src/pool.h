/*
 * ember pool: standby VMs of one snapshot, one `ember restore --standby` process each,
 * serving invocations (INVOCATION.md 7) on one Unix socket. pool.c is the process (its
 * event loop, the VMs, the clients); pool_proto.c the pure parts this header declares:
 * what a client's frame is, the latency samples, the status document.
 */
#ifndef EMBER_POOL_H
#define EMBER_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "cli.h"

#define POOL_DEFAULT_SIZE        2
#define POOL_MAX_SIZE            64
#define POOL_DEFAULT_QUEUE       64
#define POOL_MAX_QUEUE           4096
#define POOL_DEFAULT_TIMEOUT_MS  10000
#define POOL_DEFAULT_MAX_PAYLOAD (1u << 20)
#define POOL_DEFAULT_MAX_USES    1000
#define POOL_MAX_CLIENTS         512

/* ---- a client's frame (pool_proto.c) ------------------------------------------------ */

/*
 * A pool client's frame starts with either "EMBQ" (an invocation, INVOCATION.md 2) or
 * a 4-byte big-endian length 1..65536 (a control request, FORMAT.md 9 framing), whose
 * first byte is 0. Decided on the first byte.
 */
static inline bool pool_frame_is_control(uint8_t first_byte)
{
	return first_byte == 0;
}

/* What to do with an invocation request whose 24-byte header arrived. */
struct pool_req {
	uint64_t id;
	uint32_t len;          /* payload_len */
	uint16_t status;       /* INVOKE_OK: run it; else answer this status with msg */
	bool discard;          /* read and drop the len payload bytes before answering */
	bool close;            /* close the connection after answering */
	char msg[256];
};
void pool_check_request(const uint8_t *hdr, uint32_t max_payload, struct pool_req *rq);

/* ---- latency samples (pool_proto.c) ------------------------------------------------- */

#define POOL_SAMPLES 1024 /* the most recent ones: percentiles of recent behaviour */
struct pool_samples {
	uint32_t v[POOL_SAMPLES]; /* microseconds, saturated at UINT32_MAX */
	unsigned n, next;
	uint64_t max;             /* over all samples ever */
};
void pool_samples_add(struct pool_samples *s, uint64_t us);
/* Nearest-rank percentile pct (1..100) of the samples kept; 0 when there are none. */
uint64_t pool_samples_pct(const struct pool_samples *s, unsigned pct);

/* ---- the status document (pool_proto.c; keys in INVOCATION.md 7) -------------------- */

struct pool_vm_info {
	unsigned id;
	int pid;
	const char *state;     /* "starting", "idle", "busy", "resetting", "retiring" */
	uint64_t uses;
};

struct pool_status {
	const char *state;     /* "serving", "draining" */
	/* configuration */
	unsigned size;
	uint64_t max_uses;
	unsigned queue_max;
	uint64_t timeout_ms;
	uint32_t max_payload;
	uint32_t port;
	/* now */
	unsigned idle, busy, starting, resetting, retiring, queued, clients;
	uint64_t uptime_us;
	/* counters since start */
	uint64_t invocations_ok;          /* the function answered OK */
	uint64_t invocations_error;       /* the function answered another status */
	uint64_t invocations_unavailable; /* UNAVAILABLE: the VM died, hung or misbehaved */
	uint64_t invocations_aborted;     /* the client left before its response was sent */
	uint64_t rejected_busy;           /* BUSY: the queue was full */
	uint64_t rejected_invalid;        /* malformed, unsupported or too large requests */
	uint64_t rejected_shutting_down;  /* SHUTTING_DOWN */
	uint64_t resets, reset_failures;
	uint64_t spawned, spawn_failures, retired, crashes, killed, respawned, timeouts;
	const struct pool_samples *latency, *reset;
	const struct pool_vm_info *vms;
	unsigned nr_vms;
};

/* The status response: a msgpack map (ok: true, then the keys above) in a malloc'd
 * buffer; *len its size. NULL when out of memory. */
uint8_t *pool_status_encode(const struct pool_status *st, size_t *len);

/* ---- pool.c ---------------------------------------------------------------------- */
/* ember pool: returns the process exit status (0 after a drain, 1 on a fatal error). */
int pool_run(const struct cli *c);
/* ember pool status: 0 when the pool answered, 1 otherwise. */
int pool_status_run(const struct cli *c);

#endif
