/*
 * The KVM selftests' state_test pattern, in-process through the library API, on the
 * project's state and fpu guests: at every GUEST_SYNC, vm_snapshot_save into a
 * directory, vm_destroy, vm_restore from it into a fresh VM, snapshot the restored VM
 * again and compare the two states field by field (what KVM gives back must be what
 * was saved), compare guest memory with the memory file byte for byte, then run on.
 * The guests check their own registers, memory pattern, timer ticks and TSC across
 * every sync, so the run must end in GUEST_DONE with every stage reported.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testlib.h"
#include "snapfmt.h"
#include "arch/x86_64/x86.h"

#define GUEST_MEM   (32 * MiB)
#define STOP_MS     20000
#define MSR_TSC     0x10u
#define LAPIC_TMCCT 0x390 /* timer current count: counts down in real time */

static struct {
	struct vm *vm;
	struct vm_config cfg;
	char tmp[PATH_MAX];
	char console[PATH_MAX];
	struct snap_state saved, again;
} fx;

static void fx_fini(void)
{
	vm_destroy(fx.vm);
	snap_state_free(&fx.saved);
	snap_state_free(&fx.again);
	ember_test_rmtree(fx.tmp);
	memset(&fx, 0, sizeof(fx));
}

TestSuite(snapshot_state, .fini = fx_fini, .timeout = 120);

static void boot(const char *guest)
{
	struct errbuf eb = { "" };

	ember_test_require_kvm();
	ember_test_tmpdir(fx.tmp, sizeof(fx.tmp));
	snapt_join(fx.console, fx.tmp, "console.txt");
	memset(&fx.cfg, 0, sizeof(fx.cfg));
	fx.cfg.mem_bytes = GUEST_MEM;
	fx.cfg.nr_vcpus = 1;
	fx.cfg.kernel = ember_test_guest(guest);
	fx.cfg.console = CONSOLE_FILE;
	fx.cfg.console_path = fx.console;
	fx.cfg.stop_on_sync = true;
	fx.cfg.timeout_ms = STOP_MS;
	cr_assert_eq(vm_create(&fx.vm, &fx.cfg, &eb), 0, "vm_create: %s", eb.msg);
	cr_assert_eq(vm_boot_load(fx.vm, &eb), 0, "vm_boot_load: %s", eb.msg);
}

static const char *console_text(void)
{
	static char buf[16384];
	FILE *f = fopen(fx.console, "r");
	size_t n = 0;

	if (f) {
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
	}
	buf[n] = 0;
	return buf;
}

static void expect_stop(enum vm_stop_reason want, int code)
{
	enum vm_stop_reason got = vm_run(fx.vm);

	cr_assert_eq(got, want, "vm_run stopped with %s (%s), wanted %s; console:\n%s",
		     vm_stop_reason_name(got), fx.vm->stop_msg, vm_stop_reason_name(want),
		     console_text());
	if (want == VM_STOP_SYNC)
		cr_assert_eq(fx.vm->stop_code, code, "guest synced stage %d, expected %d",
			     fx.vm->stop_code, code);
}

static void save_to(const char *dir, struct snap_state *st)
{
	struct snapshot_opts o = { .diff = false };
	struct snapshot_stats ss;
	struct errbuf eb = { "" };
	struct snap_err se = { "" };

	cr_assert_eq(vm_snapshot_save(fx.vm, dir, &o, &ss, &eb), 0, "vm_snapshot_save %s: %s", dir,
		     eb.msg);
	cr_assert_eq(snap_state_load(dir, st, &se), 0, "snap_state_load %s: %s", dir, se.msg);
	cr_assert_str_eq(st->header.id, ss.id);
	snapt_verify_ok(dir);
}

/* ---- memory ------------------------------------------------------------------------ */

/* Guest RAM as the VM sees it (through gpa_ptr, region by region) against the file. A
 * restored VM has a new VMGenID (acpi/vmgenid.c): those 16 bytes must differ, and only
 * they. */
static void compare_memory(const struct vm *vm, const char *dir, const char *who, bool restored)
{
	char path[PATH_MAX];
	size_t len;
	uint8_t *file;

	snapt_join(path, dir, "%s", SNAP_MEMORY_FILE);
	file = snapt_read_file(path, &len);
	cr_assert_eq(len, vm->mem.size, "%s: memory file is %zu bytes, guest RAM %llu", path, len,
		     (unsigned long long)vm->mem.size);
	if (restored) {
		const uint8_t *id = gpa_ptr(&vm->mem, ACPI_VMGENID_ADDR, 16);

		cr_assert_not_null(id);
		cr_assert_gt(len, ACPI_VMGENID_ADDR + 16);
		cr_assert(memcmp(id, file + ACPI_VMGENID_ADDR, 16), "%s kept the snapshot's VMGenID",
			  who);
		memcpy(file + ACPI_VMGENID_ADDR, id, 16);
	}
	for (unsigned i = 0; i < vm->mem.nr_regions; i++) {
		const struct mem_region *r = &vm->mem.regions[i];
		const uint8_t *ram = gpa_ptr(&vm->mem, r->gpa, r->size);

		cr_assert_not_null(ram);
		for (uint64_t off = 0; off < r->size; off += PAGE_SIZE)
			if (memcmp(ram + off, file + r->offset + off, PAGE_SIZE))
				cr_assert_fail("%s: guest page at GPA 0x%llx differs from the memory "
					       "file at offset 0x%llx", who,
					       (unsigned long long)(r->gpa + off),
					       (unsigned long long)(r->offset + off));
	}
	free(file);
}

