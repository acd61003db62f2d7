/* finit_module for the kit's modules, in the order the build wrote them. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "modules.h"

int modules_load(const char *list, const char *mmio_params)
{
	char line[512];
	FILE *f = fopen(list, "re");
	int failed = 0;

	if (!f) {
		fprintf(stderr, "ember-agent: no module list %s: %s (a kernel with everything "
			"built in needs none)\n", list, strerror(errno));
		return 0;
	}
	while (fgets(line, sizeof(line), f)) {
		int fd;

		const char *base, *params = "";

		line[strcspn(line, "\n")] = 0;
		if (!line[0] || line[0] == '#')
			continue;
		base = strrchr(line, '/') ? strrchr(line, '/') + 1 : line;
		if (!strcmp(base, "ember_mmio.ko")) {
			if (!mmio_params)
				continue; /* no devices to register */
			params = mmio_params;
		}
		fd = open(line, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "ember-agent: module %s: %s\n", line, strerror(errno));
			failed++;
			continue;
		}
		if (syscall(SYS_finit_module, fd, params, 0) && errno != EEXIST) {
			fprintf(stderr, "ember-agent: finit_module %s: %s\n", line,
				strerror(errno));
			failed++;
		}
		close(fd);
	}
	fclose(f);
	return failed;
}
