#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# lab.sh: test "edge hosts" on one machine, for the demo, the end-to-end
# tests and the benchmarks.
#
# An edge host NAME is two network namespaces joined by a veth pair:
#
#   agl-NAME  (the edge host)                   agl-NAME-w  (its wire)
#     eth0  10.200.K.1/24  fd00:200:K::1/64 ◄──── wire0  10.200.K.2/24  fd00:200:K::2/64
#     lo, default routes via the wire             traffic generators send from here
#     bpffs at /run/agentgate-lab/NAME/bpf (pins: .../bpf/agentgate)
#     state dir /run/agentgate-lab/NAME/state
#
# The wire side is a namespace of its own so nothing the edge host answers
# (ICMP errors, replies to generated sources) can leave the lab: the wire
# namespace has no other interface and forwards nothing. The bpffs lives under
# /run because `ip netns exec` remounts /sys. GRO is switched on for eth0 so a
# veth peer accepts XDP frames even when no XDP program is attached there.
#
# Usage: lab/lab.sh COMMAND [ARGS]
#   up NAME [INDEX]   create edge host NAME (INDEX 1..250 picks the /24; default: first free)
#   down NAME         stop its processes, unmount its bpffs, delete both namespaces
#   down-all          every edge host this script created
#   env NAME          print shell variables describing NAME (eval "$(lab.sh env NAME)")
#   exec NAME CMD...  run CMD inside the edge host
#   wire NAME CMD...  run CMD on the wire side
#   list              the edge hosts that exist
#
# Environment: AG_LAB_ROOT (default /run/agentgate-lab); AG_LAB_QUEUES=N gives
# both veth ends N queues (default 1), so frames sent on CPU c arrive in
# eth0's queue c mod N and its XDP program runs on every CPU at once.
#
# Exit codes: 0 done, 1 failed (a failed `up` removes what it made), 2 usage,
# 77 this machine cannot host a lab (not root, no netns, no bpffs).
set -u

LAB_ROOT=${AG_LAB_ROOT:-/run/agentgate-lab}
LAB_QUEUES=${AG_LAB_QUEUES:-1}
PROG=${0##*/}

die() {
	echo "$PROG: $*" >&2
	exit 1
}

usage() {
	sed -n '/^# Usage:/,/^# Exit codes/p' "$0" | sed 's/^# \{0,1\}//' | sed '$d' >&2
	exit 2
}

valid_name() {
	[[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,9}$ ]]
}

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "$PROG: needs root (network namespaces, bpffs, XDP)" >&2
		exit 77
	fi
	command -v ip >/dev/null 2>&1 || { echo "$PROG: iproute2 'ip' not found" >&2; exit 77; }
}

host_dir() { echo "$LAB_ROOT/$1"; }

# The /24 index recorded for NAME.
index_of() {
	cat "$(host_dir "$1")/index" 2>/dev/null
}

