# The Linux guest kit (README.md, "Linux guests"): included by the top-level Makefile.
#
#   make linux-guest   build/linux-guest/{vmlinux,initramfs.cpio} from Debian packages

# the protocol code, also linked into the host unit test tests/unit/test_agent
AGENT_LIB_SRCS := guest-agent/proto.c guest-agent/handler.c guest-agent/config.c
AGENT_LIB_OBJS := $(AGENT_LIB_SRCS:%.c=$(B)/obj/%.o)
.SECONDARY: $(AGENT_LIB_OBJS)
$(B)/tests/unit/test_agent: $(AGENT_LIB_OBJS)

# The guest's programs: static (the initramfs has no libc), never sanitized.
LG := $(B)/linux-guest
AGENT_GUEST_CFLAGS := -std=gnu11 -O2 $(WARN) -D_GNU_SOURCE -Iinclude -static
AGENT_MAIN_SRCS := guest-agent/main.c guest-agent/reseed.c guest-agent/modules.c \
                   guest-agent/guest_abi.c $(AGENT_LIB_SRCS)
AGENT_HDRS := $(wildcard guest-agent/*.h) include/ember_abi.h

$(LG)/bin/ember-agent: $(AGENT_MAIN_SRCS) $(AGENT_HDRS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@ (static)")
	$(Q)$(CC) $(AGENT_GUEST_CFLAGS) -o $@ $(AGENT_MAIN_SRCS)

$(LG)/bin/ember-echo: guest-agent/echo.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@ (static)")
	$(Q)$(CC) $(AGENT_GUEST_CFLAGS) -o $@ $<

$(LG)/bin/ember-probe: guest-agent/probe.c guest-agent/guest_abi.c $(AGENT_HDRS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@ (static)")
	$(Q)$(CC) $(AGENT_GUEST_CFLAGS) -o $@ guest-agent/probe.c guest-agent/guest_abi.c

$(B)/tools/mkcpio: guest-agent/mkcpio.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) -std=gnu11 -O2 $(WARN) -D_GNU_SOURCE -o $@ $<

LINUX_GUEST_TOOLS := $(LG)/bin/ember-agent $(LG)/bin/ember-echo $(LG)/bin/ember-probe \
                     $(B)/tools/mkcpio

# Always runs the script: it fetches the kernel package once (cached in
# build/linux-guest-cache/) and rebuilds the initramfs from the programs above.
linux-guest: $(LINUX_GUEST_TOOLS)
	$(Q)scripts/build-linux-guest.sh $(LG) $(B)/tools/mkcpio

.PHONY: linux-guest

# its unit test runs the tool (order-only: not linked in)
$(B)/tests/unit/test_mkcpio: | $(B)/tools/mkcpio
# checks the agent's parsing against the command line ember writes
$(B)/tests/integration/test_linux_kit: $(B)/obj/guest-agent/config.o
