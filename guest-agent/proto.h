/*
 * The guest agent's side of the invocation protocol (INVOCATION.md sections 2-5): request
 * framing, limits, responses. No Linux-guest specifics here, so that the host unit test
 * (tests/unit/test_agent.c) drives exactly this code over a Unix socket pair.
 */
#ifndef EMBER_AGENT_PROTO_H
#define EMBER_AGENT_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "handler.h"

#define AGENT_HDR_SIZE          24
#define AGENT_PROTO_MAX_PAYLOAD (16u << 20) /* INVOCATION.md: both directions */
#define AGENT_MSG_MAX           1024        /* non-OK responses: a short message */
#define AGENT_MAGIC_REQUEST     0x51424d45u /* "EMBQ" little-endian */
#define AGENT_MAGIC_RESPONSE    0x52424d45u /* "EMBR" */

enum agent_status {
	AGENT_OK = 0,
	AGENT_BAD_REQUEST = 1,
	AGENT_TOO_LARGE = 2,
	AGENT_FUNCTION_ERROR = 3,
	AGENT_UNSUPPORTED_VERSION = 4,
};

struct agent_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t flags_or_status; /* request: flags; response: status */
	uint64_t id;
	uint32_t len;
	uint32_t reserved;
};

void agent_hdr_decode(const uint8_t b[AGENT_HDR_SIZE], struct agent_hdr *h);
void agent_hdr_encode(uint8_t b[AGENT_HDR_SIZE], const struct agent_hdr *h);

/* Reads len bytes: len, fewer at end of stream, or -errno. EINTR is retried. */
long agent_read_full(int fd, void *buf, size_t len);
/* Writes len bytes: 0 or -errno (a peer that went away gives -EPIPE, never SIGPIPE on a
 * socket). */
int agent_write_all(int fd, const void *buf, size_t len);

/* What the agent runs for each request, and within which limits. */
struct agent_config {
	char *const *handler_argv;   /* argv[0]: path of the executable */
	uint32_t max_payload;        /* requests above this get TOO_LARGE (<= 16 MiB) */
	struct handler_limits limits;
	/* Called before each request is run, after its payload was read (the agent's
	 * generation check and re-seed); may be NULL. */
	void (*before_run)(void *ctx);
	void *ctx;
};

/* Counts for one connection, for the agent's log and the tests. */
struct agent_conn_stats {
	uint64_t requests;   /* responses sent */
	uint64_t ok;
	uint64_t errors;     /* FUNCTION_ERROR */
	uint64_t rejected;   /* BAD_REQUEST, TOO_LARGE, UNSUPPORTED_VERSION */
};

/*
 * Serves requests on fd, in order, until the peer closes, a frame is truncated (the
 * invocation is abandoned: no response), a header is not a version-1 request (answered,
 * then the connection ends) or a write fails. Does not close fd. Returns 0 when the
 * connection ended by the protocol's rules, -errno when reading or writing failed.
 */
int agent_serve_conn(int fd, const struct agent_config *cfg, struct agent_conn_stats *st);

#endif
