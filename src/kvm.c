/* /dev/kvm: API version, the capabilities ember relies on, the VM fd. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "vmm.h"
#include "arch/x86_64/x86.h"

static const struct {
	int cap;
	const char *name;
} required_caps[] = {
	{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
	{ KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR" },
	{ KVM_CAP_SET_IDENTITY_MAP_ADDR, "KVM_CAP_SET_IDENTITY_MAP_ADDR" },
	{ KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP" },
	{ KVM_CAP_PIT2, "KVM_CAP_PIT2" },
	{ KVM_CAP_PIT_STATE2, "KVM_CAP_PIT_STATE2" },
	{ KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID" },
	{ KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE" },
	{ KVM_CAP_XSAVE, "KVM_CAP_XSAVE" },
	{ KVM_CAP_XCRS, "KVM_CAP_XCRS" },
	{ KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS" },
	{ KVM_CAP_DEBUGREGS, "KVM_CAP_DEBUGREGS" },
	{ KVM_CAP_ADJUST_CLOCK, "KVM_CAP_ADJUST_CLOCK" },
	{ KVM_CAP_GET_TSC_KHZ, "KVM_CAP_GET_TSC_KHZ" },
	{ KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
	{ KVM_CAP_IRQ_INJECT_STATUS, "KVM_CAP_IRQ_INJECT_STATUS" },
};

int kvm_open(struct kvm *k, struct errbuf *eb)
{
	int r, ver;

	memset(k, 0, sizeof(*k));
	k->vm_fd = -1;
	k->dev_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (k->dev_fd < 0)
		return errbuf_set(eb, -errno, "cannot open /dev/kvm: %s", strerror(errno));
	ver = ioctl(k->dev_fd, KVM_GET_API_VERSION, 0);
	if (ver != KVM_API_VERSION) {
		r = errbuf_set(eb, -ENOTSUP, "/dev/kvm: API version %d, ember needs %d", ver,
			       KVM_API_VERSION);
		goto fail;
	}
	for (size_t i = 0; i < ARRAY_SIZE(required_caps); i++) {
		if (ioctl(k->dev_fd, KVM_CHECK_EXTENSION, required_caps[i].cap) <= 0) {
			r = errbuf_set(eb, -ENOTSUP, "/dev/kvm lacks required capability %s",
				       required_caps[i].name);
			goto fail;
		}
	}
	k->run_mmap_size = ioctl(k->dev_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (k->run_mmap_size < (int)sizeof(struct kvm_run)) {
		r = errbuf_set(eb, -ENOTSUP, "/dev/kvm: bad KVM_GET_VCPU_MMAP_SIZE %d",
			       k->run_mmap_size);
		goto fail;
	}
	k->max_vcpus = ioctl(k->dev_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (k->max_vcpus <= 0)
		k->max_vcpus = ioctl(k->dev_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	if (k->max_vcpus <= 0)
		k->max_vcpus = 4; /* the API documents 4 when neither cap answers */
	return 0;
fail:
	close(k->dev_fd);
	k->dev_fd = -1;
	return r;
}

int kvm_create_vm(struct kvm *k, struct errbuf *eb)
{
	int sz;

	k->vm_fd = ioctl(k->dev_fd, KVM_CREATE_VM, 0);
	if (k->vm_fd < 0)
		return errbuf_set(eb, -errno, "KVM_CREATE_VM: %s", strerror(errno));
	/* Asked on the VM fd: the size can depend on per-process dynamic features. */
	sz = ioctl(k->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	k->xsave_size = sz >= 4096 ? sz : 4096;
	return 0;
}

int kvm_create_irqchip(struct kvm *k, struct errbuf *eb)
{
	uint64_t idmap = KVM_IDENTITY_MAP_ADDR;
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };

	if (ioctl(k->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_ADDR) < 0)
		return errbuf_set(eb, -errno, "KVM_SET_TSS_ADDR: %s", strerror(errno));
	if (ioctl(k->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
		return errbuf_set(eb, -errno, "KVM_SET_IDENTITY_MAP_ADDR: %s", strerror(errno));
	if (ioctl(k->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return errbuf_set(eb, -errno, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
	if (ioctl(k->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return errbuf_set(eb, -errno, "KVM_CREATE_PIT2: %s", strerror(errno));
	return 0;
}

void kvm_close(struct kvm *k)
{
	if (k->vm_fd >= 0)
		close(k->vm_fd);
	if (k->dev_fd >= 0)
		close(k->dev_fd);
	k->vm_fd = k->dev_fd = -1;
}
