#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The demo's verdict, from what it measured: the table's summary (each
agent's admitted packets/s over the last seconds against its refill rate,
the unclassified traffic) and the traffic generator's report.

Usage: demo_verdict.py SUMMARY.json TRAFFICGEN.json UNCLASSIFIED_PPS

Prints one line per agent that is off (which agent, by how much), then a
last line saying what was measured. Exit 0 when every agent tracks its
refill rate (demo_table.py's rule: within 5 %, or within a packet per window
edge at a few packets a second) and the unclassified flow passed at its
sent rate within 5 % with nothing dropped; 1 otherwise.
"""
import json
import sys


def verdict(summary, gen, uncl_pps):
    bad, ok = [], []
    if gen.get("sent", 0) == 0:
        bad.append("the generator (%s engine) sent nothing" % gen.get("engine", "?"))
    for a in summary.get("agents", []):
        if a.get("missing"):
            bad.append("%s: never measured" % a["agent"])
            continue
        dev = a.get("deviation")
        what = "%s %.1f/s admitted at refill %.0f/s (%s)" % (
            a["agent"], a["admitted_pps"], a["rate_end"],
            "%+.1f %%" % (100 * dev) if dev is not None else "rate 0")
        (ok if a["tracking"] else bad).append(what)
    if not summary.get("agents"):
        bad.append("no agent measured")
    u = summary.get("unclassified")
    if not u:
        bad.append("unclassified traffic never measured")
    elif u["dropped_pps"] > 0 or abs(u["passed_pps"] - uncl_pps) > 0.05 * uncl_pps:
        bad.append("unclassified traffic %.0f/s passed and %.0f/s dropped, sent at %.0f/s"
                   % (u["passed_pps"], u["dropped_pps"], uncl_pps))
    window = "over the last %s s (%s engine)" % (summary.get("last", "?"), gen.get("engine", "?"))
    if bad:
        lines = ["demo: off: " + b for b in bad]
        lines.append("demo: FAILED: measured %s: %s" % (window, "; ".join(bad)))
        return 1, lines
    return 0, ["Measured %s: %s: each within 5 %% of its refill rate; unclassified %.0f/s "
               "passed, none dropped" % (window, ", ".join(ok), u["passed_pps"])]


def main():
    if len(sys.argv) != 4:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        with open(sys.argv[1]) as f:
            summary = json.load(f)
        with open(sys.argv[2]) as f:
            gen = json.load(f)
        uncl = float(sys.argv[3])
    except (OSError, ValueError) as e:
        print("demo: FAILED: cannot read what was measured: %s" % e)
        return 1
    rc, lines = verdict(summary, gen, uncl)
    print("\n".join(lines))
    return rc


if __name__ == "__main__":
    sys.exit(main())
