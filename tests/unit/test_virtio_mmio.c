/*
 * The virtio-mmio transport (src/dev/virtio_mmio.c) through real devices on a VM shell
 * without KVM: virtio-rng (src/dev/virtio_rng.c) for most of it, virtio-vsock where it
 * has something rng lacks (configuration space, three queues, a CID in its section).
 * The test plays the driver through the device's MMIO handlers with rings laid out by
 * the vq driver (tests/lib/vq_driver.c); the transport takes the exit path for
 * notifications and raises interrupts through a recorder. Last, a table of hostile
 * drivers, each of which must end in NEEDS_RESET or an ignored access, never in a
 * crash or a write outside the device-writable buffers it offered.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>

#include "dev/dev.h"
#include "dev/virtio.h"
#include "testlib.h"

#define RAM  (16 * MiB)
#define RING 0x10000ull    /* queue 0's rings (vqd_init_at); queue k at RING + k * 0x10000 */
#define DATA 0x100000ull   /* buffers */
#define TABLE 0x80000ull   /* indirect tables */
#define QSIZE 16
#define RNG_MAX_REQ 65536u
#define VSOCK_CID 3

#define ST_ACK  VIRTIO_CONFIG_S_ACKNOWLEDGE
#define ST_DRV  VIRTIO_CONFIG_S_DRIVER
#define ST_FOK  VIRTIO_CONFIG_S_FEATURES_OK
#define ST_DOK  VIRTIO_CONFIG_S_DRIVER_OK
#define ST_NR   VIRTIO_CONFIG_S_NEEDS_RESET
#define ST_LIVE (ST_ACK | ST_DRV | ST_FOK | ST_DOK)

#define F_VERSION_1 (1ull << VIRTIO_F_VERSION_1)
#define F_INDIRECT  (1ull << VIRTIO_RING_F_INDIRECT_DESC)

static struct vm *vm, *vm2;
static struct device *d, *d2;
static struct devt_irq irq;
static struct vqd q;
static char tmp[PATH_MAX];

static struct virtio_dev *vdev(struct device *dev)
{
	/* struct rng and struct vsock both start with their transport */
	return dev->priv;
}

static void setup(void)
{
	struct errbuf eb = { "" };

	log_set_level(LOG_ERROR); /* the hostile drivers' warnings are expected */
	vm = devt_vm(-1);
	devt_vm_ram(vm, RAM);
	d = devt_create(vm, "virtio-rng");
	devt_irq_record(d, &irq);
	cr_assert_eq(d->ops->start(d, &eb), 0, "start: %s", eb.msg);
}

static void teardown(void)
{
	dev_destroy(d2);
	dev_destroy(d);
	d = d2 = NULL;
	if (vm2)
		devt_vm_free(vm2);
	devt_vm_free(vm);
	vm = vm2 = NULL;
	if (tmp[0])
		ember_test_rmtree(tmp);
	tmp[0] = 0;
}

TestSuite(virtio_mmio, .init = setup, .fini = teardown);

static uint32_t status(struct device *dev)
{
	return devt_read32(dev, VIRTIO_MMIO_STATUS);
}

static bool needs_reset(struct device *dev)
{
	return status(dev) & ST_NR;
}

/* The main loop until nothing is pending: rng's work is done after this. */
static void rng_settle(void)
{
	for (int i = 0; i < 100; i++)
		if (vm_loop_once(vm, 0) == 0)
			return;
	cr_assert_fail("the main loop never went idle");
}

static void kick(struct device *dev, unsigned queue)
{
	devt_write32(dev, VIRTIO_MMIO_QUEUE_NOTIFY, queue);
}

/* rng with features negotiated, queue 0 at RING, DRIVER_OK. */
static void rng_up(uint64_t features)
{
	devt_virtio_features(d, features);
	vqd_init_at(&q, &vm->mem, QSIZE, RING);
	devt_virtio_queue(d, 0, &q);
	devt_virtio_driver_ok(d);
}

/* The next used entry of q, running the main loop for up to a second. */
static bool rng_wait_used(uint16_t *head, uint32_t *len)
{
	for (int i = 0; i < 100; i++) {
		if (vqd_get_used(&q, head, len))
			return true;
		vm_loop_once(vm, 10);
	}
	return vqd_get_used(&q, head, len);
}

/* Published, kicked, served: the used length. */
static uint32_t rng_request(const struct vqd_buf *bufs, unsigned n)
{
	uint16_t head, got;
	uint32_t len;

	head = vqd_add(&q, bufs, n);
	kick(d, 0);
	cr_assert(rng_wait_used(&got, &len), "virtio-rng did not serve the request");
	cr_assert_eq(got, head);
	return len;
}

/* How many of [gpa, gpa+len) differ from pattern seed (filled by vqd_fill_pattern). */
static uint64_t pattern_diffs(uint64_t gpa, uint64_t len, uint8_t seed)
{
	const uint8_t *p = vqd_ptr(&vm->mem, gpa, len);
	uint64_t n = 0;

	for (uint64_t i = 0; i < len; i++)
		n += p[i] != vqd_pattern_byte(seed, i);
	return n;
}

/* A vsock device (CID 3, a hybrid socket in a temp dir) on a VM of its own. */
static struct device *vsock_on(struct vm *v)
{
	static char uds[4][PATH_MAX + 16];
	static unsigned n;
	char *path = uds[n++ % 4];

	if (!tmp[0])
		ember_test_tmpdir(tmp, sizeof(tmp));
	snprintf(path, sizeof(uds[0]), "%s/v%u.sock", tmp, n);
	v->cfg.vsock_cid = VSOCK_CID;
	v->cfg.vsock_uds = path;
	return devt_create(v, "virtio-vsock");
}

static void vsock_vm2(void)
{
	vm2 = devt_vm(-1);
	devt_vm_ram(vm2, RAM);
	d2 = vsock_on(vm2);
}

/* ---- identity and features ----------------------------------------------------------- */

Test(virtio_mmio, rng_identifies_as_a_version_2_virtio_mmio_entropy_device)
{
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_MAGIC_VALUE), 0x74726976, "\"virt\"");
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_VERSION), 2);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_RNG);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_VENDOR_ID), 0x52424d45, "\"EMBR\"");
}

Test(virtio_mmio, vsock_identifies_as_device_19_and_reads_its_cid_from_configuration)
{
	uint64_t cid;

	vsock_vm2();
	cr_assert_eq(devt_read32(d2, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_VSOCK);
	devt_read(d2, VIRTIO_MMIO_CONFIG, &cid, 8);
	cr_assert_eq(le64toh(cid), VSOCK_CID);
}

Test(virtio_mmio, offers_version_1_and_indirect_descriptors_and_nothing_past_bit_63)
{
	devt_write32(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_DEVICE_FEATURES), (uint32_t)F_INDIRECT);
	devt_write32(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_DEVICE_FEATURES), (uint32_t)(F_VERSION_1 >> 32));
	devt_write32(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_DEVICE_FEATURES), 0);
}

