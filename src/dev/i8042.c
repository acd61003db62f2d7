/*
 * The i8042 keyboard controller, reduced to what a guest needs from it: Linux's
 * controller probe (flush, self-test, command byte, interface tests) must complete
 * without timeouts, and the CPU reset line must work (command 0xFE, the way Linux
 * reboots with reboot=k, or an output-port write with bit 0 clear).
 *
 * No keyboard or mouse is attached: bytes written to the data port outside a command
 * go nowhere, and the AUX port is not emulated beyond its enable bit and its
 * interface test. The controller has no IRQ line; guests poll it during the probe.
 * Boot Linux with "i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd" to skip the
 * device probes that would otherwise wait for timeouts.
 *
 * The bus range is 0x60..0x64: offset 0 is the data port, offset 4 the command and
 * status port; offsets 1-3 (0x61-0x63, not ours) read 0xff and ignore writes.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../vmm.h"
#include "dev.h"

#define OFF_DATA (I8042_DATA_PORT - I8042_DATA_PORT)
#define OFF_CMD  (I8042_CMD_PORT - I8042_DATA_PORT)

/* status register */
#define STS_OBF      0x01 /* output buffer full: a byte waits on 0x60 */
#define STS_IBF      0x02 /* input buffer full: never, commands complete at once */
#define STS_SYS      0x04 /* system flag, mirrors the command byte's */
#define STS_CMD      0x08 /* last byte written went to 0x64 */
#define STS_UNLOCKED 0x10 /* keyboard not inhibited by the key lock */
#define STS_NEVER    0xe2 /* AUX data, timeout, parity error, IBF: never raised here */

/* command byte */
#define CTR_KBDINT   0x01
#define CTR_AUXINT   0x02
#define CTR_SYS      0x04
#define CTR_KBDDIS   0x10
#define CTR_AUXDIS   0x20
#define CTR_XLATE    0x40
#define CTR_RESERVED 0x80

/* commands written to 0x64 */
#define CMD_READ_CTR   0x20
#define CMD_WRITE_CTR  0x60
#define CMD_AUX_DIS    0xa7
#define CMD_AUX_EN     0xa8
#define CMD_AUX_TEST   0xa9
#define CMD_SELF_TEST  0xaa
#define CMD_KBD_TEST   0xab
#define CMD_KBD_DIS    0xad
#define CMD_KBD_EN     0xae
#define CMD_WRITE_OUTP 0xd1
#define CMD_PULSE      0xf0 /* 0xf0-0xff: pulse output-port bits 0-3 whose command bit is 0 */

#define SELF_TEST_OK  0x55
#define PORT_TEST_OK  0x00
#define OUTP_NRESET   0x01 /* output port bit 0 drives the CPU reset line, active low */

#define OUT_MAX ((unsigned)sizeof(((struct i8042_state *)0)->out))

struct i8042 {
	struct i8042_state s;
	struct device *dev;
};

static struct i8042 *to_i8042(struct device *d)
{
	return d->priv;
}

static void out_push(struct i8042_state *s, uint8_t v)
{
	/* a guest that never reads its answers loses the newest ones */
	if (s->out_len < OUT_MAX)
		s->out[s->out_len++] = v;
	s->status |= STS_OBF;
}

static uint8_t out_pop(struct i8042_state *s)
{
	uint8_t v;

	if (!s->out_len)
		return 0;
	v = s->out[0];
	s->out_len--;
	memmove(s->out, s->out + 1, s->out_len);
	s->out[s->out_len] = 0;
	if (!s->out_len)
		s->status &= (uint8_t)~STS_OBF;
	return v;
}

static void set_cmd_byte(struct i8042_state *s, uint8_t v)
{
	s->cmd_byte = v & (uint8_t)~CTR_RESERVED;
	s->status = (uint8_t)((s->status & ~STS_SYS) | (s->cmd_byte & CTR_SYS));
}

static void pulse_reset(struct i8042 *k)
{
	dev_request_reset(k->dev, "guest reset (i8042)");
}

