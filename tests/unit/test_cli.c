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

Test(cli, mem_not_a_size)
{
	EXPECT_ERROR("--mem: '64X' is not a size: a number of MiB, or with a K, M or G suffix",
		     "boot", "--kernel", "k", "--mem", "64X");
	EXPECT_ERROR("--mem: 'M' is not a size", "boot", "--kernel", "k", "--mem", "M");
	EXPECT_ERROR("--mem: '64MiB' is not a size", "boot", "--kernel", "k", "--mem", "64MiB");
	EXPECT_ERROR("--mem: '' is not a size", "boot", "--kernel", "k", "--mem=");
	EXPECT_ERROR("--mem: '1.5G' is not a size", "boot", "--kernel", "k", "--mem", "1.5G");
	EXPECT_ERROR("--mem: '1536K' is not a whole number of MiB", "boot", "--kernel", "k",
		     "--mem", "1536K");
	EXPECT_ERROR("--mem: '1M' is outside 2 MiB..64 GiB", "boot", "--kernel", "k", "--mem",
		     "1M");
	EXPECT_ERROR("--mem: '65G' is outside", "boot", "--kernel", "k", "--mem", "65G");
	EXPECT_ERROR("--mem: '99999999999G' is", "boot", "--kernel", "k", "--mem", "99999999999G");
}

Test(cli, mem_with_suffixes_and_plain_mib)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k", "--mem", "64M"), 0, "%s", eb.msg);
	cr_assert_eq(c.vm.mem_bytes, 64 * MiB);
	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k", "--mem", "1G"), 0, "%s", eb.msg);
	cr_assert_eq(c.vm.mem_bytes, 1024 * MiB);
	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k", "--mem=512"), 0, "%s", eb.msg);
	cr_assert_eq(c.vm.mem_bytes, 512 * MiB);
	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k", "--mem=2048k"), 0, "%s", eb.msg);
	cr_assert_eq(c.vm.mem_bytes, 2 * MiB);
	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k", "--mem", "64g"), 0, "%s", eb.msg);
	cr_assert_eq(c.vm.mem_bytes, 64ull * 1024 * MiB);
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

Test(cli, console_limit_defaults_to_64_mib)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k"), 0, "%s", eb.msg);
	cr_assert_eq(c.vm.console_limit, 64 * MiB);
}

Test(cli, console_limit_takes_bytes_with_a_suffix_and_0_for_none)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k", "--console-limit", "10K"), 0, "%s",
		     eb.msg);
	cr_assert_eq(c.vm.console_limit, 10240);
	cr_assert_eq(PARSE(&c, &eb, "restore", "--snapshot", "s", "--console-limit=4096"), 0, "%s",
		     eb.msg);
	cr_assert_eq(c.vm.console_limit, 4096);
	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k", "--console-limit", "0"), 0, "%s",
		     eb.msg);
	cr_assert_eq(c.vm.console_limit, 0);
}

Test(cli, console_limit_invalid)
{
	EXPECT_ERROR("--console-limit: '10X'", "boot", "--kernel", "k", "--console-limit", "10X");
	EXPECT_ERROR("--console-limit: '-1'", "boot", "--kernel", "k", "--console-limit", "-1");
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

/* ---- virtio-vsock on boot and restore ---------------------------------------------- */

Test(cli, boot_vsock_cid_and_uds)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k", "--vsock-cid", "3",
			   "--vsock-uds=/tmp/v.sock"), 0, "%s", eb.msg);
	cr_assert_eq(c.vm.vsock_cid, 3);
	cr_assert_str_eq(c.vm.vsock_uds, "/tmp/v.sock");
}

Test(cli, boot_without_vsock_leaves_it_off)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k"), 0, "%s", eb.msg);
	cr_assert_eq(c.vm.vsock_cid, 0);
	cr_assert_null(c.vm.vsock_uds);
}

Test(cli, vsock_cid_accepts_the_largest_valid_cid)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k", "--vsock-cid", "4294967294",
			   "--vsock-uds", "/tmp/v"), 0, "%s", eb.msg);
	cr_assert_eq(c.vm.vsock_cid, 4294967294ull);
}

