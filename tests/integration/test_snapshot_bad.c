/*
 * Bad snapshots through the binaries: each one is a copy of a good golden snapshot with
 * one thing wrong, made below libsnapfmt (snap_state_encode refuses invalid states) by
 * editing the msgpack body and fixing the preamble. `ember restore` must exit 1 with a
 * message naming the problem, without a crash or sanitizer report, and `ember-snap
 * verify` must reject the same file, except where the file itself is valid and only
 * this host cannot run it (another CPU vendor, a missing CPU feature) or it is a diff,
 * which verify accepts and restore refuses.
 */
#include <cpuid.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "testlib.h"
#include "snapfmt.h"

#define WAIT_MS 20000

static char tmp[PATH_MAX], golden[PATH_MAX], bad[PATH_MAX];
static struct snapmut *mut;
static const char *what = "the bad snapshot"; /* for messages of table-driven tests */

static void init(void)
{
	ember_test_require_kvm();
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(golden, tmp, "golden");
	snapt_join(bad, tmp, "bad");
	/* small: every test makes its own */
	snapt_golden(golden, "heap=1M ws=64K", 8);
}

static void fini(void)
{
	snapmut_free(mut);
	mut = NULL;
	ember_test_rmtree(tmp);
	tmp[0] = 0;
}

TestSuite(snapshot_bad, .init = init, .fini = fini, .timeout = 60);

/* A copy of the golden snapshot to break; the memory file is shared unless copied. */
static void copy_golden(bool copy_memory)
{
	snapt_copy_dir(golden, bad, !copy_memory);
}

static struct snapmut *edit(void)
{
	copy_golden(false);
	mut = snapmut_load(bad);
	return mut;
}

static void save_edit(void)
{
	snapmut_save(mut, bad);
}

static void restore_refused(const char *needle, const char *needle2)
{
	struct proc_result r;

	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", bad, "--guest-cmd", "exit",
		       "--timeout", "5", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "ember restore of %s exited %d (wanted 1):\n%s", what, r.status,
		     r.err);
	cr_assert(strstr(r.err, "ember: error"), "no error line:\n%s", r.err);
	cr_assert(strstr(r.err, needle), "the error does not name the problem ('%s'):\n%s", needle,
		  r.err);
	if (needle2)
		cr_assert(strstr(r.err, needle2), "the error does not say '%s':\n%s", needle2, r.err);
	cr_assert_str_eq(r.out, "", "the guest ran:\n%s", r.out);
	proc_result_free(&r);
}

static void verify_rejects(const char *needle)
{
	struct proc_result r;

	snapt_tool(&r, WAIT_MS, "verify", bad, NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 1, "ember-snap verify of a bad snapshot exited %d:\n%s%s", r.status,
		     r.out, r.err);
	cr_assert(strstr(r.out, needle) || strstr(r.err, needle),
		  "ember-snap verify does not name the problem ('%s'):\n%s%s", needle, r.out, r.err);
	proc_result_free(&r);
}

static void both_refuse(const char *needle)
{
	restore_refused(needle, NULL);
	verify_rejects(needle);
}

/* ---- the state file's bytes ---------------------------------------------------------- */

Test(snapshot_bad, empty_state_file)
{
	copy_golden(false);
	cr_assert_eq(truncate(ember_test_write_file(bad, SNAP_STATE_FILE, "", 0), 0), 0);
	both_refuse("shorter than the 16-byte preamble");
}

Test(snapshot_bad, wrong_magic)
{
	char path[PATH_MAX];
	uint8_t *file;
	size_t len;

	copy_golden(false);
	snapt_join(path, bad, "%s", SNAP_STATE_FILE);
	file = snapt_read_file(path, &len);
	memcpy(file, "EMBRSNAQ", 8);
	ember_test_write_file(bad, SNAP_STATE_FILE, file, len);
	free(file);
	both_refuse("bad magic");
}

