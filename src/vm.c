/*
 * The VM object: creation in the order that is cheapest on KVM (memslots before the
 * irqchip: PLATFORM.md measured ~7 ms for the other order), the main event loop
 * (vCPU stop events, SIGINT/SIGTERM, console input, a timeout), and teardown.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "vmm.h"
#include "arch/x86_64/x86.h"
#include "dev/dev.h"
#include "paging/paging.h"

const char *vm_stop_reason_name(enum vm_stop_reason r)
{
	static const char *const names[] = {
		[VM_STOP_NONE] = "none",	 [VM_STOP_RESET] = "reset",
		[VM_STOP_DONE] = "done",	 [VM_STOP_ASSERT] = "assert",
		[VM_STOP_ERROR] = "error",	 [VM_STOP_SIGNAL] = "signal",
		[VM_STOP_READY] = "ready",	 [VM_STOP_SYNC] = "sync",
		[VM_STOP_REQUEST] = "request", [VM_STOP_TIMEOUT] = "timeout",
		[VM_STOP_CRASH] = "crash",
	};

	if ((unsigned)r < ARRAY_SIZE(names) && names[r])
		return names[r];
	return "?";
}

static int console_open(struct vm *vm, struct errbuf *eb)
{
	switch (vm->cfg.console) {
	case CONSOLE_STDIO:
		vm->console_fd = STDOUT_FILENO;
		return 0;
	case CONSOLE_NONE:
		vm->console_fd = -1;
		return 0;
	case CONSOLE_FILE:
		vm->console_fd = open(vm->cfg.console_path,
				      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (vm->console_fd < 0)
			return errbuf_set(eb, -errno, "console file %s: %s", vm->cfg.console_path,
					  strerror(errno));
		vm->console_fd_owned = true;
		return 0;
	}
	return errbuf_set(eb, -EINVAL, "bad console kind");
}

struct vm *vm_alloc(const struct vm_config *cfg)
{
	struct vm *vm = calloc(1, sizeof(*vm));

	if (!vm)
		return NULL;
	vm->cfg = *cfg;
	vm->kvm.dev_fd = vm->kvm.vm_fd = -1;
	vm->console_fd = -1;
	vm->event_fd = -1;
	vm->sig_fd = -1;
	vm->ep = -1;
	vm->golden_fd = -1;
	vm->lease_fd = -1;
	vm->ready_fd = -1;
	vm->entry_phase = "first-entry";
	pthread_mutex_init(&vm->cmd_lock, NULL);
	pthread_mutex_init(&vm->stop_lock, NULL);
	vm->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	vm->ep = epoll_create1(EPOLL_CLOEXEC);
	/* the CLI bounds the count and the length; a failure here is a caller bug */
	for (unsigned i = 0; i < cfg->nr_guest_cmds; i++)
		if (vm_cmd_push(vm, cfg->guest_cmds[i]))
			goto fail;
	if (vm->event_fd < 0 || vm->ep < 0)
		goto fail;
	return vm;
fail:
	vm_destroy(vm);
	return NULL;
}

