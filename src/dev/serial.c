/*
 * A 16550A UART as Linux's 8250 driver probes and drives it.
 *
 * Transmission is instantaneous: the holding and shift registers are always empty, so
 * LSR always reports THRE|TEMT and the THRE interrupt re-arms on every THR write.
 * There is no receive timer either, so "data available" is raised as soon as one byte
 * waits, whatever the FIFO trigger level (what the character timeout would do later).
 *
 * All guest-visible state lives in struct serial_state; the rest of struct serial is
 * host plumbing (output buffer, last IRQ level) and is never saved.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../vmm.h"
#include "dev.h"

enum {
	REG_RBR_THR = 0, /* DLL when LCR.DLAB */
	REG_IER = 1,     /* DLM when LCR.DLAB */
	REG_IIR_FCR = 2,
	REG_LCR = 3,
	REG_MCR = 4,
	REG_LSR = 5,
	REG_MSR = 6,
	REG_SCR = 7,
	NR_REGS = 8,
};

#define IER_RDI   0x01
#define IER_THRI  0x02
#define IER_RLSI  0x04
#define IER_MSI   0x08
#define IER_MASK  0x0f /* the upper nibble reads 0 on a 16550A; Linux's probe checks it */

#define IIR_NO_INT  0x01
#define IIR_MSI     0x00
#define IIR_THRI    0x02
#define IIR_RDI     0x04
#define IIR_RLSI    0x06
#define IIR_ID_MASK 0x0f
#define IIR_FIFO_ON 0xc0 /* "16550A with working FIFO": what autoconfig looks for */

#define FCR_ENABLE   0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04
#define FCR_KEPT     0xc9 /* enable, DMA mode, RX trigger level; clears self-reset */

#define LCR_DLAB 0x80

#define MCR_DTR  0x01
#define MCR_RTS  0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define MCR_MASK 0x1f

#define LSR_DR      0x01
#define LSR_OE      0x02
#define LSR_PE      0x04
#define LSR_FE      0x08
#define LSR_BI      0x10
#define LSR_THRE    0x20
#define LSR_TEMT    0x40
#define LSR_FIFOERR 0x80
#define LSR_ERRORS  (LSR_OE | LSR_PE | LSR_FE | LSR_BI)
#define LSR_NEVER   (LSR_PE | LSR_FE | LSR_BI | LSR_FIFOERR) /* no line, no line errors */

#define MSR_DCTS   0x01
#define MSR_DDSR   0x02
#define MSR_TERI   0x04
#define MSR_DDCD   0x08
#define MSR_DELTAS 0x0f
#define MSR_CTS    0x10
#define MSR_DSR    0x20
#define MSR_RI     0x40
#define MSR_DCD    0x80
#define MSR_LINES  0xf0
/* Outside loopback the host end looks like a connected, ready peer (as QEMU and
 * Firecracker present it), so a driver using modem control never waits. */
#define MSR_HOST_LINES (MSR_DCD | MSR_DSR | MSR_CTS)

/* Flushed on '\n' anyway; big enough that a burst without newlines costs few writes. */
#define TX_BUF_SIZE 512

struct serial {
	struct serial_state s;
	int out_fd;         /* the VM's console, -1: discard output */
	struct irq_line *irq;
	int irq_level;      /* level last driven on the line; -1 after a failed set_level */
	bool irq_warned;
	bool out_broken;    /* out_fd failed hard: output is discarded from then on */
	bool drop_warned;
	bool limit_warned;
	uint64_t limit;     /* --console-limit: bytes to pass to out_fd at most, 0: no limit */
	uint64_t accepted;  /* bytes taken for out_fd (written or in tx_buf) */
	struct console_stats st;
	unsigned tx_len;
	uint8_t tx_buf[TX_BUF_SIZE];
};

static struct serial *to_serial(struct device *d)
{
	return d->priv;
}

/* ---- pure helpers on the state (shared with validation) -------------------------- */

static unsigned rx_capacity(const struct serial_state *s)
{
	/* with the FIFO off the UART is a 16450: one receive holding register */
	return (s->fcr & FCR_ENABLE) ? SERIAL_FIFO_SIZE : 1;
}

/* The modem input lines: in loopback they are the UART's own outputs. */
static uint8_t modem_lines(uint8_t mcr)
{
	uint8_t v = 0;

	if (!(mcr & MCR_LOOP))
		return MSR_HOST_LINES;
	if (mcr & MCR_RTS)
		v |= MSR_CTS;
	if (mcr & MCR_DTR)
		v |= MSR_DSR;
	if (mcr & MCR_OUT1)
		v |= MSR_RI;
	if (mcr & MCR_OUT2)
		v |= MSR_DCD;
	return v;
}

