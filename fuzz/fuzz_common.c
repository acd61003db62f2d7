/* Scratch files for the targets whose parsers read from a snapshot directory. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "snapfmt.h"
#include "snapfmt_int.h"

static char dir[64];

static void remove_dir(void)
{
	static const char *const names[] = { "state.msgpack", "memory.raw", "memory.lz4",
					     "memory.idx", "ws.bin" };
	char p[128];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
		unlink(p);
	}
	rmdir(dir);
}

const char *fuzz_dir(void)
{
	if (!dir[0]) {
		const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

		snprintf(dir, sizeof(dir), "%s/ember-fuzz-%d", base, (int)getpid());
		if (mkdir(dir, 0700) && access(dir, W_OK)) {
			perror(dir);
			abort();
		}
		atexit(remove_dir);
	}
	return dir;
}

void fuzz_write_file(const char *name, const void *buf, size_t len)
{
	char p[128];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", fuzz_dir(), name);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || (len && write(fd, buf, len) != (ssize_t)len) || close(fd)) {
		perror(p);
		abort();
	}
}

void fuzz_write_state(const struct snap_state *st)
{
	struct snap_err err = { "" };
	uint8_t *buf;
	size_t len;

	if (snap_state_encode(st, &buf, &len, &err)) {
		fprintf(stderr, "fuzz: encoding the harness's state: %s\n", err.msg);
		abort();
	}
	fuzz_write_file("state.msgpack", buf, len);
	free(buf);
}

void fuzz_fix_crc(uint8_t *buf, size_t len, size_t at, size_t from)
{
	if (len >= from && from >= at + 4)
		snap_put_le32(buf + at, snap_crc32c(0, buf + from, len - from));
}

void fuzz_write_file_crc(const char *name, const uint8_t *data, size_t size)
{
	uint8_t *buf = malloc(size + 1);

	if (!buf)
		abort();
	memcpy(buf, data, size);
	/* chunk-index and working-set headers: CRC32C at 12 over everything from 16 */
	fuzz_fix_crc(buf, size, 12, 16);
	fuzz_write_file(name, buf, size);
	free(buf);
}
