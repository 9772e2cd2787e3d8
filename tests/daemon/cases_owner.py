# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""One owner of policy: the CLI beside a daemon.

While agentgated runs, CLI writes go through its control socket: stored,
audited as local:root, visible in the API and metrics at once. Without it,
the CLI writes the maps and the next daemon adopts them. Each case starts
and stops its own daemon.
"""
import json
import os
import re
import time

from agtest import (case, check, daemon_argv, expect, expect_agent, expect_error,
                    expect_no_agent, jcheck, run_daemon)
from agtest.api import ingest
from agtest.cli import expect_cli


def cli_ok(d, *args):
    """The CLI on d's pins succeeds; its result."""
    return expect_cli(d.cli(*args), 0)


def cli_fails(d, rc, *args):
    """The CLI on d's pins exits rc; its output."""
    return expect_cli(d.cli(*args), rc).out


def metric_is(d, name, value):
    """/metrics has the sample line "NAME VALUE"."""
    r = d.api.get("/metrics")
    line = "%s %s" % (name, value)
    check(line in r.text.splitlines(), "/metrics: want %r, have: %s" % (
        line, [l for l in r.text.splitlines() if name in l][:3]), r.describe())


def read_json_lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def audit_problems(lines):
    """What is wrong with t_owner_cli_through_daemon's audit log."""
    acts = [(l["action"], l["agent"]) for l in lines]
    want = [("agent.create", "ox"), ("agent.update", "ox"), ("agent.drain", "ox"),
            ("agent.reset", "ox"), ("rule.add", "ox"), ("rule.delete", "ox"),
            ("config.set", ""), ("config.set", ""), ("config.set", ""), ("config.set", ""),
            ("agent.delete", "ox")]
    bad = []
    if acts != want:
        bad.append("actions %s, expected %s" % (acts, want))
    if {l["subject"] for l in lines} != {"local:root"}:
        bad.append("subjects %s" % {l["subject"] for l in lines})
    if lines and not lines[0]["after"]["pinned"]:
        bad.append("agent.create not pinned: %s" % lines[0])
    c = [l for l in lines if l["action"] == "config.set"]
    if len(c) == 4 and (c[0]["after"] != {"default_action": "pass", "dry_run": True} or
                        c[1]["after"] != {"default_action": "drop", "dry_run": True}):
        bad.append("config.set records: %s" % c[:2])
    return ["audit.log: " + b for b in bad]


@case("while agentgated runs, every CLI write goes through it: a pin stays under ratings, the "
      "API and refill_rate show the enforced rate at once, drain/reset/rules/config/del "
      "visible in the API, audited as local:root")
