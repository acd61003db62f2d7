/* ember-echo: the kit's default handler. Its response is its request: stdin to stdout. */
#include <errno.h>
#include <unistd.h>

int main(void)
{
	char buf[65536];

	for (;;) {
		ssize_t n = read(STDIN_FILENO, buf, sizeof(buf)), off = 0;

		if (n == 0)
			return 0;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		while (off < n) {
			ssize_t w = write(STDOUT_FILENO, buf + off, (size_t)(n - off));

			if (w < 0 && errno != EINTR)
				return 1;
			if (w > 0)
				off += w;
		}
	}
}
