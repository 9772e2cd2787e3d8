#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# demo.sh: the whole of agentgate on one machine, in about 40 seconds.
#
# An edge host (lab/lab.sh: a network namespace behind a veth pair) runs
# agentgated with its embedded defaults, the XDP program attached to its
# eth0. Three agents, good, average and bad, each with a rule, send UDP
# traffic from their own addresses (bad over IPv6) at 8000 packets/s each,
# through the lab's traffic generator (ag-trafficgen: live XDP frames where
# the kernel allows them, AF_PACKET otherwise); a fourth source matches no
# rule. All agents start at 1500 packets/s. Users then rate them, 10 ratings
# a second each, streamed as NDJSON into agentgated's standard input: good
# 5 stars, average 3, bad 1. A table every second shows the refill rates
# move and the NIC follow; the summary compares what was admitted with the
# refill rate. Everything is removed at the end, also on Ctrl-C or failure.
#
# The demo checks what it shows (scripts/demo_verdict.py): it fails, exit
# code 1, saying which agent is off and by how much, when an agent's
# admitted packets/s over the last seconds are not within 5 % of its refill
# rate (the end-to-end tests' bound; within a packet per window edge at a
# few packets a second), when the unclassified traffic was not passed
# untouched, or when the generator fails (its error is printed). Its last
# line states what was measured.
#
# Usage: scripts/demo.sh [BUILD_DIR]    (make demo does the building)
# Environment: DEMO_RATINGS_S (default 20), DEMO_SUMMARY_JSON (a file for the
# summary as JSON, used by tests/e2e), DEMO_ENGINE (the generator's --engine:
# auto, live or packet; default auto).
set -u

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB="$ROOT/lab/lab.sh"
NAME=demo$$
NAME=${NAME:0:10}
RATE0=1500           # every agent's initial refill rate, packets/s
OFFERED=8000         # each agent's traffic, packets/s
UNCL_PPS=2000        # the unclassified flow's packets/s
WARMUP_S=5
RATINGS_S=${DEMO_RATINGS_S:-20}
HOLD_S=6
PER_S=10             # ratings per second per agent
ENGINE=${DEMO_ENGINE:-auto}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() {
	printf '   $ %s\n' "$*"
	"$@"
}

fail() {
	echo "demo: $*" >&2
	if [ -n "${LAB_DIR:-}" ] && [ -s "$LAB_DIR/agentgated.log" ]; then
		echo "demo: agentgated's log:" >&2
		tail -n 20 "$LAB_DIR/agentgated.log" >&2
	fi
	exit 1
}

# The generator's own words, indented.
gen_log() {
	[ -s "$LAB_DIR/trafficgen.log" ] && sed 's/^/demo:   /' "$LAB_DIR/trafficgen.log" >&2
	return 0
}

# The generator is still sending, or the demo fails with its error.
gen_alive() {
	local rc
	kill -0 "$GEN_PID" 2>/dev/null && return 0
	wait "$GEN_PID"
	rc=$?
	GEN_PID=""
	echo "demo: the traffic generator stopped early (exit code $rc):" >&2
	gen_log
	fail "no traffic, nothing to measure"
}

