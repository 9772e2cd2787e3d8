#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The demo's live table: one block a second with, per agent, its mean
rating, refill rate, admitted and dropped packets per second, and the
unclassified traffic; a summary when it stops (SIGTERM, SIGINT or --duration).

Usage: demo_table.py --cli BUILD/agentgate --pin PIN --api URL --agents a,b,c
                     [--phase-file F] [--summary-json F] [--last N]

Rates come from `agentgate -j top` (the maps, counted in the kernel); mean
ratings and rules from agentgated's API; unclassified packets from
`agentgate -j stats`. Runs where the maps and the API are (inside the edge
host's namespace). The summary compares each agent's admitted packets per
second over the last N intervals (default 5) with its refill rate.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

stop = False


def on_signal(signum, frame):
    global stop
    stop = True


def api_agent(api, name):
    try:
        with urllib.request.urlopen("%s/v1/agents/%s" % (api, name), timeout=2) as r:
            return json.load(r)
    except Exception:
        return None


def unclassified(cli, pin):
    out = subprocess.run([cli, "-j", "--pin-path", pin, "stats"], capture_output=True, text=True)
    try:
        s = json.loads(out.stdout)
        return s["unclassified_passed"], s["unclassified_dropped"]
    except (ValueError, KeyError):
        return None


def rule_text(agent):
    if not agent or not agent.get("rules"):
        return "-"
    r = agent["rules"][0]
    return r["prefix"] + (" port %d" % r["port"] if r.get("port") else "")


def fmt(x, width, prec=0):
    if x is None:
        return "-".rjust(width)
    return ("%.*f" % (prec, x)).rjust(width)


HEADER = "%4s  %-8s  %-9s %-24s %6s %8s %9s %11s %10s" % (
    "t", "phase", "agent", "rule", "mean*", "ratings", "refill/s", "admitted/s", "dropped/s")


def print_block(t, phase, rows, uncl, redraw, lines_before):
    out = []
    for i, r in enumerate(rows):
        out.append("%4s  %-8s  %-9s %-24s %6s %8s %9s %11s %10s" % (
            ("%d" % t) if i == 0 else "", phase if i == 0 else "", r["name"], r["rule"],
            fmt(r["mean"], 6, 2) if r["ratings"] else "-".rjust(6),
            fmt(r["ratings"], 8), fmt(r["rate"], 9), fmt(r["passed_pps"], 11),
            fmt(r["dropped_pps"], 10)))
    if uncl is not None:
        out.append("%4s  %-8s  %-9s %-24s %6s %8s %9s %11s %10s" % (
            "", "", "(other)", "unclassified: untouched", "-", "-", "-",
            fmt(uncl[0], 11), fmt(uncl[1], 10)))
    if redraw and lines_before:
        sys.stdout.write("\x1b[%dA\x1b[J" % lines_before)
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()
    return len(out)


def summarize(history, agents, last, uncl_hist):
    """Per agent: first and last refill rate, ratings, mean, admitted pps over
    the last `last` intervals, its deviation from the final rate and whether
    it tracks the rate: within 5 %, or within one packet at each edge of the
    window (2/N packets/s over N one-second intervals), which is what counting
    whole packets can resolve at rates of a few packets per second."""
    res = {"agents": [], "intervals": len(history), "last": last}
    tail = history[-last:] if history else []
    for name in agents:
        seen = [h[name] for h in history if name in h]
        if not seen:
            res["agents"].append({"agent": name, "missing": True})
            continue
        t = [h[name] for h in tail if name in h]
        adm = sum(x["passed_pps"] for x in t) / len(t)
        drop = sum(x["dropped_pps"] for x in t) / len(t)
        rate = seen[-1]["rate"]
        res["agents"].append({
            "agent": name, "rule": seen[-1]["rule"], "rate_start": seen[0]["rate"],
            "rate_end": rate, "ratings": seen[-1]["ratings"], "mean_score": seen[-1]["mean"],
            "admitted_pps": round(adm, 1), "dropped_pps": round(drop, 1),
            "deviation": round((adm - rate) / rate, 4) if rate else None,
            "tracking": abs(adm - rate) <= max(0.05 * rate, 2.0 / len(t))})
    ut = [u for u in uncl_hist[-last:] if u is not None]
    if ut:
        res["unclassified"] = {"passed_pps": round(sum(u[0] for u in ut) / len(ut), 1),
                               "dropped_pps": round(sum(u[1] for u in ut) / len(ut), 1)}
    return res


def print_summary(s, last):
    print()
    print("Summary: admitted packets/s over the last %d s against the refill rate" % last)
    print("  %-9s %8s %6s %21s %11s %9s" % ("agent", "ratings", "mean*", "refill/s start -> end",
                                            "admitted/s", "tracking"))
    for a in s["agents"]:
        if a.get("missing"):
            print("  %-9s (no data)" % a["agent"])
            continue
        dev = "%+.1f %%" % (100 * a["deviation"]) if a["deviation"] is not None else "-"
        if not a["tracking"]:
            dev += " (off)"
        print("  %-9s %8d %6s %10.0f -> %8.0f %11.0f %9s" % (
            a["agent"], a["ratings"], "%.2f" % a["mean_score"] if a["ratings"] else "-",
            a["rate_start"], a["rate_end"], a["admitted_pps"], dev))
    u = s.get("unclassified")
    if u:
        print("  unclassified traffic: %.0f packets/s passed, %.0f dropped" %
              (u["passed_pps"], u["dropped_pps"]))
    sys.stdout.flush()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cli", required=True)
    p.add_argument("--pin", required=True)
    p.add_argument("--api", default="http://127.0.0.1:9470")
    p.add_argument("--agents", required=True)
    p.add_argument("--phase-file")
    p.add_argument("--summary-json")
    p.add_argument("--last", type=int, default=5)
    p.add_argument("--duration", type=float, default=0)
    a = p.parse_args()
    agents = a.agents.split(",")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    top = subprocess.Popen([a.cli, "-j", "--pin-path", a.pin, "top", "--interval", "1",
                            "--sort", "name"], stdout=subprocess.PIPE, text=True, bufsize=1)
    redraw = sys.stdout.isatty()
    start = time.monotonic()
    history, uncl_hist = [], []
    prev_uncl, prev_t = unclassified(a.cli, a.pin), time.monotonic()
    lines = 0
    print(HEADER)
    try:
        while not stop:
            line = top.stdout.readline()
            if not line:
                break
            frame = json.loads(line)
            now = time.monotonic()
            cur = unclassified(a.cli, a.pin)
            uncl = None
            if cur and prev_uncl and now > prev_t:
                uncl = ((cur[0] - prev_uncl[0]) / (now - prev_t),
                        (cur[1] - prev_uncl[1]) / (now - prev_t))
            prev_uncl, prev_t = cur, now
            by_name = {x["name"]: x for x in frame["agents"]}
            rows, snap = [], {}
            for name in agents:
                x = by_name.get(name)
                info = api_agent(a.api, name)
                if x is None:
                    continue
                row = {"name": name, "rule": rule_text(info), "rate": x["rate"],
                       "passed_pps": x["passed_pps"], "dropped_pps": x["dropped_pps"],
                       "mean": info["mean_score"] if info else None,
                       "ratings": info["ratings"] if info else 0}
                rows.append(row)
                snap[name] = row
            history.append(snap)
            uncl_hist.append(uncl)
            phase = ""
            if a.phase_file:
                try:
                    with open(a.phase_file) as f:
                        phase = f.read().strip()
                except OSError:
                    pass
            lines = print_block(now - start, phase, rows, uncl, redraw, lines)
            if a.duration and now - start >= a.duration:
                break
    finally:
        top.terminate()
        top.wait()
    s = summarize(history, agents, a.last, uncl_hist)
    print_summary(s, a.last)
    if a.summary_json:
        with open(a.summary_json, "w") as f:
            json.dump(s, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
