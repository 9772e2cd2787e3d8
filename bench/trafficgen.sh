#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# The lab's traffic generator, measured (docs/BENCHMARKS.md, "The traffic
# generator"): what each engine sends and how exactly it paces, counted at
# the receiver.
#
#   throughput  one generator thread, unpaced, 64-byte frames into a veth
#               whose peer (eth0 of an edge host from lab/lab.sh) drops
#               them with an empty XDP program (bench/empty.bpf.o). The
#               generator is pinned to CPU 0 and eth0's NAPI runs in a kernel
#               thread pinned to CPU 1 (threaded NAPI), so the figure is the
#               sender's own. Counted: frames eth0's XDP program saw
#               (rx_queue_0_xdp_packets) per second of the generator's run,
#               beside the generator's own sent and refused, and sent per
#               second of the generator's own CPU time (user + system: what
#               one thread sustains with a CPU to itself, whatever else the
#               machine runs). Goal (packet engine): >= 1.5 Mpps per thread.
#   pacing      one generator, one flow per rate (default 100, 1000, 10000,
#               100000 packets/s), all at once, for S seconds; each flow
#               from its own /24, charged by agentgate on eth0 to an agent
#               of its own (rate 1: nearly all dropped, cheap to receive).
#               Received = the agent's passed + dropped packets, from the
#               maps; rate = received / the generator's run time. Goal:
#               every flow within 1 % of its asked rate.
#
# Every round runs each engine in turn (live only where the kernel allows
# live frames: otherwise it is reported as not available, with the reason).
#
# Usage: bench/trafficgen.sh BUILD_DIR [--engines "packet live"] [--rates "R1 R2 ..."]
#                            [--seconds S] [--rounds K]
# Makes an edge host bntPID and removes it (processes, pins, namespaces) on
# exit, also on failure or Ctrl-C.
# Exit codes: 0 measured (goals met or not: read the report), 2 usage or not
# built, 3 environment, 4 a run failed.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB=$ROOT/lab/lab.sh
PROG=bench/trafficgen.sh

. "$ROOT/bench/lib.sh"

[ $# -ge 1 ] || usage
case $1 in -h | --help) usage ;; esac
build=$1
shift
engines="packet live"
rates="100 1000 10000 100000"
seconds=5
rounds=3
cmdline="$PROG $build $*"
while [ $# -gt 0 ]; do
	[ $# -ge 2 ] || usage
	case $1 in
	--engines) engines=$2 ;;
	--rates) rates=$2 ;;
	--seconds) seconds=$2 ;;
	--rounds) rounds=$2 ;;
	*) usage ;;
	esac
	shift 2
done
need_positive_ints $rates "$seconds" "$rounds"
for e in $engines; do
	case $e in live | packet) ;; *) die "--engines: '$e' is not live or packet" 2 ;; esac
done
[ "$(wc -w <<<"$rates")" -le 8 ] || die "--rates: at most 8" 2

need_built "$build" agentgate ag-trafficgen bench/empty.bpf.o
build=$(cd "$build" && pwd)
need_root "netns, XDP"
for t in ethtool python3 taskset; do
	command -v $t >/dev/null || die "$t missing (scripts/deps.sh)" 3
done
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs: the sender and the receiver apart" 3

name=bnt$$
name=${name:0:10}
work=$(mktemp -d /tmp/agentgate-tg.XXXXXX) || die "cannot create a temporary directory" 3
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
		"$LAB" down "$name"
		lab_up=""
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

lab_up "$name"
in_host() { ip netns exec "$LAB_NS" "$@"; }
cli() { in_host "$build/agentgate" --pin-path "$LAB_PIN" "$@"; }

threaded_napi 1

# The engines the kernel lets run; the others with the reason.
avail=""
for e in $engines; do
	if ip netns exec "$LAB_WIRE_NS" "$build/ag-trafficgen" --engine "$e" --dev "$LAB_WIRE_IF" \
		--dst-mac "$LAB_MAC" --src 10.210.0.1 --dst "$LAB_ADDR4" --count 1 >/dev/null 2>"$work/probe.err"; then
		avail="$avail $e"
	else
		echo "# engine $e not available: $(sed 's/^ag-trafficgen: //' "$work/probe.err" | tail -n 1)"
	fi
done
[ -n "$avail" ] || die "no engine can run here" 3

xdp_rx() { in_host ethtool -S eth0 | awk '$1 == "rx_queue_0_xdp_packets:" {print $2}'; }

throughput() { # ENGINE ROUND
	local e=$1 round=$2 a b
	a=$(xdp_rx)
	ip netns exec "$LAB_WIRE_NS" taskset -c 0 "$build/ag-trafficgen" --engine "$e" --dev "$LAB_WIRE_IF" \
		--dst-mac "$LAB_MAC" --src 10.210.0.0/24 --dst "$LAB_ADDR4" --duration "$seconds" --json \
		>"$work/gen.json" 2>"$work/gen.err" || { cat "$work/gen.err" >&2; die "the generator failed"; }
	sleep 0.2
	b=$(xdp_rx)
	python3 - "$e" "$round" "$a" "$b" "$work/gen.json" >>"$work/tput" <<'EOF'
import json, sys
e, rnd, a, b = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
g = json.load(open(sys.argv[5]))
print(e, rnd, "%.0f" % ((b - a) / g["seconds"]), "%.0f" % g["pps"], "%.0f" % (g["refused"] / g["seconds"]),
      "%.0f" % (g["sent"] / g["cpu_seconds"] if g["cpu_seconds"] > 0 else 0))
EOF
	tail -n 1 "$work/tput" | awk '{printf "  throughput %-6s round %s: received %9.0f/s sent %9.0f/s refused %8.0f/s, %9.0f sent per CPU-second\n", $1, $2, $3, $4, $5, $6}'
}

