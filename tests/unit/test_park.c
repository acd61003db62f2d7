/* Parking vCPUs (src/park.c): the event count behind the WAIT and PARK ucalls. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <time.h>

#include "testlib.h"

static struct vm *vm;
static struct vcpu v;

static void setup(void)
{
	vm = devt_vm(-1);
	memset(&v, 0, sizeof(v));
	v.vm = vm;
}

static void teardown(void)
{
	devt_vm_free(vm);
}

TestSuite(park, .init = setup, .fini = teardown, .timeout = 10);

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

Test(park, times_out_when_nothing_happens)
{
	uint64_t t0 = now_us();

	cr_assert_not(vm_park(vm, &v, 20000));
	cr_assert_geq(now_us() - t0, 20000);
}

Test(park, a_wake_before_the_park_returns_at_once)
{
	uint64_t t0;

	vm_wake(vm);
	t0 = now_us();
	cr_assert(vm_park(vm, &v, 5000000));
	cr_assert_lt(now_us() - t0, 1000000, "slept through an earlier wake");
	/* that wake is used up: the next park sleeps */
	cr_assert_not(vm_park(vm, &v, 10000));
}

static void *wake_later(void *arg)
{
	struct timespec ts = { 0, 50 * 1000 * 1000 };
	void (*fn)(void) = arg;

	nanosleep(&ts, NULL);
	fn();
	return NULL;
}

static void do_wake(void)
{
	vm_wake(vm);
}

static void do_cmd(void)
{
	cr_assert_eq(vm_cmd_push(vm, "verify"), 0);
}

static void do_stop(void)
{
	vm_request_stop(vm, VM_STOP_REQUEST, 0, "test");
}

static void parks_until(void (*fn)(void))
{
	pthread_t th;
	uint64_t t0 = now_us();

	cr_assert_eq(pthread_create(&th, NULL, wake_later, (void *)fn), 0);
	cr_assert(vm_park(vm, &v, 0), "no timeout was given, yet it returned false");
	cr_assert_geq(now_us() - t0, 40000, "returned before the wake");
	pthread_join(th, NULL);
}

Test(park, a_wake_from_another_thread_ends_the_park)
{
	parks_until(do_wake);
}

Test(park, a_queued_host_command_ends_the_park)
{
	char buf[64];
	uint32_t len;

	parks_until(do_cmd);
	cr_assert_eq(vm_cmd_pop(vm, buf, sizeof(buf), &len), EMBER_WAIT_CMD);
	cr_assert_str_eq(buf, "verify");
}

Test(park, a_vm_stop_ends_the_park)
{
	parks_until(do_stop);
}

Test(park, an_empty_queue_answers_none_or_again_without_waiting)
{
	char buf[64];
	uint32_t len;

	cr_assert_eq(vm_cmd_pop(vm, buf, sizeof(buf), &len), EMBER_WAIT_NONE);
	vm->cmd_may_arrive = true;
	cr_assert_eq(vm_cmd_pop(vm, buf, sizeof(buf), &len), EMBER_WAIT_AGAIN);
	cr_assert_eq(len, 0);
}
