/*
 * COM1 16550A output. Each port access is an exit to ember, so with the FIFO on
 * we poll LSR once per 16 bytes (THRE = transmit FIFO empty) instead of once per
 * byte. Still for short messages: bulk output should use guest_print() (one exit).
 */
#include "internal.h"

#define COM1_THR 0x3f8
#define COM1_FCR 0x3fa /* write */
#define COM1_IIR 0x3fa /* read */
#define COM1_LSR 0x3fd
#define LSR_THRE 0x20
#define FCR_ENABLE_CLEAR 0x07
#define IIR_FIFO_ON 0xc0
#define FIFO_BYTES 16
/* A UART that never reports THRE must not hang the guest. */
#define THRE_POLL_MAX 100000

static struct spinlock serial_lock;
static unsigned tx_burst; /* bytes per THRE: 16 with a working FIFO, else 1; 0 = unprobed */

static void serial_probe(void)
{
	outb(COM1_FCR, FCR_ENABLE_CLEAR);
	tx_burst = (inb(COM1_IIR) & IIR_FIFO_ON) == IIR_FIFO_ON ? FIFO_BYTES : 1;
}

static void wait_thre(void)
{
	for (unsigned i = 0; i < THRE_POLL_MAX && !(inb(COM1_LSR) & LSR_THRE); i++)
		cpu_relax();
}

void serial_write(const char *s, size_t len)
{
	spin_lock(&serial_lock);
	if (!tx_burst)
		serial_probe();
	while (len) {
		size_t n = len < tx_burst ? len : tx_burst;

		wait_thre();
		for (size_t i = 0; i < n; i++)
			outb(COM1_THR, (uint8_t)s[i]);
		s += n;
		len -= n;
	}
	spin_unlock(&serial_lock);
}

void serial_printf(const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	fmt_vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	serial_write(buf, strnlen(buf, sizeof(buf)));
}
