/*
 * `ember ctl`: a client for the control socket. Sends one request, prints the
 * response as "key: value" lines, exits 0 when the VMM answered ok, 1 otherwise,
 * 2 for usage errors (an unknown verb or a wrong argument count). `ember pool status`
 * speaks the same framing to a pool's socket and prints with it, as JSON on request.
 */
#include <errno.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "snapfmt.h"

static const struct {
	const char *verb;
	unsigned nargs;
	const char *arg_key;
} verbs[] = {
	{ "status", 0, NULL },	 { "pause", 0, NULL },	{ "resume", 0, NULL },
	{ "shutdown", 0, NULL }, { "snapshot", 1, "dir" }, { "guest-cmd", 1, "cmd" },
	{ "reset", 0, NULL },	 { "metrics", 0, NULL },
};

static void pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

int ctl_exchange(const char *path, const void *req, size_t req_len, uint8_t *resp, size_t cap,
		 size_t *len, uint64_t timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	/* a snapshot of a large guest may take a while; a dead peer must not hang us */
	struct timeval tv = { .tv_sec = (time_t)(timeout_ms / 1000),
			      .tv_usec = (suseconds_t)(timeout_ms % 1000 * 1000) };
	uint8_t hdr[4] = { (uint8_t)(req_len >> 24), (uint8_t)(req_len >> 16),
			   (uint8_t)(req_len >> 8), (uint8_t)req_len };
	size_t got = 0, want = 4;
	int fd, r = 0;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (!timeout_ms)
		tv.tv_sec = CTL_DEFAULT_TIMEOUT_MS / 1000;
	/* the send timeout bounds connect() too (a full backlog) */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    send(fd, hdr, 4, MSG_NOSIGNAL) != 4 ||
	    send(fd, req, req_len, MSG_NOSIGNAL) != (ssize_t)req_len) {
		r = errno == EAGAIN || errno == EINPROGRESS ? -ETIMEDOUT : -errno;
		goto out;
	}
	while (got < want) {
		ssize_t n = recv(fd, resp + got, want - got, 0);

		if (n <= 0) {
			r = n == 0 ? -ECONNRESET : errno == EAGAIN ? -ETIMEDOUT : -errno;
			goto out;
		}
		got += (size_t)n;
		if (got == 4 && want == 4) {
			want = 4 + ((size_t)resp[0] << 24 | (size_t)resp[1] << 16 |
				    (size_t)resp[2] << 8 | resp[3]);
			if (want > cap || want == 4) {
				r = -EPROTO;
				goto out;
			}
		}
	}
	*len = want - 4;
out:
	close(fd);
	return r;
}

/* A string from the server as printable ASCII: a hostile VMM must not reach the terminal
 * with escape sequences. */
static void print_escaped(FILE *f, const char *s, size_t n)
{
	char esc[4 * API_MAX_FRAME / 64 + 8];

	invoke_escape(s, n, esc, sizeof(esc));
	fputs(esc, f);
}

static void print_scalar(const msgpack_object *v)
{
	switch (v->type) {
	case MSGPACK_OBJECT_STR:
		print_escaped(stdout, v->via.str.ptr, v->via.str.size);
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		printf("%" PRIu64, v->via.u64);
		break;
	case MSGPACK_OBJECT_BOOLEAN:
		printf("%s", v->via.boolean ? "true" : "false");
		break;
	default:
		printf("(type %d)", v->type);
	}
}

/* "key: value"; an array of maps as one "key: k=v k=v" line per element */
static void print_value(const char *key, size_t klen, const msgpack_object *v)
{
	if (v->type != MSGPACK_OBJECT_ARRAY) {
		print_escaped(stdout, key, klen);
		printf(": ");
		/* the VM generation in 16 hex digits, as the guest prints it (JSON: a number) */
		if (klen == 10 && !memcmp(key, "generation", 10) &&
		    v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
			printf("%016" PRIx64, v->via.u64);
		else
			print_scalar(v);
		printf("\n");
		return;
	}
	for (uint32_t i = 0; i < v->via.array.size; i++) {
		const msgpack_object *e = &v->via.array.ptr[i];

		print_escaped(stdout, key, klen);
		printf(":");
		if (e->type != MSGPACK_OBJECT_MAP) {
			printf(" ");
			print_scalar(e);
		}
		for (uint32_t j = 0; e->type == MSGPACK_OBJECT_MAP && j < e->via.map.size; j++) {
			const msgpack_object *k = &e->via.map.ptr[j].key;

			if (k->type != MSGPACK_OBJECT_STR)
				continue;
			printf(" ");
			print_escaped(stdout, k->via.str.ptr, k->via.str.size);
			printf("=");
			print_scalar(&e->via.map.ptr[j].val);
		}
		printf("\n");
	}
}

/* `ember ctl metrics`: one "ember-metrics key=value ..." line, arrays comma-separated */
static void print_metrics_line(const msgpack_object *map)
{
	printf("ember-metrics");
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key, *v = &map->via.map.ptr[i].val;

		if (k->type != MSGPACK_OBJECT_STR ||
		    (k->via.str.size == 2 && !memcmp(k->via.str.ptr, "ok", 2)))
			continue;
		printf(" ");
		print_escaped(stdout, k->via.str.ptr, k->via.str.size);
		printf("=");
		if (v->type != MSGPACK_OBJECT_ARRAY) {
			print_scalar(v);
			continue;
		}
		for (uint32_t j = 0; j < v->via.array.size; j++) {
			if (j)
				printf(",");
			print_scalar(&v->via.array.ptr[j]);
		}
	}
	printf("\n");
}

