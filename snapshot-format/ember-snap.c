/*
 * ember-snap: inspect, verify, dump, merge, compress and decompress ember snapshots
 * without KVM.
 * Exit status: 0 success, 1 the snapshot (or an I/O operation) failed, 2 usage error,
 * 128+N: SIGINT/SIGTERM/SIGHUP N while writing (the temporary directory removed).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "snapfmt.h"
/* The devices' own invariants: the tool checks sections exactly as ember restore does
 * (these objects are pure C; the library itself stays free of ember's sources). */
#include "arch/x86_64/x86.h"
#include "dev/dev.h"

#ifndef EMBER_VERSION
#define EMBER_VERSION "0.0.0-dev"
#endif

static const char usage_text[] =
	"usage: ember-snap COMMAND ARGS...\n"
	"\n"
	"  info [--json] DIR      summary: format, ids, CPU, vCPUs, RAM layout, memory file,\n"
	"                         lz4 chunks, working set, devices\n"
	"  verify [--json] [--deep] DIR\n"
	"                         checksum + validation + memory file checks (lz4: every chunk\n"
	"                         decoded and CRC-checked; the anchor pages that tie the memory\n"
	"                         file to the state) + working-set file; --deep: also every\n"
	"                         memory block against its recorded digest; prints \"ok\"\n"
	"                         (exit 0) or the error (exit 1)\n"
	"  dump DIR               the whole state as \"path = value\" lines (stable, diffable)\n"
	"  merge BASE DIFF OUT    write a full raw snapshot OUT: BASE memory with DIFF's pages\n"
	"                         applied, DIFF's state (DIFF's parent must be BASE)\n"
	"  compress [--chunk-size=BYTES] SRC DST\n"
	"                         write SRC with lz4-compressed memory as the new snapshot DST\n"
	"                         (same state and id; default chunk size %u KiB)\n"
	"  decompress SRC DST     write SRC with raw memory as the new snapshot DST (same state)\n"
	"  --help                 this text\n"
	"\n"
	"--json: one JSON object on stdout instead (README \"Output for machines\"); verify's\n"
	"has \"ok\" and, when false, \"error\"\n"
	"\n"
	"Exit status: 0 ok, 1 invalid snapshot or I/O error, 2 usage error, 128+N stopped by\n"
	"signal N (merge, compress and decompress remove their temporary directory first).\n";

#define WS_GAP 8 /* pages: info's second range count merges across gaps this small */

__attribute__((format(printf, 1, 2)))
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "ember-snap: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'ember-snap --help'.\n");
	return 2;
}

static void print_size(FILE *out, uint64_t bytes)
{
	if (bytes >= (1ull << 30) && bytes % (1ull << 30) == 0)
		fprintf(out, "%" PRIu64 " GiB", bytes >> 30);
	else if (bytes >= (1ull << 20))
		fprintf(out, "%.1f MiB", (double)bytes / (1 << 20));
	else if (bytes >= 1024)
		fprintf(out, "%.1f KiB", (double)bytes / 1024);
	else
		fprintf(out, "%" PRIu64 " B", bytes);
}

static int info_lz4(const char *dir, const struct snap_state *st)
{
	struct snap_err err = { "" };
	struct snap_lz4_index *ix;

	printf("lz4:       ");
	print_size(stdout, st->memory.compressed_size);
	printf(" compressed (%.1f%% of logical), %u KiB chunks, index %s\n",
	       100.0 * (double)st->memory.compressed_size / (double)st->memory.size,
	       st->memory.chunk_size >> 10, st->memory.index_file);
	if (snap_lz4_index_load(dir, st, &ix, &err)) {
		printf("           index problem: %s\n", err.msg);
		return -1;
	}
	printf("chunks:    %" PRIu64 ": %" PRIu64 " zero, %" PRIu64 " lz4, %" PRIu64 " raw (incompressible)\n",
	       ix->nr_chunks, ix->nr_zero, ix->nr_lz4, ix->nr_raw);
	snap_lz4_index_free(ix);
	return 0;
}

