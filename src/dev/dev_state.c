/*
 * Device state <-> snapshot sections. Each device's plain state struct becomes one
 * section (name, version, named fields); decoding checks every field's type and
 * range and then the device's own invariants, so a section that decodes here is one
 * the device will accept. Pure (no KVM, no VM): ember-snap verify links it to run the
 * same checks (devices_check_state) as ember restore.
 */
#include <errno.h>
#include <string.h>

#include "dev.h"

int from_snap_err(struct errbuf *eb, int r, const struct snap_err *se)
{
	return errbuf_set(eb, r, "%s", se->msg);
}

/* Field tables: one row per byte-sized register, so encode and decode cannot drift. */
#define SERIAL_U8_FIELDS(X) X(ier) X(iir) X(fcr) X(lcr) X(mcr) X(lsr) X(msr) X(scr) \
	X(dll) X(dlm) X(thri_pending) X(rx_len)
#define I8042_U8_FIELDS(X) X(status) X(cmd_byte) X(pending_cmd) X(out_len)

int serial_encode(const struct serial_state *s, struct snap_device *sd, struct snap_err *se)
{
	int r = 0;

#define PUT(f) if (!r) r = snap_dev_put_u64(sd, #f, s->f, se);
	SERIAL_U8_FIELDS(PUT)
#undef PUT
	if (!r)
		r = snap_dev_put_bin(sd, "rx_fifo", s->rx_fifo, s->rx_len, se);
	return r;
}

int serial_decode(const struct snap_device *sd, struct serial_state *s, struct errbuf *eb)
{
	struct snap_err se;
	const uint8_t *fifo;
	uint32_t fifo_len;
	uint64_t v;
	int r;

	memset(s, 0, sizeof(*s));
#define GET(f)                                                         \
	r = snap_dev_get_u64(sd, #f, UINT8_MAX, &v, &se);             \
	if (r)                                                         \
		return from_snap_err(eb, r, &se);                      \
	s->f = (uint8_t)v;
	SERIAL_U8_FIELDS(GET)
#undef GET
	r = snap_dev_get_bin(sd, "rx_fifo", SERIAL_FIFO_SIZE, &fifo, &fifo_len, &se);
	if (r)
		return from_snap_err(eb, r, &se);
	if (fifo_len != s->rx_len)
		return errbuf_set(eb, -EINVAL, "device serial: rx_fifo holds %u bytes but rx_len is %u",
				  fifo_len, s->rx_len);
	memcpy(s->rx_fifo, fifo, fifo_len);
	return serial_state_validate(s, eb);
}

int i8042_encode(const struct i8042_state *s, struct snap_device *sd, struct snap_err *se)
{
	int r = 0;

#define PUT(f) if (!r) r = snap_dev_put_u64(sd, #f, s->f, se);
	I8042_U8_FIELDS(PUT)
#undef PUT
	if (!r)
		r = snap_dev_put_bin(sd, "out", s->out, s->out_len, se);
	return r;
}

int i8042_decode(const struct snap_device *sd, struct i8042_state *s, struct errbuf *eb)
{
	struct snap_err se;
	const uint8_t *out;
	uint32_t out_len;
	uint64_t v;
	int r;

	memset(s, 0, sizeof(*s));
#define GET(f)                                                         \
	r = snap_dev_get_u64(sd, #f, UINT8_MAX, &v, &se);             \
	if (r)                                                         \
		return from_snap_err(eb, r, &se);                      \
	s->f = (uint8_t)v;
	I8042_U8_FIELDS(GET)
#undef GET
	r = snap_dev_get_bin(sd, "out", sizeof(s->out), &out, &out_len, &se);
	if (r)
		return from_snap_err(eb, r, &se);
	if (out_len != s->out_len)
		return errbuf_set(eb, -EINVAL, "device i8042: out holds %u bytes but out_len is %u",
				  out_len, s->out_len);
	memcpy(s->out, out, out_len);
	return i8042_state_validate(s, eb);
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
