/*
 * The one checksum every guest prints: 4 independent lanes over 8-byte words so it
 * runs near memory speed in ring 3 (a 256 MiB heap in tens of ms). Not
 * cryptographic; it only has to make any changed bit visible. Each lane step is a
 * bijection of the lane plus a constant, so runs of zero words still advance it.
 */
#include "guest.h"

#define K1 0x9e3779b97f4a7c15ull
#define K2 0xc2b2ae3d27d4eb4full

static inline uint64_t rotl(uint64_t x, unsigned r)
{
	return (x << r) | (x >> (64 - r));
}

static inline uint64_t lane_step(uint64_t lane, uint64_t w)
{
	return rotl((lane ^ w) * K2, 31) + K1;
}

static inline uint64_t load64(const unsigned char *p)
{
	uint64_t v;

	/* unaligned-safe, one mov; the builtin, as -ffreestanding makes plain memcpy a call */
	__builtin_memcpy(&v, p, sizeof(v));
	return v;
}

uint64_t hash64(const void *buf, size_t len, uint64_t seed)
{
	const unsigned char *p = buf;
	uint64_t a = seed ^ K1, b = seed ^ K2, c = rotl(seed, 17) ^ K1, d = rotl(seed, 41) ^ K2;
	size_t i = 0;

	for (; i + 32 <= len; i += 32) {
		a = lane_step(a, load64(p + i));
		b = lane_step(b, load64(p + i + 8));
		c = lane_step(c, load64(p + i + 16));
		d = lane_step(d, load64(p + i + 24));
	}
	for (; i + 8 <= len; i += 8)
		a = lane_step(a, load64(p + i));
	if (i < len) {
		uint64_t tail = 0;

		for (unsigned k = 0; i + k < len; k++)
			tail |= (uint64_t)p[i + k] << (8 * k);
		b = lane_step(b, tail);
	}
	return mix64(mix64(a) ^ rotl(mix64(b), 16) ^ rotl(mix64(c), 32) ^ rotl(mix64(d), 48) ^
		     len);
}
