/*
 * vCPU threads. Each vCPU runs KVM_RUN on its own thread and is driven by messages
 * (run, pause, quit), never by locks taken inside a signal handler: the sender
 * stores the message, then kicks the thread with VCPU_KICK_SIGNAL whose handler only
 * sets kvm_run->immediate_exit, so KVM_RUN returns EINTR whether the signal lands
 * before or during the ioctl, and wakes the VM's parked vCPUs (vm_wake), so one
 * sleeping in a PARK or WAIT ucall returns too.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "vmm.h"
#include "arch/x86_64/x86.h"
#include "dev/dev.h"
#include "metrics.h"

#define VCPU_KICK_SIGNAL SIGRTMIN

static __thread struct vcpu *current_vcpu;

static void vcpu_kick_handler(int sig)
{
	struct vcpu *v = current_vcpu;

	(void)sig;
	if (v && v->run)
		v->run->immediate_exit = 1;
}

int vcpu_signals_init(void)
{
	struct sigaction sa = { .sa_handler = vcpu_kick_handler };

	sigemptyset(&sa.sa_mask);
	/* no SA_RESTART: KVM_RUN must come back with EINTR */
	if (sigaction(VCPU_KICK_SIGNAL, &sa, NULL) < 0)
		return -errno;
	return 0;
}

int vcpu_create(struct vm *vm, struct vcpu *v, unsigned id, struct errbuf *eb)
{
	void *run;

	memset(v, 0, sizeof(*v));
	v->vm = vm;
	v->id = id;
	v->fd = ioctl(vm->kvm.vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (v->fd < 0)
		return errbuf_set(eb, -errno, "KVM_CREATE_VCPU %u: %s", id, strerror(errno));
	run = mmap(NULL, (size_t)vm->kvm.run_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		   v->fd, 0);
	if (run == MAP_FAILED) {
		int r = -errno;

		close(v->fd);
		v->fd = -1;
		return errbuf_set(eb, r, "mmap of vCPU %u run area: %s", id, strerror(-r));
	}
	v->run = run;
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->cond, NULL);
	v->state = VCPU_PARKED;
	return 0;
}

void vcpu_destroy(struct vcpu *v)
{
	if (v->run)
		munmap(v->run, (size_t)v->vm->kvm.run_mmap_size);
	if (v->fd >= 0)
		close(v->fd);
	v->run = NULL;
	v->fd = -1;
	pthread_mutex_destroy(&v->lock);
	pthread_cond_destroy(&v->cond);
}

struct vcpu *vcpu_current(void)
{
	return current_vcpu;
}

bool vcpu_msg_pending(struct vcpu *v)
{
	return __atomic_load_n(&v->msg, __ATOMIC_ACQUIRE) != VCPU_MSG_NONE;
}

static void vcpu_report_error(struct vcpu *v, const char *what)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;

	if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0 || ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0) {
		vm_request_stop(v->vm, VM_STOP_ERROR, 0, "vCPU %u: %s", v->id, what);
		return;
	}
	vm_request_stop(v->vm, VM_STOP_ERROR, 0,
			"vCPU %u: %s (rip=0x%llx rsp=0x%llx cs=0x%x cr0=0x%llx cr3=0x%llx "
			"cr4=0x%llx efer=0x%llx)",
			v->id, what, regs.rip, regs.rsp, sregs.cs.selector, sregs.cr0, sregs.cr3,
			sregs.cr4, sregs.efer);
}

static void handle_io(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	bool out = run->io.direction == KVM_EXIT_IO_OUT;

	/* restore latency is measured to the guest's first sign of life */
	if (out && atomic_load_explicit(&v->vm->first_report_pending, memory_order_relaxed) &&
	    atomic_exchange(&v->vm->first_report_pending, false)) {
		atomic_store(&v->vm->first_report_us, timing_now_us());
		timing_mark("first-report");
	}
	for (uint32_t i = 0; i < run->io.count; i++) {
		bus_pio(v->vm, run->io.port, out, data, run->io.size);
		data += run->io.size;
	}
}

static void handle_mmio(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	unsigned len = run->mmio.len <= sizeof(run->mmio.data) ? run->mmio.len : sizeof(run->mmio.data);

	bus_mmio(v->vm, run->mmio.phys_addr, run->mmio.is_write, run->mmio.data, len);
}

