#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# Demand sharing at fleet scale (bench/fleet_sim.c): simulated hosts, each
# running agentgated's demand_host.c over a NATS connection of its own, in
# one process against nats-server(s) of this script's own on 127.0.0.1.
# Usage: bench/fleet_sim.sh BUILD_DIR [--quick] [--cluster] [fleet_sim options...]
#   --quick    10 hosts x 1000 agents, 15 s, the shift at 6 s (a check)
#   --cluster  three nats-servers in a cluster (routes on 127.0.0.1), the
#              lease bucket with 3 replicas, the hosts spread over them
# Default: 100 hosts x 10^4 agents all shared (overlap 1.0), interval 1 s,
# floor 0.05, 40 s with the demand shift at 20 s. Options after these go to
# fleet_sim as they are (a later one wins), e.g. --hosts 50 --json out.json.
# Starts Debian's nats-server with JetStream (-js), a temporary store and a
# monitoring port (-m, read for /varz), and stops them and removes the store
# on exit, also when interrupted. Exit codes: 0 measured, 2 usage or not
# built, 3 environment, 4 failed.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROG=bench/fleet_sim.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

build=${1:-}
[ -n "$build" ] || { sed -n '/^# Usage:/,/4 failed\.$/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
shift
bin="$build/bench/fleet_sim"
need_built "$build" bench/fleet_sim
server=${NATS_SERVER:-/usr/bin/nats-server}
[ -x "$server" ] || server=$(command -v nats-server) ||
	die "nats-server not installed (apt-get install nats-server)" 3
command -v curl >/dev/null || die "curl not installed" 3

quick=0
nodes=1
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1 ;;
	--cluster) nodes=3 ;;
	*) break ;;
	esac
	shift
done
if [ $quick -eq 1 ]; then
	scenario=(--hosts 10 --agents 1000 --overlap 1.0 --interval 1000 --floor 0.05
		--duration 15 --shift-at 6 --warmup 3)
else
	scenario=(--hosts 100 --agents 10000 --overlap 1.0 --interval 1000 --floor 0.05
		--duration 40 --shift-at 20 --warmup 5)
fi
[ $nodes -gt 1 ] && scenario+=(--replicas 3)

work=""
pids=()
sim=""
# shellcheck disable=SC2317 # invoked from the traps
cleanup() {
	local p
	[ -n "$sim" ] && kill "$sim" 2>/dev/null && wait "$sim" 2>/dev/null
	sim=""
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null
	done
	pids=()
	[ -n "$work" ] && rm -rf "$work"
	work=""
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

# port: one nothing listens on, not handed out before in this run.
taken=" "
free_port() {
	local i
	for i in $(seq 200); do
		port=$((20000 + RANDOM % 40000))
		case $taken in *" $port "*) continue ;; esac
		[ -z "$(ss -Htln "( sport = :$port )" 2>/dev/null)" ] || continue
		taken="$taken$port "
		return 0
	done
	die "no free port" 3
}

work=$(mktemp -d /var/tmp/agentgate-fleetsim.XXXXXX) || die "cannot make a temp dir" 3
cports=() mports=() rports=()
for i in $(seq 0 $((nodes - 1))); do
	free_port
	cports+=("$port")
	free_port
	mports+=("$port")
	free_port
	rports+=("$port")
done
routes=""
for i in $(seq 0 $((nodes - 1))); do
	routes="$routes${routes:+,}nats://127.0.0.1:${rports[$i]}"
done

echo "# fleet simulator, $(date -u +%Y-%m-%dT%H:%MZ), nproc $(nproc), kernel $(uname -r), $("$server" --version)"
for i in $(seq 0 $((nodes - 1))); do
	args=(-js -sd "$work/store$i" -a 127.0.0.1 -p "${cports[$i]}" -m "${mports[$i]}"
		-n "agsim-$i")
	[ $nodes -gt 1 ] && args+=(--cluster_name agsim --cluster "nats://127.0.0.1:${rports[$i]}"
		--routes "$routes")
	echo "command: $server ${args[*]}"
	"$server" "${args[@]}" >"$work/server$i.log" 2>&1 &
	pids+=($!)
done

# Ready: every server answers /healthz, and in a cluster JetStream has a
# meta leader.
ready=0
for _ in $(seq 150); do
	ready=1
	for i in $(seq 0 $((nodes - 1))); do
		kill -0 "${pids[$i]}" 2>/dev/null || { cat "$work/server$i.log" >&2; die "nats-server $i exited" 3; }
		curl -sf "http://127.0.0.1:${mports[$i]}/healthz" >/dev/null || { ready=0; break; }
		if [ $nodes -gt 1 ]; then
			curl -sf "http://127.0.0.1:${mports[$i]}/jsz" | grep -q '"leader": *"[^"]' ||
				{ ready=0; break; }
		fi
	done
	[ $ready -eq 1 ] && break
	sleep 0.2
done
[ $ready -eq 1 ] || { cat "$work"/server*.log >&2; die "nats-server not ready in 30 s" 3; }

urls="" mons="" spids=""
for i in $(seq 0 $((nodes - 1))); do
	urls="$urls${urls:+,}nats://127.0.0.1:${cports[$i]}"
	mons="$mons${mons:+,}${mports[$i]}"
	spids="$spids${spids:+,}${pids[$i]}"
done
cmd=("$bin" --server "$urls" --monitor "$mons" --server-pid "$spids" "${scenario[@]}" "$@")
echo "command: ${cmd[*]}"
"${cmd[@]}" &
sim=$!
wait "$sim"
rc=$?
sim=""
[ $rc -eq 0 ] || die "fleet_sim failed ($rc)" 4
exit 0
