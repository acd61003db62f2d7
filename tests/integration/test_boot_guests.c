/*
 * Booting the test guests with the real ember binary: console output, exit statuses,
 * timing phases, the sandbox's determinism, SMP, signals, timeouts and usage errors.
 * Each test spawns $EMBER_BUILD/ember (build/ or build-san/).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"

/* Generous: a 64 MiB sandbox boots in ~50 ms, but build-san/ and a busy machine are slower. */
#define RUN_MS 20000

static struct proc_result r;
static char tmpdir[PATH_MAX];

static void fini(void)
{
	proc_result_free(&r);
	ember_test_rmtree(tmpdir);
	tmpdir[0] = 0;
}

TestSuite(boot, .fini = fini, .timeout = 60);

static void assert_exit(int want)
{
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, want, "ember exited %d, expected %d; stderr:\n%s", r.status, want,
		     r.err);
}

/* The value of "checksum=<hex>" at the n-th occurrence in stdout (n from 0). */
static uint64_t checksum_at(unsigned n)
{
	const char *s = r.out;
	unsigned long long v;
	char *end;

	for (unsigned i = 0; i <= n; i++) {
		s = strstr(s, "checksum=");
		cr_assert_not_null(s, "stdout has fewer than %u checksum= lines:\n%s", n + 1, r.out);
		if (i < n)
			s++;
	}
	v = strtoull(s + 9, &end, 16);
	cr_assert_eq(end - (s + 9), 16, "checksum is not 16 hex digits:\n%s", r.out);
	return v;
}

static unsigned count(const char *hay, const char *needle)
{
	unsigned n = 0;

	for (const char *s = strstr(hay, needle); s; s = strstr(s + 1, needle))
		n++;
	return n;
}

static uint64_t sandbox_checksum(const char *cmdline)
{
	uint64_t sum;

	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
		       cmdline, NULL);
	assert_exit(0);
	sum = checksum_at(0);
	proc_result_free(&r);
	return sum;
}

/*
 * Tiny guests built with the image builder: `code` at the entry of one PT_LOAD.
 * halting_guest stays alive without using a CPU (hlt with interrupts off).
 */
static const char *code_guest(const char *name, const uint8_t *code, size_t code_len)
{
	struct tb_elf_seg seg = { .paddr = 0x200000, .filesz = 4096, .memsz = 4096,
				  .flags = PF_R | PF_X };
	size_t len;
	uint8_t *img = tb_build_elf(&seg, 1, 0x200000, &len);
	const char *path;

	cr_assert_not_null(img);
	memcpy(img + tb_elf_phdr(img, 0)->p_offset, code, code_len);
	if (!tmpdir[0])
		ember_test_tmpdir(tmpdir, sizeof(tmpdir));
	path = ember_test_write_file(tmpdir, name, img, len);
	free(img);
	return path;
}

static const char *halting_guest(void)
{
	static const uint8_t code[] = { 0xf4, 0xeb, 0xfd }; /* hlt; jmp .-1 */

	return code_guest("halt.elf", code, sizeof(code));
}

/* ud2 with the boot IDT (limit 0): #UD -> #GP -> #DF -> triple fault: a guest crash. */
static const char *triple_fault_guest(void)
{
	static const uint8_t code[] = { 0x0f, 0x0b };

	return code_guest("ud2.elf", code, sizeof(code));
}

/* The deliberate reset: command 0xfe to the i8042 pulses the CPU reset line. */
static const char *i8042_reset_guest(void)
{
	static const uint8_t code[] = { 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd };
	/* mov al,0xfe; out 0x64,al; hlt; jmp .-1 */

	return code_guest("i8042.elf", code, sizeof(code));
}

/* ---- hello ------------------------------------------------------------------------- */

Test(boot, hello_prints_its_line_and_exits_0)
{
	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("hello"), NULL);
	assert_exit(0);
	cr_assert_str_eq(r.out, "hello from ember guest\n");
}

