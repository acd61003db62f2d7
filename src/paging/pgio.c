/*
 * File reads for the page server: io_uring when available (one submission for a whole
 * batch of faults, several big prefetch reads in flight), else pread. The memory file
 * is registered with the ring; fixed buffers (READ_FIXED) are supported but off by
 * default (see pg_io_features).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include "pager_int.h"

/*
 * Registered file: free to set up, saves an fd lookup per read. Fixed buffers: off.
 * Registering pins (faults in) the whole staging area at create: +85 us for the
 * 256 KiB demand staging, +1.3 ms for 4 MiB of prefetch staging, measured, against
 * no measurable gain in fault latency or prefetch throughput (test_pager_perf).
 */
unsigned pg_io_features = PG_IO_FIXED_FILE;

static int uring_setup(struct pg_io *io, unsigned entries, bool async)
{
	int r = io_uring_queue_init(entries, &io->ring, 0);

	if (r < 0)
		return r;
	io->uring = true;
	if ((pg_io_features & PG_IO_FIXED_FILE) && io_uring_register_files(&io->ring, &io->fd, 1) == 0)
		io->fixed_file = true;
	if ((pg_io_features & PG_IO_FIXED_BUF) && io->buf) {
		struct iovec iov = { .iov_base = io->buf, .iov_len = io->buf_len };

		/* may fail on RLIMIT_MEMLOCK: plain reads work too */
		if (io_uring_register_buffers(&io->ring, &iov, 1) == 0)
			io->fixed_buf = true;
	}
	if (async) {
		io->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (io->efd < 0)
			return -errno;
		r = io_uring_register_eventfd(&io->ring, io->efd);
		if (r < 0)
			return r;
	}
	return 0;
}

int pg_io_init(struct pg_io *io, int fd, unsigned entries, uint8_t *buf, size_t buf_len,
	       bool use_uring, bool async, struct errbuf *eb)
{
	int r;

	memset(io, 0, sizeof(*io));
	io->fd = fd;
	io->efd = -1;
	io->buf = buf;
	io->buf_len = buf_len;
	io->cap_done = entries;
	io->done = calloc(entries, sizeof(*io->done));
	if (!io->done)
		return errbuf_set(eb, -ENOMEM, "pager: out of memory");
	if (!use_uring)
		return 0;
	r = uring_setup(io, entries, async);
	if (r < 0) {
		/* Documented fallback: pread serves every page correctly, only slower. */
		pr_warn("pager: io_uring unavailable (%s), reading the memory file with pread",
			strerror(-r));
		if (io->uring)
			io_uring_queue_exit(&io->ring);
		if (io->efd >= 0)
			close(io->efd);
		io->uring = io->fixed_file = io->fixed_buf = false;
		io->efd = -1;
	}
	return 0;
}

void pg_io_exit(struct pg_io *io)
{
	if (io->uring)
		io_uring_queue_exit(&io->ring);
	if (io->efd >= 0)
		close(io->efd);
	free(io->done);
	memset(io, 0, sizeof(*io));
	io->efd = -1;
}

/* pread mode: the whole request, as one pread (or more after a short one). */
static void do_pread(struct pg_io *io, struct pg_read *r)
{
	r->res = 0;
	pg_io_complete_short(io, r);
}

int pg_io_complete_short(struct pg_io *io, struct pg_read *r)
{
	if (r->res < 0)
		return r->res;
	while ((uint32_t)r->res < r->len) {
		ssize_t n = pread(io->fd, r->dst + r->res, r->len - (uint32_t)r->res,
				  (off_t)(r->off + (uint64_t)r->res));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r->res = -errno;
			return r->res;
		}
		if (n == 0)
			break; /* end of file */
		r->res += (int32_t)n;
	}
	return (uint32_t)r->res == r->len ? 0 : -ENODATA;
}

