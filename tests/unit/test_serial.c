/* The 16550A UART, driven through its dev_ops as the bus drives it. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"
#include "dev/dev.h"

enum { RBR = 0, THR = 0, DLL = 0, IER = 1, DLM = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4,
       LSR = 5, MSR = 6, SCR = 7 };

/* Every set_level call, in order. */
struct irq_rec {
	int level[256];
	unsigned gsi[256];
	unsigned n;
};

static int record_level(void *opaque, unsigned gsi, int level)
{
	struct irq_rec *r = opaque;

	if (r->n < ARRAY_SIZE(r->level)) {
		r->gsi[r->n] = gsi;
		r->level[r->n] = level;
	}
	r->n++;
	return 0;
}

static struct irq_rec rec;
static struct device *dev;
static struct vm *vm;

/* A UART writing to out_fd whose interrupt line records into r. */
static struct device *make_uart(int out_fd, struct irq_rec *r)
{
	struct device *d;

	vm->console_fd = out_fd; /* the UART takes its console when powered on */
	d = devt_create(vm, "serial");
	cr_assert_eq(d->irq.gsi, SERIAL_COM1_IRQ, "the table wires COM1 to IRQ 4");
	d->irq = (struct irq_line){ .set_level = record_level, .opaque = r, .gsi = SERIAL_COM1_IRQ };
	return d;
}

static void setup(void)
{
	memset(&rec, 0, sizeof(rec));
	vm = devt_vm(-1);
	dev = make_uart(-1, &rec);
}

static void teardown(void)
{
	if (dev)
		dev_destroy(dev);
	dev = NULL;
	if (vm)
		devt_vm_free(vm);
	vm = NULL;
}

TestSuite(serial, .init = setup, .fini = teardown);

static uint8_t rd(struct device *d, unsigned off)
{
	uint8_t v = 0xaa;

	d->ops->read(d, off, &v, 1);
	return v;
}

static void wr(struct device *d, unsigned off, uint8_t v)
{
	d->ops->write(d, off, &v, 1);
}

static void wr_str(struct device *d, const char *s)
{
	while (*s)
		wr(d, THR, (uint8_t)*s++);
}

static int last_level(const struct irq_rec *r)
{
	return r->n ? r->level[r->n - 1] : 0;
}

static void make_pipe(int fds[2], bool nonblock)
{
	cr_assert_eq(pipe2(fds, nonblock ? O_NONBLOCK : 0), 0);
}

static ssize_t read_all(int fd, char *buf, size_t len)
{
	ssize_t n = read(fd, buf, len);

	if (n >= 0 && (size_t)n < len)
		buf[n] = 0;
	return n;
}

/* ---- plain registers ------------------------------------------------------------ */

Test(serial, scratch_register_holds_written_value)
{
	wr(dev, SCR, 0x5a);
	cr_assert_eq(rd(dev, SCR), 0x5a);
	wr(dev, SCR, 0xa5);
	cr_assert_eq(rd(dev, SCR), 0xa5);
}

Test(serial, lcr_reads_back_written_value)
{
	wr(dev, LCR, 0x1b);
	cr_assert_eq(rd(dev, LCR), 0x1b);
}

Test(serial, ier_keeps_only_low_nibble)
{
	wr(dev, IER, 0xff);
	cr_assert_eq(rd(dev, IER), 0x0f);
	wr(dev, IER, 0x00);
	cr_assert_eq(rd(dev, IER), 0x00);
}

Test(serial, mcr_keeps_only_defined_bits)
{
	wr(dev, MCR, 0xef);
	cr_assert_eq(rd(dev, MCR), 0x0f);
}

Test(serial, lsr_reports_empty_transmitter_after_reset)
{
	cr_assert_eq(rd(dev, LSR), 0x60);
}

Test(serial, lsr_and_msr_ignore_writes)
{
	uint8_t msr = rd(dev, MSR);

	wr(dev, LSR, 0x1f);
	wr(dev, MSR, 0x0f);
	cr_assert_eq(rd(dev, LSR), 0x60);
	cr_assert_eq(rd(dev, MSR), msr);
}

Test(serial, msr_reports_connected_peer_outside_loopback)
{
	cr_assert_eq(rd(dev, MSR), 0xb0); /* DCD | DSR | CTS */
}

