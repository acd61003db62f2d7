/*
 * mkcpio: writes a newc ("070701") cpio archive, the initramfs format the kernel
 * unpacks, from a spec on stdin, so that the kit needs no cpio package and its archive
 * is byte-for-byte reproducible (owner root, mtime 0). Spec lines (as the kernel's
 * usr/gen_init_cpio takes them):
 *
 *   dir   <name> <mode>
 *   file  <name> <source path> <mode>
 *   nod   <name> <mode> c|b <major> <minor>
 *   slink <name> <target> <mode>
 *
 * modes are octal; names have no leading slash in the archive. Usage: mkcpio OUT < SPEC
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static FILE *out;
static uint64_t offset;
static unsigned ino = 721; /* any start: the kernel only pairs hard links by it */

static int put(const void *p, size_t n)
{
	if (n && fwrite(p, 1, n, out) != n)
		return -EIO;
	offset += n;
	return 0;
}

static int pad4(void)
{
	static const char zeros[4];

	return put(zeros, (4 - offset % 4) % 4);
}

static int entry(const char *name, unsigned mode, unsigned maj, unsigned min,
		 const void *data, size_t len)
{
	char hdr[111];
	size_t nlen = strlen(name) + 1;

	while (name[0] == '/')
		name++, nlen--;
	snprintf(hdr, sizeof(hdr),
		 "070701%08X%08X%08X%08X%08X%08X%08zX%08X%08X%08X%08X%08zX%08X", ino++, mode, 0u,
		 0u, S_ISDIR(mode) ? 2u : 1u, 0u, len, 0u, 0u, maj, min, nlen, 0u);
	if (put(hdr, 110) || put(name, nlen) || pad4() || put(data, len) || pad4())
		return -EIO;
	return 0;
}

static void *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
		goto out;
	buf = malloc((size_t)n + 1);
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	*len = (size_t)n;
out:
	fclose(f);
	return buf;
}

static int line_entry(char *line, unsigned lineno)
{
	char name[256], a[512], t[4];
	unsigned mode, maj, min;
	size_t len;
	void *data;
	int r;

	if (line[0] == '#' || line[strspn(line, " \t\n")] == 0)
		return 0;
	if (sscanf(line, "dir %255s %o", name, &mode) == 2)
		return entry(name, S_IFDIR | mode, 0, 0, NULL, 0);
	if (sscanf(line, "file %255s %511s %o", name, a, &mode) == 3) {
		data = slurp(a, &len);
		if (!data) {
			fprintf(stderr, "mkcpio: line %u: cannot read %s: %s\n", lineno, a,
				strerror(errno));
			return -ENOENT;
		}
		r = entry(name, S_IFREG | mode, 0, 0, data, len);
		free(data);
		return r;
	}
	if (sscanf(line, "nod %255s %o %3s %u %u", name, &mode, t, &maj, &min) == 5 &&
	    (!strcmp(t, "c") || !strcmp(t, "b")))
		return entry(name, (t[0] == 'c' ? S_IFCHR : S_IFBLK) | mode, maj, min, NULL, 0);
	if (sscanf(line, "slink %255s %511s %o", name, a, &mode) == 3)
		return entry(name, S_IFLNK | mode, 0, 0, a, strlen(a));
	fprintf(stderr, "mkcpio: line %u: cannot parse: %s", lineno, line);
	return -EINVAL;
}

int main(int argc, char **argv)
{
	char line[1024];
	unsigned lineno = 0;
	int r = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: mkcpio OUT < SPEC\n");
		return 2;
	}
	out = fopen(argv[1], "wb");
	if (!out) {
		fprintf(stderr, "mkcpio: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	while (!r && fgets(line, sizeof(line), stdin))
		r = line_entry(line, ++lineno);
	if (!r)
		r = entry("TRAILER!!!", 0, 0, 0, NULL, 0);
	if (fclose(out) || r) {
		fprintf(stderr, "mkcpio: writing %s failed\n", argv[1]);
		remove(argv[1]);
		return 1;
	}
	return 0;
}
