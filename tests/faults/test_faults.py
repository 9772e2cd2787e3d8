#!/usr/bin/env python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Fault tests, TAP output. Usage: tests/faults/test_faults.py BUILD_DIR
(as root; tests/lib/agtest: AG_TEST_ONLY=REGEX runs some cases,
AG_TEST_SHUFFLE=SEED in a random order, AG_TEST_KEEP=1 keeps the logs;
AG_TEST_ENGINE=auto|live|packet: the traffic generator's engine).

On an edge host from lab/lab.sh (the fixture "host"), the plain agentgated
(started as root with every capability, so that its own privilege drop is
what is tested) attached to the host's eth0, and ag-trafficgen sending agent
"lim" (500 packets/s, burst 500) six times its rate from the wire side.
Each case injects a fault and asserts, over the window the fault lasts,
that the datapath kept enforcing: admitted <= burst + rate * t (t measured
around the counter reads), at least half of rate * t admitted, and drops.
  - kill -9 of the daemon, five times, each restarted at once: program
    and link ids unchanged, ready again within 1 s of the kill, state kept;
  - program upgrades under traffic (bpf_link_update, 15 replacements):
    every frame the host received was counted as passed by the program
    (none went through unenforced), a replace against a stale program id
    is refused and leaves the running one;
  - the agent map full plus 10 %: refused with 507 / exit 1, counted in
    agentgate_agents_refused_total, existing agents unaffected;
  - the state dir on a 2 MiB tmpfs filled up: 507 naming the full disk,
    enforcement and the API go on, every acknowledged rating survives a
    kill -9, none of a refused batch, no torn audit line;
  - wall-clock jumps of +1 day and -1 day (libfaketime, CLOCK_REALTIME
    only, in the daemon): a drained bucket is not refilled by the jump
    forward nor frozen by the jump back, while the daemon's wall clock
    visibly jumped; the XDP object calls no clock but bpf_ktime_get_ns;
  - the state store cut short under the daemon: changes refused (500
    naming data.mdb), not ready, enforcement unaffected; a restart is
    refused (exit 3) leaving the file alone; restored, all state is back;
  - least privilege: every thread keeps only CAP_BPF, CAP_NET_ADMIN,
    CAP_PERFMON (and CAP_NET_BIND_SERVICE on port 80), bounding set too,
    no_new_privs; shared accounts (nobody, a static one, one with a login
    shell or another process) refused with exit 4; --user with a throwaway
    system account and --read-group: every thread runs as it, pins and
    state are the account's with the group's read bits, a group member
    reads with the CLI and cannot write, others cannot read.

The edge host, its daemon, lim's traffic and the UDP sink are one fixture
shared by the cases; each case makes the agents it looks at, and a case
that runs the daemon otherwise (another state dir, libfaketime, port 80,
--user) puts the standard one back when it ends, also on a failure. Every
stop of the daemon checks it went within 15 s with its clean-shutdown line;
the last (the fixture's teardown, and t_stop) also that the program stays
attached and the log has no unexpected errors.
Exit: 0 all passed, 1 something failed, 77 skipped (not root, no netns).
"""
import glob
import grp
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from agtest import (Daemon, Fail, Skip, case, check, daemon_argv, diag, expect,  # noqa: E402
                    expect_agent, fixture, has, run, run_daemon, wait_for)
from agtest.checks import failing  # noqa: E402
from agtest.env import ROOT  # noqa: E402
from agtest.lab import lab_down, lab_up  # noqa: E402
from agtest.proc import stop_proc  # noqa: E402

RATE = 500
BURST = 500
SEND_PPS = 3000
# bit 12 CAP_NET_ADMIN, 38 CAP_PERFMON, 39 CAP_BPF (10: CAP_NET_BIND_SERVICE)
CAPS_KEPT = "000000c000001000"
CAPS_PORT80 = "000000c000001400"
TG_ENGINE = os.environ.get("AG_TEST_ENGINE", "auto")
UDPSINK = os.path.join(ROOT, "tests", "e2e", "udpsink.py")
# Errors the faults make the daemon log; any other is unexpected.
EXPECTED_ERRORS = re.compile(
    r"ratings not applied|state not changed|no space left|state store .* is damaged")


# ---- checks -------------------------------------------------------------------

def holds(d, what, *exprs):
    """Every expression holds over the JSON value d, or Fail(what) with the
    failing ones and d."""
    bad = failing(d, exprs)
    check(not bad, what, *(bad + ["JSON: %s" % json.dumps(d)[:1500]]))
    return d


def cli_json(host, *args):
    """The CLI (JSON) in the host on the lab's pins: its JSON, Fail unless exit 0."""
    r = host.d.cli(*args)
    check(r.rc == 0, "agentgate %s:" % " ".join(map(str, args)), r.describe())
    return r.json()


def thread_states(pid):
    """How many threads of pid are in each state (identity, sets, nnp)."""
    keys = ("Uid:", "Gid:", "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:",
            "NoNewPrivs:")
    states = Counter()
    for task in glob.glob("/proc/%d/task/*" % pid):
        try:
            with open(task + "/status") as f:
                lines = [" ".join(x.split()) for x in f if x.startswith(keys)]
        except OSError:   # the thread ended meanwhile
            continue
        states[" ".join(lines)] += 1
    return states


def caps_are(pid, uid, caps):
    """Every thread of pid runs as uid (and gid uid) with exactly caps
    permitted, effective and bounding, nothing inheritable or ambient, nnp."""
    want = ("Uid: {u} {u} {u} {u} Gid: {u} {u} {u} {u} CapInh: 0000000000000000 CapPrm: {c} "
            "CapEff: {c} CapBnd: {c} CapAmb: 0000000000000000 NoNewPrivs: 1").format(u=uid, c=caps)
    states = thread_states(pid)
    n = len(os.listdir("/proc/%d/task" % pid))
    check(list(states) == [want], "threads of %d (of %d) are not all '%s':" % (pid, n, want),
          *("%d %s" % (c, s) for s, c in states.items()))
    check(n > 10, "only %d threads: not the daemon?" % n)


# ---- the daemon ------------------------------------------------------------------

class LabDaemon(Daemon):
    """agentgated in the edge host, under a wrapper command when wrap is set
    (env LD_PRELOAD=... for libfaketime), run between `ip netns exec` and it."""
    wrap = ()

    def argv(self):
        a = super().argv()
        i = a.index(self.binary)
        return a[:i] + list(self.wrap) + a[i:]


def start(d):
    d.start(timeout=10)


def stop(d):
    """SIGTERM: gone within 15 s (exit 0), its clean-shutdown line logged."""
    d.stop(timeout=15)
    last = d.log().splitlines()[-3:]
    check(any("SIGTERM: shutting down" in x for x in last), "no clean shutdown:",
          "\n".join(d.log().splitlines()[-5:]))


def halt(d):
    """Stopped, whatever state it is in (SIGTERM, killed after 15 s)."""
    if d.alive():
        d.signal(signal.SIGTERM)
        d.wait_exit(15)


def kill9(d):
    """kill -9 and start again at once; the seconds from the kill to /readyz
    200 (polled every 5 ms)."""
    t0 = time.monotonic()
    d.kill9()
    d.start(wait=False)
    wait_for(d.ready, 10, interval=0.005, what="daemon %s /readyz after kill -9" % d.name)
    return time.monotonic() - t0


def standard_args(lab):
    return ["--attach", lab["LAB_IF"], "--max-agents", "20"]


@contextmanager
def reconfigured(host, args=(), state=None, wrap=(), listen=None):
    """The daemon stopped and started again with further flags args, on
    state, under wrap, listening on listen; when the block ends (also on a
    failure) stopped and started as the standard one again."""
    d = host.d
    try:
        stop(d)
        d.args = standard_args(host.lab) + list(args)
        d.state = state or host.lab["LAB_STATE"]
        d.wrap = list(wrap)
        if listen:
            d.listen, d.port = listen, int(listen.rsplit(":", 1)[1])
        start(d)
        yield d
        stop(d)
    finally:
        halt(d)
        d.args, d.state, d.wrap = standard_args(host.lab), host.lab["LAB_STATE"], []
        d.listen, d.port = host.listen, host.port
        start(d)


def link_ids(host):
    """(program id, link id) of eth0 now."""
    st = cli_json(host, "status")
    links = [x for x in st.get("links", []) if x.get("ifname") == "eth0"]
    check(links, "no link on eth0: %s" % json.dumps(st))
    return links[0]["prog_id"], links[0]["link_id"]


def no_unexpected_errors(d):
    bad = [x for x in d.log_all().splitlines()
           if "error:" in x and not EXPECTED_ERRORS.search(x)]
    check(not bad, "unexpected errors in the daemon log:", *bad)


def last_stop(host):
    """t_stop's checks: a clean stop, the same program stays attached, no
    unexpected errors in the daemon's log (all its runs)."""
    prog, _ = link_ids(host)
    stop(host.d)
    now, _ = link_ids(host)
    check(now == prog, "program changed at the stop: %s, was %s" % (now, prog))
    no_unexpected_errors(host.d)


# ---- traffic and the enforcement bound --------------------------------------------

class Traffic:
    """lim's flow: ag-trafficgen on the wire side at SEND_PPS to the host's
    UDP port 9100, in the background (its stdout and stderr in files)."""

    def __init__(self, env, lab):
        self.env, self.lab, self.proc = env, lab, None
        self.out, self.err = env.path("gen.out"), env.path("gen.err")
        env.on_cleanup(self.stop)

    def start(self, *extra):
        lab = self.lab
        argv = ["ip", "netns", "exec", lab["LAB_WIRE_NS"], self.env.bin("ag-trafficgen"),
                "--engine", TG_ENGINE, "--dev", lab["LAB_WIRE_IF"], "--dst-mac", lab["LAB_MAC"],
                "--src", "10.7.0.0/28", "--dst", lab["LAB_ADDR4"], "--dport", "9100",
                "--rate", str(SEND_PPS)] + list(extra)
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    def stop(self):
        if self.proc is not None:
            stop_proc(self.proc)
            self.proc = None

    def report(self):
        """The --json report of a run that ended."""
        try:
            with open(self.out) as f:
                return json.load(f)
        except ValueError:
            with open(self.err) as f:
                raise Fail("generator: %s" % f.read()[-1000:])


def sink_total(host):
    with open(host.sink_json) as f:
        return json.load(f)["0.0.0.0:9100"]["total"]


def lim_counters(host):
    """Passed and dropped packets of lim, from the maps."""
    r = host.d.cli("agent", "show", "lim")
    try:
        a = json.loads(r.out)
        return a["passed_packets"], a["dropped_packets"]
    except (ValueError, KeyError, TypeError):
        raise Fail("agent show lim: %s" % r.out[-1500:])


class Window:
    """From its making to check(what): lim was admitted at most burst +
    rate * t (t from before the first read to after the last), at least half
    of rate * t, and traffic over the limit was dropped."""

    def __init__(self, host):
        self.host = host
        self.t0 = time.monotonic()
        self.p0, self.d0 = lim_counters(host)

    def check(self, what):
        p1, d1 = lim_counters(self.host)
        t = time.monotonic() - self.t0
        w = {"t": round(t, 3), "admitted": p1 - self.p0, "dropped": d1 - self.d0,
             "bound": round(BURST + RATE * t, 1), "floor": round(0.5 * RATE * t, 1)}
        holds(w, "%s: enforcement bound broken" % what, 'd["admitted"] <= d["bound"]',
              'd["admitted"] >= d["floor"]', 'd["dropped"] > 0')
        diag("%s: admitted %d in %s s (bound %s)" % (what, w["admitted"], w["t"], w["bound"]))


# ---- fixtures ----------------------------------------------------------------------

class Host:
    """The edge host: lab (its LAB_* variables), d (its daemon), traffic,
    sink_json (what the UDP sink in it counted)."""

    def __init__(self, env, lab):
        self.env, self.lab = env, lab
        self.d = LabDaemon(env, "faults", standard_args(lab), bin="plain", netns=lab["LAB_NS"],
                           pin=lab["LAB_PIN"], state=lab["LAB_STATE"])
        self.listen, self.port = self.d.listen, self.d.port
        self.traffic = Traffic(env, lab)
        self.sink_json = env.path("sink.json")
        self.sink = None

    def start_sink(self):
        self.sink = self.env.popen(["ip", "netns", "exec", self.lab["LAB_NS"], sys.executable,
                                    UDPSINK, self.sink_json, "0.0.0.0:9100"])
        time.sleep(0.3)


@fixture
def host(env):
    """The edge host with the daemon, lim (500/s, burst 500, pinned) and its
    rule, the UDP sink, and lim's traffic running for a second."""
    name = ("flt%d" % os.getpid())[:10]
    h = Host(env, lab_up(env, name))
    start(h.d)
    expect(h.d.api.put("/v1/agents/lim", {"rate": RATE, "burst": BURST, "pinned": True}), 201)
    expect(h.d.api.post("/v1/rules", {"prefix": "10.7.0.0/24", "agent": "lim"}), 201)
    h.start_sink()
    h.traffic.start()
    time.sleep(1)
    yield h
    h.traffic.stop()
    stop_proc(h.sink)
    last_stop(h)
    lab_down(env, name)


@fixture(scope="case")
def small_fs(env):
    """A 2 MiB tmpfs (mode 0700), unmounted after the case."""
    path = env.path("small")
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "agfault", path])
    check(r.returncode == 0, "cannot mount a tmpfs")
    yield path
    if subprocess.run(["umount", path], stderr=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["umount", "-l", path])


