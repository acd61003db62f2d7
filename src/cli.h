/* ember front end: command-line parsing (cli.c) and the commands (main.c). */
#ifndef EMBER_CLI_H
#define EMBER_CLI_H

#include <stdio.h>

#include "vmm.h"

enum cli_cmd { CLI_HELP, CLI_VERSION, CLI_BOOT };

struct cli {
	enum cli_cmd cmd;
	struct vm_config vm;
	bool dump_regs;
};

/* Fills c from argv; on a usage error returns -EINVAL with the message in eb. */
int cli_parse(int argc, char **argv, struct cli *c, struct errbuf *eb);
void cli_usage(FILE *f);

#endif