Test(cli, vsock_cid_reserved_values_refused)
{
	EXPECT_ERROR("--vsock-cid: '0'", "boot", "--kernel", "k", "--vsock-cid", "0",
		     "--vsock-uds", "/tmp/v");
	EXPECT_ERROR("--vsock-cid: '2' is not a context id between 3 and 4294967294", "boot",
		     "--kernel", "k", "--vsock-cid", "2", "--vsock-uds", "/tmp/v");
	EXPECT_ERROR("--vsock-cid: '4294967295'", "boot", "--kernel", "k", "--vsock-cid",
		     "4294967295", "--vsock-uds", "/tmp/v");
}

Test(cli, vsock_cid_not_a_number)
{
	EXPECT_ERROR("--vsock-cid: '3x'", "boot", "--kernel", "k", "--vsock-cid", "3x",
		     "--vsock-uds", "/tmp/v");
	EXPECT_ERROR("--vsock-cid: '-5'", "boot", "--kernel", "k", "--vsock-cid", "-5",
		     "--vsock-uds", "/tmp/v");
	EXPECT_ERROR("--vsock-cid: '99999999999999999999'", "boot", "--kernel", "k",
		     "--vsock-cid", "99999999999999999999", "--vsock-uds", "/tmp/v");
}

Test(cli, boot_vsock_cid_needs_uds)
{
	EXPECT_ERROR("--vsock-cid needs --vsock-uds", "boot", "--kernel", "k", "--vsock-cid", "3");
}

Test(cli, boot_vsock_uds_needs_cid)
{
	EXPECT_ERROR("--vsock-uds needs --vsock-cid", "boot", "--kernel", "k", "--vsock-uds",
		     "/tmp/v");
}

Test(cli, vsock_uds_empty_refused)
{
	EXPECT_ERROR("--vsock-uds: empty path", "boot", "--kernel", "k", "--vsock-cid", "3",
		     "--vsock-uds", "");
}

/* "/" + n-1 more bytes: a path of exactly n bytes */
static const char *path_of_len(char *buf, size_t n)
{
	buf[0] = '/';
	memset(buf + 1, 'p', n - 1);
	buf[n] = 0;
	return buf;
}

Test(cli, vsock_uds_longest_path_with_its_port_suffix_fits)
{
	struct cli c;
	struct errbuf eb;
	char p[128];

	/* 96 + "_4294967295" = 107 bytes, the most a sockaddr_un holds */
	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k", "--vsock-cid", "3", "--vsock-uds",
			   (char *)path_of_len(p, 96)), 0, "%s", eb.msg);
	cr_assert_eq(strlen(c.vm.vsock_uds), 96);
}

Test(cli, vsock_uds_too_long_for_the_port_suffix)
{
	char p[128];

	EXPECT_ERROR("'_<port>' suffix", "boot", "--kernel", "k", "--vsock-cid", "3", "--vsock-uds",
		     (char *)path_of_len(p, 97));
	EXPECT_ERROR("at most 96", "restore", "--snapshot", "s", "--vsock-uds",
		     (char *)path_of_len(p, 107));
}

Test(cli, restore_vsock_uds_alone_takes_the_cid_from_the_snapshot)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "restore", "--snapshot", "s", "--vsock-uds", "/tmp/clone1"), 0,
		     "%s", eb.msg);
	cr_assert_eq(c.vm.vsock_cid, 0);
	cr_assert_str_eq(c.vm.vsock_uds, "/tmp/clone1");
}

Test(cli, restore_vsock_cid_with_uds)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "restore", "--snapshot", "s", "--vsock-cid", "7",
			   "--vsock-uds", "/tmp/clone1"), 0, "%s", eb.msg);
	cr_assert_eq(c.vm.vsock_cid, 7);
}

Test(cli, restore_vsock_cid_without_uds)
{
	EXPECT_ERROR("--vsock-cid needs --vsock-uds", "restore", "--snapshot", "s", "--vsock-cid",
		     "7");
}

Test(cli, vsock_flags_refused_on_ctl)
{
	EXPECT_ERROR("'--vsock-cid' does not apply to 'ember ctl'", "ctl", "--api-sock", "s",
		     "--vsock-cid", "3", "status");
	EXPECT_ERROR("'--vsock-uds' does not apply to 'ember ctl'", "ctl", "--api-sock", "s",
		     "--vsock-uds", "/tmp/v", "status");
}

/* ---- ember invoke ------------------------------------------------------------------ */