/* The working set is optional: absent is not a problem, a damaged one is shown. */
static void info_ws(const char *dir, const struct snap_state *st)
{
	struct snap_err err = { "" };
	struct snap_range *r = NULL;
	uint64_t *pages = NULL, n = 0, nr0 = 0, nrg = 0;
	int ret;

	ret = snap_ws_load(dir, st, &pages, &n, &err);
	if (ret == -ENOENT) {
		printf("ws:        none\n");
		return;
	}
	if (ret) {
		printf("ws:        problem: %s\n", err.msg);
		return;
	}
	if (!snap_ws_ranges(pages, n, 0, &r, &nr0, &err)) {
		free(r);
		r = NULL;
		snap_ws_ranges(pages, n, WS_GAP, &r, &nrg, &err);
	}
	printf("ws:        %s, %" PRIu64 " pages (", SNAP_WS_FILE, n);
	print_size(stdout, n * SNAP_PAGE_SIZE);
	printf("), %" PRIu64 " range%s; %" PRIu64 " when merged across gaps <= %u pages\n", nr0,
	       nr0 == 1 ? "" : "s", nrg, WS_GAP);
	free(r);
	free(pages);
}

/* info --json: the same facts as one object, sizes in bytes, addresses as numbers. */
static int cmd_info_json(const char *dir)
{
	static const char *const kinds[] = { "full", "diff" };
	struct snap_err err = { "" };
	struct snap_state st;
	struct snap_mem_info mi;
	struct snap_lz4_index *ix;
	uint64_t *pages = NULL, n = 0;
	struct json_w w;
	int fd, ret, wret;

	if (snap_state_load(dir, &st, &err)) {
		json_begin(&w, stdout);
		json_obj(&w, NULL);
		json_bool(&w, "ok", false);
		json_str(&w, "snapshot", dir);
		json_str(&w, "error", err.msg);
		json_obj_end(&w);
		return 1;
	}
	json_begin(&w, stdout);
	json_obj(&w, NULL);
	json_str(&w, "snapshot", dir);
	json_u64(&w, "format_major", st.header.major);
	json_u64(&w, "format_minor", st.header.minor);
	json_str(&w, "ember_version", st.header.ember_version);
	json_u64(&w, "created", st.header.created);
	json_str(&w, "id", st.header.id);
	json_str(&w, "kind", kinds[st.memory.kind]);
	if (st.header.parent[0])
		json_str(&w, "parent", st.header.parent);
	json_obj(&w, "cpu");
	json_str(&w, "arch", st.header.arch);
	json_str(&w, "vendor", st.header.cpu.vendor);
	json_u64(&w, "family", st.header.cpu.family);
	json_u64(&w, "model", st.header.cpu.model);
	json_u64(&w, "stepping", st.header.cpu.stepping);
	json_obj_end(&w);
	json_u64(&w, "vcpus", st.nr_vcpus);
	json_u64(&w, "tsc_khz", st.vm.tsc_khz);
	json_arr(&w, "regions");
	for (uint32_t i = 0; i < st.vm.nr_regions; i++) {
		json_obj(&w, NULL);
		json_u64(&w, "gpa", st.vm.regions[i].gpa);
		json_u64(&w, "size", st.vm.regions[i].size);
		json_u64(&w, "file_offset", st.vm.regions[i].file_offset);
		json_obj_end(&w);
	}
	json_arr_end(&w);
	json_obj(&w, "memory");
	json_str(&w, "file", st.memory.file);
	json_str(&w, "encoding", st.memory.encoding == SNAP_ENC_RAW ? "raw" : "lz4");
	json_u64(&w, "size", st.memory.size);
	ret = snap_mem_open(dir, &st, &fd, &mi, &err);
	if (ret) {
		json_str(&w, "error", err.msg);
	} else {
		close(fd);
		json_u64(&w, "allocated", mi.allocated);
	}
	if (st.memory.encoding == SNAP_ENC_LZ4) {
		json_u64(&w, "compressed_size", st.memory.compressed_size);
		json_u64(&w, "chunk_size", st.memory.chunk_size);
		json_str(&w, "index_file", st.memory.index_file);
		if (!ret && snap_lz4_index_load(dir, &st, &ix, &err)) {
			json_str(&w, "index_error", err.msg);
			ret = -1;
		} else if (!ret) {
			json_u64(&w, "chunks", ix->nr_chunks);
			json_u64(&w, "chunks_zero", ix->nr_zero);
			json_u64(&w, "chunks_lz4", ix->nr_lz4);
			json_u64(&w, "chunks_raw", ix->nr_raw);
			snap_lz4_index_free(ix);
		}
	}
	json_obj_end(&w);
	wret = snap_ws_load(dir, &st, &pages, &n, &err);
	if (wret == -ENOENT) {
		json_null(&w, "ws");
	} else {
		json_obj(&w, "ws");
		json_str(&w, "file", SNAP_WS_FILE);
		if (wret)
			json_str(&w, "error", err.msg);
		else
			json_u64(&w, "pages", n);
		json_obj_end(&w);
	}
	free(pages);
	if (st.memory.kind == SNAP_MEM_DIFF) {
		uint64_t dp = 0;

		for (uint32_t i = 0; i < st.memory.nr_ranges; i++)
			dp += st.memory.ranges[i].count;
		json_obj(&w, "diff");
		json_u64(&w, "ranges", st.memory.nr_ranges);
		json_u64(&w, "pages", dp);
		json_obj_end(&w);
	}
	json_arr(&w, "devices");
	for (uint32_t i = 0; i < st.nr_devices; i++) {
		json_obj(&w, NULL);
		json_str(&w, "name", st.devices[i].name);
		json_u64(&w, "version", st.devices[i].version);
		json_u64(&w, "fields", st.devices[i].nr_fields);
		json_obj_end(&w);
	}
	json_arr_end(&w);
	json_obj_end(&w);
	snap_state_free(&st);
	return ret ? 1 : 0;
}

