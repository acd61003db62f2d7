# Test guests (tests/guest/): freestanding x86-64 ELFs booted by ember.
# Included by the top-level Makefile. Built with the system gcc and their own
# flags: never $(CFLAGS) or $(SANFLAGS), which may carry sanitizers.

GUEST_DIR    := tests/guest
GUEST_OUT    := $(B)/guests
GUEST_OBJDIR := $(GUEST_OUT)/obj
GUEST_NAMES  := hello sandbox smp fpu state fn vqbad clock acpi
GUEST_CC     := gcc

GUEST_CFLAGS := -std=gnu11 -O2 -g -ffreestanding -nostdlib -static -fno-pie -fno-pic \
                -mno-red-zone -fno-stack-protector -fno-asynchronous-unwind-tables \
                -fno-tree-loop-distribute-patterns -mcmodel=small \
                -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-unused-parameter \
                -Wmissing-prototypes -Wstrict-prototypes -Wvla \
                -Iinclude -I$(GUEST_DIR)/lib -MMD -MP
GUEST_ASFLAGS := -I$(GUEST_DIR)/lib -MMD -MP -Wa,--fatal-warnings
GUEST_LDFLAGS := -nostdlib -static -no-pie -Wl,-T,$(GUEST_DIR)/guest.ld \
                 -Wl,--build-id=none -Wl,-z,noexecstack -Wl,-z,max-page-size=4096 \
                 -Wl,--fatal-warnings -Wl,--no-warn-rwx-segments

# The core (boot stub, ucalls, console, strings, ...) is linked whole into every guest;
# the optional modules come from an archive, so a guest carries them (and vsock's
# ~7 MiB of .bss buffers, which move the sandbox's heap) only when it calls them.
GUEST_LIB_OPT  := time heap virtio mmio vsock rng
GUEST_LIB_SRCS := $(filter-out $(GUEST_LIB_OPT:%=$(GUEST_DIR)/lib/%.c), \
                    $(wildcard $(GUEST_DIR)/lib/*.c $(GUEST_DIR)/lib/*.S))
GUEST_LIB_OBJS := $(patsubst $(GUEST_DIR)/%,$(GUEST_OBJDIR)/%.o,$(GUEST_LIB_SRCS))
GUEST_LIB_OPT_OBJS := $(GUEST_LIB_OPT:%=$(GUEST_OBJDIR)/lib/%.c.o)
GUEST_LIB_A    := $(GUEST_OUT)/libguest-opt.a
GUEST_ELFS     := $(GUEST_NAMES:%=$(GUEST_OUT)/%.elf)

.PHONY: guests
guests: $(GUEST_ELFS)

# Library code may run in ring 0 (trap_report and what it calls), where this
# platform's instruction emulator fails on SSE: keep the library to integer regs.
$(GUEST_OBJDIR)/lib/%.c.o: $(GUEST_DIR)/lib/%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  GUESTCC $<")
	$(Q)$(GUEST_CC) $(GUEST_CFLAGS) -mgeneral-regs-only -c -o $@ $<

$(GUEST_OBJDIR)/%.c.o: $(GUEST_DIR)/%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  GUESTCC $<")
	$(Q)$(GUEST_CC) $(GUEST_CFLAGS) -c -o $@ $<

$(GUEST_OBJDIR)/%.S.o: $(GUEST_DIR)/%.S
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  GUESTAS $<")
	$(Q)$(GUEST_CC) $(GUEST_ASFLAGS) -c -o $@ $<

$(GUEST_LIB_A): $(GUEST_LIB_OPT_OBJS)
	@$(if $(Q),echo "  GUESTAR $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(GUEST_OUT)/%.elf: $(GUEST_OBJDIR)/%.c.o $(GUEST_LIB_OBJS) $(GUEST_LIB_A) $(GUEST_DIR)/guest.ld
	@$(if $(Q),echo "  GUESTLD $@")
	$(Q)$(GUEST_CC) $(GUEST_LDFLAGS) -o $@ $< $(GUEST_LIB_OBJS) $(GUEST_LIB_A)

-include $(shell find $(GUEST_OBJDIR) -name '*.d' 2>/dev/null)

# keep the objects: they are intermediate files of the pattern rules above
.SECONDARY: $(GUEST_LIB_OBJS) $(GUEST_LIB_OPT_OBJS) $(GUEST_NAMES:%=$(GUEST_OBJDIR)/%.c.o)

# ---- host-side unit test of the library (parsing, e820, PVH boot info, format, hash,
# heap, and the virtio driver, virtio-rng and the vsock stack against fake devices) ----
# Built like the VMM's unit tests (host flags, sanitizers under SAN=1); the lib files
# it links have no port I/O or ring-0 code: host/fake_virtio.c stands in for mmio.c,
# the park ucall and the TSC.
GUEST_HOST_TEST := $(B)/tests/guest/test_guestlib
GUEST_HOST_TEST_OBJS := $(B)/obj/$(GUEST_DIR)/host/test_guestlib.o \
	$(B)/obj/$(GUEST_DIR)/host/test_fn.o $(B)/obj/$(GUEST_DIR)/host/fake_virtio.o \
	$(B)/obj/$(GUEST_DIR)/host/fn_guest.o $(B)/obj/$(GUEST_DIR)/host/test_pvh.o \
	$(patsubst %,$(B)/obj/$(GUEST_DIR)/lib/%.o,format cmdline e820 hash heap virtio vsock rng pvh)

# The fn guest itself, run on the host against the fake vsock device (host/test_fn.c):
# guest_main renamed, and the heap placed in memory the test maps below 4 GiB.
$(B)/obj/$(GUEST_DIR)/host/fn_guest.o: $(GUEST_DIR)/fn.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $< (host)")
	$(Q)$(CC) $(ALL_CFLAGS) -I$(GUEST_DIR)/lib -Dguest_main=fn_guest_main \
		-Dheap_place=fake_heap_place -c -o $@ $<

$(GUEST_HOST_TEST): $(GUEST_HOST_TEST_OBJS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(CRIT_LIBS)

.PHONY: guest-lib-test
guest-lib-test: $(GUEST_HOST_TEST)
	$(Q)$(GUEST_HOST_TEST)
