#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# End-to-end tests, TAP output. Usage: tests/e2e/test_e2e.sh BUILD_DIR
#
# The demo's flow with assertions, on an edge host made by lab/lab.sh
# (network namespace, veth pair, own bpffs): the plain agentgated runs there
# with only CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (as etc/agentgated.service
# gives it), XDP attached to the host's eth0; ag-trafficgen sends real frames
# from the wire side, from each agent's addresses and from unclassified ones;
# a UDP sink in the host counts what arrives. Then: ratings move the refill
# rates and each agent's admitted packets/s follow within 5 %; unclassified
# traffic arrives untouched; kill -9 of the daemon under traffic leaves
# enforcement running and a restart restores state without refilling
# buckets; dry-run counts without dropping. Also: scripts/demo.sh itself (and
# that it leaves nothing behind), the lab script, the traffic generator,
# make install, the systemd unit, the alert rules and the Grafana dashboard.
#
# Exit: 0 all passed, 1 something failed, 77 skipped (not root, no netns).
# A trap on EXIT (INT and TERM exit through it) removes the edge hosts (and
# with them every process started in them) and the temporary files.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
# lab_suite_checks, lab_suite_up, fail, in_host, in_wire, cli, api; tap.sh
# shellcheck source=../lib/labsuite.sh
. "$HERE/../lib/labsuite.sh"
lab_suite_checks "${1:-}" "needs root (network namespaces, XDP, bpffs)" agentgate agentgated \
	ag-trafficgen

H=e2e$$
H=${H:0:10}
H2=${H:0:8}b2
TMP=""
CLEANED=""
DEMO_PID=""

cleanup() {
	[ -n "$CLEANED" ] && return
	CLEANED=1
	# The demo tears itself down on TERM.
	[ -n "$DEMO_PID" ] && kill "$DEMO_PID" 2>/dev/null && wait "$DEMO_PID" 2>/dev/null
	"$LAB" down "$H"
	"$LAB" down "$H2"
	tap_remove_tmp "$TMP"
}
tap_traps cleanup

TMP=$(mktemp -d /tmp/age2e.XXXXXX)
lab_suite_up "$H"

# ---- helpers ----------------------------------------------------------------

DAEMON_PID=""
TOP="{}"
# The daemon as the systemd unit runs it: only these capabilities.
CAPS=-all,+bpf,+net_admin,+perfmon

# start_daemon: its command line from tests/lib/agtest (the embedded
# defaults: --config /dev/null; the default listener, 127.0.0.1:9470).
start_daemon() {
	local cmd
	mapfile -d '' cmd < <("$PY" "$ROOT/tests/lib/agtest" daemon-argv --bin "$BUILD/agentgated" \
		--pin "$LAB_PIN" --state "$LAB_STATE" --listen 127.0.0.1:9470 -- \
		--attach "$LAB_IF" --ingest-socket "$LAB_DIR/ingest.sock")
	[ "${#cmd[@]}" -gt 0 ] || { fail "agtest daemon-argv failed"; return 1; }
	ip netns exec "$LAB_NS" setpriv --bounding-set "$CAPS" -- "${cmd[@]}" >>"$TMP/daemon.log" 2>&1 &
	DAEMON_PID=$!
	for _ in $(seq 1 100); do
		in_host curl -sf -o /dev/null http://127.0.0.1:9470/readyz && return 0
		running "$DAEMON_PID" || break
		sleep 0.1
	done
	diag "$(tail -n 20 "$TMP/daemon.log")"
	return 1
}

# measure SECONDS: TOP = one `agentgate top` frame over SECONDS.
measure() {
	cli top --interval "$1" --count 1
	TOP=$OUT
	[ "$RC" -eq 0 ] || fail "top: $OUT"
}

# within5 AGENT: the agent's admitted packets/s in TOP is its rate +- 5 %.
within5() {
	json_check "$TOP" "any(abs(a['passed_pps'] - a['rate']) <= 0.05 * a['rate'] \
for a in d['agents'] if a['name'] == '$1')" ||
		fail "$1: admitted packets/s not within 5 % of the rate"
}

sink_total() {
	jget "$(cat "$TMP/sink.json")" "d['$1']['total']"
}

# ---- cases --------------------------------------------------------------------

t_lab() {
	local env2 k
	env2=$("$LAB" up "$H2") || return 1
	eval "$(sed 's/^LAB_/L2_/' <<<"$env2")"
	# shellcheck disable=SC2154
	[ "$(ip -n "$L2_NS" -o link show eth0 | grep -o 'link/ether [0-9a-f:]*')" = "link/ether $L2_MAC" ] ||
		{ fail "eth0 in $L2_NS lacks MAC $L2_MAC"; return 1; }
	ip -n "$L2_WIRE_NS" -o addr show wire0 | grep -q "inet $L2_WIRE_ADDR4/24" || { fail "wire0 address"; return 1; }
	ip -n "$L2_NS" -o addr show eth0 | grep -q "inet6 $L2_ADDR6/64" || { fail "eth0 IPv6 address"; return 1; }
	[ "$(stat -f -c %T "$L2_BPFFS")" = bpf_fs ] || { fail "no bpffs at $L2_BPFFS"; return 1; }
	ip netns exec "$L2_NS" ping -c1 -W2 "$L2_WIRE_ADDR4" >/dev/null || { fail "no ping across the veth"; return 1; }
	k=$("$LAB" list | grep -c "^$H2 ")
	[ "$k" -eq 1 ] || { fail "lab list does not show $H2"; return 1; }
	"$LAB" up "$H2" >/dev/null 2>"$TMP/err"
	[ $? -eq 1 ] && grep -q "exists" "$TMP/err" || { fail "a second up of $H2 was not refused"; return 1; }
	"$LAB" up 'bad name!' >/dev/null 2>&1
	[ $? -eq 1 ] || { fail "an invalid name was not refused"; return 1; }
	"$LAB" down "$H2" || return 1
	ip netns list | grep -q "agl-$H2" && { fail "namespaces left after down"; return 1; }
	mountpoint -q "$L2_BPFFS" 2>/dev/null && { fail "bpffs left mounted"; return 1; }
	[ -e "$L2_DIR" ] && { fail "$L2_DIR left"; return 1; }
	"$LAB" down "$H2" || { fail "down of a removed host failed"; return 1; }
}

