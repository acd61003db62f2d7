/*
 * Running a handler: any executable, the request payload on its stdin, the response
 * on its stdout, within a time and an output-size limit. It runs in a process group of
 * its own, killed as a whole when it overruns, so that nothing it started outlives it.
 */
#ifndef EMBER_AGENT_HANDLER_H
#define EMBER_AGENT_HANDLER_H

#include <stddef.h>
#include <stdint.h>

struct handler_limits {
	unsigned timeout_ms;   /* from fork to exit; 0: none */
	size_t max_output;     /* bytes on stdout beyond this kill the handler */
};

enum handler_outcome {
	HANDLER_EXITED,     /* exit_code holds its status (0: success) */
	HANDLER_SIGNALED,   /* killed by signal `signal` (not by us) */
	HANDLER_TIMED_OUT,  /* we killed its process group at the deadline */
	HANDLER_TOO_MUCH,   /* we killed it: stdout exceeded max_output */
};

struct handler_result {
	enum handler_outcome outcome;
	int exit_code;
	int signal;
	uint8_t *out;        /* malloc'd stdout (even when empty), the caller frees */
	size_t out_len;
	unsigned elapsed_ms;
};

/*
 * Runs argv[0] (a path; PATH is not searched) with in[0..in_len) on stdin. A handler
 * that exits without reading all of its stdin is no error. 0 with *r filled, or -errno
 * when it could not be run at all (pipes, fork). An exec failure shows as exit 127.
 */
int handler_run(char *const argv[], const uint8_t *in, size_t in_len,
		const struct handler_limits *lim, struct handler_result *r);

#endif
