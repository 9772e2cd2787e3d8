#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# agentgated end-to-end tests, TAP output. Usage: tests/daemon/test_daemon.sh BUILD_DIR
#
# Every daemon is BUILD_DIR/agentgated-san (ASan + UBSan; LSan checks at
# exit) except the valgrind case, which runs the plain BUILD_DIR/agentgated.
# Each daemon instance has its own pin root under $AG_TEST_BPFFS (a bpffs
# under /run; tests/run.sh mounts one, else this script mounts its own),
# its own --state-dir under a private temporary directory and its own
# loopback port (from 19470 up, checked free). A daemon is stopped with
# SIGTERM and must exit 0 with no sanitizer report on its stderr.
#
# HTTP goes through curl; JSON and Prometheus text are checked by the small
# python3 helpers next to this file (standard library only). Cases run in
# this shell, in order; the cases of one section share that section's
# daemon (agent names are distinct per case), so a section ends with the
# case that stops its daemon.
#
# Exit: 0 all passed, 1 something failed, 77 skipped (not root, no curl).
# A trap on EXIT (INT and TERM exit through it) kills every process started
# here, removes the pin roots, the network namespace (and with it the veth
# pair), the temporary directory, and the bpffs when it mounted one.
# shellcheck disable=SC2317  # the cases are called through the TESTS table
set -u

BUILD=${1:-}
HERE=$(cd "$(dirname "$0")" && pwd)

# skip_all, tap_build_dir, json_check, jget, diag, running, tap_run
# shellcheck source=../lib/tap.sh
. "$HERE/../lib/tap.sh"

BUILD=$(tap_build_dir "$BUILD") || exit 2
SAN=$BUILD/agentgated-san
PLAIN=$BUILD/agentgated
CLI=$BUILD/agentgate

[ "$(id -u)" -eq 0 ] || skip_all "needs root (bpffs, XDP, network namespaces)"
command -v curl >/dev/null 2>&1 || skip_all "curl not found (scripts/deps.sh installs it)"
command -v python3 >/dev/null 2>&1 || skip_all "python3 not found"
# The interpreter itself, not a wrapper (pyenv shims cost 0.1 s a call).
PY=$(python3 -c 'import sys; print(sys.executable)') || skip_all "python3 does not run"

NS=agd-$$
VETH_A=agd$$a
VETH_B=agd$$b
TMP=""
BPFFS=""
OWN_BPFFS=""
CLEANED=""
WFD=""

cleanup() {
	local pid pin
	[ -n "$CLEANED" ] && return
	CLEANED=1
	[ -n "$WFD" ] && exec {WFD}>&-
	# Every process started here is a child of this shell (ip netns exec
	# and valgrind run the daemon in their own process): only those are
	# killed, by id.
	if [ -n "$TMP" ] && [ -f "$TMP/pids" ]; then
		while read -r pid; do
			[ -n "$pid" ] && running "$pid" &&
				[ "$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$$" ] &&
				kill -KILL "$pid" 2>/dev/null
		done <"$TMP/pids"
		wait 2>/dev/null
	fi
	ip netns del "$NS" 2>/dev/null
	if [ -n "$TMP" ] && [ -f "$TMP/pins" ]; then
		while read -r pin; do
			[ -n "$pin" ] && rm -rf "$pin"
		done <"$TMP/pins"
	fi
	if [ -n "$OWN_BPFFS" ]; then
		umount "$OWN_BPFFS" 2>/dev/null
		rmdir "$OWN_BPFFS" 2>/dev/null
	fi
	tap_remove_tmp "$TMP"
}
tap_traps cleanup

bail() {
	echo "Bail out! $*"
	exit 1
}

for b in "$SAN" "$PLAIN" "$CLI"; do
	[ -x "$b" ] || bail "$b not built (make all)"
done

TMP=$(mktemp -d /tmp/agd-test.XXXXXX)
: >"$TMP/pids"
: >"$TMP/pins"

# A bpffs under /run: ip netns exec remounts /sys, so pins cannot live
# under /sys/fs/bpf for the namespace case.
if [ -n "${AG_TEST_BPFFS:-}" ] && [ -d "$AG_TEST_BPFFS" ] &&
	[ "$(stat -f -c %T "$AG_TEST_BPFFS" 2>/dev/null)" = bpf_fs ]; then
	BPFFS=$AG_TEST_BPFFS
else
	OWN_BPFFS=$(mktemp -d /run/agd-test.XXXXXX)
	if ! mount -t bpf bpf "$OWN_BPFFS" 2>/dev/null; then
		rmdir "$OWN_BPFFS"
		OWN_BPFFS=""
		skip_all "cannot mount a bpffs under /run (set AG_TEST_BPFFS)"
	fi
	BPFFS=$OWN_BPFFS
fi

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=86
SANITIZER_RE='Sanitizer|runtime error:'
# Non-empty when the CivetWeb library listens on IPv6 (feature bit 8).
CIVETWEB_IPV6=$("$PY" -c 'import ctypes; print("yes" if ctypes.CDLL("libcivetweb.so.1").mg_check_feature(8) else "")' 2>/dev/null)

# ---- helpers ------------------------------------------------------------


# ---- daemons --------------------------------------------------------------

declare -A DPID DPORT DPIN DSTATE DLOG DOFF DNETNS
DCOUNT=0
PORT_NEXT=19470
BASE=""
WRAP=()

# alloc_port: NEW_PORT = the next port from 19470 up that nothing listens on.
alloc_port() {
	local p
	while [ "$PORT_NEXT" -lt 19970 ]; do
		p=$PORT_NEXT
		PORT_NEXT=$((PORT_NEXT + 1))
		if "$PY" -c '
import socket, sys
s = socket.socket()
try:
    s.bind(("0.0.0.0", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$p" 2>/dev/null; then
			NEW_PORT=$p
			return 0
		fi
	done
	bail "no free port from 19470 to 19969"
}

# daemon_new NAME: a fresh instance: pin root, state dir, log, port.
daemon_new() {
	local name=$1
	DCOUNT=$((DCOUNT + 1))
	alloc_port
	DPORT[$name]=$NEW_PORT
	DPIN[$name]=$BPFFS/daemon-$$-$DCOUNT
	DSTATE[$name]=$TMP/state-$DCOUNT
	DLOG[$name]=$TMP/daemon-$DCOUNT.log
	DNETNS[$name]=""
	mkdir -p "${DSTATE[$name]}"
	: >"${DLOG[$name]}"
	echo "${DPIN[$name]}" >>"$TMP/pins"
}

# use NAME: later http calls go to this daemon.
use() {
	BASE=http://127.0.0.1:${DPORT[$1]}
	if [ -n "${DNETNS[$1]:-}" ]; then
		WRAP=(ip netns exec "$NS")
	else
		WRAP=()
	fi
}

# daemon_run [--bin B] [--netns] [--valgrind LOG] [--stdin FILE] [--listen ADDR]
#            [--no-wait] [--timeout S] NAME ARGS...
# Starts NAME (a new instance unless NAME exists: then on its pins and
# state dir again) in the background and waits for GET /readyz == 200.
daemon_run() {
	local bin=$SAN stdin=/dev/null listen="" waitready=1 timeout=10 name
	local wrap=() netns=() vg=()
	while [ $# -gt 0 ]; do
		case $1 in
		--bin) bin=$2; shift 2 ;;
		--netns) netns=(ip netns exec "$NS"); shift ;;
		--valgrind)
			vg=(valgrind --leak-check=full --errors-for-leak-kinds=definite
				--error-exitcode=99 --suppressions="$HERE/valgrind.supp" --log-file="$2")
			shift 2 ;;
		--stdin) stdin=$2; shift 2 ;;
		--listen) listen=$2; shift 2 ;;
		--no-wait) waitready=0; shift ;;
		--timeout) timeout=$2; shift 2 ;;
		*) break ;;
		esac
	done
	name=$1
	shift
	wrap=("${netns[@]}" "${vg[@]}")
	[ -n "${DPIN[$name]:-}" ] || daemon_new "$name"
	[ ${#netns[@]} -gt 0 ] && DNETNS[$name]=1
	listen=${listen:-127.0.0.1:${DPORT[$name]}}
	DOFF[$name]=$(stat -c %s "${DLOG[$name]}")
	echo "=== ${wrap[*]} $bin --pin-path ${DPIN[$name]} --state-dir ${DSTATE[$name]}" \
		"--listen $listen $*" >>"${DLOG[$name]}"
	"${wrap[@]}" "$bin" --pin-path "${DPIN[$name]}" --state-dir "${DSTATE[$name]}" \
		--listen "$listen" "$@" <"$stdin" >>"${DLOG[$name]}" 2>&1 &
	DPID[$name]=$!
	echo "$!" >>"$TMP/pids"
	use "$name"
	[ "$waitready" -eq 1 ] || return 0
	daemon_wait_ready "$name" "$timeout"
}

# The log of NAME's current run.
daemon_log() {
	tail -c +$((${DOFF[$1]:-0} + 1)) "${DLOG[$1]}"
}

daemon_wait_ready() {
	local name=$1 timeout=${2:-10} i code
	for ((i = 0; i < timeout * 20; i++)); do
		if ! running "${DPID[$name]}"; then
			wait "${DPID[$name]}"
			diag "daemon '$name' exited with code $? before it was ready; its log:"
			diag "$(daemon_log "$name" | tail -n 30)"
			return 1
		fi
		code=$("${WRAP[@]}" curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
			"http://127.0.0.1:${DPORT[$name]}/readyz" 2>/dev/null)
		[ "$code" = 200 ] && return 0
		sleep 0.05
	done
	diag "daemon '$name' not ready after ${timeout} s; its log:"
	diag "$(daemon_log "$name" | tail -n 30)"
	return 1
}

# wait_exit PID TIMEOUT: waits for the process; kills it after TIMEOUT s.
# Sets EXIT_RC.
wait_exit() {
	local pid=$1 timeout=$2 i
	for ((i = 0; i < timeout * 20; i++)); do
		running "$pid" || break
		sleep 0.05
	done
	if running "$pid"; then
		diag "process $pid still running after ${timeout} s: killed"
		kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
	EXIT_RC=$?
}

# san_clean NAME: no sanitizer report in the log of NAME's current run.
san_clean() {
	local rep
	rep=$(daemon_log "$1" | grep -E -A 12 "$SANITIZER_RE" | head -n 40)
	[ -z "$rep" ] && return 0
	diag "sanitizer report in the log of daemon '$1':"
	diag "$rep"
	return 1
}

# daemon_stop NAME [TIMEOUT]: SIGTERM; exit code 0 and no sanitizer report.
daemon_stop() {
	local name=$1 timeout=${2:-20}
	if [ -z "${DPID[$name]:-}" ]; then
		diag "daemon '$name' was never started"
		return 1
	fi
	kill -TERM "${DPID[$name]}" 2>/dev/null
	wait_exit "${DPID[$name]}" "$timeout"
	DPID[$name]=""
	if [ "$EXIT_RC" -ne 0 ]; then
		diag "daemon '$name' exited with code $EXIT_RC after SIGTERM (expected 0); its log:"
		diag "$(daemon_log "$name" | tail -n 40)"
		return 1
	fi
	san_clean "$name"
}

# daemon_kill9 NAME: SIGKILL, reaped.
daemon_kill9() {
	kill -KILL "${DPID[$1]}" 2>/dev/null
	wait_exit "${DPID[$1]}" 10
	DPID[$1]=""
	[ "$EXIT_RC" -eq 137 ] || { diag "kill -9: exit code $EXIT_RC, expected 137"; return 1; }
}

# daemon_alive NAME: still running (fails with the log when it died).
daemon_alive() {
	running "${DPID[$1]:-0}" && return 0
	diag "daemon '$1' is not running; its log:"
	diag "$(daemon_log "$1" | tail -n 30)"
	return 1
}

# run_expect_exit RC TIMEOUT ARGS...: runs the sanitized daemon in the
# foreground (stdin closed) and expects exit code RC. Sets OUT (stdout +
# stderr) and EXIT_RC.
run_expect_exit() {
	local want=$1 timeout=$2
	shift 2
	CMD="agentgated-san $*"
	timeout -s KILL "$timeout" "$SAN" "$@" </dev/null >"$TMP/run.out" 2>&1
	EXIT_RC=$?
	OUT=$(<"$TMP/run.out")
	if [ "$EXIT_RC" -ne "$want" ]; then
		diag "command: $CMD"
		diag "exit code $EXIT_RC, expected $want; output:"
		diag "$OUT"
		return 1
	fi
	if grep -qE "$SANITIZER_RE" <<<"$OUT"; then
		diag "sanitizer report from: $CMD"
		diag "$OUT"
		return 1
	fi
	return 0
}

# ---- HTTP -------------------------------------------------------------------

# http METHOD PATH [CURL ARGS...]: sets STATUS, BODY, HDRS (header lines, no
# CR) and CMD. Never fails itself.
http() {
	local m=$1 p=$2
	shift 2
	CMD="curl -X $m $BASE$p $*"
	: >"$TMP/body"
	: >"$TMP/hdrs"
	STATUS=$("${WRAP[@]}" curl -sS --max-time 15 -o "$TMP/body" -D "$TMP/hdrs" \
		-w '%{http_code}' -X "$m" "$@" "$BASE$p" 2>"$TMP/curl.err")
	BODY=$(<"$TMP/body")
	HDRS=$(tr -d '\r' <"$TMP/hdrs")
	return 0
}

# JSON bodies: jsend METHOD PATH JSON [CURL ARGS...]
jsend() {
	local m=$1 p=$2 data=$3
	shift 3
	http "$m" "$p" -H 'Content-Type: application/json' --data-binary "$data" "$@"
}
jpost() { jsend POST "$@"; }
jput() { jsend PUT "$@"; }
ndpost() { # PATH NDJSON
	http POST "$1" -H 'Content-Type: application/x-ndjson' --data-binary "$2"
}

# hdr NAME: the value of the last response header NAME (case-insensitive).
hdr() {
	grep -i "^$1:" <<<"$HDRS" | tail -n 1 | sed 's/^[^:]*:[[:space:]]*//'
}

show_last() {
	diag "request: $CMD"
	diag "status: $STATUS"
	[ -s "$TMP/curl.err" ] && diag "curl: $(<"$TMP/curl.err")"
	diag "body: ${BODY:0:1500}"
	return 0
}

fail() {
	diag "$*"
	show_last
	return 1
}

expect_status() {
	[ "$STATUS" = "$1" ] || fail "expected status $1"
}

# jb EXPR...: json_check on the last response body.
jb() {
	json_check "$BODY" "$@"
}

# expect STATUS EXPR...: status and body checks on the last response.
expect() {
	local st=$1
	shift
	expect_status "$st" || return 1
	[ $# -eq 0 ] || jb "$@"
}

# expect_error STATUS CODE [WORD...]: an error response: exactly
# {"error": CODE, "message": "..."}, the message containing each WORD.
expect_error() {
	local st=$1 code=$2 w msg
	shift 2
	expect "$st" "err_ok(d, '$code')" || return 1
	msg=$(jget "$BODY" 'd["message"]')
	for w in "$@"; do
		[[ "$msg" == *"$w"* ]] || fail "error message does not mention '$w'" || return 1
	done
	return 0
}

# agent NAME EXPR...: GET /v1/agents/NAME is 200 and every EXPR holds.
agent() {
	local a=$1
	shift
	http GET "/v1/agents/$a"
	expect 200 "$@"
}

# no_agent NAME: GET /v1/agents/NAME is 404.
no_agent() {
	http GET "/v1/agents/$1"
	expect_error 404 not_found "$1"
}

# cli NAME ARGS...: the CLI in JSON mode on NAME's pin root; sets OUT, RC.
cli() {
	local name=$1
	shift
	CMD="agentgate -j --pin-path ${DPIN[$name]} $*"
	if [ -n "${DNETNS[$name]:-}" ]; then
		OUT=$(ip netns exec "$NS" "$CLI" -j --pin-path "${DPIN[$name]}" "$@" 2>&1)
	else
		OUT=$("$CLI" -j --pin-path "${DPIN[$name]}" "$@" 2>&1)
	fi
	RC=$?
	BODY=$OUT
	STATUS="exit $RC"
}

# wait_for TIMEOUT DESC COMMAND...: polls COMMAND (silently) every 50 ms.
wait_for() {
	local timeout=$1 desc=$2 i
	shift 2
	for ((i = 0; i < timeout * 20; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	diag "timed out after ${timeout} s waiting for: $desc"
	return 1
}

# agent_is NAME EXPR: quiet check, for wait_for.
agent_is() {
	local body
	body=$("${WRAP[@]}" curl -s --max-time 5 "$BASE/v1/agents/$1") || return 1
	"$PY" -c 'import json, sys; d = json.loads(sys.argv[1]); sys.exit(0 if eval(sys.argv[2]) else 1)' \
		"$body" "$2"
}

# rate_after R0 ALPHA RMIN RMAX SCORE...: the policy's rate, as the contract
# computes it, for the expected values of long sequences.
rate_after() {
	"$PY" -c '
import sys
r, a, lo, hi = (float(x) for x in sys.argv[1:5])
for s in sys.argv[5:]:
    r = min(hi, max(lo, r + a * (int(s) - 3)))
print(repr(r))' "$@"
}

# token KEYFILE CLAIMS [jwt.py options]: prints a JWT.
token() {
	"$PY" "$HERE/jwt.py" "$@"
}

# ---- 1. the API: every endpoint (daemon "api") ------------------------------

t_api_start() {
	daemon_run api || return 1
	http GET /healthz
	expect 200 'd == {"status": "ok"}' || return 1
	http GET /readyz
	expect 200 'd == {"status": "ready"}' || return 1
	http GET /v1/agents
	expect 200 'd == {"agents": [], "next": None}' || return 1
	http GET /v1/rules
	expect 200 'd == []' || return 1
	# The maps were created at its pin root.
	cli api status
	[ "$RC" -eq 0 ] || fail "agentgate status on the daemon's pin root failed" || return 1
	jb 'd["agents"] == 0' "d['pin_root'] == '${DPIN[api]}'"
}

t_ratings_single() {
	jpost /v1/ratings '{"id":"rs-1","agent":"rs1","user":"u1","score":5,"ts":1700000000000,"comment":"good"}'
	expect 200 'keys(d) == {"applied", "duplicates", "agents"}' 'd["applied"] == 1' \
		'd["duplicates"] == 0' 'isint(d["applied"]) and isint(d["duplicates"])' \
		'len(d["agents"]) == 1' \
		'keys(d["agents"][0]) == {"agent", "rate", "mean_score", "ratings"}' \
		'd["agents"][0] == {"agent": "rs1", "rate": 120, "mean_score": 5, "ratings": 1}' \
		'isint(d["agents"][0]["ratings"]) and num(d["agents"][0]["rate"])' || return 1
	agent rs1 'd["rate"] == 120' 'd["ratings"] == 1' 'd["mean_score"] == 5' \
		'd["last_rating_ms"] == 1700000000000' 'd["burst"] == 120'
}

t_ratings_array() {
	jpost /v1/ratings '[{"agent":"ra1","score":4},{"agent":"ra2","score":1},{"agent":"ra1","score":5}]'
	expect 200 'd["applied"] == 3' 'd["duplicates"] == 0' \
		'sorted(d["agents"], key=lambda a: a["agent"]) == [
			{"agent": "ra1", "rate": 130, "mean_score": 4.5, "ratings": 2},
			{"agent": "ra2", "rate": 80, "mean_score": 1, "ratings": 1}]' || return 1
	agent ra1 'd["rate"] == 130' 'd["ratings"] == 2' 'd["mean_score"] == 4.5' || return 1
	agent ra2 'd["rate"] == 80' 'd["ratings"] == 1' 'd["mean_score"] == 1'
}

t_ratings_ndjson() {
	local nd
	nd=$'{"agent":"rn1","score":5}\n\n{"agent":"rn1","score":2}\r\n{"agent":"rn2","score":3}\n'
	ndpost /v1/ratings "$nd"
	expect 200 'd["applied"] == 3' 'd["duplicates"] == 0' \
		'sorted(d["agents"], key=lambda a: a["agent"]) == [
			{"agent": "rn1", "rate": 110, "mean_score": 3.5, "ratings": 2},
			{"agent": "rn2", "rate": 100, "mean_score": 3, "ratings": 1}]' || return 1
	# With parameters on the media type, and without a final newline.
	http POST /v1/ratings -H 'Content-Type: application/x-ndjson; charset=utf-8' \
		--data-binary $'{"agent":"rn2","score":4}\n{"agent":"rn2","score":4}'
	expect 200 'd["applied"] == 2' 'len(d["agents"]) == 1' 'd["agents"][0]["agent"] == "rn2"' \
		'd["agents"][0]["rate"] == 120' 'd["agents"][0]["ratings"] == 3' \
		'near(d["agents"][0]["mean_score"], 11 / 3)' || return 1
	# The same lines sent as application/json are not one JSON text: 400,
	# nothing applied.
	jpost /v1/ratings "$nd"
	expect 400 'd["error"] == "bad_request"' 'isstr(d["message"])' 'len(d["errors"]) >= 1' ||
		return 1
	agent rn1 'd["ratings"] == 2' 'd["rate"] == 110'
}

t_ratings_bad_requests() {
	jpost /v1/ratings 'not json'
	expect 400 'keys(d) == {"error", "message", "errors"}' 'd["error"] == "bad_request"' \
		'd["message"] != ""' 'd["errors"][0]["index"] == 0' \
		'keys(d["errors"][0]) == {"index", "field", "reason"}' || return 1
	jpost /v1/ratings '[]'
	expect 400 'd["error"] == "bad_request"' 'd["errors"][0]["index"] == 0' \
		'"no ratings" in d["errors"][0]["reason"]' || return 1
	http POST /v1/ratings
	expect 400 'd["error"] == "bad_request"' 'isstr(d["message"]) and d["message"] != ""' ||
		return 1
	http GET /v1/ratings
	expect_error 405 method_not_allowed || return 1
	[ "$(hdr Allow)" = POST ] || fail "Allow: '$(hdr Allow)', expected POST"
}

t_agents_paging() {
	local a
	for a in zzzz-pg-1 zzzz-pg-2 zzzz-pg-3 zzzz-pg-4 zzzz-pg-5; do
		jput "/v1/agents/$a" '{"rate":7}'
		expect 201 || return 1
	done
	http GET '/v1/agents?limit=2&after=zzzz-pg-'
	expect 200 'keys(d) == {"agents", "next"}' \
		'[a["agent"] for a in d["agents"]] == ["zzzz-pg-1", "zzzz-pg-2"]' \
		'd["next"] == "zzzz-pg-2"' 'all(a["rate"] == 7 and isint(a["slot"]) for a in d["agents"])' ||
		return 1
	http GET '/v1/agents?limit=2&after=zzzz-pg-2'
	expect 200 '[a["agent"] for a in d["agents"]] == ["zzzz-pg-3", "zzzz-pg-4"]' \
		'd["next"] == "zzzz-pg-4"' || return 1
	http GET '/v1/agents?limit=2&after=zzzz-pg-4'
	expect 200 '[a["agent"] for a in d["agents"]] == ["zzzz-pg-5"]' 'd["next"] is None' || return 1
	# Exactly at the end: no next page.
	http GET '/v1/agents?limit=1&after=zzzz-pg-4'
	expect 200 '[a["agent"] for a in d["agents"]] == ["zzzz-pg-5"]' 'd["next"] is None' || return 1
	# One page of everything, sorted by name.
	http GET '/v1/agents?limit=1000'
	expect 200 'd["next"] is None' \
		'[a["agent"] for a in d["agents"]] == sorted(a["agent"] for a in d["agents"])' \
		'[a["agent"] for a in d["agents"]][-5:] == ["zzzz-pg-%d" % i for i in range(1, 6)]' ||
		return 1
	for a in 0 1001 abc -1; do
		http GET "/v1/agents?limit=$a"
		expect_error 400 bad_request limit || return 1
	done
}

t_agents_many_workers() {
	# 300 listings at once, each held by its own worker (its head sent in
	# two parts a second apart): every one is served. Pages are read by one
	# thread of the lister: LMDB ties a reader slot (126 of them) to each
	# thread that ever reads, so pages read by CivetWeb's 320 workers would
	# be refused for good once 126 of them had served one.
	"$PY" - 127.0.0.1 "${DPORT[api]}" <<-'EOF' || return 1
		import collections, socket, sys, threading, time
		host, port = sys.argv[1], int(sys.argv[2])
		got = collections.Counter()
		def one():
		    try:
		        s = socket.create_connection((host, port), timeout=30)
		        s.sendall(b"GET /v1/agents?limit=1 HTTP/1.1\r\nHost: t\r\n")
		        time.sleep(1)
		        s.sendall(b"Connection: close\r\n\r\n")
		        data = b""
		        while True:
		            chunk = s.recv(65536)
		            if not chunk:
		                break
		            data += chunk
		        got[data.split(b" ", 2)[1].decode() if data else "none"] += 1
		    except OSError as e:
		        got[type(e).__name__] += 1
		threads = [threading.Thread(target=one) for _ in range(300)]
		for t in threads:
		    t.start()
		for t in threads:
		    t.join()
		if got != {"200": 300}:
		    print("# answers: %s" % dict(got))
		    sys.exit(1)
	EOF
	http GET '/v1/agents?limit=1'
	expect 200
}

t_agent_get() {
	jput /v1/agents/ag-get '{"rate":42,"burst":7}'
	expect 201 || return 1
	agent ag-get 'd["agent"] == "ag-get"' 'isint(d["slot"])' 'd["rate"] == 42' \
		'd["burst"] == 7' 'd["burst_policy"] == 7' 'd["unit"] == "pps"' 'd["r0"] == 42' \
		'd["r_min"] == 1' 'd["r_max"] == 10000' 'd["alpha"] == 10' 'd["pinned"] is False' \
		'num(d["tokens"]) and 6.99 <= d["tokens"] <= 7' 'd["ratings"] == 0' \
		'd["mean_score"] == 0' 'd["last_rating_ms"] is None' \
		'd["passed_packets"] == d["passed_bytes"] == 0' \
		'd["dropped_packets"] == d["dropped_bytes"] == 0' 'd["rules"] == []' \
		'isint(d["created_ms"]) and d["created_ms"] > 1.6e12' || return 1
	no_agent ag-nobody
}

t_agent_put_codes() {
	jput /v1/agents/ag-put '{"rate":200}'
	expect 201 'd["agent"] == "ag-put"' 'd["rate"] == 200' 'd["r0"] == 200' \
		'd["burst"] == 200' 'd["rules"] == []' || return 1
	jput /v1/agents/ag-put '{"rate":300}'
	expect 200 'd["agent"] == "ag-put"' 'd["rate"] == 300' 'd["burst"] == 300' || return 1
	jput /v1/agents/ag-put '{"pinned":true}'
	expect 200 'd["pinned"] is True' 'd["rate"] == 300' || return 1
	jput /v1/agents/ag-put '{}'
	expect 200 'd["rate"] == 300' 'd["pinned"] is True' || return 1
	# The maps follow.
	cli api agent show ag-put
	[ "$RC" -eq 0 ] || fail "agentgate agent show ag-put failed" || return 1
	jb 'd["rate"] == 300' 'd["burst"] == 300' 'd["pinned"] is True' || return 1
	jput /v1/agents/ag-put '{"rate":'
	expect_error 400 bad_request || return 1
	jput /v1/agents/ag-put '[]'
	expect_error 400 bad_request || return 1
	http PUT /v1/agents/ag-put
	expect_error 400 bad_request || return 1
	jput '/v1/agents/bad!name' '{"rate":5}'
	expect_error 400 bad_request || return 1
	jput "/v1/agents/$(printf 'x%.0s' {1..65})" '{"rate":5}'
	expect_error 400 bad_request || return 1
	agent ag-put 'd["rate"] == 300'
}

t_agent_delete() {
	jput /v1/agents/ag-del '{"rate":5}'
	expect 201 || return 1
	jpost /v1/rules '{"prefix":"10.77.0.0/16","agent":"ag-del"}'
	expect 201 || return 1
	http DELETE /v1/agents/ag-del
	expect 200 'd == {"deleted": "ag-del"}' || return 1
	no_agent ag-del || return 1
	http DELETE /v1/agents/ag-del
	expect_error 404 not_found ag-del || return 1
	http GET /v1/rules
	expect 200 '[r for r in d if r["prefix"] == "10.77.0.0/16" or r["agent"] == "ag-del"] == []' ||
		return 1
	# Gone from the maps too: agent and rule.
	cli api agent show ag-del
	[ "$RC" -eq 1 ] || fail "agentgate agent show ag-del: exit $RC, expected 1" || return 1
	cli api rule list
	jb '[r for r in d if r["prefix"] == "10.77.0.0/16"] == []' || return 1
	# The prefix is free for another agent.
	jpost /v1/rules '{"prefix":"10.77.0.0/16","agent":"ag-get"}'
	expect 201 || return 1
	http DELETE '/v1/rules?prefix=10.77.0.0/16'
	expect 200
}

t_reset_drain() {
	jput /v1/agents/dr1 '{"rate":1,"burst":1000}'
	expect 201 'd["burst"] == 1000' 'd["tokens"] == 1000' || return 1
	jpost /v1/agents/dr1/drain '{"tokens":300}'
	expect 200 'keys(d) == {"agent", "tokens"}' 'd["agent"] == "dr1"' \
		'699.99 <= d["tokens"] <= 701' || return 1
	agent dr1 '699.99 <= d["tokens"] <= 702' || return 1
	jpost /v1/agents/dr1/drain '{"tokens":250}'
	expect 200 '449.99 <= d["tokens"] <= 452' || return 1
	jpost /v1/agents/dr1/drain '{"tokens":100000}'
	expect 200 '0 <= d["tokens"] < 1' || return 1
	http POST /v1/agents/dr1/reset
	expect 200 'd == {"agent": "dr1", "tokens": 1000}' || return 1
	agent dr1 'd["tokens"] == 1000' || return 1
	cli api agent show dr1
	jb '999 <= d["tokens"] <= 1000' || return 1
	for body in '' '{}' '{"tokens":0}' '{"tokens":1.5}' '{"tokens":"5"}' '{"tokens":5,"x":1}'; do
		jpost /v1/agents/dr1/drain "$body"
		expect_error 400 bad_request || return 1
	done
	agent dr1 'd["tokens"] == 1000' || return 1
	jpost /v1/agents/dr-nobody/drain '{"tokens":5}'
	expect_error 404 not_found dr-nobody || return 1
	http POST /v1/agents/dr-nobody/reset
	expect_error 404 not_found dr-nobody
}

t_consume() {
	local ra
	jput /v1/agents/co1 '{"rate":1,"burst":5}'
	expect 201 'd["tokens"] == 5' || return 1
	jpost /v1/agents/co1/consume '{"tokens":3}'
	expect 200 'keys(d) == {"allowed", "remaining"}' 'd["allowed"] is True' \
		'1.99 <= d["remaining"] <= 2.6' || return 1
	jpost /v1/agents/co1/consume '{"tokens":5}'
	expect 429 'd["allowed"] is False' 'd["error"] == "too_many_requests"' \
		'isstr(d["message"])' 'num(d["remaining"]) and d["remaining"] < 3' \
		'isint(d["retry_after_ms"]) and 2000 <= d["retry_after_ms"] <= 3010' || return 1
	ra=$(hdr Retry-After)
	[[ "$ra" =~ ^[0-9]+$ ]] && [ "$ra" -ge 2 ] && [ "$ra" -le 3 ] ||
		fail "Retry-After: '$ra', expected 2 or 3 (seconds until 5 tokens at 1/s)" || return 1
	# A refused consume takes nothing; no body: one token.
	http POST /v1/agents/co1/consume
	expect 200 'd["allowed"] is True' '0.99 <= d["remaining"] <= 1.7' || return 1
	jpost /v1/agents/co1/consume '{"tokens":0}'
	expect_error 400 bad_request tokens || return 1
	jpost /v1/agents/co1/consume '{"tokens":6}'
	expect_error 400 bad_request burst || return 1
	jpost /v1/agents/co-nobody/consume '{"tokens":1}'
	expect_error 404 not_found co-nobody
}

t_rules() {
	jput /v1/agents/ru1 '{}'
	expect 201 || return 1
	jput /v1/agents/ru2 '{}'
	expect 201 || return 1
	jpost /v1/rules '{"prefix":"10.20.0.0/24","port":443,"agent":"ru1"}'
	expect 201 'd == {"prefix": "10.20.0.0/24", "port": 443, "agent": "ru1"}' || return 1
	jpost /v1/rules '{"prefix":"10.20.0.0/24","agent":"ru1"}'
	expect 201 'd == {"prefix": "10.20.0.0/24", "port": 0, "agent": "ru1"}' || return 1
	jpost /v1/rules '{"prefix":"2001:db8:20::/48","port":80,"agent":"ru2"}'
	expect 201 'd["agent"] == "ru2"' 'd["port"] == 80' || return 1
	# The same prefix and port for another agent: conflict, nothing changed.
	jpost /v1/rules '{"prefix":"10.20.0.0/24","port":443,"agent":"ru2"}'
	expect_error 409 conflict ru1 || return 1
	jpost /v1/rules '{"prefix":"10.21.0.0/24","port":443,"agent":"ru-nobody"}'
	expect_error 404 not_found ru-nobody || return 1
	for body in '{"prefix":"10.20.0.0/33","agent":"ru1"}' '{"prefix":"10.20.0.0/24"}' \
		'{"agent":"ru1"}' '{"prefix":"10.22.0.0/24","agent":"ru1","port":70000}' \
		'{"prefix":"10.22.0.0/24","agent":"ru1","colour":"red"}'; do
		jpost /v1/rules "$body"
		expect_error 400 bad_request || return 1
	done
	http GET /v1/rules
	expect 200 'sorted((r["prefix"], r["port"], r["agent"]) for r in d if r["agent"] in ("ru1", "ru2")) == [
			("10.20.0.0/24", 0, "ru1"), ("10.20.0.0/24", 443, "ru1"),
			("2001:db8:20::/48", 80, "ru2")]' \
		'all(keys(r) == {"prefix", "port", "agent"} for r in d)' || return 1
	agent ru1 'sorted((r["prefix"], r["port"]) for r in d["rules"]) == [
			("10.20.0.0/24", 0), ("10.20.0.0/24", 443)]' || return 1
	cli api rule list
	jb 'sorted((r["prefix"], r["port"] or 0, r["agent"]) for r in d if r["agent"] in ("ru1", "ru2")) == [
			("10.20.0.0/24", 0, "ru1"), ("10.20.0.0/24", 443, "ru1"),
			("2001:db8:20::/48", 80, "ru2")]' || return 1
	# Delete by body, by query, by query without port (the wildcard).
	http DELETE /v1/rules -H 'Content-Type: application/json' \
		--data-binary '{"prefix":"10.20.0.0/24","port":443}'
	expect 200 'd == {"deleted": "10.20.0.0/24", "port": 443}' || return 1
	http DELETE '/v1/rules?prefix=2001:db8:20::/48&port=80'
	expect 200 'd == {"deleted": "2001:db8:20::/48", "port": 80}' || return 1
	http DELETE '/v1/rules?prefix=10.20.0.0/24'
	expect 200 'd == {"deleted": "10.20.0.0/24", "port": 0}' || return 1
	http DELETE '/v1/rules?prefix=10.20.0.0/24&port=443'
	expect_error 404 not_found || return 1
	http DELETE /v1/rules
	expect_error 400 bad_request prefix || return 1
	http GET /v1/rules
	expect 200 '[r for r in d if r["agent"] in ("ru1", "ru2")] == []' || return 1
	cli api rule list
	jb '[r for r in d if r["agent"] in ("ru1", "ru2")] == []'
}

