# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Explain: where a rate came from (daemons with an auth key, so the
history carries real JWT subjects).

GET /v1/agents/{a}/explain: the ratings that moved the rate (a duplicate id
and ratings while pinned left out), the operator changes and who pinned it;
the CLI reads the same history from the state dir with the daemon stopped,
writing nothing there; a state dir that is not one is an error; a restart
keeps the history.
"""
import hashlib
import os
import shutil

from agtest import case, check, expect, expect_error, fixture, jcheck
from agtest.checks import isint
from agtest.jwt import token
from cases_auth import new_key


class Ex:
    """A daemon with an auth key, and clients with the tokens of its users."""

    def __init__(self, env, name):
        self.key = new_key(env.path(env.unique(name) + ".key"))
        self.d = env.daemon(name, "--auth-key-file", self.key).start()
        self.alice = self.client("alice@example.com", "agents:admin")
        self.bob = self.client("bob", "agents:admin")
        self.rater = self.client("rater", "ratings:write")
        self.reader = self.client("grafana", "metrics:read")

    def client(self, sub, scope):
        return self.d.client(token(self.key, {"sub": sub, "exp": "NOW+3600", "scope": scope}))

    def explain(self, agent):
        return self.reader.get("/v1/agents/%s/explain" % agent)


@fixture
def explain_daemon(env):
    """The explain daemon the cases on agents of their own share."""
    ex = Ex(env, "ex")
    yield ex
    ex.d.stop()


@fixture(scope="case")
def explain_own(env):
    """An explain daemon of the case's own, which it stops or restarts."""
    ex = Ex(env, "exown")
    yield ex
    ex.d.stop()


EX1_CHECKS = (
    'keys(d) == {"agent", "answered_by", "source", "explanation", "rate", "policy", "stats", '
    '"ratings", "ratings_recorded", "changes", "changes_recorded", "live", "path", '
    '"influence", "created_ms", "updated_ms"}',
    '[l["name"] for l in d["path"]["levels"]] == ["ex1"]', 'd["path"]["limited_by"] is None',
    'd["path"]["levels"][0]["kind"] == "agent" and d["path"]["levels"][0]["quota"] is None',
    'd["influence"]["voices"] == 5', 'd["influence"]["window"] is None',
    'd["agent"] == "ex1"', 'd["answered_by"] == "agentgated"', 'd["source"] == "pinned"',
    'd["rate"] == 40',
    '[(r["id"], r["user"], r["score"], r["rate_before"], r["rate_after"]) for r in d["ratings"]]'
    ' == [("e1", "u1", 5, 100, 120), ("e2", "u2", 4, 120, 130), ("e3", "u3", 1, 130, 110)]',
    '[r["time_ms"] for r in d["ratings"]] == [1700000000001, 1700000000002, 1700000000003]',
    lambda d: all(isint(r["applied_ms"]) and r["applied_ms"] >= d["created_ms"]
                  for r in d["ratings"]),
    'd["ratings_recorded"] == 3', 'd["stats"]["ratings"] == 5',
    '[(c["subject"], c["action"]) for c in d["changes"]] == [("alice@example.com", '
    '"agent.create"), ("bob", "agent.update"), ("alice@example.com", "agent.drain"), '
    '("bob", "rule.add")]',
    'd["changes_recorded"] == 4',
    '[c["time_ms"] for c in d["changes"]] == sorted(c["time_ms"] for c in d["changes"])',
    'd["changes"][0]["before"] is None',
    'd["changes"][0]["after"] == {"rate": 100, "burst": 100, "unit": "pps", "r_min": 1, '
    '"r_max": 10000, "alpha": 10, "pinned": False, "ttl": 0}',
    'd["changes"][1]["before"] == {"rate": 110, "burst": 110, "pinned": False}',
    'd["changes"][1]["after"] == {"rate": 40, "burst": 40, "pinned": True}',
    'd["changes"][2]["after"]["drained"] == 5',
    'd["changes"][3]["before"] is None',
    'd["changes"][3]["after"] == {"prefix": "10.78.0.0/16", "port": 0, "agent": "ex1"}',
    'd["policy"]["pinned"] is True',
    'd["policy"]["pinned_by"] == {"subject": "bob", "time_ms": d["changes"][1]["time_ms"]}',
    '(d["policy"]["r0"], d["policy"]["alpha"], d["policy"]["r_min"], d["policy"]["r_max"]) '
    '== (40, 10, 1, 10000)',
    '(d["policy"]["burst"], d["policy"]["burst_policy"], d["policy"]["unit"]) '
    '== (40, "1s", "pps")',
    'sorted(d["policy"]["own"]) == ["pinned", "r0"]',
    'd["policy"]["defaults_from"] == "agentgated"',
    '(d["live"]["rate"], d["live"]["burst"], d["live"]["pinned"]) == (40, 40, True)',
    'd["live"]["tokens"] <= 40', '"bob" in d["explanation"]')


