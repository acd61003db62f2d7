/*
 * ember pool: N standby VMs of one snapshot behind one Unix socket (INVOCATION.md 7).
 *
 * One VM per process, as Firecracker does: every VM is an `ember restore --standby`
 * child of this process (its own executable), so an escape from one VMM does not reach
 * another tenant's VM. This process never opens /dev/kvm. A child reports ready on a
 * pipe (--ready-fd); the pool resumes it and opens the vsock connection to the guest's
 * agent ahead of time ("pre-connected"), so an invocation costs only the request and
 * the response. After each invocation the VM is put back to the golden snapshot in
 * place (the control socket's `reset`) before anyone else gets it; after --max-uses
 * invocations, or on any error, it is retired and a replacement spawned in the
 * background.
 *
 * Everything runs on one single-threaded epoll loop: non-blocking sockets,
 * edge-triggered events, no sleeps. A *progress* function per client and per VM does
 * every read and write it can until the kernel says EAGAIN, so an event only has to
 * say "look again"; nothing is ever skipped for want of an event. Objects closed while
 * a batch of events is being handled are freed after the batch.
 *
 * Children's stdout goes to /dev/null, their stderr to vm-<id>.log in the private run
 * directory; when a child fails, the tail of its log is copied to the pool's stderr.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <msgpack.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pool.h"
#include "snapfmt.h"

#define RELAY_SIZE         (64u << 10) /* per VM and direction */
#define CTL_RESP_MAX       4096        /* a child's answers to resume/reset/shutdown */
#define LINE_MAX_BYTES     32          /* "ready pid=N\n", "OK <port>\n" */
#define START_TIMEOUT_MS   30000       /* spawn to ready */
#define CTL_TIMEOUT_MS     10000       /* resume, reset */
#define CONNECT_TIMEOUT_MS 5000        /* ember answers CONNECT within 2 s itself */
#define RETIRE_TIMEOUT_MS  5000        /* shutdown to exit, then SIGKILL */
#define BACKOFF_MIN_MS     100
#define BACKOFF_MAX_MS     5000
#define LOG_TAIL           1024
#define LOG_WINDOW_MS      10000       /* at most LOG_BURST failure reports per window: */
#define LOG_BURST          20          /* a crash loop must not flood (or block) stderr */
#define MAX_EVENTS         64

enum vm_state {
	VM_STARTING,   /* spawned; waiting for its ready line */
	VM_RESUMING,   /* control socket connected, `resume` sent */
	VM_CONNECTING, /* "CONNECT <port>" sent to its vsock socket */
	VM_IDLE,       /* pre-connected, waiting for an invocation */
	VM_BUSY,       /* relaying an invocation */
	VM_RESETTING,  /* `reset` sent */
	VM_RETIRING,   /* asked to exit or killed; waiting to reap it */
};

static const char *const vm_state_names[] = {
	[VM_STARTING] = "starting", [VM_RESUMING] = "starting", [VM_CONNECTING] = "starting",
	[VM_IDLE] = "idle",         [VM_BUSY] = "busy",         [VM_RESETTING] = "resetting",
	[VM_RETIRING] = "retiring",
};

enum tag_kind { T_LISTEN, T_SIGNAL, T_READY, T_CTL, T_CONN, T_CLIENT };

/* epoll's data.ptr: which object an event is for */
struct tag {
	enum tag_kind kind;
	void *owner;
};

/* a byte queue: [start, end) of buf are waiting to be written on */
struct relay {
	uint8_t *buf;
	size_t start, end;
};

struct client;

struct pool_vm {
	struct pool_vm *next;              /* every VM not yet freed */
	unsigned id;
	pid_t pid;
	enum vm_state state;
	bool reaped, expect_exit, ever_idle, dead;
	int ready_fd, ctl_fd, conn_fd;
	struct tag t_ready, t_ctl, t_conn;
	char ctl_path[108], uds_path[108], log_path[PATH_MAX];
	uint64_t deadline_ns;         /* of the current state; 0: none */
	uint64_t uses;
	uint64_t op_start_ns;         /* the reset's */
	char line[LINE_MAX_BYTES];    /* the ready line, the OK line */
	size_t line_len;
	uint8_t ctl_out[64];          /* one request frame */
	size_t ctl_out_len, ctl_out_off;
	uint8_t ctl_in[4 + CTL_RESP_MAX];
	size_t ctl_in_len;
	/* the invocation */
	struct client *client;
	struct relay req, resp;       /* client -> guest, guest -> client */
	uint64_t req_left;            /* payload bytes still to read from the client */
	uint8_t resp_hdr[INVOKE_HDR_SIZE];
	size_t resp_hdr_len;
	uint64_t resp_left;           /* payload bytes still to read from the guest */
	uint16_t resp_status;
};

enum client_state {
	C_HEADER,   /* reading a frame's start */
	C_CONTROL,  /* reading a control request's body */
	C_QUEUED,   /* an invocation waiting for a VM */
	C_INVOKING, /* its VM relays it */
	C_DISCARD,  /* dropping a payload before the reply */
	C_REPLY,    /* writing a reply the pool made */
};

struct client {
	struct client *next, *prev;   /* every client; */
	struct client *q_next;        /* the queue */
	int fd;
	struct tag tag;
	enum client_state state;
	bool dead, close_after;
	uint8_t hdr[INVOKE_HDR_SIZE];
	size_t hdr_len;
	struct pool_req req;
	uint64_t start_ns, queue_deadline_ns;
	uint8_t *body;                /* a control request */
	size_t body_len, body_got;
	uint64_t discard_left;
	uint8_t *out;                 /* the reply */
	size_t out_len, out_off;
	struct pool_vm *vm;
};

struct pool {
	/* configuration */
	const char *snapshot, *socket_path;
	unsigned size, queue_max;
	uint64_t max_uses, timeout_ms;
	uint32_t max_payload, port;
	/* state */
	int epfd, listen_fd, sig_fd, null_fd;
	struct tag t_listen, t_signal;
	char run_dir[PATH_MAX];
	bool draining, forced, fatal;
	unsigned next_id;
	struct pool_vm *vms;
	struct pool_vm *idle[POOL_MAX_SIZE];
	unsigned nr_idle;
	struct client *clients;
	unsigned nr_clients;
	struct client *q_head, *q_tail;
	unsigned nr_queued;
	struct pool_vm *dead_vms;
	struct client *dead_clients;
	unsigned start_failures;      /* consecutive, since the last VM became idle */
	bool any_idle_ever;
	uint64_t backoff_until_ns;
	uint64_t start_ns;
	uint64_t log_window_ns;
	unsigned log_count, log_suppressed;
	/* counters (struct pool_status) */
	uint64_t invocations_ok, invocations_error, invocations_unavailable, invocations_aborted;
	uint64_t rejected_busy, rejected_invalid, rejected_shutting_down;
	uint64_t resets, reset_failures, spawned, spawn_failures, retired, crashes, killed;
	uint64_t respawned, timeouts;
	struct pool_samples latency, reset;
};

static uint8_t scratch[RELAY_SIZE]; /* discarded bytes land here */

/* ---- small helpers ---------------------------------------------------------------- */

static uint64_t now_ns(void)
{
	return invoke_clock_ns();
}

static uint64_t after_ms(uint64_t ms)
{
	return now_ns() + ms * 1000000ull;
}

