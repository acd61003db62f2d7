/*
 * The page server under a real KVM vCPU: guest RAM is uffd-backed memory over a memory
 * image holding page tables, GDT, code and data. The vCPU's first touches of all of it
 * (KVM's page walks, instruction fetch, loads, a store to a zero page) fault through
 * KVM to the pager; the guest checksums 512 data pages and reports through a port;
 * the host then reads a ucall block the guest never touched, on the vCPU's thread.
 * Raw demand paging, raw with the whole image prefetched (no faults at all), and lz4.
 * Then two vCPUs at once, released together, walking the same pages in the same order
 * (both fault on each page: two messages, one install wakes both) or disjoint halves,
 * through raw pages and lz4 chunks: each must checksum exactly its own range.
 */
#include <pthread.h>
#include <sys/ioctl.h>

#include "../unit/test_snapfmt_fixture.h"
#include "../unit/test_pager_fixture.h"
#include "arch/x86_64/x86.h"
#include "testlib.h"

#define RAM        (4 * MiB)
#define DATA_GPA   0x200000ull
#define DATA_PAGES 512
#define STORE_GPA  0x1ff008ull
#define UCALL_GPA  0x180000ull
#define PORT       0xe9

#define PARAM_CODE_GPA (HIGH_MEM_START + 0x100)
#define MAX_VCPUS  2

static const char ucall_text[] = "ember pager ucall block";

/*
 * rsi = DATA_GPA; for 512 pages: rax += [rsi]; rax = rol(rax, 7); rax ^= [rsi+0xff8];
 * then [STORE_GPA] = rax (first touch is a store), rdi = UCALL_GPA, out PORT.
 */
static const uint8_t guest_code[] = {
	0x48, 0xc7, 0xc6, 0x00, 0x00, 0x20, 0x00, /* mov rsi, 0x200000 */
	0xb9, 0x00, 0x02, 0x00, 0x00,             /* mov ecx, 512 */
	0x31, 0xc0,                               /* xor eax, eax */
	0x48, 0x8b, 0x16,                         /* 1: mov rdx, [rsi] */
	0x48, 0x01, 0xd0,                         /* add rax, rdx */
	0x48, 0xc1, 0xc0, 0x07,                   /* rol rax, 7 */
	0x48, 0x8b, 0x96, 0xf8, 0x0f, 0x00, 0x00, /* mov rdx, [rsi + 0xff8] */
	0x48, 0x31, 0xd0,                         /* xor rax, rdx */
	0x48, 0x81, 0xc6, 0x00, 0x10, 0x00, 0x00, /* add rsi, 0x1000 */
	0xff, 0xc9,                               /* dec ecx */
	0x75, 0xe1,                               /* jnz 1b */
	0x48, 0x89, 0x04, 0x25, 0x08, 0xf0, 0x1f, 0x00, /* mov [0x1ff008], rax */
	0xbf, 0x00, 0x00, 0x18, 0x00,             /* mov edi, 0x180000 */
	0xe6, PORT,                               /* out 0xe9, al */
	0xf4,                                     /* hlt */
};

/*
 * The same walk with its inputs in registers, one run per vCPU: rsi = first data
 * page, ecx = pages, rbx = where to store the result; then out PORT, hlt.
 */
static const uint8_t param_code[] = {
	0x31, 0xc0,                               /* xor eax, eax */
	0x48, 0x8b, 0x16,                         /* 1: mov rdx, [rsi] */
	0x48, 0x01, 0xd0,                         /* add rax, rdx */
	0x48, 0xc1, 0xc0, 0x07,                   /* rol rax, 7 */
	0x48, 0x8b, 0x96, 0xf8, 0x0f, 0x00, 0x00, /* mov rdx, [rsi + 0xff8] */
	0x48, 0x31, 0xd0,                         /* xor rax, rdx */
	0x48, 0x81, 0xc6, 0x00, 0x10, 0x00, 0x00, /* add rsi, 0x1000 */
	0xff, 0xc9,                               /* dec ecx */
	0x75, 0xe1,                               /* jnz 1b */
	0x48, 0x89, 0x03,                         /* mov [rbx], rax */
	0xe6, PORT,                               /* out 0xe9, al */
	0xf4,                                     /* hlt */
};