Test(boot, hello_reports_every_phase_in_order)
{
	static const char *const phases[] = { "kvm-ready", "loaded", "first-entry", "ready", "exit" };
	struct proc_timing t[16];
	unsigned n, k = 0;
	int64_t prev = 0;

	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("hello"), "--timings", NULL);
	assert_exit(0);
	n = proc_parse_timings(r.err, t, 16);
	for (unsigned i = 0; i < n && k < ARRAY_SIZE(phases); i++) {
		if (strcmp(t[i].phase, phases[k]))
			continue;
		cr_assert_geq(t[i].us, prev, "phase %s at %lld us is before the previous one (%lld us)",
			      phases[k], (long long)t[i].us, (long long)prev);
		prev = t[i].us;
		k++;
	}
	cr_assert_eq(k, ARRAY_SIZE(phases), "phase %s missing or out of order; stderr:\n%s",
		     k < ARRAY_SIZE(phases) ? phases[k] : "?", r.err);
	cr_assert_gt(proc_timing_us(r.err, "kvm-ready"), 0);
}

Test(boot, hello_without_timings_prints_no_timing_lines)
{
	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("hello"), NULL);
	assert_exit(0);
	cr_assert_null(strstr(r.err, "ember-timing"), "stderr:\n%s", r.err);
}

/* ---- sandbox ----------------------------------------------------------------------- */

Test(boot, sandbox_builds_a_16m_heap_and_prints_its_checksum)
{
	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
		       "heap=16M seed=7", NULL);
	assert_exit(0);
	cr_assert_not_null(strstr(r.out, "heap=16777216 seed=7"), "stdout:\n%s", r.out);
	checksum_at(0);
}

Test(boot, sandbox_builds_a_64m_heap_and_prints_its_checksum)
{
	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
		       "heap=64M seed=7", NULL);
	assert_exit(0);
	cr_assert_not_null(strstr(r.out, "heap=67108864 seed=7"), "stdout:\n%s", r.out);
	checksum_at(0);
}

Test(boot, sandbox_same_seed_gives_the_same_checksum_across_boots)
{
	uint64_t a, b;

	ember_test_require_kvm();
	a = sandbox_checksum("heap=16M seed=42");
	b = sandbox_checksum("heap=16M seed=42");
	cr_assert_eq(a, b, "seed 42 gave %016llx then %016llx", (unsigned long long)a,
		     (unsigned long long)b);
}

Test(boot, sandbox_different_seeds_give_different_checksums)
{
	uint64_t a, b;

	ember_test_require_kvm();
	a = sandbox_checksum("heap=16M seed=42");
	b = sandbox_checksum("heap=16M seed=43");
	cr_assert_neq(a, b, "seeds 42 and 43 both gave %016llx", (unsigned long long)a);
}

Test(boot, sandbox_verify_recomputes_the_same_checksum)
{
	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
		       "heap=16M seed=5", "--guest-cmd", "verify", "--guest-cmd", "verify", NULL);
	assert_exit(0);
	cr_assert_eq(count(r.out, "checksum="), 3, "expected boot + 2 verify checksums:\n%s", r.out);
	cr_assert_eq(checksum_at(1), checksum_at(0), "first verify differs:\n%s", r.out);
	cr_assert_eq(checksum_at(2), checksum_at(0), "second verify differs:\n%s", r.out);
}

Test(boot, sandbox_heap_larger_than_ram_fails_naming_the_heap)
{
	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--mem", "64",
		       "--cmdline", "heap=128M", NULL);
	assert_exit(3);
	cr_assert_not_null(strstr(r.err, "heap=134217728"), "stderr does not name the heap:\n%s",
			   r.err);
	cr_assert_not_null(strstr(r.err, "does not fit in RAM"), "stderr:\n%s", r.err);
}

Test(boot, sandbox_generation_is_0_on_a_cold_boot)
{
	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
		       "heap=4M", "--guest-cmd", "generation", NULL);
	assert_exit(0);
	cr_assert_not_null(strstr(r.out, "generation=0000000000000000\n"), "stdout:\n%s", r.out);
}

Test(boot, sandbox_answers_an_unknown_command_and_carries_on)
{
	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
		       "heap=4M", "--guest-cmd", "frobnicate", "--guest-cmd", "verify", NULL);
	assert_exit(0);
	cr_assert_not_null(strstr(r.out, "unknown command: frobnicate"), "stdout:\n%s", r.out);
	cr_assert_eq(count(r.out, "checksum="), 2, "verify after it did not run:\n%s", r.out);
}

/* ---- smp, fpu, state --------------------------------------------------------------- */