static void write_command(struct i8042 *k, uint8_t cmd)
{
	struct i8042_state *s = &k->s;

	s->status |= STS_CMD;
	s->pending_cmd = 0; /* a new command abandons one still waiting for its data byte */
	switch (cmd) {
	case CMD_READ_CTR:
		out_push(s, s->cmd_byte);
		break;
	case CMD_WRITE_CTR:
	case CMD_WRITE_OUTP:
		s->pending_cmd = cmd;
		break;
	case CMD_AUX_DIS:
		set_cmd_byte(s, s->cmd_byte | CTR_AUXDIS);
		break;
	case CMD_AUX_EN:
		set_cmd_byte(s, s->cmd_byte & (uint8_t)~CTR_AUXDIS);
		break;
	case CMD_KBD_DIS:
		set_cmd_byte(s, s->cmd_byte | CTR_KBDDIS);
		break;
	case CMD_KBD_EN:
		set_cmd_byte(s, s->cmd_byte & (uint8_t)~CTR_KBDDIS);
		break;
	case CMD_AUX_TEST:
	case CMD_KBD_TEST:
		out_push(s, PORT_TEST_OK);
		break;
	case CMD_SELF_TEST:
		/* a passing self-test sets the system flag, as on real controllers */
		set_cmd_byte(s, s->cmd_byte | CTR_SYS);
		out_push(s, SELF_TEST_OK);
		break;
	default:
		if ((cmd & 0xf0) == CMD_PULSE && !(cmd & OUTP_NRESET))
			pulse_reset(k);
		/* other commands are not implemented and produce no answer */
		break;
	}
}

static void write_data(struct i8042 *k, uint8_t v)
{
	struct i8042_state *s = &k->s;
	uint8_t cmd = s->pending_cmd;

	s->status &= (uint8_t)~STS_CMD;
	s->pending_cmd = 0;
	switch (cmd) {
	case CMD_WRITE_CTR:
		set_cmd_byte(s, v);
		break;
	case CMD_WRITE_OUTP:
		if (!(v & OUTP_NRESET))
			pulse_reset(k);
		break;
	default:
		break; /* a byte for the keyboard, and there is none */
	}
}

static uint8_t reg_read(struct i8042 *k, uint64_t off)
{
	switch (off) {
	case OFF_DATA:
		return out_pop(&k->s);
	case OFF_CMD:
		return k->s.status;
	default:
		return 0xff;
	}
}

static void reg_write(struct i8042 *k, uint64_t off, uint8_t v)
{
	if (off == OFF_DATA)
		write_data(k, v);
	else if (off == OFF_CMD)
		write_command(k, v);
}

static void i8042_read(struct device *d, uint64_t off, uint8_t *data, unsigned len)
{
	for (unsigned i = 0; i < len; i++)
		data[i] = reg_read(to_i8042(d), off + i);
}

static void i8042_write(struct device *d, uint64_t off, const uint8_t *data, unsigned len)
{
	for (unsigned i = 0; i < len; i++)
		reg_write(to_i8042(d), off + i, data[i]);
}

static int i8042_init(struct device *d, struct errbuf *eb)
{
	struct i8042 *k = to_i8042(d);

	k->dev = d;
	/* as a BIOS leaves it after POST: keyboard interrupt, translation, POST passed */
	k->s.status = STS_UNLOCKED;
	set_cmd_byte(&k->s, CTR_KBDINT | CTR_SYS | CTR_XLATE);
	return 0;
}

/* ---- snapshot section ------------------------------------------------------------- */

#define REG(f) { #f, offsetof(struct i8042_state, f) }
static const struct byte_reg i8042_regs[] = {
	REG(status), REG(cmd_byte), REG(pending_cmd), REG(out_len),
};
#undef REG

static const struct byte_state_desc i8042_desc = {
	"i8042", i8042_regs, ARRAY_SIZE(i8042_regs), "out", "out_len",
	offsetof(struct i8042_state, out), OUT_MAX,
};

