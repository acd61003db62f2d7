/*
 * Shared fixtures for the test_snapfmt_* tests: a fully populated state with every
 * field distinct, state-file wrapping, msgpack object surgery for malformed files,
 * and scratch directories.
 */
#ifndef TEST_SNAPFMT_FIXTURE_H
#define TEST_SNAPFMT_FIXTURE_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapfmt.h"
#include "dev/dev.h" /* ember's device sections, for fx_fill_ember_state */

#define FX_UNUSED __attribute__((unused))

/* Distinct values per width, so a swapped or dropped field shows up in a compare. */
struct fx_counter {
	uint64_t c8, c16, c32, c64;
};

static FX_UNUSED uint8_t fx8(struct fx_counter *c)
{
	cr_assert_lt(c->c8, 255, "fixture ran out of distinct u8 values");
	return (uint8_t)++c->c8;
}
static FX_UNUSED uint16_t fx16(struct fx_counter *c) { return (uint16_t)(0x1000 + ++c->c16); }
static FX_UNUSED uint32_t fx32(struct fx_counter *c) { return 0x20000000u + (uint32_t)++c->c32; }
static FX_UNUSED uint64_t fx64(struct fx_counter *c) { return 0x6400000000000000ull + ++c->c64 * 0x10001; }

static FX_UNUSED void fx_segment(struct fx_counter *c, struct snap_segment *s)
{
	s->base = fx64(c); s->limit = fx32(c); s->selector = fx16(c);
	s->type = fx8(c); s->present = fx8(c); s->dpl = fx8(c); s->db = fx8(c); s->s = fx8(c);
	s->l = fx8(c); s->g = fx8(c); s->avl = fx8(c); s->unusable = fx8(c);
}

static FX_UNUSED void fx_pic(struct fx_counter *c, struct snap_pic *p)
{
	p->last_irr = fx8(c); p->irr = fx8(c); p->imr = fx8(c); p->isr = fx8(c);
	p->priority_add = fx8(c); p->irq_base = fx8(c); p->read_reg_select = fx8(c);
	p->poll = fx8(c); p->special_mask = fx8(c); p->init_state = fx8(c); p->auto_eoi = fx8(c);
	p->rotate_on_auto_eoi = fx8(c); p->special_fully_nested_mode = fx8(c); p->init4 = fx8(c);
	p->elcr = fx8(c); p->elcr_mask = fx8(c);
}