Test(snapshot_bad, newer_major_version)
{
	char want[80];

	edit();
	snapmut_set_u64(mut, "header.major", 2);
	save_edit();
	/* the minor stays the writer's: this ember's own */
	snprintf(want, sizeof(want), "snapshot format 2.%u is newer than this ember (1.%u)",
		 SNAP_FORMAT_MINOR, SNAP_FORMAT_MINOR);
	both_refuse(want);
}

/* ---- the memory file ------------------------------------------------------------------ */

static void resize_memory(long delta)
{
	char path[PATH_MAX];
	uint64_t size;

	copy_golden(true);
	snapt_join(path, bad, "%s", SNAP_MEMORY_FILE);
	mut = snapmut_load(bad);
	size = snapmut_get_u64(mut, "memory.size");
	cr_assert_eq(truncate(path, (off_t)size + delta), 0);
}

Test(snapshot_bad, memory_file_too_short)
{
	resize_memory(-4096);
	both_refuse("memory");
}

Test(snapshot_bad, memory_file_too_long)
{
	resize_memory(4096);
	both_refuse("memory");
}

Test(snapshot_bad, memory_file_missing)
{
	char path[PATH_MAX];

	copy_golden(false);
	snapt_join(path, bad, "%s", SNAP_MEMORY_FILE);
	cr_assert_eq(unlink(path), 0);
	both_refuse(SNAP_MEMORY_FILE);
}

Test(snapshot_bad, memory_file_is_a_symlink)
{
	char path[PATH_MAX], target[PATH_MAX];

	copy_golden(false);
	snapt_join(path, bad, "%s", SNAP_MEMORY_FILE);
	snapt_join(target, golden, "%s", SNAP_MEMORY_FILE);
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(symlink(target, path), 0);
	both_refuse("symbolic link");
}

/* ---- the layout ------------------------------------------------------------------------ */

Test(snapshot_bad, zero_vcpus)
{
	edit();
	snapmut_resize(mut, "vcpus", 0);
	save_edit();
	both_refuse("vcpus");
}

Test(snapshot_bad, sixty_five_vcpus)
{
	char path[64];

	edit();
	snapmut_resize(mut, "vcpus", 65);
	for (unsigned i = 0; i < 65; i++) {
		snprintf(path, sizeof(path), "vcpus[%u].id", i);
		snapmut_set_u64(mut, path, i);
	}
	save_edit();
	both_refuse("vcpus: 65 entries");
}

/* Two regions whose guest addresses overlap by one page, each with its own file range. */
Test(snapshot_bad, overlapping_regions)
{
	uint64_t size;

	edit();
	size = snapmut_get_u64(mut, "vm.regions[0].size");
	snapmut_resize(mut, "vm.regions", 2);
	snapmut_set_u64(mut, "vm.regions[0].size", size / 2);
	snapmut_set_u64(mut, "vm.regions[1].gpa", size / 2 - 4096);
	snapmut_set_u64(mut, "vm.regions[1].size", size / 2);
	snapmut_set_u64(mut, "vm.regions[1].file_offset", size / 2);
	save_edit();
	both_refuse("overlap");
}

Test(snapshot_bad, region_outside_the_memory_file)
{
	edit();
	snapmut_set_u64(mut, "vm.regions[0].file_offset", 4096);
	save_edit();
	both_refuse("vm.regions[0]");
}

/* ---- device sections --------------------------------------------------------------------- */

static void set_device_field(const char *dev, const char *field, uint64_t v)
{
	char path[96];
	int i;

	edit();
	i = snapmut_find(mut, "devices", "name", dev);
	cr_assert_geq(i, 0, "no device %s", dev);
	snprintf(path, sizeof(path), "devices[%d].state.%s", i, field);
	snapmut_set_u64(mut, path, v);
	save_edit();
}

static void add_unknown_device(void)
{
	char path[64];
	unsigned n;

	edit();
	/* one more than there are: a copy of the last, renamed */
	for (n = 0; snapmut_get(mut, (snprintf(path, sizeof(path), "devices[%u]", n), path)); n++)
		;
	snapmut_resize(mut, "devices", n + 1);
	snprintf(path, sizeof(path), "devices[%u].name", n);
	snapmut_set_str(mut, path, "floppy");
	save_edit();
}

