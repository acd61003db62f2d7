/* The few msgpack writes every reply of ember's sockets is made of (control socket,
 * its metrics, the pool's status): strings and key/value pairs of a map. */
#include <msgpack.h>
#include <string.h>

#include "vmm.h"

void mp_put_str(struct msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

void mp_put_kv_str(struct msgpack_packer *pk, const char *k, const char *v)
{
	mp_put_str(pk, k);
	mp_put_str(pk, v);
}

void mp_put_kv_u64(struct msgpack_packer *pk, const char *k, uint64_t v)
{
	mp_put_str(pk, k);
	msgpack_pack_uint64(pk, v);
}
