/*
 * The pool's VMs (pool_int.h): each an `ember restore --standby` child process. Spawned
 * with a ready pipe, resumed and pre-connected to the guest's port over its control
 * and vsock sockets, reset after each invocation, retired after --max-uses or on any
 * failure (killed, its client answered UNAVAILABLE), reaped, replaced. Everything a VM
 * process says (its ready line, ember's CONNECT answer, control answers) is checked
 * before it is believed: the process may be compromised by its guest.
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
		pool_vm_fail(p, vm, vm->ever_idle ? FAIL_CRASH : FAIL_START,
			     "connecting to its vsock socket %s: %s",
			     vm->uds_path, strerror(errno));
		return;
	}
	n = invoke_format_connect(p->port, line, sizeof(line));
	/* a fresh socket's buffer takes a line: no partial writes */
	if (send(vm->conn_fd, line, (size_t)n, MSG_NOSIGNAL) != n ||
	    ep_add(p, vm->conn_fd, &vm->t_conn)) {
		pool_vm_fail(p, vm, vm->ever_idle ? FAIL_CRASH : FAIL_START,
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
		pool_vm_fail(p, vm, FAIL_START, "connecting to its control socket %s: %s", vm->ctl_path,
			     strerror(errno));
		return;
	}
	ctl_send(p, vm, "resume");
	vm->state = VM_RESUMING;
	vm->deadline_ns = after_ms(CTL_TIMEOUT_MS);
	pool_vm_progress(p, vm);
}

/* Asks a VM to exit (or kills it when it cannot be asked); it is reaped later. */
void pool_vm_retire(struct pool *p, struct pool_vm *vm)
{
	if (vm->state == VM_IDLE)
		pool_drop_idle(p, vm);
	close_fd(&vm->conn_fd);
	close_fd(&vm->ready_fd);
	vm->expect_exit = true;
	vm->state = VM_RETIRING;
	vm->deadline_ns = after_ms(RETIRE_TIMEOUT_MS);
	if (vm->ctl_fd >= 0 && !vm->reaped) {
		ctl_send(p, vm, "shutdown");
		pool_vm_progress(p, vm);
	} else {
		pool_vm_kill(vm);
	}
	pool_refill(p);
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

/* The pool's stderr gets the last lines a failed child wrote: through the read-only fd
 * the spawner passed (the pool opens no files; the file may be unlinked already). */
static void print_log_tail(const struct pool_vm *vm)
{
	char buf[LOG_TAIL + 1], *line, *save = NULL;
	off_t end;
	ssize_t n;

	if (vm->log_fd < 0)
		return;
	end = lseek(vm->log_fd, 0, SEEK_END);
	n = pread(vm->log_fd, buf, LOG_TAIL, end > LOG_TAIL ? end - LOG_TAIL : 0);
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
		pool_client_close(p, c);
		return;
	}
	pool_reply_status(p, c, INVOKE_UNAVAILABLE, c->req.id, vm->req_left, p->draining,
			  "the VM running this invocation failed (%s); the pool replaced it", why);
	pool_client_progress(p, c);
}

/*
 * Something went wrong with a VM: it is killed (whatever it was doing), its client
 * gets UNAVAILABLE, and a replacement is spawned. Counted once, as kind says.
 */
void pool_vm_fail(struct pool *p, struct pool_vm *vm, enum fail_kind kind, const char *fmt, ...)
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
		pool_drop_idle(p, vm);
	close_fd(&vm->conn_fd);
	close_fd(&vm->ctl_fd);
	close_fd(&vm->ready_fd);
	vm->expect_exit = true;
	vm->state = VM_RETIRING;
	vm->deadline_ns = 0;
	pool_vm_kill(vm);
	if (!p->any_idle_ever && p->start_failures >= (p->size > 3 ? p->size : 3)) {
		pr_err("pool: %u VMs in a row failed to start and none ever did: giving up (is %s "
		       "a snapshot of a guest that listens on vsock port %" PRIu32 "?)",
		       p->start_failures, p->snapshot, p->port);
		p->fatal = true;
	}
	pool_refill(p);
}

