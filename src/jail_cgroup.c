/*
 * ember jail's cgroup: one group per VM, PARENT/ID, with the limits of --cgroup. The
 * keys are cgroup v2's (memory.max, cpu.max, pids.max); on a machine whose memory, cpu
 * and pids controllers are bound to v1 hierarchies they are written as their v1
 * equivalents (memory.limit_in_bytes, cpu.cfs_period_us + cpu.cfs_quota_us, pids.max),
 * one group per hierarchy. Which one was used is in the ember-jail line (cgroup=v1|v2).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jail.h"

enum { CG_MEMORY, CG_CPU, CG_PIDS };
static const char *const ctrl_names[JAIL_CG_CTRLS] = { "memory", "cpu", "pids" };

const char *jail_cgroup_name(enum jail_cg_version v)
{
	return v == JAIL_CG_V2 ? "v2" : v == JAIL_CG_V1 ? "v1" : "none";
}

static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* A byte count: digits with an optional K, M or G suffix (binary), or "max". */
static bool parse_bytes(const char *v, unsigned long long *out)
{
	char *end;
	unsigned long long n;

	if (!strcmp(v, "max")) {
		*out = ~0ull;
		return true;
	}
	if (*v < '0' || *v > '9')
		return false;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno)
		return false;
	switch (*end) {
	case 0: break;
	case 'K': n <<= 10; end++; break;
	case 'M': n <<= 20; end++; break;
	case 'G': n <<= 30; end++; break;
	default: return false;
	}
	if (*end || n == 0 || n > (1ull << 50))
		return false;
	*out = n;
	return true;
}

/* cpu.max: "QUOTA PERIOD" or "QUOTA" (period 100000), QUOTA a number or "max". */
static bool parse_cpu(const char *v, char *quota, char *period)
{
	const char *sp = strchr(v, ' ');
	size_t ql = sp ? (size_t)(sp - v) : strlen(v);

	if (ql == 0 || ql > 15)
		return false;
	memcpy(quota, v, ql);
	quota[ql] = 0;
	snprintf(period, 16, "%s", sp ? sp + 1 : "100000");
	if (strlen(period) > 7 || !all_digits(period) || atol(period) < 1000 ||
	    atol(period) > 1000000)
		return false;
	return !strcmp(quota, "max") || (all_digits(quota) && atol(quota) >= 1000);
}

int jail_cgroup_check(const char *key, const char *value, struct errbuf *eb)
{
	unsigned long long b;
	char q[16], p[16];

	if (!strcmp(key, "memory.max")) {
		if (!parse_bytes(value, &b))
			return errbuf_set(eb, -EINVAL, "--cgroup memory.max: '%s' is not a size "
					  "(bytes, or with K, M, G) or 'max'", value);
	} else if (!strcmp(key, "cpu.max")) {
		if (!parse_cpu(value, q, p))
			return errbuf_set(eb, -EINVAL, "--cgroup cpu.max: '%s' is not 'QUOTA "
					  "[PERIOD]' (microseconds, quota >= 1000 or 'max', period "
					  "1000..1000000)", value);
	} else if (!strcmp(key, "pids.max")) {
		if (strcmp(value, "max") && (!all_digits(value) || strlen(value) > 9 ||
					     atol(value) < 1))
			return errbuf_set(eb, -EINVAL, "--cgroup pids.max: '%s' is not a count or "
					  "'max'", value);
	} else {
		return errbuf_set(eb, -EINVAL, "--cgroup: unknown key '%s' (memory.max, cpu.max, "
				  "pids.max)", key);
	}
	return 0;
}

static unsigned key_ctrl(const char *key)
{
	return !strncmp(key, "memory.", 7) ? CG_MEMORY : !strncmp(key, "cpu.", 4) ? CG_CPU : CG_PIDS;
}

