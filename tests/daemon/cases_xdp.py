# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""XDP in a network namespace with a veth pair: the attachment outlives
SIGTERM; and the plain daemon under valgrind.

Each case has a namespace and veth pair of its own (xdp_lab, removed after
the case). t_xdp_restart continues where t_xdp_attached_after_sigterm ends:
it replays that case's steps, checks included, first.
"""
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

from agtest import Fail, Skip, case, check, expect, expect_agent, fixture, jcheck, wait_agent
from agtest.api import in_netns
from agtest.lab import Netns, send_frames
from agtest.ws import WS, Closed

HERE = os.path.dirname(os.path.abspath(__file__))
POST_MANY = os.path.join(HERE, "post_many.py")
_labs = itertools.count(1)


class XdpLab:
    """A namespace (ns) and a veth pair in it (a, b)."""

    def __init__(self, ns, a, b):
        self.ns, self.a, self.b = ns, a, b

    def prog(self):
        """The id of the XDP program on a, or None."""
        return self.ns.xdp_prog(self.a)

    def frames(self, count, src):
        """count UDP frames from src out of b, into a's XDP."""
        send_frames(self.ns, self.b, count, src, peer_if=self.a)


@fixture(scope="case")
def xdp_lab(env):
    """A namespace of this case's own (its veth pair and XDP attachments go
    with it at the end of the case; a daemon left inside is killed with the
    suite's processes)."""
    ns = Netns(env, "xdp%d" % next(_labs))
    a, b = ns.veth()
    yield XdpLab(ns, a, b)
    subprocess.run(["ip", "netns", "del", ns.name], stderr=subprocess.DEVNULL)
    env.netns.remove(ns.name)


def first_run(env, lab):
    """The steps of t_xdp_attached_after_sigterm: the daemon "xdp" attached
    to a, agent x1 (burst 5) with a rule, 30 frames; stopped, the program
    left on a. Returns the daemon."""
    d = env.daemon("xdp", "--attach", lab.a, netns=lab.ns.name).start()
    prog = lab.prog()
    check(prog is not None, "nothing attached to " + lab.a)
    # Burst 5, refill one token in 10 s.
    expect(d.api.put("/v1/agents/x1", {"rate": 0.1, "r_min": 0.1, "burst": 5}), 201)
    expect(d.api.post("/v1/rules", {"prefix": "10.66.0.0/16", "agent": "x1"}), 201)
    lab.frames(20, "10.66.0.1")
    try:
        wait_agent(d.api, "x1", 'd["passed_packets"] + d["dropped_packets"] == 20', timeout=5)
    except Fail as e:
        raise Fail("%s\nx1: %s" % (e, d.api.get("/v1/agents/x1").text))
    expect_agent(d.api, "x1", 'd["passed_packets"] == 5', 'd["dropped_packets"] == 15',
                 'd["passed_bytes"] == 5 * 100', 'd["tokens"] < 1')
    # The API consumes from the bucket the NIC emptied.
    expect(d.api.post("/v1/agents/x1/consume", {"tokens": 1}), 429, 'd["allowed"] is False')
    d.stop()
    now = lab.prog()
    check(now == prog, "after SIGTERM %s runs %s, expected program %s" % (lab.a, now, prog))
    r = d.cli("status")
    check(r.rc == 0, "agentgate status: " + r.out)
    jcheck(r.json(), lambda d: [(l["ifname"], l["prog_id"]) for l in d["links"]] == [
        (lab.a, prog)], 'd["agents"] == 1')
    # Still enforcing with the daemon down.
    lab.frames(10, "10.66.0.2")
    time.sleep(0.2)
    jcheck(d.cli("agent", "show", "x1").json(), 'd["passed_packets"] == 5',
           'd["dropped_packets"] == 25')
    return d


@case("--attach of a device without an Ethernet header (a tun device): exit 1 naming its link "
      "type, before any map or the store is made")
