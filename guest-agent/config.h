/*
 * The agent's settings, from the kernel command line (ember --cmdline): ember.port=,
 * ember.handler=, ember.timeout_ms=, ember.max_payload=, ember.max_output=. Pure, so
 * that the host unit test checks the parsing.
 */
#ifndef EMBER_AGENT_CONFIG_H
#define EMBER_AGENT_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define AGENT_DEFAULT_PORT        5000u
#define AGENT_DEFAULT_HANDLER     "/bin/ember-echo"
#define AGENT_DEFAULT_TIMEOUT_MS  10000u
#define AGENT_DEFAULT_MAX_PAYLOAD (4u << 20)
#define AGENT_DEFAULT_MAX_OUTPUT  (4u << 20)
#define AGENT_HANDLER_PATH_MAX    256

struct agent_settings {
	uint32_t port;
	char handler[AGENT_HANDLER_PATH_MAX];
	uint32_t timeout_ms;
	uint32_t max_payload;  /* <= 16 MiB */
	uint32_t max_output;   /* <= 16 MiB: a response payload's limit */
};

void agent_settings_default(struct agent_settings *s);
/*
 * Applies the ember.* words of a kernel command line (other words are ignored). 0, or
 * -EINVAL with a message naming the bad word in err.
 */
int agent_settings_parse(struct agent_settings *s, const char *cmdline, char *err,
			 size_t err_len);

/*
 * The parameters for ember_mmio.ko (guest-agent/kmod/): "devices=" and the values of
 * every virtio_mmio.device= word of the command line, comma-separated, in order. 0, or
 * -ENOENT when there is none, -ENOSPC when out is too small, -EINVAL for a value with
 * a comma (it would read as two devices).
 */
int agent_mmio_params(const char *cmdline, char *out, size_t out_len);

#endif