t_method_path_errors() {
	local spec m p allow
	for spec in "PATCH /v1/agents/ag-get|GET, PUT, DELETE" "DELETE /v1/ratings|POST" \
		"GET /v1/agents/ag-get/drain|POST" "PUT /v1/rules|GET, POST, DELETE" \
		"POST /metrics|GET" "POST /healthz|GET" "DELETE /readyz|GET" "PUT /rate|POST" \
		"DELETE /bucket/ag-get|POST, GET" "PUT /v1/agents|GET"; do
		m=${spec%% *}
		p=${spec#* }
		p=${p%%|*}
		allow=${spec#*|}
		http "$m" "$p"
		expect_error 405 method_not_allowed || return 1
		[ "$(hdr Allow)" = "$allow" ] ||
			fail "Allow: '$(hdr Allow)', expected '$allow'" || return 1
	done
	for p in /nope /v1 /v1/agentsx /v1/agents/ag-get/nope /v1/agents/ag-get/reset/x \
		/v2/agents /bucket /metrics/x; do
		http GET "$p"
		expect_error 404 not_found || return 1
	done
	# The agent is untouched by all that.
	agent ag-get 'd["rate"] == 42'
}

# ---- 2. policy math (daemon "api", defaults r0 100, alpha 10, r 1..10000, 1s) --

# rate_steps AGENT "SCORE RATE" ...: one rating per request; after each the
# answer's rate must be RATE; counts and mean follow.
rate_steps() {
	local a=$1 step s r n=0 sum=0
	shift
	for step in "$@"; do
		s=${step% *}
		r=${step#* }
		n=$((n + 1))
		sum=$((sum + s))
		jpost /v1/ratings "{\"agent\":\"$a\",\"score\":$s}"
		expect 200 'd["applied"] == 1' "d['agents'][0]['rate'] == $r" \
			"d['agents'][0]['ratings'] == $n" "near(d['agents'][0]['mean_score'], $sum / $n)" ||
			return 1
	done
}

t_policy_sequence() {
	rate_steps ps1 "5 120" "5 140" "1 120" "4 130" "3 130" "2 120" "1 100" "1 80" || return 1
	agent ps1 'd["rate"] == 80' 'd["ratings"] == 8' 'near(d["mean_score"], 22 / 8)' \
		'd["burst"] == 80' || return 1
	cli api agent show ps1
	jb 'd["rate"] == 80' 'd["burst"] == 80'
}

t_policy_clamp() {
	jput /v1/agents/pc-max '{"rate":100,"r_max":130}'
	expect 201 'd["r_max"] == 130' || return 1
	rate_steps pc-max "5 120" "5 130" "5 130" "1 110" || return 1
	jput /v1/agents/pc-min '{"rate":30,"r_min":5}'
	expect 201 'd["r_min"] == 5' || return 1
	rate_steps pc-min "1 10" "1 5" "1 5" "5 25" || return 1
	# The global bounds.
	jput /v1/agents/pc-hi '{"rate":9990}'
	expect 201 || return 1
	rate_steps pc-hi "5 10000" "5 10000" "2 9990" || return 1
	jput /v1/agents/pc-lo '{"rate":15}'
	expect 201 || return 1
	rate_steps pc-lo "1 1" "1 1" "4 11" || return 1
	# New bounds move the current rate into them.
	jput /v1/agents/pc-lo '{"r_min":20}'
	expect 200 'd["rate"] == 20' 'd["r_min"] == 20' || return 1
	cli api agent show pc-lo
	jb 'd["rate"] == 20'
}

t_policy_alpha() {
	jput /v1/agents/pa1 '{"alpha":2.5}'
	expect 201 'd["alpha"] == 2.5' 'd["rate"] == 100' || return 1
	rate_steps pa1 "5 105" "4 107.5" "1 102.5" || return 1
	jput /v1/agents/pa0 '{"alpha":0}'
	expect 201 'd["alpha"] == 0' || return 1
	rate_steps pa0 "5 100" "1 100"
}

t_policy_pinned() {
	jput /v1/agents/pp1 '{"rate":50,"pinned":true}'
	expect 201 'd["pinned"] is True' 'd["rate"] == 50' || return 1
	jpost /v1/ratings '[{"agent":"pp1","score":5},{"agent":"pp1","score":5},{"agent":"pp1","score":1}]'
	expect 200 'd["applied"] == 3' 'len(d["agents"]) == 1' 'd["agents"][0]["agent"] == "pp1"' \
		'd["agents"][0]["rate"] == 50' 'd["agents"][0]["ratings"] == 3' \
		'near(d["agents"][0]["mean_score"], 11 / 3)' || return 1
	agent pp1 'd["rate"] == 50' 'd["ratings"] == 3' 'near(d["mean_score"], 11 / 3)' \
		'd["pinned"] is True' 'num(d["last_rating_ms"])' || return 1
	cli api agent show pp1
	jb 'd["rate"] == 50' 'd["pinned"] is True' || return 1
	# Unpinned, ratings move it again from where it is.
	jput /v1/agents/pp1 '{"pinned":false}'
	expect 200 'd["pinned"] is False' 'd["rate"] == 50' || return 1
	jpost /v1/ratings '{"agent":"pp1","score":5}'
	expect 200 'd["agents"][0]["rate"] == 70' 'd["agents"][0]["ratings"] == 4' || return 1
	agent pp1 'd["rate"] == 70' 'd["ratings"] == 4'
}

t_burst_seconds() {
	jput /v1/agents/bs1 '{"rate":100,"burst":"2s"}'
	expect 201 'd["burst"] == 200' 'd["burst_policy"] == "2s"' || return 1
	jpost /v1/ratings '{"agent":"bs1","score":5}'
	expect 200 'd["agents"][0]["rate"] == 120' || return 1
	agent bs1 'd["burst"] == 240' 'd["burst_policy"] == "2s"' || return 1
	cli api agent show bs1
	jb 'd["burst"] == 240' 'd["rate"] == 120' || return 1
	# ceil(rate * seconds)
	jput /v1/agents/bs2 '{"rate":10.3,"burst":"2s","alpha":1}'
	expect 201 'd["burst"] == 21' || return 1
	jpost /v1/ratings '{"agent":"bs2","score":4}'
	expect 200 'near(d["agents"][0]["rate"], 11.3)' || return 1
	agent bs2 'd["burst"] == 23' || return 1
	jput /v1/agents/bs3 '{"burst":"0.5s"}'
	expect 201 'd["burst"] == 50' 'd["burst_policy"] == "0.5s"' || return 1
	# The default: 1s of rate, following the rate.
	jpost /v1/ratings '{"agent":"bs4","score":1}'
	expect 200 || return 1
	agent bs4 'd["rate"] == 80' 'd["burst"] == 80' 'd["burst_policy"] == "1s"'
}

t_burst_tokens() {
	local b
	jput /v1/agents/bt1 '{"rate":100,"burst":500}'
	expect 201 'd["burst"] == 500' 'd["burst_policy"] == 500' 'd["tokens"] == 500' || return 1
	jpost /v1/ratings '{"agent":"bt1","score":5}'
	expect 200 'd["agents"][0]["rate"] == 120' || return 1
	agent bt1 'd["burst"] == 500' 'd["rate"] == 120' || return 1
	cli api agent show bt1
	jb 'd["burst"] == 500' || return 1
	for b in '"2"' 0 1.5 '"0s"' '"4000s"' '"s"' true -5; do
		jput /v1/agents/bt1 "{\"burst\":$b}"
		expect_error 400 bad_request burst || return 1
	done
	agent bt1 'd["burst"] == 500'
}

t_put_invalid() {
	local body
	for body in '{"rate":20000}' '{"rate":0.5}' '{"rate":50,"r_min":60}' \
		'{"r_min":200,"r_max":100}' '{"rate":"fast"}' '{"alpha":-1}' '{"pinned":"yes"}' \
		'{"unit":"kbps"}'; do
		jput /v1/agents/pi1 "$body"
		expect_error 400 bad_request || return 1
	done
	no_agent pi1 || return 1
	jput /v1/agents/pi1 '{"rate":20000}'
	expect_error 400 bad_request rate || return 1
	jput /v1/agents/pi1 '{"rate":5,"colour":"red"}'
	expect_error 400 bad_request colour || return 1
	no_agent pi1 || return 1
	jput /v1/agents/pi2 '{"rate":100}'
	expect 201 || return 1
	jput /v1/agents/pi2 '{"rate":20000}'
	expect_error 400 bad_request rate || return 1
	jput /v1/agents/pi2 '{"r_max":50,"rate":60}'
	expect_error 400 bad_request || return 1
	jput /v1/agents/pi2 '{"alpha":3,"colour":"red"}'
	expect_error 400 bad_request colour || return 1
	agent pi2 'd["rate"] == 100' 'd["r_max"] == 10000' 'd["alpha"] == 10'
}

t_policy_keeps_level() {
	# Policy changes and ratings switch the bucket's parameters in place:
	# a drained bucket stays drained (no burst handed back).
	jput /v1/agents/kl1 '{"rate":1,"burst":1000}'
	expect 201 || return 1
	jpost /v1/agents/kl1/drain '{"tokens":1000}'
	expect 200 'd["tokens"] < 1' || return 1
	jput /v1/agents/kl1 '{"alpha":5}'
	expect 200 'd["tokens"] < 5' || return 1
	jput /v1/agents/kl1 '{"rate":2}'
	expect 200 'd["tokens"] < 5' 'd["rate"] == 2' || return 1
	jpost /v1/ratings '{"agent":"kl1","score":5}'
	expect 200 'd["agents"][0]["rate"] == 12' || return 1
	agent kl1 'd["tokens"] < 40' || return 1
	jput /v1/agents/kl1 '{"burst":"100s"}'
	expect 200 'd["burst"] == 1200' 'd["tokens"] < 40' || return 1
	jput /v1/agents/kl1 '{"pinned":true}'
	expect 200 'd["tokens"] < 40' || return 1
	cli api agent show kl1
	jb 'd["tokens"] < 40' 'd["burst"] == 1200' 'd["rate"] == 12'
}

t_put_null_resets() {
	jput /v1/agents/pn1 '{"alpha":2,"r_max":500,"burst":50,"pinned":true,"r_min":3}'
	expect 201 'd["alpha"] == 2' 'd["r_max"] == 500' 'd["burst"] == 50' 'd["pinned"] is True' \
		'd["r_min"] == 3' || return 1
	jput /v1/agents/pn1 '{"alpha":null,"r_max":null,"burst":null,"pinned":null,"r_min":null}'
	expect 200 'd["alpha"] == 10' 'd["r_max"] == 10000' 'd["r_min"] == 1' \
		'd["burst_policy"] == "1s"' 'd["burst"] == 100' 'd["pinned"] is False' \
		'd["rate"] == 100' || return 1
	# Defaults again: ratings move it by alpha 10.
	jpost /v1/ratings '{"agent":"pn1","score":5}'
	expect 200 'd["agents"][0]["rate"] == 120' || return 1
	agent pn1 'd["burst"] == 120'
}

# ---- 3. dedup, 4. atomic batches ---------------------------------------------

t_dedup_batch() {
	jpost /v1/ratings '[{"id":"dd-1","agent":"dd1","score":5},{"id":"dd-1","agent":"dd1","score":5},
		{"id":"dd-2","agent":"dd1","score":1},{"id":"dd-2","agent":"dd1","score":1}]'
	expect 200 'd["applied"] == 2' 'd["duplicates"] == 2' \
		'd["agents"] == [{"agent": "dd1", "rate": 100, "mean_score": 3, "ratings": 2}]' || return 1
	agent dd1 'd["rate"] == 100' 'd["ratings"] == 2'
}

t_dedup_across() {
	jpost /v1/ratings '{"id":"dx-1","agent":"dx1","score":5}'
	expect 200 'd["applied"] == 1' 'd["duplicates"] == 0' || return 1
	jpost /v1/ratings '{"id":"dx-1","agent":"dx1","score":5}'
	expect 200 'd["applied"] == 0' 'd["duplicates"] == 1' || return 1
	agent dx1 'd["rate"] == 120' 'd["ratings"] == 1' || return 1
	ndpost /v1/ratings $'{"id":"dx-1","agent":"dx1","score":5}\n{"id":"dx-2","agent":"dx1","score":4}\n'
	expect 200 'd["applied"] == 1' 'd["duplicates"] == 1' \
		'd["agents"] == [{"agent": "dx1", "rate": 130, "mean_score": 4.5, "ratings": 2}]' ||
		return 1
	jpost /v1/ratings '[{"id":"dx-2","agent":"dx1","score":1},{"id":"dx-1","agent":"dx1","score":1}]'
	expect 200 'd["applied"] == 0' 'd["duplicates"] == 2' || return 1
	# A duplicate has no effect at all: it does not create its agent.
	jpost /v1/ratings '{"id":"dx-1","agent":"dx-new","score":5}'
	expect 200 'd["applied"] == 0' 'd["duplicates"] == 1' || return 1
	no_agent dx-new || return 1
	agent dx1 'd["rate"] == 130' 'd["ratings"] == 2' 'd["mean_score"] == 4.5'
}

t_concurrent_ratings() {
	local i pids=()
	jput /v1/agents/cc1 '{"alpha":1}'
	expect 201 || return 1
	# 8 clients at once, 50 ratings each (score 4: +1 each); and two
	# clients sending the same 100 ids at once.
	for i in 1 2 3 4 5 6 7 8; do
		"$PY" "$HERE/post_many.py" 127.0.0.1 "${DPORT[api]}" cc1 50 "cc$i" 4 >"$TMP/cc$i.json" &
		pids+=($!)
	done
	for i in a b; do
		"$PY" "$HERE/post_many.py" 127.0.0.1 "${DPORT[api]}" cc2 100 ccdup 5 >"$TMP/cc$i.json" &
		pids+=($!)
	done
	printf '%s\n' "${pids[@]}" >>"$TMP/pids"
	wait "${pids[@]}"
	for i in 1 2 3 4 5 6 7 8 a b; do
		json_check "$(<"$TMP/cc$i.json")" 'd["error"] is None' 'd["acked"] == 100 or d["acked"] == 50' \
			'd["statuses"] == {"200": d["acked"]}' || return 1
	done
	agent cc1 'd["ratings"] == 400' 'd["rate"] == 500' 'd["mean_score"] == 4' || return 1
	agent cc2 'd["ratings"] == 100' 'd["rate"] == 2100'
}

t_batch_atomic_new() {
	jpost /v1/ratings '[{"agent":"at-ok","score":5},{"agent":"at-ok","score":9},
		{"agent":"at-ok","score":5,"bogus":1},{"score":3},{"agent":"at-ok2","score":4},
		{"agent":"bad name!","score":3},{"agent":"at-ok","score":"5"},{"agent":"at-ok","score":0}]'
	expect 400 'd["error"] == "bad_request"' 'isstr(d["message"]) and d["message"] != ""' \
		'sorted(e["index"] for e in d["errors"]) == [1, 2, 3, 5, 6, 7]' \
		'all(keys(e) == {"index", "field", "reason"} for e in d["errors"])' \
		'all(isstr(e["reason"]) and e["reason"] for e in d["errors"])' \
		'{e["index"]: e["field"] for e in d["errors"]}[1] == "score"' \
		'"bogus" in {e["index"]: e["field"] + " " + e["reason"] for e in d["errors"]}[2]' \
		'{e["index"]: e["field"] for e in d["errors"]}[3] == "agent"' \
		'{e["index"]: e["field"] for e in d["errors"]}[5] == "agent"' \
		'{e["index"]: e["field"] for e in d["errors"]}[6] == "score"' \
		'{e["index"]: e["field"] for e in d["errors"]}[7] == "score"' || return 1
	no_agent at-ok || return 1
	no_agent at-ok2 || return 1
	# Ids of a refused batch are not remembered.
	jpost /v1/ratings '[{"id":"at-id","agent":"at-ok3","score":5},{"agent":"at-ok3","score":6}]'
	expect 400 '[e["index"] for e in d["errors"]] == [1]' || return 1
	no_agent at-ok3 || return 1
	jpost /v1/ratings '{"id":"at-id","agent":"at-ok3","score":5}'
	expect 200 'd["applied"] == 1' 'd["duplicates"] == 0'
}

t_batch_atomic_existing() {
	jpost /v1/ratings '{"agent":"ae1","score":5}'
	expect 200 || return 1
	jpost /v1/ratings '[{"agent":"ae1","score":5},{"agent":"ae1","score":5,"ts":-1}]'
	expect 400 '[(e["index"], e["field"]) for e in d["errors"]] == [(1, "ts")]' || return 1
	agent ae1 'd["rate"] == 120' 'd["ratings"] == 1' 'd["mean_score"] == 5' || return 1
	ndpost /v1/ratings $'{"agent":"ae1","score":1}\n{"agent":\n{"agent":"ae1","score":1}\n{"agent":"ae1","score":1,"user":5}\n'
	expect 400 'sorted(e["index"] for e in d["errors"]) == [1, 3]' \
		'{e["index"]: e["field"] for e in d["errors"]}[3] == "user"' || return 1
	agent ae1 'd["rate"] == 120' 'd["ratings"] == 1' 'd["mean_score"] == 5'
}

# ---- 10. the rating-API tutorial's calls ------------------------------------

t_tutorial_bucket() {
	jpost /bucket/tut1 '{"capacity":5,"refill_rate":1,"initial_tokens":3}'
	expect 201 'd["capacity"] == 5' 'd["refill_rate"] == 1' 'd["agent_id"] == "tut1"' \
		'3 <= d["tokens"] < 3.5' || return 1
	http GET /bucket/tut1
	expect 200 '{"tokens", "capacity", "refill_rate"} <= keys(d)' 'd["capacity"] == 5' \
		'd["refill_rate"] == 1' '3 <= d["tokens"] < 4' || return 1
	# Again: an update.
	jpost /bucket/tut1 '{"capacity":5,"refill_rate":1,"initial_tokens":3}'
	expect 200 'd["capacity"] == 5' || return 1
	# A rate below the default r_min is taken as given; full by default.
	jpost /bucket/tut0 '{"capacity":10,"refill_rate":0.5}'
	expect 201 'd["capacity"] == 10' 'd["refill_rate"] == 0.5' 'd["tokens"] == 10' || return 1
	http GET /bucket/tut-nobody
	expect_error 404 not_found || return 1
	jpost /bucket/tutx '{"capacity":5}'
	expect_error 400 bad_request || return 1
	jpost /bucket/tutx '{"capacity":5,"refill_rate":1,"initial_tokens":6}'
	expect_error 400 bad_request initial_tokens || return 1
	no_agent tutx
}

t_tutorial_rate() {
	local i body='{"agent_id":"tut2","event_type":"page_view","metadata":{"path":"/x","n":1}}'
	jpost /bucket/tut2 '{"capacity":5,"refill_rate":1,"initial_tokens":3}'
	expect 201 || return 1
	for i in 1 2 3; do
		jpost /rate "$body"
		expect 200 'num(d["score"])' 'd["score"] == 0' || return 1
	done
	jpost /rate "$body"
	expect 429 'd["allowed"] is False' || return 1
	[[ "$(hdr Retry-After)" =~ ^[1-9][0-9]*$ ]] || fail "429 without Retry-After" || return 1
	# "score" is the agent's mean rating.
	jpost /bucket/tut3 '{"capacity":5,"refill_rate":1}'
	expect 201 || return 1
	jpost /v1/ratings '[{"agent":"tut3","score":4},{"agent":"tut3","score":5}]'
	expect 200 || return 1
	jpost /rate '{"agent_id":"tut3","event_type":"click","metadata":{}}'
	expect 200 'd["score"] == 4.5' || return 1
	jpost /rate '{"agent_id":"tut3"}'
	expect 200 'd["score"] == 4.5' || return 1
	jpost /rate '{"agent_id":"tut-nobody","event_type":"click","metadata":{}}'
	expect_error 404 not_found || return 1
	jpost /rate '{"event_type":"click","metadata":{}}'
	expect_error 400 bad_request agent_id
}

t_stream_websocket() {
	local out
	CMD="ws.py 127.0.0.1 ${DPORT[api]} /v1/stream"
	out=$("$PY" "$HERE/ws.py" 127.0.0.1 "${DPORT[api]}" /v1/stream) ||
		{ diag "ws.py failed: $out"; return 1; }
	# The stream itself is tests/stream's; how other routes answer upgrade
	# requests is t_upgrade_header's job.
	json_check "$out" 'd["status"] == 101' 'd["accept_ok"] is True'
}

t_upgrade_header() {
	local out
	# A request that carries WebSocket upgrade headers on a plain route
	# still gets an HTTP response (200 or an HTTP error), never raw text.
	CMD="ws.py 127.0.0.1 ${DPORT[api]} /v1/agents/ag-get"
	out=$("$PY" "$HERE/ws.py" 127.0.0.1 "${DPORT[api]}" /v1/agents/ag-get) ||
		{ diag "ws.py failed: $out"; return 1; }
	json_check "$out" 'd["status"] in (200, 400, 404, 426, 501)'
}

t_audit_log() {
	local f=${DSTATE[api]}/audit.log
	[ -s "$f" ] || { diag "no $f"; return 1; }
	"$PY" - "$f" <<-'EOF' || { diag "$(tail -n 5 "$f")"; return 1; }
		import json, sys
		lines = [json.loads(l) for l in open(sys.argv[1])]
		def find(action, agent):
		    return [l for l in lines if l["action"] == action and l["agent"] == agent]
		bad = []
		for l in lines:
		    if not {"time_ms", "subject", "action", "agent", "before", "after"} <= set(l):
		        bad.append("fields: %s" % l)
		    if l["subject"] != "":
		        bad.append("subject with auth off: %s" % l)
		c = find("agent.create", "ag-put")
		if len(c) != 1 or c[0]["after"]["rate"] != 200 or c[0]["before"] is not None:
		    bad.append("agent.create ag-put: %s" % c)
		u = find("agent.update", "ag-put")
		if not u or u[0]["before"]["rate"] != 200 or u[0]["after"]["rate"] != 300:
		    bad.append("agent.update ag-put: %s" % u)
		d = find("agent.delete", "ag-del")
		if len(d) != 1 or d[0]["after"] is not None:
		    bad.append("agent.delete ag-del: %s" % d)
		dr = find("agent.drain", "dr1")
		if not dr or dr[0]["after"].get("drained") != 300:
		    bad.append("agent.drain dr1: %s" % dr)
		if not find("agent.reset", "dr1"):
		    bad.append("no agent.reset dr1")
		ra = find("rule.add", "ru1")
		if len(ra) != 2 or {r["after"]["port"] for r in ra} != {0, 443}:
		    bad.append("rule.add ru1: %s" % ra)
		if len(find("rule.delete", "ru1")) != 2 or len(find("rule.delete", "ru2")) != 1:
		    bad.append("rule.delete ru1/ru2")
		for b in bad:
		    print("audit.log: " + b)
		sys.exit(1 if bad else 0)
	EOF
}

t_api_stop() {
	daemon_stop api
}

# ---- 5. NDJSON ingest: stdin and the Unix socket ----------------------------

# dead_letters NAME EXPR...: the dead-letter file of NAME as a JSON list d.
dead_letters() {
	local name=$1 f=${DSTATE[$1]}/dead-letter.ndjson
	shift
	[ -f "$f" ] || { diag "no $f"; return 1; }
	json_check "$("$PY" -c 'import json, sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1]) if l.strip()]))' "$f")" "$@"
}

t_ingest_start() {
	local sock=$TMP/ingest.sock fifo=$TMP/stdin.fifo
	mkfifo "$fifo" || return 1
	daemon_new ing
	# The daemon opens the FIFO for reading, then this shell for writing.
	daemon_run --no-wait --stdin "$fifo" ing --stdin --ingest-socket "$sock" || return 1
	exec {WFD}>"$fifo"
	daemon_wait_ready ing || return 1
	[ -S "$sock" ] || { diag "no socket at $sock"; return 1; }
}

t_ingest_stdin() {
	local rc
	ingest_stdin_checks
	rc=$?
	[ -n "$WFD" ] && exec {WFD}>&-
	WFD=""
	[ "$rc" -eq 0 ] || return 1
	# End of input: the daemon reports the stream's totals and keeps serving.
	wait_for 10 "'stdin closed' in the log" grep -q 'stdin closed' "${DLOG[ing]}" || return 1
	grep -q 'stdin closed: 3 applied, 1 duplicates, 3 invalid, 0 rejected' "${DLOG[ing]}" ||
		{ diag "$(grep 'stdin closed' "${DLOG[ing]}")"; return 1; }
	http GET /healthz
	expect 200
}

ingest_stdin_checks() {
	[ -n "$WFD" ] || { diag "no writer on the daemon's stdin"; return 1; }
	printf '%s\n' '{"agent":"in1","score":5,"id":"s1"}' '{"agent":"in1","score":' \
		'{"agent":"in1","score":4}' '{"agent":"in1","score":7}' \
		'{"agent":"in1","score":5,"id":"s1"}' '{"agent":"in1","score":1,"colour":"x"}' \
		'{"agent":"in1","score":1}' >&"$WFD" || return 1
	wait_for 10 "in1 has 3 ratings" agent_is in1 'd["ratings"] == 3' || { agent in1; return 1; }
	agent in1 'd["rate"] == 110' 'd["ratings"] == 3' 'near(d["mean_score"], 10 / 3)' || return 1
	dead_letters ing 'len(d) == 3' \
		'all({"source", "line", "reason", "input"} <= keys(x) for x in d)' \
		'[x["source"] for x in d] == ["stdin"] * 3' '[x["line"] for x in d] == [2, 4, 6]' \
		'd[0]["input"] == "{\"agent\":\"in1\",\"score\":"' \
		'd[1]["input"] == "{\"agent\":\"in1\",\"score\":7}"' \
		'"score" in d[1]["reason"]' '"colour" in d[2]["reason"]' \
		'all(isstr(x["reason"]) and x["reason"] for x in d)'
}

t_ingest_socket() {
	local sock=$TMP/ingest.sock reply
	reply=$(printf '%s\n%s\n%s\n%s\n%s\n%s' '{"agent":"so1","score":5,"id":"k1"}' \
		'{"agent":"so1","score":5,"id":"k1"}' 'not json' '{"agent":"so1","score":2}' \
		'{"agent":"","score":3}' '{"agent":"so1","score":4}' |
		"$PY" "$HERE/ingest.py" "$sock") || { diag "ingest.py failed: $reply"; return 1; }
	json_check "$reply" 'd == {"applied": 3, "duplicates": 1, "invalid": 2, "rejected": 0}' ||
		return 1
	agent so1 'd["rate"] == 120' 'd["ratings"] == 3' 'near(d["mean_score"], 11 / 3)' || return 1
	dead_letters ing 'len(d) == 5' '[x["line"] for x in d[3:]] == [3, 5]' \
		'd[3]["source"] == d[4]["source"]' 'd[3]["source"].startswith("socket")' \
		'd[3]["source"] != "stdin"' 'd[3]["input"] == "not json"' \
		'd[4]["input"] == "{\"agent\":\"\",\"score\":3}"' '"agent" in d[4]["reason"]' || return 1
	# A second connection: its own counts; ids are remembered across.
	reply=$(printf '%s\n' '{"agent":"so1","score":1,"id":"k1"}' '{"agent":"so1","score":1}' |
		"$PY" "$HERE/ingest.py" "$sock") || { diag "ingest.py failed: $reply"; return 1; }
	json_check "$reply" 'd == {"applied": 1, "duplicates": 1, "invalid": 0, "rejected": 0}' ||
		return 1
	agent so1 'd["rate"] == 100' 'd["ratings"] == 4' || return 1
	# A line over 1 MiB is dead-lettered (shortened); the next line counts.
	reply=$("$PY" -c '
import sys
sys.stdout.write("{\"agent\":\"so3\",\"score\":1,\"comment\":\"" + "x" * 1500000 + "\"}\n"
                 "{\"agent\":\"so3\",\"score\":5}\n")' | "$PY" "$HERE/ingest.py" "$sock") ||
		{ diag "ingest.py failed: $reply"; return 1; }
	json_check "$reply" 'd == {"applied": 1, "duplicates": 0, "invalid": 1, "rejected": 0}' ||
		return 1
	agent so3 'd["rate"] == 120' 'd["ratings"] == 1' || return 1
	dead_letters ing 'len(d) == 6' 'd[5]["line"] == 1' '"1 MiB" in d[5]["reason"]' \
		'd[5]["input"].startswith("{\"agent\":\"so3\"")' 'len(d[5]["input"]) <= 4096'
}

t_ingest_stop() {
	local held
	# A client that keeps its connection open does not hold up SIGTERM; it
	# gets its summary when the daemon stops.
	"$PY" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(60)
s.connect(sys.argv[1])
s.sendall(b"{\"agent\":\"so2\",\"score\":5}\n")
data = b""
while True:
    c = s.recv(4096)
    if not c:
        break
    data += c
sys.stdout.write(data.decode())' "$TMP/ingest.sock" >"$TMP/held.json" 2>&1 &
	held=$!
	echo "$held" >>"$TMP/pids"
	wait_for 10 "so2 rated" agent_is so2 'd["ratings"] == 1' || return 1
	daemon_stop ing 15 || return 1
	wait_exit "$held" 10
	json_check "$(<"$TMP/held.json")" \
		'd == {"applied": 1, "duplicates": 0, "invalid": 0, "rejected": 0}' || return 1
	[ ! -e "$TMP/ingest.sock" ] || { diag "socket left behind at $TMP/ingest.sock"; return 1; }
}

t_ingest_rejected() {
	local sock=$TMP/noauto.sock reply
	daemon_run noauto --auto-create no --ingest-socket "$sock" || return 1
	reply=$(printf '%s\n' '{"agent":"ghost","score":5}' | "$PY" "$HERE/ingest.py" "$sock") ||
		{ diag "ingest.py failed: $reply"; return 1; }
	json_check "$reply" 'd == {"applied": 0, "duplicates": 0, "invalid": 0, "rejected": 1}' ||
		return 1
	dead_letters noauto 'len(d) == 1' 'd[0]["line"] == 1' \
		'd[0]["input"] == "{\"agent\":\"ghost\",\"score\":5}"' \
		'"unknown agent" in d[0]["reason"]' ||
		return 1
	no_agent ghost || return 1
	jpost /v1/ratings '[{"agent":"ghost","score":5}]'
	expect_error 404 not_found ghost || return 1
	no_agent ghost || return 1
	jput /v1/agents/ghost '{}'
	expect 201 || return 1
	reply=$(printf '%s\n' '{"agent":"ghost","score":5}' | "$PY" "$HERE/ingest.py" "$sock")
	json_check "$reply" 'd == {"applied": 1, "duplicates": 0, "invalid": 0, "rejected": 0}' ||
		return 1
	agent ghost 'd["rate"] == 120' || return 1
	daemon_stop noauto
}

t_dead_letter_cap() {
	local sock=$TMP/dlcap.sock dir reply kept
	# 100 invalid lines of about 1 MB, then a valid one, into a 64 KiB cap.
	daemon_run dlcap --ingest-socket "$sock" --dead-letter-max 64k || return 1
	dir=${DSTATE[dlcap]}
	reply=$("$PY" -c 'import sys
for i in range(100):
    sys.stdout.write("{\"agent\":\"dl1\",\"score\":9,\"comment\":\"" + "x" * 1000000 + "\"}\n")
sys.stdout.write("{\"agent\":\"dl1\",\"score\":5}\n")' | "$PY" "$HERE/ingest.py" "$sock") ||
		{ diag "ingest.py failed: $reply"; return 1; }
	json_check "$reply" 'd == {"applied": 1, "duplicates": 0, "invalid": 100, "rejected": 0}' ||
		return 1
	agent dl1 'd["ratings"] == 1' || return 1
	# Two files under the cap each; every line cut to 4096 bytes of input and
	# marked; the newest lines kept, in order, the last one in the live file.
	[ -f "$dir/dead-letter.ndjson.1" ] && [ "$(stat -c %s "$dir/dead-letter.ndjson")" -le 65536 ] &&
		[ "$(stat -c %s "$dir/dead-letter.ndjson.1")" -le 65536 ] ||
		{ diag "$(ls -l "$dir")"; return 1; }
	json_check "$("$PY" -c 'import json, sys
print(json.dumps([[json.loads(l) for l in open(f)] for f in sys.argv[1:]]))' \
		"$dir/dead-letter.ndjson.1" "$dir/dead-letter.ndjson")" \
		'all(x["truncated"] is True and x["input_bytes"] > 1000000 and len(x["input"]) == 4096
		     and x["input"].startswith("{\"agent\":\"dl1\"") and "score" in x["reason"]
		     for f in d for x in f)' \
		'[x["line"] for x in d[0] + d[1]] == list(range(101 - len(d[0] + d[1]), 101))' || return 1
	kept=$("$PY" -c 'import sys; print(sum(1 for f in sys.argv[1:] for l in open(f)))' \
		"$dir/dead-letter.ndjson.1" "$dir/dead-letter.ndjson")
	http GET /metrics
	grep -qx 'agentgate_dead_letters_total{outcome="truncated"} 100' "$TMP/body" &&
		grep -qx 'agentgate_dead_letters_total{outcome="written"} 0' "$TMP/body" &&
		grep -qx 'agentgate_dead_letters_total{outcome="failed"} 0' "$TMP/body" &&
		grep -qx "agentgate_dead_letters_dropped_total $((100 - kept))" "$TMP/body" ||
		fail "$kept kept of 100; $(grep dead_letters "$TMP/body")" || return 1
	# A short invalid line is written whole, unmarked.
	reply=$(printf '%s\n' '{"agent":"dl1","score":0}' | "$PY" "$HERE/ingest.py" "$sock")
	json_check "$(tail -n 1 "$dir/dead-letter.ndjson")" \
		'd["input"] == "{\"agent\":\"dl1\",\"score\":0}"' '"truncated" not in d' || return 1
	http GET /metrics
	grep -qx 'agentgate_dead_letters_total{outcome="written"} 1' "$TMP/body" ||
		fail "$(grep dead_letters "$TMP/body")" || return 1
	daemon_stop dlcap
}

t_slots_full() {
	local a
	daemon_run slots --max-agents 4 --dedup-max 3 || return 1
	for a in s1 s2 s3 s4; do
		jput "/v1/agents/$a" '{}'
		expect 201 || return 1
	done
	jput /v1/agents/s5 '{}'
	expect_error 507 insufficient_storage || return 1
	no_agent s5 || return 1
	# A batch that needs a slot there is not: refused whole.
	jpost /v1/ratings '[{"agent":"s1","score":5},{"agent":"s6","score":5}]'
	expect_error 507 insufficient_storage || return 1
	agent s1 'd["ratings"] == 0' 'd["rate"] == 100' || return 1
	no_agent s6 || return 1
	http DELETE /v1/agents/s4
	expect 200 || return 1
	# One slot free, two new agents: neither is created, s1 is not rated.
	jpost /v1/ratings '[{"agent":"s6","score":5},{"agent":"s7","score":5},{"agent":"s1","score":5}]'
	expect_error 507 insufficient_storage || return 1
	no_agent s6 || return 1
	no_agent s7 || return 1
	agent s1 'd["ratings"] == 0' || return 1
	# The free slot is still there.
	jpost /v1/ratings '{"agent":"s6","score":5}'
	expect 200 'd["agents"][0]["rate"] == 120' || return 1
	# Three new agents were refused for want of a slot: counted as such,
	# not as map write errors.
	http GET /metrics
	grep -qx 'agentgate_agents_refused_total 3' "$TMP/body" &&
		grep -qx 'agentgate_map_write_errors_total 0' "$TMP/body" ||
		fail "refusals not counted: $(grep -E 'refused|map_write' "$TMP/body")" || return 1
	cli slots status
	jb 'd["agents"] == 4' 'd["agent_slots"] == 4'
}

t_dedup_max() {
	local i
	# --dedup-max 3: the oldest ids are forgotten beyond the third.
	for i in 1 2 3 4 5; do
		jpost /v1/ratings "{\"id\":\"dm-$i\",\"agent\":\"s1\",\"score\":4}"
		expect 200 'd["applied"] == 1' || return 1
	done
	jpost /v1/ratings '[{"id":"dm-5","agent":"s1","score":4},{"id":"dm-4","agent":"s1","score":4}]'
	expect 200 'd["applied"] == 0' 'd["duplicates"] == 2' || return 1
	jpost /v1/ratings '{"id":"dm-1","agent":"s1","score":4}'
	expect 200 'd["applied"] == 1' 'd["duplicates"] == 0' || return 1
	agent s1 'd["ratings"] == 6' 'd["rate"] == 160' || return 1
	daemon_stop slots
}

t_store_full() {
	local i ok=0
	# A 1 MiB store fills up with rating ids: 507, all or nothing.
	daemon_run full --store-size 1MiB || return 1
	for i in $(seq 1 12); do
		"$PY" -c '
import json, sys
i = int(sys.argv[1])
json.dump([{"id": "%03d-%04d-%s" % (i, j, "x" * 100), "agent": "fu1", "score": 4}
           for j in range(1000)], open(sys.argv[2], "w"))' "$i" "$TMP/full.json"
		http POST /v1/ratings -H 'Content-Type: application/json' --data-binary @"$TMP/full.json"
		if [ "$STATUS" = 200 ]; then
			[ "$ok" -eq $((i - 1)) ] || fail "a batch was applied after the store was full" ||
				return 1
			ok=$i
			continue
		fi
		expect_error 507 insufficient_storage || return 1
	done
	[ "$ok" -ge 1 ] && [ "$ok" -lt 12 ] || { diag "$ok batches of 12 applied"; return 1; }
	agent fu1 "d['ratings'] == $ok * 1000" 'd["mean_score"] == 4' || return 1
	# Operator changes still answer (200, or 507 when they cannot commit).
	jput /v1/agents/fu2 '{}'
	[ "$STATUS" = 201 ] || expect_error 507 insufficient_storage || return 1
	daemon_stop full || return 1
	daemon_run full --store-size 1MiB || return 1
	agent fu1 "d['ratings'] == $ok * 1000" 'd["rate"] == 10000' || return 1
	daemon_stop full
}

# ---- 6. crash and reboot ---------------------------------------------------

t_crash_restart() {
	local before rules res acked n want
	daemon_run crash || return 1
	# A bucket drained to ~0 with a slow refill and a big burst.
	jput /v1/agents/k1 '{"rate":1,"burst":1000}'
	expect 201 || return 1
	jpost /v1/agents/k1/drain '{"tokens":1000}'
	expect 200 'd["tokens"] < 1' || return 1
	jput /v1/agents/k2 '{}'
	expect 201 || return 1
	jpost /v1/rules '{"prefix":"10.9.0.0/16","agent":"k2"}'
	expect 201 || return 1
	jpost /v1/rules '{"prefix":"2001:db8::/32","port":443,"agent":"k2"}'
	expect 201 || return 1
	res=$("$PY" "$HERE/post_many.py" 127.0.0.1 "${DPORT[crash]}" k2 60 c 5,4,1)
	json_check "$res" 'd["acked"] == 60' 'd["error"] is None' \
		'd["last"]["agents"][0]["rate"] == 300' || return 1
	agent k2 'd["rate"] == 300' 'd["ratings"] == 60' || return 1
	before=$BODY
	http GET /v1/rules
	rules=$BODY
	# Ratings in flight when the daemon dies: every acknowledged one stays.
	"$PY" "$HERE/post_many.py" 127.0.0.1 "${DPORT[crash]}" k3 100000 f 5,4,1 \
		>"$TMP/inflight.json" &
	echo "$!" >>"$TMP/pids"
	n=$!
	wait_for 10 "k3 has 40 ratings" agent_is k3 'd["ratings"] >= 40' || return 1
	daemon_kill9 crash || return 1
	san_clean crash || return 1
	wait "$n"
	res=$(<"$TMP/inflight.json")
	json_check "$res" 'd["acked"] >= 40' 'd["error"] is not None' || return 1
	acked=$(jget "$res" 'd["acked"]')

	daemon_run crash || return 1
	# The drained bucket was not refilled by the restart.
	agent k1 'd["tokens"] < 50' 'd["rate"] == 1' 'd["burst"] == 1000' || return 1
	cli crash agent show k1
	jb 'd["tokens"] < 50' || return 1
	agent k2 || return 1
	json_check "$BODY" "d['rate'] == $(jget "$before" 'd["rate"]')" \
		"d['ratings'] == $(jget "$before" 'd["ratings"]')" \
		"d['mean_score'] == $(jget "$before" 'd["mean_score"]')" \
		"d['last_rating_ms'] == $(jget "$before" 'd["last_rating_ms"]')" || return 1
	http GET /v1/rules
	json_check "$BODY" "sorted(map(json.dumps, d)) == sorted(map(json.dumps, $rules))" || return 1
	agent k3 "$acked <= d['ratings'] <= $acked + 1" || return 1
	n=$(jget "$BODY" 'd["ratings"]')
	want=$("$PY" -c 'import sys; print(" ".join("541"[i % 3] for i in range(int(sys.argv[1]))))' "$n")
	# shellcheck disable=SC2086
	want=$(rate_after 100 10 1 10000 $want)
	agent k3 "near(d['rate'], $want)" || return 1
	cli crash agent show k3
	jb "near(d['rate'], $want)" || return 1
	# The ids were committed with the ratings: sent again, all duplicates.
	res=$("$PY" "$HERE/post_many.py" 127.0.0.1 "${DPORT[crash]}" k2 60 c 5,4,1)
	json_check "$res" 'd["acked"] == 60' 'd["last"]["applied"] == 0' \
		'd["last"]["duplicates"] == 1' || return 1
	agent k2 'd["rate"] == 300' 'd["ratings"] == 60'
}

t_sigterm_restart() {
	daemon_stop crash || return 1
	# While it is down, the CLI adds an agent and a rule to the maps.
	cli crash agent set cli1 rate 33
	[ "$RC" -eq 0 ] || fail "agentgate agent set cli1 rate 33 failed" || return 1
	cli crash rule add 10.55.0.0/16 agent cli1
	[ "$RC" -eq 0 ] || fail "agentgate rule add failed" || return 1
	daemon_run crash || return 1
	# A clean restart does not refill the drained bucket either.
	agent k1 'd["tokens"] < 50' || return 1
	agent k2 'd["rate"] == 300' 'd["ratings"] == 60' || return 1
	# The CLI's agent and rule are adopted, and rated like any other.
	agent cli1 'd["rate"] == 33' 'd["rules"] == [{"prefix": "10.55.0.0/16", "port": 0}]' ||
		return 1
	http GET /v1/rules
	expect 200 '{"prefix": "10.55.0.0/16", "port": 0, "agent": "cli1"} in d' 'len(d) == 3' ||
		return 1
	jpost /v1/ratings '{"agent":"cli1","score":5}'
	expect 200 'd["agents"] == [{"agent": "cli1", "rate": 53, "mean_score": 5, "ratings": 1}]'
}

t_reboot_restore() {
	local rules
	http GET /v1/rules
	rules=$BODY
	daemon_stop crash || return 1
	# A reboot: the bpffs is empty.
	rm -rf "${DPIN[crash]}"
	daemon_run crash || return 1
	agent k1 'd["rate"] == 1' 'd["burst"] == 1000' || return 1
	agent k2 'd["rate"] == 300' 'd["ratings"] == 60' 'near(d["mean_score"], 10 / 3)' || return 1
	agent k3 'd["ratings"] >= 40' || return 1
	agent cli1 'd["rate"] == 53' 'd["ratings"] == 1' || return 1
	http GET /v1/rules
	json_check "$BODY" 'len(d) == 3' "sorted(map(json.dumps, d)) == sorted(map(json.dumps, $rules))" ||
		return 1
	# In the maps, not only in the API.
	cli crash rule list
	jb 'sorted((r["prefix"], r["port"] or 0, r["agent"]) for r in d) == [
		("10.55.0.0/16", 0, "cli1"), ("10.9.0.0/16", 0, "k2"), ("2001:db8::/32", 443, "k2")]' ||
		return 1
	cli crash agent show k2
	jb 'd["rate"] == 300' 'd["burst"] == 300' || return 1
	cli crash agent list
	jb 'sorted(a["name"] for a in d) == ["cli1", "k1", "k2", "k3"]' || return 1
	daemon_stop crash
}

# ---- 6b. a damaged state store ------------------------------------------------
# The store of daemon "store" (agents, a rule, 3000 rating ids), copied once
# stopped; each case damages a copy of it.

STORE_GOOD=""

store_good() {
	[ -n "$STORE_GOOD" ] && return 0
	daemon_run store || return 1
	jput /v1/agents/st1 '{"rate":50}'
	expect 201 || return 1
	jpost /v1/rules '{"prefix":"10.66.0.0/16","agent":"st1"}'
	expect 201 || return 1
	"$PY" -c 'import json
print(json.dumps([{"id": "st-%05d" % i, "agent": "st%d" % (2 + i % 9), "score": 1 + i % 5}
                  for i in range(3000)]))' >"$TMP/st.json"
	http POST /v1/ratings -H 'Content-Type: application/json' --data-binary @"$TMP/st.json"
	expect 200 'd["applied"] == 3000' || return 1
	daemon_stop store || return 1
	STORE_GOOD=$TMP/store-good
	cp -a "${DSTATE[store]}" "$STORE_GOOD"
}

# store_sum DIR: what DIR/data.mdb is now (a checksum, "absent", "directory").
store_sum() {
	if [ -d "$1/data.mdb" ]; then
		echo directory
	elif [ -e "$1/data.mdb" ]; then
		sha256sum <"$1/data.mdb"
	else
		echo absent
	fi
}

# store_refused WHAT SETUP WORD: a copy of the good store, damaged by SETUP
# (shell code run in its directory, S its data.mdb's size), makes the daemon
# exit 3 naming DIR/data.mdb and WORD, and data.mdb is left as SETUP left it.
store_refused() {
	local what=$1 setup=$2 word=$3 dir=$TMP/store-bad sum S
	rm -rf "$dir"
	cp -a "$STORE_GOOD" "$dir"
	# shellcheck disable=SC2034  # S is for SETUP, run by eval
	S=$(stat -c %s "$dir/data.mdb")
	(cd "$dir" && eval "$setup") || { diag "$what: the damage failed"; return 1; }
	sum=$(store_sum "$dir")
	run_expect_exit 3 20 --config /dev/null --pin-path "$BPFFS/refused-$$" --state-dir "$dir" \
		--listen "127.0.0.1:${DPORT[store]}" || { diag "($what)"; return 1; }
	[[ "$OUT" == *"$dir/data.mdb"*"$word"* ]] ||
		{ diag "$what: the error does not name $dir/data.mdb and '$word': $OUT"; return 1; }
	[ "$(store_sum "$dir")" = "$sum" ] || { diag "$what: data.mdb was changed"; return 1; }
	[ ! -e "$BPFFS/refused-$$" ] || { diag "$what: maps were pinned"; return 1; }
}

# Python writing N bytes of seeded noise at offset OFF of data.mdb.
NOISE='import random, sys
random.seed(7)
f = open("data.mdb", "r+b")
f.seek(int(sys.argv[1]))
f.write(random.randbytes(int(sys.argv[2])))'

# shellcheck disable=SC2016  # each SETUP is expanded by eval, in the copy's directory
t_store_damaged_start() {
	store_good || return 1
	echo "$BPFFS/refused-$$" >>"$TMP/pins"
	store_refused "cut to half" 'truncate -s $((S / 2)) data.mdb' "cut short" || return 1
	store_refused "one page short" 'truncate -s $((S - 4096)) data.mdb' "cut short" || return 1
	store_refused "two meta pages left" 'truncate -s 8192 data.mdb' "cut short" || return 1
	store_refused "shorter than a page" 'truncate -s 100 data.mdb' "cut short" || return 1
	store_refused "0 bytes" 'truncate -s 0 data.mdb' "empty" || return 1
	store_refused "64 KiB of noise mid-file" "\"\$PY\" -c '$NOISE' \$((S / 2)) 65536" \
		"damaged" || return 1
	store_refused "the last 64 KiB noise" "\"\$PY\" -c '$NOISE' \$((S - 65536)) 65536" \
		"damaged" || return 1
	store_refused "the first page noise" "\"\$PY\" -c '$NOISE' 0 4096" \
		"not an LMDB meta page" || return 1
	store_refused "another LMDB format version" \
		"printf '\\347\\003\\000\\000' | dd of=data.mdb bs=1 seek=20 conv=notrunc 2>/dev/null" \
		"format version 999" || return 1
	store_refused "not an LMDB file" 'head -c $S /dev/zero | tr "\0" x >data.mdb' \
		"not an LMDB meta page" || return 1
	store_refused "a directory" 'rm data.mdb && mkdir data.mdb' "not a regular file" || return 1
	store_refused "removed" 'rm data.mdb' "is missing" || return 1
	store_refused "removed with lock.mdb" 'rm data.mdb lock.mdb' "is missing" || return 1
	store_refused "removed with its marker" 'rm data.mdb data.mdb.init' "is missing" || return 1
	# Noise past the last page the store uses is no damage.
	cp -a "$STORE_GOOD" "$TMP/store-tail"
	head -c 65536 /dev/urandom >>"$TMP/store-tail/data.mdb"
	daemon_new tail
	rm -rf "${DSTATE[tail]}"
	mv "$TMP/store-tail" "${DSTATE[tail]}"
	daemon_run tail || return 1
	agent st1 'd["rate"] == 50' 'd["rules"] == [{"prefix": "10.66.0.0/16", "port": 0}]' || return 1
	daemon_stop tail
}

t_store_fresh_start() {
	local dir
	# Starting afresh on purpose: data.mdb, lock.mdb and data.mdb.init moved away.
	daemon_new fresh
	dir=${DSTATE[fresh]}
	cp -a "$STORE_GOOD/." "$dir/"
	mkdir "$dir/old"
	mv "$dir/data.mdb" "$dir/lock.mdb" "$dir/data.mdb.init" "$dir/old/"
	daemon_run fresh || return 1
	no_agent st1 || return 1
	[ -s "$dir/data.mdb.init" ] || { diag "no $dir/data.mdb.init after the first start"; return 1; }
	daemon_stop fresh
}

# ready_code CODE: GET /readyz answers CODE (quiet, for wait_for).
ready_code() {
	[ "$("${WRAP[@]}" curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$BASE/readyz")" = "$1" ]
}

t_store_damaged_running() {
	local st size
	daemon_run store || return 1
	agent st1 'd["rate"] == 50' || return 1
	st=${DSTATE[store]}/data.mdb
	size=$(stat -c %s "$st")
	# Cut short under the daemon: found before anything is written.
	truncate -s $((size / 2)) "$st"
	jpost /v1/ratings '{"id":"after-cut","agent":"st1","score":5}'
	expect_error 500 internal "$st" damaged "cut short" || return 1
	jput /v1/agents/st-new '{}'
	expect_error 500 internal "$st" damaged || return 1
	http GET /readyz
	expect 503 '"state store" in d["reason"]' || return 1
	http GET /healthz
	expect 200 || return 1
	agent st1 'd["rate"] == 50' 'd["ratings"] == 0' || return 1
	http GET /metrics
	grep -qx 'agentgate_store_damaged 1' "$TMP/body" &&
		grep -qE '^agentgate_store_errors_total ([2-9]|[1-9][0-9]+)$' "$TMP/body" ||
		fail "not counted: $(grep -E '^agentgate_store' "$TMP/body")" || return 1
	daemon_log store | grep -qF "error: the state store $st is damaged" ||
		{ diag "not logged: $(daemon_log store | tail -n 5)"; return 1; }
	[ "$(stat -c %s "$st")" -eq $((size / 2)) ] || { diag "data.mdb was written to"; return 1; }
	daemon_stop store || return 1
	run_expect_exit 3 20 --config /dev/null --pin-path "${DPIN[store]}" \
		--state-dir "${DSTATE[store]}" --listen "127.0.0.1:${DPORT[store]}" || return 1
	[[ "$OUT" == *"$st"*"cut short"* ]] || { diag "restart: $OUT"; return 1; }
	# Restored from the copy; then cut to 0 bytes: the next read of LMDB's
	# map faults (SIGBUS), and the daemon goes on, not ready.
	cp -a "$STORE_GOOD/." "${DSTATE[store]}/"
	daemon_run store || return 1
	agent st1 'd["rate"] == 50' || return 1
	truncate -s 0 "$st"
	http GET /metrics
	expect_status 200 || return 1
	wait_for 5 "/readyz 503" ready_code 503 || return 1
	jpost /v1/ratings '{"agent":"st1","score":5}'
	expect_error 500 internal "$st" damaged || return 1
	daemon_log store | grep -qF "$st is damaged (a read at offset" ||
		{ diag "not logged: $(daemon_log store | tail -n 5)"; return 1; }
	[ "$(stat -c %s "$st")" -eq 0 ] || { diag "data.mdb was written to"; return 1; }
	daemon_stop store
}

# ---- 7. metrics --------------------------------------------------------------

t_metrics_promtool() {
	local a r=10 out
	command -v promtool >/dev/null 2>&1 || { SKIP_REASON=promtool not found; return 77; }
	daemon_run met --metrics-max-agents 2 || return 1
	for a in m1 m2 m3 m4 m5; do
		jput "/v1/agents/$a" "{\"rate\":$r}"
		expect 201 || return 1
		r=$((r + 10))
	done
	jpost /v1/ratings '[{"id":"x1","agent":"m1","score":5},{"agent":"m2","score":1}]'
	expect 200 'd["applied"] == 2' || return 1
	jpost /v1/ratings '{"id":"x1","agent":"m1","score":5}'
	expect 200 'd["duplicates"] == 1' || return 1
	jpost /v1/ratings '[{"agent":"m1","score":9},{"agent":"m1"},{"agent":"m1","score":3}]'
	expect 400 || return 1
	# The aggregate's label cannot be an agent's name.
	jput /v1/agents/_other '{}'
	expect_error 400 bad_request _other || return 1
	jpost /v1/ratings '{"agent":"_other","score":5}'
	expect 400 '[(e["index"], e["field"]) for e in d["errors"]] == [(0, "agent")]' || return 1
	http GET /metrics
	san_clean met || return 1
	expect_status 200 || return 1
	[[ "$(hdr Content-Type)" == text/plain* ]] ||
		fail "Content-Type '$(hdr Content-Type)', expected text/plain" || return 1
	cp "$TMP/body" "$TMP/metrics.txt"
	out=$(promtool check metrics <"$TMP/metrics.txt" 2>&1) ||
		{ diag "promtool check metrics failed:"; diag "$out"; return 1; }
	"$PY" "$HERE/promcheck.py" "$TMP/metrics.txt" \
		'types["agentgate_packets_total"] == "counter"' \
		'types["agentgate_bytes_total"] == "counter"' \
		'types["agentgate_bucket_tokens"] == "gauge"' \
		'types["agentgate_refill_rate"] == "gauge"' \
		'types["agentgate_bucket_capacity"] == "gauge"' \
		'types["agentgate_ratings_total"] == "counter"' \
		'types["agentgate_rating_apply_seconds"] == "histogram"' \
		'types["agentgate_unclassified_packets_total"] == "counter"' \
		'types["agentgate_parse_errors_total"] == "counter"' \
		'types["agentgate_agents"] == "gauge"' 'types["agentgate_agent_slots"] == "gauge"' \
		'val("agentgate_agents") == 5' 'val("agentgate_agent_slots") == 65536' \
		'val("agentgate_ratings_total", result="applied") == 2' \
		'val("agentgate_ratings_total", result="duplicate") == 1' \
		'val("agentgate_ratings_total", result="invalid") == 3' \
		'val("agentgate_ratings_total", result="rejected") == 0' \
		'val("agentgate_rating_apply_seconds_count") == 2' \
		'val("agentgate_rating_apply_seconds_bucket", le="+Inf") == 2' \
		'val("agentgate_rating_apply_seconds_sum") > 0' \
		'len(series("agentgate_parse_errors_total")) >= 1' \
		'all("reason" in l for l, v in series("agentgate_parse_errors_total"))' \
		'label_values("agentgate_unclassified_packets_total", "verdict") >= {"pass"}' \
		'{l["verdict"] for l, v in series("agentgate_packets_total")} >= {"pass", "drop"}' ||
		{ diag "$(head -c 3000 "$TMP/metrics.txt")"; return 1; }
}

t_metrics_other() {
	local own
	http GET /metrics
	san_clean met || return 1
	expect_status 200 || return 1
	cp "$TMP/body" "$TMP/metrics.txt"
	# --metrics-max-agents 2, 5 agents: two keep their own labels, the
	# other three are summed under agent="_other".
	"$PY" "$HERE/promcheck.py" "$TMP/metrics.txt" \
		'len(label_values("agentgate_refill_rate", "agent") - {"_other"}) == 2' \
		'"_other" in label_values("agentgate_refill_rate", "agent")' \
		'label_values("agentgate_refill_rate", "agent") <= {"m1", "m2", "m3", "m4", "m5", "_other"}' \
		'all(label_values(f, "agent") == label_values("agentgate_refill_rate", "agent")
		     for f in ("agentgate_packets_total", "agentgate_bytes_total",
		               "agentgate_bucket_tokens", "agentgate_bucket_capacity"))' \
		'len(series("agentgate_refill_rate")) == 3' \
		'val("agentgate_metrics_other_agents") == 3' || return 1
	own=$("$PY" -c '
import re, sys
print(" ".join(sorted(set(re.findall(r"agentgate_refill_rate\{agent=\"(m[0-9])\"\}", open(sys.argv[1]).read())))))' \
		"$TMP/metrics.txt")
	# The _other series are the sums over the other agents (rates from the API:
	# m1 10+20 = 30, m2 20-20 = 1 (r_min), m3 30, m4 40, m5 50; bursts 1s).
	"$PY" - "$TMP/metrics.txt" "$own" <<-'EOF' || return 1
		import re, sys
		text = open(sys.argv[1]).read()
		own = sys.argv[2].split()
		rate = {"m1": 30, "m2": 1, "m3": 30, "m4": 40, "m5": 50}
		other = sum(v for k, v in rate.items() if k not in own)
		bad = []
		def value(name, agent):
		    m = re.search(r'^%s\{agent="%s"\} (\S+)$' % (name, re.escape(agent)), text, re.M)
		    return float(m.group(1)) if m else None
		for a in own:
		    if value("agentgate_refill_rate", a) != rate[a]:
		        bad.append("refill_rate of %s: %s, expected %s" % (a, value("agentgate_refill_rate", a), rate[a]))
		    if value("agentgate_bucket_capacity", a) != rate[a]:
		        bad.append("bucket_capacity of %s" % a)
		if value("agentgate_refill_rate", "_other") != other:
		    bad.append("refill_rate _other: %s, expected %s" % (value("agentgate_refill_rate", "_other"), other))
		if value("agentgate_bucket_capacity", "_other") != other:
		    bad.append("bucket_capacity _other: %s, expected %s" % (value("agentgate_bucket_capacity", "_other"), other))
		for b in bad:
		    print(b)
		sys.exit(1 if bad else 0)
	EOF
	daemon_stop met
}

# ---- 8. auth ------------------------------------------------------------------

t_auth_refuse_start() {
	local pin=$BPFFS/daemon-$$-refuse st=$TMP/state-refuse l
	echo "$pin" >>"$TMP/pins"
	mkdir -p "$st"
	alloc_port
	# [::] only where CivetWeb has IPv6 (else the address itself is refused, below).
	for l in "0.0.0.0:$NEW_PORT" ${CIVETWEB_IPV6:+"[::]:$NEW_PORT"} "192.0.2.1:$NEW_PORT"; do
		run_expect_exit 2 20 --pin-path "$pin" --state-dir "$st" --listen "$l" || return 1
		[[ "$OUT" == *"refusing to serve $l without authentication"* ]] ||
			{ diag "no 'refusing to serve $l' in: $OUT"; return 1; }
		[[ "$OUT" == *--auth-key-file* ]] || { diag "no --auth-key-file hint in: $OUT"; return 1; }
	done
	# A bare port (every address) is refused too, naming it.
	run_expect_exit 2 20 --pin-path "$pin" --state-dir "$st" --listen "$NEW_PORT" || return 1
	[[ "$OUT" == *"$NEW_PORT"* ]] || { diag "--listen $NEW_PORT not named in: $OUT"; return 1; }
	[ ! -e "$pin" ] || { diag "refused start created $pin"; return 1; }
	# A key file too short for HS256, or missing.
	head -c 20 /dev/urandom | base64 | head -c 20 >"$TMP/short.key"
	run_expect_exit 2 20 --pin-path "$pin" --state-dir "$st" --listen "0.0.0.0:$NEW_PORT" \
		--auth-key-file "$TMP/short.key" || return 1
	[[ "$OUT" == *"at least 32"* ]] || { diag "no 'at least 32' in: $OUT"; return 1; }
	run_expect_exit 2 20 --pin-path "$pin" --state-dir "$st" --listen "127.0.0.1:$NEW_PORT" \
		--auth-key-file "$TMP/no-such.key" || return 1
	[[ "$OUT" == *no-such.key* ]] || { diag "the missing key file is not named: $OUT"; return 1; }
	# An IPv6 listener where CivetWeb lacks IPv6 (Debian's): refused by name.
	if [ -z "$CIVETWEB_IPV6" ]; then
		run_expect_exit 2 20 --pin-path "$pin" --state-dir "$st" --listen "[::1]:$NEW_PORT" ||
			return 1
		[[ "$OUT" == *"no IPv6 support"* ]] || { diag "no 'no IPv6 support' in: $OUT"; return 1; }
	fi
}

KEY=""
t_auth_start() {
	KEY=$TMP/auth.key
	head -c 60 /dev/urandom | base64 -w0 | head -c 40 >"$KEY"
	[ "$(stat -c %s "$KEY")" -eq 40 ] || { diag "key file is not 40 bytes"; return 1; }
	head -c 60 /dev/urandom | base64 -w0 | head -c 40 >"$TMP/wrong.key"
	daemon_new auth
	# Not loopback: allowed with a key.
	daemon_run --listen "0.0.0.0:${DPORT[auth]}" auth --auth-key-file "$KEY" || return 1
	http GET /healthz
	expect 200 'd == {"status": "ok"}' || return 1
	http GET /readyz
	expect 200 'd == {"status": "ready"}' || return 1
	http GET /healthz -H 'Authorization: Bearer garbage'
	expect 200
}

# expect_401 [CURL ARGS...]: PUT /v1/agents/au-x is refused with 401.
expect_401() {
	jput /v1/agents/au-x '{"rate":5}' "$@"
	expect_error 401 unauthorized || return 1
	[ "$(hdr WWW-Authenticate)" = 'Bearer realm="agentgate"' ] ||
		fail "WWW-Authenticate: '$(hdr WWW-Authenticate)'"
}

ALL_SCOPES='ratings:write agents:admin stream:read metrics:read'

t_auth_401() {
	local t
	expect_401 || return 1
	expect_401 -H 'Authorization: Basic dXNlcjpwYXNz' || return 1
	expect_401 -H 'Authorization: Bearer' || return 1
	expect_401 -H 'Authorization: Bearer not.a.jwt' || return 1
	t=$(token "$KEY" "{\"sub\":\"x\",\"exp\":\"NOW+600\",\"scope\":\"$ALL_SCOPES\"}" --alg none)
	expect_401 -H "Authorization: Bearer $t" || return 1
	t=$(token "$KEY" "{\"sub\":\"x\",\"exp\":\"NOW-60\",\"scope\":\"$ALL_SCOPES\"}")
	expect_401 -H "Authorization: Bearer $t" || return 1
	t=$(token "$KEY" "{\"sub\":\"x\",\"scope\":\"$ALL_SCOPES\"}")
	expect_401 -H "Authorization: Bearer $t" || return 1
	t=$(token "$TMP/wrong.key" "{\"sub\":\"x\",\"exp\":\"NOW+600\",\"scope\":\"$ALL_SCOPES\"}")
	expect_401 -H "Authorization: Bearer $t" || return 1
	t=$(token "$KEY" "{\"sub\":\"x\",\"exp\":\"NOW+600\",\"scope\":\"$ALL_SCOPES\"}" --alg HS512)
	expect_401 -H "Authorization: Bearer $t" || return 1
	t=$(token "$KEY" '{"sub":"x","exp":"NOW+600","scope":"metrics:read"}' --tamper)
	expect_401 -H "Authorization: Bearer $t" || return 1
	t=$(token "$KEY" "{\"sub\":\"x\",\"exp\":\"NOW+600\",\"nbf\":\"NOW+3600\",\"scope\":\"$ALL_SCOPES\"}")
	expect_401 -H "Authorization: Bearer $t" || return 1
	# Every route behind a scope.
	for t in "GET /v1/agents" "GET /v1/agents/au-x" "POST /v1/ratings" "GET /v1/rules" \
		"GET /metrics" "POST /v1/agents/au-x/consume" "GET /bucket/au-x" "POST /rate"; do
		http ${t% *} "${t#* }"
		expect_error 401 unauthorized || return 1
	done
	# Nothing was changed by the refused requests.
	t=$(token "$KEY" '{"sub":"x","exp":"NOW+600","scope":"agents:admin"}')
	http GET /v1/agents/au-x -H "Authorization: Bearer $t"
	expect_error 404 not_found au-x
}

t_auth_403() {
	local t
	t=$(token "$KEY" '{"sub":"x","exp":"NOW+600","scope":"metrics:read ratings:write"}')
	jput /v1/agents/au-x '{"rate":5}' -H "Authorization: Bearer $t"
	expect_error 403 forbidden agents:admin || return 1
	t=$(token "$KEY" '{"sub":"x","exp":"NOW+600","scopes":["agents:admin","stream:read"]}')
	jpost /v1/ratings '{"agent":"au-x","score":5}' -H "Authorization: Bearer $t"
	expect_error 403 forbidden ratings:write || return 1
	t=$(token "$KEY" '{"sub":"x","exp":"NOW+600","scope":"ratings:write"}')
	http GET /metrics -H "Authorization: Bearer $t"
	expect_error 403 forbidden || return 1
	http GET /v1/agents -H "Authorization: Bearer $t"
	expect_error 403 forbidden || return 1
	t=$(token "$KEY" '{"sub":"x","exp":"NOW+600","scope":"other:thing"}')
	http GET /v1/rules -H "Authorization: Bearer $t"
	expect_error 403 forbidden || return 1
	t=$(token "$KEY" '{"sub":"x","exp":"NOW+600","scope":"agents:admin"}')
	http GET /v1/agents/au-x -H "Authorization: Bearer $t"
	expect_error 404 not_found au-x
}

t_auth_scopes_ok() {
	local t
	t=$(token "$KEY" '{"sub":"x","exp":"NOW+600","scope":"metrics:read"}')
	http GET /metrics -H "Authorization: Bearer $t"
	expect_status 200 || return 1
	http GET /v1/agents -H "Authorization: Bearer $t"
	expect 200 'd["agents"] == []' || return 1
	t=$(token "$KEY" '{"sub":"x","exp":"NOW+600","scope":"ratings:write agents:admin"}')
	jput /v1/agents/au-ok '{"rate":5}' -H "Authorization: Bearer $t"
	expect 201 'd["rate"] == 5' || return 1
	jpost /v1/ratings '{"agent":"au-ok","score":5}' -H "Authorization: Bearer $t"
	expect 200 'd["applied"] == 1' || return 1
	t=$(token "$KEY" '{"sub":"x","exp":"NOW+600","scopes":["agents:admin"]}')
	jput /v1/agents/au-ok '{"rate":7}' -H "Authorization: Bearer $t"
	expect 200 'd["rate"] == 7' || return 1
	t=$(token "$KEY" '{"sub":"x","exp":"NOW+600","scopes":["ratings:write"]}')
	jpost /v1/ratings '{"agent":"au-ok","score":4}' -H "Authorization: Bearer $t"
	expect 200 'd["agents"][0]["rate"] == 17' || return 1
	jpost /v1/agents/au-ok/consume '{"tokens":1}' -H "Authorization: Bearer $t"
	expect 200 'd["allowed"] is True'
}

t_auth_audit_subject() {
	local t
	t=$(token "$KEY" '{"sub":"alice@example.com","exp":"NOW+600","scope":"agents:admin"}')
	jput /v1/agents/au-sub '{"rate":9}' -H "Authorization: Bearer $t"
	expect 201 || return 1
	t=$(token "$KEY" '{"sub":"bob","exp":"NOW+600","scope":"agents:admin"}')
	jput /v1/agents/au-sub '{"rate":11}' -H "Authorization: Bearer $t"
	expect 200 || return 1
	jpost /v1/rules '{"prefix":"10.99.0.0/16","agent":"au-sub"}' -H "Authorization: Bearer $t"
	expect 201 || return 1
	json_check "$("$PY" -c 'import json, sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1])]))' \
		"${DSTATE[auth]}/audit.log")" \
		'[(l["subject"], l["action"], l["after"]["rate"]) for l in d if l["agent"] == "au-sub" and l["action"].startswith("agent.")] == [
			("alice@example.com", "agent.create", 9), ("bob", "agent.update", 11)]' \
		'[(l["subject"], l["action"]) for l in d if l["agent"] == "au-sub" and l["action"].startswith("rule.")] == [
			("bob", "rule.add")]' \
		'[l["subject"] for l in d if l["agent"] == "au-ok"] == ["x", "x"]'
}

t_auth_key_rotation() {
	local old new n
	old=$(token "$KEY" '{"sub":"x","exp":"NOW+600","scope":"agents:admin"}')
	head -c 60 /dev/urandom | base64 -w0 | head -c 40 >"$KEY.new" && mv "$KEY.new" "$KEY"
	n=$(grep -c 'settings reloaded' "${DLOG[auth]}")
	kill -HUP "${DPID[auth]}"
	wait_for 10 "'settings reloaded' in the log" \
		eval "[ \$(grep -c 'settings reloaded' '${DLOG[auth]}') -gt $n ]" || return 1
	http GET /v1/agents/au-ok -H "Authorization: Bearer $old"
	expect_error 401 unauthorized || return 1
	new=$(token "$KEY" '{"sub":"x","exp":"NOW+600","scope":"agents:admin"}')
	http GET /v1/agents/au-ok -H "Authorization: Bearer $new"
	expect 200 'd["rate"] == 17'
}

t_auth_reload_keeps_auth() {
	local cfg=$TMP/authcfg.conf n
	printf 'auth-key-file = %s\n' "$KEY" >"$cfg"
	daemon_new authcfg
	daemon_run --listen "0.0.0.0:${DPORT[authcfg]}" authcfg --config "$cfg" || return 1
	jput /v1/agents/ar1 '{}'
	expect_error 401 unauthorized || return 1
	# A reload that would drop the key on a non-loopback listener is refused.
	n=$(grep -c 'reload failed' "${DLOG[authcfg]}")
	printf '# no key\n' >"$cfg"
	kill -HUP "${DPID[authcfg]}"
	wait_for 10 "'reload failed' in the log" \
		eval "[ \$(grep -c 'reload failed' '${DLOG[authcfg]}') -gt $n ]" || return 1
	jput /v1/agents/ar1 '{}'
	expect_error 401 unauthorized || return 1
	http GET /v1/agents
	expect_error 401 unauthorized || return 1
	daemon_stop authcfg || return 1
	use auth
}

t_auth_stop() {
	daemon_stop auth
}

# ---- 8b. explain: where a rate came from (daemon "ex", auth on) ------------------
#
# GET /v1/agents/{a}/explain with real JWT subjects: the ratings that moved
# the rate (a duplicate id and ratings while pinned left out), the operator
# changes and who pinned it; then the CLI reads the same history from the
# state dir with the daemon stopped, writing nothing there; a state dir
# that is not one is an error; a restart keeps the history.

EXK=""
EX_ALICE=()
EX_BOB=()
EX_RATER=()
EX_READER=()

ex_tok() { # SUB SCOPE
	token "$EXK" "{\"sub\":\"$1\",\"exp\":\"NOW+3600\",\"scope\":\"$2\"}"
}

# ex_cli [--state-dir DIR] ARGS...: the CLI on the "ex" pin root; OUT, RC.
ex_cli() {
	CMD="agentgate --pin-path ${DPIN[ex]} $*"
	OUT=$("$CLI" --pin-path "${DPIN[ex]}" "$@" 2>&1)
	RC=$?
}

t_explain_start() {
	EXK=$TMP/explain.key
	head -c 60 /dev/urandom | base64 -w0 | head -c 40 >"$EXK"
	EX_ALICE=(-H "Authorization: Bearer $(ex_tok alice@example.com agents:admin)")
	EX_BOB=(-H "Authorization: Bearer $(ex_tok bob agents:admin)")
	EX_RATER=(-H "Authorization: Bearer $(ex_tok rater ratings:write)")
	EX_READER=(-H "Authorization: Bearer $(ex_tok grafana metrics:read)")
	daemon_run ex --auth-key-file "$EXK"
}

t_explain_api() {
	use ex
	jput /v1/agents/ex1 '{"rate":100}' "${EX_ALICE[@]}"
	expect 201 || return 1
	# e1 twice in one batch, e2 again in the next: each applied once.
	jpost /v1/ratings '[{"id":"e1","agent":"ex1","user":"u1","score":5,"ts":1700000000001},
		{"id":"e2","agent":"ex1","user":"u2","score":4,"ts":1700000000002},
		{"id":"e1","agent":"ex1","user":"u1","score":5,"ts":1700000000009}]' "${EX_RATER[@]}"
	expect 200 'd["applied"] == 2' 'd["duplicates"] == 1' || return 1
	http POST /v1/ratings -H 'Content-Type: application/x-ndjson' "${EX_RATER[@]}" --data-binary \
		$'{"id":"e3","agent":"ex1","user":"u3","score":1,"ts":1700000000003}\n{"id":"e2","agent":"ex1","user":"u2","score":4}\n'
	expect 200 'd["applied"] == 1' 'd["duplicates"] == 1' 'd["agents"][0]["rate"] == 110' || return 1
	# Pinned by bob at 40: ratings still count, they do not move it.
	jput /v1/agents/ex1 '{"rate":40,"pinned":true}' "${EX_BOB[@]}"
	expect 200 'd["rate"] == 40' 'd["pinned"] is True' || return 1
	jpost /v1/ratings '[{"id":"e4","agent":"ex1","user":"u4","score":5},
		{"id":"e5","agent":"ex1","user":"u5","score":1}]' "${EX_RATER[@]}"
	expect 200 'd["applied"] == 2' 'd["agents"][0]["rate"] == 40' || return 1
	jpost /v1/agents/ex1/drain '{"tokens":5}' "${EX_ALICE[@]}"
	expect 200 || return 1
	jpost /v1/rules '{"prefix":"10.78.0.0/16","agent":"ex1"}' "${EX_BOB[@]}"
	expect 201 || return 1
	http GET /v1/agents/ex1/explain "${EX_READER[@]}"
	expect 200 'keys(d) == {"agent", "answered_by", "source", "explanation", "rate", "policy",
			"stats", "ratings", "ratings_recorded", "changes", "changes_recorded", "live",
			"created_ms", "updated_ms"}' \
		'd["agent"] == "ex1"' 'd["answered_by"] == "agentgated"' 'd["source"] == "pinned"' \
		'd["rate"] == 40' \
		'[(r["id"], r["user"], r["score"], r["rate_before"], r["rate_after"]) for r in d["ratings"]] == [
			("e1", "u1", 5, 100, 120), ("e2", "u2", 4, 120, 130), ("e3", "u3", 1, 130, 110)]' \
		'[r["time_ms"] for r in d["ratings"]] == [1700000000001, 1700000000002, 1700000000003]' \
		'all(isint(r["applied_ms"]) and r["applied_ms"] >= d["created_ms"] for r in d["ratings"])' \
		'd["ratings_recorded"] == 3' 'd["stats"]["ratings"] == 5' \
		'[(c["subject"], c["action"]) for c in d["changes"]] == [
			("alice@example.com", "agent.create"), ("bob", "agent.update"),
			("alice@example.com", "agent.drain"), ("bob", "rule.add")]' \
		'd["changes_recorded"] == 4' \
		'[c["time_ms"] for c in d["changes"]] == sorted(c["time_ms"] for c in d["changes"])' \
		'd["changes"][0]["before"] is None' \
		'd["changes"][0]["after"] == {"rate": 100, "burst": 100, "unit": "pps", "r_min": 1,
			"r_max": 10000, "alpha": 10, "pinned": False}' \
		'd["changes"][1]["before"] == {"rate": 110, "burst": 110, "pinned": False}' \
		'd["changes"][1]["after"] == {"rate": 40, "burst": 40, "pinned": True}' \
		'd["changes"][2]["after"]["drained"] == 5' \
		'd["changes"][3]["before"] is None' \
		'd["changes"][3]["after"] == {"prefix": "10.78.0.0/16", "port": 0, "agent": "ex1"}' \
		'd["policy"]["pinned"] is True' \
		'd["policy"]["pinned_by"] == {"subject": "bob", "time_ms": d["changes"][1]["time_ms"]}' \
		'(d["policy"]["r0"], d["policy"]["alpha"], d["policy"]["r_min"], d["policy"]["r_max"]) == (40, 10, 1, 10000)' \
		'(d["policy"]["burst"], d["policy"]["burst_policy"], d["policy"]["unit"]) == (40, "1s", "pps")' \
		'sorted(d["policy"]["own"]) == ["pinned", "r0"]' \
		'd["policy"]["defaults_from"] == "agentgated"' \
		'(d["live"]["rate"], d["live"]["burst"], d["live"]["pinned"]) == (40, 40, True)' \
		'd["live"]["tokens"] <= 40' '"bob" in d["explanation"]' || return 1
	printf '%s' "$BODY" >"$TMP/ex-http.json"
	# Errors as on the other agent routes; /explain is not an agent named so.
	http GET /v1/agents/nope/explain "${EX_READER[@]}"
	expect_error 404 not_found nope || return 1
	http GET /v1/agents/ex1/explain
	expect_error 401 unauthorized || return 1
	http GET /v1/agents/ex1/explain "${EX_RATER[@]}"
	expect_error 403 forbidden || return 1
	http POST /v1/agents/ex1/explain "${EX_ALICE[@]}"
	expect_status 405 || return 1
	[ "$(hdr Allow)" = GET ] || fail "Allow: '$(hdr Allow)'" || return 1
	jput /v1/agents/explain '{"rate":9}' "${EX_ALICE[@]}"
	expect 201 || return 1
	http GET /v1/agents/explain "${EX_READER[@]}"
	expect 200 'd["agent"] == "explain"' 'd["rate"] == 9' || return 1
	http GET /v1/agents/explain/explain "${EX_READER[@]}"
	expect 200 'd["agent"] == "explain"' 'd["source"] == "operator"' 'd["ratings"] == []' \
		'[c["action"] for c in d["changes"]] == ["agent.create"]'
}

