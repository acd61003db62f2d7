/*
 * ember jail's flags (jail_parse, jail_cgroup_check) and where its cgroups go
 * (jail_cgroup_locate_at) for both cgroup versions; the jail itself runs in
 * tests/integration/test_jail.c.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "jail.h"

static struct jail_opts o;
static struct errbuf eb;

static int parse(const char *const *args)
{
	static char *argv[64]; /* o.argv points into it */
	int n = 0;

	argv[n++] = "jail";
	for (; *args; args++)
		argv[n++] = (char *)*args;
	argv[n] = NULL;
	eb.msg[0] = 0;
	return jail_parse(n, argv, &o, &eb);
}

static void refused(const char *needle, const char *const *args)
{
	cr_assert_eq(parse(args), -EINVAL, "accepted");
	cr_assert_not_null(strstr(eb.msg, needle), "'%s' does not say '%s'", eb.msg, needle);
}

Test(jail_parse, a_full_command_line_is_read_with_defaults_for_the_rest)
{
	const char *a[] = { "--id", "vm-1_a", "--uid", "1234", "--gid", "5678", "--cgroup",
			    "memory.max=64M", "--cgroup", "cpu.max=max", "--rlimit", "fsize=4096",
			    "--ro-bind", "/tmp:/snap", "--", "restore", "--snapshot", "/snap", NULL };

	cr_assert_eq(parse(a), 0, "%s", eb.msg);
	cr_assert_str_eq(o.id, "vm-1_a");
	cr_assert_eq(o.uid, 1234);
	cr_assert_eq(o.gid, 5678);
	cr_assert_str_eq(o.root, JAIL_DEFAULT_BASE "/vm-1_a/root");
	cr_assert_eq(o.nr_cg, 2);
	cr_assert_str_eq(o.cg[0].key, "memory.max");
	cr_assert_str_eq(o.cg[0].value, "64M");
	cr_assert_eq(o.nofile, JAIL_DEFAULT_NOFILE);
	cr_assert_eq(o.fsize, 4096);
	cr_assert_eq(o.nr_binds, 1);
	cr_assert_str_eq(o.binds[0].src, "/tmp");
	cr_assert_str_eq(o.binds[0].dst, "/snap");
	cr_assert_eq(o.argc, 3);
	cr_assert_str_eq(o.argv[0], "restore");
}

Test(jail_parse, ro_bind_without_a_jail_path_goes_to_its_basename)
{
	const char *a[] = { "--id", "x", "--uid", "1", "--gid", "1", "--ro-bind", "/etc", "--",
			    "boot", NULL };

	cr_assert_eq(parse(a), 0, "%s", eb.msg);
	cr_assert_str_eq(o.binds[0].dst, "/etc");
}

Test(jail_parse, every_bad_argument_is_named)
{
	const char *no_id[] = { "--uid", "1", "--gid", "1", "--", "restore", NULL };
	const char *dots[] = { "--id", "..", "--uid", "1", "--gid", "1", "--", "restore", NULL };
	const char *long_id[] = { "--id", "0123456789012345678901234567890123456789012345678901234"
				  "567890123456789", "--uid", "1", "--gid", "1", "--", "restore",
				  NULL };
	const char *uid_word[] = { "--id", "a", "--uid", "nobody", "--gid", "1", "--", "restore",
				   NULL };
	const char *no_gid[] = { "--id", "a", "--uid", "1", "--", "restore", NULL };
	const char *gid0[] = { "--id", "a", "--uid", "1", "--gid", "0", "--", "restore", NULL };
	const char *no_cmd[] = { "--id", "a", "--uid", "1", "--gid", "1", NULL };
	const char *ctl[] = { "--id", "a", "--uid", "1", "--gid", "1", "--", "ctl", NULL };
	const char *stray[] = { "--id", "a", "restore", NULL };
	const char *flag[] = { "--id", "a", "--frobnicate", "1", NULL };
	const char *base[] = { "--id", "a", "--chroot-base", "rel", NULL };
	const char *key[] = { "--id", "a", "--cgroup", "io.max=1", NULL };
	const char *mem[] = { "--id", "a", "--cgroup", "memory.max=lots", NULL };
	const char *cpu[] = { "--id", "a", "--cgroup", "cpu.max=50000 10", NULL };
	const char *pids[] = { "--id", "a", "--cgroup", "pids.max=0", NULL };
	const char *rl[] = { "--id", "a", "--rlimit", "core=0", NULL };
	const char *nofile[] = { "--id", "a", "--rlimit", "nofile=3", NULL };
	const char *dev[] = { "--id", "a", "--ro-bind", "/tmp:/dev/x", NULL };
	const char *dotdot[] = { "--id", "a", "--ro-bind", "/tmp:/a/../b", NULL };
	const char *relbind[] = { "--id", "a", "--ro-bind", "/tmp:snap", NULL };
	const char *cleanup[] = { "--cleanup", "--id", "a", "--", "restore", NULL };
	const char *netns[] = { "--id", "a", "--uid", "1", "--gid", "1", "--netns",
				"/nonexistent/ns", "--", "restore", NULL };

	refused("--id is required", no_id);
	refused("--id: '..' may hold only", dots);
	refused("1..64 characters", long_id);
	refused("--uid: 'nobody' is not a numeric id", uid_word);
	refused("--uid and --gid are required", no_gid);
	refused("--gid: 0 is root", gid0);
	refused("no command", no_cmd);
	refused("'ctl' cannot be jailed", ctl);
	refused("unexpected 'restore'", stray);
	refused("unknown flag '--frobnicate'", flag);
	refused("--chroot-base: 'rel' must be an absolute path", base);
	refused("unknown key 'io.max'", key);
	refused("memory.max: 'lots'", mem);
	refused("cpu.max: '50000 10'", cpu);
	refused("pids.max: '0'", pids);
	refused("unknown limit in 'core=0'", rl);
	refused("nofile: 3 is not in", nofile);
	refused("/dev is the jail's own", dev);
	refused("without '..'", dotdot);
	refused("must be absolute", relbind);
	refused("--cleanup runs nothing", cleanup);
	refused("--netns: /nonexistent/ns", netns);
}