/* The highest-priority enabled pending interrupt, 16550A order: RLS > RDA > THRE > MSR. */
static uint8_t compute_iir(const struct serial_state *s)
{
	uint8_t fifo = (s->fcr & FCR_ENABLE) ? IIR_FIFO_ON : 0;

	if ((s->ier & IER_RLSI) && (s->lsr & LSR_ERRORS))
		return fifo | IIR_RLSI;
	if ((s->ier & IER_RDI) && s->rx_len)
		return fifo | IIR_RDI;
	if ((s->ier & IER_THRI) && s->thri_pending)
		return fifo | IIR_THRI;
	if ((s->ier & IER_MSI) && (s->msr & MSR_DELTAS))
		return fifo | IIR_MSI;
	return fifo | IIR_NO_INT;
}

/* ---- interrupt line ------------------------------------------------------------- */

/* Recomputes IIR and drives the (level-triggered) line when its level changes. */
static void update_irq(struct serial *u, bool force)
{
	struct serial_state *s = &u->s;
	int level, r;

	s->iir = compute_iir(s);
	level = !(s->iir & IIR_NO_INT);
	if (!force && level == u->irq_level)
		return;
	if (!u->irq->set_level) {
		u->irq_level = level;
		return;
	}
	r = u->irq->set_level(u->irq->opaque, u->irq->gsi, level);
	if (r) {
		if (!u->irq_warned)
			pr_warn("serial: setting IRQ %u to %d failed: %s", u->irq->gsi, level,
				strerror(-r));
		u->irq_warned = true;
		u->irq_level = -1; /* unknown: retry on the next change */
		return;
	}
	u->irq_level = level;
}

/* ---- host output ---------------------------------------------------------------- */