Test(cli, invoke_defaults)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "invoke", "--vsock-uds", "/tmp/v.sock"), 0, "%s", eb.msg);
	cr_assert_eq(c.cmd, CLI_INVOKE);
	cr_assert_str_eq(c.vm.vsock_uds, "/tmp/v.sock");
	cr_assert_eq(c.invoke_port, 5000);
	cr_assert_eq(c.vm.timeout_ms, 10000);
	cr_assert_eq(c.invoke_request_id, 1);
	cr_assert_null(c.invoke_payload);
	cr_assert(!c.vm.timings);
	cr_assert(!c.json);
}

Test(cli, invoke_all_flags)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "invoke", "--vsock-uds=/tmp/v", "--port", "4294967295",
			   "--payload", "in.bin", "--request-id=18446744073709551615",
			   "--timeout", "0.3", "--timings", "--json"), 0, "%s", eb.msg);
	cr_assert_eq(c.invoke_port, 4294967295u);
	cr_assert_str_eq(c.invoke_payload, "in.bin");
	cr_assert_eq(c.invoke_request_id, UINT64_MAX);
	cr_assert_eq(c.vm.timeout_ms, 300);
	cr_assert(c.vm.timings);
	cr_assert(c.json);
}

Test(cli, invoke_payload_from_stdin)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "invoke", "--vsock-uds", "/tmp/v", "--payload", "-"), 0, "%s",
		     eb.msg);
	cr_assert_str_eq(c.invoke_payload, "-");
}

Test(cli, invoke_port_zero_is_a_port)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "invoke", "--vsock-uds", "/tmp/v", "--port", "0"), 0, "%s",
		     eb.msg);
	cr_assert_eq(c.invoke_port, 0);
}

Test(cli, invoke_requires_vsock_uds_or_pool)
{
	EXPECT_ERROR("ember invoke: --vsock-uds PATH (a VM) or --pool PATH (an ember pool) is "
		     "required", "invoke", "--port", "5000");
}

Test(cli, invoke_port_out_of_range)
{
	EXPECT_ERROR("--port: '4294967296' is not a vsock port", "invoke", "--vsock-uds", "/tmp/v",
		     "--port", "4294967296");
	EXPECT_ERROR("--port: '-1'", "invoke", "--vsock-uds", "/tmp/v", "--port", "-1");
	EXPECT_ERROR("--port: 'http'", "invoke", "--vsock-uds", "/tmp/v", "--port", "http");
}

Test(cli, invoke_request_id_invalid)
{
	EXPECT_ERROR("--request-id: '18446744073709551616'", "invoke", "--vsock-uds", "/tmp/v",
		     "--request-id", "18446744073709551616");
	EXPECT_ERROR("--request-id: '0x10'", "invoke", "--vsock-uds", "/tmp/v", "--request-id",
		     "0x10");
}

Test(cli, invoke_timeout_invalid)
{
	EXPECT_ERROR("--timeout: 'never'", "invoke", "--vsock-uds", "/tmp/v", "--timeout", "never");
	EXPECT_ERROR("--timeout: '0'", "invoke", "--vsock-uds", "/tmp/v", "--timeout", "0");
}

Test(cli, invoke_payload_empty_path)
{
	EXPECT_ERROR("--payload: empty path", "invoke", "--vsock-uds", "/tmp/v", "--payload", "");
}

Test(cli, invoke_vsock_uds_only_needs_to_fit_a_sockaddr)
{
	struct cli c;
	struct errbuf eb;
	char p[128];

	/* invoke connects to PATH itself, never to PATH_<port> */
	cr_assert_eq(PARSE(&c, &eb, "invoke", "--vsock-uds", (char *)path_of_len(p, 107)), 0, "%s",
		     eb.msg);
	EXPECT_ERROR("longer than a Unix socket path can be (107)", "invoke", "--vsock-uds",
		     (char *)path_of_len(p, 108));
}

Test(cli, invoke_switch_with_value)
{
	EXPECT_ERROR("'--json' takes no value", "invoke", "--vsock-uds", "/tmp/v", "--json=yes");
}

Test(cli, invoke_refuses_vm_flags)
{
	EXPECT_ERROR("'--vsock-cid' does not apply to 'ember invoke'", "invoke", "--vsock-uds",
		     "/tmp/v", "--vsock-cid", "3");
	EXPECT_ERROR("'--kernel' does not apply to 'ember invoke'", "invoke", "--vsock-uds",
		     "/tmp/v", "--kernel", "k");
	EXPECT_ERROR("'--guest-cmd' does not apply to 'ember invoke'", "invoke", "--vsock-uds",
		     "/tmp/v", "--guest-cmd", "serve");
}