# trafficgen_counts ENGINE: two flows (IPv4, IPv6), two threads, 800 frames
# each, through ENGINE; every frame received, 100 from each source. Where
# the kernel refuses the engine (exit 3), the case is skipped with its reason.
trafficgen_counts() {
	local engine=$1 out sink rc
	ip netns exec "$LAB_NS" "$PY" "$HERE/udpsink.py" "$TMP/gen-$engine.json" "0.0.0.0:9100" "[::]:9101" &
	sink=$!
	sleep 0.5
	out=$(in_wire "$BUILD/ag-trafficgen" --engine "$engine" --dev "$LAB_WIRE_IF" --dst-mac "$LAB_MAC" \
		--threads 2 --json --rate 4000 --count 800 \
		--src 10.5.0.0/29 --dst "$LAB_ADDR4" --dport 9100 \
		--src fd00:5::1-fd00:5::8 --dst "$LAB_ADDR6" --dport 9101 --size 300 2>"$TMP/gen-$engine.err")
	rc=$?
	if [ "$rc" -eq 3 ] && [ "$engine" = live ]; then
		kill "$sink"
		wait "$sink"
		SKIP_REASON="the kernel refuses live frames here: $(sed 's/^ag-trafficgen: //' "$TMP/gen-$engine.err")"
		return 77
	fi
	[ "$rc" -eq 0 ] || { kill "$sink"; fail "ag-trafficgen --engine $engine: exit $rc: $out $(cat "$TMP/gen-$engine.err")"; return 1; }
	sleep 0.5
	kill "$sink"
	wait "$sink"
	json_check "$out" "d['engine'] == '$engine'" "d['engine_reason'] == 'asked for'" \
		"d['sent'] == 1600" "[f['sent'] for f in d['flows']] == [800, 800]" \
		"[f['sources'] for f in d['flows']] == [8, 8]" || return 1
	json_check "$(cat "$TMP/gen-$engine.json")" \
		"d['0.0.0.0:9100']['total'] == 800" "d['[::]:9101']['total'] == 800" \
		"sorted(d['0.0.0.0:9100']['sources'].items()) == [('10.5.0.%d' % i, 100) for i in range(8)]" \
		"sorted(d['[::]:9101']['sources'].items()) == [('fd00:5::%d' % i, 100) for i in range(1, 9)]"
}

t_trafficgen_packet() { trafficgen_counts packet; }
t_trafficgen_live() { trafficgen_counts live; }

# auto: the report names the engine that ran and why, and it is the one the
# kernel allows (a live probe decides: --engine live exits 3 where refused).
t_trafficgen_auto() {
	local out live_rc want
	in_wire "$BUILD/ag-trafficgen" --engine live --dev "$LAB_WIRE_IF" --dst-mac "$LAB_MAC" --count 1 \
		--src 10.5.0.1 --dst "$LAB_ADDR4" --dport 9 >/dev/null 2>&1
	live_rc=$?
	case $live_rc in 0) want=live ;; 3) want=packet ;; *) fail "--engine live: exit $live_rc"; return 1 ;; esac
	out=$(in_wire "$BUILD/ag-trafficgen" --dev "$LAB_WIRE_IF" --dst-mac "$LAB_MAC" --json --count 50 \
		--src 10.5.0.1 --dst "$LAB_ADDR4" --dport 9 2>"$TMP/auto.err") || { fail "auto: $(cat "$TMP/auto.err")"; return 1; }
	json_check "$out" "d['engine'] == '$want'" "d['sent'] == 50" \
		"d['engine_reason'].startswith('auto: ')" || return 1
	grep -q "^ag-trafficgen: engine $want (auto: " "$TMP/auto.err" || { fail "no engine line on stderr: $(cat "$TMP/auto.err")"; return 1; }
	[ "$want" = live ] || json_check "$out" "'live frames unavailable' in d['engine_reason']"
}

# A real refusal of BPF: without CAP_BPF and CAP_NET_ADMIN the frame program
# cannot be loaded. auto falls back to AF_PACKET (CAP_NET_RAW) and says why;
# --engine live exits 3 naming the reason; without CAP_NET_RAW no engine runs.
t_trafficgen_no_bpf() {
	local out rc
	out=$(in_wire setpriv --bounding-set -all,+net_raw -- "$BUILD/ag-trafficgen" --dev "$LAB_WIRE_IF" \
		--dst-mac "$LAB_MAC" --json --count 20 --src 10.5.0.1 --dst "$LAB_ADDR4" --dport 9 2>"$TMP/nobpf.err") ||
		{ fail "auto without BPF: $(cat "$TMP/nobpf.err")"; return 1; }
	json_check "$out" "d['engine'] == 'packet'" "d['sent'] == 20" \
		"d['engine_reason'].startswith('auto: live frames unavailable: ')" || return 1
	in_wire setpriv --bounding-set -all,+net_raw -- "$BUILD/ag-trafficgen" --engine live --dev "$LAB_WIRE_IF" \
		--count 20 --src 10.5.0.1 --dst "$LAB_ADDR4" >/dev/null 2>"$TMP/nobpf.err"
	rc=$?
	[ "$rc" -eq 3 ] && grep -q -- "--engine live cannot run here: cannot load the frame program" "$TMP/nobpf.err" ||
		{ fail "--engine live without BPF: exit $rc: $(cat "$TMP/nobpf.err")"; return 1; }
	in_wire setpriv --bounding-set -all -- "$BUILD/ag-trafficgen" --dev "$LAB_WIRE_IF" \
		--count 20 --src 10.5.0.1 --dst "$LAB_ADDR4" >/dev/null 2>"$TMP/nobpf.err"
	rc=$?
	[ "$rc" -eq 3 ] && grep -q -- "--engine packet cannot run here: .*needs CAP_NET_RAW" "$TMP/nobpf.err" ||
		{ fail "no capabilities: exit $rc: $(cat "$TMP/nobpf.err")"; return 1; }
}

