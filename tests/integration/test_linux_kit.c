/*
 * The Linux guest kit (make linux-guest: Debian's kernel, an initramfs with the guest
 * agent) loads in ember. This platform emulates guest ring 0 (PLATFORM.md), so the
 * kernel cannot boot far enough to run the agent here; what is checked: the kit builds,
 * boot_params' ramdisk_image/ramdisk_size point at bytes equal to the initramfs file
 * (read back from a snapshot of the running VM), and the kernel runs in its own page
 * tables. The kit's kernel package is downloaded once by the build (cached in
 * build/linux-guest-cache/); the test says so when it happens. A kit that cannot be
 * built fails the test.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testlib.h"
#include "arch/x86_64/x86.h"
#include "ember_abi.h"
#include "../../guest-agent/config.h"

#define BUILD_MS  240000 /* first run only: apt-get download of ~70 MB, then dpkg-deb */
#define RUN_MS    30000
/* struct boot_params offsets (Documentation/arch/x86/zero-page.rst) */
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE  0x0c4
#define BP_RAMDISK_IMAGE     0x218
#define BP_RAMDISK_SIZE      0x21c
#define BP_CMD_LINE_PTR      0x228
#define BP_EXT_CMD_LINE_PTR  0x0c8

static struct proc_result build, boot;
static struct proc *vmm;
static char tmp[4096];

static void fini(void)
{
	if (vmm) {
		struct proc_result dead;

		kill(proc_pid(vmm), SIGKILL);
		proc_finish(vmm, 1, &dead);
		proc_result_free(&dead);
		vmm = NULL;
	}
	if (tmp[0]) {
		ember_test_kill_strays(tmp);
		ember_test_rmtree(tmp);
	}
	proc_result_free(&build);
	proc_result_free(&boot);
}

TestSuite(linux_kit, .fini = fini, .timeout = 300);

/* make linux-guest for $EMBER_BUILD; the kit's directory. Fails the test when the kit
 * cannot be built (no skip: the kit is a deliverable). */
static const char *build_kit(void)
{
	static char bvar[4200], dir[4200];
	const char *b = getenv("EMBER_BUILD") ? getenv("EMBER_BUILD") : "build";
	/* not the outer make's jobserver: this make is a separate build */
	char *argv[] = { "/usr/bin/env", "-u", "MAKEFLAGS", "-u", "MFLAGS", "-u", "MAKELEVEL",
			 "make", "--no-print-directory", "linux-guest", bvar, NULL };

	char lock[4200];
	int lfd;

	snprintf(bvar, sizeof(bvar), "B=%s", b);
	snprintf(dir, sizeof(dir), "%s/linux-guest", b);
	/* this suite's tests run in parallel: one make at a time (the kit's files are
	 * replaced by rename, so a test reading them meanwhile sees whole files) */
	snprintf(lock, sizeof(lock), "%s/linux-guest.lock", b);
	lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_geq(lfd, 0, "cannot open %s", lock);
	cr_assert_eq(flock(lfd, LOCK_EX), 0);
	cr_assert_eq(proc_run(argv, BUILD_MS, &build), 0, "cannot run make");
	close(lfd);
	if (strstr(build.err, "downloading"))
		cr_log_info("linux_kit: the kit's build downloaded Debian's kernel package "
			    "(cached for later runs):\n%s", build.err);
	cr_assert_eq(build.status, 0, "make linux-guest failed (exit %d): the Linux guest kit "
		     "cannot be built on this machine:\n%s%s", build.status, build.out, build.err);
	return dir;
}

static uint32_t mem_u32(int fd, uint64_t gpa)
{
	uint32_t v = 0;

	cr_assert_eq(pread(fd, &v, sizeof(v), (off_t)gpa), (ssize_t)sizeof(v),
		     "memory file too short for gpa 0x%llx", (unsigned long long)gpa);
	return v;
}

