/*
 * The only MMIO accesses of the library: 32-bit volatile loads and stores, each one
 * exit to ember. A file of their own so the host-side test can link a fake device in
 * their place (host/fake_virtio.c).
 */
#include "internal.h"

uint32_t mmio_read32(uint64_t addr)
{
	return *(volatile uint32_t *)(uintptr_t)addr;
}

void mmio_write32(uint64_t addr, uint32_t v)
{
	*(volatile uint32_t *)(uintptr_t)addr = v;
}
