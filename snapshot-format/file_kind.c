/* The kind of a file that is not the regular file ember wanted, for error messages. */
#include <sys/stat.h>

#include "snapfmt.h"

const char *snap_file_kind(unsigned mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return "regular file";
	case S_IFDIR: return "directory";
	case S_IFIFO: return "fifo";
	case S_IFSOCK: return "socket";
	case S_IFCHR: return "character device";
	case S_IFBLK: return "block device";
	case S_IFLNK: return "symbolic link";
	default: return "unknown kind";
	}
}
