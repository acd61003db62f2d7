# ember build. `make` builds the VMM, the snapshot tool and the test guests;
# `make test` / `make demo` / `make bench` first install missing build dependencies.
#
#   make SAN=1 ...   builds everything with -fsanitize=address,undefined into build-san/
#   make V=1 ...     shows the commands

VERSION := 0.1.0
CC      ?= gcc
SAN     ?= 0
ifeq ($(SAN),1)
B       ?= build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# sanitizer runtimes make syscalls the allowlists do not expect (src/seccomp.c)
SANDEFS  := -DEMBER_NO_SECCOMP
else ifeq ($(FUZZ),1)
# libFuzzer targets (fuzz/): clang, with ASan/UBSan, the library objects instrumented
B       ?= build-fuzz
CC      := clang
SANFLAGS := -fsanitize=address,undefined,fuzzer-no-link -fno-omit-frame-pointer \
            -fno-sanitize-recover=undefined
SANDEFS  := -DEMBER_NO_SECCOMP
else
B       ?= build
SANFLAGS :=
endif

ifeq ($(V),1)
Q :=
else
Q := @
endif

WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-unused-parameter \
           -Wmissing-prototypes -Wstrict-prototypes -Wvla
ifeq ($(FUZZ),1)
# kvm.h's flexible-array headers in wrapper structs and libseccomp's SCMP_A* macros:
# fine with gcc, warnings with clang
WARN    += -Wno-gnu-variable-sized-type-not-at-end -Wno-missing-field-initializers
endif
CFLAGS  ?= -O2 -g
ALL_CFLAGS = -std=gnu11 $(CFLAGS) $(WARN) $(SANFLAGS) $(SANDEFS) -D_GNU_SOURCE \
              -DEMBER_VERSION='"$(VERSION)"' -Iinclude -Isrc -Isnapshot-format -MMD -MP \
              $(PKG_CFLAGS)
# Library flags come from pkg-config (Debian 12's .pc names). Looked up when a rule first
# needs them, not when make starts, so that `make deps` can install what is missing; a
# missing package stops the build with its name.
PKG_CONFIG ?= pkg-config
# $(call pkgconf,--cflags|--libs,PACKAGES)
pkgconf = $(call pkgcheck,$(shell $(PKG_CONFIG) $(1) $(2) 2>/dev/null || echo PKGCONF-FAILED),$(2))
pkgcheck = $(if $(filter PKGCONF-FAILED,$(1)),$(error pkg-config finds no $(shell for p in $(2); do \
	$(PKG_CONFIG) --exists $$p || printf '%s ' $$p; done)(no .pc file: install its -dev \
	package, e.g. `make deps`)),$(1))
# computed once, on first use
lazy = $(eval $(1) := $(2))$($(1))
EMBER_PKGS := liburing libseccomp liblz4 msgpack
PKG_CFLAGS = $(call lazy,PKG_CFLAGS,$(call pkgconf,--cflags,$(EMBER_PKGS)))
PKG_LIBS = $(call lazy,PKG_LIBS,$(call pkgconf,--libs,$(EMBER_PKGS)))
CRIT_CFLAGS = $(call lazy,CRIT_CFLAGS,$(call pkgconf,--cflags,criterion))
CRIT_LIBS = $(call lazy,CRIT_LIBS,$(call pkgconf,--libs,criterion))
SECCOMP_LIBS = $(call lazy,SECCOMP_LIBS,$(call pkgconf,--libs,libseccomp))
# The four libraries linked statically: a smaller dynamic-loader bill on every
# `ember restore`. Criterion stays dynamic (its static closure is a dozen libraries).
LIBS_STATIC = -Wl,-Bstatic $(PKG_LIBS) -Wl,-Bdynamic
LDLIBS  = $(LIBS_STATIC) -lpthread
LDFLAGS ?=
ALL_LDFLAGS := $(LDFLAGS) $(SANFLAGS)

