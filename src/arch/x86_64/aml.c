/*
 * A small writer of AML (ACPI Machine Language, ACPI 6.3 chapter 20), just what ember's
 * DSDT needs: names, integers, strings, buffers, packages, scopes, devices, a method
 * with an If and a Notify, and resource descriptors (chapter 6.4).
 *
 * Objects with a PkgLength (scope, device, method, if, package) are opened and closed:
 * opening reserves the longest PkgLength (4 bytes), closing writes the real one and
 * moves the body down, so the caller writes the body in order with no size known up
 * front. Any misuse (buffer full, bad name, unbalanced close) sets a->bad and later
 * writes do nothing; aml_finish reports it once.
 */
#include <errno.h>
#include <string.h>

#include "x86.h"

/* Opcodes (ACPI 6.3 section 20.3) */
#define AML_ZERO        0x00
#define AML_ONE         0x01
#define AML_NAME        0x08
#define AML_BYTE        0x0a
#define AML_WORD        0x0b
#define AML_DWORD       0x0c
#define AML_STRING      0x0d
#define AML_QWORD       0x0e
#define AML_SCOPE       0x10
#define AML_BUFFER      0x11
#define AML_PACKAGE     0x12
#define AML_METHOD      0x14
#define AML_DUAL_NAME   0x2e
#define AML_MULTI_NAME  0x2f
#define AML_EXT         0x5b
#define AML_EXT_DEVICE  0x82
#define AML_ROOT        0x5c
#define AML_ARG0        0x68
#define AML_NOTIFY      0x86
#define AML_LEQUAL      0x93
#define AML_IF          0xa0
#define AML_ONES        0xff

#define AML_PKGLEN_MAX  4
#define AML_PKGLEN_LIMIT (1u << 28)

void aml_init(struct aml *a, uint8_t *buf, size_t cap)
{
	memset(a, 0, sizeof(*a));
	a->buf = buf;
	a->cap = cap;
}

void aml_bytes(struct aml *a, const void *p, size_t n)
{
	if (a->bad)
		return;
	if (n > a->cap - a->len) {
		a->bad = true;
		return;
	}
	memcpy(a->buf + a->len, p, n);
	a->len += n;
}

static void put8(struct aml *a, uint8_t v)
{
	aml_bytes(a, &v, 1);
}

