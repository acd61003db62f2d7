/*
 * Command-line parsing, separate from main() so that every usage error can be
 * unit-tested. Hand-rolled rather than getopt: getopt keeps global state and prints
 * its own messages, and we want one message format that names the bad flag or value.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "cli.h"
#include "pool.h"
#include "snapfmt.h"

#define DEFAULT_MEM_MIB 256
#define MAX_MEM_MIB (64 * 1024)
#define DEFAULT_INVOKE_TIMEOUT_MS 10000
#define VSOCK_CID_MIN 3u            /* 0..2: hypervisor, local, host */
#define VSOCK_CID_MAX 0xfffffffeu   /* 0xffffffff: VMADDR_CID_ANY */
/* A sockaddr_un path holds 107 bytes; ember also binds PATH_<port>, "_" and up to 10
 * digits more (INVOCATION.md 1) */
#define UDS_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)
#define UDS_SUFFIX_MAX 11

void cli_usage(FILE *f)
{
	fprintf(f,
		"usage: ember boot --kernel PATH [options]\n"
		"       ember restore --snapshot DIR [options]\n"
		"       ember ctl --api-sock PATH [--json] [--timeout SEC] VERB [ARGS]\n"
		"       ember invoke --vsock-uds PATH [--port N] [--payload FILE|-] [options]\n"
		"       ember invoke --pool PATH [--payload FILE|-] [options]\n"
		"       ember pool --snapshot DIR --socket PATH [options]\n"
		"       ember pool status --socket PATH [--json]\n"
		"       ember jail --id ID --uid U --gid G [jail options] -- restore|boot|pool ...\n"
		"       ember jail --cleanup --id ID [--chroot-base DIR] [--cgroup-parent P]\n"
		"       ember --help | --version\n"
		"\n"
		"boot options:\n"
		"  --kernel PATH            vmlinux ELF or bzImage (Linux x86-64 boot protocol)\n"
		"  --initrd PATH            initial ramdisk\n"
		"  --cmdline STR            kernel command line\n"
		"  --mem SIZE               guest RAM: MiB, or with a K, M or G suffix (64M, 1G);\n"
		"                           2 MiB..64 GiB, whole MiB (default %d)\n"
		"  --vcpus N                number of vCPUs, 1..%d (default 1)\n"
		"  --snapshot-on-ready DIR  take a snapshot into DIR when the guest signals ready;\n"
		"                           DIR must not exist, its parent must (checked before the\n"
		"                           guest boots)\n"
		"  --exit-after-snapshot    stop after that snapshot instead of continuing\n"
		"  --compress               store that snapshot's memory lz4-compressed\n"
		"restore options:\n"
		"  --snapshot DIR           snapshot directory to restore\n"
		"  --mem-backend KIND       mmap: map the memory file MAP_PRIVATE (default for raw)\n"
		"                           uffd: userfaultfd page server (default for lz4)\n"
		"                           eager: read all of it before resuming (a reference)\n"
		"  --record-ws              uffd: record the pages the guest touches until its first\n"
		"                           report, saved as the snapshot's working set (ws.bin)\n"
		"  --force                  with --record-ws: replace an existing ws.bin (without it,\n"
		"                           ember refuses before the guest runs)\n"
		"  --prefetch ws|none       uffd: load the recorded working set in bulk (default none)\n"
		"                           (without --mem-backend, these two choose uffd for a raw\n"
		"                           snapshot too, said by an info line; with mmap or eager\n"
		"                           they are an error)\n"
		"  --no-io-uring            uffd: read with pread instead (for measurements)\n"
		"  --standby                build the VM and set its state, but run it only when\n"
		"                           'ember ctl resume' says so (needs --api-sock)\n"
		"common options:\n"
		"  --api-sock PATH          serve the control socket at PATH, mode 0600: only ember's\n"
		"                           user and root may use it (see FORMAT.md 9)\n"
		"  --api-group GROUP        also let GROUP (name or gid) use it (mode 0660)\n"
		"  --snapshot-root DIR      'snapshot' requests may only write beneath DIR\n"
		"  --console KIND           stdio (default), none, or file:PATH\n"
		"  --console-input          feed stdin to the guest's serial port\n"
		"  --console-limit BYTES    write at most BYTES of guest output (K, M, G suffixes;\n"
		"                           default 64M, 0: no limit); the rest is counted\n"
		"  --timings                print 'ember-timing <phase> <us>', 'ember-mem', and (when\n"
		"                           they apply) 'ember-snapshot' and 'ember-pager' lines on\n"
		"                           stderr (README \"Lines for machines\")\n"
		"  --timings-json           --timings, with those lines and 'ember-report' as one\n"
		"                           JSON object per line\n"
		"  --guest-cmd NAME         queue a command for the guest's WAIT ucall (repeatable)\n"
		"  --timeout SEC            stop the VM after SEC seconds (exit 124)\n"
		"  --dump-regs              print every vCPU's registers when the VM stops\n"
		"  --ready-fd N             write 'ready pid=<pid>' to fd N (>= 3) and close it once\n"
		"                           the VM runs, or is in standby (for launchers)\n"
		"  --vsock-cid N            give the guest a virtio-vsock device with context id N,\n"
		"                           3..4294967294 (restore: optional, the snapshot has it)\n"
		"  --vsock-uds PATH         the vsock device's host side: a Unix socket, connected to\n"
		"                           with 'CONNECT <port>' (INVOCATION.md; at most %zu bytes)\n"
		"invoke options (INVOCATION.md):\n"
		"  --vsock-uds PATH         the VM's vsock socket (its ember's --vsock-uds)\n"
		"  --pool PATH              or an ember pool's socket (its --socket) instead\n"
		"  --port N                 the guest vsock port of the function's agent (default %u)\n"
		"  --payload FILE|-         the request payload: a regular file, or - for stdin, at\n"
		"                           most 16 MiB (default: empty); the response payload goes\n"
		"                           to stdout\n"
		"  --request-id N           the request's id, which the agent echoes (default 1)\n"
		"  --timeout SEC            give up after SEC seconds (default %d; exit 124)\n"
		"  --timings                print 'ember-invoke status=NAME request_id=N host_port=N\n"
		"                           bytes_sent=N bytes_received=N connect_us=N response_us=N'\n"
		"                           on stderr\n"
		"  --json                   print those fields as one JSON object instead\n"
		"pool options (INVOCATION.md 7): standby VMs of one snapshot, one process each\n"
		"  --snapshot DIR           the golden snapshot every VM is restored from\n"
		"  --socket PATH            serve invocations and status requests here (mode 0600)\n"
		"  --api-group GROUP        also let GROUP (name or gid) use the socket (mode 0660)\n"
		"  --size N                 VMs kept ready, 1..%d (default %d)\n"
		"  --max-uses M             retire a VM after M invocations, 0: never (default %d)\n"
		"  --queue Q                invocations that may wait for a VM, 0..%d (default %d);\n"
		"                           more are answered BUSY\n"
		"  --timeout-ms T           an invocation's limit, and a queued one's wait (default\n"
		"                           %d); a VM that does not answer in time is killed\n"
		"  --port N                 the guest vsock port invocations go to (default %u)\n"
		"  --max-payload BYTES      the largest request payload, at most 16 MiB (default %u)\n"
		"pool status options:\n"
		"  --socket PATH            the pool's socket\n"
		"  --json                   print the status as one JSON object\n"
		"jail options (README \"The jailer\"; ember's paths after -- are inside the jail):\n"
		"  --id ID                  the jail's name: [A-Za-z0-9_-], at most 64 characters\n"
		"  --uid U, --gid G         the unprivileged ids ember runs as (not 0)\n"
		"  --chroot-base DIR        the jail is DIR/ID/root (default /srv/ember)\n"
		"  --ro-bind HOST[:PATH]    mount HOST read-only at PATH in the jail (default\n"
		"                           /<basename>), e.g. the snapshot directory (repeatable)\n"
		"  --cgroup KEY=VALUE       memory.max=SIZE|max, cpu.max='QUOTA [PERIOD]'|max,\n"
		"                           pids.max=N|max (cgroup v2, or v1 equivalents)\n"
		"  --cgroup-parent P        the group is P/ID, below the jailer's own group, or\n"
		"                           below the hierarchy's root when P starts with / \n"
		"                           (default ember)\n"
		"  --rlimit nofile=N        RLIMIT_NOFILE (default 2048); fsize=BYTES: RLIMIT_FSIZE\n"
		"  --netns PATH             join this network namespace (e.g. /var/run/netns/NAME)\n"
		"  --json                   the 'ember-jail' line as one JSON object\n"
		"  --cleanup                remove what a jail with this id left, run nothing\n"
		"ctl options:\n"
		"  --json                   print the response as one JSON object (FORMAT.md 9)\n"
		"  --timeout SEC            give up when ember has not answered within SEC seconds\n"
		"                           (default %d; exit 1)\n"
		"ctl verbs:\n"
		"  status | pause | resume | shutdown | snapshot DIR [--diff|--compress] |\n"
		"  guest-cmd NAME | reset [--standby]  (back to the snapshot the VM was restored\n"
		"  from, in place; running again unless --standby) | metrics  (counters and\n"
		"  latency histograms: one ember-metrics key=value line, README)\n"
		"\n"
		"exit status: 0 guest reset/done, 1 VMM error, 2 usage error,\n"
		"             3 guest assertion failed, 124 timeout, 128+N signal N\n"
		"invoke: 0 OK, 1 error (no connection, malformed response, I/O), 2 usage error,\n"
		"        3 the function answered another status, 4 the pool answered BUSY,\n"
		"        UNAVAILABLE or SHUTTING_DOWN, 124 timeout\n"
		"pool: 0 after a drain (SIGTERM or SIGINT), 1 error, 2 usage error\n",
		DEFAULT_MEM_MIB, VM_MAX_VCPUS, UDS_PATH_MAX - UDS_SUFFIX_MAX, INVOKE_DEFAULT_PORT,
		DEFAULT_INVOKE_TIMEOUT_MS / 1000, POOL_MAX_SIZE, POOL_DEFAULT_SIZE,
		POOL_DEFAULT_MAX_USES, POOL_MAX_QUEUE, POOL_DEFAULT_QUEUE, POOL_DEFAULT_TIMEOUT_MS,
		INVOKE_DEFAULT_PORT, POOL_DEFAULT_MAX_PAYLOAD, CTL_DEFAULT_TIMEOUT_MS / 1000);
}