# ---- sources -------------------------------------------------------------------
EMBER_MAIN := src/main.c
EMBER_SRCS := $(filter-out $(EMBER_MAIN),$(wildcard src/*.c src/arch/x86_64/*.c src/dev/*.c \
                src/paging/*.c))
SNAP_MAIN  := snapshot-format/ember-snap.c
SNAP_SRCS  := $(filter-out $(SNAP_MAIN),$(wildcard snapshot-format/*.c))

EMBER_OBJS := $(EMBER_SRCS:%.c=$(B)/obj/%.o) $(B)/obj/gen/seccomp_bpf.o
SNAP_OBJS  := $(SNAP_SRCS:%.c=$(B)/obj/%.o)
LIBEMBER   := $(B)/libember.a
LIBSNAP    := $(B)/libsnapfmt.a

UNIT_SRCS  := $(wildcard tests/unit/test_*.c)
INTEG_SRCS := $(wildcard tests/integration/test_*.c)
TEST_LIB_SRCS := $(wildcard tests/lib/*.c)
# the guests' checksum, so host tests can recompute what a guest answers
TEST_LIB_OBJS := $(TEST_LIB_SRCS:%.c=$(B)/obj/%.o) $(B)/obj/tests/guest/lib/hash.o
# tests include "testlib.h" from any directory
$(B)/obj/tests/%.o: ALL_CFLAGS += -Itests/lib $(CRIT_CFLAGS)
# only pattern rules name these objects: keep make from deleting them as intermediates
.SECONDARY: $(TEST_LIB_OBJS) $(UNIT_SRCS:%.c=$(B)/obj/%.o) $(INTEG_SRCS:%.c=$(B)/obj/%.o)
UNIT_BINS  := $(UNIT_SRCS:tests/unit/%.c=$(B)/tests/unit/%)
INTEG_BINS := $(INTEG_SRCS:tests/integration/%.c=$(B)/tests/integration/%)

BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(B)/bench/%)

.PHONY: all test unit integration demo bench clean deps guests tests fuzz fuzz-bins

# `make` alone builds everything; guest.mk's rules would otherwise be the default
.DEFAULT_GOAL := all

# ---- test guests (freestanding, never sanitized) -----------------------------------
include tests/guest/guest.mk
# ---- the Linux guest kit: `make linux-guest` --------------------------------------
include guest-agent/agent.mk

all: $(B)/ember $(B)/ember-snap guests

deps:
	$(Q)scripts/install-deps.sh

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

# seccomp filters, compiled with libseccomp at build time (src/tools/seccomp-gen.c)
$(B)/tools/seccomp-gen: src/tools/seccomp-gen.c src/seccomp_slots.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) -std=gnu11 -O2 $(WARN) -o $@ $< $(SECCOMP_LIBS)

# make SECCOMP_LOG=1 B=build-log: filters that log (dmesg) instead of killing, to find
# what a new code path needs (src/tools/seccomp-gen.c); never for production
$(B)/gen/seccomp_bpf.c: $(B)/tools/seccomp-gen
	@mkdir -p $(dir $@)
	$(Q)$< $(if $(filter 1,$(SECCOMP_LOG)),--log) $@

$(B)/obj/gen/seccomp_bpf.o: $(B)/gen/seccomp_bpf.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LIBEMBER): $(EMBER_OBJS)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIBSNAP): $(SNAP_OBJS)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(B)/ember: $(B)/obj/$(EMBER_MAIN:.c=.o) $(LIBEMBER) $(LIBSNAP)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

# libember only for the device validators (dev_state.o and what it needs)
$(B)/ember-snap: $(B)/obj/$(SNAP_MAIN:.c=.o) $(LIBEMBER) $(LIBSNAP)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

# ---- tests ---------------------------------------------------------------------
$(B)/tests/unit/%: $(B)/obj/tests/unit/%.o $(TEST_LIB_OBJS) $(LIBEMBER) $(LIBSNAP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS) $(CRIT_LIBS)

$(B)/tests/integration/%: $(B)/obj/tests/integration/%.o $(TEST_LIB_OBJS) $(LIBEMBER) $(LIBSNAP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS) $(CRIT_LIBS)

# Tests of the KVM calls ember makes (order, arguments): in these binaries only, ioctl is
# wrapped at link time and tests/wrap/ioctl_rec.c records each call before passing it on
# to the real KVM. ember's code calls ioctl directly: production builds pay nothing.
IOCTL_REC_TESTS := $(B)/tests/unit/test_kvm_calls $(B)/tests/unit/test_cpu_state
IOCTL_REC_OBJ   := $(B)/obj/tests/wrap/ioctl_rec.o
.SECONDARY: $(IOCTL_REC_OBJ)
$(IOCTL_REC_TESTS): $(IOCTL_REC_OBJ)
$(IOCTL_REC_TESTS): ALL_LDFLAGS += -Wl,--wrap=ioctl
$(IOCTL_REC_TESTS:$(B)/tests/%=$(B)/obj/tests/%.o): ALL_CFLAGS += -Itests/wrap

# the bench programs too: test_bench_run runs a short bench
tests: all $(UNIT_BINS) $(INTEG_BINS) $(GUEST_HOST_TEST) $(BENCH_BINS)

test: deps
	$(Q)$(MAKE) --no-print-directory tests
	$(Q)EMBER_BUILD=$(B) scripts/run-tests.sh $(UNIT_BINS) $(GUEST_HOST_TEST) $(INTEG_BINS)

unit: all $(UNIT_BINS) $(GUEST_HOST_TEST)
	$(Q)EMBER_BUILD=$(B) scripts/run-tests.sh $(UNIT_BINS) $(GUEST_HOST_TEST)

integration: all $(INTEG_BINS) $(BENCH_BINS)
	$(Q)EMBER_BUILD=$(B) scripts/run-tests.sh $(INTEG_BINS)

# ---- demo and bench ----------------------------------------------------------------
demo: deps
	$(Q)$(MAKE) --no-print-directory all $(B)/bench/pool_load
	$(Q)EMBER_BUILD=$(B) scripts/demo.sh

$(B)/bench/%: bench/%.c $(LIBSNAP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $(filter-out %.h,$^) $(LDLIBS)

# bench programs that measure ember's own layers (the page server) link libember too
BENCH_EMBER_BINS := $(B)/bench/pager_micro $(B)/bench/vsock_client $(B)/bench/pool_load \
                    $(B)/bench/warm
$(BENCH_EMBER_BINS): $(B)/bench/%: bench/%.c $(LIBEMBER) $(LIBSNAP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $(filter-out %.h,$^) $(LDLIBS)

# the bench programs' shared headers (their .d files are not under obj/)
$(BENCH_BINS): bench/bench.h bench/floor_vm.h

bench:
	$(Q)scripts/install-deps.sh bench
	$(Q)$(MAKE) --no-print-directory all $(BENCH_BINS)
	$(Q)EMBER_BUILD=$(B) bench/run.sh

# ---- fuzzing (fuzz/README.md) -------------------------------------------------------
# `make fuzz [FUZZ_TIME=S]` builds the libFuzzer targets with clang + ASan/UBSan into
# build-fuzz/ and runs each for FUZZ_TIME seconds from the checked-in seeds.
FUZZ_TARGETS := $(patsubst fuzz/fuzz_%.c,%,$(filter-out fuzz/fuzz_common.c fuzz/fuzz_fixture.c,\
                  $(wildcard fuzz/fuzz_*.c)))
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(B)/fuzz/fuzz_%)
FUZZ_TIME    ?= 60

$(B)/fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_common.c fuzz/fuzz_fixture.c fuzz/fuzz.h $(LIBEMBER) $(LIBSNAP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)$(CC) $(filter-out -MMD -MP,$(ALL_CFLAGS)) -Ifuzz -DFUZZ_DATA_DIR='"$(CURDIR)/fuzz/data"' \
		-fsanitize=fuzzer $(ALL_LDFLAGS) -o $@ $(filter %.c,$^) $(LIBEMBER) $(LIBSNAP) $(LDLIBS)

fuzz-bins: $(FUZZ_BINS)

fuzz:
	$(Q)scripts/install-deps.sh fuzz
	$(Q)$(MAKE) --no-print-directory FUZZ=1 fuzz-bins
	$(Q)FUZZ_BUILD=build-fuzz FUZZ_TIME=$(FUZZ_TIME) scripts/fuzz.sh $(FUZZ_TARGETS)

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
