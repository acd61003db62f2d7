/* Port I/O and MMIO dispatch: sorted tables of non-overlapping ranges, looked up by
 * bisection. */
#include <errno.h>
#include <string.h>

#include "vmm.h"
#include "dev/dev.h"

int bus_add(struct bus *b, uint64_t base, uint64_t len, struct device *dev)
{
	unsigned i;

	if (len == 0 || base + len < base)
		return -EINVAL;
	if (b->nr == BUS_MAX_RANGES)
		return -ENOSPC;
	for (i = 0; i < b->nr && b->ranges[i].base < base; i++)
		;
	if (i > 0 && b->ranges[i - 1].base + b->ranges[i - 1].len > base)
		return -EBUSY;
	if (i < b->nr && base + len > b->ranges[i].base)
		return -EBUSY;
	memmove(&b->ranges[i + 1], &b->ranges[i], (b->nr - i) * sizeof(b->ranges[0]));
	b->ranges[i] = (struct bus_range){ .base = base, .len = len, .dev = dev };
	b->nr++;
	return 0;
}

const struct bus_range *bus_find(const struct bus *b, uint64_t addr, uint64_t len)
{
	unsigned lo = 0, hi = b->nr;

	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		const struct bus_range *r = &b->ranges[mid];

		if (addr < r->base) {
			hi = mid;
		} else if (addr - r->base >= r->len) {
			lo = mid + 1;
		} else {
			/* the whole access must fall inside one device */
			if (len > r->len - (addr - r->base))
				return NULL;
			return r;
		}
	}
	return NULL;
}

/* Both buses dispatch the same way: the handlers take an offset into the device's range. */
static void bus_dispatch(const struct bus *b, const char *what, uint64_t addr, bool is_write,
			 uint8_t *data, unsigned len)
{
	const struct bus_range *r = bus_find(b, addr, len);
	struct device *d;

	if (!r) {
		/* nothing there: reads float high, as on real hardware */
		if (!is_write)
			memset(data, 0xff, len);
		pr_debug("unhandled %s %s 0x%llx len %u", what, is_write ? "write" : "read",
			 (unsigned long long)addr, len);
		return;
	}
	d = r->dev;
	if (!d->ops->self_locked)
		pthread_mutex_lock(&d->lock);
	if (is_write)
		d->ops->write(d, addr - r->base, data, len);
	else
		d->ops->read(d, addr - r->base, data, len);
	if (!d->ops->self_locked)
		pthread_mutex_unlock(&d->lock);
}

void bus_pio(struct vm *vm, uint16_t port, bool is_write, uint8_t *data, unsigned len)
{
	bus_dispatch(&vm->pio, "port", port, is_write, data, len);
}

void bus_mmio(struct vm *vm, uint64_t addr, bool is_write, uint8_t *data, unsigned len)
{
	bus_dispatch(&vm->mmio, "MMIO", addr, is_write, data, len);
}
