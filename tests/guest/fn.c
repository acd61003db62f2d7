/*
 * fn: the function-runtime model served over vsock, the reference agent of
 * INVOCATION.md. Init builds the sandbox's heap (heap=, seed=), listens on four vsock
 * ports and signals ready: the golden snapshot holds the listening sockets. Then it
 * serves forever, one connection at a time, requests on it in order:
 *
 *   port P    mix     key = hash64(payload, n, 0x6d6978), start = key % heap_pages;
 *                     digest over max(1, ceil(n/4096)) heap pages from start; the
 *                     response is le64 digest + payload XOR the heap from start*4096
 *   port P+1  sink    le64 n, le64 hash64(payload, n, 0)
 *   port P+2  source  payload le64 N (N <= max_payload): N bytes of the heap from 0
 *   port P+3  sleep   payload le64 ms (ms <= 60000): waits that long, its vCPU parked
 *                     (no host CPU), then answers le64 ms: a slow or hung function
 *
 * Host commands (--guest-cmd, control socket) are polled while idle: verify,
 * generation, rng (32 bytes from virtio-rng: fresh in every clone), stats,
 * dial <port>, reinit (reset the vsock device and listen again: every connection
 * ends), exit. Command line: heap= seed= port= (5000)
 * max_payload= (4M, at most 16M) vsock_debug.
 */
#include "guest.h"

#define DEFAULT_PORT        5000
#define DEFAULT_MAX_PAYLOAD (4ull << 20)
#define PROTO_MAX_PAYLOAD   (16ull << 20) /* INVOCATION.md: both directions */
#define HDR_SIZE            24
#define MSG_MAX             1024
#define MIX_SEED            0x6d6978ull   /* "mix" */
#define CMD_RECHECK_US      10000         /* see idle() */
#define RESET_WAIT_US       100000        /* see check_restore() */
#define DIAL_TIMEOUT_US     5000000ull
#define DIAL_LINE_MAX       256
#define SLEEP_MAX_MS        60000

#define MAGIC_REQUEST  0x51424d45u /* "EMBQ" little-endian */
#define MAGIC_RESPONSE 0x52424d45u /* "EMBR" */

enum status {
	ST_OK = 0,
	ST_BAD_REQUEST = 1,
	ST_TOO_LARGE = 2,
	ST_FUNCTION_ERROR = 3,
	ST_UNSUPPORTED_VERSION = 4,
};

enum function { FN_MIX, FN_SINK, FN_SOURCE, FN_SLEEP, FN_COUNT };

static struct heap heap;
static uint32_t base_port;
static uint64_t max_payload;
static uint8_t *req_buf;            /* max_payload bytes, after the heap */
static uint8_t *resp_buf;           /* header + the largest response, after req_buf */
static uint64_t req_size, resp_size;

static uint64_t served;
static bool first_reported;
static uint64_t generation;         /* 0: a cold boot */
static bool gen_checked;            /* since ready: the golden snapshot has it false */
static uint64_t resets_seen;
static bool cmds_done;              /* the host said no command can ever come */
static bool cmd_maybe_missed;

static void run_command(const char *cmd);

/* ---- little-endian fields -------------------------------------------------------- */

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

static const char *err_name(long e)
{
	switch (e) {
	case -ECONNREFUSED: return "connection refused";
	case -ECONNRESET: return "connection reset";
	case -ETIMEDOUT: return "timed out";
	case -ENOSPC: return "no free connection";
	case -EPIPE: return "broken pipe";
	case -EPROTO: return "protocol error";
	case -ENODEV: return "no virtio-vsock device";
	case -EBADF: return "bad connection";
	case -ENODATA: return "end of stream";
	default: return "error";
	}
}

/* ---- idling: host commands and restores ---------------------------------------------- */

static void poll_commands(void)
{
	char cmd[EMBER_UCALL_DATA_MAX];
	int n;

	cmd_maybe_missed = false;
	while (!cmds_done && (n = guest_poll_cmd(cmd, sizeof(cmd))) != -EAGAIN) {
		if (n == -ENODATA)
			cmds_done = true;
		else
			run_command(cmd);
	}
}

/*
 * A restore shows as a TRANSPORT_RESET (every connection reset) and a new VM
 * generation. Reading the generation costs two exits, so it is read once after
 * ready (the first thing a restored clone does) and after each transport reset.
 */