static int ep_add(struct pool *p, int fd, struct tag *t)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
				  .data.ptr = t };

	return epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static bool again(void)
{
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- forward declarations: clients and VMs call each other --------------------------- */

static void client_progress(struct pool *p, struct client *c);
static void client_close(struct pool *p, struct client *c);
static void vm_progress(struct pool *p, struct pool_vm *vm);
/* Why a VM is given up on: one counter each (struct pool_status). */
enum fail_kind {
	FAIL_START, /* it never became idle: spawn_failures, with back-off */
	FAIL_CRASH, /* it died or broke the protocol in service: crashes */
	FAIL_HANG,  /* it did not answer in time and was killed: killed */
	FAIL_RESET, /* its reset failed: reset_failures */
};
static void vm_fail(struct pool *p, struct pool_vm *vm, enum fail_kind kind, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void refill(struct pool *p);

/* ---- replies the pool makes ------------------------------------------------------------ */

/* Queues a reply; the client writes it in C_REPLY after discarding discard bytes. */
static void client_reply(struct pool *p, struct client *c, uint8_t *out, size_t len,
			 uint64_t discard, bool close_after)
{
	if (!out) {
		client_close(p, c);
		return;
	}
	free(c->out);
	c->out = out;
	c->out_len = len;
	c->out_off = 0;
	c->discard_left = discard;
	c->close_after = c->close_after || close_after;
	c->state = discard ? C_DISCARD : C_REPLY;
}

static void reply_status(struct pool *p, struct client *c, uint16_t status, uint64_t id,
			 uint64_t discard, bool close_after, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));
static void reply_status(struct pool *p, struct client *c, uint16_t status, uint64_t id,
			 uint64_t discard, bool close_after, const char *fmt, ...)
{
	uint8_t *out = malloc(INVOKE_HDR_SIZE + INVOKE_MESSAGE_MAX);
	va_list ap;
	int n;

	if (out) {
		va_start(ap, fmt);
		n = vsnprintf((char *)out + INVOKE_HDR_SIZE, INVOKE_MESSAGE_MAX, fmt, ap);
		va_end(ap);
		if (n < 0)
			n = 0;
		if (n >= INVOKE_MESSAGE_MAX)
			n = INVOKE_MESSAGE_MAX - 1;
		invoke_put_response_header(out, status, id, (uint32_t)n);
		n += INVOKE_HDR_SIZE;
	}
	client_reply(p, c, out, out ? (size_t)n : 0, discard, close_after);
}

/* A control response: msgpack body in buf (malloc'd), framed here. */
static void reply_control(struct pool *p, struct client *c, uint8_t *body, size_t len,
			  bool close_after)
{
	uint8_t *out = body ? malloc(4 + len) : NULL;

	if (out) {
		put_be32(out, (uint32_t)len);
		memcpy(out + 4, body, len);
	}
	free(body);
	client_reply(p, c, out, 4 + len, 0, close_after);
}

static void reply_control_error(struct pool *p, struct client *c, const struct api_request *rq,
				const char *msg, bool close_after)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, rq && rq->has_id ? 3 : 2);
	msgpack_pack_str(&pk, 2);
	msgpack_pack_str_body(&pk, "ok", 2);
	msgpack_pack_false(&pk);
	msgpack_pack_str(&pk, 5);
	msgpack_pack_str_body(&pk, "error", 5);
	msgpack_pack_str(&pk, strlen(msg));
	msgpack_pack_str_body(&pk, msg, strlen(msg));
	if (rq && rq->has_id) {
		msgpack_pack_str(&pk, 2);
		msgpack_pack_str_body(&pk, "id", 2);
		msgpack_pack_uint64(&pk, rq->id);
	}
	reply_control(p, c, (uint8_t *)sb.data, sb.size, close_after);
}

/* ---- the status request ----------------------------------------------------------------- */

static void reply_pool_status(struct pool *p, struct client *c)
{
	struct pool_vm_info info[2 * POOL_MAX_SIZE + 16];
	struct pool_status st = {
		.state = p->draining ? "draining" : "serving",
		.size = p->size, .max_uses = p->max_uses, .queue_max = p->queue_max,
		.timeout_ms = p->timeout_ms, .max_payload = p->max_payload, .port = p->port,
		.queued = p->nr_queued, .clients = p->nr_clients,
		.uptime_us = (now_ns() - p->start_ns) / 1000,
		.invocations_ok = p->invocations_ok, .invocations_error = p->invocations_error,
		.invocations_unavailable = p->invocations_unavailable,
		.invocations_aborted = p->invocations_aborted,
		.rejected_busy = p->rejected_busy, .rejected_invalid = p->rejected_invalid,
		.rejected_shutting_down = p->rejected_shutting_down,
		.resets = p->resets, .reset_failures = p->reset_failures, .spawned = p->spawned,
		.spawn_failures = p->spawn_failures, .retired = p->retired, .crashes = p->crashes,
		.killed = p->killed, .respawned = p->respawned, .timeouts = p->timeouts,
		.latency = &p->latency, .reset = &p->reset, .vms = info,
	};
	uint8_t *body;
	size_t len;

	for (struct pool_vm *vm = p->vms; vm; vm = vm->next) {
		switch (vm->state) {
		case VM_STARTING:
		case VM_RESUMING:
		case VM_CONNECTING:
			st.starting++;
			break;
		case VM_IDLE:
			st.idle++;
			break;
		case VM_BUSY:
			st.busy++;
			break;
		case VM_RESETTING:
			st.resetting++;
			break;
		case VM_RETIRING:
			st.retiring++;
			break;
		}
		if (st.nr_vms < ARRAY_SIZE(info))
			info[st.nr_vms++] = (struct pool_vm_info){ .id = vm->id, .pid = vm->pid,
				.state = vm_state_names[vm->state], .uses = vm->uses };
	}
	body = pool_status_encode(&st, &len);
	reply_control(p, c, body, len, false);
}

static void handle_control(struct pool *p, struct client *c)
{
	struct api_request rq;
	struct errbuf eb = { "" };

	if (api_decode_request(c->body, c->body_len, &rq, &eb))
		reply_control_error(p, c, NULL, eb.msg, false);
	else if (strcmp(rq.verb, "status"))
		reply_control_error(p, c, &rq, "unknown verb: an ember pool answers 'status'",
				    false);
	else
		reply_pool_status(p, c);
	free(c->body);
	c->body = NULL;
}

/* ---- the queue ---------------------------------------------------------------------- */

static void queue_push(struct pool *p, struct client *c)
{
	c->q_next = NULL;
	if (p->q_tail)
		p->q_tail->q_next = c;
	else
		p->q_head = c;
	p->q_tail = c;
	p->nr_queued++;
	c->state = C_QUEUED;
	c->queue_deadline_ns = after_ms(p->timeout_ms);
}

static struct client *queue_pop(struct pool *p)
{
	struct client *c = p->q_head;

	if (!c)
		return NULL;
	p->q_head = c->q_next;
	if (!p->q_head)
		p->q_tail = NULL;
	p->nr_queued--;
	c->q_next = NULL;
	return c;
}

static void queue_remove(struct pool *p, struct client *c)
{
	struct client **pp = &p->q_head, *prev = NULL;

	for (; *pp; prev = *pp, pp = &(*pp)->q_next) {
		if (*pp != c)
			continue;
		*pp = c->q_next;
		if (p->q_tail == c)
			p->q_tail = prev;
		p->nr_queued--;
		c->q_next = NULL;
		return;
	}
}

/* ---- invocations ----------------------------------------------------------------------- */

static void assign(struct pool *p, struct pool_vm *vm, struct client *c)
{
	vm->state = VM_BUSY;
	vm->client = c;
	vm->uses++;
	vm->deadline_ns = after_ms(p->timeout_ms);
	/* the header goes to the guest as the client sent it: the pool checked it */
	memcpy(vm->req.buf, c->hdr, INVOKE_HDR_SIZE);
	vm->req.start = 0;
	vm->req.end = INVOKE_HDR_SIZE;
	vm->req_left = c->req.len;
	vm->resp.start = vm->resp.end = 0;
	vm->resp_hdr_len = 0;
	vm->resp_left = 0;
	c->vm = vm;
	c->state = C_INVOKING;
	c->hdr_len = 0;
}