def free_id():
    """The highest number from 990 down that is neither a uid nor a gid."""
    for n in range(990, 900, -1):
        try:
            pwd.getpwuid(n)
            continue
        except KeyError:
            pass
        try:
            grp.getgrgid(n)
        except KeyError:
            return n
    return 900


@fixture
def test_user(env):
    """A throwaway system account of agentgated's own (no login shell), its
    uid and gid one number; deleted at the end."""
    n, name = free_id(), "agf%d" % os.getpid()
    gone = []

    def delete():
        if not gone:
            gone.append(1)
            subprocess.run(["userdel", name], stderr=subprocess.DEVNULL)
            if subprocess.run(["getent", "group", name], stdout=subprocess.DEVNULL).returncode == 0:
                subprocess.run(["groupdel", name])
    env.on_cleanup(delete)
    ok = subprocess.run(["groupadd", "--system", "--gid", str(n), name]).returncode == 0 and \
        subprocess.run(["useradd", "--system", "--uid", str(n), "--gid", str(n),
                        "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name]).returncode == 0
    check(ok, "cannot create the system account %s" % name)
    yield name
    delete()


# ---- cases ----------------------------------------------------------------------------

@case("agentgated started as root keeps only CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON in every "
      "thread (bounding set too, no_new_privs); lim enforced")
def t_start(host):
    caps_are(host.d.proc.pid, 0, CAPS_KEPT)
    w = Window(host)
    time.sleep(2)
    w.check("steady state")


@case("kill -9 five times under traffic: ready within 1 s of each kill, same program and link, "
      "admitted <= burst + rate*t, nothing acknowledged lost")
def t_kill9_repeated(host):
    d = host.d
    expect(d.api.put("/v1/agents/k9learn", {}), 201)
    first = link_ids(host)
    log0 = len(d.log_all())
    worst = 0
    w = Window(host)
    for i in range(1, 6):
        expect(d.api.post("/v1/ratings", {"id": "k9-%d" % i, "agent": "k9learn", "score": 5}),
               200)
        t = kill9(d)
        check(t <= 1.0, "kill %d: not ready within 1 s of the kill (%.4f s)" % (i, t))
        worst = max(worst, t)
        now = link_ids(host)
        check(now == first, "kill %d: program %s link %s, was %s %s" % ((i,) + now + first))
        time.sleep(0.3)
    w.check("5 x kill -9")
    kept = [x for x in d.log_all()[log0:].splitlines() if "already running" in x]
    check(len(kept) == 5, "the restarts did not keep the running program (%d of 5)" % len(kept))
    # Nothing acknowledged was lost: five 5-star ratings, 100 -> 200.
    expect_agent(d.api, "k9learn", 'd["ratings"] == 5', 'd["rate"] == 200')
    caps_are(d.proc.pid, 0, CAPS_KEPT)
    diag("kill -9 to ready: at most %.4f s over 5 kills" % worst)


def replace_n(host, n):
    """n program replacements, then one against a stale program id (the one
    that ran before the last): refused, the running one stays."""
    prog, link = link_ids(host)
    old = None
    for i in range(1, n + 1):
        before = prog
        r = host.d.cli("attach", "eth0")
        check(r.rc == 0, "replace %d:" % i, r.describe())
        prog = holds(r.json(), "replace %d: %s" % (i, r.out), 'd["replaced"]',
                     'd["prog_id"] != %d' % before, 'd["link_id"] == %d' % link)["prog_id"]
        old = before
        time.sleep(0.1)
    r = host.d.cli("attach", "eth0", "--replace", old)
    check(r.rc == 1 and "refused" in r.out, "stale replace: rc %d: %s" % (r.rc, r.out))
    holds(cli_json(host, "status"), "stale replace changed it",
          'd["links"][0]["prog_id"] == %d' % prog)


@case("15 program replacements (bpf_link_update) under traffic: frames received == frames "
      "passed (none unenforced), bound kept; a stale --replace refused, the running program "
      "stays")
def t_upgrade_under_traffic(host):
    n = 15
    # Quiet, then traffic for as long as the program is replaced n times
    # (the window is the traffic's: however long the replacements take on a
    # busy machine); the host's receive count must equal the program's
    # passed count exactly.
    host.traffic.stop()
    try:
        time.sleep(0.5)
        s0, p0 = sink_total(host), lim_counters(host)[0]
        host.traffic.start("--json")
        w = Window(host)
        replace_n(host, n)
        w.check("%d program replacements" % n)
        host.traffic.stop()
        sent = host.traffic.report()["sent"]
        time.sleep(0.5)
        s1, p1 = sink_total(host), lim_counters(host)[0]
        check(s1 - s0 == p1 - p0, "host received %d frames, the program passed %d" % (
            s1 - s0, p1 - p0))
        diag("received = passed = %d of %d sent over %d replacements" % (p1 - p0, sent, n))
    finally:
        host.traffic.stop()
        host.traffic.start()


@case("agent map full plus 10 %: 507 (API, rating) and exit 1 (CLI, through the daemon), "
      "agents_refused_total 4; existing agents rated and enforced")
def t_map_full(host):
    d = host.d
    # An existing agent at 200, which a 5-star rating moves to 220.
    expect(d.api.put("/v1/agents/mflearn", {"rate": 200}), 201)
    w = Window(host)
    n = cli_json(host, "status")["agents"]
    try:
        for i in range(n + 1, 21):
            expect(d.api.put("/v1/agents/fill%d" % i, {}), 201)
        # Full plus 10 %: two more over the API, one by a rating, one by the
        # CLI (which goes through the daemon: it is refused, and counted, there).
        for i in (21, 22):
            expect(d.api.put("/v1/agents/fill%d" % i, {}), 507,
                   'd["error"] == "insufficient_storage"')
        expect(d.api.post("/v1/ratings", {"agent": "newcomer", "score": 5}), 507)
        r = d.cli("agent", "set", "fill23", "rate", "5")
        check(r.rc == 1 and "no free agent slot" in r.out, "CLI: rc %d %s" % (r.rc, r.out))
        # Existing agents are unaffected: they are rated and enforced.
        expect(d.api.post("/v1/ratings", {"agent": "mflearn", "score": 5}), 200,
               'd["agents"][0]["rate"] == 220')
        lines = d.api.get("/metrics").text.splitlines()
        check("agentgate_agents_refused_total 4" in lines and "agentgate_agents 20" in lines
              and "agentgate_agent_slots 20" in lines, "metrics:",
              *[x for x in lines if x.startswith("agentgate_agent")])
        time.sleep(1)
        w.check("map full plus 10 %")
    finally:
        for i in range(n + 1, 21):
            d.api.delete("/v1/agents/fill%d" % i)
    holds(cli_json(host, "status"), "agents after the fill removed", 'd["agents"] == %d' % n)


def fill(path, chunk):
    """Writes zeros to path in chunks until the disk is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(chunk))
        except OSError as e:
            if e.errno != 28:   # ENOSPC
                raise


def fill_disk(path):
    """Files taking every free block of path's file system but 256 KiB,
    which the next ratings use up."""
    fill(os.path.join(path, "filler"), 64 << 10)
    fill(os.path.join(path, "filler2"), 4 << 10)
    st = os.statvfs(path)
    check(st.f_bavail == 0, "the tmpfs is not full: %d blocks free" % st.f_bavail)
    big = os.path.join(path, "filler")
    os.truncate(big, os.path.getsize(big) - (256 << 10))


def ratings_until_full(d):
    """Batches of 50 ratings with ids, each all applied or all refused,
    until three were refused: (ratings acknowledged, batches refused)."""
    acked = refused = 0
    for i in range(1, 101):
        batch = [{"id": "d%d-%d-%s" % (i, j, "x" * 60), "agent": "disk", "score": 4}
                 for j in range(50)]
        r = d.api.post("/v1/ratings", batch)
        if r.status == 200:
            check(refused == 0, "a batch applied after one was refused")
            acked += 50
            continue
        try:
            expect(r, 507, 'd["error"] == "insufficient_storage"',
                   '"no space left" in d["message"]')
        except Fail as e:
            raise Fail("batch %d: %d\n%s" % (i, r.status, e))
        refused += 1
        if refused >= 3:
            break
    check(refused >= 3 and acked > 0,
          "%d acked, %d batches refused: the disk did not fill up" % (acked, refused))
    return acked, refused


def audit_whole(path):
    """Every line of the audit log is JSON (the last one too, newline or not)."""
    with open(path) as f:
        lines = f.read().split("\n")
    for line in lines[:-1] + [x for x in lines[-1:] if x]:
        try:
            json.loads(line)
        except ValueError:
            raise Fail("torn audit line: %s" % line)


@case("state on a full 2 MiB tmpfs: 507 naming the disk, ready, enforced, store errors counted; "
      "every acknowledged rating kept after kill -9, no torn audit line")
def t_disk_full(host, small_fs):
    state = os.path.join(small_fs, "state")
    with reconfigured(host, state=state) as d:
        expect(d.api.put("/v1/agents/disk", {"r_max": 100000}), 201)
        fill_disk(small_fs)
        w = Window(host)
        acked, refused = ratings_until_full(d)
        # An operator change on the full disk: refused whole, or applied whole.
        r = d.api.put("/v1/agents/disk", {"rate": 7})
        check(r.status in (200, 507), "PUT on a full disk:", r.describe())
        check(d.api.get("/readyz").status == 200, "not ready on a full disk")
        check(re.search(r"^agentgate_store_errors_total [1-9]", d.api.get("/metrics").text, re.M),
              "store errors not counted")
        check("no space left" in d.log(), "the log does not say the disk is full")
        # The batches take a fraction of a second here (seconds in the shell
        # suite this replaces): a second more on the full disk, so that the
        # window is long against the time the counter reads take.
        time.sleep(1)
        w.check("disk full")
        # Space again: it applies at once; then after kill -9, exactly what
        # was acknowledged is there.
        for f in glob.glob(os.path.join(small_fs, "filler*")):
            os.remove(f)
        expect(d.api.post("/v1/ratings", {"id": "after-full", "agent": "disk", "score": 4}), 200)
        acked += 1
        kill9(d)
        expect_agent(d.api, "disk", 'd["ratings"] == %d' % acked, 'd["mean_score"] == 4')
        audit_whole(os.path.join(state, "audit.log"))
        diag("%d ratings acknowledged and kept, %d batches refused on the full disk" % (
            acked, refused))


def damaged_store(env, host):
    """data.mdb cut to half under the daemon, then a restart on it; the
    agent sdlearn as it was before."""
    d = host.d
    learn = expect(d.api.get("/v1/agents/sdlearn"), 200)
    st = os.path.join(d.state, "data.mdb")
    size = os.path.getsize(st)
    w = Window(host)
    os.truncate(st, size // 2)
    try:
        expect(d.api.post("/v1/ratings", {"agent": "sdlearn", "score": 5}), 500,
               '%r in d["message"]' % st, '"damaged" in d["message"]')
    except Fail as e:
        raise Fail("rating on a store cut short: %s" % e)
    r = d.api.get("/readyz")
    check(r.status == 503, "still ready: %d %s" % (r.status, r.text))
    time.sleep(1)
    w.check("state store cut short")
    check(os.path.getsize(st) == size // 2, "data.mdb was written to")
    stop(d)
    # Refused at the next start, with the file left as it is.
    argv = d.argv()
    has(run_daemon(env, argv[1:], 3, binary=argv[0]), st)
    check(os.path.getsize(st) == size // 2, "data.mdb was written to")
    return learn


@case("data.mdb cut to half under the daemon: 500 naming it, not ready, nothing written, "
      "enforcement bound kept; restart refused with exit 3; restored copy: state back, ready")
def t_store_damaged(env, host):
    d = host.d
    expect(d.api.put("/v1/agents/sdlearn", {}), 201)
    expect(d.api.post("/v1/ratings", {"agent": "sdlearn", "score": 5}), 200)
    good = env.path("state-good")
    shutil.rmtree(good, ignore_errors=True)
    try:
        # A copy of the state while the daemon is stopped.
        stop(d)
        subprocess.run(["cp", "-a", d.state, good], check=True)
        start(d)
        learn = damaged_store(env, host)
    finally:
        # The copy restored whatever happened: everything is back.
        halt(d)
        if os.path.isdir(good):
            shutil.rmtree(d.state)
            subprocess.run(["cp", "-a", good, d.state], check=True)
        start(d)
    expect_agent(d.api, "sdlearn", 'd["ratings"] == %d' % learn["ratings"],
                 'd["rate"] == %r' % learn["rate"])
    r = d.api.get("/readyz")
    check(r.status == 200, "not ready after the restore: %d %s" % (r.status, r.text))


@case("the XDP object's buckets read CLOCK_MONOTONIC only (bpf_ktime_get_ns, "
      "bpf_ktime_get_coarse_ns), never boot time; TAI time only in the functions that judge "
      "quotas, whose windows are calendar ones")
def t_bpf_clock(env):
    # The buckets' clocks are CLOCK_MONOTONIC: bpf_ktime_get_ns (helper 5)
    # for every admission, bpf_ktime_get_coarse_ns (160, CLOCK_MONOTONIC_COARSE)
    # only to refuse early (docs/DATAPATH.md, "Clock"); never boot time (125),
    # which a suspend moves. TAI (208), which moves with the wall clock, is
    # read only where quotas are judged: their windows are calendar hours and
    # days (docs/BUDGETS.md, "Quotas"), in the path's own functions, never on
    # the path of an agent without a parent or a quota.
    if not shutil.which("llvm-objdump"):
        raise Skip("llvm-objdump not found")
    out = subprocess.run(["llvm-objdump", "-d", env.bin("bpf/agentgate.bpf.o")],
                         capture_output=True, text=True, check=True).stdout
    calls, fn = {}, None
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ <([A-Za-z_][A-Za-z0-9_]*)>:$", line)
        if m and not m.group(1).startswith("LBB"):
            fn = m.group(1)
            continue
        f = line.split()
        if len(f) > 1 and f[-2] == "call" and f[-1].isdigit():
            calls.setdefault(int(f[-1]), set()).add(fn)
    check(5 in calls, "no bpf_ktime_get_ns call: %s" % calls)
    check(125 not in calls, "boot time is read: %s" % calls)
    check(calls.get(208, set()) <= {"ag_look_path", "ag_take_level"},
          "TAI time read outside the quota judges: %s" % calls.get(208))
    check(208 not in {h for h, fns in calls.items() if "agentgate_xdp" in fns},
          "the flat path reads TAI time: %s" % calls)


def faketime_wrap(env, name):
    """(the offset file, the command prefix) that runs the daemon under
    libfaketime with its wall clock at the file's offset (read at every
    call), CLOCK_MONOTONIC untouched; Skip without libfaketime."""
    libs = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    if not libs:
        raise Skip("libfaketime not installed (faketime package)")
    faketime = env.path(name)
    with open(faketime, "w") as f:
        f.write("+0\n")
    return faketime, ["env", "LD_PRELOAD=" + libs[0], "FAKETIME_TIMESTAMP_FILE=" + faketime,
                      "FAKETIME_NO_CACHE=1", "FAKETIME_DONT_FAKE_MONOTONIC=1"]


def clock_step(d, faketime, offset, wait):
    """The daemon's CLOCK_REALTIME set offset from the real one, wait
    seconds, then a rating for clk: (real ms now, clk as the API shows it)."""
    with open(faketime, "w") as f:
        f.write(offset + "\n")
    time.sleep(wait)
    now = int(time.time() * 1000)
    d.api.post("/v1/ratings", {"agent": "clk", "score": 4})
    return now, d.api.get("/v1/agents/clk").json()


@case("daemon wall clock +1 day and -1 day (libfaketime): a drained bucket neither refilled nor "
      "frozen; enforcement bound kept")
def t_clock_jump(env, host):
    faketime, wrap = faketime_wrap(env, "faketime")
    with reconfigured(host, wrap=wrap) as d:
        w = Window(host)
        # 1 token/s, burst 100, drained.
        expect(d.api.put("/v1/agents/clk", {"rate": 1, "r_min": 1, "burst": 100, "pinned": True}),
               201)
        holds(d.api.post("/v1/agents/clk/drain", {"tokens": 100}).json(), "drain",
              'd["tokens"] < 1')
        # A day forward: a wall-clock bucket would be full again.
        now, a = clock_step(d, faketime, "+1d", 0.3)
        holds(a, "the daemon's wall clock did not jump forward",
              'abs(d["last_rating_ms"] - %d - 86400000) < 60000' % now)
        holds(a, "the jump forward refilled the bucket", 'd["tokens"] < 3')
        r = d.api.post("/v1/agents/clk/consume", {"tokens": 5})
        check(r.status == 429, "consume after the jump: %d %s" % (r.status, r.text))
        holds(cli_json(host, "agent", "show", "clk"), "agent show clk", 'd["tokens"] < 3')
        # A day back (two from there): the bucket goes on refilling at 1/s.
        now, a = clock_step(d, faketime, "-1d", 2.5)
        holds(a, "the daemon's wall clock did not jump back",
              'abs(d["updated_ms"] - %d + 86400000) < 60000' % now)
        holds(a, "refill stalled or jumped", '1.5 <= d["tokens"] < 8')
        w.check("wall clock +1 d and -1 d")


@case("daemon wall clock +1 day and -1 day (libfaketime) with idle TTLs: no agent expires "
      "early (idle time is counted on CLOCK_MONOTONIC), one left idle still expires after its "
      "TTL")
def t_clock_jump_expiry(env, host):
    faketime, wrap = faketime_wrap(env, "faketime-ttl")
    with reconfigured(host, args=["--agent-ttl", "4s"], wrap=wrap) as d:
        # cj-hour: a TTL of an hour; cj-kept: 4 s, rated every 0.5 s; cj-left: 4 s, idle
        # from the last jump on.
        expect(d.api.put("/v1/agents/cj-hour", {"rate": 10, "ttl": 3600}), 201)
        for a in ("cj-kept", "cj-left"):
            expect(d.api.post("/v1/ratings", {"agent": a, "score": 3}), 200)
        for offset in ("+1d", "-1d", "+0"):
            with open(faketime, "w") as f:
                f.write(offset + "\n")
            for _ in range(6):
                expect(d.api.post("/v1/ratings", {"agent": "cj-kept", "score": 3}), 200)
                expect(d.api.post("/v1/ratings", {"agent": "cj-left", "score": 3}), 200)
                time.sleep(0.5)
            for a in ("cj-hour", "cj-kept", "cj-left"):
                r = d.api.get("/v1/agents/" + a)
                check(r.status == 200, "%s gone after the clock moved %s: %s" % (a, offset,
                                                                              r.text))
        t0 = time.monotonic()
        while d.api.get("/v1/agents/cj-left").status == 200:
            check(time.monotonic() - t0 < 8, "cj-left not expired 8 s after its last rating")
            expect(d.api.post("/v1/ratings", {"agent": "cj-kept", "score": 3}), 200)
            time.sleep(0.2)
        check(time.monotonic() - t0 >= 3, "cj-left expired %.1f s after its last rating" %
              (time.monotonic() - t0))
        for a in ("cj-hour", "cj-kept"):
            check(d.api.get("/v1/agents/" + a).status == 200, a + " gone")


@case("--listen 127.0.0.1:80: CAP_NET_BIND_SERVICE kept as well, nothing else")
def t_privs_port80(host):
    # Below port 1024 the listener keeps CAP_NET_BIND_SERVICE (bit 10) too.
    with reconfigured(host, listen="127.0.0.1:80") as d:
        caps_are(d.proc.pid, 0, CAPS_PORT80)


def refused_account(env, user, words):
    """The daemon refuses --user user at once: exit 4 naming it and words,
    nothing set up."""
    pins, state = env.path("no-pins"), env.path("no-state")
    argv = daemon_argv(env.plain, pins, state, "127.0.0.1:9479", extra=["--user", user])
    out = run_daemon(env, argv[1:], 4, binary=argv[0])
    i = out.find("--user %s: " % user)
    check(i >= 0 and words in out[i:], "--user %s: expected '%s': %s" % (user, words, out))
    check(not os.path.exists(pins) and not os.path.exists(state), "--user %s: set up anyway" % user)


def must(*argv):
    r = subprocess.run(argv)
    check(r.returncode == 0, "%s: exit %d" % (" ".join(argv), r.returncode))


def known_user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


@case("--user nobody, a static account (daemon), an account with a login shell or another "
      "process running as it: exit 4 naming why, nothing set up")
def t_privs_shared_user(env, test_user):
    refused_account(env, "nobody", "nobody/nogroup")
    if known_user("daemon"):
        refused_account(env, "daemon", "static account")
    must("usermod", "--shell", "/bin/bash", test_user)
    try:
        refused_account(env, test_user, "login shell (/bin/bash)")
    finally:
        must("usermod", "--shell", "/usr/sbin/nologin", test_user)
    # Another process runs as the account: it is someone else's too.
    p = env.popen(["setpriv", "--reuid", test_user, "--regid", test_user, "--clear-groups", "--",
                   "sleep", "60"])
    try:
        for _ in range(100):
            try:
                with open("/proc/%d/comm" % p.pid) as f:
                    if f.read().strip() == "sleep":
                        break
            except OSError:
                pass
            time.sleep(0.02)
        refused_account(env, test_user, "sleep (pid %d) runs as it" % p.pid)
    finally:
        stop_proc(p)


def read_group():
    """A group other than the account's own, for --read-group."""
    for g in ("adm", "staff", "users"):
        try:
            grp.getgrnam(g)
            return g
        except KeyError:
            pass
    return "nogroup"


def as_uid(host, uid, gid, *args):
    """The CLI (JSON) in the host as uid (in group gid, or none), no
    capabilities: (exit code, output)."""
    groups = ["--groups", str(gid)] if gid is not None else ["--clear-groups"]
    argv = ["ip", "netns", "exec", host.lab["LAB_NS"], "setpriv", "--reuid", str(uid),
            "--regid", str(uid)] + groups + ["--inh-caps=-all", "--", host.env.cli_bin, "-j",
                                             "--pin-path", host.lab["LAB_PIN"]] + list(args)
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=60)
    return r.returncode, r.stdout