CLEANED=""
cleanup() {
	[ -n "$CLEANED" ] && return
	CLEANED=1
	{ exec 3>&-; } 2>/dev/null
	[ -n "${TABLE_PID:-}" ] && kill "$TABLE_PID" 2>/dev/null && wait "$TABLE_PID" 2>/dev/null
	[ -n "${GEN_PID:-}" ] && kill "$GEN_PID" 2>/dev/null && wait "$GEN_PID" 2>/dev/null
	"$LAB" down "$NAME"
	echo "demo: removed the edge host, its processes and pins"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" -eq 0 ] || fail "needs root: network namespaces and XDP (sudo make demo)"
for b in agentgate agentgated ag-trafficgen; do
	[ -x "$BUILD/$b" ] || fail "$BUILD/$b is missing: run make demo (or make)"
done
BUILD=$(cd "$BUILD" && pwd)
PY=$(command -v python3) || fail "python3 is missing (scripts/deps.sh)"

say "An edge host: namespace agl-$NAME, eth0 behind a veth pair, its own bpffs"
"$LAB" up "$NAME" >/dev/null || fail "cannot create the edge host (lab/lab.sh up $NAME)"
eval "$("$LAB" env "$NAME")"
in_host() { ip netns exec "$LAB_NS" "$@"; }
api() {
	local method=$1 path=$2 body=${3:-}
	printf '   $ curl -X %s localhost:9470%s%s\n' "$method" "$path" "${body:+ -d '$body'}"
	in_host curl -sS -f -X "$method" "http://127.0.0.1:9470$path" ${body:+-d "$body"} \
		-o /dev/null || fail "$method $path failed"
}

say "agentgated with its embedded defaults, XDP on eth0, ratings on its standard input"
mkfifo "$LAB_DIR/ratings" || fail "mkfifo"
printf '   $ agentgated --attach eth0 --stdin   (pins %s, state %s)\n' "$LAB_PIN" "$LAB_STATE"
# Its command line as the tests make it (tests/lib/agtest): embedded
# defaults (--config /dev/null), the default listener 127.0.0.1:9470.
mapfile -d '' DAEMON_CMD < <("$PY" "$ROOT/tests/lib/agtest" daemon-argv --bin "$BUILD/agentgated" \
	--pin "$LAB_PIN" --state "$LAB_STATE" --listen 127.0.0.1:9470 -- --attach eth0 --stdin --quiet)
[ "${#DAEMON_CMD[@]}" -gt 0 ] || fail "cannot make agentgated's command line (tests/lib/agtest)"
in_host "${DAEMON_CMD[@]}" <"$LAB_DIR/ratings" >"$LAB_DIR/agentgated.log" 2>&1 &
exec 3>"$LAB_DIR/ratings"
for _ in $(seq 1 100); do
	in_host curl -sf -o /dev/null http://127.0.0.1:9470/readyz && break
	sleep 0.1
done
in_host curl -sf -o /dev/null http://127.0.0.1:9470/readyz || fail "agentgated did not become ready"

say "Three agents at $RATE0 packets/s, each with a rule"
api PUT /v1/agents/good "{\"rate\":$RATE0,\"burst\":\"0.5s\"}"
api PUT /v1/agents/average "{\"rate\":$RATE0,\"burst\":\"0.5s\"}"
api PUT /v1/agents/bad "{\"rate\":$RATE0,\"burst\":\"0.5s\"}"
api POST /v1/rules '{"prefix":"10.1.0.0/24","agent":"good"}'
api POST /v1/rules '{"prefix":"10.2.0.0/24","port":9000,"agent":"average"}'
api POST /v1/rules '{"prefix":"2001:db8:bad::/64","agent":"bad"}'

say "Traffic from each agent's addresses, $OFFERED packets/s each, plus unclassified 10.9.0.0/24"
TOTAL_S=$((WARMUP_S + RATINGS_S + HOLD_S + 5))
printf '   $ ag-trafficgen --engine %s --dev wire0 --src 10.1.0.0/24 --rate %s --src 10.2.0.0/24 ... \\\n' \
	"$ENGINE" "$OFFERED"
printf '         --src 2001:db8:bad::1-2001:db8:bad::ff ... --src 10.9.0.0/24 --rate %s\n' "$UNCL_PPS"
ip netns exec "$LAB_WIRE_NS" "$BUILD/ag-trafficgen" --engine "$ENGINE" --dev "$LAB_WIRE_IF" \
	--dst-mac "$LAB_MAC" --dport 9000 --duration "$TOTAL_S" --json \
	--src 10.1.0.0/24 --dst "$LAB_ADDR4" --rate "$OFFERED" \
	--src 10.2.0.0/24 --dst "$LAB_ADDR4" --rate "$OFFERED" \
	--src 2001:db8:bad::1-2001:db8:bad::ff --dst "$LAB_ADDR6" --rate "$OFFERED" \
	--src 10.9.0.0/24 --dst "$LAB_ADDR4" --rate "$UNCL_PPS" \
	>"$LAB_DIR/trafficgen.json" 2>"$LAB_DIR/trafficgen.log" &
GEN_PID=$!
# The generator names its engine, and why, on standard error as it starts.
for _ in $(seq 1 50); do
	grep -q 'engine' "$LAB_DIR/trafficgen.log" 2>/dev/null && break
	kill -0 "$GEN_PID" 2>/dev/null || break
	sleep 0.1
done
gen_alive
sed -n 's/^ag-trafficgen: /   /p' "$LAB_DIR/trafficgen.log"

say "Live: ratings good 5*, average 3*, bad 1* from t=${WARMUP_S}s for ${RATINGS_S}s ($PER_S/s each)"
echo warmup >"$LAB_DIR/phase"
# (ip netns exec directly: a backgrounded function would be a subshell, and
# $! not the table's own process.)
ip netns exec "$LAB_NS" "$PY" "$ROOT/scripts/demo_table.py" --cli "$BUILD/agentgate" --pin "$LAB_PIN" \
	--agents good,average,bad --phase-file "$LAB_DIR/phase" --last "$((HOLD_S - 1))" \
	--summary-json "$LAB_DIR/summary.json" &
TABLE_PID=$!
sleep "$WARMUP_S"

gen_alive
echo ratings >"$LAB_DIR/phase"
# Paced by deadline: PER_S rounds a second, one rating per agent each round,
# each round's from a user of its own (one voice per user: one user's
# repeated ratings would move a rate once).
start=$(date +%s%N)
rounds=$((RATINGS_S * PER_S))
for i in $(seq 1 "$rounds"); do
	printf '{"id":"demo-g-%d","agent":"good","user":"u%d","score":5}\n' "$i" "$i" >&3
	printf '{"id":"demo-a-%d","agent":"average","user":"u%d","score":3}\n' "$i" "$i" >&3
	printf '{"id":"demo-b-%d","agent":"bad","user":"u%d","score":1}\n' "$i" "$i" >&3
	due=$((start + i * 1000000000 / PER_S))
	now=$(date +%s%N)
	[ "$due" -gt "$now" ] && sleep "$(printf '0.%09d' $((due - now)))"
done

gen_alive
echo hold >"$LAB_DIR/phase"
sleep "$HOLD_S"
kill "$TABLE_PID" 2>/dev/null
wait "$TABLE_PID"
TABLE_PID=""

# The generator ran throughout: stopped now, its report read.
gen_alive
kill -TERM "$GEN_PID"
wait "$GEN_PID"
rc=$?
GEN_PID=""
if [ "$rc" -ne 0 ]; then
	echo "demo: the traffic generator failed (exit code $rc):" >&2
	gen_log
	fail "traffic failed"
fi
[ -s "$LAB_DIR/summary.json" ] || fail "the table wrote no summary"
[ -n "${DEMO_SUMMARY_JSON:-}" ] && cp "$LAB_DIR/summary.json" "$DEMO_SUMMARY_JSON"

verdict=$("$PY" "$ROOT/scripts/demo_verdict.py" "$LAB_DIR/summary.json" "$LAB_DIR/trafficgen.json" \
	"$UNCL_PPS")
rc=$?
if [ "$rc" -ne 0 ]; then
	[ -n "$verdict" ] || verdict="demo: FAILED: cannot judge the run (scripts/demo_verdict.py: exit $rc)"
	sed '$d' <<<"$verdict" >&2
	cleanup
	tail -n 1 <<<"$verdict" >&2
	exit 1
fi
say "Done; tearing down"
cleanup
echo "$verdict"
