/*
 * ember-snap compress / decompress / verify / info / dump with lz4 memory and
 * working-set files, run as a program from $EMBER_BUILD (default build/); skipped if
 * the tool has not been built.
 */
#include <stdarg.h>
#include <sys/wait.h>

#include "test_snapfmt_fixture.h"

static char *tmp, *raw, *lz, *tool;
static struct snap_state st;
static uint8_t mem[FX_MEM_SIZE];

static void setup(void)
{
	const char *b = getenv("EMBER_BUILD");
	uint64_t s = 7;

	cr_assert(asprintf(&tool, "%s/ember-snap", b && *b ? b : "build") > 0);
	if (access(tool, X_OK))
		cr_skip_test("%s not built", tool);
	tmp = fx_tmpdir();
	raw = fx_path(tmp, "raw");
	lz = fx_path(tmp, "lz");
	fx_fill_ember_state(&st);
	/* pages 0-15 text, 16-31 random, the rest zero */
	for (size_t i = 0; i < 16 * SNAP_PAGE_SIZE; i++)
		mem[i] = (uint8_t)("ember snapshot "[i % 15]);
	for (size_t i = 16 * SNAP_PAGE_SIZE; i < 32 * SNAP_PAGE_SIZE; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		mem[i] = (uint8_t)s;
	}
	fx_write_snapshot(raw, &st, mem);
}

static void teardown(void)
{
	snap_state_free(&st);
	if (tmp)
		fx_rm_rf(tmp);
	free(tmp);
	free(raw);
	free(lz);
	free(tool);
}

TestSuite(snapfmt_lz4_cli, .init = setup, .fini = teardown);

