/*
 * Generic device state: a device is a name, a version and a flat map of fields that
 * are unsigned integers or byte strings. The VMM's device code puts its fields on save
 * and gets them back on restore with a range check, so a bad file yields
 * "device serial: field ier: 300 exceeds the maximum 255" rather than a crash.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "snapfmt_int.h"

void snap_device_free(struct snap_device *dev)
{
	for (uint32_t i = 0; dev->fields && i < dev->nr_fields; i++)
		free(dev->fields[i].bin);
	free(dev->fields);
	dev->fields = NULL;
	dev->nr_fields = dev->cap_fields = 0;
}

int snap_dev_check_name(const char *what, const char *name, size_t len, struct snap_err *err)
{
	if (len == 0)
		return snap_err_set(err, -EINVAL, "%s: empty name", what);
	if (len > SNAP_DEV_NAME_MAX)
		return snap_err_set(err, -EINVAL, "%s: name of %zu bytes (at most %u)", what, len,
				    SNAP_DEV_NAME_MAX);
	/* identifiers only: they become dump paths and log text */
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return snap_err_set(err, -EINVAL, "%s: name has byte 0x%02x (allowed: A-Z a-z 0-9 _ - .)",
					    what, (unsigned char)c);
	}
	return 0;
}

int snap_state_add_device(struct snap_state *st, const char *name, uint32_t version,
			  struct snap_device **out, struct snap_err *err)
{
	struct snap_device *d;
	int ret;

	ret = snap_dev_check_name("device", name, strlen(name), err);
	if (ret)
		return ret;
	if (snap_state_find_device(st, name))
		return snap_err_set(err, -EEXIST, "device %s: added twice", name);
	if (st->nr_devices >= SNAP_MAX_DEVICES)
		return snap_err_set(err, -ENOSPC, "device %s: more than %u devices", name, SNAP_MAX_DEVICES);
	if (!st->devices) {
		/* Full capacity at once, so device pointers stay valid while more are added. */
		st->devices = calloc(SNAP_MAX_DEVICES, sizeof(*st->devices));
		if (!st->devices)
			return snap_err_set(err, -ENOMEM, "device %s: out of memory", name);
	}
	d = &st->devices[st->nr_devices++];
	memset(d, 0, sizeof(*d));
	memcpy(d->name, name, strlen(name) + 1);
	d->version = version;
	if (out)
		*out = d;
	return 0;
}

struct snap_device *snap_state_find_device(const struct snap_state *st, const char *name)
{
	for (uint32_t i = 0; st->devices && i < st->nr_devices; i++)
		if (!strcmp(st->devices[i].name, name))
			return &st->devices[i];
	return NULL;
}

int snap_state_get_device(const struct snap_state *st, const char *name,
			  const struct snap_device **out, struct snap_err *err)
{
	*out = snap_state_find_device(st, name);
	if (!*out)
		return snap_err_set(err, -ENOENT, "device %s: missing from the snapshot", name);
	return 0;
}

static const struct snap_dev_field *find_field(const struct snap_device *dev, const char *field)
{
	for (uint32_t i = 0; i < dev->nr_fields; i++)
		if (!strcmp(dev->fields[i].name, field))
			return &dev->fields[i];
	return NULL;
}

static int new_field(struct snap_device *dev, const char *field, struct snap_dev_field **out,
		     struct snap_err *err)
{
	char what[80];
	int ret;

	snprintf(what, sizeof(what), "device %s: field", dev->name);
	ret = snap_dev_check_name(what, field, strlen(field), err);
	if (ret)
		return ret;
	if (find_field(dev, field))
		return snap_err_set(err, -EEXIST, "device %s: field %s put twice", dev->name, field);
	if (dev->nr_fields >= SNAP_DEV_MAX_FIELDS)
		return snap_err_set(err, -ENOSPC, "device %s: more than %u fields", dev->name,
				    SNAP_DEV_MAX_FIELDS);
	if (dev->nr_fields == dev->cap_fields) {
		uint32_t cap = dev->cap_fields ? 2 * dev->cap_fields : 16;
		struct snap_dev_field *f;

		if (cap > SNAP_DEV_MAX_FIELDS)
			cap = SNAP_DEV_MAX_FIELDS;
		f = realloc(dev->fields, cap * sizeof(*f));
		if (!f)
			return snap_err_set(err, -ENOMEM, "device %s: out of memory", dev->name);
		dev->fields = f;
		dev->cap_fields = cap;
	}
	*out = &dev->fields[dev->nr_fields];
	memset(*out, 0, sizeof(**out));
	memcpy((*out)->name, field, strlen(field) + 1);
	return 0;
}

int snap_dev_put_u64(struct snap_device *dev, const char *field, uint64_t value,
		     struct snap_err *err)
{
	struct snap_dev_field *f;
	int ret = new_field(dev, field, &f, err);

	if (ret)
		return ret;
	f->type = SNAP_DEV_U64;
	f->u64 = value;
	dev->nr_fields++;
	return 0;
}

int snap_dev_put_bin(struct snap_device *dev, const char *field, const void *data,
		     uint32_t len, struct snap_err *err)
{
	struct snap_dev_field *f;
	uint8_t *copy;
	int ret;

	if (len > SNAP_DEV_BIN_MAX)
		return snap_err_set(err, -EINVAL, "device %s: field %s: %u bytes (at most %u)",
				    dev->name, field, len, SNAP_DEV_BIN_MAX);
	ret = new_field(dev, field, &f, err);
	if (ret)
		return ret;
	copy = malloc(len ? len : 1);
	if (!copy)
		return snap_err_set(err, -ENOMEM, "device %s: out of memory", dev->name);
	if (len)
		memcpy(copy, data, len);
	f->type = SNAP_DEV_BIN;
	f->bin = copy;
	f->len = len;
	dev->nr_fields++;
	return 0;
}

int snap_dev_get_u64(const struct snap_device *dev, const char *field, uint64_t max_value,
		     uint64_t *out, struct snap_err *err)
{
	const struct snap_dev_field *f = find_field(dev, field);

	if (!f)
		return snap_err_set(err, -EINVAL, "device %s: field %s: missing", dev->name, field);
	if (f->type != SNAP_DEV_U64)
		return snap_err_set(err, -EINVAL, "device %s: field %s: expected unsigned integer, got bin",
				    dev->name, field);
	if (f->u64 > max_value)
		return snap_err_set(err, -ERANGE, "device %s: field %s: %llu exceeds the maximum %llu",
				    dev->name, field, (unsigned long long)f->u64,
				    (unsigned long long)max_value);
	*out = f->u64;
	return 0;
}

int snap_dev_get_bin(const struct snap_device *dev, const char *field, uint32_t max_len,
		     const uint8_t **ptr, uint32_t *len, struct snap_err *err)
{
	const struct snap_dev_field *f = find_field(dev, field);

	if (!f)
		return snap_err_set(err, -EINVAL, "device %s: field %s: missing", dev->name, field);
	if (f->type != SNAP_DEV_BIN)
		return snap_err_set(err, -EINVAL, "device %s: field %s: expected bin, got unsigned integer",
				    dev->name, field);
	if (f->len > max_len)
		return snap_err_set(err, -ERANGE, "device %s: field %s: %u bytes exceed the maximum %u",
				    dev->name, field, f->len, max_len);
	*ptr = f->bin;
	*len = f->len;
	return 0;
}
