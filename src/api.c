/*
 * The control socket (--api-sock): msgpack requests and responses over a Unix stream
 * socket, served from the VM's main loop so that a request never races a vCPU stop.
 * Frame: a big-endian u32 length, then one msgpack map of that many bytes (FORMAT.md,
 * "Control socket"). Clients are untrusted: frames are bounded, pre-checked with the
 * snapshot library's msgpack bounds pass, and every field is type-checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <msgpack.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "vmm.h"
#include "dev/dev.h"
#include "snapfmt.h"

#define API_MAX_CLIENTS 8
/* A client silent since it connected, or stuck half-way through a frame, is dropped after
 * this long, so that eight of them cannot lock everyone else out (EMBER_API_IDLE_MS). */
#define API_IDLE_MS_DEFAULT 5000

struct api_server;
struct api_client {
	struct vm_watch watch;
	struct api_server *srv;
	uint8_t buf[4 + API_MAX_FRAME];
	size_t len;
	bool used;
	bool served;       /* answered at least one request: may wait between requests */
	uint64_t last_ms;  /* connect, or the last byte received or answer sent */
};

struct api_server {
	struct vm_watch listen, tick;
	char path[108];
	struct usock_access access;
	char *root;        /* --snapshot-root, absolute and without symlinks; or NULL */
	uint64_t idle_ms;
	bool tick_armed;
	struct api_client clients[API_MAX_CLIENTS];
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- request decoding --------------------------------------------------------------- */

static bool key_is(const msgpack_object *k, const char *s)
{
	return k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(s) &&
	       !memcmp(k->via.str.ptr, s, k->via.str.size);
}

static int get_str(const msgpack_object *v, char *dst, size_t cap, const char *key,
		   struct errbuf *eb)
{
	if (v->type != MSGPACK_OBJECT_STR)
		return errbuf_set(eb, -EINVAL, "'%s' must be a string", key);
	if (v->via.str.size == 0 || v->via.str.size >= cap)
		return errbuf_set(eb, -EINVAL, "'%s' must be 1..%zu bytes", key, cap - 1);
	if (memchr(v->via.str.ptr, 0, v->via.str.size))
		return errbuf_set(eb, -EINVAL, "'%s' contains a NUL byte", key);
	memcpy(dst, v->via.str.ptr, v->via.str.size);
	dst[v->via.str.size] = 0;
	return 0;
}

int api_decode_request(const uint8_t *body, size_t len, struct api_request *rq,
		       struct errbuf *eb)
{
	msgpack_unpacked u;
	struct snap_err se;
	size_t off = 0;
	int r = 0;

	memset(rq, 0, sizeof(*rq));
	if (snap_msgpack_precheck(body, len, &se))
		return errbuf_set(eb, -EINVAL, "malformed request: %s", se.msg);
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, (const char *)body, len, &off) != MSGPACK_UNPACK_SUCCESS) {
		msgpack_unpacked_destroy(&u);
		return errbuf_set(eb, -EINVAL, "malformed request: not msgpack");
	}
	for (uint32_t i = 0; !r && i < u.data.via.map.size; i++) {
		const msgpack_object *k = &u.data.via.map.ptr[i].key;
		const msgpack_object *v = &u.data.via.map.ptr[i].val;

		if (key_is(k, "verb")) {
			r = get_str(v, rq->verb, sizeof(rq->verb), "verb", eb);
		} else if (key_is(k, "dir")) {
			r = get_str(v, rq->dir, sizeof(rq->dir), "dir", eb);
		} else if (key_is(k, "cmd")) {
			r = get_str(v, rq->cmd, sizeof(rq->cmd), "cmd", eb);
		} else if (key_is(k, "diff") || key_is(k, "compress") || key_is(k, "standby")) {
			const char *name = key_is(k, "diff") ? "diff" : key_is(k, "compress") ? "compress"
											   : "standby";
			bool *dst = name[0] == 'd' ? &rq->diff : name[0] == 'c' ? &rq->compress
									      : &rq->standby;

			if (v->type != MSGPACK_OBJECT_BOOLEAN)
				r = errbuf_set(eb, -EINVAL, "'%s' must be a boolean", name);
			else
				*dst = v->via.boolean;
		} else if (key_is(k, "id")) {
			if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
				r = errbuf_set(eb, -EINVAL, "'id' must be an unsigned integer");
			rq->id = v->via.u64;
			rq->has_id = true;
		}
		/* unknown keys are ignored, as in the snapshot format */
	}
	msgpack_unpacked_destroy(&u);
	if (!r && !rq->verb[0])
		r = errbuf_set(eb, -EINVAL, "request has no 'verb'");
	return r;
}

