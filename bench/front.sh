#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# HTTP/1.1 fronts as a keep-alive API front: agentgated's own front against
# minimal servers on four Debian libraries, each answering the same consume
# and health requests (bench/front/: H2O libh2o-evloop, libmicrohttpd,
# libevent evhttp, CivetWeb). Each server, freshly started for each round, is
# measured by bench/front/run.sh: the consume client (bench/consume) at 1, 16,
# 64 and 1000 keep-alive connections (checks/s, latency, the server's CPU per
# request), the request-smuggling shapes of bench/front/smuggle.py, and a
# probe's latency beside 400 slow (trickle) and 10000 idle clients
# (tests/daemon/frontload.py, for 4x the consume seconds) with the server's
# memory. Rounds interleave the servers, the order rotated each round;
# printed are the medians over the rounds (bench/front/aggregate.py).
#
# Usage: bench/front.sh BUILD_DIR [--rounds R]
#                       [--servers "agentgated h2o mhd evhttp civetweb"]
#                       [--seconds S]
# Defaults: 3 rounds, all five servers, 5 s of consume (S >= 2) after 1 s of
# warm-up: about 10 minutes a round (CivetWeb's failing probes give up after
# 60 s each). Example: bench/front.sh build --rounds 1 --seconds 2 --servers
# "agentgated h2o", or make bench-front BENCH_ARGS='--rounds 1'.
#
# Installs the candidates' -dev packages if missing (apt-get), builds them
# into BUILD_DIR/bench/front/, needs BUILD_DIR/agentgated and
# BUILD_DIR/bench/consume (make bench-bins all). agentgated runs on a private
# bpffs under /run and a private state dir, with agents bn-c0..bn-c99
# (10^6/s each) created by an instance before the measured ones start on the
# same state. Everything it starts and mounts is stopped and removed on exit,
# also on failure or Ctrl-C. Loopback ports below the ephemeral range.
# A measurement a library server fails (CivetWeb's 64 workers cannot hold
# 1000 connections) is a result, shown in the tables; one agentgated fails
# is a failed run.
# Exit codes: 0 measured, 2 usage or not built, 3 environment, 4 a run
# failed.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROG=bench/front.sh

. "$ROOT/bench/lib.sh"

[ $# -ge 1 ] || usage
case $1 in -h | --help) usage ;; esac
build=$1
shift
cmdline="$PROG$(printf ' %q' "$build" "$@")"
rounds=3
seconds=5
servers="agentgated h2o mhd evhttp civetweb"
while [ $# -gt 0 ]; do
	[ $# -ge 2 ] || usage
	case $1 in
	--rounds) rounds=$2 ;;
	--servers) servers=$2 ;;
	--seconds) seconds=$2 ;;
	*) usage ;;
	esac
	shift 2
done
need_positive_ints "$rounds" "$seconds"
[ "$seconds" -ge 2 ] || die "--seconds must be at least 2" 2

# name -> the Debian packages its build needs (h2o.h includes OpenSSL's headers)
declare -A PKGS=([h2o]="libh2o-evloop-dev libssl-dev" [mhd]="libmicrohttpd-dev"
	[evhttp]="libevent-dev" [civetweb]="libcivetweb-dev")
declare -A LIBS=([h2o]="-lh2o-evloop -lpthread" [mhd]="-lmicrohttpd"
	[evhttp]="-levent -lpthread" [civetweb]="-lcivetweb -lpthread")
