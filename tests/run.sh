#!/bin/bash
# Run every test program, count TAP results, end with "N passed, N failed, N skipped".
# Usage: tests/run.sh BUILD_DIR
#
# Mounts a private bpffs for the pins the tests create and removes it on exit,
# also when a test crashes. Exit code: 0 when nothing failed.
set -u

build=${1:-build}
passed=0 failed=0 skipped=0

bpffs=""
cleanup() {
	if [ -n "$bpffs" ]; then
		umount "$bpffs" 2>/dev/null
		rmdir "$bpffs" 2>/dev/null
	fi
}
trap cleanup EXIT INT TERM

if [ "$(id -u)" -eq 0 ]; then
	bpffs=$(mktemp -d /run/agentgate-test.XXXXXX)
	if ! mount -t bpf bpf "$bpffs"; then
		echo "tests: cannot mount a bpffs at $bpffs" >&2
		rmdir "$bpffs"
		bpffs=""
	fi
fi
export AG_TEST_BPFFS=${bpffs:-/nonexistent}
export CMOCKA_MESSAGE_OUTPUT=TAP
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_one() {
	local bin=$1 name out rc p f s
	shift
	name=$(basename "$bin")
	echo "=== $name"
	out=$(mktemp)
	"$bin" "$@" >"$out" 2>&1
	rc=$?
	cat "$out"
	p=$(grep -cE '^ok [0-9]+' "$out" | tr -d ' ')
	s=$(grep -cE '^ok [0-9]+.*# (SKIP|skip)' "$out" | tr -d ' ')
	f=$(grep -cE '^not ok [0-9]+' "$out" | tr -d ' ')
	p=$((p - s))
	if [ "$rc" -eq 77 ] && [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
		s=$((s + 1))
		echo "--- $name: skipped"
	elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		# Crashed or failed outside any test case (setup, sanitizer at exit).
		f=1
		echo "--- $name: exit code $rc"
	fi
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
	rm -f "$out"
}

for t in test_gcra test_policy test_rating test_fleet test_hist test_voices test_intake test_feed test_server test_dedup test_lib \
	test_xdp test_path test_attach test_wire test_concurrency; do
	if [ -x "$build/tests/$t" ]; then
		run_one "$build/tests/$t"
	else
		echo "=== $t: not built" >&2
		failed=$((failed + 1))
	fi
done
# Shell suites take the build directory; the fuzz corpora replay first.
for t in tests/fuzz/replay.sh tests/cli/test_cli.sh tests/daemon/test_daemon.py \
	tests/stream/test_stream.py tests/fleet/test_fleet.py tests/faults/test_faults.py \
	tests/e2e/test_e2e.sh; do
	run_one "$t" "$build"
done

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