static int cmd_info(const char *dir)
{
	static const char *const kinds[] = { "full", "diff" };
	struct snap_err err = { "" };
	struct snap_state st;
	struct snap_mem_info mi;
	char when[64] = "?";
	time_t t;
	struct tm tm;
	int fd, ret;

	ret = snap_state_load(dir, &st, &err);
	if (ret) {
		fprintf(stderr, "ember-snap: info: %s\n", err.msg);
		return 1;
	}
	t = (time_t)st.header.created;
	if (gmtime_r(&t, &tm))
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
	printf("snapshot:  %s\n", dir);
	printf("format:    %u.%u (written by ember %s)\n", st.header.major, st.header.minor,
	       st.header.ember_version);
	printf("created:   %s (%" PRIu64 ")\n", when, st.header.created);
	printf("id:        %s\n", st.header.id);
	printf("kind:      %s%s%s\n", kinds[st.memory.kind],
	       st.header.parent[0] ? ", parent " : "", st.header.parent);
	printf("cpu:       %s %s family %u model %u stepping %u\n", st.header.arch,
	       st.header.cpu.vendor, st.header.cpu.family, st.header.cpu.model, st.header.cpu.stepping);
	printf("vcpus:     %u\n", st.nr_vcpus);
	printf("tsc:       %u kHz\n", st.vm.tsc_khz);
	printf("ram:       %u region%s\n", st.vm.nr_regions, st.vm.nr_regions == 1 ? "" : "s");
	for (uint32_t i = 0; i < st.vm.nr_regions; i++) {
		const struct snap_region *r = &st.vm.regions[i];
		printf("  [%u] gpa 0x%09" PRIx64 "-0x%09" PRIx64 " (", i, r->gpa, r->gpa + r->size - 1);
		print_size(stdout, r->size);
		printf(") at file offset 0x%" PRIx64 "\n", r->file_offset);
	}
	printf("memory:    %s, %s encoding, ", st.memory.file, st.memory.encoding == SNAP_ENC_RAW ? "raw" : "lz4");
	print_size(stdout, st.memory.size);
	printf(" logical");
	ret = snap_mem_open(dir, &st, &fd, &mi, &err);
	if (ret) {
		printf("\n           memory file problem: %s\n", err.msg);
	} else {
		close(fd);
		printf(", ");
		print_size(stdout, mi.allocated);
		printf(" on disk\n");
	}
	if (!ret && st.memory.encoding == SNAP_ENC_LZ4)
		ret = info_lz4(dir, &st);
	info_ws(dir, &st);
	if (st.memory.kind == SNAP_MEM_DIFF) {
		uint64_t pages = 0;
		for (uint32_t i = 0; i < st.memory.nr_ranges; i++)
			pages += st.memory.ranges[i].count;
		printf("diff:      %u range%s, %" PRIu64 " pages\n", st.memory.nr_ranges,
		       st.memory.nr_ranges == 1 ? "" : "s", pages);
	}
	printf("devices:   %u\n", st.nr_devices);
	for (uint32_t i = 0; i < st.nr_devices; i++)
		printf("  %-20s version %u, %u field%s\n", st.devices[i].name, st.devices[i].version,
		       st.devices[i].nr_fields, st.devices[i].nr_fields == 1 ? "" : "s");
	snap_state_free(&st);
	return ret ? 1 : 0;
}