Test(cli, invoke_takes_no_positional_arguments)
{
	EXPECT_ERROR("unexpected argument 'payload.bin'", "invoke", "--vsock-uds", "/tmp/v",
		     "payload.bin");
}

Test(cli, invoke_flags_refused_elsewhere)
{
	EXPECT_ERROR("'--port' does not apply to 'ember boot'", "boot", "--kernel", "k", "--port",
		     "5000");
	EXPECT_ERROR("'--payload' does not apply to 'ember restore'", "restore", "--snapshot", "s",
		     "--payload", "x");
	EXPECT_ERROR("'--json' does not apply to 'ember boot'", "boot", "--kernel", "k", "--json");
	EXPECT_ERROR("'--request-id' does not apply to 'ember boot'", "boot", "--kernel", "k",
		     "--request-id", "1");
}

Test(cli, invoke_help)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "invoke", "--help"), 0);
	cr_assert_eq(c.cmd, CLI_HELP);
}

Test(cli, unknown_command_lists_invoke)
{
	EXPECT_ERROR("invoke", "frobnicate");
}

Test(cli, usage_lists_invoke_and_the_vsock_flags)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	cr_assert_not_null(f);
	cli_usage(f);
	fclose(f);
	for (const char *const *w = (const char *const[]){ "ember invoke --vsock-uds PATH",
							  "--vsock-cid N", "--port N",
							  "--payload FILE|-", "--request-id N",
							  "--json", NULL };
	     *w; w++)
		cr_assert_not_null(strstr(text, *w), "usage does not mention '%s'", *w);
	free(text);
}

Test(cli, restore_standby_and_ready_fd)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "restore", "--snapshot", "d", "--standby", "--api-sock", "/s",
			   "--ready-fd", "5"), 0, "%s", eb.msg);
	cr_assert(c.standby);
	cr_assert_eq(c.ready_fd, 5);
	cr_assert_eq(PARSE(&c, &eb, "restore", "--snapshot", "d"), 0, "%s", eb.msg);
	cr_assert_not(c.standby);
	cr_assert_eq(c.ready_fd, -1, "no --ready-fd must not mean fd 0");
}

Test(cli, standby_needs_the_control_socket_that_resumes_it)
{
	EXPECT_ERROR("--standby needs --api-sock", "restore", "--snapshot", "d", "--standby");
	EXPECT_ERROR("does not apply", "boot", "--kernel", "k", "--standby");
}

Test(cli, ready_fd_must_not_be_a_standard_stream)
{
	EXPECT_ERROR("--ready-fd", "restore", "--snapshot", "d", "--ready-fd", "2");
	EXPECT_ERROR("--ready-fd", "restore", "--snapshot", "d", "--ready-fd", "x");
	EXPECT_ERROR("--ready-fd", "restore", "--snapshot", "d", "--ready-fd", "99999999999");
}

Test(cli, ctl_standby_only_goes_with_reset)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "ctl", "--api-sock", "/s", "reset", "--standby"), 0, "%s",
		     eb.msg);
	cr_assert(c.standby);
	cr_assert_str_eq(c.ctl_args[0], "reset");
	EXPECT_ERROR("only applies to reset", "ctl", "--api-sock", "/s", "status", "--standby");
}

/* ---- ember pool -------------------------------------------------------------------- */

Test(cli, pool_defaults)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "pool", "--snapshot", "golden", "--socket", "/tmp/p.sock"), 0,
		     "%s", eb.msg);
	cr_assert_eq(c.cmd, CLI_POOL);
	cr_assert_str_eq(c.snapshot, "golden");
	cr_assert_str_eq(c.pool_socket, "/tmp/p.sock");
	cr_assert_eq(c.pool_size, 2);
	cr_assert_eq(c.pool_max_uses, 1000);
	cr_assert_eq(c.pool_queue, 64);
	cr_assert_eq(c.pool_timeout_ms, 10000);
	cr_assert_eq(c.pool_max_payload, 1u << 20);
	cr_assert_eq(c.invoke_port, 5000);
}

