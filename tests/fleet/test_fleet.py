#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""tests/fleet: agentgated's fleet mode over NATS JetStream, against real
nats-server processes (one, and a cluster of three) and several real
daemons (the sanitized build) on one machine, each with its own pin root
under $AG_TEST_BPFFS, state directory, HTTP port and --node name.

Usage: test_fleet.py BUILD_DIR   (TAP; AG_TEST_BPFFS: a bpffs for the pins,
mounted here when unset; AG_TEST_ONLY: space-separated case names to run,
the others skipped; AG_TEST_KEEP: keep the temporary directory with the
logs and stores; AG_FLEET_DAEMON=agentgated: the unsanitized daemon)

Cases (see CASES for the one-line descriptions): flags and standalone;
three hosts converging on identical rates and statistics (single ratings
with ids, arrays without, NDJSON, concurrent posts to every host) with the
stream, message ids, consumers and sequence checked in JetStream itself;
one rating id at several hosts applied once; kill -9 of a host under
ratings and catch-up without re-applying; operator changes (policy, pin,
rules, delete, the tutorial's /bucket) replicated, reset/drain/consume
local, a fourth host started later with an empty state dir getting
everything; invalid stream messages dead-lettered with their reason and
sequence, the hosts going on; agent names that are odd as NATS subjects;
promtool on a fleet daemon's /metrics; NATS down (202 queued, 503 for
operator changes, /readyz degraded, a durable outbox across kill -9) and
back (everything applied exactly once); a 3-node NATS cluster losing its
stream leader under ratings; the demand split with real traffic at two
edge hosts of lab/lab.sh; every daemon exiting 0 on SIGTERM without
a sanitizer report.

No timing is a pass/fail criterion except generous convergence deadlines.
Everything started here (nats-server, daemons, traffic generators, lab
hosts, pins, the temporary directory) is removed on exit, also on failure,
SIGINT and SIGTERM.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

sys.dont_write_bytecode = True    # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import fleetlib as fl  # noqa: E402
from fleetlib import Fail, check, diag, wait_for, Daemon, NatsServer, NatsCluster  # noqa: E402
from natsclient import Nats, NatsError  # noqa: E402

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
# AG_FLEET_DAEMON: another daemon binary of BUILD_DIR (default the sanitized one).
DAEMON = os.path.join(BUILD, os.environ.get("AG_FLEET_DAEMON", "agentgated-san"))
CLI = os.path.join(BUILD, "agentgate")
TRAFFICGEN = os.path.join(BUILD, "ag-trafficgen")
# The generator's engine (auto, live or packet): AG_TEST_ENGINE, as for the shell suites.
TG_ENGINE = os.environ.get("AG_TEST_ENGINE", "auto")
LAB = os.path.join(ROOT, "lab", "lab.sh")
TMP = None
BPFFS = os.environ.get("AG_TEST_BPFFS", "")
OWN_BPFFS = None

STREAM = "AGENTGATE"
KV_STREAM = "KV_agentgate-demand"
CONVERGE = 30          # seconds: generous convergence deadline
# Exit codes of daemons stopped with SIGTERM along the way (checked at the end).
STOPPED = {}
ALL_DAEMONS = []
# Phase 1: one nats-server, hosts a, b, c.
P1 = {"nats": None, "hosts": {}}


