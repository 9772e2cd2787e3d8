#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Rating ingest benchmark (see docs/BENCHMARKS.md): ratings per second from
# NDJSON and HTTP into the buckets, and rating -> bucket latency.
# Usage: bench/ratings.sh BUILD_DIR [--ratings N] [--seconds S] [--parts "ndjson http latency"]
#
# Each figure comes with a baseline measured in the same run:
#   NDJSON      agentgated --ingest-socket, N ratings: without ids, with ids
#               (r-0, r-1, ...), with random UUIDs as ids, and each from a
#               user of its own (N new voices);
#               baseline: the same lines through the same parser, applied
#               nowhere (bench/rating_parse).
#   HTTP        wrk with keep-alive: single ratings (64 and 512 connections) and
#               batches of 1000 (8 connections); baseline: GET /healthz on
#               the same server (HTTP with no work behind it).
#   latency     one connection posting single ratings back to back: the
#               answer comes after the new rate is in the bucket, so the
#               round trip bounds rating -> bucket latency (p50/p99 from
#               wrk --latency); the daemon's own rating_apply_seconds
#               histogram gives the server side. Then at half the maximum
#               load: the fewest connections (1, 2, 4, ... each waiting
#               for its answer) that post at least half the single
#               ratings/s of 512 connections, and their p50/p99, both
#               wrk's round trip and the daemon's histogram over that run.
# Every rating is committed to LMDB with fsync before it is acknowledged:
# the state directory's disk is part of what is measured.
#
# Mounts a private bpffs under /run and removes it, the daemon, its state
# and the generated files on exit, also when interrupted.
# Exit codes: 0 measured, 2 usage or not built, 3 environment.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)

usage() {
	echo "usage: bench/ratings.sh BUILD_DIR [--ratings N] [--seconds S] [--parts \"ndjson http latency\"]" >&2
	exit 2
}
[ $# -ge 1 ] || usage
build=$1
shift
ratings=1000000
seconds=5
parts="ndjson http latency"
while [ $# -gt 0 ]; do
	case $1 in
	--parts) parts=$2; shift 2 ;;
	--ratings) ratings=$2; shift 2 ;;
	--seconds) seconds=$2; shift 2 ;;
	*) usage ;;
	esac
done
for b in "$build/agentgated" "$build/bench/rating_parse"; do
	[ -x "$b" ] || { echo "bench: $b is not built (make bench-bins all)" >&2; exit 2; }
done
for t in wrk python3; do
	command -v $t >/dev/null || { echo "bench: $t missing (scripts/deps.sh)" >&2; exit 3; }
done
[ "$(id -u)" -eq 0 ] || { echo "bench: must run as root (bpffs, maps)" >&2; exit 3; }

