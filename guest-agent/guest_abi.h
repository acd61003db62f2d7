/*
 * The guest ABI (include/ember_abi.h) from a Linux process: its ports through ioperm,
 * the VM generation, the ready signal.
 */
#ifndef EMBER_AGENT_GUEST_ABI_H
#define EMBER_AGENT_GUEST_ABI_H

#include <stdint.h>

/* ioperm on ember's port range: 0 or -errno (EPERM without CAP_SYS_RAWIO). */
int abi_open(void);
/* The VM generation: 0 on a cold boot, fresh on every restore and reset. */
uint64_t abi_generation(void);
/* "initialisation finished": ember takes the golden snapshot here. */
void abi_ready(void);

#endif