static void check_restore(void)
{
	uint64_t resets = vsock_get_stats()->transport_resets, gen;

	if (gen_checked && resets == resets_seen)
		return;
	gen_checked = true;
	gen = guest_generation();
	if (gen != generation) {
		/* Take the restore's TRANSPORT_RESET before anything uses vsock (a command's
		 * dial): one that arrives later would reset the new connection. */
		if (resets == resets_seen && !vsock_await_reset(resets_seen, RESET_WAIT_US))
			guest_print("fn: no TRANSPORT_RESET within %u ms of the restore\n",
				    RESET_WAIT_US / 1000);
		resets = vsock_get_stats()->transport_resets;
		generation = gen;
		guest_print("fn: restored generation=%016lx\n", gen);
		first_reported = false; /* each clone reports its own first response */
		cmds_done = false;      /* a new ember process: maybe new commands */
	}
	resets_seen = resets;
	poll_commands();
}

/*
 * Nothing to do on vsock: wait for the device or a host command. A park wake is
 * shared by both, so a wake that brought vsock work may also have been a command's:
 * after one, the next idle park is bounded (CMD_RECHECK_US) and followed by a poll.
 */
static void idle(void)
{
	uint64_t parks = vsock_get_stats()->parks;
	uint64_t deadline = cmd_maybe_missed && !cmds_done ? deadline_after(CMD_RECHECK_US)
							   : GUEST_FOREVER;

	if (vsock_wait(deadline)) {
		if (vsock_get_stats()->parks != parks)
			cmd_maybe_missed = true;
		return;
	}
	poll_commands();
}

/* len bytes, or fewer at end of stream, or a negative error (reset). */
static long read_full(int c, uint8_t *buf, uint64_t len)
{
	uint64_t got = 0;

	while (got < len) {
		long n = vsock_read(c, buf + got, len - got, 0);

		if (n > 0)
			got += (uint64_t)n;
		else if (n == 0)
			break;
		else if (n == -EAGAIN)
			idle();
		else
			return n;
	}
	return (long)got;
}

static long write_all(int c, const uint8_t *buf, uint64_t len)
{
	uint64_t put = 0;

	while (put < len) {
		long n = vsock_write(c, buf + put, len - put, 0);

		if (n > 0)
			put += (uint64_t)n;
		else if (n == -EAGAIN)
			idle();
		else
			return n;
	}
	return (long)put;
}

/* ---- the functions: each writes its response payload at out, returns its length ---- */

/* __builtin_memcpy: -ffreestanding turns plain memcpy into a call per word */
static void xor_bytes(uint8_t *dst, const uint8_t *a, const uint8_t *b, uint64_t n)
{
	uint64_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t x, y;

		__builtin_memcpy(&x, a + i, 8);
		__builtin_memcpy(&y, b + i, 8);
		x ^= y;
		__builtin_memcpy(dst + i, &x, 8);
	}
	for (; i < n; i++)
		dst[i] = a[i] ^ b[i];
}

static uint64_t fn_mix(const uint8_t *p, uint64_t n, uint8_t *out)
{
	uint64_t key = hash64(p, n, MIX_SEED), start = key % heap.pages, d = key;
	uint64_t touched = n ? (n + PAGE_SIZE - 1) / PAGE_SIZE : 1, pos, i = 0;

	for (uint64_t k = 0; k < touched; k++)
		d = hash64(heap.base + ((start + k) % heap.pages) * PAGE_SIZE, PAGE_SIZE, d);
	le_put(out, d, 8);
	pos = start * PAGE_SIZE;
	while (i < n) {
		uint64_t chunk = heap.size - pos < n - i ? heap.size - pos : n - i;

		xor_bytes(out + 8 + i, p + i, heap.base + pos, chunk);
		i += chunk;
		pos = 0;
	}
	return 8 + n;
}

static uint64_t fn_sink(const uint8_t *p, uint64_t n, uint8_t *out)
{
	le_put(out, n, 8);
	le_put(out + 8, hash64(p, n, 0), 8);
	return 16;
}

static uint64_t fn_source(uint64_t n_out, uint8_t *out)
{
	for (uint64_t i = 0; i < n_out;) {
		uint64_t chunk = heap.size < n_out - i ? heap.size : n_out - i;

		memcpy(out + i, heap.base, chunk);
		i += chunk;
	}
	return n_out;
}

static uint64_t fn_sleep(uint64_t ms, uint8_t *out)
{
	uint64_t deadline = deadline_after(ms * 1000);

	/* vsock_wait returns on any device activity: wait again until the deadline */
	while (deadline_left(deadline))
		vsock_wait(deadline);
	le_put(out, ms, 8);
	return 8;
}

