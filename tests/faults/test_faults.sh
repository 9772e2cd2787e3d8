#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Fault tests, TAP output. Usage: tests/faults/test_faults.sh BUILD_DIR
#
# On an edge host from lab/lab.sh, the plain agentgated (started as
# root with every capability, so that its own privilege drop is what is
# tested) attached to the host's eth0, and ag-trafficgen sending agent
# "lim" (500 packets/s, burst 500) six times its rate from the wire side.
# Each case injects a fault and asserts, over the window the fault lasts,
# that the datapath kept enforcing: admitted <= burst + rate * t (t measured
# around the counter reads), at least half of rate * t admitted, and drops.
#   - kill -9 of the daemon, five times, each restarted at once: program
#     and link ids unchanged, ready again within 1 s of the kill, state kept;
#   - program upgrades under traffic (bpf_link_update, 15 replacements):
#     every frame the host received was counted as passed by the program
#     (none went through unenforced), a replace against a stale program id
#     is refused and leaves the running one;
#   - the agent map full plus 10 %: refused with 507 / exit 1, counted in
#     agentgate_agents_refused_total, existing agents unaffected;
#   - the state dir on a 2 MiB tmpfs filled up: 507 naming the full disk,
#     enforcement and the API go on, every acknowledged rating survives a
#     kill -9, none of a refused batch, no torn audit line;
#   - wall-clock jumps of +1 day and -1 day (libfaketime, CLOCK_REALTIME
#     only, in the daemon): a drained bucket is not refilled by the jump
#     forward nor frozen by the jump back, while the daemon's wall clock
#     visibly jumped; the XDP object calls no clock but bpf_ktime_get_ns;
#   - the state store cut short under the daemon: changes refused (500
#     naming data.mdb), not ready, enforcement unaffected; a restart is
#     refused (exit 3) leaving the file alone; restored, all state is back;
#   - least privilege: every thread keeps only CAP_BPF, CAP_NET_ADMIN,
#     CAP_PERFMON (and CAP_NET_BIND_SERVICE on port 80), bounding set too,
#     no_new_privs; shared accounts (nobody, a static one, one with a login
#     shell or another process) refused with exit 4; --user with a throwaway
#     system account and --read-group: every thread runs as it, pins and
#     state are the account's with the group's read bits, a group member
#     reads with the CLI and cannot write, others cannot read.
#
# Exit: 0 all passed, 1 something failed, 77 skipped (not root, no netns).
# A trap on EXIT (INT and TERM exit through it) removes the edge host (and
# with it every process started in it), the tmpfs and the temporary files.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
# lab_suite_checks, lab_suite_up, fail, in_host, in_wire, cli, api; tap.sh
# shellcheck source=../lib/labsuite.sh
. "$HERE/../lib/labsuite.sh"
lab_suite_checks "${1:-}" "needs root (network namespaces, XDP, bpffs, tmpfs)" agentgate \
	agentgated ag-trafficgen bpf/agentgate.bpf.o
DAEMON=$BUILD/agentgated

H=flt$$
H=${H:0:10}
TMP=""
SMALL=""
CLEANED=""
TEST_USER="" # a throwaway system account for --user, deleted on exit

cleanup() {
	[ -n "$CLEANED" ] && return
	CLEANED=1
	"$LAB" down "$H"
	[ -n "$TEST_USER" ] && userdel "$TEST_USER" 2>/dev/null
	[ -n "$TEST_USER" ] && getent group "$TEST_USER" >/dev/null && groupdel "$TEST_USER"
	if [ -n "$SMALL" ] && mountpoint -q "$SMALL"; then
		umount "$SMALL" 2>/dev/null || umount -l "$SMALL"
	fi
	tap_remove_tmp "$TMP"
}
tap_traps cleanup

TMP=$(mktemp -d /tmp/agfault.XXXXXX)
lab_suite_up "$H"

RATE=500
BURST=500
SEND_PPS=3000
API_URL=http://127.0.0.1:9470
# bit 12 CAP_NET_ADMIN, 38 CAP_PERFMON, 39 CAP_BPF (10: CAP_NET_BIND_SERVICE)
CAPS_KEPT=000000c000001000

# ---- helpers ------------------------------------------------------------------

DPID=""
STATE=$LAB_STATE
EXTRA=()   # further daemon options of the current run
PREFIX=()  # a command the daemon runs under (env for libfaketime)

daemon_cmd() {
	DCMD=("${PREFIX[@]}" "$DAEMON" --config /dev/null --pin-path "$LAB_PIN"
		--state-dir "$STATE" --attach "$LAB_IF" --max-agents 20 "${EXTRA[@]}")
}