/* Strict unsigned parse: digits only, no sign, no overflow, within [min, max]. */
static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Seconds with up to millisecond precision: "2", "0.5", "1.25". */
static int parse_seconds_ms(const char *s, uint64_t *ms)
{
	uint64_t whole = 0, frac = 0, scale = 1000;
	const char *p = s;

	if (!*p)
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		whole = whole * 10 + (uint64_t)(*p - '0');
		if (whole > 86400ull * 365)
			return -EINVAL;
	}
	if (*p == '.') {
		p++;
		for (; *p >= '0' && *p <= '9' && scale > 1; p++) {
			scale /= 10;
			frac += (uint64_t)(*p - '0') * scale;
		}
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p || p == s)
		return -EINVAL;
	*ms = whole * 1000 + frac;
	return *ms ? 0 : -EINVAL;
}

static int parse_console(const char *v, struct vm_config *vc, struct errbuf *eb)
{
	if (!strcmp(v, "stdio")) {
		vc->console = CONSOLE_STDIO;
	} else if (!strcmp(v, "none")) {
		vc->console = CONSOLE_NONE;
	} else if (!strncmp(v, "file:", 5) && v[5]) {
		vc->console = CONSOLE_FILE;
		vc->console_path = v + 5;
	} else {
		return errbuf_set(eb, -EINVAL, "--console: '%s' is not stdio, none or file:PATH", v);
	}
	return 0;
}