/* The invocation is over (its response relayed, or its client gone): reset the VM. */
void pool_vm_release(struct pool *p, struct pool_vm *vm)
{
	vm->client = NULL;
	close_fd(&vm->conn_fd); /* the guest sees a reset; `reset` closes the rest */
	if (p->draining || (p->max_uses && vm->uses >= p->max_uses)) {
		if (!p->draining)
			p->retired++;
		pool_vm_retire(p, vm);
		return;
	}
	ctl_send(p, vm, "reset");
	vm->state = VM_RESETTING;
	vm->op_start_ns = now_ns();
	vm->deadline_ns = after_ms(CTL_TIMEOUT_MS);
	pool_vm_progress(p, vm);
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
			pool_vm_fail(p, vm, FAIL_START, "exited before it was ready");
			return;
		}
		vm->line_len += (size_t)n;
		vm->line[vm->line_len] = 0;
		if (strchr(vm->line, '\n'))
			break;
		if (vm->line_len == sizeof(vm->line) - 1) {
			pool_vm_fail(p, vm, FAIL_START, "wrote a malformed ready line");
			return;
		}
	}
	if (strncmp(vm->line, "ready", 5)) {
		pool_vm_fail(p, vm, FAIL_START, "wrote a malformed ready line");
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
			pool_vm_fail(p, vm, vm->ever_idle ? FAIL_CRASH : FAIL_START,
				     "ember closed the vsock connection without answering "
				     "'CONNECT %" PRIu32 "': does the guest listen on that port?",
				     p->port);
			return;
		}
		vm->line_len += (size_t)n;
		if (memchr(vm->line, '\n', vm->line_len))
			break;
		if (vm->line_len == sizeof(vm->line)) {
			pool_vm_fail(p, vm, vm->ever_idle ? FAIL_CRASH : FAIL_START,
				     "ember's answer to CONNECT has no newline");
			return;
		}
	}
	/* the guest says nothing before a request: the line must be all there is */
	if (invoke_parse_ok_line(vm->line, vm->line_len, &host_port)) {
		pool_vm_fail(p, vm, vm->ever_idle ? FAIL_CRASH : FAIL_START,
			     "ember answered 'CONNECT %" PRIu32 "' with "
			     "something other than 'OK <port>'", p->port);
		return;
	}
	pool_vm_idle(p, vm);
}

/* An idle guest has nothing to say: data or a close means it is broken. */
static void vm_progress_idle(struct pool *p, struct pool_vm *vm)
{
	uint8_t b;
	ssize_t n = recv(vm->conn_fd, &b, 1, 0);

	if (n < 0 && again())
		return;
	pool_vm_fail(p, vm, FAIL_CRASH, n == 0 ? "the guest closed its idle connection"
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
		pool_vm_fail(p, vm, vm->state == VM_RESUMING ? FAIL_START
			     : vm->state == VM_RESETTING ? FAIL_RESET : FAIL_CRASH,
			     "its control socket closed");
		return;
	}
	if (vm->state == VM_RESUMING) {
		if (!ok) {
			pool_vm_fail(p, vm, FAIL_START, "resume failed: %s", err);
			return;
		}
		vm_connect_guest(p, vm);
	} else if (vm->state == VM_RESETTING) {
		if (!ok) {
			pool_vm_fail(p, vm, FAIL_RESET, "reset failed: %s", err);
			return;
		}
		p->resets++;
		pool_samples_add(&p->reset, (now_ns() - vm->op_start_ns) / 1000);
		vm_connect_guest(p, vm);
	}
}

void pool_vm_progress(struct pool *p, struct pool_vm *vm)
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
		pool_relay(p, vm);
		break;
	}
}

