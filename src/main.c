/* ember: the command-line front end. Parsing is in cli.c; this file runs commands. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cli.h"
#include "jail.h"
#include "pool.h"
#include "arch/x86_64/x86.h"
#include "paging/paging.h"
#include "dev/dev.h"

static void report_stop(struct vm *vm)
{
	switch (vm->stop_reason) {
	case VM_STOP_ERROR:
	case VM_STOP_ASSERT:
	case VM_STOP_CRASH:
		pr_err("%s", vm->stop_msg);
		break;
	case VM_STOP_SIGNAL:
	case VM_STOP_TIMEOUT:
		pr_warn("%s", vm->stop_msg);
		break;
	default:
		pr_info("%s", vm->stop_msg);
	}
}

/*
 * What became of the guest's console output: one line when any of it was not written
 * (or always with --timings). Returns true when output was lost to an error: the run
 * then exits 1 (a limit the user set is reported but is not an error).
 */
static bool report_console(struct vm *vm, bool timings)
{
	struct console_stats cs;

	if (!vm->serial)
		return false;
	serial_console_stats(vm->serial, &cs);
	if (timings || cs.bytes_dropped || cs.bytes_limited) {
		struct mline l;

		mline_begin(&l, "ember-console");
		mline_u64(&l, "bytes", cs.bytes);
		mline_u64(&l, "bytes_written", cs.bytes_written);
		mline_u64(&l, "bytes_dropped", cs.bytes_dropped);
		mline_u64(&l, "bytes_limited", cs.bytes_limited);
		mline_u64(&l, "limit", vm->cfg.console_limit);
		mline_end(&l);
	}
	if (!cs.bytes_dropped)
		return false;
	pr_err("%llu bytes of guest console output were lost (the console could not take "
	       "them)", (unsigned long long)cs.bytes_dropped);
	return true;
}

/* The golden snapshot: taken when the guest signals ready. A failure leaves no
 * snapshot behind and the VM running (unless it was to exit anyway). */
static int snapshot_on_ready(struct vm *vm, const struct cli *c)
{
	struct snapshot_opts o = { .compress = c->compress };
	struct snapshot_stats ss;
	struct errbuf eb = { "" };
	int r = vm_snapshot_save(vm, c->snapshot_on_ready, &o, &ss, &eb);

	if (r) {
		/* "snapshot directory DIR ..." from the writer names it already: once is enough */
		if (!strncmp(eb.msg, "snapshot directory ", 19) &&
		    !strncmp(eb.msg + 19, c->snapshot_on_ready, strlen(c->snapshot_on_ready)))
			pr_err("%s", eb.msg);
		else
			pr_err("snapshot %s: %s", c->snapshot_on_ready, eb.msg);
		return r;
	}
	if (c->vm.timings) {
		struct mline l;

		mline_begin(&l, "ember-snapshot");
		mline_str(&l, "dir", c->snapshot_on_ready);
		mline_str(&l, "id", ss.id);
		mline_u64(&l, "us_total", ss.us_total);
		mline_u64(&l, "us_state", ss.us_state);
		mline_u64(&l, "us_memory", ss.us_memory);
		mline_u64(&l, "us_commit", ss.us_commit);
		mline_u64(&l, "us_digest", ss.us_digest);
		mline_u64(&l, "bytes_written", ss.bytes_written);
		mline_u64(&l, "zero_pages", ss.zero_pages);
		mline_end(&l);
	}
	return 0;
}

