/* Loading the kernel modules the kit ships (virtio-mmio, vsock, virtio-rng). */
#ifndef EMBER_AGENT_MODULES_H
#define EMBER_AGENT_MODULES_H

/*
 * Loads each module named in the list file (one path a line, dependencies first, as
 * the kit's build wrote it from the modules' own depends= fields) with finit_module. A
 * module already loaded or built into the kernel is fine. ember_mmio.ko gets
 * mmio_params (agent_mmio_params; it is skipped when NULL). Returns how many failed.
 */
int modules_load(const char *list, const char *mmio_params);

#endif