t_trafficgen_errors() {
	local args err
	while IFS='|' read -r args err; do
		# shellcheck disable=SC2086
		in_wire "$BUILD/ag-trafficgen" $args >/dev/null 2>"$TMP/err"
		[ $? -eq 2 ] || { fail "ag-trafficgen $args: exit code not 2"; return 1; }
		grep -q -- "$err" "$TMP/err" || { fail "ag-trafficgen $args: no '$err' in: $(cat "$TMP/err")"; return 1; }
	done <<EOF
--dev wire0 --src 10.0.0.1|--dst
--dev wire0 --src 10.0.0.1 --dst fd00::1|not an address of its family
--dev wire0 --src 10.0.0.1 --dst 10.0.0.2 --size 41|too small
--dev wire0 --src 10.0.0.9-10.0.0.1 --dst 10.0.0.2|ascending
--dev wire0 --src fd00::/64 --dst fd00::1|at most 2^32
--dev nosuchdev --src 10.0.0.1 --dst 10.0.0.2|no such interface
--dev wire0 --src 10.0.0.1 --dst 10.0.0.2 --rate fast|invalid value
--dev wire0 --engine xdp --src 10.0.0.1 --dst 10.0.0.2|use auto, live or packet
EOF
}

t_daemon_start() {
	local caps
	start_daemon || return 1
	caps=$(grep '^CapEff' "/proc/$DAEMON_PID/status" | awk '{print $2}')
	# bit 12 CAP_NET_ADMIN, 38 CAP_PERFMON, 39 CAP_BPF
	[ "$caps" = 000000c000001000 ] || { fail "CapEff $caps, want only bpf, net_admin, perfmon"; return 1; }
	cli status
	json_check "$OUT" "[l['ifname'] for l in d['links']] == ['eth0']" \
		"d['links'][0]['mode'] == 'native'" || return 1
	api PUT /v1/agents/good '{"rate":1500}' && [ "$CODE" = 201 ] || { fail "PUT good: $CODE $BODY"; return 1; }
	api PUT /v1/agents/average '{"rate":1500}' && [ "$CODE" = 201 ] || return 1
	api PUT /v1/agents/bad '{"rate":1500}' && [ "$CODE" = 201 ] || return 1
	api PUT /v1/agents/v6host '{"rate":700,"pinned":true}' && [ "$CODE" = 201 ] || return 1
	api POST /v1/rules '{"prefix":"10.1.0.0/24","agent":"good"}' && [ "$CODE" = 201 ] || { fail "rule: $CODE $BODY"; return 1; }
	api POST /v1/rules '{"prefix":"10.2.0.0/24","port":9000,"agent":"average"}' && [ "$CODE" = 201 ] || return 1
	api POST /v1/rules '{"prefix":"2001:db8:bad::/64","agent":"bad"}' && [ "$CODE" = 201 ] || return 1
	api POST /v1/rules '{"prefix":"2001:db8:77::7/128","agent":"v6host"}' && [ "$CODE" = 201 ] || return 1
	# What arrives: the agents' port and the unclassified flow's.
	ip netns exec "$LAB_NS" "$PY" "$HERE/udpsink.py" "$TMP/sink.json" "0.0.0.0:9000" "[::]:9000" "0.0.0.0:9200" &
	echo $! >"$TMP/sink.pid"
	sleep 0.5
	# Each agent offered 6000 packets/s; 4000 unclassified frames at 2000/s.
	ip netns exec "$LAB_WIRE_NS" "$BUILD/ag-trafficgen" --engine "$TG_ENGINE" --dev "$LAB_WIRE_IF" \
		--dst-mac "$LAB_MAC" --duration 600 --dport 9000 \
		--src 10.1.0.0/24 --dst "$LAB_ADDR4" --rate 6000 \
		--src 10.2.0.0/24 --dst "$LAB_ADDR4" --rate 6000 \
		--src 2001:db8:bad::1-2001:db8:bad::ff --dst "$LAB_ADDR6" --rate 6000 \
		--src 2001:db8:77::7 --dst "$LAB_ADDR6" --rate 3000 \
		--src 10.9.0.0/24 --dst "$LAB_ADDR4" --dport 9200 --rate 2000 --count 4000 \
		>"$TMP/gen.out" 2>&1 &
	echo $! >"$TMP/gen.pid"
}

