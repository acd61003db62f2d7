/*
 * ember-probe: a handler for scripts/hw-check.sh. It answers what a check needs to know
 * about the clone it ran in, one key=value a line, then the request payload verbatim:
 *
 *   mono_ns=<guest CLOCK_MONOTONIC>
 *   generation=<16 hex: the VM generation>
 *   rng=<32 hex: 16 bytes of getrandom, which must differ between clones>
 *   payload=<the request's bytes>
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "guest_abi.h"

int main(void)
{
	static char in[65536];
	uint8_t rnd[16];
	struct timespec ts;
	size_t got = 0;

	while (got < sizeof(in)) {
		ssize_t n = read(STDIN_FILENO, in + got, sizeof(in) - got);

		if (n == 0)
			break;
		if (n < 0 && errno != EINTR)
			return 1;
		if (n > 0)
			got += (size_t)n;
	}
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return 2;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	printf("mono_ns=%llu\n",
	       (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec);
	printf("generation=%016llx\n",
	       abi_open() ? 0ull : (unsigned long long)abi_generation());
	printf("rng=");
	for (unsigned i = 0; i < sizeof(rnd); i++)
		printf("%02x", rnd[i]);
	printf("\npayload=");
	fwrite(in, 1, got, stdout);
	return fflush(stdout) ? 1 : 0;
}