static void write_features(struct device *dev, uint32_t sel, uint32_t v)
{
	devt_write32(dev, VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
	devt_write32(dev, VIRTIO_MMIO_DRIVER_FEATURES, v);
}

Test(virtio_mmio, features_ok_sticks_with_version_1_and_sets_indirect_for_every_queue)
{
	devt_virtio_features(d, F_INDIRECT);
	cr_assert(vdev(d)->vq[0].indirect);
	cr_assert_eq(vdev(d)->t.driver_features, F_VERSION_1 | F_INDIRECT);
}

Test(virtio_mmio, features_ok_does_not_stick_without_version_1)
{
	devt_write32(d, VIRTIO_MMIO_STATUS, ST_ACK | ST_DRV);
	write_features(d, 0, (uint32_t)F_INDIRECT);
	devt_write32(d, VIRTIO_MMIO_STATUS, ST_ACK | ST_DRV | ST_FOK);
	cr_assert_eq(status(d), ST_ACK | ST_DRV, "refused, not NEEDS_RESET");
	cr_assert_not(vdev(d)->vq[0].indirect);
}

Test(virtio_mmio, features_ok_does_not_stick_with_a_feature_never_offered)
{
	devt_write32(d, VIRTIO_MMIO_STATUS, ST_ACK | ST_DRV);
	write_features(d, 0, 1u << 5);
	write_features(d, 1, (uint32_t)(F_VERSION_1 >> 32));
	devt_write32(d, VIRTIO_MMIO_STATUS, ST_ACK | ST_DRV | ST_FOK);
	cr_assert_eq(status(d), ST_ACK | ST_DRV);
}

Test(virtio_mmio, features_ok_does_not_stick_with_a_feature_past_bit_63)
{
	devt_write32(d, VIRTIO_MMIO_STATUS, ST_ACK | ST_DRV);
	write_features(d, 1, (uint32_t)(F_VERSION_1 >> 32));
	write_features(d, 2, 1);
	devt_write32(d, VIRTIO_MMIO_STATUS, ST_ACK | ST_DRV | ST_FOK);
	cr_assert_eq(status(d), ST_ACK | ST_DRV);
}

Test(virtio_mmio, driver_features_written_before_the_driver_bit_need_a_reset)
{
	devt_write32(d, VIRTIO_MMIO_STATUS, ST_ACK);
	write_features(d, 1, (uint32_t)(F_VERSION_1 >> 32));
	cr_assert_eq(status(d), ST_ACK | ST_NR);
	cr_assert(strstr(vdev(d)->last_error, "outside negotiation"), "%s", vdev(d)->last_error);
}

Test(virtio_mmio, driver_features_written_after_features_ok_need_a_reset)
{
	devt_virtio_features(d, 0);
	write_features(d, 0, (uint32_t)F_INDIRECT);
	cr_assert(needs_reset(d));
	cr_assert_eq(vdev(d)->t.driver_features, F_VERSION_1, "the late write was not taken");
}

/* ---- the status state machine ------------------------------------------------------- */

Test(virtio_mmio, writing_0_to_status_resets_the_transport_and_drops_the_queues)
{
	struct vqd_buf b = { DATA, 64, true };
	const struct virtio_dev *v = vdev(d);

	rng_up(F_INDIRECT);
	rng_request(&b, 1);
	devt_write32(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	devt_write32(d, VIRTIO_MMIO_QUEUE_SEL, 0);
	cr_assert_neq(v->t.interrupt_status, 0);

	devt_write32(d, VIRTIO_MMIO_STATUS, 0);
	cr_assert_eq(status(d), 0);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_QUEUE_READY), 0);
	cr_assert_eq(v->t.driver_features, 0);
	cr_assert_eq(v->t.device_features_sel, 0);
	cr_assert_eq(v->t.queue_sel, 0);
	cr_assert_eq(v->vq[0].s.ready, 0);
	cr_assert_eq(v->vq[0].s.size, 64, "back to QueueNumMax");
	cr_assert_eq(v->vq[0].s.desc | v->vq[0].s.avail | v->vq[0].s.used, 0);
	cr_assert_eq(v->vq[0].s.next_avail, 0);
	cr_assert_eq(v->vq[0].s.next_used, 0);
	cr_assert_not(v->vq[0].indirect);
	cr_assert_null(v->vq[0].used);
}

Test(virtio_mmio, driver_ok_without_features_ok_needs_a_reset_and_does_not_stick)
{
	devt_write32(d, VIRTIO_MMIO_STATUS, ST_ACK | ST_DRV);
	devt_write32(d, VIRTIO_MMIO_STATUS, ST_ACK | ST_DRV | ST_DOK);
	cr_assert_eq(status(d), ST_ACK | ST_DRV | ST_NR);
	cr_assert(strstr(vdev(d)->last_error, "DRIVER_OK without FEATURES_OK"));
}

Test(virtio_mmio, clearing_a_status_bit_needs_a_reset)
{
	devt_write32(d, VIRTIO_MMIO_STATUS, ST_ACK | ST_DRV);
	devt_write32(d, VIRTIO_MMIO_STATUS, ST_ACK);
	cr_assert_eq(status(d), ST_ACK | ST_DRV | ST_NR);
}

Test(virtio_mmio, needs_reset_stays_until_the_driver_writes_0)
{
	devt_write32(d, VIRTIO_MMIO_STATUS, ST_ACK | ST_DRV);
	devt_write32(d, VIRTIO_MMIO_STATUS, ST_ACK | 0x10);
	cr_assert(needs_reset(d));
	devt_write32(d, VIRTIO_MMIO_STATUS, ST_ACK | ST_DRV);
	cr_assert_eq(status(d), ST_ACK | ST_DRV | ST_NR, "the driver cannot clear it");
	devt_write32(d, VIRTIO_MMIO_STATUS, 0);
	cr_assert_eq(status(d), 0);
	cr_assert_eq(vdev(d)->last_error[0], 0);
}

Test(virtio_mmio, a_device_reset_by_the_driver_works_again_after_a_fresh_start)
{
	struct vqd_buf b = { DATA, 32, true };

	rng_up(0);
	devt_write32(d, VIRTIO_MMIO_STATUS, ST_LIVE & ~ST_DOK);
	cr_assert(needs_reset(d));
	rng_up(0);
	cr_assert_eq(rng_request(&b, 1), 32);
}

/* ---- queue set-up ---------------------------------------------------------------------- */

Test(virtio_mmio, queue_num_max_is_the_device_maximum_and_0_for_queues_that_do_not_exist)
{
	devt_write32(d, VIRTIO_MMIO_QUEUE_SEL, 0);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_QUEUE_NUM_MAX), 64);
	devt_write32(d, VIRTIO_MMIO_QUEUE_SEL, 1);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_QUEUE_READY), 0);
	vsock_vm2();
	for (unsigned i = 0; i < 3; i++) {
		devt_write32(d2, VIRTIO_MMIO_QUEUE_SEL, i);
		cr_assert_eq(devt_read32(d2, VIRTIO_MMIO_QUEUE_NUM_MAX), 256, "vsock queue %u", i);
	}
	devt_write32(d2, VIRTIO_MMIO_QUEUE_SEL, 3);
	cr_assert_eq(devt_read32(d2, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
}

Test(virtio_mmio, queue_registers_hold_size_and_64_bit_ring_addresses_until_queue_ready)
{
	const struct virtq *vq = &vdev(d)->vq[0];

	devt_virtio_features(d, 0);
	vqd_init(&q, &vm->mem, 8, 0x20000, 0x21002, 0x22004);
	devt_write32(d, VIRTIO_MMIO_QUEUE_SEL, 0);
	devt_write32(d, VIRTIO_MMIO_QUEUE_NUM, 8);
	devt_write32(d, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x20000);
	devt_write32(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, 1);
	devt_write32(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x21002);
	devt_write32(d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 2);
	devt_write32(d, VIRTIO_MMIO_QUEUE_USED_LOW, 0x22004);
	devt_write32(d, VIRTIO_MMIO_QUEUE_USED_HIGH, 3);
	cr_assert_eq(vq->s.size, 8);
	cr_assert_eq(vq->s.desc, 0x100020000ull);
	cr_assert_eq(vq->s.avail, 0x200021002ull);
	cr_assert_eq(vq->s.used, 0x300022004ull);
	cr_assert_eq(vq->s.ready, 0);
	/* the high halves back to 0: the rings are in RAM and the queue comes up */
	devt_write32(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
	devt_write32(d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 0);
	devt_write32(d, VIRTIO_MMIO_QUEUE_USED_HIGH, 0);
	devt_write32(d, VIRTIO_MMIO_QUEUE_READY, 1);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_QUEUE_READY), 1);
	cr_assert_eq((const void *)vq->desc, gpa_ptr(&vm->mem, 0x20000, 1));
	cr_assert_eq((const void *)vq->used, gpa_ptr(&vm->mem, 0x22004, 1));
	cr_assert_not(needs_reset(d));
}

Test(virtio_mmio, queue_ready_0_takes_the_queue_down)
{
	rng_up(0);
	devt_write32(d, VIRTIO_MMIO_QUEUE_READY, 0);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_QUEUE_READY), 0);
	cr_assert_null(vdev(d)->vq[0].used);
	cr_assert_not(needs_reset(d));
}

Test(virtio_mmio, writing_the_size_of_a_ready_queue_needs_a_reset_and_changes_nothing)
{
	rng_up(0);
	devt_write32(d, VIRTIO_MMIO_QUEUE_NUM, 32);
	cr_assert(needs_reset(d));
	cr_assert_eq(vdev(d)->vq[0].s.size, QSIZE);
}