/* ---- responses -------------------------------------------------------------------- */

static void client_close(struct vm *vm, struct api_client *c)
{
	vm_watch_del(vm, &c->watch);
	close(c->watch.fd);
	c->used = false;
}

static void client_send(struct vm *vm, struct api_client *c, msgpack_sbuffer *sb)
{
	uint8_t hdr[4] = { (uint8_t)(sb->size >> 24), (uint8_t)(sb->size >> 16),
			   (uint8_t)(sb->size >> 8), (uint8_t)sb->size };
	struct iovec iov[2] = { { hdr, 4 }, { sb->data, sb->size } };
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };

	/* responses are small; a client that does not read them is dropped */
	if (sendmsg(c->watch.fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)(4 + sb->size))
		client_close(vm, c);
}

static void respond_error(struct vm *vm, struct api_client *c, const struct api_request *rq,
			  const char *msg)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, rq && rq->has_id ? 3 : 2);
	mp_put_str(&pk, "ok");
	msgpack_pack_false(&pk);
	mp_put_kv_str(&pk, "error", msg);
	if (rq && rq->has_id)
		mp_put_kv_u64(&pk, "id", rq->id);
	client_send(vm, c, &sb);
	msgpack_sbuffer_destroy(&sb);
}

/* ---- verbs -------------------------------------------------------------------------- */

/*
 * Back to the snapshot, then running again unless the request says standby (or the VM
 * was in standby). A failed reset leaves the VM in an unknown state: it stops for good.
 */
static int api_reset(struct vm *vm, const struct api_request *rq, struct reset_stats *rs,
		     struct errbuf *eb)
{
	bool run = !rq->standby && !vm->standby;
	bool was_paused = vm->paused;
	int r;

	vm_pause(vm);
	r = vm_reset(vm, rs, eb);
	if (r && rs->changed) {
		vm_request_stop(vm, VM_STOP_ERROR, 0, "%s", eb->msg);
		return r;
	}
	if (r) { /* refused before anything changed */
		if (!was_paused)
			vm_resume(vm);
		return r;
	}
	vm->standby = !run;
	if (run)
		vm_resume(vm);
	return 0;
}

/* The snapshot goes into the directory api_snapshot_parent opened: the writer resolves
 * nothing outside it, so no symlink swapped in after the check can redirect it. */
static int snapshot_beneath(struct vm *vm, const char *dir, struct snapshot_opts *o,
			    struct snapshot_stats *ss, struct errbuf *eb)
{
	char name[NAME_MAX + 1];
	int r;

	o->dir_fd = api_snapshot_parent(vm->api->root, dir, name, eb);
	if (o->dir_fd < 0)
		return o->dir_fd;
	o->in_dir = true;
	r = vm_snapshot_save(vm, name, o, ss, eb);
	if (r) {
		char msg[sizeof(eb->msg)];

		snprintf(msg, sizeof(msg), "%s", eb->msg);
		errbuf_set(eb, r, "snapshot '%s': %s", dir, msg);
	}
	close(o->dir_fd);
	return r;
}

