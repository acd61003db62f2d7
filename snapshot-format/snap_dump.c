/*
 * The whole state as text, one "path = value" line per field, in schema order, so
 * two snapshots can be compared with diff(1). Bins print 32 bytes per line and
 * collapse all-zero runs into one explicit "= zero" line.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "snapfmt_int.h"

#define BYTES_PER_LINE 32u

struct dumper {
	FILE *out;
	char path[256];
	size_t plen;
};

/* Appends ".key" (key != NULL) or "[idx]" to the path; returns the old length for dpop(). */
static size_t dpush(struct dumper *d, const char *key, uint32_t idx)
{
	size_t old = d->plen, room = sizeof(d->path) - d->plen;
	int n = key ? snprintf(d->path + d->plen, room, "%s%s", d->plen ? "." : "", key)
		    : snprintf(d->path + d->plen, room, "[%" PRIu32 "]", idx);

	if (n > 0)
		d->plen += (size_t)n < room ? (size_t)n : room - 1;
	return old;
}

static void dpop(struct dumper *d, size_t old)
{
	d->plen = old;
	d->path[old] = '\0';
}

static void dump_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			fprintf(out, "\\x%02x", ch);
		else
			fputc(ch, out);
	}
	fputc('"', out);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void dump_bin(struct dumper *d, const uint8_t *p, uint32_t len)
{
	uint32_t off = 0;

	fprintf(d->out, "%s = <%" PRIu32 " bytes>\n", d->path, len);
	while (off < len) {
		uint32_t n = len - off < BYTES_PER_LINE ? len - off : BYTES_PER_LINE;

		if (all_zero(p + off, n)) {
			uint32_t end = off + n;
			while (end < len) {
				uint32_t m = len - end < BYTES_PER_LINE ? len - end : BYTES_PER_LINE;
				if (!all_zero(p + end, m))
					break;
				end += m;
			}
			fprintf(d->out, "%s[0x%04" PRIx32 "..0x%04" PRIx32 "] = zero\n", d->path, off, end);
			off = end;
			continue;
		}
		fprintf(d->out, "%s[0x%04" PRIx32 "] = ", d->path, off);
		for (uint32_t i = 0; i < n; i++)
			fprintf(d->out, "%02x", p[off + i]);
		fputc('\n', d->out);
		off += n;
	}
}

static void dump_uint(struct dumper *d, uint64_t v, bool hex)
{
	if (hex)
		fprintf(d->out, "%s = 0x%" PRIx64 "\n", d->path, v);
	else
		fprintf(d->out, "%s = %" PRIu64 "\n", d->path, v);
}

static void dump_struct(struct dumper *d, const struct sschema *s, const void *base);

static void dump_devices(struct dumper *d, const struct snap_state *st)
{
	fprintf(d->out, "%s = <%" PRIu32 " entries>\n", d->path, st->nr_devices);
	for (uint32_t i = 0; i < st->nr_devices; i++) {
		const struct snap_device *dev = &st->devices[i];
		size_t o1 = dpush(d, NULL, i), o2;

		o2 = dpush(d, "name", 0);
		fprintf(d->out, "%s = ", d->path);
		dump_string(d->out, dev->name);
		fputc('\n', d->out);
		dpop(d, o2);
		o2 = dpush(d, "version", 0);
		dump_uint(d, dev->version, false);
		dpop(d, o2);
		for (uint32_t j = 0; j < dev->nr_fields; j++) {
			const struct snap_dev_field *f = &dev->fields[j];
			size_t o3 = dpush(d, "state", 0);

			dpush(d, f->name, 0);
			if (f->type == SNAP_DEV_U64)
				dump_uint(d, f->u64, true);
			else
				dump_bin(d, f->bin, f->len);
			dpop(d, o3);
		}
		dpop(d, o1);
	}
}

static void dump_field(struct dumper *d, const struct sfield *f, const void *base)
{
	const uint8_t *p = (const uint8_t *)base + f->off;
	bool hex = f->flags & SFF_HEX;

	switch (f->kind) {
	case SF_UINT:
		dump_uint(d, sf_get_u(p, f->width), hex);
		break;
	case SF_SINT: {
		int64_t v;
		memcpy(&v, p, sizeof(v));
		fprintf(d->out, "%s = %" PRId64 "\n", d->path, v);
		break;
	}
	case SF_STR:
		fprintf(d->out, "%s = ", d->path);
		dump_string(d->out, (const char *)p);
		fputc('\n', d->out);
		break;
	case SF_ENUM: {
		uint32_t v = sf_get_u32(base, f->off);
		fprintf(d->out, "%s = ", d->path);
		if (v < f->max)
			dump_string(d->out, f->names[v]);
		else
			fprintf(d->out, "<unknown %" PRIu32 ">", v);
		fputc('\n', d->out);
		break;
	}
	case SF_STRUCT:
		dump_struct(d, f->sub, p);
		break;
	case SF_UINTS:
		for (uint32_t i = 0; i < f->max; i++) {
			size_t old = dpush(d, NULL, i);
			dump_uint(d, sf_get_u(p + (size_t)i * f->width, f->width), hex);
			dpop(d, old);
		}
		break;
	case SF_STRUCTS:
	case SF_VSTRUCTS:
	case SF_HSTRUCTS: {
		uint32_t n = f->kind == SF_STRUCTS ? f->max : sf_get_u32(base, f->off_n);
		const uint8_t *arr = f->kind == SF_HSTRUCTS ? sf_get_ptr(base, f->off) : p;

		fprintf(d->out, "%s = <%" PRIu32 " entries>\n", d->path, n);
		for (uint32_t i = 0; i < n; i++) {
			size_t old = dpush(d, NULL, i);
			dump_struct(d, f->sub, arr + (size_t)i * f->elem);
			dpop(d, old);
		}
		break;
	}
	case SF_BLOB:
		dump_bin(d, p, f->max);
		break;
	case SF_HBLOB:
		dump_bin(d, sf_get_ptr(base, f->off), sf_get_u32(base, f->off_n));
		break;
	case SF_DEVICES:
		dump_devices(d, base);
		break;
	}
}

static void dump_struct(struct dumper *d, const struct sschema *s, const void *base)
{
	for (unsigned i = 0; i < s->n; i++) {
		size_t old;

		if (sf_omitted(&s->f[i], base))
			continue;
		old = dpush(d, s->f[i].key, 0);
		dump_field(d, &s->f[i], base);
		dpop(d, old);
	}
}

int snap_dump(FILE *out, const struct snap_state *st)
{
	struct dumper d = { .out = out };

	dump_struct(&d, &snap_schema_root, st);
	return ferror(out) ? -EIO : 0;
}