/* ---- field-by-field comparison -------------------------------------------------- */

static void same(const char *path, uint64_t a, uint64_t b)
{
	cr_expect_eq(a, b, "%s: saved 0x%llx, after restore 0x%llx", path, (unsigned long long)a,
		     (unsigned long long)b);
}

#define SAME(f) same(#f, (uint64_t)a->f, (uint64_t)b->f);
#define SAME_PIC(p)                                                                      \
	SAME(p.last_irr) SAME(p.irr) SAME(p.imr) SAME(p.isr) SAME(p.priority_add)           \
	SAME(p.irq_base) SAME(p.read_reg_select) SAME(p.poll) SAME(p.special_mask)           \
	SAME(p.init_state) SAME(p.auto_eoi) SAME(p.rotate_on_auto_eoi)                       \
	SAME(p.special_fully_nested_mode) SAME(p.init4) SAME(p.elcr) SAME(p.elcr_mask)
/* count_load_time is the host's clock at the last counter load: not guest state */
#define SAME_PIT(c)                                                                      \
	SAME(pit.channels[c].count) SAME(pit.channels[c].latched_count)                      \
	SAME(pit.channels[c].count_latched) SAME(pit.channels[c].status_latched)             \
	SAME(pit.channels[c].status) SAME(pit.channels[c].read_state)                        \
	SAME(pit.channels[c].write_state) SAME(pit.channels[c].write_latch)                  \
	SAME(pit.channels[c].rw_mode) SAME(pit.channels[c].mode) SAME(pit.channels[c].bcd)   \
	SAME(pit.channels[c].gate)

static void compare_vm(const struct snap_vm *a, const struct snap_vm *b)
{
	SAME(nr_regions)
	for (uint32_t i = 0; i < a->nr_regions && i < b->nr_regions; i++) {
		SAME(regions[i].gpa) SAME(regions[i].size) SAME(regions[i].file_offset)
	}
	SAME_PIC(pic_master) SAME_PIC(pic_slave)
	SAME(ioapic.base_address) SAME(ioapic.ioregsel) SAME(ioapic.id) SAME(ioapic.irr)
	for (unsigned i = 0; i < SNAP_IOAPIC_PINS; i++)
		SAME(ioapic.redirtbl[i])
	SAME(pit.flags) SAME_PIT(0) SAME_PIT(1) SAME_PIT(2)
	SAME(tsc_khz)
	cr_expect_geq(b->clock.clock, a->clock.clock, "kvmclock went back: %llu -> %llu ns",
		      (unsigned long long)a->clock.clock, (unsigned long long)b->clock.clock);
}

static void compare_devices(const struct snap_state *a, const struct snap_state *b)
{
	cr_assert_eq(a->nr_devices, b->nr_devices);
	for (uint32_t d = 0; d < a->nr_devices; d++) {
		const struct snap_device *da = &a->devices[d], *db = &b->devices[d];

		cr_expect_str_eq(da->name, db->name);
		cr_expect_eq(da->version, db->version, "device %s version", da->name);
		cr_assert_eq(da->nr_fields, db->nr_fields, "device %s field count", da->name);
		for (uint32_t f = 0; f < da->nr_fields; f++) {
			const struct snap_dev_field *fa = &da->fields[f], *fb = &db->fields[f];

			cr_expect_str_eq(fa->name, fb->name);
			cr_expect_eq(fa->type, fb->type, "device %s field %s type", da->name, fa->name);
			cr_expect_eq(fa->u64, fb->u64, "device %s field %s: %llu saved, %llu after "
				     "restore", da->name, fa->name, (unsigned long long)fa->u64,
				     (unsigned long long)fb->u64);
			cr_expect_eq(fa->len, fb->len, "device %s field %s length", da->name, fa->name);
			if (fa->len == fb->len && fa->len)
				cr_expect_eq(memcmp(fa->bin, fb->bin, fa->len), 0,
					     "device %s field %s bytes", da->name, fa->name);
		}
	}
}

static void compare_states(const struct snap_state *a, const struct snap_state *b)
{
	cr_assert_eq(a->nr_vcpus, b->nr_vcpus);
	for (uint32_t i = 0; i < a->nr_vcpus; i++)
		snapt_compare_vcpu(&a->vcpus[i], &b->vcpus[i]);
	compare_vm(&a->vm, &b->vm);
	compare_devices(a, b);
	cr_expect_eq(a->memory.size, b->memory.size);
}

/* ---- the stage loop --------------------------------------------------------------- */

/*
 * At the sync point of `stage`: save, check the file against RAM, destroy, restore,
 * check RAM against the file, save the restored VM and compare. Returns the TSC saved.
 */