static void handle_request(struct vm *vm, struct api_client *c, const struct api_request *rq)
{
	struct errbuf eb = { "" };
	struct snapshot_stats ss;
	struct reset_stats rs;
	struct console_stats cs;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	unsigned extra = 0;
	bool was_running;
	int r = 0;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);

	if (!strcmp(rq->verb, "pause")) {
		vm_pause(vm);
		vm->standby = false;
	} else if (!strcmp(rq->verb, "resume")) {
		if (vm->standby)
			timing_mark("standby-resume");
		vm->standby = false;
		vm_resume(vm);
	} else if (!strcmp(rq->verb, "reset")) {
		r = api_reset(vm, rq, &rs, &eb);
		if (!r) {
			metrics_add(M_RESETS, 1);
			metrics_observe(H_RESET_US, rs.us_total);
			extra = 5;
		}
	} else if (!strcmp(rq->verb, "shutdown")) {
		vm_request_stop(vm, VM_STOP_REQUEST, 0, "shutdown requested on the control socket");
	} else if (!strcmp(rq->verb, "guest-cmd")) {
		if (!rq->cmd[0])
			r = errbuf_set(&eb, -EINVAL, "guest-cmd needs 'cmd'");
		else if ((r = vm_cmd_push(vm, rq->cmd)))
			errbuf_set(&eb, r, "guest command queue: %s", strerror(-r));
	} else if (!strcmp(rq->verb, "snapshot")) {
		if (!rq->dir[0]) {
			r = errbuf_set(&eb, -EINVAL, "snapshot needs 'dir'");
		} else {
			struct snapshot_opts o = { .diff = rq->diff, .compress = rq->compress };

			was_running = !vm->paused;
			vm_pause(vm);
			r = snapshot_beneath(vm, rq->dir, &o, &ss, &eb);
			if (was_running)
				vm_resume(vm);
			if (!r)
				extra = 5;
		}
	} else if (!strcmp(rq->verb, "status")) {
		extra = 11;
	} else if (!strcmp(rq->verb, "metrics")) {
		api_metrics_pack(vm, &pk, rq->has_id, rq->id);
		client_send(vm, c, &sb);
		msgpack_sbuffer_destroy(&sb);
		return;
	} else {
		r = errbuf_set(&eb, -EINVAL, "unknown verb '%s' (status, metrics, pause, resume, "
			       "reset, snapshot, guest-cmd, shutdown)", rq->verb);
	}
	if (r) {
		respond_error(vm, c, rq, eb.msg);
		msgpack_sbuffer_destroy(&sb);
		return;
	}

	msgpack_pack_map(&pk, 1 + (rq->has_id ? 1 : 0) + extra);
	mp_put_str(&pk, "ok");
	msgpack_pack_true(&pk);
	if (rq->has_id)
		mp_put_kv_u64(&pk, "id", rq->id);
	if (!strcmp(rq->verb, "snapshot")) {
		mp_put_kv_str(&pk, "snapshot_id", ss.id);
		mp_put_kv_str(&pk, "kind", rq->diff ? "diff" : rq->compress ? "full, lz4" : "full");
		mp_put_kv_u64(&pk, "us_total", ss.us_total);
		mp_put_kv_u64(&pk, "bytes_written", ss.bytes_written);
		mp_put_kv_u64(&pk, "zero_pages", ss.zero_pages);
	} else if (!strcmp(rq->verb, "reset")) {
		mp_put_kv_u64(&pk, "generation", vm->generation);
		mp_put_kv_u64(&pk, "pages_reverted", rs.pages_reverted);
		mp_put_kv_u64(&pk, "us_memory", rs.us_memory);
		mp_put_kv_u64(&pk, "us_state", rs.us_state);
		mp_put_kv_u64(&pk, "us_total", rs.us_total);
	} else if (!strcmp(rq->verb, "status")) {
		uint64_t report = atomic_load(&vm->first_report_us);

		mp_put_kv_str(&pk, "state", vm->standby ? "standby" : vm->paused ? "paused" : "running");
		mp_put_kv_u64(&pk, "resets", vm->resets);
		/* the guest's first port write after the last reset; 0: none yet */
		mp_put_kv_u64(&pk, "reset_to_report_us", vm->resets && report >= vm->reset_start_us
							      ? report - vm->reset_start_us : 0);
		mp_put_kv_u64(&pk, "vcpus", vm->nr_vcpus);
		mp_put_kv_u64(&pk, "mem_bytes", vm->mem.size);
		mp_put_kv_u64(&pk, "generation", vm->generation);
		mp_put_kv_u64(&pk, "uptime_us", timing_now_us());
		mp_put_kv_str(&pk, "last_snapshot", vm->last_snapshot_id);
		/* the guest's serial output so far, as the ember-console line has it */
		memset(&cs, 0, sizeof(cs));
		if (vm->serial)
			serial_console_stats(vm->serial, &cs);
		mp_put_kv_u64(&pk, "console_bytes", cs.bytes);
		mp_put_kv_u64(&pk, "console_dropped", cs.bytes_dropped);
		mp_put_kv_u64(&pk, "console_limited", cs.bytes_limited);
	}
	client_send(vm, c, &sb);
	msgpack_sbuffer_destroy(&sb);
}

static void tick_arm(struct api_server *s, bool on);

static void client_readable(struct vm *vm, struct vm_watch *w, uint32_t events)
{
	struct api_client *c = w->opaque;
	ssize_t n;

	n = recv(w->fd, c->buf + c->len, sizeof(c->buf) - c->len, MSG_DONTWAIT);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		client_close(vm, c);
		return;
	}
	c->len += (size_t)n;
	c->last_ms = now_ms();
	if (c->len < 4)
		tick_arm(c->srv, true);
	while (c->len >= 4) {
		uint32_t flen = (uint32_t)c->buf[0] << 24 | (uint32_t)c->buf[1] << 16 |
				(uint32_t)c->buf[2] << 8 | c->buf[3];
		struct api_request rq;
		struct errbuf eb = { "" };

		if (flen == 0 || flen > API_MAX_FRAME) {
			respond_error(vm, c, NULL, "frame length must be 1..65536 bytes");
			if (c->used)
				client_close(vm, c);
			return;
		}
		if (c->len < 4 + flen) {
			tick_arm(c->srv, true);
			return;
		}
		if (api_decode_request(c->buf + 4, flen, &rq, &eb))
			respond_error(vm, c, NULL, eb.msg);
		else
			handle_request(vm, c, &rq);
		if (!c->used)
			return;
		c->served = true;
		c->last_ms = now_ms();
		memmove(c->buf, c->buf + 4 + flen, c->len - 4 - flen);
		c->len -= 4 + flen;
	}
}

