#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Median tables over the rounds of bench/front.sh.

Usage: aggregate.py RESULTS_DIR [NAME...]

RESULTS_DIR holds r1/, r2/, ... with one NAME/summary.json per server, as
bench/front/run.sh writes them; the servers are listed in the order given
(the others found after them, sorted). Prints markdown tables:
  a) consume: checks/s, latency p50/p99, the server's CPU per request and
     cores, rounds per cell with the client's and everything else's cores
     (medians over the rounds that have the cell; min-max in brackets)
  b) slow and idle clients: the frontload probe (medians, each round's
     value in brackets) and the server's memory with the idle connections
  c) smuggling shapes: what each server answered, and how the connection
     ended
Standard library only.
"""
import glob
import json
import os
import statistics
import sys


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=0):
    return "-" if x is None else ("{:,.%df}" % nd).format(x)


def span(xs, nd=0):
    xs = [x for x in xs if x is not None]
    return " (%s–%s)" % (fmt(min(xs), nd), fmt(max(xs), nd)) if len(xs) > 1 else ""


def load(root):
    """{name: [summary of each round]}"""
    runs = {}
    for f in sorted(glob.glob(os.path.join(root, "r*", "*", "summary.json"))):
        with open(f) as fh:
            s = json.load(fh)
        runs.setdefault(s["name"], []).append(s)
    return runs


def table(names, conns, cell):
    print("| server | " + " | ".join("%d conn" % c for c in conns) + " |")
    print("|---|" + "---:|" * len(conns))
    for n in names:
        print("| %s | %s |" % (n, " | ".join(cell(n, c) for c in conns)))
    print()


def consume_tables(runs, names):
    conns = sorted({int(c) for n in names for r in runs[n] for c in r["consume"]})
    if not conns:
        return

    def vals(n, c, key):
        return [r["consume"].get(str(c), {}).get(key) for r in runs[n]]

    print("### a) Keep-alive requests (consume; medians over the rounds that have the cell, "
          "min–max in brackets)\n")
    print("checks/s:\n")
    table(names, conns, lambda n, c: fmt(med(vals(n, c, "checks_per_s"))) +
          span(vals(n, c, "checks_per_s")))
    print("latency p50 / p99 (µs):\n")
    table(names, conns, lambda n, c: "%s / %s" % (fmt(med(vals(n, c, "p50_us"))),
                                                   fmt(med(vals(n, c, "p99_us")))))
    print("server CPU µs per request (utime+stime, all threads) and server cores busy:\n")
    table(names, conns, lambda n, c: "%s µs, %s cores" % (
        fmt(med(vals(n, c, "server_cpu_us_per_req")), 1), fmt(med(vals(n, c, "server_cores")), 2)))

    def rounds(n, c):
        cells = [r["consume"][str(c)] for r in runs[n] if str(c) in r["consume"]]
        ok = [x for x in cells if x.get("checks_per_s") is not None]
        cell = "n=%d" % len(ok)
        if ok:
            cell += ", client %s, other %s" % (fmt(med([x.get("client_cores") for x in ok]), 2),
                                               fmt(med([x.get("other_cores") for x in ok]), 2))
        if len(cells) > len(ok):
            cell += ", %d failed" % (len(cells) - len(ok))
        return cell
    print("rounds per cell (n) and the cores the client and everything else used meanwhile "
          "(medians; 'other' includes loopback softirq and other processes):\n")
    table(names, conns, rounds)
    errs = {}
    for n in names:
        for c in conns:
            for e in vals(n, c, "error"):
                if e:
                    errs[(n, c, e)] = errs.get((n, c, e), 0) + 1
    if errs:
        print("consume failures:\n")
        for (n, c, e), k in errs.items():
            print("- %s at %d connections, %d×: %s" % (n, c, k, e))
        print()


def frontload_tables(runs, names):
    rows = []
    for n in names:
        for m in ("trickle", "idle"):
            fl = [r["frontload"][m] for r in runs[n] if r.get("frontload", {}).get(m)]
            if not fl:
                continue

            def col(k, nd=3):
                xs = [f.get(k) for f in fl]
                return "%s [%s]" % (fmt(med(xs), nd), ", ".join(fmt(x, nd) for x in xs))
            rows.append("| %s | %s %d | %s | %s | %s | %s | %s / %s |" % (
                n, m, fl[0]["clients"], col("connected", 0), col("first_s"), col("p50_s"),
                col("max_s"), col("failed", 0), fmt(med([f.get("probes") for f in fl]))))
    if rows:
        print("### b) Slow and idle clients (frontload's probe GET /healthz on a new connection; "
              "medians of the rounds, each round's value in brackets)\n")
        print("| server | mode | connected | first_s | p50_s | max_s | failed / probes |")
        print("|---|---|---:|---:|---:|---:|---:|")
        print("\n".join(rows) + "\n")
    samples = {n: [r["idle_sample"] for r in runs[n] if r.get("idle_sample")] for n in names}
    if any(samples.values()):
        print("server memory with the idle connections (sampled half-way):\n")
        print("| server | RSS MiB | threads | established (server side) |")
        print("|---|---:|---:|---:|")
        for n in names:
            s = samples[n]
            if s:
                print("| %s | %s | %s | %s |" % (
                    n, fmt(med([x["rss_kib"] / 1024 for x in s]), 1),
                    fmt(med([x["threads"] for x in s])),
                    fmt(med([x["established_server_side"] for x in s]))))
        print()


def smuggle_table(runs, names):
    shapes = []
    for n in names:
        for r in runs[n]:
            for x in r.get("smuggle", []):
                if x["shape"] not in shapes:
                    shapes.append(x["shape"])
    if not shapes:
        return
    print("### c) Smuggling shapes, each followed by GET /healthz on the same connection "
          "(STATUS:handler = the consume handler answered, :healthz = the appended request "
          "was; then how the connection ended)\n")
    print("| shape | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for sh in shapes:
        cells = []
        for n in names:
            seen = []
            for r in runs[n]:
                for x in r.get("smuggle", []):
                    if x["shape"] == sh:
                        v = "%s → %s" % (", ".join(x["responses"]) or "(nothing)", x["end"])
                        if v not in seen:
                            seen.append(v)
            cells.append(" / ".join(seen) + (" (rounds differ)" if len(seen) > 1 else "")
                         or "-")
        print("| %s | %s |" % (sh, " | ".join(cells)))
    print()


def main():
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    runs = load(sys.argv[1])
    if not runs:
        sys.exit("aggregate.py: no r*/NAME/summary.json under %s" % sys.argv[1])
    order = sys.argv[2:]
    names = [n for n in order if n in runs] + sorted(n for n in runs if n not in order)
    consume_tables(runs, names)
    frontload_tables(runs, names)
    smuggle_table(runs, names)


if __name__ == "__main__":
    main()