def t_owner_cli_through_daemon(env):
    d = env.daemon("own").start()
    pid, sock = d.proc.pid, os.path.join(d.state, "control.sock")
    jcheck(cli_ok(d, "status").json(), lambda d: d["owner"] == {
        "pid": pid, "control_socket": sock, "since_ms": d["owner"]["since_ms"]})
    # A pin stays: ratings are counted and do not move the rate.
    jcheck(cli_ok(d, "agent", "set", "ox", "rate", 777, "pin").json(), 'd["name"] == "ox"',
           'd["rate"] == 777', 'd["pinned"] is True', 'd["created"] is True')
    expect_agent(d.api, "ox", 'd["rate"] == 777', 'd["pinned"] is True', 'd["r0"] == 777')
    metric_is(d, 'agentgate_refill_rate{agent="ox"}', 777)
    expect(d.api.post("/v1/ratings", {"agent": "ox", "score": 5}), 200,
           'd["agents"] == [{"agent": "ox", "rate": 777, "mean_score": 5, "ratings": 1}]')
    jcheck(cli_ok(d, "agent", "show", "ox").json(), 'd["rate"] == 777', 'd["pinned"] is True')
    # Unpinned, ratings move it again, from where the operator left it.
    cli_ok(d, "agent", "set", "ox", "unpin")
    expect(d.api.post("/v1/ratings", {"agent": "ox", "score": 5}), 200,
           'd["agents"][0]["rate"] == 797')
    jcheck(cli_ok(d, "agent", "show", "ox").json(), 'd["rate"] == 797', 'd["pinned"] is False')
    # Bucket operations, rules and the global settings.
    jcheck(cli_ok(d, "agent", "drain", "ox", 500).json(), 'd["name"] == "ox"',
           'd["tokens"] < 400')
    expect_agent(d.api, "ox", 'd["tokens"] < 400')
    jcheck(cli_ok(d, "agent", "reset", "ox").json(), 'd["tokens"] == 797')
    cli_ok(d, "rule", "add", "10.77.0.0/16", "port", 443, "agent", "ox")
    expect(d.api.get("/v1/rules"), 200,
           'd == [{"prefix": "10.77.0.0/16", "port": 443, "agent": "ox"}]')
    cli_ok(d, "rule", "del", "10.77.0.0/16", "port", 443)
    expect(d.api.get("/v1/rules"), 200, 'd == []')
    jcheck(cli_ok(d, "config", "set", "dry-run", "on").json(),
           'd == {"default_action": "pass", "dry_run": True}')
    jcheck(cli_ok(d, "config", "set", "default-action", "drop").json(),
           'd == {"default_action": "drop", "dry_run": True}')
    cli_ok(d, "config", "set", "dry-run", "off")
    cli_ok(d, "config", "set", "default-action", "pass")
    # Deleted is deleted: the API says 404 at once, the CLI too.
    jcheck(cli_ok(d, "agent", "del", "ox").json(), 'd == {"name": "ox", "deleted": True}')
    expect_no_agent(d.api, "ox")
    cli_fails(d, 1, "agent", "show", "ox")
    # Every change is in the audit log, by local:root.
    audit = os.path.join(d.state, "audit.log")
    bad = audit_problems(read_json_lines(audit))
    with open(audit) as f:
        check(not bad, "\n".join(bad), f.read())
    d.stop()


@case("through the daemon: a rate outside the bounds widens them (as without a daemon); "
      "unknown agents exit 1 naming them, a bad value exit 2 before the daemon is asked; "
      "nothing changed")
def t_owner_cli_refused_values(env):
    d = env.daemon("own2").start()
    # The CLI sets the enforced rate as it does without a daemon: outside
    # the agent's bounds (r-max 10000, r-min 1), they widen to take it.
    cli_ok(d, "agent", "set", "big", "rate", 50000)
    expect_agent(d.api, "big", 'd["rate"] == 50000', 'd["r_max"] == 50000', 'd["r_min"] == 1')
    cli_ok(d, "agent", "set", "big", "rate", 0.5)
    expect_agent(d.api, "big", 'd["rate"] == 0.5', 'd["r_min"] == 0.5', 'd["r_max"] == 50000')
    expect(d.api.post("/v1/ratings", {"agent": "big", "score": 5}), 200,
           'd["agents"][0]["rate"] == 20.5')
    out = cli_fails(d, 1, "agent", "drain", "nobody", 5)
    check("unknown agent 'nobody'" in out, "drain unknown: " + out)
    out = cli_fails(d, 1, "agent", "reset", "nobody")
    check("nobody" in out, "reset unknown: " + out)
    out = cli_fails(d, 1, "rule", "add", "10.9.0.0/16", "agent", "nobody")
    check("nobody" in out, "rule for unknown: " + out)
    expect(d.api.get("/v1/rules"), 200, 'd == []')
    # Bad input is the CLI's own usage error, before any daemon is asked.
    cli_fails(d, 2, "agent", "set", "bad", "rate", -5)
    d.stop()


@case("SIGTERM removes the record and control socket; what the CLI then changes (set, pin, "
      "unpin, del, rule del) the next daemon takes from the maps, audited; after kill -9 the "
      "stale record counts for nothing")