static FX_UNUSED void fx_vcpu(struct fx_counter *c, struct snap_vcpu *v, uint32_t id)
{
	struct snap_regs *r = &v->regs;
	struct snap_sregs *s = &v->sregs;
	struct snap_events *e = &v->events;
	uint8_t xsave[SNAP_XSAVE_MIN + 512];

	v->id = id;
	r->rax = fx64(c); r->rbx = fx64(c); r->rcx = fx64(c); r->rdx = fx64(c);
	r->rsi = fx64(c); r->rdi = fx64(c); r->rsp = fx64(c); r->rbp = fx64(c);
	r->r8 = fx64(c); r->r9 = fx64(c); r->r10 = fx64(c); r->r11 = fx64(c);
	r->r12 = fx64(c); r->r13 = fx64(c); r->r14 = fx64(c); r->r15 = fx64(c);
	r->rip = fx64(c); r->rflags = fx64(c);
	fx_segment(c, &s->cs); fx_segment(c, &s->ds); fx_segment(c, &s->es); fx_segment(c, &s->fs);
	fx_segment(c, &s->gs); fx_segment(c, &s->ss); fx_segment(c, &s->tr); fx_segment(c, &s->ldt);
	s->gdt.base = fx64(c); s->gdt.limit = fx16(c);
	s->idt.base = fx64(c); s->idt.limit = fx16(c);
	s->cr0 = fx64(c); s->cr2 = fx64(c); s->cr3 = fx64(c); s->cr4 = fx64(c); s->cr8 = fx64(c);
	s->efer = fx64(c); s->apic_base = fx64(c);
	for (int i = 0; i < 4; i++)
		s->interrupt_bitmap[i] = fx64(c);
	for (size_t i = 0; i < sizeof(xsave); i++)
		xsave[i] = (uint8_t)(i * 7 + id);
	memset(xsave + 1024, 0, 2048); /* a zero run for the dump's elision */
	cr_assert_eq(snap_vcpu_set_xsave(v, xsave, sizeof(xsave), NULL), 0);
	v->nr_xcrs = 3;
	for (uint32_t i = 0; i < v->nr_xcrs; i++) {
		v->xcrs[i].xcr = fx32(c);
		v->xcrs[i].value = fx64(c);
	}
	for (int i = 0; i < SNAP_LAPIC_SIZE; i++)
		v->lapic[i] = (uint8_t)(i * 13 + 5 + id);
	cr_assert_eq(snap_vcpu_set_msrs(v, 5, NULL), 0);
	for (uint32_t i = 0; i < v->nr_msrs; i++) {
		v->msrs[i].index = fx32(c);
		v->msrs[i].value = fx64(c);
	}
	e->exception.injected = fx8(c); e->exception.nr = fx8(c); e->exception.has_error_code = fx8(c);
	e->exception.pending = fx8(c); e->exception.error_code = fx32(c);
	e->interrupt.injected = fx8(c); e->interrupt.nr = fx8(c); e->interrupt.soft = fx8(c);
	e->interrupt.shadow = fx8(c);
	e->nmi.injected = fx8(c); e->nmi.pending = fx8(c); e->nmi.masked = fx8(c);
	e->sipi_vector = fx32(c); e->flags = fx32(c);
	e->smi.smm = fx8(c); e->smi.pending = fx8(c); e->smi.smm_inside_nmi = fx8(c);
	e->smi.latched_init = fx8(c);
	e->triple_fault_pending = fx8(c); e->exception_has_payload = fx8(c);
	e->exception_payload = fx64(c);
	v->mp_state = fx32(c);
	for (int i = 0; i < 4; i++)
		v->debugregs.db[i] = fx64(c);
	v->debugregs.dr6 = fx64(c); v->debugregs.dr7 = fx64(c); v->debugregs.flags = fx64(c);
	cr_assert_eq(snap_vcpu_set_cpuid(v, 4, NULL), 0);
	for (uint32_t i = 0; i < v->nr_cpuid; i++) {
		struct snap_cpuid_entry *ce = &v->cpuid[i];
		ce->function = fx32(c); ce->index = fx32(c); ce->flags = fx32(c); ce->eax = fx32(c);
		ce->ebx = fx32(c); ce->ecx = fx32(c); ce->edx = fx32(c);
	}
	v->tsc = fx64(c);
}

#define FX_MEM_SIZE (64u * SNAP_PAGE_SIZE)

