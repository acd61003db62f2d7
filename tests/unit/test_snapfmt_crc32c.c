/* CRC32C: the standard check value, hardware == table on every length and alignment. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "snapfmt.h"

Test(snapfmt_crc32c, matches_the_castagnoli_check_value)
{
	cr_assert_eq(snap_crc32c(0, "123456789", 9), 0xe3069283u);
	cr_assert_eq(snap_crc32c_sw(0, "123456789", 9), 0xe3069283u);
}

Test(snapfmt_crc32c, empty_buffer_leaves_the_crc_unchanged)
{
	cr_assert_eq(snap_crc32c(0, "", 0), 0);
	cr_assert_eq(snap_crc32c(0x12345678u, "", 0), 0x12345678u);
}

Test(snapfmt_crc32c, known_vector_of_32_zero_bytes)
{
	/* RFC 3720 (iSCSI) appendix B.4: 32 bytes of zeros */
	uint8_t z[32] = { 0 };
	cr_assert_eq(snap_crc32c(0, z, sizeof(z)), 0x8a9136aau);
	cr_assert_eq(snap_crc32c_sw(0, z, sizeof(z)), 0x8a9136aau);
}

Test(snapfmt_crc32c, hardware_and_table_agree_on_all_lengths_and_alignments)
{
	size_t max = 3 * 4096 * 2 + 100; /* crosses the 3-stream block size twice */
	uint8_t *buf = malloc(max + 8);
	uint32_t x = 12345;

	cr_assert(buf);
	for (size_t i = 0; i < max + 8; i++) {
		x = x * 1103515245u + 12345u;
		buf[i] = (uint8_t)(x >> 16);
	}
	for (size_t align = 0; align < 8; align++) {
		for (size_t len = 0; len < 200; len++)
			cr_assert_eq(snap_crc32c(0, buf + align, len), snap_crc32c_sw(0, buf + align, len),
				     "len %zu align %zu", len, align);
		for (size_t len = 12280; len < 12300; len++)
			cr_assert_eq(snap_crc32c(0, buf + align, len), snap_crc32c_sw(0, buf + align, len));
		cr_assert_eq(snap_crc32c(0, buf + align, max), snap_crc32c_sw(0, buf + align, max));
	}
	free(buf);
}

Test(snapfmt_crc32c, chaining_equals_one_pass)
{
	static uint8_t buf[50000];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 31 + (i >> 8));
	uint32_t whole = snap_crc32c(0, buf, sizeof(buf));
	for (size_t cut = 0; cut < sizeof(buf); cut += 4999)
		cr_assert_eq(snap_crc32c(snap_crc32c(0, buf, cut), buf + cut, sizeof(buf) - cut), whole);
	cr_assert_eq(snap_crc32c_sw(snap_crc32c_sw(0, buf, 777), buf + 777, sizeof(buf) - 777), whole);
}