static struct pool_vm *take_idle(struct pool *p)
{
	return p->nr_idle ? p->idle[--p->nr_idle] : NULL;
}

static void drop_idle(struct pool *p, struct pool_vm *vm)
{
	for (unsigned i = 0; i < p->nr_idle; i++) {
		if (p->idle[i] == vm) {
			p->idle[i] = p->idle[--p->nr_idle];
			return;
		}
	}
}

/* An invocation whose header arrived: to a VM, into the queue, or BUSY. */
static void dispatch(struct pool *p, struct client *c)
{
	struct pool_vm *vm = take_idle(p);

	if (vm) {
		assign(p, vm, c);
		vm_progress(p, vm);
		return;
	}
	if (p->nr_queued < p->queue_max) {
		queue_push(p, c);
		return;
	}
	p->rejected_busy++;
	reply_status(p, c, INVOKE_BUSY, c->req.id, c->req.len, false,
		     "the pool is busy: all %u VMs are in use and %u invocations are waiting "
		     "(--queue %u); try again later", p->size, p->nr_queued, p->queue_max);
}

/* A VM became idle: the queue's head gets it. */
static void vm_idle(struct pool *p, struct pool_vm *vm)
{
	struct client *c = queue_pop(p);

	vm->state = VM_IDLE;
	vm->deadline_ns = 0;
	if (!vm->ever_idle) {
		vm->ever_idle = true;
		p->any_idle_ever = true;
		p->start_failures = 0;
	}
	if (!c) {
		p->idle[p->nr_idle++] = vm;
		return;
	}
	assign(p, vm, c);
	vm_progress(p, vm);
}

/* ---- VM control requests ----------------------------------------------------------------- */

static void ctl_send(struct pool *p, struct pool_vm *vm, const char *verb)
{
	size_t vlen = strlen(verb);
	uint8_t *b = vm->ctl_out + 4;

	/* {"verb": verb}: fixmap 1, fixstr "verb", fixstr verb (< 32 bytes) */
	b[0] = 0x81;
	b[1] = 0xa4;
	memcpy(b + 2, "verb", 4);
	b[6] = (uint8_t)(0xa0 | vlen);
	memcpy(b + 7, verb, vlen);
	put_be32(vm->ctl_out, (uint32_t)(7 + vlen));
	vm->ctl_out_len = 4 + 7 + vlen;
	vm->ctl_out_off = 0;
	vm->ctl_in_len = 0;
}

/* Writes what is pending and reads a whole response: 1 with *ok (and the error in
 * err), 0 not yet, -1 the connection failed. */
static int ctl_io(struct pool_vm *vm, bool *ok, char *err, size_t errcap)
{
	while (vm->ctl_out_off < vm->ctl_out_len) {
		ssize_t n = send(vm->ctl_fd, vm->ctl_out + vm->ctl_out_off,
				 vm->ctl_out_len - vm->ctl_out_off, MSG_NOSIGNAL);

		if (n < 0)
			return again() ? 0 : -1;
		vm->ctl_out_off += (size_t)n;
	}
	for (;;) {
		size_t want = 4;
		ssize_t n;

		if (vm->ctl_in_len >= 4) {
			uint32_t flen = get_be32(vm->ctl_in);

			if (flen == 0 || flen > CTL_RESP_MAX)
				return -1; /* a frame we will not take */
			want = 4 + flen;
			if (vm->ctl_in_len == want)
				break;
		}
		n = recv(vm->ctl_fd, vm->ctl_in + vm->ctl_in_len, want - vm->ctl_in_len, 0);
		if (n == 0)
			return -1;
		if (n < 0)
			return again() ? 0 : -1;
		vm->ctl_in_len += (size_t)n;
	}
	{
		/* a VM process is not trusted: bounds first, as for any msgpack from outside */
		msgpack_unpacked u;
		struct snap_err se;
		size_t off = 0;

		*ok = false;
		snprintf(err, errcap, "(no message)");
		if (snap_msgpack_precheck(vm->ctl_in + 4, vm->ctl_in_len - 4, &se)) {
			snprintf(err, errcap, "malformed answer: %.200s", se.msg);
			vm->ctl_in_len = 0;
			return 1;
		}
		msgpack_unpacked_init(&u);
		if (msgpack_unpack_next(&u, (const char *)vm->ctl_in + 4, vm->ctl_in_len - 4, &off) ==
		    MSGPACK_UNPACK_SUCCESS) {
			const msgpack_object *o = snap_map_get(&u.data, "ok");
			const msgpack_object *e = snap_map_get(&u.data, "error");

			*ok = o && o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean;
			if (e && e->type == MSGPACK_OBJECT_STR)
				invoke_escape(e->via.str.ptr, e->via.str.size, err, errcap);
		}
		msgpack_unpacked_destroy(&u);
	}
	vm->ctl_in_len = 0;
	return 1;
}

/* ---- VM lifecycle ----------------------------------------------------------------------- */

static void vm_connect_guest(struct pool *p, struct pool_vm *vm)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char line[LINE_MAX_BYTES];
	int n;

	strcpy(sa.sun_path, vm->uds_path);
	vm->conn_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (vm->conn_fd < 0 || connect(vm->conn_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		vm_fail(p, vm, vm->ever_idle ? FAIL_CRASH : FAIL_START,
			"connecting to its vsock socket %s: %s",
			vm->uds_path, strerror(errno));
		return;
	}
	n = invoke_format_connect(p->port, line, sizeof(line));
	/* a fresh socket's buffer takes a line: no partial writes */
	if (send(vm->conn_fd, line, (size_t)n, MSG_NOSIGNAL) != n ||
	    ep_add(p, vm->conn_fd, &vm->t_conn)) {
		vm_fail(p, vm, vm->ever_idle ? FAIL_CRASH : FAIL_START,
			"sending 'CONNECT %" PRIu32 "': %s", p->port,
			strerror(errno));
		return;
	}
	vm->line_len = 0;
	vm->state = VM_CONNECTING;
	vm->deadline_ns = after_ms(CONNECT_TIMEOUT_MS);
}

static void vm_connect_ctl(struct pool *p, struct pool_vm *vm)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	strcpy(sa.sun_path, vm->ctl_path);
	vm->ctl_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (vm->ctl_fd < 0 || connect(vm->ctl_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    ep_add(p, vm->ctl_fd, &vm->t_ctl)) {
		vm_fail(p, vm, FAIL_START, "connecting to its control socket %s: %s", vm->ctl_path,
			strerror(errno));
		return;
	}
	ctl_send(p, vm, "resume");
	vm->state = VM_RESUMING;
	vm->deadline_ns = after_ms(CTL_TIMEOUT_MS);
	vm_progress(p, vm);
}

/* Asks a VM to exit (or kills it when it cannot be asked); it is reaped later. */
static void vm_retire(struct pool *p, struct pool_vm *vm)
{
	if (vm->state == VM_IDLE)
		drop_idle(p, vm);
	close_fd(&vm->conn_fd);
	close_fd(&vm->ready_fd);
	vm->expect_exit = true;
	vm->state = VM_RETIRING;
	vm->deadline_ns = after_ms(RETIRE_TIMEOUT_MS);
	if (vm->ctl_fd >= 0 && !vm->reaped) {
		ctl_send(p, vm, "shutdown");
		vm_progress(p, vm);
	} else if (!vm->reaped) {
		kill(vm->pid, SIGKILL);
	}
	refill(p);
}