int jail_cgroup_locate_at(struct jail_cgroup *cg, const struct jail_opts *o,
			  enum jail_cg_version v, const char *const mnt[JAIL_CG_CTRLS],
			  const char *const own[JAIL_CG_CTRLS], struct errbuf *eb)
{
	memset(cg, 0, sizeof(*cg));
	for (unsigned i = 0; i < o->nr_cg; i++)
		cg->needed |= 1u << key_ctrl(o->cg[i].key);
	for (unsigned c = 0; c < JAIL_CG_CTRLS; c++) {
		unsigned k = cg->nr;
		/* absolute: from the hierarchy's root; relative: below our own group */
		const char *below = o->cgroup_parent[0] == '/' ? "" : own[c];
		const char *sep = o->cgroup_parent[0] == '/' ? "" : "/";
		int n;

		if (!(cg->needed & (1u << c)) || (v == JAIL_CG_V2 && cg->nr == 1))
			continue;
		n = snprintf(cg->leaf[k], PATH_MAX, "%s%s%s%s/%s", mnt[c],
			     strcmp(below, "/") ? below : "", sep, o->cgroup_parent, o->id);
		if (n >= PATH_MAX)
			return errbuf_set(eb, -ENAMETOOLONG, "cgroup path too long");
		snprintf(cg->mnt[k], PATH_MAX, "%s", mnt[c]);
		cg->ctrl[k] = c;
		cg->nr++;
	}
	cg->version = v;
	return 0;
}

/* ---- finding the hierarchies --------------------------------------------------------- */

static bool has_word(const char *list, const char *word, char sep)
{
	size_t wl = strlen(word);

	for (const char *p = list; p && *p;) {
		const char *e = strchr(p, sep);
		size_t l = e ? (size_t)(e - p) : strlen(p);

		if (l == wl && !strncmp(p, word, wl))
			return true;
		p = e ? e + 1 : NULL;
	}
	return false;
}

struct hier {
	char mnt[PATH_MAX], root[PATH_MAX], own[PATH_MAX];
	bool found;
};

/* The jailer's own group in the hierarchy whose /proc/self/cgroup line matches. */
static void own_group(struct hier *h, unsigned ctrl, bool v2)
{
	FILE *f = fopen("/proc/self/cgroup", "re");
	char line[PATH_MAX + 64];

	snprintf(h->own, sizeof(h->own), "/");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL, *nl;

		if (!c2)
			continue;
		*c2 = 0;
		if (v2 ? c1[1] != 0 : !has_word(c1 + 1, ctrl_names[ctrl], ','))
			continue;
		if ((nl = strchr(c2 + 1, '\n')))
			*nl = 0;
		/* a mount of a subtree (a container's) shows its root as "/" */
		const char *p = c2 + 1;
		size_t rl = strlen(h->root);

		if (strcmp(h->root, "/") && !strncmp(p, h->root, rl))
			p += rl;
		snprintf(h->own, sizeof(h->own), "%s", *p ? p : "/");
		break;
	}
	fclose(f);
}

static bool v2_offers(const char *mnt, unsigned needed)
{
	char p[PATH_MAX + 32], buf[256] = "";
	int fd;
	ssize_t n;

	snprintf(p, sizeof(p), "%s/cgroup.controllers", mnt);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	if (buf[n - 1] == '\n')
		buf[n - 1] = 0;
	for (unsigned c = 0; c < JAIL_CG_CTRLS; c++)
		if ((needed & (1u << c)) && !has_word(buf, ctrl_names[c], ' '))
			return false;
	return true;
}

