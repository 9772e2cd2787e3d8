# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The API: every endpoint and status code (daemon "api", shared)."""
import collections
import socket
import threading
import time

from agtest import case, check, expect, expect_agent, expect_error, expect_no_agent, jcheck
from agtest.api import recv_all
from agtest.prom import promtool_check
from fixtures import api  # noqa: F401  (the fixture, by name)


def put_agent(d, name, body):
    return d.api.put("/v1/agents/" + name, body)


def cli_ok(d, *args):
    """The CLI's JSON on d's pins; exit 0 required."""
    r = d.cli(*args)
    check(r.rc == 0, "agentgate %s failed" % " ".join(args), r.describe())
    return r.json()


@case("daemon starts on a fresh pin root and state dir; /healthz, /readyz 200; maps pinned")
def t_api_start(env):
    d = env.daemon("fresh").start()
    expect(d.api.get("/healthz"), 200, 'd == {"status": "ok"}')
    expect(d.api.get("/readyz"), 200, 'd == {"status": "ready"}')
    expect(d.api.get("/v1/agents"), 200, 'd == {"agents": [], "next": None}')
    expect(d.api.get("/v1/rules"), 200, 'd == []')
    # The maps were created at its pin root.
    r = d.cli("status")
    check(r.rc == 0, "agentgate status on the daemon's pin root failed", r.describe())
    st = r.json()
    check(st["agents"] == 0 and st["pin_root"] == d.pin, "status: %s" % st)
    d.stop()


@case("POST /v1/ratings one object: 200 applied/duplicates/agents with rate 120")
def t_ratings_single(api):
    r = api.api.post("/v1/ratings", {"id": "rs-1", "agent": "rs1", "user": "u1", "score": 5,
                                     "ts": 1700000000000, "comment": "good"})
    expect(r, 200, 'keys(d) == {"applied", "duplicates", "agents"}', 'd["applied"] == 1',
           'd["duplicates"] == 0', 'isint(d["applied"]) and isint(d["duplicates"])',
           'len(d["agents"]) == 1',
           'keys(d["agents"][0]) == {"agent", "rate", "mean_score", "ratings"}',
           'd["agents"][0] == {"agent": "rs1", "rate": 120, "mean_score": 5, "ratings": 1}',
           'isint(d["agents"][0]["ratings"]) and num(d["agents"][0]["rate"])')
    expect(api.api.get("/v1/agents/rs1"), 200, 'd["rate"] == 120', 'd["ratings"] == 1',
           'd["mean_score"] == 5', 'd["last_rating_ms"] == 1700000000000', 'd["burst"] == 120')
    # A ts from the future counts as the time it was applied.
    before = int(time.time() * 1000)
    expect(api.api.post("/v1/ratings", {"agent": "rs1f", "score": 3, "ts": 253402300799000}),
           200)
    expect(api.api.get("/v1/agents/rs1f"), 200,
           '%d <= d["last_rating_ms"] <= %d' % (before, int(time.time() * 1000)))


@case("POST /v1/ratings JSON array: rates, mean_score, ratings per agent")
def t_ratings_array(api):
    r = api.api.post("/v1/ratings", [{"agent": "ra1", "score": 4}, {"agent": "ra2", "score": 1},
                                     {"agent": "ra1", "score": 5}])
    expect(r, 200, 'd["applied"] == 3', 'd["duplicates"] == 0',
           'sorted(d["agents"], key=lambda a: a["agent"]) == ['
           '{"agent": "ra1", "rate": 130, "mean_score": 4.5, "ratings": 2}, '
           '{"agent": "ra2", "rate": 80, "mean_score": 1, "ratings": 1}]')
    expect_agent(api.api, "ra1", 'd["rate"] == 130', 'd["ratings"] == 2', 'd["mean_score"] == 4.5')
    expect_agent(api.api, "ra2", 'd["rate"] == 80', 'd["ratings"] == 1', 'd["mean_score"] == 1')


