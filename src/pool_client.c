/*
 * The pool's connections (pool_int.h): frames as they arrive (an invocation header or a
 * control request), the replies the pool makes itself, the queue of invocations
 * waiting for a VM, and the relay that moves one invocation's bytes between its
 * client and its VM.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <msgpack.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pool_int.h"
#include "snapfmt.h"

static uint8_t scratch[RELAY_SIZE]; /* discarded bytes land here */

/* ---- replies the pool makes ------------------------------------------------------------ */

/* Queues a reply; the client writes it in C_REPLY after discarding discard bytes. */
static void client_reply(struct pool *p, struct client *c, uint8_t *out, size_t len,
			 uint64_t discard, bool close_after)
{
	if (!out) {
		pool_client_close(p, c);
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

void pool_reply_status(struct pool *p, struct client *c, uint16_t status, uint64_t id,
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
void pool_reply_control(struct pool *p, struct client *c, uint8_t *body, size_t len,
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

void pool_reply_control_error(struct pool *p, struct client *c, const struct api_request *rq,
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
	pool_reply_control(p, c, (uint8_t *)sb.data, sb.size, close_after);
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

struct client *pool_queue_pop(struct pool *p)
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

void pool_drop_idle(struct pool *p, struct pool_vm *vm)
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
		pool_vm_progress(p, vm);
		return;
	}
	if (p->nr_queued < p->queue_max) {
		queue_push(p, c);
		return;
	}
	p->rejected_busy++;
	pool_reply_status(p, c, INVOKE_BUSY, c->req.id, c->req.len, false,
			  "the pool is busy: all %u VMs are in use and %u invocations are waiting "
			  "(--queue %u); try again later", p->size, p->nr_queued, p->queue_max);
}

/* A VM became idle: the queue's head gets it. */
void pool_vm_idle(struct pool *p, struct pool_vm *vm)
{
	struct client *c = pool_queue_pop(p);

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
	pool_vm_progress(p, vm);
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
	pool_vm_release(p, vm);
	pool_client_progress(p, c);
}

/* The client went away or broke the protocol mid-invocation. */
void pool_abort_invocation(struct pool *p, struct pool_vm *vm)
{
	struct client *c = vm->client;

	p->invocations_aborted++;
	c->vm = NULL;
	pool_client_close(p, c);
	pool_vm_release(p, vm);
}

static size_t space(const struct relay *r)
{
	return RELAY_SIZE - r->end;
}

/* fd -> r, at most *left bytes: 1 when bytes moved, 0 when nothing could, -1 at end of
 * file or on an error other than would-block. */
static int relay_fill(int fd, struct relay *r, uint64_t *left)
{
	int moved = 0;

	while (*left && space(r)) {
		size_t want = space(r) < *left ? space(r) : *left;
		ssize_t n = recv(fd, r->buf + r->end, want, 0);

		if (n == 0 || (n < 0 && !again()))
			return -1;
		if (n < 0)
			break;
		r->end += (size_t)n;
		*left -= (uint64_t)n;
		moved = 1;
	}
	return moved;
}

/* r -> fd: 1 when bytes moved, 0 when nothing could, -1 on an error (errno says which). */
static int relay_drain(int fd, struct relay *r)
{
	int moved = 0;

	while (r->start < r->end) {
		ssize_t n = send(fd, r->buf + r->start, r->end - r->start, MSG_NOSIGNAL);

		if (n < 0 && !again())
			return -1;
		if (n < 0)
			break;
		r->start += (size_t)n;
		moved = 1;
	}
	return moved;
}

/* Moves bytes both ways until nothing moves. Returns when the VM is done or failed. */
void pool_relay(struct pool *p, struct pool_vm *vm)
{
	struct client *c = vm->client;
	struct errbuf eb = { "" };
	bool moved = true;
	ssize_t n;
	int r;

	while (moved) {
		moved = false;
		/* client -> request buffer */
		if (vm->req.start == vm->req.end)
			vm->req.start = vm->req.end = 0;
		r = relay_fill(c->fd, &vm->req, &vm->req_left);
		if (r < 0) {
			pool_abort_invocation(p, vm);
			return;
		}
		moved |= r;
		/* request buffer -> guest */
		r = relay_drain(vm->conn_fd, &vm->req);
		if (r < 0) {
			pool_vm_fail(p, vm, FAIL_CRASH, "the guest's connection failed while "
				     "it was sent the request: %s", strerror(errno));
			return;
		}
		moved |= r;
		/* guest -> response buffer: the header first, checked */
		if (vm->resp.start == vm->resp.end)
			vm->resp.start = vm->resp.end = 0;
		while (vm->resp_hdr_len < INVOKE_HDR_SIZE) {
			uint32_t len;

			n = recv(vm->conn_fd, vm->resp_hdr + vm->resp_hdr_len,
				 INVOKE_HDR_SIZE - vm->resp_hdr_len, 0);
			if (n == 0 || (n < 0 && !again())) {
				pool_vm_fail(p, vm, FAIL_CRASH, "the guest closed the connection "
					     "before it answered (%zu of %d header bytes)",
					     vm->resp_hdr_len, INVOKE_HDR_SIZE);
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
				pool_vm_fail(p, vm, FAIL_CRASH, "the guest sent a %s", eb.msg);
				return;
			}
			vm->resp_left = len;
			memcpy(vm->resp.buf + vm->resp.end, vm->resp_hdr, INVOKE_HDR_SIZE);
			vm->resp.end += INVOKE_HDR_SIZE;
		}
		if (vm->resp_hdr_len == INVOKE_HDR_SIZE) {
			r = relay_fill(vm->conn_fd, &vm->resp, &vm->resp_left);
			if (r < 0) {
				pool_vm_fail(p, vm, FAIL_CRASH, "the guest closed the connection in "
					     "the middle of its response (%" PRIu64 " bytes missing)",
					     vm->resp_left);
				return;
			}
			moved |= r;
		}
		/* response buffer -> client */
		r = relay_drain(c->fd, &vm->resp);
		if (r < 0) {
			pool_abort_invocation(p, vm);
			return;
		}
		moved |= r;
		if (vm->resp_hdr_len == INVOKE_HDR_SIZE && !vm->resp_left &&
		    vm->resp.start == vm->resp.end) {
			finish_invocation(p, vm);
			return;
		}
	}
}

/* ---- clients ----------------------------------------------------------------------------- */

void pool_client_close(struct pool *p, struct client *c)
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
		pool_vm_release(p, vm);
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
			pool_reply_control_error(p, c, NULL, "frame length must be 1..65536 bytes",
						 true);
			return;
		}
		c->body = malloc(len);
		if (!c->body) {
			pool_client_close(p, c);
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
		pool_reply_status(p, c, c->req.status, c->req.id, c->req.discard ? c->req.len : 0,
				  c->req.close, "%s", c->req.msg);
		return;
	}
	if (p->draining) {
		p->rejected_shutting_down++;
		pool_reply_status(p, c, INVOKE_SHUTTING_DOWN, c->req.id, c->req.len, true,
				  "the pool is shutting down");
		return;
	}
	c->start_ns = now_ns();
	dispatch(p, c);
}

void pool_client_progress(struct pool *p, struct client *c)
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
				pool_client_close(p, c); /* draining: no frame in progress */
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
				pool_client_close(p, c); /* a client that leaves between frames */
				return;
			}
			c->hdr_len += (size_t)n;
			continue;
		}
		case C_CONTROL:
			if (c->body_got == c->body_len) {
				pool_handle_control(p, c);
				continue;
			}
			n = recv(c->fd, c->body + c->body_got, c->body_len - c->body_got, 0);
			if (n < 0 && again())
				return;
			if (n <= 0) {
				pool_client_close(p, c);
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
				pool_client_close(p, c);
				return;
			}
			c->discard_left -= (uint64_t)n;
			continue;
		case C_REPLY:
			if (c->out_off == c->out_len) {
				free(c->out);
				c->out = NULL;
				if (c->close_after) {
					pool_client_close(p, c);
					return;
				}
				c->state = C_HEADER;
				continue;
			}
			n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
			if (n < 0 && again())
				return;
			if (n < 0) {
				pool_client_close(p, c);
				return;
			}
			c->out_off += (size_t)n;
			continue;
		}
	}
}

void pool_client_event(struct pool *p, struct client *c, uint32_t events)
{
	if (c->state == C_QUEUED) {
		/* a client that hung up entirely cannot read its answer; one that only shut
		 * down its writing side can (its request is complete) */
		if (events & (EPOLLHUP | EPOLLERR))
			pool_client_close(p, c);
		return;
	}
	if (c->state == C_INVOKING) {
		pool_vm_progress(p, c->vm);
		return;
	}
	pool_client_progress(p, c);
}

void pool_accept_clients(struct pool *p)
{
	for (;;) {
		int fd = accept4(p->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct ucred cred;
		struct client *c;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return; /* EAGAIN; or EMFILE and friends: the next event retries */
		}
		if (!usock_peer_allowed(fd, &p->access, &cred)) {
			pr_warn("pool: refused a client: uid=%d gid=%d pid=%d (not the pool's user, "
				"root or --api-group)", (int)cred.uid, (int)cred.gid, (int)cred.pid);
			close(fd);
			continue;
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
		pool_client_progress(p, c);
	}
}
