/* userfaultfd: opening it (syscall or /dev/userfaultfd), registering guest RAM, and
 * installing pages with the kernel's partial-progress rules made explicit. */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pager_int.h"

#define UFFD_HINT "(need root or vm.unprivileged_userfaultfd=1)"

/*
 * No UFFD_USER_MODE_ONLY: faults taken inside the kernel (KVM reading guest memory on
 * behalf of a vCPU) must reach us too, and that is what needs privilege.
 */
static int uffd_new(int *err_sys, int *err_dev)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int dev;

	if (fd >= 0)
		return fd;
	*err_sys = errno;
#ifdef USERFAULTFD_IOC_NEW
	/* Access to /dev/userfaultfd grants what the sysctl would otherwise refuse. */
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		*err_dev = errno;
		return -1;
	}
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	*err_dev = fd < 0 ? errno : 0;
	close(dev);
	return fd;
#else
	(void)dev;
	*err_dev = ENOENT;
	return -1;
#endif
}

int pg_uffd_open(struct errbuf *eb)
{
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	int err_sys = 0, err_dev = 0;
	int fd = uffd_new(&err_sys, &err_dev);

	if (fd < 0)
		return errbuf_set(eb, -err_sys, "userfaultfd: %s; /dev/userfaultfd: %s " UFFD_HINT,
				  strerror(err_sys), strerror(err_dev));
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int r = -errno;

		close(fd);
		return errbuf_set(eb, r, "userfaultfd: UFFDIO_API: %s", strerror(-r));
	}
	return fd;
}

int pg_uffd_register(int uffd, void *base, uint64_t len, struct errbuf *eb)
{
	const uint64_t need = (1ull << _UFFDIO_COPY) | (1ull << _UFFDIO_ZEROPAGE) |
			      (1ull << _UFFDIO_WAKE);
	struct uffdio_register reg = {
		.range = { .start = (uint64_t)(uintptr_t)base, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};

	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		return errbuf_set(eb, -errno, "userfaultfd: cannot register %llu MiB of guest RAM: %s",
				  (unsigned long long)(len / MiB), strerror(errno));
	if ((reg.ioctls & need) != need) {
		pg_uffd_unregister(uffd, base, len);
		return errbuf_set(eb, -ENOTSUP, "userfaultfd: COPY/ZEROPAGE/WAKE not offered for "
				  "anonymous memory (ioctls 0x%llx)", (unsigned long long)reg.ioctls);
	}
	return 0;
}

int pg_uffd_unregister(int uffd, void *base, uint64_t len)
{
	struct uffdio_range r = { .start = (uint64_t)(uintptr_t)base, .len = len };

	return ioctl(uffd, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

/*
 * The kernel installs page by page and stops at the first page that exists (EEXIST)
 * or when the address space is changing (EAGAIN): `progress` is then the bytes done
 * (> 0) or -errno. Skip existing pages one at a time and retry the rest.
 */
static int uffd_fill(int uffd, bool zero, uint64_t dst, const uint8_t *src, uint64_t len,
		     uint64_t *existing)
{
	unsigned again = 0;

	while (len) {
		int64_t progress;
		int r, e;

		if (zero) {
			struct uffdio_zeropage z = { .range = { .start = dst, .len = len } };

			r = ioctl(uffd, UFFDIO_ZEROPAGE, &z);
			progress = z.zeropage;
		} else {
			struct uffdio_copy c = { .dst = dst, .src = (uint64_t)(uintptr_t)src,
						 .len = len };

			r = ioctl(uffd, UFFDIO_COPY, &c);
			progress = c.copy;
		}
		if (r == 0)
			return 0;
		e = errno;
		if (progress > 0) {
			uint64_t done = (uint64_t)progress;

			dst += done;
			src = src ? src + done : NULL;
			len -= done;
			continue;
		}
		if (progress == -EEXIST || e == EEXIST) {
			if (existing)
				(*existing)++;
			dst += PAGE_SIZE;
			src = src ? src + PAGE_SIZE : NULL;
			len -= PAGE_SIZE;
			continue;
		}
		if (e == EAGAIN && ++again < 10000) {
			sched_yield();
			continue;
		}
		return -e;
	}
	return 0;
}

int pg_uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len, uint64_t *existing)
{
	return uffd_fill(uffd, false, dst, src, len, existing);
}

int pg_uffd_zero(int uffd, uint64_t dst, uint64_t len, uint64_t *existing)
{
	return uffd_fill(uffd, true, dst, NULL, len, existing);
}

int pg_uffd_wake(int uffd, uint64_t dst, uint64_t len)
{
	struct uffdio_range r = { .start = dst, .len = len };

	return ioctl(uffd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}
