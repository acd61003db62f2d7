/*
 * What a guest waits for: the queue of host commands that its WAIT ucall takes from,
 * and parking, where a vCPU sleeps in a WAIT or PARK ucall until something may have
 * changed for its guest. An idle guest costs no host CPU this way (a guest that asked
 * again every few milliseconds used to cost a CPU per ~60 idle clones).
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "vmm.h"

/* ---- guest command queue ------------------------------------------------------ */

int vm_cmd_push(struct vm *vm, const char *cmd)
{
	char *c;
	int r = 0;

	if (strlen(cmd) >= EMBER_UCALL_DATA_MAX)
		return -ENAMETOOLONG;
	c = strdup(cmd);
	if (!c)
		return -ENOMEM;
	pthread_mutex_lock(&vm->cmd_lock);
	if (vm->cmd_tail - vm->cmd_head >= VM_MAX_GUEST_CMDS) {
		r = -ENOSPC;
		free(c);
	} else {
		vm->cmds[vm->cmd_tail++ % VM_MAX_GUEST_CMDS] = c;
	}
	pthread_mutex_unlock(&vm->cmd_lock);
	if (!r)
		vm_wake(vm);
	return r;
}

bool vm_cmd_pending(struct vm *vm)
{
	bool pending;

	pthread_mutex_lock(&vm->cmd_lock);
	pending = vm->cmd_head != vm->cmd_tail;
	pthread_mutex_unlock(&vm->cmd_lock);
	return pending;
}

int vm_cmd_pop(struct vm *vm, char *buf, size_t len, uint32_t *out_len)
{
	int status;

	pthread_mutex_lock(&vm->cmd_lock);
	if (vm->cmd_head != vm->cmd_tail) {
		char *c = vm->cmds[vm->cmd_head++ % VM_MAX_GUEST_CMDS];

		snprintf(buf, len, "%s", c);
		*out_len = (uint32_t)strnlen(buf, len);
		free(c);
		status = EMBER_WAIT_CMD;
	} else {
		buf[0] = 0;
		*out_len = 0;
		status = vm->cmd_may_arrive ? EMBER_WAIT_AGAIN : EMBER_WAIT_NONE;
	}
	pthread_mutex_unlock(&vm->cmd_lock);
	return status;
}

/* ---- parking vCPUs: an event count on a futex ------------------------------------- */

static long futex(uint32_t *uaddr, int op, uint32_t val, const struct timespec *ts)
{
	return syscall(SYS_futex, uaddr, op, val, ts, NULL, 0);
}

void vm_wake(struct vm *vm)
{
	/* seq_cst on both sides: either the sleeper sees the new seq, or we see it asleep */
	__atomic_add_fetch(&vm->wake_seq, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&vm->wake_sleepers, __ATOMIC_SEQ_CST))
		futex(&vm->wake_seq, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
}

static bool park_should_return(struct vm *vm, struct vcpu *v, uint32_t seen)
{
	return __atomic_load_n(&vm->wake_seq, __ATOMIC_SEQ_CST) != seen ||
	       (v && vcpu_msg_pending(v)) || atomic_load(&vm->stopping);
}

bool vm_park(struct vm *vm, struct vcpu *v, uint64_t timeout_us)
{
	uint32_t seen = v ? v->wake_seen : __atomic_load_n(&vm->wake_seq, __ATOMIC_SEQ_CST);
	uint64_t deadline = timeout_us ? timing_now_us() + timeout_us : 0;
	bool woken = true;

	while (!park_should_return(vm, v, seen)) {
		struct timespec ts, *tsp = NULL;

		if (deadline) {
			uint64_t now = timing_now_us();

			if (now >= deadline) {
				woken = false;
				break;
			}
			ts.tv_sec = (time_t)((deadline - now) / 1000000);
			ts.tv_nsec = (long)((deadline - now) % 1000000) * 1000;
			tsp = &ts;
		}
		__atomic_add_fetch(&vm->wake_sleepers, 1, __ATOMIC_SEQ_CST);
		/* returns at once if wake_seq moved since we looked; EINTR on a kick */
		if (!park_should_return(vm, v, seen))
			futex(&vm->wake_seq, FUTEX_WAIT_PRIVATE, seen, tsp);
		__atomic_sub_fetch(&vm->wake_sleepers, 1, __ATOMIC_SEQ_CST);
	}
	if (v)
		v->wake_seen = __atomic_load_n(&vm->wake_seq, __ATOMIC_SEQ_CST);
	return woken;
}