/* Runs the VM until it stops for good; returns the process exit status. */
static int run_vm(struct vm *vm, const struct cli *c)
{
	struct errbuf eb = { "" };
	bool snapshot_failed = false, console_lost;
	int status;

	if (c->api_sock && api_start(vm, c->api_sock, &eb)) {
		pr_err("%s", eb.msg);
		return 1;
	}
	/* ours to close from here: vm_run writes the ready line */
	vm->ready_fd = c->ready_fd;
	for (;;) {
		enum vm_stop_reason why = vm_run(vm);

		if (why != VM_STOP_READY)
			break;
		if (snapshot_on_ready(vm, c)) {
			if (c->exit_after_snapshot)
				return 1;
			/* the guest carries on, but the run did not do what it was asked */
			snapshot_failed = true;
			pr_err("--snapshot-on-ready failed: the guest runs on without a snapshot, "
			       "and ember will exit 1");
		}
		if (c->exit_after_snapshot) {
			vm->stop_reason = VM_STOP_REQUEST;
			snprintf(vm->stop_msg, sizeof(vm->stop_msg), "exit after snapshot");
			break;
		}
		/* it stood still while its memory was written, as in a pause */
		x86_kvmclock_stopped(vm);
	}
	timing_mark("exit");
	timing_report_memory(&vm->mem);
	if (c->vm.timings && vm->pager)
		pager_report(vm->pager);
	report_stop(vm);
	console_lost = report_console(vm, c->vm.timings);
	/* --record-ws: the pages touched until the first report, as the snapshot's ws.bin */
	if (c->vm.record_ws && vm->pager && !atomic_load(&vm->wedged) &&
	    pager_save_ws(vm->pager, vm->snapshot_dir, c->force, &eb)) {
		pr_err("%s", eb.msg);
		return 1;
	}
	if (c->dump_regs)
		x86_dump_vcpus(vm);
	status = vm_exit_status(vm);
	if (status == 0 && (snapshot_failed || console_lost))
		status = 1;
	return status;
}

/* --snapshot-on-ready DIR must be new, in a directory that exists: said before the guest
 * boots, not after (the writer checks again, atomically, when it writes). */
static int check_snapshot_dir(const char *dir, struct errbuf *eb)
{
	char parent[PATH_MAX];
	struct stat st;
	size_t len = strlen(dir);

	if (lstat(dir, &st) == 0)
		return errbuf_set(eb, -EEXIST, "--snapshot-on-ready: %s already exists (a snapshot "
				  "is never written over anything)", dir);
	if (errno != ENOENT)
		return errbuf_set(eb, -errno, "--snapshot-on-ready: %s: %s", dir, strerror(errno));
	if (len >= sizeof(parent))
		return errbuf_set(eb, -ENAMETOOLONG, "--snapshot-on-ready: path too long");
	memcpy(parent, dir, len + 1);
	while (len > 1 && parent[len - 1] == '/')
		parent[--len] = 0;
	while (len > 0 && parent[len - 1] != '/')
		len--;
	while (len > 1 && parent[len - 1] == '/')
		len--;
	if (len == 0)
		strcpy(parent, ".");
	else
		parent[len] = 0;
	if (stat(parent, &st) < 0 || !S_ISDIR(st.st_mode))
		return errbuf_set(eb, -ENOENT, "--snapshot-on-ready: %s: its parent directory %s %s",
				  dir, parent, errno == ENOENT ? "does not exist" : "is not a directory");
	return 0;
}

static int cmd_boot(struct cli *c)
{
	struct errbuf eb = { "" };
	struct vm *vm;
	int status;

	if (c->snapshot_on_ready && check_snapshot_dir(c->snapshot_on_ready, &eb)) {
		pr_err("%s", eb.msg);
		return 1;
	}

	c->vm.stop_on_ready = c->snapshot_on_ready != NULL;
	c->vm.seccomp = true; /* every thread, README "Seccomp" */
	c->vm.dirty_tracking = c->api_sock != NULL;
	if (vm_create(&vm, &c->vm, &eb)) {
		pr_err("%s", eb.msg);
		return 1;
	}
	if (vm_boot_load(vm, &eb)) {
		pr_err("%s", eb.msg);
		vm_destroy(vm);
		return 1;
	}
	status = run_vm(vm, c);
	vm_destroy(vm);
	return status;
}