static int create_vcpus(struct vm *vm, unsigned n, bool fresh, struct errbuf *eb)
{
	int r;

	vm->vcpus = calloc(n, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		return errbuf_set(eb, -ENOMEM, "out of memory");
	for (unsigned i = 0; i < n; i++) {
		r = vcpu_create(vm, &vm->vcpus[i], i, eb);
		if (r)
			return r;
		vm->nr_vcpus++;
		/* a restored vCPU gets CPUID and MSRs from the snapshot instead */
		if (fresh) {
			r = x86_vcpu_init(vm, &vm->vcpus[i], vm->supported_cpuid, eb);
			if (r)
				return r;
		}
	}
	return 0;
}

int vm_build(struct vm *vm, const struct vm_shape *s, struct errbuf *eb)
{
	int r;

	if (s->nr_vcpus < 1 || s->nr_vcpus > VM_MAX_VCPUS ||
	    s->nr_vcpus > (unsigned)vm->kvm.max_vcpus)
		return errbuf_set(eb, -EINVAL, "%u vCPUs: ember supports 1..%u, this KVM %d%s",
				  s->nr_vcpus, VM_MAX_VCPUS, vm->kvm.max_vcpus,
				  s->devices ? " (the snapshot's count)" : "");
	r = kvm_create_vm(&vm->kvm, eb);
	if (r)
		return r;
	timing_mark("vm-created");
	r = mem_set_regions(&vm->mem, s->regions, s->nr_regions, s->mem_bytes, eb);
	if (!r)
		r = mem_reserve(&vm->mem, eb);
	if (!r)
		r = mem_register(&vm->mem, vm->kvm.vm_fd, vm->cfg.dirty_tracking, eb);
	if (!r)
		r = kvm_create_irqchip(&vm->kvm, eb);
	if (!r && s->fresh_vcpus)
		r = cpuid_get_supported(vm->kvm.dev_fd, &vm->supported_cpuid, eb);
	if (!r)
		r = create_vcpus(vm, s->nr_vcpus, s->fresh_vcpus, eb);
	if (!r)
		r = console_open(vm, eb);
	if (!r)
		r = devices_create(vm, s->devices, eb);
	return r;
}

int vm_create(struct vm **out, const struct vm_config *cfg, struct errbuf *eb)
{
	struct guest_mem layout;
	struct vm_shape shape;
	struct vm *vm;
	int r;

	*out = NULL;
	if (cfg->nr_vcpus < 1 || cfg->nr_vcpus > VM_MAX_VCPUS)
		return errbuf_set(eb, -EINVAL, "vCPU count %u is outside 1..%u", cfg->nr_vcpus,
				  VM_MAX_VCPUS);
	r = mem_layout(&layout, cfg->mem_bytes, eb);
	if (r)
		return r;
	vm = vm_alloc(cfg);
	if (!vm)
		return errbuf_set(eb, -ENOMEM, "out of memory");
	r = kvm_open(&vm->kvm, eb);
	if (r)
		goto fail;
	if (cfg->nr_vcpus > (unsigned)vm->kvm.max_vcpus) {
		r = errbuf_set(eb, -EINVAL, "%u vCPUs requested, KVM supports %d", cfg->nr_vcpus,
			       vm->kvm.max_vcpus);
		goto fail;
	}
	shape = (struct vm_shape){ .nr_vcpus = cfg->nr_vcpus, .regions = layout.regions,
				   .nr_regions = layout.nr_regions, .mem_bytes = layout.size,
				   .devices = NULL, .fresh_vcpus = true };
	r = vm_build(vm, &shape, eb);
	if (!r)
		r = mem_alloc_anon(&vm->mem, eb);
	if (r)
		goto fail;
	timing_mark("kvm-ready");
	*out = vm;
	return 0;
fail:
	vm_destroy(vm);
	return r;
}

/* The ACPI tables describe the devices of the device table this VM has. */
static int write_acpi(struct vm *vm, struct errbuf *eb)
{
	struct acpi_layout l = { .nr_vcpus = vm->nr_vcpus, .vmgenid_addr = ACPI_VMGENID_ADDR,
				 .ged_gsi = ACPI_GED_GSI };

	for (unsigned i = 0; i < vm->nr_devices; i++) {
		const struct dev_slot *s = vm->devices[i]->slot;

		if (vm->devices[i] == vm->serial) {
			l.serial_port = (uint16_t)s->base;
			l.serial_gsi = s->gsi;
		} else if (s->bus == DEV_MMIO) {
			/* every MMIO device is a virtio-mmio transport */
			if (l.nr_virtio == ACPI_MAX_VIRTIO)
				return errbuf_set(eb, -E2BIG, "ACPI: more than %u virtio devices",
						  ACPI_MAX_VIRTIO);
			l.virtio[l.nr_virtio].base = s->base;
			l.virtio[l.nr_virtio].size = s->len;
			l.virtio[l.nr_virtio++].gsi = s->gsi;
		}
	}
	return acpi_write(&vm->mem, &l, eb);
}

int vm_boot_load(struct vm *vm, struct errbuf *eb)
{
	const char *base = vm->cfg.cmdline ? vm->cfg.cmdline : "console=ttyS0 reboot=k panic=1";
	size_t len = strlen(base) + 64 * (vm->nr_devices + 1);
	struct boot_info bi;
	char *cmdline;
	int r;

	/* the guest learns its virtio devices as Linux's virtio_mmio driver does; the
	 * loader then checks the whole line against the kernel's limit */
	cmdline = malloc(len);
	if (!cmdline)
		return errbuf_set(eb, -ENOMEM, "out of memory");
	snprintf(cmdline, len, "%s", base);
	r = devices_cmdline(vm, cmdline, len);
	if (!r)
		r = loader_load_files(&vm->mem, vm->cfg.kernel, vm->cfg.initrd, cmdline, &bi, eb);
	else
		errbuf_set(eb, r, "kernel command line: no room for the virtio_mmio.device entries");
	if (r == -E2BIG && strlen(cmdline) > strlen(base)) {
		char msg[sizeof(eb->msg)];

		snprintf(msg, sizeof(msg), "%s", eb->msg);
		errbuf_set(eb, r, "%s (%zu bytes of it the virtio_mmio.device entries ember appended)",
			   msg, strlen(cmdline) - strlen(base));
	}
	free(cmdline);
	if (r)
		return r;
	/* Both tables: Linux prefers ACPI when it finds it, and the MP table stays for
	 * kernels built without ACPI (minimal microVM configs, as Firecracker's CI builds
	 * them). The test guests read neither: tests/guest/lib/smp.c starts the APs by
	 * APIC id 1..n-1, and the acpi guest reads ACPI only. */
	r = mptable_write(&vm->mem, vm->nr_vcpus, eb);
	if (!r)
		r = write_acpi(vm, eb);
	if (r)
		return r;
	r = x86_vcpu_set_entry(&vm->vcpus[0], bi.entry, eb);
	if (r)
		return r;
	timing_mark("loaded");
	return 0;
}

void vm_request_stop(struct vm *vm, enum vm_stop_reason reason, int code, const char *fmt, ...)
{
	uint64_t one = 1;
	va_list ap;

	pthread_mutex_lock(&vm->stop_lock);
	if (vm->stop_reason == VM_STOP_NONE) {
		vm->stop_reason = reason;
		vm->stop_code = code;
		va_start(ap, fmt);
		vsnprintf(vm->stop_msg, sizeof(vm->stop_msg), fmt, ap);
		va_end(ap);
		atomic_store(&vm->stopping, true);
		if (write(vm->event_fd, &one, sizeof(one)) < 0) {
			/* the counter cannot overflow here; nothing to do */
		}
	}
	pthread_mutex_unlock(&vm->stop_lock);
	/* a vCPU parked in a WAIT or PARK ucall must notice too */
	vm_wake(vm);
}

int vm_exit_status(const struct vm *vm)
{
	switch (vm->stop_reason) {
	case VM_STOP_ASSERT:
		return 3;
	case VM_STOP_ERROR:
		return 1;
	case VM_STOP_SIGNAL:
		return 128 + vm->stop_code;
	case VM_STOP_TIMEOUT:
		return 124;
	case VM_STOP_CRASH:
		return 4;
	default:
		return 0;
	}
}

/* ---- the main loop ------------------------------------------------------------ */

int vm_watch_add(struct vm *vm, struct vm_watch *w)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = w };

	if (epoll_ctl(vm->ep, EPOLL_CTL_ADD, w->fd, &ev) < 0)
		return -errno;
	return 0;
}