/* A valid full snapshot state with two vCPUs, two regions and two devices. */
static FX_UNUSED void fx_fill_state(struct snap_state *st)
{
	struct fx_counter c = { 0 };
	struct snap_device *dev;
	uint8_t fifo[40];

	cr_assert_eq(snap_state_init(st, NULL), 0);
	snprintf(st->header.ember_version, sizeof(st->header.ember_version), "9.8.7-test");
	snprintf(st->header.cpu.vendor, sizeof(st->header.cpu.vendor), "GenuineIntel");
	st->header.cpu.family = fx32(&c); st->header.cpu.model = fx32(&c);
	st->header.cpu.stepping = fx32(&c);
	st->header.created = 1700000000;
	snprintf(st->header.id, sizeof(st->header.id), "0123456789abcdef0123456789abcdef");

	st->memory.size = FX_MEM_SIZE;
	st->vm.nr_regions = 2;
	st->vm.regions[0] = (struct snap_region){ .gpa = 0, .size = 32 * SNAP_PAGE_SIZE, .file_offset = 0 };
	st->vm.regions[1] = (struct snap_region){ .gpa = 0x100000000ull, .size = 32 * SNAP_PAGE_SIZE,
						  .file_offset = 32 * SNAP_PAGE_SIZE };
	st->vm.clock.clock = fx64(&c); st->vm.clock.flags = fx32(&c);
	st->vm.clock.realtime = fx64(&c); st->vm.clock.host_tsc = fx64(&c);
	fx_pic(&c, &st->vm.pic_master);
	fx_pic(&c, &st->vm.pic_slave);
	st->vm.ioapic.base_address = fx64(&c); st->vm.ioapic.ioregsel = fx32(&c);
	st->vm.ioapic.id = fx32(&c); st->vm.ioapic.irr = fx32(&c);
	for (int i = 0; i < SNAP_IOAPIC_PINS; i++)
		st->vm.ioapic.redirtbl[i] = fx64(&c);
	st->vm.pit.flags = fx32(&c);
	for (int i = 0; i < SNAP_PIT_CHANNELS; i++) {
		struct snap_pit_channel *ch = &st->vm.pit.channels[i];
		ch->count = fx32(&c); ch->latched_count = fx16(&c); ch->count_latched = fx8(&c);
		ch->status_latched = fx8(&c); ch->status = fx8(&c); ch->read_state = fx8(&c);
		ch->write_state = fx8(&c); ch->write_latch = fx8(&c); ch->rw_mode = fx8(&c);
		ch->mode = fx8(&c); ch->bcd = fx8(&c); ch->gate = fx8(&c);
		ch->count_load_time = i == 1 ? -123456789012345ll : (int64_t)fx64(&c);
	}
	st->vm.tsc_khz = fx32(&c);

	cr_assert_eq(snap_state_set_vcpus(st, 2, NULL), 0);
	fx_vcpu(&c, &st->vcpus[0], 0);
	fx_vcpu(&c, &st->vcpus[1], 1);

	cr_assert_eq(snap_state_add_device(st, "serial", 3, &dev, NULL), 0);
	cr_assert_eq(snap_dev_put_u64(dev, "ier", 0x0f, NULL), 0);
	cr_assert_eq(snap_dev_put_u64(dev, "big", UINT64_MAX, NULL), 0);
	for (size_t i = 0; i < sizeof(fifo); i++)
		fifo[i] = (uint8_t)(0xa0 + i);
	cr_assert_eq(snap_dev_put_bin(dev, "rx_fifo", fifo, sizeof(fifo), NULL), 0);
	cr_assert_eq(snap_dev_put_bin(dev, "empty", NULL, 0, NULL), 0);
	cr_assert_eq(snap_state_add_device(st, "i8042", 1, &dev, NULL), 0);
	cr_assert_eq(snap_dev_put_u64(dev, "status", 0x1c, NULL), 0);
	cr_assert_eq(snap_state_validate(st, NULL), 0);
}

/*
 * fx_fill_state with the device sections ember itself writes instead of the generic
 * ones, for tools that check device invariants too (ember-snap verify).
 */
static FX_UNUSED void fx_fill_ember_state(struct snap_state *st)
{
	struct serial_state ss = { .lcr = 0x03, .mcr = 0x08, .lsr = 0x60, .msr = 0xb0, .iir = 0x01 };
	struct i8042_state ks = { .status = 0x1c, .cmd_byte = 0x04 };
	struct snap_device *dev;
	struct snap_err se;
	struct errbuf eb;

	fx_fill_state(st);
	/* drop the generic devices: keep the state's storage, forget the sections */
	for (uint32_t i = 0; i < st->nr_devices; i++) {
		for (uint32_t f = 0; f < st->devices[i].nr_fields; f++)
			free(st->devices[i].fields[f].bin);
		free(st->devices[i].fields);
		memset(&st->devices[i], 0, sizeof(st->devices[i]));
	}
	st->nr_devices = 0;
	cr_assert_eq(serial_state_validate(&ss, &eb), 0, "%s", eb.msg);
	cr_assert_eq(snap_state_add_device(st, "serial", SERIAL_STATE_VERSION, &dev, &se), 0);
	cr_assert_eq(serial_encode(&ss, dev, &se), 0, "%s", se.msg);
	cr_assert_eq(snap_state_add_device(st, "i8042", I8042_STATE_VERSION, &dev, &se), 0);
	cr_assert_eq(i8042_encode(&ks, dev, &se), 0, "%s", se.msg);
	cr_assert_eq(snap_state_add_device(st, "guest-abi", ABI_STATE_VERSION, &dev, &se), 0);
	cr_assert_eq(snap_dev_put_u64(dev, "ready_seen", 1, &se), 0);
	cr_assert_eq(devices_check_state(st, &eb), 0, "%s", eb.msg);
}

