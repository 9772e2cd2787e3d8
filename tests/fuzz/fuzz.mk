# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# libFuzzer harnesses (tests/fuzz, docs/FUZZING.md), included by the Makefile.
# The library, the daemon and the CLI are built again with clang and
# -fsanitize=fuzzer-no-link,address,undefined into $(OUTPUT)/fuzz/.
#
#   make fuzz-bins                  the harnesses (also built by make / make tests)
#   make fuzz [FUZZ_SECONDS=60]     fuzz each harness in turn; new inputs go to
#                                   $(OUTPUT)/fuzz/corpus/NAME, crashes to
#                                   $(OUTPUT)/fuzz/artifacts/
#   make fuzz FUZZ_TARGETS=rating   only some of them
#   make fuzz-merge                 minimize tests/fuzz/corpus/NAME with what
#                                   fuzzing found (regress-* seeds are kept)
# make check replays the committed corpora once (tests/fuzz/replay.sh).

FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_ALL := rating bucket path http jwt config prefix cli vlog feed demand httpparse
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_OUT := $(OUTPUT)/fuzz
FUZZ_BINS := $(patsubst %,$(FUZZ_OUT)/fuzz_%,$(FUZZ_ALL))

FUZZ_CFLAGS := -O1 -g $(COMMON_CFLAGS) -Iuserspace/agentgated -Iuserspace/agentgate -Itests/fuzz \
	-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_OBJ_CFLAGS := $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link

FUZZ_LIB_OBJS := $(patsubst %.c,$(FUZZ_OUT)/obj/%.o,$(LIB_SRCS))
FUZZ_D_OBJS := $(patsubst %.c,$(FUZZ_OUT)/obj/%.o,$(D_LIB_SRCS))
FUZZ_CLI_OBJS := $(patsubst %.c,$(FUZZ_OUT)/obj/%.o,$(CLI_SRCS))
FUZZ_LIBS := $(FUZZ_OUT)/libagentgated.a $(FUZZ_OUT)/libagentgate.a

# Per harness: what goes before the libraries. --wrap redirects a call
# between object files to the harness (simulated clock, no real attach).
FUZZ_LINK_bucket := -Wl,--wrap=ag_now_ns
FUZZ_LINK_path := -Wl,--wrap=ag_now_ns,--wrap=ag_tai_ns
FUZZ_LINK_jwt := -lcrypto
FUZZ_LINK_http := -ljwt # it mints its tokens with libjwt
FUZZ_LINK_cli := $(FUZZ_OUT)/libagentgate-cli.a \
	-Wl,--wrap=ag_now_ns,--wrap=nanosleep,--wrap=ag_attach,--wrap=ag_attach_with,--wrap=do_top \
	-Wl,--wrap=bpf_object__load_skeleton

.PHONY: fuzz fuzz-bins fuzz-merge
fuzz-bins: $(FUZZ_BINS)
tests: fuzz-bins

$(FUZZ_OUT)/obj/userspace/agentgated/%.o: FUZZ_OBJ_CFLAGS += -DAG_VERSION='"$(VERSION)"'
# The CLI's main() becomes a function the harness calls with fuzzed argv.
$(FUZZ_OUT)/obj/userspace/agentgate/main.o: FUZZ_OBJ_CFLAGS += -DAG_VERSION='"$(VERSION)"' \
	-Dmain=agentgate_main

$(FUZZ_OUT)/obj/%.o: %.c $(OUTPUT)/agentgate.skel.h
	$(call msg,CC-FUZZ,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(FUZZ_CC) $(FUZZ_OBJ_CFLAGS) -c $< -o $@

$(FUZZ_OUT)/libagentgate.a: $(FUZZ_LIB_OBJS)
$(FUZZ_OUT)/libagentgated.a: $(FUZZ_D_OBJS)
$(FUZZ_OUT)/libagentgate-cli.a: $(FUZZ_CLI_OBJS)
$(FUZZ_OUT)/libagentgate.a $(FUZZ_OUT)/libagentgated.a $(FUZZ_OUT)/libagentgate-cli.a:
	$(call msg,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(FUZZ_OUT)/fuzz_cli: $(FUZZ_OUT)/libagentgate-cli.a

$(FUZZ_BINS): $(FUZZ_OUT)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_LIBS)
	$(call msg,LINK-FUZZ,$@)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_LINK_$*) $(FUZZ_LIBS) -o $@ \
		$(D_LIBS) $(LIBS)

# Each harness in turn: the committed corpus is read, new inputs are written
# to the build directory only. A crash stops the run with its artifact; a
# harness error (exit 75, FUZZ_HARNESS_EXIT in fuzz.h: the harness's own
# machinery failed, not the product) stops it too, said as such.
# Shown: the start, the end (coverage, executions/s) and any report.
fuzz: deps
	$(Q)$(MAKE) --no-print-directory fuzz-bins
	$(Q)mkdir -p $(FUZZ_OUT)/artifacts; for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_OUT)/corpus/$$t; \
		echo "=== fuzz_$$t for $(FUZZ_SECONDS) s"; \
		dict=; [ -f tests/fuzz/fuzz_$$t.dict ] && dict=-dict=tests/fuzz/fuzz_$$t.dict; \
		{ $(FUZZ_OUT)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=20 -close_fd_mask=3 \
			-print_final_stats=1 $$dict -artifact_prefix=$(FUZZ_OUT)/artifacts/$$t- \
			$(FUZZ_OUT)/corpus/$$t tests/fuzz/corpus/$$t 2>&1; \
			echo $$? > $(FUZZ_OUT)/fuzz_$$t.rc; } | \
			grep -v -e '^#[0-9]*.*\(NEW\|REDUCE\|pulse\)' -e 'Uses: ' -e 'ecommended dictionary'; \
		rc=$$(cat $(FUZZ_OUT)/fuzz_$$t.rc); \
		if [ "$$rc" = 75 ]; then \
			echo "fuzz_$$t: harness error (exit 75), not a product failure: see above"; \
			exit 1; \
		elif [ "$$rc" != 0 ]; then \
			echo "fuzz_$$t failed (exit $$rc): the input is in $(FUZZ_OUT)/artifacts/"; exit 1; \
		fi; \
	done

# Minimize: the hand-written seeds (seed-*) and regression inputs
# (regress-*) stay; of the rest, committed and found, only the inputs that
# add coverage beyond them are kept (named by their SHA-1, as libFuzzer does).
fuzz-merge: fuzz-bins
	$(Q)for t in $(FUZZ_TARGETS); do \
		c=tests/fuzz/corpus/$$t; tmp=$$(mktemp -d) && mkdir -p $(FUZZ_OUT)/corpus/$$t && \
		cp $$c/seed-* $$c/regress-* $$tmp/ 2>/dev/null; \
		$(FUZZ_OUT)/fuzz_$$t -merge=1 -close_fd_mask=3 $$tmp $$c $(FUZZ_OUT)/corpus/$$t 2>&1 | \
			grep -E '^MERGE-OUTER: [0-9]+ new files'; \
		find $$c -type f ! -name 'seed-*' ! -name 'regress-*' -delete; \
		find $$tmp -type f ! -name 'seed-*' ! -name 'regress-*' -exec cp {} $$c/ \; ; \
		rm -rf $$tmp; \
		echo "fuzz_$$t: $$(ls $$c | wc -l) files, $$(du -sk $$c | cut -f1) KiB"; \
	done