# daemon_start, daemon_kill9: (re)start through tests/faults/restart.py,
# which times kill -> gone -> ready; RESTART is its JSON, DPID the daemon.
daemon_start() {
	daemon_cmd
	echo "=== ${DCMD[*]}" >>"$TMP/daemon.log"
	RESTART=$(in_host "$PY" "$HERE/restart.py" ${1:+--kill "$1"} --log "$TMP/daemon.log" \
		--url "$API_URL/readyz" -- "${DCMD[@]}")
	local rc=$?
	DPID=$(jget "$RESTART" "d['pid']" 2>/dev/null)
	[ "$rc" -eq 0 ] && return 0
	diag "not ready: $RESTART"
	diag "$(tail -n 20 "$TMP/daemon.log")"
	return 1
}

daemon_kill9() {
	daemon_start "$DPID"
}

# daemon_stop: SIGTERM, gone within 15 s, its clean-shutdown line logged.
daemon_stop() {
	[ -n "$DPID" ] || return 0
	kill -TERM "$DPID" 2>/dev/null
	for _ in $(seq 1 150); do
		running "$DPID" || break
		sleep 0.1
	done
	running "$DPID" && { kill -KILL "$DPID"; fail "daemon ignored SIGTERM"; return 1; }
	DPID=""
	tail -n 3 "$TMP/daemon.log" | grep -q 'SIGTERM: shutting down' ||
		fail "no clean shutdown: $(tail -n 5 "$TMP/daemon.log")"
}

# link_ids: PROG and LINK of eth0 now.
link_ids() {
	cli status
	PROG=$(jget "$OUT" "[l['prog_id'] for l in d['links'] if l['ifname'] == 'eth0'][0]") &&
		LINK=$(jget "$OUT" "[l['link_id'] for l in d['links'] if l['ifname'] == 'eth0'][0]") ||
		{ fail "no link on eth0: $OUT"; return 1; }
}

