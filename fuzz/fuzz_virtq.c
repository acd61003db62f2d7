/*
 * A split virtqueue driven by a hostile guest: the input is the start of guest RAM
 * (descriptor table at 0, avail ring at 0x1000, used ring at 0x2000; buffers may point
 * anywhere), and the device pops every chain it offers, reads and writes them through
 * the accessors the vsock and rng devices use, and hands them back.
 * Bytes 0-3: queue size (log2), indirect feature, the avail index to start from.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "dev/virtio.h"
#include "fuzz.h"
#include "vmm.h"

#define RAM (2ull << 20)
#define IMAGE (64u << 10)

static struct guest_mem m;
static struct virtq q;
static struct virtq_chain c;
static uint8_t io[8192];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct errbuf eb = { { 0 } };
	struct virtq_state s = { 0 };
	struct iovec iov[16];

	if (!m.base) {
		if (mem_layout(&m, RAM, &eb) || mem_alloc_anon(&m, &eb))
			abort();
	}
	if (size < 4)
		return 0;
	memset(m.base, 0, RAM);
	memcpy(m.base, data + 4, size - 4 < IMAGE ? size - 4 : IMAGE);

	virtq_init(&q, &m, VIRTQ_MAX_SIZE);
	q.indirect = data[1] & 1;
	s.size = (uint16_t)(1u << (data[0] % 9));
	s.ready = 1;
	s.desc = 0;
	s.avail = 0x1000;
	s.used = 0x2000;
	s.next_avail = s.next_used = (uint16_t)(data[2] | data[3] << 8);
	if (virtq_restore(&q, &s, &eb))
		return 0;
	virtq_notify_off(&q);
	for (int n = 0; n < 2 * VIRTQ_MAX_SIZE; n++) {
		uint32_t written = 0;
		int r = virtq_pop(&q, &c, &eb);

		if (r <= 0)
			break;
		(void)virtq_chain_read(&c, 0, io, sizeof(io));
		(void)virtq_chain_iov(&q, &c, false, 1, c.readable_len, iov, 16);
		if (c.writable_len) {
			written = (uint32_t)virtq_chain_write(&q, &c, 0, io, sizeof(io));
			(void)virtq_chain_iov(&q, &c, true, 0, c.writable_len, iov, 16);
		}
		virtq_push(&q, c.head, written);
		(void)virtq_should_interrupt(&q);
	}
	(void)virtq_notify_on(&q);
	virtq_disable(&q);
	return 0;
}
