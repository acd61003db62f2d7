/*
 * The Linux guest agent's protocol code (guest-agent/proto.c, handler.c) on the host:
 * the agent serves one end of a Unix socket pair from a thread, and ember's own
 * invocation client (src/invoke.c) or raw bytes talk to it from the other end. Handlers
 * are real executables (/bin/cat, /bin/sh scripts), run as the agent runs them in a
 * guest.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli.h"
#include "../../guest-agent/config.h"
#include "../../guest-agent/proto.h"

#define DEADLINE_NS (10ull * 1000000000ull)

struct server {
	int fd;
	struct agent_config cfg;
	struct agent_conn_stats st;
	int ret;
	unsigned before_runs;
	pthread_t thread;
};

static void count_before_run(void *ctx)
{
	((struct server *)ctx)->before_runs++;
}

static void *serve(void *arg)
{
	struct server *s = arg;

	s->ret = agent_serve_conn(s->fd, &s->cfg, &s->st);
	close(s->fd);
	return NULL;
}

static char *cat_argv[] = { "/bin/cat", NULL };

static void init(void)
{
	signal(SIGPIPE, SIG_IGN); /* as the agent does */
}

TestSuite(agent, .init = init, .timeout = 30);

/* Starts the agent on one end; returns the client's end (non-blocking, as invoke_call
 * wants it). */
static int start(struct server *s, char *const *argv, uint32_t max_payload,
		 unsigned timeout_ms, size_t max_output)
{
	int sv[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	memset(s, 0, sizeof(*s));
	s->fd = sv[0];
	s->cfg = (struct agent_config){ .handler_argv = argv, .max_payload = max_payload,
					.limits = { .timeout_ms = timeout_ms,
						    .max_output = max_output },
					.before_run = count_before_run, .ctx = s };
	cr_assert_eq(pthread_create(&s->thread, NULL, serve, s), 0);
	cr_assert_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	return sv[1];
}

/* Closes the client's end and waits for the agent to finish the connection. */
static void stop(struct server *s, int c)
{
	if (c >= 0)
		close(c);
	pthread_join(s->thread, NULL);
}

static void call(int c, uint64_t id, const void *p, uint32_t len, struct invoke_result *res)
{
	struct errbuf eb = { { 0 } };
	int r = invoke_call(c, id, p, len, invoke_clock_ns() + DEADLINE_NS, res, &eb);

	cr_assert_eq(r, 0, "invoke_call: %d %s", r, eb.msg);
}

/* Blocking read of what the agent sends until it closes: the byte count. */
static size_t read_to_eof(int c, uint8_t *buf, size_t cap)
{
	size_t got = 0;

	cr_assert_eq(fcntl(c, F_SETFL, 0), 0);
	for (;;) {
		ssize_t n = read(c, buf + got, cap - got);

		if (n <= 0)
			break;
		got += (size_t)n;
		if (got == cap)
			break;
	}
	return got;
}

static char *sh_argv(char **argv, const char *script)
{
	argv[0] = "/bin/sh";
	argv[1] = "-c";
	argv[2] = (char *)script;
	argv[3] = NULL;
	return argv[0];
}

Test(agent, good_request_gets_the_handlers_stdout)
{
	struct server s;
	struct invoke_result res;
	int c = start(&s, cat_argv, 1 << 20, 5000, 1 << 20);

	call(c, 0x1122334455667788ull, "hello", 5, &res);
	cr_assert_eq(res.status, INVOKE_OK);
	cr_assert_eq(res.payload_len, 5);
	cr_assert_eq(memcmp(res.payload, "hello", 5), 0);
	invoke_result_free(&res);
	stop(&s, c);
	cr_assert_eq(s.ret, 0);
	cr_assert_eq(s.st.ok, 1);
	cr_assert_eq(s.before_runs, 1, "the re-seed hook runs before each request");
}

Test(agent, requests_on_one_connection_are_served_in_order)
{
	struct server s;
	struct invoke_result res;
	int c = start(&s, cat_argv, 1 << 20, 5000, 1 << 20);
	char msg[32];

	for (unsigned i = 0; i < 5; i++) {
		int n = snprintf(msg, sizeof(msg), "request %u", i);

		call(c, i, msg, (uint32_t)n, &res);
		cr_assert_eq(res.status, INVOKE_OK);
		cr_assert_eq(res.payload_len, (uint32_t)n);
		cr_assert_eq(memcmp(res.payload, msg, (size_t)n), 0);
		invoke_result_free(&res);
	}
	stop(&s, c);
	cr_assert_eq(s.st.requests, 5);
}

Test(agent, empty_payload_runs_the_handler_with_empty_stdin)
{
	struct server s;
	struct invoke_result res;
	char *argv[4];
	int c;

	sh_argv(argv, "wc -c");
	c = start(&s, argv, 1 << 20, 5000, 1 << 20);
	call(c, 1, "", 0, &res);
	cr_assert_eq(res.status, INVOKE_OK);
	cr_assert_eq(strtoul((char *)res.payload, NULL, 10), 0, "%s", res.payload);
	invoke_result_free(&res);
	stop(&s, c);
}

Test(agent, payload_of_four_mib_round_trips_through_the_handler)
{
	struct server s;
	struct invoke_result res;
	size_t n = 4u << 20;
	uint8_t *p = malloc(n);
	int c = start(&s, cat_argv, 16u << 20, 10000, 16u << 20);

	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 7 + (i >> 12));
	call(c, 2, p, (uint32_t)n, &res);
	cr_assert_eq(res.status, INVOKE_OK);
	cr_assert_eq(res.payload_len, n);
	cr_assert_eq(memcmp(res.payload, p, n), 0);
	invoke_result_free(&res);
	free(p);
	stop(&s, c);
}

