#!/bin/sh
# Install the Debian packages agentgate's build, tests and benchmarks need.
# Idempotent: only missing packages are installed. Needs root for apt-get.
# nftables, iptables and redis-server are the peers make bench compares
# against; the benchmarks start and stop their own instances.
set -eu

# libclang-rt-dev: libFuzzer (-fsanitize=fuzzer) for tests/fuzz; libssl-dev:
# the daemon's token signatures and the JWT harness's reference check;
# libjwt-dev: the HTTP fuzzer mints its tokens with it; python3-jwt and
# python3-cryptography: tokens made by an independent library in the tests;
# python3-lmdb: a test makes a state store of an older layout with it;
# libcurl4-openssl-dev: agentgated reads rule feeds over http(s) with it;
# xdp-tools: xdp-filter, another XDP program on the device beside agentgate.
PACKAGES="
	make gcc clang llvm pkg-config libclang-rt-dev
	libbpf-dev bpftool libelf-dev zlib1g-dev linux-libc-dev
	libcmocka-dev libjansson-dev liblmdb-dev libjwt-dev libssl-dev libnats-dev nats-server
	libcurl4-openssl-dev
	prometheus wrk valgrind curl openssl faketime
	xdp-tools iproute2 iputils-ping python3 python3-jwt python3-cryptography python3-lmdb util-linux ethtool systemd
	nftables iptables redis-server redis-tools linux-perf
"

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done

if [ -z "$missing" ]; then
	echo "deps: all packages present"
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing packages:$missing" >&2
	echo "deps: run as root (sudo scripts/deps.sh) to install them" >&2
	exit 1
fi

echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
