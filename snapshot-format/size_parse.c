/* Sizes on command lines: "64", "64K", "64M", "1G" (ember --mem, ember-snap --chunk-size). */
#include <errno.h>
#include <stdlib.h>

#include "snapfmt.h"

int snap_parse_size(const char *s, uint64_t plain_unit, uint64_t *out)
{
	unsigned long long n;
	uint64_t unit = plain_unit;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	switch (*end) {
	case 'K': case 'k': unit = 1ull << 10; end++; break;
	case 'M': case 'm': unit = 1ull << 20; end++; break;
	case 'G': case 'g': unit = 1ull << 30; end++; break;
	default: break;
	}
	if (*end || (n && unit > UINT64_MAX / n))
		return -EINVAL;
	*out = n * unit;
	return 0;
}
