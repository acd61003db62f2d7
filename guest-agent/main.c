/*
 * ember-agent: PID 1 of the Linux guest kit's initramfs. Mounts /proc, /sys and /dev,
 * loads the kit's modules, listens on AF_VSOCK, signals ready through the guest ABI (the
 * golden snapshot then holds the listening socket), and serves INVOCATION.md on each
 * connection by running the handler. Before each request it re-seeds the kernel's RNG
 * when the VM generation changed (a restore or a reset happened).
 *
 * Its lines on the console start with "ember-agent: "; the ready line
 * "ember-agent: ready port=P handler=H mono_ns=N generation=G" tells scripts the
 * guest's CLOCK_MONOTONIC at the snapshot point.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "config.h"
#include "guest_abi.h"
#include "modules.h"
#include "proto.h"
#include "reseed.h"

#define MODULE_LIST "/lib/modules/ember.list"
#define LISTEN_BACKLOG 16

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	va_list ap;

	fputs("ember-agent: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

/* PID 1 must not exit (the kernel panics): stop the VM by a reset, which ember ends on. */
static void __attribute__((noreturn)) fatal(void)
{
	logf_("fatal: stopping the VM\n");
	sync();
	reboot(RB_AUTOBOOT);
	for (;;)
		pause();
}

static void mount_one(const char *src, const char *dir, const char *type)
{
	mkdir(dir, 0755);
	if (mount(src, dir, type, MS_NOSUID | MS_NOEXEC, NULL) && errno != EBUSY)
		logf_("mount %s on %s: %s\n", type, dir, strerror(errno));
}

static void early_setup(void)
{
	int fd;

	mount_one("proc", "/proc", "proc");
	mount_one("sysfs", "/sys", "sysfs");
	mkdir("/dev", 0755);
	if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, NULL) && errno != EBUSY)
		logf_("mount devtmpfs on /dev: %s\n", strerror(errno));
	/* the kernel opened /dev/console from the initramfs; keep 0-2 on it */
	fd = open("/dev/console", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		close(fd);
	}
	setvbuf(stderr, NULL, _IOLBF, 0);
}

static char cmdline[4096];

static void read_settings(struct agent_settings *s)
{
	char err[256];
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, cmdline, sizeof(cmdline) - 1) : -1;

	if (fd >= 0)
		close(fd);
	if (n < 0)
		logf_("cannot read /proc/cmdline: %s; using the defaults\n", strerror(errno));
	else
		cmdline[n] = 0;
	agent_settings_default(s);
	if (agent_settings_parse(s, cmdline, err, sizeof(err))) {
		logf_("error: kernel command line: %s\n", err);
		fatal();
	}
}

static int listen_vsock(uint32_t port)
{
	struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY,
				 .svm_port = port };
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		logf_("error: socket(AF_VSOCK): %s (no vsock transport: the virtio-mmio "
		      "device was not found, or vmw_vsock_virtio_transport did not load)\n",
		      strerror(errno));
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, LISTEN_BACKLOG)) {
		logf_("error: listen on vsock port %u: %s\n", port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Orphans of handlers (killed with their group) end up with PID 1. Only called between
 * requests, so that it never takes a running handler's status. */
static void reap_orphans(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(void)
{
	struct agent_settings s;
	struct reseed rs;
	char *argv[2], mmio[1024];
	int lfd, r;

	signal(SIGPIPE, SIG_IGN);
	if (getpid() == 1)
		early_setup();
	read_settings(&s);
	r = agent_mmio_params(cmdline, mmio, sizeof(mmio));
	if (r && r != -ENOENT)
		logf_("virtio_mmio.device= words unusable for ember_mmio: %s\n", strerror(-r));
	/* ember's ACPI DSDT describes the same devices (LNRO0005), and virtio_mmio binds
	 * them through ACPI: ember_mmio must then register nothing (the resources are taken) */
	if (!r && access("/sys/bus/acpi/devices/LNRO0005:00", F_OK) == 0)
		r = -EEXIST;
	if (modules_load(MODULE_LIST, r ? NULL : mmio))
		logf_("some modules did not load (see above)\n");
	r = abi_open();
	if (r) {
		logf_("error: ioperm on ember's ports: %s\n", strerror(-r));
		fatal();
	}
	reseed_init(&rs);
	lfd = listen_vsock(s.port);
	if (lfd < 0)
		fatal();
	argv[0] = s.handler;
	argv[1] = NULL;
	struct agent_config cfg = {
		.handler_argv = argv, .max_payload = s.max_payload,
		.limits = { .timeout_ms = s.timeout_ms, .max_output = s.max_output },
		.before_run = reseed_check, .ctx = &rs,
	};
	logf_("ready port=%u handler=%s mono_ns=%llu generation=%016llx\n", s.port, s.handler,
	      (unsigned long long)mono_ns(), (unsigned long long)rs.generation);
	abi_ready(); /* the golden snapshot: modules loaded, listener up */

	for (;;) {
		struct agent_conn_stats st = { 0 };
		int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		if (c < 0) {
			if (errno != EINTR && errno != ECONNABORTED)
				logf_("accept: %s\n", strerror(errno));
			continue;
		}
		reseed_check(&rs);
		r = agent_serve_conn(c, &cfg, &st);
		if (r && r != -ECONNRESET && r != -EPIPE)
			logf_("connection: %s\n", strerror(-r));
		close(c);
		reap_orphans();
	}
}