static uint8_t *image;        /* the memory image, RAM bytes */
static char *tmp;
static int raw_fd = -1;
static struct snap_dir sd = { .mem_fd = -1 };
static struct vm *vm;
static struct pager *pg;
static struct kvm_cpuid2 *supported;

/* The walk over data pages [first, first + n) of the image. */
static uint64_t expected_range(unsigned first, unsigned n)
{
	uint64_t rax = 0, q0, q1;

	for (unsigned p = first; p < first + n; p++) {
		memcpy(&q0, image + DATA_GPA + p * PAGE_SIZE, 8);
		memcpy(&q1, image + DATA_GPA + p * PAGE_SIZE + 0xff8, 8);
		rax += q0;
		rax = (rax << 7) | (rax >> 57);
		rax ^= q1;
	}
	return rax;
}

static uint64_t expected_checksum(void)
{
	return expected_range(0, DATA_PAGES);
}

static void build_image(void)
{
	struct guest_mem m0;
	struct errbuf eb = { "" };
	uint64_t s = 0x5eed;

	ember_test_require_kvm();
	tb_mem_init(&m0, RAM);
	cr_assert_eq(boot_write_tables(&m0, &eb), 0, "%s", eb.msg);
	cr_assert_eq(gpa_write(&m0, HIGH_MEM_START, guest_code, sizeof(guest_code)), 0);
	cr_assert_eq(gpa_write(&m0, PARAM_CODE_GPA, param_code, sizeof(param_code)), 0);
	cr_assert_eq(gpa_write(&m0, UCALL_GPA, ucall_text, sizeof(ucall_text)), 0);
	for (unsigned p = 0; p < DATA_PAGES; p++) {
		uint8_t *pg0 = m0.base + DATA_GPA + p * PAGE_SIZE;

		if (p % 5 == 2 && p != DATA_PAGES - 1)
			continue; /* zero pages among the data */
		for (size_t i = 0; i < PAGE_SIZE; i += 8) {
			uint64_t v = px_rand(&s);

			memcpy(pg0 + i, &v, 8);
		}
	}
	image = malloc(RAM);
	cr_assert_not_null(image);
	memcpy(image, m0.base, RAM);
	mem_free(&m0);
	tmp = fx_tmpdir();
}

/* The KVM VM around uffd memory, in restore order: memslot before irqchip. */
static void vm_up_n(struct pager_config *cfg, unsigned nr_vcpus)
{
	struct errbuf eb = { "" };

	vm = calloc(1, sizeof(*vm));
	cr_assert_not_null(vm);
	cr_assert_eq(kvm_open(&vm->kvm, &eb), 0, "%s", eb.msg);
	cr_assert_eq(kvm_create_vm(&vm->kvm, &eb), 0, "%s", eb.msg);
	cr_assert_eq(mem_layout(&vm->mem, RAM, &eb), 0, "%s", eb.msg);
	cfg->size = RAM;
	cr_assert_eq(pager_create(&vm->mem, cfg, &pg, &eb), 0, "%s", eb.msg);
	cr_assert_eq(pager_start(pg, &eb), 0, "%s", eb.msg);
	cr_assert_eq(mem_register(&vm->mem, vm->kvm.vm_fd, false, &eb), 0, "%s", eb.msg);
	cr_assert_eq(kvm_create_irqchip(&vm->kvm, &eb), 0, "%s", eb.msg);
	cr_assert_eq(cpuid_get_supported(vm->kvm.dev_fd, &supported, &eb), 0, "%s", eb.msg);
	vm->vcpus = calloc(nr_vcpus, sizeof(*vm->vcpus));
	cr_assert_not_null(vm->vcpus);
	vm->nr_vcpus = nr_vcpus;
	for (unsigned i = 0; i < nr_vcpus; i++) {
		struct vcpu *v = &vm->vcpus[i];

		v->vm = vm;
		v->id = i;
		v->fd = ioctl(vm->kvm.vm_fd, KVM_CREATE_VCPU, (unsigned long)i);
		cr_assert_geq(v->fd, 0, "KVM_CREATE_VCPU: %s", strerror(errno));
		cr_assert_eq(x86_vcpu_init(vm, v, supported, &eb), 0, "%s", eb.msg);
		cr_assert_eq(x86_vcpu_set_entry(v, HIGH_MEM_START, &eb), 0, "%s", eb.msg);
	}
}

static void vm_up(struct pager_config *cfg)
{
	vm_up_n(cfg, 1);
}

