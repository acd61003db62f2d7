/*
 * The lines ember prints for machines on stderr (README, "Lines for machines"), built
 * field by field and written as text ("kind key=value ...") or, with --timings-json, as
 * one JSON object per line ({"line": "kind", "key": value, ...}).
 *
 * A fixed buffer and one write() per line: lines come from vCPU threads too, which must
 * not allocate (their seccomp filter allows no fresh mmap), and whole lines never
 * interleave. json.c's writer needs a FILE, hence the small escaper here; like json.c it
 * makes any bytes valid JSON.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vmm.h"

static bool as_json;

void mline_set_json(bool on)
{
	as_json = on;
}

bool mline_json(void)
{
	return as_json;
}

#define TRUNCATED ", \"truncated\": true"

static void put(struct mline *m, const char *s, size_t n)
{
	/* room for the truncation mark and "}\n" is kept; once cut, nothing more goes in */
	if (m->cut || m->len + n + sizeof(TRUNCATED) + 2 > sizeof(m->buf)) {
		m->cut = true;
		return;
	}
	memcpy(m->buf + m->len, s, n);
	m->len += n;
}

static void puts_(struct mline *m, const char *s)
{
	put(m, s, strlen(s));
}

/* A JSON string literal: '"' and '\\' escaped, control bytes, DEL and every byte >= 0x80
 * as \u00XX (text lines are ASCII; a path's other bytes stay distinct). */
static void put_jstr(struct mline *m, const char *s)
{
	char e[8];

	put(m, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\') {
			e[0] = '\\', e[1] = (char)*p;
			put(m, e, 2);
		} else if (*p < 0x20 || *p >= 0x7f) {
			snprintf(e, sizeof(e), "\\u%04x", *p);
			put(m, e, 6);
		} else {
			put(m, (const char *)p, 1);
		}
	}
	put(m, "\"", 1);
}

void mline_begin(struct mline *m, const char *kind)
{
	m->len = 0;
	m->cut = false;
	m->json = as_json;
	if (m->json) {
		puts_(m, "{\"line\": ");
		put_jstr(m, kind);
	} else {
		puts_(m, kind);
	}
}

/* key=value in text, or "key": value (a string, or a number as it is) */
static void field_put(struct mline *m, const char *key, bool positional, const char *text,
		      bool quote)
{
	if (m->json) {
		puts_(m, ", ");
		put_jstr(m, key);
		puts_(m, ": ");
		if (quote)
			put_jstr(m, text);
		else
			puts_(m, text);
		return;
	}
	puts_(m, " ");
	if (!positional) {
		puts_(m, key);
		puts_(m, "=");
	}
	puts_(m, text);
}

static void field(struct mline *m, const char *key, bool positional, const char *text,
		  bool quote)
{
	size_t start = m->len;

	field_put(m, key, positional, text, quote);
	if (m->cut) /* a field goes in whole or not at all */
		m->len = start;
}

void mline_str(struct mline *m, const char *key, const char *v)
{
	field(m, key, false, v, true);
}

void mline_u64(struct mline *m, const char *key, uint64_t v)
{
	char s[24];

	snprintf(s, sizeof(s), "%" PRIu64, v);
	field(m, key, false, s, false);
}

void mline_hex(struct mline *m, const char *key, uint64_t v)
{
	char s[24];

	/* a string in JSON too: 64-bit words lose bits as JSON numbers in many parsers */
	snprintf(s, sizeof(s), "0x%" PRIx64, v);
	field(m, key, false, s, true);
}

void mline_pos_str(struct mline *m, const char *key, const char *v)
{
	field(m, key, true, v, true);
}

void mline_pos_u64(struct mline *m, const char *key, uint64_t v)
{
	char s[24];

	snprintf(s, sizeof(s), "%" PRIu64, v);
	field(m, key, true, s, false);
}

void mline_end(struct mline *m)
{
	if (m->json) {
		if (m->cut) { /* still valid JSON, and says so */
			memcpy(m->buf + m->len, TRUNCATED, sizeof(TRUNCATED) - 1);
			m->len += sizeof(TRUNCATED) - 1;
		}
		m->buf[m->len++] = '}';
	}
	m->buf[m->len++] = '\n';
	if (write(STDERR_FILENO, m->buf, m->len) < 0) {
		/* nothing useful to do if stderr is gone */
	}
}
