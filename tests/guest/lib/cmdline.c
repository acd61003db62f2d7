/*
 * Command-line helpers: "key=value" words separated by spaces; the last
 * occurrence of a key wins, as in Linux.
 */
#include "bootparams.h"
#include "internal.h"

const char *cmdline_get(void)
{
	const uint8_t *bp = (const uint8_t *)(uintptr_t)boot_params_gpa;
	uint64_t lo, hi, addr;

	if (!bp)
		return "";
	lo = *(const uint32_t *)(bp + BP_CMD_LINE_PTR);
	hi = *(const uint32_t *)(bp + BP_EXT_CMD_LINE_PTR);
	addr = (hi << 32) | lo;
	if (!addr || addr >= GUEST_MAPPED_END)
		return "";
	return (const char *)(uintptr_t)addr;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n';
}

/* Finds the last word "key=..." (or "key" when want_value is false); returns the
 * start of its value (or the word) and its length. */
static const char *find_word(const char *key, bool want_value, size_t *len)
{
	const char *s = cmdline_get(), *found = NULL;
	size_t klen = strlen(key);

	while (*s) {
		const char *w;
		size_t wlen;

		while (is_space(*s))
			s++;
		w = s;
		while (*s && !is_space(*s))
			s++;
		wlen = (size_t)(s - w);
		if (wlen < klen || strncmp(w, key, klen) != 0)
			continue;
		if (want_value && wlen > klen && w[klen] == '=') {
			found = w + klen + 1;
			*len = wlen - klen - 1;
		} else if (!want_value && wlen == klen) {
			found = w;
			*len = wlen;
		}
	}
	return found;
}

int cmdline_get_str(const char *key, char *buf, size_t len)
{
	size_t n;
	const char *v = find_word(key, true, &n);

	if (!v)
		return -ENOENT;
	if (n + 1 > len)
		return -E2BIG;
	memcpy(buf, v, n);
	buf[n] = 0;
	return 0;
}

bool cmdline_has_flag(const char *key)
{
	size_t n;

	return find_word(key, false, &n) != NULL;
}

int parse_u64_suffix(const char *s, size_t len, uint64_t *val)
{
	uint64_t v = 0, base = 10;
	unsigned shift = 0;
	size_t i = 0, digits = 0;

	if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		i = 2;
	}
	for (; i < len; i++, digits++) {
		char c = s[i];
		uint64_t d;

		if (c >= '0' && c <= '9')
			d = (uint64_t)(c - '0');
		else if (base == 16 && c >= 'a' && c <= 'f')
			d = (uint64_t)(c - 'a' + 10);
		else if (base == 16 && c >= 'A' && c <= 'F')
			d = (uint64_t)(c - 'A' + 10);
		else
			break;
		if (v > (UINT64_MAX - d) / base)
			return -ERANGE;
		v = v * base + d;
	}
	if (digits == 0)
		return -EINVAL;
	if (i < len) {
		switch (s[i]) {
		case 'k': case 'K': shift = 10; break;
		case 'm': case 'M': shift = 20; break;
		case 'g': case 'G': shift = 30; break;
		case 't': case 'T': shift = 40; break;
		default: return -EINVAL;
		}
		if (++i != len)
			return -EINVAL; /* anything after the suffix */
		if (v > (UINT64_MAX >> shift))
			return -ERANGE;
		v <<= shift;
	}
	*val = v;
	return 0;
}

int cmdline_get_u64(const char *key, uint64_t *val)
{
	size_t n;
	const char *v = find_word(key, true, &n);

	if (!v)
		return -ENOENT;
	return parse_u64_suffix(v, n, val);
}

uint64_t cmdline_u64_or(const char *key, uint64_t def)
{
	char raw[64] = "";
	uint64_t v = def;
	int ret = cmdline_get_u64(key, &v);

	if (ret == -ENOENT)
		return def;
	cmdline_get_str(key, raw, sizeof(raw));
	GUEST_ASSERT_MSG(ret == 0, "%s=%s is not a number (decimal or 0x hex, optional K/M/G/T)%s",
			 key, raw, ret == -ERANGE ? ": too large" : "");
	return v;
}