t_explain_ring() {
	local scores=(5 1 4 4 2 5 5 3 1 1 5 2 4 4 5 1 3 5 2 4) a="" b="" i want
	for ((i = 0; i < 20; i++)); do
		if [ "$i" -lt 12 ]; then
			a+="{\"id\":\"x$i\",\"agent\":\"ex2\",\"user\":\"v$i\",\"score\":${scores[i]}}"$'\n'
		else
			b+="{\"id\":\"x$i\",\"agent\":\"ex2\",\"user\":\"v$i\",\"score\":${scores[i]}}"$'\n'
		fi
	done
	# The policy's steps, computed here: (id, score, before, after) each.
	want=$("$PY" -c '
import sys
r, out = 100.0, []
for i, s in enumerate(int(x) for x in sys.argv[1:]):
    b, r = r, min(10000.0, max(1.0, r + 10 * (s - 3)))
    out.append(("x%d" % i, s, b, r))
print(repr(out[-16:]))' "${scores[@]}")
	http POST /v1/ratings -H 'Content-Type: application/x-ndjson' "${EX_RATER[@]}" --data-binary "$a"
	expect 200 'd["applied"] == 12' || return 1
	http POST /v1/ratings -H 'Content-Type: application/x-ndjson' "${EX_RATER[@]}" --data-binary "$b"
	expect 200 'd["applied"] == 8' || return 1
	http GET /v1/agents/ex2/explain "${EX_READER[@]}"
	expect 200 'd["source"] == "ratings"' 'd["ratings_recorded"] == 20' \
		"[(r['id'], r['score'], r['rate_before'], r['rate_after']) for r in d['ratings']] == $want" \
		'd["rate"] == d["ratings"][-1]["rate_after"]' \
		'[r["user"] for r in d["ratings"]][0] == "v4"' \
		'd["changes"] == [] and d["changes_recorded"] == 0' 'd["policy"]["pinned_by"] is None' \
		'd["policy"]["own"] == []' || return 1
	# Deleted with its agent: the same name starts afresh.
	http DELETE /v1/agents/ex2 "${EX_BOB[@]}"
	expect 200 || return 1
	http GET /v1/agents/ex2/explain "${EX_READER[@]}"
	expect_error 404 not_found ex2 || return 1
	jput /v1/agents/ex2 '{"rate":5,"pinned":true}' "${EX_ALICE[@]}"
	expect 201 || return 1
	jpost /v1/ratings '{"id":"x99","agent":"ex2","user":"v99","score":5}' "${EX_RATER[@]}"
	expect 200 'd["agents"][0]["rate"] == 5' || return 1
	http GET /v1/agents/ex2/explain "${EX_READER[@]}"
	expect 200 'd["ratings"] == [] and d["ratings_recorded"] == 0' 'd["stats"]["ratings"] == 1' \
		'[(c["subject"], c["action"]) for c in d["changes"]] == [("alice@example.com", "agent.create")]' \
		'd["changes_recorded"] == 1' 'd["source"] == "pinned"' \
		'd["policy"]["pinned_by"]["subject"] == "alice@example.com"'
}

t_explain_offline() {
	local st=${DSTATE[ex]} sum names dir h=$TMP/ex-http.json
	daemon_stop ex || return 1
	sum=$(sha256sum <"$st/data.mdb")
	names=$(ls -A "$st")
	ex_cli -j --state-dir "$st" agent explain ex1
	[ "$RC" -eq 0 ] || fail "exit $RC" || return 1
	json_check "$OUT" 'd["answered_by"] == "state store"' \
		"d['ratings'] == json.load(open('$h'))['ratings']" \
		"d['changes'] == json.load(open('$h'))['changes']" \
		"({k: v for k, v in d['policy'].items() if k != 'defaults_from'} ==
			{k: v for k, v in json.load(open('$h'))['policy'].items() if k != 'defaults_from'})" \
		'd["policy"]["defaults_from"] == "state store"' \
		"keys(d) == keys(json.load(open('$h')))" \
		'd["source"] == "pinned"' 'd["rate"] == 40' 'd["stats"]["ratings"] == 5' \
		'(d["live"]["rate"], d["live"]["pinned"]) == (40, True)' || return 1
	[ "$(sha256sum <"$st/data.mdb")" = "$sum" ] && [ "$(ls -A "$st")" = "$names" ] ||
		fail "the CLI changed the state dir: $(ls -A "$st")" || return 1
	ex_cli --state-dir "$st" agent explain ex1
	[ "$RC" -eq 0 ] && [[ "$OUT" == *"pinned by bob"* ]] && [[ "$OUT" == *"130 -> 110"* ]] &&
		[[ "$OUT" == *"rule.add"* ]] && [[ "$OUT" == *"alice@example.com"* ]] ||
		fail "text: exit $RC: $OUT" || return 1
	# Not a state dir, a damaged store, a missing one: exit 1 naming it.
	mkdir -p "$TMP/ex-empty" "$TMP/ex-cut" "$TMP/ex-gone"
	head -c $(($(stat -c %s "$st/data.mdb") / 2)) "$st/data.mdb" >"$TMP/ex-cut/data.mdb"
	cp "$st/data.mdb.init" "$TMP/ex-gone/"
	for dir in /etc "$TMP/ex-empty" "$TMP/ex-none" "$TMP/ex-cut" "$TMP/ex-gone"; do
		ex_cli -j --state-dir "$dir" agent explain ex1
		[ "$RC" -eq 1 ] || fail "--state-dir $dir: exit $RC (expected 1)" || return 1
		json_check "$OUT" "err_ok(d, 'failed')" "'$dir' in d['message']" || return 1
	done
	[[ "$OUT" == *missing* ]] || fail "no 'missing' for $TMP/ex-gone" || return 1
	ex_cli -j --state-dir "$TMP/ex-cut" agent explain ex1
	[[ "$OUT" == *damaged* ]] || fail "no 'damaged' for a store cut in half" || return 1
	ex_cli -j --state-dir /etc agent explain ex1
	[[ "$OUT" == *data.mdb* ]] || fail "/etc: what is missing is not named" || return 1
	ex_cli --state-dir "$TMP/ex-empty" agent explain ex1
	[ "$RC" -eq 1 ] && [[ "$OUT" == *"$TMP/ex-empty"* ]] || fail "text: exit $RC: $OUT" || return 1
	ex_cli -j --state-dir "$st" agent explain nope
	[ "$RC" -eq 1 ] && json_check "$OUT" "err_ok(d, 'failed')" '"nope" in d["message"]' || return 1
	ex_cli -j --state-dir "$st" agent explain 'a b'
	[ "$RC" -eq 2 ] || fail "invalid name: exit $RC (expected 2)"
}

