# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# shellcheck shell=bash
#
# TAP helpers shared by the shell suites (tests/*/test_*.sh): source it.
#
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
# function matches; the others are reported as skipped.

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
	local entry fn desc n=0 failed=0 rc t0 reason_var
	echo "1..$#"
	SECONDS=0
	for entry in "$@"; do
		fn=${entry%%|*}
		desc=${entry#*|}
		n=$((n + 1))
		if [ -n "${AG_TEST_ONLY:-}" ] && ! [[ "$fn" =~ $AG_TEST_ONLY ]]; then
			echo "ok $n - $desc # SKIP not in AG_TEST_ONLY"
			continue
		fi
		SKIP_REASON=""
		t0=$SECONDS
		if [ -n "${TAP_SUBSHELL:-}" ]; then
			("$fn") &
			TEST_PID=$!
			wait "$TEST_PID"
			rc=$?
			TEST_PID=""
		else
			"$fn"
			rc=$?
		fi
		if declare -F tap_case_check >/dev/null; then
			tap_case_check "$rc"
			rc=$?
		fi
		if [ "$rc" -eq 0 ]; then
			echo "ok $n - $desc"
		elif [ "$rc" -eq 77 ]; then
			reason_var=SKIP_REASON_$fn
			echo "ok $n - $desc # SKIP ${SKIP_REASON:-${!reason_var:-skipped}}"
		else
			echo "not ok $n - $desc"
			failed=$((failed + 1))
		fi
		[ $((SECONDS - t0)) -ge 10 ] && diag "$fn took $((SECONDS - t0)) s"
	done
	diag "$failed of $n failed, ${SECONDS} s"
	[ "$failed" -eq 0 ]
}
