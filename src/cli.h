/* ember front end: command-line parsing (cli.c), the commands (main.c), the control
 * socket client (ctl.c). */
#ifndef EMBER_CLI_H
#define EMBER_CLI_H

#include <stdio.h>

#include "vmm.h"

enum cli_cmd { CLI_HELP, CLI_VERSION, CLI_BOOT, CLI_RESTORE, CLI_CTL };

#define CLI_MAX_CTL_ARGS 8

struct cli {
	enum cli_cmd cmd;
	struct vm_config vm;
	bool dump_regs;
	const char *snapshot;            /* restore --snapshot */
	const char *snapshot_on_ready;   /* boot --snapshot-on-ready */
	bool exit_after_snapshot;
	const char *api_sock;
	const char *ctl_args[CLI_MAX_CTL_ARGS]; /* ctl: verb and its arguments */
	unsigned nr_ctl_args;
	bool ctl_diff;                   /* ctl snapshot --diff */
	bool compress;                   /* boot --compress, ctl snapshot --compress */
};

/* Fills c from argv; on a usage error returns -EINVAL with the message in eb. */
int cli_parse(int argc, char **argv, struct cli *c, struct errbuf *eb);
void cli_usage(FILE *f);
/* ember ctl: returns the process exit status. */
int ctl_run(const struct cli *c);

#endif
