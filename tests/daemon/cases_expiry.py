# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Idle agents expire: the TTL each kind of agent gets, what counts as
activity, eviction when the map is full, restarts and the wall clock.
Each case starts a daemon of its own (short TTLs: sweeps every 250 ms to
1 s)."""
import json
import os
import time
import uuid

from agtest import Fail, check, case, expect, expect_error, expect_no_agent, jcheck
from agtest.daemon import run_daemon
from agtest.lab import send_frames
from agtest.ws import WS
from cases_xdp import xdp_lab  # noqa: F401  (the fixture, by name)

AGENT_TTL_S = 2


def metric(d, name, **labels):
    return d.metrics().val(name, **labels)


def removed(d, reason):
    return metric(d, "agentgate_agents_removed_total", reason=reason)


def gone_within(d, agent, timeout):
    """Waits until GET /v1/agents/AGENT answers 404; the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if d.api.get("/v1/agents/" + agent).status == 404:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise Fail("agent %s still there after %.1f s: %s" % (agent, timeout,
                                                         d.api.get("/v1/agents/" + agent).text))


def audit_lines(d, action):
    with open(os.path.join(d.state, "audit.log")) as f:
        return [json.loads(l) for l in f if '"%s"' % action in l]


@case("idle TTL: agents a rating or /bucket creates get --agent-ttl, operator agents and pinned "
      "ones none unless told; each expires after its TTL idle, audited, rules gone, counted; "
      "a rating creates it again")
def t_expiry_kinds(env):
    d = env.daemon("ttl", "--agent-ttl", "%ds" % AGENT_TTL_S).start()
    api = d.api
    glob_ws = WS.connect("127.0.0.1", d.port, "/v1/stream?topics=rating.global")
    own_ws = WS.connect("127.0.0.1", d.port, "/v1/stream?topics=bucket.agent.tut1")
    check(glob_ws.status == 101 and own_ws.status == 101, "stream handshakes")
    expect(api.post("/v1/ratings", {"agent": "auto1", "score": 4}), 200)
    expect(api.post("/bucket/tut1", {"capacity": 10, "refill_rate": 1}), 201)
    expect(api.put("/v1/agents/op1", {"rate": 10}), 201, 'd["ttl"] == 0')
    expect(api.put("/v1/agents/own1", {"rate": 10, "ttl": 2}), 201, 'd["ttl"] == 2')
    expect(api.put("/v1/agents/own2", {"rate": 10, "ttl": "1h"}), 201, 'd["ttl"] == 3600')
    expect(api.post("/v1/ratings", {"agent": "pin1", "score": 4}), 200)
    expect(api.put("/v1/agents/pin1", {"pinned": True}), 200, 'd["ttl"] == 0')
    expect(api.post("/v1/rules", {"prefix": "10.77.0.0/16", "agent": "auto1"}), 201)
    for a, ttl in (("auto1", AGENT_TTL_S), ("tut1", AGENT_TTL_S), ("op1", 0), ("own1", 2),
                   ("own2", 3600), ("pin1", 0)):
        expect(api.get("/v1/agents/" + a), 200, 'd["ttl"] == %d' % ttl, 'num(d["idle_s"])')
    # The rule made auto1 active: it expires last of the three.
    for a in ("auto1", "tut1", "own1"):
        took = gone_within(d, a, AGENT_TTL_S + 4)
        check(took <= AGENT_TTL_S + 3, "%s took %.1f s" % (a, took))
    for a in ("op1", "own2", "pin1"):
        expect(api.get("/v1/agents/" + a), 200)
    check(removed(d, "ttl") == 3, "removed{ttl} %s" % removed(d, "ttl"))
    check(removed(d, "evicted") == 0, "removed{evicted} %s" % removed(d, "evicted"))
    expect(api.get("/v1/rules"), 200, 'd == []')
    lines = audit_lines(d, "agent.expire")
    check(sorted(l["agent"] for l in lines) == ["auto1", "own1", "tut1"], "audit: %s" % lines)
    check(all(l["subject"] == "agentgated" and l["before"]["reason"] == "ttl" and
              l["before"]["idle_s"] >= l["before"]["ttl"] for l in lines), "audit: %s" % lines)
    r = d.cli("agent", "show", "auto1")
    check(r.rc == 1, "the CLI still sees auto1: %s" % r.out)
    # On the stream: each removal on rating.global, tut1's to its follower.
    got = [m for m in glob_ws.collect(2, until=lambda m: False)
           if m.get("type") == "agent_removed"]
    check(sorted(m["data"]["agent"] for m in got) == ["auto1", "own1", "tut1"] and
          all(m["topic"] == "rating.global" and m["data"]["reason"] == "ttl" and
              m["data"]["idle_s"] >= 2 for m in got), "rating.global: %s" % got)
    got = [m for m in own_ws.collect(1) if m.get("type") == "agent_removed"]
    check([(m["topic"], m["data"]["agent"]) for m in got] == [("rating.agent.tut1", "tut1")],
          "tut1's follower: %s" % got)
    glob_ws.close()
    own_ws.close()
    # Not deleted by an operator: a rating creates it again.
    expect(api.post("/v1/ratings", {"agent": "auto1", "score": 5}), 200,
           'd["agents"][0]["rate"] == 120', 'd["agents"][0]["ratings"] == 1')
    d.stop()


