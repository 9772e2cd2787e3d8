#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# Scale benchmark: kernel memory per agent and listing 10^6 agents with the
# CLI against bpftool dumping the same map; then the idle agents' sweep over
# 10^6 agents against reading their counters; then 10^6 rating voices
# against ratings without users; then a rule feed of 10^5 prefixes applied in
# one swap against as many single rule adds (docs/BENCHMARKS.md).
# Usage: bench/scale.sh BUILD_DIR [cli_scale options...]
# Mounts a private bpffs under /run and removes it on exit, also when
# interrupted. Exit codes: 0 measured, 2 not built, 3 environment, 4 failed.
set -u

build=${1:?usage: bench/scale.sh BUILD_DIR [options]}
shift
bin="$build/bench/cli_scale"
sweep="$build/bench/sweep_cost"
voices="$build/bench/voices_cost"
feeds="$build/bench/feed_swap"
cli="$build/agentgate"
for f in "$bin" "$sweep" "$voices" "$feeds" "$cli"; do
	[ -x "$f" ] || { echo "bench: $f is not built" >&2; exit 2; }
done
[ "$(id -u)" -eq 0 ] || { echo "bench: must run as root" >&2; exit 3; }
command -v bpftool >/dev/null || { echo "bench: bpftool not installed" >&2; exit 3; }

bpffs=""
state=""
cleanup() {
	[ -n "$state" ] && rm -rf "$state"
	state=""
	if [ -n "$bpffs" ]; then
		umount "$bpffs" 2>/dev/null
		rmdir "$bpffs" 2>/dev/null
		bpffs=""
	fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

bpffs=$(mktemp -d /run/agentgate-scale.XXXXXX) || exit 3
mount -t bpf bpf "$bpffs" || { rmdir "$bpffs"; bpffs=""; exit 3; }

echo "command: $bin --bpffs $bpffs --cli $cli $*"
"$bin" --bpffs "$bpffs" --cli "$cli" "$@" || exit 4
find "${bpffs:?}" -mindepth 1 -maxdepth 1 ! -name '*.debug' -exec rm -rf {} +
state=$(mktemp -d /var/tmp/agentgate-sweep.XXXXXX) || exit 3
echo "command: $sweep --bpffs $bpffs --state $state --agents 1000000 --sweeps 5"
"$sweep" --bpffs "$bpffs" --state "$state" --agents 1000000 --sweeps 5 || exit 4
find "${bpffs:?}" -mindepth 1 -maxdepth 1 ! -name '*.debug' -exec rm -rf {} +
rm -rf "$state"
state=$(mktemp -d /var/tmp/agentgate-voices.XXXXXX) || exit 3
echo "command: $voices --bpffs $bpffs --state $state --ratings 1000000 --agents 1000"
"$voices" --bpffs "$bpffs" --state "$state" --ratings 1000000 --agents 1000 || exit 4
find "${bpffs:?}" -mindepth 1 -maxdepth 1 ! -name '*.debug' -exec rm -rf {} +
rm -rf "$state"
state=$(mktemp -d /var/tmp/agentgate-feeds.XXXXXX) || exit 3
echo "command: $feeds --bpffs $bpffs --state $state --prefixes 100000 --runs 5"
"$feeds" --bpffs "$bpffs" --state "$state" --prefixes 100000 --runs 5 || exit 4