/* Whether a failure may be reported now (LOG_BURST per LOG_WINDOW_MS). */
static bool log_allowed(struct pool *p)
{
	uint64_t now = now_ns();

	if (now >= p->log_window_ns) {
		if (p->log_suppressed)
			pr_warn("pool: %u failure reports suppressed in the last %d s",
				p->log_suppressed, LOG_WINDOW_MS / 1000);
		p->log_window_ns = now + LOG_WINDOW_MS * 1000000ull;
		p->log_count = 0;
		p->log_suppressed = 0;
	}
	if (p->log_count < LOG_BURST) {
		p->log_count++;
		return true;
	}
	p->log_suppressed++;
	return false;
}

/* The pool's stderr gets the last lines a failed child wrote. */
static void print_log_tail(const struct pool_vm *vm)
{
	char buf[LOG_TAIL + 1], *line, *save = NULL;
	int fd = open(vm->log_path, O_RDONLY | O_CLOEXEC);
	off_t end;
	ssize_t n;

	if (fd < 0)
		return;
	end = lseek(fd, 0, SEEK_END);
	n = pread(fd, buf, LOG_TAIL, end > LOG_TAIL ? end - LOG_TAIL : 0);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	line = end > LOG_TAIL ? strchr(buf, '\n') : buf; /* skip a cut first line */
	for (line = line ? strtok_r(line, "\n", &save) : NULL; line;
	     line = strtok_r(NULL, "\n", &save))
		pr_warn("pool: vm %u: | %s", vm->id, line);
}

/* The client of a VM that failed mid-invocation. */
static void fail_client(struct pool *p, struct pool_vm *vm, const char *why)
{
	struct client *c = vm->client;

	vm->client = NULL;
	if (!c)
		return;
	c->vm = NULL;
	p->invocations_unavailable++;
	if (vm->resp_hdr_len == INVOKE_HDR_SIZE) {
		/* part of the response is on its way: the framing is lost */
		client_close(p, c);
		return;
	}
	reply_status(p, c, INVOKE_UNAVAILABLE, c->req.id, vm->req_left, p->draining,
		     "the VM running this invocation failed (%s); the pool replaced it", why);
	client_progress(p, c);
}

/*
 * Something went wrong with a VM: it is killed (whatever it was doing), its client
 * gets UNAVAILABLE, and a replacement is spawned. Counted once, as kind says.
 */
static void vm_fail(struct pool *p, struct pool_vm *vm, enum fail_kind kind, const char *fmt, ...)
{
	char why[400];
	va_list ap;

	if (vm->state == VM_RETIRING && vm->expect_exit)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (log_allowed(p)) {
		pr_warn("pool: vm %u (pid %d): %s", vm->id, (int)vm->pid, why);
		print_log_tail(vm);
	}
	switch (kind) {
	case FAIL_START: {
		unsigned shift = p->start_failures < 6 ? p->start_failures : 6;
		uint64_t ms = (uint64_t)BACKOFF_MIN_MS << shift;

		p->spawn_failures++;
		p->start_failures++;
		p->backoff_until_ns = after_ms(ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS);
		break;
	}
	case FAIL_CRASH:
		p->crashes++;
		break;
	case FAIL_HANG:
		p->killed++;
		break;
	case FAIL_RESET:
		p->reset_failures++;
		break;
	}
	if (kind != FAIL_START && !p->draining)
		p->respawned++;
	fail_client(p, vm, why);
	if (vm->state == VM_IDLE)
		drop_idle(p, vm);
	close_fd(&vm->conn_fd);
	close_fd(&vm->ctl_fd);
	close_fd(&vm->ready_fd);
	vm->expect_exit = true;
	vm->state = VM_RETIRING;
	vm->deadline_ns = 0;
	if (!vm->reaped)
		kill(vm->pid, SIGKILL);
	if (!p->any_idle_ever && p->start_failures >= (p->size > 3 ? p->size : 3)) {
		pr_err("pool: %u VMs in a row failed to start and none ever did: giving up (is %s "
		       "a snapshot of a guest that listens on vsock port %" PRIu32 "?)",
		       p->start_failures, p->snapshot, p->port);
		p->fatal = true;
	}
	refill(p);
}

/* The invocation is over (its response relayed, or its client gone): reset the VM. */
static void vm_release(struct pool *p, struct pool_vm *vm)
{
	vm->client = NULL;
	close_fd(&vm->conn_fd); /* the guest sees a reset; `reset` closes the rest */
	if (p->draining || (p->max_uses && vm->uses >= p->max_uses)) {
		if (!p->draining)
			p->retired++;
		vm_retire(p, vm);
		return;
	}
	ctl_send(p, vm, "reset");
	vm->state = VM_RESETTING;
	vm->op_start_ns = now_ns();
	vm->deadline_ns = after_ms(CTL_TIMEOUT_MS);
	vm_progress(p, vm);
}

/* ---- relaying an invocation --------------------------------------------------------------- */

static void finish_invocation(struct pool *p, struct pool_vm *vm)
{
	struct client *c = vm->client;

	pool_samples_add(&p->latency, (now_ns() - c->start_ns) / 1000);
	if (vm->resp_status == INVOKE_OK)
		p->invocations_ok++;
	else
		p->invocations_error++;
	c->vm = NULL;
	/* request bytes the guest did not wait for must not be read as the next frame */
	c->discard_left = vm->req_left;
	c->state = c->discard_left ? C_DISCARD : C_HEADER;
	if (p->draining)
		c->close_after = true;
	vm_release(p, vm);
	client_progress(p, c);
}

/* The client went away or broke the protocol mid-invocation. */
static void abort_invocation(struct pool *p, struct pool_vm *vm)
{
	struct client *c = vm->client;

	p->invocations_aborted++;
	c->vm = NULL;
	client_close(p, c);
	vm_release(p, vm);
}

static size_t space(const struct relay *r)
{
	return RELAY_SIZE - r->end;
}