Test(agent, handler_that_ignores_a_large_stdin_still_answers)
{
	struct server s;
	struct invoke_result res;
	size_t n = 1u << 20;
	uint8_t *p = calloc(1, n);
	char *argv[4];
	int c;

	sh_argv(argv, "echo ignored");
	c = start(&s, argv, 16u << 20, 5000, 1 << 20);
	call(c, 3, p, (uint32_t)n, &res);
	cr_assert_eq(res.status, INVOKE_OK);
	cr_assert_str_eq((char *)res.payload, "ignored\n");
	invoke_result_free(&res);
	free(p);
	stop(&s, c);
}

Test(agent, oversized_payload_gets_too_large_and_the_connection_stays_open)
{
	struct server s;
	struct invoke_result res;
	uint8_t big[100] = { 0 };
	int c = start(&s, cat_argv, 64, 5000, 1 << 20);

	call(c, 4, big, sizeof(big), &res);
	cr_assert_eq(res.status, INVOKE_TOO_LARGE);
	cr_assert(strstr((char *)res.payload, "exceeds max_payload 64"), "%s", res.payload);
	invoke_result_free(&res);
	call(c, 5, "ok", 2, &res);
	cr_assert_eq(res.status, INVOKE_OK, "the stream stays framed after a discarded payload");
	cr_assert_eq(memcmp(res.payload, "ok", 2), 0);
	invoke_result_free(&res);
	stop(&s, c);
	cr_assert_eq(s.st.rejected, 1);
	cr_assert_eq(s.before_runs, 1, "a rejected request runs nothing");
}

Test(agent, payload_over_the_protocols_16_mib_is_answered_then_closed)
{
	struct server s;
	uint8_t h[INVOKE_HDR_SIZE], buf[2048];
	uint16_t st;
	uint32_t len;
	struct errbuf eb;
	int c = start(&s, cat_argv, 16u << 20, 5000, 1 << 20);
	size_t got;

	invoke_put_request_header(h, 6, (16u << 20) + 1);
	cr_assert_eq(write(c, h, sizeof(h)), (ssize_t)sizeof(h));
	got = read_to_eof(c, buf, sizeof(buf));
	cr_assert_geq(got, INVOKE_HDR_SIZE);
	cr_assert_eq(invoke_check_response_header(buf, 6, INVOKE_UNSUPPORTED_VERSION, &st, &len,
						  &eb), 0, "%s", eb.msg);
	cr_assert_eq(st, INVOKE_TOO_LARGE);
	cr_assert_eq(got, INVOKE_HDR_SIZE + len, "then the agent closes");
	stop(&s, c);
}

