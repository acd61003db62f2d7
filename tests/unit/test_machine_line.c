/*
 * The lines for machines (src/machine_line.c): the text form stays "kind key=value",
 * and with --timings-json every line is one JSON object that a JSON parser reads back
 * with the same fields, whatever bytes a value holds, even when it does not fit.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "vmm.h"

static char out[8192];

static void text_line(void *arg)
{
	struct mline l;

	mline_begin(&l, "ember-x");
	mline_str(&l, "dir", "snap");
	mline_u64(&l, "us", 42);
	mline_hex(&l, "a0", 0xbeef);
	mline_end(&l);
	mline_begin(&l, "ember-timing");
	mline_pos_str(&l, "phase", "resumed");
	mline_pos_u64(&l, "us", 7);
	mline_end(&l);
}

static void run_json(void (*fn)(void *), void *arg)
{
	mline_set_json(true);
	ember_test_capture_stderr(fn, arg, out, sizeof(out));
	mline_set_json(false);
}

Test(machine_line, text_form_is_kind_then_key_value_fields)
{
	ember_test_capture_stderr(text_line, NULL, out, sizeof(out));
	cr_assert_str_eq(out, "ember-x dir=snap us=42 a0=0xbeef\nember-timing resumed 7\n");
}

Test(machine_line, json_form_has_the_same_fields_with_numbers_as_numbers)
{
	char *second, *canon;

	run_json(text_line, NULL);
	second = strchr(out, '\n');
	cr_assert(second);
	canon = ember_test_json_canon(second + 1);
	cr_assert_str_eq(canon, "{\"line\":\"ember-timing\",\"phase\":\"resumed\",\"us\":7}\n");
	free(canon);
	second[1] = 0;
	canon = ember_test_json_canon(out);
	cr_assert_str_eq(canon, "{\"a0\":\"0xbeef\",\"dir\":\"snap\",\"line\":\"ember-x\",\"us\":42}\n");
	free(canon);
}

static void hostile_value(void *arg)
{
	struct mline l;

	mline_begin(&l, "ember-snapshot");
	mline_str(&l, "dir", (const char *)arg);
	mline_end(&l);
}

Test(machine_line, any_bytes_in_a_value_give_valid_json)
{
	char *canon;

	run_json(hostile_value, "a\"b\\c\nd\te\x01\x7f\xff\xc3\xa9");
	cr_assert_eq(strchr(out, '\n'), out + strlen(out) - 1, "one line: %s", out);
	canon = ember_test_json_canon(out);
	cr_assert_str_eq(canon, "{\"dir\":\"a\\\"b\\\\c\\nd\\te\\u0001\\u007f\\u00ff\\u00c3\\u00a9\","
				"\"line\":\"ember-snapshot\"}\n");
	free(canon);
}

Test(machine_line, a_line_too_long_is_still_valid_json_and_says_it_was_cut)
{
	static char big[4000];
	char *canon;

	memset(big, '"', sizeof(big) - 1);
	run_json(hostile_value, big);
	cr_assert_lt(strlen(out), sizeof(((struct mline *)0)->buf) + 1);
	canon = ember_test_json_canon(out);
	cr_assert_str_eq(canon, "{\"line\":\"ember-snapshot\",\"truncated\":true}\n");
	free(canon);
}