t_explain_restart() {
	local h=$TMP/ex-http.json
	daemon_run ex --auth-key-file "$EXK" || return 1
	http GET /v1/agents/ex1/explain "${EX_READER[@]}"
	expect 200 "d['ratings'] == json.load(open('$h'))['ratings']" \
		"d['changes'] == json.load(open('$h'))['changes']" \
		'd["policy"]["pinned_by"]["subject"] == "bob"' || return 1
	# Unpinned by alice: no pin left; ratings move the rate from 40 again.
	jput /v1/agents/ex1 '{"pinned":false}' "${EX_ALICE[@]}"
	expect 200 || return 1
	jpost /v1/ratings '{"id":"e6","agent":"ex1","user":"u6","score":5}' "${EX_RATER[@]}"
	expect 200 'd["agents"][0]["rate"] == 60' || return 1
	http GET /v1/agents/ex1/explain "${EX_READER[@]}"
	expect 200 'd["source"] == "ratings"' 'd["policy"]["pinned_by"] is None' \
		'd["policy"]["pinned"] is False' \
		'[(r["id"], r["rate_before"], r["rate_after"]) for r in d["ratings"]] == [
			("e1", 100, 120), ("e2", 120, 130), ("e3", 130, 110), ("e6", 40, 60)]' \
		'd["ratings_recorded"] == 4' \
		'[(c["subject"], c["action"]) for c in d["changes"]][-1] == ("alice@example.com", "agent.update")' \
		'd["changes"][-1]["after"] == {"pinned": False}' 'd["changes_recorded"] == 5' || return 1
	printf '%s' "$BODY" >"$h"
	# The CLI beside the daemon gets the daemon's answer.
	ex_cli -j --state-dir "$TMP/ex-none" agent explain ex1
	[ "$RC" -eq 0 ] || fail "exit $RC" || return 1
	json_check "$OUT" 'd["answered_by"] == "agentgated"' \
		"d['ratings'] == json.load(open('$h'))['ratings']" \
		"d['changes'] == json.load(open('$h'))['changes']" || return 1
	daemon_stop ex
}

