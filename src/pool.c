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
 *
 * This file is the process: set-up, the loop, signals, the drain, the status request.
 * pool_vm.c runs the VMs, pool_client.c the connections and the relay, pool_proto.c
 * holds the pure parts; pool_int.h what they share.
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

static const char *const vm_state_names[] = {
	[VM_STARTING] = "starting", [VM_RESUMING] = "starting", [VM_CONNECTING] = "starting",
	[VM_IDLE] = "idle",         [VM_BUSY] = "busy",         [VM_RESETTING] = "resetting",
	[VM_RETIRING] = "retiring",
};

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
	pool_reply_control(p, c, body, len, false);
}

void pool_handle_control(struct pool *p, struct client *c)
{
	struct api_request rq;
	struct errbuf eb = { "" };

	if (api_decode_request(c->body, c->body_len, &rq, &eb))
		pool_reply_control_error(p, c, NULL, eb.msg, false);
	else if (strcmp(rq.verb, "status"))
		pool_reply_control_error(p, c, &rq, "unknown verb: an ember pool answers 'status'",
					 false);
	else
		reply_pool_status(p, c);
	free(c->body);
	c->body = NULL;
}

/* ---- draining ------------------------------------------------------------------------------ */

/* The spawner removes it: the pool unlinks nothing once it is filtered. */
static void unlink_socket(struct pool *p)
{
	int r = p->spawner_pid > 0 ? pool_spawner_unlink_socket(p) : unlink(p->socket_path) ? -errno : 0;

	if (r && r != -ENOENT)
		pr_warn("pool: removing %s: %s", p->socket_path, strerror(-r));
}

static void start_drain(struct pool *p)
{
	struct client *c, *next;

	if (p->draining)
		return;
	p->draining = true;
	pr_info("pool: draining: %u invocations in flight", p->size - p->nr_idle);
	close_fd(&p->listen_fd);
	unlink_socket(p);
	while ((c = pool_queue_pop(p))) {
		p->rejected_shutting_down++;
		pool_reply_status(p, c, INVOKE_SHUTTING_DOWN, c->req.id, c->req.len, true,
				  "the pool is shutting down");
		pool_client_progress(p, c);
	}
	for (c = p->clients; c; c = next) {
		next = c->next;
		if (c->state == C_HEADER && c->hdr_len == 0)
			pool_client_close(p, c);
		else if (c->state != C_INVOKING)
			c->close_after = true;
	}
	for (struct pool_vm *vm = p->vms; vm; vm = vm->next)
		if (vm->state != VM_BUSY && vm->state != VM_RETIRING)
			pool_vm_retire(p, vm);
}

/* A second signal: nothing more is waited for. */
static void force_stop(struct pool *p)
{
	p->forced = true;
	while (p->clients)
		pool_client_close(p, p->clients);
	for (struct pool_vm *vm = p->vms; vm; vm = vm->next) {
		pool_vm_kill(vm);
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
			/* the spawner is the only child: its socket says it is gone */
			pool_spawner_events(p);
		} else if (!p->draining) {
			pr_warn("pool: signal %u: draining (a second one stops at once)", si.ssi_signo);
			start_drain(p);
		} else if (!p->forced) {
			pr_warn("pool: signal %u again: killing every VM", si.ssi_signo);
			force_stop(p);
		}
	}
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
			pool_vm_timeout(p, vm);
	}
	while ((c = p->q_head) && c->queue_deadline_ns <= now) {
		pool_queue_pop(p);
		p->invocations_unavailable++;
		pool_reply_status(p, c, INVOKE_UNAVAILABLE, c->req.id, c->req.len, false,
				  "no VM became free within --timeout-ms %" PRIu64, p->timeout_ms);
		pool_client_progress(p, c);
	}
	pool_refill(p);
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
					pool_accept_clients(p);
				break;
			case T_SIGNAL:
				handle_signals(p);
				break;
			case T_SPAWNER:
				pool_spawner_events(p);
				break;
			case T_CLIENT:
				if (!((struct client *)t->owner)->dead)
					pool_client_event(p, t->owner, ev[i].events);
				break;
			case T_READY:
			case T_CTL:
			case T_CONN:
				pool_vm_progress(p, t->owner);
				break;
			}
		}
		check_deadlines(p);
		free_dead(p);
	}
}

