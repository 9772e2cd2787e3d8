#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Usage: OUT=DIR CONSUME=BIN bench/front/run.sh NAME PORT -- COMMAND...
#
# One HTTP/1.1 server measured as a keep-alive API front, the same way for
# every candidate of bench/front.sh (which runs this once per server and
# round). Starts COMMAND in a session of its own, waits until
# http://127.0.0.1:PORT$READY answers 200, measures, then stops the server's
# whole process group (TERM, KILL after 5 s), also on failure or a signal.
# The server must answer POST /v1/agents/NAME/consume with 200 or 429 for
# the agents $PREFIX0..$PREFIX(AGENTS-1), and GET /healthz with 200.
#
#   consume   the project's closed-loop client (bench/consume.c) at each of
#             $CONNS connections, $SECS s measured after $WARMUP s: checks/s,
#             latency p50/p99, and the server's CPU per request (utime+stime
#             of its process group from /proc, sampled inside the measured
#             window), the client's cores and the cores everything else used
#             meanwhile (/proc/stat). A run gets WARMUP+SECS+20 s.
#   smuggle   smuggle.py: framing oddities, each followed by GET /healthz
#   trickle   frontload.py trickle $TRICKLE: N clients sending a request
#             head a byte at a time while a probe times GET /healthz
#   idle      frontload.py idle $IDLE: N idle connections, the same probe;
#             the server's RSS and threads sampled half-way
#
# Environment (defaults): OUT and CONSUME (required), SECS=5 WARMUP=1
#   CONNS="1 16 64 1000" AGENTS=100 PREFIX=bn-c TRICKLE="400 20"
#   IDLE="10000 20" READY=/healthz SKIP="" (any of consume smuggle trickle
#   idle), FRONTLOAD=tests/daemon/frontload.py, SMUGGLE=bench/front/smuggle.py,
#   PGIDS="" (a file: each process group started is added to it as
#   "PGID STARTTIME", so that a driver can stop them should this script be
#   killed).
# Results in $OUT/NAME/: consume-C.json, smuggle.jsonl, trickle.json,
#   idle.json, idle-sample.json, server.log, meta.json and summary.json (all
#   of it, read by aggregate.py; also printed as one JSON line).
# Exit codes: 0 all measured, 1 a measurement failed (recorded in the
#   results; the others still ran), 2 usage, 3 the server did not start or
#   died.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