Test(cli, pool_all_flags)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "pool", "--snapshot=g", "--socket", "s", "--size", "64",
			   "--max-uses", "0", "--queue=0", "--timeout-ms", "1", "--port", "5003",
			   "--max-payload", "16777216"), 0, "%s", eb.msg);
	cr_assert_eq(c.pool_size, 64);
	cr_assert_eq(c.pool_max_uses, 0);
	cr_assert_eq(c.pool_queue, 0);
	cr_assert_eq(c.pool_timeout_ms, 1);
	cr_assert_eq(c.invoke_port, 5003);
	cr_assert_eq(c.pool_max_payload, 16u << 20);
}

Test(cli, pool_needs_snapshot_and_socket)
{
	EXPECT_ERROR("ember pool: --snapshot DIR is required", "pool", "--socket", "s");
	EXPECT_ERROR("ember pool: --socket PATH is required", "pool", "--snapshot", "g");
}

Test(cli, pool_values_out_of_range)
{
	EXPECT_ERROR("--size: '0'", "pool", "--snapshot", "g", "--socket", "s", "--size", "0");
	EXPECT_ERROR("--size: '65'", "pool", "--snapshot", "g", "--socket", "s", "--size", "65");
	EXPECT_ERROR("--queue: '4097'", "pool", "--snapshot", "g", "--socket", "s", "--queue",
		     "4097");
	EXPECT_ERROR("--timeout-ms: '0'", "pool", "--snapshot", "g", "--socket", "s",
		     "--timeout-ms", "0");
	EXPECT_ERROR("--max-payload: '16777217'", "pool", "--snapshot", "g", "--socket", "s",
		     "--max-payload", "16777217");
	EXPECT_ERROR("--max-uses: '-1'", "pool", "--snapshot", "g", "--socket", "s",
		     "--max-uses", "-1");
}

Test(cli, pool_socket_longer_than_a_unix_path_is_refused)
{
	char path[200];

	memset(path, 'a', sizeof(path) - 1);
	path[sizeof(path) - 1] = 0;
	EXPECT_ERROR("longer than a Unix socket path", "pool", "--snapshot", "g", "--socket", path);
	EXPECT_ERROR("longer than a Unix socket path", "invoke", "--pool", path);
}

Test(cli, pool_status)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "pool", "status", "--socket", "s", "--json"), 0, "%s", eb.msg);
	cr_assert_eq(c.cmd, CLI_POOL_STATUS);
	cr_assert_str_eq(c.pool_socket, "s");
	cr_assert(c.json);
	EXPECT_ERROR("ember pool status: --socket PATH is required", "pool", "status");
	EXPECT_ERROR("'--size' does not apply to 'ember pool status'", "pool", "status",
		     "--socket", "s", "--size", "2");
}

Test(cli, run_options_do_not_apply_to_pool)
{
	EXPECT_ERROR("'--json' does not apply to 'ember pool'", "pool", "--snapshot", "g",
		     "--socket", "s", "--json");
	EXPECT_ERROR("'--mem-backend' does not apply to 'ember pool'", "pool", "--snapshot", "g",
		     "--socket", "s", "--mem-backend", "uffd");
}

Test(cli, invoke_pool)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "invoke", "--pool", "/tmp/p.sock", "--payload", "-"), 0, "%s",
		     eb.msg);
	cr_assert_str_eq(c.invoke_pool, "/tmp/p.sock");
	cr_assert_null(c.vm.vsock_uds);
	EXPECT_ERROR("--vsock-uds and --pool exclude each other", "invoke", "--pool", "p",
		     "--vsock-uds", "v");
	EXPECT_ERROR("--port does not apply with --pool", "invoke", "--pool", "p", "--port", "1");
}

/* ---- logging: --log-level, EMBER_LOG, --log-file (README "Logging") ---- */

Test(cli, log_level_on_every_command_and_default_warn)
{
	struct cli c;
	struct errbuf eb;

	unsetenv("EMBER_LOG");
	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k"), 0, "%s", eb.msg);
	cr_assert_eq(c.log_level, LOG_WARN);
	cr_assert_not(c.log_level_set);
	cr_assert_eq(PARSE(&c, &eb, "restore", "--snapshot", "d", "--log-level", "debug"), 0, "%s",
		     eb.msg);
	cr_assert_eq(c.log_level, LOG_DEBUG);
	cr_assert_eq(PARSE(&c, &eb, "ctl", "--api-sock", "s", "--log-level=error", "status"), 0,
		     "%s", eb.msg);
	cr_assert_eq(c.log_level, LOG_ERROR);
	cr_assert_eq(PARSE(&c, &eb, "invoke", "--vsock-uds", "v", "--log-level", "info",
			   "--log-file", "/tmp/l"), 0, "%s", eb.msg);
	cr_assert_eq(c.log_level, LOG_INFO);
	cr_assert_str_eq(c.log_file, "/tmp/l");
	cr_assert_eq(PARSE(&c, &eb, "pool", "--snapshot", "g", "--socket", "s", "--log-level",
			   "warn"), 0, "%s", eb.msg);
	cr_assert_eq(PARSE(&c, &eb, "pool", "status", "--socket", "s", "--log-level", "warn"), 0,
		     "%s", eb.msg);
}