#define ON_BOOT    (1u << CLI_BOOT)
#define ON_RESTORE (1u << CLI_RESTORE)
#define ON_CTL     (1u << CLI_CTL)
#define ON_INVOKE  (1u << CLI_INVOKE)
#define ON_POOL    (1u << CLI_POOL)
#define ON_POOL_ST (1u << CLI_POOL_STATUS)
#define ON_RUN     (ON_BOOT | ON_RESTORE)
#define ON_ALL     (ON_RUN | ON_CTL | ON_INVOKE | ON_POOL | ON_POOL_ST)

static const struct cli_flag {
	const char *name;
	bool value;
	unsigned cmds;
} flags[] = {
	{ "--kernel", true, ON_BOOT },
	{ "--initrd", true, ON_BOOT },
	{ "--cmdline", true, ON_BOOT },
	{ "--mem", true, ON_BOOT },
	{ "--vcpus", true, ON_BOOT },
	{ "--snapshot-on-ready", true, ON_BOOT },
	{ "--exit-after-snapshot", false, ON_BOOT },
	{ "--compress", false, ON_BOOT | ON_CTL },
	{ "--snapshot", true, ON_RESTORE | ON_POOL },
	{ "--mem-backend", true, ON_RESTORE },
	{ "--record-ws", false, ON_RESTORE },
	{ "--force", false, ON_RESTORE },
	{ "--prefetch", true, ON_RESTORE },
	{ "--no-io-uring", false, ON_RESTORE },
	{ "--standby", false, ON_RESTORE | ON_CTL },
	{ "--ready-fd", true, ON_RUN },
	{ "--api-sock", true, ON_RUN | ON_CTL },
	{ "--api-group", true, ON_RUN | ON_POOL },
	{ "--snapshot-root", true, ON_RUN },
	{ "--console", true, ON_RUN },
	{ "--console-input", false, ON_RUN },
	{ "--console-limit", true, ON_RUN },
	{ "--timings", false, ON_RUN | ON_INVOKE },
	{ "--timings-json", false, ON_RUN },
	{ "--guest-cmd", true, ON_RUN },
	{ "--timeout", true, ON_RUN | ON_INVOKE | ON_CTL },
	{ "--dump-regs", false, ON_RUN },
	{ "--vsock-cid", true, ON_RUN },
	{ "--vsock-uds", true, ON_RUN | ON_INVOKE },
	{ "--diff", false, ON_CTL },
	{ "--port", true, ON_INVOKE | ON_POOL },
	{ "--payload", true, ON_INVOKE },
	{ "--request-id", true, ON_INVOKE },
	{ "--json", false, ON_INVOKE | ON_POOL_ST | ON_CTL },
	{ "--pool", true, ON_INVOKE },
	{ "--socket", true, ON_POOL | ON_POOL_ST },
	{ "--size", true, ON_POOL },
	{ "--max-uses", true, ON_POOL },
	{ "--queue", true, ON_POOL },
	{ "--timeout-ms", true, ON_POOL },
	{ "--max-payload", true, ON_POOL },
	{ "--log-level", true, ON_ALL },
	{ "--log-file", true, ON_ALL },
};

