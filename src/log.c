/* Logging to stderr (or --log-file) with an "ember:" prefix, and the errbuf used on
 * untrusted paths. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm.h"

static enum log_level level = LOG_WARN;
static int log_fd = 2;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

int log_parse_level(const char *s, enum log_level *out)
{
	for (size_t i = 0; i < ARRAY_SIZE(level_names); i++) {
		if (!strcmp(s, level_names[i])) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* EMBER_LOG=debug|info|warn|error sets the level of programs that do not parse it
 * themselves (the test binaries); ember checks it in cli_parse and refuses bad values. */
__attribute__((constructor)) static void log_init_from_env(void)
{
	const char *e = getenv("EMBER_LOG");

	if (e)
		log_parse_level(e, &level);
}

int log_fd_get(void)
{
	return log_fd;
}

int log_open_file(const char *path, struct errbuf *eb)
{
	/* O_NONBLOCK: a FIFO without a reader must not block the open */
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC, 0600);
	struct stat st;

	if (fd < 0 && errno == ENXIO)
		goto fifo; /* a FIFO nobody reads yet */
	if (fd < 0)
		return errbuf_set(eb, -errno, "--log-file %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		int e = errno;

		close(fd);
		return errbuf_set(eb, -e, "--log-file %s: %s", path, strerror(e));
	}
	if (S_ISFIFO(st.st_mode)) {
		close(fd);
		goto fifo;
	}
	/* a regular file (or a tty, /dev/null): ordinary blocking writes */
	fcntl(fd, F_SETFL, O_APPEND);
	goto done;
fifo:
	/* As Firecracker's logger does: hold the FIFO open for reading too, so that the open
	 * never waits for a reader and a reader that goes away is no SIGPIPE; keep it
	 * non-blocking, so that when nobody reads, lines fill the pipe buffer (64 KiB on
	 * Linux) and the ones after that are dropped instead of stalling the VMM. */
	fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return errbuf_set(eb, -errno, "--log-file %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode)) {
		close(fd);
		return errbuf_set(eb, -EINVAL, "--log-file %s: changed while being opened", path);
	}
done:
	if (log_fd != 2)
		close(log_fd);
	log_fd = fd;
	return 0;
}

void log_set_level(enum log_level lvl)
{
	level = lvl;
}

enum log_level log_get_level(void)
{
	return level;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	static const char *const prefix[] = { "error: ", "warning: ", "", "debug: " };
	char line[1024];
	va_list ap;
	int n;

	if (lvl > level)
		return;
	/* One write per message so lines from vCPU threads do not interleave. */
	n = snprintf(line, sizeof(line), "ember: %s", prefix[lvl]);
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof(line) - 1)
		n = (int)sizeof(line) - 2;
	if (line[n - 1] != '\n')
		line[n++] = '\n';
	if (write(log_fd, line, (size_t)n) < 0) {
		/* a full FIFO drops the line (see log_open_file); nothing else to do */
	}
}

int errbuf_set(struct errbuf *eb, int err, const char *fmt, ...)
{
	va_list ap;

	if (eb) {
		va_start(ap, fmt);
		vsnprintf(eb->msg, sizeof(eb->msg), fmt, ap);
		va_end(ap);
	}
	return err;
}
