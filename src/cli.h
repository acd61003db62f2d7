/* ember front end: command-line parsing (cli.c), the commands (main.c), the control
 * socket client (ctl.c), the invocation client (invoke.c). */
#ifndef EMBER_CLI_H
#define EMBER_CLI_H

#include <stdio.h>

#include "vmm.h"

enum cli_cmd { CLI_HELP, CLI_VERSION, CLI_BOOT, CLI_RESTORE, CLI_CTL, CLI_INVOKE };

#define CLI_MAX_CTL_ARGS 8

struct cli {
	enum cli_cmd cmd;
	struct vm_config vm;
	bool dump_regs;
	const char *snapshot;            /* restore --snapshot */
	const char *snapshot_on_ready;   /* boot --snapshot-on-ready */
	bool exit_after_snapshot;
	const char *api_sock;
	const char *ctl_args[CLI_MAX_CTL_ARGS]; /* ctl: verb and its arguments */
	unsigned nr_ctl_args;
	bool ctl_diff;                   /* ctl snapshot --diff */
	bool compress;                   /* boot --compress, ctl snapshot --compress */
	bool standby;                    /* restore --standby, ctl reset --standby */
	int ready_fd;                    /* --ready-fd N, -1 for none */
	/* invoke: the socket is vm.vsock_uds, the deadline vm.timeout_ms, --timings
	 * vm.timings */
	uint32_t invoke_port;            /* --port, default 5000 */
	const char *invoke_payload;      /* --payload FILE, "-" for stdin; NULL: empty */
	uint64_t invoke_request_id;      /* --request-id, default 1 */
	bool invoke_json;                /* --json: the timings line as a JSON object */
};

/* Fills c from argv; on a usage error returns -EINVAL with the message in eb. */
int cli_parse(int argc, char **argv, struct cli *c, struct errbuf *eb);
void cli_usage(FILE *f);
/* ember ctl: returns the process exit status. */
int ctl_run(const struct cli *c);

/* ---- invoke.c: the invocation client (INVOCATION.md) ---- */
#define INVOKE_HDR_SIZE     24
#define INVOKE_MAX_PAYLOAD  (16u << 20) /* both directions */
#define INVOKE_DEFAULT_PORT 5000u

enum invoke_status {
	INVOKE_OK = 0,
	INVOKE_BAD_REQUEST = 1,
	INVOKE_TOO_LARGE = 2,
	INVOKE_FUNCTION_ERROR = 3,
	INVOKE_UNSUPPORTED_VERSION = 4,
};

struct invoke_opts {
	const char *uds;       /* ember's --vsock-uds socket */
	uint32_t port;         /* guest vsock port */
	uint64_t request_id;
	uint64_t timeout_ms;   /* the whole exchange, connect included; 0: none */
};

struct invoke_result {
	uint16_t status;       /* enum invoke_status: any other value is refused as malformed */
	uint8_t *payload;      /* malloc'd, payload_len bytes and a NUL after them */
	uint32_t payload_len;
	uint32_t host_port;    /* from ember's "OK <host port>" (invoke_once) */
	uint64_t connect_us;   /* invoke_once: connect() through the OK line */
	uint64_t response_us;  /* the request's first byte written through the response's last
				* byte read */
};

/* CLOCK_MONOTONIC in ns: the clock of every deadline here. */
uint64_t invoke_clock_ns(void);
/* "OK", "FUNCTION_ERROR", ...; "UNKNOWN" for values outside enum invoke_status. */
const char *invoke_status_name(uint16_t status);
/* Copies data into out as printable ASCII (\n, \t, \\, \xHH for the rest), NUL-terminated,
 * ending in "..." when it does not fit. Returns strlen(out). */
size_t invoke_escape(const void *data, size_t len, char *out, size_t cap);
/*
 * Connects to the hybrid socket uds and asks ember for guest port `port`. Returns a
 * non-blocking connected fd, or -errno: -ENOENT / -ECONNREFUSED (no socket, nobody
 * listening), -ECONNRESET (ember closed the connection without OK: the guest refused
 * the port or did not answer, or ember is at its connection limit), -ETIMEDOUT, -EPROTO
 * (an answer other than "OK <digits>\n"). deadline_ns: absolute invoke_clock_ns(), 0
 * for none.
 */
int invoke_connect(const char *uds, uint32_t port, uint64_t deadline_ns, uint32_t *host_port,
		   struct errbuf *eb);
/*
 * One request/response on a connection from invoke_connect. Fills res (status,
 * payload, response_us); the caller frees it with invoke_result_free. -EMSGSIZE for a
 * payload over INVOKE_MAX_PAYLOAD, -ETIMEDOUT, -EPROTO for a malformed response, -EPIPE
 * when the connection closed while sending; after any error the connection is unusable.
 */
int invoke_call(int fd, uint64_t request_id, const void *payload, uint32_t len,
		uint64_t deadline_ns, struct invoke_result *res, struct errbuf *eb);
/* invoke_connect + invoke_call + close, within o->timeout_ms. */
int invoke_once(const struct invoke_opts *o, const void *payload, uint32_t len,
		struct invoke_result *res, struct errbuf *eb);
void invoke_result_free(struct invoke_result *res);
/* ember invoke: returns the process exit status (0, 1, 2, 3, 124). */
int invoke_run(const struct cli *c);

#endif
