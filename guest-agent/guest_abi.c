/* The guest ABI's ports from ring 3 (ioperm), as include/ember_abi.h describes. */
#include <errno.h>
#include <sys/io.h>

#include "ember_abi.h"
#include "guest_abi.h"

int abi_open(void)
{
	return ioperm(EMBER_PORT_BASE, EMBER_PORT_COUNT, 1) ? -errno : 0;
}

uint64_t abi_generation(void)
{
	/* HI first, then LO: the host never changes it while a vCPU runs */
	uint64_t hi = inl(EMBER_PORT_GEN_HI);

	return hi << 32 | inl(EMBER_PORT_GEN_LO);
}

void abi_ready(void)
{
	outb(0, EMBER_PORT_READY);
}
