#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Run the XDP cost-per-packet benchmark (see docs/BENCHMARKS.md).
# Usage: bench/run.sh BUILD_DIR [xdp_cost options...]
#
# Without options the benchmark runs every scale (1, 10^4, 10^6 agents) with
# the --breakdown probes. Any options replace that default and are passed to
# xdp_cost as given, e.g. bench/run.sh build --max-scale 10000.
#
# Mounts a private bpffs under /run for the benchmark's pin roots and removes
# it on exit, also when interrupted. Prints the human table, then the JSON
# document; BENCH_JSON=PATH keeps a copy of the JSON.
#
# Exit codes: 0 measured (goals met or not: read the report), 2 usage or
# benchmark not built, 3 environment (not root, cannot mount a bpffs),
# 4 the benchmark failed.
set -u

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
	echo "usage: bench/run.sh BUILD_DIR [xdp_cost options...]" >&2
	exit 2
fi
build=$1
shift
bin="$build/bench/xdp_cost"
if [ ! -x "$bin" ]; then
	echo "bench: $bin is not built (make bench-bins)" >&2
	exit 2
fi
if [ $# -eq 0 ]; then
	set -- --breakdown
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "bench: must run as root (BPF_PROG_TEST_RUN, bpffs mount)" >&2
	exit 3
fi

bpffs=""
json=""
pid=""
# shellcheck disable=SC2317 # invoked from the traps
cleanup() {
	if [ -n "$pid" ]; then # interrupted: stop the benchmark first
		kill -TERM "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		pid=""
	fi
	if [ -n "$bpffs" ]; then
		umount "$bpffs" 2>/dev/null
		rmdir "$bpffs" 2>/dev/null
		bpffs=""
	fi
	if [ -n "$json" ]; then
		rm -f "$json"
		json=""
	fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

if ! bpffs=$(mktemp -d /run/agentgate-bench.XXXXXX); then
	echo "bench: cannot create a directory under /run" >&2
	bpffs=""
	exit 3
fi
if ! mount -t bpf bpf "$bpffs"; then
	echo "bench: cannot mount a bpffs at $bpffs" >&2
	rmdir "$bpffs"
	bpffs=""
	exit 3
fi
if ! json=$(mktemp /tmp/agentgate-bench.XXXXXX.json); then
	echo "bench: cannot create a temporary file" >&2
	json=""
	exit 3
fi

# Not exec: the traps must run afterwards. Wait in the background so that a
# signal reaches the trap while the benchmark runs.
"$bin" --bpffs "$bpffs" --json "$json" "$@" &
pid=$!
wait "$pid"
rc=$?
pid=""
if [ "$rc" -ne 0 ]; then
	echo "bench: xdp_cost failed (exit code $rc)" >&2
	exit 4
fi

echo
echo "JSON:"
cat "$json"
if [ -n "${BENCH_JSON:-}" ]; then
	cp "$json" "$BENCH_JSON" || exit 4
fi
exit 0
