# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Policy math (defaults r0 100, alpha 10, r 1..10000, burst 1s), dedup and
atomic batches, the rating-API tutorial's calls, the stream's handshake and
the audit log (daemon "api", shared; t_audit_log on a daemon of its own)."""
import json
import os
import re
import sys

from agtest import Fail, case, check, expect, expect_agent, expect_error, expect_no_agent, jcheck
from agtest.ws import WS
from cases_api import (cli_ok, put_agent, t_agent_delete, t_agent_put_codes, t_reset_drain,
                       t_rules)
from fixtures import api, api_fresh  # noqa: F401  (the fixtures, by name)


def rate_steps(d, agent, *steps):
    """One rating per request, steps (score, rate): after each the answer's
    rate must be rate; counts and mean follow."""
    n = total = 0
    for score, rate in steps:
        n += 1
        total += score
        expect(d.api.post("/v1/ratings", {"agent": agent, "score": score}), 200,
               'd["applied"] == 1', 'd["agents"][0]["rate"] == %r' % rate,
               'd["agents"][0]["ratings"] == %d' % n,
               'near(d["agents"][0]["mean_score"], %d / %d)' % (total, n))


# ---- 2. policy math -------------------------------------------------------------

@case("policy: r = clamp(r + 10*(score-3)) step by step from r0 100")
def t_policy_sequence(api):
    rate_steps(api, "ps1", (5, 120), (5, 140), (1, 120), (4, 130), (3, 130), (2, 120),
               (1, 100), (1, 80))
    expect_agent(api.api, "ps1", 'd["rate"] == 80', 'd["ratings"] == 8',
                 'near(d["mean_score"], 22 / 8)', 'd["burst"] == 80')
    jcheck(api.cli("agent", "show", "ps1").json(), 'd["rate"] == 80', 'd["burst"] == 80')


@case("policy: clamped at per-agent and global r_min and r_max")
def t_policy_clamp(api):
    expect(put_agent(api, "pc-max", {"rate": 100, "r_max": 130}), 201, 'd["r_max"] == 130')
    rate_steps(api, "pc-max", (5, 120), (5, 130), (5, 130), (1, 110))
    expect(put_agent(api, "pc-min", {"rate": 30, "r_min": 5}), 201, 'd["r_min"] == 5')
    rate_steps(api, "pc-min", (1, 10), (1, 5), (1, 5), (5, 25))
    # The global bounds.
    expect(put_agent(api, "pc-hi", {"rate": 9990}), 201)
    rate_steps(api, "pc-hi", (5, 10000), (5, 10000), (2, 9990))
    expect(put_agent(api, "pc-lo", {"rate": 15}), 201)
    rate_steps(api, "pc-lo", (1, 1), (1, 1), (4, 11))
    # New bounds move the current rate into them.
    expect(put_agent(api, "pc-lo", {"r_min": 20}), 200, 'd["rate"] == 20', 'd["r_min"] == 20')
    jcheck(api.cli("agent", "show", "pc-lo").json(), 'd["rate"] == 20')


@case("policy: per-agent alpha 2.5 and 0")
def t_policy_alpha(api):
    expect(put_agent(api, "pa1", {"alpha": 2.5}), 201, 'd["alpha"] == 2.5', 'd["rate"] == 100')
    rate_steps(api, "pa1", (5, 105), (4, 107.5), (1, 102.5))
    expect(put_agent(api, "pa0", {"alpha": 0}), 201, 'd["alpha"] == 0')
    rate_steps(api, "pa0", (5, 100), (1, 100))


@case("policy: a pinned agent keeps its rate; ratings still counted")
def t_policy_pinned(api):
    expect(put_agent(api, "pp1", {"rate": 50, "pinned": True}), 201, 'd["pinned"] is True',
           'd["rate"] == 50')
    r = api.api.post("/v1/ratings", [{"agent": "pp1", "score": 5}, {"agent": "pp1", "score": 5},
                                     {"agent": "pp1", "score": 1}])
    expect(r, 200, 'd["applied"] == 3', 'len(d["agents"]) == 1', 'd["agents"][0]["agent"] == "pp1"',
           'd["agents"][0]["rate"] == 50', 'd["agents"][0]["ratings"] == 3',
           'near(d["agents"][0]["mean_score"], 11 / 3)')
    expect_agent(api.api, "pp1", 'd["rate"] == 50', 'd["ratings"] == 3',
                 'near(d["mean_score"], 11 / 3)', 'd["pinned"] is True',
                 'num(d["last_rating_ms"])')
    jcheck(api.cli("agent", "show", "pp1").json(), 'd["rate"] == 50', 'd["pinned"] is True')
    # Unpinned, ratings move it again from where it is.
    expect(put_agent(api, "pp1", {"pinned": False}), 200, 'd["pinned"] is False',
           'd["rate"] == 50')
    expect(api.api.post("/v1/ratings", {"agent": "pp1", "score": 5}), 200,
           'd["agents"][0]["rate"] == 70', 'd["agents"][0]["ratings"] == 4')
    expect_agent(api.api, "pp1", 'd["rate"] == 70', 'd["ratings"] == 4')


@case('burst "2s" = ceil(rate*2) tokens and follows the rate')
def t_burst_seconds(api):
    expect(put_agent(api, "bs1", {"rate": 100, "burst": "2s"}), 201, 'd["burst"] == 200',
           'd["burst_policy"] == "2s"')
    expect(api.api.post("/v1/ratings", {"agent": "bs1", "score": 5}), 200,
           'd["agents"][0]["rate"] == 120')
    expect_agent(api.api, "bs1", 'd["burst"] == 240', 'd["burst_policy"] == "2s"')
    jcheck(api.cli("agent", "show", "bs1").json(), 'd["burst"] == 240', 'd["rate"] == 120')
    # ceil(rate * seconds)
    expect(put_agent(api, "bs2", {"rate": 10.3, "burst": "2s", "alpha": 1}), 201,
           'd["burst"] == 21')
    expect(api.api.post("/v1/ratings", {"agent": "bs2", "score": 4}), 200,
           'near(d["agents"][0]["rate"], 11.3)')
    expect_agent(api.api, "bs2", 'd["burst"] == 23')
    expect(put_agent(api, "bs3", {"burst": "0.5s"}), 201, 'd["burst"] == 50',
           'd["burst_policy"] == "0.5s"')
    # The default: 1s of rate, following the rate.
    expect(api.api.post("/v1/ratings", {"agent": "bs4", "score": 1}), 200)
    expect_agent(api.api, "bs4", 'd["rate"] == 80', 'd["burst"] == 80',
                 'd["burst_policy"] == "1s"')


@case("burst in tokens stays fixed when the rate moves; bad bursts 400")
def t_burst_tokens(api):
    expect(put_agent(api, "bt1", {"rate": 100, "burst": 500}), 201, 'd["burst"] == 500',
           'd["burst_policy"] == 500', 'd["tokens"] == 500')
    expect(api.api.post("/v1/ratings", {"agent": "bt1", "score": 5}), 200,
           'd["agents"][0]["rate"] == 120')
    expect_agent(api.api, "bt1", 'd["burst"] == 500', 'd["rate"] == 120')
    jcheck(cli_ok(api, "agent", "show", "bt1"), 'd["burst"] == 500')
    for b in ('"2"', '0', '1.5', '"0s"', '"4000s"', '"s"', 'true', '-5'):
        expect_error(put_agent(api, "bt1", '{"burst":%s}' % b), 400, "bad_request", "burst")
    expect_agent(api.api, "bt1", 'd["burst"] == 500')


@case("PUT rate outside [r_min,r_max] 400; unknown field 400 naming it; nothing changed")
def t_put_invalid(api):
    for body in ('{"rate":20000}', '{"rate":0.5}', '{"rate":50,"r_min":60}',
                 '{"r_min":200,"r_max":100}', '{"rate":"fast"}', '{"alpha":-1}',
                 '{"pinned":"yes"}', '{"unit":"kbps"}'):
        expect_error(put_agent(api, "pi1", body), 400, "bad_request")
    expect_no_agent(api.api, "pi1")
    expect_error(put_agent(api, "pi1", {"rate": 20000}), 400, "bad_request", "rate")
    expect_error(put_agent(api, "pi1", {"rate": 5, "colour": "red"}), 400, "bad_request",
                 "colour")
    expect_no_agent(api.api, "pi1")
    expect(put_agent(api, "pi2", {"rate": 100}), 201)
    expect_error(put_agent(api, "pi2", {"rate": 20000}), 400, "bad_request", "rate")
    expect_error(put_agent(api, "pi2", {"r_max": 50, "rate": 60}), 400, "bad_request")
    expect_error(put_agent(api, "pi2", {"alpha": 3, "colour": "red"}), 400, "bad_request",
                 "colour")
    expect_agent(api.api, "pi2", 'd["rate"] == 100', 'd["r_max"] == 10000', 'd["alpha"] == 10')


@case("PUT changes and ratings keep a drained bucket drained")
def t_policy_keeps_level(api):
    """Policy changes and ratings switch the bucket's parameters in place:
    a drained bucket stays drained (no burst handed back)."""
    expect(put_agent(api, "kl1", {"rate": 1, "burst": 1000}), 201)
    expect(api.api.post("/v1/agents/kl1/drain", {"tokens": 1000}), 200, 'd["tokens"] < 1')
    expect(put_agent(api, "kl1", {"alpha": 5}), 200, 'd["tokens"] < 5')
    expect(put_agent(api, "kl1", {"rate": 2}), 200, 'd["tokens"] < 5', 'd["rate"] == 2')
    expect(api.api.post("/v1/ratings", {"agent": "kl1", "score": 5}), 200,
           'd["agents"][0]["rate"] == 12')
    expect_agent(api.api, "kl1", 'd["tokens"] < 40')
    expect(put_agent(api, "kl1", {"burst": "100s"}), 200, 'd["burst"] == 1200',
           'd["tokens"] < 40')
    expect(put_agent(api, "kl1", {"pinned": True}), 200, 'd["tokens"] < 40')
    jcheck(api.cli("agent", "show", "kl1").json(), 'd["tokens"] < 40', 'd["burst"] == 1200',
           'd["rate"] == 12')


@case("PUT with null fields returns them to the defaults")
def t_put_null_resets(api):
    expect(put_agent(api, "pn1", {"alpha": 2, "r_max": 500, "burst": 50, "pinned": True,
                                  "r_min": 3}), 201,
           'd["alpha"] == 2', 'd["r_max"] == 500', 'd["burst"] == 50', 'd["pinned"] is True',
           'd["r_min"] == 3')
    expect(put_agent(api, "pn1", {"alpha": None, "r_max": None, "burst": None, "pinned": None,
                                  "r_min": None}), 200,
           'd["alpha"] == 10', 'd["r_max"] == 10000', 'd["r_min"] == 1',
           'd["burst_policy"] == "1s"', 'd["burst"] == 100', 'd["pinned"] is False',
           'd["rate"] == 100')
    # Defaults again: ratings move it by alpha 10.
    expect(api.api.post("/v1/ratings", {"agent": "pn1", "score": 5}), 200,
           'd["agents"][0]["rate"] == 120')
    expect_agent(api.api, "pn1", 'd["burst"] == 120')


# ---- 3. dedup, 4. atomic batches ---------------------------------------------------

@case("the same id twice in one batch: applied once, counted as duplicate")
def t_dedup_batch(api):
    r = api.api.post("/v1/ratings", [{"id": "dd-1", "agent": "dd1", "score": 5},
                                     {"id": "dd-1", "agent": "dd1", "score": 5},
                                     {"id": "dd-2", "agent": "dd1", "score": 1},
                                     {"id": "dd-2", "agent": "dd1", "score": 1}])
    expect(r, 200, 'd["applied"] == 2', 'd["duplicates"] == 2',
           'd["agents"] == [{"agent": "dd1", "rate": 100, "mean_score": 3, "ratings": 2}]')
    expect_agent(api.api, "dd1", 'd["rate"] == 100', 'd["ratings"] == 2')


@case("the same id across requests (JSON and NDJSON): applied once")
def t_dedup_across(api):
    c = api.api
    one = {"id": "dx-1", "agent": "dx1", "score": 5}
    expect(c.post("/v1/ratings", one), 200, 'd["applied"] == 1', 'd["duplicates"] == 0')
    expect(c.post("/v1/ratings", one), 200, 'd["applied"] == 0', 'd["duplicates"] == 1')
    expect_agent(c, "dx1", 'd["rate"] == 120', 'd["ratings"] == 1')
    expect(c.ndjson("/v1/ratings", [one, {"id": "dx-2", "agent": "dx1", "score": 4}]), 200,
           'd["applied"] == 1', 'd["duplicates"] == 1',
           'd["agents"] == [{"agent": "dx1", "rate": 130, "mean_score": 4.5, "ratings": 2}]')
    expect(c.post("/v1/ratings", [{"id": "dx-2", "agent": "dx1", "score": 1},
                                  {"id": "dx-1", "agent": "dx1", "score": 1}]), 200,
           'd["applied"] == 0', 'd["duplicates"] == 2')
    # A duplicate has no effect at all: it does not create its agent.
    expect(c.post("/v1/ratings", {"id": "dx-1", "agent": "dx-new", "score": 5}), 200,
           'd["applied"] == 0', 'd["duplicates"] == 1')
    expect_no_agent(c, "dx-new")
    expect_agent(c, "dx1", 'd["rate"] == 130', 'd["ratings"] == 2', 'd["mean_score"] == 4.5')


POST_MANY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "post_many.py")


@case("10 concurrent clients: every rating applied once (ids shared by two clients too)")
def t_concurrent_ratings(env, api):
    expect(put_agent(api, "cc1", {"alpha": 1}), 201)
    # 8 clients at once, 50 ratings each (score 4: +1 each); and two
    # clients sending the same 100 ids at once (tests/daemon/post_many.py).
    clients = {"cc%d" % i: ("cc1", "50", "cc%d" % i, "4") for i in range(1, 9)}
    clients.update({"cc" + i: ("cc2", "100", "ccdup", "5") for i in "ab"})
    runs = {}
    for name, args in clients.items():
        out = env.path(env.unique(name) + ".json")
        runs[name] = (env.popen([sys.executable, POST_MANY, "127.0.0.1", str(api.port)]
                                + list(args), out), out)
    for name, (p, out) in runs.items():
        rc = p.wait()
        with open(out) as f:
            text = f.read()
        check(rc == 0 and text.startswith("{"),
              "post_many.py (client %s): exit %d: %s" % (name, rc, text[-1000:]))
        jcheck(json.loads(text), 'd["error"] is None', 'd["acked"] == 100 or d["acked"] == 50',
               'd["statuses"] == {"200": d["acked"]}', what="client %s: " % name)
    expect_agent(api.api, "cc1", 'd["ratings"] == 400', 'd["rate"] == 500',
                 'd["mean_score"] == 4')
    expect_agent(api.api, "cc2", 'd["ratings"] == 100', 'd["rate"] == 2100')


@case("a batch with bad items: 400 naming each index; no agent created")
def t_batch_atomic_new(api):
    c = api.api
    r = c.post("/v1/ratings", [{"agent": "at-ok", "score": 5}, {"agent": "at-ok", "score": 9},
                               {"agent": "at-ok", "score": 5, "bogus": 1}, {"score": 3},
                               {"agent": "at-ok2", "score": 4}, {"agent": "bad name!", "score": 3},
                               {"agent": "at-ok", "score": "5"}, {"agent": "at-ok", "score": 0}])
    field = '{e["index"]: e["field"] for e in d["errors"]}'
    expect(r, 400, 'd["error"] == "bad_request"', 'isstr(d["message"]) and d["message"] != ""',
           'sorted(e["index"] for e in d["errors"]) == [1, 2, 3, 5, 6, 7]',
           'all(keys(e) == {"index", "field", "reason"} for e in d["errors"])',
           'all(isstr(e["reason"]) and e["reason"] for e in d["errors"])',
           field + '[1] == "score"',
           '"bogus" in {e["index"]: e["field"] + " " + e["reason"] for e in d["errors"]}[2]',
           field + '[3] == "agent"', field + '[5] == "agent"', field + '[6] == "score"',
           field + '[7] == "score"')
    expect_no_agent(c, "at-ok")
    expect_no_agent(c, "at-ok2")
    # Ids of a refused batch are not remembered.
    expect(c.post("/v1/ratings", [{"id": "at-id", "agent": "at-ok3", "score": 5},
                                  {"agent": "at-ok3", "score": 6}]), 400,
           '[e["index"] for e in d["errors"]] == [1]')
    expect_no_agent(c, "at-ok3")
    expect(c.post("/v1/ratings", {"id": "at-id", "agent": "at-ok3", "score": 5}), 200,
           'd["applied"] == 1', 'd["duplicates"] == 0')


@case("a batch with a bad item leaves an existing agent unchanged")
def t_batch_atomic_existing(api):
    c = api.api
    expect(c.post("/v1/ratings", {"agent": "ae1", "score": 5}), 200)
    expect(c.post("/v1/ratings", [{"agent": "ae1", "score": 5},
                                  {"agent": "ae1", "score": 5, "ts": -1}]), 400,
           '[(e["index"], e["field"]) for e in d["errors"]] == [(1, "ts")]')
    expect_agent(c, "ae1", 'd["rate"] == 120', 'd["ratings"] == 1', 'd["mean_score"] == 5')
    nd = ('{"agent":"ae1","score":1}\n{"agent":\n{"agent":"ae1","score":1}\n'
          '{"agent":"ae1","score":1,"user":5}\n')
    expect(c.ndjson("/v1/ratings", nd), 400,
           'sorted(e["index"] for e in d["errors"]) == [1, 3]',
           '{e["index"]: e["field"] for e in d["errors"]}[3] == "user"')
    expect_agent(c, "ae1", 'd["rate"] == 120', 'd["ratings"] == 1', 'd["mean_score"] == 5')


# ---- 10. the rating-API tutorial's calls ---------------------------------------------

@case("tutorial: POST /bucket/{id} 201 capacity 5; GET /bucket/{id} tokens ~3")
def t_tutorial_bucket(api):
    c = api.api
    tut1 = {"capacity": 5, "refill_rate": 1, "initial_tokens": 3}
    expect(c.post("/bucket/tut1", tut1), 201, 'd["capacity"] == 5', 'd["refill_rate"] == 1',
           'd["agent_id"] == "tut1"', '3 <= d["tokens"] < 3.5')
    expect(c.get("/bucket/tut1"), 200, '{"tokens", "capacity", "refill_rate"} <= keys(d)',
           'd["capacity"] == 5', 'd["refill_rate"] == 1', '3 <= d["tokens"] < 4')
    # Again: an update.
    expect(c.post("/bucket/tut1", tut1), 200, 'd["capacity"] == 5')
    # A rate below the default r_min is taken as given; full by default.
    expect(c.post("/bucket/tut0", {"capacity": 10, "refill_rate": 0.5}), 201,
           'd["capacity"] == 10', 'd["refill_rate"] == 0.5', 'd["tokens"] == 10')
    expect_error(c.get("/bucket/tut-nobody"), 404, "not_found")
    expect_error(c.post("/bucket/tutx", {"capacity": 5}), 400, "bad_request")
    expect_error(c.post("/bucket/tutx", {"capacity": 5, "refill_rate": 1, "initial_tokens": 6}),
                 400, "bad_request", "initial_tokens")
    expect_no_agent(c, "tutx")


@case("tutorial: POST /rate 200 with score until the bucket is empty, then 429")
def t_tutorial_rate(api):
    c = api.api
    body = {"agent_id": "tut2", "event_type": "page_view", "metadata": {"path": "/x", "n": 1}}
    expect(c.post("/bucket/tut2", {"capacity": 5, "refill_rate": 1, "initial_tokens": 3}), 201)
    for _ in range(3):
        expect(c.post("/rate", body), 200, 'num(d["score"])', 'd["score"] == 0')
    r = c.post("/rate", body)
    expect(r, 429, 'd["allowed"] is False')
    check(re.fullmatch(r"[1-9][0-9]*", r.header("Retry-After") or ""), "429 without Retry-After",
          r.describe())
    # "score" is the agent's mean rating.
    expect(c.post("/bucket/tut3", {"capacity": 5, "refill_rate": 1}), 201)
    expect(c.post("/v1/ratings", [{"agent": "tut3", "score": 4}, {"agent": "tut3", "score": 5}]),
           200)
    expect(c.post("/rate", {"agent_id": "tut3", "event_type": "click", "metadata": {}}), 200,
           'd["score"] == 4.5')
    expect(c.post("/rate", {"agent_id": "tut3"}), 200, 'd["score"] == 4.5')
    expect_error(c.post("/rate", {"agent_id": "tut-nobody", "event_type": "click",
                                  "metadata": {}}), 404, "not_found")
    expect_error(c.post("/rate", {"event_type": "click", "metadata": {}}), 400, "bad_request",
                 "agent_id")


def handshake(d, path):
    """A WebSocket opening handshake on path; the connection is dropped."""
    c = WS.connect("127.0.0.1", d.port, path)
    c.drop()
    return c


@case("GET /v1/stream: WebSocket handshake 101 with the right Sec-WebSocket-Accept")
def t_stream_websocket(api):
    # The stream itself is tests/stream's; how other routes answer upgrade
    # requests is t_upgrade_header's job.
    c = handshake(api, "/v1/stream")
    check(c.status == 101 and c.accept_ok is True,
          "handshake: status %d, accept_ok %s, headers %s" % (c.status, c.accept_ok, c.headers))


@case("a request with WebSocket upgrade headers on /v1/agents/{a} gets an HTTP response")
def t_upgrade_header(api):
    # A request that carries WebSocket upgrade headers on a plain route
    # still gets an HTTP response (200 or an HTTP error), never raw text.
    expect(put_agent(api, "ug-get", {"rate": 42}), 201)
    c = handshake(api, "/v1/agents/ug-get")
    check(c.status in (200, 400, 404, 426, 501),
          "status %d, headers %s, body %r" % (c.status, c.headers, c.body[:500]))


def audit_problems(lines):
    """What is wrong in audit.log's lines after the API cases' calls."""
    def find(action, agent):
        return [x for x in lines if x.get("action") == action and x.get("agent") == agent]
    bad = []
    for x in lines:
        if not {"time_ms", "subject", "action", "agent", "before", "after"} <= set(x):
            bad.append("fields: %s" % x)
        if x.get("subject") != "":
            bad.append("subject with auth off: %s" % x)
    c = find("agent.create", "ag-put")
    if len(c) != 1 or c[0]["after"]["rate"] != 200 or c[0]["before"] is not None:
        bad.append("agent.create ag-put: %s" % c)
    u = find("agent.update", "ag-put")
    if not u or u[0]["before"]["rate"] != 200 or u[0]["after"]["rate"] != 300:
        bad.append("agent.update ag-put: %s" % u)
    d = find("agent.delete", "ag-del")
    if len(d) != 1 or d[0]["after"] is not None:
        bad.append("agent.delete ag-del: %s" % d)
    dr = find("agent.drain", "dr1")
    if not dr or dr[0]["after"].get("drained") != 300:
        bad.append("agent.drain dr1: %s" % dr)
    if not find("agent.reset", "dr1"):
        bad.append("no agent.reset dr1")
    ra = find("rule.add", "ru1")
    if len(ra) != 2 or {r["after"]["port"] for r in ra} != {0, 443}:
        bad.append("rule.add ru1: %s" % ra)
    if len(find("rule.delete", "ru1")) != 2 or len(find("rule.delete", "ru2")) != 1:
        bad.append("rule.delete ru1/ru2")
    return bad


@case("audit.log records create, update, delete, drain, reset, rule add/delete "
      "(the calls of t_agent_put_codes, t_agent_delete, t_reset_drain, t_rules)")
def t_audit_log(api_fresh):
    for calls in (t_agent_put_codes, t_agent_delete, t_reset_drain, t_rules):
        calls(api_fresh)
    path = os.path.join(api_fresh.state, "audit.log")
    check(os.path.exists(path) and os.path.getsize(path) > 0, "no %s" % path)
    with open(path) as f:
        text = f.read()
    try:
        lines = [json.loads(x) for x in text.splitlines()]
    except ValueError as e:
        raise Fail("audit.log: a line is not JSON (%s)\n%s" % (e, text[-2000:]))
    bad = audit_problems(lines)
    check(not bad, "\n".join("audit.log: " + b for b in bad), *text.splitlines()[-5:])