/* virtio-rng's queue made ready with its used ring past the end of guest RAM: a state
 * only restore's RAM check and verify's check against the snapshot's regions can see */
static void rng_ring_outside_ram(void)
{
	char path[96];
	int i;

	edit();
	i = snapmut_find(mut, "devices", "name", "virtio-rng");
	cr_assert_geq(i, 0, "no virtio-rng in the golden snapshot");
	snprintf(path, sizeof(path), "devices[%d].state.q0_size", i);
	snapmut_set_u64(mut, path, 16);
	snprintf(path, sizeof(path), "devices[%d].state.q0_ready", i);
	snapmut_set_u64(mut, path, 1);
	snprintf(path, sizeof(path), "devices[%d].state.q0_desc", i);
	snapmut_set_u64(mut, path, 0x10000);
	snprintf(path, sizeof(path), "devices[%d].state.q0_avail", i);
	snapmut_set_u64(mut, path, 0x11000);
	snprintf(path, sizeof(path), "devices[%d].state.q0_used", i);
	snapmut_set_u64(mut, path, 0x100000000ull); /* 4 GiB: beyond this guest's RAM */
	save_edit();
}

static void remove_device(const char *dev)
{
	int i;

	edit();
	i = snapmut_find(mut, "devices", "name", dev);
	cr_assert_geq(i, 0, "no device %s", dev);
	snapmut_remove(mut, "devices", (uint32_t)i);
	save_edit();
}

Test(snapshot_bad, serial_rx_len_out_of_range)
{
	set_device_field("serial", "rx_len", 200);
	restore_refused("serial", "rx_len");
}

Test(snapshot_bad, i8042_out_len_out_of_range)
{
	set_device_field("i8042", "out_len", 9);
	restore_refused("i8042", "out_len");
}

Test(snapshot_bad, unknown_device)
{
	add_unknown_device();
	restore_refused("device floppy", "unknown");
}

Test(snapshot_bad, missing_device)
{
	remove_device("guest-abi");
	restore_refused("device guest-abi", "missing");
}

Test(snapshot_bad, virtio_ring_outside_guest_ram)
{
	rng_ring_outside_ram();
	both_refuse("device virtio-rng: queue 0: used ring: address 0x100000000 is not in guest RAM");
}

/*
 * FORMAT.md 3.4: "ember-snap verify runs the same checks" as restore on the device
 * sections. One test for all of them: if the tool drifts from ember, that is one failure.
 */
Test(snapshot_bad, ember_snap_verify_rejects_the_device_sections_restore_rejects)
{
	static const char *const edits[] = { "serial rx_len 200", "i8042 out_len 9",
					     "unknown device", "missing device",
					     "virtio ring outside RAM" };
	unsigned accepted = 0;
	char msg[256] = "";

	for (unsigned k = 0; k < ARRAY_SIZE(edits); k++) {
		struct proc_result r;

		snapmut_free(mut);
		mut = NULL;
		ember_test_rmtree(bad);
		if (k == 0)
			set_device_field("serial", "rx_len", 200);
		else if (k == 1)
			set_device_field("i8042", "out_len", 9);
		else if (k == 2)
			add_unknown_device();
		else if (k == 3)
			remove_device("guest-abi");
		else
			rng_ring_outside_ram();
		snapt_tool(&r, WAIT_MS, "verify", bad, NULL);
		ember_test_assert_no_crash(&r);
		if (r.status != 1) {
			accepted++;
			strncat(msg, edits[k], sizeof(msg) - strlen(msg) - 3);
			strcat(msg, "; ");
		}
		proc_result_free(&r);
	}
	cr_assert_eq(accepted, 0, "ember-snap verify accepted %u device sections ember restore "
		     "refuses: %s", accepted, msg);
}

/* ---- values only the VMM or KVM can judge ---------------------------------------------- */

/*
 * Well-formed files whose values KVM (or ember just before KVM) refuses: the restore must
 * fail with the reason, after having created a VM, and tear it down without a crash.
 */