Test(linux_kit, kernel_and_initramfs_load_and_the_kernel_reaches_its_own_page_tables)
{
	char kernel[4300], initrd[4300], sock[4096], snap[4096], mem[4096];
	const char *dir;
	struct proc_result r;
	uint64_t addr, size;
	uint8_t *want, *got;
	size_t want_len;
	int fd;

	ember_test_require_kvm();
	dir = build_kit();
	snprintf(kernel, sizeof(kernel), "%s/vmlinux", dir);
	snprintf(initrd, sizeof(initrd), "%s/initramfs.cpio", dir);
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(sock, tmp, "api.sock");
	snapt_join(snap, tmp, "snap");
	vmm = ember_test_start("boot", "--kernel", kernel, "--initrd", initrd, "--mem", "512",
			       "--cmdline", "console=ttyS0", "--api-sock", sock, "--timeout", "3",
			       "--dump-regs", "--console", "none", NULL);
	snapt_wait_socket(sock, RUN_MS);
	usleep(1000000); /* let the kernel leave its entry path */

	/* the guest's memory as it runs: boot_params and the initramfs in it */
	snapt_ctl(&r, sock, "snapshot", snap, NULL);
	cr_assert_eq(r.status, 0, "ember ctl snapshot exited %d:\n%s%s", r.status, r.out, r.err);
	proc_result_free(&r);
	snapt_join(mem, snap, "memory.raw");
	fd = open(mem, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "no %s", mem);
	/* 512 MiB: one region at gpa 0, file offset 0 (FORMAT.md section 5) */
	addr = mem_u32(fd, BOOT_PARAMS_ADDR + BP_RAMDISK_IMAGE) |
	       (uint64_t)mem_u32(fd, BOOT_PARAMS_ADDR + BP_EXT_RAMDISK_IMAGE) << 32;
	size = mem_u32(fd, BOOT_PARAMS_ADDR + BP_RAMDISK_SIZE) |
	       (uint64_t)mem_u32(fd, BOOT_PARAMS_ADDR + BP_EXT_RAMDISK_SIZE) << 32;
	want = snapt_read_file(initrd, &want_len);
	cr_assert_eq(size, want_len, "boot_params.ramdisk_size %llu, the initramfs has %zu bytes",
		     (unsigned long long)size, want_len);
	cr_assert_neq(addr, 0, "boot_params.ramdisk_image is 0");
	cr_assert_leq(addr + size, 512ull << 20, "the ramdisk [0x%llx, +%llu) is outside RAM",
		      (unsigned long long)addr, (unsigned long long)size);
	got = malloc(want_len);
	cr_assert_eq(pread(fd, got, want_len, (off_t)addr), (ssize_t)want_len);
	cr_assert_eq(memcmp(got, want, want_len), 0,
		     "the bytes at ramdisk_image 0x%llx differ from %s", (unsigned long long)addr,
		     initrd);
	free(got);
	free(want);
	close(fd);

	cr_assert_eq(proc_finish(vmm, RUN_MS, &boot), 0);
	vmm = NULL;
	ember_test_assert_linux_own_page_tables(&boot);
}

/*
 * ember writes its virtio_mmio.device= words into the command line it gives the kernel;
 * Debian's kernel ignores them, and the agent hands them to ember_mmio.ko. Read back
 * from guest memory, they must be what the agent's parser turns into both devices.
 */