def t_owner_handover(env):
    """A daemon that stops hands the pin root back: the CLI writes the maps,
    the next daemon adopts. One that is killed leaves its record, which
    counts for nothing without its lock."""
    d = env.daemon("own3").start()
    cli_ok(d, "agent", "set", "h1", "rate", 40, "pin")
    d.stop()
    check(not os.path.exists(os.path.join(d.pin, "owner", "record")),
          "owner record left after SIGTERM")
    check(not os.path.exists(os.path.join(d.state, "control.sock")),
          "control socket left after SIGTERM")
    jcheck(cli_ok(d, "status").json(), 'd["owner"] is None')
    cli_ok(d, "agent", "set", "h2", "rate", 60, "pin")
    cli_ok(d, "agent", "set", "h1", "rate", 45)
    d.start()
    expect_agent(d.api, "h2", 'd["rate"] == 60', 'd["pinned"] is True')
    expect_agent(d.api, "h1", 'd["rate"] == 45', 'd["pinned"] is True')
    # Deletions made while it was down stay deleted; what the CLI left
    # alone is restored from the store as before.
    cli_ok(d, "rule", "add", "10.33.0.0/16", "agent", "h1")
    cli_ok(d, "rule", "add", "10.34.0.0/16", "agent", "h2")
    cli_ok(d, "agent", "set", "h4", "rate", 80)
    d.stop()
    cli_ok(d, "agent", "del", "h2")
    cli_ok(d, "rule", "del", "10.33.0.0/16")
    cli_ok(d, "agent", "set", "h1", "unpin")
    d.start()
    expect_no_agent(d.api, "h2")
    expect_agent(d.api, "h1", 'd["pinned"] is False', 'd["rate"] == 45', 'd["rules"] == []')
    expect_agent(d.api, "h4", 'd["rate"] == 80')
    expect(d.api.get("/v1/rules"), 200, 'd == []')
    check("while agentgated was stopped: 2 agents taken from the maps, 2 stored rules dropped"
          in d.log(), "no log line for the journal: " + d.log()[-500:])
    with open(os.path.join(d.state, "audit.log")) as f:
        check('"subject":"agentgate (while agentgated was stopped)","action":"agent.delete",'
              '"agent":"h2"' in f.read(), "no audit record of h2's deletion")
    check(not os.path.exists(os.path.join(d.pin, "owner", "journal")),
          "the journal was not cleared")
    # Stopped again with nothing changed: a restart changes nothing.
    d.stop()
    d.start()
    expect_agent(d.api, "h1", 'd["pinned"] is False', 'd["rate"] == 45')
    d.kill9()
    check(os.path.exists(os.path.join(d.pin, "owner", "record")),
          "expected the dead daemon's record")
    cli_ok(d, "agent", "set", "h3", "rate", 70)
    d.start()
    expect_agent(d.api, "h3", 'd["rate"] == 70')
    d.stop()


@case("an agent deleted by an operator (CLI or API) stays deleted: ratings for it (JSON, batch, "
      "NDJSON, /rate) 404 naming who deleted it, a stream's line dead-lettered, also after a "
      "restart; created again by an operator, rated as before")
def t_owner_deleted_stays(env):
    """An operator's delete is not undone by the next rating: ratings for a
    deleted agent are refused until an operator creates it again."""
    sock = env.path(env.unique("own5") + ".sock")
    d = env.daemon("own5", "--ingest-socket", sock).start()
    api = d.api
    expect(api.put("/v1/agents/gone1", {"rate": 50}), 201)
    cli_ok(d, "agent", "del", "gone1")
    expect_error(api.post("/v1/ratings", {"agent": "gone1", "score": 5}), 404, "not_found",
                 "gone1", "deleted", "local:root")
    expect_no_agent(api, "gone1")
    # A batch naming it is refused whole; NDJSON too.
    expect_error(api.post("/v1/ratings", [{"agent": "other1", "score": 5},
                                          {"agent": "gone1", "score": 4}]),
                 404, "not_found", "item 1", "gone1")
    expect_no_agent(api, "other1")
    expect_error(api.ndjson("/v1/ratings", '{"agent":"gone1","score":5}\n'), 404, "not_found",
                 "gone1")
    # A stream refuses the line alone, dead-lettered with the reason.
    reply = ingest(sock, '{"agent":"gone1","score":5}\n{"agent":"other2","score":5}\n')
    jcheck(reply, 'd == {"applied": 1, "duplicates": 0, "invalid": 0, "rejected": 1, "limited": 0}')
    dead = os.path.join(d.state, "dead-letter.ndjson")
    check(os.path.isfile(dead), "no " + dead)
    jcheck(read_json_lines(dead), 'len(d) == 1', '"deleted by an operator" in d[0]["reason"]')
    expect_no_agent(api, "gone1")
    # The tutorial's POST /rate does not bring it back either.
    r = api.post("/rate", {"agent_id": "gone1", "event_type": "x", "metadata": {}})
    check(r.status != 200, "POST /rate brought gone1 back", r.describe())
    expect_no_agent(api, "gone1")
    # Deleted over the API, across a restart: still refused.
    expect(api.put("/v1/agents/gone2", {"rate": 50}), 201)
    expect(api.delete("/v1/agents/gone2"), 200)
    d.restart()
    expect_error(api.post("/v1/ratings", {"agent": "gone2", "score": 5}), 404, "not_found",
                 "gone2", "deleted")
    # Created again by an operator: rated as any agent.
    cli_ok(d, "agent", "set", "gone1", "rate", 70)
    expect(api.post("/v1/ratings", {"agent": "gone1", "score": 5}), 200,
           'd["agents"] == [{"agent": "gone1", "rate": 90, "mean_score": 5, "ratings": 1}]')
    expect(api.put("/v1/agents/gone2", {}), 201)
    expect(api.post("/v1/ratings", {"agent": "gone2", "score": 5}), 200)
    d.stop()


