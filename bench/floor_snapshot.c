/*
 * floor_snapshot: the baseline for snapshot creation. ember writes a snapshot's memory
 * sparse (only the non-zero pages, at their offsets) and makes it durable (fsync of
 * the file, the state file and the directories). The least any VMM has to do for the
 * same durability is to write the same data bytes once with plain write() into a new
 * file and fsync it and its directory; that is what this program times.
 *
 *   floor_snapshot --data GOLDEN_DIR OUT_DIR   write the data pages of GOLDEN_DIR's memory
 *                                             file (exactly the bytes ember writes),
 *                                             back to back: one write() per run of data
 *                                             pages, as ember has one pwrite() per run
 *   floor_snapshot --sparse GOLDEN_DIR OUT_DIR the same runs with pwrite() at their own
 *                                             offsets, then ftruncate to the RAM size:
 *                                             ember's file layout (holes for zero
 *                                             pages) without finding the zero pages
 *   floor_snapshot --full GOLDEN_DIR OUT_DIR   write the whole RAM image (zero pages
 *                                             included), 1 MiB per write(): the cost of
 *                                             not knowing which pages are zero
 *
 * Untimed set-up: the golden memory file's data extents (SEEK_DATA/SEEK_HOLE: ember
 * leaves zero pages as holes) are read into anonymous memory at their offsets, so the
 * source is resident RAM with untouched zero pages, as a VM's is. Timed: mkdir OUT_DIR,
 * create OUT_DIR/memory.raw, the writes (us_memory), fsync of the file and of OUT_DIR
 * (us_commit). Not done (ember does them): finding the zero pages, the state file, the
 * temporary-directory rename and the fsync of the parent.
 *
 * Prints "ember-snapshot us_total=N us_memory=N us_commit=N bytes_written=N" on
 * stderr, the keys of ember's --timings line. Exit 0 on success, 1 on error.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FULL_WRITE_CHUNK (1u << 20)
#define MAX_RUNS (1u << 20)

struct run {
	uint64_t off, len;
};

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000;
}

static int fail(const char *what)
{
	fprintf(stderr, "floor_snapshot: %s: %s\n", what, strerror(errno));
	return 1;
}

static int failx(const char *what)
{
	fprintf(stderr, "floor_snapshot: %s\n", what);
	return 1;
}

static int write_all(int fd, const uint8_t *p, uint64_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (uint64_t)n;
	}
	return 0;
}

static int pwrite_all(int fd, const uint8_t *p, uint64_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (uint64_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* The golden memory file's data runs, read into anonymous memory at their offsets. */
static int load_golden(const char *dir, uint8_t **mem, uint64_t *size, struct run *runs,
		       unsigned *nr_runs)
{
	char path[4096];
	struct stat sb;
	off_t pos = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/memory.raw", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) < 0)
		return fail(path);
	*size = (uint64_t)sb.st_size;
	*mem = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		    -1, 0);
	if (*mem == MAP_FAILED)
		return fail("mmap");
	*nr_runs = 0;
	for (;;) {
		off_t data = lseek(fd, pos, SEEK_DATA), hole;

		if (data < 0 && errno == ENXIO)
			break;
		hole = data < 0 ? -1 : lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			return fail("SEEK_DATA/SEEK_HOLE");
		if (*nr_runs == MAX_RUNS)
			return failx("too many data runs");
		runs[*nr_runs] = (struct run){ (uint64_t)data, (uint64_t)(hole - data) };
		for (uint64_t got = 0; got < runs[*nr_runs].len;) {
			ssize_t n = pread(fd, *mem + data + got, runs[*nr_runs].len - got,
					  data + (off_t)got);

			if (n <= 0)
				return fail("pread");
			got += (uint64_t)n;
		}
		(*nr_runs)++;
		pos = hole;
	}
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	static struct run runs[MAX_RUNS];
	unsigned nr_runs = 0;
	uint64_t size = 0, written = 0, t0, t1, t2;
	char path[4096];
	uint8_t *mem = NULL;
	bool full, sparse;
	int fd, dfd;

	if (argc != 4 || (strcmp(argv[1], "--data") && strcmp(argv[1], "--full") &&
			  strcmp(argv[1], "--sparse")))
		return failx("usage: floor_snapshot --data|--sparse|--full GOLDEN_DIR OUT_DIR");
	full = !strcmp(argv[1], "--full");
	sparse = !strcmp(argv[1], "--sparse");
	if (load_golden(argv[2], &mem, &size, runs, &nr_runs))
		return 1;

	t0 = mono_us();
	if (mkdir(argv[3], 0755) < 0)
		return fail(argv[3]);
	snprintf(path, sizeof(path), "%s/memory.raw", argv[3]);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return fail(path);
	if (full) {
		for (uint64_t off = 0; off < size; off += FULL_WRITE_CHUNK) {
			uint64_t n = size - off < FULL_WRITE_CHUNK ? size - off : FULL_WRITE_CHUNK;

			if (write_all(fd, mem + off, n))
				return fail("write");
			written += n;
		}
	} else if (sparse) {
		for (unsigned i = 0; i < nr_runs; i++) {
			if (pwrite_all(fd, mem + runs[i].off, runs[i].len, runs[i].off))
				return fail("pwrite");
			written += runs[i].len;
		}
		if (ftruncate(fd, (off_t)size) < 0)
			return fail("ftruncate");
	} else {
		for (unsigned i = 0; i < nr_runs; i++) {
			if (write_all(fd, mem + runs[i].off, runs[i].len))
				return fail("write");
			written += runs[i].len;
		}
	}
	t1 = mono_us();
	dfd = open(argv[3], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fsync(fd) < 0 || dfd < 0 || fsync(dfd) < 0)
		return fail("fsync");
	t2 = mono_us();
	fprintf(stderr, "ember-snapshot us_total=%" PRIu64 " us_memory=%" PRIu64 " us_commit=%" PRIu64
		" bytes_written=%" PRIu64 "\n", t2 - t0, t1 - t0, t2 - t1, written);
	return 0;
}