def t_attach_not_ethernet(env):
    from agtest.daemon import daemon_argv
    ns = Netns(env, "tun")
    try:
        ns.must("ip", "tuntap", "add", "dev", "agtun0", "mode", "tun")
        pin, st, listen = env.daemon_places("tun")
        argv = ns.prefix() + daemon_argv(env.san, pin, st, listen, extra=["--attach", "agtun0"])
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        out = p.stdout.decode(errors="replace")
        check(p.returncode == 1 and "attach agtun0: device agtun0 is not Ethernet (link type "
              "65534" in out, "exit %d: %s" % (p.returncode, out[-1500:]))
        check(not os.path.isdir(pin) or not os.listdir(pin), "maps made: %s" % (
            os.listdir(pin) if os.path.isdir(pin) else None))
        check(not os.listdir(st), "state made: %s" % os.listdir(st))
    finally:
        subprocess.run(["ip", "netns", "del", ns.name], stderr=subprocess.DEVNULL)
        env.netns.remove(ns.name)


@case("netns + veth: NIC and API share the bucket; SIGTERM leaves XDP attached and enforcing")
def t_xdp_attached_after_sigterm(env, xdp_lab):
    first_run(env, xdp_lab)


@case("restarted with --attach: takes the attachment over, state intact; a reused slot starts "
      "clean")
def t_xdp_restart(env, xdp_lab):
    lab = xdp_lab
    d = first_run(env, lab)
    # Started again: it takes the attachment over; agent, rule, counters there.
    d.start()
    check("attached to " + lab.a in d.log(), "no 'attached to' in the log", d.log_tail())
    expect_agent(d.api, "x1", 'd["rate"] == 0.1', 'd["passed_packets"] == 5',
                 'd["dropped_packets"] == 25',
                 'd["rules"] == [{"prefix": "10.66.0.0/16", "port": 0}]', 'd["tokens"] < 1')
    check(lab.prog() is not None, "nothing attached after the restart")
    # A deleted agent's slot, reused: no counters, tokens or rules carried over.
    expect(d.api.delete("/v1/agents/x1"), 200)
    lab.frames(5, "10.66.0.3")
    expect(d.api.put("/v1/agents/x2", {"rate": 10, "burst": 10}), 201,
           'd["passed_packets"] == 0', 'd["dropped_packets"] == 0', 'd["passed_bytes"] == 0',
           'd["dropped_bytes"] == 0', 'd["tokens"] == 10', 'd["rules"] == []')
    lab.frames(5, "10.66.0.4")
    time.sleep(0.2)
    expect_agent(d.api, "x2", 'd["passed_packets"] == 0', 'd["dropped_packets"] == 0')
    d.stop()
    check(lab.prog() is not None, "detached by the second SIGTERM")


# ---- valgrind ---------------------------------------------------------------


class StreamReader:
    """A stream client connected in the namespace, read in a thread until
    the server closes: its messages (raw text) and the close code."""

    def __init__(self, netns, port, path):
        with in_netns(netns):
            self.ws = WS.connect("127.0.0.1", port, path)
        check(self.ws.status == 101, "stream client: HTTP %d %s" % (self.ws.status,
                                                                   self.ws.body))
        self.texts, self.code = [], None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while True:
                t = self.ws.recv_text(3600)
                if t is not None:
                    self.texts.append(t)
        except Closed as e:
            self.code = e.code
        except OSError as e:
            self.code = "%s: %s" % (type(e).__name__, e)

    def join(self, timeout):
        self.thread.join(timeout)
        return "messages: %s; closed: %s" % (self.texts, self.code)


def valgrind_report(path):
    """valgrind's reports (not its warnings) and summary, as the log shows them."""
    with open(path, errors="replace") as f:
        lines = [l.rstrip("\n") for l in f if not re.search(r"WARNING|Warning", l)
                 and re.match(r"==[0-9]+== ", l)]
    start = next((i for i, l in enumerate(lines) if re.search(r"== [A-Z][a-z]", l)), len(lines))
    return "\n".join(lines[start:start + 80])


