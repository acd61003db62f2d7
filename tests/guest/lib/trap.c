/*
 * Runs in ring 0 (emulated, ~1 us per instruction), but only on the way to a
 * failed run: turns an unexpected exception or interrupt into an ASSERT ucall the
 * host prints, rather than letting it escalate to a triple fault that ember would
 * report as a clean reset.
 */
#include "internal.h"
#include "layout.h"

static const char *const exception_names[32] = {
	"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS",
	"#NP", "#SS", "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
};

void trap_report(const struct trap_frame *f)
{
	struct ember_ucall uc;
	const char *name = "interrupt";
	unsigned cpu = guest_cpu_id();

	if (f->vector < 32)
		name = exception_names[f->vector] ? exception_names[f->vector] : "exception";
	memset(&uc, 0, sizeof(uc));
	uc.cmd = EMBER_UCALL_ASSERT;
	uc.line = (uint32_t)f->vector;
	uc.args[0] = f->vector;
	uc.args[1] = f->rip;
	strlcpy(uc.file, "exception", sizeof(uc.file));
	fmt_snprintf(uc.msg, sizeof(uc.msg),
		     "unexpected %s (vector %lu) on cpu %u in ring %lu: rip 0x%lx error 0x%lx "
		     "cr2 0x%lx rsp 0x%lx",
		     name, f->vector, cpu, f->cs & 3, f->rip, f->error, f->cr2, f->rsp);
	ucall_send(&uc);
	for (;;)
		__asm__ volatile("cli; hlt");
}
