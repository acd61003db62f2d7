/*
 * guest-agent/mkcpio, the Linux kit's initramfs writer: what it writes is what the
 * kernel unpacks (checked with the tests' newc parser), and bad specs fail naming what
 * is wrong, leaving no archive behind.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

static char tmp[4096];

static void init(void)
{
	ember_test_tmpdir(tmp, sizeof(tmp));
}

static void fini(void)
{
	ember_test_rmtree(tmp);
}

TestSuite(mkcpio, .init = init, .fini = fini, .timeout = 30);

static void mkcpio(const char *out, const char *spec, struct proc_result *r)
{
	char *argv[] = { (char *)ember_test_path("tools/mkcpio"), (char *)out, NULL };

	cr_assert_eq(access(argv[0], X_OK), 0, "%s is not built: run make %s", argv[0], argv[0]);
	cr_assert_eq(proc_run_input(argv, spec, strlen(spec), 10000, r), 0);
}

Test(mkcpio, writes_every_kind_of_entry_as_the_kernel_reads_it)
{
	static const char content[] = "#!/bin/sh\necho hi\n"; /* 19 bytes: padding needed */
	char out[4200], spec[8192];
	const char *src = ember_test_write_file(tmp, "src", content, sizeof(content) - 1);
	const struct cpio_entry *x;
	struct cpio_entry e[8];
	struct proc_result r;
	uint8_t *a;
	size_t len;
	unsigned n;

	snprintf(out, sizeof(out), "%s/out.cpio", tmp);
	snprintf(spec, sizeof(spec), "# a comment\n\ndir /dev 0755\nnod /dev/console 0600 c 5 1\n"
		 "file /init %s 0755\nslink /bin/sh /init 0777\ndir /tmp 1777\n", src);
	mkcpio(out, spec, &r);
	cr_assert_eq(r.status, 0, "mkcpio exited %d: %s", r.status, r.err);
	proc_result_free(&r);
	a = snapt_read_file(out, &len);
	cr_assert_eq(len % 4, 0, "newc entries are 4-byte aligned");
	n = cpio_parse(a, len, e, 8);
	cr_assert_eq(n, 5);
	cr_assert_str_eq(e[0].name, "dev", "names are stored without the leading slash");
	cr_assert_eq(e[0].mode, S_IFDIR | 0755);
	x = cpio_find(e, n, "dev/console");
	cr_assert(x && x->mode == (S_IFCHR | 0600) && x->rmajor == 5 && x->rminor == 1);
	x = cpio_find(e, n, "init");
	cr_assert(x && x->mode == (S_IFREG | 0755));
	cr_assert_eq(x->size, sizeof(content) - 1);
	cr_assert_eq(memcmp(x->data, content, x->size), 0);
	x = cpio_find(e, n, "bin/sh");
	cr_assert(x && x->mode == (S_IFLNK | 0777) && x->size == 5 && !memcmp(x->data, "/init", 5));
	x = cpio_find(e, n, "tmp");
	cr_assert(x && x->mode == (S_IFDIR | 01777));
	free(a);
}

Test(mkcpio, same_spec_gives_the_same_bytes)
{
	char o1[4200], o2[4200], spec[8192];
	const char *src = ember_test_write_file(tmp, "src", "abc", 3);
	struct proc_result r;

	snprintf(o1, sizeof(o1), "%s/1.cpio", tmp);
	snprintf(o2, sizeof(o2), "%s/2.cpio", tmp);
	snprintf(spec, sizeof(spec), "file /a %s 0644\n", src);
	mkcpio(o1, spec, &r);
	proc_result_free(&r);
	sleep(1); /* a time stamp in the archive would differ now */
	mkcpio(o2, spec, &r);
	proc_result_free(&r);
	cr_assert(snapt_files_equal(o1, o2), "the archive is not reproducible");
}

Test(mkcpio, missing_source_file_fails_naming_it_and_leaves_no_archive)
{
	char out[4200];
	struct proc_result r;

	snprintf(out, sizeof(out), "%s/out.cpio", tmp);
	mkcpio(out, "dir /dev 0755\nfile /init /nonexistent/agent 0755\n", &r);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, "line 2: cannot read /nonexistent/agent"), "%s", r.err);
	cr_assert_neq(access(out, F_OK), 0, "a partial archive was left behind");
	proc_result_free(&r);
}

Test(mkcpio, unparseable_line_fails_naming_its_number)
{
	char out[4200];
	struct proc_result r;

	snprintf(out, sizeof(out), "%s/out.cpio", tmp);
	mkcpio(out, "dir /dev 0755\npipe /x 0644\n", &r);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, "line 2: cannot parse: pipe /x 0644"), "%s", r.err);
	cr_assert_neq(access(out, F_OK), 0);
	proc_result_free(&r);
}

Test(mkcpio, without_an_output_argument_is_a_usage_error)
{
	char *argv[] = { (char *)ember_test_path("tools/mkcpio"), NULL };
	struct proc_result r;

	cr_assert_eq(proc_run(argv, 10000, &r), 0);
	cr_assert_eq(r.status, 2);
	cr_assert(strstr(r.err, "usage: mkcpio OUT < SPEC"), "%s", r.err);
	proc_result_free(&r);
}
