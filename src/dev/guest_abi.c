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

/* How long a WAIT with an empty queue blocks the vCPU before answering AGAIN: long
 * enough not to spin, short enough that a pause/snapshot request is never delayed
 * by more than this. */
#define WAIT_POLL_MS 2

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
	if (vm->console_fd < 0)
		return;
	if (vm->serial)
		serial_flush(vm->serial); /* keep ordering with UART output */
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

static void ucall_wait(struct vm *vm, uint64_t gpa)
{
	struct {
		uint32_t status, data_len;
		char data[EMBER_UCALL_DATA_MAX];
	} out = { 0 };
	int timeout = vm->cmd_may_arrive ? WAIT_POLL_MS : 0;

	out.status = (uint32_t)vm_cmd_pop(vm, out.data, sizeof(out.data), &out.data_len, timeout);
	_Static_assert(sizeof(out) == EMBER_UCALL_SIZE - offsetof(struct ember_ucall, status),
		       "WAIT reply covers the OUT fields exactly");
	if (gpa_write(&vm->mem, gpa + offsetof(struct ember_ucall, status), &out, sizeof(out)))
		vm_request_stop(vm, VM_STOP_ERROR, 0, "guest ucall WAIT: block at 0x%" PRIx64
				" left guest RAM", gpa);
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
		ucall_wait(vm, gpa);
		break;
	case EMBER_UCALL_REPORT: {
		char line[EMBER_UCALL_MSG_MAX + 128];
		int n;

		/* a report ends the guest's first request: that is the working set */
		if (vm->pager)
			pager_record_stop(vm->pager);
		timing_mark("first-response");
		n = snprintf(line, sizeof(line),
				 "ember-report %s %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
				 msg, uc.args[0], uc.args[1], uc.args[2], uc.args[3], timing_now_us());

		if (write(STDERR_FILENO, line, (size_t)n) < 0) {
			/* stderr gone */
		}
		break;
	}
	default:
		vm_request_stop(vm, VM_STOP_ERROR, 0, "guest made unknown ucall %u", uc.cmd);
	}
}

static void abi_pio_write(struct device *d, uint64_t off, const uint8_t *data, unsigned len)
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

static void abi_pio_read(struct device *d, uint64_t off, uint8_t *data, unsigned len)
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

static void abi_destroy(struct device *d)
{
	pthread_mutex_destroy(&d->lock);
	free(d);
}

static const struct dev_ops abi_ops = {
	.name = "guest-abi",
	.pio_read = abi_pio_read,
	.pio_write = abi_pio_write,
	.destroy = abi_destroy,
	.self_locked = true,
};

int abi_dev_create(struct vm *vm, struct device **out)
{
	struct device *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->ops = &abi_ops;
	d->vm = vm;
	pthread_mutex_init(&d->lock, NULL);
	*out = d;
	return 0;
}