/* Runs "tool ARGS" (printf-style), returns the exit status; *out has stdout + stderr. */
__attribute__((format(printf, 2, 3)))
static int run(char **out, const char *fmt, ...)
{
	char *args, *cmd;
	size_t cap = 1 << 20, n = 0;
	va_list ap;
	FILE *p;
	int status;

	va_start(ap, fmt);
	cr_assert(vasprintf(&args, fmt, ap) > 0);
	va_end(ap);
	cr_assert(asprintf(&cmd, "'%s' %s 2>&1", tool, args) > 0);
	*out = calloc(1, cap + 1);
	p = popen(cmd, "r");
	cr_assert(p);
	for (size_t r; (r = fread(*out + n, 1, cap - n, p)) > 0;)
		n += r;
	status = pclose(p);
	free(cmd);
	free(args);
	cr_assert(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void compress(const char *opt)
{
	char *out;

	cr_assert_eq(run(&out, "compress %s '%s' '%s'", opt, raw, lz), 0, "%s", out);
	free(out);
}

Test(snapfmt_lz4_cli, compress_prints_the_new_snapshot_summary)
{
	char *out;

	cr_assert_eq(run(&out, "compress '%s' '%s'", raw, lz), 0, "%s", out);
	cr_assert(strstr(out, "memory:    memory.lz4, lz4 encoding, 256.0 KiB logical"), "%s", out);
	cr_assert(strstr(out, "64 KiB chunks, index memory.idx"), "%s", out);
	cr_assert(strstr(out, "chunks:    4: 2 zero, 1 lz4, 1 raw (incompressible)"), "%s", out);
	cr_assert(strstr(out, "id:        0123456789abcdef0123456789abcdef"), "%s", out);
	cr_assert(strstr(out, "format:    1.3"), "%s", out);
	free(out);
}

Test(snapfmt_lz4_cli, chunk_size_option_is_honoured)
{
	char *out;

	compress("--chunk-size=16K");
	cr_assert_eq(run(&out, "info '%s'", lz), 0, "%s", out);
	cr_assert(strstr(out, "16 KiB chunks"), "%s", out);
	cr_assert(strstr(out, "chunks:    16: 8 zero, 4 lz4, 4 raw"), "%s", out);
	free(out);
}

Test(snapfmt_lz4_cli, bad_chunk_size_is_a_usage_error)
{
	char *out;

	cr_assert_eq(run(&out, "compress --chunk-size=12K '%s' '%s'", raw, lz), 2, "%s", out);
	cr_assert(strstr(out, "a power of two from 4096 to 2097152"), "%s", out);
	free(out);
	cr_assert_eq(run(&out, "compress --chunk-size '%s' '%s'", raw, lz), 2, "%s", out);
	free(out);
	cr_assert_eq(access(lz, F_OK), -1);
}

Test(snapfmt_lz4_cli, verify_decodes_every_chunk)
{
	char *out;

	compress("");
	cr_assert_eq(run(&out, "verify '%s'", lz), 0, "%s", out);
	cr_assert_str_eq(out, "ok\n");
	free(out);
}

Test(snapfmt_lz4_cli, verify_reports_a_damaged_chunk)
{
	char *out, *f;
	int fd;
	uint8_t b;

	compress("--chunk-size=16K");
	/* the last byte of the file: the end of the last stored chunk (random, raw) */
	f = fx_path(lz, "memory.lz4");
	fd = open(f, O_RDWR);
	cr_assert_geq(fd, 0);
	off_t end = lseek(fd, 0, SEEK_END);
	cr_assert_eq(pread(fd, &b, 1, end - 1), 1);
	b ^= 1;
	cr_assert_eq(pwrite(fd, &b, 1, end - 1), 1);
	close(fd);
	cr_assert_eq(run(&out, "verify '%s'", lz), 1, "%s", out);
	cr_assert(strstr(out, "error: snapshot"), "%s", out);
	cr_assert(strstr(out, "memory.lz4: chunk 7 (memory 0x1c000+0x4000): CRC32C"), "%s", out);
	free(out);
	free(f);
}

Test(snapfmt_lz4_cli, verify_reports_a_damaged_index)
{
	char *out, *f;
	int fd;

	compress("");
	f = fx_path(lz, "memory.idx");
	fd = open(f, O_WRONLY);
	cr_assert_eq(pwrite(fd, "\x01", 1, 100), 1);
	close(fd);
	cr_assert_eq(run(&out, "verify '%s'", lz), 1, "%s", out);
	cr_assert(strstr(out, "memory.idx: CRC32C mismatch"), "%s", out);
	free(out);
	free(f);
}

Test(snapfmt_lz4_cli, decompress_restores_identical_memory)
{
	char *out, *back = fx_path(tmp, "back"), *f;
	uint8_t *got = malloc(FX_MEM_SIZE);
	int fd;

	compress("--chunk-size=4096");
	cr_assert_eq(run(&out, "decompress '%s' '%s'", lz, back), 0, "%s", out);
	cr_assert(strstr(out, "memory:    memory.raw, raw encoding"), "%s", out);
	free(out);
	f = fx_path(back, "memory.raw");
	fd = open(f, O_RDONLY);
	cr_assert_eq(pread(fd, got, FX_MEM_SIZE, 0), FX_MEM_SIZE);
	close(fd);
	cr_assert_eq(memcmp(got, mem, FX_MEM_SIZE), 0);
	cr_assert_eq(run(&out, "verify '%s'", back), 0, "%s", out);
	free(out);
	free(f);
	free(got);
	free(back);
}

Test(snapfmt_lz4_cli, compress_refuses_an_existing_destination)
{
	char *out;

	cr_assert_eq(mkdir(lz, 0755), 0);
	cr_assert_eq(run(&out, "compress '%s' '%s'", raw, lz), 1, "%s", out);
	cr_assert(strstr(out, "already exists (not replacing it)"), "%s", out);
	free(out);
}

Test(snapfmt_lz4_cli, dump_shows_the_lz4_description)
{
	char *out;

	compress("");
	cr_assert_eq(run(&out, "dump '%s'", lz), 0, "%s", out);
	cr_assert(strstr(out, "\nmemory.encoding = \"lz4\"\n"), "%s", out);
	cr_assert(strstr(out, "\nmemory.chunk_size = 65536\n"), "%s", out);
	cr_assert(strstr(out, "\nmemory.compressed_size = "), "%s", out);
	free(out);
}

Test(snapfmt_lz4_cli, info_shows_the_working_set)
{
	static const uint64_t pages[] = { 5, 6, 7, 20, 30, 3 };
	struct snap_err err = { "" };
	char *out;

	cr_assert_eq(run(&out, "info '%s'", raw), 0, "%s", out);
	cr_assert(strstr(out, "ws:        none\n"), "%s", out);
	free(out);
	cr_assert_eq(snap_ws_write(raw, pages, 6, &err), 0, "%s", err.msg);
	cr_assert_eq(run(&out, "info '%s'", raw), 0, "%s", out);
	cr_assert(strstr(out, "ws:        ws.bin, 6 pages (24.0 KiB), 4 ranges; 3 when merged across gaps <= 8 pages"),
		  "%s", out);
	free(out);
}

Test(snapfmt_lz4_cli, verify_reports_a_damaged_working_set)
{
	static const uint64_t pages[] = { 1, 2 };
	struct snap_err err = { "" };
	char *out, *f = fx_path(raw, "ws.bin");
	int fd;

	cr_assert_eq(snap_ws_write(raw, pages, 2, &err), 0, "%s", err.msg);
	fd = open(f, O_WRONLY);
	cr_assert_eq(pwrite(fd, "\x07", 1, 70), 1);
	close(fd);
	cr_assert_eq(run(&out, "verify '%s'", raw), 1, "%s", out);
	cr_assert(strstr(out, "ws.bin: CRC32C mismatch"), "%s", out);
	free(out);
	cr_assert_eq(run(&out, "info '%s'", raw), 0, "%s", out);
	cr_assert(strstr(out, "ws:        problem:"), "%s", out);
	free(out);
	free(f);
}