static int cmd_verify(const char *dir, bool json, bool deep)
{
	struct snap_err err = { "" };
	struct snap_dir d;
	char msg[sizeof(err.msg) + 512] = "";
	uint64_t bad, *pages = NULL, n = 0;
	int ret;

	if (snap_dir_open(dir, &d, &err)) {
		snprintf(msg, sizeof(msg), "%s", err.msg);
		goto print;
	}
	ret = snap_dir_verify_memory(&d, &bad, &err);
	if (ret)
		snprintf(msg, sizeof(msg), "snapshot %s: %s: %s", dir, d.state.memory.file, err.msg);
	if (!ret) {
		ret = snap_dir_check_anchors(&d, dir, &err);
		if (ret)
			snprintf(msg, sizeof(msg), "%s", err.msg);
	}
	if (!ret && deep && !d.state.memory.digest_block && d.state.memory.kind == SNAP_MEM_FULL) {
		ret = -ENODATA;
		snprintf(msg, sizeof(msg), "snapshot %s: --deep: the state records no memory digests "
			 "(written by an ember older than format 1.3)", dir);
	} else if (!ret && deep) {
		ret = snap_dir_verify_digests(&d, &bad, &err);
		if (ret)
			snprintf(msg, sizeof(msg), "snapshot %s: %s: %s", dir, d.state.memory.file, err.msg);
	}
	if (!ret) {
		struct errbuf eb = { "" };

		ret = devices_check_state(&d.state, &eb);
		if (!ret)
			ret = x86_check_snapshot_nested(&d.state, &eb);
		if (ret)
			snprintf(msg, sizeof(msg), "snapshot %s: %s", dir, eb.msg);
	}
	if (!ret) {
		ret = snap_ws_load(dir, &d.state, &pages, &n, &err);
		if (ret == -ENOENT)
			ret = 0;
		else if (ret)
			snprintf(msg, sizeof(msg), "%s", err.msg);
		free(pages);
	}
	snap_dir_close(&d);
print:
	if (json) {
		struct json_w w;

		json_begin(&w, stdout);
		json_obj(&w, NULL);
		json_bool(&w, "ok", !msg[0]);
		json_str(&w, "snapshot", dir);
		if (msg[0])
			json_str(&w, "error", msg);
		json_obj_end(&w);
	} else if (msg[0]) {
		printf("error: %s\n", msg);
	} else {
		printf("ok\n");
	}
	return msg[0] ? 1 : 0;
}

static int cmd_dump(const char *dir)
{
	struct snap_err err = { "" };
	struct snap_state st;
	int ret;

	if (snap_state_load(dir, &st, &err)) {
		fprintf(stderr, "ember-snap: dump: %s\n", err.msg);
		return 1;
	}
	ret = snap_dump(stdout, &st);
	snap_state_free(&st);
	if (ret || fflush(stdout)) {
		fprintf(stderr, "ember-snap: dump: write error\n");
		return 1;
	}
	return 0;
}

static int cmd_merge(const char *base, const char *diff, const char *out)
{
	struct snap_err err = { "" };
	struct snap_write_stats ws;

	if (snap_merge(base, diff, out, &ws, &err)) {
		fprintf(stderr, "ember-snap: %s\n", err.msg);
		return 1;
	}
	printf("merged %s + %s -> %s: %" PRIu64 " pages written, %" PRIu64 " zero pages left as holes\n",
	       base, diff, out, ws.pages_written, ws.zero_pages_skipped);
	return 0;
}

static int cmd_convert(bool compress, uint32_t chunk_size, const char *src, const char *dst)
{
	struct snap_err err = { "" };

	if (compress ? snap_compress(src, dst, chunk_size, &err) : snap_decompress(src, dst, &err)) {
		fprintf(stderr, "ember-snap: %s: %s\n", compress ? "compress" : "decompress", err.msg);
		return 1;
	}
	return cmd_info(dst);
}