# ---- 9. body limit ------------------------------------------------------------

# body_file SIZE FILE JSON: JSON padded with spaces to exactly SIZE bytes.
body_file() {
	"$PY" -c '
import sys
size, path, text = int(sys.argv[1]), sys.argv[2], sys.argv[3]
open(path, "w").write(text + " " * (size - len(text)))' "$1" "$2" "$3"
}

t_body_limit() {
	daemon_run lim --max-body 1000 || return 1
	body_file 5000 "$TMP/b5000" '[{"agent":"bl1","score":5}]'
	body_file 1001 "$TMP/b1001" '[{"agent":"bl1","score":5}]'
	body_file 1000 "$TMP/b1000" '[{"agent":"bl1","score":5}]'
	body_file 500 "$TMP/b500" '[{"agent":"bl1","score":4}]'
	body_file 2000 "$TMP/b2000" '{"rate":5}'
	http POST /v1/ratings -H 'Content-Type: application/json' --data-binary @"$TMP/b5000"
	expect_error 413 payload_too_large || return 1
	http POST /v1/ratings -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' \
		--data-binary @"$TMP/b5000"
	expect_error 413 payload_too_large || return 1
	http POST /v1/ratings -H 'Content-Type: application/json' --data-binary @"$TMP/b1001"
	expect_error 413 payload_too_large || return 1
	http PUT /v1/agents/bl2 -H 'Content-Type: application/json' --data-binary @"$TMP/b2000"
	expect_error 413 payload_too_large || return 1
	no_agent bl1 || return 1
	no_agent bl2 || return 1
	# At the limit, and chunked under it: accepted.
	http POST /v1/ratings -H 'Content-Type: application/json' --data-binary @"$TMP/b1000"
	expect 200 'd["applied"] == 1' || return 1
	http POST /v1/ratings -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' \
		--data-binary @"$TMP/b500"
	expect 200 'd["applied"] == 1' 'd["agents"][0]["ratings"] == 2' || return 1
	http GET /healthz
	expect 200 || return 1
	daemon_stop lim
}