static const char *const cmd_names[] = {
	[CLI_BOOT] = "boot", [CLI_RESTORE] = "restore", [CLI_CTL] = "ctl", [CLI_INVOKE] = "invoke",
	[CLI_POOL] = "pool", [CLI_POOL_STATUS] = "pool status",
};

static const struct cli_flag *find_flag(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(flags); i++)
		if (!strcmp(name, flags[i].name))
			return &flags[i];
	return NULL;
}

static int parse_path(const char *flag, const char *val, const char **dst, struct errbuf *eb)
{
	if (!*val)
		return errbuf_set(eb, -EINVAL, "%s: empty path", flag);
	*dst = val;
	return 0;
}

/* The run commands bind PATH and PATH_<port>; invoke only connects to PATH. */
static int parse_vsock_uds(struct cli *c, const char *val, struct errbuf *eb)
{
	size_t max = c->cmd == CLI_INVOKE ? UDS_PATH_MAX : UDS_PATH_MAX - UDS_SUFFIX_MAX;

	if (!*val)
		return errbuf_set(eb, -EINVAL, "--vsock-uds: empty path");
	if (strlen(val) > max && c->cmd == CLI_INVOKE)
		return errbuf_set(eb, -EINVAL, "--vsock-uds: '%s' is %zu bytes, longer than a Unix "
				  "socket path can be (%zu)", val, strlen(val), max);
	if (strlen(val) > max)
		return errbuf_set(eb, -EINVAL, "--vsock-uds: '%s' is %zu bytes; at most %zu fit a Unix "
				  "socket path (%zu bytes) together with the '_<port>' suffix (up to %d "
				  "bytes) of the guest-to-host sockets", val, strlen(val), max,
				  UDS_PATH_MAX, UDS_SUFFIX_MAX);
	c->vm.vsock_uds = val;
	return 0;
}

/* A Unix socket ember only connects to or binds (no _<port> suffix). */
static int parse_socket(const char *flag, const char *val, const char **dst, struct errbuf *eb)
{
	if (!*val)
		return errbuf_set(eb, -EINVAL, "%s: empty path", flag);
	if (strlen(val) > UDS_PATH_MAX)
		return errbuf_set(eb, -EINVAL, "%s: '%s' is %zu bytes, longer than a Unix socket "
				  "path can be (%zu)", flag, val, strlen(val), UDS_PATH_MAX);
	*dst = val;
	return 0;
}