Test(agent, truncated_header_gets_no_response)
{
	struct server s;
	uint8_t h[INVOKE_HDR_SIZE], buf[64];
	int c = start(&s, cat_argv, 1 << 20, 5000, 1 << 20);

	invoke_put_request_header(h, 7, 5);
	cr_assert_eq(write(c, h, 10), 10);
	cr_assert_eq(shutdown(c, SHUT_WR), 0);
	cr_assert_eq(read_to_eof(c, buf, sizeof(buf)), 0, "no response to half a header");
	stop(&s, c);
	cr_assert_eq(s.ret, 0);
	cr_assert_eq(s.st.requests, 0);
	cr_assert_eq(s.before_runs, 0);
}

Test(agent, truncated_payload_is_abandoned_without_running_the_handler)
{
	struct server s;
	uint8_t h[INVOKE_HDR_SIZE], buf[64];
	int c = start(&s, cat_argv, 1 << 20, 5000, 1 << 20);

	invoke_put_request_header(h, 8, 100);
	cr_assert_eq(write(c, h, sizeof(h)), (ssize_t)sizeof(h));
	cr_assert_eq(write(c, "only this", 9), 9);
	cr_assert_eq(shutdown(c, SHUT_WR), 0);
	cr_assert_eq(read_to_eof(c, buf, sizeof(buf)), 0);
	stop(&s, c);
	cr_assert_eq(s.st.requests, 0);
	cr_assert_eq(s.before_runs, 0, "the handler never ran");
}

/* Sends a raw header, expects `status` and the connection closed after it. */
static void expect_rejected_and_closed(const uint8_t *h, uint16_t status, const char *msg_part)
{
	struct server s;
	uint8_t buf[2048];
	uint16_t st;
	uint32_t len;
	struct errbuf eb;
	int c = start(&s, cat_argv, 1 << 20, 5000, 1 << 20);
	size_t got;

	cr_assert_eq(write(c, h, INVOKE_HDR_SIZE), INVOKE_HDR_SIZE);
	got = read_to_eof(c, buf, sizeof(buf) - 1);
	cr_assert_geq(got, INVOKE_HDR_SIZE);
	cr_assert_eq(invoke_check_response_header(buf, 9, INVOKE_UNSUPPORTED_VERSION, &st, &len,
						  &eb), 0, "%s", eb.msg);
	cr_assert_eq(st, status);
	cr_assert_eq(got, INVOKE_HDR_SIZE + len, "the agent closes after the answer");
	buf[got] = 0;
	cr_assert(strstr((char *)buf + INVOKE_HDR_SIZE, msg_part), "%s", buf + INVOKE_HDR_SIZE);
	stop(&s, c);
	cr_assert_eq(s.before_runs, 0);
}

Test(agent, bad_magic_is_bad_request_and_closes)
{
	uint8_t h[INVOKE_HDR_SIZE];

	invoke_put_request_header(h, 9, 0);
	memcpy(h, "EMBR", 4);
	expect_rejected_and_closed(h, INVOKE_BAD_REQUEST, "bad magic");
}

Test(agent, other_version_is_unsupported_and_closes)
{
	uint8_t h[INVOKE_HDR_SIZE];

	invoke_put_request_header(h, 9, 0);
	h[4] = 2;
	expect_rejected_and_closed(h, INVOKE_UNSUPPORTED_VERSION, "version 2");
}

Test(agent, nonzero_flags_or_reserved_is_bad_request)
{
	uint8_t h[INVOKE_HDR_SIZE];

	invoke_put_request_header(h, 9, 0);
	h[20] = 1;
	expect_rejected_and_closed(h, INVOKE_BAD_REQUEST, "reserved (0x1)");
}

