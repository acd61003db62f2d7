/*
 * The invocation protocol's wire format (INVOCATION.md): request and response headers,
 * status names, ember's "CONNECT <port>" / "OK <host port>" lines. Pure functions over
 * bytes, shared by the client (invoke.c), the pool (pool.c) and their tests: every
 * check of a peer's header is written once, here.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define REQ_MAGIC  "EMBQ"
#define RESP_MAGIC "EMBR"
#define PROTO_VERSION 1

const char *invoke_status_name(uint16_t status)
{
	static const char *const names[] = {
		[INVOKE_OK] = "OK",
		[INVOKE_BAD_REQUEST] = "BAD_REQUEST",
		[INVOKE_TOO_LARGE] = "TOO_LARGE",
		[INVOKE_FUNCTION_ERROR] = "FUNCTION_ERROR",
		[INVOKE_UNSUPPORTED_VERSION] = "UNSUPPORTED_VERSION",
		[INVOKE_BUSY] = "BUSY",
		[INVOKE_UNAVAILABLE] = "UNAVAILABLE",
		[INVOKE_SHUTTING_DOWN] = "SHUTTING_DOWN",
	};

	return status < ARRAY_SIZE(names) ? names[status] : "UNKNOWN";
}

size_t invoke_escape(const void *data, size_t len, char *out, size_t cap)
{
	const uint8_t *p = data;
	size_t o = 0, keep = 0; /* keep: the longest prefix that still has room for "..." */

	if (cap == 0)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char e[5];
		int n;

		if (p[i] == '\n')
			n = snprintf(e, sizeof(e), "\\n");
		else if (p[i] == '\t')
			n = snprintf(e, sizeof(e), "\\t");
		else if (p[i] == '\\')
			n = snprintf(e, sizeof(e), "\\\\");
		else if (p[i] >= 0x20 && p[i] < 0x7f)
			n = snprintf(e, sizeof(e), "%c", p[i]);
		else
			n = snprintf(e, sizeof(e), "\\x%02x", p[i]);
		if (o + (size_t)n >= cap) {
			o = keep + (size_t)snprintf(out + keep, cap - keep, "...");
			return o < cap ? o : cap - 1;
		}
		memcpy(out + o, e, (size_t)n);
		o += (size_t)n;
		if (o + 3 < cap)
			keep = o;
	}
	out[o] = 0;
	return o;
}

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static void put_header(uint8_t *h, const char *magic, uint16_t field6, uint64_t id, uint32_t len)
{
	memcpy(h, magic, 4);
	put_le16(h + 4, PROTO_VERSION);
	put_le16(h + 6, field6);
	put_le64(h + 8, id);
	put_le32(h + 16, len);
	put_le32(h + 20, 0);
}

void invoke_put_request_header(uint8_t *h, uint64_t request_id, uint32_t payload_len)
{
	put_header(h, REQ_MAGIC, 0, request_id, payload_len); /* flags = 0 */
}

void invoke_put_response_header(uint8_t *h, uint16_t status, uint64_t request_id,
				uint32_t payload_len)
{
	put_header(h, RESP_MAGIC, status, request_id, payload_len);
}

uint16_t invoke_check_request_header(const uint8_t *h, uint64_t *request_id,
				     uint32_t *payload_len, struct errbuf *eb)
{
	uint16_t version = get_le16(h + 4), flags = get_le16(h + 6);
	uint32_t reserved = get_le32(h + 20);
	char esc[24];

	*request_id = get_le64(h + 8);
	*payload_len = get_le32(h + 16);
	if (memcmp(h, REQ_MAGIC, 4)) {
		invoke_escape(h, 4, esc, sizeof(esc));
		errbuf_set(eb, -EPROTO, "bad magic '%s': not an " REQ_MAGIC " request", esc);
		return INVOKE_BAD_REQUEST;
	}
	if (version != PROTO_VERSION) {
		errbuf_set(eb, -EPROTO, "version %u is not supported (this server speaks %d)",
			   version, PROTO_VERSION);
		return INVOKE_UNSUPPORTED_VERSION;
	}
	if (flags || reserved) {
		errbuf_set(eb, -EPROTO, "flags (0x%x) and reserved (0x%" PRIx32 ") must be 0 in "
			   "version %d", flags, reserved, PROTO_VERSION);
		return INVOKE_BAD_REQUEST;
	}
	return INVOKE_OK;
}

int invoke_check_response_header(const uint8_t *h, uint64_t request_id, uint16_t max_status,
				 uint16_t *status, uint32_t *len, struct errbuf *eb)
{
	uint16_t version = get_le16(h + 4);
	uint64_t id = get_le64(h + 8);
	uint32_t reserved = get_le32(h + 20);
	char esc[24];

	*status = get_le16(h + 6);
	*len = get_le32(h + 16);
	if (memcmp(h, RESP_MAGIC, 4)) {
		invoke_escape(h, 4, esc, sizeof(esc));
		return errbuf_set(eb, -EPROTO, "malformed response: magic '%s', not '" RESP_MAGIC "'",
				  esc);
	}
	if (version != PROTO_VERSION)
		return errbuf_set(eb, -EPROTO, "malformed response: version %u, not %d", version,
				  PROTO_VERSION);
	if (id != request_id)
		return errbuf_set(eb, -EPROTO, "malformed response: request_id %" PRIu64 ", but the "
				  "request's is %" PRIu64, id, request_id);
	if (reserved)
		return errbuf_set(eb, -EPROTO, "malformed response: reserved is 0x%" PRIx32 ", not 0",
				  reserved);
	if (*len > INVOKE_MAX_PAYLOAD)
		return errbuf_set(eb, -EPROTO, "malformed response: payload_len %" PRIu32 " exceeds "
				  "the protocol's 16 MiB (%u)", *len, INVOKE_MAX_PAYLOAD);
	if (*status > max_status)
		return errbuf_set(eb, -EPROTO, "malformed response: status %u is not one of "
				  "INVOCATION.md's (0..%u)", *status, max_status);
	return 0;
}

int invoke_format_connect(uint32_t port, char *buf, size_t cap)
{
	return snprintf(buf, cap, "CONNECT %" PRIu32 "\n", port);
}

int invoke_parse_ok_line(const char *line, size_t len, uint32_t *host_port)
{
	uint64_t v = 0;

	/* "OK " + 1..10 digits + "\n": a vsock port is 32 bits */
	if (len < 5 || len > 14 || memcmp(line, "OK ", 3) || line[len - 1] != '\n')
		return -EPROTO;
	for (size_t i = 3; i < len - 1; i++) {
		if (line[i] < '0' || line[i] > '9')
			return -EPROTO;
		v = v * 10 + (uint64_t)(line[i] - '0');
	}
	if (v > UINT32_MAX)
		return -EPROTO;
	*host_port = (uint32_t)v;
	return 0;
}