/* Moves bytes both ways until nothing moves. Returns when the VM is done or failed. */
static void relay(struct pool *p, struct pool_vm *vm)
{
	struct client *c = vm->client;
	struct errbuf eb = { "" };
	bool moved = true;
	ssize_t n;

	while (moved) {
		moved = false;
		/* client -> request buffer */
		if (vm->req.start == vm->req.end)
			vm->req.start = vm->req.end = 0;
		while (vm->req_left && space(&vm->req)) {
			size_t want = space(&vm->req) < vm->req_left ? space(&vm->req) : vm->req_left;

			n = recv(c->fd, vm->req.buf + vm->req.end, want, 0);
			if (n == 0 || (n < 0 && !again())) {
				abort_invocation(p, vm);
				return;
			}
			if (n < 0)
				break;
			vm->req.end += (size_t)n;
			vm->req_left -= (uint64_t)n;
			moved = true;
		}
		/* request buffer -> guest */
		while (vm->req.start < vm->req.end) {
			n = send(vm->conn_fd, vm->req.buf + vm->req.start, vm->req.end - vm->req.start,
				 MSG_NOSIGNAL);
			if (n < 0 && !again()) {
				vm_fail(p, vm, FAIL_CRASH, "the guest's connection failed while it was sent "
					"the request: %s", strerror(errno));
				return;
			}
			if (n < 0)
				break;
			vm->req.start += (size_t)n;
			moved = true;
		}
		/* guest -> response buffer: the header first, checked */
		if (vm->resp.start == vm->resp.end)
			vm->resp.start = vm->resp.end = 0;
		while (vm->resp_hdr_len < INVOKE_HDR_SIZE) {
			uint32_t len;

			n = recv(vm->conn_fd, vm->resp_hdr + vm->resp_hdr_len,
				 INVOKE_HDR_SIZE - vm->resp_hdr_len, 0);
			if (n == 0 || (n < 0 && !again())) {
				vm_fail(p, vm, FAIL_CRASH, "the guest closed the connection before it "
					"answered (%zu of %d header bytes)", vm->resp_hdr_len,
					INVOKE_HDR_SIZE);
				return;
			}
			if (n < 0)
				break;
			vm->resp_hdr_len += (size_t)n;
			moved = true;
			if (vm->resp_hdr_len < INVOKE_HDR_SIZE)
				continue;
			if (invoke_check_response_header(vm->resp_hdr, c->req.id,
							 INVOKE_UNSUPPORTED_VERSION, &vm->resp_status,
							 &len, &eb)) {
				vm->resp_hdr_len = 0; /* nothing went to the client yet */
				vm_fail(p, vm, FAIL_CRASH, "the guest sent a %s", eb.msg);
				return;
			}
			vm->resp_left = len;
			memcpy(vm->resp.buf + vm->resp.end, vm->resp_hdr, INVOKE_HDR_SIZE);
			vm->resp.end += INVOKE_HDR_SIZE;
		}
		while (vm->resp_hdr_len == INVOKE_HDR_SIZE && vm->resp_left && space(&vm->resp)) {
			size_t want = space(&vm->resp) < vm->resp_left ? space(&vm->resp)
								       : vm->resp_left;

			n = recv(vm->conn_fd, vm->resp.buf + vm->resp.end, want, 0);
			if (n == 0 || (n < 0 && !again())) {
				vm_fail(p, vm, FAIL_CRASH, "the guest closed the connection in the middle "
					"of its response (%" PRIu64 " bytes missing)", vm->resp_left);
				return;
			}
			if (n < 0)
				break;
			vm->resp.end += (size_t)n;
			vm->resp_left -= (uint64_t)n;
			moved = true;
		}
		/* response buffer -> client */
		while (vm->resp.start < vm->resp.end) {
			n = send(c->fd, vm->resp.buf + vm->resp.start, vm->resp.end - vm->resp.start,
				 MSG_NOSIGNAL);
			if (n < 0 && !again()) {
				abort_invocation(p, vm);
				return;
			}
			if (n < 0)
				break;
			vm->resp.start += (size_t)n;
			moved = true;
		}
		if (vm->resp_hdr_len == INVOKE_HDR_SIZE && !vm->resp_left &&
		    vm->resp.start == vm->resp.end) {
			finish_invocation(p, vm);
			return;
		}
	}
}

/* ---- VM events ------------------------------------------------------------------------------ */

static void vm_progress_ready(struct pool *p, struct pool_vm *vm)
{
	for (;;) {
		ssize_t n = read(vm->ready_fd, vm->line + vm->line_len,
				 sizeof(vm->line) - 1 - vm->line_len);

		if (n < 0 && again())
			return;
		if (n <= 0) {
			vm_fail(p, vm, FAIL_START, "exited before it was ready");
			return;
		}
		vm->line_len += (size_t)n;
		vm->line[vm->line_len] = 0;
		if (strchr(vm->line, '\n'))
			break;
		if (vm->line_len == sizeof(vm->line) - 1) {
			vm_fail(p, vm, FAIL_START, "wrote a malformed ready line");
			return;
		}
	}
	if (strncmp(vm->line, "ready", 5)) {
		vm_fail(p, vm, FAIL_START, "wrote a malformed ready line");
		return;
	}
	close_fd(&vm->ready_fd);
	vm_connect_ctl(p, vm);
}

static void vm_progress_ok_line(struct pool *p, struct pool_vm *vm)
{
	uint32_t host_port;

	for (;;) {
		ssize_t n = recv(vm->conn_fd, vm->line + vm->line_len,
				 sizeof(vm->line) - vm->line_len, 0);

		if (n < 0 && again())
			return;
		if (n <= 0) {
			vm_fail(p, vm, vm->ever_idle ? FAIL_CRASH : FAIL_START,
				"ember closed the vsock connection without "
				"answering 'CONNECT %" PRIu32 "': does the guest listen on that port?",
				p->port);
			return;
		}
		vm->line_len += (size_t)n;
		if (memchr(vm->line, '\n', vm->line_len))
			break;
		if (vm->line_len == sizeof(vm->line)) {
			vm_fail(p, vm, vm->ever_idle ? FAIL_CRASH : FAIL_START,
				"ember's answer to CONNECT has no newline");
			return;
		}
	}
	/* the guest says nothing before a request: the line must be all there is */
	if (invoke_parse_ok_line(vm->line, vm->line_len, &host_port)) {
		vm_fail(p, vm, vm->ever_idle ? FAIL_CRASH : FAIL_START,
			"ember answered 'CONNECT %" PRIu32 "' with "
			"something other than 'OK <port>'", p->port);
		return;
	}
	vm_idle(p, vm);
}

/* An idle guest has nothing to say: data or a close means it is broken. */
static void vm_progress_idle(struct pool *p, struct pool_vm *vm)
{
	uint8_t b;
	ssize_t n = recv(vm->conn_fd, &b, 1, 0);

	if (n < 0 && again())
		return;
	vm_fail(p, vm, FAIL_CRASH, n == 0 ? "the guest closed its idle connection"
			       : n > 0 ? "the guest sent bytes nobody asked for"
				       : "its idle connection failed");
}

static void vm_progress_ctl(struct pool *p, struct pool_vm *vm)
{
	char err[256];
	bool ok;
	int r = ctl_io(vm, &ok, err, sizeof(err));

	if (r == 0)
		return;
	if (vm->state == VM_RETIRING) {
		/* it answered `shutdown` or it is going: either way, wait for its exit */
		close_fd(&vm->ctl_fd);
		return;
	}
	if (r < 0) {
		vm_fail(p, vm, vm->state == VM_RESUMING ? FAIL_START
			: vm->state == VM_RESETTING ? FAIL_RESET : FAIL_CRASH,
			"its control socket closed");
		return;
	}
	if (vm->state == VM_RESUMING) {
		if (!ok) {
			vm_fail(p, vm, FAIL_START, "resume failed: %s", err);
			return;
		}
		vm_connect_guest(p, vm);
	} else if (vm->state == VM_RESETTING) {
		if (!ok) {
			vm_fail(p, vm, FAIL_RESET, "reset failed: %s", err);
			return;
		}
		p->resets++;
		pool_samples_add(&p->reset, (now_ns() - vm->op_start_ns) / 1000);
		vm_connect_guest(p, vm);
	}
}

static void vm_progress(struct pool *p, struct pool_vm *vm)
{
	if (vm->dead)
		return;
	switch (vm->state) {
	case VM_STARTING:
		vm_progress_ready(p, vm);
		break;
	case VM_RESUMING:
	case VM_RESETTING:
	case VM_RETIRING:
		if (vm->ctl_fd >= 0)
			vm_progress_ctl(p, vm);
		break;
	case VM_CONNECTING:
		vm_progress_ok_line(p, vm);
		break;
	case VM_IDLE:
		vm_progress_idle(p, vm);
		break;
	case VM_BUSY:
		relay(p, vm);
		break;
	}
}

