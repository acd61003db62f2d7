/*
 * Semantic validation of a whole state: the relations the schema walk cannot see
 * (versions, ids, memory layout, vCPU ids, device names). Run on every decode and
 * before every encode, so ember never writes a snapshot it would refuse to read.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "snapfmt_int.h"

#define PAGE_MASK ((uint64_t)SNAP_PAGE_SIZE - 1)

static bool str_terminated(const char *s, size_t size)
{
	return memchr(s, '\0', size) != NULL;
}

/* Header strings end up on terminals (ember-snap info): printable ASCII only. */
static bool printable_ascii(const char *s)
{
	for (; *s; s++)
		if (*s < 0x20 || *s > 0x7e)
			return false;
	return true;
}

static bool is_id(const char *s)
{
	size_t i;

	for (i = 0; i < SNAP_ID_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s[i] == '\0';
}

static int validate_header(const struct snap_state *st, struct snap_err *err)
{
	const struct snap_header *h = &st->header;

	if (h->major > SNAP_FORMAT_MAJOR)
		return snap_err_set(err, -ENOTSUP, "snapshot format %u.%u is newer than this ember (%u.%u)",
				    h->major, h->minor, SNAP_FORMAT_MAJOR, SNAP_FORMAT_MINOR);
	if (h->major < SNAP_FORMAT_MAJOR)
		return snap_err_set(err, -ENOTSUP, "snapshot format %u.%u is not supported (this ember reads %u.x)",
				    h->major, h->minor, SNAP_FORMAT_MAJOR);
	if (!str_terminated(h->ember_version, sizeof(h->ember_version)) ||
	    !str_terminated(h->arch, sizeof(h->arch)) ||
	    !str_terminated(h->cpu.vendor, sizeof(h->cpu.vendor)) ||
	    !str_terminated(h->id, sizeof(h->id)) || !str_terminated(h->parent, sizeof(h->parent)))
		return snap_err_set(err, -EINVAL, "header: a string field is not NUL-terminated");
	if (!printable_ascii(h->ember_version) || !printable_ascii(h->cpu.vendor) || !printable_ascii(h->arch))
		return snap_err_set(err, -EINVAL, "header: ember_version, arch and cpu.vendor must be printable ASCII");
	if (strcmp(h->arch, "x86_64"))
		return snap_err_set(err, -ENOTSUP, "header.arch: \"%s\" snapshots cannot be restored by this ember (x86_64)",
				    h->arch);
	if (!is_id(h->id))
		return snap_err_set(err, -EINVAL, "header.id: expected %u lowercase hex characters", SNAP_ID_LEN);
	if (h->parent[0] && !is_id(h->parent))
		return snap_err_set(err, -EINVAL, "header.parent: expected \"\" or %u lowercase hex characters",
				    SNAP_ID_LEN);
	if (h->parent[0] && !strcmp(h->parent, h->id))
		return snap_err_set(err, -EINVAL, "header.parent: equals header.id");
	return 0;
}

/* The lz4-only keys: all present and sane for lz4, all absent for raw. */
static int validate_encoding(const struct snap_memory *m, struct snap_err *err)
{
	if (!str_terminated(m->index_file, sizeof(m->index_file)))
		return snap_err_set(err, -EINVAL, "memory.index_file: not NUL-terminated");
	if (m->encoding == SNAP_ENC_RAW) {
		if (m->chunk_size || m->index_file[0] || m->compressed_size)
			return snap_err_set(err, -EINVAL, "memory: chunk_size, index_file and compressed_size "
					    "belong to the lz4 encoding, not raw");
		return 0;
	}
	if (m->chunk_size < SNAP_LZ4_CHUNK_MIN || m->chunk_size > SNAP_LZ4_CHUNK_MAX ||
	    (m->chunk_size & (m->chunk_size - 1)))
		return snap_err_set(err, -EINVAL, "memory.chunk_size: %u (must be a power of two, %u..%u)",
				    m->chunk_size, SNAP_LZ4_CHUNK_MIN, SNAP_LZ4_CHUNK_MAX);
	if (!snap_plain_name_ok(m->index_file))
		return snap_err_set(err, -EINVAL, "memory.index_file: must be a plain file name (not empty, no '/', not . or ..)");
	if (!strcmp(m->index_file, m->file) || !strcmp(m->index_file, SNAP_STATE_FILE) ||
	    !strcmp(m->file, SNAP_STATE_FILE))
		return snap_err_set(err, -EINVAL, "memory: file \"%s\", index_file \"%s\" and the state file "
				    "must be three different files", m->file, m->index_file);
	return 0;
}

/* 1.3 digests: absent, or one CRC32C per block of the image and anchors inside it. */
static int validate_digests(const struct snap_memory *m, struct snap_err *err)
{
	uint64_t pages = m->size / SNAP_PAGE_SIZE;

	if (!m->digest_block) {
		if (m->digests_len)
			return snap_err_set(err, -EINVAL, "memory.digests: given without memory.digest_block");
	} else {
		uint64_t blocks;

		if (m->digest_block < SNAP_PAGE_SIZE || m->digest_block > (1u << 30) ||
		    (m->digest_block & (m->digest_block - 1)))
			return snap_err_set(err, -EINVAL, "memory.digest_block: %u (must be a power of two, "
					    "%u..%u)", m->digest_block, SNAP_PAGE_SIZE, 1u << 30);
		blocks = (m->size + m->digest_block - 1) / m->digest_block;
		if (m->digests_len != blocks * 4 || !m->digests)
			return snap_err_set(err, -EINVAL, "memory.digests: %u bytes, expected %" PRIu64
					    " (4 per %u-byte block of memory.size)", m->digests_len,
					    blocks * 4, m->digest_block);
	}
	if (m->nr_anchors > SNAP_MAX_ANCHORS || (m->nr_anchors && !m->anchors))
		return snap_err_set(err, -EINVAL, "memory.anchors: %u entries (at most %u)", m->nr_anchors,
				    SNAP_MAX_ANCHORS);
	for (uint32_t i = 0; i < m->nr_anchors; i++)
		if (m->anchors[i].page >= pages)
			return snap_err_set(err, -EINVAL, "memory.anchors[%u].page: 0x%" PRIx64 " is past the "
					    "memory size (0x%" PRIx64 " pages)", i, m->anchors[i].page, pages);
	return 0;
}

static int validate_memory(const struct snap_state *st, struct snap_err *err)
{
	const struct snap_memory *m = &st->memory;
	uint64_t pages, prev_end = 0;
	int ret;

	if (!str_terminated(m->file, sizeof(m->file)) || !snap_plain_name_ok(m->file))
		return snap_err_set(err, -EINVAL, "memory.file: must be a plain file name (not empty, no '/', not . or ..)");
	if (m->page_size != SNAP_PAGE_SIZE)
		return snap_err_set(err, -EINVAL, "memory.page_size: %u (only %u is supported)", m->page_size,
				    SNAP_PAGE_SIZE);
	if (m->size == 0 || (m->size & PAGE_MASK) || m->size > SNAP_MAX_GPA)
		return snap_err_set(err, -EINVAL, "memory.size: 0x%" PRIx64 " (must be a non-zero multiple of %u, at most 2^52)",
				    m->size, SNAP_PAGE_SIZE);
	if (m->encoding >= SNAP_NR_ENCODINGS)
		return snap_err_set(err, -EINVAL, "memory.encoding: unknown encoding %u", m->encoding);
	ret = validate_encoding(m, err);
	if (!ret)
		ret = validate_digests(m, err);
	if (ret)
		return ret;
	if (m->kind >= SNAP_NR_KINDS)
		return snap_err_set(err, -EINVAL, "memory.kind: unknown kind %u", m->kind);
	if (m->kind == SNAP_MEM_FULL) {
		if (m->nr_ranges)
			return snap_err_set(err, -EINVAL, "memory.ranges: a full snapshot has no ranges (%u given)",
					    m->nr_ranges);
		if (st->header.parent[0])
			return snap_err_set(err, -EINVAL, "header.parent: a full snapshot has no parent");
		return 0;
	}
	if (!st->header.parent[0])
		return snap_err_set(err, -EINVAL, "header.parent: a diff snapshot needs the id of its base");
	if (m->nr_ranges > SNAP_MAX_RANGES || (m->nr_ranges && !m->ranges))
		return snap_err_set(err, -EINVAL, "memory.ranges: %u ranges (at most %u)", m->nr_ranges,
				    SNAP_MAX_RANGES);
	pages = m->size / SNAP_PAGE_SIZE;
	for (uint32_t i = 0; i < m->nr_ranges; i++) {
		const struct snap_range *r = &m->ranges[i];

		if (r->count == 0)
			return snap_err_set(err, -EINVAL, "memory.ranges[%u]: empty range", i);
		if (r->first >= pages || r->count > pages - r->first)
			return snap_err_set(err, -EINVAL, "memory.ranges[%u]: pages 0x%" PRIx64 "+0x%" PRIx64
					    " extend past the memory size (0x%" PRIx64 " pages)", i, r->first, r->count, pages);
		if (i && r->first <= prev_end)
			return snap_err_set(err, -EINVAL, "memory.ranges[%u]: starts at page 0x%" PRIx64
					    ", not after the end of the previous range (0x%" PRIx64 "); ranges must be sorted, disjoint and non-adjacent",
					    i, r->first, prev_end);
		prev_end = r->first + r->count;
	}
	return 0;
}

static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

static int validate_regions(const struct snap_state *st, struct snap_err *err)
{
	const struct snap_vm *vm = &st->vm;

	if (vm->nr_regions == 0 || vm->nr_regions > SNAP_MAX_REGIONS)
		return snap_err_set(err, -EINVAL, "vm.regions: %u regions (1..%u allowed)", vm->nr_regions,
				    SNAP_MAX_REGIONS);
	for (uint32_t i = 0; i < vm->nr_regions; i++) {
		const struct snap_region *r = &vm->regions[i];

		if (r->size == 0)
			return snap_err_set(err, -EINVAL, "vm.regions[%u].size: zero", i);
		if ((r->gpa | r->size | r->file_offset) & PAGE_MASK)
			return snap_err_set(err, -EINVAL, "vm.regions[%u]: gpa 0x%" PRIx64 ", size 0x%" PRIx64
					    ", file_offset 0x%" PRIx64 " must all be multiples of %u",
					    i, r->gpa, r->size, r->file_offset, SNAP_PAGE_SIZE);
		if (r->size > SNAP_MAX_GPA || r->gpa > SNAP_MAX_GPA - r->size)
			return snap_err_set(err, -EINVAL, "vm.regions[%u]: gpa 0x%" PRIx64 " + size 0x%" PRIx64
					    " goes beyond 2^52", i, r->gpa, r->size);
		if (r->file_offset > st->memory.size || r->size > st->memory.size - r->file_offset)
			return snap_err_set(err, -EINVAL, "vm.regions[%u]: file range 0x%" PRIx64 "+0x%" PRIx64
					    " is outside memory.size 0x%" PRIx64, i, r->file_offset, r->size,
					    st->memory.size);
		for (uint32_t j = 0; j < i; j++) {
			const struct snap_region *o = &vm->regions[j];

			if (overlap(r->gpa, r->size, o->gpa, o->size))
				return snap_err_set(err, -EINVAL, "vm.regions[%u]: guest addresses 0x%" PRIx64 "+0x%" PRIx64
						    " overlap vm.regions[%u]", i, r->gpa, r->size, j);
			if (overlap(r->file_offset, r->size, o->file_offset, o->size))
				return snap_err_set(err, -EINVAL, "vm.regions[%u]: file range 0x%" PRIx64 "+0x%" PRIx64
						    " overlaps vm.regions[%u]", i, r->file_offset, r->size, j);
		}
	}
	return 0;
}

static int validate_vcpus(const struct snap_state *st, struct snap_err *err)
{
	uint64_t ids = 0;

	if (st->nr_vcpus == 0 || st->nr_vcpus > SNAP_MAX_VCPUS || !st->vcpus)
		return snap_err_set(err, -EINVAL, "vcpus: %u vCPUs (1..%u supported)", st->nr_vcpus,
				    SNAP_MAX_VCPUS);
	for (uint32_t i = 0; i < st->nr_vcpus; i++) {
		const struct snap_vcpu *v = &st->vcpus[i];

		if (v->id >= st->nr_vcpus)
			return snap_err_set(err, -EINVAL, "vcpus[%u].id: %u is out of range (%u vCPUs: ids must be 0..%u)",
					    i, v->id, st->nr_vcpus, st->nr_vcpus - 1);
		if (ids & (1ull << v->id))
			return snap_err_set(err, -EINVAL, "vcpus[%u].id: duplicate vCPU id %u", i, v->id);
		ids |= 1ull << v->id;
		if (v->xsave_len < SNAP_XSAVE_MIN || v->xsave_len > SNAP_XSAVE_MAX || !v->xsave)
			return snap_err_set(err, -EINVAL, "vcpus[%u].xsave: %u bytes (%u..%u allowed)", i,
					    v->xsave_len, SNAP_XSAVE_MIN, SNAP_XSAVE_MAX);
		if (v->nr_xcrs > SNAP_MAX_XCRS)
			return snap_err_set(err, -EINVAL, "vcpus[%u].xcrs: %u entries (at most %u)", i,
					    v->nr_xcrs, SNAP_MAX_XCRS);
		if (v->nr_msrs > SNAP_MAX_MSRS || (v->nr_msrs && !v->msrs))
			return snap_err_set(err, -EINVAL, "vcpus[%u].msrs: %u entries (at most %u)", i,
					    v->nr_msrs, SNAP_MAX_MSRS);
		if (v->nr_cpuid > SNAP_MAX_CPUID || (v->nr_cpuid && !v->cpuid))
			return snap_err_set(err, -EINVAL, "vcpus[%u].cpuid: %u entries (at most %u)", i,
					    v->nr_cpuid, SNAP_MAX_CPUID);
	}
	return 0;
}

static int validate_device(const struct snap_state *st, uint32_t i, struct snap_err *err)
{
	const struct snap_device *d = &st->devices[i];
	char what[64];
	int ret;

	snprintf(what, sizeof(what), "devices[%u].name", i);
	ret = snap_dev_check_name(what, d->name, strnlen(d->name, sizeof(d->name)), err);
	if (ret)
		return ret;
	for (uint32_t j = 0; j < i; j++)
		if (!strcmp(st->devices[j].name, d->name))
			return snap_err_set(err, -EINVAL, "devices[%u].name: duplicate device name \"%s\"", i, d->name);
	if (d->nr_fields > SNAP_DEV_MAX_FIELDS || (d->nr_fields && !d->fields))
		return snap_err_set(err, -EINVAL, "device %s: %u fields (at most %u)", d->name, d->nr_fields,
				    SNAP_DEV_MAX_FIELDS);
	for (uint32_t k = 0; k < d->nr_fields; k++) {
		const struct snap_dev_field *f = &d->fields[k];

		snprintf(what, sizeof(what), "device %s: field", d->name);
		ret = snap_dev_check_name(what, f->name, strnlen(f->name, sizeof(f->name)), err);
		if (ret)
			return ret;
		for (uint32_t j = 0; j < k; j++)
			if (!strcmp(d->fields[j].name, f->name))
				return snap_err_set(err, -EINVAL, "device %s: field %s: duplicate", d->name, f->name);
		if (f->type == SNAP_DEV_BIN) {
			if (f->len > SNAP_DEV_BIN_MAX || (f->len && !f->bin))
				return snap_err_set(err, -EINVAL, "device %s: field %s: %u bytes (at most %u)",
						    d->name, f->name, f->len, SNAP_DEV_BIN_MAX);
		} else if (f->type != SNAP_DEV_U64) {
			return snap_err_set(err, -EINVAL, "device %s: field %s: unknown type %u", d->name,
					    f->name, f->type);
		}
	}
	return 0;
}

int snap_state_validate(const struct snap_state *st, struct snap_err *err)
{
	int ret;

	ret = validate_header(st, err);
	if (!ret)
		ret = validate_memory(st, err);
	if (!ret)
		ret = validate_regions(st, err);
	if (!ret)
		ret = validate_vcpus(st, err);
	if (ret)
		return ret;
	if (st->nr_devices > SNAP_MAX_DEVICES || (st->nr_devices && !st->devices))
		return snap_err_set(err, -EINVAL, "devices: %u devices (at most %u)", st->nr_devices,
				    SNAP_MAX_DEVICES);
	for (uint32_t i = 0; i < st->nr_devices; i++) {
		ret = validate_device(st, i, err);
		if (ret)
			return ret;
	}
	return 0;
}