@case("POST /v1/ratings NDJSON (application/x-ndjson): applied; as JSON it is 400")
def t_ratings_ndjson(api):
    nd = ('{"agent":"rn1","score":5}\n\n{"agent":"rn1","score":2}\r\n'
          '{"agent":"rn2","score":3}\n')
    expect(api.api.ndjson("/v1/ratings", nd), 200, 'd["applied"] == 3', 'd["duplicates"] == 0',
           'sorted(d["agents"], key=lambda a: a["agent"]) == ['
           '{"agent": "rn1", "rate": 110, "mean_score": 3.5, "ratings": 2}, '
           '{"agent": "rn2", "rate": 100, "mean_score": 3, "ratings": 1}]')
    # With parameters on the media type, and without a final newline.
    r = api.api.post("/v1/ratings", '{"agent":"rn2","score":4}\n{"agent":"rn2","score":4}',
                     ctype="application/x-ndjson; charset=utf-8")
    expect(r, 200, 'd["applied"] == 2', 'len(d["agents"]) == 1', 'd["agents"][0]["agent"] == "rn2"',
           'd["agents"][0]["rate"] == 120', 'd["agents"][0]["ratings"] == 3',
           'near(d["agents"][0]["mean_score"], 11 / 3)')
    # The same lines sent as application/json are not one JSON text: 400,
    # nothing applied.
    expect(api.api.post("/v1/ratings", nd), 400, 'd["error"] == "bad_request"',
           'isstr(d["message"])', 'len(d["errors"]) >= 1')
    expect_agent(api.api, "rn1", 'd["ratings"] == 2', 'd["rate"] == 110')


@case("POST /v1/ratings invalid JSON, empty array, no body: 400; GET: 405 Allow POST")
def t_ratings_bad_requests(api):
    expect(api.api.post("/v1/ratings", "not json"), 400,
           'keys(d) == {"error", "message", "errors"}', 'd["error"] == "bad_request"',
           'd["message"] != ""', 'd["errors"][0]["index"] == 0',
           'keys(d["errors"][0]) == {"index", "field", "reason"}')
    expect(api.api.post("/v1/ratings", []), 400, 'd["error"] == "bad_request"',
           'd["errors"][0]["index"] == 0', '"no ratings" in d["errors"][0]["reason"]')
    expect(api.api.post("/v1/ratings"), 400, 'd["error"] == "bad_request"',
           'isstr(d["message"]) and d["message"] != ""')
    r = api.api.get("/v1/ratings")
    expect_error(r, 405, "method_not_allowed")
    check(r.header("Allow") == "POST", "Allow: %r, expected POST" % r.header("Allow"))


@case("GET /v1/agents pages with limit/after and next; bad limits 400")
def t_agents_paging(api):
    """The listing of every agent ends with this case's five: the agents of
    the shared daemon's other cases sort before "zzzz" (see fixtures.api)."""
    for a in ["zzzz-pg-%d" % i for i in range(1, 6)]:
        expect(put_agent(api, a, {"rate": 7}), 201)
    expect(api.api.get("/v1/agents?limit=2&after=zzzz-pg-"), 200,
           'keys(d) == {"agents", "next"}',
           '[a["agent"] for a in d["agents"]] == ["zzzz-pg-1", "zzzz-pg-2"]',
           'd["next"] == "zzzz-pg-2"',
           'all(a["rate"] == 7 and isint(a["slot"]) for a in d["agents"])')
    expect(api.api.get("/v1/agents?limit=2&after=zzzz-pg-2"), 200,
           '[a["agent"] for a in d["agents"]] == ["zzzz-pg-3", "zzzz-pg-4"]',
           'd["next"] == "zzzz-pg-4"')
    expect(api.api.get("/v1/agents?limit=2&after=zzzz-pg-4"), 200,
           '[a["agent"] for a in d["agents"]] == ["zzzz-pg-5"]', 'd["next"] is None')
    # Exactly at the end: no next page.
    expect(api.api.get("/v1/agents?limit=1&after=zzzz-pg-4"), 200,
           '[a["agent"] for a in d["agents"]] == ["zzzz-pg-5"]', 'd["next"] is None')
    # One page of everything, sorted by name.
    expect(api.api.get("/v1/agents?limit=1000"), 200, 'd["next"] is None',
           '[a["agent"] for a in d["agents"]] == sorted(a["agent"] for a in d["agents"])',
           '[a["agent"] for a in d["agents"]][-5:] == ["zzzz-pg-%d" % i for i in range(1, 6)]')
    for a in ("0", "1001", "abc", "-1"):
        expect_error(api.api.get("/v1/agents?limit=" + a), 400, "bad_request", "limit")