/* ---- requests ----------------------------------------------------------------------- */

/* Sends the response whose payload is already at resp_buf + HDR_SIZE. */
static bool respond(int c, uint64_t id, enum status st, uint64_t len, uint32_t port,
		    uint64_t req_len)
{
	uint8_t *h = resp_buf;

	le_put(h, MAGIC_RESPONSE, 4);
	le_put(h + 4, 1, 2);
	le_put(h + 6, st, 2);
	le_put(h + 8, id, 8);
	le_put(h + 16, len, 4);
	le_put(h + 20, 0, 4);
	if (write_all(c, resp_buf, HDR_SIZE + len) < 0)
		return false;
	served++;
	if (!first_reported) {
		first_reported = true; /* the host marks "first-response" here */
		guest_report("invoke", port, req_len, st, len);
	}
	return true;
}

static bool respond_msg(int c, uint64_t id, enum status st, uint32_t port, uint64_t req_len,
			const char *fmt, ...) printf_like(6, 7);

static bool respond_msg(int c, uint64_t id, enum status st, uint32_t port, uint64_t req_len,
			const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = fmt_vsnprintf((char *)resp_buf + HDR_SIZE, MSG_MAX, fmt, ap);
	va_end(ap);
	if (n >= MSG_MAX)
		n = MSG_MAX - 1;
	return respond(c, id, st, (uint64_t)n, port, req_len);
}

/* One request whose header was read; false when the connection must close. */
static bool handle_request(int c, uint32_t port, const uint8_t *hdr)
{
	uint32_t magic = (uint32_t)le_get(hdr, 4), plen = (uint32_t)le_get(hdr + 16, 4);
	uint16_t version = (uint16_t)le_get(hdr + 4, 2), flags = (uint16_t)le_get(hdr + 6, 2);
	uint32_t reserved = (uint32_t)le_get(hdr + 20, 4);
	uint64_t id = le_get(hdr + 8, 8), len;
	uint8_t *out = resp_buf + HDR_SIZE;
	enum function f = (enum function)(port - base_port);

	/* the framing cannot be trusted after these three: answer, then close */
	if (magic != MAGIC_REQUEST) {
		respond_msg(c, id, ST_BAD_REQUEST, port, plen,
			    "bad magic 0x%08x: not an EMBQ request", magic);
		return false;
	}
	if (version != 1) {
		respond_msg(c, id, ST_UNSUPPORTED_VERSION, port, plen,
			    "version %u is not supported (this agent speaks 1)", version);
		return false;
	}
	if (flags || reserved) {
		respond_msg(c, id, ST_BAD_REQUEST, port, plen,
			    "flags (0x%x) and reserved (0x%x) must be 0 in version 1", flags,
			    reserved);
		return false;
	}
	if (plen > max_payload) {
		/* read and discard, so the stream stays framed */
		for (uint64_t left = plen; left;) {
			uint64_t chunk = left < req_size ? left : req_size;

			if (read_full(c, req_buf, chunk) != (long)chunk)
				return false;
			left -= chunk;
		}
		return respond_msg(c, id, ST_TOO_LARGE, port, plen,
				   "payload_len %u exceeds max_payload %lu", plen, max_payload);
	}
	if (read_full(c, req_buf, plen) != (long)plen)
		return false; /* end of stream or reset inside the request: abandon it */

	switch (f) {
	case FN_MIX:
		if (8 + (uint64_t)plen > PROTO_MAX_PAYLOAD)
			return respond_msg(c, id, ST_FUNCTION_ERROR, port, plen,
					   "mix: the response (8 + %u bytes) would exceed 16 MiB",
					   plen);
		len = fn_mix(req_buf, plen, out);
		break;
	case FN_SINK:
		len = fn_sink(req_buf, plen, out);
		break;
	case FN_SOURCE: {
		uint64_t n;

		if (plen != 8)
			return respond_msg(c, id, ST_FUNCTION_ERROR, port, plen,
					   "source: the payload must be 8 bytes (le64 N), not %u",
					   plen);
		n = le_get(req_buf, 8);
		if (n > max_payload)
			return respond_msg(c, id, ST_FUNCTION_ERROR, port, plen,
					   "source: N=%lu exceeds max_payload %lu", n,
					   max_payload);
		len = fn_source(n, out);
		break;
	}
	case FN_SLEEP: {
		uint64_t ms;

		if (plen != 8)
			return respond_msg(c, id, ST_FUNCTION_ERROR, port, plen,
					   "sleep: the payload must be 8 bytes (le64 ms), not %u",
					   plen);
		ms = le_get(req_buf, 8);
		if (ms > SLEEP_MAX_MS)
			return respond_msg(c, id, ST_FUNCTION_ERROR, port, plen,
					   "sleep: %lu ms is more than %u", ms, SLEEP_MAX_MS);
		len = fn_sleep(ms, out);
		break;
	}
	default:
		return respond_msg(c, id, ST_FUNCTION_ERROR, port, plen,
				   "no function on port %u", port);
	}
	return respond(c, id, ST_OK, len, port, plen);
}