def valgrind_load(d, ns):
    """PUT, 2060 ratings (NDJSON batches and one by one), /metrics."""
    expect(d.api.put("/v1/agents/vg1", {"rate": 10, "burst": "2s"}), 201)
    expect(d.api.post("/v1/ratings", [{"id": "v1", "agent": "vg1", "score": 5},
                                      {"agent": "vg2", "score": 1}]), 200, 'd["applied"] == 2')
    # A load of ratings: 2000 in NDJSON batches and 60 requests one by one.
    for res in range(1, 5):
        lines = [{"id": "vb-%d-%d" % (res, i), "agent": "vg%d" % (3 + i % 20),
                  "score": 1 + i % 5} for i in range(500)]
        expect(d.api.ndjson("/v1/ratings", lines), 200, 'd["applied"] == 500')
    r = ns.run(sys.executable, POST_MANY, "127.0.0.1", d.port, "vg1", 60, "vl", "5,4,1")
    check(r.returncode == 0, "post_many.py: exit %d: %s" % (r.returncode, r.stderr[-1000:]))
    jcheck(json.loads(r.stdout), 'd["acked"] == 60', 'd["error"] is None')
    r = d.api.get("/metrics")
    check(r.status == 200, "expected status 200", r.describe())
    check(re.search(r"^agentgate_agents 22$", r.text, re.M), "no agentgate_agents 22")


@case("plain agentgated under valgrind: start with --attach (load, attach, privilege drop), PUT, "
      "2060 ratings, /metrics, stream clients, SIGTERM: exit 0, no errors")
def t_valgrind(env, xdp_lab):
    if not shutil.which("valgrind"):
        raise Skip("valgrind not found")
    lab = xdp_lab
    vlog = env.path(env.unique("valgrind") + ".log")
    # Start: maps, state, the program loaded and attached, the privilege
    # drop in every thread.
    d = env.daemon("vg", "--attach", lab.b, bin="plain", netns=lab.ns.name,
                   valgrind=vlog).start(timeout=120)
    check("attached to " + lab.b in d.log(), "not attached", d.log_tail())
    valgrind_load(d, lab.ns)
    # A stream client that leaves without reading, and one connected at
    # shutdown: their queues, threads and updates are all freed.
    with in_netns(lab.ns.name):
        WS.connect("127.0.0.1", d.port, "/v1/stream?topics=rating.global").drop()
    reader = StreamReader(lab.ns.name, d.port, "/v1/stream?topics=rating.global")
    time.sleep(1)
    expect(d.api.post("/v1/ratings", [{"id": "v3", "agent": "vg1", "score": 4}]), 200,
           'd["applied"] == 1')
    time.sleep(0.5)
    try:
        d.stop(timeout=120)
    except Fail as e:
        raise Fail("%s\n%s" % (e, valgrind_report(vlog)))
    with open(vlog, errors="replace") as f:
        check("ERROR SUMMARY: 0 errors" in f.read(), valgrind_report(vlog))
    seen = reader.join(10)
    check(any('"id":"v3"' in t for t in reader.texts) and reader.code == 1001,
          "stream client: " + seen)


# ---- beside other XDP programs ------------------------------------------------

