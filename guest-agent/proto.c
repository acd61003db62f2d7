/*
 * Request framing and responses of INVOCATION.md, the agent side. Everything read from
 * the connection is untrusted: lengths are checked against the limits before anything
 * is allocated, and a frame that cannot be trusted ends the connection.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto.h"

#define DISCARD_CHUNK 65536

static uint64_t le_get(const uint8_t *p, unsigned bytes)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < bytes; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void le_put(uint8_t *p, uint64_t v, unsigned bytes)
{
	for (unsigned i = 0; i < bytes; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void agent_hdr_decode(const uint8_t b[AGENT_HDR_SIZE], struct agent_hdr *h)
{
	h->magic = (uint32_t)le_get(b, 4);
	h->version = (uint16_t)le_get(b + 4, 2);
	h->flags_or_status = (uint16_t)le_get(b + 6, 2);
	h->id = le_get(b + 8, 8);
	h->len = (uint32_t)le_get(b + 16, 4);
	h->reserved = (uint32_t)le_get(b + 20, 4);
}

void agent_hdr_encode(uint8_t b[AGENT_HDR_SIZE], const struct agent_hdr *h)
{
	le_put(b, h->magic, 4);
	le_put(b + 4, h->version, 2);
	le_put(b + 6, h->flags_or_status, 2);
	le_put(b + 8, h->id, 8);
	le_put(b + 16, h->len, 4);
	le_put(b + 20, h->reserved, 4);
}

long agent_read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, (uint8_t *)buf + got, len - got);

		if (n > 0)
			got += (size_t)n;
		else if (n == 0)
			break;
		else if (errno != EINTR)
			return -errno;
	}
	return (long)got;
}

int agent_write_all(int fd, const void *buf, size_t len)
{
	size_t put = 0;

	while (put < len) {
		/* send: MSG_NOSIGNAL on a socket; write for anything else (ENOTSOCK) */
		ssize_t n = send(fd, (const uint8_t *)buf + put, len - put, MSG_NOSIGNAL);

		if (n < 0 && errno == ENOTSOCK)
			n = write(fd, (const uint8_t *)buf + put, len - put);
		if (n > 0)
			put += (size_t)n;
		else if (n < 0 && errno != EINTR)
			return -errno;
	}
	return 0;
}

static int respond(int fd, uint64_t id, enum agent_status st, const void *payload, size_t len,
		   struct agent_conn_stats *s)
{
	uint8_t h[AGENT_HDR_SIZE];
	struct agent_hdr hdr = { .magic = AGENT_MAGIC_RESPONSE, .version = 1,
				 .flags_or_status = (uint16_t)st, .id = id,
				 .len = (uint32_t)len };
	int ret;

	agent_hdr_encode(h, &hdr);
	ret = agent_write_all(fd, h, sizeof(h));
	if (!ret && len)
		ret = agent_write_all(fd, payload, len);
	if (ret)
		return ret;
	s->requests++;
	if (st == AGENT_OK)
		s->ok++;
	else if (st == AGENT_FUNCTION_ERROR)
		s->errors++;
	else
		s->rejected++;
	return 0;
}

