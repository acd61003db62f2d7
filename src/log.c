/* Logging to stderr with an "ember:" prefix, and the errbuf used on untrusted paths. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm.h"

static enum log_level level = LOG_WARN;

/* EMBER_LOG=debug|info|warn|error overrides the default before main() parses flags. */
__attribute__((constructor)) static void log_init_from_env(void)
{
	const char *e = getenv("EMBER_LOG");
	if (!e)
		return;
	if (!strcmp(e, "debug"))
		level = LOG_DEBUG;
	else if (!strcmp(e, "info"))
		level = LOG_INFO;
	else if (!strcmp(e, "error"))
		level = LOG_ERROR;
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
	fwrite(line, 1, (size_t)n, stderr);
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
