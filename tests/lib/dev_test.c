/* Devices under unit test: the real table and creation path on a VM shell. */
#include <criterion/criterion.h>
#include <endian.h>
#include <string.h>

#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include "testlib.h"
#include "dev/dev.h"

struct vm *devt_vm(int console_fd)
{
	struct vm_config cfg = { .nr_vcpus = 1, .console = CONSOLE_NONE };
	struct vm *vm = vm_alloc(&cfg);

	cr_assert_not_null(vm, "vm_alloc");
	vm->console_fd = console_fd;
	return vm;
}

void devt_vm_free(struct vm *vm)
{
	vm->console_fd = -1; /* the test's, not the VM's */
	vm_destroy(vm);
}

struct device *devt_create(struct vm *vm, const char *name)
{
	const struct dev_slot *slot = dev_slot_find(name);
	struct errbuf eb = { "" };
	struct device *d = NULL;

	cr_assert_not_null(slot, "no device %s in the table", name);
	cr_assert_eq(dev_create(vm, slot, &d, &eb), 0, "%s: %s", name, eb.msg);
	return d;
}

bool devt_take_reset(struct vm *vm)
{
	bool reset = vm->stop_reason == VM_STOP_RESET;

	vm->stop_reason = VM_STOP_NONE;
	atomic_store(&vm->stopping, false);
	return reset;
}

void devt_vm_ram(struct vm *vm, uint64_t ram)
{
	struct errbuf eb = { "" };

	cr_assert_eq(mem_layout(&vm->mem, ram, &eb), 0, "mem_layout: %s", eb.msg);
	cr_assert_eq(mem_alloc_anon(&vm->mem, &eb), 0, "mem_alloc_anon: %s", eb.msg);
}

void devt_read(struct device *d, uint64_t off, void *data, unsigned len)
{
	pthread_mutex_lock(&d->lock);
	d->ops->read(d, off, data, len);
	pthread_mutex_unlock(&d->lock);
}

void devt_write(struct device *d, uint64_t off, const void *data, unsigned len)
{
	pthread_mutex_lock(&d->lock);
	d->ops->write(d, off, data, len);
	pthread_mutex_unlock(&d->lock);
}

uint32_t devt_read32(struct device *d, uint64_t off)
{
	uint32_t v;

	devt_read(d, off, &v, 4);
	return le32toh(v);
}

void devt_write32(struct device *d, uint64_t off, uint32_t v)
{
	uint32_t le = htole32(v);

	devt_write(d, off, &le, 4);
}

static int irq_record(void *opaque, unsigned gsi, int level)
{
	struct devt_irq *rec = opaque;

	int old = __atomic_exchange_n(&rec->level, level, __ATOMIC_SEQ_CST);

	if (level && !old)
		__atomic_add_fetch(&rec->edges, 1, __ATOMIC_SEQ_CST);
	__atomic_store_n(&rec->gsi, gsi, __ATOMIC_SEQ_CST);
	return 0;
}

void devt_irq_record(struct device *d, struct devt_irq *rec)
{
	memset(rec, 0, sizeof(*rec));
	pthread_mutex_lock(&d->lock);
	d->irq.set_level = irq_record;
	d->irq.opaque = rec;
	pthread_mutex_unlock(&d->lock);
}

unsigned devt_irq_edges(struct devt_irq *rec)
{
	return __atomic_load_n(&rec->edges, __ATOMIC_SEQ_CST);
}

void devt_virtio_features(struct device *d, uint64_t features)
{
	uint32_t st = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;

	features |= 1ull << VIRTIO_F_VERSION_1;
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_MAGIC_VALUE), 0x74726976, "not virtio-mmio");
	devt_write32(d, VIRTIO_MMIO_STATUS, 0);
	devt_write32(d, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
	devt_write32(d, VIRTIO_MMIO_STATUS, st);
	devt_write32(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	devt_write32(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)features);
	devt_write32(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	devt_write32(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
	devt_write32(d, VIRTIO_MMIO_STATUS, st | VIRTIO_CONFIG_S_FEATURES_OK);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_STATUS), st | VIRTIO_CONFIG_S_FEATURES_OK,
		     "%s refused features 0x%llx", d->ops->name, (unsigned long long)features);
}

void devt_virtio_queue(struct device *d, unsigned q, const struct vqd *vq)
{
	devt_write32(d, VIRTIO_MMIO_QUEUE_SEL, q);
	devt_write32(d, VIRTIO_MMIO_QUEUE_NUM, vq->size);
	devt_write32(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)vq->desc);
	devt_write32(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(vq->desc >> 32));
	devt_write32(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)vq->avail);
	devt_write32(d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (uint32_t)(vq->avail >> 32));
	devt_write32(d, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)vq->used);
	devt_write32(d, VIRTIO_MMIO_QUEUE_USED_HIGH, (uint32_t)(vq->used >> 32));
	devt_write32(d, VIRTIO_MMIO_QUEUE_READY, 1);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_QUEUE_READY), 1, "%s: queue %u not ready",
		     d->ops->name, q);
}

void devt_virtio_driver_ok(struct device *d)
{
	uint32_t st = devt_read32(d, VIRTIO_MMIO_STATUS);

	devt_write32(d, VIRTIO_MMIO_STATUS, st | VIRTIO_CONFIG_S_DRIVER_OK);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_STATUS), st | VIRTIO_CONFIG_S_DRIVER_OK,
		     "%s: DRIVER_OK did not stick", d->ops->name);
}