Test(serial, offsets_beyond_scr_read_ff_and_ignore_writes)
{
	struct serial_state before, after;

	serial_get_state(dev, &before);
	wr(dev, 8, 0x12);
	wr(dev, 200, 0x12);
	serial_get_state(dev, &after);
	cr_assert_eq(rd(dev, 8), 0xff);
	cr_assert_eq(memcmp(&before, &after, sizeof(before)), 0);
}

Test(serial, wide_access_is_split_into_consecutive_bytes)
{
	uint8_t w[2] = { 0x03, 0x77 }, r[2] = { 0, 0 };

	dev->ops->write(dev, LCR, w, 1);
	dev->ops->write(dev, SCR, &w[1], 1);
	dev->ops->read(dev, MSR, r, 2);
	cr_assert_eq(r[0], 0xb0);
	cr_assert_eq(r[1], 0x77);
	r[0] = r[1] = 0;
	dev->ops->read(dev, SCR, r, 2); /* second byte is past the UART */
	cr_assert_eq(r[0], 0x77);
	cr_assert_eq(r[1], 0xff);
}

/* ---- divisor latch ---------------------------------------------------------------- */

Test(serial, dlab_maps_offsets_0_and_1_to_divisor_latch)
{
	wr(dev, IER, 0x05);
	wr(dev, LCR, 0x83);
	wr(dev, DLL, 0x01);
	wr(dev, DLM, 0x02);
	cr_assert_eq(rd(dev, DLL), 0x01);
	cr_assert_eq(rd(dev, DLM), 0x02);
	wr(dev, LCR, 0x03);
	cr_assert_eq(rd(dev, IER), 0x05, "IER untouched by divisor writes");
	wr(dev, LCR, 0x83);
	cr_assert_eq(rd(dev, DLL), 0x01, "divisor kept across DLAB toggles");
}

Test(serial, dlab_divisor_write_does_not_transmit)
{
	int fds[2];
	char buf[8];

	make_pipe(fds, true);
	dev_destroy(dev);
	dev = make_uart(fds[1], &rec);
	wr(dev, LCR, 0x80);
	wr(dev, DLL, '\n');
	serial_flush(dev);
	cr_assert_eq(read_all(fds[0], buf, sizeof(buf)), -1);
	cr_assert_eq(errno, EAGAIN);
}

/* ---- FIFO control ------------------------------------------------------------------ */

Test(serial, iir_without_fifo_reports_no_interrupt)
{
	cr_assert_eq(rd(dev, IIR), 0x01);
}

Test(serial, fifo_enable_sets_iir_fifo_bits)
{
	wr(dev, FCR, 0x01);
	cr_assert_eq(rd(dev, IIR), 0xc1);
	wr(dev, FCR, 0x00);
	cr_assert_eq(rd(dev, IIR), 0x01);
}

Test(serial, fcr_64_byte_bit_is_ignored_like_a_16550a)
{
	/* Linux tells a TI16750 apart by IIR bit 5 following FCR bit 5 */
	wr(dev, FCR, 0x21);
	cr_assert_eq(rd(dev, IIR) & 0x20, 0);
	wr(dev, LCR, 0x80);
	wr(dev, FCR, 0x21);
	cr_assert_eq(rd(dev, IIR) & 0x20, 0);
}

Test(serial, fcr_clear_rx_empties_receive_fifo)
{
	wr(dev, FCR, 0x01);
	cr_assert_eq(serial_input(dev, (const uint8_t *)"abc", 3), 3);
	wr(dev, FCR, 0x03);
	cr_assert_eq(rd(dev, LSR) & 0x01, 0);
	cr_assert_eq(rd(dev, IIR), 0xc1);
}

Test(serial, toggling_fifo_enable_empties_receive_fifo)
{
	wr(dev, FCR, 0x01);
	serial_input(dev, (const uint8_t *)"abc", 3);
	wr(dev, FCR, 0x00);
	cr_assert_eq(rd(dev, LSR) & 0x01, 0);
}