read -r -a names <<<"$servers"
[ ${#names[@]} -gt 0 ] || die "--servers: no server named" 2
declare -A seen=()
agd=0
for s in "${names[@]}"; do
	[ "$s" = agentgated ] || [ -n "${PKGS[$s]:-}" ] ||
		die "--servers: '$s' is none of agentgated h2o mhd evhttp civetweb" 2
	[ -z "${seen[$s]:-}" ] || die "--servers: '$s' named twice" 2
	seen[$s]=1
	[ "$s" = agentgated ] && agd=1
done

need_built "$build" bench/consume
[ $agd = 0 ] || need_built "$build" agentgated
for t in gcc python3 curl ss setsid timeout dpkg-query; do
	command -v $t >/dev/null || die "$t missing (scripts/deps.sh)" 3
done
[ $agd = 0 ] || need_root "agentgated's bpffs and maps"

# ---- the candidates' libraries -------------------------------------------------
missing=""
for s in "${names[@]}"; do
	for p in ${PKGS[$s]:-}; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing="$missing $p"
	done
done
if [ -n "$missing" ]; then
	need_root "apt-get install -y$missing"
	echo "$PROG: installing$missing (apt-get install -y)" >&2
	export DEBIAN_FRONTEND=noninteractive
	# shellcheck disable=SC2086 # a list of names
	if ! apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; then
		apt-get update -qq >/dev/null 2>&1
		# shellcheck disable=SC2086
		apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
			die "cannot install$missing" 3
	fi
fi

# ---- descriptors: 10000 idle connections need 10256 ------------------------------
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
nofile=$(ulimit -n)
idle=10000
if [ "$nofile" != unlimited ] && [ "$nofile" -lt $((idle + 256)) ]; then
	[ "$nofile" -ge 1256 ] ||
		die "ulimit -n is at most $nofile here: 1000 connections need 1256" 3
	idle=$((nofile - 256))
	echo "$PROG: ulimit -n is at most $nofile here (hard limit): idle clients $idle" \
		"instead of 10000" >&2
fi

# ---- cleanup -----------------------------------------------------------------------
work=$(mktemp -d /tmp/agentgate-front.XXXXXX) || die "cannot create a temporary directory" 3
bpffs=""
prep_pid=""
run_pid=""
# stop_group PGID: TERM the group, KILL it after 5 s.
stop_group() {
	kill -TERM -- "-$1" 2>/dev/null || return 0
	for _ in $(seq 50); do
		kill -0 -- "-$1" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL -- "-$1" 2>/dev/null
}
# shellcheck disable=SC2317 # invoked from the traps
cleanup() {
	local pg st
	if [ -n "$run_pid" ]; then
		# run.sh stops its server and clients on TERM; what it leaves
		# after 20 s is killed: the groups it noted (if their leader is
		# still the process noted) and its own.
		kill -TERM "$run_pid" 2>/dev/null
		for _ in $(seq 200); do
			kill -0 "$run_pid" 2>/dev/null || break
			sleep 0.1
		done
		while read -r pg st; do
			[ "$(awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$pg/stat" 2>/dev/null)" = "$st" ] &&
				kill -KILL -- "-$pg" 2>/dev/null
		done <"$work/pgids"
		kill -KILL -- "-$run_pid" 2>/dev/null
		wait "$run_pid" 2>/dev/null
		run_pid=""
	fi
	if [ -n "$prep_pid" ]; then
		stop_group "$prep_pid"
		wait "$prep_pid" 2>/dev/null
		prep_pid=""
	fi
	if [ -n "$bpffs" ]; then
		umount "$bpffs" 2>/dev/null || umount -l "$bpffs" 2>/dev/null
		rmdir "$bpffs" 2>/dev/null
		bpffs=""
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
: >"$work/pgids"

# A free loopback port below the ephemeral range (tests/lib/agtest/ports.py).
free_port() {
	python3 -c 'import sys; sys.path.insert(0, sys.argv[1])
from agtest.ports import free_port
print(free_port())' "$ROOT/tests/lib" || die "no free loopback port" 3
}

# ---- the candidates ----------------------------------------------------------------
out=$build/bench/front
mkdir -p "$out" || die "cannot create $out" 3
for s in "${names[@]}"; do
	[ "$s" = agentgated ] && continue
	# shellcheck disable=SC2086 # LIBS: a list of flags
	gcc -O2 -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter \
		-o "$out/$s" "$ROOT/bench/front/${s}_srv.c" ${LIBS[$s]} 2>"$work/cc.log" ||
		{ cat "$work/cc.log" >&2; die "cannot build $out/$s" 3; }
done

# ---- agentgated: its bpffs, state and agents -----------------------------------
# agd_argv PORT: agentgated's command line in d_cmd, as the tests make it
# (tests/lib/agtest): the embedded defaults (--config /dev/null).
agd_argv() {
	mapfile -d '' d_cmd < <(python3 "$ROOT/tests/lib/agtest" daemon-argv \
		--bin "$build/agentgated" --pin "$bpffs/pins" --state "$work/state" \
		--listen "127.0.0.1:$1" -- --quiet)
	[ "${#d_cmd[@]}" -gt 0 ] || die "cannot make agentgated's command line (tests/lib/agtest)" 3
}
if [ $agd = 1 ]; then
	bpffs=$(mktemp -d /run/agentgate-front.XXXXXX) || die "cannot create a directory under /run" 3
	mount -t bpf bpf "$bpffs" || { rmdir "$bpffs"; bpffs=""; die "cannot mount a bpffs" 3; }
	mkdir -p "$work/state"
	port=$(free_port) || exit
	agd_argv "$port"
	setsid "${d_cmd[@]}" >"$work/prep.log" 2>&1 </dev/null &
	prep_pid=$!
	url=http://127.0.0.1:$port
	for _ in $(seq 100); do
		curl -sf -m 1 -o /dev/null "$url/readyz" && break
		kill -0 "$prep_pid" 2>/dev/null || break
		sleep 0.1
	done
	if ! curl -sf -m 1 -o /dev/null "$url/readyz"; then
		cat "$work/prep.log" >&2
		die "agentgated did not start" 3
	fi
	for ((i = 0; i < 100; i++)); do
		curl -sf -o /dev/null -X PUT "$url/v1/agents/bn-c$i" \
			-d '{"rate":1000000,"burst":1000000,"r_min":1,"r_max":1000000,"pinned":true}' ||
			die "cannot create agent bn-c$i"
	done
	stop_group "$prep_pid"
	wait "$prep_pid" 2>/dev/null
	prep_pid=""
fi

# ---- the rounds ------------------------------------------------------------------
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
versions=""
for s in "${names[@]}"; do
	for p in ${PKGS[$s]:-}; do
		[ "$p" = libssl-dev ] || versions="$versions, $(dpkg-query -W -f='${Package} ${Version}' "$p")"
	done
done
echo "# HTTP/1.1 fronts, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit"
echo "# command: $cmdline"
[ $agd = 0 ] || echo "# $("$build/agentgated" --version 2>/dev/null | head -1)"
[ -z "$versions" ] || echo "# ${versions#, }; $(gcc --version | head -1)"
echo "# nproc $(nproc), kernel $(uname -r), ulimit -n $nofile; client and servers share the CPUs"
echo "# per server and round: consume at 1 16 64 1000 connections for $seconds s after 1 s," \
	"smuggle.py, frontload trickle 400 and idle $idle for $((4 * seconds)) s"

failed=()
notes=()
for ((r = 1; r <= rounds; r++)); do
	for ((i = 0; i < ${#names[@]}; i++)); do
		s=${names[$(((i + r - 1) % ${#names[@]}))]}
		port=$(free_port) || exit
		if [ "$s" = agentgated ]; then
			agd_argv "$port"
			cmd=("${d_cmd[@]}")
			ready=/readyz
		else
			cmd=("$out/$s" "$port")
			ready=/healthz
		fi
		echo "[$(date -u +%H:%M:%S)] round $r/$rounds: $s" >&2
		: >"$work/pgids"
		OUT=$work/results/r$r CONSUME=$build/bench/consume SECS=$seconds \
			TRICKLE="400 $((4 * seconds))" IDLE="$idle $((4 * seconds))" READY=$ready \
			PGIDS=$work/pgids setsid "$ROOT/bench/front/run.sh" "$s" "$port" -- "${cmd[@]}" \
			>/dev/null &
		run_pid=$!
		wait "$run_pid"
		rc=$?
		run_pid=""
		case $rc in
		0) ;;
		1)
			if [ "$s" = agentgated ]; then
				failed+=("round $r: a measurement of agentgated failed")
			else
				notes+=("round $r: a measurement of $s failed")
			fi
			;;
		*) failed+=("round $r: $s: bench/front/run.sh exit $rc") ;;
		esac
	done
done

echo "# finished $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
python3 "$ROOT/bench/front/aggregate.py" "$work/results" "${names[@]}" ||
	die "no results to show"
for n in "${notes[@]}"; do
	echo "note: $n (in the tables)"
done
if [ ${#failed[@]} -gt 0 ]; then
	for f in "${failed[@]}"; do
		echo "$PROG: $f" >&2
	done
	exit 4
fi
exit 0
