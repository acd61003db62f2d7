/*
 * json_f64 (snapshot-format/json.c): the bench's measurements as JSON numbers with a
 * fixed number of decimals; NaN and infinities, which JSON cannot hold, as null.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "snapfmt.h"

/* One object {"v": v} written with json_f64, as text (the caller frees). */
static char *one(double v, int decimals)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct json_w w;

	cr_assert(f);
	json_begin(&w, f);
	json_obj(&w, NULL);
	json_f64(&w, "v", v, decimals);
	json_obj_end(&w);
	cr_assert_eq(fclose(f), 0);
	return buf;
}

Test(json_f64, writes_the_asked_decimals)
{
	char *a = one(1234.56789, 1), *b = one(2.5, 3), *c = one(7.6, 0);

	cr_assert_str_eq(a, "{\"v\":1234.6}\n");
	cr_assert_str_eq(b, "{\"v\":2.500}\n");
	cr_assert_str_eq(c, "{\"v\":8}\n");
	free(a);
	free(b);
	free(c);
}

Test(json_f64, nan_and_infinity_are_null)
{
	char *a = one(NAN, 2), *b = one(INFINITY, 2), *c = one(-INFINITY, 0);

	cr_assert_str_eq(a, "{\"v\":null}\n");
	cr_assert_str_eq(b, "{\"v\":null}\n");
	cr_assert_str_eq(c, "{\"v\":null}\n");
	free(a);
	free(b);
	free(c);
}