Test(serial, passes_linux_8250_autoconfig_as_16550a)
{
	uint8_t ier_zero, ier_all, loop_msr, iir;

	/* IER existence test */
	wr(dev, IER, 0);
	ier_zero = rd(dev, IER) & 0x0f;
	wr(dev, IER, 0x0f);
	ier_all = rd(dev, IER) & 0x0f;
	wr(dev, IER, 0);
	cr_assert_eq(ier_zero, 0);
	cr_assert_eq(ier_all, 0x0f);
	/* loopback test: RTS -> CTS, OUT2 -> DCD */
	wr(dev, MCR, 0x10 | 0x0a);
	loop_msr = rd(dev, MSR) & 0xf0;
	wr(dev, MCR, 0x08);
	cr_assert_eq(loop_msr, 0x90);
	/* EFR probe at LCR 0xbf, then the FIFO type from IIR */
	wr(dev, LCR, 0xbf);
	wr(dev, 2, 0);
	wr(dev, LCR, 0);
	wr(dev, FCR, 0x01);
	iir = rd(dev, IIR);
	cr_assert_eq(iir >> 6, 3, "IIR 0x%02x does not say 16550A", iir);
	/* no EFR when DLAB is set: a 16650 would read 0 here */
	wr(dev, LCR, 0x80);
	cr_assert_neq(rd(dev, 2), 0);
	/* LSR safety check in serial8250_do_startup */
	wr(dev, LCR, 0);
	cr_assert_neq(rd(dev, LSR), 0xff);
}

/* ---- THRE interrupt --------------------------------------------------------------- */

Test(serial, enabling_thri_with_empty_thr_raises_interrupt)
{
	wr(dev, IER, 0x02);
	cr_assert_eq(rec.n, 1);
	cr_assert_eq(rec.level[0], 1);
	cr_assert_eq(rec.gsi[0], SERIAL_COM1_IRQ);
	cr_assert_eq(rd(dev, IIR), 0x02);
}

Test(serial, reading_iir_acknowledges_thre_interrupt)
{
	wr(dev, IER, 0x02);
	cr_assert_eq(rd(dev, IIR), 0x02);
	cr_assert_eq(rd(dev, IIR), 0x01);
	cr_assert_eq(last_level(&rec), 0);
}

Test(serial, writing_thr_rearms_thre_interrupt)
{
	wr(dev, IER, 0x02);
	rd(dev, IIR);
	wr(dev, THR, 'x');
	cr_assert_eq(rd(dev, IIR), 0x02);
}

Test(serial, reenabling_thri_reasserts_thre)
{
	/* serial8250_do_startup's THRE test: a real 16550 reasserts on re-enable */
	wr(dev, IER, 0x02);
	rd(dev, IIR);
	wr(dev, IER, 0x00);
	wr(dev, IER, 0x02);
	cr_assert_eq(rd(dev, IIR), 0x02);
}

Test(serial, rewriting_ier_with_thri_still_set_does_not_rearm)
{
	wr(dev, IER, 0x02);
	rd(dev, IIR);
	wr(dev, IER, 0x03);
	cr_assert_eq(rd(dev, IIR), 0x01);
}

Test(serial, thr_write_with_thri_disabled_raises_nothing)
{
	wr(dev, THR, 'x');
	cr_assert_eq(rd(dev, IIR), 0x01);
	cr_assert_eq(rec.n, 0);
}

Test(serial, disabling_thri_lowers_line)
{
	wr(dev, IER, 0x02);
	wr(dev, IER, 0x00);
	cr_assert_eq(rec.n, 2);
	cr_assert_eq(rec.level[1], 0);
	cr_assert_eq(rd(dev, IIR), 0x01);
}

/* ---- receive -------------------------------------------------------------------------- */

Test(serial, input_sets_data_ready_and_raises_rda_interrupt)
{
	wr(dev, IER, 0x01);
	cr_assert_eq(serial_input(dev, (const uint8_t *)"a", 1), 1);
	cr_assert_eq(rd(dev, LSR) & 0x01, 0x01);
	cr_assert_eq(rd(dev, IIR), 0x04);
	cr_assert_eq(last_level(&rec), 1);
}

Test(serial, reading_rbr_drains_fifo_in_order_and_clears_rda)
{
	wr(dev, FCR, 0x01);
	wr(dev, IER, 0x01);
	serial_input(dev, (const uint8_t *)"ab", 2);
	cr_assert_eq(rd(dev, RBR), 'a');
	cr_assert_eq(rd(dev, IIR), 0xc4, "one byte left: still pending");
	cr_assert_eq(rd(dev, RBR), 'b');
	cr_assert_eq(rd(dev, LSR) & 0x01, 0);
	cr_assert_eq(rd(dev, IIR), 0xc1);
	cr_assert_eq(last_level(&rec), 0);
}