# 20 ratings each: good 5* and average 3* over HTTP, bad 1* over the ingest
# socket. Default alpha 10: 1500 + 20 * 20 = 1900, 1500, 1500 - 400 = 1100.
t_rates_follow_ratings() {
	local i batch_g="[" batch_a="[" n
	for i in $(seq 1 20); do
		batch_g+="{\"id\":\"g$i\",\"agent\":\"good\",\"user\":\"u$i\",\"score\":5},"
		batch_a+="{\"id\":\"a$i\",\"agent\":\"average\",\"user\":\"u$i\",\"score\":3},"
	done
	api POST /v1/ratings "${batch_g%,}]" && [ "$CODE" = 200 ] || { fail "ratings: $CODE $BODY"; return 1; }
	api POST /v1/ratings "${batch_a%,}]" && [ "$CODE" = 200 ] || return 1
	for i in $(seq 1 20); do
		printf '{"id":"b%d","agent":"bad","user":"u%d","score":1}\n' "$i" "$i"
	done | in_host "$PY" "$ROOT/tests/daemon/ingest.py" "$LAB_DIR/ingest.sock" >"$TMP/ingest.out" ||
		{ fail "ingest socket: $(cat "$TMP/ingest.out")"; return 1; }
	for n in good:1900:5 average:1500:3 bad:1100:1; do
		api GET "/v1/agents/${n%%:*}"
		json_check "$BODY" "d['rate'] == $(cut -d: -f2 <<<"$n")" "d['ratings'] == 20" \
			"d['mean_score'] == ${n##*:}" || return 1
	done
sleep 1
	measure 4 || return 1
	within5 good && within5 average && within5 bad || return 1
	# Traffic above the rate was dropped, not merely missing.
	json_check "$TOP" "all(a['dropped_pps'] > 3000 for a in d['agents'] if a['name'] in ('good','average','bad'))"
}

t_ipv6_host_rule() {
	# v6host: one IPv6 source (/128 rule), 3000 packets/s offered, rate 700 pinned.
	within5 v6host || return 1
	cli agent show v6host
	json_check "$OUT" "d['rate'] == 700" "d['pinned'] is True" "d['dropped_packets'] > 0"
}

t_unclassified_untouched() {
	local got=0 spread
	for _ in $(seq 1 100); do
		got=$(sink_total "0.0.0.0:9200")
		[ "$got" -ge 4000 ] && break
		sleep 0.1
	done
	sleep 0.5
	got=$(sink_total "0.0.0.0:9200")
	[ "$got" -eq 4000 ] || { fail "the host received $got of 4000 unclassified datagrams"; return 1; }
	# 4000 frames over 256 sources in turn: 160 sources sent 16, 96 sent 15.
	spread=$(jget "$(cat "$TMP/sink.json")" \
		"sorted(d['0.0.0.0:9200']['sources'].values()) == [15] * 96 + [16] * 160")
	[ "$spread" = True ] || { fail "sources not spread over 10.9.0.0/24"; return 1; }
	# The datapath passed them (the host's own neighbour discovery is
	# unclassified too, hence at least 4000) and dropped none.
	cli stats
	json_check "$OUT" "d['unclassified_passed'] >= 4000" "d['unclassified_dropped'] == 0"
}

t_kill9_enforcement() {
	local prog link before after n
	cli status
	prog=$(jget "$OUT" "d['links'][0]['prog_id']")
	link=$(jget "$OUT" "d['links'][0]['link_id']")
	cli agent show good
	before=$(jget "$OUT" "d['passed_packets']")
	kill -9 "$DAEMON_PID"
	wait "$DAEMON_PID" 2>/dev/null
	running "$DAEMON_PID" && { fail "daemon survived kill -9"; return 1; }
	# No daemon: the datapath keeps the last rates.
	measure 4 || return 1
	within5 good && within5 average && within5 bad || return 1
	cli status
	json_check "$OUT" "d['links'][0]['prog_id'] == $prog" || { fail "program changed while the daemon was down"; return 1; }
	# The restarted daemon takes the pinned link over, keeping the program
	# it finds running there (its own version): same link, same program.
	start_daemon || return 1
	cli status
	json_check "$OUT" "d['links'][0]['link_id'] == $link" "d['links'][0]['prog_id'] == $prog" ||
		return 1
	for n in good:1900:5 average:1500:3 bad:1100:1; do
		api GET "/v1/agents/${n%%:*}"
		json_check "$BODY" "d['rate'] == $(cut -d: -f2 <<<"$n")" "d['ratings'] == 20" \
			"d['mean_score'] == ${n##*:}" \
			"d['tokens'] < 0.5 * d['burst']" || { fail "${n%%:*} after restart"; return 1; }
	done
	api GET /v1/agents/good
	after=$(jget "$BODY" "d['passed_packets']")
	[ "$after" -gt "$before" ] || { fail "passed counter went from $before to $after"; return 1; }
	# The restored state goes on learning: one more 5* moves 1900 -> 1920.
	api POST /v1/ratings '{"id":"g21","agent":"good","score":5}'
	json_check "$BODY" "d['applied'] == 1" "d['agents'][0]['rate'] == 1920" || return 1
	# And a rating id from before the crash is still a duplicate.
	api POST /v1/ratings '{"id":"g1","agent":"good","score":5}'
	json_check "$BODY" "d['applied'] == 0" "d['duplicates'] == 1" || return 1
	sleep 1
	measure 3 || return 1
	within5 good
}

