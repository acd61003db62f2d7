/*
 * A recording of the ioctls ember makes, for tests of ordering and arguments. Linked only
 * into test binaries built with -Wl,--wrap=ioctl (the Makefile's IOCTL_REC_TESTS): every
 * ioctl call in ember's objects then goes to __wrap_ioctl, which records it and passes it
 * on to the real KVM (__real_ioctl). Nothing is faked but the failure iorec_fail asks
 * for; production code calls ioctl directly and pays nothing.
 */
#ifndef EMBER_IOCTL_REC_H
#define EMBER_IOCTL_REC_H

#include <stdbool.h>
#include <stdint.h>

#define IOREC_DATA 64 /* bytes of a pointer argument kept per call */

struct iorec_call {
	unsigned seq;              /* order of the calls, from 0 at iorec_start */
	int fd;
	unsigned long req;
	uint64_t arg;              /* the argument itself (a value, or the pointer) */
	/* For requests that pass a struct to KVM (_IOC_WRITE): its first bytes, copied
	 * before the call. KVM_GET_DEVICE_ATTR / KVM_SET_DEVICE_ATTR: `value` is the u64
	 * at kvm_device_attr.addr (after a GET, before a SET). */
	uint8_t data[IOREC_DATA];
	unsigned data_len;
	uint64_t value;
	int ret;
	int err;                   /* errno when ret < 0 */
};

/* Forgets what was recorded and records from now on (any thread). */
void iorec_start(void);
/* Stops recording; what was recorded stays readable. */
void iorec_stop(void);
unsigned iorec_count(void);
/* The i-th recorded call (i < iorec_count()); valid until the next iorec_start. */
const struct iorec_call *iorec_get(unsigned i);
/* Called on the calling thread before each recorded ioctl is passed on (NULL: none);
 * tests use it to let time pass at a chosen point. */
void iorec_set_hook(void (*before)(int fd, unsigned long req, void *arg, void *opaque),
		    void *opaque);

/* While recording, calls of req (0: none) fail with errno err instead of reaching KVM:
 * what a KVM without that interface would answer (ENXIO for a device attribute). */
void iorec_fail(unsigned long req, int err);

/* Index of the first / last recorded call of req on fd (fd < 0: any fd) at or after
 * `from`, or -1. */
int iorec_first(unsigned long req, int fd, unsigned from);
int iorec_last(unsigned long req, int fd);
unsigned iorec_count_of(unsigned long req, int fd);
/* A name for the KVM requests ember uses ("KVM_SET_LAPIC"), else "0x...". */
const char *iorec_name(unsigned long req, char *buf, unsigned len);

#endif