Test(serial, rbr_reads_zero_when_empty)
{
	cr_assert_eq(rd(dev, RBR), 0);
	cr_assert_eq(rd(dev, LSR), 0x60);
}

Test(serial, rda_outranks_thre)
{
	wr(dev, IER, 0x03);
	serial_input(dev, (const uint8_t *)"a", 1);
	cr_assert_eq(rd(dev, IIR), 0x04);
	rd(dev, RBR);
	cr_assert_eq(rd(dev, IIR), 0x02);
}

Test(serial, input_beyond_fifo_is_refused_without_overrun)
{
	uint8_t buf[100];

	memset(buf, 'q', sizeof(buf));
	wr(dev, FCR, 0x01);
	cr_assert_eq(serial_input(dev, buf, sizeof(buf)), SERIAL_FIFO_SIZE);
	cr_assert_eq(serial_input(dev, buf, 1), 0, "full FIFO takes nothing");
	/* the host keeps refused bytes and retries: nothing was lost on the line */
	cr_assert_eq(rd(dev, LSR) & 0x02, 0);
	rd(dev, RBR);
	cr_assert_eq(serial_input(dev, buf, 5), 1, "one slot freed");
}

Test(serial, input_without_fifo_takes_one_byte)
{
	cr_assert_eq(serial_input(dev, (const uint8_t *)"xy", 2), 1);
	cr_assert_eq(rd(dev, RBR), 'x');
	cr_assert_eq(serial_input(dev, (const uint8_t *)"y", 1), 1);
}

/* ---- loopback --------------------------------------------------------------------- */

Test(serial, loopback_returns_transmitted_bytes_to_receiver)
{
	wr(dev, FCR, 0x01);
	wr(dev, MCR, 0x10);
	wr_str(dev, "ok");
	cr_assert_eq(rd(dev, LSR) & 0x01, 0x01);
	cr_assert_eq(rd(dev, RBR), 'o');
	cr_assert_eq(rd(dev, RBR), 'k');
}

Test(serial, loopback_output_does_not_reach_console)
{
	int fds[2];
	char buf[8];

	make_pipe(fds, true);
	dev_destroy(dev);
	dev = make_uart(fds[1], &rec);
	wr(dev, MCR, 0x10);
	wr(dev, THR, '\n');
	serial_flush(dev);
	cr_assert_eq(read_all(fds[0], buf, sizeof(buf)), -1);
	cr_assert_eq(errno, EAGAIN);
}

Test(serial, loopback_overflow_sets_overrun_and_keeps_oldest)
{
	wr(dev, FCR, 0x01);
	wr(dev, MCR, 0x10);
	for (unsigned i = 0; i <= SERIAL_FIFO_SIZE; i++)
		wr(dev, THR, (uint8_t)i);
	cr_assert_eq(rd(dev, LSR) & 0x02, 0x02);
	cr_assert_eq(rd(dev, LSR) & 0x02, 0, "reading LSR clears OE");
	for (unsigned i = 0; i < SERIAL_FIFO_SIZE; i++)
		cr_assert_eq(rd(dev, RBR), (uint8_t)i);
	cr_assert_eq(rd(dev, LSR) & 0x01, 0);
}

Test(serial, overrun_raises_line_status_interrupt_above_rda)
{
	wr(dev, IER, 0x05);
	wr(dev, MCR, 0x10);
	wr(dev, THR, 'a');
	cr_assert_eq(rd(dev, IIR), 0x04);
	wr(dev, THR, 'b'); /* no FIFO: the holding register overflows */
	cr_assert_eq(rd(dev, IIR), 0x06);
	rd(dev, LSR);
	cr_assert_eq(rd(dev, IIR), 0x04);
	cr_assert_eq(rd(dev, RBR), 'b', "16450 mode: the newer byte overwrote the older");
}

Test(serial, host_input_is_refused_in_loopback)
{
	wr(dev, MCR, 0x10);
	cr_assert_eq(serial_input(dev, (const uint8_t *)"a", 1), 0);
	cr_assert_eq(rd(dev, LSR) & 0x01, 0);
}

