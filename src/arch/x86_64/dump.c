/* Register dump of every vCPU for --dump-regs, taken while the vCPUs are parked. One
 * line per vCPU of key=value pairs, so that tests and scripts can parse it. */
#include <errno.h>
#include <sys/ioctl.h>

#include "x86.h"

static int dump_one(struct vcpu *v)
{
	struct kvm_regs r;
	struct kvm_sregs s;
	struct kvm_mp_state mp = { 0 };
	struct mline l;

	if (ioctl(v->fd, KVM_GET_REGS, &r) < 0 || ioctl(v->fd, KVM_GET_SREGS, &s) < 0)
		return -errno;
	ioctl(v->fd, KVM_GET_MP_STATE, &mp);
	mline_begin(&l, "ember-regs");
	mline_u64(&l, "vcpu", v->id);
	mline_hex(&l, "rip", r.rip);
	mline_hex(&l, "rsp", r.rsp);
	mline_hex(&l, "rflags", r.rflags);
	mline_hex(&l, "rax", r.rax);
	mline_hex(&l, "rsi", r.rsi);
	mline_hex(&l, "cs", s.cs.selector);
	mline_hex(&l, "cr0", s.cr0);
	mline_hex(&l, "cr3", s.cr3);
	mline_hex(&l, "cr4", s.cr4);
	mline_hex(&l, "efer", s.efer);
	mline_u64(&l, "mp_state", mp.mp_state);
	mline_u64(&l, "entries", v->entries);
	mline_end(&l);
	return 0;
}

/* on stderr, as every ember- line (--timings-json: one JSON object per vCPU) */
void x86_dump_vcpus(struct vm *vm)
{
	/* one vCPU at a time keeps the lines in id order */
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		dump_one(&vm->vcpus[i]);
}