void vm_watch_del(struct vm *vm, struct vm_watch *w)
{
	epoll_ctl(vm->ep, EPOLL_CTL_DEL, w->fd, NULL);
}

void vm_pause(struct vm *vm)
{
	if (vm->paused)
		return;
	vcpus_send(vm, VCPU_MSG_PAUSE);
	/* the guest's watchdogs will not blame it for the time it now stands still */
	x86_kvmclock_stopped(vm);
	if (vm->serial)
		serial_flush(vm->serial);
	vm->paused = true;
}

void vm_resume(struct vm *vm)
{
	if (!vm->paused)
		return;
	vm->paused = false;
	vcpus_send(vm, VCPU_MSG_RUN);
}

static void on_event(struct vm *vm, struct vm_watch *w, uint32_t events)
{
	uint64_t counter;

	/* the stop itself is in vm->stopping; just drain the counter */
	if (read(w->fd, &counter, sizeof(counter)) < 0) {
		/* EAGAIN */
	}
	memguard_poll(vm); /* a SIGBUS on guest RAM wakes us through this eventfd */
}

static void on_signal(struct vm *vm, struct vm_watch *w, uint32_t events)
{
	struct signalfd_siginfo si;

	if (read(w->fd, &si, sizeof(si)) != sizeof(si))
		return;
	if ((int)si.ssi_signo == MEMGUARD_LEASE_SIGNAL)
		memguard_lease_broken(vm);
	else
		vm_request_stop(vm, VM_STOP_SIGNAL, (int)si.ssi_signo, "stopped by signal %u",
				si.ssi_signo);
}

