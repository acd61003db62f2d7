/* Parsing the agent's ember.* kernel command-line words. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "proto.h"

void agent_settings_default(struct agent_settings *s)
{
	memset(s, 0, sizeof(*s));
	s->port = AGENT_DEFAULT_PORT;
	snprintf(s->handler, sizeof(s->handler), "%s", AGENT_DEFAULT_HANDLER);
	s->timeout_ms = AGENT_DEFAULT_TIMEOUT_MS;
	s->max_payload = AGENT_DEFAULT_MAX_PAYLOAD;
	s->max_output = AGENT_DEFAULT_MAX_OUTPUT;
}

/* Decimal, no sign, within [min, max]. */
static int parse_u32(const char *v, size_t len, uint32_t min, uint32_t max, uint32_t *out)
{
	uint64_t x = 0;

	if (!len || len > 10)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -EINVAL;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	if (x < min || x > max)
		return -EINVAL;
	*out = (uint32_t)x;
	return 0;
}

static int apply(struct agent_settings *s, const char *key, size_t klen, const char *v,
		 size_t vlen)
{
#define KEY_IS(k) (klen == sizeof(k) - 1 && !memcmp(key, k, klen))
	if (KEY_IS("port"))
		/* 0xffffffff is VMADDR_PORT_ANY */
		return parse_u32(v, vlen, 0, 0xfffffffeu, &s->port);
	if (KEY_IS("timeout_ms"))
		return parse_u32(v, vlen, 1, 3600000u, &s->timeout_ms);
	if (KEY_IS("max_payload"))
		return parse_u32(v, vlen, 0, AGENT_PROTO_MAX_PAYLOAD, &s->max_payload);
	if (KEY_IS("max_output"))
		return parse_u32(v, vlen, 0, AGENT_PROTO_MAX_PAYLOAD, &s->max_output);
	if (KEY_IS("handler")) {
		if (!vlen || v[0] != '/' || vlen >= sizeof(s->handler))
			return -EINVAL;
		memcpy(s->handler, v, vlen);
		s->handler[vlen] = 0;
		return 0;
	}
#undef KEY_IS
	return -ENOENT;
}

int agent_settings_parse(struct agent_settings *s, const char *cmdline, char *err,
			 size_t err_len)
{
	const char *p = cmdline;

	while (*p) {
		const char *w, *eq, *key, *end;
		size_t wlen;
		int r;

		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		w = p;
		while (*p && *p != ' ' && *p != '\t' && *p != '\n')
			p++;
		wlen = (size_t)(p - w);
		if (wlen < 6 || memcmp(w, "ember.", 6))
			continue;
		key = w + 6;
		end = w + wlen;
		eq = memchr(key, '=', (size_t)(end - key));
		if (!eq) {
			snprintf(err, err_len, "%.*s: expected ember.KEY=VALUE", (int)wlen, w);
			return -EINVAL;
		}
		r = apply(s, key, (size_t)(eq - key), eq + 1, (size_t)(end - eq - 1));
		if (r == -ENOENT) {
			snprintf(err, err_len, "%.*s: unknown key (port, handler, timeout_ms, "
				 "max_payload, max_output)", (int)wlen, w);
			return -EINVAL;
		}
		if (r) {
			snprintf(err, err_len, "%.*s: bad value (numbers are decimal; port < "
				 "4294967295, timeout_ms 1..3600000, max_payload and max_output "
				 "at most 16777216; handler an absolute path)", (int)wlen, w);
			return -EINVAL;
		}
	}
	return 0;
}

int agent_mmio_params(const char *cmdline, char *out, size_t out_len)
{
	static const char word[] = "virtio_mmio.device=";
	const size_t wl = sizeof(word) - 1;
	size_t used = 0;
	unsigned n = 0;
	const char *p = cmdline;

	if (out_len < sizeof("devices="))
		return -ENOSPC;
	used = (size_t)snprintf(out, out_len, "devices=");
	while (*p) {
		const char *w;
		size_t len;

		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		w = p;
		while (*p && *p != ' ' && *p != '\t' && *p != '\n')
			p++;
		len = (size_t)(p - w);
		if (len <= wl || memcmp(w, word, wl))
			continue;
		w += wl;
		len -= wl;
		if (memchr(w, ',', len))
			return -EINVAL;
		if (used + (n ? 1 : 0) + len + 1 > out_len)
			return -ENOSPC;
		if (n++)
			out[used++] = ',';
		memcpy(out + used, w, len);
		used += len;
		out[used] = 0;
	}
	return n ? 0 : -ENOENT;
}
