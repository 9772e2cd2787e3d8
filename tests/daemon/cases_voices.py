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
    # The HTTP one (ar1 did not exist then) and the stream line (it did).
    check(d.metrics().val("agentgate_ratings_refused_total", reason="anonymous") == 2,
          "anonymous refusals")
    expect(d.api.get("/v1/agents/ar1/explain"), 200,
           'd["influence"]["refused"]["anonymous"] == 1')
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
      "--rating-token-rate limits a token's sub, tokens without one together; counted by "
      "whom")
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
    # Tokens without a subject (no sub, or "") share one bucket: 20, then refused.
    nosub = d.client(token(key, {"exp": "NOW+600", "scope": "ratings:write"}))
    empty = d.client(token(key, {"sub": "", "exp": "NOW+600", "scope": "ratings:write"}))
    expect(nosub.post("/v1/ratings", [{"agent": "il3", "user": "n%d" % i, "score": 3}
                                      for i in range(20)]), 200, 'd["applied"] == 20')
    r = empty.post("/v1/ratings", {"agent": "il3", "user": "n-last", "score": 3})
    check(r.status == 429 and "without a subject" in r.text, "a token without a sub: %d %s" %
          (r.status, r.text))
    m = t.get("/metrics").text
    check('agentgate_rating_intake_refused_total{by="user"} 2' in m and
          'agentgate_rating_intake_refused_total{by="token"} 2' in m and
          'agentgate_ratings_refused_total{reason="user_rate"} 2' in m and
          'agentgate_ratings_refused_total{reason="token_rate"} 2' in m, "metrics: %s" %
          [x for x in m.splitlines() if "refused" in x])
    # Each agent's explain counts the ratings refused that named it.
    adm = d.client(token(key, {"sub": "op", "exp": "NOW+600", "scope": "agents:admin"}))
    expect(adm.get("/v1/agents/il1/explain"), 200,
           'd["influence"]["refused"] == {"user_rate": 2, "token_rate": 0, "anonymous": 0}',
           'd["influence"]["damped"] == {"window": 0, "user_cap": 0}')
    expect(adm.get("/v1/agents/il2/explain"), 200,
           'd["influence"]["refused"]["token_rate"] == 1')
    d.stop()


@case("intake limits on streams: --rating-user-rate 1 on the ingest socket and stdin passes "
      "a user's first 10 lines, dead-letters the rest naming the user and when it would "
      "pass (limited in the reply), other users and anonymous lines pass; counted per agent")
def t_rating_intake_stream(env):
    sock = env.path("intake-stream.sock")
    d = env.daemon("intake-stream", "--rating-user-rate", "1", "--ingest-socket", sock).start()
    # An agent that exists (refusals of ratings for one not made yet count in
    # the metrics only).
    expect(d.api.put("/v1/agents/is1", {"rate": 100}), 201)
    lines = [{"agent": "is1", "user": "fast", "score": 1} for _ in range(15)]
    lines += [{"agent": "is1", "user": "other", "score": 5}, {"agent": "is1", "score": 3}]
    reply = ingest(sock, ndjson(lines))
    check(reply == {"applied": 12, "duplicates": 0, "invalid": 0, "rejected": 0,
                    "limited": 5}, "reply: %s" % reply)
    with open(os.path.join(d.state, "dead-letter.ndjson")) as f:
        dl = [json.loads(x) for x in f]
    check(len(dl) == 5 and all("user 'fast'" in x["reason"] and "--rating-user-rate" in
                               x["reason"] and "would pass in" in x["reason"] for x in dl) and
          [x["line"] for x in dl] == [11, 12, 13, 14, 15], "dead letters: %s" % dl)
    # 'fast' once (1), 'other' once (5), the anonymous one neutral: 100 - 20 + 20
    expect_agent(d.api, "is1", 'd["rate"] == 100', 'd["ratings"] == 12')
    expect(d.api.get("/v1/agents/is1/explain"), 200,
           'd["influence"]["refused"]["user_rate"] == 5')
    m = d.metrics()
    check(m.val("agentgate_ratings_refused_total", reason="user_rate") == 5 and
          m.val("agentgate_rating_intake_refused_total", by="user") == 5,
          "metrics: %s" % m.text)
    d.stop()
    # stdin: the same limit, the summary on stderr.
    src = env.path("intake-stdin.ndjson")
    with open(src, "w") as f:
        f.write(ndjson({"agent": "is2", "user": "fast", "score": 1} for _ in range(12)))
    d = env.daemon("intake-stdin", "--rating-user-rate", "1", "--stdin", stdin=src).start()
    d.wait_log("stdin closed", 10)
    check("10 applied, 0 duplicates, 0 invalid, 0 rejected, 2 limited" in d.log(),
          "stdin summary: %s" % d.log()[-500:])
    d.stop()


