/*
 * Damaged state files: every truncation point and a few hundred random byte flips of a
 * real golden snapshot's state file. In-process (libsnapfmt's decoder and vm_restore)
 * for every case, because that is fast and runs under ASan in `make SAN=1`; through
 * `ember restore` and `ember-snap verify` for a sample. A damaged file must be refused
 * with a message; a flip that survives the CRC (recomputed on purpose) may decode, but
 * must never crash anything, and what decodes must be a state that encodes again.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testlib.h"
#include "snapfmt.h"
#include "dev/dev.h"

#define WAIT_MS 20000
#define FLIPS 300
#define CLI_SAMPLES 12

static char tmp[PATH_MAX], golden[PATH_MAX];
static uint8_t *state;
static size_t state_len;

static void init(void)
{
	char path[PATH_MAX];

	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(golden, tmp, "golden");
	snapt_golden(golden, "heap=1M ws=64K", 8);
	snapt_join(path, golden, "%s", SNAP_STATE_FILE);
	state = snapt_read_file(path, &state_len);
	cr_assert_gt(state_len, 1000, "a real state file is several KiB");
}

static void fini(void)
{
	free(state);
	state = NULL;
	ember_test_rmtree(tmp);
	tmp[0] = 0;
}

TestSuite(snapshot_corrupt, .init = init, .fini = fini, .timeout = 120);

/* Deterministic, so a failure names a case that can be replayed. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void expect_decode_refused(const uint8_t *file, size_t len, const char *what)
{
	struct snap_state st;
	struct snap_err se = { "" };
	int r = snap_state_decode(file, len, &st, &se);

	if (r == 0)
		snap_state_free(&st);
	cr_assert_lt(r, 0, "%s: decoded", what);
	cr_assert_neq(se.msg[0], 0, "%s: refused without a message", what);
}

/* A snapshot directory holding `file` as its state and the golden memory file. */
static void make_dir(const char *dir, const uint8_t *file, size_t len)
{
	char path[PATH_MAX];

	snapt_copy_dir(golden, dir, true);
	snapt_join(path, dir, "%s", SNAP_STATE_FILE);
	cr_assert_eq(unlink(path), 0);
	ember_test_write_file(dir, SNAP_STATE_FILE, file, len);
}

/* Every way the library, the VMM and the tool must refuse one damaged directory. */
static void expect_all_refuse(const char *dir, const char *what)
{
	struct vm_config cfg = { .console = CONSOLE_NONE };
	struct errbuf eb = { "" };
	struct proc_result r;
	struct vm *vm = (struct vm *)&cfg; /* vm_restore must set it to NULL */

	cr_assert_lt(vm_restore(&vm, &cfg, dir, &eb), 0, "%s: vm_restore accepted it", what);
	cr_assert_null(vm, "%s: vm_restore failed but returned a VM", what);
	cr_assert_neq(eb.msg[0], 0, "%s: vm_restore gave no message", what);

	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", dir, "--guest-cmd", "exit", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "%s: ember restore exited %d:\n%s", what, r.status, r.err);
	cr_assert(strstr(r.err, "ember: error: snapshot"), "%s: unclear error:\n%s", what, r.err);
	proc_result_free(&r);

	snapt_tool(&r, WAIT_MS, "verify", dir, NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "%s: ember-snap verify exited %d:\n%s", what, r.status, r.out);
	cr_assert(!strncmp(r.out, "error: ", 7), "%s: ember-snap verify printed:\n%s", what, r.out);
	proc_result_free(&r);
}

/* ---- truncation ---------------------------------------------------------------------- */

Test(snapshot_corrupt, every_truncation_of_the_state_file_is_refused)
{
	char what[96];

	for (size_t len = 0; len < state_len; len++) {
		snprintf(what, sizeof(what), "state file cut to %zu of %zu bytes", len, state_len);
		expect_decode_refused(state, len, what);
	}
}

/* The preamble rewritten to match: the msgpack decoder itself sees every cut. */
Test(snapshot_corrupt, every_truncated_body_with_a_matching_preamble_is_refused)
{
	uint8_t *file = malloc(state_len);
	char what[96];

	cr_assert_not_null(file);
	for (size_t len = SNAP_PREAMBLE_SIZE; len < state_len; len++) {
		memcpy(file, state, len);
		snapt_fix_preamble(file, len);
		snprintf(what, sizeof(what), "body cut to %zu of %zu bytes, CRC fixed",
			 len - SNAP_PREAMBLE_SIZE, state_len - SNAP_PREAMBLE_SIZE);
		expect_decode_refused(file, len, what);
	}
	free(file);
}