# One agent (rate 1) and one /24 per asked rate: flow k from 10.211.k.0/24.
setup_pacing() {
	local k=0 r
	cli attach eth0 --mode native >/dev/null || die "cannot attach agentgate to eth0" 3
	for r in $rates; do
		cli agent set "tg-$k" rate 1 burst 1 >/dev/null &&
			cli rule add "10.211.$k.0/24" agent "tg-$k" >/dev/null || die "cannot create agent tg-$k" 3
		k=$((k + 1))
	done
}

counts() { # "received of each flow ..."
	local k=0 r
	for r in $rates; do
		cli -j agent show "tg-$k" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["passed_packets"] + d["dropped_packets"], end=" ")'
		k=$((k + 1))
	done
}

pacing() { # ENGINE ROUND
	local e=$1 round=$2 k=0 r a b flows=()
	for r in $rates; do
		flows+=(--src "10.211.$k.0/24" --rate "$r")
		k=$((k + 1))
	done
	a=$(counts) || die "cannot read the counters"
	ip netns exec "$LAB_WIRE_NS" taskset -c 0 "$build/ag-trafficgen" --engine "$e" --dev "$LAB_WIRE_IF" \
		--dst-mac "$LAB_MAC" --dst "$LAB_ADDR4" --duration "$seconds" --json "${flows[@]}" \
		>"$work/gen.json" 2>"$work/gen.err" || { cat "$work/gen.err" >&2; die "the generator failed"; }
	sleep 0.2
	b=$(counts) || die "cannot read the counters"
	python3 - "$e" "$round" "$a" "$b" "$work/gen.json" >>"$work/pace" <<'EOF'
import json, sys
e, rnd = sys.argv[1], sys.argv[2]
a = [int(x) for x in sys.argv[3].split()]; b = [int(x) for x in sys.argv[4].split()]
g = json.load(open(sys.argv[5]))
for i, f in enumerate(g["flows"]):
    got = (b[i] - a[i]) / g["seconds"]
    print(e, rnd, "%.0f" % f["rate"], "%.2f" % got, "%.5f" % (got / f["rate"] - 1), f["sent"])
EOF
	tail -n "$(wc -w <<<"$rates")" "$work/pace" |
		awk '{printf "  pacing %-6s round %s: asked %7d/s received %11.2f/s deviation %+.3f %%\n", $1, $2, $3, $4, 100 * $5}'
}

echo "# traffic generator, $(date -u +%Y-%m-%dT%H:%MZ), nproc $(nproc), kernel $(uname -r)"
echo "# command: $cmdline"
echo "# throughput: 64-byte frames, 1 thread on CPU 0, unpaced; eth0's NAPI thread on CPU 1 with an empty XDP_DROP"
echo "# pacing: flows at$(printf ' %s' $rates)/s at once for $seconds s, received counted by agentgate"
in_host ip link set dev eth0 xdpdrv obj "$build/bench/empty.bpf.o" sec xdp || die "cannot attach the empty program" 3
for ((r = 1; r <= rounds; r++)); do
	for e in $avail; do throughput "$e" "$r"; done
done
in_host ip link set dev eth0 xdpdrv off || die "cannot detach the empty program" 3
setup_pacing
for ((r = 1; r <= rounds; r++)); do
	for e in $avail; do pacing "$e" "$r"; done
done

python3 - "$work/tput" "$work/pace" <<'EOF'
import statistics, sys
tput = [l.split() for l in open(sys.argv[1])]
pace = [l.split() for l in open(sys.argv[2])]
print("\nmedians over rounds")
for e in dict.fromkeys(r[0] for r in tput):
    got = [r for r in tput if r[0] == e]
    rx = statistics.median(float(r[2]) for r in got)
    goal = ": goal >= 1.5 Mpps: %s" % ("met" if rx >= 1.5e6 else "MISSED") if e == "packet" else ""
    print("  %-6s throughput: received %.2f Mpps per thread (sent %.2f Mpps, refused %.0f/s; "
          "%.2f Mpps per CPU-second)%s"
          % (e, rx / 1e6, statistics.median(float(r[3]) for r in got) / 1e6,
             statistics.median(float(r[4]) for r in got),
             statistics.median(float(r[5]) for r in got) / 1e6, goal))
for e in dict.fromkeys(r[0] for r in pace):
    for rate in dict.fromkeys(r[2] for r in pace if r[0] == e):
        dev = [float(r[4]) for r in pace if r[0] == e and r[2] == rate]
        worst = max(dev, key=abs)
        print("  %-6s pacing %7s/s: deviation median %+.3f %%, worst %+.3f %%: %s"
              % (e, rate, 100 * statistics.median(dev), 100 * worst,
                 "within 1 %" if abs(worst) <= 0.01 else "MISSED (goal 1 %)"))
EOF
