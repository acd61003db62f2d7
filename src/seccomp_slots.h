/*
 * Shared by the build-time filter compiler (src/tools/seccomp-gen.c) and the loader
 * (src/seccomp.c). A filter compiled at build time cannot know the fd numbers a thread
 * may write to, so its `write` rule compares the fd with placeholder constants; the
 * loader copies the program and patches each placeholder with a real fd before the
 * prctl (unused slots repeat the first fd). The constants are far above any fd and any
 * other value the filters compare (syscall numbers, ioctl requests, flags).
 */
#ifndef EMBER_SECCOMP_SLOTS_H
#define EMBER_SECCOMP_SLOTS_H

#define SECCOMP_FD_PLACEHOLDER 0x5eccf000u
#define SECCOMP_FD_SLOTS 24
/* tgkill's thread group: ember's own process only, patched the same way */
#define SECCOMP_PID_PLACEHOLDER 0x5eccfe00u

#endif
