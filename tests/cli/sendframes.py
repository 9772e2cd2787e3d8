#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Send raw Ethernet/IPv4 frames out of one end of a veth pair, so that they
arrive on the other end, where agentgate's XDP program runs.

Usage: sendframes.py OUT_IF COUNT SRC [options]
  --dst ADDR        destination IPv4 address (default 192.0.2.99)
  --dport P         UDP destination port (default 9)
  --size N          frame length in bytes, padded (default 100)
  --kind K          udp (default) or bad-ihl (IPv4 with IHL 4: a parse error)
  --peer-if IF      read the destination MAC from IF (default: broadcast)
  --every S         seconds between frames (default 0: all at once)
  --duration S      keep sending COUNT frames every --every for S seconds

Run inside the test's network namespace (ip netns exec NS ...). Prints the
number of frames sent; exit 1 if any send failed.
"""
import argparse
import socket
import struct
import sys
import time


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(dst_mac, src_mac, src, dst, dport, size, kind):
    payload_len = max(0, size - 14 - 20 - 8)
    udp = struct.pack("!HHHH", 40000, dport, 8 + payload_len, 0) + b"\0" * payload_len
    ver_ihl = 0x45 if kind == "udp" else 0x44
    ip = struct.pack("!BBHHHBBH4s4s", ver_ihl, 0, 20 + len(udp), 0, 0, 64,
                     socket.IPPROTO_UDP, 0, socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    eth = dst_mac + src_mac + struct.pack("!H", 0x0800)
    return eth + ip + udp


def mac_of(ifname):
    with open("/sys/class/net/%s/address" % ifname) as f:
        return bytes(int(x, 16) for x in f.read().strip().split(":"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out_if")
    p.add_argument("count", type=int)
    p.add_argument("src")
    p.add_argument("--dst", default="192.0.2.99")
    p.add_argument("--dport", type=int, default=9)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--kind", choices=("udp", "bad-ihl"), default="udp")
    p.add_argument("--peer-if")
    p.add_argument("--every", type=float, default=0)
    p.add_argument("--duration", type=float, default=0)
    a = p.parse_args()

    dst_mac = mac_of(a.peer_if) if a.peer_if else b"\xff" * 6
    src_mac = mac_of(a.out_if)
    f = frame(dst_mac, src_mac, a.src, a.dst, a.dport, a.size, a.kind)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.out_if, 0))
    sent = failed = 0
    end = time.monotonic() + a.duration
    while True:
        for _ in range(a.count):
            try:
                if s.send(f) == len(f):
                    sent += 1
                else:
                    failed += 1
            except OSError:
                failed += 1
        if time.monotonic() >= end:
            break
        time.sleep(a.every)
    print(sent)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
