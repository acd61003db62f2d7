/*
 * The pool's insides, shared by pool.c (the process: loop, signals, drain, status),
 * pool_vm.c (the VM processes: spawn, control requests, connect, reset, failures) and
 * pool_client.c (connections: frames, replies, the queue, relaying an invocation).
 * Single-threaded: nothing here is locked.
 */
#ifndef EMBER_POOL_INT_H
#define EMBER_POOL_INT_H

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/types.h>

#include "pool.h"

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


enum tag_kind { T_LISTEN, T_SIGNAL, T_SPAWNER, T_READY, T_CTL, T_CONN, T_CLIENT };

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
	int log_fd, pidfd;            /* from the spawner: its log (read-only), its process */
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
	struct usock_access access;   /* --api-group: who besides us and root may connect */
	unsigned size, queue_max;
	uint64_t max_uses, timeout_ms;
	uint32_t max_payload, port;
	/* state */
	int epfd, listen_fd, sig_fd, null_fd;
	pid_t spawner_pid;            /* pool_spawner.c */
	int spawn_fd, spawn_ev_fd;    /* its requests and answers; its exit reports */
	struct tag t_listen, t_signal, t_spawner;
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

/* ---- the spawner's messages (pool_spawner.c), fixed size, SOCK_SEQPACKET -------- */

enum spawn_op { SPAWN_VM = 1, UNLINK_SOCKET = 2 };

struct spawn_req {
	uint32_t op;  /* enum spawn_op */
	uint32_t id;  /* SPAWN_VM: the VM's id (its paths in the run directory) */
};

/* SPAWN_VM's, when err is 0, comes with 3 fds: the ready pipe, the log, a pidfd */
struct spawn_reply {
	int32_t err;  /* -errno */
	int32_t pid;
};

/* on the second socket, once per VM it reaped */
struct spawn_exit {
	int32_t pid;
	int32_t status; /* waitpid's */
};

/* ---- small helpers ---------------------------------------------------------------- */

static inline uint64_t now_ns(void)
{
	return invoke_clock_ns();
}

static inline uint64_t after_ms(uint64_t ms)
{
	return now_ns() + ms * 1000000ull;
}

static inline int ep_add(struct pool *p, int fd, struct tag *t)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
				  .data.ptr = t };

	return epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

static inline void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static inline bool again(void)
{
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- across the files ------------------------------------------------------------------ */

/* Why a VM is given up on: one counter each (struct pool_status). */
enum fail_kind {
	FAIL_START, /* it never became idle: spawn_failures, with back-off */
	FAIL_CRASH, /* it died or broke the protocol in service: crashes */
	FAIL_HANG,  /* it did not answer in time and was killed: killed */
	FAIL_RESET, /* its reset failed: reset_failures */
};
/* pool.c */
/* A control request's body arrived (c->body): answers it (status) and frees it. */
void pool_handle_control(struct pool *p, struct client *c);

/* pool_vm.c */
void pool_refill(struct pool *p);                         /* spawn up to --size VMs */
void pool_vm_progress(struct pool *p, struct pool_vm *vm); /* an event on one of its fds */
void pool_vm_timeout(struct pool *p, struct pool_vm *vm); /* its deadline passed */
/* Kills vm, answers its client UNAVAILABLE, counts the failure as kind, refills. */
void pool_vm_fail(struct pool *p, struct pool_vm *vm, enum fail_kind kind, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void pool_vm_release(struct pool *p, struct pool_vm *vm); /* invocation over: reset or retire */
void pool_vm_retire(struct pool *p, struct pool_vm *vm);  /* ask it to exit */

/* pool_spawner.c */
/* The VM's paths in the run directory: -ENAMETOOLONG if one does not fit. */
int pool_vm_paths(const char *run_dir, unsigned id, char *ctl, size_t ctl_cap, char *uds,
		  size_t uds_cap, char *log, size_t log_cap);
int pool_spawner_start(struct pool *p);            /* before any client, before seccomp */
int pool_spawner_spawn(struct pool *p, struct pool_vm *vm); /* sets pid and its fds */
int pool_spawner_unlink_socket(struct pool *p);    /* removes --socket's file */
void pool_spawner_stop(struct pool *p);            /* it kills and reaps what is left */
void pool_vm_kill(struct pool_vm *vm);             /* SIGKILL through its pidfd */
void pool_spawner_events(struct pool *p);          /* exit reports: reaps VMs */

/* pool_client.c */
void pool_accept_clients(struct pool *p);
void pool_client_event(struct pool *p, struct client *c, uint32_t events);
void pool_client_progress(struct pool *p, struct client *c);
/* Closes c (its invocation, if any, is aborted); freed after the batch. */
void pool_client_close(struct pool *p, struct client *c);
/* Replies the pool makes: sent after `discard` payload bytes were read and dropped. */
void pool_reply_status(struct pool *p, struct client *c, uint16_t status, uint64_t id,
		       uint64_t discard, bool close_after, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));
void pool_reply_control(struct pool *p, struct client *c, uint8_t *body, size_t len,
			bool close_after);
void pool_reply_control_error(struct pool *p, struct client *c, const struct api_request *rq,
			      const char *msg, bool close_after);
struct client *pool_queue_pop(struct pool *p);
void pool_vm_idle(struct pool *p, struct pool_vm *vm);    /* hands it to the queue's head */
void pool_drop_idle(struct pool *p, struct pool_vm *vm);
void pool_relay(struct pool *p, struct pool_vm *vm);      /* moves a busy VM's bytes */
void pool_abort_invocation(struct pool *p, struct pool_vm *vm); /* the client's fault */

/* The run directory and the files in it (the spawner at its end; the pool when its set-up
 * fails before the spawner runs). */
void pool_remove_run_dir(const char *dir);

#endif