# caps_of PID: one line per distinct thread state (identity, sets, nnp).
caps_of() {
	local t
	for t in /proc/"$1"/task/*; do
		grep -E '^(Uid|Gid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' "$t/status" |
			tr -s '\t\n' '  '
		echo
	done | sort | uniq -c
}

# caps_are PID UID CAPS: every thread runs as UID with exactly CAPS
# permitted, effective and bounding, nothing inheritable or ambient, nnp.
caps_are() {
	local want="Uid: $2 $2 $2 $2 Gid: $2 $2 $2 $2 CapInh: 0000000000000000 CapPrm: $3 "
	want+="CapEff: $3 CapBnd: $3 CapAmb: 0000000000000000 NoNewPrivs: 1"
	local got n
	got=$(caps_of "$1")
	n=$(ls /proc/"$1"/task | wc -l)
	[ "$(wc -l <<<"$got")" -eq 1 ] && [[ "$got" == *" $want " || "$got" == *" $want" ]] ||
		{ fail "threads of $1 (of $n) are not all '$want':"; diag "$got"; return 1; }
	[ "$n" -gt 10 ] || fail "only $n threads: not the daemon?"
}

# ---- traffic and the enforcement bound --------------------------------------------

GEN_PID=""
SINK_PID=""

sink_start() {
	ip netns exec "$LAB_NS" "$PY" "$ROOT/tests/e2e/udpsink.py" "$TMP/sink.json" "0.0.0.0:9100" &
	SINK_PID=$!
	sleep 0.3
}

sink_total() {
	jget "$(cat "$TMP/sink.json")" "d['0.0.0.0:9100']['total']"
}

# traffic_start [--count N]: lim's flow at SEND_PPS, in the background.
traffic_start() {
	ip netns exec "$LAB_WIRE_NS" "$BUILD/ag-trafficgen" --engine "$TG_ENGINE" --dev "$LAB_WIRE_IF" \
		--dst-mac "$LAB_MAC" --src 10.7.0.0/28 --dst "$LAB_ADDR4" --dport 9100 --rate "$SEND_PPS" "$@" \
		>"$TMP/gen.out" 2>"$TMP/gen.err" &
	GEN_PID=$!
}

traffic_stop() {
	[ -n "$GEN_PID" ] || return 0
	kill -TERM "$GEN_PID" 2>/dev/null
	wait "$GEN_PID" 2>/dev/null
	GEN_PID=""
}

# lim_counters: P (passed) and D (dropped) packets of lim, from the maps.
lim_counters() {
	cli agent show lim
	P=$(jget "$OUT" "d['passed_packets']") && D=$(jget "$OUT" "d['dropped_packets']") ||
		{ fail "agent show lim: $OUT"; return 1; }
}

# window_start, window_check WHAT: between them lim was admitted at most
# burst + rate * t (t from before the first read to after the last), at
# least half of rate * t, and traffic over the limit was dropped.
window_start() {
	W_T0=$(date +%s%N)
	lim_counters || return 1
	W_P0=$P W_D0=$D
}

window_check() {
	local t1
	lim_counters || return 1
	t1=$(date +%s%N)
	WINDOW=$("$PY" -c 'import json, sys
t0, t1, p0, p1, d0, d1, r, b = (float(x) for x in sys.argv[1:9])
t = (t1 - t0) / 1e9
print(json.dumps({"t": round(t, 3), "admitted": p1 - p0, "dropped": d1 - d0,
                  "bound": round(b + r * t, 1), "floor": round(0.5 * r * t, 1)}))' \
		"$W_T0" "$t1" "$W_P0" "$P" "$W_D0" "$D" "$RATE" "$BURST")
	json_check "$WINDOW" "d['admitted'] <= d['bound']" "d['admitted'] >= d['floor']" \
		"d['dropped'] > 0" || { fail "$1: enforcement bound broken"; return 1; }
	diag "$1: admitted $(jget "$WINDOW" "d['admitted']") in $(jget "$WINDOW" "d['t']") s" \
		"(bound $(jget "$WINDOW" "d['bound']"))"
}

# ---- cases ----------------------------------------------------------------------

t_start() {
	daemon_start || return 1
	caps_are "$DPID" 0 "$CAPS_KEPT" || return 1
	api PUT /v1/agents/lim "{\"rate\":$RATE,\"burst\":$BURST,\"pinned\":true}"
	[ "$CODE" = 201 ] || { fail "PUT lim: $CODE $BODY"; return 1; }
	api POST /v1/rules '{"prefix":"10.7.0.0/24","agent":"lim"}'
	[ "$CODE" = 201 ] || { fail "rule: $CODE $BODY"; return 1; }
	api PUT /v1/agents/learn '{}'
	[ "$CODE" = 201 ] || { fail "PUT learn: $CODE $BODY"; return 1; }
	link_ids || return 1
	FIRST_PROG=$PROG FIRST_LINK=$LINK
	sink_start
	traffic_start
	sleep 1
	window_start && sleep 2 && window_check "steady state"
}

t_kill9_repeated() {
	local i worst=0 t
	window_start || return 1
	for i in 1 2 3 4 5; do
		api POST /v1/ratings "{\"id\":\"k9-$i\",\"agent\":\"learn\",\"score\":5}"
		[ "$CODE" = 200 ] || { fail "rating before kill $i: $CODE $BODY"; return 1; }
		daemon_kill9 || return 1
		t=$(jget "$RESTART" "d['kill_to_ready_s']")
		json_check "$RESTART" "d['kill_to_ready_s'] <= 1.0" ||
			{ fail "kill $i: not ready within 1 s of the kill"; return 1; }
		worst=$("$PY" -c 'import sys; print(max(float(sys.argv[1]), float(sys.argv[2])))' \
			"$worst" "$t")
		link_ids || return 1
		[ "$PROG" = "$FIRST_PROG" ] && [ "$LINK" = "$FIRST_LINK" ] ||
			{ fail "kill $i: program $PROG link $LINK, was $FIRST_PROG $FIRST_LINK"; return 1; }
		sleep 0.3
	done
	window_check "5 x kill -9" || return 1
	grep -c 'already running' "$TMP/daemon.log" | grep -qx 5 ||
		{ fail "the restarts did not keep the running program"; return 1; }
	# Nothing acknowledged was lost: five 5-star ratings, 100 -> 200.
	api GET /v1/agents/learn
	json_check "$BODY" "d['ratings'] == 5" "d['rate'] == 200" || return 1
	caps_are "$DPID" 0 "$CAPS_KEPT" || return 1
	diag "kill -9 to ready: at most $worst s over 5 kills"
}

t_upgrade_under_traffic() {
	local s0 p0 s1 p1 i before old sent n=15
	# Quiet, then traffic for as long as the program is replaced n times
	# (the window is the traffic's: however long the replacements take on a
	# busy machine); the host's receive count must equal the program's
	# passed count exactly.
	traffic_stop
	sleep 0.5
	s0=$(sink_total) && lim_counters && p0=$P || return 1
	traffic_start --json
	window_start || return 1
	for i in $(seq 1 "$n"); do
		before=$PROG
		cli attach eth0
		[ "$RC" -eq 0 ] && json_check "$OUT" "d['replaced']" "d['prog_id'] != $before" \
			"d['link_id'] == $LINK" || { fail "replace $i: $OUT"; return 1; }
		PROG=$(jget "$OUT" "d['prog_id']")
		old=$before
		sleep 0.1
	done
	# A replace expecting the program that ran before the last one: refused,
	# the running one stays.
	cli attach eth0 --replace "$old"
	[ "$RC" -eq 1 ] && [[ "$OUT" == *refused* ]] || { fail "stale replace: rc $RC: $OUT"; return 1; }
	cli status
	json_check "$OUT" "d['links'][0]['prog_id'] == $PROG" || { fail "stale replace changed it"; return 1; }
	window_check "$n program replacements" || return 1
	traffic_stop
	sent=$(jget "$(cat "$TMP/gen.out")" "d['sent']") || { fail "generator: $(cat "$TMP/gen.err")"; return 1; }
	sleep 0.5
	s1=$(sink_total) && lim_counters && p1=$P || return 1
	[ $((s1 - s0)) -eq $((p1 - p0)) ] ||
		{ fail "host received $((s1 - s0)) frames, the program passed $((p1 - p0))"; return 1; }
	diag "received = passed = $((p1 - p0)) of $sent sent over $n replacements"
	traffic_start
	FIRST_PROG=$PROG
}

t_map_full() {
	local i n
	window_start || return 1
	cli status
	n=$(jget "$OUT" "d['agents']")
	for ((i = n + 1; i <= 20; i++)); do
		api PUT "/v1/agents/fill$i" '{}'
		[ "$CODE" = 201 ] || { fail "fill$i: $CODE $BODY"; return 1; }
	done
	# Full plus 10 %: two more over the API, one by a rating, one by the CLI
	# (which goes through the daemon: it is refused, and counted, there).
	for i in 21 22; do
		api PUT "/v1/agents/fill$i" '{}'
		json_check "$BODY" "d['error'] == 'insufficient_storage'" || return 1
		[ "$CODE" = 507 ] || return 1
	done
	api POST /v1/ratings '{"agent":"newcomer","score":5}'
	[ "$CODE" = 507 ] || { fail "rating for a new agent: $CODE $BODY"; return 1; }
	cli agent set fill23 rate 5
	[ "$RC" -eq 1 ] && [[ "$OUT" == *"no free agent slot"* ]] || { fail "CLI: rc $RC $OUT"; return 1; }
	# Existing agents are unaffected: they are rated and enforced.
	api POST /v1/ratings '{"agent":"learn","score":5}'
	json_check "$BODY" "d['agents'][0]['rate'] == 220" || return 1
	api GET /metrics
	grep -qx 'agentgate_agents_refused_total 4' <<<"$BODY" &&
		grep -qx 'agentgate_agents 20' <<<"$BODY" && grep -qx 'agentgate_agent_slots 20' <<<"$BODY" ||
		{ fail "metrics: $(grep -E '^agentgate_agent' <<<"$BODY")"; return 1; }
	sleep 1
	window_check "map full plus 10 %" || return 1
	for ((i = n + 1; i <= 20; i++)); do
		api DELETE "/v1/agents/fill$i"
	done
	cli status
	json_check "$OUT" "d['agents'] == $n"
}

# fill_disk DIR: files taking every free block of DIR's file system but
# 256 KiB, which the next ratings use up.
fill_disk() {
	dd if=/dev/zero of="$1/filler" bs=64k >/dev/null 2>&1
	dd if=/dev/zero of="$1/filler2" bs=4k >/dev/null 2>&1
	[ "$(stat -f -c %a "$1")" -eq 0 ] || return 1
	truncate -s -256K "$1/filler"
}

t_disk_full() {
	local i acked=0 refused=0 line
	SMALL=$TMP/small
	mkdir -p "$SMALL"
	mount -t tmpfs -o size=2m,mode=0700 agfault "$SMALL" || { fail "cannot mount a tmpfs"; return 1; }
	daemon_stop || return 1
	STATE=$SMALL/state
	daemon_start || return 1
	api PUT /v1/agents/disk '{"r_max":100000}'
	[ "$CODE" = 201 ] || { fail "PUT disk: $CODE $BODY"; return 1; }
	fill_disk "$SMALL" || { fail "the tmpfs is not full: $(df "$SMALL" | tail -1)"; return 1; }
	window_start || return 1
	# Batches of 50 ratings with ids: each all applied or all refused.
	for i in $(seq 1 100); do
		"$PY" -c 'import json, sys
print(json.dumps([{"id": "d%s-%d-%s" % (sys.argv[1], j, "x" * 60), "agent": "disk", "score": 4}
                  for j in range(50)]))' "$i" >"$TMP/batch.json"
		api POST /v1/ratings "@$TMP/batch.json"
		if [ "$CODE" = 200 ]; then
			[ "$refused" -eq 0 ] || { fail "a batch applied after one was refused"; return 1; }
			acked=$((acked + 50))
			continue
		fi
		[ "$CODE" = 507 ] && json_check "$BODY" "d['error'] == 'insufficient_storage'" \
			"'no space left' in d['message']" || { fail "batch $i: $CODE"; return 1; }
		refused=$((refused + 1))
		[ "$refused" -ge 3 ] && break
	done
	[ "$refused" -ge 3 ] && [ "$acked" -gt 0 ] ||
		{ fail "$acked acked, $refused batches refused: the disk did not fill up"; return 1; }
	# An operator change on the full disk: refused whole, or applied whole.
	api PUT /v1/agents/disk '{"rate":7}'
	[ "$CODE" = 200 ] || [ "$CODE" = 507 ] || { fail "PUT on a full disk: $CODE $BODY"; return 1; }
	api GET /readyz
	[ "$CODE" = 200 ] || { fail "not ready on a full disk"; return 1; }
	api GET /metrics
	grep -q '^agentgate_store_errors_total [1-9]' <<<"$BODY" || { fail "store errors not counted"; return 1; }
	grep -q 'no space left' "$TMP/daemon.log" || { fail "the log does not say the disk is full"; return 1; }
	window_check "disk full" || return 1
	# Space again: it applies at once; then after kill -9, exactly what was
	# acknowledged is there.
	rm -f "$SMALL"/filler*
	api POST /v1/ratings '{"id":"after-full","agent":"disk","score":4}'
	[ "$CODE" = 200 ] || { fail "after freeing space: $CODE $BODY"; return 1; }
	acked=$((acked + 1))
	daemon_kill9 || return 1
	api GET /v1/agents/disk
	json_check "$BODY" "d['ratings'] == $acked" "d['mean_score'] == 4" || return 1
	while IFS= read -r line; do
		"$PY" -c 'import json, sys; json.loads(sys.argv[1])' "$line" 2>/dev/null ||
			{ fail "torn audit line: $line"; return 1; }
	done <"$STATE/audit.log"
	diag "$acked ratings acknowledged and kept, $refused batches refused on the full disk"
	daemon_stop || return 1
	STATE=$LAB_STATE
	umount "$SMALL" && SMALL=""
	daemon_start
}

# store_damaged_checks: data.mdb cut to half under the daemon (LEARN: the
# agent "learn" before), then a restart on it.
store_damaged_checks() {
	local st size rc
	api GET /v1/agents/learn
	[ "$CODE" = 200 ] || { fail "learn: $CODE $BODY"; return 1; }
	LEARN=$BODY
	st=$STATE/data.mdb
	size=$(stat -c %s "$st")
	window_start || return 1
	truncate -s $((size / 2)) "$st"
	api POST /v1/ratings '{"agent":"learn","score":5}'
	[ "$CODE" = 500 ] && json_check "$BODY" "'$st' in d['message']" "'damaged' in d['message']" ||
		{ fail "rating on a store cut short: $CODE $BODY"; return 1; }
	api GET /readyz
	[ "$CODE" = 503 ] || { fail "still ready: $CODE $BODY"; return 1; }
	sleep 1
	window_check "state store cut short" || return 1
	[ "$(stat -c %s "$st")" -eq $((size / 2)) ] || { fail "data.mdb was written to"; return 1; }
	daemon_stop || return 1
	# Refused at the next start, with the file left as it is.
	daemon_cmd
	in_host timeout -s KILL 20 "${DCMD[@]}" >"$TMP/refused.log" 2>&1
	rc=$?
	[ "$rc" -eq 3 ] && grep -qF "$st" "$TMP/refused.log" ||
		{ fail "restart on the damaged store: exit $rc: $(cat "$TMP/refused.log")"; return 1; }
	[ "$(stat -c %s "$st")" -eq $((size / 2)) ] || { fail "data.mdb was written to"; return 1; }
}

t_store_damaged() {
	local rc
	# A copy of the state while the daemon is stopped.
	daemon_stop || return 1
	rm -rf "$TMP/state-good"
	cp -a "$STATE" "$TMP/state-good"
	daemon_start || return 1
	store_damaged_checks
	rc=$?
	# The copy restored whatever happened (the next cases need the store):
	# everything is back.
	daemon_stop
	rm -rf "$STATE"
	cp -a "$TMP/state-good" "$STATE"
	daemon_start || return 1
	[ "$rc" -eq 0 ] || return 1
	api GET /v1/agents/learn
	json_check "$BODY" "d['ratings'] == $(jget "$LEARN" "d['ratings']")" \
		"d['rate'] == $(jget "$LEARN" "d['rate']")" || return 1
	api GET /readyz
	[ "$CODE" = 200 ] || { fail "not ready after the restore: $CODE $BODY"; return 1; }
}

t_bpf_clock() {
	local calls
	# The datapath's clocks are CLOCK_MONOTONIC: bpf_ktime_get_ns (helper 5)
	# for every admission, bpf_ktime_get_coarse_ns (160, CLOCK_MONOTONIC_COARSE)
	# only to refuse early (docs/DATAPATH.md, "Clock"); never boot (125) or
	# TAI (208) time, which a suspend or a leap second moves.
	command -v llvm-objdump >/dev/null 2>&1 || { SKIP_REASON="llvm-objdump not found"; return 77; }
	calls=$(llvm-objdump -d "$BUILD/bpf/agentgate.bpf.o" | awk 'NF > 1 && $(NF-1) == "call" {print $NF}' |
		sort -un | tr '\n' ' ')
	[[ " $calls" == *" 5 "* ]] || { fail "no bpf_ktime_get_ns call: $calls"; return 1; }
	[[ " $calls" != *" 125 "* && " $calls" != *" 208 "* ]] ||
		{ fail "another clock helper is called: $calls"; return 1; }
}

# clock_step OFFSET WAIT: the daemon's CLOCK_REALTIME set OFFSET from the
# real one (libfaketime), WAIT seconds, then a rating for clk: NOW (real ms)
# and BODY (clk as the API shows it).
clock_step() {
	echo "$1" >"$TMP/faketime"
	sleep "$2"
	NOW=$(date +%s%3N)
	api POST /v1/ratings '{"agent":"clk","score":4}'
	api GET /v1/agents/clk
}

t_clock_jump() {
	local lib
	lib=$(ls /usr/lib/*/faketime/libfaketimeMT.so.1 2>/dev/null | head -n 1)
	[ -n "$lib" ] || { SKIP_REASON="libfaketime not installed (faketime package)"; return 77; }
	echo "+0" >"$TMP/faketime"
	daemon_stop || return 1
	PREFIX=(env LD_PRELOAD="$lib" FAKETIME_TIMESTAMP_FILE="$TMP/faketime" FAKETIME_NO_CACHE=1
		FAKETIME_DONT_FAKE_MONOTONIC=1)
	daemon_start || return 1
	window_start || return 1
	# 1 token/s, burst 100, drained.
	api PUT /v1/agents/clk '{"rate":1,"r_min":1,"burst":100,"pinned":true}'
	[ "$CODE" = 201 ] || { fail "PUT clk: $CODE $BODY"; return 1; }
	api POST /v1/agents/clk/drain '{"tokens":100}'
	json_check "$BODY" "d['tokens'] < 1" || return 1
	# A day forward: a wall-clock bucket would be full again.
	clock_step "+1d" 0.3
	json_check "$BODY" "abs(d['last_rating_ms'] - $NOW - 86400000) < 60000" ||
		{ fail "the daemon's wall clock did not jump forward"; return 1; }
	json_check "$BODY" "d['tokens'] < 3" || { fail "the jump forward refilled the bucket"; return 1; }
	api POST /v1/agents/clk/consume '{"tokens":5}'
	[ "$CODE" = 429 ] || { fail "consume after the jump: $CODE $BODY"; return 1; }
	cli agent show clk
	json_check "$OUT" "d['tokens'] < 3" || return 1
	# A day back (two from there): the bucket goes on refilling at 1/s.
	clock_step "-1d" 2.5
	json_check "$BODY" "abs(d['updated_ms'] - $NOW + 86400000) < 60000" ||
		{ fail "the daemon's wall clock did not jump back"; return 1; }
	json_check "$BODY" "1.5 <= d['tokens'] < 8" || { fail "refill stalled or jumped"; return 1; }
	window_check "wall clock +1 d and -1 d" || return 1
	daemon_stop || return 1
	PREFIX=()
	daemon_start
}

