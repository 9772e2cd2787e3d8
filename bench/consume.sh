#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Application-level consume checks per second (docs/BENCHMARKS.md, "Consume
# checks against Redis"): agentgated's POST /v1/agents/{agent}/consume
# against what users pick instead, redis-server running a token-bucket Lua
# script (bench/tokenbucket.lua, EVALSHA), both on loopback TCP, driven by
# the same client (bench/consume: one epoll loop, C keep-alive connections,
# one request outstanding on each), same agents, same limits, same run.
#
# Scenarios: allow (rate and burst 10^6 per agent: every check is allowed)
# and deny (rate 1, burst 1: nearly every check is refused), over K agents
# in turn. Rounds interleave the two servers (each round starts with the
# other one); reported are medians over the rounds of checks/s, latency p50
# and p99 (request to complete answer, client side) and the server's CPU
# time per check (utime + stime of the whole process, all its threads), and
# the ratio agentgated / redis of the medians.
#
# Then the same checks from a process on the host through libagentgate
# (bench/consume_local: ag_consume, a compare-and-swap on the mmapped
# bucket, no system call), 1 thread and one per CPU, against Redis's
# median at 1 and 16 connections (goal >= 100x checks/s).
#
# Usage: bench/consume.sh BUILD_DIR [--connections "C1 C2 ..."] [--agents K]
#                         [--seconds S] [--rounds R]
# Starts redis-server and agentgated on random loopback ports with private
# state (a private bpffs, temporary directories) and removes all of it on
# exit, also on failure or Ctrl-C.
# Exit codes: 0 measured (goal met or not: read the report), 2 usage or not
# built, 3 environment, 4 a run failed.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROG=bench/consume.sh

. "$ROOT/bench/lib.sh"

[ $# -ge 1 ] || usage
case $1 in -h | --help) usage ;; esac
build=$1
shift
conns="1 16 64 1000"
agents=100
seconds=4
rounds=3
cmdline="$PROG $build $*"
while [ $# -gt 0 ]; do
	[ $# -ge 2 ] || usage
	case $1 in
	--connections) conns=$2 ;;
	--agents) agents=$2 ;;
	--seconds) seconds=$2 ;;
	--rounds) rounds=$2 ;;
	*) usage ;;
	esac
	shift 2
done
need_positive_ints $conns "$agents" "$seconds" "$rounds"
need_built "$build" agentgated bench/consume bench/consume_local
for t in redis-server redis-cli curl python3; do
	command -v $t >/dev/null || die "$t missing (scripts/deps.sh)" 3
done
need_root "agentgated's bpffs and maps"