t_dry_run() {
	local wd0 wd1
	cli agent show bad
	wd0=$(jget "$OUT" "d.get('would_drop_packets', 0)")
	cli config set dry-run on
	[ "$RC" -eq 0 ] || { fail "dry-run on: $OUT"; return 1; }
	sleep 0.5
	measure 3
	# Everything passes; over-limit packets are counted as would-drops.
	json_check "$TOP" "[a['dropped_pps'] for a in d['agents'] if a['name']=='bad'] == [0]" \
		"abs([a['passed_pps'] for a in d['agents'] if a['name']=='bad'][0] - 6000) <= 300" || {
		cli config set dry-run off
		return 1
	}
	cli stats
	json_check "$OUT" "d['dryrun_would_drop'] > 0" || return 1
	cli agent show bad
	wd1=$(jget "$OUT" "d.get('would_drop_packets', 0)")
	cli config set dry-run off
	[ "$wd1" -gt "$wd0" ] || { fail "would_drop_packets did not grow ($wd0 -> $wd1)"; return 1; }
	sleep 1
	measure 3
	within5 bad || return 1
	json_check "$TOP" "[a['dropped_pps'] for a in d['agents'] if a['name']=='bad'][0] > 3000"
}

t_metrics_snapshot() {
	# A rule feed (a documentation range no traffic here comes from): its
	# series are exported.
	echo "192.0.2.0/24" >"$TMP/feed.txt"
	api PUT /v1/agents/good/feed "{\"source\":\"$TMP/feed.txt\"}"
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		api GET /v1/agents/good/feed
		[ "$(jget "$BODY" "d.get('status')" 2>/dev/null)" = ok ] && break
		sleep 0.3
	done
	in_host curl -sf http://127.0.0.1:9470/metrics >"$TMP/metrics.txt" || return 1
	api DELETE /v1/agents/good/feed
	grep -q '^agentgate_rule_feed_prefixes{agent="good"} 1$' "$TMP/metrics.txt" ||
		{ fail "no feed series for good: $(grep rule_feed "$TMP/metrics.txt")"; return 1; }
	grep -q '^agentgate_packets_total{agent="good",verdict="drop"}' "$TMP/metrics.txt" ||
		{ fail "no drop counter for good in /metrics"; return 1; }
	grep -q '^agentgate_refill_rate{agent="good"} 1920' "$TMP/metrics.txt" ||
		{ fail "refill_rate of good is not 1920: $(grep refill_rate "$TMP/metrics.txt")"; return 1; }
}

t_daemon_stop() {
	local rc
	kill "$(cat "$TMP/gen.pid")" 2>/dev/null
	kill -TERM "$DAEMON_PID"
	wait "$DAEMON_PID"
	rc=$?
	[ "$rc" -eq 0 ] || { fail "SIGTERM: exit code $rc"; return 1; }
	cli status
	json_check "$OUT" "[l['ifname'] for l in d['links']] == ['eth0']" ||
		{ fail "XDP not attached after SIGTERM"; return 1; }
	kill "$(cat "$TMP/sink.pid")" 2>/dev/null
	grep -Ei 'error|warning' "$TMP/daemon.log" | grep -v 'authentication is off' &&
		{ fail "errors in the daemon log"; return 1; }
	return 0
}

t_demo() {
	local rc
	# The make target itself: deps (all present), build (up to date), demo.
	DEMO_ENGINE=$TG_ENGINE DEMO_RATINGS_S=8 DEMO_SUMMARY_JSON=$TMP/demo.json \
		make -s -C "$ROOT" demo OUTPUT="$BUILD" >"$TMP/demo.out" 2>&1 &
	DEMO_PID=$!
	wait "$DEMO_PID"
	rc=$?
	DEMO_PID=""
	[ "$rc" -eq 0 ] || { diag "$(tail -n 30 "$TMP/demo.out")"; return 1; }
	# good: 1500 + 8 s * 10/s * 20 = 3100; bad falls to r_min 1.
	json_check "$(cat "$TMP/demo.json")" \
		"[a['agent'] for a in d['agents']] == ['good', 'average', 'bad']" \
		"[a['rate_end'] for a in d['agents']] == [3100, 1500, 1]" \
		"[a['ratings'] for a in d['agents']] == [80, 80, 80]" \
		"[a['mean_score'] for a in d['agents']] == [5, 3, 1]" \
		"all(a['tracking'] for a in d['agents'])" \
		"all(abs(a['deviation']) <= 0.05 for a in d['agents'] if a['rate_end'] >= 100)" \
		"abs(d['agents'][2]['admitted_pps'] - 1) <= 2.0 / 5" \
		"d['unclassified']['dropped_pps'] == 0" \
		"abs(d['unclassified']['passed_pps'] - 2000) <= 100" || return 1
	grep -q 'removed the edge host' "$TMP/demo.out" || { fail "no teardown message"; return 1; }
	# The last line states what was measured, with the engine that ran.
	tail -n 1 "$TMP/demo.out" | grep -Eq '^Measured over the last 5 s \((live|packet) engine\): good [0-9.]+/s admitted at refill 3100/s \([-+][0-9.]+ %\), average .*, bad .*: each within 5 % of its refill rate; unclassified [0-9]+/s passed, none dropped$' ||
		{ fail "last line: $(tail -n 1 "$TMP/demo.out")"; return 1; }
	no_demo_left
}

# demo_fails WHAT: scripts/demo.sh with BUILD=$TMP/fake (the generator
# wrapped) exits 1, its last line a failure naming WHAT, nothing left.
demo_fails() {
	local rc
	DEMO_RATINGS_S=4 "$ROOT/scripts/demo.sh" "$TMP/fake" >"$TMP/demo-f.out" 2>&1 &
	DEMO_PID=$!
	wait "$DEMO_PID"
	rc=$?
	DEMO_PID=""
	[ "$rc" -eq 1 ] || { fail "exit code $rc, want 1"; diag "$(tail -n 20 "$TMP/demo-f.out")"; return 1; }
	grep -Eq "$1" "$TMP/demo-f.out" || { fail "no '$1' in:"; diag "$(tail -n 20 "$TMP/demo-f.out")"; return 1; }
	grep -q '^Measured' "$TMP/demo-f.out" && { fail "a failed demo claims a measurement"; return 1; }
	grep -q 'removed the edge host' "$TMP/demo-f.out" || { fail "no teardown"; return 1; }
	no_demo_left
}