def hold_owner_lock(env, d, mode, cmd):
    """flock(1) holding d's owner lock (mode -s or -x) while cmd runs; its
    process, after 0.2 s for it to take the lock."""
    p = env.popen(["flock", mode, os.path.join(d.pin, "owner")] + cmd)
    time.sleep(0.2)
    return p


def released_after(env, d, mode, released):
    """Holds the lock for 1.5 s, then writes the time (ns) to released."""
    return hold_owner_lock(env, d, mode, ["sh", "-c", "sleep 1.5; date +%%s%%N >%s" % released])


def release_time(path):
    """The time flock's command wrote to path, None when it wrote none."""
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except FileNotFoundError:
        return None


@case("a daemon waits for a CLI write's shared lock; a CLI facing an owner that lets go writes "
      "after it; owned by a silent process for over 10 s: exit 1, nothing written; a second "
      "daemon on the pin root: exit 1 naming the first")
def t_owner_races(env):
    """A daemon never starts in the middle of a CLI write (it waits for the
    shared lock a write holds), and a CLI that finds the pin root owned by a
    daemon that then goes away writes the maps once it is gone."""
    released = env.path(env.unique("released"))
    d = env.daemon("own4").start()
    d.stop()
    # A CLI write under way (its shared lock, held here by flock(1)): the
    # daemon is ready only after it let go.
    holder = released_after(env, d, "-s", released)
    d.start()
    t1 = time.time_ns()
    holder.wait()
    rel = release_time(released)
    check(rel is not None and t1 > rel,
          "the daemon was ready before the write's lock was released")
    d.stop()
    # The pin root owned by a process that answers nothing and then lets
    # go (a daemon stopping): the CLI waits and writes the maps after.
    os.remove(released)
    holder = released_after(env, d, "-x", released)
    cli_ok(d, "agent", "set", "r1", "rate", 11)
    t1 = time.time_ns()
    holder.wait()
    rel = release_time(released)
    check(rel is not None and t1 > rel, "the CLI returned before the owner let go")
    jcheck(cli_ok(d, "agent", "show", "r1").json(), 'd["rate"] == 11')
    # Owned for longer than the CLI waits (10 s): exit 1, nothing written.
    holder = hold_owner_lock(env, d, "-x", ["sleep", "12"])
    r = d.cli("agent", "set", "r2", "rate", 12)
    holder.terminate()
    holder.wait()
    check(r.rc == 1 and re.search("does not answer.*nothing was changed", r.out, re.S),
          "owned by a silent process: exit %d, %s" % (r.rc, r.out))
    cli_fails(d, 1, "agent", "show", "r2")
    # A second daemon on the same pin root refuses to start, naming the first.
    d.start()
    argv = daemon_argv(env.san, d.pin, env.path(env.unique("state-own4b")), "127.0.0.1:1")
    out = run_daemon(env, argv[1:], 1, timeout=30)
    check("owned by another agentgated (pid %d" % d.proc.pid in out, "second daemon: " + out)
    d.stop()
