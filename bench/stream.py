#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""bench/stream.py BUILD_DIR [--subscribers 1000] [--rates 100,500] [--seconds 5] [--json F]

Fan-out of /v1/stream: N WebSocket subscribers of rating.global on one
agentgated (the optimized build, on loopback, its own bpffs and state
dir), ratings posted over HTTP at a fixed rate in batches of 10. Each
subscriber's socket is read by one event loop (selectors); a message is
matched to its rating by id, so latency = arrival - the time the POST that
carried it was sent (it includes the rating's commit). Reported per rating
rate: updates delivered per second (all subscribers), the share of the
updates expected that arrived, latency p50/p99. Baseline in the same run:
the same rating rate with 1 subscriber; ratio = p99(N) / p99(1).
Everything it starts is stopped and removed on exit (tests/lib/agtest: its
scratch directory, bpffs and processes).
"""
import argparse
import json
import os
import resource
import selectors
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "lib"))
from agtest.daemon import daemon_argv  # noqa: E402
from agtest.env import Env  # noqa: E402
from agtest.proc import stop_proc  # noqa: E402
from agtest.util import SkipAll  # noqa: E402
from agtest.ws import WS  # noqa: E402


def post(port, body):
    req = urllib.request.Request("http://127.0.0.1:%d/v1/ratings" % port,
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def frames(buf):
    """Complete unmasked server frames in buf (a bytearray, consumed):
    [payloads]."""
    out, off = [], 0
    while len(buf) - off >= 2:
        n, h = buf[off + 1] & 0x7F, 2
        if n == 126:
            if len(buf) - off < 4:
                break
            n, h = int.from_bytes(buf[off + 2:off + 4], "big"), 4
        elif n == 127:
            if len(buf) - off < 10:
                break
            n, h = int.from_bytes(buf[off + 2:off + 10], "big"), 10
        if len(buf) - off < h + n:
            break
        if buf[off] & 0x0F == 0x1:
            out.append(bytes(buf[off + h:off + h + n]))
        off += h + n
    del buf[:off]
    return out


def cpu_seconds(pid):
    """User + system CPU time of a process, from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(port, n_subs, rate, seconds, tag, daemon_pid):
    subs = []
    for _ in range(n_subs):
        c = WS.connect("127.0.0.1", port, "/v1/stream?topics=rating.global", timeout=10)
        if c.status != 101:
            raise SystemExit("subscriber refused: %d %s" % (c.status, c.body))
        subs.append(c)
    # Drain the welcome and subscribed replies.
    for c in subs:
        c.recv_json(5)
        c.recv_json(5)
    sel = selectors.DefaultSelector()
    bufs = {}
    for c in subs:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
        bufs[c.sock] = bytearray(c.buf)
    sent_at, lat, got = {}, [], [0]
    done = threading.Event()

    def poster():
        batch, k = 10, 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            ids = ["%s-%d" % (tag, k + i) for i in range(batch)]
            now = time.monotonic()
            for i in ids:
                sent_at[i] = now
            post(port, [{"id": i, "agent": "bench", "score": 3} for i in ids])
            k += batch
            wait = t0 + k / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        done.set()

    th = threading.Thread(target=poster)
    t_start = time.monotonic()
    d_cpu0, me0 = cpu_seconds(daemon_pid), time.process_time()
    th.start()
    quiet_until = None
    while True:
        for key, _ in sel.select(0.2):
            s = key.fileobj
            try:
                chunk = s.recv(1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                sel.unregister(s)
                continue
            b = bufs[s]
            b += chunk
            msgs = frames(b)
            now = time.monotonic()
            for m in msgs:
                i = m.find(b'"id":"')
                if i < 0:
                    continue
                rid = m[i + 6:m.index(b'"', i + 6)].decode()
                t = sent_at.get(rid)
                if t is not None:
                    lat.append(now - t)
                    got[0] += 1
        if done.is_set():
            quiet_until = quiet_until or time.monotonic() + 3
            if got[0] >= len(sent_at) * n_subs or time.monotonic() > quiet_until:
                break
    elapsed = time.monotonic() - t_start
    d_cpu, me = cpu_seconds(daemon_pid) - d_cpu0, time.process_time() - me0
    th.join()
    for c in subs:
        sel.unregister(c.sock) if c.sock in sel.get_map() else None
        c.sock.close()
    lat.sort()
    expected = len(sent_at) * n_subs
    pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3) if lat else (lambda q: 0)
    return {"subscribers": n_subs, "ratings_per_s": rate, "ratings": len(sent_at),
            "delivered": got[0], "delivered_share": round(got[0] / expected, 4) if expected else 0,
            "updates_per_s": round(got[0] / elapsed), "p50_ms": round(pick(0.50), 2),
            "p99_ms": round(pick(0.99), 2), "seconds": round(elapsed, 2),
            "daemon_cpu_s": round(d_cpu, 2), "client_cpu_s": round(me, 2),
            "daemon_cpu_us_per_update": round(1e6 * d_cpu / got[0], 2) if got[0] else None}


def bench(env, a):
    """The daemon started, the runs of every rate: their results."""
    port = env.port()
    n = a.subscribers + 10
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * n + 1024)), hard))
    d = env.popen(daemon_argv(env.bin("agentgated"), env.pin_root("ag"), env.path("state"),
                              "127.0.0.1:%d" % port,
                              extra=["--stream-max-clients", str(n), "--stream-max-per-ip",
                                     str(n), "--quiet"]), env.path("log"))
    results = []
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        post(port, {"agent": "bench", "score": 3})
        for rate in [float(x) for x in a.rates.split(",")]:
            base = run(port, 1, rate, a.seconds, "b%g" % rate, d.pid)
            full = run(port, a.subscribers, rate, a.seconds, "f%g" % rate, d.pid)
            full["p99_vs_1_subscriber"] = round(full["p99_ms"] / base["p99_ms"], 2) \
                if base["p99_ms"] else None
            results += [base, full]
            for r in (base, full):
                print("subscribers %5d  ratings/s %5g  updates/s %8d  delivered %6.2f %%  "
                      "p50 %7.2f ms  p99 %7.2f ms  cpu s daemon %.2f client %.2f%s" % (
                          r["subscribers"], r["ratings_per_s"], r["updates_per_s"],
                          100 * r["delivered_share"], r["p50_ms"], r["p99_ms"],
                          r["daemon_cpu_s"], r["client_cpu_s"],
                          ("  p99 x%.2f of 1 subscriber" % r["p99_vs_1_subscriber"])
                          if r.get("p99_vs_1_subscriber") else ""))
                sys.stdout.flush()
    finally:
        stop_proc(d, timeout=30)
    return results


def main():
    p = argparse.ArgumentParser()
    p.add_argument("build")
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--rates", default="100,500")
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--json")
    a = p.parse_args()
    try:
        env = Env(a.build, needs=("agentgated",))
    except SkipAll as e:
        print("bench/stream.py: %s" % e, file=sys.stderr)
        return 77
    try:
        results = bench(env, a)
    finally:
        env.cleanup()
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "nproc": os.cpu_count(),
                       "kernel": os.uname().release, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