Test(agent, handler_nonzero_exit_is_function_error_and_the_connection_stays_open)
{
	struct server s;
	struct invoke_result res;
	char *argv[4];
	int c;

	sh_argv(argv, "cat >/dev/null; exit 3");
	c = start(&s, argv, 1 << 20, 5000, 1 << 20);
	call(c, 10, "x", 1, &res);
	cr_assert_eq(res.status, INVOKE_FUNCTION_ERROR);
	cr_assert(strstr((char *)res.payload, "exited with status 3"), "%s", res.payload);
	invoke_result_free(&res);
	call(c, 11, "y", 1, &res);
	cr_assert_eq(res.status, INVOKE_FUNCTION_ERROR, "a second request is still served");
	invoke_result_free(&res);
	stop(&s, c);
	cr_assert_eq(s.st.errors, 2);
}

Test(agent, missing_handler_executable_is_function_error)
{
	struct server s;
	struct invoke_result res;
	char *argv[] = { "/nonexistent/handler", NULL };
	int c = start(&s, argv, 1 << 20, 5000, 1 << 20);

	call(c, 12, "x", 1, &res);
	cr_assert_eq(res.status, INVOKE_FUNCTION_ERROR);
	cr_assert(strstr((char *)res.payload, "exited with status 127"), "%s", res.payload);
	invoke_result_free(&res);
	stop(&s, c);
}

/* State of pid in /proc: its state letter, or 0 when it is gone. */
static char proc_state(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	p = fgets(buf, sizeof(buf), f);
	fclose(f);
	if (!p || !(p = strrchr(buf, ')')))
		return 0;
	return p[2];
}

Test(agent, handler_timeout_kills_its_whole_process_group)
{
	struct server s;
	struct invoke_result res;
	char tmpl[] = "/tmp/ember-agent-test.XXXXXX", script[512], *argv[4];
	int fd = mkstemp(tmpl), c;
	uint64_t t0;
	pid_t bg = 0;
	FILE *f;

	cr_assert_geq(fd, 0);
	close(fd);
	/* a child in the background, its pid written down, then the handler hangs */
	snprintf(script, sizeof(script), "sleep 60 & echo $! > %s; wait", tmpl);
	sh_argv(argv, script);
	c = start(&s, argv, 1 << 20, 300, 1 << 20);
	t0 = invoke_clock_ns();
	call(c, 13, "x", 1, &res);
	cr_assert_eq(res.status, INVOKE_FUNCTION_ERROR);
	cr_assert(strstr((char *)res.payload, "timed out after 300 ms"), "%s", res.payload);
	cr_assert_lt(invoke_clock_ns() - t0, 5000000000ull, "the deadline is kept");
	invoke_result_free(&res);
	f = fopen(tmpl, "r");
	cr_assert_not_null(f);
	cr_assert_eq(fscanf(f, "%d", &bg), 1, "the handler wrote its child's pid");
	fclose(f);
	unlink(tmpl);
	/* killed with the group: gone, or a zombie waiting for its new parent */
	for (int i = 0; i < 100 && proc_state(bg) && proc_state(bg) != 'Z'; i++)
		usleep(10000);
	cr_assert(!proc_state(bg) || proc_state(bg) == 'Z',
		  "the handler's background child %d survived (state %c)", bg, proc_state(bg));
	stop(&s, c);
}

Test(agent, handler_output_over_the_limit_is_killed_and_reported)
{
	struct server s;
	struct invoke_result res;
	char *argv[4];
	uint64_t t0;
	int c;

	sh_argv(argv, "exec yes");
	c = start(&s, argv, 1 << 20, 10000, 1000);
	t0 = invoke_clock_ns();
	call(c, 14, "x", 1, &res);
	cr_assert_eq(res.status, INVOKE_FUNCTION_ERROR);
	cr_assert(strstr((char *)res.payload, "more than max_output 1000 bytes"), "%s",
		  res.payload);
	cr_assert_lt(invoke_clock_ns() - t0, 5000000000ull, "killed at the limit, not the timeout");
	invoke_result_free(&res);
	stop(&s, c);
}