static void serve_conn(int c)
{
	struct vsock_conn_info info;
	uint8_t hdr[HDR_SIZE];

	vsock_conn_info(c, &info);
	while (read_full(c, hdr, HDR_SIZE) == HDR_SIZE && handle_request(c, info.local_port, hdr))
		;
	vsock_close(c);
}

/* ---- host commands ------------------------------------------------------------------- */

/* Reads up to a newline (not kept) or the end of the stream; the line's length, or
 * -ENODATA (nothing before the end), -ETIMEDOUT, -ECONNRESET. */
static long read_line(int c, char *line, size_t size, uint64_t deadline)
{
	size_t got = 0;

	while (got + 1 < size) {
		long n = vsock_read(c, line + got, 1, deadline_left(deadline));

		if (n == -EAGAIN)
			n = -ETIMEDOUT; /* deadline_left() reached 0: "do not wait" */
		if (n <= 0) {
			if (!got)
				return n ? n : -ENODATA;
			break; /* a last line without its newline */
		}
		if (line[got] == '\n')
			break;
		got++;
	}
	line[got] = 0;
	return (long)got;
}

static void dial(const char *arg)
{
	uint64_t port, deadline = deadline_after(DIAL_TIMEOUT_US);
	char msg[64], line[DIAL_LINE_MAX];
	long r;
	int c, n;

	if (parse_u64_suffix(arg, strlen(arg), &port) || port >= VSOCK_PORT_ANY) {
		guest_print("dial: error bad port '%s'\n", arg);
		return;
	}
	c = vsock_connect(EMBER_VSOCK_HOST_CID, (uint32_t)port, DIAL_TIMEOUT_US);
	if (c < 0) {
		guest_print("dial: error connect: %s (%d)\n", err_name(c), c);
		return;
	}
	n = fmt_snprintf(msg, sizeof(msg), "hello from fn %016lx\n", guest_generation());
	r = vsock_write(c, msg, (size_t)n, deadline_left(deadline));
	if (r != n) {
		guest_print("dial: error write: %s (%ld)\n", err_name(r), r);
	} else {
		r = read_line(c, line, sizeof(line), deadline);
		if (r < 0)
			guest_print("dial: error read: %s (%ld)\n", err_name(r), r);
		else
			guest_print("dial: %s\n", line);
	}
	vsock_close(c);
}

static void print_stats(void)
{
	const struct vsock_stats *s = vsock_get_stats();

	guest_print("fn: served=%lu resets=%lu\n", served, s->transport_resets);
	guest_print("fn: vsock rx_pkts=%lu tx_pkts=%lu rx_bytes=%lu tx_bytes=%lu kicks=%lu "
		    "parks=%lu dropped=%lu rst_rx=%lu rst_tx=%lu credit_updates=%lu "
		    "credit_requests=%lu\n", s->rx_pkts, s->tx_pkts, s->rx_bytes, s->tx_bytes,
		    s->kicks, s->parks, s->dropped, s->rst_rx, s->rst_tx, s->credit_updates_tx,
		    s->credit_requests_tx);
}

/* Entropy from the host, as a restored guest re-seeds (FORMAT.md section 11). */
static void print_rng(void)
{
	uint8_t b[32];
	long n = rng_read(b, sizeof(b));
	char hex[2 * sizeof(b) + 1];

	if (n != (long)sizeof(b)) {
		guest_print("rng: error %ld\n", n);
		return;
	}
	for (unsigned i = 0; i < sizeof(b); i++)
		fmt_snprintf(hex + 2 * i, 3, "%02x", b[i]);
	guest_print("rng=%s\n", hex);
}