def name_of(table, n):
    try:
        return table(n)[0]
    except KeyError:
        return str(n)


def not_owned(roots, user, group):
    """Files and directories under roots (themselves too) that are not
    user:group with 0640 and 02750."""
    bad = []
    for root in roots:
        for top, _, files in os.walk(root):
            for p in [top] + [os.path.join(top, f) for f in files]:
                st = os.lstat(p)
                if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                    continue
                want = 0o2750 if stat.S_ISDIR(st.st_mode) else 0o640
                owner = (name_of(pwd.getpwuid, st.st_uid), name_of(grp.getgrgid, st.st_gid))
                if owner != (user, group) or stat.S_IMODE(st.st_mode) != want:
                    bad.append("%s %s %s %o" % (p, owner[0], owner[1], stat.S_IMODE(st.st_mode)))
    return bad


def member_checks(host, gid):
    """A member of the read group reads with the CLI and cannot write;
    others cannot read."""
    rc, out = as_uid(host, 4242, gid, "agent", "show", "asnobody")
    check(rc == 0, "member read: %s" % out)
    holds(json.loads(out), "member read: %s" % out, 'd["name"] == "asnobody"')
    rc, out = as_uid(host, 4242, gid, "status")
    check(rc == 0, "member status: %s" % out)
    holds(json.loads(out), "member status: %s" % out, 'd["links"][0]["ifname"] == "eth0"',
          '"error" in d["links"][0]')
    rc, out = as_uid(host, 4242, gid, "agent", "set", "asnobody", "rate", "5")
    check(rc != 0, "a member could write")
    rc, out = as_uid(host, 4242, None, "agent", "list")
    check(rc != 0 and "Permission denied" in out, "a non-member read: %s" % out)