static int parse_pool_flag(struct cli *c, const char *flag, const char *val, struct errbuf *eb)
{
	uint64_t n;

	if (!strcmp(flag, "--pool"))
		return parse_socket(flag, val, &c->invoke_pool, eb);
	if (!strcmp(flag, "--socket"))
		return parse_socket(flag, val, &c->pool_socket, eb);
	if (!strcmp(flag, "--size")) {
		if (parse_u64(val, 1, POOL_MAX_SIZE, &n))
			return errbuf_set(eb, -EINVAL, "--size: '%s' is not a number of VMs between 1 "
					  "and %d", val, POOL_MAX_SIZE);
		c->pool_size = (unsigned)n;
	} else if (!strcmp(flag, "--max-uses")) {
		if (parse_u64(val, 0, UINT32_MAX, &c->pool_max_uses))
			return errbuf_set(eb, -EINVAL, "--max-uses: '%s' is not a number between 0 "
					  "(no limit) and %u", val, UINT32_MAX);
	} else if (!strcmp(flag, "--queue")) {
		if (parse_u64(val, 0, POOL_MAX_QUEUE, &n))
			return errbuf_set(eb, -EINVAL, "--queue: '%s' is not a number between 0 and %d",
					  val, POOL_MAX_QUEUE);
		c->pool_queue = (unsigned)n;
	} else if (!strcmp(flag, "--timeout-ms")) {
		if (parse_u64(val, 1, 86400000, &c->pool_timeout_ms))
			return errbuf_set(eb, -EINVAL, "--timeout-ms: '%s' is not a number of "
					  "milliseconds between 1 and 86400000", val);
	} else if (!strcmp(flag, "--max-payload")) {
		if (parse_u64(val, 0, INVOKE_MAX_PAYLOAD, &n))
			return errbuf_set(eb, -EINVAL, "--max-payload: '%s' is not a number of bytes "
					  "between 0 and %u (16 MiB)", val, INVOKE_MAX_PAYLOAD);
		c->pool_max_payload = (uint32_t)n;
	}
	return 0;
}