# Expect: 100-continue (curl sends it for bodies over 1 KiB and waits a second
# without an answer): "100 Continue" comes before the body is sent, on every
# route with a body, then the final status; HTTP/1.0 gets none; any other
# expectation is 417 and the connection closed, nothing applied.
t_expect_continue() {
	daemon_run exp || return 1
	"$PY" - 127.0.0.1 "${BASE##*:}" >"$TMP/expect.out" <<'EOF'
import json, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
bad = []

def head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        c = sock.recv(65536)
        if not c:
            break
        data += c
    return data

def ask(method, path, body, version="1.1", expect="100-continue"):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(("%s %s HTTP/%s\r\nHost: t\r\nContent-Type: application/json\r\n"
               "Content-Length: %d\r\nExpect: %s\r\nConnection: close\r\n\r\n"
               % (method, path, version, len(body), expect)).encode())
    first = b""
    if version == "1.1" and expect == "100-continue":
        try:
            first = head(s)   # the body is not sent until this comes
        except socket.timeout:
            first = b"(nothing within 10 s)"
    if expect == "100-continue":
        s.sendall(body)
    rest = b""
    while True:
        try:
            c = s.recv(65536)
        except socket.timeout:
            rest += b"(timeout)"
            break
        if not c:
            break
        rest += c
    s.close()
    return first, rest

body = json.dumps([{"id": "ex%d" % i, "agent": "ex1", "user": "u%d" % i, "score": 4}
                   for i in range(40)]).encode()          # over 1 KiB, as curl sends it
for method, path, b, want in (("POST", "/v1/ratings", body, 200),
                              ("PUT", "/v1/agents/ex2", b'{"rate":50}', 201),
                              ("POST", "/v1/agents/ex2/consume", b'{"tokens":1}', 200)):
    first, rest = ask(method, path, b)
    if not first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"):
        bad.append("%s %s: no 100 Continue before the body: %r" % (method, path, first[:80]))
    if not rest.startswith(b"HTTP/1.1 %d " % want) and not first[27:].startswith(b"HTTP/1.1 %d " % want):
        bad.append("%s %s: final status not %d: %r" % (method, path, want, (first + rest)[:120]))
first, rest = ask("POST", "/v1/ratings", json.dumps({"agent": "ex3", "score": 5}).encode(), "1.0")
if b"100 Continue" in rest or not rest.startswith(b"HTTP/1.1 200 "):
    bad.append("HTTP/1.0: %r" % rest[:120])
first, rest = ask("POST", "/v1/ratings", b"", expect="fancy-thing")
if not rest.startswith(b"HTTP/1.1 417 ") or b"expectation_failed" not in rest:
    bad.append("Expect: fancy-thing: %r" % rest[:160])
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF
	[ $? -eq 0 ] || { fail "$(cat "$TMP/expect.out")"; return 1; }
	agent ex1 'd["ratings"] == 40' || return 1
	agent ex3 'd["ratings"] == 1' || return 1
	daemon_stop exp
}

# ---- 10b. hostile clients (--request-timeout 1s) -------------------------------

# raw MODE [ARG]: tests/daemon/rawhttp.py against the current daemon, its
# standard input from RAW_IN (default empty); RAW is its JSON report.
raw() {
	RAW=$("${WRAP[@]}" "$PY" "$HERE/rawhttp.py" 127.0.0.1 "${BASE##*:}" "$@" \
		<"${RAW_IN:-/dev/null}")
}

# raw_check EXPR...: checks on RAW, and the daemon still answers.
raw_check() {
	json_check "$RAW" "$@" || return 1
	http GET /healthz
	expect 200
}

t_abuse_start() {
	daemon_run abuse --request-timeout 1s --max-body 2MiB
}

t_slow_headers() {
	local i pids=()
	# Ten clients trickling headers at once: each is cut off with a 400
	# (JSON) once its request is not complete after the timeout (1 s; the
	# bound asserted is generous), and the API answers meanwhile.
	for i in $(seq 1 10); do
		"$PY" "$HERE/rawhttp.py" 127.0.0.1 "${BASE##*:}" trickle-head >"$TMP/slow-$i.json" &
		pids+=($!)
	done
	sleep 0.3
	http GET /healthz
	expect 200 || return 1
	wait "${pids[@]}"
	for i in $(seq 1 10); do
		RAW=$(<"$TMP/slow-$i.json")
		raw_check 'd["closed"]' 'd["seconds"] < 6' 'd["status"] == 400' \
			'err_ok(json.loads(d["body"]), "bad_request")' \
			'"--request-timeout" in d["body"]' || return 1
	done
}

t_slow_body() {
	# A body sent a byte every 0.2 s: 408 once the timeout has passed,
	# connection closed; nothing created.
	raw trickle-body slowb1
	raw_check 'd["closed"]' 'd["seconds"] < 6' 'd["status"] == 408' \
		'err_ok(json.loads(d["body"]), "request_timeout")' || return 1
	no_agent slowb1
}

# request_with_headers N: GET /healthz with N header fields in all (Host and
# Connection: close among them), into $TMP/req.
request_with_headers() {
	"$PY" -c 'import sys; n = int(sys.argv[1]); sys.stdout.write(
"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" +
"".join("X-H%d: v\r\n" % i for i in range(n - 2)) + "\r\n")' "$1" >"$TMP/req"
}

t_header_limits() {
	request_with_headers 63
	RAW_IN=$TMP/req raw send
	raw_check 'd["status"] == 200' || return 1
	# 64: CivetWeb would drop any further ones unseen: 431.
	request_with_headers 64
	RAW_IN=$TMP/req raw send
	raw_check 'd["closed"]' 'd["status"] == 431' \
		'err_ok(json.loads(d["body"]), "header_fields_too_large")' || return 1
	# Request line and headers over 16 KiB: refused in JSON, closed.
	printf 'GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: %s\r\n\r\n' "$(head -c 20000 /dev/zero |
		tr '\0' a)" >"$TMP/req"
	RAW_IN=$TMP/req raw send
	raw_check 'd["closed"]' 'd["status"] in (400, 431)' '"16384 bytes" in d["body"]' \
		'err_ok(json.loads(d["body"]), "bad_request" if d["status"] == 400 else "header_fields_too_large")'
}

# nested N: N levels of JSON arrays around a 1.
nested() {
	"$PY" -c 'import sys; n = int(sys.argv[1]); print("[" * n + "1" + "]" * n)' "$1"
}

t_json_depth() {
	# The tutorial's free-form metadata: 31 arrays inside the object are 32
	# levels, accepted; 33 refused before parsing, naming the limit.
	jput /v1/agents/nest1 '{"rate":1000}'
	expect 201 || return 1
	jpost /rate "{\"agent_id\":\"nest1\",\"event_type\":\"e\",\"metadata\":$(nested 31)}"
	expect 200 || return 1
	jpost /rate "{\"agent_id\":\"nest1\",\"event_type\":\"e\",\"metadata\":$(nested 32)}"
	expect_error 400 bad_request "nested deeper than 32" || return 1
	# A megabyte of brackets as ratings, as a policy, and one bad NDJSON line.
	nested 500000 >"$TMP/deep.json"
	http POST /v1/ratings -H 'Content-Type: application/json' --data-binary @"$TMP/deep.json"
	expect 400 'd["error"] == "bad_request"' '"nested deeper than 32" in d["message"]' || return 1
	ndpost /v1/ratings "{\"agent\":\"nest1\",\"score\":5}
$(nested 40)"
	expect 400 'd["errors"][0]["index"] == 1' || return 1
	http PUT /v1/agents/nest2 -H 'Content-Type: application/json' --data-binary @"$TMP/deep.json"
	expect_error 400 bad_request "nested deeper than 32" || return 1
	no_agent nest2 || return 1
	agent nest1 'd["ratings"] == 0'
}

t_unknown_fields() {
	local r m p body
	# Every route with a body names an unknown field with 400 and changes
	# nothing; every route refuses query parameters it does not take.
	jpost /v1/ratings '{"agent":"uf1","score":5,"bogus":1}'
	expect 400 'd["errors"] == [{"index": 0, "field": "", "reason": "unknown field '"'bogus'"'"}]' ||
		return 1
	while IFS='|' read -r m p body; do
		http "$m" "$p" -H 'Content-Type: application/json' --data-binary "$body"
		expect_error 400 bad_request "bogus" || return 1
	done <<'END'
PUT|/v1/agents/uf1|{"rate":5,"bogus":1}
POST|/v1/agents/nest1/drain|{"tokens":1,"bogus":1}
POST|/v1/agents/nest1/consume|{"tokens":1,"bogus":1}
POST|/v1/rules|{"prefix":"10.1.0.0/16","agent":"nest1","bogus":1}
DELETE|/v1/rules|{"prefix":"10.1.0.0/16","bogus":1}
POST|/bucket/uf1|{"capacity":5,"bogus":1}
POST|/rate|{"agent_id":"nest1","event_type":"e","bogus":1}
END
	no_agent uf1 || return 1
	for r in '/v1/agents?limit=5&bogus=1' '/healthz?bogus' '/metrics?bogus=1' \
		'/v1/agents/nest1?bogus=1' '/v1/rules?bogus=1'; do
		http GET "$r"
		expect_error 400 bad_request "query 'bogus'" || return 1
	done
	http GET '/v1/agents?limit=5&after=a'
	expect 200
}

# ---- 10c. request framing and agent names (daemon "abuse") -----------------------

# shape_ok SHAPE: RAW (rawhttp.py shape) is what SHAPE must get.
shape_ok() {
	case $1 in
	pipelined) # the control: well framed, so the request behind it runs
		json_check "$RAW" 'd["statuses"] == [200, 200]' ;;
	chunked | chunk-trailer | chunk-size-bare-cr)
		# The body is taken; the connection closes after a chunked body
		# (CivetWeb leaves a trailer unread), so nothing behind it runs.
		json_check "$RAW" 'd["statuses"] == [200]' 'd["closed"]' \
			'"Connection: close" in d["headers"]' ;;
	*)
		json_check "$RAW" 'd["statuses"] == [400]' 'd["closed"]' 'd["seconds"] < 4' \
			'"Connection: close" in d["headers"]' \
			'err_ok(json.loads(d["body"]), "bad_request")' ;;
	esac
}

t_framing_shapes() {
	local sh n=0
	# Each shape carries "DELETE /v1/agents/fr-victim" in the same bytes:
	# refused with 400 and closed, so the hidden request never runs.
	jput /v1/agents/fr-ag '{"rate":1000,"burst":100000}'
	expect 201 || return 1
	for sh in $("$PY" "$HERE/rawhttp.py" 127.0.0.1 0 shapes); do
		jput /v1/agents/fr-victim '{}'
		[ "$STATUS" = 200 ] || [ "$STATUS" = 201 ] || fail "PUT fr-victim" || return 1
		CMD="rawhttp.py shape $sh fr-ag fr-victim"
		raw shape "$sh" fr-ag fr-victim
		shape_ok "$sh" || return 1
		if [ "$sh" = pipelined ]; then
			no_agent fr-victim || return 1
		else
			http GET /v1/agents/fr-victim
			[ "$STATUS" = 200 ] || fail "shape $sh: the hidden DELETE ran" || return 1
		fi
		n=$((n + 1))
	done
	[ "$n" -ge 50 ] || { diag "only $n shapes"; return 1; }
	agent fr-ag 'd["tokens"] >= 100000 - 4'
}

# head_at_end SKIP END: $TMP/req, a GET /healthz head of exactly 16384 bytes
# (CivetWeb's buffer) after SKIP spaces, ending in END (printf escapes).
head_at_end() {
	"$PY" -c 'import sys
skip, end = int(sys.argv[1]), sys.argv[2].encode().decode("unicode_escape").encode()
head = b" " * skip + b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX: "
sys.stdout.buffer.write(head + b"a" * (16384 - len(head) - len(end)) + end)' "$1" "$2" >"$TMP/req"
}

t_framing_buffer_end() {
	# The framing check reads past the last header line: a head that
	# fills CivetWeb's buffer is refused first (431), and one brought to
	# its end by leading spaces is still judged, reading nothing outside
	# the buffer (the sanitizer build would abort on such a read).
	head_at_end 0 '\r\n\r\n'
	RAW_IN=$TMP/req raw send 5
	raw_check 'd["statuses"] == [431]' 'd["closed"]' || return 1
	head_at_end 100 '\n\n'
	RAW_IN=$TMP/req raw send 5
	raw_check 'd["statuses"] == [400]' 'd["closed"]' '"bare LF" in d["body"]' || return 1
	head_at_end 100 '\r\n\n'
	RAW_IN=$TMP/req raw send 5
	raw_check 'd["statuses"] == [400]' 'd["closed"]' || return 1
	head_at_end 100 '\r\n\r\n'
	RAW_IN=$TMP/req raw send 5
	raw_check 'd["statuses"] == [200]'
}

t_framing_stream() {
	local key=dGhlIHNhbXBsZSBub25jZQ==
	CMD="rawhttp.py send: a WebSocket handshake"
	# The WebSocket handshake is checked the same way before it is taken.
	printf 'GET /v1/stream HTTP/1.1\r\nHost: t\r\nHost: u\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n' \
		"$key" >"$TMP/req"
	RAW_IN=$TMP/req raw send 5
	raw_check 'd["statuses"] == [400]' 'd["closed"]' '"Host" in d["body"]' || return 1
	printf 'GET /v1/stream HTTP/1.1\r\nHost: t\r\nUpgrade : websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n' \
		"$key" >"$TMP/req"
	RAW_IN=$TMP/req raw send 5
	raw_check 'd["statuses"] == [400]' 'd["closed"]' '"colon" in d["body"]'
}

# Every route that takes an agent in its path, with a body where it needs one.
NAME_ROUTES=("GET /v1/agents/%s" "PUT /v1/agents/%s" "DELETE /v1/agents/%s"
	"POST /v1/agents/%s/reset" "POST /v1/agents/%s/drain" "POST /v1/agents/%s/consume"
	"POST /bucket/%s" "GET /bucket/%s")

t_names_path() {
	local seg words m p rt
	jput /v1/agents/nm-a '{"rate":1000,"burst":1000}'
	expect 201 || return 1
	# SEGMENT|WORDS of the message: the decoded segment must never be cut
	# (%00), split (%2F) or normalised away (dot segments) into another name.
	# Every answer is collected (a JSON body is one line without tabs), then
	# checked in one go.
	: >"$TMP/names.tsv"
	while IFS='|' read -r seg words; do
		for rt in "${NAME_ROUTES[@]}"; do
			m=${rt%% *}
			# shellcheck disable=SC2059
			p=$(printf "${rt#* }" "$seg")
			http "$m" "$p" --path-as-is -H 'Content-Type: application/json' \
				--data-binary '{"tokens":1}'
			printf '%s\t%s\t%s\t%s\n' "$m $p" "$words" "$STATUS" "$BODY" >>"$TMP/names.tsv"
		done
	done <<'END'
nm-a%00x|%00 (NUL)
nm-a%00|%00 (NUL)
nm%2Fa|%2F
nm%2fa|%2F
.|'.' and '..'
..|'.' and '..'
%2E|'.' and '..'
%2e%2E|'.' and '..'
nm%20a|invalid character 0x20
nm%C3%A9|invalid character 0xc3
nm%0Aa|invalid character 0x0a
nm%zz|two hex digits
nm%4|two hex digits
nm\a|byte 0x5c
nm"a|byte 0x22
END
	"$PY" - "$TMP/names.tsv" <<-'EOF' || return 1
		import json, sys
		bad = 0
		for line in open(sys.argv[1]):
		    req, words, status, body = line.rstrip("\n").split("\t", 3)
		    try:
		        d = json.loads(body)
		        ok = (status == "400" and set(d) == {"error", "message"} and
		              d["error"] == "bad_request" and words in d["message"])
		    except ValueError:
		        ok = False
		    if not ok:
		        bad += 1
		        print("# %s: %s %s (expected 400 naming %r)" % (req, status, body[:300], words))
		sys.exit(1 if bad else 0)
	EOF
	# Too long, however much: 400 naming the limit (not 404).
	http GET "/v1/agents/$(printf 'y%.0s' {1..300})"
	expect_error 400 bad_request "1 to 64 characters" || return 1
	# A dot segment around a name is not resolved into it.
	http DELETE /v1/agents/x/../nm-a --path-as-is
	expect_error 400 bad_request "'.' and '..'" || return 1
	# Escapes of allowed characters decode to them.
	http GET /v1/agents/nm%2Da
	expect 200 'd["agent"] == "nm-a"' || return 1
	agent nm-a 'd["tokens"] == 1000' 'd["rate"] == 1000'
}

t_names_bodies() {
	local n
	# Names in bodies and queries go through the same check: "." and ".."
	# are refused everywhere, as are bytes outside the alphabet.
	for n in . ..; do
		jpost /v1/ratings "{\"agent\":\"$n\",\"score\":5}"
		expect 400 'd["errors"][0]["field"] == "agent"' || return 1
		ndpost /v1/ratings "{\"agent\":\"$n\",\"score\":5}"
		expect 400 'd["errors"][0]["field"] == "agent"' || return 1
		jpost /v1/rules "{\"prefix\":\"10.99.0.0/16\",\"agent\":\"$n\"}"
		expect_error 400 bad_request "field 'agent'" reserved || return 1
		jpost /rate "{\"agent_id\":\"$n\"}"
		expect_error 400 bad_request "field 'agent_id'" reserved || return 1
		http GET "/v1/agents?after=$n"
		expect_error 400 bad_request "query 'after'" reserved || return 1
		cli abuse agent show "$n"
		[ "$RC" -ne 0 ] && [[ "$OUT" == *reserved* ]] ||
			fail "agentgate agent show '$n': exit $RC, expected a refusal naming it reserved" ||
			return 1
	done
	jpost /v1/rules '{"prefix":"10.99.0.0/16","agent":"nm b"}'
	expect_error 400 bad_request "field 'agent'" "0x20" || return 1
	jpost /rate '{"agent_id":"nm-a\u0000x"}'
	expect_error 400 bad_request "NUL" || return 1
	jpost /v1/ratings '{"agent":"nm-a\u0000x","score":5}'
	expect 400 || return 1
	http GET '/v1/agents?after=nm-a%00'
	expect_error 400 bad_request "query 'after'" "%00" || return 1
	# Names made only of dots beyond two are ordinary names.
	jput /v1/agents/... '{"rate":5}' --path-as-is
	expect 201 'd["agent"] == "..."' || return 1
	agent nm-a 'd["ratings"] == 0'
}

