/*
 * Untrusted state-file bytes -> struct snap_state.
 *
 * Order matters: preamble (magic, length, CRC32C) before any decoding, then the
 * bounds pre-pass, then msgpack-c, then a schema walk that checks every type and range
 * and names the exact path of a bad value, then the semantic validation. Unknown keys
 * are ignored (minor-version evolution); missing required keys and duplicate known
 * keys are errors.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "snapfmt_int.h"

/*
 * The path to the value being decoded, kept as segments and formatted only when an
 * error is reported (formatting it eagerly cost half the decode time).
 */
#define MAX_SEGS 24
struct dctx {
	struct { const char *key; uint32_t len, idx; } seg[MAX_SEGS]; /* key NULL: [idx] */
	unsigned depth;
	struct snap_err *err;
};

static const char *type_name(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: return "nil";
	case MSGPACK_OBJECT_BOOLEAN: return "boolean";
	case MSGPACK_OBJECT_POSITIVE_INTEGER: return "unsigned integer";
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "negative integer";
	case MSGPACK_OBJECT_STR: return "string";
	case MSGPACK_OBJECT_BIN: return "bin";
	case MSGPACK_OBJECT_ARRAY: return "array";
	case MSGPACK_OBJECT_MAP: return "map";
	default: return "unsupported type";
	}
}

/* Copies an untrusted string for an error message, replacing unprintable bytes. */
static size_t printable(char *dst, size_t size, const char *src, size_t n)
{
	size_t i;

	for (i = 0; i < n && i + 1 < size; i++)
		dst[i] = isprint((unsigned char)src[i]) ? src[i] : '?';
	dst[i] = '\0';
	return i;
}

static void path_str(const struct dctx *c, char *buf, size_t size)
{
	size_t n = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < c->depth && n + 1 < size; i++) {
		if (c->seg[i].key) {
			if (i)
				buf[n++] = '.';
			n += printable(buf + n, size - n, c->seg[i].key, c->seg[i].len);
		} else {
			int k = snprintf(buf + n, size - n, "[%" PRIu32 "]", c->seg[i].idx);
			n += k > 0 && (size_t)k < size - n ? (size_t)k : 0;
		}
	}
	if (!c->depth)
		snprintf(buf, size, "state");
}

__attribute__((format(printf, 3, 4)))
static int fail(struct dctx *c, int code, const char *fmt, ...)
{
	char path[160], msg[320];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	path_str(c, path, sizeof(path));
	return snap_err_set(c->err, code, "%s: %s", path, msg);
}

#define bad(c, ...) fail(c, -EINVAL, __VA_ARGS__)

static unsigned push_key(struct dctx *c, const char *key, size_t klen)
{
	unsigned old = c->depth;

	if (c->depth < MAX_SEGS) {
		c->seg[c->depth].key = key;
		c->seg[c->depth].len = (uint32_t)klen;
		c->depth++;
	}
	return old;
}

static unsigned push_index(struct dctx *c, uint32_t i)
{
	unsigned old = c->depth;

	if (c->depth < MAX_SEGS) {
		c->seg[c->depth].key = NULL;
		c->seg[c->depth].idx = i;
		c->depth++;
	}
	return old;
}

static void pop(struct dctx *c, unsigned old)
{
	c->depth = old;
}

/* Device and field names; the path is formatted only on failure. */
static int check_name(struct dctx *c, const char *name, size_t len)
{
	char path[160];

	if (!snap_dev_check_name("", name, len, NULL))
		return 0;
	path_str(c, path, sizeof(path));
	return snap_dev_check_name(path, name, len, c->err);
}

static int get_uint(struct dctx *c, const msgpack_object *v, uint64_t max, uint64_t *out)
{
	if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return bad(c, "expected unsigned integer, got %s", type_name(v));
	if (v->via.u64 > max)
		return bad(c, "%" PRIu64 " is out of range (at most %" PRIu64 ")", v->via.u64, max);
	*out = v->via.u64;
	return 0;
}

static int walk_struct(struct dctx *c, const msgpack_object *o, const struct sschema *s, void *base);
static int walk_devices(struct dctx *c, const msgpack_object *v, struct snap_state *st);