t_privs_port80() {
	# Below port 1024 the listener keeps CAP_NET_BIND_SERVICE (bit 10) too.
	daemon_stop || return 1
	EXTRA=(--listen 127.0.0.1:80)
	API_URL=http://127.0.0.1:80
	daemon_start || return 1
	caps_are "$DPID" 0 000000c000001400 || return 1
	daemon_stop || return 1
	EXTRA=()
	API_URL=http://127.0.0.1:9470
	daemon_start
}

# make_test_user: TEST_USER, a system account of agentgated's own (no login
# shell), whose uid and gid are one number; deleted on exit.
make_test_user() {
	local n
	[ -n "$TEST_USER" ] && return 0
	for ((n = 990; n > 900; n--)); do
		getent passwd "$n" >/dev/null || getent group "$n" >/dev/null || break
	done
	TEST_USER=agf$$
	groupadd --system --gid "$n" "$TEST_USER" &&
		useradd --system --uid "$n" --gid "$n" --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin "$TEST_USER" ||
		{ fail "cannot create the system account $TEST_USER"; return 1; }
}

# refused_account USER WORDS: the daemon refuses --user USER at once: exit 4
# naming it and WORDS, nothing set up.
refused_account() {
	local out rc
	out=$(timeout -s KILL 20 "$DAEMON" --config /dev/null --pin-path "$TMP/no-pins" \
		--state-dir "$TMP/no-state" --listen 127.0.0.1:9479 --user "$1" 2>&1)
	rc=$?
	[ "$rc" -eq 4 ] && [[ "$out" == *"--user $1: "*"$2"* ]] ||
		{ fail "--user $1: exit $rc, expected 4 and '$2': $out"; return 1; }
	[ ! -e "$TMP/no-pins" ] && [ ! -e "$TMP/no-state" ] || { fail "--user $1: set up anyway"; return 1; }
}