# A demo whose traffic is made to fail exits 1 saying why: the generator
# offered 500 packets/s instead of 8000 (good and average cannot reach their
# refill rates: the agents that are off and by how much), stopping after 3 s
# (its early exit reported), an engine it does not have (its error printed).
t_demo_traffic_fails() {
	mkdir -p "$TMP/fake" && ln -sf "$BUILD/agentgate" "$BUILD/agentgated" "$TMP/fake/" || return 1
	printf '#!/bin/bash\na=(); for x in "$@"; do [ "$x" = 8000 ] && x=500; a+=("$x"); done\nexec %s "${a[@]}"\n' \
		"$BUILD/ag-trafficgen" >"$TMP/fake/ag-trafficgen"
	chmod +x "$TMP/fake/ag-trafficgen"
	demo_fails '^demo: off: good [0-9.]+/s admitted at refill [0-9]+/s \(-[0-9.]+ %\)' || return 1
	grep -q '^demo: FAILED: measured over the last 5 s' "$TMP/demo-f.out" || { fail "no FAILED line"; return 1; }
	printf '#!/bin/sh\nexec %s "$@" --duration 3\n' "$BUILD/ag-trafficgen" >"$TMP/fake/ag-trafficgen"
	demo_fails 'the traffic generator stopped early \(exit code 0\)' || return 1
	printf '#!/bin/sh\nexec %s "$@" --engine none\n' "$BUILD/ag-trafficgen" >"$TMP/fake/ag-trafficgen"
	demo_fails "demo:   ag-trafficgen: --engine 'none': use auto, live or packet"
}

# As Ctrl-C does it: SIGINT mid-run (env --default-signal: a background job
# would otherwise start with SIGINT ignored).
t_demo_interrupted() {
	local rc
	env --default-signal=INT "$ROOT/scripts/demo.sh" "$BUILD" >"$TMP/demo-int.out" 2>&1 &
	DEMO_PID=$!
	for _ in $(seq 1 150); do
		grep -q 'warmup' "$TMP/demo-int.out" && break
		sleep 0.1
	done
	grep -q 'warmup' "$TMP/demo-int.out" || { fail "the demo did not start its table"; return 1; }
	kill -INT "$DEMO_PID"
	wait "$DEMO_PID"
	rc=$?
	DEMO_PID=""
	[ "$rc" -eq 130 ] || { fail "exit code $rc, want 130"; diag "$(tail -n 20 "$TMP/demo-int.out")"; return 1; }
	grep -q 'removed the edge host' "$TMP/demo-int.out" || { fail "no teardown on SIGINT"; return 1; }
	no_demo_left
}

# Nothing of a demo run is left: namespaces, lab dir, bpffs, processes.
no_demo_left() {
	ip netns list | grep -q 'agl-demo' && { fail "a demo namespace is left"; return 1; }
	ls -d /run/agentgate-lab/demo* >/dev/null 2>&1 && { fail "a demo lab dir is left"; return 1; }
	grep -q ' /run/agentgate-lab/demo' /proc/mounts && { fail "a demo bpffs is left mounted"; return 1; }
	pgrep -f "$BUILD/(ag-trafficgen|agentgated) .*agentgate-lab/demo" >/dev/null &&
		{ fail "a demo process is left"; return 1; }
	pgrep -f "$BUILD/ag-trafficgen .*--src 10.9.0.0/24 --dst" >/dev/null &&
		{ fail "a demo traffic generator is left"; return 1; }
	return 0
}

