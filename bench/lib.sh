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