Test(virtio_mmio, writing_a_ring_address_of_a_ready_queue_needs_a_reset_and_changes_nothing)
{
	rng_up(0);
	devt_write32(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x40000);
	cr_assert(needs_reset(d));
	cr_assert_eq(vdev(d)->vq[0].s.avail, q.avail);
}

Test(virtio_mmio, a_bad_size_at_queue_ready_needs_a_reset_and_the_queue_stays_down)
{
	devt_virtio_features(d, 0);
	vqd_init_at(&q, &vm->mem, 8, RING);
	q.size = 12;
	devt_write32(d, VIRTIO_MMIO_QUEUE_SEL, 0);
	devt_write32(d, VIRTIO_MMIO_QUEUE_NUM, 12);
	devt_write32(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)q.desc);
	devt_write32(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)q.avail);
	devt_write32(d, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)q.used);
	devt_write32(d, VIRTIO_MMIO_QUEUE_READY, 1);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_QUEUE_READY), 0);
	cr_assert(needs_reset(d));
	cr_assert(strstr(vdev(d)->last_error, "queue 0: queue size 12 is not a power of two"),
		  "%s", vdev(d)->last_error);
}

Test(virtio_mmio, rings_outside_ram_at_queue_ready_need_a_reset_and_the_queue_stays_down)
{
	devt_virtio_features(d, 0);
	devt_write32(d, VIRTIO_MMIO_QUEUE_SEL, 0);
	devt_write32(d, VIRTIO_MMIO_QUEUE_NUM, 8);
	devt_write32(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)RAM);
	devt_write32(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x2000);
	devt_write32(d, VIRTIO_MMIO_QUEUE_USED_LOW, 0x3000);
	devt_write32(d, VIRTIO_MMIO_QUEUE_READY, 1);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_QUEUE_READY), 0);
	cr_assert(strstr(vdev(d)->last_error, "descriptor table: address 0x1000000 is not in "
			 "guest RAM"), "%s", vdev(d)->last_error);
}

/* ---- register access widths ------------------------------------------------------------ */

Test(virtio_mmio, register_reads_other_than_aligned_32_bits_read_0)
{
	uint8_t buf[8];
	const unsigned widths[] = { 1, 2, 8 };

	for (unsigned i = 0; i < ARRAY_SIZE(widths); i++) {
		memset(buf, 0xa5, sizeof(buf));
		devt_read(d, VIRTIO_MMIO_MAGIC_VALUE, buf, widths[i]);
		for (unsigned k = 0; k < widths[i]; k++)
			cr_assert_eq(buf[k], 0, "%u-byte read, byte %u", widths[i], k);
	}
	memset(buf, 0xa5, sizeof(buf));
	devt_read(d, VIRTIO_MMIO_VERSION + 2, buf, 4);
	cr_assert_eq(buf[0] | buf[1] | buf[2] | buf[3], 0, "unaligned 32-bit read");
}

Test(virtio_mmio, register_writes_other_than_aligned_32_bits_are_ignored)
{
	uint8_t zero[8] = { 0 };

	rng_up(0);
	devt_write(d, VIRTIO_MMIO_STATUS, zero, 1);
	devt_write(d, VIRTIO_MMIO_STATUS, zero, 2);
	devt_write(d, VIRTIO_MMIO_STATUS, zero, 8);
	devt_write(d, VIRTIO_MMIO_STATUS - 2, zero, 4);
	cr_assert_eq(status(d), ST_LIVE, "no reset happened");
}

Test(virtio_mmio, reserved_and_write_only_registers_read_0)
{
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_QUEUE_NUM), 0);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_DRIVER_FEATURES), 0);
	cr_assert_eq(devt_read32(d, 0x0fc), 0);
}

Test(virtio_mmio, configuration_reads_of_any_width_inside_config_len_return_its_bytes)
{
	const uint64_t cid = VSOCK_CID;
	const unsigned widths[] = { 1, 2, 4, 8 };

	vsock_vm2();
	for (unsigned w = 0; w < ARRAY_SIZE(widths); w++) {
		for (unsigned off = 0; off + widths[w] <= 8; off++) {
			uint8_t buf[8];
			uint64_t want = 0;

			memset(buf, 0xa5, sizeof(buf));
			devt_read(d2, VIRTIO_MMIO_CONFIG + off, buf, widths[w]);
			memcpy(&want, (const uint8_t *)&cid + off, widths[w]);
			cr_assert_eq(memcmp(buf, &want, widths[w]), 0, "%u bytes at %u", widths[w], off);
		}
	}
}

Test(virtio_mmio, configuration_reads_outside_config_len_read_0)
{
	uint8_t buf[8];

	memset(buf, 0xa5, sizeof(buf));
	devt_read(d, VIRTIO_MMIO_CONFIG, buf, 4);
	cr_assert_eq(buf[0] | buf[1] | buf[2] | buf[3], 0, "rng has no configuration");
	vsock_vm2();
	memset(buf, 0xa5, sizeof(buf));
	devt_read(d2, VIRTIO_MMIO_CONFIG + 8, buf, 4);
	cr_assert_eq(buf[0] | buf[1] | buf[2] | buf[3], 0, "past the CID");
	memset(buf, 0xa5, sizeof(buf));
	devt_read(d2, VIRTIO_MMIO_CONFIG + 6, buf, 4);
	cr_assert_eq(buf[0] | buf[1] | buf[2] | buf[3], 0, "straddling its end");
	memset(buf, 0xa5, sizeof(buf));
	devt_read(d2, 0xfff, buf, 1);
	cr_assert_eq(buf[0], 0, "the window's last byte");
}

Test(virtio_mmio, configuration_writes_are_ignored)
{
	uint64_t cid = htole64(77), got;

	vsock_vm2();
	devt_write(d2, VIRTIO_MMIO_CONFIG, &cid, 8);
	devt_read(d2, VIRTIO_MMIO_CONFIG, &got, 8);
	cr_assert_eq(le64toh(got), VSOCK_CID);
	cr_assert_not(needs_reset(d2));
}

/* ---- notifications and interrupts ----------------------------------------------------- */

Test(virtio_mmio, queue_notify_signals_the_queue_eventfd_on_the_exit_path)
{
	vsock_vm2();
	cr_assert_not(virtio_take_kick(vdev(d2), 1));
	kick(d2, 1);
	cr_assert_eq(vdev(d2)->exit_kicks, 1);
	cr_assert(virtio_take_kick(vdev(d2), 1));
	cr_assert_not(virtio_take_kick(vdev(d2), 0), "only the queue written");
	cr_assert_not(virtio_take_kick(vdev(d2), 2));
}