/* Its deadline passed. */
void pool_vm_timeout(struct pool *p, struct pool_vm *vm)
{
	vm->deadline_ns = 0;
	switch (vm->state) {
	case VM_STARTING:
		pool_vm_fail(p, vm, FAIL_START, "not ready within %d ms", START_TIMEOUT_MS);
		break;
	case VM_RESUMING:
		pool_vm_fail(p, vm, FAIL_START, "no answer to resume within %d ms", CTL_TIMEOUT_MS);
		break;
	case VM_RESETTING:
		pool_vm_fail(p, vm, FAIL_HANG, "no answer to reset within %d ms", CTL_TIMEOUT_MS);
		break;
	case VM_CONNECTING:
		pool_vm_fail(p, vm, vm->ever_idle ? FAIL_HANG : FAIL_START,
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
			pool_abort_invocation(p, vm);
			break;
		}
		pool_vm_fail(p, vm, FAIL_HANG, "the function did not answer within --timeout-ms %"
			     PRIu64, p->timeout_ms);
		break;
	case VM_RETIRING:
		pool_vm_kill(vm);
		break;
	case VM_IDLE:
		break;
	}
}

/* ---- spawning ------------------------------------------------------------------------------- */

/* A VM of the spawner's (pool_spawner.c): the pool does not fork or open files. */
static void spawn_vm(struct pool *p)
{
	struct pool_vm *vm = calloc(1, sizeof(*vm));
	int r;

	if (!vm || !(vm->req.buf = malloc(RELAY_SIZE)) || !(vm->resp.buf = malloc(RELAY_SIZE))) {
		pr_err("pool: out of memory for a VM");
		goto fail;
	}
	vm->id = ++p->next_id;
	vm->ready_fd = vm->ctl_fd = vm->conn_fd = vm->log_fd = vm->pidfd = -1;
	vm->t_ready = (struct tag){ T_READY, vm };
	vm->t_ctl = (struct tag){ T_CTL, vm };
	vm->t_conn = (struct tag){ T_CONN, vm };
	if (pool_vm_paths(p->run_dir, vm->id, vm->ctl_path, sizeof(vm->ctl_path), vm->uds_path,
			  sizeof(vm->uds_path), vm->log_path, sizeof(vm->log_path))) {
		pr_err("pool: the run directory's path %s is too long for Unix sockets", p->run_dir);
		p->fatal = true;
		goto fail;
	}
	r = pool_spawner_spawn(p, vm);
	if (r == -EPIPE || r == -ECONNRESET) {
		pr_err("pool: the VM spawner (pid %d) is gone", (int)p->spawner_pid);
		p->fatal = true;
		goto fail;
	}
	if (r) {
		pr_err("pool: spawning a VM: %s", strerror(-r));
		goto fail;
	}
	vm->state = VM_STARTING;
	vm->deadline_ns = after_ms(START_TIMEOUT_MS);
	vm->next = p->vms;
	p->vms = vm;
	p->spawned++;
	if (ep_add(p, vm->ready_fd, &vm->t_ready))
		pool_vm_fail(p, vm, FAIL_START, "epoll: %s", strerror(errno));
	return;
fail:
	if (vm) {
		free(vm->req.buf);
		free(vm->resp.buf);
	}
	free(vm);
	p->spawn_failures++;
	p->start_failures++;
	p->backoff_until_ns = after_ms(BACKOFF_MAX_MS);
}

/* Keeps `size` VMs that are not retiring, unless draining or backing off. */
void pool_refill(struct pool *p)
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
		pool_vm_fail(p, vm, vm->state == VM_STARTING || vm->state == VM_RESUMING ||
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
	close_fd(&vm->log_fd);
	close_fd(&vm->pidfd);
	/* the spawner removed its files before it reported the exit */
	vm->dead = true;
	vm->next = p->dead_vms;
	p->dead_vms = vm;
	pool_refill(p);
}

/* The spawner reaped VMs (pool_spawner.c); its socket closing means it is gone. */
void pool_spawner_events(struct pool *p)
{
	struct spawn_exit e;
	ssize_t n;

	while ((n = recv(p->spawn_ev_fd, &e, sizeof(e), 0)) == (ssize_t)sizeof(e)) {
		for (struct pool_vm *vm = p->vms; vm; vm = vm->next) {
			if (vm->pid == e.pid && !vm->reaped) {
				vm_reaped(p, vm, e.status);
				break;
			}
		}
	}
	if (n == 0 || (n < 0 && !again())) {
		pr_err("pool: the VM spawner (pid %d) is gone", (int)p->spawner_pid);
		p->fatal = true;
	}
}
