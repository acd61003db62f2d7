/* ember front end: command-line parsing (cli.c), the commands (main.c), the control
 * socket client (ctl.c), the invocation protocol (invoke_proto.c) and its client
 * (invoke.c), the pool of standby VMs (pool.c, pool_proto.c). */
#ifndef EMBER_CLI_H
#define EMBER_CLI_H

#include <stdio.h>

#include "vmm.h"

enum cli_cmd {
	CLI_HELP, CLI_VERSION, CLI_BOOT, CLI_RESTORE, CLI_CTL, CLI_INVOKE, CLI_POOL,
	CLI_POOL_STATUS,
};

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
	bool force;                      /* restore --force: --record-ws may replace ws.bin */
	int ready_fd;                    /* --ready-fd N, -1 for none */
	/* invoke: the socket is vm.vsock_uds, the deadline vm.timeout_ms, --timings
	 * vm.timings */
	uint32_t invoke_port;            /* --port, default 5000 (pool: the VMs' port) */
	bool port_set;                   /* --port was given */
	const char *invoke_payload;      /* --payload FILE, "-" for stdin; NULL: empty */
	uint64_t invoke_request_id;      /* --request-id, default 1 */
	const char *invoke_pool;         /* invoke --pool PATH instead of --vsock-uds */
	bool json;                       /* invoke: the timings line as a JSON object;
					  * pool status: the status as one */
	/* pool: the snapshot is `snapshot`, the port invoke_port */
	const char *pool_socket;         /* --socket PATH */
	unsigned pool_size;              /* --size, default POOL_DEFAULT_SIZE */
	uint64_t pool_max_uses;          /* --max-uses, 0: no limit */
	unsigned pool_queue;             /* --queue */
	uint64_t pool_timeout_ms;        /* --timeout-ms */
	uint32_t pool_max_payload;       /* --max-payload */
	/* every command */
	enum log_level log_level;        /* --log-level, else EMBER_LOG, else LOG_WARN */
	bool log_level_set;              /* --log-level was given */
	const char *log_file;            /* --log-file PATH */
};

/* Fills c from argv; on a usage error returns -EINVAL with the message in eb. */
int cli_parse(int argc, char **argv, struct cli *c, struct errbuf *eb);
void cli_usage(FILE *f);
/* ember ctl: returns the process exit status. */
int ctl_run(const struct cli *c);
/*
 * One control-socket exchange (FORMAT.md 9) with the server at path: sends the msgpack
 * map req[0..req_len) framed, reads the framed response into resp (cap bytes, the
 * 4-byte length included); *len is the response's length without it. Blocking, each
 * connect, send and receive within timeout_ms (0: CTL_DEFAULT_TIMEOUT_MS). 0 or -errno
 * (-EPROTO: a bad frame length, -ETIMEDOUT: no answer in time).
 */
#define CTL_DEFAULT_TIMEOUT_MS 120000
int ctl_exchange(const char *path, const void *req, size_t req_len, uint8_t *resp, size_t cap,
		 size_t *len, uint64_t timeout_ms);
/* Prints a response body: "key: value" lines (0 when it says ok), or with json one JSON
 * object, every key as the msgpack map has it. Strings are escaped (no control bytes
 * reach the terminal). A refusal prints "<who>: refused: <escaped error>" on stderr. */
int ctl_print_response(const uint8_t *body, size_t len, bool json, const char *who);

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
	/* only from an ember pool (INVOCATION.md 7) */
	INVOKE_BUSY = 5,
	INVOKE_UNAVAILABLE = 6,
	INVOKE_SHUTTING_DOWN = 7,
};
#define INVOKE_MAX_STATUS  INVOKE_SHUTTING_DOWN
#define INVOKE_MESSAGE_MAX 1024 /* a non-OK status's message (INVOCATION.md 2) */

/* ---- invoke_proto.c: the frames and lines themselves, pure -------------------------- */
/* "OK", "FUNCTION_ERROR", "BUSY", ...; "UNKNOWN" for values outside enum invoke_status. */
const char *invoke_status_name(uint16_t status);
/* Copies data into out as printable ASCII (\n, \t, \\, \xHH for the rest), NUL-terminated,
 * ending in "..." when it does not fit. Returns strlen(out). */
size_t invoke_escape(const void *data, size_t len, char *out, size_t cap);
/* Writes a 24-byte header: magic, version 1, flags or status, id, payload_len, 0. */
void invoke_put_request_header(uint8_t *h, uint64_t request_id, uint32_t payload_len);
void invoke_put_response_header(uint8_t *h, uint16_t status, uint64_t request_id,
				uint32_t payload_len);
/*
 * A request header as an agent checks it (INVOCATION.md 3): INVOKE_OK, or the status to
 * answer (INVOKE_BAD_REQUEST, INVOKE_UNSUPPORTED_VERSION) with the message in eb.
 * *request_id and *payload_len are filled either way (for the answer). payload_len is
 * not checked: the limit is the server's.
 */
uint16_t invoke_check_request_header(const uint8_t *h, uint64_t *request_id,
				     uint32_t *payload_len, struct errbuf *eb);
/* A response header as a client checks it (INVOCATION.md 4); statuses above max_status
 * are malformed. 0 with *status and *len, or -EPROTO with the reason in eb. */
int invoke_check_response_header(const uint8_t *h, uint64_t request_id, uint16_t max_status,
				 uint16_t *status, uint32_t *len, struct errbuf *eb);
/* "CONNECT <port>\n" into buf; returns its length. */
int invoke_format_connect(uint32_t port, char *buf, size_t cap);
/* line[0..len) (newline included) is exactly "OK <host port>\n": 0 with *host_port, or
 * -EPROTO. */
int invoke_parse_ok_line(const char *line, size_t len, uint32_t *host_port);

/* ---- invoke.c: the client ------------------------------------------------------------ */
struct invoke_opts {
	const char *uds;       /* ember's --vsock-uds socket */
	const char *pool;      /* or an ember pool's --socket (then uds and port are unused) */
	uint32_t port;         /* guest vsock port */
	uint64_t request_id;
	uint64_t timeout_ms;   /* the whole exchange, connect included; 0: none */
};

struct invoke_result {
	uint16_t status;       /* enum invoke_status (0..4, or 0..7 from a pool): any other
				* value is refused as malformed */
	uint8_t *payload;      /* malloc'd, payload_len bytes and a NUL after them */
	uint32_t payload_len;
	uint32_t host_port;    /* from ember's "OK <host port>" (invoke_once) */
	uint64_t connect_us;   /* invoke_once: connect() through the OK line */
	uint64_t response_us;  /* the request's first byte written through the response's last
				* byte read */
};

/* CLOCK_MONOTONIC in ns: the clock of every deadline here. */
uint64_t invoke_clock_ns(void);
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
/* An ember pool's socket: a non-blocking connected fd, or -errno (as invoke_connect). */
int invoke_pool_connect(const char *path, uint64_t deadline_ns, struct errbuf *eb);
/* invoke_call on a pool connection: the pool's statuses (BUSY, ...) are results too. */
int invoke_pool_call(int fd, uint64_t request_id, const void *payload, uint32_t len,
		     uint64_t deadline_ns, struct invoke_result *res, struct errbuf *eb);
/* invoke_connect (or invoke_pool_connect) + the call + close, within o->timeout_ms. */
int invoke_once(const struct invoke_opts *o, const void *payload, uint32_t len,
		struct invoke_result *res, struct errbuf *eb);
void invoke_result_free(struct invoke_result *res);
/* ember invoke: returns the process exit status (0, 1, 2, 3, 4, 124). */
int invoke_run(const struct cli *c);

#endif