@case("--rating-user-cap 1: one user's voice counts one point from neutral at most: 1-star "
      "moves -alpha, 1 -> 5 moves +2 alpha, each cut counted (metric, explain); an agent's "
      "own user_cap 0.5 overrides it; null returns to the option")
def t_voice_user_cap(env):
    d = env.daemon("ucap", "--rating-user-cap", "1").start()
    c = d.api
    steps = (("u1", 1, 90), ("u1", 5, 110), ("u1", 4, 110), ("u2", 2, 100), ("u1", 3, 90))
    for user, score, rate in steps:
        expect(c.post("/v1/ratings", {"agent": "uc1", "user": user, "score": score}), 200,
               'd["agents"][0]["rate"] == %r' % rate)
    # Cut: 3->1, 1->5, 5->4 (from 5); not 3->2 nor 4->3.
    check(d.metrics().val("agentgate_ratings_damped_total", reason="user_cap") == 3,
          "user_cap metric")
    expect(c.get("/v1/agents/uc1/explain"), 200,
           'd["influence"]["damped"]["user_cap"] == 3',
           'd["influence"]["limits"]["user_cap"] == 1')
    expect(c.put("/v1/agents/uc2", {"rate": 100, "user_cap": 0.5}), 201,
           'd["influence"]["user_cap"] == 0.5')
    expect(c.post("/v1/ratings", {"agent": "uc2", "user": "a", "score": 1}), 200,
           'd["agents"][0]["rate"] == 95')
    expect(c.put("/v1/agents/uc2", {"user_cap": None}), 200, 'd["influence"]["user_cap"] == 1')
    # The voice of a now counts -1: the next rating moves from there.
    expect(c.post("/v1/ratings", {"agent": "uc2", "user": "a", "score": 5}), 200,
           'd["agents"][0]["rate"] == 115')
    d.stop()
    for bad in ("0", "2.5", "-1"):
        out = run_daemon(env, ["--rating-user-cap", bad], 2)
        check("rating-user-cap" in out, "%s: %s" % (bad, out[-300:]))


@case("agentgate agent set NAME max-change F change-window T wave-users N wave-hold yes "
      "user-cap K goes through agentgated (shown in the agent's JSON); 'default' returns one "
      "to the option; bad values exit 2 and change nothing; without agentgated exit 1")
def t_voice_cli_influence(env):
    d = env.daemon("ucli").start()
    r = d.cli("agent", "set", "ci1", "rate", "1000", "max-change", "0.2", "change-window",
              "30m", "wave-users", "40", "wave-hold", "yes", "user-cap", "1.5")
    check(r.rc == 0, "agent set", r.describe())
    expect(d.api.get("/v1/agents/ci1"), 200,
           'd["influence"] == {"max_change": 0.2, "change_window_s": 1800, "wave_users": 40, '
           '"wave_hold": True, "user_cap": 1.5}')
    r = d.cli("agent", "set", "ci1", "max-change", "default", "user-cap", "default")
    check(r.rc == 0, "agent set default", r.describe())
    expect(d.api.get("/v1/agents/ci1"), 200, 'd["influence"]["max_change"] == 0',
           'd["influence"]["user_cap"] == 2', 'd["influence"]["wave_users"] == 40')
    for args in (("user-cap", "3"), ("user-cap", "0"), ("wave-users", "1.5"),
                 ("wave-hold", "maybe"), ("change-window", "0s"), ("max-change", "x"),
                 ("max-change",)):
        r = d.cli("agent", "set", "ci1", *args)
        check(r.rc == 2, "agent set %s: rc %d" % (args, r.rc), r.describe())
    expect(d.api.get("/v1/agents/ci1"), 200, 'd["influence"]["wave_users"] == 40',
           'd["influence"]["user_cap"] == 2')
    d.stop()
    r = d.cli("agent", "set", "ci1", "user-cap", "1")
    check(r.rc == 1 and "agentgated" in r.out, "without agentgated", r.describe())


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
    check(m.val("agentgate_ratings_damped_total", reason="window") >= 10,
          "damped after the restart")
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
      "wave, but a first move away from a neutral voice is; an operator's unpin lets "
      "ratings move it again")
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
    # Neutral voices first (they move and count nothing), then one star:
    # the first rating that leaves 3 counts as a new user's.
    expect(c.put("/v1/agents/wv2", {"rate": 9000, "r_max": 10000}), 201)
    expect(c.post("/v1/ratings", [{"agent": "wv2", "user": "n-%d" % i, "score": 3}
                                  for i in range(450)]), 200, 'd["applied"] == 450')
    expect(c.post("/v1/ratings", [{"agent": "wv2", "user": "n-%d" % i, "score": 1}
                                  for i in range(450)]), 200, 'd["applied"] == 450')
    expect(c.get("/v1/agents/wv2"), 200, 'd["pinned"] is True', 'd["rate"] == 1000')
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
           '"wave_users": 50, "wave_hold": True, "user_cap": 2}')
    expect(c.put("/v1/agents/ip2", {"rate": 1000}), 201,
           'd["influence"] == {"max_change": 0, "change_window_s": 3600, "wave_users": 0, '
           '"wave_hold": False, "user_cap": 2}')
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
                        ({"wave_users": 1.5}, "wave_users"), ({"wave_hold": "yes"}, "wave_hold"),
                        ({"user_cap": 0}, "user_cap"), ({"user_cap": 2.5}, "user_cap"),
                        ({"user_cap": "1"}, "user_cap")):
        expect_error(d.api.put("/v1/agents/ip1", body), 400, "bad_request", field)
    d.stop()


