# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# agentgate build. Everything goes to $(OUTPUT) (default build/); V=1 shows
# the commands. Targets: all (default), check, demo, run IFACE=DEV, bench
# (and bench-xdp, -peers, -accuracy, -ratings, -consume, -scale, -stream, -fleet,
# -trafficgen, -front), install (PREFIX, DESTDIR), uninstall, clean.

OUTPUT ?= build
CLANG ?= clang
BPFTOOL ?= bpftool
CC ?= gcc
AR ?= ar

ifeq ($(V),1)
Q =
msg =
else
Q = @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null)

# The BPF program needs only uapi headers (see bpf/agentgate.bpf.c), found
# under the multiarch include dir for <asm/types.h>.
BPF_CFLAGS := -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_$(ARCH) \
	-Wall -Werror -Iinclude -Ibpf -I/usr/include/$(MULTIARCH)

CFLAGS ?= -O2 -g
COMMON_CFLAGS := -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
	-Wno-missing-field-initializers \
	-Iinclude -Iuserspace/lib -I$(OUTPUT) -MMD -MP
LIBS := -lbpf -lelf -lz -lpthread -lm

SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

.DELETE_ON_ERROR:
.PHONY: all check bench clean deps test demo run install uninstall

VERSION := $(shell git describe --always --dirty 2>/dev/null || echo 0.1.0)

all: $(OUTPUT)/libagentgate.a $(OUTPUT)/agentgate $(OUTPUT)/agentgated $(OUTPUT)/agentgate.8 \
	tests bench-bins

# ---- BPF objects and skeletons ----------------------------------------

BPF_SRCS := bpf/agentgate.bpf.c bench/empty.bpf.c lab/trafficgen.bpf.c
BPF_OBJS := $(patsubst %.bpf.c,$(OUTPUT)/%.bpf.o,$(BPF_SRCS))