static void console_push(struct vm *vm)
{
	struct console_input *in = &vm->console_in;
	unsigned taken;

	if (in->len && vm->serial) {
		taken = serial_input(vm->serial, in->buf, in->len);
		memmove(in->buf, in->buf + taken, in->len - taken);
		in->len -= taken;
	}
}

static void on_stdin(struct vm *vm, struct vm_watch *w, uint32_t events)
{
	struct console_input *in = &vm->console_in;

	if (in->len == 0 && in->open) {
		ssize_t n = read(w->fd, in->buf, sizeof(in->buf));

		if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) {
			in->open = false;
			vm_watch_del(vm, w);
			return;
		}
		if (n > 0)
			in->len = (unsigned)n;
	}
	console_push(vm);
}

static int vm_start_threads(struct vm *vm)
{
	struct errbuf eb = { "" };
	sigset_t set;
	int r;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, MEMGUARD_LEASE_SIGNAL); /* memguard.c: the memory file's lease */
	/* blocked before any vCPU thread exists, so every thread inherits it */
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	vm->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (vm->sig_fd < 0)
		return -errno;
	vm->sig_watch = (struct vm_watch){ .fd = vm->sig_fd, .cb = on_signal };
	vm->event_watch = (struct vm_watch){ .fd = vm->event_fd, .cb = on_event };
	r = vm_watch_add(vm, &vm->sig_watch);
	if (!r)
		r = vm_watch_add(vm, &vm->event_watch);
	if (r)
		return r;
	if (vm->cfg.console_input && vm->cfg.console == CONSOLE_STDIO) {
		vm->stdin_watch = (struct vm_watch){ .fd = STDIN_FILENO, .cb = on_stdin };
		/* regular files cannot be polled: such input is simply not offered */
		vm->console_in.open = vm_watch_add(vm, &vm->stdin_watch) == 0;
	}
	r = vcpu_signals_init();
	if (r)
		return r;
	r = devices_start(vm, &eb);
	if (r) {
		pr_err("%s", eb.msg);
		return r;
	}
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		r = vcpu_start_thread(&vm->vcpus[i]);
		if (r)
			return r;
	}
	vm->threads_started = true;
	return 0;
}

void vm_vcpu_write_fds(struct vm *vm, struct seccomp_fds *s)
{
	seccomp_fds_add(s, STDERR_FILENO);  /* report and timing lines */
	seccomp_fds_add(s, log_fd_get());
	seccomp_fds_add(s, vm->console_fd);  /* the UART and the guest ABI's console */
	seccomp_fds_add(s, vm->event_fd);    /* vm_request_stop */
	devices_vcpu_write_fds(vm, s);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int vm_loop_once(struct vm *vm, int timeout_ms)
{
	struct epoll_event evs[8];
	int n = epoll_wait(vm->ep, evs, ARRAY_SIZE(evs), timeout_ms);

	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		struct vm_watch *w = evs[i].data.ptr;

		w->cb(vm, w, evs[i].events);
	}
	return n;
}

/* --ready-fd: one line for whoever started us (ember pool), then the fd is closed. */
static void tell_ready(struct vm *vm)
{
	char line[64];
	int n;

	if (vm->ready_fd < 0)
		return;
	n = snprintf(line, sizeof(line), "ready pid=%d\n", (int)getpid());
	if (write(vm->ready_fd, line, (size_t)n) != n)
		pr_warn("--ready-fd: %s", strerror(errno));
	close(vm->ready_fd);
	vm->ready_fd = -1;
}

enum vm_stop_reason vm_run(struct vm *vm)
{
	uint64_t deadline = 0, counter;
	int r;

	if (!vm->threads_started) {
		r = vm_start_threads(vm);
		if (r) {
			vm_request_stop(vm, VM_STOP_ERROR, 0, "starting vCPU threads: %s", strerror(-r));
			return vm->stop_reason;
		}
	}