static int parse_flag(struct cli *c, const char *flag, const char *val, struct errbuf *eb)
{
	struct vm_config *vc = &c->vm;
	uint64_t n;

	if (!strcmp(flag, "--kernel"))
		return parse_path(flag, val, &vc->kernel, eb);
	if (!strcmp(flag, "--initrd"))
		return parse_path(flag, val, &vc->initrd, eb);
	if (!strcmp(flag, "--snapshot"))
		return parse_path(flag, val, &c->snapshot, eb);
	if (!strcmp(flag, "--snapshot-on-ready"))
		return parse_path(flag, val, &c->snapshot_on_ready, eb);
	if (!strcmp(flag, "--api-sock"))
		return parse_path(flag, val, &c->api_sock, eb);
	if (!strcmp(flag, "--snapshot-root"))
		return parse_path(flag, val, &vc->snapshot_root, eb);
	if (!strcmp(flag, "--api-group")) {
		vc->api_access.has_group = true;
		return usock_parse_group(val, &vc->api_access.gid, eb);
	}
	if (!strcmp(flag, "--cmdline")) {
		vc->cmdline = val;
	} else if (!strcmp(flag, "--mem")) {
		/* a plain number is MiB; K, M and G suffixes as ember-snap's sizes */
		if (snap_parse_size(val, MiB, &n))
			return errbuf_set(eb, -EINVAL, "--mem: '%s' is not a size: a number of MiB, or "
					  "with a K, M or G suffix (64M, 1G)", val);
		if (n % MiB)
			return errbuf_set(eb, -EINVAL, "--mem: '%s' is not a whole number of MiB", val);
		if (n < 2 * MiB || n > (uint64_t)MAX_MEM_MIB * MiB)
			return errbuf_set(eb, -EINVAL, "--mem: '%s' is outside 2 MiB..%d GiB", val,
					  MAX_MEM_MIB / 1024);
		vc->mem_bytes = n;
	} else if (!strcmp(flag, "--vcpus")) {
		if (parse_u64(val, 1, VM_MAX_VCPUS, &n))
			return errbuf_set(eb, -EINVAL, "--vcpus: '%s' is not a number between 1 and %d",
					  val, VM_MAX_VCPUS);
		vc->nr_vcpus = (unsigned)n;
	} else if (!strcmp(flag, "--mem-backend")) {
		if (!strcmp(val, "mmap"))
			vc->mem_backend = MEM_BACKEND_MMAP;
		else if (!strcmp(val, "uffd"))
			vc->mem_backend = MEM_BACKEND_UFFD;
		else if (!strcmp(val, "eager"))
			vc->mem_backend = MEM_BACKEND_EAGER;
		else
			return errbuf_set(eb, -EINVAL, "--mem-backend: '%s' is not mmap, uffd or eager",
					  val);
	} else if (!strcmp(flag, "--prefetch")) {
		if (!strcmp(val, "ws"))
			vc->prefetch_ws = true;
		else if (strcmp(val, "none"))
			return errbuf_set(eb, -EINVAL, "--prefetch: '%s' is not ws or none", val);
	} else if (!strcmp(flag, "--record-ws")) {
		vc->record_ws = true;
	} else if (!strcmp(flag, "--force")) {
		c->force = true;
	} else if (!strcmp(flag, "--no-io-uring")) {
		vc->no_io_uring = true;
	} else if (!strcmp(flag, "--compress")) {
		c->compress = true;
	} else if (!strcmp(flag, "--console")) {
		return parse_console(val, vc, eb);
	} else if (!strcmp(flag, "--console-limit")) {
		if (snap_parse_size(val, 1, &vc->console_limit))
			return errbuf_set(eb, -EINVAL, "--console-limit: '%s' is not a size in bytes "
					  "(a number with an optional K, M or G suffix; 0: no limit)",
					  val);
	} else if (!strcmp(flag, "--console-input")) {
		vc->console_input = true;
	} else if (!strcmp(flag, "--timings")) {
		vc->timings = true;
	} else if (!strcmp(flag, "--timings-json")) {
		vc->timings = true;
		vc->timings_json = true;
	} else if (!strcmp(flag, "--exit-after-snapshot")) {
		c->exit_after_snapshot = true;
	} else if (!strcmp(flag, "--diff")) {
		c->ctl_diff = true;
	} else if (!strcmp(flag, "--guest-cmd")) {
		if (!*val || strlen(val) >= EMBER_UCALL_DATA_MAX)
			return errbuf_set(eb, -EINVAL, "--guest-cmd: '%s' must be 1..%u characters",
					  val, EMBER_UCALL_DATA_MAX - 1);
		if (vc->nr_guest_cmds == VM_MAX_GUEST_CMDS)
			return errbuf_set(eb, -EINVAL, "--guest-cmd: more than %d commands",
					  VM_MAX_GUEST_CMDS);
		vc->guest_cmds[vc->nr_guest_cmds++] = val;
	} else if (!strcmp(flag, "--timeout")) {
		if (parse_seconds_ms(val, &vc->timeout_ms))
			return errbuf_set(eb, -EINVAL, "--timeout: '%s' is not a positive number of seconds",
					  val);
	} else if (!strcmp(flag, "--standby")) {
		c->standby = true;
	} else if (!strcmp(flag, "--ready-fd")) {
		/* 0-2 are the standard streams: a line there is not a notification */
		if (parse_u64(val, 3, INT_MAX, &n))
			return errbuf_set(eb, -EINVAL, "--ready-fd: '%s' is not a file descriptor "
					  "number of 3 or more", val);
		c->ready_fd = (int)n;
	} else if (!strcmp(flag, "--dump-regs")) {
		c->dump_regs = true;
	} else if (!strcmp(flag, "--vsock-cid")) {
		if (parse_u64(val, VSOCK_CID_MIN, VSOCK_CID_MAX, &n))
			return errbuf_set(eb, -EINVAL, "--vsock-cid: '%s' is not a context id between "
					  "%u and %u (0-2 are reserved, %u means any)", val,
					  VSOCK_CID_MIN, VSOCK_CID_MAX, VSOCK_CID_MAX + 1);
		vc->vsock_cid = n;
	} else if (!strcmp(flag, "--vsock-uds")) {
		return parse_vsock_uds(c, val, eb);
	} else if (!strcmp(flag, "--port")) {
		if (parse_u64(val, 0, UINT32_MAX, &n))
			return errbuf_set(eb, -EINVAL, "--port: '%s' is not a vsock port (0..%u)", val,
					  UINT32_MAX);
		c->invoke_port = (uint32_t)n;
		c->port_set = true;
	} else if (!strcmp(flag, "--payload")) {
		return parse_path(flag, val, &c->invoke_payload, eb);
	} else if (!strcmp(flag, "--request-id")) {
		if (parse_u64(val, 0, UINT64_MAX, &c->invoke_request_id))
			return errbuf_set(eb, -EINVAL, "--request-id: '%s' is not a number between 0 "
					  "and %" PRIu64, val, UINT64_MAX);
	} else if (!strcmp(flag, "--json")) {
		c->json = true;
	} else if (!strcmp(flag, "--log-level")) {
		if (log_parse_level(val, &c->log_level))
			return errbuf_set(eb, -EINVAL, "--log-level: '%s' is not error, warn, info or "
					  "debug", val);
		c->log_level_set = true;
	} else if (!strcmp(flag, "--log-file")) {
		return parse_path(flag, val, &c->log_file, eb);
	} else {
		return parse_pool_flag(c, flag, val, eb);
	}
	return 0;
}

static int parse_command(const char *arg, struct cli *c, struct errbuf *eb)
{
	for (size_t i = 0; i < ARRAY_SIZE(cmd_names); i++) {
		if (cmd_names[i] && !strcmp(arg, cmd_names[i])) {
			c->cmd = (enum cli_cmd)i;
			return 0;
		}
	}
	return errbuf_set(eb, -EINVAL, "unknown command '%s' (boot, restore, ctl, invoke, pool)",
			  arg);
}