/* ---- where the groups go ------------------------------------------------------------ */

static const char *const mnt_v1[JAIL_CG_CTRLS] = { "/cg/memory", "/cg/cpu", "/cg/pids" };
static const char *const own_v1[JAIL_CG_CTRLS] = { "/outer/me", "/", "/" };

static void opts_with(const char *parent, unsigned n, const char *const *keys)
{
	memset(&o, 0, sizeof(o));
	o.id = "vm7";
	o.cgroup_parent = parent;
	for (unsigned i = 0; i < n; i++) {
		snprintf(o.cg[i].key, sizeof(o.cg[i].key), "%s", keys[i]);
		o.cg[o.nr_cg++].value = "max";
	}
}

Test(jail_cgroup, v1_has_one_group_per_controller_with_a_limit_below_our_own)
{
	const char *keys[] = { "memory.max", "pids.max" };
	struct jail_cgroup cg;

	opts_with("ember", 2, keys);
	cr_assert_eq(jail_cgroup_locate_at(&cg, &o, JAIL_CG_V1, mnt_v1, own_v1, &eb), 0);
	cr_assert_eq(cg.nr, 2);
	cr_assert_str_eq(cg.leaf[0], "/cg/memory/outer/me/ember/vm7");
	cr_assert_str_eq(cg.leaf[1], "/cg/pids/ember/vm7");
}

Test(jail_cgroup, an_absolute_parent_is_below_the_hierarchys_root)
{
	const char *keys[] = { "memory.max", "cpu.max" };
	struct jail_cgroup cg;

	opts_with("/vms", 2, keys);
	cr_assert_eq(jail_cgroup_locate_at(&cg, &o, JAIL_CG_V1, mnt_v1, own_v1, &eb), 0);
	cr_assert_eq(cg.nr, 2);
	cr_assert_str_eq(cg.leaf[0], "/cg/memory/vms/vm7");
	cr_assert_str_eq(cg.leaf[1], "/cg/cpu/vms/vm7");
}

Test(jail_cgroup, v2_has_one_group_for_every_controller)
{
	const char *keys[] = { "memory.max", "cpu.max", "pids.max" };
	const char *const mnt[JAIL_CG_CTRLS] = { "/sys/fs/cgroup", "/sys/fs/cgroup",
						 "/sys/fs/cgroup" };
	const char *const own[JAIL_CG_CTRLS] = { "/svc", "/svc", "/svc" };
	struct jail_cgroup cg;

	opts_with("ember", 3, keys);
	cr_assert_eq(jail_cgroup_locate_at(&cg, &o, JAIL_CG_V2, mnt, own, &eb), 0);
	cr_assert_eq(cg.nr, 1);
	cr_assert_eq(cg.needed, 7);
	cr_assert_str_eq(cg.leaf[0], "/sys/fs/cgroup/svc/ember/vm7");
	cr_assert_str_eq(jail_cgroup_name(cg.version), "v2");
}

/* ---- --snapshot-root /run for the jailed ember's control socket ------------------- */

static bool wants_root(const char *const *cmd)
{
	const char *a[32] = { "--id", "v", "--uid", "1", "--gid", "1", "--" };
	unsigned n = 7;

	for (; *cmd; cmd++)
		a[n++] = *cmd;
	a[n] = NULL;
	cr_assert_eq(parse(a), 0, "%s", eb.msg);
	return jail_wants_snapshot_root(&o);
}

Test(jail_snapshot_root, a_restore_with_a_control_socket_is_confined_to_run)
{
	const char *r[] = { "restore", "--snapshot", "/s", "--api-sock", "/run/a.sock", NULL };
	const char *b[] = { "boot", "--kernel", "/k", "--api-sock=/run/a.sock", NULL };

	cr_assert(wants_root(r));
	cr_assert(wants_root(b));
}

Test(jail_snapshot_root, no_socket_an_own_root_or_a_pool_adds_nothing)
{
	const char *none[] = { "restore", "--snapshot", "/s", NULL };
	const char *own[] = { "restore", "--snapshot", "/s", "--api-sock", "/run/a",
			      "--snapshot-root", "/tmp", NULL };
	const char *pool[] = { "pool", "--snapshot", "/s", "--socket", "/run/p", NULL };

	cr_assert_not(wants_root(none));
	cr_assert_not(wants_root(own));
	cr_assert_not(wants_root(pool));
}