Test(linux_kit, agent_finds_embers_virtio_devices_in_the_command_line_ember_wrote)
{
	char kernel[4300], initrd[4300], sock[4096], vsock[4096], snap[4096], mem[4096];
	char cmdline[4096], params[1024], want[256], err[256];
	struct agent_settings set;
	const char *dir;
	struct proc_result r;
	uint64_t ptr;
	ssize_t n;
	int fd;

	ember_test_require_kvm();
	dir = build_kit();
	snprintf(kernel, sizeof(kernel), "%s/vmlinux", dir);
	snprintf(initrd, sizeof(initrd), "%s/initramfs.cpio", dir);
	ember_test_tmpdir(tmp, sizeof(tmp));
	snapt_join(sock, tmp, "api.sock");
	snapt_join(vsock, tmp, "v.sock");
	snapt_join(snap, tmp, "snap");
	vmm = ember_test_start("boot", "--kernel", kernel, "--initrd", initrd, "--mem", "256",
			       "--cmdline", "console=ttyS0 ember.handler=/bin/ember-probe",
			       "--vsock-cid", "3", "--vsock-uds", vsock, "--api-sock", sock,
			       "--timeout", "20", "--console", "none", NULL);
	snapt_wait_socket(sock, RUN_MS);
	snapt_ctl(&r, sock, "snapshot", snap, NULL);
	cr_assert_eq(r.status, 0, "ember ctl snapshot exited %d:\n%s%s", r.status, r.out, r.err);
	proc_result_free(&r);
	snapt_ctl(&r, sock, "shutdown", NULL);
	proc_result_free(&r);

	snapt_join(mem, snap, "memory.raw");
	fd = open(mem, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "no %s", mem);
	ptr = mem_u32(fd, BOOT_PARAMS_ADDR + BP_CMD_LINE_PTR) |
	      (uint64_t)mem_u32(fd, BOOT_PARAMS_ADDR + BP_EXT_CMD_LINE_PTR) << 32;
	n = pread(fd, cmdline, sizeof(cmdline) - 1, (off_t)ptr);
	close(fd);
	cr_assert_gt(n, 0, "no command line at 0x%llx", (unsigned long long)ptr);
	cmdline[n] = 0;
	cr_assert_lt(strlen(cmdline), (size_t)n, "the command line is not NUL-terminated");

	cr_assert_eq(agent_mmio_params(cmdline, params, sizeof(params)), 0, "%s", cmdline);
	snprintf(want, sizeof(want), "devices=%uK@0x%x:%u,%uK@0x%x:%u",
		 EMBER_VIRTIO_MMIO_SIZE >> 10,
		 EMBER_VIRTIO_MMIO_BASE + EMBER_VIRTIO_RNG_SLOT * EMBER_VIRTIO_MMIO_SIZE,
		 EMBER_VIRTIO_IRQ_BASE + EMBER_VIRTIO_RNG_SLOT, EMBER_VIRTIO_MMIO_SIZE >> 10,
		 EMBER_VIRTIO_MMIO_BASE + EMBER_VIRTIO_VSOCK_SLOT * EMBER_VIRTIO_MMIO_SIZE,
		 EMBER_VIRTIO_IRQ_BASE + EMBER_VIRTIO_VSOCK_SLOT);
	cr_assert_str_eq(params, want, "command line: %s", cmdline);
	agent_settings_default(&set);
	cr_assert_eq(agent_settings_parse(&set, cmdline, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(set.handler, "/bin/ember-probe");

	cr_assert_eq(proc_finish(vmm, RUN_MS, &boot), 0);
	vmm = NULL;
	ember_test_assert_no_crash(&boot);
}

/* ---- the initramfs as the kernel unpacks it (newc, init/initramfs.c) ------------------ */
/* A static x86-64 executable: ELF, no PT_INTERP (the initramfs has no libc). The data
 * sits at 4-byte alignment in the archive: headers are copied out. */
static void assert_static_exec(const struct cpio_entry *x)
{
	Elf64_Ehdr eh;

	cr_assert((x->mode & S_IFMT) == S_IFREG && (x->mode & 0111), "%s: not an executable file",
		  x->name);
	cr_assert_geq(x->size, sizeof(eh), "%s: too short for ELF", x->name);
	memcpy(&eh, x->data, sizeof(eh));
	cr_assert_eq(memcmp(eh.e_ident, ELFMAG, SELFMAG), 0, "%s: not ELF", x->name);
	cr_assert_eq(eh.e_machine, EM_X86_64, "%s: not x86-64", x->name);
	cr_assert_leq(eh.e_phoff + (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr), x->size);
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;

		memcpy(&ph, x->data + eh.e_phoff + i * sizeof(ph), sizeof(ph));
		cr_assert_neq(ph.p_type, PT_INTERP, "%s is dynamically linked", x->name);
	}
}

static int list_pos(const char *list, const char *name)
{
	const char *p = strstr(list, name);

	cr_assert_not_null(p, "ember.list lacks %s:\n%s", name, list);
	return (int)(p - list);
}

Test(linux_kit, initramfs_holds_the_static_agent_handlers_and_every_listed_module)
{
	static struct cpio_entry e[64];
	const struct cpio_entry *x;
	char initrd[4300], *list, *line, *save;
	uint8_t *a;
	size_t len;
	unsigned n;

	snprintf(initrd, sizeof(initrd), "%s/initramfs.cpio", build_kit());
	a = snapt_read_file(initrd, &len);
	n = cpio_parse(a, len, e, 64);

	for (unsigned i = 0; i < 3; i++) {
		static const char *const exe[] = { "init", "bin/ember-echo", "bin/ember-probe" };

		x = cpio_find(e, n, exe[i]);
		cr_assert_not_null(x, "no /%s in the initramfs", exe[i]);
		assert_static_exec(x);
	}
	x = cpio_find(e, n, "dev/console");
	cr_assert(x && (x->mode & S_IFMT) == S_IFCHR && x->rmajor == 5 && x->rminor == 1,
		  "no /dev/console character device 5:1: the kernel would start init without a "
		  "console");
	x = cpio_find(e, n, "lib/modules/ember.list");
	cr_assert_not_null(x, "no /lib/modules/ember.list");
	list = strndup((const char *)x->data, x->size);
	/* dependencies first, ember_mmio right after its driver */
	cr_assert_lt(list_pos(list, "/virtio_ring.ko"), list_pos(list, "/virtio.ko"));
	cr_assert_lt(list_pos(list, "/virtio.ko"), list_pos(list, "/virtio_mmio.ko"));
	cr_assert_lt(list_pos(list, "/virtio_mmio.ko"), list_pos(list, "/ember_mmio.ko"));
	cr_assert_lt(list_pos(list, "/vsock.ko"), list_pos(list, "/vmw_vsock_virtio_transport.ko"));
	list_pos(list, "/virtio_rng.ko");
	for (line = strtok_r(list, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		x = cpio_find(e, n, line + 1);
		cr_assert_not_null(x, "ember.list names %s, which is not in the archive", line);
		cr_assert(x->size > 4 && !memcmp(x->data, ELFMAG, SELFMAG), "%s is not ELF", line);
	}
	free(list);
	free(a);
}