Test(snapshot_bad, values_kvm_refuses_fail_the_restore_with_the_reason)
{
	static const struct {
		const char *path;
		uint64_t value;
		const char *needle;
	} cases[] = {
		{ "vm.tsc_khz", 0, "TSC frequency is 0 kHz" },
		{ "vm.ioapic.base_address", 0xfed00000, "vm.ioapic.base_address" },
		{ "vm.clock.flags", 0x80, "vm.clock.flags" },
		{ "vcpus[0].mp_state", 99, "KVM_SET_MP_STATE" },
		{ "vcpus[0].msrs[3].index", 0xdeadbeef, "MSR 0xdeadbeef" },
		{ "vcpus[0].xcrs[0].value", ~0ull, "XCR0" },
		{ "vcpus[0].sregs.cr0", 0, "KVM_SET_SREGS" },
		{ "vcpus[0].sregs.cr4", ~(1ull << 13), "KVM_SET_SREGS" }, /* VMXE: below */
		{ "vcpus[0].sregs.efer", 0, "KVM_SET_SREGS" },
		{ "vcpus[0].sregs.apic_base", 0x1234, "KVM_SET_SREGS" },
		{ "vcpus[0].events.flags", 0xffffffff, "KVM_SET_VCPU_EVENTS" },
		{ "vcpus[0].debugregs.dr7", ~0ull, "KVM_SET_DEBUGREGS" },
	};

	for (unsigned i = 0; i < ARRAY_SIZE(cases); i++) {
		snapmut_free(mut);
		mut = NULL;
		ember_test_rmtree(bad);
		edit();
		snapmut_set_u64(mut, cases[i].path, cases[i].value);
		save_edit();
		what = cases[i].path;
		restore_refused(cases[i].needle, NULL);
	}
}

/* ---- valid files this host (or restore) cannot run ------------------------------------ */

Test(snapshot_bad, diff_snapshot_given_to_restore)
{
	edit();
	snapmut_set_str(mut, "memory.kind", "diff");
	snapmut_set_str(mut, "header.parent", "0123456789abcdef0123456789abcdef");
	save_edit();
	restore_refused("diff snapshot", "0123456789abcdef0123456789abcdef");
	snapt_verify_ok(bad);
}

static int cpuid_entry(uint32_t function, uint32_t index)
{
	char path[64], want[16];
	int i;

	snprintf(want, sizeof(want), "%u", function);
	for (i = 0;; i++) {
		snprintf(path, sizeof(path), "vcpus[0].cpuid[%d]", i);
		if (!snapmut_get(mut, path))
			break;
		snprintf(path, sizeof(path), "vcpus[0].cpuid[%d].function", i);
		if (snapmut_get_u64(mut, path) != function)
			continue;
		snprintf(path, sizeof(path), "vcpus[0].cpuid[%d].index", i);
		if (snapmut_get_u64(mut, path) == index)
			return i;
	}
	cr_assert_fail("vCPU 0 has no CPUID leaf 0x%x.%u", function, index);
	return -1;
}

static uint32_t str4(const char *s)
{
	uint32_t v;

	memcpy(&v, s, 4);
	return v;
}

/* The vendor string that is not this host's. */
static const char *other_vendor(void)
{
	unsigned a, b, c, d;

	__cpuid(0, a, b, c, d);
	return b == str4("Genu") ? "AuthenticAMD" : "GenuineIntel";
}

/* vCPU 0's CPUID leaf 0 reports `vendor`. */
static void set_guest_vendor(const char *vendor)
{
	char path[64];
	int i = cpuid_entry(0, 0);

	snprintf(path, sizeof(path), "vcpus[0].cpuid[%d].ebx", i);
	snapmut_set_u64(mut, path, str4(vendor));
	snprintf(path, sizeof(path), "vcpus[0].cpuid[%d].edx", i);
	snapmut_set_u64(mut, path, str4(vendor + 4));
	snprintf(path, sizeof(path), "vcpus[0].cpuid[%d].ecx", i);
	snapmut_set_u64(mut, path, str4(vendor + 8));
}