static void listen_all(void)
{
	for (unsigned f = 0; f < FN_COUNT; f++) {
		int r = vsock_listen(base_port + f);

		GUEST_ASSERT_MSG(r == 0, "fn: listen on port %u: %d", base_port + f, r);
	}
}

/* A driver reset, as a guest's vsock module reload does: ember drops what it knew. */
static void reinit(void)
{
	int r = vsock_init();

	GUEST_ASSERT_MSG(r == 0, "fn: vsock re-init failed: %d", r);
	listen_all();
	guest_print("fn: vsock reinit\n");
}

static void run_command(const char *cmd)
{
	if (!strcmp(cmd, "verify"))
		guest_print("checksum=%016lx\n", heap_checksum(&heap));
	else if (!strcmp(cmd, "generation"))
		guest_print("generation=%016lx\n", guest_generation());
	else if (!strcmp(cmd, "stats"))
		print_stats();
	else if (!strcmp(cmd, "rng"))
		print_rng();
	else if (!strcmp(cmd, "reinit"))
		reinit();
	else if (!strncmp(cmd, "dial ", 5))
		dial(cmd + 5);
	else if (!strcmp(cmd, "exit"))
		guest_reset();
	else
		guest_print("fn: unknown command: %s\n", cmd);
}

/* ---- init ---------------------------------------------------------------------------- */

/* Request and response buffers right after the heap, in RAM below 4 GiB. */
static void place_buffers(void)
{
	uint64_t start = (uint64_t)(uintptr_t)heap.base + heap.size, end, ram_end;
	uint64_t resp_payload = 8 + max_payload;

	if (resp_payload < MSG_MAX)
		resp_payload = MSG_MAX;
	req_size = ALIGN_UP(max_payload ? max_payload : PAGE_SIZE, PAGE_SIZE);
	resp_size = ALIGN_UP(HDR_SIZE + resp_payload, PAGE_SIZE);
	end = start + req_size + resp_size;
	ram_end = e820_ram_end(start);
	GUEST_ASSERT_MSG(end <= GUEST_MAPPED_END && ram_end >= end,
			 "fn: max_payload=%lu: the request and response buffers need [0x%lx, "
			 "0x%lx) but RAM there ends at 0x%lx (give ember more --mem, or a smaller "
			 "heap= or max_payload=)", max_payload, start, end, ram_end);
	req_buf = (uint8_t *)(uintptr_t)start;
	resp_buf = req_buf + req_size;
}

static void config_read(void)
{
	uint64_t port = cmdline_u64_or("port", DEFAULT_PORT);

	heap_config(&heap);
	max_payload = cmdline_u64_or("max_payload", DEFAULT_MAX_PAYLOAD);
	GUEST_ASSERT_MSG(max_payload <= PROTO_MAX_PAYLOAD,
			 "max_payload=%lu is above the protocol's 16 MiB", max_payload);
	GUEST_ASSERT_MSG(port + FN_COUNT - 1 < VSOCK_PORT_ANY,
			 "port=%lu: ports port..port+3 must be below 0xffffffff", port);
	base_port = (uint32_t)port;
}

void guest_main(void)
{
	int r;

	config_read();
	heap_place(&heap);
	heap_build(&heap);
	place_buffers();
	guest_print("fn: heap=%lu seed=%lu heap_at=0x%lx port=%u max_payload=%lu\n", heap.size,
		    heap.seed, (uint64_t)(uintptr_t)heap.base, base_port, max_payload);
	guest_print("checksum=%016lx\n", heap_checksum(&heap));

	/* the driver is set up in the golden snapshot: a clone's first read is one request */
	r = rng_init();
	GUEST_ASSERT_MSG(r == 0, "fn: no virtio-rng device: %d", r);
	r = vsock_init();
	GUEST_ASSERT_MSG(r != -ENODEV, "fn: no virtio-vsock device found (boot ember with "
			 "--vsock-cid N --vsock-uds PATH; the command line has no usable "
			 "virtio_mmio.device= entry for device id 19)");
	GUEST_ASSERT_MSG(r == 0, "fn: virtio-vsock setup failed: %d (boot with virtio_debug "
			 "for a register trace)", r);
	listen_all();
	guest_ready(); /* the golden snapshot: heap built, listeners up */

	for (;;) {
		int c;

		check_restore();
		c = vsock_accept(VSOCK_PORT_ANY, 0);
		if (c >= 0)
			serve_conn(c);
		else
			idle();
	}
}