t_privs_shared_user() {
	local pid
	refused_account nobody "nobody/nogroup" || return 1
	if getent passwd daemon >/dev/null; then
		refused_account daemon "static account" || return 1
	fi
	make_test_user || return 1
	usermod --shell /bin/bash "$TEST_USER" || return 1
	refused_account "$TEST_USER" "login shell (/bin/bash)" || return 1
	usermod --shell /usr/sbin/nologin "$TEST_USER" || return 1
	# Another process runs as the account: it is someone else's too.
	setpriv --reuid "$TEST_USER" --regid "$TEST_USER" --clear-groups -- sleep 60 &
	pid=$!
	for _ in $(seq 1 100); do
		[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sleep ] && break
		sleep 0.02
	done
	refused_account "$TEST_USER" "sleep (pid $pid) runs as it"
	local rc=$?
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return "$rc"
}

# A group other than the account's own, for --read-group.
read_group() {
	local g
	for g in adm staff users; do
		getent group "$g" >/dev/null && { echo "$g"; return 0; }
	done
	echo nogroup
}

# as_uid UID [GROUP_ID] ARGS...: the CLI as another account, no capabilities.
as_uid() {
	local uid=$1 gid=$2
	shift 2
	local groups=(--clear-groups)
	[ -n "$gid" ] && groups=(--groups "$gid")
	OUT=$(in_host setpriv --reuid "$uid" --regid "$uid" "${groups[@]}" --inh-caps=-all -- \
		"$CLI" -j --pin-path "$LAB_PIN" "$@" 2>&1)
	RC=$?
}

