/* --json output under test: validated by python3's json module (testlib.h). */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testlib.h"

/* Python's json module as the reference parser: strict UTF-8, one value, nothing after
 * it; the canonical form sorts keys and escapes everything outside ASCII. */
static const char json_check_py[] =
	"import json, sys\n"
	"text = sys.stdin.buffer.read().decode('utf-8')\n"
	"v = json.loads(text)\n"
	"if text.count('\\n') != 1 or not text.endswith('\\n'):\n"
	"    sys.exit('not one line: %r' % text)\n"
	"print(json.dumps(v, sort_keys=True, separators=(',', ':')))\n";

char *ember_test_json_canon(const char *text)
{
	static const char *const pythons[] = { "/usr/bin/python3", "/usr/local/bin/python3" };
	const char *py = NULL;
	struct proc_result r;
	char *out;

	for (size_t i = 0; i < sizeof(pythons) / sizeof(pythons[0]) && !py; i++)
		if (!access(pythons[i], X_OK))
			py = pythons[i];
	if (!py) {
		cr_log_info("SKIP: python3 not found: its json module validates --json output");
		cr_skip_test("python3 not found: cannot validate JSON");
	}
	{
		char *argv[] = { (char *)py, "-c", (char *)json_check_py, NULL };

		cr_assert_eq(proc_run_input(argv, text, strlen(text), 20000, &r), 0);
	}
	cr_assert_eq(r.status, 0, "not valid JSON (%s):\n%s", r.err, text);
	out = strdup(r.out);
	cr_assert(out);
	proc_result_free(&r);
	return out;
}
