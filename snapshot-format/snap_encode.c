/* struct snap_state -> state-file bytes (preamble + one msgpack map), driven by the schema. */
#include <errno.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "snapfmt_int.h"

static int pack_cstr(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);
	return msgpack_pack_str(pk, n) | msgpack_pack_str_body(pk, s, n);
}

/* msgpack's body writers memcpy even for 0 bytes; a NULL source would be UB. */
static int pack_bin(msgpack_packer *pk, const void *p, uint32_t n)
{
	return msgpack_pack_bin(pk, n) | (n ? msgpack_pack_bin_body(pk, p, n) : 0);
}

static int pack_struct(msgpack_packer *pk, const struct sschema *s, const void *base);

static int pack_devices(msgpack_packer *pk, const struct snap_state *st)
{
	int rc = msgpack_pack_array(pk, st->nr_devices);

	for (uint32_t i = 0; i < st->nr_devices; i++) {
		const struct snap_device *d = &st->devices[i];

		rc |= msgpack_pack_map(pk, 3);
		rc |= pack_cstr(pk, "name") | pack_cstr(pk, d->name);
		rc |= pack_cstr(pk, "version") | msgpack_pack_uint64(pk, d->version);
		rc |= pack_cstr(pk, "state") | msgpack_pack_map(pk, d->nr_fields);
		for (uint32_t j = 0; j < d->nr_fields; j++) {
			const struct snap_dev_field *f = &d->fields[j];

			rc |= pack_cstr(pk, f->name);
			if (f->type == SNAP_DEV_U64)
				rc |= msgpack_pack_uint64(pk, f->u64);
			else
				rc |= pack_bin(pk, f->bin, f->len);
		}
	}
	return rc;
}

static int pack_value(msgpack_packer *pk, const struct sfield *f, const void *base)
{
	const uint8_t *p = (const uint8_t *)base + f->off;
	int rc = 0;

	switch (f->kind) {
	case SF_UINT:
		return msgpack_pack_uint64(pk, sf_get_u(p, f->width));
	case SF_SINT: {
		int64_t v;
		memcpy(&v, p, sizeof(v));
		return msgpack_pack_int64(pk, v);
	}
	case SF_STR:
		return pack_cstr(pk, (const char *)p);
	case SF_ENUM: {
		uint32_t v = sf_get_u32(base, f->off);
		return v < f->max ? pack_cstr(pk, f->names[v]) : -1;
	}
	case SF_STRUCT:
		return pack_struct(pk, f->sub, p);
	case SF_UINTS:
		rc = msgpack_pack_array(pk, f->max);
		for (uint32_t i = 0; i < f->max; i++)
			rc |= msgpack_pack_uint64(pk, sf_get_u(p + (size_t)i * f->width, f->width));
		return rc;
	case SF_STRUCTS:
	case SF_VSTRUCTS:
	case SF_HSTRUCTS: {
		uint32_t n = f->kind == SF_STRUCTS ? f->max : sf_get_u32(base, f->off_n);
		const uint8_t *arr = f->kind == SF_HSTRUCTS ? sf_get_ptr(base, f->off) : p;

		rc = msgpack_pack_array(pk, n);
		for (uint32_t i = 0; i < n; i++)
			rc |= pack_struct(pk, f->sub, arr + (size_t)i * f->elem);
		return rc;
	}
	case SF_BLOB:
		return pack_bin(pk, p, f->max);
	case SF_HBLOB: {
		uint32_t n = sf_get_u32(base, f->off_n);
		return pack_bin(pk, sf_get_ptr(base, f->off), n);
	}
	case SF_DEVICES:
		return pack_devices(pk, base);
	}
	return -1;
}

static int pack_struct(msgpack_packer *pk, const struct sschema *s, const void *base)
{
	unsigned n = 0;
	int rc;

	for (unsigned i = 0; i < s->n; i++)
		n += !sf_omitted(&s->f[i], base);
	rc = msgpack_pack_map(pk, n);
	for (unsigned i = 0; i < s->n; i++)
		if (!sf_omitted(&s->f[i], base))
			rc |= pack_cstr(pk, s->f[i].key) | pack_value(pk, &s->f[i], base);
	return rc;
}

int snap_state_encode(const struct snap_state *st, uint8_t **buf, size_t *len,
		      struct snap_err *err)
{
	static const uint8_t zero_preamble[SNAP_PREAMBLE_SIZE];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t body_len;
	uint8_t *p;
	int ret;

	ret = snap_state_validate(st, err);
	if (ret)
		return ret;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (msgpack_sbuffer_write(&sb, (const char *)zero_preamble, sizeof(zero_preamble)) ||
	    pack_struct(&pk, &snap_schema_root, st)) {
		msgpack_sbuffer_destroy(&sb);
		return snap_err_set(err, -ENOMEM, "state encode: out of memory");
	}
	body_len = sb.size - SNAP_PREAMBLE_SIZE;
	if (body_len > SNAP_MAX_BODY) {
		msgpack_sbuffer_destroy(&sb);
		return snap_err_set(err, -EFBIG, "state encode: body of %zu bytes exceeds %u", body_len,
				    SNAP_MAX_BODY);
	}
	p = (uint8_t *)sb.data;
	memcpy(p, SNAP_MAGIC, 8);
	snap_put_le32(p + 8, (uint32_t)body_len);
	snap_put_le32(p + 12, snap_crc32c(0, p + SNAP_PREAMBLE_SIZE, body_len));
	*buf = p;
	*len = sb.size;
	return 0;
}
