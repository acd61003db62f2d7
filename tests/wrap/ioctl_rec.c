/*
 * The ioctl recorder (ioctl_rec.h): __wrap_ioctl records, then calls the real ioctl
 * (or, for the one request iorec_fail names, fails it as a KVM without it would).
 */
#include <errno.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "ioctl_rec.h"

#define IOREC_MAX 65536

int __real_ioctl(int fd, unsigned long req, ...);
int __wrap_ioctl(int fd, unsigned long req, ...);

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct iorec_call *calls;
static unsigned nr_calls;
static bool recording;
static void (*hook)(int fd, unsigned long req, void *arg, void *opaque);
static void *hook_opaque;
static unsigned long fail_req;
static int fail_errno;

void iorec_start(void)
{
	pthread_mutex_lock(&lock);
	if (!calls)
		calls = calloc(IOREC_MAX, sizeof(*calls));
	nr_calls = 0;
	recording = calls != NULL;
	pthread_mutex_unlock(&lock);
}

void iorec_stop(void)
{
	pthread_mutex_lock(&lock);
	recording = false;
	pthread_mutex_unlock(&lock);
}

unsigned iorec_count(void)
{
	unsigned n;

	pthread_mutex_lock(&lock);
	n = nr_calls;
	pthread_mutex_unlock(&lock);
	return n;
}

const struct iorec_call *iorec_get(unsigned i)
{
	return i < iorec_count() ? &calls[i] : NULL;
}

void iorec_set_hook(void (*before)(int fd, unsigned long req, void *arg, void *opaque),
		    void *opaque)
{
	pthread_mutex_lock(&lock);
	hook = before;
	hook_opaque = opaque;
	pthread_mutex_unlock(&lock);
}

void iorec_fail(unsigned long req, int err)
{
	pthread_mutex_lock(&lock);
	fail_req = req;
	fail_errno = err;
	pthread_mutex_unlock(&lock);
}

int iorec_first(unsigned long req, int fd, unsigned from)
{
	unsigned n = iorec_count();

	for (unsigned i = from; i < n; i++)
		if (calls[i].req == req && (fd < 0 || calls[i].fd == fd))
			return (int)i;
	return -1;
}

int iorec_last(unsigned long req, int fd)
{
	for (unsigned i = iorec_count(); i-- > 0;)
		if (calls[i].req == req && (fd < 0 || calls[i].fd == fd))
			return (int)i;
	return -1;
}

unsigned iorec_count_of(unsigned long req, int fd)
{
	unsigned n = iorec_count(), k = 0;

	for (unsigned i = 0; i < n; i++)
		k += calls[i].req == req && (fd < 0 || calls[i].fd == fd);
	return k;
}

const char *iorec_name(unsigned long req, char *buf, unsigned len)
{
#define NAME(r) { r, #r }
	static const struct {
		unsigned long req;
		const char *name;
	} names[] = {
		NAME(KVM_SET_CPUID2), NAME(KVM_SET_MP_STATE), NAME(KVM_SET_REGS),
		NAME(KVM_SET_SREGS), NAME(KVM_SET_XSAVE), NAME(KVM_SET_XCRS),
		NAME(KVM_SET_DEBUGREGS), NAME(KVM_SET_LAPIC), NAME(KVM_SET_MSRS),
		NAME(KVM_SET_VCPU_EVENTS), NAME(KVM_SET_TSC_KHZ), NAME(KVM_GET_TSC_KHZ),
		NAME(KVM_SET_PIT2), NAME(KVM_SET_CLOCK), NAME(KVM_SET_IRQCHIP),
		NAME(KVM_KVMCLOCK_CTRL), NAME(KVM_HAS_DEVICE_ATTR), NAME(KVM_GET_DEVICE_ATTR),
		NAME(KVM_SET_DEVICE_ATTR), NAME(KVM_IRQ_LINE), NAME(KVM_RUN),
		NAME(KVM_CHECK_EXTENSION), NAME(KVM_GET_CLOCK), NAME(KVM_GET_MSRS),
	};
#undef NAME

	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].req == req)
			return names[i].name;
	snprintf(buf, len, "0x%lx", req);
	return buf;
}

/* The u64 a device-attribute call points at, when it points at one. */
static uint64_t attr_value(const void *arg)
{
	const struct kvm_device_attr *a = arg;
	uint64_t v = 0;

	if (a && a->addr)
		memcpy(&v, (const void *)(uintptr_t)a->addr, sizeof(v));
	return v;
}

int __wrap_ioctl(int fd, unsigned long req, ...)
{
	void (*before)(int, unsigned long, void *, void *);
	struct iorec_call *c = NULL;
	void *opaque;
	va_list ap;
	void *arg;
	int r, err, fail;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);

	pthread_mutex_lock(&lock);
	if (recording && nr_calls < IOREC_MAX) {
		c = &calls[nr_calls];
		memset(c, 0, sizeof(*c));
		c->seq = nr_calls++;
		c->fd = fd;
		c->req = req;
		c->arg = (uint64_t)(uintptr_t)arg;
		if ((_IOC_DIR(req) & _IOC_WRITE) && _IOC_SIZE(req) && arg) {
			c->data_len = _IOC_SIZE(req) < IOREC_DATA ? _IOC_SIZE(req) : IOREC_DATA;
			memcpy(c->data, arg, c->data_len);
		}
		if (req == KVM_SET_DEVICE_ATTR)
			c->value = attr_value(arg);
	}
	before = recording ? hook : NULL;
	opaque = hook_opaque;
	fail = recording && fail_req && req == fail_req ? fail_errno : 0;
	pthread_mutex_unlock(&lock);

	if (before)
		before(fd, req, arg, opaque);
	if (fail) {
		r = -1;
		err = fail;
	} else {
		r = __real_ioctl(fd, req, arg);
		err = errno;
	}
	if (c) {
		pthread_mutex_lock(&lock);
		c->ret = r;
		c->err = r < 0 ? err : 0;
		if (req == KVM_GET_DEVICE_ATTR && r == 0)
			c->value = attr_value(arg);
		pthread_mutex_unlock(&lock);
	}
	errno = err;
	return r;
}
