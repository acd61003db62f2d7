/*
 * Ring-3 start on the boot CPU: run the guest, then report DONE, so a guest that
 * simply returns from guest_main() has passed.
 */
#include "internal.h"

void lib_bsp_start(void)
{
	if (pvh_start_info_gpa)
		pvh_boot_init(); /* boot information from hvm_start_info, not boot_params */
	guest_main();
	guest_done();
}