	/* a fresh run: forget the previous stop, unless the page server failed (it may do
	 * so while prefetching, before the first run): a wedged VM never runs again */
	pthread_mutex_lock(&vm->stop_lock);
	if (!atomic_load(&vm->wedged)) {
		vm->stop_reason = VM_STOP_NONE;
		vm->stop_msg[0] = 0;
		atomic_store(&vm->stopping, false);
		if (read(vm->event_fd, &counter, sizeof(counter)) < 0) {
			/* EAGAIN: nothing pending */
		}
	}
	pthread_mutex_unlock(&vm->stop_lock);
	if (vm->cfg.timeout_ms)
		deadline = mono_ms() + vm->cfg.timeout_ms;

	/* standby: everything is ready but the vCPUs wait for a resume (control socket) */
	vm->paused = vm->standby;
	if (!vm->standby)
		vcpus_send(vm, VCPU_MSG_RUN);
	if (vm->pager)
		pager_prefetch_begin(vm->pager);
	/* Every thread exists and has its own filter; the main thread's goes on before it
	 * runs the loop that serves the control socket, but after the vCPUs were told to
	 * run: loading a filter costs ~0.1-0.2 ms here (the kernel JITs it), which the
	 * guest's start should not wait for. A failure stops the VM before the loop. */
	if (vm->cfg.seccomp && !vm->seccomp_on) {
		r = seccomp_apply(SECCOMP_MAIN, NULL);
		if (r)
			vm_request_stop(vm, VM_STOP_ERROR, 0, "main thread: seccomp: %s", strerror(-r));
		vm->seccomp_on = r == 0;
	}
	tell_ready(vm);
	while (!atomic_load(&vm->stopping)) {
		int timeout = -1, n;

		if (vm->console_in.len)
			timeout = 5; /* UART FIFO was full: retry soon */
		if (deadline) {
			uint64_t now = mono_ms();

			if (now >= deadline) {
				vm_request_stop(vm, VM_STOP_TIMEOUT, 0, "timeout after %llu ms",
						(unsigned long long)vm->cfg.timeout_ms);
				break;
			}
			if (timeout < 0 || deadline - now < (uint64_t)timeout)
				timeout = (int)(deadline - now);
		}
		n = vm_loop_once(vm, timeout);
		if (n < 0) {
			vm_request_stop(vm, VM_STOP_ERROR, 0, "epoll_wait: %s", strerror(-n));
			break;
		}
		if (vm->console_in.len && !atomic_load(&vm->stopping))
			console_push(vm);
	}
	/* A vCPU blocked on a page the pager could not serve only moves once the pager
	 * lets go of guest RAM; the wedged flag keeps whatever it then does inside. */
	if (atomic_load(&vm->wedged) && vm->pager)
		pager_stop(vm->pager);
	vcpus_send(vm, VCPU_MSG_PAUSE);
	vm->paused = true;
	if (vm->serial)
		serial_flush(vm->serial);
	return vm->stop_reason;
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	/* vCPU threads may be blocked in a fault on uffd-backed memory: release them first */
	if (vm->pager)
		pager_stop(vm->pager);
	if (vm->threads_started) {
		vcpus_send(vm, VCPU_MSG_QUIT);
		for (unsigned i = 0; i < vm->nr_vcpus; i++)
			if (vm->vcpus[i].thread_started)
				pthread_join(vm->vcpus[i].thread, NULL);
	}
	api_stop(vm);
	devices_destroy(vm);
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		vcpu_destroy(&vm->vcpus[i]);
	free(vm->vcpus);
	free(vm->supported_cpuid);
	pager_destroy(vm->pager);
	mem_free(&vm->mem);
	snap_lz4_index_free(vm->lz4);
	if (vm->golden)
		snap_state_free(vm->golden);
	free(vm->golden);
	if (vm->golden_fd >= 0)
		close(vm->golden_fd);
	memguard_sigbus_fini(vm);
	memguard_release(vm);
	if (vm->ready_fd >= 0)
		close(vm->ready_fd);
	free(vm->snapshot_dir);
	kvm_close(&vm->kvm);
	if (vm->console_fd_owned)
		close(vm->console_fd);
	if (vm->event_fd >= 0)
		close(vm->event_fd);
	if (vm->sig_fd >= 0)
		close(vm->sig_fd);
	if (vm->ep >= 0)
		close(vm->ep);
	while (vm->cmd_head != vm->cmd_tail)
		free(vm->cmds[vm->cmd_head++ % VM_MAX_GUEST_CMDS]);
	pthread_mutex_destroy(&vm->cmd_lock);
	pthread_mutex_destroy(&vm->stop_lock);
	free(vm);
}