/* What a snapshot taken on the other vendor's CPU looks like. */
Test(snapshot_bad, snapshot_from_another_cpu_vendor)
{
	const char *other = other_vendor();

	edit();
	snapmut_set_str(mut, "header.cpu.vendor", other);
	set_guest_vendor(other);
	save_edit();
	restore_refused(other, NULL);
	snapt_verify_ok(bad);
}

/* The guest chose its code paths by what CPUID told it, whatever the header says. */
Test(snapshot_bad, guest_cpuid_of_another_vendor)
{
	const char *other = other_vendor();

	edit();
	set_guest_vendor(other);
	save_edit();
	restore_refused(other, "CPUID leaf 0");
	snapt_verify_ok(bad);
}

Test(snapshot_bad, snapshot_needing_a_cpu_feature_the_host_lacks)
{
	/* CPUID.(7,0):EBX features few hosts have, by the name ember reports */
	static const struct { unsigned bit; const char *name; } rare[] = {
		{ 26, "avx512pf" }, { 27, "avx512er" }, { 14, "mpx" }, { 4, "hle" }, { 11, "rtm" },
	};
	unsigned a, b, c, d, k;
	char path[64];
	int i;

	__cpuid_count(7, 0, a, b, c, d);
	for (k = 0; k < ARRAY_SIZE(rare) && (b >> rare[k].bit & 1); k++)
		;
	if (k == ARRAY_SIZE(rare))
		cr_skip_test("this host has every CPU feature the test knows to be rare");
	edit();
	i = cpuid_entry(7, 0);
	snprintf(path, sizeof(path), "vcpus[0].cpuid[%d].ebx", i);
	snapmut_set_u64(mut, path, snapmut_get_u64(mut, path) | 1u << rare[k].bit);
	save_edit();
	restore_refused(rare[k].name, NULL);
	snapt_verify_ok(bad);
}

/* A guest TSC rate 1% off this host's: scaled where KVM can (KVM_CAP_TSC_CONTROL),
 * refused where it cannot; the file itself is fine. */
Test(snapshot_bad, guest_tsc_rate_this_host_cannot_give)
{
	struct proc_result r;
	uint64_t khz;
	int kvm;
	bool scaling;

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	cr_assert_geq(kvm, 0);
	scaling = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_TSC_CONTROL) > 0;
	close(kvm);
	edit();
	khz = snapmut_get_u64(mut, "vm.tsc_khz");
	snapmut_set_u64(mut, "vm.tsc_khz", khz + khz / 100);
	save_edit();
	snapt_verify_ok(bad);
	if (!scaling) {
		restore_refused("KVM_CAP_TSC_CONTROL", "kHz");
		return;
	}
	ember_test_run(&r, WAIT_MS, "restore", "--snapshot", bad, "--guest-cmd", "exit",
		       "--timeout", "5", NULL);
	ember_test_assert_no_crash(&r);
	cr_assert_eq(r.status, 0, "restore with TSC scaling exited %d:\n%s", r.status, r.err);
	proc_result_free(&r);
}

/* A fresh copy of the golden snapshot with bits set in the u64 at path. */
static void edit_setting_bits(const char *path, uint64_t bits)
{
	snapmut_free(mut);
	mut = NULL;
	ember_test_rmtree(bad);
	edit();
	snapmut_set_u64(mut, path, snapmut_get_u64(mut, path) | bits);
	save_edit();
	what = path;
}

/* A vCPU that had turned nested virtualization on: its VMCS/VMCB state is not in the
 * file, so no restore could be right. verify and restore refuse it alike. */
Test(snapshot_bad, vcpu_using_nested_virtualization)
{
	edit_setting_bits("vcpus[0].sregs.cr4", 1ull << 13);
	both_refuse("nested virtualization (CR4.VMXE)");
	edit_setting_bits("vcpus[0].sregs.efer", 1ull << 12);
	both_refuse("nested virtualization (EFER.SVME)");
}