static int check_combination(struct cli *c, struct errbuf *eb)
{
	if (c->cmd == CLI_BOOT && !c->vm.kernel)
		return errbuf_set(eb, -EINVAL, "ember boot: --kernel PATH is required");
	if (c->cmd == CLI_RESTORE && !c->snapshot)
		return errbuf_set(eb, -EINVAL, "ember restore: --snapshot DIR is required");
	if (c->cmd == CLI_CTL) {
		if (!c->api_sock)
			return errbuf_set(eb, -EINVAL, "ember ctl: --api-sock PATH is required");
		if (c->nr_ctl_args == 0)
			return errbuf_set(eb, -EINVAL, "ember ctl: missing verb");
	}
	if (c->cmd == CLI_INVOKE && !c->vm.vsock_uds && !c->invoke_pool)
		return errbuf_set(eb, -EINVAL, "ember invoke: --vsock-uds PATH (a VM) or --pool PATH "
				  "(an ember pool) is required");
	if (c->cmd == CLI_INVOKE && c->vm.vsock_uds && c->invoke_pool)
		return errbuf_set(eb, -EINVAL, "ember invoke: --vsock-uds and --pool exclude each "
				  "other");
	if (c->cmd == CLI_INVOKE && c->invoke_pool && c->port_set)
		return errbuf_set(eb, -EINVAL, "ember invoke: --port does not apply with --pool (the "
				  "pool's own --port says where its VMs listen)");
	if (c->cmd == CLI_POOL && !c->snapshot)
		return errbuf_set(eb, -EINVAL, "ember pool: --snapshot DIR is required");
	if ((c->cmd == CLI_POOL || c->cmd == CLI_POOL_STATUS) && !c->pool_socket)
		return errbuf_set(eb, -EINVAL, "ember %s: --socket PATH is required",
				  cmd_names[c->cmd]);
	if (c->cmd == CLI_BOOT && c->vm.vsock_cid && !c->vm.vsock_uds)
		return errbuf_set(eb, -EINVAL, "--vsock-cid needs --vsock-uds PATH, the device's "
				  "host side");
	if (c->cmd == CLI_BOOT && c->vm.vsock_uds && !c->vm.vsock_cid)
		return errbuf_set(eb, -EINVAL, "--vsock-uds needs --vsock-cid N on ember boot (the "
				  "guest's context id)");
	/* a restored VM's CID comes from its snapshot: --vsock-cid there only checks it */
	if (c->cmd == CLI_RESTORE && c->vm.vsock_cid && !c->vm.vsock_uds)
		return errbuf_set(eb, -EINVAL, "--vsock-cid needs --vsock-uds PATH, the device's "
				  "host side (restore takes the CID from the snapshot)");
	if (c->cmd == CLI_BOOT && c->compress && !c->snapshot_on_ready)
		return errbuf_set(eb, -EINVAL, "--compress needs --snapshot-on-ready DIR");
	if ((c->vm.mem_backend == MEM_BACKEND_MMAP || c->vm.mem_backend == MEM_BACKEND_EAGER) &&
	    (c->vm.record_ws || c->vm.prefetch_ws))
		return errbuf_set(eb, -EINVAL, "--record-ws and --prefetch need --mem-backend uffd");
	if (c->force && !c->vm.record_ws)
		return errbuf_set(eb, -EINVAL, "--force only applies to --record-ws");
	if (c->vm.record_ws && c->vm.prefetch_ws)
		return errbuf_set(eb, -EINVAL, "--record-ws and --prefetch ws exclude each other: "
				  "prefetched pages never fault, so they would not be recorded");
	if (c->vm.no_io_uring && (c->vm.mem_backend == MEM_BACKEND_MMAP ||
				  c->vm.mem_backend == MEM_BACKEND_EAGER))
		return errbuf_set(eb, -EINVAL, "--no-io-uring needs --mem-backend uffd");
	if (c->exit_after_snapshot && !c->snapshot_on_ready)
		return errbuf_set(eb, -EINVAL, "--exit-after-snapshot needs --snapshot-on-ready DIR");
	if ((c->vm.api_access.has_group || c->vm.snapshot_root) && !c->api_sock &&
	    c->cmd != CLI_POOL)
		return errbuf_set(eb, -EINVAL, "--api-group and --snapshot-root need --api-sock PATH");
	if (c->cmd == CLI_RESTORE && c->standby && !c->api_sock)
		return errbuf_set(eb, -EINVAL, "--standby needs --api-sock PATH: a standby VM runs "
				  "when 'ember ctl resume' (or reset) says so");
	if (c->cmd == CLI_CTL && c->standby &&
	    (c->nr_ctl_args == 0 || strcmp(c->ctl_args[0], "reset")))
		return errbuf_set(eb, -EINVAL, "ember ctl: --standby only applies to reset");
	if (c->vm.console_input && c->vm.console != CONSOLE_STDIO)
		return errbuf_set(eb, -EINVAL, "--console-input needs --console stdio");
	return 0;
}

