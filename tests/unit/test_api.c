/* Control-socket request decoding: untrusted bytes from a client. */
#include <criterion/criterion.h>
#include <errno.h>
#include <msgpack.h>
#include <string.h>

#include "vmm.h"

static msgpack_sbuffer sb;
static msgpack_packer pk;

static void begin(size_t n)
{
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, n);
}

static void str(const char *s)
{
	msgpack_pack_str(&pk, strlen(s));
	msgpack_pack_str_body(&pk, s, strlen(s));
}

static int decode(struct api_request *rq, struct errbuf *eb)
{
	int r = api_decode_request((const uint8_t *)sb.data, sb.size, rq, eb);

	msgpack_sbuffer_destroy(&sb);
	return r;
}

Test(api, decodes_snapshot_request)
{
	struct api_request rq;
	struct errbuf eb;

	begin(4);
	str("verb"); str("snapshot");
	str("dir"); str("/tmp/x");
	str("diff"); msgpack_pack_true(&pk);
	str("id"); msgpack_pack_uint64(&pk, 7);
	cr_assert_eq(decode(&rq, &eb), 0, "%s", eb.msg);
	cr_assert_str_eq(rq.verb, "snapshot");
	cr_assert_str_eq(rq.dir, "/tmp/x");
	cr_assert(rq.diff);
	cr_assert(rq.has_id);
	cr_assert_eq(rq.id, 7);
}

Test(api, ignores_unknown_keys)
{
	struct api_request rq;
	struct errbuf eb;

	begin(2);
	str("verb"); str("status");
	str("future"); msgpack_pack_uint64(&pk, 1);
	cr_assert_eq(decode(&rq, &eb), 0, "%s", eb.msg);
	cr_assert_str_eq(rq.verb, "status");
}

Test(api, rejects_missing_verb)
{
	struct api_request rq;
	struct errbuf eb;

	begin(1);
	str("dir"); str("/x");
	cr_assert_eq(decode(&rq, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "verb"), "%s", eb.msg);
}

Test(api, rejects_wrong_types)
{
	struct api_request rq;
	struct errbuf eb;

	begin(2);
	str("verb"); str("snapshot");
	str("diff"); msgpack_pack_uint64(&pk, 1);
	cr_assert_eq(decode(&rq, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "'diff' must be a boolean"), "%s", eb.msg);

	begin(1);
	str("verb"); msgpack_pack_uint64(&pk, 3);
	cr_assert_eq(decode(&rq, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "'verb' must be a string"), "%s", eb.msg);

	begin(2);
	str("verb"); str("status");
	str("id"); msgpack_pack_int64(&pk, -1);
	cr_assert_eq(decode(&rq, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "'id'"), "%s", eb.msg);
}

Test(api, rejects_oversized_and_nul_strings)
{
	struct api_request rq;
	struct errbuf eb;
	char big[200];

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	begin(2);
	str("verb"); str("guest-cmd");
	str("cmd"); str(big);
	cr_assert_eq(decode(&rq, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "'cmd' must be 1..63 bytes"), "%s", eb.msg);

	begin(1);
	str("verb");
	msgpack_pack_str(&pk, 3);
	msgpack_pack_str_body(&pk, "a\0b", 3);
	cr_assert_eq(decode(&rq, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "NUL"), "%s", eb.msg);
}

Test(api, rejects_non_map_and_garbage)
{
	struct api_request rq;
	struct errbuf eb;
	const uint8_t arr[] = { 0x91, 0x01 };              /* [1] */
	const uint8_t huge[] = { 0xdf, 0xff, 0xff, 0xff, 0xff }; /* map of 2^32-1 entries */
	const uint8_t trailing[] = { 0x80, 0x00 };         /* {} then a stray byte */

	cr_assert_eq(api_decode_request(arr, sizeof(arr), &rq, &eb), -EINVAL);
	cr_assert_eq(api_decode_request(huge, sizeof(huge), &rq, &eb), -EINVAL);
	cr_assert_eq(api_decode_request(trailing, sizeof(trailing), &rq, &eb), -EINVAL);
	cr_assert_eq(api_decode_request((const uint8_t *)"", 0, &rq, &eb), -EINVAL);
}

Test(api, decodes_reset_with_standby)
{
	struct api_request rq;
	struct errbuf eb;

	begin(2);
	str("verb"); str("reset");
	str("standby"); msgpack_pack_true(&pk);
	cr_assert_eq(decode(&rq, &eb), 0, "%s", eb.msg);
	cr_assert_str_eq(rq.verb, "reset");
	cr_assert(rq.standby);

	begin(2);
	str("verb"); str("reset");
	str("standby"); str("yes");
	cr_assert_eq(decode(&rq, &eb), -EINVAL);
	cr_assert(strstr(eb.msg, "'standby' must be a boolean"), "%s", eb.msg);
}