Test(virtio_mmio, a_used_buffer_raises_the_vring_interrupt_until_acknowledged)
{
	struct vqd_buf b = { DATA, 16, true };

	rng_up(0);
	rng_request(&b, 1);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
	cr_assert_eq(devt_irq_edges(&irq), 1);
	cr_assert_eq(irq.gsi, d->slot->gsi);
	cr_assert_eq(irq.level, 0, "an edge: up, then down");
	devt_write32(d, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
}

Test(virtio_mmio, no_interrupt_when_the_driver_asks_for_none)
{
	struct vqd_buf b = { DATA, 16, true };

	rng_up(0);
	vqd_set_avail_flags(&q, VRING_AVAIL_F_NO_INTERRUPT);
	rng_request(&b, 1);
	cr_assert_eq(devt_irq_edges(&irq), 0);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
}

Test(virtio_mmio, needs_reset_after_driver_ok_raises_a_configuration_interrupt)
{
	rng_up(0);
	devt_write32(d, VIRTIO_MMIO_QUEUE_NUM, 8);
	cr_assert(needs_reset(d));
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
	cr_assert_eq(devt_irq_edges(&irq), 1);
	/* one report per reset: a second violation raises nothing more */
	devt_write32(d, VIRTIO_MMIO_QUEUE_NUM, 4);
	cr_assert_eq(devt_irq_edges(&irq), 1);
}

Test(virtio_mmio, needs_reset_before_driver_ok_raises_no_interrupt)
{
	devt_write32(d, VIRTIO_MMIO_STATUS, ST_ACK);
	devt_write32(d, VIRTIO_MMIO_STATUS, 0xff);
	cr_assert(needs_reset(d));
	cr_assert_eq(devt_irq_edges(&irq), 0);
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
}

/* ---- virtio-rng end to end -------------------------------------------------------------- */

Test(virtio_mmio, rng_writes_random_bytes_into_the_device_writable_buffers_only)
{
	struct vqd_buf b[] = {
		{ DATA, 64, false }, { DATA + 0x1000, 100, true }, { DATA + 0x2000, 300, true },
	};
	const uint8_t *p = vqd_ptr(&vm->mem, DATA, 0x3000);

	rng_up(0);
	vqd_fill_pattern(&vm->mem, DATA, 0x3000, 7);
	cr_assert_eq(rng_request(b, 3), 400);
	/* random bytes replaced the pattern in the writable buffers (a byte may match by
	 * chance, 400 of them do not) */
	cr_assert_gt(pattern_diffs(DATA, 0x3000, 7), 350);
	for (uint64_t i = 0; i < 0x3000; i++) {
		bool writable = (i >= 0x1000 && i < 0x1000 + 100) || (i >= 0x2000 && i < 0x2000 + 300);

		if (!writable)
			cr_assert_eq(p[i], vqd_pattern_byte(7, i), "byte 0x%llx changed",
				     (unsigned long long)i);
	}
}

Test(virtio_mmio, rng_serves_at_most_64_KiB_per_request)
{
	struct vqd_buf b = { DATA, 100 << 10, true };
	const uint8_t *p = vqd_ptr(&vm->mem, DATA, 100 << 10);

	rng_up(0);
	vqd_fill_pattern(&vm->mem, DATA, 100 << 10, 3);
	cr_assert_eq(rng_request(&b, 1), RNG_MAX_REQ);
	cr_assert_gt(pattern_diffs(DATA, RNG_MAX_REQ, 3), RNG_MAX_REQ / 2);
	for (uint64_t i = RNG_MAX_REQ; i < (100 << 10); i++)
		cr_assert_eq(p[i], vqd_pattern_byte(3, i), "byte %llu past 64 KiB",
			     (unsigned long long)i);
}

Test(virtio_mmio, rng_serves_every_published_request_in_order)
{
	uint16_t heads[5], head;
	uint32_t len;

	rng_up(0);
	for (unsigned i = 0; i < 5; i++) {
		struct vqd_buf b = { DATA + i * 0x1000, 10 + i, true };

		heads[i] = vqd_add(&q, &b, 1);
	}
	kick(d, 0);
	rng_settle();
	for (unsigned i = 0; i < 5; i++) {
		cr_assert(vqd_get_used(&q, &head, &len), "request %u", i);
		cr_assert_eq(head, heads[i]);
		cr_assert_eq(len, 10 + i);
	}
	cr_assert_eq(devt_irq_edges(&irq), 1, "one interrupt for the batch");
}

Test(virtio_mmio, rng_serves_an_indirect_table_when_negotiated)
{
	struct vqd_buf b[] = { { DATA, 40, true }, { DATA + 0x1000, 24, true } };
	uint16_t head, got;
	uint32_t len;

	rng_up(F_INDIRECT);
	head = vqd_indirect(&q, TABLE, b, 2);
	vqd_publish(&q, head);
	kick(d, 0);
	cr_assert(rng_wait_used(&got, &len));
	cr_assert_eq(got, head);
	cr_assert_eq(len, 64);
}

Test(virtio_mmio, rng_request_without_writable_buffers_needs_a_reset_and_writes_nothing)
{
	struct vqd_buf b = { DATA, 64, false };

	rng_up(0);
	vqd_fill_pattern(&vm->mem, DATA, 64, 5);
	vqd_add(&q, &b, 1);
	kick(d, 0);
	rng_settle();
	cr_assert(needs_reset(d));
	cr_assert(vqd_check_pattern(&vm->mem, DATA, 64, 5));
	cr_assert_eq(vqd_used_idx(&q), 0, "nothing used");
	cr_assert(strstr(vdev(d)->last_error, "no device-writable buffer"), "%s",
		  vdev(d)->last_error);
}

Test(virtio_mmio, rng_raises_the_vring_interrupt_for_requests_served_before_a_bad_one)
{
	struct vqd_buf good = { DATA, 16, true }, bad = { DATA + 0x1000, 16, false };

	rng_up(0);
	vqd_add(&q, &good, 1);
	vqd_add(&q, &bad, 1);
	kick(d, 0);
	rng_settle();
	cr_assert(needs_reset(d));
	cr_assert_eq(vqd_used_idx(&q), 1, "the first request was served");
	cr_assert_eq(devt_read32(d, VIRTIO_MMIO_INTERRUPT_STATUS),
		     VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG,
		     "the driver must hear of the used buffer, not only of the reset");
}

Test(virtio_mmio, rng_processes_nothing_before_driver_ok)
{
	struct vqd_buf b = { DATA, 64, true };

	devt_virtio_features(d, 0);
	vqd_init_at(&q, &vm->mem, QSIZE, RING);
	devt_virtio_queue(d, 0, &q);
	vqd_fill_pattern(&vm->mem, DATA, 64, 5);
	vqd_add(&q, &b, 1);
	kick(d, 0);
	rng_settle();
	cr_assert_eq(vqd_used_idx(&q), 0);
	cr_assert(vqd_check_pattern(&vm->mem, DATA, 64, 5));
	cr_assert_eq(devt_irq_edges(&irq), 0);
}

Test(virtio_mmio, rng_serves_a_kick_from_before_driver_ok_once_driver_ok_is_set)
{
	struct vqd_buf b = { DATA, 64, true };
	uint16_t head;
	uint32_t len;

	devt_virtio_features(d, 0);
	vqd_init_at(&q, &vm->mem, QSIZE, RING);
	devt_virtio_queue(d, 0, &q);
	vqd_add(&q, &b, 1);
	kick(d, 0);
	rng_settle(); /* the kick is consumed and ignored */
	devt_virtio_driver_ok(d);
	cr_assert(rng_wait_used(&head, &len));
	cr_assert_eq(len, 64);
}

/* ---- dirty tracking ---------------------------------------------------------------------- */

Test(virtio_mmio, rng_marks_the_used_ring_and_the_buffers_it_wrote_dirty)
{
	struct vqd_buf b[] = { { DATA, 64, false }, { DATA + 0x3000, 64, true } };

	rng_up(0);
	vqd_track_dirty(&vm->mem);
	rng_request(b, 2);
	cr_assert(vqd_dirty(&vm->mem, q.used), "used ring");
	cr_assert(vqd_dirty(&vm->mem, DATA + 0x3000), "written buffer");
	cr_assert_not(vqd_dirty(&vm->mem, DATA), "the readable buffer");
	cr_assert_not(vqd_dirty(&vm->mem, q.desc), "the descriptor table");
}

/* ---- snapshot sections ---------------------------------------------------------------- */

static struct snap_state st;

static struct snap_device *save(struct device *dev)
{
	struct snap_device *sd;
	struct snap_err se;

	cr_assert_eq(snap_state_add_device(&st, dev->ops->name, dev->ops->version, &sd, &se), 0,
		     "%s", se.msg);
	cr_assert_eq(dev->ops->save(dev, sd, &se), 0, "save: %s", se.msg);
	return sd;
}

static struct snap_dev_field *field(struct snap_device *sd, const char *name)
{
	for (uint32_t i = 0; i < sd->nr_fields; i++)
		if (!strcmp(sd->fields[i].name, name))
			return &sd->fields[i];
	cr_assert_fail("no field %s in %s", name, sd->name);
	return NULL;
}

static void assert_transport_equal(const struct virtio_dev *a, const struct virtio_dev *b)
{
	cr_assert_eq(a->t.status, b->t.status);
	cr_assert_eq(a->t.device_features_sel, b->t.device_features_sel);
	cr_assert_eq(a->t.driver_features_sel, b->t.driver_features_sel);
	cr_assert_eq(a->t.queue_sel, b->t.queue_sel);
	cr_assert_eq(a->t.interrupt_status, b->t.interrupt_status);
	cr_assert_eq(a->t.config_generation, b->t.config_generation);
	cr_assert_eq(a->t.driver_features, b->t.driver_features);
	for (unsigned i = 0; i < a->ops->nr_queues; i++) {
		const struct virtq *x = &a->vq[i], *y = &b->vq[i];

		cr_assert_eq(x->s.size, y->s.size, "queue %u size", i);
		cr_assert_eq(x->s.ready, y->s.ready, "queue %u ready", i);
		cr_assert_eq(x->s.desc, y->s.desc, "queue %u desc", i);
		cr_assert_eq(x->s.avail, y->s.avail, "queue %u avail", i);
		cr_assert_eq(x->s.used, y->s.used, "queue %u used", i);
		cr_assert_eq(x->s.next_avail, y->s.next_avail, "queue %u next_avail", i);
		cr_assert_eq(x->s.next_used, y->s.next_used, "queue %u next_used", i);
		cr_assert_eq(x->indirect, y->indirect, "queue %u indirect", i);
		cr_assert_eq(x->max_size, y->max_size, "queue %u max_size", i);
		cr_assert_eq(!!x->used, !!y->used, "queue %u host pointers", i);
	}
}

/* A second VM with a copy of the first one's RAM, as a restore from its memory file. */
static void vm2_with_ram_copy(void)
{
	vm2 = devt_vm(-1);
	devt_vm_ram(vm2, RAM);
	memcpy(vm2->mem.base, vm->mem.base, RAM);
}

Test(virtio_mmio, rng_round_trips_through_save_and_restore_into_a_fresh_device)
{
	struct vqd_buf b = { DATA, 32, true };
	struct errbuf eb = { "" };
	struct snap_device *sd;
	struct devt_irq irq2;
	uint32_t len;

	rng_up(F_INDIRECT);
	for (unsigned i = 0; i < 3; i++)
		rng_request(&b, 1);
	devt_write32(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	devt_write32(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	sd = save(d);
	cr_assert_eq(d->ops->check(NULL, sd, &eb), 0, "check: %s", eb.msg);

	vm2_with_ram_copy();
	d2 = devt_create(vm2, "virtio-rng");
	devt_irq_record(d2, &irq2);
	cr_assert_eq(d2->ops->restore(d2, sd, &eb), 0, "restore: %s", eb.msg);
	assert_transport_equal(vdev(d), vdev(d2));
	cr_assert_eq(vdev(d2)->vq[0].s.next_avail, 3);
	cr_assert_eq(vdev(d2)->vq[0].used, gpa_ptr(&vm2->mem, q.used, 1), "pointers into its RAM");

	/* the pending interrupt is raised again, and the clone serves the next request */
	d2->ops->post_restore(d2);
	cr_assert_eq(devt_irq_edges(&irq2), 1);
	cr_assert_eq(d2->ops->start(d2, &eb), 0, "%s", eb.msg);
	q.mem = &vm2->mem;
	vqd_add(&q, &b, 1);
	kick(d2, 0);
	for (int i = 0; i < 100 && !vqd_get_used(&q, NULL, &len); i++)
		vm_loop_once(vm2, 10);
	cr_assert_eq(vqd_used_idx(&q), 4, "the restored device served request 4");
	snap_state_free(&st);
}

Test(virtio_mmio, vsock_round_trips_through_save_and_restore_into_a_fresh_device)
{
	struct errbuf eb = { "" };
	struct snap_device *sd;
	struct vqd v[3];
	struct device *src;
	uint64_t cid;

	/* the source on vm2 (vsock_vm2), the clone on a third VM */
	vsock_vm2();
	src = d2;
	devt_virtio_features(src, 0);
	for (unsigned i = 0; i < 3; i++) {
		vqd_init_at(&v[i], &vm2->mem, 64, RING + i * 0x10000);
		vqd_start_at(&v[i], (uint16_t)(100 * i + 7));
		vdev(src)->vq[i].s.next_avail = vdev(src)->vq[i].s.next_used = (uint16_t)(100 * i + 7);
		devt_virtio_queue(src, i, &v[i]);
	}
	devt_virtio_driver_ok(src);
	devt_write32(src, VIRTIO_MMIO_QUEUE_SEL, 2);
	sd = save(src);
	cr_assert_eq(field(sd, "guest_cid")->u64, VSOCK_CID);
	cr_assert_eq(src->ops->check(NULL, sd, &eb), 0, "check: %s", eb.msg);

	{
		struct vm *vm3 = devt_vm(-1);
		struct device *dst;

		devt_vm_ram(vm3, RAM);
		dst = vsock_on(vm3);
		cr_assert_eq(dst->ops->restore(dst, sd, &eb), 0, "restore: %s", eb.msg);
		assert_transport_equal(vdev(src), vdev(dst));
		devt_read(dst, VIRTIO_MMIO_CONFIG, &cid, 8);
		cr_assert_eq(le64toh(cid), VSOCK_CID);
		dev_destroy(dst);
		devt_vm_free(vm3);
	}
	snap_state_free(&st);
}

Test(virtio_mmio, vsock_restore_refuses_a_different_configured_cid)
{
	struct errbuf eb = { "" };
	struct snap_device *sd;

	vsock_vm2();
	sd = save(d2);
	field(sd, "guest_cid")->u64 = 9;
	cr_assert_lt(d2->ops->restore(d2, sd, &eb), 0);
	cr_assert(strstr(eb.msg, "CID 9"), "%s", eb.msg);
	snap_state_free(&st);
}

Test(virtio_mmio, a_queue_whose_rings_leave_ram_fails_verify_and_restore_with_a_clear_message)
{
	struct errbuf eb = { "" };
	struct snap_device *sd;

	rng_up(0);
	sd = save(d);
	field(sd, "q0_used")->u64 = RAM - 64;
	cr_assert_eq(d->ops->check(NULL, sd, &eb), 0, "without the snapshot, no RAM to check: %s",
		     eb.msg);
	/* with the snapshot's regions, ember-snap verify refuses what restore will */
	st.vm.regions[0] = (struct snap_region){ .gpa = 0, .size = RAM, .file_offset = 0 };
	st.vm.nr_regions = 1;
	st.memory.size = RAM;
	cr_assert_lt(d->ops->check(&st, sd, &eb), 0);
	cr_assert(strstr(eb.msg, "device virtio-rng: queue 0: used ring: 0xffffc0 + length 134 "
			 "crosses the end of its guest RAM region"), "%s", eb.msg);
	vm2_with_ram_copy();
	d2 = devt_create(vm2, "virtio-rng");
	cr_assert_lt(d2->ops->restore(d2, sd, &eb), 0);
	cr_assert(strstr(eb.msg, "device virtio-rng: queue 0: used ring: 0xffffc0 + length 134 "
			 "crosses the end of its guest RAM region"), "%s", eb.msg);
	snap_state_free(&st);
}

/* One rejected section: the device, a field set to a value, the words of the error. */
struct bad_section {
	bool vsock;
	char field[32];
	uint64_t value;
	char expect[64];
};

static const struct bad_section bad_sections[] = {
	{ false, "status", ST_LIVE | 0x10, "status 0x1f has unknown bits" },
	{ false, "status", 0x100, "field status: 256 exceeds" },
	{ false, "status", ST_ACK | ST_DRV | ST_DOK, "DRIVER_OK without FEATURES_OK" },
	{ false, "driver_features", F_VERSION_1 | (1ull << 5), "were never offered" },
	{ false, "driver_features", F_VERSION_1 | (1ull << 63), "were never offered" },
	{ false, "driver_features", F_INDIRECT, "FEATURES_OK with driver_features 0x10000000, "
	  "without VERSION_1" },
	{ false, "interrupt_status", 4, "field interrupt_status: 4 exceeds" },
	{ false, "q0_ready", 2, "field q0_ready: 2 exceeds" },
	{ false, "q0_size", 12, "queue 0: queue size 12 is not a power of two" },
	{ false, "q0_size", 128, "queue size 128 is larger than the maximum 64" },
	{ false, "q0_desc", 0x10008, "descriptor table address 0x10008 is not 16-byte aligned" },
	{ false, "q0_next_used", 0x10000, "field q0_next_used: 65536 exceeds" },
	{ true, "guest_cid", 0, "guest_cid 0 is reserved" },
	{ true, "guest_cid", 1, "guest_cid 1 is reserved" },
	{ true, "guest_cid", 2, "guest_cid 2 is reserved" },
	{ true, "guest_cid", 0xffffffffull, "field guest_cid: 4294967295 exceeds" },
	{ true, "guest_cid", 1ull << 32, "field guest_cid: 4294967296 exceeds" },
	{ true, "q2_size", 512, "queue 2: queue size 512 is larger than the maximum 256" },
	{ true, "status", ST_LIVE | 0x20, "unknown bits" },
};

ParameterizedTestParameters(virtio_mmio, check_rejects_a_bad_section)
{
	return cr_make_param_array(struct bad_section, (void *)bad_sections,
				   ARRAY_SIZE(bad_sections));
}

ParameterizedTest(const struct bad_section *b, virtio_mmio, check_rejects_a_bad_section)
{
	struct errbuf eb = { "" };
	struct snap_device *sd;
	struct device *dev;

	if (b->vsock) {
		struct vqd v[3];

		vsock_vm2();
		dev = d2;
		devt_virtio_features(dev, 0);
		for (unsigned i = 0; i < 3; i++) {
			vqd_init_at(&v[i], &vm2->mem, 64, RING + i * 0x10000);
			devt_virtio_queue(dev, i, &v[i]);
		}
		devt_virtio_driver_ok(dev);
	} else {
		dev = d;
		rng_up(0);
	}
	sd = save(dev);
	cr_assert_eq(dev->ops->check(NULL, sd, &eb), 0, "the saved section: %s", eb.msg);
	field(sd, b->field)->u64 = b->value;
	cr_assert_lt(dev->ops->check(NULL, sd, &eb), 0, "%s = 0x%llx accepted", b->field,
		     (unsigned long long)b->value);
	cr_assert(strstr(eb.msg, b->expect), "%s = 0x%llx: \"%s\", expected \"%s\"", b->field,
		  (unsigned long long)b->value, eb.msg, b->expect);
	snap_state_free(&st);
}

/* ---- hostile drivers -------------------------------------------------------------------- */

/*
 * Each row sets a device up (act), marks guest RAM (h_mark) and does one hostile thing.
 * The device must then be in NEEDS_RESET (H_NEEDS_RESET) or have ignored it
 * (H_IGNORED: no NEEDS_RESET), and guest RAM may differ from the mark only in the used
 * rings: none of the rows offers a buffer the device may rightly fill.
 */
enum h_end { H_NEEDS_RESET, H_IGNORED };

struct hostile {
	const char *name;
	bool vsock;
	enum h_end end;
	void (*act)(struct device *dev);
	void (*check)(struct device *dev);   /* more to verify afterwards, or NULL */
};

static struct {
	struct vqd vq[3];
	unsigned nr_queues;
	uint8_t *before;
} h;

/* Negotiated (features), every queue of the device at RING + k * 0x10000, DRIVER_OK. */
static void h_live(struct device *dev, uint64_t features)
{
	h.nr_queues = vdev(dev)->ops->nr_queues;
	devt_virtio_features(dev, features);
	for (unsigned i = 0; i < h.nr_queues; i++) {
		vqd_init_at(&h.vq[i], &vm->mem, QSIZE, RING + i * 0x10000);
		devt_virtio_queue(dev, i, &h.vq[i]);
	}
	devt_virtio_driver_ok(dev);
	rng_settle(); /* rng: DRIVER_OK's own kick finds nothing (the rows' buffers come later) */
}

static void h_mark(void)
{
	h.before = malloc(RAM);
	cr_assert_not_null(h.before);
	memcpy(h.before, vm->mem.base, RAM);
}

static bool h_in_used_ring(uint64_t gpa)
{
	for (unsigned i = 0; i < h.nr_queues; i++)
		if (gpa >= h.vq[i].used && gpa < h.vq[i].used + 6 + 8ull * h.vq[i].size)
			return true;
	return false;
}

static void h_assert_ram(const char *name)
{
	cr_assert_not_null(h.before, "%s: the row never marked RAM", name);
	for (uint64_t pg = 0; pg < RAM; pg += 4096) {
		if (!memcmp(h.before + pg, vm->mem.base + pg, 4096))
			continue;
		for (uint64_t a = pg; a < pg + 4096; a++)
			if (h.before[a] != vm->mem.base[a])
				cr_assert(h_in_used_ring(a), "%s: the device wrote guest RAM at 0x%llx",
					  name, (unsigned long long)a);
	}
}

static void h_status(struct device *dev, uint32_t v)
{
	devt_write32(dev, VIRTIO_MMIO_STATUS, v);
}

static void h_queue_down(struct device *dev)
{
	devt_write32(dev, VIRTIO_MMIO_QUEUE_SEL, 0);
	cr_assert_eq(devt_read32(dev, VIRTIO_MMIO_QUEUE_READY), 0, "the queue came up");
	cr_assert_null(vdev(dev)->vq[0].used);
}

static void h_nothing_used(struct device *dev)
{
	for (unsigned i = 0; i < h.nr_queues; i++)
		cr_assert_eq(vqd_used_idx(&h.vq[i]), 0, "queue %u used a buffer", i);
}

static void h_features_refused(struct device *dev)
{
	cr_assert_eq(status(dev) & ST_FOK, 0, "FEATURES_OK stuck");
}

static void h_still_live(struct device *dev)
{
	cr_assert_eq(status(dev), ST_LIVE);
}

/* -- status and features -- */

static void a_unknown_status_bit(struct device *dev)
{
	h_status(dev, ST_ACK);
	h_mark();
	h_status(dev, ST_ACK | ST_DRV | 0x10);
}

static void a_driver_sets_needs_reset(struct device *dev)
{
	h_status(dev, ST_ACK);
	h_mark();
	h_status(dev, ST_ACK | ST_NR);
}

static void a_status_clears_driver_ok(struct device *dev)
{
	h_live(dev, 0);
	h_mark();
	h_status(dev, ST_ACK | ST_DRV | ST_FOK);
}

static void a_driver_ok_without_features_ok(struct device *dev)
{
	h_status(dev, ST_ACK | ST_DRV);
	h_mark();
	h_status(dev, ST_ACK | ST_DRV | ST_DOK);
}

static void c_no_driver_ok(struct device *dev)
{
	cr_assert_eq(status(dev) & ST_DOK, 0);
}

static void a_features_before_driver(struct device *dev)
{
	h_status(dev, ST_ACK);
	h_mark();
	write_features(dev, 1, 1);
}

static void a_features_after_features_ok(struct device *dev)
{
	devt_virtio_features(dev, 0);
	h_mark();
	write_features(dev, 0, (uint32_t)F_INDIRECT);
}

static void a_feature_never_offered(struct device *dev)
{
	h_status(dev, ST_ACK | ST_DRV);
	write_features(dev, 0, 1u << 7);
	write_features(dev, 1, 1);
	h_mark();
	h_status(dev, ST_ACK | ST_DRV | ST_FOK);
}

static void a_feature_past_bit_63(struct device *dev)
{
	h_status(dev, ST_ACK | ST_DRV);
	write_features(dev, 1, 1);
	write_features(dev, 3, 0x80000000u);
	h_mark();
	h_status(dev, ST_ACK | ST_DRV | ST_FOK);
}

/* -- queue set-up -- */

/* A queue at RING whose QueueNum is size and whose rings are at desc/avail/used. */
static void h_bad_queue(struct device *dev, uint32_t size, uint64_t desc, uint64_t avail,
			uint64_t used)
{
	devt_virtio_features(dev, 0);
	h_mark();
	devt_write32(dev, VIRTIO_MMIO_QUEUE_SEL, 0);
	devt_write32(dev, VIRTIO_MMIO_QUEUE_NUM, size);
	devt_write32(dev, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
	devt_write32(dev, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
	devt_write32(dev, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)avail);
	devt_write32(dev, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (uint32_t)(avail >> 32));
	devt_write32(dev, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)used);
	devt_write32(dev, VIRTIO_MMIO_QUEUE_USED_HIGH, (uint32_t)(used >> 32));
	devt_write32(dev, VIRTIO_MMIO_QUEUE_READY, 1);
}

static void a_queue_size_0(struct device *dev)
{
	h_bad_queue(dev, 0, RING, RING + 0x1000, RING + 0x2000);
}

static void a_queue_size_3(struct device *dev)
{
	h_bad_queue(dev, 3, RING, RING + 0x1000, RING + 0x2000);
}

static void a_queue_size_above_max(struct device *dev)
{
	h_bad_queue(dev, 128, RING, RING + 0x1000, RING + 0x2000);
}

static void a_queue_size_above_16_bits(struct device *dev)
{
	h_bad_queue(dev, 0x10010, RING, RING + 0x1000, RING + 0x2000);
}

static void a_desc_outside_ram(struct device *dev)
{
	h_bad_queue(dev, 8, 0x40000000, RING + 0x1000, RING + 0x2000);
}

static void a_desc_wraps(struct device *dev)
{
	h_bad_queue(dev, 8, 0xfffffffffffffff0ull, RING + 0x1000, RING + 0x2000);
}

static void a_avail_crosses_ram_end(struct device *dev)
{
	h_bad_queue(dev, 8, RING, RAM - 4, RING + 0x2000);
}

static void a_used_misaligned(struct device *dev)
{
	h_bad_queue(dev, 8, RING, RING + 0x1000, RING + 0x2002);
}

static void a_queue_num_while_ready(struct device *dev)
{
	h_live(dev, 0);
	h_mark();
	devt_write32(dev, VIRTIO_MMIO_QUEUE_NUM, 8);
}

static void c_size_kept(struct device *dev)
{
	cr_assert_eq(vdev(dev)->vq[0].s.size, QSIZE);
}

static void a_used_address_while_ready(struct device *dev)
{
	h_live(dev, 0);
	h_mark();
	devt_write32(dev, VIRTIO_MMIO_QUEUE_USED_HIGH, 1);
}

static void c_used_kept(struct device *dev)
{
	cr_assert_eq(vdev(dev)->vq[0].s.used, h.vq[0].used);
}

static void a_queue_sel_out_of_range(struct device *dev)
{
	devt_virtio_features(dev, 0);
	h_mark();
	devt_write32(dev, VIRTIO_MMIO_QUEUE_SEL, 0x80000001u);
	cr_assert_eq(devt_read32(dev, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
	devt_write32(dev, VIRTIO_MMIO_QUEUE_NUM, 8);
	devt_write32(dev, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);
	devt_write32(dev, VIRTIO_MMIO_QUEUE_USED_LOW, 0x2000);
	devt_write32(dev, VIRTIO_MMIO_QUEUE_READY, 1);
	cr_assert_eq(devt_read32(dev, VIRTIO_MMIO_QUEUE_READY), 0);
}

static void c_queue_0_untouched(struct device *dev)
{
	const struct virtq *vq = &vdev(dev)->vq[0];

	cr_assert_eq(vq->s.size, vq->max_size);
	cr_assert_eq(vq->s.desc | vq->s.used | vq->s.ready, 0);
}

/* -- notifications and register widths -- */

static void h_publish_writable(unsigned queue, uint64_t gpa, uint32_t len)
{
	struct vqd_buf b = { gpa, len, true };

	vqd_add(&h.vq[queue], &b, 1);
}

static void a_notify_missing_queue(struct device *dev)
{
	h_live(dev, 0);
	h_publish_writable(0, DATA, 64);
	h_mark();
	kick(dev, 5);
	kick(dev, 0xffffffffu);
}

static void a_notify_before_driver_ok(struct device *dev)
{
	h.nr_queues = 1;
	devt_virtio_features(dev, 0);
	vqd_init_at(&h.vq[0], &vm->mem, QSIZE, RING);
	devt_virtio_queue(dev, 0, &h.vq[0]);
	h_publish_writable(0, DATA, 64);
	h_mark();
	kick(dev, 0);
}

static void a_narrow_status_write(struct device *dev)
{
	uint16_t zero = 0;

	h_live(dev, 0);
	h_mark();
	devt_write(dev, VIRTIO_MMIO_STATUS, &zero, 2);
}

static void a_unaligned_register_write(struct device *dev)
{
	uint32_t zero = 0;

	h_live(dev, 0);
	h_mark();
	devt_write(dev, VIRTIO_MMIO_STATUS + 1, &zero, 4);
	devt_write(dev, VIRTIO_MMIO_QUEUE_READY + 2, &zero, 4);
}

/* -- rings (a live device; the hostile step is the kick) -- */

static void a_readable_only_request(struct device *dev)
{
	struct vqd_buf b = { DATA, 64, false };

	h_live(dev, 0);
	vqd_add(&h.vq[0], &b, 1);
	h_mark();
	kick(dev, 0);
}

static void a_readable_after_writable(struct device *dev)
{
	struct vqd_buf b[] = { { DATA, 64, true }, { DATA + 0x1000, 64, false } };

	h_live(dev, 0);
	vqd_add(&h.vq[0], b, 2);
	h_mark();
	kick(dev, 0);
}

static void a_descriptor_loop(struct device *dev)
{
	h_live(dev, 0);
	vqd_set_desc(&h.vq[0], 0, DATA, 64, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
	vqd_set_desc(&h.vq[0], 1, DATA + 0x1000, 64, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 0);
	vqd_publish(&h.vq[0], 0);
	h_mark();
	kick(dev, 0);
}

static void h_one_desc(struct device *dev, uint64_t addr, uint32_t len, uint16_t flags,
		       uint16_t next)
{
	h_live(dev, 0);
	vqd_set_desc(&h.vq[0], 0, addr, len, flags, next);
	vqd_publish(&h.vq[0], 0);
	h_mark();
	kick(dev, 0);
}

static void a_buffer_outside_ram(struct device *dev)
{
	h_one_desc(dev, 0x40000000, 64, VRING_DESC_F_WRITE, 0);
}

static void a_buffer_address_wraps(struct device *dev)
{
	h_one_desc(dev, 0xffffffffffff0000ull, 0x20000, VRING_DESC_F_WRITE, 0);
}

static void a_huge_buffer(struct device *dev)
{
	h_one_desc(dev, DATA, 0xffffffffu, VRING_DESC_F_WRITE, 0);
}

static void a_next_out_of_range(struct device *dev)
{
	h_one_desc(dev, DATA, 64, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, QSIZE + 3);
}

static void a_indirect_not_negotiated(struct device *dev)
{
	vqd_set_desc_at(&vm->mem, TABLE, DATA, 64, VRING_DESC_F_WRITE, 0);
	h_one_desc(dev, TABLE, 16, VRING_DESC_F_INDIRECT, 0);
}

static void a_indirect_loop(struct device *dev)
{
	h_live(dev, F_INDIRECT);
	vqd_set_desc_at(&vm->mem, TABLE, DATA, 64, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
	vqd_set_desc_at(&vm->mem, TABLE + 16, DATA, 64, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 0);
	vqd_set_desc(&h.vq[0], 0, TABLE, 32, VRING_DESC_F_INDIRECT, 0);
	vqd_publish(&h.vq[0], 0);
	h_mark();
	kick(dev, 0);
}

static void a_avail_index_jump(struct device *dev)
{
	h_live(dev, 0);
	h_publish_writable(0, DATA, 64);
	vqd_set_avail_idx(&h.vq[0], 200);
	h_mark();
	kick(dev, 0);
}

static void a_head_out_of_range(struct device *dev)
{
	h_live(dev, 0);
	vqd_publish(&h.vq[0], QSIZE + 40);
	h_mark();
	kick(dev, 0);
}

/* -- virtio-vsock -- */

static void a_vsock_config_write(struct device *dev)
{
	uint64_t cid = htole64(1234);
	uint8_t one = 9;

	h_live(dev, 0);
	h_mark();
	devt_write(dev, VIRTIO_MMIO_CONFIG, &cid, 8);
	devt_write(dev, VIRTIO_MMIO_CONFIG + 1, &one, 1);
}

static void c_vsock_cid_kept(struct device *dev)
{
	uint64_t cid;

	devt_read(dev, VIRTIO_MMIO_CONFIG, &cid, 8);
	cr_assert_eq(le64toh(cid), VSOCK_CID);
	h_still_live(dev);
}

static void a_vsock_rx_readable(struct device *dev)
{
	struct vqd_buf b = { DATA, 4096, false };

	h_live(dev, 0);
	vqd_add(&h.vq[0], &b, 1);
	h_mark();
	kick(dev, 0);
}

static void a_vsock_rx_short(struct device *dev)
{
	h_live(dev, 0);
	h_publish_writable(0, DATA, VSOCK_HDR_SIZE - 1);
	h_mark();
	kick(dev, 0);
}

static void a_vsock_rx_index_jump(struct device *dev)
{
	h_live(dev, 0);
	h_publish_writable(0, DATA, 4096);
	vqd_set_avail_idx(&h.vq[0], 0x8000);
	h_mark();
	kick(dev, 0);
}

static void a_vsock_tx_loop(struct device *dev)
{
	h_live(dev, 0);
	vqd_set_desc(&h.vq[1], 3, DATA, 64, VRING_DESC_F_NEXT, 3);
	vqd_publish(&h.vq[1], 3);
	h_mark();
	kick(dev, 1);
}

static void a_vsock_tx_outside_ram(struct device *dev)
{
	h_live(dev, 0);
	vqd_set_desc(&h.vq[1], 0, RAM - 16, 64, 0, 0);
	vqd_publish(&h.vq[1], 0);
	h_mark();
	kick(dev, 1);
}

static void a_vsock_queue_size_512(struct device *dev)
{
	h_bad_queue(dev, 512, RING, RING + 0x2000, RING + 0x3000);
}

static const struct hostile hostile_drivers[] = {
	{ "status with an unknown bit", false, H_NEEDS_RESET, a_unknown_status_bit, NULL },
	{ "status setting NEEDS_RESET", false, H_NEEDS_RESET, a_driver_sets_needs_reset, NULL },
	{ "status clearing DRIVER_OK", false, H_NEEDS_RESET, a_status_clears_driver_ok, NULL },
	{ "DRIVER_OK without FEATURES_OK", false, H_NEEDS_RESET, a_driver_ok_without_features_ok,
	  c_no_driver_ok },
	{ "driver features before DRIVER", false, H_NEEDS_RESET, a_features_before_driver, NULL },
	{ "driver features after FEATURES_OK", false, H_NEEDS_RESET, a_features_after_features_ok,
	  NULL },
	{ "a feature never offered", false, H_IGNORED, a_feature_never_offered,
	  h_features_refused },
	{ "a feature past bit 63", false, H_IGNORED, a_feature_past_bit_63, h_features_refused },
	{ "queue size 0", false, H_NEEDS_RESET, a_queue_size_0, h_queue_down },
	{ "queue size 3", false, H_NEEDS_RESET, a_queue_size_3, h_queue_down },
	{ "queue size above QueueNumMax", false, H_NEEDS_RESET, a_queue_size_above_max,
	  h_queue_down },
	{ "queue size above 16 bits", false, H_NEEDS_RESET, a_queue_size_above_16_bits,
	  h_queue_down },
	{ "descriptor table outside RAM", false, H_NEEDS_RESET, a_desc_outside_ram, h_queue_down },
	{ "descriptor table address wrapping", false, H_NEEDS_RESET, a_desc_wraps, h_queue_down },
	{ "avail ring crossing the end of RAM", false, H_NEEDS_RESET, a_avail_crosses_ram_end,
	  h_queue_down },
	{ "misaligned used ring", false, H_NEEDS_RESET, a_used_misaligned, h_queue_down },
	{ "QueueNum of a ready queue", false, H_NEEDS_RESET, a_queue_num_while_ready, c_size_kept },
	{ "used ring address of a ready queue", false, H_NEEDS_RESET, a_used_address_while_ready,
	  c_used_kept },
	{ "QueueSel out of range", false, H_IGNORED, a_queue_sel_out_of_range,
	  c_queue_0_untouched },
	{ "notify of a queue that does not exist", false, H_IGNORED, a_notify_missing_queue,
	  h_nothing_used },
	{ "notify before DRIVER_OK", false, H_IGNORED, a_notify_before_driver_ok, h_nothing_used },
	{ "16-bit status write of 0", false, H_IGNORED, a_narrow_status_write, h_still_live },
	{ "unaligned 32-bit register writes", false, H_IGNORED, a_unaligned_register_write,
	  h_still_live },
	{ "request of readable buffers only", false, H_NEEDS_RESET, a_readable_only_request,
	  h_nothing_used },
	{ "readable buffer after a writable one", false, H_NEEDS_RESET, a_readable_after_writable,
	  h_nothing_used },
	{ "descriptor loop", false, H_NEEDS_RESET, a_descriptor_loop, h_nothing_used },
	{ "buffer outside RAM", false, H_NEEDS_RESET, a_buffer_outside_ram, h_nothing_used },
	{ "buffer address wrapping", false, H_NEEDS_RESET, a_buffer_address_wraps, h_nothing_used },
	{ "buffer of 4 GiB - 1", false, H_NEEDS_RESET, a_huge_buffer, h_nothing_used },
	{ "next index out of range", false, H_NEEDS_RESET, a_next_out_of_range, h_nothing_used },
	{ "indirect descriptor without negotiation", false, H_NEEDS_RESET, a_indirect_not_negotiated,
	  h_nothing_used },
	{ "indirect table loop", false, H_NEEDS_RESET, a_indirect_loop, h_nothing_used },
	{ "avail index jump", false, H_NEEDS_RESET, a_avail_index_jump, h_nothing_used },
	{ "head out of range", false, H_NEEDS_RESET, a_head_out_of_range, h_nothing_used },
	{ "vsock configuration writes after DRIVER_OK", true, H_IGNORED, a_vsock_config_write,
	  c_vsock_cid_kept },
	{ "vsock rx buffer the device may only read", true, H_NEEDS_RESET, a_vsock_rx_readable,
	  h_nothing_used },
	{ "vsock rx buffer shorter than a header", true, H_NEEDS_RESET, a_vsock_rx_short,
	  h_nothing_used },
	{ "vsock rx avail index jump", true, H_NEEDS_RESET, a_vsock_rx_index_jump, h_nothing_used },
	{ "vsock tx descriptor loop", true, H_NEEDS_RESET, a_vsock_tx_loop, h_nothing_used },
	{ "vsock tx buffer crossing the end of RAM", true, H_NEEDS_RESET, a_vsock_tx_outside_ram,
	  h_nothing_used },
	{ "vsock queue size 512", true, H_NEEDS_RESET, a_vsock_queue_size_512, h_queue_down },
};

/* Criterion hands a worker a byte copy of the parameter: pass the row number. */
ParameterizedTestParameters(virtio_mmio, hostile_driver_ends_cleanly)
{
	static unsigned rows[ARRAY_SIZE(hostile_drivers)];

	for (unsigned i = 0; i < ARRAY_SIZE(rows); i++)
		rows[i] = i;
	return cr_make_param_array(unsigned, rows, ARRAY_SIZE(rows));
}

/* The vsock thread works on its own: wait for NEEDS_RESET (or give up after 2 s). */
static void wait_needs_reset(struct device *dev)
{
	for (int i = 0; i < 2000 && !needs_reset(dev); i++)
		usleep(1000);
}

ParameterizedTest(unsigned *row, virtio_mmio, hostile_driver_ends_cleanly)
{
	const struct hostile *r = &hostile_drivers[*row];
	struct errbuf eb = { "" };
	struct device *dev = d;

	if (r->vsock) {
		d2 = dev = vsock_on(vm);
		cr_assert_eq(dev->ops->start(dev, &eb), 0, "%s", eb.msg);
	}
	r->act(dev);
	if (r->vsock && r->end == H_NEEDS_RESET)
		wait_needs_reset(dev);
	rng_settle();
	if (r->end == H_NEEDS_RESET) {
		cr_assert(needs_reset(dev), "%s: no NEEDS_RESET (status 0x%x)", r->name, status(dev));
		cr_assert_neq(vdev(dev)->last_error[0], 0, "%s: no reason recorded", r->name);
	} else {
		cr_assert_not(needs_reset(dev), "%s: NEEDS_RESET (%s)", r->name, vdev(dev)->last_error);
	}
	if (r->check)
		r->check(dev);
	/* stop the device before comparing: no late writes */
	dev_destroy(d2);
	d2 = NULL;
	h_assert_ram(r->name);
	free(h.before);
	h.before = NULL;
}