def ex1_history(ex):
    """Agent ex1 with ratings (duplicates among them), a pin by bob, a
    drain and a rule; its explain answer, checked, as JSON."""
    expect(ex.alice.put("/v1/agents/ex1", {"rate": 100}), 201)
    # e1 twice in one batch, e2 again in the next: each applied once.
    r = ex.rater.post("/v1/ratings", [
        {"id": "e1", "agent": "ex1", "user": "u1", "score": 5, "ts": 1700000000001},
        {"id": "e2", "agent": "ex1", "user": "u2", "score": 4, "ts": 1700000000002},
        {"id": "e1", "agent": "ex1", "user": "u1", "score": 5, "ts": 1700000000009}])
    expect(r, 200, 'd["applied"] == 2', 'd["duplicates"] == 1')
    r = ex.rater.ndjson("/v1/ratings", [
        {"id": "e3", "agent": "ex1", "user": "u3", "score": 1, "ts": 1700000000003},
        {"id": "e2", "agent": "ex1", "user": "u2", "score": 4}])
    expect(r, 200, 'd["applied"] == 1', 'd["duplicates"] == 1', 'd["agents"][0]["rate"] == 110')
    # Pinned by bob at 40: ratings still count, they do not move it.
    expect(ex.bob.put("/v1/agents/ex1", {"rate": 40, "pinned": True}), 200, 'd["rate"] == 40',
           'd["pinned"] is True')
    r = ex.rater.post("/v1/ratings", [{"id": "e4", "agent": "ex1", "user": "u4", "score": 5},
                                      {"id": "e5", "agent": "ex1", "user": "u5", "score": 1}])
    expect(r, 200, 'd["applied"] == 2', 'd["agents"][0]["rate"] == 40')
    expect(ex.alice.post("/v1/agents/ex1/drain", {"tokens": 5}), 200)
    expect(ex.bob.post("/v1/rules", {"prefix": "10.78.0.0/16", "agent": "ex1"}), 201)
    return expect(ex.explain("ex1"), 200, *EX1_CHECKS)


@case("GET /v1/agents/{a}/explain: ratings that moved the rate in order (duplicate ids and "
      "ratings while pinned left out), operator changes with subjects and what changed, "
      "pinned_by, live values; 404, 401, 403, 405; an agent named explain")
def t_explain_api(explain_daemon):
    ex = explain_daemon
    ex1_history(ex)
    # Errors as on the other agent routes; /explain is not an agent named so.
    expect_error(ex.explain("nope"), 404, "not_found", "nope")
    expect_error(ex.d.api.get("/v1/agents/ex1/explain"), 401, "unauthorized")
    expect_error(ex.rater.get("/v1/agents/ex1/explain"), 403, "forbidden")
    r = ex.alice.post("/v1/agents/ex1/explain")
    check(r.status == 405, "expected status 405", r.describe())
    check(r.header("Allow") == "GET", "Allow: %r" % r.header("Allow"), r.describe())
    expect(ex.alice.put("/v1/agents/explain", {"rate": 9}), 201)
    expect(ex.reader.get("/v1/agents/explain"), 200, 'd["agent"] == "explain"', 'd["rate"] == 9')
    expect(ex.explain("explain"), 200, 'd["agent"] == "explain"', 'd["source"] == "operator"',
           'd["ratings"] == []', '[c["action"] for c in d["changes"]] == ["agent.create"]')