static int walk_array_of_structs(struct dctx *c, const msgpack_object *v, const struct sfield *f,
				 void *base, uint8_t *p)
{
	uint32_t n = v->via.array.size;
	uint8_t *arr = p;

	if (f->kind == SF_STRUCTS && n != f->max)
		return bad(c, "expected exactly %u entries, got %u", f->max, n);
	if (n > f->max)
		return bad(c, "%u entries exceed the maximum of %u", n, f->max);
	if (f->kind == SF_HSTRUCTS) {
		arr = n ? calloc(n, f->elem) : NULL;
		if (n && !arr)
			return fail(c, -ENOMEM, "out of memory");
		/* owned by the state from here on, so snap_state_free cleans up on error */
		memcpy(p, &arr, sizeof(arr));
	}
	if (f->kind != SF_STRUCTS)
		memcpy((uint8_t *)base + f->off_n, &n, sizeof(n));
	for (uint32_t i = 0; i < n; i++) {
		unsigned old = push_index(c, i);
		int ret = walk_struct(c, &v->via.array.ptr[i], f->sub, arr + (size_t)i * f->elem);
		if (ret)
			return ret;
		pop(c, old);
	}
	return 0;
}

static int walk_field(struct dctx *c, const msgpack_object *v, const struct sfield *f, void *base)
{
	uint8_t *p = (uint8_t *)base + f->off;
	uint64_t u = 0;
	int ret;

	switch (f->kind) {
	case SF_UINT:
		ret = get_uint(c, v, sf_max_u(f->width), &u);
		if (!ret)
			sf_put_u(p, f->width, u);
		return ret;
	case SF_SINT: {
		int64_t s;
		if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
			s = v->via.i64;
		else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= INT64_MAX)
			s = (int64_t)v->via.u64;
		else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
			return bad(c, "%" PRIu64 " is out of range for a signed 64-bit integer", v->via.u64);
		else
			return bad(c, "expected integer, got %s", type_name(v));
		memcpy(p, &s, sizeof(s));
		return 0;
	}
	case SF_STR:
		if (v->type != MSGPACK_OBJECT_STR)
			return bad(c, "expected string, got %s", type_name(v));
		if (v->via.str.size > f->max)
			return bad(c, "string of %u bytes (at most %u)", v->via.str.size, f->max);
		if (memchr(v->via.str.ptr, '\0', v->via.str.size))
			return bad(c, "string contains a NUL byte");
		memcpy(p, v->via.str.ptr, v->via.str.size);
		p[v->via.str.size] = '\0';
		return 0;
	case SF_ENUM: {
		char shown[40], known[128] = "";
		size_t kl = 0;

		if (v->type != MSGPACK_OBJECT_STR)
			return bad(c, "expected string, got %s", type_name(v));
		for (uint32_t i = 0; i < f->max; i++) {
			if (strlen(f->names[i]) == v->via.str.size &&
			    !memcmp(f->names[i], v->via.str.ptr, v->via.str.size)) {
				memcpy(p, &i, sizeof(i));
				return 0;
			}
		}
		printable(shown, sizeof(shown), v->via.str.ptr, v->via.str.size);
		for (uint32_t i = 0; i < f->max && kl < sizeof(known); i++)
			kl += (size_t)snprintf(known + kl, sizeof(known) - kl, "%s%s", i ? ", " : "", f->names[i]);
		return bad(c, "unknown value \"%s\" (this ember knows: %s)", shown, known);
	}
	case SF_STRUCT:
		return walk_struct(c, v, f->sub, p);
	case SF_UINTS:
		if (v->type != MSGPACK_OBJECT_ARRAY)
			return bad(c, "expected array, got %s", type_name(v));
		if (v->via.array.size != f->max)
			return bad(c, "expected exactly %u entries, got %u", f->max, v->via.array.size);
		for (uint32_t i = 0; i < f->max; i++) {
			unsigned old = push_index(c, i);
			ret = get_uint(c, &v->via.array.ptr[i], sf_max_u(f->width), &u);
			if (ret)
				return ret;
			sf_put_u(p + (size_t)i * f->width, f->width, u);
			pop(c, old);
		}
		return 0;
	case SF_STRUCTS:
	case SF_VSTRUCTS:
	case SF_HSTRUCTS:
		if (v->type != MSGPACK_OBJECT_ARRAY)
			return bad(c, "expected array, got %s", type_name(v));
		return walk_array_of_structs(c, v, f, base, p);
	case SF_BLOB:
		if (v->type != MSGPACK_OBJECT_BIN)
			return bad(c, "expected bin, got %s", type_name(v));
		if (v->via.bin.size != f->max)
			return bad(c, "expected exactly %u bytes, got %u", f->max, v->via.bin.size);
		memcpy(p, v->via.bin.ptr, f->max);
		return 0;
	case SF_HBLOB: {
		uint32_t n = v->via.bin.size;
		uint8_t *copy;
		if (v->type != MSGPACK_OBJECT_BIN)
			return bad(c, "expected bin, got %s", type_name(v));
		if (n < f->min || n > f->max)
			return bad(c, "%u bytes (%u..%u allowed)", n, f->min, f->max);
		copy = malloc(n ? n : 1);
		if (!copy)
			return fail(c, -ENOMEM, "out of memory");
		memcpy(copy, v->via.bin.ptr, n);
		memcpy(p, &copy, sizeof(copy));
		memcpy((uint8_t *)base + f->off_n, &n, sizeof(n));
		return 0;
	}
	case SF_DEVICES:
		return walk_devices(c, v, base);
	}
	return bad(c, "internal error: unknown schema kind %d", f->kind);
}

