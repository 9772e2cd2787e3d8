# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Crash, restart and reboot, and a damaged state store (sections 6 and 6b
of the shell suite). Every case restarts a daemon or starts one on a state
directory it made: each has a daemon of its own. The damaged-store cases
start from copies of one good store (the fixture store_good)."""
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys

from agtest import (Fail, case, check, expect, expect_agent, expect_error, expect_no_agent, fixture,
                    jcheck, rate_after, run_daemon, wait_agent, wait_for)

POST_MANY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "post_many.py")


# ---- 6. crash and reboot ------------------------------------------------------

def post_many(d, agent, count, prefix, scores):
    """tests/daemon/post_many.py: count ratings for agent, one request each;
    its JSON summary ({"acked", "statuses", "last", "error"})."""
    p = subprocess.run([sys.executable, POST_MANY, "127.0.0.1", str(d.port), agent, str(count),
                        prefix, scores], capture_output=True, text=True, timeout=300)
    check(p.returncode == 0, "post_many.py: exit %d: %s" % (p.returncode, p.stderr[-1000:]))
    return json.loads(p.stdout)


def sorted_dumps(rows):
    """rows in a comparable order, each object as it came (its key order kept)."""
    return sorted(json.dumps(r) for r in rows)


def crash_state(d):
    """k1: a bucket drained to ~0 with a slow refill and a big burst; k2:
    60 ratings (rate 300) and two rules. The JSON of k2 and of the rules."""
    api = d.api
    expect(api.put("/v1/agents/k1", '{"rate":1,"burst":1000}'), 201)
    expect(api.post("/v1/agents/k1/drain", '{"tokens":1000}'), 200, 'd["tokens"] < 1')
    expect(api.put("/v1/agents/k2", "{}"), 201)
    expect(api.post("/v1/rules", '{"prefix":"10.9.0.0/16","agent":"k2"}'), 201)
    expect(api.post("/v1/rules", '{"prefix":"2001:db8::/32","port":443,"agent":"k2"}'), 201)
    jcheck(post_many(d, "k2", 60, "c", "5,4,1"), 'd["acked"] == 60', 'd["error"] is None',
           'd["last"]["agents"][0]["rate"] == 300')
    k2 = expect_agent(api, "k2", 'd["rate"] == 300', 'd["ratings"] == 60')
    return k2, expect(api.get("/v1/rules"), 200)


def cli_ok(d, *args):
    r = d.cli(*args)
    check(r.rc == 0, "agentgate %s failed" % " ".join(args), r.describe())
    return r


def adopt_cli_agent(d):
    """Stops d; while it is down, the CLI adds agent cli1 (rate 33) and a rule
    to the maps; started again, d adopts both and rates cli1 like any other."""
    d.stop()
    cli_ok(d, "agent", "set", "cli1", "rate", "33")
    cli_ok(d, "rule", "add", "10.55.0.0/16", "agent", "cli1")
    d.start()


def rate_cli1(d):
    expect(d.api.post("/v1/ratings", '{"agent":"cli1","score":5}'), 200,
           'd["agents"] == [{"agent": "cli1", "rate": 53, "mean_score": 5, "ratings": 1}]')


@case("kill -9, restart: acknowledged ratings, rules, dedup ids kept; drained bucket not "
      "refilled")
def t_crash_restart(env):
    d = env.daemon("crash").start()
    before, rules = crash_state(d)
    # Ratings in flight when the daemon dies: every acknowledged one stays.
    out = env.path(env.unique("inflight") + ".json")
    inflight = env.popen([sys.executable, POST_MANY, "127.0.0.1", str(d.port), "k3", "100000",
                          "f", "5,4,1"], log=out)
    wait_agent(d.api, "k3", 'd["ratings"] >= 40', 10)
    d.kill9()
    d.san_clean()
    inflight.wait(60)
    with open(out) as f:
        res = json.loads(f.read())
    jcheck(res, 'd["acked"] >= 40', 'd["error"] is not None')
    acked = res["acked"]

    d.start()
    # The drained bucket was not refilled by the restart.
    expect_agent(d.api, "k1", 'd["tokens"] < 50', 'd["rate"] == 1', 'd["burst"] == 1000')
    jcheck(d.cli("agent", "show", "k1").json(), 'd["tokens"] < 50')
    expect_agent(d.api, "k2", *["d[%r] == %r" % (k, before[k])
                                for k in ("rate", "ratings", "mean_score", "last_rating_ms")])
    jcheck(expect(d.api.get("/v1/rules"), 200),
           lambda d: sorted_dumps(d) == sorted_dumps(rules))
    k3 = expect_agent(d.api, "k3", "%d <= d['ratings'] <= %d + 1" % (acked, acked))
    want = rate_after(100, 10, 1, 10000, ["541"[i % 3] for i in range(k3["ratings"])])
    expect_agent(d.api, "k3", "near(d['rate'], %r)" % want)
    jcheck(d.cli("agent", "show", "k3").json(), "near(d['rate'], %r)" % want)
    # The ids were committed with the ratings: sent again, all duplicates.
    jcheck(post_many(d, "k2", 60, "c", "5,4,1"), 'd["acked"] == 60',
           'd["last"]["applied"] == 0', 'd["last"]["duplicates"] == 1')
    expect_agent(d.api, "k2", 'd["rate"] == 300', 'd["ratings"] == 60')
    d.stop()


@case("SIGTERM, restart: drained bucket not refilled; agent and rule made with the CLI adopted")
def t_sigterm_restart(env):
    d = env.daemon("sigterm").start()
    crash_state(d)
    adopt_cli_agent(d)
    # A clean restart does not refill the drained bucket either.
    expect_agent(d.api, "k1", 'd["tokens"] < 50')
    expect_agent(d.api, "k2", 'd["rate"] == 300', 'd["ratings"] == 60')
    # The CLI's agent and rule are adopted, and rated like any other.
    expect_agent(d.api, "cli1", 'd["rate"] == 33',
                 'd["rules"] == [{"prefix": "10.55.0.0/16", "port": 0}]')
    expect(d.api.get("/v1/rules"), 200,
           '{"prefix": "10.55.0.0/16", "port": 0, "agent": "cli1"} in d', 'len(d) == 3')
    rate_cli1(d)
    d.stop()


@case("pins removed (reboot): agents, rates and rules restored from LMDB into the maps")
def t_reboot_restore(env):
    d = env.daemon("reboot").start()
    # What the crash and SIGTERM cases leave: k1, k2, k3 (>= 40 ratings) and
    # cli1 made with the CLI, adopted and rated once.
    crash_state(d)
    jcheck(post_many(d, "k3", 40, "f", "5,4,1"), 'd["acked"] == 40', 'd["error"] is None')
    adopt_cli_agent(d)
    rate_cli1(d)
    rules = expect(d.api.get("/v1/rules"), 200)
    d.stop()
    # A reboot: the bpffs is empty.
    shutil.rmtree(d.pin)
    d.start()
    expect_agent(d.api, "k1", 'd["rate"] == 1', 'd["burst"] == 1000')
    expect_agent(d.api, "k2", 'd["rate"] == 300', 'd["ratings"] == 60',
                 'near(d["mean_score"], 10 / 3)')
    expect_agent(d.api, "k3", 'd["ratings"] >= 40')
    expect_agent(d.api, "cli1", 'd["rate"] == 53', 'd["ratings"] == 1')
    jcheck(expect(d.api.get("/v1/rules"), 200), 'len(d) == 3',
           lambda d: sorted_dumps(d) == sorted_dumps(rules))
    # In the maps, not only in the API.
    jcheck(d.cli("rule", "list").json(),
           'sorted((r["prefix"], r["port"] or 0, r["agent"]) for r in d) == ['
           '("10.55.0.0/16", 0, "cli1"), ("10.9.0.0/16", 0, "k2"), ("2001:db8::/32", 443, "k2")]')
    jcheck(d.cli("agent", "show", "k2").json(), 'd["rate"] == 300', 'd["burst"] == 300')
    jcheck(d.cli("agent", "list").json(),
           'sorted(a["name"] for a in d) == ["cli1", "k1", "k2", "k3"]')
    d.stop()


def budget_state(d):
    """org (quota 1000/day) > team > agent b1 (quota 500/hour), 7 tokens
    consumed from b1 (and so from team and org)."""
    api = d.api
    expect(api.put("/v1/parents/org", '{"rate":100,"burst":100,"quota":{"limit":1000,'
                   '"window":"day"}}'), 201)
    expect(api.put("/v1/parents/team", '{"rate":50,"burst":50,"parent":"org"}'), 201)
    expect(api.put("/v1/agents/b1", '{"rate":10,"burst":10,"parent":"team","quota":'
                   '{"limit":500,"window":"hour"}}'), 201)
    expect(api.post("/v1/agents/b1/consume", '{"tokens":7}'), 200, 'd["allowed"]')


def expect_budgets(d, used):
    api = d.api
    expect(api.get("/v1/parents/org"), 200, 'd["rate"] == 100', 'd["burst"] == 100',
           'd["parent"] is None', 'd["children"] == ["team"]',
           'd["quota"]["limit"] == 1000', 'd["quota"]["window"] == "day"',
           'd["quota"]["used"] == %d' % used)
    expect(api.get("/v1/parents/team"), 200, 'd["rate"] == 50', 'd["parent"] == "org"',
           'd["children"] == ["b1"]', 'd["quota"] is None')
    expect_agent(api, "b1", 'd["parent"] == "team"', 'd["quota"]["limit"] == 500',
                 'd["quota"]["window"] == "hour"', 'd["quota"]["used"] == %d' % used)
    # In the maps, not only in the API.
    jcheck(d.cli("parent", "show", "team").json(), 'd["parent"] == "org"',
           'd["children"] == ["b1"]')


@case("pins removed (reboot): parents, agents' parents and quotas restored from LMDB, the "
      "quotas' counts with them; what the CLI changed through the daemon is stored too")
def t_reboot_budgets(env):
    d = env.daemon("budgets").start()
    budget_state(d)
    # explain names the path and the level that would refuse now.
    expect(d.api.get("/v1/agents/b1/explain"), 200,
           '[l["name"] for l in d["path"]["levels"]] == ["b1", "team", "org"]',
           '[l["kind"] for l in d["path"]["levels"]] == ["agent", "parent", "parent"]',
           'd["path"]["levels"][2]["quota"]["used"] == 7', 'd["path"]["limited_by"] is None')
    expect(d.api.put("/v1/parents/org", '{"quota":{"limit":7,"window":"day"}}'), 200)
    expect(d.api.get("/v1/agents/b1/explain"), 200,
           'd["path"]["limited_by"] == {"name": "org", "reason": "quota"}')
    expect(d.api.post("/v1/agents/b1/consume", '{"tokens":1}'), 429)
    r = d.cli("agent", "explain", "b1", json_mode=False)
    check(r.rc == 0 and "limited now by org (quota)" in r.out and "parent team" in r.out,
          r.describe())
    expect(d.api.put("/v1/parents/org", '{"quota":{"limit":1000,"window":"day"}}'), 200)
    # The CLI goes through the daemon while it runs: stored like the API's.
    cli_ok(d, "parent", "set", "p2", "rate", "5", "burst", "5")
    cli_ok(d, "agent", "set", "b2", "rate", "3", "parent", "p2", "quota", "1e4/day")
    d.stop()
    shutil.rmtree(d.pin)
    d.start()
    expect_budgets(d, 7)
    expect(d.api.get("/v1/parents/p2"), 200, 'd["rate"] == 5', 'd["children"] == ["b2"]')
    expect_agent(d.api, "b2", 'd["parent"] == "p2"', 'd["quota"]["limit"] == 10000')
    # A parent with a child is not deleted; the child moved, it is.
    expect_error(d.api.delete("/v1/parents/p2"), 409, "conflict", "p2")
    expect(d.api.put("/v1/agents/b2", '{"parent":null,"quota":null}'), 200,
           'd["parent"] is None', 'd["quota"] is None')
    expect(d.api.delete("/v1/parents/p2"), 200)
    # Restarted with the pins in place: nothing doubled, nothing lost.
    d.stop()
    d.start()
    expect_budgets(d, 7)
    expect_error(d.api.get("/v1/parents/p2"), 404, "not_found", "p2")
    # While no daemon runs the CLI's changes are the maps' word (journal).
    d.stop()
    cli_ok(d, "agent", "set", "b1", "parent", "none")
    cli_ok(d, "parent", "del", "team")
    d.start()
    expect_error(d.api.get("/v1/parents/team"), 404, "not_found", "team")
    expect_agent(d.api, "b1", 'd["parent"] is None', 'd["quota"]["limit"] == 500')
    d.stop()
    shutil.rmtree(d.pin)
    d.start()
    expect_error(d.api.get("/v1/parents/team"), 404, "not_found", "team")
    expect_agent(d.api, "b1", 'd["parent"] is None', 'd["quota"]["used"] == 7')
    expect(d.api.get("/v1/parents/org"), 200, 'd["children"] == []',
           'd["quota"]["used"] == 7')
    d.stop()


# ---- 6b. a damaged state store ------------------------------------------------

@fixture
def store_good(env):
    """The store of a daemon (agents, a rule, 3000 rating ids), copied once it
    stopped: the path of the copy. Cases damage copies of it."""
    d = env.daemon("store").start()
    expect(d.api.put("/v1/agents/st1", '{"rate":50}'), 201)
    expect(d.api.post("/v1/rules", '{"prefix":"10.66.0.0/16","agent":"st1"}'), 201)
    batch = [{"id": "st-%05d" % i, "agent": "st%d" % (2 + i % 9), "score": 1 + i % 5}
             for i in range(3000)]
    expect(d.api.post("/v1/ratings", batch), 200, 'd["applied"] == 3000')
    d.stop()
    good = env.path("store-good")
    copy_store(d.state, good)
    return good


def copy_store(src, dst):
    """cp -a SRC/. DST/: into dst, made if need be, files replaced."""
    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)


def store_sum(path):
    """What path (a data.mdb) is now: a checksum, "absent", "directory"."""
    if os.path.isdir(path):
        return "directory"
    if not os.path.exists(path):
        return "absent"
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def noise(path, off, n):
    """n bytes of seeded noise at offset off of path."""
    rnd = random.Random(7)
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(rnd.randbytes(n))


def write_at(path, off, data):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


def replace_with_dir(path):
    os.remove(path)
    os.mkdir(path)


def remove(*paths):
    for p in paths:
        os.remove(p)


def fill(path, size, byte):
    with open(path, "wb") as f:
        f.write(byte * size)


# What each damage does to data.mdb (path m, size s), and the word its
# refusal names.
DAMAGES = [
    ("cut to half", lambda m, s: os.truncate(m, s // 2), "cut short"),
    ("one page short", lambda m, s: os.truncate(m, s - 4096), "cut short"),
    ("two meta pages left", lambda m, s: os.truncate(m, 8192), "cut short"),
    ("shorter than a page", lambda m, s: os.truncate(m, 100), "cut short"),
    ("0 bytes", lambda m, s: os.truncate(m, 0), "empty"),
    ("64 KiB of noise mid-file", lambda m, s: noise(m, s // 2, 65536), "damaged"),
    ("the last 64 KiB noise", lambda m, s: noise(m, s - 65536, 65536), "damaged"),
    ("the first page noise", lambda m, s: noise(m, 0, 4096), "not an LMDB meta page"),
    ("another LMDB format version", lambda m, s: write_at(m, 20, b"\xe7\x03\x00\x00"),
     "format version 999"),
    ("not an LMDB file", lambda m, s: fill(m, s, b"x"), "not an LMDB meta page"),
    ("a directory", lambda m, s: replace_with_dir(m), "not a regular file"),
    ("removed", lambda m, s: remove(m), "is missing"),
    ("removed with lock.mdb", lambda m, s: remove(m, os.path.join(os.path.dirname(m),
                                                                  "lock.mdb")), "is missing"),
    ("removed with its marker", lambda m, s: remove(m, m + ".init"), "is missing"),
]


def store_refused(env, good, pin, what, damage, word):
    """A copy of the good store, damaged, makes the daemon exit 3 naming
    DIR/data.mdb and then word; data.mdb is left as the damage left it and
    no maps are pinned."""
    bad = env.path("store-bad")
    shutil.rmtree(bad, ignore_errors=True)
    copy_store(good, bad)
    mdb = os.path.join(bad, "data.mdb")
    damage(mdb, os.path.getsize(mdb))
    before = store_sum(mdb)
    try:
        out = run_daemon(env, ["--config", "/dev/null", "--pin-path", pin, "--state-dir", bad,
                               "--listen", "127.0.0.1:%d" % env.port()], 3)
    except Fail as e:
        raise Fail("(%s) %s" % (what, e))
    at = out.find(mdb)
    check(at >= 0 and word in out[at + len(mdb):],
          "%s: the error does not name %s and '%s': %s" % (what, mdb, word, out))
    check(store_sum(mdb) == before, "%s: data.mdb was changed" % what)
    check(not os.path.exists(pin), "%s: maps were pinned" % what)


@case("damaged store (cut to half, a page short, 8 KiB, 100 B, 0 B; 64 KiB noise mid-file, at "
      "the end, first page; LMDB version 999; not LMDB; a directory; removed, also with "
      "lock.mdb or its marker): exit 3 naming data.mdb, nothing written, no maps; noise past "
      "the last page starts")
def t_store_damaged_start(env, store_good):
    pin = env.pin_root("refused")
    for what, damage, word in DAMAGES:
        store_refused(env, store_good, pin, what, damage, word)
    # Noise past the last page the store uses is no damage.
    tail = env.path(env.unique("store-tail"))
    copy_store(store_good, tail)
    with open(os.path.join(tail, "data.mdb"), "ab") as f:
        f.write(os.urandom(65536))
    d = env.daemon("tail", state=tail).start()
    expect_agent(d.api, "st1", 'd["rate"] == 50',
                 'd["rules"] == [{"prefix": "10.66.0.0/16", "port": 0}]')
    d.stop()


@case("data.mdb, lock.mdb and data.mdb.init moved away: a deliberate fresh start, marker "
      "written")
def t_store_fresh_start(env, store_good):
    # Starting afresh on purpose: data.mdb, lock.mdb and data.mdb.init moved away.
    d = env.daemon("fresh")
    copy_store(store_good, d.state)
    old = os.path.join(d.state, "old")
    os.mkdir(old)
    for f in ("data.mdb", "lock.mdb", "data.mdb.init"):
        os.rename(os.path.join(d.state, f), os.path.join(old, f))
    d.start()
    expect_no_agent(d.api, "st1")
    marker = os.path.join(d.state, "data.mdb.init")
    check(os.path.isfile(marker) and os.path.getsize(marker) > 0,
          "no %s after the first start" % marker)
    d.stop()


def ready_code(d, code):
    return d.api.get("/readyz", timeout=5).status == code


@case("store cut short under the daemon: 500 naming data.mdb, /readyz 503, store_damaged 1 and "
      "errors counted, logged, nothing written, restart exits 3; cut to 0 (SIGBUS from the "
      "map): the same, still running")
def t_store_damaged_running(env, store_good):
    d = env.daemon("store-run")
    copy_store(store_good, d.state)
    d.start()
    api = d.api
    expect_agent(api, "st1", 'd["rate"] == 50')
    st = os.path.join(d.state, "data.mdb")
    size = os.path.getsize(st)
    # Cut short under the daemon: found before anything is written.
    os.truncate(st, size // 2)
    expect_error(api.post("/v1/ratings", '{"id":"after-cut","agent":"st1","score":5}'), 500,
                 "internal", st, "damaged", "cut short")
    expect_error(api.put("/v1/agents/st-new", "{}"), 500, "internal", st, "damaged")
    expect(api.get("/readyz"), 503, '"state store" in d["reason"]')
    expect(api.get("/healthz"), 200)
    expect_agent(api, "st1", 'd["rate"] == 50', 'd["ratings"] == 0')
    store_metrics = [line for line in api.get("/metrics").text.splitlines()
                     if line.startswith("agentgate_store")]
    check("agentgate_store_damaged 1" in store_metrics
          and any(re.fullmatch(r"agentgate_store_errors_total ([2-9]|[1-9][0-9]+)", line)
                  for line in store_metrics),
          "not counted: %s" % store_metrics)
    # Logged by the daemon's main thread once it sees the damage (within a
    # second or so of the first refusal; a generous deadline for a loaded
    # machine, with the log's end in the failure to tell a lost wake-up).
    try:
        wait_for(lambda: "error: the state store %s is damaged" % st in d.log(), 30,
                 what="the damage logged")
    except Fail as e:
        raise Fail("%s; the log ends: %s" % (e, d.log()[-1500:]))
    check(os.path.getsize(st) == size // 2, "data.mdb was written to")
    d.stop()
    out = run_daemon(env, ["--config", "/dev/null", "--pin-path", d.pin, "--state-dir", d.state,
                           "--listen", "127.0.0.1:%d" % d.port], 3)
    at = out.find(st)
    check(at >= 0 and "cut short" in out[at + len(st):], "restart: %s" % out)
    # Restored from the copy; then cut to 0 bytes: the next read of LMDB's
    # map faults (SIGBUS), and the daemon goes on, not ready.
    copy_store(store_good, d.state)
    d.start()
    expect_agent(api, "st1", 'd["rate"] == 50')
    os.truncate(st, 0)
    r = api.get("/metrics")
    check(r.status == 200, "expected status 200", r.describe())
    wait_for(lambda: ready_code(d, 503), 5, what="/readyz 503")
    expect_error(api.post("/v1/ratings", '{"agent":"st1","score":5}'), 500, "internal", st,
                 "damaged")
    check("%s is damaged (a read at offset" % st in d.log(), "not logged: %s" % d.log_tail(500))
    check(os.path.getsize(st) == 0, "data.mdb was written to")
    d.stop()
