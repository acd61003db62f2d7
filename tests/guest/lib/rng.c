/*
 * virtio-rng (device id 4, one request queue): the driver offers device-writable
 * buffers, the device fills some prefix of each. The caller's buffer is handed to the
 * device directly (identity mapping), in requests of at most RNG_REQ_MAX bytes.
 */
#include "internal.h"

#define RNG_REQ_MAX     (64u << 10)
#define RNG_TIMEOUT_US  5000000ull /* without a single byte: the device is stuck */

static struct virtio_dev dev;
static struct virtq vq;
static struct virtq_ring ring;
static bool ready;

int rng_init(void)
{
	int r = virtio_find(VIRTIO_ID_RNG, &dev);

	ready = false;
	if (r)
		return r;
	r = virtio_begin(&dev, 0);
	if (!r)
		r = virtq_setup(&vq, &dev, 0, &ring, 0);
	if (r)
		return r;
	virtio_driver_ok(&dev);
	ready = true;
	return 0;
}

struct virtio_dev *rng_device(void)
{
	return dev.base ? &dev : NULL;
}

long rng_read(void *buf, size_t len)
{
	uint8_t *p = buf;
	size_t done = 0;
	uint64_t deadline;

	if (!ready) {
		int r = rng_init();

		if (r)
			return r;
	}
	deadline = deadline_after(RNG_TIMEOUT_US);
	while (done < len) {
		struct virtq_buf b = {
			.addr = (uint64_t)(uintptr_t)(p + done),
			.len = (uint32_t)(len - done < RNG_REQ_MAX ? len - done : RNG_REQ_MAX),
			.device_writes = true,
		};
		uint32_t got = 0;
		int r = virtq_add(&vq, &b, 1, &vq);

		if (r < 0)
			return r;
		virtq_kick(&vq);
		while (!virtq_get(&vq, &got)) {
			uint64_t left = deadline_left(deadline);

			if (!left) {
				/* the device still owns the caller's buffer: only a reset
				 * takes it back; the next call starts afresh */
				virtio_reset(&dev);
				ready = false;
				return -ETIMEDOUT;
			}
			guest_park(left);
		}
		if (got > b.len)
			got = b.len; /* never trust a length past what we offered */
		if (got)
			deadline = deadline_after(RNG_TIMEOUT_US);
		done += got;
	}
	return (long)len;
}
