/*
 * Helpers for device snapshot sections. A device's plain state struct becomes one
 * section (name, version, named fields); decoding checks every field's type and range
 * before the device checks its own invariants, so a section that decodes is one the
 * device accepts. Pure (no KVM): ember-snap verify links it.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "dev.h"

int from_snap_err(struct errbuf *eb, int r, const struct snap_err *se)
{
	return errbuf_set(eb, r, "%s", se->msg);
}

int dev_get_u64(const struct snap_device *sd, const char *field, uint64_t max, uint64_t *v,
		struct errbuf *eb)
{
	struct snap_err se;
	int r = snap_dev_get_u64(sd, field, max, v, &se);

	return r ? from_snap_err(eb, r, &se) : 0;
}

static uint8_t reg_of(const struct byte_state_desc *d, const void *st, const char *name)
{
	for (size_t i = 0; i < d->nr_regs; i++)
		if (!strcmp(d->regs[i].name, name))
			return ((const uint8_t *)st)[d->regs[i].off];
	return 0;
}

int dev_bytes_encode(const struct byte_state_desc *d, const void *st, struct snap_device *sd,
		     struct snap_err *se)
{
	int r = 0;

	for (size_t i = 0; !r && i < d->nr_regs; i++)
		r = snap_dev_put_u64(sd, d->regs[i].name, ((const uint8_t *)st)[d->regs[i].off], se);
	if (!r)
		r = snap_dev_put_bin(sd, d->queue, (const uint8_t *)st + d->queue_off,
				     reg_of(d, st, d->queue_len), se);
	return r;
}

int dev_bytes_decode(const struct byte_state_desc *d, const struct snap_device *sd, void *st,
		     size_t size, struct errbuf *eb)
{
	struct snap_err se;
	const uint8_t *q;
	uint32_t qlen;
	uint64_t v;
	int r;

	memset(st, 0, size);
	for (size_t i = 0; i < d->nr_regs; i++) {
		r = dev_get_u64(sd, d->regs[i].name, UINT8_MAX, &v, eb);
		if (r)
			return r;
		((uint8_t *)st)[d->regs[i].off] = (uint8_t)v;
	}
	r = snap_dev_get_bin(sd, d->queue, (uint32_t)d->queue_max, &q, &qlen, &se);
	if (r)
		return from_snap_err(eb, r, &se);
	if (qlen != reg_of(d, st, d->queue_len))
		return errbuf_set(eb, -EINVAL, "device %s: %s holds %u bytes but %s is %u", d->dev,
				  d->queue, qlen, d->queue_len, reg_of(d, st, d->queue_len));
	memcpy((uint8_t *)st + d->queue_off, q, qlen);
	return 0;
}
