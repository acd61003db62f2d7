/* The i8042 controller, driven through its dev_ops as the bus drives it (range 0x60+5). */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "testlib.h"
#include "dev/dev.h"

enum { DATA = 0, CMD = 4 };

#define STS_OBF 0x01
#define STS_IBF 0x02
#define STS_SYS 0x04
#define STS_A2  0x08

static unsigned resets;
static struct vm *vm;
static struct device *dev;

/* Counts the resets the controller requested of the VM so far. */
static void count_resets(void)
{
	if (devt_take_reset(vm))
		resets++;
}

static void setup(void)
{
	resets = 0;
	vm = devt_vm(-1);
	dev = devt_create(vm, "i8042");
}

static void teardown(void)
{
	dev_destroy(dev);
	devt_vm_free(vm);
}

TestSuite(i8042, .init = setup, .fini = teardown);

static uint8_t rd(unsigned off)
{
	uint8_t v = 0xaa;

	dev->ops->read(dev, off, &v, 1);
	return v;
}

static void wr(unsigned off, uint8_t v)
{
	dev->ops->write(dev, off, &v, 1);
	count_resets();
}

/* i8042_command() as Linux does it: command, parameter bytes, then poll for answers. */
static uint8_t command_answer(uint8_t cmd)
{
	cr_assert_eq(rd(CMD) & STS_IBF, 0);
	wr(CMD, cmd);
	cr_assert_eq(rd(CMD) & STS_OBF, STS_OBF, "command 0x%02x gave no answer", cmd);
	return rd(DATA);
}

Test(i8042, status_at_start_has_empty_buffers)
{
	uint8_t st = rd(CMD);

	cr_assert_eq(st & (STS_OBF | STS_IBF), 0);
	cr_assert_neq(st, 0xff, "0xff would read as 'no controller'");
}

Test(i8042, self_test_answers_0x55)
{
	cr_assert_eq(command_answer(0xaa), 0x55);
	cr_assert_eq(rd(CMD) & STS_OBF, 0, "answer consumed");
}

Test(i8042, self_test_sets_system_flag)
{
	wr(CMD, 0x60);
	wr(DATA, 0x00);
	cr_assert_eq(rd(CMD) & STS_SYS, 0);
	command_answer(0xaa);
	cr_assert_eq(rd(CMD) & STS_SYS, STS_SYS);
	cr_assert_eq(command_answer(0x20) & 0x04, 0x04);
}

Test(i8042, keyboard_and_aux_interface_tests_answer_zero)
{
	cr_assert_eq(command_answer(0xab), 0x00);
	cr_assert_eq(command_answer(0xa9), 0x00);
}

Test(i8042, command_byte_reads_back_stably)
{
	/* Linux reads the CTR until two reads agree */
	uint8_t a = command_answer(0x20), b = command_answer(0x20);

	cr_assert_eq(a, b);
	cr_assert_neq(a, 0xff);
}

Test(i8042, command_byte_write_then_read)
{
	wr(CMD, 0x60);
	wr(DATA, 0x65);
	cr_assert_eq(command_answer(0x20), 0x65);
	cr_assert_eq(rd(CMD) & STS_SYS, STS_SYS, "status mirrors the SYS bit");
	wr(CMD, 0x60);
	wr(DATA, 0x30);
	cr_assert_eq(command_answer(0x20), 0x30);
	cr_assert_eq(rd(CMD) & STS_SYS, 0);
}

Test(i8042, disable_and_enable_commands_toggle_command_byte_bits)
{
	wr(CMD, 0x60);
	wr(DATA, 0x00);
	wr(CMD, 0xad);
	cr_assert_eq(command_answer(0x20), 0x10);
	wr(CMD, 0xa7);
	cr_assert_eq(command_answer(0x20), 0x30);
	wr(CMD, 0xae);
	cr_assert_eq(command_answer(0x20), 0x20);
	wr(CMD, 0xa8);
	cr_assert_eq(command_answer(0x20), 0x00);
}

Test(i8042, status_command_bit_tracks_last_port_written)
{
	wr(CMD, 0x60);
	cr_assert_eq(rd(CMD) & STS_A2, STS_A2);
	wr(DATA, 0x45);
	cr_assert_eq(rd(CMD) & STS_A2, 0);
}

Test(i8042, data_byte_without_command_is_ignored)
{
	uint8_t ctr = command_answer(0x20);

	wr(DATA, 0xff); /* keyboard reset: no keyboard */
	cr_assert_eq(rd(CMD) & STS_OBF, 0);
	cr_assert_eq(command_answer(0x20), ctr);
	cr_assert_eq(resets, 0);
}

Test(i8042, reset_pulse_command_resets)
{
	wr(CMD, 0xfe);
	cr_assert_eq(resets, 1);
}

Test(i8042, any_pulse_including_bit_0_resets)
{
	wr(CMD, 0xf0); /* pulse all four output-port bits */
	wr(CMD, 0xfa);
	cr_assert_eq(resets, 2);
}

Test(i8042, pulse_without_bit_0_does_not_reset)
{
	wr(CMD, 0xff);
	wr(CMD, 0xfd);
	cr_assert_eq(resets, 0);
}

Test(i8042, output_port_write_with_bit_0_clear_resets)
{
	wr(CMD, 0xd1);
	cr_assert_eq(resets, 0, "waits for the data byte");
	wr(DATA, 0xfe);
	cr_assert_eq(resets, 1);
}