int jail_cgroup_locate(struct jail_cgroup *cg, const struct jail_opts *o, struct errbuf *eb)
{
	static struct hier v1[JAIL_CG_CTRLS], v2;
	char line[3 * PATH_MAX];
	const char *mnt[JAIL_CG_CTRLS], *own[JAIL_CG_CTRLS];
	unsigned needed = 0;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	for (unsigned i = 0; i < o->nr_cg; i++)
		needed |= 1u << key_ctrl(o->cg[i].key);
	memset(v1, 0, sizeof(v1));
	memset(&v2, 0, sizeof(v2));
	if (!f)
		return errbuf_set(eb, -errno, "/proc/self/mountinfo: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS */
		char root[PATH_MAX], mp[PATH_MAX], fstype[32], super[512];
		char *dash = strstr(line, " - ");

		if (!dash || sscanf(line, "%*s %*s %*s %4095s %4095s", root, mp) != 2 ||
		    sscanf(dash + 3, "%31s %*s %511s", fstype, super) != 2)
			continue;
		if (!strcmp(fstype, "cgroup2") && !v2.found && v2_offers(mp, needed)) {
			snprintf(v2.mnt, sizeof(v2.mnt), "%s", mp);
			snprintf(v2.root, sizeof(v2.root), "%s", root);
			v2.found = true;
		} else if (!strcmp(fstype, "cgroup")) {
			for (unsigned c = 0; c < JAIL_CG_CTRLS; c++)
				if (!v1[c].found && has_word(super, ctrl_names[c], ',')) {
					snprintf(v1[c].mnt, sizeof(v1[c].mnt), "%s", mp);
					snprintf(v1[c].root, sizeof(v1[c].root), "%s", root);
					v1[c].found = true;
				}
		}
	}
	fclose(f);
	if (v2.found) {
		own_group(&v2, 0, true);
		for (unsigned c = 0; c < JAIL_CG_CTRLS; c++) {
			mnt[c] = v2.mnt;
			own[c] = v2.own;
		}
		return jail_cgroup_locate_at(cg, o, JAIL_CG_V2, mnt, own, eb);
	}
	for (unsigned c = 0; c < JAIL_CG_CTRLS; c++) {
		if ((needed & (1u << c)) && !v1[c].found)
			return errbuf_set(eb, -ENOENT, "cgroup: no cgroup2 mount offers the %s "
					  "controller, and no cgroup v1 hierarchy has it",
					  ctrl_names[c]);
		own_group(&v1[c], c, false);
		mnt[c] = v1[c].mnt;
		own[c] = v1[c].own;
	}
	return jail_cgroup_locate_at(cg, o, JAIL_CG_V1, mnt, own, eb);
}

/* ---- creating, joining, removing ------------------------------------------------------ */

static int write_file(const char *dir, const char *name, const char *val, struct errbuf *eb)
{
	char p[PATH_MAX + 64];
	int fd;
	ssize_t n;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return errbuf_set(eb, -errno, "cgroup: %s: %s", p, strerror(errno));
	n = write(fd, val, strlen(val));
	if (n != (ssize_t)strlen(val)) {
		int e = n < 0 ? errno : EIO;

		close(fd);
		return errbuf_set(eb, -e, "cgroup: writing '%s' to %s: %s", val, p, strerror(e));
	}
	close(fd);
	return 0;
}

/* v2: every level from the hierarchy's root down to the per-VM group's parent passes
 * the controllers on (cgroup.subtree_control), creating the levels that are missing. */
static int v2_path(const struct jail_cgroup *cg, struct errbuf *eb)
{
	char p[PATH_MAX];
	size_t i = strlen(cg->mnt[0]);
	int r;

	snprintf(p, sizeof(p), "%s", cg->leaf[0]);
	*strrchr(p, '/') = 0; /* the per-VM group's parent: the last level to pass them on */
	for (;;) {
		char save = p[i];

		p[i] = 0;
		if (i > strlen(cg->mnt[0]) && mkdir(p, 0755) && errno != EEXIST)
			return errbuf_set(eb, -errno, "cgroup: creating %s: %s", p, strerror(errno));
		for (unsigned c = 0; c < JAIL_CG_CTRLS; c++) {
			char w[16];

			if (!(cg->needed & (1u << c)))
				continue;
			snprintf(w, sizeof(w), "+%s", ctrl_names[c]);
			if ((r = write_file(p, "cgroup.subtree_control", w, eb))) {
				char why[sizeof(eb->msg)];

				snprintf(why, sizeof(why), "%s", eb->msg);
				return errbuf_set(eb, r, "%s (a group with processes in it cannot "
						  "pass controllers on: an absolute --cgroup-parent "
						  "puts the groups below the hierarchy's root)", why);
			}
		}
		p[i] = save;
		if (!save)
			return 0;
		for (i++; p[i] && p[i] != '/'; i++)
			;
	}
}

