/*
 * Keeping a snapshot's raw memory file from changing under the VMs restored from it.
 *
 * A raw memory file is read lazily for the life of the VM: the mmap backend maps it
 * MAP_PRIVATE (every page not yet written is the file's page cache page), the uffd
 * backend reads it when the guest first touches a page, and every in-place reset reads
 * it again. Truncating it would SIGBUS the VM; rewriting it would silently change
 * memory the guest has not read yet. So ember takes a shared read lease on it
 * (F_SETLEASE F_RDLCK): anyone who then opens it for writing or truncates it blocks
 * (up to /proc/sys/fs/lease-break-time) while ember is told (MEMGUARD_LEASE_SIGNAL,
 * read through the main loop's signalfd) and stops the VM cleanly before a byte can
 * change. A file marked immutable (chattr +i) needs no lease: nobody can change it.
 * A file ember can protect neither way is refused. lz4 payloads need none of this:
 * every chunk is CRC-checked as it is read, and a short read stops the VM.
 *
 * The backstop, for anything that still goes wrong (a lease broken by the kernel after
 * lease-break-time because ember hung): a SIGBUS on a VMM access to guest RAM maps a
 * zero page over the faulting page so the access completes, marks the VM wedged (no
 * guest I/O goes out any more) and has the main loop stop it with a message.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vmm.h"

static bool file_immutable(int fd)
{
	int flags = 0;

	return ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 && (flags & FS_IMMUTABLE_FL);
}

static bool jailer_guards(void)
{
	const char *g = getenv("EMBER_MEMGUARD");

	return g && !strcmp(g, "jailer");
}

int memguard_block_lease_signal(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, MEMGUARD_LEASE_SIGNAL);
	return -pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int memguard_protect(struct vm *vm, int mem_fd, const char *dir, const char *name,
		     struct errbuf *eb)
{
	int fd, e;

	snprintf(vm->memfile_name, sizeof(vm->memfile_name), "%s/%s", dir, name);
	if (file_immutable(mem_fd))
		return 0;
	fd = fcntl(mem_fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return errbuf_set(eb, -errno, "memory file %s: %s", vm->memfile_name, strerror(errno));
	/* the signal carries the fd (si_fd), and is queued rather than merged */
	if (fcntl(fd, F_SETSIG, MEMGUARD_LEASE_SIGNAL) == 0 && fcntl(fd, F_SETLEASE, F_RDLCK) == 0) {
		vm->lease_fd = fd;
		return 0;
	}
	e = errno;
	close(fd);
	/* ember jail took the read lease itself, as root, and stops this ember on a break */
	if ((e == EACCES || e == EPERM) && jailer_guards()) {
		pr_info("memory file %s: read lease held by ember jail (EMBER_MEMGUARD=jailer)",
			vm->memfile_name);
		return 0;
	}
	if (e == EAGAIN)
		return errbuf_set(eb, -EBUSY, "memory file %s is open for writing by another process: "
				  "refusing to restore from a memory file that may change under the VM",
				  vm->memfile_name);
	return errbuf_set(eb, -EPERM, "memory file %s cannot be protected against changes while "
			  "the VM runs (read lease: %s): ember must own the file or have CAP_LEASE, or "
			  "the file must be immutable (chattr +i); an lz4 snapshot ('ember-snap "
			  "compress') needs neither, its chunks are checked as they are read",
			  vm->memfile_name, strerror(e));
}

void memguard_release(struct vm *vm)
{
	if (vm->lease_fd >= 0)
		close(vm->lease_fd); /* drops the lease: a blocked writer goes on */
	vm->lease_fd = -1;
}

void memguard_lease_broken(struct vm *vm)
{
	atomic_store(&vm->wedged, true);
	vm_request_stop(vm, VM_STOP_ERROR, 0, "memory file %s is being changed by another process "
			"(truncated or opened for writing): the VM stops before its memory can change",
			vm->memfile_name);
}

/* ---- the SIGBUS backstop ---------------------------------------------------------- */

static struct vm *_Atomic guarded_vm;
static _Atomic uint64_t sigbus_offset = UINT64_MAX;

static void on_sigbus(int sig, siginfo_t *si, void *uctx)
{
	struct vm *vm = atomic_load(&guarded_vm);
	uintptr_t a = (uintptr_t)si->si_addr, base;
	uint64_t one = 1;

	(void)uctx;
	base = vm ? (uintptr_t)vm->mem.base : 0;
	if (!vm || !base || a < base || a - base >= vm->mem.size) {
		/* not guest RAM: a real bug, crash as before */
		signal(sig, SIG_DFL);
		return;
	}
	a &= ~(uintptr_t)(PAGE_SIZE - 1);
	/* only async-signal-safe calls: mmap, an atomic store, write */
	if (mmap((void *)a, PAGE_SIZE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
		signal(sig, SIG_DFL);
		return;
	}
	atomic_store(&vm->wedged, true);
	atomic_store(&sigbus_offset, (uint64_t)(a - base));
	if (write(vm->event_fd, &one, sizeof(one)) < 0) {
		/* the main loop's eventfd cannot overflow here */
	}
}

int memguard_sigbus_init(struct vm *vm)
{
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };

	sigemptyset(&sa.sa_mask);
	atomic_store(&guarded_vm, vm);
	return sigaction(SIGBUS, &sa, NULL) < 0 ? -errno : 0;
}

void memguard_sigbus_fini(struct vm *vm)
{
	struct vm *expected = vm;

	atomic_compare_exchange_strong(&guarded_vm, &expected, NULL);
}

void memguard_poll(struct vm *vm)
{
	uint64_t off = atomic_exchange(&sigbus_offset, UINT64_MAX);

	if (off == UINT64_MAX)
		return;
	vm_request_stop(vm, VM_STOP_ERROR, 0, "guest memory at offset 0x%llx could not be read "
			"(SIGBUS: the memory file %s was truncated or removed under the VM): the VM "
			"stops", (unsigned long long)off, vm->memfile_name[0] ? vm->memfile_name :
			"(anonymous)");
}