static void prep(struct pg_io *io, struct io_uring_sqe *sqe, struct pg_read *r)
{
	int fd = io->fixed_file ? 0 : io->fd;

	if (io->fixed_buf && r->dst >= io->buf && r->dst + r->len <= io->buf + io->buf_len)
		io_uring_prep_read_fixed(sqe, fd, r->dst, r->len, r->off, 0);
	else
		io_uring_prep_read(sqe, fd, r->dst, r->len, r->off);
	if (io->fixed_file)
		sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data(sqe, r);
}

int pg_io_queue(struct pg_io *io, struct pg_read *r)
{
	struct io_uring_sqe *sqe;

	if (!io->uring) {
		if (io->nr_done == io->cap_done)
			return -ENOSPC;
		do_pread(io, r);
		io->done[io->nr_done++] = r;
		return 0;
	}
	sqe = io_uring_get_sqe(&io->ring);
	if (!sqe) {
		int s = pg_io_flush(io);

		if (s < 0)
			return s;
		sqe = io_uring_get_sqe(&io->ring);
		if (!sqe)
			return -EBUSY;
	}
	prep(io, sqe, r);
	io->queued++;
	return 0;
}

int pg_io_flush(struct pg_io *io)
{
	int s;

	if (!io->uring || !io->queued)
		return 0;
	do
		s = io_uring_submit(&io->ring);
	while (s == -EINTR);
	if (s < 0)
		return s;
	io->in_flight += (unsigned)s;
	io->queued -= (unsigned)s < io->queued ? (unsigned)s : io->queued;
	return 0;
}

unsigned pg_io_reap(struct pg_io *io, struct pg_read **out, unsigned max)
{
	struct io_uring_cqe *cqes[64];
	unsigned n = 0;

	if (!io->uring) {
		n = io->nr_done < max ? io->nr_done : max;
		memcpy(out, io->done, n * sizeof(*out));
		memmove(io->done, io->done + n, (io->nr_done - n) * sizeof(*out));
		io->nr_done -= n;
		return n;
	}
	if (io->efd >= 0) {
		uint64_t v;

		/* clear before peeking: a completion after the peek signals again */
		if (read(io->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			pr_debug("pager: eventfd read: %s", strerror(errno));
	}
	while (n < max) {
		unsigned want = max - n < ARRAY_SIZE(cqes) ? max - n : ARRAY_SIZE(cqes);
		unsigned got = io_uring_peek_batch_cqe(&io->ring, cqes, want);

		if (!got)
			break;
		for (unsigned i = 0; i < got; i++) {
			struct pg_read *r = io_uring_cqe_get_data(cqes[i]);

			r->res = cqes[i]->res;
			out[n++] = r;
		}
		io_uring_cq_advance(&io->ring, got);
		io->in_flight -= got;
	}
	for (unsigned i = 0; i < n; i++)
		pg_io_complete_short(io, out[i]);
	return n;
}

int pg_io_read_all(struct pg_io *io, struct pg_read *r, unsigned n)
{
	unsigned got = 0;
	struct pg_read *tmp[64];

	if (!io->uring) {
		for (unsigned i = 0; i < n; i++)
			do_pread(io, &r[i]);
		return 0;
	}
	for (unsigned i = 0; i < n; i++) {
		int e = pg_io_queue(io, &r[i]);

		if (e < 0)
			return e;
	}
	if (io->queued) {
		int s;

		do
			s = io_uring_submit_and_wait(&io->ring, n);
		while (s == -EINTR);
		if (s < 0)
			return s;
		io->in_flight += (unsigned)s;
		io->queued = 0;
	}
	while (got < n) {
		struct io_uring_cqe *cqe;
		int w = io_uring_wait_cqe(&io->ring, &cqe);

		if (w == -EINTR)
			continue;
		if (w < 0)
			return w;
		got += pg_io_reap(io, tmp, ARRAY_SIZE(tmp));
	}
	return 0;
}
