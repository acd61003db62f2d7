/*
 * The few struct boot_params (Linux zero page) fields the library reads, by
 * offset (see asm/bootparam.h), so the guest needs no kernel headers.
 */
#ifndef EMBER_GUEST_BOOTPARAMS_H
#define EMBER_GUEST_BOOTPARAMS_H

#define BP_ZERO_PAGE_SIZE   4096
#define BP_EXT_CMD_LINE_PTR 0x0c8 /* u32: bits 63:32 of the command line address */
#define BP_E820_ENTRIES     0x1e8 /* u8 */
#define BP_CMD_LINE_PTR     0x228 /* u32 */
#define BP_E820_TABLE       0x2d0 /* struct boot_e820_entry[128], packed, 20 bytes each */
#define BP_E820_MAX         128
#define E820_ENTRY_SIZE     20
#define E820_TYPE_RAM       1

#endif