$(OUTPUT)/%.bpf.o: %.bpf.c | $(OUTPUT)
	$(call msg,BPF,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(BPF_CFLAGS) -MMD -MP -c $< -o $@

$(OUTPUT)/agentgate.skel.h: $(OUTPUT)/bpf/agentgate.bpf.o
	$(call msg,GEN-SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name agentgate_bpf > $@

$(OUTPUT)/empty.skel.h: $(OUTPUT)/bench/empty.bpf.o
	$(call msg,GEN-SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name empty_bpf > $@

$(OUTPUT)/trafficgen.skel.h: $(OUTPUT)/lab/trafficgen.bpf.o
	$(call msg,GEN-SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name trafficgen_bpf > $@

# ---- userspace library (plain and sanitized builds) --------------------

LIB_SRCS := $(wildcard userspace/lib/*.c)
LIB_OBJS := $(patsubst %.c,$(OUTPUT)/obj/%.o,$(LIB_SRCS))
LIB_SAN_OBJS := $(patsubst %.c,$(OUTPUT)/san/%.o,$(LIB_SRCS))

$(OUTPUT)/obj/%.o: %.c $(OUTPUT)/agentgate.skel.h
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(COMMON_CFLAGS) -c $< -o $@

$(OUTPUT)/san/%.o: %.c $(OUTPUT)/agentgate.skel.h
	$(call msg,CC-SAN,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(COMMON_CFLAGS) $(SAN_FLAGS) -c $< -o $@

$(OUTPUT)/libagentgate.a: $(LIB_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(OUTPUT)/libagentgate-san.a: $(LIB_SAN_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

# ---- the CLI --------------------------------------------------------

CLI_SRCS := $(wildcard userspace/agentgate/*.c)
CLI_OBJS := $(patsubst %.c,$(OUTPUT)/obj/%.o,$(CLI_SRCS))
CLI_SAN_OBJS := $(patsubst %.c,$(OUTPUT)/san/%.o,$(CLI_SRCS))

$(OUTPUT)/obj/userspace/agentgate/main.o $(OUTPUT)/san/userspace/agentgate/main.o: \
	CFLAGS += -DAG_VERSION='"$(VERSION)"'

# jansson: the control socket's requests and answers (owner.c).
CLI_LIBS := -ljansson

# agent explain with no daemon running reads the state store read-only,
# with the daemon's own code for it (explain.c and what it needs).
CLI_D_SRCS := userspace/agentgated/core/explain.c userspace/agentgated/core/store.c \
	userspace/agentgated/core/store_check.c userspace/agentgated/core/policy.c \
	userspace/agentgated/core/err.c userspace/agentgated/core/feed.c \
	userspace/agentgated/core/jsonguard.c
CLI_D_OBJS := $(patsubst %.c,$(OUTPUT)/obj/%.o,$(CLI_D_SRCS))
CLI_D_SAN_OBJS := $(patsubst %.c,$(OUTPUT)/san/%.o,$(CLI_D_SRCS))
CLI_LIBS += -llmdb

$(OUTPUT)/agentgate: $(CLI_OBJS) $(CLI_D_OBJS) $(OUTPUT)/libagentgate.a
	$(call msg,LINK,$@)
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(LIBS) $(CLI_LIBS)

# The CLI built with sanitizers, for the CLI tests.
$(OUTPUT)/agentgate-san: $(CLI_SAN_OBJS) $(CLI_D_SAN_OBJS) $(OUTPUT)/libagentgate-san.a
	$(call msg,LINK,$@)
	$(Q)$(CC) $(CFLAGS) $(SAN_FLAGS) $^ -o $@ $(LIBS) $(CLI_LIBS)

# The manual page is generated from the command table; docs/agentgate.8 is
# the committed copy, checked against it by make check.
$(OUTPUT)/agentgate.8: $(OUTPUT)/agentgate
	$(call msg,MAN,$@)
	$(Q)$< --man > $@

.PHONY: man
man: $(OUTPUT)/agentgate.8
	$(Q)cp $< docs/agentgate.8

# ---- the daemon ------------------------------------------------------
# One folder a part (docs/ARCHITECTURE.md): core/, api/, ingest/, fleet/,
# process/; a part includes another's headers as "part/x.h". Its modules go
# into libagentgated(-san).a too, for the unit tests.

D_SRCS := $(wildcard userspace/agentgated/*/*.c)
D_MAIN := userspace/agentgated/process/main.c
D_LIB_SRCS := $(filter-out $(D_MAIN),$(D_SRCS))
D_OBJS := $(patsubst %.c,$(OUTPUT)/obj/%.o,$(D_LIB_SRCS))
D_SAN_OBJS := $(patsubst %.c,$(OUTPUT)/san/%.o,$(D_LIB_SRCS))
D_LIBS := -ljansson -llmdb -lnats -lcurl -lssl -lcrypto

$(OUTPUT)/obj/userspace/agentgated/%.o $(OUTPUT)/san/userspace/agentgated/%.o: \
	CFLAGS += -DAG_VERSION='"$(VERSION)"' -Iuserspace/agentgated

$(OUTPUT)/libagentgated.a: $(D_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(OUTPUT)/libagentgated-san.a: $(D_SAN_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(OUTPUT)/agentgated: $(OUTPUT)/obj/userspace/agentgated/process/main.o $(OUTPUT)/libagentgated.a \
		$(OUTPUT)/libagentgate.a
	$(call msg,LINK,$@)
	$(Q)$(CC) $(CFLAGS) $^ -o $@ $(D_LIBS) $(LIBS)

# The daemon built with sanitizers, for the daemon tests.
$(OUTPUT)/agentgated-san: $(OUTPUT)/san/userspace/agentgated/process/main.o \
		$(OUTPUT)/libagentgated-san.a $(OUTPUT)/libagentgate-san.a
	$(call msg,LINK,$@)
	$(Q)$(CC) $(CFLAGS) $(SAN_FLAGS) $^ -o $@ $(D_LIBS) $(LIBS)

# ---- tests (sanitized) ----------------------------------------------

TEST_BINS := $(OUTPUT)/tests/test_xdp $(OUTPUT)/tests/test_path $(OUTPUT)/tests/test_concurrency \
	$(OUTPUT)/tests/test_attach $(OUTPUT)/tests/test_wire $(OUTPUT)/tests/test_gcra \
	$(OUTPUT)/tests/test_lib $(OUTPUT)/tests/test_policy $(OUTPUT)/tests/test_rating \
	$(OUTPUT)/tests/test_fleet $(OUTPUT)/tests/test_hist $(OUTPUT)/tests/test_voices \
	$(OUTPUT)/tests/test_intake $(OUTPUT)/tests/test_feed $(OUTPUT)/tests/test_server \
	$(OUTPUT)/tests/test_dedup

.PHONY: tests
tests: $(TEST_BINS) $(OUTPUT)/agentgate-san $(OUTPUT)/agentgated-san $(OUTPUT)/examples/local_consume

$(OUTPUT)/tests/test_xdp: tests/bpf/test_xdp.c tests/bpf/fixtures.h $(OUTPUT)/libagentgate-san.a
$(OUTPUT)/tests/test_path: tests/bpf/test_path.c $(OUTPUT)/libagentgate-san.a
$(OUTPUT)/tests/test_concurrency: tests/bpf/test_concurrency.c $(OUTPUT)/libagentgate-san.a
$(OUTPUT)/tests/test_attach: tests/bpf/test_attach.c $(OUTPUT)/libagentgate-san.a
$(OUTPUT)/tests/test_wire: tests/bpf/test_wire.c $(OUTPUT)/libagentgate-san.a
$(OUTPUT)/tests/test_gcra: tests/unit/test_gcra.c $(OUTPUT)/libagentgate-san.a
$(OUTPUT)/tests/test_lib: tests/unit/test_lib.c $(OUTPUT)/libagentgate-san.a
$(OUTPUT)/tests/test_policy: tests/unit/test_policy.c $(OUTPUT)/libagentgated-san.a \
	$(OUTPUT)/libagentgate-san.a
$(OUTPUT)/tests/test_rating: tests/unit/test_rating.c $(OUTPUT)/libagentgated-san.a \
	$(OUTPUT)/libagentgate-san.a
$(OUTPUT)/tests/test_fleet: tests/unit/test_fleet.c $(OUTPUT)/libagentgated-san.a \
	$(OUTPUT)/libagentgate-san.a
$(OUTPUT)/tests/test_hist: tests/unit/test_hist.c $(OUTPUT)/libagentgated-san.a \
	$(OUTPUT)/libagentgate-san.a
$(OUTPUT)/tests/test_voices: tests/unit/test_voices.c $(OUTPUT)/libagentgated-san.a \
	$(OUTPUT)/libagentgate-san.a
$(OUTPUT)/tests/test_intake: tests/unit/test_intake.c $(OUTPUT)/libagentgated-san.a \
	$(OUTPUT)/libagentgate-san.a
$(OUTPUT)/tests/test_feed: tests/unit/test_feed.c $(OUTPUT)/libagentgated-san.a \
	$(OUTPUT)/libagentgate-san.a
$(OUTPUT)/tests/test_server: tests/unit/test_server.c $(OUTPUT)/libagentgated-san.a \
	$(OUTPUT)/libagentgate-san.a
$(OUTPUT)/tests/test_dedup: tests/unit/test_dedup.c $(OUTPUT)/libagentgated-san.a \
	$(OUTPUT)/libagentgate-san.a

$(TEST_BINS):
	$(call msg,CC-TEST,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(COMMON_CFLAGS) $(SAN_FLAGS) -Itests/lib -Iuserspace/agentgated \
		$(filter %.c,$^) $(filter %agentgated-san.a,$^) $(OUTPUT)/libagentgate-san.a \
		-o $@ $(LIBS) $(D_LIBS) -lcmocka

include tests/fuzz/fuzz.mk

# ---- benchmarks -------------------------------------------------------

BENCH_BINS := $(OUTPUT)/bench/xdp_cost $(OUTPUT)/bench/cli_scale $(OUTPUT)/bench/rating_parse \
	$(OUTPUT)/ag-trafficgen $(OUTPUT)/bench/agents_fill $(OUTPUT)/bench/consume \
	$(OUTPUT)/bench/sweep_cost $(OUTPUT)/bench/voices_cost $(OUTPUT)/bench/consume_local \
	$(OUTPUT)/bench/feed_swap $(OUTPUT)/bench/fleet_sim \
	$(OUTPUT)/examples/local_consume

.PHONY: bench-bins
bench-bins: $(BENCH_BINS)

$(OUTPUT)/bench/xdp_cost: bench/xdp_cost.c $(OUTPUT)/empty.skel.h $(OUTPUT)/libagentgate.a
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(COMMON_CFLAGS) $< $(OUTPUT)/libagentgate.a -o $@ $(LIBS)

# The lab's traffic generator (lab/: the demo, the tests, the benchmarks):
# engines live (XDP live frames) and packet (AF_PACKET).
TG_SRCS := lab/trafficgen.c lab/tx_live.c lab/tx_packet.c
$(OUTPUT)/ag-trafficgen: $(TG_SRCS) lab/tg.h lab/trafficgen.h $(OUTPUT)/trafficgen.skel.h
	$(call msg,CC,$@)
	$(Q)$(CC) $(CFLAGS) $(COMMON_CFLAGS) -Ilab $(TG_SRCS) -o $@ -lbpf -lelf -lz -lpthread -lm

$(OUTPUT)/bench/cli_scale $(OUTPUT)/bench/agents_fill $(OUTPUT)/bench/consume_local: \
		$(OUTPUT)/bench/%: bench/%.c $(OUTPUT)/libagentgate.a
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(COMMON_CFLAGS) $< $(OUTPUT)/libagentgate.a -o $@ $(LIBS)

# The example of docs/LOCAL.md: an application consuming from a bucket
# through libagentgate, built as an application outside the tree would be.
$(OUTPUT)/examples/local_consume: examples/local_consume.c $(OUTPUT)/libagentgate.a
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) -Iuserspace/lib -Iinclude $< $(OUTPUT)/libagentgate.a -o $@ $(LIBS)

# The consume-check load client (HTTP and RESP): no library of the project.
$(OUTPUT)/bench/consume: bench/consume.c
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(COMMON_CFLAGS) $< -o $@

$(OUTPUT)/bench/rating_parse $(OUTPUT)/bench/sweep_cost $(OUTPUT)/bench/voices_cost \
		$(OUTPUT)/bench/feed_swap: \
		$(OUTPUT)/bench/%: bench/%.c bench/engine_bench.h \
		$(OUTPUT)/libagentgated.a $(OUTPUT)/libagentgate.a
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(COMMON_CFLAGS) -Iuserspace/agentgated $< $(OUTPUT)/libagentgated.a \
		$(OUTPUT)/libagentgate.a -o $@ $(D_LIBS) $(LIBS)

# Demand sharing at fleet scale: simulated hosts running fleet/demand_host.c.
$(OUTPUT)/bench/fleet_sim: bench/fleet_sim.c $(OUTPUT)/libagentgated.a $(OUTPUT)/libagentgate.a
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(COMMON_CFLAGS) -Iuserspace/agentgated $< $(OUTPUT)/libagentgated.a \
		$(OUTPUT)/libagentgate.a -o $@ $(D_LIBS) $(LIBS)

# ---- entry points -----------------------------------------------------

$(OUTPUT):
	$(Q)mkdir -p $@

deps:
	$(Q)scripts/deps.sh

# make check: install what is missing, build, run every test suite.
check: deps
	$(Q)$(MAKE) --no-print-directory all check-man
	$(Q)tests/run.sh $(OUTPUT)

# The committed manual page must be what the command table renders. The
# daemon's page is prose; its option table (process/config.c) holds it to
# each option's name, argument, default, bounds and reload class.
.PHONY: check-man
check-man: $(OUTPUT)/agentgate.8 $(OUTPUT)/agentgated
	$(Q)cmp -s $< docs/agentgate.8 || { echo "docs/agentgate.8 is stale: run 'make man'" >&2; exit 1; }
	$(Q)$(OUTPUT)/agentgated --check-man docs/agentgated.8 >/dev/null || \
		{ echo "docs/agentgated.8 disagrees with agentgated's option table (above)" >&2; exit 1; }
	$(Q)for o in $$($(OUTPUT)/agentgated --help | grep -o -- '--[a-z-]*' | sort -u); do \
		grep -q -- "$$(echo $$o | sed 's/-/\\\\-/g')" docs/agentgated.8 || \
		{ echo "docs/agentgated.8 does not document $$o" >&2; exit 1; }; done

test: all
	$(Q)tests/run.sh $(OUTPUT)

# make bench: every benchmark (docs/BENCHMARKS.md), 10-15 minutes and about
# 30 more for bench-front; each one alone: make bench-xdp, bench-peers,
# bench-accuracy, bench-ratings, bench-consume, bench-scale, bench-stream,
# bench-fleet, bench-trafficgen, bench-front. BENCH_ARGS passes options to a
# single one.
BENCH_ONE := bench-xdp bench-peers bench-accuracy bench-ratings bench-consume bench-scale \
	bench-stream bench-fleet bench-trafficgen bench-front
.PHONY: bench-prep $(BENCH_ONE)

bench: bench-prep
	$(Q)bench/run.sh $(OUTPUT)
	$(Q)bench/peers.sh $(OUTPUT)
	$(Q)bench/accuracy.sh $(OUTPUT)
	$(Q)bench/ratings.sh $(OUTPUT)
	$(Q)bench/consume.sh $(OUTPUT)
	$(Q)bench/scale.sh $(OUTPUT)
	$(Q)bench/stream.py $(OUTPUT)
	$(Q)bench/fleet.py $(OUTPUT)
	$(Q)bench/fleet_sim.sh $(OUTPUT)
	$(Q)bench/fleet_sim.sh $(OUTPUT) --cluster
	$(Q)bench/trafficgen.sh $(OUTPUT)
	$(Q)bench/front.sh $(OUTPUT)

bench-prep: deps
	$(Q)$(MAKE) --no-print-directory bench-bins $(OUTPUT)/agentgate $(OUTPUT)/agentgated

bench-xdp: bench-prep
	$(Q)bench/run.sh $(OUTPUT) $(BENCH_ARGS)
bench-peers: bench-prep
	$(Q)bench/peers.sh $(OUTPUT) $(BENCH_ARGS)
bench-accuracy: bench-prep
	$(Q)bench/accuracy.sh $(OUTPUT) $(BENCH_ARGS)
bench-ratings: bench-prep
	$(Q)bench/ratings.sh $(OUTPUT) $(BENCH_ARGS)
bench-consume: bench-prep
	$(Q)bench/consume.sh $(OUTPUT) $(BENCH_ARGS)
bench-scale: bench-prep
	$(Q)bench/scale.sh $(OUTPUT) $(BENCH_ARGS)
bench-stream: bench-prep
	$(Q)bench/stream.py $(OUTPUT) $(BENCH_ARGS)
bench-fleet: bench-prep
	$(Q)bench/fleet.py $(OUTPUT) $(BENCH_ARGS)
bench-trafficgen: bench-prep
	$(Q)bench/trafficgen.sh $(OUTPUT) $(BENCH_ARGS)
# HTTP/1.1 fronts: agentgated's against H2O, libmicrohttpd, evhttp, CivetWeb
# (their -dev packages installed by bench/front.sh itself).
bench-front: bench-prep
	$(Q)bench/front.sh $(OUTPUT) $(BENCH_ARGS)
.PHONY: bench-fleet-sim
bench-fleet-sim: bench-prep
	$(Q)bench/fleet_sim.sh $(OUTPUT) $(BENCH_ARGS)

# make demo: the whole mission on one machine (scripts/demo.sh), in under 90 s.
demo: deps
	$(Q)$(MAKE) --no-print-directory $(OUTPUT)/agentgate $(OUTPUT)/agentgated $(OUTPUT)/ag-trafficgen
	$(Q)scripts/demo.sh $(OUTPUT)

# make run IFACE=eth0: agentgated on a real NIC with the documented defaults
# (pins /sys/fs/bpf/agentgate, state /var/lib/agentgate, API 127.0.0.1:9470);
# RUN_ARGS adds options. Ctrl-C stops it; the XDP program stays attached
# (agentgate detach IFACE removes it).
run: $(OUTPUT)/agentgated
	$(Q)if [ -z "$(IFACE)" ]; then echo "usage: make run IFACE=DEV [RUN_ARGS='--auth-key-file F ...']" >&2; exit 2; fi
	$(Q)if [ ! -e /sys/class/net/$(IFACE) ]; then echo "make run: no interface '$(IFACE)'" >&2; exit 2; fi
	$(OUTPUT)/agentgated --attach $(IFACE) $(RUN_ARGS)

# make install [PREFIX=/usr/local] [DESTDIR=]: the two binaries (the BPF
# object is inside them), man pages, the example config (kept if present),
# the systemd unit (its ExecStart follows PREFIX), the Grafana dashboard and
# the Prometheus alert rules. Without DESTDIR it also creates the daemon's
# system account, agentgate (no login shell), when missing; a package does
# that in its postinst.
PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share/agentgate
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
# libagentgate for applications on the host (docs/LOCAL.md): the static
# library, its two headers and a pkg-config file.
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig

install: $(OUTPUT)/agentgate $(OUTPUT)/agentgated $(OUTPUT)/libagentgate.a
	$(call msg,INSTALL,$(DESTDIR)$(PREFIX))
	$(Q)install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR)/agentgate $(DESTDIR)$(PKGCONFIGDIR)
	$(Q)install -m 0644 $(OUTPUT)/libagentgate.a $(DESTDIR)$(LIBDIR)/
	$(Q)install -m 0644 userspace/lib/agentgate.h $(DESTDIR)$(INCLUDEDIR)/
	$(Q)install -m 0644 include/agentgate/abi.h $(DESTDIR)$(INCLUDEDIR)/agentgate/
	$(Q)printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' '' \
		'Name: agentgate' \
		'Description: agentgate pinned maps from an application (ag_consume: docs/LOCAL.md)' \
		'Version: $(VERSION)' 'Cflags: -I$${includedir}' \
		'Libs: -L$${libdir} -lagentgate -lbpf -lelf -lz -lpthread -lm' \
		> $(DESTDIR)$(PKGCONFIGDIR)/agentgate.pc
	$(Q)install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(DATADIR) \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/agentgate
	$(Q)install -m 0755 $(OUTPUT)/agentgate $(OUTPUT)/agentgated $(DESTDIR)$(SBINDIR)/
	$(Q)install -m 0644 docs/agentgate.8 docs/agentgated.8 $(DESTDIR)$(MANDIR)/man8/
	$(Q)install -m 0644 etc/grafana-dashboard.json etc/agentgate-alerts.yml $(DESTDIR)$(DATADIR)/
	$(Q)sed 's|/usr/local/sbin/|$(SBINDIR)/|g' etc/agentgated.service > $(DESTDIR)$(UNITDIR)/agentgated.service
	$(Q)chmod 0644 $(DESTDIR)$(UNITDIR)/agentgated.service
	$(Q)if [ -e $(DESTDIR)$(SYSCONFDIR)/agentgate/agentgated.conf ]; then \
		echo "  kept     $(DESTDIR)$(SYSCONFDIR)/agentgate/agentgated.conf (new example: $(DATADIR)/agentgated.conf)"; \
	else install -m 0644 etc/agentgated.conf $(DESTDIR)$(SYSCONFDIR)/agentgate/; fi
	$(Q)install -m 0644 etc/agentgated.conf $(DESTDIR)$(DATADIR)/
	$(Q)if [ -z "$(DESTDIR)" ] && ! getent passwd agentgate >/dev/null; then \
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin --comment "agentgate daemon" agentgate && \
		echo "  created  system account agentgate"; fi
	$(Q)grep -qE '^[[:space:]]*user[[:space:]]*=' $(DESTDIR)$(SYSCONFDIR)/agentgate/agentgated.conf || \
		echo "  note     $(DESTDIR)$(SYSCONFDIR)/agentgate/agentgated.conf sets no user: the daemon" \
			"runs as root; add 'user = agentgate' (docs/OPERATIONS.md, Privileges)"

# Removes what install put there except the config, which may hold edits.
uninstall:
	$(call msg,UNINSTALL,$(DESTDIR)$(PREFIX))
	$(Q)rm -f $(DESTDIR)$(SBINDIR)/agentgate $(DESTDIR)$(SBINDIR)/agentgated \
		$(DESTDIR)$(MANDIR)/man8/agentgate.8 $(DESTDIR)$(MANDIR)/man8/agentgated.8 \
		$(DESTDIR)$(UNITDIR)/agentgated.service
	$(Q)rm -f $(DESTDIR)$(LIBDIR)/libagentgate.a $(DESTDIR)$(INCLUDEDIR)/agentgate.h \
		$(DESTDIR)$(INCLUDEDIR)/agentgate/abi.h $(DESTDIR)$(PKGCONFIGDIR)/agentgate.pc
	$(Q)rmdir $(DESTDIR)$(INCLUDEDIR)/agentgate 2>/dev/null || true
	$(Q)rm -f $(DESTDIR)$(SBINDIR)/../lib/agentgate/libagentgate-ssl.so \
		$(DESTDIR)$(SBINDIR)/../lib/agentgate/libagentgate-crypto.so
	$(Q)rmdir $(DESTDIR)$(SBINDIR)/../lib/agentgate 2>/dev/null || true
	$(Q)rm -rf $(DESTDIR)$(DATADIR)

clean:
	$(call msg,CLEAN,$(OUTPUT))
	$(Q)rm -rf $(OUTPUT)

-include $(shell find $(OUTPUT) -name '*.d' 2>/dev/null)