/* Its deadline passed. */
static void vm_timeout(struct pool *p, struct pool_vm *vm)
{
	vm->deadline_ns = 0;
	switch (vm->state) {
	case VM_STARTING:
		vm_fail(p, vm, FAIL_START, "not ready within %d ms", START_TIMEOUT_MS);
		break;
	case VM_RESUMING:
		vm_fail(p, vm, FAIL_START, "no answer to resume within %d ms", CTL_TIMEOUT_MS);
		break;
	case VM_RESETTING:
		vm_fail(p, vm, FAIL_HANG, "no answer to reset within %d ms", CTL_TIMEOUT_MS);
		break;
	case VM_CONNECTING:
		vm_fail(p, vm, vm->ever_idle ? FAIL_HANG : FAIL_START,
			"no answer to 'CONNECT %" PRIu32 "' within %d ms", p->port,
			CONNECT_TIMEOUT_MS);
		break;
	case VM_BUSY:
		p->timeouts++;
		if ((vm->req.start == vm->req.end && vm->req_left) ||
		    vm->resp.start < vm->resp.end) {
			/* the client is the slow one: it does not send, or does not read */
			pr_warn("pool: vm %u: its client did not keep up within --timeout-ms %" PRIu64
				"; closing the client", vm->id, p->timeout_ms);
			abort_invocation(p, vm);
			break;
		}
		vm_fail(p, vm, FAIL_HANG, "the function did not answer within --timeout-ms %"
			PRIu64, p->timeout_ms);
		break;
	case VM_RETIRING:
		if (!vm->reaped)
			kill(vm->pid, SIGKILL);
		break;
	case VM_IDLE:
		break;
	}
}

/* ---- spawning ------------------------------------------------------------------------------- */

static int vm_paths(struct pool *p, struct pool_vm *vm)
{
	int a = snprintf(vm->ctl_path, sizeof(vm->ctl_path), "%s/vm-%u.ctl", p->run_dir, vm->id);
	/* ember binds the vsock socket's PATH_<port> too: keep room for 11 bytes */
	int b = snprintf(vm->uds_path, sizeof(vm->uds_path) - 11, "%s/vm-%u.vsock", p->run_dir,
			 vm->id);
	int c = snprintf(vm->log_path, sizeof(vm->log_path), "%s/vm-%u.log", p->run_dir, vm->id);

	return a >= (int)sizeof(vm->ctl_path) || b >= (int)sizeof(vm->uds_path) - 11 ||
	       c >= (int)sizeof(vm->log_path) ? -ENAMETOOLONG : 0;
}

/* fork, not posix_spawn: the child must die with the pool (PR_SET_PDEATHSIG), so a
 * pool that is killed never leaves VMs behind. */
static pid_t spawn_child(struct pool *p, struct pool_vm *vm, int ready_w, int log_fd)
{
	char *argv[] = {
		"ember", "restore", "--snapshot", (char *)p->snapshot, "--standby",
		"--api-sock", vm->ctl_path, "--vsock-uds", vm->uds_path, "--console", "none",
		"--ready-fd", "3", NULL,
	};
	pid_t parent = getpid(), pid;
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigset_t none;

	sigemptyset(&none);
	pid = fork();
	if (pid != 0)
		return pid;
	/* the child: async-signal-safe calls only */
	sigaction(SIGPIPE, &dfl, NULL);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != parent)
		_exit(127);
	if (dup2(p->null_fd, 0) < 0 || dup2(p->null_fd, 1) < 0 || dup2(log_fd, 2) < 0)
		_exit(127);
	if (ready_w == 3 ? fcntl(3, F_SETFD, 0) : dup2(ready_w, 3) < 0)
		_exit(127);
#ifdef SYS_close_range
	syscall(SYS_close_range, 4u, ~0u, 0u);
#endif
	execv("/proc/self/exe", argv);
	_exit(127);
}

static void spawn_vm(struct pool *p)
{
	struct pool_vm *vm = calloc(1, sizeof(*vm));
	int pipefd[2] = { -1, -1 }, log_fd = -1;

	if (!vm || !(vm->req.buf = malloc(RELAY_SIZE)) || !(vm->resp.buf = malloc(RELAY_SIZE))) {
		pr_err("pool: out of memory for a VM");
		goto fail;
	}
	vm->id = ++p->next_id;
	vm->ready_fd = vm->ctl_fd = vm->conn_fd = -1;
	vm->t_ready = (struct tag){ T_READY, vm };
	vm->t_ctl = (struct tag){ T_CTL, vm };
	vm->t_conn = (struct tag){ T_CONN, vm };
	if (vm_paths(p, vm)) {
		pr_err("pool: the run directory's path %s is too long for Unix sockets", p->run_dir);
		p->fatal = true;
		goto fail;
	}
	log_fd = open(vm->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	if (log_fd < 0 || pipe2(pipefd, O_CLOEXEC | O_NONBLOCK)) {
		pr_err("pool: spawning a VM: %s", strerror(errno));
		goto fail;
	}
	/* the child's end blocks: ember writes one line there */
	fcntl(pipefd[1], F_SETFL, 0);
	vm->pid = spawn_child(p, vm, pipefd[1], log_fd);
	if (vm->pid < 0) {
		pr_err("pool: fork: %s", strerror(errno));
		goto fail;
	}
	close(pipefd[1]);
	close(log_fd);
	vm->ready_fd = pipefd[0];
	vm->state = VM_STARTING;
	vm->deadline_ns = after_ms(START_TIMEOUT_MS);
	vm->next = p->vms;
	p->vms = vm;
	p->spawned++;
	if (ep_add(p, vm->ready_fd, &vm->t_ready))
		vm_fail(p, vm, FAIL_START, "epoll: %s", strerror(errno));
	return;
fail:
	close_fd(&pipefd[0]);
	close_fd(&pipefd[1]);
	close_fd(&log_fd);
	if (vm) {
		free(vm->req.buf);
		free(vm->resp.buf);
		if (vm->log_path[0])
			unlink(vm->log_path);
	}
	free(vm);
	p->spawn_failures++;
	p->start_failures++;
	p->backoff_until_ns = after_ms(BACKOFF_MAX_MS);
}

/* Keeps `size` VMs that are not retiring, unless draining or backing off. */
static void refill(struct pool *p)
{
	unsigned live = 0;

	if (p->draining || p->fatal || now_ns() < p->backoff_until_ns)
		return;
	for (struct pool_vm *vm = p->vms; vm; vm = vm->next)
		live += vm->state != VM_RETIRING;
	while (live++ < p->size && !p->fatal && now_ns() >= p->backoff_until_ns)
		spawn_vm(p);
}

/* A child exited. */
static void vm_reaped(struct pool *p, struct pool_vm *vm, int status)
{
	char how[64];

	vm->reaped = true;
	if (WIFSIGNALED(status))
		snprintf(how, sizeof(how), "was killed by signal %d", WTERMSIG(status));
	else
		snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
	if (!vm->expect_exit)
		vm_fail(p, vm, vm->state == VM_STARTING || vm->state == VM_RESUMING ||
			(vm->state == VM_CONNECTING && !vm->ever_idle) ? FAIL_START
			: vm->state == VM_RESETTING ? FAIL_RESET : FAIL_CRASH, "%s", how);
	/* unlink first: the entry is taken out of p->vms and freed after the batch */
	for (struct pool_vm **pp = &p->vms; *pp; pp = &(*pp)->next) {
		if (*pp == vm) {
			*pp = vm->next;
			break;
		}
	}
	close_fd(&vm->ctl_fd);
	close_fd(&vm->conn_fd);
	close_fd(&vm->ready_fd);
	unlink(vm->log_path);
	unlink(vm->ctl_path);
	unlink(vm->uds_path);
	vm->dead = true;
	vm->next = p->dead_vms;
	p->dead_vms = vm;
	refill(p);
}

static void reap_children(struct pool *p)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (struct pool_vm *vm = p->vms; vm; vm = vm->next) {
			if (vm->pid == pid) {
				vm_reaped(p, vm, status);
				break;
			}
		}
	}
}

/* ---- clients ----------------------------------------------------------------------------- */

