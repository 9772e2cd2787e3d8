# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""NDJSON ingest on --stdin and --ingest-socket, dead letters and their cap,
the agent-slot and dedup limits, a full store (section 5 of the shell suite).

The stdin and socket cases share the daemon "ingest_fifo"; each looks only
at its own agents and at the dead letters written after it began. Every
other case has a daemon of its own (its limits are daemon-wide counts)."""
import json
import os
import re
import socket
import stat
import threading

from agtest.api import ingest, recv_all
from agtest import (Fail, case, check, expect, expect_agent, expect_error, expect_no_agent,
                    fixture, jcheck, wait_agent)

def ndjson(*lines):
    """The lines, each ended by a newline, as bytes."""
    return "".join(line + "\n" for line in lines).encode()


def read_ndjson(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def dead_letter_file(d):
    return os.path.join(d.state, "dead-letter.ndjson")


def dead_letters(d):
    """The dead letters of daemon d ([] before the file exists)."""
    path = dead_letter_file(d)
    return read_ndjson(path) if os.path.exists(path) else []


def new_dead_letters(d, before):
    """The dead letters written since there were `before` of them."""
    path = dead_letter_file(d)
    check(os.path.isfile(path), "no %s" % path)
    return read_ndjson(path)[before:]


def metric_lines(d, *lines):
    """GET /metrics has each of lines as a whole line (the exact text, as
    grep -x); the text. A failure shows the samples of those names."""
    text = d.api.get("/metrics").text
    have = text.splitlines()
    missing = [line for line in lines if line not in have]
    names = {re.split(r"[{ ]", line)[0] for line in lines}
    check(not missing, "no line %s in /metrics; its samples of those names:" % missing,
          "\n".join(line for line in have if re.split(r"[{ ]", line)[0] in names))
    return text


def is_socket(path):
    return os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode)


class FifoDaemon:
    """A daemon with a FIFO on its --stdin and an --ingest-socket: d, writer
    (the FIFO's writing end, a file; None once closed), sock (its path)."""

    def __init__(self, env, name, *args):
        fifo = env.path(env.unique("stdin") + ".fifo")
        self.sock = env.path(env.unique("ingest") + ".sock")
        os.mkfifo(fifo)
        # Opened for reading without blocking first, so that opening the
        # writing end does not wait for the daemon.
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.writer = None
        try:
            self.writer = open(fifo, "wb", buffering=0)
            os.set_blocking(rfd, True)
            self.d = env.daemon(name, "--stdin", "--ingest-socket", self.sock, *args,
                                stdin=rfd).start()
            check(is_socket(self.sock), "no socket at %s" % self.sock)
        except BaseException:
            self.close_stdin()
            raise
        finally:
            os.close(rfd)

    def close_stdin(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@fixture
def ingest_fifo(env):
    """The daemon of the stdin and socket cases (the shell's t_ingest_start)."""
    f = FifoDaemon(env, "ingest")
    yield f
    f.close_stdin()
    f.d.stop()


@case("--stdin (FIFO) and --ingest-socket: daemon ready")
def t_ingest_start(ingest_fifo):
    expect(ingest_fifo.d.api.get("/readyz"), 200)
    check(is_socket(ingest_fifo.sock), "no socket at %s" % ingest_fifo.sock)


@case("--stdin NDJSON: valid lines applied, invalid ones dead-lettered with line and reason")
def t_ingest_stdin(ingest_fifo):
    d = ingest_fifo.d
    check(ingest_fifo.writer is not None, "no writer on the daemon's stdin")
    try:
        ingest_stdin_checks(ingest_fifo)
    finally:
        ingest_fifo.close_stdin()
    # End of input: the daemon reports the stream's totals and keeps serving.
    d.wait_log("stdin closed", 10)
    closed = [line for line in d.log().splitlines() if "stdin closed" in line]
    check(any("stdin closed: 3 applied, 1 duplicates, 3 invalid, 0 rejected" in line
              for line in closed), "\n".join(closed))
    expect(d.api.get("/healthz"), 200)


def ingest_stdin_checks(f):
    d = f.d
    before = len(dead_letters(d))
    f.writer.write(ndjson('{"agent":"in1","score":5,"id":"s1"}', '{"agent":"in1","score":',
                          '{"agent":"in1","score":4}', '{"agent":"in1","score":7}',
                          '{"agent":"in1","score":5,"id":"s1"}',
                          '{"agent":"in1","score":1,"colour":"x"}', '{"agent":"in1","score":1}'))
    wait_agent(d.api, "in1", 'd["ratings"] == 3', 10)
    expect_agent(d.api, "in1", 'd["rate"] == 110', 'd["ratings"] == 3',
                 'near(d["mean_score"], 10 / 3)')
    jcheck(new_dead_letters(d, before), 'len(d) == 3',
           'all({"source", "line", "reason", "input"} <= keys(x) for x in d)',
           '[x["source"] for x in d] == ["stdin"] * 3', '[x["line"] for x in d] == [2, 4, 6]',
           'd[0]["input"] == "{\\"agent\\":\\"in1\\",\\"score\\":"',
           'd[1]["input"] == "{\\"agent\\":\\"in1\\",\\"score\\":7}"',
           '"score" in d[1]["reason"]', '"colour" in d[2]["reason"]',
           'all(isstr(x["reason"]) and x["reason"] for x in d)')


@case("--ingest-socket: summary line applied/duplicates/invalid/rejected; dead letters")
def t_ingest_socket(ingest_fifo):
    d, sock = ingest_fifo.d, ingest_fifo.sock
    before = len(dead_letters(d))
    # The last line has no newline: applied at the end of the stream.
    reply = ingest(sock, ndjson('{"agent":"so1","score":5,"id":"k1"}',
                                '{"agent":"so1","score":5,"id":"k1"}', 'not json',
                                '{"agent":"so1","score":2}', '{"agent":"","score":3}')
                   + b'{"agent":"so1","score":4}')
    jcheck(reply, 'd == {"applied": 3, "duplicates": 1, "invalid": 2, "rejected": 0, "limited": 0}')
    expect_agent(d.api, "so1", 'd["rate"] == 120', 'd["ratings"] == 3',
                 'near(d["mean_score"], 11 / 3)')
    jcheck(new_dead_letters(d, before), 'len(d) == 2', '[x["line"] for x in d] == [3, 5]',
           'd[0]["source"] == d[1]["source"]', 'd[0]["source"].startswith("socket")',
           'd[0]["source"] != "stdin"', 'd[0]["input"] == "not json"',
           'd[1]["input"] == "{\\"agent\\":\\"\\",\\"score\\":3}"', '"agent" in d[1]["reason"]')
    # A second connection: its own counts; ids are remembered across.
    reply = ingest(sock, ndjson('{"agent":"so1","score":1,"id":"k1"}',
                                '{"agent":"so1","score":1}'))
    jcheck(reply, 'd == {"applied": 1, "duplicates": 1, "invalid": 0, "rejected": 0, "limited": 0}')
    expect_agent(d.api, "so1", 'd["rate"] == 100', 'd["ratings"] == 4')
    # A line over 1 MiB is dead-lettered (shortened); the next line counts.
    reply = ingest(sock, ndjson('{"agent":"so3","score":1,"comment":"%s"}' % ("x" * 1500000),
                                '{"agent":"so3","score":5}'))
    jcheck(reply, 'd == {"applied": 1, "duplicates": 0, "invalid": 1, "rejected": 0, "limited": 0}')
    expect_agent(d.api, "so3", 'd["rate"] == 120', 'd["ratings"] == 1')
    jcheck(new_dead_letters(d, before), 'len(d) == 3', 'd[2]["line"] == 1',
           '"1 MiB" in d[2]["reason"]', 'd[2]["input"].startswith("{\\"agent\\":\\"so3\\"")',
           'len(d[2]["input"]) <= 4096')


def hold_connection(sock, line, out):
    """Sends line on an ingest connection it keeps open; out["reply"]: what
    came back until the daemon closed it (out["error"] on a socket error)."""
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(60)
        try:
            s.connect(sock)
            s.sendall(line)
            data = recv_all(s)
        finally:
            s.close()
        out["reply"] = data.decode(errors="replace")
    except OSError as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)


@case("SIGTERM with an ingest client still connected: exit 0, client gets its summary, "
      "socket removed")
def t_ingest_stop(env):
    f = FifoDaemon(env, "ingest-stop")
    f.close_stdin()
    # A client that keeps its connection open does not hold up SIGTERM; it
    # gets its summary when the daemon stops.
    out = {}
    held = threading.Thread(target=hold_connection,
                            args=(f.sock, b'{"agent":"so2","score":5}\n', out), daemon=True)
    held.start()
    wait_agent(f.d.api, "so2", 'd["ratings"] == 1', 10)
    f.d.stop(timeout=15)
    held.join(10)
    check(not held.is_alive(), "the held ingest client still waits 10 s after the daemon exited")
    check("error" not in out, "the held ingest client: %s" % out.get("error"))
    try:
        reply = json.loads(out["reply"])
    except ValueError:
        raise Fail("the held client's answer is not JSON: %r" % out["reply"])
    jcheck(reply, 'd == {"applied": 1, "duplicates": 0, "invalid": 0, "rejected": 0, "limited": 0}')
    check(not os.path.exists(f.sock), "socket left behind at %s" % f.sock)


@case("--auto-create no: unknown agent rejected (socket summary, dead letter, HTTP 404)")
def t_ingest_rejected(env):
    sock = env.path(env.unique("noauto") + ".sock")
    d = env.daemon("noauto", "--auto-create", "no", "--ingest-socket", sock).start()
    reply = ingest(sock, ndjson('{"agent":"ghost","score":5}'))
    jcheck(reply, 'd == {"applied": 0, "duplicates": 0, "invalid": 0, "rejected": 1, "limited": 0}')
    jcheck(new_dead_letters(d, 0), 'len(d) == 1', 'd[0]["line"] == 1',
           'd[0]["input"] == "{\\"agent\\":\\"ghost\\",\\"score\\":5}"',
           '"unknown agent" in d[0]["reason"]')
    expect_no_agent(d.api, "ghost")
    expect_error(d.api.post("/v1/ratings", '[{"agent":"ghost","score":5}]'), 404, "not_found",
                 "ghost")
    expect_no_agent(d.api, "ghost")
    expect(d.api.put("/v1/agents/ghost", "{}"), 201)
    reply = ingest(sock, ndjson('{"agent":"ghost","score":5}'))
    jcheck(reply, 'd == {"applied": 1, "duplicates": 0, "invalid": 0, "rejected": 0, "limited": 0}')
    expect_agent(d.api, "ghost", 'd["rate"] == 120')
    d.stop()


@case("--dead-letter-max 64k, 100 invalid 1 MB lines: two files under 64 KiB, inputs cut to "
      "4096 bytes and marked, the newest kept; dead_letters_total and dropped_total count them")
def t_dead_letter_cap(env):
    sock = env.path(env.unique("dlcap") + ".sock")
    # 100 invalid lines of about 1 MB, then a valid one, into a 64 KiB cap.
    d = env.daemon("dlcap", "--ingest-socket", sock, "--dead-letter-max", "64k").start()
    live = dead_letter_file(d)
    old = live + ".1"
    big = '{"agent":"dl1","score":9,"comment":"%s"}' % ("x" * 1000000)
    reply = ingest(sock, ndjson(*[big] * 100, '{"agent":"dl1","score":5}'))
    jcheck(reply, 'd == {"applied": 1, "duplicates": 0, "invalid": 100, "rejected": 0, "limited": 0}')
    expect_agent(d.api, "dl1", 'd["ratings"] == 1')
    # Two files under the cap each; every line cut to 4096 bytes of input and
    # marked; the newest lines kept, in order, the last one in the live file.
    check(os.path.isfile(old) and os.path.getsize(live) <= 65536
          and os.path.getsize(old) <= 65536,
          "dead-letter files: %s" % {f: os.path.getsize(os.path.join(d.state, f))
                                     for f in os.listdir(d.state)})
    files = []
    for path in (old, live):
        with open(path) as fh:
            files.append([json.loads(line) for line in fh])
    jcheck(files, 'all(x["truncated"] is True and x["input_bytes"] > 1000000 '
                  'and len(x["input"]) == 4096 '
                  'and x["input"].startswith("{\\"agent\\":\\"dl1\\"") and "score" in x["reason"] '
                  'for f in d for x in f)',
           '[x["line"] for x in d[0] + d[1]] == list(range(101 - len(d[0] + d[1]), 101))')
    kept = len(files[0]) + len(files[1])
    try:
        metric_lines(d, 'agentgate_dead_letters_total{outcome="truncated"} 100',
                     'agentgate_dead_letters_total{outcome="written"} 0',
                     'agentgate_dead_letters_total{outcome="failed"} 0',
                     "agentgate_dead_letters_dropped_total %d" % (100 - kept))
    except Fail as e:
        raise Fail("%d kept of 100; %s" % (kept, e))
    # A short invalid line is written whole, unmarked.
    ingest(sock, ndjson('{"agent":"dl1","score":0}'))
    with open(live) as fh:
        last = json.loads(fh.read().splitlines()[-1])
    jcheck(last, 'd["input"] == "{\\"agent\\":\\"dl1\\",\\"score\\":0}"', '"truncated" not in d')
    metric_lines(d, 'agentgate_dead_letters_total{outcome="written"} 1')
    d.stop()


@case("--max-agents 4: a 5th agent is 507; a batch needing a missing slot creates nothing; "
      "agents_refused_total counts them")
def t_slots_full(env):
    d = env.daemon("slots", "--max-agents", "4", "--dedup-max", "3").start()
    api = d.api
    for a in ("s1", "s2", "s3", "s4"):
        expect(api.put("/v1/agents/" + a, "{}"), 201)
    expect_error(api.put("/v1/agents/s5", "{}"), 507, "insufficient_storage")
    expect_no_agent(api, "s5")
    # A batch that needs a slot there is not: refused whole.
    expect_error(api.post("/v1/ratings", '[{"agent":"s1","score":5},{"agent":"s6","score":5}]'),
                 507, "insufficient_storage")
    expect_agent(api, "s1", 'd["ratings"] == 0', 'd["rate"] == 100')
    expect_no_agent(api, "s6")
    expect(api.delete("/v1/agents/s4"), 200)
    # One slot free, two new agents: neither is created, s1 is not rated.
    expect_error(api.post("/v1/ratings", '[{"agent":"s6","score":5},{"agent":"s7","score":5},'
                                         '{"agent":"s1","score":5}]'),
                 507, "insufficient_storage")
    expect_no_agent(api, "s6")
    expect_no_agent(api, "s7")
    expect_agent(api, "s1", 'd["ratings"] == 0')
    # The free slot is still there.
    expect(api.post("/v1/ratings", '{"agent":"s6","score":5}'), 200,
           'd["agents"][0]["rate"] == 120')
    # Three new agents were refused for want of a slot: counted as such,
    # not as map write errors.
    metric_lines(d, "agentgate_agents_refused_total 3", "agentgate_map_write_errors_total 0")
    jcheck(d.cli("status").json(), 'd["agents"] == 4', 'd["agent_slots"] == 4')
    d.stop()


@case("--dedup-max 3: ids beyond the last three are forgotten and apply again")
def t_dedup_max(env):
    d = env.daemon("dedup", "--max-agents", "4", "--dedup-max", "3").start()
    api = d.api
    expect(api.put("/v1/agents/s1", "{}"), 201)
    # --dedup-max 3: the oldest ids are forgotten beyond the third.
    for i in range(1, 6):
        expect(api.post("/v1/ratings", '{"id":"dm-%d","agent":"s1","score":4}' % i), 200,
               'd["applied"] == 1')
    expect(api.post("/v1/ratings", '[{"id":"dm-5","agent":"s1","score":4},'
                                   '{"id":"dm-4","agent":"s1","score":4}]'),
           200, 'd["applied"] == 0', 'd["duplicates"] == 2')
    expect(api.post("/v1/ratings", '{"id":"dm-1","agent":"s1","score":4}'), 200,
           'd["applied"] == 1', 'd["duplicates"] == 0')
    expect_agent(api, "s1", 'd["ratings"] == 6', 'd["rate"] == 160')
    d.stop()


@case("--store-size 1MiB filled by rating ids: 507, batches all or nothing, restart keeps "
      "the rest")
def t_store_full(env):
    # A 1 MiB store fills up with rating ids: 507, all or nothing.
    d = env.daemon("full", "--store-size", "1MiB").start()
    ok = 0
    for i in range(1, 13):
        batch = [{"id": "%03d-%04d-%s" % (i, j, "x" * 100), "agent": "fu1", "score": 4}
                 for j in range(1000)]
        r = d.api.post("/v1/ratings", batch)
        if r.status == 200:
            check(ok == i - 1, "a batch was applied after the store was full", r.describe())
            ok = i
            continue
        expect_error(r, 507, "insufficient_storage")
    check(1 <= ok < 12, "%d batches of 12 applied" % ok)
    expect_agent(d.api, "fu1", "d['ratings'] == %d * 1000" % ok, 'd["mean_score"] == 4')
    # Operator changes still answer (200, or 507 when they cannot commit).
    r = d.api.put("/v1/agents/fu2", "{}")
    if r.status != 201:
        expect_error(r, 507, "insufficient_storage")
    d.restart()
    expect_agent(d.api, "fu1", "d['ratings'] == %d * 1000" % ok, 'd["rate"] == 10000')
    d.stop()
