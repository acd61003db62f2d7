/* newc archives for tests: the parser the kernel's unpacker amounts to. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

static uint32_t hex8(const uint8_t *p)
{
	char s[9];

	memcpy(s, p, 8);
	s[8] = 0;
	for (unsigned i = 0; i < 8; i++)
		cr_assert(isxdigit((unsigned char)s[i]), "bad hex field '%s' in a cpio header", s);
	return (uint32_t)strtoul(s, NULL, 16);
}

unsigned cpio_parse(const uint8_t *a, size_t len, struct cpio_entry *e, unsigned max)
{
	size_t off = 0;
	unsigned n = 0;

	for (;;) {
		uint32_t namesize, filesize;
		struct cpio_entry x = { 0 };

		cr_assert_leq(off + 110, len, "cpio: header at %zu runs past the end", off);
		cr_assert_eq(memcmp(a + off, "070701", 6), 0, "cpio: no newc magic at %zu", off);
		x.mode = hex8(a + off + 14);
		filesize = hex8(a + off + 54);
		x.rmajor = hex8(a + off + 78);
		x.rminor = hex8(a + off + 86);
		namesize = hex8(a + off + 94);
		cr_assert(namesize >= 2 && namesize <= sizeof(x.name), "cpio: namesize %u", namesize);
		cr_assert_leq(off + 110 + namesize, len);
		memcpy(x.name, a + off + 110, namesize);
		cr_assert_eq(x.name[namesize - 1], 0, "cpio: name not NUL-terminated at %zu", off);
		off = (off + 110 + namesize + 3) & ~(size_t)3;
		cr_assert_leq(off + filesize, len, "cpio: %s runs past the end", x.name);
		x.data = a + off;
		x.size = filesize;
		off = (off + filesize + 3) & ~(size_t)3;
		if (!strcmp(x.name, "TRAILER!!!"))
			break;
		cr_assert_lt(n, max, "cpio: more than %u entries", max);
		e[n++] = x;
	}
	for (; off < len; off++)
		cr_assert_eq(a[off], 0, "cpio: non-zero bytes after the trailer");
	return n;
}

const struct cpio_entry *cpio_find(const struct cpio_entry *e, unsigned n,
					  const char *name)
{
	for (unsigned i = 0; i < n; i++)
		if (!strcmp(e[i].name, name))
			return &e[i];
	return NULL;
}