@case("idle TTL: ratings, consumes (also refused ones), resets and rule changes are activity; "
      "an agent kept busy for 3 TTLs stays, then expires once left alone")
def t_expiry_activity(env):
    d = env.daemon("ttlact", "--agent-ttl", "1s").start()
    api = d.api
    for a in ("ra", "co", "rs"):
        expect(api.post("/v1/ratings", {"agent": a, "score": 3}), 200)
    # cz's bucket is empty and refills once in 1000 s: its consumes are
    # refused, and still activity.
    expect(api.put("/v1/agents/cz", {"rate": 0.001, "r_min": 0.001, "burst": 1, "ttl": 1}), 201)
    expect(api.post("/v1/agents/cz/drain", {"tokens": 1}), 200)
    t_end = time.monotonic() + 3.5
    while time.monotonic() < t_end:
        expect(api.post("/v1/ratings", {"agent": "ra", "score": 3}), 200)
        expect(api.post("/v1/agents/co/consume", {"tokens": 1}), 200)
        expect(api.post("/v1/agents/cz/consume", {"tokens": 1}), 429)
        expect(api.post("/v1/agents/rs/reset", {}), 200)
        time.sleep(0.3)
    for a in ("ra", "co", "cz", "rs"):
        expect(api.get("/v1/agents/" + a), 200, 'd["idle_s"] < 1')
    for a in ("ra", "co", "cz", "rs"):
        gone_within(d, a, 4)
    check(removed(d, "ttl") == 4, "removed{ttl} %s" % removed(d, "ttl"))
    d.stop()


@case("idle TTL: bad values are a 400 naming ttl and change nothing; null goes back to the "
      "kind's default; bad --agent-ttl and --agent-full exit 2 naming the option")
def t_expiry_bad_input(env):
    d = env.daemon("ttlbad").start()
    api = d.api
    expect(api.put("/v1/agents/b1", {"rate": 10, "ttl": 60}), 201, 'd["ttl"] == 60')
    for bad in (-1, 1.5, "1.5s", "abc", "", "10y", True, [], 315360001, "3651d"):
        expect_error(api.put("/v1/agents/b1", {"ttl": bad, "rate": 20}), 400, "bad_request",
                     "field 'ttl'")
    expect(api.get("/v1/agents/b1"), 200, 'd["ttl"] == 60', 'd["rate"] == 10')
    expect(api.put("/v1/agents/b1", {"ttl": "7d"}), 200, 'd["ttl"] == 604800')
    expect(api.put("/v1/agents/b1", {"ttl": "never"}), 200, 'd["ttl"] == 0')
    expect(api.put("/v1/agents/b1", {"ttl": 90}), 200, 'd["ttl"] == 90')
    expect(api.put("/v1/agents/b1", {"ttl": None}), 200, 'd["ttl"] == 0')
    expect(api.post("/v1/ratings", {"agent": "b2", "score": 3}), 200)
    expect(api.put("/v1/agents/b2", {"ttl": 5}), 200, 'd["ttl"] == 5')
    expect(api.put("/v1/agents/b2", {"ttl": None}), 200, 'd["ttl"] == 86400')
    d.stop()
    for args, word in ((["--agent-ttl", "1500ms"], "agent-ttl"),
                       (["--agent-ttl", "-1s"], "agent-ttl"),
                       (["--agent-ttl", "3651d"], "agent-ttl"),
                       (["--agent-full", "drop"], "agent-full")):
        out = run_daemon(env, args, 2)
        check(word in out, "%s: %s" % (args, out))


