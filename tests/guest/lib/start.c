/*
 * Ring-3 start on the boot CPU: run the guest, then report DONE, so a guest that
 * simply returns from guest_main() has passed.
 */
#include "internal.h"

void lib_bsp_start(void)
{
	guest_main();
	guest_done();
}
