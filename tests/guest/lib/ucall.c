/*
 * Ucalls (include/ember_abi.h): the block lives on the caller's stack, which the
 * stub identity-maps, so its address is its guest-physical address and several
 * vCPUs can ucall at once without sharing anything.
 */
#include "internal.h"

void ucall_send(struct ember_ucall *uc)
{
	if (pvh_start_info_gpa) { /* not on ember: no port to send it to */
		pvh_ucall(uc);
		return;
	}
	/* the "memory" clobber in outl orders the block's stores before the exit and
	 * the host's OUT-field writes before any later read */
	outl(EMBER_PORT_UCALL, (uint32_t)(uintptr_t)uc);
}

static void ucall_init(struct ember_ucall *uc, uint32_t cmd)
{
	memset(uc, 0, sizeof(*uc));
	uc->cmd = cmd;
}

void guest_sync(uint64_t stage)
{
	struct ember_ucall uc;

	ucall_init(&uc, EMBER_UCALL_SYNC);
	uc.args[0] = stage;
	ucall_send(&uc);
}

void guest_done(void)
{
	struct ember_ucall uc;

	ucall_init(&uc, EMBER_UCALL_DONE);
	ucall_send(&uc);
	sys_halt(); /* the host stops the VM; never resumed */
}

/* Keeps the tail of long paths: "…/tests/guest/x.c" says more than its start. */
static void copy_file_name(char *dst, size_t size, const char *file)
{
	size_t len = strlen(file);

	if (len >= size)
		file += len - (size - 1);
	strlcpy(dst, file, size);
}

void guest_assert_fail(const char *file, unsigned line, uint64_t a0, uint64_t a1,
		       const char *fmt, ...)
{
	struct ember_ucall uc;
	va_list ap;

	ucall_init(&uc, EMBER_UCALL_ASSERT);
	uc.line = line;
	uc.args[0] = a0;
	uc.args[1] = a1;
	copy_file_name(uc.file, sizeof(uc.file), file);
	va_start(ap, fmt);
	fmt_vsnprintf(uc.msg, sizeof(uc.msg), fmt, ap);
	va_end(ap);
	ucall_send(&uc);
	sys_halt();
}

void guest_print(const char *fmt, ...)
{
	char text[1024];
	struct ember_ucall uc;
	va_list ap;
	size_t len, off = 0;

	va_start(ap, fmt);
	fmt_vsnprintf(text, sizeof(text), fmt, ap); /* longer text is cut at 1023 bytes */
	va_end(ap);
	len = strnlen(text, sizeof(text));
	while (off < len) {
		size_t chunk = len - off;

		if (chunk > EMBER_UCALL_MSG_MAX - 1)
			chunk = EMBER_UCALL_MSG_MAX - 1;
		ucall_init(&uc, EMBER_UCALL_PRINT);
		memcpy(uc.msg, text + off, chunk);
		ucall_send(&uc);
		off += chunk;
	}
}

void guest_report(const char *msg, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3)
{
	struct ember_ucall uc;

	ucall_init(&uc, EMBER_UCALL_REPORT);
	uc.args[0] = a0;
	uc.args[1] = a1;
	uc.args[2] = a2;
	uc.args[3] = a3;
	strlcpy(uc.msg, msg, sizeof(uc.msg));
	ucall_send(&uc);
}

/* One WAIT ucall: 1 with the command copied to buf (length in *n), 0 for AGAIN, -ENODATA
 * for NONE. */
static int wait_once(uint32_t flags, char *buf, size_t len, int *n_out)
{
	struct ember_ucall uc;
	size_t n;

	ucall_init(&uc, EMBER_UCALL_WAIT);
	uc.args[0] = flags;
	uc.status = EMBER_WAIT_AGAIN; /* if the host wrote nothing, ask again */
	ucall_send(&uc);
	if (uc.status == EMBER_WAIT_NONE)
		return -ENODATA;
	if (uc.status == EMBER_WAIT_AGAIN)
		return 0;
	GUEST_ASSERT_MSG(uc.status == EMBER_WAIT_CMD, "host answered WAIT with unknown status %u",
			 uc.status);
	/* the host is trusted to terminate data, but never read past the block */
	n = strnlen(uc.data, sizeof(uc.data));
	if (n > uc.data_len)
		n = uc.data_len;
	if (len) {
		if (n > len - 1)
			n = len - 1;
		memcpy(buf, uc.data, n);
		buf[n] = 0;
	}
	*n_out = (int)n;
	return 1;
}

int guest_wait_cmd(char *buf, size_t len)
{
	int r, n = 0;

	/* the host sleeps while the queue is empty; AGAIN means "paused or woken, ask again" */
	while ((r = wait_once(0, buf, len, &n)) == 0)
		;
	return r < 0 ? r : n;
}

int guest_poll_cmd(char *buf, size_t len)
{
	int n = 0, r = wait_once(EMBER_WAIT_F_POLL, buf, len, &n);

	if (r == 0)
		return -EAGAIN;
	return r < 0 ? r : n;
}

int guest_park(uint64_t timeout_us)
{
	struct ember_ucall uc;

	ucall_init(&uc, EMBER_UCALL_PARK);
	uc.args[0] = timeout_us;
	uc.status = EMBER_PARK_EVENT; /* if the host wrote nothing: a spurious wake */
	ucall_send(&uc);
	return uc.status == EMBER_PARK_TIMEOUT ? EMBER_PARK_TIMEOUT : EMBER_PARK_EVENT;
}

void guest_ready(void)
{
	if (pvh_start_info_gpa)
		pvh_ready();
	else
		outb(EMBER_PORT_READY, 0);
}

void guest_reset(void)
{
	if (pvh_start_info_gpa)
		pvh_debug_exit(0); /* QEMU's microvm has no i8042 */
	outb(0x64, 0xfe); /* i8042: pulse the reset line */
	sys_halt();
}

uint64_t guest_generation(void)
{
	uint64_t hi;

	if (pvh_start_info_gpa)
		return 0; /* the ports would read as all ones */
	hi = inl(EMBER_PORT_GEN_HI); /* HI first, as ember_abi.h asks */
	return (hi << 32) | inl(EMBER_PORT_GEN_LO);
}

uint32_t guest_abi_version(void)
{
	return pvh_start_info_gpa ? 0 : inl(EMBER_PORT_ABI);
}