/* ---- set-up and teardown ------------------------------------------------------------------ */

static int setup(struct pool *p, struct errbuf *eb)
{
	const char *tmp = getenv("TMPDIR");
	struct seccomp_fds fds = { .n = 0 };
	struct rlimit rl;
	struct stat st;
	sigset_t mask;
	int r;

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
	p->listen_fd = usock_listen(p->socket_path, "--socket", &p->access, 128, eb);
	if (p->listen_fd < 0)
		return p->listen_fd;
	p->t_listen = (struct tag){ T_LISTEN, NULL };
	p->t_signal = (struct tag){ T_SIGNAL, NULL };
	if (ep_add(p, p->listen_fd, &p->t_listen) || ep_add(p, p->sig_fd, &p->t_signal))
		return errbuf_set(eb, -errno, "epoll: %s", strerror(errno));
	/* the VMs' spawner before the filter: a filter survives execve (README "Seccomp") */
	r = pool_spawner_start(p);
	if (r)
		return errbuf_set(eb, r, "starting the VM spawner: %s", strerror(-r));
	p->t_spawner = (struct tag){ T_SPAWNER, NULL };
	if (ep_add(p, p->spawn_ev_fd, &p->t_spawner))
		return errbuf_set(eb, -errno, "epoll: %s", strerror(errno));
	seccomp_fds_add(&fds, STDERR_FILENO);
	seccomp_fds_add(&fds, log_fd_get());
	r = seccomp_apply(SECCOMP_POOL, &fds);
	if (r)
		return errbuf_set(eb, r, "seccomp: %s", strerror(-r));
	return 0;
}

static void teardown(struct pool *p)
{
	/* whatever is left (a fatal error): kill it; the spawner reaps it when it stops */
	for (struct pool_vm *vm = p->vms; vm; vm = vm->next)
		pool_vm_kill(vm);
	/* still ours (a fatal error, or set-up failed after listening): not after a drain,
	 * when another pool may have taken the path meanwhile */
	if (p->listen_fd >= 0) {
		close_fd(&p->listen_fd);
		unlink_socket(p);
	}
	/* it removes the run directory, once every VM is reaped */
	if (p->spawner_pid > 0)
		pool_spawner_stop(p);
	else if (p->run_dir[0])
		pool_remove_run_dir(p->run_dir);
	while (p->vms) {
		struct pool_vm *vm = p->vms;

		p->vms = vm->next;
		close_fd(&vm->ctl_fd);
		close_fd(&vm->conn_fd);
		close_fd(&vm->ready_fd);
		close_fd(&vm->log_fd);
		close_fd(&vm->pidfd);
		free(vm->req.buf);
		free(vm->resp.buf);
		free(vm);
	}
	while (p->clients)
		pool_client_close(p, p->clients);
	free_dead(p);
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
		.access = c->vm.api_access,
		.queue_max = c->pool_queue, .max_uses = c->pool_max_uses,
		.timeout_ms = c->pool_timeout_ms, .max_payload = c->pool_max_payload,
		.port = c->invoke_port, .epfd = -1, .listen_fd = -1, .sig_fd = -1, .null_fd = -1,
		.spawn_fd = -1, .spawn_ev_fd = -1,
		.start_ns = now_ns(),
	};
	if (setup(p, &eb)) {
		pr_err("pool: %s", eb.msg);
		teardown(p);
		free(p);
		return 1;
	}
	fprintf(stderr, "ember pool: serving %s: %u VMs of %s (run directory %s)\n",
		p->socket_path, p->size, p->snapshot, p->run_dir);
	pool_refill(p);
	loop(p);
	status = p->fatal || p->forced ? 1 : 0;
	teardown(p);
	free(p);
	return status;
}
