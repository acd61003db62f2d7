/*
 * Editing a snapshot's state file at the msgpack level, for bad-snapshot tests.
 * snap_state_encode validates before it writes, so an invalid state (0 vCPUs, an
 * overlapping region, a device field out of range) cannot be produced through
 * libsnapfmt: decode the body with msgpack-c, edit the object tree at a path such as
 * "vcpus[0].cpuid[3].ebx", re-encode it, and write a fresh preamble with the right
 * length and CRC32C so the file gets past the checksum to the check under test.
 *
 * Every edit clones what it changes inside the msgpack zone, so copies made by
 * snapmut_resize never share containers with their original.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snapfmt.h"
#include "testlib.h"

struct snapmut {
	uint8_t *file;          /* the original state file: strings point into it */
	size_t len;
	msgpack_unpacked u;     /* the tree; its zone holds every edit */
};

uint8_t *snapt_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t cap = 0, n = 0, got;

	cr_assert_not_null(f, "opening %s: %s", path, strerror(errno));
	do {
		if (n == cap) {
			cap = cap ? cap * 2 : 65536;
			buf = realloc(buf, cap);
			cr_assert_not_null(buf);
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
	} while (got);
	cr_assert_eq(ferror(f), 0, "reading %s", path);
	fclose(f);
	*len = n;
	return buf;
}

void snapt_fix_preamble(uint8_t *file, size_t len)
{
	uint32_t body = (uint32_t)(len - SNAP_PREAMBLE_SIZE);
	uint32_t crc;

	cr_assert_geq(len, SNAP_PREAMBLE_SIZE);
	crc = snap_crc32c(0, file + SNAP_PREAMBLE_SIZE, body);
	for (int i = 0; i < 4; i++) {
		file[8 + i] = (uint8_t)(body >> (8 * i));
		file[12 + i] = (uint8_t)(crc >> (8 * i));
	}
}

struct snapmut *snapmut_load(const char *dir)
{
	struct snapmut *m = calloc(1, sizeof(*m));
	char path[PATH_MAX];
	size_t off = 0;

	cr_assert_not_null(m);
	snprintf(path, sizeof(path), "%s/%s", dir, SNAP_STATE_FILE);
	m->file = snapt_read_file(path, &m->len);
	cr_assert_gt(m->len, SNAP_PREAMBLE_SIZE, "%s is too short to edit", path);
	msgpack_unpacked_init(&m->u);
	cr_assert_eq(msgpack_unpack_next(&m->u, (const char *)m->file + SNAP_PREAMBLE_SIZE,
					 m->len - SNAP_PREAMBLE_SIZE, &off),
		     MSGPACK_UNPACK_SUCCESS, "%s: body is not msgpack", path);
	cr_assert_eq(m->u.data.type, MSGPACK_OBJECT_MAP, "%s: body is not a map", path);
	return m;
}

void snapmut_free(struct snapmut *m)
{
	if (!m)
		return;
	msgpack_unpacked_destroy(&m->u);
	free(m->file);
	free(m);
}

/* ---- paths ------------------------------------------------------------------------ */

static msgpack_object *map_lookup(msgpack_object *map, const char *key, size_t klen)
{
	if (map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		msgpack_object *k = &map->via.map.ptr[i].key;

		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
		    !memcmp(k->via.str.ptr, key, klen))
			return &map->via.map.ptr[i].val;
	}
	return NULL;
}

/* "a.b[2].c": map keys separated by dots, array indices in brackets. */
msgpack_object *snapmut_get(struct snapmut *m, const char *path)
{
	msgpack_object *o = &m->u.data;
	const char *p = path;

	while (*p && o) {
		if (*p == '.') {
			p++;
		} else if (*p == '[') {
			char *end;
			unsigned long idx = strtoul(p + 1, &end, 10);

			cr_assert_eq(*end, ']', "bad index in path %s", path);
			if (o->type != MSGPACK_OBJECT_ARRAY || idx >= o->via.array.size)
				return NULL;
			o = &o->via.array.ptr[idx];
			p = end + 1;
		} else {
			size_t n = strcspn(p, ".[");

			o = map_lookup(o, p, n);
			p += n;
		}
	}
	return o;
}

static msgpack_object *must_get(struct snapmut *m, const char *path)
{
	msgpack_object *o = snapmut_get(m, path);

	cr_assert_not_null(o, "state has no %s", path);
	return o;
}

/* ---- edits -------------------------------------------------------------------------- */

static msgpack_object clone_object(struct snapmut *m, msgpack_object o)
{
	msgpack_zone *z = m->u.zone;

	if (o.type == MSGPACK_OBJECT_ARRAY && o.via.array.size) {
		msgpack_object *a = msgpack_zone_malloc(z, o.via.array.size * sizeof(*a));

		cr_assert_not_null(a);
		for (uint32_t i = 0; i < o.via.array.size; i++)
			a[i] = clone_object(m, o.via.array.ptr[i]);
		o.via.array.ptr = a;
	} else if (o.type == MSGPACK_OBJECT_MAP && o.via.map.size) {
		msgpack_object_kv *kv = msgpack_zone_malloc(z, o.via.map.size * sizeof(*kv));

		cr_assert_not_null(kv);
		for (uint32_t i = 0; i < o.via.map.size; i++) {
			kv[i].key = o.via.map.ptr[i].key;
			kv[i].val = clone_object(m, o.via.map.ptr[i].val);
		}
		o.via.map.ptr = kv;
	}
	return o; /* str/bin payloads are never written through: sharing them is safe */
}