/* --chunk-size=BYTES (also with a K/M suffix), before compress's operands. */
static int parse_chunk_size(const char *arg, uint32_t *out)
{
	const char *v = arg + strlen("--chunk-size=");
	uint64_t n;

	if (strncmp(arg, "--chunk-size=", strlen("--chunk-size=")) || snap_parse_size(v, 1, &n) ||
	    n < SNAP_LZ4_CHUNK_MIN || n > SNAP_LZ4_CHUNK_MAX || (n & (n - 1)))
		return -1;
	*out = (uint32_t)n;
	return 0;
}

/* SIGINT/SIGTERM while writing: the temp directory goes, then exit 128 + signal. */
static void on_signal(int sig)
{
	snap_writer_remove_in_flight();
	_exit(128 + sig);
}

static void report_stale(const char *path, int pid, int ret, void *arg)
{
	(void)arg;
	if (ret)
		fprintf(stderr, "ember-snap: stale temporary directory %s (left by process %d, "
			"which is gone) kept: %s\n", path, pid,
			ret == -ENOTEMPTY ? "it holds more than a snapshot's files" : strerror(-ret));
	else
		fprintf(stderr, "ember-snap: removed stale temporary directory %s (left by process "
			"%d, which is gone)\n", path, pid);
}

/* The commands that write DST: an interrupted run leaves no temp directory, and one a
 * killed run left is removed (snap_stale.c). */
static void prepare_writer(const char *dst)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	snap_writer_clean_stale(dst, report_stale, NULL);
}

int main(int argc, char **argv)
{
	static const struct { const char *name; int nargs; const char *args; } cmds[] = {
		{ "info", 1, "DIR" }, { "verify", 1, "DIR" }, { "dump", 1, "DIR" },
		{ "merge", 3, "BASE DIFF OUT" }, { "compress", 2, "SRC DST" }, { "decompress", 2, "SRC DST" },
	};
	uint32_t chunk_size = 0;
	bool json = false, deep = false;
	const char *cmd;
	unsigned i;

	if (argc < 2)
		return usage_error("%s", "missing COMMAND");
	cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		printf(usage_text, SNAP_LZ4_CHUNK_DEFAULT >> 10);
		return 0;
	}
	if (!strcmp(cmd, "--version")) {
		printf("ember-snap %s (snapshot format %d.%d)\n", EMBER_VERSION, SNAP_FORMAT_MAJOR,
		       SNAP_FORMAT_MINOR);
		return 0;
	}
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(cmd, cmds[i].name))
			break;
	if (i == sizeof(cmds) / sizeof(cmds[0]))
		return usage_error("unknown command '%s'", cmd);
	if (!strcmp(cmd, "compress") && argc > 2 && !strncmp(argv[2], "--chunk-size", 12)) {
		if (parse_chunk_size(argv[2], &chunk_size))
			return usage_error("%s: expected --chunk-size=BYTES, a power of two from %u to %u "
					   "(K and M suffixes allowed)", argv[2], SNAP_LZ4_CHUNK_MIN,
					   SNAP_LZ4_CHUNK_MAX);
		argv++;
		argc--;
	}
	for (int a = 2; a < argc; a++) {
		if ((!strcmp(argv[a], "--json") && i <= 1) || (!strcmp(argv[a], "--deep") && i == 1)) {
			json |= argv[a][2] == 'j';
			deep |= argv[a][2] == 'd';
			memmove(&argv[a], &argv[a + 1], (size_t)(argc - a) * sizeof(*argv));
			argc--;
			a--;
		} else if (argv[a][0] == '-') {
			return usage_error("unknown option '%s'%s", argv[a],
					   strcmp(argv[a], "--json") ? "" :
					   " (--json applies to info and verify)");
		}
	}
	if (argc - 2 != cmds[i].nargs)
		return usage_error("%s takes %s (%d argument%s given)", cmd, cmds[i].args, argc - 2,
				   argc - 2 == 1 ? "" : "s");
	switch (i) {
	case 0: return json ? cmd_info_json(argv[2]) : cmd_info(argv[2]);
	case 1: return cmd_verify(argv[2], json, deep);
	case 2: return cmd_dump(argv[2]);
	case 3:
		prepare_writer(argv[4]);
		return cmd_merge(argv[2], argv[3], argv[4]);
	default:
		prepare_writer(argv[3]);
		return cmd_convert(i == 4, chunk_size, argv[2], argv[3]);
	}
}