static const struct sfield *find_key(const struct sschema *s, const msgpack_object *k, unsigned *idx)
{
	for (unsigned i = 0; i < s->n; i++) {
		if (s->f[i].klen == k->via.str.size &&
		    !memcmp(s->f[i].key, k->via.str.ptr, k->via.str.size)) {
			*idx = i;
			return &s->f[i];
		}
	}
	return NULL;
}

static int walk_struct(struct dctx *c, const msgpack_object *o, const struct sschema *s, void *base)
{
	uint64_t seen = 0;

	if (o->type != MSGPACK_OBJECT_MAP)
		return bad(c, "expected map, got %s", type_name(o));
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key;
		const struct sfield *f;
		unsigned idx;
		unsigned old;
		int ret;

		if (k->type != MSGPACK_OBJECT_STR)
			return bad(c, "map key is a %s, not a string", type_name(k));
		f = find_key(s, k, &idx);
		if (!f)
			continue; /* unknown key: written by a newer minor version */
		old = push_key(c, f->key, f->klen);
		if (seen & (1ull << idx))
			return bad(c, "duplicate key");
		seen |= 1ull << idx;
		ret = walk_field(c, &o->via.map.ptr[i].val, f, base);
		if (ret)
			return ret;
		pop(c, old);
	}
	for (unsigned i = 0; i < s->n; i++) {
		if (!(seen & (1ull << i)) && !(s->f[i].flags & SFF_OPT)) {
			push_key(c, s->f[i].key, s->f[i].klen);
			return bad(c, "missing");
		}
	}
	return 0;
}