static void put_le(struct aml *a, uint64_t v, unsigned n)
{
	uint8_t b[8];

	for (unsigned i = 0; i < n; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	aml_bytes(a, b, n);
}

static bool seg_ok(const char *s)
{
	for (int i = 0; i < 4; i++) {
		char c = s[i];

		if (!((c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9')))
			return false;
	}
	return true;
}

/* "\_SB_.VGEN", "_HID": an optional root prefix, then 4-character segments joined by '.' */
void aml_namestring(struct aml *a, const char *path)
{
	size_t n, segs;

	if (*path == '\\') {
		put8(a, AML_ROOT);
		path++;
	}
	n = strlen(path);
	if (n == 0) {
		put8(a, AML_ZERO); /* NullName */
		return;
	}
	if ((n + 1) % 5 != 0) {
		a->bad = true;
		return;
	}
	segs = (n + 1) / 5;
	for (size_t i = 0; i < segs; i++)
		if (!seg_ok(path + 5 * i) || (i + 1 < segs && path[5 * i + 4] != '.'))
			a->bad = true;
	if (segs > 255)
		a->bad = true;
	if (segs == 2)
		put8(a, AML_DUAL_NAME);
	else if (segs > 2) {
		put8(a, AML_MULTI_NAME);
		put8(a, (uint8_t)segs);
	}
	for (size_t i = 0; i < segs; i++)
		aml_bytes(a, path + 5 * i, 4);
}

void aml_integer(struct aml *a, uint64_t v)
{
	if (v == 0)
		put8(a, AML_ZERO);
	else if (v == 1)
		put8(a, AML_ONE);
	else if (v <= 0xff) {
		put8(a, AML_BYTE);
		put_le(a, v, 1);
	} else if (v <= 0xffff) {
		put8(a, AML_WORD);
		put_le(a, v, 2);
	} else if (v <= 0xffffffffu) {
		put8(a, AML_DWORD);
		put_le(a, v, 4);
	} else {
		put8(a, AML_QWORD);
		put_le(a, v, 8);
	}
}

void aml_dword(struct aml *a, uint32_t v)
{
	put8(a, AML_DWORD);
	put_le(a, v, 4);
}

void aml_string(struct aml *a, const char *s)
{
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p > 0x7f) /* AsciiCharList: 0x01-0x7f */
			a->bad = true;
	put8(a, AML_STRING);
	aml_bytes(a, s, strlen(s) + 1);
}

/* EISAID("PNP0501"): three letters in 5 bits each, then four hex digits, big-endian. */
void aml_eisaid(struct aml *a, const char *id)
{
	uint32_t v = 0;

	if (strlen(id) != 7) {
		a->bad = true;
		return;
	}
	for (int i = 0; i < 3; i++) {
		if (id[i] < 'A' || id[i] > 'Z')
			a->bad = true;
		v = (v << 5) | (uint32_t)((id[i] - 0x40) & 0x1f);
	}
	for (int i = 3; i < 7; i++) {
		char c = id[i];
		unsigned d = (c >= '0' && c <= '9') ? (unsigned)(c - '0')
			   : (c >= 'A' && c <= 'F') ? (unsigned)(c - 'A' + 10) : 16;

		if (d > 15)
			a->bad = true;
		v = (v << 4) | (d & 0xf);
	}
	/* the 32-bit value is stored as its bytes in big-endian order */
	aml_dword(a, ((v >> 24) & 0xff) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) |
			     ((v << 24) & 0xff000000u));
}

void aml_name(struct aml *a, const char *name)
{
	put8(a, AML_NAME);
	aml_namestring(a, name);
}

/* Opens a PkgLength: 4 bytes reserved, shrunk by aml_end. */
static void open_pkg(struct aml *a)
{
	if (a->depth == AML_MAX_DEPTH)
		a->bad = true;
	if (a->bad)
		return;
	a->open[a->depth++] = a->len;
	put_le(a, 0, AML_PKGLEN_MAX);
}

void aml_end(struct aml *a)
{
	size_t at, body;
	uint32_t total;
	unsigned n;
	uint8_t enc[AML_PKGLEN_MAX];

	if (a->depth == 0)
		a->bad = true;
	if (a->bad)
		return;
	at = a->open[--a->depth];
	body = a->len - at - AML_PKGLEN_MAX;
	/* the encoded length counts its own bytes */
	if (body + 1 < 0x40)
		n = 1;
	else if (body + 2 < (1u << 12))
		n = 2;
	else if (body + 3 < (1u << 20))
		n = 3;
	else if (body + 4 < AML_PKGLEN_LIMIT)
		n = 4;
	else {
		a->bad = true;
		return;
	}
	total = (uint32_t)(body + n);
	if (n == 1)
		enc[0] = (uint8_t)total;
	else {
		enc[0] = (uint8_t)(((n - 1) << 6) | (total & 0xf));
		for (unsigned i = 1; i < n; i++)
			enc[i] = (uint8_t)(total >> (4 + 8 * (i - 1)));
	}
	memmove(a->buf + at + n, a->buf + at + AML_PKGLEN_MAX, body);
	memcpy(a->buf + at, enc, n);
	a->len -= AML_PKGLEN_MAX - n;
}

void aml_scope(struct aml *a, const char *name)
{
	put8(a, AML_SCOPE);
	open_pkg(a);
	aml_namestring(a, name);
}

void aml_device(struct aml *a, const char *name)
{
	put8(a, AML_EXT);
	put8(a, AML_EXT_DEVICE);
	open_pkg(a);
	aml_namestring(a, name);
}

void aml_method(struct aml *a, const char *name, unsigned nargs, bool serialized)
{
	if (nargs > 7)
		a->bad = true;
	put8(a, AML_METHOD);
	open_pkg(a);
	aml_namestring(a, name);
	put8(a, (uint8_t)((nargs & 7) | (serialized ? 1u << 3 : 0))); /* SyncLevel 0 */
}

void aml_if(struct aml *a)
{
	put8(a, AML_IF);
	open_pkg(a);
}

void aml_package(struct aml *a, unsigned nelems)
{
	if (nelems > 255)
		a->bad = true;
	put8(a, AML_PACKAGE);
	open_pkg(a);
	put8(a, (uint8_t)nelems);
}

void aml_buffer(struct aml *a, const uint8_t *data, size_t len)
{
	put8(a, AML_BUFFER);
	open_pkg(a);
	aml_integer(a, len);
	aml_bytes(a, data, len);
	aml_end(a);
}

void aml_lequal(struct aml *a)
{
	put8(a, AML_LEQUAL);
}

void aml_arg(struct aml *a, unsigned n)
{
	if (n > 6)
		a->bad = true;
	put8(a, (uint8_t)(AML_ARG0 + (n % 7)));
}

void aml_notify(struct aml *a, const char *path, uint64_t value)
{
	put8(a, AML_NOTIFY);
	aml_namestring(a, path);
	aml_integer(a, value);
}

int aml_finish(const struct aml *a)
{
	return a->bad || a->depth ? -E2BIG : 0;
}

/* ---- resource descriptors (ACPI 6.3 section 6.4), for a ResourceTemplate buffer ---- */
#define RES_IRQ_NOFLAGS  0x22 /* small item 4, length 2 */
#define RES_IO           0x47 /* small item 8, length 7 */
#define RES_END          0x79 /* small item 0xf, length 1 */
#define RES_MEM32_FIXED  0x86 /* large item 6 */
#define RES_EXT_IRQ      0x89 /* large item 9 */

void aml_res_io(struct aml *a, uint16_t base, uint8_t len)
{
	put8(a, RES_IO);
	put8(a, 1); /* decodes 16 address bits */
	put_le(a, base, 2);
	put_le(a, base, 2);
	put8(a, 1); /* alignment */
	put8(a, len);
}

void aml_res_irq(struct aml *a, unsigned irq)
{
	if (irq > 15)
		a->bad = true;
	put8(a, RES_IRQ_NOFLAGS); /* edge, active high, exclusive */
	put_le(a, 1u << (irq & 15), 2);
}

void aml_res_mem32(struct aml *a, uint32_t base, uint32_t len)
{
	put8(a, RES_MEM32_FIXED);
	put_le(a, 9, 2);
	put8(a, 1); /* read-write */
	put_le(a, base, 4);
	put_le(a, len, 4);
}

void aml_res_ext_irq(struct aml *a, uint32_t gsi)
{
	put8(a, RES_EXT_IRQ);
	put_le(a, 6, 2);
	/* consumer (bit 0), edge (bit 1); active high, exclusive, no wake */
	put8(a, 0x03);
	put8(a, 1);
	put_le(a, gsi, 4);
}

void aml_res_end(struct aml *a)
{
	put8(a, RES_END);
	put8(a, 0); /* checksum 0: "the buffer is treated as checksummed" */
}