def policy_steps(scores, keep):
    """The policy's last keep steps over scores from 100: (id, score, before, after)."""
    r, out = 100.0, []
    for i, s in enumerate(scores):
        b, r = r, min(10000.0, max(1.0, r + 10 * (s - 3)))
        out.append(("x%d" % i, s, b, r))
    return out[-keep:]


@case("explain keeps the last 16 of 20 ratings applied in two batches, rates as the policy "
      "computes them; deleted with its agent, a new one of that name starts afresh")
def t_explain_ring(explain_daemon):
    ex = explain_daemon
    scores = [5, 1, 4, 4, 2, 5, 5, 3, 1, 1, 5, 2, 4, 4, 5, 1, 3, 5, 2, 4]
    lines = [{"id": "x%d" % i, "agent": "ex2", "user": "v%d" % i, "score": s}
             for i, s in enumerate(scores)]
    want = policy_steps(scores, 16)
    expect(ex.rater.ndjson("/v1/ratings", lines[:12]), 200, 'd["applied"] == 12')
    expect(ex.rater.ndjson("/v1/ratings", lines[12:]), 200, 'd["applied"] == 8')
    expect(ex.explain("ex2"), 200, 'd["source"] == "ratings"', 'd["ratings_recorded"] == 20',
           lambda d: [(r["id"], r["score"], r["rate_before"], r["rate_after"])
                      for r in d["ratings"]] == want,
           'd["rate"] == d["ratings"][-1]["rate_after"]',
           '[r["user"] for r in d["ratings"]][0] == "v4"',
           'd["changes"] == [] and d["changes_recorded"] == 0',
           'd["policy"]["pinned_by"] is None', 'd["policy"]["own"] == []')
    # Deleted with its agent: the same name starts afresh.
    expect(ex.bob.delete("/v1/agents/ex2"), 200)
    expect_error(ex.explain("ex2"), 404, "not_found", "ex2")
    expect(ex.alice.put("/v1/agents/ex2", {"rate": 5, "pinned": True}), 201)
    expect(ex.rater.post("/v1/ratings", {"id": "x99", "agent": "ex2", "user": "v99", "score": 5}),
           200, 'd["agents"][0]["rate"] == 5')
    expect(ex.explain("ex2"), 200, 'd["ratings"] == [] and d["ratings_recorded"] == 0',
           'd["stats"]["ratings"] == 1',
           '[(c["subject"], c["action"]) for c in d["changes"]] == '
           '[("alice@example.com", "agent.create")]',
           'd["changes_recorded"] == 1', 'd["source"] == "pinned"',
           'd["policy"]["pinned_by"]["subject"] == "alice@example.com"')


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def no_state_dirs(env):
    """Directories that are not state dirs: /etc, an empty one, a missing
    one, a store cut in half, data.mdb gone (only data.mdb.init)."""
    empty, none, cut, gone = (env.path(env.unique(n)) for n in ("ex-empty", "ex-none", "ex-cut",
                                                                "ex-gone"))
    for p in (empty, cut, gone):
        os.makedirs(p)
    return {"etc": "/etc", "empty": empty, "none": none, "cut": cut, "gone": gone}


def expect_cli_fails(r, rc, *exprs):
    check(r.rc == rc, "expected exit %d" % rc, r.describe())
    jcheck(r.json(), *exprs)


@case("daemon stopped: agentgate --json --state-dir DIR agent explain reads the same history "
      "read-only (data.mdb unchanged, no file created); /etc, an empty or missing dir, a store "
      "cut in half, data.mdb gone: exit 1 naming it")