t_abuse_stop() {
	daemon_stop abuse
}

# ---- 10d. listing 10^6 agents (daemon "scale", plain build) ----------------------

t_agents_scale() {
	local n=${AG_TEST_SCALE_AGENTS:-1000000} out
	# Pages are read from the store by key: a deep page costs what the
	# first one does, and 32 listings at once leave the daemon's memory
	# flat (before: each copied and sorted every name, about 65 MB a call
	# at 10^6). Asserted on content and memory; the timings are reported.
	# AG_TEST_SCALE_AGENTS sets another count.
	daemon_run --bin "$PLAIN" --timeout 60 scale --max-agents $((n + 1024)) --max-body 64MiB ||
		return 1
	CMD="listscale.py 127.0.0.1 ${DPORT[scale]} ${DPID[scale]} $n"
	out=$("$PY" "$HERE/listscale.py" 127.0.0.1 "${DPORT[scale]}" "${DPID[scale]}" "$n") ||
		{ diag "listscale.py failed: $out"; return 1; }
	diag "$n agents (seconds, KiB): $out"
	json_check "$out" 'd["pages_ok"] == []' 'd["concurrent_ok"] == 32' \
		'd["rating_status"] == 200' || return 1
	if jget "$out" 'd["hwm_before_kb"] is None' | grep -q True; then
		diag "cannot reset the daemon's peak memory (/proc/PID/clear_refs): not measured"
	else
		json_check "$out" 'd["hwm_after_kb"] - d["hwm_before_kb"] < 64 * 1024' || return 1
	fi
	daemon_stop scale 60
}

# ---- 11. config file and SIGHUP -------------------------------------------------

t_config_bad_file() {
	local f=$TMP/bad.conf pin=$BPFFS/daemon-$$-badconf st=$TMP/state-badconf
	echo "$pin" >>"$TMP/pins"
	mkdir -p "$st"
	alloc_port
	printf '# agentgated\nalpha = 5\nrate = fast\n' >"$f"
	run_expect_exit 2 20 --config "$f" --pin-path "$pin" --state-dir "$st" \
		--listen "127.0.0.1:$NEW_PORT" || return 1
	[[ "$OUT" == *"$f:3:"* && "$OUT" == *rate* ]] || { diag "file:line not named: $OUT"; return 1; }
	printf 'rate = 50\ncolour = red\n' >"$f"
	run_expect_exit 2 20 --config "$f" --pin-path "$pin" --state-dir "$st" \
		--listen "127.0.0.1:$NEW_PORT" || return 1
	[[ "$OUT" == *"$f:2:"* && "$OUT" == *colour* ]] || { diag "file:line not named: $OUT"; return 1; }
	run_expect_exit 2 20 --config "$TMP/no-such.conf" --pin-path "$pin" --state-dir "$st" \
		--listen "127.0.0.1:$NEW_PORT" || return 1
	[[ "$OUT" == *no-such.conf* ]] || { diag "the missing file is not named: $OUT"; return 1; }
	[ ! -e "$pin" ] || { diag "a refused start created $pin"; return 1; }
}

CONF=""
t_config_file() {
	CONF=$TMP/agentgated.conf
	printf '# test config\nrate = 50   # tokens/s\nalpha = 5\n' >"$CONF"
	daemon_run conf --config "$CONF" --alpha 2 || return 1
	jput /v1/agents/c1 '{}'
	expect 201 'd["rate"] == 50' 'd["r0"] == 50' 'd["alpha"] == 2' || return 1
	jpost /v1/ratings '{"agent":"c1","score":5}'
	expect 200 'd["agents"][0]["rate"] == 54' || return 1
	jpost /v1/ratings '{"agent":"c0","score":3}'
	expect 200 'd["agents"][0]["rate"] == 50' || return 1
}

# reload TEXT [MARK]: writes TEXT (printf format) to the config file, sends
# SIGHUP and waits for MARK ("settings reloaded") to appear once more.
reload() {
	local mark=${2:-settings reloaded} n
	n=$(grep -c "$mark" "${DLOG[conf]}")
	printf "$1" >"$CONF"
	kill -HUP "${DPID[conf]}"
	wait_for 10 "'$mark' in the log" \
		eval "[ \$(grep -c '$mark' '${DLOG[conf]}') -gt $n ]"
}

t_config_sighup() {
	reload 'rate = 70\nalpha = 7\nburst = 2s\n' || return 1
	jput /v1/agents/c2 '{}'
	expect 201 'd["rate"] == 70' 'd["r0"] == 70' 'd["alpha"] == 2' 'd["burst"] == 140' \
		'd["burst_policy"] == "2s"' || return 1
	# An agent that inherits the burst follows it; its own rate stays.
	agent c1 'd["rate"] == 54' 'd["burst"] == 108' || return 1
	cli conf agent show c1
	jb 'd["rate"] == 54' 'd["burst"] == 108' || return 1
	# A bad file on reload: refused, the running settings stay.
	reload 'rate = 90\nrate = fast\n' 'reload failed' || return 1
	grep -q "$CONF:2:" "${DLOG[conf]}" || { diag "reload error does not name $CONF:2"; return 1; }
	daemon_alive conf || return 1
	jput /v1/agents/c3 '{}'
	expect 201 'd["rate"] == 70' 'd["alpha"] == 2' 'd["burst"] == 140' || return 1
}

t_config_reload_clamp() {
	# A lower default r_max clamps the agents that inherit it, in the maps
	# too, and the clamp is kept over a restart.
	reload 'rate = 40\nr-max = 60\n' || return 1
	agent c2 'd["rate"] == 60' 'd["r_max"] == 60' || return 1
	cli conf agent show c2
	jb 'd["rate"] == 60' || return 1
	agent c1 'd["rate"] == 54' || return 1
	jput /v1/agents/c4 '{}'
	expect 201 'd["rate"] == 40' || return 1
	daemon_stop conf || return 1
	daemon_run conf --config "$CONF" --alpha 2 || return 1
	agent c2 'd["rate"] == 60' || return 1
	agent c3 'd["rate"] == 60' || return 1
	agent c1 'd["rate"] == 54' 'd["burst"] == 54' || return 1
	agent c4 'd["rate"] == 40' || return 1
	cli conf agent show c2
	jb 'd["rate"] == 60' || return 1
	daemon_stop conf
}

# ---- 12. XDP stays attached after SIGTERM -------------------------------------

# xdp_prog: the id of the XDP program on VETH_A, or "none".
xdp_prog() {
	ip -n "$NS" -j link show "$VETH_A" 2>/dev/null | "$PY" -c '
import json, sys
x = json.load(sys.stdin)[0].get("xdp")
print(x["prog"]["id"] if x else "none")'
}

# frames COUNT SRC: UDP frames from SRC out of VETH_B, into VETH_A's XDP
# (tests/cli/sendframes.py).
frames() {
	local n
	n=$(ip netns exec "$NS" "$PY" "$HERE/../cli/sendframes.py" "$VETH_B" "$1" "$2" \
		--peer-if "$VETH_A") || { diag "sendframes.py failed: $n"; return 1; }
	[ "$n" -eq "$1" ] || { diag "sent $n of $1 frames"; return 1; }
}

XDP_PROG=""
t_xdp_attached_after_sigterm() {
	ip netns add "$NS" 2>/dev/null || { SKIP_REASON="cannot create a network namespace"; return 77; }
	ip netns exec "$NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
		net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1
	ip -n "$NS" link set lo up &&
		ip -n "$NS" link add "$VETH_A" type veth peer name "$VETH_B" &&
		ip -n "$NS" link set "$VETH_A" up && ip -n "$NS" link set "$VETH_B" up ||
		{ diag "cannot create the veth pair"; return 1; }
	daemon_run --netns xdp --attach "$VETH_A" || return 1
	XDP_PROG=$(xdp_prog)
	[ "$XDP_PROG" != none ] || { diag "nothing attached to $VETH_A"; return 1; }
	# Burst 5, refill one token in 10 s.
	jput /v1/agents/x1 '{"rate":0.1,"r_min":0.1,"burst":5}'
	expect 201 || return 1
	jpost /v1/rules '{"prefix":"10.66.0.0/16","agent":"x1"}'
	expect 201 || return 1
	frames 20 10.66.0.1 || return 1
	wait_for 5 "20 frames counted for x1" \
		agent_is x1 'd["passed_packets"] + d["dropped_packets"] == 20' || { agent x1; return 1; }
	agent x1 'd["passed_packets"] == 5' 'd["dropped_packets"] == 15' \
		'd["passed_bytes"] == 5 * 100' 'd["tokens"] < 1' || return 1
	# The API consumes from the bucket the NIC emptied.
	jpost /v1/agents/x1/consume '{"tokens":1}'
	expect 429 'd["allowed"] is False' || return 1
	daemon_stop xdp || return 1
	WRAP=()
	[ "$(xdp_prog)" = "$XDP_PROG" ] ||
		{ diag "after SIGTERM $VETH_A runs '$(xdp_prog)', expected program $XDP_PROG"; return 1; }
	cli xdp status
	[ "$RC" -eq 0 ] || { diag "agentgate status: $OUT"; return 1; }
	jb "[(l['ifname'], l['prog_id']) for l in d['links']] == [('$VETH_A', $XDP_PROG)]" \
		'd["agents"] == 1' || return 1
	# Still enforcing with the daemon down.
	frames 10 10.66.0.2 || return 1
	sleep 0.2
	cli xdp agent show x1
	jb 'd["passed_packets"] == 5' 'd["dropped_packets"] == 25'
}

t_xdp_restart() {
	[ -n "$XDP_PROG" ] || { diag "no attachment from the previous case"; return 1; }
	# Started again: it takes the attachment over; agent, rule, counters there.
	daemon_run --netns xdp --attach "$VETH_A" || return 1
	grep -q "attached to $VETH_A" "${DLOG[xdp]}" || { diag "no 'attached to' in the log"; return 1; }
	agent x1 'd["rate"] == 0.1' 'd["passed_packets"] == 5' 'd["dropped_packets"] == 25' \
		'd["rules"] == [{"prefix": "10.66.0.0/16", "port": 0}]' 'd["tokens"] < 1' || return 1
	[ "$(xdp_prog)" != none ] || { diag "nothing attached after the restart"; return 1; }
	# A deleted agent's slot, reused: no counters, tokens or rules carried over.
	http DELETE /v1/agents/x1
	expect 200 || return 1
	frames 5 10.66.0.3 || return 1
	jput /v1/agents/x2 '{"rate":10,"burst":10}'
	expect 201 'd["passed_packets"] == 0' 'd["dropped_packets"] == 0' 'd["passed_bytes"] == 0' \
		'd["dropped_bytes"] == 0' 'd["tokens"] == 10' 'd["rules"] == []' || return 1
	frames 5 10.66.0.4 || return 1
	sleep 0.2
	agent x2 'd["passed_packets"] == 0' 'd["dropped_packets"] == 0' || return 1
	daemon_stop xdp || return 1
	[ "$(xdp_prog)" != none ] || { diag "detached by the second SIGTERM"; return 1; }
}

# ---- TLS (--tls-cert, --tls-key) ----------------------------------------------

t_tls() {
	local crt=$TMP/tls.crt key=$TMP/tls.key i code
	command -v openssl >/dev/null 2>&1 || { SKIP_REASON="openssl not found"; return 77; }
	openssl req -x509 -newkey rsa:2048 -nodes -keyout "$key" -out "$crt" -days 2 \
		-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1 ||
		{ diag "openssl cannot make a certificate"; return 1; }
	daemon_run --no-wait tls --tls-cert "$crt" --tls-key "$key" || return 1
	for ((i = 0; i < 200; i++)); do
		running "${DPID[tls]}" || break
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$crt" \
			"https://127.0.0.1:${DPORT[tls]}/readyz" 2>/dev/null)
		[ "$code" = 200 ] && break
		sleep 0.05
	done
	if ! running "${DPID[tls]}"; then
		wait_exit "${DPID[tls]}" 5
		DPID[tls]=""
		diag "exited with code $EXIT_RC; its log:"
		diag "$(daemon_log tls | tail -n 20)"
		return 1
	fi
	BASE=https://127.0.0.1:${DPORT[tls]}
	http GET /healthz --cacert "$crt"
	expect 200 'd == {"status": "ok"}' || return 1
	jput /v1/agents/tl1 '{"rate":5}' --cacert "$crt"
	expect 201 'd["rate"] == 5' || return 1
	# No plaintext on the TLS port.
	BASE=http://127.0.0.1:${DPORT[tls]}
	http GET /healthz
	[ "$STATUS" != 200 ] || fail "plain HTTP answered on the TLS listener" || return 1
	daemon_stop tls
}

# ---- 13. valgrind ---------------------------------------------------------------

t_valgrind() {
	local vlog=$TMP/valgrind.log res
	command -v valgrind >/dev/null 2>&1 || { SKIP_REASON="valgrind not found"; return 77; }
	[ -n "$XDP_PROG" ] || { diag "no network namespace from the xdp cases"; return 1; }
	# Start: maps, state, the program loaded and attached (to the veth's
	# other end, the first end running the xdp cases' program), the
	# privilege drop in every thread.
	daemon_run --bin "$PLAIN" --netns --valgrind "$vlog" --timeout 120 vg --attach "$VETH_B" ||
		return 1
	grep -q "attached to $VETH_B" "${DLOG[vg]}" || { diag "not attached"; return 1; }
	jput /v1/agents/vg1 '{"rate":10,"burst":"2s"}'
	expect 201 || return 1
	jpost /v1/ratings '[{"id":"v1","agent":"vg1","score":5},{"agent":"vg2","score":1}]'
	expect 200 'd["applied"] == 2' || return 1
	# A load of ratings: 2000 in NDJSON batches and 60 requests one by one.
	for res in 1 2 3 4; do
		"$PY" -c 'import json, sys
for i in range(500): print(json.dumps({"id": "vb-%s-%d" % (sys.argv[1], i),
                                       "agent": "vg%d" % (3 + i % 20), "score": 1 + i % 5}))' \
			"$res" >"$TMP/vg.ndjson"
		http POST /v1/ratings -H 'Content-Type: application/x-ndjson' \
			--data-binary @"$TMP/vg.ndjson"
		expect 200 'd["applied"] == 500' || return 1
	done
	res=$("${WRAP[@]}" "$PY" "$HERE/post_many.py" 127.0.0.1 "${DPORT[vg]}" vg1 60 vl 5,4,1)
	json_check "$res" 'd["acked"] == 60' 'd["error"] is None' || return 1
	http GET /metrics
	expect_status 200 || return 1
	grep -q '^agentgate_agents 22$' "$TMP/body" || { diag "no agentgate_agents 22"; return 1; }
	# A stream client that leaves without reading, and one connected at
	# shutdown: their queues, threads and updates are all freed.
	"${WRAP[@]}" "$PY" "$HERE/ws.py" 127.0.0.1 "${DPORT[vg]}" "/v1/stream?topics=rating.global" \
		>/dev/null || return 1
	ip netns exec "$NS" "$PY" "$HERE/../stream/wsclient.py" \
		"ws://127.0.0.1:${DPORT[vg]}/v1/stream?topics=rating.global" >"$TMP/vg-ws.out" 2>&1 &
	local wspid=$!
	sleep 1
	jpost /v1/ratings '[{"id":"v3","agent":"vg1","score":4}]'
	expect 200 'd["applied"] == 1' || return 1
	sleep 0.5
	# On failure, valgrind's reports (not its warnings) and the summary.
	daemon_stop vg 120 && grep -q 'ERROR SUMMARY: 0 errors' "$vlog" ||
		{ diag "$(grep -vE 'WARNING|Warning' "$vlog" | grep -E '^==[0-9]+== ' |
			sed -n '/== [A-Z][a-z]/,$p' | head -n 80)"; return 1; }
	wait "$wspid"
	grep -q '"id":"v3"' "$TMP/vg-ws.out" && grep -q '^closed: 1001' "$TMP/vg-ws.out" ||
		{ diag "stream client: $(cat "$TMP/vg-ws.out")"; return 1; }
}

# ---- one owner of policy: the CLI beside a daemon ------------------------------
#
# While agentgated runs, CLI writes go through its control socket: stored,
# audited as local:root, visible in the API and metrics at once. Without it,
# the CLI writes the maps and the next daemon adopts them. Each case starts
# and stops its own daemon.

# metric_is NAME VALUE: /metrics has the sample line "NAME VALUE".
metric_is() {
	http GET /metrics
	grep -qxF "$1 $2" <<<"$BODY" || fail "/metrics: want '$1 $2', have: $(grep -F "$1" <<<"$BODY" | head -n 3)"
}

# cli_ok NAME ARGS...: the CLI succeeds.
cli_ok() {
	cli "$@"
	[ "$RC" -eq 0 ] || fail "agentgate ${*:2}: exit $RC (expected 0)"
}

t_owner_cli_through_daemon() {
	local f
	daemon_run own || return 1
	f=${DSTATE[own]}/audit.log
	cli_ok own status || return 1
	jb "d['owner'] == {'pid': ${DPID[own]}, 'control_socket': '${DSTATE[own]}/control.sock', 'since_ms': d['owner']['since_ms']}" || return 1
	# A pin stays: ratings are counted and do not move the rate.
	cli_ok own agent set ox rate 777 pin || return 1
	jb 'd["name"] == "ox"' 'd["rate"] == 777' 'd["pinned"] is True' 'd["created"] is True' || return 1
	agent ox 'd["rate"] == 777' 'd["pinned"] is True' 'd["r0"] == 777' || return 1
	metric_is 'agentgate_refill_rate{agent="ox"}' 777 || return 1
	jpost /v1/ratings '{"agent":"ox","score":5}'
	expect 200 'd["agents"] == [{"agent": "ox", "rate": 777, "mean_score": 5, "ratings": 1}]' || return 1
	cli_ok own agent show ox || return 1
	jb 'd["rate"] == 777' 'd["pinned"] is True' || return 1
	# Unpinned, ratings move it again, from where the operator left it.
	cli_ok own agent set ox unpin || return 1
	jpost /v1/ratings '{"agent":"ox","score":5}'
	expect 200 'd["agents"][0]["rate"] == 797' || return 1
	cli_ok own agent show ox || return 1
	jb 'd["rate"] == 797' 'd["pinned"] is False' || return 1
	# Bucket operations, rules and the global settings.
	cli_ok own agent drain ox 500 || return 1
	jb 'd["name"] == "ox"' 'd["tokens"] < 400' || return 1
	agent ox 'd["tokens"] < 400' || return 1
	cli_ok own agent reset ox || return 1
	jb 'd["tokens"] == 797' || return 1
	cli_ok own rule add 10.77.0.0/16 port 443 agent ox || return 1
	http GET /v1/rules
	expect 200 'd == [{"prefix": "10.77.0.0/16", "port": 443, "agent": "ox"}]' || return 1
	cli_ok own rule del 10.77.0.0/16 port 443 || return 1
	http GET /v1/rules
	expect 200 'd == []' || return 1
	cli_ok own config set dry-run on || return 1
	jb 'd == {"default_action": "pass", "dry_run": True}' || return 1
	cli_ok own config set default-action drop || return 1
	jb 'd == {"default_action": "drop", "dry_run": True}' || return 1
	cli_ok own config set dry-run off || return 1
	cli_ok own config set default-action pass || return 1
	# Deleted is deleted: the API says 404 at once, the CLI too.
	cli_ok own agent del ox || return 1
	jb 'd == {"name": "ox", "deleted": True}' || return 1
	no_agent ox || return 1
	cli own agent show ox
	[ "$RC" -eq 1 ] || fail "agent show after del: exit $RC" || return 1
	# Every change is in the audit log, by local:root.
	"$PY" - "$f" <<-'EOF' || { diag "$(cat "$f")"; return 1; }
		import json, sys
		lines = [json.loads(l) for l in open(sys.argv[1])]
		acts = [(l["action"], l["agent"]) for l in lines]
		want = [("agent.create", "ox"), ("agent.update", "ox"), ("agent.drain", "ox"),
		        ("agent.reset", "ox"), ("rule.add", "ox"), ("rule.delete", "ox"),
		        ("config.set", ""), ("config.set", ""), ("config.set", ""), ("config.set", ""),
		        ("agent.delete", "ox")]
		bad = []
		if acts != want:
		    bad.append("actions %s, expected %s" % (acts, want))
		if {l["subject"] for l in lines} != {"local:root"}:
		    bad.append("subjects %s" % {l["subject"] for l in lines})
		if lines and not lines[0]["after"]["pinned"]:
		    bad.append("agent.create not pinned: %s" % lines[0])
		c = [l for l in lines if l["action"] == "config.set"]
		if len(c) == 4 and (c[0]["after"] != {"default_action": "pass", "dry_run": True} or
		                    c[1]["after"] != {"default_action": "drop", "dry_run": True}):
		    bad.append("config.set records: %s" % c[:2])
		for b in bad:
		    print("audit.log: " + b)
		sys.exit(1 if bad else 0)
	EOF
	daemon_stop own
}

t_owner_cli_refused_values() {
	daemon_run own2 || return 1
	# The CLI sets the enforced rate as it does without a daemon: outside
	# the agent's bounds (r-max 10000, r-min 1), they widen to take it.
	cli_ok own2 agent set big rate 50000 || return 1
	agent big 'd["rate"] == 50000' 'd["r_max"] == 50000' 'd["r_min"] == 1' || return 1
	cli_ok own2 agent set big rate 0.5 || return 1
	agent big 'd["rate"] == 0.5' 'd["r_min"] == 0.5' 'd["r_max"] == 50000' || return 1
	jpost /v1/ratings '{"agent":"big","score":5}'
	expect 200 'd["agents"][0]["rate"] == 20.5' || return 1
	cli own2 agent drain nobody 5
	[ "$RC" -eq 1 ] && [[ "$OUT" == *"unknown agent 'nobody'"* ]] ||
		fail "drain unknown: exit $RC, $OUT" || return 1
	cli own2 agent reset nobody
	[ "$RC" -eq 1 ] && [[ "$OUT" == *"nobody"* ]] || fail "reset unknown: exit $RC, $OUT" || return 1
	cli own2 rule add 10.9.0.0/16 agent nobody
	[ "$RC" -eq 1 ] && [[ "$OUT" == *"nobody"* ]] || fail "rule for unknown: exit $RC, $OUT" || return 1
	http GET /v1/rules
	expect 200 'd == []' || return 1
	# Bad input is the CLI's own usage error, before any daemon is asked.
	cli own2 agent set bad rate -5
	[ "$RC" -eq 2 ] || fail "rate -5: exit $RC" || return 1
	daemon_stop own2
}

