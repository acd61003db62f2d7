/* Re-seeding the guest kernel's RNG when the VM generation changes. */
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "guest_abi.h"
#include "reseed.h"

#define HWRNG_BYTES 32

void reseed_init(struct reseed *r)
{
	r->generation = abi_generation();
	r->reseeds = 0;
}

/* Up to n bytes from virtio-rng; how many came (0 without the device). */
static size_t read_hwrng(uint8_t *buf, size_t n)
{
	int fd = open("/dev/hwrng", O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	if (fd < 0)
		return 0;
	while (got < n) {
		ssize_t k = read(fd, buf + got, n - got);

		if (k <= 0 && !(k < 0 && errno == EINTR))
			break;
		if (k > 0)
			got += (size_t)k;
	}
	close(fd);
	return got;
}

void reseed_check(void *ctx)
{
	struct reseed *r = ctx;
	uint64_t gen = abi_generation();
	struct {
		struct rand_pool_info info;
		uint8_t buf[HWRNG_BYTES + sizeof(uint64_t)];
	} e;
	size_t hw;
	int fd, add = -1, crng = -1;

	if (gen == r->generation)
		return;
	r->generation = gen;
	hw = read_hwrng(e.buf, HWRNG_BYTES);
	memcpy(e.buf + hw, &gen, sizeof(gen));
	e.info.buf_size = (int)(hw + sizeof(gen));
	/* credit only virtio-rng's bytes; the generation is mixed in uncredited */
	e.info.entropy_count = (int)(hw * 8);
	fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		add = ioctl(fd, RNDADDENTROPY, &e.info) ? -errno : 0;
		/* without this the CRNG would take the new input only at its next
		 * scheduled reseed: clones would go on with the same stream */
		crng = ioctl(fd, RNDRESEEDCRNG) ? -errno : 0;
		close(fd);
	}
	r->reseeds++;
	fprintf(stderr, "ember-agent: generation=%016llx reseeded hwrng_bytes=%zu add=%d "
		"crng=%d\n", (unsigned long long)gen, hw, add, crng);
}