/* Returns true when the vCPU must stop running (the VM is stopping). */
static bool handle_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	char what[128];

	if (atomic_load_explicit(&v->vm->wedged, memory_order_relaxed))
		return true; /* its memory may be wrong: nothing it does leaves the VM */
	metrics_exit(v->id, run->exit_reason);
	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		handle_io(v);
		return false;
	case KVM_EXIT_MMIO:
		handle_mmio(v);
		return false;
	case KVM_EXIT_INTR:
		return false;
	case KVM_EXIT_SHUTDOWN:
		/* A triple fault: an exception the guest could not handle, not a reset it asked
		 * for (those come through the i8042 reset line or a system event). Linux can
		 * reboot this way (reboot=t), but a guest that wants a clean exit has better. */
		vm_request_stop(v->vm, VM_STOP_CRASH, 0,
				"vCPU %u: triple fault (the guest crashed: an exception it could not "
				"handle)", v->id);
		return true;
	case KVM_EXIT_SYSTEM_EVENT:
		if (run->system_event.type == KVM_SYSTEM_EVENT_CRASH) {
			vm_request_stop(v->vm, VM_STOP_CRASH, 0, "vCPU %u: guest crash event", v->id);
		} else {
			vm_request_stop(v->vm, VM_STOP_RESET, 0, "vCPU %u: guest system event %u",
					v->id, run->system_event.type);
		}
		return true;
	case KVM_EXIT_INTERNAL_ERROR:
		snprintf(what, sizeof(what), "KVM internal error, suberror %u", run->internal.suberror);
		vcpu_report_error(v, what);
		return true;
	case KVM_EXIT_FAIL_ENTRY:
		snprintf(what, sizeof(what), "VM entry failed, reason 0x%llx",
			 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		vcpu_report_error(v, what);
		return true;
	case KVM_EXIT_HLT:
		/* the in-kernel irqchip handles HLT; seeing it means interrupts are off for good */
		vcpu_report_error(v, "halted with no way to wake up");
		return true;
	default:
		snprintf(what, sizeof(what), "unexpected KVM exit reason %u", run->exit_reason);
		vcpu_report_error(v, what);
		return true;
	}
}

/* Runs the guest until a message arrives or the VM stops. */
static void vcpu_run_loop(struct vcpu *v)
{
	struct vm *vm = v->vm;
	unsigned again_sleep_us = 20;

	for (;;) {
		if (vcpu_msg_pending(v) || atomic_load(&vm->stopping))
			return;
		if (!atomic_load_explicit(&vm->entered, memory_order_relaxed) &&
		    !atomic_exchange(&vm->entered, true))
			timing_mark(vm->entry_phase);
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			int e = errno;

			if (e == EINTR) {
				v->run->immediate_exit = 0;
				continue;
			}
			if (e == EAGAIN) {
				/* This KVM returns EAGAIN while an AP waits for INIT/SIPI
				 * (PLATFORM.md); back off up to 1 ms, stay responsive. */
				struct timespec ts = { 0, (long)again_sleep_us * 1000 };

				nanosleep(&ts, NULL);
				if (again_sleep_us < 1000)
					again_sleep_us *= 2;
				continue;
			}
			vm_request_stop(vm, VM_STOP_ERROR, 0, "vCPU %u: KVM_RUN: %s", v->id,
					strerror(e));
			return;
		}
		again_sleep_us = 20;
		v->entries++;
		if (handle_exit(v))
			return;
	}
}

/*
 * KVM finishes an I/O exit (e.g. copies IN data to RAX) only on the next KVM_RUN.
 * Before the vCPU parks — and so before anyone saves its state — re-enter once with
 * immediate_exit set, which completes the pending operation without running guest code.
 */
