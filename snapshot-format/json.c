/*
 * The one JSON writer of ember and ember-snap (`--json` output): objects and arrays
 * written as they go, strings escaped so that any bytes give valid JSON.
 */
#include <inttypes.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "snapfmt.h"

/* Length of the well-formed UTF-8 sequence at s[0..n) (no overlongs, no surrogates, at
 * most U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len;
	uint32_t cp, min;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0)
		len = 2, cp = s[0] & 0x1f, min = 0x80;
	else if ((s[0] & 0xf0) == 0xe0)
		len = 3, cp = s[0] & 0x0f, min = 0x800;
	else if ((s[0] & 0xf8) == 0xf0)
		len = 4, cp = s[0] & 0x07, min = 0x10000;
	else
		return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

void json_write_string(FILE *f, const void *data, size_t n)
{
	const unsigned char *s = data;

	fputc('"', f);
	for (size_t i = 0; i < n;) {
		size_t len = utf8_len(s + i, n - i);

		if (s[i] == '"' || s[i] == '\\') {
			fprintf(f, "\\%c", s[i]);
		} else if (s[i] == '\n') {
			fputs("\\n", f);
		} else if (s[i] == '\t') {
			fputs("\\t", f);
		} else if (len == 1 && s[i] >= 0x20 && s[i] != 0x7f) {
			fputc(s[i], f);
		} else if (len > 1) {
			fwrite(s + i, 1, len, f);
			i += len;
			continue;
		} else {
			/* a control byte, DEL, or a byte that is not UTF-8: its value as a code point */
			fprintf(f, "\\u%04x", s[i]);
		}
		i++;
	}
	fputc('"', f);
}

static void json_sep(struct json_w *w, const char *key)
{
	if (w->depth > 0) {
		if (w->count[w->depth - 1]++)
			fputc(',', w->f);
	}
	if (key) {
		json_write_string(w->f, key, strlen(key));
		fputc(':', w->f);
	}
}

static void json_open(struct json_w *w, const char *key, char c)
{
	json_sep(w, key);
	fputc(c, w->f);
	if (w->depth < JSON_MAX_DEPTH)
		w->count[w->depth++] = 0;
}

static void json_close(struct json_w *w, char c)
{
	fputc(c, w->f);
	w->depth--;
	if (w->depth == 0)
		fputc('\n', w->f);
}

void json_begin(struct json_w *w, FILE *f)
{
	memset(w, 0, sizeof(*w));
	w->f = f;
}

void json_obj(struct json_w *w, const char *key) { json_open(w, key, '{'); }
void json_obj_end(struct json_w *w) { json_close(w, '}'); }
void json_arr(struct json_w *w, const char *key) { json_open(w, key, '['); }
void json_arr_end(struct json_w *w) { json_close(w, ']'); }

void json_str(struct json_w *w, const char *key, const char *s)
{
	json_strn(w, key, s, strlen(s));
}

void json_strn(struct json_w *w, const char *key, const void *s, size_t n)
{
	json_sep(w, key);
	json_write_string(w->f, s, n);
}

void json_u64(struct json_w *w, const char *key, uint64_t v)
{
	json_sep(w, key);
	fprintf(w->f, "%" PRIu64, v);
}

void json_i64(struct json_w *w, const char *key, int64_t v)
{
	json_sep(w, key);
	fprintf(w->f, "%" PRId64, v);
}

void json_bool(struct json_w *w, const char *key, bool v)
{
	json_sep(w, key);
	fputs(v ? "true" : "false", w->f);
}

void json_null(struct json_w *w, const char *key)
{
	json_sep(w, key);
	fputs("null", w->f);
}

void json_f64(struct json_w *w, const char *key, double v, int decimals)
{
	json_sep(w, key);
	if (isfinite(v))
		fprintf(w->f, "%.*f", decimals, v);
	else
		fputs("null", w->f);
}

static void json_msgpack_key(struct json_w *w, const msgpack_object *k)
{
	char num[24];

	json_sep(w, NULL);
	if (k->type == MSGPACK_OBJECT_STR) {
		json_write_string(w->f, k->via.str.ptr, k->via.str.size);
	} else {
		snprintf(num, sizeof(num), "(type %d)", k->type);
		json_write_string(w->f, num, strlen(num));
	}
	fputc(':', w->f);
	/* the value that follows is this member, not another one */
	w->count[w->depth - 1] = 0;
}

void json_msgpack(struct json_w *w, const char *key, const msgpack_object *v)
{
	/* deeper than the writer tracks (no reply of ours is): null, still valid JSON */
	if ((v->type == MSGPACK_OBJECT_ARRAY || v->type == MSGPACK_OBJECT_MAP) &&
	    w->depth >= JSON_MAX_DEPTH) {
		json_null(w, key);
		return;
	}
	switch (v->type) {
	case MSGPACK_OBJECT_STR:
		json_strn(w, key, v->via.str.ptr, v->via.str.size);
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		json_u64(w, key, v->via.u64);
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		json_i64(w, key, v->via.i64);
		break;
	case MSGPACK_OBJECT_BOOLEAN:
		json_bool(w, key, v->via.boolean);
		break;
	case MSGPACK_OBJECT_ARRAY:
		json_arr(w, key);
		for (uint32_t i = 0; i < v->via.array.size; i++)
			json_msgpack(w, NULL, &v->via.array.ptr[i]);
		json_arr_end(w);
		break;
	case MSGPACK_OBJECT_MAP:
		json_obj(w, key);
		for (uint32_t i = 0; i < v->via.map.size; i++) {
			json_msgpack_key(w, &v->via.map.ptr[i].key);
			json_msgpack(w, NULL, &v->via.map.ptr[i].val);
			w->count[w->depth - 1] = 1;
		}
		json_obj_end(w);
		break;
	default:
		json_null(w, key);
	}
}