Test(serial, loopback_msr_reflects_mcr_outputs)
{
	wr(dev, MCR, 0x10 | 0x02); /* RTS -> CTS */
	cr_assert_eq(rd(dev, MSR) & 0xf0, 0x10);
	wr(dev, MCR, 0x10 | 0x01); /* DTR -> DSR */
	cr_assert_eq(rd(dev, MSR) & 0xf0, 0x20);
	wr(dev, MCR, 0x10 | 0x04); /* OUT1 -> RI */
	cr_assert_eq(rd(dev, MSR) & 0xf0, 0x40);
	wr(dev, MCR, 0x10 | 0x08); /* OUT2 -> DCD */
	cr_assert_eq(rd(dev, MSR) & 0xf0, 0x80);
	wr(dev, MCR, 0x08);
	cr_assert_eq(rd(dev, MSR) & 0xf0, 0xb0, "host lines back outside loopback");
}

/* ---- modem status deltas --------------------------------------------------------------- */

Test(serial, msr_delta_bits_record_changes_until_read)
{
	wr(dev, MCR, 0x10); /* all inputs drop from DCD|DSR|CTS */
	cr_assert_eq(rd(dev, MSR), 0x0b); /* DDCD | DDSR | DCTS */
	cr_assert_eq(rd(dev, MSR), 0x00);
}

Test(serial, msr_teri_only_on_trailing_edge_of_ri)
{
	wr(dev, MCR, 0x10);
	rd(dev, MSR);
	wr(dev, MCR, 0x10 | 0x04);
	cr_assert_eq(rd(dev, MSR) & 0x04, 0, "rising RI sets no TERI");
	wr(dev, MCR, 0x10);
	cr_assert_eq(rd(dev, MSR) & 0x04, 0x04);
}

Test(serial, msr_delta_raises_modem_status_interrupt_when_enabled)
{
	wr(dev, IER, 0x08);
	wr(dev, MCR, 0x10 | 0x02);
	cr_assert_eq(rd(dev, IIR), 0x00);
	cr_assert_eq(last_level(&rec), 1);
	rd(dev, MSR);
	cr_assert_eq(rd(dev, IIR), 0x01);
	cr_assert_eq(last_level(&rec), 0);
}

/* ---- host output ---------------------------------------------------------------------- */

Test(serial, output_reaches_pipe_at_newline)
{
	int fds[2];
	char buf[16];

	make_pipe(fds, true);
	dev_destroy(dev);
	dev = make_uart(fds[1], &rec);
	wr_str(dev, "hi\n");
	cr_assert_eq(read_all(fds[0], buf, sizeof(buf)), 3);
	cr_assert_str_eq(buf, "hi\n");
}

Test(serial, output_without_newline_waits_for_flush)
{
	int fds[2];
	char buf[16];

	make_pipe(fds, true);
	dev_destroy(dev);
	dev = make_uart(fds[1], &rec);
	wr_str(dev, "abc");
	cr_assert_eq(read_all(fds[0], buf, sizeof(buf)), -1);
	serial_flush(dev);
	cr_assert_eq(read_all(fds[0], buf, sizeof(buf)), 3);
	cr_assert_str_eq(buf, "abc");
}

Test(serial, output_reaches_memfd)
{
	int fd = memfd_create("uart", 0);
	char buf[16] = { 0 };

	cr_assert_geq(fd, 0);
	dev_destroy(dev);
	dev = make_uart(fd, &rec);
	wr_str(dev, "line one\nrest");
	serial_flush(dev);
	cr_assert_eq(pread(fd, buf, sizeof(buf) - 1, 0), 13);
	cr_assert_str_eq(buf, "line one\nrest");
}

Test(serial, long_output_without_newline_is_flushed_when_buffer_fills)
{
	int fd = memfd_create("uart", 0);
	struct stat st;

	cr_assert_geq(fd, 0);
	dev_destroy(dev);
	dev = make_uart(fd, &rec);
	for (int i = 0; i < 5000; i++)
		wr(dev, THR, 'z');
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_gt(st.st_size, 4000, "only %lld bytes written before the flush",
		     (long long)st.st_size);
	serial_flush(dev);
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq(st.st_size, 5000);
}

