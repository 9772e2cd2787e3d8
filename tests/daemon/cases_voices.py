# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""One voice per user: a user's new rating of an agent replaces their last
(the rate moves by alpha * (new - old)); ratings without a user follow
--anonymous-ratings (each, shared, refuse); voices survive restarts and go
with their agent. Defaults: r0 100, alpha 10, r 1..10000."""
import json
import os

from agtest import case, check, expect, expect_agent, expect_error
from agtest.daemon import run_daemon
from agtest.api import ingest
from fixtures import api  # noqa: F401  (the fixture, by name)


def ndjson(items):
    return "".join(json.dumps(x) + "\n" for x in items)


@case("one user posting 1000 one-star ratings in one NDJSON request moves the rate once "
      "(1500 -> 1480), all 1000 applied and counted; a second user moves it again")
def t_voice_flood(api):
    c = api.api
    expect(c.put("/v1/agents/vf1", {"rate": 1500}), 201)
    body = ndjson({"agent": "vf1", "user": "mallory", "score": 1} for _ in range(1000))
    expect(c.post("/v1/ratings", body, ctype="application/x-ndjson"), 200,
           'd["applied"] == 1000', 'd["agents"][0]["rate"] == 1480',
           'd["agents"][0]["ratings"] == 1000')
    expect(c.post("/v1/ratings", {"agent": "vf1", "user": "alice", "score": 1}), 200,
           'd["agents"][0]["rate"] == 1460')
    m = api.metrics()
    check(m.val("agentgate_ratings_replaced_total") >= 999, "replaced not counted")


@case("re-rating: a user's 1 then 5 leaves the rate at r0 + 20 (alpha * (5 - 3)); the same "
      "score again moves nothing; two users' voices add up; clamps still apply")
def t_voice_rerate(api):
    c = api.api
    steps = (("u1", 1, 80), ("u1", 5, 120), ("u1", 5, 120), ("u2", 4, 130), ("u1", 3, 110),
             ("u2", 3, 100))
    for user, score, rate in steps:
        expect(c.post("/v1/ratings", {"agent": "vr1", "user": user, "score": score}), 200,
               'd["agents"][0]["rate"] == %r' % rate)
    expect(c.put("/v1/agents/vr2", {"rate": 100, "r_max": 115}), 201)
    for user, score, rate in (("a", 5, 115), ("b", 5, 115), ("a", 1, 75)):
        expect(c.post("/v1/ratings", {"agent": "vr2", "user": user, "score": score}), 200,
               'd["agents"][0]["rate"] == %r' % rate)


@case("--anonymous-ratings: each (default) counts every anonymous rating; shared makes them "
      "one voice; refuse answers 400 naming user and dead-letters stream lines; bad value "
      "exit 2")
def t_voice_anonymous(env):
    d = env.daemon("anon-shared", "--anonymous-ratings", "shared").start()
    for score, rate in ((1, 80), (1, 80), (5, 120), (5, 120)):
        expect(d.api.post("/v1/ratings", {"agent": "as1", "score": score}), 200,
               'd["agents"][0]["rate"] == %r' % rate)
    d.stop()
    d = env.daemon("anon-each").start()
    for score, rate in ((1, 80), (1, 60)):
        expect(d.api.post("/v1/ratings", {"agent": "ae1", "score": score}), 200,
               'd["agents"][0]["rate"] == %r' % rate)
    d.stop()
    sock = env.path("anon-refuse.sock")
    d = env.daemon("anon-refuse", "--anonymous-ratings", "refuse", "--ingest-socket",
                   sock).start()
    expect_error(d.api.post("/v1/ratings", [{"agent": "ar1", "user": "u", "score": 4},
                                            {"agent": "ar1", "score": 4}]),
                 400, "bad_request", "item 1", "user")
    expect_error(d.api.get("/v1/agents/ar1"), 404, "not_found")
    reply = ingest(sock, ndjson([{"agent": "ar1", "user": "u", "score": 4},
                                 {"agent": "ar1", "score": 4}]))
    check(reply["applied"] == 1 and reply["rejected"] == 1, "ingest: %s" % reply)
    with open(os.path.join(d.state, "dead-letter.ndjson")) as f:
        dl = [json.loads(x) for x in f]
    check(len(dl) == 1 and "user" in dl[0]["reason"], "dead letters: %s" % dl)
    expect_agent(d.api, "ar1", 'd["rate"] == 110', 'd["ratings"] == 1')
    d.stop()
    out = run_daemon(env, ["--anonymous-ratings", "some"], 2)
    check("anonymous-ratings" in out, out[-300:])


@case("voices are stored: after a restart the same user's same score moves nothing, a new "
      "one moves by the difference; deleting the agent forgets its voices")
def t_voice_restart(env):
    d = env.daemon("voices").start()
    expect(d.api.post("/v1/ratings", {"agent": "vs1", "user": "bob", "score": 1}), 200,
           'd["agents"][0]["rate"] == 80')
    d.stop()
    d.start()
    expect(d.api.post("/v1/ratings", {"agent": "vs1", "user": "bob", "score": 1}), 200,
           'd["agents"][0]["rate"] == 80')
    expect(d.api.post("/v1/ratings", {"agent": "vs1", "user": "bob", "score": 2}), 200,
           'd["agents"][0]["rate"] == 90')
    check(d.metrics().val("agentgate_rating_voices") == 1, "rating_voices")
    expect(d.api.delete("/v1/agents/vs1"), 200)
    check(d.metrics().val("agentgate_rating_voices") == 0, "voices kept after the delete")
    expect(d.api.put("/v1/agents/vs1", {"rate": 100}), 201)
    expect(d.api.post("/v1/ratings", {"agent": "vs1", "user": "bob", "score": 2}), 200,
           'd["agents"][0]["rate"] == 90')
    d.stop()


@case("the pipelines users have: POST /rating {user_id, item_id, rating}; {agentId, userId, "
      "score, timestamp} and RatingEvent {id, productId, userId, score, comment, timestamp} "
      "on HTTP and the ingest socket; timestamps in ms or ISO 8601; a field under two names "
      "400; --rating-fields adds names, a bad one exits 2")
def t_rating_shapes(env):
    sock = env.path("shapes.sock")
    d = env.daemon("shapes", "--ingest-socket", sock,
                   "--rating-fields", "agent=sku,user=customer,score=stars").start()
    c = d.api
    expect(c.post("/rating", {"user_id": "u1", "item_id": "crdt-1", "rating": 4}), 200,
           'd["applied"] == 1', 'd["agents"][0]["rate"] == 110')
    expect(c.post("/v1/ratings", {"agentId": "fb-1", "userId": "u2", "score": 5,
                                  "timestamp": 1700000000000}), 200, 'd["applied"] == 1')
    expect(c.get("/v1/agents/fb-1"), 200, 'd["last_rating_ms"] == 1700000000000')
    ev = {"id": "ev-1", "productId": "kf-1", "userId": "u3", "score": 2, "comment": "slow",
          "timestamp": "2026-12-06T20:00:00.123+01:00"}
    expect(c.post("/v1/ratings", ev), 200, 'd["applied"] == 1', 'd["agents"][0]["rate"] == 90')
    expect(c.get("/v1/agents/kf-1"), 200, 'd["last_rating_ms"] == 1796583600123')
    expect(c.post("/v1/ratings", ev), 200, 'd["duplicates"] == 1')
    reply = ingest(sock, ndjson([
        {"agentId": "fb-2", "userId": "u4", "score": 1, "timestamp": "2026-12-06T19:00:00Z"},
        {"id": "ev-2", "productId": "kf-2", "userId": "u5", "score": 4, "comment": "",
         "timestamp": 1796583600000},
        {"sku": "s-1", "customer": "c1", "stars": 5}]))
    check(reply["applied"] == 3, "ingest: %s" % reply)
    expect(c.get("/v1/agents/fb-2"), 200, 'd["last_rating_ms"] == 1796583600000')
    expect(c.get("/v1/agents/s-1"), 200, 'd["rate"] == 120')
    for body, field in (({"agent": "x", "agentId": "x", "score": 3}, "agent"),
                        ({"productId": "x", "item_id": "y", "score": 3}, "agent"),
                        ({"agentId": "x", "score": 3, "timestamp": "yesterday"}, "ts"),
                        ({"agentId": "x", "score": 3, "timestamp": "2026-13-01T00:00:00Z"},
                         "ts"),
                        ({"agentId": "x", "stars": 3, "rating": 4}, "score")):
        expect(c.post("/v1/ratings", body), 400, 'd["error"] == "bad_request"',
               'd["errors"][0]["field"] == %r' % field)
    expect(c.post("/v1/ratings", {"agentId": "x", "score": 3, "why": 1}), 400,
           '"unknown field \'why\'" in d["errors"][0]["reason"]')
    d.stop()
    for spec in ("agent", "agent=", "colour=c", "agent=user", "agent=a,user=b,score=c," * 6):
        out = run_daemon(env, ["--rating-fields", spec], 2)
        check("rating fields" in out, "%r: %s" % (spec, out[-300:]))


@case("intake limits: --rating-user-rate 1 lets a user send 10 at once, then 429 with "
      "Retry-After (also on POST /rating), nothing applied, other users pass; "
      "--rating-token-rate limits a token's sub; counted by whom")
def t_rating_intake(env):
    from cases_auth import new_key, open_daemon
    from agtest.jwt import token
    key = new_key(env.path("intake.key"))
    d = open_daemon(env, "intake", "--auth-key-file", key, "--rating-user-rate", "1",
                    "--rating-token-rate", "2")
    t = d.client(token(key, {"sub": "pipeline-1", "exp": "NOW+600",
                             "scope": "ratings:write metrics:read"}))
    burst = [{"agent": "il1", "user": "fast", "score": 4} for _ in range(10)]
    expect(t.post("/v1/ratings", burst), 200, 'd["applied"] == 10')
    r = t.post("/v1/ratings", {"agent": "il1", "user": "fast", "score": 1})
    check(r.status == 429 and int(r.header("Retry-After") or 0) >= 1 and
          "user 'fast'" in r.text, "over the user rate: %d %s %s" % (r.status, r.headers,
                                                                     r.text))
    r = t.post("/rating", {"item_id": "il1", "user_id": "fast", "rating": 1})
    check(r.status == 429, "POST /rating over the user rate: %d" % r.status)
    expect(t.get("/v1/agents/il1"), 200, 'd["ratings"] == 10', 'd["rate"] == 110')
    expect(t.post("/v1/ratings", {"agent": "il1", "user": "slow", "score": 5}), 200)
    # The token: 2/s, burst 20; 11 taken above, 9 more, then refused.
    expect(t.post("/v1/ratings", [{"agent": "il2", "user": "u%d" % i, "score": 3}
                                  for i in range(9)]), 200, 'd["applied"] == 9')
    r = t.post("/v1/ratings", {"agent": "il2", "user": "another", "score": 3})
    check(r.status == 429 and "pipeline-1" in r.text, "over the token rate: %d %s" %
          (r.status, r.text))
    m = t.get("/metrics").text
    check('agentgate_rating_intake_refused_total{by="user"} 2' in m and
          'agentgate_rating_intake_refused_total{by="token"} 1' in m, "metrics: %s" %
          [x for x in m.splitlines() if "intake" in x])
    d.stop()


@case("--rating-max-change 0.5 per --rating-change-window: a wave of 30 new users' one-star "
      "ratings takes 1000 to 500, not 400 (counted damped, every voice kept); within the "
      "window across a restart the bound holds; after it the rate moves again")
def t_rating_damping(env):
    import time
    d = env.daemon("damp", "--rating-max-change", "0.5", "--rating-change-window", "4s").start()
    c = d.api
    expect(c.put("/v1/agents/dw1", {"rate": 1000}), 201)
    wave = [{"agent": "dw1", "user": "new-%d" % i, "score": 1} for i in range(30)]
    expect(c.post("/v1/ratings", wave), 200, 'd["applied"] == 30',
           'd["agents"][0]["rate"] == 500')
    d.stop()
    d.start()
    expect(d.api.post("/v1/ratings", [{"agent": "dw1", "user": "late-%d" % i, "score": 1}
                                      for i in range(10)]), 200,
           'd["agents"][0]["rate"] == 500')
    m = d.metrics()
    check(m.val("agentgate_ratings_damped_total") >= 10, "damped after the restart")
    expect(d.api.get("/v1/agents/dw1/explain"), 200,
           'd["influence"]["window"]["damped"] == 15', 'd["influence"]["window"]["base"] == 1000',
           'd["influence"]["voices"] == 40')
    check(m.val("agentgate_rating_voices") == 40, "voices %s" % m.val("agentgate_rating_voices"))
    # A voice changing its mind moves the rate up within the bound.
    expect(d.api.post("/v1/ratings", {"agent": "dw1", "user": "new-0", "score": 5}), 200,
           'd["agents"][0]["rate"] == 540')
    time.sleep(4.2)
    expect(d.api.post("/v1/ratings", {"agent": "dw1", "user": "after", "score": 1}), 200,
           'd["agents"][0]["rate"] == 520')
    d.stop()


@case("--rating-wave 400 --rating-wave-hold yes: 500 new users' one-star ratings within the "
      "window flag one wave (stream rating_wave, metric, log), pin the agent at its rate "
      "then (audited agent.hold), the rest move nothing; re-ratings of known users are no "
      "wave; an operator's unpin lets ratings move it again")
def t_rating_wave(env):
    from agtest.ws import WS
    d = env.daemon("wave", "--rating-wave", "400", "--rating-wave-hold", "yes",
                   "--rating-change-window", "1h").start()
    c = d.api
    ws = WS.connect("127.0.0.1", d.port, "/v1/stream?topics=rating.agent.wv1")
    check(ws.status == 101, "stream handshake")
    expect(c.put("/v1/agents/wv1", {"rate": 9000, "r_max": 10000}), 201)
    for i in range(5):  # known users first: their re-ratings are no wave
        expect(c.post("/v1/ratings", {"agent": "wv1", "user": "old-%d" % i, "score": 4}), 200)
    for i in range(5):
        expect(c.post("/v1/ratings", {"agent": "wv1", "user": "old-%d" % i, "score": 1}), 200)
    rate = c.get("/v1/agents/wv1").json()["rate"]
    check(rate == 8900, "before the wave: %s" % rate)
    expect(c.post("/v1/ratings", [{"agent": "wv1", "user": "new-%d" % i, "score": 1}
                                  for i in range(500)]), 200, 'd["applied"] == 500')
    # The known users' first ratings went up: the 400th new user's makes the
    # wave, its move applied (8900 - 400 * 20), the 100 after it none.
    expect(c.get("/v1/agents/wv1"), 200, 'd["pinned"] is True', 'd["rate"] == 900')
    got = [m for m in ws.collect(2) if m.get("type") == "rating_wave"]
    check(len(got) == 1 and got[0]["data"]["direction"] == "down" and
          got[0]["data"]["new_users"] == 400 and got[0]["data"]["held"] is True,
          "stream: %s" % got)
    check(d.metrics().val("agentgate_rating_waves_total", direction="down") == 1, "metric")
    check("a rating wave" in d.log(), "no log line")
    with open(os.path.join(d.state, "audit.log")) as f:
        holds = [json.loads(x) for x in f if '"agent.hold"' in x]
    check(len(holds) == 1 and holds[0]["subject"] == "agentgated (rating wave)", "audit %s" % holds)
    expect(c.get("/v1/agents/wv1/explain"), 200, 'd["influence"]["voices"] == 505',
           'd["influence"]["window"]["wave"] is True',
           'd["influence"]["window"]["new_down"] == 500', 'd["policy"]["pinned"] is True',
           'd["policy"]["pinned_by"]["subject"] == "agentgated (rating wave)"')
    expect(c.put("/v1/agents/wv1", {"pinned": False}), 200)
    expect(c.post("/v1/ratings", {"agent": "wv1", "user": "late-1", "score": 1}), 200,
           'd["agents"][0]["rate"] == 880')
    ws.close()
    d.stop()


@case("influence limits per agent: max_change, change_window, wave_users, wave_hold in PUT "
      "override the options for that agent only (shown in its JSON, audited, kept across a "
      "restart); null goes back to the options; bad values 400 naming the field")
def t_rating_influence_per_agent(env):
    d = env.daemon("infl").start()
    c = d.api
    expect(c.put("/v1/agents/ip1", {"rate": 1000, "max_change": 0.1, "change_window": "1h",
                                     "wave_users": 50, "wave_hold": True}), 201,
           'd["influence"] == {"max_change": 0.1, "change_window_s": 3600, '
           '"wave_users": 50, "wave_hold": True}')
    expect(c.put("/v1/agents/ip2", {"rate": 1000}), 201,
           'd["influence"] == {"max_change": 0, "change_window_s": 3600, "wave_users": 0, '
           '"wave_hold": False}')
    wave = lambda a: [{"agent": a, "user": "w-%d" % i, "score": 1} for i in range(20)]
    expect(c.post("/v1/ratings", wave("ip1")), 200, 'd["agents"][0]["rate"] == 900')
    expect(c.post("/v1/ratings", wave("ip2")), 200, 'd["agents"][0]["rate"] == 600')
    with open(os.path.join(d.state, "audit.log")) as f:
        line = [json.loads(x) for x in f if '"ip1"' in x and '"agent.create"' in x][0]
    check(line["after"]["influence"]["max_change"] == 0.1, "audit: %s" % line)
    d.stop()
    d.start()
    expect(d.api.get("/v1/agents/ip1"), 200, 'd["influence"]["max_change"] == 0.1')
    expect(d.api.post("/v1/ratings", {"agent": "ip1", "user": "w-x", "score": 1}), 200,
           'd["agents"][0]["rate"] == 900')
    expect(d.api.put("/v1/agents/ip1", {"max_change": None}), 200,
           'd["influence"]["max_change"] == 0')
    expect(d.api.post("/v1/ratings", {"agent": "ip1", "user": "w-y", "score": 1}), 200,
           'd["agents"][0]["rate"] == 880')
    for body, field in (({"max_change": -1}, "max_change"), ({"max_change": 101}, "max_change"),
                        ({"change_window": "0s"}, "change_window"),
                        ({"change_window": "31d"}, "change_window"),
                        ({"wave_users": 1.5}, "wave_users"), ({"wave_hold": "yes"}, "wave_hold")):
        expect_error(d.api.put("/v1/agents/ip1", body), 400, "bad_request", field)
    d.stop()
