#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""tests/fleet: agentgated's fleet mode over NATS JetStream, against real
nats-server processes (one, and a cluster of three) and several real
daemons (the sanitized build) on one machine, each with its own pin root,
state directory, HTTP port and --node name (tests/lib/agtest).

Usage: test_fleet.py BUILD_DIR   (TAP, as root; AG_TEST_ONLY=REGEX runs some
cases, AG_TEST_SHUFFLE=SEED in a random order, AG_TEST_KEEP=1 keeps the
scratch directory with the logs and stores; AG_FLEET_DAEMON=agentgated: the
unsanitized daemon; AG_TEST_ENGINE: the traffic generator's engine)

Cases (see each @case for its one-line description): flags and standalone;
three hosts converging on identical rates and statistics (single ratings
with ids, arrays without, NDJSON, concurrent posts to every host) with the
stream, message ids, consumers and sequence checked in JetStream itself;
one rating id at several hosts applied once; batch messages (their
contents, duplicates whole and by id, an older host's consumer turning them
off, invalid ones dead-lettered); a delivery gap read again; kill -9 of a host under
ratings and catch-up without re-applying; operator changes (policy, pin,
rules, delete, the tutorial's /bucket) replicated, reset/drain/consume
local, a fourth host started later with an empty state dir getting
everything; invalid stream messages dead-lettered with their reason and
sequence, the hosts going on; agent names that are odd as NATS subjects;
promtool on a fleet daemon's /metrics; NATS down (202 queued, 503 for
operator changes, /readyz degraded, a durable outbox across kill -9) and
back (everything applied exactly once); a 3-node NATS cluster losing its
stream leader under ratings; the demand split with real traffic at two
edge hosts of lab/lab.sh; fleet daemons exiting 0 on SIGTERM without a
sanitizer report.

Hosts a, b, c on one nats-server (fixture "phase1") and a standalone
daemon are shared: each case uses agent names of its own and starts again
what an earlier case left stopped. A case that needs a server, cluster or
hosts of its own starts them through the case fixture "own", which stops
them when the case ends. Every daemon is stopped with SIGTERM and must exit
0 with no sanitizer report in any of its runs' logs (the teardown lines).
No timing is a pass/fail criterion except generous convergence deadlines.
"""
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True    # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from agtest import Fail, Skip, case, check, daemon_argv, diag, fixture, run, wait_for  # noqa: E402
from agtest.env import SANITIZER_RE  # noqa: E402
from agtest.lab import lab_down, lab_up  # noqa: E402
from agtest.nats import Nats, NatsCluster, NatsError, NatsServer  # noqa: E402
from agtest.proc import stop_proc  # noqa: E402
from agtest.prom import promtool_check  # noqa: E402

# AG_FLEET_DAEMON: another daemon binary of BUILD_DIR (default the sanitized one).
DAEMON = os.environ.get("AG_FLEET_DAEMON", "agentgated-san")
# The generator's engine (auto, live or packet): AG_TEST_ENGINE, as for the shell suites.
TG_ENGINE = os.environ.get("AG_TEST_ENGINE", "auto")

STREAM = "AGENTGATE"
KV_STREAM = "KV_agentgate-demand-owners"  # demand sharing's group leases
CONVERGE = 30          # seconds: generous convergence deadline
RATED = ("rate", "ratings", "mean_score", "last_rating_ms")
BATCH_SUBJECT = "agentgate.ratings.%batch"  # several ratings, one a line (docs/FLEET.md)


def sh(cmd, timeout=60, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


# ---- daemons and servers ---------------------------------------------------------

def fleet_daemon(env, node, nats, *extra, **kw):
    """An agentgated (AG_FLEET_DAEMON) of node NODE on the NATS servers nats
    (standalone when empty); not started."""
    return env.daemon(node, *extra, nats=nats, node=node, bin=env.bin(DAEMON), **kw)


def start(*daemons, timeout=CONVERGE):
    """Starts the daemons, then waits until each is ready (connected to NATS)."""
    for d in daemons:
        d.start(wait=False)
    for d in daemons:
        d.wait_ready(timeout, want=("ready",))
    return daemons


def stop(d):
    """SIGTERM: exit 0, and no sanitizer report in the log of any of its runs
    (also one killed with -9 or crashed along the way)."""
    if d.proc is None:
        return
    d.stop()
    text = d.log_all()
    m = re.search(SANITIZER_RE, text)
    check(m is None, "sanitizer report in the log of daemon %s:" % d.name,
          text[max(0, m.start() - 200):m.start() + 3000] if m else "")


def stop_all(daemons):
    """stop() of each daemon; Fail naming every one that failed."""
    errors = []
    for d in daemons:
        try:
            stop(d)
        except Fail as e:
            errors.append(str(e))
    check(not errors, "\n".join(errors))


def running(s):
    """The nats-server s, started again (same ports and store) if it is not running."""
    if not s.running():
        s.start().wait_ready()
    return s


class Own:
    """What one case starts for itself: daemons, nats-servers, clusters,
    traffic generators, lab edge hosts. stop() ends the generators, then the
    daemons (each as stop() does), then the servers, then the labs."""

    def __init__(self, env):
        self.env = env
        self.daemons, self.servers, self.gens, self.labs = [], [], [], []

    def daemon(self, node, nats, *extra, **kw):
        d = fleet_daemon(self.env, node, nats, *extra, **kw)
        self.daemons.append(d)
        return d

    def server(self, name):
        s = NatsServer(self.env, name)
        self.servers.append(s)
        return s.start().wait_ready()

    def cluster(self, n, prefix):
        cl = NatsCluster(self.env, n, prefix)
        self.servers += cl.nodes
        return cl.start().wait_ready()

    def lab(self, name):
        host = lab_up(self.env, name)
        self.labs.append(name)
        return host

    def popen(self, argv, log):
        p = self.env.popen(argv, self.env.path(log))
        self.gens.append(p)
        return p

    def stop(self):
        for g in self.gens:
            stop_proc(g, signal.SIGINT)
        try:
            stop_all(self.daemons)
        finally:
            for s in self.servers:
                s.stop()
            for name in self.labs:
                lab_down(self.env, name)


# ---- fixtures ------------------------------------------------------------------------

@fixture
def standalone(env):
    """One standalone daemon (no --nats), the reference for what must not change."""
    d = fleet_daemon(env, "standalone", [])
    yield start(d)[0]
    stop(d)


@fixture
def nats1(env):
    """The single nats-server of phase 1."""
    s = NatsServer(env, "single")
    yield s
    s.stop()


@fixture
def hosts1(env, nats1):
    """Hosts a, b, c on nats1 (started by phase1)."""
    hosts = [fleet_daemon(env, n, [nats1.url], "--nats-timeout", "1500ms") for n in "abc"]
    yield hosts
    stop_all(hosts)


@fixture(scope="case")
def phase1(nats1, hosts1):
    """(nats1, [a, b, c]), all running and ready: what is not (never
    started, or left stopped by a case that failed) is started again."""
    running(nats1)
    start(*[d for d in hosts1 if not d.alive()])
    for d in hosts1:
        d.wait_ready(CONVERGE, want=("ready",))
    batches_on(hosts1, 1)
    return nats1, hosts1


@fixture(scope="case")
def own(env):
    o = Own(env)
    yield o
    o.stop()


# ---- the API, the CLI, NATS ----------------------------------------------------------

def req(d, method, path, body=None, ctype=None, timeout=30):
    return d.api.request(method, path, body, ctype=ctype, timeout=timeout)


def post(d, body, ctype="application/json", want=200):
    r = req(d, "POST", "/v1/ratings", body, ctype)
    check(r.status == want, "%s POST /v1/ratings %s: %d %s" % (d.node, str(body)[:200], r.status,
                                                               r.text))
    return r.json()


def get_json(d, path):
    r = d.api.get(path)
    check(r.status == 200, "%s GET %s: %d %s" % (d.node, path, r.status, r.text))
    return r.json()


def metric(d, name, **labels):
    """One sample (exactly those labels) of the daemon's /metrics; None when absent."""
    return d.metrics().get(name, **labels)


def metric_all(hosts, name, **labels):
    return {d.node: metric(d, name, **labels) for d in hosts}


def cli(d, *args):
    """The CLI in JSON mode on the daemon's pins: its JSON (exit 0 checked)."""
    r = d.cli(*args)
    check(r.rc == 0, "agentgate %s: %d %s" % (" ".join(args), r.rc, r.out))
    return r.json()


def lease_bucket(n):
    """The stream of the demand leases' KV bucket, once a host made it."""
    return wait_for(lambda: (lambda i: "error" not in i and i)(n.js("STREAM.INFO." + KV_STREAM)),
                    CONVERGE, what="the KV bucket of demand leases")


def nats_client(server):
    return Nats.connect("127.0.0.1", server.port)


def stream_last_seq(s):
    n = nats_client(s)
    try:
        return n.js("STREAM.INFO." + STREAM)["state"]["last_seq"]
    finally:
        n.close()


def subject_of(agent):
    """The subject agentgated publishes an agent's ratings on (docs/FLEET.md):
    '.' written %2E, an agent named dlq as %64lq."""
    if agent == "dlq":
        return "agentgate.ratings.%64lq"
    return "agentgate.ratings." + agent.replace(".", "%2E")


# ---- convergence ---------------------------------------------------------------------

def agent_listed(d, name):
    """An agent found through GET /v1/agents: a name ending in '.' or made of
    dots cannot be a URL path segment (the HTTP server normalizes it)."""
    after = ""
    while True:
        page = d.api.get("/v1/agents?limit=500" +
                         ("&after=" + urllib.parse.quote(after) if after else "")).json()
        for o in page.get("agents", []):
            if o.get("agent") == name:
                return o
        if not page.get("next"):
            return None
        after = page["next"]


def snapshot(d, agents, fields=RATED):
    out = {}
    for a in agents:
        o = agent_listed(d, a) if a.endswith(".") or set(a) == {"."} else d.api.agent(a)
        out[a] = None if o is None else tuple(o.get(f) for f in fields)
    return out


def matches(got, want, fields):
    """got (a snapshot's tuple, or None) has the values of want ({field: value}, or None)."""
    if want is None or got is None:
        return want is None and got is None
    for f, v in want.items():
        g = got[fields.index(f)]
        if isinstance(v, float) and isinstance(g, (int, float)) and not isinstance(g, bool):
            # The API prints doubles with 15 significant digits.
            if abs(g - v) > 1e-9 * max(1.0, abs(v)):
                return False
        elif g != v:
            return False
    return True


def converge(server, hosts, agents, expect=None, timeout=CONVERGE, fields=RATED):
    """Waits until every host shows the same fields for every agent (and, for
    agents in expect {agent: {field: value}}, those values); returns the view.
    On failure the views, and the last rating of each agent in the stream of
    server, are diagnostics."""
    last = {}

    def same():
        views = {d.node: snapshot(d, agents, fields) for d in hosts}
        last.clear()
        last.update(views)
        first = views[hosts[0].node]
        if any(v != first for v in views.values()):
            return False
        if not all(matches(first[a], want, fields) for a, want in (expect or {}).items()):
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
        diag_stream(server, agents)
        raise


def diag_stream(server, agents):
    """The last rating of each agent as the stream has it (diagnostics)."""
    if server is None or not server.running():
        return
    try:
        n = nats_client(server)
        for a in agents:
            m = n.stream_msg(STREAM, last_by_subj=subject_of(a))
            diag("stream: last rating of %s: %s" % (
                a, m and "seq %d, time %s, %r" % (m[1], m[4], m[3][:120])))
        n.close()
    except (OSError, ValueError, NatsError) as e:
        diag("stream: %s" % e)


def expected_rate(start_rate, scores, alpha=10.0, r_min=1.0, r_max=10000.0):
    r = start_rate
    for s in scores:
        r = min(max(r + alpha * (s - 3), r_min), r_max)
    return r


def mean(scores):
    return sum(scores) / len(scores)


def all_equal(hosts, name):
    """The metric on every host when it is the same everywhere, else None."""
    m = metric_all(hosts, name)
    return m if len(set(m.values())) == 1 and None not in m.values() else None


def outboxes_empty(hosts, timeout):
    wait_for(lambda: all(v == 0 for v in metric_all(hosts, "agentgate_fleet_outbox_depth")
                         .values()), timeout, what="outboxes empty")


# ---- cases -------------------------------------------------------------------------

def batches_on(hosts, want):
    """Waits until every host's publisher says it sends batch messages (1)
    or a message per rating (0)."""
    return wait_for(lambda: (lambda m: all(v == want for v in m.values()) and m)(
        metric_all(hosts, "agentgate_fleet_rating_batches")), CONVERGE,
        what="agentgate_fleet_rating_batches %d on every host" % want)


def batch_lines(m):
    """A batch message's ratings (JSON objects), checked to be one."""
    mid = m[2].get("Nats-Msg-Id", "") if m else ""
    check(m and m[0] == BATCH_SUBJECT and re.fullmatch(r"batch:[0-9a-f]{32}", mid),
          "not a batch message: %r" % (m,))
    data = m[3].decode()
    check(data.endswith("\n"), "batch message without its last newline: %r" % data[-80:])
    return [json.loads(x) for x in data.splitlines()]


@case("standalone unchanged (no fleet object); invalid --node names exit 2; a "
      "32-character name of every class accepted")
def t_flags(env, standalone, nats1, own):
    # Standalone (no --nats): unchanged, no fleet object.
    d = standalone
    r = d.api.get("/readyz")
    check(r.status == 200 and r.json() == {"status": "ready"}, "standalone /readyz: %s" % r.text)
    check(d.api.put("/v1/agents/sa", {"rate": 100}).status == 201, "standalone PUT")
    o = d.api.agent("sa")
    check("fleet" not in o, "standalone agent has a fleet object: %s" % o)
    r = post(d, {"agent": "sa", "score": 5})
    check(set(r) == {"applied", "duplicates", "agents"}, "standalone answer: %s" % r)
    # Invalid --node names: exit 2 (invalid options), naming the option.
    errors = []
    binary = env.bin(DAEMON)
    pin, state = env.pin_root("flags-x"), env.path("flags-x")
    for bad in ("bad name", "a.b", "x" * 33, "", "\u00e4"):
        argv = daemon_argv(binary, pin, state, "127.0.0.1:1", nats=["nats://127.0.0.1:1"],
                           extra=["--node", bad])
        try:
            r = sh(argv, timeout=10)
        except subprocess.TimeoutExpired:
            errors.append("--node %r: still running after 10 s (not refused)" % bad)
            continue
        if r.returncode != 2 or "node" not in (r.stdout + r.stderr).lower():
            errors.append("--node %r: exit %d, %s" % (bad, r.returncode,
                                                      (r.stdout + r.stderr)[-300:]))
    # Periods are durations with a unit like every other (TIME): a bare
    # number is refused (exit 2) naming the option.
    for opt in ("--nats-timeout", "--fleet-interval"):
        argv = daemon_argv(binary, pin, state, "127.0.0.1:1", nats=["nats://127.0.0.1:1"],
                           extra=[opt, "1500"])
        r = sh(argv, timeout=10)
        if r.returncode != 2 or opt[2:] not in r.stderr:
            errors.append("%s 1500 (no unit): exit %d, %s" % (opt, r.returncode, r.stderr[-200:]))
    # A 32-character name of every allowed class is accepted, and periods
    # with units.
    s = running(nats1)
    name = "Aa0_-" + "z" * 27
    d = own.daemon(name, [s.url], "--nats-timeout", "1500ms", "--fleet-interval", "1s")
    start(d)
    r = post(d, {"agent": "fl-32", "score": 5})
    check(r["applied"] == 1, "rating at node %s: %s" % (name, r))
    check("fleet" in d.api.agent("fl-32"), "agent without a fleet object: %s" %
          d.api.agent("fl-32"))
    stop(d)
    check(not errors, "; ".join(errors))


INVALID = [
    ("application/json", [{"agent": "iv", "score": 5}, {"agent": "iv", "score": 6}]),
    ("application/json", {"agent": "iv", "score": 3, "colour": "red"}),
    ("application/json", {"agent": "", "score": 3}),
    ("application/json", {"agent": "iv"}),
    ("application/json", b'{"agent": "iv", "score": '),
    ("application/x-ndjson", b'{"agent":"iv","score":4}\n{"agent":"i v","score":4}\n'),
]


def post_concurrently(hosts, agent, scores):
    """scores posted one by one for agent, a third at each host, at once."""
    errors = []

    def worker(d, part):
        try:
            for sc in part:
                post(d, {"agent": agent, "score": sc})
        except (Fail, OSError, ValueError) as e:
            errors.append("%s: %s" % (d.node, e))
    ths = [threading.Thread(target=worker, args=(d, scores[i::3])) for i, d in enumerate(hosts)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    check(not errors, "concurrent posts: %s" % errors)


def check_fleet_objects(hosts, agent):
    """The fleet object: share within [floor, 1], local_rate = rate * share,
    the bucket in the map refilling at local_rate."""
    for d in hosts:
        o = d.api.agent(agent)
        f = o.get("fleet")
        check(isinstance(f, dict) and set(f) >= {"share", "local_rate"},
              "%s: no fleet object: %s" % (d.node, o))
        check(0.05 - 1e-9 <= f["share"] <= 1 + 1e-9, "%s: share %s" % (d.node, f))
        check(abs(f["local_rate"] - o["rate"] * f["share"]) <= 1e-6 * max(1, o["rate"]),
              "%s: local_rate %s != rate %s x share" % (d.node, f, o["rate"]))
        # The host's bucket refills at local_rate (as the CLI reads it from the map).
        m = cli(d, "agent", "show", agent)
        check(abs(m["rate"] - f["local_rate"]) <= 0.01 * f["local_rate"] + 0.01,
              "%s: map rate %s, local_rate %s" % (d.node, m["rate"], f["local_rate"]))


def check_stream(s, r1, r2):
    """JetStream itself: the stream, the messages and their ids, the consumers."""
    n = nats_client(s)
    try:
        info = n.js("STREAM.INFO." + STREAM)
        check("error" not in info, "stream %s: %s" % (STREAM, info))
        check(set(info["config"]["subjects"]) == {"agentgate.ratings.>", "agentgate.policy.>"},
              "stream subjects: %s" % info["config"]["subjects"])
        m = n.stream_msg(STREAM, seq=r1["sequence"])
        check(m and m[0] == "agentgate.ratings.cv-alpha" and m[2].get("Nats-Msg-Id") == "cv-1",
              "message %d: %r" % (r1["sequence"], m))
        # The array of three at b: one batch message, ids made by b.
        lines = batch_lines(n.stream_msg(STREAM, seq=r2["sequence"]))
        check([(x["agent"], x["score"]) for x in lines] ==
              [("cv-alpha", 1), ("cv-beta", 4), ("org:team.cv-gamma", 2)] and
              all(re.fullmatch(r"b-[0-9a-f]{32}", x["id"]) for x in lines) and
              lines[2].get("user") == "u2", "message %d (b's batch): %r" % (r2["sequence"], lines))
        for node in ("a", "b", "c"):
            ci = n.js("CONSUMER.INFO.%s.agentgate-%s" % (STREAM, node))
            check("error" not in ci and ci["config"].get("durable_name") == "agentgate-" + node,
                  "consumer agentgate-%s: %s" % (node, ci))
        kv = lease_bucket(n)
        check(kv["config"]["max_age"] > 0, "lease bucket without an age limit: %s" % kv["config"])
    finally:
        n.close()


@case("3 hosts, 1 nats-server: ratings with and without ids, arrays, NDJSON, "
      "concurrent posts: identical rate/ratings/mean/last time everywhere; fleet "
      "share and local_rate (= the map's rate); stream, msg ids, consumers in JS")
def t_converge(phase1, standalone):
    s, hosts = phase1
    a, b, c = hosts
    r = a.api.get("/readyz")
    check(r.status == 200 and r.json() == {"status": "ready"}, "/readyz: %d %s" % (r.status,
                                                                                   r.text))
    # Validation exactly as standalone: same status and body, nothing published.
    seq0 = stream_last_seq(s)
    for ctype, body in INVALID:
        want = req(standalone, "POST", "/v1/ratings", body, ctype)
        got = req(b, "POST", "/v1/ratings", body, ctype)
        check(want.status == 400 and (got.status, got.text) == (want.status, want.text),
              "invalid %r: fleet %s, standalone %s" % (body, (got.status, got.text),
                                                       (want.status, want.text)))
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
    check(r3.get("applied") == 4 and r3["sequence"] >= r2["sequence"] + 1, "ndjson: %s" % r3)
    # Concurrent posts to every host (no clamping: start at 1000).
    r = a.api.put("/v1/agents/cv-delta", {"rate": 1000})
    check(r.status == 201, "PUT cv-delta: %d %s" % (r.status, r.text))
    rnd = random.Random(7)
    scores = [rnd.choice((1, 2, 3, 4, 5)) for _ in range(45)]
    post_concurrently(hosts, "cv-delta", scores)
    expect = {
        "cv-alpha": {"rate": expected_rate(100, [5, 1, 4]), "ratings": 3,
                     "mean_score": mean([5, 1, 4])},
        "cv-beta": {"rate": expected_rate(100, [4, 5, 2]), "ratings": 3,
                    "mean_score": mean([4, 5, 2])},
        "org:team.cv-gamma": {"rate": expected_rate(100, [2, 3]), "ratings": 2,
                              "mean_score": mean([2, 3])},
        "cv-delta": {"rate": 1000 + 10 * sum(x - 3 for x in scores), "ratings": len(scores)},
    }
    view = converge(s, hosts, list(expect), expect)
    diag("converged: %s" % json.dumps(view, sort_keys=True))
    # mean of cv-delta equal everywhere and right to 1e-9.
    dm = [x.api.agent("cv-delta")["mean_score"] for x in hosts]
    check(abs(dm[0] - mean(scores)) < 1e-9, "cv-delta mean %s, want %s" % (dm, mean(scores)))
    check_fleet_objects(hosts, "cv-alpha")
    # Every host applied up to the same stream sequence, none lagging.
    seqs = wait_for(lambda: all_equal(hosts, "agentgate_fleet_applied_sequence"), CONVERGE,
                    what="fleet_applied_sequence equal on all hosts")
    check(list(seqs.values())[0] >= r3["sequence"], "applied sequence %s < %d" %
          (seqs, r3["sequence"]))
    lag = wait_for(lambda: (lambda m: all(v == 0 for v in m.values()) and m)(
        metric_all(hosts, "agentgate_fleet_stream_lag")), CONVERGE, what="fleet_stream_lag 0")
    diag("applied sequence %s, lag %s" % (seqs, lag))
    check_stream(s, r1, r2)


@case("one rating id at two or three hosts (also at once): applied once, the other "
      "answers count it as a duplicate")
def t_dedup(phase1):
    s, hosts = phase1
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
    converge(s, hosts, ["dd-one", "dd-two"], {
        "dd-one": {"rate": 140.0, "ratings": 2, "mean_score": 5.0},
        "dd-two": {"rate": 120.0, "ratings": 1, "mean_score": 5.0}})
    # Nothing arrives later.
    time.sleep(1.5)
    converge(s, hosts, ["dd-one", "dd-two"], {"dd-one": {"ratings": 2}, "dd-two": {"ratings": 1}},
             timeout=1)


def stream_count_since(s, seq0):
    return stream_last_seq(s) - seq0


@case("batch messages: 1000 ratings with ids in at most 4 messages of 256, applied "
      "everywhere; the same request again all duplicates (JetStream), half of it in "
      "another grouping half duplicates (the ids); a host's consumer without the "
      "description of a reader turns every publisher to a message per rating and "
      "back; invalid batch messages dead-lettered whole; single ratings arriving "
      "together at one host go out together, each answered as alone")
def t_batches(phase1):
    s, hosts = phase1
    a, b, c = hosts
    check(a.api.put("/v1/agents/bt-one", {"rate": 5000}).status == 201, "PUT bt-one")
    check(a.api.put("/v1/agents/bt-two", {"rate": 5000}).status == 201, "PUT bt-two")
    rnd = random.Random(11)
    items = [{"id": "bt-%d" % i, "agent": ("bt-one", "bt-two")[i % 2],
              "score": rnd.randint(1, 5), "user": "u%d" % i} for i in range(1000)]
    seq0 = stream_last_seq(s)
    r = post(a, items)
    check(r["applied"] == 1000 and r["duplicates"] == 0, "1000 at a: %s" % r)
    msgs = stream_count_since(s, seq0)
    check(msgs == 4, "1000 ratings took %d stream messages, want 4 (256 a message)" % msgs)
    n = nats_client(s)
    try:
        got = []
        for q in range(seq0 + 1, seq0 + msgs + 1):
            got += batch_lines(n.stream_msg(STREAM, seq=q))
    finally:
        n.close()
    check([x["id"] for x in got] == [x["id"] for x in items] and
          all(g["score"] == w["score"] and g["user"] == w["user"] for g, w in zip(got, items)),
          "the batch messages do not hold the 1000 ratings in order")
    scores = {ag: [x["score"] for x in items if x["agent"] == ag] for ag in ("bt-one", "bt-two")}
    want = {ag: {"rate": expected_rate(5000, sc, r_max=10000.0), "ratings": 500,
                 "mean_score": mean(sc)} for ag, sc in scores.items()}
    converge(s, hosts, list(want), want)
    # The same request again, at another host: JetStream has the messages.
    seq1 = stream_last_seq(s)
    r = post(b, items)
    check(r["applied"] == 0 and r["duplicates"] == 1000, "the same 1000 at b: %s" % r)
    check(stream_last_seq(s) == seq1, "a repeated batch reached the stream")
    # Half of them in another grouping with 500 new ones: the ids catch the half.
    more = [{"id": "bt-n%d" % i, "agent": "bt-one", "score": 3} for i in range(500)]
    r = post(c, items[::2] + more)
    check(r["applied"] == 500 and r["duplicates"] == 500, "500 old and 500 new at c: %s" % r)
    want["bt-one"]["ratings"] = 1000
    converge(s, hosts, list(want), {ag: {"ratings": w["ratings"]} for ag, w in want.items()})
    # Single ratings that arrive together at one host go out together: 8
    # posted while the server is paused (the first one's publication waits,
    # the 7 others queue behind it) are 2 messages; one of them repeats an
    # id (bt-5) and is answered as a duplicate, the others as applied.
    seq1 = stream_last_seq(s)
    answers, errors = {}, []

    def single(k):
        rid = "bt-5" if k == 7 else "bt-s%d" % k
        try:
            answers[rid] = post(a, {"id": rid, "agent": "bt-two", "score": 3})
        except (Fail, OSError, ValueError) as e:
            errors.append("%s: %s" % (rid, e))
    os.kill(s.proc.pid, signal.SIGSTOP)
    try:
        ths = [threading.Thread(target=single, args=(k,)) for k in range(8)]
        for t in ths:
            t.start()
        time.sleep(0.6)
    finally:
        os.kill(s.proc.pid, signal.SIGCONT)
    for t in ths:
        t.join()
    check(not errors, "singles together: %s" % errors)
    check(all(answers["bt-s%d" % k]["applied"] == 1 for k in range(7)) and
          answers["bt-5"]["duplicates"] == 1 and answers["bt-5"]["applied"] == 0,
          "singles together, answers: %s" % answers)
    check(stream_last_seq(s) - seq1 == 2, "8 singles together took %d messages, want 2" %
          (stream_last_seq(s) - seq1))
    check(len({answers["bt-s%d" % k]["sequence"] for k in range(7)} |
              {answers["bt-5"]["sequence"]}) <= 2, "sequences: %s" % answers)
    want["bt-two"]["ratings"] = 507
    converge(s, hosts, ["bt-two"], {"bt-two": {"ratings": 507}})
    # An older host: a durable consumer whose description does not say it
    # reads batches. Every publisher goes back to a message per rating.
    n = nats_client(s)
    try:
        cfg = {"durable_name": "agentgate-bt-old", "deliver_policy": "new",
               "ack_policy": "all"}
        ans = n.js("CONSUMER.DURABLE.CREATE.%s.agentgate-bt-old" % STREAM,
                   {"stream_name": STREAM, "config": cfg})
        check("error" not in ans, "older host's consumer: %s" % ans)
        try:
            batches_on(hosts, 0)
            seq2 = stream_last_seq(s)
            r = post(a, [{"id": "bt-o%d" % i, "agent": "bt-two", "score": 3} for i in range(20)])
            check(r["applied"] == 20 and stream_count_since(s, seq2) == 20,
                  "20 ratings with an older host: %s, %d messages" %
                  (r, stream_count_since(s, seq2)))
            m = n.stream_msg(STREAM, seq=seq2 + 1)
            check(m and m[0] == subject_of("bt-two") and m[2].get("Nats-Msg-Id") == "bt-o0",
                  "with an older host, not a message per rating: %r" % (m,))
        finally:
            n.js("CONSUMER.DELETE.%s.agentgate-bt-old" % STREAM)
        batches_on(hosts, 1)
        # Invalid batch messages from another publisher: dead-lettered whole,
        # on every host, nothing of them applied.
        dl0 = metric_all(hosts, "agentgate_fleet_dead_letters_total")
        sid = n.sub("agentgate.ratings.dlq")
        n.flush()
        bad = [b'{"id":"bt-x1","agent":"bt-two","score":5}\n{"id":"bt-x2","agent":"bt-two",'
               b'"score":9}\n',
               b'{"id":"bt-x3","agent":"bt-two","score":5}\n{"agent":"bt-two","score":5}\n',
               b'{"id":"bt-x4","agent":"bt-two","score":5}\n']
        seqs = {}
        for i, data in enumerate(bad):
            ack = n.js_publish(BATCH_SUBJECT, data, headers={"Nats-Msg-Id": "bt-bad-%d" % i})
            check("error" not in ack, "raw publish: %s" % ack)
            seqs[ack["seq"]] = data
        got = collect_dead_letters(n, sid, seqs)
        reasons = {q: {m.headers.get("Agentgate-Reason") for m in got.get(q, [])} for q in seqs}
        diag("batch dead letters: %s" % reasons)
        want_reason = ["line 2: score", "line 2: id", "a batch holds 2 to"]
        for (q, data), w in zip(seqs.items(), want_reason):
            check(len(reasons[q]) == 1 and list(reasons[q])[0].startswith(w),
                  "message %d: reasons %s, want %r" % (q, reasons[q], w))
        wait_for(lambda: (lambda m: all(m[k] >= dl0[k] + 3 for k in m) and m)(
            metric_all(hosts, "agentgate_fleet_dead_letters_total")), CONVERGE,
            what="3 more dead letters on every host (from %s)" % dl0)
        want["bt-two"]["ratings"] = 527
        converge(s, hosts, list(want), {ag: {"ratings": w["ratings"]} for ag, w in want.items()})
    finally:
        n.close()


@case("--nats-batch 1: a message per rating although every host reads batches; "
      "--nats-batch 0 and 4097 refused (exit 2, naming it)")
def t_batch_option(env, own):
    binary = env.bin(DAEMON)
    pin, state = env.pin_root("nb-x"), env.path("nb-x")
    for bad in ("0", "4097", "x"):
        argv = daemon_argv(binary, pin, state, "127.0.0.1:1", nats=["nats://127.0.0.1:1"],
                           extra=["--nats-batch", bad])
        r = sh(argv, timeout=10)
        check(r.returncode == 2 and "nats-batch" in r.stderr,
              "--nats-batch %s: exit %d, %s" % (bad, r.returncode, r.stderr[-200:]))
    s = own.server("nbatch")
    d = own.daemon("n1", [s.url], "--nats-batch", "1")
    start(d)
    time.sleep(2 * 2.5)   # two checks of the stream's consumers, had batches been allowed
    check(metric(d, "agentgate_fleet_rating_batches") == 0,
          "--nats-batch 1 and batches on: %s" % metric(d, "agentgate_fleet_rating_batches"))
    seq0 = stream_last_seq(s)
    r = post(d, [{"id": "nb-%d" % i, "agent": "nb-x", "score": 4} for i in range(10)])
    check(r["applied"] == 10 and stream_last_seq(s) - seq0 == 10,
          "10 ratings with --nats-batch 1: %s, %d messages" % (r, stream_last_seq(s) - seq0))
    stop(d)


@case("a delivery that skips a message the stream holds (another puller took it from "
      "host c's consumer while c was stopped): c reads it again instead of leaving it out; "
      "a message deleted from the stream while c was down: c leaves it out with a warning")
def t_delivery_gap(own):
    # Hosts of its own: the message it deletes would differ between hosts
    # that applied it before and a host replaying the stream later.
    s = own.server("gap")
    a, c = hosts = [own.daemon(x, [s.url], "--nats-timeout", "1500ms") for x in ("a", "c")]
    start(*hosts)
    batches_on(hosts, 1)
    check(a.api.put("/v1/agents/gap-x", {"rate": 1000}).status == 201, "PUT gap-x")
    converge(s, hosts, ["gap-x"], {"gap-x": {"rate": 1000.0}})
    n = nats_client(s)
    try:
        inbox = "_INBOX.gap.%s" % os.urandom(4).hex()
        sid = n.sub(inbox)
        n.flush()
        os.kill(c.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(1.0)   # c's own pull request (250 ms) expires
            n.pub("$JS.API.CONSUMER.MSG.NEXT.%s.agentgate-c" % STREAM,
                  json.dumps({"batch": 1, "expires": 10 * 10**9}).encode(), reply=inbox)
            n.flush()
            r1 = post(a, {"id": "gap-1", "agent": "gap-x", "score": 5})
            m = n.next_msg(5, sid=sid)
            check(m.subject == "agentgate.ratings.gap-x" and b'"gap-1"' in m.data,
                  "the other puller got %r, not gap-1" % (m,))
            r2 = post(a, {"id": "gap-2", "agent": "gap-x", "score": 1})
        finally:
            os.kill(c.proc.pid, signal.SIGCONT)
        diag("gap-1 at %d taken from c's consumer, gap-2 at %d" % (r1["sequence"],
                                                                  r2["sequence"]))
        converge(s, hosts, ["gap-x"], {"gap-x": {"rate": 1000.0, "ratings": 2}})
        check("the delivery skipped stream sequences %d to %d" % (r1["sequence"],
                                                                  r1["sequence"]) in c.log_tail(20000),
              "c's log does not say it read the skipped message again")
        # Deleted from the stream while c is down: left out, said so.
        stop(c)
        r3 = post(a, {"id": "gap-3", "agent": "gap-x", "score": 5})
        post(a, {"id": "gap-4", "agent": "gap-x", "score": 4})
        ans = n.js("STREAM.MSG.DELETE." + STREAM, {"seq": r3["sequence"]})
        check(ans.get("success"), "deleting sequence %d: %s" % (r3["sequence"], ans))
        start(c)
        converge(s, [c], ["gap-x"], {"gap-x": {"rate": 1010.0, "ratings": 3}})
        check("stream sequences %d to %d are gone" % (r3["sequence"], r3["sequence"]) in
              c.log_tail(20000), "c's log does not say sequence %d is gone" % r3["sequence"])
    finally:
        n.close()


class Posters:
    """Threads posting ratings with ids (k-<tag>-N) for k-one or k-two until
    stopped; acked: id -> (agent, score) of each one applied."""

    def __init__(self, hosts):
        self.acked, self.errors = {}, []
        self.stop_ev, self.lock = threading.Event(), threading.Lock()
        self.threads = [threading.Thread(target=self.post, args=(d, d.node)) for d in hosts]

    def post(self, d, tag):
        i = 0
        rnd = random.Random(tag)
        while not self.stop_ev.is_set():
            i += 1
            rid = "k-%s-%d" % (tag, i)
            ag, sc = rnd.choice(("k-one", "k-two")), rnd.randint(1, 5)
            try:
                r = post(d, {"id": rid, "agent": ag, "score": sc})
                check(r["applied"] == 1, "%s: %s" % (rid, r))
                with self.lock:
                    self.acked[rid] = (ag, sc)
            except (Fail, OSError, ValueError) as e:
                self.errors.append("%s: %s" % (rid, e))
                return

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join()


@case("kill -9 of a host while the others take ratings, restart: catches up, same "
      "rates and counts (nothing re-applied), dedup ids kept")
def t_kill9(phase1):
    s, hosts = phase1
    a, b, c = hosts
    for ag in ("k-one", "k-two"):
        r = a.api.put("/v1/agents/" + ag, {"rate": 2000})
        check(r.status == 201, "PUT %s: %d %s" % (ag, r.status, r.text))
    post(c, {"id": "k-pre", "agent": "k-one", "score": 5})
    converge(s, hosts, ["k-one"], {"k-one": {"ratings": 1}})
    p = Posters([a, b])
    p.start()
    try:
        time.sleep(1.5)
        c.kill9()
        n_kill = len(p.acked)
        time.sleep(0.5)
        # While c is down: one rating of its own agent, amid the others (c
        # catches up on it inside a batch of later messages).
        post(a, {"id": "k-three-1", "agent": "k-three", "score": 5})
        time.sleep(1)
        start(c)
        time.sleep(1.5)
    finally:
        p.stop()
    check(not p.errors, "posting: %s" % p.errors[:5])
    diag("%d ratings acknowledged, %d of them before the kill" % (len(p.acked), n_kill))
    check(len(p.acked) > n_kill > 0, "no ratings around the kill")
    exp = {}
    for ag in ("k-one", "k-two"):
        sc = [v[1] for v in p.acked.values() if v[0] == ag]
        if ag == "k-one":
            sc = sc + [5]
        exp[ag] = {"rate": 2000 + 10 * sum(x - 3 for x in sc), "ratings": len(sc)}
    exp["k-three"] = {"rate": 120.0, "ratings": 1}
    converge(s, hosts, list(exp), exp)
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
    converge(s, hosts, list(exp), exp)


def rules_of(d, agent):
    r = d.api.get("/v1/rules")
    check(r.status == 200, "%s GET /v1/rules: %d %s" % (d.node, r.status, r.text))
    return sorted((x["prefix"], x.get("port") or 0, x["agent"]) for x in r.json()
                  if x["agent"] == agent)


def all_agents(d):
    names, after = {}, None
    while True:
        page = get_json(d, "/v1/agents?limit=500" + ("&after=" + after if after else ""))
        for o in page["agents"]:
            names[o["agent"]] = (o["rate"], o["ratings"], o["pinned"], o["alpha"], o["r_min"],
                                 o["r_max"], o["burst"])
        after = page.get("next")
        if not after:
            return names


POLICY = ("rate", "alpha", "r_min", "r_max", "burst", "pinned", "ratings")


def operator_policy(s, hosts):
    """op-1's policy set at a, a rating at b, a pin at c: everywhere."""
    a, b, c = hosts
    r = a.api.put("/v1/agents/op-1", {"rate": 500, "alpha": 5, "r_min": 100, "r_max": 800,
                                      "burst": 250})
    check(r.status == 201, "PUT op-1 at a: %d %s" % (r.status, r.text))
    check(a.api.agent("op-1")["rate"] == 500, "op-1 not applied at a when answered")
    converge(s, hosts, ["op-1"], {"op-1": {"rate": 500, "alpha": 5, "r_min": 100, "r_max": 800,
                                           "burst": 250, "pinned": False}}, fields=POLICY)
    post(b, {"agent": "op-1", "score": 5})
    converge(s, hosts, ["op-1"], {"op-1": {"rate": 510, "ratings": 1}}, fields=POLICY)
    r = c.api.put("/v1/agents/op-1", {"rate": 300, "pinned": True})
    check(r.status == 200, "PUT op-1 pinned at c: %d %s" % (r.status, r.text))
    post(a, {"agent": "op-1", "score": 5})
    converge(s, hosts, ["op-1"], {"op-1": {"rate": 300, "pinned": True, "ratings": 2, "alpha": 5,
                                           "r_min": 100, "r_max": 800}}, fields=POLICY)


def operator_rules(hosts):
    """Rules added at a and b, one deleted at c: everywhere, in the maps too.
    The rules of op-1 left."""
    a, b, c = hosts
    r = a.api.post("/v1/rules", {"prefix": "10.77.0.0/16", "port": 443, "agent": "op-1"})
    check(r.status == 201, "POST rule at a: %d %s" % (r.status, r.text))
    r = b.api.post("/v1/rules", {"prefix": "2001:db8:77::/48", "agent": "op-1"})
    check(r.status == 201, "POST rule at b: %d %s" % (r.status, r.text))
    both = [("10.77.0.0/16", 443, "op-1"), ("2001:db8:77::/48", 0, "op-1")]
    wait_for(lambda: all(rules_of(d, "op-1") == both for d in hosts), CONVERGE,
             what="both rules on every host")
    r = c.api.delete("/v1/rules?prefix=10.77.0.0/16&port=443")
    check(r.status in (200, 204), "DELETE rule at c: %d %s" % (r.status, r.text))
    wait_for(lambda: all(rules_of(d, "op-1") == both[1:] for d in hosts), CONVERGE,
             what="rule deleted on every host")
    for d in hosts:     # in the maps too
        rl = [(x["prefix"], x.get("port")) for x in cli(d, "rule", "list")
              if x["agent"] == "op-1"]
        check(rl == [("2001:db8:77::/48", None)] or rl == [("2001:db8:77::/48", 0)],
              "%s: rules of op-1 in the maps: %s" % (d.node, rl))
    return both[1:]


def operator_delete(s, hosts):
    """An agent with a rule, deleted at another host: gone with its rule."""
    a, b, c = hosts
    r = b.api.put("/v1/agents/op-2", {"rate": 50})
    check(r.status == 201, "PUT op-2 at b: %d %s" % (r.status, r.text))
    r = b.api.post("/v1/rules", {"prefix": "10.78.0.0/24", "agent": "op-2"})
    check(r.status == 201, "rule of op-2: %d %s" % (r.status, r.text))
    converge(s, hosts, ["op-2"], {"op-2": {"rate": 50}}, fields=POLICY)
    r = a.api.delete("/v1/agents/op-2")
    check(r.status in (200, 204), "DELETE op-2 at a: %d %s" % (r.status, r.text))
    check(a.api.agent("op-2") is None, "op-2 still at a when answered")
    converge(s, hosts, ["op-2"], {"op-2": None}, fields=POLICY)
    wait_for(lambda: all(rules_of(d, "op-2") == [] for d in hosts), CONVERGE,
             what="op-2's rule gone everywhere")


def operator_local(s, a):
    """reset, drain and consume stay local: nothing enters the stream."""
    time.sleep(0.5)
    before = stream_last_seq(s)
    for path, body in (("/v1/agents/op-1/drain", {"tokens": 20}), ("/v1/agents/op-1/reset", None),
                       ("/v1/agents/op-1/consume", {"tokens": 1})):
        r = a.api.post(path, body)
        check(r.status in (200, 429), "POST %s at a: %d %s" % (path, r.status, r.text))
    time.sleep(1)
    after = stream_last_seq(s)
    check(after == before, "reset/drain/consume published %d stream messages" % (after - before))


@case("PUT policy/pin, rules add/delete, DELETE agent, POST /bucket replicated; "
      "reset/drain/consume local; a 4th host with empty state gets everything")
def t_operator(phase1, own):
    s, hosts = phase1
    a, b, c = hosts
    operator_policy(s, hosts)
    left = operator_rules(hosts)
    operator_delete(s, hosts)
    # The tutorial's POST /bucket/ID.
    r = c.api.post("/bucket/op-tb", {"capacity": 50, "refill_rate": 5, "initial_tokens": 10})
    check(r.status in (200, 201), "POST /bucket/op-tb at c: %d %s" % (r.status, r.text))
    converge(s, hosts, ["op-tb"], {"op-tb": {"rate": 5, "burst": 50}}, fields=POLICY)
    for d in hosts:
        r = d.api.get("/bucket/op-tb")
        check(r.status == 200 and r.json()["capacity"] == 50, "%s GET /bucket/op-tb: %d %s" %
              (d.node, r.status, r.text))
    operator_local(s, a)
    # Agents with ratings (a mean score) for the fourth host to get.
    post(b, [{"agent": "op-r1", "score": 5}, {"agent": "op-r2", "score": 2},
             {"agent": "op-r2", "score": 4}])
    converge(s, hosts, ["op-r1", "op-r2"], {"op-r1": {"ratings": 1}, "op-r2": {"ratings": 2}})
    # A fourth host with an empty state dir (and empty maps) gets everything.
    d = own.daemon("d", [s.url], "--nats-timeout", "1500ms")
    start(d)
    want = all_agents(a)
    check("op-1" in want and "op-2" not in want and "op-r1" in want, "agents at a: %s" %
          sorted(want))
    wait_for(lambda: all_agents(d) == want, CONVERGE, what="d has every agent as a has")
    wait_for(lambda: get_json(d, "/v1/rules") and
             sorted(map(json.dumps, get_json(d, "/v1/rules"))) ==
             sorted(map(json.dumps, get_json(a, "/v1/rules"))), CONVERGE,
             what="d has every rule as a has")
    check(rules_of(d, "op-1") == left and rules_of(d, "op-2") == [],
          "d's rules: %s" % get_json(d, "/v1/rules"))
    converge(s, [a, d], ["op-1", "op-r1", "op-r2"], fields=POLICY + ("mean_score",), timeout=5)
    rl = [(x["prefix"], x["agent"]) for x in cli(d, "rule", "list")]
    check(("2001:db8:77::/48", "op-1") in rl, "d's maps lack op-1's rule: %s" % rl)


@case("the CLI beside fleet daemons: agent set/pin, rule add, config set, agent del at one "
      "host reach every host's API and maps; audited; explain at each host names who "
      "pinned it and the fleet share")
def t_operator_cli(phase1):
    """The CLI beside a fleet daemon: its changes go through the daemon, into the log."""
    s, hosts = phase1
    a, b, c = hosts
    pol = ("rate", "pinned", "ratings")
    out = cli(a, "agent", "set", "opc-1", "rate", "250", "pin")
    check(out["rate"] == 250 and out["pinned"] is True, "agent set at a: %s" % out)
    converge(s, hosts, ["opc-1"], {"opc-1": {"rate": 250, "pinned": True}}, fields=pol)
    post(b, {"agent": "opc-1", "score": 1})
    converge(s, hosts, ["opc-1"], {"opc-1": {"rate": 250, "pinned": True, "ratings": 1}},
             fields=pol)
    cli(b, "rule", "add", "10.79.0.0/16", "agent", "opc-1")
    wait_for(lambda: all(rules_of(d, "opc-1") == [("10.79.0.0/16", 0, "opc-1")] for d in hosts),
             CONVERGE, what="the CLI's rule on every host")
    for d in hosts:     # enforced where it is reported
        rl = [(x["prefix"], x["agent"]) for x in cli(d, "rule", "list")]
        check(("10.79.0.0/16", "opc-1") in rl, "%s: the rule is not in the maps: %s" %
              (d.node, rl))
    cli(c, "config", "set", "dry-run", "on")
    wait_for(lambda: all(cli(d, "config", "show")["dry_run"] is True for d in hosts),
             CONVERGE, what="dry-run on at every host")
    cli(c, "config", "set", "dry-run", "off")
    wait_for(lambda: all(cli(d, "config", "show")["dry_run"] is False for d in hosts),
             CONVERGE, what="dry-run off at every host")
    # explain, asked at any host: who pinned it, the fleet's share.
    for d in hosts:
        x = cli(d, "agent", "explain", "opc-1")
        check(x["policy"]["pinned_by"]["subject"] == "local:root" and
              0 < x["fleet"]["share"] <= 1 and x["answered_by"] == "agentgated",
              "%s: explain: %s" % (d.node, json.dumps(x)[:600]))
    cli(a, "agent", "del", "opc-1")
    converge(s, hosts, ["opc-1"], {"opc-1": None}, fields=pol)
    for d in hosts:
        with open(os.path.join(d.state, "audit.log")) as f:
            audit = f.read()
        check('"subject":"local:root","action":"config.set"' in audit,
              "%s: config.set by local:root not audited: %s" % (d.node, audit[-400:]))


@case("parents through the log: a parent made at one host (API), another with the CLI at a "
      "second, an agent's parent and quota set at a third: every host's API and maps have them; "
      "a parent with a child is refused everywhere, deleted once the child moved")
def t_operator_parents(phase1):
    s, hosts = phase1
    a, b, c = hosts

    def parent_everywhere(name, *exprs):
        def ok():
            for d in hosts:
                r = d.api.get("/v1/parents/" + name)
                if r.status != 200 or not all(eval(x, {}, {"d": r.json()}) for x in exprs):
                    return False
            return True
        wait_for(ok, CONVERGE, what="parent %s with %s on every host" % (name, exprs))

    r = a.api.put("/v1/parents/fp-org", {"rate": 300, "burst": 300,
                                         "quota": {"limit": 100000, "window": "day"}})
    check(r.status == 201, "PUT fp-org at a: %d %s" % (r.status, r.text))
    parent_everywhere("fp-org", 'd["rate"] == 300', 'd["quota"]["limit"] == 100000')
    cli(b, "parent", "set", "fp-team", "rate", "100", "burst", "100", "parent", "fp-org")
    parent_everywhere("fp-team", 'd["parent"] == "fp-org"')
    r = c.api.put("/v1/agents/fp-1", {"rate": 10, "parent": "fp-team",
                                      "quota": {"limit": 500, "window": "hour"}})
    check(r.status == 201, "PUT fp-1 at c: %d %s" % (r.status, r.text))
    parent_everywhere("fp-team", 'd["children"] == ["fp-1"]')
    for d in hosts:     # in the maps, where the datapath reads them
        x = cli(d, "agent", "show", "fp-1")
        check(x["parent"] == "fp-team" and x["quota"]["limit"] == 500,
              "%s: fp-1 in the maps: %s" % (d.node, x))
    r = b.api.delete("/v1/parents/fp-team")
    check(r.status == 409, "DELETE fp-team with a child at b: %d %s" % (r.status, r.text))
    r = a.api.put("/v1/agents/fp-1", {"parent": None})
    check(r.status == 200, "PUT fp-1 parent null at a: %d %s" % (r.status, r.text))
    parent_everywhere("fp-team", 'd["children"] == []')
    r = b.api.delete("/v1/parents/fp-team")
    check(r.status == 200, "DELETE fp-team at b: %d %s" % (r.status, r.text))
    wait_for(lambda: all(d.api.get("/v1/parents/fp-team").status == 404 for d in hosts),
             CONVERGE, what="fp-team gone from every host")
    parent_everywhere("fp-org", 'd["children"] == []')


@case("quotas across the fleet: an agent's quota of 100 an hour and a parent's of 150, used "
      "at two hosts: what one host used is taken off the other's limit within two intervals, "
      "so the hosts together admit the quota, not a quota each; GET shows the fleet's limit "
      "and use at every host")
def t_operator_quotas(phase1):
    s, hosts = phase1
    a, b, c = hosts
    r = a.api.put("/v1/agents/fq-1", {"rate": 1000, "burst": 1000, "pinned": True,
                                      "quota": {"limit": 100, "window": "hour"}})
    check(r.status == 201, "PUT fq-1 at a: %d %s" % (r.status, r.text))
    wait_for(lambda: all(d.api.agent("fq-1") for d in hosts), CONVERGE,
             what="fq-1 on every host")
    # 60 used at a: b may use 40 more, not 100.
    r = a.api.post("/v1/agents/fq-1/consume", {"tokens": 60})
    check(r.status == 200, "consume 60 at a: %d %s" % (r.status, r.text))
    wait_for(lambda: all(d.api.agent("fq-1")["quota"]["used"] == 60 for d in hosts), 10,
             what="every host counting a's 60")
    r = b.api.post("/v1/agents/fq-1/consume", {"tokens": 41})
    check(r.status == 429, "41 more at b: %d %s" % (r.status, r.text))
    r = b.api.post("/v1/agents/fq-1/consume", {"tokens": 40})
    check(r.status == 200, "40 more at b: %d %s" % (r.status, r.text))
    wait_for(lambda: all(d.api.agent("fq-1")["quota"]["used"] == 100 for d in hosts), 10,
             what="every host counting 100")
    for d in hosts:
        r = d.api.post("/v1/agents/fq-1/consume", {"tokens": 1})
        check(r.status == 429, "%s: one more after the fleet used 100: %d %s" %
              (d.node, r.status, r.text))
        q = d.api.agent("fq-1")["quota"]
        check(q["limit"] == 100 and q["used"] == 100 and q["remaining"] == 0,
              "%s: quota %s" % (d.node, q))
    # A parent's quota, used through two children at two hosts.
    r = a.api.put("/v1/parents/fq-p", {"rate": 1000, "burst": 1000,
                                       "quota": {"limit": 150, "window": "day"}})
    check(r.status == 201, "PUT fq-p: %d %s" % (r.status, r.text))
    for name in ("fq-c1", "fq-c2"):
        r = a.api.put("/v1/agents/" + name, {"rate": 1000, "burst": 1000, "pinned": True,
                                             "parent": "fq-p"})
        check(r.status == 201, "PUT %s: %d %s" % (name, r.status, r.text))
    wait_for(lambda: all(d.api.get("/v1/parents/fq-p").json()["children"] == ["fq-c1", "fq-c2"]
                         for d in hosts), CONVERGE, what="fq-p's children everywhere")
    r = b.api.post("/v1/agents/fq-c1/consume", {"tokens": 100})
    check(r.status == 200, "100 through fq-c1 at b: %d %s" % (r.status, r.text))
    wait_for(lambda: all(d.api.get("/v1/parents/fq-p").json()["quota"]["used"] == 100
                         for d in hosts), 10, what="every host counting fq-p's 100")
    r = c.api.post("/v1/agents/fq-c2/consume", {"tokens": 51})
    check(r.status == 429, "51 through fq-c2 at c: %d %s" % (r.status, r.text))
    r = c.api.post("/v1/agents/fq-c2/consume", {"tokens": 50})
    check(r.status == 200, "50 through fq-c2 at c: %d %s" % (r.status, r.text))


def collect_dead_letters(n, sid, seqs):
    """The dead letters of the stream sequences seqs: {Agentgate-Seq: [Msg]}."""
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
    return got


@case("raw bad JSON / bad score / unknown field on agentgate.ratings.x: "
      "dead letter with Agentgate-Reason, -Seq and the body; hosts go on; "
      "dead_letters_total up; rates unchanged; no loop")
def t_dead_letters(phase1):
    s, hosts = phase1
    a, b, c = hosts
    # Other agents, rated, whose rates the dead letters must not change.
    watch = ["dl-w1", "dl-w2", "dl-w3", "dl-w4"]
    post(c, [{"agent": w, "score": sc} for w, sc in zip(watch, (5, 1, 4, 2))])
    post(a, {"agent": "dl-x", "score": 5})
    converge(s, hosts, ["dl-x"] + watch, {"dl-x": {"rate": 120.0, "ratings": 1},
                                          **{w: {"ratings": 1} for w in watch}})
    before_rates = converge(s, hosts, watch, timeout=5)
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
        got = collect_dead_letters(n, sid, seqs)
        for q, data in seqs.items():
            check(q in got, "no dead letter with Agentgate-Seq %d (%r)" % (q, data))
            for m in got[q]:
                check(m.headers.get("Agentgate-Reason"), "no Agentgate-Reason: %r" % m)
                check(m.data == data, "dead letter body %r, want %r" % (m.data, data))
        # The hosts go on: a valid rating after them reaches everyone.
        post(b, {"agent": "dl-x", "score": 5})
        converge(s, hosts, ["dl-x"], {"dl-x": {"rate": 140.0, "ratings": 2}})
        check(converge(s, hosts, watch, timeout=5) == before_rates, "other agents' rates changed")
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


@case("promtool check metrics on a fleet daemon; fleet_* families, types, values")
def t_promtool(phase1):
    s, hosts = phase1
    a = hosts[0]
    post(hosts[1], {"agent": "pm-1", "score": 4})
    converge(s, hosts, ["pm-1"], {"pm-1": {"ratings": 1}})
    m = a.metrics()
    if shutil.which("promtool"):
        out = promtool_check(m.text)
        check(out == "", "promtool check metrics: %s" % out)
    else:
        diag("promtool not found: only the families are checked")
    m.check('types["agentgate_fleet_connected"] == "gauge"',
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
            'all(0 <= v <= 1 for l, v in series("agentgate_fleet_demand_share"))')
    share = metric(a, "agentgate_fleet_demand_share", agent="pm-1")
    f = a.api.agent("pm-1")["fleet"]
    check(abs(share - f["share"]) < 0.02, "demand_share metric %s, agent's share %s" %
          (share, f["share"]))


def nats_down_answers(hosts):
    """With NATS down: ratings queued (202), validation as standalone,
    operator changes 503, local operations served."""
    a, b, c = hosts
    want = {"applied": 0, "duplicates": 0, "agents": []}
    r = post(a, {"id": "nd-1", "agent": "nd-x", "score": 5}, want=202)
    check({k: r.get(k) for k in want} == want and r.get("queued") == 1, "a: 202 body %s" % r)
    r = post(b, [{"agent": "nd-x", "score": 4}, {"agent": "nd-x", "score": 4},
                 {"agent": "nd-y", "score": 1}], want=202)
    check({k: r.get(k) for k in want} == want and r.get("queued") == 3, "b: 202 body %s" % r)
    # The same id at another host, and again at a: applied once in the end.
    r = c.api.post("/v1/ratings", {"id": "nd-1", "agent": "nd-x", "score": 5})
    check(r.status == 202, "nd-1 at c while down: %d %s" % (r.status, r.text))
    r = a.api.post("/v1/ratings", {"id": "nd-1", "agent": "nd-x", "score": 5})
    check(r.status in (200, 202), "nd-1 again at a while down: %d %s" % (r.status, r.text))
    # Validation as standalone.
    r = a.api.post("/v1/ratings", [{"agent": "nd-x", "score": 5}, {"agent": "nd-x", "score": 7}])
    check(r.status == 400 and r.json().get("errors", [{}])[0].get("index") == 1,
          "invalid batch while down: %d %s" % (r.status, r.text))
    # Operator changes need the stream: 503 unavailable.
    for d, method, path, body in (
            (a, "PUT", "/v1/agents/nd-new", {"rate": 10}),
            (b, "DELETE", "/v1/agents/nd-old", None),
            (c, "POST", "/v1/rules", {"prefix": "10.79.0.0/24", "agent": "nd-x"}),
            (a, "DELETE", "/v1/rules?prefix=2001:db8:7d::/48", None),
            (b, "POST", "/bucket/nd-tb", {"capacity": 5, "refill_rate": 1, "initial_tokens": 1})):
        r = req(d, method, path, body)
        o = r.json() if r.body else {}
        check(r.status == 503 and o.get("error") == "unavailable" and o.get("message"),
              "%s %s at %s while down: %d %s" % (method, path, d.node, r.status, r.text))
    # Local operations keep working.
    for path, body in (("/v1/agents/nd-x/reset", None), ("/v1/agents/nd-x/drain", {"tokens": 1}),
                       ("/v1/agents/nd-x/consume", {"tokens": 1})):
        r = a.api.post(path, body)
        check(r.status in (200, 429), "POST %s while down: %d %s" % (path, r.status, r.text))


def restart_while_down(b):
    """b killed and started again while NATS is down: it serves (degraded)
    without NATS, its outbox durable. What went wrong, or None."""
    b.kill9()
    b.start(wait=False)
    try:
        b.wait_ready(15, want=("degraded",))
        v = metric(b, "agentgate_fleet_outbox_depth")
        if not (v is not None and v >= 3):
            return "b's outbox depth after kill -9: %s" % v
    except Fail as e:
        return "b restarted while NATS is down: %s" % e
    return None


@case("NATS down: 202 queued, 503 unavailable for operator changes, /readyz "
      "degraded, outbox > 0 (durable across kill -9); back: applied exactly once, "
      "outbox 0, ready")
def t_nats_down(phase1):
    s, hosts = phase1
    a, b, c = hosts
    post(a, {"agent": "nd-x", "score": 3})
    # An agent and a rule to delete while NATS is down.
    r = a.api.put("/v1/agents/nd-old", {"rate": 10})
    check(r.status == 201, "PUT nd-old: %d %s" % (r.status, r.text))
    r = a.api.post("/v1/rules", {"prefix": "2001:db8:7d::/48", "agent": "nd-old"})
    check(r.status == 201, "POST rule of nd-old: %d %s" % (r.status, r.text))
    converge(s, hosts, ["nd-x", "nd-old"], {"nd-x": {"ratings": 1}, "nd-old": {"rate": 10}})
    s.stop()
    for d in hosts:
        d.wait_ready(CONVERGE, want=("degraded",))
        r = d.api.get("/readyz")
        o = r.json()
        check(r.status == 200 and o.get("status") == "degraded" and
              isinstance(o.get("reason"), str) and o["reason"],
              "%s /readyz: %d %s" % (d.node, r.status, r.text))
    check(all(v == 0 for v in metric_all(hosts, "agentgate_fleet_connected").values()),
          "fleet_connected not 0 while NATS is down")
    nats_down_answers(hosts)
    depth = metric_all(hosts, "agentgate_fleet_outbox_depth")
    check(depth["a"] >= 1 and depth["b"] >= 3 and depth["c"] >= 1, "outbox depth %s" % depth)
    check(a.api.agent("nd-x")["ratings"] == 1, "a applied a queued rating while down")
    # (Checked, then the case goes on.)
    error = restart_while_down(b)
    # NATS back, same store.
    s.start().wait_ready()
    for d in hosts:
        d.wait_ready(CONVERGE, want=("ready",))
    outboxes_empty(hosts, CONVERGE)
    check(all(v == 1 for v in metric_all(hosts, "agentgate_fleet_connected").values()),
          "fleet_connected not 1 after NATS returned")
    exp = {"nd-x": {"rate": expected_rate(100, [3, 5, 4, 4]), "ratings": 4,
                    "mean_score": mean([3, 5, 4, 4])},
           "nd-y": {"rate": 80.0, "ratings": 1}}
    converge(s, hosts, list(exp), exp)
    time.sleep(1.5)     # and nothing more arrives
    converge(s, hosts, list(exp), exp, timeout=1)
    # Operator changes work again.
    r = a.api.put("/v1/agents/nd-new", {"rate": 10})
    check(r.status == 201, "PUT after NATS returned: %d %s" % (r.status, r.text))
    converge(s, hosts, ["nd-new"], {"nd-new": {"rate": 10}})
    check(error is None, error)


@case("agent names odd as subjects/keys (dlq, dots at the edges, ':'): applied "
      "identically everywhere or refused with 400")
def t_odd_names(phase1):
    """Agent names valid for agentgate but odd as NATS subject tokens or KV keys."""
    s, hosts = phase1
    names = ["dlq", "v1.2", "x..y", ".lead", "trail.", "a:b:c", "...", "-"]
    ok, errors = [], []
    for i, nm in enumerate(names):
        d = hosts[i % 3]
        r = d.api.post("/v1/ratings", {"agent": nm, "score": 5})
        diag("rating for %r at %s: %d %s" % (nm, d.node, r.status, r.text[:200]))
        if r.status == 400:
            continue    # refused as a name: fine, as long as it is refused
        if r.status != 200:
            errors.append("%r at %s: %d %s (NATS is up)" % (nm, d.node, r.status, r.text))
            continue
        o = r.json()
        if o.get("applied") != 1 or [x.get("agent") for x in o.get("agents", [])] != [nm]:
            errors.append("%r at %s: 200 %s" % (nm, d.node, r.text))
        ok.append(nm)
    for nm in ok:
        try:
            converge(s, hosts, [nm], {nm: {"rate": 120.0, "ratings": 1}}, timeout=10)
        except Fail as e:
            errors.append("%r: %s" % (nm, e))
    try:
        outboxes_empty(hosts, 10)
    except Fail as e:
        errors.append(str(e))
    check(not errors, "; ".join(errors))


def cluster_stream_info(cl):
    """The stream and KV bucket replicated 3 times: the stream's leader."""
    n = Nats.connect("127.0.0.1", cl.nodes[0].port)
    try:
        info = wait_for(lambda: (lambda i: i.get("cluster", {}).get("leader") and i)(
            n.js("STREAM.INFO." + STREAM)), CONVERGE, what="a leader of the stream")
        check(info["config"]["num_replicas"] == 3,
              "stream replicas: %s" % info.get("config", info))
        kv = lease_bucket(n)
        check(kv["config"]["num_replicas"] == 3, "KV replicas: %s" % kv.get("config", kv))
        return info["cluster"]["leader"]
    finally:
        n.close()


def post_while(hosts, results, during, arrays=False):
    """Ratings with ids for cl-x at every host (about 20 a second each) while
    during() runs; results: id -> (score, status (-1: no answer), text).
    arrays: every other request is an array of three (a batch message)."""
    lock = threading.Lock()
    stop_ev = threading.Event()

    def poster(d):
        i = 0
        rnd = random.Random(d.node)
        while not stop_ev.is_set():
            i += 1
            rid = "cl-%s-%d" % (d.node, i)
            items = [{"id": rid + x, "agent": "cl-x", "score": rnd.randint(1, 5)}
                     for x in (("a", "b", "c") if arrays and i % 2 else ("",))]
            try:
                r = req(d, "POST", "/v1/ratings", items if len(items) > 1 else items[0],
                        timeout=60)
                st, text = r.status, r.text
            except OSError as e:
                st, text = -1, str(e)
            with lock:
                for x in items:
                    results[x["id"]] = (x["score"], st, text)
            # About 20 a second per host: 202s come back at once.
            time.sleep(0.1 if st not in (200, 202) else 0.05)
    ths = [threading.Thread(target=poster, args=(d,)) for d in hosts]
    for t in ths:
        t.start()
    try:
        during()
    finally:
        stop_ev.set()
        for t in ths:
            t.join()


def rating_ids(server, agent):
    """{rating id: how many times} of agent's ratings in the stream (single
    messages on its subject and lines of batch messages), and how many of
    them came in batch messages."""
    n = Nats.connect("127.0.0.1", server.port)
    try:
        ids, in_batches = {}, 0
        msgs = n.stream_read(STREAM, subject_of(agent))
        if n.stream_count(STREAM, BATCH_SUBJECT):
            msgs += n.stream_read(STREAM, BATCH_SUBJECT)
        for q, hdrs, data in msgs:
            for line in data.decode().splitlines():
                o = json.loads(line)
                if o.get("agent") == agent:
                    ids[o["id"]] = ids.get(o["id"], 0) + 1
                    in_batches += "\n" in data.decode().strip()
        return ids, in_batches
    finally:
        n.close()


@case("3-node NATS cluster, --nats-replicas 3: the stream leader killed under "
      "single ratings and arrays of three (batch messages); every 200/202 rating "
      "applied once on every host; in the stream once (200) or at least once (202)")
def t_cluster(own):
    cl = own.cluster(3, "c")
    hosts = [own.daemon("c" + x, cl.urls, "--nats-replicas", "3", "--nats-timeout", "2s")
             for x in "abc"]
    start(*hosts)
    batches_on(hosts, 1)
    leader = cluster_stream_info(cl)
    r = hosts[0].api.put("/v1/agents/cl-x", {"rate": 5000})
    check(r.status == 201, "PUT cl-x: %d %s" % (r.status, r.text))
    results = {}
    victim = [x for x in cl.nodes if x.name == leader][0]

    def kill_leader():
        time.sleep(2)
        diag("killing %s (the stream's leader) after %d ratings" % (victim.name, len(results)))
        victim.stop(signal.SIGKILL)
        time.sleep(8)
    post_while(hosts, results, kill_leader, arrays=True)
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
        start(*dead)    # restarted to see what they would have applied
    accepted = [rid for rid, v in results.items() if v[1] in (200, 202)]
    unsure = [rid for rid, v in results.items() if v[1] == -1]
    outboxes_empty(hosts, 45)
    # The killed node comes back (same store) and the cluster heals.
    victim.start().wait_ready(CONVERGE)
    alive = [x for x in cl.nodes if x.running()]
    # In the stream: each accepted id; once when answered 200 (a 202 array
    # may be stored although its acknowledgement was lost, and again from
    # the outbox as single messages: applied once all the same).
    ids, in_batches = rating_ids(alive[0], "cl-x")
    if not in_batches:
        errors.append("no rating went out in a batch message")
    missing = [r for r in accepted if r not in ids]
    twice = [r for r, k in ids.items() if k > 1 and results.get(r, (0, 0))[1] == 200]
    stray = [r for r in ids if r not in accepted and r not in unsure]
    if missing or twice or stray:
        errors.append("stream: %d accepted ids missing (%s), %d twice (%s), %d never sent "
                      "(%s)" % (len(missing), missing[:5], len(twice), twice[:5], len(stray),
                                stray[:5]))
    # Every host applied exactly what the stream holds.
    applied = [r for r in ids if r in results]
    exp = {"cl-x": {"ratings": len(applied),
                    "rate": 5000 + 10 * sum(results[r][0] - 3 for r in applied)}}
    diag("%d accepted, %d without an answer, %d in the stream (%d in batch messages)" %
         (len(accepted), len(unsure), len(ids), in_batches))
    try:
        converge(alive[0], hosts, ["cl-x"], exp, timeout=45)
    except Fail as e:
        errors.append(str(e))
    check(not errors, "; ".join(errors))


def split_labs(env, own):
    """Two lab edge hosts with the XDP program attached: their variables."""
    tag = "%04d" % (os.getpid() % 10000)
    labs = [own.lab(x + tag) for x in ("fa", "fb")]
    for host in labs:
        r = env.cli(host["LAB_PIN"], "attach", host["LAB_IF"], json_mode=False,
                    netns=host["LAB_NS"])
        check(r.rc == 0, "attach in %s: %s" % (host["LAB_NS"], r.out))
    return labs


def traffic(env, own, labs, offered):
    """A generator per lab host, offered[i] packets/s from 10.66.0.0/24 into it."""
    gens = []
    for host, pps in zip(labs, offered):
        gens.append(own.popen(["ip", "netns", "exec", host["LAB_WIRE_NS"], env.bin("ag-trafficgen"),
                               "--engine", TG_ENGINE, "--dev", host["LAB_WIRE_IF"],
                               "--dst-mac", host["LAB_MAC"], "--duration", "120",
                               "--src", "10.66.0.0/24", "--dst", host["LAB_ADDR4"],
                               "--dport", "9000", "--rate", str(pps)],
                              "gen-%s.log" % host["LAB_NAME"]))
    return gens


def check_split(hosts, agent, R):
    """The fleet rate everywhere, local_rate = R x share, the share metric."""
    for d in hosts:
        o = d.api.agent(agent)
        diag("%s: rate %s fleet %s" % (d.node, o["rate"], o["fleet"]))
        check(o["rate"] == R, "%s: fleet rate %s" % (d.node, o["rate"]))
        check(abs(o["fleet"]["local_rate"] - R * o["fleet"]["share"]) < 1e-6 * R,
              "%s: local_rate %s" % (d.node, o["fleet"]))
        # Shares move every interval: the metric is read between two reads
        # of the agent and must lie within 0.05 of what they span.
        ms = metric(d, "agentgate_fleet_demand_share", agent=agent)
        after = d.api.agent(agent)["fleet"]["share"]
        lo, hi = sorted((o["fleet"]["share"], after))
        check(ms is not None and lo - 0.05 < ms < hi + 0.05,
              "%s: fleet_demand_share %s, the agent's share between %s and %s" %
              (d.node, ms, lo, hi))


def check_admitted(hosts, agent, R, shares):
    """Admitted over a measured window (counters before and after): R*t +- 10 %."""
    t0 = time.monotonic()
    c0 = [cli(d, "agent", "show", agent) for d in hosts]
    time.sleep(6)
    c1 = [cli(d, "agent", "show", agent) for d in hosts]
    t = time.monotonic() - t0
    passed = [y["passed_packets"] - x["passed_packets"] for x, y in zip(c0, c1)]
    dropped = [y["dropped_packets"] - x["dropped_packets"] for x, y in zip(c0, c1)]
    adm = sum(passed)
    burst = sum(x["burst"] for x in c1)
    diag("window %.2f s: admitted %s (%d, R*t %.0f), dropped %s, shares %s, burst %s" %
         (t, passed, adm, R * t, dropped, shares, burst))
    check(all(x > 0 for x in dropped), "no drops: traffic not above the local rates?")
    check(0.9 * R * t <= adm <= 1.1 * R * t + burst,
          "admitted %d over %.2f s, want %.0f +- 10 %% (+ burst %s)" % (adm, t, R * t, burst))


def demand_group(agent):
    """The demand group of an agent (demand_wire.c: FNV-1a of the name mod 16)."""
    h = 1469598103934665603
    for c in agent.encode():
        h = ((h ^ c) * 1099511628211) % (1 << 64)
    return h % 16


def check_demand_owner(s, hosts, agent):
    """The agent's demand group has a lease in agentgate-demand-owners held
    by one of the hosts."""
    n = nats_client(s)
    try:
        key = "$KV.agentgate-demand-owners.g%d" % demand_group(agent)
        m = wait_for(lambda: n.stream_msg(KV_STREAM, last_by_subj=key), CONVERGE,
                     what="a lease of group %d" % demand_group(agent))
        owner = m[3].decode() if isinstance(m[3], bytes) else m[3]
        check(owner in [d.node for d in hosts], "group %d leased by %r, not a host" %
              (demand_group(agent), owner))
        diag("demand group %d of %s: owner %s" % (demand_group(agent), agent, owner))
        return owner
    finally:
        n.close()


def shares_of(hosts, agent):
    return [d.api.agent(agent)["fleet"]["share"] for d in hosts]


@case("two lab edge hosts with real traffic (4000 and 2000 pps) for one agent "
      "at fleet rate 1000: shares 2/3 and 1/3; admitted in total R*t +- 10 %; "
      "the agent's demand group leased by one of them; traffic stops at one: its share falls "
      "to --fleet-floor")
def t_demand_split(env, own):
    if not os.access(env.bin("ag-trafficgen"), os.X_OK):
        raise Skip("%s not built" % env.bin("ag-trafficgen"))
    labs = split_labs(env, own)
    s = own.server("split")
    floor2 = 0.1    # e2's --fleet-floor (e1 keeps the default 0.05)
    hosts = [own.daemon("e%d" % (i + 1), [s.url], "--fleet-interval", "500ms",
                        *(["--fleet-floor", str(floor2)] if i == 1 else []), pin=host["LAB_PIN"])
             for i, host in enumerate(labs)]
    start(*hosts)
    e1, e2 = hosts
    R, agent = 1000.0, "org:split"
    r = e1.api.put("/v1/agents/" + agent, {"rate": R, "burst": 100, "pinned": True})
    check(r.status == 201, "PUT %s: %d %s" % (agent, r.status, r.text))
    r = e1.api.post("/v1/rules", {"prefix": "10.66.0.0/24", "agent": agent})
    check(r.status == 201, "POST rule: %d %s" % (r.status, r.text))
    wait_for(lambda: [x["agent"] for x in cli(e2, "rule", "list")
                      if x["prefix"] == "10.66.0.0/24"] == [agent], CONVERGE,
             what="the rule in e2's maps")
    offered = (4000, 2000)
    gens = traffic(env, own, labs, offered)
    want = [o / sum(offered) for o in offered]

    def near_want():
        got = shares_of(hosts, agent)
        return got if all(abs(x - w) <= 0.08 for x, w in zip(got, want)) else None
    try:
        got = wait_for(near_want, 40, interval=0.5, what="shares near %s" % want)
    except Fail:
        diag("e1: %s" % e1.api.agent(agent))
        diag("e2: %s" % e2.api.agent(agent))
        raise
    time.sleep(2)     # settle
    check_split(hosts, agent, R)
    check_admitted(hosts, agent, R, got)
    check_demand_owner(s, hosts, agent)
    # e2's traffic stops: its share falls to its floor, e1's rises to 1.
    rc = stop_proc(gens[1], signal.SIGINT)
    t_stop = time.monotonic()
    c2 = cli(e2, "agent", "show", agent)
    timeline = []

    def floored():
        got = shares_of(hosts, agent)
        timeline.append("%.1f s %s" % (time.monotonic() - t_stop, got))
        return got if got[0] >= 0.95 and abs(got[1] - floor2) < 1e-3 else None
    try:
        got = wait_for(floored, 30, interval=0.5, what="e1 share 1, e2 at its floor %g" %
                       floor2)
    except Fail:
        c3 = cli(e2, "agent", "show", agent)
        diag("generator exit %s; e2's counters since: +%d passed, +%d dropped" % (
            rc, c3["passed_packets"] - c2["passed_packets"],
            c3["dropped_packets"] - c2["dropped_packets"]))
        diag("shares: %s" % "; ".join(timeline[::4] + timeline[-2:]))
        raise
    diag("shares after e2's traffic stopped: %s" % got)


@case("a parent split by demand: two lab edge hosts with real traffic (4000 and 2000 pps) of "
      "an agent under a parent of fleet rate 1000: the parent's shares 2/3 and 1/3, its local "
      "rates R x share in the maps, admitted through the parent in total R*t +- 10 %")
def t_demand_parent(env, own):
    if not os.access(env.bin("ag-trafficgen"), os.X_OK):
        raise Skip("%s not built" % env.bin("ag-trafficgen"))
    labs = split_labs(env, own)
    s = own.server("psplit")
    hosts = [own.daemon("p%d" % (i + 1), [s.url], "--fleet-interval", "500ms",
                        pin=host["LAB_PIN"]) for i, host in enumerate(labs)]
    start(*hosts)
    p1, p2 = hosts
    R, parent, agent = 1000.0, "org:pp", "org:pa"
    r = p1.api.put("/v1/parents/" + parent, {"rate": R, "burst": 100})
    check(r.status == 201, "PUT %s: %d %s" % (parent, r.status, r.text))
    r = p1.api.put("/v1/agents/" + agent, {"rate": 10000, "burst": 1000, "pinned": True,
                                           "parent": parent})
    check(r.status == 201, "PUT %s: %d %s" % (agent, r.status, r.text))
    r = p1.api.post("/v1/rules", {"prefix": "10.66.0.0/24", "agent": agent})
    check(r.status == 201, "POST rule: %d %s" % (r.status, r.text))
    wait_for(lambda: cli(p2, "agent", "show", agent).get("parent") == parent and
             [x["agent"] for x in cli(p2, "rule", "list")
              if x["prefix"] == "10.66.0.0/24"] == [agent], CONVERGE,
             what="the agent under its parent and its rule in p2's maps")
    offered = (4000, 2000)
    traffic(env, own, labs, offered)
    want = [o / sum(offered) for o in offered]

    def shares():
        return [d.api.get("/v1/parents/" + parent).json()["fleet"]["share"] for d in hosts]

    def near_want():
        got = shares()
        return got if all(abs(x - w) <= 0.08 for x, w in zip(got, want)) else None
    got = wait_for(near_want, 40, interval=0.5, what="parent shares near %s" % want)
    time.sleep(2)     # settle
    def api_and_maps(d):
        """The API's parent and the maps' between two API reads of one share
        (shares move every --fleet-interval); None when it moved."""
        o = d.api.get("/v1/parents/" + parent).json()
        m = cli(d, "parent", "show", parent)
        o2 = d.api.get("/v1/parents/" + parent).json()
        return (o, m) if o["fleet"]["share"] == o2["fleet"]["share"] else None
    for d in hosts:   # the operator's rate in the API, the share in the maps
        o, m = wait_for(lambda: api_and_maps(d), 20, interval=0.05,
                        what="%s: one share across a read of the maps" % d.node)
        diag("%s: parent %s fleet %s, map rate %s" % (d.node, o["rate"], o["fleet"], m["rate"]))
        check(o["rate"] == R and abs(o["fleet"]["local_rate"] - R * o["fleet"]["share"]) <
              1e-6 * R and abs(m["rate"] - R * o["fleet"]["share"]) < 1e-6 * R,
              "%s: parent %s, maps %s" % (d.node, o, m))
    t0 = time.monotonic()
    c0 = [cli(d, "parent", "show", parent) for d in hosts]
    time.sleep(6)
    c1 = [cli(d, "parent", "show", parent) for d in hosts]
    t = time.monotonic() - t0
    passed = [y["passed_packets"] - x["passed_packets"] for x, y in zip(c0, c1)]
    refused = [y["refused"]["rate"] - x["refused"]["rate"] for x, y in zip(c0, c1)]
    adm = sum(passed)
    diag("window %.2f s: through the parent %s (%d, R*t %.0f), refused by its rate %s, "
         "shares %s" % (t, passed, adm, R * t, refused, got))
    check(all(x > 0 for x in refused), "the parent refused nothing: traffic under its rates?")
    check(0.9 * R * t <= adm <= 1.1 * R * t + 2 * 100,
          "admitted %d through the parent over %.2f s, want %.0f +- 10 %%" % (adm, t, R * t))


@case("three lab edge hosts, demand moving mid-run: one agent at fleet rate 900 offered "
      "3000 pps at e1 alone (share 1), then also at e2 (halves), then e1 stops and e3 starts "
      "(e2 and e3 halve, e1 at the floor); admitted within R*t*(1+n*floor) in every phase")
def t_demand_moves(env, own):
    if not os.access(env.bin("ag-trafficgen"), os.X_OK):
        raise Skip("%s not built" % env.bin("ag-trafficgen"))
    tag = "%04d" % (os.getpid() % 10000)
    labs = [own.lab(x + tag) for x in ("ma", "mb", "mc")]
    for host in labs:
        r = env.cli(host["LAB_PIN"], "attach", host["LAB_IF"], json_mode=False,
                    netns=host["LAB_NS"])
        check(r.rc == 0, "attach in %s: %s" % (host["LAB_NS"], r.out))
    s = own.server("moves")
    hosts = [own.daemon("m%d" % (i + 1), [s.url], "--fleet-interval", "500ms",
                        pin=host["LAB_PIN"]) for i, host in enumerate(labs)]
    start(*hosts)
    R, agent, floor = 900.0, "org:moves", 0.05
    r = hosts[0].api.put("/v1/agents/" + agent, {"rate": R, "burst": 90, "pinned": True})
    check(r.status == 201, "PUT %s: %d %s" % (agent, r.status, r.text))
    r = hosts[0].api.post("/v1/rules", {"prefix": "10.66.0.0/24", "agent": agent})
    check(r.status == 201, "POST rule: %d %s" % (r.status, r.text))
    for d in hosts:
        wait_for(lambda: [x["agent"] for x in cli(d, "rule", "list")
                          if x["prefix"] == "10.66.0.0/24"] == [agent], CONVERGE,
                 what="the rule in %s's maps" % d.node)

    def gen(i):
        return traffic(env, own, [labs[i]], [3000])[0]

    def phase(name, want, at_floor):
        t0 = time.monotonic()
        timeline = []

        def near():
            got = shares_of(hosts, agent)
            timeline.append("%.1f s %s" % (time.monotonic() - t0, [round(x, 3) for x in got]))
            return got if all(abs(x - w) <= 0.08 for x, w in zip(got, want)) else None
        try:
            got = wait_for(near, 40, interval=0.25, what="%s: shares near %s" % (name, want))
        except Fail:
            diag("shares: %s" % "; ".join(timeline[::4] + timeline[-2:]))
            raise
        diag("%s: shares %s after %.1f s (%d polls)" % (name, [round(x, 3) for x in got],
                                                         time.monotonic() - t0, len(timeline)))
        time.sleep(1.5)
        c0 = [cli(d, "agent", "show", agent) for d in hosts]
        t1 = time.monotonic()
        time.sleep(5)
        c1 = [cli(d, "agent", "show", agent) for d in hosts]
        t = time.monotonic() - t1
        adm = sum(y["passed_packets"] - x["passed_packets"] for x, y in zip(c0, c1))
        burst = sum(x["burst"] for x in c1)
        bound = R * t * (1 + at_floor * floor) + burst
        diag("%s: admitted %d over %.2f s, bound R*t*(1+%d*floor)+burst = %.0f" %
             (name, adm, t, at_floor, bound))
        check(adm <= bound, "%s: admitted %d over %.2f s > %.0f" % (name, adm, t, bound))
        check(adm >= 0.8 * R * t, "%s: admitted %d over %.2f s, under 0.8*R*t" % (name, adm, t))

    g1 = gen(0)
    phase("e1 alone", [1, 1, 1], 0)
    g2 = gen(1)
    phase("e1 and e2", [0.5, 0.5, 1], 0)
    stop_proc(g1, signal.SIGINT)
    g3 = gen(2)
    phase("e2 and e3, e1 stopped", [floor, 0.5, 0.5], 1)
    stop_proc(g2, signal.SIGINT)
    stop_proc(g3, signal.SIGINT)


@case("a fleet daemon exits 0 on SIGTERM, no sanitizer report in its log (every "
      "other daemon is checked so where it stops: the teardown lines)")
def t_sigterm(nats1, own):
    d = own.daemon("t", [running(nats1).url], "--nats-timeout", "1500ms")
    start(d)
    r = post(d, {"id": "st-1", "agent": "st-x", "score": 5})
    check(r["applied"] == 1, "st-1 at t: %s" % r)
    stop(d)


@case("idle TTL in a fleet: an agent idle on every host expires on every host at one point "
      "of the log (audited); one kept busy by consumes at one host only (local activity) "
      "stays on all, through that host's agent.touch, and expires everywhere once left alone")
def t_expiry(own):
    # A server of its own: with a 2 s TTL these hosts would expire the
    # agents other cases keep in nats1's log, on every host of it.
    url = own.server("expiry").url
    a = own.daemon("xa", [url], "--nats-timeout", "1500ms", "--agent-ttl", "2s")
    b = own.daemon("xb", [url], "--nats-timeout", "1500ms", "--agent-ttl", "2s")
    start(a, b)
    for agent in ("fx-idle", "fx-busy"):
        r = post(a, {"agent": agent, "score": 4})
        check(r["applied"] == 1, "%s at xa: %s" % (agent, r))
    wait_for(lambda: all(agent_listed(d, x) for d in (a, b) for x in ("fx-idle", "fx-busy")),
             CONVERGE, what="both agents on both hosts")
    # fx-busy: consumed at xb only, for 6 s (3 TTLs); nothing in the log but touches.
    t_end = time.monotonic() + 6
    while time.monotonic() < t_end:
        r = req(b, "POST", "/v1/agents/fx-busy/consume", {"tokens": 1})
        check(r.status in (200, 429), "consume at xb: %d %s" % (r.status, r.text))
        time.sleep(0.2)
    for d in (a, b):
        check(not agent_listed(d, "fx-idle"), "fx-idle still at %s" % d.name)
        check(agent_listed(d, "fx-busy"), "fx-busy gone at %s while xb consumed" % d.name)
    wait_for(lambda: not any(agent_listed(d, "fx-busy") for d in (a, b)), 10,
             what="fx-busy expired on both hosts once left alone")
    for d in (a, b):
        check(metric(d, "agentgate_agents_removed_total", reason="ttl") == 2,
              "%s: removed{ttl} %s" % (d.name, metric(d, "agentgate_agents_removed_total",
                                                       reason="ttl")))
        with open(os.path.join(d.state, "audit.log")) as f:
            got = sorted(json.loads(l)["agent"] for l in f if '"agent.expire"' in l)
        check(got == ["fx-busy", "fx-idle"], "%s audit: %s" % (d.name, got))
    wait_for(lambda: all_equal((a, b), "agentgate_fleet_applied_sequence"), CONVERGE,
             what="fleet_applied_sequence equal on both hosts")
    # Created again by a rating after its expiry, on both.
    r = post(b, {"agent": "fx-idle", "score": 2})
    check(r["applied"] == 1, "fx-idle again: %s" % r)
    wait_for(lambda: all(agent_listed(d, "fx-idle") for d in (a, b)), CONVERGE,
             what="fx-idle again on both hosts")


@case("a token revoked at one host (POST /v1/auth/revoke) is refused at every host: the "
      "revocation travels the log; kept across a restart of another host")
def t_revoke(nats1, own, env):
    from agtest.tokens import mint, need
    need()
    key = env.path("fleet-hs.key")
    with open(key, "w") as f:
        f.write("f" * 40 + "\n")
    url = running(nats1).url
    a = own.daemon("ra", [url], "--nats-timeout", "1500ms", "--auth-key-file", key)
    b = own.daemon("rb", [url], "--nats-timeout", "1500ms", "--auth-key-file", key)
    start(a, b)

    def tok(jti):
        return mint({"key": key, "alg": "HS256", "claims": {
            "sub": "fleet-ops", "jti": jti, "iat": "NOW", "exp": "NOW+600",
            "scope": "agents:admin metrics:read"}})[0]
    admin, leaked = tok("fleet-admin"), tok("fleet-leaked")
    for d in (a, b):
        check(d.client(leaked).get("/v1/agents").status == 200, "%s refused it" % d.name)
    r = a.client(admin).post("/v1/auth/revoke", {"jti": "fleet-leaked"})
    check(r.status == 200, "revoke at ra: %d %s" % (r.status, r.text))
    wait_for(lambda: b.client(leaked).get("/v1/agents").status == 401, CONVERGE,
             what="the revoked token refused at rb")
    check(a.client(leaked).get("/v1/agents").status == 401, "ra accepts it")
    check(b.client(admin).get("/v1/agents").status == 200, "rb refuses the admin token")
    stop(b)
    start(b)
    check(b.client(leaked).get("/v1/agents").status == 401, "rb forgot it after a restart")


@case("one voice per user across hosts: one user's 30 one-star ratings posted at three "
      "hosts move the rate once on every host, then the same user's 5 moves it by "
      "alpha * 4; a second user's voice adds up; an agent's own damping and wave watch "
      "stop every host at the same bound; every host the same")
def t_voices(phase1):
    s, hosts = phase1
    a, b, c = hosts
    for i in range(30):
        post(hosts[i % 3], {"agent": "vo-1", "user": "mallory", "score": 1})
    post(b, {"agent": "vo-1", "user": "mallory", "score": 5})
    post(c, {"agent": "vo-1", "user": "alice", "score": 4})
    want = 100 - 20 + 40 + 10
    rates = wait_for(lambda: (lambda r: all(v == want for v in r.values()) and r)(
        {d.name: get_json(d, "/v1/agents/vo-1").get("rate") for d in hosts}), CONVERGE,
        what="vo-1 at %s on every host" % want)
    diag("vo-1: %s" % rates)
    for d in hosts:
        check(get_json(d, "/v1/agents/vo-1")["ratings"] == 32, "%s: ratings" % d.name)
    # Damping through the log: an agent's own max_change reaches every host,
    # and its window runs on log time, so all stop at the same bound.
    r = req(a, "PUT", "/v1/agents/vo-2", {"rate": 1000, "max_change": 0.1, "wave_users": 15})
    check(r.status == 201, "PUT vo-2: %d %s" % (r.status, r.text))
    for i in range(24):
        post(hosts[i % 3], {"agent": "vo-2", "user": "wave-%d" % i, "score": 1})
    rates = wait_for(lambda: (lambda r: all(v == 900 for v in r.values()) and r)(
        {d.name: get_json(d, "/v1/agents/vo-2").get("rate") for d in hosts}), CONVERGE,
        what="vo-2 at 900 on every host")
    waves = [metric(d, "agentgate_rating_waves_total", direction="down") for d in hosts]
    check(waves[0] >= 1 and len(set(waves)) == 1, "waves per host: %s" % waves)
    # Other pipelines' shapes published straight into the stream: the same
    # names and times as over HTTP, one voice per user on every host.
    tag = os.urandom(4).hex()
    shaped = [{"agentId": "vo-3", "userId": "p1", "score": 1, "timestamp": 1700000000000},
              {"agentId": "vo-3", "userId": "p1", "score": 1,
               "timestamp": "2026-12-06T19:00:00Z"},
              {"id": "re-%s" % tag, "productId": "vo-3", "userId": "p2", "score": 4,
               "comment": "fine", "timestamp": "2026-12-06T20:00:00.5+01:00"}]
    n = nats_client(s)
    try:
        for i, m in enumerate(shaped):
            ack = n.js_publish("agentgate.ratings.vo-3", json.dumps(m).encode(),
                               headers={"Nats-Msg-Id": "vo3-%s-%d" % (tag, i)})
            check("seq" in ack, "publish: %s" % ack)
    finally:
        n.close()
    want = {"rate": 90.0, "ratings": 3, "last_rating_ms": 1796583600500}
    got = wait_for(lambda: (lambda r: all(v == want for v in r.values()) and r)(
        {d.name: {k: get_json(d, "/v1/agents/vo-3").get(k) for k in want} for d in hosts}),
        CONVERGE, what="vo-3 %s on every host" % want)
    diag("vo-3: %s" % got)


def fleet_rules(d, agent):
    return sorted(r["prefix"] for r in get_json(d, "/v1/rules") if r["agent"] == agent)


@case("rule feeds through the log: a rule sync of 60 000 prefixes at one host (several "
      "feed.part messages) is the same set on every host; a file feed bound at another host "
      "is read and applied alike; DELETE at a third removes it everywhere")
def t_feeds(phase1, env):
    s, hosts = phase1
    a, b, c = hosts
    r = req(a, "PUT", "/v1/agents/fd-1", {})
    check(r.status in (200, 201), "PUT fd-1: %d %s" % (r.status, r.text))
    big = ["10.%d.%d.0/24" % (i // 256, i % 256) for i in range(30000)] + \
        ["2001:db8:%x:%x::/64" % (i // 65536, i % 65536) for i in range(30000)]
    path = os.path.join(env.tmp, "fd-1.txt")
    with open(path, "w") as f:
        f.write("\n".join(big) + "\n")
    r = b.cli("rule", "sync", "fd-1", path, timeout=120)
    check(r.rc == 0, "rule sync at %s: %d %s" % (b.node, r.rc, r.out[:500]))
    check(r.json()["prefixes"] == 60000, "sync: %s" % r.out[:500])
    # Every host reads the parts back and swaps 60 000 prefixes: longer than
    # the usual deadline on a loaded machine.
    wait_for(lambda: all(get_json(d, "/v1/agents/fd-1/feed")["prefixes"] == 60000
                         for d in hosts), 4 * CONVERGE, what="60000 prefixes on every host")
    want = sorted(str(ipaddress.ip_network(p)) for p in big)
    for d in hosts:
        got = fleet_rules(d, "fd-1")
        check(got == want, "%s: %d rules, %d expected" % (d.node, len(got), len(want)))
    # A file feed bound at c: every host reads it and applies the same set.
    r = req(c, "PUT", "/v1/agents/fd-2", {})
    check(r.status in (200, 201), "PUT fd-2: %d %s" % (r.status, r.text))
    feed = os.path.join(env.tmp, "fd-2.json")
    with open(feed, "w") as f:
        f.write(json.dumps({"prefixes": [{"ipv4Prefix": "192.0.2.0/24"},
                                         {"ipv6Prefix": "2001:db8:ff::/48"}]}))
    r = req(c, "PUT", "/v1/agents/fd-2/feed", {"source": feed, "interval": 1})
    check(r.status == 201, "PUT feed: %d %s" % (r.status, r.text))
    wait_for(lambda: all(fleet_rules(d, "fd-2") == ["192.0.2.0/24", "2001:db8:ff::/48"]
                         for d in hosts), CONVERGE, what="fd-2's feed on every host")
    with open(feed, "w") as f:
        f.write("192.0.2.0/24\n198.51.100.0/24\n2001:db8:ff::/48\n")
    wait_for(lambda: all(fleet_rules(d, "fd-2") == ["192.0.2.0/24", "198.51.100.0/24",
                                                      "2001:db8:ff::/48"] for d in hosts),
             CONVERGE, what="fd-2's changed feed on every host")
    for d in hosts:
        f = get_json(d, "/v1/agents/fd-2/feed")
        check(f["source"] == feed and f["status"] == "ok", "%s: %s" % (d.node, f))
    r = req(a, "DELETE", "/v1/agents/fd-2/feed")
    check(r.status == 200, "DELETE feed: %d %s" % (r.status, r.text))
    wait_for(lambda: all(fleet_rules(d, "fd-2") == [] for d in hosts), CONVERGE,
             what="fd-2's rules gone on every host")
    r = req(a, "DELETE", "/v1/agents/fd-1")
    check(r.status == 200, "DELETE fd-1: %d %s" % (r.status, r.text))
    wait_for(lambda: all(fleet_rules(d, "fd-1") == [] for d in hosts), CONVERGE,
             what="fd-1's rules gone on every host")


def fleet_mode(build):
    """False when the daemon has no fleet mode (--nats-replicas not in its
    --help); True also when it is not built (run() says so)."""
    binary = os.path.join(build, DAEMON)
    if not os.access(binary, os.X_OK):
        return True
    return "--nats-replicas" in sh([binary, "--help"]).stdout


if __name__ == "__main__":
    if len(sys.argv) > 1 and not fleet_mode(sys.argv[1]):
        print("1..0 # SKIP this agentgated has no fleet mode (--nats-replicas)")
        sys.exit(77)
    run(needs=(DAEMON, "agentgate", "nats-server"))