/* as ctl_print_response; metrics_line: a success as one ember-metrics line */
static int print_response(const uint8_t *body, size_t len, bool json, const char *who,
			  bool metrics_line)
{
	msgpack_unpacked u;
	struct snap_err se;
	size_t off = 0;
	const msgpack_object *err, *ok_v;
	bool ok;

	if (snap_msgpack_precheck(body, len, &se)) {
		fprintf(stderr, "%s: malformed response: %s\n", who, se.msg);
		return 1;
	}
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, (const char *)body, len, &off) != MSGPACK_UNPACK_SUCCESS) {
		msgpack_unpacked_destroy(&u);
		fprintf(stderr, "%s: malformed response\n", who);
		return 1;
	}
	ok_v = snap_map_get(&u.data, "ok");
	ok = ok_v && ok_v->type == MSGPACK_OBJECT_BOOLEAN && ok_v->via.boolean;
	err = snap_map_get(&u.data, "error");
	if (json) {
		struct json_w w;

		json_begin(&w, stdout);
		json_msgpack(&w, NULL, &u.data);
	}
	if (!ok) {
		fprintf(stderr, "%s: refused: ", who);
		if (err && err->type == MSGPACK_OBJECT_STR)
			print_escaped(stderr, err->via.str.ptr, err->via.str.size);
		else
			fputs("(no message)", stderr);
		fputc('\n', stderr);
		msgpack_unpacked_destroy(&u);
		return 1;
	}
	if (!json && metrics_line) {
		print_metrics_line(&u.data);
		msgpack_unpacked_destroy(&u);
		return 0;
	}
	if (!json)
		printf("ok\n");
	for (uint32_t i = 0; !json && i < u.data.via.map.size; i++) {
		const msgpack_object *k = &u.data.via.map.ptr[i].key, *v = &u.data.via.map.ptr[i].val;

		if (k->type != MSGPACK_OBJECT_STR ||
		    (k->via.str.size == 2 && !memcmp(k->via.str.ptr, "ok", 2)))
			continue;
		print_value(k->via.str.ptr, k->via.str.size, v);
	}
	msgpack_unpacked_destroy(&u);
	return 0;
}

int ctl_print_response(const uint8_t *body, size_t len, bool json, const char *who)
{
	return print_response(body, len, json, who, false);
}

/* Every ember ctl message is "ember ctl: <message>"; usage errors add the hint, exit 2. */
__attribute__((format(printf, 1, 2)))
static int ctl_usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("ember ctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'ember --help'.\n", stderr);
	return 2;
}

int ctl_run(const struct cli *c)
{
	char who[64];
	static uint8_t resp[4 + API_MAX_FRAME];
	const char *verb = c->ctl_args[0];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t len = 0, i;
	int r;

	for (i = 0; i < ARRAY_SIZE(verbs); i++)
		if (!strcmp(verb, verbs[i].verb))
			break;
	if (i == ARRAY_SIZE(verbs)) {
		char esc[256];

		invoke_escape(verb, strlen(verb), esc, sizeof(esc));
		return ctl_usage_error("unknown verb '%s' (status, metrics, pause, resume, "
				       "shutdown, snapshot, guest-cmd, reset)", esc);
	}
	if (c->nr_ctl_args - 1 != verbs[i].nargs)
		return ctl_usage_error("%s takes %u argument%s", verb, verbs[i].nargs,
				       verbs[i].nargs == 1 ? "" : "s");
	if ((c->ctl_diff || c->compress) && strcmp(verb, "snapshot"))
		return ctl_usage_error("--diff and --compress only apply to snapshot");
	snprintf(who, sizeof(who), "ember ctl: %s", verb);

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1 + verbs[i].nargs + (c->ctl_diff ? 1 : 0) + (c->compress ? 1 : 0) +
			      (c->standby ? 1 : 0));
	pack_str(&pk, "verb");
	pack_str(&pk, verb);
	if (verbs[i].nargs) {
		char abs[4096];
		const char *arg = c->ctl_args[1];

		/* the VMM's working directory is not ours: send an absolute path */
		if (!strcmp(verbs[i].arg_key, "dir") && arg[0] != '/' && getcwd(abs, sizeof(abs)) &&
		    strlen(abs) + 1 + strlen(arg) < sizeof(abs)) {
			strcat(abs, "/");
			strcat(abs, arg);
			arg = abs;
		}
		pack_str(&pk, verbs[i].arg_key);
		pack_str(&pk, arg);
	}
	if (c->ctl_diff) {
		pack_str(&pk, "diff");
		msgpack_pack_true(&pk);
	}
	if (c->compress) {
		pack_str(&pk, "compress");
		msgpack_pack_true(&pk);
	}
	if (c->standby) {
		pack_str(&pk, "standby");
		msgpack_pack_true(&pk);
	}
	r = ctl_exchange(c->api_sock, sb.data, sb.size, resp, sizeof(resp), &len,
			 c->vm.timeout_ms);
	msgpack_sbuffer_destroy(&sb);
	if (r == -ENOENT || r == -ECONNREFUSED || r == -ENOTSOCK) {
		fprintf(stderr, "ember ctl: %s: %s: is ember running with --api-sock %s?\n",
			c->api_sock, strerror(-r), c->api_sock);
		return 1;
	}
	if (r == -ETIMEDOUT) {
		fprintf(stderr, "ember ctl: %s: no answer within %.3g s (--timeout): the VMM is "
			"stopped or stuck\n", c->api_sock, (double)c->vm.timeout_ms / 1000);
		return 1;
	}
	if (r == -EPROTO) {
		fprintf(stderr, "ember ctl: %s: malformed response frame\n", c->api_sock);
		return 1;
	}
	if (r) {
		fprintf(stderr, "ember ctl: %s: %s\n", c->api_sock, strerror(-r));
		return 1;
	}
	return print_response(resp + 4, len, c->json, who, !strcmp(verb, "metrics"));
}