static int respond_msg(int fd, uint64_t id, enum agent_status st, struct agent_conn_stats *s,
		       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int respond_msg(int fd, uint64_t id, enum agent_status st, struct agent_conn_stats *s,
		       const char *fmt, ...)
{
	char msg[AGENT_MSG_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	return respond(fd, id, st, msg, (size_t)n, s);
}

/* Reads and drops len bytes, so that the stream stays framed. 0, 1 at end of stream,
 * or -errno. */
static int discard(int fd, uint32_t len)
{
	uint8_t buf[4096];

	while (len) {
		size_t chunk = len < sizeof(buf) ? len : sizeof(buf);
		long n = agent_read_full(fd, buf, chunk);

		if (n < 0)
			return (int)n;
		if ((size_t)n != chunk)
			return 1;
		len -= (uint32_t)chunk;
	}
	return 0;
}

/* The handler's outcome as a response. */
static int answer(int fd, uint64_t id, const struct agent_config *cfg,
		  const struct handler_result *r, struct agent_conn_stats *s)
{
	switch (r->outcome) {
	case HANDLER_EXITED:
		if (r->exit_code == 0)
			return respond(fd, id, AGENT_OK, r->out, r->out_len, s);
		return respond_msg(fd, id, AGENT_FUNCTION_ERROR, s,
				   "handler %s exited with status %d", cfg->handler_argv[0],
				   r->exit_code);
	case HANDLER_SIGNALED:
		return respond_msg(fd, id, AGENT_FUNCTION_ERROR, s,
				   "handler %s was killed by signal %d", cfg->handler_argv[0],
				   r->signal);
	case HANDLER_TIMED_OUT:
		return respond_msg(fd, id, AGENT_FUNCTION_ERROR, s,
				   "handler %s timed out after %u ms (killed)",
				   cfg->handler_argv[0], cfg->limits.timeout_ms);
	case HANDLER_TOO_MUCH:
		return respond_msg(fd, id, AGENT_FUNCTION_ERROR, s,
				   "handler %s wrote more than max_output %zu bytes (killed)",
				   cfg->handler_argv[0], cfg->limits.max_output);
	}
	return respond_msg(fd, id, AGENT_FUNCTION_ERROR, s, "handler: unknown outcome");
}

/* One request whose header was read: 0 to go on, 1 to end the connection, -errno. */
static int serve_one(int fd, const uint8_t *hb, const struct agent_config *cfg,
		     struct agent_conn_stats *s)
{
	struct agent_hdr h;
	struct handler_result r;
	uint8_t *payload;
	long n;
	int ret;

	agent_hdr_decode(hb, &h);
	/* the framing cannot be trusted after these: answer, then close */
	if (h.magic != AGENT_MAGIC_REQUEST) {
		ret = respond_msg(fd, h.id, AGENT_BAD_REQUEST, s,
				  "bad magic 0x%08x: not an EMBQ request", h.magic);
		return ret ? ret : 1;
	}
	if (h.version != 1) {
		ret = respond_msg(fd, h.id, AGENT_UNSUPPORTED_VERSION, s,
				  "version %u is not supported (this agent speaks 1)", h.version);
		return ret ? ret : 1;
	}
	if (h.flags_or_status || h.reserved) {
		ret = respond_msg(fd, h.id, AGENT_BAD_REQUEST, s,
				  "flags (0x%x) and reserved (0x%x) must be 0 in version 1",
				  h.flags_or_status, h.reserved);
		return ret ? ret : 1;
	}
	if (h.len > cfg->max_payload) {
		if (h.len > AGENT_PROTO_MAX_PAYLOAD) {
			/* beyond the protocol: nothing more is read */
			ret = respond_msg(fd, h.id, AGENT_TOO_LARGE, s,
					  "payload_len %u exceeds the protocol's 16 MiB", h.len);
			return ret ? ret : 1;
		}
		ret = discard(fd, h.len);
		if (ret)
			return ret;
		return respond_msg(fd, h.id, AGENT_TOO_LARGE, s,
				   "payload_len %u exceeds max_payload %u", h.len,
				   cfg->max_payload);
	}
	payload = malloc(h.len ? h.len : 1);
	if (!payload)
		return respond_msg(fd, h.id, AGENT_FUNCTION_ERROR, s,
				   "no memory for a %u-byte payload", h.len);
	n = agent_read_full(fd, payload, h.len);
	if (n != (long)h.len) {
		free(payload);
		return n < 0 ? (int)n : 1; /* truncated: the invocation is abandoned */
	}
	if (cfg->before_run)
		cfg->before_run(cfg->ctx);
	ret = handler_run(cfg->handler_argv, payload, h.len, &cfg->limits, &r);
	free(payload);
	if (ret)
		return respond_msg(fd, h.id, AGENT_FUNCTION_ERROR, s,
				   "handler %s could not be started: %s", cfg->handler_argv[0],
				   strerror(-ret));
	ret = answer(fd, h.id, cfg, &r, s);
	free(r.out);
	return ret;
}

int agent_serve_conn(int fd, const struct agent_config *cfg, struct agent_conn_stats *st)
{
	struct agent_conn_stats local = { 0 };
	struct agent_conn_stats *s = st ? st : &local;

	for (;;) {
		uint8_t hb[AGENT_HDR_SIZE];
		long n = agent_read_full(fd, hb, sizeof(hb));
		int ret;

		if (n < 0)
			return (int)n;
		if (n != AGENT_HDR_SIZE)
			return 0; /* closed, or a truncated header: abandoned */
		ret = serve_one(fd, hb, cfg, s);
		if (ret)
			return ret < 0 ? ret : 0;
	}
}