/* Clients that hung up but whose EOF the loop has not read yet still hold a slot. */
static void reap_hung_up(struct vm *vm, struct api_server *s)
{
	for (unsigned i = 0; i < API_MAX_CLIENTS; i++) {
		struct pollfd pfd = { .fd = s->clients[i].watch.fd, .events = POLLRDHUP };

		if (s->clients[i].used && poll(&pfd, 1, 0) == 1 &&
		    (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)))
			client_close(vm, &s->clients[i]);
	}
}

/* A client the idle limit applies to now: silent since it connected, or inside a frame. */
static bool at_risk(const struct api_client *c)
{
	return c->used && (!c->served || c->len);
}

/*
 * Drops clients past the idle limit: one silent since it connected or stuck inside a
 * frame always; one that was served and waits between requests (ember pool keeps such a
 * connection to each VM) only when every slot is taken and someone new knocks. Returns
 * how many clients the limit may still catch.
 */
static unsigned drop_idle(struct vm *vm, struct api_server *s, bool need_slot)
{
	uint64_t now = now_ms();
	unsigned left = 0, risky = 0;
	struct api_client *oldest = NULL;

	for (unsigned i = 0; i < API_MAX_CLIENTS; i++) {
		struct api_client *c = &s->clients[i];

		if (!c->used)
			continue;
		if (now - c->last_ms < s->idle_ms) {
			left++;
			risky += at_risk(c);
			continue;
		}
		if (at_risk(c)) {
			pr_info("--api-sock: dropped a client idle for %llu ms (%s)",
				(unsigned long long)(now - c->last_ms),
				c->len ? "half a request" : "no request");
			client_close(vm, c);
			continue;
		}
		left++;
		if (!oldest || c->last_ms < oldest->last_ms)
			oldest = c;
	}
	if (need_slot && oldest && left == API_MAX_CLIENTS)
		client_close(vm, oldest);
	return risky;
}

/* The sweep runs every idle_ms / 4 while some client is at risk, not otherwise: an
 * idle VM (a pool's standby VM holds a served connection) is not woken for nothing. */
static void tick_arm(struct api_server *s, bool on)
{
	uint64_t ms = on ? (s->idle_ms / 4 ? s->idle_ms / 4 : 1) : 0;
	struct itimerspec its = {
		.it_interval = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 },
		.it_value = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 },
	};

	if (s->tick_armed != on && !timerfd_settime(s->tick.fd, 0, &its, NULL))
		s->tick_armed = on;
}

static void tick_fired(struct vm *vm, struct vm_watch *w, uint32_t events)
{
	struct api_server *s = w->opaque;
	uint64_t n;

	if (read(w->fd, &n, sizeof(n)) < 0) {
		/* EAGAIN: nothing to consume */
	}
	if (!drop_idle(vm, s, false))
		tick_arm(s, false);
}