def t_explain_offline(env, explain_own):
    ex = explain_own
    h = ex1_history(ex)
    st = ex.d.state
    ex.d.stop()
    mdb = os.path.join(st, "data.mdb")
    before, names = sha256(mdb), sorted(os.listdir(st))
    r = ex.d.cli("agent", "explain", "ex1", state_dir=st)
    check(r.rc == 0, "expected exit 0", r.describe())
    jcheck(r.json(), 'd["answered_by"] == "state store"',
           lambda d: d["ratings"] == h["ratings"], lambda d: d["changes"] == h["changes"],
           lambda d: ({k: v for k, v in d["policy"].items() if k != "defaults_from"} ==
                      {k: v for k, v in h["policy"].items() if k != "defaults_from"}),
           'd["policy"]["defaults_from"] == "state store"',
           lambda d: set(d) == set(h),
           'd["source"] == "pinned"', 'd["rate"] == 40', 'd["stats"]["ratings"] == 5',
           '(d["live"]["rate"], d["live"]["pinned"]) == (40, True)')
    check(sha256(mdb) == before and sorted(os.listdir(st)) == names,
          "the CLI changed the state dir: %s" % sorted(os.listdir(st)))
    r = ex.d.cli("agent", "explain", "ex1", state_dir=st, json_mode=False)
    check(r.rc == 0 and all(w in r.out for w in ("pinned by bob", "130 -> 110", "rule.add",
                                                "alice@example.com")),
          "text: exit %d: %s" % (r.rc, r.out))
    # Not a state dir, a damaged store, a missing one: exit 1 naming it.
    dirs = no_state_dirs(env)
    with open(mdb, "rb") as f:
        data = f.read()
    with open(os.path.join(dirs["cut"], "data.mdb"), "wb") as f:
        f.write(data[:len(data) // 2])
    shutil.copy(os.path.join(st, "data.mdb.init"), dirs["gone"])
    out = {}
    for name, p in dirs.items():
        r = ex.d.cli("agent", "explain", "ex1", state_dir=p)
        expect_cli_fails(r, 1, "err_ok(d, 'failed')", lambda d, p=p: p in d["message"])
        out[name] = r.out
    check("missing" in out["gone"], "no 'missing' for %s" % dirs["gone"], out["gone"])
    check("damaged" in out["cut"], "no 'damaged' for a store cut in half", out["cut"])
    check("data.mdb" in out["etc"], "/etc: what is missing is not named", out["etc"])
    r = ex.d.cli("agent", "explain", "ex1", state_dir=dirs["empty"], json_mode=False)
    check(r.rc == 1 and dirs["empty"] in r.out, "text: exit %d: %s" % (r.rc, r.out))
    r = ex.d.cli("agent", "explain", "nope", state_dir=st)
    expect_cli_fails(r, 1, "err_ok(d, 'failed')", '"nope" in d["message"]')
    r = ex.d.cli("agent", "explain", "a b", state_dir=st)
    check(r.rc == 2, "invalid name: exit %d (expected 2)" % r.rc, r.describe())


@case("restarted: the history is kept; unpinned, the next rating moves the rate and shows; "
      "the CLI beside the daemon gets its answer")
def t_explain_restart(env, explain_own):
    ex = explain_own
    h = ex1_history(ex)
    ex.d.restart()
    expect(ex.explain("ex1"), 200, lambda d: d["ratings"] == h["ratings"],
           lambda d: d["changes"] == h["changes"],
           'd["policy"]["pinned_by"]["subject"] == "bob"')
    # Unpinned by alice: no pin left; ratings move the rate from 40 again.
    expect(ex.alice.put("/v1/agents/ex1", {"pinned": False}), 200)
    expect(ex.rater.post("/v1/ratings", {"id": "e6", "agent": "ex1", "user": "u6", "score": 5}),
           200, 'd["agents"][0]["rate"] == 60')
    h = expect(ex.explain("ex1"), 200, 'd["source"] == "ratings"',
               'd["policy"]["pinned_by"] is None', 'd["policy"]["pinned"] is False',
               '[(r["id"], r["rate_before"], r["rate_after"]) for r in d["ratings"]] == '
               '[("e1", 100, 120), ("e2", 120, 130), ("e3", 130, 110), ("e6", 40, 60)]',
               'd["ratings_recorded"] == 4',
               '[(c["subject"], c["action"]) for c in d["changes"]][-1] == '
               '("alice@example.com", "agent.update")',
               'd["changes"][-1]["after"] == {"pinned": False}', 'd["changes_recorded"] == 5')
    # The CLI beside the daemon gets the daemon's answer.
    r = ex.d.cli("agent", "explain", "ex1", state_dir=env.path(env.unique("ex-none")))
    check(r.rc == 0, "expected exit 0", r.describe())
    jcheck(r.json(), 'd["answered_by"] == "agentgated"', lambda d: d["ratings"] == h["ratings"],
           lambda d: d["changes"] == h["changes"])