/* ---- devices: {name, version, state: {field: uint | bin}} ---- */
static int walk_dev_state(struct dctx *c, const msgpack_object *v, struct snap_device *d)
{
	uint32_t n;

	if (v->type != MSGPACK_OBJECT_MAP)
		return bad(c, "expected map, got %s", type_name(v));
	n = v->via.map.size;
	if (n > SNAP_DEV_MAX_FIELDS)
		return bad(c, "%u fields exceed the maximum of %u", n, SNAP_DEV_MAX_FIELDS);
	d->fields = n ? calloc(n, sizeof(*d->fields)) : NULL;
	if (n && !d->fields)
		return fail(c, -ENOMEM, "out of memory");
	d->cap_fields = n;
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *k = &v->via.map.ptr[i].key, *val = &v->via.map.ptr[i].val;
		struct snap_dev_field *f = &d->fields[i];
		unsigned old;
		int ret;

		if (k->type != MSGPACK_OBJECT_STR)
			return bad(c, "field name is a %s, not a string", type_name(k));
		old = push_key(c, k->via.str.ptr, k->via.str.size);
		ret = check_name(c, k->via.str.ptr, k->via.str.size);
		if (ret)
			return ret;
		memcpy(f->name, k->via.str.ptr, k->via.str.size);
		f->name[k->via.str.size] = '\0';
		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(d->fields[j].name, f->name))
				return bad(c, "duplicate field");
		if (val->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
			f->type = SNAP_DEV_U64;
			f->u64 = val->via.u64;
		} else if (val->type == MSGPACK_OBJECT_BIN) {
			if (val->via.bin.size > SNAP_DEV_BIN_MAX)
				return bad(c, "bin of %u bytes (at most %u)", val->via.bin.size, SNAP_DEV_BIN_MAX);
			f->bin = malloc(val->via.bin.size ? val->via.bin.size : 1);
			if (!f->bin)
				return fail(c, -ENOMEM, "out of memory");
			if (val->via.bin.size)
				memcpy(f->bin, val->via.bin.ptr, val->via.bin.size);
			f->type = SNAP_DEV_BIN;
			f->len = val->via.bin.size;
		} else {
			return bad(c, "expected unsigned integer or bin, got %s", type_name(val));
		}
		d->nr_fields = i + 1;
		pop(c, old);
	}
	return 0;
}

static int walk_device(struct dctx *c, const msgpack_object *o, struct snap_device *d)
{
	static const char *const keys[] = { "name", "version", "state" };
	unsigned seen = 0;

	if (o->type != MSGPACK_OBJECT_MAP)
		return bad(c, "expected map, got %s", type_name(o));
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
		unsigned idx;
		uint64_t u = 0;
		unsigned old;
		int ret = 0;

		if (k->type != MSGPACK_OBJECT_STR)
			return bad(c, "map key is a %s, not a string", type_name(k));
		for (idx = 0; idx < 3; idx++)
			if (strlen(keys[idx]) == k->via.str.size && !memcmp(keys[idx], k->via.str.ptr, k->via.str.size))
				break;
		if (idx == 3)
			continue;
		old = push_key(c, keys[idx], strlen(keys[idx]));
		if (seen & (1u << idx))
			return bad(c, "duplicate key");
		seen |= 1u << idx;
		if (idx == 0) {
			if (v->type != MSGPACK_OBJECT_STR)
				return bad(c, "expected string, got %s", type_name(v));
			ret = check_name(c, v->via.str.ptr, v->via.str.size);
			if (!ret) {
				memcpy(d->name, v->via.str.ptr, v->via.str.size);
				d->name[v->via.str.size] = '\0';
			}
		} else if (idx == 1) {
			ret = get_uint(c, v, UINT32_MAX, &u);
			d->version = (uint32_t)u;
		} else {
			ret = walk_dev_state(c, v, d);
		}
		if (ret)
			return ret;
		pop(c, old);
	}
	for (unsigned i = 0; i < 3; i++) {
		if (!(seen & (1u << i))) {
			push_key(c, keys[i], strlen(keys[i]));
			return bad(c, "missing");
		}
	}
	return 0;
}

static int walk_devices(struct dctx *c, const msgpack_object *v, struct snap_state *st)
{
	uint32_t n;

	if (v->type != MSGPACK_OBJECT_ARRAY)
		return bad(c, "expected array, got %s", type_name(v));
	n = v->via.array.size;
	if (n > SNAP_MAX_DEVICES)
		return bad(c, "%u devices exceed the maximum of %u", n, SNAP_MAX_DEVICES);
	if (!n)
		return 0;
	st->devices = calloc(SNAP_MAX_DEVICES, sizeof(*st->devices));
	if (!st->devices)
		return snap_err_set(c->err, -ENOMEM, "devices: out of memory");
	for (uint32_t i = 0; i < n; i++) {
		unsigned old = push_index(c, i);
		int ret;

		st->nr_devices = i + 1;
		ret = walk_device(c, &v->via.array.ptr[i], &st->devices[i]);
		if (ret)
			return ret;
		pop(c, old);
	}
	return 0;
}