static void teardown(void)
{
	if (vm) {
		pager_stop(pg); /* nothing may stay blocked in a fault past here */
		for (unsigned i = 0; vm->vcpus && i < vm->nr_vcpus; i++)
			if (vm->vcpus[i].fd > 0)
				close(vm->vcpus[i].fd);
		free(vm->vcpus);
		kvm_close(&vm->kvm);
		pager_destroy(pg);
		mem_free(&vm->mem);
		free(vm);
	}
	pg = NULL;
	vm = NULL;
	free(supported);
	supported = NULL;
	snap_dir_close(&sd);
	if (raw_fd >= 0)
		close(raw_fd);
	raw_fd = -1;
	free(image);
	image = NULL;
	if (tmp) {
		fx_rm_rf(tmp);
		free(tmp);
	}
	tmp = NULL;
}

/* Runs the guest to its port write; checks the checksum, the store and the ucall read. */
static void run_and_check(void)
{
	struct vcpu *v = &vm->vcpus[0];
	long sz = ioctl(vm->kvm.dev_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	struct kvm_run *run = mmap(NULL, (size_t)sz, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	struct kvm_regs regs;
	char ucall[sizeof(ucall_text)];
	uint8_t page[PAGE_SIZE];
	uint64_t stored;
	int r;

	cr_assert_neq(run, MAP_FAILED);
	do
		r = ioctl(v->fd, KVM_RUN, 0);
	while (r < 0 && errno == EINTR);
	cr_assert_eq(r, 0, "KVM_RUN: %s", strerror(errno));
	cr_assert_eq(run->exit_reason, KVM_EXIT_IO, "exit reason %u", run->exit_reason);
	cr_assert_eq(run->io.port, PORT);
	cr_assert_eq(ioctl(v->fd, KVM_GET_REGS, &regs), 0);
	cr_assert_eq(regs.rax, expected_checksum(), "guest checksum 0x%llx, image 0x%llx",
		     (unsigned long long)regs.rax, (unsigned long long)expected_checksum());
	/* the VMM handling the exit reads guest memory on the vCPU thread */
	cr_assert_eq(gpa_read(&vm->mem, regs.rdi, ucall, sizeof(ucall)), 0);
	cr_assert_str_eq(ucall, ucall_text);
	cr_assert_eq(gpa_read(&vm->mem, STORE_GPA & ~(PAGE_SIZE - 1), page, PAGE_SIZE), 0);
	memcpy(&stored, page + (STORE_GPA & (PAGE_SIZE - 1)), 8);
	cr_assert_eq(stored, regs.rax, "the guest's store landed");
	munmap(run, (size_t)sz);
}

static void raw_file(void)
{
	char *path = fx_path(tmp, "memory.raw");

	raw_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(raw_fd, 0);
	cr_assert_eq(pwrite(raw_fd, image, RAM, 0), (ssize_t)RAM);
	free(path);
}

Test(pager_kvm, vcpu_faults_are_served_with_the_right_bytes, .fini = teardown, .timeout = 60)
{
	struct pager_config cfg = { 0 };
	struct pager_stats s;

	build_image();
	raw_file();
	cfg.mem_fd = raw_fd;
	vm_up(&cfg);
	run_and_check();
	pager_stats(pg, &s);
	cr_assert_geq(s.faults, DATA_PAGES, "every data page faulted (%llu faults)",
		      (unsigned long long)s.faults);
	cr_assert_eq(s.errors, 0);
}

Test(pager_kvm, prefetched_image_runs_without_a_single_fault, .fini = teardown, .timeout = 60)
{
	uint64_t *ws = px_order_linear(RAM / PAGE_SIZE, false);
	struct pager_config cfg = { .ws_pages = ws, .nr_ws_pages = RAM / PAGE_SIZE };
	struct pager_stats s;

	build_image();
	raw_file();
	cfg.mem_fd = raw_fd;
	vm_up(&cfg);
	px_wait_prefetch(pg, &s);
	run_and_check();
	pager_stats(pg, &s);
	cr_assert_eq(s.faults, 0);
	cr_assert_eq(s.pages_prefetched, RAM / PAGE_SIZE);
	free(ws);
}

Test(pager_kvm, lz4_image_faults_are_served_with_the_right_bytes, .fini = teardown,
     .timeout = 60)
{
	struct pager_config cfg = { .mem_fd = -1 };
	struct snap_state st;
	struct snap_err err = { "" };
	struct snap_writer *w;
	struct pager_stats s;
	char *dir;

	build_image();
	fx_fill_state(&st);
	st.memory.size = RAM;
	st.vm.nr_regions = 1;
	st.vm.regions[0] = (struct snap_region){ .gpa = 0, .size = RAM, .file_offset = 0 };
	dir = fx_path(tmp, "snap");
	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_lz4(w, image, RAM, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_commit(w, &st, &err), 0, "%s", err.msg);
	snap_state_free(&st);
	cr_assert_eq(snap_dir_open(dir, &sd, &err), 0, "%s", err.msg);
	free(dir);
	cfg.lz4 = sd.lz4;
	vm_up(&cfg);
	run_and_check();
	pager_stats(pg, &s);
	cr_assert_gt(s.chunks_decoded, 0);
	cr_assert_lt(s.faults, DATA_PAGES, "chunks, not pages: %llu faults",
		     (unsigned long long)s.faults);
	cr_assert_eq(s.errors, 0);
}

/* ---- two vCPUs faulting at once ----------------------------------------------------- */

struct walker {
	struct vcpu *v;
	unsigned first, n;          /* data pages to walk */
	uint64_t store_gpa;
	pthread_barrier_t *go;
	/* results, checked on the test's thread (no asserts in here) */
	int run_errno;
	uint32_t exit_reason;
	uint16_t port;
	uint64_t rax;
};

static void *walker_thread(void *arg)
{
	struct walker *w = arg;
	long sz = ioctl(w->v->vm->kvm.dev_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	struct kvm_run *run = sz > 0 ? mmap(NULL, (size_t)sz, PROT_READ | PROT_WRITE, MAP_SHARED,
					    w->v->fd, 0) : MAP_FAILED;
	struct kvm_regs regs;
	int r;

	pthread_barrier_wait(w->go);
	if (run == MAP_FAILED) {
		w->run_errno = ENOMEM;
		return NULL;
	}
	do
		r = ioctl(w->v->fd, KVM_RUN, 0);
	while (r < 0 && errno == EINTR);
	w->run_errno = r < 0 ? errno : 0;
	w->exit_reason = run->exit_reason;
	w->port = run->io.port;
	if (!w->run_errno && ioctl(w->v->fd, KVM_GET_REGS, &regs) == 0)
		w->rax = regs.rax;
	munmap(run, (size_t)sz);
	return NULL;
}

/* Points vCPU i at the parameterised walk; an AP is made runnable without INIT/SIPI. */
static void set_walk(struct walker *w)
{
	struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
	struct errbuf eb = { "" };
	struct kvm_regs regs;

	cr_assert_eq(x86_vcpu_set_entry(w->v, PARAM_CODE_GPA, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ioctl(w->v->fd, KVM_SET_MP_STATE, &mp), 0, "KVM_SET_MP_STATE: %s",
		     strerror(errno));
	cr_assert_eq(ioctl(w->v->fd, KVM_GET_REGS, &regs), 0);
	regs.rsi = DATA_GPA + (uint64_t)w->first * PAGE_SIZE;
	regs.rcx = w->n;
	regs.rbx = w->store_gpa;
	cr_assert_eq(ioctl(w->v->fd, KVM_SET_REGS, &regs), 0);
}

/*
 * Runs vCPU 0 over data pages [first0, first0 + n0) and vCPU 1 over [first1, first1 +
 * n1), released by one barrier, and checks each one's checksum and store.
 */
static void run_two(unsigned first0, unsigned n0, unsigned first1, unsigned n1)
{
	struct walker w[MAX_VCPUS] = {
		{ .first = first0, .n = n0, .store_gpa = STORE_GPA + 8 },
		{ .first = first1, .n = n1, .store_gpa = STORE_GPA + 16 },
	};
	pthread_t t[MAX_VCPUS];
	pthread_barrier_t go;

	cr_assert_eq(vm->nr_vcpus, MAX_VCPUS);
	cr_assert_eq(pthread_barrier_init(&go, NULL, MAX_VCPUS), 0);
	for (unsigned i = 0; i < MAX_VCPUS; i++) {
		w[i].v = &vm->vcpus[i];
		w[i].go = &go;
		set_walk(&w[i]);
	}
	for (unsigned i = 0; i < MAX_VCPUS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, walker_thread, &w[i]), 0);
	for (unsigned i = 0; i < MAX_VCPUS; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&go);

	for (unsigned i = 0; i < MAX_VCPUS; i++) {
		uint64_t want = expected_range(w[i].first, w[i].n), stored;
		uint8_t page[PAGE_SIZE];

		cr_assert_eq(w[i].run_errno, 0, "vCPU %u: KVM_RUN: %s", i, strerror(w[i].run_errno));
		cr_assert_eq(w[i].exit_reason, KVM_EXIT_IO, "vCPU %u: exit reason %u", i,
			     w[i].exit_reason);
		cr_assert_eq(w[i].port, PORT);
		cr_assert_eq(w[i].rax, want, "vCPU %u: pages %u..%u checksum 0x%llx, image 0x%llx", i,
			     w[i].first, w[i].first + w[i].n - 1, (unsigned long long)w[i].rax,
			     (unsigned long long)want);
		cr_assert_eq(gpa_read(&vm->mem, STORE_GPA & ~(PAGE_SIZE - 1), page, PAGE_SIZE), 0);
		memcpy(&stored, page + (w[i].store_gpa & (PAGE_SIZE - 1)), 8);
		cr_assert_eq(stored, want, "vCPU %u's store landed", i);
	}
}

static void check_served_cleanly(unsigned min_faults)
{
	struct pager_stats s;

	pager_stats(pg, &s);
	cr_assert_eq(s.errors, 0);
	cr_assert_geq(s.faults, min_faults, "%llu faults", (unsigned long long)s.faults);
}

Test(pager_kvm, two_vcpus_faulting_the_same_pages_at_once_read_the_right_bytes, .fini = teardown,
     .timeout = 60)
{
	struct pager_config cfg = { 0 };

	build_image();
	raw_file();
	cfg.mem_fd = raw_fd;
	vm_up_n(&cfg, MAX_VCPUS);
	run_two(0, DATA_PAGES, 0, DATA_PAGES);
	check_served_cleanly(DATA_PAGES);
}

Test(pager_kvm, two_vcpus_faulting_different_pages_at_once_read_the_right_bytes,
     .fini = teardown, .timeout = 60)
{
	struct pager_config cfg = { 0 };

	build_image();
	raw_file();
	cfg.mem_fd = raw_fd;
	vm_up_n(&cfg, MAX_VCPUS);
	run_two(0, DATA_PAGES / 2, DATA_PAGES / 2, DATA_PAGES / 2);
	check_served_cleanly(DATA_PAGES);
}

Test(pager_kvm, two_vcpus_overlapping_ranges_read_the_right_bytes, .fini = teardown,
     .timeout = 60)
{
	struct pager_config cfg = { 0 };

	build_image();
	raw_file();
	cfg.mem_fd = raw_fd;
	vm_up_n(&cfg, MAX_VCPUS);
	/* shared pages 128..383, each vCPU alone on 128 more */
	run_two(0, 384, 128, 384);
	check_served_cleanly(DATA_PAGES);
}

Test(pager_kvm, two_vcpus_faulting_the_same_lz4_chunks_at_once_read_the_right_bytes,
     .fini = teardown, .timeout = 60)
{
	struct pager_config cfg = { .mem_fd = -1 };
	struct snap_state st;
	struct snap_err err = { "" };
	struct snap_writer *w;
	char *dir;

	build_image();
	fx_fill_state(&st);
	st.memory.size = RAM;
	st.vm.nr_regions = 1;
	st.vm.regions[0] = (struct snap_region){ .gpa = 0, .size = RAM, .file_offset = 0 };
	dir = fx_path(tmp, "snap");
	cr_assert_eq(snap_writer_begin(dir, &w, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_write_lz4(w, image, RAM, &err), 0, "%s", err.msg);
	cr_assert_eq(snap_writer_commit(w, &st, &err), 0, "%s", err.msg);
	snap_state_free(&st);
	cr_assert_eq(snap_dir_open(dir, &sd, &err), 0, "%s", err.msg);
	free(dir);
	cfg.lz4 = sd.lz4;
	vm_up_n(&cfg, MAX_VCPUS);
	/* one walks up from the start, the other from a quarter in: same chunks, other pages */
	run_two(0, DATA_PAGES, DATA_PAGES / 4, DATA_PAGES * 3 / 4);
	check_served_cleanly(1);
}
