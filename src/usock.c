/*
 * Unix sockets only their owner can use: the control socket (--api-sock) and the pool's
 * socket (--socket). The socket file gets its mode from bind (umask 0177: 0600; with
 * --api-group umask 0117: 0660, then lchown to that group), never from a chmod; a live
 * socket at the path is never taken over (a connect() tells live from stale); and each
 * peer's credentials (SO_PEERCRED) are checked on accept, because file modes alone are
 * not enough when a directory or a mode is misconfigured. FORMAT.md section 9.
 */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "vmm.h"

int usock_parse_group(const char *val, gid_t *gid, struct errbuf *eb)
{
	char buf[4096], *end;
	struct group gr, *res = NULL;
	unsigned long n;

	if (!*val)
		return errbuf_set(eb, -EINVAL, "--api-group: empty group");
	errno = 0;
	n = strtoul(val, &end, 10);
	if (*val >= '0' && *val <= '9' && !*end && !errno && n < UINT_MAX) {
		*gid = (gid_t)n;
		return 0;
	}
	if (getgrnam_r(val, &gr, buf, sizeof(buf), &res) || !res)
		return errbuf_set(eb, -EINVAL, "--api-group: '%s' is neither a group name nor a "
				  "number", val);
	*gid = res->gr_gid;
	return 0;
}

/* 1: something accepts connections at sa (live), 0: nobody does (stale). */
static int socket_is_live(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int r;

	if (fd < 0)
		return 1; /* cannot tell: do not take it over */
	r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	/* EAGAIN: a full backlog, which is a live server too */
	r = r == 0 || errno == EAGAIN || errno == EINPROGRESS ? 1 : 0;
	close(fd);
	return r;
}

int usock_listen(const char *path, const char *flag, const struct usock_access *acc,
		 int backlog, struct errbuf *eb)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return errbuf_set(eb, -ENAMETOOLONG, "%s %s: longer than a Unix socket path can be "
				  "(%zu bytes)", flag, path, sizeof(sa.sun_path) - 1);
	strcpy(sa.sun_path, path);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return errbuf_set(eb, -EEXIST, "%s %s: exists and is not a socket", flag, path);
		if (socket_is_live(&sa))
			return errbuf_set(eb, -EADDRINUSE, "%s %s: another process is serving this "
					  "socket; not taking it over", flag, path);
		unlink(path); /* stale: nobody listens */
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errbuf_set(eb, -errno, "%s: socket: %s", flag, strerror(errno));
	/* the mode comes from bind, never from a chmod by path (which follows a symlink an
	 * intruder could swap in): 0600, or 0660 for --api-group; until the lchown below the
	 * group is ember's own, whose members the peer check refuses anyway */
	old = umask(acc->has_group ? 0117 : 0177);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0) {
		r = errbuf_set(eb, -errno, "%s %s: %s", flag, path, strerror(errno));
		goto fail;
	}
	if (acc->has_group && lchown(path, (uid_t)-1, acc->gid) < 0) {
		r = errbuf_set(eb, -errno, "%s %s: handing it to group %u (--api-group): %s", flag,
			       path, (unsigned)acc->gid, strerror(errno));
		unlink(path);
		goto fail;
	}
	if (listen(fd, backlog) < 0) {
		r = errbuf_set(eb, -errno, "%s %s: listen: %s", flag, path, strerror(errno));
		unlink(path);
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return r;
}

static bool in_groups(int fd, gid_t gid)
{
	gid_t groups[256];
	socklen_t len = sizeof(groups);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
		return false;
	for (size_t i = 0; i < len / sizeof(gid_t); i++)
		if (groups[i] == gid)
			return true;
	return false;
}

bool usock_peer_allowed(int fd, const struct usock_access *acc, struct ucred *cred)
{
	socklen_t len = sizeof(*cred);

	memset(cred, 0, sizeof(*cred));
	cred->uid = (uid_t)-1;
	cred->gid = (gid_t)-1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) < 0)
		return false;
	if (cred->uid == 0 || cred->uid == geteuid())
		return true;
	return acc->has_group && (cred->gid == acc->gid || in_groups(fd, acc->gid));
}
