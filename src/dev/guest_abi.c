/*
 * The ember_abi.h ports: ready signal, ucalls, VM generation, ABI version.
 * Everything the guest hands us is copied out of guest memory first and validated
 * on the copy, so a second vCPU rewriting the block cannot race the checks.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../vmm.h"
#include "../paging/paging.h"
#include "dev.h"
#include "metrics.h"

/* A PARK longer than this is cut short (the guest parks again): keeps the host's
 * deadline arithmetic far from overflow. */
#define PARK_MAX_US (3600ull * 1000000)

/* Copies a guest string into dst as printable ASCII, always NUL-terminated. */
static void sanitize(char *dst, const char *src, size_t n)
{
	size_t i;

	for (i = 0; i + 1 < n && src[i]; i++)
		dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) || src[i] == '\n' || src[i] == '\t'
				 ? src[i] : '?';
	dst[i] = 0;
}

static void console_write(struct vm *vm, const char *s, size_t len)
{
	if (vm->serial) {
		/* one writer: ordering with UART output, one limit, one count */
		serial_console_write(vm->serial, s, len);
		return;
	}
	if (vm->console_fd < 0)
		return;
	while (len) {
		ssize_t n = write(vm->console_fd, s, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		s += n;
		len -= (size_t)n;
	}
}

static void reply(struct vm *vm, uint64_t gpa, const void *out, size_t len, const char *what)
{
	if (gpa_write(&vm->mem, gpa + offsetof(struct ember_ucall, status), out, len))
		vm_request_stop(vm, VM_STOP_ERROR, 0, "guest ucall %s: block at 0x%" PRIx64
				" left guest RAM", what, gpa);
}

/*
 * With nothing queued but a control socket that may queue more, the vCPU sleeps until
 * something happens (a command, a pause, a stop) instead of answering AGAIN at once:
 * a guest asking again every few milliseconds costs a host CPU per ~60 idle clones.
 */
static void ucall_wait(struct vm *vm, uint64_t gpa, uint64_t flags)
{
	struct {
		uint32_t status, data_len;
		char data[EMBER_UCALL_DATA_MAX];
	} out = { 0 };

	if (!(flags & EMBER_WAIT_F_POLL) && !vm_cmd_pending(vm) && vm->cmd_may_arrive)
		vm_park(vm, vcpu_current(), 0);
	out.status = (uint32_t)vm_cmd_pop(vm, out.data, sizeof(out.data), &out.data_len);
	/* a guest that ends because nobody gave it work should not end silently (one that
	 * only polls has other work: vsock) */
	if (out.status == EMBER_WAIT_NONE && !(flags & EMBER_WAIT_F_POLL) &&
	    vm->cfg.nr_guest_cmds == 0 &&
	    !atomic_exchange(&vm->told_no_cmds, true))
		pr_warn("the guest asked for a command, but none was given (--guest-cmd) and no "
			"control socket can send one (--api-sock): it was told there are none");
	_Static_assert(sizeof(out) == EMBER_UCALL_SIZE - offsetof(struct ember_ucall, status),
		       "WAIT reply covers the OUT fields exactly");
	reply(vm, gpa, &out, sizeof(out), "WAIT");
}

static void ucall_park(struct vm *vm, uint64_t gpa, uint64_t timeout_us)
{
	uint32_t status;

	if (timeout_us > PARK_MAX_US)
		timeout_us = PARK_MAX_US;
	status = vm_park(vm, vcpu_current(), timeout_us) ? EMBER_PARK_EVENT : EMBER_PARK_TIMEOUT;
	reply(vm, gpa, &status, sizeof(status), "PARK");
}

static void handle_ucall(struct vm *vm, uint64_t gpa)
{
	struct ember_ucall uc;
	char file[EMBER_UCALL_FILE_MAX], msg[EMBER_UCALL_MSG_MAX + 1];

	if (gpa_read(&vm->mem, gpa, &uc, sizeof(uc))) {
		vm_request_stop(vm, VM_STOP_ERROR, 0,
				"guest ucall block at 0x%" PRIx64 " is not inside guest RAM", gpa);
		return;
	}
	sanitize(file, uc.file, sizeof(file));
	sanitize(msg, uc.msg, sizeof(uc.msg) + 1 > sizeof(msg) ? sizeof(msg) : sizeof(uc.msg) + 1);

	metrics_add(M_UCALLS, 1);
	switch (uc.cmd) {
	case EMBER_UCALL_SYNC:
		pr_debug("guest sync %" PRIu64, uc.args[0]);
		if (vm->cfg.stop_on_sync)
			vm_request_stop(vm, VM_STOP_SYNC, (int)uc.args[0], "guest sync %" PRIu64,
					uc.args[0]);
		break;
	case EMBER_UCALL_DONE:
		vm_request_stop(vm, VM_STOP_DONE, 0, "guest done");
		break;
	case EMBER_UCALL_ASSERT:
		vm_request_stop(vm, VM_STOP_ASSERT, 0,
				"guest assertion failed at %s:%u: %s (0x%" PRIx64 ", 0x%" PRIx64 ")",
				file, uc.line, msg, uc.args[0], uc.args[1]);
		break;
	case EMBER_UCALL_PRINT:
		console_write(vm, msg, strlen(msg));
		break;
	case EMBER_UCALL_WAIT:
		ucall_wait(vm, gpa, uc.args[0]);
		break;
	case EMBER_UCALL_PARK:
		ucall_park(vm, gpa, uc.args[0]);
		break;
	case EMBER_UCALL_REPORT: {
		struct mline l;

		/* a report ends the guest's first request: that is the working set */
		if (vm->pager)
			pager_record_stop(vm->pager);
		timing_mark("first-response");
		mline_begin(&l, "ember-report");
		mline_str(&l, "msg", msg);
		mline_hex(&l, "a0", uc.args[0]);
		mline_hex(&l, "a1", uc.args[1]);
		mline_hex(&l, "a2", uc.args[2]);
		mline_hex(&l, "a3", uc.args[3]);
		mline_u64(&l, "us", timing_now_us());
		mline_end(&l);
		break;
	}
	default:
		vm_request_stop(vm, VM_STOP_ERROR, 0, "guest made unknown ucall %u", uc.cmd);
	}
}

static void abi_write(struct device *d, uint64_t off, const uint8_t *data, unsigned len)
{
	struct vm *vm = d->vm;
	uint32_t v = 0;

	memcpy(&v, data, len > 4 ? 4 : len);
	switch (off) {
	case EMBER_PORT_UCALL - EMBER_PORT_BASE:
		if (len != 4) {
			vm_request_stop(vm, VM_STOP_ERROR, 0, "guest ucall port written with %u bytes", len);
			return;
		}
		handle_ucall(vm, v);
		break;
	case EMBER_PORT_READY - EMBER_PORT_BASE:
		pthread_mutex_lock(&d->lock);
		if (!vm->ready_seen) {
			vm->ready_seen = true;
			timing_mark("ready");
			if (vm->cfg.stop_on_ready)
				vm_request_stop(vm, VM_STOP_READY, 0, "guest ready");
		}
		pthread_mutex_unlock(&d->lock);
		break;
	default:
		break;
	}
}

static void abi_read(struct device *d, uint64_t off, uint8_t *data, unsigned len)
{
	struct vm *vm = d->vm;
	uint32_t v = 0xffffffff;

	switch (off) {
	case EMBER_PORT_GEN_LO - EMBER_PORT_BASE:
		v = (uint32_t)vm->generation;
		break;
	case EMBER_PORT_GEN_HI - EMBER_PORT_BASE:
		v = (uint32_t)(vm->generation >> 32);
		break;
	case EMBER_PORT_ABI - EMBER_PORT_BASE:
		v = EMBER_ABI_VERSION;
		break;
	}
	memset(data, 0, len);
	memcpy(data, &v, len > 4 ? 4 : len);
}

static int abi_init(struct device *d, struct errbuf *eb)
{
	return 0;
}

/* ---- snapshot section: whether the guest already signalled ready ------------------ */

static int abi_decode(const struct snap_device *sd, bool *ready_seen, struct errbuf *eb)
{
	uint64_t v = 0;
	int r = dev_get_u64(sd, "ready_seen", 1, &v, eb);

	*ready_seen = v;
	return r;
}

static int abi_save(struct device *d, struct snap_device *sd, struct snap_err *se)
{
	return snap_dev_put_u64(sd, "ready_seen", d->vm->ready_seen, se);
}

static int abi_restore(struct device *d, const struct snap_device *sd, struct errbuf *eb)
{
	bool ready;
	int r = abi_decode(sd, &ready, eb);

	if (!r)
		d->vm->ready_seen = ready;
	return r;
}

static int abi_check(const struct snap_state *st, const struct snap_device *sd,
		     struct errbuf *eb)
{
	bool ready;

	return abi_decode(sd, &ready, eb);
}

const struct dev_ops guest_abi_ops = {
	.name = "guest-abi",
	.version = ABI_STATE_VERSION,
	.self_locked = true,
	.init = abi_init,
	.read = abi_read,
	.write = abi_write,
	.save = abi_save,
	.restore = abi_restore,
	.check = abi_check,
};