static void client_close(struct pool *p, struct client *c)
{
	if (c->dead)
		return;
	if (c->state == C_QUEUED)
		queue_remove(p, c);
	if (c->vm) {
		/* its VM relays for nobody now */
		struct pool_vm *vm = c->vm;

		c->vm = NULL;
		vm->client = NULL;
		p->invocations_aborted++;
		vm_release(p, vm);
	}
	close_fd(&c->fd);
	free(c->body);
	free(c->out);
	c->body = NULL;
	c->out = NULL;
	if (c->prev)
		c->prev->next = c->next;
	else
		p->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	p->nr_clients--;
	c->dead = true;
	c->next = p->dead_clients;
	p->dead_clients = c;
}

/* A frame's start arrived: a control request or an invocation header. */
static void client_frame(struct pool *p, struct client *c)
{
	if (pool_frame_is_control(c->hdr[0])) {
		uint32_t len = get_be32(c->hdr);
		size_t have = c->hdr_len - 4, take;

		if (len == 0 || len > API_MAX_FRAME) {
			reply_control_error(p, c, NULL, "frame length must be 1..65536 bytes", true);
			return;
		}
		c->body = malloc(len);
		if (!c->body) {
			client_close(p, c);
			return;
		}
		take = have < len ? have : len;
		memcpy(c->body, c->hdr + 4, take);
		c->body_len = len;
		c->body_got = take;
		/* bytes past this frame are the next one's start */
		memmove(c->hdr, c->hdr + 4 + take, have - take);
		c->hdr_len = have - take;
		c->state = C_CONTROL;
		return;
	}
	c->hdr_len = 0;
	pool_check_request(c->hdr, p->max_payload, &c->req);
	if (c->req.status != INVOKE_OK) {
		p->rejected_invalid++;
		reply_status(p, c, c->req.status, c->req.id, c->req.discard ? c->req.len : 0,
			     c->req.close, "%s", c->req.msg);
		return;
	}
	if (p->draining) {
		p->rejected_shutting_down++;
		reply_status(p, c, INVOKE_SHUTTING_DOWN, c->req.id, c->req.len, true,
			     "the pool is shutting down");
		return;
	}
	c->start_ns = now_ns();
	dispatch(p, c);
}

static void client_progress(struct pool *p, struct client *c)
{
	for (;;) {
		ssize_t n;

		if (c->dead)
			return;
		switch (c->state) {
		case C_HEADER: {
			bool control = c->hdr_len && pool_frame_is_control(c->hdr[0]);
			size_t need = control ? 4 : INVOKE_HDR_SIZE;

			if (c->close_after && !c->hdr_len) {
				client_close(p, c); /* draining: no frame in progress */
				return;
			}
			if (c->hdr_len >= need) {
				client_frame(p, c);
				continue;
			}
			n = recv(c->fd, c->hdr + c->hdr_len, INVOKE_HDR_SIZE - c->hdr_len, 0);
			if (n < 0 && again())
				return;
			if (n <= 0) {
				client_close(p, c); /* a client that leaves between frames */
				return;
			}
			c->hdr_len += (size_t)n;
			continue;
		}
		case C_CONTROL:
			if (c->body_got == c->body_len) {
				handle_control(p, c);
				continue;
			}
			n = recv(c->fd, c->body + c->body_got, c->body_len - c->body_got, 0);
			if (n < 0 && again())
				return;
			if (n <= 0) {
				client_close(p, c);
				return;
			}
			c->body_got += (size_t)n;
			continue;
		case C_QUEUED:
		case C_INVOKING:
			return; /* its VM moves its bytes */
		case C_DISCARD:
			if (!c->discard_left) {
				c->state = c->out ? C_REPLY : C_HEADER;
				continue;
			}
			n = recv(c->fd, scratch, c->discard_left < sizeof(scratch) ? c->discard_left
										  : sizeof(scratch), 0);
			if (n < 0 && again())
				return;
			if (n <= 0) {
				client_close(p, c);
				return;
			}
			c->discard_left -= (uint64_t)n;
			continue;
		case C_REPLY:
			if (c->out_off == c->out_len) {
				free(c->out);
				c->out = NULL;
				if (c->close_after) {
					client_close(p, c);
					return;
				}
				c->state = C_HEADER;
				continue;
			}
			n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
			if (n < 0 && again())
				return;
			if (n < 0) {
				client_close(p, c);
				return;
			}
			c->out_off += (size_t)n;
			continue;
		}
	}
}

static void client_event(struct pool *p, struct client *c, uint32_t events)
{
	if (c->state == C_QUEUED) {
		/* a client that hung up entirely cannot read its answer; one that only shut
		 * down its writing side can (its request is complete) */
		if (events & (EPOLLHUP | EPOLLERR))
			client_close(p, c);
		return;
	}
	if (c->state == C_INVOKING) {
		vm_progress(p, c->vm);
		return;
	}
	client_progress(p, c);
}

static void accept_clients(struct pool *p)
{
	for (;;) {
		int fd = accept4(p->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct client *c;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return; /* EAGAIN; or EMFILE and friends: the next event retries */
		}
		if (p->nr_clients >= POOL_MAX_CLIENTS || !(c = calloc(1, sizeof(*c)))) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->tag = (struct tag){ T_CLIENT, c };
		c->state = C_HEADER;
		if (ep_add(p, fd, &c->tag)) {
			close(fd);
			free(c);
			continue;
		}
		c->next = p->clients;
		if (p->clients)
			p->clients->prev = c;
		p->clients = c;
		p->nr_clients++;
		client_progress(p, c);
	}
}

/* ---- draining ------------------------------------------------------------------------------ */

static void start_drain(struct pool *p)
{
	struct client *c, *next;

	if (p->draining)
		return;
	p->draining = true;
	pr_info("pool: draining: %u invocations in flight", p->size - p->nr_idle);
	close_fd(&p->listen_fd);
	unlink(p->socket_path);
	while ((c = queue_pop(p))) {
		p->rejected_shutting_down++;
		reply_status(p, c, INVOKE_SHUTTING_DOWN, c->req.id, c->req.len, true,
			     "the pool is shutting down");
		client_progress(p, c);
	}
	for (c = p->clients; c; c = next) {
		next = c->next;
		if (c->state == C_HEADER && c->hdr_len == 0)
			client_close(p, c);
		else if (c->state != C_INVOKING)
			c->close_after = true;
	}
	for (struct pool_vm *vm = p->vms; vm; vm = vm->next)
		if (vm->state != VM_BUSY && vm->state != VM_RETIRING)
			vm_retire(p, vm);
}

/* A second signal: nothing more is waited for. */
static void force_stop(struct pool *p)
{
	p->forced = true;
	while (p->clients)
		client_close(p, p->clients);
	for (struct pool_vm *vm = p->vms; vm; vm = vm->next) {
		if (!vm->reaped)
			kill(vm->pid, SIGKILL);
		vm->expect_exit = true;
		vm->state = VM_RETIRING;
		vm->deadline_ns = 0;
	}
}

static void handle_signals(struct pool *p)
{
	struct signalfd_siginfo si;

	while (read(p->sig_fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGCHLD) {
			reap_children(p);
		} else if (!p->draining) {
			pr_warn("pool: signal %u: draining (a second one stops at once)", si.ssi_signo);
			start_drain(p);
		} else if (!p->forced) {
			pr_warn("pool: signal %u again: killing every VM", si.ssi_signo);
			force_stop(p);
		}
	}
	reap_children(p); /* SIGCHLDs coalesce */
}

/* ---- the loop -------------------------------------------------------------------------------- */

static int next_timeout_ms(struct pool *p)
{
	uint64_t next = UINT64_MAX, now = now_ns();

	for (struct pool_vm *vm = p->vms; vm; vm = vm->next)
		if (vm->deadline_ns && vm->deadline_ns < next)
			next = vm->deadline_ns;
	if (p->q_head && p->q_head->queue_deadline_ns < next)
		next = p->q_head->queue_deadline_ns;
	if (p->backoff_until_ns > now && !p->draining && p->backoff_until_ns < next)
		next = p->backoff_until_ns;
	if (next == UINT64_MAX)
		return -1;
	if (next <= now)
		return 0;
	return (int)((next - now + 999999) / 1000000);
}