Test(i8042, output_port_write_with_bit_0_set_does_not_reset)
{
	wr(CMD, 0xd1);
	wr(DATA, 0xdf); /* A20 on, reset line high */
	cr_assert_eq(resets, 0);
}

Test(i8042, new_command_abandons_pending_data_command)
{
	uint8_t ctr = command_answer(0x20);

	wr(CMD, 0x60);
	wr(CMD, 0xae);
	wr(DATA, 0x00); /* no longer a command byte */
	cr_assert_eq(command_answer(0x20), ctr & ~0x10);
}

Test(i8042, reset_without_a_vm_is_harmless)
{
	struct device *d = devt_create(NULL, "i8042");
	uint8_t v = 0xfe;

	d->ops->write(d, CMD, &v, 1);
	dev_destroy(d);
}

Test(i8042, unanswered_results_queue_and_drain_in_order)
{
	wr(CMD, 0xaa);
	wr(CMD, 0xab);
	for (int i = 0; i < 4; i++)
		wr(CMD, 0xaa); /* queue holds 4: these overflow */
	cr_assert_eq(rd(DATA), 0x55);
	cr_assert_eq(rd(DATA), 0x00);
	cr_assert_eq(rd(DATA), 0x55);
	cr_assert_eq(rd(DATA), 0x55);
	cr_assert_eq(rd(CMD) & STS_OBF, 0);
}

Test(i8042, ports_between_data_and_command_are_not_decoded)
{
	struct i8042_state before, after;

	i8042_get_state(dev, &before);
	wr(1, 0xfe);
	wr(3, 0xaa);
	i8042_get_state(dev, &after);
	cr_assert_eq(rd(2), 0xff);
	cr_assert_eq(memcmp(&before, &after, sizeof(before)), 0);
	cr_assert_eq(resets, 0);
}

/* ---- state ------------------------------------------------------------------------ */

Test(i8042, state_round_trip_into_fresh_device_behaves_identically)
{
	struct i8042_state st, st2;
	struct errbuf eb = { .msg = "" };
	struct device *fresh;

	wr(CMD, 0x60);
	wr(DATA, 0x21);
	wr(CMD, 0xaa);
	wr(CMD, 0x20);
	wr(CMD, 0xd1);            /* pending: the next data byte is the output port */
	i8042_get_state(dev, &st);
	fresh = devt_create(vm, "i8042");
	cr_assert_eq(i8042_set_state(fresh, &st, &eb), 0, "%s", eb.msg);
	i8042_get_state(fresh, &st2);
	cr_assert_eq(memcmp(&st, &st2, sizeof(st)), 0);
	for (int i = 0; i < 3; i++) {
		uint8_t a = 0, b = 0;

		dev->ops->read(dev, CMD, &a, 1);
		fresh->ops->read(fresh, CMD, &b, 1);
		cr_assert_eq(a, b, "status differs at step %d", i);
		dev->ops->read(dev, DATA, &a, 1);
		fresh->ops->read(fresh, DATA, &b, 1);
		cr_assert_eq(a, b, "data differs at step %d", i);
	}
	fresh->ops->write(fresh, DATA, (const uint8_t[]){ 0x00 }, 1);
	count_resets();
	cr_assert_eq(resets, 1, "restored pending 0xd1 still resets");
	dev_destroy(fresh);
}

Test(i8042, initial_state_is_valid)
{
	struct i8042_state st;
	struct errbuf eb = { .msg = "" };

	i8042_get_state(dev, &st);
	cr_assert_eq(i8042_state_validate(&st, &eb), 0, "%s", eb.msg);
}

static void assert_rejected(const struct i8042_state *st, const char *needle)
{
	struct errbuf eb = { .msg = "" };
	struct i8042_state before, after;

	cr_assert_eq(i8042_state_validate(st, &eb), -EINVAL);
	cr_assert_not_null(strstr(eb.msg, needle), "message \"%s\" lacks \"%s\"", eb.msg, needle);
	i8042_get_state(dev, &before);
	cr_assert_eq(i8042_set_state(dev, st, &eb), -EINVAL);
	i8042_get_state(dev, &after);
	cr_assert_eq(memcmp(&before, &after, sizeof(before)), 0, "rejected state was applied");
}

static struct i8042_state valid_state(void)
{
	struct i8042_state st;

	wr(CMD, 0xaa);
	i8042_get_state(dev, &st);
	return st;
}

Test(i8042, validate_rejects_out_len_over_queue)
{
	struct i8042_state st = valid_state();

	st.out_len = 5;
	assert_rejected(&st, "out_len 5");
}

Test(i8042, validate_rejects_obf_without_data)
{
	struct i8042_state st = valid_state();

	st.out_len = 0;
	assert_rejected(&st, "output-full");
}

Test(i8042, validate_rejects_unknown_pending_command)
{
	struct i8042_state st = valid_state();

	st.pending_cmd = 0xaa;
	assert_rejected(&st, "pending_cmd 0xaa");
}

Test(i8042, validate_rejects_status_bits_never_set)
{
	struct i8042_state st = valid_state();

	st.status |= 0x40; /* timeout */
	assert_rejected(&st, "status");
}

Test(i8042, validate_rejects_reserved_command_byte_bit)
{
	struct i8042_state st = valid_state();

	st.cmd_byte |= 0x80;
	assert_rejected(&st, "cmd_byte");
}

Test(i8042, validate_rejects_system_flag_mismatch)
{
	struct i8042_state st = valid_state();

	st.status ^= STS_SYS;
	assert_rejected(&st, "system flag");
}
