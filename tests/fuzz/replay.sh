#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Replays every committed fuzz corpus (tests/fuzz/corpus/NAME) through its
# harness once, without fuzzing: the seeds, the minimized corpus and the
# regression inputs (regress-*) of bugs fuzzing found. TAP, one case per
# harness. Usage: tests/fuzz/replay.sh BUILD_DIR (make fuzz-bins builds the
# harnesses; tests/run.sh runs this as part of make check).
#
# fuzz_http and fuzz_cli make mount and network namespaces: skipped unless
# root. A failing case shows the end of the harness's report, and says when
# it was a harness error (the harness's own machinery failed, exit 75: not a
# product failure, see tests/fuzz/fuzz.h).
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib/tap.sh
. "$HERE/../lib/tap.sh"

BUILD=$(tap_build_dir "${1:-}") || exit 2
TMP=$(mktemp -d)
cleanup() {
	tap_remove_tmp "$TMP"
}
tap_traps cleanup

# replay NAME: every file of the corpus, one run each.
replay() {
	local name=$1 bin=$BUILD/fuzz/fuzz_$1 dir=$HERE/corpus/$1 n
	if [ ! -x "$bin" ]; then
		diag "$bin not built (make fuzz-bins)"
		return 1
	fi
	if [ "$name" = http ] || [ "$name" = cli ]; then
		[ "$(id -u)" -eq 0 ] || { SKIP_REASON="needs root (namespaces, bpffs)"; return 77; }
	fi
	n=$(find "$dir" -type f | wc -l)
	[ "$n" -gt 0 ] || { diag "no corpus in $dir"; return 1; }
	# The files in name order; -close_fd_mask keeps the daemon's and the
	# CLI's own messages out of the log (a failed check still prints).
	if ! find "$dir" -type f -print0 | sort -z |
		xargs -0 "$bin" -close_fd_mask=3 -timeout=60 -rss_limit_mb=4096 >"$TMP/$name.log" 2>&1; then
		grep -q 'harness error (not a product failure' "$TMP/$name.log" &&
			diag "fuzz_$name: harness error, not a product failure:"
		diag "$(grep -v -e '^Executed' -e '^Running' "$TMP/$name.log" | tail -n 40)"
		return 1
	fi
	[ "$(grep -c '^Executed' "$TMP/$name.log")" -eq "$n" ] ||
		{ diag "fuzz_$name ran $(grep -c '^Executed' "$TMP/$name.log") of $n inputs"; return 1; }
	REPLAYED="$REPLAYED fuzz_$name:$n"
}

REPLAYED=""
t_rating() { replay rating; }
t_bucket() { replay bucket; }
t_path() { replay path; }
t_http() { replay http; }
t_jwt() { replay jwt; }
t_config() { replay config; }
t_prefix() { replay prefix; }
t_cli() { replay cli; }
t_vlog() { replay vlog; }
t_feed() { replay feed; }
t_demand() { replay demand; }
t_httpparse() { replay httpparse; }

tap_run \
	"t_rating|fuzz_rating replays its corpus (ratings JSON/NDJSON, policy)" \
	"t_bucket|fuzz_bucket replays its corpus (GCRA buckets against the model)" \
	"t_path|fuzz_path replays its corpus (paths of parents, quotas and debt against the model)" \
	"t_http|fuzz_http replays its corpus (the daemon's HTTP layer)" \
	"t_jwt|fuzz_jwt replays its corpus (bearer tokens)" \
	"t_config|fuzz_config replays its corpus (agentgated settings)" \
	"t_prefix|fuzz_prefix replays its corpus (prefixes, ports, names)" \
	"t_cli|fuzz_cli replays its corpus (agentgate arguments)" \
	"t_vlog|fuzz_vlog replays its corpus (the store's voice log records)" \
	"t_feed|fuzz_feed replays its corpus (rule feeds, their records and compact runs)" \
	"t_demand|fuzz_demand replays its corpus (demand sharing's reports and totals)" \
	"t_httpparse|fuzz_httpparse replays its corpus (request heads, chunked bodies, queries)"
rc=$?
diag "inputs replayed:${REPLAYED:- none}"
exit $rc
