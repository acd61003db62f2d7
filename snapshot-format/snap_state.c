/* struct snap_state lifetime: defaults, heap parts, ids, errors. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "snapfmt_int.h"

#ifndef EMBER_VERSION
#define EMBER_VERSION "0.0.0-dev"
#endif

int snap_err_set(struct snap_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (err) {
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return code;
}

int snap_new_id(char out[SNAP_ID_LEN + 1], struct snap_err *err)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t rnd[SNAP_ID_LEN / 2];
	size_t got = 0;

	while (got < sizeof(rnd)) {
		ssize_t n = getrandom(rnd + got, sizeof(rnd) - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return snap_err_set(err, -errno, "snapshot id: getrandom: %s", strerror(errno));
		}
		got += (size_t)n;
	}
	for (size_t i = 0; i < sizeof(rnd); i++) {
		out[2 * i] = hex[rnd[i] >> 4];
		out[2 * i + 1] = hex[rnd[i] & 15];
	}
	out[SNAP_ID_LEN] = '\0';
	return 0;
}

int snap_state_init(struct snap_state *st, struct snap_err *err)
{
	memset(st, 0, sizeof(*st));
	st->header.major = SNAP_FORMAT_MAJOR;
	st->header.minor = SNAP_FORMAT_MINOR;
	snprintf(st->header.ember_version, sizeof(st->header.ember_version), "%s", EMBER_VERSION);
	snprintf(st->header.arch, sizeof(st->header.arch), "x86_64");
	st->header.created = (uint64_t)time(NULL);
	snprintf(st->memory.file, sizeof(st->memory.file), "%s", SNAP_MEMORY_FILE);
	st->memory.page_size = SNAP_PAGE_SIZE;
	st->memory.encoding = SNAP_ENC_RAW;
	st->memory.kind = SNAP_MEM_FULL;
	return snap_new_id(st->header.id, err);
}

static void vcpu_free(struct snap_vcpu *v)
{
	free(v->xsave);
	free(v->msrs);
	free(v->cpuid);
	v->xsave = NULL;
	v->msrs = NULL;
	v->cpuid = NULL;
	v->xsave_len = v->nr_msrs = v->nr_cpuid = 0;
}

void snap_state_free(struct snap_state *st)
{
	if (!st)
		return;
	for (uint32_t i = 0; st->vcpus && i < st->nr_vcpus; i++)
		vcpu_free(&st->vcpus[i]);
	free(st->vcpus);
	for (uint32_t i = 0; st->devices && i < st->nr_devices; i++)
		snap_device_free(&st->devices[i]);
	free(st->devices);
	free(st->memory.ranges);
	snap_memory_clear_digests(&st->memory);
	memset(st, 0, sizeof(*st));
}

int snap_state_set_vcpus(struct snap_state *st, uint32_t n, struct snap_err *err)
{
	struct snap_vcpu *v;

	if (n == 0 || n > SNAP_MAX_VCPUS)
		return snap_err_set(err, -EINVAL, "vcpus: %u vCPUs (1..%u supported)", n, SNAP_MAX_VCPUS);
	v = calloc(n, sizeof(*v));
	if (!v)
		return snap_err_set(err, -ENOMEM, "vcpus: out of memory");
	for (uint32_t i = 0; st->vcpus && i < st->nr_vcpus; i++)
		vcpu_free(&st->vcpus[i]);
	free(st->vcpus);
	for (uint32_t i = 0; i < n; i++)
		v[i].id = i;
	st->vcpus = v;
	st->nr_vcpus = n;
	return 0;
}

int snap_vcpu_set_xsave(struct snap_vcpu *v, const void *data, uint32_t len, struct snap_err *err)
{
	uint8_t *p;

	if (len < SNAP_XSAVE_MIN || len > SNAP_XSAVE_MAX)
		return snap_err_set(err, -EINVAL, "vcpus[%u].xsave: %u bytes (%u..%u allowed)",
				    v->id, len, SNAP_XSAVE_MIN, SNAP_XSAVE_MAX);
	p = malloc(len);
	if (!p)
		return snap_err_set(err, -ENOMEM, "vcpus[%u].xsave: out of memory", v->id);
	if (data)
		memcpy(p, data, len);
	else
		memset(p, 0, len);
	free(v->xsave);
	v->xsave = p;
	v->xsave_len = len;
	return 0;
}

/* Replaces *arr with n zeroed elements. */
static int set_array(void **arr, uint32_t *nr, uint32_t n, uint32_t max, size_t elem,
		     const char *what, uint32_t vcpu, struct snap_err *err)
{
	void *p = NULL;

	if (n > max)
		return snap_err_set(err, -EINVAL, "vcpus[%u].%s: %u entries (at most %u)", vcpu, what, n, max);
	if (n) {
		p = calloc(n, elem);
		if (!p)
			return snap_err_set(err, -ENOMEM, "vcpus[%u].%s: out of memory", vcpu, what);
	}
	free(*arr);
	*arr = p;
	*nr = n;
	return 0;
}

int snap_vcpu_set_msrs(struct snap_vcpu *v, uint32_t n, struct snap_err *err)
{
	void *p = v->msrs;
	int ret = set_array(&p, &v->nr_msrs, n, SNAP_MAX_MSRS, sizeof(*v->msrs), "msrs", v->id, err);

	v->msrs = p;
	return ret;
}

int snap_vcpu_set_cpuid(struct snap_vcpu *v, uint32_t n, struct snap_err *err)
{
	void *p = v->cpuid;
	int ret = set_array(&p, &v->nr_cpuid, n, SNAP_MAX_CPUID, sizeof(*v->cpuid), "cpuid", v->id, err);

	v->cpuid = p;
	return ret;
}

int snap_memory_set_ranges(struct snap_state *st, const struct snap_range *r, uint32_t n,
			   struct snap_err *err)
{
	struct snap_range *p = NULL;

	if (n > SNAP_MAX_RANGES)
		return snap_err_set(err, -EINVAL, "memory.ranges: %u ranges (at most %u)", n, SNAP_MAX_RANGES);
	if (n) {
		p = malloc((size_t)n * sizeof(*p));
		if (!p)
			return snap_err_set(err, -ENOMEM, "memory.ranges: out of memory");
		memcpy(p, r, (size_t)n * sizeof(*p));
	}
	free(st->memory.ranges);
	st->memory.ranges = p;
	st->memory.nr_ranges = n;
	return 0;
}

bool snap_plain_name_ok(const char *name)
{
	return name[0] && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}
