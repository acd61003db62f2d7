/*
 * Frames a client sends to ember's sockets: the control socket's request body
 * (api_decode_request, FORMAT.md §9) and the pool socket's request header
 * (pool_check_request, INVOCATION.md §7); and the lines and headers `ember invoke`
 * reads back from a guest (INVOCATION.md). Every parser sees every input.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "cli.h"
#include "pool.h"
#include "vmm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct api_request rq;
	struct errbuf eb = { { 0 } };
	struct pool_req prq;
	uint32_t port, len;
	uint64_t id;
	uint16_t status;

	(void)api_decode_request(data, size, &rq, &eb);
	if (size >= INVOKE_HDR_SIZE) {
		pool_check_request(data, 1u << 20, &prq);
		(void)invoke_check_response_header(data, 0, INVOKE_MAX_STATUS, &status, &len, &eb);
		(void)invoke_check_request_header(data, &id, &len, &eb);
	}
	(void)invoke_parse_ok_line((const char *)data, size, &port);
	return 0;
}
