/*
 * Re-seeding after a restore (FORMAT.md section 11): when the VM generation changed,
 * fresh host entropy (virtio-rng through /dev/hwrng, and the generation itself, which
 * the host drew from getrandom) goes into the kernel's pool and the CRNG is reseeded at
 * once, before the next request runs.
 */
#ifndef EMBER_AGENT_RESEED_H
#define EMBER_AGENT_RESEED_H

#include <stdint.h>

struct reseed {
	uint64_t generation;   /* the last one seen */
	uint64_t reseeds;
};

/* Records the boot's generation (no re-seed: nothing was cloned yet). */
void reseed_init(struct reseed *r);
/* Re-seeds when the generation changed since the last call; logs what it did. */
void reseed_check(void *ctx);

#endif
