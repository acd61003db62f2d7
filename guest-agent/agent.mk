# The Linux guest kit (guest-agent/README.md): included by the top-level Makefile.
#
#   make linux-guest   build/linux-guest/{vmlinuz,initramfs.cpio} from Debian packages

# the protocol code, also linked into the host unit test tests/unit/test_agent
AGENT_LIB_SRCS := guest-agent/proto.c guest-agent/handler.c
AGENT_LIB_OBJS := $(AGENT_LIB_SRCS:%.c=$(B)/obj/%.o)
.SECONDARY: $(AGENT_LIB_OBJS)
$(B)/tests/unit/test_agent: $(AGENT_LIB_OBJS)