Test(serial, full_nonblocking_console_keeps_output_for_later)
{
	int fds[2];
	char buf[65536];
	ssize_t n, total = 0;

	make_pipe(fds, true);
	cr_assert_geq(fcntl(fds[1], F_SETPIPE_SZ, 4096), 4096);
	/* fill the pipe completely */
	memset(buf, '.', sizeof(buf));
	while (write(fds[1], buf, 4096) > 0)
		;
	dev_destroy(dev);
	dev = make_uart(fds[1], &rec);
	wr_str(dev, "kept\n"); /* EAGAIN: must neither fail nor lose it */
	cr_assert_eq(rd(dev, LSR), 0x60);
	while ((n = read(fds[0], buf, sizeof(buf))) > 0)
		total += n;
	serial_flush(dev);
	n = read_all(fds[0], buf, sizeof(buf));
	cr_assert_eq(n, 5);
	cr_assert_eq(memcmp(buf, "kept\n", 5), 0);
	cr_assert_gt(total, 0);
}

Test(serial, console_write_error_discards_output_without_stalling)
{
	int fd = open("/dev/null", O_RDONLY); /* write() fails with EBADF */

	cr_assert_geq(fd, 0);
	dev_destroy(dev);
	dev = make_uart(fd, &rec);
	wr_str(dev, "lost\nlost again\n");
	serial_flush(dev);
	cr_assert_eq(rd(dev, LSR), 0x60);
	close(fd);
}

/* ---- IRQ line ---------------------------------------------------------------------- */

Test(serial, irq_line_driven_only_on_level_changes)
{
	wr(dev, IER, 0x02);          /* THRE: up */
	wr_str(dev, "abc");          /* stays up, no calls */
	cr_assert_eq(rec.n, 1);
	rd(dev, IIR);                /* acknowledged: down */
	wr(dev, THR, 'd');           /* re-armed: up */
	wr(dev, IER, 0x00);          /* masked: down */
	cr_assert_eq(rec.n, 4);
	cr_assert_eq(rec.level[0], 1);
	cr_assert_eq(rec.level[1], 0);
	cr_assert_eq(rec.level[2], 1);
	cr_assert_eq(rec.level[3], 0);
}

static int failing_set_level(void *opaque, unsigned gsi, int level)
{
	(*(unsigned *)opaque)++;
	return -EIO;
}

Test(serial, failed_irq_update_is_retried_on_next_change)
{
	unsigned calls = 0;
	struct device *d = make_uart(-1, &rec);

	d->irq = (struct irq_line){ .set_level = failing_set_level, .opaque = &calls, .gsi = 4 };
	d->ops->write(d, IER, (const uint8_t[]){ 0x02 }, 1);
	cr_assert_eq(calls, 1);
	d->ops->write(d, SCR, (const uint8_t[]){ 0x00 }, 1);
	cr_assert_eq(calls, 2, "level unknown after a failure: drive it again");
	dev_destroy(d);
}

/* ---- state save / restore ----------------------------------------------------------- */

/* A UART with something in every register: divisor, FIFO with data, pending THRE. */
static void make_busy(struct device *d)
{
	wr(d, LCR, 0x80);
	wr(d, DLL, 0x01);
	wr(d, DLM, 0x00);
	wr(d, LCR, 0x03);
	wr(d, FCR, 0xc1);
	wr(d, MCR, 0x0b);
	wr(d, SCR, 0x42);
	wr(d, IER, 0x0b);
	cr_assert_eq(serial_input(d, (const uint8_t *)"xyz", 3), 3);
}

/* Reads every register the same way on both devices and compares. */
static void assert_same_behaviour(struct device *a, struct device *b)
{
	static const unsigned seq[] = { IIR, LSR, MSR, RBR, IIR, RBR, RBR, IIR, IIR, IER, LCR,
					MCR, SCR, LSR };

	for (unsigned i = 0; i < ARRAY_SIZE(seq); i++)
		cr_assert_eq(rd(a, seq[i]), rd(b, seq[i]), "step %u (offset %u) differs", i, seq[i]);
}

Test(serial, state_round_trip_into_fresh_device_behaves_identically)
{
	struct irq_rec rec2 = { .n = 0 };
	struct serial_state st, st2;
	struct device *fresh = make_uart(-1, &rec2);
	struct errbuf eb = { .msg = "" };

	make_busy(dev);
	serial_get_state(dev, &st);
	cr_assert_eq(serial_set_state(fresh, &st, &eb), 0, "%s", eb.msg);
	serial_get_state(fresh, &st2);
	cr_assert_eq(memcmp(&st, &st2, sizeof(st)), 0);
	cr_assert_eq(rec2.n, 1, "restore drives the line");
	cr_assert_eq(rec2.level[0], 1);
	assert_same_behaviour(dev, fresh);
	dev_destroy(fresh);
}