usage() {
	sed -n '/^# Usage:/p' "$0" | sed 's/^# //' >&2
	exit 2
}
if [ $# -lt 4 ] || [ "$3" != "--" ]; then
	usage
fi
NAME=$1 PORT=$2
shift 3
[[ $NAME =~ ^[A-Za-z0-9_.-]+$ ]] || usage
if ! [[ $PORT =~ ^[1-9][0-9]*$ ]] || [ "$PORT" -gt 65535 ]; then
	usage
fi
[ -n "${OUT:-}" ] || { echo "run.sh: OUT is not set" >&2; exit 2; }
[ -x "${CONSUME:-}" ] || { echo "run.sh: CONSUME is not an executable" >&2; exit 2; }
SECS=${SECS:-5} WARMUP=${WARMUP:-1}
if ! [[ $SECS =~ ^[1-9][0-9]*$ && $WARMUP =~ ^[0-9]+$ ]] || [ "$SECS" -lt 2 ]; then
	echo "run.sh: SECS must be >= 2, WARMUP a whole number" >&2
	exit 2
fi
CONNS=${CONNS:-"1 16 64 1000"} AGENTS=${AGENTS:-100} PREFIX=${PREFIX:-bn-c}
TRICKLE=${TRICKLE:-"400 20"} IDLE=${IDLE:-"10000 20"}
READY=${READY:-/healthz} SKIP=${SKIP:-} PGIDS=${PGIDS:-}
FRONTLOAD=${FRONTLOAD:-$ROOT/tests/daemon/frontload.py}
SMUGGLE=${SMUGGLE:-$HERE/smuggle.py}
DIR=$OUT/$NAME
HZ=$(getconf CLK_TCK)

# As many descriptors as allowed (idle connections): 65536, else the hard limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p "$DIR" || exit 2
rm -f "$DIR"/*.json "$DIR"/*.jsonl "$DIR"/*.err "$DIR"/server.log

log() { echo "[$(date -u +%H:%M:%S)] $NAME: $*" >&2; }
skip() { [[ " $SKIP " == *" $1 "* ]]; }
# A sleep the traps need not wait for.
nap() {
	sleep "$1" &
	wait $!
}

# Someone else on the port (with SO_REUSEPORT a second server could bind
# it too and share the connections unnoticed): refuse.
if [ -n "$(ss -ltnH "sport = :$PORT" 2>/dev/null)" ]; then
	echo "run.sh: 127.0.0.1:$PORT is already in use" >&2
	exit 2
fi

# track PID: PID leads a process group of its own; note it for the driver.
track() {
	local st
	[ -n "$PGIDS" ] || return 0
	st=$(awk '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[20] }' \
		"/proc/$1/stat" 2>/dev/null) && echo "$1 $st" >>"$PGIDS"
}

SPID="" PGID="" HELPERS=()
# shellcheck disable=SC2317 # invoked from the traps
cleanup() {
	local p
	for p in "${HELPERS[@]}"; do
		kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	HELPERS=()
	if [ -n "$PGID" ] && kill -0 -- "-$PGID" 2>/dev/null; then
		kill -TERM -- "-$PGID" 2>/dev/null
		for _ in $(seq 50); do
			kill -0 -- "-$PGID" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 -- "-$PGID" 2>/dev/null; then
			log "not stopped 5 s after SIGTERM: SIGKILL"
			kill -KILL -- "-$PGID" 2>/dev/null
		fi
	fi
	[ -n "$SPID" ] && wait "$SPID" 2>/dev/null
	SPID="" PGID=""
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

# A script's background job is not a group leader, so setsid(1) calls
# setsid() and execs COMMAND in place: $! is the server, leading its group.
setsid "$@" >"$DIR/server.log" 2>&1 </dev/null &
SPID=$!
PGID=$SPID
track "$SPID"
up=0
for _ in $(seq 100); do
	kill -0 "$SPID" 2>/dev/null || break
	if curl -sf -m 1 -o /dev/null "http://127.0.0.1:$PORT$READY"; then
		up=1
		break
	fi
	nap 0.1
done
if [ $up = 0 ]; then
	log "no answer 200 to GET http://127.0.0.1:$PORT$READY within 10 s; its log:"
	cat "$DIR/server.log" >&2
	exit 3
fi
if [ "$(awk '{ sub(/^.*\) /, ""); print $3 }' "/proc/$SPID/stat")" != "$SPID" ]; then
	log "the server does not lead a process group of its own"
	exit 3
fi
log "pid $SPID on port $PORT, listen backlog(s) $(ss -ltnH "sport = :$PORT" |
	awk '{ printf "%s ", $3 }')(ulimit -n $(ulimit -n), loadavg $(cut -d' ' -f1-3 /proc/loadavg))"
python3 - "$DIR/meta.json" "$NAME" "$PORT" "$SPID" "$@" <<'EOF'
import json, sys, time
out, name, port, pid, *cmd = sys.argv[1:]
nofile = open("/proc/%s/limits" % pid).read().split("Max open files")[1].split()[0]
json.dump({"name": name, "port": int(port), "pid": int(pid), "command": cmd,
           "nofile": nofile, "loadavg": open("/proc/loadavg").read().split()[:3],
           "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, open(out, "w"))
EOF

# "SERVER CLIENT MACHINE", taken in one pass: utime+stime ticks of the
# server's process group and of process group $1, and the busy ticks of the
# whole machine (user nice system irq softirq steal of /proc/stat).
sample() {
	{ head -1 /proc/stat; cat /proc/[0-9]*/stat 2>/dev/null; } | awk -v pg="$PGID" -v cg="$1" '
		NR == 1 { m = $2 + $3 + $4 + $7 + $8 + $9; next }
		{ s = $0; sub(/^.*\) /, "", s); split(s, f, " ")
		  if (f[3] == pg) a += f[12] + f[13]; else if (f[3] == cg) b += f[12] + f[13] }
		END { printf "%d %d %d\n", a, b, m }'
}
now() { date +%s.%N; }
alive() { kill -0 "$SPID" 2>/dev/null; }
died() {
	log "the server died; its log:"
	tail -20 "$DIR/server.log" >&2
	exit 3
}

FAIL=0
if ! skip consume; then
	for C in $CONNS; do
		alive || died
		f=$DIR/consume-$C.json
		# timeout(1) puts itself in a process group of its own
		timeout -k 3 $((WARMUP + SECS + 20)) "$CONSUME" --proto http --port "$PORT" \
			--connections "$C" --seconds "$SECS" --warmup "$WARMUP" --agents "$AGENTS" \
			--prefix "$PREFIX" >"$f.raw" 2>"$f.err" &
		cpid=$!
		HELPERS=("$cpid")
		track "$cpid"
		# Sampled inside the measured window: after the connections are
		# open (up to ~0.2 s for 1000) and the warm-up, until 0.7 s
		# before its end.
		nap "$WARMUP.3"
		read -r c0 k0 s0 < <(sample "$cpid")
		t0=$(now)
		nap "$((SECS - 1))"
		read -r c1 k1 s1 < <(sample "$cpid")
		t1=$(now)
		wait "$cpid"
		rc=$?
		HELPERS=()
		if [ $rc != 0 ]; then
			why=$(tr '\n' ' ' <"$f.err")
			why=${why% }
			if [ $rc = 124 ]; then
				why="timed out after $((WARMUP + SECS + 20)) s${why:+; $why}"
			fi
			log "consume at $C connections failed: rc $rc${why:+: $why}"
			FAIL=1
			python3 -c 'import json, sys
