# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
# Shared by the benchmark scripts (sourced; PROG is the script's name).
# Exit codes of every benchmark: 2 usage or not built, 3 environment,
# 4 a run failed.

# The script's "# Usage:" header block, up to its [--seconds line.
usage() {
	sed -n '/^# Usage:/,/^#  *\[--seconds/p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# die MESSAGE [EXIT_CODE] (default 4)
die() { echo "$PROG: $1" >&2; exit "${2:-4}"; }

# Every argument a positive integer, or a usage error naming it.
need_positive_ints() {
	local v
	for v in "$@"; do
		[[ $v =~ ^[1-9][0-9]*$ ]] || die "'$v': a positive integer is needed" 2
	done
}

# need_built BUILD_DIR NAME...: each $BUILD_DIR/NAME exists.
need_built() {
	local dir=$1 b
	shift
	for b in "$@"; do
		[ -e "$dir/$b" ] || die "$dir/$b is not built (make bench-bins all)" 2
	done
}

# need_root WHY
need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root ($1)" 3; }

# lab_up NAME: an edge host from lab/lab.sh (LAB, work set by the caller;
# AG_LAB_QUEUES from the environment), its LAB_* variables set, lab_up=1 for
# the caller's cleanup; exit 3 when it cannot be made.
lab_up() {
	"$LAB" up "$1" >"$work/env" 2>"$work/lab.err" ||
		{ cat "$work/lab.err" >&2; die "lab/lab.sh up $1 failed" 3; }
	lab_up=1
	eval "$(cat "$work/env")"
}

# threaded_napi CPU: eth0 of the edge host polls in a kernel thread of its
# own, pinned to CPU; its pid in napi (to read its CPU time).
threaded_napi() {
	local before
	napi_threads() { ps -eo pid=,comm= | awk '$2 ~ /^napi\/eth0-/ {print $1}' | sort; }
	before=$(napi_threads)
	ip netns exec "$LAB_NS" sh -c 'echo 1 > /sys/class/net/eth0/threaded' ||
		die "cannot switch eth0 to threaded NAPI" 3
	napi=$(comm -13 <(echo "$before") <(napi_threads))
	[ "$(echo "$napi" | wc -w)" -eq 1 ] || die "cannot find eth0's NAPI thread (found '$napi')" 3
	taskset -pc "$1" "$napi" >/dev/null || die "cannot pin the NAPI thread to CPU $1" 3
}