Test(serial, restoring_quiet_state_drives_line_low)
{
	struct serial_state st;

	wr(dev, IER, 0x02);
	rec.n = 0;
	serial_get_state(dev, &st);
	st.ier = 0;
	st.thri_pending = 0;
	st.iir = 0x01;
	cr_assert_eq(serial_set_state(dev, &st, NULL), 0);
	cr_assert_eq(rec.n, 1);
	cr_assert_eq(rec.level[0], 0);
}

Test(serial, restore_drives_line_even_if_level_looks_unchanged)
{
	struct serial_state st;

	/* the line's real level is unknown after a restore (e.g. a reused VM) */
	serial_get_state(dev, &st);
	cr_assert_eq(serial_set_state(dev, &st, NULL), 0);
	cr_assert_eq(rec.n, 1);
	cr_assert_eq(rec.level[0], 0);
}

Test(serial, fresh_state_is_valid)
{
	struct serial_state st;
	struct errbuf eb = { .msg = "" };

	make_busy(dev);
	serial_get_state(dev, &st);
	cr_assert_eq(serial_state_validate(&st, &eb), 0, "%s", eb.msg);
}

static struct serial_state valid_state(void)
{
	struct serial_state st;

	make_busy(dev);
	serial_get_state(dev, &st);
	return st;
}

static void assert_rejected(const struct serial_state *st, const char *needle)
{
	struct errbuf eb = { .msg = "" };
	struct serial_state before, after;

	cr_assert_eq(serial_state_validate(st, &eb), -EINVAL);
	cr_assert_not_null(strstr(eb.msg, needle), "message \"%s\" lacks \"%s\"", eb.msg, needle);
	serial_get_state(dev, &before);
	cr_assert_eq(serial_set_state(dev, st, &eb), -EINVAL);
	serial_get_state(dev, &after);
	cr_assert_eq(memcmp(&before, &after, sizeof(before)), 0, "rejected state was applied");
}

Test(serial, validate_rejects_rx_len_over_fifo_size)
{
	struct serial_state st = valid_state();

	st.rx_len = SERIAL_FIFO_SIZE + 1;
	assert_rejected(&st, "rx_len 65");
}

Test(serial, validate_rejects_two_bytes_with_fifo_off)
{
	struct serial_state st = valid_state();

	st.fcr = 0;
	st.rx_len = 2;
	st.iir = (uint8_t)(st.iir & 0x0f);
	assert_rejected(&st, "rx_len 2");
}

Test(serial, validate_rejects_ier_reserved_bits)
{
	struct serial_state st = valid_state();

	st.ier |= 0x10;
	assert_rejected(&st, "ier");
}

Test(serial, validate_rejects_mcr_reserved_bits)
{
	struct serial_state st = valid_state();

	st.mcr |= 0x80;
	assert_rejected(&st, "mcr");
}

Test(serial, validate_rejects_fcr_bits_without_enable)
{
	struct serial_state st = valid_state();

	st.fcr = 0xc0;
	assert_rejected(&st, "fcr");
}

Test(serial, validate_rejects_inconsistent_iir)
{
	struct serial_state st = valid_state();

	st.iir = 0xc1; /* data waits with RDI enabled: must be 0xc4 */
	assert_rejected(&st, "iir 0xc1");
}

Test(serial, validate_rejects_data_ready_without_data)
{
	struct serial_state st = valid_state();

	st.lsr &= (uint8_t)~0x01;
	assert_rejected(&st, "data-ready");
}

Test(serial, validate_rejects_lsr_without_thre)
{
	struct serial_state st = valid_state();

	st.lsr &= (uint8_t)~0x20;
	assert_rejected(&st, "THRE");
}

Test(serial, validate_rejects_msr_lines_not_matching_mcr)
{
	struct serial_state st = valid_state();

	st.msr = 0x00; /* outside loopback the lines are DCD|DSR|CTS */
	assert_rejected(&st, "msr");
}

Test(serial, validate_rejects_thre_pending_while_disabled)
{
	struct serial_state st = valid_state();

	st.ier &= (uint8_t)~0x02;
	st.thri_pending = 1;
	assert_rejected(&st, "thri_pending");
}

Test(serial, validate_rejects_thre_pending_not_boolean)
{
	struct serial_state st = valid_state();

	st.thri_pending = 2;
	assert_rejected(&st, "thri_pending is 2");
}