class XdpFilter:
    """xdp-filter (xdp-tools) in the lab's namespace, with a bpffs of its own
    for libxdp (ip netns exec remounts /sys), removed at the case's end."""

    def __init__(self, env, ns):
        if not shutil.which("xdp-filter"):
            raise Skip("xdp-filter (xdp-tools) not installed")
        self.ns = ns
        self.bpffs = "/run/agtest-xdpfilter-%d-%d" % (os.getpid(), next(_labs))
        os.makedirs(self.bpffs)
        subprocess.run(["mount", "-t", "bpf", "bpf", self.bpffs], check=True)
        env.on_cleanup(self.remove)
        # The dispatcher needs freplace programs, which hosts with a BPF LSM
        # policy refuse: libxdp then attaches the program alone (netlink).
        self.envv = dict(os.environ, LIBXDP_BPFFS=self.bpffs, LIBXDP_SKIP_DISPATCHER="1")

    def run(self, *argv):
        return self.ns.run("xdp-filter", *argv, env=self.envv)

    def must(self, *argv):
        r = self.run(*argv)
        check(r.returncode == 0, "xdp-filter %s: exit %d: %s %s" % (
            " ".join(argv), r.returncode, r.stdout[-500:], r.stderr[-500:]))
        return r

    def counts(self):
        """(XDP_DROP packets, XDP_PASS packets, hits of port 9999)."""
        out = self.must("status").stdout
        drop = int(re.search(r"XDP_DROP\s+(\d+) pkts", out).group(1))
        passed = int(re.search(r"XDP_PASS\s+(\d+) pkts", out).group(1))
        port = re.search(r"^\s*9999\s+\S+\s+(\d+)", out, re.M)
        return drop, passed, int(port.group(1)) if port else None

    def remove(self):
        subprocess.run(["umount", self.bpffs], stderr=subprocess.DEVNULL)
        try:
            os.rmdir(self.bpffs)
        except OSError:
            pass


def filter_frames(lab, f, agent_src, other_src):
    """20 frames from the agent's source and 10 from an unclassified one to
    port 9999 (denied by xdp-filter), 10 more from that one to port 53:
    returns the counts' differences (drop, pass, port hits)."""
    d0, p0, h0 = f.counts()
    send_frames(lab.ns, lab.b, 20, agent_src, peer_if=lab.a, dport=9999)
    send_frames(lab.ns, lab.b, 10, other_src, peer_if=lab.a, dport=9999)
    send_frames(lab.ns, lab.b, 10, other_src, peer_if=lab.a, dport=53)
    time.sleep(0.2)
    d1, p1, h1 = f.counts()
    return d1 - d0, p1 - p0, (h1 or 0) - (h0 or 0)


@case("beside xdp-filter loaded first: agentgated --attach goes before it in one replace; both "
      "act on real frames (agentgate limits its agent, xdp-filter drops port 9999 of what "
      "agentgate passes); enforcing with the daemon stopped; detach hands the device back")
def t_xdp_beside_filter(env, xdp_lab):
    lab = xdp_lab
    f = XdpFilter(env, lab.ns)
    f.must("load", "-m", "native", lab.a)
    f.must("port", "9999")
    filt = lab.prog()
    check(filt is not None, "xdp-filter did not attach")
    d = env.daemon("beside", "--attach", lab.a, netns=lab.ns.name).start()
    ours = lab.prog()
    check(ours not in (None, filt), "%s runs %s, not agentgate" % (lab.a, ours))
    check("agentgate runs before program %d" % filt in d.log(), "no chain in the log",
          d.log_tail())
    r = d.cli("status")
    jcheck(r.json(), lambda s: [(l["ifname"], l["prog_id"], l["link_id"], l["next"]["prog_id"])
                                for l in s["links"]] == [(lab.a, ours, 0, filt)])
    expect(d.api.put("/v1/agents/xf1", {"rate": 0.1, "r_min": 0.1, "burst": 5}), 201)
    expect(d.api.post("/v1/rules", {"prefix": "10.70.0.0/16", "agent": "xf1"}), 201)
    drop, passed, hits = filter_frames(lab, f, "10.70.0.1", "10.80.0.1")
    # agentgate: xf1 passes 5 of its 20 and drops 15; xdp-filter sees the 5
    # and the 20 unclassified, drops the 15 to port 9999, passes the 10.
    expect_agent(d.api, "xf1", 'd["passed_packets"] == 5', 'd["dropped_packets"] == 15')
    check((drop, hits) == (15, 15) and passed >= 10,
          "xdp-filter: dropped %d, passed %d, port 9999 hits %d (want 15, >= 10, 15)"
          % (drop, passed, hits))
    # The daemon stopped: both still act.
    d.stop()
    check(lab.prog() == ours, "the daemon's stop changed %s's program" % lab.a)
    drop, passed, hits = filter_frames(lab, f, "10.70.0.2", "10.80.0.2")
    jcheck(d.cli("agent", "show", "xf1").json(), 'd["passed_packets"] == 5',
           'd["dropped_packets"] == 35')
    check((drop, hits) == (10, 10), "with the daemon stopped, xdp-filter dropped %d (hits %d), "
          "want 10" % (drop, hits))
    # An upgrade keeps the order; detach gives the device back to xdp-filter.
    r = d.cli("attach", lab.a)
    check(r.rc == 0 and r.json()["next_prog_id"] == filt and r.json()["replaced"],
          "attach again: %s" % r.out)
    r = d.cli("detach", lab.a)
    check(r.rc == 0, "detach: %s" % r.out)
    check(lab.prog() == filt, "%s runs %s after detach, not xdp-filter %s" %
          (lab.a, lab.prog(), filt))
    drop, passed, hits = filter_frames(lab, f, "10.70.0.3", "10.80.0.3")
    check((drop, hits) == (30, 30), "xdp-filter alone dropped %d (hits %d), want 30" %
          (drop, hits))
    jcheck(d.cli("status").json(), 'd["links"] == []')