# A daemon that stops hands the pin root back: the CLI writes the maps, the
# next daemon adopts. One that is killed leaves its record, which counts
# for nothing without its lock.
t_owner_handover() {
	daemon_run own3 || return 1
	cli_ok own3 agent set h1 rate 40 pin || return 1
	daemon_stop own3 || return 1
	[ ! -e "${DPIN[own3]}/owner/record" ] || fail "owner record left after SIGTERM" || return 1
	[ ! -e "${DSTATE[own3]}/control.sock" ] || fail "control socket left after SIGTERM" || return 1
	cli_ok own3 status || return 1
	jb 'd["owner"] is None' || return 1
	cli_ok own3 agent set h2 rate 60 pin || return 1
	cli_ok own3 agent set h1 rate 45 || return 1
	daemon_run own3 || return 1
	agent h2 'd["rate"] == 60' 'd["pinned"] is True' || return 1
	agent h1 'd["rate"] == 45' 'd["pinned"] is True' || return 1
	# Deletions made while it was down stay deleted; what the CLI left
	# alone is restored from the store as before.
	cli_ok own3 rule add 10.33.0.0/16 agent h1 || return 1
	cli_ok own3 rule add 10.34.0.0/16 agent h2 || return 1
	cli_ok own3 agent set h4 rate 80 || return 1
	daemon_stop own3 || return 1
	cli_ok own3 agent del h2 || return 1
	cli_ok own3 rule del 10.33.0.0/16 || return 1
	cli_ok own3 agent set h1 unpin || return 1
	daemon_run own3 || return 1
	no_agent h2 || return 1
	agent h1 'd["pinned"] is False' 'd["rate"] == 45' 'd["rules"] == []' || return 1
	agent h4 'd["rate"] == 80' || return 1
	http GET /v1/rules
	expect 200 'd == []' || return 1
	daemon_log own3 | grep -q "while agentgated was stopped: 2 agents taken from the maps, 2 stored rules dropped" ||
		fail "no log line for the journal: $(daemon_log own3 | tail -n 3)" || return 1
	grep -q '"subject":"agentgate (while agentgated was stopped)","action":"agent.delete","agent":"h2"' \
		"${DSTATE[own3]}/audit.log" || fail "no audit record of h2's deletion" || return 1
	[ ! -e "${DPIN[own3]}/owner/journal" ] || fail "the journal was not cleared" || return 1
	# Stopped again with nothing changed: a restart changes nothing.
	daemon_stop own3 || return 1
	daemon_run own3 || return 1
	agent h1 'd["pinned"] is False' 'd["rate"] == 45' || return 1
	daemon_kill9 own3 || return 1
	[ -e "${DPIN[own3]}/owner/record" ] || fail "expected the dead daemon's record" || return 1
	cli_ok own3 agent set h3 rate 70 || return 1
	daemon_run own3 || return 1
	agent h3 'd["rate"] == 70' || return 1
	daemon_stop own3
}

# An operator's delete is not undone by the next rating: ratings for a
# deleted agent are refused until an operator creates it again.
t_owner_deleted_stays() {
	local sock=$TMP/own5.sock reply
	daemon_run own5 --ingest-socket "$sock" || return 1
	jput /v1/agents/gone1 '{"rate":50}'
	expect 201 || return 1
	cli_ok own5 agent del gone1 || return 1
	jpost /v1/ratings '{"agent":"gone1","score":5}'
	expect_error 404 not_found gone1 deleted local:root || return 1
	no_agent gone1 || return 1
	# A batch naming it is refused whole; NDJSON too.
	jpost /v1/ratings '[{"agent":"other1","score":5},{"agent":"gone1","score":4}]'
	expect_error 404 not_found "item 1" gone1 || return 1
	no_agent other1 || return 1
	ndpost /v1/ratings '{"agent":"gone1","score":5}'
	expect_error 404 not_found gone1 || return 1
	# A stream refuses the line alone, dead-lettered with the reason.
	reply=$(printf '%s\n' '{"agent":"gone1","score":5}' '{"agent":"other2","score":5}' |
		"$PY" "$HERE/ingest.py" "$sock") || { diag "ingest.py failed: $reply"; return 1; }
	json_check "$reply" 'd == {"applied": 1, "duplicates": 0, "invalid": 0, "rejected": 1}' ||
		return 1
	dead_letters own5 'len(d) == 1' '"deleted by an operator" in d[0]["reason"]' || return 1
	no_agent gone1 || return 1
	# The tutorial's POST /rate does not bring it back either.
	jpost /rate '{"agent_id":"gone1","event_type":"x","metadata":{}}'
	[ "$STATUS" != 200 ] || fail "POST /rate brought gone1 back" || return 1
	no_agent gone1 || return 1
	# Deleted over the API, across a restart: still refused.
	jput /v1/agents/gone2 '{"rate":50}'
	expect 201 || return 1
	http DELETE /v1/agents/gone2
	expect 200 || return 1
	daemon_stop own5 || return 1
	daemon_run own5 --ingest-socket "$sock" || return 1
	jpost /v1/ratings '{"agent":"gone2","score":5}'
	expect_error 404 not_found gone2 deleted || return 1
	# Created again by an operator: rated as any agent.
	cli_ok own5 agent set gone1 rate 70 || return 1
	jpost /v1/ratings '{"agent":"gone1","score":5}'
	expect 200 'd["agents"] == [{"agent": "gone1", "rate": 90, "mean_score": 5, "ratings": 1}]' || return 1
	jput /v1/agents/gone2 '{}'
	expect 201 || return 1
	jpost /v1/ratings '{"agent":"gone2","score":5}'
	expect 200 || return 1
	daemon_stop own5
}

# The races: a daemon never starts in the middle of a CLI write (it waits
# for the shared lock a write holds), and a CLI that finds the pin root owned
# by a daemon that then goes away writes the maps once it is gone.
t_owner_races() {
	local holder t1
	daemon_run own4 || return 1
	daemon_stop own4 || return 1
	# A CLI write under way (its shared lock, held here by flock(1)): the
	# daemon is ready only after it let go.
	flock -s "${DPIN[own4]}/owner" sh -c "sleep 1.5; date +%s%N >$TMP/released" &
	holder=$!
	echo "$holder" >>"$TMP/pids"
	sleep 0.2
	daemon_run own4 || return 1
	t1=$(date +%s%N)
	wait "$holder"
	[ -s "$TMP/released" ] && [ "$t1" -gt "$(<"$TMP/released")" ] ||
		fail "the daemon was ready before the write's lock was released" || return 1
	daemon_stop own4 || return 1
	# The pin root owned by a process that answers nothing and then lets
	# go (a daemon stopping): the CLI waits and writes the maps after.
	rm -f "$TMP/released"
	flock -x "${DPIN[own4]}/owner" sh -c "sleep 1.5; date +%s%N >$TMP/released" &
	holder=$!
	echo "$holder" >>"$TMP/pids"
	sleep 0.2
	cli_ok own4 agent set r1 rate 11 || return 1
	t1=$(date +%s%N)
	wait "$holder"
	[ -s "$TMP/released" ] && [ "$t1" -gt "$(<"$TMP/released")" ] ||
		fail "the CLI returned before the owner let go" || return 1
	cli_ok own4 agent show r1 || return 1
	jb 'd["rate"] == 11' || return 1
	# Owned for longer than the CLI waits (10 s): exit 1, nothing written.
	flock -x "${DPIN[own4]}/owner" sleep 12 &
	holder=$!
	echo "$holder" >>"$TMP/pids"
	sleep 0.2
	cli own4 agent set r2 rate 12
	kill "$holder" 2>/dev/null
	wait "$holder" 2>/dev/null
	[ "$RC" -eq 1 ] && [[ "$OUT" == *"does not answer"*"nothing was changed"* ]] ||
		fail "owned by a silent process: exit $RC, $OUT" || return 1
	cli own4 agent show r2
	[ "$RC" -eq 1 ] || fail "r2 was written" || return 1
	# A second daemon on the same pin root refuses to start, naming the first.
	daemon_run own4 || return 1
	run_expect_exit 1 30 --pin-path "${DPIN[own4]}" --state-dir "$TMP/state-own4b" \
		--listen 127.0.0.1:1 || return 1
	[[ "$OUT" == *"owned by another agentgated (pid ${DPID[own4]}"* ]] ||
		fail "second daemon: $OUT" || return 1
	daemon_stop own4
}

# ---- 14. option bounds and reload classes (the option table, config.c) -------

# has TEXT...: each TEXT (fixed string) in $OUT.
has() {
	local t
	for t in "$@"; do
		[[ "$OUT" == *"$t"* ]] || { diag "no '$t' in: $OUT"; return 1; }
	done
}

t_flags_bounds() {
	local pin=$BPFFS/daemon-$$-bounds st=$TMP/state-bounds a
	echo "$pin" >>"$TMP/pins"
	mkdir -p "$st"
	alloc_port
	a=(--pin-path "$pin" --state-dir "$st" --listen "127.0.0.1:$NEW_PORT")
	# Below a minimum, above a maximum, zero, an exclusive minimum in fleet
	# mode, a config-file key: exit 2 naming the option, its value and bound.
	run_expect_exit 2 20 "${a[@]}" --store-size 512KiB || return 1
	has "store-size is 512KiB; it must be at least 1MiB" || return 1
	run_expect_exit 2 20 "${a[@]}" --stream-queue 2M || return 1
	has "stream-queue is 2M; it must be 1 to 1M" || return 1
	run_expect_exit 2 20 "${a[@]}" --max-agents 0 || return 1
	has "max-agents is 0; it must be 1 to 16777216" || return 1
	run_expect_exit 2 20 "${a[@]}" --nats nats://127.0.0.1:1 --fleet-floor 0 || return 1
	has "fleet-floor is 0; it must be above 0 and at most 1" || return 1
	printf 'dead-letter-max = 32k\n' >"$TMP/bounds.conf"
	run_expect_exit 2 20 --config "$TMP/bounds.conf" "${a[@]}" || return 1
	has "dead-letter-max is 32KiB; it must be at least 64KiB" || return 1
	# Across options, after each one's own bounds.
	run_expect_exit 2 20 "${a[@]}" --threads 20000 --stream-max-clients 1 || return 1
	has "threads plus stream-max-clients must be at most 20000" || return 1
	[ ! -e "$pin" ] || { diag "a refused start created $pin"; return 1; }
	# --help says the same defaults and bounds, and what SIGHUP applies.
	run_expect_exit 0 20 --help || return 1
	has "--store-size BYTES" "(default 4GiB, at least 1MiB)" "(default 1024, 1 to 1M)" \
		"(default 1MiB, at least 1; reloads on SIGHUP)"
}

t_flags_reload() {
	local cfg=$TMP/flags.conf log n o
	printf 'max-body = 1000\nstore-size = 8MiB\nthreads = 8\n' >"$cfg"
	daemon_run flags --config "$cfg" || return 1
	log=${DLOG[flags]}
	body_file 1500 "$TMP/fl1500" '[{"agent":"fl1","score":5}]'
	http POST /v1/ratings -H 'Content-Type: application/json' --data-binary @"$TMP/fl1500"
	expect_error 413 payload_too_large || return 1
	# Two restart-only options and two reloadable ones changed.
	n=$(grep -c 'settings reloaded' "$log")
	printf 'max-body = 2000\nstore-size = 16MiB\nthreads = 9\nrate = 70\n' >"$cfg"
	kill -HUP "${DPID[flags]}"
	wait_for 10 "'settings reloaded' in the log" \
		eval "[ \$(grep -c 'settings reloaded' '$log') -gt $n ]" || return 1
	OUT=$(daemon_log flags)
	for o in store-size threads; do
		has "reload: '$o' changed; it takes effect on restart" || return 1
	done
	for o in max-body rate; do
		[[ "$OUT" != *"reload: '$o' changed"* ]] ||
			{ diag "reloadable $o logged as needing a restart: $OUT"; return 1; }
	done
	# The reloadable ones apply at once: a 1500-byte body, a new agent at r0 70.
	http POST /v1/ratings -H 'Content-Type: application/json' --data-binary @"$TMP/fl1500"
	expect 200 'd["applied"] == 1' 'd["agents"][0]["rate"] == 90' || return 1
	# A value out of bounds on reload: refused naming it, the settings stay.
	n=$(grep -c 'reload failed' "$log")
	printf 'max-body = 1000\nstream-ping = 50ms\n' >"$cfg"
	kill -HUP "${DPID[flags]}"
	wait_for 10 "'reload failed' in the log" \
		eval "[ \$(grep -c 'reload failed' '$log') -gt $n ]" || return 1
	OUT=$(daemon_log flags)
	has "stream-ping is 50ms; it must be at least 100ms" || return 1
	http POST /v1/ratings -H 'Content-Type: application/json' --data-binary @"$TMP/fl1500"
	expect 200 'd["applied"] == 1' || return 1
	daemon_stop flags
}

TESTS=(
	"t_api_start|daemon starts on a fresh pin root and state dir; /healthz, /readyz 200; maps pinned"
	"t_ratings_single|POST /v1/ratings one object: 200 applied/duplicates/agents with rate 120"
	"t_ratings_array|POST /v1/ratings JSON array: rates, mean_score, ratings per agent"
	"t_ratings_ndjson|POST /v1/ratings NDJSON (application/x-ndjson): applied; as JSON it is 400"
	"t_ratings_bad_requests|POST /v1/ratings invalid JSON, empty array, no body: 400; GET: 405 Allow POST"
	"t_agents_paging|GET /v1/agents pages with limit/after and next; bad limits 400"
	"t_agents_many_workers|300 listings at once, each on its own worker: all 200 (pages are read by one thread: LMDB reader slots are per thread)"
	"t_agent_get|GET /v1/agents/{a}: policy, tokens, counters, rules; unknown 404"
	"t_agent_put_codes|PUT /v1/agents/{a}: 201 created, 200 updated, maps follow; bad bodies 400"
	"t_agent_delete|DELETE /v1/agents/{a}: 200, then 404; its rules go, in the maps too"
	"t_reset_drain|drain lowers tokens by n; reset fills; bad drain bodies 400; unknown 404"
	"t_consume|consume: 200 allowed/remaining, 429 with Retry-After and allowed false"
	"t_rules|rules: POST 201, 409 for another agent, 404 unknown agent, DELETE by body and query"
	"t_method_path_errors|wrong method: 405 with Allow; unknown path: 404; error bodies {error,message}"
	"t_policy_sequence|policy: r = clamp(r + 10*(score-3)) step by step from r0 100"
	"t_policy_clamp|policy: clamped at per-agent and global r_min and r_max"
	"t_policy_alpha|policy: per-agent alpha 2.5 and 0"
	"t_policy_pinned|policy: a pinned agent keeps its rate; ratings still counted"
	"t_burst_seconds|burst \"2s\" = ceil(rate*2) tokens and follows the rate"
	"t_burst_tokens|burst in tokens stays fixed when the rate moves; bad bursts 400"
	"t_put_invalid|PUT rate outside [r_min,r_max] 400; unknown field 400 naming it; nothing changed"
	"t_policy_keeps_level|PUT changes and ratings keep a drained bucket drained"
	"t_put_null_resets|PUT with null fields returns them to the defaults"
	"t_dedup_batch|the same id twice in one batch: applied once, counted as duplicate"
	"t_dedup_across|the same id across requests (JSON and NDJSON): applied once"
	"t_concurrent_ratings|10 concurrent clients: every rating applied once (ids shared by two clients too)"
	"t_batch_atomic_new|a batch with bad items: 400 naming each index; no agent created"
	"t_batch_atomic_existing|a batch with a bad item leaves an existing agent unchanged"
	"t_tutorial_bucket|tutorial: POST /bucket/{id} 201 capacity 5; GET /bucket/{id} tokens ~3"
	"t_tutorial_rate|tutorial: POST /rate 200 with score until the bucket is empty, then 429"
	"t_stream_websocket|GET /v1/stream: WebSocket handshake 101 with the right Sec-WebSocket-Accept"
	"t_upgrade_header|a request with WebSocket upgrade headers on /v1/agents/{a} gets an HTTP response"
	"t_audit_log|audit.log records create, update, delete, drain, reset, rule add/delete"
	"t_api_stop|SIGTERM: the API daemon exits 0, no sanitizer report"
	"t_owner_cli_through_daemon|while agentgated runs, every CLI write goes through it: a pin stays under ratings, the API and refill_rate show the enforced rate at once, drain/reset/rules/config/del visible in the API, audited as local:root"
	"t_owner_cli_refused_values|through the daemon: a rate outside the bounds widens them (as without a daemon); unknown agents exit 1 naming them, a bad value exit 2 before the daemon is asked; nothing changed"
	"t_owner_deleted_stays|an agent deleted by an operator (CLI or API) stays deleted: ratings for it (JSON, batch, NDJSON, /rate) 404 naming who deleted it, a stream's line dead-lettered, also after a restart; created again by an operator, rated as before"
	"t_owner_handover|SIGTERM removes the record and control socket; what the CLI then changes (set, pin, unpin, del, rule del) the next daemon takes from the maps, audited; after kill -9 the stale record counts for nothing"
	"t_owner_races|a daemon waits for a CLI write's shared lock; a CLI facing an owner that lets go writes after it; owned by a silent process for over 10 s: exit 1, nothing written; a second daemon on the pin root: exit 1 naming the first"
	"t_ingest_start|--stdin (FIFO) and --ingest-socket: daemon ready"
	"t_ingest_stdin|--stdin NDJSON: valid lines applied, invalid ones dead-lettered with line and reason"
	"t_ingest_socket|--ingest-socket: summary line applied/duplicates/invalid/rejected; dead letters"
	"t_ingest_stop|SIGTERM with an ingest client still connected: exit 0, client gets its summary, socket removed"
	"t_ingest_rejected|--auto-create no: unknown agent rejected (socket summary, dead letter, HTTP 404)"
	"t_dead_letter_cap|--dead-letter-max 64k, 100 invalid 1 MB lines: two files under 64 KiB, inputs cut to 4096 bytes and marked, the newest kept; dead_letters_total and dropped_total count them"
	"t_slots_full|--max-agents 4: a 5th agent is 507; a batch needing a missing slot creates nothing; agents_refused_total counts them"
	"t_dedup_max|--dedup-max 3: ids beyond the last three are forgotten and apply again"
	"t_store_full|--store-size 1MiB filled by rating ids: 507, batches all or nothing, restart keeps the rest"
	"t_crash_restart|kill -9, restart: acknowledged ratings, rules, dedup ids kept; drained bucket not refilled"
	"t_sigterm_restart|SIGTERM, restart: drained bucket not refilled; agent and rule made with the CLI adopted"
	"t_reboot_restore|pins removed (reboot): agents, rates and rules restored from LMDB into the maps"
	"t_store_damaged_start|damaged store (cut to half, a page short, 8 KiB, 100 B, 0 B; 64 KiB noise mid-file, at the end, first page; LMDB version 999; not LMDB; a directory; removed, also with lock.mdb or its marker): exit 3 naming data.mdb, nothing written, no maps; noise past the last page starts"
	"t_store_fresh_start|data.mdb, lock.mdb and data.mdb.init moved away: a deliberate fresh start, marker written"
	"t_store_damaged_running|store cut short under the daemon: 500 naming data.mdb, /readyz 503, store_damaged 1 and errors counted, logged, nothing written, restart exits 3; cut to 0 (SIGBUS from the map): the same, still running"
	"t_metrics_promtool|GET /metrics passes promtool check metrics; the contract's families and counts"
	"t_metrics_other|--metrics-max-agents 2 with 5 agents: 2 own labels plus agent=\"_other\" sums"
	"t_auth_refuse_start|non-loopback --listen without --auth-key-file: exit 2; short or missing key: exit 2; IPv6 refused where CivetWeb lacks it"
	"t_auth_start|auth on 0.0.0.0 with a 40-byte key: /healthz and /readyz need no token"
	"t_auth_401|missing, malformed, alg none, expired, no exp, wrong key, HS512, tampered, nbf: 401"
	"t_auth_403|a valid token without the route's scope: 403"
	"t_auth_scopes_ok|scope string and scopes array grant their routes"
	"t_auth_audit_subject|audit.log subject is the token's sub"
	"t_auth_key_rotation|SIGHUP re-reads the key file: old tokens 401, new ones 200"
	"t_auth_reload_keeps_auth|SIGHUP dropping the key of a non-loopback listener is refused; auth stays on"
	"t_auth_stop|SIGTERM: the auth daemon exits 0, no sanitizer report"
	"t_explain_start|explain: a daemon with an auth key (real JWT subjects)"
	"t_explain_api|GET /v1/agents/{a}/explain: ratings that moved the rate in order (duplicate ids and ratings while pinned left out), operator changes with subjects and what changed, pinned_by, live values; 404, 401, 403, 405; an agent named explain"
	"t_explain_ring|explain keeps the last 16 of 20 ratings applied in two batches, rates as the policy computes them; deleted with its agent, a new one of that name starts afresh"
	"t_explain_offline|daemon stopped: agentgate --json --state-dir DIR agent explain reads the same history read-only (data.mdb unchanged, no file created); /etc, an empty or missing dir, a store cut in half, data.mdb gone: exit 1 naming it"
	"t_explain_restart|restarted: the history is kept; unpinned, the next rating moves the rate and shows; the CLI beside the daemon gets its answer"
	"t_body_limit|--max-body 1000: 413 with Content-Length and chunked; at the limit 200"
	"t_expect_continue|Expect: 100-continue: 100 Continue before the body on every body route, then the answer; none for HTTP/1.0; other expectations 417"
	"t_abuse_start|daemon with --request-timeout 1s"
	"t_slow_headers|10 clients trickling headers: each cut off (400 JSON, closed) within the timeout; the API answers meanwhile"
	"t_slow_body|a body trickling a byte at a time: 408 JSON, closed, within the timeout; nothing created"
	"t_header_limits|63 header fields served; 64: 431; over 16 KiB of headers: refused in JSON and closed"
	"t_json_depth|JSON nested 32 deep accepted, 33 refused naming the limit; 500000 deep: 400 (batch, NDJSON line, PUT)"
	"t_unknown_fields|unknown body fields on every body route and unknown query parameters: 400 naming them"
	"t_framing_shapes|every request framing ambiguity (CL+TE, CL lists and signs, TE other than chunked, whitespace before a colon, bare CR/LF, obs-fold, control bytes, request-line anomalies, bad chunks): 400, closed, the request hidden behind it not run"
	"t_framing_buffer_end|a request head filling CivetWeb's 16 KiB buffer: 431; brought to its last byte by leading spaces: judged right (bare LF 400, CRLF 200) with no read outside the buffer"
	"t_framing_stream|the WebSocket handshake with a duplicate Host or whitespace before a colon: 400, closed"
	"t_names_path|%00, %2F, dot segments, bytes outside the name alphabet in the agent segment of every route: 400 naming the problem, no other agent touched"
	"t_names_bodies|\".\" and \"..\" refused in ratings (JSON, NDJSON), rules, /rate, ?after= and the CLI; \"...\" is a name"
	"t_abuse_stop|SIGTERM after the hostile clients: exit 0, no sanitizer report"
	"t_agents_scale|10^6 agents: first and deep pages right, 32 concurrent listings leave the peak memory within 64 MiB, a rating meanwhile acknowledged"
	"t_config_bad_file|bad config file value or key: exit 2 naming file:line"
	"t_config_file|config file rate = 50 applies to new agents; --alpha on the command line wins"
	"t_config_sighup|SIGHUP reloads rate = 70 and burst = 2s (flag still wins); a bad reload keeps the settings"
	"t_config_reload_clamp|SIGHUP with a lower r-max clamps inheriting agents (maps too), kept over a restart"
	"t_xdp_attached_after_sigterm|netns + veth: NIC and API share the bucket; SIGTERM leaves XDP attached and enforcing"
	"t_xdp_restart|restarted with --attach: takes the attachment over, state intact; a reused slot starts clean"
	"t_tls|--tls-cert/--tls-key: HTTPS with the certificate, no plaintext on the port"
	"t_valgrind|plain agentgated under valgrind: start with --attach (load, attach, privilege drop), PUT, 2060 ratings, /metrics, stream clients, SIGTERM: exit 0, no errors"
	"t_flags_bounds|out-of-bounds values (minimum, maximum, zero, fleet-mode floor, config file) and threads plus stream clients: exit 2 naming option, value and bound; --help shows the bounds"
	"t_flags_reload|SIGHUP changing restart-only store-size and threads logs 'takes effect on restart' for each, reloadable max-body and rate apply at once; an out-of-bounds value fails the reload naming it"
)

tap_run "${TESTS[@]}"