t_install() {
	local d=$TMP/inst f unit
	make -s -C "$ROOT" install OUTPUT="$BUILD" DESTDIR="$d" PREFIX=/usr >"$TMP/inst.out" 2>&1 ||
		{ fail "make install: $(cat "$TMP/inst.out")"; return 1; }
	for f in usr/sbin/agentgate:755 usr/sbin/agentgated:755 usr/share/man/man8/agentgate.8:644 \
		usr/share/man/man8/agentgated.8:644 usr/lib/systemd/system/agentgated.service:644 \
		etc/agentgate/agentgated.conf:644 usr/share/agentgate/grafana-dashboard.json:644 \
		usr/share/agentgate/agentgate-alerts.yml:644; do
		[ "$(stat -c %a "$d/${f%%:*}" 2>/dev/null)" = "${f##*:}" ] ||
			{ fail "$d/${f%%:*}: missing or not mode ${f##*:}"; return 1; }
	done
	unit=$d/usr/lib/systemd/system/agentgated.service
	grep -qx 'ExecStart=/usr/sbin/agentgated --config /etc/agentgate/agentgated.conf' "$unit" ||
		{ fail "ExecStart does not follow PREFIX"; return 1; }
	"$d/usr/sbin/agentgated" --version >/dev/null || { fail "installed agentgated does not run"; return 1; }
	# An application builds against the installed library with pkg-config
	# alone (docs/LOCAL.md), and its check reaches a bucket.
	for f in usr/lib/libagentgate.a:644 usr/include/agentgate.h:644 \
		usr/include/agentgate/abi.h:644 usr/lib/pkgconfig/agentgate.pc:644; do
		[ "$(stat -c %a "$d/${f%%:*}" 2>/dev/null)" = "${f##*:}" ] ||
			{ fail "$d/${f%%:*}: missing or not mode ${f##*:}"; return 1; }
	done
	PKG_CONFIG_SYSROOT_DIR=$d PKG_CONFIG_LIBDIR=$d/usr/lib/pkgconfig \
		cc -O2 -o "$TMP/local_consume" "$ROOT/examples/local_consume.c" \
		$(PKG_CONFIG_SYSROOT_DIR=$d PKG_CONFIG_LIBDIR=$d/usr/lib/pkgconfig \
			pkg-config --cflags --libs agentgate) >"$TMP/cc.out" 2>&1 ||
		{ fail "the example does not build against the installed library: $(cat "$TMP/cc.out")"; return 1; }
	"$TMP/local_consume" --pin-root "$TMP/no-such-root" a >"$TMP/lc.out" 2>&1
	[ $? -eq 2 ] && grep -q "no-such-root" "$TMP/lc.out" ||
		{ fail "the installed example on a missing pin root: $(cat "$TMP/lc.out")"; return 1; }
	# The unit checked by systemd itself, ExecStart pointed at the installed binary.
	if command -v systemd-analyze >/dev/null 2>&1; then
		sed "s|^ExecStart=/usr/sbin/|ExecStart=$d/usr/sbin/|" "$unit" >"$TMP/agentgated.service"
		systemd-analyze verify --man=no "$TMP/agentgated.service" >"$TMP/verify.out" 2>&1
		[ $? -eq 0 ] && [ ! -s "$TMP/verify.out" ] ||
			{ fail "systemd-analyze verify: $(cat "$TMP/verify.out")"; return 1; }
		# The three it keeps, and those it needs once at start to become the
		# dedicated account (dropped in every thread after).
		grep -qx 'CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SETUID CAP_SETGID CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE CAP_SETPCAP' "$unit" &&
			grep -qx 'AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON' "$unit" ||
			{ fail "the unit's capabilities: $(grep Capabilit "$unit")"; return 1; }
	fi
	# A second install keeps an edited config; uninstall keeps it too.
	echo "# edited" >>"$d/etc/agentgate/agentgated.conf"
	make -s -C "$ROOT" install OUTPUT="$BUILD" DESTDIR="$d" PREFIX=/usr >"$TMP/inst.out" 2>&1 || return 1
	tail -n1 "$d/etc/agentgate/agentgated.conf" | grep -q '^# edited' || { fail "install overwrote the config"; return 1; }
	make -s -C "$ROOT" uninstall DESTDIR="$d" PREFIX=/usr >/dev/null 2>&1 || return 1
	[ -e "$d/usr/sbin/agentgated" ] || [ -e "$unit" ] || [ -e "$d/usr/share/agentgate" ] ||
		[ -e "$d/usr/lib/agentgate" ] || [ -e "$d/usr/lib/libagentgate.a" ] ||
		[ -e "$d/usr/include/agentgate" ] || [ -e "$d/usr/lib/pkgconfig/agentgate.pc" ] &&
		{ fail "uninstall left files"; return 1; }
	[ -f "$d/etc/agentgate/agentgated.conf" ] || { fail "uninstall removed the config"; return 1; }
}

# make run IFACE=eth0 on the edge host (its pins and state through RUN_ARGS,
# /sys/fs/bpf being remounted in the namespace): serves, attaches, and stops
# on SIGTERM to its process group leaving XDP attached.
t_make_run() {
	local pid
	cli detach eth0 # the daemon cases left their program attached
	ip netns exec "$LAB_NS" setsid make -s -C "$ROOT" run OUTPUT="$BUILD" IFACE=eth0 \
		RUN_ARGS="--config /dev/null --pin-path $LAB_DIR/bpf/run --state-dir $LAB_DIR/run-state" \
		>"$TMP/run.out" 2>&1 &
	pid=$!
	for _ in $(seq 1 100); do
		in_host curl -sf -o /dev/null http://127.0.0.1:9470/readyz && break
		sleep 0.1
	done
	OUT=$(in_host "$CLI" -j --pin-path "$LAB_DIR/bpf/run" status 2>&1)
	# As Ctrl-C does: the signal goes to make and agentgated alike.
	kill -TERM -- "-$pid"
	wait "$pid"
	json_check "$OUT" "[l['ifname'] for l in d['links']] == ['eth0']" ||
		{ diag "$(cat "$TMP/run.out")"; return 1; }
	grep -q 'serving http://127.0.0.1:9470' "$TMP/run.out" &&
		grep -q 'SIGTERM: shutting down (XDP stays attached)' "$TMP/run.out" ||
		{ fail "no serving or clean shutdown line:"; diag "$(cat "$TMP/run.out")"; return 1; }
	OUT=$(in_host "$CLI" -j --pin-path "$LAB_DIR/bpf/run" status 2>&1)
	json_check "$OUT" "[l['ifname'] for l in d['links']] == ['eth0']" || return 1
	in_host "$CLI" --pin-path "$LAB_DIR/bpf/run" detach eth0 >/dev/null
}

t_make_run_usage() {
	make -s -C "$ROOT" run OUTPUT="$BUILD" >/dev/null 2>"$TMP/err"
	[ $? -ne 0 ] && grep -q 'usage: make run IFACE=DEV' "$TMP/err" || { fail "make run without IFACE: $(cat "$TMP/err")"; return 1; }
	make -s -C "$ROOT" run OUTPUT="$BUILD" IFACE=nosuchdev0 >/dev/null 2>"$TMP/err"
	[ $? -ne 0 ] && grep -q "no interface 'nosuchdev0'" "$TMP/err" || { fail "make run IFACE=nosuchdev0: $(cat "$TMP/err")"; return 1; }
}

