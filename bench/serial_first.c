/*
 * serial_first: spawn -> a VMM's first console output, for any VMM (ember, QEMU) whose
 * guest serial port goes to its stdout.
 *
 *   serial_first [--expect TEXT] [--timeout SEC] -- CMD [ARG...]
 *
 * It takes CLOCK_MONOTONIC, spawns CMD with EMBER_T0_NS set to that instant (as
 * bench/harness.c does, so ember's own ember-timing lines share the origin), stdin from
 * /dev/null, stdout into a pipe it reads, stderr its own. On stderr it prints
 *   ember-timing serial-first-byte <us>   spawn -> the first byte read from CMD's stdout
 *   ember-timing serial-first-line <us>   spawn -> the end of the first line
 * which the harness turns into metrics. QEMU writes every byte the guest puts in the
 * UART at once; ember writes a line at a time, so its first byte arrives with the line.
 * --expect: the first line must start with TEXT, else it is an error (a restore that
 * printed something else did not resume where it should have). Then it stops CMD
 * (SIGTERM; SIGKILL after 5 s): a QEMU never exits by itself. --timeout (default 20 s)
 * bounds the wait. Exit 0, or 1 with the reason (and the output so far) on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* SIGTERM, then SIGKILL if it is still there after 5 s. */
static void stop_child(pid_t pid)
{
	uint64_t until = mono_ns() + 5000000000ull;
	struct timespec pause = { .tv_nsec = 1000000 };
	int status;

	kill(pid, SIGTERM);
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (mono_ns() > until) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return;
		}
		nanosleep(&pause, NULL);
	}
}

static int usage(void)
{
	fprintf(stderr, "usage: serial_first [--expect TEXT] [--timeout SEC] -- CMD [ARG...]\n");
	return 2;
}

int main(int argc, char **argv)
{
	posix_spawn_file_actions_t fa;
	const char *expect = NULL;
	unsigned timeout_s = 20;
	char slot[64], line[256];
	char **envp;
	size_t line_len = 0;
	uint64_t t0, t_byte = 0, t_line = 0, deadline;
	int pipefd[2], i, err, r = 1;
	pid_t pid;

	for (i = 1; i < argc && strcmp(argv[i], "--"); i++) {
		if (i + 1 >= argc)
			return usage();
		if (!strcmp(argv[i], "--expect"))
			expect = argv[++i];
		else if (!strcmp(argv[i], "--timeout"))
			timeout_s = (unsigned)atoi(argv[++i]);
		else
			return usage();
	}
	if (i + 1 >= argc || timeout_s == 0)
		return usage();
	argv += i + 1;
	envp = bench_envp(slot);
	if (!envp || pipe2(pipefd, O_CLOEXEC) < 0) {
		perror("serial_first");
		return 1;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
	t0 = mono_ns();
	snprintf(slot, sizeof(slot), "EMBER_T0_NS=%" PRIu64, t0);
	err = posix_spawn(&pid, argv[0], &fa, NULL, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	close(pipefd[1]);
	free(envp);
	if (err) {
		fprintf(stderr, "serial_first: spawning %s: %s\n", argv[0], strerror(err));
		return 1;
	}
	deadline = t0 + (uint64_t)timeout_s * 1000000000ull;
	while (!t_line) {
		struct pollfd pfd = { .fd = pipefd[0], .events = POLLIN };
		uint64_t now = mono_ns();
		char buf[256];
		ssize_t got;

		if (now >= deadline) {
			fprintf(stderr, "serial_first: no console line within %u s\n", timeout_s);
			break;
		}
		if (poll(&pfd, 1, (int)((deadline - now) / 1000000 + 1)) <= 0)
			continue;
		got = read(pipefd[0], buf, sizeof(buf));
		now = mono_ns();
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			fprintf(stderr, "serial_first: %s closed its stdout before a whole line\n",
				argv[0]);
			break;
		}
		if (!t_byte)
			t_byte = now;
		for (ssize_t k = 0; k < got && !t_line; k++) {
			if (buf[k] == '\n')
				t_line = now;
			else if (line_len < sizeof(line) - 1)
				line[line_len++] = buf[k];
		}
	}
	line[line_len] = 0;
	if (t_line && expect && strncmp(line, expect, strlen(expect)))
		fprintf(stderr, "serial_first: the first line is \"%s\", expected \"%s...\"\n", line,
			expect);
	else if (t_line) {
		fprintf(stderr, "ember-timing serial-first-byte %" PRIu64 "\n", (t_byte - t0) / 1000);
		fprintf(stderr, "ember-timing serial-first-line %" PRIu64 "\n", (t_line - t0) / 1000);
		r = 0;
	} else if (line_len)
		fprintf(stderr, "serial_first: output so far: \"%s\"\n", line);
	stop_child(pid);
	close(pipefd[0]);
	return r;
}