/* --record-ws without --force: said before the guest runs, not after its recording (the
 * writer refuses again, atomically, when it renames the new file into place). */
static int check_no_ws(const char *dir, struct errbuf *eb)
{
	char path[PATH_MAX];
	struct stat st;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, SNAP_WS_FILE) >= sizeof(path))
		return errbuf_set(eb, -ENAMETOOLONG, "--snapshot: path too long");
	if (lstat(path, &st) == 0)
		return errbuf_set(eb, -EEXIST, "--record-ws: %s already exists: ember does not "
				  "replace a working set unless --force is given", path);
	return 0;
}

static int cmd_restore(struct cli *c)
{
	struct errbuf eb = { "" };
	struct vm *vm;
	int status;

	c->vm.seccomp = true; /* every thread, README "Seccomp" */
	c->vm.dirty_tracking = c->api_sock != NULL;
	if (c->vm.record_ws && !c->force && check_no_ws(c->snapshot, &eb)) {
		pr_err("%s", eb.msg);
		return 1;
	}
	if (vm_restore(&vm, &c->vm, c->snapshot, &eb)) {
		pr_err("%s", eb.msg);
		return 1;
	}
	vm->standby = c->standby;
	status = run_vm(vm, c);
	vm_destroy(vm);
	return status;
}

static void close_inherited_fds(int keep)
{
	if (keep < 3) {
		syscall(SYS_close_range, 3u, ~0u, 0u);
		return;
	}
	if (keep > 3)
		syscall(SYS_close_range, 3u, (unsigned)keep - 1, 0u);
	syscall(SYS_close_range, (unsigned)keep + 1, ~0u, 0u);
}

int main(int argc, char **argv)
{
	struct errbuf eb = { "" };
	struct cli c;

	/* ember jail has its own flags (src/jail.c) and runs ember again inside the jail */
	if (argc > 1 && !strcmp(argv[1], "jail"))
		return jail_main(argc - 1, argv + 1);
	if (cli_parse(argc, argv, &c, &eb)) {
		/* ember ctl's messages all read "ember ctl: <message>" (src/ctl.c) */
		if (c.cmd == CLI_CTL)
			fprintf(stderr, "ember ctl: %s\nTry 'ember --help'.\n",
				strncmp(eb.msg, "ember ctl: ", 11) ? eb.msg : eb.msg + 11);
		else
			fprintf(stderr, "ember: %s\nTry 'ember --help'.\n", eb.msg);
		return 2;
	}
	/* a VMM keeps no descriptor its launcher leaked to it (the jailer closes them too):
	 * only 0-2 and a --ready-fd survive, before anything of ember's own is opened */
	if (c.cmd == CLI_BOOT || c.cmd == CLI_RESTORE || c.cmd == CLI_POOL)
		close_inherited_fds(c.ready_fd);
	if (c.cmd != CLI_HELP && c.cmd != CLI_VERSION) {
		log_set_level(c.log_level);
		if (c.log_file && log_open_file(c.log_file, &eb)) {
			fprintf(stderr, "ember: %s\n", eb.msg);
			return 1;
		}
	}
	switch (c.cmd) {
	case CLI_HELP:
		cli_usage(stdout);
		return 0;
	case CLI_VERSION:
		printf("ember %s\n", EMBER_VERSION);
		return 0;
	case CLI_BOOT:
		timing_enable(c.vm.timings);
		mline_set_json(c.vm.timings_json);
		return cmd_boot(&c);
	case CLI_RESTORE:
		timing_enable(c.vm.timings);
		mline_set_json(c.vm.timings_json);
		return cmd_restore(&c);
	case CLI_CTL:
		return ctl_run(&c);
	case CLI_INVOKE:
		return invoke_run(&c);
	case CLI_POOL:
		return pool_run(&c);
	case CLI_POOL_STATUS:
		return pool_status_run(&c);
	}
	return 2;
}