@case("agent list with agentgated running: IDLE and TTL columns, idle_s and ttl in JSON, "
      "--sort idle longest first; without a daemon idle_s is null and --sort idle exits 1; "
      "agent set NAME ttl goes through the daemon")
def t_expiry_cli(env):
    d = env.daemon("ttlcli", "--agent-ttl", "1h").start()
    api = d.api
    expect(api.post("/v1/ratings", {"agent": "old", "score": 3}), 200)
    time.sleep(2.5)
    expect(api.post("/v1/ratings", {"agent": "new", "score": 3}), 200)
    expect(api.put("/v1/agents/op", {"rate": 5}), 201)
    r = d.cli("agent", "set", "op", "ttl", "30m")
    check(r.rc == 0, "agent set op ttl 30m: %s" % r.out)
    expect(api.get("/v1/agents/op"), 200, 'd["ttl"] == 1800')
    jcheck(d.cli("agent", "show", "op").json(), 'd["ttl"] == 1800', 'd["idle_s"] >= 0')
    r = d.cli("agent", "set", "op", "ttl", "soon")
    check(r.rc == 2 and "ttl" in r.out, "agent set op ttl soon: %d %s" % (r.rc, r.out))
    # Idle times move at each sweep: a quarter of the shortest TTL, at most 60 s.
    time.sleep(1)
    r = d.cli("agent", "list", "--sort", "idle", json_mode=False)
    check(r.rc == 0 and "IDLE" in r.out and "TTL" in r.out and "3600s" in r.out, r.out)
    rows = d.cli("agent", "list", "--sort", "idle").json()
    names = [x["name"] for x in rows]
    check(names.index("old") < names.index("new"), "not longest idle first: %s" % rows)
    byname = {x["name"]: x for x in rows}
    check(byname["old"]["ttl"] == 3600 and byname["op"]["ttl"] == 1800, rows)
    check(all(isinstance(x["idle_s"], int) for x in rows), rows)
    d.stop()
    rows = d.cli("agent", "list").json()
    check(all(x["idle_s"] is None and x["ttl"] is None for x in rows), rows)
    jcheck(d.cli("agent", "show", "op").json(), 'd["idle_s"] is None', 'd["ttl"] is None')
    r = d.cli("agent", "list", "--sort", "idle", json_mode=False)
    check(r.rc == 1 and "agentgated" in r.out, "without a daemon: %d %s" % (r.rc, r.out))
    r = d.cli("agent", "set", "op", "ttl", "1h")
    check(r.rc == 1 and "agentgated" in r.out, "ttl without a daemon: %d %s" % (r.rc, r.out))


@case("map full with --agent-full evict: a new agent takes the slot of the agent with a TTL "
      "idle longest (audited agent.evict, counted); operator agents are never "
      "evicted; with refuse (the default) 507 as before")
def t_expiry_evict(env):
    d = env.daemon("evict", "--max-agents", "20", "--agent-full", "evict",
                   "--agent-ttl", "1h").start()
    api = d.api
    expect(api.put("/v1/agents/keep", {"rate": 5}), 201)
    for i in range(19):
        expect(api.post("/v1/ratings", {"agent": "e%d" % i, "score": 3}), 200)
        time.sleep(0.01)
    expect(api.post("/v1/ratings", {"agent": "e0", "score": 4}), 200)
    expect(api.post("/v1/ratings", {"agent": "n1", "score": 3}), 200)
    expect_no_agent(api, "e1")
    expect(api.get("/v1/agents/e0"), 200)
    expect(api.post("/bucket/n2", {"capacity": 5, "refill_rate": 1}), 201)
    expect_no_agent(api, "e2")
    # A batch that creates three evicts three.
    expect(api.post("/v1/ratings", [{"agent": "n3", "score": 3}, {"agent": "n4", "score": 3},
                                    {"agent": "n3", "score": 3}, {"agent": "n5", "score": 3}]),
           200)
    for a in ("e3", "e4", "e5"):
        expect_no_agent(api, a)
    expect(api.get("/v1/agents/e6"), 200)
    check(removed(d, "evicted") == 5, "removed{evicted} %s" % removed(d, "evicted"))
    check(metric(d, "agentgate_agents_refused_total") == 0, "refused")
    check(len(audit_lines(d, "agent.evict")) == 5, "audit")
    expect(api.get("/v1/agents/keep"), 200)
    d.stop()
    # Only operator agents: nothing to evict, 507.
    d2 = env.daemon("evict2", "--max-agents", "3", "--agent-full", "evict").start()
    for a in ("o1", "o2", "o3"):
        expect(d2.api.put("/v1/agents/" + a, {"rate": 5}), 201)
    expect_error(d2.api.post("/v1/ratings", {"agent": "x", "score": 3}), 507,
                 "insufficient_storage", "no free agent slot")
    expect_error(d2.api.put("/v1/agents/o4", {"rate": 5}), 507, "insufficient_storage")
    check(metric(d2, "agentgate_agents_refused_total") == 2, "refused")
    d2.stop()


