/* The smallest guest: one line on the UART, ready, reset. Boot-latency probe. */
#include "guest.h"

void guest_main(void)
{
	serial_printf("hello from ember guest\n");
	guest_ready();
	guest_reset();
}