static uint64_t save_destroy_restore(unsigned stage, uint64_t prev_tsc)
{
	char dir[PATH_MAX], again_dir[PATH_MAX];
	struct errbuf eb = { "" };
	uint64_t tsc;

	snapt_join(dir, fx.tmp, "stage%u", stage);
	snapt_join(again_dir, fx.tmp, "stage%u-again", stage);
	snap_state_free(&fx.saved);
	snap_state_free(&fx.again);

	save_to(dir, &fx.saved);
	compare_memory(fx.vm, dir, "the VM that was saved", false);
	tsc = fx.saved.vcpus[0].tsc;
	cr_expect_gt(tsc, prev_tsc, "stage %u: saved TSC 0x%llx is not past the previous stage's "
		     "0x%llx", stage, (unsigned long long)tsc, (unsigned long long)prev_tsc);
	vm_destroy(fx.vm);
	fx.vm = NULL;

	cr_assert_eq(vm_restore(&fx.vm, &fx.cfg, dir, &eb), 0, "stage %u: vm_restore: %s", stage,
		     eb.msg);
	cr_assert_neq(fx.vm->generation, 0, "a restored VM has a non-zero generation");
	/* a diff taken now would be relative to the snapshot it came from */
	cr_expect_str_eq(fx.vm->last_snapshot_id, fx.saved.header.id);
	compare_memory(fx.vm, dir, "the restored VM", true);
	save_to(again_dir, &fx.again);
	compare_states(&fx.saved, &fx.again);
	return tsc;
}

/* backends: restore stage i with backends[i % n] (NULL: the default only). */
static void run_stages(unsigned stages, const enum mem_backend *backends, unsigned n)
{
	uint64_t tsc = 0;

	for (unsigned stage = 1; stage <= stages; stage++) {
		if (backends)
			fx.cfg.mem_backend = backends[stage % n];
		expect_stop(VM_STOP_SYNC, (int)stage);
		tsc = save_destroy_restore(stage, tsc);
	}
	expect_stop(VM_STOP_DONE, 0);
}

Test(snapshot_state, state_guest_passes_its_checks_across_a_restore_at_every_sync)
{
	char line[64];
	const char *out;

	boot("state");
	run_stages(6, NULL, 0);
	out = console_text();
	for (unsigned stage = 1; stage <= 6; stage++) {
		snprintf(line, sizeof(line), "state: stage %u ok", stage);
		cr_expect_eq(snapt_count(out, line), 1, "'%s' should appear once:\n%s", line, out);
	}
}

/* The lazy (uffd) and eager backends hand the guest the same memory as the mapping. */
Test(snapshot_state, state_guest_passes_its_checks_on_every_memory_backend)
{
	static const enum mem_backend backends[] = { MEM_BACKEND_UFFD, MEM_BACKEND_EAGER,
						      MEM_BACKEND_MMAP };
	const char *out;

	boot("state");
	run_stages(6, backends, ARRAY_SIZE(backends));
	out = console_text();
	cr_expect(strstr(out, "state: stage 6 ok"), "console:\n%s", out);
}

Test(snapshot_state, fpu_guest_keeps_x87_sse_avx_state_across_a_restore_at_every_sync)
{
	const char *out;

	boot("fpu");
	run_stages(4, NULL, 0);
	out = console_text();
	cr_expect(strstr(out, "state intact after 4 syncs"), "console:\n%s", out);
}

Test(snapshot_state, saved_xsave_holds_the_guests_avx_upper_halves)
{
	const struct snap_vcpu *v;
	uint32_t avx_off = 0;
	uint64_t xstate_bv, xcr0 = 0;
	bool zero = true;

	boot("fpu");
	expect_stop(VM_STOP_SYNC, 1);
	save_destroy_restore(1, 0);
	v = &fx.saved.vcpus[0];
	for (uint32_t i = 0; i < v->nr_xcrs; i++)
		if (v->xcrs[i].xcr == 0)
			xcr0 = v->xcrs[i].value;
	if (!(xcr0 & 4))
		cr_skip_test("the guest did not enable AVX (XCR0 0x%llx)", (unsigned long long)xcr0);
	for (uint32_t i = 0; i < v->nr_cpuid; i++)
		if (v->cpuid[i].function == 0xd && v->cpuid[i].index == 2)
			avx_off = v->cpuid[i].ebx;
	cr_assert_gt(avx_off, 0, "no CPUID leaf 0xD.2 in the saved vCPU");
	cr_assert_leq(avx_off + 256, v->xsave_len);
	memcpy(&xstate_bv, &v->xsave[512], sizeof(xstate_bv));
	cr_assert(xstate_bv & 4, "XSTATE_BV 0x%llx lacks AVX: the upper halves were not saved",
		  (unsigned long long)xstate_bv);
	/* the guest loads mix64 patterns: the saved upper halves cannot all be zero */
	for (unsigned i = 0; i < 256; i++)
		zero &= v->xsave[avx_off + i] == 0;
	cr_assert(!zero, "the saved ymm upper halves are all zero");
	/* and the guest itself checks them after the restore */
	expect_stop(VM_STOP_SYNC, 2);
}