# Run by Debian's /usr/bin/python3 (python3-lmdb): makes the state store the
# layout it had before voices, windows and user_cap existed.
OLD_LAYOUT = r'''
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=16, subdir=True, lock=True)
with env.begin(write=True) as txn:
    for name in (b"voices", b"voice_log", b"voice_snap", b"windows"):
        txn.drop(env.open_db(name, txn=txn), delete=True)
    inf = env.open_db(b"influence", txn=txn)
    v = txn.get(b"mg2", db=inf)
    assert v is not None and len(v) == 40, v
    txn.put(b"mg2", v[:32], db=inf)
    # A voice as the first stores with voices kept it: a B-tree of
    # agent NUL user -> {score, pad[7], ts_ms}.
    voices = env.open_db(b"voices", txn=txn)
    txn.put(b"mg1\0legacy", bytes([1]) + bytes(7) + (1000).to_bytes(8, "little"), db=voices)
env.close()
'''

# The same, after a stop: the voices database emptied, its voice in the
# snapshot.
FOLDED = r'''
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=16, subdir=True, lock=True, readonly=True)
with env.begin() as txn:
    voices = env.open_db(b"voices", txn=txn, create=False)
    snap = env.open_db(b"voice_snap", txn=txn, create=False)
    log = env.open_db(b"voice_log", txn=txn, create=False)
    blobs = b"".join(v for _, v in txn.cursor(db=snap))
    print(txn.stat(voices)["entries"], txn.stat(log)["entries"], b"legacy" in blobs)
'''


@case("migration: a state store from before voices (no voices or windows database, a "
      "32-byte influence record) opens with its rates, statistics and limits as they were; "
      "users' ratings move on from there")
def t_voice_migration(env):
    import subprocess
    d = env.daemon("migrate").start()
    for score in (1, 1, 5):
        expect(d.api.post("/v1/ratings", {"agent": "mg1", "score": score}), 200)
    expect(d.api.post("/v1/ratings", {"agent": "mg1", "user": "x", "score": 4}), 200,
           'd["agents"][0]["rate"] == 90')
    expect(d.api.put("/v1/agents/mg2", {"rate": 1000, "max_change": 0.1}), 201)
    d.stop()
    p = subprocess.run(["/usr/bin/python3", "-c", OLD_LAYOUT, d.state], capture_output=True,
                       text=True)
    check(p.returncode == 0, "making the old layout: %s" % p.stderr)
    d.start()
    expect_agent(d.api, "mg1", 'd["rate"] == 90', 'd["ratings"] == 4', 'd["mean_score"] == 2.75')
    check(d.metrics().val("agentgate_rating_voices") == 1, "voices after the migration")
    # x's earlier voice is gone with the old layout: its rating is a first one;
    # the legacy voice (1 star) is kept: the same score moves nothing.
    expect(d.api.post("/v1/ratings", {"agent": "mg1", "user": "x", "score": 4}), 200,
           'd["agents"][0]["rate"] == 100')
    expect(d.api.post("/v1/ratings", [{"agent": "mg1", "user": "x", "score": 4},
                                      {"agent": "mg1", "user": "legacy", "score": 1}]), 200,
           'd["agents"][0]["rate"] == 100')
    expect(d.api.get("/v1/agents/mg1/explain"), 200, 'd["influence"]["voices"] == 2')
    expect(d.api.get("/v1/agents/mg2"), 200, 'd["influence"]["max_change"] == 0.1',
           'd["influence"]["user_cap"] == 2')
    expect(d.api.post("/v1/ratings", [{"agent": "mg2", "user": "w%d" % i, "score": 1}
                                      for i in range(20)]), 200,
           'd["agents"][0]["rate"] == 900')
    d.stop()
    p = subprocess.run(["/usr/bin/python3", "-c", FOLDED, d.state], capture_output=True,
                       text=True)
    check(p.returncode == 0 and p.stdout.split() == ["0", "0", "True"],
          "after the stop: %s %s" % (p.stdout, p.stderr))
    d.start()
    expect(d.api.get("/v1/agents/mg1/explain"), 200, 'd["influence"]["voices"] == 2')
    expect(d.api.post("/v1/ratings", {"agent": "mg1", "user": "legacy", "score": 1}), 200,
           'd["agents"][0]["rate"] == 100')
    d.stop()


