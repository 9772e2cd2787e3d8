#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Accuracy with traffic on every CPU (docs/BENCHMARKS.md, "Accuracy"): one
# agent, one bucket, frames from every CPU at once, far more than the rate;
# admitted / (burst + rate * t) must come to 0.99-1.00. The lab's generator
# sends them with --engine E (default auto: live XDP frames where the kernel
# allows them, else AF_PACKET); the report names the engine that ran.
#
# An edge host from lab/lab.sh with one veth queue per CPU
# (AG_LAB_QUEUES): the generator runs one thread pinned to each CPU, a frame
# sent on CPU c lands in eth0's queue c and the XDP program handles it on CPU
# c, so every CPU charges the same bucket concurrently (the per-CPU counters
# printed show it). For each rate, each round: the bucket is reset to full
# (burst tokens), the generator sends unpaced for S seconds, and
#   admitted = the agent's passed packets over the run (the datapath's own
#              per-CPU counters, summed),
#   t        = the generator's own run time (first thread started to last one
#              done: at least as long as frames arrived),
#   ratio    = admitted / (burst + rate * t).
# A bucket that over-admits shows ratio > 1; one that loses refill under
# contention (failed compare-and-swap, lost updates) shows ratio < 1. At
# 100/s a token costs 10 ms, above a quarter of the coarse clock's slack:
# most of that flood is refused without the exact clock (docs/DATAPATH.md,
# "Clock"), so that rate checks the shortcut under contention too.
#
# Usage: bench/accuracy.sh BUILD_DIR [--engine auto|live|packet] [--rates "R1 R2 ..."]
#                          [--burst-ms M] [--seconds S] [--rounds K]
# Burst is M milliseconds of the rate (default 100), at least 1 token.
# Makes an edge host bnaPID and removes it (processes, pins, namespaces) on
# exit, also on failure or Ctrl-C.
# Exit codes: 0 measured (goal met or not: read the report), 2 usage or not
# built, 3 environment, 4 a run failed.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB=$ROOT/lab/lab.sh
PROG=bench/accuracy.sh
AGENT=bn-acc
SRC=10.202.0.0/24
# Frames for another host: what XDP passes dies early in the stack (not ours),
# so passing a million packets a second leaves the CPUs to the senders.
OTHER_MAC=02:a9:ff:ff:ff:01

. "$ROOT/bench/lib.sh"

[ $# -ge 1 ] || usage
case $1 in -h | --help) usage ;; esac
build=$1
shift
rates="100 1000 10000 100000 1000000"
burst_ms=100
seconds=5
rounds=3
engine=auto
cmdline="$PROG $build $*"
while [ $# -gt 0 ]; do
	[ $# -ge 2 ] || usage
	case $1 in
	--rates) rates=$2 ;;
	--burst-ms) burst_ms=$2 ;;
	--seconds) seconds=$2 ;;
	--rounds) rounds=$2 ;;
	--engine) engine=$2 ;;
	*) usage ;;
	esac
	shift 2
done
need_positive_ints $rates "$burst_ms" "$seconds" "$rounds"
case $engine in auto | live | packet) ;; *) die "--engine '$engine': use auto, live or packet" 2 ;; esac

need_built "$build" agentgate ag-trafficgen
build=$(cd "$build" && pwd)
need_root "netns, XDP"
for t in bpftool ethtool python3; do
	command -v $t >/dev/null || die "$t missing (scripts/deps.sh)" 3
done

ncpu=$(nproc)
name=bna$$
name=${name:0:10}
work=$(mktemp -d /tmp/agentgate-accuracy.XXXXXX) || die "cannot create a temporary directory" 3
gen_pid=""
lab_up=""