def tutorial_runs(port, n, out):
    """n runs of the rating-API tutorial on one keep-alive connection: a
    fresh agent (POST /bucket/{uuid4}), one /rate. Puts the first status
    other than 201 and 200/429 (or "") on the queue out."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"capacity": 10, "refill_rate": 1})
    hdrs = {"Content-Type": "application/json"}
    for _ in range(n):
        a = str(uuid.uuid4())
        c.request("POST", "/bucket/" + a, body, hdrs)
        r = c.getresponse()
        text = r.read()
        if r.status != 201:
            out.put("POST /bucket: %d %s" % (r.status, text[:200]))
            return
        c.request("POST", "/rate", json.dumps({"agent_id": a, "event_type": "call"}), hdrs)
        r = c.getresponse()
        text = r.read()
        if r.status not in (200, 429):
            out.put("POST /rate: %d %s" % (r.status, text[:200]))
            return
    c.close()
    out.put("")


@case("70 000 tutorial runs (a fresh uuid4 agent each) with --agent-ttl 1s on 4096 slots: "
      "none refused, the map never full, the expired counted")
def t_expiry_tutorial_70000(env):
    import multiprocessing
    runs, clients = 70000, 4
    d = env.daemon("tut70k", "--agent-ttl", "1s", "--max-agents", "4096", bin="plain").start()
    q = multiprocessing.Queue()
    t0 = time.monotonic()
    ps = [multiprocessing.Process(target=tutorial_runs, args=(d.port, runs // clients, q))
          for _ in range(clients)]
    for p in ps:
        p.start()
    errors = [e for e in (q.get(timeout=600) for _ in ps) if e]
    for p in ps:
        p.join()
    took = time.monotonic() - t0
    check(not errors, "%d clients failed, first: %s" % (len(errors), errors[:3]))
    m = d.metrics()
    left = m.val("agentgate_agents")
    exp = m.val("agentgate_agents_removed_total", reason="ttl")
    print("# %d runs in %.1f s (%.0f/s); %d expired, %d left" % (runs, took, runs / took, exp,
                                                                 left))
    check(m.val("agentgate_agents_refused_total") == 0, "refused")
    check(exp + left == runs, "expired %d + left %d != %d" % (exp, left, runs))
    d.stop()


# ---- traffic (a namespace and veth pair of the case's own: cases_xdp) --------------

def unclassified(d):
    return d.cli("stats").json()["unclassified_passed"]


@case("idle TTL with traffic: an agent whose packets are all but dropped for 3 TTLs stays; "
      "left alone it expires, its rules go, and its sources' traffic is unclassified")
def t_expiry_traffic(env, xdp_lab):
    lab = xdp_lab
    d = env.daemon("ttlxdp", "--attach", lab.a, "--agent-ttl", "2s", netns=lab.ns.name).start()
    expect(d.api.post("/v1/ratings", {"agent": "tr1", "score": 3}), 200)
    # One packet in 100 s passes: the bucket's word barely moves, the drops
    # are what the sweep sees.
    expect(d.api.put("/v1/agents/tr1", {"rate": 0.01, "r_min": 0.01, "burst": 1}), 200,
           'd["ttl"] == 2')
    expect(d.api.post("/v1/rules", {"prefix": "10.88.0.0/16", "agent": "tr1"}), 201)
    # One frame every 50 ms for 6 s (3 TTLs).
    send_frames(lab.ns, lab.b, 1, "10.88.0.1", peer_if=lab.a, every=0.05, duration=6)
    expect(d.api.get("/v1/agents/tr1"), 200, 'd["passed_packets"] <= 2',
           'd["dropped_packets"] >= 50', 'd["idle_s"] < 2')
    took = gone_within(d, "tr1", 5)
    check(took >= 1, "tr1 expired %.1f s after its traffic stopped" % took)
    expect(d.api.get("/v1/rules"), 200, 'd == []')
    before = unclassified(d)
    lab.frames(7, "10.88.0.2")
    time.sleep(0.2)
    check(unclassified(d) == before + 7, "unclassified %d -> %d" % (before, unclassified(d)))
    d.stop()


@case("idle TTL across a restart: an agent idle before the stop expires at the first sweep "
      "after the start; one whose traffic the datapath counted while no daemon ran starts "
      "idle 0 and expires a TTL after its traffic")
def t_expiry_restart(env, xdp_lab):
    lab = xdp_lab
    d = env.daemon("ttlrs", "--attach", lab.a, "--agent-ttl", "3s", netns=lab.ns.name).start()
    for a, prefix in (("rs-busy", "10.89.1.0/24"), ("rs-quiet", "10.89.2.0/24")):
        expect(d.api.post("/v1/ratings", {"agent": a, "score": 3}), 200)
        expect(d.api.post("/v1/rules", {"prefix": prefix, "agent": a}), 201)
    # Both idle: the sweep that first finds an agent idle stores its spell;
    # the first sweep after a creation only takes the agent's snapshot. A
    # fixed sleep of two sweep periods raced them on a loaded machine: wait
    # for three sweeps (every 750 ms with this TTL) instead.
    sweeps = metric(d, "agentgate_agent_sweeps_total")
    t0 = time.monotonic()
    while metric(d, "agentgate_agent_sweeps_total") < sweeps + 3:
        check(time.monotonic() - t0 < 10, "fewer than 3 sweeps in 10 s")
        time.sleep(0.1)
    d.stop()
    # The program stays attached and counts rs-busy's traffic for 4 s (> TTL).
    send_frames(lab.ns, lab.b, 1, "10.89.1.1", peer_if=lab.a, every=0.1, duration=4)
    d.start()
    gone_within(d, "rs-quiet", 2)
    expect(d.api.get("/v1/agents/rs-busy"), 200, 'd["passed_packets"] >= 30')
    time.sleep(1.5)
    expect(d.api.get("/v1/agents/rs-busy"), 200)
    took = gone_within(d, "rs-busy", 5)
    check(took >= 0.5, "rs-busy expired %.1f s after the start plus 1.5 s" % took)
    check(removed(d, "ttl") == 2, "removed{ttl} %s" % removed(d, "ttl"))
    d.stop()


@case("idle TTL and budgets: an agent that expires keeps its parent and quota (with the count "
      "of the window) for when a rating makes it again, so a customer's cap cannot be shed by "
      "idling; DELETE of the expired agent forgets them (audited); the parent then goes")
def t_expiry_keeps_budget(env):
    d = env.daemon("ttlbudget", "--agent-ttl", "%ds" % AGENT_TTL_S).start()
    api = d.api
    expect(api.put("/v1/parents/cust", {"rate": 100, "burst": 100}), 201)
    expect(api.put("/v1/agents/e1", {"rate": 10, "burst": 10, "ttl": 1, "parent": "cust",
                                      "quota": {"limit": 50, "window": "day"}}), 201,
           'd["parent"] == "cust"')
    expect(api.post("/v1/agents/e1/consume", {"tokens": 4}), 200, 'd["allowed"]')
    # The parent cannot go while its child has a bucket.
    expect_error(api.delete("/v1/parents/cust"), 409, "conflict", "cust")
    gone_within(d, "e1", 8)
    expect(api.get("/v1/parents/cust"), 200, 'd["children"] == []')
    # A rating makes it again: under its parent, with its quota and the count.
    expect(api.post("/v1/ratings", {"agent": "e1", "score": 4}), 200)
    expect(api.get("/v1/agents/e1"), 200, 'd["parent"] == "cust"',
           'd["quota"]["limit"] == 50', 'd["quota"]["used"] == 4')
    expect(api.get("/v1/parents/cust"), 200, 'd["children"] == ["e1"]')
    gone_within(d, "e1", 8)
    expect(api.delete("/v1/agents/e1"), 200)
    check(any(l["agent"] == "e1" and l["before"]["parent"] == "cust"
              for l in audit_lines(d, "agent.delete")), "no agent.delete audit of the kept budget")
    expect_error(api.delete("/v1/agents/e1"), 404, "not_found", "e1")
    expect(api.post("/v1/ratings", {"agent": "e1", "score": 4}), 200)
    expect(api.get("/v1/agents/e1"), 200, 'd["parent"] is None', 'd["quota"] is None')
    expect(api.delete("/v1/parents/cust"), 200)
    d.stop()