def sh(cmd, timeout=60, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def new_daemon(node, nats, extra=(), **kw):
    d = Daemon(DAEMON, TMP, BPFFS, node, nats, extra, **kw)
    ALL_DAEMONS.append(d)
    return d


def stop_daemon(d):
    if d.proc is not None and d.proc.poll() is None:
        STOPPED[d.node + "@" + str(d.proc.pid)] = d.stop()


def post(d, body, ctype="application/json", want=200):
    st, text, _ = d.http("POST", "/v1/ratings", body, ctype)
    check(st == want, "%s POST /v1/ratings %s: %d %s" % (d.node, str(body)[:200], st, text))
    return json.loads(text)


def cli(pin, *args):
    r = sh([CLI, "-j", "--pin-path", pin] + list(args))
    check(r.returncode == 0, "agentgate %s: %d %s %s" % (" ".join(args), r.returncode, r.stdout,
                                                          r.stderr))
    return json.loads(r.stdout)


def nats_client(server):
    return Nats.connect("127.0.0.1", server.port)


def subject_of(agent):
    """The subject agentgated publishes an agent's ratings on (docs/FLEET.md):
    '.' written %2E, an agent named dlq as %64lq."""
    if agent == "dlq":
        return "agentgate.ratings.%64lq"
    return "agentgate.ratings." + agent.replace(".", "%2E")


def agent_listed(d, name):
    """An agent found through GET /v1/agents: a name ending in '.' or made of
    dots cannot be a URL path segment (the HTTP server normalizes it)."""
    after = ""
    while True:
        st, body, _ = d.http("GET", "/v1/agents?limit=500" +
                             ("&after=" + urllib.parse.quote(after) if after else ""))
        page = json.loads(body)
        for o in page.get("agents", []):
            if o.get("agent") == name:
                return o
        if not page.get("next"):
            return None
        after = page["next"]


def snapshot(d, agents, fields=("rate", "ratings", "mean_score", "last_rating_ms")):
    out = {}
    for a in agents:
        o = agent_listed(d, a) if a.endswith(".") or set(a) == {"."} else d.agent(a)
        out[a] = None if o is None else tuple(o.get(f) for f in fields)
    return out


def converge(hosts, agents, expect=None, timeout=CONVERGE,
             fields=("rate", "ratings", "mean_score", "last_rating_ms"), server=None):
    """Waits until every host shows the same fields for every agent (and, for
    agents in expect {agent: {field: value}}, those values); returns the view."""
    last = {}

    def same():
        views = {d.node: snapshot(d, agents, fields) for d in hosts}
        last.clear()
        last.update(views)
        first = views[hosts[0].node]
        if any(v != first for v in views.values()):
            return False
        for a, want in (expect or {}).items():
            got = first[a]
            if want is None:
                if got is not None:
                    return False
                continue
            if got is None:
                return False
            for f, v in want.items():
                g = got[fields.index(f)]
                if isinstance(v, float) and isinstance(g, (int, float)) and \
                        not isinstance(g, bool):
                    # The API prints doubles with 15 significant digits.
                    if abs(g - v) > 1e-9 * max(1.0, abs(v)):
                        return False
                elif g != v:
                    return False
        return first

    try:
        return wait_for(same, timeout, interval=0.2, what="convergence")
    except Fail:
        diag("fields %s" % (fields,))
        for node, v in last.items():
            diag("%s: %s" % (node, json.dumps(v, sort_keys=True)))
        if expect:
            diag("expected: %s" % json.dumps(expect, sort_keys=True))
        if server is None and all(d in P1["hosts"].values() for d in hosts):
            server = P1["nats"]
        if server is not None and server.running():
            try:    # the last rating of each agent as the stream has it
                n = nats_client(server)
                for a in agents:
                    m = n.stream_msg(STREAM, last_by_subj=subject_of(a))
                    diag("stream: last rating of %s: %s" % (
                        a, m and "seq %d, time %s, %r" % (m[1], m[4], m[3][:120])))
                n.close()
            except (OSError, ValueError, NatsError) as e:
                diag("stream: %s" % e)
        raise


def expected_rate(start, scores, alpha=10.0, r_min=1.0, r_max=10000.0):
    r = start
    for s in scores:
        r = min(max(r + alpha * (s - 3), r_min), r_max)
    return r


def mean(scores):
    return sum(scores) / len(scores)


def metric_all(hosts, name, labels=None):
    return {d.node: d.metric(name, labels) for d in hosts}


# ---- phase 1: one nats-server, hosts a, b, c ---------------------------------------

def phase1():
    """Starts (or restarts what died of) the single nats-server and hosts a, b, c."""
    s = P1["nats"]
    if s is None:
        s = P1["nats"] = NatsServer(TMP, "single")
    if not s.running():
        s.start().wait_ready()
    hosts = P1["hosts"]
    for node in ("a", "b", "c"):
        d = hosts.get(node)
        if d is None:
            d = hosts[node] = new_daemon(node, [s.url], ["--nats-timeout", "1500ms"])
        if not d.alive():
            d.start()
    for d in hosts.values():
        d.wait_ready()
    return s, [hosts["a"], hosts["b"], hosts["c"]]


# ---- cases -------------------------------------------------------------------------

def t_flags():
    # Standalone (no --nats): unchanged, no fleet object.
    d = standalone()
    st, body, _ = d.http("GET", "/readyz")
    check(st == 200 and json.loads(body) == {"status": "ready"}, "standalone /readyz: %s" % body)
    check(d.http("PUT", "/v1/agents/sa", {"rate": 100})[0] == 201, "standalone PUT")
    o = d.agent("sa")
    check("fleet" not in o, "standalone agent has a fleet object: %s" % o)
    r = post(d, {"agent": "sa", "score": 5})
    check(set(r) == {"applied", "duplicates", "agents"}, "standalone answer: %s" % r)
    # Invalid --node names: exit 2 (invalid options), naming the option.
    errors = []
    for bad in ("bad name", "a.b", "x" * 33, "", "\u00e4"):
        cmd = [DAEMON, "--config", "/dev/null", "--pin-path", os.path.join(BPFFS, "flags-x"),
               "--state-dir", os.path.join(TMP, "flags-x"), "--listen", "127.0.0.1:1",
               "--nats", "nats://127.0.0.1:1", "--node", bad]
        try:
            r = sh(cmd, timeout=10)
        except subprocess.TimeoutExpired:
            errors.append("--node %r: still running after 10 s (not refused)" % bad)
            continue
        if r.returncode != 2 or "node" not in (r.stdout + r.stderr).lower():
            errors.append("--node %r: exit %d, %s" % (bad, r.returncode,
                                                      (r.stdout + r.stderr)[-300:]))
    shutil.rmtree(os.path.join(BPFFS, "flags-x"), ignore_errors=True)
    # Periods are durations with a unit like every other (TIME): a bare
    # number is refused (exit 2) naming the option.
    for opt in ("--nats-timeout", "--fleet-interval"):
        cmd = [DAEMON, "--config", "/dev/null", "--nats", "nats://127.0.0.1:1", opt, "1500"]
        r = sh(cmd, timeout=10)
        if r.returncode != 2 or opt[2:] not in r.stderr:
            errors.append("%s 1500 (no unit): exit %d, %s" % (opt, r.returncode, r.stderr[-200:]))
    # A 32-character name of every allowed class is accepted, and periods
    # with units.
    s, _ = phase1()
    name = "Aa0_-" + "z" * 27
    d = new_daemon(name, [s.url], ["--nats-timeout", "1500ms", "--fleet-interval", "1s"])
    d.start().wait_ready()
    r = post(d, {"agent": "fl-32", "score": 5})
    check(r["applied"] == 1, "rating at node %s: %s" % (name, r))
    check("fleet" in d.agent("fl-32"), "agent without a fleet object: %s" % d.agent("fl-32"))
    stop_daemon(d)
    check(not errors, "; ".join(errors))


STANDALONE = {}


def standalone():
    """One standalone daemon (no --nats), the reference for what must not change."""
    d = STANDALONE.get("d")
    if d is None or not d.alive():
        d = STANDALONE["d"] = new_daemon("standalone", [])
        d.start().wait_ready()
    return d


INVALID = [
    ("application/json", [{"agent": "iv", "score": 5}, {"agent": "iv", "score": 6}]),
    ("application/json", {"agent": "iv", "score": 3, "colour": "red"}),
    ("application/json", {"agent": "", "score": 3}),
    ("application/json", {"agent": "iv"}),
    ("application/json", b'{"agent": "iv", "score": '),
    ("application/x-ndjson", b'{"agent":"iv","score":4}\n{"agent":"i v","score":4}\n'),
]


def t_converge():
    s, hosts = phase1()
    a, b, c = hosts
    st, body, _ = a.http("GET", "/readyz")
    check(st == 200 and json.loads(body) == {"status": "ready"}, "/readyz: %d %s" % (st, body))
    # Validation exactly as standalone: same status and body, nothing published.
    ref = standalone()
    seq0 = stream_last_seq(s)
    for ctype, body in INVALID:
        want = ref.http("POST", "/v1/ratings", body, ctype)[:2]
        got = b.http("POST", "/v1/ratings", body, ctype)[:2]
        check(want[0] == 400 and got == want, "invalid %r: fleet %s, standalone %s" %
              (body, got, want))
    check(stream_last_seq(s) == seq0, "invalid ratings reached the stream")
    ts = 1700000000000
    r1 = post(a, {"id": "cv-1", "agent": "cv-alpha", "user": "u1", "score": 5, "ts": ts})
    check(r1.get("applied") == 1 and r1.get("duplicates") == 0, "cv-1 answer: %s" % r1)
    check(r1.get("agents") == [{"agent": "cv-alpha", "rate": 120.0, "mean_score": 5.0,
                                "ratings": 1}], "cv-1 agents: %s" % r1)
    check(isinstance(r1.get("sequence"), int) and r1["sequence"] > 0, "sequence: %s" % r1)
    # An array without ids at b.
    r2 = post(b, [{"agent": "cv-alpha", "score": 1}, {"agent": "cv-beta", "score": 4},
                  {"agent": "org:team.cv-gamma", "score": 2, "user": "u2"}])
    check(r2.get("applied") == 3 and r2.get("duplicates") == 0, "array answer: %s" % r2)
    check(r2["sequence"] > r1["sequence"], "sequence did not grow: %s then %s" % (r1, r2))
    # NDJSON at c, with and without ids.
    nd = "\n".join(json.dumps(x) for x in (
        {"id": "cv-2", "agent": "cv-beta", "score": 5},
        {"agent": "org:team.cv-gamma", "score": 3, "ts": ts + 5},
        {"id": "cv-3", "agent": "cv-alpha", "score": 4, "comment": "fine"},
        {"agent": "cv-beta", "score": 2})) + "\n"
    r3 = post(c, nd.encode(), ctype="application/x-ndjson")
    check(r3.get("applied") == 4 and r3["sequence"] >= r2["sequence"] + 4, "ndjson: %s" % r3)
    # Concurrent posts to every host (no clamping: start at 1000).
    st, body, _ = a.http("PUT", "/v1/agents/cv-delta", {"rate": 1000})
    check(st == 201, "PUT cv-delta: %d %s" % (st, body))
    rnd = random.Random(7)
    scores = [rnd.choice((1, 2, 3, 4, 5)) for _ in range(45)]
    errors = []

    def worker(d, part):
        try:
            for sc in part:
                post(d, {"agent": "cv-delta", "score": sc})
        except (Fail, OSError, ValueError) as e:
            errors.append("%s: %s" % (d.node, e))
    ths = [threading.Thread(target=worker, args=(d, scores[i::3])) for i, d in enumerate(hosts)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    check(not errors, "concurrent posts: %s" % errors)
    expect = {
        "cv-alpha": {"rate": expected_rate(100, [5, 1, 4]), "ratings": 3,
                     "mean_score": mean([5, 1, 4])},
        "cv-beta": {"rate": expected_rate(100, [4, 5, 2]), "ratings": 3,
                    "mean_score": mean([4, 5, 2])},
        "org:team.cv-gamma": {"rate": expected_rate(100, [2, 3]), "ratings": 2,
                              "mean_score": mean([2, 3])},
        "cv-delta": {"rate": 1000 + 10 * sum(x - 3 for x in scores), "ratings": len(scores)},
    }
    view = converge(hosts, list(expect), expect)
    diag("converged: %s" % json.dumps(view, sort_keys=True))
    # mean of cv-delta equal everywhere and right to 1e-9.
    dm = [x.agent("cv-delta")["mean_score"] for x in hosts]
    check(abs(dm[0] - mean(scores)) < 1e-9, "cv-delta mean %s, want %s" % (dm, mean(scores)))
    # The fleet object: share within [floor, 1], local_rate = rate * share.
    for d in hosts:
        o = d.agent("cv-alpha")
        f = o.get("fleet")
        check(isinstance(f, dict) and set(f) >= {"share", "local_rate"},
              "%s: no fleet object: %s" % (d.node, o))
        check(0.05 - 1e-9 <= f["share"] <= 1 + 1e-9, "%s: share %s" % (d.node, f))
        check(abs(f["local_rate"] - o["rate"] * f["share"]) <= 1e-6 * max(1, o["rate"]),
              "%s: local_rate %s != rate %s x share" % (d.node, f, o["rate"]))
        # The host's bucket refills at local_rate (as the CLI reads it from the map).
        m = cli(d.pin, "agent", "show", "cv-alpha")
        check(abs(m["rate"] - f["local_rate"]) <= 0.01 * f["local_rate"] + 0.01,
              "%s: map rate %s, local_rate %s" % (d.node, m["rate"], f["local_rate"]))
    # Every host applied up to the same stream sequence, none lagging.
    seqs = wait_for(lambda: (lambda m: len(set(m.values())) == 1 and None not in m.values()
                             and m)(metric_all(hosts, "agentgate_fleet_applied_sequence")),
                    CONVERGE, what="fleet_applied_sequence equal on all hosts")
    check(list(seqs.values())[0] >= r3["sequence"], "applied sequence %s < %d" %
          (seqs, r3["sequence"]))
    lag = wait_for(lambda: (lambda m: all(v == 0 for v in m.values()) and m)(
        metric_all(hosts, "agentgate_fleet_stream_lag")), CONVERGE, what="fleet_stream_lag 0")
    diag("applied sequence %s, lag %s" % (seqs, lag))
    # JetStream itself: the stream, the messages and their ids, the consumers.
    n = nats_client(s)
    try:
        info = n.js("STREAM.INFO." + STREAM)
        check("error" not in info, "stream %s: %s" % (STREAM, info))
        check(set(info["config"]["subjects"]) == {"agentgate.ratings.>", "agentgate.policy.>"},
              "stream subjects: %s" % info["config"]["subjects"])
        m = n.stream_msg(STREAM, seq=r1["sequence"])
        check(m and m[0] == "agentgate.ratings.cv-alpha" and m[2].get("Nats-Msg-Id") == "cv-1",
              "message %d: %r" % (r1["sequence"], m))
        m = n.stream_msg(STREAM, seq=r2["sequence"])
        mid = m[2].get("Nats-Msg-Id", "") if m else ""
        check(m and m[0] == subject_of("org:team.cv-gamma") and mid.startswith("b-") and
              len(mid) > 2 and all(ch in "0123456789abcdefABCDEF" for ch in mid[2:]),
              "message %d (b's generated id): %r" % (r2["sequence"], m))
        for node in ("a", "b", "c"):
            ci = n.js("CONSUMER.INFO.%s.agentgate-%s" % (STREAM, node))
            check("error" not in ci and ci["config"].get("durable_name") == "agentgate-" + node,
                  "consumer agentgate-%s: %s" % (node, ci))
        kv = n.js("STREAM.INFO." + KV_STREAM)
        check("error" not in kv, "KV bucket agentgate-demand: %s" % kv)
    finally:
        n.close()


def t_dedup():
    s, hosts = phase1()
    a, b, c = hosts
    r = post(a, {"id": "dup-1", "agent": "dd-one", "score": 5})
    check(r["applied"] == 1 and r["duplicates"] == 0, "first dup-1: %s" % r)
    r = post(b, {"id": "dup-1", "agent": "dd-one", "score": 5})
    check(r["applied"] == 0 and r["duplicates"] == 1, "dup-1 again at b: %s" % r)
    r = post(c, {"id": "dup-1", "agent": "dd-one", "score": 1})
    check(r["applied"] == 0 and r["duplicates"] == 1, "dup-1 (other score) at c: %s" % r)
    r = post(c, [{"id": "dup-1", "agent": "dd-one", "score": 5},
                 {"id": "dup-3", "agent": "dd-one", "score": 5}])
    check(r["applied"] == 1 and r["duplicates"] == 1, "batch with one duplicate: %s" % r)
    # The same new id at all three hosts at once.
    answers, errors = [], []
    barrier = threading.Barrier(3)

    def one(d):
        try:
            barrier.wait(10)
            answers.append(post(d, {"id": "dup-2", "agent": "dd-two", "score": 5}))
        except (Fail, OSError, ValueError, threading.BrokenBarrierError) as e:
            errors.append("%s: %s" % (d.node, e))
    ths = [threading.Thread(target=one, args=(d,)) for d in hosts]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    check(not errors, "concurrent dup-2: %s" % errors)
    check(sum(x["applied"] for x in answers) == 1 and sum(x["duplicates"] for x in answers) == 2,
          "dup-2 at three hosts at once: %s" % answers)
    converge(hosts, ["dd-one", "dd-two"], {
        "dd-one": {"rate": 140.0, "ratings": 2, "mean_score": 5.0},
        "dd-two": {"rate": 120.0, "ratings": 1, "mean_score": 5.0}})
    # Nothing arrives later.
    time.sleep(1.5)
    converge(hosts, ["dd-one", "dd-two"], {"dd-one": {"ratings": 2}, "dd-two": {"ratings": 1}},
             timeout=1)


def t_kill9():
    s, hosts = phase1()
    a, b, c = hosts
    for ag in ("k-one", "k-two"):
        st, body, _ = a.http("PUT", "/v1/agents/" + ag, {"rate": 2000})
        check(st == 201, "PUT %s: %d %s" % (ag, st, body))
    post(c, {"id": "k-pre", "agent": "k-one", "score": 5})
    converge(hosts, ["k-one"], {"k-one": {"ratings": 1}})
    acked = {}          # id -> (agent, score)
    errors = []
    stop = threading.Event()
    lock = threading.Lock()

    def poster(d, tag):
        i = 0
        rnd = random.Random(tag)
        while not stop.is_set():
            i += 1
            rid = "k-%s-%d" % (tag, i)
            ag, sc = rnd.choice(("k-one", "k-two")), rnd.randint(1, 5)
            try:
                r = post(d, {"id": rid, "agent": ag, "score": sc})
                check(r["applied"] == 1, "%s: %s" % (rid, r))
                with lock:
                    acked[rid] = (ag, sc)
            except (Fail, OSError, ValueError) as e:
                errors.append("%s: %s" % (rid, e))
                return
    ths = [threading.Thread(target=poster, args=(a, "a")),
           threading.Thread(target=poster, args=(b, "b"))]
    for t in ths:
        t.start()
    try:
        time.sleep(1.5)
        c.kill9()
        n_kill = len(acked)
        time.sleep(0.5)
        # While c is down: one rating of its own agent, amid the others (c
        # catches up on it inside a batch of later messages).
        post(a, {"id": "k-three-1", "agent": "k-three", "score": 5})
        time.sleep(1)
        c.start()
        c.wait_ready()
        time.sleep(1.5)
    finally:
        stop.set()
        for t in ths:
            t.join()
    check(not errors, "posting: %s" % errors[:5])
    diag("%d ratings acknowledged, %d of them before the kill" % (len(acked), n_kill))
    check(len(acked) > n_kill > 0, "no ratings around the kill")
    exp = {}
    for ag in ("k-one", "k-two"):
        sc = [v[1] for v in acked.values() if v[0] == ag]
        if ag == "k-one":
            sc = sc + [5]
        exp[ag] = {"rate": 2000 + 10 * sum(x - 3 for x in sc), "ratings": len(sc)}
    exp["k-three"] = {"rate": 120.0, "ratings": 1}
    converge(hosts, list(exp), exp)
    seqs = wait_for(lambda: (lambda m: len(set(m.values())) == 1 and m)(
        metric_all(hosts, "agentgate_fleet_applied_sequence")), CONVERGE,
        what="fleet_applied_sequence equal")
    diag("applied sequence %s" % seqs)
    # A rating id acknowledged before the crash is still a duplicate at c.
    r = post(c, {"id": "k-pre", "agent": "k-one", "score": 5})
    check(r["duplicates"] == 1 and r["applied"] == 0, "k-pre at c after restart: %s" % r)
    # And it goes on: one more at c reaches everyone.
    post(c, {"id": "k-post", "agent": "k-two", "score": 5})
    exp["k-two"] = {"rate": exp["k-two"]["rate"] + 20, "ratings": exp["k-two"]["ratings"] + 1}
    converge(hosts, list(exp), exp)


def stream_last_seq(s):
    n = nats_client(s)
    try:
        return n.js("STREAM.INFO." + STREAM)["state"]["last_seq"]
    finally:
        n.close()


def rules_of(d, agent):
    st, body, _ = d.http("GET", "/v1/rules")
    check(st == 200, "%s GET /v1/rules: %d %s" % (d.node, st, body))
    return sorted((r["prefix"], r.get("port") or 0, r["agent"]) for r in json.loads(body)
                  if r["agent"] == agent)


def all_agents(d):
    names, after = {}, None
    while True:
        path = "/v1/agents?limit=500" + ("&after=" + after if after else "")
        page = d.get_json(path)
        for o in page["agents"]:
            names[o["agent"]] = (o["rate"], o["ratings"], o["pinned"], o["alpha"], o["r_min"],
                                 o["r_max"], o["burst"])
        after = page.get("next")
        if not after:
            return names


def t_operator():
    s, hosts = phase1()
    a, b, c = hosts
    pol = ("rate", "alpha", "r_min", "r_max", "burst", "pinned", "ratings")
    st, body, _ = a.http("PUT", "/v1/agents/op-1", {"rate": 500, "alpha": 5, "r_min": 100,
                                                     "r_max": 800, "burst": 250})
    check(st == 201, "PUT op-1 at a: %d %s" % (st, body))
    check(a.agent("op-1")["rate"] == 500, "op-1 not applied at a when answered")
    converge(hosts, ["op-1"], {"op-1": {"rate": 500, "alpha": 5, "r_min": 100, "r_max": 800,
                                        "burst": 250, "pinned": False}}, fields=pol)
    post(b, {"agent": "op-1", "score": 5})
    converge(hosts, ["op-1"], {"op-1": {"rate": 510, "ratings": 1}}, fields=pol)
    st, body, _ = c.http("PUT", "/v1/agents/op-1", {"rate": 300, "pinned": True})
    check(st == 200, "PUT op-1 pinned at c: %d %s" % (st, body))
    post(a, {"agent": "op-1", "score": 5})
    converge(hosts, ["op-1"], {"op-1": {"rate": 300, "pinned": True, "ratings": 2, "alpha": 5,
                                        "r_min": 100, "r_max": 800}}, fields=pol)
    # Rules: added at a and b, one deleted at c.
    st, body, _ = a.http("POST", "/v1/rules", {"prefix": "10.77.0.0/16", "port": 443,
                                               "agent": "op-1"})
    check(st == 201, "POST rule at a: %d %s" % (st, body))
    st, body, _ = b.http("POST", "/v1/rules", {"prefix": "2001:db8:77::/48", "agent": "op-1"})
    check(st == 201, "POST rule at b: %d %s" % (st, body))
    both = [("10.77.0.0/16", 443, "op-1"), ("2001:db8:77::/48", 0, "op-1")]
    wait_for(lambda: all(rules_of(d, "op-1") == both for d in hosts), CONVERGE,
             what="both rules on every host")
    st, body, _ = c.http("DELETE", "/v1/rules?prefix=10.77.0.0/16&port=443")
    check(st in (200, 204), "DELETE rule at c: %d %s" % (st, body))
    wait_for(lambda: all(rules_of(d, "op-1") == both[1:] for d in hosts), CONVERGE,
             what="rule deleted on every host")
    for d in hosts:     # in the maps too
        rl = [(r["prefix"], r.get("port")) for r in cli(d.pin, "rule", "list")
              if r["agent"] == "op-1"]
        check(rl == [("2001:db8:77::/48", None)] or rl == [("2001:db8:77::/48", 0)],
              "%s: rules of op-1 in the maps: %s" % (d.node, rl))
    # An agent with a rule, deleted at another host: gone with its rule.
    st, body, _ = b.http("PUT", "/v1/agents/op-2", {"rate": 50})
    check(st == 201, "PUT op-2 at b: %d %s" % (st, body))
    st, body, _ = b.http("POST", "/v1/rules", {"prefix": "10.78.0.0/24", "agent": "op-2"})
    check(st == 201, "rule of op-2: %d %s" % (st, body))
    converge(hosts, ["op-2"], {"op-2": {"rate": 50}}, fields=pol)
    st, body, _ = a.http("DELETE", "/v1/agents/op-2")
    check(st in (200, 204), "DELETE op-2 at a: %d %s" % (st, body))
    check(a.agent("op-2") is None, "op-2 still at a when answered")
    converge(hosts, ["op-2"], {"op-2": None}, fields=pol)
    wait_for(lambda: all(rules_of(d, "op-2") == [] for d in hosts), CONVERGE,
             what="op-2's rule gone everywhere")
    # The tutorial's POST /bucket/ID.
    st, body, _ = c.http("POST", "/bucket/op-tb", {"capacity": 50, "refill_rate": 5,
                                                    "initial_tokens": 10})
    check(st in (200, 201), "POST /bucket/op-tb at c: %d %s" % (st, body))
    converge(hosts, ["op-tb"], {"op-tb": {"rate": 5, "burst": 50}}, fields=pol)
    for d in hosts:
        st, body, _ = d.http("GET", "/bucket/op-tb")
        check(st == 200 and json.loads(body)["capacity"] == 50, "%s GET /bucket/op-tb: %d %s" %
              (d.node, st, body))
    # reset, drain and consume stay local: nothing enters the stream.
    time.sleep(0.5)
    before = stream_last_seq(s)
    for path, body in (("/v1/agents/op-1/drain", {"tokens": 20}), ("/v1/agents/op-1/reset", None),
                       ("/v1/agents/op-1/consume", {"tokens": 1})):
        st, text, _ = a.http("POST", path, body)
        check(st in (200, 429), "POST %s at a: %d %s" % (path, st, text))
    time.sleep(1)
    after = stream_last_seq(s)
    check(after == before, "reset/drain/consume published %d stream messages" % (after - before))
    # A fourth host with an empty state dir (and empty maps) gets everything.
    d = new_daemon("d", [s.url], ["--nats-timeout", "1500ms"])
    d.start().wait_ready()
    try:
        want = all_agents(a)
        check("op-1" in want and "op-2" not in want and "cv-alpha" in want, "agents at a: %s" %
              sorted(want))
        wait_for(lambda: all_agents(d) == want, CONVERGE, what="d has every agent as a has")
        wait_for(lambda: d.get_json("/v1/rules") and
                 sorted(map(json.dumps, d.get_json("/v1/rules"))) ==
                 sorted(map(json.dumps, a.get_json("/v1/rules"))), CONVERGE,
                 what="d has every rule as a has")
        check(rules_of(d, "op-1") == both[1:] and rules_of(d, "op-2") == [],
              "d's rules: %s" % d.get_json("/v1/rules"))
        converge([a, d], ["op-1", "cv-alpha", "cv-delta"], fields=pol + ("mean_score",),
                 timeout=5)
        rl = [(r["prefix"], r["agent"]) for r in cli(d.pin, "rule", "list")]
        check(("2001:db8:77::/48", "op-1") in rl, "d's maps lack op-1's rule: %s" % rl)
    finally:
        stop_daemon(d)


def t_operator_cli():
    """The CLI beside a fleet daemon: its changes go through the daemon, into the log."""
    s, hosts = phase1()
    a, b, c = hosts
    pol = ("rate", "pinned", "ratings")
    out = cli(a.pin, "agent", "set", "opc-1", "rate", "250", "pin")
    check(out["rate"] == 250 and out["pinned"] is True, "agent set at a: %s" % out)
    converge(hosts, ["opc-1"], {"opc-1": {"rate": 250, "pinned": True}}, fields=pol)
    post(b, {"agent": "opc-1", "score": 1})
    converge(hosts, ["opc-1"], {"opc-1": {"rate": 250, "pinned": True, "ratings": 1}},
             fields=pol)
    cli(b.pin, "rule", "add", "10.79.0.0/16", "agent", "opc-1")
    wait_for(lambda: all(rules_of(d, "opc-1") == [("10.79.0.0/16", 0, "opc-1")] for d in hosts),
             CONVERGE, what="the CLI's rule on every host")
    for d in hosts:     # enforced where it is reported
        rl = [(r["prefix"], r["agent"]) for r in cli(d.pin, "rule", "list")]
        check(("10.79.0.0/16", "opc-1") in rl, "%s: the rule is not in the maps: %s" %
              (d.node, rl))
    cli(c.pin, "config", "set", "dry-run", "on")
    wait_for(lambda: all(cli(d.pin, "config", "show")["dry_run"] is True for d in hosts),
             CONVERGE, what="dry-run on at every host")
    cli(c.pin, "config", "set", "dry-run", "off")
    wait_for(lambda: all(cli(d.pin, "config", "show")["dry_run"] is False for d in hosts),
             CONVERGE, what="dry-run off at every host")
    # explain, asked at any host: who pinned it, the fleet's share.
    for d in hosts:
        x = cli(d.pin, "agent", "explain", "opc-1")
        check(x["policy"]["pinned_by"]["subject"] == "local:root" and
              0 < x["fleet"]["share"] <= 1 and x["answered_by"] == "agentgated",
              "%s: explain: %s" % (d.node, json.dumps(x)[:600]))
    cli(a.pin, "agent", "del", "opc-1")
    converge(hosts, ["opc-1"], {"opc-1": None}, fields=pol)
    for d in hosts:
        audit = open(os.path.join(d.state, "audit.log")).read()
        check('"subject":"local:root","action":"config.set"' in audit,
              "%s: config.set by local:root not audited: %s" % (d.node, audit[-400:]))


def t_dead_letters():
    s, hosts = phase1()
    a, b, c = hosts
    post(a, {"agent": "dl-x", "score": 5})
    converge(hosts, ["dl-x"], {"dl-x": {"rate": 120.0, "ratings": 1}})
    watch = ["cv-alpha", "cv-beta", "op-1", "dd-one"]
    before_rates = converge(hosts, watch, timeout=5)
    dl0 = metric_all(hosts, "agentgate_fleet_dead_letters_total")
    check(all(v is not None for v in dl0.values()), "fleet_dead_letters_total missing: %s" % dl0)
    n = nats_client(s)
    try:
        sid = n.sub("agentgate.ratings.dlq")
        n.flush()
        tag = os.urandom(4).hex()
        bad = [b'{"agent": "dl-x", "score": ', json.dumps({"agent": "dl-x", "score": 9}).encode(),
               json.dumps({"agent": "dl-x", "score": 5, "color": "red"}).encode()]
        seqs = {}
        for i, data in enumerate(bad):
            ack = n.js_publish("agentgate.ratings.dl-x", data,
                               headers={"Nats-Msg-Id": "dl-%s-%d" % (tag, i)})
            check("error" not in ack and ack.get("stream") == STREAM, "raw publish: %s" % ack)
            seqs[ack["seq"]] = data
        got = {}
        deadline = time.monotonic() + CONVERGE
        while set(got) != set(seqs) and time.monotonic() < deadline:
            try:
                m = n.next_msg(max(0.1, deadline - time.monotonic()), sid=sid)
            except OSError:
                break
            try:
                q = int(m.headers.get("Agentgate-Seq", "-1"))
            except ValueError:
                q = -1
            got.setdefault(q, []).append(m)
        diag("dead letters: %s" % {q: [(x.headers, x.data) for x in ms] for q, ms in got.items()})
        for q, data in seqs.items():
            check(q in got, "no dead letter with Agentgate-Seq %d (%r)" % (q, data))
            for m in got[q]:
                check(m.headers.get("Agentgate-Reason"), "no Agentgate-Reason: %r" % m)
                check(m.data == data, "dead letter body %r, want %r" % (m.data, data))
        # The hosts go on: a valid rating after them reaches everyone.
        post(b, {"agent": "dl-x", "score": 5})
        converge(hosts, ["dl-x"], {"dl-x": {"rate": 140.0, "ratings": 2}})
        check(converge(hosts, watch, timeout=5) == before_rates, "other agents' rates changed")
        dl1 = wait_for(lambda: (lambda m: all(m[k] > dl0[k] for k in m) and m)(
            metric_all(hosts, "agentgate_fleet_dead_letters_total")), CONVERGE,
            what="fleet_dead_letters_total increased on every host (from %s)" % dl0)
        # No loop: dead letters (they are in the stream's subjects too) are not
        # dead-lettered again and again.
        seq1 = stream_last_seq(s)
        time.sleep(3)
        dl2 = metric_all(hosts, "agentgate_fleet_dead_letters_total")
        seq2 = stream_last_seq(s)
        extra = []
        while True:
            try:
                extra.append(n.next_msg(0.2, sid=sid))
            except OSError:
                break
        diag("dead_letters_total %s -> %s -> %s; stream last seq %d -> %d; %d more dead letters"
             % (dl0, dl1, dl2, seq1, seq2, len(extra)))
        check(dl2 == dl1 and seq2 == seq1, "dead letters keep coming (a loop?)")
        check(sum(len(v) for v in got.values()) + len(extra) <= 3 * len(seqs),
              "more than one dead letter per host and message")
    finally:
        n.close()


def t_odd_names():
    """Agent names valid for agentgate but odd as NATS subject tokens or KV keys."""
    s, hosts = phase1()
    names = ["dlq", "v1.2", "x..y", ".lead", "trail.", "a:b:c", "...", "-"]
    ok, errors = [], []
    for i, nm in enumerate(names):
        d = hosts[i % 3]
        st, body, _ = d.http("POST", "/v1/ratings", {"agent": nm, "score": 5})
        diag("rating for %r at %s: %d %s" % (nm, d.node, st, body[:200]))
        if st == 400:
            continue    # refused as a name: fine, as long as it is refused
        if st != 200:
            errors.append("%r at %s: %d %s (NATS is up)" % (nm, d.node, st, body))
            continue
        r = json.loads(body)
        if r.get("applied") != 1 or [x.get("agent") for x in r.get("agents", [])] != [nm]:
            errors.append("%r at %s: 200 %s" % (nm, d.node, body))
        ok.append(nm)
    for nm in ok:
        try:
            converge(hosts, [nm], {nm: {"rate": 120.0, "ratings": 1}}, timeout=10)
        except Fail as e:
            errors.append("%r: %s" % (nm, e))
    try:
        wait_for(lambda: all(v == 0 for v in metric_all(hosts, "agentgate_fleet_outbox_depth")
                             .values()), 10, what="outboxes empty")
    except Fail as e:
        errors.append(str(e))
    check(not errors, "; ".join(errors))


def t_promtool():
    s, hosts = phase1()
    a = hosts[0]
    post(hosts[1], {"agent": "pm-1", "score": 4})
    converge(hosts, ["pm-1"], {"pm-1": {"ratings": 1}})
    text = a.metrics()
    path = os.path.join(TMP, "metrics.txt")
    with open(path, "w") as f:
        f.write(text)
    if subprocess.run(["sh", "-c", "command -v promtool"], capture_output=True).returncode == 0:
        r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True)
        check(r.returncode == 0, "promtool check metrics: %s%s" % (r.stdout, r.stderr))
    else:
        diag("promtool not found: only the families are checked")
    want = ['types["agentgate_fleet_connected"] == "gauge"',
            'val("agentgate_fleet_connected") == 1',
            'types["agentgate_fleet_applied_sequence"] in ("gauge", "counter")',
            'val("agentgate_fleet_applied_sequence") > 0',
            'types["agentgate_fleet_stream_lag"] == "gauge"',
            'types["agentgate_fleet_outbox_depth"] == "gauge"',
            'val("agentgate_fleet_outbox_depth") == 0',
            'types["agentgate_fleet_dead_letters_total"] == "counter"',
            'val("agentgate_fleet_dead_letters_total") >= 0',
            'types["agentgate_fleet_demand_share"] == "gauge"',
            '"pm-1" in label_values("agentgate_fleet_demand_share", "agent")',
            'all(0 <= v <= 1 for l, v in series("agentgate_fleet_demand_share"))']
    r = sh([sys.executable, os.path.join(ROOT, "tests/daemon/promcheck.py"), path] + want)
    check(r.returncode == 0, "metrics: %s%s" % (r.stdout, r.stderr))
    share = a.metric("agentgate_fleet_demand_share", {"agent": "pm-1"})
    f = a.agent("pm-1")["fleet"]
    check(abs(share - f["share"]) < 0.02, "demand_share metric %s, agent's share %s" %
          (share, f["share"]))


def t_nats_down():
    s, hosts = phase1()
    a, b, c = hosts
    post(a, {"agent": "nd-x", "score": 3})
    converge(hosts, ["nd-x"], {"nd-x": {"ratings": 1}})
    s.stop()
    for d in hosts:
        d.wait_ready(CONVERGE, want=("degraded",))
        st, body, _ = d.http("GET", "/readyz")
        o = json.loads(body)
        check(st == 200 and o.get("status") == "degraded" and isinstance(o.get("reason"), str)
              and o["reason"], "%s /readyz: %d %s" % (d.node, st, body))
    check(all(v == 0 for v in metric_all(hosts, "agentgate_fleet_connected").values()),
          "fleet_connected not 0 while NATS is down")
    want = {"applied": 0, "duplicates": 0, "agents": []}
    r = post(a, {"id": "nd-1", "agent": "nd-x", "score": 5}, want=202)
    check({k: r.get(k) for k in want} == want and r.get("queued") == 1, "a: 202 body %s" % r)
    r = post(b, [{"agent": "nd-x", "score": 4}, {"agent": "nd-x", "score": 4},
                 {"agent": "nd-y", "score": 1}], want=202)
    check({k: r.get(k) for k in want} == want and r.get("queued") == 3, "b: 202 body %s" % r)
    # The same id at another host, and again at a: applied once in the end.
    st, body, _ = c.http("POST", "/v1/ratings", {"id": "nd-1", "agent": "nd-x", "score": 5})
    check(st == 202, "nd-1 at c while down: %d %s" % (st, body))
    st, body, _ = a.http("POST", "/v1/ratings", {"id": "nd-1", "agent": "nd-x", "score": 5})
    check(st in (200, 202), "nd-1 again at a while down: %d %s" % (st, body))
    # Validation as standalone.
    st, body, _ = a.http("POST", "/v1/ratings", [{"agent": "nd-x", "score": 5},
                                                 {"agent": "nd-x", "score": 7}])
    check(st == 400 and json.loads(body).get("errors", [{}])[0].get("index") == 1,
          "invalid batch while down: %d %s" % (st, body))
    # Operator changes need the stream: 503 unavailable.
    for d, method, path, body in (
            (a, "PUT", "/v1/agents/nd-new", {"rate": 10}),
            (b, "DELETE", "/v1/agents/cv-beta", None),
            (c, "POST", "/v1/rules", {"prefix": "10.79.0.0/24", "agent": "nd-x"}),
            (a, "DELETE", "/v1/rules?prefix=2001:db8:77::/48", None),
            (b, "POST", "/bucket/nd-tb", {"capacity": 5, "refill_rate": 1, "initial_tokens": 1})):
        st, text, _ = d.http(method, path, body)
        o = json.loads(text) if text else {}
        check(st == 503 and o.get("error") == "unavailable" and o.get("message"),
              "%s %s at %s while down: %d %s" % (method, path, d.node, st, text))
    # Local operations keep working.
    for path, body in (("/v1/agents/nd-x/reset", None), ("/v1/agents/nd-x/drain", {"tokens": 1}),
                       ("/v1/agents/nd-x/consume", {"tokens": 1})):
        st, text, _ = a.http("POST", path, body)
        check(st in (200, 429), "POST %s while down: %d %s" % (path, st, text))
    depth = metric_all(hosts, "agentgate_fleet_outbox_depth")
    check(depth["a"] >= 1 and depth["b"] >= 3 and depth["c"] >= 1, "outbox depth %s" % depth)
    check(a.agent("nd-x")["ratings"] == 1, "a applied a queued rating while down")
    # The outbox is durable: b killed and restarted while NATS is still down;
    # it serves (degraded) without NATS. (Checked, then the case goes on.)
    errors = []
    b.kill9()
    b.start()
    try:
        b.wait_ready(15, want=("degraded",))
        v = b.metric("agentgate_fleet_outbox_depth")
        if not (v is not None and v >= 3):
            errors.append("b's outbox depth after kill -9: %s" % v)
    except Fail as e:
        errors.append("b restarted while NATS is down: %s" % e)
    # NATS back, same store.
    s.start().wait_ready()
    for d in hosts:
        d.wait_ready(CONVERGE)
    wait_for(lambda: all(v == 0 for v in metric_all(hosts, "agentgate_fleet_outbox_depth")
                         .values()), CONVERGE, what="outboxes empty")
    check(all(v == 1 for v in metric_all(hosts, "agentgate_fleet_connected").values()),
          "fleet_connected not 1 after NATS returned")
    exp = {"nd-x": {"rate": expected_rate(100, [3, 5, 4, 4]), "ratings": 4,
                    "mean_score": mean([3, 5, 4, 4])},
           "nd-y": {"rate": 80.0, "ratings": 1}}
    converge(hosts, list(exp), exp)
    time.sleep(1.5)     # and nothing more arrives
    converge(hosts, list(exp), exp, timeout=1)
    # Operator changes work again.
    st, body, _ = a.http("PUT", "/v1/agents/nd-new", {"rate": 10})
    check(st == 201, "PUT after NATS returned: %d %s" % (st, body))
    converge(hosts, ["nd-new"], {"nd-new": {"rate": 10}})
    check(not errors, "; ".join(errors))


def t_cluster():
    cl = NatsCluster(TMP, 3, "c").start().wait_ready()
    try:
        hosts = [new_daemon("c" + x, cl.urls, ["--nats-replicas", "3", "--nats-timeout", "2s"])
                 for x in "abc"]
        for d in hosts:
            d.start()
        for d in hosts:
            d.wait_ready(CONVERGE)
        n = Nats.connect("127.0.0.1", cl.nodes[0].port)
        try:
            info = wait_for(lambda: (lambda i: i.get("cluster", {}).get("leader") and i)(
                n.js("STREAM.INFO." + STREAM)), CONVERGE, what="a leader of the stream")
            check(info["config"]["num_replicas"] == 3,
                  "stream replicas: %s" % info.get("config", info))
            kv = n.js("STREAM.INFO." + KV_STREAM)
            check("error" not in kv and kv["config"]["num_replicas"] == 3,
                  "KV replicas: %s" % kv.get("config", kv))
            leader = info["cluster"]["leader"]
        finally:
            n.close()
        st, body, _ = hosts[0].http("PUT", "/v1/agents/cl-x", {"rate": 5000})
        check(st == 201, "PUT cl-x: %d %s" % (st, body))
        results = {}     # id -> (score, status)
        lock = threading.Lock()
        stop = threading.Event()

        def poster(d):
            i = 0
            rnd = random.Random(d.node)
            while not stop.is_set():
                i += 1
                rid = "cl-%s-%d" % (d.node, i)
                sc = rnd.randint(1, 5)
                try:
                    st, text, _ = d.http("POST", "/v1/ratings", {"id": rid, "agent": "cl-x",
                                                                  "score": sc}, timeout=60)
                except OSError as e:
                    st, text = -1, str(e)
                with lock:
                    results[rid] = (sc, st, text)
                # About 20 a second per host: 202s come back at once.
                time.sleep(0.1 if st not in (200, 202) else 0.05)
        ths = [threading.Thread(target=poster, args=(d,)) for d in hosts]
        for t in ths:
            t.start()
        try:
            time.sleep(2)
            victim = [x for x in cl.nodes if x.name == leader][0]
            diag("killing %s (the stream's leader) after %d ratings" % (victim.name, len(results)))
            victim.stop(signal.SIGKILL)
            time.sleep(8)
        finally:
            stop.set()
            for t in ths:
                t.join()
        by = {}
        for rid, (sc, st, text) in results.items():
            by.setdefault(st, []).append(rid)
        diag("answers: %s" % {k: len(v) for k, v in by.items()})
        errors = []
        # Any other answer is a failure; a request without an answer (the
        # daemon died) may or may not have been published.
        bad = [(rid, v) for rid, v in results.items() if v[1] not in (200, 202)]
        if bad:
            errors.append("%d answers other than 200/202, e.g. %s" % (len(bad), bad[:3]))
        dead = [d for d in hosts if not d.alive()]
        if dead:
            errors.append("daemons died: %s (exit %s): %s" % (
                [d.node for d in dead], [d.proc.returncode for d in dead],
                " | ".join(d.log_tail(400) for d in dead)))
            for d in dead:      # restarted to see what they would have applied
                d.start()
            for d in dead:
                d.wait_ready(CONVERGE)
        accepted = [rid for rid, v in results.items() if v[1] in (200, 202)]
        unsure = [rid for rid, v in results.items() if v[1] == -1]
        alive = [x for x in cl.nodes if x.running()]
        wait_for(lambda: all(v == 0 for v in metric_all(hosts, "agentgate_fleet_outbox_depth")
                             .values()), 45, what="outboxes empty")
        # The killed node comes back (same store) and the cluster heals.
        victim.start().wait_ready(CONVERGE)
        alive = [x for x in cl.nodes if x.running()]
        # In the stream: each accepted id exactly once.
        n = Nats.connect("127.0.0.1", alive[0].port)
        try:
            ids = {}
            for q, hdrs, data in n.stream_read(STREAM, "agentgate.ratings.cl-x"):
                mid = hdrs.get("Nats-Msg-Id")
                ids[mid] = ids.get(mid, 0) + 1
        finally:
            n.close()
        missing = [r for r in accepted if r not in ids]
        twice = [r for r, k in ids.items() if k > 1]
        stray = [r for r in ids if r not in accepted and r not in unsure]
        if missing or twice or stray:
            errors.append("stream: %d accepted ids missing (%s), %d twice (%s), %d never sent "
                          "(%s)" % (len(missing), missing[:5], len(twice), twice[:5], len(stray),
                                    stray[:5]))
        # Every host applied exactly what the stream holds.
        applied = [r for r in ids if r in results]
        exp = {"cl-x": {"ratings": len(applied),
                        "rate": 5000 + 10 * sum(results[r][0] - 3 for r in applied)}}
        diag("%d accepted, %d without an answer, %d in the stream" % (len(accepted),
                                                                      len(unsure), len(ids)))
        try:
            converge(hosts, ["cl-x"], exp, timeout=45, server=alive[0])
        except Fail as e:
            errors.append(str(e))
        check(not errors, "; ".join(errors))
    finally:
        for d in [x for x in ALL_DAEMONS if x.node in ("ca", "cb", "cc")]:
            stop_daemon(d)
        cl.stop()


def lab_up(name):
    r = sh([LAB, "up", name])
    if r.returncode == 77:
        return None
    check(r.returncode == 0, "lab.sh up %s: %s" % (name, r.stderr))
    fl.LAB_HOSTS.append((name, LAB))
    env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    return env


class Skip(Exception):
    pass


def t_demand_split():
    if not os.access(TRAFFICGEN, os.X_OK):
        raise Skip("%s not built" % TRAFFICGEN)
    tag = "%04d" % (os.getpid() % 10000)
    labs = []
    for x in ("fa", "fb"):
        env = lab_up(x + tag)
        if env is None:
            raise Skip("this machine cannot host a lab (lab/lab.sh up: 77)")
        labs.append(env)
    for env in labs:
        r = sh(["ip", "netns", "exec", env["LAB_NS"], CLI, "--pin-path", env["LAB_PIN"],
                "attach", env["LAB_IF"]])
        check(r.returncode == 0, "attach in %s: %s%s" % (env["LAB_NS"], r.stdout, r.stderr))
    s = NatsServer(TMP, "split").start().wait_ready()
    floor2 = 0.1    # e2's --fleet-floor (e1 keeps the default 0.05)
    hosts = [new_daemon("e%d" % (i + 1), [s.url], ["--fleet-interval", "500ms"] +
                        (["--fleet-floor", str(floor2)] if i == 1 else []),
                        pin=env["LAB_PIN"], state=os.path.join(TMP, "state-e%d" % (i + 1)))
             for i, env in enumerate(labs)]
    gens = []
    try:
        for d in hosts:
            d.start()
        for d in hosts:
            d.wait_ready()
        e1, e2 = hosts
        R, agent = 1000.0, "org:split"
        st, body, _ = e1.http("PUT", "/v1/agents/" + agent, {"rate": R, "burst": 100,
                                                              "pinned": True})
        check(st == 201, "PUT %s: %d %s" % (agent, st, body))
        st, body, _ = e1.http("POST", "/v1/rules", {"prefix": "10.66.0.0/24", "agent": agent})
        check(st == 201, "POST rule: %d %s" % (st, body))
        wait_for(lambda: [r["agent"] for r in cli(e2.pin, "rule", "list")
                          if r["prefix"] == "10.66.0.0/24"] == [agent], CONVERGE,
                 what="the rule in e2's maps")
        offered = (4000, 2000)
        for env, pps in zip(labs, offered):
            gens.append(fl.popen(["ip", "netns", "exec", env["LAB_WIRE_NS"], TRAFFICGEN,
                                  "--engine", TG_ENGINE, "--dev", env["LAB_WIRE_IF"], "--dst-mac", env["LAB_MAC"],
                                  "--duration", "120", "--src", "10.66.0.0/24",
                                  "--dst", env["LAB_ADDR4"], "--dport", "9000",
                                  "--rate", str(pps)],
                                 os.path.join(TMP, "gen-%s.log" % env["LAB_NAME"])))
        want = [o / sum(offered) for o in offered]

        def shares():
            sh_ = [d.agent(agent)["fleet"]["share"] for d in hosts]
            return sh_ if all(abs(x - w) <= 0.08 for x, w in zip(sh_, want)) else None
        try:
            got = wait_for(shares, 40, interval=0.5, what="shares near %s" % want)
        except Fail:
            diag("e1: %s" % e1.agent(agent))
            diag("e2: %s" % e2.agent(agent))
            raise
        time.sleep(2)     # settle
        for d in hosts:
            o = d.agent(agent)
            diag("%s: rate %s fleet %s" % (d.node, o["rate"], o["fleet"]))
            check(o["rate"] == R, "%s: fleet rate %s" % (d.node, o["rate"]))
            check(abs(o["fleet"]["local_rate"] - R * o["fleet"]["share"]) < 1e-6 * R,
                  "%s: local_rate %s" % (d.node, o["fleet"]))
            ms = d.metric("agentgate_fleet_demand_share", {"agent": agent})
            check(ms is not None and abs(ms - o["fleet"]["share"]) < 0.05,
                  "%s: fleet_demand_share %s" % (d.node, ms))
        # Admitted over a measured window: counters before and after.
        t0 = time.monotonic()
        c0 = [cli(d.pin, "agent", "show", agent) for d in hosts]
        time.sleep(6)
        c1 = [cli(d.pin, "agent", "show", agent) for d in hosts]
        t = time.monotonic() - t0
        passed = [y["passed_packets"] - x["passed_packets"] for x, y in zip(c0, c1)]
        dropped = [y["dropped_packets"] - x["dropped_packets"] for x, y in zip(c0, c1)]
        adm = sum(passed)
        burst = sum(x["burst"] for x in c1)
        diag("window %.2f s: admitted %s (%d, R*t %.0f), dropped %s, shares %s, burst %s" %
             (t, passed, adm, R * t, dropped, got, burst))
        check(all(x > 0 for x in dropped), "no drops: traffic not above the local rates?")
        check(0.9 * R * t <= adm <= 1.1 * R * t + burst,
              "admitted %d over %.2f s, want %.0f +- 10 %% (+ burst %s)" % (adm, t, R * t, burst))
        # The demand counters in the KV bucket: keys <node>.<agent>, ':' as '='.
        n = nats_client(s)
        try:
            for d in hosts:
                m = n.stream_msg(KV_STREAM, last_by_subj="$KV.agentgate-demand.%s.org=split"
                                 % d.node)
                check(m is not None, "no KV key %s.org=split" % d.node)
                diag("KV %s: %r" % (m[0], m[3][:200]))
        finally:
            n.close()
        # e2's traffic stops: its share falls to its floor, e1's rises to 1.
        rc = fl.stop_proc(gens[1], signal.SIGINT)
        t_stop = time.monotonic()
        c2 = cli(e2.pin, "agent", "show", agent)
        timeline = []

        def floored():
            sh_ = [d.agent(agent)["fleet"]["share"] for d in hosts]
            timeline.append("%.1f s %s" % (time.monotonic() - t_stop, sh_))
            return sh_ if sh_[0] >= 0.95 and abs(sh_[1] - floor2) < 1e-3 else None
        try:
            got = wait_for(floored, 30, interval=0.5, what="e1 share 1, e2 at its floor %g" %
                           floor2)
        except Fail:
            c3 = cli(e2.pin, "agent", "show", agent)
            diag("generator exit %s; e2's counters since: +%d passed, +%d dropped" % (
                rc, c3["passed_packets"] - c2["passed_packets"],
                c3["dropped_packets"] - c2["dropped_packets"]))
            diag("shares: %s" % "; ".join(timeline[::4] + timeline[-2:]))
            raise
        diag("shares after e2's traffic stopped: %s" % got)
    finally:
        for g in gens:
            fl.stop_proc(g, signal.SIGINT)
        for d in hosts:
            stop_daemon(d)
        s.stop()


def t_sigterm():
    for d in ALL_DAEMONS:
        stop_daemon(d)
    bad = {k: v for k, v in STOPPED.items() if v != 0}
    reports = [d.node for d in ALL_DAEMONS
               if "Sanitizer" in d.log_text() or "runtime error:" in d.log_text()]
    first = {}
    for d in ALL_DAEMONS:
        if d.node in reports:
            text = d.log_text()
            i = max(text.find("ERROR: "), text.find("runtime error:"))
            first[d.node] = " ".join(x.strip() for x in text[max(0, i - 80):i + 700].splitlines()
                                     if x.strip())
            diag("%s: %s" % (d.node, d.log_tail(3000)))
    msg = []
    if bad:
        msg.append("exit codes after SIGTERM: %s" % bad)
    if reports:
        msg.append("sanitizer reports in the logs of %s, e.g. %s" % (
            reports, first[reports[0]]))
    check(not msg, "; ".join(msg))


CASES = [
    ("t_flags", "standalone unchanged (no fleet object); invalid --node names exit 2; a "
                "32-character name of every class accepted"),
    ("t_converge", "3 hosts, 1 nats-server: ratings with and without ids, arrays, NDJSON, "
                   "concurrent posts: identical rate/ratings/mean/last time everywhere; fleet "
                   "share and local_rate (= the map's rate); stream, msg ids, consumers in JS"),
    ("t_dedup", "one rating id at two or three hosts (also at once): applied once, the other "
                "answers count it as a duplicate"),
    ("t_kill9", "kill -9 of a host while the others take ratings, restart: catches up, same "
                "rates and counts (nothing re-applied), dedup ids kept"),
    ("t_operator", "PUT policy/pin, rules add/delete, DELETE agent, POST /bucket replicated; "
                   "reset/drain/consume local; a 4th host with empty state gets everything"),
    ("t_operator_cli", "the CLI beside fleet daemons: agent set/pin, rule add, config set, "
                       "agent del at one host reach every host's API and maps; audited; explain at each host "
                       "names who pinned it and the fleet share"),
    ("t_dead_letters", "raw bad JSON / bad score / unknown field on agentgate.ratings.x: "
                       "dead letter with Agentgate-Reason, -Seq and the body; hosts go on; "
                       "dead_letters_total up; rates unchanged; no loop"),
    ("t_promtool", "promtool check metrics on a fleet daemon; fleet_* families, types, values"),
    ("t_nats_down", "NATS down: 202 queued, 503 unavailable for operator changes, /readyz "
                    "degraded, outbox > 0 (durable across kill -9); back: applied exactly once, "
                    "outbox 0, ready"),
    ("t_odd_names", "agent names odd as subjects/keys (dlq, dots at the edges, ':'): applied "
                    "identically everywhere or refused with 400"),
    ("t_cluster", "3-node NATS cluster, --nats-replicas 3: the stream leader killed under "
                  "ratings; every 200/202 rating applied once on every host, once in the stream"),
    ("t_demand_split", "two lab edge hosts with real traffic (4000 and 2000 pps) for one agent "
                       "at fleet rate 1000: shares 2/3 and 1/3; admitted in total R*t +- 10 %; "
                       "KV keys; traffic stops at one: its share falls to --fleet-floor"),
    ("t_sigterm", "every daemon exits 0 on SIGTERM; no sanitizer report in any log"),
]


def mount_bpffs():
    global BPFFS, OWN_BPFFS
    if BPFFS and os.path.isdir(BPFFS) and \
            sh(["stat", "-f", "-c", "%T", BPFFS]).stdout.strip() == "bpf_fs":
        return True
    d = tempfile.mkdtemp(prefix="agentgate-fleet-bpf.", dir="/run")
    if sh(["mount", "-t", "bpf", "bpf", d]).returncode != 0:
        os.rmdir(d)
        return False
    BPFFS = OWN_BPFFS = d
    return True


def teardown():
    keep = bool(os.environ.get("AG_TEST_KEEP"))
    fl.cleanup(TMP, keep_tmp=keep)
    if keep and TMP:
        print("# kept %s" % TMP, file=sys.stderr)
    if OWN_BPFFS:
        sh(["umount", OWN_BPFFS])
        try:
            os.rmdir(OWN_BPFFS)
        except OSError:
            pass


def on_signal(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main():
    global TMP
    if os.geteuid() != 0:
        print("1..0 # SKIP needs root (bpffs, XDP, network namespaces)")
        return 77
    for b in (DAEMON, CLI):
        if not os.access(b, os.X_OK):
            print("1..0 # SKIP %s not built" % b)
            return 77
    if subprocess.run(["sh", "-c", "command -v nats-server"], capture_output=True).returncode:
        print("1..0 # SKIP nats-server not found (scripts/deps.sh installs it)")
        return 77
    help_text = sh([DAEMON, "--help"]).stdout
    if "--nats-replicas" not in help_text:
        print("1..0 # SKIP this agentgated has no fleet mode (--nats-replicas)")
        return 77
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    only = os.environ.get("AG_TEST_ONLY", "").split()
    failed = 0
    t_start = time.monotonic()
    try:
        TMP = tempfile.mkdtemp(prefix="agentgate-fleet.")
        if not mount_bpffs():
            print("1..0 # SKIP cannot mount a bpffs under /run (set AG_TEST_BPFFS)")
            return 77
        print("1..%d" % len(CASES))
        sys.stdout.flush()
        for i, (name, desc) in enumerate(CASES, 1):
            if only and name not in only and name != "t_sigterm":
                print("ok %d - %s # SKIP not in AG_TEST_ONLY" % (i, desc))
                continue
            t0 = time.monotonic()
            try:
                globals()[name]()
                print("ok %d - %s" % (i, desc))
            except Skip as e:
                print("ok %d - %s # SKIP %s" % (i, desc, e))
            except (Fail, OSError, ValueError, KeyError, TypeError, IndexError, NatsError,
                    subprocess.SubprocessError) as e:
                failed += 1
                print("not ok %d - %s" % (i, desc))
                diag("%s: %s: %s" % (name, type(e).__name__, e))
                if not isinstance(e, Fail):     # where an unexpected error came from
                    diag("".join(traceback.format_tb(e.__traceback__)[-8:]))
            diag("%s: %.1f s" % (name, time.monotonic() - t0))
            sys.stdout.flush()
    except KeyboardInterrupt as e:
        print("Bail out! interrupted (%s)" % e)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        teardown()
    print("# %d of %d failed, %.0f s" % (failed, len(CASES), time.monotonic() - t_start))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
