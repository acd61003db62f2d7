/*
 * A small vsnprintf: %s %c %d %i %u %x %X %p %%, flags '0' and '-', a width, and
 * the l / ll / z length modifiers. Enough for test output; no floating point.
 */
#include "guest.h"

struct out {
	char *buf;
	size_t size, len; /* len counts every byte, even those that did not fit */
};

static void put(struct out *o, char c)
{
	if (o->len + 1 < o->size)
		o->buf[o->len] = c;
	o->len++;
}

static void put_padded(struct out *o, const char *s, size_t n, unsigned width, bool left,
		       char pad)
{
	size_t fill = width > n ? width - n : 0;

	if (!left && pad == '0' && n && (*s == '-')) { /* sign before the zeros */
		put(o, *s++);
		n--;
	}
	if (!left)
		while (fill--)
			put(o, pad);
	while (n--)
		put(o, *s++);
	if (left)
		while (fill--)
			put(o, ' ');
}

/* Writes v in base 10/16 backwards into the end of tmp; returns the start. */
static char *format_u64(char *end, uint64_t v, unsigned base, bool upper)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	char *p = end;

	do {
		*--p = digits[v % base];
		v /= base;
	} while (v);
	return p;
}

int fmt_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
	struct out o = { .buf = buf, .size = size, .len = 0 };
	char tmp[24];

	for (; *fmt; fmt++) {
		bool left = false, is_signed = false;
		char pad = ' ';
		unsigned width = 0, longs = 0, base = 10;
		bool upper = false;
		uint64_t v;

		if (*fmt != '%') {
			put(&o, *fmt);
			continue;
		}
		fmt++;
		for (;; fmt++) {
			if (*fmt == '-')
				left = true;
			else if (*fmt == '0')
				pad = '0';
			else
				break;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (unsigned)(*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z') {
			longs = 2;
			fmt++;
		}
		switch (*fmt) {
		case 's': {
			const char *s = va_arg(ap, const char *);

			if (!s)
				s = "(null)";
			put_padded(&o, s, strlen(s), width, left, ' ');
			continue;
		}
		case 'c':
			tmp[0] = (char)va_arg(ap, int);
			put_padded(&o, tmp, 1, width, left, ' ');
			continue;
		case '%':
			put(&o, '%');
			continue;
		case 'p':
			v = (uintptr_t)va_arg(ap, void *);
			put(&o, '0');
			put(&o, 'x');
			base = 16;
			goto number;
		case 'd':
		case 'i':
			is_signed = true;
			break;
		case 'u':
			break;
		case 'X':
			upper = true;
			/* fallthrough */
		case 'x':
			base = 16;
			break;
		case 0:
			fmt--; /* a lone '%' at the end */
			continue;
		default: /* unknown conversion: print it verbatim */
			put(&o, '%');
			put(&o, *fmt);
			continue;
		}
		if (longs)
			v = is_signed ? (uint64_t)va_arg(ap, long) : va_arg(ap, unsigned long);
		else
			v = is_signed ? (uint64_t)(int64_t)va_arg(ap, int) : va_arg(ap, unsigned);
number: {
		char *end = tmp + sizeof(tmp), *p;
		bool neg = is_signed && (int64_t)v < 0;

		p = format_u64(end, neg ? 0 - v : v, base, upper);
		if (neg)
			*--p = '-';
		put_padded(&o, p, (size_t)(end - p), width, left, left ? ' ' : pad);
	}
	}
	if (size)
		buf[o.len < size ? o.len : size - 1] = 0;
	return (int)o.len;
}

int fmt_snprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = fmt_vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	return n;
}