static void check_deadlines(struct pool *p)
{
	uint64_t now = now_ns();
	struct client *c;

	for (struct pool_vm *vm = p->vms, *next; vm; vm = next) {
		next = vm->next;
		if (vm->deadline_ns && vm->deadline_ns <= now)
			vm_timeout(p, vm);
	}
	while ((c = p->q_head) && c->queue_deadline_ns <= now) {
		queue_pop(p);
		p->invocations_unavailable++;
		reply_status(p, c, INVOKE_UNAVAILABLE, c->req.id, c->req.len, false,
			     "no VM became free within --timeout-ms %" PRIu64, p->timeout_ms);
		client_progress(p, c);
	}
	refill(p);
}

static void free_dead(struct pool *p)
{
	while (p->dead_clients) {
		struct client *c = p->dead_clients;

		p->dead_clients = c->next;
		free(c);
	}
	while (p->dead_vms) {
		struct pool_vm *vm = p->dead_vms;

		p->dead_vms = vm->next;
		free(vm->req.buf);
		free(vm->resp.buf);
		free(vm);
	}
}

static void loop(struct pool *p)
{
	struct epoll_event ev[MAX_EVENTS];

	while (!p->fatal && (!p->draining || p->vms || p->clients)) {
		int n = epoll_wait(p->epfd, ev, MAX_EVENTS, next_timeout_ms(p));

		if (n < 0 && errno != EINTR) {
			pr_err("pool: epoll_wait: %s", strerror(errno));
			p->fatal = true;
			break;
		}
		for (int i = 0; i < n; i++) {
			struct tag *t = ev[i].data.ptr;

			switch (t->kind) {
			case T_LISTEN:
				if (p->listen_fd >= 0)
					accept_clients(p);
				break;
			case T_SIGNAL:
				handle_signals(p);
				break;
			case T_CLIENT:
				if (!((struct client *)t->owner)->dead)
					client_event(p, t->owner, ev[i].events);
				break;
			case T_READY:
			case T_CTL:
			case T_CONN:
				vm_progress(p, t->owner);
				break;
			}
		}
		check_deadlines(p);
		free_dead(p);
	}
}

/* ---- set-up and teardown ------------------------------------------------------------------ */

/* Binds path mode 0600; refuses to replace a live socket, replaces a stale one. */
static int listen_at(const char *path, struct errbuf *eb)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return errbuf_set(eb, -ENAMETOOLONG, "--socket %s: longer than a Unix socket path "
				  "can be (%zu bytes)", path, sizeof(sa.sun_path) - 1);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errbuf_set(eb, -errno, "socket: %s", strerror(errno));
	if (lstat(path, &st) == 0) {
		int probe;

		if (!S_ISSOCK(st.st_mode)) {
			close(fd);
			return errbuf_set(eb, -EEXIST, "--socket %s: exists and is not a socket", path);
		}
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(probe);
			close(fd);
			return errbuf_set(eb, -EADDRINUSE, "--socket %s: something is serving there "
					  "(another pool?); not replacing it", path);
		}
		if (probe >= 0)
			close(probe);
		unlink(path); /* stale: nobody listens */
	}
	old = umask(0177); /* no window in which the socket is more open than 0600 */
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r || chmod(path, 0600) || listen(fd, 128)) {
		r = errbuf_set(eb, -errno, "--socket %s: %s", path, strerror(errno));
		close(fd);
		return r;
	}
	return fd;
}

static void remove_run_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (d) {
		while ((e = readdir(d)))
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
				unlinkat(dirfd(d), e->d_name, 0);
		closedir(d);
	}
	rmdir(dir);
}

static int setup(struct pool *p, struct errbuf *eb)
{
	const char *tmp = getenv("TMPDIR");
	struct rlimit rl;
	struct stat st;
	sigset_t mask;

	/* fds 0-2 open, so that no socket or pipe of ours lands there */
	for (;;) {
		int fd = open("/dev/null", O_RDWR);

		if (fd > 2)
			close(fd);
		if (fd < 0 || fd > 2)
			break;
	}
	if (stat(p->snapshot, &st) || !S_ISDIR(st.st_mode))
		return errbuf_set(eb, -ENOENT, "--snapshot %s: not a directory", p->snapshot);
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	snprintf(p->run_dir, sizeof(p->run_dir), "%s/ember-pool.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(p->run_dir)) {
		p->run_dir[0] = 0;
		return errbuf_set(eb, -errno, "creating the run directory: %s", strerror(errno));
	}
	p->null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	p->epfd = epoll_create1(EPOLL_CLOEXEC);
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	p->sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (p->null_fd < 0 || p->epfd < 0 || p->sig_fd < 0)
		return errbuf_set(eb, -errno, "set-up: %s", strerror(errno));
	p->listen_fd = listen_at(p->socket_path, eb);
	if (p->listen_fd < 0)
		return p->listen_fd;
	p->t_listen = (struct tag){ T_LISTEN, NULL };
	p->t_signal = (struct tag){ T_SIGNAL, NULL };
	if (ep_add(p, p->listen_fd, &p->t_listen) || ep_add(p, p->sig_fd, &p->t_signal))
		return errbuf_set(eb, -errno, "epoll: %s", strerror(errno));
	return 0;
}

static void teardown(struct pool *p, bool listening)
{
	/* whatever is left (a fatal error): kill and reap it */
	for (struct pool_vm *vm = p->vms; vm; vm = vm->next)
		if (!vm->reaped)
			kill(vm->pid, SIGKILL);
	for (struct pool_vm *vm = p->vms; vm; vm = vm->next)
		if (!vm->reaped)
			waitpid(vm->pid, NULL, 0);
	while (p->vms) {
		struct pool_vm *vm = p->vms;

		p->vms = vm->next;
		close_fd(&vm->ctl_fd);
		close_fd(&vm->conn_fd);
		close_fd(&vm->ready_fd);
		free(vm->req.buf);
		free(vm->resp.buf);
		free(vm);
	}
	while (p->clients)
		client_close(p, p->clients);
	free_dead(p);
	if (listening) {
		close_fd(&p->listen_fd);
		unlink(p->socket_path);
	}
	if (p->run_dir[0])
		remove_run_dir(p->run_dir);
	close_fd(&p->sig_fd);
	close_fd(&p->epfd);
	close_fd(&p->null_fd);
}

int pool_run(const struct cli *c)
{
	struct pool *p = calloc(1, sizeof(*p));
	struct errbuf eb = { "" };
	int status;

	if (!p) {
		pr_err("pool: out of memory");
		return 1;
	}
	*p = (struct pool){
		.snapshot = c->snapshot, .socket_path = c->pool_socket, .size = c->pool_size,
		.queue_max = c->pool_queue, .max_uses = c->pool_max_uses,
		.timeout_ms = c->pool_timeout_ms, .max_payload = c->pool_max_payload,
		.port = c->invoke_port, .epfd = -1, .listen_fd = -1, .sig_fd = -1, .null_fd = -1,
		.start_ns = now_ns(),
	};
	if (setup(p, &eb)) {
		pr_err("pool: %s", eb.msg);
		teardown(p, false);
		free(p);
		return 1;
	}
	fprintf(stderr, "ember pool: serving %s: %u VMs of %s (run directory %s)\n",
		p->socket_path, p->size, p->snapshot, p->run_dir);
	refill(p);
	loop(p);
	status = p->fatal || p->forced ? 1 : 0;
	teardown(p, true);
	free(p);
	return status;
}