void snapmut_set_u64(struct snapmut *m, const char *path, uint64_t v)
{
	msgpack_object *o = must_get(m, path);

	o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
	o->via.u64 = v;
}

void snapmut_set_str(struct snapmut *m, const char *path, const char *s)
{
	msgpack_object *o = must_get(m, path);
	size_t n = strlen(s);
	char *copy = msgpack_zone_malloc(m->u.zone, n ? n : 1);

	cr_assert_not_null(copy);
	memcpy(copy, s, n);
	o->type = MSGPACK_OBJECT_STR;
	o->via.str.ptr = copy;
	o->via.str.size = (uint32_t)n;
}

void snapmut_set_bin(struct snapmut *m, const char *path, const void *data, uint32_t len)
{
	msgpack_object *o = must_get(m, path);
	char *copy = msgpack_zone_malloc(m->u.zone, len ? len : 1);

	cr_assert_not_null(copy);
	memcpy(copy, data, len);
	o->type = MSGPACK_OBJECT_BIN;
	o->via.bin.ptr = copy;
	o->via.bin.size = len;
}

uint64_t snapmut_get_u64(struct snapmut *m, const char *path)
{
	msgpack_object *o = must_get(m, path);

	cr_assert_eq(o->type, MSGPACK_OBJECT_POSITIVE_INTEGER, "%s is not an unsigned integer", path);
	return o->via.u64;
}

void snapmut_resize(struct snapmut *m, const char *array_path, uint32_t n)
{
	msgpack_object *o = must_get(m, array_path);
	msgpack_object *a;

	cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY, "%s is not an array", array_path);
	cr_assert(n <= o->via.array.size || o->via.array.size > 0,
		  "cannot grow the empty array %s: nothing to copy", array_path);
	a = msgpack_zone_malloc(m->u.zone, (n ? n : 1) * sizeof(*a));
	cr_assert_not_null(a);
	for (uint32_t i = 0; i < n; i++)
		a[i] = i < o->via.array.size ? o->via.array.ptr[i]
					     : clone_object(m, o->via.array.ptr[o->via.array.size - 1]);
	o->via.array.ptr = a;
	o->via.array.size = n;
}

void snapmut_remove(struct snapmut *m, const char *array_path, uint32_t index)
{
	msgpack_object *o = must_get(m, array_path);

	cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY, "%s is not an array", array_path);
	cr_assert_lt(index, o->via.array.size, "%s has no element %u", array_path, index);
	/* the array lives in the zone or in the unpacked tree: both are ours to edit */
	memmove(&o->via.array.ptr[index], &o->via.array.ptr[index + 1],
		(o->via.array.size - index - 1) * sizeof(o->via.array.ptr[0]));
	o->via.array.size--;
}

void snapmut_remove_key(struct snapmut *m, const char *map_path, const char *key)
{
	msgpack_object *o = must_get(m, map_path);

	cr_assert_eq(o->type, MSGPACK_OBJECT_MAP, "%s is not a map", map_path);
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		msgpack_object *k = &o->via.map.ptr[i].key;

		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
		    !memcmp(k->via.str.ptr, key, k->via.str.size)) {
			memmove(&o->via.map.ptr[i], &o->via.map.ptr[i + 1],
				(o->via.map.size - i - 1) * sizeof(o->via.map.ptr[0]));
			o->via.map.size--;
			return;
		}
	}
	cr_assert_fail("%s has no key %s", map_path, key);
}

int snapmut_find(struct snapmut *m, const char *array_path, const char *key, const char *value)
{
	msgpack_object *o = must_get(m, array_path);

	cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY, "%s is not an array", array_path);
	for (uint32_t i = 0; i < o->via.array.size; i++) {
		msgpack_object *v = map_lookup(&o->via.array.ptr[i], key, strlen(key));
		char buf[32];

		if (!v)
			continue;
		if (v->type == MSGPACK_OBJECT_STR && v->via.str.size == strlen(value) &&
		    !memcmp(v->via.str.ptr, value, v->via.str.size))
			return (int)i;
		if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
			snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v->via.u64);
			if (!strcmp(buf, value))
				return (int)i;
		}
	}
	return -1;
}

/* ---- writing ------------------------------------------------------------------------ */

uint8_t *snapmut_encode(struct snapmut *m, size_t *len)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint8_t *file;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	cr_assert_eq(msgpack_pack_object(&pk, m->u.data), 0, "re-encoding the state");
	file = malloc(SNAP_PREAMBLE_SIZE + sb.size);
	cr_assert_not_null(file);
	memcpy(file, SNAP_MAGIC, 8);
	memcpy(file + SNAP_PREAMBLE_SIZE, sb.data, sb.size);
	*len = SNAP_PREAMBLE_SIZE + sb.size;
	msgpack_sbuffer_destroy(&sb);
	snapt_fix_preamble(file, *len);
	return file;
}

void snapmut_save(struct snapmut *m, const char *dir)
{
	size_t len;
	uint8_t *file = snapmut_encode(m, &len);
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", dir, SNAP_STATE_FILE);
	unlink(path); /* never write through a hard link into another snapshot */
	ember_test_write_file(dir, SNAP_STATE_FILE, file, len);
	free(file);
}