static int set_limit(const struct jail_cgroup *cg, unsigned k, const struct jail_cg_set *s,
		     struct errbuf *eb)
{
	const char *leaf = cg->leaf[k];
	char q[16], per[16], buf[64];
	unsigned long long b;

	if (cg->version == JAIL_CG_V2)
		return write_file(leaf, s->key, s->value, eb);
	if (key_ctrl(s->key) != cg->ctrl[k])
		return 0;
	switch (cg->ctrl[k]) {
	case CG_MEMORY:
		parse_bytes(s->value, &b);
		snprintf(buf, sizeof(buf), "%lld", b == ~0ull ? -1ll : (long long)b);
		return write_file(leaf, "memory.limit_in_bytes", buf, eb);
	case CG_CPU:
		parse_cpu(s->value, q, per);
		if (write_file(leaf, "cpu.cfs_period_us", per, eb))
			return -EIO;
		return write_file(leaf, "cpu.cfs_quota_us", strcmp(q, "max") ? q : "-1", eb);
	default:
		return write_file(leaf, "pids.max", s->value, eb);
	}
}

int jail_cgroup_setup(struct jail_cgroup *cg, const struct jail_opts *o, struct errbuf *eb)
{
	unsigned made = 0;
	int r;

	if (cg->version == JAIL_CG_V2 && (r = v2_path(cg, eb)))
		return r;
	for (unsigned k = 0; k < cg->nr; k++) {
		char parent[PATH_MAX];

		snprintf(parent, sizeof(parent), "%s", cg->leaf[k]);
		*strrchr(parent, '/') = 0;
		/* v1: the parent levels (shared by every VM) stay; v2 made them above */
		for (char *s = parent + strlen(cg->mnt[k]) + 1; cg->version == JAIL_CG_V1 && s;) {
			s = strchr(s, '/');
			if (s)
				*s = 0;
			if (mkdir(parent, 0755) && errno != EEXIST) {
				r = errbuf_set(eb, -errno, "cgroup: creating %s: %s", parent,
					       strerror(errno));
				goto fail;
			}
			if (s)
				*s++ = '/';
		}
		if (mkdir(cg->leaf[k], 0755)) {
			r = errbuf_set(eb, -errno, "cgroup: creating %s: %s%s", cg->leaf[k],
				       strerror(errno), errno == EEXIST ? " (a jail with this id "
				       "runs, or 'ember jail --cleanup' was not run)" : "");
			goto fail;
		}
		made = k + 1;
		for (unsigned i = 0; i < o->nr_cg; i++)
			if ((r = set_limit(cg, k, &o->cg[i], eb)))
				goto fail;
	}
	return 0;
fail:
	for (unsigned k = 0; k < made; k++)
		rmdir(cg->leaf[k]);
	cg->nr = 0;
	return r;
}

int jail_cgroup_join(const struct jail_cgroup *cg, struct errbuf *eb)
{
	int r;

	/* "0": the writing process itself, whatever its PID is called where */
	for (unsigned k = 0; k < cg->nr; k++)
		if ((r = write_file(cg->leaf[k], "cgroup.procs", "0", eb)))
			return r;
	return 0;
}

void jail_cgroup_remove(const struct jail_cgroup *cg)
{
	for (unsigned k = 0; k < cg->nr; k++)
		rmdir(cg->leaf[k]);
}
