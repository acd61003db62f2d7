/* Command-line parsing: accepted forms and every usage error naming its flag. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "cli.h"

static int parse(struct cli *c, struct errbuf *eb, int argc, char **argv)
{
	memset(eb, 0, sizeof(*eb));
	return cli_parse(argc, argv, c, eb);
}

#define PARSE(c, eb, ...)                                                        \
	({                                                                       \
		char *argv_[] = { "ember", __VA_ARGS__ };                        \
		parse(c, eb, (int)(sizeof(argv_) / sizeof(argv_[0])), argv_);    \
	})

Test(cli, boot_defaults)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k.elf"), 0, "%s", eb.msg);
	cr_assert_eq(c.cmd, CLI_BOOT);
	cr_assert_str_eq(c.vm.kernel, "k.elf");
	cr_assert_eq(c.vm.nr_vcpus, 1);
	cr_assert_eq(c.vm.mem_bytes, 256 * MiB);
	cr_assert_eq(c.vm.console, CONSOLE_STDIO);
	cr_assert_null(c.vm.initrd);
	cr_assert_null(c.vm.cmdline);
}

Test(cli, boot_all_flags_with_equals_and_spaces)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel=k", "--initrd", "i", "--cmdline=a b=c",
			   "--mem", "64", "--vcpus=4", "--console", "file:/tmp/x", "--timings",
			   "--guest-cmd", "verify", "--guest-cmd=exit", "--timeout", "1.5",
			   "--dump-regs"),
		     0, "%s", eb.msg);
	cr_assert_str_eq(c.vm.initrd, "i");
	cr_assert_str_eq(c.vm.cmdline, "a b=c");
	cr_assert_eq(c.vm.mem_bytes, 64 * MiB);
	cr_assert_eq(c.vm.nr_vcpus, 4);
	cr_assert_eq(c.vm.console, CONSOLE_FILE);
	cr_assert_str_eq(c.vm.console_path, "/tmp/x");
	cr_assert(c.vm.timings);
	cr_assert_eq(c.vm.nr_guest_cmds, 2);
	cr_assert_str_eq(c.vm.guest_cmds[0], "verify");
	cr_assert_str_eq(c.vm.guest_cmds[1], "exit");
	cr_assert_eq(c.vm.timeout_ms, 1500);
	cr_assert(c.dump_regs);
}

Test(cli, help_and_version)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "--help"), 0);
	cr_assert_eq(c.cmd, CLI_HELP);
	cr_assert_eq(PARSE(&c, &eb, "--version"), 0);
	cr_assert_eq(c.cmd, CLI_VERSION);
	cr_assert_eq(PARSE(&c, &eb, "boot", "--help"), 0);
	cr_assert_eq(c.cmd, CLI_HELP);
}

static void expect_error(const char *needle, int argc, char **argv)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(parse(&c, &eb, argc, argv), -EINVAL, "accepted, expected '%s'", needle);
	cr_assert(strstr(eb.msg, needle), "message '%s' does not name '%s'", eb.msg, needle);
}

#define EXPECT_ERROR(needle, ...)                                                \
	do {                                                                     \
		char *argv_[] = { "ember", __VA_ARGS__ };                        \
		expect_error(needle, (int)(sizeof(argv_) / sizeof(argv_[0])), argv_); \
	} while (0)

Test(cli, missing_command)
{
	char *argv[] = { "ember" };

	expect_error("missing command", 1, argv);
}

Test(cli, unknown_command)
{
	EXPECT_ERROR("frobnicate", "frobnicate");
}

Test(cli, boot_requires_kernel)
{
	EXPECT_ERROR("--kernel", "boot", "--mem", "64");
}

Test(cli, unknown_flag_is_named)
{
	EXPECT_ERROR("--memory", "boot", "--kernel", "k", "--memory", "64");
}

Test(cli, flag_without_value)
{
	EXPECT_ERROR("--mem", "boot", "--kernel", "k", "--mem");
}

Test(cli, switch_with_value)
{
	EXPECT_ERROR("--timings", "boot", "--kernel", "k", "--timings=yes");
}

Test(cli, mem_not_a_number)
{
	EXPECT_ERROR("'64M'", "boot", "--kernel", "k", "--mem", "64M");
}

Test(cli, mem_negative_or_zero_or_huge)
{
	EXPECT_ERROR("--mem", "boot", "--kernel", "k", "--mem", "-1");
	EXPECT_ERROR("--mem", "boot", "--kernel", "k", "--mem", "0");
	EXPECT_ERROR("--mem", "boot", "--kernel", "k", "--mem", "99999999999999999999999");
}

Test(cli, vcpus_out_of_range)
{
	EXPECT_ERROR("--vcpus", "boot", "--kernel", "k", "--vcpus", "0");
	EXPECT_ERROR("--vcpus", "boot", "--kernel", "k", "--vcpus", "65");
	EXPECT_ERROR("--vcpus", "boot", "--kernel", "k", "--vcpus", "2x");
}

Test(cli, console_kind_invalid)
{
	EXPECT_ERROR("'serial'", "boot", "--kernel", "k", "--console", "serial");
	EXPECT_ERROR("--console", "boot", "--kernel", "k", "--console", "file:");
}

Test(cli, console_input_needs_stdio)
{
	EXPECT_ERROR("--console-input", "boot", "--kernel", "k", "--console", "none",
		     "--console-input");
}

Test(cli, guest_cmd_too_long)
{
	EXPECT_ERROR("--guest-cmd", "boot", "--kernel", "k", "--guest-cmd",
		     "0123456789012345678901234567890123456789012345678901234567890123456789");
}

Test(cli, timeout_invalid)
{
	EXPECT_ERROR("--timeout", "boot", "--kernel", "k", "--timeout", "soon");
	EXPECT_ERROR("--timeout", "boot", "--kernel", "k", "--timeout", "0");
}

Test(cli, positional_argument_rejected)
{
	EXPECT_ERROR("'k.elf'", "boot", "k.elf");
}

Test(cli, restore_flags)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "restore", "--snapshot", "snap", "--mem-backend", "mmap",
			   "--api-sock", "/tmp/s", "--guest-cmd", "verify", "--timings"),
		     0, "%s", eb.msg);
	cr_assert_eq(c.cmd, CLI_RESTORE);
	cr_assert_str_eq(c.snapshot, "snap");
	cr_assert_str_eq(c.api_sock, "/tmp/s");
	cr_assert_eq(c.vm.nr_guest_cmds, 1);
}

Test(cli, restore_requires_snapshot)
{
	EXPECT_ERROR("--snapshot", "restore", "--timings");
}

Test(cli, boot_only_flags_refused_on_restore)
{
	EXPECT_ERROR("'--kernel' does not apply to 'ember restore'", "restore", "--snapshot", "s",
		     "--kernel", "k");
	EXPECT_ERROR("'--mem' does not apply", "restore", "--snapshot", "s", "--mem", "64");
}

Test(cli, restore_only_flags_refused_on_boot)
{
	EXPECT_ERROR("'--snapshot' does not apply to 'ember boot'", "boot", "--kernel", "k",
		     "--snapshot", "s");
}

Test(cli, unknown_mem_backend)
{
	EXPECT_ERROR("'disk'", "restore", "--snapshot", "s", "--mem-backend", "disk");
}

Test(cli, snapshot_on_ready_and_exit_after)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k", "--snapshot-on-ready", "g",
			   "--exit-after-snapshot"), 0, "%s", eb.msg);
	cr_assert_str_eq(c.snapshot_on_ready, "g");
	cr_assert(c.exit_after_snapshot);
}

Test(cli, exit_after_snapshot_needs_a_snapshot)
{
	EXPECT_ERROR("--snapshot-on-ready", "boot", "--kernel", "k", "--exit-after-snapshot");
}

Test(cli, ctl_verb_and_args)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "ctl", "--api-sock", "/tmp/s", "snapshot", "d", "--diff"), 0,
		     "%s", eb.msg);
	cr_assert_eq(c.cmd, CLI_CTL);
	cr_assert_eq(c.nr_ctl_args, 2);
	cr_assert_str_eq(c.ctl_args[0], "snapshot");
	cr_assert_str_eq(c.ctl_args[1], "d");
	cr_assert(c.ctl_diff);
}

Test(cli, ctl_requires_socket_and_verb)
{
	EXPECT_ERROR("--api-sock", "ctl", "status");
	EXPECT_ERROR("missing verb", "ctl", "--api-sock", "/tmp/s");
}

Test(cli, ctl_refuses_vm_flags)
{
	EXPECT_ERROR("'--timings' does not apply to 'ember ctl'", "ctl", "--api-sock", "s",
		     "--timings", "status");
}

Test(cli, diff_only_on_ctl)
{
	EXPECT_ERROR("'--diff' does not apply", "boot", "--kernel", "k", "--diff");
}