/* EMBER_LOG: the level when --log-level is not given (the flag wins); refused like a bad
 * flag value, even when the flag overrides it, so that a typo never goes unnoticed. */
static int log_level_from_env(struct cli *c, struct errbuf *eb)
{
	const char *e = getenv("EMBER_LOG");
	enum log_level lvl;

	if (!e)
		return 0;
	if (log_parse_level(e, &lvl))
		return errbuf_set(eb, -EINVAL, "EMBER_LOG: '%s' is not error, warn, info or debug", e);
	if (!c->log_level_set)
		c->log_level = lvl;
	return 0;
}

int cli_parse(int argc, char **argv, struct cli *c, struct errbuf *eb)
{
	int r, first;

	memset(c, 0, sizeof(*c));
	c->vm.mem_bytes = DEFAULT_MEM_MIB * MiB;
	c->vm.nr_vcpus = 1;
	c->vm.console = CONSOLE_STDIO;
	c->vm.console_limit = CONSOLE_LIMIT_DEFAULT;
	c->ready_fd = -1;
	c->log_level = LOG_WARN;

	if (argc < 2)
		return errbuf_set(eb, -EINVAL, "missing command (boot, restore, ctl, invoke, pool)");
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		c->cmd = CLI_HELP;
		return 0;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		c->cmd = CLI_VERSION;
		return 0;
	}
	r = parse_command(argv[1], c, eb);
	if (r)
		return r;
	if (c->cmd == CLI_CTL)
		c->vm.timeout_ms = CTL_DEFAULT_TIMEOUT_MS;
	if (c->cmd == CLI_INVOKE) {
		c->invoke_port = INVOKE_DEFAULT_PORT;
		c->invoke_request_id = 1;
		c->vm.timeout_ms = DEFAULT_INVOKE_TIMEOUT_MS;
	}
	first = 2;
	if (c->cmd == CLI_POOL) {
		if (argc > 2 && !strcmp(argv[2], "status")) {
			c->cmd = CLI_POOL_STATUS;
			first = 3;
		}
		c->invoke_port = INVOKE_DEFAULT_PORT;
		c->pool_size = POOL_DEFAULT_SIZE;
		c->pool_max_uses = POOL_DEFAULT_MAX_USES;
		c->pool_queue = POOL_DEFAULT_QUEUE;
		c->pool_timeout_ms = POOL_DEFAULT_TIMEOUT_MS;
		c->pool_max_payload = POOL_DEFAULT_MAX_PAYLOAD;
	}

	for (int i = first; i < argc; i++) {
		const char *arg = argv[i], *eq, *val = NULL;
		const struct cli_flag *f;
		char flag[64];
		size_t flen;

		if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
			c->cmd = CLI_HELP;
			return 0;
		}
		if (strncmp(arg, "--", 2) != 0) {
			/* ctl takes a verb and its arguments; the others take no positionals */
			if (c->cmd != CLI_CTL)
				return errbuf_set(eb, -EINVAL, "unexpected argument '%s'", arg);
			if (c->nr_ctl_args == CLI_MAX_CTL_ARGS)
				return errbuf_set(eb, -EINVAL, "too many arguments for ember ctl");
			c->ctl_args[c->nr_ctl_args++] = arg;
			continue;
		}
		eq = strchr(arg, '=');
		flen = eq ? (size_t)(eq - arg) : strlen(arg);
		if (flen >= sizeof(flag))
			return errbuf_set(eb, -EINVAL, "unknown option '%.40s...'", arg);
		memcpy(flag, arg, flen);
		flag[flen] = 0;
		f = find_flag(flag);
		if (!f)
			return errbuf_set(eb, -EINVAL, "unknown option '%s'", flag);
		if (!(f->cmds & (1u << c->cmd)))
			return errbuf_set(eb, -EINVAL, "option '%s' does not apply to 'ember %s'", flag,
					  cmd_names[c->cmd]);
		if (f->value) {
			if (eq)
				val = eq + 1;
			else if (i + 1 < argc)
				val = argv[++i];
			else
				return errbuf_set(eb, -EINVAL, "option '%s' needs a value", flag);
		} else if (eq) {
			return errbuf_set(eb, -EINVAL, "option '%s' takes no value", flag);
		}
		r = parse_flag(c, flag, val ? val : "", eb);
		if (r)
			return r;
	}
	r = check_combination(c, eb);
	if (r)
		return r;
	return log_level_from_env(c, eb);
}
