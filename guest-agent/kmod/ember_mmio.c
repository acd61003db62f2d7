// SPDX-License-Identifier: GPL-2.0
/*
 * ember_mmio: registers ember's virtio-mmio devices as platform devices, for kernels
 * built without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES (Debian's among them), where the
 * "virtio_mmio.device=" words ember appends to the command line are ignored and the
 * virtio_mmio driver would find no device at all. It does what that option does
 * (drivers/virtio/virtio_mmio.c, vm_cmdline_set): one "virtio-mmio" platform device
 * with a memory and an IRQ resource per entry. The guest agent passes the entries:
 *
 *   devices=<size>@<base>:<irq>[,<size>@<base>:<irq>...]   (size takes K/M suffixes)
 */
#include <linux/ioport.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/platform_device.h>
#include <linux/slab.h>
#include <linux/string.h>

#define EMBER_MMIO_MAX 16

static char *devices;
module_param(devices, charp, 0444);
MODULE_PARM_DESC(devices, "virtio-mmio devices: SIZE@BASE:IRQ[,...], as virtio_mmio.device=");

static struct platform_device *pdevs[EMBER_MMIO_MAX];
static int npdevs;

static int add_device(char *spec)
{
	struct resource res[2] = { };
	unsigned long long base, size;
	unsigned int irq;
	int consumed = 0;
	char *p = spec;

	size = memparse(p, &p);
	if (!size || *p != '@')
		return -EINVAL;
	if (sscanf(p, "@%lli:%u%n", &base, &irq, &consumed) < 2 || p[consumed])
		return -EINVAL;
	if (base + size < base)
		return -EINVAL;
	res[0].flags = IORESOURCE_MEM;
	res[0].start = base;
	res[0].end = base + size - 1;
	res[1].flags = IORESOURCE_IRQ;
	res[1].start = res[1].end = irq;
	pdevs[npdevs] = platform_device_register_resndata(NULL, "virtio-mmio",
							  PLATFORM_DEVID_AUTO, res,
							  ARRAY_SIZE(res), NULL, 0);
	if (IS_ERR(pdevs[npdevs]))
		return PTR_ERR(pdevs[npdevs]);
	pr_info("ember_mmio: virtio-mmio at 0x%llx (%llu bytes), irq %u\n", base, size, irq);
	npdevs++;
	return 0;
}

static void remove_all(void)
{
	while (npdevs > 0)
		platform_device_unregister(pdevs[--npdevs]);
}

static int __init ember_mmio_init(void)
{
	char *copy, *cur, *spec;
	int ret = 0;

	if (!devices || !*devices)
		return 0;
	copy = kstrdup(devices, GFP_KERNEL);
	if (!copy)
		return -ENOMEM;
	cur = copy;
	while ((spec = strsep(&cur, ",")) != NULL) {
		if (!*spec)
			continue;
		if (npdevs == EMBER_MMIO_MAX) {
			pr_err("ember_mmio: more than %d devices\n", EMBER_MMIO_MAX);
			ret = -E2BIG;
			break;
		}
		ret = add_device(spec);
		if (ret) {
			pr_err("ember_mmio: bad device '%s': %d\n", spec, ret);
			break;
		}
	}
	kfree(copy);
	if (ret)
		remove_all();
	return ret;
}

static void __exit ember_mmio_exit(void)
{
	remove_all();
}

module_init(ember_mmio_init);
module_exit(ember_mmio_exit);
MODULE_DESCRIPTION("ember's virtio-mmio devices from the command line");
MODULE_LICENSE("GPL");
