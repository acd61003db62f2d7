/*
 * The control socket (--api-sock): msgpack requests and responses over a Unix stream
 * socket, served from the VM's main loop so that a request never races a vCPU stop.
 * Frame: a big-endian u32 length, then one msgpack map of that many bytes (FORMAT.md,
 * "Control socket"). Clients are untrusted: frames are bounded, pre-checked with the
 * snapshot library's msgpack bounds pass, and every field is type-checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "vmm.h"
#include "dev/dev.h"
#include "snapfmt.h"

#define API_MAX_CLIENTS 8

struct api_client {
	struct vm_watch watch;
	uint8_t buf[4 + API_MAX_FRAME];
	size_t len;
	bool used;
};

struct api_server {
	struct vm_watch listen;
	char path[108];
	struct api_client clients[API_MAX_CLIENTS];
};

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

static void pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void pack_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
	pack_str(pk, k);
	pack_str(pk, v);
}

static void pack_kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
	pack_str(pk, k);
	msgpack_pack_uint64(pk, v);
}

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
	pack_str(&pk, "ok");
	msgpack_pack_false(&pk);
	pack_kv_str(&pk, "error", msg);
	if (rq && rq->has_id)
		pack_kv_u64(&pk, "id", rq->id);
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
		if (!r)
			extra = 5;
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
			r = vm_snapshot_save(vm, rq->dir, &o, &ss, &eb);
			if (was_running)
				vm_resume(vm);
			if (!r)
				extra = 5;
		}
	} else if (!strcmp(rq->verb, "status")) {
		extra = 11;
	} else {
		r = errbuf_set(&eb, -EINVAL, "unknown verb '%s' (status, pause, resume, reset, "
			       "snapshot, guest-cmd, shutdown)", rq->verb);
	}
	if (r) {
		respond_error(vm, c, rq, eb.msg);
		msgpack_sbuffer_destroy(&sb);
		return;
	}

	msgpack_pack_map(&pk, 1 + (rq->has_id ? 1 : 0) + extra);
	pack_str(&pk, "ok");
	msgpack_pack_true(&pk);
	if (rq->has_id)
		pack_kv_u64(&pk, "id", rq->id);
	if (!strcmp(rq->verb, "snapshot")) {
		pack_kv_str(&pk, "snapshot_id", ss.id);
		pack_kv_str(&pk, "kind", rq->diff ? "diff" : rq->compress ? "full, lz4" : "full");
		pack_kv_u64(&pk, "us_total", ss.us_total);
		pack_kv_u64(&pk, "bytes_written", ss.bytes_written);
		pack_kv_u64(&pk, "zero_pages", ss.zero_pages);
	} else if (!strcmp(rq->verb, "reset")) {
		pack_kv_u64(&pk, "generation", vm->generation);
		pack_kv_u64(&pk, "pages_reverted", rs.pages_reverted);
		pack_kv_u64(&pk, "us_memory", rs.us_memory);
		pack_kv_u64(&pk, "us_state", rs.us_state);
		pack_kv_u64(&pk, "us_total", rs.us_total);
	} else if (!strcmp(rq->verb, "status")) {
		uint64_t report = atomic_load(&vm->first_report_us);

		pack_kv_str(&pk, "state", vm->standby ? "standby" : vm->paused ? "paused" : "running");
		pack_kv_u64(&pk, "resets", vm->resets);
		/* the guest's first port write after the last reset; 0: none yet */
		pack_kv_u64(&pk, "reset_to_report_us", vm->resets && report >= vm->reset_start_us
							      ? report - vm->reset_start_us : 0);
		pack_kv_u64(&pk, "vcpus", vm->nr_vcpus);
		pack_kv_u64(&pk, "mem_bytes", vm->mem.size);
		pack_kv_u64(&pk, "generation", vm->generation);
		pack_kv_u64(&pk, "uptime_us", timing_now_us());
		pack_kv_str(&pk, "last_snapshot", vm->last_snapshot_id);
		/* the guest's serial output so far, as the ember-console line has it */
		memset(&cs, 0, sizeof(cs));
		if (vm->serial)
			serial_console_stats(vm->serial, &cs);
		pack_kv_u64(&pk, "console_bytes", cs.bytes);
		pack_kv_u64(&pk, "console_dropped", cs.bytes_dropped);
		pack_kv_u64(&pk, "console_limited", cs.bytes_limited);
	}
	client_send(vm, c, &sb);
	msgpack_sbuffer_destroy(&sb);
}

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
		if (c->len < 4 + flen)
			return;
		if (api_decode_request(c->buf + 4, flen, &rq, &eb))
			respond_error(vm, c, NULL, eb.msg);
		else
			handle_request(vm, c, &rq);
		if (!c->used)
			return;
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

static void listen_readable(struct vm *vm, struct vm_watch *w, uint32_t events)
{
	struct api_server *s = w->opaque;
	int fd = accept4(w->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	bool full = true;

	if (fd < 0)
		return;
	for (unsigned i = 0; i < API_MAX_CLIENTS; i++)
		full = full && s->clients[i].used;
	if (full)
		reap_hung_up(vm, s);
	for (unsigned i = 0; i < API_MAX_CLIENTS; i++) {
		struct api_client *c = &s->clients[i];

		if (c->used)
			continue;
		memset(c, 0, sizeof(*c));
		c->used = true;
		c->watch = (struct vm_watch){ .fd = fd, .cb = client_readable, .opaque = c };
		if (vm_watch_add(vm, &c->watch)) {
			c->used = false;
			break;
		}
		return;
	}
	close(fd); /* too many clients */
}

int api_start(struct vm *vm, const char *path, struct errbuf *eb)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct api_server *s;
	struct stat st;
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return errbuf_set(eb, -ENAMETOOLONG, "--api-sock %s: path longer than %zu bytes", path,
				  sizeof(sa.sun_path) - 1);
	/* a stale socket from a dead ember may be replaced; any other file may not */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return errbuf_set(eb, -EEXIST, "--api-sock %s: exists and is not a socket", path);
		unlink(path);
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return errbuf_set(eb, -ENOMEM, "out of memory");
	strcpy(sa.sun_path, path);
	snprintf(s->path, sizeof(s->path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		r = errbuf_set(eb, -errno, "--api-sock: socket: %s", strerror(errno));
		free(s);
		return r;
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0) {
		r = errbuf_set(eb, -errno, "--api-sock %s: %s", path, strerror(errno));
		close(fd);
		free(s);
		return r;
	}
	s->listen = (struct vm_watch){ .fd = fd, .cb = listen_readable, .opaque = s };
	r = vm_watch_add(vm, &s->listen);
	if (r) {
		close(fd);
		unlink(path);
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
	unlink(s->path);
	free(s);
	vm->api = NULL;
}