static void vcpu_complete_io(struct vcpu *v)
{
	v->run->immediate_exit = 1;
	if (ioctl(v->fd, KVM_RUN, 0) < 0 && errno != EINTR && errno != EAGAIN)
		pr_warn("vCPU %u: completing pending I/O: %s", v->id, strerror(errno));
	v->run->immediate_exit = 0;
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	sigset_t set;
	char name[16];
	int r;

	current_vcpu = v;
	snprintf(name, sizeof(name), "ember-vcpu%u", v->id);
	pthread_setname_np(pthread_self(), name);
	sigemptyset(&set);
	sigaddset(&set, VCPU_KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	/* from here on, every exit the guest causes is handled under the allowlist */
	if (v->vm->cfg.seccomp) {
		struct seccomp_fds fds = { .n = 0 };

		vm_vcpu_write_fds(v->vm, &fds);
		r = seccomp_apply(SECCOMP_VCPU, &fds);
	} else {
		r = 0;
	}
	if (r) {
		/* never runs the guest unconfined: it ends, as a QUIT would end it */
		vm_request_stop(v->vm, VM_STOP_ERROR, 0, "vCPU %u: seccomp: %s", v->id, strerror(-r));
		pthread_mutex_lock(&v->lock);
		v->state = VCPU_EXITED;
		pthread_cond_broadcast(&v->cond);
		pthread_mutex_unlock(&v->lock);
		return NULL;
	}

	pthread_mutex_lock(&v->lock);
	for (;;) {
		enum vcpu_msg msg;
		unsigned seq;

		while (v->msg == VCPU_MSG_NONE && v->state != VCPU_RUNNING)
			pthread_cond_wait(&v->cond, &v->lock);
		msg = v->msg;
		seq = v->seq;
		__atomic_store_n(&v->msg, VCPU_MSG_NONE, __ATOMIC_RELEASE);

		if (msg != VCPU_MSG_NONE && msg != VCPU_MSG_RUN && v->state == VCPU_RUNNING) {
			pthread_mutex_unlock(&v->lock);
			vcpu_complete_io(v);
			pthread_mutex_lock(&v->lock);
			v->state = VCPU_PARKED;
		}
		switch (msg) {
		case VCPU_MSG_RUN:
			v->state = VCPU_RUNNING;
			break;
		case VCPU_MSG_QUIT:
			v->state = VCPU_EXITED;
			v->acked = seq;
			pthread_cond_broadcast(&v->cond);
			pthread_mutex_unlock(&v->lock);
			return NULL;
		case VCPU_MSG_PAUSE:
		case VCPU_MSG_NONE:
			break;
		}
		if (msg != VCPU_MSG_NONE) {
			v->acked = seq;
			pthread_cond_broadcast(&v->cond);
		}
		if (v->state == VCPU_RUNNING) {
			pthread_mutex_unlock(&v->lock);
			vcpu_run_loop(v);
			pthread_mutex_lock(&v->lock);
			if (!vcpu_msg_pending(v)) {
				/* the VM is stopping: finish the last exit and park */
				pthread_mutex_unlock(&v->lock);
				vcpu_complete_io(v);
				pthread_mutex_lock(&v->lock);
				v->state = VCPU_PARKED;
				pthread_cond_broadcast(&v->cond);
			}
		}
	}
}

int thread_start_nosig(pthread_t *t, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int r;

	/* created with every signal blocked: SIGINT/SIGTERM reach the main loop's signalfd
	 * only (a vCPU thread unblocks its kick signal itself) */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -r;
}

int vcpu_start_thread(struct vcpu *v)
{
	int r = thread_start_nosig(&v->thread, vcpu_thread, v);

	if (r)
		return r;
	v->thread_started = true;
	return 0;
}

static unsigned vcpu_post(struct vcpu *v, enum vcpu_msg msg)
{
	unsigned seq;

	pthread_mutex_lock(&v->lock);
	seq = ++v->seq;
	__atomic_store_n(&v->msg, msg, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&v->cond);
	if (v->state == VCPU_RUNNING)
		pthread_kill(v->thread, VCPU_KICK_SIGNAL);
	pthread_mutex_unlock(&v->lock);
	vm_wake(v->vm);
	return seq;
}

static void vcpu_wait_ack(struct vcpu *v, unsigned seq)
{
	pthread_mutex_lock(&v->lock);
	while ((int)(v->acked - seq) < 0 && v->state != VCPU_EXITED)
		pthread_cond_wait(&v->cond, &v->lock);
	pthread_mutex_unlock(&v->lock);
}

int vcpus_send(struct vm *vm, enum vcpu_msg msg)
{
	unsigned seqs[VM_MAX_VCPUS];

	/* post to all first, then wait, so vCPUs act in parallel */
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		if (vm->vcpus[i].thread_started)
			seqs[i] = vcpu_post(&vm->vcpus[i], msg);
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		if (vm->vcpus[i].thread_started)
			vcpu_wait_ack(&vm->vcpus[i], seqs[i]);
	return 0;
}
