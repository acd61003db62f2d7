/* Register dump of every vCPU for --dump-regs, taken while the vCPUs are parked. One
 * line per vCPU of key=value pairs, so that tests and scripts can parse it. */
#include <errno.h>
#include <stdio.h>
#include <sys/ioctl.h>

#include "x86.h"

static int dump_one(struct vcpu *v, void *arg)
{
	FILE *f = arg;
	struct kvm_regs r;
	struct kvm_sregs s;
	struct kvm_mp_state mp = { 0 };

	if (ioctl(v->fd, KVM_GET_REGS, &r) < 0 || ioctl(v->fd, KVM_GET_SREGS, &s) < 0)
		return -errno;
	ioctl(v->fd, KVM_GET_MP_STATE, &mp);
	fprintf(f,
		"ember-regs vcpu=%u rip=0x%llx rsp=0x%llx rflags=0x%llx rax=0x%llx rsi=0x%llx "
		"cs=0x%x cr0=0x%llx cr3=0x%llx cr4=0x%llx efer=0x%llx mp_state=%u entries=%llu\n",
		v->id, r.rip, r.rsp, r.rflags, r.rax, r.rsi, s.cs.selector, s.cr0, s.cr3, s.cr4,
		s.efer, mp.mp_state, (unsigned long long)v->entries);
	return 0;
}

void x86_dump_vcpus(struct vm *vm, FILE *f)
{
	/* one vCPU at a time keeps the lines in id order */
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		dump_one(&vm->vcpus[i], f);
	fflush(f);
}