first_free_index() {
	local i used
	used=$(cat "$LAB_ROOT"/*/index 2>/dev/null)
	for i in $(seq 1 250); do
		grep -qx "$i" <<<"$used" || { echo "$i"; return 0; }
	done
	return 1
}

print_env() {
	local name=$1 k dir
	k=$(index_of "$name") || die "no edge host '$name' (lab/lab.sh up $name)"
	dir=$(host_dir "$name")
	cat <<EOF
LAB_NAME=$name
LAB_NS=agl-$name
LAB_WIRE_NS=agl-$name-w
LAB_IF=eth0
LAB_WIRE_IF=wire0
LAB_MAC=$(printf '02:a9:00:00:%02x:01' "$k")
LAB_WIRE_MAC=$(printf '02:a9:00:00:%02x:02' "$k")
LAB_ADDR4=10.200.$k.1
LAB_WIRE_ADDR4=10.200.$k.2
LAB_ADDR6=fd00:200:$k::1
LAB_WIRE_ADDR6=fd00:200:$k::2
LAB_DIR=$dir
LAB_BPFFS=$dir/bpf
LAB_PIN=$dir/bpf/agentgate
LAB_STATE=$dir/state
EOF
}

# Stop every process in the namespaces NS...: TERM, then KILL after 3 s.
stop_processes() {
	local ns pids left
	for ns in "$@"; do
		pids=$(ip netns pids "$ns" 2>/dev/null)
		# shellcheck disable=SC2086
		[ -n "$pids" ] && kill $pids 2>/dev/null
	done
	for _ in $(seq 1 30); do
		left=""
		for ns in "$@"; do
			left="$left$(ip netns pids "$ns" 2>/dev/null)"
		done
		[ -z "$left" ] && return 0
		sleep 0.1
	done
	for ns in "$@"; do
		pids=$(ip netns pids "$ns" 2>/dev/null)
		# shellcheck disable=SC2086
		[ -n "$pids" ] && kill -9 $pids 2>/dev/null
	done
	return 0
}

# Remove whatever exists of NAME; never fails. Processes go first, so none
# sees its interfaces vanish under it.
teardown() {
	local name=$1 dir
	dir=$(host_dir "$name")
	stop_processes "agl-$name" "agl-$name-w"
	ip netns del "agl-$name" 2>/dev/null
	ip netns del "agl-$name-w" 2>/dev/null
	if mountpoint -q "$dir/bpf" 2>/dev/null; then
		umount "$dir/bpf" 2>/dev/null || umount -l "$dir/bpf" 2>/dev/null
	fi
	rm -rf "$dir"
	rmdir "$LAB_ROOT" 2>/dev/null
	return 0
}

setup() {
	local name=$1 dir edge wire
	dir=$(host_dir "$name")
	edge=agl-$name
	wire=agl-$name-w
	eval "$(print_env "$name")"

	mkdir -p "$LAB_BPFFS" "$LAB_STATE" &&
		chmod 0700 "$dir" &&
		mount -t bpf bpf "$LAB_BPFFS" || { echo "$PROG: cannot mount a bpffs at $LAB_BPFFS" >&2; return 77; }
	ip netns add "$edge" || return 77
	ip netns add "$wire" || return 1
	ip link add "$LAB_IF" netns "$edge" address "$LAB_MAC" \
		numtxqueues "$LAB_QUEUES" numrxqueues "$LAB_QUEUES" type veth \
		peer name "$LAB_WIRE_IF" netns "$wire" address "$LAB_WIRE_MAC" \
		numtxqueues "$LAB_QUEUES" numrxqueues "$LAB_QUEUES" || return 1
	ip -n "$edge" link set lo up &&
		ip -n "$wire" link set lo up || return 1
	# No duplicate address detection: addresses are usable at once.
	ip -n "$edge" addr add "$LAB_ADDR4/24" dev "$LAB_IF" &&
		ip -n "$edge" addr add "$LAB_ADDR6/64" dev "$LAB_IF" nodad &&
		ip -n "$wire" addr add "$LAB_WIRE_ADDR4/24" dev "$LAB_WIRE_IF" &&
		ip -n "$wire" addr add "$LAB_WIRE_ADDR6/64" dev "$LAB_WIRE_IF" nodad || return 1
	ip -n "$edge" link set "$LAB_IF" up &&
		ip -n "$wire" link set "$LAB_WIRE_IF" up || return 1
	# Generated sources come from anywhere: route them back over the wire so
	# reverse-path filtering accepts them and replies stay inside the lab.
	ip -n "$edge" route add default via "$LAB_WIRE_ADDR4" &&
		ip -n "$edge" -6 route add default via "$LAB_WIRE_ADDR6" || return 1
	ip netns exec "$edge" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.eth0.rp_filter=0
	# The edge host knows the wire's MAC (generated frames need no ARP).
	ip -n "$edge" neigh replace "$LAB_WIRE_ADDR4" lladdr "$LAB_WIRE_MAC" dev "$LAB_IF" nud permanent
	ip -n "$edge" neigh replace "$LAB_WIRE_ADDR6" lladdr "$LAB_WIRE_MAC" dev "$LAB_IF" nud permanent
	if command -v ethtool >/dev/null 2>&1; then
		ip netns exec "$edge" ethtool -K "$LAB_IF" gro on >/dev/null 2>&1
	fi
	return 0
}

cmd_up() {
	local name=${1:-} k=${2:-} rc
	[ -n "$name" ] || usage
	valid_name "$name" || die "'$name': use 1-10 characters of [A-Za-z0-9_-]"
	[[ $LAB_QUEUES =~ ^[1-9][0-9]{0,2}$ ]] || die "AG_LAB_QUEUES '$LAB_QUEUES': use 1..999"
	need_root
	[ -e "$(host_dir "$name")" ] && die "edge host '$name' exists (lab/lab.sh down $name)"
	if [ -n "$k" ]; then
		[[ $k =~ ^[0-9]+$ ]] && [ "$k" -ge 1 ] && [ "$k" -le 250 ] || die "INDEX '$k': use 1..250"
		grep -qx "$k" <(cat "$LAB_ROOT"/*/index 2>/dev/null) && die "INDEX $k is in use"
	else
		k=$(first_free_index) || die "all 250 indexes are in use"
	fi
	mkdir -p "$(host_dir "$name")" && echo "$k" >"$(host_dir "$name")/index" || die "cannot write $LAB_ROOT"
	setup "$name"
	rc=$?
	if [ "$rc" -ne 0 ]; then
		teardown "$name"
		[ "$rc" -eq 77 ] && exit 77
		die "cannot create edge host '$name'"
	fi
	print_env "$name"
}

cmd_down() {
	local name=${1:-}
	[ -n "$name" ] || usage
	valid_name "$name" || die "'$name': not an edge host name"
	need_root
	teardown "$name"
}

cmd_down_all() {
	local d
	need_root
	for d in "$LAB_ROOT"/*/; do
		[ -d "$d" ] || continue
		d=${d%/}
		teardown "${d##*/}"
	done
}

cmd_exec() {
	local name=${1:-} side=$2
	[ -n "$name" ] && [ $# -ge 3 ] || usage
	shift 2
	index_of "$name" >/dev/null || die "no edge host '$name'"
	if [ "$side" = wire ]; then
		exec ip netns exec "agl-$name-w" "$@"
	fi
	exec ip netns exec "agl-$name" "$@"
}

cmd_list() {
	local d
	for d in "$LAB_ROOT"/*/; do
		[ -f "$d/index" ] || continue
		d=${d%/}
		echo "${d##*/} 10.200.$(cat "$d/index").0/24"
	done
}

case ${1:-} in
up) shift; cmd_up "$@" ;;
down) shift; cmd_down "$@" ;;
down-all) cmd_down_all ;;
env) [ -n "${2:-}" ] || usage; print_env "$2" ;;
exec) name=${2:-}; shift 2 2>/dev/null; cmd_exec "$name" edge "$@" ;;
wire) name=${2:-}; shift 2 2>/dev/null; cmd_exec "$name" wire "$@" ;;
list) cmd_list ;;
-h | --help | help) usage ;;
*) usage ;;
esac