t_alert_rules() {
	command -v promtool >/dev/null 2>&1 || { SKIP_REASON="promtool not found"; return 77; }
	promtool check rules "$ROOT/etc/agentgate-alerts.yml" >"$TMP/p.out" 2>&1 || { diag "$(cat "$TMP/p.out")"; return 1; }
	(cd "$HERE" && promtool test rules alerts.test.yml) >"$TMP/p.out" 2>&1 || { diag "$(cat "$TMP/p.out")"; return 1; }
	# Every metric an alert uses is one the daemon exports.
	"$PY" - "$ROOT/etc/agentgate-alerts.yml" "$TMP/metrics.txt" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
exported = set(re.findall(r"^(agentgate_[a-z_]+)", open(sys.argv[2]).read(), re.M))
used = set(re.findall(r"\b(agentgate_[a-z_]+)", "\n".join(re.findall(r"expr: (?:>-\n)?((?:.*\n)+?)\s+(?:for|labels):", text))))
missing = sorted(used - exported)
if missing or not used:
    print("# alert rules use metrics not exported:", missing or "none found")
    sys.exit(1)
EOF
}

t_dashboard() {
	command -v promtool >/dev/null 2>&1 || { SKIP_REASON="promtool not found"; return 77; }
	# Every panel query parses as PromQL (as a recording rule, with Grafana's
	# variables filled in) and uses only metrics the daemon exports.
	"$PY" - "$ROOT/etc/grafana-dashboard.json" "$TMP/metrics.txt" "$TMP/dash-rules.yml" <<'EOF' || return 1
import json, re, sys
d = json.load(open(sys.argv[1]))
exported = set(re.findall(r"^(agentgate_[a-z_]+)", open(sys.argv[2]).read(), re.M))
exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
bad = []
if len(exprs) < 10 or any(not p.get("targets") for p in d["panels"]):
    bad.append("panels without queries")
for e in exprs:
    for m in re.findall(r"\b(agentgate_[a-z_]+)", e):
        if m not in exported:
            bad.append("%s uses %s" % (e, m))
want = {"agentgate_refill_rate", "agentgate_bucket_tokens", "agentgate_packets_total", "agentgate_ratings_total"}
used = {m for e in exprs for m in re.findall(r"\b(agentgate_[a-z_]+)", e)}
if not want <= used:
    bad.append("missing panels for %s" % sorted(want - used))
with open(sys.argv[3], "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        e = e.replace("$__rate_interval", "1m").replace('"$agent"', '".*"').replace('"$instance"', '".*"')
        f.write("      - record: dashboard:q%d\n        expr: %s\n" % (i, json.dumps(e)))
for b in bad:
    print("# " + b)
sys.exit(1 if bad else 0)
EOF
	promtool check rules "$TMP/dash-rules.yml" >"$TMP/p.out" 2>&1 || { diag "$(cat "$TMP/p.out")"; return 1; }
}

TESTS=(
	"t_lab|lab/lab.sh: up makes netns, veth with MACs and addresses, bpffs; duplicate and bad names refused; down removes all"
	"t_trafficgen_packet|ag-trafficgen --engine packet: two flows (IPv4, IPv6), two threads: 800 frames each, 100 per source, all received"
	"t_trafficgen_live|ag-trafficgen --engine live: the same (skipped with the kernel's reason where live frames are refused)"
	"t_trafficgen_auto|ag-trafficgen --engine auto: runs the engine the kernel allows and says which and why"
	"t_trafficgen_no_bpf|ag-trafficgen without CAP_BPF: auto falls back to AF_PACKET saying why; live exits 3 naming the reason"
	"t_trafficgen_errors|ag-trafficgen: bad arguments exit 2 naming the problem"
	"t_daemon_start|agentgated with only CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON: attached native, agents and rules over HTTP"
	"t_rates_follow_ratings|20 ratings each (HTTP and ingest socket): rates 1900/1500/1100; admitted pps within 5 % (bad over IPv6)"
	"t_ipv6_host_rule|an IPv6 /128 rule: one source at 3000 pps admitted at its pinned 700 within 5 %"
	"t_unclassified_untouched|4000 unclassified frames: all passed and received by the host, none dropped"
	"t_kill9_enforcement|kill -9 under traffic: same program, rates enforced within 5 %; restart takes the link over keeping the program, restores rates, means, dedup; buckets not refilled"
	"t_dry_run|dry-run on: nothing dropped, would-drops counted; off: the rate is enforced again"
	"t_metrics_snapshot|/metrics under traffic: per-agent drop counters and the learned refill rate"
	"t_daemon_stop|SIGTERM: exit 0, XDP stays attached, no errors in the log"
	"t_demo|make demo: rates 3100/1500/1 tracked within 5 % (1 pps: within a packet per window edge), unclassified untouched; nothing left behind"
	"t_demo_traffic_fails|make demo with traffic made to fail (too little offered, the generator stopping, a bad engine): exit 1 naming the agent off or the generator's error; nothing left"
	"t_demo_interrupted|scripts/demo.sh interrupted by SIGINT (Ctrl-C): exit 130, torn down, nothing left"
	"t_install|make install DESTDIR PREFIX: files and modes (TLS libraries too), unit verified by systemd-analyze, config kept; uninstall"
	"t_make_run|make run IFACE=eth0: serves on 127.0.0.1:9470, attached; SIGTERM: clean shutdown, XDP stays"
	"t_make_run_usage|make run without IFACE or with a missing one: a usage error"
	"t_alert_rules|etc/agentgate-alerts.yml: promtool check and unit tests pass; only exported metrics used"
	"t_dashboard|etc/grafana-dashboard.json: every query is valid PromQL over exported metrics"
)

tap_run "${TESTS[@]}"