/* Preamble + body, CRC computed: a file that reaches the decoder proper. */
static FX_UNUSED uint8_t *fx_wrap(const void *body, size_t len, size_t *out_len)
{
	uint8_t *f = malloc(len + SNAP_PREAMBLE_SIZE);
	uint32_t crc = snap_crc32c(0, body, len);

	cr_assert(f);
	memcpy(f, SNAP_MAGIC, 8);
	for (int i = 0; i < 4; i++) {
		f[8 + i] = (uint8_t)(len >> (8 * i));
		f[12 + i] = (uint8_t)(crc >> (8 * i));
	}
	memcpy(f + SNAP_PREAMBLE_SIZE, body, len);
	*out_len = len + SNAP_PREAMBLE_SIZE;
	return f;
}

/* Recomputes the preamble of a state file whose body was edited in place. */
static FX_UNUSED void fx_fix_preamble(uint8_t *f, size_t len)
{
	uint32_t body = (uint32_t)(len - SNAP_PREAMBLE_SIZE), crc = snap_crc32c(0, f + SNAP_PREAMBLE_SIZE, body);

	for (int i = 0; i < 4; i++) {
		f[8 + i] = (uint8_t)(body >> (8 * i));
		f[12 + i] = (uint8_t)(crc >> (8 * i));
	}
}

static FX_UNUSED uint8_t *fx_encode(const struct snap_state *st, size_t *len)
{
	struct snap_err err = { "" };
	uint8_t *buf = NULL;

	cr_assert_eq(snap_state_encode(st, &buf, len, &err), 0, "encode: %s", err.msg);
	return buf;
}

/* ---- msgpack object surgery: decode a valid body, edit the tree, re-pack ---- */
struct fx_tree {
	msgpack_zone zone;
	msgpack_object root;
	uint8_t *file; /* the original encoding; strings in the tree point into it */
};

static FX_UNUSED void fx_tree_from_state(struct fx_tree *t, const struct snap_state *st)
{
	size_t len, off = 0;

	t->file = fx_encode(st, &len);
	cr_assert(msgpack_zone_init(&t->zone, 4096));
	cr_assert_eq(msgpack_unpack((const char *)t->file + SNAP_PREAMBLE_SIZE, len - SNAP_PREAMBLE_SIZE,
				    &off, &t->zone, &t->root), MSGPACK_UNPACK_SUCCESS);
}

static FX_UNUSED void fx_tree_free(struct fx_tree *t)
{
	msgpack_zone_destroy(&t->zone);
	free(t->file);
}

/* The value at a dotted path of map keys and [n] indices, e.g. "vcpus[1].sregs.cs". */
static FX_UNUSED msgpack_object *fx_at(msgpack_object *o, const char *path)
{
	char key[64];

	while (*path) {
		if (*path == '.')
			path++;
		if (*path == '[') {
			unsigned long i = strtoul(path + 1, (char **)&path, 10);
			cr_assert_eq(*path, ']');
			path++;
			cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
			cr_assert_lt(i, o->via.array.size);
			o = &o->via.array.ptr[i];
			continue;
		}
		size_t n = strcspn(path, ".[");
		cr_assert_lt(n, sizeof(key));
		memcpy(key, path, n);
		key[n] = '\0';
		path += n;
		cr_assert_eq(o->type, MSGPACK_OBJECT_MAP, "not a map at %s", key);
		msgpack_object *found = NULL;
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			msgpack_object *k = &o->via.map.ptr[i].key;
			if (k->via.str.size == n && !memcmp(k->via.str.ptr, key, n))
				found = &o->via.map.ptr[i].val;
		}
		cr_assert(found, "no key %s", key);
		o = found;
	}
	return o;
}

static FX_UNUSED msgpack_object fx_str(const char *s)
{
	msgpack_object o = { .type = MSGPACK_OBJECT_STR };
	o.via.str.ptr = s;
	o.via.str.size = (uint32_t)strlen(s);
	return o;
}

static FX_UNUSED msgpack_object fx_uint(uint64_t v)
{
	msgpack_object o = { .type = MSGPACK_OBJECT_POSITIVE_INTEGER };
	o.via.u64 = v;
	return o;
}

