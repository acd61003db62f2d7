/*
 * Device state <-> snapshot sections. Each device's plain state struct becomes one
 * section (name, version, named fields); decoding checks every field's type and
 * range and then the device's own invariants, so a section that decodes here is one
 * the device will accept. Pure (no KVM, no VM): ember-snap verify links it to run the
 * same checks (devices_check_state) as ember restore.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "dev.h"

int from_snap_err(struct errbuf *eb, int r, const struct snap_err *se)
{
	return errbuf_set(eb, r, "%s", se->msg);
}

/*
 * A device state here is byte-sized registers plus one byte queue whose length is one
 * of the registers. A table per device names them, so encode and decode cannot drift.
 */
struct byte_reg {
	const char *name;
	size_t off;
};

struct byte_state_desc {
	const char *dev;
	const struct byte_reg *regs;
	size_t nr_regs;
	const char *queue, *queue_len; /* the bin field and the register holding its length */
	size_t queue_off, queue_max;
};

#define REG(type, f) { #f, offsetof(type, f) }
static const struct byte_reg serial_regs[] = {
	REG(struct serial_state, ier), REG(struct serial_state, iir),
	REG(struct serial_state, fcr), REG(struct serial_state, lcr),
	REG(struct serial_state, mcr), REG(struct serial_state, lsr),
	REG(struct serial_state, msr), REG(struct serial_state, scr),
	REG(struct serial_state, dll), REG(struct serial_state, dlm),
	REG(struct serial_state, thri_pending), REG(struct serial_state, rx_len),
}, i8042_regs[] = {
	REG(struct i8042_state, status), REG(struct i8042_state, cmd_byte),
	REG(struct i8042_state, pending_cmd), REG(struct i8042_state, out_len),
};
#undef REG

static const struct byte_state_desc serial_desc = {
	"serial", serial_regs, ARRAY_SIZE(serial_regs), "rx_fifo", "rx_len",
	offsetof(struct serial_state, rx_fifo), SERIAL_FIFO_SIZE,
};
static const struct byte_state_desc i8042_desc = {
	"i8042", i8042_regs, ARRAY_SIZE(i8042_regs), "out", "out_len",
	offsetof(struct i8042_state, out), sizeof(((struct i8042_state *)0)->out),
};

static uint8_t reg_of(const struct byte_state_desc *d, const void *st, const char *name)
{
	for (size_t i = 0; i < d->nr_regs; i++)
		if (!strcmp(d->regs[i].name, name))
			return ((const uint8_t *)st)[d->regs[i].off];
	return 0;
}

static int encode_bytes(const struct byte_state_desc *d, const void *st, struct snap_device *sd,
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

/* Type and range checks only; the device's own invariants come after. */
static int decode_bytes(const struct byte_state_desc *d, const struct snap_device *sd, void *st,
			size_t size, struct errbuf *eb)
{
	struct snap_err se;
	const uint8_t *q;
	uint32_t qlen;
	uint64_t v;
	int r;

	memset(st, 0, size);
	for (size_t i = 0; i < d->nr_regs; i++) {
		r = snap_dev_get_u64(sd, d->regs[i].name, UINT8_MAX, &v, &se);
		if (r)
			return from_snap_err(eb, r, &se);
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

int serial_encode(const struct serial_state *s, struct snap_device *sd, struct snap_err *se)
{
	return encode_bytes(&serial_desc, s, sd, se);
}

int serial_decode(const struct snap_device *sd, struct serial_state *s, struct errbuf *eb)
{
	int r = decode_bytes(&serial_desc, sd, s, sizeof(*s), eb);

	return r ? r : serial_state_validate(s, eb);
}

int i8042_encode(const struct i8042_state *s, struct snap_device *sd, struct snap_err *se)
{
	return encode_bytes(&i8042_desc, s, sd, se);
}

int i8042_decode(const struct snap_device *sd, struct i8042_state *s, struct errbuf *eb)
{
	int r = decode_bytes(&i8042_desc, sd, s, sizeof(*s), eb);

	return r ? r : i8042_state_validate(s, eb);
}

int abi_decode(const struct snap_device *sd, bool *ready_seen, struct errbuf *eb)
{
	struct snap_err se;
	uint64_t v;
	int r = snap_dev_get_u64(sd, "ready_seen", 1, &v, &se);

	if (r)
		return from_snap_err(eb, r, &se);
	*ready_seen = v;
	return 0;
}

/* ---- the table ---------------------------------------------------------------- */

static int serial_check(const struct snap_device *sd, struct errbuf *eb)
{
	struct serial_state s;

	return serial_decode(sd, &s, eb);
}

static int i8042_check(const struct snap_device *sd, struct errbuf *eb)
{
	struct i8042_state s;

	return i8042_decode(sd, &s, eb);
}

static int abi_check(const struct snap_device *sd, struct errbuf *eb)
{
	bool ready;

	return abi_decode(sd, &ready, eb);
}

static const struct dev_section {
	const char *name;
	uint32_t version;
	int (*check)(const struct snap_device *sd, struct errbuf *eb);
} sections[] = {
	{ "serial", SERIAL_STATE_VERSION, serial_check },
	{ "i8042", I8042_STATE_VERSION, i8042_check },
	{ "guest-abi", ABI_STATE_VERSION, abi_check },
};

static int check_section(const struct snap_device *sd, struct errbuf *eb)
{
	for (size_t i = 0; i < ARRAY_SIZE(sections); i++) {
		if (strcmp(sd->name, sections[i].name))
			continue;
		if (sd->version != sections[i].version)
			return errbuf_set(eb, -EINVAL,
					  "device %s: state version %u, this ember reads version %u",
					  sd->name, sd->version, sections[i].version);
		return sections[i].check(sd, eb);
	}
	return errbuf_set(eb, -EINVAL, "device %s: unknown to this ember", sd->name);
}

int devices_check_state(const struct snap_state *st, struct errbuf *eb)
{
	int r;

	for (size_t i = 0; i < ARRAY_SIZE(sections); i++)
		if (!snap_state_find_device(st, sections[i].name))
			return errbuf_set(eb, -EINVAL, "device %s: missing from the snapshot",
					  sections[i].name);
	for (uint32_t i = 0; i < st->nr_devices; i++) {
		r = check_section(&st->devices[i], eb);
		if (r)
			return r;
	}
	return 0;
}