@case("kill -9 with voices only in the voice log (no fold yet): a restart reads them back "
      "(same scores move nothing, explain and the metric count them); a deleted agent's "
      "voices stay gone; a log of more records than voices is folded into the snapshot")
def t_voice_crash(env):
    d = env.daemon("vcrash", "--max-body", "8MiB").start()
    expect(d.api.post("/v1/ratings", [{"agent": "vc1", "user": "u%d" % i, "score": 1}
                                      for i in range(50)]), 200,
           'd["agents"][0]["rate"] == 1')
    expect(d.api.post("/v1/ratings", [{"agent": "vc2", "user": "u%d" % i, "score": 5}
                                      for i in range(3)]), 200,
           'd["agents"][0]["rate"] == 160')
    expect(d.api.delete("/v1/agents/vc2"), 200)
    check(d.metrics().val("agentgate_rating_voice_log_records") == 54, "log records")
    d.kill9()
    d.start()
    m = d.metrics()
    check(m.val("agentgate_rating_voices") == 50 and
          m.val("agentgate_rating_voice_log_records") == 54, "after kill -9: %s" %
          [x for x in m.text.splitlines() if "voice" in x])
    expect(d.api.post("/v1/ratings", {"agent": "vc1", "user": "u7", "score": 1}), 200,
           'd["agents"][0]["rate"] == 1')
    expect(d.api.put("/v1/agents/vc2", {"rate": 100}), 201)
    expect(d.api.post("/v1/ratings", {"agent": "vc2", "user": "u1", "score": 5}), 200,
           'd["agents"][0]["rate"] == 120')
    expect(d.api.get("/v1/agents/vc2/explain"), 200, 'd["influence"]["voices"] == 1')
    # 65 536 records (the least a fold waits for) from 70 000 ratings of 5
    # users: folded once, the log restarted, nothing lost.
    body = "".join(json.dumps({"agent": "vc3", "user": "f%d" % (i % 5), "score": 1 + i % 5}) +
                   "\n" for i in range(70000))
    expect(d.api.post("/v1/ratings", body, ctype="application/x-ndjson"), 200,
           'd["applied"] == 70000')
    m = d.metrics()
    check(m.val("agentgate_rating_voice_log_records") < 65536 and
          m.val("agentgate_rating_voices") == 56, "after the fold: %s" %
          [x for x in m.text.splitlines() if "voice" in x])
    d.kill9()
    d.start()
    check(d.metrics().val("agentgate_rating_voices") == 56, "voices after the fold and kill -9")
    expect(d.api.get("/v1/agents/vc3/explain"), 200, 'd["influence"]["voices"] == 5')
    d.stop()


DAMAGE_LOG = r'''
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=16, subdir=True, lock=True)
with env.begin(write=True) as txn:
    log = env.open_db(b"voice_log", txn=txn, create=False)
    cur = txn.cursor(db=log)
    assert cur.last(), "no voice log value"
    v = bytearray(cur.value())
    v[1] = 200  # an agent length past the value
    txn.put(cur.key(), bytes(v), db=log)
env.close()
'''


@case("a damaged voice log refuses the start with status 3 naming it; nothing is written")
def t_voice_damaged_log(env):
    import subprocess
    d = env.daemon("vdamage").start()
    expect(d.api.post("/v1/ratings", {"agent": "vd1", "user": "u", "score": 1}), 200)
    d.kill9()  # no fold: the voice stays in the log
    p = subprocess.run(["/usr/bin/python3", "-c", DAMAGE_LOG, d.state], capture_output=True,
                       text=True)
    check(p.returncode == 0, "damaging the log: %s" % p.stderr)
    before = os.path.getmtime(os.path.join(d.state, "data.mdb"))
    out = run_daemon(env, d.argv()[1:], 3)
    check("voice log" in out and "damaged" in out, out[-400:])
    check(os.path.getmtime(os.path.join(d.state, "data.mdb")) == before, "data.mdb written")