# shellcheck disable=SC2317 # invoked from the traps
cleanup() {
	if [ -n "$gen_pid" ]; then
		kill -TERM "$gen_pid" 2>/dev/null
		wait "$gen_pid" 2>/dev/null
		gen_pid=""
	fi
	if [ -n "$lab_up" ]; then
		"$LAB" down "$name" # its bpffs goes with it: the link, the program, the maps
		lab_up=""
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

AG_LAB_QUEUES=$ncpu lab_up "$name"
in_host() { ip netns exec "$LAB_NS" "$@"; }
cli() { in_host "$build/agentgate" --pin-path "$LAB_PIN" "$@"; }

cli attach eth0 --mode native >/dev/null || die "cannot attach agentgate to eth0" 3
cli agent set "$AGENT" rate 1000 burst 100 >/dev/null &&
	cli rule add "$SRC" agent "$AGENT" >/dev/null || die "cannot create agent $AGENT"
slot=$(cli -j agent show "$AGENT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["slot"])') ||
	die "cannot read agent $AGENT"

# Per-CPU passed and dropped packets of the agent: "p0 d0 p1 d1 ...", from
# each CPU's counter cache entry of its slot (abi.h, "ag_tally": with one
# agent on the host the entries keep all its counts; struct ag_tally_ent:
# slot1, gen, seq, pad, then passed_packets at byte 16, dropped at 32).
percpu() {
	local k=$((slot & 4095))
	bpftool -j map lookup pinned "$LAB_PIN/ag_tally_cache" \
		key $((k & 255)) $((k >> 8 & 255)) 0 0 |
		python3 -c '
import json, sys
slot = int(sys.argv[1])
for v in json.load(sys.stdin)["values"]:
    b = bytes(int(x, 16) for x in v["value"])
    mine = int.from_bytes(b[0:4], "little") == slot + 1
    print(int.from_bytes(b[16:24], "little") if mine else 0,
          int.from_bytes(b[32:40], "little") if mine else 0, end=" ")
print()' "$slot"
}

run_once() { # RATE BURST ROUND
	local r=$1 b=$2 round=$3 before after
	before=$(percpu) || die "cannot read the counters"
	cli agent reset "$AGENT" >/dev/null || die "cannot reset $AGENT"
	ip netns exec "$LAB_WIRE_NS" "$build/ag-trafficgen" --engine "$engine" --dev "$LAB_WIRE_IF" \
		--dst-mac "$OTHER_MAC" --src "$SRC" --dst "$LAB_ADDR4" --threads "$ncpu" \
		--duration "$seconds" --json >"$work/gen.json" 2>"$work/gen.err" &
	gen_pid=$!
	wait "$gen_pid" || { cat "$work/gen.err" >&2; die "the generator failed"; }
	gen_pid=""
	if [ -z "${said_engine:-}" ]; then
		echo "# $(sed -n 's/^ag-trafficgen: //p' "$work/gen.err")"
		said_engine=1
	fi
	sleep 0.2 # the last frames in the veth rings
	after=$(percpu) || die "cannot read the counters"
	python3 - "$r" "$b" "$round" "$before" "$after" "$work/gen.json" >>"$work/results" <<'EOF'
import json, sys
rate, burst, rnd = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
a = [int(x) for x in sys.argv[4].split()]; z = [int(x) for x in sys.argv[5].split()]
t = json.load(open(sys.argv[6]))["seconds"]
d = [z[i] - a[i] for i in range(len(a))]
passed, dropped = sum(d[0::2]), sum(d[1::2])
cpus = ",".join("%d" % (d[i] + d[i + 1]) for i in range(0, len(d), 2))
print(int(rate), int(burst), rnd, "%.6f" % t, passed, dropped,
      "%.5f" % (passed / (burst + rate * t)), cpus)
EOF
	tail -n 1 "$work/results" | awk '{printf "  rate %8d burst %6d round %s: t %.3f s admitted %9d dropped %10d ratio %s  per-CPU packets %s\n", $1, $2, $3, $4, $5, $6, $7, $8}'
}

echo "# accuracy, $(date -u +%Y-%m-%dT%H:%MZ), nproc $ncpu, kernel $(uname -r)"
echo "# command: $cmdline"
echo "# one agent ($SRC), $ncpu generator threads pinned one per CPU, eth0 with $ncpu queues; burst = ${burst_ms} ms of the rate"
for r in $rates; do
	b=$((r * burst_ms / 1000))
	[ "$b" -ge 1 ] || b=1
	cli agent set "$AGENT" rate "$r" burst "$b" >/dev/null || die "cannot set rate $r"
	for ((k = 1; k <= rounds; k++)); do
		run_once "$r" "$b" "$k"
	done
done

python3 - "$work/results" "$ncpu" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
ncpu = int(sys.argv[2])
print("\nadmitted / (burst + rate * t), median over rounds (goal 0.99-1.00)")
for rate in dict.fromkeys(r[0] for r in rows):
    got = [r for r in rows if r[0] == rate]
    ratios = [float(r[6]) for r in got]
    med = statistics.median(ratios)
    offered = statistics.median((int(r[4]) + int(r[5])) / float(r[3]) for r in got)
    busy = min(sum(1 for c in r[7].split(",") if int(c) > 0) for r in got)
    over = all(int(r[5]) > 0 for r in got)
    ok = 0.99 <= med <= 1.001  # the contract: rates within 0.1 %
    print("  rate %9s burst %7s: ratio %.4f (min %.4f, max %.4f), offered %.0f/s, "
          "CPUs enforcing %d of %d%s: %s"
          % (rate, got[0][1], med, min(ratios), max(ratios), offered, busy, ncpu,
             "" if over else " (demand never exceeded the rate: not a test)",
             "met" if ok and over else "MISSED" if over else "n/a"))
EOF
