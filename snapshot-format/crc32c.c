/*
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78, init and xorout 0xFFFFFFFF).
 *
 * The SSE4.2 crc32 instruction has a 3-cycle latency but 1-cycle throughput, so large
 * buffers run three independent streams and join them: the raw CRC register of A||B
 * is (reg(A) * x^(8|B|) mod P) xor reg(B started at 0). The shift is a GF(2)
 * multiplication by a constant, ~100 ns once per block. Without SSE4.2 a
 * slicing-by-8 table does ~1.5 bytes/cycle.
 */
#include <pthread.h>
#include <string.h>

#include "snapfmt_int.h"

#define POLY 0x82f63b78u

/* ---- GF(2) arithmetic modulo P, reflected (bit 31 is x^0) ---- */
static uint32_t gf2_mulmod(uint32_t a, uint32_t b)
{
	uint32_t m = 1u << 31, prod = 0;

	if (!a)
		return 0;
	for (;;) {
		if (a & m) {
			prod ^= b;
			if ((a & (m - 1)) == 0)
				break;
		}
		m >>= 1;
		b = (b & 1) ? (b >> 1) ^ POLY : b >> 1;
	}
	return prod;
}

/* x^(8 * bytes) mod P, by square-and-multiply */
static uint32_t gf2_x8n(uint64_t bytes)
{
	uint32_t result = 1u << 31, sq = 1u << 23; /* x^0, x^8 */

	for (uint64_t n = bytes; n; n >>= 1) {
		if (n & 1)
			result = gf2_mulmod(result, sq);
		sq = gf2_mulmod(sq, sq);
	}
	return result;
}

/* ---- portable: slicing by 8 ---- */
static uint32_t sw_table[8][256];
static pthread_once_t sw_once = PTHREAD_ONCE_INIT;

static void sw_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
		sw_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			sw_table[t][i] = (sw_table[t - 1][i] >> 8) ^ sw_table[0][sw_table[t - 1][i] & 0xff];
}

uint32_t snap_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint32_t c = ~crc;

	pthread_once(&sw_once, sw_init);
	while (len && ((uintptr_t)p & 7)) {
		c = (c >> 8) ^ sw_table[0][(c ^ *p++) & 0xff];
		len--;
	}
	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		w ^= c; /* little-endian host (x86_64) */
		c = sw_table[7][w & 0xff] ^ sw_table[6][(w >> 8) & 0xff] ^
		    sw_table[5][(w >> 16) & 0xff] ^ sw_table[4][(w >> 24) & 0xff] ^
		    sw_table[3][(w >> 32) & 0xff] ^ sw_table[2][(w >> 40) & 0xff] ^
		    sw_table[1][(w >> 48) & 0xff] ^ sw_table[0][w >> 56];
		p += 8;
		len -= 8;
	}
	while (len--)
		c = (c >> 8) ^ sw_table[0][(c ^ *p++) & 0xff];
	return ~c;
}

#if defined(__x86_64__)
#include <nmmintrin.h>

#define HW_STREAM 4096u /* bytes per stream in a 3-stream block */

__attribute__((target("sse4.2")))
static uint32_t hw_run(uint32_t c, const uint8_t *p, size_t len)
{
	uint64_t c64 = c;

	while (len && ((uintptr_t)p & 7)) {
		c64 = _mm_crc32_u8((uint32_t)c64, *p++);
		len--;
	}
	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		c64 = _mm_crc32_u64(c64, w);
		p += 8;
		len -= 8;
	}
	while (len--)
		c64 = _mm_crc32_u8((uint32_t)c64, *p++);
	return (uint32_t)c64;
}

__attribute__((target("sse4.2")))
static uint32_t hw_crc(uint32_t crc, const uint8_t *p, size_t len)
{
	static uint32_t shift_const; /* x^(8 * HW_STREAM) mod P; idempotent lazy init */
	uint32_t c = ~crc;

	while (len && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8(c, *p++);
		len--;
	}
	if (len >= 3 * HW_STREAM) {
		uint32_t k = __atomic_load_n(&shift_const, __ATOMIC_RELAXED);
		if (!k) {
			k = gf2_x8n(HW_STREAM);
			__atomic_store_n(&shift_const, k, __ATOMIC_RELAXED);
		}
		while (len >= 3 * HW_STREAM) {
			uint64_t c0 = c, c1 = 0, c2 = 0;
			const uint8_t *p1 = p + HW_STREAM, *p2 = p + 2 * HW_STREAM;
			for (size_t i = 0; i < HW_STREAM; i += 8) {
				uint64_t w0, w1, w2;
				memcpy(&w0, p + i, 8);
				memcpy(&w1, p1 + i, 8);
				memcpy(&w2, p2 + i, 8);
				c0 = _mm_crc32_u64(c0, w0);
				c1 = _mm_crc32_u64(c1, w1);
				c2 = _mm_crc32_u64(c2, w2);
			}
			c = gf2_mulmod(k, (uint32_t)c0) ^ (uint32_t)c1;
			c = gf2_mulmod(k, c) ^ (uint32_t)c2;
			p += 3 * HW_STREAM;
			len -= 3 * HW_STREAM;
		}
	}
	return ~hw_run(c, p, len);
}

bool snap_crc32c_hw_available(void)
{
	return __builtin_cpu_supports("sse4.2");
}

uint32_t snap_crc32c(uint32_t crc, const void *buf, size_t len)
{
	if (__builtin_cpu_supports("sse4.2"))
		return hw_crc(crc, buf, len);
	return snap_crc32c_sw(crc, buf, len);
}
#else
bool snap_crc32c_hw_available(void)
{
	return false;
}

uint32_t snap_crc32c(uint32_t crc, const void *buf, size_t len)
{
	return snap_crc32c_sw(crc, buf, len);
}
#endif
