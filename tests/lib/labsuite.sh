# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# shellcheck shell=bash
#
# What the shell suites on a lab/lab.sh edge host share (tests/e2e; the
# Python suites have tests/lib/agtest/lab.py): source it after setting HERE
# (the suite's directory); it sources tap.sh and sets ROOT and LAB.
#
#   lab_suite_checks ARG REASON BIN...  BUILD from the suite's argument,
#                         skip (77) without root, ip or python3 (PY), bail
#                         out when a BIN under BUILD is missing; CLI
#   lab_suite_up NAME     lab/lab.sh up NAME (skip when the machine
#                         cannot host a lab), its LAB_* variables set;
#                         needs TMP
#   fail TEXT             the text as a diagnostic; status 1
#   in_host, in_wire CMD  CMD in the edge host, on its wire side
#   TG_ENGINE             the traffic generator's --engine for the suites'
#                         traffic: AG_TEST_ENGINE, default auto (live frames
#                         where the kernel allows them, else AF_PACKET); the
#                         cases about the engines run each one explicitly
#   cli ARGS...           the CLI (JSON) in the host on the lab's pins: OUT, RC
#   api METHOD PATH [BODY]  HTTP to API_URL (default http://127.0.0.1:9470)
#                         in the host; BODY may be @FILE: CODE, BODY

# skip_all, tap_build_dir, json_check, jget, diag, running, tap_run
# shellcheck source=tap.sh
. "$HERE/../lib/tap.sh"

ROOT=$(cd "$HERE/../.." && pwd)
LAB=$ROOT/lab/lab.sh
TG_ENGINE=${AG_TEST_ENGINE:-auto}
case $TG_ENGINE in auto | live | packet) ;; *) echo "Bail out! AG_TEST_ENGINE '$TG_ENGINE': use auto, live or packet"; exit 1 ;; esac

lab_suite_checks() {
	local b
	BUILD=$(tap_build_dir "$1") || exit 2
	[ "$(id -u)" -eq 0 ] || skip_all "$2"
	shift 2
	command -v ip >/dev/null 2>&1 || skip_all "iproute2 'ip' not found"
	PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || skip_all "python3 not found"
	for b in "$@"; do
		[ -e "$BUILD/$b" ] || { echo "Bail out! $BUILD/$b not built (make all)"; exit 1; }
	done
	CLI=$BUILD/agentgate
}

lab_suite_up() {
	local rc
	"$LAB" up "$1" >"$TMP/lab.env"
	rc=$?
	[ "$rc" -eq 77 ] && skip_all "this machine cannot host a lab (lab/lab.sh up: 77)"
	[ "$rc" -eq 0 ] || { echo "Bail out! lab/lab.sh up $1 failed"; exit 1; }
	eval "$(cat "$TMP/lab.env")"
}

fail() {
	diag "$*"
	return 1
}

# (Backgrounded, a function is a subshell: $! would not be the process.
# Background jobs call ip netns exec directly.)
in_host() { ip netns exec "$LAB_NS" "$@"; }
in_wire() { ip netns exec "$LAB_WIRE_NS" "$@"; }

cli() {
	OUT=$(in_host "$CLI" -j --pin-path "$LAB_PIN" "$@" 2>&1)
	RC=$?
}

api() {
	local out
	out=$(in_host curl -sS -m 10 -X "$1" "${API_URL:-http://127.0.0.1:9470}$2" \
		${3:+--data-binary "$3"} -w '\n%{http_code}' 2>&1)
	CODE=${out##*$'\n'}
	BODY=${out%$'\n'*}
}