work=$(mktemp -d /tmp/agentgate-consume.XXXXXX) || die "cannot create a temporary directory" 3
bpffs=""
d_pid=""
r_pid=""
# shellcheck disable=SC2317 # invoked from the traps
cleanup() {
	local p
	for p in "$d_pid" "$r_pid"; do
		[ -n "$p" ] || continue
		kill -TERM "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	d_pid=""
	r_pid=""
	if [ -n "$bpffs" ]; then
		umount "$bpffs" 2>/dev/null
		rmdir "$bpffs" 2>/dev/null
		bpffs=""
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bpffs=$(mktemp -d /run/agentgate-consume.XXXXXX) || die "cannot create a directory under /run" 3
mount -t bpf bpf "$bpffs" || { rmdir "$bpffs"; bpffs=""; die "cannot mount a bpffs" 3; }

d_port=$((20000 + RANDOM % 20000))
r_port=$((d_port + 1))
url="http://127.0.0.1:$d_port"

# ---- the two servers ---------------------------------------------------------

# The command line as the tests make it (tests/lib/agtest): the embedded
# defaults (--config /dev/null), whatever /etc/agentgate holds.
mapfile -d '' d_cmd < <(python3 "$ROOT/tests/lib/agtest" daemon-argv --bin "$build/agentgated" \
	--pin "$bpffs/pins" --state "$work/state" --listen "127.0.0.1:$d_port" -- --quiet)
[ "${#d_cmd[@]}" -gt 0 ] || die "cannot make agentgated's command line (tests/lib/agtest)" 3
"${d_cmd[@]}" 2>"$work/agentgated.log" &
d_pid=$!
# No persistence: agentgated's buckets live in kernel memory and are not
# written to disk per check either.
redis-server --port "$r_port" --bind 127.0.0.1 --save '' --appendonly no \
	--dir "$work" --logfile "$work/redis.log" &
r_pid=$!
for _ in $(seq 100); do
	curl -sf "$url/readyz" >/dev/null 2>&1 &&
		[ "$(redis-cli -p "$r_port" PING 2>/dev/null)" = PONG ] && break
	sleep 0.1
done
curl -sf "$url/readyz" >/dev/null || { cat "$work/agentgated.log" >&2; die "agentgated did not start" 3; }
[ "$(redis-cli -p "$r_port" PING 2>/dev/null)" = PONG ] || { cat "$work/redis.log" >&2; die "redis-server did not start" 3; }
sha=$(redis-cli -p "$r_port" SCRIPT LOAD "$(cat "$ROOT/bench/tokenbucket.lua")") ||
	die "cannot load the script into redis"

# Scenario -> "rate burst".
declare -A LIMIT=([allow]="1000000 1000000" [deny]="1 1")
for sc in allow deny; do
	read -r rate burst <<<"${LIMIT[$sc]}"
	for ((i = 0; i < agents; i++)); do
		curl -sf -o /dev/null -X PUT "$url/v1/agents/$sc-$i" \
			-d "{\"rate\":$rate,\"burst\":$burst,\"r_min\":1,\"r_max\":$rate,\"pinned\":true}" ||
			die "cannot create agent $sc-$i"
	done
done

# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
hz=$(getconf CLK_TCK)

measure() { # ROUND SCENARIO CONNS SERVER
	local round=$1 sc=$2 c=$3 srv=$4 pid before after rate burst
	read -r rate burst <<<"${LIMIT[$sc]}"
	if [ "$srv" = agentgated ]; then
		pid=$d_pid
		set -- --proto http --port "$d_port"
	else
		pid=$r_pid
		set -- --proto redis --port "$r_port" --sha "$sha" --rate "$rate" --burst "$burst"
	fi
	before=$(cpu_ticks "$pid")
	"$build/bench/consume" "$@" --connections "$c" --seconds "$seconds" --warmup 1 \
		--agents "$agents" --prefix "$sc-" >"$work/one.json" || die "the client failed against $srv"
	after=$(cpu_ticks "$pid")
	python3 - "$round" "$sc" "$c" "$srv" "$before" "$after" "$hz" "$seconds" "$work/one.json" \
		>>"$work/results" <<'EOF'
import json, sys
rnd, sc, c, srv = sys.argv[1:5]
ticks = int(sys.argv[6]) - int(sys.argv[5])
hz, secs = int(sys.argv[7]), float(sys.argv[8])
j = json.load(open(sys.argv[9]))
# The ticks span the warm-up second too: scale by the checks over it.
total_s = secs + 1
us = ticks / hz * 1e6 / (j["checks_per_s"] * total_s) if j["checks"] else 0
print(rnd, sc, c, srv, "%.0f" % j["checks_per_s"], j["p50_us"], j["p99_us"], "%.2f" % us,
      "%.4f" % (j["allowed"] / j["checks"] if j["checks"] else 0))
EOF
	tail -n 1 "$work/results" | awk '{printf "  round %s %-5s %3s conns %-10s %9s checks/s p50 %5s us p99 %6s us server CPU %6s us/check allowed %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9}'
}

echo "# consume checks, $(date -u +%Y-%m-%dT%H:%MZ), nproc $(nproc), kernel $(uname -r)"
echo "# command: $cmdline"
echo "# $(redis-server --version | cut -d' ' -f1-3); $("$build/agentgated" --version 2>/dev/null | head -1)"
echo "# $agents agents in turn; ${seconds} s measured after 1 s of warm-up; client, servers share the $(nproc) CPUs"
for ((r = 1; r <= rounds; r++)); do
	for sc in allow deny; do
		for c in $conns; do
			if ((r % 2)); then order="agentgated redis"; else order="redis agentgated"; fi
			for srv in $order; do
				measure "$r" "$sc" "$c" "$srv"
			done
		done
	done
done

# ---- the same checks in-process, through libagentgate -------------------------
threads="1"
[ "$(nproc)" -gt 1 ] && threads="1 $(nproc)"
for ((r = 1; r <= rounds; r++)); do
	for sc in allow deny; do
		for t in $threads; do
			"$build/bench/consume_local" --pin-root "$bpffs/pins" --threads "$t" \
				--seconds "$seconds" --warmup 1 --agents "$agents" --prefix "$sc-" \
				>"$work/one.json" || die "consume_local failed"
			python3 - "$r" "$sc" "$t" "$work/one.json" >>"$work/local" <<'EOF'
import json, sys
j = json.load(open(sys.argv[4]))
print(sys.argv[1], sys.argv[2], sys.argv[3], "%.0f" % j["checks_per_s"], j["p50_ns"], j["p99_ns"],
      "%.1f" % j["cpu_ns_per_check"])
EOF
			tail -n 1 "$work/local" | awk '{printf "  round %s %-5s %3s threads local     %11s checks/s p50 %5s ns p99 %6s ns CPU %6s ns/check\n", $1, $2, $3, $4, $5, $6, $7}'
		done
	done
done

python3 - "$work/results" "$work/local" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print("\nmedians over rounds; ratio = agentgated / redis (goal: >= 2x in checks/s with less "
      "CPU per check)")
print("  %-5s %5s  %-10s %11s %8s %8s %12s" % ("scen.", "conns", "server", "checks/s",
      "p50 us", "p99 us", "CPU us/check"))
keys = list(dict.fromkeys((r[1], r[2]) for r in rows))
for sc, c in keys:
    m = {}
    for srv in ("agentgated", "redis"):
        got = [r for r in rows if r[1] == sc and r[2] == c and r[3] == srv]
        m[srv] = [statistics.median(float(r[i]) for r in got) for i in (4, 5, 6, 7)]
        print("  %-5s %5s  %-10s %11.0f %8.0f %8.0f %12.1f" % ((sc, c, srv) + tuple(m[srv])))
    a, b = m["agentgated"], m["redis"]
    ratio = a[0] / b[0]
    cpu = a[3] / b[3] if b[3] else 0
    print("  %-5s %5s  ratio %.2fx checks/s, %.2fx CPU per check: %s"
          % (sc, c, ratio, cpu, "met" if ratio >= 2 and cpu < 1 else "MISSED"))
local = [l.split() for l in open(sys.argv[2])]
print("\nin-process through libagentgate (ag_consume), medians over rounds; ratio = local / redis"
      " at that many connections (goal >= 100x in checks/s)")
print("  %-5s %7s %11s %8s %8s %12s" % ("scen.", "threads", "checks/s", "p50 ns", "p99 ns",
      "CPU ns/check"))
for sc, t in dict.fromkeys((r[1], r[2]) for r in local):
    got = [r for r in local if r[1] == sc and r[2] == t]
    m = [statistics.median(float(r[i]) for r in got) for i in (3, 4, 5, 6)]
    print("  %-5s %7s %11.0f %8.0f %8.0f %12.1f" % ((sc, t) + tuple(m)))
    for c in ("1", "16"):
        red = [float(r[4]) for r in rows if r[1] == sc and r[2] == c and r[3] == "redis"]
        if red:
            ratio = m[0] / statistics.median(red)
            print("  %-5s %7s  ratio %.0fx the checks/s of redis at %s connection(s): %s"
                  % (sc, t, ratio, c, "met" if ratio >= 100 else "MISSED"))
EOF