t_privs_user() {
	local grp gid uid f bad
	grp=$(read_group)
	gid=$(getent group "$grp" | cut -d: -f3)
	make_test_user || return 1
	uid=$(id -u "$TEST_USER")
	daemon_stop || return 1
	chmod 0700 "$LAB_DIR"
	EXTRA=(--user "$TEST_USER" --read-group "$grp")
	daemon_start || return 1
	caps_are "$DPID" "$uid" "$CAPS_KEPT" || return 1
	grep -q "warning: --user $TEST_USER cannot search $LAB_DIR" "$TMP/daemon.log" ||
		{ fail "no warning about $LAB_DIR"; return 1; }
	# Pins and state: the account's, the group may read, nobody else.
	bad=$(find "$LAB_PIN" "$LAB_STATE" \( -type f -o -type d \) \
		-printf '%p %u %g %m %y\n' | awk -v u="$TEST_USER" -v g="$grp" '
		$2 != u || $3 != g || ($5 == "f" && $4 != "640") ||
		($5 == "d" && $4 != "2750") { print }')
	[ -z "$bad" ] || { fail "not $TEST_USER:$grp 0640/2750:"; diag "$bad"; return 1; }
	# It works as the account: ratings, agents, and a SIGHUP attaching again
	# (keeping the program) once the pin root is reachable.
	api POST /v1/ratings '{"agent":"learn","score":5}'
	[ "$CODE" = 200 ] || { fail "rating as $TEST_USER: $CODE $BODY"; return 1; }
	api PUT /v1/agents/asnobody '{}'
	[ "$CODE" = 201 ] || { fail "PUT as $TEST_USER: $CODE $BODY"; return 1; }
	chmod 0711 "$LAB_DIR"
	kill -HUP "$DPID"
	sleep 1
	tail -n 3 "$TMP/daemon.log" | grep -q "attached to eth0 (native, program $FIRST_PROG, already running)" ||
		{ fail "SIGHUP as $TEST_USER: $(tail -n 4 "$TMP/daemon.log")"; return 1; }
	# A member of the group reads with the CLI, cannot write; others cannot read.
	as_uid 4242 "$gid" agent show asnobody
	[ "$RC" -eq 0 ] && json_check "$OUT" "d['name'] == 'asnobody'" || { fail "member read: $OUT"; return 1; }
	as_uid 4242 "$gid" status
	[ "$RC" -eq 0 ] && json_check "$OUT" "d['links'][0]['ifname'] == 'eth0'" \
		"'error' in d['links'][0]" || { fail "member status: $OUT"; return 1; }
	as_uid 4242 "$gid" agent set asnobody rate 5
	[ "$RC" -ne 0 ] || { fail "a member could write"; return 1; }
	as_uid 4242 "" agent list
	[ "$RC" -ne 0 ] && [[ "$OUT" == *"Permission denied"* ]] || { fail "a non-member read: $OUT"; return 1; }
	api DELETE /v1/agents/asnobody
	daemon_stop || return 1
	EXTRA=()
	daemon_start
}

t_stop() {
	traffic_stop
	kill "$SINK_PID" 2>/dev/null
	wait "$SINK_PID" 2>/dev/null
	daemon_stop || return 1
	link_ids || return 1
	[ "$PROG" = "$FIRST_PROG" ] || { fail "program changed at the stop"; return 1; }
	grep -E 'error:' "$TMP/daemon.log" |
		grep -vE 'ratings not applied|state not changed|no space left|state store .* is damaged' &&
		{ fail "unexpected errors in the daemon log"; return 1; }
	return 0
}

TESTS=(
	"t_start|agentgated started as root keeps only CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON in every thread (bounding set too, no_new_privs); lim enforced"
	"t_kill9_repeated|kill -9 five times under traffic: ready within 1 s of each kill, same program and link, admitted <= burst + rate*t, nothing acknowledged lost"
	"t_upgrade_under_traffic|15 program replacements (bpf_link_update) under traffic: frames received == frames passed (none unenforced), bound kept; a stale --replace refused, the running program stays"
	"t_map_full|agent map full plus 10 %: 507 (API, rating) and exit 1 (CLI, through the daemon), agents_refused_total 4; existing agents rated and enforced"
	"t_disk_full|state on a full 2 MiB tmpfs: 507 naming the disk, ready, enforced, store errors counted; every acknowledged rating kept after kill -9, no torn audit line"
	"t_store_damaged|data.mdb cut to half under the daemon: 500 naming it, not ready, nothing written, enforcement bound kept; restart refused with exit 3; restored copy: state back, ready"
	"t_bpf_clock|the XDP object reads CLOCK_MONOTONIC only (bpf_ktime_get_ns, bpf_ktime_get_coarse_ns), never boot or TAI time"
	"t_clock_jump|daemon wall clock +1 day and -1 day (libfaketime): a drained bucket neither refilled nor frozen; enforcement bound kept"
	"t_privs_port80|--listen 127.0.0.1:80: CAP_NET_BIND_SERVICE kept as well, nothing else"
	"t_privs_shared_user|--user nobody, a static account (daemon), an account with a login shell or another process running as it: exit 4 naming why, nothing set up"
	"t_privs_user|--user with a throwaway system account, --read-group: every thread runs as it with the three capabilities; pins and state ACCOUNT:GROUP 0640/2750; SIGHUP attaches again; a member reads, cannot write; others cannot read"
	"t_stop|SIGTERM: clean stop, the same program stays attached, no unexpected errors logged"
)

tap_run "${TESTS[@]}"