int i8042_encode(const struct i8042_state *s, struct snap_device *sd, struct snap_err *se)
{
	return dev_bytes_encode(&i8042_desc, s, sd, se);
}

int i8042_decode(const struct snap_device *sd, struct i8042_state *s, struct errbuf *eb)
{
	int r = dev_bytes_decode(&i8042_desc, sd, s, sizeof(*s), eb);

	return r ? r : i8042_state_validate(s, eb);
}

static int i8042_save(struct device *d, struct snap_device *sd, struct snap_err *se)
{
	struct i8042_state s;

	i8042_get_state(d, &s);
	return i8042_encode(&s, sd, se);
}

static int i8042_restore(struct device *d, const struct snap_device *sd, struct errbuf *eb)
{
	struct i8042_state s;
	int r = i8042_decode(sd, &s, eb);

	return r ? r : i8042_set_state(d, &s, eb);
}

static int i8042_check(const struct snap_state *st, const struct snap_device *sd,
		       struct errbuf *eb)
{
	struct i8042_state s;

	return i8042_decode(sd, &s, eb);
}

const struct dev_ops i8042_ops = {
	.name = "i8042",
	.version = I8042_STATE_VERSION,
	.priv_size = sizeof(struct i8042),
	.init = i8042_init,
	.read = i8042_read,
	.write = i8042_write,
	.save = i8042_save,
	.restore = i8042_restore,
	.check = i8042_check,
};

void i8042_get_state(struct device *d, struct i8042_state *s)
{
	pthread_mutex_lock(&d->lock);
	*s = to_i8042(d)->s;
	pthread_mutex_unlock(&d->lock);
}

int i8042_set_state(struct device *d, const struct i8042_state *s, struct errbuf *eb)
{
	struct i8042 *k = to_i8042(d);
	int r = i8042_state_validate(s, eb);

	if (r)
		return r;
	pthread_mutex_lock(&d->lock);
	k->s = *s;
	memset(k->s.out + k->s.out_len, 0, OUT_MAX - k->s.out_len);
	pthread_mutex_unlock(&d->lock);
	return 0;
}

int i8042_state_validate(const struct i8042_state *s, struct errbuf *eb)
{
	if (s->out_len > OUT_MAX)
		return errbuf_set(eb, -EINVAL, "i8042: out_len %u exceeds the output queue size %u",
				  s->out_len, OUT_MAX);
	if (!!(s->status & STS_OBF) != !!s->out_len)
		return errbuf_set(eb, -EINVAL, "i8042: status output-full bit is %u but out_len "
				  "is %u", s->status & STS_OBF, s->out_len);
	if (s->status & STS_NEVER)
		return errbuf_set(eb, -EINVAL, "i8042: status 0x%02x has bits 0x%02x this "
				  "controller never sets", s->status, s->status & STS_NEVER);
	if (!(s->status & STS_UNLOCKED))
		return errbuf_set(eb, -EINVAL, "i8042: status 0x%02x lacks the keyboard-unlocked "
				  "bit 0x%02x", s->status, STS_UNLOCKED);
	if (s->cmd_byte & CTR_RESERVED)
		return errbuf_set(eb, -EINVAL, "i8042: cmd_byte 0x%02x has the reserved bit 0x%02x "
				  "set", s->cmd_byte, CTR_RESERVED);
	if ((s->status & STS_SYS) != (s->cmd_byte & CTR_SYS))
		return errbuf_set(eb, -EINVAL, "i8042: status system flag (0x%02x) disagrees with "
				  "cmd_byte 0x%02x", s->status & STS_SYS, s->cmd_byte);
	if (s->pending_cmd != 0 && s->pending_cmd != CMD_WRITE_CTR &&
	    s->pending_cmd != CMD_WRITE_OUTP)
		return errbuf_set(eb, -EINVAL, "i8042: pending_cmd 0x%02x is not a command that "
				  "takes a data byte", s->pending_cmd);
	return 0;
}