work=$(mktemp -d /tmp/agentgate-bench.XXXXXX)
bpffs=$(mktemp -d /run/agentgate-bench.XXXXXX)
pid=""
# shellcheck disable=SC2317 # invoked from the traps
cleanup() {
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		pid=""
	fi
	umount "$bpffs" 2>/dev/null
	rmdir "$bpffs" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
mount -t bpf bpf "$bpffs" || { echo "bench: cannot mount a bpffs" >&2; exit 3; }

port=$((20000 + RANDOM % 20000))
url="http://127.0.0.1:$port"

# start_daemon EXTRA_FLAG...: its command line as the tests make it
# (tests/lib/agtest): the embedded defaults (--config /dev/null), whatever
# /etc/agentgate holds.
start_daemon() {
	local cmd
	rm -rf "$work/state" "$bpffs/pins"
	mapfile -d '' cmd < <(python3 "$ROOT/tests/lib/agtest" daemon-argv --bin "$build/agentgated" \
		--pin "$bpffs/pins" --state "$work/state" --listen "127.0.0.1:$port" -- --quiet "$@")
	[ "${#cmd[@]}" -gt 0 ] || { echo "bench: cannot make agentgated's command line" >&2; exit 3; }
	"${cmd[@]}" 2>>"$work/daemon.log" &
	pid=$!
	for _ in $(seq 100); do
		curl -sf "$url/readyz" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "bench: agentgated did not become ready:" >&2
	cat "$work/daemon.log" >&2
	exit 3
}
stop_daemon() {
	kill -TERM "$pid"
	wait "$pid"
	pid=""
}

python3 - "$work" "$ratings" <<'EOF'
import json, random, sys, uuid
work, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(1)
with open(f"{work}/plain.ndjson", "w") as f, open(f"{work}/ids.ndjson", "w") as g, \
        open(f"{work}/users.ndjson", "w") as h, open(f"{work}/uuids.ndjson", "w") as u:
    for i in range(n):
        f.write('{"agent":"a%d","score":%d}\n' % (i % 100, 1 + i % 5))
        g.write('{"id":"r-%d","agent":"a%d","score":%d}\n' % (i, i % 100, 1 + i % 5))
        # Ids as most clients make them (random UUIDs): no order at all.
        u.write('{"id":"%s","agent":"a%d","score":%d}\n'
                % (uuid.UUID(int=rnd.getrandbits(128), version=4), i % 100, 1 + i % 5))
        # Every rating a new voice (a user of its own): the most voices cost.
        h.write('{"agent":"a%d","user":"u-%d","score":%d}\n' % (i % 100, i, 1 + i % 5))
with open(f"{work}/batch.json", "w") as f:
    json.dump([{"agent": "a%d" % (i % 100), "score": 1 + i % 5} for i in range(1000)], f)
EOF
cat >"$work/feed.py" <<'EOF'
import socket, sys, time
path, name = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.connect(path)
t = time.monotonic()
with open(name, "rb") as fh:
    while True:
        b = fh.read(1 << 20)
        if not b:
            break
        s.sendall(b)
s.shutdown(socket.SHUT_WR)
reply = s.makefile().readline()
print(reply.strip(), "%.6f" % (time.monotonic() - t))
EOF
cat >"$work/single.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"agent":"a' .. (n % 100) .. '","score":' .. (1 + n % 5) .. '}')
end
EOF
cat >"$work/batch.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/batch.json", "r"); wrk.body = f:read("*a"); f:close()
EOF

rate() { python3 -c "import sys; print('%.0f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$1" "$2"; }
ratio() { python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$1" "$2"; }
wrk_rps() { awk '/Requests\/sec/ {print $2}'; }
wrk_pct() { awk -v p="$1" '$1 == p {print $2}'; }
# The daemon's receipt -> bucket histogram: "le count" per bucket, and the
# bucket bounds holding the 50th and 99th percentiles of a run's difference.
apply_hist() {
	curl -s "$url/metrics" | awk -F'[{}" ]+' '/^agentgate_rating_apply_seconds_bucket/ {print $3, $4}'
}
hist_pct() {
	python3 - "$1" "$2" <<'PY'
import sys
def parse(s):
    return [(le, float(n)) for le, n in (l.split() for l in s.splitlines() if l.strip())]
a, b = parse(sys.argv[1]), parse(sys.argv[2])
d = [(le, nb - na) for (le, na), (_, nb) in zip(a, b)]
total = d[-1][1]
def pct(p):
    for le, n in d:
        if n >= p * total:
            return "<= %s s" % le if le != "+Inf" else "> the last bound"
print("%d requests, p50 %s, p99 %s" % (total, pct(0.5), pct(0.99)))
PY
}

echo "# rating ingest, $(date -u +%Y-%m-%dT%H:%MZ), nproc $(nproc), kernel $(uname -r)"
echo "# command: bench/ratings.sh $build --ratings $ratings --seconds $seconds"

part() { case " $parts " in *" $1 "*) return 0 ;; esac; return 1; }

