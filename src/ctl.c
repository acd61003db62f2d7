/*
 * `ember ctl`: a client for the control socket. Sends one request, prints the
 * response as "key: value" lines, exits 0 when the VMM answered ok, 1 otherwise,
 * 2 for usage errors (an unknown verb or a wrong argument count).
 */
#include <errno.h>
#include <inttypes.h>
#include <msgpack.h>
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
	{ "reset", 0, NULL },
};

static void pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static int exchange(const char *path, const msgpack_sbuffer *req, uint8_t *resp, size_t cap,
		    size_t *len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	/* a snapshot of a large guest may take a while; a dead peer must not hang us */
	struct timeval tv = { .tv_sec = 120 };
	uint8_t hdr[4] = { (uint8_t)(req->size >> 24), (uint8_t)(req->size >> 16),
			   (uint8_t)(req->size >> 8), (uint8_t)req->size };
	size_t got = 0, want = 4;
	int fd, r = 0;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    send(fd, hdr, 4, MSG_NOSIGNAL) != 4 ||
	    send(fd, req->data, req->size, MSG_NOSIGNAL) != (ssize_t)req->size) {
		r = -errno;
		goto out;
	}
	while (got < want) {
		ssize_t n = recv(fd, resp + got, want - got, 0);

		if (n <= 0) {
			r = n == 0 ? -ECONNRESET : -errno;
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
	*len = want;
out:
	close(fd);
	return r;
}

static void print_value(const char *key, size_t klen, const msgpack_object *v)
{
	switch (v->type) {
	case MSGPACK_OBJECT_STR:
		printf("%.*s: %.*s\n", (int)klen, key, (int)v->via.str.size, v->via.str.ptr);
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		printf("%.*s: %" PRIu64 "\n", (int)klen, key, v->via.u64);
		break;
	case MSGPACK_OBJECT_BOOLEAN:
		printf("%.*s: %s\n", (int)klen, key, v->via.boolean ? "true" : "false");
		break;
	default:
		printf("%.*s: (type %d)\n", (int)klen, key, v->type);
	}
}

/* Prints the response; returns 0 when it says ok. */
static int print_response(const uint8_t *body, size_t len)
{
	msgpack_unpacked u;
	struct snap_err se;
	size_t off = 0;
	bool ok = false;
	const msgpack_object *err = NULL;

	if (snap_msgpack_precheck(body, len, &se)) {
		fprintf(stderr, "ember ctl: malformed response: %s\n", se.msg);
		return 1;
	}
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, (const char *)body, len, &off) != MSGPACK_UNPACK_SUCCESS) {
		msgpack_unpacked_destroy(&u);
		fprintf(stderr, "ember ctl: malformed response\n");
		return 1;
	}
	for (uint32_t i = 0; i < u.data.via.map.size; i++) {
		const msgpack_object *k = &u.data.via.map.ptr[i].key, *v = &u.data.via.map.ptr[i].val;

		if (k->type != MSGPACK_OBJECT_STR)
			continue;
		if (k->via.str.size == 2 && !memcmp(k->via.str.ptr, "ok", 2))
			ok = v->type == MSGPACK_OBJECT_BOOLEAN && v->via.boolean;
		else if (k->via.str.size == 5 && !memcmp(k->via.str.ptr, "error", 5))
			err = v;
	}
	if (!ok) {
		if (err && err->type == MSGPACK_OBJECT_STR)
			fprintf(stderr, "ember ctl: error: %.*s\n", (int)err->via.str.size,
				err->via.str.ptr);
		else
			fprintf(stderr, "ember ctl: error (no message)\n");
		msgpack_unpacked_destroy(&u);
		return 1;
	}
	printf("ok\n");
	for (uint32_t i = 0; i < u.data.via.map.size; i++) {
		const msgpack_object *k = &u.data.via.map.ptr[i].key, *v = &u.data.via.map.ptr[i].val;

		if (k->type != MSGPACK_OBJECT_STR ||
		    (k->via.str.size == 2 && !memcmp(k->via.str.ptr, "ok", 2)))
			continue;
		print_value(k->via.str.ptr, k->via.str.size, v);
	}
	msgpack_unpacked_destroy(&u);
	return 0;
}

int ctl_run(const struct cli *c)
{
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
		fprintf(stderr, "ember: ctl: unknown verb '%s'\nTry 'ember --help'.\n", verb);
		return 2;
	}
	if (c->nr_ctl_args - 1 != verbs[i].nargs) {
		fprintf(stderr, "ember: ctl %s: takes %u argument%s\nTry 'ember --help'.\n", verb,
			verbs[i].nargs, verbs[i].nargs == 1 ? "" : "s");
		return 2;
	}
	if ((c->ctl_diff || c->compress) && strcmp(verb, "snapshot")) {
		fprintf(stderr, "ember: ctl: --diff and --compress only apply to snapshot\n");
		return 2;
	}

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
	r = exchange(c->api_sock, &sb, resp, sizeof(resp), &len);
	msgpack_sbuffer_destroy(&sb);
	if (r) {
		fprintf(stderr, "ember ctl: %s: %s\n", c->api_sock, strerror(-r));
		return 1;
	}
	return print_response(resp + 4, len - 4);
}