@case("--user with a throwaway system account, --read-group: every thread runs as it with the "
      "three capabilities; pins and state ACCOUNT:GROUP 0640/2750; SIGHUP attaches again; a "
      "member reads, cannot write; others cannot read")
def t_privs_user(host, test_user):
    group = read_group()
    gid = grp.getgrnam(group).gr_gid
    uid = pwd.getpwnam(test_user).pw_uid
    lab_dir = host.lab["LAB_DIR"]
    mode0 = os.stat(lab_dir).st_mode & 0o7777
    expect(host.d.api.put("/v1/agents/pulearn", {}), 201)
    prog, _ = link_ids(host)
    os.chmod(lab_dir, 0o700)
    try:
        with reconfigured(host, args=["--user", test_user, "--read-group", group]) as d:
            caps_are(d.proc.pid, uid, CAPS_KEPT)
            check("warning: --user %s cannot search %s" % (test_user, lab_dir) in d.log(),
                  "no warning about %s" % lab_dir)
            bad = not_owned([host.lab["LAB_PIN"], host.lab["LAB_STATE"]], test_user, group)
            check(not bad, "not %s:%s 0640/2750:" % (test_user, group), *bad)
            # It works as the account: ratings, agents, and a SIGHUP attaching
            # again (keeping the program) once the pin root is reachable.
            expect(d.api.post("/v1/ratings", {"agent": "pulearn", "score": 5}), 200)
            expect(d.api.put("/v1/agents/asnobody", {}), 201)
            os.chmod(lab_dir, 0o711)
            d.signal(signal.SIGHUP)
            time.sleep(1)
            last = d.log().splitlines()[-3:]
            want = "attached to eth0 (native, program %d, already running)" % prog
            check(any(want in x for x in last), "SIGHUP as %s:" % test_user,
                  "\n".join(d.log().splitlines()[-4:]))
            member_checks(host, gid)
            d.api.delete("/v1/agents/asnobody")
    finally:
        os.chmod(lab_dir, mode0)


@case("SIGTERM: clean stop, the same program stays attached, no unexpected errors logged "
      "(then started again)")
def t_stop(host):
    last_stop(host)
    start(host.d)


if __name__ == "__main__":
    if TG_ENGINE not in ("auto", "live", "packet"):
        print("Bail out! AG_TEST_ENGINE '%s': use auto, live or packet" % TG_ENGINE)
        sys.exit(1)
    run(needs=("agentgate", "agentgated", "ag-trafficgen", "bpf/agentgate.bpf.o", "ip"))