@case("xdp-filter after agentgate: its load on agentgate's device is refused (no dispatcher "
      "here); loaded on another device, agentgate chain add runs it after agentgate; both act on "
      "real frames; chain del stops it; detach is refused while it is chained")
def t_xdp_filter_after(env, xdp_lab):
    lab = xdp_lab
    f = XdpFilter(env, lab.ns)
    d = env.daemon("after", "--attach", lab.a, netns=lab.ns.name).start()
    ours = lab.prog()
    r = f.run("load", "-m", "native", lab.a)
    check(r.returncode != 0 and lab.prog() == ours, "xdp-filter load on %s: exit %d, runs %s"
          % (lab.a, r.returncode, lab.prog()))
    c, _ = lab.ns.veth()
    f.must("load", "-m", "native", c)
    f.must("port", "9999")
    filt = lab.ns.xdp_prog(c)
    r = d.cli("chain", "add", lab.a, "id", filt)
    check(r.rc == 0 and r.json()["next_prog_id"] == filt, "chain add: %d %s" % (r.rc, r.out))
    expect(d.api.put("/v1/agents/xa1", {"rate": 0.1, "r_min": 0.1, "burst": 5}), 201)
    expect(d.api.post("/v1/rules", {"prefix": "10.71.0.0/16", "agent": "xa1"}), 201)
    drop, passed, hits = filter_frames(lab, f, "10.71.0.1", "10.81.0.1")
    expect_agent(d.api, "xa1", 'd["passed_packets"] == 5', 'd["dropped_packets"] == 15')
    check((drop, hits) == (15, 15) and passed >= 10,
          "xdp-filter after agentgate: dropped %d, passed %d, hits %d" % (drop, passed, hits))
    r = d.cli("detach", lab.a)
    check(r.rc == 1 and "chain" in r.out and lab.prog() == ours, "detach while chained: %d %s"
          % (r.rc, r.out))
    r = d.cli("chain", "del", lab.a)
    check(r.rc == 0, "chain del: %s" % r.out)
    drop, passed, hits = filter_frames(lab, f, "10.71.0.2", "10.81.0.2")
    check((drop, hits) == (0, 0), "xdp-filter still acts on %s after chain del: %d" %
          (lab.a, drop))
    # Not an XDP program for the xdp attach type, or agentgate itself: refused.
    r = d.cli("chain", "add", lab.a, "id", ours)
    check(r.rc == 2 and "agentgate itself" in r.out, "chain add agentgate: %d %s" % (r.rc, r.out))
    d.stop()
