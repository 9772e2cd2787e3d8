#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""udpsink.py OUT_JSON ADDR:PORT...: count UDP datagrams per listening
address and per source until SIGTERM. OUT_JSON is rewritten (atomically)
every 0.2 s and at exit: {"ADDR:PORT": {"total": n, "sources": {src: n}}}.
IPv6 addresses are written [ADDR]:PORT. Run it where the datagrams arrive
(inside the edge host's namespace)."""
import json
import os
import select
import signal
import socket
import sys
import time

stop = False


def on_term(signum, frame):
    global stop
    stop = True


def open_socket(spec):
    host, port = spec.rsplit(":", 1)
    if host.startswith("["):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        host = host[1:-1]
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    s.bind((host, int(port)))
    s.setblocking(False)
    return s


def dump(path, counts):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(counts, f)
    os.replace(tmp, path)


def main():
    out = sys.argv[1]
    socks = {open_socket(spec): spec for spec in sys.argv[2:]}
    counts = {spec: {"total": 0, "sources": {}} for spec in socks.values()}
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    dump(out, counts)
    last = time.monotonic()
    while not stop:
        ready, _, _ = select.select(list(socks), [], [], 0.1)
        for s in ready:
            c = counts[socks[s]]
            while True:
                try:
                    _, addr = s.recvfrom(2048)
                except BlockingIOError:
                    break
                c["total"] += 1
                c["sources"][addr[0]] = c["sources"].get(addr[0], 0) + 1
        if time.monotonic() - last >= 0.2:
            dump(out, counts)
            last = time.monotonic()
    dump(out, counts)


if __name__ == "__main__":
    main()