# ---- NDJSON over the ingest socket ---------------------------------------
part ndjson && for kind in plain ids uuids users; do
	read -r n t < <("$build/bench/rating_parse" "$work/$kind.ndjson")
	base=$(rate "$n" "$t")
	start_daemon --ingest-socket "$work/ingest.sock"
	out=$(python3 "$work/feed.py" "$work/ingest.sock" "$work/$kind.ndjson")
	stop_daemon
	applied=$(echo "$out" | python3 -c 'import json,sys; l=sys.stdin.read().rsplit(" ",1); print(json.loads(l[0])["applied"])')
	secs=${out##* }
	got=$(rate "$applied" "$secs")
	echo "ndjson_${kind}: $got ratings/s applied ($applied in ${secs}s); parse-only baseline $base/s; ratio $(ratio "$got" "$base"); goal >= 1000000/s"
done

# ---- HTTP with keep-alive ---------------------------------------------------
ulimit -n 4096 2>/dev/null || true # 512 client connections
part http || part latency || exit 0
start_daemon
if part http; then
base=$(wrk -t1 -c64 -d"${seconds}s" "$url/healthz" | wrk_rps)
single=$(wrk -t1 -c64 -d"${seconds}s" -s "$work/single.lua" "$url/v1/ratings" | wrk_rps)
batch=$(wrk -t1 -c8 -d"${seconds}s" -s "$work/batch.lua" "$url/v1/ratings" | wrk_rps)
echo "http_single: ${single%.*} ratings/s (64 connections); GET /healthz baseline ${base%.*} req/s; ratio $(ratio "$single" "$base"); goal >= 100000/s"
# Many clients, each waiting for its own rating: more ratings in each group
# commit (the event loops hold them without a worker each).
many=$(wrk -t2 -c512 -d"${seconds}s" -s "$work/single.lua" "$url/v1/ratings" | wrk_rps)
echo "http_single_512: ${many%.*} ratings/s (512 connections); goal >= 100000/s"
echo "http_batch: $(rate "$(python3 -c "print($batch*1000)")" 1) ratings/s (${batch%.*} batches of 1000/s, 8 connections); goal >= 500000/s"
fi

# ---- rating -> bucket latency --------------------------------------------------
if part latency; then
lat=$(wrk -t1 -c1 -d"${seconds}s" --latency -s "$work/single.lua" "$url/v1/ratings")
hlat=$(wrk -t1 -c1 -d"${seconds}s" --latency "$url/healthz")
echo "latency_single: p50 $(echo "$lat" | wrk_pct 50%) p99 $(echo "$lat" | wrk_pct 99%) (rating acknowledged after its rate is in the bucket); GET /healthz p50 $(echo "$hlat" | wrk_pct 50%) p99 $(echo "$hlat" | wrk_pct 99%); goal p99 <= 1ms"
curl -s "$url/metrics" | awk '/^agentgate_rating_apply_seconds_(sum|count)/ {v[$1]=$2} END {if (v["agentgate_rating_apply_seconds_count"]) printf "server_apply_mean: %.1f us over %d batches (receipt to bucket, daemon side)\n", 1e6*v["agentgate_rating_apply_seconds_sum"]/v["agentgate_rating_apply_seconds_count"], v["agentgate_rating_apply_seconds_count"]}'
# At half the maximum load: the most single ratings/s (512 connections),
# then the fewest connections (1, 2, 4, ...) that post at least half of it,
# each waiting for its answer (closed loop: wrk's latency is each request's).
max=${many:-$(wrk -t2 -c512 -d"${seconds}s" -s "$work/single.lua" "$url/v1/ratings" | wrk_rps)}
for c in 1 2 4 8 16 32 64 128 256; do
	before=$(apply_hist)
	out=$(wrk -t1 -c"$c" -d"${seconds}s" --latency -s "$work/single.lua" "$url/v1/ratings")
	rps=$(echo "$out" | wrk_rps)
	if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) / 2 else 1)" "$rps" "$max"; then
		echo "latency_half_load: ${rps%.*} ratings/s on $c connections (maximum ${max%.*}/s on 512): round trip p50 $(echo "$out" | wrk_pct 50%) p99 $(echo "$out" | wrk_pct 99%); goal p99 <= 1ms"
		echo "latency_half_load_daemon: $(hist_pct "$before" "$(apply_hist)") (receipt to bucket, agentgate_rating_apply_seconds over that run)"
		break
	fi
done
fi
stop_daemon