json.dump({"connections": int(sys.argv[1]), "error": sys.argv[2]},
          open(sys.argv[3], "w"))' "$C" "consume rc $rc${why:+: $why}" "$f"
			nap 2
			continue
		fi
		if line=$(python3 - "$f.raw" "$f" "$HZ" "$t0" "$t1" "$c0" "$c1" "$k0" "$k1" "$s0" "$s1" <<'EOF'
import json, sys
raw, out, hz = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0, t1 = (float(x) for x in sys.argv[4:6])
c0, c1, k0, k1, s0, s1 = (int(x) / hz for x in sys.argv[6:12])
r = json.load(open(raw))
wall = t1 - t0
server, client, machine = c1 - c0, k1 - k0, s1 - s0
reqs = r["checks_per_s"] * wall
r["window_s"] = round(wall, 3)
r["server_cpu_s"] = round(server, 3)
r["server_cores"] = round(server / wall, 3)
r["server_cpu_us_per_req"] = round(server / reqs * 1e6, 2) if reqs else None
r["client_cores"] = round(client / wall, 3)
r["other_cores"] = round((machine - server - client) / wall, 3)  # softirq included
json.dump(r, open(out, "w"))
print("%(checks_per_s).0f checks/s, p50 %(p50_us)d us, p99 %(p99_us)d us, server "
      "%(server_cpu_us_per_req)s us/request (%(server_cores)s cores)" % r)
EOF
		); then
			log "consume at $C connections: $line"
		else
			log "consume at $C connections: bad output: $(head -c 300 "$f.raw")"
			FAIL=1
		fi
		rm -f "$f.raw"
		nap 1
	done
fi

if ! skip smuggle; then
	alive || died
	python3 "$SMUGGLE" 127.0.0.1 "$PORT" >"$DIR/smuggle.jsonl" 2>"$DIR/smuggle.err" &
	HELPERS=($!)
	if wait $!; then
		log "smuggle: $(wc -l <"$DIR/smuggle.jsonl") shapes"
	else
		log "smuggle.py failed: $(tail -3 "$DIR/smuggle.err")"
		FAIL=1
	fi
	HELPERS=()
fi

frontload() { # MODE N SECONDS
	local mode=$1 f=$DIR/$1.json fpid
	alive || died
	timeout -k 3 $((${3%.*} + 90)) python3 "$FRONTLOAD" 127.0.0.1 "$PORT" "$@" \
		>"$f" 2>"$f.err" &
	fpid=$!
	HELPERS=("$fpid")
	track "$fpid"
	if [ "$mode" = idle ]; then
		nap $((${3%.*} / 2))
		python3 - "$SPID" "$PORT" "$DIR/idle-sample.json" <<'EOF'
import json, subprocess, sys
pid, port, out = sys.argv[1:]
st = dict(l.split(":", 1) for l in open("/proc/%s/status" % pid) if ":" in l)
est = subprocess.run(["ss", "-tnH", "state", "established", "sport = :%s" % port],
                     capture_output=True, text=True).stdout.count("\n")
json.dump({"rss_kib": int(st["VmRSS"].split()[0]), "threads": int(st["Threads"]),
           "established_server_side": est}, open(out, "w"))
EOF
	fi
	if wait "$fpid"; then
		log "$mode: $(cat "$f")"
	else
		log "frontload $mode failed: $(tail -3 "$f.err")"
		rm -f "$f"
		FAIL=1
	fi
	HELPERS=()
	nap 2
}
# shellcheck disable=SC2086 # "N SECONDS"
skip trickle || frontload trickle $TRICKLE
# shellcheck disable=SC2086
skip idle || frontload idle $IDLE

alive || died
cleanup
python3 - "$DIR" <<'EOF'
import glob, json, os, sys
d = sys.argv[1]


def load(name):
    try:
        with open(os.path.join(d, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


s = {"name": os.path.basename(d), "consume": {}, "frontload": {}}
for f in sorted(glob.glob(os.path.join(d, "consume-*.json"))):
    r = load(os.path.basename(f)) or {}
    s["consume"][str(r.get("connections"))] = {k: r[k] for k in (
        "checks_per_s", "p50_us", "p99_us", "server_cpu_us_per_req", "server_cores",
        "client_cores", "other_cores", "error") if k in r}
for m in ("trickle", "idle"):
    if load(m + ".json"):
        s["frontload"][m] = load(m + ".json")
if load("idle-sample.json"):
    s["idle_sample"] = load("idle-sample.json")
try:
    with open(os.path.join(d, "smuggle.jsonl")) as f:
        s["smuggle"] = [json.loads(ln) for ln in f if ln.strip()]
except (OSError, ValueError):
    pass
with open(os.path.join(d, "summary.json"), "w") as f:
    json.dump(s, f)
print(json.dumps(s))
EOF
exit $FAIL