/* Boots the smp guest on n vCPUs and checks it lists apic ids 0..n-1, each once. */
static void check_smp(unsigned n)
{
	char vcpus[16], cmdline[32], line[256];
	unsigned got, seen = 0;
	const char *p;
	char *end;

	snprintf(vcpus, sizeof(vcpus), "%u", n);
	snprintf(cmdline, sizeof(cmdline), "cpus=%u", n);
	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("smp"), "--vcpus", vcpus,
		       "--cmdline", cmdline, NULL);
	assert_exit(0);
	cr_assert_not_null(proc_find_line(r.out, "smp: ", line, sizeof(line)), "stdout:\n%s", r.out);
	cr_assert_eq(sscanf(line, "smp: %u cpus ran:", &got), 1, "line: %s", line);
	cr_assert_eq(got, n, "line: %s", line);
	p = strstr(line, "apic ids");
	cr_assert_not_null(p, "line: %s", line);
	p += strlen("apic ids");
	for (unsigned i = 0; i < n; i++) {
		unsigned long id = strtoul(p, &end, 10);

		cr_assert_neq(end, p, "fewer than %u apic ids: %s", n, line);
		cr_assert_lt(id, n, "apic id %lu out of range: %s", id, line);
		cr_assert_eq(seen & (1u << id), 0, "apic id %lu twice: %s", id, line);
		seen |= 1u << id;
		p = end;
	}
	strtoul(p, &end, 10);
	cr_assert_eq(end, p, "more than %u apic ids: %s", n, line);
}

Test(boot, smp_on_2_vcpus_lists_apic_ids_0_and_1)
{
	ember_test_require_kvm();
	check_smp(2);
}

Test(boot, smp_on_4_vcpus_lists_apic_ids_0_to_3)
{
	ember_test_require_kvm();
	check_smp(4);
}

Test(boot, fpu_guest_keeps_its_registers_and_exits_0)
{
	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("fpu"), NULL);
	assert_exit(0);
}

Test(boot, state_guest_passes_every_stage_and_exits_0)
{
	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("state"), NULL);
	assert_exit(0);
}

/* ---- console ----------------------------------------------------------------------- */

Test(boot, console_file_writes_the_guest_output_there)
{
	char path[PATH_MAX + 32], buf[256] = "";
	FILE *f;
	size_t n;

	ember_test_require_kvm();
	ember_test_tmpdir(tmpdir, sizeof(tmpdir));
	snprintf(path, sizeof(path), "file:%s/console.txt", tmpdir);
	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("hello"), "--console",
		       path, NULL);
	assert_exit(0);
	cr_assert_eq(r.out_len, 0, "stdout should be empty:\n%s", r.out);
	f = fopen(path + 5, "r");
	cr_assert_not_null(f, "%s: %s", path + 5, strerror(errno));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	cr_assert_str_eq(buf, "hello from ember guest\n");
}

Test(boot, console_none_prints_nothing)
{
	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("hello"), "--console",
		       "none", NULL);
	assert_exit(0);
	cr_assert_eq(r.out_len, 0, "stdout should be empty:\n%s", r.out);
}

/* ---- stopping a running guest -------------------------------------------------------- */

/* Waits for `needle` in ember's output, then delay_ms, sends SIGTERM, collects the result. */
static void sigterm_after(struct proc *p, const char *needle, unsigned delay_ms)
{
	cr_assert(proc_wait_output(p, needle, RUN_MS), "ember never printed '%s'", needle);
	usleep(delay_ms * 1000);
	cr_assert_eq(kill(proc_pid(p), SIGTERM), 0);
	cr_assert_eq(proc_finish(p, RUN_MS, &r), 0);
}

static void assert_stopped_by_sigterm(void)
{
	assert_exit(128 + SIGTERM);
	cr_assert_not_null(strstr(r.err, "signal 15"), "stderr names no signal:\n%s", r.err);
}

Test(boot, sigterm_stops_a_halted_guest_with_status_143)
{
	const char *guest;

	ember_test_require_kvm();
	guest = halting_guest();
	/* nothing to observe once it halts: give the vCPU time to get there */
	sigterm_after(ember_test_start("boot", "--kernel", guest, "--timings", NULL),
		      "ember-timing first-entry ", 50);
	assert_stopped_by_sigterm();
}