Test(cli, log_level_unknown_value_names_the_flag_and_the_valid_values)
{
	unsetenv("EMBER_LOG");
	EXPECT_ERROR("--log-level: 'verbose' is not error, warn, info or debug", "boot", "--kernel",
		     "k", "--log-level", "verbose");
	EXPECT_ERROR("--log-level: '' is not error", "boot", "--kernel", "k", "--log-level=");
	EXPECT_ERROR("--log-level: 'WARN' is not", "boot", "--kernel", "k", "--log-level", "WARN");
	EXPECT_ERROR("'--log-level' needs a value", "boot", "--kernel", "k", "--log-level");
	EXPECT_ERROR("--log-file: empty path", "boot", "--kernel", "k", "--log-file=");
}

Test(cli, ember_log_sets_the_level_and_the_flag_wins)
{
	struct cli c;
	struct errbuf eb;

	setenv("EMBER_LOG", "debug", 1);
	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k"), 0, "%s", eb.msg);
	cr_assert_eq(c.log_level, LOG_DEBUG);
	cr_assert_eq(PARSE(&c, &eb, "boot", "--kernel", "k", "--log-level", "error"), 0, "%s",
		     eb.msg);
	cr_assert_eq(c.log_level, LOG_ERROR);
	unsetenv("EMBER_LOG");
}

Test(cli, ember_log_unknown_value_is_refused_naming_the_variable)
{
	setenv("EMBER_LOG", "verbose", 1);
	EXPECT_ERROR("EMBER_LOG: 'verbose' is not error, warn, info or debug", "boot", "--kernel",
		     "k");
	/* even when --log-level overrides it: a typo must not go unnoticed */
	EXPECT_ERROR("EMBER_LOG: 'verbose'", "ctl", "--api-sock", "s", "--log-level", "info",
		     "status");
	unsetenv("EMBER_LOG");
}

Test(cli, ctl_json)
{
	struct cli c;
	struct errbuf eb;

	cr_assert_eq(PARSE(&c, &eb, "ctl", "--api-sock", "s", "--json", "status"), 0, "%s", eb.msg);
	cr_assert(c.json);
}

Test(cli, api_group_and_snapshot_root_need_the_control_socket)
{
	EXPECT_ERROR("--api-group and --snapshot-root need --api-sock PATH", "boot", "--kernel",
		     "k", "--api-group", "0");
	EXPECT_ERROR("--api-group and --snapshot-root need --api-sock PATH", "restore",
		     "--snapshot", "s", "--snapshot-root", "/tmp");
	EXPECT_ERROR("--api-group: 'no-such-group-here' is neither a group name nor a number",
		     "boot", "--kernel", "k", "--api-sock", "a", "--api-group", "no-such-group-here");
	EXPECT_ERROR("option '--api-group' does not apply to 'ember ctl'", "ctl", "--api-sock",
		     "a", "--api-group", "0", "status");
}

Test(cli, api_group_by_name_or_number)
{
	char *by_name[] = { "ember", "boot", "--kernel", "k", "--api-sock", "a", "--api-group",
			    "root" };
	char *by_gid[] = { "ember", "pool", "--snapshot", "s", "--socket", "p", "--api-group",
			   "54321" };
	struct errbuf eb = { "" };
	struct cli c;

	cr_assert_eq(cli_parse(8, by_name, &c, &eb), 0, "%s", eb.msg);
	cr_assert(c.vm.api_access.has_group);
	cr_assert_eq(c.vm.api_access.gid, 0);
	cr_assert_eq(cli_parse(8, by_gid, &c, &eb), 0, "%s", eb.msg);
	cr_assert_eq(c.vm.api_access.gid, 54321);
}