Test(agent, handler_output_exactly_at_the_limit_is_ok)
{
	struct server s;
	struct invoke_result res;
	char *argv[4];
	int c;

	sh_argv(argv, "head -c 100000 /dev/zero");
	c = start(&s, argv, 1 << 20, 10000, 100000);
	call(c, 15, "", 0, &res);
	cr_assert_eq(res.status, INVOKE_OK);
	cr_assert_eq(res.payload_len, 100000);
	invoke_result_free(&res);
	stop(&s, c);
}

/* ---- the agent's kernel command-line settings (guest-agent/config.c) ---------------- */

Test(agent_settings, ember_words_set_the_values_and_others_are_ignored)
{
	struct agent_settings s;
	char err[256] = "";

	agent_settings_default(&s);
	cr_assert_eq(agent_settings_parse(&s, "console=ttyS0 ember.port=6000 quiet "
					  "ember.handler=/bin/ember-probe ember.timeout_ms=250 "
					  "ember.max_payload=16777216 ember.max_output=0\n",
					  err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(s.port, 6000);
	cr_assert_str_eq(s.handler, "/bin/ember-probe");
	cr_assert_eq(s.timeout_ms, 250);
	cr_assert_eq(s.max_payload, 16u << 20);
	cr_assert_eq(s.max_output, 0);
}

Test(agent_settings, defaults_without_ember_words)
{
	struct agent_settings s;
	char err[256] = "";

	agent_settings_default(&s);
	cr_assert_eq(agent_settings_parse(&s, "console=ttyS0 panic=-1", err, sizeof(err)), 0);
	cr_assert_eq(s.port, AGENT_DEFAULT_PORT);
	cr_assert_str_eq(s.handler, AGENT_DEFAULT_HANDLER);
	cr_assert_eq(s.max_payload, AGENT_DEFAULT_MAX_PAYLOAD);
}

static void expect_refused(const char *cmdline, const char *word)
{
	struct agent_settings s;
	char err[256] = "";

	agent_settings_default(&s);
	cr_assert_eq(agent_settings_parse(&s, cmdline, err, sizeof(err)), -EINVAL, "%s", cmdline);
	cr_assert(strstr(err, word), "the message names the word '%s': %s", word, err);
}

Test(agent_settings, bad_values_are_refused_naming_the_word)
{
	expect_refused("ember.port=abc", "ember.port=abc");
	expect_refused("ember.port=4294967295", "ember.port=4294967295");
	expect_refused("ember.max_payload=16777217", "ember.max_payload=16777217");
	expect_refused("ember.max_output=-1", "ember.max_output=-1");
	expect_refused("ember.timeout_ms=0", "ember.timeout_ms=0");
	expect_refused("ember.handler=relative/path", "ember.handler=relative/path");
	expect_refused("ember.colour=blue", "unknown key");
	expect_refused("ember.port", "expected ember.KEY=VALUE");
}

/* ---- ember_mmio.ko's parameters from the command line (agent_mmio_params) ------------ */

Test(agent_mmio, every_virtio_mmio_device_word_in_order)
{
	char out[256];

	cr_assert_eq(agent_mmio_params("console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 "
				       "ember.port=5000 virtio_mmio.device=4K@0xd0001000:6\n",
				       out, sizeof(out)), 0);
	cr_assert_str_eq(out, "devices=4K@0xd0000000:5,4K@0xd0001000:6");
}

Test(agent_mmio, no_device_word_is_enoent)
{
	char out[256];

	cr_assert_eq(agent_mmio_params("console=ttyS0 xvirtio_mmio.device=1@2:3", out,
				       sizeof(out)), -ENOENT);
}

Test(agent_mmio, a_value_with_a_comma_is_refused)
{
	char out[256];

	cr_assert_eq(agent_mmio_params("virtio_mmio.device=4K@0xd0000000:5,4K@0x1:6", out,
				       sizeof(out)), -EINVAL);
}

Test(agent_mmio, too_small_a_buffer_is_enospc_not_truncation)
{
	char out[24];

	cr_assert_eq(agent_mmio_params("virtio_mmio.device=4K@0xd0000000:5 "
				       "virtio_mmio.device=4K@0xd0001000:6", out, sizeof(out)),
		     -ENOSPC);
}
