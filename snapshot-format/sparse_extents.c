/*
 * Where a sparse file has data: SEEK_DATA / SEEK_HOLE. A raw memory image is written
 * sparse (FORMAT.md section 5), so compressing it need not read its holes: reading a
 * hole of a 1 TiB image costs minutes and fills the page cache with zero pages.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "snapfmt_int.h"

int snap_data_extents(int fd, uint64_t size, struct snap_extent **out, uint64_t *nr)
{
	struct snap_extent *ext = NULL;
	uint64_t n = 0, cap = 0, off = 0;

	*out = NULL;
	*nr = 0;
	while (off < size) {
		off_t data = lseek(fd, (off_t)off, SEEK_DATA), hole;

		if (data < 0 && errno == ENXIO)
			break; /* nothing but hole up to the end */
		if (data < 0)
			goto unknown;
		if ((uint64_t)data >= size)
			break;
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			goto unknown;
		if (n == cap) {
			struct snap_extent *p;

			/* a file cut into more pieces than this is simply read whole */
			if (cap >= SNAP_MAX_EXTENTS)
				goto unknown;
			cap = cap ? cap * 2 : 64;
			p = realloc(ext, cap * sizeof(*ext));
			if (!p)
				goto unknown;
			ext = p;
		}
		ext[n].off = (uint64_t)data;
		ext[n].len = ((uint64_t)hole < size ? (uint64_t)hole : size) - (uint64_t)data;
		n++;
		off = (uint64_t)hole;
	}
	*out = ext;
	*nr = n;
	return 0;
unknown:
	/* no SEEK_DATA here (or too many pieces): the caller treats the file as all data */
	free(ext);
	return -ENOTSUP;
}

bool snap_extents_overlap(const struct snap_extent *ext, uint64_t nr, uint64_t *cursor,
			  uint64_t off, uint64_t len)
{
	uint64_t i = *cursor;

	/* ranges are asked for in increasing order: skip extents that end before off */
	while (i < nr && ext[i].off + ext[i].len <= off)
		i++;
	*cursor = i;
	return i < nr && ext[i].off < off + len;
}