/* ---- top level ---- */
const msgpack_object *snap_map_get(const msgpack_object *m, const char *key)
{
	if (m->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < m->via.map.size; i++) {
		const msgpack_object *k = &m->via.map.ptr[i].key;
		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
		    !memcmp(k->via.str.ptr, key, k->via.str.size))
			return &m->via.map.ptr[i].val;
	}
	return NULL;
}

/*
 * A newer major version may have a different shape altogether, so its version is
 * reported before the schema walk could complain about some key.
 */
static int check_major_first(const msgpack_object *root, struct snap_err *err)
{
	const msgpack_object *h = snap_map_get(root, "header"), *maj, *min;

	if (!h || !(maj = snap_map_get(h, "major")) || maj->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return 0; /* the schema walk names what is missing */
	if (maj->via.u64 <= SNAP_FORMAT_MAJOR)
		return 0;
	min = snap_map_get(h, "minor");
	if (min && min->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		return snap_err_set(err, -ENOTSUP, "snapshot format %" PRIu64 ".%" PRIu64
				    " is newer than this ember (%u.%u)", maj->via.u64, min->via.u64,
				    SNAP_FORMAT_MAJOR, SNAP_FORMAT_MINOR);
	return snap_err_set(err, -ENOTSUP, "snapshot format %" PRIu64 ".x is newer than this ember (%u.%u)",
			    maj->via.u64, SNAP_FORMAT_MAJOR, SNAP_FORMAT_MINOR);
}

int snap_state_decode(const void *file, size_t len, struct snap_state *st, struct snap_err *err)
{
	const uint8_t *f = file, *body;
	struct dctx c = { .err = err };
	uint32_t body_len, crc_stored, crc;
	msgpack_zone zone;
	msgpack_object root;
	size_t off = 0;
	int ret;

	memset(st, 0, sizeof(*st));
	if (len < SNAP_PREAMBLE_SIZE)
		return snap_err_set(err, -EINVAL, "state file: %zu bytes, shorter than the %u-byte preamble",
				    len, SNAP_PREAMBLE_SIZE);
	if (memcmp(f, SNAP_MAGIC, 8))
		return snap_err_set(err, -EINVAL, "state file: bad magic (not an ember snapshot state file)");
	body_len = snap_get_le32(f + 8);
	crc_stored = snap_get_le32(f + 12);
	if (body_len > SNAP_MAX_BODY)
		return snap_err_set(err, -EFBIG, "state file: body of %u bytes exceeds the limit of %u",
				    body_len, SNAP_MAX_BODY);
	if ((size_t)body_len != len - SNAP_PREAMBLE_SIZE)
		return snap_err_set(err, -EINVAL, "state file: preamble declares a %u-byte body but %zu bytes follow it",
				    body_len, len - SNAP_PREAMBLE_SIZE);
	body = f + SNAP_PREAMBLE_SIZE;
	crc = snap_crc32c(0, body, body_len);
	if (crc != crc_stored)
		return snap_err_set(err, -EBADMSG, "state file: CRC32C mismatch (stored 0x%08x, computed 0x%08x): the file is corrupt",
				    crc_stored, crc);
	ret = snap_msgpack_precheck(body, body_len, err);
	if (ret)
		return ret;

	if (!msgpack_zone_init(&zone, 16384))
		return snap_err_set(err, -ENOMEM, "state decode: out of memory");
	if (msgpack_unpack((const char *)body, body_len, &off, &zone, &root) != MSGPACK_UNPACK_SUCCESS ||
	    off != body_len) {
		ret = snap_err_set(err, -EINVAL, "state body: msgpack decode failed");
		goto out;
	}
	ret = check_major_first(&root, err);
	if (ret)
		goto out;
	ret = walk_struct(&c, &root, &snap_schema_root, st);
	if (ret)
		goto out;
	ret = snap_state_validate(st, err);
out:
	msgpack_zone_destroy(&zone);
	if (ret)
		snap_state_free(st);
	return ret;
}
