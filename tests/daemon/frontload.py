#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""How slow and idle clients delay everyone else (docs/OPERATIONS.md,
"Slow and idle clients"); a measurement, not a test. Standard library only.

Usage: frontload.py HOST PORT MODE N SECONDS
  trickle  N clients send a request head one byte every 0.5 s and never
           finish it; each one cut off reconnects at once
  idle     N clients connect and send nothing (once, all at the start)
  keepalive  N clients send one request each, read the answer and keep
           the connection open without another request (as a client's
           connection pool does); each one closed starts over
Meanwhile a probe sends GET /healthz on a new connection every 0.25 s for
SECONDS and times it to its answer (giving up after 60 s). Prints one JSON
object: {"mode", "clients", "connected": the most connections held open at
once, "probes", "first_s": the first probe's time, "p50_s", "max_s",
"failed": probes without an answer}.
"""
import json
import resource
import socket
import sys
import threading
import time

TRICKLE_S = 0.5
PROBE_EVERY_S = 0.25
PROBE_GIVE_UP_S = 60.0


class Load:
    def __init__(self, host, port, n):
        self.host, self.port, self.n = host, port, n
        self.stop = False
        self.lock = threading.Lock()
        self.open = 0
        self.most = 0

    def count(self, d):
        with self.lock:
            self.open += d
            self.most = max(self.most, self.open)

    def trickler(self):
        while not self.stop:
            try:
                s = socket.create_connection((self.host, self.port), timeout=5)
            except OSError:
                time.sleep(0.1)
                continue
            self.count(1)
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
                s.settimeout(TRICKLE_S)
                while not self.stop:
                    try:
                        if not s.recv(4096):
                            break
                        break  # answered (cut off): reconnect
                    except socket.timeout:
                        s.sendall(b"a")
            except OSError:
                pass
            finally:
                s.close()
                self.count(-1)

    def keepalive(self):
        while not self.stop:
            try:
                s = socket.create_connection((self.host, self.port), timeout=5)
            except OSError:
                time.sleep(0.1)
                continue
            self.count(1)
            try:
                s.settimeout(PROBE_GIVE_UP_S)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                s.recv(4096)
                s.settimeout(TRICKLE_S)
                while not self.stop:
                    try:
                        if not s.recv(4096):
                            break
                    except socket.timeout:
                        pass
            except OSError:
                pass
            finally:
                s.close()
                self.count(-1)

    def idle(self, socks):
        for _ in range(self.n):
            try:
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex((self.host, self.port))
                socks.append(s)
                self.count(1)
            except OSError:
                break


def probe(host, port):
    t = time.monotonic()
    try:
        s = socket.create_connection((host, port), timeout=PROBE_GIVE_UP_S)
        s.settimeout(max(0.1, PROBE_GIVE_UP_S - (time.monotonic() - t)))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        ok = s.recv(4096).startswith(b"HTTP/1.1 200")
        s.close()
    except OSError:
        ok = False
    return time.monotonic() - t, ok


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    n, seconds = int(sys.argv[4]), float(sys.argv[5])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 256)), hard))
    load, socks, threads = Load(host, port, n), [], []
    if mode in ("trickle", "keepalive"):
        for _ in range(n):
            th = threading.Thread(target=load.trickler if mode == "trickle" else load.keepalive,
                                  daemon=True)
            th.start()
            threads.append(th)
        time.sleep(1)
    elif mode == "idle":
        load.idle(socks)
    else:
        sys.exit("unknown mode %r" % mode)
    t0 = time.monotonic()
    results = {}

    def one(i):
        results[i] = probe(host, port)

    probes = []
    while time.monotonic() - t0 < seconds:
        th = threading.Thread(target=one, args=(len(probes),), daemon=True)
        th.start()
        probes.append(th)
        time.sleep(PROBE_EVERY_S)
    for th in probes:
        th.join()
    load.stop = True
    for s in socks:
        s.close()
    results = [results[i] for i in sorted(results)]
    times = [dt for dt, ok in results if ok]
    failed = sum(1 for _, ok in results if not ok)
    times_sorted = sorted(times)
    print(json.dumps({
        "mode": mode, "clients": n, "connected": load.most, "probes": len(results),
        "first_s": round(results[0][0], 3) if results else None,
        "p50_s": round(times_sorted[len(times_sorted) // 2], 3) if times else None,
        "max_s": round(times_sorted[-1], 3) if times else None, "failed": failed}))


if __name__ == "__main__":
    main()
