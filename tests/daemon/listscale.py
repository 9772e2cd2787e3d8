#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Listing agents at scale, for tests/daemon (standard library only).

Usage: listscale.py HOST PORT PID N
  Creates agents ls-0000000 .. ls-<N-1> through NDJSON ratings (batches of
  100 000, the most one request may carry), then:
  - times the first page and a page deep in the list (limit 1000, the
    median of 5 of each) and checks their names and "next";
  - resets the daemon's peak resident memory (/proc/PID/clear_refs "5",
    root only), sends 32 concurrent GET /v1/agents?limit=1 deep in the list
    and one rating while they run, and reads the peak again.
Prints one JSON object: {"fill_s", "first_page_s", "deep_page_s",
"pages_ok": [what failed], "concurrent_ok": how many of the 32 got 200,
"concurrent_s", "rating_status", "rating_s", "hwm_before_kb",
"hwm_after_kb"} (hwm_* null when clear_refs cannot be written).
Timings are reported, not judged: the caller asserts on memory and content.
"""
import http.client
import json
import sys
import threading
import time

BATCH = 100000
CONCURRENT = 32


def name(i):
    return "ls-%07d" % i


def request(port, method, path, body=None, ctype="application/json"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        c.request(method, path, body=body, headers={"Content-Type": ctype})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def fill(port, n):
    for start in range(0, n, BATCH):
        lines = "".join('{"agent":"%s","score":4}\n' % name(i)
                        for i in range(start, min(n, start + BATCH)))
        status, body = request(port, "POST", "/v1/ratings", lines.encode(),
                               "application/x-ndjson")
        if status != 200:
            sys.exit("fill: POST /v1/ratings at %d: %d %s" % (start, status, body[:300]))


def page(port, query):
    t = time.monotonic()
    status, body = request(port, "GET", "/v1/agents?" + query)
    dt = time.monotonic() - t
    return dt, status, json.loads(body) if status == 200 else body


def timed_page(port, query, want_first, want_next, bad):
    times = []
    for _ in range(5):
        dt, status, d = page(port, query)
        times.append(dt)
        if status != 200:
            bad.append("%s: status %d" % (query, status))
            break
        names = [a["agent"] for a in d["agents"]]
        if len(names) != 1000 or names[0] != want_first or d["next"] != want_next:
            bad.append("%s: %d agents from %s, next %s" % (query, len(names),
                                                           names[:1], d["next"]))
            break
    return sorted(times)[len(times) // 2]


def hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def reset_hwm(pid):
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    port, pid, n = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    out = {}
    t = time.monotonic()
    fill(port, n)
    out["fill_s"] = round(time.monotonic() - t, 2)
    bad = []
    deep = n - 2000
    out["first_page_s"] = round(timed_page(port, "limit=1000", name(0), name(999), bad), 4)
    out["deep_page_s"] = round(timed_page(port, "limit=1000&after=" + name(deep - 1), name(deep),
                                          name(deep + 999), bad), 4)
    _, status, d = page(port, "limit=1000&after=" + name(n - 1001))
    if status != 200 or len(d["agents"]) != 1000 or d["next"] is not None:
        bad.append("last page: %s" % (status if status != 200 else d["next"]))
    out["pages_ok"] = bad

    measured = reset_hwm(pid)
    out["hwm_before_kb"] = hwm_kb(pid) if measured else None
    results = []

    def one():
        results.append(page(port, "limit=1&after=" + name(n // 2))[1])

    threads = [threading.Thread(target=one) for _ in range(CONCURRENT)]
    t = time.monotonic()
    for th in threads:
        th.start()
    rt = time.monotonic()
    status, _ = request(port, "POST", "/v1/ratings", b'{"agent":"%s","score":5}' % name(1).encode())
    out["rating_s"] = round(time.monotonic() - rt, 4)
    out["rating_status"] = status
    for th in threads:
        th.join()
    out["concurrent_s"] = round(time.monotonic() - t, 3)
    out["concurrent_ok"] = results.count(200)
    out["hwm_after_kb"] = hwm_kb(pid) if measured else None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