def slow_listing(port, got):
    """GET /v1/agents?limit=1 with its head sent in two parts a second apart;
    appends the answer's status (or the error) to got."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        try:
            s.sendall(b"GET /v1/agents?limit=1 HTTP/1.1\r\nHost: t\r\n")
            time.sleep(1)
            s.sendall(b"Connection: close\r\n\r\n")
            data = recv_all(s)
        finally:
            s.close()
        got.append(data.split(b" ", 2)[1].decode() if data else "none")
    except OSError as e:
        got.append(type(e).__name__)


@case("300 listings at once, each on its own worker: all 200 (pages are read by one thread: "
      "LMDB reader slots are per thread)")
def t_agents_many_workers(api):
    """Pages are read by one thread of the lister: LMDB ties a reader slot
    (126 of them) to each thread that ever reads, so pages read by
    the HTTP server's workers would be refused for good once 126 of them had
    served one."""
    got = []
    threads = [threading.Thread(target=slow_listing, args=(api.port, got)) for _ in range(300)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    answers = collections.Counter(got)
    check(answers == {"200": 300}, "answers: %s" % dict(answers))
    expect(api.api.get("/v1/agents?limit=1"), 200)


@case("GET /v1/agents/{a}: policy, tokens, counters, rules; unknown 404")
def t_agent_get(api):
    expect(put_agent(api, "ag-get", {"rate": 42, "burst": 7}), 201)
    expect_agent(api.api, "ag-get", 'd["agent"] == "ag-get"', 'isint(d["slot"])',
                 'd["rate"] == 42', 'd["burst"] == 7', 'd["burst_policy"] == 7',
                 'd["unit"] == "pps"', 'd["r0"] == 42', 'd["r_min"] == 1', 'd["r_max"] == 10000',
                 'd["alpha"] == 10', 'd["pinned"] is False',
                 'num(d["tokens"]) and 6.99 <= d["tokens"] <= 7', 'd["ratings"] == 0',
                 'd["mean_score"] == 0', 'd["last_rating_ms"] is None',
                 'd["passed_packets"] == d["passed_bytes"] == 0',
                 'd["dropped_packets"] == d["dropped_bytes"] == 0', 'd["rules"] == []',
                 'isint(d["created_ms"]) and d["created_ms"] > 1.6e12')
    expect_no_agent(api.api, "ag-nobody")


@case("PUT /v1/agents/{a}: 201 created, 200 updated, maps follow; bad bodies 400")
def t_agent_put_codes(api):
    expect(put_agent(api, "ag-put", {"rate": 200}), 201, 'd["agent"] == "ag-put"',
           'd["rate"] == 200', 'd["r0"] == 200', 'd["burst"] == 200', 'd["rules"] == []')
    expect(put_agent(api, "ag-put", {"rate": 300}), 200, 'd["agent"] == "ag-put"',
           'd["rate"] == 300', 'd["burst"] == 300')
    expect(put_agent(api, "ag-put", {"pinned": True}), 200, 'd["pinned"] is True',
           'd["rate"] == 300')
    expect(put_agent(api, "ag-put", {}), 200, 'd["rate"] == 300', 'd["pinned"] is True')
    # The maps follow.
    jcheck(cli_ok(api, "agent", "show", "ag-put"), 'd["rate"] == 300', 'd["burst"] == 300',
           'd["pinned"] is True')
    for body in ('{"rate":', []):
        expect_error(put_agent(api, "ag-put", body), 400, "bad_request")
    expect_error(api.api.put("/v1/agents/ag-put"), 400, "bad_request")
    for name in ("bad!name", "x" * 65):
        expect_error(put_agent(api, name, {"rate": 5}), 400, "bad_request")
    expect_agent(api.api, "ag-put", 'd["rate"] == 300')


@case("DELETE /v1/agents/{a}: 200, then 404; its rules go, in the maps too")
def t_agent_delete(api):
    expect(put_agent(api, "ag-del", {"rate": 5}), 201)
    expect(put_agent(api, "ag-del-next", {"rate": 5}), 201)
    expect(api.api.post("/v1/rules", {"prefix": "10.77.0.0/16", "agent": "ag-del"}), 201)
    expect(api.api.delete("/v1/agents/ag-del"), 200, 'd == {"deleted": "ag-del"}')
    expect_no_agent(api.api, "ag-del")
    expect_error(api.api.delete("/v1/agents/ag-del"), 404, "not_found", "ag-del")
    expect(api.api.get("/v1/rules"), 200,
           '[r for r in d if r["prefix"] == "10.77.0.0/16" or r["agent"] == "ag-del"] == []')
    # Gone from the maps too: agent and rule.
    r = api.cli("agent", "show", "ag-del")
    check(r.rc == 1, "agentgate agent show ag-del: exit %d, expected 1" % r.rc, r.describe())
    jcheck(api.cli("rule", "list").json(), '[r for r in d if r["prefix"] == "10.77.0.0/16"] == []')
    # The prefix is free for another agent.
    expect(api.api.post("/v1/rules", {"prefix": "10.77.0.0/16", "agent": "ag-del-next"}), 201)
    expect(api.api.delete("/v1/rules?prefix=10.77.0.0/16"), 200)


@case("drain lowers tokens by n; reset fills; bad drain bodies 400; unknown 404")
def t_reset_drain(api):
    c = api.api
    expect(put_agent(api, "dr1", {"rate": 1, "burst": 1000}), 201, 'd["burst"] == 1000',
           'd["tokens"] == 1000')
    expect(c.post("/v1/agents/dr1/drain", {"tokens": 300}), 200, 'keys(d) == {"agent", "tokens"}',
           'd["agent"] == "dr1"', '699.99 <= d["tokens"] <= 701')
    expect_agent(c, "dr1", '699.99 <= d["tokens"] <= 702')
    expect(c.post("/v1/agents/dr1/drain", {"tokens": 250}), 200, '449.99 <= d["tokens"] <= 452')
    expect(c.post("/v1/agents/dr1/drain", {"tokens": 100000}), 200, '0 <= d["tokens"] < 1')
    expect(c.post("/v1/agents/dr1/reset"), 200, 'd == {"agent": "dr1", "tokens": 1000}')
    expect_agent(c, "dr1", 'd["tokens"] == 1000')
    jcheck(api.cli("agent", "show", "dr1").json(), '999 <= d["tokens"] <= 1000')
    for body in ('', '{}', '{"tokens":0}', '{"tokens":1.5}', '{"tokens":"5"}',
                 '{"tokens":5,"x":1}'):
        expect_error(c.post("/v1/agents/dr1/drain", body), 400, "bad_request")
    expect_agent(c, "dr1", 'd["tokens"] == 1000')
    expect_error(c.post("/v1/agents/dr-nobody/drain", {"tokens": 5}), 404, "not_found",
                 "dr-nobody")
    expect_error(c.post("/v1/agents/dr-nobody/reset"), 404, "not_found", "dr-nobody")


@case("consume: 200 allowed/remaining, 429 with Retry-After and allowed false")
def t_consume(api):
    c = api.api
    expect(put_agent(api, "co1", {"rate": 1, "burst": 5}), 201, 'd["tokens"] == 5')
    expect(c.post("/v1/agents/co1/consume", {"tokens": 3}), 200,
           'keys(d) == {"allowed", "remaining"}', 'd["allowed"] is True',
           '1.99 <= d["remaining"] <= 2.6')
    r = c.post("/v1/agents/co1/consume", {"tokens": 5})
    expect(r, 429, 'd["allowed"] is False', 'd["error"] == "too_many_requests"',
           'isstr(d["message"])', 'num(d["remaining"]) and d["remaining"] < 3',
           'isint(d["retry_after_ms"]) and 2000 <= d["retry_after_ms"] <= 3010')
    ra = r.header("Retry-After") or ""
    check(ra.isdigit() and 2 <= int(ra) <= 3,
          "Retry-After: %r, expected 2 or 3 (seconds until 5 tokens at 1/s)" % ra, r.describe())
    # A refused consume takes nothing; no body: one token.
    expect(c.post("/v1/agents/co1/consume"), 200, 'd["allowed"] is True',
           '0.99 <= d["remaining"] <= 1.7')
    expect_error(c.post("/v1/agents/co1/consume", {"tokens": 0}), 400, "bad_request", "tokens")
    expect_error(c.post("/v1/agents/co1/consume", {"tokens": 6}), 400, "bad_request", "burst")
    expect_error(c.post("/v1/agents/co-nobody/consume", {"tokens": 1}), 404, "not_found",
                 "co-nobody")


@case("charge: into debt bounded by --charge-max-debt (60 s), consume refused until paid; "
      "through a parent and its quota set by the CLI beside agentgated; bad bodies 400, "
      "unknown agent 404")
def t_charge(api):
    c = api.api
    expect(put_agent(api, "ch1", {"rate": 10, "burst": 20, "pinned": True}), 201)
    # 20 in the bucket, 50 charged: 30 owed, paid in 3 s at 10/s (and one more token).
    expect(c.post("/v1/agents/ch1/charge", {"tokens": 50}), 200,
           'keys(d) == {"agent", "charged", "remaining", "retry_after_ms"}',
           'd["agent"] == "ch1" and d["charged"] == 50', '-30.5 < d["remaining"] < -29',
           '3000 <= d["retry_after_ms"] <= 3110')
    expect(c.post("/v1/agents/ch1/consume", {"tokens": 1}), 429, 'd["allowed"] is False',
           '2900 <= d["retry_after_ms"] <= 3110')
    # At most 60 s of refill (600 tokens) below empty, whatever is charged.
    expect(c.post("/v1/agents/ch1/charge", {"tokens": 10 ** 9}), 200,
           '-600.5 < d["remaining"] <= -599')
    # A new rate keeps the debt (in tokens): 600 owed at 100/s is 6 s more.
    expect(put_agent(api, "ch1", {"rate": 100, "r_max": 100}), 200)
    expect(c.post("/v1/agents/ch1/consume", {"tokens": 1}), 429,
           '5900 <= d["retry_after_ms"] <= 6110')
    expect_error(c.post("/v1/agents/ch1/charge", {"tokens": 0}), 400, "bad_request", "tokens")
    expect_error(c.post("/v1/agents/ch1/charge", {"tokens": "5"}), 400, "bad_request",
                 "tokens")
    expect_error(c.post("/v1/agents/ch1/charge", {}), 400, "bad_request", "tokens")
    expect_error(c.post("/v1/agents/ch1/charge", {"tokens": 1, "cost": 2}), 400,
                 "bad_request", "cost")
    expect_error(c.post("/v1/agents/ch-nobody/charge", {"tokens": 1}), 404, "not_found",
                 "ch-nobody")
    # A parent with a day quota, made by the CLI while agentgated owns the pins.
    cli_ok(api, "parent", "set", "chp", "rate", "1000", "burst", "1000", "quota", "100/day")
    expect(put_agent(api, "ch2", {"rate": 1000, "burst": 1000, "pinned": True}), 201)
    d = cli_ok(api, "agent", "set", "ch2", "parent", "chp")
    jcheck(d, 'd["parent"] == "chp" and d["rate"] == 1000')
    expect(c.post("/v1/agents/ch2/consume", {"tokens": 60}), 200, 'd["allowed"] is True',
           '39.5 < d["remaining"] <= 40')  # the parent's quota: 40 left today
    r = c.post("/v1/agents/ch2/consume", {"tokens": 41})
    expect(r, 429, 'd["allowed"] is False', 'd["retry_after_ms"] > 0',
           'd["retry_after_ms"] <= 86400 * 1000')
    expect(c.post("/v1/agents/ch2/charge", {"tokens": 50}), 200, '-10.5 < d["remaining"] < -9.5')
    p = cli_ok(api, "parent", "show", "chp")
    jcheck(p, 'd["quota"]["used"] == 110 and d["quota"]["remaining"] == -10',
           'd["children"] == ["ch2"]')
    m = api.metrics()
    bad = promtool_check(m.text)
    check(not bad, "promtool on the budget metrics: " + bad)
    m.check(
        'val("agentgate_quota_used", bucket="chp", window="day") == 110',
        'val("agentgate_quota_limit", bucket="chp", window="day") == 100',
        'val("agentgate_parent_packets_total", parent="chp", verdict="pass") == 0',
        'val("agentgate_parent_refusals_total", parent="chp", reason="quota") == 0',
        '0 <= val("agentgate_parent_tokens", parent="chp") <= 1000',
        'types["agentgate_parent_refusals_total"] == "counter"',
        'types["agentgate_quota_used"] == "gauge"')
    # The agent is agentgated's as before: its rate is still set through the API.
    expect(put_agent(api, "ch2", {"rate": 500}), 200, 'd["rate"] == 500')
    jcheck(cli_ok(api, "agent", "show", "ch2"), 'd["parent"] == "chp"')
    cli_ok(api, "agent", "set", "ch2", "quota", "1000/hour")
    expect(c.get("/v1/agents/ch2"), 200, 'd["parent"] == "chp"',
           'd["quota"]["limit"] == 1000 and d["quota"]["window"] == "hour"',
           'd["quota"]["used"] == 0 and d["quota"]["remaining"] == 1000')  # a new quota
    expect(c.get("/v1/agents?limit=1000"), 200,
           '[a["parent"] for a in d["agents"] if a["agent"] == "ch2"] == ["chp"]',
           '[a["quota"] for a in d["agents"] if a["agent"] == "ch1"] == [None]')
    cli_ok(api, "agent", "set", "ch2", "parent", "none", "quota", "none")
    expect(c.get("/v1/agents/ch2"), 200, 'd["parent"] is None and d["quota"] is None')
    cli_ok(api, "parent", "del", "chp")


@case("/v1/parents: PUT creates (201) and changes (200) a parent with rate, burst, unit, "
      "parent and quota; GET one and all with children and refusals; DELETE; bad fields 400 "
      "naming them, cycles 400, kinds and children 409, unknown 404; the CLI sees them")
def t_parents_api(api):
    c = api.api
    expect(c.put("/v1/parents/pa-org", {"rate": 100, "burst": 200,
                                        "quota": {"limit": 5000, "window": "day"}}), 201,
           'd["name"] == "pa-org" and d["rate"] == 100 and d["burst"] == 200',
           'd["unit"] == "pps" and d["parent"] is None and d["children"] == []',
           'd["quota"]["limit"] == 5000 and d["quota"]["window"] == "day"',
           'd["quota"]["used"] == 0 and 0 < d["quota"]["resets_in_s"] <= 86400',
           'd["refused"] == {"rate": 0, "quota": 0, "parent": 0}', 'd["tokens"] == 200')
    expect(c.put("/v1/parents/pa-team", {"rate": 50, "unit": "conn", "parent": "pa-org"}), 201,
           'd["parent"] == "pa-org" and d["unit"] == "conn" and d["quota"] is None')
    expect(c.put("/v1/parents/pa-team", {"rate": 60}), 200,
           'd["rate"] == 60 and d["parent"] == "pa-org"')
    expect(put_agent(api, "pa-a", {"rate": 10}), 201)
    cli_ok(api, "agent", "set", "pa-a", "parent", "pa-team")
    expect(c.get("/v1/parents/pa-team"), 200, 'd["children"] == ["pa-a"]')
    # Other cases of this daemon have parents of their own: these are the pa- ones.
    expect(c.get("/v1/parents"), 200,
           '[p["name"] for p in d["parents"] if p["name"].startswith("pa-")] == '
           '["pa-org", "pa-team"]',
           '[p["children"] for p in d["parents"] if p["name"] == "pa-org"] == [["pa-team"]]',
           'd["parents"] == sorted(d["parents"], key=lambda p: p["name"])')
    jcheck(cli_ok(api, "parent", "show", "pa-org"), 'd["quota"]["limit"] == 5000')
    # Refused, nothing changed.
    for body, field in (({"rate": 0}, "rate"), ({"rate": "5"}, "rate"), ({"burst": 1.5}, "burst"),
                        ({"unit": "kbps"}, "unit"), ({"parent": 5}, "parent"),
                        ({"parent": "a b"}, "parent"), ({"quota": 5}, "quota"),
                        ({"quota": {"limit": 5}}, "quota.window"),
                        ({"quota": {"window": "day"}}, "quota.limit"),
                        ({"quota": {"limit": 0, "window": "day"}}, "quota.limit"),
                        ({"quota": {"limit": 5, "window": "week"}}, "quota.window"),
                        ({"quota": {"limit": 5, "window": "day", "x": 1}}, "quota.x"),
                        ({"colour": "red"}, "colour")):
        expect_error(c.put("/v1/parents/pa-team", body), 400, "bad_request", field)
    expect_error(c.put("/v1/parents/pa-org", {"parent": "pa-team"}), 400, "bad_request", "cycle")
    expect_error(c.put("/v1/parents/pa-team", {"parent": "pa-ghost"}), 400, "bad_request",
                 "pa-ghost")
    expect_error(c.put("/v1/parents/pa-team", {"parent": "pa-a"}), 400, "bad_request", "pa-a")
    expect_error(c.put("/v1/parents/pa-a", {"rate": 5}), 409, "conflict", "pa-a")
    expect_error(c.get("/v1/parents/pa-a"), 409, "conflict", "agent")
    expect_error(c.get("/v1/parents/pa-ghost"), 404, "not_found", "pa-ghost")
    expect_error(c.delete("/v1/parents/pa-team"), 409, "conflict", "child")
    expect(c.get("/v1/parents/pa-team"), 200, 'd["rate"] == 60 and d["unit"] == "conn"',
           'd["parent"] == "pa-org"')
    # Dropped quota, unlinked, deleted.
    expect(c.put("/v1/parents/pa-org", {"quota": None}), 200, 'd["quota"] is None')
    cli_ok(api, "agent", "set", "pa-a", "parent", "none")
    expect(c.delete("/v1/parents/pa-team"), 200, 'd == {"deleted": "pa-team"}')
    expect(c.delete("/v1/parents/pa-org"), 200)
    expect(c.get("/v1/parents"), 200,
           'not [p for p in d["parents"] if p["name"].startswith("pa-")]')


@case("an application on the host consumes through libagentgate (examples/local_consume, "
      "ag_consume) from the bucket HTTP consume and the NIC use: together they never take "
      "more than burst + rate * t; unknown agent exit 2; refused checks say when to retry")
def t_consume_local(api):
    import subprocess
    import time
    c = api.api
    example = api.env.bin("examples/local_consume")
    expect(put_agent(api, "cl1", {"rate": 20, "burst": 30, "pinned": True}), 201)
    t0 = time.monotonic()
    p = subprocess.run([example, "--pin-root", api.pin, "cl1", "40"], capture_output=True,
                       text=True, timeout=30)
    lines = p.stdout.splitlines()
    local_ok = sum(1 for x in lines if x.startswith("allowed, "))
    refused = [x for x in lines if x.startswith("refused, retry after ")]
    check(p.returncode == 1 and len(lines) == 40 and local_ok >= 30 and
          local_ok + len(refused) == 40, "local_consume: rc %d %s %s" %
          (p.returncode, lines[:3], p.stderr))
    http_ok = 0
    for _ in range(20):
        r = c.post("/v1/agents/cl1/consume", {"tokens": 1})
        check(r.status in (200, 429), "HTTP consume: %d %s" % (r.status, r.text))
        http_ok += r.status == 200
    p = subprocess.run([example, "--pin-root", api.pin, "cl1", "20"], capture_output=True,
                       text=True, timeout=30)
    local_ok += sum(1 for x in p.stdout.splitlines() if x.startswith("allowed, "))
    t = time.monotonic() - t0
    check(local_ok + http_ok <= 30 + 20 * t + 1,
          "admitted %d (local %d, HTTP %d) in %.3f s: over burst 30 + 20/s" %
          (local_ok + http_ok, local_ok, http_ok, t))
    p = subprocess.run([example, "--pin-root", api.pin, "cl-nobody"], capture_output=True,
                       text=True, timeout=30)
    check(p.returncode == 2 and "cl-nobody" in p.stderr, "unknown agent: %d %s" %
          (p.returncode, p.stderr))


RULES_RU = [("10.20.0.0/24", 0, "ru1"), ("10.20.0.0/24", 443, "ru1"),
            ("2001:db8:20::/48", 80, "ru2")]


@case("rules: POST 201, 409 for another agent, 404 unknown agent, DELETE by body and query")
def t_rules(api):
    c = api.api
    expect(put_agent(api, "ru1", {}), 201)
    expect(put_agent(api, "ru2", {}), 201)
    expect(c.post("/v1/rules", {"prefix": "10.20.0.0/24", "port": 443, "agent": "ru1"}), 201,
           'd == {"prefix": "10.20.0.0/24", "port": 443, "agent": "ru1"}')
    expect(c.post("/v1/rules", {"prefix": "10.20.0.0/24", "agent": "ru1"}), 201,
           'd == {"prefix": "10.20.0.0/24", "port": 0, "agent": "ru1"}')
    expect(c.post("/v1/rules", {"prefix": "2001:db8:20::/48", "port": 80, "agent": "ru2"}), 201,
           'd["agent"] == "ru2"', 'd["port"] == 80')
    # The same prefix and port for another agent: conflict, nothing changed.
    expect_error(c.post("/v1/rules", {"prefix": "10.20.0.0/24", "port": 443, "agent": "ru2"}),
                 409, "conflict", "ru1")
    expect_error(c.post("/v1/rules", {"prefix": "10.21.0.0/24", "port": 443,
                                      "agent": "ru-nobody"}), 404, "not_found", "ru-nobody")
    for body in ('{"prefix":"10.20.0.0/33","agent":"ru1"}', '{"prefix":"10.20.0.0/24"}',
                 '{"agent":"ru1"}', '{"prefix":"10.22.0.0/24","agent":"ru1","port":70000}',
                 '{"prefix":"10.22.0.0/24","agent":"ru1","colour":"red"}'):
        expect_error(c.post("/v1/rules", body), 400, "bad_request")
    expect(c.get("/v1/rules"), 200,
           'sorted((r["prefix"], r["port"], r["agent"]) for r in d '
           'if r["agent"] in ("ru1", "ru2")) == %r' % RULES_RU,
           'all(keys(r) == {"prefix", "port", "agent"} for r in d)')
    expect_agent(c, "ru1", 'sorted((r["prefix"], r["port"]) for r in d["rules"]) == '
                 '[("10.20.0.0/24", 0), ("10.20.0.0/24", 443)]')
    jcheck(api.cli("rule", "list").json(), 'sorted((r["prefix"], r["port"] or 0, r["agent"]) '
           'for r in d if r["agent"] in ("ru1", "ru2")) == %r' % RULES_RU)
    # Delete by body, by query, by query without port (the wildcard).
    expect(c.delete("/v1/rules", {"prefix": "10.20.0.0/24", "port": 443}), 200,
           'd == {"deleted": "10.20.0.0/24", "port": 443}')
    expect(c.delete("/v1/rules?prefix=2001:db8:20::/48&port=80"), 200,
           'd == {"deleted": "2001:db8:20::/48", "port": 80}')
    expect(c.delete("/v1/rules?prefix=10.20.0.0/24"), 200,
           'd == {"deleted": "10.20.0.0/24", "port": 0}')
    expect_error(c.delete("/v1/rules?prefix=10.20.0.0/24&port=443"), 404, "not_found")
    expect_error(c.delete("/v1/rules"), 400, "bad_request", "prefix")
    expect(c.get("/v1/rules"), 200, '[r for r in d if r["agent"] in ("ru1", "ru2")] == []')
    jcheck(api.cli("rule", "list").json(), '[r for r in d if r["agent"] in ("ru1", "ru2")] == []')


@case("wrong method: 405 with Allow; unknown path: 404; error bodies {error,message}")
def t_method_path_errors(api):
    c = api.api
    expect(put_agent(api, "mp-get", {"rate": 42}), 201)
    for m, p, allow in (("PATCH", "/v1/agents/mp-get", "GET, PUT, DELETE"),
                        ("DELETE", "/v1/ratings", "POST"),
                        ("GET", "/v1/agents/mp-get/drain", "POST"),
                        ("PUT", "/v1/rules", "GET, POST, DELETE"), ("POST", "/metrics", "GET"),
                        ("POST", "/healthz", "GET"), ("DELETE", "/readyz", "GET"),
                        ("PUT", "/rate", "POST"), ("DELETE", "/bucket/mp-get", "POST, GET"),
                        ("PUT", "/v1/agents", "GET")):
        r = c.request(m, p)
        expect_error(r, 405, "method_not_allowed")
        check(r.header("Allow") == allow, "Allow: %r, expected %r" % (r.header("Allow"), allow),
              r.describe())
    for p in ("/nope", "/v1", "/v1/agentsx", "/v1/agents/mp-get/nope",
              "/v1/agents/mp-get/reset/x", "/v2/agents", "/bucket", "/metrics/x"):
        expect_error(c.get(p), 404, "not_found")
    # The agent is untouched by all that.
    expect_agent(c, "mp-get", 'd["rate"] == 42')