static void tx_flush(struct serial *u)
{
	unsigned done = 0;

	if (u->out_fd < 0 || u->out_broken) {
		u->tx_len = 0;
		return;
	}
	while (done < u->tx_len) {
		ssize_t n = write(u->out_fd, u->tx_buf + done, u->tx_len - done);

		if (n > 0) {
			done += (unsigned)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		/* non-blocking console that is full: keep the rest for the next flush */
		if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		pr_warn("serial: writing guest output: %s; discarding further output",
			strerror(errno));
		u->st.bytes_written += done;
		u->st.bytes_dropped += u->tx_len - done;
		u->out_broken = true;
		u->tx_len = 0;
		return;
	}
	u->st.bytes_written += done;
	memmove(u->tx_buf, u->tx_buf + done, u->tx_len - done);
	u->tx_len -= done;
}

static void tx_put(struct serial *u, uint8_t byte)
{
	u->st.bytes++;
	if (u->out_fd < 0)
		return;
	if (u->out_broken) {
		u->st.bytes_dropped++;
		return;
	}
	/* a guest must not fill the host's disk: past the limit output is only counted */
	if (u->limit && u->accepted >= u->limit) {
		if (!u->limit_warned)
			pr_warn("serial: guest console output reached --console-limit (%llu bytes); "
				"further output is counted, not written",
				(unsigned long long)u->limit);
		u->limit_warned = true;
		u->st.bytes_limited++;
		return;
	}
	if (u->tx_len == TX_BUF_SIZE) {
		tx_flush(u);
		if (u->tx_len == TX_BUF_SIZE) {
			/* the console stays full: losing output beats stalling the vCPU */
			if (!u->drop_warned)
				pr_warn("serial: console output blocked; dropping guest output");
			u->drop_warned = true;
			u->st.bytes_dropped++;
			return;
		}
	}
	u->accepted++;
	u->tx_buf[u->tx_len++] = byte;
	if (byte == '\n' || u->tx_len == TX_BUF_SIZE)
		tx_flush(u);
}

/* ---- receive FIFO --------------------------------------------------------------- */

static void rx_clear(struct serial_state *s)
{
	memset(s->rx_fifo, 0, sizeof(s->rx_fifo));
	s->rx_len = 0;
	s->lsr &= (uint8_t)~LSR_DR;
}

static uint8_t rx_pop(struct serial_state *s)
{
	uint8_t b;

	if (!s->rx_len)
		return 0;
	b = s->rx_fifo[0];
	s->rx_len--;
	memmove(s->rx_fifo, s->rx_fifo + 1, s->rx_len);
	s->rx_fifo[s->rx_len] = 0; /* keep saved state canonical */
	if (!s->rx_len)
		s->lsr &= (uint8_t)~LSR_DR;
	return b;
}

/* A byte arriving on the (looped-back) line; when there is no room it is lost. */
static void rx_receive(struct serial_state *s, uint8_t b)
{
	if (s->rx_len < rx_capacity(s)) {
		s->rx_fifo[s->rx_len++] = b;
	} else {
		/* FIFO mode: the new byte is lost; 16450 mode: it overwrites the old one */
		if (!(s->fcr & FCR_ENABLE))
			s->rx_fifo[0] = b;
		s->lsr |= LSR_OE;
	}
	s->lsr |= LSR_DR;
}

/* ---- register access ------------------------------------------------------------ */

static void msr_set_lines(struct serial_state *s, uint8_t lines)
{
	uint8_t old = s->msr & MSR_LINES, delta = 0;

	if ((old ^ lines) & MSR_CTS)
		delta |= MSR_DCTS;
	if ((old ^ lines) & MSR_DSR)
		delta |= MSR_DDSR;
	if ((old ^ lines) & MSR_DCD)
		delta |= MSR_DDCD;
	if ((old & MSR_RI) && !(lines & MSR_RI)) /* trailing edge only */
		delta |= MSR_TERI;
	s->msr = lines | (s->msr & MSR_DELTAS) | delta;
}

static void write_thr(struct serial *u, uint8_t v)
{
	struct serial_state *s = &u->s;

	if (s->mcr & MCR_LOOP)
		rx_receive(s, v);
	else
		tx_put(u, v);
	/* the write clears THRE; the byte leaves at once, so THRE is back */
	s->thri_pending = (s->ier & IER_THRI) ? 1 : 0;
}

static void write_ier(struct serial_state *s, uint8_t v)
{
	uint8_t old = s->ier;

	s->ier = v & IER_MASK;
	/* enabling THRI with an empty THR raises it at once (Linux's THRE test relies on it) */
	if ((s->ier & IER_THRI) && !(old & IER_THRI))
		s->thri_pending = 1;
	else if (!(s->ier & IER_THRI))
		s->thri_pending = 0;
}

static void write_fcr(struct serial_state *s, uint8_t v)
{
	/* toggling the enable bit empties both FIFOs */
	if ((v ^ s->fcr) & FCR_ENABLE)
		v |= FCR_CLEAR_RX | FCR_CLEAR_TX;
	if (v & FCR_CLEAR_RX)
		rx_clear(s);
	/* FCR_CLEAR_TX: the transmitter is always empty already */
	/* the other bits only take when the FIFO enable bit is written as 1 */
	s->fcr = (v & FCR_ENABLE) ? (v & FCR_KEPT) : 0;
}

static uint8_t reg_read(struct serial *u, unsigned off)
{
	struct serial_state *s = &u->s;
	uint8_t v;

	switch (off) {
	case REG_RBR_THR:
		v = (s->lcr & LCR_DLAB) ? s->dll : rx_pop(s);
		break;
	case REG_IER:
		v = (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
		break;
	case REG_IIR_FCR:
		v = s->iir;
		/* reading IIR while it reports THRE acknowledges that interrupt */
		if ((v & IIR_ID_MASK) == IIR_THRI)
			s->thri_pending = 0;
		break;
	case REG_LCR:
		v = s->lcr;
		break;
	case REG_MCR:
		v = s->mcr;
		break;
	case REG_LSR:
		v = s->lsr;
		s->lsr &= (uint8_t)~(LSR_ERRORS | LSR_FIFOERR);
		break;
	case REG_MSR:
		v = s->msr;
		s->msr &= (uint8_t)~MSR_DELTAS;
		break;
	case REG_SCR:
		v = s->scr;
		break;
	default:
		return 0xff;
	}
	update_irq(u, false);
	return v;
}

static void reg_write(struct serial *u, unsigned off, uint8_t v)
{
	struct serial_state *s = &u->s;

	switch (off) {
	case REG_RBR_THR:
		if (s->lcr & LCR_DLAB)
			s->dll = v;
		else
			write_thr(u, v);
		break;
	case REG_IER:
		if (s->lcr & LCR_DLAB)
			s->dlm = v;
		else
			write_ier(s, v);
		break;
	case REG_IIR_FCR:
		write_fcr(s, v);
		break;
	case REG_LCR:
		s->lcr = v;
		break;
	case REG_MCR:
		s->mcr = v & MCR_MASK;
		msr_set_lines(s, modem_lines(s->mcr));
		break;
	case REG_SCR:
		s->scr = v;
		break;
	default: /* LSR and MSR are read-only; beyond SCR is not ours */
		return;
	}
	update_irq(u, false);
}

/* An ISA bus splits a wider access to a byte-wide device into consecutive bytes. */
static void serial_read(struct device *d, uint64_t off, uint8_t *data, unsigned len)
{
	for (unsigned i = 0; i < len; i++)
		data[i] = off + i < NR_REGS ? reg_read(to_serial(d), (unsigned)(off + i)) : 0xff;
}

static void serial_write(struct device *d, uint64_t off, const uint8_t *data, unsigned len)
{
	for (unsigned i = 0; i < len; i++)
		if (off + i < NR_REGS)
			reg_write(to_serial(d), (unsigned)(off + i), data[i]);
}

static int serial_init(struct device *d, struct errbuf *eb)
{
	struct serial *u = to_serial(d);

	u->out_fd = d->vm ? d->vm->console_fd : -1;
	u->limit = d->vm ? d->vm->cfg.console_limit : 0;
	u->irq = &d->irq;
	/* power-on values; the divisor is 9600 baud, OUT2 as QEMU and Firecracker leave it */
	u->s.dll = 0x0c;
	u->s.mcr = MCR_OUT2;
	u->s.lsr = LSR_THRE | LSR_TEMT;
	u->s.msr = MSR_HOST_LINES;
	u->s.iir = compute_iir(&u->s);
	u->irq_level = 0; /* a new line starts low */
	return 0;
}

static void serial_fini(struct device *d)
{
	tx_flush(to_serial(d));
}

/* ---- snapshot section ------------------------------------------------------------- */

#define REG(f) { #f, offsetof(struct serial_state, f) }
static const struct byte_reg serial_regs[] = {
	REG(ier), REG(iir), REG(fcr), REG(lcr), REG(mcr), REG(lsr), REG(msr), REG(scr),
	REG(dll), REG(dlm), REG(thri_pending), REG(rx_len),
};
#undef REG

static const struct byte_state_desc serial_desc = {
	"serial", serial_regs, ARRAY_SIZE(serial_regs), "rx_fifo", "rx_len",
	offsetof(struct serial_state, rx_fifo), SERIAL_FIFO_SIZE,
};

int serial_encode(const struct serial_state *s, struct snap_device *sd, struct snap_err *se)
{
	return dev_bytes_encode(&serial_desc, s, sd, se);
}

int serial_decode(const struct snap_device *sd, struct serial_state *s, struct errbuf *eb)
{
	int r = dev_bytes_decode(&serial_desc, sd, s, sizeof(*s), eb);

	return r ? r : serial_state_validate(s, eb);
}

static int serial_save(struct device *d, struct snap_device *sd, struct snap_err *se)
{
	struct serial_state s;

	serial_get_state(d, &s);
	return serial_encode(&s, sd, se);
}

static int serial_restore(struct device *d, const struct snap_device *sd, struct errbuf *eb)
{
	struct serial_state s;
	int r = serial_decode(sd, &s, eb);

	return r ? r : serial_set_state(d, &s, eb);
}

static int serial_check(const struct snap_state *st, const struct snap_device *sd,
			struct errbuf *eb)
{
	struct serial_state s;

	return serial_decode(sd, &s, eb);
}

const struct dev_ops serial_ops = {
	.name = "serial",
	.version = SERIAL_STATE_VERSION,
	.priv_size = sizeof(struct serial),
	.init = serial_init,
	.fini = serial_fini,
	.read = serial_read,
	.write = serial_write,
	.save = serial_save,
	.restore = serial_restore,
	.check = serial_check,
};

/* ---- public API ------------------------------------------------------------------ */

unsigned serial_input(struct device *d, const uint8_t *buf, unsigned len)
{
	struct serial *u = to_serial(d);
	struct serial_state *s = &u->s;
	unsigned n = 0;

	pthread_mutex_lock(&d->lock);
	/*
	 * In loopback the receiver is cut off from the line. Bytes that do not fit are
	 * refused, not dropped: the caller keeps and retries them (host-side flow
	 * control), so no overrun is signalled for them.
	 */
	if (!(s->mcr & MCR_LOOP)) {
		n = rx_capacity(s) - s->rx_len;
		if (n > len)
			n = len;
		memcpy(s->rx_fifo + s->rx_len, buf, n);
		s->rx_len = (uint8_t)(s->rx_len + n);
		if (s->rx_len)
			s->lsr |= LSR_DR;
		update_irq(u, false);
	}
	pthread_mutex_unlock(&d->lock);
	return n;
}

void serial_flush(struct device *d)
{
	pthread_mutex_lock(&d->lock);
	tx_flush(to_serial(d));
	pthread_mutex_unlock(&d->lock);
}

void serial_console_write(struct device *d, const void *buf, size_t len)
{
	struct serial *u = to_serial(d);
	const uint8_t *p = buf;

	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < len; i++)
		tx_put(u, p[i]);
	tx_flush(u);
	pthread_mutex_unlock(&d->lock);
}

void serial_console_stats(struct device *d, struct console_stats *cs)
{
	pthread_mutex_lock(&d->lock);
	*cs = to_serial(d)->st;
	pthread_mutex_unlock(&d->lock);
}

void serial_get_state(struct device *d, struct serial_state *s)
{
	pthread_mutex_lock(&d->lock);
	*s = to_serial(d)->s;
	pthread_mutex_unlock(&d->lock);
}

int serial_set_state(struct device *d, const struct serial_state *s, struct errbuf *eb)
{
	struct serial *u = to_serial(d);
	int r = serial_state_validate(s, eb);

	if (r)
		return r;
	pthread_mutex_lock(&d->lock);
	u->s = *s;
	memset(u->s.rx_fifo + u->s.rx_len, 0, sizeof(u->s.rx_fifo) - u->s.rx_len);
	/* the line's previous level is unknown (fresh VM or a running one): drive it */
	update_irq(u, true);
	pthread_mutex_unlock(&d->lock);
	return 0;
}

int serial_state_validate(const struct serial_state *s, struct errbuf *eb)
{
	uint8_t want;

	if (s->ier & ~IER_MASK)
		return errbuf_set(eb, -EINVAL, "serial: ier 0x%02x has reserved bits 0x%02x set",
				  s->ier, s->ier & ~IER_MASK);
	if (s->mcr & ~MCR_MASK)
		return errbuf_set(eb, -EINVAL, "serial: mcr 0x%02x has reserved bits 0x%02x set",
				  s->mcr, s->mcr & ~MCR_MASK);
	if (s->fcr & ~FCR_KEPT)
		return errbuf_set(eb, -EINVAL, "serial: fcr 0x%02x has bits 0x%02x set that are "
				  "never stored", s->fcr, s->fcr & ~FCR_KEPT);
	if (s->fcr && !(s->fcr & FCR_ENABLE))
		return errbuf_set(eb, -EINVAL, "serial: fcr 0x%02x sets bits without the FIFO "
				  "enable bit", s->fcr);
	if (s->rx_len > rx_capacity(s))
		return errbuf_set(eb, -EINVAL, "serial: rx_len %u exceeds the receive capacity %u "
				  "(FIFO %s)", s->rx_len, rx_capacity(s),
				  (s->fcr & FCR_ENABLE) ? "on" : "off");
	if ((s->lsr & (LSR_THRE | LSR_TEMT)) != (LSR_THRE | LSR_TEMT))
		return errbuf_set(eb, -EINVAL, "serial: lsr 0x%02x lacks THRE|TEMT (0x60): the "
				  "transmitter is always empty", s->lsr);
	if (s->lsr & LSR_NEVER)
		return errbuf_set(eb, -EINVAL, "serial: lsr 0x%02x has error bits 0x%02x this "
				  "UART never raises", s->lsr, s->lsr & LSR_NEVER);
	if (!!(s->lsr & LSR_DR) != !!s->rx_len)
		return errbuf_set(eb, -EINVAL, "serial: lsr data-ready bit is %u but rx_len is %u",
				  s->lsr & LSR_DR, s->rx_len);
	want = modem_lines(s->mcr);
	if ((s->msr & MSR_LINES) != want)
		return errbuf_set(eb, -EINVAL, "serial: msr lines 0x%02x do not match 0x%02x "
				  "implied by mcr 0x%02x", s->msr & MSR_LINES, want, s->mcr);
	if (s->thri_pending > 1)
		return errbuf_set(eb, -EINVAL, "serial: thri_pending is %u, not 0 or 1",
				  s->thri_pending);
	if (s->thri_pending && !(s->ier & IER_THRI))
		return errbuf_set(eb, -EINVAL, "serial: thri_pending set while ier 0x%02x has "
				  "THRI disabled", s->ier);
	want = compute_iir(s);
	if (s->iir != want)
		return errbuf_set(eb, -EINVAL, "serial: iir 0x%02x is inconsistent with the other "
				  "registers (expected 0x%02x)", s->iir, want);
	return 0;
}