Test(snapshot_corrupt, truncations_are_refused_by_restore_and_verify)
{
	uint8_t *file = malloc(state_len);
	char dir[PATH_MAX], what[96];

	cr_assert_not_null(file);
	for (unsigned k = 0; k < CLI_SAMPLES; k++) {
		size_t len = k * (state_len / CLI_SAMPLES) + k; /* 0, then strided */
		bool fix = k % 2;

		memcpy(file, state, len);
		if (fix && len >= SNAP_PREAMBLE_SIZE)
			snapt_fix_preamble(file, len);
		snapt_join(dir, tmp, "cut%u", k);
		make_dir(dir, file, len);
		snprintf(what, sizeof(what), "state cut to %zu bytes%s", len, fix ? ", CRC fixed" : "");
		expect_all_refuse(dir, what);
	}
	free(file);
}

/* ---- byte flips ------------------------------------------------------------------------ */

static size_t flip(uint8_t *file, uint64_t *pos_out)
{
	size_t pos = SNAP_PREAMBLE_SIZE + next_rand() % (state_len - SNAP_PREAMBLE_SIZE);
	uint8_t x = (uint8_t)(next_rand() % 255 + 1);

	memcpy(file, state, state_len);
	file[pos] ^= x;
	*pos_out = pos;
	return pos;
}

Test(snapshot_corrupt, random_byte_flips_fail_the_checksum)
{
	uint8_t *file = malloc(state_len);
	struct snap_state st;
	struct snap_err se;
	uint64_t pos;
	char dir[PATH_MAX], what[96];

	cr_assert_not_null(file);
	for (unsigned k = 0; k < FLIPS; k++) {
		flip(file, &pos);
		se.msg[0] = 0;
		cr_assert_lt(snap_state_decode(file, state_len, &st, &se), 0, "flip %u at %llu decoded",
			     k, (unsigned long long)pos);
		cr_assert(strstr(se.msg, "CRC32C mismatch"), "flip %u at %llu: %s", k,
			  (unsigned long long)pos, se.msg);
		if (k < CLI_SAMPLES / 2) {
			snapt_join(dir, tmp, "flip%u", k);
			make_dir(dir, file, state_len);
			snprintf(what, sizeof(what), "flip %u at byte %llu", k, (unsigned long long)pos);
			expect_all_refuse(dir, what);
		}
	}
	free(file);
}

/*
 * With the CRC recomputed, a flip reaches the decoder and the checks behind it. It may
 * land in a value any number is valid for (a register), so decoding may succeed; then
 * the state passed validation and must encode again, and the device checks must hold
 * up. Nothing may crash or, under ASan, touch memory it should not.
 */
Test(snapshot_corrupt, random_flips_behind_a_valid_checksum_never_crash_the_decoder)
{
	uint8_t *file = malloc(state_len), *again;
	unsigned decoded = 0;
	struct errbuf eb;
	uint64_t pos;
	size_t len;

	cr_assert_not_null(file);
	for (unsigned k = 0; k < FLIPS; k++) {
		struct snap_state st;
		struct snap_err se = { "" };

		flip(file, &pos);
		snapt_fix_preamble(file, state_len);
		if (snap_state_decode(file, state_len, &st, &se)) {
			cr_assert_neq(se.msg[0], 0, "flip %u at %llu: refused without a message", k,
				      (unsigned long long)pos);
			continue;
		}
		decoded++;
		cr_assert_eq(snap_state_encode(&st, &again, &len, &se), 0,
			     "flip %u at %llu: decoded a state that does not encode: %s", k,
			     (unsigned long long)pos, se.msg);
		free(again);
		devices_check_state(&st, &eb);
		snap_state_free(&st);
	}
	cr_log_info("%u of %u checksum-fixed flips decoded", decoded, FLIPS);
	free(file);
}

/* Such a state may even restore and run; whatever happens, ember must not crash. */
Test(snapshot_corrupt, restoring_flips_behind_a_valid_checksum_never_crashes_ember)
{
	uint8_t *file = malloc(state_len);
	unsigned tried = 0;
	char dir[PATH_MAX];
	uint64_t pos;

	cr_assert_not_null(file);
	for (unsigned k = 0; k < FLIPS && tried < CLI_SAMPLES / 2; k++) {
		struct proc_result r;
		struct snap_state st;
		struct snap_err se;

		flip(file, &pos);
		snapt_fix_preamble(file, state_len);
		/* the interesting ones are those the format checks let through */
		if (snap_state_decode(file, state_len, &st, &se))
			continue;
		snap_state_free(&st);
		snapt_join(dir, tmp, "fixed-flip%u", k);
		make_dir(dir, file, state_len);
		ember_test_run(&r, WAIT_MS, "restore", "--snapshot", dir, "--guest-cmd", "verify",
			       "--guest-cmd", "exit", "--timeout", "1", NULL);
		ember_test_assert_no_crash(&r);
		cr_assert(r.status == 0 || r.status == 1 || r.status == 3 || r.status == 124,
			  "flip %u at byte %llu: ember restore exited %d:\n%s", k,
			  (unsigned long long)pos, r.status, r.err);
		proc_result_free(&r);
		tried++;
	}
	cr_assert_gt(tried, 0, "no checksum-fixed flip decoded: nothing was restored");
	free(file);
}