/* Not ember's user, not root, not in --api-group: an error frame, a log line, closed. */
static bool peer_refused(struct api_server *s, int fd)
{
	static const char msg[] = "permission denied: only ember's user, root and --api-group "
				  "may use this socket";
	uint8_t frame[4 + 64 + sizeof(msg)];
	struct ucred cred;
	msgpack_sbuffer sb;
	msgpack_packer pk;

	if (usock_peer_allowed(fd, &s->access, &cred))
		return false;
	pr_warn("--api-sock %s: refused a client: uid=%d gid=%d pid=%d (not ember's user, root "
		"or --api-group)", s->path, (int)cred.uid, (int)cred.gid, (int)cred.pid);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	mp_put_str(&pk, "ok");
	msgpack_pack_false(&pk);
	mp_put_kv_str(&pk, "error", msg);
	if (sb.size <= sizeof(frame) - 4) {
		frame[0] = frame[1] = 0;
		frame[2] = (uint8_t)(sb.size >> 8);
		frame[3] = (uint8_t)sb.size;
		memcpy(frame + 4, sb.data, sb.size);
		if (send(fd, frame, 4 + sb.size, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
			/* it may have gone already: it is refused either way */
		}
	}
	msgpack_sbuffer_destroy(&sb);
	return true;
}

static void listen_readable(struct vm *vm, struct vm_watch *w, uint32_t events)
{
	struct api_server *s = w->opaque;
	int fd = accept4(w->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	bool full = true;

	if (fd < 0)
		return;
	if (peer_refused(s, fd)) {
		close(fd);
		return;
	}
	for (unsigned i = 0; i < API_MAX_CLIENTS; i++)
		full = full && s->clients[i].used;
	if (full)
		reap_hung_up(vm, s);
	if (full)
		drop_idle(vm, s, true);
	for (unsigned i = 0; i < API_MAX_CLIENTS; i++) {
		struct api_client *c = &s->clients[i];

		if (c->used)
			continue;
		memset(c, 0, sizeof(*c));
		c->used = true;
		c->srv = s;
		c->last_ms = now_ms();
		c->watch = (struct vm_watch){ .fd = fd, .cb = client_readable, .opaque = c };
		if (vm_watch_add(vm, &c->watch)) {
			c->used = false;
			break;
		}
		tick_arm(s, true);
		return;
	}
	pr_warn("--api-sock %s: %d clients connected already; refused one", s->path,
		API_MAX_CLIENTS);
	close(fd); /* too many clients */
}

/* EMBER_API_IDLE_MS: the idle limit (tests make it short); a bad value is an error. */
static int idle_ms_from_env(uint64_t *ms, struct errbuf *eb)
{
	const char *e = getenv("EMBER_API_IDLE_MS");
	char *end;

	*ms = API_IDLE_MS_DEFAULT;
	if (!e)
		return 0;
	errno = 0;
	*ms = strtoull(e, &end, 10);
	if (!*e || *end || errno || *ms < 1 || *ms > 3600000)
		return errbuf_set(eb, -EINVAL, "EMBER_API_IDLE_MS: '%s' is not a number of "
				  "milliseconds in 1..3600000", e);
	return 0;
}

int api_start(struct vm *vm, const char *path, struct errbuf *eb)
{
	struct api_server *s;
	uint64_t idle_ms;
	int fd, r;

	r = idle_ms_from_env(&idle_ms, eb);
	if (r)
		return r;
	s = calloc(1, sizeof(*s));
	if (!s)
		return errbuf_set(eb, -ENOMEM, "out of memory");
	snprintf(s->path, sizeof(s->path), "%s", path);
	s->access = vm->cfg.api_access;
	s->idle_ms = idle_ms;
	if (vm->cfg.snapshot_root && !(s->root = realpath(vm->cfg.snapshot_root, NULL))) {
		r = errbuf_set(eb, -errno, "--snapshot-root %s: %s", vm->cfg.snapshot_root,
			       strerror(errno));
		free(s);
		return r;
	}
	s->tick = (struct vm_watch){ .cb = tick_fired, .opaque = s };
	s->tick.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (s->tick.fd < 0) {
		r = errbuf_set(eb, -errno, "--api-sock: timerfd: %s", strerror(errno));
		free(s->root);
		free(s);
		return r;
	}
	fd = usock_listen(path, "--api-sock", &s->access, 8, eb);
	if (fd < 0) {
		close(s->tick.fd);
		free(s->root);
		free(s);
		return fd;
	}
	s->listen = (struct vm_watch){ .fd = fd, .cb = listen_readable, .opaque = s };
	r = vm_watch_add(vm, &s->listen);
	if (!r)
		r = vm_watch_add(vm, &s->tick);
	if (r) {
		close(fd);
		close(s->tick.fd);
		unlink(path);
		free(s->root);
		free(s);
		return errbuf_set(eb, r, "--api-sock: epoll: %s", strerror(-r));
	}
	vm->api = s;
	/* WAIT no longer means "finish" when the queue is empty: a command may arrive */
	pthread_mutex_lock(&vm->cmd_lock);
	vm->cmd_may_arrive = true;
	pthread_mutex_unlock(&vm->cmd_lock);
	return 0;
}

void api_stop(struct vm *vm)
{
	struct api_server *s = vm->api;

	if (!s)
		return;
	for (unsigned i = 0; i < API_MAX_CLIENTS; i++)
		if (s->clients[i].used)
			client_close(vm, &s->clients[i]);
	vm_watch_del(vm, &s->listen);
	close(s->listen.fd);
	vm_watch_del(vm, &s->tick);
	close(s->tick.fd);
	unlink(s->path);
	free(s->root);
	free(s);
	vm->api = NULL;
}
