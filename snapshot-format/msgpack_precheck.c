/*
 * Bounds pre-pass over an untrusted msgpack body, run before msgpack-c sees it.
 *
 * msgpack-c allocates array and map storage from the declared lengths before reading
 * the elements, so 5 bytes can ask for gigabytes. This walk checks the encoding
 * itself: every declared length fits in the bytes that remain, nesting, string, bin
 * and container sizes are capped, keys are strings, no ext/float/reserved types, one
 * top-level map and nothing after it. After it passes, msgpack-c's allocations are
 * bounded by SNAP_MAX_OBJECTS objects that really exist in the buffer.
 */
#include <errno.h>
#include <inttypes.h>

#include "snapfmt_int.h"

enum obj_class { OC_SCALAR, OC_STR, OC_BIN, OC_ARRAY, OC_MAP };

struct obj {
	enum obj_class cls;
	size_t hdr;     /* header bytes */
	uint64_t n;     /* payload bytes (str/bin) or entries (array/map) */
	const char *name;
};

static uint64_t be(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* Decodes the object header at p (avail >= 1 bytes). */
static int parse_header(const uint8_t *p, size_t avail, size_t off, struct obj *o,
			struct snap_err *err)
{
	uint8_t t = p[0];
	unsigned lenbytes = 0;

	o->n = 0;
	o->hdr = 1;
	o->cls = OC_SCALAR;
	if (t <= 0x7f || t >= 0xe0) {
		o->name = "integer";
		return 0;
	}
	if (t <= 0x8f) {
		o->cls = OC_MAP; o->n = t & 0x0f; o->name = "map";
		return 0;
	}
	if (t <= 0x9f) {
		o->cls = OC_ARRAY; o->n = t & 0x0f; o->name = "array";
		return 0;
	}
	if (t <= 0xbf) {
		o->cls = OC_STR; o->n = t & 0x1f; o->name = "string";
		return 0;
	}
	switch (t) {
	case 0xc0: o->name = "nil"; return 0;
	case 0xc2: case 0xc3: o->name = "boolean"; return 0;
	case 0xc4: case 0xc5: case 0xc6:
		o->cls = OC_BIN; o->name = "bin"; lenbytes = 1u << (t - 0xc4); break;
	case 0xcc: case 0xcd: case 0xce: case 0xcf:
		o->name = "integer"; o->hdr = 1 + (1u << (t - 0xcc)); break;
	case 0xd0: case 0xd1: case 0xd2: case 0xd3:
		o->name = "integer"; o->hdr = 1 + (1u << (t - 0xd0)); break;
	case 0xd9: case 0xda: case 0xdb:
		o->cls = OC_STR; o->name = "string"; lenbytes = 1u << (t - 0xd9); break;
	case 0xdc: case 0xdd:
		o->cls = OC_ARRAY; o->name = "array"; lenbytes = 2u << (t - 0xdc); break;
	case 0xde: case 0xdf:
		o->cls = OC_MAP; o->name = "map"; lenbytes = 2u << (t - 0xde); break;
	case 0xca: case 0xcb:
		return snap_err_set(err, -EINVAL, "state body offset %zu: float values are not used by this format", off);
	case 0xc7: case 0xc8: case 0xc9: case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
		return snap_err_set(err, -EINVAL, "state body offset %zu: ext values are not used by this format", off);
	default:
		return snap_err_set(err, -EINVAL, "state body offset %zu: invalid msgpack type byte 0x%02x", off, t);
	}
	if (lenbytes) {
		o->hdr = 1 + lenbytes;
		if (avail < o->hdr)
			return snap_err_set(err, -EINVAL, "state body offset %zu: %s header truncated", off, o->name);
		o->n = be(p + 1, lenbytes);
	} else if (avail < o->hdr) {
		return snap_err_set(err, -EINVAL, "state body offset %zu: %s truncated", off, o->name);
	}
	return 0;
}

static int check_sizes(const struct obj *o, size_t rest, size_t off, struct snap_err *err)
{
	switch (o->cls) {
	case OC_STR:
		if (o->n > SNAP_MAX_STR)
			return snap_err_set(err, -EINVAL, "state body offset %zu: string of %" PRIu64 " bytes (at most %u)",
					    off, o->n, SNAP_MAX_STR);
		break;
	case OC_BIN:
		if (o->n > SNAP_MAX_BIN)
			return snap_err_set(err, -EINVAL, "state body offset %zu: bin of %" PRIu64 " bytes (at most %u)",
					    off, o->n, SNAP_MAX_BIN);
		break;
	case OC_ARRAY:
	case OC_MAP:
		if (o->n > SNAP_MAX_CONTAINER)
			return snap_err_set(err, -EINVAL, "state body offset %zu: %s of %" PRIu64 " entries (at most %u)",
					    off, o->name, o->n, SNAP_MAX_CONTAINER);
		break;
	case OC_SCALAR:
		return 0;
	}
	if (o->cls == OC_STR || o->cls == OC_BIN) {
		if (o->n > rest)
			return snap_err_set(err, -EINVAL, "state body offset %zu: %s declares %" PRIu64 " bytes but only %zu remain",
					    off, o->name, o->n, rest);
	} else {
		/* every element takes at least one byte; a map entry two */
		uint64_t need = o->cls == OC_MAP ? 2 * o->n : o->n;
		if (need > rest)
			return snap_err_set(err, -EINVAL, "state body offset %zu: %s declares %" PRIu64 " entries but only %zu bytes remain",
					    off, o->name, o->n, rest);
	}
	return 0;
}

int snap_msgpack_precheck(const uint8_t *body, size_t len, struct snap_err *err)
{
	struct { uint32_t left; bool is_map; } stack[SNAP_MAX_DEPTH];
	unsigned depth = 0;
	size_t pos = 0, objects = 0;
	int ret;

	if (len == 0)
		return snap_err_set(err, -EINVAL, "state body is empty");
	if (len > SNAP_MAX_BODY)
		return snap_err_set(err, -EFBIG, "state body of %zu bytes (at most %u)", len, SNAP_MAX_BODY);
	do {
		bool is_key = depth && stack[depth - 1].is_map && stack[depth - 1].left % 2 == 0;
		struct obj o = { .name = "object" };

		if (pos >= len)
			return snap_err_set(err, -EINVAL, "state body truncated at offset %zu (inside a container)", pos);
		ret = parse_header(body + pos, len - pos, pos, &o, err);
		if (ret)
			return ret;
		if (++objects > SNAP_MAX_OBJECTS)
			return snap_err_set(err, -EINVAL, "state body offset %zu: more than %u objects", pos,
					    SNAP_MAX_OBJECTS);
		if (depth == 0 && o.cls != OC_MAP)
			return snap_err_set(err, -EINVAL, "state body: top-level object is a %s, not a map", o.name);
		if (is_key && o.cls != OC_STR)
			return snap_err_set(err, -EINVAL, "state body offset %zu: map key is a %s, not a string",
					    pos, o.name);
		ret = check_sizes(&o, len - pos - o.hdr, pos, err);
		if (ret)
			return ret;
		if (depth)
			stack[depth - 1].left--;
		pos += o.hdr;
		if (o.cls == OC_STR || o.cls == OC_BIN) {
			pos += (size_t)o.n;
		} else if ((o.cls == OC_ARRAY || o.cls == OC_MAP) && o.n) {
			if (depth == SNAP_MAX_DEPTH)
				return snap_err_set(err, -EINVAL, "state body offset %zu: nesting deeper than %u",
						    pos - o.hdr, SNAP_MAX_DEPTH);
			stack[depth].left = (uint32_t)(o.cls == OC_MAP ? 2 * o.n : o.n);
			stack[depth].is_map = o.cls == OC_MAP;
			depth++;
		}
		while (depth && stack[depth - 1].left == 0)
			depth--;
	} while (depth);
	if (pos != len)
		return snap_err_set(err, -EINVAL, "state body: %zu trailing bytes after the top-level map", len - pos);
	return 0;
}
