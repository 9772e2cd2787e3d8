# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# shellcheck shell=bash
#
# TAP helpers shared by the shell suites (tests/*/test_*.sh): source it.
#
#   skip_all REASON       the whole suite skipped: an empty plan, exit 77
#   tap_build_dir ARG     print the absolute build directory the suite was
#                         given; usage or error on stderr and status 2
#                         (BUILD=$(tap_build_dir "${1:-}") || exit 2)
#   tap_traps FUNC        run FUNC on exit; INT and TERM exit (130, 143)
#                         through it
#   tap_remove_tmp DIR    remove the suite's scratch DIR, or keep it and say
#                         so when AG_TEST_KEEP is set (logs, state dirs)
#   json_check JSON EXPR...  every Python expression over d (the parsed
#                         JSON) holds (tests/lib/jcheck.py); reports each
#                         failing one, the JSON and $CMD when set
#   jget JSON EXPR        print a Python expression over d
#   diag TEXT             each line of TEXT as a TAP comment
#   running PID           the process exists and is not a zombie
#   tap_run ENTRY...      run cases given as "function|description": prints
#                         the plan and one ok/not ok line each, ends with a
#                         diagnostic summary; returns 0 when none failed.
#
# A case returns 0 (pass), 77 (skip: the reason in SKIP_REASON, or in
# SKIP_REASON_<function> for cases run in a subshell) or anything else
# (fail). TAP_SUBSHELL=1 runs each case in a subshell of its own, waited for
# with `wait` so a signal interrupts at once (TEST_PID holds its pid).
# If the suite defines tap_case_check, it is called after each case with the
# case's status and returns the status to report (e.g. a sanitizer report
# turns a pass into a failure). AG_TEST_ONLY=REGEX runs only the cases whose
# function matches; the others are reported as skipped. Its own variables
# start with _tap_, so cases may use any other names without `local`.

skip_all() {
	echo "1..0 # SKIP $*"
	exit 77
}

tap_build_dir() {
	if [ -z "$1" ]; then
		echo "usage: $0 BUILD_DIR" >&2
		return 2
	fi
	(cd "$1" 2>/dev/null && pwd) || { echo "$0: no directory $1" >&2; return 2; }
}

tap_traps() {
	# shellcheck disable=SC2064
	trap "$1" EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

tap_remove_tmp() {
	[ -n "$1" ] || return 0
	if [ -z "${AG_TEST_KEEP:-}" ]; then
		rm -rf "$1"
	else
		echo "# kept $1" >&2
	fi
}

# The JSON helpers need PY, the suite's python3 interpreter.
TAP_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

json_check() {
	local json=$1 out
	shift
	out=$("$PY" "$TAP_LIB_DIR/jcheck.py" "$json" "$@") && return 0
	diag "$out"
	diag "JSON: ${json:0:1500}"
	[ -n "${CMD:-}" ] && diag "from: $CMD"
	return 1
}

jget() {
	"$PY" -c 'import json, sys; d = json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"
}

diag() {
	local line
	while IFS= read -r line; do
		echo "# $line"
	done <<<"$*"
}

running() {
	local st
	[ -r "/proc/$1/stat" ] || return 1
	st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
	[ -n "$st" ] && [ "$st" != Z ]
}

tap_run() {
	local _tap_entry _tap_fn _tap_desc _tap_n=0 _tap_failed=0 _tap_rc _tap_t0 _tap_reason_var
	echo "1..$#"
	SECONDS=0
	for _tap_entry in "$@"; do
		_tap_fn=${_tap_entry%%|*}
		_tap_desc=${_tap_entry#*|}
		_tap_n=$((_tap_n + 1))
		if [ -n "${AG_TEST_ONLY:-}" ] && ! [[ "$_tap_fn" =~ $AG_TEST_ONLY ]]; then
			echo "ok $_tap_n - $_tap_desc # SKIP not in AG_TEST_ONLY"
			continue
		fi
		SKIP_REASON=""
		_tap_t0=$SECONDS
		if [ -n "${TAP_SUBSHELL:-}" ]; then
			("$_tap_fn") &
			TEST_PID=$!
			wait "$TEST_PID"
			_tap_rc=$?
			TEST_PID=""
		else
			"$_tap_fn"
			_tap_rc=$?
		fi
		if declare -F tap_case_check >/dev/null; then
			tap_case_check "$_tap_rc"
			_tap_rc=$?
		fi
		if [ "$_tap_rc" -eq 0 ]; then
			echo "ok $_tap_n - $_tap_desc"
		elif [ "$_tap_rc" -eq 77 ]; then
			_tap_reason_var=SKIP_REASON_$_tap_fn
			echo "ok $_tap_n - $_tap_desc # SKIP ${SKIP_REASON:-${!_tap_reason_var:-skipped}}"
		else
			echo "not ok $_tap_n - $_tap_desc"
			_tap_failed=$((_tap_failed + 1))
		fi
		[ $((SECONDS - _tap_t0)) -ge 10 ] && diag "$_tap_fn took $((SECONDS - _tap_t0)) s"
	done
	diag "$_tap_failed of $_tap_n failed, ${SECONDS} s"
	[ "$_tap_failed" -eq 0 ]
}