/* Adds (or appends a duplicate of) key = val to the map at o. */
static FX_UNUSED void fx_map_add(struct fx_tree *t, msgpack_object *o, const char *key, msgpack_object val)
{
	uint32_t n = o->via.map.size;
	msgpack_object_kv *kv = msgpack_zone_malloc(&t->zone, (n + 1) * sizeof(*kv));

	cr_assert_eq(o->type, MSGPACK_OBJECT_MAP);
	memcpy(kv, o->via.map.ptr, n * sizeof(*kv));
	kv[n].key = fx_str(key);
	kv[n].val = val;
	o->via.map.ptr = kv;
	o->via.map.size = n + 1;
}

/* Removes key from the map at o. */
static FX_UNUSED void fx_map_del(msgpack_object *o, const char *key)
{
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		msgpack_object *k = &o->via.map.ptr[i].key;
		if (k->via.str.size == strlen(key) && !memcmp(k->via.str.ptr, key, k->via.str.size)) {
			memmove(&o->via.map.ptr[i], &o->via.map.ptr[i + 1],
				(o->via.map.size - i - 1) * sizeof(o->via.map.ptr[0]));
			o->via.map.size--;
			return;
		}
	}
	cr_assert_fail("no key %s to delete", key);
}

/* Resizes the array at o to n entries, filling new ones with copies of the last. */
static FX_UNUSED void fx_array_resize(struct fx_tree *t, msgpack_object *o, uint32_t n)
{
	msgpack_object *a = msgpack_zone_malloc(&t->zone, (n ? n : 1) * sizeof(*a));

	cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY);
	cr_assert_gt(o->via.array.size, 0);
	for (uint32_t i = 0; i < n; i++)
		a[i] = o->via.array.ptr[i < o->via.array.size ? i : o->via.array.size - 1];
	o->via.array.ptr = a;
	o->via.array.size = n;
}

/* Packs the tree into a state file with a valid preamble. */
static FX_UNUSED uint8_t *fx_tree_file(const struct fx_tree *t, size_t *len)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint8_t *f;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	cr_assert_eq(msgpack_pack_object(&pk, t->root), 0);
	f = fx_wrap(sb.data, sb.size, len);
	msgpack_sbuffer_destroy(&sb);
	return f;
}

/* Decodes a tree's file; returns the result and the message in err. */
static FX_UNUSED int fx_decode_tree(const struct fx_tree *t, struct snap_err *err)
{
	struct snap_state st;
	size_t len;
	uint8_t *f = fx_tree_file(t, &len);
	int ret = snap_state_decode(f, len, &st, err);

	if (!ret)
		snap_state_free(&st);
	free(f);
	return ret;
}

/* ---- scratch directories ---- */
static FX_UNUSED int fx_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb; (void)flag; (void)ftw;
	return remove(p);
}

static FX_UNUSED void fx_rm_rf(const char *path)
{
	nftw(path, fx_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static FX_UNUSED char *fx_tmpdir(void)
{
	char *d = strdup("/tmp/snapfmt-test-XXXXXX");

	cr_assert(d && mkdtemp(d));
	return d;
}

static FX_UNUSED char *fx_path(const char *dir, const char *name)
{
	char *p = NULL;

	cr_assert(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

/* Number of entries in dir other than . and .. */
static FX_UNUSED int fx_count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	cr_assert(d, "opendir %s", dir);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* Writes a snapshot of st with memory image mem (st->memory.size bytes) to dir. */
static FX_UNUSED void fx_write_snapshot(const char *dir, const struct snap_state *st, const uint8_t *mem)
{
	struct snap_err err = { "" };
	struct snap_writer *w;

	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	if (st->memory.kind == SNAP_MEM_DIFF)
		cr_assert_eq(snap_writer_write_ranges(w, mem, st->memory.size, st->memory.ranges,
						      st->memory.nr_ranges, &err), 0, "%s", err.msg);
	else
		cr_assert_eq(snap_writer_write_sparse(w, 0, mem, st->memory.size, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_commit(w, st, &err), 0, "%s", err.msg);
}

#endif
