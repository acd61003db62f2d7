/*
 * Restoring a VM from a snapshot directory. Everything that can be checked without
 * KVM is checked first (format, checksum, sizes, CPU vendor and features, device
 * sections), so a bad snapshot costs no VM. Then the VM is built in the cheapest order
 * (memslots before the irqchip, PLATFORM.md), memory is mapped MAP_PRIVATE (lazy; the
 * page cache is shared by every clone; writes stay private), and state is set:
 * VM-wide state (PIT, clock, irqchip) before the vCPUs whose LAPICs refer to it, then
 * devices, whose interrupt lines are re-driven from their restored state.
 */
#include <cpuid.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "vmm.h"
#include "arch/x86_64/x86.h"
#include "dev/dev.h"
#include "snapfmt.h"

/* A fresh, non-zero generation per restore: two clones never share one. */
static int new_generation(uint64_t *gen, struct errbuf *eb)
{
	do {
		if (getrandom(gen, sizeof(*gen), 0) != sizeof(*gen))
			return errbuf_set(eb, -errno, "getrandom: %s", strerror(errno));
	} while (*gen == 0);
	return 0;
}

/*
 * The features a guest can use here: what KVM reports as supported, plus what the CPU
 * executes natively. On hardware KVM the first is the reference; on a software KVM
 * such as this platform's kvm_pvm, KVM_GET_SUPPORTED_CPUID under-reports (leaf 1 ECX
 * lacks even SSE3) while the vCPU runs guest code natively and KVM_GET_CPUID2 returns
 * the host's features, so a snapshot taken there lists them.
 */
static void add_native_features(struct kvm_cpuid2 *c)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		unsigned a, b, cx, d;

		if (e->function != 1 && e->function != 7 && e->function != 0xd &&
		    e->function != 0x80000001)
			continue;
		__cpuid_count(e->function, e->index, a, b, cx, d);
		if (e->function == 7 && e->index == 1)
			e->eax |= a;
		if (e->function == 0xd && e->index == 1)
			e->eax |= a;
		if (e->function == 1 || e->function == 7 || e->function == 0x80000001) {
			e->ebx |= e->function == 1 ? 0 : b; /* leaf 1 EBX is ids, not features */
			e->ecx |= cx;
			e->edx |= d;
		}
	}
}

/* Checks that need /dev/kvm but no VM: CPU compatibility and sizes KVM must accept. */
static int check_against_host(struct vm *vm, const struct snap_state *st, struct errbuf *eb)
{
	struct kvm_cpuid2 *usable;
	size_t sz;
	int r;

	if (st->nr_vcpus > (unsigned)vm->kvm.max_vcpus)
		return errbuf_set(eb, -EINVAL, "snapshot has %u vCPUs, this KVM supports %d",
				  st->nr_vcpus, vm->kvm.max_vcpus);
	r = cpuid_get_supported(vm->kvm.dev_fd, &vm->supported_cpuid, eb);
	if (r)
		return r;
	sz = sizeof(*usable) + vm->supported_cpuid->nent * sizeof(usable->entries[0]);
	usable = malloc(sz);
	if (!usable)
		return errbuf_set(eb, -ENOMEM, "out of memory");
	memcpy(usable, vm->supported_cpuid, sz);
	add_native_features(usable);
	r = x86_check_snapshot_cpu(st, usable, eb);
	free(usable);
	return r;
}

static int map_memory(struct vm *vm, const struct snap_dir *d, struct errbuf *eb)
{
	struct mem_region regions[MEM_MAX_REGIONS];
	const struct snap_state *st = &d->state;
	int r;

	if (st->vm.nr_regions > MEM_MAX_REGIONS)
		return errbuf_set(eb, -EINVAL, "snapshot has %u memory regions, ember supports %u",
				  st->vm.nr_regions, MEM_MAX_REGIONS);
	for (unsigned i = 0; i < st->vm.nr_regions; i++)
		regions[i] = (struct mem_region){ .gpa = st->vm.regions[i].gpa,
						  .size = st->vm.regions[i].size,
						  .offset = st->vm.regions[i].file_offset };
	r = mem_set_regions(&vm->mem, regions, st->vm.nr_regions, st->memory.size, eb);
	if (r)
		return r;
	r = mem_map_file(&vm->mem, d->mem_fd, eb);
	if (r)
		return r;
	return mem_register(&vm->mem, vm->kvm.vm_fd, vm->cfg.dirty_tracking, eb);
}

static int restore_state(struct vm *vm, const struct snap_state *st, struct errbuf *eb)
{
	int r = x86_vm_restore(vm, &st->vm, eb);

	for (unsigned i = 0; !r && i < vm->nr_vcpus; i++)
		r = x86_vcpu_restore(&vm->vcpus[i], &st->vcpus[i], eb);
	if (!r)
		r = devices_restore(vm, st, eb);
	return r;
}

int vm_restore(struct vm **out, const struct vm_config *cfg_in, const char *dir,
	       struct errbuf *eb)
{
	struct vm_config cfg = *cfg_in;
	struct snap_dir d;
	struct snap_err se;
	struct vm *vm = NULL;
	int r;

	*out = NULL;
	r = snap_dir_open(dir, &d, &se);
	if (r)
		return errbuf_set(eb, r, "snapshot %s: %s", dir, se.msg);
	if (d.state.memory.kind != SNAP_MEM_FULL) {
		r = errbuf_set(eb, -EINVAL, "snapshot %s is a diff snapshot (parent %s): merge it "
			       "onto its base with 'ember-snap merge' first", dir, d.state.header.parent);
		goto out;
	}
	if (d.state.memory.encoding != SNAP_ENC_RAW) {
		r = errbuf_set(eb, -EINVAL, "snapshot %s: memory encoding %u needs another memory "
			       "backend", dir, d.state.memory.encoding);
		goto out;
	}
	r = devices_check_state(&d.state, eb);
	if (r)
		goto out;
	timing_mark("state-loaded");

	cfg.nr_vcpus = d.state.nr_vcpus;
	cfg.mem_bytes = d.state.memory.size;
	vm = vm_alloc(&cfg);
	if (!vm) {
		r = errbuf_set(eb, -ENOMEM, "out of memory");
		goto out;
	}
	r = kvm_open(&vm->kvm, eb);
	if (r)
		goto out;
	r = check_against_host(vm, &d.state, eb);
	if (r)
		goto out;
	r = new_generation(&vm->generation, eb);
	if (r)
		goto out;

	r = kvm_create_vm(&vm->kvm, eb);
	if (r)
		goto out;
	timing_mark("vm-created");
	r = map_memory(vm, &d, eb);
	if (r)
		goto out;
	timing_mark("memory-mapped");
	r = kvm_create_irqchip(&vm->kvm, eb);
	if (r)
		goto out;
	r = vm_create_vcpus(vm, false, eb);
	if (r)
		goto out;
	r = vm_attach_devices(vm, eb);
	if (r)
		goto out;
	r = restore_state(vm, &d.state, eb);
	if (r)
		goto out;
	snprintf(vm->last_snapshot_id, sizeof(vm->last_snapshot_id), "%s", d.state.header.id);
	vm->entry_phase = "resumed";
	atomic_store(&vm->first_report_pending, true);
	timing_mark("state-set");
	*out = vm;
	vm = NULL;
out:
	if (r && vm)
		vm_destroy(vm);
	snap_dir_close(&d);
	return r;
}