Test(boot, sigterm_stops_a_spinning_sandbox_with_status_143)
{
	ember_test_require_kvm();
	/* `spin` loops in ring 3, so the signal must get a running vCPU out of KVM_RUN */
	sigterm_after(ember_test_start("boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
				       "heap=4M", "--guest-cmd", "spin", NULL),
		      "spinning\n", 0);
	assert_stopped_by_sigterm();
}

Test(boot, sigint_stops_a_spinning_sandbox_with_status_130)
{
	struct proc *p;

	ember_test_require_kvm();
	p = ember_test_start("boot", "--kernel", ember_test_guest("sandbox"), "--cmdline", "heap=4M",
			     "--guest-cmd", "spin", NULL);
	cr_assert(proc_wait_output(p, "spinning\n", RUN_MS), "ember never printed 'spinning'");
	cr_assert_eq(kill(proc_pid(p), SIGINT), 0);
	cr_assert_eq(proc_finish(p, RUN_MS, &r), 0);
	assert_exit(128 + SIGINT);
	cr_assert_not_null(strstr(r.err, "signal 2"), "stderr names no signal:\n%s", r.err);
}

Test(boot, triple_fault_is_a_guest_crash_with_status_4)
{
	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", triple_fault_guest(), NULL);
	assert_exit(4);
	cr_assert_not_null(strstr(r.err, "error: vCPU 0: triple fault"),
			   "stderr does not say the guest triple-faulted:\n%s", r.err);
}

Test(boot, i8042_reset_is_a_deliberate_reset_with_status_0)
{
	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", i8042_reset_guest(), NULL);
	assert_exit(0);
	cr_assert_null(strstr(r.err, "error"), "a reset is not an error:\n%s", r.err);
}

Test(boot, kernel_that_is_a_fifo_is_refused_at_once)
{
	char fifo[PATH_MAX + 16];

	ember_test_tmpdir(tmpdir, sizeof(tmpdir));
	snprintf(fifo, sizeof(fifo), "%s/kernel.fifo", tmpdir);
	cr_assert_eq(mkfifo(fifo, 0600), 0);
	/* before the fix, open(2) waited for a writer until this timeout killed ember */
	ember_test_run(&r, 5000, "boot", "--kernel", fifo, NULL);
	assert_exit(1);
	cr_assert_not_null(strstr(r.err, "not a regular file (fifo)"), "stderr:\n%s", r.err);
	cr_assert_not_null(strstr(r.err, fifo), "the path is not named:\n%s", r.err);
}

Test(boot, timeout_stops_a_halted_guest_with_status_124)
{
	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", halting_guest(), "--timeout", "0.3", NULL);
	assert_exit(124);
	cr_assert_not_null(strstr(r.err, "timeout"), "stderr:\n%s", r.err);
}

Test(boot, timeout_stops_a_spinning_sandbox_with_status_124)
{
	ember_test_require_kvm();
	ember_test_run(&r, RUN_MS, "boot", "--kernel", ember_test_guest("sandbox"), "--cmdline",
		       "heap=4M", "--guest-cmd", "spin", "--timeout", "0.3", NULL);
	assert_exit(124);
	cr_assert_not_null(strstr(r.out, "spinning"), "the guest never spun:\n%s", r.out);
	cr_assert_not_null(strstr(r.err, "timeout"), "stderr:\n%s", r.err);
}

/* ---- usage errors (the unit tests in test_cli cover the rest) --------------------------- */

static void assert_usage_error(const char *flag)
{
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 2, "ember exited %d, expected 2; stderr:\n%s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, flag), "stderr does not name %s:\n%s", flag, r.err);
}

Test(boot, zero_vcpus_is_a_usage_error_naming_the_flag)
{
	ember_test_run(&r, RUN_MS, "boot", "--kernel", "x.elf", "--vcpus", "0", NULL);
	assert_usage_error("--vcpus");
}

Test(boot, unknown_flag_is_a_usage_error_naming_it)
{
	ember_test_run(&r, RUN_MS, "boot", "--kernel", "x.elf", "--frobnicate", NULL);
	assert_usage_error("--frobnicate");
}

Test(boot, boot_without_kernel_is_a_usage_error_naming_the_flag)
{
	ember_test_run(&r, RUN_MS, "boot", "--mem", "64", NULL);
	assert_usage_error("--kernel");
}
